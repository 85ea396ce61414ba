//! Fuzzed client frames through a real upgraded connection.
//!
//! One server, started once: `agentwatch_ws::serve` on 127.0.0.1:0 (a multi-thread tokio
//! runtime with 2 workers), `max_message_size` 4 KiB, no rate limit, and a publisher sending a
//! `delta` every 20 ms. Per input: connect, do a valid opening handshake, read the `101`,
//! write the client frames the input describes, then send a close frame (1000) and shut down
//! the write half, and read what the server sends until the end of the stream.
//!
//! An input whose first byte has its high bit set, or that starts with `D`, offers
//! permessage-deflate in the handshake (and the `101` must accept it): its compressed frames
//! (RSV1) go through the server's bounded inflation, and the server's text frames may carry
//! RSV1.
//!
//! The input is either
//! - `R` followed by raw bytes, written as they are after the handshake (seeds written by
//!   hand: see `fuzz/seeds/connection/`), or `D` followed by raw bytes, the same after a
//!   handshake that negotiated permessage-deflate (`deflate-*` seeds), or
//! - anything else: a sequence of [`Chunk`]s decoded with `arbitrary` (frames with any opcode,
//!   FIN and RSV bits, masked or not, any length encoding and declared length, and raw
//!   garbage), at most [`MAX_WRITTEN`] bytes in all.
//!
//! Properties:
//! - no panic, in any thread: libfuzzer-sys's panic hook aborts the process, so a panic in a
//!   connection task (which tokio would otherwise catch) is a crash too;
//! - the connection ends (end of stream or reset) within [`END_TIMEOUT`] of the client's close
//!   and FIN, and its task is gone within [`END_TIMEOUT`] (`Hub::closed`, no client counted);
//! - the server's frames are well-formed (unmasked, RSV 0 but RSV1 on a text frame when
//!   permessage-deflate was negotiated, opcodes text, close, ping, pong,
//!   control frames unfragmented), nothing follows its close frame, and the close code, if
//!   any, is one the `wire` docs' close-code table promises (1001, 1002, 1007, 1008, 1009, 1011, 1013) or the
//!   answer to the client's own close (tungstenite echoes the code of the client's close
//!   frame, RFC 6455 §5.5.1: 1000 or any code the client sent);
//! - bounded memory: the process's RSS stays under [`RSS_LIMIT`] after every input.

#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, Publisher, SessionState, WsLayer};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// The server's `max_message_size`.
const MAX_MESSAGE_SIZE: usize = 4096;
/// The most a structured input writes after the handshake (the inbound budget is 64 KiB).
const MAX_WRITTEN: usize = 256 * 1024;
/// How long the connection may take to end after the client's close and FIN, and its task
/// after that; also the bound on the handshake.
const END_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one write may block (a server that stopped reading): the rest of the input is
/// then skipped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The bound on the process's resident memory (ASan's shadow and quarantine included).
const RSS_LIMIT: u64 = 1024 << 20;
/// Close codes the `wire` docs' close-code table promises.
const DOCUMENTED_CLOSE_CODES: [u16; 7] = [1001, 1002, 1007, 1008, 1009, 1011, 1013];

struct Server {
    addr: SocketAddr,
    hub: Publisher,
    runtime: tokio::runtime::Runtime,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // A Rust `main` ignores SIGPIPE; libFuzzer's does not, and the server's writev(2) to a
        // socket the client reset would kill the process instead of returning EPIPE.
        // SAFETY: setting a signal disposition to SIG_IGN before any socket exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let (ws, hub) = WsLayer::new()
            .max_message_size(MAX_MESSAGE_SIZE)
            .rate_limit(None)
            .build("/ws");
        let app = axum::Router::new().merge(ws);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        runtime.spawn(async move { agentwatch_ws::serve(listener, app).await });
        let publisher = hub.clone();
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(20));
            for n in 0u64.. {
                ticks.tick().await;
                let session = SessionState {
                    id: format!("session-{}", n % 4),
                    source: "codex".into(),
                    slug: "fuzz".into(),
                    message_count: i64::try_from(n).unwrap_or(i64::MAX),
                    ..Default::default()
                };
                let _ = publisher.publish(Event::delta(0, vec![session], vec![]));
            }
        });
        Server { addr, hub, runtime }
    })
}

/// One piece of what the client writes after the handshake; each is one `write` call.
#[derive(Arbitrary, Debug)]
enum Chunk {
    Frame(Frame),
    Raw(Vec<u8>),
    Fill { byte: u8, count: u16 },
}

/// A client frame, valid or not.
#[derive(Arbitrary, Debug)]
struct Frame {
    fin: bool,
    /// RSV1..3, the low three bits.
    rsv: u8,
    /// The low four bits (reserved opcodes included).
    opcode: u8,
    mask: Option<[u8; 4]>,
    length: Length,
    payload: Payload,
}

