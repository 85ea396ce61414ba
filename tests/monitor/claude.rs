//! The monitor on real Claude Code transcripts in temp dirs: every record shape, subagents,
//! session-end markers, and the lifecycle (stale, removed, resumed, dormant history).

use crate::common;
use crate::monitor_support;

use std::fs;
use std::time::{Duration, SystemTime};

use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{
    Activity, Event, EventType, HealthStatus, LifecycleEventType, LifecycleState, SessionState,
    Timestamp,
};
use monitor_support::*;

const SESSION: &str = "5e55a1b2-0000-4000-8000-00000000c1a0";

fn monitor(root: &std::path::Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(SourceKind::Claude, root)
        .idle_after(None)
        .build(rec.clone())
}

#[test]
fn sample_transcript_becomes_one_session_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join(format!("{SESSION}.jsonl"));
    write(&log, &sample("claude-session.jsonl"));
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    let events = rec.take();
    // discovered, delta, then the initial health of the one configured source.
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        [EventType::Lifecycle, EventType::Delta, EventType::Health]
    );
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    assert_eq!(events[0].seq, 1);
    assert_consecutive(&events);
    let h = events[2].health.as_ref().unwrap();
    assert_eq!(
        (h.source.as_str(), h.status.clone()),
        ("claude", HealthStatus::Healthy)
    );
    assert_eq!(h.parse_failures, 1, "the truncated line");

    let s = last_state(&events, SESSION).unwrap();
    assert_eq!(s.source, "claude");
    assert_eq!(s.slug, "lexer-refactor");
    assert_eq!(s.working_dir, "/home/dev/parser");
    assert_eq!(s.branch, "feature/lexer");
    assert_eq!(
        s.model, "claude-sonnet-4-5-20250929",
        "<synthetic> is ignored"
    );
    // Latest real usage: 4 + 500 + 30000.
    assert_eq!(s.context_tokens, 30_504);
    assert_eq!(s.max_context_tokens, 200_000);
    assert!((s.context_utilization - 30_504.0 / 200_000.0).abs() < 1e-12);
    // msg_01 written over three lines counts once, with its last line's 88 tokens.
    assert_eq!(s.output_tokens, 88 + 120 + 60);
    // 2 typed prompts (string and array), 2 tool results, msg_01, msg_02, msg_03, synthetic.
    assert_eq!(s.message_count, 8);
    assert_eq!(s.tool_call_count, 2);
    assert_eq!(s.compaction_count, 1);
    assert_eq!(s.current_tool, "");
    assert_eq!(s.activity, Activity::Working, "the last record is a prompt");
    assert_eq!(s.lifecycle, LifecycleState::Active);
    assert_eq!(
        s.started_at,
        Timestamp::parse("2026-01-05T09:00:00Z").unwrap()
    );
    assert_eq!(
        s.last_activity_at,
        Timestamp::parse("2026-01-05T09:01:00Z").unwrap()
    );
    assert!(!s.last_data_received_at.is_zero());
    assert_eq!(m.sessions().len(), 1);

    // Nothing changed: a second scan publishes nothing.
    assert_eq!(m.scan(), 0);
}

#[test]
fn appends_are_read_incrementally_and_split_messages_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("s1.jsonl");
    write(
        &log,
        &claude_user("s1", "u1", "2026-01-05T09:00:00Z", "start"),
    );
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    assert_eq!(last_state(&rec.take(), "s1").unwrap().message_count, 1);

    // The first two lines of a three-line message, and half of the third.
    append(
        &log,
        &claude_assistant(
            "s1",
            "m1",
            "2026-01-05T09:00:01Z",
            r#"{"type":"thinking","thinking":"t"}"#,
            "null",
            3,
        ),
    );
    append(
        &log,
        &claude_assistant(
            "s1",
            "m1",
            "2026-01-05T09:00:02Z",
            r#"{"type":"text","text":"x"}"#,
            "null",
            9,
        ),
    );
    let third = claude_assistant(
        "s1",
        "m1",
        "2026-01-05T09:00:03Z",
        r#"{"type":"tool_use","id":"t1","name":"Grep","input":{}}"#,
        r#""tool_use""#,
        21,
    );
    let (head, tail) = third.split_at(40);
    append(&log, head);
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Updated]);
    let s = last_state(&events, "s1").unwrap();
    assert_eq!(
        (s.message_count, s.output_tokens, s.tool_call_count),
        (2, 9, 0)
    );
    append(&log, tail);
    m.scan();
    let s = last_state(&rec.take(), "s1").unwrap();
    assert_eq!(
        (s.message_count, s.output_tokens, s.tool_call_count),
        (2, 21, 1)
    );
    assert_eq!(
        (s.current_tool.as_str(), s.activity.clone()),
        ("Grep", Activity::Working)
    );
    assert_eq!(s.context_tokens, 51_100);

    append(
        &log,
        r#"{"type":"user","uuid":"u2","sessionId":"s1","timestamp":"2026-01-05T09:00:04Z","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"found"}]}}"#,
    );
    append(&log, "\n");
    append(
        &log,
        &claude_assistant(
            "s1",
            "m2",
            "2026-01-05T09:00:05Z",
            r#"{"type":"text","text":"done"}"#,
            r#""end_turn""#,
            5,
        ),
    );
    m.scan();
    let s = last_state(&rec.take(), "s1").unwrap();
    assert_eq!((s.message_count, s.output_tokens), (4, 26));
    assert_eq!(
        (s.current_tool.as_str(), s.activity),
        ("", Activity::Waiting)
    );
}

