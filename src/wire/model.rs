//! The wire structs: [`Event`] and what it carries.

use serde::Serialize;

use super::decode::{ExtensionString, go_struct_deserialize};
use super::enums::{Activity, EventType, HealthStatus, LifecycleEventType, LifecycleState};
use super::json::{finite_f64, is_zero_i64};
use super::time::Timestamp;

/// One agent session as agentwatch reports it (Go `session.SessionState`).
///
/// JSON keys are camelCase in Go's declaration order. `slug`, `outputTokens` (when 0),
/// `branch`, `currentTool`, `completedAt` (when `None`) and `subagents` (when empty)
/// are omitted; every other field is always written, including `model` and
/// `workingDir` as `""`. Then `machine`, this crate's own key (Go has no such field): the
/// producer the session comes from, set by broker nodes serving several producers, omitted
/// when empty, so a session without one is Go's bytes.
///
/// ```
/// use agentwatch_ws::{Activity, LifecycleState, SessionState, wire};
///
/// let s = SessionState {
///     id: "a1".into(),
///     source: "codex".into(),
///     activity: Activity::Working,
///     lifecycle: LifecycleState::Active,
///     context_tokens: 64_000,
///     max_context_tokens: 128_000,
///     context_utilization: 0.5,
///     ..Default::default()
/// };
/// let json = String::from_utf8(wire::to_vec(&s)?)?;
/// assert!(json.starts_with(r#"{"id":"a1","source":"codex","activity":"working","lifecycle":"active","contextTokens":64000,"tokenEstimated":false"#));
/// assert!(!json.contains("outputTokens") && !json.contains("subagents"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    /// Session id (`id`).
    pub id: String,
    /// Which agent produced the session, e.g. `claude`, `codex`, `gemini` (`source`).
    pub source: String,
    /// Short human-readable name (`slug`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub slug: String,
    /// What the agent is doing (`activity`).
    pub activity: Activity,
    /// Whether the session is live (`lifecycle`).
    pub lifecycle: LifecycleState,
    /// Tokens currently in the context window (`contextTokens`).
    pub context_tokens: i64,
    /// Tokens generated (`outputTokens`, omitted when 0; negative values are kept).
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub output_tokens: i64,
    /// Whether the token counts are estimates (`tokenEstimated`).
    pub token_estimated: bool,
    /// Size of the model's context window (`maxContextTokens`).
    pub max_context_tokens: i64,
    /// `context_tokens / max_context_tokens` (`contextUtilization`). Must be finite to
    /// serialize: NaN and infinities are a serialization error, as in Go.
    #[serde(serialize_with = "finite_f64")]
    pub context_utilization: f64,
    /// Model name (`model`, always written).
    pub model: String,
    /// The session's working directory (`workingDir`, always written).
    pub working_dir: String,
    /// Git branch (`branch`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub branch: String,
    /// The tool running now (`currentTool`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub current_tool: String,
    /// Messages so far (`messageCount`).
    pub message_count: i64,
    /// Tool calls so far (`toolCallCount`).
    pub tool_call_count: i64,
    /// Context compactions so far (`compactionCount`).
    pub compaction_count: i64,
    /// When the session started (`startedAt`, always written).
    pub started_at: Timestamp,
    /// Last agent activity (`lastActivityAt`, always written).
    pub last_activity_at: Timestamp,
    /// Last time any data arrived for the session (`lastDataReceivedAt`, always written).
    pub last_data_received_at: Timestamp,
    /// When the session ended (`completedAt`; a Go pointer, omitted when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Subagents spawned by the session (`subagents`, omitted when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subagents: Vec<SubagentState>,
    /// The name of the producer (machine) the session comes from, e.g. a host name
    /// (`machine`, omitted when empty). Set by broker nodes (`agentwatch_ws::broker`), which serve
    /// producers on one or more machines; empty, and so omitted, otherwise: a server without
    /// a broker sends Go's bytes. Go's agentwatch has no such field, and its decoder ignores
    /// the key.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub machine: String,
}

