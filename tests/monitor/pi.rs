//! The Pi source end to end: pi session files written into a temp sessions dir while a
//! monitor runs, served by `WsLayer` over a real socket, read by a WebSocket client; and the
//! rewrites pi does to its files, read with `Monitor::scan`.

use crate::monitor_support::{
    Recorder, Served, append, last_state, lifecycle_kinds, read_until, sample_lines, serve_monitor,
    write,
};
use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Activity, HealthStatus, LifecycleEventType};

const ID: &str = "0c1d2e3f-0000-4000-8000-000000000005";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pi_session_reaches_a_connected_client() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let project = root.join("--home-user-proj-c--");
    std::fs::create_dir_all(&project).unwrap();
    // An extension's artifact beside the sessions: never a session.
    write(
        &project.join("subagent-artifacts/0c1d_scout.jsonl"),
        &sample_lines("pi/v0.58-tree-v3-tools.jsonl").concat(),
    );

    let Served {
        publisher: hub,
        mut client,
        handle,
        events,
    } = serve_monitor(SourceKind::Pi, &root).await;
    let h = events.last().unwrap().health.clone().unwrap();
    assert_eq!((h.source.as_str(), h.status), ("pi", HealthStatus::Healthy));
    assert!(
        events.iter().all(|e| e.updates.is_empty()),
        "the artifact is no session: {events:#?}"
    );

    // Pi writes the header and every entry up to the first assistant message at once.
    let all = sample_lines("pi/v0.58-tree-v3-tools.jsonl");
    let log = project.join(format!("2026-01-05T13-00-00-000Z_{ID}.jsonl"));
    write(&log, &all[..5].concat());
    let events = read_until(&mut client, |e| e.updates.iter().any(|s| s.id == ID)).await;
    let lc = events
        .iter()
        .find_map(|e| e.lifecycle.clone())
        .expect("a lifecycle event");
    assert_eq!(
        (lc.kind, lc.source.as_str()),
        (LifecycleEventType::Discovered, "pi")
    );
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!(s.source, "pi");
    assert_eq!(s.working_dir, "/home/user/proj-c");
    assert_eq!(s.model, "model-a");
    assert_eq!(
        (s.activity, s.current_tool.as_str()),
        (Activity::Working, "read")
    );
    assert_eq!((s.message_count, s.tool_call_count), (2, 2));
    assert_eq!(s.context_tokens, 6 + 2400);
    assert_eq!(s.started_at.to_string(), "2026-01-05T13:00:00Z");

    // One line at a time, as pi appends them: the results, the reply, the next turn.
    append(&log, &all[5]);
    append(&log, &all[6]);
    read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.current_tool.is_empty())
    })
    .await;
    append(&log, &all[7..].concat());
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.message_count == 7 && s.activity == Activity::Waiting)
    })
    .await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!((s.tool_call_count, s.model.as_str()), (3, "model-b"));
    assert_eq!(
        (s.context_tokens, s.output_tokens),
        (120 + 2500, 80 + 25 + 40 + 15)
    );
    assert_eq!(s.last_activity_at.to_string(), "2026-01-05T13:02:08Z");

    // The person's own `!` command while the agent waits changes nothing it reports.
    append(
        &log,
        r#"{"type":"message","id":"b000000d","parentId":"b000000c","timestamp":"2026-01-05T13:03:00.000Z","message":{"role":"bashExecution","command":"ls","output":"x","exitCode":0,"cancelled":false,"truncated":false,"timestamp":1767618180000}}
"#,
    );
    let events = read_until(&mut client, |e| e.updates.iter().any(|s| s.id == ID)).await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!(
        (s.activity, s.tool_call_count, s.message_count),
        (Activity::Waiting, 3, 7)
    );
    assert_eq!(s.last_activity_at.to_string(), "2026-01-05T13:02:08Z");

    assert_eq!(hub.sessions().len(), 1, "one session: the artifact is none");
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

fn scan_monitor(root: &std::path::Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(SourceKind::Pi, root)
        .idle_after(None)
        .build(rec.clone())
}

/// Pi migrates a linear (format 1) file to format 3 when it opens it, rewriting it whole:
/// ids added, so larger. Read again from the start, nothing counted twice.
#[test]
fn a_migration_in_place_is_read_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let id = "0c1d2e3f-0000-4000-8000-000000000002";
    let log = dir.path().join(format!(
        "--home-user-proj-a--/2026-01-05T10-00-00-000Z_{id}.jsonl"
    ));
    let old = sample_lines("pi/v0.9-linear-header-model.jsonl");
    write(&log, &old[..4].concat());
    let rec = Recorder::default();
    let mut m = scan_monitor(dir.path(), &rec);
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));

    // The migrated file: the same entries with ids and a version 3 header, then a new turn.
    let mut migrated =
        vec![old[0].replace(r#"{"type":"session","#, r#"{"type":"session","version":3,"#)];
    let mut parent = "null".to_owned();
    for (i, line) in old[1..].iter().enumerate() {
        let entry_id = format!("\"m{i:07}\"");
        migrated.push(line.replacen(
            r#"{"type":"#,
            &format!(r#"{{"id":{entry_id},"parentId":{parent},"type":"#),
            1,
        ));
        parent = entry_id;
    }
    migrated.push(format!(
        r#"{{"type":"message","id":"m9","parentId":{parent},"timestamp":"2026-01-05T10:05:00.000Z","message":{{"role":"user","content":[{{"type":"text","text":"again"}}],"timestamp":1767607500000}}}}
"#
    ));
    let migrated = migrated.concat();
    assert!(migrated.len() > old[..4].concat().len());
    std::fs::write(&log, &migrated).unwrap();
    m.scan();
    let events = rec.take();
    assert_eq!(
        lifecycle_kinds(&events)
            .iter()
            .filter(|k| **k == LifecycleEventType::Discovered)
            .count(),
        0
    );
    let s = last_state(&events, id).unwrap();
    // user, assistant, assistant (old), user (new): each once.
    assert_eq!((s.message_count, s.tool_call_count), (4, 1));
    assert_eq!(s.compaction_count, 1);
    assert_eq!(s.activity, Activity::Working);
    assert_eq!(s.model, "model-b");
}

/// A file rewritten shorter (a branch written as a new file replaces nothing, but a
/// migration that drops text does shrink): read again from the start.
#[test]
fn a_shrunk_file_is_read_again_and_a_headerless_file_is_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let id = "0c1d2e3f-0000-4000-8000-000000000006";
    let log = dir.path().join(format!(
        "--home-user-proj-c--/2026-01-05T14-00-00-000Z_{id}.jsonl"
    ));
    let all = sample_lines("pi/v0.58-tree-v3-abort-error-compaction.jsonl");
    write(&log, &all.concat());
    // Not a pi session: no header on line 1.
    write(
        &dir.path().join("--home-user-proj-c--/notes.jsonl"),
        &all[2..].concat(),
    );
    let rec = Recorder::default();
    let mut m = scan_monitor(dir.path(), &rec);
    m.scan();
    let events = rec.take();
    let s = last_state(&events, id).unwrap();
    assert_eq!((s.message_count, s.compaction_count), (7, 1));
    assert!(last_state(&events, "notes").is_none());
    assert_eq!(m.sessions().len(), 1);

    std::fs::write(&log, all[..4].concat()).unwrap();
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!(s.activity, Activity::Waiting, "the aborted reply");
    append(&log, &all[4]);
    m.scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!(s.activity, Activity::Working);
    assert_eq!(m.health()[0].source, "pi");
}
