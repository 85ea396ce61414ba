//! WebSockets over HTTP/2 whose peer never opens its flow-control window, under
//! `agentwatch_ws::serve`: each one evicted is reset (`RST_STREAM`) and its memory returned
//! at once, and the connection cap holds for the streams of one HTTP/2 connection. The
//! process's live heap is measured with a counting allocator, so this file holds one test and
//! its binary runs one test at a time (`crate::serial`).

use crate::common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};

use agentwatch_ws::{Event, EventSink, WsLayer};
use axum::Router;
use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use tokio::net::{TcpListener, TcpStream};

/// Counts the bytes allocated and not yet freed, process-wide, and their high-water mark
/// (the binary's one global allocator: `deflate_bomb.rs` reads it too).
struct Counting;

pub(crate) static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The highest `LIVE` since it was last reset (store `LIVE`'s value to reset it).
pub(crate) static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            PEAK.fetch_max(live + layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let grown = new_size as isize - layout.size() as isize;
            let live = LIVE.fetch_add(grown, Ordering::Relaxed);
            PEAK.fetch_max(live + grown, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CAP: usize = 20;
const ROUNDS: usize = 6;
/// Each event's payload: big enough that what a stalled stream holds shows in the heap.
const PAYLOAD: usize = 16 * 1024;

fn extended_connect(addr: SocketAddr) -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .extension(h2::ext::Protocol::from("websocket"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap()
}

/// Opens one WebSocket stream and returns its status, and its halves when it was accepted.
async fn open(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
) -> (StatusCode, h2::SendStream<Bytes>, h2::RecvStream) {
    let ready = within("stream slot", client.clone().ready()).await.unwrap();
    *client = ready;
    let (response, send) = client.send_request(extended_connect(addr), false).unwrap();
    let response = within("response", response).await.unwrap();
    let status = response.status();
    (status, send, response.into_body())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http2_websockets_are_reset_their_memory_returned_and_the_cap_holds() {
    let _serial = crate::serial().await;
    init_tracing();
    let ws = WsLayer::new()
        .rate_limit(None)
        .max_connections(CAP)
        .send_buffer(2)
        .replay_window(0);
    let (ws_router, hub) = ws.clone().build("/ws");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().merge(ws_router);
    tokio::spawn(agentwatch_ws::serve(listener, app).into_future());

    // A client that never releases capacity: each stream's window stays at 1 KiB.
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (mut client, connection) = within(
        "h2 handshake",
        h2::client::Builder::new()
            .initial_window_size(1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .handshake::<_, Bytes>(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client = within("client ready", client.ready()).await.unwrap();
    let probe = client.clone();
    eventually("SETTINGS_ENABLE_CONNECT_PROTOCOL", || {
        probe.is_extended_connect_protocol_enabled()
    })
    .await;
    let baseline = LIVE.load(Ordering::Relaxed);

    let mut seq = 0;
    for round in 0..ROUNDS {
        let mut streams = Vec::new();
        for _ in 0..CAP {
            let (status, send, recv) = open(&mut client, addr).await;
            assert_eq!(status, StatusCode::OK, "round {round}");
            streams.push((send, recv));
        }
        eventually("all connected", || hub.client_count() == CAP).await;
        // The cap holds while these streams live: one more is refused.
        let (status, _, _) = open(&mut client, addr).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "round {round}");

        // Events the stalled streams cannot take: each is evicted.
        let evicted_before = hub.stats().evicted;
        while hub.stats().evicted < evicted_before + CAP as u64 {
            seq += 1;
            hub.handle_event(&Event::delta(seq, vec![], vec!["x".repeat(PAYLOAD)]))
                .unwrap();
            within("eviction", tokio::task::yield_now()).await;
            if seq % 64 == 0 {
                within(
                    "eviction",
                    tokio::time::sleep(std::time::Duration::from_millis(10)),
                )
                .await;
            }
            assert!(seq < 100_000, "no eviction after {seq} events");
        }
        // Each stalled stream is reset, though its window never opened.
        for (i, (send, _)) in streams.iter_mut().enumerate() {
            let reason = within(
                &format!("round {round}, stream {i} reset"),
                poll_fn(|cx| send.poll_reset(cx)),
            )
            .await
            .unwrap();
            // CANCEL, or NO_ERROR when the server's END_STREAM was already queued.
            assert!(
                [h2::Reason::CANCEL, h2::Reason::NO_ERROR].contains(&reason),
                "{reason:?}"
            );
        }
        drop(streams);
        eventually("slots free", || hub.client_count() == 0).await;
    }
    let stats = hub.stats();
    assert_eq!(stats.accepted, (CAP * ROUNDS) as u64);
    assert_eq!(stats.rejected.connection_cap, ROUNDS as u64);
    // Streams hyper still held (its send task waiting for window) were reset by the crate;
    // the others had handed everything to h2, which reset them itself once released.
    eprintln!("reset by the crate: {}", stats.streams_reset);
    assert!(stats.streams_reset > 0 && stats.streams_reset <= (CAP * ROUNDS) as u64);
    // What the connection still holds for 120 evicted streams.
    let held = LIVE.load(Ordering::Relaxed) - baseline;
    eprintln!(
        "heap held after {} evicted streams: {held} bytes",
        CAP * ROUNDS
    );
    assert!(
        held < (CAP * ROUNDS * PAYLOAD / 4) as isize,
        "{held} bytes still held"
    );
}
