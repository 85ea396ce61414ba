//! The snapshot cache over real sockets: clients connecting at the same
//! store state share one encoded snapshot, any event in between (even a `health` report
//! reusing the last event's seq and `at`) makes a new one, and every client still rebuilds
//! exactly the store's state.

use crate::common;

use std::collections::HashMap;

use agentwatch_ws::{
    Event, EventSink, EventType, Health, HealthStatus, Publisher, SessionState, WsLayer,
};
use axum::Router;
use common::*;

fn session(id: &str, messages: i64) -> SessionState {
    SessionState {
        id: id.into(),
        message_count: messages,
        model: "claude-opus-4-1".into(),
        ..Default::default()
    }
}

fn health(source: &str, status: HealthStatus) -> Health {
    Health {
        source: source.into(),
        status,
        ..Default::default()
    }
}

fn publish(hub: &Publisher, event: &Event) {
    hub.handle_event(event).unwrap();
}

async fn start() -> (Publisher, std::net::SocketAddr) {
    let ws = WsLayer::new().rate_limit(None);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    (hub, addr)
}

/// A client's view after its snapshot and the health reports that follow it.
struct View {
    client: Client,
    rebuilt: Rebuilt,
    health: Vec<Health>,
}

/// Connects and reads the snapshot plus `health_count` health events.
async fn connect_and_rebuild(addr: std::net::SocketAddr, health_count: usize) -> View {
    let mut client = connect(addr).await;
    let mut rebuilt = Rebuilt::default();
    let snapshot = next_event(&mut client).await;
    assert_eq!(snapshot.kind, EventType::Snapshot);
    rebuilt.apply(snapshot).unwrap();
    let mut health = Vec::new();
    for _ in 0..health_count {
        let event = next_event(&mut client).await;
        assert_eq!(event.kind, EventType::Health);
        assert_eq!(
            event.seq, rebuilt.seq,
            "a snapshot's health carries its seq"
        );
        health.push(event.health.clone().unwrap());
        rebuilt.apply(event).unwrap();
    }
    View {
        client,
        rebuilt,
        health,
    }
}

fn store_sessions(hub: &Publisher) -> HashMap<String, SessionState> {
    hub.sessions()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect()
}

#[tokio::test]
async fn clients_at_the_same_state_share_one_encoding_and_rebuild_it_exactly() {
    let (hub, addr) = start().await;
    for seq in 1..=40 {
        publish(
            &hub,
            &Event::delta(
                seq,
                vec![session(&format!("s{}", seq % 25), seq as i64)],
                vec![],
            ),
        );
    }
    publish(
        &hub,
        &Event::health(41, health("claude", HealthStatus::Healthy)),
    );
    let before = hub.stats();

    // 50 clients at once: one encoding of the snapshot and one of its health report.
    let views = within(
        "50 connects",
        futures_util::future::join_all((0..50).map(|_| connect_and_rebuild(addr, 1))),
    )
    .await;
    let after = hub.stats();
    assert_eq!(
        after.encodings - before.encodings,
        2,
        "snapshot + health, once"
    );
    assert_eq!(after.snapshots - before.snapshots, 50);
    for view in &views {
        assert_eq!(view.rebuilt.seq, 41);
        assert_eq!(view.rebuilt.sessions, store_sessions(&hub));
        assert_eq!(view.health, vec![health("claude", HealthStatus::Healthy)]);
    }

    // A publish in between: one more encoding for the event, one for the new snapshot
    // (two frames: snapshot and health), whatever the number of clients connecting then.
    publish(
        &hub,
        &Event::delta(42, vec![session("new", 1)], vec!["s1".into()]),
    );
    let before = hub.stats();
    let late = within(
        "5 more connects",
        futures_util::future::join_all((0..5).map(|_| connect_and_rebuild(addr, 1))),
    )
    .await;
    assert_eq!(hub.stats().encodings - before.encodings, 2);
    for view in &late {
        assert_eq!(view.rebuilt.seq, 42);
        assert_eq!(view.rebuilt.sessions, store_sessions(&hub));
    }
    // The early clients got the delta live and agree with the store too.
    for mut view in views {
        let event = next_event(&mut view.client).await;
        view.rebuilt.apply(event).unwrap();
        assert_eq!(view.rebuilt.sessions, store_sessions(&hub));
    }
}

#[tokio::test]
async fn a_health_report_at_the_same_position_is_not_served_stale() {
    let (hub, addr) = start().await;
    let snapshot = Event::snapshot(7, vec![session("a", 1)]);
    publish(&hub, &snapshot);
    let first = connect_and_rebuild(addr, 0).await;
    assert!(first.health.is_empty());

    // A health report continuing the snapshot: the same seq and at, a different state.
    let mut report = Event::health(7, health("codex", HealthStatus::Degraded));
    report.at = snapshot.at;
    publish(&hub, &report);
    let before = hub.stats().encodings;
    let second = connect_and_rebuild(addr, 1).await;
    assert_eq!(second.rebuilt.seq, 7);
    assert_eq!(second.health, vec![health("codex", HealthStatus::Degraded)]);
    assert_eq!(
        hub.stats().encodings - before,
        2,
        "rebuilt, not the cached one"
    );
}
