//! Benchmarks of the log monitor (not timed tests): it generates its data in a temp dir and
//! prints the figures.
//!
//! ```text
//! cargo run --release --example monitor_bench                 # latency, load, idle
//! cargo run --release --example monitor_bench -- latency      # append → frame, 100 logs
//! cargo run --release --example monitor_bench -- load --gib 1 # 1 GiB log + 10 000 old files
//! cargo run --release --example monitor_bench -- many         # 10 000 recent logs
//! cargo run --release --example monitor_bench -- idle --secs 60
//! cargo run --release --example monitor_bench -- load many --runs 3 --data /tmp/d
//! ```
//!
//! `load` and `many` run `--runs` first scans (default 3) and print the medians; `--data`
//! keeps the generated logs there and reuses them, so two builds can read the same files.
//! Their logs have the shapes of the samples in `tests/data/monitor/claude/` at realistic
//! sizes (see `big_log`): a turn is nine lines, most of its bytes text with escapes.
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
//! - **many**: the first scan of 10 000 recent Claude Code logs of 24 KiB each (all read),
//!   next to `wc -l` over the same files.
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
    /// load, many: first scans to run (the median is printed).
    #[arg(long, value_name = "N", default_value_t = 3)]
    runs: usize,
    /// load, many: keep the generated logs in DIR and reuse them when there (so two builds
    /// read the same files); default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
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
    /// The first scan of 10 000 recent logs.
    Many,
    /// 10 000 historical logs, nothing changing.
    Idle,
}

