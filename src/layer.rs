//! [`WsLayer`]: the endpoint's configuration, and [`build`](WsLayer::build), which returns the
//! axum [`Router`] and the [`Publisher`] that feeds it.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::request::Parts;
use tokio::sync::Semaphore;
use tungstenite::protocol::WebSocketConfig;

use crate::admission::auth::{Anonymous, Identity, reject_unauthorized};
use crate::admission::cap::ConnectionCap;
use crate::admission::client_ip::{TrustedProxies, peer_addr};
use crate::admission::origin::{CheckOriginLayer, OriginPolicy};
use crate::admission::rate_limit::{MissingClientAddr, RateLimitLayer, RateLimitPolicy, SkipHook};
use crate::admission::stopped::StoppedLayer;
use crate::admission::token::{percent_decode, query_param};
use crate::admission::{InvalidSetting, RejectReason, Rejected};
use crate::conn::{ClientInfo, ConnConfig, Connection};
use crate::hub::{
    DEFAULT_REPLAY_WINDOW, DEFAULT_REPLAY_WINDOW_BYTES, Hub, LagPolicy, MAX_REPLAY_WINDOW,
    MAX_REPLAY_WINDOW_BYTES, MAX_SEND_BUFFER, Position,
};
use crate::privacy::{Chooser, Policy, Privacy, PseudonymKey};
use crate::publisher::Publisher;
use crate::sink::SnapshotSource;
use crate::status::{self, RecordRejectionsLayer, RejectionLog};
use crate::store::SessionStore;
use crate::upgrade::{Handshake, HandshakeError, Negotiated, Protocols};
use crate::wire::Timestamp;

/// Default ping interval, as in Go's `wsapi`.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Default per-client queue length, as in Go's `wsapi`.
const DEFAULT_SEND_BUFFER: usize = 64;
/// Default bound on one write, as in Go's `wsapi`.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on an inbound message: clients have nothing to say but pongs and closes.
const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024;

/// Shortest heartbeat and write timeout: 100 ms. A client has two heartbeat intervals to
/// answer a ping, and a write waits on the peer's ACKs: both take a network round trip plus
/// the client's own scheduling, so anything shorter only drops healthy clients.
const MIN_DURATION: Duration = Duration::from_millis(100);
/// Longest heartbeat and write timeout: one day, which keeps the timer arithmetic far from
/// `Instant`'s range.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Smallest `max_message_size`: 125 bytes, the largest control-frame payload (RFC 6455
/// §5.5), so a client can always answer a ping and close.
const MIN_MESSAGE_SIZE: usize = 125;
/// Largest `max_message_size`: 64 MiB, tungstenite's own default.
const MAX_MESSAGE_SIZE: usize = 64 << 20;
/// Smallest replay window in bytes: 64 KiB, room for a few events of a busy dashboard (a
/// smaller bound would hold next to nothing; switch resuming off with `replay_window(None)`).
const MIN_REPLAY_WINDOW_BYTES: usize = 64 * 1024;

/// Initial read buffer of a connection, in bytes. See `WsLayer::build`.
const INBOUND_READ_BUFFER: usize = 512;

