//! One WebSocket client: snapshot first, then the live stream, with heartbeat, write timeout
//! and slow-client eviction. One task per connection, no extra reader or writer task; a
//! wake-up polls only the sources that fired ([`sources`]). Events arrive framed once for
//! every client ([`frame`]) and go to the socket as they are ([`socket`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::close_code;
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tracing::Instrument;
use tungstenite::Message;
use tungstenite::error::{Error as WsError, ProtocolError};

use crate::admission::auth::Identity;
use crate::admission::cap::ConnectionPermit;
use crate::hub::{Frame, Hub, LagPolicy, Position, Signal, Start};
use crate::sink::SnapshotSource;
use crate::wire::{self, Event, EventType};

mod frame;
mod socket;
mod sources;
pub(crate) use frame::TextFrame;
pub(crate) use socket::{Socket, Transport};
use sources::{EventFeed, Source, Sources};

/// How many frames one write batch takes from the queue. Bounds the work between two
/// progress checks of the write timeout, while still turning a burst into few syscalls.
const FRAMES_PER_BATCH: usize = 256;

/// Frames per vectored write: one `writev` carries up to this many.
const SLICES_PER_WRITE: usize = 64;

/// How long a courtesy close frame may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Per-connection settings, frozen when the router is built.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub(crate) heartbeat: Duration,
    pub(crate) send_buffer: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) lag_policy: LagPolicy,
}

/// Who is on the other end.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) identity: Identity,
    /// The last event the client says it applied (`?since=` and `since_at`), if any.
    pub(crate) since: Option<Position>,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Stopped,
    ClientClosed,
    PeerGone,
    ReadError,
    WriteError,
    MessageTooBig,
    Lagging,
    WriteTimeout,
    HeartbeatTimeout,
    EncodeError,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Stopped => "server stopping",
            End::ClientClosed => "client closed",
            End::PeerGone => "connection dropped",
            End::ReadError => "read error",
            End::WriteError => "write error",
            End::MessageTooBig => "inbound message too big",
            End::Lagging => "too slow: fell send_buffer events behind",
            End::WriteTimeout => "write timeout",
            End::HeartbeatTimeout => "heartbeat timeout",
            End::EncodeError => "snapshot encoding failed",
        }
    }

    /// The close frame to send, if the socket can still take one.
    fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            End::Stopped => Some((close_code::AWAY, "server stopping")),
            End::Lagging => Some((close_code::AGAIN, "too slow: fell behind the event stream")),
            End::MessageTooBig => Some((close_code::SIZE, "message too big")),
            End::EncodeError => Some((close_code::ERROR, "internal error")),
            // The socket is stuck, gone or closing already: nothing more to say on it.
            End::WriteTimeout
            | End::HeartbeatTimeout
            | End::ClientClosed
            | End::PeerGone
            | End::ReadError
            | End::WriteError => None,
        }
    }
}

/// Counts the connection: as connected until it starts closing (see [`Registration::closing`]),
/// and as a live task until this value is dropped, however the task ends.
struct Registration {
    hub: Hub,
    /// Shared by reference across awaits, so it must be `Sync`.
    connected: AtomicBool,
}

impl Registration {
    fn new(hub: &Hub) -> Self {
        let counters = &hub.shared.counters;
        counters.tasks.fetch_add(1, Ordering::Relaxed);
        counters.connected.fetch_add(1, Ordering::Relaxed);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        Registration {
            hub: hub.clone(),
            connected: AtomicBool::new(true),
        }
    }

