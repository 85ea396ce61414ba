//! Codex CLI threads and forks end to end: rollouts written into a temp sessions dir while a
//! monitor runs, served by `WsLayer` over a real socket and read by a WebSocket client; and
//! the orders a scan may find them in, read with `Monitor::scan`.
//!
//! A subagent thread that names its parent is a subagent of the parent's session; a fork
//! the person made is a session of its own. Neither counts the copy of the parent's history
//! it starts with.

use std::path::{Path, PathBuf};

use crate::monitor_support::{
    Recorder, Served, append, last_state, read_until, sample_lines, serve_monitor, write,
};
use agentwatch_ws::Activity;
use agentwatch_ws::monitor::{Monitor, SourceKind};

const PARENT: &str = "019f1000-0000-7000-8000-0000000000b1";
const FRESH: &str = "019f1000-0005-7000-8000-0000000000c1";
const WITH_HISTORY: &str = "019f1000-0005-7000-8000-0000000000c2";
const FORK: &str = "019e7000-0000-7000-8000-00000000f0a1";
const FORKED_FROM: &str = "019e6000-0000-7000-8000-00000000a0a1";

/// Where Codex writes the rollout of thread `id`.
fn rollout(root: &Path, id: &str) -> PathBuf {
    root.join(format!("2026/07/10/rollout-2026-07-10T12-00-00-{id}.jsonl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subagent_threads_reach_a_client_under_their_parent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    std::fs::create_dir_all(&root).unwrap();

    let Served {
        publisher: hub,
        mut client,
        handle,
        ..
    } = serve_monitor(SourceKind::Codex, &root).await;

    // The parent's turn up to the two spawn calls and their outputs.
    let parent = sample_lines("codex/v0.146-parent-spawn-call.jsonl");
    let parent_log = rollout(&root, PARENT);
    write(&parent_log, &parent[..10].concat());
    read_until(&mut client, |e| e.updates.iter().any(|s| s.id == PARENT)).await;

    // The fresh subagent, then the one spawned with the parent's history.
    write(
        &rollout(&root, FRESH),
        &sample_lines("codex/v0.146-subagent-spawn.jsonl").concat(),
    );
    write(
        &rollout(&root, WITH_HISTORY),
        &sample_lines("codex/v0.146-subagent-fork-all.jsonl").concat(),
    );
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == PARENT && s.subagents.len() == 2)
    })
    .await;
    for e in &events {
        assert!(
            e.updates.iter().all(|s| s.id == PARENT),
            "a subagent thread is no session: {e:#?}"
        );
        if let Some(lc) = &e.lifecycle {
            assert_eq!(lc.session_id, PARENT, "{lc:?}");
        }
    }
    let s = events
        .iter()
        .rev()
        .flat_map(|e| e.updates.iter())
        .find(|s| s.id == PARENT)
        .unwrap()
        .clone();
    // The parent's own counts: its prompt, and the two spawn calls.
    assert_eq!((s.message_count, s.tool_call_count), (1, 2));
    assert_eq!(s.output_tokens, 300);
    let sub = |id: &str| s.subagents.iter().find(|a| a.id == id).unwrap().clone();
    let fresh = sub(FRESH);
    assert_eq!(
        (fresh.parent_id.as_str(), fresh.slug.as_str()),
        (PARENT, "Noether")
    );
    assert_eq!((fresh.message_count, fresh.tool_call_count), (2, 1));
    assert_eq!((fresh.context_tokens, fresh.output_tokens), (5070, 120));
    assert_eq!(fresh.activity, Activity::Waiting);
    let with_history = sub(WITH_HISTORY);
    assert_eq!(with_history.slug, "Hopper");
    // Its own task and result only: the copied prompt, token totals and spawn call are the
    // parent's.
    assert_eq!(
        (with_history.message_count, with_history.tool_call_count),
        (2, 0)
    );
    assert_eq!(
        (with_history.context_tokens, with_history.output_tokens),
        (16_090, 90)
    );
    assert_eq!(
        with_history.last_activity_at.to_string(),
        "2026-07-10T12:00:12.002Z"
    );

    // The parent goes on (the wait call): its subagents stay with it.
    append(&parent_log, &parent[10..].concat());
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == PARENT && s.current_tool == "wait")
    })
    .await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!((s.tool_call_count, s.subagents.len()), (3, 2));

    assert_eq!(
        hub.sessions().len(),
        1,
        "one session: the subagent threads are none"
    );
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_reaches_a_client_with_its_own_work_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    std::fs::create_dir_all(&root).unwrap();

    let Served {
        publisher: hub,
        mut client,
        handle,
        ..
    } = serve_monitor(SourceKind::Codex, &root).await;

    // Codex writes the fork's meta and the copy of the parent's history in one burst.
    let all = sample_lines("codex/v0.135-fork-replay.jsonl");
    let log = rollout(&root, FORK);
    write(&log, &all[..12].concat());
    let events = read_until(&mut client, |e| e.updates.iter().any(|s| s.id == FORK)).await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!((s.message_count, s.tool_call_count), (0, 0), "{s:#?}");
    assert_eq!((s.context_tokens, s.output_tokens), (0, 0));
    assert_eq!(
        (s.working_dir.as_str(), s.branch.as_str()),
        ("/home/dev/svc", "try-b")
    );
    assert_eq!(s.started_at.to_string(), "2026-05-30T10:00:00Z");
    assert_ne!(
        s.activity,
        Activity::Working,
        "the copied turn is not running"
    );

    // The fork's own turn, one line at a time.
    for line in &all[12..] {
        append(&log, line);
    }
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == FORK && s.activity == Activity::Waiting && s.message_count == 2)
    })
    .await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!(s.tool_call_count, 0);
    assert_eq!((s.context_tokens, s.output_tokens), (13_080, 80));
    assert_eq!(s.last_activity_at.to_string(), "2026-05-30T10:02:15.002Z");
    for e in &events {
        for s in &e.updates {
            assert_eq!(s.id, FORK, "the parent named in the copy is no session");
            assert!(s.message_count <= 2 && s.output_tokens <= 80, "{s:#?}");
        }
    }
    assert!(hub.session(FORKED_FROM).is_none());
    assert_eq!(hub.sessions().len(), 1);
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
}

