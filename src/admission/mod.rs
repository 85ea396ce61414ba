//! Admission control: the checks an upgrade request passes before it becomes a connection.
//!
//! [`WsLayer`](crate::WsLayer) applies them in this order; the first that fails answers, with
//! a short plain-text body (ending in a newline), and no rejection ever upgrades the socket:
//!
//! | order | check | status | body | headers | reason ([`RejectReason`]) |
//! |---|---|---|---|---|---|
//! | 1 | endpoint stopped ([`Publisher::stop`](crate::Publisher::stop)) | `503` | `server is stopping` | | `stopped` |
//! | 2 | per-IP rate limit ([`rate_limit`]) | `429` | `too many connection attempts` | `Retry-After` (whole seconds, rounded up) | `rate_limited` |
//! | 2 | the rate limit finds no client address (served without `ConnectInfo<SocketAddr>`), under [`MissingClientAddr::Reject`](crate::MissingClientAddr::Reject) only | `500` | names `into_make_service_with_connect_info::<SocketAddr>()` | | `missing_connect_info` |
//! | 3 | origin ([`origin`]): a foreign, malformed or repeated `Origin`, or a same-origin page on a host the server does not know | `403` | `origin not allowed` | | `origin` |
//! | 3 | origin: no `Origin` header, under [`require_origin(true)`](crate::WsLayer::require_origin) only (without it such a request passes) | `403` | `origin required` | | `origin_missing` |
//! | 4 | authentication ([`WsLayer::auth`](crate::WsLayer::auth), carriers in [`token`]) | the extractor's rejection, unchanged (`BearerToken`'s: `401`) | the extractor's | the extractor's (`BearerToken`'s: `WWW-Authenticate: Bearer`) | `unauthorized` |
//! | 5 | connection cap ([`cap`]) | `503` | `too many connections` | `Retry-After` | `connection_cap` |
//! | 6 | `Host` missing (HTTP/2: no `:authority`), repeated, malformed, or naming another authority than `:authority` | `400` | names the `Host` rule (RFC 9112 §3.2, RFC 9113 §8.3.1) | | `not_upgrade` |
//! | 6 | not a WebSocket upgrade (a plain `GET`: `Upgrade` lacks `websocket` or `Connection` lacks `upgrade`) | `426` | `this endpoint needs a WebSocket upgrade: …` | `Upgrade: websocket`, `Connection: upgrade` | `not_upgrade` |
//! | 6 | an upgrade over HTTP/1.0 | `400` | `a WebSocket upgrade needs HTTP/1.1` | | `not_upgrade` |
//! | 6 | `Sec-WebSocket-Version` missing, repeated or not `13` | `400` | `unsupported Sec-WebSocket-Version: …` | `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2) | `not_upgrade` |
//! | 6 | `Sec-WebSocket-Key` missing, repeated or not the base64 of 16 bytes | `400` | `Sec-WebSocket-Key must be the base64 of 16 bytes, sent once` | | `not_upgrade` |
//! | 6 | over HTTP/2, not an extended `CONNECT` with `:protocol = websocket` (RFC 8441 §4) | `400` | `over HTTP/2 a WebSocket is an extended CONNECT …` | | `not_upgrade` |
//! | 6 | a valid upgrade on a connection hyper cannot upgrade (the request did not come through a hyper server: `tower::ServiceExt::oneshot` in a test, some proxies' adapters) | `400` | `websocket upgrade not available on this connection` | | `not_upgrade` |
//! | 6 | `Sec-WebSocket-Protocol` offers only protocols the server does not speak (RFC 6455 §4.2.2) | `400` | `none of the offered Sec-WebSocket-Protocol values is spoken here` | | `not_upgrade` |
//!
//! `Connection` and `Upgrade` are read as field lists (RFC 9110 §5.3, §7.6.1): their tokens
//! are compared case-insensitively across every line, so `Connection: keep-alive, Upgrade`
//! and `Upgrade: WebSocket` pass. Each rejection is logged at `warn` with the peer and the
//! reason (never a credential), counted in [`Publisher::stats`](crate::Publisher::stats)
//! (`rejected`, per reason), and kept for the client at `<path>/status` (below).
//!
//! The origin check, the rate limit and the cap are tower layers usable on any axum route on
//! their own, named as tower-http names its middleware: [`origin::CheckOriginLayer`] /
//! [`origin::CheckOrigin`], [`rate_limit::RateLimitLayer`] / [`rate_limit::PerIpRateLimit`],
//! [`cap::ConnectionLimitLayer`] / [`cap::ConnectionLimit`], all with one [`ResponseFuture`].
//! Every rejection made here carries a [`Rejected`] response extension naming its reason, so
//! an outer layer can count it without parsing bodies.
//!
//! # Why was I refused? (`<path>/status`)
//!
//! A browser cannot read the HTTP status of a refused WebSocket handshake: whatever the server
//! answered, the page sees an `error` and a close with code 1006. So the router built by
//! `WsLayer` keeps, per client IP, the most recent refusal of an upgrade request and serves it
//! at `GET <path>/status` (for example `/ws/status`), outside every check:
//!
//! ```text
//! 200 OK
//! Content-Type: application/json
//! Cache-Control: no-store
//!
//! {"lastRejection":null}
//! {"lastRejection":{"reason":"rate_limited","status":429,"message":"too many connection attempts","retryAfter":12,"at":"2026-11-29T19:12:03.5Z"}}
//! ```
//!
//! - `reason` is [`RejectReason::as_str`](crate::RejectReason::as_str); `status` the HTTP
//!   status the upgrade got; `at` when it happened (RFC 3339, UTC).
//! - `message` says what happened, in a short English sentence: for `origin`, whether the
//!   page's origin is foreign (`"this page's origin is not allowed"`) or the page was served
//!   from a host name the server does not know (`"this page's host name is not one the server
//!   knows (not in its allowed hosts)"`); for `origin_missing`, `"the request has no Origin
//!   header, and this server requires one"`.
//! - `retryAfter` is the number of whole seconds **from now** until the `Retry-After` of that
//!   answer has passed (0 once it has), or `null` when the answer carried none (403, 401).
//! - A client only ever sees the refusal of its own IP, computed exactly as the rate limit
//!   computes it (the peer address, or a forwarded one from a
//!   [trusted proxy](crate::WsLayer::trusted_proxies)); without `ConnectInfo<SocketAddr>`
//!   every client shares one record. It reveals nothing but the caller's own refusal, and
//!   sends no CORS header, so a foreign page cannot read it.
//! - A refusal is kept 60 s; at most 4 096 client IPs are remembered (the oldest first
//!   forgotten).

