//! The crate's real `WsLayer` and its `Publisher` behind the fan-out bench protocol
//! (`../shared/bench/PROTOCOL.md`), so `../shared/bench/compare.sh` can measure it beside the
//! Go-design, Node `ws`, Python `websockets` and raw-socket peers. That harness lives beside
//! this repository, not in it; nothing in `cargo test` needs it.
//!
//! ```sh
//! cargo build --release --example bench_server
//! ../shared/bench/compare.sh --scenario fanout \
//!     --server "ours=target/release/examples/bench_server --port {port}"
//! ```
//!
//! It uses the public API exactly as an application would: no bench-only path inside the
//! crate. Rate limit and connection cap are off (the load generator opens thousands of
//! sockets from one IP) and the send buffer is 16 384 events, so that a burst measures the
//! cost of each delivery rather than the eviction policy; everything else is at its default.
//!
//! `--sessions N` fills the store with N realistic sessions before serving (default 0), so
//! the `connect` scenario measures a reconnect storm against a busy monitor: every client
//! gets a snapshot of all N (BENCHMARKS.md compares 1 000 with none).
//!
//! `--workers N` sets tokio's worker threads (default one per core). On a machine shared with
//! the load generator, one worker leaves it a core: that lowers the median latency of the
//! `latency` scenario but raised its p99 in our runs, so the figures in BENCHMARKS.md use the default.
//!
//! `--policies 2` gives every client whose port is odd a privacy policy (`id,dir`: pseudonymous
//! ids, no working directory; `agentwatch_ws::privacy`) and the others none, so the `fanout`
//! scenario measures two policies among its clients side by side with one (the default): each
//! event is then encoded twice, and half the clients get the redacted bytes.
//!
//! Endpoints: `GET /ws` (the WebSocket), `POST /bench/burst?count=M&bytes=S&rate=R`,
//! `GET /bench/stats`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentwatch_ws::privacy::{Field, Policy};
use agentwatch_ws::{
    Activity, Event, EventSink, Identity, LifecycleState, Publisher, SessionState, WsLayer,
};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
#[path = "../benches/support/session.rs"]
mod support;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Events a client may fall behind before the lag policy applies.
const SEND_BUFFER: usize = 16_384;

#[derive(Clone)]
struct Bench {
    hub: Publisher,
    seq: Arc<AtomicU64>,
    /// Serializes bursts, so seq stays ordered across concurrent POSTs.
    burst: Arc<Mutex<()>>,
}

#[derive(Deserialize)]
struct BurstParams {
    count: Option<u64>,
    bytes: Option<usize>,
    rate: Option<f64>,
}

/// The command line (`--help` lists it).
#[derive(clap::Parser)]
#[command(about = "agentwatch-ws behind the fan-out bench protocol (../shared/bench/PROTOCOL.md)")]
struct Args {
    /// Port to listen on, on 127.0.0.1 [default: $PORT, else 3001].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Fill the store with N realistic sessions before serving: every client's snapshot
    /// holds them.
    #[arg(long, value_name = "N", default_value_t = 0)]
    sessions: usize,
    /// Tokio worker threads [default: one per core, tokio's default].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Distinct privacy policies among the clients: 1 (everyone sees everything) or 2 (clients
    /// on odd ports get `id,dir`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    policies: u8,
}

/// The identity of `--policies 2`: the parity of the client's port.
struct PortParity(bool);

impl<S: Send + Sync> FromRequestParts<S> for PortParity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let port = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(0, |info| info.0.port());
        Ok(PortParity(port % 2 == 1))
    }
}

impl From<PortParity> for Identity {
    fn from(parity: PortParity) -> Identity {
        Identity::new(if parity.0 { "odd" } else { "even" })
    }
}

impl Args {
    fn port(&self) -> u16 {
        self.port
            .or_else(|| std::env::var("PORT").ok().and_then(|p| p.parse().ok()))
            .unwrap_or(3001)
    }
}

fn bench_event(seq: u64, padding: &str) -> Event {
    let session = SessionState {
        id: format!("bench-{}", seq % 100),
        source: "bench".into(),
        activity: Activity::Working,
        lifecycle: LifecycleState::Active,
        model: padding.to_owned(),
        ..SessionState::default()
    };
    Event::delta(seq, vec![session], Vec::new())
}

async fn burst(
    State(bench): State<Bench>,
    Query(params): Query<BurstParams>,
) -> Json<serde_json::Value> {
    let count = params.count.unwrap_or(1);
    let bytes = params.bytes.unwrap_or(512);
    let rate = params.rate.unwrap_or(0.0);
    let _serialized = bench.burst.lock().await;

    // Size the padding once per burst from a sample event: the message length then varies
    // only by the digits of seq and the time stamp, well inside the protocol's ±16 bytes.
    let sample = bench_event(bench.seq.load(Ordering::Relaxed) + 1, "")
        .to_json()
        .map(|json| json.len())
        .unwrap_or(0);
    let padding = "x".repeat(bytes.saturating_sub(sample));

    let start = tokio::time::Instant::now();
    for i in 0..count {
        if rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        } else if i % 32 == 31 {
            // Let the connection tasks run on this worker too.
            tokio::task::yield_now().await;
        }
        let seq = bench.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Err(error) = bench.hub.handle_event(&bench_event(seq, &padding)) {
            tracing::error!(%error, "publish failed");
        }
    }
    Json(serde_json::json!({ "published": count }))
}

async fn stats(State(bench): State<Bench>) -> Json<serde_json::Value> {
    let stats = bench.hub.stats();
    Json(serde_json::json!({
        "clients": stats.connected,
        "evictions": stats.evicted,
        "seq": bench.seq.load(Ordering::Relaxed),
    }))
}

fn main() -> std::io::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(usize::from(workers));
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let ws = WsLayer::new().rate_limit(None).send_buffer(SEND_BUFFER);
    let (ws_router, hub) = if args.policies == 2 {
        let redacted = Policy::none()
            .redact(Field::SessionId)
            .redact(Field::WorkingDir);
        ws.auth::<PortParity>()
            .policy_for(move |identity: &Identity| {
                (identity.id() == "odd").then(|| redacted.clone())
            })
            .build("/ws")
    } else {
        ws.build("/ws")
    };
    let sessions = args.sessions;
    let mut seq = 0;
    if sessions > 0 {
        seq = 1;
        let prefill = Event::snapshot(seq, (0..sessions).map(support::realistic_session).collect());
        if let Err(error) = hub.handle_event(&prefill) {
            tracing::error!(%error, "prefill failed");
        }
    }
    let bench = Bench {
        hub,
        seq: Arc::new(AtomicU64::new(seq)),
        burst: Arc::new(Mutex::new(())),
    };
    let app = Router::new()
        .route("/bench/burst", post(burst))
        .route("/bench/stats", get(stats))
        .with_state(bench)
        .merge(ws_router);

    let addr = SocketAddr::from(([127, 0, 0, 1], args.port()));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    eprintln!("bench_server listening on http://{addr}");
    // As an application should serve it: TCP_NODELAY (the connection task already batches its
    // writes), a deadline on request heads, connect info. Every benchmark client comes from
    // 127.0.0.1, thousands of handshakes at once: no per-IP connection bound.
    agentwatch_ws::serve(listener, app)
        .max_connections_per_ip(None)
        .await
}
