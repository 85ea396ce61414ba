//! The node side: [`Follower`], a task that rebuilds a node's state from the broker and then
//! publishes the stream into the node's [`Publisher`].

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::hub::{Backfill, Position as ClientPosition};
use crate::publisher::Publisher;
use crate::sink::EventSink;
use crate::wire::{self, Event, EventType, Health, LifecycleState, SessionState, Timestamp};

use super::backoff::Link;
use super::checkpoint::{State, gone_record};
use super::producer::DEFAULT_STALE_AFTER;
use super::{Broker, BrokerError, Checkpoint, Entry, EntryId};

/// Default entries per read.
pub(crate) const DEFAULT_READ_BATCH: usize = 512;
/// Default time a read waits for new entries before asking again.
pub(crate) const DEFAULT_BLOCK: Duration = Duration::from_secs(1);
/// The longest [`Follower::block`]: 60 s. Longer values are lowered to it.
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(60);
/// Default number of applied entries remembered for serving resuming clients from the stream.
pub(crate) const DEFAULT_BACKFILL: usize = 10_000;
/// The most entries [`Follower::backfill`] remembers (about 6 MiB of positions).
pub(crate) const MAX_BACKFILL: usize = 100_000;
/// The most event bytes read back for one resuming client (as the hub's default replay
/// window); a client further behind gets a snapshot.
const MAX_BACKFILL_BYTES: usize = 8 * 1024 * 1024;

/// Follows a [`Broker`] stream for one serving node.
///
/// On start (and after a gap) it *builds*: reads every machine's
/// [`Checkpoint`](super::Checkpoint), folds every entry after the oldest one the stream still
/// continues into a fresh state (each machine's entries after its own checkpoint), then
/// publishes the result to the node as one `snapshot` event with every machine's sessions
/// (followed by a `health` event per machine and source). Then it *follows*: reads the
/// stream after its position with blocking reads and publishes each event into the node's
/// [`Publisher`], exactly as a local monitor would, with the entry's `seq`, the producer's
/// `at`, and its sessions and health reports labelled with their machine.
///
/// # What it accepts
/// It checks that each entry's `prev` is the entry it applied last; when not (the position
/// was trimmed, the stream was deleted or restored from older data), it builds again. An
/// entry that replaces a machine's whole state (a resync: a producer's first entry, or one
/// after it dropped events or found the stream lost; a producer's `snapshot` event; a gone
/// entry) replaces that machine's part and publishes the whole state again (a `snapshot`
/// and the health reports, at the entry's `seq`). Every entry must carry the `seq` after the
/// last one applied and, but for a resync, come from a machine that started (a resync or a
/// checkpoint of it seen); an entry that does not (a foreign writer, a corrupt or forged
/// entry, a `seq` that jumps) is *refused*: logged (a `warn` with the entry id and the seqs,
/// never the payload), counted in [`FollowerStats::refused`] or
/// [`FollowerStats::malformed`], never handed to the node, and the follower moves past it
/// (clients get an empty `delta` in its place when it took a `seq`). The node's clients
/// therefore only ever get events that continue what they have.
///
/// # Machines that go quiet
/// Every quarter of [`stale_after`](Follower::stale_after) the follower asks the broker to
/// mark gone every machine whose producer stopped renewing its claim (see the
/// [module docs](super)); exactly one node appends the gone entry, every node applies it,
/// and the one that appended it writes that machine's checkpoint at it.
///
/// # An unreadable checkpoint
/// A checkpoint that cannot be read or decoded, or that is missing for a machine whose
/// entries the stream holds, is skipped (a `warn`, counted in
/// [`FollowerStats::unreadable_checkpoints`]): the node builds from the stream's first entry
/// when the stream still starts there, else waits for the producer, which notices the bad
/// checkpoint and writes it again within its
/// [`verify_interval`](super::BrokerSinkBuilder::verify_interval).
///
/// # Resuming clients from the stream
/// The follower remembers the position (`seq`, `at`, entry id) of the last
/// [`backfill`](Follower::backfill) entries it applied. A client resuming with a `?since=`
/// older than the node's replay window gets the events it missed read back from the stream,
/// checked as above, instead of a snapshot, as long as the stream still holds them and they
/// come to at most 8 MiB ([`FollowerStats::backfills`]).
///
/// Broker failures are retried with backoff (logged once per change of state); the node's
/// clients keep their sockets meanwhile.
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
    backfill: usize,
    stale_after: Duration,
}