#[test]
fn truncated_or_replaced_log_is_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("s2.jsonl");
    let mut content = String::new();
    for i in 0..5 {
        content += &claude_user("s2", &format!("u{i}"), "2026-01-05T09:00:00Z", "p");
    }
    write(&log, &content);
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    assert_eq!(last_state(&rec.take(), "s2").unwrap().message_count, 5);
    // Truncated to two lines: the file's counts are derived again, not added.
    write(
        &log,
        &(claude_user("s2", "u0", "2026-01-05T09:00:00Z", "p")
            + &claude_user("s2", "u1", "2026-01-05T09:00:00Z", "p")),
    );
    m.scan();
    assert_eq!(last_state(&rec.take(), "s2").unwrap().message_count, 2);
    // Replaced by a longer file (a rename over it): read from its start, once.
    let tmp = dir.path().join("tmp.jsonl");
    fs::write(&tmp, &content).unwrap();
    fs::rename(&tmp, &log).unwrap();
    m.scan();
    assert_eq!(last_state(&rec.take(), "s2").unwrap().message_count, 5);
}

#[test]
fn subagents_belong_to_their_parent_session() {
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    let parent = "11111111-2222-4333-8444-555555555555";
    let mut main = claude_user(parent, "u1", "2026-01-05T09:00:00Z", "go");
    main += &claude_assistant(
        parent,
        "m1",
        "2026-01-05T09:00:01Z",
        r#"{"type":"tool_use","id":"task1","name":"Task","input":{}}"#,
        r#""tool_use""#,
        7,
    );
    // An inline sidechain line (older layout).
    main += &(format!(
        r#"{{"type":"assistant","isSidechain":true,"agentId":"side1","uuid":"x","sessionId":"{parent}","timestamp":"2026-01-05T09:00:02Z","message":{{"id":"sm1","role":"assistant","model":"claude-haiku-4-5","content":[{{"type":"text","text":"s"}}],"stop_reason":null,"usage":{{"input_tokens":5,"output_tokens":2}}}}}}"#
    ) + "\n");
    write(&project.join(format!("{parent}.jsonl")), &main);
    let mut sub = String::new();
    sub += &(format!(
        r#"{{"type":"user","isSidechain":true,"uuid":"su1","sessionId":"{parent}","timestamp":"2026-01-05T09:00:02Z","message":{{"role":"user","content":"search"}}}}"#
    ) + "\n");
    sub += &claude_assistant(
        parent,
        "sa1",
        "2026-01-05T09:00:03Z",
        r#"{"type":"tool_use","id":"g1","name":"Glob","input":{}}"#,
        r#""tool_use""#,
        4,
    );
    write(
        &project.join(parent).join("subagents/agent-a7f3.jsonl"),
        &sub,
    );
    // Older versions: the subagent's log beside the session's, named by its lines' sessionId.
    write(&project.join("agent-b2.jsonl"), &sub.replace("su1", "su2"));

    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    let events = rec.take();
    assert_eq!(m.sessions().len(), 1, "subagents are not sessions");
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    let s = last_state(&events, parent).unwrap();
    assert_eq!(
        s.message_count, 2,
        "sidechain lines are not the session's messages"
    );
    let mut ids: Vec<&str> = s.subagents.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a7f3", "b2", "side1"]);
    let a = s.subagents.iter().find(|a| a.id == "a7f3").unwrap();
    assert_eq!(a.parent_id, parent);
    assert_eq!(
        (a.message_count, a.tool_call_count, a.current_tool.as_str()),
        (2, 1, "Glob")
    );
    assert_eq!(a.activity, Activity::Working);
    assert!(a.completed_at.is_zero());

    // The subagent finishes: its parent is updated, still one session.
    append(
        &project.join(parent).join("subagents/agent-a7f3.jsonl"),
        &claude_assistant(
            parent,
            "sa2",
            "2026-01-05T09:00:04Z",
            r#"{"type":"text","text":"r"}"#,
            r#""end_turn""#,
            3,
        ),
    );
    m.scan();
    let s = last_state(&rec.take(), parent).unwrap();
    let a = s.subagents.iter().find(|a| a.id == "a7f3").unwrap();
    assert_eq!(a.activity, Activity::Terminal);
    assert_eq!(
        a.completed_at,
        Timestamp::parse("2026-01-05T09:00:04Z").unwrap()
    );
    assert_eq!(m.sessions().len(), 1);
}

