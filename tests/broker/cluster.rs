//! The cluster's ordinary life and the faults the follower and producer always handled:
//! nodes serving the producer's events, resuming across nodes, outages, a trimmed position,
//! a lost stream, a full producer queue, a producer restart.

use super::*;

async fn every_node_serves_the_producers_state_and_events_byte_for_byte<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=25);
    flushed(&producer).await;

    // Two nodes now, a third after more events: it starts from a later checkpoint.
    let mut nodes = vec![start_node(&env, &url).await, start_node(&env, &url).await];
    producer.publish_range(26..=40);
    flushed(&producer).await;
    nodes.push(start_node(&env, &url).await);
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

async fn a_client_of_a_stopped_node_resumes_on_another_with_exactly_the_missed_events<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=12);
    let a = start_node(&env, &url).await;
    let b = start_node(&env, &url).await;
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

async fn a_broker_outage_loses_nothing_and_costs_no_snapshot<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let proxy = Proxy::start(&env).await;
    let producer = Producer::new(publisher(&env, &proxy.url));
    producer.publish_range(1..=10);
    flushed(&producer).await;
    let node = start_node(&env, &proxy.url).await;
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

async fn a_node_started_while_the_broker_is_down_builds_once_it_is_back<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    let proxy = Proxy::start(&env).await;
    proxy.cut();
    let node = start_node_unready(&env, &proxy.url).await;
    // A negative can only be watched for a while: a few of the follower's retries.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!node.follower.is_ready(), "ready without a broker");
    proxy.restore();
    within("node ready", node.follower.ready()).await;
    until_seq(&node, 20).await;
    assert_eq!(state(&node.hub), producer.state());
    assert_eq!(node.follower.stats().recoveries, 1);
}

async fn a_trimmed_position_gives_connected_clients_a_snapshot<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let proxy = Proxy::start(&env).await;
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=15);
    flushed(&producer).await;
    let serving = start_node(&env, &proxy.url).await;
    let mut client = connect(serving.addr).await;
    let mut view = View::default();
    view.read_until(&mut client, 15).await;

    // The node is cut off while the stream moves on and is trimmed past its position
    // (and past the checkpoint it could have used: it must wait for a newer one).
    proxy.cut();
    producer.publish_range(16..=45);
    flushed(&producer).await;
    env.trim(3).await;
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
    assert!(env.stream_len().await < 65);
    let late = start_node(&env, &url).await;
    until_seq(&late, 65).await;
    assert_eq!(state(&late.hub), producer.state());
}

async fn a_lost_stream_is_replaced_by_a_resync_from_the_producer<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let producer = Producer::new(publisher(&env, &url));
    producer.publish_range(1..=20);
    flushed(&producer).await;
    let node = start_node(&env, &url).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &producer).await;

    // The broker loses everything; the producer goes on.
    env.lose().await;
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
    let late = start_node(&env, &url).await;
    until_seq(&late, producer.state().0).await;
    assert_eq!(state(&late.hub), producer.state());
    assert_eq!(state(&node.hub), producer.state());
}

async fn a_full_producer_queue_drops_counts_and_resyncs_followers<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let proxy = Proxy::start(&env).await;
    let publisher = BrokerSink::builder(env.broker_via(&proxy.url))
        .buffer(4)
        .checkpoint_every(1_000)
        .spawn();
    let producer = Producer::new(publisher);
    // Fewer than the queue holds: nothing dropped yet.
    producer.publish_range(1..=3);
    flushed(&producer).await;
    let node = start_node(&env, &url).await;
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
    until_seq(&node, producer.state().0).await;
    assert_eq!(state(&node.hub), producer.state());
}

async fn a_producer_restart_replaces_its_machines_sessions_and_seqs_keep_rising<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker");
    let first = Producer::new(publisher(&env, &url));
    first.publish_range(1..=30);
    flushed(&first).await;
    let node = start_node(&env, &url).await;
    until_seq(&node, 30).await;
    let mut client = connect(node.addr).await;
    let mut view = View::default();
    view.read_to(&mut client, &first).await;
    // A clean stop: the machine leaves, its name is free at once.
    within("close", first.publisher.close()).await;
    drop(first);

    // A new producer process of the same machine starts over at seq 1 with a snapshot.
    let second = Producer::new(publisher(&env, &url));
    within("the name is free", second.publisher.started())
        .await
        .expect("the machine name is free after close");
    second.publish(Event::snapshot(1, vec![session("fresh", 1)]));
    second.publish_range(2..=9);
    flushed(&second).await;
    let seq = second.publisher.stats().last_seq;
    assert!(seq > 30, "seqs keep rising across the restart: {seq}");
    until_seq(&node, seq).await;
    // Sessions as the new producer has them.
    assert_eq!(node.hub.sessions(), second.state().1);
    // The connected client follows, without a gap, through snapshots at rising seqs.
    view.read_to(&mut client, &second).await;
    assert_eq!(
        view.received.iter().filter(|e| e.seq < 30).count(),
        0,
        "{:?}",
        view.kinds()
    );
}

/// Every timeout and interval configured at `Duration::MAX`: each is clamped to its
/// documented maximum (no deadline overflows), and producer and follower work as usual.
async fn extreme_timeouts_and_intervals_neither_panic_nor_stall<E: Engine>() {
    let Some(url) = E::shared() else {
        return;
    };
    let env = E::stream(&url, "broker-extreme");
    let broker = || E::longest_timeouts(env.broker());
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

engine_tests!(
    every_node_serves_the_producers_state_and_events_byte_for_byte,
    a_client_of_a_stopped_node_resumes_on_another_with_exactly_the_missed_events,
    a_broker_outage_loses_nothing_and_costs_no_snapshot,
    a_node_started_while_the_broker_is_down_builds_once_it_is_back,
    a_trimmed_position_gives_connected_clients_a_snapshot,
    a_lost_stream_is_replaced_by_a_resync_from_the_producer,
    a_full_producer_queue_drops_counts_and_resyncs_followers,
    a_producer_restart_replaces_its_machines_sessions_and_seqs_keep_rising,
    extreme_timeouts_and_intervals_neither_panic_nor_stall,
);
