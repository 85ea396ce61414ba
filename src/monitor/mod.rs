//! The producer: a [`Monitor`] that tails Claude Code, Codex CLI, Gemini CLI, Pi, Cursor and
//! Antigravity CLI session logs and reads OpenCode's session database, and publishes
//! agentwatch [`Event`]s to any [`EventSink`], usually the [`Publisher`](crate::Publisher) of a
//! [`WsLayer`](crate::WsLayer) (cargo feature `monitor`).
//!
//! ```no_run
//! use agentwatch_ws::monitor::Monitor;
//! use agentwatch_ws::WsLayer;
//!
//! # async fn run() -> std::io::Result<()> {
//! let (ws, publisher) = WsLayer::new().build::<()>("/ws");
//! let monitor = Monitor::builder()
//!     .default_roots()                       // ~/.claude/projects, ~/.codex/sessions, ~/.gemini/tmp
//!     .build(publisher);
//! let handle = monitor.spawn()?;             // its own thread; returns at once
//! // … serve `ws` …
//! handle.stop();                             // stops and joins the thread
//! # Ok(()) }
//! ```
//!
//! # What it reports (agentwatch's semantics)
//! - Lifecycle per session: `discovered` (new) → `updated` (new data) → `terminal` (the
//!   source says it ended: a session-end marker or a `SessionEnd` hook marker) or `stale` (no data for
//!   [`stale_after`](MonitorBuilder::stale_after), default 5 min, unless a hook reported a
//!   wait: see "Hook markers") → `resumed` (data after
//!   terminal) → `removed` ([`retention`](MonitorBuilder::retention), default 30 s, after
//!   becoming terminal).
//! - One batch's events, each with the next `seq`: lifecycle events, then one `delta`
//!   (updated sessions with their whole state, removed ids), then one `health` per source
//!   whose status changed.
//! - Merge rules: token fields absolute; message, tool-call and compaction counts accumulate
//!   (a log read again from the start is never counted twice); text fields overwritten only
//!   by non-empty values, except `currentTool`, which is cleared when the tool finishes (Go
//!   never cleared it); `contextUtilization = contextTokens / maxContextTokens` (0 when the
//!   size is unknown); `lastDataReceivedAt` is when the monitor read the data,
//!   `lastActivityAt` the log's own timestamp of its latest record.
//! - Health per source (`claude`, `codex`, `gemini`, `pi`, `cursor`, `opencode`,
//!   `antigravity`, or a registered [`Source`]'s name): `degraded` after 3 consecutive failed
//!   scans, `failed` after 6 (see [`health_threshold`](MonitorBuilder::health_threshold));
//!   `lastError` has paths replaced by `<path>`. **Deviation from Go:** besides each change,
//!   every source's health is published once at start (Go publishes only changes, so a
//!   healthy start says nothing), so a store can give clients every source's health at once.
//! - Activity: `working` while a turn is in progress, `waiting` when the agent ended its
//!   turn (a turn end read from a reply alone is published after
//!   [`turn_end_delay`](MonitorBuilder::turn_end_delay), default 3 s, unless a line says
//!   otherwise meanwhile), `idle` once a `working` session has had no record for
//!   [`idle_after`](MonitorBuilder::idle_after) (default 2 min: longer than any tool call
//!   that streams nothing, short enough to spot an agent that died mid-turn).
//!
//! # Working directory, threads and forks
//! - `workingDir` is the directory the agent runs in, from its log (Claude Code, Codex, Pi,
//!   Cursor) or its project folder. Gemini CLI records it beside the chats from v0.29
//!   (`.project_root`, `projects.json`) and in a chat's `directories` after a
//!   `/directory add`; older Gemini CLI folders are only the SHA-256 of the directory,
//!   matched against the working directories of the other sessions the monitor reads and,
//!   on Linux, of running `gemini` processes. A Gemini session whose directory none of
//!   those names has no `workingDir`; it is filled in (an `updated` event) when a session
//!   in that directory is found.
//! - Codex CLI: a subagent thread that names the thread that spawned it is a subagent of
//!   that session (`subagents`, its nickname as `slug`, its own activity and counts); one
//!   that does not (`/review`, auto-compaction) and a fork the person made are sessions of
//!   their own. The copy of the parent's history a fork or subagent starts with is not
//!   counted: tokens, messages and tool calls are the thread's own work.
//!
//! # Hook markers: waits the log does not show
//! A Claude Code permission prompt leaves only a `tool_use` without its result in the
//! transcript, so from the log alone the session reads `working` with that tool. With
//! `agentwatch-ws hooks install` (feature `cli`), Claude Code runs `agentwatch-ws hook` on its
//! hook events, and each run drops a [hook marker](crate::markers) into the
//! [`marker_dir`](MonitorBuilder::marker_dir). The monitor lays the marker over what the log
//! says:
//! - `PermissionRequest`, or `Notification` with `notification_type` `permission_prompt`:
//!   `waiting`, with `currentTool` the hook's tool (else the tool the log says is running);
//! - `Stop`, or `Notification` `idle_prompt`: `waiting`, no tool;
//! - `PostToolUse`, `UserPromptSubmit`: `working` (a prompt was answered);
//! - `SessionEnd`: `terminal`, as a session-end marker;
//! - other events (`PreToolUse`, `SessionStart`, `SubagentStop`, other notifications): no
//!   change.
//!
//! The latest in time wins: a marker older than the log's latest message or tool call, or
//! than the marker already applied, is ignored; the overlay lasts until the log has a new
//! message or tool call (a `tool_result`, a prompt) later than the marker, which is the
//! answer. Records that carry no message (`progress` lines of hooks, file-history snapshots)
//! do not end it. While a session stays `waiting`, its `lastActivityAt` does not move: a wait
//! begins at the time of the marker that started it (or, for a turn that ended in the log, at
//! that record), so a page can count "waiting for 13 min" from it. A marker for a session the
//! monitor has not seen yet is kept (at most 256, oldest dropped) until its log appears. A
//! session in a wait a hook reported does not go `stale` for 24 hours after the marker (the
//! agent is alive, waiting for the person; its `SessionEnd` hook ends the session), so a long
//! permission wait stays on the page.
//!
//! Without hooks, a permission prompt still reads `working` (then `idle`): the monitor never
//! guesses a wait from a long-running tool. With hooks, no hook runs when a prompt is answered:
//! the next sign is the tool's end (`PostToolUse`, its `tool_result`), so a long tool run
//! after an approval still reads `waiting` until it finishes.
//!
//! # How it reads
//! - Change detection is event-driven (`notify`: inotify, FSEvents, kqueue,
//!   ReadDirectoryChangesW); a burst of appends within [`debounce`](MonitorBuilder::debounce)
//!   is one batch. A full rescan every [`rescan_interval`](MonitorBuilder::rescan_interval)
//!   (default 60 s) is the safety net for lost notifications; it only `stat`s known files. An
//!   idle machine costs one directory walk a minute, nothing else.
//! - At start, logs not modified within the stale threshold are not loaded (so years of
//!   history do not flood clients with discovered/stale/removed events); they join when they
//!   change.
//! - Each JSONL log is read from a saved byte offset, never from the start again and never
//!   whole into memory; a partial last line waits for its newline; a line over 1 MiB is
//!   skipped and counted as a parse failure; invalid JSON and unknown record types are
//!   skipped; a truncated or replaced log is read again from the start without counting
//!   twice; a deleted log leaves its session to go stale; symbolic links to directories are
//!   not followed, so link loops cannot hang it.
//! - Only regular files are read. A path is `stat`ed first and opened only if it is a
//!   regular file, without blocking (`O_NONBLOCK | O_NOCTTY` on Unix), and the type is
//!   checked again on the open descriptor (`fstat`), so a FIFO, Unix socket or device file
//!   (or a link to one) where a log, a Gemini chat, a subagent log or a session-end marker
//!   is expected never blocks the monitor and changes nothing: it is counted once
//!   ([`Monitor::ignored_files`]) and logged once at `warn` (source and kind, no path).
//! - Reading is fair. The monitor works in passes: the paths a notification named (after
//!   the debounce), a full rescan, or the *backlog*; each pass ends with one batch of
//!   events. A pass reads for at most [`PASS_BUDGET`] (25 ms, plus one 64 KiB buffer per
//!   log it reads) and at most [`READ_CAP`] (16 MiB) per log, logs with the least unread
//!   data first, and never past the length a log had when opened; a log with bytes left
//!   joins the backlog. Backlog passes run whenever nothing else is due, giving each log in
//!   it an equal share of [`PASS_BUDGET`] (at least 1 ms), round-robin, and end early when
//!   a notification's debounce (counted from when the watcher saw the change) runs out;
//!   notifications about a log in the backlog are left to them. So a log growing faster
//!   than the monitor reads it (or a large log's first load) takes its share of every
//!   backlog pass, while another log's change is read right after its debounce: at most one
//!   64 KiB buffer of the backlog later. The bound for another session's update is 100 ms
//!   (measured: 25–50 ms median in a debug build on a loaded 2-core machine, the writer
//!   appending as fast as it could); it grows only when many logs change at once (a pass
//!   reads changes, small ones first, for [`PASS_BUDGET`]; the rest follow in the next
//!   passes). Memory stays bounded: one 64 KiB
//!   buffer, at most one partial line (1 MiB) per log, and the backlog lists each log once.
//!   The first load of a large log runs in the background the same way, at the same
//!   throughput; [`Monitor::scan`] reads it to the end before returning.
//! - OpenCode keeps every session in one SQLite database, not in logs: it is opened
//!   read-only (OpenCode, its writer, is never locked out) and polled when it or its WAL
//!   changes, and again 50 ms after a poll that found a commit (the WAL is written, and
//!   notifies, before the commit is published); a poll reads only the sessions whose rows
//!   changed or whose turn is in progress, at most 32 sessions and 1000 rows a query, the
//!   rest in the next poll. The data dir's subdirectories (OpenCode's file snapshots) are
//!   neither walked nor watched.
//! - [`MonitorHandle::stop`] returns within [`STOP_TIMEOUT`] even if a file-system call
//!   hangs: the thread checks for the stop between passes.
//!
//! # Privacy
//! Logs hold prompts, code and tool output. The parsers read only the fields the wire model
//! needs and skip the rest unparsed: no prompt or assistant text, tool input or output, or
//! log path reaches a session, an event, an error or a trace.
//!
//! # Sources
//! See [`SourceKind`] for the built-in sources' layouts, and the source modules' docs in the
//! crate sources (`src/monitor/sources/`) for which record fields become which session
//! fields.
//!
//! An agent of your own is a [`Source`]: it names itself (the wire `source`), says which
//! files under a root are its logs ([`LogFile`]) and parses each with a [`LogParser`] into a
//! [`SessionReport`]. Register it with [`MonitorBuilder::source`]; its logs are then tracked,
//! read (incrementally, within the same read budget and backlog), merged, aged and reported
//! through the same code as the built-in logs, with a health of its own under its name. The
//! example `examples/custom_source.rs` reads a small JSON-lines agent.
//!
//! What a [`Source`] cannot express, the built-in sources do in the monitor itself: joining
//! two files into one session (Gemini CLI's `.json` continued in a `.jsonl`), learning a
//! working directory or a model from files that are no session logs (Gemini CLI's project
//! folders, Cursor's project names, Antigravity CLI's workspace map, settings and subagent
//! records), nesting Codex CLI threads, and polling OpenCode's SQLite database (no log
//! files: one database for every session). So the built-in sources stay [`SourceKind`]s,
//! registered with [`MonitorBuilder::root`], not [`Source`] implementations.
//!
//! # What each agent's logs tell
//!
//! A session is `waiting` when the next move is the person's: its agent finished its turn,
//! asks permission to run a tool (then `currentTool` names it), or waits for input.
//!
//! | agent | turn ended | permission prompt |
//! |---|---|---|
//! | Claude Code | `waiting` | `waiting` with the tool, with the hooks installed; without them `working` with the tool, then `idle` |
//! | Codex CLI | `waiting` (`task_complete`; `turn_aborted` on an interrupt) | not in the rollout: `working`, then `idle` |
//! | Gemini CLI | `waiting` (a model message with no tool call running) | not in the chat (tool calls are recorded once finished): `waiting` with the tool with Gemini CLI's hooks installed; without them `waiting` from the model's message, without the tool |
//!
//! **Claude Code.** The end of a turn is read from what each version writes, never from one
//! field: most versions (1.0.24 to 2.1.x) put `stop_reason: null` on every line, the last
//! included, so a text reply with no tool call ends the turn; 2.1.x also writes `system`
//! lines (`turn_duration`, `stop_hook_summary`) once a turn is over, 2.1.92 and later the
//! message's final `stop_reason` on each of its lines; an interrupt (`[Request interrupted
//! by user]`) and an API error (`isApiErrorMessage`) end it too. Claude Code writes one line
//! per content block, a tool call's once its input has streamed, and up to 2.1.39 nothing on
//! a text line tells it from a final reply. So a text reply with nothing after it is a
//! tentative end: the session stays `working` for the turn-end delay and turns `waiting`
//! then, unless the tool call's line comes first; its `lastActivityAt` is the reply's time
//! either way. Stated ends are published at once. With the hooks installed, a tentative end
//! waits for the `Stop` hook (the stated end) for up to 60 s instead. In real 2.1.38/2.1.39
//! transcripts the tool call's line followed the text's by a median 1.0 s; 22 % took over
//! 3 s (up to 72 s for a long `Write`) and show `waiting` for the rest of that gap, which is
//! why the dashboard announces a wait only once it has lasted 1.5 s. Local commands
//! (`/model`, `/exit`, bash mode `!`), meta lines and compaction summaries are no prompts:
//! they neither count as messages nor make the session `working`. A subagent is `terminal`
//! once its parent's log reports its result (`toolUseResult` with its `agentId`, or a
//! `<task-notification>`); `Warmup` sidechains and Claude Code's own compaction runs
//! (`agent-acompact-*`) are not subagents; a log holding no message yet (only `summary` or
//! `file-history-snapshot` lines) is not a session. Transcripts name the model without
//! `[1m]`: a context above 200 000 tokens means the 1M window, so utilisation stays ≤ 1. A
//! message written as several lines is one message, its output tokens taken once; `content`
//! as a string counts; compactions (`compact_boundary`) count. The samples in
//! `tests/data/monitor/claude/` name the version each models.
//!
//! **Codex CLI.** Compactions count (`compacted` items and `context_compacted` events, once
//! per compaction); a forked rollout keeps its own start (a later `session_meta` is its
//! parent's); the context window is known from `task_started`; a session keeps its id after
//! the first read, and a `user_message` means `working`. Versions whose rollouts keep no
//! turn events go `working` → `idle`. Codex's own `notify` setting runs a program when a
//! turn completes, with prompt and reply text in its argument: the moment the monitor
//! already reports as `waiting`; approval prompts reach only the TUI's own notifications.
//!
//! **Gemini CLI.** `chats/session-*.json` (0.38 and earlier) and `session-*.jsonl` (0.39 and
//! later, messages upserted by id); a resumed `.json` chat continues in the `.jsonl` beside
//! it, one session, tokens counted once; `$rewindTo` removes the rewound messages with their
//! counts and tokens; a `$set` rewriting the history after a compression counts one
//! compaction; `chats/<parent session id>/<id>.jsonl` are subagents of that session.

