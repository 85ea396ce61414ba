//! The WebSocket opening handshake, server side: checking the client's request (RFC 6455
//! §4.2.1), answering it (§4.2.2), and taking the connection from hyper.
//!
//! The request is checked here rather than by axum's `WebSocketUpgrade`, which accepts a
//! `Sec-WebSocket-Key` that is not the base64 of 16 bytes (or sent twice), answers an
//! unsupported version without the `Sec-WebSocket-Version` header §4.2.2 requires, and hands
//! out a `WebSocket` that can only be written message by message — we write pre-framed events
//! straight to the socket (see `conn/socket.rs`).
//!
//! | request | answer |
//! |---|---|
//! | `Upgrade` lacks the token `websocket`, or `Connection` lacks `upgrade` (a plain `GET`) | `426 Upgrade Required`, `Upgrade: websocket`, `Connection: upgrade` |
//! | `Host` missing (HTTP/1.1; HTTP/2 without `:authority`), repeated, malformed, or differing from `:authority` (see [`host`](crate::host)) | `400` |
//! | HTTP/1.0 | `400` |
//! | `Sec-WebSocket-Version` missing, repeated or not `13` | `400`, `Sec-WebSocket-Version: 13` |
//! | `Sec-WebSocket-Key` missing, repeated, or not the base64 of exactly 16 bytes | `400` |
//! | `Sec-WebSocket-Protocol` offers protocols, none of which the server speaks | `400` |
//! | HTTP/2: not a `CONNECT` with `:protocol = websocket` (RFC 8441 §4) | `400` |
//! | HTTP/2: an extended CONNECT otherwise valid | `200` (RFC 8441 §5), the stream carries the WebSocket |
//! | anything else | `101 Switching Protocols` with `Sec-WebSocket-Accept`, and `Sec-WebSocket-Protocol` when the client offered one the server speaks, `Sec-WebSocket-Extensions` when it offered a permessage-deflate the server can honour |
//!
//! # Subprotocols (RFC 6455 §1.9, §4.2.2 (5.4))
//! The server speaks the protocols configured with [`WsLayer::protocols`](crate::WsLayer::protocols),
//! [`PROTOCOL`] (`agentwatch.v1`) by default, in order of preference: the first of them the
//! client offers is chosen and echoed in the `101`. A client that offers none is accepted
//! without the header (Go's clients, `websocat`). A client that offers only protocols the
//! server does not speak is refused with `400` naming the ones it does: §4.2.2 would let the
//! server answer `101` without the header, but every conforming client (browsers per the
//! WHATWG WebSocket standard, tungstenite) then fails the connection itself, so the page would
//! see a bare 1006 and the server would log an accepted connection; a `400` is logged, counted
//! and readable at `<path>/status`. Token carriers (`agentwatch.token.…`, see
//! [`admission::token`](crate::admission::token)) are never chosen: they cannot be configured.
//!
//! # permessage-deflate (RFC 7692)
//! Unless [`WsLayer::compression(false)`](crate::WsLayer::compression), the server accepts the
//! first `permessage-deflate` offer in `Sec-WebSocket-Extensions` (every line, in the
//! client's order of preference; over HTTP/1.1 and over an RFC 8441 extended CONNECT alike)
//! that it can honour, and answers it with
//! `permessage-deflate; server_no_context_takeover`, plus `client_no_context_takeover` and
//! `server_max_window_bits=15` when the offer carried them (§7.1.1.2, §7.1.2.1). The server
//! never takes over its context, so one compressed frame per event serves every client (see
//! [`frame`](crate::frame)). An offer is declined (the next one is tried, and without any the
//! connection goes on uncompressed, never refused) when it carries an unknown parameter, a
//! parameter twice, a value where none belongs or an invalid one (§5.1), or a
//! `server_max_window_bits` below 15: the shared frames are compressed with a 32 KiB window,
//! which a client asking for a smaller one could not inflate. `client_max_window_bits` (with
//! or without a value) is accepted and not answered: the server inflates any window up to 15
//! bits. Browsers offer `permessage-deflate; client_max_window_bits`, which is accepted.
//!
//! `Connection` and `Upgrade` are field lists (RFC 9110 §5.3, §7.6.1, §7.8): their tokens are
//! compared case-insensitively, across every line the header was sent on, so `Connection:
//! keep-alive, Upgrade` and `Upgrade: WebSocket` pass. Every rejection is a short plain-text
//! body marked [`RejectReason::NotUpgrade`].

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use hyper::upgrade::OnUpgrade;
use tungstenite::protocol::WebSocketConfig;

