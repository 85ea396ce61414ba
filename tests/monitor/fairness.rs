//! Fair reading: a log that grows faster than the monitor can read it, or a large log's
//! first load, must not delay another session's update past the documented bound (100 ms:
//! the median sample is held to it, every sample to 1 s for a loaded machine), and memory
//! stays bounded meanwhile.

use crate::common;
use crate::monitor_support;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentwatch_ws::monitor::{Monitor, MonitorHandle, SourceKind};
use monitor_support::*;

/// The bound the monitor's docs give for another session's update while a log is being
/// read; the median sample must meet it (a debug build on a loaded 2-core machine measures
/// 25–50 ms). Before the reading was fair, an update waited for the whole log: seconds, or
/// forever.
const TARGET: Duration = Duration::from_millis(100);
/// What any single sample may take on that machine, where scheduling alone can add tens of
/// milliseconds.
const CEILING: Duration = Duration::from_secs(1);
/// Updates of the other session measured per test.
const SAMPLES: usize = 20;
/// The fast writer truncates its log when it reaches this size, so the disk never holds
/// more (every truncation also makes the monitor read the log again from the start).
const FAST_LOG_MAX: u64 = 1 << 30;

fn spawn(root: &Path, rec: &Recorder) -> MonitorHandle {
    Monitor::builder()
        .root(SourceKind::Claude, root)
        .idle_after(None)
        .build(rec.clone())
        .spawn()
        .unwrap()
}

/// About `bytes` of valid Claude Code user lines of session `id` (each ~1.2 KiB).
fn lines_of(id: &str, bytes: usize) -> (Vec<u8>, u64) {
    let mut buf = Vec::with_capacity(bytes + 4096);
    let mut n = 0u64;
    while buf.len() < bytes {
        let line = claude_user(
            id,
            &format!("u{n}"),
            "2026-01-05T09:00:00Z",
            &"p".repeat(1000),
        );
        buf.extend_from_slice(line.as_bytes());
        n += 1;
    }
    (buf, n)
}

/// Appends one line to `other` (its `n`th message) and waits for the monitor to publish
/// it; returns how long that took.
fn other_update(rec: &Recorder, other: &Path, n: i64) -> Duration {
    let line = claude_user("other", &format!("o{n}"), "2026-01-05T09:00:01Z", "x");
    let started = Instant::now();
    append(other, &line);
    rec.wait_for("the other session's update", |evs| {
        last_state(evs, "other").is_some_and(|s| s.message_count == n)
    });
    started.elapsed()
}

fn summary(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    let p50 = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    (p50, p90, *samples.last().unwrap())
}

