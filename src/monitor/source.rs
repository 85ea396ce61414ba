//! Sources of your own: the [`Source`] and [`LogParser`] traits, and what they exchange
//! ([`LogFile`], [`SessionReport`]).

use std::fmt;
use std::path::Path;

use super::sources::{Counts, LineResult, Report};
use crate::wire::{Activity, SubagentState, Timestamp};

/// An agent whose logs the monitor reads. Implement it for an agent of your own and
/// register it with [`MonitorBuilder::source`](super::MonitorBuilder::source): it says which
/// files under a root are its session logs and gives each a [`LogParser`], which turns the
/// log into a [`SessionReport`]. Its logs are then tracked, read, merged and reported exactly
/// as the built-in sources' are: the same incremental reading from a saved offset, the same
/// backlog and read budget, the same lifecycle (`discovered` → `updated` → `stale` →
/// `resumed` → `removed`), the same merge rules, the same per-source health (its `source` is
/// the source's [`name`](Source::name)), and the same session-end and hook markers.
///
/// # Contract
/// - A parser reads one version of one file, from its first byte. When the file is
///   truncated or replaced (a line log), or changes at all (a [whole](LogFile::whole) file),
///   the monitor asks the source for a fresh parser and reads the file again from the start.
/// - A parser keeps the *absolute* state of its file: counts in its report are the file's own
///   totals, never increments. The monitor adds the difference between two reports to the
///   session, so a file read again from the start is never counted twice.
/// - A line is at most 1 MiB (longer lines are skipped and counted as parse failures); a
///   whole file is at most 16 MiB (a larger one is not read, and counts as one failure).
/// - [`LineResult::Invalid`] counts as a parse failure in the source's health
///   (`parseFailures`) and a `debug` trace; nothing else is logged about a line. A parser
///   should not panic; if it does on a line or a whole file, that record counts as a parse
///   failure (with a `warn` trace), and the parser goes on with the next one.
///
/// # Privacy
/// Logs hold prompts, code and tool output. A parser must keep only the fields a
/// [`SessionReport`] has, and nothing else of a line: no prompt or reply text, tool input or
/// output. The monitor never logs a line, a report or a log path.
///
/// # Session ids
/// A session log's id is its report's [`session_id`](SessionReport::session_id), fixed at the
/// first report; an empty id, or one another file already reports, is replaced by the file's
/// stem (file name without extension). Ids are shared with every other source in the monitor:
/// a source should use the agent's own ids (UUIDs in practice).
///
/// # Example
///
/// ```
/// use std::path::Path;
/// use agentwatch_ws::monitor::{LineResult, LogFile, LogParser, SessionReport, Source};
///
/// /// Logs named `<root>/<session id>.log`, one line per message.
/// struct Counter;
///
/// struct CounterLog(SessionReport);
///
/// impl Source for Counter {
///     fn name(&self) -> &str {
///         "counter"
///     }
///     fn classify(&self, relative: &Path) -> Option<LogFile> {
///         let single = relative.components().count() == 1;
///         (single && relative.extension()? == "log").then(LogFile::session)
///     }
///     fn parser(&self, _file: &LogFile) -> Box<dyn LogParser> {
///         Box::new(CounterLog(SessionReport::default()))
///     }
/// }
///
/// impl LogParser for CounterLog {
///     fn line(&mut self, _line: &[u8]) -> LineResult {
///         self.0.messages += 1;
///         LineResult::Used
///     }
///     fn report(&self) -> &SessionReport {
///         &self.0
///     }
/// }
/// ```
pub trait Source: Send + Sync + 'static {
    /// The source's name: the `source` of its sessions, lifecycle events and health, on the
    /// wire. Sources are told apart by name: roots registered under one name share one
    /// health. It must not be empty, and should not be a built-in source's
    /// ([`SourceKind::name`](super::SourceKind::name)).
    fn name(&self) -> &str;

    /// What the file at `relative` (its path under the root, without the root) is, or
    /// `None` when it is none of this source's logs. Called for every file found under the
    /// root, at each scan and notification, so it should decide from the path alone, and
    /// quickly.
    fn classify(&self, relative: &Path) -> Option<LogFile>;

    /// A fresh parser for a file [`classify`](Source::classify) returned `file` for.
    fn parser(&self, file: &LogFile) -> Box<dyn LogParser>;
}

