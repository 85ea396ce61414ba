//! OpenCode sessions: the SQLite database `<data dir>/opencode.db` (OpenCode 1.2 and later),
//! the data dir being `$XDG_DATA_HOME/opencode` (default `~/.local/share/opencode`, on macOS
//! too).
//!
//! One database holds every session, written by OpenCode's long-running process in WAL mode
//! (`opencode.db-wal` beside it). It is opened read-only (`SQLITE_OPEN_READ_ONLY`, no
//! `immutable`, so the WAL's newest rows are seen; `SQLITE_OPEN_NOFOLLOW`), with a 20 ms busy
//! timeout, and never written: a WAL reader never blocks the writer. It is read again when
//! the database or its `-wal` file changes (and at each rescan), in *polls* of bounded work:
//!
//! - the `session` rows whose `time_updated` moved since the last poll (at most
//!   [`SESSIONS_PER_POLL`] a poll, in `time_updated` order, the rest in the next poll; at the
//!   first poll only sessions updated within the stale threshold: older ones are not loaded
//!   until they change, as old log files);
//! - the sessions owning `message` or `part` rows inserted since the last poll (by `rowid`);
//! - every session whose turn is in progress (a tool `pending`/`running`, an assistant
//!   message not completed): a tool's row is updated in place as it runs and finishes,
//!   without touching the session row.
//!
//! Each of those sessions is read from where the last poll stopped: its message rows from
//! the newest one still in progress (else the next new one), its part rows from the oldest
//! tool still running (else the next new one), at most [`ROWS_PER_QUERY`] rows a query; a
//! session with rows left is read on in the next poll, and is reported only once loaded. At
//! most [`SESSIONS_PER_READ`] sessions are read a poll. Only `json_extract` of the fields
//! below leaves the database: the prompt, reply, reasoning and tool text, input and output in
//! `data` are never loaded.
//!
//! What becomes of each field:
//!
//! - id: `session.id`; slug: `session.slug`; workingDir: `session.directory` (where
//!   OpenCode was started); startedAt: `session.time_created`.
//! - model: the latest assistant message's `modelID`, else the latest user message's
//!   `model.modelID` (the model chosen for the turn). maxContextTokens from the model table.
//! - contextTokens: `input + cache.read + cache.write` of the latest `step-finish` part (one
//!   per model call; OpenCode's `input` excludes cached tokens). An interrupted call writes
//!   none, so its zero usage is never shown.
//! - outputTokens: the sum of `output + reasoning` over every `step-finish` part.
//! - messageCount: user and assistant messages (OpenCode writes one assistant message per
//!   model call). toolCallCount: `tool` parts. compactionCount: `compaction` parts.
//! - currentTool: the newest `tool` part whose `state.status` is `pending` or `running`.
//! - activity: `working` while a tool runs, the latest message is the person's, the latest
//!   assistant message has no `time.completed` or ended with `finish` `tool-calls` (the next
//!   call follows), or a compaction runs (`time_compacting`); `waiting` when the latest
//!   assistant message completed with another `finish` (`stop`, `length`, …) or with an
//!   `error` (an interrupt is `MessageAbortedError`); a session with no message yet is
//!   `waiting`. These are stated ends: nothing is held.
//! - lastActivityAt: the latest `time_updated` of the rows read (messages and parts), never
//!   before `time_created`.
//! - `time_archived` set: the session ends (`terminal`, reason `archived`, `completedAt` the
//!   archive time). A session archived when first seen is not reported, nor one without
//!   a message yet.
//! - A session with `parent_id` (a subagent the `task` tool started) is a subagent of its
//!   parent: `completed` once its turn ended (or it was archived).
//!
//! # What cannot be known
//! Permission prompts and the `question` tool's wait are not stored (only OpenCode's live
//! event bus has them): a tool waiting for approval reads `working`. A deleted session
//! (rows removed) says nothing: it goes stale. The git branch.
//!
//! # Not read
//! The JSON tree `<data dir>/storage/` of OpenCode 1.1 and earlier: 1.2 imports it into
//! the database on first run and leaves the files behind as stale copies.
//!
//! # Differences from Go (`sources/opencode`)
//! - Go queries `created_at`/`updated_at` columns that no OpenCode version has (the query
//!   fails on every real database) and parses times as strings: here `time_created`/
//!   `time_updated`, integer milliseconds.
//! - Go counts `tool-invocation` parts (the 2025 inline message shape, never a `part` row):
//!   here `tool` parts, named by `tool`.
//! - Go reads a new user message as `waiting` and never ends a turn: here a user message
//!   starts work and a completed reply ends the turn.
//! - Go's contextTokens is `session.tokens_input`, a lifetime sum of uncached input (and a
//!   column only newer versions have): here the latest call's context.
//! - Go lists subagent sessions as sessions; here they are subagents of their parent.
//! - Go needs the database path given; here the default path follows XDG.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Counts, Report};
use crate::monitor::models::context_window;
use crate::wire::{Activity, SubagentState, Timestamp};

