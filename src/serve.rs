//! [`serve()`]: the recommended way to serve an app with the WebSocket endpoint, with a
//! deadline on request heads (slowloris).

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// Default bound on the time a connection may take to send a complete request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted [`Serve::header_read_timeout`] (one hour); longer values are clamped.
pub const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// First backoff after an accept error, doubled on each further error.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest backoff after accept errors.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `app` on `listener`: the recommended way to run an app with the WebSocket endpoint.
/// Await the result (it runs until the process ends), or add
/// [`with_graceful_shutdown`](Serve::with_graceful_shutdown).
///
///
/// `axum::serve` gives a connection all the time it wants to send its request head: 400
/// connections that send nothing, or half a request line, stay open for good (slowloris), and
/// none of them ever reaches the connection cap or the rate limit, which only see complete
/// requests. `serve` runs the same HTTP/1-or-2 server (hyper-util's `auto` builder, with
/// upgrades) with these bounds:
///
/// - **Request head deadline** ([`Serve::header_read_timeout`], default
///   [`DEFAULT_HEADER_READ_TIMEOUT`], 10 s): a connection whose first request head is not
///   complete within it is closed, whether it sent nothing, part of a request line or headers,
///   or part of an HTTP/2 preface. On HTTP/1 the same deadline bounds every later head and an
///   idle keep-alive connection waiting for its next request (hyper's `header_read_timeout`).
/// - **Accept errors** (out of file descriptors, `EMFILE`): logged at `error` and retried after
///   a backoff doubling from 5 ms to 1 s, never a busy loop and never an exit.
/// - **`TCP_NODELAY`** on every accepted socket: small pushed frames do not wait for Nagle's
///   algorithm.
/// - **`ConnectInfo<SocketAddr>`** in every request, so the per-IP rate limit knows the peer.
/// - **WebSockets over HTTP/2** (RFC 8441 extended CONNECT, advertised with
///   `SETTINGS_ENABLE_CONNECT_PROTOCOL`), on the same route as HTTP/1.1 upgrades, as
///   `axum::serve` does.
///
/// Upgraded HTTP/1.1 WebSocket connections leave hyper and are the [`Hub`](crate::Hub)'s: the
/// deadline stops applying once the upgrade request is in, and `Hub::stop` closes them. A
/// WebSocket over HTTP/2 is one stream of an HTTP connection that stays hyper's: graceful
/// shutdown waits for it, so stop the hub in the shutdown signal (as below).
///
/// ```no_run
/// use std::time::Duration;
/// use agentwatch_ws::{SessionStore, WsLayer};
/// use axum::Router;
///
/// # async fn run() -> std::io::Result<()> {
/// let ws = WsLayer::new(SessionStore::new());
/// let hub = ws.hub();
/// let app = Router::new().merge(ws.router("/ws"));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// agentwatch_ws::serve(listener, app)
///     .header_read_timeout(Duration::from_secs(5))
///     .with_graceful_shutdown(async move {
///         let _ = tokio::signal::ctrl_c().await;
///         hub.stop(); // 1001 to every WebSocket client, HTTP/1.1 and HTTP/2 alike
///     })
///     .await
/// # }
/// ```
pub fn serve(listener: TcpListener, app: Router) -> Serve {
    Serve {
        listener,
        app,
        header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
    }
}

/// The server returned by [`serve`]: configure it, then `.await` it.
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("header_read_timeout", &self.header_read_timeout)
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// How long a connection may take to send a complete request head (its first one, then,
    /// on HTTP/1, each next one, idle time included) before it is closed. Default
    /// [`DEFAULT_HEADER_READ_TIMEOUT`] (10 s); `Duration::ZERO` is ignored; at most
    /// [`MAX_HEADER_READ_TIMEOUT`] (longer values are clamped).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        if !timeout.is_zero() {
            self.header_read_timeout = timeout.min(MAX_HEADER_READ_TIMEOUT);
        }
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Stops accepting when `signal` completes, asks every open HTTP connection to finish
    /// (idle ones close at once, a request in progress completes), and resolves once they
    /// have. Upgraded WebSocket connections are not HTTP connections any more: stop them with
    /// [`Hub::stop`](crate::Hub::stop). WebSockets over HTTP/2 are streams of an HTTP
    /// connection, which finishes only once they end: call `Hub::stop` in `signal`.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    async fn run(self, signal: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Serve {
            listener,
            app,
            header_read_timeout,
        } = self;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        // RFC 8441: WebSockets over HTTP/2 (extended CONNECT), served by the same route.
        builder
            .http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        let builder = Arc::new(builder);
        let (shutdown_tx, shutdown_rx) = watch::channel(());

        tokio::pin!(signal);
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut signal => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                    }
                    tokio::spawn(serve_connection(
                        builder.clone(),
                        stream,
                        peer,
                        app.clone(),
                        header_read_timeout,
                        shutdown_rx.clone(),
                    ));
                }
                // The peer gave up before we accepted: nothing to do, nothing to wait for.
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                    tracing::error!(%error, retry_in = ?backoff, "accept failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut signal => break,
                    }
                }
            }
        }

        drop(listener);
        drop(shutdown_rx);
        // Wakes every connection task; then wait until each has dropped its receiver.
        let _ = shutdown_tx.send(());
        shutdown_tx.closed().await;
        Ok(())
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run(std::future::pending()))
    }
}

/// A [`Serve`] that stops on a signal; see [`Serve::with_graceful_shutdown`]. `.await` it.
#[must_use = "a WithGracefulShutdown does nothing until it is awaited"]
pub struct WithGracefulShutdown<F> {
    serve: Serve,
    signal: F,
}

impl<F> std::fmt::Debug for WithGracefulShutdown<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl<F> IntoFuture for WithGracefulShutdown<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.serve.run(self.signal))
    }
}

/// Accept errors that concern one connection only (the peer reset or gave up): retried at
/// once. Anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM) is a resource problem: back off.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// One HTTP connection: hyper serves it; until its first request head is complete, it lives
/// only `head_timeout` (hyper-util's HTTP/1-or-2 detection itself waits for bytes without a
/// deadline, and hyper's own header timeout starts after it).
async fn serve_connection(
    builder: Arc<Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    head_timeout: Duration,
    mut shutdown: watch::Receiver<()>,
) {
    let first_head_seen = Arc::new(AtomicBool::new(false));
    let seen = first_head_seen.clone();
    let service = app.map_request(move |mut request: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    // `TokioIo<TcpStream>` exactly: the upgraded connection is downcast back to it.
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let first_head = tokio::time::sleep(head_timeout);
    tokio::pin!(first_head);
    let mut waiting_for_first_head = true;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "http connection ended with an error");
                }
                return;
            }
            () = &mut first_head, if waiting_for_first_head => {
                if !first_head_seen.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, timeout = ?head_timeout, "no complete request head in time: closing");
                    return;
                }
                waiting_for_first_head = false;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
