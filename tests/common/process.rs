//! Child processes and scratch directories the tests own: both cleaned up when dropped, also
//! when the test panics.

use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Kills and reaps the child when dropped, also when the test panics (then it prints the
/// last lines of the child's output, to help explain the failure: from its log file when it
/// has one, else from `stderr_tail`, which whoever drains its stderr fills).
pub struct ProcessGuard {
    pub name: &'static str,
    pub child: Child,
    pub log: Option<PathBuf>,
    pub stderr_tail: Arc<Mutex<Vec<String>>>,
}

impl ProcessGuard {
    /// Spawns `command` (panicking with `name` when it cannot start).
    pub fn spawn(name: &'static str, command: &mut Command, log: Option<PathBuf>) -> ProcessGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({:?}): {e}", command.get_program()));
        ProcessGuard {
            name,
            child,
            log,
            stderr_tail: Arc::default(),
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal would.
    pub fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT {} failed", self.child.id());
    }

    /// Waits for the child to exit on its own, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}:\n{}",
                self.name,
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last 40 lines of the child's log file, or of its stderr when it has no log file.
    pub fn tail(&self) -> String {
        if let Some(log) = &self.log {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            return lines[lines.len().saturating_sub(40)..].join("\n");
        }
        self.stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last output of {} ----\n{}\n----",
                self.name,
                self.tail()
            );
        }
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    pub fn new(prefix: &str) -> ScratchDir {
        // RandomState is seeded randomly per process; mix in the clock for good measure.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{:x}", std::process::id(), h.finish()));
        fs::create_dir_all(&path).expect("create scratch dir");
        ScratchDir { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