/// Sessions whose row changed, taken in one poll at most.
pub(crate) const SESSIONS_PER_POLL: usize = 256;
/// Sessions whose messages and parts are read in one poll at most.
pub(crate) const SESSIONS_PER_READ: usize = 32;
/// Rows one query returns at most.
pub(crate) const ROWS_PER_QUERY: usize = 1000;
/// New `message` or `part` rows looked at in one poll at most.
const NEW_ROWS_PER_POLL: usize = 4096;
/// Tools tracked as running per session at most (a session that never finishes its tools
/// cannot grow it).
const MAX_PENDING: usize = 32;
/// How long a query waits for a lock (a WAL reader waits only while the WAL is recovered).
const BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// What a poll found.
#[derive(Debug, Default)]
pub(crate) struct Poll {
    /// Changed top-level sessions, with the change of their counts since last reported and
    /// their archive time if archived.
    pub(crate) sessions: Vec<(Report, Counts, Option<Timestamp>)>,
    /// Changed subagent sessions, as subagents of their parent.
    pub(crate) subagents: Vec<(String, SubagentState)>,
    /// Rows whose `data` was not valid JSON (skipped).
    pub(crate) invalid: u64,
    /// Work was left for the next poll.
    pub(crate) behind: bool,
    /// Something was committed since the previous poll.
    pub(crate) changed: bool,
}

/// One tool part still running.
#[derive(Debug, Clone)]
struct Pending {
    call: String,
    tool: String,
    rowid: i64,
}

/// What is known of one session.
#[derive(Debug, Default)]
struct Session {
    parent: String,
    slug: String,
    directory: String,
    created: i64,
    archived: Option<i64>,
    compacting: bool,
    /// Message rows up to this rowid are counted.
    msg_rowid: i64,
    /// Part rows up to this rowid are counted.
    part_rowid: i64,
    /// The latest message: its rowid, role, completion and end.
    latest_rowid: i64,
    latest_role: String,
    latest_completed: bool,
    latest_finish: String,
    latest_error: bool,
    model: String,
    user_model: String,
    pending: Vec<Pending>,
    messages: i64,
    tool_calls: i64,
    compactions: i64,
    context_tokens: i64,
    output_tokens: i64,
    last_at: i64,
    /// Fully read at least once.
    loaded: bool,
    /// What was last reported (a session polled for its turn in progress is reported only
    /// when something changed).
    last_report: Option<Report>,
    last_subagent: Option<SubagentState>,
    /// Reported as archived (or skipped for being archived when first seen).
    ended: bool,
}

impl Session {
    /// The turn is in progress: its rows may change in place.
    fn in_progress(&self) -> bool {
        !self.pending.is_empty() || (self.latest_role == "assistant" && !self.latest_completed)
    }

    fn activity(&self) -> Activity {
        let working = !self.pending.is_empty()
            || self.compacting
            || match self.latest_role.as_str() {
                "user" => true,
                "assistant" => {
                    !self.latest_completed
                        || (!self.latest_error && self.latest_finish == "tool-calls")
                }
                _ => false,
            };
        if working {
            Activity::Working
        } else {
            Activity::Waiting
        }
    }

    fn model(&self) -> &str {
        if self.model.is_empty() {
            &self.user_model
        } else {
            &self.model
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            messages: self.messages,
            tool_calls: self.tool_calls,
            compactions: self.compactions,
        }
    }

    fn report(&self, id: &str) -> Report {
        let model = self.model().to_owned();
        Report {
            session_id: id.to_owned(),
            slug: self.slug.clone(),
            max_context_tokens: context_window(&model).unwrap_or(0),
            model,
            working_dir: self.directory.clone(),
            activity: self.activity(),
            current_tool: self
                .pending
                .last()
                .map(|p| p.tool.clone())
                .unwrap_or_default(),
            context_tokens: self.context_tokens,
            output_tokens: self.output_tokens,
            counts: self.counts(),
            started_at: Timestamp::from_unix_millis(self.created),
            last_activity_at: Timestamp::from_unix_millis(self.last_at.max(self.created)),
            ..Report::default()
        }
    }

