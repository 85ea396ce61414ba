//! Bad input on disk: the monitor gives a clear account (health, parse failures), never
//! stalls a session, never hangs or panics.

use crate::monitor_support;

use std::fs;
use std::time::Duration;

use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{EventType, HealthStatus, LifecycleEventType};
use monitor_support::*;

fn monitor(root: &std::path::Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(SourceKind::Claude, root)
        .idle_after(None)
        .build(rec.clone())
}

#[test]
fn over_long_line_is_skipped_and_the_session_keeps_updating() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("big.jsonl");
    write(&log, &claude_user("big", "u1", "2026-01-05T09:00:00Z", "a"));
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    rec.take();
    // A 1.5 MiB line (valid JSON, but over the limit), then a normal one.
    let huge = claude_user("big", "u2", "2026-01-05T09:00:01Z", &"x".repeat(3 << 19));
    append(&log, &huge);
    append(&log, &claude_user("big", "u3", "2026-01-05T09:00:02Z", "b"));
    m.scan();
    let s = last_state(&rec.take(), "big").unwrap();
    assert_eq!(
        s.message_count, 2,
        "the over-long line is skipped, the next one read"
    );
    let h = m
        .health()
        .into_iter()
        .find(|h| h.source == "claude")
        .unwrap();
    assert_eq!((h.parse_failures, h.status), (1, HealthStatus::Healthy));
    append(&log, &claude_user("big", "u4", "2026-01-05T09:00:03Z", "c"));
    m.scan();
    assert_eq!(last_state(&rec.take(), "big").unwrap().message_count, 3);
}

#[test]
fn invalid_json_and_unknown_types_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("odd.jsonl");
    let mut content = claude_user("odd", "u1", "2026-01-05T09:00:00Z", "a");
    content += "{\"type\":\"user\",\"uuid\":\n";
    content += "\u{0}\u{1}binary\n";
    content += "{\"type\":\"user\"}{\"type\":\"user\"}\n";
    content += "{\"type\":\"telemetry-v9\",\"sessionId\":\"odd\"}\n";
    content += "[]\n\n";
    content += &claude_user("odd", "u2", "2026-01-05T09:00:01Z", "b");
    write(&log, &content);
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    let s = last_state(&rec.take(), "odd").unwrap();
    assert_eq!(s.message_count, 2);
    let h = m.health().into_iter().next().unwrap();
    // Truncated, binary, two glued records, `[]` and the empty line.
    assert_eq!(h.parse_failures, 5);
    assert_eq!(h.status, HealthStatus::Healthy);
}

#[test]
fn unreadable_directory_degrades_then_fails_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let locked = root.join("-locked");
    fs::create_dir_all(&locked).unwrap();
    let mut target = root.clone();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    }
    // Privileged users (CI runs as root) read any directory: then the root itself is made
    // unreadable by being a plain file where a directory should be.
    let privileged = fs::read_dir(&locked).is_ok();
    if privileged {
        target = dir.path().join("not-a-dir");
        fs::write(&target, "x").unwrap();
    }
    let rec = Recorder::default();
    let mut m = monitor(&target, &rec);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        m.scan();
        statuses.extend(
            rec.take()
                .into_iter()
                .filter_map(|e| e.health)
                .map(|h| (h.status, h.discover_failures, h.last_error)),
        );
    }
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert_eq!(statuses[0].0, HealthStatus::Healthy, "initial report");
    assert_eq!(
        (statuses[1].0.clone(), statuses[1].1),
        (HealthStatus::Degraded, 3)
    );
    assert_eq!(
        (statuses[2].0.clone(), statuses[2].1),
        (HealthStatus::Failed, 6)
    );
    let error = &statuses[2].2;
    assert!(error.starts_with("cannot read directory"), "{error}");
    assert!(
        !error.contains(dir.path().to_str().unwrap()),
        "no raw path: {error}"
    );

    // Readable again: one clean scan brings it back.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    }
    if privileged {
        fs::remove_file(&target).unwrap();
        fs::create_dir(&target).unwrap();
    }
    m.scan();
    let h: Vec<_> = rec.take().into_iter().filter_map(|e| e.health).collect();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].status.clone(), h[0].discover_failures),
        (HealthStatus::Healthy, 0)
    );
}

