//! `Publisher`: store before hub for every event, one event at a time, seqs that rise.

// unwrap()/expect() here are test assertions on values the test built.

use crate::common;

use agentwatch_ws::RateLimit;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agentwatch_ws::{
    Event, EventSink, Hub, Publisher, SessionState, SessionStore, SinkError, Snapshot,
    SnapshotSource, WsLayer,
};
use axum::Router;
use common::*;

/// A store that notes, for each event it handles, how many events the hub had already
/// published: with store-then-hub order that is always the number of events before it.
#[derive(Clone, Default)]
struct Witness {
    store: SessionStore,
    hub: Arc<OnceLock<Hub>>,
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl EventSink for Witness {
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        let published = self.hub.get().expect("hub set").stats().events_published;
        self.seen.lock().unwrap().push((event.seq, published));
        self.store.handle_event(event)
    }
}

impl SnapshotSource for Witness {
    fn snapshot(&self) -> Snapshot {
        self.store.snapshot()
    }
}

fn session(id: &str) -> SessionState {
    SessionState {
        id: id.into(),
        source: "claude".into(),
        ..Default::default()
    }
}

#[test]
fn every_event_reaches_the_store_before_the_hub() {
    let witness = Witness::default();
    let ws = WsLayer::new(witness.clone());
    witness.hub.set(ws.hub()).ok().unwrap();
    let publisher = Publisher::new(witness.clone(), ws.hub());
    for i in 0..20 {
        publisher
            .publish(Event::delta(0, vec![session(&format!("s{i}"))], vec![]))
            .unwrap();
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
    let store = SessionStore::new();
    let ws = WsLayer::new(store.clone());
    let publisher = Publisher::new(store.clone(), ws.hub());
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
    assert_eq!(publisher.last_seq(), 6);
    assert_eq!(store.seq(), 6);
    assert_eq!(ws.hub().stats().replay_resets, 1);

    // A publisher over a store that already holds events continues after them.
    let again = Publisher::new(store.clone(), ws.hub());
    assert_eq!(again.publish(Event::delta(0, vec![], vec![])).unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_connecting_clients_see_one_gapless_order() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 250;
    let store = SessionStore::new();
    // The clients read only once every event is out: room for all of them.
    let ws = WsLayer::new(store.clone())
        .rate_limit(RateLimit::disabled())
        .send_buffer(NonZeroUsize::new(2 * (THREADS * PER_THREAD) as usize).unwrap());
    let publisher = Arc::new(Publisher::new(store.clone(), ws.hub()));
    let addr = serve(Router::new().merge(ws.router("/ws"))).await;

    let mut first = connect(addr).await;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let publisher = publisher.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let id = format!("t{t}-{}", i % 5);
                    publisher
                        .publish(Event::delta(0, vec![session(&id)], vec![]))
                        .unwrap();
                }
            })
        })
        .collect();
    // Clients connecting while the threads publish: each must see a gapless stream after
    // its snapshot, whatever the interleaving.
    let mut late = Vec::new();
    for _ in 0..5 {
        late.push(connect(addr).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let total = THREADS * PER_THREAD;
    assert_eq!(publisher.last_seq(), total);
    for client in std::iter::once(&mut first).chain(late.iter_mut()) {
        let mut rebuilt = Rebuilt::default();
        while rebuilt.seq < total {
            rebuilt.apply(next_event(client).await).unwrap();
        }
        assert_eq!(rebuilt.snapshots, 1);
        let expected: std::collections::HashMap<_, _> = store
            .snapshot()
            .sessions
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        assert_eq!(rebuilt.sessions, expected);
    }
}
