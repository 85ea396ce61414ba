//! WebSockets over HTTP/2 (RFC 8441 extended CONNECT), over real sockets: hyper's HTTP/2
//! client (h2c, prior knowledge) sends `CONNECT` with `:protocol = websocket` to the same
//! route HTTP/1.1 clients upgrade on, under both `agentwatch_ws::serve` and `axum::serve`,
//! and streams through the HTTP/2 stream. Refused attempts are answered,
//! counted and never silent.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use agentwatch_ws::{Event, EventSink, EventType, Publisher, WsLayer};
use axum::Router;
use axum::body::Body;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

fn layer() -> WsLayer {
    WsLayer::new().rate_limit(None)
}

/// Serves `ws` at `/ws` with `agentwatch_ws::serve`.
async fn start_crate_serve(ws: &WsLayer) -> (Publisher, SocketAddr) {
    init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (router, publisher) = ws.clone().build("/ws");
    let app = Router::new().merge(router);
    tokio::spawn(async move { agentwatch_ws::serve(listener, app).await.unwrap() });
    (publisher, addr)
}

/// An HTTP/2 connection (prior knowledge) that has seen the server's SETTINGS.
async fn h2_client(addr: SocketAddr) -> SendRequest<Body> {
    let io = TokioIo::new(
        within("tcp connect", TcpStream::connect(addr))
            .await
            .unwrap(),
    );
    let (send, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(io),
    )
    .await
    .unwrap();
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrive on the connection task.
    let mut conn = Box::pin(conn);
    within("SETTINGS_ENABLE_CONNECT_PROTOCOL", async {
        while !conn.is_extended_connect_protocol_enabled() {
            tokio::select! {
                result = &mut conn => panic!("h2 connection ended: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    })
    .await;
    tokio::spawn(conn);
    send
}

fn extended_connect(addr: SocketAddr, protocols: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13");
    if let Some(protocols) = protocols {
        request = request.header("sec-websocket-protocol", protocols);
    }
    request.body(Body::empty()).unwrap()
}

async fn send(sender: &mut SendRequest<Body>, request: Request<Body>) -> Response<Incoming> {
    within("h2 response", sender.send_request(request))
        .await
        .unwrap()
}

async fn body_text(response: Response<Incoming>) -> String {
    let bytes = within(
        "response body",
        axum::body::to_bytes(Body::new(response.into_body()), 4096),
    )
    .await
    .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Opens a WebSocket over an HTTP/2 stream and checks the answer: `200`, the echoed
/// subprotocol.
async fn open(
    sender: &mut SendRequest<Body>,
    addr: SocketAddr,
    protocols: Option<&str>,
    echoed: Option<&str>,
) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    let mut response = send(sender, extended_connect(addr, protocols)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        echoed
    );
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = within("h2 stream", hyper::upgrade::on(&mut response))
        .await
        .unwrap();
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

/// Two WebSockets multiplexed on one HTTP/2 connection, each getting its snapshot and every
/// event, then closing cleanly.
async fn streams_events(hub: &Publisher, addr: SocketAddr) {
    let mut sender = h2_client(addr).await;
    let mut a = open(
        &mut sender,
        addr,
        Some("agentwatch.v1"),
        Some("agentwatch.v1"),
    )
    .await;
    let mut b = open(&mut sender, addr, None, None).await;
    for client in [&mut a, &mut b] {
        assert_eq!(next_event(client).await.kind, EventType::Snapshot);
    }
    eventually("both registered", || hub.client_count() == 2).await;
    for seq in 1..=3 {
        hub.handle_event(&Event::delta(seq, vec![], vec![format!("gone-{seq}")]))
            .unwrap();
    }
    for client in [&mut a, &mut b] {
        for seq in 1..=3 {
            assert_eq!(next_event(client).await.seq, seq);
        }
    }
    for mut client in [a, b] {
        within("close", client.send(Message::Close(None)))
            .await
            .unwrap();
        let rest: Vec<_> = within("close reply", client.collect::<Vec<_>>()).await;
        assert!(
            rest.iter().all(|m| matches!(m, Ok(Message::Close(_)))),
            "unexpected after close: {rest:?}"
        );
    }
    eventually("both gone", || hub.client_count() == 0).await;
    assert_eq!(hub.stats().accepted, 2);
    assert_eq!(hub.stats().rejected.total(), 0);
}

#[tokio::test]
async fn extended_connect_streams_under_the_crates_serve() {
    let ws = layer();
    let (hub, addr) = start_crate_serve(&ws).await;
    streams_events(&hub, addr).await;
}

#[tokio::test]
async fn extended_connect_streams_under_axum_serve() {
    let ws = layer();
    let (router, hub) = ws.build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    streams_events(&hub, addr).await;
}

#[tokio::test]
async fn refused_http2_attempts_are_answered_and_counted() {
    let ws = layer();
    let (hub, addr) = start_crate_serve(&ws).await;
    let mut sender = h2_client(addr).await;

    // An extended CONNECT for another protocol, and a GET: not a WebSocket over h2. (A plain
    // CONNECT has no path, RFC 9113 §8.5, so it never reaches this route.)
    let other_protocol = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .extension(hyper::ext::Protocol::from_static("webtransport"))
        .header("sec-websocket-version", "13")
        .body(Body::empty())
        .unwrap();
    let get = Request::get(format!("http://{addr}/ws"))
        .body(Body::empty())
        .unwrap();
    for request in [other_protocol, get] {
        let response = send(&mut sender, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("upgrade").is_none());
        assert!(body_text(response).await.contains("RFC 8441"));
    }
    // A wrong version: 400 listing 13.
    let mut wrong_version = extended_connect(addr, None);
    wrong_version
        .headers_mut()
        .insert("sec-websocket-version", "8".parse().unwrap());
    let response = send(&mut sender, wrong_version).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["sec-websocket-version"], "13");
    // Only unknown subprotocols.
    let response = send(&mut sender, extended_connect(addr, Some("chat"))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    assert_eq!(hub.stats().rejected.not_upgrade, 4);
    assert_eq!(hub.stats().accepted, 0);
    // The connection is still usable for a real WebSocket afterwards.
    let mut client = open(&mut sender, addr, None, None).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
}

/// An HTTP/2 connection (h2c) that sends one request and then nothing is closed within
/// `idle_timeout` of its answer: the request-head deadline covers only its first request.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_within_the_idle_deadline() {
    const IDLE: Duration = Duration::from_millis(400);
    init_tracing();
    let ws = layer();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().merge(ws.build("/ws").0);
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .idle_timeout(IDLE)
            .into_future(),
    );
    let io = TokioIo::new(within("connect", TcpStream::connect(addr)).await.unwrap());
    let (mut sender, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(io),
    )
    .await
    .unwrap();
    let closed = tokio::spawn(conn);
    let status = Request::get(format!("http://{addr}/ws/status"))
        .body(Body::empty())
        .unwrap();
    let response = send(&mut sender, status).await;
    assert_eq!(response.status(), StatusCode::OK);
    body_text(response).await;
    let idle_since = std::time::Instant::now();
    within("the server closes the idle connection", closed)
        .await
        .unwrap()
        .unwrap();
    let after = idle_since.elapsed();
    assert!(after >= IDLE.mul_f32(0.9), "closed early: {after:?}");
    assert!(
        after <= IDLE + Duration::from_secs(3),
        "closed late: {after:?}"
    );
}

/// A WebSocket stream keeps its HTTP/2 connection busy: no idle close while it lives, and
/// the idle deadline starts once it ends.
#[tokio::test]
async fn a_websocket_stream_keeps_its_http2_connection_open_until_it_ends() {
    const IDLE: Duration = Duration::from_millis(300);
    init_tracing();
    let ws = layer();
    let (ws_router, hub) = ws.clone().build("/ws");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().merge(ws_router);
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .idle_timeout(IDLE)
            .into_future(),
    );
    let mut sender = h2_client(addr).await;
    let mut client = open(&mut sender, addr, None, None).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    // Several idle deadlines pass with the stream open (the time passing is what is
    // tested); an event still arrives.
    tokio::time::sleep(IDLE * 3).await;
    hub.handle_event(&Event::delta(1, vec![], vec!["gone".into()]))
        .unwrap();
    assert_eq!(next_event(&mut client).await.seq, 1);
    assert!(!sender.is_closed(), "closed while a stream was open");
    within("close", client.send(Message::Close(None)))
        .await
        .unwrap();
    let _ = within("close reply", client.collect::<Vec<_>>()).await;
    eventually("idle close after the stream", || sender.is_closed()).await;
}

/// An h2 client (the `h2` crate) on `addr` whose connection is driven by a task that stops
/// polling it, without closing the socket, when `pause` fires: a peer that vanished without
/// a FIN, answering nothing.
async fn pausable_h2_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::sync::oneshot::Sender<()>,
) {
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (client, connection) = within("h2 handshake", h2::client::handshake(tcp))
        .await
        .unwrap();
    let (pause, paused) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::pin!(connection);
        tokio::select! {
            _ = &mut connection => {}
            _ = paused => {
                // Keep the socket open, read nothing, answer nothing.
                let _held = connection;
                std::future::pending::<()>().await;
            }
        }
    });
    let client = within("client ready", client.ready()).await.unwrap();
    let probe = client.clone();
    eventually("SETTINGS_ENABLE_CONNECT_PROTOCOL", || {
        probe.is_extended_connect_protocol_enabled()
    })
    .await;
    (client, pause)
}

