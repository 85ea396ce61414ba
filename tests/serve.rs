//! `agentwatch_ws::serve` over real sockets (issue 12, item 6): stalled request heads are
//! closed within the documented deadline, a WebSocket client streams through it on the bare
//! TcpStream path, the per-IP rate limit gets its `ConnectInfo`, and graceful shutdown ends
//! the server.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, EventSink, EventType, Hub, SessionStore, WsLayer};
use axum::Router;
use axum::routing::get;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Short, so the test is quick; long enough that a loaded 2-core machine meets it.
const DEADLINE: Duration = Duration::from_millis(400);

/// Serves a `WsLayer` (default configuration: the rate limit needs `ConnectInfo`) plus a
/// plain route with `agentwatch_ws::serve`.
async fn start(deadline: Duration) -> (Hub, SessionStore, SocketAddr) {
    init_tracing();
    let store = SessionStore::new();
    let ws = WsLayer::new(store.clone());
    let hub = ws.hub();
    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .merge(ws.router("/ws"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .header_read_timeout(deadline)
            .into_future(),
    );
    (hub, store, addr)
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
    let (_, _, addr) = start(DEADLINE).await;
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
    let (_, _, addr) = start(DEADLINE).await;
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
    let (hub, store, addr) = start(DEADLINE).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    tokio::time::sleep(DEADLINE * 2).await;
    for seq in 1..=3 {
        let event = Event::delta(seq, vec![], vec![format!("gone-{seq}")]);
        store.handle_event(&event).unwrap();
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
