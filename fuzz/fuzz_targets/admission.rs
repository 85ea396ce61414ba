//! The admission path in-process: a fuzzed upgrade request through a `WsLayer` router with
//! every check configured (origin allowlist, allowed hosts, trusted proxies, connection cap,
//! rate limit, authentication), driven with `tower::ServiceExt::oneshot`.
//!
//! Properties:
//! - no panic;
//! - every request is answered within 1 s;
//! - only the statuses the `admission` docs list: `200` (only from `<path>/status`), `400`, `401`,
//!   `403`, `404` (another path), `405` (another method), `426`, `429`, `503`. No `101`: in
//!   process there is no hyper `OnUpgrade`, and an otherwise valid upgrade is answered `400`
//!   ("websocket upgrade not available on this connection"); no `500`: the routers keep the
//!   default `MissingClientAddr::Skip`;
//! - a forged forwarding header from an untrusted peer never changes the rate-limit bucket.
//!   The limit is one upgrade a minute with a burst of 1, and every input gets two fresh
//!   untrusted peers P1 and P2 (never seen before, so their buckets are full). P1 sends the
//!   request with forwarding headers A, then with forwarding headers B; P2 sends it with A,
//!   then with no forwarding header at all. The two first answers must be equal, and so must
//!   the two second answers: whether the second is limited depends on the peer alone.
//!
//! Requests from trusted proxies (whose headers pick arbitrary, repeating buckets) and
//! without a client address go to other routers, so that they never touch the buckets the
//! fresh peers use.

#![no_main]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentwatch_ws::admission::client_ip::ClientIpHeader;
use agentwatch_ws::admission::token::{BearerToken, TokenRejection};
use agentwatch_ws::{Identity, RateLimitPolicy, TrustedProxies, WsLayer};
use arbitrary::{Arbitrary, Unstructured};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// The one token the authenticated routers accept.
const TOKEN: &str = "let-me-in";
/// The endpoint's path; its status route is `/ws/status`.
const PATH: &str = "/ws";
/// Trusted proxies of every router.
const TRUSTED: [&str; 3] = ["10.0.0.0/8", "::1", "2001:db8:ffff::/48"];
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The routers, built once.
struct Routers {
    /// For fresh untrusted peers: authenticated, trusted proxies read with `Auto`, and with
    /// the header pinned to `Forwarded`.
    untrusted: [Router; 2],
    /// For trusted proxies and requests without a client address: anonymous.
    other: Router,
    /// A router whose hub is stopped.
    stopped: Router,
    runtime: tokio::runtime::Runtime,
}

fn layer(header: ClientIpHeader) -> WsLayer {
    let proxies = TrustedProxies::new(TRUSTED).map(|p| p.header(header));
    WsLayer::new()
        .allowed_hosts(["dash.example.com", "dash.example.com:8443"])
        .and_then(|layer| {
            // One router with an origin allowlist, the others with the default policy.
            if header == ClientIpHeader::Forwarded {
                layer.allowed_origins(["https://dashboard.example.com", "http://127.0.0.1:3000"])
            } else {
                Ok(layer)
            }
        })
        .map(|layer| {
            layer
                .trusted_proxies(proxies.unwrap_or_else(|e| panic!("trusted proxies: {e}")))
                .max_connections(2)
                .rate_limit(RateLimitPolicy::per_minute(1).burst(1))
        })
        .unwrap_or_else(|e| panic!("layer: {e}"))
}

/// The authenticated routers' extractor: a bearer token equal to [`TOKEN`].
struct Fuzzer;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Fuzzer {
    type Rejection = TokenRejection;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let BearerToken(token) = BearerToken::from_request_parts(parts, state).await?;
        if token == TOKEN {
            Ok(Fuzzer)
        } else {
            Err(TokenRejection::Invalid)
        }
    }
}

impl From<Fuzzer> for Identity {
    fn from(_: Fuzzer) -> Self {
        Identity::new("fuzz")
    }
}

fn routers() -> &'static Routers {
    static ROUTERS: OnceLock<Routers> = OnceLock::new();
    ROUTERS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        // Routers spawn nothing at build time, but build them inside the runtime anyway.
        let _guard = runtime.enter();
        let untrusted = [
            layer(ClientIpHeader::Auto).auth::<Fuzzer>().build(PATH).0,
            layer(ClientIpHeader::Forwarded)
                .auth::<Fuzzer>()
                .build(PATH)
                .0,
        ];
        let other = layer(ClientIpHeader::Auto).build(PATH).0;
        let (stopped, stopped_publisher) = layer(ClientIpHeader::Auto).build(PATH);
        stopped_publisher.stop();
        drop(_guard);
        Routers {
            untrusted,
            other,
            stopped,
            runtime,
        }
    })
}

