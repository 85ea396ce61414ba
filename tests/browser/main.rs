//! Headless Chromium (`/usr/bin/chromium`, driven over the DevTools protocol) against the
//! `dashboard` example and against the WebSocket endpoint: the dashboard page, browser auth
//! and subprotocols, WebSockets over HTTP/2 with TLS, and the page's notifications.
//!
//! Without Chromium every test prints a notice and passes, unless
//! `AGENTWATCH_REQUIRE_BROWSER=1` is set (as CI does), in which case they fail.

#[path = "../common/mod.rs"]
mod common;
#[path = "../dashboard_support/mod.rs"]
mod dashboard_support;

mod auth;
mod dashboard;
mod deflate;
mod h2;
mod notify;
