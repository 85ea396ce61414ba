//! [`WsLayer`]: the builder users configure, and the axum [`Router`] it returns.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::request::Parts;
use tungstenite::protocol::WebSocketConfig;

use crate::admission::auth::{Anonymous, Identity, reject_unauthorized};
use crate::admission::cap::ConnectionCap;
use crate::admission::client_ip::{TrustedProxies, peer_addr};
use crate::admission::origin::{CheckOriginLayer, OriginPolicy};
use crate::admission::rate_limit::{MissingClientAddr, RateLimit, RateLimitLayer, SkipHook};
use crate::admission::stopped::StoppedLayer;
use crate::admission::token::{percent_decode, query_param};
use crate::admission::{InvalidSetting, RejectReason, Rejected};
use crate::conn::{ClientInfo, ConnConfig, Connection};
use crate::hub::{
    Hub, LagPolicy, MAX_REPLAY_WINDOW, MAX_REPLAY_WINDOW_BYTES, MAX_SEND_BUFFER, Position,
};
use crate::sink::SnapshotSource;
use crate::status::{self, RecordRejectionsLayer, RejectionLog};
use crate::upgrade::{Handshake, HandshakeError, Negotiated, Protocols};
use crate::wire::Timestamp;

/// Default ping interval, as in Go's `wsapi`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Default per-client queue length, as in Go's `wsapi`.
pub const DEFAULT_SEND_BUFFER: usize = 64;
/// Default bound on one write, as in Go's `wsapi`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on an inbound message: clients have nothing to say but pongs and closes.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024;

/// Longest accepted [`WsLayer::heartbeat`] (one day); longer values are clamped to it, which
/// in practice disables nothing but keeps the timer arithmetic far from `Instant`'s range.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest accepted [`WsLayer::write_timeout`] (one day); longer values are clamped to it.
pub const MAX_WRITE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest accepted [`WsLayer::max_message_size`] (64 MiB, tungstenite's own default);
/// larger values are clamped to it, so no client can make a connection buffer more.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = 64 << 20;

/// Initial read buffer of a connection, in bytes. See `WsLayer::router`.
const INBOUND_READ_BUFFER: usize = 512;

/// Builds the WebSocket endpoint: configure it, take its [`Hub`] to publish into, and merge its
/// [`Router`] into your app.
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use agentwatch_ws::{Hub, RateLimit, SessionStore, WsLayer};
/// use axum::Router;
///
/// let store = SessionStore::new();
/// let ws = WsLayer::new(store.clone())          // any SnapshotSource
///     .heartbeat(Duration::from_secs(30))       // ping interval; None disables
///     .send_buffer(NonZeroUsize::new(64).unwrap()) // per-client queue
///     .write_timeout(Duration::from_secs(10))
///     .max_connections(NonZeroUsize::new(100))  // None: no cap (the default)
///     .rate_limit(RateLimit::per_minute(12).burst(4));
/// let hub: Hub = ws.hub();                      // Clone; impl EventSink
/// let app: Router = Router::new().merge(ws.router("/ws"));
/// ```
///
/// The type parameter `A` is the authentication extractor chosen with [`auth`](WsLayer::auth)
/// ([`Anonymous`] by default).
///
/// Configure everything before calling [`router`](WsLayer::router): each router freezes the
/// settings it was built with, and the fan-out channel is sized by the first router built.
///
/// # Out-of-range settings
/// No setting panics, whatever its value. Each has a documented range; a value above it is
/// clamped to the maximum (and logged at `warn`): [`MAX_SEND_BUFFER`], [`MAX_HEARTBEAT`],
/// [`MAX_WRITE_TIMEOUT`], [`MAX_MESSAGE_SIZE_LIMIT`],
/// [`MAX_REPLAY_WINDOW`](crate::MAX_REPLAY_WINDOW),
/// [`MAX_REPLAY_WINDOW_BYTES`](crate::MAX_REPLAY_WINDOW_BYTES); `max_connections` is clamped to
/// tokio's `Semaphore::MAX_PERMITS`; the rate limit saturates its arithmetic (a huge window
/// means one upgrade per IP for the process's life, with a huge `Retry-After`).
pub struct WsLayer<A = Anonymous> {
    hub: Hub,
    source: Arc<dyn SnapshotSource>,
    heartbeat: Option<Duration>,
    send_buffer: usize,
    write_timeout: Duration,
    max_message_size: usize,
    origins: OriginPolicy,
    max_connections: Option<NonZeroUsize>,
    rate_limit: RateLimit,
    missing_client_addr: MissingClientAddr,
    trusted_proxies: TrustedProxies,
    lag_policy: LagPolicy,
    protocols: Protocols,
    _auth: PhantomData<fn() -> A>,
}

impl<A> std::fmt::Debug for WsLayer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsLayer")
            .field("heartbeat", &self.heartbeat)
            .field("send_buffer", &self.send_buffer)
            .field("write_timeout", &self.write_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("max_connections", &self.max_connections)
            .field("rate_limit", &self.rate_limit)
            .field("missing_client_addr", &self.missing_client_addr)
            .field("protocols", &self.protocols)
            .field("auth", &std::any::type_name::<A>())
            .finish_non_exhaustive()
    }
}

