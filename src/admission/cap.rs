//! The connection cap: at most `max` live connections, enforced **before** the upgrade.
//!
//! The Go original registered a client after the upgrade and then closed it with 1013 when
//! over the cap, so a full server still paid for every handshake and the client saw a
//! successful upgrade followed by a close. Here a [`ConnectionPermit`] is taken atomically from
//! a semaphore before the upgrade; when none is left the request gets
//! `503 Service Unavailable` with `Retry-After`, and no socket is ever opened.
//!
//! The permit is released when the **last clone** of it is dropped. The WebSocket connection
//! task must keep one clone until it ends, however it ends (normal close, error, panic
//! unwinding, hub stop, task abort): moving the permit into the spawned task is enough, since
//! dropping the task drops it.
//!
//! # Example
//!
//! ```
//! use agentwatch_ws::admission::cap::{ConnectionCap, ConnectionLimitLayer, ConnectionPermit};
//! use axum::{Extension, Router, routing::get};
//!
//! let limit = ConnectionCap::new(1000);
//! let app: Router = Router::new()
//!     .route(
//!         "/ws",
//!         get(|Extension(permit): Extension<ConnectionPermit>| async move {
//!             // Move `permit` into the connection task; the slot frees when it ends.
//!             tokio::spawn(async move {
//!                 let _permit = permit;
//!                 // ... serve the socket ...
//!             });
//!             "upgraded"
//!         }),
//!     )
//!     .layer(ConnectionLimitLayer::new(limit.clone()));
//! assert_eq!(limit.in_use(), 0);
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use http::{Request, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::ResponseFuture;
use super::client_ip::peer_addr;
use super::{RejectReason, rejection};

/// Default `Retry-After` sent with a `503` when the cap is reached.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A shared cap on live connections. Cheap to clone; clones share the same count.
///
/// `ConnectionCap::new(0)` is unlimited: [`try_acquire`](Self::try_acquire) always succeeds
/// (the permits are still counted, for [`in_use`](Self::in_use)).
///
/// ```
/// use agentwatch_ws::admission::cap::ConnectionCap;
///
/// let limit = ConnectionCap::new(2);
/// let a = limit.try_acquire().ok_or("no free slot")?;
/// let b = limit.try_acquire().ok_or("no free slot")?;
/// assert!(limit.try_acquire().is_none());
/// let a2 = a.clone();
/// drop(a);
/// assert_eq!(limit.in_use(), 2, "a clone still holds the slot");
/// drop(a2);
/// assert_eq!(limit.in_use(), 1);
/// assert!(limit.try_acquire().is_some());
/// # drop(b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ConnectionCap {
    max: usize,
    slots: Slots,
    retry_after: Duration,
}

#[derive(Clone)]
enum Slots {
    Limited(Arc<Semaphore>),
    Unlimited(Arc<AtomicUsize>),
}

impl ConnectionCap {
    /// A cap of `max` simultaneous connections; `0` means unlimited. Values above
    /// [`Semaphore::MAX_PERMITS`] are clamped to it.
    pub fn new(max: usize) -> Self {
        let slots = if max == 0 {
            Slots::Unlimited(Arc::new(AtomicUsize::new(0)))
        } else {
            Slots::Limited(Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))))
        };
        Self {
            max: max.min(Semaphore::MAX_PERMITS),
            slots,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// Sets the `Retry-After` sent by [`reject_response`](Self::reject_response) (default
    /// 5 s; sent in whole seconds, rounded up, at least 1).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The cap; `0` means unlimited.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether there is no cap.
    pub fn is_unlimited(&self) -> bool {
        self.max == 0
    }

    /// How many permits are held right now.
    pub fn in_use(&self) -> usize {
        match &self.slots {
            Slots::Limited(semaphore) => self.max.saturating_sub(semaphore.available_permits()),
            Slots::Unlimited(count) => count.load(Ordering::Acquire),
        }
    }

    /// Takes a slot if one is free. Atomic: two callers can never both take the last slot.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        let held = match &self.slots {
            Slots::Limited(semaphore) => Held::Limited {
                _permit: semaphore.clone().try_acquire_owned().ok()?,
            },
            Slots::Unlimited(count) => {
                count.fetch_add(1, Ordering::AcqRel);
                Held::Unlimited(count.clone())
            }
        };
        Some(ConnectionPermit {
            _held: Arc::new(held),
        })
    }

    /// [`try_acquire`](Self::try_acquire), or, when the cap is reached, a warning naming
    /// `peer` and the [`reject_response`](Self::reject_response). For handlers that take the
    /// permit themselves (after authentication, say) instead of using
    /// [`ConnectionLimitLayer`].
    // `Result<_, Response>` is the usual axum handler shape; boxing would only get in the way.
    #[allow(clippy::result_large_err)]
    pub fn acquire_or_reject(
        &self,
        peer: Option<SocketAddr>,
    ) -> Result<ConnectionPermit, Response> {
        self.try_acquire().ok_or_else(|| {
            tracing::warn!(
                peer = peer.map(tracing::field::display),
                reason = %RejectReason::ConnectionCap,
                max = self.max,
                "rejected WebSocket upgrade: connection cap reached"
            );
            self.reject_response()
        })
    }

    /// The rejection for a full server: `503 Service Unavailable`, `Retry-After`, body
    /// `too many connections`, and the [`Rejected`](super::Rejected)`(ConnectionCap)`
    /// extension. Logging is the caller's job ([`acquire_or_reject`](Self::acquire_or_reject)
    /// does it).
    pub fn reject_response(&self) -> Response {
        rejection(
            RejectReason::ConnectionCap,
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections\n",
            Some(whole_seconds(self.retry_after)),
        )
    }
}

