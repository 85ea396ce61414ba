//! Why was I refused? The last admission rejection per client IP, and the route that tells a
//! client its own: `GET <path>/status`, documented for users in the
//! [`admission`](crate::admission#why-was-i-refused-path-status) module.
//!
//! A browser cannot read the HTTP status of a refused WebSocket handshake, so the router keeps,
//! per client IP, the most recent rejection of an upgrade request ([`RejectionLog`]) and
//! serves it. Memory is bounded: a record is kept for [`RETENTION`] (60 s) and at most
//! [`MAX_ENTRIES`] client IPs are remembered (the oldest record is dropped first); expired
//! records are swept as new ones arrive.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use pin_project_lite::pin_project;
use serde::Serialize;
use tower::{Layer, Service};

use crate::admission::client_ip::{TrustedProxies, client_ip, peer_addr};
use crate::admission::{RejectReason, Rejected};
use crate::reject::RejectionMessage;
use crate::wire::Timestamp;

/// How long a rejection is remembered.
pub(crate) const RETENTION: Duration = Duration::from_secs(60);
/// How many client IPs are remembered at most; beyond, the oldest record is dropped.
pub(crate) const MAX_ENTRIES: usize = 4096;

/// The last rejection of one client, as `GET <path>/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LastRejection {
    /// [`RejectReason::as_str`], e.g. `"rate_limited"`.
    pub(crate) reason: &'static str,
    /// The HTTP status the upgrade request got, e.g. `429`.
    pub(crate) status: u16,
    /// A short sentence for people, e.g. `"too many connection attempts"`.
    pub(crate) message: &'static str,
    /// Whole seconds from the time of the query until the answer's `Retry-After` has passed
    /// (0 once it has); `None` when the answer carried no `Retry-After`.
    pub(crate) retry_after: Option<u64>,
    /// When the request was refused.
    pub(crate) at: Timestamp,
}

/// A short sentence for people saying why an upgrade was refused, when the rejection carries
/// no [`RejectionMessage`] of its own.
pub(crate) fn message(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Stopped => "the server is stopping",
        RejectReason::RateLimited => "too many connection attempts",
        RejectReason::Origin => "this page's origin is not allowed",
        RejectReason::OriginMissing => {
            "the request has no Origin header, and this server requires one"
        }
        RejectReason::Unauthorized => "not authorized",
        RejectReason::ConnectionCap => "the server has too many connections",
        RejectReason::NotUpgrade => "not a valid WebSocket upgrade request",
        RejectReason::MissingConnectInfo => "the server cannot tell client addresses apart",
    }
}

/// Who a record belongs to: a client IP, or everyone when the server has no `ConnectInfo`.
pub(crate) type ClientKey = Option<IpAddr>;

struct Entry {
    reason: RejectReason,
    message: &'static str,
    status: u16,
    /// The answer's `Retry-After`, counted from `recorded` (kept as a span rather than an
    /// instant: any span, `u64::MAX` seconds included, then counts down without overflow).
    retry_after: Option<Duration>,
    recorded: Instant,
    at: Timestamp,
    /// Which push to `order` is this entry's current one.
    generation: u64,
}

#[derive(Default)]
struct Records {
    entries: HashMap<ClientKey, Entry>,
    /// Keys in the order they were last recorded, with the generation of that recording;
    /// a pair whose generation is no longer the entry's is a leftover of an earlier record.
    order: VecDeque<(ClientKey, u64)>,
    next_generation: u64,
}

/// The most recent admission rejection per client IP: kept [`RETENTION`], at most
/// [`MAX_ENTRIES`] clients. Cheap to clone (a handle to shared state).
#[derive(Clone, Default)]
pub(crate) struct RejectionLog {
    records: Arc<Mutex<Records>>,
}

impl std::fmt::Debug for RejectionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectionLog")
            .field("clients", &self.len())
            .finish()
    }
}

