//! Resume and lag recovery over real sockets: `?since=` replays exactly what was missed,
//! falls back to a snapshot when it cannot, and no client ever skips an event untold.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agentwatch_ws::{
    Event, EventSink, EventType, LagPolicy, Publisher, SessionState, Timestamp, WsLayer,
};
use axum::Router;
use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn session(id: &str, n: i64) -> SessionState {
    SessionState {
        id: id.into(),
        source: "codex".into(),
        message_count: n,
        ..Default::default()
    }
}

fn layer() -> WsLayer {
    WsLayer::new().rate_limit(None)
}

async fn start(ws: &WsLayer) -> (Publisher, SocketAddr) {
    let (ws_router, hub) = ws.clone().build("/ws");
    (hub, serve(Router::new().merge(ws_router)).await)
}

fn publish(hub: &Publisher, seq: u64) {
    let event = Event::delta(
        seq,
        vec![session(&format!("s{}", seq % 7), seq as i64)],
        vec![],
    );
    hub.handle_event(&event).unwrap();
}

async fn connect_since(addr: SocketAddr, query: &str) -> Client {
    let url = format!("ws://{addr}/ws{query}");
    let (client, _) = within("handshake", tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake");
    client
}

async fn seqs(client: &mut Client, n: usize) -> Vec<(u64, EventType)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = next_event(client).await;
        out.push((e.seq, e.kind));
    }
    out
}

#[tokio::test]
async fn resume_inside_the_window_replays_exactly_the_missed_events_then_live_ones() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    for seq in 1..=5 {
        publish(&hub, seq);
    }
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!((&snapshot.kind, snapshot.seq), (&EventType::Snapshot, 5));
    drop(client);
    for seq in 6..=9 {
        publish(&hub, seq);
    }
    let mut client = connect_since(addr, "?since=5").await;
    let got = seqs(&mut client, 4).await;
    assert_eq!(
        got,
        (6..=9).map(|s| (s, EventType::Delta)).collect::<Vec<_>>()
    );
    eventually("registered", || hub.client_count() == 1).await;
    publish(&hub, 10);
    assert_eq!(seqs(&mut client, 1).await, [(10, EventType::Delta)]);
    let stats = hub.stats();
    assert_eq!((stats.resumed, stats.snapshots), (1, 1));
}

#[tokio::test]
async fn resume_when_up_to_date_sends_nothing_until_the_next_event() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    for seq in 1..=3 {
        publish(&hub, seq);
    }
    let mut client = connect_since(addr, "?since=3").await;
    eventually("registered", || hub.client_count() == 1).await;
    publish(&hub, 4);
    assert_eq!(seqs(&mut client, 1).await, [(4, EventType::Delta)]);
    assert_eq!(hub.stats().snapshots, 0);
}

#[tokio::test]
async fn last_event_id_header_resumes_too() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    for seq in 1..=6 {
        publish(&hub, seq);
    }
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Last-Event-ID", "4".parse().unwrap());
    let (mut client, _) = within("handshake", tokio_tungstenite::connect_async(request))
        .await
        .unwrap();
    assert_eq!(
        seqs(&mut client, 2).await,
        [(5, EventType::Delta), (6, EventType::Delta)]
    );
}

#[tokio::test]
async fn outside_the_window_ahead_of_it_or_garbage_since_gets_a_snapshot() {
    let ws = layer().replay_window(10);
    let (hub, addr) = start(&ws).await;
    for seq in 1..=50 {
        publish(&hub, seq);
    }
    // The window holds 41..=50, so it covers since >= 40.
    for query in [
        "?since=39",
        "?since=0",
        "?since=51",
        "?since=99999999999",
        "?since=abc",
        "?since=-1",
        "?since=1e3",
        "?since=",
        "?since=%20",
        "?since=18446744073709551616",
    ] {
        let mut client = connect_since(addr, query).await;
        let first = next_event(&mut client).await;
        assert_eq!(
            (first.kind, first.seq),
            (EventType::Snapshot, 50),
            "query {query}"
        );
        assert_eq!(first.sessions.len(), 7);
    }
    let mut client = connect_since(addr, "?since=40").await;
    assert_eq!(seqs(&mut client, 1).await, [(41, EventType::Delta)]);
    assert_eq!(hub.stats().resumed, 1);
}

