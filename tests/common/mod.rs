//! Shared helpers for the socket-level tests: a real `axum::serve` on 127.0.0.1:0 and real
//! tokio-tungstenite clients. Every wait is bounded.
#![allow(dead_code)]

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod stream_key;

pub mod chromium;
pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use agentwatch_ws::Event;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type RawClient = WebSocketStream<TcpStream>;

/// Tells the person running the tests that the current test (named by its thread, as
/// libtest names it) did not run, or did not run in full: `missing` is what it needs, `to_run`
/// how to provide it, and `require_var=1` makes the absence a failure instead.
///
/// Written straight to the process's stderr: libtest captures `eprintln!` of a passing test
/// (it shows captured output only for failures), but not writes to `std::io::stderr()`, so
/// the notice shows in a plain `cargo test`.
pub fn skip_notice(missing: &str, to_run: &str, require_var: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let bar = "!".repeat(72);
    let notice = format!(
        "\n{bar}\n  SKIPPED {test} (or the part of it that needs this): {missing}.\n  \
         {to_run} to run it;\n  \
         set {require_var}=1 to make its absence a failure.\n{bar}\n"
    );
    let _ = std::io::stderr().lock().write_all(notice.as_bytes());
}

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Fails the test instead of hanging when `fut` takes longer than `WAIT`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    within_for(WAIT, what, fut).await
}

pub async fn within_for<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// This process's resident set, in bytes (Linux: `VmRSS` of `/proc/self/status`).
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=agentwatch_ws=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Serves `app` with connect info on a fresh loopback port.
pub async fn serve(app: Router) -> SocketAddr {
    // std's and tokio's `TcpListener::bind` backlog.
    serve_with_backlog(app, 128).await
}

