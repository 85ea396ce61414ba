//! agentwatch's hook markers: one small JSON file per Claude Code (or Gemini CLI) hook event, written by
//! `agentwatch-ws hook` (feature `cli`) into the marker directory and read, then removed, by
//! the [`Monitor`] (feature `monitor`).
//!
//! A permission prompt, the most common reason an agent waits for a person, leaves nothing
//! in Claude Code's transcript but a `tool_use` without its result: read from the log alone,
//! the session looks `working`. Claude Code runs hook commands on its own events
//! (`PermissionRequest`, `Notification`, `Stop`, …), and a hook's marker tells the monitor
//! what the log cannot. Gemini CLI records a tool call in its chat only once it finished; its
//! hooks (`Notification` of type `ToolPermission`, `AfterTool`, …) are written as the same
//! markers, their events mapped onto [`HookEvent`] (see [`GEMINI_INSTALLED_EVENTS`]) and
//! `session_id` the chat's `sessionId`, so the monitor applies them to the Gemini session.
//!
//! # The file
//! Name `hook-<unix ms, 13 digits>-<pid>-<n>.json` (so names sort by time), at most
//! [`MAX_MARKER_BYTES`] bytes, one JSON object:
//!
//! ```json
//! {"v":1,"session_id":"0f3c…","hook_event":"PermissionRequest","tool_name":"Bash","at":"2026-05-01T10:00:03.250Z"}
//! ```
//!
//! - `v`: the format version, 1.
//! - `session_id`: `^[A-Za-z0-9_-]{1,128}$` (Claude Code's or Gemini CLI's session id, a
//!   UUID).
//! - `hook_event`: one of [`HookEvent`]'s names.
//! - `tool_name` (optional): `^[A-Za-z0-9_.:-]{1,128}$` (`Bash`, `mcp__github__create_issue`).
//! - `notification_type` (optional, `Notification` only): one of
//!   [`KNOWN_NOTIFICATION_TYPES`]; another value is dropped.
//! - `reason` (optional, `SessionEnd` only): one of Claude Code's `SessionEnd` reasons
//!   ([`KNOWN_END_REASONS`]); another value is dropped.
//! - `at`: when the hook ran (RFC 3339); a marker more than an hour off the reader's clock is
//!   rejected.
//!
//! Nothing else: never the tool's input, the prompt, a notification's message text, the
//! transcript path or the working directory. The file is written to a temporary name
//! (`.hook-….tmp`) and renamed, so a reader never sees half a marker.
#![cfg_attr(feature = "monitor", doc = "", doc = "[`Monitor`]: crate::Monitor")]
#![cfg_attr(
    not(feature = "monitor"),
    doc = "",
    doc = "[`Monitor`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/struct.Monitor.html"
)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::wire::Timestamp;

/// The largest marker file accepted, in bytes.
pub const MAX_MARKER_BYTES: u64 = 1024;

/// The marker format version written and accepted.
pub const MARKER_VERSION: u32 = 1;

/// Hook marker file names start with this; they end in `.json`.
pub const MARKER_PREFIX: &str = "hook-";

/// A marker whose `at` is further than this from the reader's clock (seconds) is rejected.
pub const MAX_SKEW_SECS: i64 = 3600;

/// The longest session id or tool name accepted, in bytes.
pub const MAX_NAME: usize = 128;

/// The `notification_type`s kept: the values Claude Code's hooks documentation lists for
/// `Notification` hooks.
pub const KNOWN_NOTIFICATION_TYPES: &[&str] = &[
    "permission_prompt",
    "idle_prompt",
    "auth_success",
    "elicitation_dialog",
];

/// The `reason`s kept: the values Claude Code gives its `SessionEnd` hooks.
pub const KNOWN_END_REASONS: &[&str] = &[
    "clear",
    "logout",
    "prompt_input_exit",
    "bypass_permissions_disabled",
    "other",
];

/// The environment variable that overrides [`default_marker_dir`].
pub const MARKER_DIR_ENV: &str = "AGENTWATCH_MARKER_DIR";

