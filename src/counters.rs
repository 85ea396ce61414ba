//! The hub's counters, owned here and updated only through methods named for what happened
//! (`connection_started`, `record_rejection`…), and [`HubStats`], their point-in-time copy.
//!
//! Plain atomics, `Relaxed` except where noted: each counter is exact on its own, and a copy
//! read while connections come and go may show one of them a step ahead of another.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::frame::TextFrame;
use crate::reject::RejectReason;

/// Counters kept by the hub; see [`Publisher::stats`](crate::Publisher::stats).
#[derive(Default)]
pub(crate) struct Counters {
    connected: AtomicUsize,
    tasks: AtomicUsize,
    /// Woken when `tasks` drops to zero: what [`Counters::idle`] waits for.
    idle: Notify,
    accepted: AtomicU64,
    disconnected: AtomicU64,
    evicted_lagging: AtomicU64,
    evicted_write_timeout: AtomicU64,
    heartbeat_timeouts: AtomicU64,
    inbound_floods: AtomicU64,
    protocol_errors: AtomicU64,
    resyncs: AtomicU64,
    resumed: AtomicU64,
    snapshots: AtomicU64,
    replay_resets: AtomicU64,
    events_published: AtomicU64,
    encodings: AtomicU64,
    encode_errors: AtomicU64,
    events_sent: AtomicU64,
    bytes_sent: AtomicU64,
    compressions: AtomicU64,
    rate_limit_skipped: AtomicU64,
    streams_reset: AtomicU64,
    rejected: [AtomicU64; REJECT_REASONS],
}

/// How a connection ended, for the ends that have a counter of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountedEnd {
    EvictedLagging,
    EvictedWriteTimeout,
    HeartbeatTimeout,
    InboundFlood,
    ProtocolError,
}

const REJECT_REASONS: usize = 8;

