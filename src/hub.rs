//! The hub: encodes each event once and fans the encoded bytes out to every connected client.
//!
//! The fan-out is a [`tokio::sync::broadcast`] channel of already-encoded frames: the JSON and
//! its WebSocket frame header in one shared buffer. A publish is one JSON encoding plus one
//! channel send, whatever the number of clients: it never waits on a socket. Each connection
//! task drains the channel into its own bounded outbox (see `conn/`), so a slow client only
//! ever costs itself.
//!
//! With a privacy policy configured ([`crate::privacy`]), a frame also carries the event
//! itself and a cell per policy: the first client of a policy encodes the redacted bytes and
//! every other client of that policy shares them, so an event costs one encoding per
//! distinct policy in use, still none per client.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::broadcast;

use crate::counters::{Counters, HubStats};
use crate::frame::TextFrame;
use crate::privacy::{Privacy, Viewer};
use crate::sink::SinkError;
use crate::snapshot_cache::SnapshotCache;
use crate::stop::StopFlag;
use crate::wire::{self, Event, EventType, Timestamp};

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
    /// The event's seq did not rise: the producer restarted, and a connected client gets a
    /// fresh snapshot in place of this event (its seq cannot be compared with the ones
    /// before it, so the snapshot hand-over could not place it).
    pub(crate) restart: bool,
    /// When a privacy policy may apply to some viewer: the event, and its redacted encodings
    /// by policy slot, each made by the first viewer that needs it and shared by the rest.
    pub(crate) variants: Option<Arc<Variants>>,
}

/// An event kept for the viewers who may not see all of it (see [`crate::privacy`]).
#[derive(Debug)]
pub(crate) struct Variants {
    event: Event,
    /// Index: policy slot - 1, for the policies known when the event was published; `None`
    /// inside: the redacted event could not be encoded.
    encoded: Box<[OnceLock<Option<TextFrame>>]>,
}

impl Frame {
    /// The bytes `viewer` may receive for this event: the shared bytes for a viewer who sees
    /// everything, else the viewer's policy's encoding, made once per policy and shared.
    /// `None` when the event cannot be redacted (no event kept, or its redacted form cannot
    /// be encoded): the caller must then send nothing of it.
    pub(crate) fn text_for(&self, viewer: &Viewer, counters: &Counters) -> Option<TextFrame> {
        let Some(redactor) = &viewer.redactor else {
            return Some(self.text.clone());
        };
        let variants = self.variants.as_ref()?;
        let encode = || {
            let redacted = redactor.event(&variants.event);
            counters
                .encode(|buf| wire::to_writer(buf, &redacted))
                .map_err(|error| {
                    tracing::error!(seq = self.seq, %error, "cannot encode a redacted event");
                })
                .ok()
        };
        let cell = viewer
            .slot
            .and_then(|slot| slot.checked_sub(1))
            .and_then(|i| variants.encoded.get(i));
        match cell {
            // The first viewer of a policy encodes; others of the same policy wait for it
            // rather than encode too. A failure is kept as well: every such viewer ends.
            Some(cell) => cell.get_or_init(encode).clone(),
            None => encode(),
        }
    }
}

/// The fan-out: delivers every published event to every connected WebSocket client.
///
/// Crate-private: [`Publisher`](crate::Publisher) owns it and is the only way in. Cheap to
/// clone; all clones share the same clients.
///
/// # Ordering and delivery
/// Clients receive events in the order [`publish`](Hub::publish) was called, each exactly
/// once, after the snapshot they got on connect. The hub never drops or reorders an event
/// because of its `seq`; the only place `seq` matters is the hand-over right after the
/// snapshot (see [`SnapshotSource`](crate::sink::SnapshotSource)). An event whose seq does
/// not rise (a producer restart) is marked as such, and each connected client replaces it,
/// and whatever it had not yet sent, with a fresh snapshot: the hand-over that follows
/// compares seqs of the restarted stream only.
///
/// # Slow clients
/// Each client may fall at most `send_buffer` events behind. A client that falls further behind
/// is evicted at once — even while a write to it is stuck — with close code 1013 ("try again
/// later") when its socket can still take a frame, and dropped otherwise. Its events are never
/// skipped silently: a dashboard that missed a delta would show a lie.
#[derive(Clone)]
pub(crate) struct Hub {
    shared: Arc<HubShared>,
}

