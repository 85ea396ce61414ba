//! Per-client-IP rate limiting of upgrade requests.
//!
//! [`RateLimitPolicy`] keeps the Go semantics: at most `limit` upgrades per `window` per
//! client, with `burst` allowed at once from a fresh client (a token bucket of capacity
//! `burst` refilled at `limit / window`); default 12 per minute, burst 4. Unlike the Go
//! original, the client is identified with [`client_ip`] (forwarding headers count only from
//! [`TrustedProxies`]), and `429 Too Many Requests` carries `Retry-After`.
//!
//! # Design
//!
//! The bucket is implemented as GCRA (the "virtual scheduling" form of a token bucket): each
//! key stores one *theoretical arrival time* (TAT). With emission interval `T = window / limit`
//! and tolerance `τ = T × (burst − 1)`, a request at `t` conforms iff `t ≥ TAT − τ`, and then
//! `TAT = max(TAT, t) + T`; otherwise the caller must wait exactly `TAT − τ − t`. A key whose
//! `TAT ≤ now` has a full bucket and is indistinguishable from an absent key, so it can be
//! dropped: that is what [`RateLimiter::sweep`] does.
//!
//! It is written by hand on [`dashmap`] rather than with the `governor` crate: the arithmetic
//! is a dozen lines; the core method takes `now` as a parameter, so tests drive it
//! deterministically without a clock type threaded through the limiter's type; `Retry-After`
//! needs the exact wait (which governor gives too, but through its own clock and `Quota`
//! types); it adds no dependency (dashmap is already one); and sweeping is under our control
//! (amortized, see below). Governor's keyed limiter would be the choice if we needed its
//! extras (jitter, `until_ready` waiting, many quota shapes), which we do not.
//!
//! # Memory
//!
//! Every check counts towards an amortized sweep: after at least `max(1024, live keys at the
//! last sweep)` checks, the next check sweeps every key whose bucket is full again. Sweeping is
//! `O(keys)` and happens at most once per that many checks, so its cost is `O(1)` per check
//! and the map holds at most about twice the keys seen in the last refill period
//! (`burst × window / limit`, 20 s by default). A flood of distinct addresses therefore costs
//! memory proportional to its rate, never unbounded growth. IPv6 clients are keyed by their
//! `/64` prefix by default (one subscriber usually owns a whole `/64`, so per-address keys
//! would let a single client rotate through 2⁶⁴ buckets); see
//! [`RateLimiter::with_ipv6_prefix`].
//!
//! # Example
//!
//! ```
//! use agentwatch_ws::admission::client_ip::TrustedProxies;
//! use agentwatch_ws::admission::rate_limit::{RateLimitPolicy, RateLimitLayer};
//! use axum::{Router, routing::get};
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! let app: Router = Router::new()
//!     .route("/ws", get(|| async { "upgrade here" }))
//!     .layer(RateLimitLayer::new(
//!         RateLimitPolicy::per_minute(12).burst(4),
//!         TrustedProxies::new(["127.0.0.1"])?,
//!     ));
//! // The client IP comes from `ConnectInfo`, so serve with:
//! let _make_service = app.into_make_service_with_connect_info::<SocketAddr>();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::response::Response;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use http::{Request, StatusCode};
use tower::{Layer, Service};

use super::ResponseFuture;
use super::cap::whole_seconds;
use super::client_ip::{NonIpPeer, TrustedProxies, client_ip, mask, peer_addr};
use super::{RejectReason, rejection};

/// Fewest checks between two automatic sweeps.
const SWEEP_MIN_INTERVAL: usize = 1024;

/// Default IPv6 prefix length used as the key (see [`RateLimiter::with_ipv6_prefix`]).
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// How many upgrades a client IP may make: a token bucket of `burst` tokens, one token back
/// every [`interval`](RateLimitPolicy::interval). The default, Go's, is 12 per minute with a
/// burst of 4. There is no "disabled" policy: pass `None` to
/// [`WsLayer::rate_limit`](crate::WsLayer::rate_limit) to switch the limit off.
///
/// Every number follows the crate's rule: zero is raised to 1 (with a `warn` tracing event),
/// nothing panics, and the limiter's time arithmetic saturates, so
/// `per(Duration::MAX)` means "`burst` upgrades per IP, ever".
///
/// ```
/// use agentwatch_ws::RateLimitPolicy;
/// use std::time::Duration;
///
/// let default = RateLimitPolicy::default();
/// assert_eq!(default, RateLimitPolicy::per_minute(12).burst(4));
/// assert_eq!((default.burst_size(), default.interval()), (4, Duration::from_secs(5)));
/// // One upgrade every 10 s, 3 at once:
/// let strict = RateLimitPolicy::per(Duration::from_secs(10)).burst(3);
/// assert_eq!(strict.interval(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimitPolicy {
    /// Sustained upgrades allowed per `window`; at least 1.
    limit: u32,
    /// Upgrades allowed at once from a client with a full bucket; at least 1.
    burst: u32,
    /// The period `limit` applies to; at least 1 ns.
    window: Duration,
}