impl RejectionLog {
    /// An empty log.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // The records are consistent after every statement that can panic; a poisoned lock
        // still holds usable data.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `client` was refused at `now` with `reason` (shown as `message`, or
    /// the reason's default sentence) and HTTP `status`; `retry_after` is the answer's
    /// `Retry-After`. Replaces that client's previous record,
    /// sweeps expired records and drops the oldest when over [`MAX_ENTRIES`].
    pub(crate) fn record(
        &self,
        client: ClientKey,
        reason: RejectReason,
        message: Option<&'static str>,
        status: StatusCode,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        let mut records = self.lock();
        let generation = records.next_generation;
        records.next_generation += 1;
        records.entries.insert(
            client,
            Entry {
                reason,
                message: message.unwrap_or_else(|| self::message(reason)),
                status: status.as_u16(),
                retry_after,
                recorded: now,
                at: Timestamp::now(),
                generation,
            },
        );
        records.order.push_back((client, generation));
        Self::sweep_locked(&mut records, now);
    }

    /// Drops expired records (and the oldest beyond [`MAX_ENTRIES`]); returns how many
    /// clients are still remembered.
    #[cfg(test)]
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let mut records = self.lock();
        Self::sweep_locked(&mut records, now);
        records.entries.len()
    }

    fn sweep_locked(records: &mut Records, now: Instant) {
        while let Some(&(key, generation)) = records.order.front() {
            let current = records.entries.get(&key);
            let stale = current.is_none_or(|entry| entry.generation != generation);
            let drop = stale
                || records.entries.len() > MAX_ENTRIES
                || current.is_some_and(|entry| now.duration_since(entry.recorded) >= RETENTION);
            if !drop {
                break;
            }
            records.order.pop_front();
            if !stale {
                records.entries.remove(&key);
            }
        }
        // One client refused again and again leaves a leftover pair per refusal; rebuild the
        // order when they outnumber the records, so it stays within twice the records.
        if records.order.len() > 2 * records.entries.len().max(16) {
            let mut live: Vec<(ClientKey, u64)> = records
                .entries
                .iter()
                .map(|(key, entry)| (*key, entry.generation))
                .collect();
            live.sort_unstable_by_key(|&(_, generation)| generation);
            records.order = live.into();
        }
    }

    /// The last rejection of `client`, if one happened within [`RETENTION`] of `now`.
    pub(crate) fn get(&self, client: ClientKey, now: Instant) -> Option<LastRejection> {
        let records = self.lock();
        let entry = records.entries.get(&client)?;
        if now.duration_since(entry.recorded) >= RETENTION {
            return None;
        }
        let retry_after = entry.retry_after.map(|after| {
            let left = after.saturating_sub(now.saturating_duration_since(entry.recorded));
            left.as_secs()
                .saturating_add(u64::from(left.subsec_nanos() > 0))
        });
        Some(LastRejection {
            reason: entry.reason.as_str(),
            status: entry.status,
            message: entry.message,
            retry_after,
            at: entry.at,
        })
    }

    /// How many clients have a record (expired ones included until the next sweep).
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no client has a record.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON body of `GET <path>/status` for `client`.
    pub(crate) fn status_body(&self, client: ClientKey, now: Instant) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            last_rejection: Option<LastRejection>,
        }
        let body = Body {
            last_rejection: self.get(client, now),
        };
        // Serializing plain fields and an encodable timestamp cannot fail; answer `null`
        // rather than panic if it ever did.
        serde_json::to_string(&body).unwrap_or_else(|_| r#"{"lastRejection":null}"#.to_string())
    }

    /// The answer to `GET <path>/status` for `client`.
    pub(crate) fn status_response(&self, client: ClientKey) -> Response {
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            self.status_body(client, now()),
        )
            .into_response()
    }
}

fn now() -> Instant {
    // tokio's clock, so that tests with a paused clock see consistent times.
    tokio::time::Instant::now().into_std()
}

