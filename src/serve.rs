//! [`serve()`]: the recommended way to serve an app with the WebSocket endpoint, with
//! deadlines on request heads (slowloris) and idle connections, HTTP/2 keep-alive pings, and
//! bounds on what one peer can hold.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::admission::client_ip::mask;
use crate::host;
use crate::stream_end::{self, StreamEnd};

/// Default bound on the time a connection may take to send a complete request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted [`Serve::header_read_timeout`] (one hour); longer values are clamped.
pub const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Default [`Serve::idle_timeout`]: an HTTP connection with no request, response or stream
/// in progress for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest accepted [`Serve::idle_timeout`] (one hour); longer values are clamped.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Default [`Serve::http2_keep_alive`] interval: an HTTP/2 PING after this long without a
/// frame from the peer.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default [`Serve::http2_keep_alive`] timeout: an HTTP/2 connection whose PING is not
/// acknowledged within it is closed.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`Serve::http2_max_concurrent_streams`]: streams one HTTP/2 connection may have
/// open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default [`Serve::max_connections_per_ip`]: open HTTP connections from one client IP
/// (one IPv6 /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;

/// First backoff after an accept error, doubled on each further error.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest backoff after accept errors.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection closed for idleness has to finish its goodbye (HTTP/2 GOAWAY and
/// the PING that confirms it) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// IPv6 clients are counted by /64: one host usually has a whole /64.
const IPV6_PREFIX: u8 = 64;