#[cfg(fuzzing)]
pub(crate) mod fuzzing;
mod health;
mod lifecycle;
mod models;
mod scan;
mod source;
mod sources;
mod tail;
mod watch;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::RecursiveMode;

use crate::layer::bounded;
use crate::sink::EventSink;
use crate::wire::{Event, Health, SessionState};

pub use source::{LogFile, LogParser, SessionReport, Source};
pub use sources::{LineResult, SourceKind};

use lifecycle::{Lifecycle, Timing};
use scan::{Root, Scanner};
use source::SourceId;
use watch::Message;

/// The longest any duration setting of [`MonitorBuilder`] is taken as: 100 years (365-day).
/// Longer values, up to `Duration::MAX`, are clamped to it: the monitor's clock arithmetic
/// (`Instant` + duration) cannot overflow, and a value that long already means "never".
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Default `MonitorBuilder::stale_after`: 5 minutes (Go's default).
pub(crate) const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(5 * 60);
/// Largest `MonitorBuilder::first_seq`: 2^63 - 1, leaving the monitor 2^63 events before
/// its seq could overflow.
const MAX_FIRST_SEQ: u64 = u64::MAX >> 1;
/// Shortest `MonitorBuilder::stale_after`: 1 s, the modification-time resolution of common
/// file systems (ext3, HFS+; FAT's is 2 s).
const MIN_STALE_AFTER: Duration = Duration::from_secs(1);
/// Default [`MonitorBuilder::retention`]: 30 seconds (Go's default).
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(30);
/// Default [`MonitorBuilder::idle_after`]: 2 minutes.
pub(crate) const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(2 * 60);
/// Default [`MonitorBuilder::turn_end_delay`]: 3 seconds. In real Claude Code 2.1.38 and
/// 2.1.39 transcripts (588 text lines followed by a tool call of the same message), the
/// tool call's line came a median 1.0 s after the text's, over 3 s after it for 22 % of
/// them, and over 5 s for 14 % (a long tool input: up to 72 s); a wait shows this much
/// later than the reply where nothing after it says the turn is over.
pub(crate) const DEFAULT_TURN_END_DELAY: Duration = Duration::from_secs(3);
/// Default [`MonitorBuilder::rescan_interval`]: 60 seconds.
pub(crate) const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Default [`MonitorBuilder::debounce`]: 5 milliseconds.
pub(crate) const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(5);
/// Default [`MonitorBuilder::health_threshold`]: 3 (Go's default).
pub(crate) const DEFAULT_HEALTH_THRESHOLD: u32 = 3;

/// How long [`MonitorHandle::stop`] waits for the monitor's thread: 2 seconds. A pass ends
/// within [`PASS_BUDGET`] and the thread checks for the stop between passes, so it ends long
/// before unless a file-system call hangs (a dead network mount); then the thread is left
/// to end on its own.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The time one pass of the monitor spends reading logs before it publishes: 25 ms. See
/// [How it reads](self#how-it-reads).
pub const PASS_BUDGET: Duration = scan::PASS_BUDGET;

/// The most bytes one log is read in one pass: 16 MiB.
pub const READ_CAP: u64 = scan::READ_CAP;

/// Forced rescans (after the watcher lost events) are at least this far apart.
const MIN_FORCED_RESCAN: Duration = Duration::from_secs(1);

/// Notifications taken from the watcher's channel between two passes, at most: a flood of
/// them cannot keep the monitor from reading.
const MAX_MESSAGES_PER_PASS: usize = 10_000;

/// The default log roots that exist, from the environment at call time:
/// - Claude Code: `$HOME/.claude/projects`, `$HOME/.config/claude/projects` and
///   `<dir>/projects` for each comma-separated `<dir>` of `$CLAUDE_CONFIG_DIR`;
/// - Codex CLI: `$CODEX_HOME/sessions` (else `$HOME/.codex/sessions`);
/// - Gemini CLI: `$HOME/.gemini/tmp`;
/// - Pi: `$PI_CODING_AGENT_SESSION_DIR`, else the `sessionDir` of
///   `<agent dir>/settings.json`, else `<agent dir>/sessions`, the agent dir being
///   `$PI_CODING_AGENT_DIR` (else `$HOME/.pi/agent`); a leading `~` in any of them is
///   `$HOME`, and a relative `sessionDir` is ignored;
/// - Cursor: `$CURSOR_CONFIG_DIR/projects` and `$HOME/.cursor/projects`;
/// - OpenCode: its data dir, `$XDG_DATA_HOME/opencode` (else `$HOME/.local/share/opencode`),
///   where `opencode.db` is;
/// - Antigravity CLI: `$HOME/.gemini/antigravity-cli`.
///
/// Roots that are not directories are left out, and each directory is listed once; with no
/// `HOME` only the roots the variables name count.
pub fn default_roots() -> Vec<(SourceKind, PathBuf)> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let codex_home = std::env::var_os("CODEX_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".codex")));
    let mut candidates = Vec::new();
    if let Some(home) = &home {
        candidates.push((SourceKind::Claude, home.join(".claude/projects")));
        candidates.push((SourceKind::Claude, home.join(".config/claude/projects")));
    }
    if let Some(dirs) = std::env::var_os("CLAUDE_CONFIG_DIR") {
        let dirs = dirs.to_string_lossy().into_owned();
        for dir in dirs.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            candidates.push((SourceKind::Claude, PathBuf::from(dir).join("projects")));
        }
    }
    if let Some(codex) = codex_home {
        candidates.push((SourceKind::Codex, codex.join("sessions")));
    }
    if let Some(home) = &home {
        candidates.push((SourceKind::Gemini, home.join(".gemini/tmp")));
    }
    let pi = pi_sessions_dir(
        env_dir("PI_CODING_AGENT_SESSION_DIR", home.as_deref()),
        env_dir("PI_CODING_AGENT_DIR", home.as_deref()),
        home.as_deref(),
    );
    if let Some(dir) = pi {
        candidates.push((SourceKind::Pi, dir));
    }
    if let Some(dir) = env_dir("CURSOR_CONFIG_DIR", home.as_deref()) {
        candidates.push((SourceKind::Cursor, dir.join("projects")));
    }
    if let Some(home) = &home {
        candidates.push((SourceKind::Cursor, home.join(".cursor/projects")));
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .or_else(|| home.as_ref().map(|h| h.join(".local/share")));
    if let Some(data) = data_home {
        candidates.push((SourceKind::OpenCode, data.join("opencode")));
    }
    if let Some(home) = &home {
        candidates.push((
            SourceKind::Antigravity,
            home.join(".gemini/antigravity-cli"),
        ));
    }
    candidates.retain(|(_, p)| p.is_dir());
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|(_, p)| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())));
    candidates
}

