//! permessage-deflate (RFC 7692) over real sockets: the handshake's answer to each kind of
//! offer (HTTP/1.1 and RFC 8441 extended CONNECT), compressed frames that inflate to exactly
//! the bytes an uncompressed client gets, one compression per frame however many clients
//! get it, what clients send compressed (inflated, bounded, checked), a third-party client
//! (soketto's RFC 7692 extension) and Python's `websockets` when it is installed.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use agentwatch_ws::{Event, Publisher, SessionState, WsLayer};
use axum::Router;
use common::*;
use flate2::{Decompress, FlushDecompress};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// What browsers offer (Chromium, Firefox).
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

fn session(i: usize) -> SessionState {
    SessionState {
        id: format!("3f2b9c1e-7d4a-4e0b-9a51-{i:012}"),
        source: ["claude-code", "codex", "gemini-cli"][i % 3].into(),
        slug: format!("refactor-event-bus-{i}"),
        model: "claude-opus-4-1".into(),
        working_dir: "/home/dev/src/agentwatch".into(),
        branch: "feature/event-bus".into(),
        current_tool: "Bash".into(),
        message_count: 318,
        ..Default::default()
    }
}

async fn start(layer: WsLayer, sessions: usize) -> (Publisher, SocketAddr) {
    let (router, publisher) = layer.rate_limit(None).build("/ws");
    for i in 0..sessions {
        publisher
            .publish(Event::delta(0, vec![session(i)], vec![]))
            .unwrap();
    }
    let addr = serve(Router::new().merge(router)).await;
    (publisher, addr)
}

/// A server frame as read off the wire.
#[derive(Debug)]
struct WireFrame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A hand-made client: the handshake with `offer` in `Sec-WebSocket-Extensions`, then raw
/// frames. Returns the stream and the `Sec-WebSocket-Extensions` of the `101`, if any.
async fn connect_offering(addr: SocketAddr, offer: Option<&str>) -> (TcpStream, Option<String>) {
    let mut stream = within("tcp connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n");
    let mut headers = upgrade_headers(&[]);
    if let Some(offer) = offer {
        headers.push(("Sec-WebSocket-Extensions", offer));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(within("101", stream.read_u8()).await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let extensions = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    });
    (stream, extensions)
}