/// Serves `app` on `listener`: the recommended way to run an app with the WebSocket endpoint.
/// Await the result (it runs until the process ends), or add
/// [`with_graceful_shutdown`](Serve::with_graceful_shutdown).
///
///
/// `axum::serve` gives a connection all the time it wants to send its request head: 400
/// connections that send nothing, or half a request line, stay open for good (slowloris), and
/// none of them ever reaches the connection cap or the rate limit, which only see complete
/// requests. Neither does it close an idle HTTP/2 connection, ping one, or limit connections
/// per client. `serve` runs the same HTTP/1-or-2 server (hyper-util's `auto` builder, with
/// upgrades) with these bounds:
///
/// - **Request head deadline** ([`Serve::header_read_timeout`], default
///   10 s): a connection whose first request head is not
///   complete within it is closed, whether it sent nothing, part of a request line or headers,
///   or part of an HTTP/2 preface. On HTTP/1 the same deadline bounds every later head and an
///   idle keep-alive connection waiting for its next request (hyper's `header_read_timeout`).
/// - **Idle deadline** ([`Serve::idle_timeout`], default 30 s), for
///   HTTP/1 and HTTP/2 alike: a connection with no request being answered, no response body
///   being sent and no stream open (an HTTP/2 WebSocket counts while it lives) for that long
///   is closed (HTTP/2: `GOAWAY`, then dropped after at most 1 s). An HTTP/2 connection that
///   sent one request and then nothing is closed within `idle_timeout` of its answer.
/// - **HTTP/2 keep-alive** ([`Serve::http2_keep_alive`], default a PING after 20 s without a
///   frame from the peer, closed when it is not acknowledged within 20 s): a peer that
///   vanished without a FIN stops holding its connection and its streams.
/// - **Streams per HTTP/2 connection** ([`Serve::http2_max_concurrent_streams`], default
///   100), sent as `SETTINGS_MAX_CONCURRENT_STREAMS`.
/// - **Connections per client IP** ([`Serve::max_connections_per_ip`], default
///   64; IPv6 counted by /64) and **in total**
///   ([`Serve::max_connections`], default none): a connection over either is closed as soon
///   as it is accepted, before anything is read, and logged at `debug`. The peer is the TCP
///   peer: behind a reverse proxy every client shares the proxy's address, so raise or
///   disable the per-IP bound there. So one peer holds at most `max_connections_per_ip`
///   connections, each with at most `http2_max_concurrent_streams` streams, and its
///   WebSockets count against [`WsLayer::max_connections`](crate::WsLayer::max_connections).
/// - **`Host`** (RFC 9112 §3.2, RFC 9113 §8.3.1): a request with a repeated or malformed
///   `Host`, an HTTP/1.1 request without one, or an HTTP/2 request whose `Host` names another
///   authority than its `:authority`, gets `400` with a short reason before it reaches `app`.
/// - **WebSockets over HTTP/2 end with their connection task**: when a WebSocket over an
///   HTTP/2 stream ends (closed, evicted, stopped) and its stream has not ended cleanly by the
///   end of the close handshake (at most 1 s), the stream is reset (`RST_STREAM`) and its
///   buffered data freed, even when the peer never opens its flow-control window (hyper 1.x
///   alone keeps such a stream until the connection closes). Counted in
///   [`HubStats::streams_reset`](crate::HubStats::streams_reset).
/// - **Accept errors** (out of file descriptors, `EMFILE`): logged at `error` and retried after
///   a backoff doubling from 5 ms to 1 s, never a busy loop and never an exit.
/// - **`TCP_NODELAY`** on every accepted socket: small pushed frames do not wait for Nagle's
///   algorithm.
/// - **`ConnectInfo<SocketAddr>`** in every request, so the per-IP rate limit knows the peer.
/// - **WebSockets over HTTP/2** (RFC 8441 extended CONNECT, advertised with
///   `SETTINGS_ENABLE_CONNECT_PROTOCOL`), on the same route as HTTP/1.1 upgrades, as
///   `axum::serve` does.
///
/// With plain `axum::serve` an app gets none of these bounds: only WebSockets over HTTP/2,
/// `ConnectInfo` when served with `into_make_service_with_connect_info`, and the WebSocket
/// route's own `Host` check (which refuses the same requests there). Serving with hyper-util's `auto::Builder`
/// yourself (a TLS listener, say), set `http1().header_read_timeout(..)`,
/// `http2().keep_alive_interval(..)`, `.keep_alive_timeout(..)` and
/// `.max_concurrent_streams(..)` with a `TokioTimer`; hyper has no idle deadline for HTTP/2
/// connections (close them yourself with `graceful_shutdown`), and an evicted WebSocket over
/// HTTP/2 then keeps its stream until the peer opens its window or the connection closes.
///
/// Upgraded HTTP/1.1 WebSocket connections leave hyper and are the endpoint's: the deadlines
/// stop applying once the upgrade request is in, and
/// [`Publisher::stop`](crate::Publisher::stop) closes them. A WebSocket over HTTP/2 is one
/// stream of an HTTP connection that stays hyper's: graceful shutdown waits for it, so stop
/// the publisher in the shutdown signal (as below).
///
/// ```no_run
/// use std::time::Duration;
/// use agentwatch_ws::WsLayer;
/// use axum::Router;
///
/// # async fn run() -> std::io::Result<()> {
/// let (ws, publisher) = WsLayer::new().build("/ws");
/// let app = Router::new().merge(ws);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// agentwatch_ws::serve(listener, app)
///     .header_read_timeout(Duration::from_secs(5))
///     .idle_timeout(Duration::from_secs(60))
///     .with_graceful_shutdown(async move {
///         let _ = tokio::signal::ctrl_c().await;
///         publisher.stop(); // 1001 to every WebSocket client, HTTP/1.1 and HTTP/2 alike
///     })
///     .await
/// # }
/// ```
pub fn serve(listener: TcpListener, app: Router) -> Serve {
    Serve {
        listener,
        app,
        limits: Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        },
        keep_alive: Some((DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT)),
        max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        max_connections: None,
        max_connections_per_ip: Some(DEFAULT_MAX_CONNECTIONS_PER_IP),
    }
}

/// The server returned by [`serve`]: configure it, then `.await` it.
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    limits: Limits,
    keep_alive: Option<(Duration, Duration)>,
    max_concurrent_streams: u32,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
}

