//! Chromium's own permessage-deflate (RFC 7692): a page's `new WebSocket` offers it, the
//! server accepts it (`ws.extensions` says so), and the snapshot and live events reach the
//! page intact: the very text a client without compression receives. Without Chromium the
//! test prints a notice and passes, unless `AGENTWATCH_REQUIRE_BROWSER=1` is set.

use crate::common;

use std::time::Duration;

use agentwatch_ws::{Event, SessionState, WsLayer};
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use common::chromium::{Browser, chromium_available};
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

fn session(i: usize) -> SessionState {
    SessionState {
        id: format!("3f2b9c1e-7d4a-4e0b-9a51-{i:012}"),
        source: ["claude-code", "codex", "gemini-cli"][i % 3].into(),
        slug: format!("refactor-event-bus-{i}"),
        model: "claude-opus-4-1".into(),
        working_dir: "/home/dev/src/agentwatch".into(),
        branch: "feature/event-bus".into(),
        ..Default::default()
    }
}

/// What a client without compression (tokio-tungstenite offers none) receives next.
async fn plain_text(client: &mut Client) -> String {
    loop {
        match within("plain message", client.next())
            .await
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_negotiates_permessage_deflate_and_receives_events_intact() {
    if !chromium_available() {
        return;
    }
    let (ws_router, publisher) = WsLayer::new().rate_limit(None).build("/ws");
    for i in 0..200 {
        publisher
            .publish(Event::delta(0, vec![session(i)], vec![]))
            .unwrap();
    }
    let app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><title>deflate test</title>") }),
        )
        .merge(ws_router);
    let addr = serve(app).await;
    let mut plain = connect(addr).await;
    let mut expected = vec![plain_text(&mut plain).await];

    let mut browser = Browser::start(&[]).await;
    browser.navigate(&format!("http://{addr}/")).await;
    browser
        .cdp
        .eval(
            "window.got = []; window.state = 'connecting'; \
             window.ws = new WebSocket(`ws://${location.host}/ws`); \
             ws.onopen = () => { window.state = 'open'; }; \
             ws.onmessage = m => { got.push(m.data); }; \
             ws.onclose = e => { window.state = 'closed ' + e.code; }; true",
        )
        .await;
    let state = browser
        .cdp
        .wait_for(
            "the WebSocket to open",
            Duration::from_secs(10),
            "window.state !== 'connecting' && window.state",
        )
        .await;
    assert_eq!(state, "open");
    assert_eq!(
        browser.cdp.eval("ws.extensions").await,
        "permessage-deflate; server_no_context_takeover"
    );
    eventually("registered", || publisher.client_count() == 2).await;
    for round in 0..3 {
        let sessions: Vec<SessionState> = (round * 30..round * 30 + 30).map(session).collect();
        publisher
            .publish(Event::delta(0, sessions, vec![]))
            .unwrap();
        expected.push(plain_text(&mut plain).await);
    }
    let got = browser
        .cdp
        .wait_for(
            "the snapshot and three deltas",
            Duration::from_secs(10),
            "window.got.length >= 4 && window.got",
        )
        .await;
    assert_eq!(got, serde_json::json!(expected), "the page's text, exactly");
    assert_eq!(
        publisher.stats().compressions,
        4,
        "the page got every frame compressed"
    );
    assert!(browser.cdp.errors.is_empty(), "{:?}", browser.cdp.errors);

    browser.cdp.eval("ws.close(1000); true").await;
    eventually("closed", || publisher.client_count() == 1).await;
}
