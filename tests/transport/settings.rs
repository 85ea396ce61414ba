//! Every `WsLayer` setting at its extremes, over real sockets: the router builds, clients are
//! served, and nothing panics. Values above a documented maximum are lowered to it; values
//! below the smallest meaningful one (zero) are raised to it and end connections the
//! documented way.

use crate::common;

use agentwatch_ws::RateLimitPolicy;
use std::future::IntoFuture;
use std::time::Duration;

use agentwatch_ws::{Event, EventSink, EventType, SessionState, TrustedProxies, WsLayer};
use axum::Router;
use common::*;

fn session(id: &str) -> SessionState {
    SessionState {
        id: id.into(),
        source: "codex".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_setting_at_its_maximum_serves_clients() {
    let ws = WsLayer::new()
        .send_buffer(usize::MAX)
        .heartbeat(Duration::MAX)
        .write_timeout(Duration::MAX)
        .max_message_size(usize::MAX)
        .replay_window(usize::MAX)
        .replay_window_bytes(usize::MAX)
        .max_connections(usize::MAX)
        .rate_limit(RateLimitPolicy::per(Duration::MAX).burst(u32::MAX))
        .trusted_proxies(TrustedProxies::new(["0.0.0.0/0", "::/0"]).unwrap());
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;

    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    // A message above the 4 KiB default is accepted: the clamped limit is 64 MiB.
    send_text(&mut client, &"x".repeat(64 * 1024)).await;
    for seq in 1..=3 {
        let event = Event::delta(seq, vec![session(&format!("s{seq}"))], vec![]);
        hub.handle_event(&event).unwrap();
    }
    for seq in 1..=3 {
        assert_eq!(next_event(&mut client).await.seq, seq);
    }
    // The replay window works at its clamped size: a resume from seq 1 gets 2 and 3 only.
    let (mut resumed, _) = within(
        "resume handshake",
        tokio_tungstenite::connect_async(format!("{}?since=1", ws_url(addr))),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut resumed).await.seq, 2);
    assert_eq!(next_event(&mut resumed).await.seq, 3);
    assert_eq!(hub.stats().resumed, 1);
    // The documented maxima: 1 048 576 events, 1 GiB.
    assert!(hub.stats().replay_events <= 1 << 20);
    assert!(hub.stats().replay_bytes <= 1 << 30);
    close_and_expect_reply(client).await;
    close_and_expect_reply(resumed).await;
}

/// Every setting at zero is raised to its smallest meaningful value: a client that reads
/// (and so answers pings) is served through many heartbeats, and gets its events.
#[tokio::test]
async fn the_smallest_settings_serve_a_reading_client() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let ws = WsLayer::new()
        .send_buffer(0)
        .heartbeat(Duration::ZERO)
        .write_timeout(Duration::ZERO)
        .max_message_size(0)
        .replay_window(0)
        .replay_window_bytes(0)
        .max_connections(0)
        .rate_limit(RateLimitPolicy::per(Duration::ZERO).burst(0));
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;

    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    // Five pings, each answered (tungstenite replies as it reads): the connection lives on.
    let mut pings = 0;
    while pings < 5 {
        match within("a ping", client.next()).await {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    hub.handle_event(&Event::delta(1, vec![], vec![])).unwrap();
    assert_eq!(next_event(&mut client).await.seq, 1);
    let stats = hub.stats();
    assert_eq!(hub.client_count(), 1, "{stats:?}");
    assert_eq!(
        stats.heartbeat_timeouts + stats.evicted_write_timeout,
        0,
        "{stats:?}"
    );
    close_and_expect_reply(client).await;
}

#[tokio::test]
async fn a_rate_limit_window_of_duration_max_answers_429_with_a_saturated_retry_after() {
    let ws = WsLayer::new().rate_limit(RateLimitPolicy::per(Duration::MAX));
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let (status, head, _) = http_get(addr, "/ws", &upgrade_headers(&[])).await;
    assert_eq!(status, 429, "{head}");
    let retry_after = head
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .unwrap_or_else(|| panic!("no Retry-After in {head}"));
    assert_eq!(retry_after, u64::MAX.to_string());
    assert_eq!(hub.stats().rejected.rate_limited, 1);
    // The status endpoint says the same wait, not `null`.
    let (status, head, body) = http_get(addr, "/ws/status", &[]).await;
    assert_eq!(status, 200, "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["lastRejection"]["reason"], "rate_limited", "{body}");
    assert_eq!(
        body["lastRejection"]["retryAfter"].as_u64(),
        Some(u64::MAX),
        "{body}"
    );
    close_and_expect_reply(client).await;
}

#[tokio::test]
async fn serve_with_the_longest_header_read_timeout_serves_clients() {
    let ws = WsLayer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = agentwatch_ws::serve(listener, Router::new().merge(ws.clone().build("/ws").0))
        .header_read_timeout(Duration::ZERO);
    // Zero is raised to the smallest deadline (1 ms), the longest lowered to one hour.
    assert!(
        format!("{server:?}").contains("header_read_timeout: 1ms"),
        "{server:?}"
    );
    let server = server.header_read_timeout(Duration::MAX);
    assert!(
        format!("{server:?}").contains("header_read_timeout: 3600s"),
        "{server:?}"
    );
    tokio::spawn(server.into_future());
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    close_and_expect_reply(client).await;
}

/// `heartbeat(None)` is the one way to turn pings off; `Duration::ZERO` is raised to the
/// smallest interval (1 ns), never read as "off".
#[tokio::test]
async fn no_heartbeat_sends_no_pings_and_a_zero_heartbeat_is_the_smallest() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let quiet = WsLayer::new().rate_limit(None).heartbeat(None);
    let (router, hub) = quiet.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    // Under a 100 ms heartbeat a ping would come within this window; none may come here.
    let quiet_window = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(quiet_window.is_err(), "a message arrived: {quiet_window:?}");
    assert_eq!(hub.client_count(), 1);
    assert_eq!(hub.stats().heartbeat_timeouts, 0);
    close_and_expect_reply(client).await;

    let pinging = WsLayer::new()
        .rate_limit(None)
        .heartbeat(Duration::from_millis(100));
    let addr = serve(Router::new().merge(pinging.clone().build("/ws").0)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let ping = within("a ping", client.next()).await;
    assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "{ping:?}");

    // Zero is raised to 100 ms: pings come, the client answers them, and it stays.
    let zero = WsLayer::new().rate_limit(None).heartbeat(Duration::ZERO);
    let (router, hub) = zero.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    for _ in 0..3 {
        let ping = within("a ping", client.next()).await;
        assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "{ping:?}");
    }
    assert_eq!(hub.client_count(), 1);
    assert_eq!(hub.stats().heartbeat_timeouts, 0);
    close_and_expect_reply(client).await;
}
