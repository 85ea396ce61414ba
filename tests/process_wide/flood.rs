//! No client can grow the server's memory through what it sends.
//!
//! For 10 s, over real sockets: clients that never read and send control and data frames as
//! fast as they can (pings, unsolicited pongs, data, endless fragments, frames after their
//! own close), reconnecting whenever the server drops them, and clients that read 1 MB/s
//! while pinging as fast as they can. Meanwhile a well-behaved client must receive every
//! event in order. The server runs in this process (no other test runs beside it: it holds
//! [`serial`](crate::serial), and its flooding clients are raw sockets with a few KiB of
//! buffers), so its memory is this process's resident set: its growth over the idle baseline must stay under
//! [`RSS_BOUND`]. Before the fix the never-reading pinger alone took a server from 6 MB to
//! 1.7 GB in 10 s.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, EventSink, EventType, SessionState, WsLayer};
use axum::Router;
use common::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(10);
/// The documented bound on the server's memory growth under the flood.
const RSS_BOUND: u64 = 16 * 1024 * 1024;

/// About 64 KiB of frames of one flood pattern, sent over and over.
fn flood_chunk(pattern: usize) -> Vec<u8> {
    let mut chunk = Vec::new();
    match pattern {
        // Pings with the largest payload a control frame may carry.
        0 => {
            while chunk.len() < 64 * 1024 {
                chunk.extend(masked_frame(9, &[b'p'; 125]));
            }
        }
        // Unsolicited pongs, text and binary messages, and a message that never ends:
        // empty non-final continuation frames, forever.
        1 => {
            chunk.extend(masked_frame(10, b"unsolicited"));
            chunk.extend(masked_frame(1, &[b't'; 100]));
            chunk.extend(masked_frame(2, &[7; 1000]));
            let mut first = masked_frame(1, b"part");
            first[0] = 0x01; // text, not final
            chunk.extend(first);
            while chunk.len() < 64 * 1024 {
                let mut more = masked_frame(0, b"");
                more[0] = 0x00; // continuation, not final
                chunk.extend(more);
            }
        }
        // Frames after the client's own close.
        _ => {
            chunk.extend(masked_frame(8, &1000u16.to_be_bytes()));
            while chunk.len() < 64 * 1024 {
                chunk.extend(masked_frame(9, b"after close"));
                chunk.extend(masked_frame(8, &1000u16.to_be_bytes()));
            }
        }
    }
    chunk
}

/// Connects again and again until `until`, and floods each connection without ever reading
/// from it. Returns how many connections it made.
async fn never_reading_flooder(addr: SocketAddr, until: Instant, pattern: usize) -> u64 {
    let chunk = flood_chunk(pattern);
    let mut connections = 0;
    while Instant::now() < until {
        let stream = raw_connect(addr, Some(4096)).await;
        connections += 1;
        let (_unread, mut tx) = stream.into_split();
        while Instant::now() < until {
            // A write that blocks past the end of the flood means the server stopped reading
            // (and TCP holds the client back): good, nothing more to do here.
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, tx.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                // The server dropped the connection.
                Ok(Err(_)) => break,
                Err(_) => return connections,
            }
        }
    }
    connections
}

