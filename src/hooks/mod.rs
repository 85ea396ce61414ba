//! Writing [hook markers](crate::markers) from Claude Code's hook input, and installing the
//! hook entries in Claude Code's settings (feature `hooks`, enabled by `cli`; the
//! `agentwatch-ws` command is built from it).
//!
//! # The hook command
//! Claude Code runs a command hook with a JSON description of the event on stdin
//! (`session_id`, `hook_event_name`, `tool_name`, `notification_type`, `reason`, and more that
//! is never read: `tool_input`, `prompt`, `message`, `transcript_path`, `cwd`). Exit code 0
//! means success; exit code 2 *blocks* the event (denies the permission, stops the prompt);
//! other codes are non-blocking errors shown to the user; stdout may carry a decision. So
//! [`marker_from_hook_input`] + [`write_marker`] never print anything, and the command exits
//! 0 or, on bad input, 1: never 2.
//!
//! # The installer
//! [`install`] adds one matcher group `{matcher, hooks: [{type: "command", command,
//! timeout}]}` per event of [`INSTALLED_EVENTS`](crate::markers::INSTALLED_EVENTS) under `hooks` in Claude Code's user settings
//! ([`default_claude_settings`](crate::markers::default_claude_settings)), replaces ours if
//! its command changed, and touches nothing else (other hooks, other keys, key order). It
//! copies the file to `<file>.agentwatch-ws.bak` before its first change (once: an existing
//! backup is kept) and writes through a temporary file and a rename. A file that is not a
//! JSON object, a read-only file and a symbolic link to a missing file are never written
//! (a symbolic link to a file is followed: its target is written, the link stays). [`uninstall`] removes exactly our entries (and the groups,
//! events and `hooks` object they leave empty).
//!
//! # Gemini CLI
//! Gemini CLI (0.26 or later) runs command hooks the same way: JSON on stdin (`session_id`,
//! which is the `sessionId` of the session's chat file, `hook_event_name`, `timestamp`, and
//! per event `tool_name`, `notification_type`, `details`, …), exit code 2 blocks, hook
//! entries shaped like Claude Code's under `hooks` in `~/.gemini/settings.json`, with
//! `timeout` in milliseconds. It records a tool call in its chat file only once the call
//! finished, so its `Notification` hook of type `ToolPermission` is the only sign of a
//! permission prompt. The same `agentwatch-ws hook` command reads both agents' inputs;
//! [`install_for`] with [`HookAgent::Gemini`] registers [`GEMINI_INSTALLED_EVENTS`] and sets
//! `hooksConfig.enabled` (Gemini CLI's switch for hooks; on by default from 0.27).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::markers::{
    GEMINI_INSTALLED_EVENTS, HookAgent, HookEvent, HookMarker, MARKER_PREFIX, MarkerError,
    is_hook_command,
};
use crate::wire::Timestamp;

/// The largest hook input read from stdin, in bytes: 64 MiB. A `PostToolUse` input carries the
/// tool's whole input and output (a `Write` or `Read` of a large file carries its content,
/// twice), and a hook that fails on it shows the person a hook error and loses the marker; the
/// hook process holds the input only while it parses it.
pub const MAX_HOOK_INPUT: u64 = 64 << 20;

/// The `timeout` (seconds) written into each hook entry (Claude Code counts seconds, Gemini
/// CLI milliseconds: 5000 is written there).
pub const HOOK_TIMEOUT_SECS: u64 = 5;

/// The fields of Claude Code's hook input that are read; everything else is skipped unparsed.
#[derive(Deserialize)]
struct HookInput {
    session_id: String,
    hook_event_name: String,
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    notification_type: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// Gemini CLI's `Notification` details (only `type` and an MCP tool's `toolName` read).
    #[serde(default)]
    details: Option<GeminiDetails>,
}

/// The fields of Gemini CLI's `ToolPermission` details that are read: the confirmation's
/// kind (`exec`, `edit`, `mcp`, `info`) and, for `mcp`, the tool's name.
#[derive(Deserialize)]
struct GeminiDetails {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "toolName", default)]
    tool_name: Option<String>,
}

