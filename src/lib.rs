//! Stream live AI-coding-agent activity to browsers over WebSocket, as an axum router.
//!
//! [agentwatch] monitors local coding agents (Claude Code, Codex CLI, Gemini CLI, Pi, Cursor,
//! OpenCode, Antigravity CLI) and emits
//! [`Event`]s: `snapshot`, `delta`, `lifecycle` and `health`. This crate serves them to
//! dashboards over WebSocket, in exactly the JSON the Go package `wsapi` writes, so Go clients
//! and dashboards do not notice the switch.
//!
//! [agentwatch]: https://github.com/mrf/agentwatch
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use agentwatch_ws::{Event, SessionState, WsLayer};
//! use axum::Router;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (ws, publisher) = WsLayer::new()
//!     .heartbeat(Duration::from_secs(30)) // None: no pings
//!     .send_buffer(64) // events a client may fall behind before it is closed
//!     .build("/ws"); // the router and the Publisher that feeds it
//! let app: Router = Router::new().merge(ws);
//! let session = SessionState { id: "a8d0e2f4".into(), source: "codex".into(), ..Default::default() };
//! publisher.publish(Event::delta(0, vec![session], vec![]))?; // seq 0: numbered for you
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! agentwatch_ws::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The same, checked without a network:
//!
//! ```
//! use std::time::Duration;
//! use agentwatch_ws::{Event, SessionState, WsLayer};
//! use axum::Router;
//!
//! let (ws, publisher) = WsLayer::new()
//!     .heartbeat(Duration::from_secs(30))
//!     .send_buffer(64)
//!     .build("/ws");
//! let _app: Router = Router::new().merge(ws);
//! let session = SessionState { id: "a8d0e2f4".into(), source: "codex".into(), ..Default::default() };
//! assert_eq!(publisher.publish(Event::delta(0, vec![session], vec![]))?, 1);
//! assert_eq!(publisher.sessions().len(), 1);
//! assert_eq!(publisher.client_count(), 0);
//! # Ok::<(), agentwatch_ws::SinkError>(())
//! ```
//!
//! # What a client sees
//! Every message is one JSON-encoded [`Event`], as text. The first message is always a
//! `snapshot` of every session, whose `seq` is the last event it reflects; then every later
//! event, once each, in publish order (see [`Publisher`] for how the hand-over stays exact
//! while events keep coming). A client that falls `send_buffer` events behind is closed with
//! 1013 or resynced ([`LagPolicy`]); a client that reconnects with `?since=<seq>&since_at=<at>`
//! resumes without a snapshot (see [`WsLayer::replay_window`]).
//!
//! # The pieces
//! Every feature is opt-in: with none, the crate is the transport (the items below up to
//! [`redact`]); the features `monitor`, `redis`, `metrics` and `hooks` add the modules named
//! with them, and `cli` the `agentwatch-ws` command.
//!
//! - [`WsLayer`]: the endpoint's configuration; [`build`](WsLayer::build) returns the axum
//!   [`Router`](axum::Router) and the [`Publisher`].
//! - [`Publisher`]: the one way to publish (the state and the clients, in that order, one
//!   event at a time, `seq` kept rising) and to read the state clients see.
//! - [`EventSink`]: the seam to producers; `Publisher` implements it.
//! - [`wire`]: the event model, byte-compatible with Go's `encoding/json`.
//! - [`serve()`]: serves the app on any `axum::serve::Listener` (TCP, Unix socket, your TLS
//!   listener) with deadlines on request heads (slowloris) and idle connections, HTTP/2
//!   keep-alive, per-IP connection and per-connection stream bounds, `Host` checks,
//!   `TCP_NODELAY` and the connect info the rate limit needs; the recommended way to run it.
//! - [`admission`]: the checks an upgrade passes, in order, with every rejection's status and
//!   body; the origin check, the connection cap and the per-IP rate limit as tower layers
//!   usable on their own; the token carriers an authentication extractor reads.
//! - [`privacy`]: which session fields each viewer may see (working directory, branch,
//!   model, session id, source: Go's `session.Policy`), chosen per viewer from their identity
//!   and applied to every event and HTTP answer they get.
//! - [`redact`]: request URIs for logs without token carriers, and a `TraceLayer` span maker.
//! - [`monitor`] (feature `monitor`): the producer, a [`Monitor`] that reads the session logs
//!   of Claude Code, Codex CLI, Gemini CLI, Pi, Cursor and Antigravity CLI and OpenCode's
//!   database, and publishes events into any sink.
//! - [`broker`] (features `redis`, `nats`): several server nodes fed from producers on any
//!   number of machines through Redis Streams or NATS JetStream, with checkpoints, so
//!   `?since=` resume works on any node.
//! - [`metrics`] (feature `metrics`): the endpoint's counters through the `metrics` facade, for
//!   Prometheus and other exporters.
//! - [`markers`] (features `monitor` or `hooks`): the hook-marker format and the marker
//!   directory, through which Claude Code's and Gemini CLI's hooks tell the monitor about
//!   permission prompts their logs do not show; [`hooks`] (feature `hooks`, enabled by `cli`):
//!   writing markers and installing the hook entries, what the `agentwatch-ws` command is
//!   built from.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs name the feature-gated modules as `[`monitor`]` & co.; built without a
// feature, such a link goes to that item on docs.rs (built with every feature).
#![cfg_attr(
    not(feature = "monitor"),
    doc = "",
    doc = "[`monitor`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/index.html",
    doc = "[`Monitor`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/struct.Monitor.html",
    doc = "[`MonitorBuilder`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/struct.MonitorBuilder.html",
    doc = "[`MonitorHandle`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/struct.MonitorHandle.html"
)]
#![cfg_attr(
    not(any(feature = "redis", feature = "nats")),
    doc = "",
    doc = "[`broker`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/broker/index.html"
)]
#![cfg_attr(
    not(feature = "metrics"),
    doc = "",
    doc = "[`metrics`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/metrics/index.html"
)]
#![cfg_attr(
    not(feature = "hooks"),
    doc = "",
    doc = "[`hooks`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/hooks/index.html"
)]
#![cfg_attr(
    not(any(feature = "monitor", feature = "hooks")),
    doc = "",
    doc = "[`markers`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/markers/index.html"
)]