/// How the payload length is written, and whether it tells the truth.
#[derive(Arbitrary, Debug)]
enum Length {
    /// The payload's length, in the shortest encoding.
    Minimal,
    /// The payload's length in the 16-bit extended field (non-minimal for short payloads;
    /// truncated for long ones).
    Ext16,
    /// The payload's length in the 64-bit extended field.
    Ext64,
    /// A declared length, whatever the payload: in the 7-bit field (0..=125), the 16-bit
    /// field, or the 64-bit field (most significant bit included).
    Declared7(u8),
    Declared16(u16),
    Declared64(u64),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Fill { byte: u8, count: u16 },
    Close { code: u16, reason: Vec<u8> },
    Text(String),
}

impl Frame {
    fn encode(&self, out: &mut Vec<u8>) {
        let payload = match &self.payload {
            Payload::Bytes(bytes) => bytes.clone(),
            Payload::Fill { byte, count } => vec![*byte; usize::from(*count)],
            Payload::Close { code, reason } => {
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(reason);
                p
            }
            Payload::Text(text) => text.as_bytes().to_vec(),
        };
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 0xf));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = payload.len() as u64;
        match self.length {
            Length::Minimal if len <= 125 => out.push(mask_bit | len as u8),
            Length::Minimal if len <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Length::Minimal | Length::Ext64 => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Length::Ext16 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Length::Declared7(n) => out.push(mask_bit | (n % 126)),
            Length::Declared16(n) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Length::Declared64(n) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&payload),
        }
    }
}

/// The bytes to write after the handshake, one `Vec` per write.
fn writes(data: &[u8]) -> Vec<Vec<u8>> {
    if let Some(raw) = data.strip_prefix(b"R").or_else(|| data.strip_prefix(b"D")) {
        return vec![raw.to_vec()];
    }
    let mut u = Unstructured::new(data);
    let mut writes = Vec::new();
    let mut total = 0;
    while !u.is_empty() && total < MAX_WRITTEN {
        let Ok(chunk) = Chunk::arbitrary(&mut u) else {
            break;
        };
        let mut bytes = Vec::new();
        match chunk {
            Chunk::Frame(frame) => frame.encode(&mut bytes),
            Chunk::Raw(raw) => bytes = raw,
            Chunk::Fill { byte, count } => bytes = vec![byte; usize::from(count)],
        }
        bytes.truncate(MAX_WRITTEN - total);
        total += bytes.len();
        writes.push(bytes);
    }
    writes
}

/// A frame header as read: (FIN, RSV bits, opcode, mask key, payload length, header length).
type Header = (bool, u8, u8, Option<[u8; 4]>, u64, usize);

/// Parses a frame header at the start of `buf`; `None` when incomplete.
fn parse_header(buf: &[u8]) -> Option<Header> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let key: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    Some((b0 & 0x80 != 0, (b0 >> 4) & 7, b0 & 0xf, mask, len, at))
}

/// The close codes of every complete close frame in what the client sent, framed as any
/// RFC 6455 parser frames it: the codes the server may echo.
fn client_close_codes(sent: &[u8]) -> Vec<u16> {
    let mut codes = Vec::new();
    let mut rest = sent;
    while let Some((_, _, opcode, mask, len, at)) = parse_header(rest) {
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
        else {
            break;
        };
        let Some(payload) = rest.get(at..end) else {
            break;
        };
        if opcode == 8 && payload.len() >= 2 {
            let key = mask.unwrap_or([0; 4]);
            codes.push(u16::from_be_bytes([
                payload[0] ^ key[0],
                payload[1] ^ key[1],
            ]));
        }
        rest = &rest[end..];
    }
    codes
}

/// A compressed message's payload inflated from an empty window (RFC 7692 §7.2.2: the sync
/// trailer appended); panics when it is not valid deflate data.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(4 * input.len() + 1024);
    while (inflater.total_in() as usize) < input.len() {
        let consumed = inflater.total_in() as usize;
        let status = inflater
            .decompress_vec(&input[consumed..], &mut out, flate2::FlushDecompress::Sync)
            .unwrap_or_else(|e| panic!("the server sent invalid compressed data: {e}"));
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        } else if status == flate2::Status::StreamEnd || inflater.total_in() as usize == consumed {
            panic!("the server's compressed message ends early or stalls");
        }
    }
    out
}