impl Default for RateLimitPolicy {
    /// 12 per minute, burst 4 (the Go defaults).
    fn default() -> Self {
        Self {
            limit: 12,
            burst: 4,
            window: Duration::from_secs(60),
        }
    }
}

impl RateLimitPolicy {
    /// One upgrade every `interval`, with a burst of 1 (see [`burst`](RateLimitPolicy::burst)).
    ///
    /// From 1 ns (`Duration::ZERO` is raised to it, with a warning) to [`Duration::MAX`], with
    /// no lower maximum: `Duration::MAX` means "`burst` upgrades per IP, ever". The `429`'s
    /// `Retry-After` is the wait in whole seconds, rounded up and saturating at `u64::MAX`
    /// (what `per(Duration::MAX)` answers), and `<path>/status` counts the same number down.
    pub fn per(interval: Duration) -> Self {
        Self::new(1, 1, interval)
    }

    /// `limit` upgrades per minute, burst 1: `RateLimitPolicy::per_minute(12).burst(4)` is the
    /// default (Go's). 0 is raised to 1, with a warning.
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, 1, Duration::from_secs(60))
    }

    /// The same policy, allowing `burst` upgrades at once from a client with a full bucket.
    /// 0 is raised to 1, with a warning.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = at_least_one("rate_limit.burst", burst);
        self
    }

    /// `limit` per `window`, `burst` at once, each raised to its smallest value.
    pub(crate) fn new(limit: u32, burst: u32, window: Duration) -> Self {
        let window = if window.is_zero() {
            tracing::warn!(
                setting = "rate_limit.interval",
                requested = ?window,
                min = ?Duration::from_nanos(1),
                "setting below its minimum: raised"
            );
            Duration::from_nanos(1)
        } else {
            window
        };
        Self {
            limit: at_least_one("rate_limit.limit", limit),
            burst: at_least_one("rate_limit.burst", burst),
            window,
        }
    }

    /// Upgrades allowed at once from a client with a full bucket (at least 1).
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// Time for one token to come back (at least 1 ns).
    pub fn interval(&self) -> Duration {
        (self.window / self.limit).max(Duration::from_nanos(1))
    }
}

/// `value`, or 1 (with a warning) when it is 0.
fn at_least_one(setting: &'static str, value: u32) -> u32 {
    if value == 0 {
        tracing::warn!(
            setting,
            requested = value,
            min = 1,
            "setting below its minimum: raised"
        );
        1
    } else {
        value
    }
}

/// A keyed GCRA limiter over client IP addresses. Cheap to clone; clones share the buckets.
///
/// ```
/// use agentwatch_ws::admission::rate_limit::{RateLimitPolicy, RateLimiter};
/// use std::time::{Duration, Instant};
///
/// let limiter = RateLimiter::new(RateLimitPolicy::default()); // 12/min, burst 4
/// let t0 = Instant::now();
/// let ip = "192.0.2.1".parse()?;
/// for _ in 0..4 {
///     assert!(limiter.check(ip, t0).is_ok());
/// }
/// assert_eq!(limiter.check(ip, t0), Err(Duration::from_secs(5)));
/// assert!(limiter.check(ip, t0 + Duration::from_secs(5)).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    config: RateLimitPolicy,
    /// `T`: time per token.
    interval: Duration,
    /// `τ = T × (burst − 1)`.
    tolerance: Duration,
    ipv6_prefix: u8,
    /// Origin of the stored times.
    epoch: Instant,
    /// Theoretical arrival time per key, as an offset from `epoch`.
    buckets: DashMap<IpAddr, Duration>,
    checks: AtomicUsize,
    next_sweep: AtomicUsize,
    sweeping: AtomicBool,
    /// Whether a request without `ConnectInfo` was logged already.
    missing_connect_info_logged: AtomicBool,
}

