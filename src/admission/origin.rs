//! `Origin` checking: which web pages may open a connection.
//!
//! Browsers send WebSocket upgrades cross-origin without any CORS preflight, so a page on
//! `https://evil.example` can open a socket to your dashboard with the visitor's cookies
//! (cross-site WebSocket hijacking). The `Origin` header is the defence: browsers always set it
//! and pages cannot forge it.
//!
//! # Requests without `Origin`
//!
//! A request without an `Origin` header is **admitted** whatever the allowlist, unless the
//! policy [requires one](OriginPolicy::require_origin) (`WsLayer::require_origin(true)`),
//! which answers `403` with [`RejectReason::OriginMissing`]. Why: browsers always send
//! `Origin` on a WebSocket handshake (the Fetch standard sets it on every request whose mode
//! is `websocket`), and a page's script cannot remove it. A client that omits it is therefore
//! not a browser — a CLI, a script, a server-side client — and such a client can send any
//! `Origin` it likes anyway. Cross-site WebSocket hijacking is an attack through a victim's
//! browser (its cookies, its network position); refusing origin-less clients does not stop
//! it, it only turns away honest tools. Require `Origin` when every legitimate client of the
//! endpoint is a browser and you want anything else refused by default.
//!
//! # Rules
//!
//! With an **empty allowlist** ([`OriginPolicy::default`]):
//!
//! - a loopback origin — `localhost`, `*.localhost`, `127.0.0.0/8` or `[::1]`, on any port,
//!   scheme `http` or `https`: allowed;
//! - same origin on a **trusted host**: the Origin's host and port equal the request's `Host`
//!   (or, for HTTP/2, the URI authority), compared after parsing, case-insensitively, with the
//!   port defaulted from the Origin's scheme (`https://example.com` matches
//!   `Host: example.com:443`), **and** that host is a loopback name or address (as above) or
//!   one listed with [`OriginPolicy::with_allowed_hosts`]; a same-origin request to a host
//!   that is not trusted is refused (`403`, shown at `<path>/status` as an unknown host);
//! - anything else: `403 Forbidden`.
//!
//! Why the host must be trusted: with DNS rebinding, a page on `http://attacker.example:3000`
//! gets its name re-pointed at `127.0.0.1`; its requests then reach a local server with
//! `Origin: http://attacker.example:3000` and `Host: attacker.example:3000`, which look
//! same-origin. Only the server knows which names are really its own, so names other than
//! loopback ones must be listed (`WsLayer::allowed_hosts(["dash.example.com"])`).
//!
//! With an **allowlist** ([`OriginPolicy::new`]):
//!
//! - the header equals an entry byte for byte: allowed;
//! - otherwise scheme, host and port are compared after parsing (default ports `http` 80,
//!   `https` 443), so `http://app.example.com` also matches `http://APP.example.com:80` and
//!   `http://app.example.com/`. There is never any substring, prefix or suffix matching:
//!   `https://app.example.com.evil.net` and `https://evil.net/app.example.com` are rejected;
//! - anything else: `403`.
//!
//! In both modes a malformed `Origin` (`null`, garbage, non-ASCII, longer than 512 bytes,
//! userinfo as in `http://a@b`, a path other than a lone `/`, a query or fragment, a scheme
//! other than `http`/`https`, several `Origin` headers) is rejected, unless an allowlist entry
//! equals it byte for byte.
//!
//! Allowlist entries are trimmed and parsed once, at construction, and an invalid one is an
//! error the caller sees then ([`InvalidSetting`]), not a warning logged before any subscriber
//! exists: an empty entry, `*` (not a wildcard), `null` (sent by every sandboxed iframe and
//! `file://` page), anything with a path, query, userinfo or whitespace. An entry with another
//! scheme (`chrome-extension://abcdef`) is matched byte for byte.
//!
//! The allowed hosts matter only with an empty allowlist: an allowlist never consults `Host`
//! (an attacker's page cannot send a listed `Origin`). Behind a proxy that rewrites `Host`,
//! same-origin detection fails; list the public origin explicitly.
//!
//! # Example
//!
//! ```
//! use agentwatch_ws::admission::origin::{CheckOriginLayer, OriginPolicy};
//! use axum::{Router, routing::get};
//!
//! let policy = OriginPolicy::new(["https://dash.example.com", "http://localhost:5173"])?;
//! let app: Router = Router::new()
//!     .route("/ws", get(|| async { "upgrade here" }))
//!     .layer(CheckOriginLayer::new(policy));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use http::{HeaderValue, Request, StatusCode, header};
use tower::{Layer, Service};

use super::ResponseFuture;
use super::client_ip::peer_addr;
use super::{InvalidSetting, RejectReason, rejection};
use crate::reject::RejectionMessage;

