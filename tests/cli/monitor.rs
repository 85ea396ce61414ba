//! Hook markers through the monitor: a Claude Code log whose last line is a `tool_use`
//! waiting for permission, the `agentwatch-ws hook` binary run with Claude Code's hook input,
//! and what sessions then say; end to end over a real WebSocket; and junk in the marker
//! directory.

use crate::common;
use crate::hooks_support;
use crate::monitor_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentwatch_ws::hooks::write_marker;
use agentwatch_ws::markers::{HookEvent, HookMarker};
use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::wire::Timestamp;
use agentwatch_ws::{Activity, Event, EventType, LifecycleState, WsLayer};
use axum::Router;
use common::{connect, next_event, serve, within};
use hooks_support::{SAMPLE_SESSION as ID, files, hook, payload, tool_use, ts};
use monitor_support::{Recorder, append, claude_assistant, claude_project, claude_user, write};

fn tool_result(session: &str, uuid: &str, at: &str, tool_id: &str) -> String {
    format!(
        r#"{{"type":"user","uuid":"{uuid}","sessionId":"{session}","timestamp":"{at}","message":{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"{tool_id}","content":"out"}}]}}}}"#
    ) + "\n"
}

/// A hook progress line of Claude Code 2.1.85 (a record without a message).
fn hook_progress(session: &str, uuid: &str, at: &str) -> String {
    format!(
        r#"{{"type":"progress","data":{{"type":"hook_progress","hookEvent":"PostToolUse","hookName":"PostToolUse:Bash","command":"x"}},"timestamp":"{at}","sessionId":"{session}","uuid":"{uuid}","isSidechain":false,"version":"2.1.85"}}"#
    ) + "\n"
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    markers: PathBuf,
    log: PathBuf,
}

/// A Claude root with a log of session `id`: a prompt, then an assistant `tool_use` of
/// `Bash` (id `t1`) that has no result yet: a pending permission prompt, as Claude Code 2.1
/// leaves it.
fn setup(id: &str, now: Timestamp) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let log = hooks_support::claude_permission_log(&root, id, now);
    Setup {
        _dir: dir,
        root,
        markers,
        log,
    }
}

fn monitor(s: &Setup, sink: Recorder) -> Monitor {
    Monitor::builder()
        .root(SourceKind::Claude, &s.root)
        .marker_dir(&s.markers)
        .idle_after(None)
        .build(sink)
}

fn state(rec: &Recorder, id: &str) -> agentwatch_ws::SessionState {
    monitor_support::last_state(&rec.events(), id).expect("a delta of the session")
}

fn marker(
    id: &str,
    event: HookEvent,
    tool: Option<&str>,
    kind: Option<&str>,
    at: Timestamp,
) -> HookMarker {
    HookMarker::new(id, event, tool, kind, None, at).unwrap()
}

/// Reads events until one holds `pred`; returns it.
async fn until(client: &mut common::Client, pred: impl Fn(&Event) -> bool) -> Event {
    loop {
        let ev = next_event(client).await;
        if pred(&ev) {
            return ev;
        }
    }
}

