//! Where a bearer token travels on a WebSocket upgrade, and how an axum extractor reads it.
//!
//! A browser's `new WebSocket(url, protocols)` cannot set `Authorization`, so a page needs
//! another carrier. Three work, each read by one function here:
//!
//! | carrier | page | read with | caveat |
//! |---|---|---|---|
//! | subprotocol | `new WebSocket(url, ["agentwatch.v1", "agentwatch.token." + base64url(token)])` | [`token_from_subprotocols`] | the token must also be offered with `agentwatch.v1` (the server echoes only that one, never the token) |
//! | cookie | set by the app's login (`HttpOnly; Secure; SameSite=Strict`, ideally with the `__Host-` name prefix) and sent by the browser | [`tokens_from_cookie`] | any page can make the browser send it: keep the [origin check](super::origin) on; several cookies of one name can arrive (one planted by a sibling subdomain): check every candidate |
//! | query parameter | `new WebSocket(url + "?access_token=" + encodeURIComponent(token))` | [`token_from_query`] | the URL lands in access logs and `TraceLayer` spans (log it through [`redact`](crate::redact)): prefer the subprotocol |
//! | `Authorization: Bearer` | (non-browser clients only) | [`token_from_authorization`] | |
//!
//! [`BearerToken`] is an extractor that looks in `Authorization`, then the subprotocol, then
//! `?access_token=` (RFC 6750 §2.3), and answers `401` with `WWW-Authenticate: Bearer` when
//! none carries a token. An app checks the token in its own extractor and converts it into an
//! [`Identity`](crate::Identity), as `examples/axum_app.rs` does:
//!
//! ```
//! use agentwatch_ws::admission::token::{BearerToken, TokenRejection};
//! use agentwatch_ws::{Identity, WsLayer};
//! use axum::extract::FromRequestParts;
//! use http::request::Parts;
//!
//! struct User(String);
//!
//! impl<S: Send + Sync> FromRequestParts<S> for User {
//!     type Rejection = TokenRejection;
//!
//!     async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
//!         let BearerToken(token) = BearerToken::from_request_parts(parts, state).await?;
//!         match token.as_str() {
//!             "s3cret-alice" => Ok(User("alice".into())),
//!             _ => Err(TokenRejection::Invalid),
//!         }
//!     }
//! }
//!
//! impl From<User> for Identity {
//!     fn from(User(name): User) -> Self {
//!         Identity::new(name)
//!     }
//! }
//!
//! let (app, _publisher): (axum::Router, _) = WsLayer::new().auth::<User>().build("/ws");
//! ```
//!
//! A session cookie works the same way, from [`tokens_from_cookie`]: accept the request when
//! any candidate is a valid session (a planted cookie must not hide the real one).
//!
//! ```
//! use agentwatch_ws::admission::token::{TokenRejection, tokens_from_cookie};
//! use agentwatch_ws::Identity;
//! use axum::extract::FromRequestParts;
//! use http::request::Parts;
//!
//! struct Session(String);
//!
//! impl<S: Send + Sync> FromRequestParts<S> for Session {
//!     type Rejection = TokenRejection;
//!
//!     async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
//!         tokens_from_cookie(parts, "__Host-aw_session")
//!             .find_map(|token| (token == "s3cret-bob").then(|| Session("bob".into())))
//!             .ok_or(TokenRejection::Invalid)
//!     }
//! }
//!
//! impl From<Session> for Identity {
//!     fn from(Session(name): Session) -> Self {
//!         Identity::new(name)
//!     }
//! }
//! ```
//!
//! The subprotocol carrier needs the token as an HTTP token (RFC 6455 §4.1): base64url
//! without padding (RFC 4648 §5) does that for any bytes. [`token_protocol`] builds it for
//! Rust clients; in a page: `btoa(token).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")`
//! (for an ASCII token).

use std::convert::Infallible;
use std::fmt;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};

use super::{RejectReason, rejection};

/// The prefix of a subprotocol carrying a token: `agentwatch.token.<base64url token>`. The
/// server never chooses (so never echoes) such a protocol.
pub const TOKEN_PROTOCOL_PREFIX: &str = "agentwatch.token.";

/// The query parameter [`BearerToken`] reads (RFC 6750 §2.3).
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Longest token the subprotocol and query carriers decode, in bytes of their encoded form:
/// anything longer is ignored (a header line is bounded by hyper anyway; this bounds the
/// allocation).
pub const MAX_TOKEN_LEN: usize = 4096;

