//! [`serve()`]: the recommended way to serve an app with the WebSocket endpoint, over any
//! [`Listener`], with deadlines on request heads (slowloris) and idle connections, HTTP/2
//! keep-alive pings, and bounds on what one peer can hold.

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
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
use axum::serve::Listener;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::admission::client_ip::{NonIpPeer, mask};
use crate::host;
use crate::stream_end::{self, StreamEnd};

/// Default [`Serve::header_read_timeout`].
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Serve::idle_timeout`].
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Serve::http2_keep_alive_interval`].
const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default [`Serve::http2_keep_alive_timeout`].
const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`Serve::http2_max_concurrent_streams`].
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default [`Serve::max_connections_per_ip`].
const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Shortest request-head and idle deadline: 1 ms.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Longest request-head and idle deadline: one hour.
const MAX_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Shortest HTTP/2 keep-alive interval and timeout: 1 s.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Longest HTTP/2 keep-alive interval and timeout: one hour.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(60 * 60);

/// How long a connection closed for idleness has to finish its goodbye (HTTP/2 GOAWAY and
/// the PING that confirms it) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// IPv6 clients are counted by /64: one host usually has a whole /64.
const IPV6_PREFIX: u8 = 64;

/// Serves `app` on `listener`: the recommended way to run an app with the WebSocket endpoint.
/// Await the result (it runs until the process ends), or add
/// [`with_graceful_shutdown`](Serve::with_graceful_shutdown).
///
/// `listener` is any [`axum::serve::Listener`]: a [`tokio::net::TcpListener`], a
/// [`tokio::net::UnixListener`], or your own (a TLS listener, as below). Its `Addr` is the
/// peer's address: a [`SocketAddr`] for IP peers (TCP, and TLS over TCP), anything else (a
/// Unix-domain socket's address) for peers without an IP.
///
/// `axum::serve` gives a connection all the time it wants to send its request head: 400
/// connections that send nothing, or half a request line, stay open for good (slowloris), and
/// none of them ever reaches the connection cap or the rate limit, which only see complete
/// requests. Neither does it close an idle HTTP/2 connection, ping one, or limit connections
/// per client. `serve` runs the same HTTP/1-or-2 server (hyper-util's `auto` builder, with
/// upgrades) with these bounds:
///
/// - **Request head deadline** ([`Serve::header_read_timeout`], default 10 s): a connection
///   whose first request head is not complete within it is closed, whether it sent nothing,
///   part of a TLS handshake, part of a request line or headers, or part of an HTTP/2
///   preface. On HTTP/1 the same deadline bounds every later head and an idle keep-alive
///   connection waiting for its next request (hyper's `header_read_timeout`).
/// - **Idle deadline** ([`Serve::idle_timeout`], default 30 s), for HTTP/1 and HTTP/2 alike:
///   a connection with no request being answered, no response body being sent and no stream
///   open (an HTTP/2 WebSocket counts while it lives) for that long is closed (HTTP/2:
///   `GOAWAY`, then dropped after at most 1 s).
/// - **HTTP/2 keep-alive** ([`Serve::http2_keep_alive_interval`] and
///   [`Serve::http2_keep_alive_timeout`], default a PING after 20 s without a frame from the
///   peer, closed when it is not acknowledged within 20 s): a peer that vanished without a
///   FIN stops holding its connection and its streams.
/// - **Streams per HTTP/2 connection** ([`Serve::http2_max_concurrent_streams`], default
///   100), sent as `SETTINGS_MAX_CONCURRENT_STREAMS`.
/// - **Connections per client IP** ([`Serve::max_connections_per_ip`], default 64; IPv6
///   counted by /64) and **in total** ([`Serve::max_connections`], default none): a
///   connection over either is closed as soon as it is accepted, before anything is read,
///   and logged at `debug`. A connection counts from its accept until its socket closes,
///   through an HTTP/1.1 upgrade: a WebSocket is one of its peer's connections for as long
///   as it lives (any upgrade served by `app`, not only this crate's endpoint). The peer is
///   the TCP peer: behind a reverse proxy every client shares the proxy's address, so raise
///   or disable the per-IP bound there. Peers without an IP (Unix-domain sockets) count
///   towards the total only. So one peer holds at most `max_connections_per_ip`
///   connections, HTTP/1.1 WebSockets included, each HTTP/2 one with at most
///   `http2_max_concurrent_streams` streams; and its WebSockets also count against
///   [`WsLayer::max_connections`](crate::WsLayer::max_connections).
/// - **`Host`** (RFC 9112 §3.2, RFC 9113 §8.3.1): a request with a repeated or malformed
///   `Host`, an HTTP/1.1 request without one, or an HTTP/2 request whose `Host` names another
///   authority than its `:authority`, gets `400` with a short reason before it reaches `app`.
/// - **WebSockets over HTTP/2 end with their connection task**: when a WebSocket over an
///   HTTP/2 stream ends (closed, evicted, stopped) and its stream has not ended cleanly by the
///   end of the close handshake (at most 1 s), the stream is reset (`RST_STREAM`) and its
///   buffered data freed, even when the peer never opens its flow-control window. Counted in
///   [`HubStats::streams_reset`](crate::HubStats::streams_reset).
/// - **`TCP_NODELAY`** on every accepted connection whose IO is a [`TcpStream`]: small
///   pushed frames do not wait for Nagle's algorithm. (A TLS listener sets it on its TCP
///   stream itself, before the handshake.)
/// - **Connect info**: `ConnectInfo<L::Addr>` in every request, so `ConnectInfo<SocketAddr>`
///   for IP peers, which the per-IP rate limit of [`WsLayer`](crate::WsLayer) and the
///   `<path>/status` route key on. The rate limit does not apply to peers without an IP:
///   they are admitted, not counted as skipped, and not refused even under
///   [`MissingClientAddr::Reject`](crate::MissingClientAddr::Reject) (which is for IP
///   peers whose address is missing, as under plain `axum::serve`).
/// - **WebSockets over HTTP/2** (RFC 8441 extended CONNECT, advertised with
///   `SETTINGS_ENABLE_CONNECT_PROTOCOL`), on the same route as HTTP/1.1 upgrades.
/// - **Accept errors** are the listener's to handle ([`Listener::accept`] never fails):
///   axum's `TcpListener` and `UnixListener` retry a failed accept (out of file descriptors,
///   `EMFILE`) after 1 s, logging it at `error` when axum's `tracing` feature is on.
///
/// Other servers work too — plain `axum::serve` serves the same router — but they lose the
/// deadlines, the keep-alive pings, the per-IP connection bound, the `Host` checks and the
/// HTTP/2 stream resets; and the rate limit needs
/// `app.into_make_service_with_connect_info::<SocketAddr>()` there (without it, see
/// [`MissingClientAddr`](crate::MissingClientAddr)).
///
/// Upgraded HTTP/1.1 WebSocket connections leave hyper and are the endpoint's: the deadlines
/// stop applying once the upgrade request is in (the connection bounds do not), and
/// [`Publisher::stop`](crate::Publisher::stop) closes them. A WebSocket over HTTP/2 is one
/// stream of an HTTP connection that stays hyper's: graceful shutdown waits for it, so stop
/// the publisher in the shutdown signal (as below).
///
/// ```no_run
/// use std::time::Duration;
/// use axum::Router;
///
/// # async fn run(app: Router, publisher: agentwatch_ws::Publisher) -> std::io::Result<()> {
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
///
/// # TLS
///
/// A TLS listener is a [`Listener`] whose `accept` runs the TLS handshake; with
/// `tokio-rustls`. Each handshake runs in its own task under its own deadline, so one slow
/// or failing client never holds up the others; a finished handshake is returned at once,
/// whatever became of the ones before it; and a failed accept is retried as axum's
/// `TcpListener` does (at once for an error of that one connection, after 1 s for the
/// listener's own, such as running out of file descriptors, `EMFILE`):
///
/// ```no_run
/// use std::io;
/// use std::net::SocketAddr;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use axum::serve::Listener;
/// use tokio::net::{TcpListener, TcpStream};
/// use tokio::task::JoinSet;
/// use tokio::time::Instant;
/// use tokio_rustls::{TlsAcceptor, server::TlsStream};
///
/// struct TlsListener {
///     tcp: TcpListener,
///     acceptor: TlsAcceptor, // ALPN ["h2", "http/1.1"] in its rustls ServerConfig
///     handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
///     /// Set after a failed accept: no accept before then.
///     retry_at: Option<Instant>,
/// }
///
/// impl Listener for TlsListener {
///     type Io = TlsStream<TcpStream>;
///     type Addr = SocketAddr; // an IP peer: per-IP bounds and ConnectInfo<SocketAddr> apply
///
///     async fn accept(&mut self) -> (Self::Io, Self::Addr) {
///         loop {
///             let retry_at = self.retry_at;
///             let tcp = &self.tcp;
///             let accept = async move {
///                 if let Some(at) = retry_at {
///                     tokio::time::sleep_until(at).await;
///                 }
///                 tcp.accept().await
///             };
///             tokio::select! {
///                 accepted = accept => match accepted {
///                     Ok((tcp, peer)) => {
///                         self.retry_at = None;
///                         let _ = tcp.set_nodelay(true);
///                         let acceptor = self.acceptor.clone();
///                         self.handshakes.spawn(async move {
///                             let handshake = acceptor.accept(tcp);
///                             let tls = tokio::time::timeout(Duration::from_secs(10), handshake);
///                             tls.await.ok()?.ok().map(|tls| (tls, peer))
///                         });
///                     }
///                     // That connection is gone; the next one may be fine.
///                     Err(e) if matches!(
///                         e.kind(),
///                         io::ErrorKind::ConnectionRefused
///                             | io::ErrorKind::ConnectionAborted
///                             | io::ErrorKind::ConnectionReset
///                     ) => {}
///                     Err(error) => {
///                         tracing::error!(%error, "accept failed; retrying in 1 s");
///                         self.retry_at = Some(Instant::now() + Duration::from_secs(1));
///                     }
///                 },
///                 // `Some(..)` fails to match only when no handshake is running; then the
///                 // next accept starts one and the loop polls the set again. A failed or
///                 // timed-out handshake (`Ok(None)`) or a panicked one (`Err`) is dropped.
///                 Some(joined) = self.handshakes.join_next() => {
///                     if let Ok(Some(done)) = joined {
///                         return done;
///                     }
///                 }
///             }
///         }
///     }
///
///     fn local_addr(&self) -> io::Result<SocketAddr> {
///         self.tcp.local_addr()
///     }
/// }
///
/// # async fn run(app: axum::Router, config: tokio_rustls::rustls::ServerConfig) -> std::io::Result<()> {
/// let listener = TlsListener {
///     tcp: TcpListener::bind("0.0.0.0:443").await?,
///     acceptor: TlsAcceptor::from(Arc::new(config)),
///     handshakes: JoinSet::new(),
///     retry_at: None,
/// };
/// agentwatch_ws::serve(listener, app).await
/// # }
/// ```
///
/// A listener may instead return the TCP stream at once and let the handshake happen on
/// the connection: the request-head deadline of `serve` then bounds the TLS handshake too.
pub fn serve<L>(listener: L, app: Router) -> Serve<L>
where
    L: Listener,
    L::Addr: Clone + fmt::Debug + Send + Sync + 'static,
{
    Serve {
        listener,
        app,
        limits: Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        },
        keep_alive_interval: Some(DEFAULT_KEEP_ALIVE_INTERVAL),
        keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
        max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        max_connections: None,
        max_connections_per_ip: Some(DEFAULT_MAX_CONNECTIONS_PER_IP),
    }
}