fn session_is(ev: &Event, activity: Activity, tool: &str) -> bool {
    ev.kind == EventType::Delta
        && ev
            .updates
            .iter()
            .any(|s| s.id == ID && s.activity == activity && s.current_tool == tool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_request_reaches_a_client_as_waiting_within_a_second() {
    let now = Timestamp::now();
    let s = setup(ID, now);
    let ws = WsLayer::new();
    let (ws_router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(ws_router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let handle = Monitor::builder()
        .root(SourceKind::Claude, &s.root)
        .marker_dir(&s.markers)
        .build(hub.clone())
        .spawn()
        .unwrap();

    // From the log alone: working, with the tool that waits for permission.
    within(
        "working with Bash",
        until(&mut client, |e| session_is(e, Activity::Working, "Bash")),
    )
    .await;

    // Claude Code shows the prompt and runs the hook.
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let markers = s.markers.clone();
        move || hook(&markers, &payload("PermissionRequest"))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ev = within(
        "waiting with Bash",
        until(&mut client, |e| session_is(e, Activity::Waiting, "Bash")),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "waiting shown after {took:?}"
    );
    let waiting = ev.updates.iter().find(|u| u.id == ID).unwrap().clone();
    // The wait begins at the hook's time: after the tool_use, within the hook's run.
    assert!(waiting.last_activity_at.unix_millis() > now.unix_millis() - 10_000);
    assert!(waiting.last_activity_at.unix_millis() <= Timestamp::now().unix_millis());
    assert!(
        files(&s.markers).is_empty(),
        "the marker is removed once read"
    );

    // A progress line of a hook is no answer: still waiting, and the wait's start stays.
    append(
        &s.log,
        &hook_progress(ID, "p1", &Timestamp::now().to_string()),
    );
    let out = tokio::task::spawn_blocking({
        let markers = s.markers.clone();
        move || hook(&markers, &payload("Notification-permission_prompt"))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // The person answers; the tool runs and its result lands in the log.
    append(
        &s.log,
        &tool_result(ID, "u2", &Timestamp::now().to_string(), "t1"),
    );
    let ev = within(
        "working again",
        until(&mut client, |e| session_is(e, Activity::Working, "")),
    )
    .await;
    let working = ev.updates.iter().find(|u| u.id == ID).unwrap();
    assert!(working.last_activity_at > waiting.last_activity_at);

    // A second prompt, answered by PostToolUse this time.
    append(
        &s.log,
        &claude_assistant(
            ID,
            "m2",
            &Timestamp::now().to_string(),
            &tool_use("t2", "Bash"),
            "\"tool_use\"",
            3,
        ),
    );
    within(
        "working with Bash again",
        until(&mut client, |e| session_is(e, Activity::Working, "Bash")),
    )
    .await;
    let markers = s.markers.clone();
    let out = tokio::task::spawn_blocking(move || hook(&markers, &payload("PermissionRequest")))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    within(
        "waiting again",
        until(&mut client, |e| session_is(e, Activity::Waiting, "Bash")),
    )
    .await;
    let markers = s.markers.clone();
    let out = tokio::task::spawn_blocking(move || hook(&markers, &payload("PostToolUse")))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    within(
        "working after PostToolUse",
        until(&mut client, |e| session_is(e, Activity::Working, "")),
    )
    .await;
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

#[test]
fn a_wait_keeps_its_start_while_it_lasts() {
    let now = Timestamp::now();
    let s = setup(ID, now);
    let rec = Recorder::default();
    let mut m = monitor(&s, rec.clone());
    m.scan();
    assert_eq!(
        (
            state(&rec, ID).activity,
            state(&rec, ID).current_tool.as_str()
        ),
        (Activity::Working, "Bash")
    );
    // A notification names no tool: the log's pending tool is shown.
    let at = Timestamp::from_unix_millis(now.unix_millis() as i64 - 5_000);
    write_marker(
        &s.markers,
        &marker(
            ID,
            HookEvent::Notification,
            None,
            Some("permission_prompt"),
            at,
        ),
    )
    .unwrap();
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Waiting, "Bash")
    );
    assert_eq!(
        st.last_activity_at.unix_millis(),
        at.unix_millis(),
        "the wait begins at the marker"
    );
    // A later PermissionRequest about the same prompt, and a progress line: the start stays.
    let later = Timestamp::from_unix_millis(now.unix_millis() as i64 - 2_000);
    write_marker(
        &s.markers,
        &marker(ID, HookEvent::PermissionRequest, Some("Bash"), None, later),
    )
    .unwrap();
    append(&s.log, &hook_progress(ID, "p1", &ts(now, -1)));
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Waiting, "Bash")
    );
    assert_eq!(st.last_activity_at.unix_millis(), at.unix_millis());
    // The log's tool_result, later than the marker: the answer.
    append(&s.log, &tool_result(ID, "u2", &ts(now, 0), "t1"));
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Working, "")
    );
}

#[test]
fn stop_and_idle_prompt_wait_without_a_tool_and_a_prompt_answers() {
    let now = Timestamp::now();
    let s = setup(ID, now);
    let rec = Recorder::default();
    let mut m = monitor(&s, rec.clone());
    m.scan();
    let at = Timestamp::from_unix_millis(now.unix_millis() as i64 - 5_000);
    write_marker(&s.markers, &marker(ID, HookEvent::Stop, None, None, at)).unwrap();
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Waiting, "")
    );
    assert_eq!(st.last_activity_at.unix_millis(), at.unix_millis());
    let idle = Timestamp::from_unix_millis(now.unix_millis() as i64 - 3_000);
    write_marker(
        &s.markers,
        &marker(ID, HookEvent::Notification, None, Some("idle_prompt"), idle),
    )
    .unwrap();
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(st.activity, Activity::Waiting);
    assert_eq!(
        st.last_activity_at.unix_millis(),
        at.unix_millis(),
        "the wait goes on"
    );
    let prompt = Timestamp::from_unix_millis(now.unix_millis() as i64 - 1_000);
    write_marker(
        &s.markers,
        &marker(ID, HookEvent::UserPromptSubmit, None, None, prompt),
    )
    .unwrap();
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Working, "")
    );
    assert_eq!(st.last_activity_at.unix_millis(), prompt.unix_millis());
}

