//! The producer side: [`BrokerSink`], an [`EventSink`] that appends every event to the
//! broker from a background task, and keeps the checkpoint.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::sink::{EventSink, SinkError, SnapshotSource};
use crate::store::SessionStore;
use crate::wire::{self, Event};

use super::backoff::Link;
use super::checkpoint::{Image, gone_record};
use super::{Append, Broker, BrokerError, Checkpoint, Claim, EntryId, Record};

/// Default bound of the queue between [`EventSink::handle_event`] and the append task.
pub(crate) const DEFAULT_BUFFER: usize = 8192;
/// Default time after which a quiet producer checkpoints what changed since the last one.
pub(crate) const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Records per append call at most.
const MAX_BATCH: usize = 256;
/// How often an idle append task looks for a due checkpoint or a pending resync.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// Default time between two checks that the broker still holds what the producer wrote.
pub(crate) const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(1);
/// Default time after which a machine that stopped renewing its claim is gone.
pub(crate) const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(20);
/// The longest machine name, in bytes.
const MAX_MACHINE: usize = 64;

/// Whether `name` can be a machine name: 1 to 64 bytes of UTF-8 without control characters
/// (any other character, spaces and non-ASCII letters included, is kept as is: names are
/// compared exactly, never rewritten).
fn valid_machine(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_MACHINE && !name.chars().any(char::is_control)
}

/// The host name, as a machine name: control characters dropped, cut to 64 bytes (on a
/// character boundary), `unnamed` when nothing is left.
fn host_machine() -> String {
    let host = gethostname::gethostname();
    let mut machine = String::new();
    for c in host.to_string_lossy().chars().filter(|c| !c.is_control()) {
        if machine.len() + c.len_utf8() > MAX_MACHINE {
            break;
        }
        machine.push(c);
    }
    if machine.is_empty() {
        machine.push_str("unnamed");
    }
    machine
}

/// Publishes events into a [`Broker`]: the producer side of several-node serving.
///
/// Build the monitor with it as its sink (a producer that also serves runs a
/// [`Follower`](super::Follower) of its own stream, as every node does).
/// [`handle_event`](EventSink::handle_event) encodes the event in Go's wire format, folds it
/// into a private copy of the state (what checkpoints are taken from) and queues it; it
/// never waits on the network. A background task appends the queue in batches, in order,
/// retrying with backoff while the broker is unreachable.
///
/// # Checkpoints
/// After every `checkpoint_every` queued events (default: a quarter of the broker's
/// [`retention`](Broker::retention), else 2 500), and after `checkpoint_interval` (default
/// 5 s) with changes and nothing queued, the state is written as the [`Checkpoint`](super::Checkpoint),
/// tied to the stream entry of the last event it reflects.
///
/// # The first entry
/// The first thing a sink appends is a *resync* entry with its state (the first event folded
/// in): a follower accepts a resync at any `seq`, so a producer that restarts (its seqs
/// starting over) is taken as such, while an ordinary entry must carry the `seq` after the
/// one before it (see [`Follower`](super::Follower)).
///
/// # Checking the broker
/// Every `verify_interval` (default 1 s) while nothing is queued, the sink checks that the
/// broker still holds what it wrote, and repairs what it does not:
/// - the stream must end with the last entry it appended; when it does not (deleted or
///   emptied, the broker restarted from an older snapshot or failed over to a lagging
///   replica, another writer appended), it appends a resync and writes a checkpoint, and
///   counts it in [`BrokerSinkStats::stream_losses`]. Appends check the same atomically.
/// - the checkpoint must be the one it wrote last (not missing, unreadable or changed), and
///   the stream must still continue it (not trimmed past it); when not, it writes the
///   checkpoint again at its last entry and counts it in
///   [`BrokerSinkStats::checkpoint_repairs`].
///
/// So every node converges on the producer's state within about `verify_interval` plus the
/// follower's [`block`](super::Follower::block), whatever happened to the broker.
///
/// # When the queue is full
/// The event is dropped, counted in [`BrokerSinkStats::dropped`] and logged (once per
/// episode), but still folded into the private store. As soon as the queue has room (at the
/// next event, or when the task is idle), a *resync* entry with the whole state is appended
/// and a checkpoint written, so every follower replaces its state with a snapshot: nothing is
/// lost silently.
///
/// ```no_run
/// use agentwatch_ws::broker::{BrokerSink, RedisBroker};
/// use agentwatch_ws::{Event, EventSink};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = RedisBroker::open("redis://127.0.0.1:6379", "agentwatch:events")?;
/// let publisher = BrokerSink::builder(broker).spawn();
/// publisher.handle_event(&Event::delta(1, vec![], vec![]))?;
/// publisher.flush().await;
/// assert_eq!(publisher.stats().appended, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BrokerSink {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    tx: mpsc::Sender<Item>,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    verify_interval: Duration,
    stale_after: Duration,
    machine: String,
    stats: Arc<Stats>,
}

