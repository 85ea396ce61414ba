//! Stream live AI-coding-agent activity to browsers over WebSocket, as an axum router.
//!
//! [agentwatch] monitors local coding agents (Claude Code, Codex CLI, Gemini CLI, …) and emits
//! [`Event`]s: `snapshot`, `delta`, `lifecycle` and `health`. This crate serves them to
//! dashboards over WebSocket, in exactly the JSON the Go package `wsapi` writes, so Go clients
//! and dashboards do not notice the switch.
//!
//! [agentwatch]: https://github.com/mrf/agentwatch
//!
//! # Quick start
//!
//! ```no_run
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use agentwatch_ws::{Event, EventSink, Hub, MultiSink, SessionState, SessionStore, WsLayer};
//! use axum::Router;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SessionStore::new();
//! let ws = WsLayer::new(store.clone())          // any SnapshotSource
//!     .heartbeat(Duration::from_secs(30))       // ping interval; None disables
//!     .send_buffer(NonZeroUsize::new(64).unwrap()) // per-client queue
//!     .write_timeout(Duration::from_secs(10));
//! let hub: Hub = ws.hub();                      // Clone; impl EventSink
//! let app: Router = Router::new().merge(ws.router("/ws"));
//!
//! // The monitor publishes every event to the store, then to the hub.
//! let monitor = MultiSink::new().with(store).with(hub.clone());
//! let session = SessionState { id: "a8d0e2f4".into(), source: "codex".into(), ..Default::default() };
//! monitor.handle_event(&Event::delta(1, vec![session], vec![]))?;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // A deadline on request heads, TCP_NODELAY, and the client address for the rate limit.
//! agentwatch_ws::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The same snippet, checked without a network:
//!
//! ```
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use agentwatch_ws::{Event, EventSink, Hub, SessionStore, SnapshotSource, WsLayer};
//! use axum::Router;
//!
//! let store = SessionStore::new();
//! let ws = WsLayer::new(store.clone())
//!     .heartbeat(Duration::from_secs(30))
//!     .send_buffer(NonZeroUsize::new(64).unwrap())
//!     .write_timeout(Duration::from_secs(10));
//! let hub: Hub = ws.hub();
//! let app: Router = Router::new().merge(ws.router("/ws"));
//!
//! let event = Event::delta(1, vec![], vec![]);
//! store.handle_event(&event)?;
//! hub.handle_event(&event)?;
//! assert_eq!(store.snapshot().seq, 1);
//! assert_eq!(hub.client_count(), 0);
//! # drop(app);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What a client sees
//! Every message is one JSON-encoded [`Event`], as text. The first message is always a
//! `snapshot` of every session, whose `seq` is the last event it reflects; then every later
//! event, once each, in publish order. See [`SnapshotSource`] for how the hand-over stays exact
//! while events keep coming, and [`Hub`] for what happens to a client that cannot keep up.
//!
//! # The pieces
//! - [`wire`]: the event model, byte-compatible with Go's `encoding/json`.
//! - [`EventSink`] / [`SnapshotSource`]: the seams to the monitor; [`SessionStore`] implements
//!   both, [`MultiSink`] fans one event out to several sinks.
//! - [`Publisher`]: the one way to publish that cannot get the order wrong (store, then hub,
//!   one event at a time, `seq` kept rising).
//! - [`Hub`]: the fan-out (one encoding per event, shared by every client).
//! - [`WsLayer`]: the builder and the axum [`Router`](axum::Router) it returns.
//! - [`metrics`] (feature `metrics`, on by default): the hub's counters through the `metrics`
//!   facade, for Prometheus and other exporters.
//! - [`broker`] (feature `redis`): several server nodes fed from one producer through Redis
//!   Streams, with checkpoints, so `?since=` resume works on any node.
//! - [`monitor`] (feature `monitor`, on by default): the producer, a [`Monitor`] that tails
//!   Claude Code, Codex CLI and Gemini CLI session logs and publishes events to any sink.
//! - `markers` (features `monitor` or `hooks`): the hook-marker format and the marker
//!   directory, through which Claude Code's hooks tell the monitor about permission prompts
//!   its log does not show; `hooks` (feature `hooks`, enabled by `cli`): writing markers and
//!   installing the hook entries, what the `agentwatch-ws` command is built from.
//! - [`admission`]: origin check, authentication extractor, connection cap and per-IP rate
//!   limit, each a tower layer usable on its own.
//!   The last refusal per client IP is served at `<path>/status`, so a page can say why it
//!   cannot connect.
//! - [`serve()`]: serves the app with deadlines on request heads (slowloris) and idle
//!   connections, HTTP/2 keep-alive, per-IP connection and per-connection stream bounds,
//!   `Host` checks, `TCP_NODELAY` and the connect info the rate limit needs; the recommended
//!   way to run it.
//! - [`redact`]: request URIs for logs without token carriers, and a `TraceLayer` span maker.
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
    not(feature = "redis"),
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
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod broker;
mod conn;
mod counters;
mod frame;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "hooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "hooks")))]
pub mod hooks;
mod host;
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
pub use admission::rate_limit::{MissingClientAddr, RateLimit};
pub use counters::{HubStats, RejectionStats};
pub use hub::{
    DEFAULT_REPLAY_WINDOW, DEFAULT_REPLAY_WINDOW_BYTES, Hub, LagPolicy, MAX_REPLAY_WINDOW,
    MAX_REPLAY_WINDOW_BYTES, MAX_SEND_BUFFER,
};
pub use layer::{
    DEFAULT_HEARTBEAT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEND_BUFFER, DEFAULT_WRITE_TIMEOUT,
    MAX_HEARTBEAT, MAX_MESSAGE_SIZE_LIMIT, MAX_WRITE_TIMEOUT, WsLayer,
};
#[cfg(feature = "monitor")]
#[cfg_attr(docsrs, doc(cfg(feature = "monitor")))]
pub use monitor::{Monitor, MonitorBuilder, MonitorHandle};
pub use publisher::Publisher;
pub use reject::RejectReason;
pub use serve::{Serve, WithGracefulShutdown, serve};
pub use sink::{EventSink, MultiSink, SinkError, Snapshot, SnapshotSource};
pub use store::SessionStore;
pub use upgrade::{PROTOCOL, Subprotocol};
pub use wire::{
    Activity, Event, EventType, Health, HealthStatus, LifecycleEvent, LifecycleEventType,
    LifecycleState, SessionState, SubagentState, Timestamp,
};

/// The README's Rust snippets, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "monitor", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