/// The server returned by [`serve`]: configure it, then `.await` it.
///
/// Every setting follows the crate's rule for numbers: `None` switches a bound off where off
/// makes sense; a value below the smallest meaningful one is raised to it, and one above the
/// documented maximum lowered to it, each with a `warn` event; no setting panics.
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<L> {
    listener: L,
    app: Router,
    limits: Limits,
    keep_alive_interval: Option<Duration>,
    keep_alive_timeout: Duration,
    max_concurrent_streams: u32,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
}

/// The per-connection deadlines.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Option<Duration>,
}

impl<L> fmt::Debug for Serve<L>
where
    L: Listener,
    L::Addr: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("header_read_timeout", &self.limits.header_read_timeout)
            .field("idle_timeout", &self.limits.idle_timeout)
            .field("http2_keep_alive_interval", &self.keep_alive_interval)
            .field("http2_keep_alive_timeout", &self.keep_alive_timeout)
            .field("http2_max_concurrent_streams", &self.max_concurrent_streams)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .finish_non_exhaustive()
    }
}

/// `value` within `min..=max`: raised or lowered to the nearest bound, with a `warn` event.
fn bounded<T: PartialOrd + fmt::Debug>(setting: &'static str, value: T, min: T, max: T) -> T {
    if value < min {
        tracing::warn!(setting, requested = ?value, min = ?min, "setting below its minimum: raised");
        min
    } else if value > max {
        tracing::warn!(setting, requested = ?value, max = ?max, "setting above its maximum: lowered");
        max
    } else {
        value
    }
}

