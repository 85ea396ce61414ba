//! Pi coding agent sessions: `<root>/--<encoded cwd>--/<time>_<session id>.jsonl`, the
//! root being `$PI_CODING_AGENT_SESSION_DIR`, else `$PI_CODING_AGENT_DIR/sessions`
//! (`PI_CODING_AGENT_DIR` defaults to `~/.pi/agent`).
//!
//! One JSON object a line. Pi writes nothing until the session's first assistant message
//! is complete; then the header and every entry so far at once, then one line per
//! completed entry (no streaming partials). Every line is `\n`-terminated; a crash can
//! leave a partial last line, which waits for its newline. Pi rewrites a file whole when it
//! migrates an old format on open (a shrink is read again from the start by the shared
//! reader; a migration that grows the file is recognised here, see [`PiLog::rewritten`]).
//!
//! What becomes of each field:
//!
//! - id: the header's `id` (the file name after the last `_` is the same id); startedAt:
//!   the header's `timestamp`; workingDir: the header's `cwd` (the directory name is a lossy
//!   encoding and is never decoded).
//! - model: the latest of an assistant `message.model`, a `model_change` `modelId` (`model`
//!   `"provider/id"` in 0.6 and earlier: the part after the `/`), and a 0.9–0.25 header's
//!   `modelId` (0.6: `model`). maxContextTokens from the model table, and for the
//!   `anthropic` provider widened to the window the log shows, as for Claude Code.
//! - contextTokens: `input + cacheRead + cacheWrite` of the latest assistant whose
//!   `stopReason` is not `aborted` or `error` (those carry zero or partial usage; pi's own
//!   figure skips them too); kept through a `compaction` until the next assistant (pi does
//!   not log the size after a compaction).
//! - outputTokens: the sum of `output` over every assistant message (tokens generated).
//! - messageCount: `user` and `assistant` messages. toolCallCount: `toolCall` blocks of
//!   assistant messages (parallel calls are several blocks), except those of an aborted or
//!   failed message, which never run. compactionCount: `compaction` entries.
//! - currentTool: the newest `toolCall` whose `toolResult` (by `toolCallId`) has not
//!   arrived; cleared when the turn ends.
//! - lastActivityAt: the latest entry `timestamp` (the time the entry was written), except
//!   that it stays at the start of a wait while the session keeps waiting (a `model_change`
//!   or the person's `!` command while idle does not move it), and it never runs backwards.
//!
//! # Record shapes and what they mean
//! From the writer's sources (badlogic/pi-mono `packages/coding-agent`, tags v0.6.0 to
//! v0.58.3, and earendil-works/pi after it) and real sessions in public repositories; the
//! samples in `tests/data/monitor/pi/` model each shape, the first version writing it in
//! their names. Header `version`: absent in 0.30 and earlier (linear entries with no `id`),
//! 2 in 0.31–0.34 (a tree: `id`, `parentId`), 3 from 0.35 (session ids UUIDv7 after
//! 0.58.3). A version above 3 is read the same way (unknown keys are skipped).
//!
//! | line | versions | effect |
//! |------|----------|--------|
//! | `session` (line 1: `id`, `timestamp`, `cwd`, `version?`, `parentSession?`/`branchedFrom?`; 0.9–0.25 also `provider`, `modelId`, `thinkingLevel`; 0.6 and earlier `model: "provider/id"`, `systemPrompt`) | all | the session; a file whose first line is not one is no session |
//! | `message` role `user` (`content` a string or `text`/`image` blocks) | all | a turn starts (or the person steers a running one): `working` |
//! | `message` role `assistant` with `toolCall` blocks, `stopReason` `toolUse` | all | tools run: `working`, each call counted |
//! | `message` role `assistant` without `toolCall` blocks (`stopReason` `stop`, `length`) | all | the turn's end: `waiting` |
//! | `message` role `assistant`, `stopReason` `aborted` (Escape) or `error` (`errorMessage`) | all | the turn's end: `waiting`, even with `toolCall` blocks (they never run); a retry after an error appends another assistant message |
//! | `message` role `toolResult` (`toolCallId`, `toolName`, `isError`) | all | the call finished; the next model call runs: `working` |
//! | `message` role `bashExecution` (`command`, `exitCode`) | 0.9 on | the person's own `!` shell command: nothing (no agent tool, no turn) |
//! | `message` role `hookMessage` (0.31–0.34), `custom` (0.35 on), `branchSummary`, `compactionSummary` | — | injected context: nothing |
//! | `model_change` (`provider`, `modelId`; 0.6: `model`) | all (the initial one from 0.31) | the model |
//! | `compaction` (`summary`, `firstKeptEntryId`, 0.30 and earlier `firstKeptEntryIndex`, `tokensBefore`) | all | compactionCount + 1 |
//! | `thinking_level_change`, `branch_summary`, `custom`, `custom_message`, `label`, `session_info`, `event` (0.6) | various | nothing |
//! | any other `type` (extensions) | — | skipped |
//!
//! Branching (`/tree`) leaves the abandoned branch's entries in the file; they stay
//! counted. There are no subagents: pi has none built in, and the files a subagent
//! extension writes (`<project dir>/subagent-artifacts/*.jsonl`) are not sessions and are
//! not read.
//!
//! # What cannot be known
//! A new session before its first assistant message is complete (no file yet: it appears
//! already mid-turn); progress inside one model call or tool run; whether the process
//! still runs (no end record: only idle and stale); whether an `error` will be retried
//! until the retry's line appears; the git branch; the context window (the model table).
//!
//! # Differences from Go (`sources/pi`)
//! - Go reads `workingDir` from the header, which pi never writes: here `cwd`.
//! - Go sets the session id only when the header is in the batch it reads, so every later
//!   batch (an empty id) is dropped; here the id is kept for the file's life.
//! - Go says `waiting` on a user message and `working` on every assistant message whatever
//!   its `stopReason`; here a user message starts work and a message without tool calls,
//!   or one aborted or failed, ends the turn.
//! - Go counts the person's `bashExecution` as a `Bash` tool call with the agent working;
//!   here it changes nothing.
//! - Go takes the tokens of the latest assistant even when aborted (zeroing the figure);
//!   here such messages are skipped for the context, and outputTokens is a session total.
//! - Go's currentTool is the tool that last *finished* and is never cleared; here it is the
//!   tool still running.
//! - Go walks every `*.jsonl` at any depth (so `subagent-artifacts/` files become
//!   sessions) and dates a session by the file's mtime; here only files directly in a
//!   project directory whose first line is a header, dated by the header.
//! - Go ignores the 0.6–0.25 header model and `model_change.model`.