    fn subagent(&self, id: &str) -> SubagentState {
        let r = self.report(id);
        // Done once it answered (a child just created, with no message yet, is starting).
        let done = self.archived.is_some()
            || (r.activity == Activity::Waiting && self.latest_role == "assistant");
        SubagentState {
            id: id.to_owned(),
            parent_id: self.parent.clone(),
            slug: r.slug,
            activity: if done {
                Activity::Terminal
            } else if self.latest_role.is_empty() {
                // Created, its prompt not written yet: starting.
                Activity::Working
            } else {
                r.activity
            },
            current_tool: if done { String::new() } else { r.current_tool },
            started_at: r.started_at,
            last_activity_at: r.last_activity_at,
            model: r.model,
            context_tokens: r.context_tokens,
            output_tokens: r.output_tokens,
            message_count: r.counts.messages,
            tool_call_count: r.counts.tool_calls,
            completed_at: if done {
                self.archived
                    .map_or(r.last_activity_at, Timestamp::from_unix_millis)
            } else {
                Timestamp::ZERO
            },
        }
    }
}

/// The reader of one OpenCode database.
pub(crate) struct OpenCodeDb {
    conn: Option<Connection>,
    /// Only sessions updated after this (ms) are loaded at the first poll; 0: all.
    stale_after: Duration,
    /// Keyset of the session rows taken: `(time_updated, id)`.
    session_cursor: (i64, String),
    /// The newest `message` and `part` rowids looked at.
    msg_cursor: i64,
    part_cursor: i64,
    sessions: HashMap<String, Session>,
    /// Sessions to read, in order, each once.
    dirty: VecDeque<String>,
    dirty_set: HashSet<String>,
    /// The counts last reported per session (kept across a reopened database).
    reported: HashMap<String, Counts>,
    /// `PRAGMA data_version` at the last poll: it changes when another connection commits.
    data_version: Option<i64>,
    /// The last poll left work for the next.
    left_over: bool,
    /// The cursors were set at a first open (a connection opened again keeps them).
    started: bool,
    /// The `-shm` file existed when the connection was opened: it uses the WAL index other
    /// connections update.
    shared_index: bool,
}

impl std::fmt::Debug for OpenCodeDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCodeDb")
            .field("open", &self.conn.is_some())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// A database error worth a retry rather than a failure: busy or locked.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Whether the file at `path` starts with SQLite's header string.
fn has_sqlite_header(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}

/// The tables are not there (yet): OpenCode creates them at its first start.
fn no_table(e: &rusqlite::Error) -> bool {
    e.to_string().contains("no such table")
}

/// A poll with nothing read: the database holds no OpenCode tables (yet).
fn empty_if_no_table(e: rusqlite::Error) -> Result<Poll, rusqlite::Error> {
    if no_table(&e) {
        Ok(Poll::default())
    } else {
        Err(e)
    }
}

impl OpenCodeDb {
    /// A reader that loads, at its first poll, sessions updated within `stale_after`
    /// (zero: every session).
    pub(crate) fn new(stale_after: Duration) -> Self {
        OpenCodeDb {
            conn: None,
            stale_after,
            session_cursor: (i64::MIN, String::new()),
            msg_cursor: 0,
            part_cursor: 0,
            sessions: HashMap::new(),
            dirty: VecDeque::new(),
            dirty_set: HashSet::new(),
            reported: HashMap::new(),
            data_version: None,
            left_over: false,
            started: false,
            shared_index: false,
        }
    }

    /// Closes the connection and forgets what was read (the database was replaced): the next
    /// poll reads it as new, reporting only changes of counts.
    pub(crate) fn reset(&mut self) {
        let reported = std::mem::take(&mut self.reported);
        *self = OpenCodeDb::new(self.stale_after);
        self.reported = reported;
    }

    /// Closes the connection (after an error): the next poll opens the database again.
    pub(crate) fn close(&mut self) {
        self.conn = None;
        // A version of another connection says nothing: read at the next poll.
        self.data_version = None;
    }

    fn mark(&mut self, id: &str) {
        if self.dirty_set.insert(id.to_owned()) {
            self.dirty.push_back(id.to_owned());
        }
    }

    fn open(&mut self, path: &Path) -> Result<(), rusqlite::Error> {
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        self.shared_index = Path::new(&shm).is_file();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if self.started {
            self.conn = Some(conn);
            return Ok(());
        }
        // Only sessions updated within the stale threshold are loaded at start; rows
        // inserted from now on are found by rowid.
        let since = if self.stale_after.is_zero() {
            i64::MIN
        } else {
            let since = Timestamp::now().unix_millis() - self.stale_after.as_millis() as i128;
            i64::try_from(since).unwrap_or(i64::MIN)
        };
        self.session_cursor = (since, String::new());
        let max = |table: &str| -> Result<i64, rusqlite::Error> {
            match conn.query_row(
                &format!("SELECT ifnull(max(rowid), 0) FROM {table}"),
                [],
                |r| r.get::<_, i64>(0),
            ) {
                Err(e) if no_table(&e) => Ok(0),
                other => other,
            }
        };
        self.msg_cursor = max("message")?;
        self.part_cursor = max("part")?;
        self.conn = Some(conn);
        self.started = true;
        Ok(())
    }

