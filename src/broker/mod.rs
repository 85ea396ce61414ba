//! Fan-out across several server nodes, from several machines, through a broker (features
//! `redis`, `nats`).
//!
//! *Producers* (one per machine: a developer's laptop, a build box) run the monitor and
//! publish every event into one broker stream with a [`BrokerSink`]. Every serving *node*
//! runs a [`Follower`] that rebuilds the node's state from the broker and then publishes the
//! stream into the node's [`Publisher`](crate::Publisher), exactly as a local monitor would,
//! every session and health report labelled with its machine (`machine`, see
//! [`SessionState::machine`](crate::SessionState::machine)). Every node therefore serves the
//! same events with the same `seq` and `at`, and a client may resume with `?since=` on any
//! node whose replay window holds its position, or whose broker stream still does.
//!
//! # Machines
//! - **One order.** The broker assigns every entry its `seq` as it appends it (Redis: a
//!   counter incremented by the append script; NATS: the stream sequence), so every
//!   producer's events are in one order and nodes serve each with the entry's `seq` (the
//!   producer's own is replaced).
//! - **One live producer per name.** A producer claims its machine name
//!   ([`BrokerSinkBuilder::machine`], default the host name) before appending and renews the
//!   claim every quarter of [`stale_after`](BrokerSinkBuilder::stale_after) (default 20 s);
//!   a second producer of a name whose claim is live is refused
//!   ([`BrokerError::NameTaken`], from [`BrokerSink::started`]).
//! - **A restart is the machine's own.** A producer's first entry is a *resync* of its state:
//!   nodes replace that machine's sessions and health reports, and leave the others'.
//! - **Gone.** A claim not renewed for `stale_after` (the producer killed, its machine asleep
//!   or cut off) is seen by the nodes, one of which appends a *gone* entry for it (exactly
//!   once: Redis checks and appends in one script; NATS marks the claim gone with
//!   `Nats-Expected-Last-Subject-Sequence` and appends at the node's own position). Every node
//!   then shows that machine's sessions as ended (`lifecycle` `terminal`) and its sources as
//!   `failed` with "machine NAME gone: …", and writes nothing else for it until its producer
//!   is back (its claim is free then, its first entry a resync). A machine with no claim at
//!   all (lost with the broker's data) gets `stale_after` from when a node first finds it
//!   missing. [`BrokerSink::close`] leaves at once ("machine NAME stopped publishing"). Keep clocks in sync (NTP): NATS claims age
//!   by the server's timestamps against the node's clock.
//! - **Session ids** are unique across machines in practice (agents use UUIDs). Where two
//!   machines report the same id (a copied session directory, two simulations with one
//!   seed), each keeps its own copy and nodes show one: that of the machine first by name;
//!   when it drops the session, the other's shows. Every node decides alike, and a client
//!   resuming across such a change gets a snapshot.
//! - **A machine gone for good** stays listed, its sessions ended and its sources `failed`,
//!   until a producer of that name comes back (then its first entry replaces them); a
//!   node's `/healthz` reports `failed` meanwhile.
//!
//! ```text
//!  monitor ──► BrokerSink ──append──► stream ──read──► Follower ──► Publisher (node 1)
//!                 └──write──► checkpoint ─────────► Follower ──► Publisher (node 2)
//! ```
//!
//! # Engines
//! The engine is the [`Broker`] trait; two implement it:
//! - [`RedisBroker`] (feature `redis`), on Redis Streams. For a stream key `K` (e.g.
//!   `agentwatch:events`): `K`, a stream with one entry per event, fields `seq` (decimal,
//!   assigned by the append from the counter `K:seq`), `prev` (the id of the entry before it
//!   in the stream, empty for the first), `machine`, `event` (the event's Go-exact JSON),
//!   only on a *resync* entry `health` (a JSON array of every source's latest health on the
//!   machine), only on a *gone* entry `gone` (`1`), trimmed with `MAXLEN ~ N` (default
//!   10 000: Redis keeps at least the last `N` entries); `K:machines`, the set of machine
//!   names; per machine `M`, `K:machine:M`, a hash with its claim (`instance`, `seen`,
//!   `gone`) and its last append (`last`, `lastseq`, `batch`: a retried append after a
//!   timeout whose outcome is unknown is a no-op instead of a duplicate), and
//!   `K:checkpoint:M`, a hash with the [`Checkpoint`]'s fields `seq`, `entry`, `snapshot` and
//!   `health`. An append, a claim and a gone entry are each one Lua script: atomic.
//! - [`NatsBroker`] (feature `nats`), on NATS JetStream: a stream of one message per entry
//!   on a subject per machine (the same fields, as headers and payload), chained with
//!   `Nats-Expected-Last-Sequence` and `Nats-Expected-Last-Subject-Sequence` and
//!   deduplicated with `Nats-Msg-Id`, and a stream keeping one message per subject for each
//!   machine's checkpoint and claim (see its docs).
//!
//! Each producer writes its machine's checkpoint at least every `N / 4` of its events
//! ([`BrokerSinkBuilder::checkpoint_every`]) and after a quiet
//! [`checkpoint_interval`](BrokerSinkBuilder::checkpoint_interval), so a node that starts
//! late replays at most a quarter of the stream.
//!
//! # Continuity, and what clients see after a gap
//! Each entry names its predecessor (`prev`, set atomically by the append), so a follower
//! *proves* it missed nothing: the first entry it reads after position `p` must have
//! `prev == p`. When it does not (the position was trimmed while the node was cut off or too
//! slow, the stream was deleted or restored from older data), the follower rebuilds the
//! state from the checkpoint plus the stream after it and publishes it to the node as a
//! connecting client gets it: one `snapshot` event at the rebuilt `seq` (carrying the last
//! rebuilt event's `at`), then one `health` event per source at the same position. The
//! node's state replaces its sessions; its clients get these like any event, so connected
//! clients keep their sockets and replace their state (a dashboard treats every `snapshot`
//! message as "replace everything", health included, and applies the reports after it).
//! Reports at the snapshot's very position are taken as part of it; a snapshot whose `seq`
//! does not rise resets the node's replay window (see [`Publisher`](crate::Publisher)) like
//! any producer restart, so an older position gets a fresh snapshot on connect.
//!
//! Every entry is also checked before it reaches a node: it must carry the `seq` after the
//! last one applied, so an entry written around the append (Redis) is refused, logged and
//! counted ([`FollowerStats::refused`]); one that cannot be decoded is counted
//! ([`FollowerStats::malformed`]) and replaced, for clients, by an empty `delta` at its
//! `seq`, so theirs still follow each other. No client ever gets an event its node could
//! not apply.
//!
//! # Faults
//! - Broker unreachable when a node starts, or lost while serving: the follower retries with
//!   exponential backoff (logging once per state change, not per retry); clients keep their
//!   sockets and simply receive nothing new; once back, the follower continues from its last
//!   entry, or rebuilds as above when that entry is gone.
//! - Broker unreachable for the producer: [`EventSink::handle_event`](crate::EventSink)
//!   never waits; events queue in a bounded buffer drained by a background task that retries
//!   with backoff. Past the bound, events are dropped *and counted*
//!   ([`BrokerSinkStats::dropped`]), and once the queue has room again the producer appends a
//!   resync entry carrying the full state, so every follower recovers through a snapshot.
//! - The stream no longer ending with the producer's last entry (deleted or emptied, the
//!   broker restarted without its data or from an older snapshot, a failover to a lagging
//!   replica, another writer): every append checks it atomically, and an idle producer
//!   checks it every [`verify_interval`](BrokerSinkBuilder::verify_interval); the producer
//!   then appends a resync and a checkpoint instead of its queue (which the resync covers)
//!   and counts it ([`BrokerSinkStats::stream_losses`]); followers see the gap and rebuild
//!   from it.
//! - The checkpoint missing, unreadable, changed, or no longer continued by the stream
//!   (trimmed past it): a follower skips an unreadable one
//!   ([`FollowerStats::unreadable_checkpoints`]) and builds from the stream's start when it
//!   can; the idle producer notices within its verify interval and writes the checkpoint
//!   again ([`BrokerSinkStats::checkpoint_repairs`]). So every node converges on the
//!   producer's state within about the verify interval plus the follower's
//!   [`block`](Follower::block), whatever happened to the broker.
//! - A producer restarting: its first entry is a resync of its machine; seqs keep rising.
// Built with one engine only, the other's name links to docs.rs (built with every feature).
#![cfg_attr(
    not(feature = "redis"),
    doc = "",
    doc = "[`RedisBroker`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/broker/struct.RedisBroker.html"
)]
#![cfg_attr(
    not(feature = "nats"),
    doc = "",
    doc = "[`NatsBroker`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/broker/struct.NatsBroker.html"
)]

