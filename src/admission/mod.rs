//! Admission control: the checks an upgrade request passes before it becomes a connection.
//!
//! Each check is its own module with a tower [`Layer`](tower::Layer) usable on any axum route.
//! [`WsLayer`](crate::WsLayer) applies the configured ones in this order:
//!
//! | order | check | rejection |
//! |---|---|---|
//! | 1 | hub stopped | `503 Service Unavailable` |
//! | 2 | per-IP rate limit ([`rate_limit`]) | `429 Too Many Requests` + `Retry-After` |
//! | 3 | origin ([`origin`]) | `403 Forbidden` |
//! | 4 | authentication ([`auth`]) | `401 Unauthorized` or the extractor's own rejection |
//! | 5 | connection cap ([`cap`]) | `503 Service Unavailable` + `Retry-After` |
//! | 6 | WebSocket handshake (RFC 6455 §4.2.1) and subprotocol (§4.2.2) | `426 Upgrade Required` or `400 Bad Request` |
//!
//! [`token`] reads a bearer token from where a browser can put one (a subprotocol, a cookie,
//! a query parameter) for the authentication extractor.
//!
//! Every rejection made here carries a [`Rejected`] response extension naming its
//! [`RejectReason`], so an outer layer (the one `WsLayer` installs) can count it without
//! parsing bodies.

pub mod auth;
pub mod cap;
pub mod client_ip;
pub mod origin;
pub mod rate_limit;
pub mod stopped;
pub mod token;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use pin_project_lite::pin_project;

pub use crate::reject::{RejectReason, Rejected};

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
    /// Response future of every admission service: the inner service's future when the
    /// request is admitted, or a ready rejection.
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