    /// Reads what changed since the last poll (opening the database at `path` first if
    /// needed), until `until` at the latest (after at least one session).
    ///
    /// A connection opened while no other had the database open (no `-shm` file, which a
    /// read-only connection cannot create) reads without the shared WAL index: it may not see
    /// what a writer that opens the database later commits, or fail on it ("file is not a
    /// database"). So such a connection is closed after its poll, and a failed poll is tried
    /// once more on a new connection.
    pub(crate) fn poll(
        &mut self,
        path: &Path,
        until: Option<Instant>,
    ) -> Result<Poll, rusqlite::Error> {
        let result = match self.poll_once(path, until) {
            Err(e) if !is_busy(&e) && self.conn.is_some() => {
                self.close();
                self.poll_once(path, until)
            }
            result => result,
        };
        let shared = self.shared_index;
        if result.is_err() || !shared {
            self.close();
        }
        match result {
            // A writer starting up under a connection without the WAL index: not the file's
            // fault when it starts as an SQLite database. Polled again shortly.
            Err(e)
                if !shared
                    && e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase)
                    && has_sqlite_header(path) =>
            {
                tracing::debug!(
                    source = "opencode",
                    "database being opened by its writer; polling again"
                );
                Ok(Poll {
                    changed: true,
                    ..Poll::default()
                })
            }
            result => result,
        }
    }

    fn poll_once(&mut self, path: &Path, until: Option<Instant>) -> Result<Poll, rusqlite::Error> {
        if self.conn.is_none() {
            self.open(path)?;
        }
        // Nothing committed since the last poll and nothing left over: nothing to read. (A
        // file's size and time cannot tell: the WAL is rewritten in place within one tick.)
        let version: i64 = self
            .conn()?
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.data_version == Some(version) && !self.left_over {
            tracing::trace!(source = "opencode", version, "database unchanged");
            return Ok(Poll::default());
        }
        self.data_version = Some(version);
        let poll = self.read_changes(until).map(|mut p| {
            p.changed = true;
            p
        });
        self.left_over = poll.as_ref().map_or(true, |p| p.behind);
        poll
    }

    fn read_changes(&mut self, until: Option<Instant>) -> Result<Poll, rusqlite::Error> {
        let mut poll = Poll::default();
        match self.changed_sessions(&mut poll) {
            Ok(()) => {}
            Err(e) => return empty_if_no_table(e),
        }
        if let Err(e) = self.new_rows(&mut poll) {
            return empty_if_no_table(e);
        }
        // Turns in progress: their rows change in place.
        let live: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.loaded && s.in_progress() && !s.ended)
            .map(|(id, _)| id.clone())
            .collect();
        for id in live {
            self.mark(&id);
        }
        let mut read = 0usize;
        let mut again = Vec::new();
        while let Some(id) = self.dirty.front().cloned() {
            if read >= SESSIONS_PER_READ
                || (read > 0 && until.is_some_and(|until| Instant::now() >= until))
            {
                poll.behind = true;
                break;
            }
            self.dirty.pop_front();
            self.dirty_set.remove(&id);
            read += 1;
            let complete = match self.read_session(&id, &mut poll) {
                Ok(complete) => complete,
                Err(e) if no_table(&e) => continue,
                Err(e) => {
                    self.mark(&id);
                    return Err(e);
                }
            };
            if !complete {
                // Rows left: read on in the next poll, report once loaded.
                again.push(id);
                poll.behind = true;
                continue;
            }
            self.report(&id, &mut poll);
        }
        for id in again {
            self.mark(&id);
        }
        Ok(poll)
    }

    fn conn(&self) -> Result<&Connection, rusqlite::Error> {
        self.conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)
    }

    /// The session rows updated since the last poll.
    fn changed_sessions(&mut self, poll: &mut Poll) -> Result<(), rusqlite::Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, parent_id, slug, directory, time_created, time_updated, \
             time_compacting, time_archived FROM session \
             WHERE time_updated > ?1 OR (time_updated = ?1 AND id > ?2) \
             ORDER BY time_updated, id LIMIT ?3",
        )?;
        let (t, id) = self.session_cursor.clone();
        let rows: Vec<SessionRow> = stmt
            .query_map(
                params![t, id, SESSIONS_PER_POLL as i64],
                SessionRow::from_row,
            )?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        if rows.len() >= SESSIONS_PER_POLL {
            poll.behind = true;
        }
        if let Some(last) = rows.last() {
            self.session_cursor = (last.updated, last.id.clone());
        }
        for row in rows {
            let id = row.id.clone();
            self.update_session(row);
            self.mark(&id);
        }
        Ok(())
    }

    fn update_session(&mut self, row: SessionRow) {
        let s = self.sessions.entry(row.id).or_default();
        s.parent = row.parent.unwrap_or_default();
        s.slug = row.slug.unwrap_or_default();
        s.directory = row.directory.unwrap_or_default();
        s.created = row.created;
        s.compacting = row.compacting.is_some();
        if row.archived.is_none() {
            s.ended = false;
        }
        s.archived = row.archived;
    }

    /// Sessions owning rows inserted since the last poll; sessions not known yet are loaded.
    fn new_rows(&mut self, poll: &mut Poll) -> Result<(), rusqlite::Error> {
        let mut owners: Vec<String> = Vec::new();
        for table in ["message", "part"] {
            let conn = self.conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT rowid, session_id FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
            ))?;
            let cursor = if table == "message" {
                self.msg_cursor
            } else {
                self.part_cursor
            };
            let rows: Vec<(i64, String)> = stmt
                .query_map(params![cursor, NEW_ROWS_PER_POLL as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ))
                })?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            if rows.len() >= NEW_ROWS_PER_POLL {
                poll.behind = true;
            }
            if let Some((rowid, _)) = rows.last() {
                if table == "message" {
                    self.msg_cursor = *rowid;
                } else {
                    self.part_cursor = *rowid;
                }
            }
            for (_, id) in rows {
                if owners.last() != Some(&id) && !id.is_empty() {
                    owners.push(id);
                }
            }
        }
        owners.sort_unstable();
        owners.dedup();
        for id in owners {
            if !self.sessions.contains_key(&id) {
                let conn = self.conn()?;
                let mut stmt = conn.prepare_cached(
                    "SELECT id, parent_id, slug, directory, time_created, time_updated, \
                     time_compacting, time_archived FROM session WHERE id = ?1",
                )?;
                let Some(row) = stmt.query_row([&id], SessionRow::from_row).optional()? else {
                    continue;
                };
                drop(stmt);
                self.update_session(row);
            }
            self.mark(&id);
        }
        Ok(())
    }

    /// Reads a session's messages and parts from where the last read stopped. Returns
    /// whether every row was read.
    fn read_session(&mut self, id: &str, poll: &mut Poll) -> Result<bool, rusqlite::Error> {
        let Some(s) = self.sessions.get(id) else {
            return Ok(true);
        };
        // New rows, and the rows that may still change in place: the latest message while
        // in progress, the tools still running.
        let (msg_from, open_msg) = (
            s.msg_rowid,
            if s.latest_role == "assistant" && !s.latest_completed {
                s.latest_rowid
            } else {
                -1
            },
        );
        let part_from = s.part_rowid;
        let running = serde_json::to_string(&s.pending.iter().map(|p| p.rowid).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".to_owned());
        let conn = self.conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)?;
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, time_updated, CASE WHEN json_valid(data) THEN \
             json_extract(data, '$.role', '$.modelID', '$.model.modelID', '$.time.completed', \
             '$.finish', '$.error.name') END \
             FROM message WHERE session_id = ?1 AND (rowid > ?2 OR rowid = ?3) ORDER BY rowid LIMIT ?4",
        )?;
        let messages: Vec<(i64, Option<i64>, Option<String>)> = stmt
            .query_map(
                params![id, msg_from, open_msg, ROWS_PER_QUERY as i64],
                |r| Ok((r.get(0)?, r.get(1).ok(), r.get(2).ok())),
            )?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, time_updated, CASE WHEN json_valid(data) THEN \
             json_extract(data, '$.type', '$.tool', '$.callID', '$.state.status', \
             '$.tokens.input', '$.tokens.output', '$.tokens.reasoning', \
             '$.tokens.cache.read', '$.tokens.cache.write') END \
             FROM part WHERE session_id = ?1 AND (rowid > ?2 OR rowid IN (SELECT value FROM json_each(?3))) \
             ORDER BY rowid LIMIT ?4",
        )?;
        let parts: Vec<(i64, Option<i64>, Option<String>)> = stmt
            .query_map(
                params![id, part_from, running, ROWS_PER_QUERY as i64],
                |r| Ok((r.get(0)?, r.get(1).ok(), r.get(2).ok())),
            )?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let complete = messages.len() < ROWS_PER_QUERY && parts.len() < ROWS_PER_QUERY;
        let Some(s) = self.sessions.get_mut(id) else {
            return Ok(true);
        };
        for (rowid, updated, fields) in messages {
            let Some(f) = fields.as_deref().and_then(fields_of) else {
                if rowid > s.msg_rowid {
                    s.msg_rowid = rowid;
                    poll.invalid += 1;
                }
                continue;
            };
            message(s, rowid, updated.unwrap_or(0), &f);
        }
        for (rowid, updated, fields) in parts {
            let Some(f) = fields.as_deref().and_then(fields_of) else {
                if rowid > s.part_rowid {
                    s.part_rowid = rowid;
                    poll.invalid += 1;
                }
                continue;
            };
            part(s, rowid, updated.unwrap_or(0), &f);
        }
        if complete {
            s.loaded = true;
        }
        Ok(complete)
    }

    fn report(&mut self, id: &str, poll: &mut Poll) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if !s.loaded {
            return;
        }
        if !s.parent.is_empty() {
            let sub = s.subagent(id);
            if s.last_subagent.as_ref() != Some(&sub) {
                s.last_subagent = Some(sub.clone());
                poll.subagents.push((s.parent.clone(), sub));
            }
            return;
        }
        if s.ended || s.latest_role.is_empty() {
            // Ended, or no message yet (a session row written just before its prompt).
            return;
        }
        let archived = s.archived.map(Timestamp::from_unix_millis);
        let known = self.reported.contains_key(id);
        if archived.is_some() {
            s.ended = true;
            if !known {
                // Archived before it was ever seen: nothing to show.
                return;
            }
        }
        let report = s.report(id);
        if archived.is_none() && s.last_report.as_ref() == Some(&report) {
            return;
        }
        s.last_report = Some(report.clone());
        let before = self.reported.insert(id.to_owned(), report.counts);
        let delta = report.counts.since(before.unwrap_or_default());
        poll.sessions.push((report, delta, archived));
    }
}