#[test]
fn a_hook_wait_does_not_go_stale() {
    let now = Timestamp::now();
    let s = setup(ID, now);
    let other = "0c0c0c0c-0000-4000-8000-00000000000c";
    let log = claude_project(&s.root).join(format!("{other}.jsonl"));
    write(&log, &claude_user(other, "u1", &ts(now, -20), "hi"));
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Claude, &s.root)
        .marker_dir(&s.markers)
        .stale_after(Duration::from_secs(1))
        .idle_after(None)
        .build(rec.clone());
    m.scan();
    assert_eq!(
        hook(&s.markers, &payload("PermissionRequest"))
            .status
            .code(),
        Some(0)
    );
    m.scan();
    let read = Instant::now();
    assert_eq!(state(&rec, ID).activity, Activity::Waiting);
    // The other session, with no hook, goes stale; the waiting one does not, also well past
    // the stale threshold after its marker.
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&rec, other).lifecycle != LifecycleState::Terminal
        || read.elapsed() < Duration::from_secs(3)
    {
        assert!(
            Instant::now() < deadline,
            "the session without a hook never went stale"
        );
        std::thread::sleep(Duration::from_millis(20));
        m.scan();
    }
    let st = state(&rec, ID);
    assert_eq!(
        (st.lifecycle, st.activity, st.current_tool.as_str()),
        (LifecycleState::Active, Activity::Waiting, "Bash")
    );
}

#[test]
fn a_marker_older_than_the_log_is_ignored() {
    let now = Timestamp::now();
    let s = setup(ID, now);
    let rec = Recorder::default();
    let mut m = monitor(&s, rec.clone());
    m.scan();
    // Older than the log's tool_use (at now - 10 s).
    let old = Timestamp::from_unix_millis(now.unix_millis() as i64 - 15_000);
    write_marker(&s.markers, &marker(ID, HookEvent::Stop, None, None, old)).unwrap();
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Working, "Bash")
    );
    assert!(files(&s.markers).is_empty());
}

#[test]
fn a_marker_before_its_log_waits_for_it() {
    let now = Timestamp::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&root).unwrap();
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Claude, &root)
        .marker_dir(&markers)
        .build(rec.clone());
    let out = hook(&markers, &payload("PermissionRequest"));
    assert_eq!(out.status.code(), Some(0));
    m.scan();
    assert!(monitor_support::last_state(&rec.events(), ID).is_none());
    // The log appears, its last record older than the marker.
    let log = claude_project(&root).join(format!("{ID}.jsonl"));
    write(&log, &claude_user(ID, "u1", &ts(now, -20), "go"));
    append(
        &log,
        &claude_assistant(
            ID,
            "m1",
            &ts(now, -10),
            &tool_use("t1", "Bash"),
            "\"tool_use\"",
            1,
        ),
    );
    m.scan();
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Waiting, "Bash")
    );
}

