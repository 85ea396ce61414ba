//! No secret reaches a log line: with a subscriber capturing every event and span field at
//! TRACE, and the `TraceLayer` setup of `examples/axum_app.rs`, a token sent in each carrier
//! (query `access_token`/`token`, `Authorization`, a cookie, an `agentwatch.token.…`
//! subprotocol), accepted or refused, over HTTP/1.1 and HTTP/2, never appears; nor in the
//! output of `examples/axum_app.rs` itself run at `RUST_LOG=trace`.

use crate::common;

use std::net::SocketAddr;

use agentwatch_ws::admission::token::{
    BearerToken, TokenRejection, token_protocol, tokens_from_cookie,
};
use agentwatch_ws::{Identity, WsLayer};
use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use common::*;
use http::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower_http::trace::TraceLayer;

const TOKEN: &str = "tok-7f3a9c1e-valid";
const WRONG: &str = "tok-0b44d2aa-wrong";

/// The app's extractor: every cookie candidate, else a bearer token from any carrier.
struct User;

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = TokenRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if tokens_from_cookie(parts, "aw_session").any(|token| token == TOKEN) {
            return Ok(User);
        }
        let BearerToken(token) = BearerToken::from_request_parts(parts, state).await?;
        if token == TOKEN {
            Ok(User)
        } else {
            Err(TokenRejection::Invalid)
        }
    }
}

impl From<User> for Identity {
    fn from(_: User) -> Self {
        Identity::new("dashboard-user")
    }
}

async fn start() -> SocketAddr {
    let ws = WsLayer::new().rate_limit(None).auth::<User>();
    // As in examples/axum_app.rs.
    let app = Router::new()
        .merge(ws.clone().build("/ws").0)
        .layer(TraceLayer::new_for_http().make_span_with(agentwatch_ws::redact::make_span));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(agentwatch_ws::serve(listener, app).into_future());
    addr
}

/// Opens a WebSocket over HTTP/1.1 with `headers` on `path`: the status of the answer.
async fn try_ws(addr: SocketAddr, path: &str, headers: &[(&'static str, String)]) -> u16 {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match within("handshake", tokio_tungstenite::connect_async(request)).await {
        Ok((mut client, response)) => {
            next_event(&mut client).await;
            let _ = client.close(None).await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_token_reaches_any_log_line_at_any_level() {
    let (captured, _guard) = Captured::install(tracing::Level::TRACE);
    let addr = start().await;
    let carriers = |token: &str| {
        vec![
            (format!("/ws?since=0&access_token={token}"), vec![]),
            (
                format!("/ws?token={token}"),
                vec![("authorization", format!("Bearer {token}"))],
            ),
            (
                "/ws".to_owned(),
                vec![("cookie", format!("theme=dark; aw_session={token}"))],
            ),
            (
                "/ws".to_owned(),
                vec![(
                    "sec-websocket-protocol",
                    format!("agentwatch.v1, {}", token_protocol(token)),
                )],
            ),
        ]
    };
    for (path, headers) in carriers(TOKEN) {
        assert_eq!(
            try_ws(addr, &path, &headers).await,
            101,
            "{path} {headers:?}"
        );
    }
    for (path, headers) in carriers(WRONG) {
        assert_eq!(
            try_ws(addr, &path, &headers).await,
            401,
            "{path} {headers:?}"
        );
    }

    // HTTP/2: an extended CONNECT with the token in the query, accepted and refused.
    let io = TokioIo::new(within("connect", TcpStream::connect(addr)).await.unwrap());
    let (mut sender, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(io),
    )
    .await
    .unwrap();
    let mut conn = Box::pin(conn);
    within("SETTINGS_ENABLE_CONNECT_PROTOCOL", async {
        while !conn.is_extended_connect_protocol_enabled() {
            tokio::select! {
                result = &mut conn => panic!("h2 connection ended: {result:?}"),
                () = tokio::task::yield_now() => {}
            }
        }
    })
    .await;
    tokio::spawn(conn);
    for (token, status) in [(TOKEN, StatusCode::OK), (WRONG, StatusCode::UNAUTHORIZED)] {
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("http://{addr}/ws?access_token={token}"))
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .header("sec-websocket-version", "13")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let response = within("h2 response", sender.send_request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    drop(sender);

    let text = captured.text();
    // The capture works: the requests and the refusals were logged, with their spans.
    assert!(
        text.contains("uri=/ws?since=0&access_token=<redacted>"),
        "{text}"
    );
    assert!(text.contains("rejected WebSocket upgrade"), "{text}");
    for secret in [
        TOKEN.to_owned(),
        WRONG.to_owned(),
        token_protocol(TOKEN),
        token_protocol(WRONG),
    ] {
        let secret = secret.trim_start_matches("agentwatch.token.");
        let leaks: Vec<&str> = text.lines().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged:\n{}", leaks.join("\n"));
    }
}

/// `examples/axum_app.rs` as shipped, at `RUST_LOG=trace`: its output holds no token, valid
/// (`let-me-in`) or not, from any carrier.
#[tokio::test]
async fn the_axum_app_example_logs_no_token_at_trace() {
    use std::process::{Command, Stdio};
    const VALID: &str = "let-me-in";
    let binary = example_binary("axum_app");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("axum_app.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let output = std::fs::File::create(&log).unwrap();
    let _app = common::process::ProcessGuard::spawn(
        "axum_app",
        Command::new(binary)
            .env("RUST_LOG", "trace")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output),
        Some(log.clone()),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    eventually("the example listens", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("listening on"))
    })
    .await;
    // Four attempts: the example's rate limit allows a burst of four per IP.
    let origin = ("origin", "https://dashboard.example.com".to_owned());
    let attempts = [
        (
            format!("/ws?since=0&access_token={VALID}"),
            vec![origin.clone()],
            101,
        ),
        (
            "/ws".to_owned(),
            vec![origin.clone(), ("authorization", format!("Bearer {VALID}"))],
            101,
        ),
        (
            "/ws".to_owned(),
            vec![
                origin.clone(),
                (
                    "sec-websocket-protocol",
                    format!("agentwatch.v1, {}", token_protocol(VALID)),
                ),
            ],
            101,
        ),
        (
            format!("/ws?access_token={WRONG}"),
            vec![
                origin.clone(),
                (
                    "sec-websocket-protocol",
                    format!("agentwatch.v1, {}", token_protocol(WRONG)),
                ),
            ],
            401,
        ),
    ];
    for (path, headers, status) in attempts {
        assert_eq!(
            try_ws(addr, &path, &headers).await,
            status,
            "{path} {headers:?}"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        VALID.to_owned(),
        WRONG.to_owned(),
        token_protocol(VALID),
        token_protocol(WRONG),
    ] {
        let secret = secret.trim_start_matches("agentwatch.token.");
        let leaks: Vec<&str> = text.lines().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged:\n{}", leaks.join("\n"));
    }
    // The capture worked: the requests were logged, redacted.
    assert!(text.contains("access_token=<redacted>"), "{text}");
}