/// A subagent of a session (Go `session.SubagentState`).
///
/// `parentId`, `slug`, `currentTool`, `model` (when empty) and `outputTokens` (when 0)
/// are omitted. `completedAt` is **not** optional: Go writes the zero time
/// `0001-01-01T00:00:00Z` while the subagent runs (check it with
/// [`Timestamp::is_zero`]).
///
/// ```
/// use agentwatch_ws::{SubagentState, wire};
///
/// let sub = SubagentState { id: "sub-02".into(), ..Default::default() };
/// let json = String::from_utf8(wire::to_vec(&sub)?)?;
/// assert!(json.ends_with(r#""completedAt":"0001-01-01T00:00:00Z"}"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubagentState {
    /// Subagent id (`id`).
    pub id: String,
    /// Id of the parent session (`parentId`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_id: String,
    /// Short human-readable name (`slug`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub slug: String,
    /// What the subagent is doing (`activity`).
    pub activity: Activity,
    /// The tool running now (`currentTool`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub current_tool: String,
    /// When the subagent started (`startedAt`).
    pub started_at: Timestamp,
    /// Last subagent activity (`lastActivityAt`).
    pub last_activity_at: Timestamp,
    /// Model name (`model`, omitted when empty, unlike the session's).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Tokens currently in the context window (`contextTokens`).
    pub context_tokens: i64,
    /// Tokens generated (`outputTokens`, omitted when 0; negative values are kept).
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub output_tokens: i64,
    /// Messages so far (`messageCount`).
    pub message_count: i64,
    /// Tool calls so far (`toolCallCount`).
    pub tool_call_count: i64,
    /// When the subagent finished (`completedAt`, always written; the zero time while
    /// it runs).
    pub completed_at: Timestamp,
}

/// A session lifecycle transition (Go `session.LifecycleEvent`).
///
/// `from` is Go's zero value (`""`, [`LifecycleState::default`]) for a newly
/// discovered session. `reason` is omitted when empty.
///
/// ```
/// use agentwatch_ws::{LifecycleEvent, LifecycleEventType, LifecycleState, Timestamp, wire};
///
/// let ev = LifecycleEvent {
///     kind: LifecycleEventType::Stale,
///     session_id: "a1".into(),
///     source: "codex".into(),
///     from: LifecycleState::Active,
///     to: LifecycleState::Terminal,
///     at: Timestamp::parse("2025-03-14T09:13:00Z")?,
///     reason: "no data for 10m0s".into(),
/// };
/// assert_eq!(
///     wire::to_vec(&ev)?,
///     br#"{"type":"stale","sessionId":"a1","source":"codex","from":"active","to":"terminal","at":"2025-03-14T09:13:00Z","reason":"no data for 10m0s"}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    /// What happened (`type`).
    #[serde(rename = "type")]
    pub kind: LifecycleEventType,
    /// The session concerned (`sessionId`).
    pub session_id: String,
    /// The session's source (`source`).
    pub source: String,
    /// State before the transition (`from`).
    pub from: LifecycleState,
    /// State after the transition (`to`).
    pub to: LifecycleState,
    /// When it happened (`at`).
    pub at: Timestamp,
    /// Why, in words (`reason`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The health of one session source (Go `monitor.Health`). `lastError` is omitted
/// when empty; `machine` (this crate's own key, last) too.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The source, e.g. `claude` (`source`).
    pub source: String,
    /// Its status (`status`).
    pub status: HealthStatus,
    /// Consecutive discovery failures (`discoverFailures`).
    pub discover_failures: i64,
    /// Parse failures (`parseFailures`).
    pub parse_failures: i64,
    /// The last error message (`lastError`, omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// When the status last changed (`updatedAt`).
    pub updated_at: Timestamp,
    /// The name of the producer (machine) the report comes from, e.g. a host name
    /// (`machine`, omitted when empty). Set by broker nodes, for which two machines' sources
    /// of the same name are distinct reports; empty, and so omitted, otherwise. Go's
    /// agentwatch has no such field, and its decoder ignores the key.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub machine: String,
}

