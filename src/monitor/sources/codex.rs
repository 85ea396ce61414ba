//! Codex CLI rollouts: `<root>/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl`, lines
//! `{timestamp, type, payload}`.
//!
//! What a rollout holds is decided by the writer's persistence policy
//! (`codex-rs/core/src/rollout/policy.rs`): every `session_meta`, `turn_context`,
//! `compacted` line and most response items, but only some events. The shapes read, and
//! the versions they were seen in (writer sources and other readers' test data):
//!
//! - `session_meta` (all versions): `id` (older `session_id`, `conversation_id`) → the
//!   session id, kept for every later read of the file; `timestamp` → startedAt; `cwd`;
//!   `git.branch`. **Only the first one counts**: a forked rollout (and a subagent's)
//!   starts with its own meta and then copies its parent's history, the parent's
//!   `session_meta` included. A later meta for another id names the parent, as does
//!   `forked_from_id` in the rollout's own meta (newer versions); the parent id is kept.
//! - `turn_context`: `cwd`, `model`.
//! - `event_msg`:
//!   - `user_message` → `working`; `agent_message` (both: all versions with events);
//!   - `task_started` → `working`, with `model_context_window` (the window, in tokens,
//!     before the first `token_count`); `task_complete` → `waiting` (the turn ended).
//!     Writers whose policy has persistence modes persist both; the older single-list
//!     policy persists neither, so those rollouts end a turn only by going `idle`;
//!   - `turn_aborted` → `waiting` (all versions with events: the person interrupted);
//!   - `token_count` with `info` (may be `null`): contextTokens =
//!     `last_token_usage.total_tokens`, outputTokens = `total_token_usage.output_tokens`,
//!     maxContextTokens = `model_context_window`;
//!   - `context_compacted`: a compaction (every policy that has the event persists it).
//! - `compacted` (a compaction's summary, `message`, newer ones with a
//!   `replacement_history`) and a `compaction` (older name `compaction_summary`; newer
//!   writers also `context_compaction`) response item: a compaction. The writer persists a compaction's markers one right after the
//!   other (`compacted`, then `context_compacted`), so consecutive markers count once.
//! - `response_item`: `function_call`, `custom_tool_call`, `local_shell_call` → a tool call
//!   (distinct `call_id`s) and the current tool until its `*_output` arrives; `message` with
//!   role `user` / `assistant`.
//! - messageCount: user turns plus agent messages. Newer logs write each twice (an
//!   `event_msg` and a `response_item`), older ones only the `response_item`: for each side
//!   the count is the `event_msg` tally once the log has any, else the `response_item` one,
//!   so both layouts count each turn once (and the injected environment-context "user"
//!   items of newer logs are not counted as turns).
//! - Lines of the oldest layout (no `payload`: the item's fields at the top level) are read as
//!   `response_item`s; a first line with an `id` and no `type` is the session's meta.
//!
//! **Waiting for the person.** A rollout tells a turn's end (`task_complete`,
//! `turn_aborted`) but never a permission prompt: `exec_approval_request`,
//! `apply_patch_approval_request`, `request_permissions`, `request_user_input` and
//! `elicitation_request` are not persisted by any version's policy. While Codex waits for
//! an approval its session stays `working` (then `idle`).
//!
//! lastActivityAt is the latest record's timestamp, except that it stays at the start of a
//! wait while the session keeps waiting (a `token_count` after `task_complete` does not
//! move it), and it never runs backwards.

use serde::Deserialize;

use super::{Counts, LineResult, PendingTools, Recent, Report, parse_time, set_if_some};
use crate::monitor::models::context_window;
use crate::wire::{Activity, Timestamp};

