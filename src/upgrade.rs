//! Completing the WebSocket handshake and taking the connection from hyper.
//!
//! axum's [`WebSocketUpgrade`](axum::extract::ws::WebSocketUpgrade) still checks the request
//! (its rejections are the answers clients get), but the connection is taken here rather than
//! through its `on_upgrade`: that hands out a `WebSocket` that can only be written message by
//! message, and we write pre-framed events straight to the socket (see `conn/socket.rs`).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tungstenite::protocol::WebSocketConfig;

use crate::conn::{Socket, Transport};

/// What completing the upgrade takes from the request: hyper's handle on the connection and
/// the client's key. Must be extracted before `WebSocketUpgrade`, which removes the handle
/// from the request.
pub(crate) struct UpgradeHandle {
    on_upgrade: Option<OnUpgrade>,
    key: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for UpgradeHandle {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(UpgradeHandle {
            on_upgrade: parts.extensions.get::<OnUpgrade>().cloned(),
            key: parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned(),
        })
    }
}

impl UpgradeHandle {
    /// Answers `101 Switching Protocols` and runs `serve` on the socket once hyper hands the
    /// connection over. Call only for a request `WebSocketUpgrade` accepted.
    pub(crate) fn accept<F, Fut>(
        self,
        config: WebSocketConfig,
        on_failed: impl FnOnce(hyper::Error) + Send + 'static,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (Some(on_upgrade), Some(key)) = (self.on_upgrade, self.key) else {
            // WebSocketUpgrade accepts HTTP/1.1 upgrades with a key (the route answers GET
            // only, so never an HTTP/2 CONNECT): not reachable, but not worth a panic.
            return (
                StatusCode::BAD_REQUEST,
                "websocket upgrade not available on this connection\n",
            )
                .into_response();
        };
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let (transport, early) = Transport::from_upgraded(upgraded);
                    serve(Socket::new(transport, early, config)).await;
                }
                Err(error) => on_failed(error),
            }
        });
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // An accept key is base64: always a valid header value.
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}