/// Why a sink stopped at start or later.
#[derive(Debug, Clone)]
enum Refused {
    /// Another instance holds the name (renewed this long ago).
    Taken(String, Duration),
    /// The name is not a machine name.
    Invalid(String),
}

/// Shared with the append task, which must not keep the queue's sender alive.
#[derive(Default)]
struct Stats {
    counters: Counters,
    appended_changed: Notify,
    /// How the start went: `None` while claiming the name.
    started: Mutex<Option<Result<(), Refused>>>,
    started_changed: Notify,
    /// Set when the task stopped for good (the name was taken): events are refused.
    stopped: std::sync::atomic::AtomicBool,
}

struct State {
    mirror: SessionStore,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Events were dropped: the next thing queued must be a resync.
    resync: bool,
    /// Nothing queued yet: the first thing queued is a resync (see "The first entry").
    start: bool,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    appended: AtomicU64,
    dropped: AtomicU64,
    resyncs: AtomicU64,
    checkpoints: AtomicU64,
    retries: AtomicU64,
    superseded: AtomicU64,
    stream_losses: AtomicU64,
    checkpoint_repairs: AtomicU64,
    reclaims: AtomicU64,
    last_seq: AtomicU64,
    /// Resyncs queued (by events or by the task) and resyncs appended or superseded: what
    /// [`BrokerSink::flush`] waits for besides events.
    resyncs_queued: AtomicU64,
    resyncs_done: AtomicU64,
}

enum Item {
    Event(Record),
    /// Write this image as the checkpoint, tied to the last appended entry.
    Checkpoint(Image),
    /// Append this image as a resync entry, then as the checkpoint. `start`: the sink's
    /// first entry, not counted in [`BrokerSinkStats::resyncs`].
    Resync {
        image: Image,
        start: bool,
    },
    /// Append what is queued, then leave: mark the machine gone at once, and stop.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// Builds a [`BrokerSink`]; see [`BrokerSink::builder`].
#[derive(Debug)]
pub struct BrokerSinkBuilder<B> {
    broker: B,
    buffer: usize,
    checkpoint_every: Option<u64>,
    checkpoint_interval: Duration,
    verify_interval: Duration,
    stale_after: Duration,
    machine: Option<String>,
}

impl<B: Broker> BrokerSinkBuilder<B> {
    /// Bound of the queue of events not yet appended (default 8 192; 0 is
    /// raised to 1, with a `warn`).
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = crate::layer::bounded("broker.buffer", events, 1, usize::MAX);
        self
    }

