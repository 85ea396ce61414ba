//! Per-source health: consecutive failed scans → `healthy` / `degraded` / `failed`.
//!
//! Like Go's `monitor/health.go` with a threshold of 3: a source is `degraded` after 3
//! consecutive failed scans and `failed` after 6; a clean full scan resets it to `healthy`.
//! A *failed scan* is a full scan of the source's root that hit an I/O error (the root or a
//! directory under it unreadable), or a log file that could not be opened or read. A skipped
//! log line (invalid JSON, over-long) is counted in `parseFailures` (a running total since
//! the monitor started; Go reset it on every clean poll) but does not fail the scan: the
//! session goes on updating, so it is not a health problem.
//!
//! `lastError` never carries a path: every absolute path is replaced by `<path>`.

use crate::wire::{Health, HealthStatus, Timestamp};

/// The health of one source, as the monitor tracks it.
#[derive(Debug)]
pub(crate) struct SourceHealth {
    health: Health,
    threshold: i64,
    /// Whether the current status was already published.
    published: bool,
}

impl SourceHealth {
    /// A healthy source with nothing published yet.
    pub(crate) fn new(source: &str, threshold: u32) -> Self {
        SourceHealth {
            health: Health {
                source: source.to_owned(),
                status: HealthStatus::Healthy,
                updated_at: Timestamp::now(),
                ..Health::default()
            },
            threshold: i64::from(threshold.max(1)),
            published: false,
        }
    }

    /// Records a failed scan with its (unsanitized) error.
    pub(crate) fn failure(&mut self, error: &str) {
        self.health.discover_failures += 1;
        self.health.last_error = sanitize_error(error);
        self.recompute();
    }

    /// Records log lines that were skipped (invalid JSON, over-long, unknown shape).
    pub(crate) fn parse_failures(&mut self, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.health.parse_failures = self.health.parse_failures.saturating_add(n);
    }

    /// Records a clean full scan: the failure streak and last error are reset.
    pub(crate) fn success(&mut self) {
        self.health.discover_failures = 0;
        self.health.last_error.clear();
        self.recompute();
    }

    fn recompute(&mut self) {
        let f = self.health.discover_failures;
        let status = if f >= 2 * self.threshold {
            HealthStatus::Failed
        } else if f >= self.threshold {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        if status != self.health.status {
            self.health.status = status;
            self.health.updated_at = Timestamp::now();
            self.published = false;
        }
    }

    /// The health to publish, if its status changed since it was last taken (or was never
    /// published: the monitor reports every source's health once at start).
    pub(crate) fn take_change(&mut self) -> Option<Health> {
        if self.published {
            return None;
        }
        self.published = true;
        Some(self.health.clone())
    }

    /// The current health.
    pub(crate) fn current(&self) -> &Health {
        &self.health
    }
}

/// Replaces every absolute path in an error message with `<path>` (Go's `sanitizeError`):
/// a Unix path is a `/` followed by path characters; a Windows path a drive letter, `:\`
/// and path characters. Panic texts become `internal error`.
pub(crate) fn sanitize_error(message: &str) -> String {
    if message.contains("panic") {
        return "internal error".to_owned();
    }
    let is_path_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '\\');
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        let next = |n: usize| chars.get(k + n).copied();
        let unix = c == '/' && next(1).is_some_and(is_path_char);
        let windows = c.is_ascii_uppercase() && next(1) == Some(':') && next(2) == Some('\\');
        if unix || windows {
            out.push_str("<path>");
            k += if windows { 3 } else { 1 };
            while k < chars.len() && is_path_char(chars[k]) {
                k += 1;
            }
        } else {
            out.push(c);
            k += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_replaced() {
        assert_eq!(
            sanitize_error("cannot read /home/ann/.claude/projects/-x/a b.jsonl: denied"),
            "cannot read <path> b.jsonl: denied"
        );
        assert_eq!(
            sanitize_error(r"open C:\Users\ann\x.jsonl failed"),
            "open <path> failed"
        );
        assert_eq!(sanitize_error("no path here"), "no path here");
        assert_eq!(sanitize_error("a / b"), "a / b");
        assert_eq!(sanitize_error("thread panicked"), "internal error");
    }

    #[test]
    fn thresholds_and_reset() {
        let mut h = SourceHealth::new("claude", 3);
        assert_eq!(
            h.take_change().map(|h| h.status),
            Some(HealthStatus::Healthy)
        );
        assert!(h.take_change().is_none());
        h.failure("x");
        h.failure("x");
        assert!(h.take_change().is_none());
        h.failure("read /secret/dir: Permission denied");
        let d = h.take_change().unwrap();
        assert_eq!(d.status, HealthStatus::Degraded);
        assert_eq!(d.last_error, "read <path>: Permission denied");
        for _ in 0..3 {
            h.failure("x");
        }
        assert_eq!(
            h.take_change().map(|h| h.status),
            Some(HealthStatus::Failed)
        );
        h.success();
        assert_eq!(
            h.take_change().map(|h| h.status),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.current().discover_failures, 0);
    }
}
