//! Several nodes behind one Redis: every node serves the producer's events with the same seq
//! and `at`, clients resume across nodes, and broker faults lose nothing silently. Over the
//! real Redis on 127.0.0.1:6379 (or `AGENTWATCH_REDIS_URL`), each test on its own stream keys,
//! deleted at the end. Faults are made with a TCP proxy between the test's clients and Redis,
//! and with `XTRIM` on the test's own stream: the shared server is never paused or stopped.
//!
//! With no Redis answering, each test skips with a notice, so `cargo test` passes on a machine
//! without one; `AGENTWATCH_REQUIRE_REDIS=1` (set by `.ci/run`, which starts Redis when none
//! answers) makes that a failure.

// unwrap()/expect() here are test assertions on values the test built.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwatch_ws::broker::{BrokerSink, Follower, FollowerHandle, RedisBroker};
use agentwatch_ws::{
    Event, EventSink, EventType, Health, HealthStatus, Publisher, SessionState, Timestamp, WsLayer,
};
use axum::Router;
use common::stream_key::{StreamKey, redis_available, redis_url};
use common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A control connection to the real Redis; fails the test with a clear message when none
/// answers.
fn control() -> redis::Connection {
    let url = redis_url();
    let fail = |e: redis::RedisError| -> ! {
        panic!(
            "no Redis at {url} ({e}): these tests need a real Redis; start one with \
             `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no` \
             (CI's .ci/run does) or point AGENTWATCH_REDIS_URL at one"
        )
    };
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| fail(e));
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| fail(e));
    let _: String = redis::cmd("PING")
        .query(&mut conn)
        .unwrap_or_else(|e| fail(e));
    conn
}

/// A fresh stream key, and its keys deleted when dropped.
/// This test's stream: a [`StreamKey`] of its own, deleted when dropped.
type Keys = StreamKey;

impl StreamKey {
    fn broker(&self, url: &str) -> RedisBroker {
        RedisBroker::open(url, self.0.clone()).unwrap()
    }

    fn stream_len(&self) -> usize {
        redis::cmd("XLEN")
            .arg(&self.0)
            .query(&mut control())
            .unwrap()
    }

    /// Deletes the stream and the checkpoint, as a Redis restarted without persistence
    /// would have lost them.
    fn lose(&self) {
        let key = &self.0;
        let _: usize = redis::cmd("DEL")
            .arg(key)
            .arg(format!("{key}:checkpoint"))
            .query(&mut control())
            .unwrap();
    }

    /// Trims the stream to its last `keep` entries, exactly.
    fn trim(&self, keep: usize) {
        let _: usize = redis::cmd("XTRIM")
            .arg(&self.0)
            .arg("MAXLEN")
            .arg(keep)
            .query(&mut control())
            .unwrap();
    }
}

/// A TCP proxy in front of Redis that the test can cut (every connection closed, new ones
/// refused) and restore: a broker outage for this test's clients only.
struct Proxy {
    url: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start() -> Proxy {
        let target: String = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            url: format!("redis://{addr}"),
            up,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The producer: a local, unserved endpoint's publisher (the reference state: what a node
/// must hold) and the broker sink.
struct Producer {
    reference: Publisher,
    publisher: BrokerSink,
    events: Mutex<Vec<Event>>,
}

impl Producer {
    fn new(publisher: BrokerSink) -> Producer {
        Producer {
            reference: WsLayer::new().build::<()>("/ws").1,
            publisher,
            events: Mutex::default(),
        }
    }

    fn publish(&self, event: Event) {
        self.reference.handle_event(&event).unwrap();
        self.publisher.handle_event(&event).unwrap();
        self.events.lock().unwrap().push(event);
    }

    /// The state a node must hold: the last seq and every session.
    fn state(&self) -> (u64, Vec<SessionState>) {
        state(&self.reference)
    }

    /// Every source's latest health, as the events published reported it (reports are kept
    /// across snapshots, which carry none).
    fn health(&self) -> HashMap<String, Health> {
        let mut latest = HashMap::new();
        for event in self.events.lock().unwrap().iter() {
            if let Some(health) = &event.health {
                latest.insert(health.source.clone(), health.clone());
            }
        }
        latest
    }

    fn publish_range(&self, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            self.publish(event(seq));
        }
    }

    /// The events published with a seq in `seqs`, in order.
    fn published(&self, seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| seqs.contains(&e.seq))
            .cloned()
            .collect()
    }
}