impl WsLayer<Anonymous> {
    /// A new endpoint whose clients get their snapshot from `source` (usually a
    /// [`SessionStore`](crate::SessionStore)), with Go's defaults: heartbeat 30 s, send buffer
    /// 64, write timeout 10 s, per-IP rate limit 12 per minute with a burst of 4, no connection
    /// cap, the default origin policy and no authentication.
    pub fn new(source: impl SnapshotSource) -> Self {
        WsLayer {
            hub: Hub::new(),
            source: Arc::new(source),
            heartbeat: Some(DEFAULT_HEARTBEAT),
            send_buffer: DEFAULT_SEND_BUFFER,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            origins: OriginPolicy::default(),
            max_connections: None,
            rate_limit: RateLimit::default(),
            missing_client_addr: MissingClientAddr::default(),
            trusted_proxies: TrustedProxies::default(),
            lag_policy: LagPolicy::default(),
            protocols: Protocols::default(),
            _auth: PhantomData,
        }
    }
}

impl<A> WsLayer<A> {
    /// The hub to publish events into. All calls return handles to the same hub.
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// The ping interval: `heartbeat(Duration::from_secs(30))`, or `heartbeat(None)` for no
    /// pings and no liveness check. A client that answers none of our pings for two intervals
    /// is dropped: only a pong echoing one of our pings counts (each carries a payload the
    /// client cannot guess), not its own pings, messages or unsolicited pongs. Default 30 s; from 1 ns (`Duration::ZERO` is raised to it, with a
    /// warning) to [`MAX_HEARTBEAT`] (longer values are clamped).
    pub fn heartbeat(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.heartbeat = interval.into().map(|interval| {
            let interval = raised("heartbeat", interval, Duration::from_nanos(1));
            clamped("heartbeat", interval, MAX_HEARTBEAT)
        });
        self
    }

    /// How many events a client may fall behind before it is evicted (closed with 1013), or
    /// resynced under [`LagPolicy::Resync`]. Default 64; at most [`MAX_SEND_BUFFER`] (larger
    /// values are clamped).
    pub fn send_buffer(mut self, events: NonZeroUsize) -> Self {
        self.send_buffer = clamped("send_buffer", events.get(), MAX_SEND_BUFFER);
        self
    }

