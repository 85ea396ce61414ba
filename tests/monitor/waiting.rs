//! End to end, Codex CLI and Gemini CLI: a real `axum::serve` with `WsLayer`, the monitor
//! publishing into its `Publisher` from its own thread, a tokio-tungstenite client,
//! and lines appended to a log in a temp dir; the turn's end reaches the client as a delta
//! that turns `working` into `waiting`.

use crate::common;
use crate::monitor_support;

use std::path::Path;

use agentwatch_ws::monitor::{Monitor, MonitorHandle, SourceKind};
use agentwatch_ws::{Activity, Event, EventType, Publisher, SessionState, WsLayer};
use axum::Router;
use common::{connect, next_event, serve};
use monitor_support::{append, sample, write};

/// A server with a connected client (its snapshot read) and a monitor of `root`.
async fn start(source: SourceKind, root: &Path) -> (common::Client, Publisher, MonitorHandle) {
    let ws = WsLayer::new();
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
    let handle = Monitor::builder()
        .root(source, root)
        .idle_after(None)
        .build(hub.clone())
        .spawn()
        .unwrap();
    (client, hub, handle)
}

/// Reads events until a delta carries session `id`; returns that state.
async fn next_state(client: &mut common::Client, id: &str) -> SessionState {
    loop {
        let ev: Event = next_event(client).await;
        if let Some(s) = ev.updates.iter().find(|s| s.id == id) {
            return s.clone();
        }
    }
}

/// Reads events until a delta carries session `id` in `activity`; returns that state.
async fn until_activity(client: &mut common::Client, id: &str, activity: Activity) -> SessionState {
    loop {
        let ev: Event = next_event(client).await;
        if ev.kind != EventType::Delta {
            continue;
        }
        if let Some(s) = ev.updates.iter().find(|s| s.id == id) {
            if s.activity == activity {
                return s.clone();
            }
        }
    }
}

async fn stop(handle: MonitorHandle) {
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_turn_end_reaches_a_client_as_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let id = "0199d0d0-0077-7000-8000-00000000d0a1";
    let log = dir
        .path()
        .join(format!("2026/03/10/rollout-2026-03-10T11-00-00-{id}.jsonl"));
    write(&log, &sample("codex/codex-0.77-turn-events.jsonl"));
    let (mut client, hub, handle) = start(SourceKind::Codex, dir.path()).await;

    let working = until_activity(&mut client, id, Activity::Working).await;
    assert_eq!(working.max_context_tokens, 258_400);

    append(&log, &sample("codex/codex-0.77-turn-events-more.jsonl"));
    let waiting = until_activity(&mut client, id, Activity::Waiting).await;
    assert_eq!(waiting.current_tool, "");
    assert_eq!(waiting.message_count, 2);
    assert_eq!(
        waiting.last_activity_at.to_string(),
        "2026-03-10T11:00:06.2Z",
        "the wait starts at task_complete"
    );
    assert_eq!(hub.session(id), Some(waiting.clone()));

    // A rate-limit update while the session waits: still waiting since the same time (the
    // dashboard's "waiting for you" clock and its once-per-wait notification key).
    append(
        &log,
        r#"{"timestamp":"2026-03-10T11:05:00.000Z","type":"event_msg","payload":{"type":"token_count","info":null,"rate_limits":{"primary":{"used_percent":4.0}}}}
"#,
    );
    let later = next_state(&mut client, id).await;
    assert_eq!(later.activity, Activity::Waiting);
    assert_eq!(later.last_activity_at, waiting.last_activity_at);
    stop(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_turn_end_reaches_a_client_as_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let id = "6e2e0000-0039-4000-8000-0000000000e1";
    let chat = dir
        .path()
        .join("3f79bb7b/chats/session-2026-02-15T10-00-6e2e0000.jsonl");
    write(
        &chat,
        &format!(
            "{}\n{}\n",
            format_args!(
                r#"{{"sessionId":"{id}","projectHash":"3f79bb7b","startTime":"2026-02-15T10:00:00.000Z","lastUpdated":"2026-02-15T10:00:00.000Z","kind":"main"}}"#
            ),
            r#"{"id":"e-u1","timestamp":"2026-02-15T10:00:01.000Z","type":"user","content":[{"text":"Run the tests."}]}"#
        ),
    );
    let (mut client, hub, handle) = start(SourceKind::Gemini, dir.path()).await;

    until_activity(&mut client, id, Activity::Working).await;
    append(
        &chat,
        r#"{"id":"e-g1","timestamp":"2026-02-15T10:00:09.000Z","type":"gemini","content":"All pass.","thoughts":[],"tokens":{"input":5000,"output":20,"cached":0,"thoughts":4,"tool":0,"total":5024},"model":"gemini-2.5-pro","toolCalls":[{"id":"run_shell_command-1","name":"run_shell_command","args":{},"result":[],"status":"success","timestamp":"2026-02-15T10:00:08.000Z"}]}
"#,
    );
    let waiting = until_activity(&mut client, id, Activity::Waiting).await;
    assert_eq!(
        (
            waiting.message_count,
            waiting.tool_call_count,
            waiting.output_tokens
        ),
        (2, 1, 24)
    );
    assert_eq!(waiting.current_tool, "");
    assert_eq!(waiting.last_activity_at.to_string(), "2026-02-15T10:00:09Z");
    assert_eq!(hub.session(id), Some(waiting.clone()));

    // An info line while the chat waits: still waiting since the same time.
    append(
        &chat,
        r#"{"id":"e-i1","timestamp":"2026-02-15T10:07:00.000Z","type":"info","content":"Checkpoint saved."}
"#,
    );
    let later = next_state(&mut client, id).await;
    assert_eq!(later.activity, Activity::Waiting);
    assert_eq!(later.last_activity_at, waiting.last_activity_at);
    stop(handle).await;
}