struct HubShared {
    /// The last events, for clients resuming with `since`. Its lock is also what makes
    /// "publish" and "subscribe + copy the window" atomic with respect to each other.
    replay: Mutex<Replay>,
    /// The fan-out channel, sized by `send_buffer` when the layer is built.
    tx: broadcast::Sender<Signal>,
    stopped: StopFlag,
    counters: Counters,
    /// The encoded snapshot shared by clients connecting at the same source version.
    snapshots: SnapshotCache,
    /// Who may see what; the policies seen so far.
    privacy: Arc<Privacy>,
    /// Where the events older than the replay window can still be found (a broker stream).
    backfill: OnceLock<Arc<dyn Backfill>>,
}

/// A source of the events older than the replay window, for resuming clients (the broker
/// `Follower` reads them back from its stream); `crate::backfill` uses it.
pub(crate) trait Backfill: Send + Sync + 'static {
    /// The events after `since`, in order, each `seq` following the one before and the
    /// first following `since` (which, when it carries an `at`, must be that very event),
    /// up to an event the hub has published. `None` when they cannot all be found.
    fn events_after(
        &self,
        since: Position,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Event>>> + Send + '_>>;
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
    /// A hub whose fan-out channel holds at least `send_buffer` events (rounded up to a power
    /// of two by tokio), so a client is never overtaken by the channel before its own, exact,
    /// `send_buffer` bound trips; and whose replay window keeps at most `replay_events`
    /// events and `replay_bytes` bytes (0: resuming off). The layer has already brought every
    /// value into its range; they are bounded here again so that no caller can make tokio
    /// panic (it refuses a capacity above `usize::MAX >> 1`).
    pub(crate) fn new(
        send_buffer: usize,
        replay_events: usize,
        replay_bytes: usize,
        privacy: Arc<Privacy>,
    ) -> Self {
        let capacity = send_buffer.clamp(1, MAX_SEND_BUFFER);
        Hub {
            shared: Arc::new(HubShared {
                replay: Mutex::new(Replay::new(
                    replay_events.min(MAX_REPLAY_WINDOW),
                    replay_bytes.min(MAX_REPLAY_WINDOW_BYTES),
                )),
                tx: broadcast::channel(capacity).0,
                stopped: StopFlag::default(),
                snapshots: SnapshotCache::default(),
                counters: Counters::default(),
                privacy,
                backfill: OnceLock::new(),
            }),
        }
    }

    /// Subscribes a new client and decides where its stream starts: right after the events
    /// in the replay window newer than `since` when the window covers `since` (and, when the
    /// position carries an `at`, holds event `since.seq` with exactly that `at`), or after a
    /// fresh snapshot otherwise. Must run *before* a snapshot is taken, so that no event
    /// published meanwhile is missed. `None` once the hub is stopped.
    pub(crate) fn subscribe(&self, since: Option<Position>) -> Option<Start> {
        let tx = &self.shared.tx;
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

    /// Installs the source of events older than the window; the first one installed stays.
    #[cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]
    pub(crate) fn set_backfill(&self, backfill: Arc<dyn Backfill>) {
        let _ = self.shared.backfill.set(backfill);
    }

    /// The source of events older than the window, if one is installed.
    pub(crate) fn backfill_source(&self) -> Option<&Arc<dyn Backfill>> {
        self.shared.backfill.get()
    }

    /// Whether the window can resume a client from `since` (see [`subscribe`](Hub::subscribe)).
    pub(crate) fn covers(&self, since: Position) -> bool {
        self.replay().since(since).is_some()
    }

    fn replay(&self) -> MutexGuard<'_, Replay> {
        // The lock guards plain data that is consistent after every statement.
        self.shared
            .replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The events and bytes held in the replay window right now.
    fn replay_usage(&self) -> (usize, usize) {
        let replay = self.replay();
        (replay.frames.len(), replay.bytes)
    }

    /// The `at` a snapshot reflecting every event up to `seq` carries: `at` when the source
    /// knows it (the `at` of event `seq`), else the `at` this hub recorded for event `seq`,
    /// else now. A client resumes from a snapshot's (`seq`, `at`) only if the hub knows that
    /// exact pair, so a made-up `at` only costs that client a snapshot on its next connect.
    pub(crate) fn snapshot_at(&self, seq: u64, at: Option<Timestamp>) -> Timestamp {
        at.or_else(|| self.replay().at_of(seq))
            .unwrap_or_else(Timestamp::now)
    }

    /// The number of clients being served right now: upgraded, and not yet closing. A
    /// connection that is saying goodbye (close frame, grace period) still counts in
    /// [`HubStats::connection_tasks`] until its task ends.
    pub(crate) fn client_count(&self) -> usize {
        self.shared.counters.connected()
    }

    /// The hub's counters, for the connections and the layer to record what happens.
    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The encoded snapshot shared by clients connecting at the same source version.
    pub(crate) fn snapshot_cache(&self) -> &SnapshotCache {
        &self.shared.snapshots
    }

    /// Who may see what.
    pub(crate) fn privacy(&self) -> &Arc<Privacy> {
        &self.shared.privacy
    }

    /// What a frame of `event` keeps for redacted viewers: nothing without a privacy policy;
    /// else the event, and (`shared`: a frame every client gets) a cell per known policy.
    pub(crate) fn variants(&self, event: &Event, shared: bool) -> Option<Arc<Variants>> {
        let privacy = &self.shared.privacy;
        privacy.is_configured().then(|| {
            let slots = if shared { privacy.slots() } else { 0 };
            Arc::new(Variants {
                event: event.clone(),
                encoded: (0..slots).map(|_| OnceLock::new()).collect(),
            })
        })
    }

    /// The flag [`stop`](Hub::stop) raises, for the admission check.
    pub(crate) fn stop_flag(&self) -> StopFlag {
        self.shared.stopped.clone()
    }

    /// Stops the hub: every connected client is closed with code 1001 ("going away") and every
    /// new upgrade request is answered `503 Service Unavailable`. Idempotent; there is no
    /// restart (see [`Publisher::stop`](crate::Publisher::stop)).
    pub(crate) fn stop(&self) {
        if self.shared.stopped.raise() {
            return;
        }
        tracing::info!(clients = self.client_count(), "hub stopping");
        // The stop travels the same channel as the events: no per-connection watcher to
        // poll on every wake-up. Sent under the replay lock, so a client subscribing
        // concurrently either sees the flag or receives the signal.
        let _replay = self.replay();
        // An error only means "no client is subscribed right now".
        let _ = self.shared.tx.send(Signal::Stop);
    }

    /// Whether [`stop`](Hub::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.shared.stopped.is_raised()
    }

    /// Resolves once every connection task has ended (see [`Publisher::closed`](crate::Publisher::closed)).
    pub(crate) async fn closed(&self) {
        self.shared.counters.idle().await;
    }

    /// A point-in-time copy of the hub's counters.
    pub(crate) fn stats(&self) -> HubStats {
        let mut stats = self.shared.counters.snapshot();
        (stats.replay_events, stats.replay_bytes) = self.replay_usage();
        stats
    }

    /// Encodes `event` once, in Go's exact wire format, and hands it to every client. Never
    /// waits on a socket. Events handed to a stopped hub are encoded, counted and discarded.
    ///
    /// # Errors
    /// [`SinkError::Encode`] when the event cannot be encoded as Go would (a non-finite
    /// `context_utilization`, a year outside 0..=9999); no client receives it.
    pub(crate) fn publish(&self, event: &Event) -> Result<(), SinkError> {
        let counters = &self.shared.counters;
        let encoded = counters.encode(|buf| wire::to_writer(buf, event));
        let text = encoded.map_err(|source| SinkError::Encode {
            seq: event.seq,
            source,
        })?;
        counters.record_publish();
        if self.is_stopped() {
            return Ok(());
        }
        let variants = self.variants(event, true);
        let mut frame = Frame {
            seq: event.seq,
            text,
            restart: false,
            variants,
        };
        let mut replay = self.replay();
        // A `health` event with the very position (seq and at) of the event before it belongs
        // to that event's state, as the reports that follow a published snapshot do: it
        // continues the stream rather than restarting it.
        let continues =
            event.kind == EventType::Health && replay.last == Some((event.seq, event.at));
        if replay.push(frame.clone(), event.at, continues) {
            counters.record_replay_reset();
            frame.restart = true;
        }
        // An error only means "no client is subscribed right now": nothing to deliver.
        let _ = self.shared.tx.send(Signal::Event(frame));
        drop(replay);
        Ok(())
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
pub(crate) const DEFAULT_REPLAY_WINDOW: usize = 1024;
/// Default bound on the bytes kept for resuming clients.
pub(crate) const DEFAULT_REPLAY_WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// Largest `send_buffer`. The fan-out channel allocates a slot per buffered event up front
/// (tokio's `broadcast` refuses more than `usize::MAX >> 1`), so the bound keeps that
/// allocation near 6 MiB.
pub(crate) const MAX_SEND_BUFFER: usize = 1 << 16;
/// Largest replay window, in events (about a million).
pub(crate) const MAX_REPLAY_WINDOW: usize = 1 << 20;
/// Largest replay window, in bytes (1 GiB).
pub(crate) const MAX_REPLAY_WINDOW_BYTES: usize = 1 << 30;

/// What happens to a client that falls `send_buffer` events behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LagPolicy {
    /// Close it with 1013 ("try again later") and a reason. A client that reconnects with the
    /// `?since=<seq>&since_at=<at>` of the last event it applied resumes from the replay
    /// window without a snapshot. The default, as in Go (which closes without saying why).
    #[default]
    Disconnect,
    /// Keep the connection: drop the client's backlog and send a fresh `snapshot` in its place,
    /// then the live stream with no gap after it.
    Resync,
}

/// Where a reconnecting client left off: the last event it applied, by `seq` and, when the
/// client sent it, by that event's `at` (`?since=<seq>&since_at=<at>`).
///
/// Seqs alone say nothing about which producer issued them: after a restart, a new hub's seq
/// 11 is not the old hub's. The pair (`seq`, `at`) names one event; the hub resumes a client
/// only if it holds that very event, so positions from another producer (whatever its clock
/// says) get a snapshot. Several nodes serving the same events (same seq and at) recognise
/// each other's positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) seq: u64,
    /// `None`: the client sent only `since` (Go clients, `Last-Event-ID`): trusted by seq.
    pub(crate) at: Option<Timestamp>,
}

