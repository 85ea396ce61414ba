//! Micro-benchmarks of the hot path: encoding an event, building a snapshot, and fanning one
//! event out to 1 000 connected clients.
//!
//! ```sh
//! cargo bench --bench hot_path
//! ```
//!
//! The fan-out benchmark is end to end inside one process: 1 000 real WebSocket clients
//! (tokio-tungstenite) on 127.0.0.1 read every event; one iteration is "publish one event and
//! wait until every client has it", measured over batches of events.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, EventSink, SessionState, WsLayer, wire};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;

#[path = "support/session.rs"]
mod support;

fn session(i: usize) -> SessionState {
    support::realistic_session(i)
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let delta = Event::delta(42, vec![session(1)], vec!["gone".into()]);
    let len = wire::to_vec(&delta).map(|v| v.len()).unwrap_or(0);
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("delta_1_session/go_exact", |b| {
        b.iter(|| wire::to_vec(black_box(&delta)))
    });
    group.bench_function("delta_1_session/serde_json_default", |b| {
        b.iter(|| serde_json::to_vec(black_box(&delta)))
    });
    let snapshot = Event::snapshot(7, (0..1000).map(session).collect());
    let len = wire::to_vec(&snapshot).map(|v| v.len()).unwrap_or(0);
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("snapshot_1000_sessions/go_exact", |b| {
        b.iter(|| wire::to_vec(black_box(&snapshot)))
    });
    group.finish();

    let mut group = c.benchmark_group("decode");
    let bytes = wire::to_vec(&delta).unwrap_or_default();
    group.bench_function("delta_1_session", |b| {
        b.iter(|| Event::from_json(black_box(&bytes)))
    });
    group.finish();
}

fn snapshot_build(c: &mut Criterion) {
    let (_router, publisher) = WsLayer::new().build::<()>("/ws");
    publisher
        .publish(Event::delta(1, (0..1000).map(session).collect(), vec![]))
        .unwrap_or_default();
    let mut group = c.benchmark_group("snapshot");
    group.bench_function("state_1000_sessions/copy", |b| {
        b.iter(|| black_box(publisher.sessions()))
    });
    group.bench_function("state_1000_sessions/copy_and_encode", |b| {
        b.iter(|| wire::to_vec(&Event::snapshot(publisher.seq(), publisher.sessions())))
    });
    group.bench_function("publish_delta_1_session", |b| {
        let mut seq = 1;
        b.iter_batched(
            || {
                seq += 1;
                Event::delta(seq, vec![session(seq as usize % 1000)], vec![])
            },
            |event| publisher.publish(event),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

const CLIENTS: usize = 1000;

fn fan_out(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let ws = WsLayer::new().rate_limit(None).send_buffer(1 << 16);
    let (ws_router, hub) = ws.clone().build("/ws");
    let received = Arc::new(AtomicU64::new(0));
    let _guard = runtime.enter();
    let addr: SocketAddr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().merge(ws_router);
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        addr
    });
    runtime.block_on(async {
        for _ in 0..CLIENTS {
            let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .expect("connect");
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = client.next().await {
                    if msg.is_text() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while received.load(Ordering::Relaxed) < CLIENTS as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let mut seq = 0u64;
    let padding = "x".repeat(400);
    let mut event = move || {
        seq += 1;
        let mut s = session(seq as usize % 100);
        s.model = padding.clone();
        Event::delta(seq, vec![s], vec![])
    };
    let mut group = c.benchmark_group("fanout_1000_clients");
    group.throughput(Throughput::Elements(CLIENTS as u64));
    group.sample_size(20);
    group.bench_function("publish_and_deliver_512B", |b| {
        b.iter_custom(|iters| {
            let events: Vec<Event> = (0..iters).map(|_| event()).collect();
            let target = received.load(Ordering::Relaxed) + iters * CLIENTS as u64;
            let start = Instant::now();
            for e in &events {
                let _ = hub.handle_event(e);
            }
            runtime.block_on(async {
                while received.load(Ordering::Relaxed) < target {
                    tokio::task::yield_now().await;
                }
            });
            start.elapsed()
        })
    });
    group.bench_function("handle_event_only_512B", |b| {
        b.iter_custom(|iters| {
            let events: Vec<Event> = (0..iters).map(|_| event()).collect();
            let target = received.load(Ordering::Relaxed) + iters * CLIENTS as u64;
            let start = Instant::now();
            for e in &events {
                let _ = hub.handle_event(e);
            }
            let elapsed = start.elapsed();
            // Let the clients drain before the next sample, outside the measurement.
            runtime.block_on(async {
                while received.load(Ordering::Relaxed) < target {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, encoding, snapshot_build, fan_out);
criterion_main!(benches);
