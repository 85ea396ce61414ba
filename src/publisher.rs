//! [`Publisher`]: the one way to publish, which keeps the snapshot hand-over exact.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::counters::HubStats;
use crate::hub::Hub;
use crate::sink::{EventSink, SinkError};
use crate::store::SessionStore;
use crate::wire::{Event, SessionState};

/// Publishes events to the clients of the router [`WsLayer::build`](crate::WsLayer::build)
/// returned it with, and reads the state they see.
///
/// Cheap to clone (an `Arc` inside): every clone publishes into the same endpoint. It owns
/// the endpoint's session store (what a connecting client's `snapshot` is taken from) and
/// its fan-out to the connected clients, and it is the only way to write to either:
///
/// - **Order.** Each event goes to the store, then to the clients, under one lock. A client
///   subscribes to the fan-out *before* its snapshot is taken and skips the queued events the
///   snapshot already reflects, so it sees every event exactly once, whatever the
///   interleaving of connects and publishes, from any number of threads.
/// - **Seq.** An event with `seq` 0 gets the last seq plus one. An event that brings its own
///   seq (the agentwatch monitor numbers its events) keeps it. A seq that does not rise is
///   taken as the producer restarting: every connected client gets a fresh `snapshot` (the
///   state as it is then, which a client applies by replacing its own) in place of the
///   events it had not yet been sent, then the restarted stream; the replay window is emptied
///   (clients resuming with an older position get a snapshot, counted in
///   [`HubStats::replay_resets`]); and numbering goes on from there.
/// - **One numbering.** The seqs of one publisher come from one party: either the publisher
///   itself (every producer publishes with seq 0, from any number of threads), or a single
///   producer that numbers its own events (one [`Monitor`], one broker `Follower`). Do not
///   publish seq-0 events into a publisher a [`Monitor`] feeds while it runs: their numbers
///   collide with the monitor's, each collision reads as a restart, and every client is sent
///   a snapshot. Publish such events to another endpoint, or through the producer that owns
///   the numbering.
///
/// ```
/// use agentwatch_ws::{Event, SessionState, WsLayer};
/// use axum::Router;
///
/// let (ws, publisher) = WsLayer::new().build("/ws");
/// let _app: Router = Router::new().merge(ws);
///
/// let session = SessionState { id: "a8d0e2f4".into(), source: "codex".into(), ..Default::default() };
/// let seq = publisher.publish(Event::delta(0, vec![session], vec![]))?;   // 0: numbered for you
/// assert_eq!(seq, 1);
/// assert_eq!(publisher.session("a8d0e2f4").map(|s| s.source), Some("codex".into()));
/// assert_eq!(publisher.publish(Event::delta(0, vec![], vec!["a8d0e2f4".into()]))?, 2);
/// assert!(publisher.sessions().is_empty());
/// # Ok::<(), agentwatch_ws::SinkError>(())
/// ```
///
/// It is also an [`EventSink`], so a producer that publishes into any sink
/// ([`Monitor`], the broker's `Follower`) publishes into it.
///
#[cfg_attr(feature = "monitor", doc = "[`Monitor`]: crate::monitor::Monitor")]
#[cfg_attr(
    not(feature = "monitor"),
    doc = "[`Monitor`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/struct.Monitor.html"
)]
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    store: SessionStore,
    hub: Hub,
    /// The last seq published; the lock is also what keeps store and hub in step.
    last_seq: Mutex<u64>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("seq", &self.seq())
            .field("clients", &self.client_count())
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher into `store`, then `hub`. Numbering starts after the store's seq.
    pub(crate) fn new(store: SessionStore, hub: Hub) -> Self {
        let last_seq = store.seq();
        Publisher {
            inner: Arc::new(Inner {
                store,
                hub,
                last_seq: Mutex::new(last_seq),
            }),
        }
    }

    /// Publishes `event` to every client (and to the state later clients get as their
    /// snapshot), and returns the seq it was published with: `event.seq`, or the last seq
    /// plus one when `event.seq` is 0. Never waits on a socket.
    ///
    /// What it does to the state: a `snapshot` event first *replaces* every session with its
    /// `sessions` (the sessions it does not list are gone, and connected clients, which apply
    /// it by the same rule, drop them too); then any event's `updates` are upserted and its
    /// `removed` deleted; a `health` report becomes the entry of its (`machine`, `source`)
    /// pair among those a snapshot carries. `lifecycle` events change no session: they only reach clients.
    ///
    /// Seqs are `u64`: after seq `u64::MAX` (only a producer that brings its own seqs gets
    /// there), a seq-0 event is numbered 1, which is a producer restart like any seq that does
    /// not rise (see [`Publisher`]): clients get a fresh snapshot, and numbering goes on.
    ///
    /// After [`stop`](Publisher::stop), events still update the state
    /// ([`sessions`](Publisher::sessions)) but reach no client.
    ///
    /// # Errors
    /// [`SinkError::Encode`] when the event cannot be encoded as Go's `encoding/json` would (a
    /// non-finite `contextUtilization`, a year outside 0..=9999): no client receives it, but
    /// its seq is used and its sessions are in the state, so the next event still rises.
    pub fn publish(&self, mut event: Event) -> Result<u64, SinkError> {
        let mut last_seq = self.lock();
        if event.seq == 0 {
            // Past u64::MAX numbering starts again at 1: a restart, as documented.
            event.seq = last_seq.checked_add(1).unwrap_or(1);
        }
        *last_seq = event.seq;
        deliver(&self.inner.store, &self.inner.hub, &event)?;
        Ok(event.seq)
    }

    /// Installs where a client resuming from before the replay window finds the events it
    /// missed (the broker follower's stream).
    #[cfg(any(feature = "redis", feature = "nats"))]
    pub(crate) fn set_backfill(&self, backfill: Arc<dyn crate::hub::Backfill>) {
        self.inner.hub.set_backfill(backfill);
    }

    /// The seq of the last event published (0 before the first).
    pub fn seq(&self) -> u64 {
        *self.lock()
    }

    /// A copy of the session `id` as of the last event published, if it exists.
    pub fn session(&self, id: &str) -> Option<SessionState> {
        self.inner.store.get(id)
    }

    /// A copy of every session as of the last event published, sorted by id (byte order), so
    /// two calls over the same state return the same list.
    pub fn sessions(&self) -> Vec<SessionState> {
        self.inner.store.sessions_by_id()
    }

    /// A point-in-time copy of the endpoint's counters.
    pub fn stats(&self) -> HubStats {
        self.inner.hub.stats()
    }

    /// The number of clients being served right now: upgraded, and not yet closing. A
    /// connection that is saying goodbye (close frame, grace period) still counts in
    /// [`HubStats::connection_tasks`] until its task ends.
    pub fn client_count(&self) -> usize {
        self.inner.hub.client_count()
    }

    /// Stops the endpoint gracefully: every connected client is closed with code 1001 ("going
    /// away") and every later upgrade request is answered `503 Service Unavailable`
    /// ([`RejectReason::Stopped`](crate::RejectReason::Stopped)). Idempotent; there is no
    /// restart. Wait for the connections to end with [`closed`](Publisher::closed).
    pub fn stop(&self) {
        self.inner.hub.stop();
    }

    /// Whether [`stop`](Publisher::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.hub.is_stopped()
    }

    /// Resolves once every connection task has ended: after [`stop`](Publisher::stop), once
    /// every client has been closed with 1001 and its task is gone
    /// ([`HubStats::connection_tasks`] is 0); at once when no connection is open.
    ///
    /// It waits for tasks, not for the stop: awaited before `stop()`, it resolves the moment
    /// no client happens to be connected. A connection counts from the moment its `101` is
    /// sent, so awaiting this after the server's graceful shutdown has returned (which waits
    /// for every HTTP connection, hence every `101`) misses none. No polling: the last task
    /// to end wakes it. Cancel-safe; any number of callers may wait.
    ///
    /// ```no_run
    /// # async fn demo(publisher: agentwatch_ws::Publisher) {
    /// publisher.stop();
    /// tokio::time::timeout(std::time::Duration::from_secs(5), publisher.closed()).await.ok();
    /// # }
    /// ```
    pub async fn closed(&self) {
        self.inner.hub.closed().await;
    }

    /// The HTTP API over this publisher's state, with no admission check at all: for an
    /// internal listener (a health check, a status bar on the same host). To serve it behind
    /// the WebSocket's admission, use [`WsLayer::http_api`](crate::WsLayer::http_api) instead.
    ///
    /// Routes, each `GET` (and `HEAD`; any other method is `405 Method Not Allowed` with
    /// `Allow: GET,HEAD`), each answering JSON in the bytes agentwatch's Go `transport/httpapi`
    /// writes (Go's `encoding/json`, then a newline), `Content-Type: application/json`:
    ///
    /// | route | `200` body |
    /// |---|---|
    /// | `/sessions` | every session, sorted by id (byte order): `[{"id":..},..]`, `[]` when none |
    /// | `/sessions/{id}` | that session; `404` with `{"error":"session not found"}` when absent |
    /// | `/healthz` | `{"status":"healthy","sources":[..]}`: the worst status among the sources' latest `health` reports (`failed` > `degraded` > `healthy`; `healthy` before any report) and every report, one per source (per [`machine`](crate::Health::machine) and source where a broker node serves several producers); `200` whatever the status (as Go), `503` with the same body once [`stop`](Publisher::stop) was called, so a load balancer drains a node that is shutting down |
    /// | `/sources` | `{"sources":["claude",..]}`: the source of each latest health report, in the order each first reported; when any report has a `machine`, `"machines":["laptop",..]` follows, each report's machine at the same index (`""` for none), a key Go's clients ignore |
    ///
    /// Answers are redacted by the router's default [privacy policy](crate::privacy) (the
    /// one [`WsLayer::policy_for`](crate::WsLayer::policy_for) chooses for an anonymous
    /// viewer, else [`WsLayer::policy`](crate::WsLayer::policy)): these routes authenticate
    /// nobody.
    ///
    /// Every answer carries `Cache-Control: no-store`. A `200` carries an `ETag` that changes
    /// with every event published (opaque; different for every router, so it never matches
    /// across restarts); a request whose `If-None-Match` names it (or is `*`) gets
    /// `304 Not Modified` with no body. State that Go would refuse to encode (a non-finite
    /// `contextUtilization`) is a `500` with `{"error":"..."}` and an `error` tracing event.
    ///
    /// ```
    /// use agentwatch_ws::WsLayer;
    /// use axum::Router;
    ///
    /// let (ws, publisher) = WsLayer::new().build("/ws");
    /// let _public: Router = Router::new().merge(ws);
    /// // Served on another listener, e.g. 127.0.0.1:9090:
    /// //   curl -s http://127.0.0.1:9090/api/healthz
    /// //   {"status":"healthy","sources":[]}
    /// let _internal: Router = Router::new().nest("/api", publisher.http_api());
    /// ```
    pub fn http_api<S>(&self) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        crate::http_api::routes::<S, crate::Anonymous>(self.clone())
    }

    /// The fan-out this publisher feeds.
    pub(crate) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The store this publisher feeds.
    pub(crate) fn store(&self) -> &SessionStore {
        &self.inner.store
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // Only a u64 is guarded, consistent after every statement.
        self.inner
            .last_seq
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands `event` to `store`, then to `hub`: the order the hand-over needs (a client that
/// subscribed to the hub before its snapshot must find in the snapshot every event the hub
/// did not queue for it).
fn deliver<St: EventSink + ?Sized>(store: &St, hub: &Hub, event: &Event) -> Result<(), SinkError> {
    store.handle_event(event)?;
    hub.publish(event)
}

impl EventSink for Publisher {
    /// [`publish`](Publisher::publish)es a copy of `event` when its seq is 0 (to number it),
    /// the event itself otherwise.
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        if event.seq == 0 {
            return self.publish(event.clone()).map(drop);
        }
        let mut last_seq = self.lock();
        *last_seq = event.seq;
        deliver(&self.inner.store, &self.inner.hub, event)
    }
}

#[cfg(test)]
mod tests {
    // unwrap() here asserts on values the test built itself.
    use super::*;
    use crate::privacy::Privacy;

    /// A store that notes, for each event it handles, how many events the hub had already
    /// published: with store-then-hub order that is always the number of events before it.
    struct Witness {
        hub: Hub,
        seen: Mutex<Vec<(u64, u64)>>,
    }

    impl EventSink for Witness {
        fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
            let published = self.hub.stats().events_published;
            self.seen.lock().unwrap().push((event.seq, published));
            Ok(())
        }
    }

    #[test]
    fn every_event_reaches_the_store_before_the_hub() {
        let hub = Hub::new(64, 16, 1 << 20, Arc::new(Privacy::off()));
        let witness = Witness {
            hub: hub.clone(),
            seen: Mutex::new(Vec::new()),
        };
        for seq in 1..=20 {
            deliver(&witness, &hub, &Event::delta(seq, vec![], vec![])).unwrap();
        }
        let seen = witness.seen.lock().unwrap().clone();
        let expected: Vec<(u64, u64)> = (1..=20).map(|seq| (seq, seq - 1)).collect();
        assert_eq!(
            seen, expected,
            "(seq, events the hub had published when the store got it)"
        );
    }

    #[test]
    fn seqs_are_assigned_when_missing_and_kept_when_given() {
        let publisher = Publisher::new(
            SessionStore::new(),
            Hub::new(64, 16, 1 << 20, Arc::new(Privacy::off())),
        );
        let seqs: Vec<u64> = [0, 0, 10, 0, 5, 0]
            .into_iter()
            .map(|seq| {
                publisher
                    .publish(Event::delta(seq, vec![], vec![]))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            seqs,
            [1, 2, 10, 11, 5, 6],
            "a seq that goes back restarts numbering"
        );
        assert_eq!(publisher.seq(), 6);
        assert_eq!(publisher.store().seq(), 6);
        assert_eq!(publisher.stats().replay_resets, 1);

        // A publisher over a store that already holds events continues after them.
        let again = Publisher::new(publisher.store().clone(), publisher.hub().clone());
        assert_eq!(again.publish(Event::delta(0, vec![], vec![])).unwrap(), 7);
        // As an EventSink: a given seq is kept, 0 is numbered.
        again
            .handle_event(&Event::delta(20, vec![], vec![]))
            .unwrap();
        again
            .handle_event(&Event::delta(0, vec![], vec![]))
            .unwrap();
        assert_eq!(again.seq(), 21);
    }
}
