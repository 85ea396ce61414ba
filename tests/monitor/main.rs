//! The monitor (feature `monitor`) on real log files in temp dirs: Claude Code, Codex CLI,
//! Gemini CLI, Pi, Cursor, OpenCode and Antigravity sources, a source of the user's own
//! (`Source`), bad input, fair reading, privacy, and end to end over a WebSocket.

#[path = "../common/mod.rs"]
mod common;
#[path = "../monitor_support/mod.rs"]
mod monitor_support;

mod antigravity;
mod claude;
mod codex_threads;
mod cursor;
mod custom;
mod e2e;
mod fairness;
mod faults;
mod gemini_cwd;
mod opencode;
mod pi;
mod privacy;
mod sources;
mod waiting;
