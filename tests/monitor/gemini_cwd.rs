//! Gemini CLI sessions get their working directory: chats written into a temp Gemini home
//! while a monitor runs, served by `WsLayer` over a real socket and read by a WebSocket
//! client; and each way a project folder names its root, read with `Monitor::scan`.

use std::path::Path;

use crate::monitor_support::{
    Recorder, Served, claude_assistant, claude_project, claude_user, last_state, lifecycle_kinds,
    read_until, sample, serve_monitor, write,
};
use agentwatch_ws::LifecycleEventType;
use agentwatch_ws::monitor::{Monitor, SourceKind};

/// A `.jsonl` chat with session `id` whose header has `project_hash`.
fn chat(id: &str, project_hash: &str) -> String {
    format!(
        r#"{{"sessionId":"{id}","projectHash":"{project_hash}","startTime":"2026-04-20T09:00:00.000Z","lastUpdated":"2026-04-20T09:00:00.000Z"}}
{{"id":"u1","timestamp":"2026-04-20T09:00:01.000Z","type":"user","content":[{{"text":"(prompt)"}}]}}
{{"id":"g1","timestamp":"2026-04-20T09:00:04.000Z","type":"gemini","content":"(reply)","tokens":{{"input":6000,"output":50,"cached":0,"thoughts":0,"tool":0,"total":6050}},"model":"gemini-2.5-flash"}}
"#
    )
}

/// SHA-256 of `/home/dev/web-app` (hex), as Gemini CLI names its project folder up to
/// v0.28.
const WEB_APP_HASH: &str = "35b5724f22cd39d5f351d4d5182e0bced9c2017d40d42af5b4dbe3d525c9cadc";

/// SHA-256 of `/home/dev/parser`, the working directory of `claude_user`'s lines.
const PARSER_HASH: &str = "70aae4706233a157223823d1f4d5ea99f99e3b749a163a0e0bdaa0a92d7c8691";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slug_folder_chat_reaches_a_client_with_its_project_root() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("tmp");
    std::fs::create_dir_all(&root).unwrap();

    let Served {
        publisher: _hub,
        mut client,
        handle,
        ..
    } = serve_monitor(SourceKind::Gemini, &root).await;

    // v0.29+: Gemini CLI writes the marker when it creates the folder, then the chat.
    let folder = root.join("web-app-1");
    write(
        &folder.join(".project_root"),
        &sample("gemini/v0.29-project_root"),
    );
    let id = "7c1e0d2a-0029-4000-8000-0000000000e1";
    write(
        &folder.join("chats/session-2026-04-20T09-00-7c1e0d2a.jsonl"),
        &chat(
            id,
            "227b47f1d9758746f0b2e15e206f3023cdc8cf25385c17f4387f2b806fbdee45",
        ),
    );
    let events = read_until(&mut client, |e| e.updates.iter().any(|s| s.id == id)).await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!(s.working_dir, "/home/dev/clients/web-app");
    assert_eq!(s.message_count, 2);
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

fn scan_monitor(roots: &[(SourceKind, &Path)], rec: &Recorder) -> Monitor {
    let mut b = Monitor::builder().idle_after(None);
    for (source, root) in roots {
        b = b.root(*source, root);
    }
    b.build(rec.clone())
}

/// v0.29+ with the registry only (the marker gone): `projects.json` beside `tmp`.
#[test]
fn the_registry_names_a_folder_without_marker() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("tmp");
    write(
        &home.path().join("projects.json"),
        &sample("gemini/v0.29-projects.json"),
    );
    let id = "7c1e0d2a-0029-4000-8000-0000000000e2";
    write(
        &root.join("scratch/chats/session-2026-04-20T09-00-7c1e0d2a.jsonl"),
        &chat(id, "00"),
    );
    let rec = Recorder::default();
    scan_monitor(&[(SourceKind::Gemini, &root)], &rec).scan();
    assert_eq!(
        last_state(&rec.take(), id).unwrap().working_dir,
        "/home/dev/scratch"
    );
}

/// v0.28 hash folder: a `.json` chat that recorded its directories (after
/// `/directory add`); a `.jsonl` chat with a `$set` of them.
#[test]
fn a_hash_folder_chat_with_directories() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("tmp");
    let chats = root.join(WEB_APP_HASH).join("chats");
    write(
        &chats.join("session-2026-01-30T09-00-7c1e0d2a.json"),
        &sample("gemini/v0.28-directories.json"),
    );
    write(
        &chats.join("session-2026-04-20T09-00-7c1e0d2a.jsonl"),
        &sample("gemini/v0.39-dir-add.jsonl"),
    );
    let rec = Recorder::default();
    scan_monitor(&[(SourceKind::Gemini, &root)], &rec).scan();
    let events = rec.take();
    for id in [
        "7c1e0d2a-0028-4000-8000-0000000000d1",
        "7c1e0d2a-0039-4000-8000-0000000000d2",
    ] {
        assert_eq!(
            last_state(&events, id).unwrap().working_dir,
            "/home/dev/web-app",
            "{id}"
        );
    }
}

/// A hash folder whose root nothing names has no working directory; a Claude Code session
/// found later in the directory whose SHA-256 the folder is fills it in (`updated`).
#[test]
fn a_hash_folder_is_resolved_by_another_session_in_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let gemini = dir.path().join("gemini/tmp");
    let claude = dir.path().join("claude");
    std::fs::create_dir_all(&claude).unwrap();
    let hash = PARSER_HASH;
    let id = "7c1e0d2a-0020-4000-8000-0000000000e3";
    write(
        &gemini
            .join(hash)
            .join("chats/session-2026-04-20T09-00-7c1e0d2a.jsonl"),
        &chat(id, hash),
    );
    let rec = Recorder::default();
    let mut m = scan_monitor(
        &[(SourceKind::Gemini, &gemini), (SourceKind::Claude, &claude)],
        &rec,
    );
    m.scan();
    assert_eq!(
        last_state(&rec.take(), id).unwrap().working_dir,
        "",
        "nothing names the project yet"
    );

    let session = "0f1e2d3c-0000-4000-8000-0000000000c1";
    write(
        &claude_project(&claude).join(format!("{session}.jsonl")),
        &(claude_user(session, "u1", "2026-04-20T09:10:00Z", "hi")
            + &claude_assistant(
                session,
                "m1",
                "2026-04-20T09:10:05Z",
                r#"{"type":"text","text":"ok"}"#,
                r#""end_turn""#,
                5,
            )),
    );
    m.scan();
    let events = rec.take();
    assert_eq!(
        last_state(&events, session).unwrap().working_dir,
        "/home/dev/parser"
    );
    let s = last_state(&events, id).unwrap();
    assert_eq!(s.working_dir, "/home/dev/parser");
    assert_eq!(s.message_count, 2, "nothing counted again");
    assert!(
        events
            .iter()
            .filter_map(|e| e.lifecycle.as_ref())
            .any(|l| l.session_id == id && l.kind == LifecycleEventType::Updated),
        "{:?}",
        lifecycle_kinds(&events)
    );
}
