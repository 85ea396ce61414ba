//! The Codex CLI and Gemini CLI sources on real files in temp dirs.

mod monitor_support;

use std::time::Duration;

use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Activity, LifecycleEventType};
use monitor_support::*;

const CODEX_ID: &str = "0199a7c3-0000-7000-8000-00000000c0de";

fn monitor(source: SourceKind, root: &std::path::Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(source, root)
        .idle_after(Duration::ZERO)
        .build(rec.clone())
}

#[test]
fn codex_rollout_keeps_its_id_across_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir
        .path()
        .join("2026/01/05/rollout-2026-01-05T10-00-00-0199a7c3-0000-7000-8000-00000000c0de.jsonl");
    write(&log, &sample("codex-rollout.jsonl"));
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Codex, dir.path(), &rec);
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    let s = last_state(&events, CODEX_ID).unwrap();
    assert_eq!(s.source, "codex");
    assert_eq!(
        (s.working_dir.as_str(), s.branch.as_str()),
        ("/home/dev/api", "fix/timeouts")
    );
    assert_eq!(s.model, "gpt-5-codex");
    assert_eq!(s.activity, Activity::Working, "user_message means working");
    assert_eq!(s.current_tool, "shell");
    assert_eq!((s.context_tokens, s.max_context_tokens), (9150, 272_000));
    // The environment-context item is not a turn: one user message.
    assert_eq!((s.message_count, s.tool_call_count), (1, 1));

    // The rest of the turn arrives: no line names the session, it is still the same one.
    append(&log, &sample("codex-rollout-more.jsonl"));
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Updated]);
    let s = last_state(&events, CODEX_ID).unwrap();
    assert_eq!(s.activity, Activity::Waiting, "task_complete means waiting");
    assert_eq!(s.current_tool, "");
    assert_eq!((s.context_tokens, s.output_tokens), (12_270, 420));
    assert!((s.context_utilization - 12_270.0 / 272_000.0).abs() < 1e-12);
    assert_eq!((s.message_count, s.tool_call_count), (2, 2));
    assert_eq!(m.sessions().len(), 1);
}

#[test]
fn codex_user_turns_only_as_response_items_and_null_info() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("2025/06/01/rollout-1748779200-old.jsonl");
    let lines = [
        r#"{"timestamp":"2025-06-01T12:00:00Z","type":"session_meta","payload":{"session_id":"old-codex","cwd":"/w"}}"#,
        r#"{"timestamp":"2025-06-01T12:00:01Z","type":"response_item","payload":{"type":"message","role":"user","content":[]}}"#,
        r#"{"timestamp":"2025-06-01T12:00:02Z","type":"event_msg","payload":{"type":"token_count","info":null}}"#,
        r#"{"timestamp":"2025-06-01T12:00:03Z","type":"response_item","payload":{"type":"local_shell_call","call_id":"l1","status":"completed","action":{}}}"#,
        r#"{"timestamp":"2025-06-01T12:00:04Z","type":"response_item","payload":{"type":"message","role":"assistant","content":[]}}"#,
        r#"{"timestamp":"2025-06-01T12:00:05Z","type":"response_item","payload":{"type":"message","role":"user","content":[]}}"#,
    ];
    write(&log, &(lines.join("\n") + "\n"));
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Codex, dir.path(), &rec);
    m.scan();
    let s = last_state(&rec.take(), "old-codex").unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (3, 1));
    assert_eq!(s.activity, Activity::Working);
    assert_eq!(
        s.max_context_tokens, 0,
        "no model, no window: utilisation 0"
    );
    assert_eq!(s.context_utilization, 0.0);
}

#[test]
fn gemini_whole_file_chat_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let chat = dir
        .path()
        .join("3f79bb7b/chats/session-2026-01-05T11-00-9d1c2e3f.json");
    write(&chat, &sample("gemini-session.json"));
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Gemini, dir.path(), &rec);
    m.scan();
    let id = "9d1c2e3f-0000-4000-8000-00000000ge01";
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!(s.source, "gemini");
    assert_eq!(s.model, "gemini-2.5-pro");
    assert_eq!((s.message_count, s.tool_call_count), (3, 1));
    assert_eq!((s.context_tokens, s.output_tokens), (9000, 40 + 60 + 25));
    assert_eq!(s.max_context_tokens, 1_048_576);
    assert_eq!(s.activity, Activity::Waiting);
    // Unchanged: not read again, nothing published.
    assert_eq!(m.scan(), 0);
    // Rewritten whole with one more exchange: the totals follow, nothing counted twice.
    let more = sample("gemini-session.json").replace(
        r#"{"id": "m4","#,
        r#"{"id": "m5", "timestamp": "2026-01-05T11:01:00Z", "type": "user", "content": "Fix them."},
    {"id": "m4","#,
    );
    write(&chat, &more);
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (4, 1));
    assert_eq!(s.activity, Activity::Working);
}

#[test]
fn gemini_jsonl_messages_are_upserted_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let chat = dir
        .path()
        .join("3f79bb7b/chats/session-2026-01-05T12-00-7a6b5c4d.jsonl");
    write(&chat, &sample("gemini-session.jsonl"));
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Gemini, dir.path(), &rec);
    m.scan();
    let id = "7a6b5c4d-0000-4000-8000-00000000ge02";
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!(
        (s.activity.clone(), s.current_tool.as_str()),
        (Activity::Working, "read_file")
    );
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));
    // The same message written again as it completes: replaced, not added.
    append(
        &chat,
        r#"{"id":"j2","timestamp":"2026-01-05T12:00:05.000Z","type":"gemini","content":"","model":"gemini-2.5-flash","tokens":{"input":3000,"output":80,"cached":0,"thoughts":20,"tool":0,"total":3100},"toolCalls":[{"id":"read_file-1","name":"read_file","args":{"path":"build.rs"},"status":"success"}]}
"#,
    );
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));
    assert_eq!((s.context_tokens, s.output_tokens), (3000, 100));
    assert_eq!(
        (s.activity, s.current_tool.as_str()),
        (Activity::Waiting, "")
    );
    assert_eq!(s.max_context_tokens, 1_048_576);
}

#[test]
fn a_rollout_in_a_new_day_directory_is_picked_up_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let handle = Monitor::builder()
        .root(SourceKind::Codex, dir.path())
        .idle_after(Duration::ZERO)
        .build(rec.clone())
        .spawn()
        .unwrap();
    rec.wait_for("the initial health", |evs| {
        evs.iter().any(|e| e.health.is_some())
    });
    // Codex creates YYYY/MM/DD when a day's first session starts, then writes into it.
    let log = dir
        .path()
        .join("2026/01/06/rollout-2026-01-06T08-00-00-0199a7c3-0000-7000-8000-00000000c0de.jsonl");
    write(&log, &sample("codex-rollout.jsonl"));
    let events = rec.wait_for("the new session", |evs| last_state(evs, CODEX_ID).is_some());
    assert!(lifecycle_kinds(&events).contains(&LifecycleEventType::Discovered));
    append(&log, &sample("codex-rollout-more.jsonl"));
    rec.wait_for("the appended turn", |evs| {
        last_state(evs, CODEX_ID)
            .is_some_and(|s| s.activity == Activity::Waiting && s.message_count == 2)
    });
    handle.stop();
}
