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
//!   starts with its own meta and then may copy its parent's history, the parent's
//!   `session_meta` included (see "Threads and forks").
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
//! **Threads and forks.** The rollout's own `session_meta` says where a thread came from:
//! - a *subagent thread* (multi-agent tools, 2026 and later): `source.subagent.thread_spawn`
//!   with `parent_thread_id` (and `agent_nickname`), or a top-level `parent_thread_id`, or
//!   `thread_source: "subagent"` with `forked_from_id`. Its parent is the thread that spawned
//!   it: the scanner shows it as a subagent of that session ([`CodexLog::parent_id`]), named
//!   by its nickname. Subagents of `/review`, auto-compaction or memory consolidation
//!   (`source.subagent` `review`, `compact`, `memory_consolidation`) do not name their
//!   parent: each is a session of its own.
//! - a *fork* (`/fork`, "fork from here": `forked_from_id` without a subagent source; older
//!   versions: no field, the parent's `session_meta` right after the fork's own): a session
//!   of its own, which the person drives.
//!
//! A fork, and a subagent spawned with history (v1 `fork_context: true`, v2 `fork_turns`
//! other than `none`), begins with a verbatim copy of the parent's history, written in one
//! burst when the thread starts: the parent's `session_meta`, turns, messages, tool calls,
//! `token_count`s (the parent's cumulative totals) and compactions. The copy is skipped —
//! nothing in it counts towards messages, tool calls, tokens, compactions, activity,
//! workingDir or lastActivityAt — so a thread counts only its own work. The copy ends at
//! the first line of the thread's own:
//! 1. a `turn_context` or `task_started` whose `turn_id` is a UUIDv7 no older (to the
//!    millisecond) than the thread's own id (a UUIDv7 in every version with turn ids): the
//!    copied turns all predate the thread;
//! 2. in rollouts whose copy has shown no comparable turn id (versions before turn ids,
//!    or ids that are not UUIDv7), the first line written more than [`COPY_GAP`] after
//!    the line before it: the copy is one burst, the thread's own first turn waits for
//!    input. A thread whose first own line follows its copy within [`COPY_GAP`] (possible
//!    only in those old versions) has that line taken as part of the copy.
//!
//! The thread's own `token_count`s restart from its own usage (the copied context it
//! re-sends is real context, and counts in contextTokens).
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

use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Counts, LineResult, PendingTools, Recent, Report, parse_time, set_if_some};
use crate::monitor::models::context_window;
use crate::wire::{Activity, SubagentState, Timestamp};

/// In a copy of a parent's history without comparable turn ids, a line written this long
/// after the one before it is the thread's own: 1 s. The copy is written in one burst
/// (lines a few milliseconds apart).
pub(crate) const COPY_GAP: Duration = Duration::from_secs(1);

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
    /// `session_meta` of a forked rollout (newer versions): the id of the thread whose
    /// history was copied in.
    forked_from_id: Option<String>,
    /// `session_meta`: what started the thread (`"cli"`, … or `{"subagent": …}`).
    source: Option<MetaSource>,
    /// `session_meta` (newer versions): `"user"`, `"subagent"`, `"fork"`, ….
    thread_source: Option<String>,
    /// `session_meta` (some versions): the spawning thread of a subagent.
    parent_thread_id: Option<String>,
    /// `session_meta` (2026 and later): a subagent's nickname.
    agent_nickname: Option<String>,
    /// `turn_context`, `task_started`: the turn's id (a UUIDv7 in versions that write it).
    turn_id: Option<String>,
}

/// `session_meta.source`: a name, `{"subagent": …}`, or a shape not known here.
#[derive(Deserialize)]
#[serde(untagged)]
enum MetaSource {
    Subagent { subagent: SubagentSource },
    Other(IgnoredAny),
}