/// The default marker directory, from the environment at call time: `$AGENTWATCH_MARKER_DIR`
/// if set and absolute, else `$XDG_STATE_HOME/agentwatch/markers` if `XDG_STATE_HOME` is set
/// and absolute, else `$HOME/.local/state/agentwatch/markers`. `None` without any of them.
///
/// Both the hook command and the dashboard use it; `agentwatch-ws hooks install` writes the
/// resolved directory into the hook command, so a hook run with another environment still
/// writes where the dashboard reads.
pub fn default_marker_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = var(MARKER_DIR_ENV) {
        return Some(dir);
    }
    if let Some(state) = var("XDG_STATE_HOME") {
        return Some(state.join("agentwatch/markers"));
    }
    var("HOME").map(|home| home.join(".local/state/agentwatch/markers"))
}

/// A Claude Code hook event a marker may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// A permission dialog is shown: the session waits for the person (`waiting`, with the
    /// tool).
    PermissionRequest,
    /// Claude Code sent a notification; `permission_prompt` and `idle_prompt` mean
    /// `waiting`.
    Notification,
    /// The turn ended (`waiting`).
    Stop,
    /// A subagent finished (no change of the session's activity).
    SubagentStop,
    /// The person submitted a prompt (`working`).
    UserPromptSubmit,
    /// A tool is about to run (no change: the log's `tool_use` says it).
    PreToolUse,
    /// A tool finished (`working`: an answered permission prompt).
    PostToolUse,
    /// A session started or resumed (no change).
    SessionStart,
    /// The session ended (`terminal`).
    SessionEnd,
}

impl HookEvent {
    /// Every event, in the order of [`HookEvent`].
    pub const ALL: [HookEvent; 9] = [
        HookEvent::PermissionRequest,
        HookEvent::Notification,
        HookEvent::Stop,
        HookEvent::SubagentStop,
        HookEvent::UserPromptSubmit,
        HookEvent::PreToolUse,
        HookEvent::PostToolUse,
        HookEvent::SessionStart,
        HookEvent::SessionEnd,
    ];