fn session(id: &str, n: i64) -> SessionState {
    SessionState {
        id: id.into(),
        source: "codex".into(),
        message_count: n,
        ..Default::default()
    }
}

fn health(source: &str, status: HealthStatus) -> Health {
    Health {
        source: source.into(),
        status,
        updated_at: Timestamp::now(),
        ..Default::default()
    }
}

/// A varied, deterministic event for `seq`: upserts, removals and health changes.
fn event(seq: u64) -> Event {
    if seq % 10 == 0 {
        let status = if seq % 20 == 0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        return Event::health(
            seq,
            health(["codex", "claude"][(seq / 10 % 2) as usize], status),
        );
    }
    let removed = if seq % 9 == 0 {
        vec![format!("s{}", (seq + 3) % 7)]
    } else {
        vec![]
    };
    Event::delta(
        seq,
        vec![session(&format!("s{}", seq % 7), seq as i64)],
        removed,
    )
}

/// The state a publisher holds: the last seq and every session.
fn state(publisher: &Publisher) -> (u64, Vec<SessionState>) {
    (publisher.seq(), publisher.sessions())
}

/// A serving node: its publisher, an `axum::serve` on loopback and its follower.
struct Node {
    hub: Publisher,
    addr: SocketAddr,
    follower: FollowerHandle,
}

async fn start_node(keys: &Keys, url: &str) -> Node {
    let node = start_node_unready(keys, url).await;
    within("node built from the broker", node.follower.ready()).await;
    node
}

async fn start_node_unready(keys: &Keys, url: &str) -> Node {
    let ws = WsLayer::new().rate_limit(None);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let follower = Follower::new(keys.broker(url), hub.clone())
        .block(Duration::from_millis(200))
        .spawn();
    Node {
        hub,
        addr,
        follower,
    }
}

fn publisher(keys: &Keys, url: &str) -> BrokerSink {
    BrokerSink::builder(keys.broker(url))
        .checkpoint_every(8)
        .checkpoint_interval(Duration::from_millis(200))
        .spawn()
}

async fn until_seq(node: &Node, seq: u64) {
    let hub = node.hub.clone();
    eventually(&format!("node state at seq {seq}"), move || {
        hub.seq() == seq
    })
    .await;
}

async fn flushed(producer: &Producer) {
    within("producer flush", producer.publisher.flush()).await;
}

/// A dashboard's view: a snapshot replaces everything, anything else applies on top, and
/// seqs must follow each other, except that `health` events may announce the snapshot that
/// ends a gap (same seq).
#[derive(Default)]
struct View {
    seq: u64,
    sessions: HashMap<String, SessionState>,
    health: HashMap<String, Health>,
    snapshots: usize,
    /// A gap was announced by `health` at this seq: the snapshot with it must follow.
    announced: Option<u64>,
    received: Vec<Event>,
}

impl View {
    fn apply(&mut self, event: Event) {
        self.received.push(event.clone());
        match event.kind {
            EventType::Snapshot => {
                if let Some(announced) = self.announced.take() {
                    assert_eq!(event.seq, announced, "snapshot after announcing health");
                }
                self.sessions = event
                    .sessions
                    .into_iter()
                    .map(|s| (s.id.clone(), s))
                    .collect();
                self.seq = event.seq;
                self.snapshots += 1;
                return;
            }
            EventType::Health if event.seq == self.seq || self.announced == Some(event.seq) => {}
            EventType::Health if event.seq > self.seq + 1 => self.announced = Some(event.seq),
            _ => {
                assert_eq!(self.announced, None, "a gap not ended by a snapshot");
                assert_eq!(
                    event.seq,
                    self.seq + 1,
                    "after seq {} got {} (gap, duplicate or reorder)",
                    self.seq,
                    event.seq
                );
                self.seq = event.seq;
            }
        }
        if let Some(h) = event.health {
            self.health.insert(h.source.clone(), h);
        }
        for s in event.updates {
            self.sessions.insert(s.id.clone(), s);
        }
        for id in event.removed {
            self.sessions.remove(&id);
        }
    }

