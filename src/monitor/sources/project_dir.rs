//! Working directories from project folder names that encode a path lossily.
//!
//! Some agents keep a session's logs in a folder named after its working directory with the
//! root dropped and every separator and other punctuation turned into `-`: Cursor
//! (`/home/dev/my.app` → `home-dev-my-app`, `C:\Users\dev` → `c-Users-dev`), and Claude Code
//! (`-home-dev-my-app`, whose lines carry `cwd` anyway). The encoding cannot be reversed
//! (a `-` may have been `-`, `/`, `.`, `_` or a space), so a name is resolved the way the
//! agents' other readers do it:
//!
//! 1. by a path the log itself names ([`from_path`]): an absolute path whose prefix
//!    encodes to the folder name *is* the working directory (for Cursor: a tool's
//!    `working_directory`, `target_directory` or `path`);
//! 2. by walking the disk ([`resolve`]): from `/` (or the drive the name starts with),
//!    each step takes a directory entry whose encoded name continues the folder name,
//!    whole names before shorter ones, until the name is used up (bounded: at most
//!    [`MAX_LISTINGS`] directory listings per name);
//! 3. else Go's guess, `/` followed by the name with every `-` read as `/` ([`guess`]),
//!    which is right only for paths without `-`, `.`, `_` or spaces.
//!
//! A name of digits only (Cursor's windows without a folder) or an empty one has no working
//! directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The most directories one [`resolve`] lists.
pub(crate) const MAX_LISTINGS: usize = 64;

/// The most entries of one directory [`resolve`] looks at.
const MAX_ENTRIES: usize = 4096;

/// How long a name that did not resolve on disk is not walked again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The most names a [`ProjectDirs`] cache keeps (it is cleared when full).
const MAX_CACHED: usize = 1024;