use crate::admission::token::TOKEN_PROTOCOL_PREFIX;
use crate::admission::{InvalidSetting, RejectReason, rejection};
use crate::conn::{Socket, Transport};
use crate::host::{self, HostError};
use crate::stream_end::StreamEnd;

/// The only protocol version this server speaks (RFC 6455 §4.1).
const VERSION: &str = "13";

/// The subprotocol of the agentwatch wire format, spoken by default: offered by a client
/// (`new WebSocket(url, "agentwatch.v1")`), it is echoed in the `101`.
pub const PROTOCOL: &str = "agentwatch.v1";

/// The subprotocol chosen for a connection (the value echoed in `Sec-WebSocket-Protocol`).
///
/// Put in the request extensions before the authentication extractor runs, so an extractor
/// can read it with `parts.extensions.get::<Subprotocol>()`; absent when the client offered
/// no protocol. It is also logged, with the peer, when the upgrade is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subprotocol(HeaderValue);

impl Subprotocol {
    /// The protocol's name, e.g. `agentwatch.v1`.
    pub fn as_str(&self) -> &str {
        // Built only from validated protocols (visible ASCII): never fails.
        self.0.to_str().unwrap_or_default()
    }
}

impl std::fmt::Display for Subprotocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocols a server speaks, in order of preference.
#[derive(Debug, Clone)]
pub(crate) struct Protocols(std::sync::Arc<[HeaderValue]>);

impl Default for Protocols {
    fn default() -> Self {
        Protocols(std::sync::Arc::new([HeaderValue::from_static(PROTOCOL)]))
    }
}

impl Protocols {
    /// Checks every entry: the first that is empty, not an HTTP token (RFC 9110 §5.6.2;
    /// RFC 6455 §4.1 asks for token characters), or a token carrier (`agentwatch.token.…`,
    /// which must never be echoed) is the error.
    pub(crate) fn new<I>(protocols: I) -> Result<Self, InvalidSetting>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let list = protocols
            .into_iter()
            .map(|protocol| {
                let protocol = protocol.as_ref();
                let invalid = |reason| InvalidSetting::new("protocols", protocol, reason);
                if protocol.is_empty() {
                    return Err(invalid("empty"));
                }
                if !protocol.bytes().all(is_tchar) {
                    return Err(invalid("not an HTTP token (RFC 9110 §5.6.2)"));
                }
                if protocol.starts_with(TOKEN_PROTOCOL_PREFIX) {
                    return Err(invalid("token carriers are never echoed"));
                }
                HeaderValue::from_str(protocol).map_err(|_| invalid("not a header value"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Protocols(list.into()))
    }

    /// RFC 6455 §4.2.2: `Ok(None)` when the client offers nothing, the first of ours it
    /// offers, or `Err` when it offers only protocols we do not speak.
    fn select(&self, headers: &HeaderMap) -> Result<Option<Subprotocol>, ()> {
        let mut offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|element| !element.is_empty())
            .peekable();
        if offered.peek().is_none() {
            return Ok(None);
        }
        let offered: Vec<&[u8]> = offered.collect();
        self.0
            .iter()
            .find(|ours| offered.contains(&ours.as_bytes()))
            .map(|ours| Some(Subprotocol(ours.clone())))
            .ok_or(())
    }
}

/// A permessage-deflate offer the server accepted (RFC 7692 §7): what the `101` answers and
/// how the connection inflates what the client sends compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Deflate {
    /// The client offered `client_no_context_takeover`: it compresses every message afresh,
    /// so each inbound message is inflated from an empty window. Otherwise the connection's
    /// inflater keeps its window from one message to the next (§7.2.3 takeover).
    pub(crate) client_no_context_takeover: bool,
    /// The client offered `server_max_window_bits=15`: the answer must carry it (§7.1.2.1).
    pub(crate) server_max_window_bits: bool,
}

