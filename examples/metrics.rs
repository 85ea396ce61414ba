//! The endpoint's counters in Prometheus text, through the `metrics` facade and
//! `metrics-exporter-prometheus`.
//!
//! ```sh
//! cargo run --example metrics                     # http://127.0.0.1:3003/metrics
//! cargo run --example metrics -- --port 9100
//! curl -s http://127.0.0.1:3003/metrics | grep agentwatch_ws_
//! ```
//!
//! The WebSocket endpoint is at `/ws` and carries one simulated session that keeps working;
//! connect a client or two and watch `agentwatch_ws_clients` and
//! `agentwatch_ws_messages_sent_total` move. Each scrape first copies the endpoint's counters
//! into the recorder ([`agentwatch_ws::metrics::record`]), so what it shows is exact at that
//! moment; nothing on the delivery path touches the recorder.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use agentwatch_ws::{Event, SessionState, WsLayer};
use axum::serve::ListenerExt;
use axum::{Router, routing::get};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The command line (`--help` lists it).
#[derive(clap::Parser)]
#[command(about = "The hub's counters in Prometheus text at /metrics")]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long, value_name = "N", default_value_t = 3003)]
    port: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Args { port } = clap::Parser::parse();

    // The process-wide recorder the `metrics` macros report to; the handle renders it.
    let prometheus = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("cannot install the Prometheus recorder: {error}");
            return ExitCode::FAILURE;
        }
    };
    agentwatch_ws::metrics::describe();

    let (ws_router, hub) = WsLayer::new().build("/ws");
    let publisher = hub.clone();
    let app = Router::new().merge(ws_router).route(
        "/metrics",
        get(move || async move {
            agentwatch_ws::metrics::record(&hub);
            prometheus.render()
        }),
    );

    // Stand-in for the real monitor: one session that keeps working.
    tokio::spawn(async move {
        let mut session = SessionState {
            id: "demo".into(),
            source: "claude".into(),
            ..Default::default()
        };
        for messages in 1.. {
            session.message_count = messages;
            // Seq 0: the publisher numbers the event.
            if let Err(error) = publisher.publish(Event::delta(0, vec![session.clone()], vec![])) {
                tracing::error!(%error, "publish failed");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        Err(error) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("metrics at http://127.0.0.1:{port}/metrics, WebSocket at ws://127.0.0.1:{port}/ws");
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("server failed: {error}");
            ExitCode::FAILURE
        }
    }
}