#[test]
fn session_end_marker_makes_terminal_then_removed_then_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let ends = dir.path().join("ends");
    fs::create_dir_all(&ends).unwrap();
    let log = claude_project(&root).join("s3.jsonl");
    write(&log, &claude_user("s3", "u1", "2026-01-05T09:00:00Z", "hi"));
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Claude, &root)
        .marker_dir(&ends)
        .retention(Duration::from_millis(50))
        .idle_after(None)
        .build(rec.clone());
    m.scan();
    rec.take();
    let marker = ends.join("s3.json");
    let now = Timestamp::now();
    fs::write(&marker, format!(r#"{{"session_id":"s3","transcript_path":"/x/s3.jsonl","cwd":"/w","reason":"logout","timestamp":"{now}"}}"#)).unwrap();
    // An invalid marker is ignored (and removed).
    fs::write(ends.join("bad.json"), r#"{"session_id":"../etc"}"#).unwrap();
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Terminal]);
    assert_eq!(events[0].lifecycle.as_ref().unwrap().reason, "logout");
    let s = last_state(&events, "s3").unwrap();
    assert_eq!(
        (s.lifecycle, s.activity),
        (LifecycleState::Terminal, Activity::Terminal)
    );
    assert!(s.completed_at.is_some());
    assert!(!marker.exists() && !ends.join("bad.json").exists());

    std::thread::sleep(Duration::from_millis(60));
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Removed]);
    let delta = events.iter().find(|e| e.kind == EventType::Delta).unwrap();
    assert_eq!(delta.removed, ["s3"]);
    assert!(m.sessions().is_empty());

    append(
        &log,
        &claude_user("s3", "u2", "2026-01-05T09:05:00Z", "again"),
    );
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Resumed]);
    assert_eq!(last_state(&events, "s3").unwrap().message_count, 2);
}

#[test]
fn quiet_sessions_go_stale_and_old_logs_stay_dormant_until_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    let old = project.join("old.jsonl");
    write(
        &old,
        &(claude_user("old", "u1", "2025-01-01T09:00:00Z", "a")
            + &claude_user("old", "u2", "2025-01-01T09:00:01Z", "b")),
    );
    let year_ago = SystemTime::now() - Duration::from_secs(365 * 24 * 3600);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(year_ago)
        .unwrap();
    let fresh = project.join("fresh.jsonl");
    write(
        &fresh,
        &claude_user("fresh", "u1", "2026-01-05T09:00:00Z", "a"),
    );

    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .stale_after(Duration::from_secs(1))
        .idle_after(None)
        .build(rec.clone());
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    assert!(last_state(&events, "old").is_none());
    assert_eq!(m.file_counts(), (2, 1));

    std::thread::sleep(Duration::from_millis(1_050));
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Stale]);
    assert_eq!(
        last_state(&events, "fresh").unwrap().lifecycle,
        LifecycleState::Terminal
    );

    // The old log changes: it joins, with its whole history.
    append(&old, &claude_user("old", "u3", "2026-01-05T09:00:02Z", "c"));
    m.scan();
    let events = rec.take();
    assert!(lifecycle_kinds(&events).contains(&LifecycleEventType::Discovered));
    assert_eq!(last_state(&events, "old").unwrap().message_count, 3);
}