impl<L> Serve<L>
where
    L: Listener,
    L::Addr: Clone + fmt::Debug + Send + Sync + 'static,
{
    /// How long a connection may take to send a complete request head (its first one, then,
    /// on HTTP/1, each next one, idle time included) before it is closed. Default 10 s; from
    /// 1 ms to one hour (values outside are raised or lowered, with a warning).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout =
            bounded("header_read_timeout", timeout, MIN_TIMEOUT, MAX_TIMEOUT);
        self
    }

    /// How long an HTTP connection (HTTP/1 or HTTP/2) may stay idle — no request being
    /// answered, no response body being sent, no stream (such as a WebSocket over HTTP/2)
    /// open — before it is closed: `idle_timeout(Duration::from_secs(60))`, or
    /// `idle_timeout(None)` for no idle deadline. Default 30 s; from 1 ms to one hour (values
    /// outside are raised or lowered, with a warning). An HTTP/1 keep-alive connection is
    /// closed by whichever of this and [`header_read_timeout`](Self::header_read_timeout)
    /// comes first.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.idle_timeout = timeout
            .into()
            .map(|timeout| bounded("idle_timeout", timeout, MIN_TIMEOUT, MAX_TIMEOUT));
        self
    }

    /// How long an HTTP/2 connection may go without a frame from the peer before it is sent a
    /// PING: `Some(interval)`, or `None` for no pings (the idle deadline still applies).
    /// Default 20 s; from 1 s to one hour (values outside are raised or lowered, with a
    /// warning).
    pub fn http2_keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keep_alive_interval = interval.into().map(|interval| {
            bounded(
                "http2_keep_alive_interval",
                interval,
                MIN_KEEP_ALIVE,
                MAX_KEEP_ALIVE,
            )
        });
        self
    }

    /// How long a keep-alive PING may go unacknowledged before the HTTP/2 connection is
    /// closed. Default 20 s; from 1 s to one hour (values outside are raised or lowered, with
    /// a warning). Irrelevant when [`http2_keep_alive_interval`](Self::http2_keep_alive_interval)
    /// is `None`.
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keep_alive_timeout = bounded(
            "http2_keep_alive_timeout",
            timeout,
            MIN_KEEP_ALIVE,
            MAX_KEEP_ALIVE,
        );
        self
    }

    /// How many streams one HTTP/2 connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`); more are refused by the peer's own HTTP/2 stack
    /// or reset with `REFUSED_STREAM`. Default 100; `0` is raised to 1, with a warning.
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = bounded("http2_max_concurrent_streams", max, 1, u32::MAX);
        self
    }

    /// At most `max` open connections in total, counted from accept until the socket closes
    /// (an HTTP/1.1 connection upgraded to a WebSocket still counts; the endpoint caps its
    /// WebSockets on its own with
    /// [`WsLayer::max_connections`](crate::WsLayer::max_connections)); a connection over it
    /// is closed as soon as it is accepted. Default `None`: no bound but the process's file
    /// descriptors. `Some(0)` is raised to 1, with a warning.
    pub fn max_connections(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_connections = max
            .into()
            .map(|max| bounded("max_connections", max, 1, usize::MAX));
        self
    }

    /// At most `max` open connections from one client IP (an IPv6 client by its /64),
    /// counted from accept until the socket closes, HTTP/1.1 WebSockets included; a
    /// connection over it is closed as soon as it is accepted. Default 64; `None`: no
    /// per-IP bound (behind a reverse proxy, which every connection comes from). `Some(0)` is
    /// raised to 1, with a warning. Peers without an IP (Unix-domain sockets) are not bound by
    /// it.
    pub fn max_connections_per_ip(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_connections_per_ip = max
            .into()
            .map(|max| bounded("max_connections_per_ip", max, 1, usize::MAX));
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<L::Addr> {
        self.listener.local_addr()
    }

    /// Stops accepting when `signal` completes, asks every open HTTP connection to finish
    /// (idle ones close at once, a request in progress completes), and resolves once they
    /// have. Upgraded WebSocket connections are not HTTP connections any more: stop them with
    /// [`Publisher::stop`](crate::Publisher::stop). WebSockets over HTTP/2 are streams of an
    /// HTTP connection, which finishes only once they end: call `Publisher::stop` in
    /// `signal`.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<L, F>
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
        match self.keep_alive_interval {
            Some(interval) => {
                http2
                    .keep_alive_interval(interval)
                    .keep_alive_timeout(self.keep_alive_timeout);
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
            mut listener,
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
        loop {
            let (mut io, addr) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut signal => break,
            };
            let ip = ip_peer(&addr);
            let Some(slot) = table.admit(ip, &addr) else {
                // Dropping the IO closes it: nothing was read, nothing is owed.
                continue;
            };
            if let Some(tcp) = (&mut io as &mut dyn Any).downcast_mut::<TcpStream>() {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(peer = ?addr, %error, "cannot set TCP_NODELAY");
                }
            }
            tokio::spawn(serve_connection(
                builder.clone(),
                Counted { io, slot },
                Peer { addr, ip },
                app.clone(),
                limits,
                shutdown_rx.clone(),
            ));
        }

        drop(listener);
        drop(shutdown_rx);
        // Wakes every connection task; then wait until each has dropped its receiver.
        let _ = shutdown_tx.send(());
        shutdown_tx.closed().await;
        Ok(())
    }
}