    /// Checkpoint after this many events (default: a quarter of the broker's retention).
    /// Keep it well below the retention, or a node starting late may find the checkpoint's
    /// entry trimmed (it then waits for the next checkpoint). 0 is raised to 1, with a `warn`.
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = Some(crate::layer::bounded(
            "broker.checkpoint_every",
            events,
            1,
            u64::MAX,
        ));
        self
    }

    /// Checkpoint a quiet producer's changes after this long (default
    /// 5 s).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// How often an idle producer checks that the broker still holds its stream and its
    /// checkpoint (see "Checking the broker" on [`BrokerSink`]). Default 1 s; from 10 ms to
    /// 1 hour (values outside are raised or lowered, with a `warn`).
    pub fn verify_interval(mut self, interval: Duration) -> Self {
        self.verify_interval = crate::layer::bounded(
            "broker.verify_interval",
            interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        self
    }

    /// The machine name this producer publishes under (default: the host name, cut to 64
    /// bytes). Nodes label its sessions and health reports with it (`machine`). 1 to 64 bytes
    /// of UTF-8 without control characters, compared exactly: any other name stops the sink
    /// at start ([`BrokerSink::started`] answers [`BrokerError::InvalidMachine`]). One live
    /// producer per name: see "Machines" in the [module docs](super).
    pub fn machine(mut self, name: impl Into<String>) -> Self {
        self.machine = Some(name.into());
        self
    }

    /// How long after its last renewal a machine's claim lapses (default 20 s; from 100 ms to
    /// 1 hour, with a `warn` outside). The producer renews it every quarter of this; nodes
    /// mark a machine gone after this long without a renewal
    /// ([`Follower::stale_after`](super::Follower::stale_after), which should be the same),
    /// and a second producer may take the name only then.
    pub fn stale_after(mut self, timeout: Duration) -> Self {
        self.stale_after = crate::layer::bounded(
            "broker.stale_after",
            timeout,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        self
    }

    /// Starts the append task and returns the sink. The task first claims the machine name
    /// ([`BrokerSink::started`] tells how that went), then appends.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(self) -> BrokerSink {
        let checkpoint_every = self.checkpoint_every.unwrap_or_else(|| {
            self.broker
                .retention()
                .map_or(2_500, |n| (n as u64 / 4).max(1))
        });
        let (tx, rx) = mpsc::channel(self.buffer);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mirror: SessionStore::new(),
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                resync: false,
                start: true,
            }),
            tx,
            checkpoint_every,
            checkpoint_interval: self.checkpoint_interval,
            verify_interval: self.verify_interval,
            stale_after: self.stale_after,
            machine: self.machine.unwrap_or_else(host_machine),
            stats: Arc::default(),
        });
        tokio::spawn(run(
            self.broker,
            rx,
            Arc::downgrade(&shared),
            shared.stats.clone(),
            shared.machine.clone(),
            shared.stale_after,
        ));
        BrokerSink { shared }
    }
}

/// A point-in-time copy of a [`BrokerSink`]'s counters (totals since it was built).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerSinkStats {
    /// Events queued for appending.
    pub queued: u64,
    /// Events appended to the stream.
    pub appended: u64,
    /// Events dropped because the queue was full (each covered by a later resync).
    pub dropped: u64,
    /// Resync entries appended after drops.
    pub resyncs: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Broker operations retried after a failure.
    pub retries: u64,
    /// Queued events replaced by a resync because the stream had lost this producer's
    /// entries (the stream was deleted, or the broker restarted without its data).
    pub superseded: u64,
    /// Times the stream was found not to end with this producer's last entry (deleted,
    /// emptied, restored from older data, appended to by another writer), each answered by a
    /// resync.
    pub stream_losses: u64,
    /// Times the checkpoint was found missing, unreadable, changed or no longer continued by
    /// the stream, each answered by writing it again.
    pub checkpoint_repairs: u64,
    /// Times the machine name had to be claimed again while running (a node had marked it
    /// gone, or its claim lapsed while the broker was unreachable), each answered by a
    /// resync.
    pub reclaims: u64,
    /// The stream `seq` of the last entry appended (0 before the first): nodes serve this
    /// producer's last event with it.
    pub last_seq: u64,
}

impl std::fmt::Debug for BrokerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSink")
            .field("stats", &self.stats())
            .finish()
    }
}

impl BrokerSink {
    /// A builder for a sink appending to `broker`.
    pub fn builder<B: Broker>(broker: B) -> BrokerSinkBuilder<B> {
        BrokerSinkBuilder {
            broker,
            buffer: DEFAULT_BUFFER,
            checkpoint_every: None,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            verify_interval: DEFAULT_VERIFY_INTERVAL,
            stale_after: DEFAULT_STALE_AFTER,
            machine: None,
        }
    }