/// The extension token (RFC 7692 §7).
const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

impl Deflate {
    /// The first `permessage-deflate` offer in `Sec-WebSocket-Extensions` the server can
    /// honour (see the module docs), if any.
    pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Deflate> {
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(Deflate::accept_offer)
    }

    /// One offer (`name; param; param=value`), if it is a permessage-deflate the server
    /// can honour.
    fn accept_offer(offer: &str) -> Option<Deflate> {
        let mut parts = offer.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
            return None;
        }
        let mut accepted = Deflate::default();
        let (mut server_nct, mut client_bits) = (false, false);
        for param in parts {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => {
                    let value = value.trim();
                    // A quoted-string value (RFC 7692 §7.1.2.1 allows one): its content.
                    let value = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    (name.trim(), Some(value))
                }
                None => (param, None),
            };
            let seen = match (name.to_ascii_lowercase().as_str(), value) {
                ("server_no_context_takeover", None) => &mut server_nct,
                ("client_no_context_takeover", None) => &mut accepted.client_no_context_takeover,
                ("server_max_window_bits", Some(bits)) => {
                    // Only 15: the shared frames use a 32 KiB window.
                    if window_bits(bits)? != 15 {
                        return None;
                    }
                    &mut accepted.server_max_window_bits
                }
                ("client_max_window_bits", bits) => {
                    if let Some(bits) = bits {
                        window_bits(bits)?;
                    }
                    &mut client_bits
                }
                // Unknown, or a value where none belongs (or none where one does).
                _ => return None,
            };
            if std::mem::replace(seen, true) {
                // The same parameter twice (§7: "MUST decline").
                return None;
            }
        }
        Some(accepted)
    }

    /// The `Sec-WebSocket-Extensions` value of the `101` (or the RFC 8441 `200`).
    fn response(&self) -> HeaderValue {
        let value = match (self.client_no_context_takeover, self.server_max_window_bits) {
            (false, false) => "permessage-deflate; server_no_context_takeover",
            (true, false) => {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            }
            (false, true) => {
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=15"
            }
            (true, true) => {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
            }
        };
        HeaderValue::from_static(value)
    }
}

/// A window-bits value (RFC 7692 §7.1.2: 8 to 15, decimal, no leading zero).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The outcome of subprotocol negotiation, computed before authentication (so the
/// authentication extractor can read the [`Subprotocol`]) and applied by the handshake.
pub(crate) struct Negotiated(pub(crate) Result<Option<Subprotocol>, ()>);

impl<S: Send + Sync> FromRequestParts<S> for Negotiated {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let protocols = parts
            .extensions
            .get::<Protocols>()
            .cloned()
            .unwrap_or_default();
        let negotiated = protocols.select(&parts.headers);
        if let Ok(Some(chosen)) = &negotiated {
            parts.extensions.insert(chosen.clone());
        }
        Ok(Negotiated(negotiated))
    }
}

/// A request checked against RFC 6455 §4.2.1: either everything needed to complete the
/// upgrade, or why it cannot be.
pub(crate) struct Handshake(pub(crate) Result<UpgradeHandle, HandshakeError>);

/// What completing the upgrade takes from a valid request: hyper's handle on the connection
/// and the client's key (HTTP/1.1; an RFC 8441 extended CONNECT over HTTP/2 has none).
pub(crate) struct UpgradeHandle {
    on_upgrade: OnUpgrade,
    key: Option<HeaderValue>,
    /// The permessage-deflate offer the server can honour, if the client made one.
    deflate: Option<Deflate>,
    /// Over HTTP/2 under [`serve`](crate::serve()): resets the stream when the connection
    /// task ends (see [`stream_end`](crate::stream_end)).
    stream_end: Option<StreamEnd>,
}

