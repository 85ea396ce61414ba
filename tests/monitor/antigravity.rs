//! The Antigravity CLI source end to end: `agy`'s transcripts, subagent records and
//! workspace map written into a temp data root while a monitor runs, served by `WsLayer`
//! over a real socket, read by a WebSocket client; and the bad inputs, read with
//! `Monitor::scan`.

use std::path::{Path, PathBuf};

use crate::monitor_support::{
    Recorder, Served, append, last_state, read_until, sample, sample_lines, serve_monitor, write,
};
use agentwatch_ws::monitor::{Monitor, SourceKind};
use agentwatch_ws::{Activity, HealthStatus, LifecycleEventType};

const ID: &str = "3d2c1b0a-0000-4000-8000-00000000a001";
const CHILD: &str = "3d2c1b0a-0000-4000-8000-00000000c001";

fn transcript(root: &Path, id: &str) -> PathBuf {
    root.join(format!(
        "brain/{id}/.system_generated/logs/transcript.jsonl"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agy_conversation_reaches_a_connected_client() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("antigravity-cli");
    std::fs::create_dir_all(root.join("brain")).unwrap();
    // Go's assumed layout: never read.
    write(
        &root.join("3d2c1b0a-0000-4000-8000-00000000f001.json"),
        &sample("antigravity/go-assumed-not-real.json"),
    );
    write(
        &root.join("settings.json"),
        r#"{"model":"Gemini 3.5 Pro (High)","theme":"dark"}"#,
    );
    write(
        &root.join("cache/last_conversations.json"),
        &sample("antigravity/v1.0-last_conversations.json"),
    );

    let Served {
        publisher: hub,
        mut client,
        handle,
        events,
    } = serve_monitor(SourceKind::Antigravity, &root).await;
    let h = events.last().unwrap().health.clone().unwrap();
    assert_eq!(
        (h.source.as_str(), h.status),
        ("antigravity", HealthStatus::Healthy)
    );
    assert!(events.iter().all(|e| e.updates.is_empty()), "{events:#?}");

    // The prompt and the first tool call, then one step at a time.
    let all = sample_lines("antigravity/v1.0.16-transcript-tools.jsonl");
    let log = transcript(&root, ID);
    write(&log, &all[..3].concat());
    let events = read_until(&mut client, |e| e.updates.iter().any(|s| s.id == ID)).await;
    let lc = events
        .iter()
        .find_map(|e| e.lifecycle.clone())
        .expect("a lifecycle event");
    assert_eq!(
        (lc.kind, lc.source.as_str()),
        (LifecycleEventType::Discovered, "antigravity")
    );
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!(s.source, "antigravity");
    assert_eq!(
        s.working_dir, "/home/dev/work",
        "from last_conversations.json"
    );
    assert_eq!(s.model, "Gemini 3.5 Flash (Low)");
    assert_eq!(
        (s.activity, s.current_tool.as_str()),
        (Activity::Working, "write_to_file")
    );
    assert_eq!(s.started_at.to_string(), "2026-07-01T08:00:00Z");

    // A partial line waits for its newline.
    let (head, tail) = all[3].split_at(40);
    append(&log, head);
    append(&log, tail);
    read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.current_tool.is_empty())
    })
    .await;
    append(&log, &all[4..].concat());
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.activity == Activity::Waiting)
    })
    .await;
    let s = last_state(&events, ID).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (2, 2));
    assert_eq!(s.last_activity_at.to_string(), "2026-07-01T08:00:05Z");

    // A subagent: its record, then its own transcript; shown inside the parent.
    write(
        &root.join(format!(
            "brain/{ID}/.system_generated/subagents/{CHILD}.json"
        )),
        &sample("antigravity/v1.2.17-subagent-record.json"),
    );
    // agy writes the record when it spawns the subagent, before the child's first step.
    write(
        &transcript(&root, CHILD),
        &sample_lines("antigravity/v1.0-transcript-two-turns.jsonl").concat(),
    );
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.subagents.iter().any(|a| a.id == CHILD))
    })
    .await;
    let s = last_state(&events, ID).unwrap();
    let sub = &s.subagents[0];
    assert_eq!(
        (sub.slug.as_str(), sub.activity.clone()),
        ("research", Activity::Working)
    );
    assert_eq!(hub.sessions().len(), 1, "the subagent is no session");

    // A subagent whose transcript was read before its record (a record written late): a
    // session until the record says otherwise, then a subagent.
    let late = "3d2c1b0a-0000-4000-8000-00000000c002";
    write(
        &transcript(&root, late),
        &sample_lines("antigravity/v1.0-transcript-two-turns.jsonl").concat(),
    );
    let events = read_until(&mut client, |e| e.updates.iter().any(|s| s.id == late)).await;
    let s = last_state(&events, late).unwrap();
    assert_eq!(
        s.model, "Gemini 3.5 Pro (High)",
        "no settings notice in its prompts: settings.json's model"
    );
    write(
        &root.join(format!(
            "brain/{ID}/.system_generated/subagents/{late}.json"
        )),
        &sample("antigravity/v1.2.17-subagent-record.json").replace(CHILD, late),
    );
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.subagents.iter().any(|a| a.id == late))
    })
    .await;
    let ended = events
        .iter()
        .filter_map(|e| e.lifecycle.as_ref())
        .find(|l| l.session_id == late)
        .expect("the session ends");
    assert_eq!(
        (ended.kind.clone(), ended.reason.as_str()),
        (LifecycleEventType::Terminal, "subagent")
    );
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains("prompt"), "no prompt text on the wire");

    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

