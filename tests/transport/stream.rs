//! The core contract over real sockets: snapshot first, every event once and in order, slow
//! clients evicted, heartbeat, inbound limits, stop, and no leaks.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, EventSink, EventType, Publisher, SessionState, WsLayer};
use axum::Router;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn session(id: &str, messages: i64) -> SessionState {
    SessionState {
        id: id.into(),
        source: "claude-code".into(),
        model: "claude-opus-4-1".into(),
        message_count: messages,
        ..Default::default()
    }
}

/// A layer with the rate limit off: these tests open many connections from one IP.
fn layer() -> WsLayer {
    WsLayer::new().rate_limit(None)
}

async fn start(ws: &WsLayer) -> (Publisher, std::net::SocketAddr) {
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    (hub, addr)
}

fn publish(hub: &Publisher, event: &Event) {
    hub.handle_event(event).unwrap();
}

#[tokio::test]
async fn snapshot_first_then_live_events_in_order() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    publish(
        &hub,
        &Event::delta(1, vec![session("a", 1), session("b", 2)], vec![]),
    );
    publish(&hub, &Event::delta(2, vec![session("a", 3)], vec![]));

    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!(snapshot.kind, EventType::Snapshot);
    assert_eq!(snapshot.seq, 2);
    assert_eq!(snapshot.sessions, vec![session("a", 3), session("b", 2)]);
    eventually("client registered", || hub.client_count() == 1).await;

    publish(&hub, &Event::delta(3, vec![], vec!["b".into()]));
    let lifecycle = agentwatch_ws::LifecycleEvent {
        session_id: "a".into(),
        ..Default::default()
    };
    publish(&hub, &Event::lifecycle(4, lifecycle));
    publish(&hub, &Event::health(5, Default::default()));
    let kinds: Vec<(u64, EventType)> = [
        next_event(&mut client).await,
        next_event(&mut client).await,
        next_event(&mut client).await,
    ]
    .into_iter()
    .map(|e| (e.seq, e.kind))
    .collect();
    assert_eq!(
        kinds,
        [
            (3, EventType::Delta),
            (4, EventType::Lifecycle),
            (5, EventType::Health)
        ]
    );
    let stats = hub.stats();
    assert_eq!(stats.events_published, 5);
    assert_eq!(stats.accepted, 1);
}

