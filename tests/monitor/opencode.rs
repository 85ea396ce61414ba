//! The OpenCode source end to end: OpenCode's SQLite database written (WAL mode) by another
//! connection on another thread while a monitor reads it, served by `WsLayer` over a real
//! socket, read by a WebSocket client; and the bad inputs (a FIFO, a file that is no
//! database, a replaced database), read with `Monitor::scan`.

use crate::common;
use std::path::Path;
use std::time::Duration;

use crate::monitor_support::{
    Recorder, Served, last_state, lifecycle_kinds, read_until, sample, serve_monitor,
};
use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Activity, HealthStatus, LifecycleEventType, Timestamp};
use rusqlite::{Connection, params};

/// A writer connection on `dir/opencode.db` in WAL mode, as OpenCode opens it, with the
/// 1.18 schema. It never waits for a lock: a reader that locked it out fails its writes.
fn writer(dir: &Path) -> Connection {
    let w = Connection::open(dir.join("opencode.db")).unwrap();
    w.pragma_update(None, "journal_mode", "wal").unwrap();
    w.busy_timeout(Duration::ZERO).unwrap();
    w.execute_batch(&sample("opencode/schema-v1.18.sql"))
        .unwrap();
    w
}

fn now_ms() -> i64 {
    i64::try_from(Timestamp::now().unix_millis()).unwrap()
}

const ID: &str = "ses_0f00000000001LiveSession0001";
const CHILD: &str = "ses_0f00000000001LiveChild00001";

fn session_row(w: &Connection, id: &str, parent: Option<&str>, at: i64) {
    w.execute(
        "INSERT OR IGNORE INTO project VALUES ('global','/',NULL,NULL,NULL,NULL,?1,?1,NULL,'[]',NULL)",
        [at],
    )
    .unwrap();
    w.execute(
        "INSERT INTO session (id, project_id, parent_id, slug, directory, title, version, time_created, time_updated) \
         VALUES (?1, 'global', ?2, 'live-otter', '/home/dev/live', '(title)', '1.18.32', ?3, ?3)",
        params![id, parent, at],
    )
    .unwrap();
}

fn message(w: &Connection, id: &str, session: &str, at: i64, data: &str) {
    w.execute(
        "INSERT INTO message VALUES (?1, ?2, ?3, ?3, ?4)",
        params![id, session, at, data],
    )
    .unwrap();
    w.execute(
        "UPDATE session SET time_updated = ?2 WHERE id = ?1",
        params![session, at],
    )
    .unwrap();
}

