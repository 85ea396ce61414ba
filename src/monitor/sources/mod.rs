//! The sources: which files under a root are session logs, and how each log becomes a
//! session's state.
//!
//! Every parser keeps the *absolute* state of one file (its own totals), so a file that is
//! read again from the start (truncated or replaced) is simply parsed again from a fresh
//! parser; the monitor turns the change of a file's totals into the increments it adds to
//! the session, which keeps Go's "counts accumulate" rule without ever counting twice.
//!
//! Parsers read only the fields the wire model needs. Prompt text, assistant text, thinking,
//! tool input and tool output are skipped by the JSON parser and never stored.

pub(crate) mod antigravity;
pub(crate) mod claude;
pub(crate) mod codex;
pub(crate) mod cursor;
pub(crate) mod gemini;
pub(crate) mod gemini_project;
mod lenient;
pub(crate) mod marker_dir;
pub(crate) mod opencode;
pub(crate) mod pi;
pub(crate) mod project_dir;
pub(crate) mod session_end;

use std::collections::VecDeque;
use std::path::Path;

use crate::wire::{Activity, SubagentState, Timestamp};

/// A kind of agent whose logs the monitor reads. Its [`name`](SourceKind::name) is the
/// `source` of its sessions and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// Claude Code: `~/.claude/projects/<encoded cwd>/<session uuid>.jsonl`.
    Claude,
    /// Codex CLI: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`.
    Codex,
    /// Gemini CLI: `~/.gemini/tmp/<project folder>/chats/session-*.json` or `.jsonl` (the
    /// folder is the SHA-256 of the project root up to v0.28, a slug of its name from
    /// v0.29); a subagent's chat is `chats/<parent session id>/<id>.jsonl`.
    Gemini,
    /// Pi coding agent: `<sessions dir>/--<encoded cwd>--/<time>_<session id>.jsonl`, the
    /// sessions dir being `$PI_CODING_AGENT_SESSION_DIR`, else
    /// `$PI_CODING_AGENT_DIR/sessions` (default `~/.pi/agent/sessions`).
    Pi,
    /// Cursor's agent (IDE and `cursor-agent` CLI):
    /// `~/.cursor/projects/<encoded cwd>/agent-transcripts/<id>/<id>.jsonl` (also
    /// `<id>.jsonl`, and the legacy text `<id>.txt`); a subagent's transcript is
    /// `<id>/subagents/<child id>.jsonl`.
    Cursor,
    /// OpenCode (1.2 and later): the SQLite database `<data dir>/opencode.db` (with its
    /// `-wal`), the data dir being `$XDG_DATA_HOME/opencode` (default
    /// `~/.local/share/opencode`); the root is the data dir, and only the files directly in it
    /// are looked at. Every session is a row of that one database; a session with a parent
    /// is a subagent of it.
    OpenCode,
    /// Antigravity CLI (`agy`): the root is `~/.gemini/antigravity-cli`; a conversation's
    /// steps are `brain/<conversation id>/.system_generated/logs/transcript.jsonl`, a
    /// subagent's record `brain/<parent id>/.system_generated/subagents/<child id>.json`, and
    /// `cache/last_conversations.json` maps each working directory to its latest
    /// conversation, and `settings.json` has the default model.
    Antigravity,
}

impl SourceKind {
    /// Every source, in the order the monitor reports them.
    pub const ALL: [SourceKind; 7] = [
        SourceKind::Claude,
        SourceKind::Codex,
        SourceKind::Gemini,
        SourceKind::Pi,
        SourceKind::Cursor,
        SourceKind::OpenCode,
        SourceKind::Antigravity,
    ];

    /// The source name on the wire: `claude`, `codex`, `gemini`, `pi`, `cursor`, `opencode`
    /// or `antigravity`.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Claude => "claude",
            SourceKind::Codex => "codex",
            SourceKind::Gemini => "gemini",
            SourceKind::Pi => "pi",
            SourceKind::Cursor => "cursor",
            SourceKind::OpenCode => "opencode",
            SourceKind::Antigravity => "antigravity",
        }
    }

    /// Whether only the files directly in the root belong to the source: its
    /// subdirectories are neither walked nor watched (OpenCode's data dir also holds its
    /// file snapshots, git objects by the thousand).
    pub(crate) fn flat(self) -> bool {
        self == SourceKind::OpenCode
    }
}