/// The `session` columns read.
struct SessionRow {
    id: String,
    parent: Option<String>,
    slug: Option<String>,
    directory: Option<String>,
    created: i64,
    updated: i64,
    compacting: Option<i64>,
    archived: Option<i64>,
}

impl SessionRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
        Ok(SessionRow {
            id: r.get(0)?,
            parent: r.get(1).ok().flatten(),
            slug: r.get(2).ok().flatten(),
            directory: r.get(3).ok().flatten(),
            created: r.get(4).unwrap_or(0),
            updated: r.get(5).unwrap_or(0),
            compacting: r.get(6).ok().flatten(),
            archived: r.get(7).ok().flatten(),
        })
    }
}

/// The values `json_extract` returned (a JSON array), or `None` when `data` was no JSON.
fn fields_of(text: &str) -> Option<Vec<serde_json::Value>> {
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::Array(values) => Some(values),
        _ => None,
    }
}

fn text(f: &[serde_json::Value], i: usize) -> &str {
    f.get(i).and_then(serde_json::Value::as_str).unwrap_or("")
}

fn int(f: &[serde_json::Value], i: usize) -> i64 {
    f.get(i).and_then(serde_json::Value::as_i64).unwrap_or(0)
}

/// A `message` row: `[role, modelID, model.modelID, time.completed, finish, error.name]`.
fn message(s: &mut Session, rowid: i64, updated: i64, f: &[serde_json::Value]) {
    let role = text(f, 0);
    if rowid > s.msg_rowid {
        s.msg_rowid = rowid;
        if matches!(role, "user" | "assistant") {
            s.messages += 1;
        }
    }
    if rowid >= s.latest_rowid {
        s.latest_rowid = rowid;
        role.clone_into(&mut s.latest_role);
        s.latest_completed = f.get(3).is_some_and(|v| !v.is_null());
        text(f, 4).clone_into(&mut s.latest_finish);
        s.latest_error = f.get(5).is_some_and(|v| !v.is_null());
        if role == "assistant" && s.latest_completed && !s.latest_finish.eq("tool-calls") {
            // The turn ended: nothing runs any more.
            s.pending.clear();
        }
    }
    match role {
        "assistant" if !text(f, 1).is_empty() => text(f, 1).clone_into(&mut s.model),
        "user" if !text(f, 2).is_empty() => text(f, 2).clone_into(&mut s.user_model),
        _ => {}
    }
    s.last_at = s.last_at.max(updated);
}

