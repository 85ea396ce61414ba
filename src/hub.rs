//! The hub: encodes each event once and fans the encoded bytes out to every connected client.
//!
//! The fan-out is a [`tokio::sync::broadcast`] channel of already-encoded frames: the JSON and
//! its WebSocket frame header in one shared buffer. A publish is one JSON encoding plus one
//! channel send, whatever the number of clients: it never waits on a socket. Each connection
//! task drains the channel into its own bounded outbox (see `conn/`), so a slow client only
//! ever costs itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::broadcast;

use crate::admission::RejectReason;
use crate::conn::{EncodeCounter, TextFrame};
use crate::sink::{EventSink, SinkError};
use crate::wire::{self, Event, Timestamp};

/// What travels the fan-out channel.
#[derive(Clone, Debug)]
pub(crate) enum Signal {
    Event(Frame),
    /// [`Hub::stop`] was called: close with 1001.
    Stop,
}

/// One published event, encoded and framed once and shared by every client (cloning is a
/// reference-count increment, never a copy of the payload).
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) seq: u64,
    pub(crate) text: TextFrame,
}

/// The fan-out side of a [`WsLayer`](crate::WsLayer): an [`EventSink`] that delivers every
/// event to every connected WebSocket client.
///
/// Get it from [`WsLayer::hub`](crate::WsLayer::hub). It is cheap to clone; all clones share
/// the same clients.
///
/// ```
/// use agentwatch_ws::{Event, EventSink, SessionStore, WsLayer};
///
/// let store = SessionStore::new();
/// let ws = WsLayer::new(store.clone());
/// let hub = ws.hub();
///
/// // The monitor publishes every event to the store first, then to the hub.
/// let event = Event::delta(1, vec![], vec!["gone".into()]);
/// store.handle_event(&event)?;
/// hub.handle_event(&event)?;
/// assert_eq!(hub.client_count(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Ordering and delivery
/// Clients receive events in the order [`handle_event`](EventSink::handle_event) was called,
/// each exactly once, after the snapshot they got on connect. The hub never drops or reorders
/// an event because of its `seq`; the only place `seq` matters is the hand-over right after the
/// snapshot (see [`SnapshotSource`](crate::SnapshotSource)).
///
/// # Slow clients
/// Each client may fall at most `send_buffer` events behind. A client that falls further behind
/// is evicted at once — even while a write to it is stuck — with close code 1013 ("try again
/// later") when its socket can still take a frame, and dropped otherwise. Its events are never
/// skipped silently: a dashboard that missed a delta would show a lie.
#[derive(Clone)]
pub struct Hub {
    pub(crate) shared: Arc<HubShared>,
}