#[tokio::test]
async fn replay_disabled_means_every_connect_gets_a_snapshot() {
    let ws = layer().replay_window(None);
    let (hub, addr) = start(&ws).await;
    for seq in 1..=5 {
        publish(&hub, seq);
    }
    let mut client = connect_since(addr, "?since=4").await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    assert_eq!(hub.stats().replay_events, 0);
}

#[tokio::test]
async fn the_window_keeps_its_count_and_byte_bounds_under_large_events() {
    let ws = layer().replay_window(100).replay_window_bytes(1024 * 1024);
    let (hub, addr) = start(&ws).await;
    for seq in 1..=500u64 {
        let mut s = session("big", seq as i64);
        s.working_dir = "w".repeat(20_000 + (seq as usize % 7) * 10_000);
        hub.handle_event(&Event::delta(seq, vec![s], vec![]))
            .unwrap();
        let stats = hub.stats();
        assert!(stats.replay_events <= 100);
        assert!(
            stats.replay_bytes <= 1024 * 1024,
            "{} bytes",
            stats.replay_bytes
        );
    }
    let stats = hub.stats();
    assert!(stats.replay_events >= 10, "window emptied: {stats:?}");
    // Small events: the count bound is the one that binds.
    for seq in 501..=1000 {
        hub.handle_event(&Event::delta(seq, vec![], vec![]))
            .unwrap();
    }
    assert_eq!(hub.stats().replay_events, 100);
    // An event larger than the whole byte budget empties the window, and a client at that
    // event still resumes without a snapshot.
    let mut huge = session("huge", 0);
    huge.working_dir = "h".repeat(2 * 1024 * 1024);
    hub.handle_event(&Event::delta(1001, vec![huge], vec![]))
        .unwrap();
    assert_eq!(hub.stats().replay_events, 0);
    let mut client = connect_since(addr, "?since=1001").await;
    eventually("registered", || hub.client_count() == 1).await;
    hub.handle_event(&Event::delta(1002, vec![], vec![]))
        .unwrap();
    assert_eq!(seqs(&mut client, 1).await, [(1002, EventType::Delta)]);
    // ...while one that missed it gets a snapshot.
    let mut client = connect_since(addr, "?since=1000").await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
}

#[tokio::test]
async fn a_backwards_seq_resets_the_window() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    for seq in 1..=20 {
        publish(&hub, seq);
    }
    // The producer restarts: seq begins again.
    for seq in 5..=8 {
        publish(&hub, seq);
    }
    assert_eq!(hub.stats().replay_resets, 1);
    // A position from before the restart cannot be trusted any more.
    let mut client = connect_since(addr, "?since=10").await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let mut client = connect_since(addr, "?since=3").await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    // A position inside the new epoch resumes.
    let mut client = connect_since(addr, "?since=6").await;
    assert_eq!(
        seqs(&mut client, 2).await,
        [(7, EventType::Delta), (8, EventType::Delta)]
    );
}

/// A producer that restarts (its seqs begin again below the last one) while a client is
/// connected: the client gets a fresh snapshot before the restarted stream and ends with the
/// publisher's state, rather than having the restarted events taken for ones its snapshot
/// already held.
#[tokio::test]
async fn a_connected_client_gets_a_snapshot_when_the_producer_restarts() {
    let ws = layer();
    let (publisher, addr) = start(&ws).await;
    let old = |seq: u64| Event::delta(seq, vec![session(&format!("old{seq}"), 1)], vec![]);
    let new = |seq: u64| Event::delta(seq, vec![session(&format!("new{seq}"), 2)], vec![]);
    for seq in 1..=5 {
        publisher.publish(old(seq)).unwrap();
    }
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!((&snapshot.kind, snapshot.seq), (&EventType::Snapshot, 5));
    let before_restart = position(snapshot.seq, snapshot.at);
    eventually("client registered", || publisher.client_count() == 1).await;

    for seq in 1..=7 {
        publisher.publish(new(seq)).unwrap();
    }
    let mut rebuilt = Rebuilt::default();
    rebuilt.apply(snapshot).unwrap();
    while rebuilt.seq != 7 || rebuilt.snapshots < 2 {
        let event = next_event(&mut client).await;
        let (seq, kind) = (event.seq, event.kind.clone());
        rebuilt
            .apply(event)
            .unwrap_or_else(|e| panic!("{e} ({kind:?} {seq})"));
        // Before the second snapshot arrives, nothing of the restarted stream may.
        assert!(
            rebuilt.snapshots == 2 || seq > 5,
            "an event of the restarted stream before its snapshot: {kind:?} {seq}"
        );
        if rebuilt.seq == 7 && rebuilt.snapshots < 2 {
            panic!("reached seq 7 without a snapshot after the restart");
        }
    }
    let expected: HashMap<String, SessionState> = publisher
        .sessions()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    assert_eq!(expected.len(), 12, "old1..=5 and new1..=7");
    assert_eq!(rebuilt.sessions, expected);

    // A client resuming from its position before the restart gets a snapshot, too.
    let mut resumed = connect_since(addr, &before_restart).await;
    let first = next_event(&mut resumed).await;
    assert_eq!((first.kind, first.seq), (EventType::Snapshot, 7));
}