impl fmt::Debug for ConnectionCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionCap")
            .field("max", &self.max)
            .field("in_use", &self.in_use())
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// Rounds up to whole seconds, at least 1 (for `Retry-After`).
pub(crate) fn whole_seconds(duration: Duration) -> u64 {
    // Saturating: a rate limit with a huge window can ask for `Duration::MAX`.
    let secs = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    secs.max(1)
}

/// One slot of a [`ConnectionCap`].
///
/// Clone, so it can travel in [`http::Extensions`]; the slot is released when the last clone
/// is dropped. Keep one clone in the connection task for as long as the connection lives.
#[derive(Clone)]
pub struct ConnectionPermit {
    _held: Arc<Held>,
}

enum Held {
    Limited { _permit: OwnedSemaphorePermit },
    Unlimited(Arc<AtomicUsize>),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Unlimited(count) = self {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit").finish_non_exhaustive()
    }
}

/// Takes a [`ConnectionPermit`] before calling the inner service and puts it in the request
/// extensions; `503` + `Retry-After` with [`RejectReason::ConnectionCap`] when none is free.
///
/// If the inner service does not take the permit out of the extensions and keep it, the slot
/// is freed as soon as the request is dropped.
#[derive(Debug, Clone)]
pub struct ConnectionLimitLayer {
    limit: ConnectionCap,
}

impl ConnectionLimitLayer {
    /// A layer drawing from `limit` (clones share the count).
    pub fn new(limit: ConnectionCap) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for ConnectionLimitLayer {
    type Service = ConnectionLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectionLimit {
            inner,
            limit: self.limit.clone(),
        }
    }
}

/// The service made by [`ConnectionLimitLayer`].
#[derive(Debug, Clone)]
pub struct ConnectionLimit<S> {
    inner: S,
    limit: ConnectionCap,
}

impl<S> ConnectionLimit<S> {
    /// Wraps `inner` with `limit`.
    pub fn new(inner: S, limit: ConnectionCap) -> Self {
        Self { inner, limit }
    }

    /// The limit in force.
    pub fn limit(&self) -> &ConnectionCap {
        &self.limit
    }
}

impl<S, B> Service<Request<B>> for ConnectionLimit<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.limit.acquire_or_reject(peer_addr(req.extensions())) {
            Ok(permit) => {
                req.extensions_mut().insert(permit);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;
    use crate::admission::Rejected;
    use axum::body::{Body, to_bytes};
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use axum::{Extension, Router};
    use http::header;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use tokio::sync::{mpsc, oneshot};
    use tokio::time::timeout;
    use tower::ServiceExt;

    const T: Duration = Duration::from_secs(5);

    fn req() -> Request<Body> {
        let mut req = Request::get("/ws").body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(
            "198.51.100.7:50000".parse::<SocketAddr>().unwrap(),
        ));
        req
    }

    #[test]
    fn limited_acquire_release() {
        let limit = ConnectionCap::new(2);
        assert_eq!(limit.max(), 2);
        assert!(!limit.is_unlimited());
        assert_eq!(limit.in_use(), 0);
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert_eq!(limit.in_use(), 2);
        assert!(limit.try_acquire().is_none());
        let a_clone = a.clone();
        drop(a);
        assert_eq!(limit.in_use(), 2);
        assert!(limit.try_acquire().is_none());
        drop(a_clone);
        assert_eq!(limit.in_use(), 1);
        let c = limit.clone().try_acquire().unwrap();
        assert_eq!(limit.in_use(), 2, "clones share the count");
        drop((b, c));
        assert_eq!(limit.in_use(), 0);
        assert!(format!("{limit:?}").contains("max: 2"));
    }

