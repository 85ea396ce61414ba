//! Request URIs fit for logs: token carriers removed.
//!
//! A browser can only send a token on a WebSocket upgrade in a subprotocol, a cookie or the
//! query string (see [`admission::token`](crate::admission::token)); the query string is part
//! of the URI that access logs and `tower_http::trace::TraceLayer` spans print, and a span's
//! fields are printed again with every event inside it, the crate's own warnings included.
//! The crate's own events never carry a URI, header, cookie or offered subprotocol. For
//! spans of your own, print [`RedactedUri`] instead of the URI, or give `TraceLayer` this
//! module's [`make_span`]:
//!
//! ```
//! use agentwatch_ws::WsLayer;
//! use axum::Router;
//! use tower_http::trace::TraceLayer;
//!
//! let (ws, _publisher) = WsLayer::new().build("/ws");
//! let app: Router = Router::new()
//!     .merge(ws)
//!     .layer(TraceLayer::new_for_http().make_span_with(agentwatch_ws::redact::make_span));
//! ```
//!
//! What is kept: the path, and the query parameters this crate reads that carry no secret
//! (`since`, `since_at`) with their values. Every other parameter keeps its name (when it is
//! a short plain name) and loses its value: `/ws?since=4&access_token=s3cret` is logged as
//! `/ws?since=4&access_token=<redacted>`. Headers are never printed: keep `TraceLayer`'s
//! `DefaultMakeSpan::include_headers` off (its default), since `Authorization`, `Cookie` and
//! `Sec-WebSocket-Protocol` carry tokens.

use std::fmt;

use http::{Request, Uri};

/// Query parameters printed with their values: the ones the WebSocket endpoint reads, none
/// of them a secret.
const KEPT: &[&str] = &["since", "since_at"];

/// What replaces a value that is not printed.
pub const REDACTED: &str = "<redacted>";

/// Longest parameter name printed (longer ones are replaced whole): a token sent as a bare
/// name must not leak through the name.
const MAX_NAME_LEN: usize = 32;

/// A URI that displays without its secrets: the path, then the query with every value but
/// those of `since` and `since_at` replaced by [`REDACTED`] (see the [module docs](self)).
/// Never prints a scheme, authority or fragment.
///
/// ```
/// use agentwatch_ws::redact::RedactedUri;
///
/// let uri: http::Uri = "/ws?since=4&access_token=s3cret&s3cret2".parse()?;
/// assert_eq!(
///     RedactedUri(&uri).to_string(),
///     "/ws?since=4&access_token=<redacted>&<redacted>"
/// );
/// # Ok::<(), http::uri::InvalidUri>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RedactedUri<'a>(pub &'a Uri);

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.path())?;
        let Some(query) = self.0.query() else {
            return Ok(());
        };
        f.write_str("?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((name, _)) if KEPT.contains(&name) => f.write_str(pair)?,
                Some((name, _)) if is_plain_name(name) => write!(f, "{name}={REDACTED}")?,
                None if pair.is_empty() => {}
                _ => f.write_str(REDACTED)?,
            }
        }
        Ok(())
    }
}

/// A parameter name that is safe to print: short, letters, digits, `_`, `-`, `.`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A `DEBUG` span named `request` with the request's `method`, redacted `uri` (see
/// [`RedactedUri`]) and `version`: the fields of `tower_http`'s `DefaultMakeSpan`, without
/// the secrets. Pass it to `TraceLayer::make_span_with`.
pub fn make_span<B>(request: &Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %RedactedUri(request.uri()),
        version = ?request.version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(uri: &str) -> String {
        RedactedUri(&uri.parse().unwrap()).to_string()
    }

    #[test]
    fn only_known_parameters_keep_their_values() {
        assert_eq!(shown("/ws"), "/ws");
        assert_eq!(shown("http://user:pw@h:1/ws?since=1#f"), "/ws?since=1");
        assert_eq!(
            shown("/ws?token=a&access_token=b&since_at=x&key"),
            "/ws?token=<redacted>&access_token=<redacted>&since_at=x&<redacted>"
        );
        assert_eq!(shown("/ws?access%5Ftoken=a"), "/ws?<redacted>");
        assert_eq!(shown("/ws?since=1&&x="), "/ws?since=1&&x=<redacted>");
        assert_eq!(
            shown(&format!("/ws?{}=v", "n".repeat(40))),
            "/ws?<redacted>"
        );
    }
}
