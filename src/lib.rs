//! agentwatch-ws (crate docs written last)

pub mod admission;
mod conn;
mod hub;
mod layer;
mod sink;
mod store;
pub mod wire;

pub use admission::auth::{Authenticator, Identity};
pub use admission::{RejectReason, Rejected};
pub use hub::{Hub, HubStats, RejectionStats};
pub use layer::WsLayer;
pub use sink::{EventSink, MultiSink, SinkError, Snapshot, SnapshotSource};
pub use store::SessionStore;
pub use wire::{
    Activity, Event, EventType, Health, HealthStatus, LifecycleEvent, LifecycleEventType,
    LifecycleState, SessionState, SubagentState, Timestamp,
};
