//! `agentwatch_ws::serve` over real sockets: stalled request heads are
//! closed within the documented deadline, a WebSocket client streams through it on the bare
//! TcpStream path, the per-IP rate limit gets its `ConnectInfo`, and graceful shutdown ends
//! the server.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, EventSink, EventType, Publisher, WsLayer};
use axum::Router;
use axum::routing::get;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Short, so the test is quick; long enough that a loaded 2-core machine meets it.
const DEADLINE: Duration = Duration::from_millis(400);

/// Serves a `WsLayer` (default configuration: the rate limit needs `ConnectInfo`) plus a
/// plain route with `agentwatch_ws::serve`.
async fn start(deadline: Duration) -> (Publisher, SocketAddr) {
    init_tracing();
    let ws = WsLayer::new();
    let (ws_router, hub) = ws.clone().build("/ws");
    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .merge(ws_router);
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
    let ws = WsLayer::new().rate_limit(None);
    let (ws_router, axum_hub) = ws.clone().build("/ws");
    let axum_addr = common::serve(Router::new().merge(ws_router)).await;
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
            .max_connections_per_ip(std::num::NonZeroUsize::new(3))
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
