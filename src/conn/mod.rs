//! One WebSocket client: snapshot first, then the live stream, with heartbeat, write timeout
//! and slow-client eviction. One task per connection, no extra reader or writer task; a
//! wake-up polls only the triggers that fired ([`wakers`]). Events arrive framed once for
//! every client ([`frame`]), wait in the client's bounded [`outbox`] and go to the socket as
//! they are ([`socket`]), or as their shared compressed twin to a client that negotiated
//! permessage-deflate. What a client sends is bounded by [`inbound`], and inflated with a
//! bound by [`inflate`] when it comes compressed; how a connection ends is [`end`], and how
//! it says goodbye is [`close`].

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tracing::Instrument;
use tungstenite::Message;
use tungstenite::error::Error as WsError;

use crate::admission::auth::Identity;
use crate::admission::cap::ConnectionPermit;
use crate::counters::Counters;
use crate::frame::TextFrame;
use crate::hub::{Hub, LagPolicy, Position, Signal, Start};
use crate::privacy::Viewer;
use crate::sink::SnapshotSource;
use crate::snapshot_cache::EncodedSnapshot;
use crate::wire::{self, Event, EventType};

mod close;
mod end;
mod inbound;
mod inflate;
mod outbox;
mod socket;
mod wakers;
use end::End;
use inbound::{Heartbeat, InboundBudget};
use outbox::Outbox;
pub(crate) use socket::{Socket, Transport};
use wakers::{EventFeed, Trigger, Triggers};

/// Per-connection settings, frozen when the router is built.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    /// The ping period; `None`: no pings.
    pub(crate) heartbeat: Option<Duration>,
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
    /// What the client may see.
    pub(crate) viewer: Viewer,
}

/// Counts a connection task, from the moment its `101` is promised until the task ends or
/// its upgrade fails (this value is dropped either way): what [`Hub::closed`] waits for.
struct Task {
    hub: Hub,
}

impl Task {
    fn new(hub: Hub) -> Self {
        hub.counters().task_started();
        Task { hub }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.hub.counters().task_ended();
    }
}

/// Counts the connection as connected until it starts closing (see
/// [`Registration::closing`]) or is dropped, however the task ends.
struct Registration<'a> {
    counters: &'a Counters,
    connected: bool,
}

impl<'a> Registration<'a> {
    fn new(counters: &'a Counters) -> Self {
        counters.connection_started();
        Registration {
            counters,
            connected: true,
        }
    }

    /// The connection no longer serves events: it only says goodbye from here on, which may
    /// take up to the close grace period.
    fn closing(&mut self) {
        if std::mem::take(&mut self.connected) {
            self.counters.connection_closing();
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.closing();
    }
}

/// One accepted client, from its `101` on: counted as a connection task from creation (see
/// [`Hub::closed`]), served once hyper hands over the socket ([`Connection::serve`]).
pub(crate) struct Connection {
    task: Task,
    source: Arc<dyn SnapshotSource>,
    config: Arc<ConnConfig>,
    client: ClientInfo,
    permit: Option<ConnectionPermit>,
}

impl Connection {
    /// Counts the task at once: create it before answering `101`.
    pub(crate) fn new(
        hub: Hub,
        source: Arc<dyn SnapshotSource>,
        config: Arc<ConnConfig>,
        client: ClientInfo,
        permit: Option<ConnectionPermit>,
    ) -> Self {
        Connection {
            task: Task::new(hub),
            source,
            config,
            client,
            permit,
        }
    }

    /// Runs the client connection to its end, however it ends. The permit (if any) is
    /// released when this future completes or is dropped.
    pub(crate) fn serve(self, socket: Socket) -> impl Future<Output = ()> + Send + 'static {
        serve(socket, self)
    }
}

