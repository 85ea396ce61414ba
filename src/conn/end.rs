//! Why a connection ended: what the client is told (the close frame, RFC 6455 §7.4.1), what
//! is logged and what is counted.

use axum::extract::ws::close_code;
use tungstenite::error::{Error as WsError, ProtocolError};

use super::inflate::InflateError;
use crate::counters::{CountedEnd, Counters};

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Stopped,
    ClientClosed,
    PeerGone,
    /// Reading failed below the WebSocket protocol (the connection broke).
    ReadError,
    /// The client broke the protocol (an unmasked or reserved frame, a fragmented control
    /// frame…).
    ProtocolError,
    /// A text message that is not UTF-8.
    InvalidText,
    /// A compressed message that is not valid deflate data (permessage-deflate).
    InvalidCompressed,
    WriteError,
    MessageTooBig,
    /// The client sent more than its inbound budget: see `inbound.rs`.
    InboundFlood,
    Lagging,
    WriteTimeout,
    HeartbeatTimeout,
    EncodeError,
}

impl End {
    /// How reading from the client ended, when it did.
    pub(super) fn from_read(error: &WsError) -> End {
        match error {
            WsError::Capacity(_) => End::MessageTooBig,
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::PeerGone,
            WsError::Protocol(_) => End::ProtocolError,
            WsError::Utf8(_) => End::InvalidText,
            WsError::Io(error)
                if error
                    .get_ref()
                    .is_some_and(|inner| inner.is::<InflateError>()) =>
            {
                End::InvalidCompressed
            }
            _ => End::ReadError,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            End::Stopped => "server stopping",
            End::ClientClosed => "client closed",
            End::PeerGone => "connection dropped",
            End::ReadError => "read error",
            End::ProtocolError => "protocol error",
            End::InvalidText => "invalid UTF-8 in a text message",
            End::InvalidCompressed => "invalid compressed data in a message",
            End::WriteError => "write error",
            End::MessageTooBig => "inbound message too big",
            End::InboundFlood => "sent more than the inbound limit",
            End::Lagging => "too slow: fell send_buffer events behind",
            End::WriteTimeout => "write timeout",
            End::HeartbeatTimeout => "heartbeat timeout",
            End::EncodeError => "snapshot encoding failed",
        }
    }

    /// The close frame to send, if the socket can still take one.
    pub(super) fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            End::Stopped => Some((close_code::AWAY, "server stopping")),
            End::Lagging => Some((close_code::AGAIN, "too slow: fell behind the event stream")),
            End::MessageTooBig => Some((close_code::SIZE, "message too big")),
            End::InboundFlood => Some((
                close_code::POLICY,
                "policy violation: too much inbound traffic",
            )),
            End::ProtocolError => Some((close_code::PROTOCOL, "protocol error")),
            End::InvalidText => Some((close_code::INVALID, "invalid UTF-8")),
            End::InvalidCompressed => Some((close_code::INVALID, "invalid compressed data")),
            End::EncodeError => Some((close_code::ERROR, "internal error")),
            // The socket is stuck, gone or closing already: nothing more to say on it.
            End::WriteTimeout
            | End::HeartbeatTimeout
            | End::ClientClosed
            | End::PeerGone
            | End::ReadError
            | End::WriteError => None,
        }
    }

    /// Counts the end in the hub's stats.
    pub(super) fn count(self, counters: &Counters) {
        counters.record_end(match self {
            End::Lagging => CountedEnd::EvictedLagging,
            End::WriteTimeout => CountedEnd::EvictedWriteTimeout,
            End::HeartbeatTimeout => CountedEnd::HeartbeatTimeout,
            End::InboundFlood => CountedEnd::InboundFlood,
            End::ProtocolError | End::InvalidText | End::InvalidCompressed | End::MessageTooBig => {
                CountedEnd::ProtocolError
            }
            _ => return,
        });
    }

    /// Logs the end, at the level it deserves.
    pub(super) fn log(self) {
        match self {
            End::Lagging | End::WriteTimeout | End::HeartbeatTimeout => {
                tracing::warn!(reason = self.as_str(), "client evicted")
            }
            End::InboundFlood
            | End::ProtocolError
            | End::InvalidText
            | End::InvalidCompressed
            | End::MessageTooBig => {
                tracing::warn!(reason = self.as_str(), "client closed for what it sent")
            }
            End::EncodeError => tracing::error!(reason = self.as_str(), "client closed"),
            _ => tracing::info!(reason = self.as_str(), "client disconnected"),
        }
    }
}