/// The per-connection deadlines.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("header_read_timeout", &self.limits.header_read_timeout)
            .field("idle_timeout", &self.limits.idle_timeout)
            .field("http2_keep_alive", &self.keep_alive)
            .field("http2_max_concurrent_streams", &self.max_concurrent_streams)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// How long a connection may take to send a complete request head (its first one, then,
    /// on HTTP/1, each next one, idle time included) before it is closed. Default
    /// 10 s; `Duration::ZERO` is ignored; at most
    /// one hour (longer values are clamped).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        if !timeout.is_zero() {
            self.limits.header_read_timeout = timeout.min(MAX_HEADER_READ_TIMEOUT);
        }
        self
    }

    /// How long an HTTP connection (HTTP/1 or HTTP/2) may stay idle — no request being
    /// answered, no response body being sent, no stream (such as a WebSocket over HTTP/2)
    /// open — before it is closed. Default 30 s; `Duration::ZERO`
    /// is ignored; at most one hour (longer values are clamped). An HTTP/1
    /// keep-alive connection is closed by whichever of this and
    /// [`header_read_timeout`](Self::header_read_timeout) comes first.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        if !timeout.is_zero() {
            self.limits.idle_timeout = timeout.min(MAX_IDLE_TIMEOUT);
        }
        self
    }

    /// HTTP/2 keep-alive: a PING after `interval` without a frame from the peer, and the
    /// connection closed when the PING is not acknowledged within `timeout`. Default
    /// 20 s and 20 s; `None`
    /// turns pings off (the idle deadline still applies). Zero durations are raised to 1 s.
    pub fn http2_keep_alive(mut self, interval_and_timeout: Option<(Duration, Duration)>) -> Self {
        let at_least_1s = |d: Duration| d.max(Duration::from_secs(1));
        self.keep_alive = interval_and_timeout
            .map(|(interval, timeout)| (at_least_1s(interval), at_least_1s(timeout)));
        self
    }

    /// How many streams one HTTP/2 connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`); more are refused by the peer's own HTTP/2 stack
    /// or reset with `REFUSED_STREAM`. Default 100; `0`
    /// is raised to 1.
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max.max(1);
        self
    }

    /// At most `max` open HTTP connections in total (upgraded HTTP/1.1 WebSockets no longer
    /// count: they are the hub's, capped by
    /// [`WsLayer::max_connections`](crate::WsLayer::max_connections)); a connection over it
    /// is closed as soon as it is accepted. Default `None`: no bound but the process's file
    /// descriptors.
    pub fn max_connections(mut self, max: impl Into<Option<std::num::NonZeroUsize>>) -> Self {
        self.max_connections = max.into().map(std::num::NonZeroUsize::get);
        self
    }

    /// At most `max` open HTTP connections from one client IP (an IPv6 client by its /64);
    /// a connection over it is closed as soon as it is accepted. Default
    /// 64; `None`: no per-IP bound (behind a reverse
    /// proxy, which every connection comes from).
    pub fn max_connections_per_ip(
        mut self,
        max: impl Into<Option<std::num::NonZeroUsize>>,
    ) -> Self {
        self.max_connections_per_ip = max.into().map(std::num::NonZeroUsize::get);
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Stops accepting when `signal` completes, asks every open HTTP connection to finish
    /// (idle ones close at once, a request in progress completes), and resolves once they
    /// have. Upgraded WebSocket connections are not HTTP connections any more: stop them with
    /// [`Publisher::stop`](crate::Publisher::stop). WebSockets over HTTP/2 are streams of an
    /// HTTP connection, which finishes only once they end: call `Publisher::stop` in `signal`.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    fn builder(&self) -> Builder<Executor> {
        let mut builder = Builder::new(Executor);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let http2 = &mut builder.http2();
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            // RFC 8441: WebSockets over HTTP/2 (extended CONNECT), served by the same route.
            .enable_connect_protocol();
        match self.keep_alive {
            Some((interval, timeout)) => {
                http2
                    .keep_alive_interval(interval)
                    .keep_alive_timeout(timeout);
            }
            None => {
                http2.keep_alive_interval(None::<Duration>);
            }
        }
        builder
    }

    async fn run(self, signal: impl Future<Output = ()> + Send) -> io::Result<()> {
        let builder = Arc::new(self.builder());
        let Serve {
            listener,
            app,
            limits,
            max_connections,
            max_connections_per_ip,
            ..
        } = self;
        let table = Arc::new(ConnectionTable {
            max: max_connections,
            max_per_ip: max_connections_per_ip,
            open: Mutex::default(),
        });
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
                    let Some(slot) = table.admit(peer.ip()) else {
                        // Dropping the stream closes it: nothing was read, nothing is owed.
                        continue;
                    };
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                    }
                    tokio::spawn(serve_connection(
                        builder.clone(),
                        stream,
                        peer,
                        app.clone(),
                        limits,
                        shutdown_rx.clone(),
                        slot,
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

/// The open HTTP connections, in total and by client IP.
struct ConnectionTable {
    max: Option<usize>,
    max_per_ip: Option<usize>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's place in the [`ConnectionTable`], given back on drop.
struct TableSlot {
    table: Arc<ConnectionTable>,
    ip: IpAddr,
}

impl ConnectionTable {
    /// Counts a new connection from `peer`, or `None` (logged) when a bound is reached.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<TableSlot> {
        let ip = match peer {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => mask(peer, IPV6_PREFIX),
            IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped()?),
            IpAddr::V4(_) => peer,
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if self.max.is_some_and(|max| open.total >= max) {
            tracing::debug!(%peer, max = self.max, "connection refused: max_connections reached");
            return None;
        }
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip.is_some_and(|max| from_ip >= max) {
            tracing::debug!(
                %peer,
                max = self.max_per_ip,
                "connection refused: max_connections_per_ip reached"
            );
            return None;
        }
        open.total += 1;
        *open.by_ip.entry(ip).or_insert(0) += 1;
        Some(TableSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for TableSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// hyper's executor for [`serve`]: tokio, with the send task of every HTTP/2 CONNECT stream
/// linked to the stream's [`StreamEnd`] (see [`stream_end`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Executor;

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        stream_end::spawn(future);
    }
}

/// What keeps one HTTP connection busy: requests being answered, response bodies being sent,
/// HTTP/2 CONNECT streams open. The connection is idle when none is.
#[derive(Default)]
struct Activity {
    busy: AtomicUsize,
    /// Woken when `busy` drops to zero.
    idle: Notify,
}

/// One thing keeping an HTTP connection busy; the connection may be idle again once every
/// `Active` is dropped.
pub(crate) struct Active(Arc<Activity>);

impl Activity {
    fn enter(self: &Arc<Self>) -> Active {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Active(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_one();
        }
    }
}

pin_project! {
    /// A response body that keeps its connection busy until it is sent (or dropped).
    struct Tracked {
        #[pin]
        body: Body,
        active: Option<Active>,
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            this.active.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Answers one request: the `Host` check, then `app`, with the connection's bookkeeping
/// (connect info, activity, the end of an HTTP/2 CONNECT stream).
async fn answer(
    app: Router,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    activity: Arc<Activity>,
) -> Result<Response, Infallible> {
    let active = activity.enter();
    if let Err(error) = host::check(request.version(), request.uri(), request.headers(), false) {
        tracing::debug!(%peer, error = error.as_str(), "bad request: answering 400");
        return Ok((StatusCode::BAD_REQUEST, error.body()).into_response());
    }
    request.extensions_mut().insert(ConnectInfo(peer));
    let stream_end = (request.version() >= http::Version::HTTP_2
        && request.method() == Method::CONNECT)
        .then(|| StreamEnd::new(activity.enter()));
    if let Some(end) = &stream_end {
        request.extensions_mut().insert(end.clone());
    }
    let response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Some(end) = stream_end {
        if response.status().is_success() {
            // hyper spawns the stream's send task in this very poll, on this thread.
            end.arm();
        }
    }
    Ok(response.map(|body| {
        Body::new(Tracked {
            body,
            active: Some(active),
        })
    }))
}

/// One HTTP connection: hyper serves it; until its first request head is complete, it lives
/// only `header_read_timeout` (hyper-util's HTTP/1-or-2 detection itself waits for bytes
/// without a deadline, and hyper's own header timeout starts after it); once nothing keeps it
/// busy for `idle_timeout`, it is closed.
async fn serve_connection(
    builder: Arc<Builder<Executor>>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<()>,
    _slot: TableSlot,
) {
    let first_head_seen = Arc::new(AtomicBool::new(false));
    let activity = Arc::new(Activity::default());
    let seen = first_head_seen.clone();
    let busy = activity.clone();
    let service = tower::service_fn(move |request: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        answer(app.clone(), request, peer, busy.clone())
    });
    // `TokioIo<TcpStream>` exactly: the upgraded connection is downcast back to it.
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let first_head = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_head);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut waiting_for_first_head = true;
    let mut shutting_down = false;
    let mut closing_idle: Option<Instant> = None;
    loop {
        let was_idle = activity.is_idle();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "http connection ended with an error");
                }
                return;
            }
            () = &mut first_head, if waiting_for_first_head => {
                if !first_head_seen.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, timeout = ?limits.header_read_timeout, "no complete request head in time: closing");
                    return;
                }
                waiting_for_first_head = false;
            }
            // Became idle: the deadline starts now.
            () = activity.idle.notified() => {
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
            }
            () = &mut idle, if was_idle && closing_idle.is_none() => {
                if activity.is_idle() {
                    tracing::debug!(%peer, timeout = ?limits.idle_timeout, "http connection idle: closing");
                    closing_idle = Some(Instant::now() + IDLE_CLOSE_GRACE);
                    if !shutting_down {
                        shutting_down = true;
                        conn.as_mut().graceful_shutdown();
                    }
                } else {
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                }
            }
            () = sleep_until_some(closing_idle) => {
                tracing::debug!(%peer, "idle http connection did not finish its goodbye in time: dropping it");
                return;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