    fn kinds(&self) -> Vec<(u64, String)> {
        self.received
            .iter()
            .map(|e| (e.seq, e.kind.to_string()))
            .collect()
    }

    async fn read_until(&mut self, client: &mut Client, seq: u64) {
        while self.seq < seq || self.announced.is_some() {
            let event = next_event(client).await;
            self.apply(event);
        }
        assert_eq!(self.seq, seq, "read past seq {seq}");
    }

    /// Reads until the view equals `producer`'s state (seq, sessions and every source's
    /// health, which may follow a snapshot at its seq), then checks it did not read past it.
    async fn read_to(&mut self, client: &mut Client, producer: &Producer) {
        let (seq, sessions) = producer.state();
        let expected: HashMap<_, _> = sessions.into_iter().map(|s| (s.id.clone(), s)).collect();
        let health = producer.health();
        while self.seq < seq
            || self.announced.is_some()
            || self.sessions != expected
            || self.health != health
        {
            assert!(self.seq <= seq, "read past seq {seq}");
            let event = next_event(client).await;
            self.apply(event);
        }
    }
}

async fn connect_query(addr: SocketAddr, query: &str) -> Client {
    let url = format!("ws://{addr}/ws{query}");
    let (client, _) = within("handshake", tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake");
    client
}

#[tokio::test]
async fn every_node_serves_the_producers_state_and_events_byte_for_byte() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let url = redis_url();
    let producer = Producer::new(publisher(&keys, &url));
    producer.publish_range(1..=25);
    flushed(&producer).await;

    // Two nodes now, a third after more events: it starts from a later checkpoint.
    let mut nodes = vec![start_node(&keys, &url).await, start_node(&keys, &url).await];
    producer.publish_range(26..=40);
    flushed(&producer).await;
    nodes.push(start_node(&keys, &url).await);
    for node in &nodes {
        until_seq(node, 40).await;
        assert_eq!(state(&node.hub), producer.state());
        assert!(node.follower.stats().builds == 1);
    }

    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = connect(node.addr).await;
        let mut view = View::default();
        view.read_to(&mut client, &producer).await;
        clients.push((client, view));
    }
    producer.publish_range(41..=90);
    let expected = producer.published(41..=90);
    for ((client, view), node) in clients.iter_mut().zip(&nodes) {
        view.read_to(client, &producer).await;
        // The live events are the producer's own: same seq, same `at`, same content.
        let live: Vec<Event> = view
            .received
            .iter()
            .filter(|e| e.seq > 40)
            .cloned()
            .collect();
        assert_eq!(live, expected);
        until_seq(node, 90).await;
        assert_eq!(state(&node.hub), producer.state());
        assert_eq!(view.snapshots, 1);
    }
}

#[tokio::test]
async fn a_client_of_a_stopped_node_resumes_on_another_with_exactly_the_missed_events() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let url = redis_url();
    let producer = Producer::new(publisher(&keys, &url));
    producer.publish_range(1..=12);
    let a = start_node(&keys, &url).await;
    let b = start_node(&keys, &url).await;
    until_seq(&a, 12).await;

    let mut client = connect(a.addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!(
        (snapshot.kind.clone(), snapshot.seq),
        (EventType::Snapshot, 12)
    );
    let mut view = View::default();
    view.apply(snapshot);
    producer.publish_range(13..=20);
    view.read_until(&mut client, 20).await;

    // Node A goes away (its clients are told 1001, going away); events go on meanwhile.
    a.hub.stop();
    a.follower.stop();
    let close = expect_close(&mut client).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    drop(client);
    producer.publish_range(21..=35);
    until_seq(&b, 35).await;
    // The position is the last event applied: its seq and its `at`, as received (every node
    // serves the producer's events with the producer's `at`).
    let last_at = producer.published(20..=20)[0].at.to_string();
    let query = format!(
        "?since=20&since_at={}",
        last_at.replace(':', "%3A").replace('+', "%2B")
    );
    let mut client = connect_query(b.addr, &query).await;
    let mut resumed = Vec::new();
    for _ in 21..=35 {
        resumed.push(next_event(&mut client).await);
    }
    assert_eq!(
        resumed,
        producer.published(21..=35),
        "exactly the missed events, no snapshot"
    );
    for event in resumed {
        view.apply(event);
    }
    producer.publish_range(36..=40);
    view.read_to(&mut client, &producer).await;
    assert_eq!(view.snapshots, 1);
    assert_eq!(b.hub.stats().resumed, 1);
}