pub(crate) struct HubShared {
    /// The last events, for clients resuming with `since`. Its lock is also what makes
    /// "publish" and "subscribe + copy the window" atomic with respect to each other.
    replay: Mutex<Replay>,
    /// Created when the first router is built, because its capacity is the configured
    /// `send_buffer` and the builder may still change that after [`WsLayer::hub`] was called.
    tx: OnceLock<broadcast::Sender<Signal>>,
    stopped: AtomicBool,
    /// When this hub was created: no snapshot older than this came from it.
    started: Timestamp,
    pub(crate) counters: Counters,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("clients", &self.client_count())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Hub {
    pub(crate) fn new() -> Self {
        Hub {
            shared: Arc::new(HubShared {
                replay: Mutex::new(Replay::new(
                    DEFAULT_REPLAY_WINDOW,
                    DEFAULT_REPLAY_WINDOW_BYTES,
                )),
                tx: OnceLock::new(),
                stopped: AtomicBool::new(false),
                started: Timestamp::now(),
                counters: Counters::default(),
            }),
        }
    }

    /// Creates the fan-out channel if no router did yet. Its capacity (rounded up to a power
    /// of two by tokio) is at least `send_buffer`, so a client is never overtaken by the
    /// channel before its own, exact, `send_buffer` bound trips.
    pub(crate) fn init_channel(&self, send_buffer: usize) {
        self.shared
            .tx
            .get_or_init(|| broadcast::channel(send_buffer.max(1)).0);
    }

    /// Subscribes a new client and decides where its stream starts: right after the events
    /// in the replay window newer than `since` when the window covers `since`, or after a
    /// fresh snapshot otherwise. Must run *before* a snapshot is taken, so that no event
    /// published meanwhile is missed. `None` once the hub is stopped.
    pub(crate) fn subscribe(&self, since: Option<u64>) -> Option<Start> {
        let tx = self.shared.tx.get()?;
        // Under the replay lock no event (and no stop signal) can be published: the receiver
        // starts exactly after the last event in the window.
        let replay = self.replay();
        if self.is_stopped() {
            return None;
        }
        let events = tx.subscribe();
        Some(match since.and_then(|since| replay.since(since)) {
            Some(missed) => Start::Resume { events, missed },
            None => Start::Snapshot { events },
        })
    }

    fn replay(&self) -> MutexGuard<'_, Replay> {
        // The lock guards plain data that is consistent after every statement.
        self.shared
            .replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_replay_limits(&self, max_events: usize, max_bytes: usize) {
        let mut replay = self.replay();
        replay.max_events = max_events;
        replay.max_bytes = max_bytes;
        replay.trim();
    }

    pub(crate) fn replay_limits(&self) -> (usize, usize) {
        let replay = self.replay();
        (replay.max_events, replay.max_bytes)
    }

    /// The events and bytes held in the replay window right now.
    fn replay_usage(&self) -> (usize, usize) {
        let replay = self.replay();
        (replay.frames.len(), replay.bytes)
    }

    pub(crate) fn started(&self) -> Timestamp {
        self.shared.started
    }

    /// The number of clients being served right now: upgraded, and not yet closing. A
    /// connection that is saying goodbye (close frame, grace period) still counts in
    /// [`HubStats::connection_tasks`] until its task ends.
    pub fn client_count(&self) -> usize {
        self.shared.counters.connected.load(Ordering::Relaxed)
    }

    /// Stops the hub: every connected client is closed with code 1001 ("going away") and every
    /// new upgrade request is answered `503 Service Unavailable`. Idempotent; there is no
    /// restart.
    ///
    /// Events handed to a stopped hub are accepted and discarded.
    pub fn stop(&self) {
        if self.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(clients = self.client_count(), "hub stopping");
        // The stop travels the same channel as the events: no per-connection watcher to
        // poll on every wake-up. Sent under the replay lock, so a client subscribing
        // concurrently either sees the flag or receives the signal.
        let _replay = self.replay();
        if let Some(tx) = self.shared.tx.get() {
            let _ = tx.send(Signal::Stop);
        }
    }

    /// Whether [`stop`](Hub::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// A point-in-time copy of the hub's counters.
    pub fn stats(&self) -> HubStats {
        let mut stats = self.shared.counters.snapshot();
        (stats.replay_events, stats.replay_bytes) = self.replay_usage();
        stats
    }

    /// Encodes `event` once, in Go's exact wire format, and hands it to every client.
    fn publish(&self, event: &Event) -> Result<(), SinkError> {
        let counters = &self.shared.counters;
        let encoded = TextFrame::encode(&counters.encodings, |buf| wire::to_writer(buf, event));
        let text = encoded.map_err(|source| {
            counters.encode_errors.fetch_add(1, Ordering::Relaxed);
            SinkError::Encode {
                seq: event.seq,
                source,
            }
        })?;
        counters.events_published.fetch_add(1, Ordering::Relaxed);
        if self.is_stopped() {
            return Ok(());
        }
        let frame = Frame {
            seq: event.seq,
            text,
        };
        let mut replay = self.replay();
        if replay.push(frame.clone()) {
            counters.replay_resets.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(tx) = self.shared.tx.get() {
            // An error only means "no client is subscribed right now": nothing to deliver.
            let _ = tx.send(Signal::Event(frame));
        }
        drop(replay);
        Ok(())
    }
}

impl EventSink for Hub {
    /// Encodes the event once and queues it for every client. Never waits on a socket.
    ///
    /// # Errors
    /// [`SinkError::Encode`] when the event cannot be encoded as Go would (a non-finite
    /// `context_utilization`, a year outside 0..=9999); no client receives it.
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        self.publish(event)
    }
}

/// Where a new client's stream starts.
pub(crate) enum Start {
    /// Send a snapshot first, then everything from `events`.
    Snapshot { events: broadcast::Receiver<Signal> },
    /// The client already has everything up to its `since`: send `missed`, then `events`.
    Resume {
        events: broadcast::Receiver<Signal>,
        missed: Vec<Frame>,
    },
}

/// Default number of events kept for resuming clients.
pub const DEFAULT_REPLAY_WINDOW: usize = 1024;
/// Default bound on the bytes kept for resuming clients.
pub const DEFAULT_REPLAY_WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// What happens to a client that falls `send_buffer` events behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LagPolicy {
    /// Close it with 1013 ("try again later") and a reason. A client that reconnects with
    /// `?since=<last seq it applied>` resumes from the replay window without a snapshot.
    /// The default, as in Go (which closes without saying why).
    #[default]
    Disconnect,
    /// Keep the connection: drop the client's backlog and send a fresh `snapshot` in its place,
    /// then the live stream with no gap after it.
    Resync,
}