/// On a current-thread runtime, publishing without yielding overflows the client's queue
/// while its socket is writable.
#[tokio::test(flavor = "current_thread")]
async fn disconnect_policy_closes_with_1013_and_the_client_resumes_without_a_snapshot() {
    let ws = layer().send_buffer(8);
    let (hub, addr) = start(&ws).await;
    publish(&hub, 1);
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!(snapshot.seq, 1);
    eventually("registered", || hub.client_count() == 1).await;
    for seq in 2..=60 {
        publish(&hub, seq);
    }
    // Events before the close frame may or may not arrive; track what was applied.
    let mut applied = snapshot.seq;
    let close = loop {
        match within("close", futures_util::StreamExt::next(&mut client)).await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let e = Event::from_json(t.as_bytes()).unwrap();
                assert_eq!(e.seq, applied + 1);
                applied = e.seq;
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => break f,
            other => panic!("unexpected {other:?}"),
        }
    };
    let close = close.expect("close frame");
    assert_eq!(close.code, CloseCode::Again);
    let mut client = connect_since(addr, &format!("?since={applied}")).await;
    let got = seqs(&mut client, (60 - applied) as usize).await;
    assert_eq!(
        got,
        (applied + 1..=60)
            .map(|s| (s, EventType::Delta))
            .collect::<Vec<_>>()
    );
    let stats = hub.stats();
    assert_eq!(
        (stats.evicted_lagging, stats.resumed, stats.snapshots),
        (1, 1, 1)
    );
}