/// `path` with a leading `~` (alone or before a separator) replaced by `home`; `None` when
/// it needs a home and there is none.
fn expand_home(path: &str, home: Option<&Path>) -> Option<PathBuf> {
    match path.strip_prefix('~') {
        Some("") => home.map(Path::to_path_buf),
        Some(rest) if rest.starts_with(['/', '\\']) => {
            home.map(|h| h.join(rest.trim_start_matches(['/', '\\'])))
        }
        _ => Some(PathBuf::from(path)),
    }
}

/// The directory an environment variable names (non-empty, `~` expanded).
fn env_dir(name: &str, home: Option<&Path>) -> Option<PathBuf> {
    let value = std::env::var_os(name).filter(|v| !v.is_empty())?;
    expand_home(&value.to_string_lossy(), home)
}

/// Pi's sessions directory, as pi itself decides it (`config.ts`, `settings-manager.ts`):
/// `session_env` (`$PI_CODING_AGENT_SESSION_DIR`), else `sessionDir` in
/// `<agent dir>/settings.json`, else `<agent dir>/sessions`; the agent dir is `agent_env`
/// (`$PI_CODING_AGENT_DIR`), else `<home>/.pi/agent`.
fn pi_sessions_dir(
    session_env: Option<PathBuf>,
    agent_env: Option<PathBuf>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(dir) = session_env {
        return Some(dir);
    }
    let agent = agent_env.or_else(|| home.map(|h| h.join(".pi/agent")))?;
    let configured = pi_settings_session_dir(&agent.join("settings.json"))
        .and_then(|dir| expand_home(&dir, home))
        .filter(|dir| dir.is_absolute());
    Some(configured.unwrap_or_else(|| agent.join("sessions")))
}