use serde::Deserialize;

use super::lenient::{LooseI64, LooseStr, Obj, Objects, Present};
use super::{Counts, LineResult, PendingTools, Report, parse_time, set_if_some};
use crate::monitor::models::{claude_window, context_window};
use crate::wire::{Activity, Timestamp};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(rename = "type", default)]
    kind: LooseStr,
    #[serde(default)]
    id: LooseStr,
    #[serde(default)]
    timestamp: LooseStr,
    /// Header: the working directory.
    #[serde(default)]
    cwd: LooseStr,
    /// Header: the format version (absent: 1).
    #[serde(default)]
    version: LooseI64,
    /// Header (0.9–0.25) and `model_change`: the model id.
    #[serde(default)]
    model_id: LooseStr,
    /// Header (0.6 and earlier) and `model_change` (0.6): `"provider/id"`.
    #[serde(default)]
    model: LooseStr,
    #[serde(default)]
    provider: LooseStr,
    /// Tree entries (format 2 and later) have it, `null` for the first.
    #[serde(default)]
    parent_id: Present,
    #[serde(default)]
    message: Obj<Message>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    role: LooseStr,
    #[serde(default)]
    content: Objects<Block>,
    #[serde(default)]
    model: LooseStr,
    #[serde(default)]
    provider: LooseStr,
    #[serde(default)]
    usage: Obj<Usage>,
    #[serde(default)]
    stop_reason: LooseStr,
    #[serde(default)]
    tool_call_id: LooseStr,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type", default)]
    kind: LooseStr,
    #[serde(default)]
    id: LooseStr,
    #[serde(default)]
    name: LooseStr,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    input: LooseI64,
    #[serde(default)]
    output: LooseI64,
    #[serde(default)]
    cache_read: LooseI64,
    #[serde(default)]
    cache_write: LooseI64,
}

