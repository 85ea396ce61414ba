//! `agentwatch_ws::serve` over real sockets: stalled request heads are
//! closed within the documented deadline, a WebSocket client streams through it on the bare
//! TcpStream path, the per-IP rate limit gets its `ConnectInfo`, and graceful shutdown ends
//! the server.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, EventSink, EventType, Publisher, WsLayer};
use axum::Router;
use axum::routing::get;
use axum::serve::Listener;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Short, so the test is quick; long enough that a loaded 2-core machine meets it.
const DEADLINE: Duration = Duration::from_millis(400);

/// Serves a `WsLayer` (default configuration: the rate limit needs `ConnectInfo`) plus a
/// plain route with `agentwatch_ws::serve`.
async fn start(deadline: Duration) -> (Publisher, SocketAddr) {
    init_tracing();
    let (ws, hub) = WsLayer::new().build("/ws");
    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .merge(ws);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .header_read_timeout(deadline)
            .into_future(),
    );
    (hub, addr)
}

/// Reads (and discards) until the server closes the connection; returns when that happened,
/// measured from `since`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    within("the server closes the connection", async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await
}

#[tokio::test]
async fn stalled_request_heads_are_closed_within_the_deadline() {
    let (_, addr) = start(DEADLINE).await;
    let stalls: [&[u8]; 5] = [
        b"",                                                  // nothing at all
        b"G",                                                 // one byte
        b"GET /ws HTTP/1.1\r\nHost: x\r\n",                   // headers, never ended
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket", // mid-header
        b"PRI * HTTP/2.0\r\n",                                // part of an HTTP/2 preface
    ];
    let mut conns = Vec::new();
    for stall in stalls {
        let start = Instant::now();
        let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        stream.write_all(stall).await.unwrap();
        conns.push((stall, start, stream));
    }
    for (stall, start, mut stream) in conns {
        let after = closed_after(&mut stream, start).await;
        let shown = String::from_utf8_lossy(stall);
        assert!(
            after >= DEADLINE.mul_f32(0.9),
            "{shown:?} closed early: {after:?}"
        );
        assert!(
            after <= DEADLINE + Duration::from_secs(2),
            "{shown:?} closed late: {after:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_within_the_deadline_too() {
    let (_, addr) = start(DEADLINE).await;
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    within("the response", async {
        while !buf.ends_with(b"pong") {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the response");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    // Kept alive, then idle: the next head must also come within the deadline.
    let idle_since = Instant::now();
    let after = closed_after(&mut stream, idle_since).await;
    assert!(after >= DEADLINE.mul_f32(0.9), "closed early: {after:?}");
    assert!(
        after <= DEADLINE + Duration::from_secs(2),
        "closed late: {after:?}"
    );
}

#[tokio::test]
async fn a_websocket_client_streams_through_it_on_the_tcp_path_with_connect_info() {
    let (captured, _guard) = Captured::install(tracing::Level::DEBUG);
    // A deadline shorter than the test: an upgraded connection is not subject to it.
    let (hub, addr) = start(DEADLINE).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    tokio::time::sleep(DEADLINE * 2).await;
    for seq in 1..=3 {
        let event = Event::delta(seq, vec![], vec![format!("gone-{seq}")]);
        hub.handle_event(&event).unwrap();
    }
    for seq in 1..=3 {
        assert_eq!(next_event(&mut client).await.seq, seq);
    }
    // The rate limit saw the client address: nothing rejected, nothing let through unlimited.
    assert_eq!(hub.stats().rejected.total(), 0);
    assert_eq!(hub.stats().rate_limit_skipped, 0);
    // The socket was taken from hyper as the bare TcpStream (the direct write path).
    assert!(
        captured.text().contains("transport=\"tcp\""),
        "{}",
        captured.text()
    );
    close_and_expect_reply(client).await;
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_resolves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ping", get(|| async { "pong" }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let (status, _, body) = http_get(addr, "/ping", &[]).await;
    assert_eq!((status, body.as_str()), (200, "pong"));
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut chunk = [0u8; 512];
    assert!(within("response", idle.read(&mut chunk)).await.unwrap() > 0);

    stop_tx.send(()).unwrap();
    within("the server to finish", server)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

/// Sends `request` as is on a new connection and reads the answer to the end: (status, body).
async fn raw_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    within("response", async {
        let mut chunk = [0u8; 1024];
        // Up to the end of the head and its `Content-Length` body (a 101 has none).
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or with it twice, or with a value that
/// is no `host[:port]`, gets `400` with a short reason: on the WebSocket route under both
/// servers, and on every route under `agentwatch_ws::serve`.
#[tokio::test]
async fn requests_without_a_single_valid_host_get_400() {
    let (hub, crate_addr) = start(Duration::from_secs(10)).await;
    let (ws, axum_hub) = WsLayer::new().rate_limit(None).build("/ws");
    let axum_addr = common::serve(Router::new().merge(ws)).await;
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for addr in [crate_addr, axum_addr] {
        for (hosts, reason) in [
            ("", "needs a Host"),
            ("Host: a\r\nHost: a\r\n", "sent once"),
            ("Host: a\r\nhost: b\r\n", "sent once"),
            ("Host: user@a\r\n", "host[:port]"),
            ("Host: a, b\r\n", "host[:port]"),
            ("Host: a:port\r\n", "host[:port]"),
        ] {
            let request = format!("GET /ws HTTP/1.1\r\n{hosts}{upgrade}\r\n");
            let (status, body) = raw_request(addr, &request).await;
            assert_eq!(status, 400, "{hosts:?} on {addr}: {body}");
            assert!(body.contains(reason), "{hosts:?}: {body}");
        }
        // One valid Host: upgraded.
        let request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{upgrade}\r\n");
        assert_eq!(raw_request(addr, &request).await.0, 101);
    }
    // Under the crate's serve the check precedes the app, on every route.
    let (status, body) = raw_request(
        crate_addr,
        "GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = raw_request(
        crate_addr,
        "GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    // axum::serve: the handshake answered and counted them.
    assert_eq!(axum_hub.stats().rejected.not_upgrade, 6);
    assert_eq!(hub.stats().rejected.total(), 0);
}

/// A WebSocket is a connection: HTTP/1.1 WebSockets count towards `max_connections_per_ip`
/// and `max_connections` for as long as they live, and free their place when they end.
#[tokio::test]
async fn websockets_count_towards_the_connection_bounds_while_they_live() {
    init_tracing();
    for per_ip in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ws, publisher) = WsLayer::new().rate_limit(None).build("/ws");
        let app = Router::new()
            .route("/ping", get(|| async { "pong" }))
            .merge(ws);
        let server = agentwatch_ws::serve(listener, app);
        let server = if per_ip {
            server.max_connections_per_ip(3)
        } else {
            server.max_connections_per_ip(None).max_connections(3)
        };
        tokio::spawn(server.into_future());
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut client = connect(addr).await;
            assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
            clients.push(client);
        }
        eventually("three clients", || publisher.client_count() == 3).await;

        let ping = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut fourth = within("connect", TcpStream::connect(addr)).await.unwrap();
        let _ = fourth.write_all(ping).await;
        let mut chunk = [0u8; 512];
        let n = within("closed", fourth.read(&mut chunk)).await.unwrap_or(0);
        assert_eq!(
            n, 0,
            "per_ip {per_ip}: a fourth connection was served beside three WebSockets"
        );

        // A WebSocket that ends gives its place back.
        close_and_expect_reply(clients.pop().unwrap()).await;
        within("a place frees", async {
            loop {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let _ = stream.write_all(ping).await;
                if matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {
                    return;
                }
            }
        })
        .await;
    }
}

/// One peer holds at most `max_connections_per_ip` connections: the next is closed at once,
/// and a slot frees when a connection ends.
#[tokio::test]
async fn connections_per_ip_are_bounded() {
    init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ping", get(|| async { "pong" }));
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .max_connections_per_ip(3)
            .into_future(),
    );
    let ping = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        stream.write_all(ping).await.unwrap();
        let mut chunk = [0u8; 512];
        let n = within("answer", stream.read(&mut chunk)).await.unwrap();
        assert!(chunk[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut fourth = within("connect", TcpStream::connect(addr)).await.unwrap();
    let _ = fourth.write_all(ping).await;
    let mut chunk = [0u8; 512];
    let n = within("closed", fourth.read(&mut chunk)).await.unwrap_or(0);
    assert_eq!(n, 0, "a fourth connection was served");
    drop(held.pop());
    // The slot frees once the server has seen the close.
    within("a slot frees", async {
        loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream.write_all(ping).await;
            if matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {
                return;
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Other listeners: TLS (rustls) and Unix-domain sockets
// ---------------------------------------------------------------------------------------------

mod tls {
    //! A TLS listener as an app writes one: `accept` hands the TCP stream over at once and the
    //! handshake runs on the connection, inside `serve`'s request-head deadline.

    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, ready};

    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinSet;
    use tokio::time::Instant;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio_rustls::server::TlsStream;
    use tokio_rustls::{Accept, TlsAcceptor, TlsConnector};

    pub struct TlsListener {
        tcp: TcpListener,
        acceptor: TlsAcceptor,
    }

    /// A server stream whose TLS handshake completes on first use.
    pub enum LazyTls {
        Handshaking(Pin<Box<Accept<TcpStream>>>),
        Ready(Box<TlsStream<TcpStream>>),
        Failed,
    }

    impl LazyTls {
        fn poll_stream(
            &mut self,
            cx: &mut Context<'_>,
        ) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
            loop {
                match self {
                    LazyTls::Handshaking(accept) => match ready!(accept.as_mut().poll(cx)) {
                        Ok(stream) => *self = LazyTls::Ready(Box::new(stream)),
                        Err(error) => {
                            *self = LazyTls::Failed;
                            return Poll::Ready(Err(error));
                        }
                    },
                    LazyTls::Ready(stream) => return Poll::Ready(Ok(stream)),
                    LazyTls::Failed => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }
        }
    }

    impl AsyncRead for LazyTls {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let stream = ready!(self.get_mut().poll_stream(cx))?;
            Pin::new(stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for LazyTls {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let stream = ready!(self.get_mut().poll_stream(cx))?;
            Pin::new(stream).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let stream = ready!(self.get_mut().poll_stream(cx))?;
            Pin::new(stream).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let stream = ready!(self.get_mut().poll_stream(cx))?;
            Pin::new(stream).poll_shutdown(cx)
        }
    }

    impl axum::serve::Listener for TlsListener {
        type Io = LazyTls;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (LazyTls, SocketAddr) {
            loop {
                // Test listener: connection errors on loopback are not expected; retry.
                if let Ok((tcp, peer)) = self.tcp.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let handshake = Box::pin(self.acceptor.accept(tcp));
                    return (LazyTls::Handshaking(handshake), peer);
                }
            }
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.tcp.local_addr()
        }
    }

    /// The listener of the TLS example in `serve`'s docs, as written there: handshakes in a
    /// `JoinSet` beside the accept loop, accept errors backed off.
    pub struct HandshakingListener {
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
        retry_at: Option<Instant>,
    }

    impl HandshakingListener {
        pub fn new(listener: TlsListener) -> Self {
            HandshakingListener {
                tcp: listener.tcp,
                acceptor: listener.acceptor,
                handshakes: JoinSet::new(),
                retry_at: None,
            }
        }
    }

    impl axum::serve::Listener for HandshakingListener {
        type Io = TlsStream<TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let retry_at = self.retry_at;
                let tcp = &self.tcp;
                let accept = async move {
                    if let Some(at) = retry_at {
                        tokio::time::sleep_until(at).await;
                    }
                    tcp.accept().await
                };
                tokio::select! {
                    accepted = accept => match accepted {
                        Ok((tcp, peer)) => {
                            self.retry_at = None;
                            let _ = tcp.set_nodelay(true);
                            let acceptor = self.acceptor.clone();
                            self.handshakes.spawn(async move {
                                let handshake = acceptor.accept(tcp);
                                let tls = tokio::time::timeout(Duration::from_secs(10), handshake);
                                tls.await.ok()?.ok().map(|tls| (tls, peer))
                            });
                        }
                        Err(e) if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused
                                | io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::ConnectionReset
                        ) => {}
                        Err(error) => {
                            tracing::error!(%error, "accept failed; retrying in 1 s");
                            self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                        }
                    },
                    Some(joined) = self.handshakes.join_next() => {
                        if let Ok(Some(done)) = joined {
                            return done;
                        }
                    }
                }
            }
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.tcp.local_addr()
        }
    }

    /// A client stream that holds its writes after the server's first reply until `open`
    /// fires, telling `ready` when it starts holding: a TLS client over it stops just before
    /// its `Finished`, with its handshake accepted and under way on the server.
    pub struct Gated {
        pub tcp: TcpStream,
        pub replied: bool,
        pub ready: Option<oneshot::Sender<()>>,
        pub open: oneshot::Receiver<()>,
        pub opened: bool,
    }

    impl AsyncRead for Gated {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
            this.replied |= buf.filled().len() > before;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Gated {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.replied && !this.opened {
                if let Some(ready) = this.ready.take() {
                    let _ = ready.send(());
                }
                let _ = ready!(Pin::new(&mut this.open).poll(cx));
                this.opened = true;
            }
            Pin::new(&mut this.tcp).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
        }
    }

    /// A TLS listener on 127.0.0.1 with a fresh self-signed certificate (ALPN `h2`, then
    /// `http/1.1`), and a connector that trusts exactly that certificate.
    pub async fn listener() -> (TlsListener, Connector) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let mut server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(server)),
        };
        (listener, Connector { roots })
    }

    pub struct Connector {
        roots: RootCertStore,
    }

    impl Connector {
        /// A TLS client handshake over `io` offering `alpn`.
        pub async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(
            &self,
            addr: SocketAddr,
            io: IO,
            alpn: &[u8],
        ) -> io::Result<tokio_rustls::client::TlsStream<IO>> {
            let mut config = ClientConfig::builder()
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            TlsConnector::from(Arc::new(config)).connect(name, io).await
        }

        /// A TLS connection to `addr` offering `alpn`.
        pub async fn connect(
            &self,
            addr: SocketAddr,
            alpn: &[u8],
        ) -> tokio_rustls::client::TlsStream<TcpStream> {
            let mut config = ClientConfig::builder()
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap()
        }
    }
}

/// Over a real rustls listener: a WebSocket client streams (`ConnectInfo<SocketAddr>` reaches
/// the rate limit, which counts no skip), and the request-head deadline holds whether the
/// client stalls in the TLS handshake or after it, in the middle of its request head.
#[tokio::test]
async fn over_tls_websockets_stream_and_the_request_head_deadline_holds() {
    init_tracing();
    let (listener, connector) = tls::listener().await;
    let addr = listener.local_addr().unwrap();
    let (ws, hub) = WsLayer::new().build("/ws");
    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .merge(ws);
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .header_read_timeout(DEADLINE)
            .into_future(),
    );

    let tls = within("tls handshake", connector.connect(addr, b"http/1.1")).await;
    let (mut client, response) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(format!("wss://{addr}/ws"), tls),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let event = Event::delta(1, vec![], vec![]);
    hub.handle_event(&event).unwrap();
    assert_eq!(next_event(&mut client).await.seq, 1);
    assert_eq!(
        hub.stats().rate_limit_skipped,
        0,
        "ConnectInfo reached the rate limit"
    );

    // Stalled inside the TLS handshake (TCP only, then a partial ClientHello) ...
    let start = Instant::now();
    let mut silent = within("connect", TcpStream::connect(addr)).await.unwrap();
    let mut partial = within("connect", TcpStream::connect(addr)).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    // ... and after it, half a request head.
    let mut half = within("tls handshake", connector.connect(addr, b"http/1.1")).await;
    half.write_all(b"GET /ping HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    half.flush().await.unwrap();
    for (what, after) in [
        ("silent", closed_after(&mut silent, start).await),
        (
            "partial ClientHello",
            closed_after(&mut partial, start).await,
        ),
    ] {
        assert!(
            after >= DEADLINE.mul_f32(0.9),
            "{what}: closed early, {after:?}"
        );
        assert!(
            after <= DEADLINE + Duration::from_secs(2),
            "{what}: closed late, {after:?}"
        );
    }
    let after = within("the server closes the TLS connection", async {
        let mut buf = [0u8; 256];
        loop {
            match half.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        after >= DEADLINE.mul_f32(0.9),
        "half a head: closed early, {after:?}"
    );
    assert!(
        after <= DEADLINE + Duration::from_secs(2),
        "half a head: closed late, {after:?}"
    );

    // The upgraded WebSocket is not subject to the deadline.
    let event = Event::delta(2, vec![], vec![]);
    hub.handle_event(&event).unwrap();
    assert_eq!(next_event(&mut client).await.seq, 2);
}

/// The TLS listener of `serve`'s docs: a client whose handshake fails does not hold up one
/// whose handshake completes after it; that one is served without a third connection.
#[tokio::test]
async fn over_the_documented_tls_listener_a_failed_handshake_holds_up_no_other() {
    init_tracing();
    let (listener, connector) = tls::listener().await;
    let addr = listener.local_addr().unwrap();
    let listener = tls::HandshakingListener::new(listener);
    let app = Router::new().route("/ping", get(|| async { "pong" }));
    tokio::spawn(agentwatch_ws::serve(listener, app).into_future());

    // A connects; B starts its handshake and stops just before its last flight, so the
    // server has accepted it and waits on it.
    let mut failing = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (open, open_rx) = tokio::sync::oneshot::channel();
    let gated = tls::Gated {
        tcp: within("connect", TcpStream::connect(addr)).await.unwrap(),
        replied: false,
        ready: Some(ready_tx),
        open: open_rx,
        opened: false,
    };
    let completing =
        tokio::spawn(async move { connector.handshake(addr, gated, b"http/1.1").await });
    within("B's handshake under way", ready).await.unwrap();

    // A's handshake fails (not TLS at all), and the server hangs up on it.
    failing
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    within("the server drops the failed handshake", async {
        let mut buf = [0u8; 256];
        while let Ok(1..) = failing.read(&mut buf).await {}
    })
    .await;

    // B finishes its handshake and is served, with no other connection coming.
    open.send(()).unwrap();
    let mut tls = within("B's handshake", completing).await.unwrap().unwrap();
    tls.write_all(b"GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    within("B's response", tls.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("pong"), "{response}");
}

/// HTTP/2 over TLS (ALPN `h2`): a connection that made one request and then went quiet is
/// closed (`GOAWAY`, then the connection ends) within the idle deadline.
#[tokio::test]
async fn over_tls_an_idle_http2_connection_is_closed() {
    init_tracing();
    let idle = Duration::from_millis(300);
    let (listener, connector) = tls::listener().await;
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ping", get(|| async { "pong" }));
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .idle_timeout(idle)
            .into_future(),
    );
    let tls = within("tls handshake", connector.connect(addr, b"h2")).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, connection) = within("h2 handshake", h2::client::handshake(tls))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("https://{addr}/ping"))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = within("h2 response", response).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let data = within("h2 body", body.data()).await.unwrap().unwrap();
    assert_eq!(&data[..], b"pong");
    drop(body);
    let quiet_since = Instant::now();
    within("the server closes the idle connection", connection)
        .await
        .unwrap()
        .ok();
    let after = quiet_since.elapsed();
    assert!(after >= idle.mul_f32(0.9), "closed early: {after:?}");
    assert!(
        after <= idle + Duration::from_secs(3),
        "closed late: {after:?}"
    );
}

/// Over a Unix-domain socket: WebSocket clients stream; no IP, so no per-IP bound (two
/// connections under `max_connections_per_ip(1)`) and no rate-limit warning, skip count or
/// refusal, even under `MissingClientAddr::Reject`.
#[cfg(unix)]
#[tokio::test]
async fn over_a_unix_socket_websockets_stream_without_per_ip_bounds() {
    let (captured, _guard) = Captured::install(tracing::Level::WARN);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    // Even `Reject` admits them: a Unix peer has no IP, which is not a missing address.
    let (ws, hub) = WsLayer::new()
        .on_missing_client_addr(agentwatch_ws::MissingClientAddr::Reject)
        .build("/ws");
    let app = Router::new().merge(ws);
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .max_connections_per_ip(1)
            .into_future(),
    );
    let mut clients = Vec::new();
    for _ in 0..2 {
        let stream = within("unix connect", tokio::net::UnixStream::connect(&path))
            .await
            .unwrap();
        let (mut client, response) = within(
            "websocket handshake",
            tokio_tungstenite::client_async("ws://localhost/ws", stream),
        )
        .await
        .unwrap();
        assert_eq!(response.status().as_u16(), 101);
        assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
        clients.push(client);
    }
    let event = Event::delta(1, vec![], vec![]);
    hub.handle_event(&event).unwrap();
    for client in &mut clients {
        assert_eq!(next_event(client).await.seq, 1);
    }
    let stats = hub.stats();
    assert_eq!(stats.rejected.total(), 0);
    assert_eq!(
        stats.rate_limit_skipped, 0,
        "a Unix peer is no missing address"
    );
    assert!(
        !captured.text().contains("no client address"),
        "{}",
        captured.text()
    );
}

/// The number rule: `None` switches a bound off, a value below the smallest meaningful one is
/// raised to it and one above the maximum lowered to it, each with a `warn` event naming the
/// setting; nothing panics.
#[tokio::test]
async fn settings_follow_the_number_rule() {
    let (captured, _guard) = Captured::install(tracing::Level::WARN);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Router::new().route("/ping", get(|| async { "pong" }));
    let server = agentwatch_ws::serve(listener, app)
        .idle_timeout(None)
        .http2_keep_alive_interval(Duration::ZERO)
        .http2_keep_alive_timeout(Duration::MAX)
        .http2_max_concurrent_streams(0)
        .max_connections(0)
        .max_connections_per_ip(None);
    let shown = format!("{server:?}");
    for expected in [
        "idle_timeout: None",
        "http2_keep_alive_interval: Some(1s)",
        "http2_keep_alive_timeout: 3600s",
        "http2_max_concurrent_streams: 1",
        "max_connections: Some(1)",
        "max_connections_per_ip: None",
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
    let log = captured.text();
    for setting in [
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
        "http2_max_concurrent_streams",
        "max_connections",
    ] {
        assert!(
            log.lines()
                .any(|line| line.contains("WARN")
                    && line.contains(&format!("setting=\"{setting}\""))),
            "no warning for {setting}: {log}"
        );
    }
    assert!(
        !log.contains("idle_timeout"),
        "None is no out-of-range value: {log}"
    );
    // It still serves, with no idle deadline.
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.into_future());
    let (status, _, body) = http_get(addr, "/ping", &[]).await;
    assert_eq!((status, body.as_str()), (200, "pong"));
}