pub mod admission;
mod backfill;
#[cfg(any(feature = "redis", feature = "nats"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "redis", feature = "nats"))))]
pub mod broker;
mod conn;
mod counters;
mod frame;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod hex;
#[cfg(feature = "hooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "hooks")))]
pub mod hooks;
mod host;
mod http_api;
mod hub;
mod layer;
#[cfg(any(feature = "monitor", feature = "hooks"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "monitor", feature = "hooks"))))]
pub mod markers;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(feature = "monitor")]
#[cfg_attr(docsrs, doc(cfg(feature = "monitor")))]
pub mod monitor;
pub mod privacy;
mod publisher;
pub mod redact;
mod reject;
mod serve;
mod sink;
mod snapshot_cache;
mod status;
mod stop;
mod store;
mod stream_end;
mod upgrade;
pub mod wire;

pub use admission::auth::{Anonymous, Identity};
pub use admission::client_ip::TrustedProxies;
pub use admission::invalid::InvalidSetting;
pub use admission::rate_limit::{MissingClientAddr, RateLimitPolicy};
pub use counters::{HubStats, RejectionStats};
pub use hub::LagPolicy;
pub use layer::WsLayer;
#[cfg(feature = "monitor")]
#[cfg_attr(docsrs, doc(cfg(feature = "monitor")))]
pub use monitor::{Monitor, MonitorBuilder, MonitorHandle};
pub use publisher::Publisher;
pub use reject::RejectReason;
pub use serve::{Serve, WithGracefulShutdown, serve};
pub use sink::{EventSink, SinkError};
pub use upgrade::{PROTOCOL, Subprotocol};
pub use wire::{
    Activity, Event, EventType, Health, HealthStatus, LifecycleEvent, LifecycleEventType,
    LifecycleState, SessionState, SubagentState, Timestamp,
};

/// The README's Rust snippets, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "monitor", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