/// Connects again and again until `until`; on each connection pings as fast as it can while
/// reading at most 1 MB/s. Returns how many connections it made and the close frames it
/// read (code, reason).
async fn slow_reading_pinger(addr: SocketAddr, until: Instant) -> (u64, Vec<(u16, String)>) {
    let chunk = flood_chunk(0);
    let mut closes = Vec::new();
    let mut connections = 0;
    while Instant::now() < until {
        let stream = raw_connect(addr, Some(16 * 1024)).await;
        connections += 1;
        let (mut rx, mut tx) = stream.into_split();
        let stop = Arc::new(AtomicBool::new(false));
        let pinger = tokio::spawn({
            let (chunk, stop) = (chunk.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    let left = until.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, tx.write_all(&chunk)).await {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
            }
        });
        // 10 KiB every 10 ms: 1 MB/s.
        let mut buf = Vec::new();
        let mut close = None;
        'read: while Instant::now() < until {
            let mut block = [0u8; 10 * 1024];
            let n = match tokio::time::timeout(Duration::from_secs(1), rx.read(&mut block)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            buf.extend_from_slice(&block[..n]);
            for frame in take_frames(&mut buf) {
                if frame.opcode == 8 {
                    close = Some(frame.close_code_and_reason());
                    break 'read;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::SeqCst);
        pinger.abort();
        let _ = pinger.await;
        closes.extend(close);
    }
    (connections, closes)
}

fn session(seq: u64) -> SessionState {
    SessionState {
        id: format!("s{}", seq % 10),
        source: "claude-code".into(),
        message_count: seq as i64,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_clients_cannot_grow_server_memory_and_a_good_client_gets_every_event() {
    let _serial = crate::serial().await;
    // Defaults but the rate limit (the flooders reconnect hundreds of times).
    let ws = WsLayer::new().rate_limit(None);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;

    let mut good = connect(addr).await;
    assert_eq!(next_event(&mut good).await.kind, EventType::Snapshot);
    eventually("good client registered", || hub.client_count() == 1).await;

    // Warm up every path once (runtime threads, allocator arenas, tungstenite buffers), so
    // the baseline is the idle server, not the cold one.
    let warm_until = Instant::now() + Duration::from_millis(500);
    let warm = tokio::join!(
        never_reading_flooder(addr, warm_until, 0),
        slow_reading_pinger(addr, warm_until)
    );
    assert!(warm.0 >= 1);
    eventually("warm-up clients gone", || hub.client_count() == 1).await;
    eventually("warm-up tasks ended", || hub.stats().connection_tasks == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss();
    let before = hub.stats();

    let started = Instant::now();
    let until = started + FLOOD;
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (peak, done) = (peak.clone(), done.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                let now = rss();
                peak.fetch_max(now, Ordering::SeqCst);
                // Fail fast rather than take the machine down.
                assert!(
                    now - baseline.min(now) <= 4 * RSS_BOUND,
                    "server memory grew by {} MiB",
                    (now - baseline) >> 20
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // The good client's events: 100 per second for the whole flood.
    let publisher = tokio::spawn({
        let hub = hub.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut seq = 0;
            while Instant::now() < until {
                tick.tick().await;
                seq += 1;
                let event = Event::delta(seq, vec![session(seq)], vec![]);
                hub.handle_event(&event).unwrap();
            }
            seq
        }
    });
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while Instant::now() < until + Duration::from_millis(500) {
            match tokio::time::timeout(Duration::from_millis(200), good.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    seqs.push(Event::from_json(text.as_bytes()).unwrap().seq)
                }
                Ok(Some(Ok(_))) | Err(_) => {}
                other => panic!("the good client's stream broke: {other:?}"),
            }
        }
        (seqs, good)
    });

    let (never_pings, never_mixed, never_after_close, (slow, slow_closes)) = tokio::join!(
        never_reading_flooder(addr, until, 0),
        never_reading_flooder(addr, until, 1),
        never_reading_flooder(addr, until, 2),
        slow_reading_pinger(addr, until),
    );
    let published = within("publisher", publisher).await.unwrap();
    let (seqs, good) = within("good client", reader).await.unwrap();
    done.store(true, Ordering::SeqCst);
    within("sampler", sampler).await.unwrap();
    let growth = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    let stats = hub.stats();
    eprintln!(
        "flood of {:?}: connections never reading {never_pings} (pings) + {never_mixed} (mixed) \
         + {never_after_close} (after close), slow-reading pinger {slow} connections, {} close frames read; \
         inbound_floods +{}, protocol_errors +{}, write timeouts +{}; RSS baseline {} MiB, peak growth {:.1} MiB",
        started.elapsed(),
        slow_closes.len(),
        stats.inbound_floods - before.inbound_floods,
        stats.protocol_errors - before.protocol_errors,
        stats.evicted_write_timeout - before.evicted_write_timeout,
        baseline >> 20,
        growth as f64 / (1024.0 * 1024.0),
    );

    assert!(
        growth <= RSS_BOUND,
        "server memory grew by {:.1} MiB under the flood (bound {} MiB)",
        growth as f64 / (1024.0 * 1024.0),
        RSS_BOUND >> 20
    );
    // The client that reads is told why, every time (but maybe the last, cut by the end
    // of the flood).
    assert!(
        slow_closes.len() as u64 + 1 >= slow && slow >= 5,
        "the slow reader read {} close frames in {slow} connections",
        slow_closes.len()
    );
    for close in &slow_closes {
        assert_eq!(
            close,
            &(
                1008,
                "policy violation: too much inbound traffic".to_owned()
            )
        );
    }
    // The ones that never read cannot be told: they are counted. Every connection of the
    // flooders but the last of each ended on the server's initiative (those that sent a
    // close first were answered and dropped: the client closed them; the mixed pattern's
    // second data frame inside its endless fragmented message is a protocol error, 1002).
    let evicted = (stats.inbound_floods - before.inbound_floods)
        + (stats.protocol_errors - before.protocol_errors)
        + (stats.evicted_write_timeout - before.evicted_write_timeout);
    let flooding = never_pings + never_mixed + slow;
    assert!(
        evicted + 3 >= flooding,
        "{evicted} flooding connections closed by the server out of {flooding}"
    );
    assert!(stats.inbound_floods > before.inbound_floods);
    let ended = stats.disconnected - before.disconnected;
    assert!(ended + 4 >= flooding + never_after_close);
    // The good client got everything, in order, and is still connected.
    assert_eq!(
        seqs,
        (1..=published).collect::<Vec<_>>(),
        "the good client missed or reordered events"
    );
    eventually("only the good client left", || hub.client_count() == 1).await;
    assert_eq!(stats.evicted_lagging, 0);
    drop(good);
}