#[test]
fn working_session_with_no_records_becomes_idle() {
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join("s4.jsonl");
    let now = Timestamp::now().to_string();
    write(&log, &claude_user("s4", "u1", &now, "go"));
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .idle_after(Duration::from_secs(1))
        .build(rec.clone());
    m.scan();
    assert_eq!(
        last_state(&rec.take(), "s4").unwrap().activity,
        Activity::Working
    );
    std::thread::sleep(Duration::from_millis(2100));
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Updated]);
    assert_eq!(last_state(&events, "s4").unwrap().activity, Activity::Idle);
}

#[test]
fn a_second_file_naming_the_same_session_is_not_merged_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    let first = "aaaaaaaa-0000-4000-8000-000000000001";
    let resumed = "bbbbbbbb-0000-4000-8000-000000000002";
    let history = claude_user(first, "u1", "2026-01-05T09:00:00Z", "a")
        + &claude_user(first, "u2", "2026-01-05T09:00:01Z", "b");
    write(&project.join(format!("{first}.jsonl")), &history);
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    rec.take();
    // A resumed session: a new file that starts with copies of the earlier lines.
    write(
        &project.join(format!("{resumed}.jsonl")),
        &(history + &claude_user(resumed, "u3", "2026-01-05T10:00:00Z", "c")),
    );
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    assert_eq!(last_state(&events, resumed).unwrap().message_count, 3);
    assert!(last_state(&events, first).is_none());
    let original = m.sessions().into_iter().find(|s| s.id == first).unwrap();
    assert_eq!(original.message_count, 2, "not counted twice");
}

// ---------------------------------------------------------------------------------------
// Real shapes of several Claude Code versions: `tests/data/monitor/claude/v<version>-*.jsonl`
// (written for these tests after the shapes seen in public logs; the version is in each file
// name and in its lines' `version`).

/// The session id of sample `n` (`c1a0de00-0000-4000-8000-<n, 12 digits>`).
fn sid(n: u32) -> String {
    format!("c1a0de00-0000-4000-8000-{n:012}")
}

