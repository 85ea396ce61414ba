//! Which project (working directory) a Gemini CLI chat belongs to.
//!
//! Gemini CLI keys a chat's folder under `<gemini home>/tmp/` on its *project root*: the
//! directory `gemini` was started in (`process.cwd()`, which on Linux and macOS is the
//! physical path). The folder's name, by version:
//! - v0.1 – v0.28: the SHA-256 (hex) of the root. Nothing beside the chats names the root;
//! - v0.29 and later: a slug of the root's basename (`web-app`, `web-app-1` on a
//!   collision), with the root in `<folder>/.project_root` (no newline) and in the registry
//!   `<gemini home>/projects.json` (`{"projects": {"<root>": "<slug>"}}`).
//!
//! Every chat header carries `projectHash`, the SHA-256 of the root, in every version; a
//! chat's `directories` (v0.28+, written on `/directory add`, in a subagent's header and in
//! a chat migrated to `.jsonl` on resume) start with the root, as a realpath.
//!
//! [`GeminiProjects::working_dir`] takes, in order:
//! 1. the folder's `.project_root` (exact; v0.29+);
//! 2. the root `projects.json` maps to the folder's name;
//! 3. the chat's first directory;
//! 4. for a hash (the folder's name when it is 64 hex digits, else the header's
//!    `projectHash`), a known path whose SHA-256 it is. Known paths are the working
//!    directories of the other sessions the monitor reads (Claude Code, Codex, Pi, Cursor,
//!    other Gemini chats), the roots `projects.json` and `.project_root` files name, and on
//!    Linux the working directories of running `gemini` processes (`/proc/<pid>/cwd` of a
//!    process with an argument named `gemini` or `gemini-cli`), listed at most once per
//!    [`PROCESS_SCAN_INTERVAL`] and only while a chat's project is unresolved.
//!
//! **When it cannot be known.** A chat in a hash folder (v0.28 and earlier) whose project
//! is no other session's working directory, has no `gemini` process running in it (or runs
//! on another system than Linux, or its process started in a path other than the root it
//! hashed), and whose chat never recorded `directories`: the hash cannot be reversed, and
//! the session has no `workingDir` (until one of those appears: a session found later with
//! a matching working directory fills it in).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::gemini::GeminiChat;
use crate::monitor::tail::{Opened, open_regular};

/// How often, at most, running processes are listed to resolve a project hash: 60 s.
pub(crate) const PROCESS_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How long a folder without `.project_root` is not looked at again: 60 s.
const MARKER_RETRY: Duration = Duration::from_secs(60);

/// The most bytes of a `.project_root` read (a path longer is ignored).
const MAX_MARKER: u64 = 4096;

/// The most bytes of `projects.json` read (a larger registry is ignored).
const MAX_REGISTRY: u64 = 1 << 20;

/// The most known paths kept (cleared when full).
const MAX_KNOWN: usize = 4096;

/// The most `/proc` entries one process listing looks at.
#[cfg(target_os = "linux")]
const MAX_PROCESSES: usize = 8192;

/// The most bytes of a process's command line read.
#[cfg(target_os = "linux")]
const MAX_CMDLINE: u64 = 4096;

/// A folder's `.project_root`, as last read.
enum Marker {
    Root(String),
    Missing { since: Instant },
}

/// `projects.json` of one Gemini home, as last read.
#[derive(Default)]
struct Registry {
    stamp: Option<(u64, Option<SystemTime>)>,
    /// Slug (folder name) → project root.
    by_slug: HashMap<String, String>,
}

/// The resolver of Gemini CLI project folders to working directories (see the module
/// docs), with its caches.
#[derive(Default)]
pub(crate) struct GeminiProjects {
    markers: HashMap<PathBuf, Marker>,
    registries: HashMap<PathBuf, Registry>,
    /// SHA-256 (hex) → path, for the paths in `paths`.
    by_hash: HashMap<String, String>,
    paths: HashSet<String>,
    last_process_scan: Option<Instant>,
}