/// Longest `Origin` value worth parsing: a 253-byte host plus scheme and port fit easily.
const MAX_ORIGIN_LEN: usize = 512;

/// Which origins may connect. Cheap to clone (an [`Arc`] inside).
///
/// See the [module docs](self) for the rules.
///
/// ```
/// use agentwatch_ws::admission::origin::OriginPolicy;
/// use http::HeaderValue;
///
/// let any_local = OriginPolicy::default();
/// let host = HeaderValue::from_static("dash.example.com");
/// let same_origin = HeaderValue::from_static("https://dash.example.com");
/// assert!(any_local.is_allowed(None, Some(&host)));
/// assert!(any_local.is_allowed(Some(&HeaderValue::from_static("http://localhost:3000")), Some(&host)));
/// assert!(!any_local.is_allowed(Some(&HeaderValue::from_static("https://evil.net")), Some(&host)));
/// // Same origin on a name that is not loopback: possibly DNS rebinding, unless allowed.
/// assert!(!any_local.is_allowed(Some(&same_origin), Some(&host)));
/// let dash = OriginPolicy::default().with_allowed_hosts(["dash.example.com"])?;
/// assert!(dash.is_allowed(Some(&same_origin), Some(&host)));
///
/// let listed = OriginPolicy::new(["https://app.example.com"])?;
/// assert!(listed.is_allowed(Some(&HeaderValue::from_static("https://app.example.com:443")), None));
/// assert!(!listed.is_allowed(Some(&HeaderValue::from_static("https://app.example.com.evil.net")), None));
/// assert!(listed.is_allowed(None, None), "no Origin: not a browser, admitted");
/// assert!(!listed.require_origin(true).is_allowed(None, None));
/// assert!(OriginPolicy::new(["https://app.example.com/path"]).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct OriginPolicy {
    entries: Arc<[Entry]>,
    /// Hosts trusted for same-origin requests besides loopback ones.
    hosts: Arc<[HostEntry]>,
    /// Whether a request without `Origin` is refused.
    require_origin: bool,
}

/// An allowed host: the name as given, and its parse.
struct HostEntry {
    raw: Box<str>,
    parsed: Authority,
}

/// An allowlist entry: as given (trimmed), and its parse when it is an `http`/`https` origin
/// (`None`: another scheme, matched byte for byte).
struct Entry {
    raw: Box<str>,
    parsed: Option<Origin>,
}

impl Entry {
    fn parse(input: &str) -> Result<Self, InvalidSetting> {
        let invalid = |reason| InvalidSetting::new("allowed_origins", input, reason);
        let raw = input.trim();
        match raw {
            "" => return Err(invalid("empty")),
            "*" => return Err(invalid("`*` is not a wildcard: list each origin")),
            "null" => {
                return Err(invalid(
                    "`null` is the opaque origin every sandboxed iframe and file:// page sends",
                ));
            }
            _ => {}
        }
        if let Some(parsed) = Origin::parse(raw) {
            return Ok(Entry {
                raw: raw.into(),
                parsed: Some(parsed),
            });
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| invalid("not scheme://host[:port]"))?;
        let is_web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        let is_token = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'+' | b':')
                })
        };
        if is_web || !is_token(scheme) || !is_token(rest) {
            return Err(invalid(
                "not scheme://host[:port] (no path, query, userinfo or whitespace)",
            ));
        }
        Ok(Entry {
            raw: raw.into(),
            parsed: None,
        })
    }
}

/// Why an [`OriginPolicy`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Origin` header, and the policy requires one.
    Missing,
    /// An `Origin` the policy does not allow (foreign, malformed, or sent twice).
    Foreign,
    /// A same-origin request to a host name that is neither loopback nor an allowed host.
    UnknownHost,
}

impl Refusal {
    /// The reason counted and shown at `<path>/status`.
    pub(crate) fn reason(self) -> RejectReason {
        match self {
            Refusal::Missing => RejectReason::OriginMissing,
            Refusal::Foreign | Refusal::UnknownHost => RejectReason::Origin,
        }
    }

    /// The sentence `<path>/status` shows.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "the request has no Origin header, and this server requires one",
            Refusal::Foreign => "this page's origin is not allowed",
            Refusal::UnknownHost => {
                "this page's host name is not one the server knows (not in its allowed hosts)"
            }
        }
    }

    fn body(self) -> &'static str {
        match self {
            Refusal::Missing => "origin required\n",
            Refusal::Foreign | Refusal::UnknownHost => "origin not allowed\n",
        }
    }
}

