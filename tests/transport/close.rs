//! Close frames reach a client that is still sending: a socket dropped
//! with unread client data answers with a TCP reset, and the reset can reach the client
//! before it read the close frame. Raw sockets and hand-written frames, so the test sees
//! exactly what the kernel hands the client: the close frame with its code and reason, then a
//! clean end of stream, and no reset in between, while the client writes all along.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentwatch_ws::Publisher;
use agentwatch_ws::WsLayer;
use axum::Router;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

async fn start() -> (Publisher, SocketAddr) {
    let ws = WsLayer::new().rate_limit(None);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    (hub, addr)
}

/// Writes `chunk` every `every` until told to stop; returns the first write error, if any.
fn keep_sending(
    mut tx: OwnedWriteHalf,
    chunk: Vec<u8>,
    every: Duration,
) -> (
    Arc<AtomicBool>,
    JoinHandle<(OwnedWriteHalf, Option<std::io::Error>)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::SeqCst) {
                if let Err(error) = tx.write_all(&chunk).await {
                    return (tx, Some(error));
                }
                tokio::time::sleep(every).await;
            }
            (tx, None)
        }
    });
    (stop, task)
}

/// After the close frame: stop sending, answer with our close, and expect the server to end
/// the stream cleanly (end of stream, no reset).
async fn finish_cleanly(
    stop: Arc<AtomicBool>,
    sender: JoinHandle<(OwnedWriteHalf, Option<std::io::Error>)>,
    mut rx: OwnedReadHalf,
    answer: bool,
) {
    stop.store(true, Ordering::SeqCst);
    let (mut tx, error) = within("sender", sender).await.unwrap();
    assert!(
        error.is_none(),
        "a write failed before the client had read the close frame: {error:?}"
    );
    if answer {
        within(
            "close answer",
            tx.write_all(&masked_frame(8, &1000u16.to_be_bytes())),
        )
        .await
        .unwrap();
    } else {
        // No close frame the server could parse: the end of our stream says we are done.
        within("shutdown", tx.shutdown()).await.unwrap();
    }
    let mut rest = Vec::new();
    let read = within("end of stream", rx.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the server reset the connection instead of closing it: {read:?}"
    );
    assert!(
        rest.is_empty(),
        "nothing may follow the close frame: {rest:?}"
    );
}

/// The oversized frame's payload is still arriving when the server closes with 1009: what
/// follows can no longer be parsed, yet must be read, or the client sees a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1009_close_reaches_a_client_still_sending_its_oversized_message() {
    let (hub, addr) = start().await;
    let stream = raw_connect(addr, None).await;
    eventually("client registered", || hub.client_count() == 1).await;
    let (mut rx, mut tx) = stream.into_split();

    // A binary frame announcing 1 MiB (the limit is 4 KiB), then its payload, slowly.
    within(
        "oversized header",
        tx.write_all(&masked_frame_header(2, 1 << 20)),
    )
    .await
    .unwrap();
    let (stop, sender) = keep_sending(tx, vec![0x5a; 512], Duration::from_millis(2));
    eventually("server closing", || hub.client_count() == 0).await;
    // The client is busy writing and reads only later, as a browser sending a large message
    // would: the close frame must still be there for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sender.is_finished(), "the client's writes failed early");

    let mut buf = Vec::new();
    let (before, close) = read_until_close(&mut rx, &mut buf, "server frames").await;
    assert_eq!(
        before.first().map(|f| f.opcode),
        Some(1),
        "the snapshot first"
    );
    assert_eq!(
        close.close_code_and_reason(),
        (1009, "message too big".to_owned())
    );
    // The server cannot parse what follows the oversized header, so it waits for the end of
    // the stream rather than a close frame.
    finish_cleanly(stop, sender, rx, false).await;
    eventually("connection task ended", || {
        hub.stats().connection_tasks == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1001_close_reaches_a_client_that_keeps_sending() {
    let (hub, addr) = start().await;
    let stream = raw_connect(addr, None).await;
    eventually("client registered", || hub.client_count() == 1).await;
    let (mut rx, tx) = stream.into_split();

    // Small text messages, well within the inbound budget.
    let (stop, sender) = keep_sending(
        tx,
        masked_frame(1, b"client chatter"),
        Duration::from_millis(5),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    hub.stop();
    eventually("server closing", || hub.client_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sender.is_finished(), "the client's writes failed early");

    let mut buf = Vec::new();
    let (_, close) = read_until_close(&mut rx, &mut buf, "server frames").await;
    assert_eq!(
        close.close_code_and_reason(),
        (1001, "server stopping".to_owned())
    );
    // The client answers the close as RFC 6455 §5.5.1 asks: the server then closes first.
    finish_cleanly(stop, sender, rx, true).await;
    eventually("connection task ended", || {
        hub.stats().connection_tasks == 0
    })
    .await;
}

/// A frame that breaks the protocol (here: unmasked, RFC 6455 §5.1) is answered with 1002
/// and a reason, counted, and the connection ends cleanly.
#[tokio::test]
async fn a_protocol_error_is_closed_with_1002_and_counted() {
    let (hub, addr) = start().await;
    let stream = raw_connect(addr, None).await;
    eventually("client registered", || hub.client_count() == 1).await;
    let (mut rx, mut tx) = stream.into_split();
    // A text frame without a mask.
    within("unmasked frame", tx.write_all(&[0x81, 0x02, b'h', b'i']))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (_, close) = read_until_close(&mut rx, &mut buf, "server frames").await;
    assert_eq!(
        close.close_code_and_reason(),
        (1002, "protocol error".to_owned())
    );
    within("shutdown", tx.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    let read = within("end of stream", rx.read_to_end(&mut rest)).await;
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    eventually("counted", || hub.stats().protocol_errors == 1).await;
}