/// A shared source: one value registered for several roots
/// (`.source(Arc::clone(&mine), a).source(mine, b)`).
impl<S: Source + ?Sized> Source for std::sync::Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn classify(&self, relative: &Path) -> Option<LogFile> {
        (**self).classify(relative)
    }

    fn parser(&self, file: &LogFile) -> Box<dyn LogParser> {
        (**self).parser(file)
    }
}

/// A boxed source, such as one picked at run time (`Box<dyn Source>`).
impl<S: Source + ?Sized> Source for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn classify(&self, relative: &Path) -> Option<LogFile> {
        (**self).classify(relative)
    }

    fn parser(&self, file: &LogFile) -> Box<dyn LogParser> {
        (**self).parser(file)
    }
}

/// Reads one version of one log file into a [`SessionReport`]; see [`Source`] for the
/// contract.
pub trait LogParser: Send {
    /// One line of a line log, without its line ending (`\n` or `\r\n`). Empty lines are
    /// not passed.
    fn line(&mut self, line: &[u8]) -> LineResult;

    /// The whole content of a [whole](LogFile::whole) file, once per version of the file
    /// (on a fresh parser). The default supports none: it returns
    /// [`LineResult::Unknown`], and the file reports nothing.
    fn whole(&mut self, bytes: &[u8]) -> LineResult {
        let _ = bytes;
        LineResult::Unknown
    }

    /// What the log read so far says. Read after each read that found new data; a report
    /// whose [`last_activity_at`](SessionReport::last_activity_at) is zero (no record with a
    /// time yet) is not published.
    fn report(&self) -> &SessionReport;
}

/// What a file under a source's root is: a session's log, or a subagent's log under a parent
/// session, read as appended lines (the default) or [whole](LogFile::whole) at each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    subagent: Option<(String, String)>,
    whole: bool,
}

impl LogFile {
    /// A session's log: its report is a session, under the source's name.
    pub fn session() -> Self {
        LogFile {
            subagent: None,
            whole: false,
        }
    }

    /// A subagent's log: its report is the subagent `agent` of session `parent` (shown in the
    /// parent's `subagents` once the parent is known). Its [`session_id`](SessionReport::session_id)
    /// is not used; its activity `terminal` means the subagent finished.
    pub fn subagent(parent: impl Into<String>, agent: impl Into<String>) -> Self {
        LogFile {
            subagent: Some((parent.into(), agent.into())),
            whole: false,
        }
    }

    /// The same file, read whole each time it changes (a log rewritten in place, such as a
    /// JSON document) and given to [`LogParser::whole`], instead of line by line from where
    /// the last read stopped.
    #[must_use]
    pub fn whole(mut self) -> Self {
        self.whole = true;
        self
    }

    /// Whether the file is read whole at each change.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// The parent session's id, for a subagent's log.
    pub fn parent(&self) -> Option<&str> {
        self.subagent.as_ref().map(|(p, _)| p.as_str())
    }

    /// The subagent's id, for a subagent's log.
    pub fn agent(&self) -> Option<&str> {
        self.subagent.as_ref().map(|(_, a)| a.as_str())
    }
}