#[derive(Deserialize)]
struct Line {
    timestamp: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<Payload>,
    // The oldest layout: the item's fields at the top level.
    id: Option<String>,
    role: Option<String>,
    name: Option<String>,
    call_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct Payload {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    session_id: Option<String>,
    conversation_id: Option<String>,
    timestamp: Option<String>,
    cwd: Option<String>,
    model: Option<String>,
    git: Option<Git>,
    info: Option<Info>,
    role: Option<String>,
    name: Option<String>,
    call_id: Option<String>,
    /// `task_started`: the model's context window, in tokens.
    model_context_window: Option<i64>,
    /// `session_meta` of a forked rollout (newer versions): the parent's id.
    forked_from_id: Option<String>,
}

#[derive(Deserialize)]
struct Git {
    branch: Option<String>,
}

#[derive(Deserialize)]
struct Info {
    last_token_usage: Option<Usage>,
    total_token_usage: Option<Usage>,
    model_context_window: Option<i64>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
    total_tokens: Option<i64>,
}

/// The parser of one Codex rollout.
#[derive(Debug, Default)]
pub(crate) struct CodexLog {
    session_id: String,
    cwd: String,
    branch: String,
    model: String,
    activity: Activity,
    context_tokens: i64,
    output_tokens: i64,
    context_window: i64,
    event_users: i64,
    event_agents: i64,
    item_users: i64,
    item_assistants: i64,
    saw_events: bool,
    tool_calls: i64,
    compactions: i64,
    /// The previous line was a compaction marker: the markers of one compaction (a
    /// `compacted` line, its `context_compacted` event, a `compaction` item) count once.
    in_compaction: bool,
    recent_calls: Recent<()>,
    pending: PendingTools,
    /// A `session_meta` line was read: later ones are another rollout's (a fork's or
    /// subagent's copy of its parent's history) and change nothing but `parent_id`.
    meta_seen: bool,
    parent_id: String,
    started_at: Timestamp,
    last_at: Timestamp,
}

impl CodexLog {
    /// A parser at the start of a rollout.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The session id from `session_meta`, once seen.
    pub(crate) fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Feeds one line.
    pub(crate) fn line(&mut self, line: &[u8]) -> LineResult {
        let Ok(mut rec) = serde_json::from_slice::<Line>(line) else {
            return LineResult::Invalid;
        };
        let at = parse_time(rec.timestamp.as_deref());
        if let Some(at) = at {
            if self.started_at.is_zero() {
                self.started_at = at;
            }
        }
        let was_waiting = self.activity == Activity::Waiting;
        let result = self.record(&mut rec);
        // `lastActivityAt` is when the session last did something: it stays at the start of
        // a wait while the session keeps waiting, and never runs backwards.
        if let Some(at) = at {
            let still_waiting = was_waiting && self.activity == Activity::Waiting;
            if !still_waiting && at > self.last_at {
                self.last_at = at;
            }
        }
        result
    }

    fn record(&mut self, rec: &mut Line) -> LineResult {
        let payload = rec.payload.take();
        let marker = match (rec.kind.as_deref(), payload.as_ref()) {
            (Some("compacted"), _) => true,
            (Some("event_msg"), Some(p)) => p.kind.as_deref() == Some("context_compacted"),
            (Some("response_item"), Some(p)) => {
                matches!(
                    p.kind.as_deref(),
                    Some("compaction" | "compaction_summary" | "context_compaction")
                )
            }
            _ => false,
        };
        // The writer persists a compaction's markers one right after the other.
        let first = marker && !self.in_compaction;
        self.in_compaction = marker;
        if marker {
            if first {
                self.compactions += 1;
            }
            return LineResult::Used;
        }
        match (rec.kind.as_deref(), payload) {
            (Some("session_meta"), Some(p)) => {
                self.meta(&p);
                LineResult::Used
            }
            (Some("turn_context"), Some(p)) => {
                set_if_some(&mut self.cwd, p.cwd.as_deref());
                set_if_some(&mut self.model, p.model.as_deref());
                LineResult::Used
            }
            (Some("event_msg"), Some(p)) => self.event(&p),
            (Some("response_item"), Some(p)) => self.item(&p),
            (Some(kind), None) => {
                // The oldest layout: a response item written at the top level.
                let p = Payload {
                    kind: Some(kind.to_owned()),
                    role: rec.role.take(),
                    name: rec.name.take(),
                    call_id: rec.call_id.take(),
                    ..Payload::default()
                };
                self.item(&p)
            }
            (None, None) if rec.id.is_some() => {
                let p = Payload {
                    id: rec.id.take(),
                    ..Payload::default()
                };
                self.meta(&p);
                LineResult::Used
            }
            _ => LineResult::Unknown,
        }
    }

    fn meta(&mut self, p: &Payload) {
        let id =
            p.id.as_deref()
                .or(p.session_id.as_deref())
                .or(p.conversation_id.as_deref())
                .unwrap_or_default();
        if self.meta_seen {
            // A fork or subagent rollout starts with its own meta, then copies its parent's
            // history, parent's meta included: the start, cwd and branch stay this rollout's.
            if !id.is_empty() && id != self.session_id && self.parent_id.is_empty() {
                id.clone_into(&mut self.parent_id);
                tracing::debug!(session = %self.session_id, parent = %self.parent_id, "codex rollout continues another session");
            }
            return;
        }
        self.meta_seen = true;
        set_if_some(&mut self.session_id, Some(id));
        set_if_some(&mut self.parent_id, p.forked_from_id.as_deref());
        if let Some(at) = parse_time(p.timestamp.as_deref()) {
            self.started_at = at;
        }
        set_if_some(&mut self.cwd, p.cwd.as_deref());
        set_if_some(
            &mut self.branch,
            p.git.as_ref().and_then(|g| g.branch.as_deref()),
        );
    }