    /// The machine name this producer publishes under.
    pub fn machine(&self) -> &str {
        &self.shared.machine
    }

    /// Waits until the machine name is claimed and appending has started. Waits while the
    /// broker is unreachable: wrap it in a timeout where that matters.
    ///
    /// # Errors
    /// [`BrokerError::NameTaken`] when another live producer holds the name,
    /// [`BrokerError::InvalidMachine`] when the name is not one; the sink then refuses every
    /// event ([`EventSink::handle_event`] fails).
    pub async fn started(&self) -> Result<(), BrokerError> {
        let stats = &self.shared.stats;
        loop {
            let notified = stats.started_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = lock(&stats.started).clone() {
                return outcome.map_err(|refused| match refused {
                    Refused::Taken(machine, age) => BrokerError::NameTaken { machine, age },
                    Refused::Invalid(machine) => BrokerError::InvalidMachine { machine },
                });
            }
            notified.await;
        }
    }

    /// The counters.
    pub fn stats(&self) -> BrokerSinkStats {
        let c = &self.shared.stats.counters;
        BrokerSinkStats {
            queued: c.queued.load(Ordering::Relaxed),
            appended: c.appended.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            superseded: c.superseded.load(Ordering::Relaxed),
            stream_losses: c.stream_losses.load(Ordering::Relaxed),
            checkpoint_repairs: c.checkpoint_repairs.load(Ordering::Relaxed),
            reclaims: c.reclaims.load(Ordering::Relaxed),
            last_seq: c.last_seq.load(Ordering::SeqCst),
        }
    }

