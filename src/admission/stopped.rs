//! Turns every upgrade request away once the hub is stopped.

use std::task::{Context, Poll};

use axum::response::Response;
use http::{Request, StatusCode};
use tower::{Layer, Service};

use super::client_ip::peer_addr;
use super::{RejectReason, ResponseFuture, rejection};
use crate::stop::StopFlag;

/// Layer answering `503 Service Unavailable` once [`Publisher::stop`](crate::Publisher::stop) was
/// called. [`WsLayer`](crate::WsLayer) installs it.
#[derive(Debug, Clone)]
pub struct StoppedLayer {
    stopped: StopFlag,
}

impl StoppedLayer {
    /// Rejects requests once `stopped` is raised (by `Hub::stop`).
    pub(crate) fn new(stopped: StopFlag) -> Self {
        StoppedLayer { stopped }
    }
}

impl<S> Layer<S> for StoppedLayer {
    type Service = Stopped<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Stopped {
            inner,
            stopped: self.stopped.clone(),
        }
    }
}

/// Service made by [`StoppedLayer`].
#[derive(Debug, Clone)]
pub struct Stopped<S> {
    inner: S,
    stopped: StopFlag,
}

impl<S, B> Service<Request<B>> for Stopped<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.stopped.is_raised() {
            let peer = peer_addr(request.extensions()).map(tracing::field::display);
            tracing::warn!(peer, reason = "stopped", "upgrade rejected");
            return ResponseFuture::rejected(rejection(
                RejectReason::Stopped,
                StatusCode::SERVICE_UNAVAILABLE,
                "server is stopping\n",
                None,
            ));
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}