#[test]
fn session_end_hook_makes_the_session_terminal() {
    let now = Timestamp::now();
    let s = setup(ID, now);
    let rec = Recorder::default();
    let mut m = monitor(&s, rec.clone());
    m.scan();
    assert_eq!(
        hook(&s.markers, &payload("SessionEnd")).status.code(),
        Some(0)
    );
    m.scan();
    let events = rec.events();
    let end = events
        .iter()
        .filter_map(|e| e.lifecycle.as_ref())
        .find(|l| l.to == LifecycleState::Terminal)
        .expect("a terminal transition");
    assert_eq!(end.reason, "prompt_input_exit");
    assert_eq!(state(&rec, ID).activity, Activity::Terminal);
}

/// Runs one `scan` on another thread and fails if it takes longer than 10 s (a FIFO opened
/// for reading would block it forever).
fn scan_bounded(m: Monitor) -> Monitor {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut m = m;
        m.scan();
        let _ = tx.send(m);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a scan stalled on the marker directory")
}

#[cfg(unix)]
#[test]
fn junk_in_the_marker_directory_is_rejected_once_and_never_stalls() {
    use std::os::unix::fs::{chown, symlink};

    let now = Timestamp::now();
    let s = setup(ID, now);
    let dir = &s.markers;
    let elsewhere = s.root.parent().unwrap().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A valid marker outside, reached through a link: never read.
    let target = write_marker(&elsewhere, &marker(ID, HookEvent::Stop, None, None, now)).unwrap();
    symlink(&target, dir.join("hook-0000000000001-1-0.json")).unwrap();
    // A FIFO named like a marker: opening it for reading would block.
    let fifo = dir.join("hook-0000000000002-1-0.json");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success(),
        "mkfifo"
    );
    // A directory named like a marker.
    std::fs::create_dir(dir.join("hook-0000000000003-1-0.json")).unwrap();
    // A huge file.
    std::fs::write(
        dir.join("hook-0000000000004-1-0.json"),
        vec![b' '; 10 << 20],
    )
    .unwrap();
    // Wrong JSON, and the right JSON of the wrong shape.
    std::fs::write(dir.join("hook-0000000000005-1-0.json"), b"{\"v\":1,").unwrap();
    std::fs::write(
        dir.join("hook-0000000000006-1-0.json"),
        br#"{"v":1,"session_id":"../x","hook_event":"Stop","at":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    // Another user's valid marker: never read.
    let theirs = write_marker(dir, &marker(ID, HookEvent::Stop, None, None, now)).unwrap();
    let is_root = running_as_root();
    if is_root {
        chown(&theirs, Some(65534), Some(65534)).unwrap();
    } else {
        std::fs::remove_file(&theirs).unwrap();
    }
    let rec = Recorder::default();
    let m = monitor(&s, rec.clone());
    let m = scan_bounded(m);
    // None of them changed the session.
    let st = state(&rec, ID);
    assert_eq!(
        (st.activity, st.current_tool.as_str()),
        (Activity::Working, "Bash")
    );
    let expected = if is_root { 7 } else { 6 };
    assert_eq!(m.rejected_markers(), expected);
    // Removed: the link (its target kept), the FIFO, the huge file, the invalid ones. Left:
    // the directory, the other user's file.
    assert!(target.exists(), "a link's target is never touched");
    let mut left = vec!["hook-0000000000003-1-0.json".to_owned()];
    if is_root {
        left.push(theirs.file_name().unwrap().to_string_lossy().into_owned());
    }
    left.sort();
    assert_eq!(files(dir), left);
    // Counted once: a second scan does not count what was left again.
    let m = scan_bounded(m);
    assert_eq!(m.rejected_markers(), expected);
    // And a valid marker among the junk still works.
    write_marker(
        dir,
        &marker(
            ID,
            HookEvent::PermissionRequest,
            Some("Bash"),
            None,
            Timestamp::now(),
        ),
    )
    .unwrap();
    let _m = scan_bounded(m);
    assert_eq!(state(&rec, ID).activity, Activity::Waiting);
}