/// Why a request is not a WebSocket opening handshake this server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// No `Upgrade: websocket` + `Connection: upgrade`: not an upgrade attempt at all.
    NotUpgrade,
    /// An upgrade over HTTP/1.0, which has no upgrade mechanism.
    HttpVersion,
    /// `Sec-WebSocket-Version` is missing, repeated or not 13.
    Version,
    /// `Sec-WebSocket-Key` is missing, repeated, or not the base64 of 16 bytes.
    Key,
    /// The connection cannot be upgraded (hyper gave no upgrade handle: a server built
    /// without upgrades, or HTTP/2 without extended CONNECT).
    Unavailable,
    /// The client offered subprotocols, none of which this server speaks.
    Protocol,
    /// Over HTTP/2, a request that is not an RFC 8441 extended CONNECT with
    /// `:protocol = websocket` (a plain `GET`, or a `CONNECT` for another protocol).
    NotExtendedConnect,
    /// `Host` missing (HTTP/1.1, or no authority at all), repeated, malformed, or naming
    /// another authority than `:authority` (HTTP/2).
    Host(HostError),
}

impl HandshakeError {
    /// A short, stable description, for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HandshakeError::NotUpgrade => "not an upgrade request",
            HandshakeError::HttpVersion => "upgrade over HTTP/1.0",
            HandshakeError::Version => "missing or unsupported Sec-WebSocket-Version",
            HandshakeError::Key => "missing or malformed Sec-WebSocket-Key",
            HandshakeError::Unavailable => "connection cannot be upgraded",
            HandshakeError::Protocol => "no offered Sec-WebSocket-Protocol is spoken here",
            HandshakeError::NotExtendedConnect => {
                "over HTTP/2, not an extended CONNECT with :protocol websocket"
            }
            HandshakeError::Host(error) => error.as_str(),
        }
    }

    /// The answer the client gets, marked [`RejectReason::NotUpgrade`].
    pub(crate) fn into_response(self) -> Response {
        let reject = |status, body| rejection(RejectReason::NotUpgrade, status, body, None);
        match self {
            HandshakeError::NotUpgrade => {
                // RFC 9110 §15.5.22: a 426 sends Upgrade; Connection: upgrade marks it as a
                // hop-by-hop header (§7.8), as a 101 would.
                let mut response = reject(
                    StatusCode::UPGRADE_REQUIRED,
                    "this endpoint needs a WebSocket upgrade: connect with a WebSocket client\n",
                );
                let headers = response.headers_mut();
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                response
            }
            HandshakeError::HttpVersion => reject(
                StatusCode::BAD_REQUEST,
                "a WebSocket upgrade needs HTTP/1.1\n",
            ),
            HandshakeError::Version => {
                // RFC 6455 §4.2.2 (4) and §4.4: list the versions we support.
                let mut response = reject(
                    StatusCode::BAD_REQUEST,
                    "unsupported Sec-WebSocket-Version: this server speaks 13\n",
                );
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(VERSION),
                );
                response
            }
            HandshakeError::Key => reject(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be the base64 of 16 bytes, sent once\n",
            ),
            HandshakeError::Unavailable => reject(
                StatusCode::BAD_REQUEST,
                "websocket upgrade not available on this connection\n",
            ),
            HandshakeError::Protocol => reject(
                StatusCode::BAD_REQUEST,
                "none of the offered Sec-WebSocket-Protocol values is spoken here\n",
            ),
            // No Upgrade/Connection headers here: they are illegal in HTTP/2 (RFC 9113 §8.2.2).
            HandshakeError::NotExtendedConnect => reject(
                StatusCode::BAD_REQUEST,
                "over HTTP/2 a WebSocket is an extended CONNECT with :protocol websocket (RFC 8441)\n",
            ),
            HandshakeError::Host(error) => reject(StatusCode::BAD_REQUEST, error.body()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Handshake(check(parts)))
    }
}