impl<B> std::fmt::Debug for Follower<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("batch", &self.batch)
            .field("block", &self.block)
            .field("backfill", &self.backfill)
            .field("stale_after", &self.stale_after)
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
    refused: AtomicU64,
    unreadable_checkpoints: AtomicU64,
    backfills: AtomicU64,
    backfilled: AtomicU64,
    marked_gone: AtomicU64,
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
    /// Entries that changed a machine's whole state, each sent to clients as a snapshot:
    /// resyncs (a producer started, had dropped events, or found the stream lost), a
    /// producer's own `snapshot` events, and gone entries.
    pub resyncs: u64,
    /// Times the broker became reachable again after failures.
    pub recoveries: u64,
    /// Entries skipped because their event could not be decoded (logged each time).
    pub malformed: u64,
    /// Entries refused because their `seq` does not follow the last one applied (logged
    /// each time, never handed to the node).
    pub refused: u64,
    /// Times a checkpoint was skipped because it could not be read or decoded, or was
    /// missing for a machine whose entries the stream holds (deleted).
    pub unreadable_checkpoints: u64,
    /// Resuming clients served the events they missed from the stream, past the node's
    /// replay window.
    pub backfills: u64,
    /// Events read back from the stream for them.
    pub backfilled: u64,
    /// *Gone* entries this node appended for machines that stopped renewing their claim.
    pub marked_gone: u64,
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
            backfill: DEFAULT_BACKFILL,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }

    /// How long a machine may go without renewing its claim before this node marks it gone
    /// (default 20 s, as [`BrokerSinkBuilder::stale_after`](super::BrokerSinkBuilder::stale_after),
    /// which should be the same; from 100 ms to 1 hour, with a `warn` outside). The node
    /// looks every quarter of it.
    pub fn stale_after(mut self, timeout: Duration) -> Self {
        self.stale_after = crate::layer::bounded(
            "follower.stale_after",
            timeout,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        self
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

    /// How many of the last entries applied the follower remembers (their `seq`, `at` and
    /// entry id: about 60 bytes each) to serve a client resuming from before the node's
    /// replay window from the stream (see "Resuming clients from the stream"). Default
    /// 10 000; 0 turns it off (such clients get a snapshot); at most 100 000 (larger values
    /// are lowered, with a `warn`).
    pub fn backfill(mut self, entries: usize) -> Self {
        self.backfill = crate::layer::bounded("follower.backfill", entries, 0, MAX_BACKFILL);
        self
    }

    /// Starts following.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(self) -> FollowerHandle {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready) = watch::channel(false);
        let index = Arc::new(Mutex::new(Index::new(self.backfill)));
        if self.backfill > 0 {
            self.publisher.set_backfill(Arc::new(StreamBackfill {
                broker: self.broker.handle(),
                index: index.clone(),
                publisher: self.publisher.clone(),
                batch: self.batch,
                shared: shared.clone(),
            }));
        }
        let task = tokio::spawn(run(self, shared.clone(), ready_tx, index));
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

    /// Publishes the whole merged state at `seq`: the snapshot, then every health report at
    /// the same position (see `Merged::events`). On a node that has just started, the replay
    /// window then begins with that snapshot, so a client resuming from its position (on this
    /// node or any other) is verified against it.
    fn publish_state(&self, merged: &Merged, seq: u64, at: Timestamp) {
        let (snapshot, health) = merged.events(seq, at);
        for event in std::iter::once(&snapshot).chain(&health) {
            self.publish(event);
        }
    }

    /// Every machine's checkpoint that can be read; `unreadable` is set when one cannot (it
    /// is logged and counted once per episode).
    async fn checkpoints(
        &self,
        shared: &Shared,
        unreadable: &mut bool,
    ) -> Result<Vec<(Checkpoint, State)>, BrokerError> {
        let mut bad = None;
        let mut found = Vec::new();
        for checkpoint in self.broker.read_checkpoints().await? {
            match checkpoint.and_then(|c| c.state().map(|state| (c, state))) {
                Ok(pair) => found.push(pair),
                Err(error) => bad = Some(error),
            }
        }
        match bad {
            None => *unreadable = false,
            Some(error) => {
                if !*unreadable {
                    shared
                        .unreadable_checkpoints
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %error,
                        "skipping a broker checkpoint that cannot be read: building from the stream, or waiting for the producer to write it again"
                    );
                }
                *unreadable = true;
            }
        }
        Ok(found)
    }

    /// Builds the state from every machine's checkpoint and the stream after the oldest one
    /// the stream still continues, checking each entry as the follow loop does. `Ok(None)`
    /// when the stream continues none of them (or, with an unreadable one, does not start at
    /// its first entry): the producers' next checkpoints will.
    async fn build(
        &self,
        shared: &Shared,
        unreadable: &mut bool,
    ) -> Result<Option<Built>, BrokerError> {
        let mut merged = Merged::default();
        let mut anchors: BTreeMap<String, u64> = BTreeMap::new();
        let mut at = Timestamp::default();
        let mut seq = 0;
        let checkpoints = self.checkpoints(shared, unreadable).await?;
        let mut candidates = Vec::new();
        for (checkpoint, state) in checkpoints {
            if checkpoint.seq >= seq {
                seq = checkpoint.seq;
                at = state.snapshot.at;
            }
            merged.replace(
                &checkpoint.machine,
                state.snapshot.sessions,
                Some(state.health),
            );
            anchors.insert(checkpoint.machine.clone(), checkpoint.seq);
            candidates.push((checkpoint.seq, checkpoint.entry));
        }
        candidates.sort();
        merged.at = at;
        let mut start = None;
        if !*unreadable {
            for (anchor, entry) in &candidates {
                let next = self.broker.read(Some(entry), 1, None).await?;
                match next.first() {
                    Some(next) if next.prev != *entry => continue,
                    _ => {
                        start = Some((Some(entry.clone()), *anchor));
                        break;
                    }
                }
            }
        }
        if start.is_none() {
            // The stream's beginning, when it still starts there.
            let first = self.broker.read(None, 1, None).await?;
            match first.first() {
                None if candidates.is_empty() => start = Some((None, 0)),
                Some(first) if first.prev.is_empty() => {
                    start = Some((None, first.seq.saturating_sub(1)));
                }
                _ => {}
            }
        }
        let Some((mut position, start_seq)) = start else {
            return Ok(None);
        };
        let mut last = start_seq;
        // The positions of the events applied since the last whole-state change: a client
        // that saw them on another node resumes here from the stream.
        let mut marks = Vec::new();
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
                if anchors
                    .get(&entry.machine)
                    .is_some_and(|&anchor| entry.seq <= anchor)
                {
                    // In the machine's checkpoint already.
                    last = entry.seq;
                    continue;
                }
                match merged.apply(&entry, last) {
                    Applied::Event(event, altered) => {
                        at = event.at;
                        last = entry.seq;
                        let kind = if altered {
                            Served::Altered
                        } else {
                            Served::Event
                        };
                        marks.push((entry.seq, at, entry.id.clone(), kind));
                    }
                    Applied::State(state_at) => {
                        at = state_at;
                        last = entry.seq;
                        marks.clear();
                    }
                    Applied::Refused(refusal) => {
                        refusal.count(shared, &entry, last);
                        if refusal.took_seq() {
                            last = entry.seq;
                            marks.push((entry.seq, merged.at, entry.id.clone(), Served::Blank));
                        }
                    }
                }
            }
        }
        seq = seq.max(last);
        Ok(Some(Built {
            entry: position,
            merged,
            seq,
            at,
            marks,
        }))
    }

    /// Marks gone every machine of `merged` not gone yet whose claim lapsed; returns those
    /// this node marked.
    async fn mark_gone(&self, shared: &Shared, merged: &Merged, tail: Option<&str>) -> Vec<String> {
        let mut marked = Vec::new();
        for (machine, part) in &merged.machines {
            if part.gone {
                continue;
            }
            let reason = format!(
                "machine {machine} gone: no producer renewed its claim for {} s",
                self.stale_after.as_secs_f64()
            );
            let Some(record) = gone_record(reason) else {
                continue;
            };
            match self
                .broker
                .mark_gone(machine, self.stale_after, tail, &record)
                .await
            {
                Ok(Some(appended)) => {
                    marked.push(machine.clone());
                    shared.marked_gone.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        machine,
                        seq = appended.seq,
                        "machine stopped renewing its claim: marked gone"
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(machine, %error, "could not mark a machine gone");
                    break;
                }
            }
        }
        marked
    }

    /// Writes the checkpoint of a machine this node marked gone, at the gone entry: a node
    /// built later starts from its final state even once the entry is trimmed.
    async fn write_gone_checkpoint(&self, merged: &Merged, machine: &str, entry: &Entry) {
        let Some(part) = merged.machines.get(machine) else {
            return;
        };
        let mut snapshot = Event::snapshot(entry.seq, part.sessions.clone());
        snapshot.at = merged.at;
        let (Ok(snapshot), Ok(health)) = (wire::to_vec(&snapshot), wire::to_vec(&part.health))
        else {
            return;
        };
        let checkpoint = Checkpoint {
            machine: machine.to_owned(),
            seq: entry.seq,
            entry: entry.id.clone(),
            snapshot,
            health,
        };
        if let Err(error) = self.broker.write_checkpoint(&checkpoint).await {
            tracing::debug!(machine, %error, "could not write a gone machine's checkpoint");
        }
    }
}

