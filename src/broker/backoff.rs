//! Retry pacing and the "broker up / down" log, shared by the producer and the follower.

use std::time::Duration;

use super::BrokerError;

/// The first retry delay.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest retry delay.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Exponential backoff with a ceiling, plus a log line on each change of the link state
/// (down, then up again), never one per retry.
#[derive(Debug)]
pub(crate) struct Link {
    role: &'static str,
    delay: Duration,
    down: bool,
    failures: u64,
}

impl Link {
    pub(crate) fn new(role: &'static str) -> Self {
        Link {
            role,
            delay: MIN_BACKOFF,
            down: false,
            failures: 0,
        }
    }

    /// Records a failed operation and waits before the next try.
    pub(crate) async fn failed(&mut self, error: &BrokerError) {
        self.failures += 1;
        if !self.down {
            self.down = true;
            tracing::warn!(role = self.role, %error, "broker unreachable; retrying with backoff");
        } else {
            tracing::debug!(role = self.role, %error, retry_in = ?self.delay, "broker still unreachable");
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
    }

    /// Records a successful operation; returns whether the link was down before.
    pub(crate) fn ok(&mut self) -> bool {
        self.delay = MIN_BACKOFF;
        if self.down {
            self.down = false;
            tracing::info!(
                role = self.role,
                failures = self.failures,
                "broker reachable again"
            );
            return true;
        }
        false
    }
}