    /// The connection no longer serves events: it only says goodbye from here on, which may
    /// take up to the close grace period.
    fn closing(&self) {
        if self.connected.swap(false, Ordering::Relaxed) {
            let counters = &self.hub.shared.counters;
            counters.connected.fetch_sub(1, Ordering::Relaxed);
            counters.disconnected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.closing();
        self.hub
            .shared
            .counters
            .tasks
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one client connection to its end, however it ends. The permit (if any) is released
/// when this future completes or is dropped.
///
/// Not an `async fn`: an `async fn` keeps its arguments in its future for its whole life, so
/// the socket would be stored twice, there and where the loop uses it. Here the future owns
/// the socket once and lends it out (the future measured 1.5 KB this way, 2.8 KB before).
pub(crate) fn serve(
    mut socket: Socket,
    hub: Hub,
    source: Arc<dyn SnapshotSource>,
    config: Arc<ConnConfig>,
    client: ClientInfo,
    permit: Option<ConnectionPermit>,
) -> impl Future<Output = ()> + Send + 'static {
    let registration = Registration::new(&hub);
    let span = tracing::info_span!(
        "ws_client",
        peer = %client.peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        identity = %client.identity,
    );
    async move {
        tracing::info!(clients = hub.client_count(), "client connected");
        let end = run(
            &mut socket,
            &hub,
            &*source,
            &config,
            client.since,
            &registration,
        )
        .await;
        drop(socket);
        match end {
            End::Lagging | End::WriteTimeout | End::HeartbeatTimeout => {
                tracing::warn!(reason = end.as_str(), "client evicted")
            }
            End::EncodeError => tracing::error!(reason = end.as_str(), "client closed"),
            _ => tracing::info!(reason = end.as_str(), "client disconnected"),
        }
        drop(permit);
        drop(registration);
    }
    .instrument(span)
}

/// What a wake-up found; see [`Live::poll_step`].
enum Step {
    /// A write batch completed: events and bytes written.
    Flushed(io::Result<(u64, u64)>),
    /// The write deadline timer fired; the write may still be within its time.
    WriteDeadline,
    Inbound(Option<Result<Message, WsError>>),
    /// Reading found nothing new, but tungstenite framed a reply that is now queued.
    Replied,
    /// Events were taken from the channel and queued.
    Queued(Result<(), End>),
    Heartbeat,
}

/// A connection past its hand-over start: what a wake-up polls.
struct Live<'a> {
    socket: &'a mut Socket,
    out: Outbox,
    feed: EventFeed,
    sources: Sources,
    /// The snapshot's seq until the first event after it: events up to it are skipped.
    handover: Option<u64>,
    heartbeat: Option<Interval>,
    /// Armed lazily; see `run`.
    write_deadline: Pin<&'a mut Sleep>,
}

impl Live<'_> {
    /// Polls what is due, in priority order: write what is queued first, so one wake-up reads
    /// the channel once and flushes once; then the write deadline, which is what evicts a
    /// client whose write hangs; then inbound frames, before events so that pongs are seen
    /// even under a sustained stream; then events; then the heartbeat. The read side and the
    /// timers are polled only when they fired (or have not yet been polled back to
    /// `Pending`); see [`sources`].
    ///
    /// `feed_parked`: the feed was drained to `Pending` earlier in this same poll of the
    /// task, so its waiter is registered and nothing can be waiting in it unnoticed (a send
    /// since then has woken the task, which will be polled again). Polling it anyway would
    /// take the channel's tail lock a second time per event.
    fn poll_step(&mut self, cx: &mut Context<'_>, writing: bool, feed_parked: bool) -> Poll<Step> {
        self.sources.refresh(cx);
        if writing {
            if let Poll::Ready(flushed) = self.out.poll_drive(self.socket, cx) {
                return Poll::Ready(Step::Flushed(flushed));
            }
            // Only a write the socket is not taking needs its deadline armed, and nearly
            // every write completes in the poll that starts it.
            let mut timers = self.sources.context(Source::Timers);
            if self.write_deadline.as_mut().poll(&mut timers).is_ready() {
                return Poll::Ready(Step::WriteDeadline);
            }
        }
        if self.sources.is_due(Source::Read) {
            let inbound = self
                .socket
                .poll_recv(&mut self.sources.context(Source::Read));
            // A pong or close reply tungstenite owes goes behind what is queued.
            let replied = match self.socket.take_control() {
                Some(control) => {
                    self.out.push_control(control);
                    true
                }
                None => false,
            };
            match inbound {
                // More frames may be buffered already, so the read side stays due.
                Poll::Ready(inbound) => return Poll::Ready(Step::Inbound(inbound)),
                Poll::Pending => self.sources.settle(Source::Read),
            }
            if replied {
                return Poll::Ready(Step::Replied);
            }
        }
        if !feed_parked {
            if let Poll::Ready(received) = self.feed.poll_recv(cx) {
                return Poll::Ready(Step::Queued(self.queue_events(cx, received)));
            }
        }
        if self.sources.is_due(Source::Timers) {
            if let Some(heartbeat) = &mut self.heartbeat {
                let mut timers = self.sources.context(Source::Timers);
                if heartbeat.poll_tick(&mut timers).is_ready() {
                    return Poll::Ready(Step::Heartbeat);
                }
            }
            self.sources.settle(Source::Timers);
        }
        Poll::Pending
    }

