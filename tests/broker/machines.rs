//! Many producers into one stream: every node serves the union of their machines' sessions
//! and health reports, labelled, in one order with one seq; a machine name is held by one
//! live producer; a producer that goes quiet is marked gone, and its restart replaces only
//! its own sessions.

use agentwatch_ws::broker::BrokerError;
use agentwatch_ws::{Activity, LifecycleState};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// A producer of machine `machine`, with a short claim timeout.
fn producer_of<E: Engine>(env: &E, url: &str, machine: &str, stale: Duration) -> Producer {
    Producer::new(
        BrokerSink::builder(env.broker_via(url))
            .machine(machine)
            .stale_after(stale)
            .checkpoint_every(8)
            .checkpoint_interval(Duration::from_millis(200))
            .verify_interval(Duration::from_millis(100))
            .spawn(),
    )
}

/// A node whose follower marks machines gone after `stale`.
async fn node_with_stale<E: Engine>(env: &E, url: &str, stale: Duration) -> Node {
    let (router, hub) = WsLayer::new().rate_limit(None).build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let follower = Follower::new(env.broker_via(url), hub.clone())
        .block(Duration::from_millis(200))
        .stale_after(stale)
        .spawn();
    within("node built from the broker", follower.ready()).await;
    Node {
        hub,
        addr,
        follower,
    }
}

/// A session of machine `machine`'s, its id naming the machine.
fn machine_session(machine: &str, i: u64, n: i64) -> SessionState {
    SessionState {
        id: format!("{machine}-s{i}"),
        source: "claude".into(),
        activity: Activity::Working,
        lifecycle: LifecycleState::Active,
        message_count: n,
        ..Default::default()
    }
}

/// The next text frame, as sent.
async fn next_text(client: &mut Client) -> String {
    loop {
        let message = within("next frame", client.next())
            .await
            .expect("stream ended")
            .expect("read error");
        if let Message::Text(text) = message {
            return text.to_string();
        }
    }
}

