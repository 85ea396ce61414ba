//! Client IP resolution behind trusted reverse proxies.
//!
//! The TCP peer address is the only thing a client cannot forge. Forwarding headers
//! (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) are written by whoever sent the request, so
//! [`client_ip`] honours them **only** when the peer is one of the configured
//! [`TrustedProxies`]. (The Go original took the left-most `X-Forwarded-For` entry from anyone,
//! so any client could pick its own rate-limit bucket by sending a fresh header.)
//!
//! # Algorithm
//!
//! 1. If the peer is not a trusted proxy, the answer is the peer.
//! 2. Otherwise one header is chosen (see [precedence](#header-precedence)) and its hops are
//!    walked **right to left** (nearest hop first). Every trusted proxy address is skipped; the
//!    first address that is *not* a trusted proxy is the client.
//! 3. If the walk meets an element that is not an IP address (`for=unknown`, an obfuscated
//!    identifier such as `for=_hidden`, an element without `for=`, garbage, non-ASCII bytes)
//!    before finding an untrusted address, nothing to the left of it can be trusted, so the
//!    answer is the peer.
//! 4. If every listed address is a trusted proxy, the left-most one (the furthest hop the
//!    trusted proxies vouch for) is the client.
//!
//! Empty list elements (`a, , b`) are ignored, as the HTTP list syntax allows. Ports are
//! accepted and dropped (`1.2.3.4:5678`, `[2001:db8::1]:443`, RFC 7239 `"[2001:db8::1]:4711"`).
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are returned as the IPv4 address, so a
//! dual-stack listener does not give one client two identities.
//!
//! # Header precedence
//!
//! With [`ClientIpHeader::Auto`] (the default) the first header *present* wins, in this order:
//! `Forwarded` (RFC 7239), then `X-Forwarded-For`, then `X-Real-IP`. A header that is present
//! but unusable does not fall through to the next one (that one might be a client-supplied
//! header the proxy passed through untouched); the peer is used instead.
//!
//! Most proxies pass through forwarding headers they do not set themselves, so with `Auto` a
//! client behind an `X-Forwarded-For` proxy can send its own `Forwarded` header and have it
//! read first. **Pin the header your proxy actually writes** with
//! [`TrustedProxies::header`] whenever you can:
//!
//! ```
//! use agentwatch_ws::admission::client_ip::{ClientIpHeader, TrustedProxies, client_ip};
//! use http::HeaderMap;
//! use std::net::IpAddr;
//!
//! let trusted =
//!     TrustedProxies::new(["10.0.0.0/8", "::1"])?.header(ClientIpHeader::XForwardedFor);
//!
//! let mut headers = HeaderMap::new();
//! // The client sent "6.6.6.6"; nginx appended the address it saw (203.0.113.7).
//! headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse()?);
//!
//! let proxy: IpAddr = "10.0.0.2".parse()?;
//! assert_eq!(client_ip(proxy, &headers, &trusted), "203.0.113.7".parse::<IpAddr>()?);
//!
//! // The same headers from an untrusted peer change nothing.
//! let direct: IpAddr = "198.51.100.9".parse()?;
//! assert_eq!(client_ip(direct, &headers, &trusted), direct);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::InvalidSetting;
use axum::extract::ConnectInfo;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue};

/// Which forwarding header [`client_ip`] reads when the peer is a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ClientIpHeader {
    /// The first one present of `Forwarded`, `X-Forwarded-For`, `X-Real-IP`.
    #[default]
    Auto,
    /// Only `Forwarded` (RFC 7239), `for=` parameters.
    Forwarded,
    /// Only `X-Forwarded-For`.
    XForwardedFor,
    /// Only `X-Real-IP` (a single address, as set by nginx's `proxy_set_header X-Real-IP`).
    XRealIp,
}