#[tokio::test]
async fn a_seq_that_goes_backwards_is_replaced_by_a_snapshot_then_the_stream_goes_on() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    eventually("client registered", || hub.client_count() == 1).await;
    // A producer restart: seq starts again from 1. The events before it arrive in order (or
    // those not yet written are dropped: the snapshot holds them); the client then gets the
    // state as a snapshot, and the events that snapshot does not hold.
    let published = [10, 11, 1, 2, 12];
    for seq in published {
        hub.handle_event(&Event::delta(seq, vec![], vec![]))
            .unwrap();
    }
    let mut seen = Vec::new();
    let snapshot = loop {
        let event = next_event(&mut client).await;
        if event.kind == EventType::Snapshot {
            break event.seq;
        }
        seen.push(event.seq);
    };
    assert!([10, 11].starts_with(&seen), "before the restart: {seen:?}");
    let after: Vec<u64> = published[2..]
        .iter()
        .copied()
        .skip_while(|&seq| seq != snapshot)
        .skip(1)
        .collect();
    for expected in after {
        assert_eq!(next_event(&mut client).await.seq, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_no_duplicate_while_clients_connect_during_a_full_speed_stream() {
    const EVENTS: u64 = 20_000;
    const CLIENTS: usize = 60;
    // Big enough that nobody is evicted: this test is about the hand-over, not about lag.
    // The test clients decode every event in a debug build, on two cores shared with the
    // other tests: give them all the time they need, this test is not about slow clients.
    let ws = layer()
        .send_buffer(EVENTS as usize + 16)
        .write_timeout(Duration::from_secs(120));
    let (hub, addr) = start(&ws).await;
    let sink = Arc::new(hub.clone());

    let started = Arc::new(AtomicBool::new(false));
    let producer = {
        let sink = sink.clone();
        let started = started.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            started.store(true, Ordering::SeqCst);
            for seq in 1..=EVENTS {
                let updates = (0..1 + rng.below(3))
                    .map(|_| session(&format!("s{}", rng.below(200)), seq as i64))
                    .collect();
                let removed = if rng.below(10) == 0 {
                    vec![format!("s{}", rng.below(200))]
                } else {
                    vec![]
                };
                sink.handle_event(&Event::delta(seq, updates, removed))
                    .unwrap();
                if seq % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let delay = Duration::from_micros(Rng(i as u64 * 7919 + 1).below(400_000));
        clients.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut client = connect(addr).await;
            let mut state = Rebuilt::default();
            state.apply(next_event(&mut client).await)?;
            let snapshot_seq = state.seq;
            while state.seq < EVENTS {
                state.apply(next_event(&mut client).await)?;
            }
            Ok::<_, String>((snapshot_seq, state))
        }));
    }
    within_for(Duration::from_secs(120), "producer", async {
        while !producer.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    producer.join().unwrap();
    assert!(started.load(Ordering::SeqCst));

    let expected: HashMap<String, SessionState> = hub
        .sessions()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let mut mid_stream = 0;
    for client in clients {
        let (snapshot_seq, state) = within_for(Duration::from_secs(120), "client", client)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("client saw a broken stream: {e}"));
        if snapshot_seq > 0 && snapshot_seq < EVENTS {
            mid_stream += 1;
        }
        assert_eq!(state.seq, EVENTS);
        assert_eq!(
            state.sessions, expected,
            "rebuilt state differs from the store"
        );
    }
    // The property is only meaningful if connects really raced the stream.
    assert!(
        mid_stream >= CLIENTS / 4,
        "only {mid_stream} clients connected mid-stream"
    );
    assert_eq!(hub.stats().evicted, 0);
}

#[tokio::test]
async fn one_encoding_per_event_whatever_the_number_of_clients() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = connect(addr).await;
        next_event(&mut c).await;
        clients.push(c);
    }
    eventually("clients registered", || hub.client_count() == 5).await;
    let event = Event::delta(1, vec![session("x", 1)], vec![]);
    hub.handle_event(&event).unwrap();
    let expected = event.to_json().unwrap();
    for c in &mut clients {
        let msg = within("event", c.next()).await.unwrap().unwrap();
        assert_eq!(msg.into_text().unwrap().as_str(), expected);
    }
    eventually("sent counted", || hub.stats().events_sent == 10).await; // 5 snapshots + 5 events
    let stats = hub.stats();
    assert_eq!(stats.events_published, 1);
    assert_eq!(stats.snapshots, 5);
    // Counted where frames are made: an event encoded per client would count 5 here. The
    // five clients connected at the same store state, so they share one snapshot encoding.
    assert_eq!(
        stats.encodings, 2,
        "one encoding for the shared snapshot and one for the event, whatever the number of clients"
    );
}

fn big_event(seq: u64) -> Event {
    let mut s = session("big", seq as i64);
    s.working_dir = "x".repeat(64 * 1024);
    Event::delta(seq, vec![s], vec![])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_event_never_waits_and_a_stuck_client_is_evicted_promptly() {
    // A long write timeout: the eviction must come from the lag bound, not the timeout.
    let ws = layer()
        .send_buffer(32)
        .write_timeout(Duration::from_secs(60));
    let (hub, addr) = start(&ws).await;
    let mut healthy = connect(addr).await;
    next_event(&mut healthy).await;
    let stuck = connect_small_buffer(addr).await; // never read from here on
    eventually("clients registered", || hub.client_count() == 2).await;

    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < 400 {
            last = next_event(&mut healthy).await.seq;
        }
        (last, healthy) // keep the connection open until the test ends
    });
    let mut slowest_publish = Duration::ZERO;
    for seq in 1..=400 {
        let t = Instant::now();
        hub.handle_event(&big_event(seq)).unwrap();
        slowest_publish = slowest_publish.max(t.elapsed());
        // Pace the producer so the healthy client (decoding 64 KiB events in a debug build)
        // keeps up; the stuck one cannot, whatever the pace.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        slowest_publish < Duration::from_secs(1),
        "handle_event waited on a socket: {slowest_publish:?}"
    );
    eventually("stuck client evicted", || hub.stats().evicted_lagging == 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "eviction must not wait for the 60 s write timeout"
    );
    eventually("stuck client gone", || hub.client_count() == 1).await;
    assert_eq!(
        hub.stats().evicted_lagging,
        1,
        "only the stuck client is evicted"
    );
    let (last, _healthy) = within("healthy reader", reader).await.unwrap();
    assert_eq!(last, 400);
    assert_eq!(hub.stats().evicted_write_timeout, 0);
    drop(stuck);
}