fn as_map(hub: &Publisher) -> HashMap<String, SessionState> {
    hub.sessions()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn resync_policy_replaces_the_backlog_with_a_snapshot_and_stays_exact() {
    let ws = layer().send_buffer(8).on_lag(LagPolicy::Resync);
    let (hub, addr) = start(&ws).await;
    publish(&hub, 1);
    let mut client = connect(addr).await;
    let mut state = Rebuilt::default();
    state.apply(next_event(&mut client).await).unwrap();
    eventually("registered", || hub.client_count() == 1).await;
    for seq in 2..=60 {
        publish(&hub, seq);
    }
    while state.seq < 60 {
        state.apply(next_event(&mut client).await).unwrap();
    }
    assert!(
        state.snapshots >= 2,
        "the backlog was not replaced by a snapshot"
    );
    // The connection survives and live events continue with no gap.
    for seq in 61..=64 {
        publish(&hub, seq);
        tokio::task::yield_now().await;
    }
    while state.seq < 64 {
        state.apply(next_event(&mut client).await).unwrap();
    }
    assert_eq!(state.sessions, as_map(&hub));
    let stats = hub.stats();
    assert!(stats.resyncs >= 1);
    assert_eq!(stats.evicted, 0);
    assert_eq!(hub.client_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_at_random_points_while_the_producer_runs_rebuilds_the_exact_state() {
    const EVENTS: u64 = 8_000;
    const CLIENTS: u64 = 20;
    let ws = layer()
        .send_buffer(EVENTS as usize)
        .replay_window(4096)
        .write_timeout(Duration::from_secs(120));
    let (hub, addr) = start(&ws).await;
    let sink = Arc::new(hub.clone());
    let producer = std::thread::spawn(move || {
        let mut rng = Rng(42);
        for seq in 1..=EVENTS {
            let removed = if rng.below(8) == 0 {
                vec![format!("s{}", rng.below(50))]
            } else {
                vec![]
            };
            let updates = vec![session(&format!("s{}", rng.below(50)), seq as i64)];
            sink.handle_event(&Event::delta(seq, updates, removed))
                .unwrap();
            if seq % 16 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    });
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(c * 7919 + 13);
            let mut state = Rebuilt::default();
            let mut client = connect(addr).await;
            let mut reconnects = 0;
            while state.seq < EVENTS {
                state.apply(next_event(&mut client).await)?;
                if rng.below(400) == 0 {
                    drop(client); // abrupt: no close handshake
                    tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
                    client = connect_since(addr, &format!("?since={}", state.seq)).await;
                    reconnects += 1;
                }
            }
            Ok::<_, String>((state, reconnects))
        }));
    }
    within_for(Duration::from_secs(180), "producer", async {
        while !producer.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    producer.join().unwrap();
    let expected = as_map(&hub);
    let mut total_reconnects = 0;
    for t in tasks {
        let (state, reconnects) = within_for(Duration::from_secs(180), "client", t)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("broken stream: {e}"));
        assert_eq!(state.sessions, expected);
        total_reconnects += reconnects;
    }
    let stats = hub.stats();
    assert!(
        total_reconnects >= CLIENTS,
        "too few reconnects: {total_reconnects}"
    );
    assert!(
        stats.resumed as f64 >= total_reconnects as f64 * 0.5,
        "most reconnects should resume from the window: {stats:?}"
    );
}

/// Publishes `seq` with an `at` of `clock` + `seq` ms: the producer's clock, chosen by the test.
fn publish_at(hub: &Publisher, seq: u64, clock: SystemTime) -> Timestamp {
    let mut event = Event::delta(
        seq,
        vec![session(&format!("s{}", seq % 7), seq as i64)],
        vec![],
    );
    event.at = Timestamp::from(clock + Duration::from_millis(seq));
    hub.handle_event(&event).unwrap();
    event.at
}

/// `?since=<seq>&since_at=<at>`, URL-encoded as `encodeURIComponent` would.
fn position(seq: u64, at: Timestamp) -> String {
    let at = at.to_string().replace(':', "%3A").replace('+', "%2B");
    format!("?since={seq}&since_at={at}")
}

#[tokio::test]
async fn a_client_of_an_earlier_server_gets_a_snapshot_whatever_the_clocks_say() {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    // The restarted server's clock behind the old one (NTP step, VM restore), then ahead.
    for new_clock in [now - hour, now + hour] {
        let (old_hub, old_addr) = start(&layer()).await;
        for seq in 1..=10 {
            publish_at(&old_hub, seq, now);
        }
        let mut client = connect(old_addr).await;
        let snapshot = next_event(&mut client).await;
        assert_eq!((snapshot.kind, snapshot.seq), (EventType::Snapshot, 10));
        let at11 = publish_at(&old_hub, 11, now);
        let event = next_event(&mut client).await;
        assert_eq!((event.seq, event.at), (11, at11));
        drop(client);
        old_hub.stop();

        // A new server (and monitor): seqs start again and pass the client's.
        let (hub, addr) = start(&layer()).await;
        for seq in 1..=20 {
            publish_at(&hub, seq, new_clock);
        }
        // From the last event the client applied, and from its snapshot: both inside the
        // new window by seq, neither the new server's event.
        for query in [position(11, at11), position(10, snapshot.at)] {
            let mut client = connect_since(addr, &query).await;
            let first = next_event(&mut client).await;
            assert_eq!(
                (first.kind, first.seq),
                (EventType::Snapshot, 20),
                "{query}"
            );
        }
        assert_eq!(hub.stats().resumed, 0);
        assert_eq!(hub.stats().snapshots, 2);
    }
}

#[tokio::test]
async fn a_client_of_the_same_server_resumes_from_an_event_or_a_snapshot_without_a_snapshot() {
    let (hub, addr) = start(&layer()).await;
    let clock = SystemTime::now();
    let mut ats = vec![Timestamp::default()];
    for seq in 1..=5 {
        ats.push(publish_at(&hub, seq, clock));
    }
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    // The snapshot carries the at of the last event it reflects: a position the hub knows.
    assert_eq!((snapshot.seq, snapshot.at), (5, ats[5]));
    for seq in 6..=8 {
        ats.push(publish_at(&hub, seq, clock));
    }
    assert_eq!(seqs(&mut client, 3).await.len(), 3);
    drop(client);

    let mut from_snapshot = connect_since(addr, &position(5, snapshot.at)).await;
    let mut from_event = connect_since(addr, &position(7, ats[7])).await;
    // Unencoded works too (a UTC stamp has no '+').
    let mut unencoded = connect_since(addr, &format!("?since=7&since_at={}", ats[7])).await;
    let mut up_to_date = connect_since(addr, &position(8, ats[8])).await;
    publish_at(&hub, 9, clock);
    assert_eq!(
        seqs(&mut from_snapshot, 4).await,
        [6, 7, 8, 9].map(|seq| (seq, EventType::Delta))
    );
    for client in [&mut from_event, &mut unencoded] {
        assert_eq!(
            seqs(client, 2).await,
            [(8, EventType::Delta), (9, EventType::Delta)]
        );
    }
    assert_eq!(seqs(&mut up_to_date, 1).await, [(9, EventType::Delta)]);
    assert_eq!(hub.stats().resumed, 4);
    assert_eq!(hub.stats().snapshots, 1);
}

#[tokio::test]
async fn a_since_at_that_is_not_the_events_gets_a_snapshot() {
    let (hub, addr) = start(&layer()).await;
    let clock = SystemTime::now();
    let mut ats = vec![Timestamp::default()];
    for seq in 1..=8 {
        ats.push(publish_at(&hub, seq, clock));
    }
    let one_ns_later = Timestamp::from(ats[7].to_system_time().unwrap() + Duration::from_nanos(1));
    let cases = [
        position(7, ats[6]),
        position(7, one_ns_later),
        "?since=7&since_at=yesterday".to_owned(),
        "?since=7&since_at=%ZZ".to_owned(),
        "?since=7&since_at=".to_owned(),
        // The retired snapshot_at alone cannot be checked: snapshot, whatever its value.
        format!("?since=7&snapshot_at={}", ats[7]),
    ];
    for query in &cases {
        let mut client = connect_since(addr, query).await;
        let first = next_event(&mut client).await;
        assert_eq!((first.kind, first.seq), (EventType::Snapshot, 8), "{query}");
    }
    assert_eq!(hub.stats().resumed, 0);
    assert_eq!(hub.stats().snapshots, cases.len() as u64);
}

#[tokio::test]
async fn since_alone_keeps_the_go_behaviour() {
    // A Go client (or Last-Event-ID) knows nothing of since_at: its seq is trusted, as
    // before (and as in Go).
    let (hub, addr) = start(&layer()).await;
    let clock = SystemTime::now() - Duration::from_secs(3600);
    for seq in 1..=12 {
        publish_at(&hub, seq, clock);
    }
    let mut client = connect_since(addr, "?since=10").await;
    assert_eq!(
        seqs(&mut client, 2).await,
        [(11, EventType::Delta), (12, EventType::Delta)]
    );
    assert_eq!(hub.stats().resumed, 1);
}

#[tokio::test]
async fn nodes_serving_the_same_events_accept_each_others_positions() {
    let clock = SystemTime::now();
    let (hub_a, addr_a) = start(&layer()).await;
    let (hub_b, addr_b) = start(&layer()).await;
    for seq in 1..=6 {
        let a = publish_at(&hub_a, seq, clock);
        let b = publish_at(&hub_b, seq, clock);
        assert_eq!(a, b);
    }
    let mut client = connect(addr_a).await;
    let snapshot = next_event(&mut client).await;
    drop(client);
    let mut client = connect_since(addr_b, &position(snapshot.seq, snapshot.at)).await;
    publish_at(&hub_b, 7, clock);
    assert_eq!(seqs(&mut client, 1).await, [(7, EventType::Delta)]);
    assert_eq!(hub_b.stats().resumed, 1);
}

#[tokio::test]
async fn the_window_floor_gives_verifiable_positions() {
    let ws = layer().replay_window(3);
    let (hub, addr) = start(&ws).await;
    let clock = SystemTime::now();
    let mut ats = vec![Timestamp::default()];
    for seq in 1..=10 {
        ats.push(publish_at(&hub, seq, clock));
    }
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!((snapshot.seq, snapshot.at), (10, ats[10]));
    // The window holds 8..=10; 7 is its floor: every event after it is held.
    let mut at_floor = connect_since(addr, &position(7, ats[7])).await;
    assert_eq!(
        seqs(&mut at_floor, 3).await,
        [8, 9, 10].map(|seq| (seq, EventType::Delta))
    );
    let mut below = connect_since(addr, &position(6, ats[6])).await;
    assert_eq!(next_event(&mut below).await.kind, EventType::Snapshot);
    assert_eq!(hub.stats().resumed, 1);
}