/// What a file under a source's root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A Claude Code session transcript.
    ClaudeSession,
    /// A Claude Code subagent transcript: `<session uuid>/subagents/agent-<id>.jsonl`, or
    /// (older versions) `agent-<id>.jsonl` beside the session logs.
    ClaudeSubagent {
        /// The parent session's id: the directory name, or empty when the file sits beside
        /// the session logs (then the `sessionId` its lines carry).
        parent: String,
        /// The subagent's id (the file stem without `agent-`).
        agent: String,
    },
    /// A Codex CLI rollout.
    CodexRollout,
    /// A Gemini CLI chat, rewritten whole on each save.
    GeminiJson,
    /// A Gemini CLI chat in the append-only form.
    GeminiJsonl,
    /// A Gemini CLI subagent's chat: `<project>/chats/<parent session id>/<id>.jsonl`.
    GeminiSubagent {
        /// The parent session's id: the directory name.
        parent: String,
        /// The subagent's id: the file stem.
        agent: String,
    },
    /// A pi session file: `<project dir>/<time>_<id>.jsonl`.
    PiSession,
    /// A Cursor JSONL transcript: `agent-transcripts/<id>/<id>.jsonl` or
    /// `agent-transcripts/<id>.jsonl`.
    CursorTranscript {
        /// The project folder name (the encoded working directory); empty in the
        /// workspace-less layout.
        project: String,
    },
    /// A Cursor legacy text transcript: `agent-transcripts/<id>.txt`.
    CursorText {
        /// The project folder name; empty in the workspace-less layout.
        project: String,
    },
    /// A Cursor subagent's transcript: `agent-transcripts/<parent id>/subagents/<id>.jsonl`.
    CursorSubagent {
        /// The parent session's id: the directory name.
        parent: String,
        /// The subagent's id: the file stem.
        agent: String,
    },
    /// OpenCode's database `opencode.db`, or its `opencode.db-wal` (a change of either is a
    /// change of the database; the database's path is tracked).
    OpenCodeDb,
    /// An Antigravity CLI conversation's transcript:
    /// `brain/<id>/.system_generated/logs/transcript.jsonl`.
    AntigravityTranscript {
        /// The conversation id: the `brain` directory's name.
        conversation: String,
    },
    /// An Antigravity CLI subagent record:
    /// `brain/<parent>/.system_generated/subagents/<child>.json`, rewritten whole.
    AntigravitySubagent {
        /// The parent conversation's id.
        parent: String,
    },
    /// Antigravity CLI's `cache/last_conversations.json`: working directory → latest
    /// conversation id, rewritten whole.
    AntigravityWorkspaces,
    /// Antigravity CLI's `settings.json`: the default `model` (a display name).
    AntigravitySettings,
    /// A log of a source registered through [`Source`](super::Source).
    Custom(super::LogFile),
}

impl FileKind {
    /// Whether the file is read line by line from a saved offset (else whole, on change).
    pub(crate) fn is_jsonl(&self) -> bool {
        !matches!(
            self,
            FileKind::GeminiJson
                | FileKind::OpenCodeDb
                | FileKind::AntigravitySubagent { .. }
                | FileKind::AntigravityWorkspaces
                | FileKind::AntigravitySettings
        ) && !matches!(self, FileKind::Custom(file) if file.is_whole())
    }
}

/// What `path` (somewhere under `root`) is for `source`, or `None` for any other file.
pub(crate) fn classify(source: SourceKind, root: &Path, path: &Path) -> Option<FileKind> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let name = parts.last()?;
    match source {
        SourceKind::Claude => {
            if !name.ends_with(".jsonl") {
                return None;
            }
            let stem = name.trim_end_matches(".jsonl");
            match parts.len() {
                2 if stem.starts_with("agent-") => Some(FileKind::ClaudeSubagent {
                    parent: String::new(),
                    agent: stem.trim_start_matches("agent-").to_owned(),
                }),
                2 => Some(FileKind::ClaudeSession),
                4 if parts[2] == "subagents" => Some(FileKind::ClaudeSubagent {
                    parent: parts[1].clone(),
                    agent: stem.strip_prefix("agent-").unwrap_or(stem).to_owned(),
                }),
                _ => None,
            }
        }
        SourceKind::Codex => (name.starts_with("rollout-") && name.ends_with(".jsonl"))
            .then_some(FileKind::CodexRollout),
        SourceKind::Gemini => {
            if parts.len() == 4 && parts[1] == "chats" && name.ends_with(".jsonl") {
                return Some(FileKind::GeminiSubagent {
                    parent: parts[2].clone(),
                    agent: name.trim_end_matches(".jsonl").to_owned(),
                });
            }
            if parts.len() != 3 || parts[1] != "chats" || !name.starts_with("session-") {
                return None;
            }
            if name.ends_with(".jsonl") {
                Some(FileKind::GeminiJsonl)
            } else if name.ends_with(".json") {
                Some(FileKind::GeminiJson)
            } else {
                None
            }
        }
        // Only files directly in a project directory: an extension's
        // `<project>/subagent-artifacts/*.jsonl` are no sessions.
        SourceKind::Pi => {
            (parts.len() == 2 && name.ends_with(".jsonl")).then_some(FileKind::PiSession)
        }
        SourceKind::Cursor => classify_cursor(&parts),
        SourceKind::OpenCode => (parts.len() == 1
            && (name == "opencode.db" || name == "opencode.db-wal"))
            .then_some(FileKind::OpenCodeDb),
        SourceKind::Antigravity => classify_antigravity(&parts),
    }
}