    /// The event's name as Claude Code writes it in `hook_event_name` and in settings.
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::PermissionRequest => "PermissionRequest",
            HookEvent::Notification => "Notification",
            HookEvent::Stop => "Stop",
            HookEvent::SubagentStop => "SubagentStop",
            HookEvent::UserPromptSubmit => "UserPromptSubmit",
            HookEvent::PreToolUse => "PreToolUse",
            HookEvent::PostToolUse => "PostToolUse",
            HookEvent::SessionStart => "SessionStart",
            HookEvent::SessionEnd => "SessionEnd",
        }
    }

    /// The event named `name` (exact, case-sensitive), if it is one of these.
    pub fn from_name(name: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// One validated hook marker. Build one with [`HookMarker::new`] (which validates), encode it
/// with [`to_json`](HookMarker::to_json), decode and validate a file's bytes with
/// [`from_json`](HookMarker::from_json).
#[derive(Debug, Clone, PartialEq)]
pub struct HookMarker {
    session_id: String,
    event: HookEvent,
    tool_name: Option<String>,
    notification_type: Option<String>,
    reason: Option<String>,
    at: Timestamp,
}

/// Why a marker (or a hook's input) was refused. The message is one short line that names the
/// field, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerError(&'static str);

impl MarkerError {
    #[cfg_attr(not(feature = "hooks"), allow(dead_code))]
    pub(crate) fn new(reason: &'static str) -> Self {
        MarkerError(reason)
    }

    /// The reason, one line.
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for MarkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for MarkerError {}

/// The file's JSON shape.
#[derive(Serialize, Deserialize)]
struct Wire {
    v: u32,
    session_id: String,
    hook_event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notification_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    at: String,
}

/// Whether `s` is 1..=`max` bytes of `[A-Za-z0-9_-]` plus `extra`.
pub(crate) fn is_name(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
}

impl HookMarker {
    /// A marker, validated: `session_id` must match `^[A-Za-z0-9_-]{1,128}$`, `tool_name`
    /// `^[A-Za-z0-9_.:-]{1,128}$`; a `notification_type` or `reason` outside the known values
    /// (or on another event) is dropped.
    ///
    /// # Errors
    /// The session id or tool name does not match.
    pub fn new(
        session_id: &str,
        event: HookEvent,
        tool_name: Option<&str>,
        notification_type: Option<&str>,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<HookMarker, MarkerError> {
        if !is_name(session_id, MAX_NAME, b"") {
            return Err(MarkerError("session_id is not 1-128 of [A-Za-z0-9_-]"));
        }
        let tool_name = tool_name.filter(|t| !t.is_empty());
        if tool_name.is_some_and(|t| !is_name(t, MAX_NAME, b".:")) {
            return Err(MarkerError("tool_name is not 1-128 of [A-Za-z0-9_.:-]"));
        }
        let notification_type = notification_type
            .filter(|n| event == HookEvent::Notification && KNOWN_NOTIFICATION_TYPES.contains(n));
        let reason =
            reason.filter(|r| event == HookEvent::SessionEnd && KNOWN_END_REASONS.contains(r));
        Ok(HookMarker {
            session_id: session_id.to_owned(),
            event,
            tool_name: tool_name.map(str::to_owned),
            notification_type: notification_type.map(str::to_owned),
            reason: reason.map(str::to_owned),
            at: at.to_utc(),
        })
    }

    /// The session the hook ran for.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The hook event.
    pub fn event(&self) -> HookEvent {
        self.event
    }

    /// The tool the event is about, if the hook named one.
    pub fn tool_name(&self) -> Option<&str> {
        self.tool_name.as_deref()
    }

    /// `Notification`'s type, if it is one of [`KNOWN_NOTIFICATION_TYPES`].
    pub fn notification_type(&self) -> Option<&str> {
        self.notification_type.as_deref()
    }

    /// `SessionEnd`'s reason, if it is one of [`KNOWN_END_REASONS`].
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// When the hook ran (UTC).
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// The marker file's content.
    pub fn to_json(&self) -> String {
        let wire = Wire {
            v: MARKER_VERSION,
            session_id: self.session_id.clone(),
            hook_event: self.event.name().to_owned(),
            tool_name: self.tool_name.clone(),
            notification_type: self.notification_type.clone(),
            reason: self.reason.clone(),
            at: self.at.to_string(),
        };
        // A struct of strings and an integer always serializes.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Decodes and validates a marker file's bytes, with `now` the reader's clock.
    ///
    /// # Errors
    /// Too large, not the JSON shape, another version, an unknown event, a bad session id or
    /// tool name, or `at` unparsable or more than [`MAX_SKEW_SECS`] from `now`.
    pub fn from_json(bytes: &[u8], now: Timestamp) -> Result<HookMarker, MarkerError> {
        if bytes.len() as u64 > MAX_MARKER_BYTES {
            return Err(MarkerError("marker too large"));
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|_| MarkerError("marker is not valid JSON"))?;
        if wire.v != MARKER_VERSION {
            return Err(MarkerError("unknown marker version"));
        }
        let event =
            HookEvent::from_name(&wire.hook_event).ok_or(MarkerError("unknown hook_event"))?;
        let at = Timestamp::parse(&wire.at).map_err(|_| MarkerError("at is not a time"))?;
        if (at.unix_seconds() - now.unix_seconds()).abs() > MAX_SKEW_SECS {
            return Err(MarkerError("at is more than an hour off"));
        }
        HookMarker::new(
            &wire.session_id,
            event,
            wire.tool_name.as_deref(),
            wire.notification_type.as_deref(),
            wire.reason.as_deref(),
            at,
        )
    }
}

/// The hook events `agentwatch-ws hooks install` registers, with the `matcher` of each
/// (`None`: no matcher, every occurrence). `Notification`'s matcher filters on its
/// `notification_type`.
pub const INSTALLED_EVENTS: &[(HookEvent, Option<&str>)] = &[
    (HookEvent::PermissionRequest, Some("*")),
    (
        HookEvent::Notification,
        Some("permission_prompt|idle_prompt"),
    ),
    (HookEvent::PostToolUse, Some("*")),
    (HookEvent::UserPromptSubmit, None),
    (HookEvent::Stop, None),
    (HookEvent::SessionEnd, None),
];

/// The agent whose settings `agentwatch-ws hooks` edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookAgent {
    /// Claude Code: `~/.claude/settings.json`, the events of [`INSTALLED_EVENTS`], `timeout`
    /// in seconds.
    Claude,
    /// Gemini CLI (0.26 or later): `~/.gemini/settings.json`, the events of
    /// [`GEMINI_INSTALLED_EVENTS`], `timeout` in milliseconds, and `hooksConfig.enabled`
    /// set to `true` (Gemini CLI's switch for running hooks; on by default from 0.27).
    Gemini,
}

impl HookAgent {
    /// The hook event names registered for this agent in its settings, with the `matcher` of
    /// each (`None`: every occurrence).
    pub fn installed_events(self) -> Vec<(&'static str, Option<&'static str>)> {
        match self {
            HookAgent::Claude => INSTALLED_EVENTS
                .iter()
                .map(|(e, m)| (e.name(), *m))
                .collect(),
            HookAgent::Gemini => GEMINI_INSTALLED_EVENTS.to_vec(),
        }
    }

    /// The agent's user settings file, from the environment at call time (see
    /// [`default_claude_settings`] and [`default_gemini_settings`]).
    pub fn default_settings(self) -> Option<PathBuf> {
        match self {
            HookAgent::Claude => default_claude_settings(),
            HookAgent::Gemini => default_gemini_settings(),
        }
    }
}

/// The Gemini CLI hook events `agentwatch-ws hooks install --agent gemini` registers, none
/// with a matcher. `agentwatch-ws hook` maps them onto [`HookEvent`]s: `Notification` of
/// type `ToolPermission` (a tool waits for approval) → [`HookEvent::PermissionRequest`];
/// `AfterTool` → [`HookEvent::PostToolUse`]; `BeforeAgent` (a prompt was sent) →
/// [`HookEvent::UserPromptSubmit`]; `AfterAgent` (the turn ended) → [`HookEvent::Stop`];
/// `SessionEnd` → [`HookEvent::SessionEnd`].
pub const GEMINI_INSTALLED_EVENTS: &[(&str, Option<&str>)] = &[
    ("Notification", None),
    ("AfterTool", None),
    ("BeforeAgent", None),
    ("AfterAgent", None),
    ("SessionEnd", None),
];

/// Gemini CLI's user settings file, from the environment at call time:
/// `$GEMINI_CLI_HOME/.gemini/settings.json` if `GEMINI_CLI_HOME` is set, else
/// `$HOME/.gemini/settings.json`. `None` without either.
pub fn default_gemini_settings() -> Option<PathBuf> {
    ["GEMINI_CLI_HOME", "HOME"]
        .into_iter()
        .filter_map(std::env::var_os)
        .find(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".gemini/settings.json"))
}

/// Claude Code's user settings file, from the environment at call time:
/// `<dir>/settings.json` for the first comma-separated `<dir>` of `$CLAUDE_CONFIG_DIR` if set,
/// else `$HOME/.claude/settings.json`. `None` without either.
pub fn default_claude_settings() -> Option<PathBuf> {
    if let Some(dirs) = std::env::var_os("CLAUDE_CONFIG_DIR") {
        let dirs = dirs.to_string_lossy().into_owned();
        if let Some(dir) = dirs.split(',').map(str::trim).find(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("settings.json"));
        }
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".claude/settings.json"))
}