/// RFC 6455 §4.2.1, in the order the answers are most useful to the client: "not an upgrade"
/// first (a browser tab on the endpoint), then the version (which a client may retry with),
/// then the key.
fn check(parts: &mut Parts) -> Result<UpgradeHandle, HandshakeError> {
    // RFC 9112 §3.2 / RFC 9113 §8.3.1, and a WebSocket URI always has a host.
    host::check(parts.version, &parts.uri, &parts.headers, true).map_err(HandshakeError::Host)?;
    if parts.version >= Version::HTTP_2 {
        return check_extended_connect(parts);
    }
    let headers = &parts.headers;
    if !list_contains(headers, &header::UPGRADE, "websocket")
        || !list_contains(headers, &header::CONNECTION, "upgrade")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    if parts.version < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    match single(headers, &header::SEC_WEBSOCKET_VERSION) {
        Some(version) if version.as_bytes() == VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::Version),
    }
    let key = match single(headers, &header::SEC_WEBSOCKET_KEY) {
        Some(key) if is_valid_key(key.as_bytes()) => key.clone(),
        _ => return Err(HandshakeError::Key),
    };
    // Taken (not cloned) once the request is known to be valid: it is hyper's only handle.
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or(HandshakeError::Unavailable)?;
    Ok(UpgradeHandle {
        on_upgrade,
        key: Some(key),
        deflate: Deflate::negotiate(headers),
        stream_end: None,
    })
}

/// RFC 8441 §4–5: over HTTP/2 a WebSocket opens with `CONNECT`, `:protocol = websocket` and
/// `Sec-WebSocket-Version: 13`; there is no key, and the answer is a `200` after which the
/// stream carries the WebSocket. hyper hands the stream over through the same `OnUpgrade`
/// as an HTTP/1.1 upgrade (it needs `enable_connect_protocol` on its HTTP/2 server, which
/// both [`serve`](crate::serve()) and `axum::serve` set).
fn check_extended_connect(parts: &mut Parts) -> Result<UpgradeHandle, HandshakeError> {
    let is_websocket = parts
        .extensions
        .get::<hyper::ext::Protocol>()
        .is_some_and(|protocol| protocol.as_str() == "websocket");
    if parts.method != Method::CONNECT || !is_websocket {
        return Err(HandshakeError::NotExtendedConnect);
    }
    match single(&parts.headers, &header::SEC_WEBSOCKET_VERSION) {
        Some(version) if version.as_bytes() == VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::Version),
    }
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or(HandshakeError::Unavailable)?;
    Ok(UpgradeHandle {
        on_upgrade,
        key: None,
        deflate: Deflate::negotiate(&parts.headers),
        stream_end: parts.extensions.remove::<StreamEnd>(),
    })
}

/// Whether the field list `name` (every line of it) holds `token`, case-insensitively
/// (RFC 9110 §5.3: lines of a list field combine with commas; §5.6.1: empty elements and
/// whitespace around them are ignored). For `Upgrade`, a protocol's `/version` part is kept
/// (`websocket/13` is not `websocket`, RFC 9110 §7.8).
fn list_contains(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|element| element.trim().eq_ignore_ascii_case(token))
}

/// The value of a header that must be sent exactly once with one value: `None` when it is
/// missing, repeated on several lines, or a list (a comma in a key or version means two).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() || value.as_bytes().contains(&b',') {
        return None;
    }
    Some(value)
}

/// Whether `key` is the base64 (RFC 4648 §4, padded) of exactly 16 bytes, as RFC 6455 §4.1
/// asks: 22 alphabet characters and `==`. As Go's `encoding/base64` (and gorilla/websocket),
/// the unused low bits of the last character are not checked.
fn is_valid_key(key: &[u8]) -> bool {
    let is_alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..22].iter().all(is_alphabet) && &key[22..] == b"=="
}

impl UpgradeHandle {
    /// The permessage-deflate offer the server can honour, if the client made one (whether
    /// it is used is [`accept`](Self::accept)'s `compression`).
    pub(crate) fn deflate_offer(&self) -> Option<Deflate> {
        self.deflate
    }