/// The replay window: the last events' encoded bytes, bounded in count and in bytes.
struct Replay {
    frames: VecDeque<Frame>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every event with a seq above this one is in `frames` (set once events have been
    /// dropped from the window; before that, the window starts at its first event).
    floor: Option<u64>,
    last_seq: Option<u64>,
}

impl Replay {
    fn new(max_events: usize, max_bytes: usize) -> Self {
        Replay {
            frames: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
            floor: None,
            last_seq: None,
        }
    }

    /// Appends a frame; returns whether its seq went backwards (or repeated), which resets
    /// the window: positions before and after a producer restart cannot be compared.
    fn push(&mut self, frame: Frame) -> bool {
        let reset = self.last_seq.is_some_and(|last| frame.seq <= last);
        if reset {
            tracing::warn!(
                seq = frame.seq,
                last_seq = self.last_seq,
                "event seq did not increase (producer restart?): replay window reset; resuming clients get a snapshot"
            );
            self.frames.clear();
            self.bytes = 0;
            self.floor = None;
        }
        self.last_seq = Some(frame.seq);
        if self.max_events == 0 || self.max_bytes == 0 {
            self.floor = Some(frame.seq);
            return reset;
        }
        self.bytes += frame.text.payload().len();
        self.frames.push_back(frame);
        self.trim();
        reset
    }

    fn trim(&mut self) {
        while self.frames.len() > self.max_events || self.bytes > self.max_bytes {
            let Some(old) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= old.text.payload().len();
            self.floor = Some(old.seq);
        }
    }

    /// The events after `since`, if the window holds all of them.
    fn since(&self, since: u64) -> Option<Vec<Frame>> {
        let last = self.last_seq?;
        let floor = match (self.floor, self.frames.front()) {
            (Some(floor), _) => floor,
            (None, Some(first)) => first.seq.checked_sub(1)?,
            (None, None) => return None,
        };
        if since < floor || since > last {
            return None;
        }
        // Seqs increase along the window, so the missed events are a suffix of it.
        let start = self.frames.partition_point(|f| f.seq <= since);
        Some(self.frames.range(start..).cloned().collect())
    }
}

/// Counters kept by the hub; see [`Hub::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connected: AtomicUsize,
    pub(crate) tasks: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) disconnected: AtomicU64,
    pub(crate) evicted_lagging: AtomicU64,
    pub(crate) evicted_write_timeout: AtomicU64,
    pub(crate) heartbeat_timeouts: AtomicU64,
    pub(crate) inbound_floods: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) replay_resets: AtomicU64,
    pub(crate) events_published: AtomicU64,
    pub(crate) encodings: EncodeCounter,
    pub(crate) encode_errors: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    rejected: [AtomicU64; REJECT_REASONS],
}

const REJECT_REASONS: usize = 7;

fn reason_index(reason: RejectReason) -> usize {
    match reason {
        RejectReason::Stopped => 0,
        RejectReason::RateLimited => 1,
        RejectReason::Origin => 2,
        RejectReason::Unauthorized => 3,
        RejectReason::ConnectionCap => 4,
        RejectReason::NotUpgrade => 5,
        RejectReason::MissingConnectInfo => 6,
    }
}

