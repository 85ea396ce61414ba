//! agentwatch's session-end markers: small JSON files a Claude Code `SessionEnd` hook drops
//! in a directory, `{session_id, transcript_path, cwd, reason, timestamp}`, making the session
//! `terminal` (a transcript does not say that its session ended).
//!
//! A marker is accepted only if it is at most [`MAX_MARKER`] bytes, `session_id` matches
//! `^[A-Za-z0-9_-]{1,128}$`, `transcript_path` (when present) ends in `.jsonl` and has no
//! `..` component, and `timestamp` (when present) is within an hour of now. `reason` is kept
//! only if it is one of Claude Code's `SessionEnd` reasons ([`KNOWN_REASONS`]); anything
//! else (which could be any text) reads `session ended`. The file is removed once read, accepted or not (only `*.json` files
//! are looked at; anything larger than the limit is left alone).

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::parse_time;
use crate::monitor::tail::{Opened, open_regular};
use crate::wire::Timestamp;

/// The largest marker accepted, in bytes.
pub(crate) const MAX_MARKER: u64 = 4096;

/// A marker older or newer than this (seconds) is ignored.
const MAX_SKEW_SECS: i64 = 3600;

/// The `reason`s passed through: the values Claude Code gives its `SessionEnd` hooks.
pub(crate) const KNOWN_REASONS: &[&str] = &[
    "clear",
    "logout",
    "prompt_input_exit",
    "bypass_permissions_disabled",
    "other",
];

/// A validated session-end marker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionEnd {
    pub(crate) session_id: String,
    pub(crate) reason: String,
    pub(crate) at: Timestamp,
}

#[derive(Deserialize)]
struct Marker {
    session_id: Option<String>,
    transcript_path: Option<String>,
    reason: Option<String>,
    timestamp: Option<String>,
}

/// Whether `path` looks like a marker file.
pub(crate) fn is_marker(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// Reads, validates and removes the marker at `path`. `Ok(None)`: not a valid marker (or
/// already gone).
///
/// # Errors
/// The file exists but could not be read.
pub(crate) fn take_marker(path: &Path) -> std::io::Result<Option<SessionEnd>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() > MAX_MARKER {
        return Ok(None);
    }
    // Never blocks, even on a FIFO swapped in since the `stat`.
    let Opened::File(file, _) = open_regular(path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_MARKER + 1).read_to_end(&mut bytes)?;
    // Removing may fail (read-only dir); the session is then simply ended again, harmlessly.
    let _ = fs::remove_file(path);
    Ok(validate(&bytes, Timestamp::now()))
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn validate(bytes: &[u8], now: Timestamp) -> Option<SessionEnd> {
    if bytes.len() as u64 > MAX_MARKER {
        return None;
    }
    let m: Marker = serde_json::from_slice(bytes).ok()?;
    let id = m.session_id.filter(|id| is_token(id, 128))?;
    if let Some(p) = &m.transcript_path {
        let parent_ref = Path::new(p)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !p.ends_with(".jsonl") || parent_ref {
            return None;
        }
    }
    let at = match m.timestamp.as_deref() {
        Some(s) => {
            let at = parse_time(Some(s))?;
            if (at.unix_seconds() - now.unix_seconds()).abs() > MAX_SKEW_SECS {
                return None;
            }
            at
        }
        None => now,
    };
    let reason = m
        .reason
        .filter(|r| KNOWN_REASONS.contains(&r.as_str()))
        .unwrap_or_else(|| "session ended".to_owned());
    Some(SessionEnd {
        session_id: id,
        reason,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let now = Timestamp::parse("2026-01-01T10:00:00Z").unwrap();
        let ok = br#"{"session_id":"abc-1","transcript_path":"/h/.claude/projects/x/abc-1.jsonl","cwd":"/w","reason":"logout","timestamp":"2026-01-01T09:59:00Z"}"#;
        let end = validate(ok, now).unwrap();
        assert_eq!(
            (end.session_id.as_str(), end.reason.as_str()),
            ("abc-1", "logout")
        );
        for odd in [
            &br#"{"session_id":"abc","reason":"user typed: my secret"}"#[..],
            br#"{"session_id":"abc","reason":"token-shaped-secret"}"#,
        ] {
            assert_eq!(validate(odd, now).unwrap().reason, "session ended");
        }
        for bad in [
            &br#"{"session_id":"a/b"}"#[..],
            br#"{"session_id":""}"#,
            br#"{"session_id":"a","transcript_path":"/x/../y.jsonl"}"#,
            br#"{"session_id":"a","transcript_path":"/x/y.txt"}"#,
            br#"{"session_id":"a","timestamp":"2026-01-01T08:00:00Z"}"#,
            br#"not json"#,
        ] {
            assert!(
                validate(bad, now).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"session_id":"{}"}}"#, "a".repeat(129));
        assert!(validate(long.as_bytes(), now).is_none());
    }
}
