//! Claude Code transcripts: `<root>/<encoded cwd>/<session uuid>.jsonl`, and subagent
//! transcripts under `<session uuid>/subagents/` (or, before that layout, `agent-<id>.jsonl`
//! beside the session logs).
//!
//! One JSON object a line. What becomes of each field:
//!
//! - id: the first `sessionId` in the file, else the file stem (the monitor fixes it when
//!   the session is first reported; a second file naming a session already given to another
//!   file, as a resumed session's copy of earlier lines may, is named by its stem instead);
//!   `cwd` → workingDir, `gitBranch` → branch, `slug`.
//! - model: the latest assistant `message.model`, ignoring `<synthetic>` (lines Claude Code
//!   writes in the model's place).
//! - contextTokens: `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`
//!   of the latest assistant usage; maxContextTokens from the model table, widened to the
//!   window the log shows (see `models.rs`: transcripts omit the `[1m]` of 1M-context
//!   sessions), so utilisation never exceeds 1.
//! - outputTokens: the sum of `output_tokens` over distinct `message.id`s, the last line of
//!   each id winning (Claude Code writes one line per content block, repeating the usage).
//! - messageCount: distinct messages: prompts and tool results by `uuid`, assistant lines by
//!   `message.id`. Local-command, meta, compaction-summary and interrupt lines are no
//!   messages.
//! - toolCallCount: distinct `tool_use` ids; currentTool: the newest `tool_use` whose
//!   `tool_result` has not arrived (cleared when it does, or when the turn ends).
//! - compactionCount: `system` lines with `subtype` `compact_boundary`.
//! - startedAt / lastActivityAt: the earliest and latest line times (lines are not always in
//!   time order); while the session waits, only a line that ends the wait, or a new
//!   message, moves lastActivityAt (a further line of the message that ended the turn does
//!   not), so a wait keeps the time it began.
//!
//! # Record shapes and what they mean
//! Seen in public transcripts and log readers' test data of Claude Code 1.0.24 to 2.1.252
//! (the `version` field of each line); the samples in `tests/data/monitor/claude/` model
//! each shape, the version in their names.
//!
//! | line | versions seen | effect |
//! |------|---------------|--------|
//! | `user`, string content (a typed prompt) or `text`/`image` blocks | all | a turn starts: `working` |
//! | `user` with `tool_result` blocks (`toolUseResult` beside them: a string, or an object) | all | `working`; the tool is no longer pending |
//! | `assistant` with a `tool_use` block, or `stop_reason` `tool_use` | all | `working` |
//! | `assistant` with `thinking` only | 2.0.x–2.1.x | `working` |
//! | `assistant` with a `text` block, no `tool_use`, `stop_reason` `null` | 1.0.24, 2.0.26, 2.0.52, 2.0.76, 2.1.x (most lines of most versions) | the turn's end: `waiting` |
//! | `assistant` with `stop_reason` `end_turn` or `stop_sequence` | a few lines of some versions; every line of a final reply from 2.1.92 (2.1.233 seen) | the turn's end: `waiting` |
//! | `assistant` with `stop_reason` `tool_use` on its `thinking` or `text` line | 2.1.92, 2.1.233 (the final `stop_reason` on each line of the message) | `working`: a tool call follows |
//! | `assistant` with `isApiErrorMessage: true` (model `<synthetic>`, `error`, `apiErrorStatus`; `stop_reason` absent or `stop_sequence`) | 2.1.x (2.1.226) | the API failed, the turn is over: `waiting` |
//! | `user` `[Request interrupted by user]`, `[Request interrupted by user for tool use]` (a `text` block, `interruptedMessageId` on some) | 2.1.214, 2.1.246, 2.1.252 | the person stopped the turn: `waiting`, nothing pending |
//! | `system` `turn_duration` (`durationMs`) | 2.1.x | written after the turn: `waiting` |
//! | `system` `stop_hook_summary` (`hookCount`, `preventedContinuation`) | 2.1.x, with Stop hooks | written after the turn: `waiting` |
//! | `system` without `subtype` (`content` "Stop … completed", `level`) | 1.0.64 | a hook's output: nothing |
//! | `system` `local_command` (`<command-name>`, `<local-command-stdout>` in `content`) | 2.1.x | a local command: nothing |
//! | `system` `api_error` (`retryAttempt`, `retryInMs`) | 2.1.x | a retry: nothing (still `working`) |
//! | `system` `compact_boundary` | 2.x | compactionCount + 1 |
//! | `user` `isMeta: true` (local-command caveat, skill or hook text) | 2.0.28–2.1.x | no prompt: nothing |
//! | `user` `isCompactSummary: true` | 2.0.28–2.1.x | no prompt: nothing |
//! | `user` `<command-name>`, `<command-message>`, `<local-command-stdout>`, `<local-command-caveat>` (string content) | 1.0.89, 2.0.28 | a local command (`/model`, `/exit`…): nothing |
//! | `user` `<bash-input>`, `<bash-stdout>`, `<bash-stderr>` | readers' fixtures (version not recorded) | bash mode (`!`), run locally: nothing |
//! | `user` `<task-notification>` with `<task-id>` (`origin.kind` `task-notification`) | 2.1.x | a background task stopped and the model is told: `working`, and the subagent of that id is finished |
//! | `user` `toolUseResult` `{agentId, status: "completed", …}` | 2.0.52, 2.1.248 | the subagent of that id is finished (`terminal`) |
//! | `user` `toolUseResult` `{agentId, status: "async_launched", isAsync}` | 2.1.x | a background agent started; it runs on |
//! | sidechain whose first prompt is `Warmup` (`isSidechain`, `agentId`) | 2.0.26–2.0.76 | Claude Code's cache pre-warming: no subagent |
//! | `agentId` of a kind word, `-` and hex (`acompact-5e0c1a`: `subagents/agent-acompact-*.jsonl`) | 2.1.38, 2.1.39 | Claude Code's own compaction run: no subagent (the compaction counts from `compact_boundary`) |
//! | `summary`, `file-history-snapshot`, `queue-operation`, `progress`, `attachment`, `last-prompt`, `ai-title`, `permission-mode`, … | 1.0.24 (`summary`)–2.1.x | bookkeeping: nothing; a file of only these is no session |
//!
//! A turn's end is never read from one field alone: most versions write `stop_reason: null`
//! on every line, the last included, and `end_turn` on few or none.
//!
//! ## A text reply is a tentative end
//! Claude Code writes each content block of a message as its own line once the block is
//! complete, so a message of text then a tool call is a `text` line followed by a
//! `tool_use` line once the tool's input has streamed. Up to 2.1.39 nothing on the text
//! line tells it from a final reply: in real 2.1.38 and 2.1.39 transcripts every line has
//! `stop_reason: null`, and `usage.output_tokens` is the streaming count at the time
//! (1 to 13 on text lines followed by a tool call, and 1 to 8 on most final replies too);
//! `requestId` and the other fields are the same. Newer writers (2.1.233 seen) put the
//! message's final `stop_reason` (`tool_use`, `end_turn`) on every line, which is read as
//! such. A text reply with no stated end is therefore reported as a *tentative* `waiting`
//! ([`Report::tentative`]), which the monitor publishes only after
//! `MonitorBuilder::turn_end_delay` (default 3 s) without a line that changes the
//! activity; a `tool_use` line within it keeps the session `working` throughout. In the
//! real transcripts the `tool_use` line followed its text line by a median 1.0 s, over 3 s
//! for 22 % of such messages and up to 72 s (a long `Write`): those still show `waiting`
//! for the rest of the gap. A text block of only white space (2.1.38 and 2.1.39 write
//! `"\n\n"` before a `thinking` block) ends nothing.
//!
//! # Subagents
//! Lines with `isSidechain: true` in a session's own file, whole files under
//! `<session uuid>/subagents/`, and `agent-<id>.jsonl` files beside the session logs (their
//! parent named by their lines' `sessionId`) are [`SubagentState`]s of the parent session,
//! never sessions of their own. A subagent is `terminal` once the parent's log reports its
//! result (a `toolUseResult` naming its `agentId`, or a `<task-notification>` naming it as
//! `<task-id>`), or once its own log says `end_turn` or is interrupted; a subagent whose own
//! log ends with a text reply the parent has not taken yet is `idle`.
//!
//! # Privacy
//! Text is classified while it is parsed (a prompt, a local command, an interrupt, …) and
//! never kept; of a task notification only the task id is kept.
//!
//! # Bounded memory
//! Deduplication remembers only the last [`RECENT_IDS`](super::RECENT_IDS) message, user
//! line and tool ids of a file, not all of them: Claude Code writes the lines of one message
//! one after another, so repeats are always recent. A 1 GiB transcript costs a few KiB.
//! Finished agents are remembered up to 64 a file, sidechains up to 16.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