impl GeminiProjects {
    /// Remembers `dir` (an absolute working directory some session reports) as a candidate
    /// project root. Returns whether it was new.
    pub(crate) fn learn(&mut self, dir: &str) -> bool {
        if dir.is_empty() || self.paths.contains(dir) {
            return false;
        }
        if self.paths.len() >= MAX_KNOWN {
            self.paths.clear();
            self.by_hash.clear();
        }
        self.paths.insert(dir.to_owned());
        self.by_hash
            .insert(sha256_hex(dir.as_bytes()), dir.to_owned());
        true
    }

    /// The known path whose SHA-256 is `hash` (hex, any case), if any.
    pub(crate) fn by_hash(&self, hash: &str) -> Option<&str> {
        self.by_hash
            .get(&hash.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The working directory of `chat`, whose file is in `<root>/<folder>/chats/`, or `""`
    /// when it cannot be known (see the module docs). Also returns the hash a later
    /// [`learn`](Self::learn) may resolve, when unresolved.
    pub(crate) fn working_dir(
        &mut self,
        root: &Path,
        folder: &str,
        chat: &GeminiChat,
        now: Instant,
    ) -> Resolution {
        if let Some(dir) = self.marker(&root.join(folder), now) {
            return Resolution::Known(dir);
        }
        if let Some(dir) = self.registry(root, folder) {
            return Resolution::Known(dir);
        }
        if !chat.first_directory().is_empty() {
            return Resolution::Known(chat.first_directory().to_owned());
        }
        let hash = if is_sha256_hex(folder) {
            folder
        } else if is_sha256_hex(chat.project_hash()) {
            chat.project_hash()
        } else {
            return Resolution::Unknown(None);
        };
        if let Some(dir) = self.by_hash(hash) {
            return Resolution::Known(dir.to_owned());
        }
        if self
            .last_process_scan
            .is_none_or(|at| now.saturating_duration_since(at) >= PROCESS_SCAN_INTERVAL)
        {
            self.last_process_scan = Some(now);
            for dir in gemini_process_dirs() {
                self.learn(&dir);
            }
            if let Some(dir) = self.by_hash(hash) {
                return Resolution::Known(dir.to_owned());
            }
        }
        Resolution::Unknown(Some(hash.to_ascii_lowercase()))
    }

    /// The root in `<folder>/.project_root`, cached (a missing one is looked for again after
    /// [`MARKER_RETRY`]).
    fn marker(&mut self, folder: &Path, now: Instant) -> Option<String> {
        match self.markers.get(folder) {
            Some(Marker::Root(root)) => return Some(root.clone()),
            Some(Marker::Missing { since })
                if now.saturating_duration_since(*since) < MARKER_RETRY =>
            {
                return None;
            }
            _ => {}
        }
        let found = read_small(&folder.join(".project_root"), MAX_MARKER)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
            .filter(|root| is_absolute(root));
        if self.markers.len() >= MAX_KNOWN {
            self.markers.clear();
        }
        match found {
            Some(root) => {
                self.learn(&root);
                self.markers
                    .insert(folder.to_path_buf(), Marker::Root(root.clone()));
                Some(root)
            }
            None => {
                self.markers
                    .insert(folder.to_path_buf(), Marker::Missing { since: now });
                None
            }
        }
    }

    /// The root `<root>/../projects.json` maps to `folder`, read again when the file
    /// changed.
    fn registry(&mut self, root: &Path, folder: &str) -> Option<String> {
        let path = root.parent()?.join("projects.json");
        let stamp = std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| (m.len(), m.modified().ok()));
        let registry = self.registries.entry(root.to_path_buf()).or_default();
        if registry.stamp != stamp {
            registry.stamp = stamp;
            registry.by_slug = stamp
                .and_then(|_| read_small(&path, MAX_REGISTRY))
                .and_then(|text| {
                    let parsed = serde_json::from_str::<RegistryFile>(&text);
                    if parsed.is_err() {
                        tracing::debug!(source = "gemini", "projects.json is not a registry");
                    }
                    parsed.ok()
                })
                .map(|file| {
                    file.projects
                        .into_iter()
                        .filter(|(root, _)| is_absolute(root))
                        .map(|(root, slug)| (slug, root))
                        .collect()
                })
                .unwrap_or_default();
            let roots: Vec<String> = registry.by_slug.values().cloned().collect();
            for root in roots {
                self.learn(&root);
            }
        }
        self.registries.get(root)?.by_slug.get(folder).cloned()
    }
}

/// What [`GeminiProjects::working_dir`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The project root.
    Known(String),
    /// Not known; with the project hash (lower-case hex) a path learned later may match.
    Unknown(Option<String>),
}