/// The `sessionDir` string of pi's settings file, if the file is a regular file of at most
/// 1 MiB holding a JSON object with one.
fn pi_settings_session_dir(path: &Path) -> Option<String> {
    use std::io::Read;
    const MAX_SETTINGS: u64 = 1 << 20;
    let file = match tail::open_regular(path).ok()? {
        tail::Opened::File(file, meta) if meta.len() <= MAX_SETTINGS => file,
        _ => return None,
    };
    let mut text = Vec::new();
    file.take(MAX_SETTINGS).read_to_end(&mut text).ok()?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Settings {
        session_dir: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Settings>(&text) {
        Ok(settings) => settings
            .session_dir
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|d| !d.is_empty()),
        Err(_) => {
            tracing::debug!("pi's settings file is not valid JSON; using the default sessions dir");
            None
        }
    }
}

/// Configures a [`Monitor`]. Every setting has a documented default; only the roots must
/// be given (a monitor with none publishes nothing). Number settings follow the crate's rule
/// (see [`WsLayer`](crate::WsLayer#numbers)): `None` switches a behaviour off where that makes
/// sense, values outside a setting's range are raised or lowered to it with a `warn`, and
/// nothing panics.
///
/// ```
/// use std::time::Duration;
/// use agentwatch_ws::WsLayer;
/// use agentwatch_ws::monitor::{Monitor, SourceKind};
///
/// let dir = tempfile::tempdir()?;
/// let (_router, publisher) = WsLayer::new().build::<()>("/ws");
/// let monitor = Monitor::builder()
///     .root(SourceKind::Claude, dir.path())
///     .stale_after(Duration::from_secs(600))
///     .idle_after(None)                           // never mark a working session idle
///     .build(publisher);
/// assert_eq!(monitor.roots().len(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MonitorBuilder {
    roots: Vec<(SourceId, PathBuf)>,
    marker_dir: Option<PathBuf>,
    stale_after: Duration,
    retention: Duration,
    idle_after: Duration,
    turn_end_delay: Duration,
    rescan_interval: Duration,
    debounce: Duration,
    health_threshold: u32,
    first_seq: u64,
}

