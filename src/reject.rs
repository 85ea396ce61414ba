//! Why an upgrade request was turned away: the names admission, the counters and the status
//! page share. A leaf, so that none of them imports another for it.

/// Why an upgrade request was turned away: the `reason` of `<path>/status`, the label of the
/// rejection counters ([`RejectionStats`](crate::RejectionStats)), and the `reason` field of
/// the `warn` event each refusal logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The endpoint was stopped ([`Publisher::stop`](crate::Publisher::stop)): `503`.
    Stopped,
    /// The client IP exceeded its rate limit: `429`.
    RateLimited,
    /// The `Origin` header is not allowed (a foreign origin, a same-origin request to a host
    /// the server does not know, a malformed or repeated `Origin`): `403`.
    Origin,
    /// The request has no `Origin` header and the endpoint requires one
    /// ([`WsLayer::require_origin`](crate::WsLayer::require_origin)): `403`.
    OriginMissing,
    /// The authentication extractor rejected the request: its own status (usually `401`).
    Unauthorized,
    /// The connection cap is reached: `503`.
    ConnectionCap,
    /// The request was not a valid WebSocket upgrade: `426` or `400`.
    NotUpgrade,
    /// The rate limit needs the client IP and the request carries none (no
    /// `ConnectInfo<SocketAddr>`), under
    /// [`MissingClientAddr::Reject`](crate::MissingClientAddr::Reject): `500`.
    MissingConnectInfo,
}

impl RejectReason {
    /// A short, stable, snake_case name, used in logs, metrics and `<path>/status`:
    /// `stopped`, `rate_limited`, `origin`, `origin_missing`, `unauthorized`,
    /// `connection_cap`, `not_upgrade`, `missing_connect_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Stopped => "stopped",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Origin => "origin",
            RejectReason::OriginMissing => "origin_missing",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::ConnectionCap => "connection_cap",
            RejectReason::NotUpgrade => "not_upgrade",
            RejectReason::MissingConnectInfo => "missing_connect_info",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Response extension marking a response as an admission rejection, with its reason: every
/// layer of [`admission`](crate::admission) sets it on the responses it makes, so an outer
/// layer can count or log refusals without parsing bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(pub RejectReason);

/// Response extension: the sentence `<path>/status` shows for this rejection, when it says
/// more than its reason's default (the origin check tells a foreign origin from an unknown
/// host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RejectionMessage(pub(crate) &'static str);