/// One agentwatch monitor event (Go `monitor.Event`): the unit sent to clients, one
/// JSON text message each.
///
/// The envelope is flat: `type` does not restrict which of `sessions`, `updates`,
/// `removed`, `lifecycle` and `health` are present; each is omitted when empty or
/// `None`.
///
/// # Encoding
///
/// [`Event::to_json`] (or [`wire::to_vec`](crate::wire::to_vec) /
/// [`wire::to_writer`](crate::wire::to_writer)) gives exactly the bytes Go's
/// `json.Marshal` gives. The [`Serialize`] impl works with any serde serializer, but
/// plain `serde_json::to_string` differs from Go in escaping (`<`, `>`, `&`, U+2028,
/// U+2029) and float layout (`1e21` vs `1e+21`): still valid JSON with the same value.
///
/// # Decoding
///
/// Like Go's `json.Unmarshal` into a fresh `Event`, for the event and the structs in it:
/// - the value must be a JSON object, or `null`, which gives the zero event
///   (`Event::default()`: no type, `seq` 0), as in Go: check [`EventType::is_known`] where a
///   meaningful event is required;
/// - unknown keys are ignored; missing keys and `null` give zero values (`null` in an
///   array gives a zero element);
/// - `machine` (on a session or a health report: the crate's own key, which Go's structs
///   lack and Go's decoder skips) is read when its value is a string and skipped like an
///   unknown key otherwise, so every input Go accepts is accepted;
/// - keys match exactly or else case-insensitively (`"SEQ"` fills `seq`);
/// - a repeated key decodes into what the earlier one left, as Go does: objects merge
///   (`"health":{"source":"codex"},"health":{"status":"failed"}` keeps both fields), arrays
///   merge element by element and take the later array's length, other values are
///   replaced; `null` empties a pointer or a slice and leaves anything else as it is. Go's
///   reuse of a slice's spare capacity by a third repeat of an array key is not
///   reproduced: the elements a shorter repeat cut off are gone;
/// - [`from_json`](Self::from_json) reads invalid UTF-8 and `\u` escapes of lone UTF-16
///   surrogates inside strings as U+FFFD, one per invalid byte, as Go does (serde_json alone,
///   e.g. `serde_json::from_slice::<Event>`, rejects them).
///
/// Checked against Go's own decoder on 106 209 generated inputs (mutated fixtures, repeated
/// keys at every level, `null` and 50 number forms in every position, invalid text). Where
/// the two still differ, no encoder writes such input, Go's included:
/// - a timestamp string with JSON escapes inside (`"…05\u005a"`) is read by its value, as
///   JSON defines it; Go's `time.Time` reads the raw bytes and rejects it;
/// - `-0` for an integer field is rejected (serde_json reads it as a float, like `-0.0`);
///   Go reads 0;
/// - values nested deeper than 10 000 under an unknown key are skipped; Go rejects the
///   input. Skipping needs no memory per level.
///
/// Deserializing requires a self-describing format with maps, such as JSON.
///
/// ```
/// use agentwatch_ws::{Event, EventType};
///
/// let ev = Event::from_json(br#"{"seq":44,"at":"2025-03-14T09:26:55.5Z","type":"delta","removed":["b"],"future":1}"#)?;
/// assert_eq!(ev.kind, EventType::Delta);
/// assert_eq!(ev.removed, ["b"]);
/// assert_eq!(ev.to_json()?, r#"{"seq":44,"at":"2025-03-14T09:26:55.5Z","type":"delta","removed":["b"]}"#);
///
/// let fresh = Event::delta(45, Vec::new(), vec!["c".into()]);
/// assert_eq!(fresh.kind, EventType::Delta);
/// assert!(!fresh.at.is_zero());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Event {
    /// Sequence number (`seq`, Go `uint64`).
    pub seq: u64,
    /// When the event was produced (`at`).
    pub at: Timestamp,
    /// Event type (`type`).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Full session list of a snapshot (`sessions`, omitted when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionState>,
    /// Changed sessions of a delta (`updates`, omitted when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<SessionState>,
    /// Ids of removed sessions (`removed`, omitted when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// A lifecycle transition (`lifecycle`, omitted when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleEvent>,
    /// A health change (`health`, omitted when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

go_struct_deserialize!(SessionState {
    id = "id",
    source = "source",
    slug = "slug",
    activity = "activity",
    lifecycle = "lifecycle",
    context_tokens = "contextTokens",
    output_tokens = "outputTokens",
    token_estimated = "tokenEstimated",
    max_context_tokens = "maxContextTokens",
    context_utilization = "contextUtilization",
    model = "model",
    working_dir = "workingDir",
    branch = "branch",
    current_tool = "currentTool",
    message_count = "messageCount",
    tool_call_count = "toolCallCount",
    compaction_count = "compactionCount",
    started_at = "startedAt",
    last_activity_at = "lastActivityAt",
    last_data_received_at = "lastDataReceivedAt",
    completed_at = "completedAt",
    subagents = "subagents",
    machine = "machine" with ExtensionString,
});