impl Default for MonitorBuilder {
    fn default() -> Self {
        MonitorBuilder {
            roots: Vec::new(),
            marker_dir: None,
            stale_after: DEFAULT_STALE_AFTER,
            retention: DEFAULT_RETENTION,
            idle_after: DEFAULT_IDLE_AFTER,
            turn_end_delay: DEFAULT_TURN_END_DELAY,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            debounce: DEFAULT_DEBOUNCE,
            health_threshold: DEFAULT_HEALTH_THRESHOLD,
            first_seq: 1,
        }
    }
}

impl MonitorBuilder {
    /// A builder with no roots and every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every [`default_roots`] directory that exists now.
    pub fn default_roots(mut self) -> Self {
        self.roots.extend(
            default_roots()
                .into_iter()
                .map(|(kind, path)| (SourceId::Builtin(kind), path)),
        );
        self
    }

    /// Adds a root directory for `source`. Several roots per source are allowed (Claude Code
    /// has two). A root that does not exist or cannot be read makes that source's scans
    /// fail, so its health degrades; it is picked up once it can be read.
    ///
    /// Layouts under the root: Claude `<root>/<encoded cwd>/<uuid>.jsonl` (and
    /// `<uuid>/subagents/*.jsonl`); Codex `<root>/YYYY/MM/DD/rollout-*.jsonl`; Gemini
    /// `<root>/<project hash>/chats/session-*.json` or `.jsonl`; Pi (the sessions dir)
    /// `<root>/--<encoded cwd>--/<time>_<id>.jsonl`; Cursor (`~/.cursor/projects`)
    /// `<root>/<encoded cwd>/agent-transcripts/<id>/<id>.jsonl`, `<id>.jsonl`, `<id>.txt`
    /// and `<id>/subagents/<child>.jsonl`; OpenCode (its data dir) `<root>/opencode.db`, the
    /// root's subdirectories neither walked nor watched; Antigravity CLI
    /// (`~/.gemini/antigravity-cli`)
    /// `<root>/brain/<id>/.system_generated/logs/transcript.jsonl`,
    /// `<root>/brain/<id>/.system_generated/subagents/<child>.json` and
    /// `<root>/cache/last_conversations.json`.
    pub fn root(mut self, source: SourceKind, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.roots.push((SourceId::Builtin(source), path));
        self
    }