/// An Antigravity CLI file from its path under the root (`~/.gemini/antigravity-cli`).
fn classify_antigravity(parts: &[String]) -> Option<FileKind> {
    match parts {
        [brain, id, sys, logs, name]
            if brain == "brain"
                && sys == ".system_generated"
                && logs == "logs"
                && name == "transcript.jsonl" =>
        {
            Some(FileKind::AntigravityTranscript {
                conversation: id.clone(),
            })
        }
        [brain, parent, sys, subagents, name]
            if brain == "brain"
                && sys == ".system_generated"
                && subagents == "subagents"
                && name.ends_with(".json") =>
        {
            Some(FileKind::AntigravitySubagent {
                parent: parent.clone(),
            })
        }
        [cache, name] if cache == "cache" && name == "last_conversations.json" => {
            Some(FileKind::AntigravityWorkspaces)
        }
        [name] if name == "settings.json" => Some(FileKind::AntigravitySettings),
        _ => None,
    }
}

/// A Cursor file from its path under the root: `[<project>/]agent-transcripts/…`.
fn classify_cursor(parts: &[String]) -> Option<FileKind> {
    let at = parts.iter().position(|p| p == "agent-transcripts")?;
    let project = match at {
        0 => String::new(),
        1 => parts[0].clone(),
        _ => return None,
    };
    let rest = &parts[at + 1..];
    let name = rest.last()?;
    let stem = name.strip_suffix(".jsonl");
    match rest {
        [_] if stem.is_some() => Some(FileKind::CursorTranscript { project }),
        [_] if name.ends_with(".txt") => Some(FileKind::CursorText { project }),
        [dir, _] if stem == Some(dir.as_str()) => Some(FileKind::CursorTranscript { project }),
        [parent, sub, _] if sub == "subagents" => stem.map(|agent| FileKind::CursorSubagent {
            parent: parent.clone(),
            agent: agent.to_owned(),
        }),
        _ => None,
    }
}

/// Totals that accumulate on the session (Go's `*CountDelta` fields), as one file has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) messages: i64,
    pub(crate) tool_calls: i64,
    pub(crate) compactions: i64,
}

impl Counts {
    /// `self - earlier`, field by field.
    pub(crate) fn since(self, earlier: Counts) -> Counts {
        Counts {
            messages: self.messages - earlier.messages,
            tool_calls: self.tool_calls - earlier.tool_calls,
            compactions: self.compactions - earlier.compactions,
        }
    }
}

/// What one session log says about its session: the Rust shape of Go's `SourceUpdate`, with
/// absolute counts for this file.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Report {
    pub(crate) session_id: String,
    pub(crate) slug: String,
    pub(crate) model: String,
    pub(crate) working_dir: String,
    pub(crate) branch: String,
    pub(crate) activity: Activity,
    /// `activity` is `waiting` only because the latest message is a text reply with no
    /// tool call, and the log has not said the turn is over: the next line may be a tool
    /// call of the same message (Claude Code writes one line per content block). The
    /// lifecycle holds such an end for a moment before publishing it.
    pub(crate) tentative: bool,
    /// The running tool; empty means none (unlike Go, this clears the field).
    pub(crate) current_tool: String,
    pub(crate) context_tokens: i64,
    pub(crate) output_tokens: i64,
    /// 0 when unknown.
    pub(crate) max_context_tokens: i64,
    pub(crate) counts: Counts,
    pub(crate) started_at: Timestamp,
    pub(crate) last_activity_at: Timestamp,
    /// Subagents found inside this log (Claude's `isSidechain` lines).
    pub(crate) subagents: Vec<SubagentState>,
    /// Subagents whose result this log reported (Claude's `toolUseResult` with an
    /// `agentId`, or a `<task-notification>`), with the result's time: they are finished
    /// whatever their own log says last.
    pub(crate) finished_subagents: Vec<(String, Timestamp)>,
}