    /// How long the socket may go without accepting a single byte of a pending write before
    /// the client is evicted. Progress counts in bytes: a slow reader whose socket keeps
    /// taking bytes is never evicted by this timeout (the lag policy bounds how far behind it
    /// may fall).
    /// Default 10 s; from 1 ns (`Duration::ZERO` is raised to it, with a warning: every write
    /// that does not complete at once evicts) to [`MAX_WRITE_TIMEOUT`] (longer values are
    /// clamped).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        let timeout = raised("write_timeout", timeout, Duration::from_nanos(1));
        self.write_timeout = clamped("write_timeout", timeout, MAX_WRITE_TIMEOUT);
        self
    }

    /// The largest message (and frame) a client may send, in bytes; a larger one closes the
    /// connection with 1009. Default 4 KiB; at most [`MAX_MESSAGE_SIZE_LIMIT`] (larger values
    /// are clamped).
    pub fn max_message_size(mut self, bytes: NonZeroUsize) -> Self {
        self.max_message_size = clamped("max_message_size", bytes.get(), MAX_MESSAGE_SIZE_LIMIT);
        self
    }

    /// Only pages on these origins may connect; see
    /// [`admission::origin`](crate::admission::origin) for the exact rules. With an empty list
    /// (the default), loopback origins and same-origin requests to a loopback host or one of
    /// [`allowed_hosts`](WsLayer::allowed_hosts) are allowed. A refused request gets
    /// `403 Forbidden`.
    ///
    /// A request **without** `Origin` is admitted whatever the list: browsers always send
    /// `Origin`, so a client that omits it is not a browser, and cross-site WebSocket
    /// hijacking is an attack through a victim's browser; a non-browser client could send any
    /// `Origin` it likes anyway. [`require_origin(true)`](WsLayer::require_origin) refuses
    /// such requests.
    ///
    /// # Errors
    /// [`InvalidSetting`] for the first entry that is empty, `*` (not a wildcard), `null`, or
    /// not a `scheme://host[:port]`; nothing is changed then.
    pub fn allowed_origins<I>(mut self, origins: I) -> Result<Self, InvalidSetting>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let hosts: Vec<String> = self.origins.allowed_hosts().map(String::from).collect();
        self.origins = OriginPolicy::new(origins)?
            .with_allowed_hosts(hosts)?
            .require_origin(self.origins.requires_origin());
        Ok(self)
    }

    /// Host names (or `host:port`, or IP addresses) this server answers to besides loopback
    /// ones, trusted for same-origin requests under the default origin policy (no
    /// [`allowed_origins`](WsLayer::allowed_origins)). Empty by default: a page served from
    /// `http://dash.example.com` is refused (`403`) until `dash.example.com` is listed here,
    /// because a same-origin request to a name the server does not know is what DNS rebinding
    /// looks like (a foreign page whose name was re-pointed at this server). See
    /// [`OriginPolicy::with_allowed_hosts`](crate::admission::origin::OriginPolicy::with_allowed_hosts).
    ///
    /// # Errors
    /// [`InvalidSetting`] for the first entry that is not a `host[:port]`; nothing is changed
    /// then.
    pub fn allowed_hosts<I>(mut self, hosts: I) -> Result<Self, InvalidSetting>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.origins = self.origins.with_allowed_hosts(hosts)?;
        Ok(self)
    }

    /// Whether a request without an `Origin` header is refused: `false` (the default) admits
    /// it whatever [`allowed_origins`](WsLayer::allowed_origins) says; `true` answers it
    /// `403 Forbidden` with [`RejectReason::OriginMissing`] (shown at `<path>/status` as
    /// "the request has no Origin header, and this server requires one"). Turn it on when
    /// every legitimate client is a browser; CLIs, scripts and server-side clients send no
    /// `Origin`.
    pub fn require_origin(mut self, require: bool) -> Self {
        self.origins = self.origins.require_origin(require);
        self
    }

    /// How many of the latest events the hub keeps for clients that reconnect with
    /// `?since=<seq>`; 0 disables resuming (every connect gets a snapshot). Default 1 024; at
    /// most [`MAX_REPLAY_WINDOW`](crate::MAX_REPLAY_WINDOW) (larger values are clamped).
    /// See [`replay_window_bytes`](WsLayer::replay_window_bytes) for the byte bound.
    ///
    /// # The resume contract
    /// `since=N` means "I have applied every event up to and including seq N". When the
    /// window still holds every event after N, the client gets exactly those events, in
    /// order, then the live stream — and **no snapshot**. Otherwise (N older than the window,
    /// ahead of the newest seq, or not a number) it gets a `snapshot` first, as on a fresh
    /// connect. So a client needs one rule: a `snapshot` replaces its state; anything else
    /// applies on top. Without `since`, nothing changes from Go's behaviour. The
    /// `Last-Event-ID` header is honoured the same way when the query has no `since`.
    ///
    /// Seqs say nothing about which server produced them, so a client should also send
    /// `&since_at=<the "at" of that last event, exactly as received>` (URL-encoded). The pair
    /// names one event: the hub resumes the client only if its window holds event `since`
    /// with that very `at` (an identity check, never a comparison of clocks). A position from
    /// a restarted producer — even one whose seqs have passed the client's, whatever either
    /// clock says — gets a fresh snapshot; so does a `since_at` that is not a timestamp. The
    /// `at` of a `snapshot` is the `at` of the last event it reflects (see
    /// [`Snapshot::at`](crate::Snapshot::at)), so a client can resume from a snapshot it just
    /// got. Several nodes serving the same events (same seq and at, e.g. behind a broker)
    /// accept each other's positions.
    ///
    /// `snapshot_at`, which earlier versions compared with the hub's start time, is retired:
    /// sent without `since_at`, it makes the position unverifiable and the client gets a
    /// snapshot.
    pub fn replay_window(self, events: usize) -> Self {
        let events = clamped("replay_window", events, MAX_REPLAY_WINDOW);
        let (_, bytes) = self.hub.replay_limits();
        self.hub.set_replay_limits(events, bytes);
        self
    }

    /// The bound on the bytes of encoded events kept in the replay window; 0 disables
    /// resuming. Default 8 MiB; at most
    /// [`MAX_REPLAY_WINDOW_BYTES`](crate::MAX_REPLAY_WINDOW_BYTES) (larger values are clamped).
    /// The oldest events leave the window first.
    pub fn replay_window_bytes(self, bytes: usize) -> Self {
        let bytes = clamped("replay_window_bytes", bytes, MAX_REPLAY_WINDOW_BYTES);
        let (events, _) = self.hub.replay_limits();
        self.hub.set_replay_limits(events, bytes);
        self
    }

    /// What to do with a client that falls `send_buffer` events behind: close it with 1013
    /// ([`LagPolicy::Disconnect`], the default) or replace its backlog with a fresh snapshot
    /// ([`LagPolicy::Resync`]). Either way no event is skipped without the client being told.
    pub fn on_lag(mut self, policy: LagPolicy) -> Self {
        self.lag_policy = policy;
        self
    }

    /// At most `n` clients at once: `max_connections(NonZeroUsize::new(100))`, or
    /// `max_connections(None)` for no cap (the default). Checked before the upgrade: over the
    /// cap the answer is `503` with `Retry-After`, and no socket is upgraded. Values above
    /// tokio's `Semaphore::MAX_PERMITS` (`usize::MAX >> 3`) are clamped to it.
    pub fn max_connections(mut self, n: impl Into<Option<NonZeroUsize>>) -> Self {
        self.max_connections = n.into();
        self
    }

    /// The per-client-IP limit on upgrades: `.rate_limit(RateLimit::per_minute(12).burst(4))`
    /// (the default, Go's), or `.rate_limit(RateLimit::disabled())`. See [`RateLimit`]. Over the limit the answer is `429`
    /// with `Retry-After` (whole seconds, rounded up). Every value is accepted: the limiter's
    /// time arithmetic saturates, so `Duration::MAX` means "`burst` upgrades per IP, ever".
    ///
    /// The client IP comes from axum's `ConnectInfo<SocketAddr>`: serve the app with
    /// [`serve`](crate::serve()) (which provides it) or, under `axum::serve`, with
    /// `into_make_service_with_connect_info::<SocketAddr>()`. Under plain
    /// `axum::serve(listener, app)` there is no client address: clients are still served, but
    /// without the per-IP limit, a `warn` is logged once per router and every such upgrade is
    /// counted in [`HubStats::rate_limit_skipped`](crate::HubStats::rate_limit_skipped). See
    /// [`on_missing_client_addr`](WsLayer::on_missing_client_addr) to refuse them instead.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = limit;
        self
    }

    /// What the rate limit does with an upgrade that carries no client address (no
    /// `ConnectInfo<SocketAddr>`): [`MissingClientAddr::Skip`] (the default) serves it without
    /// the limit, warns once and counts it; [`MissingClientAddr::Reject`] answers `500` with
    /// [`RejectReason::MissingConnectInfo`], for deployments where an unlimited endpoint is
    /// worse than an unavailable one. Irrelevant when the rate limit is disabled.
    pub fn on_missing_client_addr(mut self, policy: MissingClientAddr) -> Self {
        self.missing_client_addr = policy;
        self
    }

    /// Proxies whose `Forwarded`, `X-Forwarded-For` and `X-Real-IP` headers are believed when
    /// computing the client IP for the rate limit. Empty by default: the headers are ignored.
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The subprotocols this endpoint speaks, in order of preference (RFC 6455 §1.9), as
    /// axum's `WebSocketUpgrade::protocols`: the first of them the client offers in
    /// `Sec-WebSocket-Protocol` is chosen and echoed in the `101`. Replaces the default list,
    /// [`[PROTOCOL]`](crate::PROTOCOL) (`agentwatch.v1`): include it to keep speaking it. Every
    /// protocol carries the same wire format; a name is a contract with your clients.
    ///
    /// A client that offers no protocol is served without one. A client that offers only
    /// protocols not in this list gets `400` (RFC 6455 §4.2.2 would allow a `101` without the
    /// header, but browsers and tungstenite then fail the connection themselves, with
    /// nothing for the server to log or count; a `400` is counted as
    /// [`RejectReason::NotUpgrade`] and readable at `<path>/status`). The chosen protocol is in the request extensions as
    /// a [`Subprotocol`](crate::Subprotocol) before the authentication extractor runs.
    ///
    /// # Errors
    /// [`InvalidSetting`] for the first entry that is empty, not an HTTP token, or a token
    /// carrier (`agentwatch.token.…`, which must never be echoed).
    pub fn protocols<I>(mut self, protocols: I) -> Result<Self, InvalidSetting>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.protocols = Protocols::new(protocols)?;
        Ok(self)
    }

    /// Authenticates upgrade requests with the axum extractor `B`
    /// (`B: FromRequestParts<S> + Into<Identity>`, checked when the router is built): it runs
    /// after the rate limit and the origin check and before the connection cap and the
    /// upgrade; its rejection is the response, unchanged (counted as
    /// [`RejectReason::Unauthorized`]); the [`Identity`] it converts into is attached to the
    /// connection and its tracing span. The default is [`Anonymous`]: no authentication.
    /// [`BearerToken`](crate::admission::token::BearerToken) and
    /// [`tokens_from_cookie`](crate::admission::token::tokens_from_cookie) read the token
    /// from where browsers can put one; see [`admission::token`](crate::admission::token)
    /// for an extractor built on them.
    pub fn auth<B>(self) -> WsLayer<B> {
        WsLayer {
            hub: self.hub,
            source: self.source,
            heartbeat: self.heartbeat,
            send_buffer: self.send_buffer,
            write_timeout: self.write_timeout,
            max_message_size: self.max_message_size,
            origins: self.origins,
            max_connections: self.max_connections,
            rate_limit: self.rate_limit,
            missing_client_addr: self.missing_client_addr,
            trusted_proxies: self.trusted_proxies,
            lag_policy: self.lag_policy,
            protocols: self.protocols,
            _auth: PhantomData,
        }
    }

    /// The router serving the WebSocket endpoint at `path`, for an app with any state `S`.
    /// Merge it into your app; stack more tower layers on it if you like.
    ///
    /// The admission checks run in this order: stopped (503) → rate limit (429) → origin (403)
    /// → authentication → connection cap (503) → upgrade.
    ///
    /// The router also answers `GET <path>/status` (e.g. `/ws/status`), outside every check:
    /// the caller's own last refusal, for pages that cannot read a refused handshake's
    /// status: a JSON object `{"lastRejection": null}` or `{"lastRejection": {"reason",
    /// "status", "message", "retryAfter", "at"}}`, described in
    /// [`admission`](crate::admission).
    pub fn router<S>(&self, path: &str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
        A: FromRequestParts<S> + Into<Identity> + Send + 'static,
        A::Rejection: Send,
    {
        self.hub.init_channel(self.send_buffer);
        let endpoint = Arc::new(Endpoint {
            hub: self.hub.clone(),
            source: self.source.clone(),
            config: Arc::new(ConnConfig {
                heartbeat: self.heartbeat,
                send_buffer: self.send_buffer,
                write_timeout: self.write_timeout,
                lag_policy: self.lag_policy,
            }),
            protocol: WebSocketConfig::default()
                .max_message_size(Some(self.max_message_size))
                .max_frame_size(Some(self.max_message_size))
                // Clients only ever send pongs and closes: a small read buffer (tungstenite
                // zero-fills all of it on the first read) keeps idle connections lean; a rare
                // larger message grows it on demand, up to max_message_size.
                .read_buffer_size(INBOUND_READ_BUFFER.min(self.max_message_size)),
            cap: ConnectionCap::new(self.max_connections.map_or(0, NonZeroUsize::get)),
        });
        // Negotiated comes before the auth extractor, which may read the chosen Subprotocol.
        let handler = move |peer: PeerAddr,
                            since: ResumeFrom,
                            negotiated: Negotiated,
                            auth: Result<A, A::Rejection>,
                            handshake: Handshake| {
            let endpoint = endpoint.clone();
            async move { endpoint.admit(peer.0, since, negotiated, auth, handshake) }
        };

        // route_layer: applied to this route only, so unknown paths still fall through to
        // the app's own fallback. The last layer added runs first.
        let mut router = Router::new()
            // GET: the HTTP/1.1 upgrade; CONNECT: the HTTP/2 extended CONNECT (RFC 8441).
            .route(path, get(handler.clone()).connect(handler))
            .route_layer(axum::Extension(self.protocols.clone()));
        router = router.route_layer(CheckOriginLayer::new(self.origins.clone()));
        if self.rate_limit.is_enabled() {
            let hub = self.hub.clone();
            let counted = SkipHook(Arc::new(move || hub.counters().record_rate_limit_skip()));
            router = router.route_layer(
                RateLimitLayer::new(self.rate_limit, self.trusted_proxies.clone())
                    .on_missing_client_addr(self.missing_client_addr)
                    .on_skip(counted),
            );
        }
        router = router.route_layer(StoppedLayer::new(self.hub.stop_flag()));
        let hub = self.hub.clone();
        let rejections = RejectionLog::new();
        let trusted = self.trusted_proxies.clone();
        router
            .route_layer(tower::util::MapResponseLayer::new(
                move |response: Response| {
                    if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
                        hub.counters().record_rejection(*reason);
                    }
                    response
                },
            ))
            .route_layer(RecordRejectionsLayer::new(
                rejections.clone(),
                trusted.clone(),
            ))
            // Added after the route layers, so no admission check stands in its way.
            .route(
                &format!("{}/status", path.trim_end_matches('/')),
                get(move |request: axum::extract::Request| async move {
                    rejections.status_response(status::client_key(&request, &trusted))
                }),
            )
    }
}