    /// Waits until every event queued before the call is appended (or superseded by a
    /// resync), and the resync that covers dropped events too. Does not return while the
    /// broker is unreachable: wrap it in a timeout. Returns at once once the sink stopped.
    pub async fn flush(&self) {
        let stats = &self.shared.stats;
        let c = &stats.counters;
        let target = c.queued.load(Ordering::SeqCst);
        loop {
            let notified = stats.appended_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let done = c.appended.load(Ordering::SeqCst) + c.superseded.load(Ordering::SeqCst);
            let resynced = c.resyncs_done.load(Ordering::SeqCst)
                >= c.resyncs_queued.load(Ordering::SeqCst)
                && !self.shared.state().resync;
            if (done >= target && resynced) || stats.stopped.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }

    /// Appends what is queued, then leaves: the machine is marked gone at once (its sessions
    /// end, its sources report `failed`, "machine NAME stopped publishing") and its name is
    /// free for the next producer. The sink refuses events afterwards. Without `close`, a
    /// dropped sink simply goes quiet and nodes mark it gone after `stale_after`. Waits
    /// while the broker is unreachable: wrap it in a timeout.
    pub async fn close(&self) {
        let (done, closed) = tokio::sync::oneshot::channel();
        if self.shared.tx.send(Item::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data, consistent after every statement.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data, consistent after every statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn image(&mut self) -> Option<Image> {
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        match Image::encode(self.mirror.snapshot()) {
            Ok(image) => Some(image),
            Err(error) => {
                tracing::error!(%error, "cannot encode the state for a checkpoint");
                None
            }
        }
    }
}

impl EventSink for BrokerSink {
    /// Encodes and queues the event; never waits.
    ///
    /// # Errors
    /// [`SinkError::Encode`] when the event cannot be encoded as Go would; [`SinkError::Other`]
    /// when the append task has stopped (its runtime shut down).
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        if self.shared.stats.stopped.load(Ordering::Relaxed) {
            return Err(SinkError::other(
                "broker producer stopped: its machine name is held by another producer, or is not one",
            ));
        }
        let bytes = wire::to_vec(event).map_err(|source| SinkError::Encode {
            seq: event.seq,
            source,
        })?;
        let shared = &self.shared;
        let counters = &shared.stats.counters;
        // One lock over fold + enqueue: the queue order is the fold order, so an image taken
        // here reflects exactly the events queued before it.
        let mut state = shared.state();
        // The store never fails.
        let _ = state.mirror.handle_event(event);
        if state.resync || state.start {
            let permit = match shared.tx.try_reserve() {
                Ok(permit) => permit,
                Err(e) => return dropped(counters, &mut state, event.seq, e),
            };
            // The image reflects this event too: it replaces it.
            if let Some(image) = state.image() {
                let start = !state.resync;
                counters.resyncs_queued.fetch_add(1, Ordering::SeqCst);
                permit.send(Item::Resync { image, start });
                state.resync = false;
                state.start = false;
                if start {
                    tracing::debug!(seq = event.seq, "first broker entry: a resync");
                } else {
                    tracing::info!(
                        seq = event.seq,
                        "broker queue has room again: appending a resync with the whole state"
                    );
                }
            }
            return Ok(());
        }
        let record = Record {
            event: bytes,
            health: None,
        };
        if let Err(e) = shared.tx.try_send(Item::Event(record)) {
            let e = match e {
                mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
                mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
            };
            return dropped(counters, &mut state, event.seq, e);
        }
        counters.queued.fetch_add(1, Ordering::SeqCst);
        state.since_checkpoint += 1;
        if state.since_checkpoint >= shared.checkpoint_every
            || state.last_checkpoint.elapsed() >= shared.checkpoint_interval
        {
            // When the queue is full the checkpoint waits for the next event.
            if let Ok(permit) = shared.tx.try_reserve() {
                if let Some(image) = state.image() {
                    permit.send(Item::Checkpoint(image));
                }
            }
        }
        Ok(())
    }
}

/// Counts a dropped event and arms the resync.
fn dropped(
    counters: &Counters,
    state: &mut State,
    seq: u64,
    error: mpsc::error::TrySendError<()>,
) -> Result<(), SinkError> {
    counters.dropped.fetch_add(1, Ordering::Relaxed);
    if !state.resync {
        state.resync = true;
        tracing::warn!(
            seq,
            dropped = counters.dropped.load(Ordering::Relaxed),
            "broker queue full: dropping events until it drains; followers will get a resync snapshot"
        );
    }
    match error {
        mpsc::error::TrySendError::Full(()) => Ok(()),
        mpsc::error::TrySendError::Closed(()) => {
            Err(SinkError::other("broker append task stopped"))
        }
    }
}

/// Claims `machine` until the broker answers: `Err` when another producer holds it.
async fn claim<B: Broker>(
    broker: &B,
    machine: &str,
    instance: &str,
    stale_after: Duration,
    link: &mut Link,
    counters: &Counters,
) -> Result<Claim, (String, Duration)> {
    loop {
        match broker.claim(machine, instance, stale_after).await {
            Ok(claim) => {
                link.ok();
                return Ok(claim);
            }
            Err(BrokerError::NameTaken { machine, age }) => return Err((machine, age)),
            Err(error) => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                link.failed(&error).await;
            }
        }
    }
}

/// Stops the sink for good: another producer holds its machine name.
fn taken(stats: &Stats, machine: &str, age: Duration) {
    stats.stopped.store(true, Ordering::Relaxed);
    *lock(&stats.started) = Some(Err(Refused::Taken(machine.to_owned(), age)));
    stats.started_changed.notify_waiters();
    stats.appended_changed.notify_waiters();
    tracing::error!(
        machine,
        age_ms = age.as_millis() as u64,
        "another producer holds this machine name: this producer stops (give it another name)"
    );
}

/// The append task: claims the machine name, then drains the queue in order, in batches,
/// until every [`BrokerSink`] clone is dropped and the queue is empty.
async fn run<B: Broker>(
    broker: B,
    mut rx: mpsc::Receiver<Item>,
    shared: Weak<Shared>,
    stats: Arc<Stats>,
    machine: String,
    stale_after: Duration,
) {
    let instance = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let counters = &stats.counters;
    let mut link = Link::new("producer");
    if !valid_machine(&machine) {
        stats.stopped.store(true, Ordering::Relaxed);
        *lock(&stats.started) = Some(Err(Refused::Invalid(machine.clone())));
        stats.started_changed.notify_waiters();
        tracing::error!(
            "not a machine name (1 to 64 bytes without control characters): this producer stops"
        );
        return;
    }
    if let Err((name, age)) = claim(
        &broker,
        &machine,
        &instance,
        stale_after,
        &mut link,
        counters,
    )
    .await
    {
        taken(&stats, &name, age);
        return;
    }
    *lock(&stats.started) = Some(Ok(()));
    stats.started_changed.notify_waiters();
    tracing::info!(%machine, "machine name claimed: appending");
    // Every quarter of `stale_after`, busy or idle (an append does not renew the claim on
    // every engine).
    let renew_every = stale_after / 4;
    let mut renewed = Instant::now();
    let mut renew_now = false;
    let mut batches = 0u64;
    let mut last: Option<EntryId> = None;
    // The stream seq of `last`.
    let mut last_seq = 0u64;
    // The checkpoint this task wrote last, tied to an entry of the stream as it is now.
    let mut written: Option<Checkpoint> = None;
    let mut verified = Instant::now();
    let mut pending: VecDeque<Item> = VecDeque::new();
    loop {
        if renew_now || renewed.elapsed() >= renew_every {
            renewed = Instant::now();
            renew_now = false;
            match broker.claim(&machine, &instance, stale_after).await {
                Ok(Claim::Held) => {}
                Ok(Claim::Taken) => {
                    // Marked gone by a node, or the claim lapsed: what nodes hold of this
                    // machine may be the gone state; a resync brings it back.
                    counters.reclaims.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %machine,
                        "machine name had lapsed or been marked gone: claimed again, appending a resync"
                    );
                    if let Some(shared) = shared.upgrade() {
                        if let Some(image) = lost(&shared, &mut rx, &mut pending, 0, counters) {
                            last = None;
                            written = None;
                            counters.resyncs_queued.fetch_add(1, Ordering::SeqCst);
                            pending.push_front(Item::Resync {
                                image,
                                start: false,
                            });
                        }
                    }
                }
                Err(BrokerError::NameTaken { machine, age }) => {
                    taken(&stats, &machine, age);
                    return;
                }
                // Unreachable: the appends retry, and the next renewal tries again.
                Err(_) => {}
            }
        }
        if pending.is_empty() {
            match tokio::time::timeout(IDLE_TICK, rx.recv()).await {
                Ok(Some(item)) => pending.push_back(item),
                Ok(None) => return,
                Err(_) => {
                    let Some(shared) = shared.upgrade() else {
                        continue;
                    };
                    let due = verified.elapsed() >= shared.verify_interval;
                    let verdict = match &last {
                        Some(entry) if due && rx.is_empty() => {
                            verified = Instant::now();
                            verify(&broker, &machine, entry, written.as_ref()).await
                        }
                        _ => Verdict::Fine,
                    };
                    match verdict {
                        Verdict::Fine => {}
                        Verdict::Lost => {
                            counters.stream_losses.fetch_add(1, Ordering::Relaxed);
                            let Some(image) = lost(&shared, &mut rx, &mut pending, 0, counters)
                            else {
                                continue;
                            };
                            last = None;
                            written = None;
                            counters.resyncs_queued.fetch_add(1, Ordering::SeqCst);
                            pending.push_back(Item::Resync {
                                image,
                                start: false,
                            });
                        }
                        Verdict::Repair(why) => {
                            if let Some(image) = exact_image(&shared, &rx) {
                                counters.checkpoint_repairs.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    why,
                                    seq = image.seq,
                                    "broker checkpoint not as written: writing it again at the producer's last entry"
                                );
                                pending.push_back(Item::Checkpoint(image));
                            }
                        }
                    }
                    if pending.is_empty() {
                        match idle(&shared, &rx) {
                            Some(item) => pending.push_back(item),
                            None => continue,
                        }
                    }
                }
            }
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => pending.push_back(item),
                    Err(_) => break,
                }
            }
        }
        // The next group: events (and at most one resync, last) up to the next checkpoint.
        let mut records = Vec::new();
        let mut events = 0u64;
        let mut checkpoint = None;
        let mut resync = false;
        while let Some(item) = pending.pop_front() {
            match item {
                Item::Event(record) => {
                    records.push(record);
                    events += 1;
                }
                Item::Resync { image, start } => {
                    records.push(image.record());
                    if !start {
                        resync = true;
                    }
                    checkpoint = Some(image);
                    break;
                }
                Item::Checkpoint(image) if records.is_empty() => {
                    checkpoint = Some(image);
                    break;
                }
                Item::Checkpoint(image) => {
                    pending.push_front(Item::Checkpoint(image));
                    break;
                }
                Item::Close(done) if records.is_empty() && checkpoint.is_none() => {
                    leave(&broker, &machine).await;
                    stats.stopped.store(true, Ordering::Relaxed);
                    let _ = done.send(());
                    return;
                }
                Item::Close(done) => {
                    pending.push_front(Item::Close(done));
                    break;
                }
            }
        }
        if !records.is_empty() {
            batches += 1;
            let batch = format!("{instance}:{batches}");
            let appended = loop {
                let append = Append {
                    machine: &machine,
                    instance: &instance,
                    batch: &batch,
                    after: last.as_deref(),
                    records: &records,
                };
                match broker.append(&append).await {
                    Ok(appended) => break Some(appended),
                    Err(BrokerError::StreamLost) => break None,
                    Err(BrokerError::NameTaken { machine, age }) => {
                        taken(&stats, &machine, age);
                        return;
                    }
                    Err(error) => {
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                        link.failed(&error).await;
                    }
                }
            };
            link.ok();
            match appended {
                Some(appended) => {
                    last = Some(appended.entry);
                    last_seq = appended.seq;
                    counters.last_seq.store(appended.seq, Ordering::SeqCst);
                    counters.appended.fetch_add(events, Ordering::SeqCst);
                    if resync {
                        counters.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    if checkpoint.is_some() && records.len() > events as usize {
                        counters.resyncs_done.fetch_add(1, Ordering::SeqCst);
                    }
                }
                None => {
                    counters.stream_losses.fetch_add(1, Ordering::Relaxed);
                    // A node may have marked the machine gone: claim it again first thing.
                    renew_now = true;
                    // Whatever is queued is in the private store already: one resync with
                    // it replaces the lost stream's state, this group and the queue.
                    let Some(image) = shared
                        .upgrade()
                        .and_then(|shared| lost(&shared, &mut rx, &mut pending, events, counters))
                    else {
                        return;
                    };
                    last = None;
                    written = None;
                    counters.resyncs_queued.fetch_add(1, Ordering::SeqCst);
                    pending.push_front(Item::Resync {
                        image,
                        start: false,
                    });
                    continue;
                }
            }
            stats.appended_changed.notify_waiters();
        }
        if let (Some(image), Some(entry)) = (checkpoint, &last) {
            let checkpoint = image.at(&machine, entry.clone(), last_seq);
            while let Err(error) = broker.write_checkpoint(&checkpoint).await {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                link.failed(&error).await;
            }
            link.ok();
            counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(seq = checkpoint.seq, entry = %checkpoint.entry, "checkpoint written");
            written = Some(checkpoint);
        }
    }
}

