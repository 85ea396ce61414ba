//! The node side: [`Follower`], a task that rebuilds a node's state from the broker and then
//! publishes the stream into the node's [`Publisher`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::publisher::Publisher;
use crate::sink::{EventSink, SnapshotSource};
use crate::store::SessionStore;
use crate::wire::{Event, EventType, Timestamp};

use super::backoff::Link;
use super::checkpoint::State;
use super::{Broker, BrokerError, Entry, EntryId};

/// Default entries per read.
pub(crate) const DEFAULT_READ_BATCH: usize = 512;
/// Default time a read waits for new entries before asking again.
pub(crate) const DEFAULT_BLOCK: Duration = Duration::from_secs(1);
/// The longest [`Follower::block`]: 60 s. Longer values are lowered to it.
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(60);

/// Follows a [`Broker`] stream for one serving node.
///
/// On start (and after a gap) it *builds*: reads the [`Checkpoint`](super::Checkpoint),
/// folds every entry after it into a fresh store, then publishes the result to the node as
/// one `snapshot` event (preceded by a `health` event per source whose health differs from
/// the node's). Then it *follows*: reads the stream after its position with blocking reads
/// and publishes each event into the node's [`Publisher`], exactly as a local monitor would,
/// with the producer's `seq` and `at`.
///
/// It checks that each entry's `prev` is the entry it applied last; when not (the position
/// was trimmed, the stream was deleted), it builds again. A resync entry (the producer
/// dropped events) is applied like a build. Broker failures are retried with backoff
/// (logged once per change of state); the node's clients keep their sockets meanwhile.
///
/// ```no_run
/// use agentwatch_ws::broker::{Follower, RedisBroker};
/// use agentwatch_ws::WsLayer;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let (ws, publisher) = WsLayer::new().build::<()>("/ws");
/// let broker = RedisBroker::open("redis://127.0.0.1:6379", "agentwatch:events")?;
/// let follower = Follower::new(broker, publisher).spawn();
/// follower.ready().await; // built from the checkpoint: serve now
/// # Ok(()) }
/// ```
pub struct Follower<B> {
    broker: B,
    publisher: Publisher,
    batch: usize,
    block: Duration,
}

impl<B> std::fmt::Debug for Follower<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("batch", &self.batch)
            .field("block", &self.block)
            .finish()
    }
}

/// A running [`Follower`]. Dropping it stops the task.
#[derive(Debug)]
pub struct FollowerHandle {
    shared: Arc<Shared>,
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    applied: AtomicU64,
    builds: AtomicU64,
    gaps: AtomicU64,
    resyncs: AtomicU64,
    recoveries: AtomicU64,
    malformed: AtomicU64,
}

/// A point-in-time copy of a [`Follower`]'s counters (totals since it started).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowerStats {
    /// Stream events handed to the node.
    pub applied: u64,
    /// Builds from the checkpoint: the first one, then one per gap.
    pub builds: u64,
    /// Times continuity could not be proven (the last position was trimmed or deleted).
    pub gaps: u64,
    /// Resync entries applied (the producer had dropped events).
    pub resyncs: u64,
    /// Times the broker became reachable again after failures.
    pub recoveries: u64,
    /// Entries skipped because their event could not be decoded (logged each time).
    pub malformed: u64,
}

impl<B: Broker> Follower<B> {
    /// A follower publishing the stream of `broker` into `publisher` (the node's, from
    /// [`WsLayer::build`](crate::WsLayer::build)). Nothing else should publish into that
    /// publisher: the follower's builds replace its whole state.
    pub fn new(broker: B, publisher: Publisher) -> Self {
        Follower {
            broker,
            publisher,
            batch: DEFAULT_READ_BATCH,
            block: DEFAULT_BLOCK,
        }
    }

    /// Entries per read (default 512; 0 is raised to 1, with a `warn`).
    pub fn batch(mut self, entries: usize) -> Self {
        self.batch = crate::layer::bounded("follower.batch", entries, 1, usize::MAX);
        self
    }

    /// How long one read waits for new entries (default 1 s). New entries
    /// wake it at once; this only bounds how long a dead connection can go unnoticed, and
    /// how often a node waiting for the producer's next checkpoint looks again. Between
    /// 1 ms and 60 s; values outside are raised or lowered to them, with a `warn`.
    pub fn block(mut self, block: Duration) -> Self {
        self.block =
            crate::layer::bounded("follower.block", block, Duration::from_millis(1), MAX_BLOCK);
        self
    }