#[derive(serde::Deserialize)]
struct RegistryFile {
    #[serde(default)]
    projects: HashMap<String, String>,
}

fn is_absolute(path: &str) -> bool {
    path.starts_with('/') || path.starts_with('\\') || path.as_bytes().get(1) == Some(&b':')
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A regular file's text, if it is at most `max` bytes and UTF-8.
fn read_small(path: &Path, max: u64) -> Option<String> {
    let Ok(Opened::File(file, meta)) = open_regular(path) else {
        return None;
    };
    if meta.len() > max {
        return None;
    }
    let mut text = String::new();
    file.take(max).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The working directories of running `gemini` processes (Linux: `/proc`), bounded by
/// [`MAX_PROCESSES`] entries.
#[cfg(target_os = "linux")]
fn gemini_process_dirs() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let proc = Path::new("/proc").join(pid);
        let Ok(file) = std::fs::File::open(proc.join("cmdline")) else {
            continue;
        };
        let mut cmdline = Vec::new();
        if file.take(MAX_CMDLINE).read_to_end(&mut cmdline).is_err() {
            continue;
        }
        let is_gemini = cmdline.split(|b| *b == 0).any(|arg| {
            let base = arg.rsplit(|b| *b == b'/').next().unwrap_or(arg);
            base == b"gemini" || base == b"gemini-cli"
        });
        if !is_gemini {
            continue;
        }
        // Another user's process: not readable, skipped.
        if let Ok(cwd) = std::fs::read_link(proc.join("cwd")) {
            if let Some(cwd) = cwd.to_str() {
                dirs.push(cwd.to_owned());
            }
        }
    }
    tracing::debug!(
        source = "gemini",
        found = dirs.len(),
        "listed gemini processes"
    );
    dirs
}

#[cfg(not(target_os = "linux"))]
fn gemini_process_dirs() -> Vec<String> {
    Vec::new()
}