/// `value`, or `min` (with a warning) when it is smaller.
fn raised<T: PartialOrd + std::fmt::Debug>(setting: &'static str, value: T, min: T) -> T {
    if value < min {
        tracing::warn!(setting, requested = ?value, min = ?min, "setting below its minimum: raised");
        min
    } else {
        value
    }
}

/// `value`, or `max` (with a warning) when it is larger: the rule for every bounded setting.
fn clamped<T: PartialOrd + std::fmt::Debug>(setting: &'static str, value: T, max: T) -> T {
    if value > max {
        tracing::warn!(setting, requested = ?value, max = ?max, "setting above its maximum: clamped");
        max
    } else {
        value
    }
}

/// What the handler needs, shared by every request to one router.
struct Endpoint {
    hub: Hub,
    source: Arc<dyn SnapshotSource>,
    config: Arc<ConnConfig>,
    /// How tungstenite reads what clients send.
    protocol: WebSocketConfig,
    cap: ConnectionCap,
}

impl Endpoint {
    /// The checks that need the app state (authentication) or must come after it
    /// (the connection cap), then the upgrade.
    fn admit<A, R>(
        &self,
        peer: Option<SocketAddr>,
        resume: ResumeFrom,
        negotiated: Negotiated,
        auth: Result<A, R>,
        handshake: Handshake,
    ) -> Response
    where
        A: Into<Identity>,
        R: IntoResponse,
    {
        let peer_field = peer.map(tracing::field::display);
        let identity: Identity = match auth {
            Ok(extracted) => extracted.into(),
            Err(rejection) => return reject_unauthorized(rejection, peer),
        };
        let permit = match self.cap.acquire_or_reject(peer) {
            Ok(permit) => permit,
            Err(response) => return response,
        };
        let (handle, subprotocol) = match handshake.0.and_then(|handle| {
            negotiated
                .0
                .map(|protocol| (handle, protocol))
                .map_err(|()| HandshakeError::Protocol)
        }) {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(
                    peer = peer_field,
                    reason = RejectReason::NotUpgrade.as_str(),
                    error = error.as_str(),
                    "upgrade rejected"
                );
                return error.into_response();
            }
        };
        // The offered list is never logged: it may carry a token.
        tracing::debug!(
            peer = peer_field,
            identity = %identity,
            protocol = subprotocol.as_ref().map(tracing::field::display),
            "websocket upgrade accepted"
        );
        let client = ClientInfo {
            peer,
            identity,
            since: resume.position(),
        };
        // Counted as a connection task from here, before the 101: see `Hub::closed`.
        let connection = Connection::new(
            self.hub.clone(),
            self.source.clone(),
            self.config.clone(),
            client,
            Some(permit),
        );
        handle.accept(
            subprotocol.as_ref(),
            self.protocol,
            move |error| tracing::warn!(peer = peer_field, %error, "websocket upgrade failed"),
            {
                let hub = self.hub.clone();
                move || {
                    tracing::debug!(
                        peer = peer.map(tracing::field::display),
                        "http/2 stream still held at the end: reset"
                    );
                    hub.counters().record_stream_reset();
                }
            },
            move |socket| connection.serve(socket),
        )
    }
}

