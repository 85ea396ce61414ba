//! The HTTP API (`/sessions`, `/sessions/{id}`, `/healthz`, `/sources`) over real sockets:
//! Go's bytes (taken from the vendored Go fixtures), status codes, methods, `ETag`, and the
//! WebSocket's admission when mounted by the layer.
// Test code: unwrap() on values the test itself built or on test I/O.

use crate::common::{serve, within};

use std::net::SocketAddr;

use agentwatch_ws::{
    Event, Health, HealthStatus, Identity, Publisher, RateLimitPolicy, SessionState, WsLayer,
};
use axum::Router;
use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 exchange: status, head (lower-cased), body bytes.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut stream = within("tcp connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    within("http response", stream.read_to_end(&mut buf))
        .await
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, head, buf[split + 4..].to_vec())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    request(addr, "GET", path, &[]).await
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// The raw bytes of the value of the first `"key":` in a Go fixture: Go's own encoding of it.
fn raw_value<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text.find(&format!("\"{key}\":")).expect("key in fixture") + key.len() + 3;
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return &text[start..=i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced value for {key}");
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/go/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn publish_fixture(publisher: &Publisher, name: &str) -> String {
    let text = fixture(name);
    publisher
        .publish(Event::from_json(text.as_bytes()).unwrap())
        .unwrap();
    text
}

/// The public API, unchecked, nested where the user wants it.
async fn internal() -> (SocketAddr, Publisher) {
    let (_, publisher) = WsLayer::new().build::<()>("/ws");
    let app = Router::new().nest("/api", publisher.http_api());
    (serve(app).await, publisher)
}

fn assert_json_head(head: &str) {
    assert_eq!(
        header(head, "content-type"),
        Some("application/json"),
        "{head}"
    );
    assert_eq!(header(head, "cache-control"), Some("no-store"), "{head}");
}

#[tokio::test]
async fn sessions_are_go_bytes_sorted_by_id() {
    let (addr, publisher) = internal().await;
    let (code, head, body) = get(addr, "/api/sessions").await;
    assert_eq!((code, body.as_slice()), (200, &b"[]\n"[..]), "{head}");
    assert_json_head(&head);

    let text = publish_fixture(&publisher, "snapshot_full.json");
    let (code, head, body) = get(addr, "/api/sessions").await;
    assert_eq!(code, 200, "{head}");
    assert_json_head(&head);
    let expected = format!("{}\n", raw_value(&text, "sessions"));
    assert_eq!(String::from_utf8(body).unwrap(), expected);

    // Discovery order is z, a: the list is still by id.
    for id in ["z", "a"] {
        let s = SessionState {
            id: id.into(),
            ..Default::default()
        };
        publisher.publish(Event::delta(0, vec![s], vec![])).unwrap();
    }
    let (_, _, body) = get(addr, "/api/sessions").await;
    let ids: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 5);
}

#[tokio::test]
async fn one_session_is_go_bytes_or_a_404_in_go_shape() {
    let (addr, publisher) = internal().await;
    let text = publish_fixture(&publisher, "strings_escaping.json");
    let (code, head, body) = get(addr, "/api/sessions/esc-1").await;
    assert_eq!(code, 200, "{head}");
    assert_json_head(&head);
    let updates = raw_value(&text, "updates");
    let expected = format!("{}\n", &updates[1..updates.len() - 1]);
    assert_eq!(String::from_utf8(body).unwrap(), expected);

    let (code, head, body) = get(addr, "/api/sessions/does-not-exist").await;
    assert_eq!(code, 404, "{head}");
    assert_json_head(&head);
    assert_eq!(body, b"{\"error\":\"session not found\"}\n");
    assert_eq!(header(&head, "etag"), None);
}

#[tokio::test]
async fn healthz_and_sources_follow_reports_in_first_report_order() {
    let (addr, publisher) = internal().await;
    // Healthy before the first report, as Go.
    let (code, head, body) = get(addr, "/api/healthz").await;
    assert_eq!(code, 200, "{head}");
    assert_json_head(&head);
    assert_eq!(body, b"{\"status\":\"healthy\",\"sources\":[]}\n");
    let (code, head, body) = get(addr, "/api/sources").await;
    assert_eq!(code, 200, "{head}");
    assert_json_head(&head);
    assert_eq!(body, b"{\"sources\":[]}\n");

    let degraded = publish_fixture(&publisher, "health_degraded.json");
    let healthy = publish_fixture(&publisher, "health_healthy.json");
    let first = raw_value(&degraded, "health");
    let second = raw_value(&healthy, "health");
    let source_of = |raw: &str| {
        serde_json::from_str::<serde_json::Value>(raw).unwrap()["source"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a, b) = (source_of(first), source_of(second));
    assert_ne!(a, b, "the fixtures report two sources");
    let (_, _, body) = get(addr, "/api/healthz").await;
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{{\"status\":\"degraded\",\"sources\":[{first},{second}]}}\n")
    );
    let (_, _, body) = get(addr, "/api/sources").await;
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{{\"sources\":[\"{a}\",\"{b}\"]}}\n")
    );

    // A later report replaces its source's entry in place; failed beats degraded.
    let failed = Health {
        source: b.clone(),
        status: HealthStatus::Failed,
        ..Default::default()
    };
    publisher.publish(Event::health(0, failed)).unwrap();
    let (_, _, body) = get(addr, "/api/healthz").await;
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["status"], "failed");
    assert_eq!(value["sources"][0]["source"], a.as_str());
    assert_eq!(value["sources"][1]["status"], "failed");
}

