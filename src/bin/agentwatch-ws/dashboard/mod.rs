//! A live dashboard of AI coding-agent sessions: your real Claude Code, Codex CLI, Gemini CLI,
//! Pi, Cursor, OpenCode and Antigravity CLI sessions, read from their logs by the crate's [`Monitor`], or a simulated monitor.
//!
//! ```text
//! agentwatch-ws dashboard                      # installed: cargo install agentwatch-ws --features cli
//! cargo run --example dashboard                # the same, from a clone: http://127.0.0.1:3000/
//! cargo run --example dashboard -- --help      # every flag, its default and its rules
//! ```
//!
//! The flags, their defaults and the input they choose are documented once, in `--help`
//! ([`Flags`]); this page describes what the dashboard does with them.
//!
//! **Which input.** Without flags it watches the default log roots that exist
//! ([`agentwatch_ws::monitor::default_roots`], read from the environment at start, so
//! `HOME=/some/dir cargo run --example dashboard -- --port 8080` shows that home's agents).
//! Roots that hold no log at all count as none, and with none it runs the simulation (and
//! says so). Roots whose logs are all older than 5 minutes are still watched (an agent
//! started now appears at once): the dashboard says so and stays empty until then; `--demo`
//! shows the simulation. The simulation has `claude`, `codex` and `gemini` sessions
//! discovered over time, several per repository, working, waiting for the user and idle,
//! tools running, context windows filling, sessions ending, resumed and removed, source health
//! degrading and recovering.
//!
//! **The page** is one embedded file (`index.html`: no CDN, works offline, usable down to
//! 360 px wide and by keyboard) meant to stay open all day. One card per session, named by
//! slug, repository and branch (full text on hover), with model, tokens, context
//! utilisation, current tool, counts, activity and the time since its last activity, ticking
//! live. Sessions waiting for you come first, longest wait on top, marked; then working,
//! idle, ended. Other sorts (recent activity, name, tokens, newest), grouping by repository
//! with counts, a filter by source and status and a search over slug, branch, directory and
//! model are all kept in the URL, so a view can be bookmarked; `/#session=ID` opens the page
//! at that card. The header holds totals by state and tokens, per-source session counts and
//! health; a feed lists lifecycle and health changes by name. The connection status says why:
//! connected, "reconnecting in N s" with the server's close reason (backing off from 0.5 s
//! doubling to 15 s), or "refused: too many connection attempts — retrying in 12 s" (read
//! from `/ws/status`, since a browser cannot read a refused handshake's status). Reconnects
//! ask for only the missed events (`/ws?since=<seq>&since_at=<at>`); a server that cannot
//! serve them (a restarted one) answers with a `snapshot`, which replaces the page's state.
//!
//! **When a session waits for you.** The tab title counts the waiting sessions (`(2
//! waiting) agentwatch · …`) and the favicon carries an amber mark with the count. The
//! header's "notify me" switches on browser notifications (the permission is asked on that
//! click; the choice is kept in `localStorage`): while the tab is hidden or unfocused, a
//! session that starts waiting shows one notification, "api-server (claude) wants to run
//! Bash" (a permission prompt), "… finished its turn" or "… waiting for input" (no message
//! yet), tagged per session so a newer one replaces the older, once the wait has lasted
//! 1.5 s (a reply written as text then a tool call can look like a finished turn for a
//! moment); clicking it brings the page forward at that session's card. "sound" adds a
//! short beep (off by default). A wait is known by its session id and start
//! (`lastActivityAt`): each is announced once, across reloads, reconnects, snapshots and
//! tabs, and waits that began before the page was opened (or before notifications were
//! switched on) are not announced; a card says "waiting for you · 13m 05s", counted from the
//! wait's start. With no page open, `--notify-url` pushes the same news ([`notify`]: the
//! body, the queue, the retries).
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
//! the [`Publisher`] the [`WsLayer`] was built with, which stamps each with the next `seq`,
//! keeps the state each connecting browser gets as its first `snapshot`, and fans out the
//! live stream. With `--redis --publish` the same stamped events go into a [`BrokerSink`]
//! instead, and a [`Follower`] publishes the broker's stream into the publisher (without
//! `--publish`, only the follower runs). The page (`index.html`, embedded in the binary) is
//! served at `/`, the WebSocket at `/ws`. On Ctrl-C the monitor and the publisher are
//! stopped, so every browser sees
//! close code 1001.
//!
//! **Admission.** Upgrades are rate-limited per client IP to 60 a minute with a burst of 20
//! (`--rate-limit N,B`), so a developer reloading the page 20 times a minute is never refused
//! (the crate's default, 12 a minute with a burst of 4, refuses the fifth quick reload).
//! The same admission guards the HTTP API it serves for scripts and status bars
//! ([`WsLayer::http_api`]: `GET /sessions`, `/sessions/{id}`, `/healthz`, `/sources`, Go's
//! JSON), e.g. `curl -s http://127.0.0.1:3000/healthz`; each request there counts against
//! the same per-minute budget (a limiter of its own), so poll no faster than it allows.
//! `--inject` (tests and demos only) enables `POST /debug/sessions` and `POST /debug/health`,
//! which publish a session or a health report through the same publisher as the input; the
//! browser tests use them.
//!
//! **Several nodes, several machines.** With `--redis URL` the dashboard is one node of a
//! cluster on one Redis stream. Nodes with `--publish` run the input and publish it as one
//! machine each (`--machine NAME`, default the host name): a team's laptops each publish
//! their agents, and every node serves the union, each session and source health labelled
//! with its machine (the page groups and filters by it). Nodes without `--publish` run no
//! input and serve what the stream holds. A publishing node does not serve its input
//! directly: it too serves it back from the broker, so every node sends the same bytes.
//!
//! ```text
//! cargo run --example dashboard -- --redis redis://127.0.0.1:6379 --publish --machine alice --port 3001
//! cargo run --example dashboard -- --redis redis://127.0.0.1:6379 --publish --machine bob --port 3002
//! cargo run --example dashboard -- --redis redis://127.0.0.1:6379 --port 3003
//! ```
//!
//! Each prints `broker: redis://127.0.0.1:6379 stream agentwatch:events (serving from it)`
//! (a publisher first `broker: publishing as machine alice`, then `publishing the input into
//! it and serving from it`), then `broker: state built from the stream (seq N)` and its URL. With Redis down it prints `waiting for the broker at redis://127.0.0.1:6379 (stream
//! agentwatch:events): retrying until it answers` and serves once it does. `--nats
//! nats://127.0.0.1:4222` does the same on NATS JetStream (`nats-server -js`). A second
//! `--publish` with a machine name that is live is refused (exit 2). A publisher restarted
//! replaces only its own machine's sessions; one that stops for 20 s is marked gone (its
//! sessions ended, its sources failed) until it comes back. Every node serves the same
//! events with the same `seq` and `at`, so a page reconnects anywhere with
//! `?since=<seq>&since_at=<at>` and
//! gets only what it missed. A page reconnects to its own origin: to move to another node,
//! the nodes sit behind one address (a load balancer sending `/ws` to any live node; no
//! stickiness is needed). `tests/dashboard/cluster.rs` runs three dashboard processes and
//! checks that their messages are byte-for-byte equal and that a client moving from one to
//! another with its position gets exactly what it missed, without a snapshot.