    /// Starts following.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(self) -> FollowerHandle {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready) = watch::channel(false);
        let task = tokio::spawn(run(self, shared.clone(), ready_tx));
        FollowerHandle {
            shared,
            ready,
            task,
        }
    }

    /// Hands one event to the node, with its own seq.
    fn publish(&self, event: &Event) {
        // Fails only on an event that cannot be encoded, which the producer encoded already.
        if let Err(error) = self.publisher.handle_event(event) {
            tracing::error!(seq = event.seq, %error, "publisher refused a broker event");
        }
    }

    /// Publishes a whole state: the snapshot, then every health report (see
    /// `State::events`), into the publisher. On a node that has just started, the replay
    /// window then begins with that snapshot, so a client resuming from its position (on this
    /// node or any other) is verified against it.
    fn publish_state(&self, state: State) {
        let (snapshot, health) = state.events();
        for event in std::iter::once(&snapshot).chain(&health) {
            self.publish(event);
        }
    }

    /// Builds the state from the checkpoint and the stream after it. `Ok(None)` when the
    /// stream does not continue the checkpoint (or, without one, does not start at its first
    /// entry): the producer's next checkpoint will.
    async fn build(&self) -> Result<Option<(Option<EntryId>, State)>, BrokerError> {
        let scratch = SessionStore::new();
        let mut at = Timestamp::default();
        let mut position = None;
        let mut folded = false;
        if let Some(checkpoint) = self.broker.read_checkpoint().await? {
            let state = checkpoint.state()?;
            at = state.snapshot.at;
            let (snapshot, health) = state.events();
            for event in std::iter::once(&snapshot).chain(&health) {
                let _ = scratch.handle_event(event);
            }
            position = Some(checkpoint.entry);
            folded = true;
        }
        loop {
            let entries = self
                .broker
                .read(position.as_deref(), self.batch, None)
                .await?;
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                if entry.prev != position.as_deref().unwrap_or("") {
                    return Ok(None);
                }
                position = Some(entry.id.clone());
                match decode(&entry) {
                    Ok(Decoded::Event(event)) => {
                        at = event.at;
                        let _ = scratch.handle_event(&event);
                    }
                    Ok(Decoded::Resync(state)) => {
                        at = state.snapshot.at;
                        let (snapshot, health) = state.events();
                        for event in std::iter::once(&snapshot).chain(&health) {
                            let _ = scratch.handle_event(event);
                        }
                    }
                    Err(error) => self.malformed(&entry, &error),
                }
                folded = true;
            }
        }
        if !folded {
            return Ok(Some((None, State::empty())));
        }
        let snapshot = scratch.snapshot();
        let event = Event {
            seq: snapshot.seq,
            at,
            kind: EventType::Snapshot,
            sessions: snapshot.sessions,
            ..Event::default()
        };
        Ok(Some((
            position,
            State {
                snapshot: event,
                health: snapshot.health,
            },
        )))
    }

    fn malformed(&self, entry: &Entry, error: &BrokerError) {
        tracing::error!(entry = %entry.id, seq = entry.record.seq, %error, "skipping a broker entry that cannot be decoded");
    }
}

enum Decoded {
    Event(Event),
    Resync(State),
}

/// Decodes an entry. The decoder is Go's (a `null` or `{}` event decodes to the zero event),
/// so what it gives is checked too: an event of a known type at the record's `seq`, and a
/// resync's `snapshot`.
fn decode(entry: &Entry) -> Result<Decoded, BrokerError> {
    match &entry.record.health {
        Some(health) => {
            let state = State::decode(&entry.record.event, health)?;
            if state.snapshot.kind != EventType::Snapshot {
                return Err(BrokerError::Malformed(format!(
                    "resync: a {:?} event where a snapshot belongs",
                    state.snapshot.kind.as_str()
                )));
            }
            Ok(Decoded::Resync(state))
        }
        None => {
            let event = Event::from_json(&entry.record.event)
                .map_err(|e| BrokerError::Malformed(format!("event: {e}")))?;
            if !event.kind.is_known() || event.seq != entry.record.seq {
                return Err(BrokerError::Malformed(format!(
                    "event: type {:?} at seq {} in a record of seq {}",
                    event.kind.as_str(),
                    event.seq,
                    entry.record.seq
                )));
            }
            Ok(Decoded::Event(event))
        }
    }
}

/// Where the follower stands.
enum Position {
    /// Must build (first start, or after a gap).
    Build,
    /// Applied everything up to this entry (`None`: before the stream's first entry).
    At(Option<EntryId>),
}