fn at(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// A Claude root in a temp dir holding `files` (`(path under the project dir, sample)`),
/// scanned once; returns the dir, the monitor, its recorder and the events of the scan.
fn scan_samples(files: &[(&str, &str)]) -> (tempfile::TempDir, Monitor, Recorder, Vec<Event>) {
    let dir = tempfile::tempdir().unwrap();
    let project = claude_project(dir.path());
    for (path, name) in files {
        write(&project.join(path), &sample(&format!("claude/{name}")));
    }
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    let events = rec.take();
    (dir, m, rec, events)
}

/// The session's state after one scan of sample `name` as its own log.
fn session_of(n: u32, name: &str) -> SessionState {
    let id = sid(n);
    let (_dir, _m, _rec, events) = scan_samples(&[(&format!("{id}.jsonl"), name)]);
    last_state(&events, &id).unwrap_or_else(|| panic!("no state for {name}: {events:#?}"))
}

#[test]
fn v1_0_24_a_text_reply_with_null_stop_reason_ends_the_turn() {
    let s = session_of(1, "v1.0.24-turn-end-null.jsonl");
    assert_eq!(s.activity, Activity::Waiting, "no line says end_turn");
    assert_eq!(s.current_tool, "");
    // The prompt, msg_01A (a text line and a tool_use line), its result, msg_01B.
    assert_eq!((s.message_count, s.tool_call_count), (4, 1));
    assert_eq!(s.started_at, at("2025-06-20T10:00:00.000Z"));
    assert_eq!(s.last_activity_at, at("2025-06-20T10:00:09.000Z"));
}

#[test]
fn v1_0_64_local_commands_are_no_prompts_and_keep_the_wait() {
    let s = session_of(2, "v1.0.64-local-command.jsonl");
    assert_eq!(
        s.activity,
        Activity::Waiting,
        "the caveat, /model and its output are no prompts"
    );
    assert_eq!(s.message_count, 4, "local-command lines are no messages");
    assert_eq!(
        s.last_activity_at,
        at("2025-06-20T10:10:06.000Z"),
        "the wait started with the reply; the Stop hook line and /model two minutes later do not move it"
    );
    // Bash mode (`! git status`) runs locally too: no turn starts.
    let s = session_of(12, "v2.0.76-bash-mode.jsonl");
    assert_eq!(s.activity, Activity::Waiting);
    assert_eq!(s.message_count, 2);
    assert_eq!(s.last_activity_at, at("2025-12-20T15:00:03.000Z"));
}

#[test]
fn v2_1_152_turn_duration_and_stop_hook_lines_end_the_turn_without_moving_the_wait() {
    let s = session_of(3, "v2.1.152-turn-duration.jsonl");
    assert_eq!(s.activity, Activity::Waiting);
    assert_eq!(s.current_tool, "");
    // The prompt, msg_03A (thinking, text, tool_use lines), its result, msg_03B.
    assert_eq!((s.message_count, s.tool_call_count), (4, 1));
    assert_eq!(s.model, "claude-opus-4-5-20251101");
    assert_eq!(s.context_tokens, 43_006);
    assert_eq!(s.started_at, at("2025-12-01T09:00:00.000Z"));
    assert_eq!(
        s.last_activity_at,
        at("2025-12-01T09:00:09.000Z"),
        "stop_hook_summary, turn_duration and the /model local_command lines come after the wait began"
    );
}

#[test]
fn v2_1_214_an_interrupted_turn_waits_for_the_person() {
    let id = sid(4);
    let name = "v2.1.214-interrupt.jsonl";
    let all = sample(&format!("claude/{name}"));
    let lines: Vec<&str> = all.lines().collect();
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join(format!("{id}.jsonl"));
    // Up to the refused tool's interrupt, then the rest.
    write(&log, &(lines[..4].join("\n") + "\n"));
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    m.scan();
    let s = last_state(&rec.take(), &id).unwrap();
    assert_eq!(
        (s.activity.clone(), s.current_tool.as_str()),
        (Activity::Waiting, "")
    );
    assert_eq!(s.last_activity_at, at("2026-02-10T14:00:07.100Z"));
    append(&log, &(lines[4..].join("\n") + "\n"));
    m.scan();
    let s = last_state(&rec.take(), &id).unwrap();
    assert_eq!(
        (s.activity.clone(), s.current_tool.as_str()),
        (Activity::Waiting, ""),
        "interrupted while Bash was pending"
    );
    // Two prompts, two assistant messages, one tool result; interrupts are no messages.
    assert_eq!((s.message_count, s.tool_call_count), (5, 2));
    assert_eq!(s.last_activity_at, at("2026-02-10T14:01:04.000Z"));
}

#[test]
fn v2_1_226_an_api_error_ends_the_turn() {
    let s = session_of(6, "v2.1.226-api-error.jsonl");
    assert_eq!(
        s.activity,
        Activity::Waiting,
        "isApiErrorMessage, no stop_reason"
    );
    assert_eq!(
        s.model, "claude-sonnet-4-5-20250929",
        "the error's <synthetic> model is not the session's"
    );
    assert_eq!(s.last_activity_at, at("2026-03-02T08:10:04.000Z"));
}

#[test]
fn v2_1_152_a_log_without_messages_is_no_session_until_one_arrives() {
    let id = sid(7);
    let (dir, mut m, rec, events) =
        scan_samples(&[(&format!("{id}.jsonl"), "v2.1.152-summary-only.jsonl")]);
    assert!(lifecycle_kinds(&events).is_empty(), "{events:#?}");
    assert!(events.iter().all(|e| e.kind == EventType::Health));
    assert!(m.sessions().is_empty());
    append(
        &claude_project(dir.path()).join(format!("{id}.jsonl")),
        &claude_user(&id, "u1", "2025-12-01T11:05:00Z", "next"),
    );
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    let s = last_state(&events, &id).unwrap();
    assert_eq!(s.started_at, at("2025-12-01T11:05:00Z"));
    assert_eq!(s.last_activity_at, s.started_at);
}

#[test]
fn v2_0_28_times_never_run_backwards() {
    let id = sid(8);
    let (dir, mut m, rec, events) =
        scan_samples(&[(&format!("{id}.jsonl"), "v2.0.28-out-of-order.jsonl")]);
    let s = last_state(&events, &id).unwrap();
    assert_eq!(s.started_at, at("2025-10-29T14:49:09.000Z"), "the earliest");
    assert_eq!(
        s.last_activity_at,
        at("2025-10-29T14:49:18.000Z"),
        "the latest"
    );
    // A later line stamped earlier still does not move lastActivityAt back.
    append(
        &claude_project(dir.path()).join(format!("{id}.jsonl")),
        &claude_user(&id, "u9", "2025-10-29T14:40:00Z", "and then?"),
    );
    m.scan();
    let s = last_state(&rec.take(), &id).unwrap();
    assert_eq!(s.last_activity_at, at("2025-10-29T14:49:18.000Z"));
    assert!(s.last_activity_at >= s.started_at);
}

#[test]
fn v2_1_248_a_1m_context_session_stays_within_its_window() {
    let s = session_of(9, "v2.1.248-1m-context.jsonl");
    assert_eq!(s.model, "claude-opus-4-6", "named without [1m]");
    assert_eq!(s.context_tokens, 350_003);
    assert_eq!(s.max_context_tokens, 1_000_000);
    assert!((s.context_utilization - 0.350_003).abs() < 1e-9);
}

#[test]
fn v2_0_52_subagents_finish_from_the_parents_result_and_warmups_are_no_subagents() {
    let id = sid(10);
    let (_dir, _m, _rec, events) = scan_samples(&[
        (&format!("{id}.jsonl"), "v2.0.52-agent-result.jsonl"),
        ("agent-5e7b2a01.jsonl", "v2.0.52-agent.jsonl"),
        ("agent-a9c0ffee.jsonl", "v2.0.76-warmup-agent.jsonl"),
    ]);
    let s = last_state(&events, &id).unwrap();
    assert_eq!(s.activity, Activity::Waiting);
    let ids: Vec<&str> = s.subagents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["5e7b2a01"], "the Warmup sidechain is no subagent");
    let a = &s.subagents[0];
    assert_eq!(
        a.activity,
        Activity::Terminal,
        "its own last line has stop_reason null"
    );
    assert_eq!(a.completed_at, at("2025-11-20T12:00:30.000Z"));
    assert_eq!(a.current_tool, "");
    assert_eq!((a.message_count, a.tool_call_count), (4, 1));
}

