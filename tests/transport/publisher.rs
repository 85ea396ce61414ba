//! `Publisher`: one event at a time, seqs that rise, and every client's stream gapless after
//! its snapshot however publishes and connects interleave. (Store-before-hub order is a unit
//! test in `src/publisher.rs`: the store is private.)

// unwrap()/expect() here are test assertions on values the test built.

use crate::common;

use std::time::Duration;

use agentwatch_ws::{Event, EventSink, SessionState, WsLayer};
use axum::Router;
use common::*;

fn session(id: &str) -> SessionState {
    SessionState {
        id: id.into(),
        source: "claude".into(),
        ..Default::default()
    }
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