fn reason_index(reason: RejectReason) -> usize {
    match reason {
        RejectReason::Stopped => 0,
        RejectReason::RateLimited => 1,
        RejectReason::Origin => 2,
        RejectReason::Unauthorized => 3,
        RejectReason::ConnectionCap => 4,
        RejectReason::NotUpgrade => 5,
        RejectReason::MissingConnectInfo => 6,
        RejectReason::OriginMissing => 7,
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// A connection task was promised (the `101` is on its way): it counts as a live task
    /// until [`task_ended`](Self::task_ended), so [`idle`](Self::idle) waits for it even
    /// before hyper hands the socket over.
    pub(crate) fn task_started(&self) {
        // SeqCst with the load in `idle`: a waiter either sees this task or is woken by its end.
        self.tasks.fetch_add(1, Ordering::SeqCst);
    }

    /// A connection task ended (or its upgrade failed); wakes [`idle`](Self::idle) waiters
    /// when it was the last.
    pub(crate) fn task_ended(&self) {
        if self.tasks.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once no connection task is alive. No polling: woken by the last
    /// [`task_ended`](Self::task_ended).
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a last task ending in between still wakes us.
            notified.as_mut().enable();
            if self.tasks.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A client was upgraded and is being served.
    pub(crate) fn connection_started(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
        bump(&self.accepted);
    }

    /// A client is no longer served (it may still be saying goodbye).
    pub(crate) fn connection_closing(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
        bump(&self.disconnected);
    }

    /// Clients served right now.
    pub(crate) fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn record_end(&self, end: CountedEnd) {
        bump(match end {
            CountedEnd::EvictedLagging => &self.evicted_lagging,
            CountedEnd::EvictedWriteTimeout => &self.evicted_write_timeout,
            CountedEnd::HeartbeatTimeout => &self.heartbeat_timeouts,
            CountedEnd::InboundFlood => &self.inbound_floods,
            CountedEnd::ProtocolError => &self.protocol_errors,
        });
    }

    pub(crate) fn record_rejection(&self, reason: RejectReason) {
        bump(&self.rejected[reason_index(reason)]);
    }

    pub(crate) fn record_resync(&self) {
        bump(&self.resyncs);
    }

    pub(crate) fn record_resume(&self) {
        bump(&self.resumed);
    }

    pub(crate) fn record_snapshot(&self) {
        bump(&self.snapshots);
    }

    pub(crate) fn record_replay_reset(&self) {
        bump(&self.replay_resets);
    }

    pub(crate) fn record_publish(&self) {
        bump(&self.events_published);
    }

    /// An upgrade admitted without the per-IP rate limit: it carried no client address.
    pub(crate) fn record_rate_limit_skip(&self) {
        bump(&self.rate_limit_skipped);
    }

    /// A WebSocket over HTTP/2 ended with its stream still held by hyper: the stream was reset.
    pub(crate) fn record_stream_reset(&self) {
        bump(&self.streams_reset);
    }

    /// Messages (and their payload bytes) written to one client.
    pub(crate) fn record_sent(&self, events: u64, bytes: u64) {
        self.events_sent.fetch_add(events, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Event frames compressed for permessage-deflate clients (by the connection that was
    /// first to need them).
    pub(crate) fn record_compressed(&self, frames: u64) {
        self.compressions.fetch_add(frames, Ordering::Relaxed);
    }

    /// Encodes one frame with [`TextFrame::encode`], counting the attempt (failed ones
    /// included) in `encodings` and a failure in `encode_errors`: every frame the crate
    /// encodes goes through here, so a change that encoded an event once per client would
    /// show in [`HubStats::encodings`].
    pub(crate) fn encode<E>(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<TextFrame, E> {
        bump(&self.encodings);
        let encoded = TextFrame::encode(write);
        if encoded.is_err() {
            bump(&self.encode_errors);
        }
        encoded
    }

    /// A copy of every counter; the replay window's usage is the hub's to fill in.
    pub(crate) fn snapshot(&self) -> HubStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let r = |reason| load(&self.rejected[reason_index(reason)]);
        let evicted_lagging = load(&self.evicted_lagging);
        let evicted_write_timeout = load(&self.evicted_write_timeout);
        HubStats {
            connected: self.connected(),
            connection_tasks: self.tasks.load(Ordering::Relaxed),
            accepted: load(&self.accepted),
            disconnected: load(&self.disconnected),
            evicted: evicted_lagging + evicted_write_timeout,
            evicted_lagging,
            evicted_write_timeout,
            heartbeat_timeouts: load(&self.heartbeat_timeouts),
            inbound_floods: load(&self.inbound_floods),
            protocol_errors: load(&self.protocol_errors),
            resyncs: load(&self.resyncs),
            resumed: load(&self.resumed),
            snapshots: load(&self.snapshots),
            replay_resets: load(&self.replay_resets),
            events_published: load(&self.events_published),
            encodings: load(&self.encodings),
            encode_errors: load(&self.encode_errors),
            events_sent: load(&self.events_sent),
            bytes_sent: load(&self.bytes_sent),
            compressions: load(&self.compressions),
            rate_limit_skipped: load(&self.rate_limit_skipped),
            streams_reset: load(&self.streams_reset),
            replay_events: 0,
            replay_bytes: 0,
            rejected: RejectionStats {
                stopped: r(RejectReason::Stopped),
                rate_limited: r(RejectReason::RateLimited),
                origin: r(RejectReason::Origin),
                origin_missing: r(RejectReason::OriginMissing),
                unauthorized: r(RejectReason::Unauthorized),
                connection_cap: r(RejectReason::ConnectionCap),
                not_upgrade: r(RejectReason::NotUpgrade),
                missing_connect_info: r(RejectReason::MissingConnectInfo),
            },
        }
    }
}

/// A point-in-time copy of an endpoint's counters, from
/// [`Publisher::stats`](crate::Publisher::stats). Counts are totals since
/// [`WsLayer::build`](crate::WsLayer::build), except `connected`, `connection_tasks`,
/// `replay_events` and `replay_bytes`, which are current values.
///
/// Serializes (serde) as a JSON object with these field names in snake_case, `rejected` as a
/// nested object, for a status endpoint of your own.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct HubStats {
    /// Clients connected right now (same as
    /// [`Publisher::client_count`](crate::Publisher::client_count)).
    pub connected: usize,
    /// Connection tasks alive right now: counted from the `101` (before hyper hands the
    /// socket over) until the task ends, so including ones still finishing their close.
    /// Zero when no connection is left behind; [`Publisher::closed`](crate::Publisher::closed)
    /// waits for it.
    pub connection_tasks: usize,
    /// Upgrades accepted since the endpoint was built.
    pub accepted: u64,
    /// Connections ended, for any reason.
    pub disconnected: u64,
    /// Clients evicted by the server: `evicted_lagging + evicted_write_timeout`.
    pub evicted: u64,
    /// Clients evicted because they fell `send_buffer` events behind.
    pub evicted_lagging: u64,
    /// Clients evicted because their socket accepted no byte for `write_timeout`.
    pub evicted_write_timeout: u64,
    /// Clients dropped because they answered none of our pings for two heartbeat intervals.
    pub heartbeat_timeouts: u64,
    /// Clients closed with 1008 (policy violation) because they sent more than their
    /// inbound budget (see the close codes in [`wire`](crate::wire#close-codes)).
    pub inbound_floods: u64,
    /// Clients closed because what they sent broke the protocol (1002), was not UTF-8 where
    /// text must be (1007), was invalid compressed data (1007) or exceeded
    /// `max_message_size`, inflated or not (1009).
    pub protocol_errors: u64,
    /// Lagging clients given a fresh snapshot instead of their backlog ([`LagPolicy::Resync`](crate::LagPolicy::Resync)).
    pub resyncs: u64,
    /// Clients that resumed from the replay window (`?since=`) without a snapshot.
    pub resumed: u64,
    /// Snapshots sent: one per connect that did not resume, plus one per resync.
    pub snapshots: u64,
    /// Times the replay window was reset because an event's seq did not increase.
    pub replay_resets: u64,
    /// Events published and encoded.
    pub events_published: u64,
    /// JSON encodings performed (failed attempts included): one per event published,
    /// whatever the number of clients, and one per snapshot event or `health` report after
    /// it built for connecting clients. Clients connecting while no event was published in
    /// between share one snapshot, so a reconnect storm against an unchanged state costs one.
    pub encodings: u64,
    /// Events that could not be encoded (and so delivered to nobody).
    pub encode_errors: u64,
    /// Event messages written to clients (snapshots included; one per client per event).
    pub events_sent: u64,
    /// Payload bytes of those messages, as sent: compressed for a client that negotiated
    /// permessage-deflate (see [`WsLayer::compression`](crate::WsLayer::compression)).
    pub bytes_sent: u64,
    /// Frames compressed for permessage-deflate clients: at most one per encoded frame
    /// (event, snapshot or `health` report), however many clients get it compressed, and
    /// none while no connected client negotiated compression. A frame that compression does
    /// not shrink counts too (it is then sent uncompressed).
    pub compressions: u64,
    /// Upgrade requests admitted without the per-IP rate limit because they carried no client
    /// address (the app was served without `ConnectInfo<SocketAddr>`: use
    /// [`serve`](crate::serve()) or `into_make_service_with_connect_info::<SocketAddr>()`).
    /// Non-zero means the rate limit is not protecting this endpoint.
    pub rate_limit_skipped: u64,
    /// WebSockets over HTTP/2 whose stream was reset (`RST_STREAM(CANCEL)`) when their
    /// connection ended, because it had not ended cleanly: the peer left bytes unread (an
    /// evicted client whose flow-control window stayed closed) or the close handshake did not
    /// finish. Counted only under [`serve`](crate::serve()), which can reset such streams.
    pub streams_reset: u64,
    /// Upgrade requests turned away, by reason.
    pub rejected: RejectionStats,
    /// Events held in the replay window right now.
    pub replay_events: usize,
    /// Bytes of encoded events held in the replay window right now.
    pub replay_bytes: usize,
}

/// Upgrade requests rejected, by [`RejectReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RejectionStats {
    /// The endpoint was stopped with [`Publisher::stop`](crate::Publisher::stop) (`503`).
    pub stopped: u64,
    /// Per-IP rate limit exceeded (`429`).
    pub rate_limited: u64,
    /// Origin not allowed (`403`).
    pub origin: u64,
    /// No `Origin` header where one is required (`403`).
    pub origin_missing: u64,
    /// Authentication failed (`401` or the extractor's rejection).
    pub unauthorized: u64,
    /// Connection cap reached (`503`).
    pub connection_cap: u64,
    /// Not a valid WebSocket upgrade request (`426`/`400`).
    pub not_upgrade: u64,
    /// Served without connect info, so no client IP (`500`).
    pub missing_connect_info: u64,
}

impl RejectionStats {
    /// The rejections for one reason.
    pub fn count(&self, reason: RejectReason) -> u64 {
        match reason {
            RejectReason::Stopped => self.stopped,
            RejectReason::RateLimited => self.rate_limited,
            RejectReason::Origin => self.origin,
            RejectReason::OriginMissing => self.origin_missing,
            RejectReason::Unauthorized => self.unauthorized,
            RejectReason::ConnectionCap => self.connection_cap,
            RejectReason::NotUpgrade => self.not_upgrade,
            RejectReason::MissingConnectInfo => self.missing_connect_info,
        }
    }

    /// All rejections, whatever the reason.
    pub fn total(&self) -> u64 {
        self.stopped
            + self.rate_limited
            + self.origin
            + self.origin_missing
            + self.unauthorized
            + self.connection_cap
            + self.not_upgrade
            + self.missing_connect_info
    }
}
