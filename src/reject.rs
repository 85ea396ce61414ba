//! Why an upgrade request was turned away: the names admission, the counters and the status
//! page share. A leaf, so that none of them imports another for it.

/// Why an upgrade request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The endpoint was stopped ([`Publisher::stop`](crate::Publisher::stop)): `503`.
    Stopped,
    /// The client IP exceeded its rate limit: `429`.
    RateLimited,
    /// The `Origin` header is missing (with an allowlist), malformed or not allowed: `403`.
    Origin,
    /// The authentication extractor rejected the request.
    Unauthorized,
    /// The connection cap is reached: `503`.
    ConnectionCap,
    /// The request was not a valid WebSocket upgrade: `426` or `400`.
    NotUpgrade,
    /// The server was not started with connect info, so the client IP is unknown: `500`.
    MissingConnectInfo,
}

impl RejectReason {
    /// A short, stable, snake_case name, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Stopped => "stopped",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Origin => "origin",
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

/// Response extension marking a response as an admission rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(pub RejectReason);
