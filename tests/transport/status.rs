//! `GET /ws/status`: a refused client learns why, over real sockets against `axum::serve`.
// Test code: unwrap() on values the test itself built or on test I/O.

use crate::common;

use agentwatch_ws::RateLimitPolicy;

use agentwatch_ws::{TrustedProxies, WsLayer};
use axum::Router;
use common::{http_get, serve, serve_plain, upgrade_headers};
use serde_json::Value;

async fn status(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> Value {
    let (code, head, body) = http_get(addr, "/ws/status", headers).await;
    assert_eq!(code, 200, "{head}\n{body}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("status body {body:?}: {e}"))
}

#[tokio::test]
async fn after_a_429_the_status_says_rate_limited_with_the_retry_delay() {
    let ws = WsLayer::new().rate_limit(RateLimitPolicy::per_minute(1));
    let addr = serve(Router::new().merge(ws.clone().build("/ws").0)).await;

    assert_eq!(
        status(addr, &[]).await,
        serde_json::json!({ "lastRejection": null })
    );

    // The one token goes to a request that is not an upgrade (426), the next gets 429.
    let (first, ..) = http_get(addr, "/ws", &[]).await;
    assert_eq!(first, 426);
    let (second, head, _) = http_get(addr, "/ws", &upgrade_headers(&[])).await;
    assert_eq!(second, 429, "{head}");

    // The status route itself is not rate limited: ask several times.
    for _ in 0..3 {
        let body = status(addr, &[]).await;
        let last = &body["lastRejection"];
        assert_eq!(last["reason"], "rate_limited", "{body}");
        assert_eq!(last["status"], 429);
        assert_eq!(last["message"], "too many connection attempts");
        let retry = last["retryAfter"].as_u64().expect("retryAfter is a number");
        assert!((1..=60).contains(&retry), "retryAfter {retry}");
        let at = last["at"].as_str().expect("at is a string");
        assert!(agentwatch_ws::Timestamp::parse(at).is_ok(), "at {at:?}");
    }
}

#[tokio::test]
async fn a_client_sees_only_its_own_rejection() {
    let proxies = TrustedProxies::new(["127.0.0.1"]).unwrap();
    let ws = WsLayer::new()
        .rate_limit(None)
        .trusted_proxies(proxies)
        .allowed_origins(["https://dashboard.example"])
        .unwrap();
    let addr = serve(Router::new().merge(ws.clone().build("/ws").0)).await;

    let alice = ("X-Forwarded-For", "203.0.113.7");
    let bob = ("X-Forwarded-For", "203.0.113.8");
    let mut refused = upgrade_headers(&[("Origin", "https://evil.example")]);
    refused.push(alice);
    let (code, head, _) = http_get(addr, "/ws", &refused).await;
    assert_eq!(code, 403, "{head}");

    let own = status(addr, &[alice]).await;
    assert_eq!(own["lastRejection"]["reason"], "origin", "{own}");
    assert_eq!(own["lastRejection"]["status"], 403);
    assert_eq!(
        own["lastRejection"]["retryAfter"],
        Value::Null,
        "403 has no Retry-After"
    );
    assert_eq!(status(addr, &[bob]).await["lastRejection"], Value::Null);
    assert_eq!(
        status(addr, &[]).await["lastRejection"],
        Value::Null,
        "the proxy itself"
    );
    // The status route answers a foreign origin too: it is outside the origin check.
    let foreign = status(addr, &[alice, ("Origin", "https://evil.example")]).await;
    assert_eq!(foreign["lastRejection"]["reason"], "origin");
}

#[tokio::test]
async fn without_connect_info_every_client_shares_the_unknown_key() {
    let ws = WsLayer::new().rate_limit(None).max_connections(1);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve_plain(Router::new().merge(router)).await;
    hub.stop();
    let (code, head, _) = http_get(addr, "/ws", &upgrade_headers(&[])).await;
    assert_eq!(code, 503, "{head}");
    let body = status(addr, &[]).await;
    assert_eq!(body["lastRejection"]["reason"], "stopped", "{body}");
    assert_eq!(body["lastRejection"]["status"], 503);
    assert_eq!(body["lastRejection"]["message"], "the server is stopping");
}

/// The endpoint under test, served with connect info; one line to change with the builder.
async fn serve_layer(ws: WsLayer) -> std::net::SocketAddr {
    serve(Router::new().merge(ws.build("/ws").0)).await
}

/// An upgrade to `/ws` with `headers` (each replacing the client's own, `Host` included):
/// the status it got, 101 when it connected.
async fn upgrade_status(addr: std::net::SocketAddr, headers: &[(&'static str, &str)]) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = common::ws_url(addr).into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("a header value"));
    }
    match common::within("handshake", tokio_tungstenite::connect_async(request)).await {
        Ok((mut client, response)) => {
            common::within("close", client.close(None)).await.ok();
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}

/// The status says what really happened: a foreign origin, a same-origin page on a host the
/// server does not know, and a missing `Origin` where one is required are three sentences;
/// a client without `Origin` under the default setting is not refused at all.
#[tokio::test]
async fn the_status_tells_a_missing_origin_from_a_foreign_one_and_an_unknown_host() {
    let listed = serve_layer(
        WsLayer::new()
            .rate_limit(None)
            .allowed_origins(["https://dashboard.example"])
            .unwrap(),
    )
    .await;
    assert_eq!(
        upgrade_status(listed, &[]).await,
        101,
        "no Origin: admitted"
    );
    assert_eq!(status(listed, &[]).await["lastRejection"], Value::Null);
    assert_eq!(
        upgrade_status(listed, &[("Origin", "https://evil.example")]).await,
        403
    );
    let foreign = status(listed, &[]).await;
    assert_eq!(foreign["lastRejection"]["reason"], "origin", "{foreign}");
    assert_eq!(
        foreign["lastRejection"]["message"],
        "this page's origin is not allowed"
    );

    // Same origin on a name the server does not know (what DNS rebinding looks like).
    let unknown = serve_layer(WsLayer::new().rate_limit(None)).await;
    let host = format!("dash.example.com:{}", unknown.port());
    let origin = format!("http://{host}");
    assert_eq!(
        upgrade_status(unknown, &[("Host", &host), ("Origin", &origin)]).await,
        403
    );
    let body = status(unknown, &[]).await;
    assert_eq!(body["lastRejection"]["reason"], "origin", "{body}");
    assert_eq!(
        body["lastRejection"]["message"],
        "this page's host name is not one the server knows (not in its allowed hosts)"
    );

    let strict = serve_layer(WsLayer::new().rate_limit(None).require_origin(true)).await;
    assert_eq!(upgrade_status(strict, &[]).await, 403);
    let body = status(strict, &[]).await;
    assert_eq!(body["lastRejection"]["reason"], "origin_missing", "{body}");
    assert_eq!(body["lastRejection"]["status"], 403);
    assert_eq!(
        body["lastRejection"]["message"],
        "the request has no Origin header, and this server requires one"
    );
    assert_eq!(body["lastRejection"]["retryAfter"], Value::Null);
}