/// Checks the frames the server sent after the `101`; returns its close frame's code, if any.
fn check_server_frames(received: &[u8], client_codes: &[u16], deflate: bool) -> Option<u16> {
    let mut close_code = None;
    let mut rest = received;
    let mut closed = false;
    while let Some((fin, rsv, opcode, mask, len, at)) = parse_header(rest) {
        let Some(payload) = usize::try_from(len)
            .ok()
            .and_then(|len| rest.get(at..at.checked_add(len)?))
        else {
            // Cut short by the end of the stream (a reset): nothing more to check.
            break;
        };
        assert!(!closed, "the server sent a frame after its close frame");
        assert!(mask.is_none(), "the server masked a frame");
        // RSV1 (the high bit of the three) marks a compressed text frame.
        assert!(
            rsv == 0 || (deflate && rsv == 4 && opcode == 0x1),
            "the server set RSV bits {rsv:#b} on opcode {opcode:#x}"
        );
        assert!(
            matches!(opcode, 0x1 | 0x8 | 0x9 | 0xa),
            "the server sent opcode {opcode:#x}"
        );
        if opcode >= 0x8 {
            assert!(
                fin && payload.len() <= 125,
                "the server sent a bad control frame"
            );
        }
        if opcode == 0x1 {
            // A compressed frame inflates on its own (server_no_context_takeover).
            let text = if rsv == 4 {
                inflate(payload)
            } else {
                payload.to_vec()
            };
            assert!(
                std::str::from_utf8(&text).is_ok(),
                "the server sent invalid UTF-8"
            );
        }
        if opcode == 0x8 {
            closed = true;
            assert_ne!(payload.len(), 1, "the server sent a one-byte close payload");
            if payload.len() >= 2 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                assert!(
                    DOCUMENTED_CLOSE_CODES.contains(&code) || client_codes.contains(&code),
                    "undocumented close code {code} (client sent {client_codes:?})"
                );
                close_code = Some(code);
            }
        }
        rest = &rest[at + payload.len()..];
    }
    close_code
}

/// Reads until the end of the stream (or a reset), appending to `into`; panics at `deadline`.
fn read_to_end(stream: &mut TcpStream, into: &mut Vec<u8>, deadline: Instant, what: &str) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: the connection did not end within {END_TIMEOUT:?}"
        );
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: the connection did not end within {END_TIMEOUT:?}")
            }
            // A reset ends the connection too.
            Err(_) => return,
        }
    }
}

/// Connects and completes the opening handshake; returns the stream and any bytes read past
/// the `101`'s head.
fn connect(addr: SocketAddr, deflate: bool) -> (TcpStream, Vec<u8>) {
    let mut stream =
        TcpStream::connect_timeout(&addr, END_TIMEOUT).unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let extension = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("handshake write: {e}"));
    let deadline = Instant::now() + END_TIMEOUT;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no 101 within {END_TIMEOUT:?}");
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "connection closed during the handshake: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("handshake read: {e}"),
        }
    };
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "handshake refused: {:?}",
        String::from_utf8_lossy(&head[..end])
    );
    let rest = head.split_off(end);
    let accepted = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("sec-websocket-extensions: permessage-deflate");
    assert_eq!(accepted, deflate, "permessage-deflate offered: {deflate}");
    (stream, rest)
}

/// Whether `AGENTWATCH_FUZZ_VERBOSE` is set: then each input prints what happened (for
/// checking what a seed does: `cargo fuzz run connection <file>`).
fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("AGENTWATCH_FUZZ_VERBOSE").is_some())
}

/// The process's resident set, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fuzz_target!(|data: &[u8]| {
    let server = server();
    let deflate = data
        .first()
        .is_some_and(|&first| first & 0x80 != 0 || first == b'D');
    let (mut stream, mut received) = connect(server.addr, deflate);

    let mut sent = Vec::new();
    for bytes in writes(data) {
        if stream.write_all(&bytes).is_err() {
            // The server closed, or stopped reading for WRITE_TIMEOUT: stop writing.
            break;
        }
        sent.extend_from_slice(&bytes);
    }
    // The client's goodbye: a close frame, then FIN, whatever state the input left the
    // server's parser in (a frame still waiting for payload included).
    let close = [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2];
    if stream.write_all(&close).is_ok() {
        sent.extend_from_slice(&close);
    }
    let _ = stream.shutdown(Shutdown::Write);
    read_to_end(
        &mut stream,
        &mut received,
        Instant::now() + END_TIMEOUT,
        "after the client's close",
    );
    drop(stream);

    let close_code = check_server_frames(&received, &client_close_codes(&sent), deflate);

    let ended = server
        .runtime
        .block_on(async { tokio::time::timeout(END_TIMEOUT, server.hub.closed()).await });
    assert!(
        ended.is_ok(),
        "the connection task did not end within {END_TIMEOUT:?}"
    );
    assert_eq!(server.hub.client_count(), 0, "a client is still counted");
    let rss = rss();
    assert!(
        rss < RSS_LIMIT,
        "RSS {} MiB over {} MiB",
        rss >> 20,
        RSS_LIMIT >> 20
    );
    if verbose() {
        let stats = server.hub.stats();
        eprintln!(
            "connection: wrote {} bytes, read {}, server close code {close_code:?}; \
             protocol errors {}, inbound floods {}, RSS {} MiB",
            sent.len(),
            received.len(),
            stats.protocol_errors,
            stats.inbound_floods,
            rss >> 20
        );
    }
});
