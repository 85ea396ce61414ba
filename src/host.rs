//! The request's host, checked as HTTP asks: RFC 9112 §3.2 for HTTP/1.1, RFC 9113 §8.3.1
//! for HTTP/2.
//!
//! | version | `Host` lines | outcome |
//! |---|---|---|
//! | any | two or more | `400`: repeated `Host` |
//! | any | one, not `host[:port]` (userinfo, spaces, a list, bad port) | `400`: invalid `Host` |
//! | HTTP/1.1 | none | `400`: missing `Host` (RFC 9112 §3.2: "MUST respond with a 400") |
//! | HTTP/1.0 | none | accepted (HTTP/1.0 has no `Host` requirement) |
//! | HTTP/2 | one, and `:authority` names another authority | `400` (RFC 9113 §8.3.1: a server SHOULD treat it as malformed) |
//! | HTTP/2 | none, with `:authority` | accepted: `:authority` is the host |
//! | HTTP/2 | none, no `:authority` | accepted by [`serve`](crate::serve()) (§8.3.1 allows a request with no authority information); refused by the WebSocket handshake, whose target URI always has a host (RFC 6455 §3, RFC 8441 §4) |
//!
//! An empty `Host` is valid for HTTP/1.1 in general (RFC 9112 §3.2: a target URI without
//! authority) but not for a WebSocket handshake.

use http::uri::Authority;
use http::{HeaderMap, Uri, Version, header};

/// Why the request's host is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostError {
    /// No `Host` (HTTP/1.1), or no authority at all where one is required.
    Missing,
    /// `Host` sent on more than one line.
    Repeated,
    /// A `Host` value that is not `uri-host [ ":" port ]`.
    Invalid,
    /// Over HTTP/2, `Host` and `:authority` name different authorities.
    Mismatch,
}

impl HostError {
    /// A short, stable description, for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HostError::Missing => "missing Host",
            HostError::Repeated => "repeated Host",
            HostError::Invalid => "invalid Host",
            HostError::Mismatch => "Host differs from :authority",
        }
    }

    /// The body of the `400` answer.
    pub(crate) fn body(self) -> &'static str {
        match self {
            HostError::Missing => "the request needs a Host header (RFC 9112 section 3.2)\n",
            HostError::Repeated => "the Host header must be sent once (RFC 9112 section 3.2)\n",
            HostError::Invalid => "the Host header must be host[:port] (RFC 9112 section 3.2)\n",
            HostError::Mismatch => {
                "the Host header names another authority than :authority (RFC 9113 section 8.3.1)\n"
            }
        }
    }
}

/// Checks the host of a request (see the module's table). `need_host`: the request must name
/// a non-empty host, by `Host` or (HTTP/2) `:authority`, as a WebSocket handshake must.
pub(crate) fn check(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
    need_host: bool,
) -> Result<(), HostError> {
    let mut lines = headers.get_all(header::HOST).iter();
    let host = lines.next();
    if lines.next().is_some() {
        return Err(HostError::Repeated);
    }
    let host = match host {
        Some(value) if value.is_empty() => None,
        Some(value) => Some(parse(value.as_bytes()).ok_or(HostError::Invalid)?),
        None if version == Version::HTTP_11 => return Err(HostError::Missing),
        None => None,
    };
    let authority = if version >= Version::HTTP_2 {
        uri.authority()
    } else {
        None
    };
    if let (Some(host), Some(authority)) = (&host, authority) {
        if !host.as_str().eq_ignore_ascii_case(authority.as_str()) {
            return Err(HostError::Mismatch);
        }
    }
    if need_host && host.is_none() && authority.is_none_or(|a| a.host().is_empty()) {
        return Err(HostError::Missing);
    }
    Ok(())
}

/// `uri-host [ ":" port ]`: an authority without userinfo. A comma, legal in a reg-name
/// but in no real host name, is refused too: it is what two `Host` lines joined look like.
fn parse(value: &[u8]) -> Option<Authority> {
    if value.contains(&b'@') || value.contains(&b',') {
        return None;
    }
    let authority = Authority::try_from(value).ok()?;
    if authority.host().is_empty() {
        return None;
    }
    // `port = *DIGIT` (RFC 3986 §3.2.3); `http` accepts any text after the colon.
    let text = authority.as_str();
    let port = match text.rfind(']') {
        Some(end) => &text[end + 1..],
        None => text.rfind(':').map_or("", |colon| &text[colon..]),
    };
    if let Some(digits) = port.strip_prefix(':') {
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    } else if !port.is_empty() {
        return None;
    }
    Some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(hosts: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for host in hosts {
            map.append(header::HOST, HeaderValue::from_static(host));
        }
        map
    }

    #[test]
    fn http1_hosts() {
        let uri: Uri = "/ws".parse().unwrap();
        let v11 = Version::HTTP_11;
        assert_eq!(check(v11, &uri, &headers(&["a:1"]), true), Ok(()));
        assert_eq!(check(v11, &uri, &headers(&["[::1]:80"]), true), Ok(()));
        assert_eq!(
            check(v11, &uri, &headers(&[]), false),
            Err(HostError::Missing)
        );
        assert_eq!(
            check(v11, &uri, &headers(&["a", "a"]), false),
            Err(HostError::Repeated)
        );
        for bad in ["a,b", "u@a", "a b", "a:x", ":80"] {
            assert_eq!(
                check(v11, &uri, &headers(&[bad]), false),
                Err(HostError::Invalid),
                "{bad}"
            );
        }
        assert_eq!(check(v11, &uri, &headers(&[""]), false), Ok(()));
        assert_eq!(
            check(v11, &uri, &headers(&[""]), true),
            Err(HostError::Missing)
        );
        assert_eq!(check(Version::HTTP_10, &uri, &headers(&[]), false), Ok(()));
    }

    #[test]
    fn http2_authority() {
        let v2 = Version::HTTP_2;
        let with: Uri = "http://a:1/ws".parse().unwrap();
        let without: Uri = "/ws".parse().unwrap();
        assert_eq!(check(v2, &with, &headers(&[]), true), Ok(()));
        assert_eq!(check(v2, &with, &headers(&["A:1"]), true), Ok(()));
        assert_eq!(
            check(v2, &with, &headers(&["b:1"]), true),
            Err(HostError::Mismatch)
        );
        assert_eq!(
            check(v2, &with, &headers(&["a:1", "a:1"]), true),
            Err(HostError::Repeated)
        );
        assert_eq!(check(v2, &without, &headers(&[]), false), Ok(()));
        assert_eq!(
            check(v2, &without, &headers(&[]), true),
            Err(HostError::Missing)
        );
        assert_eq!(check(v2, &without, &headers(&["a"]), true), Ok(()));
    }
}
