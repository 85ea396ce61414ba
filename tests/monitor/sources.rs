//! The Codex CLI and Gemini CLI sources on real files in temp dirs.

use crate::monitor_support;

use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Activity, LifecycleEventType};
use monitor_support::*;

const CODEX_ID: &str = "0199a7c3-0000-7000-8000-00000000c0de";

fn monitor(source: SourceKind, root: &std::path::Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(source, root)
        .idle_after(None)
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
        .idle_after(None)
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

/// A Codex rollout copied to its place under a temp root, read by one scan.
fn codex_scan(sample_name: &str, id: &str) -> agentwatch_ws::SessionState {
    let dir = tempfile::tempdir().unwrap();
    let log = dir
        .path()
        .join(format!("2026/02/02/rollout-2026-02-02T09-00-00-{id}.jsonl"));
    write(&log, &sample(&format!("codex/{sample_name}")));
    let rec = Recorder::default();
    monitor(SourceKind::Codex, dir.path(), &rec).scan();
    last_state(&rec.take(), id).unwrap()
}

/// Codex CLI 0.58 local compaction: a `compacted` line and its `context_compacted` event
/// are one compaction.
#[test]
fn codex_local_compaction_counts_once() {
    let s = codex_scan(
        "codex-0.58-compaction-local.jsonl",
        "0199c0de-0058-7000-8000-0000000c0a01",
    );
    assert_eq!(s.compaction_count, 1);
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));
}

/// Codex CLI 0.63 remote compaction: `compacted` with a `replacement_history`, then
/// `context_compacted`; two compactions, a token count between.
#[test]
fn codex_remote_compactions_count() {
    let s = codex_scan(
        "codex-0.63-compaction-remote.jsonl",
        "0199c0de-0063-7000-8000-0000000c0a02",
    );
    assert_eq!(s.compaction_count, 2);
    assert_eq!(s.context_tokens, 9070);
}

/// A forked Codex CLI 0.58 rollout starts with its own `session_meta`, then copies the
/// parent's (an older start, another cwd and branch): the fork keeps its own.
#[test]
fn codex_fork_keeps_its_own_start() {
    let id = "0199f0f0-0058-7000-8000-00000000f0a1";
    let s = codex_scan("codex-0.58-fork.jsonl", id);
    assert_eq!(s.id, id);
    assert_eq!(s.started_at.to_string(), "2026-02-04T15:30:00Z");
    assert_eq!(
        (s.working_dir.as_str(), s.branch.as_str()),
        ("/home/dev/svc", "try-b")
    );
}

/// Codex CLI 0.77 persists `task_started` with the context window before any
/// `token_count`; `task_complete` ends the turn, and the wait keeps its start.
#[test]
fn codex_task_started_window_and_turn_end() {
    let dir = tempfile::tempdir().unwrap();
    let id = "0199d0d0-0077-7000-8000-00000000d0a1";
    let log = dir
        .path()
        .join(format!("2026/03/10/rollout-2026-03-10T11-00-00-{id}.jsonl"));
    write(&log, &sample("codex/codex-0.77-turn-events.jsonl"));
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Codex, dir.path(), &rec);
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!(s.activity, Activity::Working);
    assert_eq!(
        s.max_context_tokens, 258_400,
        "the window task_started gives, not the model table's"
    );
    append(&log, &sample("codex/codex-0.77-turn-events-more.jsonl"));
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!(
        (s.activity.clone(), s.current_tool.as_str()),
        (Activity::Waiting, "")
    );
    assert_eq!(s.last_activity_at.to_string(), "2026-03-10T11:00:06.2Z");
    // A record while the session keeps waiting does not move its last activity.
    append(
        &log,
        r#"{"timestamp":"2026-03-10T11:05:00.000Z","type":"event_msg","payload":{"type":"token_count","info":null,"rate_limits":{"primary":{"used_percent":4.0}}}}
"#,
    );
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!(s.activity, Activity::Waiting);
    assert_eq!(s.last_activity_at.to_string(), "2026-03-10T11:00:06.2Z");
}

/// Gemini CLI 0.39 `$rewindTo`: the rewound messages, their tool calls and tokens are gone.
#[test]
fn gemini_rewind_drops_the_rewound_messages() {
    let dir = tempfile::tempdir().unwrap();
    let chat = dir
        .path()
        .join("3f79bb7b/chats/session-2026-02-10T10-00-5e55a0e1.jsonl");
    write(&chat, &sample("gemini/gemini-0.39-rewind.jsonl"));
    let rec = Recorder::default();
    monitor(SourceKind::Gemini, dir.path(), &rec).scan();
    let s = last_state(&rec.take(), "5e55a0e1-0039-4000-8000-0000000000r1").unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (4, 0));
    assert_eq!((s.context_tokens, s.output_tokens), (4100, 15 + 12));
    assert_eq!(s.activity, Activity::Waiting);
}