/// The parser of one pi session file.
#[derive(Debug, Default)]
pub(crate) struct PiLog {
    /// Lines read (valid or not).
    lines: u64,
    /// The first line was a session header.
    header: bool,
    /// The header's format version (1 when absent).
    version: i64,
    /// The file was rewritten in place since it was first read: read it again from the
    /// start.
    rewritten: bool,
    session_id: String,
    cwd: String,
    model: String,
    provider: String,
    activity: Activity,
    pending: PendingTools,
    context_tokens: i64,
    largest_context: i64,
    output_tokens: i64,
    messages: i64,
    tool_calls: i64,
    compactions: i64,
    started_at: Timestamp,
    last_at: Timestamp,
}

impl PiLog {
    /// A parser at the start of a file.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The header's session id, once read.
    pub(crate) fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Whether the file is a pi session: its first line is a `session` header with an
    /// `id` (pi's own test). Other files (an extension's artifacts) report nothing.
    pub(crate) fn is_session(&self) -> bool {
        self.header
    }

    /// Whether the file was rewritten in place under the reader: a second `session` header,
    /// or tree entries (`parentId`) in a file whose header is of the linear format (pi
    /// migrates such a file to format 3 on open, rewriting it whole and larger). What was
    /// derived from it is void; it must be read again from the start.
    pub(crate) fn rewritten(&self) -> bool {
        self.rewritten
    }

    /// Feeds one line.
    pub(crate) fn line(&mut self, line: &[u8]) -> LineResult {
        self.lines += 1;
        let first = self.lines == 1;
        let Ok(e) = serde_json::from_slice::<Entry>(line) else {
            return LineResult::Invalid;
        };
        if first {
            return self.header(&e);
        }
        if !self.header || self.rewritten {
            return LineResult::Unknown;
        }
        let at = parse_time(e.timestamp.as_deref());
        let was_waiting = self.activity == Activity::Waiting;
        let result = self.entry(&e);
        if let Some(at) = at {
            let still_waiting = was_waiting && self.activity == Activity::Waiting;
            if !still_waiting && at > self.last_at {
                self.last_at = at;
            }
        }
        result
    }

    fn header(&mut self, e: &Entry) -> LineResult {
        let id = e.id.as_deref().filter(|id| !id.is_empty());
        let (Some("session"), Some(id)) = (e.kind.as_deref(), id) else {
            return LineResult::Unknown;
        };
        self.header = true;
        id.clone_into(&mut self.session_id);
        self.version = e.version.0.max(1);
        set_if_some(&mut self.cwd, e.cwd.as_deref());
        if let Some(at) = parse_time(e.timestamp.as_deref()) {
            self.started_at = at;
            self.last_at = at;
        }
        // 0.9–0.25: `provider` + `modelId`; 0.6 and earlier: `model: "provider/id"`.
        set_if_some(&mut self.provider, e.provider.as_deref());
        self.set_model(e.model_id.as_deref(), e.model.as_deref());
        LineResult::Used
    }

    /// The model from a `modelId`, else from a qualified `"provider/id"`.
    fn set_model(&mut self, id: Option<&str>, qualified: Option<&str>) {
        if id.is_some_and(|m| !m.is_empty()) {
            set_if_some(&mut self.model, id);
        } else if let Some(q) = qualified {
            let (provider, id) = q.split_once('/').unwrap_or(("", q));
            set_if_some(&mut self.provider, Some(provider));
            set_if_some(&mut self.model, Some(id));
        }
    }

