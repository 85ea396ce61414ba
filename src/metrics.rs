//! The endpoint's counters through the [`metrics`] facade, for Prometheus and every other
//! `metrics` exporter (cargo feature `metrics`).
//!
//! The endpoint keeps its counters as plain atomics (see [`HubStats`]); nothing on the delivery
//! path calls into a metrics recorder. [`record`] copies the current values into whatever
//! recorder the app installed: call it right before an exporter renders (in a `/metrics`
//! handler, so a scrape is exact), or every few seconds from a task ([`spawn_recorder`]).
//!
//! ```no_run
//! use agentwatch_ws::WsLayer;
//! use axum::{Router, routing::get};
//! use metrics_exporter_prometheus::PrometheusBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = PrometheusBuilder::new().install_recorder()?;
//! agentwatch_ws::metrics::describe();
//! let (ws, publisher) = WsLayer::new().build("/ws");
//! let app: Router = Router::new().merge(ws).route(
//!     "/metrics",
//!     get(move || async move {
//!         agentwatch_ws::metrics::record(&publisher);
//!         handle.render()
//!     }),
//! );
//! # drop(app);
//! # Ok(()) }
//! ```
//!
//! # Names
//! Counters are totals since the endpoint was built (Prometheus `_total`); gauges are current
//! values. Every name starts with `agentwatch_ws_`.
//!
//! | name | kind | labels | from [`HubStats`] |
//! |---|---|---|---|
//! | `agentwatch_ws_clients` | gauge | | `connected` |
//! | `agentwatch_ws_connection_tasks` | gauge | | `connection_tasks` |
//! | `agentwatch_ws_connections_accepted_total` | counter | | `accepted` |
//! | `agentwatch_ws_connections_closed_total` | counter | | `disconnected` |
//! | `agentwatch_ws_evictions_total` | counter | `cause` = `lagging`, `write_timeout` | `evicted_lagging`, `evicted_write_timeout` |
//! | `agentwatch_ws_heartbeat_timeouts_total` | counter | | `heartbeat_timeouts` |
//! | `agentwatch_ws_resyncs_total` | counter | | `resyncs` |
//! | `agentwatch_ws_resumes_total` | counter | | `resumed` |
//! | `agentwatch_ws_snapshots_total` | counter | | `snapshots` |
//! | `agentwatch_ws_replay_resets_total` | counter | | `replay_resets` |
//! | `agentwatch_ws_events_published_total` | counter | | `events_published` |
//! | `agentwatch_ws_encodings_total` | counter | | `encodings` |
//! | `agentwatch_ws_inbound_floods_total` | counter | | `inbound_floods` |
//! | `agentwatch_ws_protocol_errors_total` | counter | | `protocol_errors` |
//! | `agentwatch_ws_streams_reset_total` | counter | | `streams_reset` |
//! | `agentwatch_ws_rate_limit_skipped_total` | counter | | `rate_limit_skipped` (non-zero: the per-IP limit is not protecting the endpoint) |
//! | `agentwatch_ws_encode_errors_total` | counter | | `encode_errors` |
//! | `agentwatch_ws_messages_sent_total` | counter | | `events_sent` |
//! | `agentwatch_ws_sent_bytes_total` | counter | | `bytes_sent` (payload bytes, as sent: compressed ones for permessage-deflate clients) |
//! | `agentwatch_ws_compressions_total` | counter | | `compressions` (frames compressed for permessage-deflate clients, once each) |
//! | `agentwatch_ws_rejections_total` | counter | `reason` = [`RejectReason::as_str`] | `rejected` |
//! | `agentwatch_ws_replay_window_events` | gauge | | `replay_events` |
//! | `agentwatch_ws_replay_window_bytes` | gauge | | `replay_bytes` |
//!
//! Several endpoints in one process overwrite each other's values; give each its own recorder
//! (or labels through [`metrics::with_local_recorder`]) if you run more than one.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

use crate::counters::HubStats;
use crate::publisher::Publisher;
use crate::reject::RejectReason;

/// Counters: (name, unit, description, value).
type CounterRow = (&'static str, Unit, &'static str, fn(&HubStats) -> u64);

