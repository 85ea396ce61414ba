//! Faults real brokers produce, and what nodes and their clients must still see: a broker
//! restored from older data, a stream trimmed or deleted under an idle producer, a forged
//! entry, a corrupt checkpoint; and a client resuming from before a node's replay window,
//! served from the stream.

use std::path::Path;

use agentwatch_ws::broker::BrokerSinkStats;

use super::*;

/// A delta carrying a session of its own (`only-<seq>`): a node that lost this event lacks
/// that session.
fn marker(seq: u64) -> Event {
    Event::delta(seq, vec![session(&format!("only-{seq}"), 1)], vec![])
}

/// A producer whose checkpoints come only every 8 events (never from quiet time), so that
/// the checkpoint lags the stream's end while it is idle.
fn lagging_checkpoints<E: Engine>(env: &E) -> BrokerSink {
    BrokerSink::builder(env.broker())
        .machine(MACHINE)
        .checkpoint_every(8)
        .checkpoint_interval(Duration::from_secs(3600))
        .verify_interval(Duration::from_millis(100))
        .spawn()
}

/// Waits until `node` holds exactly the producer's state.
async fn converged(what: &str, node: &Node, producer: &Producer) {
    eventually(what, || state(&node.hub) == producer.state()).await;
}

fn sink_stats(producer: &Producer) -> BrokerSinkStats {
    producer.publisher.stats()
}

/// `?since=<seq>&since_at=<at of the producer's event seq>`.
fn resume_query(producer: &Producer, seq: u64) -> String {
    let at = producer.published(seq..=seq)[0].at.to_string();
    format!(
        "?since={seq}&since_at={}",
        at.replace(':', "%3A").replace('+', "%2B")
    )
}

/// The broker restarts from a copy of its data taken ten events ago (a restore from an older
/// snapshot, a failover to a lagging replica) while the producer is idle: the stream is not
/// empty, so only its tail shows the loss. The producer notices, resyncs, and every node, a
/// connected client and a node started afterwards hold the producer's state, the session the
/// older data lacks included.
async fn a_broker_restored_from_older_data_gets_the_producers_state_back<E: Engine>() {
    if E::shared().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, older) = (dir.path().join("data"), dir.path().join("older"));
    std::fs::create_dir_all(&data).unwrap();
    let mut server = E::own_server(&data).await;
    let url = server.url();
    let env = E::stream(&url, "restore");
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=10);
    flushed(&producer).await;
    let node = start_node(&env, &url).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &producer).await;
    server.save_to(&older).await;

    producer.publish_range(11..=20);
    producer.publish(marker(21));
    flushed(&producer).await;
    view.read_to(&mut client, &producer).await;
    server.restart_from(Path::new(&older)).await;

    converged("the running node", &node, &producer).await;
    let late = start_node(&env, &url).await;
    converged("a node started after the restore", &late, &producer).await;
    view.read_to(&mut client, &producer).await;
    assert!(view.sessions.contains_key("only-21"));
    producer.publish_range(22..=25);
    view.read_to(&mut client, &producer).await;
    converged("the running node", &node, &producer).await;
    converged("the late node", &late, &producer).await;
    assert!(
        sink_stats(&producer).stream_losses >= 1,
        "{:?}",
        sink_stats(&producer)
    );
}

/// The stream is trimmed past the checkpoint while the producer is idle: a node starting
/// then can build neither from the checkpoint nor from the stream's start. The producer
/// notices and writes the checkpoint again; the node becomes ready with the producer's state.
async fn a_stream_trimmed_past_the_checkpoint_under_an_idle_producer_is_repaired<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "trimmed-idle");
    let producer = Producer::new(lagging_checkpoints(&env));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    env.trim(2).await;
    let late = start_node(&env, &url).await;
    converged("a node started after the trim", &late, &producer).await;
    assert!(
        sink_stats(&producer).checkpoint_repairs >= 1,
        "{:?}",
        sink_stats(&producer)
    );
    producer.publish_range(21..=25);
    converged("the node", &late, &producer).await;
}

/// The stream is deleted while the producer is idle (the checkpoint, ten events old, stays):
/// a node started then must not serve the checkpoint's older state. The producer resyncs;
/// the running node, its client and the new node hold the producer's state.
async fn a_stream_deleted_under_an_idle_producer_is_resynced<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "deleted-idle");
    let producer = Producer::new(lagging_checkpoints(&env));
    producer.publish_range(1..=19);
    producer.publish(marker(20));
    flushed(&producer).await;
    let node = start_node(&env, &url).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &producer).await;

    env.delete_stream().await;
    let late = start_node(&env, &url).await;
    converged("a node started after the delete", &late, &producer).await;
    assert!(late.hub.session("only-20").is_some());
    assert!(
        sink_stats(&producer).stream_losses >= 1,
        "{:?}",
        sink_stats(&producer)
    );
    producer.publish_range(21..=25);
    view.read_to(&mut client, &producer).await;
    converged("the running node", &node, &producer).await;
    converged("the late node", &late, &producer).await;
}

