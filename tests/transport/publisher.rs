//! `Publisher`: one event at a time, seqs that rise, and every client's stream gapless after
//! its snapshot however publishes and connects interleave. (Store-before-hub order is a unit
//! test in `src/publisher.rs`: the store is private.)

// unwrap()/expect() here are test assertions on values the test built.

use crate::common;

use std::time::Duration;

use agentwatch_ws::{Event, EventSink, EventType, SessionState, WsLayer};
use axum::Router;
use common::*;

fn session(id: &str) -> SessionState {
    SessionState {
        id: id.into(),
        source: "claude".into(),
        ..Default::default()
    }
}

/// Past seq `u64::MAX` numbering starts again at 1, a producer restart: a connected client
/// gets a fresh snapshot, and later events rise again instead of sticking at `u64::MAX`.
#[tokio::test]
async fn numbering_past_u64_max_restarts_at_1_with_a_snapshot() {
    let (router, publisher) = WsLayer::new().rate_limit(None).build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    publisher
        .publish(Event::delta(u64::MAX, vec![session("a")], vec![]))
        .unwrap();
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!(
        (snapshot.kind, snapshot.seq),
        (EventType::Snapshot, u64::MAX)
    );
    eventually("client registered", || publisher.client_count() == 1).await;

    let next = publisher.publish(Event::delta(0, vec![session("b")], vec![]));
    assert_eq!(next.unwrap(), 1);
    assert_eq!(
        publisher.publish(Event::delta(0, vec![], vec![])).unwrap(),
        2
    );
    let resent = next_event(&mut client).await;
    assert_eq!(resent.kind, EventType::Snapshot, "{resent:?}");
    assert_eq!(resent.sessions.len(), 2);
    if resent.seq == 1 {
        assert_eq!(next_event(&mut client).await.seq, 2);
    }
}

/// Publishing a `snapshot` replaces the state: sessions it does not list are gone, for the
/// publisher and for connected clients alike.
#[tokio::test]
async fn a_published_snapshot_replaces_the_state() {
    let (router, publisher) = WsLayer::new().rate_limit(None).build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    publisher
        .publish(Event::delta(0, vec![session("a"), session("b")], vec![]))
        .unwrap();
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.sessions.len(), 2);
    eventually("client registered", || publisher.client_count() == 1).await;
    publisher
        .publish(Event::snapshot(0, vec![session("c")]))
        .unwrap();
    let ids: Vec<String> = publisher.sessions().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["c"]);
    let event = next_event(&mut client).await;
    assert_eq!((event.kind, event.seq), (EventType::Snapshot, 2));
    assert_eq!(event.sessions, vec![session("c")]);
}

#[test]
fn seqs_are_numbered_and_the_state_is_readable_sorted_by_id() {
    let (_router, publisher) = WsLayer::new().build::<()>("/ws");
    assert_eq!(publisher.seq(), 0);
    for id in ["m", "z", "a"] {
        publisher
            .publish(Event::delta(0, vec![session(id)], vec![]))
            .unwrap();
    }
    assert_eq!(publisher.seq(), 3);
    let ids: Vec<String> = publisher.sessions().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["a", "m", "z"], "sorted by id, not by arrival");
    assert_eq!(
        publisher.session("z").map(|s| s.source),
        Some("claude".into())
    );
    assert_eq!(publisher.session("nope"), None);
    // A seq that goes back: a producer restart; numbering continues from it.
    assert_eq!(
        publisher
            .publish(Event::delta(1, vec![], vec!["z".into()]))
            .unwrap(),
        1
    );
    assert_eq!(
        publisher.publish(Event::delta(0, vec![], vec![])).unwrap(),
        2
    );
    assert_eq!(publisher.stats().replay_resets, 1);
    assert_eq!(publisher.sessions().len(), 2);
    // Clones publish into the same endpoint.
    let clone = publisher.clone();
    clone
        .handle_event(&Event::delta(0, vec![], vec![]))
        .unwrap();
    assert_eq!(publisher.seq(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_connecting_clients_see_one_gapless_order() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 250;
    // The clients read only once every event is out: room for all of them.
    let ws = WsLayer::new()
        .rate_limit(None)
        .send_buffer(2 * (THREADS * PER_THREAD) as usize);
    let (ws_router, publisher) = ws.build("/ws");
    let addr = serve(Router::new().merge(ws_router)).await;

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
    assert_eq!(publisher.seq(), total);
    for client in std::iter::once(&mut first).chain(late.iter_mut()) {
        let mut rebuilt = Rebuilt::default();
        while rebuilt.seq < total {
            rebuilt.apply(next_event(client).await).unwrap();
        }
        assert_eq!(rebuilt.snapshots, 1);
        let expected: std::collections::HashMap<_, _> = publisher
            .sessions()
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        assert_eq!(rebuilt.sessions, expected);
    }
}
