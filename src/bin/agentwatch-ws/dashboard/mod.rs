//! A live dashboard of AI coding-agent sessions: your real Claude Code, Codex CLI and Gemini
//! CLI sessions, read from their logs by the crate's [`Monitor`], or a simulated monitor.
//!
//! ```text
//! agentwatch-ws dashboard                      # installed: cargo install agentwatch-ws --features cli
//! cargo run --example dashboard                # the same, from a clone: http://127.0.0.1:3000/
//! cargo run --example dashboard -- --demo --rate 10 --seed 7
//! cargo run --example dashboard -- --claude ~/work/claude-logs --port 8080
//! HOME=/some/dir cargo run --example dashboard -- --port 8080
//! PORT=8080 RUST_LOG=agentwatch_ws=debug cargo run --example dashboard
//! ```
//!
//! **Which input.** Without flags it watches the default log roots that exist, from the
//! environment at run time: `$HOME/.claude/projects`, `$HOME/.config/claude/projects`,
//! `$CODEX_HOME/sessions` (else `$HOME/.codex/sessions`), `$HOME/.gemini/tmp`, Pi's sessions
//! dir (`$PI_CODING_AGENT_SESSION_DIR`, else `$HOME/.pi/agent/sessions`) and
//! `$HOME/.cursor/projects`, OpenCode's data dir (`$XDG_DATA_HOME/opencode`, else
//! `$HOME/.local/share/opencode`) and `$HOME/.gemini/antigravity-cli` (see
//! `monitor::default_roots`). It prints
//! each root it watches and how many sessions it found (logs modified within the last 5
//! minutes; older ones join when they change). When none of the roots exists, or they hold
//! no log at all, it runs the simulation instead, and says so. When they hold logs but none
//! written recently it still watches them (an agent started now shows up at once) and says
//! so: `--demo` gives the simulation. `--claude DIR`, `--codex DIR`, `--gemini DIR`, `--pi DIR`,
//! `--cursor DIR`, `--opencode DIR`, `--antigravity DIR` (repeatable) watch exactly those
//! roots instead of the defaults; a root that does not exist is an error (exit code 2).
//!
//! Open the printed URL in a browser. You see one card per session — discovered, switching
//! between working, waiting and idle, running tools, filling their context windows, spawning
//! subagents, ending and finally removed — plus a health strip per source (`claude`, `codex`,
//! `gemini`, `pi`, `cursor`, `opencode`, `antigravity`), a feed of lifecycle events, and a connection indicator. Stop the server (Ctrl-C)
//! and the page shows "reconnecting in Ns", backing off (0.5 s doubling to 15 s); start it
//! again and the page reconnects by itself. Reconnects ask for only the missed events
//! (`/ws?since=<last seq>`); a server that cannot serve them (such as a restarted one)
//! answers with a fresh `snapshot`, which replaces the page's state.
//!
//! **When a session waits for you.** The tab title counts the waiting sessions (`(2
//! waiting) agentwatch · …`) and the favicon carries an amber mark with the count. The
//! header's "notify me" switches on browser notifications (the permission is asked on that
//! click; the choice is kept in `localStorage`): while the tab is hidden or unfocused, a
//! session that starts waiting shows one notification, "api-server (claude) wants to run
//! Bash" (a permission prompt), "… finished its turn" or "… waiting for input" (no message
//! yet), tagged per session so a newer one replaces the older, once the wait has lasted
//! 1.5 s (a reply written as text then a tool call can look like a finished turn for a
//! moment); clicking it brings the page forward at that session's card. "sound" adds a short beep (off by default). A wait is
//! known by its session id and start (`lastActivityAt`): each is announced once, across
//! reloads, reconnects, snapshots and tabs, and waits that began before the page was opened
//! (or before notifications were switched on) are not announced; a card says "waiting for
//! you · 13m 05s", counted from the wait's start. With no page open, `--notify-url` pushes
//! the same news (below). `/#session=ID` opens the page at that card.
//!
//! **Permission prompts.** Neither Claude Code's log nor Gemini CLI's chat shows a permission
//! prompt; their hooks do. The monitor reads hook markers from the marker directory: the one
//! named in the installed hooks (`agentwatch-ws hooks install`, in Claude Code's user
//! settings, else `agentwatch-ws hooks install --agent gemini`, in Gemini CLI's), else
//! [`default_marker_dir`](agentwatch_ws::markers::default_marker_dir); the dashboard creates it
//! (mode 0700) when missing, so it is watched from the start. `GET /attention` says per
//! watched source whether permission prompts are detected (Claude Code and Gemini CLI: our
//! hooks are in its settings, write into the marker directory this dashboard reads, and
//! Gemini CLI's `hooksConfig.enabled` is not `false`; read at start and on each request;
//! hooks installed later for another directory need a restart; Codex CLI: not), and the
//! page shows a one-line note for each source where they are not.
//!
//! The monitor publishes every source's health once at start (and then on each change), so
//! there is a health report for every watched source from the beginning, not only after its
//! first change.
//!
//! How it is wired: the monitor (or the simulation, [`sim`]) publishes every event through
//! one [`Publisher`], which stamps each with the next `seq` and hands it to a
//! [`SessionStore`] and then to the [`WsLayer`]'s hub (one [`MultiSink`], store first). The
//! store gives each connecting browser its first `snapshot`; the hub fans out the live
//! stream. With `--redis --publish` the same stamped events go into a [`BrokerSink`] instead,
//! and a [`Follower`] feeds store and hub from the broker (without `--publish`, only the
//! follower runs). The page (`index.html`, embedded in the binary) is served at `/`, the
//! WebSocket at `/ws`. On Ctrl-C the monitor and the hub are stopped, so every browser sees
//! close code 1001.
//!
//! Flags (all optional):
//!
//! - `--port N`: the port on 127.0.0.1 (default: the `PORT` environment variable, else 3000).
//! - `--demo`: run the simulation, whatever logs exist.
//! - `--claude DIR`, `--codex DIR`, `--gemini DIR`, `--pi DIR`, `--cursor DIR`,
//!   `--opencode DIR` (OpenCode's data dir, where `opencode.db` is), `--antigravity DIR`
//!   (`~/.gemini/antigravity-cli`): watch these
//!   roots (repeatable) instead of
//!   the defaults. Not with `--demo`.
//! - `--rate N`: simulated events per second (default 5; simulation only).
//! - `--seed N`: seed of the simulation's PRNG (default 1); the same seed gives the same story.
//! - `--inject`: **for tests and demos only; off by default.** Enables
//!   `POST /debug/sessions?id=ID&source=SRC`, which publishes a `delta` adding (or updating)
//!   a session with that id through the same publisher as the monitor or the simulation
//!   (more fields: `sim::InjectOptions`, such as `activity=waiting&tool=Bash&at_ms=…`). The
//!   browser tests use it. Never enable it on a server others can reach.
//! - `--notify-url URL` (repeatable): push each new wait (a session whose `activity` turns
//!   `waiting`) as a JSON POST, for when no page is open: ntfy's JSON publish
//!   (`--notify-url https://ntfy.sh/mytopic` posts `{"topic":"mytopic",…}` to
//!   `https://ntfy.sh/`) or, with a URL ending in `/`, a generic webhook POSTed to that URL.
//!   One push per wait, none for waits that began before the dashboard started; a bounded
//!   queue, retries with backoff, a timeout per request. The body and the rules: [`notify`].
//!   The node that runs the input pushes (a `--redis` node without `--publish` does not).
//! - `--max-connections N`: at most N WebSocket clients at once (default 0: unlimited).
//! - `--rate-limit N,B`: at most N upgrades a minute per client IP, B of them at once
//!   (default `60,20`; `0,0` disables the limit). Over it the answer is `429`.
//! - `--redis URL`: be one node of a cluster fed through Redis Streams
//!   ([`agentwatch_ws::broker`]): a [`Follower`] builds this node's store from the stream key
//!   `--stream KEY` (default `agentwatch:events`) and feeds store and hub from it.
//! - `--publish` (with `--redis`): also run the input, publishing into the stream (a
//!   [`BrokerSink`]) instead of into this node; this node serves it back through its own
//!   follower like every other node, so all nodes serve the identical stream. Without
//!   `--publish` a `--redis` node runs no input, and the input flags are an error.
//!
//! **Several nodes.** On one Redis (one stream per producer; a second `--publish` on the same
//! stream is not supported):
//!
//! ```text
//! cargo run --example dashboard -- --redis redis://127.0.0.1:6379 --publish --port 3001
//! cargo run --example dashboard -- --redis redis://127.0.0.1:6379 --port 3002
//! cargo run --example dashboard -- --redis redis://127.0.0.1:6379 --port 3003
//! ```
//!
//! Every node serves the same events with the same `seq` and `at`, so a page whose node goes
//! away reconnects to another with `?since=&since_at=` and gets only what it missed. A
//! broker that does not answer at start is retried with backoff (the node prints what it
//! waits for and serves once the state is built). A `--publish` node starts its stream with
//! an empty `snapshot` at seq 1: the nodes drop whatever an earlier producer left.
//!
//! Upgrades are rate-limited per client IP to 60 a minute with a burst of 20 (`--rate-limit
//! N,B` changes it), so a developer reloading the page 20 times a minute is never refused.