/// A built state and the entry it stands at (`None`: before the stream's first entry).
struct Built {
    entry: Option<EntryId>,
    merged: Merged,
    seq: u64,
    at: Timestamp,
    /// The entries applied after the last whole-state change: `(seq, at, entry, served)`.
    marks: Vec<(u64, Timestamp, EntryId, Served)>,
}

/// What the node holds: every machine's sessions and health reports, labelled.
#[derive(Debug, Default, Clone)]
struct Merged {
    machines: BTreeMap<String, Part>,
    /// The `at` of the last entry applied.
    at: Timestamp,
}

/// One machine's part of the state.
#[derive(Debug, Default, Clone)]
struct Part {
    /// In the order the machine's producer listed or first reported them.
    sessions: Vec<SessionState>,
    /// One report per source, in the order sources first reported.
    health: Vec<Health>,
    /// Marked gone (until the machine's next resync).
    gone: bool,
}

/// What applying an entry gave.
enum Applied {
    /// One event to hand to the node; `true` when it is not the entry's event as is (a
    /// session id another machine also reports: clients get what changes in what the node
    /// shows), so a client resuming across it gets a snapshot rather than the stream's event.
    Event(Box<Event>, bool),
    /// The state changed as a whole (a resync, a producer's `snapshot`, a machine gone): the
    /// node gets the merged state, stamped with this `at`.
    State(Timestamp),
    Refused(Refusal),
}