impl RateLimiter {
    /// A limiter for `config`, keying IPv6 clients by their `/64`.
    pub fn new(config: RateLimitPolicy) -> Self {
        Self::with_ipv6_prefix(config, DEFAULT_IPV6_PREFIX)
    }

    /// A limiter keying IPv6 clients by their first `prefix_len` bits (clamped to 128; `128`
    /// gives one bucket per IPv6 address). IPv4 and IPv4-mapped clients are always keyed by
    /// the full IPv4 address.
    pub fn with_ipv6_prefix(config: RateLimitPolicy, prefix_len: u8) -> Self {
        let interval = config.interval();
        let tolerance = interval.saturating_mul(config.burst.saturating_sub(1));
        Self {
            inner: Arc::new(Inner {
                config,
                interval,
                tolerance,
                ipv6_prefix: prefix_len.min(128),
                // Tokio's clock (std's outside a paused test runtime), like the service's `now`.
                epoch: tokio::time::Instant::now().into_std(),
                buckets: DashMap::new(),
                checks: AtomicUsize::new(0),
                next_sweep: AtomicUsize::new(SWEEP_MIN_INTERVAL),
                sweeping: AtomicBool::new(false),
                missing_connect_info_logged: AtomicBool::new(false),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> RateLimitPolicy {
        self.inner.config
    }

    /// The bucket key for a client address: IPv4-mapped addresses as IPv4, IPv6 masked to the
    /// configured prefix.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            v6 @ IpAddr::V6(_) => mask(v6, self.inner.ipv6_prefix),
        }
    }

    /// Takes a token for `ip` at time `now`, or returns how long to wait until one is
    /// available. `now` earlier than the limiter's creation counts
    /// as its creation. [`PerIpRateLimit`] passes `tokio::time::Instant::now().into_std()`
    /// (which is `std::time::Instant::now()` except under a paused tokio test clock).
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let inner = &*self.inner;
        let t = now.saturating_duration_since(inner.epoch);
        let result = match inner.buckets.entry(self.key(ip)) {
            Entry::Occupied(mut entry) => {
                let tat = (*entry.get()).max(t);
                let allowed_at = tat.saturating_sub(inner.tolerance);
                if t < allowed_at {
                    Err(allowed_at - t)
                } else {
                    *entry.get_mut() = tat.saturating_add(inner.interval);
                    Ok(())
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(t.saturating_add(inner.interval));
                Ok(())
            }
        };
        // The entry guard is dropped here: sweeping takes shard locks.
        self.maybe_sweep(now);
        result
    }

    /// Removes every key whose bucket is full again at `now` (it behaves exactly like an
    /// absent key). Returns how many were removed.
    pub fn sweep(&self, now: Instant) -> usize {
        let t = now.saturating_duration_since(self.inner.epoch);
        let before = self.inner.buckets.len();
        self.inner.buckets.retain(|_, tat| *tat > t);
        before.saturating_sub(self.inner.buckets.len())
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.inner.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.inner.buckets.is_empty()
    }

    fn maybe_sweep(&self, now: Instant) {
        let inner = &*self.inner;
        let checks = inner.checks.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if checks < inner.next_sweep.load(Ordering::Relaxed) {
            return;
        }
        if inner
            .sweeping
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.sweep(now);
        let next = checks.saturating_add(inner.buckets.len().max(SWEEP_MIN_INTERVAL));
        inner.next_sweep.store(next, Ordering::Relaxed);
        inner.sweeping.store(false, Ordering::Release);
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.inner.config)
            .field("ipv6_prefix", &self.inner.ipv6_prefix)
            .field("keys", &self.len())
            .finish()
    }
}

/// What the rate limit does with a request that carries no client address: the app was
/// served without [`ConnectInfo<SocketAddr>`] (plain `axum::serve(listener, app)`, as axum's
/// own docs write it).
///
/// Lumping every such request into one bucket would let one client lock everybody out, so
/// the choice is between serving them unlimited and refusing them.
///
/// A peer that has no IP address at all (a Unix-domain socket served by
/// [`serve`](crate::serve())) is neither: the per-IP limit does not apply to it, and it is
/// admitted without a warning or a count under either policy.
///
/// [`ConnectInfo<SocketAddr>`]: axum::extract::ConnectInfo
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MissingClientAddr {
    /// Admit the request without rate-limiting it (the default). The first one is logged at
    /// `warn`, once per layer, naming `agentwatch_ws::serve` and
    /// `into_make_service_with_connect_info::<SocketAddr>()`; under
    /// [`WsLayer`](crate::WsLayer) each one is counted in
    /// [`HubStats::rate_limit_skipped`](crate::HubStats::rate_limit_skipped).
    #[default]
    Skip,
    /// Refuse the request with `500` and [`RejectReason::MissingConnectInfo`] (the first one
    /// logged at `error`, once per layer): for deployments where an unlimited endpoint is
    /// worse than an unavailable one.
    Reject,
}

/// Rate-limits requests per client IP: `429` + `Retry-After` with
/// [`RejectReason::RateLimited`] over the limit.
///
/// The client IP is [`client_ip`] of the peer in the [`ConnectInfo<SocketAddr>`] request
/// extension. A request without it (the server was not started with
/// `into_make_service_with_connect_info::<SocketAddr>()`) is handled as
/// [`MissingClientAddr`] says: by default admitted without a limit, with a warning logged
/// once.
///
/// [`ConnectInfo<SocketAddr>`]: axum::extract::ConnectInfo
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    trusted: TrustedProxies,
    missing_client_addr: MissingClientAddr,
    on_skip: Option<SkipHook>,
}

