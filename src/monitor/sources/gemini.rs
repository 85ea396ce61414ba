//! Gemini CLI chats: `<root>/<project folder>/chats/session-*.json`, rewritten
//! whole on each save (0.38 and earlier), and the append-only `session-*.jsonl` (0.39 and
//! later, `packages/core/src/services/chatRecordingService.ts`).
//!
//! The `.json` form is one object `{sessionId, startTime, lastUpdated, messages: [...]}`; it
//! is parsed as a stream (message texts skipped, never held) and only when its size or
//! modification time changed. The `.jsonl` form has four kinds of line:
//! - a header `{sessionId, projectHash, startTime, lastUpdated, kind?}`;
//! - a message; one written again with the same `id` (tokens or tool calls added as they
//!   arrive) replaces the earlier one (upsert), it is not added;
//! - `{"$rewindTo": id}`: the person rewound the chat; the message `id` and every later one
//!   are gone, with their counts and tokens (an unknown id clears the chat, as Gemini CLI's
//!   own loader does);
//! - `{"$set": {...}}`: a metadata update. With `messages` it replaces the whole history
//!   (after a compression or a masking of tool output): messages it leaves out were
//!   compressed away, so what they counted stays counted and the rewrite is one
//!   compaction; messages new in it (the compression's summary turns) are not turns.
//!
//! Resuming a `.json` chat makes Gemini CLI copy it into `<name>.jsonl` beside it (same
//! `sessionId`) and write only there: the monitor reads the two as one session (see the
//! scanner). A subagent's chat is `chats/<parent session id>/<id>.jsonl` (header
//! `kind: "subagent"`): it is a subagent of that session, not a session.
//!
//! From the messages (`{id, timestamp, type: user|gemini|info|error|warning, model, tokens
//! {input, output, cached, thoughts, tool, total}, toolCalls [{id, name, status}]}`):
//! - messageCount: `user` and `gemini` messages; toolCallCount: tool calls;
//! - model: the latest `gemini` message's; maxContextTokens from the model table;
//! - contextTokens: the latest `gemini` message's `tokens.input` (the prompt, cached part
//!   included); outputTokens: the sum of `tokens.output` + `tokens.thoughts`;
//! - activity: `working` after a user message or while a tool call is not finished (status
//!   `validating`, `scheduled`, `executing`; currentTool is its name), `waiting` with the
//!   tool while one is `awaiting_approval`, `waiting` after a `gemini` message with nothing
//!   running (the turn ended).
//!
//! **Waiting for the person.** The interactive CLI records tool calls only once they
//! completed (`success`, `error`, `cancelled`: `recordCompletedToolCalls`), and a model
//! message's text before its tool calls run: a permission prompt is not in the log, and a
//! chat waiting for one reads as `waiting` after the model's message, without the tool.
//! `awaiting_approval` is honoured for writers that record it.
//!
//! lastActivityAt is the latest message's timestamp, except that it stays at the start of
//! a wait while the chat keeps waiting (an `info` line does not move it), and it never runs
//! backwards.
//!
//! **Working directory.** The project folder is the SHA-256 of the project root (v0.28 and
//! earlier) or a slug of its name (v0.29 and later, with the root in `.project_root` and
//! `projects.json`); the header's `projectHash` is the SHA-256 in every version, and
//! `directories` (in a `.json` chat's object, a `.jsonl` header or a `$set` line) starts
//! with the root. The scanner resolves the folder to the session's workingDir (see
//! `gemini_project`); an old hash folder whose root no other source names stays without one.
//!
//! Memory: one small record per message in the history (ids, counts and the model; no
//! text) and three totals for compressed-away messages.

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;