impl Merged {
    /// The machine whose copy of session `id` the node shows: the first, by name, of the
    /// machines that hold one (ids collide only when two machines report the same id).
    fn visible(&self, id: &str) -> Option<(&str, &SessionState)> {
        self.machines.iter().find_map(|(name, part)| {
            part.sessions
                .iter()
                .find(|s| s.id == id)
                .map(|s| (name.as_str(), s))
        })
    }

    /// Replaces `machine`'s sessions (and health reports, when given).
    fn replace(&mut self, machine: &str, sessions: Vec<SessionState>, health: Option<Vec<Health>>) {
        let part = self.machines.entry(machine.to_owned()).or_default();
        part.sessions = sessions
            .into_iter()
            .map(|mut s| {
                s.machine = machine.to_owned();
                s
            })
            .collect();
        if let Some(health) = health {
            part.health = health
                .into_iter()
                .map(|mut h| {
                    h.machine = machine.to_owned();
                    h
                })
                .collect();
        }
        part.gone = false;
    }

    /// Applies an entry whose `prev` was checked, after the entry of seq `last`.
    fn apply(&mut self, entry: &Entry, last: u64) -> Applied {
        if last.checked_add(1) != Some(entry.seq) {
            return Applied::Refused(Refusal::OutOfSequence(entry.seq));
        }
        let machine = entry.machine.as_str();
        match decode(entry) {
            Err(error) => Applied::Refused(Refusal::Malformed(error)),
            Ok(Decoded::Gone(_)) if !self.machines.contains_key(machine) => {
                Applied::Refused(Refusal::UnknownMachine)
            }
            Ok(Decoded::Gone(template)) => {
                let part = self.machines.entry(machine.to_owned()).or_default();
                for session in &mut part.sessions {
                    session.lifecycle = LifecycleState::Terminal;
                }
                for health in &mut part.health {
                    health.status = template.status.clone();
                    health.last_error.clone_from(&template.last_error);
                    health.updated_at = template.updated_at;
                }
                part.gone = true;
                self.at = template.updated_at;
                Applied::State(self.at)
            }
            Ok(Decoded::Resync(state)) => {
                self.replace(machine, state.snapshot.sessions, Some(state.health));
                self.at = state.snapshot.at;
                Applied::State(self.at)
            }
            Ok(Decoded::Event(event)) if event.kind == EventType::Snapshot => {
                self.replace(machine, event.sessions, None);
                self.at = event.at;
                Applied::State(self.at)
            }
            Ok(Decoded::Event(_)) if !self.machines.contains_key(machine) => {
                Applied::Refused(Refusal::UnknownMachine)
            }
            Ok(Decoded::Event(mut event)) => {
                event.seq = entry.seq;
                // As the store folds an event: upserts, then removals; each machine keeps its
                // own sessions, and clients get what changes in what the node shows.
                let mut altered = false;
                let mut shown = Vec::with_capacity(event.updates.len());
                for mut update in std::mem::take(&mut event.updates) {
                    update.machine = machine.to_owned();
                    let part = self.machines.entry(machine.to_owned()).or_default();
                    match part.sessions.iter_mut().find(|s| s.id == update.id) {
                        Some(existing) => existing.clone_from(&update),
                        None => part.sessions.push(update.clone()),
                    }
                    match self.visible(&update.id) {
                        Some((name, _)) if name == machine => shown.push(update),
                        // Another machine's copy of this id is the one shown.
                        _ => altered = true,
                    }
                }
                let mut removed = Vec::with_capacity(event.removed.len());
                for id in std::mem::take(&mut event.removed) {
                    let was_shown = self.visible(&id).is_some_and(|(name, _)| name == machine);
                    let part = self.machines.entry(machine.to_owned()).or_default();
                    let held = part.sessions.len();
                    part.sessions.retain(|s| s.id != id);
                    if part.sessions.len() == held {
                        // Not this machine's: nothing to remove.
                        altered = true;
                        continue;
                    }
                    match (was_shown, self.visible(&id)) {
                        (true, None) => removed.push(id),
                        (true, Some((_, other))) => {
                            // Another machine's copy of the id shows now.
                            shown.retain(|s| s.id != id);
                            shown.push(other.clone());
                            altered = true;
                        }
                        (false, _) => altered = true,
                    }
                }
                shown.retain(|s| !removed.contains(&s.id));
                event.updates = shown;
                event.removed = removed;
                if let Some(health) = &mut event.health {
                    health.machine = machine.to_owned();
                    let part = self.machines.entry(machine.to_owned()).or_default();
                    match part.health.iter_mut().find(|h| h.source == health.source) {
                        Some(existing) => existing.clone_from(health),
                        None => part.health.push(health.clone()),
                    }
                }
                self.at = event.at;
                Applied::Event(Box::new(event), altered)
            }
        }
    }