/// `source.subagent`: `{"thread_spawn": {…}}`, or a name (`review`, `compact`, …).
#[derive(Deserialize)]
#[serde(untagged)]
enum SubagentSource {
    Spawn { thread_spawn: ThreadSpawn },
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct ThreadSpawn {
    parent_thread_id: Option<String>,
    agent_nickname: Option<String>,
}

/// The state of a copied history being skipped.
#[derive(Debug, Clone, Copy)]
struct CopiedHistory {
    /// The outer timestamp of the last line read (the thread's own meta, then the copy's).
    last_at: Option<Timestamp>,
    /// A turn id in the copy was comparable with the thread's own id: the copy ends by
    /// turn id only, not by time.
    by_turn_id: bool,
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
    /// subagent's copy of its parent's history) and change nothing but `forked_from`.
    meta_seen: bool,
    /// The line before was the rollout's own `session_meta`: a meta for another id here
    /// starts a copy of the parent's history (versions without `forked_from_id`).
    just_after_meta: bool,
    /// The thread that spawned this one (a subagent thread), or empty.
    parent_id: String,
    /// The thread whose history was copied in, or empty.
    forked_from: String,
    /// A subagent's nickname, or empty.
    nickname: String,
    /// The millisecond time of the thread's own id, when it is a UUIDv7.
    own_id_ms: Option<u64>,
    /// Reading the copy of the parent's history (see the module docs).
    copy: Option<CopiedHistory>,
    /// The outer timestamp of the rollout's own `session_meta` line.
    meta_at: Option<Timestamp>,
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
        if self.in_copy(&rec, at) {
            // The parent's history, copied: only a `session_meta` in it names something.
            if let (Some("session_meta"), Some(p)) = (rec.kind.as_deref(), rec.payload.as_ref()) {
                self.meta(p);
            }
            return LineResult::Used;
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
            if !id.is_empty() && id != self.session_id {
                if self.just_after_meta && self.copy.is_none() {
                    // Versions without `forked_from_id`: the copy starts here.
                    self.start_copy(None);
                }
                if self.forked_from.is_empty() {
                    id.clone_into(&mut self.forked_from);
                    tracing::debug!(session = %self.session_id, forked_from = %self.forked_from, "codex rollout continues another session");
                }
            }
            return;
        }
        self.meta_seen = true;
        set_if_some(&mut self.session_id, Some(id));
        self.own_id_ms = uuid7_ms(&self.session_id);
        set_if_some(&mut self.forked_from, p.forked_from_id.as_deref());
        let spawn = match &p.source {
            Some(MetaSource::Subagent {
                subagent: SubagentSource::Spawn { thread_spawn },
            }) => Some(thread_spawn),
            _ => None,
        };
        let subagent_source = matches!(&p.source, Some(MetaSource::Subagent { .. }))
            || p.thread_source.as_deref() == Some("subagent");
        let parent = spawn
            .and_then(|s| s.parent_thread_id.as_deref())
            .or(p.parent_thread_id.as_deref())
            .filter(|p| !p.is_empty())
            .or(subagent_source
                .then_some(p.forked_from_id.as_deref())
                .flatten());
        set_if_some(&mut self.parent_id, parent);
        if self.parent_id == self.session_id {
            self.parent_id.clear();
        }
        set_if_some(
            &mut self.nickname,
            spawn
                .and_then(|s| s.agent_nickname.as_deref())
                .or(p.agent_nickname.as_deref()),
        );
        if let Some(at) = parse_time(p.timestamp.as_deref()) {
            self.started_at = at;
        }
        set_if_some(&mut self.cwd, p.cwd.as_deref());
        set_if_some(
            &mut self.branch,
            p.git.as_ref().and_then(|g| g.branch.as_deref()),
        );
        if !self.forked_from.is_empty() {
            self.start_copy(None);
        }
    }

    /// A copy of the parent's history begins after the thread's own meta.
    fn start_copy(&mut self, last_at: Option<Timestamp>) {
        self.copy = Some(CopiedHistory {
            last_at: last_at.or(self.meta_at),
            by_turn_id: false,
        });
    }

    /// Whether the line `rec` (outer timestamp `at`) is part of the copied history; the
    /// first line that is not ends the copy.
    fn in_copy(&mut self, rec: &Line, at: Option<Timestamp>) -> bool {
        let just_after_meta = std::mem::take(&mut self.just_after_meta);
        if rec.kind.as_deref() == Some("session_meta") {
            if !self.meta_seen {
                self.meta_at = at;
                self.just_after_meta = true;
                return false;
            }
            // Another thread's meta: part of a copy (and, right after the rollout's own,
            // the start of one).
            self.just_after_meta = just_after_meta;
            return true;
        }
        let Some(copy) = &mut self.copy else {
            return false;
        };
        let turn = match (rec.kind.as_deref(), rec.payload.as_ref()) {
            (Some("turn_context"), Some(p)) => p.turn_id.as_deref(),
            (Some("event_msg"), Some(p)) if p.kind.as_deref() == Some("task_started") => {
                p.turn_id.as_deref()
            }
            _ => None,
        };
        let turn_ms = turn.and_then(uuid7_ms);
        let own = match (turn_ms, self.own_id_ms) {
            (Some(turn), Some(mine)) => {
                copy.by_turn_id = true;
                turn >= mine
            }
            _ => {
                !copy.by_turn_id
                    && matches!((copy.last_at, at), (Some(before), Some(at)) if later_by(before, at) > COPY_GAP)
            }
        };
        if own {
            self.copy = None;
            tracing::debug!(session = %self.session_id, "codex rollout: end of the copied history");
            return false;
        }
        if at.is_some() {
            copy.last_at = at;
        }
        true
    }

