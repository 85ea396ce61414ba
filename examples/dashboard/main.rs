//! A live dashboard of AI coding-agent sessions, fed by a simulated agentwatch monitor.
//!
//! ```text
//! cargo run --example dashboard                # http://127.0.0.1:3000/
//! cargo run --example dashboard -- --port 8080 --rate 10 --seed 7
//! PORT=8080 RUST_LOG=agentwatch_ws=debug cargo run --example dashboard
//! ```
//!
//! Open the printed URL in a browser. You see one card per session — Claude Code, Codex and
//! Gemini CLI sessions discovered over time, switching between working, waiting and idle,
//! running tools, filling their context windows, spawning subagents, ending, being resumed and
//! finally removed — plus a health strip per source that degrades and recovers now and then,
//! a feed of lifecycle events, and a connection indicator. Stop the server (Ctrl-C) and the
//! page shows "reconnecting in Ns", backing off (0.5 s doubling to 15 s); start it again and
//! the page reconnects by itself. Reconnects ask for only the missed events
//! (`/ws?since=<last seq>`); a server that cannot serve them (such as a restarted one)
//! answers with a fresh `snapshot`, which replaces the page's state.
//!
//! Health is reported only when it changes, and a snapshot carries none, so a freshly opened
//! page lists sources as "no reports" until their health next changes.
//!
//! How it is wired: the simulated monitor ([`sim`]) publishes every event, each with the next
//! `seq`, to a [`SessionStore`] and then to the [`WsLayer`]'s hub (one [`MultiSink`], store
//! first). The store gives each connecting browser its first `snapshot`; the hub fans out the
//! live stream. The page (`index.html`, embedded in the binary) is served at `/`, the
//! WebSocket at `/ws`. On Ctrl-C the hub is stopped, so every browser sees close code 1001.
//!
//! Flags (all optional):
//!
//! - `--port N`: the port on 127.0.0.1 (default: the `PORT` environment variable, else 3000).
//! - `--rate N`: simulated events per second (default 5).
//! - `--seed N`: seed of the simulation's PRNG (default 1); the same seed gives the same story.
//! - `--inject`: **for tests and demos only; off by default.** Enables
//!   `POST /debug/sessions?id=ID&source=SRC`, which publishes a `delta` adding (or updating)
//!   a session with that id through the same store + hub path as the simulation. The browser
//!   test (`tests/browser.rs`) uses it. Never enable it on a server others can reach.

mod sim;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentwatch_ws::{Event, EventSink, Hub, MultiSink, SessionStore, WsLayer};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Events a client may fall behind before the lag policy applies.
const SEND_BUFFER: NonZeroUsize = NonZeroUsize::new(256).expect("non-zero");

const INDEX_HTML: &str = include_str!("index.html");

const USAGE: &str = "\
usage: dashboard [--port N] [--rate N] [--seed N] [--inject]

  --port N   port to listen on, on 127.0.0.1 (default: $PORT, else 3000)
  --rate N   simulated events per second (default 5)
  --seed N   seed of the simulation (default 1)
  --inject   enable POST /debug/sessions?id=ID&source=SRC (tests and demos only)";

/// Command-line options.
#[derive(Debug)]
struct Options {
    port: u16,
    rate: f64,
    seed: u64,
    inject: bool,
    max_connections: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        port: 3000,
        rate: 5.0,
        seed: 1,
        inject: false,
        max_connections: 0,
    };
    let mut port_flag = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--port" | "-p" => {
                let v = value("--port")?;
                port_flag = true;
                opts.port = v
                    .parse()
                    .map_err(|_| format!("--port {v:?} is not a port number"))?;
            }
            "--rate" => {
                let v = value("--rate")?;
                opts.rate = v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0 && *r <= 10_000.0)
                    .ok_or_else(|| {
                        format!("--rate {v:?} must be a number of events per second in (0, 10000]")
                    })?;
            }
            "--seed" => {
                let v = value("--seed")?;
                opts.seed = v
                    .parse()
                    .map_err(|_| format!("--seed {v:?} is not an unsigned integer"))?;
            }
            "--inject" => opts.inject = true,
            "--demo" => {} // the simulation is the only input of this version
            "--max-connections" => {
                opts.max_connections = value("--max-connections")?
                    .parse()
                    .map_err(|_| "--max-connections needs a number".to_string())?
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !port_flag {
        if let Ok(port) = std::env::var("PORT") {
            opts.port = port
                .trim()
                .parse()
                .map_err(|_| format!("PORT={port:?} is not a port number"))?;
        }
    }
    Ok(opts)
}