/// The key a request is recorded under: its client IP as the rate limit computes it, or
/// `None` ("unknown") without `ConnectInfo`.
pub(crate) fn client_key(request: &Request, trusted: &TrustedProxies) -> ClientKey {
    peer_addr(request.extensions()).map(|peer| client_ip(peer.ip(), request.headers(), trusted))
}

/// Records every rejection (a response with the [`Rejected`] extension) the wrapped route
/// answers into a [`RejectionLog`], under the requesting client's key.
#[derive(Debug, Clone)]
pub(crate) struct RecordRejectionsLayer {
    log: RejectionLog,
    trusted: TrustedProxies,
}

impl RecordRejectionsLayer {
    /// Records into `log`, keying clients as the rate limit does with `trusted` proxies.
    pub(crate) fn new(log: RejectionLog, trusted: TrustedProxies) -> Self {
        RecordRejectionsLayer { log, trusted }
    }
}

impl<S> Layer<S> for RecordRejectionsLayer {
    type Service = RecordRejections<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordRejections {
            inner,
            log: self.log.clone(),
            trusted: self.trusted.clone(),
        }
    }
}

/// The service of [`RecordRejectionsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RecordRejections<S> {
    inner: S,
    log: RejectionLog,
    trusted: TrustedProxies,
}

impl<S> Service<Request> for RecordRejections<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let client = client_key(&request, &self.trusted);
        RecordFuture {
            inner: self.inner.call(request),
            log: self.log.clone(),
            client,
        }
    }
}

pin_project! {
    /// Response future of [`RecordRejections`].
    pub(crate) struct RecordFuture<F> {
        #[pin]
        inner: F,
        log: RejectionLog,
        client: ClientKey,
    }
}

impl<F, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(retry_after_secs)
                    .map(Duration::from_secs);
                let message = response
                    .extensions()
                    .get::<RejectionMessage>()
                    .map(|RejectionMessage(message)| *message);
                this.log.record(
                    *this.client,
                    *reason,
                    message,
                    response.status(),
                    retry_after,
                    now(),
                );
            }
        }
        Poll::Ready(result)
    }
}