fn main() -> Result<(), Error> {
    let Args {
        mut which,
        gib,
        runs,
        data,
        secs: idle_secs,
    } = clap::Parser::parse();
    if which.is_empty() {
        which = vec![Which::Latency, Which::Load, Which::Idle];
    }
    for w in which {
        match w {
            Which::Latency => latency()?,
            Which::Load => load(gib, runs, data.as_deref())?,
            Which::Many => many(runs, data.as_deref())?,
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
    stat_ticks(11) + stat_ticks(12)
}

/// CPU time (user + system) of this process's waited-for children, in clock ticks.
fn child_cpu_ticks() -> u64 {
    stat_ticks(13) + stat_ticks(14)
}

/// Field `i` (0 = the one after the command name) of `/proc/self/stat`.
fn stat_ticks(i: usize) -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the
    // 13th, cutime and cstime the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields
        .get(i)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Text of about `len` bytes as Claude Code writes it inside a JSON string: words, with an
/// escaped newline every line of code or prose and escaped quotes now and then.
fn prose(len: usize, seed: u64) -> String {
    const WORDS: [&str; 12] = [
        "let",
        "value",
        "=",
        "self.parse(line)?;",
        "the",
        "function",
        "returns",
        "\\\"ok\\\"",
        "if",
        "error",
        "{",
        "}",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut k = seed;
    while out.len() < len {
        k = k
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out += WORDS[(k >> 33) as usize % WORDS.len()];
        out += if (k >> 20) % 7 == 0 { "\\n    " } else { " " };
    }
    out
}

/// The header fields Claude Code 2.x writes on each conversation line.
fn header(id: &str, uuid: &str, parent: &str) -> String {
    format!(
        r#""parentUuid":"{parent}","isSidechain":false,"userType":"external","cwd":"/home/dev/project","sessionId":"{id}","version":"2.1.39","gitBranch":"main","slug":"swift-rolling-otter","uuid":"{uuid}","timestamp":"2026-01-05T09:00:01.000Z""#
    )
}

/// Writes a Claude Code log of about `bytes` bytes, in the shapes of the samples under
/// `tests/data/monitor/claude/` at realistic sizes: turns of a prompt; an assistant message
/// of a thinking block (with its signature), a text block and a tool call, each its own
/// line; a hook's `progress` line; the tool result (its output also in `toolUseResult`);
/// the final text reply; a `turn_duration` line and a `file-history-snapshot`. Text has
/// escaped newlines and quotes as real code and prose do. Returns the number of lines.
fn big_log(path: &Path, bytes: u64) -> Result<u64, Error> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut written, mut lines, mut turn) = (0u64, 0u64, 0u64);
    let id = "big-session";
    let usage = |output: u64| {
        format!(
            r#""usage":{{"input_tokens":10,"cache_creation_input_tokens":500,"cache_read_input_tokens":40000,"cache_creation":{{"ephemeral_5m_input_tokens":500,"ephemeral_1h_input_tokens":0}},"output_tokens":{output},"service_tier":"standard"}}"#
        )
    };
    let signature = "EpYBCkYIBxgCKkB".repeat(30);
    while written < bytes {
        let t = turn;
        let msg = format!("msg_01{t:020}");
        let msg2 = format!("msg_02{t:020}");
        let tool = format!("toolu_01{t:018}");
        let assistant = |uuid: &str,
                         parent: &str,
                         msg: &str,
                         block: &str,
                         stop: &str,
                         output: u64| {
            format!(
                r#"{{{},"requestId":"req_{msg}","type":"assistant","message":{{"id":"{msg}","type":"message","role":"assistant","model":"claude-opus-4-6","content":[{block}],"stop_reason":{stop},"stop_sequence":null,{}}}}}"#,
                header(id, uuid, parent),
                usage(output)
            ) + "\n"
        };
        let result = prose(2000, t * 7 + 3);
        let lines_of_turn = [
            format!(
                r#"{{{},"type":"user","message":{{"role":"user","content":"{}"}},"thinkingMetadata":{{"maxThinkingTokens":31999}},"todos":[],"permissionMode":"default"}}"#,
                header(id, &format!("u{t}"), &format!("z{t}")),
                prose(400, t * 7)
            ) + "\n",
            assistant(
                &format!("a{t}"),
                &format!("u{t}"),
                &msg,
                &format!(
                    r#"{{"type":"thinking","thinking":"{}","signature":"{signature}"}}"#,
                    prose(800, t * 7 + 1)
                ),
                "null",
                12,
            ),
            assistant(
                &format!("b{t}"),
                &format!("a{t}"),
                &msg,
                &format!(r#"{{"type":"text","text":"{}"}}"#, prose(200, t * 7 + 2)),
                "null",
                40,
            ),
            assistant(
                &format!("c{t}"),
                &format!("b{t}"),
                &msg,
                &format!(
                    r#"{{"type":"tool_use","id":"{tool}","name":"Read","input":{{"file_path":"/home/dev/project/src/lib.rs","limit":200}},"caller":{{"type":"direct"}}}}"#
                ),
                "null",
                95,
            ),
            format!(
                r#"{{{},"type":"progress","data":{{"type":"hook_progress","hookEvent":"PostToolUse","hookName":"PostToolUse:Read","command":"callback"}},"toolUseID":"{tool}","parentToolUseID":"{tool}"}}"#,
                header(id, &format!("p{t}"), &format!("c{t}"))
            ) + "\n",
            format!(
                r#"{{{},"type":"user","message":{{"role":"user","content":[{{"tool_use_id":"{tool}","type":"tool_result","content":"{result}"}}]}},"toolUseResult":{{"type":"text","file":{{"filePath":"/home/dev/project/src/lib.rs","content":"{result}","numLines":60,"startLine":1,"totalLines":60}}}},"sourceToolAssistantUUID":"c{t}"}}"#,
                header(id, &format!("r{t}"), &format!("p{t}"))
            ) + "\n",
            assistant(
                &format!("d{t}"),
                &format!("r{t}"),
                &msg2,
                &format!(r#"{{"type":"text","text":"{}"}}"#, prose(600, t * 7 + 4)),
                "null",
                180,
            ),
            format!(
                r#"{{{},"type":"system","subtype":"turn_duration","durationMs":48211,"isMeta":false}}"#,
                header(id, &format!("s{t}"), &format!("d{t}"))
            ) + "\n",
            format!(
                r#"{{"type":"file-history-snapshot","messageId":"u{t}","snapshot":{{"messageId":"u{t}","trackedFileBackups":{{"/home/dev/project/src/lib.rs":{{"backupFileName":"5e0c1a2b@v2","version":2,"backupTime":"2026-01-05T09:00:00.000Z"}}}},"timestamp":"2026-01-05T09:00:00.000Z"}},"isSnapshotUpdate":false}}"#
            ) + "\n",
        ];
        for line in &lines_of_turn {
            out.write_all(line.as_bytes())?;
            written += line.len() as u64;
        }
        lines += lines_of_turn.len() as u64;
        turn += 1;
    }
    out.flush()?;
    Ok(lines)
}

/// `wc -l` over `paths` (its wall time), as the floor a reader of the same bytes can reach.
fn wc(paths: &[PathBuf]) -> Result<Duration, Error> {
    let start = Instant::now();
    let out = std::process::Command::new("wc")
        .arg("-l")
        .args(paths)
        .output()?;
    if !out.status.success() {
        return Err("wc -l failed".into());
    }
    Ok(start.elapsed())
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux 4.0+).
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The data directory: `data` (kept, and reused when it holds `name` already) or a
/// temporary one.
fn data_dir(
    data: Option<&Path>,
    name: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), Error> {
    Ok(match data {
        Some(d) => (d.join(name), None),
        None => {
            let tmp = tempfile::tempdir()?;
            (tmp.path().join(name), Some(tmp))
        }
    })
}

/// `runs` first scans, each by a fresh monitor over `root`, each after a `wc -l` of `paths`
/// (which also warms the page cache): the median times, their ratio and the largest peak
/// RSS growth; returns the monitor of the last run.
fn first_scans(root: &Path, paths: &[PathBuf], runs: usize, what: &str) -> Result<Monitor, Error> {
    wc(paths)?;
    let (mut scans, mut wcs, mut ratios, mut growth) = (Vec::new(), Vec::new(), Vec::new(), 0f64);
    let (mut cpu, mut wc_cpu) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs.max(1) {
        // Reused data is read only if recent: modified now, as a live session's log is.
        let now = SystemTime::now();
        for path in paths {
            File::options().write(true).open(path)?.set_modified(now)?;
        }
        let children = child_cpu_ticks();
        let wc_time = wc(paths)?.as_secs_f64();
        wc_cpu.push((child_cpu_ticks() - children) as f64 / 100.0);
        drop(last.take());
        reset_peak_rss();
        let (rss_before, _) = rss_kib();
        let ticks = cpu_ticks();
        let start = Instant::now();
        let mut monitor = Monitor::builder()
            .root(SourceKind::Claude, root)
            .build(WsLayer::new().build::<()>("/ws").1);
        monitor.scan();
        let scan_time = start.elapsed().as_secs_f64();
        cpu.push((cpu_ticks() - ticks) as f64 / 100.0);
        let (_, hwm_after) = rss_kib();
        growth = growth.max(hwm_after.saturating_sub(rss_before) as f64 / 1024.0);
        scans.push(scan_time);
        wcs.push(wc_time);
        ratios.push(scan_time / wc_time);
        last = Some(monitor);
    }
    let bytes: u64 = paths
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let (scan, wc_time) = (median(scans.clone()), median(wcs));
    let (cpu, wc_cpu) = (median(cpu), median(wc_cpu));
    println!(
        "{what}: first scan median {scan:.3} s ({:.0} MiB/s), wc -l median {wc_time:.3} s, \
         ratio {:.1}x (per run: {}); runs {:?} s; CPU time (user + system) median {cpu:.2} s \
         against {wc_cpu:.2} s for wc -l ({:.1}x); peak RSS growth up to {growth:.1} MiB",
        bytes as f64 / (1u64 << 20) as f64 / scan,
        scan / wc_time,
        ratios
            .iter()
            .map(|r| format!("{r:.1}x"))
            .collect::<Vec<_>>()
            .join(", "),
        scans
            .iter()
            .map(|s| (s * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>(),
        cpu / wc_cpu.max(0.01),
    );
    last.ok_or_else(|| "no run".into())
}

/// 10 000 recent logs of a few turns each (modified now, so all are read): the first load of
/// a machine's worth of sessions.
fn many(runs: usize, data: Option<&Path>) -> Result<(), Error> {
    let (root, _tmp) = data_dir(data, "many")?;
    let done = root.join(".complete");
    if !done.exists() {
        for i in 0..10_000 {
            let dir = root.join(format!("-home-dev-p{}", i % 100));
            fs::create_dir_all(&dir)?;
            big_log(&dir.join(format!("recent-{i:05}.jsonl")), 24 * 1024)?;
        }
        fs::write(&done, b"")?;
    }
    let mut paths = Vec::new();
    for dir in fs::read_dir(&root)? {
        let dir = dir?.path();
        if dir.is_dir() {
            for f in fs::read_dir(&dir)? {
                paths.push(f?.path());
            }
        }
    }
    paths.sort();
    let monitor = first_scans(&root, &paths, runs, "many: 10 000 recent logs")?;
    let (files, dormant) = monitor.file_counts();
    println!(
        "many: {files} files tracked, {dormant} dormant; {} sessions",
        monitor.sessions().len()
    );
    Ok(())
}

fn load(gib: f64, runs: usize, data: Option<&Path>) -> Result<(), Error> {
    let (root, _tmp) = data_dir(data, "load")?;
    let project = root.join("-home-dev-big");
    let big: PathBuf = project.join("big-session.jsonl");
    let bytes = (gib * (1u64 << 30) as f64) as u64;
    // Holds the line count once the data is complete.
    let done = root.join(format!(".complete-{bytes}"));
    if !done.exists() {
        let _ = fs::remove_dir_all(&root);
        historical(&root, 10_000)?;
        fs::create_dir_all(&project)?;
        let lines = big_log(&big, bytes)?;
        fs::write(&done, lines.to_string())?;
    }
    let size = fs::metadata(&big)?.len();
    let lines = fs::read_to_string(&done)?;
    let what = format!(
        "load: {:.2} GiB log ({lines} lines) + 10 000 historical logs",
        size as f64 / (1u64 << 30) as f64
    );
    let monitor = first_scans(&root, std::slice::from_ref(&big), runs, &what)?;
    let sessions = monitor.sessions();
    let (files, dormant) = monitor.file_counts();
    let s = sessions
        .iter()
        .find(|s| s.id == "big-session")
        .ok_or("big session not loaded")?;
    println!(
        "load: {} session(s), {dormant}/{files} files dormant; {} messages counted",
        sessions.len(),
        s.message_count,
    );
    drop(monitor);

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