/// Marks this producer's machine gone at once: it stops publishing, and a producer of the
/// same name may start right away.
async fn leave<B: Broker>(broker: &B, machine: &str) {
    let Some(record) = gone_record(format!("machine {machine} stopped publishing")) else {
        return;
    };
    match broker
        .mark_gone(machine, Duration::ZERO, None, &record)
        .await
    {
        Ok(_) => tracing::info!(machine, "producer closed: machine marked gone"),
        Err(error) => {
            tracing::warn!(machine, %error, "producer closed without marking its machine gone")
        }
    }
}

/// What a check of the broker found (see "Checking the broker" on [`BrokerSink`]).
enum Verdict {
    /// As the producer left it (or the broker did not answer: checked again later).
    Fine,
    /// The machine's last entry is not the producer's last, or is gone from the stream.
    Lost,
    /// The checkpoint must be written again, for this reason.
    Repair(&'static str),
}

/// Checks that the machine's last entry is still `last` and that the checkpoint is `written`
/// and still continued by the stream.
async fn verify<B: Broker>(
    broker: &B,
    machine: &str,
    last: &str,
    written: Option<&Checkpoint>,
) -> Verdict {
    match broker.last_of(machine).await {
        Ok(found) if found.as_deref() == Some(last) => {}
        Ok(found) => {
            tracing::warn!(
                last,
                found = found.as_deref().unwrap_or(""),
                "the broker stream no longer holds this producer's last entry as its machine's last"
            );
            return Verdict::Lost;
        }
        // Unreachable: the next append or check finds out.
        Err(_) => return Verdict::Fine,
    }
    let Some(written) = written else {
        return Verdict::Fine;
    };
    let found = match broker.read_checkpoint(machine).await {
        Ok(found) => found,
        Err(BrokerError::Malformed(_)) => return Verdict::Repair("unreadable"),
        Err(_) => return Verdict::Fine,
    };
    let found = match found {
        None => return Verdict::Repair("missing"),
        Some(found) if found != *written => return Verdict::Repair("changed"),
        Some(found) => found,
    };
    if found.entry == last {
        return Verdict::Fine;
    }
    match broker.read(Some(&found.entry), 1, None).await {
        Ok(next) => match next.first() {
            Some(next) if next.prev == found.entry => Verdict::Fine,
            _ => Verdict::Repair("no longer continued by the stream (trimmed past it)"),
        },
        Err(_) => Verdict::Fine,
    }
}

/// The image of exactly what was appended: with nothing queued, the private store is it.
fn exact_image(shared: &Shared, rx: &mpsc::Receiver<Item>) -> Option<Image> {
    let mut state = shared.state();
    if !rx.is_empty() {
        return None;
    }
    state.image()
}

/// The stream lost the producer's entries (deleted, or the broker restarted without its
/// data): drops the group and the queue, which the private store reflects already, and
/// returns the image that replaces them.
fn lost(
    shared: &Shared,
    rx: &mut mpsc::Receiver<Item>,
    pending: &mut VecDeque<Item>,
    group: u64,
    counters: &Counters,
) -> Option<Image> {
    let mut state = shared.state();
    let mut superseded = group;
    let mut closes = Vec::new();
    let queued: Vec<Item> = pending
        .drain(..)
        .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        .collect();
    for item in queued {
        match item {
            Item::Event(_) => superseded += 1,
            Item::Resync { .. } => {
                counters.resyncs_done.fetch_add(1, Ordering::SeqCst);
            }
            Item::Checkpoint(_) => {}
            Item::Close(done) => closes.push(Item::Close(done)),
        }
    }
    pending.extend(closes);
    counters.superseded.fetch_add(superseded, Ordering::SeqCst);
    state.resync = false;
    tracing::warn!(
        superseded,
        "the broker stream lost this producer's entries (deleted, trimmed empty, or the broker restarted from older data): appending a resync with the whole state"
    );
    state.image()
}

/// With nothing queued: a pending resync, or a checkpoint of changes older than the interval.
/// Under the state lock with an empty queue, the private store is exactly the appended state.
fn idle(shared: &Shared, rx: &mpsc::Receiver<Item>) -> Option<Item> {
    let mut state = shared.state();
    if !rx.is_empty() {
        return None;
    }
    if state.resync {
        state.resync = false;
        tracing::info!("broker queue drained: appending a resync with the whole state");
        shared
            .stats
            .counters
            .resyncs_queued
            .fetch_add(1, Ordering::SeqCst);
        return state.image().map(|image| Item::Resync {
            image,
            start: false,
        });
    }
    if state.since_checkpoint > 0 && state.last_checkpoint.elapsed() >= shared.checkpoint_interval {
        return state.image().map(Item::Checkpoint);
    }
    None
}
