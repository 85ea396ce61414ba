//! Subprotocol negotiation (RFC 6455 §4.2.2) and the browser token carriers over real
//! sockets: tokio-tungstenite clients offering `Sec-WebSocket-Protocol` against
//! `axum::serve`.

use crate::common;

use std::net::SocketAddr;

use agentwatch_ws::admission::token::{
    BearerToken, TokenRejection, token_protocol, tokens_from_cookie,
};
use agentwatch_ws::{EventType, Identity, PROTOCOL, Publisher, Subprotocol, WsLayer};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use common::*;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn layer() -> WsLayer {
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

/// What the handshake gave: the 101's headers and the client (which got its snapshot), or
/// the refusal's status, headers and body.
enum Outcome {
    Open(HeaderMap, Box<Client>),
    Refused(u16, HeaderMap, String),
}

/// A handshake to `path_and_query` with `headers` added (a repeated name is appended).
async fn attempt(addr: SocketAddr, path_and_query: &str, headers: &[(&str, &str)]) -> Outcome {
    let mut request = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request
            .headers_mut()
            .append(name, HeaderValue::from_str(value).unwrap());
    }
    match within("handshake", tokio_tungstenite::connect_async(request)).await {
        Ok((mut client, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
            Outcome::Open(response.headers().clone(), Box::new(client))
        }
        Err(tungstenite::Error::Http(response)) => Outcome::Refused(
            response.status().as_u16(),
            response.headers().clone(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}

/// A handshake that must succeed: the `Sec-WebSocket-Protocol` of the 101 (each line).
async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Vec<String>, Client) {
    match attempt(addr, path, headers).await {
        Outcome::Open(h, client) => {
            let echoed = h
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            (echoed, *client)
        }
        Outcome::Refused(status, _, body) => {
            panic!("expected a connection with {headers:?}, got {status} {body:?}")
        }
    }
}

async fn refused(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    match attempt(addr, path, headers).await {
        Outcome::Open(..) => panic!("expected a refusal with {headers:?}, got a connection"),
        Outcome::Refused(status, h, body) => (status, h, body),
    }
}

async fn close(mut client: Client) {
    let _ = within("close", client.close(None)).await;
}

const OFFER: &str = "sec-websocket-protocol";

#[tokio::test]
async fn agentwatch_v1_is_echoed_and_clients_offering_none_still_connect() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;

    let (echoed, a) = open(addr, "/ws", &[(OFFER, "agentwatch.v1")]).await;
    assert_eq!(echoed, ["agentwatch.v1"]);
    // Offered among others: found, and only it is echoed. (Two header lines are covered in
    // handshake.rs: tungstenite's client checks the answer against the first line only.)
    let (echoed, b) = open(addr, "/ws", &[(OFFER, "chat, superchat,agentwatch.v1")]).await;
    assert_eq!(echoed, [PROTOCOL]);
    // Go clients, websocat: nothing offered, nothing echoed.
    let (echoed, c) = open(addr, "/ws", &[]).await;
    assert!(echoed.is_empty(), "{echoed:?}");
    assert_eq!(hub.stats().rejected.total(), 0);
    for client in [a, b, c] {
        close(client).await;
    }
}

#[tokio::test]
async fn offering_only_unknown_protocols_is_a_400_counted_as_not_upgrade() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let (status, headers, body) = refused(addr, "/ws", &[(OFFER, "chat, agentwatch.v2")]).await;
    assert_eq!(status, 400);
    assert!(headers.get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
    assert_eq!(
        body,
        "none of the offered Sec-WebSocket-Protocol values is spoken here\n"
    );
    assert_eq!(hub.stats().rejected.not_upgrade, 1);
    assert_eq!(hub.stats().accepted, 0);
    // Case matters (protocol names are compared exactly, as axum does).
    let (status, ..) = refused(addr, "/ws", &[(OFFER, "Agentwatch.V1")]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn apps_choose_their_protocols_in_order_of_preference() {
    let ws = layer().protocols(["myapp.v2", PROTOCOL]).unwrap();
    let (_, addr) = start(&ws).await;
    let (echoed, a) = open(addr, "/ws", &[(OFFER, "agentwatch.v1, myapp.v2")]).await;
    assert_eq!(echoed, ["myapp.v2"], "the server's preference wins");
    let (echoed, b) = open(addr, "/ws", &[(OFFER, "agentwatch.v1")]).await;
    assert_eq!(echoed, ["agentwatch.v1"]);
    close(a).await;
    close(b).await;

    // Without PROTOCOL in the list, agentwatch.v1 is no longer spoken.
    let only_mine = layer().protocols(["myapp.v2"]).unwrap();
    let (_, addr) = start(&only_mine).await;
    assert_eq!(
        refused(addr, "/ws", &[(OFFER, "agentwatch.v1")]).await.0,
        400
    );

    // Invalid configurations are errors at build time.
    for bad in ["", "two words", "a,b", "é"] {
        let err = layer().protocols([bad]).unwrap_err();
        assert_eq!(err.input(), bad);
        assert_eq!(err.setting(), "protocols");
        assert!(
            err.to_string().starts_with("invalid protocols entry"),
            "{err}"
        );
    }
    // A token carrier is refused, and the error never shows its token.
    let err = layer()
        .protocols(["agentwatch.token.czNjcmV0"])
        .unwrap_err();
    assert_eq!(err.reason(), "token carriers are never echoed");
    assert!(!err.to_string().contains("czNjcmV0"), "{err}");
}

/// An extractor reading the chosen protocol: the negotiation runs before authentication.
struct SpeaksV1;

impl<S: Send + Sync> FromRequestParts<S> for SpeaksV1 {
    type Rejection = TokenRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Subprotocol>() {
            Some(chosen) if chosen.as_str() == PROTOCOL => Ok(SpeaksV1),
            _ => Err(TokenRejection::Missing),
        }
    }
}

impl From<SpeaksV1> for Identity {
    fn from(_: SpeaksV1) -> Self {
        Identity::new("v1-client")
    }
}

#[tokio::test]
async fn the_auth_extractor_can_read_the_chosen_protocol() {
    let ws = layer().auth::<SpeaksV1>();
    let (_, addr) = start(&ws).await;
    let (_, client) = open(addr, "/ws", &[(OFFER, "agentwatch.v1")]).await;
    close(client).await;
    assert_eq!(refused(addr, "/ws", &[]).await.0, 401);
}

/// The app's extractor: a token from any carrier, checked against a fixed secret.
struct User(String);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = TokenRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Every cookie candidate is checked: a planted one cannot hide a valid one.
        let check = |token: &str| (token == "s3cret-alice").then(|| User("alice".into()));
        if let Some(user) = tokens_from_cookie(parts, "aw_session").find_map(check) {
            return Ok(user);
        }
        if tokens_from_cookie(parts, "aw_session").next().is_some() {
            return Err(TokenRejection::Invalid);
        }
        let BearerToken(token) = BearerToken::from_request_parts(parts, state).await?;
        check(&token).ok_or(TokenRejection::Invalid)
    }
}

impl From<User> for Identity {
    fn from(User(name): User) -> Self {
        Identity::new(name)
    }
}

#[tokio::test]
async fn a_token_in_a_subprotocol_authenticates_and_is_never_echoed() {
    let ws = layer().auth::<User>();
    let (hub, addr) = start(&ws).await;
    let carrier = token_protocol("s3cret-alice");

    let offer = format!("{PROTOCOL}, {carrier}");
    let (echoed, client) = open(addr, "/ws", &[(OFFER, &offer)]).await;
    assert_eq!(echoed, [PROTOCOL], "only agentwatch.v1, never the token");
    close(client).await;

    let wrong = format!("{PROTOCOL}, {}", token_protocol("guess"));
    let (status, headers, body) = refused(addr, "/ws", &[(OFFER, &wrong)]).await;
    assert_eq!(status, 401);
    assert_eq!(body, "invalid bearer token\n");
    assert_eq!(
        headers.get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer error=\"invalid_token\""
    );
    let (status, headers, _) = refused(addr, "/ws", &[(OFFER, PROTOCOL)]).await;
    assert_eq!(status, 401);
    assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    // The token alone is not a protocol the server speaks: authenticated, then 400.
    let (status, ..) = refused(addr, "/ws", &[(OFFER, &carrier)]).await;
    assert_eq!(status, 400);

    let rejected = hub.stats().rejected;
    assert_eq!((rejected.unauthorized, rejected.not_upgrade), (2, 1));
}

#[tokio::test]
async fn a_token_in_a_cookie_or_the_query_authenticates() {
    let ws = layer().auth::<User>();
    let (_, addr) = start(&ws).await;

    let (_, a) = open(
        addr,
        "/ws",
        &[("cookie", "theme=dark; aw_session=s3cret-alice")],
    )
    .await;
    let (_, b) = open(addr, "/ws?since=0&access_token=s3cret-alice", &[]).await;
    let (_, c) = open(addr, "/ws", &[("authorization", "Bearer s3cret-alice")]).await;
    for client in [a, b, c] {
        close(client).await;
    }
    assert_eq!(
        refused(addr, "/ws", &[("cookie", "aw_session=nope")])
            .await
            .0,
        401
    );
    // Several cookies of the name: an empty, wrong or malformed one planted ahead of the
    // valid one (another path, a sibling subdomain) does not lock the client out; quotes
    // follow RFC 6265 §4.1.1.
    for cookies in [
        "aw_session=; aw_session=s3cret-alice",
        "aw_session=\"\"; aw_session=s3cret-alice",
        "aw_session=nope; aw_session=s3cret-alice",
        "aw_session=no pe; aw_session=s3cret-alice",
        "aw_session=\"s3cret-alice\"",
    ] {
        let (_, client) = open(addr, "/ws", &[("cookie", cookies)]).await;
        close(client).await;
    }
    let (_, client) = open(
        addr,
        "/ws",
        &[
            ("cookie", "aw_session=nope"),
            ("cookie", "aw_session=s3cret-alice"),
        ],
    )
    .await;
    close(client).await;
    // Not a cookie-value: never the token, however it is trimmed.
    for cookies in [
        "aw_session=\"s3cret-alice",
        "aw_session=s3cret-alice\"",
        "aw_session=\"\"s3cret-alice\"\"",
        "aw_session=s3cret-alice\\",
    ] {
        assert_eq!(
            refused(addr, "/ws", &[("cookie", cookies)]).await.0,
            401,
            "{cookies}"
        );
    }
    assert_eq!(refused(addr, "/ws?access_token=nope", &[]).await.0, 401);
}