/// Called for every request admitted without a limit for want of a client address.
#[derive(Clone)]
pub(crate) struct SkipHook(pub(crate) Arc<dyn Fn() + Send + Sync>);

impl fmt::Debug for SkipHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SkipHook")
    }
}

impl RateLimitLayer {
    /// A layer with a new [`RateLimiter`] for `rate_limit`, believing forwarding headers from
    /// `trusted_proxies` only.
    pub fn new(rate_limit: RateLimitPolicy, trusted_proxies: TrustedProxies) -> Self {
        Self::from_limiter(RateLimiter::new(rate_limit), trusted_proxies)
    }

    /// A layer sharing an existing limiter (to configure its IPv6 keying, inspect it, or share
    /// buckets between routes).
    pub fn from_limiter(limiter: RateLimiter, trusted_proxies: TrustedProxies) -> Self {
        Self {
            limiter,
            trusted: trusted_proxies,
            missing_client_addr: MissingClientAddr::default(),
            on_skip: None,
        }
    }

    /// What to do with a request that has no client address (default
    /// [`MissingClientAddr::Skip`]).
    #[must_use]
    pub fn on_missing_client_addr(mut self, policy: MissingClientAddr) -> Self {
        self.missing_client_addr = policy;
        self
    }

    /// Runs `hook` for each request admitted unlimited for want of a client address.
    pub(crate) fn on_skip(mut self, hook: SkipHook) -> Self {
        self.on_skip = Some(hook);
        self
    }

    /// The limiter in use.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = PerIpRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PerIpRateLimit {
            inner,
            limiter: self.limiter.clone(),
            trusted: self.trusted.clone(),
            missing_client_addr: self.missing_client_addr,
            on_skip: self.on_skip.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct PerIpRateLimit<S> {
    inner: S,
    limiter: RateLimiter,
    trusted: TrustedProxies,
    missing_client_addr: MissingClientAddr,
    on_skip: Option<SkipHook>,
}

impl<S> PerIpRateLimit<S> {
    /// Wraps `inner` with `limiter`, believing forwarding headers from `trusted_proxies` only;
    /// requests without a client address are admitted unlimited ([`MissingClientAddr::Skip`]).
    pub fn new(inner: S, limiter: RateLimiter, trusted_proxies: TrustedProxies) -> Self {
        Self {
            inner,
            limiter,
            trusted: trusted_proxies,
            missing_client_addr: MissingClientAddr::default(),
            on_skip: None,
        }
    }