use super::{LineResult, PendingTools, Recent, Report, parse_time, set_if_some};

mod fast;
use crate::monitor::models::claude_window;
use crate::wire::{Activity, SubagentState, Timestamp};

/// The sidechain id used for `isSidechain` lines that carry no `agentId`.
const SIDECHAIN: &str = "sidechain";
/// At most this many sidechain subagents are tracked per file.
const MAX_SIDECHAINS: usize = 16;

/// Text fields borrow from the line when they hold no escapes (most do): no allocation per
/// record for them.
type Text<'a> = Option<Str<'a>>;

/// A string borrowed from the input when possible (serde's own `Cow` impl always copies).
/// Compared (in tests) by content, not by whether it is borrowed.
#[cfg_attr(any(test, fuzzing), derive(Debug))]
struct Str<'a>(Cow<'a, str>);

#[cfg(any(test, fuzzing))]
impl PartialEq for Str<'_> {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

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

#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
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
    /// A line Claude Code wrote for itself (local-command caveats, skill and hook text).
    #[serde(default)]
    is_meta: Flag,
    /// The summary a compaction continues from.
    #[serde(default)]
    is_compact_summary: Flag,
    /// An assistant line Claude Code wrote in the model's place when the API call failed.
    #[serde(default)]
    is_api_error_message: Flag,
    #[serde(default)]
    tool_use_result: AgentResult,
    #[serde(borrow)]
    message: Option<Message<'a>>,
}

/// A boolean flag that is `true` only when the log says exactly `true`; any other value
/// (absent, `null`, a string) is `false` rather than a reason to drop the line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Flag(Loose::deserialize(deserializer)? == Loose::True))
    }
}

