//! The hub's counters through the `metrics` facade: exact values in Prometheus text after
//! real connections, and the `metrics` example serving them over HTTP.

// unwrap()/expect() here are test assertions on values the test built.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use agentwatch_ws::{Event, EventSink, WsLayer};
use axum::Router;
use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the sample `series` (name plus labels, as rendered) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

#[tokio::test]
async fn prometheus_text_carries_the_hubs_exact_counters() {
    let ws = WsLayer::new().rate_limit(None);
    let (ws_router, hub) = ws.clone().build("/ws");
    let monitor = hub.clone();
    let addr = serve(Router::new().merge(ws_router)).await;

    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    for client in [&mut a, &mut b] {
        next_event(client).await; // the snapshot
    }
    for seq in 1..=3 {
        monitor
            .handle_event(&Event::delta(seq, vec![], vec![]))
            .unwrap();
    }
    for client in [&mut a, &mut b] {
        for _ in 1..=3 {
            next_event(client).await;
        }
    }
    // A plain GET: rejected before any upgrade, with reason not_upgrade.
    let (status, _, _) = http_get(addr, "/ws", &[]).await;
    assert_eq!(status, 426);
    eventually("both clients' deliveries counted", || {
        hub.stats().events_sent == 8
    })
    .await;

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        agentwatch_ws::metrics::describe();
        agentwatch_ws::metrics::record(&hub);
    });
    let text = handle.render();
    let expect = [
        ("agentwatch_ws_clients", 2.0),
        ("agentwatch_ws_connections_accepted_total", 2.0),
        ("agentwatch_ws_connections_closed_total", 0.0),
        ("agentwatch_ws_events_published_total", 3.0),
        ("agentwatch_ws_snapshots_total", 2.0),
        // Three events, and one snapshot shared by both clients (same store state).
        ("agentwatch_ws_encodings_total", 4.0),
        ("agentwatch_ws_inbound_floods_total", 0.0),
        ("agentwatch_ws_protocol_errors_total", 0.0),
        ("agentwatch_ws_messages_sent_total", 8.0),
        ("agentwatch_ws_replay_window_events", 3.0),
        (
            "agentwatch_ws_rejections_total{reason=\"not_upgrade\"}",
            1.0,
        ),
        (
            "agentwatch_ws_rejections_total{reason=\"rate_limited\"}",
            0.0,
        ),
        ("agentwatch_ws_evictions_total{cause=\"lagging\"}", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    let bytes = sample(&text, "agentwatch_ws_sent_bytes_total").expect("bytes sent");
    assert_eq!(bytes, hub.stats().bytes_sent as f64);
    assert!(
        text.contains("# HELP agentwatch_ws_clients"),
        "descriptions are exported:\n{text}"
    );

    // The same counters as JSON, for an app's own status endpoint.
    let json = serde_json::to_value(hub.stats()).unwrap();
    assert_eq!(json["connected"], 2);
    assert_eq!(json["events_sent"], 8);
    assert_eq!(json["rejected"]["not_upgrade"], 1);
}

/// Kills the child when dropped, also when the test panics.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_example_serves_the_crates_counters() {
    let binary = tokio::task::spawn_blocking(|| example_binary("metrics"))
        .await
        .unwrap();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Child(
        Command::new(binary)
            .args(["--port", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the metrics example"),
    );
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    within("the example listens", async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let mut client = connect(addr).await;
    next_event(&mut client).await;
    let (status, head, body) = http_get(addr, "/metrics", &[]).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(sample(&body, "agentwatch_ws_clients"), Some(1.0), "{body}");
    assert_eq!(
        sample(&body, "agentwatch_ws_connections_accepted_total"),
        Some(1.0),
        "{body}"
    );
    assert!(
        sample(&body, "agentwatch_ws_events_published_total").is_some(),
        "{body}"
    );
}
