//! The marker directory: [hook markers](crate::markers) (`hook-*.json`) and session-end
//! markers (any other `*.json`, see `session_end.rs`), taken one file at a time.
//!
//! A file is read only if it is a regular file (not a symbolic link, directory, FIFO, socket
//! or device), owned by the monitor's own effective user, and at most the format's size
//! limit; it is opened without following links and without blocking, and checked again
//! through the open handle. Whatever is read, valid or not, is removed. Junk is handled
//! without reading it: links, FIFOs, sockets and oversized files of ours are removed
//! (removing a link never touches its target); directories and other users' files are left
//! where they are, and reported once (the scanner remembers them).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::session_end::{self, SessionEnd};
use crate::markers::{HookMarker, MARKER_PREFIX, MAX_MARKER_BYTES};
use crate::wire::Timestamp;

/// What taking one file from the marker directory gave.
#[derive(Debug)]
pub(crate) enum Taken {
    /// A valid hook marker (the file is removed).
    Hook(HookMarker),
    /// A valid session-end marker (the file is removed).
    End(SessionEnd),
    /// The file is no longer there.
    Gone,
    /// Not a valid marker. `removed`: whether the file was removed (else it was left, and the
    /// caller should not report it again).
    Rejected { reason: &'static str, removed: bool },
}

/// Whether `path` is a file of the marker directory worth looking at: `*.json`, not hidden
/// (a writer's temporary file is `.hook-….tmp`).
pub(crate) fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        // A non-UTF-8 name is never one of ours; it is junk, but looking at it is harmless.
        return path.extension().is_some_and(|e| e == "json");
    };
    !name.starts_with('.') && name.ends_with(".json")
}

fn is_hook(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(MARKER_PREFIX))
}

#[cfg(unix)]
fn owned_by_us(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.uid() == rustix::process::geteuid().as_raw()
}

#[cfg(not(unix))]
fn owned_by_us(_: &fs::Metadata) -> bool {
    true
}

fn rejected(path: &Path, reason: &'static str, remove: bool) -> Taken {
    let removed = remove && fs::remove_file(path).is_ok();
    Taken::Rejected { reason, removed }
}

#[cfg(unix)]
fn open(path: &Path) -> io::Result<fs::File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn open(path: &Path) -> io::Result<fs::File> {
    fs::File::open(path)
}

/// Takes the file at `path`: checks, reads, validates and removes it.
pub(crate) fn take(path: &Path, now: Timestamp) -> Taken {
    let hook = is_hook(path);
    let limit = if hook {
        MAX_MARKER_BYTES
    } else {
        session_end::MAX_MARKER
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Taken::Gone,
        Err(_) => {
            return Taken::Rejected {
                reason: "cannot stat",
                removed: false,
            };
        }
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return rejected(path, "symbolic link", true);
    }
    if kind.is_dir() {
        return rejected(path, "directory", false);
    }
    if !owned_by_us(&meta) {
        return rejected(path, "owned by another user", false);
    }
    if !kind.is_file() {
        return rejected(path, "not a regular file", true);
    }
    if meta.len() > limit {
        return rejected(path, "too large", true);
    }
    let bytes = match read_checked(path, limit) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return rejected(path, "changed while opened", false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Taken::Gone,
        Err(_) => return rejected(path, "cannot read", true),
    };
    // Removing may fail (a read-only directory): the marker is then read again, harmlessly
    // (a later marker of the same session supersedes it; an old one is ignored by time).
    let _ = fs::remove_file(path);
    if hook {
        match HookMarker::from_json(&bytes, now) {
            Ok(m) => Taken::Hook(m),
            Err(e) => Taken::Rejected {
                reason: e.reason(),
                removed: true,
            },
        }
    } else {
        match session_end::validate(&bytes, now) {
            Some(end) => Taken::End(end),
            None => Taken::Rejected {
                reason: "invalid session-end marker",
                removed: true,
            },
        }
    }
}

/// Opens without following links or blocking, checks the handle again (a file swapped in
/// since the `lstat`), and reads at most `limit + 1` bytes. `Ok(None)`: the handle is not a
/// regular file of ours within the limit.
fn read_checked(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let file = open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || !owned_by_us(&meta) || meta.len() > limit {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        assert!(is_candidate(Path::new("/m/hook-1-2-3.json")));
        assert!(is_candidate(Path::new("/m/0f.json")));
        assert!(!is_candidate(Path::new("/m/.hook-1-2-3.tmp")));
        assert!(!is_candidate(Path::new("/m/.hidden.json")));
        assert!(!is_candidate(Path::new("/m/notes.txt")));
    }
}