/// SHA-256 of `data`, in lower-case hex: Gemini CLI's project hash.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    crate::hex::lower(&sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/monitor/gemini")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    fn chat(header: &str) -> GeminiChat {
        let mut chat = GeminiChat::new();
        chat.line(header.as_bytes());
        chat
    }

    /// v0.29+: the folder's `.project_root` names the root (the sample ends in a newline,
    /// which is not part of the path).
    #[test]
    fn v0_29_project_root_marker() {
        let home = tempfile::tempdir().unwrap();
        let root = home.path().join("tmp");
        std::fs::create_dir_all(root.join("web-app-1/chats")).unwrap();
        std::fs::write(
            root.join("web-app-1/.project_root"),
            sample("v0.29-project_root"),
        )
        .unwrap();
        let mut p = GeminiProjects::default();
        let got = p.working_dir(&root, "web-app-1", &GeminiChat::new(), Instant::now());
        assert_eq!(got, Resolution::Known("/home/dev/clients/web-app".into()));
        // The marker's root is a candidate for hash folders too.
        assert_eq!(
            p.by_hash(&sha256_hex(b"/home/dev/clients/web-app")),
            Some("/home/dev/clients/web-app")
        );
    }

    /// v0.29+ without a marker: `projects.json` beside `tmp` maps roots to folders; a
    /// change of the registry is read again.
    #[test]
    fn v0_29_registry() {
        let home = tempfile::tempdir().unwrap();
        let root = home.path().join("tmp");
        std::fs::create_dir_all(root.join("scratch/chats")).unwrap();
        let registry = home.path().join("projects.json");
        std::fs::write(&registry, sample("v0.29-projects.json")).unwrap();
        let mut p = GeminiProjects::default();
        let now = Instant::now();
        let none = GeminiChat::new();
        assert_eq!(
            p.working_dir(&root, "scratch", &none, now),
            Resolution::Known("/home/dev/scratch".into())
        );
        assert_eq!(
            p.working_dir(&root, "web-app", &none, now),
            Resolution::Known("/home/dev/web-app".into())
        );
        assert_eq!(
            p.working_dir(&root, "other", &none, now),
            Resolution::Unknown(None)
        );
        std::fs::write(&registry, r#"{"projects":{"/srv/other-project":"other"}}"#).unwrap();
        assert_eq!(
            p.working_dir(&root, "other", &none, now),
            Resolution::Known("/srv/other-project".into())
        );
        // A corrupt registry resolves nothing (and does not fail).
        std::fs::write(&registry, "{not json").unwrap();
        assert_eq!(
            p.working_dir(&root, "scratch", &none, now),
            Resolution::Unknown(None)
        );
    }

    /// Hash folders (v0.28 and earlier): the chat's first directory, else a known path whose
    /// SHA-256 the folder name (or the header's `projectHash`) is.
    #[test]
    fn hash_folders() {
        let home = tempfile::tempdir().unwrap();
        let root = home.path().join("tmp");
        let hash = sha256_hex(b"/home/dev/web-app");
        std::fs::create_dir_all(root.join(&hash).join("chats")).unwrap();
        let mut p = GeminiProjects::default();
        // Long after start: the process listing ran (and found no gemini running here).
        let now = Instant::now();
        p.last_process_scan = Some(now);
        let header = format!(r#"{{"sessionId":"s","projectHash":"{hash}"}}"#);
        assert_eq!(
            p.working_dir(&root, &hash, &chat(&header), now),
            Resolution::Unknown(Some(hash.clone()))
        );
        let mut with_dirs = GeminiChat::new();
        with_dirs
            .read_whole(sample("v0.28-directories.json").as_bytes())
            .unwrap();
        assert_eq!(
            p.working_dir(&root, &hash, &with_dirs, now),
            Resolution::Known("/home/dev/web-app".into())
        );
        assert!(p.learn("/home/dev/web-app"));
        assert!(!p.learn("/home/dev/web-app"));
        assert_eq!(
            p.working_dir(&root, &hash, &chat(&header), now),
            Resolution::Known("/home/dev/web-app".into())
        );
        // A slug folder without marker or registry entry: the header's hash.
        assert_eq!(
            p.working_dir(&root, "web-app", &chat(&header), now),
            Resolution::Known("/home/dev/web-app".into())
        );
        // Upper-case hex matches too.
        assert_eq!(
            p.by_hash(&hash.to_ascii_uppercase()),
            Some("/home/dev/web-app")
        );
    }

    /// A running `gemini` process's working directory resolves its hash folder (Linux).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_running_gemini_process_names_its_project() {
        let dir = tempfile::tempdir().unwrap();
        let work = std::fs::canonicalize(dir.path()).unwrap();
        let bin = work.join("gemini");
        std::fs::write(&bin, "#!/bin/sh\nread line\n").unwrap();
        let mut child = std::process::Command::new("sh")
            .arg(&bin)
            .current_dir(&work)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let work = work.to_str().unwrap().to_owned();
        let hash = sha256_hex(work.as_bytes());
        let root = dir.path().join("tmp");
        // The child's command line is readable once it has exec'd: wait (bounded) for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gemini_process_dirs().contains(&work) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut p = GeminiProjects::default();
        let now = Instant::now();
        let got = p.working_dir(&root, &hash, &GeminiChat::new(), now);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(got, Resolution::Known(work.clone()));
        // Listed at most once per interval: a new folder waits for the next listing.
        let other = sha256_hex(b"/nowhere");
        assert_eq!(
            p.working_dir(&root, &other, &GeminiChat::new(), now),
            Resolution::Unknown(Some(other))
        );
        assert!(!gemini_process_dirs().contains(&work), "the process ended");
    }

    #[test]
    fn sha256_vectors() {
        // FIPS 180-4 examples, and a two-block message.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            sha256_hex(&[b'a'; 1000]),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
    }
}
