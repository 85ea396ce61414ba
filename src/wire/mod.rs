//! The wire model: agentwatch's Go `monitor.Event` and everything it carries,
//! byte-compatible with Go's `encoding/json`.
//!
//! Every WebSocket message is one [`Event`] as JSON text. The types here mirror the Go
//! structs field for field (same JSON keys, same order, same `omitempty` rules), so a
//! browser client written against the Go server works unchanged.
//!
//! * **Encode** with [`to_vec`], [`to_writer`] or [`Event::to_json`]: the output is
//!   byte-for-byte what Go's `json.Marshal` produces (compact, no trailing newline,
//!   Go's string escaping and float layout, Go's RFC 3339 timestamps). The types also
//!   implement [`serde::Serialize`], so they can be embedded in your own structures;
//!   plain `serde_json::to_string` then gives valid JSON with the same value, but not
//!   necessarily Go's bytes (see [`GoFormatter`]).
//! * **Decode** with [`Event::from_json`], [`from_slice`] or any serde deserializer, with
//!   Go's `json.Unmarshal` rules: unknown keys are ignored, missing keys and `null` give
//!   Go's zero values, a repeated key merges into what the earlier one left, unknown enum
//!   values are kept in `Other(String)` and re-encoded unchanged (see
//!   [`Event`'s Decoding section](Event#decoding)). [`Event::from_json`] and
//!   [`from_slice`] also read invalid UTF-8 and lone surrogate escapes in strings as
//!   U+FFFD, as Go does; plain serde_json rejects them.
//! * Values Go refuses to encode are errors here too, never panics: a NaN or infinite
//!   [`SessionState::context_utilization`], or a [`Timestamp`] whose year is outside
//!   0..=9999.
//!
//! ```
//! use agentwatch_ws::{Event, wire};
//!
//! let go_bytes = br#"{"seq":104,"at":"2025-03-14T09:13:00Z","type":"lifecycle","lifecycle":{"type":"stale","sessionId":"a8d0","source":"codex","from":"active","to":"terminal","at":"2025-03-14T09:13:00Z","reason":"no data for 10m0s"}}"#;
//! let ev = Event::from_json(go_bytes)?;
//! assert_eq!(ev.lifecycle.as_ref().ok_or("no lifecycle")?.reason, "no data for 10m0s");
//! assert_eq!(wire::to_vec(&ev)?, go_bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buf;
mod decode;
mod enums;
mod json;
mod model;
mod time;

pub use decode::from_slice;
pub use enums::{Activity, EventType, HealthStatus, LifecycleEventType, LifecycleState};
pub use json::{GoFormatter, to_vec, to_writer};
pub use model::{Event, Health, LifecycleEvent, SessionState, SubagentState};
pub use time::{Timestamp, TimestampError};
