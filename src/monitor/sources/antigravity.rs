//! Antigravity CLI (`agy`) conversations, under the data root `~/.gemini/antigravity-cli`:
//!
//! - `brain/<conversation id>/.system_generated/logs/transcript.jsonl`: one JSON object a
//!   line per step, appended as steps complete (the display log). `transcript_full.jsonl`
//!   beside it repeats the same steps and is not read (it would count everything twice);
//!   nor are `logs/chunks/` and `.system_generated/messages/`.
//! - `brain/<parent id>/.system_generated/subagents/<child id>.json`, rewritten whole
//!   (1.2.17): `{conversationId, subagentDescriptor: {typeName, role}, state}`. The child
//!   runs as a conversation of its own (its own transcript), shown as a subagent of the
//!   parent.
//! - `cache/last_conversations.json`, rewritten whole: `{"<absolute cwd>": "<conversation
//!   id>"}`, the latest conversation per working directory: the only place the working
//!   directory is written.
//! - `settings.json`: its `model` (a display name) is the default model.
//!
//! A step: `{step_index, source, type, status, created_at, content?, thinking?,
//! tool_calls?: [{name, args}]}`; `source` `USER_EXPLICIT`, `MODEL` or `SYSTEM`; `status`
//! `DONE`, or `RUNNING` while the step runs; `created_at` RFC 3339, seconds. A step written
//! again under the same `step_index` (a `RUNNING` step completed) replaces the earlier one's
//! counts.
//!
//! What becomes of each field:
//!
//! - id: the conversation id (the `brain` directory's name; `agy --conversation <id>`).
//! - workingDir: the working directory `cache/last_conversations.json` maps to this
//!   conversation (only the latest conversation of each directory is there); else the `Cwd`
//!   argument of the latest `run_command` call; else empty. A change of that file shows at
//!   the conversation's next step.
//! - model: the newest `USER_SETTINGS_CHANGE` notice in a `USER_INPUT` step ("changed
//!   setting `Model Selection` from X to Y": Y, a display name such as "Gemini 3.5 Flash
//!   (Low)"); no step names the model otherwise, so a conversation without such a notice
//!   shows `settings.json`'s `model`. The prompt text around the notice is scanned, never
//!   kept.
//! - startedAt: the first step's `created_at`; lastActivityAt: the latest step's, except
//!   that it stays at the start of a wait while the conversation keeps waiting (a trailing
//!   `CHECKPOINT` does not move it).
//! - activity: `RUNNING` step, `USER_INPUT`, a `PLANNER_RESPONSE` with `tool_calls`, a
//!   tool-result step (any other `MODEL` step type: `CODE_ACTION`, `RUN_COMMAND`,
//!   `VIEW_FILE`, …): `working`; a completed `PLANNER_RESPONSE` without `tool_calls`:
//!   `waiting` (the turn's end, stated: steps are written complete); an `ask_question` call:
//!   `waiting`, with that tool. `SYSTEM` steps (`CONVERSATION_HISTORY`, `CHECKPOINT`,
//!   `SYSTEM_MESSAGE`, `EPHEMERAL_MESSAGE`) change nothing.
//! - currentTool: the last call's `name` of a `PLANNER_RESPONSE` with `tool_calls`, until
//!   the next step.
//! - messageCount: `USER_INPUT` steps and `PLANNER_RESPONSE` steps with `content`;
//!   toolCallCount: entries of `tool_calls`.
//! - contextTokens, outputTokens: `input_tokens + cache_read_tokens` of the latest step
//!   that has them, and the sum of `output_tokens`; no captured transcript carries them (one
//!   third-party reader expects them), so they are usually 0.
//!
//! # What cannot be known
//! Permission prompts ("Do you want to proceed?") are not in the transcript: a call waiting
//! for approval reads `working`. `agy` writes no end: a conversation goes idle, then stale
//! (`presence/<id>.lock` is never removed, so it says nothing). Tokens and the model id live
//! in `conversations/<id>.db` as protobuf: not read. The git branch.
//!
//! # Differences from Go (`sources/antigravity`)
//! Go reads `~/.antigravitycli/<uuid>.json` files with Gemini-style `messages` and a
//! `last-conversation-id` file, a schema its own comment calls inferred. No released `agy`
//! writes them (`.antigravitycli/` was a per-workspace config directory of agy 1.0.x), so
//! that layout is not read here at all; Go's cwd guess from a single running `agy` process
//! is replaced by `cache/last_conversations.json`.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::lenient::{LooseI64, LooseStr, Obj, Objects};
use super::{Counts, LineResult, Recent, Report, parse_time};
use crate::wire::{Activity, SubagentState, Timestamp};