/// One correctly chained entry holding a valid delta with seq `u64::MAX` (a forged or
/// corrupt entry): no client ever gets that seq, a connected client keeps receiving the
/// producer's events with seqs that follow each other, and a node started afterwards agrees.
/// On Redis the entry's own `seq` field is forged too: it is refused for its seq. On NATS an
/// entry's seq is its stream sequence, assigned by the server: the entry takes the next one
/// (its payload's seq ignored) and is refused as an event of a machine that never started
/// (every producer's first entry is a resync); clients get an empty `delta` at its seq.
async fn a_forged_entry_is_refused_and_clients_keep_following<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "forged");
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=10);
    flushed(&producer).await;
    let node = start_node(&env, &url).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &producer).await;

    let forged = Event::delta(u64::MAX, vec![session("forged", 1)], vec![]);
    env.append_raw(u64::MAX, agentwatch_ws::wire::to_vec(&forged).unwrap())
        .await;
    producer.publish_range(11..=20);
    flushed(&producer).await;
    let (seq, mut expected) = producer.state();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    until_seq(&node, seq).await;
    view.read_until(&mut client, seq).await;
    assert!(
        view.received.iter().all(|e| e.seq != u64::MAX),
        "{:?}",
        view.kinds()
    );
    assert_eq!(node.hub.sessions(), expected);
    let mut seen: Vec<_> = view.sessions.values().cloned().collect();
    seen.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(seen, expected);
    let late = start_node(&env, &url).await;
    until_seq(&late, seq).await;
    assert_eq!(late.hub.sessions(), expected);
    assert!(!view.sessions.contains_key("forged"));
    let refused = node.follower.stats().refused;
    assert_eq!(refused, 1, "{:?}", node.follower.stats());
}

/// A checkpoint holding bytes that are not JSON, the stream intact, the producer idle: a new
/// node skips it (and says so) and builds from the stream's first entry.
async fn a_corrupt_checkpoint_is_skipped_for_the_stream<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "corrupt");
    // No checkpoint from quiet time: the corrupt one stays until the producer repairs it.
    let producer = Producer::new(lagging_checkpoints(&env));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    env.corrupt_checkpoint(MACHINE).await;
    let node = start_node(&env, &url).await;
    converged("a node started on a corrupt checkpoint", &node, &producer).await;
    let skipped = node.follower.stats().unreadable_checkpoints;
    assert_eq!(skipped, 1, "{:?}", node.follower.stats());
}

/// A corrupt checkpoint and a stream trimmed so that it no longer starts at its first entry,
/// the producer idle: the node cannot build until the producer notices the checkpoint and
/// writes it again, within its verify interval.
async fn a_corrupt_checkpoint_is_written_again_by_the_producer<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "corrupt-trimmed");
    let producer = Producer::new(lagging_checkpoints(&env));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    // The checkpoint (at seq 16 or 17) is still continued by the stream: only its bytes
    // are wrong.
    env.trim(4).await;
    env.corrupt_checkpoint(MACHINE).await;
    let node = start_node(&env, &url).await;
    converged("a node started on a corrupt checkpoint", &node, &producer).await;
    assert!(
        sink_stats(&producer).checkpoint_repairs >= 1,
        "{:?}",
        sink_stats(&producer)
    );
}

/// The checkpoint is deleted and the stream no longer starts at its first entry, the producer
/// idle: a new node can build only once the producer notices the missing checkpoint and
/// writes it again.
async fn a_lost_checkpoint_is_written_again_by_the_producer<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "lost-checkpoint");
    let producer = Producer::new(lagging_checkpoints(&env));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    env.trim(4).await;
    env.delete_checkpoint(MACHINE).await;
    let node = start_node(&env, &url).await;
    converged("a node started without a checkpoint", &node, &producer).await;
    assert!(
        sink_stats(&producer).checkpoint_repairs >= 1,
        "{:?}",
        sink_stats(&producer)
    );
}

/// A client resumes with a position far older than the node's replay window (2 events)
/// while the stream still holds every event after it: it gets exactly the missed events,
/// read back from the stream, and no snapshot; with `since` alone too.
async fn a_resume_older_than_the_replay_window_is_served_from_the_stream<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "backfill");
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=10);
    flushed(&producer).await;
    let node = start_node_with(&env, &url, WsLayer::new().replay_window(2)).await;
    within("node ready", node.follower.ready()).await;
    until_seq(&node, 10).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &producer).await;
    drop(client);

    producer.publish_range(11..=30);
    flushed(&producer).await;
    until_seq(&node, 30).await;
    let mut client = connect_query(node.addr, &resume_query(&producer, 10)).await;
    let mut resumed = Vec::new();
    for _ in 11..=30 {
        resumed.push(next_event(&mut client).await);
    }
    assert_eq!(
        resumed,
        producer.published(11..=30),
        "exactly the missed events, no snapshot"
    );
    producer.publish(event(31));
    assert_eq!(
        next_event(&mut client).await.seq,
        31,
        "then the live stream"
    );
    until_seq(&node, 31).await;

    // A Go client's position: `since` alone, trusted by seq.
    let mut client = connect_query(node.addr, "?since=16").await;
    let mut resumed = Vec::new();
    for _ in 17..=31 {
        resumed.push(next_event(&mut client).await);
    }
    assert_eq!(resumed, producer.published(17..=31));
    assert_eq!(node.hub.stats().resumed, 2);
    let backfills = node.follower.stats().backfills;
    assert_eq!(backfills, 2, "{:?}", node.follower.stats());
}

engine_tests!(
    a_broker_restored_from_older_data_gets_the_producers_state_back,
    a_stream_trimmed_past_the_checkpoint_under_an_idle_producer_is_repaired,
    a_stream_deleted_under_an_idle_producer_is_resynced,
    a_forged_entry_is_refused_and_clients_keep_following,
    a_corrupt_checkpoint_is_skipped_for_the_stream,
    a_corrupt_checkpoint_is_written_again_by_the_producer,
    a_lost_checkpoint_is_written_again_by_the_producer,
    a_resume_older_than_the_replay_window_is_served_from_the_stream,
);