    /// The limiter in use.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S> PerIpRateLimit<S> {
    /// A request without `ConnectInfo`: admitted unlimited ([`MissingClientAddr::Skip`]) or
    /// answered `500` ([`MissingClientAddr::Reject`]). Either way the first one is logged,
    /// once per limiter (so once per router), and every one is counted by the hook.
    fn without_client_addr<B>(&mut self, req: Request<B>) -> ResponseFuture<S::Future>
    where
        S: Service<Request<B>, Response = Response>,
    {
        let first = !self
            .limiter
            .inner
            .missing_connect_info_logged
            .swap(true, Ordering::Relaxed);
        match self.missing_client_addr {
            MissingClientAddr::Skip => {
                if first {
                    tracing::warn!(
                        counter = "rate_limit_skipped",
                        "an upgrade request has no client address, so the per-IP rate limit \
                         is skipped for it (and for every later one like it; counted in \
                         HubStats::rate_limit_skipped): serve the app with \
                         `agentwatch_ws::serve(listener, app)`, or with \
                         `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`"
                    );
                }
                if let Some(hook) = &self.on_skip {
                    (hook.0)();
                }
                ResponseFuture::inner(self.inner.call(req))
            }
            MissingClientAddr::Reject => {
                if first {
                    tracing::error!(
                        reason = %RejectReason::MissingConnectInfo,
                        "rate limiting needs the peer address: serve the router with \
                         `agentwatch_ws::serve(listener, app)` or \
                         `into_make_service_with_connect_info::<SocketAddr>()`; \
                         answering 500 to every upgrade until then"
                    );
                }
                ResponseFuture::rejected(rejection(
                    RejectReason::MissingConnectInfo,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server misconfigured: serve with into_make_service_with_connect_info::<SocketAddr>()\n",
                    None,
                ))
            }
        }
    }
}

impl<S, B> Service<Request<B>> for PerIpRateLimit<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(peer) = peer_addr(req.extensions()) else {
            if req.extensions().get::<NonIpPeer>().is_some() {
                // A Unix-domain socket peer under `serve`: no IP to limit, nothing missing.
                return ResponseFuture::inner(self.inner.call(req));
            }
            return self.without_client_addr(req);
        };
        let client = client_ip(peer.ip(), req.headers(), &self.trusted);
        let now = tokio::time::Instant::now().into_std();
        match self.limiter.check(client, now) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(wait) => {
                let retry_after = whole_seconds(wait);
                tracing::warn!(
                    peer = %peer,
                    client_ip = %client,
                    reason = %RejectReason::RateLimited,
                    retry_after_secs = retry_after,
                    "rejected WebSocket upgrade: rate limited"
                );
                ResponseFuture::rejected(rejection(
                    RejectReason::RateLimited,
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connection attempts\n",
                    Some(retry_after),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;
    use crate::admission::Rejected;
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use http::header;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use tokio::time::timeout;
    use tower::ServiceExt;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn setup(config: RateLimitPolicy) -> (RateLimiter, Instant) {
        let limiter = RateLimiter::new(config);
        (limiter, Instant::now())
    }

    #[test]
    fn config_defaults_and_the_smallest_values() {
        let d = RateLimitPolicy::default();
        assert_eq!(d, RateLimitPolicy::new(12, 4, secs(60)));
        assert_eq!(d.interval(), secs(5));
        assert_eq!(d.burst_size(), 4);
        // Zeros are raised to the smallest meaningful value, never "off".
        assert_eq!(
            RateLimitPolicy::new(0, 0, Duration::ZERO),
            RateLimitPolicy::new(1, 1, Duration::from_nanos(1))
        );
        assert_eq!(
            RateLimitPolicy::per_minute(0).burst(0),
            RateLimitPolicy::per_minute(1)
        );
        assert_eq!(
            RateLimitPolicy::per(Duration::ZERO).interval(),
            Duration::from_nanos(1)
        );
        assert_eq!(
            RateLimitPolicy::per(secs(10)),
            RateLimitPolicy::new(1, 1, secs(10))
        );
    }

    #[test]
    fn burst_then_reject_with_exact_wait() {
        let (l, t0) = setup(RateLimitPolicy::default());
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            assert_eq!(l.check(a, t0), Ok(()));
        }
        assert_eq!(l.check(a, t0), Err(secs(5)));
        assert_eq!(l.check(a, t0 + secs(2)), Err(secs(3)));
        assert_eq!(
            l.check(a, t0 + Duration::from_millis(4999)),
            Err(Duration::from_millis(1))
        );
    }

    #[test]
    fn refill_after_the_computed_wait() {
        let (l, t0) = setup(RateLimitPolicy::default());
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            l.check(a, t0).unwrap();
        }
        let wait = l.check(a, t0).unwrap_err();
        assert_eq!(l.check(a, t0 + wait), Ok(()));
        assert_eq!(
            l.check(a, t0 + wait),
            Err(secs(5)),
            "one token per 5 s after the burst"
        );
        assert_eq!(l.check(a, t0 + secs(10)), Ok(()));
        // Sustained rate: exactly 12 per minute once the burst is spent.
        let mut allowed = 0;
        for s in 11..=70 {
            if l.check(a, t0 + secs(s)).is_ok() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 12);
        // After a long idle period, the full burst is back (and no more).
        let later = t0 + secs(3600);
        for _ in 0..4 {
            assert_eq!(l.check(a, later), Ok(()));
        }
        assert!(l.check(a, later).is_err());
    }

    #[test]
    fn partial_refill() {
        let (l, t0) = setup(RateLimitPolicy::default());
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            l.check(a, t0).unwrap();
        }
        // 10 s later two tokens are back.
        assert_eq!(l.check(a, t0 + secs(10)), Ok(()));
        assert_eq!(l.check(a, t0 + secs(10)), Ok(()));
        assert_eq!(l.check(a, t0 + secs(10)), Err(secs(5)));
    }