/// A header value: one of a few meaningful ones for the field, or raw bytes.
#[derive(Arbitrary, Debug, Clone)]
enum Val {
    Known(u8),
    Raw(Vec<u8>),
}

impl Val {
    fn bytes<'a>(&'a self, known: &[&'a str]) -> &'a [u8] {
        match self {
            Val::Known(i) => known[usize::from(*i) % known.len()].as_bytes(),
            Val::Raw(raw) => raw,
        }
    }
}

const ORIGINS: &[&str] = &[
    "http://127.0.0.1:3000",
    "http://localhost:3000",
    "https://dashboard.example.com",
    "http://dash.example.com",
    "https://dash.example.com:8443",
    "http://attacker.example:3000",
    "null",
    "http://[::1]:8080",
    "http://app.localhost",
    "HTTP://127.0.0.1:3000",
    "http://127.0.0.1:3000/",
];
const HOSTS: &[&str] = &[
    "127.0.0.1:3000",
    "localhost:3000",
    "dash.example.com",
    "dash.example.com:8443",
    "attacker.example:3000",
    "[::1]:8080",
    "app.localhost",
    "",
];
const FORWARDED_FOR: &[&str] = &[
    "203.0.113.7",
    "6.6.6.6, 203.0.113.7",
    "203.0.113.7, 10.0.0.2",
    "unknown",
    "::ffff:198.51.100.1",
    "[2001:db8::1]:443",
    "198.51.100.9:5678",
    "10.0.0.1, 10.0.0.2",
    ", ,",
];
const FORWARDED: &[&str] = &[
    "for=203.0.113.7",
    "for=\"[2001:db8::1]:4711\"",
    "for=unknown",
    "for=_hidden, for=198.51.100.3",
    "for=6.6.6.6;proto=https, for=10.0.0.2",
    "proto=https",
    "For=\"203.0.113.8\"",
];
const KEYS: &[&str] = &[
    "dGhlIHNhbXBsZSBub25jZQ==",
    "AAAAAAAAAAAAAAAAAAAAAA==",
    "dGhlIHNhbXBsZSBub25jZQ",
    "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==",
];
const VERSIONS: &[&str] = &["13", "8", "13, 8", " 13", ""];
const PROTOCOLS: &[&str] = &[
    "agentwatch.v1",
    // "let-me-in", base64url
    "agentwatch.v1, agentwatch.token.bGV0LW1lLWlu",
    "agentwatch.token.bGV0LW1lLWlu",
    "chat, superchat",
    "agentwatch.token.!!",
    "",
];
const CONNECTIONS: &[&str] = &["Upgrade", "keep-alive, Upgrade", "upgrade", "close", ""];
const UPGRADES: &[&str] = &["websocket", "WebSocket", "h2c", "websocket, h2c", ""];
const AUTHORIZATIONS: &[&str] = &[
    "Bearer let-me-in",
    "bearer  let-me-in ",
    "Bearer wrong",
    "Basic bGV0LW1lLWlu",
    "Bearer",
];
const PARAM_VALUES: &[&str] = &[
    "0",
    "1",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "2026-11-29T20%3A41%3A27.773381742Z",
    "2026-11-29T20:41:27Z",
    "%FF%FE",
    "%",
    "let-me-in",
    "let%2Dme%2Din",
    "",
];

#[derive(Arbitrary, Debug, Clone)]
enum Param {
    Since(Val),
    SinceAt(Val),
    SnapshotAt(Val),
    AccessToken(Val),
    Raw(Val),
}

/// The forwarding headers of one request.
#[derive(Arbitrary, Debug, Clone)]
struct Forwarding(Vec<(FwdHeader, Val)>);

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FwdHeader {
    XForwardedFor,
    Forwarded,
    XRealIp,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Peer {
    /// A fresh untrusted address: IPv4, IPv6, or IPv4-mapped IPv6.
    Untrusted { family: u8, port: u16 },
    /// One of the trusted proxies.
    Trusted { which: u8, low: u8, port: u16 },
    /// No `ConnectInfo`: served without the per-IP limit.
    Missing,
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: Val,
    version: u8,
    /// HTTP/2 only: the `:protocol` pseudo-header.
    protocol_ext: Option<Val>,
    path: Val,
    params: Vec<Param>,
    origin: Option<Val>,
    host: Option<Val>,
    forwarding: Forwarding,
    /// P1's second request.
    forged: Forwarding,
    key: Option<Val>,
    ws_version: Option<Val>,
    subprotocol: Option<Val>,
    connection: Option<Val>,
    upgrade: Option<Val>,
    authorization: Option<Val>,
    last_event_id: Option<Val>,
    extra: Vec<(Val, Val)>,
    peer: Peer,
    /// For trusted and missing peers: use the stopped router.
    stopped: bool,
    /// For untrusted peers: which of the two routers.
    pinned: bool,
}

/// A fresh untrusted address, never used before in this process: the n-th address from
/// 11.0.0.0 (IPv4, or IPv4-mapped IPv6, which the limiter keys as IPv4), or the n-th /64 of
/// 2001:db8::/33 (the limiter keys IPv6 by /64). None is a trusted proxy, and all are distinct
/// until n passes 2³¹ (two days at 11 000 peers a second).
fn fresh(family: u8, port: u16) -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(11, 0, 0, 0)).wrapping_add(n));
    let ip = match family % 3 {
        0 => IpAddr::V4(v4),
        1 => IpAddr::V6(v4.to_ipv6_mapped()),
        // 2001:db8:ffff::/48 is trusted: stay below it.
        _ => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (n >> 16) as u16 & 0x7fff,
            n as u16,
            0,
            0,
            0,
            1,
        )),
    };
    SocketAddr::new(ip, port)
}

