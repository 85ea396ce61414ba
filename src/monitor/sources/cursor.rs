//! Cursor agent transcripts (the Cursor IDE's agent and the `cursor-agent` CLI):
//! `<root>/<encoded cwd>/agent-transcripts/` under the root `~/.cursor/projects`
//! (`$CURSOR_CONFIG_DIR/projects` when that is set), holding
//! - `<id>/<id>.jsonl` (the IDE and the CLI from 2026) or `<id>.jsonl` (earlier CLI): a
//!   session, id = the file stem;
//! - `<id>/subagents/<child>.jsonl`: a subagent of session `<id>` (same line shapes), never
//!   a session of its own;
//! - `<id>.txt`: the legacy plain-text transcript (IDE to about February 2026, CLI to about
//!   April 2026);
//! - the CLI started outside any folder writes `<root>/agent-transcripts/…` with no project
//!   level: the same files, with no working directory.
//!
//! Cursor is closed source: the shapes below come from a real transcript in a public
//! repository and from other readers and bug reports describing real files (cited in the
//! crate's research notes); the samples in `tests/data/monitor/cursor/` model each shape,
//! the month first seen in their names. No shape carries a version, a per-line time, a
//! model, token usage, a tool-call id or a tool's output.
//!
//! # Record shapes and what they mean
//! JSONL, one object a line, appended as the agent works (one line per assistant step):
//!
//! | line | seen | effect |
//! |------|------|--------|
//! | `{"role":"user","message":{"content":[{"type":"text","text":"<timestamp>…</timestamp>\n<user_query>…</user_query>"}]}}` | 2026.07–2026.09 (IDE 3.x, CLI) | a prompt: `working`; the `<timestamp>` (`Monday, Jan 5, 2026, 9:00 AM (UTC+0)`, minute precision) dates it |
//! | the same without `<timestamp>`, or `content` a bare string | 2026.03 | a prompt: `working` |
//! | a user text that begins with another tag and holds no `<user_query>` (`<context>`, `<dynamic_tools>`) | 2026.07 on | injected by the harness: nothing |
//! | `{"role":"assistant","message":{"content":[{"type":"text"}, {"type":"tool_use","name","input"}…]}}` | 2026.07 on | a step with tool calls: `working`, each `tool_use` counted, currentTool the last one's name |
//! | an assistant line with text only (also `thinking`, `redacted` blocks) | 2026.03 on | `working` in a file that states its turn ends, else a *tentative* end (below) |
//! | `{"type":"turn_ended","status":"success"\|"error"\|"aborted","error"?}` (no `role`; also accepted as a block of an assistant `content`) | 2026.07 on | the turn's end: `waiting` (`error`/`aborted`: cut short, still `waiting`) |
//! | any other line | — | skipped |
//!
//! Legacy text (`.txt`): blocks that begin with a line `user:` or `assistant:` (`A:` in the
//! CLI's), the prompt inside `<user_query>`…`</user_query>`; in an assistant block
//! `[Thinking] …`, `[Tool call] Name` followed by indented `key: value` argument lines up to
//! a blank line, and `[Tool result] Name` (no output) closing the oldest open call of that
//! name. Each block is a message; `[Tool call]` a tool call, `working` until its result;
//! other assistant text after the calls ended is a tentative end.
//!
//! # A turn's end without `turn_ended`
//! Files of the shapes before `turn_ended` (legacy text, 2026.03 JSONL) never say that a
//! turn ended. As for Claude Code's text replies, an assistant step with text and no tool
//! call (or no open one) is reported as a *tentative* `waiting`, which the monitor
//! publishes once the file has not grown for `MonitorBuilder::turn_end_delay` (default 3 s).
//! A file that has a `turn_ended` line, or whose prompts carry `<timestamp>` (the same
//! writers), states its ends: there a step without tool calls is still `working`, until
//! `turn_ended`.
//!
//! # What becomes of each field
//! - id: the file stem; workingDir: the project folder name decoded (see `project_dir`):
//!   the first absolute `working_directory`, `target_directory` or `path` of a tool input
//!   that lies in a directory encoding to the folder name, else the directory on disk the
//!   name stands for, else Go's `/`-for-every-`-` guess. Nothing else of a tool's input is
//!   read.
//! - startedAt: the first prompt's `<timestamp>`, else the file's creation time (its
//!   modification time where the file system does not keep one).
//! - lastActivityAt: the file's modification time, or a later `<timestamp>`.
//! - messageCount: prompts and assistant lines (one line per step, so more than one per
//!   reply; there is no message id to group them). toolCallCount: `tool_use` blocks (text:
//!   `[Tool call]` lines). currentTool: the last `tool_use` of the latest assistant line
//!   (no result is logged: the next step or `turn_ended` ends it); text: the newest call
//!   without its `[Tool result]`.
//! - model, tokens, context window, branch: not in the transcript (Cursor keeps the model
//!   only in its `store.db` / `state.vscdb` databases, which are not read): empty and 0.
//!
//! # What cannot be known
//! The model and token usage; whether a tool still runs or how long it ran; exact per-line
//! times; whether a legacy-text or 2026.03 session finished its turn (only the tentative
//! end); sessions Cursor keeps only in its databases (non-agent chats, stores without a
//! transcript); the working directory when the folder name is ambiguous, the directory is
//! gone and no tool named a path in it.
//!
//! # Subagents
//! A file under `<id>/subagents/` is a [`SubagentState`] of session `<id>`: `working` while
//! it runs, `terminal` once its own `turn_ended` is written (completedAt: its last
//! modification), `idle` after a tentative end. Nothing inside links it to the parent's
//! `Task` tool call.
//!
//! # Differences from Go (`sources/cursor`)
//! - Go makes every `subagents/<child>.jsonl` a top-level session; here they are subagents
//!   of their parent.
//! - Go ignores `turn_ended`, so a finished session stays `working` until it goes stale;
//!   here it is `waiting`.
//! - Go says `waiting` on a user line; here a prompt starts work.
//! - Go reads no legacy `.txt` transcripts and no workspace-less layout; both are read here.
//! - Go's workingDir replaces every `-` with `/` (wrong for `-`, `.`, `_`, spaces, Windows
//!   drives); here the name is resolved from the log's paths and the disk first.
//! - Go counts no tool calls, has no currentTool, and never sets lastActivityAt.