/// Claude Code 2.1 runs a compaction as an agent of its own (`agent-acompact-<hex>.jsonl`
/// under `subagents/`, `agentId` `acompact-…`) that no tool call starts and no result
/// reports: it is no subagent (it would stay `idle` forever); the compaction counts.
#[test]
fn v2_1_39_a_compaction_run_is_no_subagent() {
    let id = sid(20);
    let (_dir, _m, _rec, events) = scan_samples(&[
        (&format!("{id}.jsonl"), "v2.1.39-manual-compact.jsonl"),
        (
            &format!("{id}/subagents/agent-acompact-5e0c1a.jsonl"),
            "v2.1.39-compaction-agent.jsonl",
        ),
    ]);
    let s = last_state(&events, &id).unwrap();
    assert_eq!(s.activity, Activity::Waiting, "/compact is a local command");
    assert_eq!(s.compaction_count, 1);
    assert!(s.subagents.is_empty(), "{:?}", s.subagents);
    // 1 prompt, 2 assistant messages, 1 tool result: the summary and /compact are none.
    assert_eq!((s.message_count, s.tool_call_count), (4, 1));
    assert_eq!(
        s.last_activity_at,
        at("2026-02-12T14:30:20.000Z"),
        "the wait began with the reply; the compaction's lines do not move it"
    );
}

/// Claude Code 2.1.92 and later write the message's final `stop_reason` on each of its
/// lines (`tool_use` on a text line followed by a tool call; `end_turn` on the thinking and
/// the text line of a final reply, written 0.7 s apart). Read line by line: the text line
/// before the tool call is `working`; the wait begins with the first `end_turn` line and
/// the reply's later line does not move its `lastActivityAt`.
#[test]
fn v2_1_233_a_wait_keeps_its_start_over_the_lines_of_its_message() {
    let id = sid(22);
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join(format!("{id}.jsonl"));
    write(&log, "");
    let rec = Recorder::default();
    let mut m = monitor(dir.path(), &rec);
    let mut seen = Vec::new();
    for line in sample("claude/v2.1.233-stated-stop-reason.jsonl").lines() {
        append(&log, &format!("{line}\n"));
        m.scan();
        if let Some(s) = last_state(&rec.take(), &id) {
            seen.push((s.activity, s.last_activity_at));
        }
    }
    let activities: Vec<&Activity> = seen.iter().map(|(a, _)| a).collect();
    assert_eq!(
        activities,
        [
            &Activity::Working,
            &Activity::Working,
            &Activity::Working,
            &Activity::Working,
            &Activity::Working,
            &Activity::Waiting,
            &Activity::Waiting,
        ]
    );
    let wait_began = at("2026-08-20T10:22:14.569Z");
    assert_eq!(seen[5].1, wait_began);
    assert_eq!(
        seen[6].1, wait_began,
        "the reply's text line is no new wait"
    );
    let s = m.sessions().into_iter().find(|s| s.id == id).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (4, 1));
    assert_eq!(s.output_tokens, 135 + 177);
}

