//! The seam between a producer and this crate, [`EventSink`] (events in), and the private one
//! between the store and a connecting client, [`SnapshotSource`] (its snapshot).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::wire::{Event, Health, SessionState, Timestamp};

/// Receives the monitor's events. The Rust shape of Go's `monitor.EventSink`.
///
/// Implementations must return quickly and never block on a client: the monitor calls this
/// on its own thread for every event. [`Publisher`](crate::Publisher) implements it, and so
/// does the broker's `BrokerSink` (feature `redis`); a producer such as
/// [`Monitor`] publishes into any of them.
///
#[cfg_attr(feature = "monitor", doc = "[`Monitor`]: crate::monitor::Monitor")]
#[cfg_attr(
    not(feature = "monitor"),
    doc = "[`Monitor`]: https://docs.rs/agentwatch-ws/latest/agentwatch_ws/monitor/struct.Monitor.html"
)]
pub trait EventSink: Send + Sync {
    /// Handles one event.
    ///
    /// # Errors
    /// A [`SinkError`] saying why the event could not be handled; the monitor logs it and
    /// goes on with the next event.
    fn handle_event(&self, event: &Event) -> Result<(), SinkError>;
}

impl<T: EventSink + ?Sized> EventSink for Arc<T> {
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        (**self).handle_event(event)
    }
}

impl<T: EventSink + ?Sized> EventSink for Box<T> {
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        (**self).handle_event(event)
    }
}

impl<T: EventSink + ?Sized> EventSink for &T {
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        (**self).handle_event(event)
    }
}

/// The state a client receives on connect.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// The seq of the last event already reflected in `sessions` (0 if none).
    pub(crate) seq: u64,
    /// The `at` of that event, when the source knows it. The `snapshot` event a client gets
    /// carries it as its own `at`, so the client holds a position (`seq`, `at`) it can resume
    /// from (`?since=<seq>&since_at=<at>`). `None`: the hub uses the `at` it recorded for
    /// event `seq`, if it still has it, else the current time (which only means that a resume
    /// from this snapshot's position falls back to a new snapshot).
    pub(crate) at: Option<Timestamp>,
    /// Every session, as of `seq`.
    pub(crate) sessions: Vec<SessionState>,
    /// The latest health of every source that has reported one, as of `seq`: one report per
    /// (`machine`, `source`) pair, so two machines' sources of the same name are two reports.
    ///
    /// A client receives these right after the `snapshot` event, as one `health` event per
    /// report carrying the snapshot's `seq` and `at`: Go's `monitor.Event` has no room for
    /// health in a snapshot, and a monitor reports health only when it changes, so without
    /// them a client that connects to a steady system would never learn any source's status.
    /// Empty is fine: no `health` event follows the snapshot then.
    pub(crate) health: Vec<Health>,
}

/// Where a connecting client's snapshot comes from: the layer's `SessionStore`, or, in the
/// crate's own tests, a closure `Fn() -> Snapshot`.
///
/// # The hand-over contract
/// A connecting client is subscribed to the hub *before* `snapshot()` is called, so every event
/// published while the snapshot is being built is queued for it. Some of those may already be
/// reflected in the snapshot (the store saw them before the hub did). The connection skips
/// the queued events whose `seq` is at most [`Snapshot::seq`] until the first newer one, and
/// delivers everything after that, in publish order, whatever its `seq`. So the client sees
/// each event exactly once, provided `seq` truly is "the last event reflected" and the events
/// racing the connect carry increasing seqs (as the agentwatch monitor's do).
///
/// # Sharing one snapshot
/// A source that can tell cheaply whether its state changed implements
/// [`version`](SnapshotSource::version): clients connecting while it returns the same value
/// share one encoded snapshot, and `snapshot()` is not called for them at all.
pub(crate) trait SnapshotSource: Send + Sync + 'static {
    /// The current state. Called for a connecting client unless its encoded snapshot is
    /// shared (see [`version`](SnapshotSource::version)); must not block for long.
    fn snapshot(&self) -> Snapshot;

    /// A number that changes whenever [`snapshot`](SnapshotSource::snapshot) would return
    /// something different (a count of the events handled, say), or `None` (the default):
    /// every client gets a snapshot of its own.
    ///
    /// While it returns the same value, connecting clients share the snapshot (and the
    /// `health` events after it) encoded once. It is read after the client subscribed, as
    /// `snapshot()` would be, so sharing keeps the hand-over contract exact: an unchanged
    /// version means the shared snapshot *is* the state at that moment. It must be cheap
    /// (it is read on every connect) and must never repeat a value for a different state,
    /// including after a producer restart.
    fn version(&self) -> Option<u64> {
        None
    }
}

impl<F> SnapshotSource for F
where
    F: Fn() -> Snapshot + Send + Sync + 'static,
{
    fn snapshot(&self) -> Snapshot {
        self()
    }
}

impl<T: SnapshotSource + ?Sized> SnapshotSource for Arc<T> {
    fn snapshot(&self) -> Snapshot {
        (**self).snapshot()
    }

    fn version(&self) -> Option<u64> {
        (**self).version()
    }
}

/// Why an [`EventSink`] could not handle an event.
#[derive(Debug)]
#[non_exhaustive]
pub enum SinkError {
    /// The event could not be encoded in Go's wire format (a non-finite float, a year outside
    /// 0..=9999). No client received it.
    Encode {
        /// The event's seq.
        seq: u64,
        /// What the encoder said.
        source: serde_json::Error,
    },
    /// Any other failure, from a user-written sink.
    Other(Box<dyn StdError + Send + Sync + 'static>),
}

impl SinkError {
    /// Wraps any error from a user-written sink.
    pub fn other(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        SinkError::Other(error.into())
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The encoder's message is the source (`Error::source`), not part of this one:
            // a reporter that walks the chain prints each message once.
            SinkError::Encode { seq, .. } => write!(f, "cannot encode event seq {seq}"),
            SinkError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// Each message of the chain appears once: `Encode` leaves the encoder's message to
/// `source()`; `Other` is transparent (it displays the wrapped error and hands on *its*
/// source).
impl StdError for SinkError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SinkError::Encode { source, .. } => Some(source),
            SinkError::Other(e) => e.source(),
        }
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;

    /// Every message of an error's chain, outermost first.
    fn chain(error: &dyn StdError) -> Vec<String> {
        let mut messages = vec![error.to_string()];
        let mut next = error.source();
        while let Some(e) = next {
            messages.push(e.to_string());
            next = e.source();
        }
        messages
    }

    #[test]
    fn each_message_of_an_error_chain_appears_once() {
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let json_text = json.to_string();
        let encode = SinkError::Encode {
            seq: 4,
            source: json,
        };
        assert_eq!(chain(&encode), ["cannot encode event seq 4", &json_text]);

        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("redis append failed")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let other = SinkError::other(Outer(std::io::Error::other("connection refused")));
        assert_eq!(
            chain(&other),
            ["redis append failed", "connection refused"],
            "Other is transparent"
        );
    }
}