    /// The id of the session this rollout was forked from (or the subagent's parent), once
    /// a line names it: `forked_from_id` of its own `session_meta`, else the id of a later
    /// `session_meta` (the copy of the parent's).
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "kept for linking forks and subagents to their parent"
        )
    )]
    pub(crate) fn parent_id(&self) -> &str {
        &self.parent_id
    }

    fn event(&mut self, p: &Payload) -> LineResult {
        self.saw_events = true;
        match p.kind.as_deref() {
            Some("user_message") => {
                self.event_users += 1;
                self.pending.clear();
                self.activity = Activity::Working;
            }
            Some("agent_message") => self.event_agents += 1,
            Some("task_started") => {
                self.activity = Activity::Working;
                if let Some(window) = p.model_context_window.filter(|w| *w > 0) {
                    self.context_window = window;
                }
            }
            Some("task_complete" | "turn_aborted") => {
                self.pending.clear();
                self.activity = Activity::Waiting;
            }
            Some("token_count") => {
                if let Some(info) = &p.info {
                    if let Some(last) = &info.last_token_usage {
                        self.context_tokens = last
                            .total_tokens
                            .unwrap_or(last.input_tokens.saturating_add(last.output_tokens));
                    }
                    if let Some(total) = &info.total_token_usage {
                        self.output_tokens = total.output_tokens;
                    }
                    if let Some(window) = info.model_context_window.filter(|w| *w > 0) {
                        self.context_window = window;
                    }
                }
            }
            Some(_) => {}
            None => return LineResult::Unknown,
        }
        LineResult::Used
    }

    fn item(&mut self, p: &Payload) -> LineResult {
        match p.kind.as_deref() {
            Some("message") => match p.role.as_deref() {
                Some("user") => {
                    self.item_users += 1;
                    if !self.saw_events {
                        self.activity = Activity::Working;
                    }
                }
                Some("assistant") => self.item_assistants += 1,
                _ => {}
            },
            Some(kind @ ("function_call" | "custom_tool_call" | "local_shell_call")) => {
                let name = p.name.as_deref().unwrap_or(if kind == "local_shell_call" {
                    "shell"
                } else {
                    "tool"
                });
                let id = p.call_id.as_deref().or(p.id.as_deref());
                let new = match id {
                    Some(id) if self.recent_calls.contains(id) => false,
                    Some(id) => {
                        self.recent_calls.insert(id, ());
                        self.pending.start(id, name);
                        true
                    }
                    None => true,
                };
                if new {
                    self.tool_calls += 1;
                }
                self.activity = Activity::Working;
            }
            Some("function_call_output" | "custom_tool_call_output") => {
                if let Some(id) = &p.call_id {
                    self.pending.finish(id);
                }
                self.activity = Activity::Working;
            }
            Some("reasoning" | "web_search_call") => {}
            _ => return LineResult::Unknown,
        }
        LineResult::Used
    }

    /// The session as this rollout has it, with `id` as its id.
    pub(crate) fn report(&self, id: &str) -> Report {
        let max = if self.context_window > 0 {
            self.context_window
        } else {
            context_window(&self.model).unwrap_or(0)
        };
        Report {
            session_id: id.to_owned(),
            model: self.model.clone(),
            working_dir: self.cwd.clone(),
            branch: self.branch.clone(),
            activity: self.activity.clone(),
            current_tool: self.pending.current().to_owned(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens,
            max_context_tokens: max,
            counts: Counts {
                messages: prefer_events(self.event_users, self.item_users)
                    + prefer_events(self.event_agents, self.item_assistants),
                tool_calls: self.tool_calls,
                compactions: self.compactions,
            },
            started_at: self.started_at,
            last_activity_at: self.last_at,
            ..Report::default()
        }
    }
}