/// Gemini CLI 0.39 compression: a `$set` with `messages` rewrites the history. What the
/// dropped messages counted stays; the rewrite is one compaction; the summary turns it
/// adds are not messages of the session.
#[test]
fn gemini_history_rewrite_is_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let chat = dir
        .path()
        .join("3f79bb7b/chats/session-2026-02-13T08-00-5e55a0e1.jsonl");
    write(&chat, &sample("gemini/gemini-0.39-compressed.jsonl"));
    let rec = Recorder::default();
    monitor(SourceKind::Gemini, dir.path(), &rec).scan();
    let s = last_state(&rec.take(), "5e55a0e1-0039-4000-8000-0000000000c1").unwrap();
    assert_eq!(s.compaction_count, 1);
    assert_eq!((s.message_count, s.tool_call_count), (6, 1));
    assert_eq!(
        (s.context_tokens, s.output_tokens),
        (20_000, 150 + 200 + 300)
    );
}

const RESUMED: &str = "5e55a0e1-0038-4000-8000-0000000000j1";

fn resumed_paths(root: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let json = root.join("3f79bb7b/chats/session-2026-02-11T09-00-5e55a0e1.json");
    (json.clone(), json.with_extension("jsonl"))
}

fn assert_one_resumed_session(m: &Monitor, s: &agentwatch_ws::SessionState) {
    assert_eq!(m.sessions().len(), 1, "{:#?}", m.sessions());
    assert_eq!(s.id, RESUMED);
    assert_eq!((s.message_count, s.tool_call_count), (4, 1));
    assert_eq!((s.context_tokens, s.output_tokens), (3500, 50 + 5));
    assert_eq!(s.started_at.to_string(), "2026-02-11T09:00:00Z");
}

/// Resuming a Gemini CLI 0.38 `.json` chat with 0.39 writes `<name>.jsonl` beside it with
/// the same `sessionId` and the history copied: one session, nothing counted twice.
#[test]
fn gemini_resumed_json_chat_is_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let (json, jsonl) = resumed_paths(dir.path());
    write(&json, &sample("gemini/gemini-0.38-resumed.json"));
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Gemini, dir.path(), &rec);
    m.scan();
    let s = last_state(&rec.take(), RESUMED).unwrap();
    assert_eq!(s.message_count, 2);
    // Read while Gemini CLI is still copying the history: nothing shrinks meanwhile.
    let copy = sample("gemini/gemini-0.39-resumed.jsonl");
    let lines: Vec<&str> = copy.lines().collect();
    write(&jsonl, &(lines[..2].join("\n") + "\n"));
    m.scan();
    assert!(
        last_state(&rec.take(), RESUMED).is_none(),
        "no update from a partial copy"
    );
    append(&jsonl, &(lines[2..].join("\n") + "\n"));
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Updated]);
    assert_one_resumed_session(&m, &last_state(&events, RESUMED).unwrap());

    // Both files already there when the monitor starts: the same one session.
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Gemini, dir.path(), &rec);
    m.scan();
    assert_one_resumed_session(&m, &last_state(&rec.take(), RESUMED).unwrap());
}

/// A Gemini CLI subagent's chat, `chats/<parent session id>/<id>.jsonl`, is a subagent of
/// that session, not a session.
#[test]
fn gemini_subagent_chat_belongs_to_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = "5e55a0e1-0039-4000-8000-0000000000r1";
    let agent = "5ab0a9e1-0039-4000-8000-0000000000s1";
    write(
        &dir.path()
            .join("3f79bb7b/chats/session-2026-02-10T10-00-5e55a0e1.jsonl"),
        &sample("gemini/gemini-0.39-rewind.jsonl"),
    );
    write(
        &dir.path()
            .join(format!("3f79bb7b/chats/{parent}/{agent}.jsonl")),
        &sample("gemini/gemini-0.39-subagent.jsonl"),
    );
    let rec = Recorder::default();
    let mut m = monitor(SourceKind::Gemini, dir.path(), &rec);
    m.scan();
    let sessions = m.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let s = &sessions[0];
    assert_eq!(s.id, parent);
    assert_eq!(s.subagents.len(), 1);
    let sub = &s.subagents[0];
    assert_eq!((sub.id.as_str(), sub.parent_id.as_str()), (agent, parent));
    assert_eq!((sub.message_count, sub.tool_call_count), (2, 1));
    assert_eq!(sub.model, "gemini-2.5-flash");
}