/// Every session the producers hold, labelled, sorted by id.
fn union(producers: &[&Producer]) -> Vec<SessionState> {
    let mut all: Vec<SessionState> = producers.iter().flat_map(|p| p.state().1).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

async fn three_producers_and_three_nodes_agree_byte_for_byte<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "machines");
    let stale = Duration::from_secs(60);
    let machines = ["alice", "bob", "carol"];
    let producers: Vec<Producer> = machines
        .iter()
        .map(|m| producer_of(&env, &url, m, stale))
        .collect();
    for p in &producers {
        within("started", p.publisher.started()).await.unwrap();
    }
    let publish = |round: u64| {
        for (p, machine) in producers.iter().zip(machines) {
            let seq = p.reference.seq() + 1;
            let event = if round % 5 == 4 {
                Event::health(seq, health("claude", HealthStatus::Healthy))
            } else {
                // Sessions 0–2 before the first nodes start, then 3–6: new sessions of the
                // three machines discovered interleaved while the nodes follow.
                let i = if round < 10 { round % 3 } else { 3 + round % 4 };
                Event::delta(seq, vec![machine_session(machine, i, round as i64)], vec![])
            };
            p.publish(event);
        }
    };
    for round in 0..10 {
        publish(round);
    }
    for p in &producers {
        flushed(p).await;
    }
    let mut nodes = vec![
        node_with_stale(&env, &url, stale).await,
        node_with_stale(&env, &url, stale).await,
    ];
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = connect(node.addr).await;
        let mut view = View::default();
        // The snapshot (and its health reports) first.
        let snapshot = next_event(&mut client).await;
        view.apply(snapshot);
        clients.push((client, view));
    }
    for round in 10..40 {
        publish(round);
    }
    for p in &producers {
        flushed(p).await;
    }
    nodes.push(node_with_stale(&env, &url, stale).await);
    let last = producers
        .iter()
        .map(|p| p.publisher.stats().last_seq)
        .max()
        .unwrap();
    let refs: Vec<&Producer> = producers.iter().collect();
    for node in &nodes {
        until_seq(node, last).await;
        assert_eq!(
            node.hub.sessions(),
            union(&refs),
            "every machine's sessions, labelled"
        );
        let machines_seen: std::collections::BTreeSet<String> =
            node.hub.sessions().into_iter().map(|s| s.machine).collect();
        assert_eq!(machines_seen.len(), 3);
    }
    // A client connecting now gets the same snapshot and health reports, byte for byte, from
    // every node, whether it followed from the start or was built from the checkpoints
    // later.
    let mut first_frames = Vec::new();
    for node in &nodes {
        let mut fresh = connect(node.addr).await;
        let mut frames = Vec::new();
        for _ in 0..4 {
            frames.push(next_text(&mut fresh).await);
        }
        first_frames.push(frames);
    }
    assert!(first_frames[0][0].contains("\"type\":\"snapshot\""));
    assert!(
        first_frames[0][1..]
            .iter()
            .all(|f| f.contains("\"type\":\"health\""))
    );
    assert_eq!(first_frames[0], first_frames[1]);
    assert_eq!(first_frames[0], first_frames[2], "the node built later");
    // The live frames after the snapshot are the same bytes on every node, seqs following
    // each other.
    let mut frames: Vec<Vec<String>> = Vec::new();
    for (client, view) in &mut clients {
        let mut got = Vec::new();
        while view.seq < last {
            let text = next_text(client).await;
            view.apply(Event::from_json(text.as_bytes()).unwrap());
            got.push(text);
        }
        frames.push(got);
    }
    // The two clients connected at about the same time: compare from the first seq both have.
    let first_common = frames
        .iter()
        .map(|f| Event::from_json(f[0].as_bytes()).unwrap().seq)
        .max()
        .unwrap();
    let from = |f: &Vec<String>| -> Vec<String> {
        f.iter()
            .filter(|t| Event::from_json(t.as_bytes()).unwrap().seq >= first_common)
            .cloned()
            .collect()
    };
    assert_eq!(from(&frames[0]), from(&frames[1]));
    assert!(from(&frames[0]).len() >= 60, "{}", frames[0].len());
    assert!(
        frames[0]
            .iter()
            .any(|t| t.contains("\"machine\":\"alice\""))
    );
    assert!(
        frames[0]
            .iter()
            .any(|t| t.contains("\"machine\":\"carol\""))
    );
    // A client of the late node resuming from a position another node served gets the same
    // events after it.
    let resume_seq = last - 5;
    let at = clients[0]
        .1
        .received
        .iter()
        .find(|e| e.seq == resume_seq)
        .map(|e| e.at.to_string())
        .unwrap();
    let query = format!(
        "?since={resume_seq}&since_at={}",
        at.replace(':', "%3A").replace('+', "%2B")
    );
    let mut resumed = connect_query(nodes[2].addr, &query).await;
    let mut replayed = Vec::new();
    for _ in 0..5 {
        replayed.push(next_text(&mut resumed).await);
    }
    let expected: Vec<String> = frames[0]
        .iter()
        .filter(|t| Event::from_json(t.as_bytes()).unwrap().seq > resume_seq)
        .cloned()
        .collect();
    assert_eq!(
        replayed, expected,
        "resume on another node: the same bytes, no snapshot"
    );
}

async fn a_second_producer_with_a_live_machine_name_is_refused<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "machines-name");
    let stale = Duration::from_secs(60);
    let first = producer_of(&env, &url, "dup", stale);
    within("started", first.publisher.started()).await.unwrap();
    first.publish(Event::delta(1, vec![machine_session("dup", 1, 1)], vec![]));
    flushed(&first).await;

    let second = producer_of(&env, &url, "dup", stale);
    match within("refused", second.publisher.started()).await {
        Err(BrokerError::NameTaken { machine, age }) => {
            assert_eq!(machine, "dup");
            assert!(age < stale);
        }
        other => panic!("a second live producer of one name must be refused: {other:?}"),
    }
    assert!(
        second
            .publisher
            .handle_event(&Event::delta(1, vec![], vec![]))
            .is_err(),
        "a refused producer refuses events"
    );
    let message = BrokerError::NameTaken {
        machine: "dup".into(),
        age: Duration::from_millis(5),
    }
    .to_string();
    assert!(
        message.contains("\"dup\"") && message.contains("another"),
        "{message}"
    );

    // The first is unaffected; once it leaves, the name is free at once.
    let node = node_with_stale(&env, &url, stale).await;
    until_seq(&node, first.publisher.stats().last_seq).await;
    assert_eq!(node.hub.sessions(), first.state().1);
    within("close", first.publisher.close()).await;
    let third = producer_of(&env, &url, "dup", stale);
    within("started after the close", third.publisher.started())
        .await
        .unwrap();
}