/// Configuration for the WebSocket endpoint: plain settings until [`build`] returns the axum
/// `Router` and the [`Publisher`] that feeds it. It is not a `tower::Layer`.
///
/// ```
/// use std::time::Duration;
/// use agentwatch_ws::{Event, RateLimitPolicy, SessionState, WsLayer};
/// use axum::Router;
///
/// let (ws, publisher) = WsLayer::new()
///     .heartbeat(Duration::from_secs(30))       // ping interval; None: no pings
///     .send_buffer(64)                          // per-client queue, in events
///     .write_timeout(Duration::from_secs(10))
///     .max_connections(100)                     // None: no cap (the default)
///     .rate_limit(RateLimitPolicy::per_minute(12).burst(4)) // None: off
///     .build("/ws");
/// let app: Router = Router::new().merge(ws);
///
/// let session = SessionState { id: "a8d0e2f4".into(), source: "codex".into(), ..Default::default() };
/// assert_eq!(publisher.publish(Event::delta(0, vec![session], vec![]))?, 1);
/// # drop(app);
/// # Ok::<(), agentwatch_ws::SinkError>(())
/// ```
///
/// `WsLayer` is `Clone`, `Debug` and `Default` ([`WsLayer::new`]); nothing runs until
/// [`build`], which consumes it: the session store, the fan-out to the clients and every
/// capacity are created there, once, so no setting can change behind a built router. Build
/// twice for two independent endpoints.
///
/// The type parameter `A` is the authentication extractor chosen with [`auth`](WsLayer::auth)
/// ([`Anonymous`] by default).
///
/// # Numbers
/// One rule for every number setting, here and in [`serve`](crate::serve()), the
/// [`monitor`] and the [`broker`]: `None` switches a bound off
/// where off makes sense (`heartbeat`, `replay_window`, `max_connections`, `rate_limit`); a
/// number is a plain `usize`, `u32` or [`Duration`], never a `NonZero*`; a value below the
/// smallest meaningful one (zero, usually) is raised to it, and a value above the documented
/// maximum is lowered to it, each with a `warn` tracing event naming the setting. No setting
/// panics. Each method documents its default, its minimum and its maximum; at a glance:
///
/// | setting | default | range |
/// |---|---|---|
/// | [`heartbeat`](WsLayer::heartbeat) | 30 s | 100 ms – 1 day, or `None` (no pings) |
/// | [`send_buffer`](WsLayer::send_buffer) | 64 events | 1 – 65 536 |
/// | [`write_timeout`](WsLayer::write_timeout) | 10 s | 100 ms – 1 day |
/// | [`max_message_size`](WsLayer::max_message_size) | 4 KiB | 125 B – 64 MiB |
/// | [`replay_window`](WsLayer::replay_window) | 1 024 events | 1 – 1 048 576, or `None` (resuming off) |
/// | [`replay_window_bytes`](WsLayer::replay_window_bytes) | 8 MiB | 64 KiB – 1 GiB |
/// | [`max_connections`](WsLayer::max_connections) | `None` (no cap) | 1 – `usize::MAX >> 3` |
/// | [`rate_limit`](WsLayer::rate_limit) | 12 per minute, burst 4 (Go's) | a [`RateLimitPolicy`], or `None` (off) |
///
/// [`build`]: WsLayer::build
#[cfg_attr(feature = "monitor", doc = "[`monitor`]: crate::monitor")]
#[cfg_attr(
    not(feature = "monitor"),
    doc = "[`monitor`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/index.html"
)]
#[cfg_attr(
    any(feature = "redis", feature = "nats"),
    doc = "[`broker`]: crate::broker"
)]
#[cfg_attr(
    not(any(feature = "redis", feature = "nats")),
    doc = "[`broker`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/broker/index.html"
)]
pub struct WsLayer<A = Anonymous> {
    heartbeat: Option<Duration>,
    send_buffer: usize,
    write_timeout: Duration,
    max_message_size: usize,
    origins: OriginPolicy,
    max_connections: Option<usize>,
    rate_limit: Option<RateLimitPolicy>,
    missing_client_addr: MissingClientAddr,
    trusted_proxies: TrustedProxies,
    lag_policy: LagPolicy,
    protocols: Protocols,
    replay_window: Option<usize>,
    replay_window_bytes: usize,
    http_api: bool,
    policy: Policy,
    policy_for: Option<Chooser>,
    pseudonym_key: Option<PseudonymKey>,
    compression: bool,
    _auth: PhantomData<fn() -> A>,
}

impl<A> Clone for WsLayer<A> {
    fn clone(&self) -> Self {
        WsLayer {
            heartbeat: self.heartbeat,
            send_buffer: self.send_buffer,
            write_timeout: self.write_timeout,
            max_message_size: self.max_message_size,
            origins: self.origins.clone(),
            max_connections: self.max_connections,
            rate_limit: self.rate_limit,
            missing_client_addr: self.missing_client_addr,
            trusted_proxies: self.trusted_proxies.clone(),
            lag_policy: self.lag_policy,
            protocols: self.protocols.clone(),
            replay_window: self.replay_window,
            replay_window_bytes: self.replay_window_bytes,
            http_api: self.http_api,
            policy: self.policy.clone(),
            policy_for: self.policy_for.clone(),
            pseudonym_key: self.pseudonym_key.clone(),
            compression: self.compression,
            _auth: PhantomData,
        }
    }
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
            .field("lag_policy", &self.lag_policy)
            .field("replay_window", &self.replay_window)
            .field("replay_window_bytes", &self.replay_window_bytes)
            .field("http_api", &self.http_api)
            .field("policy", &self.policy)
            .field("policy_for", &self.policy_for.is_some())
            .field("compression", &self.compression)
            .field("protocols", &self.protocols)
            .field("auth", &std::any::type_name::<A>())
            .finish_non_exhaustive()
    }
}