go_struct_deserialize!(SubagentState {
    id = "id",
    parent_id = "parentId",
    slug = "slug",
    activity = "activity",
    current_tool = "currentTool",
    started_at = "startedAt",
    last_activity_at = "lastActivityAt",
    model = "model",
    context_tokens = "contextTokens",
    output_tokens = "outputTokens",
    message_count = "messageCount",
    tool_call_count = "toolCallCount",
    completed_at = "completedAt",
});

go_struct_deserialize!(LifecycleEvent {
    kind = "type",
    session_id = "sessionId",
    source = "source",
    from = "from",
    to = "to",
    at = "at",
    reason = "reason",
});

go_struct_deserialize!(Health {
    source = "source",
    status = "status",
    discover_failures = "discoverFailures",
    parse_failures = "parseFailures",
    last_error = "lastError",
    updated_at = "updatedAt",
    machine = "machine" with ExtensionString,
});

go_struct_deserialize!(Event {
    seq = "seq",
    at = "at",
    kind = "type",
    sessions = "sessions",
    updates = "updates",
    removed = "removed",
    lifecycle = "lifecycle",
    health = "health",
});

impl Event {
    /// A `snapshot` event carrying `sessions`, stamped with [`Timestamp::now`].
    pub fn snapshot(seq: u64, sessions: Vec<SessionState>) -> Self {
        Self {
            seq,
            at: Timestamp::now(),
            kind: EventType::Snapshot,
            sessions,
            ..Self::default()
        }
    }

    /// A `delta` event carrying changed sessions and removed ids, stamped with
    /// [`Timestamp::now`].
    pub fn delta(seq: u64, updates: Vec<SessionState>, removed: Vec<String>) -> Self {
        Self {
            seq,
            at: Timestamp::now(),
            kind: EventType::Delta,
            updates,
            removed,
            ..Self::default()
        }
    }

    /// A `lifecycle` event, stamped with [`Timestamp::now`].
    pub fn lifecycle(seq: u64, lifecycle: LifecycleEvent) -> Self {
        Self {
            seq,
            at: Timestamp::now(),
            kind: EventType::Lifecycle,
            lifecycle: Some(lifecycle),
            ..Self::default()
        }
    }

    /// A `health` event, stamped with [`Timestamp::now`].
    pub fn health(seq: u64, health: Health) -> Self {
        Self {
            seq,
            at: Timestamp::now(),
            kind: EventType::Health,
            health: Some(health),
            ..Self::default()
        }
    }