    /// Adds a root directory for a [`Source`] of your own: its files that
    /// [`Source::classify`] recognises are tracked, read, merged, and reported under its
    /// [`name`](Source::name) exactly as a built-in source's logs are (see the
    /// [`source` contract](Source)). Several roots per source are allowed (call it once per
    /// root; they share one health). As with [`root`](Self::root), a root that cannot be
    /// read degrades the source's health until it can.
    ///
    /// A source with an empty name is not added (a `warn` tracing event says so). A name
    /// equal to a built-in source's is allowed, and then shares that source's health.
    ///
    /// ```
    /// # use std::path::Path;
    /// # use agentwatch_ws::monitor::{LineResult, LogFile, LogParser, SessionReport, Source};
    /// # struct Mine;
    /// # impl Source for Mine {
    /// #     fn name(&self) -> &str { "mine" }
    /// #     fn classify(&self, _: &Path) -> Option<LogFile> { None }
    /// #     fn parser(&self, _: &LogFile) -> Box<dyn LogParser> { unimplemented!() }
    /// # }
    /// use agentwatch_ws::monitor::Monitor;
    /// use agentwatch_ws::WsLayer;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let (_router, publisher) = WsLayer::new().build::<()>("/ws");
    /// let monitor = Monitor::builder().source(Mine, dir.path()).build(publisher);
    /// assert_eq!(monitor.roots()[0].0, "mine");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn source(mut self, source: impl Source, path: impl AsRef<Path>) -> Self {
        if source.name().is_empty() {
            tracing::warn!("a source with an empty name is not added");
            return self;
        }
        if SourceKind::ALL.iter().any(|k| k.name() == source.name()) {
            tracing::warn!(
                source = source.name(),
                "a source named as a built-in one: both share its health"
            );
        }
        let path = path.as_ref();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.roots
            .push((SourceId::Custom(std::sync::Arc::new(source)), path));
        self
    }

    /// The marker directory (none by default; the dashboard uses
    /// [`default_marker_dir`](crate::markers::default_marker_dir)). It holds two kinds of
    /// small JSON files, each read once and removed:
    /// - hook markers, `hook-*.json` ([`markers`](crate::markers)), which `agentwatch-ws
    ///   hook` writes from Claude Code's hooks: permission prompts and turn ends the log does
    ///   not show (see "Hook markers" in the [module docs](self));
    /// - session-end markers, any other `*.json`: `{session_id, transcript_path, cwd, reason,
    ///   timestamp}`, as a `SessionEnd` hook of agentwatch writes them; each makes its session
    ///   `terminal`.
    ///
    /// The directory should exist when the monitor starts: it is then watched, and a marker
    /// is read within milliseconds; one created later is read at each rescan only. Only
    /// regular files owned by the monitor's own user are read; links, FIFOs and oversized
    /// files are removed unread, directories and other users' files left alone; each rejected
    /// file is counted ([`Monitor::rejected_markers`]) and logged once: the first 5 of a pass
    /// one by one, the rest of the pass in one line (markers left while no monitor ran, older
    /// than an hour, can be thousands).
    pub fn marker_dir(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        self.marker_dir = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        self
    }

    /// An active session with no new data for this long becomes terminal (`stale`); logs not
    /// modified within it are not loaded at start. Default 5 minutes (Go's); `None`
    /// disables staleness (and then every log is loaded at start). From 1 s (shorter
    /// values, `Duration::ZERO` included, are raised to it, with a `warn`: file systems
    /// record modification times to the second or coarser, so a shorter bound could take a
    /// log written just now for an old one, and it would never appear) to 100 years.
    pub fn stale_after(mut self, after: impl Into<Option<Duration>>) -> Self {
        // The lifecycle takes zero as "off".
        self.stale_after = after.into().map_or(Duration::ZERO, |after| {
            bounded("stale_after", after, MIN_STALE_AFTER, MAX_DURATION)
        });
        self
    }

    /// How long a terminal session is kept before it is `removed`. Default
    /// 30 s (Go's); `Duration::ZERO` removes it at the next pass. At most
    /// 100 years.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = bounded("retention", retention, Duration::ZERO, MAX_DURATION);
        self
    }

    /// A `working` session whose latest record is this old becomes `idle`. Default
    /// 2 minutes; `None` disables it. From 1 ms to 100 years.
    pub fn idle_after(mut self, after: impl Into<Option<Duration>>) -> Self {
        // The lifecycle takes zero as "off".
        self.idle_after = after.into().map_or(Duration::ZERO, |after| {
            bounded("idle_after", after, Duration::from_millis(1), MAX_DURATION)
        });
        self
    }

    /// How long a turn end read from a reply alone stays unpublished: a `working` session
    /// whose latest message is a text reply that the log has not said ends the turn (Claude
    /// Code: `stop_reason` `null`, no `turn_duration` yet) turns `waiting` only once the
    /// reply's record is this old and no line changed the activity meanwhile; its
    /// `lastActivityAt` is still the reply's time. Claude Code writes a message's text and
    /// its tool call as separate lines, the tool call's once its input has streamed, so
    /// without the delay a session shows `waiting` between the two. A reply older than the
    /// delay when read, and every stated end (`end_turn`, `turn_duration`,
    /// `stop_hook_summary`, an interrupt, an API error, Codex's `task_complete`, …), is
    /// published at once. Default 3 s; [`Duration::ZERO`] publishes
    /// every end at once. At most 100 years.
    pub fn turn_end_delay(mut self, delay: Duration) -> Self {
        self.turn_end_delay = bounded("turn_end_delay", delay, Duration::ZERO, MAX_DURATION);
        self
    }

    /// How often every root is walked again, as a safety net for lost notifications.
    /// Default 60 s; values under 100 ms are raised to 100 ms, values
    /// over 100 years lowered to it.
    pub fn rescan_interval(mut self, interval: Duration) -> Self {
        self.rescan_interval = bounded(
            "rescan_interval",
            interval,
            Duration::from_millis(100),
            MAX_DURATION,
        );
        self
    }

    /// How long to gather notifications before reading, so a burst of appends is one batch.
    /// Default 5 ms. It adds to the latency of every change. At most
    /// 100 years.
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = bounded("debounce", debounce, Duration::ZERO, MAX_DURATION);
        self
    }

    /// Consecutive failed scans before a source is `degraded` (twice as many: `failed`).
    /// Default 3 (Go's); 0 is raised to 1. At most `u32::MAX / 2`, so
    /// that `failed` (twice the threshold) stays reachable.
    pub fn health_threshold(mut self, threshold: u32) -> Self {
        self.health_threshold = bounded("health_threshold", threshold, 1, u32::MAX / 2);
        self
    }

    /// The seq of the monitor's first event. Default 1 (a new
    /// [`Publisher`](crate::Publisher) is at 0). The monitor numbers every event it publishes
    /// from there, one by one, so it must be the only producer numbering the events of the
    /// sink it publishes into (see the publisher's "One numbering" rule): nothing else
    /// publishes into that [`Publisher`](crate::Publisher) while the monitor runs.
    ///
    /// A monitor publishing into a publisher that already holds events (say, after restarting
    /// the monitor in the same process) should continue its sequence,
    /// `first_seq(publisher.seq() + 1)`, so clients' seqs never go backwards. Starting lower
    /// is allowed and reads as a producer restart: every connected client gets a fresh
    /// snapshot.
    ///
    /// From 1 to 2^63 − 1 (`u64::MAX >> 1`, which a monitor publishing a million events a
    /// second would take 290 000 years to leave): 0 is raised to 1 (to a
    /// [`Publisher`](crate::Publisher), seq 0 means "number this for me", which would mix two
    /// numberings) and larger values are lowered to 2^63 − 1, each with a `warn`.
    pub fn first_seq(mut self, seq: u64) -> Self {
        self.first_seq = bounded("first_seq", seq, 1, MAX_FIRST_SEQ);
        self
    }

    /// The monitor, publishing to `sink`. Nothing is read until [`Monitor::scan`] or
    /// [`Monitor::spawn`].
    pub fn build(self, sink: impl EventSink + 'static) -> Monitor {
        let timing = Timing {
            stale_after: self.stale_after,
            retention: self.retention,
            idle_after: self.idle_after,
            turn_end_delay: self.turn_end_delay,
        };
        let roots = self
            .roots
            .iter()
            .map(|(source, path)| Root {
                source: source.clone(),
                path: path.clone(),
            })
            .collect();
        Monitor {
            scanner: Scanner::new(
                roots,
                self.marker_dir.clone(),
                self.stale_after,
                self.health_threshold,
                Lifecycle::new(timing, self.first_seq),
            ),
            sink: Box::new(sink),
            rescan_interval: self.rescan_interval,
            debounce: self.debounce,
        }
    }
}