#[cfg(unix)]
#[test]
fn symlink_loops_and_non_utf8_names_neither_hang_nor_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    fs::create_dir_all(&project).unwrap();
    std::os::unix::fs::symlink(dir.path(), project.join("loop")).unwrap();
    std::os::unix::fs::symlink("me", project.join("me")).unwrap();
    std::os::unix::fs::symlink("me.jsonl", project.join("me.jsonl")).unwrap();
    let odd = project.join(OsStr::from_bytes(b"caf\xe9.jsonl"));
    fs::write(
        &odd,
        claude_user("", "u1", "2026-01-05T09:00:00Z", "a").replace(r#""sessionId":"","#, ""),
    )
    .unwrap();
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    let events = rec.take();
    // The non-UTF-8 file is a session, named by its (lossily decoded) stem.
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    assert_eq!(last_state(&events, "caf\u{fffd}").unwrap().message_count, 1);
    let h = m.health().into_iter().next().unwrap();
    assert_eq!(h.status, HealthStatus::Healthy);
    // The watcher copes too.
    let handle = m.spawn().unwrap();
    append(&odd, &claude_user("x", "u2", "2026-01-05T09:00:01Z", "b"));
    rec.wait_for("the appended line", |evs| {
        last_state(evs, "caf\u{fffd}").is_some_and(|s| s.message_count == 2)
    });
    handle.stop();
}

#[test]
fn deleted_log_leaves_the_session_to_go_stale() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("gone.jsonl");
    write(
        &log,
        &claude_user("gone", "u1", "2026-01-05T09:00:00Z", "a"),
    );
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .stale_after(Duration::from_secs(1))
        .idle_after(None)
        .build(rec.clone());
    m.scan();
    rec.take();
    fs::remove_file(&log).unwrap();
    m.scan();
    assert!(
        rec.take()
            .iter()
            .all(|e| e.kind == EventType::Health || e.lifecycle.is_none())
    );
    // Past the threshold (1 s, the smallest).
    std::thread::sleep(Duration::from_millis(1_050));
    m.scan();
    assert_eq!(lifecycle_kinds(&rec.take()), [LifecycleEventType::Stale]);
    assert_eq!(m.health()[0].status, HealthStatus::Healthy);
}

/// The smallest staleness bound still shows a log written just now: `stale_after(ZERO)` is
/// raised to 1 s, so the session is discovered, active, and not stale at once.
#[test]
fn the_smallest_stale_after_shows_a_log_written_just_now() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("new.jsonl");
    write(&log, &claude_user("new", "u1", "2026-01-05T09:00:00Z", "a"));
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .stale_after(Duration::ZERO)
        .idle_after(None)
        .build(rec.clone());
    m.scan();
    m.scan();
    let events = rec.take();
    assert_eq!(
        lifecycle_kinds(&events),
        [LifecycleEventType::Discovered],
        "{events:?}"
    );
    let state = last_state(&events, "new").expect("the session");
    assert_eq!(state.message_count, 1);
    assert_eq!(state.lifecycle, agentwatch_ws::LifecycleState::Active);
}

/// `first_seq` near `u64::MAX` is lowered to 2^63 - 1 (the monitor's numbering cannot
/// overflow and panic its thread), and 0 is raised to 1 (0 means "number it for me").
#[test]
fn first_seq_at_its_extremes_numbers_without_panicking() {
    for (first, expected) in [(u64::MAX - 2, u64::MAX >> 1), (0, 1)] {
        let dir = tempfile::tempdir().unwrap();
        for id in ["a", "b", "c", "d"] {
            let log = claude_project(dir.path()).join(format!("{id}.jsonl"));
            write(&log, &claude_user(id, "u1", "2026-01-05T09:00:00Z", "a"));
        }
        let rec = Recorder::default();
        let mut m = Monitor::builder()
            .root(SourceKind::Claude, dir.path())
            .idle_after(None)
            .first_seq(first)
            .build(rec.clone());
        m.scan();
        let seqs: Vec<u64> = rec.take().iter().map(|e| e.seq).collect();
        assert!(seqs.len() >= 4, "{seqs:?}");
        let rising: Vec<u64> = (expected..).take(seqs.len()).collect();
        assert_eq!(seqs, rising, "first_seq({first})");
    }
}