/// How a [`LogParser`](super::LogParser) took one line (or one whole file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineResult {
    /// A record the parser used (or knowingly ignored).
    Used,
    /// A well-formed record of a type the parser does not know: skipped, not a failure.
    Unknown,
    /// Not a record of the log's format (for JSON lines: not a JSON object): skipped and
    /// counted as a parse failure in the source's health.
    Invalid,
}

/// The timestamp in a record, if it parses.
pub(crate) fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| Timestamp::parse(s).ok())
}

/// A small first-in-first-out map of recently seen ids, to deduplicate records without
/// remembering every id of a huge log. Claude Code and Gemini CLI write a message's lines
/// one after the other, so a window of [`RECENT_IDS`] ids is enough to recognise the
/// repeats; an id that left the window long ago and comes back is counted again.
///
/// Ids are kept as 64-bit hashes: no allocation per id, and a lookup is a scan of 64
/// integers (a false match needs a 64-bit collision within the window).
#[derive(Debug)]
pub(crate) struct Recent<V> {
    entries: VecDeque<(u64, V)>,
}

/// How many ids a [`Recent`] window keeps.
pub(crate) const RECENT_IDS: usize = 64;

fn id_hash(id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            entries: VecDeque::new(),
        }
    }
}

impl<V> Recent<V> {
    /// The value kept for `id`, if it is in the window.
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let h = id_hash(id);
        self.entries
            .iter_mut()
            .rev()
            .find(|(k, _)| *k == h)
            .map(|(_, v)| v)
    }

    /// Whether `id` is in the window.
    pub(crate) fn contains(&self, id: &str) -> bool {
        let h = id_hash(id);
        self.entries.iter().any(|(k, _)| *k == h)
    }

    /// Adds `id` (which must not be in the window), returning the value it pushed out.
    pub(crate) fn insert(&mut self, id: &str, value: V) -> Option<V> {
        let evicted = if self.entries.len() >= RECENT_IDS {
            self.entries.pop_front().map(|(_, v)| v)
        } else {
            None
        };
        self.entries.push_back((id_hash(id), value));
        evicted
    }

    /// The values in the window.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

/// Tools started and not finished yet, newest last, bounded so a log that never reports
/// results cannot grow it.
#[derive(Debug, Default)]
pub(crate) struct PendingTools {
    calls: Vec<(String, String)>,
}

const MAX_PENDING: usize = 32;

impl PendingTools {
    /// A tool call started.
    pub(crate) fn start(&mut self, id: &str, name: &str) {
        if self.calls.len() >= MAX_PENDING {
            self.calls.remove(0);
        }
        self.calls.push((id.to_owned(), name.to_owned()));
    }

    /// A tool call finished.
    pub(crate) fn finish(&mut self, id: &str) {
        self.calls.retain(|(k, _)| k != id);
    }

    /// The oldest running call named `name` finished (for logs whose results name the tool,
    /// not the call).
    pub(crate) fn finish_oldest_named(&mut self, name: &str) {
        if let Some(i) = self.calls.iter().position(|(_, n)| n == name) {
            self.calls.remove(i);
        }
    }

    /// The turn ended: nothing is running any more.
    pub(crate) fn clear(&mut self) {
        self.calls.clear();
    }

    /// The name of the newest tool still running, or `""`.
    pub(crate) fn current(&self) -> &str {
        self.calls.last().map_or("", |(_, name)| name.as_str())
    }
}