/// Tails agent session logs and publishes agentwatch events; see the [module docs](self).
///
/// Drive it either yourself ([`scan`](Monitor::scan): one synchronous full pass, e.g. in
/// tests or a poll loop) or on its own thread ([`spawn`](Monitor::spawn): notifications,
/// periodic rescans and sweeps until the [`MonitorHandle`] stops it).
pub struct Monitor {
    scanner: Scanner,
    sink: Box<dyn EventSink>,
    rescan_interval: Duration,
    debounce: Duration,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("roots", &self.scanner.roots().len())
            .field("sessions", &self.scanner.lifecycle.len())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A builder with every default and no roots.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::new()
    }

    /// The configured roots, in the order they were added, each with its source's name
    /// ([`SourceKind::name`] or [`Source::name`]).
    pub fn roots(&self) -> Vec<(String, PathBuf)> {
        self.scanner
            .roots()
            .iter()
            .map(|r| (r.source.name().to_owned(), r.path.clone()))
            .collect()
    }

    /// One full scan, synchronously: walks every root, reads what changed to the end (in as
    /// many passes as that takes: a log that grows faster than it is read keeps it reading),
    /// applies the time-based rules and publishes the events as one batch. Returns how many
    /// events were published. The first call also publishes every source's health.
    pub fn scan(&mut self) -> usize {
        self.scanner.full_scan();
        while self.scanner.has_backlog() {
            self.scanner.read_backlog(None);
        }
        self.publish()
    }

    /// How many paths were ignored for not being regular files: FIFOs, sockets and device
    /// files (or links to them) that match a log layout under a root, or sit in the
    /// session-end directory. Each path counts once while it stays such a file (and is
    /// logged once, at `warn`, with its source and kind but not its path); nothing is ever
    /// read from them.
    pub fn ignored_files(&self) -> u64 {
        self.scanner.ignored_files()
    }

    /// A copy of every tracked session (active, and terminal within retention), unordered.
    pub fn sessions(&self) -> Vec<SessionState> {
        self.scanner.lifecycle.sessions()
    }

    /// The current health of every configured source.
    pub fn health(&self) -> Vec<Health> {
        self.scanner.health()
    }

    /// Files of the marker directory rejected so far (invalid, oversized, links, FIFOs,
    /// directories, other users' files; each counted once).
    pub fn rejected_markers(&self) -> u64 {
        self.scanner.rejected_markers()
    }

    /// `(tracked, dormant)`: log files known, and how many of them are not loaded because
    /// they were older than the stale threshold when first seen.
    pub fn file_counts(&self) -> (usize, usize) {
        self.scanner.file_counts()
    }

    fn publish(&mut self) -> usize {
        let events = self.scanner.finish_batch();
        publish(&*self.sink, &events);
        events.len()
    }

    /// Starts the monitor on its own thread (`agentwatch-monitor`): watches the roots, does
    /// a full scan, then handles notifications, rescans and sweeps until stopped. Returns at
    /// once.
    ///
    /// # Errors
    /// The thread could not be started. A root that cannot be watched is not an error: the
    /// periodic rescan covers it, and its scans count toward the source's health.
    pub fn spawn(self) -> io::Result<MonitorHandle> {
        let (tx, rx) = mpsc::channel();
        let thread_tx = tx.clone();
        // Dropped when the thread ends, even by a panic: `stop` waits for that, bounded.
        let (ended_tx, ended) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("agentwatch-monitor".into())
            .spawn(move || {
                let _ended = ended_tx;
                self.run(thread_tx, rx);
            })?;
        Ok(MonitorHandle {
            tx,
            ended,
            thread: Some(thread),
        })
    }

    fn run(mut self, tx: Sender<Message>, rx: mpsc::Receiver<Message>) {
        let span = tracing::info_span!("monitor", roots = self.scanner.roots().len());
        let _entered = span.enter();
        let mut dirs: Vec<(PathBuf, RecursiveMode)> = self
            .scanner
            .roots()
            .iter()
            .map(|r| {
                let mode = if r.source.flat() {
                    RecursiveMode::NonRecursive
                } else {
                    RecursiveMode::Recursive
                };
                (r.path.clone(), mode)
            })
            .collect();
        if let Some(dir) = self.scanner.marker_dir() {
            dirs.push((dir.to_path_buf(), RecursiveMode::NonRecursive));
        }
        let (watcher, errors) = watch::watch(&dirs, tx);
        for error in errors {
            tracing::warn!(error = %health::sanitize_error(&error.to_string()), "cannot watch a log directory; relying on rescans");
        }
        let started = Instant::now();
        self.scanner.full_scan();
        self.publish();
        let (files, dormant) = self.file_counts();
        tracing::info!(
            sessions = self.scanner.lifecycle.len(),
            files,
            dormant,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "monitor started"
        );
        let mut next_rescan = Instant::now() + self.rescan_interval;
        let mut last_full = Instant::now();
        let mut pending: Vec<PathBuf> = Vec::new();
        let mut pending_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut deadline = next_rescan;
            if let Some(since) = pending_since {
                deadline = deadline.min(since + self.debounce);
            }
            if let Some(d) = self.scanner.lifecycle.next_deadline(now) {
                deadline = deadline.min(d);
            }
            if let Some(d) = self.scanner.next_recheck() {
                deadline = deadline.min(d);
            }
            if self.scanner.has_backlog() {
                deadline = now;
            }
            // The first message (or the deadline), then whatever else is queued already, so
            // a stop is seen within one pass however busy reading is.
            let mut stop = false;
            let mut message = match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut taken = 0usize;
            while let Some(m) = message.take() {
                match m {
                    Message::Stop => stop = true,
                    Message::Changed { paths, rescan, at } => {
                        if rescan {
                            next_rescan = next_rescan.min(last_full + MIN_FORCED_RESCAN);
                        }
                        // A log in the backlog is read by the backlog passes anyway.
                        let before = pending.len();
                        pending.extend(paths.into_iter().filter(|p| !self.scanner.is_queued(p)));
                        if pending.len() > before {
                            pending_since.get_or_insert(at);
                        }
                    }
                }
                taken += 1;
                if stop || taken >= MAX_MESSAGES_PER_PASS {
                    break;
                }
                message = rx.try_recv().ok();
            }
            if stop {
                break;
            }
            let now = Instant::now();
            if now >= next_rescan {
                pending.clear();
                pending_since = None;
                self.scanner.full_scan();
                self.publish();
                last_full = Instant::now();
                next_rescan = last_full + self.rescan_interval;
            } else if pending_since.is_some_and(|since| now >= since + self.debounce) {
                pending.sort_unstable();
                pending.dedup();
                self.scanner.changed(pending.drain(..));
                pending_since = None;
                self.publish();
                // Shrink the list after a flood of notifications.
                pending.shrink_to(1024);
            } else if self.scanner.next_recheck().is_some_and(|d| now >= d) {
                self.scanner.recheck();
                self.publish();
            } else if self.scanner.has_backlog() {
                // Cut short when the pending changes are due.
                self.scanner
                    .read_backlog(pending_since.map(|since| since + self.debounce));
                self.publish();
            } else if self
                .scanner
                .lifecycle
                .next_deadline(now)
                .is_some_and(|d| now >= d)
            {
                self.scanner.sweep();
                self.publish();
            }
        }
        drop(watcher);
        tracing::debug!("monitor stopped");
    }
}