/// a configured duration near `Duration::MAX` overflowed the
/// monitor's clock arithmetic (`Instant + Duration`) and killed its thread. Every duration
/// setting at its extreme: the monitor keeps running and reading.
#[test]
fn extreme_durations_neither_panic_nor_stop_the_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("far.jsonl");
    write(&log, &claude_user("far", "u1", "2026-01-05T09:00:00Z", "a"));
    let rec = Recorder::default();
    let handle = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .stale_after(Duration::MAX)
        .retention(Duration::MAX)
        .idle_after(Duration::MAX)
        .rescan_interval(Duration::MAX)
        .build(rec.clone())
        .spawn()
        .unwrap();
    rec.wait_for("the first load", |evs| {
        last_state(evs, "far").is_some_and(|s| s.message_count == 1)
    });
    append(&log, &claude_user("far", "u2", "2026-01-05T09:00:01Z", "b"));
    rec.wait_for("the appended line", |evs| {
        last_state(evs, "far").is_some_and(|s| s.message_count == 2)
    });
    assert!(!handle.is_finished(), "the monitor thread ended");
    handle.stop();

    // The longest debounce: changes wait for it, and nothing overflows meanwhile.
    let handle = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .debounce(Duration::MAX)
        .stale_after(Duration::MAX)
        .build(rec.clone())
        .spawn()
        .unwrap();
    append(&log, &claude_user("far", "u3", "2026-01-05T09:00:02Z", "c"));
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        assert!(!handle.is_finished(), "the monitor thread ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.stop();
}

/// Runs `handle.stop()` on a thread of its own and returns how long it took, failing the
/// test (instead of hanging it) when it takes over `bound`.
fn stop_within(handle: agentwatch_ws::monitor::MonitorHandle, bound: Duration) -> Duration {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        handle.stop();
        let _ = tx.send(started.elapsed());
    });
    match rx.recv_timeout(bound) {
        Ok(took) => took,
        Err(_) => panic!("MonitorHandle::stop took over {bound:?}"),
    }
}

/// Makes a FIFO at `path` (with `mkfifo`, creating parent directories).
#[cfg(unix)]
fn mkfifo(path: &std::path::Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");
}