/// The most bytes of a subagent record or `last_conversations.json` read: 1 MiB.
pub(crate) const MAX_RECORD: u64 = 1 << 20;

/// A step's `content`: whether it has text, and the model a settings notice in it names.
/// The text itself is scanned while parsing and never kept.
#[derive(Debug, Default)]
struct Content {
    present: bool,
    model: Option<String>,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content {
                    present: !v.trim().is_empty(),
                    model: model_change(v),
                })
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
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                de::IgnoredAny.visit_seq(seq)?;
                Ok(Content::default())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
                de::IgnoredAny.visit_map(map)?;
                Ok(Content::default())
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The model a `<USER_SETTINGS_CHANGE>` notice switches to: "… setting `Model Selection`
/// from X to Y. …" → Y.
fn model_change(text: &str) -> Option<String> {
    let start = text.rfind("<USER_SETTINGS_CHANGE>")?;
    let notice = &text[start..];
    let notice = &notice[..notice
        .find("</USER_SETTINGS_CHANGE>")
        .unwrap_or(notice.len())];
    let at = notice.find("`Model Selection` from ")?;
    let rest = &notice[at..];
    let to = rest.find(" to ")? + " to ".len();
    let rest = &rest[to..];
    let end = rest
        .find(". ")
        .or_else(|| rest.find('\n'))
        .unwrap_or(rest.len());
    let model = rest[..end].trim().trim_end_matches('.').trim();
    (!model.is_empty() && model.len() <= 200).then(|| model.to_owned())
}

#[derive(Deserialize)]
struct Step {
    #[serde(default)]
    step_index: Option<LooseI64>,
    #[serde(default)]
    source: LooseStr,
    #[serde(rename = "type", default)]
    kind: LooseStr,
    #[serde(default)]
    status: LooseStr,
    #[serde(default)]
    created_at: LooseStr,
    #[serde(default)]
    content: Content,
    #[serde(default)]
    tool_calls: Objects<Call>,
    #[serde(default)]
    input_tokens: Option<LooseI64>,
    #[serde(default)]
    cache_read_tokens: LooseI64,
    #[serde(default)]
    output_tokens: LooseI64,
}

#[derive(Deserialize)]
struct Call {
    #[serde(default)]
    name: LooseStr,
    #[serde(default)]
    args: Obj<Args>,
}

#[derive(Deserialize)]
struct Args {
    /// `run_command`'s working directory, JSON-encoded inside the string.
    #[serde(rename = "Cwd", default)]
    cwd: LooseStr,
}

/// What one step added to the totals (to replace it when the step is written again).
#[derive(Debug, Clone, Copy, Default)]
struct Added {
    messages: i64,
    tool_calls: i64,
    output: i64,
}

/// The parser of one Antigravity CLI transcript.
#[derive(Debug, Default)]
pub(crate) struct AgyLog {
    conversation: String,
    activity: Activity,
    current_tool: String,
    messages: i64,
    tool_calls: i64,
    output_tokens: i64,
    context_tokens: i64,
    model: String,
    cwd: String,
    steps: Recent<Added>,
    started_at: Timestamp,
    last_at: Timestamp,
}

impl AgyLog {
    /// A parser for the transcript of conversation `conversation`.
    pub(crate) fn new(conversation: &str) -> Self {
        AgyLog {
            conversation: conversation.to_owned(),
            ..Self::default()
        }
    }

    /// The conversation id (from the path).
    pub(crate) fn session_id(&self) -> &str {
        &self.conversation
    }