mod notify;
mod sim;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentwatch_ws::broker::{
    Broker, BrokerError, BrokerSink, Follower, FollowerHandle, NatsBroker, RedisBroker,
};
use agentwatch_ws::markers::{self, HooksStatus};
use agentwatch_ws::monitor::{Monitor, MonitorHandle, SourceKind};
use agentwatch_ws::privacy::{Field, Policy, PseudonymKey};
use agentwatch_ws::{Event, EventSink, Publisher, RateLimitPolicy, SinkError, WsLayer};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use clap::{CommandFactory, Parser};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Events a client may fall behind before the lag policy applies.
const SEND_BUFFER: usize = 256;

const INDEX_HTML: &str = include_str!("index.html");

/// The stream key when `--stream` is not given.
const DEFAULT_STREAM: &str = "agentwatch:events";

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
    /// `--redis URL` or `--nats URL`: serve from this broker.
    broker: Option<BrokerUrl>,
    /// `--stream KEY`.
    stream: String,
    /// `--machine NAME`: the machine name this node publishes under.
    machine: Option<String>,
    /// `--publish`: run the input and publish it into the broker.
    publish: bool,
    /// The input flags given (`--demo`, `--rate`…), for the error on a node without input.
    input_flags: Vec<String>,
    /// `--notify-url URL` (repeatable): where new waits are pushed.
    notify: Vec<notify::Target>,
    /// `--redact FIELDS`: what the page and the HTTP API hide.
    redact: Policy,
    /// `$AGENTWATCH_PSEUDONYM_KEY`: the key pseudonyms are made with (else a random one).
    pseudonym_key: Option<PseudonymKey>,
}

