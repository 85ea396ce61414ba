//! Stream keys of their own for the tests that use the shared Redis on 127.0.0.1:6379 (or
//! `AGENTWATCH_REDIS_URL`): unique per test, and deleted with their companion keys
//! (every `<key>:*`) when dropped, so no test sees another's stream or leaves one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("AGENTWATCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether a Redis answers at [`redis_url`]: false (after a loud notice) when none does and
/// `AGENTWATCH_REQUIRE_REDIS=1` is not set, so `cargo test` passes on a machine without Redis;
/// a panic when it is set (as `.ci/run` does, after starting one).
pub fn redis_available() -> bool {
    let url = redis_url();
    let answer = redis::Client::open(url.as_str()).and_then(|client| {
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        redis::cmd("PING").query::<String>(&mut conn)
    });
    let error = match answer {
        Ok(_) => return true,
        Err(e) => e,
    };
    if std::env::var("AGENTWATCH_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!(
            "no Redis at {url} ({error}) and AGENTWATCH_REQUIRE_REDIS=1: start one with \
             `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no` \
             or point AGENTWATCH_REDIS_URL at one"
        );
    }
    super::skip_notice(
        &format!("no Redis answers at {url} ({error})"),
        "Start a Redis (or set AGENTWATCH_REDIS_URL)",
        "AGENTWATCH_REQUIRE_REDIS",
    );
    false
}

/// A fresh stream key, `agentwatch-test:<scope>:<pid>:<nanos>:<n>`.
pub struct StreamKey(pub String);

impl StreamKey {
    pub fn new(scope: &str) -> StreamKey {
        StreamKey(Self::unique_name(scope))
    }

    /// `agentwatch-test:<scope>:<pid>:<nanos>:<n>`, unique in this machine's runs.
    pub fn unique_name(scope: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos();
        format!(
            "agentwatch-test:{scope}:{}:{nanos}:{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Drop for StreamKey {
    fn drop(&mut self) {
        let key = &self.0;
        if let Ok(client) = redis::Client::open(redis_url().as_str()) {
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) {
                // The stream, and every key under it (`:seq`, `:machines`, each machine's
                // `:machine:M` and `:checkpoint:M`).
                let mut keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{key}:*"))
                    .query(&mut conn)
                    .unwrap_or_default();
                keys.push(key.clone());
                let _: Result<usize, _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}
