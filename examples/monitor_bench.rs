//! Benchmarks of the log monitor (not timed tests): it generates its data in a temp dir and
//! prints the figures.
//!
//! ```text
//! cargo run --release --example monitor_bench                 # all three
//! cargo run --release --example monitor_bench -- latency      # append → frame, 100 logs
//! cargo run --release --example monitor_bench -- load --gib 1 # 1 GiB log + 10 000 old files
//! cargo run --release --example monitor_bench -- idle --secs 60
//! ```
//!
//! - **latency**: 100 active Claude Code session logs, the monitor publishing into
//!   the `Publisher` of a real `axum::serve` with a connected tokio-tungstenite
//!   client; one line appended at a time (to a random log, every 10 ms) until the client
//!   receives the `delta` carrying it. Prints p50 / p99 / max.
//! - **load**: the first scan of a fresh monitor over one large Claude Code log (default
//!   1 GiB) plus 10 000 historical logs (a year old): wall time next to `wc -l` on the same
//!   large file, and the growth of peak RSS (`VmHWM`) during the scan; then the same first
//!   load by a spawned monitor (in passes, publishing after each), until the last message
//!   is published.
//! - **idle**: CPU time (user + system, from `/proc/self/stat`) the running monitor uses
//!   over a period (default 60 s, so one safety-net rescan falls in it) with 10 000
//!   historical logs and nothing changing.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Event, WsLayer};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The command line (`--help` lists it).
#[derive(clap::Parser)]
#[command(about = "The monitor's benchmarks: latency, load, idle")]
struct Args {
    /// The benchmarks to run, in this order [default: all three].
    #[arg(value_enum, value_name = "BENCHMARK")]
    which: Vec<Which>,
    /// load: the size of the large Claude Code log, in GiB.
    #[arg(long, value_name = "GIB", default_value_t = 1.0)]
    gib: f64,
    /// idle: how long to watch, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    secs: u64,
}

/// One benchmark.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Which {
    /// Append → frame over 100 active logs.
    Latency,
    /// The first scan of one large log and 10 000 old ones.
    Load,
    /// 10 000 historical logs, nothing changing.
    Idle,
}

fn main() -> Result<(), Error> {
    let Args {
        mut which,
        gib,
        secs: idle_secs,
    } = clap::Parser::parse();
    if which.is_empty() {
        which = vec![Which::Latency, Which::Load, Which::Idle];
    }
    for w in which {
        match w {
            Which::Latency => latency()?,
            Which::Load => load(gib)?,
            Which::Idle => idle(idle_secs)?,
        }
    }
    Ok(())
}

/// One Claude Code user line.
fn user_line(session: &str, uuid: &str, text_len: usize) -> String {
    format!(
        r#"{{"type":"user","uuid":"{uuid}","sessionId":"{session}","timestamp":"2026-01-05T09:00:00.000Z","cwd":"/home/dev/project","gitBranch":"main","version":"2.0.14","message":{{"role":"user","content":"{}"}}}}"#,
        "p".repeat(text_len)
    ) + "\n"
}

/// One Claude Code assistant line (one content block of message `msg`).
fn assistant_line(session: &str, msg: &str, block: &str, output: u64) -> String {
    format!(
        r#"{{"type":"assistant","uuid":"{msg}-{output}","sessionId":"{session}","timestamp":"2026-01-05T09:00:01.000Z","cwd":"/home/dev/project","gitBranch":"main","requestId":"req_{msg}","message":{{"id":"{msg}","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{block}],"stop_reason":null,"usage":{{"input_tokens":10,"cache_creation_input_tokens":500,"cache_read_input_tokens":40000,"output_tokens":{output}}}}}}}"#
    ) + "\n"
}