#[tokio::test]
async fn a_broker_outage_loses_nothing_and_costs_no_snapshot() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let proxy = Proxy::start().await;
    let producer = Producer::new(publisher(&keys, &proxy.url));
    producer.publish_range(1..=10);
    flushed(&producer).await;
    let node = start_node(&keys, &proxy.url).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_until(&mut client, 10).await;

    // Outage: every connection to the broker dies and new ones are refused while the
    // producer goes on publishing.
    proxy.cut();
    producer.publish_range(11..=30);
    let publisher = producer.publisher.clone();
    eventually("the producer retries", || publisher.stats().retries > 0).await;
    assert_eq!(node.hub.seq(), 10, "nothing can arrive during the outage");
    proxy.restore();
    flushed(&producer).await;
    producer.publish_range(31..=40);
    view.read_to(&mut client, &producer).await;
    assert_eq!(
        view.snapshots, 1,
        "caught up from its position: no snapshot"
    );
    let stats = node.follower.stats();
    assert!(stats.recoveries >= 1, "{stats:?}");
    assert_eq!((stats.gaps, stats.builds), (0, 1), "{stats:?}");
    assert_eq!(producer.publisher.stats().dropped, 0);
}

#[tokio::test]
async fn a_node_started_while_the_broker_is_down_builds_once_it_is_back() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let producer = Producer::new(publisher(&keys, &redis_url()));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    let proxy = Proxy::start().await;
    proxy.cut();
    let node = start_node_unready(&keys, &proxy.url).await;
    // A negative can only be watched for a while: a few of the follower's retries.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!node.follower.is_ready(), "ready without a broker");
    proxy.restore();
    within("node ready", node.follower.ready()).await;
    until_seq(&node, 20).await;
    assert_eq!(state(&node.hub), producer.state());
    assert_eq!(node.follower.stats().recoveries, 1);
}

#[tokio::test]
async fn a_trimmed_position_gives_connected_clients_a_snapshot() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let url = redis_url();
    let proxy = Proxy::start().await;
    let producer = Producer::new(publisher(&keys, &url));
    producer.publish_range(1..=15);
    flushed(&producer).await;
    let serving = start_node(&keys, &proxy.url).await;
    let mut client = connect(serving.addr).await;
    let mut view = View::default();
    view.read_until(&mut client, 15).await;

    // The node is cut off while the stream moves on and is trimmed past its position
    // (and past the checkpoint it could have used: it must wait for a newer one).
    proxy.cut();
    producer.publish_range(16..=45);
    flushed(&producer).await;
    keys.trim(3);
    producer.publish_range(46..=60);
    flushed(&producer).await;
    proxy.restore();

    view.read_to(&mut client, &producer).await;
    assert_eq!(view.snapshots, 2, "the gap is closed by a snapshot");
    let stats = serving.follower.stats();
    assert_eq!((stats.gaps, stats.builds), (1, 2), "{stats:?}");
    producer.publish_range(61..=65);
    view.read_to(&mut client, &producer).await;

    // A node started now builds from the checkpoint: the stream no longer starts at 1.
    assert!(keys.stream_len() < 65);
    let late = start_node(&keys, &url).await;
    until_seq(&late, 65).await;
    assert_eq!(state(&late.hub), producer.state());
}

#[tokio::test]
async fn a_lost_stream_is_replaced_by_a_resync_from_the_producer() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let url = redis_url();
    let producer = Producer::new(publisher(&keys, &url));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    let node = start_node(&keys, &url).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &producer).await;

    // The broker loses everything; the producer goes on.
    keys.lose();
    producer.publish_range(21..=30);
    flushed(&producer).await;
    let publisher = producer.publisher.clone();
    eventually("the producer resyncs", || publisher.stats().resyncs == 1).await;
    let stats = producer.publisher.stats();
    assert_eq!(stats.dropped, 0);
    assert!(stats.superseded > 0, "{stats:?}");

    view.read_to(&mut client, &producer).await;
    assert_eq!(view.snapshots, 2, "{:?}", view.kinds());
    producer.publish_range(31..=35);
    view.read_to(&mut client, &producer).await;
    let late = start_node(&keys, &url).await;
    until_seq(&late, 35).await;
    assert_eq!(state(&late.hub), producer.state());
    assert_eq!(state(&node.hub), producer.state());
}

