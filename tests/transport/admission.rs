//! Admission control over real sockets: origin, authentication, connection cap, rate limit,
//! client IP behind proxies, missing connect info, the order of the checks, and user layers
//! stacked on the router. Every rejection is checked for its status, body, `Retry-After` where
//! relevant, the matching `hub.stats().rejected` counter, and that no socket was upgraded.

use crate::common;

use agentwatch_ws::RateLimitPolicy;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwatch_ws::admission::rate_limit::MissingClientAddr;
use agentwatch_ws::{
    Event, EventSink, EventType, Identity, Publisher, RejectionStats, TrustedProxies, WsLayer,
};
use axum::Router;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use futures_util::StreamExt;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A layer with the rate limit off, for the tests that are not about rate limiting.
fn open_layer() -> WsLayer {
    WsLayer::new().rate_limit(None)
}

async fn start<A>(ws: &WsLayer<A>) -> (Publisher, SocketAddr)
where
    A: FromRequestParts<()> + Into<Identity> + Send + 'static,
    A::Rejection: Send,
{
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    (hub, addr)
}

/// A refused handshake, as the client saw it.
#[derive(Debug)]
struct Refused {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Refused {
    fn retry_after(&self) -> Option<u64> {
        let value = self.headers.get(header::RETRY_AFTER)?;
        Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("Retry-After is not whole seconds: {value:?}")),
        )
    }
}

fn hv(bytes: impl AsRef<[u8]>) -> HeaderValue {
    HeaderValue::from_bytes(bytes.as_ref()).expect("valid header value")
}

/// A WebSocket handshake to `/ws` with `headers` added (a repeated name is appended, so a
/// header can be sent twice; the first occurrence replaces the client's own, e.g. `Host`).
async fn attempt_raw(
    addr: SocketAddr,
    headers: Vec<(&str, HeaderValue)>,
) -> Result<Client, Refused> {
    let mut request = ws_url(addr).into_client_request().unwrap();
    let mut seen = Vec::new();
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        if seen.contains(&name) {
            request.headers_mut().append(name, value);
        } else {
            request.headers_mut().insert(name.clone(), value);
            seen.push(name);
        }
    }
    match within("handshake", tokio_tungstenite::connect_async(request)).await {
        Ok((client, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            Ok(client)
        }
        Err(tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        }),
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}

async fn attempt(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Client, Refused> {
    attempt_raw(addr, headers.iter().map(|(k, v)| (*k, hv(v))).collect()).await
}

/// A handshake that must succeed; returns the client once its snapshot arrived.
async fn admitted(addr: SocketAddr, headers: &[(&str, &str)]) -> Client {
    match attempt(addr, headers).await {
        Ok(mut client) => {
            assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
            client
        }
        Err(refused) => panic!("expected a connection with {headers:?}, got {refused:?}"),
    }
}

/// A handshake that must be refused.
async fn refused(addr: SocketAddr, headers: &[(&str, &str)]) -> Refused {
    refused_raw(addr, headers.iter().map(|(k, v)| (*k, hv(v))).collect()).await
}

async fn refused_raw(addr: SocketAddr, headers: Vec<(&str, HeaderValue)>) -> Refused {
    let shown = format!("{headers:?}");
    match attempt_raw(addr, headers).await {
        Ok(_) => panic!("expected a refusal with {shown}, got a connection"),
        Err(refused) => refused,
    }
}

/// Closes the client and waits for the server's close (bounded).
async fn close(mut client: Client) {
    within("client close", client.close(None)).await.ok();
    within("end of stream", async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
}

/// Rejection counters with only what `set` changes.
fn only(set: impl FnOnce(&mut RejectionStats)) -> RejectionStats {
    let mut stats = RejectionStats::default();
    set(&mut stats);
    stats
}

/// No socket was upgraded beyond the `accepted` ones, and `connected` are live.
fn assert_upgraded(hub: &Publisher, accepted: u64, connected: usize) {
    let stats = hub.stats();
    assert_eq!(stats.accepted, accepted, "upgraded sockets");
    assert_eq!(hub.client_count(), connected, "live clients");
}

// ---------------------------------------------------------------------------------------------
// Authentication extractors written as a user would
// ---------------------------------------------------------------------------------------------

const BEARER_CHALLENGE: &str = "Bearer realm=\"agentwatch\"";
const MISSING_TOKEN_BODY: &str = "bearer token required\n";
const BAD_TOKEN_BODY: &str = "invalid bearer token\n";

/// The user's own rejection: 401, a body of its own and a `WWW-Authenticate` challenge.
struct BearerRejection(&'static str);

impl IntoResponse for BearerRejection {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, BEARER_CHALLENGE)],
            self.0,
        )
            .into_response()
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, BearerRejection> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(BearerRejection(MISSING_TOKEN_BODY))?
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(BearerRejection(BAD_TOKEN_BODY))
}