/// Gemini CLI's name of its shell tool, the only tool whose confirmation is of kind `exec`.
const GEMINI_SHELL_TOOL: &str = "run_shell_command";

/// A Gemini CLI hook event mapped onto the marker's events, with the tool to record. `None`:
/// not one of Gemini CLI's own event names (a Claude Code input, or an event of no use).
fn gemini_event(input: &HookInput) -> Option<Option<(HookEvent, Option<String>)>> {
    let tool = || input.tool_name.clone();
    Some(match input.hook_event_name.as_str() {
        "Notification" if input.notification_type.as_deref() == Some("ToolPermission") => {
            let details = input.details.as_ref();
            let tool = match details.and_then(|d| d.kind.as_deref()) {
                Some("exec") => Some(GEMINI_SHELL_TOOL.to_owned()),
                Some("mcp") => details
                    .and_then(|d| d.tool_name.clone())
                    .filter(|t| crate::markers::is_name(t, crate::markers::MAX_NAME, b".:")),
                _ => None,
            };
            Some((HookEvent::PermissionRequest, tool))
        }
        // Neither Gemini CLI's nor one of Claude Code's known types: nothing to tell.
        "Notification"
            if !input
                .notification_type
                .as_deref()
                .is_some_and(|t| crate::markers::KNOWN_NOTIFICATION_TYPES.contains(&t)) =>
        {
            None
        }
        "AfterTool" => Some((HookEvent::PostToolUse, tool())),
        "BeforeAgent" => Some((HookEvent::UserPromptSubmit, None)),
        "AfterAgent" => Some((HookEvent::Stop, None)),
        "BeforeTool" | "BeforeModel" | "AfterModel" | "BeforeToolSelection" | "PreCompress" => None,
        _ => return None,
    })
}

/// Reads a hook's stdin: at most [`MAX_HOOK_INPUT`] bytes.
///
/// # Errors
/// Reading failed, or the input is larger than the limit.
pub fn read_hook_input(mut input: impl Read) -> Result<Vec<u8>, MarkerError> {
    let mut bytes = Vec::new();
    (&mut input)
        .take(MAX_HOOK_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| MarkerError::new("cannot read stdin"))?;
    if bytes.len() as u64 > MAX_HOOK_INPUT {
        return Err(MarkerError::new("stdin is larger than 64 MiB"));
    }
    Ok(bytes)
}

/// The marker of one hook run, from its stdin JSON (Claude Code's or Gemini CLI's, told
/// apart by `hook_event_name` and `notification_type`), timed `at`. `Ok(None)`: a valid input
/// of an event the monitor has no use for (another `hook_event_name`, or a `Notification` of
/// a type neither Gemini CLI's `ToolPermission` nor one of
/// [`KNOWN_NOTIFICATION_TYPES`](crate::markers::KNOWN_NOTIFICATION_TYPES)): nothing to
/// write.
///
/// Gemini CLI's events are mapped as [`GEMINI_INSTALLED_EVENTS`] says; its `Notification`
/// input names no tool, so the tool recorded is `run_shell_command` for a shell command's
/// confirmation (`details.type` `exec`), the MCP tool's name for an MCP tool's (`mcp`), and
/// none otherwise (an edit's or a web fetch's confirmation).
///
/// # Errors
/// Not UTF-8 JSON, not an object, `session_id` or `hook_event_name` missing or not a string,
/// `tool_name` not a string, or a session id or tool name outside the marker's charset.
pub fn marker_from_hook_input(
    bytes: &[u8],
    at: Timestamp,
) -> Result<Option<HookMarker>, MarkerError> {
    let input: HookInput = serde_json::from_slice(bytes).map_err(|e| {
        MarkerError::new(if e.is_data() {
            "hook input lacks session_id or hook_event_name, or a field has the wrong type"
        } else {
            "hook input is not valid JSON"
        })
    })?;
    if let Some(mapped) = gemini_event(&input) {
        let Some((event, tool)) = mapped else {
            return Ok(None);
        };
        return HookMarker::new(&input.session_id, event, tool.as_deref(), None, None, at)
            .map(Some);
    }
    let Some(event) = HookEvent::from_name(&input.hook_event_name) else {
        return Ok(None);
    };
    HookMarker::new(
        &input.session_id,
        event,
        input.tool_name.as_deref(),
        input.notification_type.as_deref(),
        input.reason.as_deref(),
        at,
    )
    .map(Some)
}