    /// The events that publish the merged state at `seq`, as a connecting client gets it:
    /// one `snapshot` with every machine's sessions (machines in name order), then one
    /// `health` event per (machine, source) at the same position.
    fn events(&self, seq: u64, at: Timestamp) -> (Event, Vec<Event>) {
        let mut ids = HashSet::new();
        let sessions = self
            .machines
            .values()
            .flat_map(|part| part.sessions.iter())
            .filter(|s| ids.insert(s.id.as_str()))
            .cloned()
            .collect();
        let mut snapshot = Event::snapshot(seq, sessions);
        snapshot.at = at;
        let health = self
            .machines
            .values()
            .flat_map(|part| part.health.iter().cloned())
            .map(|h| {
                let mut event = Event::health(seq, h);
                event.at = at;
                event
            })
            .collect();
        (snapshot, health)
    }

    fn is_empty(&self) -> bool {
        self.machines
            .values()
            .all(|part| part.sessions.is_empty() && part.health.is_empty())
    }
}

enum Decoded {
    Event(Event),
    Resync(State),
    /// A gone entry: the report every source of the machine takes.
    Gone(Health),
}

/// Decodes an entry. The decoder is Go's (a `null` or `{}` event decodes to the zero event),
/// so what it gives is checked too: an event of a known type, a resync's `snapshot`, a gone
/// entry's `health`.
fn decode(entry: &Entry) -> Result<Decoded, BrokerError> {
    if entry.gone {
        let event = Event::from_json(&entry.record.event)
            .map_err(|e| BrokerError::Malformed(format!("gone: {e}")))?;
        return event
            .health
            .map(Decoded::Gone)
            .ok_or_else(|| BrokerError::Malformed("gone: no health report".into()));
    }
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
            if !event.kind.is_known() {
                return Err(BrokerError::Malformed(format!(
                    "event: type {:?}",
                    event.kind.as_str()
                )));
            }
            Ok(Decoded::Event(event))
        }
    }
}