/// Whether this test runs as root (it can then give a file to another user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

/// Hooks keep writing markers while no monitor runs (a `PostToolUse` per tool call): a
/// monitor started hours later finds thousands, all older than an hour. Each is counted and
/// removed; the log gets a few lines, not one per file.
#[test]
fn markers_piled_up_while_no_monitor_ran_are_removed_without_flooding_the_log() {
    let now = Timestamp::now();
    let s = setup(ID, now);
    let old = Timestamp::from_unix_millis(now.unix_millis() as i64 - 2 * 3600 * 1000);
    let piled = 500;
    for i in 0..piled {
        let at = Timestamp::from_unix_millis(old.unix_millis() as i64 + i as i64 * 1000);
        write_marker(
            &s.markers,
            &marker(ID, HookEvent::PostToolUse, Some("Bash"), None, at),
        )
        .unwrap();
    }
    assert_eq!(files(&s.markers).len(), piled);
    let (captured, _guard) = common::Captured::install(tracing::Level::DEBUG);
    let rec = Recorder::default();
    let mut m = monitor(&s, rec.clone());
    m.scan();
    assert_eq!(m.rejected_markers(), piled as u64);
    assert!(files(&s.markers).is_empty(), "every stale marker removed");
    let text = captured.text();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("marker directory"))
        .count();
    assert!(
        (1..=6).contains(&warnings),
        "{warnings} warnings for {piled} stale markers"
    );
    assert!(
        text.contains("rejected more files in the marker directory") && text.contains("more=495"),
        "one line for the rest: {text:.2000}"
    );
    // The session is as its log says.
    assert_eq!(state(&rec, ID).activity, Activity::Working);
}

/// A Gemini CLI chat (0.39 `.jsonl` form) of session `ID` whose model message announced a
/// shell command: Gemini CLI records the tool call only once it finished, so while its
/// permission prompt is shown the chat reads `waiting` without a tool. Its `Notification`
/// hook (ToolPermission) then shows the tool; `AfterTool` shows `working`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_permission_notification_reaches_a_client_as_waiting_with_the_tool() {
    let now = Timestamp::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tmp");
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let chat = root.join(hooks_support::GEMINI_CHAT);
    write(
        &chat,
        &format!(
            "{}\n{}\n{}\n",
            hooks_support::gemini_session(ID, &ts(now, -20), &ts(now, -10)),
            hooks_support::gemini_user("u1", &ts(now, -20), "clean the build"),
            format_args!(
                r#"{{"id":"g1","timestamp":"{}","type":"gemini","content":"I will remove it.","thoughts":[],"tokens":{{"input":5000,"output":20,"cached":0,"thoughts":4,"tool":0,"total":5024}},"model":"gemini-2.5-pro"}}"#,
                ts(now, -10)
            ),
        ),
    );
    let ws = WsLayer::new();
    let (ws_router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(ws_router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let handle = Monitor::builder()
        .root(SourceKind::Gemini, &root)
        .marker_dir(&markers)
        .idle_after(None)
        .build(hub.clone())
        .spawn()
        .unwrap();

    // From the chat alone: waiting, no tool.
    within(
        "waiting without a tool",
        until(&mut client, |e| session_is(e, Activity::Waiting, "")),
    )
    .await;

    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let markers = markers.clone();
        move || {
            hook(
                &markers,
                &hooks_support::gemini_payload("0.26-Notification-ToolPermission-exec"),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    within(
        "waiting with run_shell_command",
        until(&mut client, |e| {
            session_is(e, Activity::Waiting, "run_shell_command")
        }),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "waiting shown after {took:?}"
    );

    // Approved: the tool ran, Gemini CLI runs the AfterTool hook.
    let out = tokio::task::spawn_blocking({
        let markers = markers.clone();
        move || hook(&markers, &hooks_support::gemini_payload("0.26-AfterTool"))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    within(
        "working",
        until(&mut client, |e| session_is(e, Activity::Working, "")),
    )
    .await;
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}