#[test]
fn v2_1_248_a_background_agent_finishes_from_its_task_notification() {
    let id = sid(11);
    let (dir, mut m, rec, events) = scan_samples(&[
        (&format!("{id}.jsonl"), "v2.1.248-async-agent.jsonl"),
        (
            &format!("{id}/subagents/agent-ab11ab11ab11ab11a.jsonl"),
            "v2.1.248-async-agent-subagent.jsonl",
        ),
    ]);
    let s = last_state(&events, &id).unwrap();
    assert_eq!(s.activity, Activity::Waiting, "turn_duration");
    let a = &s.subagents[0];
    assert_eq!(a.id, "ab11ab11ab11ab11a");
    assert_ne!(a.activity, Activity::Terminal, "async_launched: it runs on");
    append(
        &claude_project(dir.path()).join(format!("{id}.jsonl")),
        &sample("claude/v2.1.248-async-agent-notification.jsonl"),
    );
    m.scan();
    let s = last_state(&rec.take(), &id).unwrap();
    assert_eq!(
        s.activity,
        Activity::Working,
        "the notification starts a turn"
    );
    let a = &s.subagents[0];
    assert_eq!(a.activity, Activity::Terminal);
    assert_eq!(a.completed_at, at("2026-06-02T09:03:00.000Z"));
}

/// Lines appended one by one to a Claude Code 2.1 log while a WebSocket client is
/// connected: the deltas carry working → waiting → working → waiting, and a wait's
/// `lastActivityAt` does not move with the bookkeeping lines that follow its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_reach_a_connected_client_as_working_then_waiting() {
    use agentwatch_ws::WsLayer;
    use axum::Router;
    use common::{connect, next_event, serve};

    let id = sid(3);
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join(format!("{id}.jsonl"));
    let all = sample("claude/v2.1.152-turn-duration.jsonl");
    let mut lines: Vec<String> = all.lines().map(|l| l.to_owned() + "\n").collect();
    // A second turn: a prompt and a text reply.
    lines.push(claude_user(
        &id,
        "u-2",
        "2025-12-01T09:06:00Z",
        "And the edge case?",
    ));
    lines.push(claude_assistant(
        &id,
        "msg_03C",
        "2025-12-01T09:06:04Z",
        r#"{"type":"text","text":"Covered too."}"#,
        "null",
        7,
    ));
    write(&log, "");

    let ws = WsLayer::new();
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let handle = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .idle_after(None)
        .build(hub.clone())
        .spawn()
        .unwrap();

    // Each line, then the delta it caused (the file-history-snapshot alone causes none).
    let mut states: Vec<SessionState> = Vec::new();
    for line in &lines {
        append(&log, line);
        if line.contains(r#""type":"file-history-snapshot""#) {
            continue;
        }
        loop {
            let ev = next_event(&mut client).await;
            if let Some(s) = ev.updates.iter().find(|s| s.id == id) {
                states.push(s.clone());
                break;
            }
        }
    }
    let mut activities: Vec<Activity> = Vec::new();
    for s in &states {
        if activities.last() != Some(&s.activity) {
            activities.push(s.activity.clone());
        }
    }
    // msg_03A's text line is followed by its tool_use line: between the two reads the
    // session shows waiting for a moment (see the module docs of the Claude parser).
    assert_eq!(
        activities,
        [
            Activity::Working,
            Activity::Waiting,
            Activity::Working,
            Activity::Waiting,
            Activity::Working,
            Activity::Waiting,
        ]
    );
    // From the end of the first turn through stop_hook_summary, turn_duration, /model's two
    // local_command lines and last-prompt: one wait, one lastActivityAt.
    let first_wait: Vec<&SessionState> = states
        .iter()
        .skip_while(|s| s.message_count < 4)
        .take_while(|s| s.activity == Activity::Waiting)
        .collect();
    assert_eq!(first_wait.len(), 6, "{states:#?}");
    assert!(
        first_wait
            .iter()
            .all(|s| s.last_activity_at == at("2025-12-01T09:00:09.000Z"))
    );
    let last = states.last().unwrap();
    assert_eq!(last.last_activity_at, at("2025-12-01T09:06:04Z"));
    assert_eq!(last.message_count, 6);

    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