    /// Answers `101 Switching Protocols` and runs `serve` on the socket once hyper hands the
    /// connection over. `compression`: whether an acceptable permessage-deflate offer is
    /// accepted (the endpoint's setting).
    pub(crate) fn accept<F, Fut>(
        self,
        protocol: Option<&Subprotocol>,
        compression: bool,
        config: WebSocketConfig,
        on_failed: impl FnOnce(hyper::Error) + Send + 'static,
        on_reset: impl FnOnce() + Send + 'static,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        let stream_end = self.stream_end;
        let deflate = self.deflate.filter(|_| compression);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    // `_slot`: the connection keeps its place under `serve`'s connection
                    // bounds until it ends.
                    let (transport, early, _slot) = Transport::from_upgraded(upgraded);
                    // Which write path this connection gets: the bare TcpStream (axum::serve,
                    // crate::serve) or hyper's boxed `Upgraded` (TLS, custom listeners).
                    tracing::debug!(
                        transport = if matches!(transport, Transport::Tcp(_)) {
                            "tcp"
                        } else {
                            "upgraded"
                        },
                        "websocket connection taken from hyper"
                    );
                    serve(Socket::new(transport, early, config, deflate)).await;
                    // The socket is dropped; an HTTP/2 stream hyper still holds (its peer
                    // never took the last bytes) is reset now rather than never.
                    if stream_end.is_some_and(|end| end.reset()) {
                        on_reset();
                    }
                }
                Err(error) => on_failed(error),
            }
        });
        // Over HTTP/2 (no key): a 200 with no body opens the stream (RFC 8441 §5, RFC 9113
        // §8.5), and connection-specific headers are illegal.
        let mut response = Response::new(Body::empty());
        if let Some(key) = &self.key {
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            // An accept key is base64: always a valid header value.
            if let Ok(accept) = HeaderValue::from_str(&accept) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
        }
        let headers = response.headers_mut();
        if let Some(Subprotocol(protocol)) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
        }
        if let Some(deflate) = deflate {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, deflate.response());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_the_base64_of_16_bytes() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        assert!(is_valid_key(b"+/+/+/+/+/+/+/+/+/+/+w=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",         // unpadded
            b"dGhlIHNhbXBsZSBub25jZQ=",        // short padding
            b"dGhlIHNhbXBsZSBub25jZQ===",      // long padding
            b"dGhlIHNhbXBsZSBub25j",           // 15 bytes
            b"dGhlIHNhbXBsZSBub25jZXMh",       // 18 bytes
            b"dGhlIHNhbXBsZSBub25jZ-==",       // URL-safe alphabet
            b"dGhlIHNhbXBsZSBub25jZQ==\n",     // trailing byte
            b"dGhlIHNhbXBsZSBub2 5jZQ==",      // space inside
            b"dGhlIHNhbXBsZSBub25jZQ==dGhlIH", // two keys run together
        ] {
            assert!(!is_valid_key(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn offer(lines: &[&'static str]) -> Option<Deflate> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(line),
            );
        }
        Deflate::negotiate(&headers)
    }

    #[test]
    fn deflate_offers_are_accepted_when_they_can_be_honoured() {
        let plain = Some(Deflate::default());
        let takeover_off = Deflate {
            client_no_context_takeover: true,
            ..Deflate::default()
        };
        let client_nct = Some(takeover_off);
        // Browsers (Chromium, Firefox), Python websockets, soketto.
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"]),
            plain
        );
        assert_eq!(
            offer(&[
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12, permessage-deflate; client_max_window_bits"
            ]),
            plain,
            "the first offer cannot be honoured: the second is taken"
        );
        assert_eq!(
            offer(&["x-webkit-deflate-frame", "Permessage-Deflate"]),
            plain
        );
        assert_eq!(
            offer(&["permessage-deflate; client_no_context_takeover; server_no_context_takeover"]),
            client_nct
        );
        let bits =
            offer(&["permessage-deflate; server_max_window_bits=\"15\"; client_max_window_bits=9"])
                .unwrap();
        assert_eq!(
            bits.response(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=15"
        );
        assert_eq!(
            takeover_off.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        for declined in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; mystery",
            "permessage-deflatex",
        ] {
            assert_eq!(offer(&[declined]), None, "{declined:?}");
        }
    }

    #[test]
    fn field_lists_match_tokens_on_every_line_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(header::CONNECTION, HeaderValue::from_static(" , UpGrade ,"));
        assert!(list_contains(&headers, &header::CONNECTION, "upgrade"));
        headers.insert(
            header::UPGRADE,
            HeaderValue::from_static("h2c, websocket/13"),
        );
        assert!(!list_contains(&headers, &header::UPGRADE, "websocket"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c,WebSocket"));
        assert!(list_contains(&headers, &header::UPGRADE, "websocket"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websockets"));
        assert!(!list_contains(&headers, &header::UPGRADE, "websocket"));
    }
}