#[tokio::test]
async fn a_full_producer_queue_drops_counts_and_resyncs_followers() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let url = redis_url();
    let proxy = Proxy::start().await;
    let publisher = BrokerSink::builder(keys.broker(&proxy.url))
        .buffer(4)
        .checkpoint_every(1_000)
        .spawn();
    let producer = Producer::new(publisher);
    // Fewer than the queue holds: nothing dropped yet.
    producer.publish_range(1..=3);
    flushed(&producer).await;
    let node = start_node(&keys, &url).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_until(&mut client, 3).await;

    proxy.cut();
    producer.publish_range(4..=40);
    let dropped = producer.publisher.stats().dropped;
    assert!(dropped > 0, "a queue of 4 cannot hold 37 events");
    proxy.restore();

    // The queue drains, then a resync carries the whole state: the client gets a snapshot.
    view.read_to(&mut client, &producer).await;
    assert_eq!(view.snapshots, 2, "{:?}", view.kinds());
    // The counters move just after the append and the apply the client already saw.
    let publisher = producer.publisher.clone();
    eventually("the producer counts its resync", || {
        publisher.stats().resyncs == 1
    })
    .await;
    assert_eq!(producer.publisher.stats().dropped, dropped);
    let follower = &node.follower;
    eventually("the follower counts the resync", || {
        follower.stats().resyncs == 1
    })
    .await;
    producer.publish_range(41..=45);
    view.read_to(&mut client, &producer).await;
    until_seq(&node, 45).await;
    assert_eq!(state(&node.hub), producer.state());
}

#[tokio::test]
async fn a_producer_restart_with_lower_seqs_reaches_every_node_in_stream_order() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker");
    let url = redis_url();
    let first = Producer::new(publisher(&keys, &url));
    first.publish_range(1..=30);
    flushed(&first).await;
    let node = start_node(&keys, &url).await;
    until_seq(&node, 30).await;
    drop(first);

    // A new producer process starts over at seq 1 with a snapshot, on the same stream.
    let second = Producer::new(publisher(&keys, &url));
    second.publish(Event::snapshot(1, vec![session("fresh", 1)]));
    second.publish_range(2..=9);
    flushed(&second).await;
    until_seq(&node, 9).await;
    // Sessions as the new producer has them (health reports survive snapshots, by the
    // store's rule, so the first producer's stay).
    assert_eq!(node.hub.sessions(), second.reference.sessions());
    assert!(
        node.hub.stats().replay_resets >= 1,
        "the hub's reset rule applied"
    );
    // A new client gets the new producer's state.
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &second).await;
}

/// configured timeouts and intervals at `Duration::MAX`. The
/// read deadline (`response_timeout + block`) overflowed; now every duration is clamped to
/// its documented maximum, and producer and follower work as usual.
#[tokio::test]
async fn extreme_timeouts_and_intervals_neither_panic_nor_stall() {
    if !redis_available() {
        return;
    }
    let _ = control();
    let keys = StreamKey::new("broker-extreme");
    let url = redis_url();
    let broker = || keys.broker(&url).response_timeout(Duration::MAX);
    let producer = Producer::new(
        BrokerSink::builder(broker())
            .checkpoint_every(4)
            .checkpoint_interval(Duration::MAX)
            .spawn(),
    );
    producer.publish_range(1..=10);
    flushed(&producer).await;

    let (_router, hub) = WsLayer::new().build::<()>("/ws");
    let follower = Follower::new(broker(), hub.clone())
        .block(Duration::MAX)
        .spawn();
    within("node built from the broker", follower.ready()).await;
    eventually("follower at seq 10", || hub.seq() == 10).await;
    // A read blocking for the longest time still wakes for new entries.
    producer.publish_range(11..=20);
    flushed(&producer).await;
    eventually("follower at seq 20", || hub.seq() == 20).await;
    assert_eq!(state(&hub), producer.state());
}
