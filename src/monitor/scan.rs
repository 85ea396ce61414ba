//! The table of tracked log files: which to read, from where, and what a read changes.
//!
//! Each file under a root that matches its source's layout is tracked with its size,
//! modification time and identity. A file is read only when one of those changed, and only
//! from where the last read stopped ([`Tail`]); a Gemini `.json` chat is parsed whole, but
//! again only when its size or modification time changed. Files older than the stale
//! threshold when first seen are *dormant*: remembered, not read, until they change.
//!
//! Reading is done in *passes* (a full scan, the paths a notification named, or the
//! backlog), each ended by one batch of events:
//! - A pass spends at most [`PASS_BUDGET`] reading (plus one 64 KiB buffer per file it
//!   reads), and at most [`READ_CAP`] bytes per file. The files with the least unread data
//!   are read first; files not reached in time, and files with bytes left when their share
//!   ran out, join the *backlog*.
//! - The backlog is read in passes of its own, each file for an equal share of
//!   [`PASS_BUDGET`] (at least [`MIN_SLICE`]), round-robin; a backlog pass ends early when
//!   other changes are due. While a file is in the backlog, notifications about it are left
//!   to those passes. So a log growing faster than it can be read takes its share of every
//!   backlog pass and never delays the other files' passes.
//! - Only regular files are opened ([`open_regular`]): a FIFO, socket or device file that
//!   matches a log layout (or sits in the session-end directory) is counted and logged once
//!   and otherwise ignored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::health::SourceHealth;
use super::lifecycle::Lifecycle;
use super::source::{LogParser, SourceId};
use super::sources::antigravity::{self, AgyLog, SubagentRecord};
use super::sources::claude::ClaudeLog;
use super::sources::codex::CodexLog;
use super::sources::cursor::CursorLog;
use super::sources::gemini::GeminiChat;
use super::sources::gemini_project::{GeminiProjects, Resolution};
use super::sources::marker_dir::{self, Taken};
use super::sources::opencode::{self, OpenCodeDb};
use super::sources::pi::PiLog;
use super::sources::project_dir::ProjectDirs;
use super::sources::{Counts, FileKind, LineResult, SourceKind, classify};
use super::tail::{FileId, Item, Limit, Opened, Tail, open_regular, special_kind};
use super::watch::{MAX_DEPTH, walk};
use crate::wire::{Event, Health, Timestamp};

/// At most this many junk files left in the marker directory are remembered (so each is
/// reported once); past it, further ones are counted again at each rescan.
const MAX_LEFT_JUNK: usize = 1024;

/// The time one pass may spend reading logs: 25 ms. With the debounce it bounds how long a
/// change waits for another log's reading.
pub(crate) const PASS_BUDGET: Duration = Duration::from_millis(25);

/// The most bytes read from one file in one pass: 16 MiB.
pub(crate) const READ_CAP: u64 = 16 << 20;

/// The least time a backlog pass gives each file in the backlog: 1 ms.
pub(crate) const MIN_SLICE: Duration = Duration::from_millis(1);

/// A root directory of one source.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub(crate) source: SourceId,
    pub(crate) path: PathBuf,
}

impl Root {
    /// What `path` (somewhere under the root) is for the root's source, or `None` for any
    /// other file.
    fn classify(&self, path: &Path) -> Option<FileKind> {
        match &self.source {
            SourceId::Builtin(kind) => classify(*kind, &self.path, path),
            SourceId::Custom(source) => {
                let rel = path.strip_prefix(&self.path).ok()?;
                if rel.as_os_str().is_empty() {
                    return None;
                }
                source.classify(rel).map(FileKind::Custom)
            }
        }
    }
}

/// The depth a root's walk starts at: the deepest for a [flat](SourceKind::flat) root, so
/// its subdirectories are not entered.
fn start_depth(source: &SourceId) -> usize {
    if source.flat() { MAX_DEPTH } else { 0 }
}

/// How long after a poll of OpenCode's database that found a commit it is polled again. A
/// writer appends a commit to the WAL (the notification) before it publishes it in the WAL
/// index: a poll right after the notification can miss the commit, and no other
/// notification may follow.
pub(crate) const OPENCODE_RECHECK: Duration = Duration::from_millis(50);

/// Runs a registered source's parser on one record: a panic (a parser bug on input it did
/// not expect) makes the record a parse failure instead of ending the monitor's thread.
fn guarded(parse: impl FnOnce() -> LineResult) -> LineResult {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).unwrap_or_else(|_| {
        tracing::warn!("a source's parser panicked; the record counts as a parse failure");
        LineResult::Invalid
    })
}

/// The whole content of `file`, or `None` when it cannot be read or holds more than `cap`
/// bytes.
fn read_capped(file: fs::File, cap: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= cap).then_some(bytes)
}

/// What identifies a version of a file's content well enough to know it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    id: FileId,
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            id: FileId::of(meta),
        }
    }
}

enum Parser {
    Claude(ClaudeLog),
    Codex(CodexLog),
    Gemini(GeminiChat),
    Pi(PiLog),
    Cursor(CursorLog),
    Agy(AgyLog),
    /// OpenCode's database.
    OpenCode(Box<OpenCodeDb>),
    /// A file read whole into the scanner's own tables (Antigravity's subagent records and
    /// workspace map): no parser state.
    Whole,
    /// A log of a source registered through [`Source`](super::Source).
    Custom(Box<dyn LogParser>),
}