fn trusted(which: u8, low: u8, port: u16) -> SocketAddr {
    let ip = match which % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, low)),
        1 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xffff,
            0,
            0,
            0,
            0,
            u16::from(low),
        )),
    };
    SocketAddr::new(ip, port)
}

fn push_param(query: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if !query.is_empty() {
        query.push(b'&');
    }
    query.extend_from_slice(name);
    query.push(b'=');
    query.extend_from_slice(value);
}

/// The request `input` describes, with forwarding headers `forwarding`; `None` when the
/// fuzzed parts make no valid `http::Request` (hyper would not have produced it either).
fn build(
    input: &Input,
    forwarding: Option<&Forwarding>,
    peer: Option<SocketAddr>,
) -> Option<Request<Body>> {
    let method = Method::from_bytes(input.method.bytes(&[
        "GET", "GET", "GET", "HEAD", "POST", "CONNECT", "OPTIONS", "PUT", "DELETE",
    ]))
    .ok()?;
    let version = match input.version % 5 {
        0 => Version::HTTP_09,
        1 => Version::HTTP_10,
        3 => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let mut query = Vec::new();
    for param in &input.params {
        match param {
            Param::Since(v) => push_param(&mut query, b"since", v.bytes(PARAM_VALUES)),
            Param::SinceAt(v) => push_param(&mut query, b"since_at", v.bytes(PARAM_VALUES)),
            Param::SnapshotAt(v) => push_param(&mut query, b"snapshot_at", v.bytes(PARAM_VALUES)),
            Param::AccessToken(v) => push_param(&mut query, b"access_token", v.bytes(PARAM_VALUES)),
            Param::Raw(v) => {
                if !query.is_empty() {
                    query.push(b'&');
                }
                query.extend_from_slice(v.bytes(PARAM_VALUES));
            }
        }
    }
    let mut target = input
        .path
        .bytes(&[
            PATH,
            PATH,
            PATH,
            "/ws/status",
            "/ws/",
            "/",
            "/other",
            "/ws/status/x",
            "//ws",
        ])
        .to_vec();
    if !query.is_empty() {
        target.push(b'?');
        target.extend_from_slice(&query);
    }
    let uri = Uri::try_from(target).ok()?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .version(version)
        .body(Body::empty())
        .ok()?;
    let headers = request.headers_mut();
    let mut add = |name: HeaderName, value: &[u8]| {
        // A value hyper would refuse to parse is skipped, not the whole request.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    };
    use http::header;
    let fields: [(HeaderName, &Option<Val>, &[&str]); 8] = [
        (header::ORIGIN, &input.origin, ORIGINS),
        (header::HOST, &input.host, HOSTS),
        (header::SEC_WEBSOCKET_KEY, &input.key, KEYS),
        (header::SEC_WEBSOCKET_VERSION, &input.ws_version, VERSIONS),
        (
            header::SEC_WEBSOCKET_PROTOCOL,
            &input.subprotocol,
            PROTOCOLS,
        ),
        (header::CONNECTION, &input.connection, CONNECTIONS),
        (header::UPGRADE, &input.upgrade, UPGRADES),
        (header::AUTHORIZATION, &input.authorization, AUTHORIZATIONS),
    ];
    for (name, value, known) in fields {
        if let Some(value) = value {
            add(name, value.bytes(known));
        }
    }
    if let Some(value) = &input.last_event_id {
        add(
            HeaderName::from_static("last-event-id"),
            value.bytes(PARAM_VALUES),
        );
    }
    for (name, value) in &input.extra {
        let Ok(name) = HeaderName::from_bytes(name.bytes(&["cookie", "x-forwarded-host", "te"]))
        else {
            continue;
        };
        // Forwarding headers come only from `forwarding`, so the property compares like
        // with like.
        if ["forwarded", "x-forwarded-for", "x-real-ip"].contains(&name.as_str()) {
            continue;
        }
        add(name, value.bytes(&["access_token=let-me-in", ""]));
    }
    for (which, value) in forwarding.map_or(&[][..], |f| &f.0) {
        let (name, known) = match which {
            FwdHeader::XForwardedFor => ("x-forwarded-for", FORWARDED_FOR),
            FwdHeader::Forwarded => ("forwarded", FORWARDED),
            FwdHeader::XRealIp => ("x-real-ip", FORWARDED_FOR),
        };
        add(HeaderName::from_static(name), value.bytes(known));
    }
    let protocol = input
        .protocol_ext
        .as_ref()
        .filter(|_| version == Version::HTTP_2)
        .and_then(|protocol| {
            std::str::from_utf8(protocol.bytes(&["websocket", "WebSocket", "h3"])).ok()
        });
    if let Some(protocol) = protocol {
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from(protocol));
    }
    if let Some(peer) = peer {
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    Some(request)
}

/// Sends `request` through `router`, within [`REQUEST_TIMEOUT`], and checks the status.
async fn send(router: &Router, request: Request<Body>) -> Response {
    let path = request.uri().path().to_owned();
    let response: Result<Response, Infallible> =
        tokio::time::timeout(REQUEST_TIMEOUT, router.clone().oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("no answer within {REQUEST_TIMEOUT:?}"));
    let Ok(response) = response;
    let status = response.status();

    let documented = [
        StatusCode::BAD_REQUEST,
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED,
        StatusCode::UPGRADE_REQUIRED,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    assert!(
        documented.contains(&status) || (status == StatusCode::OK && path == "/ws/status"),
        "undocumented status {status} for {path}"
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert!(
            response.headers().contains_key(http::header::RETRY_AFTER),
            "429 without Retry-After"
        );
    }
    if verbose() {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let first_line = String::from_utf8_lossy(&body);
        let first_line = first_line.lines().next().unwrap_or_default();
        eprintln!("admission: {path} {} {first_line}", status.as_u16());
        return Response::from_parts(parts, Body::empty());
    }
    response
}

/// Whether `AGENTWATCH_FUZZ_VERBOSE` is set: then every answer is printed (for checking what
/// a corpus reaches: `cargo fuzz run admission <dir> -- -runs=0`).
fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("AGENTWATCH_FUZZ_VERBOSE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let routers = routers();
    routers.runtime.block_on(async {
        match input.peer {
            Peer::Untrusted { family, port } => {
                let router = &routers.untrusted[usize::from(input.pinned)];
                let (p1, p2) = (fresh(family, port), fresh(family, port));
                let requests = (
                    build(&input, Some(&input.forwarding), Some(p1)),
                    build(&input, Some(&input.forged), Some(p1)),
                    build(&input, Some(&input.forwarding), Some(p2)),
                    build(&input, None, Some(p2)),
                );
                let (Some(a1), Some(b1), Some(a2), Some(none2)) = requests else {
                    return;
                };
                let first = send(router, a1).await.status();
                let forged = send(router, b1).await.status();
                let reference_first = send(router, a2).await.status();
                let reference = send(router, none2).await.status();
                assert_eq!(
                    first, reference_first,
                    "two fresh untrusted peers answered differently"
                );
                assert_eq!(
                    forged, reference,
                    "forged forwarding headers from an untrusted peer changed its rate-limit answer"
                );
            }
            Peer::Trusted { which, low, port } => {
                let router = if input.stopped {
                    &routers.stopped
                } else {
                    &routers.other
                };
                if let Some(request) = build(
                    &input,
                    Some(&input.forwarding),
                    Some(trusted(which, low, port)),
                ) {
                    send(router, request).await;
                }
            }
            Peer::Missing => {
                let router = if input.stopped {
                    &routers.stopped
                } else {
                    &routers.other
                };
                if let Some(request) = build(&input, Some(&input.forwarding), None) {
                    send(router, request).await;
                }
            }
        }
    });
});
