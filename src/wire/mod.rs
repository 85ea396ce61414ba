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
//!
//! # What a client receives
//!
//! A client connecting without `since` first gets a `snapshot` (every session; its `seq` is
//! the last event it reflects), then one `health` event per source that has reported (per
//! (`machine`, `source`) pair where a broker node serves several producers: its latest report, with the snapshot's `seq` and `at`), then every later event once, in
//! publish order. Captured from `cargo run --example dashboard -- --demo` (long lines cut
//! here; the `snapshot` had 11 sessions):
//!
//! ```json
//! {"seq":163,"at":"2026-11-29T20:41:27.773381742Z","type":"snapshot","sessions":[{"id":"e5a5cf8f-7c15-499c-8d66-bf3333387e07","source":"claude","slug":"terraform-upgrade","activity":"waiting","lifecycle":"active","contextTokens":153565,"outputTokens":17355,"tokenEstimated":false,"maxContextTokens":200000,"contextUtilization":0.767825,"model":"claude-opus-4-1","workingDir":"/home/dev/src/infra","branch":"main","currentTool":"Glob","messageCount":150,"toolCallCount":74,"compactionCount":0,"startedAt":"2026-11-29T20:05:58.639Z","lastActivityAt":"2026-11-29T20:41:25.673369077Z","lastDataReceivedAt":"2026-11-29T20:41:25.673369077Z"}]}
//! {"seq":163,"at":"2026-11-29T20:41:27.773381742Z","type":"health","health":{"source":"claude","status":"healthy","discoverFailures":0,"parseFailures":0,"updatedAt":"2026-11-29T20:41:19.67235616Z"}}
//! {"seq":165,"at":"2026-11-29T20:41:27.872909992Z","type":"delta","updates":[{"id":"d26bd496-d170-4294-b544-186f03ab3f7a","source":"codex","slug":"fix-stale-detection","activity":"waiting","lifecycle":"active","contextTokens":17568,"outputTokens":1858,"tokenEstimated":false,"maxContextTokens":272000,"contextUtilization":0.06458823529411764,"model":"gpt-5","workingDir":"/home/dev/src/agentwatch","branch":"feature/fix-stale-detection","currentTool":"apply_patch","messageCount":3,"toolCallCount":1,"compactionCount":0,"startedAt":"2026-11-29T20:41:26.32341811Z","lastActivityAt":"2026-11-29T20:41:27.423666798Z","lastDataReceivedAt":"2026-11-29T20:41:27.423666798Z"}]}
//! {"seq":177,"at":"2026-11-29T20:41:28.473519653Z","type":"lifecycle","lifecycle":{"type":"resumed","sessionId":"6339e57c-03e4-439a-9ba8-d6fc660350de","source":"claude","from":"terminal","to":"active","at":"2026-11-29T20:41:28.473504039Z","reason":"new data after terminal"}}
//! {"seq":195,"at":"2026-11-29T20:41:29.323865438Z","type":"health","health":{"source":"gemini","status":"degraded","discoverFailures":0,"parseFailures":2,"lastError":"parse checkpoint: invalid character '\\x00' looking for beginning of value","updatedAt":"2026-11-29T20:41:29.323811308Z"}}
//! ```
//!
//! A `delta` carries sessions updated (whole) and ids removed (`removed` is omitted when
//! empty); a `health` after the snapshot reports a source whose status changed.
//!
//! Why the `health` events after a snapshot: Go's `monitor.Event` has no room for health in
//! a snapshot, and a monitor reports a source's health only when it changes, so a client
//! connecting to a steady system would never learn any source's status. The reports reuse
//! the snapshot's `seq` rather than taking new ones, so a Go client decoding `monitor.Event`
//! sees ordinary `health` events, a client applying events in order ends with every source's
//! current status, its last `seq` never goes backwards, and resuming from that `seq` stays
//! exact (a resumed client already has the reports, and gets only what changed since).
//!
//! # Reconnecting
//!
//! Keep the `seq` and the `at` of the last event applied (a `snapshot` included) and
//! reconnect with `?since=<seq>&since_at=<at>`, the `at` exactly as received, URL-encoded.
//! If the server still holds every event after it, the client gets exactly those, then the
//! live stream, and no snapshot; otherwise a `snapshot` first. One rule covers both: a
//! `snapshot` replaces the client's state, anything else applies on top.
//!
//! ```js
//! let lastSeq = null, lastAt = null, delay = 500;
//! function connect() {
//!   let url = `${location.origin.replace(/^http/, "ws")}/ws`;
//!   if (lastSeq !== null) url += `?since=${lastSeq}&since_at=${encodeURIComponent(lastAt)}`;
//!   const ws = new WebSocket(url);
//!   ws.onmessage = (msg) => {
//!     const ev = JSON.parse(msg.data);
//!     if (ev.type === "snapshot") replaceAll(ev.sessions || []); else apply(ev);
//!     lastSeq = ev.seq; lastAt = ev.at;   // the position: this very event
//!     delay = 500;                        // healthy again: reset the backoff
//!   };
//!   ws.onclose = () => {                  // 1001 server stopping, 1013 too slow, network loss...
//!     setTimeout(connect, delay + Math.random() * delay / 2);
//!     delay = Math.min(delay * 2, 15000); // exponential backoff with jitter, capped
//!   };
//! }
//! connect();
//! ```
//!
//! Why `since_at`: seqs say nothing about which server issued them. After a restart the new
//! server's seqs start again and soon pass the client's, and replaying them onto state from
//! its predecessor would be wrong. The pair (`seq`, `at`) names one event: the server
//! resumes a client only if its window holds that very event with that very `at`, an
//! identity check, never a comparison of clocks. Nodes that serve the same events (several
//! servers behind one broker) accept each other's positions. `since` alone (Go clients; also
//! read from a `Last-Event-ID` header) is trusted by seq, as in Go. A `since` older than the
//! window, ahead of the newest event or not a number, and a `since_at` that is not the
//! event's `at`, get a snapshot, never an error; so does any position from before a producer
//! restart (seq going backwards). A `snapshot_at` sent without `since_at` gets a snapshot.
//!
//! # Close codes
//!
//! | code | when |
//! |---|---|
//! | 1001 going away | the server stops (`Publisher::stop`) |
//! | 1013 try again later | the client fell the send buffer behind (lag policy `Disconnect`) |
//! | 1008 policy violation | the client sent more than its inbound budget (below) |
//! | 1009 message too big | the client sent a message or frame over the maximum message size (a compressed one: once inflated, which stops there) |
//! | 1002 protocol error | the client broke RFC 6455 (unmasked or reserved frame, fragmented control frame, a close frame with an invalid code such as 1005 or a one-byte payload) |
//! | 1007 invalid payload | a text message that is not UTF-8; with permessage-deflate, a compressed message that is not valid deflate data |
//! | 1011 internal error | the snapshot could not be encoded |
//! | the client's own | the client closed: its close frame is answered with its code (RFC 6455 §5.5.1) |
//!
//! The close frame follows the frame in progress, if the socket takes it within 1 s. Then
//! the server shuts down its write half and reads and discards what the client still sends
//! until the client's close frame or end of stream (1 s at most; past 1 MiB it stops reading
//! and waits out the second), so that no TCP reset overtakes the close frame: a browser sees
//! the code and reason, not 1006. A client whose socket accepts no byte for the write
//! timeout, and one that answers no ping, are dropped without a close frame.
//!
//! **What a client may send.** The stream is server-to-client; clients only answer pings
//! (and close). Everything a client sends is read and discarded, and every byte of it
//! (pings, pongs, data, fragments, and a compressed message's inflated bytes on top of its
//! compressed ones) counts against a token bucket of 64 KiB (or 4 × the
//! maximum message size, if larger) refilled at a quarter of that per second: overdrawing
//! it closes with 1008. At most one pong waits per client (a newer ping replaces an
//! unanswered one, as RFC 6455 §5.5.3 allows), and a client is not read from while its pong
//! waits, so TCP flow control holds back a client that pings faster than it reads.

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