#[tokio::test]
async fn several_machines_report_the_same_source_apart() {
    let (addr, publisher) = internal().await;
    let report = |machine: &str, source: &str, status: HealthStatus| Health {
        source: source.into(),
        machine: machine.into(),
        status,
        ..Default::default()
    };
    // A report without a machine: Go's bytes, no `machines`.
    publisher
        .publish(Event::health(0, report("", "codex", HealthStatus::Healthy)))
        .unwrap();
    let (_, _, body) = get(addr, "/api/sources").await;
    assert_eq!(body, b"{\"sources\":[\"codex\"]}\n");

    publisher
        .publish(Event::health(
            0,
            report("laptop", "claude", HealthStatus::Healthy),
        ))
        .unwrap();
    publisher
        .publish(Event::health(
            0,
            report("desk", "claude", HealthStatus::Degraded),
        ))
        .unwrap();
    // laptop's claude again: its own entry changes, desk's stays.
    publisher
        .publish(Event::health(
            0,
            report("laptop", "claude", HealthStatus::Failed),
        ))
        .unwrap();
    let (code, head, body) = get(addr, "/api/sources").await;
    assert_eq!(code, 200, "{head}");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"sources\":[\"codex\",\"claude\",\"claude\"],\"machines\":[\"\",\"desk\",\"laptop\"]}\n"
    );
    let (_, _, body) = get(addr, "/api/healthz").await;
    let text = String::from_utf8(body).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["status"], "failed");
    let kept: Vec<(String, String, String)> = value["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["machine"].as_str().unwrap_or("<absent>").to_owned(),
                h["source"].as_str().unwrap().to_owned(),
                h["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let kept: Vec<(&str, &str, &str)> = kept
        .iter()
        .map(|(m, s, st)| (m.as_str(), s.as_str(), st.as_str()))
        .collect();
    assert_eq!(
        kept,
        [
            ("<absent>", "codex", "healthy"),
            ("desk", "claude", "degraded"),
            ("laptop", "claude", "failed"),
        ]
    );
    // Each report's `machine` is its last key, after `updatedAt`.
    assert!(
        text.contains(r#""updatedAt":"0001-01-01T00:00:00Z","machine":"laptop"}"#),
        "{text}"
    );

    // Sessions carry their machine too.
    let session = SessionState {
        id: "s1".into(),
        source: "claude".into(),
        machine: "desk".into(),
        ..Default::default()
    };
    publisher
        .publish(Event::delta(0, vec![session], vec![]))
        .unwrap();
    let (_, _, body) = get(addr, "/api/sessions/s1").await;
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.ends_with(
            r#""lastDataReceivedAt":"0001-01-01T00:00:00Z","machine":"desk"}
"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn etag_changes_with_each_event_and_if_none_match_gets_304() {
    let (addr, publisher) = internal().await;
    publish_fixture(&publisher, "snapshot_full.json");
    for path in ["/api/sessions", "/api/healthz", "/api/sources"] {
        let (code, head, _) = get(addr, path).await;
        assert_eq!(code, 200);
        let tag = header(&head, "etag").expect("an ETag").to_owned();

        let (code, head, body) = request(addr, "GET", path, &[("If-None-Match", &tag)]).await;
        assert_eq!(code, 304, "{path}: {head}");
        assert!(body.is_empty());
        assert_eq!(header(&head, "etag"), Some(tag.as_str()));
        assert_eq!(header(&head, "cache-control"), Some("no-store"));
        let weak = format!("\"other\", W/{tag}");
        let (code, ..) = request(addr, "GET", path, &[("If-None-Match", &weak)]).await;
        assert_eq!(code, 304, "weak comparison, in a list");
        let (code, ..) = request(addr, "GET", path, &[("If-None-Match", "\"other\"")]).await;
        assert_eq!(code, 200);
    }
    let (_, head, _) = get(addr, "/api/sessions/b-waiting").await;
    let tag = header(&head, "etag").expect("an ETag").to_owned();
    publisher
        .publish(Event::delta(0, vec![], vec!["nobody".into()]))
        .unwrap();
    let (code, head, _) = request(
        addr,
        "GET",
        "/api/sessions/b-waiting",
        &[("If-None-Match", &tag)],
    )
    .await;
    assert_eq!(code, 200, "a new event, a new tag");
    assert_ne!(header(&head, "etag"), Some(tag.as_str()));

    // Another router over the same state never matches this one's tags.
    let other = serve(Router::new().merge(publisher.http_api())).await;
    let (_, head, _) = get(addr, "/api/sources").await;
    let tag = header(&head, "etag").unwrap().to_owned();
    let (code, ..) = request(other, "GET", "/sources", &[("If-None-Match", &tag)]).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn head_is_get_without_a_body_and_other_methods_get_405_with_allow() {
    let (addr, publisher) = internal().await;
    publish_fixture(&publisher, "snapshot_full.json");
    for path in [
        "/api/sessions",
        "/api/sessions/b-waiting",
        "/api/healthz",
        "/api/sources",
    ] {
        let (code, head, body) = request(addr, "HEAD", path, &[]).await;
        assert_eq!(code, 200, "{path}: {head}");
        assert_json_head(&head);
        assert!(body.is_empty(), "{path}");
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let (code, head, _) = request(addr, method, path, &[]).await;
            assert_eq!(code, 405, "{method} {path}: {head}");
            let allow = header(&head, "allow").expect("an Allow header");
            let mut allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
            allowed.sort();
            assert_eq!(allowed, ["get", "head"], "{method} {path}");
        }
    }
}

#[tokio::test]
async fn state_go_cannot_encode_is_a_500_in_json() {
    let (addr, publisher) = internal().await;
    let bad = SessionState {
        id: "nan".into(),
        context_utilization: f64::NAN,
        ..Default::default()
    };
    assert!(
        publisher
            .publish(Event::delta(0, vec![bad], vec![]))
            .is_err()
    );
    for path in ["/api/sessions", "/api/sessions/nan"] {
        let (code, head, body) = get(addr, path).await;
        assert_eq!(code, 500, "{path}: {head}");
        assert_json_head(&head);
        assert_eq!(body, b"{\"error\":\"state cannot be encoded as JSON\"}\n");
    }
}

/// An extractor that admits requests carrying `X-Key: secret`.
struct Key;

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-key") {
            Some(v) if v == "secret" => Ok(Key),
            _ => Err((StatusCode::UNAUTHORIZED, "no key")),
        }
    }
}