use std::time::SystemTime;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::lenient::{LooseStr, Obj};
use super::{Counts, LineResult, PendingTools, Report, project_dir};
use crate::wire::{Activity, SubagentState, Timestamp};

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type", default)]
    kind: LooseStr,
    #[serde(default)]
    role: LooseStr,
    #[serde(default)]
    message: Obj<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Content,
}

/// What a content text says, classified while it is parsed; the text is not kept.
#[derive(Debug, Default, Clone, Copy)]
struct TextTags {
    /// Holds a `<user_query>`: a prompt.
    query: bool,
    /// Begins (after white space) with a `<`: a tagged text.
    tagged: bool,
    /// The `<timestamp>…</timestamp>` it holds, if it parses.
    time: Option<Timestamp>,
}

impl TextTags {
    fn of(text: &str) -> TextTags {
        TextTags {
            query: text.contains("<user_query>"),
            tagged: text.trim_start().starts_with('<'),
            time: text
                .split_once("<timestamp>")
                .and_then(|(_, rest)| rest.split_once("</timestamp>"))
                .and_then(|(inner, _)| parse_tag_time(inner)),
        }
    }
}

impl<'de> Deserialize<'de> for TextTags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = LooseStr::deserialize(deserializer)?;
        Ok(s.as_deref().map(TextTags::of).unwrap_or_default())
    }
}