/// Why an entry is not applied.
enum Refusal {
    Malformed(BrokerError),
    /// An entry whose seq does not follow the last one applied.
    OutOfSequence(u64),
    /// An event of a machine that never started here (no resync or checkpoint of it): not a
    /// producer's, whose first entry is always a resync.
    UnknownMachine,
}

impl Refusal {
    /// Whether the entry took its seq (clients get an empty `delta` in its place).
    fn took_seq(&self) -> bool {
        !matches!(self, Refusal::OutOfSequence(_))
    }
}

impl Refusal {
    /// Logs and counts the refusal of `entry` after seq `last`.
    fn count(&self, shared: &Shared, entry: &Entry, last: u64) {
        match self {
            Refusal::Malformed(error) => {
                shared.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(entry = %entry.id, seq = entry.seq, %error, "skipping a broker entry that cannot be decoded");
            }
            Refusal::UnknownMachine => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    entry = %entry.id,
                    seq = entry.seq,
                    machine = %entry.machine,
                    "refusing an event of a machine that never started (no resync or checkpoint of it)"
                );
            }
            Refusal::OutOfSequence(seq) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    entry = %entry.id,
                    seq,
                    expected = last.checked_add(1),
                    "refusing a broker entry whose seq does not follow the last one applied"
                );
            }
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

/// One applied entry's position, for resuming clients.
#[derive(Debug, Clone)]
struct Mark {
    seq: u64,
    at: Timestamp,
    entry: EntryId,
    kind: Served,
}

/// What clients got for an applied entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// The entry's event (its seq and machine set).
    Event,
    /// An empty `delta`: the entry was refused after taking its seq.
    Blank,
    /// An event other than the entry's (colliding session ids): a client resuming across it
    /// gets a snapshot.
    Altered,
}

/// The last applied entries' positions, oldest first, bounded.
#[derive(Debug)]
struct Index {
    marks: VecDeque<Mark>,
    capacity: usize,
}

impl Index {
    fn new(capacity: usize) -> Index {
        Index {
            marks: VecDeque::new(),
            capacity,
        }
    }

    fn push(&mut self, seq: u64, at: Timestamp, entry: &str) {
        self.push_mark(seq, at, entry, Served::Event);
    }

    fn push_mark(&mut self, seq: u64, at: Timestamp, entry: &str, kind: Served) {
        if self.capacity == 0 {
            return;
        }
        if self.marks.len() >= self.capacity {
            self.marks.pop_front();
        }
        self.marks.push_back(Mark {
            seq,
            at,
            entry: entry.to_owned(),
            kind,
        });
    }

    /// What clients got for the entry of `seq`, and its `at`, when it is remembered.
    fn served(&self, seq: u64, entry: &str) -> Option<(Served, Timestamp)> {
        let i = self.marks.partition_point(|mark| mark.seq < seq);
        self.marks
            .get(i)
            .filter(|mark| mark.seq == seq && mark.entry == entry)
            .map(|mark| (mark.kind, mark.at))
    }