async fn a_killed_producer_is_marked_gone_and_its_restart_replaces_only_its_sessions<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "machines-gone");
    let stale = Duration::from_millis(1500);
    let a = producer_of(&env, &url, "a", stale);
    let b = producer_of(&env, &url, "b", stale);
    for p in [&a, &b] {
        within("started", p.publisher.started()).await.unwrap();
    }
    a.publish(Event::delta(1, vec![machine_session("a", 1, 1)], vec![]));
    a.publish(Event::health(2, health("claude", HealthStatus::Healthy)));
    b.publish(Event::delta(1, vec![machine_session("b", 1, 1)], vec![]));
    b.publish(Event::health(2, health("claude", HealthStatus::Healthy)));
    flushed(&a).await;
    flushed(&b).await;
    let nodes = [
        node_with_stale(&env, &url, stale).await,
        node_with_stale(&env, &url, stale).await,
    ];
    let mut client = connect(nodes[0].addr).await;
    let mut view = View::default();
    view.apply(next_event(&mut client).await);

    // `a` is killed: its sink dropped without closing, its task stopped with it.
    let a_sessions = a.state().1;
    drop(a);
    for node in &nodes {
        let hub = node.hub.clone();
        eventually("the nodes mark machine a gone", move || {
            hub.sessions()
                .iter()
                .any(|s| s.machine == "a" && s.lifecycle == LifecycleState::Terminal)
        })
        .await;
    }
    let marked: u64 = nodes.iter().map(|n| n.follower.stats().marked_gone).sum();
    assert_eq!(marked, 1, "exactly one node appends the gone entry");
    for node in &nodes {
        let sessions = node.hub.sessions();
        let gone: Vec<_> = sessions.iter().filter(|s| s.machine == "a").collect();
        assert_eq!(gone.len(), a_sessions.len());
        assert!(gone.iter().all(|s| s.lifecycle == LifecycleState::Terminal));
        let b_now: Vec<_> = sessions.into_iter().filter(|s| s.machine == "b").collect();
        assert_eq!(b_now, b.state().1, "b untouched");
    }
    // The connected client got it, health included, and keeps following b.
    b.publish(Event::delta(3, vec![machine_session("b", 2, 3)], vec![]));
    flushed(&b).await;
    let seq = b.publisher.stats().last_seq;
    view.read_until(&mut client, seq).await;
    let report = view
        .received
        .iter()
        .filter_map(|e| e.health.as_ref())
        .rfind(|h| h.machine == "a")
        .unwrap();
    assert_eq!(report.status, HealthStatus::Failed);
    assert!(report.last_error.contains("gone"), "{}", report.last_error);
    assert!(view.sessions.contains_key("b-s2"));

    // a restarts: its name is free (gone), and its first entry replaces only its sessions.
    let a = producer_of(&env, &url, "a", stale);
    within("restarted", a.publisher.started()).await.unwrap();
    a.publish(Event::snapshot(1, vec![machine_session("a", 7, 1)]));
    flushed(&a).await;
    let seq = a.publisher.stats().last_seq;
    let refs = [&a, &b];
    for node in &nodes {
        until_seq(node, seq).await;
        assert_eq!(node.hub.sessions(), union(&refs));
    }
    view.read_until(&mut client, seq).await;
    assert!(view.sessions.contains_key("a-s7") && !view.sessions.contains_key("a-s1"));
    assert!(view.sessions.contains_key("b-s1") && view.sessions.contains_key("b-s2"));
}

/// A producer that appends all the time still renews its claim (an append does not renew
/// it on every engine): over several `stale_after` of steady appends, no node marks it gone.
async fn a_busy_producer_is_never_marked_gone<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "machines-busy");
    let stale = Duration::from_millis(800);
    let busy = producer_of(&env, &url, "busy", stale);
    within("started", busy.publisher.started()).await.unwrap();
    let node = node_with_stale(&env, &url, stale).await;
    let deadline = tokio::time::Instant::now() + stale * 4;
    let mut seq = 0;
    while tokio::time::Instant::now() < deadline {
        seq += 1;
        busy.publish(Event::delta(
            seq,
            vec![machine_session("busy", seq % 3, seq as i64)],
            vec![],
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flushed(&busy).await;
    until_seq(&node, busy.publisher.stats().last_seq).await;
    assert_eq!(node.follower.stats().marked_gone, 0);
    assert_eq!(busy.publisher.stats().reclaims, 0);
    assert_eq!(node.hub.sessions(), busy.state().1);
}

/// Machine names are kept as given: spaces, dots and non-ASCII letters included, so names
/// that differ stay apart; a name that is empty, longer than 64 bytes or holds a control
/// character stops its sink at start with a clear error.
async fn machine_names_are_kept_exactly_and_bad_ones_refused<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "machines-names");
    let stale = Duration::from_secs(60);
    let names = ["日本", "中国", "a b", "a.b", "a:b", &"x".repeat(64)];
    let producers: Vec<Producer> = names
        .iter()
        .map(|name| producer_of(&env, &url, name, stale))
        .collect();
    for (i, p) in producers.iter().enumerate() {
        within("started", p.publisher.started()).await.unwrap();
        p.publish(Event::delta(
            1,
            vec![machine_session(&format!("n{i}"), 0, 1)],
            vec![],
        ));
        flushed(p).await;
    }
    let node = node_with_stale(&env, &url, stale).await;
    let last = producers
        .iter()
        .map(|p| p.publisher.stats().last_seq)
        .max()
        .unwrap();
    until_seq(&node, last).await;
    let refs: Vec<&Producer> = producers.iter().collect();
    assert_eq!(node.hub.sessions(), union(&refs));
    let seen: std::collections::BTreeSet<String> =
        node.hub.sessions().into_iter().map(|s| s.machine).collect();
    assert_eq!(seen.len(), names.len(), "{seen:?}");

    for bad in ["", "tab\there", &"y".repeat(65)] {
        let refused = producer_of(&env, &url, bad, stale);
        match within("refused", refused.publisher.started()).await {
            Err(BrokerError::InvalidMachine { machine }) => assert_eq!(machine, bad),
            other => panic!("{bad:?} must be refused: {other:?}"),
        }
        assert!(
            refused
                .publisher
                .handle_event(&Event::delta(1, vec![], vec![]))
                .is_err()
        );
    }
}