/// One path component as the agents encode it: every character that is not alphanumeric
/// and not `-` becomes `-`.
pub(crate) fn encode_component(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An absolute path as the agents encode it: the leading separator dropped, a drive `C:`
/// written as `c`, then [`encode_component`] over the rest (separators become `-`).
pub(crate) fn encode_path(path: &str) -> String {
    let path = path.trim_start_matches(['/', '\\']);
    let mut chars = path.chars();
    match (chars.next(), chars.next()) {
        (Some(drive), Some(':')) if drive.is_ascii_alphabetic() => {
            let rest = &path[2..];
            format!("{}{}", drive.to_ascii_lowercase(), encode_component(rest))
        }
        _ => encode_component(path),
    }
}

/// Whether `encoded` names no folder: empty, or digits only (an epoch-ms name).
fn no_folder(encoded: &str) -> bool {
    encoded.bytes().all(|b| b.is_ascii_digit())
}

/// The prefix of the absolute `path` (cut at a separator, or the whole path) that encodes
/// to `encoded`, if any.
pub(crate) fn from_path(encoded: &str, path: &str) -> Option<String> {
    if no_folder(encoded) {
        return None;
    }
    let absolute =
        path.starts_with('/') || path.starts_with('\\') || path.as_bytes().get(1) == Some(&b':');
    if !absolute {
        return None;
    }
    let mut ends: Vec<usize> = path
        .char_indices()
        .filter(|(i, c)| *i > 0 && (*c == '/' || *c == '\\'))
        .map(|(i, _)| i)
        .collect();
    ends.push(path.len());
    ends.into_iter()
        .map(|end| &path[..end])
        .find(|prefix| encode_path(prefix) == encoded)
        .map(str::to_owned)
}

/// Go's guess: `/` and the name with every `-` read as `/`; empty for no folder.
pub(crate) fn guess(encoded: &str) -> String {
    if no_folder(encoded) {
        return String::new();
    }
    format!("/{}", encoded.replace('-', "/"))
}

/// The existing directory whose path encodes to `encoded`, found by walking the disk (see
/// the module docs), or `None`.
pub(crate) fn resolve(encoded: &str) -> Option<PathBuf> {
    if no_folder(encoded) {
        return None;
    }
    let mut budget = MAX_LISTINGS;
    let mut starts: Vec<(PathBuf, &str)> = vec![(PathBuf::from("/"), encoded)];
    let mut chars = encoded.chars();
    if let (Some(drive), Some('-')) = (chars.next(), chars.next()) {
        if drive.is_ascii_alphabetic() {
            let root = format!("{}:\\", drive.to_ascii_uppercase());
            starts.push((PathBuf::from(root), &encoded[2..]));
        }
    }
    starts
        .into_iter()
        .find_map(|(root, rest)| walk(&root, rest, &mut budget))
}

fn walk(dir: &Path, rest: &str, budget: &mut usize) -> Option<PathBuf> {
    if rest.is_empty() {
        return Some(dir.to_path_buf());
    }
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    let entries = std::fs::read_dir(dir).ok()?;
    // (encoded length, name): the names that continue `rest`.
    let mut next: Vec<(usize, std::ffi::OsString)> = Vec::new();
    for entry in entries.take(MAX_ENTRIES).flatten() {
        let name = entry.file_name();
        let encoded = encode_component(&name.to_string_lossy());
        if encoded.is_empty() {
            continue;
        }
        let continues = rest == encoded
            || rest
                .strip_prefix(encoded.as_str())
                .is_some_and(|r| r.starts_with('-'));
        if continues {
            next.push((encoded.len(), name));
        }
    }
    // Whole names first: `a-b` before `a` then `b`.
    next.sort_by_key(|n| std::cmp::Reverse(n.0));
    for (len, name) in next {
        let path = dir.join(&name);
        if !path.is_dir() {
            continue;
        }
        let after = rest.get(len..).unwrap_or_default();
        let after = after.strip_prefix('-').unwrap_or(after);
        if let Some(found) = walk(&path, after, budget) {
            return Some(found);
        }
    }
    None
}

/// A cache of [`resolve`] by folder name: a name found on disk is walked once; one not
/// found is walked again at most every minute (its directory may appear), and meanwhile
/// gets [`guess`].
#[derive(Debug, Default)]
pub(crate) struct ProjectDirs {
    cache: HashMap<String, (Instant, Option<String>)>,
}

impl ProjectDirs {
    /// The working directory the folder name `encoded` stands for: found on disk, else Go's
    /// guess; empty for no folder.
    pub(crate) fn working_dir(&mut self, encoded: &str) -> String {
        if no_folder(encoded) {
            return String::new();
        }
        let now = Instant::now();
        if let Some((at, found)) = self.cache.get(encoded) {
            if found.is_some() || now.saturating_duration_since(*at) < RETRY_AFTER {
                return found.clone().unwrap_or_else(|| guess(encoded));
            }
        }
        let found = resolve(encoded).map(|p| p.to_string_lossy().into_owned());
        if found.is_none() {
            tracing::debug!("a project folder name did not resolve on disk; using the guess");
        }
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(encoded.to_owned(), (now, found.clone()));
        found.unwrap_or_else(|| guess(encoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_agents() {
        assert_eq!(encode_path("/home/dev/my.app"), "home-dev-my-app");
        assert_eq!(encode_path(r"C:\Users\dev\a_b c"), "c-Users-dev-a-b-c");
        assert_eq!(
            encode_path("/Users/kylemathewson/mathTest"),
            "Users-kylemathewson-mathTest"
        );
    }

    #[test]
    fn a_path_the_log_names_gives_the_prefix() {
        let enc = "home-user-proj-a";
        assert_eq!(
            from_path(enc, "/home/user/proj-a/src/a.txt").as_deref(),
            Some("/home/user/proj-a")
        );
        assert_eq!(
            from_path(enc, "/home/user/proj-a").as_deref(),
            Some("/home/user/proj-a")
        );
        assert_eq!(
            from_path(enc, "/home/user/proj/a/x").as_deref(),
            Some("/home/user/proj/a")
        );
        assert_eq!(from_path(enc, "/home/user/other"), None);
        assert_eq!(from_path(enc, "relative/home/user/proj-a"), None);
        assert_eq!(
            from_path("c-Users-u-p", r"C:\Users\u\p\x.rs").as_deref(),
            Some(r"C:\Users\u\p")
        );
        assert_eq!(from_path("1771021702762", "/1771021702762"), None);
    }

    #[test]
    fn the_disk_decides_what_each_dash_was() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        // Both readings exist: the whole name `my-app` wins over `my/app`.
        std::fs::create_dir_all(base.join("work/my-app.v2/src")).unwrap();
        std::fs::create_dir_all(base.join("work/my/app")).unwrap();
        std::fs::create_dir_all(base.join("work/x_y z")).unwrap();
        let enc = |p: &Path| encode_path(&p.to_string_lossy());
        let want = base.join("work/my-app.v2/src");
        assert_eq!(resolve(&enc(&want)), Some(want));
        let want = base.join("work/my/app");
        assert_eq!(resolve(&enc(&want)), Some(want));
        let want = base.join("work/x_y z");
        assert_eq!(resolve(&enc(&want)), Some(want));
        // Gone from the disk: Go's guess.
        let gone = enc(&base.join("work/gone-dir"));
        assert_eq!(resolve(&gone), None);
        let mut dirs = ProjectDirs::default();
        assert_eq!(
            dirs.working_dir(&gone),
            format!("/{}", gone.replace('-', "/"))
        );
        assert_eq!(dirs.working_dir("1771021702762"), "");
        assert_eq!(dirs.working_dir(""), "");
    }
}