/// A content block: its type, a `tool_use`'s name, a text's tags, and of a tool's input
/// only the paths that may name the working directory.
#[derive(Deserialize, Default)]
struct Block {
    #[serde(rename = "type", default)]
    kind: LooseStr,
    #[serde(default)]
    name: LooseStr,
    #[serde(default)]
    text: TextTags,
    #[serde(default)]
    input: Obj<Input>,
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    working_directory: LooseStr,
    #[serde(default)]
    target_directory: LooseStr,
    #[serde(default)]
    path: LooseStr,
}

/// `message.content`: a bare string (one text) or an array of blocks (elements that are not
/// objects skipped); anything else is empty.
#[derive(Default)]
struct Content(Vec<Block>);

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content(vec![Block {
                    kind: LooseStr(Some("text".to_owned())),
                    text: TextTags::of(v),
                    ..Block::default()
                }]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut out = Vec::new();
                while let Some(Obj(block)) = seq.next_element::<Obj<Block>>()? {
                    out.extend(block);
                }
                Ok(Content(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(Content::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Content, D::Error> {
                d.deserialize_any(V)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `Monday, Jan 5, 2026, 9:00 AM (UTC+0)` (offsets `UTC+5`, `UTC-7`, `UTC+5:30`; month
/// names abbreviated or whole) as a time, or `None`.
fn parse_tag_time(s: &str) -> Option<Timestamp> {
    let (date_time, zone) = s.trim().split_once('(')?;
    let zone = zone.trim_end_matches(')').trim().strip_prefix("UTC")?;
    let mut parts = date_time.split(',').map(str::trim);
    let _weekday = parts.next()?;
    let (month, day) = parts.next()?.split_once(' ')?;
    let year: u32 = parts.next()?.parse().ok()?;
    let (clock, half) = parts.next()?.split_once(' ')?;
    let (hour, minute) = clock.split_once(':')?;
    let (mut hour, minute): (u32, u32) = (hour.parse().ok()?, minute.parse().ok()?);
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = month.get(..3)?.to_ascii_lowercase();
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let day: u32 = day.trim().parse().ok()?;
    match half.trim().to_ascii_uppercase().as_str() {
        "AM" if hour == 12 => hour = 0,
        "PM" if hour < 12 => hour += 12,
        "AM" | "PM" => {}
        _ => return None,
    }
    let offset = if zone.is_empty() {
        "+00:00".to_owned()
    } else {
        let (sign, rest) = zone.split_at(1);
        if sign != "+" && sign != "-" {
            return None;
        }
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        format!("{sign}{h:02}:{m:02}")
    };
    let local = Timestamp::parse(&format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:00{offset}"
    ))
    .ok()?;
    // In UTC, as the file times are.
    local.to_system_time().map(Timestamp::from)
}

/// Where a legacy text transcript's reader is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TextBlock {
    #[default]
    None,
    User,
    Assistant,
}

/// The parser of one Cursor transcript (JSONL or legacy text).
#[derive(Debug, Default)]
pub(crate) struct CursorLog {
    /// The project folder name (the encoded working directory), empty if none.
    project: String,
    /// A legacy `.txt` transcript.
    text: bool,
    /// The file states its turn ends (`turn_ended`, or `<timestamp>` prompts).
    stated_ends: bool,
    /// The latest turn ended with `turn_ended`.
    ended: bool,
    activity: Activity,
    tentative: bool,
    current_tool: String,
    messages: i64,
    tool_calls: i64,
    /// The working directory from a tool's path, once one matched the folder name.
    cwd: String,
    first_tag: Timestamp,
    last_tag: Timestamp,
    created: Timestamp,
    modified: Timestamp,
    // Legacy text.
    block: TextBlock,
    in_query: bool,
    in_args: bool,
    text_after_calls: bool,
    pending: PendingTools,
    call_seq: u64,
}

impl CursorLog {
    /// A parser for a JSONL transcript in project folder `project` (empty: none).
    pub(crate) fn jsonl(project: &str) -> Self {
        CursorLog {
            project: project.to_owned(),
            ..Self::default()
        }
    }

    /// A parser for a legacy text transcript in project folder `project`.
    pub(crate) fn text(project: &str) -> Self {
        CursorLog {
            project: project.to_owned(),
            text: true,
            ..Self::default()
        }
    }

    /// No line names the session: the file stem is its id.
    pub(crate) fn session_id(&self) -> &str {
        ""
    }

    /// The project folder name this transcript lies in (empty: none).
    pub(crate) fn project(&self) -> &str {
        &self.project
    }

    /// The file's times after a read: its creation (else modification) time dates the
    /// session's start when no prompt carries a `<timestamp>`, its modification time is
    /// the latest activity.
    pub(crate) fn file_times(&mut self, created: Option<SystemTime>, modified: Option<SystemTime>) {
        if let Some(m) = modified.map(Timestamp::from) {
            if m > self.modified {
                self.modified = m;
            }
        }
        if self.created.is_zero() {
            if let Some(c) = created
                .map(Timestamp::from)
                .or(modified.map(Timestamp::from))
            {
                self.created = c;
            }
        }
    }

    /// Feeds one line.
    pub(crate) fn line(&mut self, line: &[u8]) -> LineResult {
        if self.text {
            self.text_line(&String::from_utf8_lossy(line));
            return LineResult::Used;
        }
        let Ok(rec) = serde_json::from_slice::<Line>(line) else {
            return LineResult::Invalid;
        };
        match (rec.role.as_deref(), rec.kind.as_deref()) {
            (Some("user"), _) => {
                let blocks = rec.message.0.map(|m| m.content.0).unwrap_or_default();
                self.user(&blocks);
                LineResult::Used
            }
            (Some("assistant"), _) => {
                let blocks = rec.message.0.map(|m| m.content.0).unwrap_or_default();
                self.assistant(&blocks);
                LineResult::Used
            }
            (None, Some("turn_ended")) => {
                self.turn_ended();
                LineResult::Used
            }
            _ => LineResult::Unknown,
        }
    }

    fn user(&mut self, blocks: &[Block]) {
        let texts = || blocks.iter().filter(|b| b.kind.as_deref() == Some("text"));
        let query = texts().any(|b| b.text.query);
        let tagged = texts().next().is_some() && texts().all(|b| b.text.tagged);
        if let Some(at) = texts().find_map(|b| b.text.time) {
            self.stated_ends = true;
            if self.first_tag.is_zero() {
                self.first_tag = at;
            }
            self.last_tag = self.last_tag.max(at);
        }
        if !query && tagged {
            // Context the harness injected: no prompt.
            return;
        }
        self.messages += 1;
        self.activity = Activity::Working;
        self.tentative = false;
        self.ended = false;
        self.current_tool.clear();
    }

    fn assistant(&mut self, blocks: &[Block]) {
        self.messages += 1;
        self.ended = false;
        self.current_tool.clear();
        let mut calls = 0;
        let mut end = false;
        for b in blocks {
            match b.kind.as_deref() {
                Some("tool_use") => {
                    calls += 1;
                    let name = b
                        .name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or("tool");
                    name.clone_into(&mut self.current_tool);
                    self.learn_cwd(b);
                }
                Some("turn_ended") => end = true,
                _ => {}
            }
        }
        self.tool_calls += calls;
        self.activity = Activity::Working;
        self.tentative = false;
        if end {
            self.turn_ended();
        } else if calls == 0 && !self.stated_ends {
            self.activity = Activity::Waiting;
            self.tentative = true;
        }
    }

    /// A tool's path that lies in the project folder gives the working directory.
    fn learn_cwd(&mut self, b: &Block) {
        if !self.cwd.is_empty() || self.project.is_empty() {
            return;
        }
        let Some(input) = &b.input.0 else {
            return;
        };
        let found = [
            &input.working_directory,
            &input.target_directory,
            &input.path,
        ]
        .into_iter()
        .filter_map(LooseStr::as_deref)
        .find_map(|p| project_dir::from_path(&self.project, p));
        if let Some(cwd) = found {
            self.cwd = cwd;
        }
    }

    fn turn_ended(&mut self) {
        self.stated_ends = true;
        self.ended = true;
        self.activity = Activity::Waiting;
        self.tentative = false;
        self.current_tool.clear();
    }

    fn text_line(&mut self, line: &str) {
        let line = line.trim_end();
        if !self.in_query {
            match line {
                "user:" => {
                    self.block = TextBlock::User;
                    self.messages += 1;
                    self.pending.clear();
                    self.activity = Activity::Working;
                    self.tentative = false;
                    return;
                }
                "assistant:" | "A:" => {
                    self.block = TextBlock::Assistant;
                    self.messages += 1;
                    self.in_args = false;
                    self.text_after_calls = false;
                    self.text_activity();
                    return;
                }
                _ => {}
            }
        }
        match self.block {
            TextBlock::User => {
                if line.contains("<user_query>") {
                    self.in_query = true;
                }
                if line.contains("</user_query>") {
                    self.in_query = false;
                }
            }
            TextBlock::Assistant => {
                if let Some(name) = line.strip_prefix("[Tool call]") {
                    let name = name.trim();
                    let name = if name.is_empty() { "tool" } else { name };
                    self.call_seq += 1;
                    self.pending.start(&self.call_seq.to_string(), name);
                    self.tool_calls += 1;
                    self.in_args = true;
                    self.text_after_calls = false;
                } else if let Some(name) = line.strip_prefix("[Tool result]") {
                    self.pending.finish_oldest_named(name.trim());
                    self.in_args = false;
                } else if line.trim().is_empty() {
                    self.in_args = false;
                } else if !self.in_args && !line.starts_with("[Thinking]") {
                    self.text_after_calls = true;
                }
                self.text_activity();
            }
            TextBlock::None => {}
        }
    }

    /// A legacy assistant block's activity: `working` while a call has no result, a
    /// tentative end after text with no call open, else `working` (the next step comes).
    fn text_activity(&mut self) {
        self.pending.current().clone_into(&mut self.current_tool);
        let open = !self.current_tool.is_empty();
        self.tentative = !open && self.text_after_calls;
        self.activity = if self.tentative {
            Activity::Waiting
        } else {
            Activity::Working
        };
    }

    /// The session as this transcript has it, with `id` as its id. The working directory
    /// is empty unless a tool's path gave it: the scanner then decodes the folder name.
    pub(crate) fn report(&self, id: &str) -> Report {
        let started = if self.first_tag.is_zero() {
            self.created
        } else {
            self.first_tag
        };
        Report {
            session_id: id.to_owned(),
            working_dir: self.cwd.clone(),
            activity: self.activity.clone(),
            tentative: self.tentative,
            current_tool: self.current_tool.clone(),
            counts: Counts {
                messages: self.messages,
                tool_calls: self.tool_calls,
                compactions: 0,
            },
            started_at: started,
            last_activity_at: self.modified.max(self.last_tag),
            ..Report::default()
        }
    }

    /// This transcript as subagent `agent` of session `parent`.
    pub(crate) fn subagent_state(&self, agent: &str, parent: &str) -> SubagentState {
        let r = self.report(agent);
        let (activity, completed_at) = match (&r.activity, self.ended) {
            (_, true) => (Activity::Terminal, r.last_activity_at),
            (Activity::Waiting, false) => (Activity::Idle, Timestamp::ZERO),
            (a, false) => (a.clone(), Timestamp::ZERO),
        };
        SubagentState {
            id: agent.to_owned(),
            parent_id: parent.to_owned(),
            slug: String::new(),
            activity,
            current_tool: if self.ended {
                String::new()
            } else {
                r.current_tool
            },
            started_at: r.started_at,
            last_activity_at: r.last_activity_at,
            model: String::new(),
            context_tokens: 0,
            output_tokens: 0,
            message_count: r.counts.messages,
            tool_call_count: r.counts.tool_calls,
            completed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sample(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/monitor/cursor")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    fn parse(mut log: CursorLog, name: &str) -> CursorLog {
        for line in sample(name).lines() {
            assert_eq!(
                log.line(line.as_bytes()),
                LineResult::Used,
                "{name}: {line}"
            );
        }
        log
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn tag_times() {
        assert_eq!(
            parse_tag_time("Monday, Jan 5, 2026, 9:00 AM (UTC+0)"),
            Some(t("2026-01-05T09:00:00Z"))
        );
        assert_eq!(
            parse_tag_time("Friday, September 12, 2026, 12:05 AM (UTC-7)"),
            Some(t("2026-09-12T07:05:00Z"))
        );
        assert_eq!(
            parse_tag_time("Friday, Sep 12, 2026, 12:30 PM (UTC+5:30)"),
            Some(t("2026-09-12T07:00:00Z"))
        );
        assert_eq!(parse_tag_time("yesterday"), None);
        assert_eq!(parse_tag_time("Monday, Foo 5, 2026, 9:00 AM (UTC+0)"), None);
    }

    #[test]
    fn legacy_text_transcript() {
        let log = parse(
            CursorLog::text("home-user-proj-a"),
            "v2026.02-legacy-text.txt",
        );
        let r = log.report("x");
        // Two prompts, four assistant blocks; Shell, Read, Write.
        assert_eq!((r.counts.messages, r.counts.tool_calls), (6, 3));
        assert_eq!((r.activity.clone(), r.tentative), (Activity::Waiting, true));
        assert_eq!(r.current_tool, "");
        assert_eq!((r.model.as_str(), r.context_tokens), ("", 0));

        // Cut after the first `[Tool result] Shell`: Read still runs.
        let text = sample("v2026.02-legacy-text.txt");
        let cut = text.find("[Tool result] Read").unwrap();
        let mut log = CursorLog::text("");
        for line in text[..cut].lines() {
            log.line(line.as_bytes());
        }
        let r = log.report("x");
        assert_eq!(
            (r.activity, r.tentative, r.current_tool.as_str()),
            (Activity::Working, false, "Read")
        );
        // Cut inside the Write call's multi-line argument: still running, not a reply.
        let cut = text.find("line two").unwrap() + "line two".len();
        let mut log = CursorLog::text("");
        for line in text[..cut].lines() {
            log.line(line.as_bytes());
        }
        let r = log.report("x");
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Working, "Write")
        );
    }

    #[test]
    fn legacy_text_with_a_marker() {
        let log = parse(CursorLog::text(""), "v2026.04-legacy-text-a-marker.txt");
        let r = log.report("x");
        assert_eq!((r.counts.messages, r.counts.tool_calls), (3, 1));
        assert_eq!((r.activity, r.tentative), (Activity::Waiting, true));
    }

    #[test]
    fn a_user_query_holding_a_marker_line_is_no_block() {
        let mut log = CursorLog::text("");
        for l in [
            "user:",
            "<user_query>",
            "assistant:",
            "[Tool call] Shell",
            "</user_query>",
        ] {
            log.line(l.as_bytes());
        }
        let r = log.report("x");
        assert_eq!((r.counts.messages, r.counts.tool_calls), (1, 0));
        assert_eq!(r.activity, Activity::Working);
    }

    #[test]
    fn early_jsonl_without_turn_markers() {
        for (name, messages) in [
            ("v2026.03-jsonl-text-only.jsonl", 4),
            ("v2026.03-jsonl-string-content.jsonl", 2),
        ] {
            let log = parse(CursorLog::jsonl("home-user-proj-a"), name);
            let r = log.report("x");
            assert_eq!(
                (r.counts.messages, r.counts.tool_calls),
                (messages, 0),
                "{name}"
            );
            assert_eq!(
                (r.activity, r.tentative),
                (Activity::Waiting, true),
                "{name}"
            );
            assert_eq!(
                r.working_dir, "",
                "{name}: no tool path, the scanner decodes"
            );
        }
    }

    #[test]
    fn turn_ended_lines_end_turns() {
        let mut log = CursorLog::jsonl("home-user-proj-a");
        let lines: Vec<String> = sample("v2026.08-jsonl-turn-ended.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        for l in &lines[..3] {
            log.line(l.as_bytes());
        }
        let r = log.report("x");
        assert_eq!(
            (r.activity.clone(), r.tentative, r.current_tool.as_str()),
            (Activity::Working, false, "Shell")
        );
        assert_eq!(
            r.working_dir, "/home/user/proj-a",
            "from the Glob's target_directory"
        );
        assert_eq!(r.started_at, t("2026-01-05T09:00:00Z"));
        log.line(lines[3].as_bytes());
        let r = log.report("x");
        assert_eq!(
            (r.activity.clone(), r.current_tool.as_str()),
            (Activity::Working, "StrReplace"),
            "text after the call, in a file stating its ends: still working"
        );
        log.line(lines[4].as_bytes());
        let r = log.report("x");
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Waiting, "")
        );
        for l in &lines[5..] {
            assert_eq!(log.line(l.as_bytes()), LineResult::Used);
        }
        let r = log.report("x");
        assert_eq!((r.activity, r.tentative), (Activity::Waiting, false));
        assert_eq!((r.counts.messages, r.counts.tool_calls), (8, 5));
        assert_eq!(r.started_at, t("2026-01-05T09:00:00Z"));
        assert_eq!(r.last_activity_at, t("2026-01-05T09:07:00Z"));
    }

    #[test]
    fn subagent_child_and_parent() {
        let child = parse(CursorLog::jsonl(""), "v2026.09-jsonl-subagent-child.jsonl");
        let sub = child.subagent_state("child", "parent");
        assert_eq!(
            (sub.activity, sub.parent_id.as_str()),
            (Activity::Terminal, "parent")
        );
        assert_eq!((sub.message_count, sub.tool_call_count), (3, 1));
        assert_eq!(sub.completed_at, t("2026-01-05T09:00:00Z"));

        let mut child = CursorLog::jsonl("");
        let lines: Vec<String> = sample("v2026.09-jsonl-subagent-child.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        child.line(lines[0].as_bytes());
        child.line(lines[1].as_bytes());
        let sub = child.subagent_state("child", "parent");
        assert_eq!(
            (sub.activity, sub.current_tool.as_str()),
            (Activity::Working, "Shell")
        );

        let parent = parse(
            CursorLog::jsonl("home-user-proj-a"),
            "v2026.09-jsonl-subagent-parent.jsonl",
        );
        let r = parent.report("parent");
        assert_eq!((r.counts.messages, r.counts.tool_calls), (4, 2));
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!(r.working_dir, "/home/user/proj-a");
    }

    #[test]
    fn harness_lines_odd_shapes_and_file_times() {
        let mut log = CursorLog::jsonl("");
        for l in [
            r#"{"role":"user","message":{"content":[{"type":"text","text":"<context>\nopen files\n</context>"}]}}"#,
            r#"{"role":"assistant","message":{"content":[7,{"type":"tool_use","name":"ApplyPatch","input":"*** Begin Patch"},{"type":"turn_ended","status":"success"}]}}"#,
            r#"{"role":"assistant","message":"odd"}"#,
            r#"{"type":"turn_ended"}"#,
        ] {
            assert_eq!(log.line(l.as_bytes()), LineResult::Used, "{l}");
        }
        assert_eq!(log.line(br#"{"role":"system"}"#), LineResult::Unknown);
        assert_eq!(log.line(b"not json"), LineResult::Invalid);
        let r = log.report("x");
        assert_eq!(
            (r.counts.messages, r.counts.tool_calls),
            (2, 1),
            "the context line is no prompt"
        );
        assert_eq!(r.activity, Activity::Waiting);
        assert!(r.started_at.is_zero());
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_600_000);
        log.file_times(None, Some(at));
        let r = log.report("x");
        assert_eq!(
            (r.started_at, r.last_activity_at),
            (Timestamp::from(at), Timestamp::from(at))
        );
    }
}