mod backoff;
mod checkpoint;
mod follower;
#[cfg(feature = "nats")]
mod nats;
mod producer;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::time::Duration;

pub use checkpoint::Checkpoint;
pub use follower::{Follower, FollowerHandle, FollowerStats};
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use nats::NatsBroker;
pub use producer::{BrokerSink, BrokerSinkBuilder, BrokerSinkStats};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisBroker;

/// A stream entry id, as the broker assigned it (Redis: `<ms>-<n>`). Opaque to the engine.
pub type EntryId = String;

/// What a producer appends: one event, or a resync carrying its whole state.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The event's Go-exact JSON ([`wire::to_vec`](crate::wire::to_vec)), with the producer's
    /// own `seq` (nodes replace it with the entry's); for a resync, a `snapshot` event with
    /// every session of the producer.
    pub event: Vec<u8>,
    /// Only on a resync: every source's latest health on the producer, as a Go-exact JSON
    /// array.
    pub health: Option<Vec<u8>>,
}

/// One record as read back from the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its id in the stream.
    pub id: EntryId,
    /// The id of the entry before it in the stream when it was appended (empty for the first
    /// entry).
    pub prev: EntryId,
    /// Its place in the one order of every producer's events, assigned by the broker with
    /// the append: the entry before it has `seq - 1`. Nodes serve the entry's event with it.
    pub seq: u64,
    /// The machine (producer name) it comes from.
    pub machine: String,
    /// A *gone* entry: appended by a node when `machine` stopped renewing its claim, its
    /// `event` a `health` event whose report every source of the machine takes (see the
    /// [module docs](self)).
    pub gone: bool,
    /// The record.
    pub record: Record,
}