/// Runs one client connection to its end, however it ends.
///
/// Not an `async fn`: an `async fn` keeps its arguments in its future for its whole life, so
/// the socket would be stored twice, there and where the loop uses it. Here the future owns
/// the socket once and lends it out.
fn serve(mut socket: Socket, connection: Connection) -> impl Future<Output = ()> + Send + 'static {
    let Connection {
        task,
        source,
        config,
        client,
        permit,
    } = connection;
    let hub = task.hub.clone();
    let span = tracing::info_span!(
        "ws_client",
        peer = %client.peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        identity = %client.identity,
        policy = %client.viewer.policy,
    );
    async move {
        let counters = hub.counters();
        let mut registration = Registration::new(counters);
        tracing::info!(clients = hub.client_count(), "client connected");
        let mut out = Outbox::new(config.send_buffer, socket.wire());
        let end = stream(&mut socket, &mut out, &hub, &*source, &config, &client).await;
        end.count(counters);
        end.log();
        registration.closing();
        close::finish(&mut out, end, &mut socket).await;
        drop(socket);
        count_sent(counters, &mut out);
        drop(permit);
        drop(registration);
        drop(task);
    }
    .instrument(span)
}

/// Adds the events the outbox wrote since the last call, and the frames it compressed, to
/// the hub's counters.
fn count_sent(counters: &Counters, out: &mut Outbox) {
    let (events, bytes) = out.take_sent();
    if events > 0 {
        counters.record_sent(events, bytes);
    }
    let compressed = out.take_compressed();
    if compressed > 0 {
        counters.record_compressed(compressed);
    }
}

/// What a wake-up found; see [`Live::poll_step`].
enum Step {
    /// The outbox wrote everything, or a long run of frames: a chance to poll the rest.
    Flushed(std::io::Result<()>),
    /// The write deadline timer fired; the write may still be within its time.
    WriteDeadline,
    Inbound(Option<Result<Message, WsError>>),
    /// The client sent more than its inbound budget.
    Flood,
    /// Reading found nothing new, but tungstenite framed a reply that is now queued.
    Replied,
    /// Events were taken from the channel and queued.
    Queued(Result<Queued, End>),
    Heartbeat,
}

/// How taking events from the channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    /// Every waiting event is queued; the feed waits for the next one.
    Drained,
    /// The producer restarted: the client needs a fresh snapshot before the restarted stream.
    Restart,
}

/// A connection past its hand-over start: what a wake-up polls.
struct Live<'a> {
    socket: &'a mut Socket,
    viewer: &'a Viewer,
    counters: &'a Counters,
    out: &'a mut Outbox,
    feed: EventFeed,
    triggers: Triggers,
    /// The snapshot's seq until the first event after it: events up to it are skipped.
    handover: Option<u64>,
    heartbeat: Option<(Interval, Heartbeat)>,
    /// Armed lazily; see `stream`.
    write_deadline: Pin<&'a mut Sleep>,
    /// When the write in progress last moved (or started) before the socket refused more.
    last_progress: Instant,
    inbound: InboundBudget,
}

