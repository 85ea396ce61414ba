//! Several nodes behind one broker: every node serves the producer's events with the same
//! seq and `at`, clients resume across nodes, and broker faults lose nothing silently. Every
//! test runs against each engine (`redis::…`, `nats::…` in each module): the real Redis on
//! 127.0.0.1:6379 (or `AGENTWATCH_REDIS_URL`), the real NATS JetStream on 127.0.0.1:4222 (or
//! `AGENTWATCH_NATS_URL`), each test on its own stream, removed at the end. Faults are made
//! with a TCP proxy between the test's clients and the broker, on the test's own stream
//! (trim, delete, a corrupt checkpoint, a forged entry), or on a server the test starts
//! itself (a restart from older data): the shared servers are never paused or stopped.
//!
//! With no server answering, each test skips with a notice, so `cargo test` passes on a
//! machine without one; `AGENTWATCH_REQUIRE_REDIS=1` / `AGENTWATCH_REQUIRE_NATS=1` (set by
//! `.ci/run`, which starts both when none answers) make that a failure.

// unwrap()/expect() here are test assertions on values the test built.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod engine;
mod faults;
mod machines;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwatch_ws::broker::{BrokerSink, Follower, FollowerHandle};
use agentwatch_ws::{
    Event, EventSink, EventType, Health, HealthStatus, Publisher, SessionState, Timestamp, WsLayer,
};
use axum::Router;
use common::*;
use engine::Engine;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Runs each named generic test (`async fn name<E: Engine>()`) once per engine, as
/// `redis::name` and `nats::name` in the calling module.
macro_rules! engine_tests {
    ($($test:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<crate::engine::Redis>().await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<crate::engine::Nats>().await
                }
            )*
        }
    };
}
pub(crate) use engine_tests;

/// A TCP proxy in front of the broker that the test can cut (every connection closed, new
/// ones refused) and restore: a broker outage for this test's clients only.
struct Proxy {
    url: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start<E: Engine>(env: &E) -> Proxy {
        let target = env.address();
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
            url: env.url_of(addr),
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

    /// The state a node must hold: the last seq and every session, labelled with the
    /// producer's machine. The seq is the stream's, of the producer's last entry, once the
    /// producer has appended everything queued; before that, the producer's own (the same
    /// while it is the stream's only writer from its start and has superseded nothing).
    fn state(&self) -> (u64, Vec<SessionState>) {
        let (seq, sessions) = state(&self.reference);
        let stats = self.publisher.stats();
        let settled = stats.last_seq > 0 && stats.appended + stats.superseded >= stats.queued;
        (
            if settled { stats.last_seq } else { seq },
            sessions
                .into_iter()
                .map(|s| labelled(s, self.publisher.machine()))
                .collect(),
        )
    }

    /// Every source's latest health, as the events published reported it (reports are kept
    /// across snapshots, which carry none).
    fn health(&self) -> HashMap<String, Health> {
        let mut latest = HashMap::new();
        for event in self.events.lock().unwrap().iter() {
            if let Some(health) = &event.health {
                let mut health = health.clone();
                health.machine = self.publisher.machine().to_owned();
                latest.insert(health.source.clone(), health);
            }
        }
        latest
    }

    fn publish_range(&self, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            self.publish(event(seq));
        }
    }

    /// The events published with a seq in `seqs`, in order, as nodes serve them (labelled
    /// with the machine; the stream's seq is the producer's while it is the stream's only
    /// writer from its start).
    fn published(&self, seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        let events = self.events.lock().unwrap();
        let machine = self.publisher.machine();
        events
            .iter()
            .filter(|e| seqs.contains(&e.seq))
            .cloned()
            .map(|mut e| {
                for s in &mut e.updates {
                    s.machine = machine.to_owned();
                }
                if let Some(h) = &mut e.health {
                    h.machine = machine.to_owned();
                }
                e
            })
            .collect()
    }
}

/// The machine name the tests' producers publish under.
const MACHINE: &str = "m1";

/// `session` as a node serves it: labelled with its machine.
fn labelled(mut session: SessionState, machine: &str) -> SessionState {
    session.machine = machine.to_owned();
    session
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

async fn start_node<E: Engine>(env: &E, url: &str) -> Node {
    let node = start_node_unready(env, url).await;
    within("node built from the broker", node.follower.ready()).await;
    node
}

async fn start_node_unready<E: Engine>(env: &E, url: &str) -> Node {
    start_node_with(env, url, WsLayer::new()).await
}

/// A node whose endpoint has `ws`'s settings (rate limiting off).
async fn start_node_with<E: Engine>(env: &E, url: &str, ws: WsLayer) -> Node {
    let (router, hub) = ws.rate_limit(None).build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let follower = Follower::new(env.broker_via(url), hub.clone())
        .block(Duration::from_millis(200))
        .spawn();
    Node {
        hub,
        addr,
        follower,
    }
}

fn publisher<E: Engine>(env: &E, url: &str) -> BrokerSink {
    BrokerSink::builder(env.broker_via(url))
        .machine(MACHINE)
        .checkpoint_every(8)
        .checkpoint_interval(Duration::from_millis(200))
        .verify_interval(Duration::from_millis(100))
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
                // As the dashboard does: the health reports at the snapshot's seq follow.
                self.health.clear();
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
        within("the producer's appends", producer.publisher.flush()).await;
        loop {
            let (seq, sessions) = producer.state();
            let expected: HashMap<_, _> = sessions.into_iter().map(|s| (s.id.clone(), s)).collect();
            let health = producer.health();
            if self.seq >= seq
                && self.announced.is_none()
                && self.sessions == expected
                && self.health == health
            {
                return;
            }
            // No "read past" check: a stream that lost its data starts its seqs over, and the
            // snapshot that ends the gap goes back. A view that never matches times out.
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
