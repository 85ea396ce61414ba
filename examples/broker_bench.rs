//! Benchmark of the broker hop (features `redis`, `nats`): producers (one per machine) and
//! three nodes on one Redis (or, with `--nats URL`, one NATS JetStream), beside a single node
//! fed directly, in the same run, each a process of its own.
//!
//! ```sh
//! cargo build --release --example broker_bench
//! target/release/examples/broker_bench --clients 1000 --rate 50 --seconds 10
//! target/release/examples/broker_bench --nats nats://127.0.0.1:4222 --clients 1000 --rate 50 --seconds 10
//! # three machines, 100 sessions each
//! target/release/examples/broker_bench --producers 3 --sessions 100 --clients 1000 --rate 10 --seconds 15
//! ```
//!
//! The driver (this binary without `--role`) starts itself as: `producers` producers, each
//! publishing `rate` events a second for `seconds` into a fresh stream (`BrokerSink`, machine
//! `machine-<i>`, its events spread over `sessions` sessions of its own); three nodes
//! serving from it (`Follower`); and a *local* node that generates every producer's schedule
//! at the same moments straight into its own `Publisher`, its sessions labelled as the broker
//! nodes label them (the single-node baseline). It connects
//! `clients` WebSocket clients to each of the four nodes, then starts both schedules and
//! reports per node: deliveries and losses (a client checks every `seq` follows the one
//! before; the events a later snapshot stands for, such as the producer's first entry, a
//! resync, count as received), latency from the event's `at` (stamped at publish) to its arrival at the client,
//! and the node process's CPU time (utime + stime from `/proc`) per delivery.
//!
//! Everything shares this machine's cores with the clients, which run in the driver: the
//! figures compare the nodes with each other, not with a dedicated server.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agentwatch_ws::broker::{Broker, BrokerSink, Follower, NatsBroker, RedisBroker};
use agentwatch_ws::{Event, EventSink, SessionState, Timestamp, WsLayer};
use axum::Router;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// The command line (`--help` lists it). The driver starts its children with `--role` and
/// `--port`.
#[derive(clap::Parser)]
#[command(about = "Benchmark of the broker hop: a producer, three nodes and a single node")]
struct Flags {
    /// The Redis broker.
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// A NATS JetStream broker instead of Redis.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// The stream key, deleted at the end [default: agentwatch-bench:<driver's pid>].
    #[arg(long, value_name = "KEY")]
    stream: Option<String>,
    /// WebSocket clients per node.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    clients: usize,
    /// Events published a second, by each producer.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Producers, one machine each.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    producers: u64,
    /// Sessions per producer its events update in turn.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    sessions: u64,
    /// How long the schedule publishes, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10)]
    seconds: u64,
    /// The first of the four nodes' ports on 127.0.0.1.
    #[arg(long, value_name = "PORT", default_value_t = 3201)]
    base_port: u16,
    /// A child's role: producer, local or node (none: the driver).
    #[arg(long, hide = true)]
    role: Option<String>,
    /// A node's port (set by the driver).
    #[arg(long, hide = true)]
    port: Option<u16>,
    /// A producer's index (set by the driver).
    #[arg(long, hide = true)]
    index: Option<u64>,
}

struct Config {
    redis: String,
    nats: Option<String>,
    stream: String,
    clients: usize,
    rate: u64,
    producers: u64,
    sessions: u64,
    seconds: u64,
    base_port: u16,
    role: String,
    port: Option<u16>,
    index: u64,
}

