//! Logs hold prompts, code and tool output; none of it may reach an event or a trace.

use crate::monitor_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use agentwatch_ws::monitor::{Monitor, SourceKind};
use monitor_support::*;

const SECRET: &str = "hunter2-TOPSECRET-7f9c";

/// A tracing writer that keeps everything written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn secrets_in_logs_reach_no_event_and_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let claude = dir.path().join("claude");
    let codex = dir.path().join("codex");
    let gemini = dir.path().join("gemini");
    // Claude: the secret in a prompt, assistant text, thinking, tool input and output.
    let log = claude_project(&claude).join("p1.jsonl");
    let mut c = claude_user(
        "p1",
        "u1",
        "2026-01-05T09:00:00Z",
        &format!("my password is {SECRET}"),
    );
    c += &claude_assistant(
        "p1",
        "m1",
        "2026-01-05T09:00:01Z",
        &format!(r#"{{"type":"thinking","thinking":"{SECRET}"}}"#),
        "null",
        1,
    );
    c += &claude_assistant(
        "p1",
        "m1",
        "2026-01-05T09:00:02Z",
        &format!(r#"{{"type":"text","text":"{SECRET}"}}"#),
        "null",
        2,
    );
    c += &claude_assistant(
        "p1",
        "m1",
        "2026-01-05T09:00:03Z",
        &format!(
            r#"{{"type":"tool_use","id":"t1","name":"Bash","input":{{"command":"echo {SECRET}"}}}}"#
        ),
        r#""tool_use""#,
        3,
    );
    c += &format!(
        r#"{{"type":"user","uuid":"u2","sessionId":"p1","timestamp":"2026-01-05T09:00:04Z","message":{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"t1","content":"{SECRET}"}}]}}}}"#
    );
    c += "\n{\"broken\": \"";
    c += SECRET;
    c += "\n";
    write(&log, &c);
    // Codex and Gemini: the secret in prompts, arguments and outputs.
    write(
        &codex.join("2026/01/05/rollout-2026-01-05T10-00-00-p2.jsonl"),
        &format!(
            "{}\n{}\n{}\n{}\n",
            r#"{"timestamp":"2026-01-05T10:00:00Z","type":"session_meta","payload":{"id":"p2","cwd":"/w"}}"#,
            format_args!(
                r#"{{"timestamp":"2026-01-05T10:00:01Z","type":"event_msg","payload":{{"type":"user_message","message":"{SECRET}"}}}}"#
            ),
            format_args!(
                r#"{{"timestamp":"2026-01-05T10:00:02Z","type":"response_item","payload":{{"type":"function_call","name":"shell","arguments":"{SECRET}","call_id":"c1"}}}}"#
            ),
            format_args!(
                r#"{{"timestamp":"2026-01-05T10:00:03Z","type":"response_item","payload":{{"type":"function_call_output","call_id":"c1","output":"{SECRET}"}}}}"#
            ),
        ),
    );
    write(
        &gemini.join("abc/chats/session-p3.json"),
        &format!(
            r#"{{"sessionId":"p3","messages":[{{"id":"1","type":"user","content":"{SECRET}"}},{{"id":"2","type":"gemini","content":"{SECRET}","model":"gemini-2.5-pro","toolCalls":[{{"id":"t","name":"shell","args":{{"c":"{SECRET}"}},"result":"{SECRET}","status":"success"}}]}}]}}"#
        ),
    );
    // A session-end marker with the secret as its reason.
    let ends = dir.path().join("ends");
    write(
        &ends.join("p1.json"),
        &format!(r#"{{"session_id":"p1","reason":"{SECRET}"}}"#),
    );

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let rec = Recorder::default();
    tracing::subscriber::with_default(subscriber, || {
        let mut m = Monitor::builder()
            .root(SourceKind::Claude, &claude)
            .root(SourceKind::Codex, &codex)
            .root(SourceKind::Gemini, &gemini)
            .marker_dir(&ends)
            .idle_after(None)
            .build(rec.clone());
        m.scan();
        // A failing scan, for an error message too.
        std::fs::remove_dir_all(&gemini).unwrap();
        m.scan();
    });
    let events = rec.events();
    assert!(events.len() >= 5, "{events:#?}");
    assert_eq!(m_sessions(&events), 3, "all three sessions were read");
    for e in &events {
        let json = e.to_json().unwrap();
        assert!(!json.contains(SECRET), "secret leaked into {json}");
        assert!(
            !json.contains(dir.path().to_str().unwrap()),
            "raw path leaked into {json}"
        );
    }
    let traces = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!traces.is_empty(), "the scan traced something");
    assert!(
        !traces.contains(SECRET),
        "secret leaked into traces: {traces}"
    );
    assert!(
        !traces.contains(dir.path().to_str().unwrap()),
        "raw path in traces: {traces}"
    );
}

fn m_sessions(events: &[agentwatch_ws::Event]) -> usize {
    let mut ids: Vec<&str> = events
        .iter()
        .flat_map(|e| e.updates.iter().map(|s| s.id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}
