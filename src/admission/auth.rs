//! Authentication: who is connecting, through axum's extractor seam.
//!
//! There is one mechanism: [`WsLayer::auth::<A>()`](crate::WsLayer::auth), where
//! `A: FromRequestParts<S> + Into<Identity>` is an axum extractor. It runs on the request
//! parts before the upgrade; its rejection is the response, unchanged (marked
//! [`Rejected`](super::Rejected)`(Unauthorized)` for the counters and `<path>/status`, and
//! logged at `warn` with the peer and the status, never the credentials); its success is the
//! connection's [`Identity`], which the connection's tracing span carries.
//!
//! - [`Anonymous`] (the default): no authentication, everyone is [`Identity::anonymous`].
//! - Your own extractor (a bearer token or a session cookie checked against app state...)
//!   that converts into [`Identity`]; [`token`](super::token) reads the token from whichever
//!   carrier a browser can use.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use super::{RejectReason, mark_rejected};

/// Who a connection belongs to: the id the authentication extractor gave it, or anonymous.
///
/// Only the id is ever logged (it is `Display`, and the connection's span carries it): keep
/// secrets and personal data out of it. An app that needs more about its clients (roles,
/// tenants) keeps that in its own extractor and state, keyed by this id.
///
/// ```
/// use agentwatch_ws::Identity;
///
/// let alice = Identity::new("alice");
/// assert_eq!(alice.id(), "alice");
/// assert_eq!(alice.to_string(), "alice");
/// assert!(!alice.is_anonymous());
/// assert!(Identity::anonymous().is_anonymous());
/// assert_eq!(Identity::anonymous().to_string(), "anonymous");
/// assert!(Identity::new("").is_anonymous());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    id: String,
}

impl Identity {
    /// An identity with this id (empty: anonymous).
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }

    /// The identity of an unauthenticated client (empty id).
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The identifier; empty for an anonymous client.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the id is empty.
    pub fn is_anonymous(&self) -> bool {
        self.id.is_empty()
    }
}

impl fmt::Display for Identity {
    /// The id, or `anonymous` for an empty one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_anonymous() {
            f.write_str("anonymous")
        } else {
            f.write_str(&self.id)
        }
    }
}

/// The extractor meaning "no authentication", [`WsLayer`](crate::WsLayer)'s default: always
/// succeeds, converting into [`Identity::anonymous`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Anonymous;

impl<S: Send + Sync> FromRequestParts<S> for Anonymous {
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Anonymous)
    }
}

impl From<Anonymous> for Identity {
    fn from(_: Anonymous) -> Self {
        Identity::anonymous()
    }
}

/// Turns an auth extractor's rejection into the response to send: unchanged status, headers
/// and body, plus [`Rejected`](super::Rejected)`(Unauthorized)`. Logs a warning with `peer`
/// and the status (never the request's credentials).
pub(crate) fn reject_unauthorized(
    rejection: impl IntoResponse,
    peer: Option<SocketAddr>,
) -> Response {
    let response = rejection.into_response();
    tracing::warn!(
        peer = peer.map(tracing::field::display),
        reason = %RejectReason::Unauthorized,
        status = response.status().as_u16(),
        "rejected WebSocket upgrade: authentication extractor rejected the request"
    );
    mark_rejected(response, RejectReason::Unauthorized)
}

#[cfg(test)]
mod tests {
    // unwrap() here asserts on values the test built itself.
    use super::*;
    use crate::admission::Rejected;
    use axum::body::to_bytes;
    use http::StatusCode;

    #[test]
    fn identity_basics() {
        let alice = Identity::new("alice");
        assert_eq!(alice.id(), "alice");
        assert!(!alice.is_anonymous());
        assert_eq!(alice.to_string(), "alice");
        let anon = Identity::anonymous();
        assert!(anon.is_anonymous());
        assert_eq!(anon.to_string(), "anonymous");
        assert_eq!(anon, Identity::default());
        assert_eq!(Identity::from(Anonymous), anon);
        let set: std::collections::HashSet<_> = [alice.clone(), alice, anon].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[tokio::test]
    async fn a_rejection_passes_unchanged_with_the_marker() {
        let marked = reject_unauthorized(
            (
                StatusCode::IM_A_TEAPOT,
                [("x-custom", "yes")],
                "short and stout",
            ),
            None,
        );
        assert_eq!(marked.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(marked.headers()["x-custom"], "yes");
        assert_eq!(
            marked.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::Unauthorized))
        );
        let body = to_bytes(marked.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"short and stout");
    }
}