async fn run<B: Broker>(follower: Follower<B>, shared: Arc<Shared>, ready: watch::Sender<bool>) {
    let mut link = Link::new("follower");
    let mut position = Position::Build;
    let mut waiting_for_checkpoint = false;
    loop {
        let after = match &position {
            Position::Build => {
                match follower.build().await {
                    Ok(Some((at, state))) => {
                        if link.ok() {
                            shared.recoveries.fetch_add(1, Ordering::Relaxed);
                        }
                        if !state.is_empty() {
                            follower.publish_state(state);
                        }
                        shared.builds.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            entry = at.as_deref().unwrap_or(""),
                            seq = follower.publisher.seq(),
                            "node state built from the broker"
                        );
                        waiting_for_checkpoint = false;
                        position = Position::At(at);
                        ready.send_replace(true);
                    }
                    Ok(None) => {
                        if link.ok() {
                            shared.recoveries.fetch_add(1, Ordering::Relaxed);
                        }
                        if !waiting_for_checkpoint {
                            waiting_for_checkpoint = true;
                            tracing::warn!(
                                "the stream does not continue the checkpoint (trimmed past it?): waiting for the producer's next checkpoint"
                            );
                        }
                        tokio::time::sleep(follower.block).await;
                    }
                    Err(error) => link.failed(&error).await,
                }
                continue;
            }
            Position::At(after) => after.clone(),
        };
        let entries = match follower
            .broker
            .read(after.as_deref(), follower.batch, Some(follower.block))
            .await
        {
            Ok(entries) => entries,
            Err(error) => {
                link.failed(&error).await;
                continue;
            }
        };
        if link.ok() {
            shared.recoveries.fetch_add(1, Ordering::Relaxed);
        }
        let mut last = after;
        for entry in entries {
            if entry.prev != last.as_deref().unwrap_or("") {
                shared.gaps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    after = last.as_deref().unwrap_or(""),
                    next = %entry.id,
                    next_prev = %entry.prev,
                    "stream position lost (trimmed or deleted): rebuilding from the checkpoint; clients get a snapshot"
                );
                position = Position::Build;
                break;
            }
            match decode(&entry) {
                Ok(Decoded::Event(event)) => {
                    follower.publish(&event);
                    shared.applied.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Decoded::Resync(state)) => {
                    tracing::info!(
                        seq = entry.record.seq,
                        "resync from the producer: clients get a snapshot"
                    );
                    follower.publish_state(state);
                    shared.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    shared.malformed.fetch_add(1, Ordering::Relaxed);
                    follower.malformed(&entry, &error);
                }
            }
            last = Some(entry.id);
            position = Position::At(last.clone());
        }
    }
}

impl State {
    fn empty() -> State {
        State {
            snapshot: Event::default(),
            health: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.snapshot.seq == 0 && self.snapshot.sessions.is_empty() && self.health.is_empty()
    }
}

impl FollowerHandle {
    /// The counters.
    pub fn stats(&self) -> FollowerStats {
        let s = &self.shared;
        FollowerStats {
            applied: s.applied.load(Ordering::Relaxed),
            builds: s.builds.load(Ordering::Relaxed),
            gaps: s.gaps.load(Ordering::Relaxed),
            resyncs: s.resyncs.load(Ordering::Relaxed),
            recoveries: s.recoveries.load(Ordering::Relaxed),
            malformed: s.malformed.load(Ordering::Relaxed),
        }
    }

    /// Whether the first build is done.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first build is done: the node's store then holds the broker's state
    /// and clients connecting get it. Waits as long as the broker is unreachable: wrap it in
    /// a timeout where that matters.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        // An error means the task ended (it never does on its own): nothing to wait for.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Stops the task. Also done on drop.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for FollowerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;
    use crate::broker::Record;

    fn entry(seq: u64, event: &[u8], health: Option<&[u8]>) -> Entry {
        Entry {
            id: "1-0".into(),
            prev: String::new(),
            record: Record {
                seq,
                event: event.to_vec(),
                health: health.map(<[u8]>::to_vec),
            },
        }
    }

    #[test]
    fn entries_that_decode_to_no_event_are_malformed() {
        let ok = br#"{"seq":7,"at":"2026-01-02T03:04:05Z","type":"delta","removed":["a"]}"#;
        assert!(matches!(decode(&entry(7, ok, None)), Ok(Decoded::Event(_))));
        for (seq, bad) in [
            (0, &b"null"[..]),
            (0, b"{}"),
            (7, br#"{"seq":7,"type":"nonsense"}"#),
            (8, ok),
        ] {
            assert!(
                matches!(
                    decode(&entry(seq, bad, None)),
                    Err(BrokerError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let snapshot = br#"{"seq":7,"at":"2026-01-02T03:04:05Z","type":"snapshot"}"#;
        assert!(matches!(
            decode(&entry(7, snapshot, Some(b"[]"))),
            Ok(Decoded::Resync(_))
        ));
        assert!(matches!(
            decode(&entry(7, b"null", Some(b"[]"))),
            Err(BrokerError::Malformed(_))
        ));
    }
}