/// Writes `count` small year-old session logs under `root`.
fn historical(root: &Path, count: usize) -> Result<(), Error> {
    let old = SystemTime::now() - Duration::from_secs(365 * 24 * 3600);
    for i in 0..count {
        let dir = root.join(format!("-home-dev-old-{}", i % 100));
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("old-{i:05}.jsonl"));
        let id = format!("old-{i:05}");
        let mut content = user_line(&id, "u1", 200);
        content += &assistant_line(&id, "m1", r#"{"type":"text","text":"ok"}"#, 12);
        fs::write(&path, content)?;
        File::options().write(true).open(&path)?.set_modified(old)?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency() -> Result<(), Error> {
    const LOGS: usize = 100;
    const SAMPLES: usize = 1000;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("projects");
    let mut logs = Vec::new();
    for i in 0..LOGS {
        let project = root.join(format!("-home-dev-p{}", i % 10));
        fs::create_dir_all(&project)?;
        let id = format!("live-{i:03}");
        let path = project.join(format!("{id}.jsonl"));
        fs::write(&path, user_line(&id, "u0", 100))?;
        logs.push((id, path));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let ws = WsLayer::new().send_buffer(1024);
        let (ws_router, hub) = ws.clone().build("/ws");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().merge(ws_router);
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        let handle = Monitor::builder()
            .root(SourceKind::Claude, &root)
            .build(hub.clone())
            .spawn()?;
        // Wait until every log is loaded.
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.sessions().len() < LOGS {
            if Instant::now() > deadline {
                return Err::<(), Error>("the logs were not loaded within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut samples = Vec::with_capacity(SAMPLES);
        for k in 0..SAMPLES {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let (id, path) = &logs[(rng % LOGS as u64) as usize];
            let marker = 1_000_000 + k as u64;
            let line = assistant_line(id, &format!("msg-{k}"), r#"{"type":"text","text":"t"}"#, marker);
            let start = Instant::now();
            {
                let mut f = File::options().append(true).open(path)?;
                f.write_all(line.as_bytes())?;
            }
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(10), client.next())
                    .await
                    .map_err(|_| "no frame within 10 s")?
                    .ok_or("stream ended")??;
                let Message::Text(text) = msg else { continue };
                let ev = Event::from_json(text.as_bytes())?;
                if ev.updates.iter().any(|s| s.id == *id && s.output_tokens >= marker as i64) {
                    break;
                }
            }
            samples.push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples.sort_unstable();
        println!(
            "latency: append -> frame over {SAMPLES} appends to {LOGS} active logs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&samples, 0.50).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3,
        );
        tokio::task::spawn_blocking(move || handle.stop()).await?;
        Ok(())
    })
}

/// `(VmRSS, VmHWM)` of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of this process, from `/proc/self/stat`, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// Writes a Claude Code log of about `bytes` bytes: turns of a prompt, a three-line
/// assistant message with a tool call, and a tool result. Returns the number of lines.
fn big_log(path: &Path, bytes: u64) -> Result<u64, Error> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut written, mut lines, mut turn) = (0u64, 0u64, 0u64);
    let id = "big-session";
    while written < bytes {
        let msg = format!("msg_{turn:08}");
        let tool = format!("toolu_{turn:08}");
        let mut chunk = user_line(id, &format!("u{turn}"), 600);
        chunk += &assistant_line(
            id,
            &msg,
            r#"{"type":"thinking","thinking":"considering the options at some length"}"#,
            10,
        );
        chunk += &assistant_line(
            id,
            &msg,
            r#"{"type":"text","text":"Let me look at the file first."}"#,
            30,
        );
        chunk += &assistant_line(
            id,
            &msg,
            &format!(
                r#"{{"type":"tool_use","id":"{tool}","name":"Read","input":{{"file_path":"/home/dev/project/src/lib.rs"}}}}"#
            ),
            55,
        );
        chunk += &format!(
            r#"{{"type":"user","uuid":"r{turn}","sessionId":"{id}","timestamp":"2026-01-05T09:00:02.000Z","message":{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"{tool}","content":"{}"}}]}}}}"#,
            "x".repeat(900)
        );
        chunk += "\n";
        out.write_all(chunk.as_bytes())?;
        written += chunk.len() as u64;
        lines += 5;
        turn += 1;
    }
    out.flush()?;
    Ok(lines)
}

fn load(gib: f64) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("projects");
    historical(&root, 10_000)?;
    let project = root.join("-home-dev-big");
    fs::create_dir_all(&project)?;
    let big: PathBuf = project.join("big-session.jsonl");
    let bytes = (gib * (1u64 << 30) as f64) as u64;
    let lines = big_log(&big, bytes)?;
    let size = fs::metadata(&big)?.len();

    // Warm the page cache the same way for both readers.
    let wc = |path: &Path| -> Result<Duration, Error> {
        let start = Instant::now();
        let out = std::process::Command::new("wc")
            .arg("-l")
            .arg(path)
            .output()?;
        if !out.status.success() {
            return Err("wc -l failed".into());
        }
        Ok(start.elapsed())
    };
    wc(&big)?;
    let wc_time = wc(&big)?;

    let (rss_before, _) = rss_kib();
    let start = Instant::now();
    let mut monitor = Monitor::builder()
        .root(SourceKind::Claude, &root)
        .build(WsLayer::new().build::<()>("/ws").1);
    monitor.scan();
    let scan_time = start.elapsed();
    let (_, hwm_after) = rss_kib();
    let sessions = monitor.sessions();
    let (files, dormant) = monitor.file_counts();
    let s = sessions
        .iter()
        .find(|s| s.id == "big-session")
        .ok_or("big session not loaded")?;
    println!(
        "load: {:.2} GiB log ({lines} lines) + 10 000 historical logs: first scan {:.2} s \
         ({:.0} MiB/s), wc -l {:.2} s (ratio {:.1}x); peak RSS growth {:.1} MiB; \
         {} session(s), {dormant}/{files} files dormant; {} messages counted",
        size as f64 / (1u64 << 30) as f64,
        scan_time.as_secs_f64(),
        size as f64 / (1u64 << 20) as f64 / scan_time.as_secs_f64(),
        wc_time.as_secs_f64(),
        scan_time.as_secs_f64() / wc_time.as_secs_f64(),
        hwm_after.saturating_sub(rss_before) as f64 / 1024.0,
        sessions.len(),
        s.message_count,
    );

    // The same first load on the monitor's own thread (as `spawn` runs it: in passes, with
    // a batch after each): until the big session's last message is published.
    let messages = s.message_count;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sink = BigCount(seen.clone());
    let start = Instant::now();
    let handle = Monitor::builder()
        .root(SourceKind::Claude, &root)
        .build(sink)
        .spawn()?;
    while seen.load(std::sync::atomic::Ordering::Relaxed) < messages {
        if start.elapsed() > Duration::from_secs(600) {
            return Err("the spawned monitor did not load the big log in 10 min".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let spawned_time = start.elapsed();
    handle.stop();
    println!(
        "load (spawned): {:.2} s ({:.0} MiB/s) until the last message was published",
        spawned_time.as_secs_f64(),
        size as f64 / (1u64 << 20) as f64 / spawned_time.as_secs_f64(),
    );
    Ok(())
}

/// Records the big session's latest message count.
struct BigCount(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl agentwatch_ws::EventSink for BigCount {
    fn handle_event(&self, event: &Event) -> Result<(), agentwatch_ws::SinkError> {
        for s in event.updates.iter().filter(|s| s.id == "big-session") {
            self.0
                .store(s.message_count, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

fn idle(secs: u64) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("projects");
    historical(&root, 10_000)?;
    let handle = Monitor::builder()
        .root(SourceKind::Claude, &root)
        .build(WsLayer::new().build::<()>("/ws").1)
        .spawn()?;
    // Let the start-up scan finish.
    std::thread::sleep(Duration::from_secs(2));
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let before = cpu_ticks();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let used = (cpu_ticks() - before) as f64 / ticks_per_sec;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "idle: 10 000 historical logs, nothing changing, {elapsed:.0} s: {:.0} ms CPU ({:.0} ms per minute)",
        used * 1e3,
        used * 1e3 * 60.0 / elapsed
    );
    handle.stop();
    Ok(())
}
