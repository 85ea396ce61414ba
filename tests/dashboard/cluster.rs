//! Three dashboard nodes on one Redis (one `--publish --demo`, two
//! serving from the broker only), each its own process on its own port, serve identical
//! streams, byte for byte; a client that reads from node A, disconnects and reconnects to
//! node B with `?since=<seq>&since_at=<at>` gets exactly the missed events and no snapshot.
//!
//! Needs the real Redis on 127.0.0.1:6379 (or `AGENTWATCH_REDIS_URL`); the test's stream
//! key is unique and deleted at the end. With no Redis answering it skips with a notice,
//! unless `AGENTWATCH_REQUIRE_REDIS=1` (as `.ci/run` sets).

use crate::common;
use crate::dashboard_support;

use agentwatch_ws::{Event, EventType};
use common::stream_key::{StreamKey, redis_available, redis_url};
use common::{Client, Rebuilt, within};
use dashboard_support::Dashboard;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// One message as the node sent it: its text, and the event decoded from it.
struct Received {
    text: String,
    event: Event,
}

impl Received {
    /// The `at` exactly as received (the string the page keeps for `since_at`).
    fn at(&self) -> String {
        let value: serde_json::Value = serde_json::from_str(&self.text).expect("JSON");
        value["at"].as_str().expect("an `at` string").to_string()
    }
}

