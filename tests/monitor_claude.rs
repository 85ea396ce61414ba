//! The monitor on real Claude Code transcripts in temp dirs: every record shape, subagents,
//! session-end markers, and the lifecycle (stale, removed, resumed, dormant history).

mod monitor_support;

use std::fs;
use std::time::{Duration, SystemTime};

use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{
    Activity, EventType, HealthStatus, LifecycleEventType, LifecycleState, Timestamp,
};
use monitor_support::*;

const SESSION: &str = "5e55a1b2-0000-4000-8000-00000000c1a0";

fn monitor(root: &std::path::Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(SourceKind::Claude, root)
        .idle_after(Duration::ZERO)
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
        .idle_after(Duration::ZERO)
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
        .stale_after(Duration::from_millis(300))
        .idle_after(Duration::ZERO)
        .build(rec.clone());
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    assert!(last_state(&events, "old").is_none());
    assert_eq!(m.file_counts(), (2, 1));

    std::thread::sleep(Duration::from_millis(320));
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
