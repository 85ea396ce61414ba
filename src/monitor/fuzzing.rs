//! The log sources' line parsers, driven in-process for the fuzz targets in `fuzz/`.
//!
//! Compiled only under `--cfg fuzzing` (which `cargo fuzz` passes); re-exported, hidden, as
//! `agentwatch_ws::fuzzing`. Each function feeds lines to a fresh parser the way the
//! monitor's scanner does (report after every line, merge into a fresh lifecycle, drain its
//! events) and returns every event the lines produced: what a dashboard would receive.

use std::time::{Duration, Instant};

use super::lifecycle::{Lifecycle, Timing};
use super::sources::claude::ClaudeLog;
use super::sources::codex::CodexLog;
use super::sources::gemini::GeminiChat;
use super::sources::{Counts, LineResult, Report, SourceKind};
use crate::wire::Event;

/// The session id used when the lines name none (the scanner uses the file stem).
const STEM: &str = "fuzz-session";
/// The subagent id of the Claude subagent-file parser (the scanner takes the file stem).
const AGENT: &str = "fuzz-agent";

fn lifecycle() -> Lifecycle {
    Lifecycle::new(
        Timing {
            stale_after: Duration::from_secs(300),
            retention: Duration::from_secs(30),
            idle_after: Duration::from_secs(120),
            turn_end_delay: crate::monitor::DEFAULT_TURN_END_DELAY,
        },
        1,
    )
}

/// One file's session as the scanner tracks it: the id fixed at the first report, and the
/// counts last merged.
struct File {
    id: Option<String>,
    reported: Counts,
}

impl File {
    fn new() -> Self {
        File {
            id: None,
            reported: Counts::default(),
        }
    }

    fn id(&mut self, named: &str) -> String {
        self.id
            .get_or_insert_with(|| {
                if named.is_empty() {
                    STEM.to_owned()
                } else {
                    named.to_owned()
                }
            })
            .clone()
    }

    fn apply(&mut self, lc: &mut Lifecycle, source: SourceKind, report: &Report) {
        let delta = report.counts.since(self.reported);
        self.reported = report.counts;
        lc.apply(source.name(), report, delta, Instant::now());
    }
}

/// Feeds `lines` to a fresh Claude Code session parser and, in parallel, to a fresh
/// subagent-file parser whose subagent belongs to that session; returns every event.
pub fn claude_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<Event> {
    let mut lc = lifecycle();
    let mut events = Vec::new();
    let mut session = ClaudeLog::session();
    let mut subagent = ClaudeLog::subagent();
    let mut file = File::new();
    for line in lines {
        let a = session.line(line);
        let b = subagent.line(line);
        if a != LineResult::Invalid {
            let id = file.id(session.session_id());
            let report = session.report(&id);
            file.apply(&mut lc, SourceKind::Claude, &report);
        }
        if b != LineResult::Invalid {
            let parent = file.id(session.session_id());
            lc.apply_subagent(
                &parent,
                subagent.subagent_state(AGENT, &parent),
                Instant::now(),
            );
        }
        events.extend(lc.drain(Vec::new()));
    }
    events
}

/// Whether the Claude parser's fast line reader agrees with `serde_json` on `line`: it
/// gives no record (the parser then uses `serde_json`), or exactly `serde_json`'s record.
pub fn claude_fast_matches_serde(line: &[u8]) -> bool {
    ClaudeLog::fast_matches_serde(line)
}

/// Feeds `lines` to a fresh Codex CLI rollout parser; returns every event.
pub fn codex_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<Event> {
    let mut lc = lifecycle();
    let mut events = Vec::new();
    let mut log = CodexLog::new();
    let mut file = File::new();
    for line in lines {
        if log.line(line) != LineResult::Invalid {
            let id = file.id(log.session_id());
            let report = log.report(&id);
            file.apply(&mut lc, SourceKind::Codex, &report);
        }
        events.extend(lc.drain(Vec::new()));
    }
    events
}

/// Feeds `lines` to a fresh Gemini CLI `.jsonl` chat parser; returns every event.
pub fn gemini_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<Event> {
    let mut lc = lifecycle();
    let mut events = Vec::new();
    let mut chat = GeminiChat::new();
    let mut file = File::new();
    for line in lines {
        if chat.line(line) != LineResult::Invalid {
            let id = file.id(chat.session_id());
            let report = chat.report(&id);
            file.apply(&mut lc, SourceKind::Gemini, &report);
        }
        events.extend(lc.drain(Vec::new()));
    }
    events
}

/// Reads `bytes` as a whole Gemini CLI `.json` chat (the form rewritten on each save);
/// returns every event, none if it is not a chat.
pub fn gemini_whole(bytes: &[u8]) -> Vec<Event> {
    let mut lc = lifecycle();
    let mut chat = GeminiChat::new();
    if chat.read_whole(bytes).is_err() {
        return Vec::new();
    }
    let mut file = File::new();
    let id = file.id(chat.session_id());
    let report = chat.report(&id);
    file.apply(&mut lc, SourceKind::Gemini, &report);
    lc.drain(Vec::new())
}