/// A `part` row: `[type, tool, callID, state.status, tokens.input, tokens.output,
/// tokens.reasoning, tokens.cache.read, tokens.cache.write]`.
fn part(s: &mut Session, rowid: i64, updated: i64, f: &[serde_json::Value]) {
    let kind = text(f, 0);
    let new = rowid > s.part_rowid;
    if new {
        s.part_rowid = rowid;
    }
    match kind {
        "tool" => {
            if new {
                s.tool_calls += 1;
            }
            let call = text(f, 2);
            s.pending.retain(|p| p.call != call);
            if matches!(text(f, 3), "pending" | "running") {
                if s.pending.len() >= MAX_PENDING {
                    s.pending.remove(0);
                }
                s.pending.push(Pending {
                    call: call.to_owned(),
                    tool: text(f, 1).to_owned(),
                    rowid,
                });
                s.pending.sort_by_key(|p| p.rowid);
            }
        }
        "step-finish" if new => {
            s.output_tokens += int(f, 5) + int(f, 6);
            let context = int(f, 4) + int(f, 7) + int(f, 8);
            if context > 0 {
                s.context_tokens = context;
            }
        }
        "compaction" if new => s.compactions += 1,
        _ => {}
    }
    s.last_at = s.last_at.max(updated);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/monitor/opencode")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    /// A database built from a schema and a sample, in WAL mode as OpenCode writes it.
    fn db(version: &str) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opencode.db");
        let w = Connection::open(&path).unwrap();
        w.pragma_update(None, "journal_mode", "wal").unwrap();
        w.execute_batch(&sample(&format!("schema-{version}.sql")))
            .unwrap();
        w.execute_batch(&sample(&format!("sample-{version}.sql")))
            .unwrap();
        (dir, path, w)
    }

    fn session<'a>(p: &'a Poll, id: &str) -> &'a (Report, Counts, Option<Timestamp>) {
        p.sessions
            .iter()
            .find(|(r, _, _)| r.session_id == id)
            .unwrap()
    }

    #[test]
    fn v1_2_0_sessions_subagent_and_archive() {
        let (_dir, path, w) = db("v1.2.0");
        let mut r = OpenCodeDb::new(Duration::ZERO);
        let p = r.poll(&path, None).unwrap();
        assert!(!p.behind);
        assert_eq!(p.invalid, 0);
        // The archived session is not reported: it ended before it was seen.
        assert_eq!(p.sessions.len(), 1, "{:#?}", p.sessions);
        let (a, delta, archived) = session(&p, "ses_7ffe0000000001SampleSessionA");
        assert_eq!(*archived, None);
        assert_eq!(a.slug, "brave-otter");
        assert_eq!(a.working_dir, "/home/dev/proj");
        assert_eq!(a.model, "claude-sonnet-4-5");
        assert_eq!(a.max_context_tokens, 200_000);
        assert_eq!(
            (a.activity.clone(), a.current_tool.as_str()),
            (Activity::Working, "bash")
        );
        assert_eq!(
            (a.counts.messages, a.counts.tool_calls, a.counts.compactions),
            (5, 2, 0)
        );
        assert_eq!(*delta, a.counts);
        assert_eq!(a.context_tokens, 150 + 10_300);
        assert_eq!(a.output_tokens, 80 + 40);
        assert_eq!(a.started_at.unix_millis(), 1_770_000_000_000);
        assert_eq!(a.last_activity_at.unix_millis(), 1_770_000_300_500);
        assert!(!a.tentative);
        let (parent, sub) = &p.subagents[0];
        assert_eq!(parent, "ses_7ffe0000000001SampleSessionA");
        assert_eq!(sub.id, "ses_7ffd0000000001SampleSessionB");
        assert_eq!(sub.activity, Activity::Terminal);
        assert_eq!(sub.model, "claude-haiku-4-5");
        assert_eq!(sub.completed_at.unix_millis(), 1_770_000_019_000);

        // Nothing changed: nothing reported.
        let p = r.poll(&path, None).unwrap();
        assert!(p.sessions.is_empty() && p.subagents.is_empty());

        // The running tool finishes in place (the session row is not touched), the step ends.
        w.execute(
            "UPDATE part SET time_updated = 1770000301000, data = json_set(data, '$.state.status', 'completed') WHERE id = 'prt_0001000000013SampleTool00002'",
            [],
        )
        .unwrap();
        let p = r.poll(&path, None).unwrap();
        let (a, delta, _) = session(&p, "ses_7ffe0000000001SampleSessionA");
        assert_eq!(
            (a.activity.clone(), a.current_tool.as_str()),
            (Activity::Working, "")
        );
        assert_eq!(*delta, Counts::default());
        assert_eq!(a.last_activity_at.unix_millis(), 1_770_000_301_000);
        w.execute(
            "UPDATE message SET time_updated = 1770000302000, data = json_set(data, '$.time.completed', 1770000302000, '$.finish', 'stop') WHERE id = 'msg_0001000000011SampleAsst00003'",
            [],
        )
        .unwrap();
        let p = r.poll(&path, None).unwrap();
        let (a, _, _) = session(&p, "ses_7ffe0000000001SampleSessionA");
        assert_eq!(a.activity, Activity::Waiting);

        // Archived: reported once, with the archive time.
        w.execute(
            "UPDATE session SET time_archived = 1770000400000, time_updated = 1770000400000 WHERE id = 'ses_7ffe0000000001SampleSessionA'",
            [],
        )
        .unwrap();
        let p = r.poll(&path, None).unwrap();
        let (_, _, archived) = session(&p, "ses_7ffe0000000001SampleSessionA");
        assert_eq!(archived.map(|t| t.unix_millis()), Some(1_770_000_400_000));
        w.execute(
            "UPDATE session SET time_updated = 1770000500000 WHERE id = 'ses_7ffe0000000001SampleSessionA'",
            [],
        )
        .unwrap();
        assert!(r.poll(&path, None).unwrap().sessions.is_empty());
    }

    #[test]
    fn v1_18_interrupted_turn_and_bad_rows() {
        let (_dir, path, w) = db("v1.18");
        let mut r = OpenCodeDb::new(Duration::ZERO);
        let p = r.poll(&path, None).unwrap();
        let (s, _, _) = session(&p, "ses_0f00000000001SampleSession18");
        assert_eq!(s.model, "gpt-5.4-mini");
        assert_eq!(s.working_dir, "/home/dev/scratch");
        assert_eq!(s.activity, Activity::Waiting, "the interrupted turn ended");
        assert_eq!(s.current_tool, "");
        assert_eq!((s.counts.messages, s.counts.tool_calls), (5, 2));
        assert_eq!(s.context_tokens, 200 + 9500);
        assert_eq!(s.output_tokens, 60 + 20 + 35);

        // A new turn with a row whose data is no JSON: skipped and counted.
        w.execute_batch(
            "INSERT INTO message VALUES ('msg_0f00000000020SampleUser18003','ses_0f00000000001SampleSession18',1790000200000,1790000200000,'{\"role\":\"user\",\"time\":{\"created\":1790000200000}}');
             INSERT INTO part VALUES ('prt_0f00000000021Bad','msg_0f00000000020SampleUser18003','ses_0f00000000001SampleSession18',1790000200000,1790000200000,'{not json');",
        )
        .unwrap();
        let p = r.poll(&path, None).unwrap();
        assert_eq!(p.invalid, 1);
        let (s, delta, _) = session(&p, "ses_0f00000000001SampleSession18");
        assert_eq!(s.activity, Activity::Working);
        assert_eq!(delta.messages, 1);
    }

    #[test]
    fn loads_only_recent_sessions_and_reads_large_ones_in_polls() {
        let (_dir, path, w) = db("v1.18");
        // Updated long ago: not loaded with a stale threshold.
        let mut r = OpenCodeDb::new(Duration::from_secs(300));
        let p = r.poll(&path, None).unwrap();
        assert!(p.sessions.is_empty());
        // A new session with more parts than one query returns.
        let now = i64::try_from(Timestamp::now().unix_millis()).unwrap();
        w.execute(
            "INSERT INTO session (id, project_id, slug, directory, title, version, time_created, time_updated) VALUES ('ses_big', 'global', 'big', '/tmp', 't', '1.18.32', ?1, ?1)",
            [now],
        )
        .unwrap();
        w.execute(
            "INSERT INTO message VALUES ('msg_big', 'ses_big', ?1, ?1, '{\"role\":\"assistant\",\"modelID\":\"m\",\"time\":{\"created\":1}}')",
            [now],
        )
        .unwrap();
        let tx = w.unchecked_transaction().unwrap();
        for i in 0..(ROWS_PER_QUERY + 10) {
            tx.execute(
                "INSERT INTO part VALUES (?1, 'msg_big', 'ses_big', ?2, ?2, '{\"type\":\"tool\",\"tool\":\"read\",\"callID\":\"c\",\"state\":{\"status\":\"completed\"}}')",
                params![format!("prt_{i:06}"), now],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let p = r.poll(&path, None).unwrap();
        assert!(
            p.behind && p.sessions.is_empty(),
            "reported only once loaded: {p:#?}"
        );
        let p = r.poll(&path, None).unwrap();
        let (s, _, _) = session(&p, "ses_big");
        assert_eq!(s.counts.tool_calls, (ROWS_PER_QUERY + 10) as i64);
        assert_eq!(s.activity, Activity::Working, "the step is not completed");
    }

    #[test]
    fn a_database_without_tables_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opencode.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE other(x)")
            .unwrap();
        let p = OpenCodeDb::new(Duration::ZERO).poll(&path, None).unwrap();
        assert!(p.sessions.is_empty());
        let missing = dir.path().join("none.db");
        assert!(
            OpenCodeDb::new(Duration::ZERO)
                .poll(&missing, None)
                .is_err()
        );
        assert!(!missing.exists(), "never created");
    }
}