/// FIFOs, a Unix socket and device files (a link to `/dev/zero`, and a `mknod` character
/// device when the tests run as root) where a Claude session or subagent log, a Codex
/// rollout, a Gemini chat and a session-end marker are expected: opening the Gemini FIFO
/// used to block the monitor's thread for good (no session updated, `stop` never returned).
/// Now they change nothing, are counted once, and `stop` stays prompt.
#[cfg(unix)]
#[test]
fn fifos_sockets_and_devices_in_a_root_change_nothing_and_never_block() {
    let dir = tempfile::tempdir().unwrap();
    let claude = dir.path().join("claude");
    let codex = dir.path().join("codex");
    let gemini = dir.path().join("gemini");
    let ends = dir.path().join("ends");
    for d in [&codex, &gemini, &ends] {
        fs::create_dir_all(d).unwrap();
    }
    let project = claude_project(&claude);
    let log = project.join("ok.jsonl");
    write(&log, &claude_user("ok", "u1", "2026-01-05T09:00:00Z", "a"));
    let builder = || {
        Monitor::builder()
            .root(SourceKind::Claude, &claude)
            .root(SourceKind::Codex, &codex)
            .root(SourceKind::Gemini, &gemini)
            .marker_dir(&ends)
            .idle_after(None)
    };
    let rec = Recorder::default();
    let handle = builder().build(rec.clone()).spawn().unwrap();
    rec.wait_for("the first load", |evs| last_state(evs, "ok").is_some());

    // Made while the monitor runs, so its notifications name them.
    mkfifo(&gemini.join("0f3a/chats/session-2026-01-05T09-00-fifo.json"));
    mkfifo(&gemini.join("0f3a/chats/session-2026-01-05T09-00-fifo.jsonl"));
    mkfifo(&codex.join("2026/01/05/rollout-2026-01-05T09-00-00-fifo.jsonl"));
    mkfifo(&project.join("fifo.jsonl"));
    mkfifo(&project.join("ok/subagents/agent-fifo.jsonl"));
    mkfifo(&ends.join("fifo.json"));
    let _socket = std::os::unix::net::UnixListener::bind(project.join("socket.jsonl")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", project.join("zero.jsonl")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", gemini.join("0f3a/chats/session-zero.json")).unwrap();
    // Counted as ignored log files: all but the marker directory's FIFO, which the marker
    // reader rejects (and removes unread) instead.
    let mut specials = 8;
    // A real character device (1, 3: /dev/null) needs root; CI runs as root.
    let null = project.join("null.jsonl");
    let mknod = std::process::Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mknod {
        specials += 1;
    }

    // The monitor keeps reading the real log.
    append(&log, &claude_user("ok", "u2", "2026-01-05T09:00:01Z", "b"));
    rec.wait_for("the appended line", |evs| {
        last_state(evs, "ok").is_some_and(|s| s.message_count == 2)
    });
    let took = stop_within(handle, Duration::from_secs(5));
    assert!(
        !ends.join("fifo.json").exists(),
        "the FIFO in the marker directory is removed unread"
    );
    assert!(
        took < agentwatch_ws::monitor::STOP_TIMEOUT,
        "stop waited for its deadline ({took:?}): the thread was stuck"
    );
    let events = rec.take();
    let ids: std::collections::BTreeSet<String> = events
        .iter()
        .flat_map(|e| e.updates.iter().map(|s| s.id.clone()))
        .collect();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["ok"]);
    assert!(
        events
            .iter()
            .filter_map(|e| e.health.as_ref())
            .all(|h| h.status == HealthStatus::Healthy && h.discover_failures == 0),
        "{events:#?}"
    );

    // A synchronous scan finds the same files: each is counted once, however often seen.
    let mut m = builder().build(rec.clone());
    m.scan();
    m.scan();
    assert_eq!(m.ignored_files(), specials);
    assert_eq!(m.sessions().len(), 1);
    assert!(
        m.health()
            .iter()
            .all(|h| h.status == HealthStatus::Healthy && h.parse_failures == 0),
        "{:?}",
        m.health()
    );
}

/// A sink that blocks until released: the monitor's thread is stuck in a batch.
#[derive(Clone, Default)]
struct Stuck(std::sync::Arc<(std::sync::Mutex<(bool, bool)>, std::sync::Condvar)>);

impl agentwatch_ws::EventSink for Stuck {
    fn handle_event(&self, _: &agentwatch_ws::Event) -> Result<(), agentwatch_ws::SinkError> {
        let (lock, cvar) = &*self.0;
        let mut state = lock.lock().unwrap();
        state.0 = true;
        cvar.notify_all();
        while !state.1 {
            state = cvar.wait(state).unwrap();
        }
        Ok(())
    }
}

/// `stop` gives up waiting after `STOP_TIMEOUT` when the thread cannot end (here: stuck in
/// its sink), instead of hanging its caller (a dashboard's shutdown) with it.
#[test]
fn stop_is_bounded_even_when_the_thread_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &claude_project(dir.path()).join("s.jsonl"),
        &claude_user("s", "u1", "2026-01-05T09:00:00Z", "a"),
    );
    let sink = Stuck::default();
    let handle = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .build(sink.clone())
        .spawn()
        .unwrap();
    {
        let (lock, cvar) = &*sink.0;
        let (state, timeout) = cvar
            .wait_timeout_while(lock.lock().unwrap(), WAIT, |s| !s.0)
            .unwrap();
        assert!(!timeout.timed_out() && state.0, "the sink was never called");
    }
    let bound = agentwatch_ws::monitor::STOP_TIMEOUT;
    let took = stop_within(handle, bound + Duration::from_secs(3));
    assert!(took >= bound, "stop returned before its deadline: {took:?}");
    // Released: the thread ends by itself.
    let (lock, cvar) = &*sink.0;
    lock.lock().unwrap().1 = true;
    cvar.notify_all();
}
