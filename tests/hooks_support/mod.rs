//! Shared helpers for the hook tests: the built `agentwatch-ws` binary run the way Claude
//! Code runs a command hook (JSON on stdin), and the sample hook inputs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