    #[test]
    fn unlimited_always_succeeds_and_counts() {
        let limit = ConnectionCap::new(0);
        assert!(limit.is_unlimited());
        let permits: Vec<_> = (0..10_000).map(|_| limit.try_acquire().unwrap()).collect();
        assert_eq!(limit.in_use(), 10_000);
        let extra = permits[0].clone();
        drop(permits);
        assert_eq!(limit.in_use(), 1);
        drop(extra);
        assert_eq!(limit.in_use(), 0);
    }

    #[test]
    fn huge_max_is_clamped_not_panicking() {
        let limit = ConnectionCap::new(usize::MAX);
        assert_eq!(limit.max(), Semaphore::MAX_PERMITS);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn no_race_between_threads() {
        let limit = ConnectionCap::new(50);
        let taken: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let limit = limit.clone();
                    s.spawn(move || {
                        (0..100)
                            .filter_map(|_| limit.try_acquire())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(taken.len(), 50);
        assert_eq!(limit.in_use(), 50);
    }

    #[test]
    fn acquire_or_reject_for_handlers() {
        let limit = ConnectionCap::new(1);
        let peer = Some("192.0.2.1:1".parse::<SocketAddr>().unwrap());
        let permit = limit.acquire_or_reject(peer).unwrap();
        let res = limit.acquire_or_reject(peer).unwrap_err();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::ConnectionCap))
        );
        drop(permit);
        assert!(limit.acquire_or_reject(None).is_ok());
    }

    #[tokio::test]
    async fn reject_response_shape() {
        let res = ConnectionCap::new(1).reject_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "5");
        assert_eq!(
            res.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::ConnectionCap))
        );
        let body = to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"too many connections\n");

        let res = ConnectionCap::new(1)
            .retry_after(Duration::from_millis(1500))
            .reject_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let res = ConnectionCap::new(1)
            .retry_after(Duration::ZERO)
            .reject_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }

    #[tokio::test]
    async fn layer_inserts_permit_and_rejects_when_full() {
        let limit = ConnectionCap::new(1);
        let (tx, mut rx) = mpsc::unbounded_channel::<ConnectionPermit>();
        let app = Router::new()
            .route(
                "/ws",
                get(move |Extension(permit): Extension<ConnectionPermit>| {
                    let tx = tx.clone();
                    async move {
                        // Simulate the connection task keeping its permit.
                        let _ = tx.send(permit);
                        "ok"
                    }
                }),
            )
            .layer(ConnectionLimitLayer::new(limit.clone()));

        let res = timeout(T, app.clone().oneshot(req()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(limit.in_use(), 1, "the permit outlives the request");

        let res = timeout(T, app.clone().oneshot(req()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "5");
        assert_eq!(
            res.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::ConnectionCap))
        );

        // The "connection" ends: the slot frees.
        drop(timeout(T, rx.recv()).await.unwrap().unwrap());
        assert_eq!(limit.in_use(), 0);
        let res = timeout(T, app.oneshot(req())).await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn permit_released_when_connection_task_ends_or_is_aborted() {
        let limit = ConnectionCap::new(1);
        let permit = limit.try_acquire().unwrap();
        let (release, wait) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let _ = wait.await;
        });
        assert_eq!(limit.in_use(), 1);
        drop(release);
        timeout(T, task).await.unwrap().unwrap();
        assert_eq!(limit.in_use(), 0);

        let permit = limit.try_acquire().unwrap();
        let task = tokio::spawn(async move {
            let _permit = permit;
            std::future::pending::<()>().await;
        });
        task.abort();
        assert!(timeout(T, task).await.unwrap().unwrap_err().is_cancelled());
        assert_eq!(limit.in_use(), 0);
    }

    #[tokio::test]
    async fn permit_freed_when_handler_drops_it() {
        let limit = ConnectionCap::new(1);
        let svc = ConnectionLimit::new(
            tower::service_fn(|req: Request<Body>| async move {
                assert!(req.extensions().get::<ConnectionPermit>().is_some());
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }),
            limit.clone(),
        );
        assert_eq!(svc.limit().max(), 1);
        for _ in 0..3 {
            let res = timeout(T, svc.clone().oneshot(req()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(limit.in_use(), 0);
        }
    }
}
