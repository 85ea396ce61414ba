//! Claude Code transcripts: `<root>/<encoded cwd>/<session uuid>.jsonl`, and subagent
//! transcripts under `<session uuid>/subagents/`.
//!
//! One JSON object a line. What becomes of each field:
//!
//! - id: the first `sessionId` in the file, else the file stem (the monitor fixes it when
//!   the session is first reported; a second file naming a session already given to another
//!   file, as a resumed session's copy of earlier lines may, is named by its stem instead);
//!   `cwd` → workingDir, `gitBranch` → branch, `slug`.
//! - model: the latest assistant `message.model`, ignoring `<synthetic>` (local lines).
//! - contextTokens: `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`
//!   of the latest assistant usage; maxContextTokens from the model table (`models.rs`).
//! - outputTokens: the sum of `output_tokens` over distinct `message.id`s, the last line of
//!   each id winning (Claude Code writes one line per content block, repeating the usage).
//! - messageCount: distinct messages: user lines by `uuid`, assistant lines by `message.id`;
//!   `content` may be a string (a typed prompt) or an array of blocks.
//! - toolCallCount: distinct `tool_use` ids; currentTool: the newest `tool_use` whose
//!   `tool_result` has not arrived (cleared when it does, or when the turn ends).
//! - activity: `working` after a user prompt, a `tool_use` or a `tool_result`; `waiting`
//!   after an assistant `stop_reason` of `end_turn` (or `stop_sequence`). The monitor turns a
//!   `working` session with no record for a while into `idle` (see
//!   [`DEFAULT_IDLE_AFTER`](crate::monitor::DEFAULT_IDLE_AFTER)).
//! - compactionCount: `system` lines with `subtype` `compact_boundary`.
//! - Subagents: lines with `isSidechain: true` in a session's own file, whole files under
//!   `<session uuid>/subagents/`, and (older versions) `agent-<id>.jsonl` files beside the
//!   session logs (their parent named by their lines' `sessionId`) are [`SubagentState`]s of
//!   the parent session, never sessions of their own.
//!
//! # Bounded memory
//! Deduplication remembers only the last [`RECENT_IDS`](super::RECENT_IDS) message, user
//! line and tool ids of a file, not all of them: Claude Code writes the lines of one message
//! one after another, so repeats are always recent. A 1 GiB transcript costs a few KiB.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

use super::{LineResult, PendingTools, Recent, Report, parse_time, set_if_some};
use crate::monitor::models::context_window;
use crate::wire::{Activity, SubagentState, Timestamp};

/// The sidechain id used for `isSidechain` lines that carry no `agentId`.
const SIDECHAIN: &str = "sidechain";
/// At most this many sidechain subagents are tracked per file.
const MAX_SIDECHAINS: usize = 16;

/// Text fields borrow from the line when they hold no escapes (most do): no allocation per
/// record for them.
type Text<'a> = Option<Str<'a>>;

/// A string borrowed from the input when possible (serde's own `Cow` impl always copies).
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    subtype: Text<'a>,
    #[serde(borrow)]
    uuid: Text<'a>,
    #[serde(borrow)]
    session_id: Text<'a>,
    #[serde(borrow)]
    timestamp: Text<'a>,
    #[serde(borrow)]
    cwd: Text<'a>,
    #[serde(borrow)]
    git_branch: Text<'a>,
    #[serde(borrow)]
    slug: Text<'a>,
    is_sidechain: Option<bool>,
    #[serde(borrow)]
    agent_id: Text<'a>,
    #[serde(borrow)]
    message: Option<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    stop_reason: Text<'a>,
    usage: Option<Usage>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    cache_read_input_tokens: i64,
    #[serde(default)]
    cache_creation_input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
}

/// `message.content`: a plain string (a typed prompt; its text is not kept) or blocks.
enum Content<'a> {
    Text,
    Blocks(Vec<Block<'a>>),
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    tool_use_id: Text<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Content<'a>, E> {
                Ok(Content::Text)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
                let mut blocks = Vec::new();
                while let Some(block) = seq.next_element::<BlockOrOther<'a>>()? {
                    if let BlockOrOther::Block(b) = block {
                        blocks.push(b);
                    }
                }
                Ok(Content::Blocks(blocks))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Content<'a>, A::Error> {
                IgnoredAny::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Content::Blocks(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Content<'a>, E> {
                Ok(Content::Blocks(Vec::new()))
            }
        }
        deserializer.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