/// Reads one whole server frame.
async fn read_frame(stream: &mut TcpStream) -> WireFrame {
    let mut head = [0u8; 2];
    within("frame header", stream.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(head[1] & 0x80, 0, "a masked server frame");
    let len = match head[1] & 0x7f {
        126 => u64::from(stream.read_u16().await.unwrap()),
        127 => stream.read_u64().await.unwrap(),
        len => u64::from(len),
    };
    let mut payload = vec![0; len as usize];
    within("frame payload", stream.read_exact(&mut payload))
        .await
        .unwrap();
    WireFrame {
        fin: head[0] & 0x80 != 0,
        rsv1: head[0] & 0x40 != 0,
        opcode: head[0] & 0x0f,
        payload,
    }
}

/// The next data message's text, inflated (RFC 7692 §7.2.2) from an empty window when RSV1
/// is set: the server never takes over its context, so each message inflates on its own.
/// Returns the text and whether it came compressed.
async fn read_text(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    loop {
        let frame = read_frame(stream).await;
        match frame.opcode {
            9 | 10 => continue,
            1 => {
                assert!(frame.fin, "events are single frames");
                if !frame.rsv1 {
                    return (frame.payload, false);
                }
                return (inflate(&frame.payload), true);
            }
            other => panic!("expected a text frame, got opcode {other}"),
        }
    }
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(64 * payload.len() + 1024);
    loop {
        let consumed = inflater.total_in() as usize;
        inflater
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .expect("valid deflate data");
        if inflater.total_in() as usize == input.len() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// What an uncompressed client (tokio-tungstenite offers no extension) receives next.
async fn plain_text(client: &mut Client) -> Vec<u8> {
    loop {
        match within("plain message", client.next())
            .await
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => return text.as_bytes().to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Compressed frames of the snapshot and of live events inflate to the very bytes a plain
/// client gets, each with its own empty window; three compressing clients cost one
/// compression per frame.
#[tokio::test]
async fn compressed_frames_inflate_to_the_plain_bytes_and_are_compressed_once() {
    let (publisher, addr) = start(WsLayer::new(), 200).await;
    let encoded_before = publisher.stats().encodings;
    let mut plain = connect(addr).await;
    let snapshot = plain_text(&mut plain).await;
    let mut compressing = Vec::new();
    for _ in 0..3 {
        let (mut stream, extensions) = connect_offering(addr, Some(BROWSER_OFFER)).await;
        assert_eq!(
            extensions.as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        let (text, compressed) = read_text(&mut stream).await;
        assert!(compressed, "a 200-session snapshot shrinks");
        assert_eq!(text, snapshot, "the snapshot, byte for byte");
        compressing.push(stream);
    }
    eventually("4 clients", || publisher.client_count() == 4).await;
    let stats = publisher.stats();
    assert_eq!(
        stats.encodings - encoded_before,
        1,
        "one snapshot encoding for everyone"
    );
    assert_eq!(stats.compressions, 1, "and one compression for the three");

    // Live events, large and small: even a removal's ~100 bytes of JSON shrink.
    let big: Vec<SessionState> = (1000..1020).map(session).collect();
    publisher.publish(Event::delta(0, big, vec![])).unwrap();
    publisher
        .publish(Event::delta(0, vec![], vec!["x".into()]))
        .unwrap();
    for _ in 0..2 {
        let expected = plain_text(&mut plain).await;
        for stream in &mut compressing {
            let (text, compressed) = read_text(stream).await;
            assert!(compressed);
            assert_eq!(text, expected);
        }
    }
    let stats = publisher.stats();
    assert_eq!(stats.compressions, 3, "each frame compressed once");
    assert_eq!(stats.encodings - encoded_before, 3);
    // bytes_sent counts what went out: the compressed clients' share is smaller.
    assert!(stats.bytes_sent < 4 * (snapshot.len() as u64), "{stats:?}");
}

/// Offers the server cannot honour are declined without failing the handshake, and
/// `compression(false)` declines every offer: the `101` carries no extension and frames go
/// out with RSV1 clear. Offers it can honour are answered per RFC 7692 §7.
#[tokio::test]
async fn offers_are_answered_or_declined_per_rfc_7692() {
    let (_publisher, addr) = start(WsLayer::new(), 50).await;
    for (offer, answer) in [
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=10",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=15"),
        ),
        (
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            Some("permessage-deflate; server_no_context_takeover"),
        ),
        ("permessage-deflate; server_max_window_bits=10", None),
        ("permessage-deflate; unknown_parameter", None),
        ("x-webkit-deflate-frame", None),
    ] {
        let (mut stream, extensions) = connect_offering(addr, Some(offer)).await;
        assert_eq!(extensions.as_deref(), answer, "{offer}");
        let (_, compressed) = read_text(&mut stream).await;
        assert_eq!(compressed, answer.is_some(), "{offer}");
    }

    let (_publisher, addr) = start(WsLayer::new().compression(false), 50).await;
    let (mut stream, extensions) = connect_offering(addr, Some(BROWSER_OFFER)).await;
    assert_eq!(extensions, None);
    assert!(!read_text(&mut stream).await.1);
}

/// Over HTTP/2 (RFC 8441) the `200` of an extended CONNECT carries the same answer, and the
/// stream carries compressed frames.
#[tokio::test]
async fn an_extended_connect_negotiates_it_too() {
    use http::{Method, Request, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (router, publisher) = WsLayer::new().rate_limit(None).build("/ws");
    for i in 0..50 {
        publisher
            .publish(Event::delta(0, vec![session(i)], vec![]))
            .unwrap();
    }
    let app = Router::new().merge(router);
    tokio::spawn(async move { agentwatch_ws::serve(listener, app).await.unwrap() });

    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(io),
    )
    .await
    .unwrap();
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
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-extensions", BROWSER_OFFER)
        .body(axum::body::Body::empty())
        .unwrap();
    let mut response = within("h2 response", send.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["sec-websocket-extensions"],
        "permessage-deflate; server_no_context_takeover"
    );
    let upgraded = within("h2 stream", hyper::upgrade::on(&mut response))
        .await
        .unwrap();
    let mut io = TokioIo::new(upgraded);
    let mut head = [0u8; 2];
    within("first frame", io.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(head[0], 0xc1, "FIN, RSV1, text");
}

/// Sends `frames` after a compressing handshake; returns the server's close frame.
async fn close_after(addr: SocketAddr, frames: &[Vec<u8>]) -> (u16, String) {
    let (stream, extensions) = connect_offering(addr, Some(BROWSER_OFFER)).await;
    assert!(extensions.is_some());
    let (mut rx, mut tx) = stream.into_split();
    for frame in frames {
        tx.write_all(frame).await.unwrap();
    }
    let mut buf = Vec::new();
    let (_, close) = read_until_close(&mut rx, &mut buf, "close frame").await;
    close.close_code_and_reason()
}

/// A masked client frame with RSV1 set (a compressed message's first frame).
fn compressed_frame(opcode: u8, compressed: &[u8]) -> Vec<u8> {
    let mut frame = masked_frame(opcode, compressed);
    frame[0] |= 0x40;
    frame
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut compress = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    compress
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// What a client sends compressed is inflated and checked as if it came uncompressed: a
/// valid compressed message is read and ignored (the client's close then gets its answer),
/// a 1 KiB frame inflating past `max_message_size` closes with 1009, invalid deflate data
/// with 1007, inflated text that is not UTF-8 with 1007, RSV1 on a control frame with 1002.
#[tokio::test]
async fn what_clients_send_compressed_is_inflated_with_a_bound() {
    let (publisher, addr) = start(WsLayer::new(), 0).await;

    let hello = deflate(b"{\"hello\":\"server\"}");
    let close = masked_frame(8, &1000u16.to_be_bytes());
    let (code, _) = close_after(addr, &[compressed_frame(1, &hello), close.clone()]).await;
    assert_eq!(
        code, 1000,
        "a valid compressed message is read like any other"
    );
    assert_eq!(publisher.stats().protocol_errors, 0);

    let bomb = deflate(&vec![b'a'; 1000 * 1024]);
    assert!(bomb.len() <= 1024, "a 1 KiB frame: {}", bomb.len());
    let (code, reason) = close_after(addr, &[compressed_frame(1, &bomb)]).await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));

    let (code, reason) = close_after(addr, &[compressed_frame(1, &[0xff; 64])]).await;
    assert_eq!((code, reason.as_str()), (1007, "invalid compressed data"));

    let not_utf8 = deflate(&[0xff, 0xfe, 0xfd]);
    let (code, _) = close_after(addr, &[compressed_frame(1, &not_utf8)]).await;
    assert_eq!(code, 1007, "inflated text is checked as text");

    let (code, _) = close_after(addr, &[compressed_frame(9, b"ping")]).await;
    assert_eq!(code, 1002, "RSV1 on a control frame");

    eventually("every end counted", || {
        publisher.stats().protocol_errors == 4
    })
    .await;
}

/// ratchet's RFC 7692 extension (swimos' tokio WebSocket), a third-party client: it
/// negotiates, receives the snapshot and events intact, and its own compressed message is
/// inflated by the server; its close gets the server's answer.
#[tokio::test]
async fn a_ratchet_client_negotiates_and_receives_intact_events() {
    use bytes::BytesMut;
    use ratchet_rs::deflate::DeflateExtProvider;
    use ratchet_rs::{CloseCode, CloseReason, PayloadType, SubprotocolRegistry, WebSocketConfig};

    let (publisher, addr) = start(WsLayer::new(), 100).await;
    let mut plain = connect(addr).await;
    let snapshot = plain_text(&mut plain).await;

    let stream = TcpStream::connect(addr).await.unwrap();
    let upgraded = within(
        "ratchet handshake",
        ratchet_rs::subscribe_with(
            WebSocketConfig::default(),
            stream,
            ws_url(addr),
            &DeflateExtProvider::default(),
            SubprotocolRegistry::default(),
        ),
    )
    .await
    .unwrap();
    let mut ws = upgraded.websocket;
    let mut buf = BytesMut::new();
    let mut next_text = async |ws: &mut ratchet_rs::WebSocket<TcpStream, _>| loop {
        buf.clear();
        match within("ratchet message", ws.read(&mut buf)).await.unwrap() {
            ratchet_rs::Message::Text => return buf.to_vec(),
            ratchet_rs::Message::Ping(_) | ratchet_rs::Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    };
    assert_eq!(next_text(&mut ws).await, snapshot);
    eventually("2 clients", || publisher.client_count() == 2).await;
    assert_eq!(publisher.stats().compressions, 1, "ratchet negotiated it");

    for i in 0..5 {
        let sessions: Vec<SessionState> = (i * 10..i * 10 + 10).map(session).collect();
        publisher
            .publish(Event::delta(0, sessions, vec![]))
            .unwrap();
        let expected = plain_text(&mut plain).await;
        assert_eq!(next_text(&mut ws).await, expected);
    }
    // ratchet compresses what it sends: the server inflates it and reads on.
    let note = r#"{"note":"a client message, compressed, compressed, compressed, compressed"}"#;
    within("send", ws.write(note, PayloadType::Text))
        .await
        .unwrap();
    within("close", ws.close(CloseReason::new(CloseCode::Normal, None)))
        .await
        .unwrap();
    eventually("ratchet gone", || publisher.client_count() == 1).await;
    assert_eq!(publisher.stats().protocol_errors, 0);
}

/// Python's `websockets` negotiates permessage-deflate by default: its client receives the
/// snapshot and an event intact (it prints them; compared here with a plain client's bytes)
/// and reports the extension it negotiated. Skipped with a notice when python3 or
/// `websockets` is missing, unless `AGENTWATCH_REQUIRE_PYTHON_WEBSOCKETS=1`.
#[tokio::test]
async fn a_python_websockets_client_negotiates_and_receives_intact_events() {
    const REQUIRE: &str = "AGENTWATCH_REQUIRE_PYTHON_WEBSOCKETS";
    let has_websockets = std::process::Command::new("python3")
        .args(["-c", "import websockets"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_websockets {
        assert!(
            std::env::var(REQUIRE).as_deref() != Ok("1"),
            "{REQUIRE}=1 but python3 with websockets is missing"
        );
        skip_notice(
            "python3 with the websockets package",
            "`python3 -m pip install websockets`",
            REQUIRE,
        );
        return;
    }
    let (publisher, addr) = start(WsLayer::new(), 100).await;
    let mut plain = connect(addr).await;
    let snapshot = plain_text(&mut plain).await;

    // Prints the negotiated extensions, then each message as one line of hex. The
    // top-level `connect` and both header attributes: websockets 10 (Debian's) to 15.
    let script = r#"
import asyncio, sys
import websockets

async def main():
    async with websockets.connect(sys.argv[1], max_size=None) as ws:
        response = getattr(ws, "response", None)
        headers = response.headers if response is not None else ws.response_headers
        print(headers.get("Sec-WebSocket-Extensions", ""), flush=True)
        for _ in range(2):
            message = await ws.recv()
            if isinstance(message, str):
                message = message.encode()
            print(message.hex(), flush=True)

asyncio.run(main())
"#;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script, &ws_url(addr)])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    use tokio::io::AsyncBufReadExt;
    let extensions = within("python: extensions", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    assert_eq!(extensions, "permessage-deflate; server_no_context_takeover");
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let first = within("python: snapshot", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    assert_eq!(first, hex(&snapshot));
    eventually("2 clients", || publisher.client_count() == 2).await;
    let sessions: Vec<SessionState> = (500..520).map(session).collect();
    publisher
        .publish(Event::delta(0, sessions, vec![]))
        .unwrap();
    let expected = plain_text(&mut plain).await;
    let second = within("python: event", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    assert_eq!(second, hex(&expected));
    let status = within("python exits", child.wait()).await.unwrap();
    assert!(status.success());
    assert_eq!(publisher.stats().compressions, 2);
}

/// Go's bytes survive compression: each golden fixture written by Go's `json.Marshal`
/// (`tests/fixtures/go`), published as it is, reaches a compressing client byte for byte
/// once inflated, compressed or not.
#[tokio::test]
async fn go_fixtures_inflate_to_gos_bytes() {
    use agentwatch_ws::EventSink;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go");
    let mut fixtures: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    fixtures.sort();
    let mut checked = 0;
    for path in fixtures {
        let bytes = std::fs::read(&path).unwrap();
        let event = Event::from_json(&bytes).unwrap();
        if event.seq == 0 {
            // The publisher numbers such events: the bytes would differ by design.
            continue;
        }
        let (publisher, addr) = start(WsLayer::new(), 0).await;
        let (mut stream, extensions) = connect_offering(addr, Some(BROWSER_OFFER)).await;
        assert!(extensions.is_some());
        read_text(&mut stream).await; // the empty snapshot
        eventually("connected", || publisher.client_count() == 1).await;
        publisher.handle_event(&event).unwrap();
        let (text, _) = read_text(&mut stream).await;
        assert_eq!(
            String::from_utf8_lossy(&text),
            String::from_utf8_lossy(&bytes),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} fixtures checked");
}
