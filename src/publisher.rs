//! [`Publisher`]: the one way to publish that keeps the snapshot hand-over exact.

use std::sync::{Mutex, PoisonError};

use crate::hub::Hub;
use crate::sink::{EventSink, SinkError, SnapshotSource};
use crate::store::SessionStore;
use crate::wire::Event;

/// Publishes events to a store (the snapshot source) and then to the [`Hub`], one event at a
/// time, with a `seq` that keeps rising.
///
/// Connecting clients are subscribed to the hub *before* their snapshot is taken (see
/// [`SnapshotSource`]), so the hand-over is exact only if every event reaches the store before
/// the hub, and if the events racing a connect carry increasing seqs. `Publisher` makes both
/// hold by construction:
///
/// - **Order.** Each event goes to the store, then to the hub, under one lock: two threads
///   publishing at once cannot interleave as store(A), store(B), hub(B), hub(A), which a
///   [`MultiSink`](crate::MultiSink) shared between threads allows.
/// - **Seq.** An event with `seq` 0 gets the last seq plus one. An event that brings its own
///   seq (the agentwatch monitor numbers its events) keeps it; a seq that does not rise is
///   taken as the producer restarting, as the hub does (its replay window resets, so resuming
///   clients get a snapshot), and numbering goes on from there.
///
/// ```
/// use agentwatch_ws::{Event, Publisher, SessionState, SessionStore, SnapshotSource, WsLayer};
///
/// let store = SessionStore::new();
/// let ws = WsLayer::new(store.clone());
/// let publisher = Publisher::new(store.clone(), ws.hub());
///
/// let session = SessionState { id: "a8d0e2f4".into(), source: "codex".into(), ..Default::default() };
/// let seq = publisher.publish(Event::delta(0, vec![session], vec![]))?;   // 0: numbered for you
/// assert_eq!(seq, 1);
/// assert_eq!(publisher.publish(Event::delta(0, vec![], vec!["a8d0e2f4".into()]))?, 2);
/// assert_eq!(store.snapshot().seq, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// It is also an [`EventSink`], so a monitor that publishes into any sink can publish into it
/// (`Monitor` from this crate does).
pub struct Publisher<S = SessionStore> {
    store: S,
    hub: Hub,
    /// The last seq published; the lock is also what keeps store and hub in step.
    last_seq: Mutex<u64>,
}

impl<S> std::fmt::Debug for Publisher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("last_seq", &*self.lock())
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl<S> Publisher<S>
where
    S: EventSink + SnapshotSource,
{
    /// A publisher into `store` (usually a [`SessionStore`], the source the `WsLayer` was
    /// built with) and `hub` (from [`WsLayer::hub`](crate::WsLayer::hub)). Numbering starts
    /// after the store's snapshot seq, so a publisher created over a store that already holds
    /// events continues from them.
    pub fn new(store: S, hub: Hub) -> Self {
        let last_seq = store.snapshot().seq;
        Publisher {
            store,
            hub,
            last_seq: Mutex::new(last_seq),
        }
    }

    /// Publishes `event` to the store, then to the hub, and returns the seq it was published
    /// with (assigned when `event.seq` is 0).
    ///
    /// # Errors
    /// The store's or the hub's [`SinkError`] (both are tried; a [`SinkError::Multiple`] when
    /// both fail). The hub fails only when the event cannot be encoded as Go would (a
    /// non-finite `contextUtilization`, a year outside 0..=9999); the seq is used either way,
    /// so the next event still rises.
    pub fn publish(&self, mut event: Event) -> Result<u64, SinkError> {
        let mut last_seq = self.lock();
        if event.seq == 0 {
            event.seq = last_seq.saturating_add(1);
        }
        *last_seq = event.seq;
        self.deliver(&event)?;
        Ok(event.seq)
    }

    /// The seq of the last event published (the store's seq when nothing was published yet).
    pub fn last_seq(&self) -> u64 {
        *self.lock()
    }

    /// The hub this publisher feeds.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The store this publisher feeds.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let stored = self.store.handle_event(event);
        let sent = self.hub.handle_event(event);
        match (stored, sent) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(SinkError::Multiple(vec![a, b])),
        }
    }
}

impl<S> Publisher<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // Only a u64 is guarded, consistent after every statement.
        self.last_seq.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S> EventSink for Publisher<S>
where
    S: EventSink + SnapshotSource,
{
    /// [`publish`](Publisher::publish)es a copy of `event` when its seq is 0 (to number it),
    /// the event itself otherwise.
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        if event.seq == 0 {
            return self.publish(event.clone()).map(drop);
        }
        let mut last_seq = self.lock();
        *last_seq = event.seq;
        self.deliver(event)
    }
}