/// The IP address of a peer whose listener address is a [`SocketAddr`]; `None` for any other
/// address type (a Unix-domain socket's).
fn ip_peer<A: Any>(addr: &A) -> Option<SocketAddr> {
    (addr as &dyn Any).downcast_ref::<SocketAddr>().copied()
}

/// Who is on the other end of one connection.
#[derive(Debug, Clone)]
struct Peer<A> {
    /// As the listener gave it: what `ConnectInfo<A>` carries.
    addr: A,
    /// The IP peer, when `addr` is a [`SocketAddr`].
    ip: Option<SocketAddr>,
}

impl<L> IntoFuture for Serve<L>
where
    L: Listener,
    L::Addr: Clone + fmt::Debug + Send + Sync + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run(std::future::pending()))
    }
}

/// A [`Serve`] that stops on a signal; see [`Serve::with_graceful_shutdown`]. `.await` it.
#[must_use = "a WithGracefulShutdown does nothing until it is awaited"]
pub struct WithGracefulShutdown<L, F> {
    serve: Serve<L>,
    signal: F,
}

impl<L, F> fmt::Debug for WithGracefulShutdown<L, F>
where
    L: Listener,
    L::Addr: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl<L, F> IntoFuture for WithGracefulShutdown<L, F>
where
    L: Listener,
    L::Addr: Clone + fmt::Debug + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.serve.run(self.signal))
    }
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
pub(crate) struct TableSlot {
    table: Arc<ConnectionTable>,
    /// The key it counts under by IP; `None` for a peer without an IP.
    ip: Option<IpAddr>,
}