impl From<Key> for Identity {
    fn from(_: Key) -> Identity {
        Identity::new("key")
    }
}

#[tokio::test]
async fn the_layer_mounts_it_behind_auth_origin_and_rate_limit() {
    let ws = WsLayer::new()
        .rate_limit(None)
        .allowed_origins(["https://dashboard.example"])
        .unwrap()
        .auth::<Key>()
        .http_api(true);
    let (router, publisher) = ws.build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    publish_fixture(&publisher, "snapshot_full.json");

    let key = ("X-Key", "secret");
    let (code, head, body) = request(addr, "GET", "/sessions/b-waiting", &[]).await;
    assert_eq!((code, body.as_slice()), (401, &b"no key"[..]), "{head}");
    let (code, ..) = request(addr, "GET", "/sessions/b-waiting", &[key]).await;
    assert_eq!(code, 200);
    let foreign = ("Origin", "https://evil.example");
    let (code, ..) = request(addr, "GET", "/healthz", &[key, foreign]).await;
    assert_eq!(code, 403);
    let own = ("Origin", "https://dashboard.example");
    let (code, ..) = request(addr, "GET", "/healthz", &[key, own]).await;
    assert_eq!(code, 200);
    let rejected = publisher.stats().rejected;
    assert_eq!(
        (rejected.unauthorized, rejected.origin),
        (1, 1),
        "{rejected:?}"
    );

    // Answered after stop, too; `/healthz` says 503, so a load balancer drains the node.
    let (code, _, before) = request(addr, "GET", "/healthz", &[key]).await;
    assert_eq!(code, 200);
    publisher.stop();
    let (code, ..) = request(addr, "GET", "/sources", &[key]).await;
    assert_eq!(code, 200);
    let (code, head, after) = request(addr, "GET", "/healthz", &[key]).await;
    assert_eq!((code, after), (503, before), "{head}");
}

#[tokio::test]
async fn the_layer_rate_limits_it_and_leaves_it_off_by_default() {
    let ws = WsLayer::new().rate_limit(RateLimitPolicy::per_minute(1));
    let (router, publisher) = ws.clone().http_api(true).build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let (code, ..) = get(addr, "/healthz").await;
    assert_eq!(code, 200);
    let (code, head, _) = get(addr, "/healthz").await;
    assert_eq!(code, 429, "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    assert_eq!(publisher.stats().rejected.rate_limited, 1);

    let (router, _publisher) = ws.build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    for path in ["/sessions", "/healthz", "/sources"] {
        let (code, ..) = get(addr, path).await;
        assert_eq!(code, 404, "{path}: off unless asked for");
    }
}