    #[test]
    fn burst_of_one_and_large_burst() {
        let (l, t0) = setup(RateLimitPolicy::new(1, 1, secs(10)));
        let a = ip("192.0.2.1");
        assert_eq!(l.check(a, t0), Ok(()));
        assert_eq!(l.check(a, t0), Err(secs(10)));
        let (l, t0) = setup(RateLimitPolicy::new(60, 100, secs(60)));
        for _ in 0..100 {
            assert_eq!(l.check(a, t0), Ok(()));
        }
        assert_eq!(l.check(a, t0), Err(secs(1)));
    }

    #[test]
    fn independent_buckets_per_ip() {
        let (l, t0) = setup(RateLimitPolicy::default());
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..4 {
            l.check(a, t0).unwrap();
        }
        assert!(l.check(a, t0).is_err());
        for _ in 0..4 {
            assert_eq!(l.check(b, t0), Ok(()));
        }
        assert!(l.check(b, t0).is_err());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn mapped_ipv4_shares_the_ipv4_bucket() {
        let (l, t0) = setup(RateLimitPolicy::new(1, 1, secs(60)));
        l.check(ip("192.0.2.1"), t0).unwrap();
        assert!(l.check(ip("::ffff:192.0.2.1"), t0).is_err());
    }

    #[test]
    fn ipv6_keyed_by_prefix() {
        let (l, t0) = setup(RateLimitPolicy::new(1, 1, secs(60)));
        l.check(ip("2001:db8:1:2::1"), t0).unwrap();
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), t0).is_err(), "same /64");
        assert!(l.check(ip("2001:db8:1:3::1"), t0).is_ok(), "other /64");
        assert_eq!(l.key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));

        let per_address = RateLimiter::with_ipv6_prefix(RateLimitPolicy::new(1, 1, secs(60)), 200);
        let t0 = Instant::now();
        per_address.check(ip("2001:db8:1:2::1"), t0).unwrap();
        assert!(per_address.check(ip("2001:db8:1:2::2"), t0).is_ok());
        assert!(per_address.check(ip("2001:db8:1:2::1"), t0).is_err());
    }

    #[test]
    fn sweep_removes_only_full_buckets() {
        let (l, t0) = setup(RateLimitPolicy::default());
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        l.check(a, t0).unwrap(); // full again at t0 + 5 s
        for _ in 0..4 {
            l.check(b, t0).unwrap(); // full again at t0 + 20 s
        }
        assert_eq!(l.sweep(t0 + secs(4)), 0);
        assert_eq!(l.sweep(t0 + secs(5)), 1);
        assert_eq!(l.len(), 1);
        assert!(
            l.check(b, t0 + secs(5)).is_ok(),
            "b's state survived the sweep"
        );
        assert_eq!(l.sweep(t0 + secs(25)), 1);
        assert!(l.is_empty());
        // A swept key behaves like a fresh one.
        for _ in 0..4 {
            assert_eq!(l.check(b, t0 + secs(25)), Ok(()));
        }
        assert!(l.check(b, t0 + secs(25)).is_err());
    }

    fn nth_ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn hundred_thousand_keys_then_sweep() {
        let (l, t0) = setup(RateLimitPolicy::default());
        for i in 0..100_000 {
            l.check(nth_ip(i), t0).unwrap();
        }
        // Amortized sweeps ran but nothing was idle yet.
        assert_eq!(l.len(), 100_000);
        assert_eq!(l.sweep(t0 + secs(1)), 0);
        assert_eq!(l.sweep(t0 + secs(5)), 100_000);
        assert!(l.is_empty());
    }

    #[test]
    fn flood_of_distinct_keys_stays_bounded_without_manual_sweeps() {
        let (l, t0) = setup(RateLimitPolicy::default());
        // Ten waves of 100 000 new addresses, each a minute apart: old waves are full again.
        for wave in 0..10u32 {
            let now = t0 + secs(60 * u64::from(wave));
            for i in 0..100_000 {
                l.check(nth_ip(wave * 100_000 + i), now).unwrap();
            }
            assert!(
                l.len() <= 2 * 100_000 + SWEEP_MIN_INTERVAL,
                "wave {wave}: {} keys",
                l.len()
            );
        }
    }

    #[test]
    fn retry_after_rounding() {
        assert_eq!(whole_seconds(secs(5)), 5);
        assert_eq!(whole_seconds(Duration::from_millis(5001)), 6);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::MAX), u64::MAX);
        // 7 per minute: 8.571428571 s per token, sent as 9.
        let (l, t0) = setup(RateLimitPolicy::new(7, 1, secs(60)));
        l.check(ip("192.0.2.1"), t0).unwrap();
        let wait = l.check(ip("192.0.2.1"), t0).unwrap_err();
        assert_eq!(wait, secs(60) / 7);
        assert_eq!(whole_seconds(wait), 9);
    }

    #[test]
    fn times_before_creation_and_huge_windows_do_not_panic() {
        let before = Instant::now();
        let l = RateLimiter::new(RateLimitPolicy::new(1, u32::MAX, Duration::MAX));
        let a = ip("192.0.2.1");
        assert!(l.check(a, before).is_ok());
        assert!(l.check(a, before + Duration::from_secs(1)).is_ok());
        let l = RateLimiter::new(RateLimitPolicy::new(u32::MAX, 1, Duration::from_nanos(1)));
        assert!(l.check(a, before).is_ok());
        assert_eq!(
            l.check(a, before),
            Err(Duration::from_nanos(1)),
            "a sub-nanosecond interval is raised to 1 ns"
        );
    }

    // ---- the layer ----

    fn app(config: RateLimitPolicy, trusted: TrustedProxies) -> (Router, RateLimiter) {
        app_with(config, trusted, MissingClientAddr::Skip)
    }

    fn app_with(
        config: RateLimitPolicy,
        trusted: TrustedProxies,
        missing: MissingClientAddr,
    ) -> (Router, RateLimiter) {
        let layer = RateLimitLayer::new(config, trusted).on_missing_client_addr(missing);
        let limiter = layer.limiter().clone();
        let router = Router::new()
            .route("/ws", get(|| async { "ok" }))
            .layer(layer);
        (router, limiter)
    }

    fn req(peer: &str, xff: Option<&str>) -> Request<Body> {
        let mut builder = Request::get("/ws");
        if let Some(xff) = xff {
            builder = builder.header("x-forwarded-for", xff);
        }
        let mut req = builder.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    }

    async fn status(app: &Router, req: Request<Body>) -> Response {
        timeout(TIMEOUT, app.clone().oneshot(req))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn layer_429_with_retry_after() {
        let (app, _) = app(RateLimitPolicy::default(), TrustedProxies::default());
        for _ in 0..4 {
            assert_eq!(
                status(&app, req("192.0.2.1:1000", None)).await.status(),
                StatusCode::OK
            );
        }
        let res = status(&app, req("192.0.2.1:1001", None)).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = res.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&retry), "{retry}");
        assert_eq!(
            res.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::RateLimited))
        );
        let body = to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"too many connection attempts\n");
        // Another client is unaffected.
        assert_eq!(
            status(&app, req("192.0.2.2:1000", None)).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test(start_paused = true)]
    async fn layer_uses_tokio_time_so_paused_clocks_refill() {
        let (app, _) = app(
            RateLimitPolicy::new(1, 1, secs(10)),
            TrustedProxies::default(),
        );
        assert_eq!(
            status(&app, req("192.0.2.1:1", None)).await.status(),
            StatusCode::OK
        );
        let res = status(&app, req("192.0.2.1:1", None)).await;
        assert_eq!(res.headers()[header::RETRY_AFTER], "10");
        tokio::time::advance(secs(10)).await;
        assert_eq!(
            status(&app, req("192.0.2.1:1", None)).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn spoofed_xff_from_untrusted_peer_does_not_change_the_key() {
        let (app, limiter) = app(
            RateLimitPolicy::new(12, 2, secs(60)),
            TrustedProxies::new(["10.0.0.0/8"]).unwrap(),
        );
        for i in 0..2 {
            let spoof = format!("203.0.113.{i}");
            let res = status(&app, req("198.51.100.9:1", Some(&spoof))).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
        let res = status(&app, req("198.51.100.9:1", Some("203.0.113.99"))).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limiter.len(), 1);
    }

    #[tokio::test]
    async fn trusted_proxy_headers_are_honoured() {
        let (app, limiter) = app(
            RateLimitPolicy::new(12, 1, secs(60)),
            TrustedProxies::new(["10.0.0.0/8"]).unwrap(),
        );
        assert_eq!(
            status(&app, req("10.0.0.2:1", Some("203.0.113.1")))
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            status(&app, req("10.0.0.2:1", Some("203.0.113.2")))
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            status(&app, req("10.0.0.3:1", Some("6.6.6.6, 203.0.113.1")))
                .await
                .status(),
            StatusCode::TOO_MANY_REQUESTS,
            "203.0.113.1 again, through another proxy, with a spoofed prefix"
        );
        assert_eq!(limiter.len(), 2);
    }

    #[tokio::test]
    async fn non_ascii_forwarding_header_does_not_panic() {
        let (app, _) = app(
            RateLimitPolicy::default(),
            TrustedProxies::new(["10.0.0.0/8"]).unwrap(),
        );
        let mut r = req("10.0.0.2:1", None);
        r.headers_mut().insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff\xfe, 1.2.3.4").unwrap(),
        );
        assert_eq!(status(&app, r).await.status(), StatusCode::OK);
    }

    /// A `MakeWriter` collecting log output.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[tokio::test]
    async fn missing_connect_info_is_500_and_logged_once() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let (app, limiter) = app_with(
            RateLimitPolicy::default(),
            TrustedProxies::default(),
            MissingClientAddr::Reject,
        );
        for _ in 0..3 {
            let r = Request::get("/ws").body(Body::empty()).unwrap();
            let res = status(&app, r).await;
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(
                res.extensions().get::<Rejected>(),
                Some(&Rejected(RejectReason::MissingConnectInfo))
            );
            let body = to_bytes(res.into_body(), 1024).await.unwrap();
            assert!(
                std::str::from_utf8(&body)
                    .unwrap()
                    .contains("into_make_service_with_connect_info::<SocketAddr>()")
            );
        }
        assert!(limiter.is_empty(), "never one shared bucket");
        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logs.matches("ERROR").count(), 1, "{logs}");
        assert!(logs.contains("into_make_service_with_connect_info"));
    }

    #[tokio::test]
    async fn missing_connect_info_is_admitted_unlimited_and_warned_once_by_default() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let skipped = Arc::new(AtomicUsize::new(0));
        let counter = skipped.clone();
        let layer = RateLimitLayer::new(
            RateLimitPolicy::new(1, 1, secs(60)),
            TrustedProxies::default(),
        )
        .on_skip(SkipHook(Arc::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        })));
        let limiter = layer.limiter().clone();
        let app = Router::new()
            .route("/ws", get(|| async { "ok" }))
            .layer(layer);
        // Far more than the limit (1): without an address nothing is limited.
        for _ in 0..5 {
            let r = Request::get("/ws").body(Body::empty()).unwrap();
            let res = status(&app, r).await;
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.extensions().get::<Rejected>(), None);
        }
        assert_eq!(skipped.load(Ordering::Relaxed), 5);
        assert!(limiter.is_empty(), "never one shared bucket");
        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
        assert!(logs.contains("agentwatch_ws::serve"), "{logs}");
        assert!(
            logs.contains("into_make_service_with_connect_info"),
            "{logs}"
        );
    }

    #[tokio::test]
    async fn rejection_is_logged_with_peer_and_reason() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let (app, _) = app(
            RateLimitPolicy::new(1, 1, secs(60)),
            TrustedProxies::default(),
        );
        status(&app, req("192.0.2.77:4242", None)).await;
        status(&app, req("192.0.2.77:4242", None)).await;
        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("peer=192.0.2.77:4242"), "{logs}");
        assert!(logs.contains("reason=rate_limited"), "{logs}");
    }
}