impl OriginPolicy {
    /// A policy allowing exactly the listed origins (`scheme://host[:port]`). An empty list
    /// gives the same policy as [`OriginPolicy::default`]: same-origin and localhost only.
    ///
    /// Each entry is trimmed, then parsed as an `http`/`https` origin (compared after
    /// parsing) or, for other schemes (`chrome-extension://…`), kept for byte-exact matching.
    ///
    /// # Errors
    /// [`InvalidSetting`] for the first entry that is empty, `*` (not a wildcard), `null` (the
    /// opaque origin every sandboxed iframe and `file://` page sends), or not a
    /// `scheme://host[:port]` (a path, a query, userinfo, whitespace inside).
    pub fn new<I>(allowed: I) -> Result<Self, InvalidSetting>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let entries = allowed
            .into_iter()
            .map(|entry| Entry::parse(entry.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            entries: entries.into(),
            hosts: Arc::default(),
            require_origin: false,
        })
    }

    /// The same policy, also trusting these `Host` values for same-origin requests (with an
    /// empty allowlist; see the [module docs](self)). An entry is `host` (any port) or
    /// `host:port` (that port only): a name (compared case-insensitively), an IPv4 address or
    /// a bracketed IPv6 address, as in a `Host` header. Replaces any hosts set before.
    ///
    /// # Errors
    /// [`InvalidSetting`] for the first entry that is not a valid `host[:port]`.
    ///
    /// ```
    /// use agentwatch_ws::admission::origin::OriginPolicy;
    /// use http::HeaderValue;
    ///
    /// let policy = OriginPolicy::default().with_allowed_hosts(["dash.example.com", "10.0.0.5:8080"])?;
    /// let allowed = |origin: &'static str, host: &'static str| {
    ///     policy.is_allowed(Some(&HeaderValue::from_static(origin)), Some(&HeaderValue::from_static(host)))
    /// };
    /// assert!(allowed("https://dash.example.com", "dash.example.com"));
    /// assert!(allowed("http://DASH.example.com:3000", "dash.example.com:3000"));
    /// assert!(allowed("http://10.0.0.5:8080", "10.0.0.5:8080"));
    /// assert!(!allowed("http://10.0.0.5:9090", "10.0.0.5:9090"));
    /// assert!(!allowed("http://attacker.example:3000", "attacker.example:3000"));
    /// assert!(OriginPolicy::default().with_allowed_hosts(["dash example"]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_allowed_hosts<I>(mut self, hosts: I) -> Result<Self, InvalidSetting>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let hosts = hosts
            .into_iter()
            .map(|host| {
                let raw: Box<str> = host.as_ref().trim().into();
                match Authority::parse(&raw) {
                    Some(parsed) => Ok(HostEntry { raw, parsed }),
                    None => Err(InvalidSetting::new(
                        "allowed_hosts",
                        host.as_ref(),
                        "not a host[:port] (a name, an IPv4 address or a bracketed IPv6 address)",
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.hosts = hosts.into();
        Ok(self)
    }

    /// The allowed hosts, trimmed, as given.
    pub fn allowed_hosts(&self) -> impl Iterator<Item = &str> + '_ {
        self.hosts.iter().map(|host| &*host.raw)
    }

    /// Whether `host` (as parsed from a `Host` header) may serve same-origin pages.
    fn trusts_host(&self, host: &Authority) -> bool {
        host.host.is_loopback()
            || self.hosts.iter().any(|entry| {
                let allowed = &entry.parsed;
                allowed.host == host.host && (allowed.port.is_none() || allowed.port == host.port)
            })
    }

    /// The same policy, refusing (`true`) or admitting (`false`, the default) requests that
    /// carry no `Origin` header. See the [module docs](self) for why they are admitted by
    /// default: only browsers send `Origin`, and only browsers are the confused deputies
    /// this check protects against.
    ///
    /// ```
    /// use agentwatch_ws::admission::origin::OriginPolicy;
    ///
    /// let listed = OriginPolicy::new(["https://app.example.com"])?;
    /// assert!(listed.is_allowed(None, None), "a CLI client sends no Origin");
    /// assert!(!listed.clone().require_origin(true).is_allowed(None, None));
    /// assert!(listed.requires_origin() == false);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn require_origin(mut self, require: bool) -> Self {
        self.require_origin = require;
        self
    }

    /// Whether a request without `Origin` is refused (see
    /// [`require_origin`](Self::require_origin)).
    pub fn requires_origin(&self) -> bool {
        self.require_origin
    }

    /// Whether the allowlist is empty (same-origin and localhost mode).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The allowlist entries, trimmed, as given.
    pub fn allowlist(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|entry| &*entry.raw)
    }

    /// Whether a request with this `Origin` header value (if any) and this `Host` header
    /// value (if any) may connect. Never panics, whatever the bytes.
    pub fn is_allowed(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        self.check(origin, host).is_ok()
    }

    /// [`is_allowed`](Self::is_allowed), saying why not.
    pub(crate) fn check(
        &self,
        origin: Option<&HeaderValue>,
        host: Option<&HeaderValue>,
    ) -> Result<(), Refusal> {
        let Some(origin) = origin else {
            return if self.require_origin {
                Err(Refusal::Missing)
            } else {
                Ok(())
            };
        };
        if !self.entries.is_empty() {
            if self
                .entries
                .iter()
                .any(|entry| entry.raw.as_bytes() == origin.as_bytes())
            {
                return Ok(());
            }
            let origin = origin
                .to_str()
                .ok()
                .and_then(Origin::parse)
                .ok_or(Refusal::Foreign)?;
            return if self
                .entries
                .iter()
                .any(|entry| entry.parsed.as_ref() == Some(&origin))
            {
                Ok(())
            } else {
                Err(Refusal::Foreign)
            };
        }
        let origin = origin
            .to_str()
            .ok()
            .and_then(Origin::parse)
            .ok_or(Refusal::Foreign)?;
        if origin.host.is_loopback() {
            return Ok(());
        }
        let host = host
            .and_then(|h| h.to_str().ok())
            .and_then(|h| Authority::parse(h.trim()))
            .ok_or(Refusal::Foreign)?;
        let same_origin = host.host == origin.host
            && host.port.unwrap_or_else(|| origin.scheme.default_port()) == origin.port;
        if !same_origin {
            Err(Refusal::Foreign)
        } else if self.trusts_host(&host) {
            Ok(())
        } else {
            Err(Refusal::UnknownHost)
        }
    }
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginPolicy")
            .field("allowlist", &self.allowlist().collect::<Vec<_>>())
            .field("allowed_hosts", &self.allowed_hosts().collect::<Vec<_>>())
            .field("require_origin", &self.require_origin)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A registered name, lower-cased.
    Name(Box<str>),
    Ip(IpAddr),
}