/// `Retry-After` as delay-seconds (RFC 9110 §10.2.3); the HTTP-date form is not used here.
fn retry_after_secs(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    // Test code: unwrap() on values the test itself built.
    use super::*;

    fn ip(n: u32) -> ClientKey {
        Some(IpAddr::from(n.to_be_bytes()))
    }

    #[test]
    fn a_client_sees_its_own_record_only_and_retry_after_counts_down() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        log.record(
            ip(1),
            RejectReason::RateLimited,
            None,
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(12)),
            t0,
        );
        let own = log.get(ip(1), t0).unwrap();
        assert_eq!(own.reason, "rate_limited");
        assert_eq!(own.status, 429);
        assert_eq!(own.message, "too many connection attempts");
        assert_eq!(own.retry_after, Some(12));
        assert_eq!(log.get(ip(2), t0), None);
        assert_eq!(log.get(None, t0), None);
        let later = log.get(ip(1), t0 + Duration::from_millis(4500)).unwrap();
        assert_eq!(later.retry_after, Some(8), "rounded up");
        let past = log.get(ip(1), t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(past.retry_after, Some(0));
    }

    #[test]
    fn a_new_rejection_replaces_the_previous_one() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        log.record(
            ip(1),
            RejectReason::RateLimited,
            None,
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(5)),
            t0,
        );
        log.record(
            ip(1),
            RejectReason::Origin,
            None,
            StatusCode::FORBIDDEN,
            None,
            t0,
        );
        let last = log.get(ip(1), t0).unwrap();
        assert_eq!(
            (last.reason, last.status, last.retry_after),
            ("origin", 403, None)
        );
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn records_expire_after_the_retention() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        log.record(
            None,
            RejectReason::Stopped,
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            t0,
        );
        assert!(
            log.get(None, t0 + RETENTION - Duration::from_millis(1))
                .is_some()
        );
        assert_eq!(log.get(None, t0 + RETENTION), None, "expired on read");
        assert_eq!(log.sweep(t0 + RETENTION - Duration::from_millis(1)), 1);
        assert_eq!(log.sweep(t0 + RETENTION), 0, "swept");
        assert!(log.is_empty());
        // A later record sweeps the expired ones of other clients too.
        log.record(
            ip(1),
            RejectReason::Origin,
            None,
            StatusCode::FORBIDDEN,
            None,
            t0,
        );
        log.record(
            ip(2),
            RejectReason::Origin,
            None,
            StatusCode::FORBIDDEN,
            None,
            t0 + RETENTION + Duration::from_secs(1),
        );
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn at_most_max_entries_clients_oldest_dropped_first() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        for n in 0..(MAX_ENTRIES as u32 + 100) {
            log.record(
                ip(n),
                RejectReason::Origin,
                None,
                StatusCode::FORBIDDEN,
                None,
                t0,
            );
        }
        assert_eq!(log.len(), MAX_ENTRIES);
        assert_eq!(log.get(ip(0), t0), None, "oldest dropped");
        assert_eq!(log.get(ip(99), t0), None);
        assert!(log.get(ip(100), t0).is_some());
        assert!(log.get(ip(MAX_ENTRIES as u32 + 99), t0).is_some());
    }

    #[test]
    fn one_client_refused_many_times_keeps_the_order_bounded() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            let at = t0 + Duration::from_micros(i);
            log.record(
                ip(7),
                RejectReason::RateLimited,
                None,
                StatusCode::TOO_MANY_REQUESTS,
                None,
                at,
            );
        }
        let records = log.lock();
        assert_eq!(records.entries.len(), 1);
        assert!(
            records.order.len() <= 33,
            "order grew to {}",
            records.order.len()
        );
    }

    #[test]
    fn refreshed_client_is_not_dropped_by_its_older_leftover() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        log.record(
            ip(1),
            RejectReason::Origin,
            None,
            StatusCode::FORBIDDEN,
            None,
            t0,
        );
        let t1 = t0 + Duration::from_secs(50);
        log.record(
            ip(1),
            RejectReason::Origin,
            None,
            StatusCode::FORBIDDEN,
            None,
            t1,
        );
        // The first record's pair has expired, but the entry is the refreshed one.
        assert_eq!(log.sweep(t0 + RETENTION + Duration::from_secs(1)), 1);
        assert!(
            log.get(ip(1), t0 + RETENTION + Duration::from_secs(1))
                .is_some()
        );
        assert_eq!(log.sweep(t1 + RETENTION), 0);
    }

    #[test]
    fn status_body_shapes() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        assert_eq!(log.status_body(ip(1), t0), r#"{"lastRejection":null}"#);
        log.record(
            ip(1),
            RejectReason::Origin,
            None,
            StatusCode::FORBIDDEN,
            None,
            t0,
        );
        let body: serde_json::Value = serde_json::from_str(&log.status_body(ip(1), t0)).unwrap();
        let last = &body["lastRejection"];
        assert_eq!(last["reason"], "origin");
        assert_eq!(last["status"], 403);
        assert_eq!(last["message"], "this page's origin is not allowed");
        assert_eq!(last["retryAfter"], serde_json::Value::Null);
        let at = last["at"].as_str().unwrap();
        assert!(Timestamp::parse(at).is_ok(), "{at}");
    }

    #[test]
    fn the_longest_retry_after_counts_down_from_u64_max_seconds() {
        let log = RejectionLog::new();
        let t0 = Instant::now();
        let longest = Duration::from_secs(u64::MAX);
        log.record(
            ip(1),
            RejectReason::RateLimited,
            None,
            StatusCode::TOO_MANY_REQUESTS,
            Some(longest),
            t0,
        );
        assert_eq!(log.get(ip(1), t0).unwrap().retry_after, Some(u64::MAX));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            log.get(ip(1), later).unwrap().retry_after,
            Some(u64::MAX - 10)
        );
    }
}