fn part(w: &Connection, id: &str, msg: &str, session: &str, at: i64, data: &str) {
    w.execute(
        "INSERT INTO part VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![id, msg, session, at, data],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opencode_session_written_by_another_connection_reaches_a_client() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    drop(writer(&root));
    // OpenCode's file snapshots beside the database: never walked.
    std::fs::create_dir_all(root.join("snapshot/abc/objects")).unwrap();

    let Served {
        publisher: hub,
        mut client,
        handle,
        events,
    } = serve_monitor(SourceKind::OpenCode, &root).await;
    let h = events.last().unwrap().health.clone().unwrap();
    assert_eq!(
        (h.source.as_str(), h.status),
        ("opencode", HealthStatus::Healthy)
    );

    // The writer, on its own thread and connection, starts a turn: a prompt, a step, a tool
    // running.
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let writer_root = root.clone();
    let thread = std::thread::spawn(move || {
        let w = Connection::open(writer_root.join("opencode.db")).unwrap();
        w.busy_timeout(Duration::ZERO).unwrap();
        while let Ok(step) = rx.recv() {
            let t = now_ms();
            match step {
                0 => {
                    session_row(&w, ID, None, t);
                    message(
                        &w,
                        "msg_0001",
                        ID,
                        t,
                        r#"{"role":"user","time":{"created":1},"model":{"providerID":"openai","modelID":"gpt-5.4-mini"}}"#,
                    );
                    message(
                        &w,
                        "msg_0002",
                        ID,
                        t,
                        r#"{"role":"assistant","modelID":"gpt-5.4-mini","providerID":"openai","time":{"created":1}}"#,
                    );
                    part(
                        &w,
                        "prt_0001",
                        "msg_0002",
                        ID,
                        t,
                        r#"{"type":"step-start"}"#,
                    );
                    part(
                        &w,
                        "prt_0002",
                        "msg_0002",
                        ID,
                        t,
                        r#"{"type":"tool","tool":"bash","callID":"c1","state":{"status":"running","input":{"command":"(secret command)"}}}"#,
                    );
                }
                1 => {
                    // The tool finishes in place; the step ends; the reply completes.
                    w.execute(
                        "UPDATE part SET time_updated = ?1, data = json_set(data, '$.state.status', 'completed', '$.state.output', '(secret output)') WHERE id = 'prt_0002'",
                        [t],
                    )
                    .unwrap();
                    part(
                        &w,
                        "prt_0003",
                        "msg_0002",
                        ID,
                        t,
                        r#"{"type":"step-finish","reason":"stop","tokens":{"input":300,"output":50,"reasoning":10,"cache":{"read":4000,"write":0}}}"#,
                    );
                    w.execute(
                        "UPDATE message SET time_updated = ?1, data = json_set(data, '$.time.completed', ?1, '$.finish', 'stop') WHERE id = 'msg_0002'",
                        [t],
                    )
                    .unwrap();
                    // A subagent the task tool started.
                    session_row(&w, CHILD, Some(ID), t);
                    message(
                        &w,
                        "msg_0003",
                        CHILD,
                        t,
                        r#"{"role":"user","time":{"created":1}}"#,
                    );
                }
                2 => {
                    // Many small transactions while the monitor reads: never locked out.
                    for i in 0..200 {
                        part(
                            &w,
                            &format!("prt_1{i:04}"),
                            "msg_0003",
                            CHILD,
                            now_ms(),
                            r#"{"type":"text","text":"(x)"}"#,
                        );
                    }
                }
                _ => {
                    w.execute(
                        "UPDATE session SET time_archived = ?1, time_updated = ?1 WHERE id = ?2",
                        params![t, ID],
                    )
                    .unwrap();
                }
            }
            done_tx.send(step).unwrap();
        }
    });

    tx.send(0).unwrap();
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.current_tool == "bash")
    })
    .await;
    let lc = events
        .iter()
        .find_map(|e| e.lifecycle.clone())
        .expect("a lifecycle event");
    assert_eq!(
        (lc.kind, lc.source.as_str()),
        (LifecycleEventType::Discovered, "opencode")
    );
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!(s.source, "opencode");
    assert_eq!(s.activity, Activity::Working);
    assert_eq!(s.working_dir, "/home/dev/live");
    assert_eq!(s.model, "gpt-5.4-mini");
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains("secret"), "no tool input on the wire");

    tx.send(1).unwrap();
    let events = read_until(&mut client, |e| {
        e.updates.iter().any(|s| {
            s.id == ID
                && s.activity == Activity::Waiting
                && s.subagents.iter().any(|a| a.message_count == 1)
        })
    })
    .await;
    let s = last_state(&events, ID).unwrap();
    assert_eq!(s.current_tool, "");
    assert_eq!((s.context_tokens, s.output_tokens), (300 + 4000, 60));
    assert_eq!(s.subagents[0].id, CHILD);
    assert_eq!(s.subagents[0].activity, Activity::Working);
    assert!(
        events
            .iter()
            .all(|e| e.updates.iter().all(|u| u.id != CHILD)),
        "a subagent is no session"
    );

    tx.send(2).unwrap();
    assert_eq!(
        common::within("the writer's transactions", done_rx.recv()).await,
        Some(0)
    );
    assert_eq!(
        common::within("the writer's transactions", done_rx.recv()).await,
        Some(1)
    );
    assert_eq!(
        common::within("the writer's transactions", done_rx.recv()).await,
        Some(2),
        "every write succeeded without waiting for a lock"
    );

    tx.send(3).unwrap();
    let events = read_until(&mut client, |e| {
        e.lifecycle
            .as_ref()
            .is_some_and(|l| l.session_id == ID && l.kind == LifecycleEventType::Terminal)
    })
    .await;
    let lc = events.last().unwrap().lifecycle.clone().unwrap();
    assert_eq!(lc.reason, "archived");
    assert_eq!(hub.sessions().len(), 1, "one session: the subagent is none");
    drop(tx);
    thread.join().unwrap();
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