impl Counters {
    pub(crate) fn reject(&self, reason: RejectReason) {
        self.rejected[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HubStats {
        let r = |reason| self.rejected[reason_index(reason)].load(Ordering::Relaxed);
        let evicted_lagging = self.evicted_lagging.load(Ordering::Relaxed);
        let evicted_write_timeout = self.evicted_write_timeout.load(Ordering::Relaxed);
        HubStats {
            connected: self.connected.load(Ordering::Relaxed),
            connection_tasks: self.tasks.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            disconnected: self.disconnected.load(Ordering::Relaxed),
            evicted: evicted_lagging + evicted_write_timeout,
            evicted_lagging,
            evicted_write_timeout,
            heartbeat_timeouts: self.heartbeat_timeouts.load(Ordering::Relaxed),
            inbound_floods: self.inbound_floods.load(Ordering::Relaxed),
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
            snapshots: self.snapshots.load(Ordering::Relaxed),
            replay_resets: self.replay_resets.load(Ordering::Relaxed),
            events_published: self.events_published.load(Ordering::Relaxed),
            encodings: self.encodings.get(),
            encode_errors: self.encode_errors.load(Ordering::Relaxed),
            events_sent: self.events_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            replay_events: 0,
            replay_bytes: 0,
            rejected: RejectionStats {
                stopped: r(RejectReason::Stopped),
                rate_limited: r(RejectReason::RateLimited),
                origin: r(RejectReason::Origin),
                unauthorized: r(RejectReason::Unauthorized),
                connection_cap: r(RejectReason::ConnectionCap),
                not_upgrade: r(RejectReason::NotUpgrade),
                missing_connect_info: r(RejectReason::MissingConnectInfo),
            },
        }
    }
}

/// A point-in-time copy of a [`Hub`]'s counters. Counts are totals since the hub was created,
/// except `connected` and `connection_tasks`, which are current values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Clients connected right now (same as [`Hub::client_count`]).
    pub connected: usize,
    /// Connection tasks alive right now, including ones still finishing their close.
    /// Zero when no connection is left behind.
    pub connection_tasks: usize,
    /// Upgrades accepted since the hub was created.
    pub accepted: u64,
    /// Connections ended, for any reason.
    pub disconnected: u64,
    /// Clients evicted by the server: `evicted_lagging + evicted_write_timeout`.
    pub evicted: u64,
    /// Clients evicted because they fell `send_buffer` events behind.
    pub evicted_lagging: u64,
    /// Clients evicted because their socket accepted no byte for `write_timeout`.
    pub evicted_write_timeout: u64,
    /// Clients dropped because they answered none of our pings for two heartbeat intervals.
    pub heartbeat_timeouts: u64,
    /// Clients closed with 1008 (policy violation) because they sent more than their
    /// inbound budget (see the README's close codes).
    pub inbound_floods: u64,
    /// Clients closed because what they sent broke the protocol (1002), was not UTF-8 where
    /// text must be (1007) or exceeded `max_message_size` (1009).
    pub protocol_errors: u64,
    /// Lagging clients given a fresh snapshot instead of their backlog ([`LagPolicy::Resync`]).
    pub resyncs: u64,
    /// Clients that resumed from the replay window (`?since=`) without a snapshot.
    pub resumed: u64,
    /// Snapshots sent: one per connect that did not resume, plus one per resync.
    pub snapshots: u64,
    /// Times the replay window was reset because an event's seq did not increase.
    pub replay_resets: u64,
    /// Events handed to the hub and encoded.
    pub events_published: u64,
    /// JSON encodings performed: one per event published and one per snapshot sent,
    /// whatever the number of clients (failed attempts included).
    pub encodings: u64,
    /// Events the hub could not encode (and so delivered to nobody).
    pub encode_errors: u64,
    /// Event messages written to clients (snapshots included; one per client per event).
    pub events_sent: u64,
    /// Payload bytes of those messages.
    pub bytes_sent: u64,
    /// Upgrade requests turned away, by reason.
    pub rejected: RejectionStats,
    /// Events held in the replay window right now.
    pub replay_events: usize,
    /// Bytes of encoded events held in the replay window right now.
    pub replay_bytes: usize,
}

/// Upgrade requests rejected, by [`RejectReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectionStats {
    /// The hub was stopped (`503`).
    pub stopped: u64,
    /// Per-IP rate limit exceeded (`429`).
    pub rate_limited: u64,
    /// Origin not allowed (`403`).
    pub origin: u64,
    /// Authentication failed (`401` or the extractor's rejection).
    pub unauthorized: u64,
    /// Connection cap reached (`503`).
    pub connection_cap: u64,
    /// Not a valid WebSocket upgrade request (`426`/`400`).
    pub not_upgrade: u64,
    /// Served without connect info, so no client IP (`500`).
    pub missing_connect_info: u64,
}

impl RejectionStats {
    /// All rejections, whatever the reason.
    pub fn total(&self) -> u64 {
        self.stopped
            + self.rate_limited
            + self.origin
            + self.unauthorized
            + self.connection_cap
            + self.not_upgrade
            + self.missing_connect_info
    }
}