/// One event kept in the replay window, with its `at` (the identity half of a position).
struct Kept {
    frame: Frame,
    at: Timestamp,
    /// What it counts against the window's byte bound: see [`Frame::kept_bytes`].
    bytes: usize,
}

impl Frame {
    /// The bytes this frame is taken to hold while kept: its payload, and with privacy
    /// policies also the event's copy and one redacted encoding per policy known when it
    /// was published (each about the payload's size), made or not: the replay window's
    /// byte bound then bounds what redaction adds too.
    fn kept_bytes(&self) -> usize {
        let payload = self.text.payload().len();
        match &self.variants {
            None => payload,
            Some(variants) => payload.saturating_mul(2 + variants.encoded.len()),
        }
    }
}

/// The replay window: the last events' encoded bytes, bounded in count and in bytes.
struct Replay {
    frames: VecDeque<Kept>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every event with a seq above this one is in `frames` (set once events have been
    /// dropped from the window; before that, the window starts at its first event), with
    /// its `at`.
    floor: Option<(u64, Timestamp)>,
    /// The last event published, with its `at`.
    last: Option<(u64, Timestamp)>,
}

impl Replay {
    fn new(max_events: usize, max_bytes: usize) -> Self {
        Replay {
            frames: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
            floor: None,
            last: None,
        }
    }