impl Host {
    /// `localhost` and its subdomains (RFC 6761 §6.3: they resolve to loopback, and browsers
    /// never send them to DNS), `127.0.0.0/8`, `::1` and `::ffff:127.0.0.0/104`.
    fn is_loopback(&self) -> bool {
        match self {
            Host::Name(name) => &**name == "localhost" || name.ends_with(".localhost"),
            Host::Ip(ip) => ip.to_canonical().is_loopback(),
        }
    }
}

/// `host[:port]`, as in a `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    host: Host,
    port: Option<u16>,
}

impl Authority {
    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > MAX_ORIGIN_LEN {
            return None;
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = inner.parse().ok()?;
            (Host::Ip(IpAddr::V6(ip)), after)
        } else {
            let end = s.find(':').unwrap_or(s.len());
            (parse_host(&s[..end])?, &s[end..])
        };
        let port = match port {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':')?)?),
        };
        Some(Self { host, port })
    }
}

/// A parsed `scheme://host[:port]` origin, port defaulted from the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    host: Host,
    port: u16,
}

impl Origin {
    /// Strict parse of `scheme://host[:port]`, with at most one `/` after the authority
    /// (allowlist entries are often copied from an address bar; `/` is still no path).
    fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_ORIGIN_LEN {
            return None;
        }
        let (scheme, rest) = s.split_once("://")?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            return None;
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let authority = Authority::parse(rest)?;
        Some(Self {
            scheme,
            host: authority.host,
            port: authority.port.unwrap_or_else(|| scheme.default_port()),
        })
    }
}

/// A reg-name (letters, digits, `-`, `_`, non-empty dot-separated labels, at most 253 bytes)
/// or a dotted-quad IPv4 address. A name whose last label is numeric must be a valid IPv4
/// address (as browsers require).
fn parse_host(s: &str) -> Option<Host> {
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return None;
    }
    if s.split('.').any(str::is_empty) {
        return None;
    }
    let last = s.rsplit('.').next().unwrap_or(s);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<Ipv4Addr>()
            .ok()
            .map(|ip| Host::Ip(IpAddr::V4(ip)));
    }
    Some(Host::Name(s.to_ascii_lowercase().into_boxed_str()))
}

/// 1 to 5 decimal digits, value 1..=65535.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A header value for logs: escaped by `Debug`, cut to 128 bytes.
pub(crate) fn log_value(value: &HeaderValue) -> String {
    let bytes = value.as_bytes();
    let cut = &bytes[..bytes.len().min(128)];
    let mut out = format!("{:?}", String::from_utf8_lossy(cut));
    if bytes.len() > cut.len() {
        out.push_str("...");
    }
    out
}

/// Applies an [`OriginPolicy`] to every request: `403 Forbidden` when it says no, with
/// [`RejectReason::OriginMissing`] for a missing `Origin` under
/// [`require_origin`](OriginPolicy::require_origin) and [`RejectReason::Origin`] otherwise.
#[derive(Debug, Clone, Default)]
pub struct CheckOriginLayer {
    policy: OriginPolicy,
}