impl ConnectionTable {
    /// Counts a new connection from `peer` (its IP, if it has one), or `None` (logged) when a
    /// bound is reached.
    fn admit(
        self: &Arc<Self>,
        ip: Option<SocketAddr>,
        peer: &impl fmt::Debug,
    ) -> Option<TableSlot> {
        let key = ip.map(|ip| match ip.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => mask(IpAddr::V6(v6), IPV6_PREFIX),
            },
            v4 => v4,
        });
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if self.max.is_some_and(|max| open.total >= max) {
            tracing::debug!(
                ?peer,
                max = self.max,
                "connection refused: max_connections reached"
            );
            return None;
        }
        if let Some(key) = key {
            let from_ip = open.by_ip.get(&key).copied().unwrap_or(0);
            if self.max_per_ip.is_some_and(|max| from_ip >= max) {
                tracing::debug!(
                    ?peer,
                    max = self.max_per_ip,
                    "connection refused: max_connections_per_ip reached"
                );
                return None;
            }
            *open.by_ip.entry(key).or_insert(0) += 1;
        }
        open.total += 1;
        Some(TableSlot {
            table: self.clone(),
            ip: key,
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
        if let Some(ip) = self.ip {
            if let Some(count) = open.by_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.by_ip.remove(&ip);
                }
            }
        }
    }
}