/// Oversize lines, invalid JSON, a truncated transcript, a FIFO where a transcript should
/// be, a record that is no JSON and an unreadable `brain` folder: nothing hangs, nothing is
/// counted twice, each bad input is counted.
#[cfg(unix)]
#[test]
fn bad_inputs() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let all = sample_lines("antigravity/v1.0.16-transcript-tools.jsonl");
    let log = transcript(root, ID);
    let huge = format!(
        "{{\"type\":\"USER_INPUT\",\"content\":\"{}\"}}\n",
        "x".repeat(2 << 20)
    );
    write(
        &log,
        &[all[0].as_str(), &huge, "{not json\n", &all[1], &all[2]].concat(),
    );
    let status = std::process::Command::new("mkfifo")
        .arg({
            let p = transcript(root, "3d2c1b0a-0000-4000-8000-00000000ff00");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            p
        })
        .status()
        .unwrap();
    assert!(status.success());
    write(
        &root.join(format!("brain/{ID}/.system_generated/subagents/bad.json")),
        "{not json",
    );
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .root(SourceKind::Antigravity, root)
        .idle_after(None)
        .stale_after(None)
        .build(rec.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        m.scan();
        let _ = tx.send(());
        m
    });
    rx.recv_timeout(crate::monitor_support::WAIT)
        .expect("the scan returned");
    let mut m = t.join().unwrap();
    assert_eq!(m.ignored_files(), 1);
    let s = last_state(&rec.take(), ID).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (1, 1));
    let h = m
        .health()
        .into_iter()
        .find(|h| h.source == "antigravity")
        .unwrap();
    assert_eq!(
        h.parse_failures, 3,
        "the oversize line, the bad line, the bad record"
    );

    // Truncated and written again from the start: nothing counted twice.
    std::fs::write(&log, all[..3].concat()).unwrap();
    m.scan();
    append(&log, &all[3..].concat());
    m.scan();
    let s = last_state(&rec.take(), ID).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (2, 2));
    assert_eq!(s.activity, Activity::Waiting);

    // An unreadable brain folder: the source's scans fail (unless run as root).
    let brain = root.join("brain");
    std::fs::set_permissions(&brain, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable = std::fs::read_dir(&brain).is_ok();
    for _ in 0..3 {
        m.scan();
    }
    let h = m
        .health()
        .into_iter()
        .find(|h| h.source == "antigravity")
        .unwrap();
    std::fs::set_permissions(&brain, std::fs::Permissions::from_mode(0o755)).unwrap();
    if !readable {
        assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    }
}
