//! A real browser against the subprotocol negotiation and the documented browser auth paths:
//! headless Chromium (`/usr/bin/chromium`), driven over the DevTools
//! protocol, opens `new WebSocket(url, protocols)` from a page served by the same app.
//!
//! Without Chromium the test prints a notice and passes, unless
//! `AGENTWATCH_REQUIRE_BROWSER=1` is set, in which case it fails.

use crate::common;

use std::net::SocketAddr;

use agentwatch_ws::admission::token::{BearerToken, TokenRejection, tokens_from_cookie};
use agentwatch_ws::{Identity, WsLayer};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Html;
use axum::routing::get;
use common::chromium::{Browser, chromium_available};
use common::*;
use serde_json::Value;

/// The app's extractor: a cookie, else a bearer token from any carrier.
struct User;

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = TokenRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Every cookie candidate is checked: a planted one cannot hide a valid one.
        if tokens_from_cookie(parts, "aw_session").any(|token| token == "s3cret-alice") {
            return Ok(User);
        }
        if tokens_from_cookie(parts, "aw_session").next().is_some() {
            return Err(TokenRejection::Invalid);
        }
        let BearerToken(token) = BearerToken::from_request_parts(parts, state).await?;
        if token == "s3cret-alice" {
            Ok(User)
        } else {
            Err(TokenRejection::Invalid)
        }
    }
}

impl From<User> for Identity {
    fn from(_: User) -> Self {
        Identity::new("alice")
    }
}

/// Runs [`connect_js`] in the page.
async fn run(browser: &mut Browser, path: &str, protocols: &str) -> Value {
    let seen = browser.cdp.eval_async(&connect_js(path, protocols)).await;
    assert_ne!(
        seen["timeout"], true,
        "{path} {protocols}: no outcome in 8 s"
    );
    seen
}

/// `/open`: anonymous; `/ws`: the `User` extractor; `/`: an empty page to run scripts in.
async fn start() -> SocketAddr {
    // The rate limit is off: one page connects many times.
    let open = WsLayer::new().rate_limit(None);
    let authed = WsLayer::new().rate_limit(None).auth::<User>();
    let app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><title>auth test</title>") }),
        )
        .merge(open.clone().build("/open").0)
        .merge(authed.clone().build("/ws").0);
    serve(app).await
}

/// Opens a WebSocket to `path` with the JS expression `protocols` and reports what the page
/// saw: `{open, protocol, first}` (the first message's `type`) or `{open: false, code}`,
/// plus `status`, the JSON of `<path>/status` fetched after a failure.
fn connect_js(path: &str, protocols: &str) -> String {
    let status = format!("{}/status", path.split('?').next().unwrap_or(path));
    format!(
        "new Promise(resolve => {{
           const b64url = t => btoa(t).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
           const ws = new WebSocket(`ws://${{location.host}}{path}`, {protocols});
           const timer = setTimeout(() => resolve({{ timeout: true }}), 8000);
           let opened = false;
           ws.onmessage = m => {{ clearTimeout(timer); opened = true;
             resolve({{ open: true, protocol: ws.protocol, first: JSON.parse(m.data).type }});
             ws.close(); }};
           ws.onclose = e => {{ if (opened) return; clearTimeout(timer);
             fetch('{status}').then(r => r.json()).then(status =>
               resolve({{ open: false, code: e.code, status }})); }};
         }})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_connects_with_a_subprotocol_and_each_browser_auth_path() {
    if !chromium_available() {
        return;
    }
    let addr = start().await;
    let mut browser = Browser::start(&[]).await;
    browser.navigate(&format!("http://{addr}/")).await;

    // A subprotocol, no auth: echoed, and the page gets its snapshot.
    let seen = run(&mut browser, "/open", "'agentwatch.v1'").await;
    assert_eq!(seen["open"], true, "{seen}");
    assert_eq!(seen["protocol"], "agentwatch.v1", "{seen}");
    assert_eq!(seen["first"], "snapshot", "{seen}");
    // No subprotocol: still served, none chosen.
    let seen = run(&mut browser, "/open", "[]").await;
    assert_eq!(
        (seen["open"].clone(), seen["protocol"].clone()),
        (true.into(), "".into()),
        "{seen}"
    );
    // Only unknown protocols: refused with a reason the page can read.
    let seen = run(&mut browser, "/open", "['chat']").await;
    assert_eq!(seen["open"], false, "{seen}");
    assert_eq!(seen["code"], 1006, "{seen}");
    assert_eq!(
        seen["status"]["lastRejection"]["reason"], "not_upgrade",
        "{seen}"
    );
    assert_eq!(seen["status"]["lastRejection"]["status"], 400, "{seen}");

    // The token as a subprotocol: only agentwatch.v1 is echoed (Chromium would fail the
    // connection if the server echoed anything it did not offer).
    let seen = run(
        &mut browser,
        "/ws",
        "['agentwatch.v1', 'agentwatch.token.' + b64url('s3cret-alice')]",
    )
    .await;
    assert_eq!(seen["open"], true, "{seen}");
    assert_eq!(seen["protocol"], "agentwatch.v1", "{seen}");
    assert_eq!(seen["first"], "snapshot", "{seen}");
    // A wrong token: the page sees the failure, and /ws/status says why.
    let seen = run(
        &mut browser,
        "/ws",
        "['agentwatch.v1', 'agentwatch.token.' + b64url('guess')]",
    )
    .await;
    assert_eq!(seen["open"], false, "{seen}");
    assert_eq!(seen["code"], 1006, "{seen}");
    assert_eq!(
        seen["status"]["lastRejection"]["reason"], "unauthorized",
        "{seen}"
    );
    assert_eq!(seen["status"]["lastRejection"]["status"], 401, "{seen}");
    // The query parameter.
    let seen = run(
        &mut browser,
        "/ws?access_token=s3cret-alice",
        "'agentwatch.v1'",
    )
    .await;
    assert_eq!(seen["open"], true, "{seen}");
    // A cookie, set by the page (an app's login would set it HttpOnly).
    browser
        .cdp
        .eval("document.cookie = 'aw_session=s3cret-alice; path=/'")
        .await;
    let seen = run(&mut browser, "/ws", "'agentwatch.v1'").await;
    assert_eq!(seen["open"], true, "{seen}");
    assert_eq!(seen["protocol"], "agentwatch.v1", "{seen}");
    browser
        .cdp
        .eval("document.cookie = 'aw_session=nope; path=/'")
        .await;
    let seen = run(&mut browser, "/ws", "'agentwatch.v1'").await;
    assert_eq!(seen["open"], false, "{seen}");
    assert!(browser.cdp.errors.is_empty(), "{:?}", browser.cdp.errors);
}