/// An array element that is a block object, or anything else (skipped).
enum BlockOrOther<'a> {
    Block(Block<'a>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for BlockOrOther<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BlockOrOther<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a content block")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BlockOrOther<'a>, A::Error> {
                Block::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(BlockOrOther::Block)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<BlockOrOther<'a>, A::Error> {
                IgnoredAny::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(BlockOrOther::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<BlockOrOther<'a>, E> {
                Ok(BlockOrOther::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<BlockOrOther<'a>, E> {
                Ok(BlockOrOther::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<BlockOrOther<'a>, E> {
                Ok(BlockOrOther::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<BlockOrOther<'a>, E> {
                Ok(BlockOrOther::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<BlockOrOther<'a>, E> {
                Ok(BlockOrOther::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<BlockOrOther<'a>, E> {
                Ok(BlockOrOther::Other)
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// One conversation's running totals: the session's own, or one subagent's.
#[derive(Debug, Default)]
struct Transcript {
    session_id: String,
    slug: String,
    cwd: String,
    branch: String,
    model: String,
    activity: Activity,
    context_tokens: i64,
    /// Output tokens of messages that left the dedup window.
    output_settled: i64,
    /// Recent assistant message ids → output tokens of their last line.
    recent_messages: Recent<i64>,
    recent_users: Recent<()>,
    recent_tools: Recent<()>,
    messages: i64,
    tool_calls: i64,
    compactions: i64,
    pending: PendingTools,
    started_at: Timestamp,
    last_at: Timestamp,
}

impl Transcript {
    /// Token sums saturate: a log is input, and a line claiming `i64::MAX` tokens must not
    /// overflow (a panic in debug builds, a wrapped negative count in release).
    fn output_tokens(&self) -> i64 {
        self.recent_messages
            .values()
            .fold(self.output_settled, |sum, t| sum.saturating_add(*t))
    }

    fn apply(&mut self, rec: &Record) -> LineResult {
        if let Some(at) = parse_time(rec.timestamp.as_deref()) {
            if self.started_at.is_zero() {
                self.started_at = at;
            }
            self.last_at = at;
        }
        if self.session_id.is_empty() {
            set_if_some(&mut self.session_id, rec.session_id.as_deref());
        }
        set_if_some(&mut self.cwd, rec.cwd.as_deref());
        set_if_some(&mut self.branch, rec.git_branch.as_deref());
        set_if_some(&mut self.slug, rec.slug.as_deref());
        match rec.kind.as_deref() {
            Some("user") => self.user(rec),
            Some("assistant") => self.assistant(rec),
            Some("system") => {
                if rec.subtype.as_deref() == Some("compact_boundary") {
                    self.compactions += 1;
                }
                LineResult::Used
            }
            Some("summary" | "progress" | "file-history-snapshot" | "queue-operation") => {
                LineResult::Used
            }
            _ => LineResult::Unknown,
        }
    }

    fn user(&mut self, rec: &Record) -> LineResult {
        let new = match rec.uuid.as_deref() {
            Some(uuid) if self.recent_users.contains(uuid) => false,
            Some(uuid) => {
                self.recent_users.insert(uuid, ());
                true
            }
            None => true,
        };
        if new {
            self.messages += 1;
        }
        match rec.message.as_ref().and_then(|m| m.content.as_ref()) {
            Some(Content::Text) => {
                // A typed prompt: a new turn starts; whatever ran before is over.
                self.pending.clear();
                self.activity = Activity::Working;
            }
            Some(Content::Blocks(blocks)) => {
                for block in blocks {
                    match block.kind.as_deref() {
                        Some("tool_result") => {
                            if let Some(id) = &block.tool_use_id {
                                self.pending.finish(id);
                            }
                        }
                        Some("text" | "image") => self.pending.clear(),
                        _ => {}
                    }
                }
                self.activity = Activity::Working;
            }
            None => {}
        }
        LineResult::Used
    }

    fn assistant(&mut self, rec: &Record) -> LineResult {
        let Some(msg) = &rec.message else {
            return LineResult::Used;
        };
        let synthetic = msg.model.as_deref() == Some("<synthetic>");
        if !synthetic {
            set_if_some(&mut self.model, msg.model.as_deref());
        }
        let output = msg.usage.as_ref().map_or(0, |u| u.output_tokens);
        match msg.id.as_deref() {
            Some(id) => match self.recent_messages.get_mut(id) {
                Some(tokens) => *tokens = output,
                None => {
                    self.messages += 1;
                    if let Some(settled) = self.recent_messages.insert(id, output) {
                        self.output_settled = self.output_settled.saturating_add(settled);
                    }
                }
            },
            None => {
                self.messages += 1;
                self.output_settled = self.output_settled.saturating_add(output);
            }
        }
        if let (Some(u), false) = (&msg.usage, synthetic) {
            self.context_tokens = u
                .input_tokens
                .saturating_add(u.cache_read_input_tokens)
                .saturating_add(u.cache_creation_input_tokens);
        }
        if let Some(Content::Blocks(blocks)) = &msg.content {
            for block in blocks {
                if block.kind.as_deref() != Some("tool_use") {
                    continue;
                }
                let (Some(id), name) = (block.id.as_deref(), block.name.as_deref()) else {
                    continue;
                };
                if !self.recent_tools.contains(id) {
                    self.recent_tools.insert(id, ());
                    self.tool_calls += 1;
                    self.pending.start(id, name.unwrap_or("tool"));
                }
            }
        }
        self.activity = match msg.stop_reason.as_deref() {
            Some("end_turn" | "stop_sequence") => {
                self.pending.clear();
                Activity::Waiting
            }
            _ => Activity::Working,
        };
        LineResult::Used
    }

    fn max_context(&self) -> i64 {
        context_window(&self.model).unwrap_or(0)
    }

    fn subagent(&self, id: &str, parent: &str) -> SubagentState {
        let done = self.activity == Activity::Waiting;
        SubagentState {
            id: id.to_owned(),
            parent_id: parent.to_owned(),
            slug: self.slug.clone(),
            activity: if done {
                Activity::Terminal
            } else {
                self.activity.clone()
            },
            current_tool: self.pending.current().to_owned(),
            started_at: self.started_at,
            last_activity_at: self.last_at,
            model: self.model.clone(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens(),
            message_count: self.messages,
            tool_call_count: self.tool_calls,
            completed_at: if done { self.last_at } else { Timestamp::ZERO },
        }
    }
}

/// The parser of one Claude Code transcript file.
#[derive(Debug, Default)]
pub(crate) struct ClaudeLog {
    main: Transcript,
    /// Sidechain conversations found in the file, by agent id.
    sidechains: Vec<(String, Transcript)>,
    /// A file under `subagents/`: every line belongs to `main`, which is the subagent.
    subagent_file: bool,
}

impl ClaudeLog {
    /// A parser for a session's own transcript.
    pub(crate) fn session() -> Self {
        Self::default()
    }

    /// A parser for a subagent's transcript.
    pub(crate) fn subagent() -> Self {
        ClaudeLog {
            subagent_file: true,
            ..Self::default()
        }
    }

    /// Feeds one line.
    pub(crate) fn line(&mut self, line: &[u8]) -> LineResult {
        let Ok(rec) = serde_json::from_slice::<Record>(line) else {
            return LineResult::Invalid;
        };
        if self.subagent_file || rec.is_sidechain != Some(true) {
            return self.main.apply(&rec);
        }
        let agent = rec
            .agent_id
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or(SIDECHAIN);
        if let Some((_, t)) = self.sidechains.iter_mut().find(|(id, _)| id == agent) {
            return t.apply(&rec);
        }
        if self.sidechains.len() >= MAX_SIDECHAINS {
            self.sidechains.remove(0);
        }
        let mut t = Transcript::default();
        let result = t.apply(&rec);
        self.sidechains.push((agent.to_owned(), t));
        result
    }

    /// The session id the file names, if a line carried one.
    pub(crate) fn session_id(&self) -> &str {
        &self.main.session_id
    }

    /// The session as this file has it, with `id` as its id.
    pub(crate) fn report(&self, id: &str) -> Report {
        let t = &self.main;
        Report {
            session_id: id.to_owned(),
            slug: t.slug.clone(),
            model: t.model.clone(),
            working_dir: t.cwd.clone(),
            branch: t.branch.clone(),
            activity: t.activity.clone(),
            current_tool: t.pending.current().to_owned(),
            context_tokens: t.context_tokens,
            output_tokens: t.output_tokens(),
            max_context_tokens: t.max_context(),
            counts: super::Counts {
                messages: t.messages,
                tool_calls: t.tool_calls,
                compactions: t.compactions,
            },
            started_at: t.started_at,
            last_activity_at: t.last_at,
            subagents: self
                .sidechains
                .iter()
                .map(|(agent, s)| s.subagent(agent, id))
                .collect(),
        }
    }

    /// This file as a subagent `agent` of session `parent`.
    pub(crate) fn subagent_state(&self, agent: &str, parent: &str) -> SubagentState {
        self.main.subagent(agent, parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(log: &mut ClaudeLog, lines: &[&str]) {
        for l in lines {
            log.line(l.as_bytes());
        }
    }

    #[test]
    fn split_message_counted_once_and_last_usage_wins() {
        let mut log = ClaudeLog::session();
        feed(
            &mut log,
            &[
                r#"{"type":"user","uuid":"u1","sessionId":"s1","timestamp":"2026-01-01T10:00:00Z","cwd":"/w","gitBranch":"main","message":{"role":"user","content":"hi"}}"#,
                r#"{"type":"assistant","uuid":"a1","timestamp":"2026-01-01T10:00:01Z","message":{"id":"m1","model":"claude-opus-4-1","content":[{"type":"thinking","thinking":"x"}],"usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":1}}}"#,
                r#"{"type":"assistant","uuid":"a2","timestamp":"2026-01-01T10:00:02Z","message":{"id":"m1","model":"claude-opus-4-1","content":[{"type":"text","text":"y"}],"usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":7}}}"#,
                r#"{"type":"assistant","uuid":"a3","timestamp":"2026-01-01T10:00:03Z","message":{"id":"m1","model":"claude-opus-4-1","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":30}}}"#,
            ],
        );
        let r = log.report("s1");
        assert_eq!(r.counts.messages, 2);
        assert_eq!(r.counts.tool_calls, 1);
        assert_eq!(r.output_tokens, 30);
        assert_eq!(r.context_tokens, 115);
        assert_eq!(r.max_context_tokens, 200_000);
        assert_eq!(r.current_tool, "Bash");
        assert_eq!(r.activity, Activity::Working);
        assert_eq!((r.working_dir.as_str(), r.branch.as_str()), ("/w", "main"));
        feed(
            &mut log,
            &[
                r#"{"type":"user","uuid":"u2","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"out"}]}}"#,
                r#"{"type":"assistant","uuid":"a4","message":{"id":"m2","model":"<synthetic>","content":[{"type":"text","text":"z"}],"stop_reason":"end_turn","usage":{"input_tokens":0,"output_tokens":0}}}"#,
            ],
        );
        let r = log.report("s1");
        assert_eq!((r.counts.messages, r.current_tool.as_str()), (4, ""));
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!(
            (r.model.as_str(), r.context_tokens),
            ("claude-opus-4-1", 115)
        );
    }

    #[test]
    fn escaped_strings_are_read_too() {
        let mut log = ClaudeLog::session();
        let line = br#"{"type":"user","uuid":"u\u0031","sessionId":"s\u00e9","cwd":"C:\\w","message":{"role":"user","content":"a\"b"}}"#;
        assert_eq!(log.line(line), LineResult::Used);
        assert_eq!(log.session_id(), "s\u{e9}");
        let r = log.report("x");
        assert_eq!((r.working_dir.as_str(), r.counts.messages), ("C:\\w", 1));
    }

    #[test]
    fn bad_lines_are_classified() {
        let mut log = ClaudeLog::session();
        assert_eq!(log.line(b"{not json"), LineResult::Invalid);
        assert_eq!(log.line(b"[1,2]"), LineResult::Invalid);
        assert_eq!(log.line(br#"{"type":"brand-new"}"#), LineResult::Unknown);
        assert_eq!(
            log.line(br#"{"type":"system","subtype":"compact_boundary"}"#),
            LineResult::Used
        );
        assert_eq!(log.report("x").counts.compactions, 1);
    }

    /// Found by `fuzz/` (`claude_line`): token sums over log values overflowed (a panic in
    /// debug builds). They saturate.
    #[test]
    fn extreme_token_counts_saturate() {
        let mut log = ClaudeLog::session();
        log.line(br#"{"type":"assistant","message":{"id":"m1","usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":9223372036854775807,"cache_creation_input_tokens":1,"output_tokens":9223372036854775807}}}"#);
        let r = log.report("x");
        assert_eq!((r.context_tokens, r.output_tokens), (i64::MAX, i64::MAX));
        feed(
            &mut log,
            &[
                r#"{"type":"assistant","message":{"id":"m2","usage":{"output_tokens":9223372036854775807}}}"#,
                r#"{"type":"assistant","message":{"usage":{"output_tokens":9223372036854775807}}}"#,
            ],
        );
        assert_eq!(log.report("x").output_tokens, i64::MAX);
        // Ids pushed out of the dedup window settle their tokens into the saturated sum.
        for i in 0..super::super::RECENT_IDS {
            let line = format!(
                r#"{{"type":"assistant","message":{{"id":"n{i}","usage":{{"output_tokens":9223372036854775807}}}}}}"#
            );
            assert_eq!(log.line(line.as_bytes()), LineResult::Used);
        }
        assert_eq!(log.report("x").output_tokens, i64::MAX);
    }
}