/// A set of proxy addresses and CIDR ranges whose forwarding headers are believed.
///
/// Cheap to clone (the ranges live behind an [`Arc`]). The default is empty: no peer is
/// trusted and forwarding headers are always ignored.
///
/// ```
/// use agentwatch_ws::admission::client_ip::TrustedProxies;
///
/// let trusted = TrustedProxies::new(["10.0.0.0/8", "::1", "fd00::/8", "192.0.2.7"])?;
/// assert!(trusted.contains("10.1.2.3".parse()?));
/// assert!(trusted.contains("::ffff:10.1.2.3".parse()?)); // IPv4-mapped
/// assert!(!trusted.contains("11.0.0.1".parse()?));
///
/// let err = TrustedProxies::new(["10.0.0.0/33"]).unwrap_err();
/// assert_eq!(err.to_string(), r#"invalid trusted_proxies entry "10.0.0.0/33": prefix length out of range"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct TrustedProxies {
    ranges: Arc<[IpRange]>,
    header: ClientIpHeader,
}

impl TrustedProxies {
    /// Parses IP addresses (`"192.0.2.7"`, `"::1"`) and CIDR ranges (`"10.0.0.0/8"`,
    /// `"fd00::/8"`). Surrounding whitespace is ignored; host bits set in a range
    /// (`"10.1.2.3/8"`) are cleared. IPv4-mapped IPv6 entries (`"::ffff:10.0.0.0/104"`) are
    /// stored as their IPv4 equivalent.
    ///
    /// # Errors
    ///
    /// [`InvalidSetting`] for the first entry that is not an address or a range with a prefix
    /// length within the address size.
    pub fn new<I>(entries: I) -> Result<Self, InvalidSetting>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let ranges = entries
            .into_iter()
            .map(|entry| IpRange::parse(entry.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            ranges: ranges.into(),
            header: ClientIpHeader::Auto,
        })
    }

    /// Chooses the forwarding header to read (default [`ClientIpHeader::Auto`]).
    #[must_use]
    pub fn header(mut self, header: ClientIpHeader) -> Self {
        self.header = header;
        self
    }

    /// The forwarding header this set reads.
    pub fn header_choice(&self) -> ClientIpHeader {
        self.header
    }

    /// Whether `ip` is inside one of the trusted addresses or ranges. An IPv4-mapped IPv6
    /// address is looked up as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ranges.iter().any(|range| range.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedProxies")
            .field("ranges", &self.ranges)
            .field("header", &self.header)
            .finish()
    }
}

/// One address range: the network address (host bits cleared) and the prefix length.
#[derive(Clone, Copy, PartialEq, Eq)]
struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl fmt::Debug for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl IpRange {
    fn parse(input: &str) -> Result<Self, InvalidSetting> {
        let err = |reason| InvalidSetting::new("trusted_proxies", input, reason);
        let trimmed = input.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (trimmed, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| err("not an IP address or CIDR range"))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("prefix length out of range"))?,
            Some(_) => return Err(err("prefix length is not a number")),
        };
        // `::ffff:a.b.c.d/n` with n >= 96 is an IPv4 range in disguise.
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = v6.to_ipv4_mapped() {
                if prefix >= 96 {
                    return Ok(Self::new(IpAddr::V4(v4), prefix - 96));
                }
            }
        }
        Ok(Self::new(addr, prefix))
    }

    fn new(addr: IpAddr, prefix: u8) -> Self {
        Self {
            network: mask(addr, prefix),
            prefix,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

/// Clears every bit after the first `prefix` bits of `addr`.
pub(crate) fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// The address of the client that sent a request, given the TCP `peer`, the request `headers`
/// and the proxies whose headers are believed. See the [module docs](self) for the rules.
///
/// Never panics and never fails: anything unusable gives the peer address (IPv4-mapped
/// addresses are returned as IPv4).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let chosen = match trusted.header {
        ClientIpHeader::Auto => [Source::Forwarded, Source::XForwardedFor, Source::XRealIp]
            .into_iter()
            .find(|source| headers.contains_key(source.name())),
        ClientIpHeader::Forwarded => Some(Source::Forwarded),
        ClientIpHeader::XForwardedFor => Some(Source::XForwardedFor),
        ClientIpHeader::XRealIp => Some(Source::XRealIp),
    };
    let Some(source) = chosen else {
        return peer;
    };
    let lines = headers.get_all(source.name());
    let hops: Box<dyn Iterator<Item = Hop> + '_> = match source {
        Source::Forwarded => Box::new(
            lines
                .iter()
                .rev()
                .flat_map(|line| split_line(line, forwarded_elements)),
        ),
        Source::XForwardedFor => Box::new(
            lines
                .iter()
                .rev()
                .flat_map(|line| split_line(line, xff_elements)),
        ),
        // X-Real-IP is a single address; with several lines the last one is the nearest.
        Source::XRealIp => {
            Box::new(
                lines
                    .iter()
                    .next_back()
                    .into_iter()
                    .map(|line| match line.to_str() {
                        Ok(s) => parse_node(s.trim()),
                        Err(_) => Hop::Unknown,
                    }),
            )
        }
    };
    walk(peer, hops, trusted)
}