/// Claude Code 2.1.39 writes a message of text then a tool call as two lines, the tool
/// call's once its input has streamed, with `stop_reason: null` on both. Lines stamped
/// now, appended one at a time while a WebSocket client watches: the text line alone is
/// held as `working`, the tool call keeps it so, and a final reply turns `waiting` once
/// the delay has passed, with `lastActivityAt` the reply's time; an `end_turn` reply waits
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_line_before_its_tool_call_is_no_turn_end() {
    use agentwatch_ws::WsLayer;
    use axum::Router;
    use common::{connect, next_event, serve};
    use std::time::Instant;

    const DELAY: Duration = Duration::from_millis(1500);
    let id = sid(21);
    let dir = tempfile::tempdir().unwrap();
    let log = claude_project(dir.path()).join(format!("{id}.jsonl"));
    write(&log, "");
    let ws = WsLayer::new();
    let (ws_router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(ws_router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let handle = Monitor::builder()
        .root(SourceKind::Claude, dir.path())
        .idle_after(None)
        .turn_end_delay(DELAY)
        .build(hub.clone())
        .spawn()
        .unwrap();

    // Appends `line` and returns the first state of the session carrying `ready`.
    async fn step(
        client: &mut common::Client,
        log: &std::path::Path,
        id: &str,
        line: &str,
        ready: impl Fn(&SessionState) -> bool,
    ) -> SessionState {
        append(log, line);
        loop {
            let ev = next_event(client).await;
            if let Some(s) = ev.updates.iter().find(|s| s.id == id && ready(s)) {
                return s.clone();
            }
        }
    }
    let now = || Timestamp::now().to_string();
    let text = |msg: &str, stop: &str| {
        claude_assistant(&id, msg, &now(), r#"{"type":"text","text":"…"}"#, stop, 3)
    };
    let tool = r#"{"type":"tool_use","id":"toolu_21","name":"Write","input":{}}"#;

    let s = step(
        &mut client,
        &log,
        &id,
        &claude_user(&id, "u-1", &now(), "go"),
        |s| s.message_count == 1,
    )
    .await;
    assert_eq!(s.activity, Activity::Working);
    let s = step(&mut client, &log, &id, &text("msg_21A", "null"), |s| {
        s.message_count == 2
    })
    .await;
    assert_eq!(s.activity, Activity::Working, "a text line alone is held");
    let s = step(
        &mut client,
        &log,
        &id,
        &claude_assistant(&id, "msg_21A", &now(), tool, "null", 40),
        |s| s.tool_call_count == 1,
    )
    .await;
    assert_eq!(
        (s.activity.clone(), s.current_tool.as_str()),
        (Activity::Working, "Write")
    );
    let result = format!(
        r#"{{"type":"user","uuid":"u-2","sessionId":"{id}","timestamp":"{}","message":{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_21","content":"ok"}}]}}}}"#,
        now()
    ) + "\n";
    let s = step(&mut client, &log, &id, &result, |s| s.message_count == 3).await;
    assert_eq!(s.activity, Activity::Working);

    // The final reply: held, then waiting once the delay has passed, from the reply's time.
    let reply = text("msg_21B", "null");
    let written = Instant::now();
    let held = step(&mut client, &log, &id, &reply, |s| s.message_count == 4).await;
    assert_eq!(held.activity, Activity::Working);
    let waiting = step(&mut client, &log, &id, "", |s| {
        s.activity == Activity::Waiting
    })
    .await;
    assert!(
        written.elapsed() >= DELAY - Duration::from_millis(100),
        "published after {:?}",
        written.elapsed()
    );
    assert_eq!(waiting.last_activity_at, held.last_activity_at);
    assert_eq!(waiting.message_count, 4);

    // A stated end is published at once.
    step(
        &mut client,
        &log,
        &id,
        &claude_user(&id, "u-3", &now(), "and?"),
        |s| s.activity == Activity::Working,
    )
    .await;
    let s = step(
        &mut client,
        &log,
        &id,
        &text("msg_21C", r#""end_turn""#),
        |s| s.message_count == 6,
    )
    .await;
    assert_eq!(
        s.activity,
        Activity::Waiting,
        "end_turn is no tentative end"
    );

    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}
