//! Shared helpers for the hook tests: the built `agentwatch-ws` binary run the way Claude
//! Code runs a command hook (JSON on stdin), and the sample hook inputs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agentwatch_ws::wire::Timestamp;

use crate::monitor_support::{append, claude_assistant, claude_project, claude_user, write};

/// The session id in every sample hook input.
pub const SAMPLE_SESSION: &str = "3b5f7c2e-9a41-4d0e-8c6b-2f1e0d9a7b13";

/// The `agentwatch-ws` binary cargo built for this test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentwatch-ws"))
}

/// The sample hook input `name` (`tests/data/hooks/claude-code-2.1-<name>.json`).
pub fn payload(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hooks")
        .join(format!("claude-code-2.1-{name}.json"));
    std::fs::read(path).unwrap()
}

/// The sample Gemini CLI hook input `name` (`tests/data/hooks/gemini-cli-<name>.json`,
/// `name` starting with the Gemini CLI version).
pub fn gemini_payload(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hooks")
        .join(format!("gemini-cli-{name}.json"));
    std::fs::read(path).unwrap()
}

/// Runs `agentwatch-ws <args>` with `stdin`, waiting at most 10 s.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("AGENTWATCH_MARKER_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    // A writer thread: the child may exit before reading everything (oversized input).
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agentwatch-ws {args:?} did not exit within 10 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

/// Runs the hook command with `stdin`, markers into `dir`.
pub fn hook(dir: &Path, stdin: &[u8]) -> Output {
    run(&["hook", "--marker-dir", dir.to_str().unwrap()], stdin)
}

/// Every file name in `dir` (none if it does not exist), sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `agentwatch-ws hooks <action> [--agent <agent>] --settings <settings>
/// [--marker-dir <markers>] <extra…>` (no `--agent`: the command's default, Claude Code).
pub fn hooks(
    action: &str,
    agent: Option<&str>,
    settings: &Path,
    markers: Option<&Path>,
    extra: &[&str],
) -> Output {
    let settings = settings.to_str().unwrap().to_owned();
    let markers = markers.map(|m| m.to_str().unwrap().to_owned());
    let mut args = vec!["hooks", action];
    if let Some(agent) = agent {
        args.extend(["--agent", agent]);
    }
    args.extend(["--settings", &settings]);
    if let Some(markers) = &markers {
        args.extend(["--marker-dir", markers]);
    }
    args.extend_from_slice(extra);
    run(&args, b"")
}

/// The JSON file at `path`.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Asserts that the settings `doc` give `event` exactly one hook of ours (a `command` hook
/// running `… hook --marker-dir <markers>`) and that its timeout is `timeout` (in the agent's
/// unit: seconds for Claude Code, milliseconds for Gemini CLI).
pub fn assert_one_hook_of_ours(doc: &serde_json::Value, event: &str, markers: &Path, timeout: u64) {
    let groups = doc["hooks"][event].as_array().unwrap();
    let ours: Vec<&serde_json::Value> = groups
        .iter()
        .flat_map(|g| g["hooks"].as_array().unwrap())
        .filter(|h| {
            h["command"]
                .as_str()
                .is_some_and(|c| c.contains(" hook --marker-dir "))
        })
        .collect();
    assert_eq!(ours.len(), 1, "{event}: {groups:?}");
    assert_eq!(ours[0]["type"], "command");
    assert!(
        ours[0]["command"]
            .as_str()
            .unwrap()
            .ends_with(markers.to_str().unwrap())
    );
    assert_eq!(ours[0]["timeout"], timeout, "{event}: the timeout");
}

/// `now` moved by `secs` (may be negative), as a log timestamp.
pub fn ts(now: Timestamp, secs: i64) -> String {
    Timestamp::from_unix_millis(now.unix_millis() as i64 + secs * 1000).to_string()
}

/// An assistant message's `tool_use` block: `tool`, call id `id`, an input with a command.
pub fn tool_use(id: &str, tool: &str) -> String {
    format!(r#"{{"type":"tool_use","id":"{id}","name":"{tool}","input":{{"command":"secret"}}}}"#)
}

/// Writes the log of Claude Code session `id` under the Claude root `projects` as a pending
/// permission prompt leaves it (Claude Code 2.1): a prompt 20 s before `now`, then an
/// assistant `tool_use` of `Bash` (call id `t1`) 10 s before `now` with no result yet.
/// Returns the log's path.
pub fn claude_permission_log(projects: &Path, id: &str, now: Timestamp) -> PathBuf {
    let log = claude_project(projects).join(format!("{id}.jsonl"));
    write(&log, &claude_user(id, "u1", &ts(now, -20), "run the tests"));
    append(
        &log,
        &claude_assistant(
            id,
            "m1",
            &ts(now, -10),
            &tool_use("t1", "Bash"),
            "\"tool_use\"",
            12,
        ),
    );
    log
}

/// A Gemini CLI chat of the sample session, relative to Gemini CLI's `tmp` directory.
pub const GEMINI_CHAT: &str = "3f79bb7b/chats/session-2026-05-01T10-00-3b5f7c2e.jsonl";

/// The first line of a Gemini CLI 0.39 `.jsonl` chat: session `id` of project `3f79bb7b`,
/// started at `start`, last updated at `last` (no newline).
pub fn gemini_session(id: &str, start: &str, last: &str) -> String {
    format!(
        r#"{{"sessionId":"{id}","projectHash":"3f79bb7b","startTime":"{start}","lastUpdated":"{last}","kind":"main"}}"#
    )
}

/// A user message of a Gemini CLI `.jsonl` chat (no newline).
pub fn gemini_user(uuid: &str, at: &str, text: &str) -> String {
    format!(r#"{{"id":"{uuid}","timestamp":"{at}","type":"user","content":[{{"text":"{text}"}}]}}"#)
}