    /// Queues `received` and every frame already waiting in the channel, so one flush can
    /// carry them all, and leaves the feed waiting for the next one, registered with the
    /// channel: one tail lock per batch. Fails with `Lagging` when the client has fallen more
    /// than `send_buffer` events behind, and with `Stopped` when the hub stops.
    fn queue_events(
        &mut self,
        cx: &mut Context<'_>,
        mut received: Result<Signal, RecvError>,
    ) -> Result<(), End> {
        loop {
            let frame = match received {
                Ok(Signal::Event(frame)) => frame,
                Ok(Signal::Stop) | Err(RecvError::Closed) => return Err(End::Stopped),
                Err(RecvError::Lagged(_)) => return Err(End::Lagging),
            };
            let already_in_snapshot = match self.handover {
                Some(snapshot_seq) if frame.seq <= snapshot_seq => true,
                Some(_) => {
                    self.handover = None;
                    false
                }
                None => false,
            };
            if !already_in_snapshot {
                self.out.push_event(frame.text);
                if self.out.is_over_limit() {
                    return Err(End::Lagging);
                }
            }
            received = match self.feed.poll_recv(cx) {
                Poll::Ready(received) => received,
                Poll::Pending => return Ok(()),
            };
        }
    }
}

async fn run(
    socket: &mut Socket,
    hub: &Hub,
    source: &dyn SnapshotSource,
    config: &ConnConfig,
    since: Option<Position>,
    registration: &Registration,
) -> End {
    let counters = &hub.shared.counters;
    let mut out = Outbox::new(config.send_buffer);

    let Some(start) = hub.subscribe(since) else {
        // The hub was stopped before this client could subscribe.
        return out.finish(End::Stopped, socket, registration).await;
    };
    let (events, handover) = match start {
        Start::Resume { events, missed } => {
            counters.resumed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                since = since.map(|position| position.seq),
                missed = missed.len(),
                "resuming from the replay window"
            );
            out.push_backlog(missed);
            (events, None)
        }
        Start::Snapshot { events } => match queue_snapshot(&mut out, hub, source) {
            Ok(seq) => (events, Some(seq)),
            Err(end) => return out.finish(end, socket, registration).await,
        },
    };

    // The write timeout is kept lazily: progress only records an instant, and the timer is
    // re-armed when it fires early. Resetting a timer on every flush would take the timer
    // driver's lock once per delivery.
    let write_deadline = tokio::time::sleep(config.write_timeout);
    tokio::pin!(write_deadline);
    let period = config.heartbeat;
    let mut live = Live {
        socket,
        out,
        feed: EventFeed::new(events),
        sources: Sources::new(),
        handover,
        heartbeat: (!period.is_zero()).then(|| {
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        }),
        write_deadline,
    };
    let mut last_heard = Instant::now();
    let mut last_progress = Instant::now();

    let mut feed_parked = false;
    let end = loop {
        let was_busy = live.out.is_busy();
        let step = poll_fn(|cx| {
            let step = live.poll_step(cx, was_busy, feed_parked);
            if step.is_pending() {
                // The task yields: whatever wakes it next may be an event.
                feed_parked = false;
            }
            step
        })
        .await;
        feed_parked |= matches!(step, Step::Queued(Ok(())));
        let lagged = match step {
            Step::Flushed(Ok((events, bytes))) => {
                counters.events_sent.fetch_add(events, Ordering::Relaxed);
                counters.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                if live.out.is_busy() {
                    // More is queued: its write's timeout runs from this progress. An idle
                    // outbox needs no clock read here; the next write start takes one.
                    last_progress = Instant::now();
                }
                continue;
            }
            Step::Flushed(Err(_)) => break End::WriteError,
            Step::WriteDeadline => {
                let deadline = last_progress + config.write_timeout;
                if Instant::now() >= deadline {
                    break End::WriteTimeout;
                }
                live.write_deadline.as_mut().reset(deadline);
                false
            }
            // Client data is read and discarded: the protocol is server-to-client.
            Step::Inbound(Some(Ok(Message::Close(_)))) => break End::ClientClosed,
            Step::Inbound(Some(Ok(_))) => {
                last_heard = Instant::now();
                false
            }
            Step::Inbound(Some(Err(WsError::Capacity(_)))) => break End::MessageTooBig,
            Step::Inbound(Some(Err(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake,
            ))))
            | Step::Inbound(None) => break End::PeerGone,
            Step::Inbound(Some(Err(error))) => {
                tracing::debug!(%error, "read failed");
                break End::ReadError;
            }
            Step::Replied => false,
            Step::Queued(Ok(())) => false,
            Step::Queued(Err(End::Lagging)) => true,
            Step::Queued(Err(end)) => break end,
            Step::Heartbeat => {
                if last_heard.elapsed() >= period * 2 {
                    counters.heartbeat_timeouts.fetch_add(1, Ordering::Relaxed);
                    break End::HeartbeatTimeout;
                }
                if let Some(ping) = live.socket.ping() {
                    live.out.push_control(ping);
                }
                false
            }
        };
        if lagged {
            match config.lag_policy {
                LagPolicy::Disconnect => break End::Lagging,
                LagPolicy::Resync => {
                    // Replace the backlog with the state it would have produced. A fresh
                    // subscription, taken before the snapshot, restarts the hand-over.
                    counters.resyncs.fetch_add(1, Ordering::Relaxed);
                    let dropped = live.out.drop_backlog();
                    tracing::warn!(
                        dropped,
                        "client fell behind: backlog replaced by a snapshot"
                    );
                    let Some(
                        Start::Snapshot { events: fresh } | Start::Resume { events: fresh, .. },
                    ) = hub.subscribe(None)
                    else {
                        break End::Stopped;
                    };
                    live.feed.replace(fresh);
                    feed_parked = false;
                    match queue_snapshot(&mut live.out, hub, source) {
                        Ok(seq) => live.handover = Some(seq),
                        Err(end) => break end,
                    }
                }
            }
        }
        if !was_busy && live.out.is_busy() {
            // A write starts now: its timeout runs from here.
            last_progress = Instant::now();
        }
    };
    match end {
        End::Lagging => {
            counters.evicted_lagging.fetch_add(1, Ordering::Relaxed);
        }
        End::WriteTimeout => {
            counters
                .evicted_write_timeout
                .fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    let Live { socket, out, .. } = live;
    out.finish(end, socket, registration).await
}

/// Takes a snapshot from `source`, encodes it and queues it, followed by one `health` event
/// per source it carries (each with the snapshot's seq and `at`, so a client's last seq never
/// goes backwards and a resume from it stays exact). Returns its seq, from which the hand-over
/// skips events already reflected in it.
fn queue_snapshot(out: &mut Outbox, hub: &Hub, source: &dyn SnapshotSource) -> Result<u64, End> {
    let counters = &hub.shared.counters;
    let snapshot = source.snapshot();
    // The `at` of the last event the snapshot reflects: a client can resume from it.
    let at = hub.snapshot_at(snapshot.seq, snapshot.at);
    let event = Event {
        seq: snapshot.seq,
        at,
        kind: EventType::Snapshot,
        sessions: snapshot.sessions,
        ..Event::default()
    };
    let mut frames = Vec::with_capacity(1 + snapshot.health.len());
    frames.push(encode_for_client(hub, &event)?);
    for health in snapshot.health {
        frames.push(encode_for_client(
            hub,
            &Event {
                seq: snapshot.seq,
                at,
                kind: EventType::Health,
                health: Some(health),
                ..Event::default()
            },
        )?);
    }
    counters.snapshots.fetch_add(1, Ordering::Relaxed);
    out.push_snapshot(frames);
    Ok(event.seq)
}

/// Encodes one event for this client alone (a snapshot and what comes with it).
fn encode_for_client(hub: &Hub, event: &Event) -> Result<TextFrame, End> {
    TextFrame::encode(|buf| wire::to_writer(buf, event)).map_err(|error| {
        hub.shared
            .counters
            .encode_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(seq = event.seq, kind = event.kind.as_str(), %error, "cannot encode snapshot");
        End::EncodeError
    })
}

/// Something queued for the client: whole frames, written as they are.
enum Outgoing {
    Event(TextFrame),
    /// Control frames framed by tungstenite (pings, pongs, closes).
    Control(Bytes),
}

impl Outgoing {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Outgoing::Event(frame) => frame.as_bytes(),
            Outgoing::Control(bytes) => bytes,
        }
    }
}