/// The token of an `Authorization: Bearer <token>` header (scheme compared
/// case-insensitively, RFC 9110 §11.1), if sent once and non-empty.
pub fn token_from_authorization(parts: &Parts) -> Option<&str> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token carried by an offered subprotocol `agentwatch.token.<base64url>` (RFC 4648 §5,
/// without padding), decoded; `None` when no such protocol is offered, its payload is not
/// base64url, longer than [`MAX_TOKEN_LEN`], or does not decode to UTF-8. The first carrier
/// offered wins.
///
/// ```
/// use agentwatch_ws::admission::token::{token_from_subprotocols, token_protocol};
///
/// let offer = format!("agentwatch.v1, {}", token_protocol("s3cret"));
/// assert_eq!(offer, "agentwatch.v1, agentwatch.token.czNjcmV0");
/// let request = http::Request::get("/ws").header("sec-websocket-protocol", offer).body(())?;
/// let (parts, ()) = request.into_parts();
/// assert_eq!(token_from_subprotocols(&parts).as_deref(), Some("s3cret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn token_from_subprotocols(parts: &Parts) -> Option<String> {
    let encoded = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|element| element.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX))?;
    if encoded.len() > MAX_TOKEN_LEN {
        return None;
    }
    String::from_utf8(base64url_decode(encoded)?).ok()
}

/// Every value of cookie `name` that can be a token, in the order the client sent them: the
/// candidates an extractor checks, accepting the request when **any** of them is valid.
///
/// A client may send several cookies of one name (RFC 6265 §4.2.2: one per path or domain
/// that set it, longer paths first, on one `Cookie` line or several, §5.4); a sibling
/// subdomain or a page over plain HTTP can set one ahead of the app's own (cookie tossing).
/// So no position wins: a planted cookie, empty or wrong, never hides a valid one sent
/// after it. Skipped, never yielded:
///
/// - empty values (`name=`, `name=""`);
/// - values that are not a `cookie-value` (RFC 6265 §4.1.1: `*cookie-octet` or the same
///   between one pair of double quotes, which are removed; no space, comma, semicolon,
///   backslash, control character, inner or unbalanced quote);
/// - values longer than [`MAX_TOKEN_LEN`].
///
/// Names are compared exactly (case-sensitive, as browsers do); whitespace around `;`
/// separators and around the pair is ignored.
///
/// ```
/// use agentwatch_ws::admission::token::tokens_from_cookie;
///
/// let request = http::Request::get("/ws")
///     .header("cookie", "aw_session=; theme=dark; aw_session=planted")
///     .header("cookie", "aw_session=\"s3cret\"")
///     .body(())?;
/// let (parts, ()) = request.into_parts();
/// let candidates: Vec<&str> = tokens_from_cookie(&parts, "aw_session").collect();
/// assert_eq!(candidates, ["planted", "s3cret"]);
/// // The extractor accepts the request if any candidate checks out.
/// assert!(tokens_from_cookie(&parts, "aw_session").any(|token| token == "s3cret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tokens_from_cookie<'a>(
    parts: &'a Parts,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| cookie_value(value.trim()))?
        })
}

/// RFC 6265 §4.1.1 `cookie-value = *cookie-octet / ( DQUOTE *cookie-octet DQUOTE )`, the
/// quotes removed; `None` when it is not one, is empty, or is longer than [`MAX_TOKEN_LEN`].
fn cookie_value(value: &str) -> Option<&str> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => value,
    };
    let is_cookie_octet =
        |b: u8| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
    (!inner.is_empty() && inner.len() <= MAX_TOKEN_LEN && inner.bytes().all(is_cookie_octet))
        .then_some(inner)
}

/// The percent-decoded value of query parameter `name` (`+` is not a space here: tokens are
/// not form data); `None` when absent, empty, malformed or longer than [`MAX_TOKEN_LEN`].
pub fn token_from_query(parts: &Parts, name: &str) -> Option<String> {
    let raw = query_param(parts, name)?;
    if raw.is_empty() || raw.len() > MAX_TOKEN_LEN {
        return None;
    }
    percent_decode(raw)
}

/// The subprotocol that carries `token`: `agentwatch.token.` + base64url(token), no padding.
/// Offer it together with [`PROTOCOL`](crate::PROTOCOL).
pub fn token_protocol(token: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::from(TOKEN_PROTOCOL_PREFIX);
    for chunk in token.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Decodes unpadded base64url (RFC 4648 §5); `None` on any other character or an impossible
/// length.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The raw (still percent-encoded) value of the first `name=` pair of the request's query.
pub(crate) fn query_param<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.uri.query()?.split('&').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// Decodes `%XX` escapes. `None` for a malformed escape or a result that is not UTF-8.
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A bearer token from whichever carrier the client used: `Authorization: Bearer`, then a
/// `agentwatch.token.…` subprotocol, then `?access_token=`. It says nothing about the token's
/// validity: check it in your own extractor (see the [module docs](self)).
///
/// Rejects with [`TokenRejection::Missing`] (`401`, `WWW-Authenticate: Bearer`) when no
/// carrier holds one.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(pub String);

impl fmt::Debug for BearerToken {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// The token from the request head, if any carrier holds one.
    pub fn from_parts(parts: &Parts) -> Option<Self> {
        token_from_authorization(parts)
            .map(str::to_owned)
            .or_else(|| token_from_subprotocols(parts))
            .or_else(|| token_from_query(parts, ACCESS_TOKEN_PARAM))
            .map(BearerToken)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = TokenRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts).ok_or(TokenRejection::Missing)
    }
}

