//! Tests that change or measure the whole test process, kept out of the other binaries so
//! that no unrelated test shares what they change: `h2_streams` installs a counting global
//! allocator (the process's live heap and its peak are the measure there and in
//! `deflate_bomb`), `flood` measures the process's resident set, `serve_accept_errors` lowers the
//! process's `RLIMIT_NOFILE`, `protocol_errors` installs a panic hook that fails its tests on
//! a panic in any thread. Each test holds [`serial`] for its whole run, so none of them sees
//! another's allocations, descriptor limit or panics.

#[path = "../common/mod.rs"]
mod common;

mod deflate_bomb;
mod flood;
mod h2_streams;
mod protocol_errors;
mod serve_accept_errors;

/// Held by every test of this binary for its whole run: they run one at a time. A tokio
/// mutex, so the guard may be held across `.await` (and a failed test does not poison it).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