    /// Encodes the event exactly as Go's `json.Marshal` does (compact, no trailing
    /// newline). Fails on a non-finite `context_utilization` or a timestamp outside
    /// years 0..=9999. For bytes, use [`wire::to_vec`](crate::wire::to_vec).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let bytes = super::json::to_vec(self)?;
        String::from_utf8(bytes).map_err(serde::ser::Error::custom)
    }

    /// Decodes an event from JSON bytes, with Go's leniency (see [Decoding](#decoding)),
    /// invalid text included.
    ///
    /// ```
    /// use agentwatch_ws::{Event, EventType};
    ///
    /// // Invalid UTF-8 in a string: one U+FFFD per invalid byte, as Go's decoder gives.
    /// let ev = Event::from_json(b"{\"type\":\"health\",\"health\":{\"lastError\":\"x\xff\"}}")?;
    /// assert_eq!(ev.health.map(|h| h.last_error), Some("x\u{FFFD}".to_owned()));
    /// // A top-level null: the zero event, as Go's `json.Unmarshal` leaves it.
    /// let ev = Event::from_json(b"null")?;
    /// assert_eq!(ev, Event::default());
    /// assert!(!ev.kind.is_known());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn from_json(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        super::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;
    use crate::wire::to_vec;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn enc<T: Serialize>(v: &T) -> String {
        String::from_utf8(to_vec(v).unwrap()).unwrap()
    }

    const ZERO_SESSION: &str = r#"{"id":"","source":"","activity":"","lifecycle":"","contextTokens":0,"tokenEstimated":false,"maxContextTokens":0,"contextUtilization":0,"model":"","workingDir":"","messageCount":0,"toolCallCount":0,"compactionCount":0,"startedAt":"0001-01-01T00:00:00Z","lastActivityAt":"0001-01-01T00:00:00Z","lastDataReceivedAt":"0001-01-01T00:00:00Z"}"#;

    #[test]
    fn zero_values_encode_like_go() {
        assert_eq!(enc(&SessionState::default()), ZERO_SESSION);
        assert_eq!(
            enc(&SubagentState::default()),
            r#"{"id":"","activity":"","startedAt":"0001-01-01T00:00:00Z","lastActivityAt":"0001-01-01T00:00:00Z","contextTokens":0,"messageCount":0,"toolCallCount":0,"completedAt":"0001-01-01T00:00:00Z"}"#
        );
        assert_eq!(
            enc(&LifecycleEvent::default()),
            r#"{"type":"","sessionId":"","source":"","from":"","to":"","at":"0001-01-01T00:00:00Z"}"#
        );
        assert_eq!(
            enc(&Health::default()),
            r#"{"source":"","status":"","discoverFailures":0,"parseFailures":0,"updatedAt":"0001-01-01T00:00:00Z"}"#
        );
        assert_eq!(
            enc(&Event::default()),
            r#"{"seq":0,"at":"0001-01-01T00:00:00Z","type":""}"#
        );
        // A non-nil pointer to a zero struct is written in full.
        let ev = Event {
            lifecycle: Some(LifecycleEvent::default()),
            health: Some(Health::default()),
            ..Event::default()
        };
        assert_eq!(
            enc(&ev),
            r#"{"seq":0,"at":"0001-01-01T00:00:00Z","type":"","lifecycle":{"type":"","sessionId":"","source":"","from":"","to":"","at":"0001-01-01T00:00:00Z"},"health":{"source":"","status":"","discoverFailures":0,"parseFailures":0,"updatedAt":"0001-01-01T00:00:00Z"}}"#
        );
    }

    #[test]
    fn omitempty_rules() {
        let s = SessionState {
            output_tokens: -3,
            completed_at: Some(Timestamp::ZERO),
            subagents: vec![SubagentState {
                output_tokens: -42,
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = enc(&s);
        assert!(json.contains(r#""contextTokens":0,"outputTokens":-3,"tokenEstimated""#));
        assert!(json.contains(r#""completedAt":"0001-01-01T00:00:00Z","subagents":[{"#));
        assert!(json.contains(r#""contextTokens":0,"outputTokens":-42,"messageCount""#));

        let ev = Event {
            removed: vec![String::new()],
            ..Event::default()
        };
        assert_eq!(
            enc(&ev),
            r#"{"seq":0,"at":"0001-01-01T00:00:00Z","type":"","removed":[""]}"#
        );
        // A zero-value session inside `sessions` is still written out.
        let ev = Event {
            sessions: vec![SessionState::default()],
            ..Event::default()
        };
        assert_eq!(
            enc(&ev),
            format!(
                r#"{{"seq":0,"at":"0001-01-01T00:00:00Z","type":"","sessions":[{ZERO_SESSION}]}}"#
            )
        );
    }

    #[test]
    fn full_key_order() {
        let s = SessionState {
            id: "i".into(),
            source: "s".into(),
            slug: "sl".into(),
            activity: Activity::Waiting,
            lifecycle: LifecycleState::Terminal,
            context_tokens: 1,
            output_tokens: 2,
            token_estimated: true,
            max_context_tokens: 3,
            context_utilization: 0.25,
            model: "m".into(),
            working_dir: "/w".into(),
            branch: "b".into(),
            current_tool: "t".into(),
            message_count: 4,
            tool_call_count: 5,
            compaction_count: 6,
            started_at: ts("2025-01-01T00:00:01Z"),
            last_activity_at: ts("2025-01-01T00:00:02Z"),
            last_data_received_at: ts("2025-01-01T00:00:03Z"),
            completed_at: Some(ts("2025-01-01T00:00:04Z")),
            subagents: vec![SubagentState {
                id: "si".into(),
                parent_id: "i".into(),
                slug: "ss".into(),
                activity: Activity::Idle,
                current_tool: "st".into(),
                started_at: ts("2025-01-01T00:00:05Z"),
                last_activity_at: ts("2025-01-01T00:00:06Z"),
                model: "sm".into(),
                context_tokens: 7,
                output_tokens: 8,
                message_count: 9,
                tool_call_count: 10,
                completed_at: ts("2025-01-01T00:00:07Z"),
            }],
            machine: String::new(),
        };
        let want = r#"{"id":"i","source":"s","slug":"sl","activity":"waiting","lifecycle":"terminal","contextTokens":1,"outputTokens":2,"tokenEstimated":true,"maxContextTokens":3,"contextUtilization":0.25,"model":"m","workingDir":"/w","branch":"b","currentTool":"t","messageCount":4,"toolCallCount":5,"compactionCount":6,"startedAt":"2025-01-01T00:00:01Z","lastActivityAt":"2025-01-01T00:00:02Z","lastDataReceivedAt":"2025-01-01T00:00:03Z","completedAt":"2025-01-01T00:00:04Z","subagents":[{"id":"si","parentId":"i","slug":"ss","activity":"idle","currentTool":"st","startedAt":"2025-01-01T00:00:05Z","lastActivityAt":"2025-01-01T00:00:06Z","model":"sm","contextTokens":7,"outputTokens":8,"messageCount":9,"toolCallCount":10,"completedAt":"2025-01-01T00:00:07Z"}]}"#;
        assert_eq!(enc(&s), want);
        let back: SessionState = serde_json::from_str(want).unwrap();
        assert_eq!(back, s);

        let h = Health {
            source: "x".into(),
            status: HealthStatus::Degraded,
            discover_failures: 1,
            parse_failures: 2,
            last_error: "e".into(),
            updated_at: ts("2025-01-01T00:00:00Z"),
            machine: String::new(),
        };
        assert_eq!(
            enc(&h),
            r#"{"source":"x","status":"degraded","discoverFailures":1,"parseFailures":2,"lastError":"e","updatedAt":"2025-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn machine_is_written_last_and_only_when_set() {
        let s = SessionState {
            id: "i".into(),
            completed_at: Some(ts("2025-01-01T00:00:04Z")),
            subagents: vec![SubagentState::default()],
            machine: "host-a".into(),
            ..Default::default()
        };
        let json = enc(&s);
        assert!(
            json.ends_with(r#""completedAt":"0001-01-01T00:00:00Z"}],"machine":"host-a"}"#),
            "{json}"
        );
        let back: SessionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        // Without subagents, after `completedAt`; without either, after `lastDataReceivedAt`.
        let bare = SessionState {
            machine: "m".into(),
            ..Default::default()
        };
        assert_eq!(
            enc(&bare),
            ZERO_SESSION.replacen('}', r#","machine":"m"}"#, 1)
        );
        let h = Health {
            source: "claude".into(),
            machine: "host-b".into(),
            ..Default::default()
        };
        let json = enc(&h);
        assert_eq!(
            json,
            r#"{"source":"claude","status":"","discoverFailures":0,"parseFailures":0,"updatedAt":"0001-01-01T00:00:00Z","machine":"host-b"}"#
        );
        let back: Health = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        // Keys match as Go's do (case-insensitively), and `null` leaves a string as it is.
        let ev = Event::from_json(
            br#"{"sessions":[{"id":"a","MACHINE":"x"}],"health":{"Machine":"y","machine":null}}"#,
        )
        .unwrap();
        assert_eq!(ev.sessions[0].machine, "x");
        assert_eq!(ev.health.unwrap().machine, "y");
        // Go's structs have no `machine`: Go skips the key whatever its value, and so does
        // the crate when the value is not a string, keeping every other field.
        for value in [
            "1",
            "-2.5e3",
            "true",
            r#"["x",{"y":[]}]"#,
            r#"{"name":"x"}"#,
            "18446744073709551616",
        ] {
            let json =
                format!(r#"{{"seq":4,"sessions":[{{"id":"a","machine":{value},"model":"m"}}]}}"#);
            let ev = Event::from_json(json.as_bytes()).unwrap();
            assert_eq!(ev.seq, 4);
            assert_eq!(
                (ev.sessions[0].id.as_str(), ev.sessions[0].model.as_str()),
                ("a", "m")
            );
            assert_eq!(ev.sessions[0].machine, "", "{value}");
        }
        // A later value of another type leaves the string an earlier one gave.
        let h: Health =
            serde_json::from_str(r#"{"machine":"kept","machine":7,"source":"s"}"#).unwrap();
        assert_eq!((h.machine.as_str(), h.source.as_str()), ("kept", "s"));
        // Malformed JSON inside the value is still an error, as it is for Go.
        assert!(Event::from_json(br#"{"health":{"machine":[1,]}}"#).is_err());
    }

    #[test]
    fn null_missing_and_unknown_keys() {
        let nulls = r#"{"id":null,"source":null,"slug":null,"activity":null,"lifecycle":null,"contextTokens":null,"outputTokens":null,"tokenEstimated":null,"maxContextTokens":null,"contextUtilization":null,"model":null,"workingDir":null,"branch":null,"currentTool":null,"messageCount":null,"toolCallCount":null,"compactionCount":null,"startedAt":null,"lastActivityAt":null,"lastDataReceivedAt":null,"completedAt":null,"subagents":null}"#;
        let s: SessionState = serde_json::from_str(nulls).unwrap();
        assert_eq!(s, SessionState::default());
        let s: SessionState = serde_json::from_str("{}").unwrap();
        assert_eq!(s, SessionState::default());

        let sub: SubagentState = serde_json::from_str(
            r#"{"id":null,"parentId":null,"activity":null,"completedAt":null,"outputTokens":null,"model":null}"#,
        )
        .unwrap();
        assert_eq!(sub, SubagentState::default());
        let lc: LifecycleEvent =
            serde_json::from_str(r#"{"type":null,"from":null,"at":null,"reason":null}"#).unwrap();
        assert_eq!(lc, LifecycleEvent::default());
        let h: Health =
            serde_json::from_str(r#"{"status":null,"lastError":null,"updatedAt":null}"#).unwrap();
        assert_eq!(h, Health::default());

        let ev = Event::from_json(
            br#"{"seq":null,"at":null,"type":null,"sessions":null,"updates":null,"removed":null,"lifecycle":null,"health":null}"#,
        )
        .unwrap();
        assert_eq!(ev, Event::default());
        assert_eq!(Event::from_json(b"{}").unwrap(), Event::default());

        // Unknown keys (any JSON shape) are ignored, at every level.
        let ev = Event::from_json(
            br#"{"x":{"y":[1,null,"z"]},"seq":7,"type":"snapshot","sessions":[{"id":"a","nope":[],"subagents":[{"id":"s","extra":true}]}],"lifecycle":{"type":"stale","bonus":1.5},"health":{"status":"healthy","more":null}}"#,
        )
        .unwrap();
        assert_eq!(ev.seq, 7);
        assert_eq!(ev.sessions[0].id, "a");
        assert_eq!(ev.sessions[0].subagents[0].id, "s");
        assert_eq!(ev.lifecycle.unwrap().kind, LifecycleEventType::Stale);
        assert_eq!(ev.health.unwrap().status, HealthStatus::Healthy);

        // Null elements in arrays become zero values, as in Go.
        let ev = Event::from_json(br#"{"removed":["a",null],"sessions":[null]}"#).unwrap();
        assert_eq!(ev.removed, ["a", ""]);
        assert_eq!(ev.sessions, [SessionState::default()]);

        // Empty arrays decode to empty and are omitted again.
        let ev = Event::from_json(br#"{"type":"delta","updates":[],"removed":[]}"#).unwrap();
        assert_eq!(
            ev.to_json().unwrap(),
            r#"{"seq":0,"at":"0001-01-01T00:00:00Z","type":"delta"}"#
        );
    }

    #[test]
    fn go_key_rules() {
        // A repeated key keeps the last value.
        let ev = Event::from_json(br#"{"seq":1,"seq":2,"type":"a","type":"delta"}"#).unwrap();
        assert_eq!((ev.seq, ev.kind), (2, EventType::Delta));
        // Case-insensitive fallback, exact match preferred.
        let ev = Event::from_json(
            br#"{"SEQ":3,"Type":"health","Health":{"LASTERROR":"e","status":"failed"},"sessions":[{"ID":"x","workingdir":"/w","CompletedAt":"2025-01-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        assert_eq!(ev.seq, 3);
        assert_eq!(ev.kind, EventType::Health);
        let h = ev.health.unwrap();
        assert_eq!(
            (h.last_error.as_str(), h.status),
            ("e", HealthStatus::Failed)
        );
        assert_eq!(ev.sessions[0].id, "x");
        assert_eq!(ev.sessions[0].working_dir, "/w");
        assert!(ev.sessions[0].completed_at.is_some());
        let lc: LifecycleEvent =
            serde_json::from_str(r#"{"TYPE":"resumed","sessionid":"s"}"#).unwrap();
        assert_eq!(
            (lc.kind, lc.session_id.as_str()),
            (LifecycleEventType::Resumed, "s")
        );
        // Near misses are unknown keys.
        let ev = Event::from_json(br#"{"se_q":3,"sequence":4}"#).unwrap();
        assert_eq!(ev.seq, 0);
    }

    #[test]
    fn type_errors_are_reported() {
        for bad in [
            &br#"{"seq":-1}"#[..],
            br#"{"seq":18446744073709551616}"#,
            br#"{"seq":1.5}"#,
            br#"{"seq":"1"}"#,
            br#"{"at":"not a time"}"#,
            br#"{"at":12}"#,
            br#"{"type":5}"#,
            br#"{"removed":"x"}"#,
            br#"{"sessions":[{"contextTokens":9223372036854775808}]}"#,
            br#"{"sessions":[{"contextUtilization":"0.5"}]}"#,
            br#"{"sessions":[{"contextUtilization":1e400}]}"#,
            br#"{"sessions":[{"tokenEstimated":1}]}"#,
            br#"{"lifecycle":[]}"#,
            br#"{"health":["x"]}"#,
            br#"{"sessions":[[]]}"#,
            br#"{"sessions":[{"subagents":[1]}]}"#,
            b"[]",
            br#"{"seq":1} x"#,
            b"",
            br#"{"seq":1"#,
        ] {
            assert!(
                Event::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn integer_extremes() {
        let s = SessionState {
            context_tokens: i64::MAX,
            output_tokens: i64::MIN,
            max_context_tokens: i64::MIN,
            message_count: (1 << 53) + 1,
            ..Default::default()
        };
        let ev = Event {
            seq: u64::MAX,
            updates: vec![s.clone()],
            ..Event::default()
        };
        let json = ev.to_json().unwrap();
        assert!(json.starts_with(r#"{"seq":18446744073709551615,"#));
        assert!(json.contains(
            r#""contextTokens":9223372036854775807,"outputTokens":-9223372036854775808,"#
        ));
        assert!(json.contains(r#""maxContextTokens":-9223372036854775808,"#));
        assert!(json.contains(r#""messageCount":9007199254740993,"#));
        assert_eq!(Event::from_json(json.as_bytes()).unwrap(), ev);
    }

    #[test]
    fn unencodable_values_error() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let ev = Event::snapshot(
                1,
                vec![SessionState {
                    context_utilization: bad,
                    ..Default::default()
                }],
            );
            assert!(ev.to_json().is_err());
            assert!(serde_json::to_string(&ev).is_err());
        }
        let ev = Event {
            at: Timestamp::from_unix(300_000_000_000, 0).unwrap(),
            ..Event::default()
        };
        assert!(ev.to_json().is_err());
    }

    #[test]
    fn constructors() {
        let before = Timestamp::now();
        let s = Event::snapshot(0, vec![SessionState::default()]);
        assert_eq!((s.kind.clone(), s.sessions.len()), (EventType::Snapshot, 1));
        assert!(s.at >= before && s.at.offset_seconds() == 0);
        let d = Event::delta(1, vec![], vec!["x".into()]);
        assert_eq!((d.kind, d.removed.len()), (EventType::Delta, 1));
        let l = Event::lifecycle(2, LifecycleEvent::default());
        assert_eq!(l.kind, EventType::Lifecycle);
        assert!(l.lifecycle.is_some() && l.health.is_none());
        let h = Event::health(3, Health::default());
        assert_eq!((h.kind, h.seq), (EventType::Health, 3));
        assert!(h.health.is_some());
    }

    #[test]
    fn plain_serde_json_is_same_value() {
        let ev = Event {
            seq: 9,
            at: ts("2025-06-30T23:59:59.999+02:00"),
            kind: EventType::Other("custom".into()),
            removed: vec!["<a&b>\u{2028}".into()],
            updates: vec![SessionState {
                context_utilization: 1e21,
                ..Default::default()
            }],
            ..Event::default()
        };
        let go = ev.to_json().unwrap();
        let plain = serde_json::to_string(&ev).unwrap();
        assert_ne!(go, plain);
        let a: serde_json::Value = serde_json::from_str(&go).unwrap();
        let b: serde_json::Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(a, b);
        assert_eq!(Event::from_json(plain.as_bytes()).unwrap(), ev);
    }
}