/// A stateless bearer-token extractor: the only valid token is `s3cret-alice`.
struct Bearer(String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = BearerRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match bearer_token(parts)? {
            "s3cret-alice" => Ok(Bearer("alice".into())),
            _ => Err(BearerRejection(BAD_TOKEN_BODY)),
        }
    }
}

impl From<Bearer> for Identity {
    fn from(Bearer(user): Bearer) -> Self {
        Identity::new(user)
    }
}

/// Tokens known to the app, part of its state.
#[derive(Clone)]
struct Tokens(Arc<HashMap<String, String>>);

#[derive(Clone)]
struct AppState {
    tokens: Tokens,
    greeting: &'static str,
}

impl FromRef<AppState> for Tokens {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}

/// A bearer-token extractor that looks tokens up in the app state.
struct StateBearer(String);

impl<S> FromRequestParts<S> for StateBearer
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = BearerRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = Tokens::from_ref(state);
        let token = bearer_token(parts)?;
        match tokens.0.get(token) {
            Some(user) => Ok(StateBearer(user.clone())),
            None => Err(BearerRejection(BAD_TOKEN_BODY)),
        }
    }
}

impl From<StateBearer> for Identity {
    fn from(StateBearer(user): StateBearer) -> Self {
        Identity::new(user)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Origin, default policy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_origin_policy_allows_no_origin_same_origin_and_localhost_only() {
    let ws = open_layer();
    let (hub, addr) = start(&ws).await;
    let same_origin = format!("http://{addr}");

    let mut clients = Vec::new();
    // No Origin (CLIs), same origin (Host is 127.0.0.1:port), and any port on the loopbacks.
    for origin in [
        None,
        Some(same_origin.as_str()),
        Some("http://localhost:1234"),
        Some("http://127.0.0.1:9"),
        Some("http://[::1]:80"),
        Some("https://localhost"),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        clients.push(admitted(addr, &headers).await);
    }
    eventually("6 clients", || hub.client_count() == 6).await;
    assert_eq!(hub.stats().rejected, RejectionStats::default());

    // Cross-origin, malformed, and hostile values: 403, short body, nothing upgraded.
    let huge = format!("http://{}.example", "a".repeat(10_000));
    let bad: Vec<Vec<(&str, HeaderValue)>> = vec![
        vec![("Origin", hv("https://evil.example"))],
        // Same origin on a host nobody allowed: DNS rebinding (see the test below).
        vec![
            ("Host", hv("dash.example.com:8080")),
            ("Origin", hv("http://dash.example.com:8080")),
        ],
        vec![
            ("Host", hv("dash.example.com:8080")),
            ("Origin", hv("http://dash.example.com:9090")),
        ],
        vec![
            ("Host", hv("dash.example.com:8080")),
            ("Origin", hv("https://dash.example.com")), // 443 vs 8080
        ],
        vec![("Origin", hv("null"))],
        vec![("Origin", hv("garbage"))],
        vec![("Origin", hv("*"))],
        vec![("Origin", hv(""))],
        vec![("Origin", hv("javascript:alert(1)"))],
        vec![("Origin", hv("file://"))],
        vec![("Origin", hv("http://localhost.evil.example"))],
        vec![("Origin", hv("http://user@localhost:1234"))],
        vec![("Origin", hv("http://localhost:1234/path"))],
        vec![("Origin", hv("http://localhost:99999"))],
        vec![("Origin", hv(b"http://\xc3\xa9vil.example"))],
        vec![("Origin", hv(b"http://localhost\xff:1"))],
        vec![("Origin", hv(&huge))],
        vec![
            ("Origin", hv("http://localhost:1234")),
            ("Origin", hv("http://localhost:1234")),
        ],
    ];
    let rejected = bad.len() as u64;
    for headers in bad {
        let shown = format!("{headers:?}");
        let refused = refused_raw(addr, headers).await;
        assert_eq!(refused.status, 403, "{shown}");
        assert_eq!(refused.body, "origin not allowed\n", "{shown}");
        assert_eq!(refused.retry_after(), None, "{shown}");
    }
    assert_eq!(hub.stats().rejected, only(|r| r.origin = rejected));
    assert_upgraded(&hub, 6, 6);

    // The server is still fine.
    clients.push(admitted(addr, &[]).await);
    eventually("7 clients", || hub.client_count() == 7).await;
    for client in clients {
        close(client).await;
    }
    eventually("all gone", || hub.client_count() == 0).await;
}

#[tokio::test]
async fn dns_rebinding_is_403_unless_the_host_is_loopback_or_allowed() {
    let (hub, addr) = start(&open_layer()).await;
    let port = addr.port();
    // A page on attacker.example whose name now resolves to this server: its requests look
    // same-origin. The default policy does not know the name: 403.
    let rebound = format!("attacker.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    for headers in [
        vec![
            ("Host", rebound.as_str()),
            ("Origin", rebound_origin.as_str()),
        ],
        vec![
            ("Host", "attacker.example"),
            ("Origin", "http://attacker.example"),
        ],
        vec![
            ("Host", "attacker.example"),
            ("Origin", "https://attacker.example"),
        ],
    ] {
        let refused = refused(addr, &headers).await;
        assert_eq!(refused.status, 403, "{headers:?}");
        assert_eq!(refused.body, "origin not allowed\n");
    }
    assert_eq!(hub.stats().rejected, only(|r| r.origin = 3));
    assert_upgraded(&hub, 0, 0);

    // Loopback hosts are the server's own: with and without a port, IPv6 bracketed.
    let mut clients = Vec::new();
    let with_port: Vec<(String, String)> = ["localhost", "127.0.0.1", "[::1]", "dash.localhost"]
        .iter()
        .map(|h| (format!("{h}:{port}"), format!("http://{h}:{port}")))
        .collect();
    for (host, origin) in &with_port {
        clients.push(admitted(addr, &[("Host", host), ("Origin", origin)]).await);
    }
    for (host, origin) in [
        ("localhost", "http://localhost"),
        ("127.0.0.1", "http://127.0.0.1"),
        ("[::1]", "https://[::1]"),
    ] {
        clients.push(admitted(addr, &[("Host", host), ("Origin", origin)]).await);
    }
    assert_upgraded(&hub, 7, 7);
    for client in clients {
        close(client).await;
    }

    // A real host name works once the app allows it; other names still do not. (An empty
    // allowed_origins set afterwards keeps the allowed hosts.)
    let layer = open_layer()
        .allowed_hosts(["dash.example.com"])
        .unwrap()
        .allowed_origins(Vec::<&str>::new())
        .unwrap();
    let (hub, addr) = start(&layer).await;
    let mut clients = Vec::new();
    for headers in [
        [
            ("Host", "dash.example.com:8080"),
            ("Origin", "http://dash.example.com:8080"),
        ],
        [
            ("Host", "dash.example.com"),
            ("Origin", "http://DASH.example.com"),
        ],
        // Without a port in Host, the port is the Origin scheme's default: behind a
        // TLS-terminating proxy the server cannot tell http from https (documented).
        [
            ("Host", "dash.example.com"),
            ("Origin", "https://dash.example.com"),
        ],
    ] {
        clients.push(admitted(addr, &headers).await);
    }
    let refused = refused(
        addr,
        &[
            ("Host", "attacker.example"),
            ("Origin", "http://attacker.example"),
        ],
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(hub.stats().rejected, only(|r| r.origin = 1));
    for client in clients {
        close(client).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Origin allowlist
// ---------------------------------------------------------------------------------------------

/// Invalid entries are errors at build time, not warnings logged before any subscriber.
#[test]
fn invalid_origins_and_hosts_are_errors_when_configured() {
    for bad in [
        "",
        "*",
        "null",
        "https://app.example.com/path",
        "https://a@b",
        "app.example.com",
    ] {
        let err = open_layer().allowed_origins([bad]).unwrap_err();
        assert_eq!(err.input(), bad);
        assert_eq!(err.setting(), "allowed_origins");
        assert!(
            err.to_string().starts_with("invalid allowed_origins entry"),
            "{err}"
        );
    }
    for bad in ["", "dash example", "http://dash.example.com", "[::1"] {
        let err = open_layer().allowed_hosts([bad]).unwrap_err();
        assert_eq!(err.setting(), "allowed_hosts");
        assert!(
            err.to_string().starts_with("invalid allowed_hosts entry"),
            "{err}"
        );
    }
    assert!(
        open_layer()
            .allowed_origins(["https://a.example", "chrome-extension://abcdef"])
            .is_ok()
    );
}

#[tokio::test]
async fn origin_allowlist_matches_exactly_after_parsing() {
    let ws = open_layer()
        .allowed_origins(["https://app.example.com"])
        .unwrap();
    let (hub, addr) = start(&ws).await;

    let mut clients = Vec::new();
    for origin in [
        "https://app.example.com",
        "https://app.example.com/",
        "https://app.example.com:443",
        "https://APP.example.com",
    ] {
        clients.push(admitted(addr, &[("Origin", origin)]).await);
    }
    eventually("4 clients", || hub.client_count() == 4).await;

    let bad: [&[(&str, &str)]; 8] = [
        &[("Origin", "https://other.example.com")],
        &[("Origin", "https://app.example.com.evil.net")],
        &[("Origin", "https://evil.net/app.example.com")],
        &[("Origin", "http://app.example.com")], // scheme differs
        &[("Origin", "https://app.example.com:8443")],
        &[("Origin", "http://localhost:1234")], // localhost is not implied by an allowlist
        &[("Origin", "null")],
        &[("Origin", "https://app.example.com/path")],
    ];
    for headers in bad {
        let refused = refused(addr, headers).await;
        assert_eq!(refused.status, 403, "{headers:?}");
        assert_eq!(refused.body, "origin not allowed\n", "{headers:?}");
    }
    assert_eq!(hub.stats().rejected, only(|r| r.origin = 8));
    assert_upgraded(&hub, 4, 4);
}

// ---------------------------------------------------------------------------------------------
// 2b. Clients without Origin
// ---------------------------------------------------------------------------------------------

/// A client without `Origin` is not a browser: admitted under an allowlist by default, while
/// a foreign `Origin` is still refused.
#[tokio::test]
async fn a_client_without_origin_is_admitted_under_an_allowlist() {
    let ws = open_layer()
        .allowed_origins(["https://app.example.com"])
        .unwrap();
    let (hub, addr) = start(&ws).await;

    let cli = admitted(addr, &[]).await;
    let page = admitted(addr, &[("Origin", "https://app.example.com")]).await;
    let foreign = refused(addr, &[("Origin", "https://evil.example")]).await;
    assert_eq!(
        (foreign.status, foreign.body.as_str()),
        (403, "origin not allowed\n")
    );
    assert_eq!(hub.stats().rejected, only(|r| r.origin = 1));
    assert_upgraded(&hub, 2, 2);
    close(cli).await;
    close(page).await;
}

/// `require_origin(true)` refuses a client without `Origin` (403, counted apart from foreign
/// origins), whether or not an allowlist is set, and set before or after it.
#[tokio::test]
async fn require_origin_refuses_clients_without_origin() {
    // Each layer, with the origin of a page it allows (`None`: a loopback page).
    let layers = [
        (open_layer().require_origin(true), None),
        (
            open_layer()
                .require_origin(true)
                .allowed_origins(["https://app.example.com"])
                .unwrap(),
            Some("https://app.example.com"),
        ),
        (
            open_layer()
                .allowed_origins(["https://app.example.com"])
                .unwrap()
                .require_origin(true),
            Some("https://app.example.com"),
        ),
    ];
    for (ws, allowed) in layers {
        let (hub, addr) = start(&ws).await;
        let missing = refused(addr, &[]).await;
        assert_eq!(
            (missing.status, missing.body.as_str()),
            (403, "origin required\n")
        );
        assert_eq!(missing.retry_after(), None);
        let foreign = refused(addr, &[("Origin", "https://evil.example")]).await;
        assert_eq!(foreign.status, 403);
        assert_eq!(
            hub.stats().rejected,
            only(|r| {
                r.origin_missing = 1;
                r.origin = 1;
            })
        );
        // A browser on an allowed origin still connects.
        let origin = match allowed {
            Some(origin) => origin.to_owned(),
            None => format!("http://localhost:{}", addr.port()),
        };
        let page = admitted(addr, &[("Origin", &origin)]).await;
        assert_upgraded(&hub, 1, 1);
        close(page).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bearer_extractor_admits_the_right_token_and_its_rejection_passes_unchanged() {
    let ws = open_layer().auth::<Bearer>();
    let (hub, addr) = start(&ws).await;

    let mut alice = admitted(addr, &[("Authorization", "Bearer s3cret-alice")]).await;
    eventually("alice registered", || hub.client_count() == 1).await;
    hub.handle_event(&Event::delta(1, vec![], vec![])).unwrap();
    assert_eq!(next_event(&mut alice).await.seq, 1, "alice is streaming");

    for (headers, body) in [
        (&[("Authorization", "Bearer wrong")][..], BAD_TOKEN_BODY),
        (
            &[("Authorization", "Basic YWxpY2U6eA==")][..],
            BAD_TOKEN_BODY,
        ),
        (&[][..], MISSING_TOKEN_BODY),
    ] {
        let refused = refused(addr, headers).await;
        assert_eq!(refused.status, 401, "{headers:?}");
        assert_eq!(refused.body, body, "{headers:?}");
        assert_eq!(
            refused.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            BEARER_CHALLENGE
        );
        assert_eq!(refused.retry_after(), None);
    }
    assert_eq!(hub.stats().rejected, only(|r| r.unauthorized = 3));
    assert_upgraded(&hub, 1, 1);
    close(alice).await;
}

#[tokio::test]
async fn stateful_extractor_works_through_router_with_app_state() {
    let (ws_router, hub) = open_layer().auth::<StateBearer>().build::<AppState>("/ws");
    let state = AppState {
        tokens: Tokens(Arc::new(HashMap::from([(
            "tok-carol".to_owned(),
            "carol".to_owned(),
        )]))),
        greeting: "hello from the app\n",
    };
    let app: Router = Router::new()
        .route(
            "/hello",
            get(|State(state): State<AppState>| async move { state.greeting }),
        )
        .merge(ws_router)
        .with_state(state);
    let addr = serve(app).await;

    // The app's own routes share the state.
    let (status, _, body) = http_get(addr, "/hello", &[]).await;
    assert_eq!((status, body.as_str()), (200, "hello from the app\n"));

    let mut carol = admitted(addr, &[("Authorization", "Bearer tok-carol")]).await;
    eventually("carol registered", || hub.client_count() == 1).await;
    hub.handle_event(&Event::delta(7, vec![], vec![])).unwrap();
    assert_eq!(next_event(&mut carol).await.seq, 7);

    let wrong = refused(addr, &[("Authorization", "Bearer tok-mallory")]).await;
    assert_eq!((wrong.status, wrong.body.as_str()), (401, BAD_TOKEN_BODY));
    assert_eq!(
        wrong.headers.get(header::WWW_AUTHENTICATE).unwrap(),
        BEARER_CHALLENGE
    );
    let missing = refused(addr, &[]).await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (401, MISSING_TOKEN_BODY)
    );
    assert_eq!(hub.stats().rejected, only(|r| r.unauthorized = 2));
    assert_upgraded(&hub, 1, 1);
    close(carol).await;
}

/// There is no public accessor for a connection's identity: it shows in the `ws_client`
/// span. The capture is thread-local (`set_default`), which covers the server because this
/// test runs on the current-thread runtime.
#[tokio::test]
async fn identity_is_recorded_on_the_connection_span() {
    let (captured, _guard) = Captured::install(tracing::Level::INFO);

    let extractor = open_layer().auth::<Bearer>();
    let (_, extractor_addr) = start(&extractor).await;
    let anonymous = open_layer();
    let (_, anonymous_addr) = start(&anonymous).await;

    let alice = admitted(extractor_addr, &[("Authorization", "Bearer s3cret-alice")]).await;
    let anon = admitted(anonymous_addr, &[]).await;
    for who in ["identity=alice", "identity=anonymous"] {
        eventually(who, || {
            captured
                .text()
                .lines()
                .any(|line| line.contains("ws_client{") && line.contains(who))
        })
        .await;
    }
    for client in [alice, anon] {
        close(client).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Connection cap
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_cap_answers_503_before_upgrading_and_frees_slots() {
    let ws = open_layer().max_connections(2);
    let (hub, addr) = start(&ws).await;

    let mut first = admitted(addr, &[]).await;
    let mut second = admitted(addr, &[]).await;
    eventually("2 clients", || hub.client_count() == 2).await;

    let third = refused(addr, &[]).await;
    assert_eq!(third.status, 503);
    assert_eq!(third.body, "too many connections\n");
    assert_eq!(third.retry_after(), Some(5));
    assert_eq!(hub.stats().rejected, only(|r| r.connection_cap = 1));
    assert_upgraded(&hub, 2, 2);

    // The two admitted clients are unaffected.
    hub.handle_event(&Event::delta(1, vec![], vec![])).unwrap();
    assert_eq!(next_event(&mut first).await.seq, 1);
    assert_eq!(next_event(&mut second).await.seq, 1);

    // A closed client frees its slot (the permit is released before the count drops).
    close(first).await;
    eventually("first gone", || hub.client_count() == 1).await;
    let mut fourth = admitted(addr, &[]).await;
    eventually("2 clients again", || hub.client_count() == 2).await;
    hub.handle_event(&Event::delta(2, vec![], vec![])).unwrap();
    assert_eq!(next_event(&mut second).await.seq, 2);
    assert_eq!(next_event(&mut fourth).await.seq, 2);
    assert_eq!(hub.stats().accepted, 3);
    assert_eq!(hub.stats().rejected, only(|r| r.connection_cap = 1));
    close(second).await;
    close(fourth).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Connection cap under a race
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_simultaneous_upgrades_admit_exactly_the_cap() {
    const CAP: usize = 10;
    const CLIENTS: usize = 200;
    let ws = open_layer().max_connections(CAP);
    let (ws_router, hub) = ws.build("/ws");
    let addr = serve_with_backlog(Router::new().merge(ws_router), 1024).await;

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                attempt(addr, &[]).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = 0;
    for task in tasks {
        match within_for(Duration::from_secs(30), "racing client", task)
            .await
            .unwrap()
        {
            Ok(client) => winners.push(client),
            Err(r) => {
                assert_eq!(r.status, 503, "{r:?}");
                assert_eq!(r.body, "too many connections\n");
                assert_eq!(r.retry_after(), Some(5));
                losers += 1;
            }
        }
    }
    assert_eq!(winners.len(), CAP);
    assert_eq!(losers, CLIENTS - CAP);
    eventually("cap reached", || hub.client_count() == CAP).await;
    // Every admitted client really streams.
    for client in &mut winners {
        assert_eq!(next_event(client).await.kind, EventType::Snapshot);
    }
    let stats = hub.stats();
    assert_eq!(stats.accepted, CAP as u64);
    assert_eq!(hub.client_count(), CAP);
    assert_eq!(
        stats.rejected,
        only(|r| r.connection_cap = (CLIENTS - CAP) as u64)
    );
    for client in winners {
        close(client).await;
    }
    eventually("all gone", || hub.client_count() == 0).await;
}

// ---------------------------------------------------------------------------------------------
// 6-8. Rate limit and client IP
// ---------------------------------------------------------------------------------------------

/// Opens and closes `n` connections with `headers`; all must be admitted.
async fn burst(addr: SocketAddr, headers: &[(&str, &str)], n: usize) {
    for _ in 0..n {
        close(admitted(addr, headers).await).await;
    }
}

#[tokio::test]
async fn default_rate_limit_allows_a_burst_of_4_then_429_with_retry_after() {
    // Go's default: 12 per minute (one token every 5 s), burst 4.
    let ws = WsLayer::new();
    let (hub, addr) = start(&ws).await;

    let began = Instant::now();
    burst(addr, &[], 4).await;
    let fifth = refused(addr, &[]).await;
    let elapsed = began.elapsed();

    assert_eq!(fifth.status, 429);
    assert_eq!(fifth.body, "too many connection attempts\n");
    // After 4 tokens taken starting at t0, the next one is due at t0 + 5 s; the server
    // answers ceil(t0 + 5 s − now) whole seconds. The server's elapsed time is inside ours,
    // so the value lies in [ceil(5 − elapsed), 5]: exactly 5 whenever the four handshakes took
    // under a second, 4 only on a machine slow enough to stretch them past one.
    let retry_after = fifth.retry_after().expect("Retry-After on 429");
    let lowest = (5.0 - elapsed.as_secs_f64()).ceil().max(1.0) as u64;
    assert!(
        (lowest..=5).contains(&retry_after),
        "Retry-After {retry_after}, expected {lowest}..=5 after {elapsed:?}"
    );
    assert_eq!(hub.stats().rejected, only(|r| r.rate_limited = 1));
    eventually("closed", || hub.client_count() == 0).await;
    assert_upgraded(&hub, 4, 0);
}

/// The dashboard's own rate limit (60 a minute, burst 20): a developer reloading the page twenty
/// times within a minute (here, at once: the harder case) is never refused.
#[tokio::test]
async fn twenty_reloads_a_minute_pass_with_the_local_dashboard_limit() {
    let ws = WsLayer::new().rate_limit(RateLimitPolicy::per_minute(60).burst(20));
    let (hub, addr) = start(&ws).await;
    burst(addr, &[], 20).await;
    assert_eq!(hub.stats().rejected.total(), 0);
    assert_eq!(hub.stats().accepted, 20);
}

#[tokio::test]
async fn spoofed_forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let ws = WsLayer::new();
    let (hub, addr) = start(&ws).await;

    for n in 1..=4 {
        let fake = format!("203.0.113.{n}");
        let forwarded = format!("for={fake}");
        burst(
            addr,
            &[
                ("X-Forwarded-For", &fake),
                ("X-Real-IP", &fake),
                ("Forwarded", &forwarded),
            ],
            1,
        )
        .await;
    }
    let fifth = refused(
        addr,
        &[
            ("X-Forwarded-For", "198.51.100.99"),
            ("X-Real-IP", "198.51.100.99"),
        ],
    )
    .await;
    assert_eq!(fifth.status, 429);
    assert_eq!(fifth.body, "too many connection attempts\n");
    assert!(fifth.retry_after().is_some_and(|s| (1..=5).contains(&s)));
    assert_eq!(hub.stats().rejected, only(|r| r.rate_limited = 1));
    eventually("closed", || hub.client_count() == 0).await;
    assert_upgraded(&hub, 4, 0);
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_gets_its_own_bucket() {
    let ws = WsLayer::new().trusted_proxies(TrustedProxies::new(["127.0.0.1"]).unwrap());
    let (hub, addr) = start(&ws).await;

    // Six clients behind the proxy, one upgrade each: more than one bucket's burst of 4.
    for n in 1..=6 {
        burst(addr, &[("X-Forwarded-For", &format!("203.0.113.{n}"))], 1).await;
    }
    // One client behind the proxy, five upgrades: its own bucket runs dry. The client writes
    // whatever it likes on the left of the chain; the proxy appends the address it saw, and
    // only that one (the right-most untrusted hop) counts.
    for n in 1..=4 {
        let chain = format!("198.51.100.{n}, 203.0.113.50");
        burst(addr, &[("X-Forwarded-For", &chain)], 1).await;
    }
    let fifth = refused(addr, &[("X-Forwarded-For", "198.51.100.5, 203.0.113.50")]).await;
    assert_eq!(fifth.status, 429);
    assert_eq!(fifth.body, "too many connection attempts\n");
    assert!(fifth.retry_after().is_some_and(|s| (1..=5).contains(&s)));
    // The proxy's own address (no forwarding header) still has a full bucket.
    burst(addr, &[], 1).await;

    assert_eq!(hub.stats().rejected, only(|r| r.rate_limited = 1));
    eventually("closed", || hub.client_count() == 0).await;
    assert_upgraded(&hub, 11, 0);
}

// ---------------------------------------------------------------------------------------------
// 9. Served without connect info
// ---------------------------------------------------------------------------------------------

/// The form axum's own docs use, `axum::serve(listener, app)`, with the default
/// configuration: clients are served (beyond the rate limit's burst, since there is no
/// address to limit by), the mistake is logged once per router, naming the fix, and every
/// such upgrade is counted.
#[tokio::test]
async fn plain_axum_serve_with_defaults_serves_clients_and_warns_once() {
    let (log, _guard) = Captured::install(tracing::Level::WARN);
    let ws = WsLayer::new();
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve_plain(Router::new().merge(router)).await;

    // Twice the default burst (4): nothing is refused.
    for n in 1..=8u64 {
        let mut client = admitted(addr, &[]).await;
        eventually("registered", || hub.client_count() == 1).await;
        hub.handle_event(&Event::delta(n, vec![], vec![])).unwrap();
        assert_eq!(next_event(&mut client).await.seq, n);
        close(client).await;
        eventually("closed", || hub.client_count() == 0).await;
    }
    let stats = hub.stats();
    assert_eq!(stats.rejected, only(|_| {}));
    assert_eq!(stats.rate_limit_skipped, 8);
    assert_upgraded(&hub, 8, 0);

    let text = log.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("no client address"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("WARN"), "{text}");
    assert!(warnings[0].contains("agentwatch_ws::serve"), "{text}");
    assert!(
        warnings[0].contains("into_make_service_with_connect_info::<SocketAddr>()"),
        "{text}"
    );

    // Once per router: a second router logs its own warning, once.
    let other = WsLayer::new();
    let (other_router, other_publisher) = other.clone().build("/ws");
    let other_addr = serve_plain(Router::new().merge(other_router)).await;
    close(admitted(other_addr, &[]).await).await;
    close(admitted(other_addr, &[]).await).await;
    assert_eq!(log.text().matches("no client address").count(), 2);
    assert_eq!(other_publisher.clone().stats().rate_limit_skipped, 2);
}

#[tokio::test]
async fn without_connect_info_the_strict_mode_answers_500_saying_how_to_serve() {
    let ws = WsLayer::new().on_missing_client_addr(MissingClientAddr::Reject);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve_plain(Router::new().merge(router)).await;

    for _ in 0..2 {
        let refused = refused(addr, &[]).await;
        assert_eq!(refused.status, 500);
        assert!(
            refused.body.contains("into_make_service_with_connect_info"),
            "{:?}",
            refused.body
        );
        assert!(refused.body.len() < 200, "short body: {:?}", refused.body);
    }
    assert_eq!(hub.stats().rejected, only(|r| r.missing_connect_info = 2));
    assert_eq!(hub.stats().rate_limit_skipped, 0);
    assert_upgraded(&hub, 0, 0);
}

/// With connect info, nothing is skipped: the counter stays at zero.
#[tokio::test]
async fn with_connect_info_the_rate_limit_is_never_skipped() {
    let ws = WsLayer::new();
    let (hub, addr) = start(&ws).await;
    burst(addr, &[], 2).await;
    assert_eq!(hub.stats().rate_limit_skipped, 0);
}

#[tokio::test]
async fn without_connect_info_and_without_rate_limit_clients_connect() {
    let ws = open_layer().max_connections(5).auth::<Bearer>();
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve_plain(Router::new().merge(router)).await;

    let mut client = admitted(addr, &[("Authorization", "Bearer s3cret-alice")]).await;
    eventually("registered", || hub.client_count() == 1).await;
    hub.handle_event(&Event::delta(1, vec![], vec![])).unwrap();
    assert_eq!(next_event(&mut client).await.seq, 1);
    // The other checks do not need the peer address either.
    assert_eq!(refused(addr, &[]).await.status, 401);
    let bad_origin = [
        ("Authorization", "Bearer s3cret-alice"),
        ("Origin", "https://evil.example"),
    ];
    assert_eq!(refused(addr, &bad_origin).await.status, 403);
    assert_eq!(
        hub.stats().rejected,
        only(|r| {
            r.unauthorized = 1;
            r.origin = 1;
        })
    );
    assert_upgraded(&hub, 1, 1);
    close(client).await;
}

// ---------------------------------------------------------------------------------------------
// 10. Order of the checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stopped_comes_before_every_other_check() {
    let ws = WsLayer::new().auth::<Bearer>().max_connections(1);
    let (hub, addr) = start(&ws).await;
    hub.stop();

    // A bad origin and no credentials, six times (the rate limit's burst is 4).
    for _ in 0..6 {
        let refused = refused(addr, &[("Origin", "https://evil.example")]).await;
        assert_eq!(refused.status, 503);
        assert_eq!(refused.body, "server is stopping\n");
    }
    assert_eq!(hub.stats().rejected, only(|r| r.stopped = 6));
    assert_upgraded(&hub, 0, 0);
}

#[tokio::test]
async fn rate_limit_comes_before_origin() {
    let ws = WsLayer::new();
    let (hub, addr) = start(&ws).await;
    let evil = [("Origin", "https://evil.example")];

    // Rejected requests spend tokens too: the limit is on attempts.
    for _ in 0..4 {
        assert_eq!(refused(addr, &evil).await.status, 403);
    }
    let fifth = refused(addr, &evil).await;
    assert_eq!(fifth.status, 429);
    assert_eq!(fifth.body, "too many connection attempts\n");
    assert!(fifth.retry_after().is_some_and(|s| (1..=5).contains(&s)));
    assert_eq!(
        hub.stats().rejected,
        only(|r| {
            r.origin = 4;
            r.rate_limited = 1;
        })
    );
    assert_upgraded(&hub, 0, 0);
}

#[tokio::test]
async fn origin_comes_before_authentication() {
    let ws = open_layer().auth::<Bearer>();
    let (hub, addr) = start(&ws).await;

    for headers in [
        &[("Origin", "https://evil.example")][..],
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", "Bearer wrong"),
        ][..],
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", "Bearer s3cret-alice"),
        ][..],
    ] {
        let refused = refused(addr, headers).await;
        assert_eq!(refused.status, 403, "{headers:?}");
        assert_eq!(refused.body, "origin not allowed\n");
        assert!(refused.headers.get(header::WWW_AUTHENTICATE).is_none());
    }
    assert_eq!(hub.stats().rejected, only(|r| r.origin = 3));
    assert_upgraded(&hub, 0, 0);
}

#[tokio::test]
async fn authentication_comes_before_the_connection_cap() {
    let ws = open_layer().auth::<Bearer>().max_connections(1);
    let (hub, addr) = start(&ws).await;
    let alice = [("Authorization", "Bearer s3cret-alice")];

    let first = admitted(addr, &alice).await;
    eventually("at the cap", || hub.client_count() == 1).await;

    // At the cap, an unauthenticated request learns only that it is unauthenticated.
    let anonymous = refused(addr, &[]).await;
    assert_eq!(
        (anonymous.status, anonymous.body.as_str()),
        (401, MISSING_TOKEN_BODY)
    );
    assert_eq!(anonymous.retry_after(), None);
    let wrong = refused(addr, &[("Authorization", "Bearer wrong")]).await;
    assert_eq!((wrong.status, wrong.body.as_str()), (401, BAD_TOKEN_BODY));
    // An authenticated one hits the cap.
    let full = refused(addr, &alice).await;
    assert_eq!(
        (full.status, full.body.as_str()),
        (503, "too many connections\n")
    );
    assert_eq!(full.retry_after(), Some(5));
    assert_eq!(
        hub.stats().rejected,
        only(|r| {
            r.unauthorized = 2;
            r.connection_cap = 1;
        })
    );
    assert_upgraded(&hub, 1, 1);
    close(first).await;
}

// ---------------------------------------------------------------------------------------------
// 11. User layers on the returned router
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tower_layers_stack_on_the_returned_router() {
    let ws = open_layer().max_connections(1);
    let (ws_router, hub) = ws.build("/ws");
    let app = Router::new().merge(ws_router.layer(tower_http::trace::TraceLayer::new_for_http()));
    let addr = serve(app).await;

    let mut client = admitted(addr, &[]).await;
    eventually("registered", || hub.client_count() == 1).await;
    hub.handle_event(&Event::delta(1, vec![], vec![])).unwrap();
    assert_eq!(next_event(&mut client).await.seq, 1);

    // Rejections still come out intact, and are still counted, through the outer layer.
    let capped = refused(addr, &[]).await;
    assert_eq!((capped.status, capped.retry_after()), (503, Some(5)));
    let evil = refused(addr, &[("Origin", "https://evil.example")]).await;
    assert_eq!(
        (evil.status, evil.body.as_str()),
        (403, "origin not allowed\n")
    );
    assert_eq!(
        hub.stats().rejected,
        only(|r| {
            r.connection_cap = 1;
            r.origin = 1;
        })
    );
    assert_upgraded(&hub, 1, 1);
    close(client).await;
}