async fn connect(url: &str) -> Client {
    within("websocket handshake", tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .0
}

async fn next(client: &mut Client) -> Received {
    loop {
        let message = within("the next event", client.next())
            .await
            .expect("the node closed the stream")
            .expect("a read error");
        match message {
            Message::Text(text) => {
                let event = Event::from_json(text.as_bytes()).expect("a decodable event");
                return Received {
                    text: text.as_str().to_string(),
                    event,
                };
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Reads until the message at seq `last` (at least one message), checking continuity.
async fn read_through(client: &mut Client, state: &mut Rebuilt, last: u64) -> Vec<Received> {
    let mut got = Vec::new();
    loop {
        let received = next(client).await;
        state
            .apply(received.event.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let seq = received.event.seq;
        got.push(received);
        if seq >= last {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_identical_streams_and_resume_across_nodes() {
    if !redis_available() {
        return;
    }
    let key = StreamKey::new("cluster");
    let url = redis_url();
    let (a, b, mut c) = tokio::task::spawn_blocking({
        let url = url.clone();
        let stream = key.0.clone();
        move || {
            let common = ["--redis", url.as_str(), "--stream", stream.as_str()];
            let a = Dashboard::start(
                "A (publishing)",
                &[&common[..], &["--publish", "--demo", "--rate", "40"]].concat(),
            );
            let b = Dashboard::start("B", &common);
            let c = Dashboard::start("C", &common);
            (a, b, c)
        }
    })
    .await
    .expect("start three nodes");

    // (a) One client per node. Each starts from its node's snapshot; from the highest of
    // the three snapshot seqs on, every node must send the same messages, byte for byte.
    let mut clients = Vec::new();
    for node in [&a, &b, &c] {
        let mut client = connect(&node.ws_url("")).await;
        let first = next(&mut client).await;
        assert_eq!(first.event.kind, EventType::Snapshot, "node {}", node.name);
        let mut state = Rebuilt::default();
        state.apply(first.event).expect("a snapshot applies");
        clients.push((client, state));
    }
    let start = clients.iter().map(|(_, s)| s.seq).max().unwrap_or(0);
    let end = start + 40;
    let mut streams = Vec::new();
    for (client, state) in &mut clients {
        let got = read_through(client, state, end).await;
        let texts: Vec<String> = got
            .into_iter()
            .filter(|r| r.event.seq > start)
            .map(|r| r.text)
            .collect();
        streams.push(texts);
    }
    assert!(
        streams[0].len() >= 40,
        "40 events after seq {start}: {} messages",
        streams[0].len()
    );
    assert_eq!(streams[0], streams[1], "node A and node B differ");
    assert_eq!(streams[0], streams[2], "node A and node C differ");
    // Their states agree too (each rebuilt from its own snapshot plus the stream).
    for (_, state) in &clients[1..] {
        assert_eq!(state.seq, clients[0].1.seq);
        assert_eq!(state.sessions, clients[0].1.sessions);
    }

    // (b) A client reads from A up to some event, then goes away.
    let mut reader = connect(&a.ws_url("")).await;
    let mut state = Rebuilt::default();
    let first = next(&mut reader).await;
    assert_eq!(first.event.kind, EventType::Snapshot);
    let left_at = first.event.seq + 5;
    state.apply(first.event).expect("a snapshot applies");
    let read = read_through(&mut reader, &mut state, left_at).await;
    let last = read.last().expect("at least one event");
    let (since, since_at) = (last.event.seq, last.at());
    drop(reader);

    // Meanwhile B's watcher sees what the client misses.
    let (watcher, watched) = &mut clients[1];
    let missed: Vec<String> = read_through(watcher, watched, since + 20)
        .await
        .into_iter()
        .filter(|r| r.event.seq > since)
        .map(|r| r.text)
        .collect();
    assert!(missed.len() >= 20, "missed: {}", missed.len());

    // Reconnecting to B with its position: exactly the missed events, no snapshot first.
    let query = format!("?since={since}&since_at={}", url_encode(&since_at));
    let mut resumed = connect(&b.ws_url(&query)).await;
    let mut got = Vec::new();
    while got.len() < missed.len() {
        let received = next(&mut resumed).await;
        assert_ne!(
            received.event.kind,
            EventType::Snapshot,
            "node B answered {query} with a snapshot after {} events",
            got.len()
        );
        state
            .apply(received.event.clone())
            .unwrap_or_else(|e| panic!("resumed on B: {e}"));
        got.push(received.text);
    }
    assert_eq!(got, missed, "resumed on B: not exactly the missed events");

    // (c) Node C dies under its client, which resumes on B from the last event C sent it.
    c.kill();
    let (mut orphan, mut state) = clients.pop().expect("C's client");
    let mut last: Option<Received> = None;
    loop {
        match within("C's socket to end", orphan.next()).await {
            Some(Ok(Message::Text(text))) => {
                let event = Event::from_json(text.as_bytes()).expect("a decodable event");
                state
                    .apply(event.clone())
                    .unwrap_or_else(|e| panic!("on C: {e}"));
                last = Some(Received {
                    text: text.as_str().to_string(),
                    event,
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
    let last = last.expect("C sent events after (a)");
    let query = format!(
        "?since={}&since_at={}",
        last.event.seq,
        url_encode(&last.at())
    );
    let mut resumed = connect(&b.ws_url(&query)).await;
    for _ in 0..10 {
        let received = next(&mut resumed).await;
        assert_ne!(
            received.event.kind,
            EventType::Snapshot,
            "C's client got a snapshot on B"
        );
        state
            .apply(received.event)
            .unwrap_or_else(|e| panic!("C's client resumed on B: {e}"));
    }
}

/// A node started while its broker does not answer says what it waits for, and serves from
/// the broker once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_for_an_unreachable_broker_and_serves_once_it_answers() {
    if !redis_available() {
        return;
    }
    let key = StreamKey::new("cluster");
    // The node's broker address: nothing listens there yet; later a forwarder to Redis.
    let port = dashboard_support::free_port();
    let late = format!("redis://127.0.0.1:{port}");
    let node = tokio::task::spawn_blocking({
        let (late, stream) = (late.clone(), key.0.clone());
        move || {
            let node = Dashboard::spawn("late", &["--redis", &late, "--stream", &stream]);
            node.wait_for(&format!(
                "waiting for the broker at {late} (stream {stream})"
            ));
            node
        }
    })
    .await
    .expect("the node says it waits");
    assert!(
        !node.output().contains("open http://"),
        "serving before the broker answered:\n{}",
        node.output()
    );

    // The broker comes up: forward the port to the real Redis.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the broker's port");
    let target = redis_addr();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let node = tokio::task::spawn_blocking(move || {
        node.wait_for("open http://");
        node
    })
    .await
    .expect("the node serves once the broker answers");

    // And it serves the stream a publishing node puts into that broker.
    let mut client = connect(&node.ws_url("")).await;
    assert_eq!(next(&mut client).await.event.kind, EventType::Snapshot);
    let url = redis_url();
    let _publisher = tokio::task::spawn_blocking({
        let stream = key.0.clone();
        move || {
            Dashboard::start(
                "publisher",
                &[
                    "--redis",
                    &url,
                    "--stream",
                    &stream,
                    "--publish",
                    "--demo",
                    "--rate",
                    "20",
                ],
            )
        }
    })
    .await
    .expect("start the publishing node");
    let mut state = Rebuilt::default();
    while state.seq < 5 {
        let received = next(&mut client).await;
        state
            .apply(received.event)
            .unwrap_or_else(|e| panic!("on the late node: {e}"));
    }
}

/// `host:port` of the test Redis.
fn redis_addr() -> String {
    let url = redis_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Three machines publish into one Redis stream (`--publish --machine`, each its own
/// simulation), a fourth node only serves: it lists every machine's sessions, each labelled
/// with its machine, and every message decodes as Go's `monitor.Event` (the crate's decoder
/// is Go's). A second publisher with a live machine name exits with status 2 and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_machines_publish_and_every_node_shows_them_labelled() {
    if !redis_available() {
        return;
    }
    let key = StreamKey::new("cluster-machines");
    let url = redis_url();
    let machines = ["alpha", "beta", "gamma"];
    let (publishers, viewer) = tokio::task::spawn_blocking({
        let url = url.clone();
        let stream = key.0.clone();
        move || {
            let common = ["--redis", url.as_str(), "--stream", stream.as_str()];
            let publishers: Vec<Dashboard> = machines
                .iter()
                .enumerate()
                .map(|(i, machine)| {
                    let seed = (i + 1).to_string();
                    Dashboard::start(
                        machine,
                        &[
                            &common[..],
                            &[
                                "--publish",
                                "--machine",
                                machine,
                                "--demo",
                                "--seed",
                                &seed,
                                "--rate",
                                "20",
                            ],
                        ]
                        .concat(),
                    )
                })
                .collect();
            let viewer = Dashboard::start("viewer", &common);
            (publishers, viewer)
        }
    })
    .await
    .expect("start the nodes");
    for (publisher, machine) in publishers.iter().zip(machines) {
        publisher.wait_for(&format!("publishing as machine {machine}"));
    }

    // The serving node's HTTP API and WebSocket show all three machines.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = viewer.request("GET", "/sessions");
        assert_eq!(status, 200, "{body}");
        let sessions: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
        let seen: std::collections::BTreeSet<&str> = sessions
            .iter()
            .filter_map(|s| s["machine"].as_str())
            .collect();
        if seen.len() == 3 {
            assert!(sessions.iter().all(|s| s["machine"].is_string()), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "machines seen: {seen:?}\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut client = connect(&viewer.ws_url("")).await;
    let first = next(&mut client).await;
    assert_eq!(first.event.kind, EventType::Snapshot);
    let labelled: std::collections::BTreeSet<String> = first
        .event
        .sessions
        .iter()
        .map(|s| s.machine.clone())
        .collect();
    assert_eq!(labelled.len(), 3, "{labelled:?}");
    for _ in 0..20 {
        let received = next(&mut client).await;
        // Decodes as Go's monitor.Event: the crate's decoder follows Go's rules, and Go
        // ignores the `machine` key (tests/wire/go_decoding.rs holds Go's own answer).
        assert!(received.text.contains("\"machine\":\"") || received.event.updates.is_empty());
    }

    // A second publisher under a live name is refused.
    let duplicate = tokio::task::spawn_blocking({
        let url = url.clone();
        let stream = key.0.clone();
        move || {
            let mut dashboard = Dashboard::spawn(
                "duplicate",
                &[
                    "--redis",
                    &url,
                    "--stream",
                    &stream,
                    "--publish",
                    "--machine",
                    "beta",
                    "--demo",
                ],
            );
            let line = dashboard.wait_for("is held by another producer");
            let status = dashboard.wait_exit();
            (line, status)
        }
    })
    .await
    .expect("the duplicate's outcome");
    assert!(duplicate.0.contains("\"beta\""), "{}", duplicate.0);
    assert_eq!(duplicate.1, Some(2));
    drop(publishers);
}