/// Right-to-left walk over the hops of one header.
fn walk(peer: IpAddr, hops: impl Iterator<Item = Hop>, trusted: &TrustedProxies) -> IpAddr {
    let mut leftmost_trusted = None;
    for hop in hops {
        match hop {
            Hop::Empty => continue,
            Hop::Unknown => return peer,
            Hop::Ip(ip) => {
                let ip = ip.to_canonical();
                if !trusted.contains(ip) {
                    return ip;
                }
                leftmost_trusted = Some(ip);
            }
        }
    }
    leftmost_trusted.unwrap_or(peer)
}

#[derive(Clone, Copy)]
enum Source {
    Forwarded,
    XForwardedFor,
    XRealIp,
}

impl Source {
    fn name(self) -> HeaderName {
        match self {
            Source::Forwarded => http::header::FORWARDED,
            Source::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            Source::XRealIp => HeaderName::from_static("x-real-ip"),
        }
    }
}

/// One element of a forwarding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// An empty list element, ignored.
    Empty,
    /// `unknown`, an obfuscated identifier, a missing `for=`, or garbage.
    Unknown,
    /// A usable address.
    Ip(IpAddr),
}

/// Splits one header line into hops, nearest (right-most) first. A line that is not visible
/// ASCII is one unknown hop.
fn split_line(line: &HeaderValue, split: fn(&str) -> Vec<Hop>) -> std::vec::IntoIter<Hop> {
    let mut hops = match line.to_str() {
        Ok(s) => split(s),
        Err(_) => vec![Hop::Unknown],
    };
    hops.reverse();
    hops.into_iter()
}

fn xff_elements(line: &str) -> Vec<Hop> {
    line.split(',')
        .map(|element| {
            let element = element.trim();
            if element.is_empty() {
                Hop::Empty
            } else {
                parse_node(element)
            }
        })
        .collect()
}

/// Parses an RFC 7239 `Forwarded` line into one hop per element (its `for=` parameter).
fn forwarded_elements(line: &str) -> Vec<Hop> {
    split_outside_quotes(line, ',')
        .into_iter()
        .map(|element| {
            if element.trim().is_empty() {
                return Hop::Empty;
            }
            let mut hop = Hop::Unknown;
            for pair in split_outside_quotes(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    hop = match unquote(value.trim()) {
                        Some(value) => parse_node(&value),
                        None => Hop::Unknown,
                    };
                    break;
                }
            }
            hop
        })
        .collect()
}

/// Splits `s` on `sep` except inside double-quoted strings (with `\` escapes).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A token or a quoted-string (RFC 7230); `None` for an unterminated quote.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Parses a node: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
/// `unknown`, obfuscated identifiers (`_abc`) and anything else are [`Hop::Unknown`].
fn parse_node(node: &str) -> Hop {
    if node.is_empty() || node.len() > 64 {
        return Hop::Unknown;
    }
    if let Some(rest) = node.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Hop::Unknown;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return Hop::Unknown;
        }
        return inner
            .parse::<Ipv6Addr>()
            .map_or(Hop::Unknown, |ip| Hop::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Hop::Ip(ip);
    }
    match node.split_once(':') {
        Some((host, port)) if is_port(port) => host
            .parse::<Ipv4Addr>()
            .map_or(Hop::Unknown, |ip| Hop::Ip(IpAddr::V4(ip))),
        _ => Hop::Unknown,
    }
}