/// The `event_msg` tally when the log has any, else the `response_item` one (older logs).
fn prefer_events(events: i64, items: i64) -> i64 {
    if events > 0 { events } else { items }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_fields() {
        let mut log = CodexLog::new();
        for l in [
            r#"{"timestamp":"2026-01-01T10:00:00Z","type":"session_meta","payload":{"id":"c-1","cwd":"/w","git":{"branch":"dev"}}}"#,
            r#"{"timestamp":"2026-01-01T10:00:01Z","type":"turn_context","payload":{"cwd":"/w","model":"gpt-5-codex"}}"#,
            r#"{"timestamp":"2026-01-01T10:00:02Z","type":"response_item","payload":{"type":"message","role":"user","content":[]}}"#,
            r#"{"timestamp":"2026-01-01T10:00:02Z","type":"event_msg","payload":{"type":"user_message","message":"secret"}}"#,
            r#"{"timestamp":"2026-01-01T10:00:03Z","type":"event_msg","payload":{"type":"token_count","info":null}}"#,
            r#"{"timestamp":"2026-01-01T10:00:04Z","type":"response_item","payload":{"type":"function_call","name":"shell","arguments":"{}","call_id":"k1"}}"#,
        ] {
            assert_eq!(log.line(l.as_bytes()), LineResult::Used, "{l}");
        }
        let r = log.report("c-1");
        assert_eq!(
            (r.activity.clone(), r.current_tool.as_str()),
            (Activity::Working, "shell")
        );
        assert_eq!(r.max_context_tokens, 272_000);
        assert_eq!((r.counts.messages, r.counts.tool_calls), (1, 1));
        for l in [
            r#"{"timestamp":"2026-01-01T10:00:05Z","type":"response_item","payload":{"type":"function_call_output","call_id":"k1","output":"x"}}"#,
            r#"{"timestamp":"2026-01-01T10:00:06Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":900,"output_tokens":40,"total_tokens":940},"last_token_usage":{"input_tokens":500,"output_tokens":20,"total_tokens":520},"model_context_window":258400}}}"#,
            r#"{"timestamp":"2026-01-01T10:00:07Z","type":"event_msg","payload":{"type":"task_complete"}}"#,
        ] {
            log.line(l.as_bytes());
        }
        let r = log.report("c-1");
        assert_eq!(
            (r.context_tokens, r.output_tokens, r.max_context_tokens),
            (520, 40, 258_400)
        );
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Waiting, "")
        );
        assert_eq!(log.session_id(), "c-1");
    }

    #[test]
    fn compaction_markers_of_one_compaction_count_once() {
        let mut log = CodexLog::new();
        for l in [
            r#"{"type":"compacted","payload":{"message":"summary"}}"#,
            r#"{"type":"event_msg","payload":{"type":"context_compacted"}}"#,
            r#"{"type":"event_msg","payload":{"type":"token_count","info":null}}"#,
            // A compaction item on its own (written in a response's output).
            r#"{"type":"response_item","payload":{"type":"compaction","encrypted_content":"x"}}"#,
            r#"{"type":"event_msg","payload":{"type":"user_message","message":"go"}}"#,
            r#"{"type":"response_item","payload":{"type":"context_compaction"}}"#,
            r#"{"type":"event_msg","payload":{"type":"agent_message","message":"ok"}}"#,
            // An event with no compacted line before it.
            r#"{"type":"event_msg","payload":{"type":"context_compacted"}}"#,
        ] {
            assert_eq!(log.line(l.as_bytes()), LineResult::Used, "{l}");
        }
        assert_eq!(log.report("x").counts.compactions, 4);
    }

    #[test]
    fn later_session_meta_is_the_parent() {
        let mut log = CodexLog::new();
        for l in [
            r#"{"timestamp":"2026-02-04T15:30:00Z","type":"session_meta","payload":{"id":"fork","timestamp":"2026-02-04T15:30:00Z","cwd":"/new"}}"#,
            r#"{"timestamp":"2026-02-04T15:30:01Z","type":"session_meta","payload":{"id":"parent","timestamp":"2026-02-01T08:00:00Z","cwd":"/old"}}"#,
            r#"{"timestamp":"2026-02-04T15:30:02Z","type":"session_meta","payload":{"id":"grandparent","timestamp":"2026-01-01T08:00:00Z"}}"#,
        ] {
            log.line(l.as_bytes());
        }
        let r = log.report(log.session_id());
        assert_eq!(
            (r.session_id.as_str(), r.working_dir.as_str()),
            ("fork", "/new")
        );
        assert_eq!(r.started_at.to_string(), "2026-02-04T15:30:00Z");
        assert_eq!(log.parent_id(), "parent");

        let mut log = CodexLog::new();
        log.line(br#"{"type":"session_meta","payload":{"id":"fork","forked_from_id":"parent"}}"#);
        assert_eq!(log.parent_id(), "parent");
    }

    /// Found by `fuzz/` (`codex_line`): `input_tokens + output_tokens` of a `token_count`
    /// without `total_tokens` overflowed (a panic in debug builds). It saturates.
    #[test]
    fn extreme_token_counts_saturate() {
        let mut log = CodexLog::new();
        let line = br#"{"type":"event_msg","payload":{"type":"token_count","info":{"last_token_usage":{"input_tokens":9223372036854775807,"output_tokens":9223372036854775807}}}}"#;
        assert_eq!(log.line(line), LineResult::Used);
        assert_eq!(log.report("x").context_tokens, i64::MAX);
    }
}