impl Default for WsLayer<Anonymous> {
    fn default() -> Self {
        WsLayer {
            heartbeat: Some(DEFAULT_HEARTBEAT),
            send_buffer: DEFAULT_SEND_BUFFER,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            origins: OriginPolicy::default(),
            max_connections: None,
            rate_limit: Some(RateLimitPolicy::default()),
            missing_client_addr: MissingClientAddr::default(),
            trusted_proxies: TrustedProxies::default(),
            lag_policy: LagPolicy::default(),
            protocols: Protocols::default(),
            replay_window: Some(DEFAULT_REPLAY_WINDOW),
            replay_window_bytes: DEFAULT_REPLAY_WINDOW_BYTES,
            http_api: false,
            policy: Policy::none(),
            policy_for: None,
            pseudonym_key: None,
            compression: true,
            _auth: PhantomData,
        }
    }
}

impl WsLayer<Anonymous> {
    /// The configuration with Go's defaults: heartbeat 30 s, send buffer 64, write timeout
    /// 10 s, per-IP rate limit 12 per minute with a burst of 4; and a replay window of 1 024
    /// events (8 MiB), inbound messages up to 4 KiB, no connection cap, the default origin
    /// policy and no authentication. The same as [`WsLayer::default`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl<A> WsLayer<A> {
    /// The ping interval: `heartbeat(Duration::from_secs(30))`, or `heartbeat(None)` for no
    /// pings and no liveness check. A client that answers none of our pings for two intervals
    /// is dropped: only a pong echoing one of our pings counts (each carries a payload the
    /// client cannot guess), not its own pings, messages or unsolicited pongs.
    ///
    /// Default 30 s; from 100 ms (shorter values, `Duration::ZERO` included, are raised to
    /// it: a client must be able to answer within two intervals over a real network) to one
    /// day (longer values are lowered to it).
    pub fn heartbeat(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.heartbeat = interval
            .into()
            .map(|interval| bounded("heartbeat", interval, MIN_DURATION, MAX_DURATION));
        self
    }

    /// How many events a client may fall behind before it is evicted (closed with 1013), or
    /// resynced under [`LagPolicy::Resync`].
    ///
    /// Default 64; from 1 (0 is raised to it) to 65 536 (larger values are lowered to it: the
    /// fan-out channel allocates a slot per buffered event up front).
    pub fn send_buffer(mut self, events: usize) -> Self {
        self.send_buffer = bounded("send_buffer", events, 1, MAX_SEND_BUFFER);
        self
    }