/// A value read only for what it is: `true`, or anything else (skipped unread).
#[derive(PartialEq, Eq)]
enum Loose {
    True,
    Other,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Loose, E> {
                Ok(if v { Loose::True } else { Loose::Other })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose, A::Error> {
                IgnoredAny::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Loose::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Loose, A::Error> {
                IgnoredAny::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Loose::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `toolUseResult` on a user line: for an agent tool (`Task`, `Agent`) an object naming the
/// agent's `agentId` and `status` (`completed`, or `async_launched` for a background agent
/// still running); for other tools a string, an array or an object without them. Only the
/// two fields are read; the rest (prompt, output, usage) is skipped.
#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
#[derive(Default)]
struct AgentResult {
    agent_id: Option<String>,
    status: Option<String>,
}

impl<'de> Deserialize<'de> for AgentResult {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AgentResult;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tool result")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<AgentResult, A::Error> {
                let mut out = AgentResult::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    let field = match &*key {
                        "agentId" => &mut out.agent_id,
                        "status" => &mut out.status,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *field = map.next_value::<Id>()?.0;
                }
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<AgentResult, A::Error> {
                IgnoredAny::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(AgentResult::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AgentResult, E> {
                Ok(AgentResult::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<AgentResult, E> {
                Ok(AgentResult::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<AgentResult, E> {
                Ok(AgentResult::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<AgentResult, E> {
                Ok(AgentResult::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<AgentResult, E> {
                Ok(AgentResult::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<AgentResult, E> {
                Ok(AgentResult::default())
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A short id-like string (at most [`MAX_ID`] bytes), or `None` for any other value.
#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
struct Id(Option<String>);

/// Longer "ids" are not ids: they are not kept.
const MAX_ID: usize = 128;

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an id")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(
                    (!v.is_empty() && v.len() <= MAX_ID).then(|| v.to_owned())
                ))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Id, E> {
                Ok(Id(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Id, E> {
                Ok(Id(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Id, E> {
                Ok(Id(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Id, E> {
                Ok(Id(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Id, E> {
                Ok(Id(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Id, A::Error> {
                IgnoredAny::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Id(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Id, A::Error> {
                IgnoredAny::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Id(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
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

#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
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

/// What a piece of user text is, decided while parsing; the text itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TextKind {
    /// Anything a person (or a queued prompt) asked: a new turn.
    Prompt,
    /// A local command's record, not sent to the model: `<command-name>`,
    /// `<command-message>`, `<command-args>`, `<local-command-stdout>`,
    /// `<local-command-stderr>`, `<local-command-caveat>`, the caveat sentence older
    /// versions wrote, or bash mode's (`!`) `<bash-input>`, `<bash-stdout>`,
    /// `<bash-stderr>`.
    LocalCommand,
    /// `[Request interrupted by user]` or `[Request interrupted by user for tool use]`: the
    /// turn was cut short and the agent waits for the person.
    Interrupt,
    /// `Warmup`: the prompt of Claude Code's cache pre-warming sidechain.
    Warmup,
    /// `<task-notification>`: a background task (agent or command) stopped; the model is
    /// told, so a turn starts. Carries the task's id when it names one.
    TaskNotification(Option<String>),
    /// Only white space (2.1.x writes `"\n\n"` text blocks before `thinking` blocks).
    Blank,
    /// Not a string.
    Other,
}

/// How local-command records start.
const LOCAL_COMMAND_PREFIXES: [&str; 10] = [
    "<command-name>",
    "<command-message>",
    "<command-args>",
    "<local-command-stdout>",
    "<local-command-stderr>",
    "<local-command-caveat>",
    "Caveat: The messages below were generated by the user while running local commands",
    "<bash-input>",
    "<bash-stdout>",
    "<bash-stderr>",
];

impl TextKind {
    fn of(text: &str) -> TextKind {
        let t = text.trim_start();
        if t.is_empty() {
            TextKind::Blank
        } else if t.starts_with("[Request interrupted by user") {
            TextKind::Interrupt
        } else if LOCAL_COMMAND_PREFIXES.iter().any(|p| t.starts_with(p)) {
            TextKind::LocalCommand
        } else if t == "Warmup" {
            TextKind::Warmup
        } else if let Some(rest) = t.strip_prefix("<task-notification>") {
            let id = rest
                .split_once("<task-id>")
                .and_then(|(_, r)| r.split_once("</task-id>"))
                .map(|(id, _)| id.trim())
                .filter(|id| !id.is_empty() && id.len() <= MAX_ID)
                .map(str::to_owned);
            TextKind::TaskNotification(id)
        } else {
            TextKind::Prompt
        }
    }
}

impl<'de> Deserialize<'de> for TextKind {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextKind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextKind, E> {
                Ok(TextKind::of(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextKind, E> {
                Ok(TextKind::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextKind, E> {
                Ok(TextKind::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextKind, E> {
                Ok(TextKind::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextKind, E> {
                Ok(TextKind::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<TextKind, E> {
                Ok(TextKind::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TextKind, A::Error> {
                IgnoredAny::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(TextKind::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TextKind, A::Error> {
                IgnoredAny::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TextKind::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
/// `message.content`: a plain string (classified, never kept) or blocks.
enum Content<'a> {
    Text(TextKind),
    Blocks(Vec<Block<'a>>),
}

#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
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
    /// A `text` block's text, classified (never kept).
    text: Option<TextKind>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content<'a>, E> {
                Ok(Content::Text(TextKind::of(v)))
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

#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
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

/// Agent results remembered per file (for subagents whose own file reports later).
const MAX_FINISHED: usize = 64;

/// What a line was, for the clock: a message moves `lastActivityAt` always; bookkeeping
/// moves it only while the agent works, or when the line changes the activity.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    Message,
    Bookkeeping,
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
    /// The log itself said the turn is over (`end_turn`, `stop_sequence`, an API error, a
    /// `turn_duration` or `stop_hook_summary` line, an interrupt), not only a text reply.
    ended: bool,
    /// The first prompt was `Warmup`: Claude Code's cache pre-warming, not a subagent.
    warmup: bool,
    /// The first `agentId` of the conversation's lines (a subagent's), empty if none.
    agent_id: String,
    context_tokens: i64,
    /// The largest context seen, for the window inference of `models::claude_window`.
    largest_context: i64,
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
    /// Agents whose results arrived in this conversation, with the result's time, newest
    /// last.
    finished_agents: Vec<(String, Timestamp)>,
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
        let at = parse_time(rec.timestamp.as_deref());
        if self.session_id.is_empty() {
            set_if_some(&mut self.session_id, rec.session_id.as_deref());
        }
        if self.agent_id.is_empty() {
            set_if_some(&mut self.agent_id, rec.agent_id.as_deref());
        }
        set_if_some(&mut self.cwd, rec.cwd.as_deref());
        set_if_some(&mut self.branch, rec.git_branch.as_deref());
        set_if_some(&mut self.slug, rec.slug.as_deref());
        let before = self.activity.clone();
        let (result, line) = match rec.kind.as_deref() {
            Some("user") => (LineResult::Used, self.user(rec, at)),
            Some("assistant") => (LineResult::Used, self.assistant(rec)),
            Some("system") => (LineResult::Used, self.system(rec)),
            Some(
                "summary"
                | "progress"
                | "file-history-snapshot"
                | "queue-operation"
                | "attachment"
                | "last-prompt"
                | "ai-title"
                | "custom-title"
                | "permission-mode"
                | "mode"
                | "pr-link"
                | "tag"
                | "agent-name",
            ) => (LineResult::Used, Line::Bookkeeping),
            _ => (LineResult::Unknown, Line::Bookkeeping),
        };
        if let Some(at) = at {
            let moves =
                line == Line::Message || before == Activity::Working || self.activity != before;
            if moves {
                self.stamp(at);
            }
        }
        result
    }

    /// Moves the clock to `at`: `startedAt` is the earliest time, `lastActivityAt` the
    /// latest (a line stamped earlier than one before it never moves it back).
    fn stamp(&mut self, at: Timestamp) {
        if self.started_at.is_zero() || at < self.started_at {
            self.started_at = at;
        }
        if at > self.last_at {
            self.last_at = at;
        }
    }

    /// The turn is over: nothing runs, the agent waits for the person.
    fn end_turn(&mut self, stated: bool) {
        self.pending.clear();
        self.activity = Activity::Waiting;
        self.ended = stated;
    }

    fn finish_agent(&mut self, agent: &str, at: Option<Timestamp>) {
        if self.finished_agents.iter().any(|(a, _)| a == agent) {
            return;
        }
        if self.finished_agents.len() >= MAX_FINISHED {
            self.finished_agents.remove(0);
        }
        let at = at.unwrap_or(self.last_at);
        self.finished_agents.push((agent.to_owned(), at));
    }

    fn user(&mut self, rec: &Record, at: Option<Timestamp>) -> Line {
        let result = &rec.tool_use_result;
        if let (Some(agent), Some(status)) = (&result.agent_id, &result.status) {
            // A background agent's launch acknowledgement: the agent runs on.
            if status != "async_launched" {
                self.finish_agent(agent, at);
            }
        }
        let Some(content) = rec.message.as_ref().and_then(|m| m.content.as_ref()) else {
            return Line::Bookkeeping;
        };
        let mut prompt = false;
        let mut interrupt = false;
        let mut results = false;
        let mut warmup = false;
        match content {
            Content::Text(kind) => match kind {
                TextKind::Prompt | TextKind::Blank | TextKind::Other => prompt = true,
                TextKind::Warmup => (prompt, warmup) = (true, true),
                TextKind::Interrupt => interrupt = true,
                TextKind::TaskNotification(task) => {
                    if let Some(task) = task {
                        self.finish_agent(task, at);
                    }
                    prompt = true;
                }
                TextKind::LocalCommand => {}
            },
            Content::Blocks(blocks) => {
                for block in blocks {
                    match block.kind.as_deref() {
                        Some("tool_result") => {
                            results = true;
                            if let Some(id) = &block.tool_use_id {
                                self.pending.finish(id);
                            }
                        }
                        Some("text") => match &block.text {
                            Some(TextKind::Interrupt) => interrupt = true,
                            Some(TextKind::LocalCommand) => {}
                            Some(TextKind::Warmup) => (prompt, warmup) = (true, true),
                            _ => prompt = true,
                        },
                        Some("image" | "document") => prompt = true,
                        _ => {}
                    }
                }
            }
        }
        if rec.is_meta.0 || rec.is_compact_summary.0 {
            // Written by Claude Code for itself: no prompt, whatever its text.
            (prompt, warmup) = (false, false);
        }
        if interrupt {
            self.end_turn(true);
            return Line::Bookkeeping;
        }
        if !prompt && !results {
            return Line::Bookkeeping;
        }
        let new = match rec.uuid.as_deref() {
            Some(uuid) if self.recent_users.contains(uuid) => false,
            Some(uuid) => {
                self.recent_users.insert(uuid, ());
                true
            }
            None => true,
        };
        if new {
            if warmup && self.messages == 0 {
                self.warmup = true;
            }
            self.messages += 1;
        }
        if prompt {
            // A new turn starts; whatever ran before is over.
            self.pending.clear();
        }
        self.activity = Activity::Working;
        self.ended = false;
        Line::Message
    }

    fn assistant(&mut self, rec: &Record) -> Line {
        let Some(msg) = &rec.message else {
            return Line::Bookkeeping;
        };
        let api_error = rec.is_api_error_message.0;
        let synthetic = msg.model.as_deref() == Some("<synthetic>");
        if !synthetic {
            set_if_some(&mut self.model, msg.model.as_deref());
        }
        let output = msg.usage.as_ref().map_or(0, |u| u.output_tokens);
        // Another line (content block) of a message already seen.
        let mut sibling = false;
        match msg.id.as_deref() {
            Some(id) => match self.recent_messages.get_mut(id) {
                Some(tokens) => {
                    *tokens = output;
                    sibling = true;
                }
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
            self.largest_context = self.largest_context.max(self.context_tokens);
        }
        let mut tool_use = false;
        let mut text = false;
        if let Some(Content::Blocks(blocks)) = &msg.content {
            for block in blocks {
                match block.kind.as_deref() {
                    Some("tool_use" | "server_tool_use") => tool_use = true,
                    Some("text") => {
                        text |= !matches!(block.text, Some(TextKind::Blank));
                        continue;
                    }
                    _ => continue,
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
        let stop = msg.stop_reason.as_deref();
        if api_error || matches!(stop, Some("end_turn" | "stop_sequence")) {
            self.end_turn(true);
        } else if tool_use || stop.is_some() {
            // A tool call, or a stop the agent continues from (`tool_use`, `max_tokens`,
            // `pause_turn`).
            self.activity = Activity::Working;
            self.ended = false;
        } else if text {
            // Most versions write `stop_reason: null` on every line, the last included:
            // a text reply with no tool call is the turn's end, unless a `tool_use` line
            // of the same message follows.
            self.end_turn(false);
        } else {
            // Thinking, or a block still to be followed by others.
            self.activity = Activity::Working;
            self.ended = false;
        }
        if (synthetic && !api_error) || sibling {
            // Claude Code's own filler ("No response requested."), not the model's work; or
            // a further line of a message already counted, which moves a wait's start only
            // if it changes the activity (2.1.92 and later write `end_turn` on each line of
            // a final reply, its thinking and its text up to a second apart).
            Line::Bookkeeping
        } else {
            Line::Message
        }
    }

    fn system(&mut self, rec: &Record) -> Line {
        match rec.subtype.as_deref() {
            Some("compact_boundary") => self.compactions += 1,
            // Written once the turn is over (the Stop hooks ran; the turn's wall time).
            Some("turn_duration" | "stop_hook_summary") => self.end_turn(true),
            // `api_error` (a retry notice), `local_command`, `informational` and the rest
            // change nothing.
            _ => {}
        }
        Line::Bookkeeping
    }

    fn max_context(&self) -> i64 {
        claude_window(&self.model, self.largest_context)
    }

    /// This conversation as subagent `id` of session `parent`. `finished` is when the
    /// parent's log reported the agent's result, if it did.
    fn subagent(&self, id: &str, parent: &str, finished: Option<Timestamp>) -> SubagentState {
        let done =
            finished.or((self.ended && self.activity == Activity::Waiting).then_some(self.last_at));
        let activity = match (&done, &self.activity) {
            (Some(_), _) => Activity::Terminal,
            // Its answer is written; the parent has not taken it yet.
            (None, Activity::Waiting) => Activity::Idle,
            (None, a) => a.clone(),
        };
        let completed_at = done.map_or(Timestamp::ZERO, |at| at.max(self.last_at));
        SubagentState {
            id: id.to_owned(),
            parent_id: parent.to_owned(),
            slug: self.slug.clone(),
            activity,
            current_tool: if done.is_some() {
                String::new()
            } else {
                self.pending.current().to_owned()
            },
            started_at: self.started_at,
            last_activity_at: self.last_at,
            model: self.model.clone(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens(),
            message_count: self.messages,
            tool_call_count: self.tool_calls,
            completed_at,
        }
    }
}

/// Whether `agent` names a run Claude Code starts for itself rather than a subagent the
/// model started with a tool call: its id is a kind word, a `-` and a hex suffix
/// (`acompact-5e0c1a`: the conversation's compaction, 2.1.x), where a subagent's id is hex
/// alone (`a2898e3`, `a7b1cd4effbcbdebe`). No tool result or task notification ever
/// reports such a run finished, so as a subagent it would stay `idle` for good; the
/// compaction it does is counted from the parent's `compact_boundary` line.
fn own_run(agent: &str) -> bool {
    agent
        .split_once('-')
        .is_some_and(|(kind, _)| kind.len() > 1 && !kind.bytes().all(|b| b.is_ascii_hexdigit()))
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
        // The fast reader where it is sure of the result (most lines), else `serde_json`,
        // which also tells an invalid line.
        let parsed = fast::record(line).or_else(|| serde_json::from_slice(line).ok());
        self.apply(parsed.as_ref())
    }

    /// Whether the fast reader agrees with `serde_json` on `line`: it gives no record, or the
    /// record `serde_json` gives. For the fuzz target.
    #[cfg(fuzzing)]
    pub(crate) fn fast_matches_serde(line: &[u8]) -> bool {
        fast::record(line).is_none_or(|r| serde_json::from_slice::<Record>(line).ok() == Some(r))
    }

    /// Feeds one parsed line (`None`: invalid).
    fn apply(&mut self, rec: Option<&Record>) -> LineResult {
        let Some(rec) = rec else {
            return LineResult::Invalid;
        };
        if self.subagent_file || rec.is_sidechain != Some(true) {
            return self.main.apply(rec);
        }
        let agent = rec
            .agent_id
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or(SIDECHAIN);
        if let Some((_, t)) = self.sidechains.iter_mut().find(|(id, _)| id == agent) {
            return t.apply(rec);
        }
        if self.sidechains.len() >= MAX_SIDECHAINS {
            self.sidechains.remove(0);
        }
        let mut t = Transcript::default();
        let result = t.apply(rec);
        self.sidechains.push((agent.to_owned(), t));
        result
    }

    /// The session id the file names, if a line carried one.
    pub(crate) fn session_id(&self) -> &str {
        &self.main.session_id
    }

    /// Whether the file holds a conversation to report: at least one message, and (for a
    /// subagent's file) not a warm-up nor one of Claude Code's own runs (see
    /// [`own_run`]). A file of only `summary`, `file-history-snapshot` or local-command
    /// lines is not one yet.
    pub(crate) fn is_conversation(&self) -> bool {
        self.main.messages > 0
            && !(self.subagent_file && (self.main.warmup || own_run(&self.main.agent_id)))
    }

    fn finished(&self, agent: &str) -> Option<Timestamp> {
        self.main
            .finished_agents
            .iter()
            .find(|(a, _)| a == agent)
            .map(|(_, at)| *at)
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
            tentative: t.activity == Activity::Waiting && !t.ended,
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
                .filter(|(agent, s)| s.messages > 0 && !s.warmup && !own_run(agent))
                .map(|(agent, s)| s.subagent(agent, id, self.finished(agent)))
                .collect(),
            finished_subagents: t.finished_agents.clone(),
        }
    }

    /// This file as a subagent `agent` of session `parent`.
    pub(crate) fn subagent_state(&self, agent: &str, parent: &str) -> SubagentState {
        self.main.subagent(agent, parent, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of every sample transcript.
    fn sample_lines() -> Vec<(String, Vec<u8>)> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/monitor/claude");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut out = Vec::new();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for (n, line) in std::fs::read(&path)
                .unwrap()
                .split(|&b| b == b'\n')
                .enumerate()
            {
                if !line.is_empty() {
                    out.push((format!("{name}:{}", n + 1), line.to_vec()));
                }
            }
        }
        assert!(out.len() > 50, "{} sample lines", out.len());
        out
    }

    /// The fast reader gives `serde_json`'s record or none.
    fn same(line: &[u8], what: &str) -> bool {
        let full = serde_json::from_slice::<Record>(line).ok();
        match fast::record(line) {
            None => false,
            Some(r) => {
                assert_eq!(
                    Some(&r),
                    full.as_ref(),
                    "{what}: {}",
                    String::from_utf8_lossy(line)
                );
                true
            }
        }
    }

    /// Members that test the reader's edges when put into an object: fields twice, keys
    /// spelled with escapes, values of the wrong type, numbers out of range, escapes that
    /// decode to nothing valid, record keys inside text.
    const MEMBERS: &[&str] = &[
        r#""type":"assistant","#,
        r#""type":null,"#,
        r#""type":7,"#,
        r#""t\u0079pe":"user","#,
        r#""uuid":"u\u0031","#,
        r#""uuid":"\ud800","#,
        r#""message":null,"#,
        r#""message":["m1","claude-x",null,"end_turn",null],"#,
        r#""message":"text","#,
        r#""content":7,"#,
        r#""content":{"a":1},"#,
        r#""content":"\u005bRequest interrupted by user]","#,
        r#""content":[1e999,"x",null,[{}]],"#,
        r#""text":"\n\n","#,
        r#""content":"\ud83d\ude00 hi","#,
        r#""content":"\ud83dx","#,
        r#""content":"\uDE00","#,
        r#""text":"\uD83D\u0041","#,
        r#""text":"\ud83d\uDE00","#,
        r#""text":17,"#,
        r#""text":"say \"type\":\"assistant\"","#,
        r#""isSidechain":"true","#,
        r#""isSidechain":true,"#,
        r#""isMeta":1e999,"#,
        r#""isMeta":"yes","#,
        r#""isMeta":"\ud800","#,
        r#""isMeta":true,"#,
        r#""toolUseResult":{"agentId":"a1","status":"completed","agentId":"a2"},"#,
        r#""toolUseResult":{"agentId":1e999},"#,
        r#""toolUseResult":"Error\n","#,
        r#""toolUseResult":"\udc00","#,
        r#""usage":{"output_tokens":1.5},"#,
        r#""usage":{"output_tokens":9223372036854775808},"#,
        r#""usage":{"output_tokens":-0,"input_tokens":012},"#,
        r#""usage":{"output_tokens":-0},"#,
        r#""usage":{"input_tokens":-12},"#,
        r#""usage":{"output_tokens":1,"output_tokens":2},"#,
        r#""usage":[1,2,3,4],"#,
        r#""x":{"\u0041":1},"#,
        r#""x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"#,
        r#""x":-,"#,
        r#""x":01,"#,
        r#""x":1.,"#,
        r#""x":1e+,"#,
        r#""x":tru,"#,
        r#""x":"\x","#,
        r#""x":"\u12g4","#,
        r#"  "x"  :  [ 1 , { } ]  ,"#,
        "\"x\":\"\t\",",
        "\"x\":\"\u{e9}\",",
    ];

    /// Members with bytes that are not UTF-8, where `serde_json` reads text (an error) and
    /// where it skips it (no error).
    const INVALID_UTF8: &[&[u8]] = &[
        b"\"isMeta\":\"\xff\",",
        b"\"toolUseResult\":\"\xc3\",",
        b"\"toolUseResult\":{\"agentId\":\"\xe9\"},",
        b"\"content\":[\"\xff\"],",
        b"\"content\":\"\xff\\n\",",
        b"\"uuid\":\"\xe9\",",
        b"\"x\":\"\xff\",",
        b"\"x\":{\"\xff\":1},",
        b"\"\xff\":1,",
    ];

    /// Every sample line, and many mutations of each, read by the fast reader: where it
    /// gives a record it is exactly `serde_json`'s. Every sample line takes the fast path
    /// (else it would test nothing), and so do many mutations.
    #[test]
    fn fast_path_equals_serde() {
        let lines = sample_lines();
        for (what, line) in &lines {
            assert!(same(line, what), "{what} fell back to serde_json");
        }
        const BYTES: &[u8] = b"\"\\{}[],: \t0-e.ntu\x01\xff\xc3a";
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let (mut tried, mut fast) = (0u32, 0u32);
        for (what, line) in &lines {
            for _ in 0..400 {
                let mut m = line.clone();
                match next(6) {
                    0 => {
                        let i = next(m.len());
                        m[i] = BYTES[next(BYTES.len())];
                    }
                    1 => {
                        m.remove(next(m.len()));
                    }
                    2 => m.insert(next(m.len() + 1), BYTES[next(BYTES.len())]),
                    3 => m.truncate(next(m.len())),
                    _ => {
                        // A member after a random `{` or `,` (at any depth).
                        let at: Vec<usize> = m
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| matches!(b, b'{' | b','))
                            .map(|(i, _)| i + 1)
                            .collect();
                        let i = at[next(at.len())];
                        let k = next(MEMBERS.len() + INVALID_UTF8.len());
                        let member = MEMBERS
                            .get(k)
                            .map_or_else(|| INVALID_UTF8[k - MEMBERS.len()], |m| m.as_bytes());
                        m.splice(i..i, member.iter().copied());
                    }
                }
                tried += 1;
                fast += u32::from(same(&m, what));
            }
        }
        assert!(
            fast > tried / 4,
            "only {fast} of {tried} mutations took the fast path"
        );
    }

    /// Every line of every JSONL test file (other agents' logs too: JSON of other shapes)
    /// gets the same record from the fast reader as from `serde_json`, or none.
    #[test]
    fn every_jsonl_test_file_reads_the_same() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut dirs = vec![root];
        let (mut lines, mut fast) = (0u32, 0u32);
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "jsonl") {
                    let bytes = std::fs::read(&path).unwrap();
                    for line in bytes.split(|&b| b == b'\n') {
                        lines += 1;
                        fast += u32::from(same(line, &path.display().to_string()));
                    }
                }
            }
        }
        assert!(
            lines > 300 && fast > lines / 2,
            "{fast} of {lines} lines read fast"
        );
    }

    /// Record keys inside text or nested values are not the record's.
    #[test]
    fn nested_keys_do_not_fool_the_fast_reader() {
        let lines: [&[u8]; 3] = [
            br#"{"type":"user","message":{"role":"user","content":"{\"type\":\"assistant\",\"isMeta\":true}"},"uuid":"u1"}"#,
            br#"{"data":{"message":{"type":"assistant","message":{"id":"m9","stop_reason":"end_turn"}}},"type":"progress","uuid":"p1"}"#,
            br#"{"message":{"content":[{"type":"tool_result","content":[{"type":"text","text":"x"}],"tool_use_id":"t1"}]},"type":"user","toolUseResult":{"stdout":"\"agentId\":\"a1\"","file":{"status":"completed"}}}"#,
        ];
        for line in lines {
            assert!(same(line, "nested"));
        }
        let kinds: Vec<_> = lines
            .iter()
            .map(|l| fast::record(l).unwrap().kind.unwrap().0.into_owned())
            .collect();
        assert_eq!(kinds, ["user", "progress", "user"]);
        let rec = fast::record(lines[0]).unwrap();
        assert!(!rec.is_meta.0);
        assert!(matches!(
            rec.message.unwrap().content,
            Some(Content::Text(TextKind::Prompt))
        ));
        assert!(fast::record(lines[1]).unwrap().message.is_none());
        let rec = fast::record(lines[2]).unwrap();
        assert_eq!(
            (rec.tool_use_result.agent_id, rec.tool_use_result.status),
            (None, None)
        );
    }

    /// Fed every sample, the session parser reports the same with the fast reader as with
    /// `serde_json` alone.
    #[test]
    fn samples_report_the_same_either_way() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/monitor/claude");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let (mut a, mut b) = (ClaudeLog::session(), ClaudeLog::session());
            let (mut c, mut d) = (ClaudeLog::subagent(), ClaudeLog::subagent());
            for line in bytes.split(|&x| x == b'\n').filter(|l| !l.is_empty()) {
                let full = serde_json::from_slice(line).ok();
                assert_eq!(a.line(line), b.apply(full.as_ref()));
                assert_eq!(c.line(line), d.apply(full.as_ref()));
                assert_eq!(a.report("s"), b.report("s"), "{}", path.display());
                assert_eq!(c.subagent_state("x", "s"), d.subagent_state("x", "s"));
            }
        }
    }

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

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn user_text_is_classified_not_kept() {
        assert_eq!(TextKind::of("fix the bug"), TextKind::Prompt);
        assert_eq!(
            TextKind::of("<command-name>/exit</command-name>"),
            TextKind::LocalCommand
        );
        assert_eq!(
            TextKind::of("<local-command-stdout>Bye!</local-command-stdout>"),
            TextKind::LocalCommand
        );
        assert_eq!(
            TextKind::of("<bash-input>ls</bash-input>"),
            TextKind::LocalCommand
        );
        assert_eq!(
            TextKind::of("[Request interrupted by user for tool use]"),
            TextKind::Interrupt
        );
        assert_eq!(TextKind::of("Warmup"), TextKind::Warmup);
        assert_eq!(TextKind::of("Warmup the cache please"), TextKind::Prompt);
        assert_eq!(
            TextKind::of("<task-notification>\n<task-id>a1</task-id>\n<status>completed</status>"),
            TextKind::TaskNotification(Some("a1".into()))
        );
        assert_eq!(
            TextKind::of("<task-notification><status>killed</status>"),
            TextKind::TaskNotification(None)
        );
    }

    #[test]
    fn a_text_line_then_a_tool_use_line_of_one_message() {
        let mut log = ClaudeLog::session();
        feed(
            &mut log,
            &[
                r#"{"type":"user","uuid":"u1","timestamp":"2026-01-01T10:00:00Z","message":{"role":"user","content":"go"}}"#,
                r#"{"type":"assistant","timestamp":"2026-01-01T10:00:01Z","message":{"id":"m1","model":"claude-opus-4-6","content":[{"type":"text","text":"Let me look."}],"stop_reason":null}}"#,
            ],
        );
        assert_eq!(log.report("s").activity, Activity::Waiting);
        log.line(br#"{"type":"assistant","timestamp":"2026-01-01T10:00:02Z","message":{"id":"m1","model":"claude-opus-4-6","content":[{"type":"tool_use","id":"t1","name":"Read","input":{}}],"stop_reason":null}}"#);
        let r = log.report("s");
        assert_eq!(
            (r.activity, r.current_tool.as_str()),
            (Activity::Working, "Read")
        );
        assert_eq!(r.counts.messages, 2);
    }

    #[test]
    fn a_wait_keeps_the_time_it_began() {
        let mut log = ClaudeLog::session();
        feed(
            &mut log,
            &[
                r#"{"type":"user","uuid":"u1","timestamp":"2026-01-01T10:00:00Z","message":{"role":"user","content":"go"}}"#,
                r#"{"type":"assistant","timestamp":"2026-01-01T10:00:05Z","message":{"id":"m1","content":[{"type":"text","text":"Done."}]}}"#,
                r#"{"type":"system","subtype":"turn_duration","durationMs":5000,"timestamp":"2026-01-01T10:00:06Z"}"#,
                r#"{"type":"user","uuid":"u2","isMeta":true,"timestamp":"2026-01-01T10:09:00Z","message":{"role":"user","content":[{"type":"text","text":"skill text"}]}}"#,
                r#"{"type":"assistant","timestamp":"2026-01-01T10:09:01Z","message":{"id":"m2","model":"<synthetic>","content":[{"type":"text","text":"No response requested."}]}}"#,
                r#"{"type":"user","uuid":"u3","timestamp":"2026-01-01T10:09:02Z","message":{"role":"user","content":"[Request interrupted by user]"}}"#,
            ],
        );
        let r = log.report("s");
        assert_eq!(r.activity, Activity::Waiting);
        assert_eq!(r.last_activity_at, ts("2026-01-01T10:00:05Z"));
        assert_eq!(r.counts.messages, 3, "prompt, reply, synthetic filler");
        log.line(br#"{"type":"user","uuid":"u4","timestamp":"2026-01-01T10:10:00Z","message":{"role":"user","content":[{"type":"image","source":{}}]}}"#);
        let r = log.report("s");
        assert_eq!(r.activity, Activity::Working);
        assert_eq!(r.last_activity_at, ts("2026-01-01T10:10:00Z"));
    }

    #[test]
    fn tool_use_results_of_every_shape_are_read() {
        let mut log = ClaudeLog::session();
        let lines: [&[u8]; 6] = [
            br#"{"type":"user","uuid":"r1","toolUseResult":"Error: denied","message":{"content":[{"type":"tool_result","tool_use_id":"t1"}]}}"#,
            br#"{"type":"user","uuid":"r2","toolUseResult":[{"type":"text","text":"x"}],"message":{"content":[{"type":"tool_result","tool_use_id":"t2"}]}}"#,
            br#"{"type":"user","uuid":"r3","toolUseResult":{"stdout":"","interrupted":false},"message":{"content":[{"type":"tool_result","tool_use_id":"t3"}]}}"#,
            br#"{"type":"user","uuid":"r4","timestamp":"2026-01-01T10:00:04Z","toolUseResult":{"status":"completed","agentId":"a1","usage":{"input_tokens":1}},"message":{"content":[{"type":"tool_result","tool_use_id":"t4"}]}}"#,
            br#"{"type":"user","uuid":"r5","toolUseResult":{"status":"async_launched","agentId":"a2","isAsync":true},"message":{"content":[{"type":"tool_result","tool_use_id":"t5"}]}}"#,
            br#"{"type":"user","uuid":"r6","isMeta":"yes","toolUseResult":{"agentId":7,"status":null},"message":{"content":"hi"}}"#,
        ];
        for line in lines {
            assert_eq!(log.line(line), LineResult::Used);
        }
        let r = log.report("s");
        assert_eq!(
            r.finished_subagents,
            [("a1".to_owned(), ts("2026-01-01T10:00:04Z"))]
        );
        assert_eq!(r.counts.messages, 6, "a flag that is not `true` is not set");
    }

    #[test]
    fn warmup_sidechains_and_empty_logs_are_not_reported() {
        let mut log = ClaudeLog::session();
        log.line(br#"{"type":"summary","summary":"t","leafUuid":"x"}"#);
        log.line(br#"{"type":"user","uuid":"c","message":{"content":"<command-name>/model</command-name>"}}"#);
        assert!(!log.is_conversation());
        log.line(br#"{"type":"user","uuid":"w","isSidechain":true,"agentId":"a9","message":{"content":"Warmup"}}"#);
        log.line(br#"{"type":"user","uuid":"u","message":{"content":"go"}}"#);
        assert!(log.is_conversation());
        assert!(log.report("s").subagents.is_empty());
        let mut sub = ClaudeLog::subagent();
        sub.line(
            br#"{"type":"user","uuid":"w","isSidechain":true,"message":{"content":"Warmup"}}"#,
        );
        sub.line(br#"{"type":"assistant","isSidechain":true,"message":{"id":"m","content":[{"type":"text","text":"Ready."}]}}"#);
        assert!(!sub.is_conversation());
    }

    /// Claude Code 2.1.39 writes a `"\n\n"` text block before a `thinking` block of the
    /// same message: no reply, no turn end.
    #[test]
    fn a_blank_text_block_ends_no_turn() {
        assert_eq!(TextKind::of("\n\n"), TextKind::Blank);
        let mut log = ClaudeLog::session();
        log.line(br#"{"type":"user","uuid":"p","message":{"content":"go"}}"#);
        log.line(br#"{"type":"assistant","message":{"id":"m","content":[{"type":"text","text":"\n\n"}],"stop_reason":null}}"#);
        let r = log.report("s");
        assert_eq!((r.activity, r.tentative), (Activity::Working, false));
        log.line(br#"{"type":"assistant","message":{"id":"m","content":[{"type":"text","text":"Done."}],"stop_reason":null}}"#);
        let r = log.report("s");
        assert_eq!((r.activity, r.tentative), (Activity::Waiting, true));
        log.line(br#"{"type":"system","subtype":"turn_duration","durationMs":9}"#);
        let r = log.report("s");
        assert_eq!((r.activity, r.tentative), (Activity::Waiting, false));
    }

    #[test]
    fn claude_codes_own_runs_are_no_subagents() {
        for own in [
            "acompact-5e0c1a",
            "acompact-2aaa241e456ebc94",
            "aprompt_suggestion-7796cd",
        ] {
            assert!(own_run(own), "{own}");
        }
        for sub in [
            "a2898e3",
            "a7b1cd4effbcbdebe",
            "ab11-ab11",
            "sidechain",
            "",
            "-x",
        ] {
            assert!(!own_run(sub), "{sub}");
        }
        let mut log = ClaudeLog::session();
        log.line(br#"{"type":"user","uuid":"p","message":{"content":"go"}}"#);
        log.line(br#"{"type":"user","uuid":"k","isSidechain":true,"agentId":"acompact-1f","message":{"content":"Summarise"}}"#);
        log.line(br#"{"type":"user","uuid":"t","isSidechain":true,"agentId":"a1f","message":{"content":"Search"}}"#);
        let ids: Vec<String> = log
            .report("s")
            .subagents
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["a1f"]);
        let mut file = ClaudeLog::subagent();
        file.line(br#"{"type":"user","uuid":"k","isSidechain":true,"agentId":"acompact-1f","message":{"content":"Summarise"}}"#);
        assert!(!file.is_conversation());
    }
}
