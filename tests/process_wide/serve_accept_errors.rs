//! `agentwatch_ws::serve` out of file descriptors (EMFILE): accept errors are logged and
//! retried after a pause by the listener (axum's `TcpListener`: 1 s, logged at `error` with
//! axum's `tracing` feature), never in a busy loop, and the server recovers once descriptors
//! are free again.
//!
//! The test lowers this process's own `RLIMIT_NOFILE` with util-linux's `prlimit` (std has no
//! `setrlimit`), so its binary runs one test at a time (`crate::serial`): no other test shares
//! the limit.

#![cfg(target_os = "linux")]

use crate::common;

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::*;
use tokio::net::{TcpListener, TcpStream};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The soft `RLIMIT_NOFILE` of this process.
fn soft_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a numeric soft limit")
}

fn set_soft_nofile(limit: u64) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("util-linux prlimit, to lower this process's RLIMIT_NOFILE");
    assert!(status.success(), "prlimit failed: {status}");
    assert_eq!(soft_nofile(), limit);
}

/// Restores the limit even when the test fails.
struct Restore(u64);

impl Drop for Restore {
    fn drop(&mut self) {
        set_soft_nofile(self.0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn accept_errors_are_logged_backed_off_and_recovered_from() {
    let _serial = crate::serial().await;
    let (log, _guard) = Captured::install(tracing::Level::ERROR);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ping", get(|| async { "pong" }));
    let server = tokio::spawn(std::future::IntoFuture::into_future(agentwatch_ws::serve(
        listener, app,
    )));

    let _restore = Restore(soft_nofile());
    set_soft_nofile(open_fds() as u64 + 16);
    // Connect until this process is out of descriptors: each connection costs one here and
    // one in the server once accepted, so the server's accept fails with EMFILE first.
    let mut clients = Vec::new();
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => clients.push(stream),
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(24), "EMFILE expected: {error}");
                break;
            }
        }
        // Let the server accept.
        tokio::task::yield_now().await;
        assert!(clients.len() < 64, "the limit was not reached");
    }
    eventually("the accept error is logged", || {
        log.text().contains("accept error")
    })
    .await;
    // Over two more seconds out of descriptors, a retry each second logs two or three more
    // lines; a busy loop would log thousands.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let failures = log.text().matches("accept error").count();
    assert!(
        (2..=5).contains(&failures),
        "{failures} accept failures logged in ~2.5 s"
    );
    assert!(!server.is_finished(), "the server must not exit");

    // Descriptors free again: the server serves new clients.
    drop(clients);
    let (status, _, body) = http_get(addr, "/ping", &[]).await;
    assert_eq!((status, body.as_str()), (200, "pong"));
    assert!(!server.is_finished());
    server.abort();
}
