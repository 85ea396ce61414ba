//! The NATS JetStream the tests use: the shared server on 127.0.0.1:4222 (or
//! `AGENTWATCH_NATS_URL`), checked once per test, skipped with a notice when absent unless
//! `AGENTWATCH_REQUIRE_NATS=1`.

use std::time::Duration;

/// The NATS server the tests use: `AGENTWATCH_NATS_URL`, else nats://127.0.0.1:4222.
pub fn nats_url() -> String {
    std::env::var("AGENTWATCH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Whether a NATS server with JetStream answers at [`nats_url`]: false (after a loud notice)
/// when none does and `AGENTWATCH_REQUIRE_NATS=1` is not set; a panic when it is set.
pub async fn nats_available() -> bool {
    let url = nats_url();
    let answer = async {
        let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
        // JetStream answers "stream not found" for a name no test uses.
        match async_nats::jetstream::new(client)
            .get_stream("agentwatch-probe-none")
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(())
                }
                _ => Err(format!("JetStream: {e}")),
            },
        }
    };
    let error = match tokio::time::timeout(Duration::from_secs(3), answer).await {
        Ok(Ok(())) => return true,
        Ok(Err(e)) => e,
        Err(_) => "no answer within 3 s".into(),
    };
    if std::env::var("AGENTWATCH_REQUIRE_NATS").as_deref() == Ok("1") {
        panic!(
            "no NATS JetStream at {url} ({error}) and AGENTWATCH_REQUIRE_NATS=1: start one with \
             `nats-server -js -a 127.0.0.1 -p 4222` or point AGENTWATCH_NATS_URL at one"
        );
    }
    super::skip_notice(
        &format!("no NATS JetStream answers at {url} ({error})"),
        "Start `nats-server -js` (or set AGENTWATCH_NATS_URL)",
        "AGENTWATCH_REQUIRE_NATS",
    );
    false
}

/// [`nats_available`] from synchronous code (or from inside a runtime): on a thread of its
/// own with a runtime of its own.
pub fn nats_available_blocking() -> bool {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(nats_available())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