/// One call to [`Broker::append`].
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The producer's machine name.
    pub machine: &'a str,
    /// The producer instance appending (the one that claimed the name with
    /// [`Broker::claim`]): an engine that can check it atomically refuses the append with
    /// [`BrokerError::NameTaken`] when another instance holds the claim.
    pub instance: &'a str,
    /// Identifies the call: appending again with the batch id of the machine's last
    /// successful append must not append twice (it returns the same answer), so a retry
    /// after an unknown outcome is safe.
    pub batch: &'a str,
    /// The id of the entry this producer appended last, which must still be the machine's
    /// last entry in the stream; `None` for a producer's first append and a resync after a
    /// loss.
    pub after: Option<&'a str>,
    /// The records, in order.
    pub records: &'a [Record],
}

/// Where an append put the last of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry's id.
    pub entry: EntryId,
    /// Its `seq`.
    pub seq: u64,
}

/// What [`Broker::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The machine name was this instance's already: renewed.
    Held,
    /// The name was free (never used, marked gone, or not renewed for `stale_after`) and is
    /// now this instance's: its next append must be a resync.
    Taken,
}

/// A broker engine: one append-only, trimmed stream of every producer's [`Record`]s, one
/// [`Checkpoint`] and one claim per machine.
///
/// [`RedisBroker`] (Redis Streams) and [`NatsBroker`] (NATS JetStream) implement it; another
/// engine implements the same operations and the rest of this module works unchanged.
/// Implementations must assign [`Entry::seq`] and set [`Entry::prev`] atomically with the
/// append, so that continuity can be proven by the reader.
#[cfg_attr(
    not(feature = "redis"),
    doc = "",
    doc = "[`RedisBroker`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/broker/struct.RedisBroker.html"
)]
#[cfg_attr(
    not(feature = "nats"),
    doc = "",
    doc = "[`NatsBroker`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/broker/struct.NatsBroker.html"
)]
pub trait Broker: Send + Sync + 'static {
    /// Appends the records in order, each with the next `seq`, and returns where the last
    /// one went.
    ///
    /// With [`Append::after`], the machine's last entry must still be that one, and still be
    /// in the stream: when not (the stream was deleted or emptied, the broker restarted from
    /// older data or failed over to a lagging replica, a node marked the machine gone,
    /// another writer used its name), nothing is appended and the answer is
    /// [`BrokerError::StreamLost`]. The check and the append are one atomic step.
    fn append(
        &self,
        append: &Append<'_>,
    ) -> impl Future<Output = Result<Appended, BrokerError>> + Send;

    /// Claims `machine` for the producer instance `instance`, or renews its claim. Fails with
    /// [`BrokerError::NameTaken`] while another instance holds it: one that renewed it less
    /// than `stale_after` ago and was not marked gone.
    fn claim(
        &self,
        machine: &str,
        instance: &str,
        stale_after: Duration,
    ) -> impl Future<Output = Result<Claim, BrokerError>> + Send;

    /// Appends a *gone* entry for `machine` carrying `record`, if its claim was not renewed
    /// for `stale_after` and it is not marked gone already; `tail` is the caller's position,
    /// which engines without atomic scripts require to still be the stream's end. `None`
    /// when nothing was appended (alive, gone already, or the stream moved on).
    fn mark_gone(
        &self,
        machine: &str,
        stale_after: Duration,
        tail: Option<&str>,
        record: &Record,
    ) -> impl Future<Output = Result<Option<Appended>, BrokerError>> + Send;

    /// The id of `machine`'s last entry, if the stream still holds it.
    fn last_of(
        &self,
        machine: &str,
    ) -> impl Future<Output = Result<Option<EntryId>, BrokerError>> + Send;

    /// Another handle on the same stream with a connection of its own, so that a short read
    /// (a node serving a resuming client from the stream) never waits behind a blocking one.
    /// Engines whose reads never block a connection may share it.
    fn handle(&self) -> Self
    where
        Self: Sized;

    /// Replaces the checkpoint of [`Checkpoint::machine`].
    fn write_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// The latest checkpoint of `machine`, if any was written.
    fn read_checkpoint(
        &self,
        machine: &str,
    ) -> impl Future<Output = Result<Option<Checkpoint>, BrokerError>> + Send;

    /// Every machine's latest checkpoint; one that cannot be read is an `Err` in the list.
    fn read_checkpoints(
        &self,
    ) -> impl Future<Output = Result<Vec<Result<Checkpoint, BrokerError>>, BrokerError>> + Send;

    /// Up to `count` entries after `after` (`None`: from the oldest entry held), in stream
    /// order, waiting up to `block` for the first when there is none yet (`None`: no wait).
    /// An empty vector means "nothing new".
    fn read(
        &self,
        after: Option<&str>,
        count: usize,
        block: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Entry>, BrokerError>> + Send;

    /// How many entries the broker keeps at least (the trim length), if bounded. Producers
    /// checkpoint every quarter of it by default.
    fn retention(&self) -> Option<usize>;
}

