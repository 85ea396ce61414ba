//! Finding log files: file-system notifications (through `notify`) for changes as they
//! happen, and a directory walk for the start and the periodic safety-net rescan.
//!
//! The walk never follows a symbolic link to a directory (so a link loop cannot make it
//! spin), follows links to files, stops [`MAX_DEPTH`] levels below the root, and accepts
//! names that are not UTF-8 (they simply match no layout). It only `stat`s: FIFOs, sockets
//! and device files are reported with their metadata, never opened, and the caller decides
//! (the scanner ignores them). The watcher is told not to follow links either.

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Instant;

use notify::{Config, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// How deep below a root the walk goes (the deepest layout, Claude's subagents and Codex's
/// `YYYY/MM/DD`, is 4).
pub(crate) const MAX_DEPTH: usize = 6;

/// What the monitor's thread is told.
pub(crate) enum Message {
    /// Paths that changed (or a hint that events were lost: rescan everything).
    Changed {
        /// The paths concerned.
        paths: Vec<PathBuf>,
        /// The watcher lost events: only a full rescan is exact now.
        rescan: bool,
        /// When the watcher saw the change: the debounce counts from here, not from when
        /// the monitor's thread, busy with a pass, took the message.
        at: Instant,
    },
    /// Stop the monitor.
    Stop,
}

/// Starts watching `dirs` (recursively), sending what changes to `tx`. Directories that
/// cannot be watched are returned with their error; the rescan still covers them.
pub(crate) fn watch(
    dirs: &[(PathBuf, RecursiveMode)],
    tx: Sender<Message>,
) -> (Option<RecommendedWatcher>, Vec<io::Error>) {
    let handler = move |res: notify::Result<notify::Event>| {
        let msg = match res {
            // Our own reads open files: never react to accesses.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => return,
            Ok(ev) => Message::Changed {
                rescan: ev.need_rescan(),
                paths: ev.paths,
                at: Instant::now(),
            },
            Err(error) => {
                tracing::warn!(error = %crate::monitor::health::sanitize_error(&error.to_string()), "file watcher error; rescanning");
                Message::Changed {
                    paths: Vec::new(),
                    rescan: true,
                    at: Instant::now(),
                }
            }
        };
        // The monitor has stopped when the receiver is gone: nothing to do.
        let _ = tx.send(msg);
    };
    let mut errors = Vec::new();
    let mut watcher =
        match RecommendedWatcher::new(handler, Config::default().with_follow_symlinks(false)) {
            Ok(w) => w,
            Err(e) => {
                errors.push(io::Error::other(e.to_string()));
                return (None, errors);
            }
        };
    for (dir, mode) in dirs {
        if let Err(e) = watcher.watch(dir, *mode) {
            errors.push(io::Error::other(e.to_string()));
        }
    }
    (Some(watcher), errors)
}

/// Walks `dir` (at depth `depth` below its root), calling `on_file` for everything that is
/// not a directory, with its metadata (links followed, except to directories): regular
/// files, and FIFOs, sockets and device files, which the caller tells apart by the metadata.
/// Returns the errors met (unreadable directories); files that vanish during the walk or
/// links that lead nowhere are skipped silently.
pub(crate) fn walk(
    dir: &Path,
    depth: usize,
    on_file: &mut dyn FnMut(&Path, &Metadata),
) -> Vec<io::Error> {
    let mut errors = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), depth)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && depth > 0 => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if file_type.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
            } else if file_type.is_symlink() {
                // Never into directories; a link loop or a dangling link fails here.
                if let Ok(meta) = fs::metadata(&path) {
                    if !meta.is_dir() {
                        on_file(&path, &meta);
                    }
                }
            } else if let Ok(meta) = entry.metadata() {
                on_file(&path, &meta);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn walk_survives_link_loops_and_odd_names() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        fs::create_dir(&sub).unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("loop")).unwrap();
        std::os::unix::fs::symlink("self", sub.join("self")).unwrap();
        fs::write(sub.join(OsStr::from_bytes(b"bad-\xff.jsonl")), b"{}\n").unwrap();
        fs::write(sub.join("ok.jsonl"), b"{}\n").unwrap();
        let mut seen = Vec::new();
        let errors = walk(dir.path(), 0, &mut |p, _| seen.push(p.to_path_buf()));
        assert!(errors.is_empty());
        assert_eq!(seen.len(), 2);
    }
}