/// RFC 7239 `node-port`: a decimal port, or an obfuscated `_` identifier.
fn is_port(port: &str) -> bool {
    (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
        || (port.starts_with('_')
            && port[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
}

/// The TCP peer address from axum's [`ConnectInfo<SocketAddr>`] request extension, when the
/// server was started with `into_make_service_with_connect_info::<SocketAddr>()`.
pub(crate) fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Request extension set by [`serve`](crate::serve()) when the peer has no IP address (a
/// Unix-domain socket): per-IP bounds do not apply to it, and its missing
/// `ConnectInfo<SocketAddr>` is no misconfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonIpPeer;

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(["10.0.0.0/8", "::1", "fd00::/8", "127.0.0.1"]).unwrap()
    }

    #[test]
    fn parses_addresses_and_ranges() {
        let t = TrustedProxies::new([" 10.0.0.0/8 ", "::1", "fd00::/8", "192.0.2.7/32"]).unwrap();
        assert!(t.contains(ip("10.0.0.1")));
        assert!(t.contains(ip("10.255.255.255")));
        assert!(!t.contains(ip("11.0.0.0")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("::2")));
        assert!(t.contains(ip("fd12:3456::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(!t.is_empty());
        assert!(TrustedProxies::default().is_empty());
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
    }

    #[test]
    fn host_bits_are_cleared_and_extreme_prefixes_work() {
        let t = TrustedProxies::new(["10.1.2.3/8", "0.0.0.0/0"]).unwrap();
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("203.0.113.1")));
        assert!(
            !t.contains(ip("2001:db8::1")),
            "an IPv4 range never holds IPv6"
        );
        let all6 = TrustedProxies::new(["::/0"]).unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        assert!(!all6.contains(ip("1.2.3.4")));
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        let t = trusted();
        assert!(t.contains(ip("::ffff:10.9.8.7")));
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        let mapped_entry = TrustedProxies::new(["::ffff:192.0.2.0/120"]).unwrap();
        assert!(mapped_entry.contains(ip("192.0.2.200")));
        assert!(!mapped_entry.contains(ip("192.0.3.1")));
    }

    #[test]
    fn invalid_entries_are_clear_errors() {
        for (input, reason) in [
            ("10.0.0.0/33", "prefix length out of range"),
            ("::/129", "prefix length out of range"),
            ("10.0.0.0/", "prefix length is not a number"),
            ("10.0.0.0/x", "prefix length is not a number"),
            ("10.0.0.0/8/8", "prefix length is not a number"),
            ("10.0.0.0/-1", "prefix length is not a number"),
            ("10.0.0.0/256", "prefix length out of range"),
            (
                "10.0.0.0/99999999999999999999",
                "prefix length out of range",
            ),
            ("example.com", "not an IP address or CIDR range"),
            ("", "not an IP address or CIDR range"),
            ("10.0.0", "not an IP address or CIDR range"),
            ("[::1]", "not an IP address or CIDR range"),
        ] {
            let err = TrustedProxies::new([input]).unwrap_err();
            assert_eq!(err.input(), input);
            assert_eq!(err.setting(), "trusted_proxies");
            assert_eq!(err.reason(), reason);
            assert_eq!(
                err.to_string(),
                format!("invalid trusted_proxies entry {input:?}: {reason}")
            );
        }
    }

    #[test]
    fn untrusted_peer_ignores_every_header() {
        let h = headers(&[
            ("forwarded", b"for=6.6.6.6"),
            ("x-forwarded-for", b"6.6.6.6"),
            ("x-real-ip", b"6.6.6.6"),
        ]);
        assert_eq!(
            client_ip(ip("203.0.113.5"), &h, &trusted()),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(ip("203.0.113.5"), &h, &TrustedProxies::default()),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn trusted_peer_without_headers_is_the_client() {
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_peer_is_returned_as_ipv4() {
        let h = HeaderMap::new();
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.5"), &h, &trusted()),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn xff_rightmost_untrusted_wins() {
        let h = headers(&[("x-forwarded-for", b"6.6.6.6, 203.0.113.7, 10.0.0.3")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("203.0.113.7"));
    }

    #[test]
    fn xff_multiple_lines_in_order() {
        let h = headers(&[
            ("x-forwarded-for", b"6.6.6.6, 198.51.100.1"),
            ("x-forwarded-for", b"10.0.0.9"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("198.51.100.1")
        );
        let h = headers(&[
            ("x-forwarded-for", b"10.0.0.9"),
            ("x-forwarded-for", b"198.51.100.2"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn xff_all_trusted_gives_leftmost() {
        let h = headers(&[("x-forwarded-for", b"10.1.1.1, 10.2.2.2")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.1.1.1"));
    }

    #[test]
    fn xff_ports_brackets_ipv6_and_empty_elements() {
        let t = trusted();
        let peer = ip("::1");
        for (value, want) in [
            (&b"203.0.113.7:5678"[..], "203.0.113.7"),
            (b"2001:db8::7", "2001:db8::7"),
            (b"[2001:db8::7]", "2001:db8::7"),
            (b"[2001:db8::7]:443", "2001:db8::7"),
            (b"::ffff:203.0.113.9", "203.0.113.9"),
            (b" 203.0.113.7 ,, ", "203.0.113.7"),
            (b"203.0.113.7,,10.0.0.1", "203.0.113.7"),
        ] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(client_ip(peer, &h, &t), ip(want), "{value:?}");
        }
    }

    #[test]
    fn garbage_falls_back_to_peer() {
        let t = trusted();
        let peer = ip("10.0.0.2");
        for value in [
            &b"garbage"[..],
            b"6.6.6.6, garbage",
            b"6.6.6.6, unknown",
            b"6.6.6.6, 1.2.3.4.5",
            b"6.6.6.6, [2001:db8::1",
            b"6.6.6.6, [2001:db8::1]x",
            b"6.6.6.6, 1.2.3.4:99999999",
            b"6.6.6.6, 1.2.3.4:",
            b"6.6.6.6, \xff\xfe",
            b"",
            b",,,",
        ] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(client_ip(peer, &h, &t), peer, "{value:?}");
        }
    }

    #[test]
    fn non_ascii_line_to_the_left_does_not_hide_a_good_hop() {
        let h = headers(&[
            ("x-forwarded-for", b"\xc3\xa9t\xc3\xa9"),
            ("x-forwarded-for", b"198.51.100.4"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn huge_header_does_not_panic() {
        let mut big = "1.2.3.4, ".repeat(20_000);
        big.push_str("203.0.113.1");
        let h = headers(&[("x-forwarded-for", big.as_bytes())]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("203.0.113.1"));
        let junk = vec![b'['; 100_000];
        let h = headers(&[("x-forwarded-for", &junk), ("forwarded", &junk)]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_rfc7239_forms() {
        let t = trusted();
        let peer = ip("10.0.0.2");
        for (value, want) in [
            (
                &b"for=192.0.2.60;proto=http;by=203.0.113.43"[..],
                "192.0.2.60",
            ),
            (b"For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            (b"for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            (b"for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            (b"for=198.51.100.17, for=10.0.0.5", "198.51.100.17"),
            (
                b"proto=https; for=\"192.0.2.60:8080\" ;by=10.0.0.1",
                "192.0.2.60",
            ),
            (b"for=\"192.0.2.60:_obf\"", "192.0.2.60"),
            (b"for=\"19\\2.0.2.60\"", "192.0.2.60"),
            (b"by=\"a,b\";for=192.0.2.61", "192.0.2.61"),
        ] {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(
                client_ip(peer, &h, &t),
                ip(want),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn forwarded_unknown_and_obfuscated_stop_the_walk() {
        let t = trusted();
        let peer = ip("10.0.0.2");
        for value in [
            &b"for=6.6.6.6, for=unknown"[..],
            b"for=6.6.6.6, for=_hidden",
            b"for=6.6.6.6, proto=https",
            b"for=6.6.6.6, for=\"unterminated",
            b"for=6.6.6.6, for=",
            b"for=6.6.6.6, for=[::1",
            b"for=6.6.6.6, for=\"[2001:db8::1]:80x\"",
            b"\"",
            b";;;,,=",
        ] {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(
                client_ip(peer, &h, &t),
                peer,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn auto_precedence_and_no_fallthrough() {
        let t = trusted();
        let peer = ip("10.0.0.2");
        let all = headers(&[
            ("forwarded", b"for=192.0.2.1"),
            ("x-forwarded-for", b"192.0.2.2"),
            ("x-real-ip", b"192.0.2.3"),
        ]);
        assert_eq!(client_ip(peer, &all, &t), ip("192.0.2.1"));
        let xff_real = headers(&[
            ("x-forwarded-for", b"192.0.2.2"),
            ("x-real-ip", b"192.0.2.3"),
        ]);
        assert_eq!(client_ip(peer, &xff_real, &t), ip("192.0.2.2"));
        let real = headers(&[("x-real-ip", b"192.0.2.3")]);
        assert_eq!(client_ip(peer, &real, &t), ip("192.0.2.3"));
        // A present but useless Forwarded does not fall through to X-Forwarded-For.
        let broken = headers(&[
            ("forwarded", b"for=unknown"),
            ("x-forwarded-for", b"192.0.2.2"),
        ]);
        assert_eq!(client_ip(peer, &broken, &t), peer);
    }

    #[test]
    fn pinned_header_ignores_the_others() {
        let peer = ip("10.0.0.2");
        let h = headers(&[
            ("forwarded", b"for=6.6.6.6"),
            ("x-forwarded-for", b"192.0.2.2"),
            ("x-real-ip", b"192.0.2.3"),
        ]);
        let t = trusted().header(ClientIpHeader::XForwardedFor);
        assert_eq!(t.header_choice(), ClientIpHeader::XForwardedFor);
        assert_eq!(client_ip(peer, &h, &t), ip("192.0.2.2"));
        let t = trusted().header(ClientIpHeader::XRealIp);
        assert_eq!(client_ip(peer, &h, &t), ip("192.0.2.3"));
        let t = trusted().header(ClientIpHeader::Forwarded);
        assert_eq!(client_ip(peer, &h, &t), ip("6.6.6.6"));
        let only_xff = headers(&[("x-forwarded-for", b"192.0.2.2")]);
        assert_eq!(client_ip(peer, &only_xff, &t), peer, "pinned header absent");
    }

    #[test]
    fn x_real_ip_forms() {
        let t = trusted();
        let peer = ip("10.0.0.2");
        for (value, want) in [
            (&b"192.0.2.3"[..], "192.0.2.3"),
            (b" 192.0.2.3 ", "192.0.2.3"),
            (b"192.0.2.3:1234", "192.0.2.3"),
            (b"[2001:db8::3]:1234", "2001:db8::3"),
            (b"10.0.0.77", "10.0.0.77"),
            (b"192.0.2.3, 192.0.2.4", "10.0.0.2"),
            (b"nope", "10.0.0.2"),
            (b"\xff", "10.0.0.2"),
        ] {
            let h = headers(&[("x-real-ip", value)]);
            assert_eq!(client_ip(peer, &h, &t), ip(want), "{value:?}");
        }
        let two = headers(&[("x-real-ip", b"6.6.6.6"), ("x-real-ip", b"192.0.2.9")]);
        assert_eq!(client_ip(peer, &two, &t), ip("192.0.2.9"));
    }

    #[test]
    fn peer_addr_reads_connect_info() {
        let mut ext = Extensions::new();
        assert_eq!(peer_addr(&ext), None);
        let addr: SocketAddr = "192.0.2.1:4242".parse().unwrap();
        ext.insert(ConnectInfo(addr));
        assert_eq!(peer_addr(&ext), Some(addr));
    }
}
