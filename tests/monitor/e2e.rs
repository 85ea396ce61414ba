//! End to end: a real `axum::serve` with `WsLayer`, the monitor publishing into its
//! `Publisher` from its own thread, a tokio-tungstenite client, and lines appended to a
//! Claude Code log in a temp dir.

use crate::common;
use crate::monitor_support;

use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Activity, EventType, HealthStatus, LifecycleEventType, WsLayer};
use axum::Router;
use common::{connect, next_event, serve};
use monitor_support::{append, claude_assistant, claude_project, claude_user, read_until, write};

const ID: &str = "e2e00000-0000-4000-8000-000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_lines_reach_a_connected_client() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let log = claude_project(&root).join(format!("{ID}.jsonl"));
    write(
        &log,
        &claude_user(ID, "u1", "2026-01-05T09:00:00Z", "start"),
    );

    let ws = WsLayer::new();
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!(
        (snapshot.kind.clone(), snapshot.seq),
        (EventType::Snapshot, 0)
    );
    assert!(snapshot.sessions.is_empty());

    let handle = Monitor::builder()
        .root(SourceKind::Claude, &root)
        .idle_after(None)
        .build(hub.clone())
        .spawn()
        .unwrap();

    // The start: the session found, then the source's health.
    let mut events = read_until(&mut client, |e| e.kind == EventType::Health).await;
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        [EventType::Lifecycle, EventType::Delta, EventType::Health]
    );
    let lc = events[0].lifecycle.as_ref().unwrap();
    assert_eq!(
        (lc.kind.clone(), lc.session_id.as_str(), lc.source.as_str()),
        (LifecycleEventType::Discovered, ID, "claude")
    );
    let h = events[2].health.as_ref().unwrap();
    assert_eq!(
        (h.source.as_str(), h.status.clone()),
        ("claude", HealthStatus::Healthy)
    );

    // One assistant message written as three lines (thinking, text, tool_use), the way
    // Claude Code streams it; each line goes out as it is written.
    let blocks = [
        (r#"{"type":"thinking","thinking":"plan"}"#, "null", 10),
        (r#"{"type":"text","text":"reading"}"#, "null", 20),
        (
            r#"{"type":"tool_use","id":"toolu_9","name":"Read","input":{}}"#,
            r#""tool_use""#,
            35,
        ),
    ];
    for (i, (block, stop, output)) in blocks.into_iter().enumerate() {
        let ts = format!("2026-01-05T09:00:0{}Z", i + 1);
        append(
            &log,
            &claude_assistant(ID, "msg_e2e", &ts, block, stop, output),
        );
        let more = read_until(&mut client, |e| {
            e.updates
                .iter()
                .any(|s| s.id == ID && s.output_tokens == output)
        })
        .await;
        events.extend(more);
    }
    let last = events.last().unwrap().updates[0].clone();
    assert_eq!(last.message_count, 2, "the three lines are one message");
    assert_eq!(last.tool_call_count, 1);
    assert_eq!(last.current_tool, "Read");
    assert_eq!(last.activity, Activity::Working);
    assert_eq!(last.context_tokens, 51_100);
    assert_eq!(last.max_context_tokens, 200_000);
    assert_eq!(last.model, "claude-opus-4-1-20250805");

    // The tool result and the end of the turn.
    append(
        &log,
        &(r#"{"type":"user","uuid":"u2","sessionId":""#.to_owned()
            + ID
            + r#"","timestamp":"2026-01-05T09:00:05Z","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_9","content":"x"}]}}"#
            + "\n"),
    );
    append(
        &log,
        &claude_assistant(
            ID,
            "msg_e2f",
            "2026-01-05T09:00:06Z",
            r#"{"type":"text","text":"done"}"#,
            r#""end_turn""#,
            4,
        ),
    );
    events.extend(
        read_until(&mut client, |e| {
            e.updates
                .iter()
                .any(|s| s.id == ID && s.activity == Activity::Waiting)
        })
        .await,
    );
    let last = events.last().unwrap().updates[0].clone();
    assert_eq!(
        (
            last.message_count,
            last.output_tokens,
            last.current_tool.as_str()
        ),
        (4, 39, "")
    );

    // Every event once, in seq order from 1; each append is lifecycle `updated` + `delta`.
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    for pair in events[3..].chunks(2) {
        assert_eq!(
            pair[0].lifecycle.as_ref().map(|l| l.kind.clone()),
            Some(LifecycleEventType::Updated)
        );
        assert_eq!(pair[1].kind, EventType::Delta);
    }
    // The store agrees with what the client saw.
    assert_eq!(hub.session(ID), Some(last));
    assert_eq!(hub.seq(), *seqs.last().unwrap());

    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}