impl Parser {
    fn new(source: &SourceId, kind: &FileKind) -> Self {
        match kind {
            FileKind::Custom(file) => match source {
                SourceId::Custom(source) => Parser::Custom(source.parser(file)),
                SourceId::Builtin(_) => Parser::Whole,
            },
            FileKind::ClaudeSession => Parser::Claude(ClaudeLog::session()),
            FileKind::ClaudeSubagent { .. } => Parser::Claude(ClaudeLog::subagent()),
            FileKind::CodexRollout => Parser::Codex(CodexLog::new()),
            FileKind::GeminiJson | FileKind::GeminiJsonl | FileKind::GeminiSubagent { .. } => {
                Parser::Gemini(GeminiChat::new())
            }
            FileKind::PiSession => Parser::Pi(PiLog::new()),
            FileKind::CursorTranscript { project } => Parser::Cursor(CursorLog::jsonl(project)),
            FileKind::CursorText { project } => Parser::Cursor(CursorLog::text(project)),
            FileKind::CursorSubagent { .. } => Parser::Cursor(CursorLog::jsonl("")),
            FileKind::AntigravityTranscript { conversation } => {
                Parser::Agy(AgyLog::new(conversation))
            }
            FileKind::OpenCodeDb
            | FileKind::AntigravitySubagent { .. }
            | FileKind::AntigravityWorkspaces
            | FileKind::AntigravitySettings => Parser::Whole,
        }
    }

    fn line(&mut self, line: &[u8]) -> LineResult {
        match self {
            Parser::Claude(p) => p.line(line),
            Parser::Codex(p) => p.line(line),
            Parser::Gemini(p) => p.line(line),
            Parser::Pi(p) => p.line(line),
            Parser::Cursor(p) => p.line(line),
            Parser::Agy(p) => p.line(line),
            // A blank line is no record of any format.
            Parser::Custom(_) if line.is_empty() => LineResult::Unknown,
            Parser::Custom(p) => guarded(|| p.line(line)),
            Parser::OpenCode(_) | Parser::Whole => LineResult::Unknown,
        }
    }

    fn session_id(&self) -> &str {
        match self {
            Parser::Claude(p) => p.session_id(),
            Parser::Codex(p) => p.session_id(),
            Parser::Gemini(p) => p.session_id(),
            Parser::Pi(p) => p.session_id(),
            Parser::Cursor(p) => p.session_id(),
            Parser::Agy(p) => p.session_id(),
            Parser::Custom(p) => p.report().session_id.as_str(),
            Parser::OpenCode(_) | Parser::Whole => "",
        }
    }
}

struct Tracked {
    source: SourceId,
    kind: FileKind,
    parser: Parser,
    tail: Tail,
    /// The stamp when last read (or first seen, for a dormant file).
    stamp: Option<Stamp>,
    dormant: bool,
    /// The session id, fixed when the file first reports.
    session_id: Option<String>,
    /// The counts last merged into the session.
    reported: Counts,
    /// A fallback id: the file stem.
    stem: String,
    /// A Gemini CLI `.json` chat that continues in the `.jsonl` beside it: no longer read.
    superseded: bool,
    /// Bytes were left unread (a read stopped at its limit, or the pass ran out of time
    /// before reaching the file): read it again even if its stamp is unchanged.
    behind: bool,
    /// In [`Scanner::backlog`]: only backlog passes read it.
    queued: bool,
}

/// The monitor's state: roots, tracked files, health and sessions.
pub(crate) struct Scanner {
    roots: Vec<Root>,
    /// Each source's health, by name, in the order the monitor reports them.
    health: Vec<(String, SourceHealth)>,
    marker_dir: Option<PathBuf>,
    /// Junk files left in the marker directory (directories, other users' files), each
    /// reported once.
    left_junk: HashSet<PathBuf>,
    /// Marker-directory files rejected so far.
    rejected_markers: u64,
    /// Rejections logged one by one in this pass (at most [`MARKER_WARNINGS_PER_PASS`]).
    rejections_logged: u32,
    /// Rejections of this pass beyond that, logged as one line when the pass ends.
    rejections_unlogged: u64,
    files: HashMap<PathBuf, Tracked>,
    /// Which file each session id was given to: a second file naming the same session (a
    /// resumed Claude Code session copies earlier lines into a new file) is a session of its
    /// own, named by its stem, so nothing is counted twice.
    claimed: HashMap<String, PathBuf>,
    stale_after: Duration,
    pub(crate) lifecycle: Lifecycle,
    /// Files with bytes left to read, in the order they are read next.
    backlog: VecDeque<PathBuf>,
    /// When the current pass stops reading.
    pass_until: Option<Instant>,
    /// Paths matching a layout that are not regular files, each counted and logged once
    /// (forgotten at a full scan once they are gone or regular).
    ignored: HashSet<PathBuf>,
    /// Paths ever added to `ignored`.
    ignored_total: u64,
    /// Working directories decoded from Cursor's project folder names.
    project_dirs: ProjectDirs,
    /// Codex subagent threads seen, by thread id: the session each is shown under (its
    /// parent's, or the parent's own session for a subagent of a subagent).
    codex_threads: HashMap<String, String>,
    /// Gemini CLI project folders resolved to working directories (only with a Gemini
    /// root).
    gemini_projects: Option<GeminiProjects>,
    /// Gemini sessions whose working directory is not known, by project hash: a working
    /// directory learned later whose SHA-256 it is fills it in.
    gemini_unresolved: HashMap<String, HashSet<String>>,
    /// Antigravity CLI subagent records, by the child conversation's id.
    agy_children: HashMap<String, SubagentRecord>,
    /// Antigravity CLI's working directories, by conversation id
    /// (`cache/last_conversations.json` reversed).
    agy_cwds: HashMap<String, String>,
    /// Antigravity CLI's default model (`settings.json`), for conversations that name none.
    agy_model: String,
    /// When OpenCode's databases are polled again (see [`OPENCODE_RECHECK`]).
    opencode_recheck: Option<Instant>,
}