impl CheckOriginLayer {
    /// A layer enforcing `policy`.
    pub fn new(policy: OriginPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for CheckOriginLayer {
    type Service = CheckOrigin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CheckOrigin {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// Checks each request's `Origin` against an [`OriginPolicy`] before calling the inner
/// service; made by [`CheckOriginLayer`].
#[derive(Debug, Clone)]
pub struct CheckOrigin<S> {
    inner: S,
    policy: OriginPolicy,
}

impl<S> CheckOrigin<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: OriginPolicy) -> Self {
        Self { inner, policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &OriginPolicy {
        &self.policy
    }
}

impl<S, B> Service<Request<B>> for CheckOrigin<S>
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
        let mut origins = req.headers().get_all(header::ORIGIN).iter();
        let origin = origins.next();
        let duplicated = origins.next().is_some();
        let authority;
        let host = match req.headers().get(header::HOST) {
            Some(host) => Some(host),
            None => {
                authority = req
                    .uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
                authority.as_ref()
            }
        };
        let verdict = if duplicated {
            Err(Refusal::Foreign)
        } else {
            self.policy.check(origin, host)
        };
        if let Err(refusal) = verdict {
            tracing::warn!(
                peer = peer_addr(req.extensions()).map(tracing::field::display),
                reason = %refusal.reason(),
                origin = origin.map(log_value),
                host = host.map(log_value),
                duplicated,
                "rejected WebSocket upgrade: {}",
                refusal.message()
            );
            let mut response = rejection(
                refusal.reason(),
                StatusCode::FORBIDDEN,
                refusal.body(),
                None,
            );
            response
                .extensions_mut()
                .insert(RejectionMessage(refusal.message()));
            return ResponseFuture::rejected(response);
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;
    use crate::admission::Rejected;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use axum::{Router, body::to_bytes};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tower::ServiceExt;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    /// The default policy with the hosts the same-origin tests use allowed.
    fn default_allows(origin: &'static str, host: &'static str) -> bool {
        OriginPolicy::default()
            .with_allowed_hosts(["dash.example.com", "192.0.2.1", "[2001:db8::1]"])
            .unwrap()
            .is_allowed(Some(&hv(origin)), Some(&hv(host)))
    }

    fn default_only_allows(origin: &'static str, host: &'static str) -> bool {
        OriginPolicy::default().is_allowed(Some(&hv(origin)), Some(&hv(host)))
    }

    #[test]
    fn same_origin_on_a_host_nobody_allowed_is_dns_rebinding() {
        // A page on a name re-pointed at this server: same-origin in form, but the name is
        // not ours.
        for (origin, host) in [
            ("http://attacker.example:3000", "attacker.example:3000"),
            ("https://attacker.example", "attacker.example"),
            ("http://dash.example.com", "dash.example.com"),
            ("http://192.0.2.1:8080", "192.0.2.1:8080"),
            (
                "http://localhost.attacker.example",
                "localhost.attacker.example",
            ),
        ] {
            assert!(!default_only_allows(origin, host), "{origin} / {host}");
        }
        // Loopback hosts are always ours, with or without a port, IPv6 bracketed.
        for (origin, host) in [
            ("http://localhost:3000", "localhost:3000"),
            ("http://localhost", "localhost"),
            ("http://dash.localhost:3000", "dash.localhost:3000"),
            ("http://127.0.0.1:3000", "127.0.0.1:3000"),
            ("http://127.0.0.1", "127.0.0.1"),
            ("http://127.8.9.10:3000", "127.8.9.10:3000"),
            ("http://[::1]:3000", "[::1]:3000"),
            ("http://[::1]", "[::1]"),
        ] {
            assert!(default_only_allows(origin, host), "{origin} / {host}");
        }
        // An allowed host with a port trusts that port only; an invalid entry is an error.
        let err = OriginPolicy::default()
            .with_allowed_hosts(["dash.example.com:8080", "bad host"])
            .unwrap_err();
        assert_eq!(err.input(), "bad host");
        let p = OriginPolicy::default()
            .with_allowed_hosts(["dash.example.com:8080"])
            .unwrap();
        assert_eq!(
            p.allowed_hosts().collect::<Vec<_>>(),
            ["dash.example.com:8080"]
        );
        let allowed = |origin, host| p.is_allowed(Some(&hv(origin)), Some(&hv(host)));
        assert!(allowed(
            "http://dash.example.com:8080",
            "dash.example.com:8080"
        ));
        assert!(!allowed(
            "http://dash.example.com:9090",
            "dash.example.com:9090"
        ));
        assert!(!allowed("http://dash.example.com", "dash.example.com"));
        // An allowlist ignores allowed hosts (it never consults Host).
        let listed = OriginPolicy::new(["https://app.example.com"])
            .unwrap()
            .with_allowed_hosts(["dash.example.com"])
            .unwrap();
        assert!(!listed.is_allowed(
            Some(&hv("http://dash.example.com")),
            Some(&hv("dash.example.com"))
        ));
    }

    #[test]
    fn default_without_origin_is_allowed() {
        let p = OriginPolicy::default();
        assert!(p.is_empty());
        assert!(p.is_allowed(None, None));
        assert!(p.is_allowed(None, Some(&hv("example.com"))));
    }

    #[test]
    fn default_same_origin() {
        assert!(default_allows(
            "https://dash.example.com",
            "dash.example.com"
        ));
        assert!(default_allows(
            "https://Dash.Example.COM",
            "dash.example.com"
        ));
        assert!(default_allows(
            "https://dash.example.com",
            "DASH.example.com:443"
        ));
        assert!(default_allows(
            "http://dash.example.com",
            "dash.example.com:80"
        ));
        assert!(default_allows(
            "http://dash.example.com:8080",
            "dash.example.com:8080"
        ));
        assert!(default_allows("http://192.0.2.1:8080", "192.0.2.1:8080"));
        assert!(default_allows(
            "http://[2001:db8::1]:8080",
            "[2001:db8:0::1]:8080"
        ));
        assert!(!default_allows(
            "http://dash.example.com",
            "dash.example.com:8080"
        ));
        assert!(!default_allows(
            "http://dash.example.com:8080",
            "dash.example.com"
        ));
        assert!(!default_allows(
            "https://dash.example.com",
            "dash.example.com:80"
        ));
        assert!(!default_allows("https://evil.net", "dash.example.com"));
        assert!(!default_allows(
            "https://dash.example.com.evil.net",
            "dash.example.com"
        ));
        assert!(!default_allows(
            "https://evil.dash.example.com",
            "dash.example.com"
        ));
        assert!(!default_allows(
            "https://dash.example.com",
            "dash.example.com.evil.net"
        ));
        // No Host: only localhost passes.
        let p = OriginPolicy::default()
            .with_allowed_hosts(["dash.example.com"])
            .unwrap();
        assert!(!p.is_allowed(Some(&hv("https://dash.example.com")), None));
        // A garbage Host never matches.
        assert!(!default_allows(
            "https://dash.example.com",
            "dash.example.com:99999"
        ));
        assert!(!default_allows(
            "https://dash.example.com",
            "user@dash.example.com"
        ));
    }

    #[test]
    fn default_localhost_any_port() {
        for origin in [
            "http://localhost",
            "http://localhost:5173",
            "https://LOCALHOST:8443",
            "http://127.0.0.1:3000",
            "https://127.0.0.1",
            "http://[::1]:8080",
            "http://[0:0:0:0:0:0:0:1]",
            "http://127.0.0.2",
            "http://app.localhost:3000",
        ] {
            assert!(
                OriginPolicy::default().is_allowed(
                    Some(&HeaderValue::from_str(origin).unwrap()),
                    Some(&hv("example.com"))
                ),
                "{origin}"
            );
        }
        for origin in [
            "http://localhost.evil.net",
            "http://evil-localhost",
            "http://localhost.",
            "http://128.0.0.1",
            "http://127.1",
            "ftp://localhost",
            "ws://localhost",
            "http://localhost:0",
            "http://localhost:65536",
        ] {
            assert!(
                !OriginPolicy::default().is_allowed(
                    Some(&HeaderValue::from_str(origin).unwrap()),
                    Some(&hv("example.com"))
                ),
                "{origin}"
            );
        }
    }

    #[test]
    fn malformed_origins_rejected_in_both_modes() {
        let listed = OriginPolicy::new(["https://app.example.com", "http://b"]).unwrap();
        let huge = format!("https://{}.com", "a".repeat(100_000));
        let mut bad: Vec<HeaderValue> = [
            "null",
            "",
            " ",
            "garbage",
            "https://",
            "https:///",
            "https://app.example.com/path",
            "https://app.example.com?x=1",
            "https://app.example.com#frag",
            "https://app.example.com//",
            "http://a@b",
            "http://b@app.example.com",
            "https://app.example.com:",
            "https://app.example.com:-1",
            "https://app.example.com:+443",
            "https://app.example.com:443:443",
            "https://app..example.com",
            "https://.app.example.com",
            "https://app.example.com.",
            "https://[::1",
            "https://[::1]x",
            "https://[fe80::1%25eth0]",
            "https://999.1.1.1",
            "https://1.2.3",
            "javascript://app.example.com",
            "https:app.example.com",
            "https://app example.com",
            "https://app.example.com\\@evil.net",
        ]
        .iter()
        .map(|s| HeaderValue::from_str(s).unwrap())
        .collect();
        bad.push(HeaderValue::from_bytes(b"https://\xc3\xa9.example.com").unwrap());
        bad.push(HeaderValue::from_bytes(b"\xff\xfe\xfd").unwrap());
        bad.push(HeaderValue::from_str(&huge).unwrap());
        bad.push(HeaderValue::from_str(&"[".repeat(10_000)).unwrap());
        for origin in &bad {
            let host = hv("app.example.com");
            assert!(
                !OriginPolicy::default().is_allowed(Some(origin), Some(&host)),
                "{origin:?}"
            );
            assert!(!listed.is_allowed(Some(origin), Some(&host)), "{origin:?}");
        }
        // Huge or non-ASCII Host headers never panic either.
        let huge_host = HeaderValue::from_str(&"a".repeat(100_000)).unwrap();
        assert!(!OriginPolicy::default().is_allowed(Some(&hv("https://a.com")), Some(&huge_host)));
        let weird_host = HeaderValue::from_bytes(b"\xc3\xa9").unwrap();
        assert!(!OriginPolicy::default().is_allowed(Some(&hv("https://a.com")), Some(&weird_host)));
    }

    #[test]
    fn missing_origin_admitted_unless_required() {
        let p = OriginPolicy::new(["https://app.example.com"]).unwrap();
        assert!(!p.is_empty());
        assert!(!p.requires_origin());
        assert_eq!(p.check(None, Some(&hv("app.example.com"))), Ok(()));
        let strict = p.clone().require_origin(true);
        assert_eq!(
            strict.check(None, Some(&hv("app.example.com"))),
            Err(Refusal::Missing)
        );
        assert_eq!(
            strict.check(Some(&hv("https://app.example.com")), None),
            Ok(())
        );
        let default_strict = OriginPolicy::default().require_origin(true);
        assert_eq!(default_strict.check(None, None), Err(Refusal::Missing));
        // with_allowed_hosts keeps the requirement.
        let kept = default_strict.with_allowed_hosts(["a.example"]).unwrap();
        assert!(kept.requires_origin());
        // Foreign vs unknown host.
        assert_eq!(
            OriginPolicy::default().check(Some(&hv("https://evil.net")), Some(&hv("a.example"))),
            Err(Refusal::Foreign)
        );
        assert_eq!(
            OriginPolicy::default().check(Some(&hv("https://a.example")), Some(&hv("a.example"))),
            Err(Refusal::UnknownHost)
        );
        // Localhost and same-origin are not implied by an allowlist.
        assert!(!p.is_allowed(
            Some(&hv("http://localhost:3000")),
            Some(&hv("localhost:3000"))
        ));
    }

    #[test]
    fn allowlist_parsed_comparison() {
        let p = OriginPolicy::new([
            "http://app.example.com",
            " https://secure.example.com:8443/ ",
        ])
        .unwrap();
        for ok in [
            "http://app.example.com",
            "http://app.example.com/",
            "http://app.example.com:80",
            "HTTP://APP.EXAMPLE.COM",
            "https://secure.example.com:8443",
        ] {
            assert!(
                p.is_allowed(Some(&HeaderValue::from_str(ok).unwrap()), None),
                "{ok}"
            );
        }
        for bad in [
            "https://app.example.com",
            "http://app.example.com:8080",
            "https://app.example.com.evil.net",
            "http://app.example.com.evil.net",
            "https://evil.net/app.example.com",
            "http://evil.net/app.example.com",
            "http://xapp.example.com",
            "http://app.example.co",
            "https://secure.example.com",
            "https://secure.example.com:443",
            "http://secure.example.com:8443",
        ] {
            assert!(
                !p.is_allowed(Some(&HeaderValue::from_str(bad).unwrap()), None),
                "{bad}"
            );
        }
    }

    #[test]
    fn allowlist_exact_match_and_invalid_entries() {
        let p = OriginPolicy::new(["chrome-extension://abcdef", " https://a.example "]).unwrap();
        assert_eq!(
            p.allowlist().collect::<Vec<_>>(),
            ["chrome-extension://abcdef", "https://a.example"]
        );
        assert!(p.is_allowed(Some(&hv("chrome-extension://abcdef")), None));
        assert!(
            !p.is_allowed(Some(&hv("chrome-extension://ABCDEF")), None),
            "exact means exact"
        );
        assert!(!p.is_allowed(Some(&hv("null")), None));
        assert!(format!("{p:?}").contains("chrome-extension"));
        // An entry that can never match is an error naming the entry, not a warning.
        for (bad, says) in [
            ("", "empty"),
            ("  ", "empty"),
            ("*", "not a wildcard"),
            ("null", "opaque origin"),
            ("https://a.example/app", "no path"),
            ("https://user@a.example", "userinfo"),
            ("a.example", "scheme://host"),
            ("chrome-extension://ab cd", "whitespace"),
        ] {
            let err = OriginPolicy::new(["https://ok.example", bad]).unwrap_err();
            assert_eq!(err.input(), bad);
            assert!(err.to_string().contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn ipv6_and_ipv4_entries() {
        let p = OriginPolicy::new(["http://[2001:db8::1]:8080", "http://192.0.2.1"]).unwrap();
        assert!(p.is_allowed(Some(&hv("http://[2001:DB8:0:0::1]:8080")), None));
        assert!(p.is_allowed(Some(&hv("http://192.0.2.1:80")), None));
        assert!(!p.is_allowed(Some(&hv("http://[2001:db8::2]:8080")), None));
        assert!(!p.is_allowed(Some(&hv("http://192.0.2.10")), None));
    }

    async fn call(app: Router, req: Request<Body>) -> Response {
        tokio::time::timeout(Duration::from_secs(5), app.oneshot(req))
            .await
            .expect("timed out")
            .unwrap()
    }

    fn app(policy: OriginPolicy) -> Router {
        Router::new()
            .route("/ws", get(|| async { "ok" }))
            .layer(CheckOriginLayer::new(policy))
    }

    fn request(origin: Option<&'static str>, host: Option<&'static str>) -> Request<Body> {
        let mut builder = Request::get("/ws");
        if let Some(origin) = origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        let mut req = builder.body(Body::empty()).unwrap();
        let peer: SocketAddr = "198.51.100.7:50000".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    }

    #[tokio::test]
    async fn layer_passes_allowed_and_rejects_with_403() {
        let res = call(
            app(OriginPolicy::default()),
            request(Some("http://localhost:5173"), Some("x")),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.extensions().get::<Rejected>().is_none());

        let res = call(app(OriginPolicy::default()), request(None, None)).await;
        assert_eq!(res.status(), StatusCode::OK);

        let res = call(
            app(OriginPolicy::default()),
            request(Some("https://evil.net"), Some("dash.example.com")),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            res.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::Origin))
        );
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/plain; charset=utf-8"
        );
        let body = to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"origin not allowed\n");

        let res = call(
            app(OriginPolicy::default()),
            request(Some("null"), Some("dash.example.com")),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn layer_same_origin_uses_host_then_uri_authority() {
        let dash = || {
            OriginPolicy::default()
                .with_allowed_hosts(["dash.example.com"])
                .unwrap()
        };
        let res = call(
            app(OriginPolicy::default()),
            request(Some("https://dash.example.com"), Some("dash.example.com")),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = call(
            app(dash()),
            request(Some("https://dash.example.com"), Some("dash.example.com")),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);

        // HTTP/2 style: no Host header, authority in the URI.
        let mut req = Request::get("https://dash.example.com/ws")
            .header(header::ORIGIN, "https://dash.example.com")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo("198.51.100.7:1".parse::<SocketAddr>().unwrap()));
        let res = call(app(dash()), req).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn layer_rejects_duplicate_origin_headers() {
        let mut req = request(Some("http://localhost"), Some("localhost"));
        req.headers_mut()
            .append(header::ORIGIN, hv("http://localhost"));
        let res = call(app(OriginPolicy::default()), req).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn layer_non_ascii_origin_is_403_not_panic() {
        let mut req = request(None, Some("dash.example.com"));
        req.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_bytes(b"https://d\xe9sh.example.com").unwrap(),
        );
        let res = call(
            app(OriginPolicy::new(["https://dash.example.com"]).unwrap()),
            req,
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn service_fn_without_connect_info() {
        let svc = CheckOrigin::new(
            tower::service_fn(|_req: Request<Body>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Body::from("inner")))
            }),
            OriginPolicy::new(["https://a.example"]).unwrap(),
        );
        assert_eq!(svc.policy().allowlist().count(), 1);
        let req = Request::get("/")
            .header(header::ORIGIN, "https://b.example")
            .body(Body::empty())
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), svc.clone().oneshot(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let req = Request::get("/")
            .header(header::ORIGIN, "https://a.example")
            .body(Body::empty())
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[test]
    fn log_value_is_bounded_and_escaped() {
        let long = HeaderValue::from_str(&"a".repeat(1000)).unwrap();
        assert!(log_value(&long).len() < 140);
        assert!(log_value(&long).ends_with("..."));
        let weird = HeaderValue::from_bytes(b"\xff\"x").unwrap();
        assert_eq!(log_value(&weird), "\"\u{fffd}\\\"x\"");
    }
}