/// Writes `marker` into `dir` (created, mode 0700 on Unix, if missing) as
/// `hook-<unix ms>-<pid>-<n>.json`, through a temporary `.hook-….tmp` and a rename, so the
/// monitor never sees a partial file. Returns the marker's path.
///
/// # Errors
/// The directory cannot be created or written.
pub fn write_marker(dir: &Path, marker: &HookMarker) -> io::Result<PathBuf> {
    create_private_dir(dir)?;
    let millis = marker.at().unix_millis().max(0);
    let pid = std::process::id();
    let json = marker.to_json();
    for n in 0..100u32 {
        let name = format!("{MARKER_PREFIX}{millis:013}-{pid}-{n}.json");
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = match new_file(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let written = file
            .write_all(json.as_bytes())
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if path.exists() {
            let _ = fs::remove_file(&tmp);
            continue;
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok(path);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free marker name",
    ))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn new_file(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The hook command line the installer writes: the program and `hook --marker-dir <dir>`,
/// each word quoted for a POSIX shell when it needs it.
pub fn hook_command(program: &Path, marker_dir: &Path) -> String {
    format!(
        "{} hook --marker-dir {}",
        shell_quote(&program.to_string_lossy()),
        shell_quote(&marker_dir.to_string_lossy())
    )
}

/// `s` as one POSIX shell word: unchanged if it has only safe characters, else single-quoted.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// One change the installer makes (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Our entry for this event (named as the agent names it) is added.
    Add(&'static str),
    /// Our entry for this event had another command; it is replaced.
    Replace(&'static str),
    /// Our entry for this event is removed.
    Remove(&'static str),
    /// A setting the agent needs to run hooks is set (its dotted path, e.g.
    /// `hooksConfig.enabled`).
    Enable(&'static str),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Add(e) => write!(f, "add hook {e}"),
            Change::Replace(e) => write!(f, "update hook {e}"),
            Change::Remove(e) => write!(f, "remove hook {e}"),
            Change::Enable(path) => write!(f, "set {path} to true"),
        }
    }
}

/// What [`install`] or [`uninstall`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The changes, in event order; empty: the file already was as asked (and was not
    /// written).
    pub changes: Vec<Change>,
    /// The backup made before this change, if one was made now.
    pub backup: Option<PathBuf>,
    /// The settings document after the change (what was, or in a dry run would be, written).
    pub settings: String,
}

/// Why the installer refused.
#[derive(Debug)]
pub enum InstallError {
    /// The settings file cannot be read or written.
    Io(io::Error),
    /// The settings file is not a JSON object (it is left untouched): one line.
    Invalid(String),
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::Io(e) => write!(f, "{e}"),
            InstallError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for InstallError {}

impl From<io::Error> for InstallError {
    fn from(e: io::Error) -> Self {
        InstallError::Io(e)
    }
}

/// The settings file's path to write: a symbolic link (a dotfiles manager's) is followed, so
/// the link stays and its target is updated.
///
/// # Errors
/// The path is a symbolic link whose target is missing (writing would replace the link), or
/// the file is read-only (a person's way of saying "leave it"; a rename would replace it
/// anyway).
fn write_target(path: &Path) -> io::Result<PathBuf> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "a symbolic link to a missing file; not changed",
            )
        })?,
        _ => path.to_path_buf(),
    };
    match fs::metadata(&target) {
        Ok(m) if m.permissions().readonly() => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "read-only; not changed",
        )),
        _ => Ok(target),
    }
}

