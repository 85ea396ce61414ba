//! The Cursor source end to end: transcripts written into a temp projects root while a
//! monitor runs, served by `WsLayer` over a real socket, read by a WebSocket client; and the
//! legacy text transcript, read with `Monitor::scan`.

use std::path::Path;
use std::time::Duration;

use crate::monitor_support::{
    Recorder, Served, append, last_state, lifecycle_kinds, read_until, sample, sample_lines,
    serve_monitor, write,
};
use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Activity, HealthStatus, LifecycleEventType};

const ID: &str = "3c0f9a10-0000-4000-8000-0000000c0501";
const CHILD: &str = "3c0f9a10-0000-4000-8000-0000000c05c1";

/// Cursor's folder name for `path`: the root dropped, every other character that is not
/// alphanumeric or `-` turned into `-`.
fn encode(path: &Path) -> String {
    path.to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_session_and_its_subagent_reach_a_connected_client() {
    let dir = tempfile::tempdir().unwrap();
    // A working directory whose name holds `-`, `.` and `_`: only the disk tells them apart.
    let cwd = dir.path().canonicalize().unwrap().join("work/my-app.v2_x");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(dir.path().join("work/my")).unwrap();
    let root = dir.path().join("projects");
    let transcripts = root.join(encode(&cwd)).join("agent-transcripts");
    std::fs::create_dir_all(&transcripts).unwrap();

    let Served {
        publisher: hub,
        mut client,
        handle,
        events,
    } = serve_monitor(SourceKind::Cursor, &root).await;
    let h = events.last().unwrap().health.clone().unwrap();
    assert_eq!(
        (h.source.as_str(), h.status),
        ("cursor", HealthStatus::Healthy)
    );

    // The prompt and a step delegating to a subagent (no tool path names the directory).
    let parent = sample_lines("cursor/v2026.09-jsonl-subagent-parent.jsonl");
    let log = transcripts.join(ID).join(format!("{ID}.jsonl"));
    write(&log, &parent[..2].concat());
    let events = read_until(&mut client, |e| e.updates.iter().any(|s| s.id == ID)).await;
    let lc = events
        .iter()
        .find_map(|e| e.lifecycle.clone())
        .expect("a lifecycle event");
    assert_eq!(
        (lc.kind, lc.source.as_str()),
        (LifecycleEventType::Discovered, "cursor")
    );
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!(s.source, "cursor");
    assert_eq!(s.working_dir, cwd.to_string_lossy(), "decoded on disk");
    assert_eq!(
        (s.activity, s.current_tool.as_str()),
        (Activity::Working, "Task")
    );
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));
    assert_eq!(s.started_at.to_string(), "2026-01-05T09:00:00Z");
    assert_eq!((s.model.as_str(), s.context_tokens), ("", 0));

    // The subagent's transcript: a subagent of the session, never a session.
    let child = sample_lines("cursor/v2026.09-jsonl-subagent-child.jsonl");
    let child_log = transcripts
        .join(ID)
        .join("subagents")
        .join(format!("{CHILD}.jsonl"));
    write(&child_log, &child[..2].concat());
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.subagents.iter().any(|a| a.id == CHILD))
    })
    .await;
    let s = events.last().unwrap().updates[0].clone();
    let sub = &s.subagents[0];
    assert_eq!(
        (
            sub.parent_id.as_str(),
            sub.activity.clone(),
            sub.current_tool.as_str()
        ),
        (ID, Activity::Working, "Shell")
    );
    append(&child_log, &child[2..].concat());
    read_until(&mut client, |e| {
        e.updates.iter().any(|s| {
            s.id == ID
                && s.subagents
                    .iter()
                    .any(|a| a.id == CHILD && a.activity == Activity::Terminal)
        })
    })
    .await;

    // The rest of the parent's turn, then its `turn_ended`.
    append(&log, &parent[2..4].concat());
    append(&log, &parent[4]);
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.activity == Activity::Waiting)
    })
    .await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!((s.message_count, s.tool_call_count), (4, 2));
    assert_eq!(s.current_tool, "");
    let written = std::fs::metadata(&log).unwrap().modified().unwrap();
    assert_eq!(
        s.last_activity_at,
        agentwatch_ws::Timestamp::from(written),
        "lines carry no time: the file's"
    );

    assert_eq!(hub.sessions().len(), 1, "the subagent is no session");
    assert!(hub.session(CHILD).is_none());
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

/// A legacy text transcript (`<id>.txt`) beside a flat `<id>.jsonl` and the workspace-less
/// layout, read with scans; a reply without a turn marker is a turn end.
#[test]
fn legacy_text_flat_and_workspace_less_transcripts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let project = root.join("home-nobody-gone-dir").join("agent-transcripts");
    write(
        &project.join("legacy-1.txt"),
        &sample("cursor/v2026.02-legacy-text.txt"),
    );
    // A flat `<id>.jsonl` whose tools name paths in its directory (not on this disk).
    write(
        &root.join("home-user-proj-a/agent-transcripts/flat-1.jsonl"),
        &sample("cursor/v2026.08-jsonl-turn-ended.jsonl"),
    );
    write(
        &root.join("agent-transcripts/nofolder-1/nofolder-1.jsonl"),
        &sample("cursor/v2026.03-jsonl-text-only.jsonl"),
    );
    // Not transcripts: terminal captures and other files in the session's directory.
    write(
        &root.join("home-nobody-gone-dir/agent-tools/x.txt"),
        "output\n",
    );
    write(&project.join("nofolder-2/other.jsonl"), "{}\n");
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Cursor, root)
        .idle_after(None)
        .turn_end_delay(Duration::ZERO)
        .build(rec.clone());
    m.scan();
    let events = rec.take();
    assert_eq!(
        lifecycle_kinds(&events),
        [const { LifecycleEventType::Discovered }; 3],
        "{events:#?}"
    );
    let s = last_state(&events, "legacy-1").unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (6, 3));
    assert_eq!(s.activity, Activity::Waiting, "the reply ends the turn");
    // The directory is gone and no tool named it: Go's guess.
    assert_eq!(s.working_dir, "/home/nobody/gone/dir");
    let s = last_state(&events, "flat-1").unwrap();
    assert_eq!(s.working_dir, "/home/user/proj-a", "from a tool's path");
    assert_eq!((s.activity, s.message_count), (Activity::Waiting, 8));
    let s = last_state(&events, "nofolder-1").unwrap();
    assert_eq!((s.working_dir.as_str(), s.message_count), ("", 4));
    assert_eq!(m.sessions().len(), 3);

    // A new prompt in the legacy file: working, then a reply again.
    append(
        &project.join("legacy-1.txt"),
        "\nuser:\n<user_query>\nthird\n</user_query>\n",
    );
    m.scan();
    let s = last_state(&rec.take(), "legacy-1").unwrap();
    assert_eq!((s.activity, s.message_count), (Activity::Working, 7));
    append(
        &project.join("legacy-1.txt"),
        "\nassistant:\nThird reply.\n",
    );
    m.scan();
    let s = last_state(&rec.take(), "legacy-1").unwrap();
    assert_eq!((s.activity, s.message_count), (Activity::Waiting, 8));
}