pub(crate) mod auth;
pub mod cap;
pub mod client_ip;
pub(crate) mod invalid;
pub mod origin;
pub mod rate_limit;
pub(crate) mod stopped;
pub mod token;

pub(crate) use crate::reject::RejectReason;
pub use crate::reject::Rejected;
pub(crate) use invalid::InvalidSetting;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use pin_project_lite::pin_project;

/// Builds a rejection: `status`, a short plain-text `body`, an optional `Retry-After` in whole
/// seconds, and the [`Rejected`] extension.
pub(crate) fn rejection(
    reason: RejectReason,
    status: StatusCode,
    body: &'static str,
    retry_after_secs: Option<u64>,
) -> Response {
    let mut response = (status, body).into_response();
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response.extensions_mut().insert(Rejected(reason));
    response
}

/// Marks an existing response (for example an auth extractor's own rejection) as a rejection
/// without changing its status, headers or body.
pub(crate) fn mark_rejected(mut response: Response, reason: RejectReason) -> Response {
    response.extensions_mut().insert(Rejected(reason));
    response
}

pin_project! {
    /// Response future of every admission service ([`origin::CheckOrigin`],
    /// [`rate_limit::PerIpRateLimit`], [`cap::ConnectionLimit`]): the inner service's future
    /// when the request is admitted, or a ready rejection.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn rejected(response: Response) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polling a completed future is a caller bug (the Future contract), not
                // something a request can cause.
                None => panic!("admission ResponseFuture polled after completion"),
            },
        }
    }
}