/// Whether a hook entry's `command` runs `agentwatch-ws hook`: its first word (unquoted) is a
/// program named `agentwatch-ws` (any directory, `.exe` allowed) and its second word is
/// `hook`.
pub fn is_hook_command(command: &str) -> bool {
    let words = shell_words(command);
    let mut it = words.iter();
    let Some(program) = it.next() else {
        return false;
    };
    let name = program.rsplit(['/', '\\']).next().unwrap_or(program);
    (name == "agentwatch-ws" || name == "agentwatch-ws.exe")
        && it.next().is_some_and(|w| w == "hook")
}

/// Splits a command line into words, honouring single and double quotes and backslashes
/// (enough for the commands the installer writes; no expansion).
pub(crate) fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Which of [`INSTALLED_EVENTS`] have an `agentwatch-ws hook` command in a Claude Code
/// settings document (`hooks` → event → `[{matcher, hooks: [{type, command}]}]`).
pub fn installed_events(settings: &serde_json::Value) -> Vec<HookEvent> {
    let found = installed_event_names(HookAgent::Claude, settings);
    INSTALLED_EVENTS
        .iter()
        .map(|(e, _)| *e)
        .filter(|e| found.contains(&e.name()))
        .collect()
}

/// Which of `agent`'s [installed events](HookAgent::installed_events) have an
/// `agentwatch-ws hook` command in its settings document (Claude Code and Gemini CLI share
/// the shape `hooks` → event → `[{matcher, hooks: [{type, command}]}]`).
pub fn installed_event_names(agent: HookAgent, settings: &serde_json::Value) -> Vec<&'static str> {
    let Some(hooks) = settings.get("hooks").and_then(|h| h.as_object()) else {
        return Vec::new();
    };
    agent
        .installed_events()
        .into_iter()
        .map(|(e, _)| e)
        .filter(|e| {
            hooks
                .get(*e)
                .and_then(|groups| groups.as_array())
                .is_some_and(|groups| {
                    groups.iter().any(|g| {
                        g.get("hooks").and_then(|h| h.as_array()).is_some_and(|hs| {
                            hs.iter().any(|h| {
                                h.get("command")
                                    .and_then(|c| c.as_str())
                                    .is_some_and(is_hook_command)
                            })
                        })
                    })
                })
        })
        .collect()
}