/// Sets `field` to `value` if `value` is non-empty (text fields are overwritten only by
/// non-empty values).
pub(crate) fn set_if_some(field: &mut String, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        if field != v {
            v.clone_into(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn classifies_layouts() {
        let root = PathBuf::from("/r");
        let c = |p: &str| classify(SourceKind::Claude, &root, &root.join(p));
        assert_eq!(c("-home-a/0f.jsonl"), Some(FileKind::ClaudeSession));
        assert_eq!(
            c("-home-a/0f/subagents/agent-a1.jsonl"),
            Some(FileKind::ClaudeSubagent {
                parent: "0f".into(),
                agent: "a1".into()
            })
        );
        assert_eq!(
            c("-home-a/agent-9c1e.jsonl"),
            Some(FileKind::ClaudeSubagent {
                parent: String::new(),
                agent: "9c1e".into()
            })
        );
        assert_eq!(c("-home-a/0f/other/x.jsonl"), None);
        assert_eq!(c("-home-a/notes.txt"), None);
        let x = |p: &str| classify(SourceKind::Codex, &root, &root.join(p));
        assert_eq!(
            x("2026/01/02/rollout-2026-01-02T10-00-00-abc.jsonl"),
            Some(FileKind::CodexRollout)
        );
        assert_eq!(x("2026/01/02/history.jsonl"), None);
        let g = |p: &str| classify(SourceKind::Gemini, &root, &root.join(p));
        assert_eq!(g("ab12/chats/session-1.json"), Some(FileKind::GeminiJson));
        assert_eq!(g("ab12/chats/session-1.jsonl"), Some(FileKind::GeminiJsonl));
        assert_eq!(g("ab12/checkpoint.json"), None);
        assert_eq!(
            g("ab12/chats/9d1c2e3f-0000-4000-8000-00000000ge01/5f0e.jsonl"),
            Some(FileKind::GeminiSubagent {
                parent: "9d1c2e3f-0000-4000-8000-00000000ge01".into(),
                agent: "5f0e".into()
            })
        );
        assert_eq!(g("ab12/chats/p/notes.txt"), None);
        let p = |p: &str| classify(SourceKind::Pi, &root, &root.join(p));
        assert_eq!(
            p("--home-a--/2026-01-05T13-00-00-000Z_0c1d.jsonl"),
            Some(FileKind::PiSession)
        );
        assert_eq!(p("--home-a--/subagent-artifacts/0c1d_scout.jsonl"), None);
        assert_eq!(p("stray.jsonl"), None);
        assert_eq!(p("--home-a--/notes.txt"), None);
        let c = |p: &str| classify(SourceKind::Cursor, &root, &root.join(p));
        let transcript = |project: &str| {
            Some(FileKind::CursorTranscript {
                project: project.into(),
            })
        };
        assert_eq!(
            c("home-a/agent-transcripts/0f/0f.jsonl"),
            transcript("home-a")
        );
        assert_eq!(c("home-a/agent-transcripts/0f.jsonl"), transcript("home-a"));
        assert_eq!(c("agent-transcripts/0f/0f.jsonl"), transcript(""));
        assert_eq!(
            c("home-a/agent-transcripts/0f.txt"),
            Some(FileKind::CursorText {
                project: "home-a".into()
            })
        );
        assert_eq!(
            c("home-a/agent-transcripts/0f/subagents/5e.jsonl"),
            Some(FileKind::CursorSubagent {
                parent: "0f".into(),
                agent: "5e".into()
            })
        );
        assert_eq!(c("home-a/agent-transcripts/0f/other.jsonl"), None);
        assert_eq!(c("home-a/agent-tools/out.txt"), None);
        assert_eq!(c("home-a/terminals/1.txt"), None);
        assert_eq!(c("a/b/agent-transcripts/0f.jsonl"), None);
        let o = |p: &str| classify(SourceKind::OpenCode, &root, &root.join(p));
        assert_eq!(o("opencode.db"), Some(FileKind::OpenCodeDb));
        assert_eq!(o("opencode.db-wal"), Some(FileKind::OpenCodeDb));
        assert_eq!(o("opencode.db-shm"), None);
        assert_eq!(o("storage/opencode.db"), None);
        let a = |p: &str| classify(SourceKind::Antigravity, &root, &root.join(p));
        assert_eq!(
            a("brain/3d2c/.system_generated/logs/transcript.jsonl"),
            Some(FileKind::AntigravityTranscript {
                conversation: "3d2c".into()
            })
        );
        assert_eq!(
            a("brain/3d2c/.system_generated/logs/transcript_full.jsonl"),
            None
        );
        assert_eq!(
            a("brain/3d2c/.system_generated/subagents/5e6f.json"),
            Some(FileKind::AntigravitySubagent {
                parent: "3d2c".into()
            })
        );
        assert_eq!(
            a("cache/last_conversations.json"),
            Some(FileKind::AntigravityWorkspaces)
        );
        assert_eq!(a("settings.json"), Some(FileKind::AntigravitySettings));
        assert_eq!(a("conversations/3d2c.db"), None);
        assert_eq!(a("3d2c.json"), None);
    }

    #[test]
    fn recent_window_evicts_oldest() {
        let mut r = Recent::default();
        for i in 0..RECENT_IDS + 1 {
            let out = r.insert(&i.to_string(), i);
            assert_eq!(out.is_some(), i == RECENT_IDS);
        }
        assert!(!r.contains("0") && r.contains("1"));
        *r.get_mut("5").unwrap() = 50;
        assert!(r.values().any(|v| *v == 50));
    }
}