fn publish(sink: &dyn EventSink, events: &[Event]) {
    for event in events {
        if let Err(error) = sink.handle_event(event) {
            tracing::warn!(seq = event.seq, %error, "sink failed to handle an event");
        }
    }
}

/// Stops a [`Monitor`] started with [`Monitor::spawn`].
///
/// Dropping the handle also stops the monitor, without waiting for its thread: keep it for as
/// long as the monitor should run.
#[derive(Debug)]
#[must_use = "dropping the handle stops the monitor"]
pub struct MonitorHandle {
    tx: Sender<Message>,
    /// Disconnected when the thread has ended.
    ended: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl MonitorHandle {
    /// Stops the monitor and waits for its thread to end, for at most [`STOP_TIMEOUT`]. The
    /// thread sees the stop between two passes, so this normally takes at most one pass
    /// ([`PASS_BUDGET`] of reading, or one full rescan's directory walk). If a file-system
    /// call hangs (a dead network mount), `stop` logs an error and returns after
    /// [`STOP_TIMEOUT`] anyway, leaving the thread behind: it ends by itself at its next
    /// check, after publishing at most the batch of the pass it was in. From async code,
    /// call it in `spawn_blocking` or simply drop the handle.
    pub fn stop(mut self) {
        let _ = self.tx.send(Message::Stop);
        let Some(thread) = self.thread.take() else {
            return;
        };
        match self.ended.recv_timeout(STOP_TIMEOUT) {
            Err(RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    tracing::error!("the monitor thread panicked");
                }
            }
            Ok(()) | Err(RecvTimeoutError::Timeout) => {
                tracing::error!(
                    timeout_ms = STOP_TIMEOUT.as_millis() as u64,
                    "the monitor thread did not stop in time; leaving it"
                );
            }
        }
    }

    /// Whether the monitor's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_sessions_dir_follows_pi() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let agent = home.join(".pi/agent");
        std::fs::create_dir_all(&agent).unwrap();
        let env = |p: &str| Some(PathBuf::from(p));
        assert_eq!(
            pi_sessions_dir(env("/s"), env("/a"), Some(home)),
            env("/s"),
            "the session-dir variable wins"
        );
        assert_eq!(pi_sessions_dir(None, env("/a"), None), env("/a/sessions"));
        assert_eq!(
            pi_sessions_dir(None, None, Some(home)),
            Some(agent.join("sessions"))
        );
        assert_eq!(pi_sessions_dir(None, None, None), None);
        let settings = agent.join("settings.json");
        std::fs::write(
            &settings,
            r#"{"sessionDir":"~/pi-sessions","theme":"dark"}"#,
        )
        .unwrap();
        assert_eq!(
            pi_sessions_dir(None, None, Some(home)),
            Some(home.join("pi-sessions"))
        );
        // A relative dir, another type, or a file that is no JSON: the default.
        for text in [
            r#"{"sessionDir":"rel"}"#,
            r#"{"sessionDir":7}"#,
            "{not json",
        ] {
            std::fs::write(&settings, text).unwrap();
            assert_eq!(
                pi_sessions_dir(None, None, Some(home)),
                Some(agent.join("sessions")),
                "{text}"
            );
        }
    }

    #[test]
    fn home_expansion() {
        let home = Path::new("/h");
        assert_eq!(expand_home("~", Some(home)), Some(PathBuf::from("/h")));
        assert_eq!(expand_home("~/x", Some(home)), Some(PathBuf::from("/h/x")));
        assert_eq!(expand_home("~x", Some(home)), Some(PathBuf::from("~x")));
        assert_eq!(expand_home("/abs", None), Some(PathBuf::from("/abs")));
        assert_eq!(expand_home("~/x", None), None);
    }
}