/// Why a broker operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker could not be reached or the connection broke (retried with backoff).
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    /// The broker answered something this crate cannot read: a foreign or corrupt entry or
    /// checkpoint. Carries what was wrong, never the payload.
    Malformed(String),
    /// An append that continues the producer's entries found that the machine's last entry
    /// is no longer the producer's last one, or no longer in the stream: it was deleted or
    /// emptied, the broker restarted from older data (or without any), a lagging replica
    /// took over, a node marked the machine gone, or another writer used its name. The
    /// producer answers with a resync.
    StreamLost,
    /// Another producer instance holds this machine name: it renewed its claim `age` ago
    /// (less than `stale_after`) and was not marked gone.
    NameTaken {
        /// The machine name.
        machine: String,
        /// How long ago the holder renewed its claim.
        age: Duration,
    },
    /// Not a machine name: it must be 1 to 64 bytes of UTF-8 without control characters.
    InvalidMachine {
        /// The name given.
        machine: String,
    },
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Unavailable(e) => write!(f, "broker unavailable: {e}"),
            BrokerError::Malformed(what) => write!(f, "malformed broker data: {what}"),
            BrokerError::StreamLost => {
                f.write_str("the stream no longer holds the producer's last entry as its last")
            }
            BrokerError::InvalidMachine { machine } => write!(
                f,
                "{machine:?} is not a machine name: 1 to 64 bytes without control characters"
            ),
            BrokerError::NameTaken { machine, age } => write!(
                f,
                "machine name {machine:?} is held by another producer (renewed {} ms ago): \
                 give this one another name, or wait until the other has been gone for the \
                 stale timeout",
                age.as_millis()
            ),
        }
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BrokerError::Unavailable(e) => Some(&**e),
            BrokerError::Malformed(_)
            | BrokerError::StreamLost
            | BrokerError::NameTaken { .. }
            | BrokerError::InvalidMachine { .. } => None,
        }
    }
}