fn scan_monitor(root: &Path, rec: &Recorder) -> Monitor {
    Monitor::builder()
        .root(SourceKind::Codex, root)
        .idle_after(None)
        .build(rec.clone())
}

/// A subagent's rollout read before its parent's: kept, and shown under the parent once
/// the parent's rollout is read.
#[test]
fn a_subagent_read_before_its_parent_joins_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &rollout(dir.path(), FRESH),
        &sample_lines("codex/v0.146-subagent-spawn.jsonl").concat(),
    );
    let rec = Recorder::default();
    let mut m = scan_monitor(dir.path(), &rec);
    m.scan();
    let events = rec.take();
    assert!(
        events.iter().all(|e| e.updates.is_empty()),
        "no session yet: {events:#?}"
    );
    write(
        &rollout(dir.path(), PARENT),
        &sample_lines("codex/v0.146-parent-spawn-call.jsonl").concat(),
    );
    m.scan();
    let s = last_state(&rec.take(), PARENT).unwrap();
    assert_eq!(s.subagents.len(), 1);
    assert_eq!(
        (s.subagents[0].id.as_str(), s.subagents[0].message_count),
        (FRESH, 2)
    );
}

/// A thread spawned by a subagent thread is shown under the top session (with that
/// session as its parent), not lost under a thread that is no session.
#[test]
fn a_subagent_of_a_subagent_joins_the_top_session() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let mut m = scan_monitor(dir.path(), &rec);
    write(
        &rollout(dir.path(), PARENT),
        &sample_lines("codex/v0.146-parent-spawn-call.jsonl").concat(),
    );
    write(
        &rollout(dir.path(), FRESH),
        &sample_lines("codex/v0.146-subagent-spawn.jsonl").concat(),
    );
    m.scan();
    let grandchild = "019f1000-0009-7000-8000-0000000000d1";
    let child_lines = sample_lines("codex/v0.146-subagent-spawn.jsonl");
    let mut text = child_lines[0]
        .replace(FRESH, grandchild)
        .replace(PARENT, FRESH)
        .replace("Noether", "Turing");
    text.push_str(&child_lines[1..].concat());
    write(&rollout(dir.path(), grandchild), &text);
    m.scan();
    let s = last_state(&rec.take(), PARENT).unwrap();
    let ids: Vec<(&str, &str, &str)> = s
        .subagents
        .iter()
        .map(|a| (a.id.as_str(), a.parent_id.as_str(), a.slug.as_str()))
        .collect();
    assert_eq!(
        ids,
        [(FRESH, PARENT, "Noether"), (grandchild, PARENT, "Turing")]
    );
}

/// A `/review` subagent names no parent: a session of its own, counting its work.
#[test]
fn a_subagent_without_a_named_parent_is_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let id = "019f1000-0007-7000-8000-0000000000e7";
    let child = sample_lines("codex/v0.146-subagent-spawn.jsonl");
    let meta = format!(
        r#"{{"timestamp":"2026-07-10T12:00:05.000Z","type":"session_meta","payload":{{"id":"{id}","timestamp":"2026-07-10T12:00:05.000Z","cwd":"/home/dev/svc","originator":"codex-tui","cli_version":"0.146.0","source":{{"subagent":"review"}},"model_provider":"openai"}}}}
"#
    );
    write(&rollout(dir.path(), id), &(meta + &child[1..].concat()));
    let rec = Recorder::default();
    scan_monitor(dir.path(), &rec).scan();
    let s = last_state(&rec.take(), id).unwrap();
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));
    assert!(s.subagents.is_empty());
}