/// What one log says about its session: the fields of [`SessionState`](crate::SessionState)
/// a log can tell. Text fields left empty do not overwrite what the session has; counts are
/// the file's absolute totals (the monitor adds their increase to the session's counts);
/// tokens are absolute. Built with [`Default`] and filled in field by field.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionReport {
    /// The session id (`id` on the wire). See "Session ids" in the [`Source`] docs.
    pub session_id: String,
    /// A short human-readable name of the session.
    pub slug: String,
    /// The model in use.
    pub model: String,
    /// The directory the agent runs in (`workingDir`).
    pub working_dir: String,
    /// The git branch.
    pub branch: String,
    /// What the agent is doing: `working` during a turn, `waiting` when the turn ended and
    /// the next move is the person's, `terminal` when the session ended (default `idle`).
    pub activity: Activity,
    /// The tool running now; empty clears it.
    pub current_tool: String,
    /// Tokens in the context window now.
    pub context_tokens: i64,
    /// Output tokens so far.
    pub output_tokens: i64,
    /// The context window's size in tokens; 0 when unknown.
    pub max_context_tokens: i64,
    /// Messages in this file so far (prompts and replies).
    pub messages: i64,
    /// Tool calls in this file so far.
    pub tool_calls: i64,
    /// Context compactions in this file so far.
    pub compactions: i64,
    /// When the session started (the log's own time).
    pub started_at: Timestamp,
    /// The time of the latest record (the log's own time); zero means no record yet, and
    /// then nothing is published.
    pub last_activity_at: Timestamp,
    /// Subagents the log itself describes (each with its `parentId` set to this session).
    pub subagents: Vec<SubagentState>,
}

impl SessionReport {
    /// The internal report under `id`.
    pub(crate) fn to_report(&self, id: &str) -> Report {
        Report {
            session_id: id.to_owned(),
            slug: self.slug.clone(),
            model: self.model.clone(),
            working_dir: self.working_dir.clone(),
            branch: self.branch.clone(),
            activity: self.activity.clone(),
            tentative: false,
            current_tool: self.current_tool.clone(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens,
            max_context_tokens: self.max_context_tokens,
            counts: self.counts(),
            started_at: self.started_at,
            last_activity_at: self.last_activity_at,
            subagents: self.subagents.clone(),
            finished_subagents: Vec::new(),
        }
    }

    /// The counts, as the merge takes them.
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            messages: self.messages,
            tool_calls: self.tool_calls,
            compactions: self.compactions,
        }
    }

    /// The report as the subagent `agent` of `parent`.
    pub(crate) fn to_subagent(&self, agent: &str, parent: &str) -> SubagentState {
        let ended = self.activity == Activity::Terminal;
        SubagentState {
            id: agent.to_owned(),
            parent_id: parent.to_owned(),
            slug: self.slug.clone(),
            activity: self.activity.clone(),
            current_tool: if ended {
                String::new()
            } else {
                self.current_tool.clone()
            },
            started_at: self.started_at,
            last_activity_at: self.last_activity_at,
            model: self.model.clone(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens,
            message_count: self.messages,
            tool_call_count: self.tool_calls,
            completed_at: if ended {
                self.last_activity_at
            } else {
                Timestamp::ZERO
            },
        }
    }
}

/// The source of a root: a built-in one or one registered through [`Source`].
#[derive(Clone)]
pub(crate) enum SourceId {
    Builtin(super::SourceKind),
    Custom(std::sync::Arc<dyn Source>),
}

impl SourceId {
    /// The name on the wire.
    pub(crate) fn name(&self) -> &str {
        match self {
            SourceId::Builtin(kind) => kind.name(),
            SourceId::Custom(source) => source.name(),
        }
    }

    /// Whether this is the built-in `kind`.
    pub(crate) fn is(&self, kind: super::SourceKind) -> bool {
        matches!(self, SourceId::Builtin(k) if *k == kind)
    }

    /// Whether only the files directly in the root belong to the source.
    pub(crate) fn flat(&self) -> bool {
        matches!(self, SourceId::Builtin(k) if k.flat())
    }
}

impl fmt::Debug for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceId::Builtin(kind) => write!(f, "{kind:?}"),
            SourceId::Custom(source) => write!(f, "Custom({:?})", source.name()),
        }
    }
}