    /// Feeds one line.
    pub(crate) fn line(&mut self, line: &[u8]) -> LineResult {
        let Ok(step) = serde_json::from_slice::<Step>(line) else {
            return LineResult::Invalid;
        };
        let Some(kind) = step.kind.as_deref() else {
            return LineResult::Unknown;
        };
        let was_waiting = self.activity == Activity::Waiting;
        let running = step.status.as_deref() == Some("RUNNING");
        let mut added = Added::default();
        let source = step.source.as_deref().unwrap_or("");
        let mut moved = true;
        match kind {
            "USER_INPUT" => {
                added.messages = 1;
                self.activity = Activity::Working;
                self.current_tool.clear();
                if let Some(model) = &step.content.model {
                    model.clone_into(&mut self.model);
                }
            }
            "PLANNER_RESPONSE" => {
                if step.content.present {
                    added.messages = 1;
                }
                let calls = &step.tool_calls.0;
                added.tool_calls = i64::try_from(calls.len()).unwrap_or(i64::MAX);
                for call in calls {
                    if call.name.as_deref() == Some("run_command") {
                        let cwd = call
                            .args
                            .0
                            .as_ref()
                            .and_then(|a| a.cwd.as_deref())
                            .and_then(|c| serde_json::from_str::<String>(c).ok())
                            .filter(|c| !c.is_empty());
                        if let Some(cwd) = cwd {
                            self.cwd = cwd;
                        }
                    }
                }
                let last = calls.last().and_then(|c| c.name.as_deref()).unwrap_or("");
                if calls
                    .iter()
                    .any(|c| c.name.as_deref() == Some("ask_question"))
                    && !running
                {
                    self.activity = Activity::Waiting;
                    "ask_question".clone_into(&mut self.current_tool);
                } else if !calls.is_empty() {
                    self.activity = Activity::Working;
                    last.clone_into(&mut self.current_tool);
                } else if running {
                    self.activity = Activity::Working;
                    self.current_tool.clear();
                } else {
                    self.activity = Activity::Waiting;
                    self.current_tool.clear();
                }
                if let Some(input) = &step.input_tokens {
                    self.context_tokens = input.0 + step.cache_read_tokens.0;
                }
                added.output = step.output_tokens.0;
            }
            _ if source == "MODEL" => {
                // A tool's result: the next model call follows.
                self.activity = Activity::Working;
                self.current_tool.clear();
            }
            _ if source == "SYSTEM" => moved = false,
            _ => return LineResult::Unknown,
        }
        if running && kind != "PLANNER_RESPONSE" && moved {
            self.activity = Activity::Working;
        }
        self.count(step.step_index.map(|i| i.0), added);
        if let Some(at) = parse_time(step.created_at.as_deref()) {
            if self.started_at.is_zero() || at < self.started_at {
                self.started_at = at;
            }
            let still_waiting = was_waiting && self.activity == Activity::Waiting;
            if moved && !still_waiting && at > self.last_at {
                self.last_at = at;
            }
            if self.last_at.is_zero() {
                self.last_at = at;
            }
        }
        LineResult::Used
    }

    /// Adds a step's counts, replacing what the same step added before.
    fn count(&mut self, index: Option<i64>, added: Added) {
        let mut before = Added::default();
        if let Some(index) = index.map(|i| i.to_string()) {
            match self.steps.get_mut(&index) {
                Some(old) => {
                    before = *old;
                    *old = added;
                }
                None => {
                    self.steps.insert(&index, added);
                }
            }
        }
        self.messages += added.messages - before.messages;
        self.tool_calls += added.tool_calls - before.tool_calls;
        self.output_tokens += added.output - before.output;
    }

    /// The conversation as this transcript has it, with `id` as its id and `cwd` (from
    /// `last_conversations.json`, if it names it) as its working directory.
    pub(crate) fn report(&self, id: &str, cwd: Option<&str>) -> Report {
        Report {
            session_id: id.to_owned(),
            model: self.model.clone(),
            working_dir: cwd.map_or_else(|| self.cwd.clone(), str::to_owned),
            activity: self.activity.clone(),
            current_tool: self.current_tool.clone(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens,
            counts: Counts {
                messages: self.messages,
                tool_calls: self.tool_calls,
                compactions: 0,
            },
            started_at: self.started_at,
            last_activity_at: self.last_at,
            ..Report::default()
        }
    }

    /// This transcript as a subagent of `record.parent`.
    pub(crate) fn subagent_state(&self, record: &SubagentRecord) -> SubagentState {
        let r = self.report(&self.conversation, None);
        let done = record.finished();
        let activity = match (&r.activity, done) {
            (_, true) => Activity::Terminal,
            (Activity::Waiting, false) if r.current_tool.is_empty() => Activity::Idle,
            (a, false) => a.clone(),
        };
        SubagentState {
            id: self.conversation.clone(),
            parent_id: record.parent.clone(),
            slug: record.kind.clone(),
            activity,
            current_tool: if done { String::new() } else { r.current_tool },
            started_at: r.started_at,
            last_activity_at: r.last_activity_at,
            model: r.model,
            context_tokens: r.context_tokens,
            output_tokens: r.output_tokens,
            message_count: r.counts.messages,
            tool_call_count: r.counts.tool_calls,
            completed_at: if done {
                r.last_activity_at
            } else {
                Timestamp::ZERO
            },
        }
    }
}

/// A subagent record: which conversation is a subagent of which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubagentRecord {
    /// The child conversation's id.
    pub(crate) child: String,
    /// The parent conversation's id (the directory the record lies in).
    pub(crate) parent: String,
    /// `subagentDescriptor.typeName` (the subagent's kind), the slug.
    pub(crate) kind: String,
    /// `state`, e.g. `SUBAGENT_STATE_ALIVE`.
    pub(crate) state: String,
}