/// `serve`, with a chosen listen backlog: the default overflows with a burst of 200
/// simultaneous SYNs, and the dropped ones come back a second later by retransmission.
pub async fn serve_with_backlog(app: Router, backlog: u32) -> SocketAddr {
    init_tracing();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(backlog).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Serves `app` without connect info (as `axum::serve(listener, app)` does).
pub async fn serve_plain(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Serves `app` the way a TLS or custom-listener setup would: hyper's HTTP/1 server over a
/// stream type of its own, not a bare `TcpStream`, so the upgraded connection stays behind
/// hyper's `Upgraded`.
pub async fn serve_wrapped(app: Router) -> SocketAddr {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(Wrapped(stream));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A stream that is not a `TcpStream`, as a TLS stream is not.
struct Wrapped(TcpStream);

impl tokio::io::AsyncRead for Wrapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Wrapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

pub async fn connect(addr: SocketAddr) -> Client {
    let (client, _) = within(
        "websocket handshake",
        tokio_tungstenite::connect_async(ws_url(addr)),
    )
    .await
    .expect("handshake");
    client
}

/// A client whose socket has a tiny receive buffer, for tests that need the server's writes to
/// get stuck. It completes the handshake; it reads only when the test polls it.
pub async fn connect_small_buffer(addr: SocketAddr) -> RawClient {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within("tcp connect", socket.connect(addr)).await.unwrap();
    let (client, _) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(ws_url(addr), stream),
    )
    .await
    .expect("handshake");
    client
}

/// The next event; panics on a close, an error or a timeout.
pub async fn next_event<S>(client: &mut WebSocketStream<S>) -> Event
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = within("next event", client.next())
            .await
            .expect("stream ended before an event")
            .unwrap_or_else(|e| panic!("read error before an event: {e}"));
        match msg {
            Message::Text(text) => {
                return Event::from_json(text.as_bytes())
                    .expect("server sent an undecodable event");
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame (skipping events) and returns it.
pub async fn expect_close<S>(client: &mut WebSocketStream<S>) -> Option<CloseFrame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match within("close frame", client.next()).await {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("read error instead of a close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Closes from the client side and insists that the server's answer completes the closing
/// handshake: nothing but close frames after ours, then a clean end of the stream.
pub async fn close_and_expect_reply(mut client: Client) {
    within("close", client.close(None)).await.unwrap();
    let rest: Vec<_> = within("close reply", client.collect::<Vec<_>>()).await;
    assert!(
        rest.iter().all(|m| matches!(m, Ok(Message::Close(_)))),
        "unexpected after close: {rest:?}"
    );
}

/// Polls `cond` every 10 ms until it holds; panics after `WAIT`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub async fn send_text(client: &mut Client, text: &str) {
    within("send", client.send(Message::text(text)))
        .await
        .unwrap();
}

/// A plain HTTP/1.1 request over a raw socket: returns (status, headers, body).
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = within("tcp connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    within("http response", stream.read_to_end(&mut buf))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, head.to_owned(), body.to_owned())
}

/// Upgrade request headers a browser would send, plus `extra`.
pub fn upgrade_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    h.extend_from_slice(extra);
    h
}

/// Rebuilds state from snapshot + events, as a dashboard does, and insists on contiguous seqs
/// after each snapshot: any gap, duplicate or reorder is an error.
#[derive(Default)]
pub struct Rebuilt {
    pub seq: u64,
    pub sessions: std::collections::HashMap<String, agentwatch_ws::SessionState>,
    pub snapshots: usize,
}

impl Rebuilt {
    pub fn apply(&mut self, event: Event) -> Result<(), String> {
        if event.kind == agentwatch_ws::EventType::Snapshot {
            self.sessions = event
                .sessions
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect();
            self.seq = event.seq;
            self.snapshots += 1;
            return Ok(());
        }
        // A snapshot's health reports carry its seq (see the `wire` module docs).
        if event.kind == agentwatch_ws::EventType::Health && event.seq == self.seq {
            return Ok(());
        }
        if event.seq != self.seq + 1 {
            return Err(format!(
                "after seq {} got seq {} (gap, duplicate or reorder)",
                self.seq, event.seq
            ));
        }
        self.seq = event.seq;
        for s in event.updates {
            self.sessions.insert(s.id.clone(), s);
        }
        for id in event.removed {
            self.sessions.remove(&id);
        }
        Ok(())
    }
}

/// Xorshift: deterministic randomness without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The path of the example `name`, built for the profile of the running test if it is missing
/// or older than the sources (`cargo test --test X` builds no examples). Panics if the build
/// fails or takes over 15 minutes.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    // Cargo decides whether anything changed: a no-op build takes a fraction of a second.
    let mut child = Command::new(env!("CARGO"))
        .args(["build", "--example", name, "--profile", &profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`cargo build --example {name}` did not finish within 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "`cargo build --example {name}` failed");
    assert!(
        binary.exists(),
        "{} missing after the build",
        binary.display()
    );
    binary
}

/// A log captured in memory, for tests that check what was logged.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures everything at `level` and above logged on this thread while the guard lives
    /// (`set_default` is thread-local: use the current-thread runtime).
    pub fn install(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Opens a TCP connection and completes the WebSocket handshake by hand, reading the
/// response head byte by byte so that no frame is consumed with it. `recv_buffer`: the
/// client's `SO_RCVBUF`, set before connecting (a small one makes the server's writes stall).
pub async fn raw_connect(addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut stream = within("tcp connect", socket.connect(addr)).await.unwrap();
    let mut request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in upgrade_headers(&[]) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    within("send handshake", stream.write_all(request.as_bytes()))
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(
            within("handshake response", stream.read_u8())
                .await
                .unwrap(),
        );
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    stream
}

/// A client frame, masked as RFC 6455 §5.3 requires: `opcode` (1 text, 2 binary, 8 close,
/// 9 ping, 10 pong), final, carrying `payload`.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame_header(opcode, payload.len() as u64)
        .into_iter()
        .chain(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]))
        .collect()
}

/// The header (with mask key) of a final masked client frame of `len` payload bytes; the
/// payload must follow masked with [`MASK`].
pub fn masked_frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&len.to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame
}

/// The mask key of [`masked_frame`].
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A server frame parsed from raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// For a close frame: its status code and reason.
    pub fn close_code_and_reason(&self) -> (u16, String) {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        assert!(self.payload.len() >= 2, "close frame without a code");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        )
    }
}

/// Reads server frames into `buf` until a close frame; panics (naming `what`) on a read error
/// (a reset) or the end of the stream before it. Returns the frames before it and the close
/// frame; whole frames read after it are dropped, a partial one stays in `buf`.
pub async fn read_until_close(
    rx: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
    what: &str,
) -> (Vec<RawFrame>, RawFrame) {
    use tokio::io::AsyncReadExt;
    let mut before = Vec::new();
    loop {
        for frame in take_frames(buf) {
            if frame.opcode == 8 {
                return (before, frame);
            }
            before.push(frame);
        }
        let mut chunk = [0u8; 4096];
        let n = within(what, rx.read(&mut chunk))
            .await
            .unwrap_or_else(|e| panic!("{what}: read failed before the close frame arrived: {e}"));
        assert!(n > 0, "{what}: the stream ended before the close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Takes the whole server frames (unmasked, as servers send them) off the front of `buf`.
pub fn take_frames(buf: &mut Vec<u8>) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            break;
        }
        assert_eq!(rest[1] & 0x80, 0, "a masked frame from the server");
        let (len, header) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()), 10),
            126 | 127 => break,
            len => (u64::from(len), 2),
        };
        let end = header + len as usize;
        if rest.len() < end {
            break;
        }
        frames.push(RawFrame {
            opcode: rest[0] & 0x0f,
            payload: rest[header..end].to_vec(),
        });
        at += end;
    }
    buf.drain(..at);
    frames
}