impl Options {
    /// Whether this process runs an input (the monitor or the simulation).
    fn has_input(&self) -> bool {
        self.broker.is_none() || self.publish
    }
}

/// The broker a node serves from, by engine.
#[derive(Debug, Clone)]
enum BrokerUrl {
    /// `--redis URL`: Redis Streams.
    Redis(String),
    /// `--nats URL`: NATS JetStream.
    Nats(String),
}

impl BrokerUrl {
    fn url(&self) -> &str {
        match self {
            BrokerUrl::Redis(url) | BrokerUrl::Nats(url) => url,
        }
    }

    fn flag(&self) -> &'static str {
        match self {
            BrokerUrl::Redis(_) => "--redis",
            BrokerUrl::Nats(_) => "--nats",
        }
    }
}

/// Serve a live dashboard of your AI coding agents' sessions on 127.0.0.1.
///
/// Without input flags it watches the default log roots that exist, read from the
/// environment at start: $HOME/.claude/projects, $HOME/.config/claude/projects and
/// <dir>/projects for each <dir> of $CLAUDE_CONFIG_DIR (Claude Code), $CODEX_HOME/sessions,
/// else $HOME/.codex/sessions (Codex CLI), $HOME/.gemini/tmp (Gemini CLI),
/// $PI_CODING_AGENT_SESSION_DIR, else $HOME/.pi/agent/sessions (Pi), $CURSOR_CONFIG_DIR/projects
/// or $HOME/.cursor/projects (Cursor), $XDG_DATA_HOME/opencode, else
/// $HOME/.local/share/opencode (OpenCode) and $HOME/.gemini/antigravity-cli (Antigravity CLI).
/// It prints
/// each root it watches and how many recent sessions it found (logs written within the last
/// 5 minutes; older ones join when they change). When no root exists, or the roots hold no
/// log at all, it runs a simulation instead and says so; when they hold only older logs it
/// still watches them (an agent started now shows up at once) and says so.
///
/// With --redis (or --nats) it is one node of a cluster fed through a Redis (or NATS JetStream)
/// stream: every node serves the same events with the same seq and at, so a page can resume
/// on any node. Nodes with --publish run the input and publish it as one machine each
/// (--machine, default the host name); every node shows every machine's agents, labelled.
/// Exit status 2 also when --machine names a machine another live publisher holds.
///
/// Exit status: 0 after Ctrl-C or SIGTERM (every browser is closed with 1001), 1 when the
/// port is taken or the server fails, 2 for a bad flag or a --redis or --nats URL that cannot
/// be used.
#[derive(Parser, Debug)]
#[command(
    name = "dashboard",
    version,
    args_override_self = true,
    after_long_help = "\
Examples:
  dashboard                                   # http://127.0.0.1:3000/
  dashboard --demo --rate 10 --seed 7         # the simulation, faster, another story
  dashboard --claude ~/work/claude-logs --port 8080
  HOME=/some/dir dashboard --port 8080        # that home's agents
  PORT=8080 RUST_LOG=agentwatch_ws=debug dashboard
  dashboard --notify-url https://ntfy.sh/my-secret-topic
  dashboard --redact dir,branch,id            # for a shared screen: no paths, branches or ids

  # two machines publish into one Redis, three nodes serve both machines' agents
  dashboard --redis redis://127.0.0.1:6379 --publish --machine alice --port 3001
  dashboard --redis redis://127.0.0.1:6379 --publish --machine bob --port 3002
  dashboard --redis redis://127.0.0.1:6379 --port 3003"
)]
struct Flags {
    /// Port to listen on, on 127.0.0.1 [default: $PORT, else 3000].
    ///
    /// 0 picks a free port (the URL line says which).
    #[arg(long, short = 'p', value_name = "N")]
    port: Option<u16>,

    /// Run the simulation instead of watching agent logs, whatever logs exist.
    ///
    /// Claude, Codex and Gemini sessions discovered over time, several per repository,
    /// working, waiting for you and idle, running tools, filling their context windows,
    /// ending, resumed and removed, and source health degrading and recovering.
    #[arg(long)]
    demo: bool,