    /// The thread that spawned this one, when the rollout is a subagent thread that names
    /// it; empty for a session of its own (a fork included).
    pub(crate) fn parent_id(&self) -> &str {
        &self.parent_id
    }

    /// The thread whose history this rollout copied (a fork's origin), once a line names
    /// it: `forked_from_id` of its own `session_meta`, else the id of a later
    /// `session_meta` (the copy of the parent's).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "no wire field carries a fork's origin")
    )]
    pub(crate) fn forked_from(&self) -> &str {
        &self.forked_from
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

impl CodexLog {
    /// The rollout as a subagent of session `parent` (see [`CodexLog::parent_id`]): its own
    /// work only, its nickname as the slug, `agent` as its id.
    pub(crate) fn subagent_state(&self, agent: &str, parent: &str) -> SubagentState {
        let r = self.report(agent);
        SubagentState {
            id: agent.to_owned(),
            parent_id: parent.to_owned(),
            slug: self.nickname.clone(),
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

/// How much later `at` is than `before` (zero when it is not later).
fn later_by(before: Timestamp, at: Timestamp) -> Duration {
    match (before.to_system_time(), at.to_system_time()) {
        (Some(before), Some(at)) => at.duration_since(before).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// The Unix time in milliseconds of a UUIDv7 (RFC 9562: its first 48 bits), or `None`
/// for any other string (another UUID version, not a UUID).
fn uuid7_ms(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if !b.iter().all(|c| *c == b'-' || c.is_ascii_hexdigit())
        || b.len() != 36
        || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-')
        || b[14] != b'7'
    {
        return None;
    }
    let hex: String = id[..13].chars().filter(|c| *c != '-').collect();
    u64::from_str_radix(&hex, 16).ok()
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
        assert_eq!(log.forked_from(), "parent");
        assert_eq!(log.parent_id(), "", "a fork is no subagent");

        let mut log = CodexLog::new();
        log.line(br#"{"type":"session_meta","payload":{"id":"fork","forked_from_id":"parent"}}"#);
        assert_eq!((log.forked_from(), log.parent_id()), ("parent", ""));
    }

    fn sample(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/monitor/codex")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    /// Every line of a sample, each asserted to be used.
    fn parse(name: &str) -> CodexLog {
        let mut log = CodexLog::new();
        for line in sample(name).lines() {
            assert_eq!(
                log.line(line.as_bytes()),
                LineResult::Used,
                "{name}: {line}"
            );
        }
        log
    }

    /// 0.135 user fork: the parent's turn (a message each way, a tool call, the parent's
    /// token totals) is copied in one burst; only the fork's own turn counts.
    #[test]
    fn v0_135_fork_counts_only_its_own_turn() {
        let log = parse("v0.135-fork-replay.jsonl");
        assert_eq!(log.session_id(), "019e7000-0000-7000-8000-00000000f0a1");
        assert_eq!(log.forked_from(), "019e6000-0000-7000-8000-00000000a0a1");
        assert_eq!(log.parent_id(), "", "a user fork is a session of its own");
        let r = log.report(log.session_id());
        assert_eq!((r.counts.messages, r.counts.tool_calls), (2, 0));
        assert_eq!((r.context_tokens, r.output_tokens), (13_080, 80));
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!(r.started_at.to_string(), "2026-05-30T10:00:00Z");
        assert_eq!(r.last_activity_at.to_string(), "2026-05-30T10:02:15.002Z");
        assert_eq!(r.branch, "try-b");
    }

    /// Before the fork's own first turn, nothing of the copy shows: no counts, no tokens,
    /// no activity, and the last activity is the fork's start.
    #[test]
    fn a_fork_without_its_own_turn_counts_nothing() {
        let text = sample("v0.135-fork-replay.jsonl");
        let mut log = CodexLog::new();
        for line in text.lines().take(12) {
            log.line(line.as_bytes());
        }
        let r = log.report(log.session_id());
        assert_eq!(r.counts, Counts::default());
        assert_eq!((r.context_tokens, r.output_tokens), (0, 0));
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::default(), "")
        );
        assert_eq!(r.last_activity_at.to_string(), "2026-05-30T10:00:00.1Z");
    }

    /// 0.146 subagent with the parent's history (v2 `fork_turns` defaulting to all): a
    /// subagent of the spawning thread, the copied turn and its `spawn_agent` call skipped.
    #[test]
    fn v0_146_subagent_with_history_counts_only_its_own_work() {
        let log = parse("v0.146-subagent-fork-all.jsonl");
        let (id, parent) = (
            "019f1000-0005-7000-8000-0000000000c2",
            "019f1000-0000-7000-8000-0000000000b1",
        );
        assert_eq!((log.session_id(), log.parent_id()), (id, parent));
        let sub = log.subagent_state(id, parent);
        assert_eq!(sub.slug, "Hopper");
        assert_eq!((sub.message_count, sub.tool_call_count), (2, 0));
        assert_eq!((sub.context_tokens, sub.output_tokens), (16_090, 90));
        assert_eq!(sub.activity, Activity::Waiting);
        assert_eq!(sub.started_at.to_string(), "2026-07-10T12:00:05Z");
        assert_eq!(sub.last_activity_at.to_string(), "2026-07-10T12:00:12.002Z");
    }

    /// 0.146 fresh subagent (no copy): everything counts; its parent from `thread_spawn`.
    #[test]
    fn v0_146_fresh_subagent() {
        let log = parse("v0.146-subagent-spawn.jsonl");
        assert_eq!(log.parent_id(), "019f1000-0000-7000-8000-0000000000b1");
        assert_eq!(log.forked_from(), "");
        let sub = log.subagent_state(log.session_id(), log.parent_id());
        assert_eq!(sub.slug, "Noether");
        assert_eq!((sub.message_count, sub.tool_call_count), (2, 1));
        assert_eq!((sub.context_tokens, sub.output_tokens), (5070, 120));
        assert_eq!(sub.model, "gpt-5.4-mini");
    }

    /// The parent's side: an ordinary session, its spawn and wait calls are tool calls.
    #[test]
    fn v0_146_parent_is_a_session() {
        let log = parse("v0.146-parent-spawn-call.jsonl");
        assert_eq!((log.parent_id(), log.forked_from()), ("", ""));
        let r = log.report(log.session_id());
        assert_eq!((r.counts.messages, r.counts.tool_calls), (1, 3));
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Working, "wait")
        );
    }

    /// 0.58 fork (no `forked_from_id`, no turn ids): the parent's meta right after the
    /// fork's own starts the copy, and the first line after a pause ends it.
    #[test]
    fn v0_58_fork_copy_ends_after_the_burst() {
        let log = parse("codex-0.58-fork.jsonl");
        assert_eq!(log.forked_from(), "0199a0a0-0058-7000-8000-00000000a0a1");
        assert_eq!(log.parent_id(), "");
        let r = log.report(log.session_id());
        assert_eq!(r.counts.messages, 1, "only the fork's own prompt");
        assert_eq!(r.working_dir, "/home/dev/svc");
        assert_eq!(r.activity, Activity::Working);
    }

    /// Parents named other ways: a top-level `parent_thread_id`; `thread_source`
    /// `subagent` with `forked_from_id` only. Subagents that name no parent (review,
    /// compact) and forks by the person are sessions of their own.
    #[test]
    fn parent_thread_from_each_field() {
        let parent_of = |meta: &str| {
            let mut log = CodexLog::new();
            log.line(meta.as_bytes());
            log.parent_id().to_owned()
        };
        assert_eq!(
            parent_of(
                r#"{"type":"session_meta","payload":{"id":"c","parent_thread_id":"p","source":"exec"}}"#
            ),
            "p"
        );
        assert_eq!(
            parent_of(
                r#"{"type":"session_meta","payload":{"id":"c","forked_from_id":"p","thread_source":"subagent"}}"#
            ),
            "p"
        );
        assert_eq!(
            parent_of(
                r#"{"type":"session_meta","payload":{"id":"c","source":{"subagent":{"thread_spawn":{"agent_role":null}}},"multi_agent_version":"v1"}}"#
            ),
            ""
        );
        assert_eq!(
            parent_of(
                r#"{"type":"session_meta","payload":{"id":"c","source":{"subagent":"review"}}}"#
            ),
            ""
        );
        assert_eq!(
            parent_of(
                r#"{"type":"session_meta","payload":{"id":"c","forked_from_id":"p","thread_source":"user","source":"cli"}}"#
            ),
            ""
        );
        assert_eq!(
            parent_of(r#"{"type":"session_meta","payload":{"id":"c","source":{"other":"x"}}}"#),
            ""
        );
    }

    #[test]
    fn uuid7_times() {
        assert_eq!(
            uuid7_ms("019f1000-0005-7000-8000-0000000000c2"),
            Some(0x019f_1000_0005)
        );
        assert_eq!(uuid7_ms("0199a7c3-0000-4000-8000-00000000c0de"), None, "v4");
        assert_eq!(uuid7_ms("019f1000-0005-7000-8000-0000000000"), None);
        assert_eq!(uuid7_ms("019f1000-0005-7000-8000-0000000000é"), None);
        assert_eq!(uuid7_ms("019f1000x0005-7000-8000-0000000000c2"), None);
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