    /// Appends a frame; returns whether its seq went backwards (or repeated), which resets
    /// the window: positions before and after a producer restart cannot be compared.
    /// `continues`: the frame shares the last event's position on purpose (a health report
    /// following a snapshot), which is no restart.
    fn push(&mut self, frame: Frame, at: Timestamp, continues: bool) -> bool {
        let last_seq = self.last.map(|(seq, _)| seq);
        let reset = !continues && last_seq.is_some_and(|last| frame.seq <= last);
        if reset {
            tracing::warn!(
                seq = frame.seq,
                last_seq,
                "event seq did not increase (producer restart?): replay window reset; resuming clients get a snapshot"
            );
            self.frames.clear();
            self.bytes = 0;
            self.floor = None;
        }
        self.last = Some((frame.seq, at));
        if self.max_events == 0 || self.max_bytes == 0 {
            self.floor = Some((frame.seq, at));
            return reset;
        }
        let bytes = frame.kept_bytes();
        self.bytes += bytes;
        self.frames.push_back(Kept { frame, at, bytes });
        self.trim();
        reset
    }

    fn trim(&mut self) {
        while self.frames.len() > self.max_events || self.bytes > self.max_bytes {
            let Some(old) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            self.floor = Some((old.frame.seq, old.at));
        }
    }

    /// The `at` of event `seq`, if the window, its floor or the last event is that event.
    fn at_of(&self, seq: u64) -> Option<Timestamp> {
        let i = self.frames.partition_point(|kept| kept.frame.seq < seq);
        match self.frames.get(i) {
            Some(kept) if kept.frame.seq == seq => Some(kept.at),
            _ => [self.floor, self.last]
                .into_iter()
                .flatten()
                .find_map(|(known, at)| (known == seq).then_some(at)),
        }
    }