fn scan_monitor(root: &Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(SourceKind::OpenCode, root)
        .idle_after(None)
        .health_threshold(1)
        .build(rec.clone())
}

/// A database replaced by another at the same path (restored from a backup) is read as new,
/// without counting twice; a file that is no database fails the source's health, and the
/// source recovers once a database is back.
#[test]
fn a_replaced_database_and_a_file_that_is_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = writer(root);
    w.execute_batch(&sample("opencode/sample-v1.18.sql"))
        .unwrap();
    let t = now_ms();
    w.execute("UPDATE session SET time_updated = ?1", [t])
        .unwrap();
    drop(w);
    let id = "ses_0f00000000001SampleSession18";
    let rec = Recorder::default();
    let mut m = scan_monitor(root, &rec);
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (5, 2));

    // Replaced: the same rows plus a new prompt, written as a new file and renamed over.
    let other = tempfile::tempdir().unwrap();
    let w = writer(other.path());
    w.execute_batch(&sample("opencode/sample-v1.18.sql"))
        .unwrap();
    w.execute("UPDATE session SET time_updated = ?1", [t + 1])
        .unwrap();
    message(
        &w,
        "msg_0f00000000099New",
        id,
        t + 1,
        r#"{"role":"user","time":{"created":1}}"#,
    );
    w.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(w);
    std::fs::rename(other.path().join("opencode.db"), root.join("opencode.db")).unwrap();
    let _ = std::fs::remove_file(root.join("opencode.db-wal"));
    let _ = std::fs::remove_file(root.join("opencode.db-shm"));
    m.scan();
    let events = rec.take();
    assert!(!lifecycle_kinds(&events).contains(&LifecycleEventType::Discovered));
    let s = last_state(&events, id).unwrap();
    assert_eq!(
        (s.message_count, s.tool_call_count),
        (6, 2),
        "each row once"
    );
    assert_eq!(s.activity, Activity::Working);

    // Not a database.
    std::fs::write(root.join("opencode.db"), vec![b'x'; 8192]).unwrap();
    m.scan();
    let h = m
        .health()
        .into_iter()
        .find(|h| h.source == "opencode")
        .unwrap();
    assert_ne!(h.status, HealthStatus::Healthy, "{h:?}");
    assert!(
        !h.last_error.contains(&root.display().to_string()),
        "no path: {h:?}"
    );
    rec.take();

    // A database again: healthy.
    std::fs::remove_file(root.join("opencode.db")).unwrap();
    drop(writer(root));
    m.scan();
    let h = m
        .health()
        .into_iter()
        .find(|h| h.source == "opencode")
        .unwrap();
    assert_eq!(h.status, HealthStatus::Healthy);
}

/// A FIFO where the database should be is never opened (SQLite would block on it) and is
/// counted once; a database in a subdirectory is no database of OpenCode's.
#[cfg(unix)]
#[test]
fn a_fifo_is_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let status = std::process::Command::new("mkfifo")
        .arg(root.join("opencode.db"))
        .status()
        .unwrap();
    assert!(status.success());
    let nested = root.join("storage");
    std::fs::create_dir_all(&nested).unwrap();
    let w = writer(&nested);
    w.execute_batch(&sample("opencode/sample-v1.18.sql"))
        .unwrap();
    drop(w);
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::OpenCode, root)
        .stale_after(None)
        .build(rec.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        m.scan();
        let _ = tx.send((m.ignored_files(), m.sessions().len()));
    });
    let (ignored, sessions) = rx
        .recv_timeout(crate::monitor_support::WAIT)
        .expect("the scan returned");
    assert_eq!((ignored, sessions), (1, 0));
}