    /// Starts over (a build or a resync): the entries before it cannot be resumed across.
    fn reset(&mut self, seq: u64, at: Timestamp, entry: Option<&str>) {
        self.marks.clear();
        if let Some(entry) = entry {
            self.push(seq, at, entry);
        }
    }

    /// The entry holding the event a client resumes from.
    fn find(&self, since: ClientPosition) -> Option<EntryId> {
        let i = self.marks.partition_point(|mark| mark.seq < since.seq);
        let mark = self.marks.get(i)?;
        (mark.seq == since.seq && since.at.is_none_or(|at| at == mark.at))
            .then(|| mark.entry.clone())
    }
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    // Plain data, consistent after every statement.
    index.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the events a resuming client missed back from the stream.
struct StreamBackfill<B> {
    broker: B,
    index: Arc<Mutex<Index>>,
    publisher: Publisher,
    batch: usize,
    shared: Arc<Shared>,
}

impl<B: Broker> StreamBackfill<B> {
    /// The events after `since` up to the node's last one, skipping what the follower
    /// refused; `None` past a resync, a gap, an unknown position or 8 MiB of events.
    async fn read(&self, since: ClientPosition) -> Option<Vec<Event>> {
        let mut after = lock(&self.index).find(since)?;
        let until = self.publisher.seq();
        let mut seq = since.seq;
        let mut events = Vec::new();
        let mut bytes = 0usize;
        while seq < until {
            let entries = self
                .broker
                .read(Some(&after), self.batch, None)
                .await
                .ok()?;
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                if entry.prev != after {
                    return None;
                }
                after = entry.id.clone();
                if seq.checked_add(1) != Some(entry.seq) {
                    // Refused by the follower too.
                    continue;
                }
                let served = lock(&self.index).served(entry.seq, &entry.id);
                match served {
                    Some((Served::Blank, at)) => {
                        // Refused by the follower, which sent an empty delta in its place.
                        seq = entry.seq;
                        let mut event = Event::delta(seq, Vec::new(), Vec::new());
                        event.at = at;
                        events.push(event);
                        continue;
                    }
                    Some((Served::Altered, _)) => return None,
                    _ => {}
                }
                match decode(&entry) {
                    Ok(Decoded::Event(mut event)) if event.kind != EventType::Snapshot => {
                        bytes = bytes.saturating_add(entry.record.event.len());
                        if bytes > MAX_BACKFILL_BYTES {
                            return None;
                        }
                        event.seq = entry.seq;
                        for update in &mut event.updates {
                            update.machine.clone_from(&entry.machine);
                        }
                        if let Some(health) = &mut event.health {
                            health.machine.clone_from(&entry.machine);
                        }
                        seq = event.seq;
                        events.push(event);
                        if seq >= until {
                            break;
                        }
                    }
                    // A whole-state change, or a refused entry whose mark is gone: a snapshot.
                    Ok(_) | Err(_) => return None,
                }
            }
        }
        Some(events)
    }
}

impl<B: Broker> Backfill for StreamBackfill<B> {
    fn events_after(
        &self,
        since: ClientPosition,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Event>>> + Send + '_>> {
        Box::pin(async move {
            let events = self.read(since).await?;
            if !events.is_empty() {
                self.shared.backfills.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .backfilled
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                tracing::debug!(
                    since = since.seq,
                    events = events.len(),
                    "resuming a client from the broker stream"
                );
            }
            Some(events)
        })
    }
}