const COUNTERS: &[CounterRow] = &[
    (
        "agentwatch_ws_connections_accepted_total",
        Unit::Count,
        "WebSocket upgrades accepted",
        |s| s.accepted,
    ),
    (
        "agentwatch_ws_connections_closed_total",
        Unit::Count,
        "Connections ended, for any reason",
        |s| s.disconnected,
    ),
    (
        "agentwatch_ws_heartbeat_timeouts_total",
        Unit::Count,
        "Clients dropped for answering nothing for two heartbeat intervals",
        |s| s.heartbeat_timeouts,
    ),
    (
        "agentwatch_ws_resyncs_total",
        Unit::Count,
        "Lagging clients given a fresh snapshot instead of their backlog",
        |s| s.resyncs,
    ),
    (
        "agentwatch_ws_resumes_total",
        Unit::Count,
        "Clients that resumed from the replay window without a snapshot",
        |s| s.resumed,
    ),
    (
        "agentwatch_ws_snapshots_total",
        Unit::Count,
        "Snapshots sent",
        |s| s.snapshots,
    ),
    (
        "agentwatch_ws_replay_resets_total",
        Unit::Count,
        "Replay window resets because an event's seq did not increase",
        |s| s.replay_resets,
    ),
    (
        "agentwatch_ws_events_published_total",
        Unit::Count,
        "Events published and encoded",
        |s| s.events_published,
    ),
    (
        "agentwatch_ws_encodings_total",
        Unit::Count,
        "JSON encodings: one per event published, one per snapshot built (shared by the clients connecting at the same state)",
        |s| s.encodings,
    ),
    (
        "agentwatch_ws_inbound_floods_total",
        Unit::Count,
        "Clients closed with 1008 for sending more than their inbound budget",
        |s| s.inbound_floods,
    ),
    (
        "agentwatch_ws_protocol_errors_total",
        Unit::Count,
        "Clients closed for breaking the protocol (1002), invalid UTF-8 (1007) or an oversized message (1009)",
        |s| s.protocol_errors,
    ),
    (
        "agentwatch_ws_rate_limit_skipped_total",
        Unit::Count,
        "Upgrades admitted without the per-IP rate limit: no client address (served without ConnectInfo)",
        |s| s.rate_limit_skipped,
    ),
    (
        "agentwatch_ws_streams_reset_total",
        Unit::Count,
        "WebSockets over HTTP/2 whose stream was reset when they ended (bytes left unread by the peer)",
        |s| s.streams_reset,
    ),
    (
        "agentwatch_ws_encode_errors_total",
        Unit::Count,
        "Events or snapshots that could not be encoded",
        |s| s.encode_errors,
    ),
    (
        "agentwatch_ws_messages_sent_total",
        Unit::Count,
        "Event messages written to clients, one per client per event",
        |s| s.events_sent,
    ),
    (
        "agentwatch_ws_sent_bytes_total",
        Unit::Bytes,
        "Payload bytes of the event messages written to clients, as sent",
        |s| s.bytes_sent,
    ),
    (
        "agentwatch_ws_compressions_total",
        Unit::Count,
        "Frames compressed for permessage-deflate clients, once per frame",
        |s| s.compressions,
    ),
];

/// Gauges: (name, unit, description, value).
type GaugeRow = (&'static str, Unit, &'static str, fn(&HubStats) -> usize);

const GAUGES: &[GaugeRow] = &[
    (
        "agentwatch_ws_clients",
        Unit::Count,
        "Clients connected and being served",
        |s| s.connected,
    ),
    (
        "agentwatch_ws_connection_tasks",
        Unit::Count,
        "Connection tasks alive, including ones finishing their close",
        |s| s.connection_tasks,
    ),
    (
        "agentwatch_ws_replay_window_events",
        Unit::Count,
        "Events held for resuming clients",
        |s| s.replay_events,
    ),
    (
        "agentwatch_ws_replay_window_bytes",
        Unit::Bytes,
        "Bytes of encoded events held for resuming clients",
        |s| s.replay_bytes,
    ),
];

const EVICTIONS: &str = "agentwatch_ws_evictions_total";
const REJECTIONS: &str = "agentwatch_ws_rejections_total";

/// Every [`RejectReason`], for the `reason` label.
const REJECT_REASONS: [RejectReason; 8] = [
    RejectReason::Stopped,
    RejectReason::RateLimited,
    RejectReason::Origin,
    RejectReason::OriginMissing,
    RejectReason::Unauthorized,
    RejectReason::ConnectionCap,
    RejectReason::NotUpgrade,
    RejectReason::MissingConnectInfo,
];

/// Registers a description and unit for every metric with the installed recorder. Optional:
/// exporters print them (Prometheus `# HELP` lines). Call once, after installing the recorder.
pub fn describe() {
    for &(name, unit, help, _) in COUNTERS {
        describe_counter!(name, unit, help);
    }
    for &(name, unit, help, _) in GAUGES {
        describe_gauge!(name, unit, help);
    }
    describe_counter!(
        EVICTIONS,
        Unit::Count,
        "Clients evicted by the server, by cause"
    );
    describe_counter!(
        REJECTIONS,
        Unit::Count,
        "Upgrade requests turned away, by reason"
    );
}

/// Copies the endpoint's current counters and gauges into the installed recorder (see the
/// module docs for the names). Cheap: one [`Publisher::stats`] and a few dozen recorder
/// calls, so calling it on every scrape is fine.
pub fn record(publisher: &Publisher) {
    record_stats(&publisher.stats());
}

/// Copies `stats` into the installed recorder; what [`record`] does with the publisher's.
pub fn record_stats(stats: &HubStats) {
    for &(name, _, _, value) in COUNTERS {
        counter!(name).absolute(value(stats));
    }
    for &(name, _, _, value) in GAUGES {
        // Counts of clients and bytes in memory: far below f64's exact integer range.
        gauge!(name).set(value(stats) as f64);
    }
    counter!(EVICTIONS, "cause" => "lagging").absolute(stats.evicted_lagging);
    counter!(EVICTIONS, "cause" => "write_timeout").absolute(stats.evicted_write_timeout);
    for reason in REJECT_REASONS {
        counter!(REJECTIONS, "reason" => reason.as_str()).absolute(stats.rejected.count(reason));
    }
}

/// Spawns a task on the current tokio runtime that calls [`record`] every `interval` until
/// the publisher is [stopped](Publisher::stop), for exporters that push or scrape on their
/// own schedule. Values are at most `interval` old. `interval` is at least 10 ms (shorter
/// values are raised to it, with a `warn`).
///
/// # Panics
/// Outside a tokio runtime (as [`tokio::spawn`] does).
pub fn spawn_recorder(publisher: Publisher, interval: Duration) -> tokio::task::JoinHandle<()> {
    let interval = crate::layer::bounded(
        "metrics.interval",
        interval,
        Duration::from_millis(10),
        Duration::MAX,
    );
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            record(&publisher);
            if publisher.is_stopped() {
                break;
            }
        }
    })
}
