//! Fan-out across several server nodes through a broker (feature `redis`).
//!
//! One process, the *producer*, runs the monitor and publishes every event into a broker
//! stream with a [`BrokerSink`]. Every serving *node* runs a [`Follower`] that rebuilds the
//! node's state from the broker and then publishes the stream into the node's
//! [`Publisher`](crate::Publisher), exactly as a local monitor would. Every node therefore serves the same events with the same `seq` and `at`, and a
//! client may resume with `?since=` on any node whose replay window holds its position.
//!
//! ```text
//!  monitor ──► BrokerSink ──XADD──► stream ──XREAD──► Follower ──► Publisher (node 1)
//!                 └──HSET──► checkpoint ──────────► Follower ──► Publisher (node 2)
//! ```
//!
//! # What is stored where
//! The engine is the [`Broker`] trait; [`RedisBroker`] implements it on Redis Streams.
//! For a stream key `K` (e.g. `agentwatch:events`):
//! - `K`, a stream: one entry per event, fields `seq` (decimal), `prev` (the id of the entry
//!   before it in the stream, empty for the first), `event` (the event's Go-exact JSON) and,
//!   only on a *resync* entry, `health` (a JSON array of every source's latest health). The
//!   stream is trimmed with `MAXLEN ~ N` ([`RedisBroker::max_len`], default
//!   10 000): Redis keeps at least the last `N` entries.
//! - `K:checkpoint`, a hash: the state at one stream entry: `seq`, `entry` (that entry's
//!   id), `snapshot` (a `snapshot` event's Go-exact JSON with every session) and `health` (a
//!   JSON array). Written by the producer at least every `N / 4` events
//!   ([`BrokerSinkBuilder::checkpoint_every`]) and after a quiet
//!   [`checkpoint_interval`](BrokerSinkBuilder::checkpoint_interval), so a node that starts
//!   late replays at most a quarter of the stream.
//! - `K:append`, a hash: the id of the producer's last append batch, which makes a retried
//!   append (after a timeout whose outcome is unknown) a no-op instead of a duplicate.
//!
//! # Continuity, and what clients see after a gap
//! Each entry names its predecessor (`prev`, set atomically by the append script), so a
//! follower *proves* it missed nothing: the first entry it reads after position `p` must have
//! `prev == p`. When it does not (the position was trimmed while the node was cut off or too
//! slow, or the stream was deleted), the follower rebuilds the state from the checkpoint plus
//! the stream after it and publishes it to the node as a connecting client gets it: one
//! `snapshot` event at the rebuilt `seq` (carrying the last rebuilt event's `at`), then one
//! `health` event per source at the same position. The node's state replaces its sessions;
//! its clients get these like any event, so connected clients keep their sockets and replace their
//! state (a dashboard treats every `snapshot` message as "replace everything", health
//! included, and applies the reports after it). Reports at the snapshot's very position are
//! taken as part of it; a snapshot whose `seq` does not rise resets the node's replay window
//! (see [`Publisher`](crate::Publisher)) like any producer restart, so an older position gets
//! a fresh snapshot on connect.
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
//! - The stream lost (deleted, or Redis restarted without persistence): the producer's next
//!   append finds it empty, and appends a resync and a checkpoint instead of its queue
//!   (which the resync covers); followers see the gap and rebuild from it.
//! - The producer restarting with seqs going back: followers forward in stream order; each
//!   node's publisher applies its reset rule.
//!
//! Exactly one producer per stream is assumed.

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

/// What the producer appends: one event, or a resync carrying the whole state.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The event's `seq`.
    pub seq: u64,
    /// The event's Go-exact JSON ([`wire::to_vec`](crate::wire::to_vec)); for a resync, a
    /// `snapshot` event with every session.
    pub event: Vec<u8>,
    /// Only on a resync: every source's latest health, as a Go-exact JSON array.
    pub health: Option<Vec<u8>>,
}

/// One record as read back from the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its id in the stream.
    pub id: EntryId,
    /// The id of the entry before it when it was appended (empty for the first entry).
    pub prev: EntryId,
    /// The record.
    pub record: Record,
}

/// A broker engine: an append-only, trimmed stream of [`Record`]s plus one [`Checkpoint`].
///
/// [`RedisBroker`] is the Redis Streams implementation; another engine (NATS JetStream…)
/// implements the same four operations and the rest of this module works unchanged.
/// Implementations must set [`Entry::prev`] atomically with the append, so that continuity
/// can be proven by the reader.
pub trait Broker: Send + Sync + 'static {
    /// Appends `records` in order and returns the id of the last one. `batch` identifies the
    /// call: appending again with the batch id of the last successful append must not append
    /// twice (it returns the same id), so a retry after an unknown outcome is safe.
    ///
    /// With `after` (the id of the entry this producer appended last), the stream must still
    /// end with that entry: when it does not (the stream was deleted or emptied, the broker
    /// restarted from older data or failed over to a lagging replica, someone else appended),
    /// nothing is appended and the answer is [`BrokerError::StreamLost`]. The check and the
    /// append are one atomic step.
    fn append(
        &self,
        batch: &str,
        after: Option<&str>,
        records: &[Record],
    ) -> impl Future<Output = Result<EntryId, BrokerError>> + Send;

    /// The id of the stream's last entry; `None` when the stream is empty or missing.
    fn tail(&self) -> impl Future<Output = Result<Option<EntryId>, BrokerError>> + Send;

    /// Another handle on the same stream with a connection of its own, so that a short read
    /// (a node serving a resuming client from the stream) never waits behind a blocking one.
    /// Engines whose reads never block a connection may share it.
    fn handle(&self) -> Self
    where
        Self: Sized;

    /// Replaces the checkpoint.
    fn write_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// The latest checkpoint, if any was written.
    fn read_checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<Checkpoint>, BrokerError>> + Send;

    /// Up to `count` entries after `after` (`None`: from the oldest entry held), in stream
    /// order, waiting up to `block` for the first when there is none yet (`None`: no wait).
    /// An empty vector means "nothing new".
    fn read(
        &self,
        after: Option<&str>,
        count: usize,
        block: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Entry>, BrokerError>> + Send;

    /// How many entries the broker keeps at least (the trim length), if bounded. The producer
    /// checkpoints every quarter of it by default.
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
    /// An append that continues the stream found that the stream no longer ends with the
    /// producer's last entry: it was deleted or emptied, the broker restarted from older data
    /// (or without any), a lagging replica took over, or another writer appended. The
    /// producer answers with a resync.
    StreamLost,
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Unavailable(e) => write!(f, "broker unavailable: {e}"),
            BrokerError::Malformed(what) => write!(f, "malformed broker data: {what}"),
            BrokerError::StreamLost => {
                f.write_str("the stream no longer ends with the producer's last entry")
            }
        }
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BrokerError::Unavailable(e) => Some(&**e),
            BrokerError::Malformed(_) | BrokerError::StreamLost => None,
        }
    }
}