/// Publishes events to the store, then the hub, stamping each with the next `seq`.
///
/// The lock makes "take the next seq, publish" one step, so the simulation and the debug
/// endpoint never publish out of seq order.
struct Publisher {
    next_seq: Mutex<u64>,
    sink: MultiSink,
}

impl Publisher {
    fn new(store: SessionStore, hub: Hub) -> Self {
        Publisher {
            next_seq: Mutex::new(1),
            // Store first, then hub: the hand-over to a connecting client relies on that order.
            sink: MultiSink::new().with(store).with(hub),
        }
    }

    /// Publishes `events` in order, returning the seq of the last one (0 if none).
    fn publish(&self, events: Vec<Event>) -> u64 {
        let mut next = self.next_seq.lock().unwrap_or_else(PoisonError::into_inner);
        let mut last = 0;
        for mut event in events {
            event.seq = *next;
            *next += 1;
            last = event.seq;
            if let Err(error) = self.sink.handle_event(&event) {
                tracing::warn!(seq = event.seq, %error, "publishing event failed");
            }
        }
        last
    }
}

#[derive(Clone)]
struct AppState {
    publisher: Arc<Publisher>,
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads nothing from anywhere but its own origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:",
            ),
        ],
        Html(INDEX_HTML),
    )
}

#[derive(Deserialize)]
struct InjectQuery {
    id: String,
    source: Option<String>,
    #[serde(flatten)]
    more: sim::InjectOptions,
}

/// `POST /debug/sessions?id=ID&source=SRC` (only with `--inject`).
async fn inject_session(State(state): State<AppState>, Query(q): Query<InjectQuery>) -> Response {
    if q.id.is_empty() || q.id.len() > 200 {
        return (StatusCode::BAD_REQUEST, "id must be 1 to 200 bytes\n").into_response();
    }
    let source = q
        .source
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "claude".to_string());
    let session = sim::injected_session(&q.id, &source, &q.more);
    let seq = state
        .publisher
        .publish(vec![Event::delta(0, vec![session], Vec::new())]);
    tracing::info!(id = %q.id, %source, seq, "injected session");
    (StatusCode::OK, format!("{{\"seq\":{seq}}}\n")).into_response()
}

async fn shutdown_signal(hub: Hub) {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: closing WebSocket clients with 1001");
    hub.stop();
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr; stdout carries only the URL line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let store = SessionStore::new();
    let ws = WsLayer::new(store.clone())
        .heartbeat(Duration::from_secs(30))
        // Room for bursts at a high --rate. A tab that still falls behind is closed with 1013
        // and reconnects with `?since=`, resuming from the hub's replay window.
        .send_buffer(SEND_BUFFER)
        .write_timeout(Duration::from_secs(10))
        .max_connections(NonZeroUsize::new(opts.max_connections));
    let hub = ws.hub();
    let publisher = Arc::new(Publisher::new(store.clone(), hub.clone()));

    let mut app = Router::new().route("/", get(index));
    if opts.inject {
        tracing::warn!("--inject: POST /debug/sessions is enabled (tests and demos only)");
        app = app.route("/debug/sessions", post(inject_session));
    }
    let app = app
        .with_state(AppState {
            publisher: publisher.clone(),
        })
        .merge(ws.router("/ws"));

    let addr = SocketAddr::from(([127, 0, 0, 1], opts.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!(
                "error: port {} is already in use; pick another with --port N",
                opts.port
            );
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!(
                "error: cannot listen on {addr}: {error} (choose another port with --port N)"
            );
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);

    let simulation = tokio::spawn(sim::run(publisher.clone(), opts.seed, opts.rate));

    println!("agentwatch dashboard: open http://{local}/  (Ctrl-C to stop)");
    tracing::info!(
        rate = opts.rate,
        seed = opts.seed,
        inject = opts.inject,
        "simulated monitor running"
    );

    // TCP_NODELAY, a deadline on request heads, and connect info for the rate limit.
    let served = agentwatch_ws::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(hub.clone()))
        .await;

    simulation.abort();
    // Give the closing handshakes a moment to go out before the runtime goes away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while hub.client_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: server failed: {error}");
            ExitCode::FAILURE
        }
    }
}