/// Reads the settings document: an absent or blank file is `{}`. The flag: whether the file
/// exists.
fn read_settings(path: &Path) -> Result<(Value, bool), InstallError> {
    match crate::markers::read_settings(path) {
        Ok(Some(v)) => Ok((v, true)),
        Ok(None) => Ok((Value::Object(Map::new()), path.exists())),
        Err(why) => Err(InstallError::Invalid(format!(
            "settings file: {why}; not changed"
        ))),
    }
}

fn our_entry(agent: HookAgent, matcher: Option<&str>, command: &str) -> Value {
    let mut group = Map::new();
    if let Some(m) = matcher {
        group.insert("matcher".to_owned(), Value::from(m));
    }
    let mut hook = Map::new();
    hook.insert("type".to_owned(), Value::from("command"));
    hook.insert("command".to_owned(), Value::from(command));
    let timeout = match agent {
        HookAgent::Claude => HOOK_TIMEOUT_SECS,
        HookAgent::Gemini => HOOK_TIMEOUT_SECS * 1000,
    };
    hook.insert("timeout".to_owned(), Value::from(timeout));
    group.insert("hooks".to_owned(), Value::Array(vec![Value::Object(hook)]));
    Value::Object(group)
}

fn is_ours(hook: &Value) -> bool {
    hook.get("command")
        .and_then(Value::as_str)
        .is_some_and(is_hook_command)
}

/// Removes our hooks from one event's groups; groups left with no hook are dropped. Returns
/// whether anything was removed.
fn remove_ours(groups: &mut Vec<Value>) -> bool {
    let mut removed = false;
    groups.retain_mut(|group| {
        let Some(hooks) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            return true;
        };
        let before = hooks.len();
        hooks.retain(|h| !is_ours(h));
        if hooks.len() == before {
            return true;
        }
        removed = true;
        !hooks.is_empty()
    });
    removed
}

/// Whether one event's groups hold exactly our entry with `command` and `matcher`.
fn has_exact(groups: &[Value], matcher: Option<&str>, command: &str) -> bool {
    let ours: Vec<&Value> = groups
        .iter()
        .filter_map(|g| g.get("hooks").and_then(Value::as_array).map(|h| (g, h)))
        .flat_map(|(g, hs)| hs.iter().filter(|h| is_ours(h)).map(move |_| g))
        .collect();
    ours.len() == 1
        && ours[0].get("matcher").and_then(Value::as_str) == matcher
        && ours[0]
            .get("hooks")
            .and_then(Value::as_array)
            .is_some_and(|hs| {
                hs.iter()
                    .any(|h| h.get("command").and_then(Value::as_str) == Some(command))
            })
}

fn pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

/// Installs our hook entries (command [`hook_command`]`(program, marker_dir)`) in Claude
/// Code's settings file at `settings`. With `dry_run` nothing is written.
///
/// # Errors
/// The file cannot be read or written, is read-only, is a symbolic link to a missing file, or
/// is not a JSON object (then it is not touched).
pub fn install(
    settings: &Path,
    program: &Path,
    marker_dir: &Path,
    dry_run: bool,
) -> Result<Outcome, InstallError> {
    install_for(HookAgent::Claude, settings, program, marker_dir, dry_run)
}

