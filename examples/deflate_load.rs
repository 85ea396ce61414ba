//! A load client for permessage-deflate (RFC 7692): the same scenarios with and without
//! compression, side by side in one run, against `bench_server` (started here, once per run,
//! as a child process whose CPU time is read from `/proc`). Built on ratchet, a tokio
//! WebSocket client with an RFC 7692 extension (the shared bench's `loadgen` uses
//! tokio-tungstenite, which has none): "on" clients offer `permessage-deflate` as ratchet
//! does by default, "off" clients offer nothing. The server is the same for both.
//!
//! ```sh
//! cargo build --release --example bench_server --example deflate_load
//! # Reconnect storm: 1 000 sessions in the store; each client connects, reads its snapshot,
//! # closes. Handshakes per second, bytes received per handshake, server CPU per handshake.
//! target/release/examples/deflate_load --scenario connect --sessions 1000
//! # Fan-out: 500 clients, a burst of 2 000 events of 512 B; server CPU per delivery.
//! target/release/examples/deflate_load --scenario fanout
//! ```
//!
//! Each run starts a fresh server, measures "off" then "on" (the order alternates between
//! runs), and stops the server; the table shows the median of the runs per mode and on/off.
//! Linux only (`/proc/PID/stat`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ratchet_rs::deflate::DeflateExtProvider;
use ratchet_rs::{ExtensionProvider, Message, NoExtProvider, SubprotocolRegistry, WebSocketConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The command line (`--help` lists it).
#[derive(clap::Parser)]
#[command(about = "permessage-deflate on vs off against bench_server")]
struct Args {
    /// `connect` (reconnect storm) or `fanout` (a burst to connected clients).
    #[arg(long, default_value = "connect")]
    scenario: String,
    /// The server binary.
    #[arg(long, default_value = "target/release/examples/bench_server")]
    server: String,
    /// Sessions in the server's store (connect).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Handshakes per mode and run (connect).
    #[arg(long, default_value_t = 2000)]
    handshakes: usize,
    /// Handshakes in flight at once (connect).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Connected clients (fanout).
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Events in the burst (fanout).
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Bytes per event (fanout; bench_server pads its JSON to this size).
    #[arg(long, default_value_t = 512)]
    bytes: usize,
    /// Runs; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A socket that counts the bytes it reads.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The bench server, a child process on a free port.
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Server {
    async fn start(binary: &str, sessions: usize) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let child = std::process::Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--sessions",
                &sessions.to_string(),
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error} (build it first)"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "{binary} did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Server { child, addr }
    }

    /// The server's CPU time so far (user + system).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/PID/stat");
        // Fields after the command (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 2..]
            .split(' ')
            .collect();
        // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the command.
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        Duration::from_millis(ticks * 1000 / clock_ticks())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sysconf(_SC_CLK_TCK)`, through `getconf` (100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// One WebSocket connected with `provider`'s extension (or none); returns it with its
/// byte counter.
async fn open<P>(
    addr: SocketAddr,
    provider: &P,
) -> (ratchet_rs::WebSocket<Counted, P::Extension>, Arc<AtomicU64>)
where
    P: ExtensionProvider,
{
    let read = Arc::new(AtomicU64::new(0));
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let stream = Counted {
        inner: stream,
        read: read.clone(),
    };
    let upgraded = ratchet_rs::subscribe_with(
        WebSocketConfig {
            max_message_size: 64 << 20,
        },
        stream,
        format!("ws://{addr}/ws"),
        provider,
        SubprotocolRegistry::default(),
    )
    .await
    .expect("handshake");
    (upgraded.websocket, read)
}

/// Reads until the next text message.
async fn next_text<E: ratchet_rs::Extension>(
    ws: &mut ratchet_rs::WebSocket<Counted, E>,
    buf: &mut BytesMut,
) {
    loop {
        buf.clear();
        match ws.read(buf).await.expect("read") {
            Message::Text => return,
            Message::Close(reason) => panic!("closed: {reason:?}"),
            _ => continue,
        }
    }
}

/// What one mode of one run measured.
#[derive(Clone, Copy, Default)]
struct Figures {
    per_second: f64,
    bytes_each: f64,
    cpu_us_each: f64,
}

async fn storm<P>(server: &Server, args: &Args, provider: P) -> Figures
where
    P: ExtensionProvider + Send + Sync + 'static,
    P::Extension: Send,
{
    let provider = Arc::new(provider);
    let bytes = Arc::new(AtomicU64::new(0));
    let cpu = server.cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let (provider, bytes, addr) = (provider.clone(), bytes.clone(), server.addr);
        let share = args.handshakes / args.concurrency
            + usize::from(worker < args.handshakes % args.concurrency);
        tasks.push(tokio::spawn(async move {
            let mut buf = BytesMut::new();
            for _ in 0..share {
                let (mut ws, read) = open(addr, &*provider).await;
                next_text(&mut ws, &mut buf).await;
                bytes.fetch_add(read.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("storm task");
    }
    let elapsed = started.elapsed();
    let cpu = server.cpu() - cpu;
    let n = args.handshakes as f64;
    Figures {
        per_second: n / elapsed.as_secs_f64(),
        bytes_each: bytes.load(Ordering::Relaxed) as f64 / n,
        cpu_us_each: cpu.as_secs_f64() * 1e6 / n,
    }
}

async fn post_burst(addr: SocketAddr, count: usize, bytes: usize) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /bench/burst?count={count}&bytes={bytes} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("POST");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response");
    assert!(response.starts_with(b"HTTP/1.1 200"), "burst refused");
}

async fn fanout<P>(server: &Server, args: &Args, provider: P) -> Figures
where
    P: ExtensionProvider + Send + Sync + 'static,
    P::Extension: Send + 'static,
{
    let provider = Arc::new(provider);
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let (mut ws, read) = open(server.addr, &*provider).await;
        let mut buf = BytesMut::new();
        next_text(&mut ws, &mut buf).await; // the snapshot
        clients.push((ws, read));
    }
    let bytes_before: u64 = clients
        .iter()
        .map(|(_, read)| read.load(Ordering::Relaxed))
        .sum();
    let counters: Vec<_> = clients.iter().map(|(_, read)| read.clone()).collect();
    let count = args.count;
    let cpu = server.cpu();
    let started = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(mut ws, _)| {
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                for _ in 0..count {
                    next_text(&mut ws, &mut buf).await;
                }
            })
        })
        .collect();
    post_burst(server.addr, args.count, args.bytes).await;
    for reader in readers {
        reader.await.expect("reader");
    }
    let elapsed = started.elapsed();
    let cpu = server.cpu() - cpu;
    let bytes: u64 = counters
        .iter()
        .map(|read| read.load(Ordering::Relaxed))
        .sum::<u64>()
        - bytes_before;
    let deliveries = (args.clients * args.count) as f64;
    Figures {
        per_second: deliveries / elapsed.as_secs_f64(),
        bytes_each: bytes as f64 / deliveries,
        cpu_us_each: cpu.as_secs_f64() * 1e6 / deliveries,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let connect = match args.scenario.as_str() {
        "connect" => true,
        "fanout" => false,
        other => panic!("unknown scenario {other}: connect or fanout"),
    };
    let sessions = if connect { args.sessions } else { 0 };
    let mut off = Vec::new();
    let mut on = Vec::new();
    for run in 0..args.runs {
        let server = Server::start(&args.server, sessions).await;
        for compress in [run % 2 == 1, run % 2 == 0] {
            let figures = match (connect, compress) {
                (true, false) => storm(&server, &args, NoExtProvider).await,
                (true, true) => storm(&server, &args, DeflateExtProvider::default()).await,
                (false, false) => fanout(&server, &args, NoExtProvider).await,
                (false, true) => fanout(&server, &args, DeflateExtProvider::default()).await,
            };
            eprintln!(
                "run {} compression {}: {:.0}/s, {:.0} B each, {:.3} µs server CPU each",
                run + 1,
                if compress { "on " } else { "off" },
                figures.per_second,
                figures.bytes_each,
                figures.cpu_us_each
            );
            if compress { &mut on } else { &mut off }.push(figures);
        }
        server.stop();
    }
    let pick = |runs: &[Figures], f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    let (unit, what) = if connect {
        ("handshakes/s", "B per handshake")
    } else {
        ("deliveries/s", "B per delivery")
    };
    println!(
        "| {} (median of {}) | off | on | on/off |",
        args.scenario, args.runs
    );
    println!("|---|---|---|---|");
    for (name, f) in [
        (unit, (|f: &Figures| f.per_second) as fn(&Figures) -> f64),
        (what, |f: &Figures| f.bytes_each),
        ("server CPU µs each", |f: &Figures| f.cpu_us_each),
    ] {
        let (a, b) = (pick(&off, f), pick(&on, f));
        println!("| {name} | {a:.3} | {b:.3} | {:.2}× |", b / a);
    }
}
