//! Graceful shutdown over real sockets: `Publisher::closed` resolves once every
//! connection task has ended after `Publisher::stop`, each client having been told 1001, and at
//! once when no client is connected.

use crate::common;

use std::time::Duration;

use agentwatch_ws::Publisher;
use agentwatch_ws::WsLayer;
use axum::Router;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Reads until the close frame and returns its code (tungstenite answers it while reading).
async fn close_code(mut client: Client) -> u16 {
    let frame = expect_close(&mut client)
        .await
        .expect("a close frame with a code");
    // Drain to the end so the reply goes out and the server's close handshake completes.
    let _ = within("end of stream", client.collect::<Vec<_>>()).await;
    u16::from(frame.code)
}

#[tokio::test]
async fn closed_resolves_after_every_client_got_1001_and_its_task_ended() {
    init_tracing();
    let ws = WsLayer::new();
    let (router, hub) = ws.clone().build("/ws");
    let app = Router::new().merge(router);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    // The documented recipe: stop the hub inside axum's graceful shutdown signal.
    let server = tokio::spawn({
        let hub = hub.clone();
        agentwatch_ws::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
                hub.stop();
            })
            .into_future()
    });

    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut client = connect(addr).await;
        next_event(&mut client).await; // the snapshot: the client is being served
        readers.push(client);
    }
    // One client that reads nothing: its task lives on until the close grace period ends.
    let mut silent = connect(addr).await;
    next_event(&mut silent).await;
    eventually("four clients served", || hub.client_count() == 4).await;
    assert_eq!(hub.stats().connection_tasks, 4);

    // What the connection tasks count the moment `closed()` resolves.
    let waiter = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.closed().await;
            hub.stats().connection_tasks
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "closed() resolved before stop()");

    shutdown_tx.send(()).unwrap();
    let codes: Vec<_> = readers
        .into_iter()
        .map(|c| tokio::spawn(close_code(c)))
        .collect();
    within("the server to finish", server)
        .await
        .unwrap()
        .unwrap();
    assert!(hub.is_stopped());
    let tasks_when_closed = within("closed() to resolve", waiter).await.unwrap();
    assert_eq!(tasks_when_closed, 0, "closed() resolved with a task alive");
    for code in codes {
        assert_eq!(within("a reader's close", code).await.unwrap(), 1001);
    }
    // The silent client's close frame waited in its socket buffer.
    assert_eq!(
        expect_close(&mut silent).await.map(|f| u16::from(f.code)),
        Some(1001)
    );
    let stats = hub.stats();
    assert_eq!((stats.connected, stats.connection_tasks), (0, 0));
    assert_eq!(stats.disconnected, 4);
    // Stopping again changes nothing, and closed() stays resolved.
    hub.stop();
    within_for(Duration::from_millis(500), "closed() again", hub.closed()).await;
}

#[tokio::test]
async fn closed_resolves_at_once_without_clients() {
    let ws = WsLayer::new();
    let (_router, hub): (Router, Publisher) = ws.build("/ws");
    within_for(
        Duration::from_millis(500),
        "closed() on an idle hub",
        hub.closed(),
    )
    .await;
    hub.stop();
    within_for(
        Duration::from_millis(500),
        "closed() after stop",
        hub.closed(),
    )
    .await;
}

#[tokio::test]
async fn closed_waits_for_a_client_that_leaves_by_itself() {
    let ws = WsLayer::new();
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    next_event(&mut client).await;
    let waiter = tokio::spawn({
        let hub = hub.clone();
        async move { hub.closed().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiter.is_finished(),
        "closed() resolved with a client connected"
    );
    within("client close", client.send(Message::Close(None)))
        .await
        .unwrap();
    let _ = within("end of stream", client.collect::<Vec<_>>()).await;
    within("closed() once the client left", waiter)
        .await
        .unwrap();
    assert_eq!(hub.stats().connection_tasks, 0);
}