fn config() -> Config {
    let flags = <Flags as clap::Parser>::parse();
    Config {
        redis: flags.redis,
        nats: flags.nats,
        stream: flags
            .stream
            .unwrap_or_else(|| format!("agentwatch-bench:{}", std::process::id())),
        clients: flags.clients,
        rate: flags.rate,
        producers: flags.producers,
        sessions: flags.sessions,
        seconds: flags.seconds,
        base_port: flags.base_port,
        role: flags.role.unwrap_or_default(),
        port: flags.port,
        index: flags.index.unwrap_or(0),
    }
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = config();
    let role = config.role.clone();
    let result = rt.block_on(async {
        match role.as_str() {
            "" => drive(config).await,
            "producer" => produce(config).await,
            "local" => local(config).await,
            "node" => node(config).await,
            other => Err(format!("unknown role {other:?}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for "start" on stdin: the driver's signal that every client is connected.
async fn wait_for_start() -> Result<(), String> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The machine name of producer `index`.
fn machine(index: u64) -> String {
    format!("machine-{index}")
}

/// The schedule: every producer publishes `rate` events a second for `seconds`, producer
/// `p`'s `j`-th at `(j * producers + p) / (rate * producers)` s, each a delta of one of its
/// `sessions` sessions, stamped when it is published. `only`: one producer's share, with its
/// own seqs and no label (a broker producer); `None`: every producer's, one seq for all, each
/// session labelled with its machine (the local node, as the broker nodes serve it).
async fn publish_schedule(config: &Config, sink: &dyn EventSink, only: Option<u64>) {
    let start = Instant::now();
    let per_second = (config.rate * config.producers) as f64;
    let total = config.rate * config.seconds * config.producers;
    let mut seq = 0;
    for i in 0..total {
        let producer = i % config.producers;
        if only.is_some_and(|only| only != producer) {
            continue;
        }
        let due = start + Duration::from_secs_f64(i as f64 / per_second);
        tokio::time::sleep_until(due.into()).await;
        seq += 1;
        let name = machine(producer);
        let session = SessionState {
            id: format!(
                "{name}-session-{:03}",
                (i / config.producers) % config.sessions
            ),
            source: "claude".into(),
            model: "claude-opus-4-1".into(),
            message_count: seq as i64,
            context_tokens: 1000 + seq as i64,
            machine: if only.is_none() { name } else { String::new() },
            ..Default::default()
        };
        if let Err(e) = sink.handle_event(&Event::delta(seq, vec![session], vec![])) {
            eprintln!("publish failed: {e}");
        }
    }
}

async fn produce(config: Config) -> Result<(), String> {
    match &config.nats {
        Some(url) => {
            let broker = NatsBroker::open(url, config.stream.clone()).map_err(|e| e.to_string())?;
            produce_into(&config, broker).await
        }
        None => {
            let broker = RedisBroker::open(&config.redis, config.stream.clone())
                .map_err(|e| e.to_string())?;
            produce_into(&config, broker).await
        }
    }
}

async fn produce_into<B: Broker>(config: &Config, broker: B) -> Result<(), String> {
    let publisher = BrokerSink::builder(broker)
        .machine(machine(config.index))
        .spawn();
    publisher.started().await.map_err(|e| e.to_string())?;
    wait_for_start().await?;
    publish_schedule(config, &publisher, Some(config.index)).await;
    tokio::time::timeout(Duration::from_secs(30), publisher.flush())
        .await
        .map_err(|_| "flush timed out".to_string())?;
    let stats = publisher.stats();
    if stats.dropped > 0 {
        eprintln!("producer dropped {} events", stats.dropped);
    }
    Ok(())
}

async fn serve(ws: Router, port: u16) -> Result<(), String> {
    let app = Router::new().merge(ws);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on {port}: {e}"))?;
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(())
}

/// The WsLayer as bench_server configures it: no rate limit or cap (thousands of sockets
/// from one IP), a deep send buffer.
fn layer() -> WsLayer {
    WsLayer::new().rate_limit(None).send_buffer(16_384)
}

async fn local(config: Config) -> Result<(), String> {
    let (ws, sink) = layer().build("/ws");
    serve(ws, config.port.ok_or("--port")?).await?;
    wait_for_start().await?;
    publish_schedule(&config, &sink, None).await;
    std::future::pending::<()>().await;
    Ok(())
}

async fn node(config: Config) -> Result<(), String> {
    match &config.nats {
        Some(url) => {
            let broker = NatsBroker::open(url, config.stream.clone()).map_err(|e| e.to_string())?;
            node_on(&config, broker).await
        }
        None => {
            let broker = RedisBroker::open(&config.redis, config.stream.clone())
                .map_err(|e| e.to_string())?;
            node_on(&config, broker).await
        }
    }
}

async fn node_on<B: Broker>(config: &Config, broker: B) -> Result<(), String> {
    let (ws, publisher) = layer().build("/ws");
    let follower = Follower::new(broker, publisher).spawn();
    follower.ready().await;
    serve(ws, config.port.ok_or("--port")?).await?;
    std::future::pending::<()>().await;
    Ok(())
}

/// What the clients of one node saw.
#[derive(Default)]
struct Seen {
    deliveries: AtomicU64,
    /// Events a snapshot after the first one stood for (a producer's first entry is a
    /// resync): received as state, not lost.
    in_snapshots: AtomicU64,
    gaps: AtomicU64,
    /// Microseconds from `at` to arrival, one per delivery.
    latencies: Mutex<Vec<u32>>,
}

/// Reads one client's stream: a snapshot, then events whose seq must follow each other.
async fn client(
    port: u16,
    seen: Arc<Seen>,
    total: u64,
    ready: Arc<AtomicU64>,
) -> Result<(), String> {
    let url = format!("ws://127.0.0.1:{port}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let mut last: Option<u64> = None;
    let mut latencies = Vec::with_capacity(total as usize);
    while let Some(msg) = ws.next().await {
        let Ok(Message::Text(text)) = msg else {
            continue;
        };
        let now = SystemTime::now();
        let (seq, at, snapshot) = parse(text.as_str()).ok_or("undecodable event")?;
        if snapshot {
            match last {
                None => {
                    ready.fetch_add(1, Ordering::Relaxed);
                }
                Some(prev) => {
                    seen.in_snapshots
                        .fetch_add(seq.saturating_sub(prev), Ordering::Relaxed);
                }
            }
            last = Some(seq);
            if seq >= total {
                break;
            }
            continue;
        }
        if let Some(prev) = last {
            if seq != prev + 1 {
                seen.gaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        last = Some(seq);
        seen.deliveries.fetch_add(1, Ordering::Relaxed);
        if let Some(at) = at.to_system_time() {
            let micros = now.duration_since(at).unwrap_or_default().as_micros();
            latencies.push(micros.min(u32::MAX as u128) as u32);
        }
        if seq >= total {
            break;
        }
    }
    seen.latencies
        .lock()
        .map_err(|e| e.to_string())?
        .extend(latencies);
    Ok(())
}

/// `seq`, `at` and whether it is a snapshot, from the head of the event's JSON
/// (`{"seq":N,"at":"…","type":"…"`), without decoding the rest.
fn parse(text: &str) -> Option<(u64, Timestamp, bool)> {
    let rest = text.strip_prefix("{\"seq\":")?;
    let (seq, rest) = rest.split_once(",\"at\":\"")?;
    let (at, rest) = rest.split_once('"')?;
    Some((
        seq.parse().ok()?,
        Timestamp::parse(at).ok()?,
        rest.starts_with(",\"type\":\"snapshot\""),
    ))
}

/// CPU time (user + system) of a process, from `/proc/<pid>/stat`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux everywhere we run).
const TICKS_PER_SECOND: u64 = 100;

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn drive(config: Config) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spawn = |role: &str, port: Option<u16>, index: u64| -> Result<Child, String> {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--role",
            role,
            "--redis",
            &config.redis,
            "--stream",
            &config.stream,
        ])
        .args([
            "--rate",
            &config.rate.to_string(),
            "--seconds",
            &config.seconds.to_string(),
            "--producers",
            &config.producers.to_string(),
            "--sessions",
            &config.sessions.to_string(),
            "--index",
            &index.to_string(),
        ])
        .stdin(Stdio::piped());
        if let Some(nats) = &config.nats {
            cmd.args(["--nats", nats]);
        }
        if let Some(port) = port {
            cmd.args(["--port", &port.to_string()]);
        }
        cmd.spawn().map_err(|e| format!("cannot start {role}: {e}"))
    };
    let names = ["local", "node-1", "node-2", "node-3"];
    let ports: Vec<u16> = (0..4).map(|i| config.base_port + i).collect();
    let producers = config.producers as usize;
    let mut children = Kill(Vec::new());
    for index in 0..config.producers {
        children.0.push(spawn("producer", None, index)?);
    }
    children.0.push(spawn("local", Some(ports[0]), 0)?);
    for port in &ports[1..] {
        children.0.push(spawn("node", Some(*port), 0)?);
    }
    // Every node listening.
    for port in &ports {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(format!("nothing listens on {port}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let total = config.rate * config.seconds * config.producers;
    let ready = Arc::new(AtomicU64::new(0));
    let mut seen = Vec::new();
    let mut tasks = Vec::new();
    for port in &ports {
        let s = Arc::new(Seen::default());
        for _ in 0..config.clients {
            tasks.push(tokio::spawn(client(*port, s.clone(), total, ready.clone())));
        }
        seen.push(s);
    }
    let expected_clients = (config.clients * ports.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) < expected_clients {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {expected_clients} clients connected",
                ready.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids: Vec<u32> = children.0.iter().map(Child::id).collect();
    let cpu_before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let started = Instant::now();
    // Producers and local node start their schedules together.
    for child in &mut children.0[..producers + 1] {
        if let Some(stdin) = child.stdin.as_mut() {
            stdin.write_all(b"start\n").map_err(|e| e.to_string())?;
        }
    }
    let limit = Duration::from_secs(config.seconds + 30);
    let mut failed = 0usize;
    for task in tasks {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("a client failed: {e}");
                }
            }
            _ => failed += 1,
        }
    }
    let cpu_after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    println!(
        "broker_bench: {} clients per node, {} events ({} producers x {} /s for {} s, {} sessions each), producers + 3 nodes + local node, {} cores",
        config.clients,
        total,
        config.producers,
        config.rate,
        config.seconds,
        config.sessions,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<8} {:>11} {:>6} {:>5} {:>9} {:>9} {:>9} {:>11} {:>12}",
        "node",
        "deliveries",
        "lost",
        "gaps",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu ms",
        "cpu µs/deliv"
    );
    let mut per_delivery = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let s = &seen[i];
        let deliveries = s.deliveries.load(Ordering::Relaxed);
        let mut lat = s.latencies.lock().map_err(|e| e.to_string())?.clone();
        lat.sort_unstable();
        // Children 0.. are the producers; node i is child producers + i.
        let ticks = cpu_after[producers + i].saturating_sub(cpu_before[producers + i]);
        let cpu_ms = ticks * 1000 / TICKS_PER_SECOND;
        let us = if deliveries == 0 {
            f64::NAN
        } else {
            cpu_ms as f64 * 1000.0 / deliveries as f64
        };
        per_delivery.push(us);
        println!(
            "{:<8} {:>11} {:>6} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>11} {:>12.3}",
            name,
            deliveries,
            (total * config.clients as u64)
                .saturating_sub(deliveries + s.in_snapshots.load(Ordering::Relaxed)),
            s.gaps.load(Ordering::Relaxed),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            cpu_ms,
            us
        );
    }
    let producer_ms = (0..producers)
        .map(|i| cpu_after[i].saturating_sub(cpu_before[i]))
        .sum::<u64>()
        * 1000
        / TICKS_PER_SECOND;
    let broker_mean = per_delivery[1..].iter().sum::<f64>() / 3.0;
    println!("producer cpu ms: {producer_ms}; failed clients: {failed}");
    println!(
        "cpu per delivery, broker nodes / local node: {:.2}x",
        broker_mean / per_delivery[0]
    );
    drop(children);
    if let Some(url) = &config.nats {
        if let (Ok(client), Ok(broker)) = (
            async_nats::connect(url).await,
            NatsBroker::open(url, config.stream.clone()),
        ) {
            let jetstream = async_nats::jetstream::new(client);
            let _ = jetstream.delete_stream(broker.stream_name()).await;
            let _ = jetstream.delete_stream(broker.checkpoint_stream()).await;
        }
        return Ok(());
    }
    if let Ok(client) = redis::Client::open(config.redis.as_str()) {
        if let Ok(mut conn) = client.get_connection() {
            let s = &config.stream;
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{s}:*"))
                .query(&mut conn)
                .unwrap_or_default();
            keys.push(s.clone());
            let _: Result<u64, _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
    Ok(())
}