/// Whether Gemini CLI runs hooks with this settings document: `hooksConfig.enabled` is not
/// `false` (its default is `true` from Gemini CLI 0.27).
pub fn gemini_hooks_enabled(settings: &serde_json::Value) -> bool {
    settings
        .get("hooksConfig")
        .and_then(|c| c.get("enabled"))
        .and_then(serde_json::Value::as_bool)
        != Some(false)
}

/// The marker directory named in an installed `agentwatch-ws hook --marker-dir DIR` command of
/// a settings document, if any: where the hooks write, so where a monitor should read.
pub fn installed_marker_dir(settings: &serde_json::Value) -> Option<PathBuf> {
    let hooks = settings.get("hooks")?.as_object()?;
    hooks
        .values()
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .filter_map(|g| g.get("hooks").and_then(serde_json::Value::as_array))
        .flatten()
        .filter_map(|h| h.get("command").and_then(serde_json::Value::as_str))
        .filter(|c| is_hook_command(c))
        .find_map(|c| {
            let words = shell_words(c);
            let i = words.iter().position(|w| w == "--marker-dir")?;
            words.get(i + 1).map(PathBuf::from)
        })
}

/// Reads the settings file at `path` (at most [`MAX_SETTINGS_BYTES`]): `Ok(None)` if it does
/// not exist or is blank.
///
/// # Errors
/// It cannot be read, is too large, or is not a JSON object: one line, without the content.
pub fn read_settings(path: &std::path::Path) -> Result<Option<serde_json::Value>, String> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {}", e.kind())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SETTINGS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {}", e.kind()))?;
    if bytes.len() as u64 > MAX_SETTINGS_BYTES {
        return Err("larger than 16 MiB".to_owned());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(&bytes) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err("not a JSON object".to_owned()),
        Err(e) => Err(format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )),
    }
}

/// Whether our hooks are installed in the settings file at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HooksStatus {
    /// Every event of [`INSTALLED_EVENTS`] runs `agentwatch-ws hook` (a program that exists).
    Installed,
    /// Some do; these are missing (event names as the agent writes them). For Gemini CLI,
    /// also when every event is there but `hooksConfig.enabled` is `false` (then the list
    /// holds `hooksConfig.enabled`).
    Partial(Vec<&'static str>),
    /// None do (or the file does not exist).
    NotInstalled,
    /// The file exists but cannot be read or is not a JSON object (the reason, one line).
    Unreadable(String),
}

/// Whether one of our hook commands for `event` in `settings` names a program that exists: a
/// program named by an absolute path must be a file (a moved or removed binary makes every
/// hook run fail with "not found"); a bare name is looked up in `PATH` by the shell and is
/// taken as it is.
fn runnable_in(settings: &serde_json::Value, event: &str) -> bool {
    settings
        .get("hooks")
        .and_then(|h| h.get(event))
        .and_then(|groups| groups.as_array())
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("hooks").and_then(|h| h.as_array()))
        .flatten()
        .filter_map(|h| h.get("command").and_then(|c| c.as_str()))
        .filter(|c| is_hook_command(c))
        .any(|c| {
            shell_words(c).first().is_some_and(|program| {
                let program = std::path::Path::new(program);
                !program.is_absolute() || program.is_file()
            })
        })
}