/// Why a bearer token was not accepted: `401 Unauthorized` with `WWW-Authenticate: Bearer`
/// (RFC 6750 §3) and a short body, marked [`RejectReason::Unauthorized`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRejection {
    /// No carrier held a token.
    Missing,
    /// A token was sent but the app did not accept it (for the app's own extractor to return).
    Invalid,
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRejection::Missing => "missing bearer token",
            TokenRejection::Invalid => "invalid bearer token",
        })
    }
}

impl std::error::Error for TokenRejection {}

impl IntoResponse for TokenRejection {
    fn into_response(self) -> Response {
        let (body, challenge) = match self {
            TokenRejection::Missing => ("missing bearer token\n", "Bearer"),
            TokenRejection::Invalid => ("invalid bearer token\n", "Bearer error=\"invalid_token\""),
        };
        let mut response = rejection(
            RejectReason::Unauthorized,
            StatusCode::UNAUTHORIZED,
            body,
            None,
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// Never fails: a request without a token gives `None`.
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for BearerToken {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

#[cfg(test)]
mod tests {
    // unwrap() here asserts on values the test built itself.
    use super::*;

    fn parts(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Parts {
        build(http::Request::get("/ws"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for token in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "s3cret-ålice/+=",
            "\u{1F600}xyz",
        ] {
            let protocol = token_protocol(token);
            let encoded = protocol.strip_prefix(TOKEN_PROTOCOL_PREFIX).unwrap();
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{encoded}"
            );
            assert_eq!(base64url_decode(encoded).unwrap(), token.as_bytes());
        }
        assert_eq!(token_protocol("s3cret"), "agentwatch.token.czNjcmV0");
        for bad in ["a", "ab=c", "czNj cmV0", "czNjcmV0=", "+/+/"] {
            assert_eq!(base64url_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_carrier_is_read() {
        let p = parts(|b| b.header("authorization", "bearer  abc "));
        assert_eq!(token_from_authorization(&p), Some("abc"));
        let p = parts(|b| b.header("authorization", "Basic abc"));
        assert_eq!(token_from_authorization(&p), None);

        let p = parts(|b| {
            b.header("sec-websocket-protocol", "agentwatch.v1")
                .header("sec-websocket-protocol", "x, agentwatch.token.czNjcmV0")
        });
        assert_eq!(token_from_subprotocols(&p).as_deref(), Some("s3cret"));
        let p = parts(|b| b.header("sec-websocket-protocol", "agentwatch.token.!!"));
        assert_eq!(token_from_subprotocols(&p), None);

        let p = parts(|b| {
            b.header("cookie", "theme=dark")
                .header("cookie", "aw_token=\"t0k\"; other=1")
        });
        fn cookies(p: &Parts) -> Vec<&str> {
            tokens_from_cookie(p, "aw_token").collect()
        }
        assert_eq!(cookies(&p), ["t0k"]);
        assert_eq!(tokens_from_cookie(&p, "aw").next(), None);
        // RFC 6265 §4.1.1: one pair of quotes, removed; nothing else outside cookie-octets.
        for (line, expected) in [
            ("aw_token=", &[][..] as &[&str]),
            ("aw_token=\"\"", &[]),
            ("aw_token=\"a", &[]),
            ("aw_token=a\"", &[]),
            ("aw_token=\"\"a\"\"", &[]),
            ("aw_token=\"a\"b\"", &[]),
            ("aw_token=a b", &[]),
            ("aw_token=a\\b", &[]),
            ("aw_token=a,b", &[]),
            ("AW_TOKEN=a", &[]),
            ("aw_token = a ", &["a"][..]),
            ("aw_token=a=b", &["a=b"]),
            ("aw_token=; aw_token=x; aw_token=\"y\"", &["x", "y"]),
        ] {
            let p = parts(|b| b.header("cookie", line));
            assert_eq!(cookies(&p), expected, "{line}");
        }

        let p = parts(|b| b.uri("/ws?since=3&access_token=a%2Bb%3D"));
        assert_eq!(
            token_from_query(&p, "access_token").as_deref(),
            Some("a+b=")
        );
        let p = parts(|b| b.uri("/ws?access_token=%zz"));
        assert_eq!(token_from_query(&p, "access_token"), None);
    }

    #[test]
    fn bearer_token_prefers_authorization_then_subprotocol_then_query() {
        let p = parts(|b| {
            b.uri("/ws?access_token=q")
                .header("sec-websocket-protocol", token_protocol("p"))
                .header("authorization", "Bearer h")
        });
        assert_eq!(BearerToken::from_parts(&p), Some(BearerToken("h".into())));
        let p = parts(|b| {
            b.uri("/ws?access_token=q")
                .header("sec-websocket-protocol", token_protocol("p"))
        });
        assert_eq!(BearerToken::from_parts(&p), Some(BearerToken("p".into())));
        let p = parts(|b| b.uri("/ws?access_token=q"));
        assert_eq!(BearerToken::from_parts(&p), Some(BearerToken("q".into())));
        assert_eq!(BearerToken::from_parts(&parts(|b| b)), None);
        assert_eq!(
            format!("{:?}", BearerToken("secret".into())),
            "BearerToken(..)"
        );
    }
}
