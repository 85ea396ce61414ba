//! The dashboard example on real input: the roots it picks from `HOME`, what it prints, a
//! missing root (exit code 2), and a line appended to a log reaching a WebSocket client.

use crate::dashboard_support;
use crate::monitor_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use agentwatch_ws::{Event, EventType};
use futures_util::StreamExt;
use monitor_support::{WAIT, append, claude_assistant, claude_project, claude_user, write};
use tokio_tungstenite::tungstenite::Message;

/// Kills the child on drop, so a failing test leaves no server behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the dashboard with `HOME=home` and `args`; returns it and its stdout up to the
/// URL line.
fn start(home: &Path, args: &[&str]) -> (Guard, Vec<String>) {
    let mut child = Command::new(dashboard_support::binary())
        .args(args)
        .env("HOME", home)
        .env_remove("CODEX_HOME")
        .env_remove("CLAUDE_CONFIG_DIR")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no URL line from the dashboard; stdout so far: {lines:?}"));
        let done = line.contains("open http://");
        lines.push(line);
        if done {
            return (guard, lines);
        }
    }
}

#[test]
fn a_missing_root_is_an_error_with_exit_code_2() {
    let out = Command::new(dashboard_support::binary())
        .args(["--claude", "/nonexistent/agentwatch-test-root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--claude") && stderr.contains("no such directory"),
        "{stderr}"
    );
    let out = Command::new(dashboard_support::binary())
        .args(["--demo", "--codex", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn no_agent_logs_means_the_simulation() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".claude/projects")).unwrap();
    let port = dashboard_support::free_port().to_string();
    let (_server, lines) = start(home.path(), &["--port", &port]);
    assert!(
        lines[0].starts_with("input: the simulation (no agent logs in"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_roots_are_watched_and_appends_reach_the_page() {
    let home = tempfile::tempdir().unwrap();
    let id = "dash0000-0000-4000-8000-000000000001";
    let log = claude_project(&home.path().join(".claude/projects")).join(format!("{id}.jsonl"));
    write(
        &log,
        &claude_user(id, "u1", "2026-01-05T09:00:00Z", "hello"),
    );
    std::fs::create_dir_all(home.path().join(".codex/sessions")).unwrap();
    let port = dashboard_support::free_port();
    let (_server, lines) = tokio::task::spawn_blocking({
        let home = home.path().to_path_buf();
        move || start(&home, &["--port", &port.to_string()])
    })
    .await
    .unwrap();
    let text = lines.join("\n");
    assert!(
        text.contains("watching claude") && text.contains(".claude/projects"),
        "{text}"
    );
    assert!(
        text.contains("watching codex") && text.contains(".codex/sessions"),
        "{text}"
    );
    assert!(
        text.contains("found 1 recent session(s) (claude 1, codex 0)"),
        "{text}"
    );

    let (mut client, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    let mut next = async || loop {
        let msg = tokio::time::timeout(WAIT, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            return Event::from_json(text.as_bytes()).unwrap();
        }
    };
    let snapshot = next().await;
    assert_eq!(snapshot.kind, EventType::Snapshot);
    let s = snapshot
        .sessions
        .iter()
        .find(|s| s.id == id)
        .expect("the session in the snapshot");
    assert_eq!((s.source.as_str(), s.message_count), ("claude", 1));

    for (i, output) in [3, 8, 13].into_iter().enumerate() {
        let ts = format!("2026-01-05T09:00:0{}Z", i + 1);
        append(
            &log,
            &claude_assistant(
                id,
                "msg_d",
                &ts,
                r#"{"type":"text","text":"t"}"#,
                "null",
                output,
            ),
        );
    }
    loop {
        let ev = next().await;
        if let Some(s) = ev
            .updates
            .iter()
            .find(|s| s.id == id && s.output_tokens == 13)
        {
            assert_eq!(s.message_count, 2, "three lines, one message");
            break;
        }
    }
}