/// Two machines report the same session id: every node shows one copy, the machine first by
/// name's, whatever the order things happened in, and a node started later shows the same;
/// when that machine drops it, the other's copy shows.
async fn a_session_id_two_machines_report_shows_one_copy_alike_on_every_node<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "machines-collide");
    let stale = Duration::from_secs(60);
    let (a, b) = (
        producer_of(&env, &url, "m00", stale),
        producer_of(&env, &url, "m01", stale),
    );
    for p in [&a, &b] {
        within("started", p.publisher.started()).await.unwrap();
    }
    let shared = |n: i64| SessionState {
        id: "shared".into(),
        source: "claude".into(),
        message_count: n,
        ..Default::default()
    };
    a.publish(Event::delta(
        1,
        vec![shared(1), machine_session("m00", 0, 1)],
        vec![],
    ));
    flushed(&a).await;
    let early = node_with_stale(&env, &url, stale).await;
    // m01 reports the same id, then restarts without it.
    b.publish(Event::delta(
        1,
        vec![shared(100), machine_session("m01", 0, 1)],
        vec![],
    ));
    b.publish(Event::delta(2, vec![shared(101)], vec![]));
    flushed(&b).await;
    b.publish(Event::snapshot(3, vec![machine_session("m01", 1, 1)]));
    a.publish(Event::delta(2, vec![shared(2)], vec![]));
    flushed(&a).await;
    flushed(&b).await;
    let late = node_with_stale(&env, &url, stale).await;
    let seq = a
        .publisher
        .stats()
        .last_seq
        .max(b.publisher.stats().last_seq);
    for node in [&early, &late] {
        until_seq(node, seq).await;
        let sessions = node.hub.sessions();
        let copy = sessions.iter().find(|s| s.id == "shared").expect("shown");
        assert_eq!((copy.machine.as_str(), copy.message_count), ("m00", 2));
        assert_eq!(sessions.len(), 3, "{sessions:?}");
    }
    let snapshot = |addr| async move {
        let mut client = connect(addr).await;
        next_text(&mut client).await
    };
    assert_eq!(snapshot(early.addr).await, snapshot(late.addr).await);

    // m01 reports it again, m00 drops it: m01's copy shows.
    b.publish(Event::delta(4, vec![shared(102)], vec![]));
    flushed(&b).await;
    a.publish(Event::delta(3, vec![], vec!["shared".into()]));
    flushed(&a).await;
    let seq = a
        .publisher
        .stats()
        .last_seq
        .max(b.publisher.stats().last_seq);
    let later = node_with_stale(&env, &url, stale).await;
    for node in [&early, &late, &later] {
        until_seq(node, seq).await;
        let sessions = node.hub.sessions();
        let copy = sessions.iter().find(|s| s.id == "shared").expect("shown");
        assert_eq!((copy.machine.as_str(), copy.message_count), ("m01", 102));
    }
}

engine_tests!(
    a_session_id_two_machines_report_shows_one_copy_alike_on_every_node,
    machine_names_are_kept_exactly_and_bad_ones_refused,
    a_busy_producer_is_never_marked_gone,
    three_producers_and_three_nodes_agree_byte_for_byte,
    a_second_producer_with_a_live_machine_name_is_refused,
    a_killed_producer_is_marked_gone_and_its_restart_replaces_only_its_sessions,
);