/// At most this many unresolved Gemini project hashes are remembered.
const MAX_GEMINI_UNRESOLVED: usize = 1024;

/// At most this many Codex subagent threads are remembered for nesting (the map is cleared
/// when full: a deeper thread read afterwards is shown under its direct parent's id).
const MAX_CODEX_THREADS: usize = 4096;

/// Rejected marker-directory files logged one by one in a pass; the rest of the pass's are
/// logged as one line.
const MARKER_WARNINGS_PER_PASS: u32 = 5;

impl Scanner {
    pub(crate) fn new(
        roots: Vec<Root>,
        marker_dir: Option<PathBuf>,
        stale_after: Duration,
        health_threshold: u32,
        lifecycle: Lifecycle,
    ) -> Self {
        // Built-in sources first, in their order, then the others in registration order.
        let mut names: Vec<&str> = SourceKind::ALL
            .into_iter()
            .filter(|kind| roots.iter().any(|r| r.source.is(*kind)))
            .map(SourceKind::name)
            .collect();
        for root in &roots {
            if !names.contains(&root.source.name()) {
                names.push(root.source.name());
            }
        }
        let health = names
            .into_iter()
            .map(|name| (name.to_owned(), SourceHealth::new(name, health_threshold)))
            .collect();
        let gemini_projects = roots
            .iter()
            .any(|r| r.source.is(SourceKind::Gemini))
            .then(GeminiProjects::default);
        Scanner {
            roots,
            health,
            marker_dir,
            left_junk: HashSet::new(),
            rejected_markers: 0,
            rejections_logged: 0,
            rejections_unlogged: 0,
            files: HashMap::new(),
            claimed: HashMap::new(),
            stale_after,
            lifecycle,
            backlog: VecDeque::new(),
            pass_until: None,
            ignored: HashSet::new(),
            ignored_total: 0,
            project_dirs: ProjectDirs::default(),
            codex_threads: HashMap::new(),
            gemini_projects,
            gemini_unresolved: HashMap::new(),
            agy_children: HashMap::new(),
            agy_cwds: HashMap::new(),
            agy_model: String::new(),
            opencode_recheck: None,
        }
    }

    /// When OpenCode's databases are due to be polled again, if they are.
    pub(crate) fn next_recheck(&self) -> Option<Instant> {
        self.opencode_recheck
    }