    fn entry(&mut self, e: &Entry) -> LineResult {
        match e.kind.as_deref() {
            Some("session") => {
                // One header a file, on line 1: the file was rewritten under the reader.
                self.rewritten = true;
                LineResult::Used
            }
            Some(_) if self.version < 2 && e.parent_id.0 => {
                // A tree entry in a linear-format file: migrated in place.
                self.rewritten = true;
                LineResult::Used
            }
            Some("message") => match &e.message.0 {
                Some(m) => self.message(m),
                None => LineResult::Unknown,
            },
            Some("model_change") => {
                set_if_some(&mut self.provider, e.provider.as_deref());
                self.set_model(e.model_id.as_deref(), e.model.as_deref());
                LineResult::Used
            }
            Some("compaction") => {
                self.compactions += 1;
                LineResult::Used
            }
            Some(
                "thinking_level_change"
                | "branch_summary"
                | "custom"
                | "custom_message"
                | "label"
                | "session_info"
                | "event",
            ) => LineResult::Used,
            _ => LineResult::Unknown,
        }
    }

    fn message(&mut self, m: &Message) -> LineResult {
        match m.role.as_deref() {
            Some("user") => {
                self.messages += 1;
                self.activity = Activity::Working;
            }
            Some("assistant") => self.assistant(m),
            Some("toolResult") => {
                if let Some(id) = m.tool_call_id.as_deref() {
                    self.pending.finish(id);
                }
                self.activity = Activity::Working;
            }
            // The person's own shell command, and injected context: no turn, no tool.
            Some(
                "bashExecution" | "custom" | "hookMessage" | "branchSummary" | "compactionSummary",
            ) => {}
            _ => return LineResult::Unknown,
        }
        LineResult::Used
    }

    fn assistant(&mut self, m: &Message) {
        self.messages += 1;
        set_if_some(&mut self.provider, m.provider.as_deref());
        set_if_some(&mut self.model, m.model.as_deref());
        let failed = matches!(m.stop_reason.as_deref(), Some("aborted" | "error"));
        if let Some(u) = &m.usage.0 {
            self.output_tokens = self.output_tokens.saturating_add(u.output.0.max(0));
            if !failed {
                self.context_tokens = u
                    .input
                    .0
                    .saturating_add(u.cache_read.0)
                    .saturating_add(u.cache_write.0);
                self.largest_context = self.largest_context.max(self.context_tokens);
            }
        }
        let mut calls = 0;
        for b in m
            .content
            .0
            .iter()
            .filter(|b| b.kind.as_deref() == Some("toolCall"))
        {
            calls += 1;
            if !failed {
                let name = b
                    .name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("tool");
                self.pending
                    .start(b.id.as_deref().unwrap_or_default(), name);
                self.tool_calls += 1;
            }
        }
        if failed || calls == 0 {
            // Aborted or failed (its calls never run), or a reply without tool calls: the
            // agent loop stops and waits for the person.
            self.pending.clear();
            self.activity = Activity::Waiting;
        } else {
            self.activity = Activity::Working;
        }
    }