/// The client's bounded queue, and the write in progress.
struct Outbox {
    /// Frames not yet completely written; the first may be partly written.
    queue: VecDeque<Outgoing>,
    /// Bytes of the first queued frame already written.
    written: usize,
    /// Event frames queued and not yet reported written: what `send_buffer` bounds.
    queued_events: usize,
    /// `send_buffer`.
    limit: usize,
    /// Replayed events still queued: a resume may hand over more than `send_buffer` events
    /// at once, and those must not count as lag.
    backlog_allowance: usize,
    /// Frames at the head of the queue that the current write batch still has to write.
    batch: usize,
    /// Event frames written in the current batch, and their payload bytes.
    batch_events: u64,
    batch_bytes: u64,
    /// A batch was started and has not completed.
    flushing: bool,
}

impl Outbox {
    fn new(limit: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            written: 0,
            queued_events: 0,
            limit,
            backlog_allowance: 0,
            batch: 0,
            batch_events: 0,
            batch_bytes: 0,
            flushing: false,
        }
    }

    fn push_event(&mut self, frame: TextFrame) {
        self.queued_events += 1;
        self.queue.push_back(Outgoing::Event(frame));
    }

    fn push_backlog(&mut self, frames: Vec<Frame>) {
        self.backlog_allowance = frames.len();
        for frame in frames {
            self.push_event(frame.text);
        }
    }

    /// Queues a snapshot and the health reports that follow it. The reports do not count as
    /// lag: a client may fall `send_buffer` events behind after them.
    fn push_snapshot(&mut self, frames: Vec<TextFrame>) {
        self.backlog_allowance += frames.len().saturating_sub(1);
        for frame in frames {
            self.push_event(frame);
        }
    }

    fn is_over_limit(&self) -> bool {
        self.queued_events > self.limit + self.backlog_allowance
    }

    /// Drops every queued event not yet started on the socket; returns how many.
    fn drop_backlog(&mut self) -> usize {
        // A frame partly written must be finished, or the stream is corrupt.
        let started = if self.written > 0 {
            self.queue.pop_front()
        } else {
            None
        };
        let before = self.queue.len();
        self.queue.retain(|o| matches!(o, Outgoing::Control(_)));
        let dropped = before - self.queue.len();
        if let Some(started) = started {
            self.queue.push_front(started);
        }
        self.queued_events -= dropped;
        self.batch = self.batch.min(self.queue.len());
        self.backlog_allowance = 0;
        dropped
    }

    fn push_control(&mut self, frames: Bytes) {
        self.queue.push_back(Outgoing::Control(frames));
    }

    fn is_busy(&self) -> bool {
        !self.queue.is_empty() || self.flushing
    }

    /// Whether a frame has been partly written: nothing else can go on the socket until it
    /// is complete.
    fn is_mid_frame(&self) -> bool {
        self.written > 0
    }

    /// Writes a batch of up to [`FRAMES_PER_BATCH`] queued frames, [`SLICES_PER_WRITE`] per
    /// vectored write, then flushes. Ready with the number of event frames and payload bytes
    /// written when the whole batch is on the socket.
    fn poll_drive(
        &mut self,
        socket: &mut Socket,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(u64, u64)>> {
        if !self.flushing {
            self.batch = self.queue.len().min(FRAMES_PER_BATCH);
            self.flushing = true;
        }
        while self.batch > 0 {
            let written = if self.batch == 1 {
                // The usual case once a stream is steady: one event per wake-up.
                let head = self.queue.front().map_or(&[][..], Outgoing::as_bytes);
                ready!(socket.poll_write(cx, &head[self.written..]))?
            } else {
                let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
                let mut count = 0;
                for (slice, queued) in slices.iter_mut().zip(self.queue.iter().take(self.batch)) {
                    let bytes = queued.as_bytes();
                    *slice = IoSlice::new(if count == 0 {
                        &bytes[self.written..]
                    } else {
                        bytes
                    });
                    count += 1;
                }
                ready!(socket.poll_write_vectored(cx, &slices[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        ready!(socket.poll_flush(cx))?;
        self.flushing = false;
        let events = std::mem::take(&mut self.batch_events);
        let bytes = std::mem::take(&mut self.batch_bytes);
        self.queued_events -= events as usize;
        self.backlog_allowance = self.backlog_allowance.saturating_sub(events as usize);
        Poll::Ready(Ok((events, bytes)))
    }

    /// Takes `written` bytes off the head of the queue.
    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(head) = self.queue.front() else {
                break;
            };
            let left = head.as_bytes().len() - self.written;
            if written < left {
                self.written += written;
                return;
            }
            written -= left;
            self.written = 0;
            self.batch -= 1;
            if let Some(Outgoing::Event(frame)) = self.queue.pop_front() {
                self.batch_events += 1;
                self.batch_bytes += frame.payload().len() as u64;
            }
        }
    }

    /// Ends the connection: sends the close frame `end` calls for (or the answer to the
    /// client's close) when the socket can take it, waits briefly for the peer's answer, and
    /// drops the socket.
    async fn finish(mut self, end: End, socket: &mut Socket, registration: &Registration) -> End {
        registration.closing();
        if self.is_mid_frame() {
            // The socket is not taking what it already has: a close frame would only queue
            // behind it. Drop the connection.
            return end;
        }
        self.queue.retain(|o| matches!(o, Outgoing::Control(_)));
        self.queued_events = 0;
        self.flushing = false;
        let close = match end.close_frame() {
            Some((code, reason)) => socket.close(code, reason),
            // tungstenite queued its answer to the client's close when it read it.
            None if end == End::ClientClosed => None,
            // The socket is stuck, gone or broken: nothing more to say on it.
            None => return end,
        };
        if let Some(close) = close {
            self.push_control(close);
        }
        let closed = tokio::time::timeout(CLOSE_GRACE, async {
            while self.is_busy() {
                poll_fn(|cx| self.poll_drive(socket, cx)).await?;
            }
            if end != End::ClientClosed {
                // Wait for the client's answer to our close.
                drain(socket).await;
            }
            Ok::<(), io::Error>(())
        })
        .await;
        if !matches!(closed, Ok(Ok(()))) {
            tracing::debug!("close handshake did not complete");
        }
        end
    }
}

/// Reads until the client closes, the connection ends or reading fails.
async fn drain(socket: &mut Socket) {
    while let Some(Ok(message)) = poll_fn(|cx| socket.poll_recv(cx)).await {
        if message.is_close() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    // unwrap()/expect() here are test assertions on values the test built.
    use super::*;

    fn event(len: usize) -> TextFrame {
        TextFrame::from_text(&vec![b'x'; len])
    }

    #[test]
    fn a_partly_written_frame_survives_a_backlog_drop_and_counts_once_written() {
        let mut out = Outbox::new(8);
        for _ in 0..3 {
            out.push_event(event(100));
        }
        out.push_control(Bytes::from_static(&[0x89, 0x00]));
        out.flushing = true;
        out.batch = 4;
        // Half of the first frame (2-byte header + 100) went out.
        out.advance(51);
        assert!(out.is_mid_frame());
        assert_eq!(out.drop_backlog(), 2, "the two frames not started");
        assert_eq!(out.queue.len(), 2, "the started frame and the ping stay");
        assert!(matches!(out.queue.front(), Some(Outgoing::Event(_))));
        assert_eq!(out.queued_events, 1);
        assert_eq!(out.batch, 2);
        // The rest of the first frame and the whole ping.
        out.advance(51 + 2);
        assert!(!out.is_mid_frame());
        assert!(out.queue.is_empty());
        assert_eq!((out.batch_events, out.batch_bytes), (1, 100));
    }

    #[test]
    fn advance_crosses_frame_boundaries_and_stops_mid_frame() {
        let mut out = Outbox::new(8);
        out.push_event(event(10));
        out.push_event(event(20));
        out.flushing = true;
        out.batch = 2;
        out.advance(12 + 5);
        assert_eq!((out.queue.len(), out.written, out.batch), (1, 5, 1));
        assert_eq!((out.batch_events, out.batch_bytes), (1, 10));
        out.advance(17);
        assert_eq!((out.queue.len(), out.written, out.batch), (0, 0, 0));
        assert_eq!((out.batch_events, out.batch_bytes), (2, 30));
    }
}