mod notify;
mod sim;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentwatch_ws::broker::{BrokerSink, Follower, FollowerHandle, RedisBroker};
use agentwatch_ws::markers::{self, HooksStatus};
use agentwatch_ws::monitor::{Monitor, MonitorHandle, SourceKind};
use agentwatch_ws::{
    Event, EventSink, Hub, Publisher, RateLimit, SessionStore, SinkError, WsLayer,
};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Events a client may fall behind before the lag policy applies.
// Evaluated at compile time: a zero here would fail the build, never a run.
const SEND_BUFFER: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(n) => n,
    None => panic!("the send buffer must not be zero"),
};

const INDEX_HTML: &str = include_str!("index.html");

const USAGE: &str = "\
usage: dashboard [--port N] [--demo] [--claude DIR] [--codex DIR] [--gemini DIR]
                 [--pi DIR] [--cursor DIR] [--opencode DIR] [--antigravity DIR]
                 [--rate N] [--seed N] [--inject] [--notify-url URL] [--max-connections N]
                 [--rate-limit N,B]
                 [--redis URL [--publish] [--stream KEY]]

  --port N        port to listen on, on 127.0.0.1 (default: $PORT, else 3000)
  --demo          run the simulation instead of watching agent logs
  --claude DIR    watch this Claude Code projects root (repeatable; replaces the defaults)
  --codex DIR     watch this Codex CLI sessions root (repeatable; replaces the defaults)
  --gemini DIR    watch this Gemini CLI tmp root (repeatable; replaces the defaults)
  --pi DIR        watch this Pi sessions dir (repeatable; replaces the defaults)
  --cursor DIR    watch this Cursor projects root, ~/.cursor/projects (repeatable;
                  replaces the defaults)
  --opencode DIR  watch this OpenCode data dir, where opencode.db is (repeatable;
                  replaces the defaults)
  --antigravity DIR  watch this Antigravity CLI root, ~/.gemini/antigravity-cli
                  (repeatable; replaces the defaults)
  --rate N        simulated events per second (default 5)
  --seed N        seed of the simulation (default 1)
  --inject        enable POST /debug/sessions?id=ID&source=SRC (tests and demos only)
  --notify-url URL  push each new wait as a JSON POST (repeatable): https://ntfy.sh/TOPIC
                  (ntfy's JSON publish to its root) or a URL ending in / (posted as given)
  --max-connections N  at most N WebSocket clients at once (default 0: unlimited)
  --rate-limit N,B  at most N upgrades a minute per client IP, B at once (default 60,20;
                  0,0 disables)
  --redis URL     serve from this Redis broker (redis://host:port), as one node of a cluster
  --publish       with --redis: also run the input and publish it into the broker
  --stream KEY    with --redis: the stream key (default agentwatch:events)

Without --demo or roots, it watches the default roots that exist ($HOME/.claude/projects,
$HOME/.config/claude/projects, $CODEX_HOME/sessions or $HOME/.codex/sessions,
$HOME/.gemini/tmp, $PI_CODING_AGENT_SESSION_DIR or $HOME/.pi/agent/sessions,
$HOME/.cursor/projects, $XDG_DATA_HOME/opencode or $HOME/.local/share/opencode,
$HOME/.gemini/antigravity-cli), and runs the simulation when there are none. With --redis but without
--publish there is no input: the node serves what the publishing node puts in the stream.";

/// The stream key when `--stream` is not given.
const DEFAULT_STREAM: &str = "agentwatch:events";

/// The default per-IP upgrade limit: a local developer reloading the page, 20 upgrades at
/// once, then one a second.
const RELOAD_BURST: u32 = 20;
const RELOADS_PER_MINUTE: u32 = 60;

/// Command-line options.
#[derive(Debug)]
struct Options {
    port: u16,
    rate: f64,
    seed: u64,
    inject: bool,
    max_connections: usize,
    /// `--rate-limit N,B`: upgrades per minute per IP, and the burst.
    rate_limit: (u32, u32),
    demo: bool,
    /// Roots given on the command line (replacing the defaults).
    roots: Vec<(SourceKind, PathBuf)>,
    /// `--redis URL`: serve from this broker.
    redis: Option<String>,
    /// `--stream KEY`.
    stream: String,
    /// `--publish`: run the input and publish it into the broker.
    publish: bool,
    /// The input flags given (`--demo`, `--rate`…), for the error on a node without input.
    input_flags: Vec<String>,
    /// `--notify-url URL` (repeatable): where new waits are pushed.
    notify: Vec<notify::Target>,
}

impl Options {
    /// Whether this process runs an input (the monitor or the simulation).
    fn has_input(&self) -> bool {
        self.redis.is_none() || self.publish
    }
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut opts = Options {
        port: 3000,
        rate: 5.0,
        seed: 1,
        inject: false,
        max_connections: 0,
        rate_limit: (RELOADS_PER_MINUTE, RELOAD_BURST),
        demo: false,
        roots: Vec::new(),
        redis: None,
        stream: DEFAULT_STREAM.to_string(),
        publish: false,
        input_flags: Vec::new(),
        notify: Vec::new(),
    };
    let mut port_flag = false;
    let mut stream_flag = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if matches!(
            flag.as_str(),
            "--rate"
                | "--seed"
                | "--inject"
                | "--demo"
                | "--claude"
                | "--codex"
                | "--gemini"
                | "--pi"
                | "--cursor"
                | "--opencode"
                | "--antigravity"
                | "--notify-url"
        ) && !opts.input_flags.contains(&flag)
        {
            opts.input_flags.push(flag.clone());
        }
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
            "--demo" => opts.demo = true,
            "--claude" | "--codex" | "--gemini" | "--pi" | "--cursor" | "--opencode"
            | "--antigravity" => {
                let source = match flag.as_str() {
                    "--claude" => SourceKind::Claude,
                    "--codex" => SourceKind::Codex,
                    "--pi" => SourceKind::Pi,
                    "--cursor" => SourceKind::Cursor,
                    "--opencode" => SourceKind::OpenCode,
                    "--antigravity" => SourceKind::Antigravity,
                    _ => SourceKind::Gemini,
                };
                let dir = PathBuf::from(value(&flag)?);
                if !dir.is_dir() {
                    return Err(format!("{flag} {}: no such directory", dir.display()));
                }
                opts.roots.push((source, dir));
            }
            "--max-connections" => {
                opts.max_connections = value("--max-connections")?
                    .parse()
                    .map_err(|_| "--max-connections needs a number".to_string())?
            }
            "--rate-limit" => {
                let v = value("--rate-limit")?;
                opts.rate_limit = v
                    .split_once(',')
                    .and_then(|(n, b)| Some((n.trim().parse().ok()?, b.trim().parse().ok()?)))
                    .ok_or_else(|| {
                        format!("--rate-limit {v:?} must be N,B: upgrades a minute, burst")
                    })?;
            }
            "--notify-url" => opts
                .notify
                .push(notify::Target::parse(&value("--notify-url")?)?),
            "--redis" => opts.redis = Some(value("--redis")?),
            "--stream" => {
                stream_flag = true;
                opts.stream = value("--stream")?;
                if opts.stream.is_empty() {
                    return Err("--stream needs a non-empty key".into());
                }
            }
            "--publish" => opts.publish = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.demo && !opts.roots.is_empty() {
        return Err(
            "--demo runs the simulation: it cannot be combined with --claude, --codex, --gemini, --pi, --cursor, --opencode or --antigravity"
                .into(),
        );
    }
    if opts.redis.is_none() && (opts.publish || stream_flag) {
        return Err("--publish and --stream are about a broker: give it with --redis URL".into());
    }
    if !opts.has_input() && !opts.input_flags.is_empty() {
        return Err(format!(
            "input flags ({}) need --publish: with --redis, a node without --publish runs no \
             input and serves from the broker only",
            opts.input_flags.join(", ")
        ));
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

/// Where the input (the monitor, the simulation, `--inject`) publishes.
///
/// Both numbering rules are the crate's [`Publisher`]'s: an event is stamped with the last
/// seq plus one, under one lock, so the three inputs share one sequence. With
/// `--notify-url`, every event is shown to the [`notify::Notifier`] first (it only queues).
struct Output {
    to: Destination,
    notifier: Option<notify::Notifier>,
}

/// Where [`Output`] publishes.
enum Destination {
    /// Without `--redis`: straight into this process's store, then its hub.
    Local(Publisher),
    /// With `--redis --publish`: into the broker stream only. This node serves it back
    /// through its own [`Follower`], as every other node does, so the publishing node and
    /// the others serve the identical stream (same `seq`, same `at`).
    Broker {
        sink: BrokerSink,
        last_seq: Mutex<u64>,
    },
}

impl Output {
    /// Into this process's store and hub.
    fn local(publisher: Publisher, notifier: Option<notify::Notifier>) -> Output {
        Output {
            to: Destination::Local(publisher),
            notifier,
        }
    }

    /// A producer into the broker. It starts with an empty `snapshot` at seq 1, which tells
    /// every node to replace what an earlier producer of the same stream left (a producer
    /// restarting: seqs go back, each node's hub resets its window, clients get a snapshot).
    fn broker(sink: BrokerSink, notifier: Option<notify::Notifier>) -> Output {
        let output = Output {
            to: Destination::Broker {
                sink,
                last_seq: Mutex::new(0),
            },
            notifier,
        };
        publish_all(&output, vec![Event::snapshot(0, Vec::new())]);
        output
    }

    /// Stamps `event` with the next seq and publishes it; returns that seq.
    fn publish(&self, mut event: Event) -> Result<u64, SinkError> {
        event.seq = 0;
        if let Some(notifier) = &self.notifier {
            notifier.observe(&event);
        }
        match &self.to {
            Destination::Local(publisher) => publisher.publish(event),
            Destination::Broker { sink, last_seq } => {
                // Held while the sink queues the event, so seqs enter the stream in order.
                let mut last_seq = last_seq.lock().unwrap_or_else(PoisonError::into_inner);
                *last_seq += 1;
                event.seq = *last_seq;
                sink.handle_event(&event)?;
                Ok(event.seq)
            }
        }
    }
}

/// Publishes `events` in order through `output`, each numbered with the next `seq`: the
/// monitor, the simulation and `--inject` share one sequence, so their events are
/// renumbered rather than kept. Returns the last seq (0 if none).
fn publish_all(output: &Output, events: Vec<Event>) -> u64 {
    let mut last = 0;
    for event in events {
        match output.publish(event) {
            Ok(seq) => last = seq,
            Err(error) => tracing::warn!(%error, "publishing event failed"),
        }
    }
    last
}

/// The monitor publishes through the [`Output`] too, so that it and `--inject` share one
/// seq counter: each event is stamped again with the output's next seq. Until
/// [`Restamp::open`], events are held back (and dropped if the monitor is not used).
struct Restamp {
    output: Arc<Output>,
    held: Mutex<Option<Vec<Event>>>,
}

impl Restamp {
    /// Publishes the held events and lets every later one through.
    fn open(&self) {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        publish_all(&self.output, held.unwrap_or_default());
    }
}

impl EventSink for Restamp {
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.as_mut() {
            Some(events) => events.push(event.clone()),
            None => {
                drop(held);
                publish_all(&self.output, vec![event.clone()]);
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    output: Arc<Output>,
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
    let seq = publish_all(
        &state.output,
        vec![Event::delta(0, vec![session], Vec::new())],
    );
    tracing::info!(id = %q.id, %source, seq, "injected session");
    (StatusCode::OK, format!("{{\"seq\":{seq}}}\n")).into_response()
}

/// Ctrl-C or SIGTERM.
async fn stop_requested() {
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
}

async fn shutdown_signal(hub: Hub) {
    stop_requested().await;
    tracing::info!("shutting down: closing WebSocket clients with 1001");
    hub.stop();
}

/// What feeds the dashboard.
enum Input {
    Simulation(tokio::task::JoinHandle<()>),
    Monitor(MonitorHandle),
}

impl Input {
    async fn stop(self) {
        match self {
            Input::Simulation(task) => task.abort(),
            Input::Monitor(handle) => {
                if tokio::task::spawn_blocking(move || handle.stop())
                    .await
                    .is_err()
                {
                    tracing::warn!("stopping the monitor failed");
                }
            }
        }
    }
}

/// Starts the monitor on the chosen (or default) roots, or the simulation when `--demo` is
/// given or no root exists; prints which.
fn start_input(
    opts: &Options,
    output: &Arc<Output>,
    attention: &Attention,
) -> std::io::Result<Input> {
    let simulation = |why: &str| {
        println!(
            "input: the simulation ({why}); {} events/s, seed {}",
            opts.rate, opts.seed
        );
        tracing::info!(
            rate = opts.rate,
            seed = opts.seed,
            inject = opts.inject,
            "simulated monitor running"
        );
        Input::Simulation(tokio::spawn(sim::run(output.clone(), opts.seed, opts.rate)))
    };
    if opts.demo {
        return Ok(simulation("--demo"));
    }
    let roots = if opts.roots.is_empty() {
        agentwatch_ws::monitor::default_roots()
    } else {
        opts.roots.clone()
    };
    if roots.is_empty() {
        return Ok(simulation(
            "no agent logs: none of $HOME/.claude/projects, $HOME/.config/claude/projects, \
             $CODEX_HOME/sessions or $HOME/.codex/sessions, $HOME/.gemini/tmp, \
             $HOME/.pi/agent/sessions, $HOME/.cursor/projects exists",
        ));
    }
    let mut builder = Monitor::builder();
    for (source, root) in &roots {
        builder = builder.root(*source, root);
    }
    let markers = marker_dir();
    if let Some(dir) = &markers {
        builder = builder.marker_dir(dir);
    }
    // The first scan's events are held back until it is clear the monitor is used.
    let gate = Arc::new(Restamp {
        output: output.clone(),
        held: Mutex::new(Some(Vec::new())),
    });
    let mut monitor = builder.build(gate.clone());
    monitor.scan();
    let (files, dormant) = monitor.file_counts();
    if files == 0 && opts.roots.is_empty() {
        let listed: Vec<String> = roots.iter().map(|(_, p)| p.display().to_string()).collect();
        return Ok(simulation(&format!(
            "no agent logs in {}",
            listed.join(", ")
        )));
    }
    gate.open();
    // Created before the monitor's thread starts, so that it is watched from the start.
    if let Some(dir) = &markers {
        match create_private_dir(dir) {
            Ok(()) => println!("markers: {}", dir.display()),
            Err(_) if dir.exists() && !dir.is_dir() => {
                tracing::warn!("the marker directory is not a directory");
                println!(
                    "markers: {} is not a directory: permission prompts are not detected \
                     (remove it, or install the hooks with another --marker-dir)",
                    dir.display()
                );
            }
            Err(error) => println!(
                "markers: {} cannot be created ({error}); read at each rescan only",
                dir.display()
            ),
        }
    }
    let sessions = monitor.sessions();
    for (source, root) in monitor.roots() {
        println!("watching {:<6} {}", source.name(), root.display());
    }
    let per_source: Vec<String> = SourceKind::ALL
        .iter()
        .filter(|k| roots.iter().any(|(s, _)| s == *k))
        .map(|k| {
            let n = sessions.iter().filter(|s| s.source == k.name()).count();
            format!("{} {n}", k.name())
        })
        .collect();
    println!(
        "found {} recent session(s) ({}); {dormant} of {files} log file(s) older than 5 min not loaded until they change",
        sessions.len(),
        per_source.join(", ")
    );
    if sessions.is_empty() {
        println!(
            "no agent wrote a log in the last 5 minutes: sessions appear as soon as one does \
             (run with --demo for the simulation)"
        );
    }
    tracing::info!(
        roots = roots.len(),
        sessions = sessions.len(),
        inject = opts.inject,
        "monitor running"
    );
    let watched: Vec<SourceKind> = roots.iter().map(|(k, _)| *k).collect();
    for (kind, agent) in [
        (SourceKind::Claude, markers::HookAgent::Claude),
        (SourceKind::Gemini, markers::HookAgent::Gemini),
    ] {
        if watched.contains(&kind) {
            match hooks_attention(agent, markers.as_deref()) {
                (true, _) => println!(
                    "{}: permission prompts detected (hooks installed)",
                    kind.name()
                ),
                (false, note) => println!("{}: {note}", kind.name()),
            }
        }
    }
    *attention.0.lock().unwrap_or_else(PoisonError::into_inner) = Watched {
        sources: watched,
        marker_dir: markers,
    };
    Ok(Input::Monitor(monitor.spawn()?))
}

/// The marker directory the hooks write to: the one in the hook command installed in Claude
/// Code's settings, else in Gemini CLI's, else the default.
fn marker_dir() -> Option<PathBuf> {
    [markers::HookAgent::Claude, markers::HookAgent::Gemini]
        .into_iter()
        .filter_map(markers::HookAgent::default_settings)
        .filter_map(|path| markers::read_settings(&path).ok().flatten())
        .find_map(|settings| markers::installed_marker_dir(&settings))
        .or_else(markers::default_marker_dir)
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// What the monitor watches, for `GET /attention` (no source: the simulation, or a node
/// without input).
#[derive(Clone, Default)]
struct Attention(Arc<Mutex<Watched>>);

/// The sources the monitor watches and the marker directory it reads.
#[derive(Clone, Default)]
struct Watched {
    sources: Vec<SourceKind>,
    marker_dir: Option<PathBuf>,
}

impl Attention {
    /// Per watched source, whether permission prompts are detected, checked now:
    /// `{"sources":[{"source":"claude","permissionPrompts":false,"note":"…"}]}`.
    fn check(&self) -> serde_json::Value {
        let watched = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let sources: Vec<serde_json::Value> = SourceKind::ALL
            .iter()
            .filter(|k| watched.sources.contains(k))
            .map(|k| {
                let (detected, note) = match k {
                    SourceKind::Claude => {
                        hooks_attention(markers::HookAgent::Claude, watched.marker_dir.as_deref())
                    }
                    SourceKind::Codex => (
                        false,
                        "permission prompts are not detected: Codex CLI's rollouts do not record them"
                            .to_owned(),
                    ),
                    SourceKind::Gemini => {
                        hooks_attention(markers::HookAgent::Gemini, watched.marker_dir.as_deref())
                    }
                    SourceKind::Pi => (
                        false,
                        "permission prompts are not detected: Pi has none of its own (an extension's are not in its session log)"
                            .to_owned(),
                    ),
                    SourceKind::Cursor => (
                        false,
                        "permission prompts are not detected: Cursor's transcripts do not record them"
                            .to_owned(),
                    ),
                    SourceKind::OpenCode => (
                        false,
                        "permission prompts are not detected: OpenCode does not store them in its database"
                            .to_owned(),
                    ),
                    SourceKind::Antigravity => (
                        false,
                        "permission prompts are not detected: Antigravity CLI's transcripts do not record them"
                            .to_owned(),
                    ),
                };
                serde_json::json!({"source": k.name(), "permissionPrompts": detected, "note": note})
            })
            .collect();
        serde_json::json!({ "sources": sources })
    }
}

/// Whether our hooks are installed (and, for Gemini CLI, switched on) in `agent`'s user
/// settings and write into `reading` (the marker directory the monitor reads, fixed at
/// start), and the page's note if not. Hooks installed after the start for another
/// directory are reported: their markers would never be read (the note names no path).
fn hooks_attention(agent: markers::HookAgent, reading: Option<&std::path::Path>) -> (bool, String) {
    const ELSEWHERE: &str = "permission prompts are not detected — the hooks write to another \
                             marker directory than this dashboard reads: restart the dashboard";
    let (run, name) = match agent {
        markers::HookAgent::Claude => (
            "permission prompts are not detected — run `agentwatch-ws hooks install`",
            "Claude Code",
        ),
        markers::HookAgent::Gemini => (
            "permission prompts are not detected — run `agentwatch-ws hooks install --agent gemini`",
            "Gemini CLI",
        ),
    };
    let Some(path) = agent.default_settings() else {
        return (false, run.to_owned());
    };
    match markers::agent_hooks_status(agent, &path) {
        HooksStatus::Installed => {
            let written = markers::read_settings(&path)
                .ok()
                .flatten()
                .and_then(|settings| markers::installed_marker_dir(&settings))
                .or_else(markers::default_marker_dir);
            if same_dir(written.as_deref(), reading) {
                (true, String::new())
            } else {
                (false, ELSEWHERE.to_owned())
            }
        }
        HooksStatus::Partial(_) | HooksStatus::NotInstalled => (false, run.to_owned()),
        HooksStatus::Unreadable(why) => (
            false,
            format!("permission prompts are not detected — {name}'s settings: {why}"),
        ),
    }
}

/// Whether two marker directories are one (compared as written, then resolved).
fn same_dir(a: Option<&std::path::Path>, b: Option<&std::path::Path>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a == b
                || matches!(
                    (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        _ => false,
    }
}

/// `GET /attention`: reads Claude Code's and Gemini CLI's settings on each request (the page asks once a
/// minute), so installing or removing the hooks shows without a restart.
async fn attention(State(state): State<Attention>) -> Response {
    match tokio::task::spawn_blocking(move || state.check()).await {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The broker side of a `--redis` node.
struct Node {
    follower: FollowerHandle,
    /// On a `--publish` node: the producer, flushed on the way out.
    producer: Option<BrokerSink>,
}

/// `url` without its password (`redis://user:secret@host` → `redis://user:…@host`), for
/// printing.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:…@{host}")
        }
        None => url.to_string(),
    }
}

/// Starts the follower (and, with `--publish`, the producer) of a `--redis` node.
fn start_node(url: &str, opts: &Options, store: &SessionStore, hub: &Hub) -> Result<Node, String> {
    let open = || {
        RedisBroker::open(url, opts.stream.clone())
            .map_err(|error| format!("--redis {}: {error}", redacted(url)))
    };
    let follower = Follower::new(open()?, store.clone(), hub.clone()).spawn();
    let producer = if opts.publish {
        Some(BrokerSink::builder(open()?).spawn())
    } else {
        None
    };
    Ok(Node { follower, producer })
}

/// Waits until the follower has built this node's state from the broker, saying what it
/// waits for when that takes a while (the broker is not up yet: the follower retries with
/// backoff). `false` when stopped meanwhile (Ctrl-C).
async fn wait_for_broker(node: &Node, url: &str, stream: &str) -> bool {
    let built = node.follower.ready();
    tokio::pin!(built);
    let stop = stop_requested();
    tokio::pin!(stop);
    let patience = tokio::time::sleep(Duration::from_secs(1));
    tokio::select! {
        () = &mut built => return true,
        () = &mut stop => return false,
        () = patience => {}
    }
    println!(
        "waiting for the broker at {} (stream {stream}): retrying until it answers (Ctrl-C to stop)",
        redacted(url)
    );
    tokio::select! {
        () = built => true,
        () = stop => false,
    }
}

/// Runs the dashboard with these arguments (those after `dashboard`, or after `--` of
/// `cargo run --example dashboard --`) until Ctrl-C or SIGTERM; the exit code as documented
/// above.
pub fn run(args: Vec<String>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve_dashboard(args))
}

async fn serve_dashboard(args: Vec<String>) -> ExitCode {
    // Logs go to stderr; stdout carries only the URL line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let opts = match parse_args(args) {
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
        .max_connections(NonZeroUsize::new(opts.max_connections))
        // By default a developer reloading the page 20 times a minute is never refused (the
        // crate's default, 12 a minute with a burst of 4, refuses the fifth quick reload).
        .rate_limit(RateLimit::per_minute(opts.rate_limit.0).burst(opts.rate_limit.1));
    let hub = ws.hub();

    let node = match &opts.redis {
        Some(url) => match start_node(url, &opts, &store, &hub) {
            Ok(node) => Some(node),
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    // Pushes come from the node that runs the input (one push per wait, not one per node).
    let notifier = match (opts.notify.is_empty(), opts.has_input()) {
        (false, true) => {
            let page = (opts.port != 0).then(|| format!("http://127.0.0.1:{}/", opts.port));
            match notify::Notifier::start(opts.notify.clone(), page) {
                Ok(notifier) => Some(notifier),
                Err(message) => {
                    eprintln!("error: {message}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let output = match (&node, opts.has_input()) {
        (_, false) => None,
        (
            Some(Node {
                producer: Some(sink),
                ..
            }),
            true,
        ) => Some(Arc::new(Output::broker(sink.clone(), notifier.clone()))),
        (_, true) => Some(Arc::new(Output::local(
            Publisher::new(store.clone(), hub.clone()),
            notifier.clone(),
        ))),
    };

    let mut app = Router::new().route("/", get(index));
    if let (true, Some(output)) = (opts.inject, &output) {
        tracing::warn!("--inject: POST /debug/sessions is enabled (tests and demos only)");
        app = app.merge(
            Router::new()
                .route("/debug/sessions", post(inject_session))
                .with_state(AppState {
                    output: output.clone(),
                }),
        );
    }
    let attention_state = Attention::default();
    let app = app
        .merge(
            Router::new()
                .route("/attention", get(attention))
                .with_state(attention_state.clone()),
        )
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

    let input = match &output {
        Some(output) => match start_input(&opts, output, &attention_state) {
            Ok(input) => Some(input),
            Err(error) => {
                eprintln!("error: cannot start the monitor: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };

    if let (Some(node), Some(url)) = (&node, &opts.redis) {
        let role = if opts.publish {
            "publishing the input into it and serving"
        } else {
            "serving"
        };
        println!(
            "broker: {} stream {} ({role} from it)",
            redacted(url),
            opts.stream
        );
        if !wait_for_broker(node, url, &opts.stream).await {
            if let Some(input) = input {
                input.stop().await;
            }
            return ExitCode::SUCCESS;
        }
        println!(
            "broker: state built from the stream (seq {})",
            agentwatch_ws::SnapshotSource::snapshot(&store).seq
        );
    }

    println!("agentwatch dashboard: open http://{local}/  (Ctrl-C to stop)");

    // TCP_NODELAY, a deadline on request heads, and connect info for the rate limit.
    let served = agentwatch_ws::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(hub.clone()))
        .await;

    if let Some(input) = input {
        input.stop().await;
    }
    if let Some(node) = &node {
        if let Some(producer) = &node.producer {
            // The input's last events go out to the other nodes, unless the broker is gone.
            if tokio::time::timeout(Duration::from_secs(2), producer.flush())
                .await
                .is_err()
            {
                tracing::warn!(
                    queued = producer.stats().queued,
                    appended = producer.stats().appended,
                    "the broker did not take the last events within 2 s"
                );
            }
        }
        node.follower.stop();
    }
    // Give the closing handshakes a moment to go out before the runtime goes away: every
    // connection task has ended when `closed()` resolves.
    let _ = tokio::time::timeout(Duration::from_secs(2), hub.closed()).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: server failed: {error}");
            ExitCode::FAILURE
        }
    }
}