/// Where a reconnecting client says it left off: `?since=<seq>` (else a `Last-Event-ID`
/// header) and `&since_at=<the "at" of that event, as received>`. Anything malformed counts as
/// absent: the client then gets a snapshot, never an error.
struct ResumeFrom {
    since: Option<u64>,
    /// `None`: not sent. `Some(None)`: sent but not a timestamp.
    since_at: Option<Option<Timestamp>>,
    /// Whether the retired `snapshot_at` parameter was sent.
    snapshot_at: bool,
}

impl ResumeFrom {
    /// The position to resume from, if any is claimed and checkable:
    /// - `since` with a valid `since_at`: the hub checks that it holds that very event;
    /// - `since` alone (Go clients, `Last-Event-ID`): trusted by seq, as before;
    /// - `since` with a `since_at` that is not a timestamp: none (snapshot);
    /// - `since` with the retired `snapshot_at` and no `since_at`: none (snapshot). It used to
    ///   be compared with the hub's start time, which trusted wall clocks; a client sending it
    ///   asked for restart safety, and the only safe answer without an event identity is a
    ///   snapshot.
    fn position(&self) -> Option<Position> {
        let seq = self.since?;
        match self.since_at {
            Some(Some(at)) => Some(Position { seq, at: Some(at) }),
            Some(None) => None,
            None if self.snapshot_at => None,
            None => Some(Position { seq, at: None }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ResumeFrom {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let param = |name: &str| query_param(parts, name);
        let raw_since = match param("since") {
            Some(value) => Some(value),
            None => parts
                .headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok()),
        };
        let since_at = param("since_at")
            .map(|raw| percent_decode(raw).and_then(|text| Timestamp::parse(&text).ok()));
        Ok(ResumeFrom {
            since: raw_since.and_then(parse_seq),
            since_at,
            snapshot_at: param("snapshot_at").is_some(),
        })
    }
}

/// A seq as clients write it: decimal digits only (no sign, no spaces), fitting a u64.
fn parse_seq(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// The peer address from axum's `ConnectInfo`, when the app was served with it.
struct PeerAddr(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(PeerAddr(peer_addr(&parts.extensions)))
    }
}