    /// Polls OpenCode's databases again (a commit published after the last poll).
    pub(crate) fn recheck(&mut self) {
        self.opencode_recheck = None;
        let paths: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, t)| t.kind == FileKind::OpenCodeDb)
            .map(|(p, _)| p.clone())
            .collect();
        self.changed(paths);
    }

    /// Whether files have bytes left to read.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// How many paths were ignored for not being regular files, each counted once.
    pub(crate) fn ignored_files(&self) -> u64 {
        self.ignored_total
    }

    fn note_ignored(&mut self, source: Option<&str>, path: &Path, kind: &'static str) {
        if self.ignored.insert(path.to_path_buf()) {
            self.ignored_total += 1;
            tracing::warn!(
                source = source.unwrap_or("session-end"),
                kind,
                "ignored a file that is not a regular file"
            );
        }
    }

    /// Orders files so that those with the least unread data come first: a small change is
    /// not kept behind a large one when the pass runs out of time.
    fn least_unread_first(&self, found: &mut [(usize, PathBuf, Metadata)]) {
        found.sort_by_cached_key(|(_, path, meta)| match self.files.get(path) {
            Some(t) if t.kind.is_jsonl() => meta.len().saturating_sub(t.tail.offset()),
            _ => meta.len(),
        });
    }

    /// Whether `path` is in the backlog: a notification about it adds nothing, the backlog
    /// passes read it anyway.
    pub(crate) fn is_queued(&self, path: &Path) -> bool {
        self.files.get(path).is_some_and(|t| t.queued)
    }

    /// Reads the backlog once: each file for an equal share of [`PASS_BUDGET`] (at least
    /// [`MIN_SLICE`]), in turn; those still behind go to the back. The pass ends early at
    /// `until` (when other changes are due), after at least one file: the files not reached
    /// stay first in line.
    pub(crate) fn read_backlog(&mut self, until: Option<Instant>) {
        let now = Instant::now();
        let n = self.backlog.len();
        if n == 0 {
            return;
        }
        let slice = (PASS_BUDGET / u32::try_from(n).unwrap_or(u32::MAX)).max(MIN_SLICE);
        let mut failed = Vec::new();
        for k in 0..n {
            if k > 0 && until.is_some_and(|until| Instant::now() >= until) {
                break;
            }
            let Some(path) = self.backlog.pop_front() else {
                break;
            };
            let Some(tracked) = self.files.get_mut(&path) else {
                continue;
            };
            tracked.queued = false;
            let Some(root) = self.roots.iter().position(|r| path.starts_with(&r.path)) else {
                continue;
            };
            let root = self.roots[root].clone();
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                // Gone: its session goes stale on its own; it is read again if it returns.
                Err(_) => continue,
            };
            let mut end = Instant::now() + slice;
            if let Some(until) = until {
                end = end.min(until);
            }
            self.pass_until = Some(end);
            if let Err(e) = self.refresh(&root, &path, &meta, now) {
                failed.push((root.source, e));
            }
        }
        self.pass_until = None;
        self.record_read_failures(failed);
        self.lifecycle.sweep(now);
    }

    fn record_read_failures(&mut self, failed: Vec<(SourceId, io::Error)>) {
        for (source, e) in failed {
            let message = format!("cannot read log: {e}");
            tracing::warn!(source = source.name(), error = %super::health::sanitize_error(&message), "read failed");
            if let Some(h) = self.health_mut(source.name()) {
                h.failure(&message);
            }
        }
    }

    pub(crate) fn roots(&self) -> &[Root] {
        &self.roots
    }

    pub(crate) fn marker_dir(&self) -> Option<&Path> {
        self.marker_dir.as_deref()
    }

    /// Marker-directory files rejected so far.
    pub(crate) fn rejected_markers(&self) -> u64 {
        self.rejected_markers
    }

    pub(crate) fn health(&self) -> Vec<Health> {
        self.health
            .iter()
            .map(|(_, h)| h.current().clone())
            .collect()
    }

    fn health_mut(&mut self, source: &str) -> Option<&mut SourceHealth> {
        self.health
            .iter_mut()
            .find(|(name, _)| name == source)
            .map(|(_, h)| h)
    }

    /// Walks every root: new files are tracked, changed ones read. Each source's health
    /// records whether its walk was clean.
    pub(crate) fn full_scan(&mut self) {
        let now = Instant::now();
        self.pass_until = Some(now + PASS_BUDGET);
        let mut found: Vec<(usize, PathBuf, Metadata)> = Vec::new();
        let mut errors: Vec<Option<String>> = Vec::with_capacity(self.roots.len());
        for (i, root) in self.roots.iter().enumerate() {
            let walk_errors = walk(&root.path, start_depth(&root.source), &mut |p, m| {
                if root.classify(p).is_some() {
                    found.push((i, p.to_path_buf(), m.clone()));
                }
            });
            errors.push(
                walk_errors
                    .first()
                    .map(|e| format!("cannot read directory: {e}")),
            );
        }
        self.least_unread_first(&mut found);
        for (i, path, meta) in found {
            let root = self.roots[i].clone();
            if let Err(e) = self.refresh(&root, &path, &meta, now) {
                errors[i].get_or_insert(format!("cannot read log: {e}"));
            }
        }
        self.pass_until = None;
        self.ignored
            .retain(|p| fs::metadata(p).is_ok_and(|m| !m.is_file()));
        let outcomes: Vec<(String, Option<String>)> = self
            .roots
            .iter()
            .map(|r| r.source.name().to_owned())
            .zip(errors)
            .collect();
        let names: Vec<String> = self.health.iter().map(|(name, _)| name.clone()).collect();
        for name in names {
            let mine: Vec<&Option<String>> = outcomes
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, e)| e)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let first_error = mine.iter().find_map(|e| e.as_deref()).map(str::to_owned);
            if let Some(h) = self.health_mut(&name) {
                match first_error {
                    Some(e) => {
                        tracing::warn!(source = %name, error = %super::health::sanitize_error(&e), "scan failed");
                        h.failure(&e);
                    }
                    None => h.success(),
                }
            }
        }
        self.scan_markers(now);
        self.lifecycle.sweep(now);
    }

    /// Handles paths the watcher reported.
    pub(crate) fn changed(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        let now = Instant::now();
        self.pass_until = Some(now + PASS_BUDGET);
        let mut found: Vec<(usize, PathBuf, Metadata)> = Vec::new();
        let mut failed: Vec<(SourceId, io::Error)> = Vec::new();
        for path in paths {
            if let Some(dir) = &self.marker_dir {
                if path.parent() == Some(dir.as_path()) {
                    if marker_dir::is_candidate(&path) {
                        self.take_marker(&path, now);
                    }
                    continue;
                }
            }
            let Some(i) = self.roots.iter().position(|r| path.starts_with(&r.path)) else {
                continue;
            };
            let root = &self.roots[i];
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                // Deleted (or renamed away): the session goes stale on its own.
                Err(_) => continue,
            };
            if meta.is_dir() {
                if root.source.flat() && path != root.path {
                    continue;
                }
                let depth = path
                    .strip_prefix(&root.path)
                    .map_or(0, |r| r.components().count())
                    .max(start_depth(&root.source));
                let errors = walk(&path, depth, &mut |p, m| {
                    if root.classify(p).is_some() {
                        found.push((i, p.to_path_buf(), m.clone()));
                    }
                });
                if let Some(e) = errors.into_iter().next() {
                    failed.push((root.source.clone(), e));
                }
            } else {
                found.push((i, path, meta));
            }
        }
        self.least_unread_first(&mut found);
        for (i, path, meta) in found {
            let root = self.roots[i].clone();
            if let Err(e) = self.refresh(&root, &path, &meta, now) {
                failed.push((root.source.clone(), e));
            }
        }
        self.pass_until = None;
        self.end_marker_pass();
        self.record_read_failures(failed);
        self.lifecycle.sweep(now);
    }

    /// Runs only the time-based rules.
    pub(crate) fn sweep(&mut self) {
        self.lifecycle.sweep(Instant::now());
    }

    /// Ends a batch: its events, numbered, health changes last.
    pub(crate) fn finish_batch(&mut self) -> Vec<Event> {
        let health: Vec<Health> = self
            .health
            .iter_mut()
            .filter_map(|(_, h)| h.take_change())
            .collect();
        self.lifecycle.drain(health)
    }

    /// Takes every marker in the marker directory, oldest name (so oldest marker) first.
    fn scan_markers(&mut self, now: Instant) {
        let Some(dir) = self.marker_dir.clone() else {
            return;
        };
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| marker_dir::is_candidate(p))
            .collect();
        paths.sort_unstable();
        for path in paths {
            self.take_marker(&path, now);
        }
        self.end_marker_pass();
    }

    /// Logs the rejections of this pass not logged one by one (markers piled up while no
    /// monitor ran, all older than an hour, are a pass of thousands) as one line.
    fn end_marker_pass(&mut self) {
        if self.rejections_unlogged > 0 {
            tracing::warn!(
                more = self.rejections_unlogged,
                rejected = self.rejected_markers,
                "rejected more files in the marker directory"
            );
        }
        self.rejections_logged = 0;
        self.rejections_unlogged = 0;
    }

    fn take_marker(&mut self, path: &Path, now: Instant) {
        if self.left_junk.contains(path) {
            return;
        }
        match marker_dir::take(path, Timestamp::now()) {
            Taken::Hook(marker) => {
                tracing::debug!(
                    session = %marker.session_id(),
                    event = marker.event().name(),
                    "hook marker"
                );
                self.lifecycle.hook(marker, now);
            }
            Taken::End(end) => {
                if self
                    .lifecycle
                    .terminate(&end.session_id, &end.reason, end.at, now)
                {
                    tracing::debug!(session = %end.session_id, reason = %end.reason, "session ended");
                }
            }
            Taken::Gone => {}
            Taken::Rejected { reason, removed } => {
                self.rejected_markers += 1;
                if !removed && self.left_junk.len() < MAX_LEFT_JUNK {
                    self.left_junk.insert(path.to_path_buf());
                }
                if self.rejections_logged < MARKER_WARNINGS_PER_PASS {
                    self.rejections_logged += 1;
                    tracing::warn!(
                        reason,
                        removed,
                        rejected = self.rejected_markers,
                        "rejected a file in the marker directory"
                    );
                } else {
                    self.rejections_unlogged += 1;
                    tracing::debug!(reason, removed, "rejected a file in the marker directory");
                }
            }
        }
    }

    /// Reads `path` if it changed since it was last read, and merges what it says. A file
    /// that vanished meanwhile is not an error: its session goes stale on its own.
    fn refresh(
        &mut self,
        root: &Root,
        path: &Path,
        meta: &Metadata,
        now: Instant,
    ) -> io::Result<()> {
        match self.read_changes(root, path, meta, now) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    fn read_changes(
        &mut self,
        root: &Root,
        path: &Path,
        meta: &Metadata,
        now: Instant,
    ) -> io::Result<()> {
        if !meta.is_file() {
            if root.classify(path).is_some() {
                self.note_ignored(Some(root.source.name()), path, special_kind(meta));
            }
            return Ok(());
        }
        if root.source.is(SourceKind::OpenCode) {
            return self.read_opencode(root, path, now);
        }
        let stamp = Stamp::of(meta);
        let stale_after = self.stale_after;
        let pass_until = self.pass_until;
        let tracked = match self.files.get_mut(path) {
            Some(t) => t,
            None => {
                let Some(kind) = root.classify(path) else {
                    return Ok(());
                };
                let old = !stale_after.is_zero()
                    && stamp
                        .modified
                        .and_then(|m| SystemTime::now().duration_since(m).ok())
                        .is_some_and(|age| age > stale_after);
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.files.entry(path.to_path_buf()).or_insert(Tracked {
                    source: root.source.clone(),
                    parser: Parser::new(&root.source, &kind),
                    kind,
                    tail: Tail::new(),
                    stamp: old.then_some(stamp),
                    dormant: old,
                    session_id: None,
                    reported: Counts::default(),
                    stem,
                    superseded: false,
                    behind: false,
                    queued: false,
                })
            }
        };
        if tracked.queued || (tracked.stamp == Some(stamp) && !tracked.behind) {
            return Ok(());
        }
        if tracked.superseded {
            tracked.stamp = Some(stamp);
            return Ok(());
        }
        if pass_until.is_some_and(|until| Instant::now() >= until) {
            // Out of time in this pass: the next backlog pass reads it.
            tracked.behind = true;
            tracked.queued = true;
            self.backlog.push_back(path.to_path_buf());
            return Ok(());
        }
        let (mut file, meta) = match open_regular(path)? {
            Opened::File(file, meta) => (file, meta),
            Opened::Special(kind) => {
                let source = tracked.source.clone();
                self.note_ignored(Some(source.name()), path, kind);
                return Ok(());
            }
        };
        let Some(tracked) = self.files.get_mut(path) else {
            return Ok(());
        };
        let stamp = Stamp::of(&meta);
        tracked.dormant = false;
        let mut invalid = 0u64;
        let mut data = false;
        let mut behind = false;
        if tracked.kind.is_jsonl() {
            let Tracked {
                parser,
                tail,
                kind,
                source,
                ..
            } = tracked;
            let limit = Limit {
                bytes: READ_CAP,
                until: pass_until,
            };
            let outcome = tail.read(&mut file, &meta, limit, |item| match item {
                Item::Restart => *parser = Parser::new(source, kind),
                Item::Line(line) => {
                    if parser.line(line) == LineResult::Invalid {
                        invalid += 1;
                    }
                }
            })?;
            invalid += outcome.over_long;
            data = outcome.lines > 0 || outcome.over_long > 0 || outcome.restarted;
            behind = outcome.behind;
            if let Parser::Pi(log) = parser {
                if log.rewritten() {
                    // Rewritten in place and grown (pi migrating an old format): read it
                    // again from the start in the next backlog pass.
                    tracing::debug!(source = "pi", "log rewritten in place; reading it again");
                    *tail = Tail::new();
                    *parser = Parser::new(source, kind);
                    behind = true;
                }
            }
            if let Parser::Cursor(log) = parser {
                // Cursor's lines carry no time: the file's own times date the session.
                log.file_times(meta.created().ok(), meta.modified().ok());
            }
        } else if matches!(tracked.kind, FileKind::Custom(_)) {
            // A fresh parser for each version of a whole file.
            tracked.parser = Parser::new(&tracked.source, &tracked.kind);
            match (read_capped(file, READ_CAP), &mut tracked.parser) {
                (Some(bytes), Parser::Custom(p)) => match guarded(|| p.whole(&bytes)) {
                    LineResult::Used => data = true,
                    LineResult::Unknown => {}
                    LineResult::Invalid => invalid += 1,
                },
                (Some(_), _) => {}
                // Unreadable or over the cap: a failure of this version.
                (None, _) => invalid += 1,
            }
        } else if let Parser::Gemini(chat) = &mut tracked.parser {
            match chat.read_whole(file) {
                Ok(()) => data = true,
                // Often a file caught mid-rewrite: read again at its next change.
                Err(_) => invalid += 1,
            }
        } else if matches!(
            tracked.kind,
            FileKind::AntigravitySubagent { .. }
                | FileKind::AntigravityWorkspaces
                | FileKind::AntigravitySettings
        ) {
            tracked.stamp = Some(stamp);
            let kind = tracked.kind.clone();
            let source = tracked.source.clone();
            if !self.read_agy_record(&kind, file, now) {
                tracing::debug!(source = source.name(), "skipped an unreadable record");
                if let Some(h) = self.health_mut(source.name()) {
                    h.parse_failures(1);
                }
            }
            return Ok(());
        }
        tracked.stamp = Some(stamp);
        tracked.behind = behind;
        if behind && !tracked.queued {
            tracked.queued = true;
            self.backlog.push_back(path.to_path_buf());
        }
        let source = tracked.source.clone();
        if !self.ignored.is_empty() {
            // Regular again (a special file replaced by a log).
            self.ignored.remove(path);
        }
        if invalid > 0 {
            tracing::debug!(
                source = source.name(),
                skipped = invalid,
                "skipped log lines"
            );
            if let Some(h) = self.health_mut(source.name()) {
                h.parse_failures(invalid);
            }
        }
        if !data || !self.gemini_pair(path) {
            return Ok(());
        }
        let Some(tracked) = self.files.get_mut(path) else {
            return Ok(());
        };
        match &tracked.parser {
            // No message yet (only `summary`, `file-history-snapshot`, local commands), or a
            // warm-up: nothing to report.
            Parser::Claude(log) if !log.is_conversation() => return Ok(()),
            // Not a pi session (no header on line 1), or being read again after a rewrite.
            Parser::Pi(log) if !log.is_session() => return Ok(()),
            // No record with a time yet.
            Parser::Custom(log) if log.report().last_activity_at == Timestamp::ZERO => {
                return Ok(());
            }
            _ => {}
        }
        match (&tracked.kind, &tracked.parser) {
            (FileKind::Custom(file), Parser::Custom(log)) if file.parent().is_some() => {
                let (parent, agent) = (file.parent().unwrap_or(""), file.agent().unwrap_or(""));
                let sub = log.report().to_subagent(agent, parent);
                self.lifecycle.apply_subagent(parent, sub, now);
            }
            (FileKind::ClaudeSubagent { parent, agent }, Parser::Claude(log)) => {
                let parent = if parent.is_empty() {
                    log.session_id().to_owned()
                } else {
                    parent.clone()
                };
                if !parent.is_empty() {
                    let sub = log.subagent_state(agent, &parent);
                    self.lifecycle.apply_subagent(&parent, sub, now);
                }
            }
            (FileKind::GeminiSubagent { parent, agent }, Parser::Gemini(chat)) => {
                let sub = chat.subagent_state(agent, parent);
                self.lifecycle.apply_subagent(parent, sub, now);
            }
            (FileKind::CursorSubagent { parent, agent }, Parser::Cursor(log)) => {
                let sub = log.subagent_state(agent, parent);
                self.lifecycle.apply_subagent(parent, sub, now);
            }
            (FileKind::CodexRollout, Parser::Codex(log)) if !log.parent_id().is_empty() => {
                // A subagent thread: shown under the session that spawned it (a thread
                // spawned by a subagent thread goes under that one's session).
                let agent = if log.session_id().is_empty() {
                    tracked.stem.clone()
                } else {
                    log.session_id().to_owned()
                };
                let direct = log.parent_id();
                let parent = self
                    .codex_threads
                    .get(direct)
                    .cloned()
                    .unwrap_or_else(|| direct.to_owned());
                let sub = log.subagent_state(&agent, &parent);
                if !self.codex_threads.contains_key(&agent) {
                    if self.codex_threads.len() >= MAX_CODEX_THREADS {
                        self.codex_threads.clear();
                    }
                    self.codex_threads.insert(agent, parent.clone());
                }
                self.lifecycle.apply_subagent(&parent, sub, now);
            }
            (FileKind::AntigravityTranscript { conversation }, Parser::Agy(log))
                if self.agy_children.contains_key(conversation) =>
            {
                if let Some(record) = self.agy_children.get(conversation) {
                    let sub = log.subagent_state(record);
                    self.lifecycle.apply_subagent(&record.parent, sub, now);
                }
            }
            (_, parser) => {
                let id = match &tracked.session_id {
                    Some(id) => id.clone(),
                    None => {
                        let named = parser.session_id();
                        let taken = |id: &str| self.claimed.get(id).is_some_and(|p| p != path);
                        let id = if named.is_empty() || taken(named) {
                            tracked.stem.clone()
                        } else {
                            named.to_owned()
                        };
                        self.claimed.insert(id.clone(), path.to_path_buf());
                        tracked.session_id = Some(id.clone());
                        id
                    }
                };
                let mut unresolved = None;
                let report = match parser {
                    Parser::Claude(p) => p.report(&id),
                    Parser::Codex(p) => p.report(&id),
                    Parser::Gemini(p) => {
                        let mut report = p.report(&id);
                        let folder = path
                            .strip_prefix(&root.path)
                            .ok()
                            .and_then(|rel| rel.components().next())
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .unwrap_or_default();
                        if let Some(projects) = &mut self.gemini_projects {
                            match projects.working_dir(&root.path, &folder, p, now) {
                                Resolution::Known(dir) => report.working_dir = dir,
                                Resolution::Unknown(hash) => unresolved = hash,
                            }
                        }
                        report
                    }
                    Parser::Pi(p) => p.report(&id),
                    Parser::Cursor(p) => {
                        let mut report = p.report(&id);
                        if report.working_dir.is_empty() {
                            report.working_dir = self.project_dirs.working_dir(p.project());
                        }
                        report
                    }
                    Parser::Agy(p) => {
                        let mut report = p.report(&id, self.agy_cwds.get(&id).map(String::as_str));
                        if report.model.is_empty() {
                            report.model.clone_from(&self.agy_model);
                        }
                        report
                    }
                    Parser::Custom(p) => p.report().to_report(&id),
                    Parser::OpenCode(_) | Parser::Whole => return Ok(()),
                };
                let delta = report.counts.since(tracked.reported);
                tracked.reported = report.counts;
                self.lifecycle.apply(source.name(), &report, delta, now);
                if let Some(hash) = unresolved {
                    if self.gemini_unresolved.len() >= MAX_GEMINI_UNRESOLVED {
                        self.gemini_unresolved.clear();
                    }
                    self.gemini_unresolved.entry(hash).or_default().insert(id);
                }
                self.learn_working_dir(&report.working_dir);
            }
        }
        Ok(())
    }

    /// A session's working directory, as a candidate Gemini CLI project root: Gemini
    /// sessions whose project hash it matches get it as their working directory.
    fn learn_working_dir(&mut self, dir: &str) {
        let Some(projects) = &mut self.gemini_projects else {
            return;
        };
        if !projects.learn(dir) || self.gemini_unresolved.is_empty() {
            return;
        }
        let hash = super::sources::gemini_project::sha256_hex(dir.as_bytes());
        if let Some(ids) = self.gemini_unresolved.remove(&hash) {
            for id in ids {
                tracing::debug!(session = %id, "gemini project resolved from another session");
                self.lifecycle.fill_working_dir(&id, dir);
            }
        }
    }

    /// Reads an Antigravity CLI record file whole (at most [`antigravity::MAX_RECORD`]
    /// bytes) into the scanner's tables; a subagent record also updates the subagent the
    /// child's transcript shows. Returns `false` when the file is no valid record (often one
    /// caught mid-rewrite: read again at its next change).
    fn read_agy_record(&mut self, kind: &FileKind, file: fs::File, now: Instant) -> bool {
        use std::io::Read;
        let mut text = Vec::new();
        if file
            .take(antigravity::MAX_RECORD + 1)
            .read_to_end(&mut text)
            .is_err()
            || text.len() as u64 > antigravity::MAX_RECORD
        {
            return false;
        }
        match kind {
            FileKind::AntigravityWorkspaces => match antigravity::parse_workspaces(&text) {
                Some(map) => {
                    self.agy_cwds = map;
                    true
                }
                None => false,
            },
            FileKind::AntigravitySettings => match antigravity::parse_settings_model(&text) {
                Some(model) => {
                    self.agy_model = model;
                    true
                }
                None => false,
            },
            FileKind::AntigravitySubagent { parent } => {
                let Some(record) = SubagentRecord::parse(&text, parent) else {
                    return false;
                };
                let child = record.child.clone();
                let state = self
                    .files
                    .iter_mut()
                    .find_map(|(_, t)| match (&t.kind, &t.parser) {
                        (FileKind::AntigravityTranscript { conversation }, Parser::Agy(log))
                            if *conversation == child =>
                        {
                            Some((log.subagent_state(&record), t.session_id.take()))
                        }
                        _ => None,
                    });
                if let Some((sub, was_session)) = state {
                    if let Some(id) = was_session {
                        // Its transcript was read before the record: it showed as a session
                        // of its own, which ends here.
                        self.claimed.remove(&id);
                        self.lifecycle
                            .terminate(&id, "subagent", Timestamp::now(), now);
                    }
                    self.lifecycle.apply_subagent(&record.parent, sub, now);
                }
                self.agy_children.insert(child, record);
                true
            }
            _ => true,
        }
    }

    /// Polls OpenCode's database (`path` names `opencode.db` or its `opencode.db-wal`) for
    /// what changed, and merges the sessions it reports. Another file at the path (a new
    /// inode) is read as a new database.
    fn read_opencode(&mut self, root: &Root, path: &Path, now: Instant) -> io::Result<()> {
        let db_path = match path.file_name().and_then(|n| n.to_str()) {
            Some("opencode.db-wal") => path.with_file_name("opencode.db"),
            _ => path.to_path_buf(),
        };
        let meta = fs::metadata(&db_path)?;
        if !meta.is_file() {
            self.note_ignored(Some(root.source.name()), &db_path, special_kind(&meta));
            return Ok(());
        }
        let stamp = Stamp::of(&meta);
        let (stale_after, pass_until) = (self.stale_after, self.pass_until);
        let tracked = self
            .files
            .entry(db_path.clone())
            .or_insert_with(|| Tracked {
                source: root.source.clone(),
                kind: FileKind::OpenCodeDb,
                parser: Parser::OpenCode(Box::new(OpenCodeDb::new(stale_after))),
                tail: Tail::new(),
                stamp: None,
                dormant: false,
                session_id: None,
                reported: Counts::default(),
                stem: String::new(),
                superseded: false,
                behind: false,
                queued: false,
            });
        let Parser::OpenCode(db) = &mut tracked.parser else {
            return Ok(());
        };
        // Whether anything was committed is the database's to say (`PRAGMA data_version`):
        // the WAL is rewritten in place, so its size and time can stay the same.
        if tracked.queued {
            return Ok(());
        }
        let behind;
        if pass_until.is_some_and(|until| Instant::now() >= until) {
            behind = true;
        } else {
            if tracked.stamp.is_some_and(|s| s.id != stamp.id) {
                // Another database at the path: read it as new.
                db.reset();
            }
            tracked.stamp = Some(stamp);
            match db.poll(&db_path, pass_until) {
                Ok(poll) => {
                    tracing::trace!(
                        source = "opencode",
                        sessions = poll.sessions.len(),
                        subagents = poll.subagents.len(),
                        behind = poll.behind,
                        "database polled"
                    );
                    behind = poll.behind;
                    tracked.behind = behind;
                    if poll.changed {
                        self.opencode_recheck = Some(Instant::now() + OPENCODE_RECHECK);
                    }
                    if behind && !tracked.queued {
                        tracked.queued = true;
                        self.backlog.push_back(db_path.clone());
                    }
                    if poll.invalid > 0 {
                        tracing::debug!(
                            source = "opencode",
                            skipped = poll.invalid,
                            "skipped rows"
                        );
                        if let Some(h) = self.health_mut(SourceKind::OpenCode.name()) {
                            h.parse_failures(poll.invalid);
                        }
                    }
                    for (report, delta, archived) in poll.sessions {
                        self.lifecycle.apply("opencode", &report, delta, now);
                        if let Some(at) = archived {
                            self.lifecycle
                                .terminate(&report.session_id, "archived", at, now);
                        }
                    }
                    for (parent, sub) in poll.subagents {
                        self.lifecycle.apply_subagent(&parent, sub, now);
                    }
                    return Ok(());
                }
                // The writer holds a lock for a moment (WAL recovery): try again.
                Err(e) if opencode::is_busy(&e) => behind = true,
                Err(e) => {
                    db.close();
                    return Err(io::Error::other(format!("cannot read the database: {e}")));
                }
            }
        }
        if behind {
            tracked.behind = true;
            if !tracked.queued {
                tracked.queued = true;
                self.backlog.push_back(db_path);
            }
        }
        Ok(())
    }

    /// Gemini CLI resumes a `.json` chat by copying its whole history into `<name>.jsonl`
    /// beside it, with the same `sessionId`, and writing only there: the two files are one
    /// session. The `.jsonl` takes the session over with what the `.json` reported so far
    /// (so nothing is counted twice) and the `.json` is no longer read. Returns `false` when
    /// `path` must not report: such a superseded `.json`, or a `.jsonl` still holding fewer
    /// messages than the `.json` reported (read while the copy is being written).
    fn gemini_pair(&mut self, path: &Path) -> bool {
        let Some(t) = self.files.get(path) else {
            return true;
        };
        if t.session_id.is_some() {
            return true;
        }
        let sibling = match t.kind {
            FileKind::GeminiJson => path.with_extension("jsonl"),
            FileKind::GeminiJsonl => path.with_extension("json"),
            _ => return true,
        };
        let named = t.parser.session_id();
        let Some(other) = self.files.get(&sibling) else {
            return true;
        };
        if named.is_empty() || other.parser.session_id() != named {
            return true;
        }
        if t.kind == FileKind::GeminiJson {
            if let Some(t) = self.files.get_mut(path) {
                t.superseded = true;
            }
            return false;
        }
        let (reported, id) = (other.reported, other.session_id.clone());
        if let Parser::Gemini(chat) = &t.parser {
            if chat.report("").counts.messages < reported.messages {
                // Caught while Gemini CLI is still copying the history: wait for the rest
                // rather than report a session that shrank.
                return false;
            }
        }
        if let Some(other) = self.files.get_mut(&sibling) {
            other.superseded = true;
        }
        if let Some(id) = id {
            self.claimed.insert(id.clone(), path.to_path_buf());
            if let Some(t) = self.files.get_mut(path) {
                t.reported = reported;
                t.session_id = Some(id);
            }
        }
        true
    }

    /// How many files are tracked, and how many of them are dormant.
    pub(crate) fn file_counts(&self) -> (usize, usize) {
        (
            self.files.len(),
            self.files.values().filter(|f| f.dormant).count(),
        )
    }
}