impl SubagentRecord {
    /// Whether the record says the subagent is over: any state but `…_ALIVE` (or none,
    /// or `…_UNSPECIFIED`).
    pub(crate) fn finished(&self) -> bool {
        !(self.state.is_empty()
            || self.state.ends_with("_ALIVE")
            || self.state.ends_with("_UNSPECIFIED"))
    }

    /// Parses a record of the subagents directory of conversation `parent`; `None` if the
    /// text is no such record.
    pub(crate) fn parse(text: &[u8], parent: &str) -> Option<SubagentRecord> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default)]
            conversation_id: LooseStr,
            #[serde(default)]
            subagent_descriptor: Obj<Descriptor>,
            #[serde(default)]
            state: LooseStr,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Descriptor {
            #[serde(default)]
            type_name: LooseStr,
        }
        let raw: Raw = serde_json::from_slice(text).ok()?;
        let child = raw
            .conversation_id
            .0
            .filter(|c| !c.is_empty() && c != parent)?;
        Some(SubagentRecord {
            child,
            parent: parent.to_owned(),
            kind: raw
                .subagent_descriptor
                .0
                .and_then(|d| d.type_name.0)
                .unwrap_or_default(),
            state: raw.state.0.unwrap_or_default(),
        })
    }
}

/// The `model` of Antigravity CLI's `settings.json` (empty if none); `None` if the text is
/// not a JSON object.
pub(crate) fn parse_settings_model(text: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Settings {
        #[serde(default)]
        model: LooseStr,
    }
    let settings: Settings = serde_json::from_slice(text).ok()?;
    Some(
        settings
            .model
            .0
            .filter(|m| m.len() <= 200)
            .unwrap_or_default(),
    )
}