/// On a current-thread runtime, publishing without yielding lets the queue overflow while the
/// client's socket is perfectly writable: the server must say why it closes.
#[tokio::test(flavor = "current_thread")]
async fn a_lagging_client_with_a_writable_socket_gets_close_1013() {
    let ws = layer().send_buffer(8);
    let (hub, addr) = start(&ws).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    eventually("client registered", || hub.client_count() == 1).await;
    for seq in 1..=50 {
        hub.handle_event(&Event::delta(seq, vec![], vec![]))
            .unwrap();
    }
    let frame = expect_close(&mut client)
        .await
        .expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Again);
    assert!(!frame.reason.is_empty());
    eventually("client gone", || hub.client_count() == 0).await;
    assert_eq!(hub.stats().evicted_lagging, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_socket_stops_accepting_writes_is_evicted_after_the_write_timeout() {
    let ws = layer()
        .send_buffer(1_000_000)
        .write_timeout(Duration::from_millis(300));
    let (hub, addr) = start(&ws).await;
    let _stuck = connect_small_buffer(addr).await;
    eventually("client registered", || hub.client_count() == 1).await;
    for seq in 1..=300 {
        hub.handle_event(&big_event(seq)).unwrap();
    }
    eventually("write timeout eviction", || {
        hub.stats().evicted_write_timeout == 1
    })
    .await;
    eventually("client gone", || hub.client_count() == 0).await;
    assert_eq!(hub.stats().evicted_lagging, 0);
}

/// The write timeout bounds how long the socket refuses bytes, not how long a run of queued
/// frames takes: a client reading 64 KiB events slowly but steadily moves
/// the write along and stays, for far longer than the timeout; once it stops reading it is
/// evicted.
///
/// The pace leaves room: the server's socket becomes writable again only once the kernel
/// has sent a good part of its send buffer (up to a few MiB on loopback), so at 3 MB/s a
/// steady reader can leave it refusing bytes for about half a second, more on a loaded
/// machine; the timeout is 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_outlasts_the_write_timeout_and_a_stopped_one_does_not() {
    const EVENTS: u64 = 200;
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    let ws = layer().send_buffer(1_000).write_timeout(WRITE_TIMEOUT);
    let (hub, addr) = start(&ws).await;
    let mut client = connect_small_buffer(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    eventually("client registered", || hub.client_count() == 1).await;

    // About 13 MB at once: far more than the kernel buffers, so the server's writes stall
    // and move only as fast as the client reads.
    for seq in 1..=EVENTS {
        hub.handle_event(&big_event(seq)).unwrap();
    }
    let started = Instant::now();
    for seq in 1..=EVENTS {
        assert_eq!(
            next_event(&mut client).await.seq,
            seq,
            "every event, in order"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    assert!(
        took > 2 * WRITE_TIMEOUT,
        "the reading must outlast the write timeout for the test to mean anything: {took:?}"
    );
    assert_eq!(
        hub.stats().evicted_write_timeout,
        0,
        "a moving write is not stuck"
    );
    assert_eq!(hub.client_count(), 1);

    // Now it stops reading.
    for seq in EVENTS + 1..=EVENTS + 100 {
        hub.handle_event(&big_event(seq)).unwrap();
    }
    eventually("write timeout eviction", || {
        hub.stats().evicted_write_timeout == 1
    })
    .await;
    eventually("client gone", || hub.client_count() == 0).await;
    drop(client);
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_two_heartbeats_and_a_live_one_is_kept() {
    let ws = layer().heartbeat(Duration::from_millis(100));
    let (hub, addr) = start(&ws).await;

    // Answers pings (tungstenite replies while the client reads).
    let mut live = connect(addr).await;
    next_event(&mut live).await;
    let live_task = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(msg)) = live.next().await {
            if msg.is_ping() {
                pings += 1;
            }
        }
        pings
    });
    // Completes the handshake, then never reads or answers. Timed from before it connects:
    // its two heartbeat intervals start no earlier than that.
    let started = Instant::now();
    let silent = connect_small_buffer(addr).await;
    eventually("both registered", || hub.client_count() == 2).await;
    eventually("silent peer dropped", || {
        hub.stats().heartbeat_timeouts == 1
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub.client_count(), 1, "the live client must stay");
    assert_eq!(hub.stats().heartbeat_timeouts, 1);
    hub.stop();
    let pings = within("live client ends", live_task).await.unwrap();
    assert!(pings >= 3, "live client saw {pings} pings");
    drop(silent);
}

/// Liveness is a pong echoing one of our pings (`conn/inbound.rs`): a client that sends
/// pings, pongs guessing what ours carry and messages but never reads a byte proves nothing,
/// and is dropped after two heartbeats all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_and_messages_from_a_client_that_never_reads_do_not_keep_it_alive() {
    use tokio::io::AsyncWriteExt;
    let ws = layer().heartbeat(Duration::from_millis(100));
    let (hub, addr) = start(&ws).await;
    // Timed from before it connects: its two heartbeat intervals start no earlier than that
    // (timed from after the registration was seen, the drop could come a poll early).
    let started = Instant::now();
    let stream = raw_connect(addr, Some(4096)).await;
    eventually("client registered", || hub.client_count() == 1).await;
    let (_never_read, mut tx) = stream.into_split();
    let mut chatter = masked_frame(9, b"are you there");
    chatter.extend(masked_frame(10, &1u64.to_be_bytes()));
    chatter.extend(masked_frame(1, b"still here"));
    let sender = tokio::spawn(async move {
        // About 2 KB/s: far inside the inbound budget.
        while started.elapsed() < Duration::from_secs(5) {
            if tx.write_all(&chatter).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    eventually("dropped by the heartbeat", || {
        hub.stats().heartbeat_timeouts == 1
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(hub.stats().inbound_floods, 0);
    eventually("client gone", || hub.client_count() == 0).await;
    sender.abort();
}

/// The connection polls its read side and timers only when they fire (`conn/sources.rs`): a
/// lost wake-up there would starve reads under a steady stream and show up as a heartbeat
/// timeout, a missing event or a close that is never answered.
///
/// Driven by conditions, not by time: the stream runs until the client has seen
/// [`MIN_PINGS`] heartbeats, [`MIN_EVENTS`] events and sent all its noise (one message per
/// event received), however slow the machine; the producer keeps at most [`IN_FLIGHT`]
/// events ahead of the client, so a starved client is never evicted for lagging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_traffic_heartbeats_and_a_steady_stream_share_one_connection() {
    const MIN_PINGS: u32 = 4;
    const MIN_EVENTS: u64 = 300;
    const NOISE: usize = 300;
    const IN_FLIGHT: usize = 16;
    // A pong is due within two intervals: 500 ms, ample for a loaded machine.
    let ws = layer().heartbeat(Duration::from_millis(250));
    let (hub, addr) = start(&ws).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    eventually("client registered", || hub.client_count() == 1).await;
    let (mut tx, mut rx) = client.split();

    // One noise message per event received, until NOISE are sent.
    let (noise_tx, mut noise_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let noise_sent = Arc::new(AtomicUsize::new(0));
    let chatter = {
        let noise_sent = noise_sent.clone();
        tokio::spawn(async move {
            for i in 0..NOISE {
                if noise_rx.recv().await.is_none() {
                    break;
                }
                tx.send(Message::text(format!("noise {i}"))).await?;
                noise_sent.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, tokio_tungstenite::tungstenite::Error>(tx)
        })
    };
    // Publishes while it may (a permit per event, given back as the client reads one), until
    // the permits are closed; returns the last seq published.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let producer = {
        let (hub, in_flight) = (hub.clone(), in_flight.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0;
            while let Ok(permit) = in_flight.acquire().await {
                permit.forget();
                tick.tick().await;
                seq += 1;
                publish(
                    &hub,
                    &Event::delta(seq, vec![session("a", seq as i64)], vec![]),
                );
            }
            seq
        })
    };

    let (mut next, mut pings) = (1, 0);
    let mut read_one = async |next: &mut u64, pings: &mut u32| match rx.next().await {
        Some(Ok(Message::Text(text))) => {
            let event = Event::from_json(text.as_bytes()).expect("decodable event");
            assert_eq!(event.seq, *next, "events arrive once and in order");
            *next += 1;
            in_flight.add_permits(1);
            let _ = noise_tx.send(());
        }
        Some(Ok(Message::Ping(_))) => *pings += 1,
        Some(Ok(_)) => {}
        other => panic!("stream broke mid-test: {other:?}"),
    };
    within("heartbeats, events and noise", async {
        while pings < MIN_PINGS || next <= MIN_EVENTS || noise_sent.load(Ordering::SeqCst) < NOISE {
            read_one(&mut next, &mut pings).await;
        }
    })
    .await;
    in_flight.close();
    let last = within("producer", producer).await.unwrap();
    within("every event", async {
        while next <= last {
            read_one(&mut next, &mut pings).await;
        }
    })
    .await;
    let tx = within("chatter", chatter).await.unwrap().expect("sends");
    assert_eq!(
        hub.stats().heartbeat_timeouts,
        0,
        "pongs and messages were read"
    );
    assert_eq!(hub.client_count(), 1);

    let mut client = rx.reunite(tx).expect("same connection");
    within("close", client.close(None)).await.unwrap();
    within("close reply", async {
        while let Some(Ok(msg)) = client.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
    eventually("client gone", || hub.client_count() == 0).await;
}

#[tokio::test]
async fn inbound_messages_are_discarded_and_oversized_ones_close_with_1009() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let mut client = connect(addr).await;
    next_event(&mut client).await;
    send_text(&mut client, "hello server").await;
    within("send", client.send(Message::binary(vec![1u8; 100])))
        .await
        .unwrap();
    eventually("client registered", || hub.client_count() == 1).await;
    hub.handle_event(&Event::delta(1, vec![], vec![])).unwrap();
    assert_eq!(
        next_event(&mut client).await.seq,
        1,
        "still streaming after inbound data"
    );

    send_text(&mut client, &"x".repeat(5 * 1024)).await;
    let frame = expect_close(&mut client).await.expect("close frame");
    assert_eq!(frame.code, CloseCode::Size);
    eventually("client gone", || hub.client_count() == 0).await;
}

/// Events are written pre-framed, straight to the socket, while tungstenite frames the pongs
/// the server owes into a side buffer: a pong must go out between two whole frames, never
/// inside one, even when every event takes several partial writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_between_whole_frames_during_a_stream_of_large_events() {
    const EVENTS: u64 = 200;
    let ws = layer().send_buffer(EVENTS as usize);
    let (hub, addr) = start(&ws).await;
    // A small receive buffer: every 64 KiB event takes the server many partial writes, and
    // the pings arrive while a frame is half written.
    let mut client = connect_small_buffer(addr).await;
    next_event(&mut client).await;
    eventually("client registered", || hub.client_count() == 1).await;

    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for seq in 1..=EVENTS {
                hub.handle_event(&big_event(seq)).unwrap();
                if seq % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut pings_sent = 0u32;
    let mut pongs = Vec::new();
    let mut next_seq = 1;
    while next_seq <= EVENTS {
        if pings_sent < 50 && next_seq % 4 == 0 {
            pings_sent += 1;
            let payload = pings_sent.to_be_bytes().to_vec();
            within("ping", client.send(Message::Ping(payload.into())))
                .await
                .unwrap();
        }
        match within("next message", client.next()).await {
            Some(Ok(Message::Text(text))) => {
                let event = Event::from_json(text.as_bytes()).unwrap();
                assert_eq!(event.seq, next_seq, "events in order, none lost");
                next_seq += 1;
            }
            Some(Ok(Message::Pong(payload))) => pongs.push(payload),
            other => panic!("unexpected {other:?}"),
        }
    }
    within("publisher", publisher).await.unwrap();
    // Pongs still on their way come after the last event.
    while pongs.len() < pings_sent as usize {
        match within("pong", client.next()).await {
            Some(Ok(Message::Pong(payload))) => pongs.push(payload),
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<_> = (1..=pings_sent).map(|n| n.to_be_bytes().to_vec()).collect();
    let got: Vec<_> = pongs.iter().map(|p| p.to_vec()).collect();
    assert_eq!(got, expected, "each ping answered once, in order");
    assert!(pings_sent >= 40);
    assert_eq!(
        hub.stats().events_sent,
        EVENTS + 1,
        "snapshot and every event"
    );
}

/// Behind a TLS-like stream hyper keeps the upgraded connection boxed: the stream, the
/// heartbeat, pongs and both closing handshakes must work the same there.
#[tokio::test]
async fn a_connection_behind_a_wrapped_stream_works_the_same() {
    let ws = layer()
        .heartbeat(Duration::from_millis(100))
        .send_buffer(128);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve_wrapped(Router::new().merge(router)).await;

    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    eventually("client registered", || hub.client_count() == 1).await;
    for seq in 1..=100 {
        publish(
            &hub,
            &Event::delta(seq, vec![session("a", seq as i64)], vec![]),
        );
    }
    within("ping", client.send(Message::Ping(b"p".to_vec().into())))
        .await
        .unwrap();
    let (mut seqs, mut pongs, mut pings) = (Vec::new(), 0, 0);
    while seqs.len() < 100 || pongs == 0 || pings < 2 {
        match within("next message", client.next()).await {
            Some(Ok(Message::Text(text))) => {
                seqs.push(Event::from_json(text.as_bytes()).unwrap().seq)
            }
            Some(Ok(Message::Pong(payload))) if payload.as_ref() == b"p" => pongs += 1,
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!(hub.stats().heartbeat_timeouts, 0);

    // The client closes: answered.
    close_and_expect_reply(client).await;
    eventually("client gone", || hub.client_count() == 0).await;

    // The server closes: 1001 on stop.
    let mut client = connect(addr).await;
    next_event(&mut client).await;
    eventually("client registered", || hub.client_count() == 1).await;
    hub.stop();
    let frame = expect_close(&mut client).await.expect("close frame");
    assert_eq!(frame.code, CloseCode::Away);
    eventually("task ended", || hub.stats().connection_tasks == 0).await;
}

/// A client may send frames in the same segment as its handshake: hyper reads them along
/// with the request, and they must reach the connection, not be lost with hyper's buffer.
#[tokio::test]
async fn a_frame_sent_along_with_the_handshake_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let mut stream = within("tcp connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    let mut request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in upgrade_headers(&[]) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    // A masked ping carrying "hi", as a client must send it.
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x89, 0x80 | 2]);
    bytes.extend_from_slice(&mask);
    bytes.extend_from_slice(&[b'h' ^ mask[0], b'i' ^ mask[1]]);
    within("write", stream.write_all(&bytes)).await.unwrap();

    // The response head, byte by byte, so that no frame is read with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(within("response", stream.read_u8()).await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "accept key of RFC 6455's example: {head}"
    );
    let mut client =
        tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    let (mut snapshot, mut pong) = (false, false);
    while !(snapshot && pong) {
        match within("next message", client.next()).await {
            Some(Ok(Message::Text(text))) => {
                let event = Event::from_json(text.as_bytes()).unwrap();
                assert_eq!(event.kind, EventType::Snapshot);
                snapshot = true;
            }
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(payload.as_ref(), b"hi");
                pong = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(hub.client_count(), 1);
}

#[tokio::test]
async fn a_client_close_is_answered_and_cleaned_up() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let mut client = connect(addr).await;
    next_event(&mut client).await;
    eventually("client registered", || hub.client_count() == 1).await;
    close_and_expect_reply(client).await;
    eventually("client gone", || hub.client_count() == 0).await;
    assert_eq!(hub.stats().connection_tasks, 0);
}

#[tokio::test]
async fn stop_closes_every_client_with_1001_and_refuses_new_ones() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = connect(addr).await;
        next_event(&mut c).await;
        clients.push(c);
    }
    eventually("clients registered", || hub.client_count() == 3).await;
    hub.stop();
    for c in &mut clients {
        let frame = expect_close(c).await.expect("close frame");
        assert_eq!(frame.code, CloseCode::Away);
    }
    eventually("all gone", || hub.client_count() == 0).await;
    let (status, _, body) = http_get(addr, "/ws", &upgrade_headers(&[])).await;
    assert_eq!(status, 503);
    assert!(body.contains("stopping"), "body: {body}");
    assert_eq!(hub.stats().rejected.stopped, 1);
    // Events after stop are accepted and go nowhere.
    hub.handle_event(&Event::delta(1, vec![], vec![])).unwrap();
}

#[tokio::test]
async fn a_plain_get_is_426_with_a_clear_body() {
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    let (status, _, body) = http_get(addr, "/ws", &[]).await;
    assert_eq!(status, 426);
    assert!(body.to_lowercase().contains("upgrade"), "body: {body}");
    assert_eq!(hub.stats().rejected.not_upgrade, 1);
    assert_eq!(hub.client_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_disconnect_cycles_leave_nothing_behind() {
    const CYCLES: usize = 10_000;
    const PARALLEL: usize = 50;
    let ws = layer();
    let (hub, addr) = start(&ws).await;
    hub.handle_event(&Event::delta(1, vec![session("a", 1)], vec![]))
        .unwrap();
    // Warm up, so lazily started runtime machinery is not counted as a leak.
    drop(connect(addr).await);
    eventually("warm-up client gone", || hub.client_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    let mut workers = Vec::new();
    for w in 0..PARALLEL {
        workers.push(tokio::spawn(async move {
            for i in 0..CYCLES / PARALLEL {
                let mut client = connect(addr).await;
                match (w + i) % 3 {
                    // Abrupt TCP drop, without reading anything.
                    0 => drop(client),
                    // Read the snapshot, then drop.
                    1 => {
                        next_event(&mut client).await;
                        drop(client);
                    }
                    // Clean close handshake.
                    _ => {
                        next_event(&mut client).await;
                        let _ = client.close(None).await;
                        while let Some(Ok(_)) = client.next().await {}
                    }
                }
            }
        }));
    }
    for w in workers {
        within_for(Duration::from_secs(300), "connect cycles", w)
            .await
            .unwrap();
    }
    eventually("every client cleaned up", || hub.client_count() == 0).await;
    eventually("every connection task ended", || {
        hub.stats().connection_tasks == 0
    })
    .await;
    let handle = tokio::runtime::Handle::current();
    eventually("no task left running", || {
        handle.metrics().num_alive_tasks() <= tasks_before
    })
    .await;
    let stats = hub.stats();
    assert_eq!(stats.accepted, CYCLES as u64 + 1);
    assert_eq!(stats.disconnected, CYCLES as u64 + 1);
}
