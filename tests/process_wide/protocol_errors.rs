//! After a client breaks the protocol, the connection closes with the code the `wire`
//! docs promise and never reads through the failed protocol state again.
//!
//! The fault: a masked binary frame declaring more than `max_message_size`, followed by
//! enough of its payload to fill the 512-byte inbound read buffer. tungstenite rejected the
//! frame, the server sent 1009, then kept reading through the parser that had already failed,
//! and tungstenite's own debug assertion fired (`frame/mod.rs`: `in_buffer.capacity() > len`)
//! in the connection task. Release builds closed without a panic; an app built with debug
//! assertions and `panic = "abort"` died.
//!
//! A panic in a connection task does not fail a test by itself (tokio catches it), so every
//! test here installs a panic hook that records panics from any thread and checks that none
//! was recorded. Each case sends its broken frame, then more bytes than the read buffer
//! holds, then keeps sending after the close frame arrives, so that whatever the server does
//! after the error is exercised. `cargo test` builds with debug assertions, which is where the
//! fault showed.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::Duration;

use agentwatch_ws::{Publisher, WsLayer};
use axum::Router;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Panics seen in any thread of this test binary: `(thread name, message)`.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Installs the recording hook (once per process) and forgets earlier panics: the tests of
/// this binary run one at a time (`crate::serial`), so what is recorded from here on is this
/// test's.
fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            if let Ok(mut panics) = PANICS.lock() {
                panics.push((thread, info.to_string()));
            }
            default(info);
        }));
    });
    if let Ok(mut panics) = PANICS.lock() {
        panics.clear();
    }
}

fn assert_no_panics(case: &str) {
    let panics = PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(
        panics.is_empty(),
        "{case}: a thread panicked after the protocol error: {panics:#?}"
    );
}

async fn start() -> (Publisher, SocketAddr) {
    // The default max_message_size: 4 KiB.
    let ws = WsLayer::new().rate_limit(None);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    (hub, addr)
}

/// A frame header built by hand: `first` is FIN/RSV/opcode, `len` the payload length in the
/// shortest encoding (or the 64-bit one with `long`), masked with `mask` when given.
fn header(first: u8, len: u64, long: bool, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut frame = vec![first];
    match len {
        0..=125 if !long => frame.push(mask_bit | len as u8),
        126..=0xffff if !long => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        frame.extend_from_slice(&mask);
    }
    frame
}

/// One broken client input and the close code the `wire` docs promise for it.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    code: u16,
}

fn cases() -> Vec<Case> {
    let zero = Some([0u8; 4]);
    let mut cases = vec![
        Case {
            // The smallest reproducer, byte for byte: 14 header bytes + 498 = the 512-byte
            // read buffer.
            name: "binary frame declaring 4097 bytes (64-bit length), 498 bytes of it",
            bytes: [header(0x82, 4097, true, zero), vec![0x78; 498]].concat(),
            code: 1009,
        },
        Case {
            name: "text frame declaring 5000 bytes (16-bit length), 2000 bytes of it",
            bytes: [header(0x81, 5000, false, zero), vec![0x61; 2000]].concat(),
            code: 1009,
        },
        Case {
            name: "binary frame declaring 2^63 - 1 bytes, 1000 bytes of it",
            bytes: [header(0x82, (1 << 63) - 1, true, zero), vec![0x78; 1000]].concat(),
            code: 1009,
        },
        Case {
            name: "fragments adding up to more than the limit",
            bytes: [
                header(0x01, 3000, false, zero),
                vec![0x61; 3000],
                header(0x80, 3000, false, zero),
                vec![0x61; 3000],
            ]
            .concat(),
            code: 1009,
        },
        Case {
            name: "unmasked client frame",
            bytes: [header(0x81, 600, false, None), vec![0x61; 600]].concat(),
            code: 1002,
        },
        Case {
            name: "reserved data opcode 3",
            bytes: [header(0x83, 600, false, zero), vec![0x61; 600]].concat(),
            code: 1002,
        },
        Case {
            name: "reserved control opcode 11",
            bytes: [header(0x8b, 4, false, zero), vec![0x61; 600]].concat(),
            code: 1002,
        },
        Case {
            name: "RSV1 without a negotiated extension",
            bytes: [header(0xc1, 600, false, zero), vec![0x61; 600]].concat(),
            code: 1002,
        },
        Case {
            name: "fragmented ping",
            bytes: [header(0x09, 4, false, zero), vec![0x61; 600]].concat(),
            code: 1002,
        },
        Case {
            name: "ping longer than 125 bytes",
            bytes: [header(0x89, 600, false, zero), vec![0x61; 600]].concat(),
            code: 1002,
        },
        Case {
            name: "continuation without a first fragment",
            bytes: [header(0x80, 600, false, zero), vec![0x61; 600]].concat(),
            code: 1002,
        },
        Case {
            name: "text message that is not UTF-8",
            bytes: [header(0x81, 4, false, zero), vec![0xff, 0xfe, 0xc0, 0x80]].concat(),
            code: 1007,
        },
    ];
    // Whatever the error, more than the read buffer follows it.
    for case in &mut cases {
        case.bytes.extend_from_slice(&[0x5a; 700]);
    }
    cases
}

async fn run(case: Case) {
    let (hub, addr) = start().await;
    let stream = raw_connect(addr, None).await;
    eventually("client registered", || hub.client_count() == 1).await;
    let (mut rx, mut tx) = stream.into_split();
    // Ignore a write error: the server may close while the bytes are still going.
    let _ = within("broken frame", tx.write_all(&case.bytes)).await;

    let mut buf = Vec::new();
    let (_, close) = read_until_close(&mut rx, &mut buf, case.name).await;
    let (code, reason) = close.close_code_and_reason();
    assert_eq!(
        code, case.code,
        "{}: close code (reason {reason:?})",
        case.name
    );
    assert!(!reason.is_empty(), "{}: a close reason", case.name);

    // Keep sending after the close: the server must only discard it now.
    for _ in 0..4 {
        if tx.write_all(&[0x78; 1024]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tx.shutdown().await;
    let mut rest = Vec::new();
    let _ = within("end of stream", rx.read_to_end(&mut rest)).await;
    eventually("connection task ended", || {
        hub.stats().connection_tasks == 0
    })
    .await;
    assert_eq!(hub.stats().protocol_errors, 1, "{}: counted", case.name);
    assert_no_panics(case.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_error_closes_with_its_code_and_never_reads_through_the_failed_state() {
    let _serial = crate::serial().await;
    record_panics();
    for case in cases() {
        run(case).await;
    }
}

/// That reproducer alone, and every declared length over the limit in each length
/// encoding, each followed by exactly enough payload to fill the read buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_declared_length_over_the_limit_closes_with_1009_without_a_panic() {
    let _serial = crate::serial().await;
    record_panics();
    for (len, long) in [
        (4097, true),
        (4097, false),
        (65535, false),
        (65536, true),
        (1 << 32, true),
        (u64::MAX >> 1, true),
    ] {
        let head = header(0x82, len, long, Some([0; 4]));
        let fill = 512 - head.len();
        run(Case {
            name: "oversized binary frame",
            bytes: [head, vec![0x78; fill]].concat(),
            code: 1009,
        })
        .await;
    }
}