/// An accepted connection's IO with its place in the [`ConnectionTable`]: the connection
/// counts for as long as its socket is open, through an HTTP/1.1 upgrade too (the upgraded
/// IO, this very value, lives on in the WebSocket's task).
pub(crate) struct Counted<I> {
    io: I,
    slot: TableSlot,
}

impl<I> Counted<I> {
    /// The IO and the place it holds, which the caller keeps for as long as the IO lives.
    pub(crate) fn into_parts(self) -> (I, TableSlot) {
        (self.io, self.slot)
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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
async fn answer<A>(
    app: Router,
    mut request: Request<Incoming>,
    peer: Peer<A>,
    activity: Arc<Activity>,
) -> Result<Response, Infallible>
where
    A: Clone + fmt::Debug + Send + Sync + 'static,
{
    let active = activity.enter();
    if let Err(error) = host::check(request.version(), request.uri(), request.headers(), false) {
        tracing::debug!(peer = ?peer.addr, error = error.as_str(), "bad request: answering 400");
        return Ok((StatusCode::BAD_REQUEST, error.body()).into_response());
    }
    if peer.ip.is_none() {
        request.extensions_mut().insert(NonIpPeer);
    }
    request.extensions_mut().insert(ConnectInfo(peer.addr));
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
async fn serve_connection<I, A>(
    builder: Arc<Builder<Executor>>,
    io: I,
    peer: Peer<A>,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    A: Clone + fmt::Debug + Send + Sync + 'static,
{
    let first_head_seen = Arc::new(AtomicBool::new(false));
    let activity = Arc::new(Activity::default());
    let seen = first_head_seen.clone();
    let busy = activity.clone();
    let log_peer = peer.addr.clone();
    let service = tower::service_fn(move |request: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        answer(app.clone(), request, peer.clone(), busy.clone())
    });
    // `TokioIo<Counted<I>>` exactly: the upgraded connection is downcast back to
    // `TokioIo<Counted<TcpStream>>` for the direct write path when `I` is a `TcpStream`.
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let first_head = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_head);
    // Without an idle deadline the timer is never armed.
    let idle_timeout = limits.idle_timeout.unwrap_or(MAX_TIMEOUT);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut waiting_for_first_head = true;
    let mut shutting_down = false;
    let mut closing_idle: Option<Instant> = None;
    loop {
        let was_idle = activity.is_idle() && limits.idle_timeout.is_some();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = ?log_peer, %error, "http connection ended with an error");
                }
                return;
            }
            () = &mut first_head, if waiting_for_first_head => {
                if !first_head_seen.load(Ordering::Relaxed) {
                    tracing::debug!(peer = ?log_peer, timeout = ?limits.header_read_timeout, "no complete request head in time: closing");
                    return;
                }
                waiting_for_first_head = false;
            }
            // Became idle: the deadline starts now.
            () = activity.idle.notified() => {
                idle.as_mut().reset(Instant::now() + idle_timeout);
            }
            () = &mut idle, if was_idle && closing_idle.is_none() => {
                if activity.is_idle() {
                    tracing::debug!(peer = ?log_peer, timeout = ?idle_timeout, "http connection idle: closing");
                    closing_idle = Some(Instant::now() + IDLE_CLOSE_GRACE);
                    if !shutting_down {
                        shutting_down = true;
                        conn.as_mut().graceful_shutdown();
                    }
                } else {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                }
            }
            () = sleep_until_some(closing_idle) => {
                tracing::debug!(peer = ?log_peer, "idle http connection did not finish its goodbye in time: dropping it");
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