    /// How long the socket may go without accepting a single byte of a pending write before
    /// the client is evicted. Progress counts in bytes: a slow reader whose socket keeps
    /// taking bytes is never evicted by this timeout (the lag policy bounds how far behind it
    /// may fall).
    ///
    /// Default 10 s; from 100 ms (shorter values, `Duration::ZERO` included, are raised to
    /// it: the kernel frees room in the socket only as the peer's ACKs come back, a round trip
    /// away) to one day (longer values are lowered to it).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = bounded("write_timeout", timeout, MIN_DURATION, MAX_DURATION);
        self
    }

    /// The largest message (and frame) a client may send, in bytes; a larger one closes the
    /// connection with 1009.
    ///
    /// Default 4 KiB; from 125 bytes (the largest control-frame payload, so a client can
    /// always answer a ping; smaller values are raised to it) to 64 MiB (larger values are
    /// lowered to it).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bounded(
            "max_message_size",
            bytes,
            MIN_MESSAGE_SIZE,
            MAX_MESSAGE_SIZE,
        );
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

    /// How many of the latest events are kept for clients that reconnect with
    /// `?since=<seq>`: `replay_window(1024)`, or `replay_window(None)` to switch resuming off
    /// (every connect gets a snapshot). See [`replay_window_bytes`](WsLayer::replay_window_bytes)
    /// for the byte bound.
    ///
    /// Default 1 024 events; from 1 (0 is raised to it) to 1 048 576 (larger values are
    /// lowered to it).
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
    /// names one event: the client is resumed only if the window holds event `since` with
    /// that very `at` (an identity check, never a comparison of clocks). A position from a
    /// restarted producer — even one whose seqs have passed the client's, whatever either
    /// clock says — gets a fresh snapshot; so does a `since_at` that is not a timestamp. The
    /// `at` of a `snapshot` is the `at` of the last event it reflects, so a client can resume
    /// from a snapshot it just got. Several nodes serving the same events (same seq and at,
    /// e.g. behind a broker) accept each other's positions.
    ///
    /// A `snapshot_at` parameter sent without `since_at` names no event, so the position
    /// cannot be verified: the client gets a snapshot.
    pub fn replay_window(mut self, events: impl Into<Option<usize>>) -> Self {
        self.replay_window = events
            .into()
            .map(|events| bounded("replay_window", events, 1, MAX_REPLAY_WINDOW));
        self
    }

    /// The bound on the bytes of encoded events kept in the replay window; the oldest events
    /// leave the window first. Irrelevant when resuming is off
    /// ([`replay_window(None)`](WsLayer::replay_window)). With [privacy
    /// policies](crate::privacy) an event also keeps its copy and one redacted encoding per
    /// distinct policy in use, so it counts its encoded size 2 + P times (P policies): the
    /// bound holds what redaction adds, and the window holds fewer events.
    ///
    /// Default 8 MiB; from 64 KiB (smaller values are raised to it) to 1 GiB (larger values
    /// are lowered to it).
    pub fn replay_window_bytes(mut self, bytes: usize) -> Self {
        self.replay_window_bytes = bounded(
            "replay_window_bytes",
            bytes,
            MIN_REPLAY_WINDOW_BYTES,
            MAX_REPLAY_WINDOW_BYTES,
        );
        self
    }

    /// What to do with a client that falls `send_buffer` events behind: close it with 1013
    /// ([`LagPolicy::Disconnect`], the default) or replace its backlog with a fresh snapshot
    /// ([`LagPolicy::Resync`]). Either way no event is skipped without the client being told.
    pub fn on_lag(mut self, policy: LagPolicy) -> Self {
        self.lag_policy = policy;
        self
    }

    /// At most `n` clients at once: `max_connections(100)`, or `max_connections(None)` for no
    /// cap (the default). Checked before the upgrade: over the cap the answer is `503` with
    /// `Retry-After`, and no socket is upgraded.
    ///
    /// From 1 (0 is raised to it) to tokio's `Semaphore::MAX_PERMITS` (`usize::MAX >> 3`;
    /// larger values are lowered to it).
    pub fn max_connections(mut self, n: impl Into<Option<usize>>) -> Self {
        self.max_connections = n
            .into()
            .map(|n| bounded("max_connections", n, 1, Semaphore::MAX_PERMITS));
        self
    }

    /// The per-client-IP limit on upgrades:
    /// `.rate_limit(RateLimitPolicy::per_minute(12).burst(4))` (the default, Go's), or
    /// `.rate_limit(None)` to switch it off. See [`RateLimitPolicy`]. Over the limit the answer
    /// is `429` with `Retry-After` (whole seconds, rounded up).
    ///
    /// The client IP comes from axum's `ConnectInfo<SocketAddr>`: serve the app with
    /// [`serve`](crate::serve()) (which provides it) or, under `axum::serve`, with
    /// `into_make_service_with_connect_info::<SocketAddr>()`. Under plain
    /// `axum::serve(listener, app)` there is no client address: clients are still served, but
    /// without the per-IP limit, a `warn` is logged once per router and every such upgrade is
    /// counted in [`HubStats::rate_limit_skipped`](crate::HubStats::rate_limit_skipped). See
    /// [`on_missing_client_addr`](WsLayer::on_missing_client_addr) to refuse them instead.
    pub fn rate_limit(mut self, policy: impl Into<Option<RateLimitPolicy>>) -> Self {
        self.rate_limit = policy.into();
        self
    }

    /// What the rate limit does with an upgrade that carries no client address (no
    /// `ConnectInfo<SocketAddr>`): [`MissingClientAddr::Skip`] (the default) serves it without
    /// the limit, warns once and counts it; [`MissingClientAddr::Reject`] answers `500` with
    /// [`RejectReason::MissingConnectInfo`], for deployments where an unlimited endpoint is
    /// worse than an unavailable one. Irrelevant when the rate limit is disabled.
    ///
    /// A peer without an IP address is neither: under [`serve`](crate::serve()) a
    /// Unix-domain socket peer is admitted under either policy, without a warning, and is not
    /// counted in [`HubStats::rate_limit_skipped`](crate::HubStats::rate_limit_skipped) (there
    /// is no IP to limit; whoever can open the socket file is trusted as far as the file's
    /// permissions say). `Reject` refuses only requests that should have had an address.
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
            replay_window: self.replay_window,
            replay_window_bytes: self.replay_window_bytes,
            http_api: self.http_api,
            policy: self.policy.clone(),
            policy_for: self.policy_for.clone(),
            pseudonym_key: self.pseudonym_key.clone(),
            compression: self.compression,
            _auth: PhantomData,
        }
    }

    /// Whether clients that offer permessage-deflate (RFC 7692) get compressed frames.
    /// Default: `true`, what browsers expect (they all offer it); a client that does not
    /// offer it (tokio-tungstenite, Go's gorilla/websocket by default, `websocat`) is served
    /// uncompressed either way.
    ///
    /// With it on, the `101` (or the RFC 8441 `200`) accepts the client's first offer the
    /// server can honour, always with `server_no_context_takeover`, so that each event and
    /// each snapshot is compressed once, by the first connection that sends it compressed,
    /// and that one frame serves every compressing client; a frame that compression does
    /// not shrink goes out uncompressed. What a client sends compressed is inflated up to
    /// [`max_message_size`](WsLayer::max_message_size): a message inflating past it closes
    /// the connection with 1009, as a larger uncompressed one does.
    ///
    /// The server takes the client's first `permessage-deflate` offer (in its order of
    /// preference) that carries only parameters RFC 7692 defines, each once and with a valid
    /// value, and no `server_max_window_bits` below 15 (the shared frames use a 32 KiB
    /// window). It answers `permessage-deflate; server_no_context_takeover`, adding
    /// `client_no_context_takeover` and `server_max_window_bits=15` when the offer carried
    /// them. An offer it cannot honour is declined (the connection goes on uncompressed),
    /// never refused.
    ///
    /// Compressing costs CPU once per event (whatever the number of clients) and about
    /// 300 KiB per runtime worker thread for the compressor; it saves bandwidth per client
    /// (a 1 000-session snapshot shrinks to a 28th, a 512-byte event to about half). A
    /// compressed frame lives as long as its plain one, beside it: the replay window
    /// ([`replay_window_bytes`](WsLayer::replay_window_bytes) counts the plain JSON) and the
    /// cached snapshot hold at most that much again. Turn it off (`false`) when the clients
    /// sit on the same host or behind a proxy that compresses.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Whether the router [`build`](WsLayer::build) returns also serves agentwatch's HTTP
    /// API at Go's paths, `/sessions`, `/sessions/{id}`, `/healthz` and `/sources` (routes,
    /// JSON shapes, `ETag` and status codes as on [`Publisher::http_api`]). Default: `false`.
    ///
    /// The routes sit behind the same admission as the WebSocket: the rate limit (`429`, a
    /// limiter of its own with the same [`RateLimitPolicy`], so polling does not use up the
    /// WebSocket's reconnect budget; a poller faster than the policy gets `429` with
    /// `Retry-After`), the origin and host policy (`403`) and the [`auth`](WsLayer::auth)
    /// extractor (its rejection returned unchanged). They are answered after
    /// [`Publisher::stop`] too (`/healthz` then with `503`, so a load balancer drains the
    /// node), and no connection cap applies. For an unchecked router (an
    /// internal listener, a prefix of your choosing) use [`Publisher::http_api`].
    ///
    /// ```text
    /// $ curl -s http://127.0.0.1:8080/sessions/a8d0e2f4
    /// {"id":"a8d0e2f4","source":"codex","activity":"","lifecycle":"",...}
    /// $ curl -s http://127.0.0.1:8080/healthz
    /// {"status":"degraded","sources":[{"source":"gemini","status":"degraded",...}]}
    /// ```
    ///
    /// # Panics
    /// [`Router::merge`] panics when the app already has a route at one of these paths.
    pub fn http_api(mut self, serve: bool) -> Self {
        self.http_api = serve;
        self
    }

    /// The [privacy policy](crate::privacy) of every viewer [`policy_for`](WsLayer::policy_for)
    /// does not choose one for: the fields redacted from everything they receive, over the
    /// WebSocket and the [HTTP API](WsLayer::http_api). Default: [`Policy::none`], every field
    /// visible (as Go's zero `Policy`).
    ///
    /// ```
    /// use agentwatch_ws::WsLayer;
    /// use agentwatch_ws::privacy::{Field, Policy};
    ///
    /// let (router, _publisher) = WsLayer::new()
    ///     .policy(Policy::none().redact(Field::WorkingDir).redact(Field::Branch))
    ///     .build::<()>("/ws");
    /// # drop(router);
    /// ```
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Chooses each viewer's [privacy policy](crate::privacy) from the [`Identity`] the
    /// [`auth`](WsLayer::auth) extractor returned (anonymous without one), once per WebSocket
    /// connection and per HTTP API request; `None` means [the default](WsLayer::policy).
    /// Called on a runtime worker during the upgrade: keep it quick (a lookup, not I/O). The
    /// [privacy module](crate::privacy#one-policy-per-viewer) shows a team's setup.
    pub fn policy_for<F>(mut self, choose: F) -> Self
    where
        F: Fn(&Identity) -> Option<Policy> + Send + Sync + 'static,
    {
        self.policy_for = Some(Arc::new(choose));
        self
    }

    /// The key session ids and source names are [pseudonymised](crate::privacy#pseudonyms-not-blanks)
    /// under, for policies without a key of their own. Default: 32 random bytes drawn when
    /// the router is built, so pseudonyms are stable for the server's life. Nodes serving
    /// the same clients (behind one load balancer, on one broker) must share it: a client that
    /// resumes on another node must meet the pseudonyms it already knows.
    pub fn pseudonym_key(mut self, key: PseudonymKey) -> Self {
        self.pseudonym_key = Some(key);
        self
    }

    /// Builds the endpoint: the axum [`Router`] serving WebSocket upgrades at `path` (merge it
    /// into your app, with any state `S`; stack more tower layers on it if you like) and the
    /// [`Publisher`] that feeds its clients. Consumes the configuration: the session store,
    /// the fan-out and every capacity are created here, once.
    ///
    /// The router answers `GET` (HTTP/1.1 upgrades) and `CONNECT` (HTTP/2 extended CONNECT,
    /// RFC 8441) at `path`. The admission checks run in this order: stopped (503) → rate limit
    /// (429) → origin (403) → authentication → connection cap (503) → upgrade. Any other
    /// path falls through to the app's own routes and fallback.
    ///
    /// # `<path>/status`
    /// The router also answers `GET <path>/status` (e.g. `/ws/status`), outside every
    /// check, for pages that cannot read a refused handshake's HTTP status (browsers only see
    /// a close with 1006). It returns the caller's own last refusal (keyed by client IP as the
    /// rate limit keys it; kept 60 s), as JSON, with `Cache-Control: no-store` and no CORS
    /// header:
    ///
    /// ```text
    /// {"lastRejection":null}
    /// {"lastRejection":{"reason":"rate_limited","status":429,"message":"too many connection attempts","retryAfter":12,"at":"2026-11-29T19:12:03.5Z"}}
    /// ```
    ///
    /// `reason` is [`RejectReason::as_str`]; `status` the HTTP status the upgrade got;
    /// `message` a short English sentence for people; `retryAfter` the whole seconds from now
    /// until that answer's `Retry-After` has passed (0 once it has; `null` when it carried
    /// none); `at` when it happened (RFC 3339, UTC).
    ///
    /// # Panics
    /// As axum's [`Router::route`] does, when `path` is not a route path axum accepts for
    /// both routes: empty, not starting with `/` (`"ws"`), or ending in a wildcard
    /// (`"/ws/*x"`, `"/ws/{*rest}"`: nothing may follow a catch-all, and `<path>/status`
    /// would). Merging the returned router into an app that already has a route at `path`
    /// or at `<path>/status` panics in axum's [`Router::merge`], as any overlapping route
    /// does. Both happen once, at startup, with the path given in code.
    pub fn build<S>(self, path: &str) -> (Router<S>, Publisher)
    where
        S: Clone + Send + Sync + 'static,
        A: FromRequestParts<S> + Into<Identity> + Send + 'static,
        A::Rejection: Send,
    {
        let store = SessionStore::new();
        let source: Arc<dyn SnapshotSource> = Arc::new(store.clone());
        self.build_with_source(path, store, source)
    }

    /// [`build`](WsLayer::build), with clients' snapshots taken from `source` rather than
    /// from the publisher's store: the crate's tests use it for sources without a version or
    /// an `at`.
    pub(crate) fn build_with_source<S>(
        self,
        path: &str,
        store: SessionStore,
        source: Arc<dyn SnapshotSource>,
    ) -> (Router<S>, Publisher)
    where
        S: Clone + Send + Sync + 'static,
        A: FromRequestParts<S> + Into<Identity> + Send + 'static,
        A::Rejection: Send,
    {
        let privacy = Arc::new(Privacy::new(
            self.policy.clone(),
            self.policy_for.clone(),
            self.pseudonym_key.clone().unwrap_or_else(server_key),
        ));
        // Off is a window of 0: every connect gets a snapshot.
        let hub = Hub::new(
            self.send_buffer,
            self.replay_window.unwrap_or(0),
            self.replay_window_bytes,
            privacy,
        );
        let publisher = Publisher::new(store, hub.clone());
        let endpoint = Arc::new(Endpoint {
            hub: hub.clone(),
            source,
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
            compression: self.compression,
            // ConnectionCap counts 0 as "no cap"; a configured cap is at least 1.
            cap: ConnectionCap::new(self.max_connections.unwrap_or(0)),
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

        let api = self
            .http_api
            .then(|| self.admitted_http_api::<S>(publisher.clone(), &hub));
        // route_layer: applied to this route only, so unknown paths still fall through to
        // the app's own fallback. The last layer added runs first.
        let mut router = Router::new()
            // GET: the HTTP/1.1 upgrade; CONNECT: the HTTP/2 extended CONNECT (RFC 8441).
            .route(path, get(handler.clone()).connect(handler))
            .route_layer(axum::Extension(self.protocols));
        router = router.route_layer(CheckOriginLayer::new(self.origins));
        if let Some(policy) = self.rate_limit {
            let hub = hub.clone();
            let counted = SkipHook(Arc::new(move || hub.counters().record_rate_limit_skip()));
            router = router.route_layer(
                RateLimitLayer::new(policy, self.trusted_proxies.clone())
                    .on_missing_client_addr(self.missing_client_addr)
                    .on_skip(counted),
            );
        }
        router = router.route_layer(StoppedLayer::new(hub.stop_flag()));
        let rejections = RejectionLog::new();
        let trusted = self.trusted_proxies;
        let router = router
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
            );
        let router = match api {
            Some(api) => router.merge(api),
            None => router,
        };
        (router, publisher)
    }

    /// The HTTP API routes behind this configuration's rate limit, origin policy and auth
    /// extractor; refusals are counted as the WebSocket's are.
    fn admitted_http_api<S>(&self, publisher: Publisher, hub: &Hub) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
        A: FromRequestParts<S> + Into<Identity> + Send + 'static,
        A::Rejection: Send,
    {
        let mut api = crate::http_api::routes::<S, A>(publisher)
            .route_layer(CheckOriginLayer::new(self.origins.clone()));
        if let Some(policy) = self.rate_limit {
            let counters = hub.clone();
            let counted = SkipHook(Arc::new(move || {
                counters.counters().record_rate_limit_skip()
            }));
            api = api.route_layer(
                RateLimitLayer::new(policy, self.trusted_proxies.clone())
                    .on_missing_client_addr(self.missing_client_addr)
                    .on_skip(counted),
            );
        }
        let hub = hub.clone();
        api.route_layer(tower::util::MapResponseLayer::new(
            move |response: Response| {
                if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
                    hub.counters().record_rejection(*reason);
                }
                response
            },
        ))
    }
}