impl Live<'_> {
    /// Polls what is due, in priority order: write what is queued first, so one wake-up reads
    /// the channel once and flushes once; then the write deadline, which is what evicts a
    /// client whose write hangs; then inbound frames, before events so that pongs are seen
    /// even under a sustained stream; then events; then the heartbeat. The read side and the
    /// timers are polled only when they fired (or have not yet been polled back to
    /// `Pending`); see [`wakers`].
    ///
    /// The read side is not polled while a pong the client is owed waits to go out: a client
    /// that pings faster than it reads has its pings left in the kernel's buffers, where TCP
    /// flow control holds it back, instead of in ours.
    ///
    /// `feed_parked`: the feed was drained to `Pending` earlier in this same poll of the
    /// task, so its waiter is registered and nothing can be waiting in it unnoticed (a send
    /// since then has woken the task, which will be polled again). Polling it anyway would
    /// take the channel's tail lock a second time per event.
    fn poll_step(&mut self, cx: &mut Context<'_>, writing: bool, feed_parked: bool) -> Poll<Step> {
        self.triggers.refresh(cx);
        if writing {
            if let Poll::Ready(flushed) = self.out.poll_drive(self.socket, cx) {
                return Poll::Ready(Step::Flushed(flushed));
            }
            // The socket refuses bytes: the write timeout runs from the last time it took
            // some, which is the only moment a clock read is needed.
            if self.out.stalled() {
                self.last_progress = Instant::now();
            }
            let mut timers = self.triggers.context(Trigger::Timers);
            if self.write_deadline.as_mut().poll(&mut timers).is_ready() {
                return Poll::Ready(Step::WriteDeadline);
            }
        }
        if self.triggers.is_due(Trigger::Read) && !self.out.owes_pong() {
            let inbound = self
                .socket
                .poll_recv(&mut self.triggers.context(Trigger::Read));
            let read = self.socket.take_read();
            if read > 0 && !self.inbound.charge(read, Instant::now()) {
                return Poll::Ready(Step::Flood);
            }
            // A pong or close reply tungstenite owes goes into its slot of the outbox.
            let mut replied = false;
            let out = &mut *self.out;
            self.socket.take_control(|kind, frame| {
                out.push_control(kind, frame);
                replied = true;
            });
            match inbound {
                // More frames may be buffered already, so the read side stays due.
                Poll::Ready(inbound) => return Poll::Ready(Step::Inbound(inbound)),
                Poll::Pending => self.triggers.settle(Trigger::Read),
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
        if self.triggers.is_due(Trigger::Timers) {
            if let Some((interval, _)) = &mut self.heartbeat {
                let mut timers = self.triggers.context(Trigger::Timers);
                if interval.poll_tick(&mut timers).is_ready() {
                    return Poll::Ready(Step::Heartbeat);
                }
            }
            self.triggers.settle(Trigger::Timers);
        }
        Poll::Pending
    }

    /// Queues `received` and every frame already waiting in the channel, so one flush can
    /// carry them all, and leaves the feed waiting for the next one, registered with the
    /// channel: one tail lock per batch. Stops at an event that restarts the producer's
    /// numbering (`Queued::Restart`: the caller sends a snapshot in its place). Fails with
    /// `Lagging` when the client has fallen more than `send_buffer` events behind, and with
    /// `Stopped` when the hub stops.
    fn queue_events(
        &mut self,
        cx: &mut Context<'_>,
        mut received: Result<Signal, RecvError>,
    ) -> Result<Queued, End> {
        loop {
            let frame = match received {
                Ok(Signal::Event(frame)) => frame,
                Ok(Signal::Stop) | Err(RecvError::Closed) => return Err(End::Stopped),
                Err(RecvError::Lagged(_)) => return Err(End::Lagging),
            };
            if frame.restart {
                return Ok(Queued::Restart);
            }
            let already_in_snapshot = match self.handover {
                Some(snapshot_seq) if frame.seq <= snapshot_seq => true,
                Some(_) => {
                    self.handover = None;
                    false
                }
                None => false,
            };
            if !already_in_snapshot {
                // A viewer never gets an event it may not see in full: one that cannot be
                // redacted ends the connection.
                let text = frame
                    .text_for(self.viewer, self.counters)
                    .ok_or(End::EncodeError)?;
                self.out.push_event(text);
                if self.out.is_over_limit() {
                    return Err(End::Lagging);
                }
            }
            received = match self.feed.poll_recv(cx) {
                Poll::Ready(received) => received,
                Poll::Pending => return Ok(Queued::Drained),
            };
        }
    }
}

/// Serves the client until the connection ends; returns why. What is left in `out` is for
/// the closing handshake.
async fn stream(
    socket: &mut Socket,
    out: &mut Outbox,
    hub: &Hub,
    source: &dyn SnapshotSource,
    config: &ConnConfig,
    client: &ClientInfo,
) -> End {
    let counters = hub.counters();
    // Events older than the replay window, from the broker stream when a follower feeds it.
    let (since, backfilled) = crate::backfill::backfill(hub, client.since).await;
    let viewer = &client.viewer;
    let Some(start) = hub.subscribe(since) else {
        // The hub was stopped before this client could subscribe.
        return End::Stopped;
    };
    let (events, handover) = match start {
        Start::Resume { events, mut missed } => {
            if !backfilled.is_empty() {
                missed.splice(0..0, backfilled);
            }
            counters.record_resume();
            tracing::debug!(
                since = since.map(|position| position.seq),
                missed = missed.len(),
                "resuming from the replay window"
            );
            let mut frames = Vec::with_capacity(missed.len());
            for frame in missed {
                match frame.text_for(viewer, counters) {
                    Some(text) => frames.push(text),
                    None => return End::EncodeError,
                }
            }
            out.push_backlog(frames);
            (events, None)
        }
        Start::Snapshot { events } => match queue_snapshot(out, hub, source, viewer) {
            Ok(seq) => (events, Some(seq)),
            Err(end) => return end,
        },
    };

    // The write timeout is kept lazily: a stalled write only records an instant, and the
    // timer is re-armed when it fires early. Resetting a timer on every write would take the
    // timer driver's lock once per delivery.
    let write_deadline = tokio::time::sleep(config.write_timeout);
    tokio::pin!(write_deadline);
    let now = Instant::now();
    let mut live = Live {
        inbound: InboundBudget::new(socket.max_message_size(), now),
        socket,
        viewer,
        counters,
        out,
        feed: EventFeed::new(events),
        triggers: Triggers::new(),
        handover,
        // A period too long to add to the clock (`Duration::MAX`) never ticks: no heartbeat.
        heartbeat: config.heartbeat.and_then(|period| {
            let first = now.checked_add(period)?;
            let mut interval = tokio::time::interval_at(first, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some((interval, Heartbeat::new(period, now)))
        }),
        write_deadline,
        last_progress: now,
    };

    let mut feed_parked = false;
    loop {
        let writing = live.out.is_busy();
        let step = poll_fn(|cx| {
            let step = live.poll_step(cx, writing, feed_parked);
            if step.is_pending() {
                // The task yields: whatever wakes it next may be an event.
                feed_parked = false;
            }
            step
        })
        .await;
        feed_parked |= matches!(step, Step::Queued(Ok(Queued::Drained)));
        let lagged = match step {
            Step::Flushed(Ok(())) => {
                count_sent(counters, live.out);
                continue;
            }
            Step::Flushed(Err(_)) => return End::WriteError,
            Step::WriteDeadline => {
                // A timeout too long to add to the clock never runs out.
                let Some(deadline) = live.last_progress.checked_add(config.write_timeout) else {
                    live.write_deadline
                        .as_mut()
                        .reset(Instant::now() + Duration::from_secs(86_400));
                    continue;
                };
                if Instant::now() >= deadline {
                    return End::WriteTimeout;
                }
                live.write_deadline.as_mut().reset(deadline);
                false
            }
            Step::Flood => {
                // Logged at `warn` with the end; this says which budget it overdrew.
                tracing::debug!(burst = live.inbound.burst(), "inbound budget overdrawn");
                return End::InboundFlood;
            }
            Step::Inbound(Some(Ok(Message::Close(_)))) => return End::ClientClosed,
            Step::Inbound(Some(Ok(Message::Pong(payload)))) => {
                if let Some((_, heartbeat)) = &mut live.heartbeat {
                    heartbeat.pong(&payload, Instant::now());
                }
                false
            }
            // Anything else a client sends is read and discarded: the protocol is
            // server-to-client, and its pings are answered by tungstenite.
            Step::Inbound(Some(Ok(_))) => false,
            Step::Inbound(Some(Err(error))) => {
                let end = End::from_read(&error);
                if end != End::PeerGone {
                    tracing::debug!(%error, "read failed");
                }
                return end;
            }
            Step::Inbound(None) => return End::PeerGone,
            Step::Replied => false,
            Step::Queued(Ok(Queued::Drained)) => false,
            Step::Queued(Ok(Queued::Restart)) => {
                // Events before the restart and after it cannot be told apart by seq: the
                // client gets the state as it is now, then the restarted stream after it.
                let dropped = live.out.drop_backlog();
                tracing::info!(
                    dropped,
                    "producer restarted (seq did not rise): sending a fresh snapshot"
                );
                feed_parked = false;
                if let Err(end) = resnapshot(&mut live, hub, source) {
                    return end;
                }
                false
            }
            Step::Queued(Err(End::Lagging)) => true,
            Step::Queued(Err(end)) => return end,
            Step::Heartbeat => {
                if let Some((_, heartbeat)) = &mut live.heartbeat {
                    if heartbeat.is_overdue(Instant::now()) {
                        return End::HeartbeatTimeout;
                    }
                    live.socket.ping(&heartbeat.next_ping());
                    let out = &mut *live.out;
                    live.socket
                        .take_control(|kind, frame| out.push_control(kind, frame));
                }
                false
            }
        };
        if lagged {
            match config.lag_policy {
                LagPolicy::Disconnect => return End::Lagging,
                LagPolicy::Resync => {
                    // Replace the backlog with the state it would have produced. A fresh
                    // subscription, taken before the snapshot, restarts the hand-over.
                    counters.record_resync();
                    let dropped = live.out.drop_backlog();
                    tracing::warn!(
                        dropped,
                        "client fell behind: backlog replaced by a snapshot"
                    );
                    feed_parked = false;
                    if let Err(end) = resnapshot(&mut live, hub, source) {
                        return end;
                    }
                }
            }
        }
    }
}

/// Follows the hub afresh and queues a snapshot: a new subscription, taken before the
/// snapshot, restarts the hand-over. The caller has dropped the backlog the snapshot replaces.
fn resnapshot(live: &mut Live<'_>, hub: &Hub, source: &dyn SnapshotSource) -> Result<(), End> {
    let Some(Start::Snapshot { events: fresh } | Start::Resume { events: fresh, .. }) =
        hub.subscribe(None)
    else {
        return Err(End::Stopped);
    };
    live.feed.replace(fresh);
    live.handover = Some(queue_snapshot(live.out, hub, source, live.viewer)?);
    Ok(())
}

/// Queues a snapshot, followed by one `health` event per report it carries (one per
/// (machine, source) pair) (each with the
/// snapshot's seq and `at`, so a client's last seq never goes backwards and a resume from it
/// stays exact). Returns its seq, from which the hand-over skips events already reflected in
/// it. Clients connecting at the same source version share one encoding (see
/// `snapshot_cache`, one encoding per privacy policy); `source.snapshot()` is called only
/// when there is none yet.
fn queue_snapshot(
    out: &mut Outbox,
    hub: &Hub,
    source: &dyn SnapshotSource,
    viewer: &Viewer,
) -> Result<u64, End> {
    let snapshot = hub.snapshot_cache().get_or_build(
        source.version(),
        viewer.slot,
        || encode_snapshot(hub, source, viewer),
        || source.version(),
    )?;
    hub.counters().record_snapshot();
    out.push_snapshot(&snapshot.frames);
    Ok(snapshot.seq)
}

/// Takes a snapshot from `source` and encodes it with its `health` events, as `viewer` may
/// see them.
fn encode_snapshot(
    hub: &Hub,
    source: &dyn SnapshotSource,
    viewer: &Viewer,
) -> Result<EncodedSnapshot, End> {
    let counters = hub.counters();
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
    frames.push(encode_for_client(counters, viewer, &event)?);
    for health in snapshot.health {
        frames.push(encode_for_client(
            counters,
            viewer,
            &Event {
                seq: snapshot.seq,
                at,
                kind: EventType::Health,
                health: Some(health),
                ..Event::default()
            },
        )?);
    }
    Ok(EncodedSnapshot {
        seq: event.seq,
        frames: frames.into(),
    })
}

/// Encodes a snapshot event or a `health` event that follows it, redacted for `viewer`.
fn encode_for_client(
    counters: &Counters,
    viewer: &Viewer,
    event: &Event,
) -> Result<TextFrame, End> {
    let redacted;
    let event = match &viewer.redactor {
        Some(redactor) => {
            redacted = redactor.event(event);
            &redacted
        }
        None => event,
    };
    counters.encode(|buf| wire::to_writer(buf, event)).map_err(|error| {
        tracing::error!(seq = event.seq, kind = event.kind.as_str(), %error, "cannot encode snapshot");
        End::EncodeError
    })
}