    /// The events after `since`, if the window holds all of them and, when `since` carries an
    /// `at`, event `since.seq` is the very event the client applied (same `at`: an identity
    /// check, never an order comparison of clocks).
    fn since(&self, since: Position) -> Option<Vec<Frame>> {
        let (last, _) = self.last?;
        let floor = match (self.floor, self.frames.front()) {
            (Some((floor, _)), _) => floor,
            (None, Some(first)) => first.frame.seq.checked_sub(1)?,
            (None, None) => return None,
        };
        if since.seq < floor || since.seq > last {
            return None;
        }
        if since.at.is_some_and(|at| self.at_of(since.seq) != Some(at)) {
            return None;
        }
        // Seqs increase along the window, so the missed events are a suffix of it.
        let start = self
            .frames
            .partition_point(|kept| kept.frame.seq <= since.seq);
        Some(
            self.frames
                .range(start..)
                .map(|kept| kept.frame.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    // unwrap() here asserts on values the test built itself.
    use super::*;
    use std::time::{Duration, SystemTime};

    fn at(ms: u64) -> Timestamp {
        Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms))
    }

    fn push(replay: &mut Replay, seq: u64, ms: u64) {
        let frame = Frame {
            seq,
            text: TextFrame::from_text(b"{}"),
            restart: false,
            variants: None,
        };
        replay.push(frame, at(ms), false);
    }

    fn seqs(frames: Option<Vec<Frame>>) -> Option<Vec<u64>> {
        frames.map(|frames| frames.iter().map(|f| f.seq).collect())
    }

    fn pos(seq: u64, ms: Option<u64>) -> Position {
        Position {
            seq,
            at: ms.map(at),
        }
    }

    #[test]
    fn a_position_resumes_only_on_the_very_event() {
        let mut replay = Replay::new(3, usize::MAX);
        for seq in 1..=6 {
            push(&mut replay, seq, seq * 10);
        }
        // Window 4..=6, floor 3.
        assert_eq!(seqs(replay.since(pos(3, Some(30)))), Some(vec![4, 5, 6]));
        assert_eq!(seqs(replay.since(pos(5, Some(50)))), Some(vec![6]));
        assert_eq!(seqs(replay.since(pos(6, Some(60)))), Some(vec![]));
        assert_eq!(seqs(replay.since(pos(5, None))), Some(vec![6]));
        // Another event's at, an at a millisecond off, a seq below the floor or ahead.
        assert_eq!(seqs(replay.since(pos(5, Some(40)))), None);
        assert_eq!(seqs(replay.since(pos(5, Some(51)))), None);
        assert_eq!(seqs(replay.since(pos(2, Some(20)))), None);
        assert_eq!(seqs(replay.since(pos(7, None))), None);
        assert_eq!(replay.at_of(3), Some(at(30)));
        assert_eq!(replay.at_of(2), None);
    }

    #[test]
    fn a_disabled_window_still_knows_the_last_event_and_a_reset_forgets_the_old_ones() {
        let mut replay = Replay::new(0, usize::MAX);
        push(&mut replay, 7, 70);
        assert_eq!(seqs(replay.since(pos(7, Some(70)))), Some(vec![]));
        assert_eq!(seqs(replay.since(pos(7, Some(71)))), None);

        let mut replay = Replay::new(10, usize::MAX);
        for seq in 1..=5 {
            push(&mut replay, seq, 1000 + seq);
        }
        // A restarted producer, with an earlier clock: seq 3 again, a different event.
        for seq in 1..=5 {
            push(&mut replay, seq, seq);
        }
        assert_eq!(seqs(replay.since(pos(3, Some(1003)))), None);
        assert_eq!(seqs(replay.since(pos(3, Some(3)))), Some(vec![4, 5]));
    }

    #[test]
    fn redacted_variants_count_against_the_byte_bound() {
        let frame = |seq, slots: Option<usize>| Frame {
            seq,
            text: TextFrame::from_text(&[b'x'; 1000]),
            restart: false,
            variants: slots.map(|n| {
                Arc::new(Variants {
                    event: Event::default(),
                    encoded: (0..n).map(|_| OnceLock::new()).collect(),
                })
            }),
        };
        let mut plain = Replay::new(100, 12_000);
        let mut redacted = Replay::new(100, 12_000);
        for seq in 1..=20 {
            plain.push(frame(seq, None), at(seq), false);
            // Four policies: the payload, the event's copy and four encodings.
            redacted.push(frame(seq, Some(4)), at(seq), false);
        }
        assert_eq!(plain.frames.len(), 12);
        assert_eq!(redacted.frames.len(), 2);
        assert!(redacted.bytes <= 12_000);
    }
}