/// A random server key for pseudonyms. Without the OS's random source (which does not fail
/// once a system is booted) a key from std's randomly seeded hasher keeps pseudonyms
/// unpredictable to clients.
fn server_key() -> PseudonymKey {
    PseudonymKey::random().unwrap_or_else(|| {
        use std::hash::{BuildHasher, Hasher};
        tracing::warn!("no OS random source: pseudonym key drawn from std's hasher seed");
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            let word = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        PseudonymKey::from_bytes(bytes)
    })
}

/// `value` within `min..=max`: a value outside is raised or lowered to the nearest bound, with
/// a `warn` naming the setting. The one rule for every number setting (see [`WsLayer`]).
pub(crate) fn bounded<T: PartialOrd + std::fmt::Debug>(
    setting: &'static str,
    value: T,
    min: T,
    max: T,
) -> T {
    if value < min {
        tracing::warn!(setting, requested = ?value, min = ?min, "setting below its minimum: raised");
        min
    } else if value > max {
        tracing::warn!(setting, requested = ?value, max = ?max, "setting above its maximum: lowered");
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
    /// [`WsLayer::compression`].
    compression: bool,
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
        let compression = self.compression && handle.deflate_offer().is_some();
        tracing::debug!(
            peer = peer_field,
            identity = %identity,
            protocol = subprotocol.as_ref().map(tracing::field::display),
            compression = compression.then_some("permessage-deflate"),
            "websocket upgrade accepted"
        );
        let privacy = self.hub.privacy();
        let viewer = privacy.viewer(&identity);
        let mut since = resume.position();
        if !privacy.same_policy_as_before(&identity, &viewer) && since.take().is_some() {
            // What the client holds was redacted otherwise: it starts over from a snapshot.
            tracing::debug!(identity = %identity, policy = %viewer.policy, "privacy policy changed: resume refused");
        }
        let client = ClientInfo {
            peer,
            viewer,
            identity,
            since,
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
            self.compression,
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
    /// Whether a `snapshot_at` parameter was sent.
    snapshot_at: bool,
}

impl ResumeFrom {
    /// The position to resume from, if any is claimed and checkable:
    /// - `since` with a valid `since_at`: the hub checks that it holds that very event;
    /// - `since` alone (Go clients, `Last-Event-ID`): trusted by seq;
    /// - `since` with a `since_at` that is not a timestamp: none (snapshot);
    /// - `since` with `snapshot_at` and no `since_at`: none (snapshot). Comparing it with the
    ///   hub's start time would trust wall clocks; a client sending it asks for restart
    ///   safety, and the only safe answer without an event identity is a snapshot.
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

#[cfg(test)]
mod tests {
    // unwrap() and expect() here are assertions on values the test built itself.
    use super::*;
    use crate::sink::Snapshot;
    use crate::wire::{Event, SessionState};
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn build_panics_on_the_paths_its_docs_name() {
        for path in ["", "ws", "/ws/*x", "/ws/{*rest}"] {
            let built = std::panic::catch_unwind(|| {
                let _ = WsLayer::new().build::<()>(path);
            });
            assert!(built.is_err(), "{path:?} built");
        }
        for taken in ["/ws", "/ws/status"] {
            let merged = std::panic::catch_unwind(|| {
                let (ws, _) = WsLayer::new().build::<()>("/ws");
                let _ = Router::<()>::new()
                    .route(taken, axum::routing::get(|| async { "" }))
                    .merge(ws);
            });
            assert!(merged.is_err(), "merged over {taken}");
        }
        let _ = WsLayer::new().build::<()>("/ws/{id}");
    }

    /// Serves an endpoint whose clients' snapshots come from `source`.
    async fn serve_source(
        store: SessionStore,
        source: Arc<dyn SnapshotSource>,
    ) -> (Publisher, SocketAddr) {
        let (router, publisher) = WsLayer::new()
            .rate_limit(None)
            .build_with_source::<()>("/ws", store, source);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (publisher, addr)
    }

    /// The first event a new client receives (its snapshot).
    async fn first_event(addr: SocketAddr) -> Event {
        let within = Duration::from_secs(10);
        let (mut client, _) = tokio::time::timeout(
            within,
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
        )
        .await
        .expect("handshake in time")
        .expect("handshake");
        loop {
            let message = tokio::time::timeout(within, client.next())
                .await
                .expect("a message in time")
                .expect("an open stream")
                .expect("a message");
            if let Message::Text(text) = message {
                return Event::from_json(text.as_bytes()).expect("an event");
            }
        }
    }

    #[tokio::test]
    async fn a_source_without_a_version_is_encoded_per_client() {
        let fixed = || Snapshot {
            seq: 3,
            sessions: vec![SessionState {
                id: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (publisher, addr) = serve_source(SessionStore::new(), Arc::new(fixed)).await;
        let before = publisher.stats().encodings;
        for _ in 0..3 {
            let snapshot = first_event(addr).await;
            assert_eq!((snapshot.seq, snapshot.sessions.len()), (3, 1));
        }
        assert_eq!(
            publisher.stats().encodings - before,
            3,
            "no shared encoding"
        );
    }

    #[tokio::test]
    async fn a_snapshot_without_an_at_carries_the_at_recorded_for_its_seq() {
        let store = SessionStore::new();
        let source = {
            let store = store.clone();
            move || Snapshot {
                seq: store.seq(),
                sessions: store.snapshot().sessions,
                ..Default::default()
            }
        };
        let (publisher, addr) = serve_source(store, Arc::new(source)).await;
        let mut ats = Vec::new();
        for seq in 1..=3 {
            let mut event = Event::delta(seq, vec![], vec![]);
            event.at = Timestamp::from(
                std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seq),
            );
            ats.push(event.at);
            publisher.publish(event).unwrap();
        }
        let snapshot = first_event(addr).await;
        assert_eq!((snapshot.seq, snapshot.at), (3, ats[2]));
    }

    #[test]
    fn numbers_outside_their_range_are_raised_or_lowered() {
        let layer = WsLayer::new()
            .send_buffer(0)
            .max_message_size(1)
            .replay_window(0)
            .replay_window_bytes(0)
            .max_connections(0)
            .heartbeat(Duration::ZERO)
            .write_timeout(Duration::MAX);
        assert_eq!(layer.send_buffer, 1);
        assert_eq!(layer.max_message_size, MIN_MESSAGE_SIZE);
        assert_eq!(layer.replay_window, Some(1));
        assert_eq!(layer.replay_window_bytes, MIN_REPLAY_WINDOW_BYTES);
        assert_eq!(layer.max_connections, Some(1));
        assert_eq!(layer.heartbeat, Some(MIN_DURATION));
        assert_eq!(layer.write_timeout, MAX_DURATION);
        let layer = layer
            .send_buffer(usize::MAX)
            .replay_window(None)
            .max_connections(None)
            .heartbeat(None)
            .rate_limit(None);
        assert_eq!(layer.send_buffer, MAX_SEND_BUFFER);
        assert_eq!(
            (layer.replay_window, layer.max_connections, layer.heartbeat),
            (None, None, None)
        );
        assert!(layer.rate_limit.is_none());
    }
}
