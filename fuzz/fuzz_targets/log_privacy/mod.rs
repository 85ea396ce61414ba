//! What the three log source targets share: split the input into lines, feed them to a
//! source's parser (no panic; every event it yields encodes), then plant a marker in every
//! place of the lines that holds log content and check that the marker never reaches the
//! events.
//!
//! Log content, per `shared/docs/AGENT-LOGS.md` and the parsers (one list for the three
//! sources; a key one source does not use is harmless for the others):
//! - Claude Code: `message.content` (a typed prompt, or blocks: `text`, `thinking` and its
//!   `signature`, `tool_use.input`, `tool_result.content`), `toolUseResult`, `summary`
//!   lines, `progress` `data`.
//! - Codex CLI: `event_msg` `message` / `text` / `last_agent_message`, `response_item`
//!   `message.content`, `function_call.arguments`, `custom_tool_call.input`,
//!   `*_output.output`, `local_shell_call.action`, `reasoning` `summary` / `content` /
//!   `encrypted_content`, instructions in `session_meta` / `turn_context`.
//! - Gemini CLI: message `content`, `thoughts`, `toolCalls[].args` / `result` /
//!   `resultDisplay` / `description`.
//!
//! Fields the wire model defines (ids, cwd, branch, slug, model, tool names, timestamps,
//! token counts) may legitimately be echoed and are left alone.

use agentwatch_ws::{Event, wire};
use serde_json::Value;

/// The planted text: ASCII letters and digits only, which no encoder escapes.
pub const MARKER: &str = "PLANTEDq7x9SECRETz3";

/// Keys whose whole value is log content: every string in it is replaced by the marker,
/// and every object in it gets one more key holding the marker.
const OPAQUE: &[&str] = &[
    "action",
    "aggregated_output",
    "args",
    "arguments",
    "base_instructions",
    "command",
    "data",
    "description",
    "developer_instructions",
    "encrypted_content",
    "formatted_output",
    "input",
    "instructions",
    "last_agent_message",
    "output",
    "result",
    "resultDisplay",
    "signature",
    "stderr",
    "stdout",
    "summary",
    "text",
    "thinking",
    "thoughts",
    "toolUseResult",
    "user_instructions",
];

/// Keys whose value is log text when it is a string (or a string in an array), and
/// structure the parser reads (message objects, content blocks) otherwise.
const TEXT_OR_STRUCTURE: &[&str] = &["content", "message"];

/// Replaces every string under `v` by the marker; adds the marker to every object.
fn scrub(v: &mut Value) {
    match v {
        Value::String(s) => MARKER.clone_into(s),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            map.values_mut().for_each(scrub);
            map.insert(
                "plantedByFuzzer".to_owned(),
                Value::String(MARKER.to_owned()),
            );
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Plants the marker in `v`'s content places. `text` says whether a string here is text.
fn plant(v: &mut Value, text: bool) {
    match v {
        Value::String(s) if text => MARKER.clone_into(s),
        Value::Array(items) => items.iter_mut().for_each(|i| plant(i, text)),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if OPAQUE.contains(&k.as_str()) {
                    scrub(child);
                } else {
                    plant(child, TEXT_OR_STRUCTURE.contains(&k.as_str()));
                }
            }
        }
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Encodes every event (which must succeed: the monitor publishes them).
fn encode(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in events {
        let bytes = wire::to_vec(ev)
            .unwrap_or_else(|e| panic!("a monitor event does not encode: {e}\n{ev:?}"));
        out.extend_from_slice(&bytes);
        out.push(b'\n');
    }
    out
}

/// `data` with the marker planted in every line that is JSON, or `None` if the input
/// already holds the marker (then its echo in a wire field would be legitimate).
fn planted(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    if contains(data, MARKER.as_bytes()) {
        return None;
    }
    let mut lines = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        match serde_json::from_slice::<Value>(line) {
            Ok(mut v) => {
                // Escapes can spell the marker without its bytes appearing in the input.
                if contains(v.to_string().as_bytes(), MARKER.as_bytes()) {
                    return None;
                }
                plant(&mut v, false);
                lines.push(v.to_string().into_bytes());
            }
            Err(_) => lines.push(line.to_vec()),
        }
    }
    Some(lines)
}

/// The whole property for one source, `feed` being its `agentwatch_ws::fuzzing` function.
pub fn check_lines(data: &[u8], feed: fn(Vec<&[u8]>) -> Vec<Event>) {
    // The lines as they are: any bytes, no panic.
    encode(&feed(data.split(|b| *b == b'\n').collect()));
    // The lines with content planted: the content never reaches an event.
    let Some(lines) = planted(data) else {
        return;
    };
    let out = encode(&feed(lines.iter().map(Vec::as_slice).collect()));
    assert_no_marker(&out, &lines);
}

/// The same for a whole-document parser (Gemini's `.json` chat).
// Only `gemini_line` reads whole documents; the module is compiled into every log target.
#[allow(dead_code)]
pub fn check_whole(data: &[u8], feed: fn(&[u8]) -> Vec<Event>) {
    encode(&feed(data));
    if contains(data, MARKER.as_bytes()) {
        return;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if contains(v.to_string().as_bytes(), MARKER.as_bytes()) {
        return;
    }
    plant(&mut v, false);
    let doc = v.to_string().into_bytes();
    let out = encode(&feed(&doc));
    assert_no_marker(&out, std::slice::from_ref(&doc));
}

fn assert_no_marker(out: &[u8], input: &[Vec<u8>]) {
    if contains(out, MARKER.as_bytes()) {
        let input: Vec<_> = input.iter().map(|l| String::from_utf8_lossy(l)).collect();
        panic!(
            "log content reached the events\ninput:\n{}\nevents:\n{}",
            input.join("\n"),
            String::from_utf8_lossy(out)
        );
    }
}
