//! One realistic session, shared by the criterion benchmarks and the bench server (each
//! includes this file with `#[path]`), so both measure the same shape.

use agentwatch_ws::{Activity, LifecycleState, SessionState, SubagentState, Timestamp};

/// A session as a busy monitor reports it: the shape `benches/hot_path.rs` measures and
/// `examples/bench_server.rs --sessions N` serves.
pub fn realistic_session(i: usize) -> SessionState {
    let now = Timestamp::now();
    SessionState {
        id: format!("3f2b9c1e-7d4a-4e0b-9a51-{i:012}"),
        source: ["claude-code", "codex", "gemini-cli"][i % 3].into(),
        slug: format!("refactor-event-bus-{i}"),
        activity: Activity::Working,
        lifecycle: LifecycleState::Active,
        context_tokens: 154_321,
        output_tokens: 20_480,
        max_context_tokens: 200_000,
        context_utilization: 0.771605,
        model: "claude-opus-4-1".into(),
        working_dir: "/home/dev/src/agentwatch".into(),
        branch: "feature/event-bus".into(),
        current_tool: "Bash".into(),
        message_count: 318,
        tool_call_count: 142,
        compaction_count: 2,
        started_at: now,
        last_activity_at: now,
        last_data_received_at: now,
        subagents: if i % 4 == 0 {
            vec![SubagentState {
                id: format!("sub-{i}"),
                activity: Activity::Idle,
                started_at: now,
                last_activity_at: now,
                ..Default::default()
            }]
        } else {
            vec![]
        },
        ..Default::default()
    }
}
