//! The WebSocket endpoint over real sockets (`axum::serve` or `agentwatch_ws::serve` on
//! 127.0.0.1:0, real clients): handshake, admission, the stream and its close, resume,
//! HTTP/2, shutdown, settings, status, logs and metrics. One test binary: `cargo test --test
//! transport`, or `cargo test --test transport -- stream::` for one file.

#[path = "../common/mod.rs"]
mod common;

mod admission;
mod close;
mod deflate;
mod h2;
mod handshake;
mod health;
mod http_api;
#[cfg(feature = "metrics")]
mod metrics;
mod privacy;
mod publisher;
mod redact;
mod resume;
mod serve;
mod settings;
mod shutdown;
mod snapshot_cache;
mod status;
mod stream;
mod subprotocol;
