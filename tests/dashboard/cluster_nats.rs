//! Two dashboard nodes on one NATS JetStream (`--nats`; one `--publish --demo`, one serving
//! from the broker only), each its own process, serve identical streams, byte for byte.
//!
//! Needs NATS with JetStream on 127.0.0.1:4222 (or `AGENTWATCH_NATS_URL`); the test's stream
//! is unique and deleted at the end. With none answering it skips with a notice, unless
//! `AGENTWATCH_REQUIRE_NATS=1` (as `.ci/run` sets).

use crate::common;
use crate::dashboard_support;

use agentwatch_ws::broker::NatsBroker;
use agentwatch_ws::{Event, EventType};
use common::nats::{nats_available, nats_url};
use common::stream_key::StreamKey;
use common::{Client, Rebuilt, within};
use dashboard_support::Dashboard;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

async fn next(client: &mut Client) -> (String, Event) {
    loop {
        let message = within("the next event", client.next())
            .await
            .expect("the node closed the stream")
            .expect("a read error");
        match message {
            Message::Text(text) => {
                let event = Event::from_json(text.as_bytes()).expect("a decodable event");
                return (text.as_str().to_string(), event);
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Deletes the test's streams when dropped.
struct Streams(String);

impl Drop for Streams {
    fn drop(&mut self) {
        let (url, key) = (nats_url(), self.0.clone());
        let _ = std::thread::spawn(move || {
            let Ok(broker) = NatsBroker::open(&url, key) else {
                return;
            };
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(&url).await {
                    let jetstream = async_nats::jetstream::new(client);
                    let _ = jetstream.delete_stream(broker.stream_name()).await;
                    let _ = jetstream.delete_stream(broker.checkpoint_stream()).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_nats_serve_identical_streams() {
    if !nats_available().await {
        return;
    }
    let streams = Streams(StreamKey::unique_name("dashboard-nats"));
    let url = nats_url();
    let (a, b) = tokio::task::spawn_blocking({
        let stream = streams.0.clone();
        move || {
            let common = ["--nats", url.as_str(), "--stream", stream.as_str()];
            let a = Dashboard::start(
                "A (publishing)",
                &[&common[..], &["--publish", "--demo", "--rate", "40"]].concat(),
            );
            let b = Dashboard::start("B", &common);
            (a, b)
        }
    })
    .await
    .expect("start two nodes");
    assert!(a.output().contains("broker: nats://"), "{}", a.output());

    let mut clients = Vec::new();
    for node in [&a, &b] {
        let url = node.ws_url("");
        let (mut client, _) = within("handshake", tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let (_, first) = next(&mut client).await;
        assert_eq!(first.kind, EventType::Snapshot, "node {}", node.name);
        let mut state = Rebuilt::default();
        state.apply(first).expect("a snapshot applies");
        clients.push((client, state));
    }
    let start = clients.iter().map(|(_, s)| s.seq).max().unwrap_or(0);
    let end = start + 30;
    let mut texts = Vec::new();
    for (client, state) in &mut clients {
        let mut got = Vec::new();
        while state.seq < end {
            let (text, event) = next(client).await;
            let seq = event.seq;
            state.apply(event).unwrap_or_else(|e| panic!("{e}"));
            if seq > start {
                got.push(text);
            }
        }
        texts.push(got);
    }
    assert!(texts[0].len() >= 30, "{} messages", texts[0].len());
    assert_eq!(texts[0], texts[1], "node A and node B differ");
    assert_eq!(clients[0].1.sessions, clients[1].1.sessions);
}