/// Installs our hook entries in `agent`'s settings file at `settings`, as [`install`] does;
/// for Gemini CLI the entries of [`GEMINI_INSTALLED_EVENTS`] (`timeout` in milliseconds) and
/// `hooksConfig.enabled: true` (set only if it is not already `true`; any other key of
/// `hooksConfig` is kept). With `dry_run` nothing is written.
///
/// # Errors
/// The file cannot be read or written, or is not a JSON object, or its `hooks` (or Gemini
/// CLI's `hooksConfig`) is not a JSON object (then it is not touched).
pub fn install_for(
    agent: HookAgent,
    settings: &Path,
    program: &Path,
    marker_dir: &Path,
    dry_run: bool,
) -> Result<Outcome, InstallError> {
    let command = hook_command(program, marker_dir);
    let (mut doc, existed) = read_settings(settings)?;
    let mut changes = Vec::new();
    {
        let Value::Object(root) = &mut doc else {
            return Err(InstallError::Invalid("not a JSON object".to_owned()));
        };
        let hooks = root
            .entry("hooks")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(hooks) = hooks else {
            return Err(InstallError::Invalid(
                "settings `hooks` is not a JSON object; not changed".to_owned(),
            ));
        };
        for (event, matcher) in agent.installed_events() {
            let groups = hooks
                .entry(event)
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(groups) = groups else {
                return Err(InstallError::Invalid(format!(
                    "settings `hooks.{event}` is not an array; not changed"
                )));
            };
            if has_exact(groups, matcher, &command) {
                continue;
            }
            let replaced = remove_ours(groups);
            groups.push(our_entry(agent, matcher, &command));
            changes.push(if replaced {
                Change::Replace(event)
            } else {
                Change::Add(event)
            });
        }
        if agent == HookAgent::Gemini {
            let config = root
                .entry("hooksConfig")
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(config) = config else {
                return Err(InstallError::Invalid(
                    "settings `hooksConfig` is not a JSON object; not changed".to_owned(),
                ));
            };
            if config.get("enabled") != Some(&Value::Bool(true)) {
                config.insert("enabled".to_owned(), Value::Bool(true));
                changes.push(Change::Enable("hooksConfig.enabled"));
            }
        }
    }
    finish(settings, doc, existed, changes, dry_run)
}

/// Removes our hook entries from the settings file at `settings`, Claude Code's or Gemini
/// CLI's (and the groups, events and `hooks` object they leave empty; Gemini CLI's
/// `hooksConfig` is left as it is, other hooks may need it). With `dry_run` nothing is
/// written.
///
/// # Errors
/// The file cannot be read or written, is read-only, is a symbolic link to a missing file, or
/// is not a JSON object (then it is not touched).
pub fn uninstall(settings: &Path, dry_run: bool) -> Result<Outcome, InstallError> {
    let (mut doc, existed) = read_settings(settings)?;
    let mut changes = Vec::new();
    if let Some(Value::Object(hooks)) = doc.get_mut("hooks") {
        let names: Vec<String> = hooks.keys().cloned().collect();
        for name in names {
            let Some(Value::Array(groups)) = hooks.get_mut(&name) else {
                continue;
            };
            if remove_ours(groups) {
                if let Some(e) = event_name(&name) {
                    changes.push(Change::Remove(e));
                }
                if groups.is_empty() {
                    hooks.shift_remove(&name);
                }
            }
        }
        if !changes.is_empty() && hooks.is_empty() {
            if let Value::Object(root) = &mut doc {
                root.shift_remove("hooks");
            }
        }
    }
    finish(settings, doc, existed, changes, dry_run)
}

/// `name` as one of the event names the installer writes, for either agent.
fn event_name(name: &str) -> Option<&'static str> {
    HookEvent::ALL
        .iter()
        .map(|e| e.name())
        .chain(GEMINI_INSTALLED_EVENTS.iter().map(|(e, _)| *e))
        .find(|e| *e == name)
}

fn finish(
    settings: &Path,
    doc: Value,
    existed: bool,
    changes: Vec<Change>,
    dry_run: bool,
) -> Result<Outcome, InstallError> {
    let text = pretty(&doc);
    let mut backup = None;
    if !changes.is_empty() && !dry_run {
        let target = write_target(settings)?;
        if existed {
            let bak = backup_path(&target);
            if !bak.exists() {
                fs::copy(&target, &bak)?;
                backup = Some(bak);
            }
        }
        write_atomically(&target, text.as_bytes())?;
    }
    Ok(Outcome {
        changes,
        backup,
        settings: text,
    })
}

/// Where the installer keeps its backup of the settings file `path`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".agentwatch-ws.bak");
    path.with_file_name(name)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".agentwatch-ws-{}.tmp", std::process::id()));
    let tmp = dir.join(name);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = new_file(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
