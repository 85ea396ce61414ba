//! Source health right after connect: every snapshot is followed by one `health` event per
//! source the store knows, carrying the snapshot's seq, so a page shows each source's status
//! from its first paint, and a client's last seq never goes backwards.

// unwrap()/expect() here are test assertions on values the test built.

use crate::common;

use agentwatch_ws::{
    Event, EventSink, EventType, Health, HealthStatus, SessionState, Timestamp, WsLayer,
};
use axum::Router;
use common::*;

fn health(source: &str, status: HealthStatus) -> Health {
    Health {
        source: source.into(),
        status,
        updated_at: Timestamp::now(),
        ..Default::default()
    }
}

fn session(id: &str) -> SessionState {
    SessionState {
        id: id.into(),
        source: "claude".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_new_client_gets_every_sources_latest_health_after_its_snapshot() {
    let ws = WsLayer::new().rate_limit(None);
    let (ws_router, hub) = ws.clone().build("/ws");
    let monitor = hub.clone();
    let addr = serve(Router::new().merge(ws_router)).await;

    // Three sources report; one of them changes again later. A delta in between.
    monitor
        .handle_event(&Event::health(1, health("claude", HealthStatus::Healthy)))
        .unwrap();
    monitor
        .handle_event(&Event::health(2, health("codex", HealthStatus::Healthy)))
        .unwrap();
    monitor
        .handle_event(&Event::delta(3, vec![session("a")], vec![]))
        .unwrap();
    monitor
        .handle_event(&Event::health(4, health("gemini", HealthStatus::Failed)))
        .unwrap();
    monitor
        .handle_event(&Event::health(5, health("codex", HealthStatus::Degraded)))
        .unwrap();

    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!((snapshot.kind, snapshot.seq), (EventType::Snapshot, 5));
    assert_eq!(snapshot.sessions.len(), 1);
    let mut reports = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut client).await;
        assert_eq!(event.kind, EventType::Health);
        assert_eq!(event.seq, snapshot.seq, "a report belongs to the snapshot");
        assert_eq!(event.at, snapshot.at, "a report carries the snapshot's at");
        let report = event.health.expect("a health event carries its health");
        reports.push((report.source, report.status));
    }
    assert_eq!(
        reports,
        [
            ("claude".to_owned(), HealthStatus::Healthy),
            ("codex".to_owned(), HealthStatus::Degraded),
            ("gemini".to_owned(), HealthStatus::Failed),
        ],
        "each source once, its latest report, in the order sources first reported"
    );

    // The live stream follows with the next seq: nothing repeated, nothing skipped.
    monitor
        .handle_event(&Event::health(6, health("gemini", HealthStatus::Healthy)))
        .unwrap();
    let next = next_event(&mut client).await;
    assert_eq!((next.kind, next.seq), (EventType::Health, 6));

    // A client that resumes from the snapshot's seq already has the reports: it gets only
    // what it missed.
    let url = format!("ws://{addr}/ws?since=5");
    let (mut resumed, _) = within("handshake", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    let missed = next_event(&mut resumed).await;
    assert_eq!((missed.kind, missed.seq), (EventType::Health, 6));
}

#[tokio::test]
async fn no_report_follows_the_snapshot_when_no_source_has_reported() {
    let ws = WsLayer::new().rate_limit(None);
    let (ws_router, hub) = ws.clone().build("/ws");
    let monitor = hub.clone();
    let addr = serve(Router::new().merge(ws_router)).await;
    monitor
        .handle_event(&Event::delta(1, vec![session("a")], vec![]))
        .unwrap();

    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!((snapshot.kind, snapshot.seq), (EventType::Snapshot, 1));
    monitor
        .handle_event(&Event::delta(2, vec![], vec!["a".into()]))
        .unwrap();
    let next = next_event(&mut client).await;
    assert_eq!((next.kind, next.seq), (EventType::Delta, 2));
}

#[tokio::test]
async fn reports_published_after_a_snapshot_at_its_position_are_no_restart() {
    let ws = WsLayer::new().rate_limit(None);
    let (ws_router, hub) = ws.clone().build("/ws");
    let monitor = hub.clone();
    let addr = serve(Router::new().merge(ws_router)).await;
    monitor
        .handle_event(&Event::delta(1, vec![session("a")], vec![]))
        .unwrap();
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);

    // A node rebuilding its state publishes a snapshot, then each source's report with the
    // snapshot's seq and at (as a connecting client gets them).
    let snapshot = Event::snapshot(2, vec![session("b")]);
    let mut report = Event::health(2, health("claude", HealthStatus::Healthy));
    report.at = snapshot.at;
    monitor.handle_event(&snapshot).unwrap();
    monitor.handle_event(&report).unwrap();
    assert_eq!(hub.stats().replay_resets, 0, "no restart");
    let got = next_event(&mut client).await;
    assert_eq!((got.kind, got.seq), (EventType::Snapshot, 2));
    let got = next_event(&mut client).await;
    assert_eq!((got.kind, got.seq), (EventType::Health, 2));

    // The same seq with another at is a restart, as before.
    monitor
        .handle_event(&Event::health(2, health("codex", HealthStatus::Healthy)))
        .unwrap();
    assert_eq!(hub.stats().replay_resets, 1);
}
