//! An inflation bomb over a real socket: a client that negotiated permessage-deflate sends
//! 1 KiB frames that each inflate to a megabyte. Each connection closes with 1009 and the
//! process's heap never grows by anything near the inflated size: inflating stops at
//! `max_message_size` (4 KiB here). Measured with the binary's counting allocator (see
//! `h2_streams.rs`), so it holds [`crate::serial`].

use crate::common;
use crate::h2_streams::{LIVE, PEAK};

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use agentwatch_ws::WsLayer;
use axum::Router;
use common::*;
use flate2::{Compress, Compression, FlushCompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What each bomb inflates to.
const INFLATED: usize = 1000 * 1024;
/// Bombs sent at once, on as many connections.
const CLIENTS: usize = 8;

/// A raw deflate stream of `INFLATED` bytes of `a`, sync-flushed, trailer removed.
fn bomb() -> Vec<u8> {
    let mut compress = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(4096);
    compress
        .compress_vec(&vec![b'a'; INFLATED], &mut out, FlushCompress::Sync)
        .unwrap();
    out.truncate(out.len() - 4);
    out
}

/// A compressed (RSV1), masked, final text frame.
fn compressed_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = masked_frame(1, payload);
    frame[0] |= 0x40;
    frame
}

/// Completes a handshake offering permessage-deflate and reads the snapshot frame.
async fn connect_compressing(addr: SocketAddr) -> TcpStream {
    let mut stream = within("tcp connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in upgrade_headers(&[(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    )]) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(within("101", stream.read_u8()).await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(
        head.contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    // The snapshot: one small frame.
    let mut first = [0u8; 2];
    within("snapshot", stream.read_exact(&mut first))
        .await
        .unwrap();
    let mut payload = vec![0; usize::from(first[1] & 0x7f)];
    stream.read_exact(&mut payload).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inflation_bomb_closes_with_1009_and_the_heap_never_holds_it() {
    let _serial = crate::serial().await;
    let bomb = compressed_frame(&bomb());
    assert!(bomb.len() <= 1024 + 8, "a 1 KiB frame: {}", bomb.len());
    let (router, publisher) = WsLayer::new().rate_limit(None).build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect_compressing(addr).await);
    }
    eventually("clients connected", || publisher.client_count() == CLIENTS).await;

    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    for client in &mut clients {
        client.write_all(&bomb).await.unwrap();
    }
    for client in &mut clients {
        let (mut rx, _tx) = client.split();
        let mut buf = Vec::new();
        let mut close = None;
        within("close frame", async {
            loop {
                let mut chunk = [0u8; 256];
                let n = rx.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the stream ended before the close frame");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(frame) = take_frames(&mut buf).into_iter().find(|f| f.opcode == 8) {
                    close = Some(frame);
                    return;
                }
            }
        })
        .await;
        let (code, reason) = close.unwrap().close_code_and_reason();
        assert_eq!((code, reason.as_str()), (1009, "message too big"));
    }
    let grew = PEAK.load(Ordering::Relaxed) - baseline;
    // Each connection holds at most max_message_size (4 KiB) of inflated bytes plus zlib's
    // state and window; the bombs together inflate to 8 MB.
    assert!(
        grew < (INFLATED / 2) as isize,
        "the heap grew by {grew} bytes while {CLIENTS} bombs of {INFLATED} bytes were refused"
    );
    eventually("bombs counted", || {
        publisher.stats().protocol_errors == CLIENTS as u64
    })
    .await;
}