    /// Watch this Claude Code projects root (repeatable; replaces the default roots).
    ///
    /// A directory that does not exist is an error. Not with --demo.
    #[arg(long, value_name = "DIR")]
    claude: Vec<PathBuf>,

    /// Watch this Codex CLI sessions root (repeatable; replaces the default roots).
    ///
    /// A directory that does not exist is an error. Not with --demo.
    #[arg(long, value_name = "DIR")]
    codex: Vec<PathBuf>,

    /// Watch this Gemini CLI tmp root (repeatable; replaces the default roots).
    ///
    /// A directory that does not exist is an error. Not with --demo.
    #[arg(long, value_name = "DIR")]
    gemini: Vec<PathBuf>,

    /// Watch this Pi sessions dir (repeatable; replaces the default roots).
    ///
    /// A directory that does not exist is an error. Not with --demo.
    #[arg(long, value_name = "DIR")]
    pi: Vec<PathBuf>,

    /// Watch this Cursor projects root, like ~/.cursor/projects (repeatable; replaces the
    /// default roots).
    ///
    /// A directory that does not exist is an error. Not with --demo.
    #[arg(long, value_name = "DIR")]
    cursor: Vec<PathBuf>,

    /// Watch this OpenCode data dir, holding opencode.db (repeatable; replaces the default
    /// roots).
    ///
    /// A directory that does not exist is an error. Not with --demo.
    #[arg(long, value_name = "DIR")]
    opencode: Vec<PathBuf>,

    /// Watch this Antigravity CLI dir, like ~/.gemini/antigravity-cli (repeatable; replaces
    /// the default roots).
    ///
    /// A directory that does not exist is an error. Not with --demo.
    #[arg(long, value_name = "DIR")]
    antigravity: Vec<PathBuf>,

    /// Simulated events per second, in (0, 10000] [default: 5].
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: Option<f64>,

    /// Seed of the simulation; the same seed tells the same story [default: 1, or with
    /// --machine one drawn from the machine name, so that machines simulating side by side
    /// tell different stories].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Tests and demos only: enable POST /debug/sessions?id=ID&source=SRC and
    /// POST /debug/health?source=SRC&status=STATUS.
    ///
    /// The first publishes a delta adding (or updating) the session with that id through the
    /// same publisher as the monitor or the simulation; more query fields: slug, activity,
    /// tool, at_ms (the activity's time, Unix milliseconds), messages, tokens, output,
    /// idle_secs, dir, branch, machine (the producer's name, as a broker node serving several
    /// producers sets it). The second publishes a health report for that source (status:
    /// healthy, degraded or failed; more: machine, error). Never enable it on a server
    /// others can reach.
    #[arg(long)]
    inject: bool,

    /// Push each new wait as a JSON POST, for when no page is open (repeatable).
    ///
    /// https://ntfy.sh/TOPIC (any URL whose last path segment is the topic) uses ntfy's JSON
    /// publish, posted to the URL without the topic; a URL ending in / is a generic webhook,
    /// posted as given. One push per wait once it has lasted 1.5 s, none for waits that began
    /// before the start; at most 64 queued per URL, 10 s per try, up to 5 tries for a
    /// connection failure, a timeout, 408, 429 or 5xx. Credentials and query strings in the
    /// URL are refused; the URL is never printed. With --redis, only the --publish node
    /// pushes.
    #[arg(long = "notify-url", value_name = "URL")]
    notify_url: Vec<String>,

    /// At most N WebSocket clients at once; 0 = unlimited [default: 0].
    ///
    /// Over it, an upgrade is answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    max_connections: usize,

    /// At most N upgrades a minute per client IP, B of them at once; 0,0 disables the limit.
    ///
    /// Over it the answer is 429 with Retry-After. The default admits 20 quick reloads, then
    /// one a second.
    #[arg(long, value_name = "N,B", value_parser = parse_rate_limit, default_value = "60,20")]
    rate_limit: (u32, u32),

    /// Serve from this Redis broker (redis://host:port), as one node of a cluster.
    ///
    /// A follower builds this node's state from the stream and feeds it; a broker that does
    /// not answer at start is retried with backoff (the node says what it waits for, and
    /// serves once the state is built). Without --publish the node runs no input, and the
    /// input flags are an error.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,

    /// Serve from this NATS JetStream broker (nats://host:port) instead, as one node of a
    /// cluster.
    ///
    /// As --redis, on a JetStream stream (nats-server -js); --publish and --stream apply the
    /// same way.
    #[arg(long, value_name = "URL", conflicts_with = "redis")]
    nats: Option<String>,

