//! What a client may send, and what counts as a sign of life.
//!
//! The protocol is server-to-client: a client has nothing to say but pongs and, at the end, a
//! close. Whatever it sends anyway (pings, unsolicited pongs, data messages, fragments) costs
//! the server CPU to read and, for pings, a pong to write. So every byte read from a client
//! counts against an inbound budget, a token bucket of [`InboundBudget::BURST_MIN`] bytes
//! (or four times `max_message_size`, if larger) refilled at a quarter of that per second;
//! a client that overdraws it is closed with 1008 (policy violation). A dashboard answering
//! one ping per heartbeat uses well under a thousandth of it.
//!
//! Liveness ([`Heartbeat`]) is a pong that echoes one of our pings, whose payloads are
//! unpredictable: the client has read our ping. Its own pings, data or unsolicited pongs
//! prove nothing (a client can send them forever without reading a byte), so they do not
//! keep a connection alive. The usual gorilla/websocket pattern in Go (a read deadline that
//! only the pong handler extends) also counts only pongs.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket over the bytes a client sends.
pub(super) struct InboundBudget {
    /// Bytes the client may still send at once.
    tokens: u64,
    burst: u64,
    /// Bytes per second.
    rate: u64,
    refilled: Instant,
}

impl InboundBudget {
    /// The smallest burst: 64 KiB, about 500 maximal pings.
    pub(super) const BURST_MIN: u64 = 64 * 1024;

    /// A full bucket sized for a client allowed messages of `max_message_size` bytes.
    pub(super) fn new(max_message_size: usize, now: Instant) -> Self {
        let burst = Self::BURST_MIN.max((max_message_size as u64).saturating_mul(4));
        InboundBudget {
            tokens: burst,
            burst,
            rate: burst / 4,
            refilled: now,
        }
    }

    /// Charges `bytes` read at `now`; `false` when the client has overdrawn its budget.
    pub(super) fn charge(&mut self, bytes: u64, now: Instant) -> bool {
        if bytes <= self.tokens {
            // Nothing to refill first: no clock arithmetic on the common path.
            self.tokens -= bytes;
            return true;
        }
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        let refill = elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000;
        let refill = u64::try_from(refill).unwrap_or(u64::MAX);
        self.tokens = self.tokens.saturating_add(refill).min(self.burst);
        match self.tokens.checked_sub(bytes) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }

    pub(super) fn burst(&self) -> u64 {
        self.burst
    }
}

/// Our pings and the pongs that answer them.
pub(super) struct Heartbeat {
    /// Pings sent so far. Ping `n` carries `key + n` (8 bytes, big-endian): a client cannot
    /// answer it without having read it.
    sent: u64,
    /// Random, per connection.
    key: u64,
    /// When a pong last echoed one of our pings (or the connection started).
    last_answer: Instant,
    period: Duration,
}

impl Heartbeat {
    pub(super) fn new(period: Duration, now: Instant) -> Self {
        // SipHash under a fresh random key: unpredictable to the client, no dependency.
        let key = RandomState::new().build_hasher().finish();
        Heartbeat {
            sent: 0,
            key,
            last_answer: now,
            period,
        }
    }

    /// The payload of the next ping.
    pub(super) fn next_ping(&mut self) -> [u8; 8] {
        self.sent += 1;
        self.key.wrapping_add(self.sent).to_be_bytes()
    }

    /// A pong arrived: it proves the client alive when it echoes one of our pings.
    pub(super) fn pong(&mut self, payload: &[u8], now: Instant) {
        let answers_ours = <[u8; 8]>::try_from(payload)
            .map(|payload| u64::from_be_bytes(payload).wrapping_sub(self.key))
            .is_ok_and(|n| (1..=self.sent).contains(&n));
        if answers_ours {
            self.last_answer = now;
        }
    }

    /// Whether two periods went by without an answer.
    pub(super) fn is_overdue(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_answer) >= self.period.saturating_mul(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_its_rate() {
        let start = Instant::now();
        let mut budget = InboundBudget::new(4096, start);
        assert_eq!(budget.burst(), 64 * 1024);
        assert!(budget.charge(64 * 1024, start));
        assert!(!budget.charge(1, start), "the burst is spent");
        // A quarter of the burst per second.
        let later = start + Duration::from_millis(500);
        assert!(budget.charge(8 * 1024, later));
        assert!(!budget.charge(1024, later));
        // Never more than the burst, however long the client was quiet.
        let much_later = later + Duration::from_secs(3600);
        assert!(!budget.charge(64 * 1024 + 1, much_later));
        assert!(budget.charge(64 * 1024, much_later));
        // A large max_message_size makes room for four such messages.
        assert_eq!(InboundBudget::new(1 << 20, start).burst(), 4 << 20);
    }

    #[test]
    fn only_a_pong_echoing_our_ping_is_a_sign_of_life() {
        let start = Instant::now();
        let period = Duration::from_secs(1);
        let mut heartbeat = Heartbeat::new(period, start);
        let t = start + Duration::from_secs(2);
        assert!(heartbeat.is_overdue(t));
        let first = heartbeat.key.wrapping_add(1).to_be_bytes();
        heartbeat.pong(&first, t);
        assert!(heartbeat.is_overdue(t), "an answer to a ping never sent");
        heartbeat.pong(&1u64.to_be_bytes(), t);
        assert!(heartbeat.is_overdue(t), "a guess");
        heartbeat.pong(b"", t);
        assert!(heartbeat.is_overdue(t), "an unsolicited pong");
        let ping = heartbeat.next_ping();
        assert_eq!(ping, first);
        heartbeat.pong(&ping, t);
        assert!(!heartbeat.is_overdue(t));
        assert!(heartbeat.is_overdue(t + period * 2));
    }
}