    /// The session as this file has it, with `id` as its id.
    pub(crate) fn report(&self, id: &str) -> Report {
        let max = if self.provider == "anthropic" {
            claude_window(&self.model, self.largest_context)
        } else {
            context_window(&self.model).unwrap_or(0)
        };
        Report {
            session_id: id.to_owned(),
            model: self.model.clone(),
            working_dir: self.cwd.clone(),
            activity: self.activity.clone(),
            current_tool: self.pending.current().to_owned(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens,
            max_context_tokens: max,
            counts: Counts {
                messages: self.messages,
                tool_calls: self.tool_calls,
                compactions: self.compactions,
            },
            started_at: self.started_at,
            last_activity_at: self.last_at,
            ..Report::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sample(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/monitor/pi")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    /// Every line of the sample, each asserted not to be invalid.
    fn parse(name: &str) -> PiLog {
        let mut log = PiLog::new();
        for line in sample(name).lines() {
            assert_ne!(
                log.line(line.as_bytes()),
                LineResult::Invalid,
                "{name}: {line}"
            );
        }
        assert!(log.is_session(), "{name}");
        assert!(!log.rewritten(), "{name}");
        log
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn v0_6_linear_with_model_string() {
        let log = parse("v0.6-linear-model-string.jsonl");
        let r = log.report(log.session_id());
        assert_eq!(r.session_id, "0c1d2e3f-0000-4000-8000-000000000001");
        assert_eq!(r.working_dir, "/home/user/proj-a");
        // The header's `anthropic/model-a`, then the reply's, then `model_change.model`.
        assert_eq!(r.model, "model-b");
        assert_eq!((r.context_tokens, r.output_tokens), (120, 30));
        assert_eq!((r.counts.messages, r.counts.tool_calls), (2, 0));
        // The turn ended at the reply; the model switch while idle does not move the time.
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!(r.started_at, t("2026-01-05T09:00:00.000Z"));
        assert_eq!(r.last_activity_at, t("2026-01-05T09:00:09.000Z"));
    }

    #[test]
    fn v0_9_linear_with_header_model_and_a_bash_execution() {
        let mut log = PiLog::new();
        let lines: Vec<String> = sample("v0.9-linear-header-model.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        log.line(lines[0].as_bytes());
        assert_eq!(log.report("x").model, "model-a", "the 0.9 header's modelId");
        for l in &lines[1..3] {
            log.line(l.as_bytes());
        }
        let r = log.report("x");
        assert_eq!(
            (r.activity.clone(), r.current_tool.as_str()),
            (Activity::Working, "read")
        );
        for l in &lines[3..] {
            assert_eq!(log.line(l.as_bytes()), LineResult::Used, "{l}");
        }
        let r = log.report("x");
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Waiting, ""),
            "the person's `ls` is no agent work"
        );
        assert_eq!(
            (r.counts.messages, r.counts.tool_calls, r.counts.compactions),
            (3, 1, 1)
        );
        assert_eq!(r.context_tokens, 8 + 1200 + 60);
        assert_eq!(r.output_tokens, 40 + 20);
        assert_eq!(r.model, "model-b");
        assert_eq!(r.last_activity_at, t("2026-01-05T10:00:12.000Z"));
    }

    #[test]
    fn v0_26_plain_header_string_prompt() {
        let log = parse("v0.26-linear-plain-header.jsonl");
        let r = log.report("x");
        assert_eq!(
            (r.model.as_str(), r.working_dir.as_str()),
            ("model-a", "/home/user/proj-b")
        );
        assert_eq!((r.context_tokens, r.counts.messages), (380, 2));
        assert_eq!(r.activity, Activity::Waiting);
    }

    #[test]
    fn v0_31_tree_v2_with_hook_message() {
        let log = parse("v0.31-tree-v2.jsonl");
        let r = log.report("x");
        assert_eq!(r.counts.messages, 2, "the hook message is no turn");
        assert_eq!((r.context_tokens, r.model.as_str()), (450, "model-a"));
        assert_eq!(r.activity, Activity::Waiting);
    }

    #[test]
    fn v0_58_tools_parallel_calls_and_steering() {
        let mut log = PiLog::new();
        let lines: Vec<String> = sample("v0.58-tree-v3-tools.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        for l in &lines[..5] {
            log.line(l.as_bytes());
        }
        let r = log.report("x");
        assert_eq!(
            (r.activity.clone(), r.current_tool.as_str()),
            (Activity::Working, "read")
        );
        assert_eq!(r.counts.tool_calls, 2);
        log.line(lines[5].as_bytes());
        assert_eq!(
            log.report("x").current_tool,
            "read",
            "bash done, read still runs"
        );
        log.line(lines[6].as_bytes());
        let r = log.report("x");
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Working, "")
        );
        for l in &lines[7..] {
            log.line(l.as_bytes());
        }
        let r = log.report("x");
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!((r.counts.messages, r.counts.tool_calls), (7, 3));
        assert_eq!(r.model, "model-b");
        assert_eq!(r.context_tokens, 120 + 2500);
        assert_eq!(r.output_tokens, 80 + 25 + 40 + 15);
        assert_eq!(r.max_context_tokens, 0, "an unknown model has no window");
    }

    #[test]
    fn v0_58_abort_error_retry_and_compaction() {
        let mut log = PiLog::new();
        let lines: Vec<String> = sample("v0.58-tree-v3-abort-error-compaction.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        for l in &lines[..4] {
            log.line(l.as_bytes());
        }
        let r = log.report("x");
        assert_eq!(
            (r.activity.clone(), r.current_tool.as_str()),
            (Activity::Waiting, ""),
            "aborted with a tool call: the call never runs"
        );
        assert_eq!(
            (r.counts.tool_calls, r.context_tokens),
            (0, 0),
            "its call is not counted, its zero usage not taken"
        );
        log.line(lines[4].as_bytes());
        log.line(lines[5].as_bytes());
        assert_eq!(
            log.report("x").activity,
            Activity::Waiting,
            "error ends the turn"
        );
        log.line(lines[6].as_bytes());
        let r = log.report("x");
        assert_eq!(r.context_tokens, 3 + 5000 + 90);
        for l in &lines[7..] {
            assert_ne!(log.line(l.as_bytes()), LineResult::Invalid);
        }
        let r = log.report("x");
        assert_eq!(r.counts.compactions, 1);
        assert_eq!(r.counts.messages, 7);
        assert_eq!(r.context_tokens, 40 + 900 + 20);
        assert_eq!(
            r.activity,
            Activity::Waiting,
            "`length` without calls ends the turn"
        );
        assert_eq!(r.last_activity_at, t("2026-01-05T14:03:15.000Z"));
    }

    #[test]
    fn uuidv7_and_windows_cwd() {
        let log = parse("v0.59plus-tree-v3-uuidv7-windows.jsonl");
        let r = log.report(log.session_id());
        assert_eq!(r.session_id, "019b8f00-0000-7000-8000-000000000007");
        assert_eq!(r.working_dir, r"C:\Users\user\proj-d");
        assert_eq!(r.context_tokens, 2524);
    }

    #[test]
    fn a_file_without_a_header_is_no_session() {
        let mut log = PiLog::new();
        log.line(br#"{"type":"message","message":{"role":"user","content":"x"}}"#);
        log.line(br#"{"type":"session","id":"late"}"#);
        assert!(!log.is_session());
        assert_eq!(log.session_id(), "");
        let mut log = PiLog::new();
        assert_eq!(log.line(b"{not json"), LineResult::Invalid);
        assert!(!log.is_session());
    }

    #[test]
    fn an_in_place_migration_is_recognised() {
        // A linear file read up to some offset, then rewritten with ids (format 3): the
        // reader goes on in the middle of the new content.
        let mut log = PiLog::new();
        let lines: Vec<String> = sample("v0.9-linear-header-model.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        log.line(lines[0].as_bytes());
        log.line(lines[1].as_bytes());
        assert!(!log.rewritten());
        log.line(br#"{"type":"message","id":"a1","parentId":"a0","timestamp":"2026-01-05T10:00:08.000Z","message":{"role":"assistant","content":[]}}"#);
        assert!(log.rewritten());
        // A second header also means a rewrite.
        let mut log = parse("v0.58-tree-v3-tools.jsonl");
        log.line(
            sample("v0.58-tree-v3-tools.jsonl")
                .lines()
                .next()
                .unwrap()
                .as_bytes(),
        );
        assert!(log.rewritten());
    }

    #[test]
    fn odd_field_types_do_not_lose_the_line() {
        let mut log = PiLog::new();
        log.line(br#"{"type":"session","version":3,"id":"s","cwd":7,"timestamp":"2026-01-05T10:00:00Z"}"#);
        let line = br#"{"type":"message","id":"b","parentId":null,"timestamp":"2026-01-05T10:00:01Z","message":{"role":"assistant","content":["x",{"type":"toolCall","id":1,"name":"bash"}],"usage":{"input":"9","output":9223372036854775807,"cacheRead":9223372036854775807},"stopReason":"toolUse"}}"#;
        assert_eq!(log.line(line), LineResult::Used);
        log.line(line);
        let r = log.report("s");
        assert_eq!(r.working_dir, "");
        assert_eq!((r.current_tool.as_str(), r.counts.tool_calls), ("bash", 2));
        assert_eq!((r.context_tokens, r.output_tokens), (i64::MAX, i64::MAX));
    }
}