    /// With --redis or --nats: also run the input and publish it into the broker, as one
    /// machine among any number.
    ///
    /// This node then serves it back through its own follower, like every other node, so all
    /// nodes serve the identical stream: every publishing machine's sessions, labelled with
    /// its name. A restart replaces only this machine's sessions.
    #[arg(long)]
    publish: bool,

    /// With --publish: the machine name this node publishes under [default: the host name].
    ///
    /// 1 to 64 bytes without control characters, compared exactly (exit 2 otherwise). One live
    /// publisher per name: a second one is refused (exit 2) until the first has been silent
    /// for 20 s, after which every node shows the first machine's sessions as ended and its
    /// sources as failed ("gone").
    #[arg(long, value_name = "NAME", requires = "publish")]
    machine: Option<String>,

    /// With --redis or --nats: the stream key [default: agentwatch:events].
    #[arg(long, value_name = "KEY")]
    stream: Option<String>,

    /// Hide these session fields from the page and the HTTP API: dir, branch, model, id,
    /// source, machine, comma-separated (or all).
    ///
    /// For a shared screen or a dashboard others look at. dir and branch are emptied (the
    /// cards then show no repository or branch), model is emptied, id replaces session ids
    /// with pseudonyms (32 hex digits, stable while the dashboard runs, so links and
    /// notifications still work) and empties slugs, source empties the agent's name (health
    /// reports keep a pseudonym), machine replaces machine names with pseudonyms (the page
    /// still groups by machine). Error texts in health reports are emptied under dir, id,
    /// source or machine. --notify-url pushes are not redacted: they go to your own receivers. For a
    /// policy per viewer (per token), build your own server with the crate's
    /// WsLayer::policy_for.
    ///
    /// Pseudonyms come from a key drawn at start, or from $AGENTWATCH_PSEUDONYM_KEY (any text;
    /// 16 random bytes or more): with --redis or --nats, every node must be given the same
    /// one (a page that reconnects to another node must meet the pseudonyms it knows), so
    /// --redact with id, source or machine on such a node without it is an error.
    #[arg(long, value_name = "FIELDS", value_parser = parse_policy)]
    redact: Option<Policy>,
}

/// `--redact`: a privacy policy's text form.
fn parse_policy(v: &str) -> Result<Policy, String> {
    v.parse::<Policy>().map_err(|error| error.to_string())
}

/// `--rate`: a finite number of events per second in (0, 10000].
fn parse_rate(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 10_000.0)
        .ok_or_else(|| "must be a number of events per second in (0, 10000]".to_string())
}

/// `--rate-limit N,B`: upgrades a minute, burst.
fn parse_rate_limit(v: &str) -> Result<(u32, u32), String> {
    v.split_once(',')
        .and_then(|(n, b)| Some((n.trim().parse().ok()?, b.trim().parse().ok()?)))
        .ok_or_else(|| "must be N,B: upgrades a minute, burst".to_string())
}

/// A usage error in clap's format (`error: …`, the usage line, a pointer to `--help`), exit
/// code 2.
fn usage_error(message: impl std::fmt::Display) -> clap::Error {
    Flags::command().error(clap::error::ErrorKind::ValueValidation, message)
}

impl TryFrom<Flags> for Options {
    type Error = clap::Error;