use super::{Counts, LineResult, Report, parse_time, set_if_some};
use crate::monitor::models::context_window;
use crate::wire::{Activity, SubagentState, Timestamp};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatFile {
    session_id: Option<String>,
    start_time: Option<String>,
    project_hash: Option<String>,
    directories: Option<Vec<String>>,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Line {
    session_id: Option<String>,
    start_time: Option<String>,
    project_hash: Option<String>,
    /// The header of a subagent's chat, or of a `.json` chat migrated on resume.
    directories: Option<Vec<String>>,
    /// `{"$rewindTo": id}`: the person rewound the chat to just before message `id`.
    #[serde(rename = "$rewindTo")]
    rewind_to: Option<String>,
    /// `{"$set": {...}}`: a metadata update; a `messages` key replaces the history.
    #[serde(rename = "$set")]
    set: Option<SetRecord>,
    #[serde(flatten)]
    message: Message,
}

#[derive(Deserialize, Default)]
struct SetRecord {
    messages: Option<Vec<Message>>,
    /// After `/directory add`: the workspace's directories, the project root first.
    directories: Option<Vec<String>>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct Message {
    id: Option<String>,
    timestamp: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    model: Option<String>,
    tokens: Option<Tokens>,
    tool_calls: Option<Vec<ToolCall>>,
    /// Not in the log: whether the message was written as a message of its own (a turn),
    /// rather than first seen in a `$set` history rewrite (a compression's summary).
    #[serde(skip)]
    turn: bool,
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
struct Tokens {
    #[serde(default)]
    input: i64,
    #[serde(default)]
    output: i64,
    #[serde(default)]
    thoughts: i64,
}

#[derive(Deserialize, Debug, Clone)]
struct ToolCall {
    name: Option<String>,
    status: Option<String>,
}

/// What messages no longer in the history (compressed away) had added.
#[derive(Debug, Default, Clone, Copy)]
struct Dropped {
    messages: i64,
    tool_calls: i64,
    output_tokens: i64,
}

impl Message {
    fn is_turn_kind(&self) -> bool {
        matches!(self.kind.as_deref(), Some("user" | "gemini"))
    }

    /// Output tokens: `tokens.output + tokens.thoughts` (saturating: any i64 in the log).
    fn output_tokens(&self) -> i64 {
        self.tokens
            .map_or(0, |t| t.output.saturating_add(t.thoughts))
    }

    fn tool_calls(&self) -> &[ToolCall] {
        self.tool_calls.as_deref().unwrap_or_default()
    }
}

/// The parser of one Gemini CLI chat, either form.
#[derive(Debug, Default)]
pub(crate) struct GeminiChat {
    session_id: String,
    /// The header's `projectHash`: the SHA-256 (hex) of the project root.
    project_hash: String,
    /// The first of the workspace's `directories` (the project root, as a realpath), once
    /// a record names them.
    first_directory: String,
    started_at: Timestamp,
    messages: Vec<Message>,
    by_id: HashMap<String, usize>,
    dropped: Dropped,
    compactions: i64,
}

impl GeminiChat {
    /// An empty chat.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The `sessionId` the chat names, once seen.
    pub(crate) fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Reads a whole `.json` chat, replacing what was known.
    ///
    /// # Errors
    /// The file is not a chat object (or could not be read).
    pub(crate) fn read_whole(&mut self, reader: impl Read) -> serde_json::Result<()> {
        let file: ChatFile = serde_json::from_reader(std::io::BufReader::new(reader))?;
        *self = GeminiChat::new();
        set_if_some(&mut self.session_id, file.session_id.as_deref());
        set_if_some(&mut self.project_hash, file.project_hash.as_deref());
        self.directories(file.directories.as_deref());
        self.started_at = parse_time(file.start_time.as_deref()).unwrap_or_default();
        for mut m in file.messages {
            m.turn = true;
            self.upsert(m);
        }
        Ok(())
    }

    /// Feeds one `.jsonl` line.
    pub(crate) fn line(&mut self, line: &[u8]) -> LineResult {
        let Ok(rec) = serde_json::from_slice::<Line>(line) else {
            return LineResult::Invalid;
        };
        let mut used = false;
        if self.session_id.is_empty() {
            set_if_some(&mut self.session_id, rec.session_id.as_deref());
        }
        if let Some(at) = parse_time(rec.start_time.as_deref()) {
            self.started_at = at;
            used = true;
        }
        used |= rec.session_id.is_some();
        set_if_some(&mut self.project_hash, rec.project_hash.as_deref());
        self.directories(rec.directories.as_deref());
        if let Some(id) = &rec.rewind_to {
            self.rewind(id);
            return LineResult::Used;
        }
        if let Some(set) = rec.set {
            self.directories(set.directories.as_deref());
            if let Some(messages) = set.messages {
                self.replace_history(messages);
            }
            return LineResult::Used;
        }
        let mut message = rec.message;
        if matches!(
            message.kind.as_deref(),
            Some("user" | "gemini" | "info" | "error" | "warning")
        ) {
            message.turn = true;
            self.upsert(message);
            used = true;
        }
        if used {
            LineResult::Used
        } else {
            LineResult::Unknown
        }
    }

    /// The header's `projectHash` (SHA-256 hex of the project root), or `""`.
    pub(crate) fn project_hash(&self) -> &str {
        &self.project_hash
    }

    /// The workspace's first directory (the project root, resolved through symbolic
    /// links), when a record named the directories; else `""`.
    pub(crate) fn first_directory(&self) -> &str {
        &self.first_directory
    }

    fn directories(&mut self, dirs: Option<&[String]>) {
        set_if_some(
            &mut self.first_directory,
            dirs.and_then(<[String]>::first).map(String::as_str),
        );
    }

    fn upsert(&mut self, m: Message) {
        match m.id.as_deref().and_then(|id| self.by_id.get(id)) {
            Some(&i) => {
                let turn = self.messages[i].turn || m.turn;
                self.messages[i] = m;
                self.messages[i].turn = turn;
            }
            None => {
                if let Some(id) = &m.id {
                    self.by_id.insert(id.clone(), self.messages.len());
                }
                self.messages.push(m);
            }
        }
    }

    /// `$rewindTo`: the message and everything after it are gone, with their counts and
    /// tokens (an id not in the chat clears it, as Gemini CLI's own loader does).
    fn rewind(&mut self, id: &str) {
        let keep = self.by_id.get(id).copied().unwrap_or(0);
        for m in self.messages.drain(keep..) {
            if let Some(id) = &m.id {
                self.by_id.remove(id);
            }
        }
    }

    /// `$set.messages`: the history as Gemini CLI now holds it (after a compression or a
    /// masking of tool output). Messages left out were compressed away: what they counted
    /// stays counted, and a rewrite that drops any is one compaction. Messages new in the
    /// rewrite (the compression's summary turns) are not turns of the session.
    fn replace_history(&mut self, messages: Vec<Message>) {
        let mut old: HashMap<String, Message> = HashMap::with_capacity(self.messages.len());
        let mut dropped_any = false;
        for m in std::mem::take(&mut self.messages) {
            match m.id.clone() {
                Some(id) => {
                    old.insert(id, m);
                }
                None => {
                    self.drop_counts(&m);
                    dropped_any = true;
                }
            }
        }
        self.by_id.clear();
        for mut m in messages {
            m.turn =
                m.id.as_deref()
                    .and_then(|id| old.remove(id))
                    .is_some_and(|before| before.turn);
            self.upsert(m);
        }
        for m in old.values() {
            self.drop_counts(m);
            dropped_any = true;
        }
        if dropped_any {
            self.compactions += 1;
        }
    }

    fn drop_counts(&mut self, m: &Message) {
        if !m.turn {
            return;
        }
        let d = &mut self.dropped;
        if m.is_turn_kind() {
            d.messages += 1;
        }
        d.tool_calls += m.tool_calls().len() as i64;
        d.output_tokens = d.output_tokens.saturating_add(m.output_tokens());
    }

    /// The session as this chat has it, with `id` as its id.
    pub(crate) fn report(&self, id: &str) -> Report {
        let mut r = Report {
            session_id: id.to_owned(),
            started_at: self.started_at,
            output_tokens: self.dropped.output_tokens,
            ..Report::default()
        };
        let mut counts = Counts {
            messages: self.dropped.messages,
            tool_calls: self.dropped.tool_calls,
            compactions: self.compactions,
        };
        for m in &self.messages {
            let was_waiting = r.activity == Activity::Waiting;
            let calls = m.tool_calls();
            if m.turn {
                counts.tool_calls += calls.len() as i64;
                if m.is_turn_kind() {
                    counts.messages += 1;
                }
                r.output_tokens = r.output_tokens.saturating_add(m.output_tokens());
            }
            match m.kind.as_deref() {
                Some("user") => {
                    r.activity = Activity::Working;
                    r.current_tool.clear();
                }
                Some("gemini") => {
                    set_if_some(&mut r.model, m.model.as_deref());
                    if let Some(t) = m.tokens {
                        r.context_tokens = t.input;
                    }
                    activity_of(calls, &mut r);
                }
                _ => {}
            }
            if let Some(at) = parse_time(m.timestamp.as_deref()) {
                if r.started_at.is_zero() {
                    r.started_at = at;
                }
                // While the chat keeps waiting its last activity stays the wait's start; it
                // never runs backwards.
                let still_waiting = was_waiting && r.activity == Activity::Waiting;
                if !still_waiting && at > r.last_activity_at {
                    r.last_activity_at = at;
                }
            }
        }
        r.counts = counts;
        r.max_context_tokens = context_window(&r.model).unwrap_or(0);
        r
    }

    /// The chat as a subagent `agent` of session `parent` (a chat under
    /// `chats/<parent>/`).
    pub(crate) fn subagent_state(&self, agent: &str, parent: &str) -> SubagentState {
        let r = self.report(agent);
        SubagentState {
            id: agent.to_owned(),
            parent_id: parent.to_owned(),
            slug: String::new(),
            activity: r.activity,
            current_tool: r.current_tool,
            started_at: r.started_at,
            last_activity_at: r.last_activity_at,
            model: r.model,
            context_tokens: r.context_tokens,
            output_tokens: r.output_tokens,
            message_count: r.counts.messages,
            tool_call_count: r.counts.tool_calls,
            completed_at: Timestamp::default(),
        }
    }
}

/// A `gemini` message's activity from its tool calls: `waiting` with the tool while one
/// awaits the person's approval, `working` with the tool while one is not finished (any
/// status but `success`, `error` or `cancelled`), else `waiting` (the turn ended).
fn activity_of(calls: &[ToolCall], r: &mut Report) {
    let approval = calls
        .iter()
        .rev()
        .find(|c| c.status.as_deref() == Some("awaiting_approval"));
    let running = calls
        .iter()
        .rev()
        .find(|c| !matches!(c.status.as_deref(), Some("success" | "error" | "cancelled")));
    let (activity, tool) = match (approval, running) {
        (Some(c), _) => (Activity::Waiting, c.name.as_deref().unwrap_or("tool")),
        (None, Some(c)) => (Activity::Working, c.name.as_deref().unwrap_or("tool")),
        (None, None) => (Activity::Waiting, ""),
    };
    r.activity = activity;
    tool.clone_into(&mut r.current_tool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_and_upserts() {
        let json = r#"{"sessionId":"g-1","projectHash":"ab","startTime":"2026-01-01T10:00:00Z","lastUpdated":"2026-01-01T10:01:00Z","messages":[
            {"id":"1","timestamp":"2026-01-01T10:00:01Z","type":"user","content":"secret"},
            {"id":"2","timestamp":"2026-01-01T10:00:02Z","type":"gemini","content":"x","model":"gemini-2.5-pro","tokens":{"input":1000,"output":10,"cached":0,"thoughts":5,"tool":0,"total":1015},"toolCalls":[{"id":"t","name":"read_file","args":{},"status":"success"}]}]}"#;
        let mut chat = GeminiChat::new();
        chat.read_whole(json.as_bytes()).unwrap();
        let r = chat.report("g-1");
        assert_eq!((r.counts.messages, r.counts.tool_calls), (2, 1));
        assert_eq!((r.context_tokens, r.output_tokens), (1000, 15));
        assert_eq!(r.max_context_tokens, 1_048_576);
        assert_eq!(r.activity, Activity::Waiting);

        let mut chat = GeminiChat::new();
        for l in [
            r#"{"sessionId":"g-2","startTime":"2026-01-01T10:00:00Z"}"#,
            r#"{"id":"1","type":"user","content":"hi"}"#,
            r#"{"id":"2","type":"gemini","model":"gemini-2.5-flash","toolCalls":[{"id":"t","name":"shell","status":"executing"}]}"#,
        ] {
            assert_eq!(chat.line(l.as_bytes()), LineResult::Used);
        }
        let r = chat.report("g-2");
        assert_eq!(
            (r.activity.clone(), r.current_tool.as_str()),
            (Activity::Working, "shell")
        );
        chat.line(br#"{"id":"2","type":"gemini","model":"gemini-2.5-flash","tokens":{"input":50,"output":3},"toolCalls":[{"id":"t","name":"shell","status":"success"}]}"#);
        let r = chat.report("g-2");
        assert_eq!(
            (r.counts.messages, r.counts.tool_calls, r.output_tokens),
            (2, 1, 3)
        );
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Waiting, "")
        );
        assert_eq!(chat.session_id(), "g-2");
    }

    #[test]
    fn tool_awaiting_approval_is_waiting_with_the_tool() {
        let mut chat = GeminiChat::new();
        for l in [
            r#"{"id":"1","timestamp":"2026-01-01T10:00:00Z","type":"user","content":"go"}"#,
            r#"{"id":"2","timestamp":"2026-01-01T10:00:02Z","type":"gemini","toolCalls":[{"id":"a","name":"read_file","status":"success"},{"id":"b","name":"run_shell_command","status":"awaiting_approval"}]}"#,
        ] {
            chat.line(l.as_bytes());
        }
        let r = chat.report("g");
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Waiting, "run_shell_command")
        );
        chat.line(br#"{"id":"2","timestamp":"2026-01-01T10:00:09Z","type":"gemini","toolCalls":[{"id":"a","name":"read_file","status":"success"},{"id":"b","name":"run_shell_command","status":"executing"}]}"#);
        let r = chat.report("g");
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Working, "run_shell_command")
        );
        assert_eq!(r.last_activity_at.to_string(), "2026-01-01T10:00:09Z");
    }

    #[test]
    fn rewind_to_an_unknown_id_clears_the_chat() {
        let mut chat = GeminiChat::new();
        for l in [
            r#"{"id":"1","type":"user","content":"a"}"#,
            r#"{"id":"2","type":"gemini","tokens":{"input":5,"output":3}}"#,
            r#"{"$rewindTo":"nope"}"#,
        ] {
            assert_eq!(chat.line(l.as_bytes()), LineResult::Used);
        }
        let r = chat.report("g");
        assert_eq!((r.counts.messages, r.output_tokens), (0, 0));
    }

    fn sample(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/monitor/gemini")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    /// v0.28 `.json` chat after `/directory add`: the project root is the first directory;
    /// the header's hash is the SHA-256 of the root.
    #[test]
    fn v0_28_directories_in_a_json_chat() {
        let mut chat = GeminiChat::new();
        chat.read_whole(sample("v0.28-directories.json").as_bytes())
            .unwrap();
        assert_eq!(chat.first_directory(), "/home/dev/web-app");
        assert_eq!(
            chat.project_hash(),
            super::super::gemini_project::sha256_hex(b"/home/dev/web-app")
        );
        assert_eq!(chat.report("x").counts.messages, 2);
    }

    /// v0.39 `.jsonl` chat: `{"$set": {"directories": …}}` after `/directory add`; a
    /// header without directories names none.
    #[test]
    fn v0_39_directories_from_a_set_line() {
        let text = sample("v0.39-dir-add.jsonl");
        let mut chat = GeminiChat::new();
        let mut lines = text.lines();
        for line in lines.by_ref().take(3) {
            assert_eq!(chat.line(line.as_bytes()), LineResult::Used);
        }
        assert_eq!(chat.first_directory(), "");
        assert_eq!(chat.project_hash().len(), 64);
        for line in lines {
            assert_eq!(chat.line(line.as_bytes()), LineResult::Used);
        }
        assert_eq!(chat.first_directory(), "/home/dev/web-app");
        assert_eq!(chat.report("x").counts.messages, 2);
        // A subagent's header carries them too.
        let mut chat = GeminiChat::new();
        chat.line(br#"{"sessionId":"s","projectHash":"ab","kind":"subagent","directories":["/w/a","/w/b"]}"#);
        assert_eq!(chat.first_directory(), "/w/a");
    }

    /// Found by `fuzz/` (`gemini_line`): the sum of `tokens.output + tokens.thoughts` over
    /// messages overflowed (a panic in debug builds). It saturates.
    #[test]
    fn extreme_token_counts_saturate() {
        let mut chat = GeminiChat::new();
        for l in [
            r#"{"id":"1","type":"gemini","tokens":{"input":9223372036854775807,"output":9223372036854775807,"thoughts":9223372036854775807}}"#,
            r#"{"id":"2","type":"gemini","tokens":{"input":9223372036854775807,"output":9223372036854775807}}"#,
        ] {
            assert_eq!(chat.line(l.as_bytes()), LineResult::Used);
        }
        let r = chat.report("x");
        assert_eq!((r.context_tokens, r.output_tokens), (i64::MAX, i64::MAX));
    }
}