/// `SETTINGS_MAX_CONCURRENT_STREAMS` is what `http2_max_concurrent_streams` says.
#[tokio::test]
async fn streams_per_http2_connection_are_bounded() {
    init_tracing();
    let ws = layer();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().merge(ws.clone().build("/ws").0);
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            .http2_max_concurrent_streams(7)
            .into_future(),
    );
    let (client, _pause) = pausable_h2_client(addr).await;
    assert_eq!(client.current_max_send_streams(), 7);
}

/// A peer that stops answering while its WebSocket stream is open (not idle) is found out by
/// the keep-alive PING: the connection is closed, the WebSocket ends and frees its slot.
#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    init_tracing();
    let ws = layer().heartbeat(None);
    let (ws_router, hub) = ws.clone().build("/ws");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().merge(ws_router);
    tokio::spawn(
        agentwatch_ws::serve(listener, app)
            // The shortest keep-alive; no idle close and no WebSocket heartbeat in the way.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .http2_keep_alive_timeout(Duration::from_secs(1))
            .idle_timeout(None)
            .into_future(),
    );
    let (mut client, pause) = pausable_h2_client(addr).await;
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .extension(h2::ext::Protocol::from("websocket"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let (response, _send) = client.send_request(request, false).unwrap();
    let response = within("response", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    eventually("connected", || hub.client_count() == 1).await;
    pause.send(()).unwrap();
    // Interval + timeout is 2 s; `eventually` allows 10.
    eventually("the silent peer's WebSocket ended", || {
        hub.client_count() == 0
    })
    .await;
}

/// RFC 9113 §8.3.1 over HTTP/2: `Host` is allowed next to `:authority` only once and naming
/// the same authority; otherwise `400`, on the WebSocket route and (under the crate's serve)
/// before any route.
#[tokio::test]
async fn http2_host_must_agree_with_authority() {
    init_tracing();
    let ws = layer();
    let (hub, addr) = start_crate_serve(&ws).await;
    let (mut client, _pause) = pausable_h2_client(addr).await;
    let cases: [(&[&str], StatusCode); 4] = [
        (&[], StatusCode::OK),
        (&["HOST-SAME"], StatusCode::OK),
        (&["other.example"], StatusCode::BAD_REQUEST),
        (&["HOST-SAME", "HOST-SAME"], StatusCode::BAD_REQUEST),
    ];
    for (hosts, expected) in cases {
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("http://{addr}/ws"))
            .extension(h2::ext::Protocol::from("websocket"))
            .header("sec-websocket-version", "13");
        for host in hosts {
            let host = host.replace("HOST-SAME", &addr.to_string());
            request = request.header("host", host);
        }
        let request = request.body(()).unwrap();
        client = within("stream slot", client.ready()).await.unwrap();
        let (response, _send) = client.send_request(request, false).unwrap();
        let response = within("response", response).await.unwrap();
        assert_eq!(response.status(), expected, "{hosts:?}");
    }
    eventually("both accepted", || hub.stats().accepted == 2).await;
}