    /// The checks clap cannot express with the messages they deserve: roots that exist, flags
    /// that exclude each other, `--notify-url` validated without echoing it (it may hold a
    /// secret topic), and `$PORT`.
    fn try_from(flags: Flags) -> Result<Options, clap::Error> {
        let mut roots = Vec::new();
        for (flag, source, dirs) in [
            ("--claude", SourceKind::Claude, &flags.claude),
            ("--codex", SourceKind::Codex, &flags.codex),
            ("--gemini", SourceKind::Gemini, &flags.gemini),
            ("--pi", SourceKind::Pi, &flags.pi),
            ("--cursor", SourceKind::Cursor, &flags.cursor),
            ("--opencode", SourceKind::OpenCode, &flags.opencode),
            ("--antigravity", SourceKind::Antigravity, &flags.antigravity),
        ] {
            for dir in dirs {
                if !dir.is_dir() {
                    return Err(usage_error(format_args!(
                        "{flag} {}: no such directory",
                        dir.display()
                    )));
                }
                roots.push((source, dir.clone()));
            }
        }
        if flags.demo && !roots.is_empty() {
            return Err(usage_error(
                "--demo runs the simulation: it cannot be combined with --claude, --codex, \
                 --gemini, --pi, --cursor, --opencode or --antigravity",
            ));
        }
        let broker = match (flags.redis, flags.nats) {
            (Some(url), _) => Some(BrokerUrl::Redis(url)),
            (None, Some(url)) => Some(BrokerUrl::Nats(url)),
            (None, None) => None,
        };
        if broker.is_none() && (flags.publish || flags.stream.is_some()) {
            return Err(usage_error(
                "--publish and --stream are about a broker: give it with --redis URL or \
                 --nats URL",
            ));
        }
        if flags.stream.as_deref() == Some("") {
            return Err(usage_error("--stream needs a non-empty key"));
        }
        let input_flags: Vec<String> = [
            ("--demo", flags.demo),
            ("--claude", !flags.claude.is_empty()),
            ("--codex", !flags.codex.is_empty()),
            ("--gemini", !flags.gemini.is_empty()),
            ("--pi", !flags.pi.is_empty()),
            ("--cursor", !flags.cursor.is_empty()),
            ("--opencode", !flags.opencode.is_empty()),
            ("--antigravity", !flags.antigravity.is_empty()),
            ("--rate", flags.rate.is_some()),
            ("--seed", flags.seed.is_some()),
            ("--inject", flags.inject),
            ("--notify-url", !flags.notify_url.is_empty()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| flag.to_string())
        .collect();
        let mut notify = Vec::new();
        for url in &flags.notify_url {
            notify.push(notify::Target::parse(url).map_err(usage_error)?);
        }
        let port = match flags.port {
            Some(port) => port,
            None => match std::env::var("PORT") {
                Ok(port) => port
                    .trim()
                    .parse()
                    .map_err(|_| usage_error(format_args!("PORT={port:?} is not a port number")))?,
                Err(_) => 3000,
            },
        };
        let opts = Options {
            port,
            rate: flags.rate.unwrap_or(5.0),
            seed: flags.seed.unwrap_or_else(|| {
                // FNV-1a of the machine name: a stable seed per machine.
                flags.machine.as_deref().map_or(1, |machine| {
                    machine
                        .bytes()
                        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
                        })
                })
            }),
            inject: flags.inject,
            max_connections: flags.max_connections,
            rate_limit: flags.rate_limit,
            demo: flags.demo,
            roots,
            broker,
            stream: flags.stream.unwrap_or_else(|| DEFAULT_STREAM.to_string()),
            machine: flags.machine,
            publish: flags.publish,
            input_flags,
            notify,
            redact: flags.redact.unwrap_or_default(),
            pseudonym_key: std::env::var_os("AGENTWATCH_PSEUDONYM_KEY")
                .filter(|key| !key.is_empty())
                .map(|key| PseudonymKey::from_bytes(key.as_encoded_bytes())),
        };
        if opts.broker.is_some()
            && (opts.redact.redacts(Field::SessionId)
                || opts.redact.redacts(Field::Source)
                || opts.redact.redacts(Field::Machine))
            && opts.pseudonym_key.is_none()
        {
            return Err(usage_error(
                "--redact with id, source or machine on a --redis or --nats node needs \
                 AGENTWATCH_PSEUDONYM_KEY: \
                 every node must pseudonymise with the same key, or a page that reconnects to \
                 another node meets ids it never saw",
            ));
        }
        if !opts.has_input() && !opts.input_flags.is_empty() {
            return Err(usage_error(format_args!(
                "input flags ({}) need --publish: with --redis, a node without --publish runs \
                 no input and serves from the broker only",
                opts.input_flags.join(", ")
            )));
        }
        Ok(opts)
    }
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

    /// A producer into the broker. It starts with a resync of its (empty) state, which tells
    /// every node to replace what an earlier producer of the same machine left (a producer
    /// restarting: clients get a snapshot, seqs keep rising).
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
    if q.more.machine.as_ref().is_some_and(|m| m.len() > 200) {
        return (
            StatusCode::BAD_REQUEST,
            "machine must be at most 200 bytes\n",
        )
            .into_response();
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

#[derive(Deserialize)]
struct InjectHealthQuery {
    source: String,
    status: String,
    machine: Option<String>,
    error: Option<String>,
}

/// `POST /debug/health?source=SRC&status=STATUS[&machine=M][&error=TEXT]` (only with
/// `--inject`): publishes that source's health report, stamped now.
async fn inject_health(
    State(state): State<AppState>,
    Query(q): Query<InjectHealthQuery>,
) -> Response {
    let too_long = [Some(&q.source), Some(&q.status), q.machine.as_ref()]
        .into_iter()
        .flatten()
        .any(|v| v.len() > 200);
    if q.source.is_empty() || q.status.is_empty() || too_long {
        return (
            StatusCode::BAD_REQUEST,
            "source and status must be 1 to 200 bytes, machine at most 200\n",
        )
            .into_response();
    }
    let failing = q.status != "healthy";
    let health = agentwatch_ws::Health {
        source: q.source,
        status: agentwatch_ws::HealthStatus::from(q.status.as_str()),
        discover_failures: i64::from(failing),
        last_error: q.error.unwrap_or_default(),
        updated_at: agentwatch_ws::Timestamp::now(),
        machine: q.machine.unwrap_or_default(),
        ..Default::default()
    };
    let (source, machine) = (health.source.clone(), health.machine.clone());
    let seq = publish_all(&state.output, vec![Event::health(0, health)]);
    tracing::info!(%source, %machine, seq, "injected health report");
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

async fn shutdown_signal(publisher: Publisher) {
    stop_requested().await;
    tracing::info!("shutting down: closing WebSocket clients with 1001");
    publisher.stop();
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
        println!("watching {source:<6} {}", root.display());
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

/// The broker side of a `--redis` or `--nats` node.
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

/// Starts the follower (and, with `--publish`, the producer) of a `--redis` or `--nats` node.
fn start_node(broker: &BrokerUrl, opts: &Options, publisher: &Publisher) -> Result<Node, String> {
    let url = broker.url();
    let error = |error: BrokerError| format!("{} {}: {error}", broker.flag(), redacted(url));
    match broker {
        BrokerUrl::Redis(_) => start_follower(
            || RedisBroker::open(url, opts.stream.clone()).map_err(error),
            opts,
            publisher,
        ),
        BrokerUrl::Nats(_) => start_follower(
            || NatsBroker::open(url, opts.stream.clone()).map_err(error),
            opts,
            publisher,
        ),
    }
}

/// The follower on the broker `open` opens, and with `--publish` the producer.
fn start_follower<B: Broker>(
    open: impl Fn() -> Result<B, String>,
    opts: &Options,
    publisher: &Publisher,
) -> Result<Node, String> {
    let follower = Follower::new(open()?, publisher.clone()).spawn();
    let producer = if opts.publish {
        let mut builder = BrokerSink::builder(open()?);
        if let Some(machine) = &opts.machine {
            builder = builder.machine(machine.clone());
        }
        Some(builder.spawn())
    } else {
        None
    };
    Ok(Node { follower, producer })
}

/// Waits for `until` while the broker may not be up yet (whoever waits on it retries with
/// backoff), printing `waiting` once if that takes over a second. `None` when stopped
/// meanwhile (Ctrl-C).
async fn wait_patiently<T>(
    until: impl std::future::Future<Output = T>,
    waiting: &str,
) -> Option<T> {
    tokio::pin!(until);
    let stop = stop_requested();
    tokio::pin!(stop);
    let patience = tokio::time::sleep(Duration::from_secs(1));
    tokio::select! {
        outcome = &mut until => return Some(outcome),
        () = &mut stop => return None,
        () = patience => {}
    }
    println!("{waiting}: retrying until it answers (Ctrl-C to stop)");
    tokio::select! {
        outcome = until => Some(outcome),
        () = stop => None,
    }
}

/// Waits until the follower has built this node's state from the broker, saying what it
/// waits for when that takes a while. `false` when stopped meanwhile (Ctrl-C).
async fn wait_for_broker(node: &Node, url: &str, stream: &str) -> bool {
    let waiting = format!(
        "waiting for the broker at {} (stream {stream})",
        redacted(url)
    );
    wait_patiently(node.follower.ready(), &waiting)
        .await
        .is_some()
}

/// Runs the dashboard with these command-line arguments, the program's name first (as
/// [`std::env::args_os`] gives them; `agentwatch-ws dashboard` passes its own name and the
/// arguments after `dashboard`) until Ctrl-C or SIGTERM. `--help` and `--version` print and
/// return 0; a bad flag prints clap's error and returns 2.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let opts = match Flags::try_parse_from(args).and_then(Options::try_from) {
        Ok(opts) => opts,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
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
    runtime.block_on(serve_dashboard(opts))
}

async fn serve_dashboard(opts: Options) -> ExitCode {
    // Logs go to stderr; stdout carries only the URL line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let ws = WsLayer::new()
        .heartbeat(Duration::from_secs(30))
        // Room for bursts at a high --rate. A tab that still falls behind is closed with 1013
        // and reconnects with `?since=`, resuming from the hub's replay window.
        .send_buffer(SEND_BUFFER)
        .write_timeout(Duration::from_secs(10))
        // 0: no cap (the flag's documented meaning).
        .max_connections((opts.max_connections > 0).then_some(opts.max_connections))
        // By default a developer reloading the page 20 times a minute is never refused (the
        // crate's default, 12 a minute with a burst of 4, refuses the fifth quick reload).
        // `--rate-limit 0,0` (either number 0): no limit, as documented for the flag.
        .rate_limit(match opts.rate_limit {
            (0, _) | (_, 0) => None,
            (per_minute, burst) => Some(RateLimitPolicy::per_minute(per_minute).burst(burst)),
        })
        // GET /sessions, /sessions/{id}, /healthz, /sources for curl and status bars, behind
        // the same admission as /ws.
        .http_api(true)
        // --redact: the same policy for every page and every HTTP API request.
        .policy(opts.redact.clone());
    let ws = match opts.pseudonym_key.clone() {
        Some(key) => ws.pseudonym_key(key),
        None => ws,
    };
    let (ws, publisher) = ws.build("/ws");

    let node = match &opts.broker {
        Some(broker) => match start_node(broker, &opts, &publisher) {
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
        (_, true) => Some(Arc::new(Output::local(publisher.clone(), notifier.clone()))),
    };

    let mut app = Router::new().route("/", get(index));
    if let (true, Some(output)) = (opts.inject, &output) {
        tracing::warn!(
            "--inject: POST /debug/sessions and /debug/health are enabled (tests and demos only)"
        );
        app = app.merge(
            Router::new()
                .route("/debug/sessions", post(inject_session))
                .route("/debug/health", post(inject_health))
                .with_state(AppState {
                    output: output.clone(),
                }),
        );
    }
    let attention_state = Attention::default();
    // Under `--redact source` the page must not learn which agents are watched: the notes
    // name them, so none is given.
    let attention_route = if opts.redact.redacts(Field::Source) {
        get(|| async {
            (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(serde_json::json!({ "sources": [] })),
            )
        })
    } else {
        get(attention)
    };
    let app = app
        .merge(
            Router::new()
                .route("/attention", attention_route)
                .with_state(attention_state.clone()),
        )
        .merge(ws);

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

    // The machine name first: a name another live producer holds stops here, before the
    // input starts.
    if let Some(producer) = node.as_ref().and_then(|node| node.producer.as_ref()) {
        let url = opts.broker.as_ref().map_or("", BrokerUrl::url);
        let waiting = format!(
            "waiting for the broker at {} to claim machine {}",
            redacted(url),
            producer.machine()
        );
        let outcome = wait_patiently(producer.started(), &waiting).await;
        match outcome {
            Some(Ok(())) => println!("broker: publishing as machine {}", producer.machine()),
            Some(Err(error)) => {
                eprintln!("error: {error} (--machine NAME)");
                return ExitCode::from(2);
            }
            None => return ExitCode::SUCCESS,
        }
    }
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

    if let (Some(node), Some(url)) = (&node, opts.broker.as_ref().map(BrokerUrl::url)) {
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
            publisher.seq()
        );
    }

    println!("agentwatch dashboard: open http://{local}/  (Ctrl-C to stop)");

    // TCP_NODELAY, a deadline on request heads, and connect info for the rate limit.
    let served = agentwatch_ws::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(publisher.clone()))
        .await;

    if let Some(input) = input {
        input.stop().await;
    }
    if let Some(node) = &node {
        if let Some(producer) = &node.producer {
            // The input's last events go out to the other nodes, then the machine leaves
            // (marked gone at once, its name free), unless the broker is gone.
            if tokio::time::timeout(Duration::from_secs(2), producer.close())
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
    let _ = tokio::time::timeout(Duration::from_secs(2), publisher.closed()).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: server failed: {error}");
            ExitCode::FAILURE
        }
    }
}