async fn run<B: Broker>(
    follower: Follower<B>,
    shared: Arc<Shared>,
    ready: watch::Sender<bool>,
    index: Arc<Mutex<Index>>,
) {
    let mut link = Link::new("follower");
    let mut position = Position::Build;
    let mut waiting_for_checkpoint = false;
    let mut unreadable = false;
    let mut merged = Merged::default();
    // The seq of the last entry applied (or refused).
    let mut seq = 0;
    let check_every = follower.stale_after / 4;
    let mut checked = tokio::time::Instant::now();
    // Gone entries this node appended, whose checkpoint it writes once applied.
    let mut marked: HashSet<String> = HashSet::new();
    loop {
        let after = match &position {
            Position::Build => {
                match follower.build(&shared, &mut unreadable).await {
                    Ok(Some(built)) => {
                        if link.ok() {
                            shared.recoveries.fetch_add(1, Ordering::Relaxed);
                        }
                        let Built {
                            entry,
                            merged: state,
                            seq: built_seq,
                            at,
                            marks,
                        } = built;
                        seq = built_seq;
                        merged = state;
                        merged.at = at;
                        {
                            let mut index = lock(&index);
                            index.reset(seq, at, None);
                            for (seq, at, entry, kind) in &marks {
                                index.push_mark(*seq, *at, entry, *kind);
                            }
                            if let Some(entry) = entry.as_deref() {
                                if marks.last().map(|(_, _, e, _)| e.as_str()) != Some(entry) {
                                    index.push(seq, at, entry);
                                }
                            }
                        }
                        if seq > 0 || !merged.is_empty() {
                            follower.publish_state(&merged, seq, at);
                        }
                        shared.builds.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            entry = entry.as_deref().unwrap_or(""),
                            seq = follower.publisher.seq(),
                            machines = merged.machines.len(),
                            "node state built from the broker"
                        );
                        waiting_for_checkpoint = false;
                        position = Position::At(entry);
                        ready.send_replace(true);
                    }
                    Ok(None) => {
                        if link.ok() {
                            shared.recoveries.fetch_add(1, Ordering::Relaxed);
                        }
                        if !waiting_for_checkpoint {
                            waiting_for_checkpoint = true;
                            tracing::warn!(
                                "the stream continues no checkpoint (trimmed past them, or one unreadable): waiting for the producers' next checkpoints"
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
        let block = follower
            .block
            .min(check_every.saturating_sub(checked.elapsed()))
            .max(Duration::from_millis(1));
        let entries = match follower
            .broker
            .read(after.as_deref(), follower.batch, Some(block))
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
                    "stream position lost (trimmed, deleted or restored from older data): rebuilding from the checkpoints; clients get a snapshot"
                );
                position = Position::Build;
                break;
            }
            match merged.apply(&entry, seq) {
                Applied::Event(event, altered) => {
                    seq = event.seq;
                    follower.publish(&event);
                    let kind = if altered {
                        Served::Altered
                    } else {
                        Served::Event
                    };
                    lock(&index).push_mark(event.seq, event.at, &entry.id, kind);
                    shared.applied.fetch_add(1, Ordering::Relaxed);
                }
                Applied::State(at) => {
                    seq = entry.seq;
                    tracing::info!(
                        seq,
                        machine = %entry.machine,
                        gone = entry.gone,
                        "a machine's whole state changed (resync, snapshot or gone): clients get a snapshot"
                    );
                    lock(&index).reset(seq, at, Some(&entry.id));
                    follower.publish_state(&merged, seq, at);
                    shared.resyncs.fetch_add(1, Ordering::Relaxed);
                    if entry.gone && marked.remove(&entry.machine) {
                        follower
                            .write_gone_checkpoint(&merged, &entry.machine, &entry)
                            .await;
                    }
                }
                Applied::Refused(refusal) => {
                    refusal.count(&shared, &entry, seq);
                    if refusal.took_seq() {
                        // Clients get an empty delta in its place, so theirs still follow
                        // each other.
                        seq = entry.seq;
                        let mut event = Event::delta(seq, Vec::new(), Vec::new());
                        event.at = merged.at;
                        follower.publish(&event);
                        lock(&index).push_mark(seq, event.at, &entry.id, Served::Blank);
                    }
                }
            }
            last = Some(entry.id);
            position = Position::At(last.clone());
        }
        // Every quarter of `stale_after`, busy or idle, from the position just reached (what
        // is appended is read next, by every node alike).
        if checked.elapsed() >= check_every {
            if let Position::At(at) = &position {
                checked = tokio::time::Instant::now();
                marked.extend(follower.mark_gone(&shared, &merged, at.as_deref()).await);
            }
        }
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
            refused: s.refused.load(Ordering::Relaxed),
            unreadable_checkpoints: s.unreadable_checkpoints.load(Ordering::Relaxed),
            backfills: s.backfills.load(Ordering::Relaxed),
            backfilled: s.backfilled.load(Ordering::Relaxed),
            marked_gone: s.marked_gone.load(Ordering::Relaxed),
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
            seq,
            machine: "m".into(),
            gone: false,
            record: Record {
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