#[test]
fn a_log_growing_at_full_speed_does_not_delay_another_session() {
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    let fast = project.join("fast.jsonl");
    let other = project.join("other.jsonl");
    write(
        &fast,
        &claude_user("fast", "f0", "2026-01-05T09:00:00Z", "a"),
    );
    write(
        &other,
        &claude_user("other", "o1", "2026-01-05T09:00:00Z", "a"),
    );
    let rec = Recorder::default();
    let handle = spawn(dir.path(), &rec);
    rec.wait_for("both sessions", |evs| {
        last_state(evs, "fast").is_some() && last_state(evs, "other").is_some()
    });

    // The writer: 8 MiB of valid lines, appended over and over as fast as the page cache
    // takes them; truncated back to empty at FAST_LOG_MAX.
    let (chunk, chunk_lines) = lines_of("fast", 8 << 20);
    let chunk_len = chunk.len() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, fast) = (stop.clone(), written.clone(), fast.clone());
        std::thread::spawn(move || {
            let mut file = OpenOptions::new().append(true).open(&fast).unwrap();
            let mut size = file.metadata().unwrap().len();
            while !stop.load(Ordering::Relaxed) {
                if size >= FAST_LOG_MAX {
                    file.set_len(0).unwrap();
                    size = 0;
                }
                file.write_all(&chunk).unwrap();
                size += chunk.len() as u64;
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let wrote_from = Instant::now();
    // Busy reading: well ahead of the monitor, which reads far less than this in a pass.
    let ahead = Instant::now() + WAIT;
    while written.load(Ordering::Relaxed) < 256 << 20 {
        assert!(Instant::now() < ahead, "the writer is stuck");
        std::thread::yield_now();
    }
    let rss_before = common::rss();
    let fast_before = last_state(&rec.events(), "fast").unwrap().message_count;

    let samples: Vec<Duration> = (0..SAMPLES)
        .map(|i| other_update(&rec, &other, i as i64 + 2))
        .collect();

    let written_lines = written.load(Ordering::Relaxed) / chunk_len * chunk_lines;
    let fast_read = last_state(&rec.events(), "fast").unwrap().message_count;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let secs = wrote_from.elapsed().as_secs_f64();
    let bytes = written.load(Ordering::Relaxed) as f64;
    let rss_growth = common::rss().saturating_sub(rss_before);
    let fast_after = last_state(&rec.events(), "fast").unwrap().message_count;
    let (p50, p90, max) = summary(samples);
    println!(
        "writer {:.2} GB/s ({:.1} GB in {secs:.1} s); other session's update: p50 {p50:?}, \
         p90 {p90:?}, max {max:?} ({SAMPLES} samples); fast session read meanwhile: {} \
         messages; RSS growth {:.1} MiB",
        bytes / secs / 1e9,
        bytes / 1e9,
        fast_after - fast_before,
        rss_growth as f64 / (1 << 20) as f64,
    );
    handle.stop();
    assert!(p50 <= TARGET, "median {p50:?} over the {TARGET:?} bound");
    assert!(max <= CEILING, "an update took {max:?}");
    assert!(
        fast_after != fast_before,
        "the fast log was not read meanwhile"
    );
    // The monitor was still behind the writer when the last sample was taken (else the
    // samples measured nothing). The counts compare only before the first truncation; a
    // writer that reached FAST_LOG_MAX that fast left any reader behind anyway.
    if bytes < FAST_LOG_MAX as f64 {
        assert!(
            (fast_read as u64) < written_lines,
            "the monitor caught up with the writer ({fast_read} of {written_lines} lines)"
        );
    }
    assert!(
        rss_growth < 64 << 20,
        "memory grew by {rss_growth} bytes while the writer wrote {bytes} bytes"
    );
}

#[test]
fn the_first_load_of_a_large_log_does_not_delay_another_session() {
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    let big = project.join("big.jsonl");
    let other = project.join("other.jsonl");
    std::fs::create_dir_all(&project).unwrap();
    // 256 MiB: the monitor's first load of it (a debug build reads some tens of MB/s) takes
    // seconds.
    let (chunk, lines) = lines_of("big", 8 << 20);
    let mut file = File::create(&big).unwrap();
    for _ in 0..32 {
        file.write_all(&chunk).unwrap();
    }
    drop(file);
    let total = i64::try_from(lines * 32).unwrap();
    write(
        &other,
        &claude_user("other", "o1", "2026-01-05T09:00:00Z", "a"),
    );

    let rec = Recorder::default();
    let started = Instant::now();
    let handle = spawn(dir.path(), &rec);
    let events = rec.wait_for("the other session", |evs| {
        last_state(evs, "other").is_some()
    });
    let first = started.elapsed();
    let big_then = last_state(&events, "big").map_or(0, |s| s.message_count);

    // While the big log loads, the other session's updates are published promptly.
    let mut samples = Vec::new();
    let mut n = 2;
    while samples.len() < SAMPLES
        && last_state(&rec.events(), "big").is_none_or(|s| s.message_count < total)
    {
        samples.push(other_update(&rec, &other, n));
        n += 1;
    }
    let loading = samples.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while last_state(&rec.events(), "big").is_none_or(|s| s.message_count < total) {
        assert!(
            Instant::now() < deadline,
            "the big log never finished loading"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let loaded = started.elapsed();
    handle.stop();
    println!(
        "first load: other session published after {first:?} (big log then at {big_then} of \
         {total} messages); {loading} updates during the load{}; the big log loaded in \
         {loaded:?}",
        if samples.is_empty() {
            String::new()
        } else {
            let (p50, p90, max) = summary(samples.clone());
            format!(" (p50 {p50:?}, p90 {p90:?}, max {max:?})")
        }
    );
    assert!(first <= CEILING, "the other session waited {first:?}");
    assert!(
        big_then < total,
        "the big log was read whole before the other session"
    );
    assert!(
        loading > 0,
        "the big log loaded before any update was measured"
    );
    let (p50, _, max) = summary(samples);
    assert!(p50 <= TARGET, "median {p50:?} over the {TARGET:?} bound");
    assert!(max <= CEILING, "an update took {max:?}");
}

/// A log that grows by 32 GiB in one step (a writer far faster than any reader): the
/// monitor reads through it in passes while the other session's updates go out.
#[cfg(unix)]
#[test]
fn a_log_growing_by_32_gib_at_once_does_not_delay_another_session() {
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    let huge = project.join("huge.jsonl");
    let other = project.join("other.jsonl");
    write(
        &huge,
        &claude_user("huge", "h0", "2026-01-05T09:00:00Z", "a"),
    );
    write(
        &other,
        &claude_user("other", "o1", "2026-01-05T09:00:00Z", "a"),
    );
    let rec = Recorder::default();
    let handle = spawn(dir.path(), &rec);
    rec.wait_for("both sessions", |evs| {
        last_state(evs, "huge").is_some() && last_state(evs, "other").is_some()
    });
    // 32 GiB appear at once: a sparse extension (no disk used), one over-long line of zeros
    // that the monitor has to read through.
    let file = OpenOptions::new().write(true).open(&huge).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len + (32 << 30)).unwrap();
    drop(file);
    // Let the monitor start on it.
    append(
        &other,
        &claude_user("other", "o2", "2026-01-05T09:00:01Z", "b"),
    );
    rec.wait_for("the first update", |evs| {
        last_state(evs, "other").is_some_and(|s| s.message_count == 2)
    });
    let samples: Vec<Duration> = (0..SAMPLES)
        .map(|i| other_update(&rec, &other, i as i64 + 3))
        .collect();
    let (p50, p90, max) = summary(samples);
    println!("32 GiB at once: other session's update p50 {p50:?}, p90 {p90:?}, max {max:?}");
    handle.stop();
    assert!(p50 <= TARGET, "median {p50:?} over the {TARGET:?} bound");
    assert!(max <= CEILING, "an update took {max:?}");
}