/// Reads Claude Code's settings file at `path` and says whether our hooks are in it. The
/// file is read only if it is at most 16 MiB. An entry whose program, named by an absolute
/// path, does not exist (the binary was moved or removed) does not count: its hook cannot run.
pub fn hooks_status(path: &std::path::Path) -> HooksStatus {
    agent_hooks_status(HookAgent::Claude, path)
}

/// Reads `agent`'s settings file at `path` and says whether our hooks are in it (and, for
/// Gemini CLI, switched on). The file is read only if it is at most 16 MiB. An entry whose
/// program, named by an absolute path, does not exist does not count.
pub fn agent_hooks_status(agent: HookAgent, path: &std::path::Path) -> HooksStatus {
    let value = match read_settings(path) {
        Ok(Some(v)) => v,
        Ok(None) => return HooksStatus::NotInstalled,
        Err(why) => return HooksStatus::Unreadable(why),
    };
    let found: Vec<&'static str> = installed_event_names(agent, &value)
        .into_iter()
        .filter(|e| runnable_in(&value, e))
        .collect();
    let all = agent.installed_events();
    let mut missing: Vec<&'static str> = all
        .iter()
        .map(|(e, _)| *e)
        .filter(|e| !found.contains(e))
        .collect();
    if found.is_empty() {
        return HooksStatus::NotInstalled;
    }
    if agent == HookAgent::Gemini && !gemini_hooks_enabled(&value) {
        missing.push("hooksConfig.enabled");
    }
    if missing.is_empty() {
        HooksStatus::Installed
    } else {
        HooksStatus::Partial(missing)
    }
}

/// The largest settings file read, in bytes.
pub const MAX_SETTINGS_BYTES: u64 = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_commands() {
        assert!(is_hook_command("agentwatch-ws hook"));
        assert!(is_hook_command(
            "'/home/a b/.cargo/bin/agentwatch-ws' hook --marker-dir '/x'"
        ));
        assert!(!is_hook_command("agentwatch-ws hooks install"));
        assert!(!is_hook_command("my-agentwatch-ws hook"));
        assert!(!is_hook_command("echo agentwatch-ws hook"));
        assert_eq!(
            shell_words(r#"a 'b c' "d\"e" f\ g"#),
            ["a", "b c", "d\"e", "f g"]
        );
    }

    #[test]
    fn round_trip_and_validation() {
        let now = Timestamp::parse("2026-01-01T10:00:00Z").unwrap();
        let m = HookMarker::new(
            "abc-1",
            HookEvent::Notification,
            None,
            Some("permission_prompt"),
            Some("logout"),
            now,
        )
        .unwrap();
        assert_eq!(m.reason(), None, "a reason belongs to SessionEnd only");
        let back = HookMarker::from_json(m.to_json().as_bytes(), now).unwrap();
        assert_eq!(back, m);
        let odd = HookMarker::new(
            "a",
            HookEvent::Notification,
            None,
            Some("my secret"),
            None,
            now,
        )
        .unwrap();
        assert_eq!(odd.notification_type(), None);
        for bad in [
            &br#"{"v":1,"session_id":"../x","hook_event":"Stop","at":"2026-01-01T10:00:00Z"}"#[..],
            br#"{"v":1,"session_id":"a","hook_event":"Nope","at":"2026-01-01T10:00:00Z"}"#,
            br#"{"v":2,"session_id":"a","hook_event":"Stop","at":"2026-01-01T10:00:00Z"}"#,
            br#"{"v":1,"session_id":"a","hook_event":"Stop","at":"2026-01-01T08:00:00Z"}"#,
            br#"{"v":1,"session_id":"a","hook_event":"Stop","tool_name":"a b","at":"2026-01-01T10:00:00Z"}"#,
            br#"{"v":1,"session_id":7,"hook_event":"Stop","at":"2026-01-01T10:00:00Z"}"#,
            b"\xff\xfe",
        ] {
            assert!(
                HookMarker::from_json(bad, now).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