/// `cache/last_conversations.json` reversed: conversation id → working directory. `None` if
/// the text is not a JSON object; entries whose value is not a string are skipped.
pub(crate) fn parse_workspaces(text: &[u8]) -> Option<HashMap<String, String>> {
    let map: HashMap<String, serde_json::Value> = serde_json::from_slice(text).ok()?;
    Some(
        map.into_iter()
            .filter_map(|(cwd, id)| match id {
                serde_json::Value::String(id) if !id.is_empty() && !cwd.is_empty() => {
                    Some((id, cwd))
                }
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sample(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/monitor/antigravity")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    fn read(name: &str) -> AgyLog {
        let mut log = AgyLog::new("3d2c1b0a-0000-4000-8000-00000000a001");
        for line in sample(name).lines() {
            assert_eq!(log.line(line.as_bytes()), LineResult::Used, "{line}");
        }
        log
    }

    #[test]
    fn v1_0_16_tools_then_reply() {
        let log = read("v1.0.16-transcript-tools.jsonl");
        let r = log.report("x", None);
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!(r.current_tool, "");
        assert_eq!((r.counts.messages, r.counts.tool_calls), (2, 2));
        assert_eq!(r.model, "Gemini 3.5 Flash (Low)");
        assert_eq!(r.working_dir, "/home/dev/work", "run_command's Cwd");
        assert_eq!(r.started_at.to_string(), "2026-07-01T08:00:00Z");
        assert_eq!(
            r.last_activity_at.to_string(),
            "2026-07-01T08:00:05Z",
            "the reply; the checkpoint does not move it"
        );
        assert_eq!(log.report("x", Some("/w")).working_dir, "/w");
    }

    #[test]
    fn each_step_of_the_tool_turn() {
        let lines: Vec<String> = sample("v1.0.16-transcript-tools.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        let mut log = AgyLog::new("c");
        let expect = [
            (Activity::Working, ""),
            (Activity::Working, ""),
            (Activity::Working, "write_to_file"),
            (Activity::Working, ""),
            (Activity::Working, "run_command"),
            (Activity::Working, ""),
            (Activity::Waiting, ""),
            (Activity::Waiting, ""),
        ];
        for (line, (activity, tool)) in lines.iter().zip(expect) {
            log.line(line.as_bytes());
            let r = log.report("c", None);
            assert_eq!(
                (r.activity, r.current_tool.as_str()),
                (activity, tool),
                "{line}"
            );
        }
    }

    #[test]
    fn running_step_completed_under_the_same_index() {
        let mut log = read("v1.0-transcript-two-turns.jsonl");
        let r = log.report("x", None);
        assert_eq!(r.activity, Activity::Working, "the last reply is RUNNING");
        assert_eq!(r.counts.messages, 3);
        assert_eq!(r.model, "");
        log.line(br#"{"step_index":6,"source":"MODEL","type":"PLANNER_RESPONSE","status":"DONE","created_at":"2026-06-28T09:05:09Z","content":"(second reply)"}"#);
        let r = log.report("x", None);
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!(r.counts.messages, 4, "the step counted once");
        assert_eq!(r.last_activity_at.to_string(), "2026-06-28T09:05:09Z");
    }

    #[test]
    fn tokens_ask_question_and_bad_lines() {
        let log = read("v1.2-unconfirmed-transcript-tokens.jsonl");
        let r = log.report("x", None);
        assert_eq!((r.context_tokens, r.output_tokens), (1200 + 8000, 150));
        let mut log = AgyLog::new("c");
        log.line(br#"{"step_index":0,"source":"MODEL","type":"PLANNER_RESPONSE","status":"DONE","created_at":"2026-07-01T08:00:01Z","tool_calls":[{"name":"ask_question","args":{}}]}"#);
        let r = log.report("c", None);
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Waiting, "ask_question")
        );
        assert_eq!(log.line(b"{not json"), LineResult::Invalid);
        assert_eq!(log.line(br#"{"step_index":1}"#), LineResult::Unknown);
        assert_eq!(
            log.line(br#"{"type":"NEW_KIND","source":"OTHER"}"#),
            LineResult::Unknown
        );
        // Odd field types do not fail the line.
        assert_eq!(
            log.line(br#"{"type":"USER_INPUT","source":"USER_EXPLICIT","content":7,"tool_calls":"x","created_at":5}"#),
            LineResult::Used
        );
    }

    #[test]
    fn model_change_notice() {
        let t = "<USER_REQUEST>\nto be or not. \n</USER_REQUEST>\n<USER_SETTINGS_CHANGE>\nThe user changed setting `Model Selection` from Gemini 3.5 Flash (Low) to Claude Sonnet 4.6 (Thinking). No need to comment on this change.\n</USER_SETTINGS_CHANGE>";
        assert_eq!(
            model_change(t).as_deref(),
            Some("Claude Sonnet 4.6 (Thinking)")
        );
        assert_eq!(model_change("<USER_REQUEST>to x. </USER_REQUEST>"), None);
    }

    #[test]
    fn records() {
        let r = SubagentRecord::parse(
            sample("v1.2.17-subagent-record.json").as_bytes(),
            "3d2c1b0a-0000-4000-8000-00000000a001",
        )
        .unwrap();
        assert_eq!(r.child, "3d2c1b0a-0000-4000-8000-00000000c001");
        assert_eq!(r.kind, "research");
        assert!(!r.finished());
        assert!(SubagentRecord::parse(b"{}", "p").is_none());
        assert!(SubagentRecord::parse(b"[1", "p").is_none());
        let done = SubagentRecord {
            state: "SUBAGENT_STATE_COMPLETED".into(),
            ..r
        };
        assert!(done.finished());
        let mut log = read("v1.0.16-transcript-tools.jsonl");
        log.conversation = done.child.clone();
        let sub = log.subagent_state(&done);
        assert_eq!(sub.activity, Activity::Terminal);
        assert_eq!(sub.completed_at.to_string(), "2026-07-01T08:00:05Z");

        let w = parse_workspaces(sample("v1.0-last_conversations.json").as_bytes()).unwrap();
        assert_eq!(
            w.get("3d2c1b0a-0000-4000-8000-00000000a002")
                .map(String::as_str),
            Some("/home/dev/other")
        );
        assert!(parse_workspaces(b"[]").is_none());
        assert_eq!(
            parse_settings_model(br#"{"model":"Gemini 3.5 Flash (Low)","theme":{}}"#).as_deref(),
            Some("Gemini 3.5 Flash (Low)")
        );
        assert_eq!(parse_settings_model(br#"{"model":7}"#).as_deref(), Some(""));
        assert!(parse_settings_model(b"[").is_none());
        assert_eq!(parse_workspaces(br#"{"/a":7,"/b":"id"}"#).unwrap().len(), 1);
    }
}
