//! Decoding matches Go's `encoding/json` where an upstream producer could send something
//! serde_json alone reads differently: a repeated key (Go merges the
//! later object into the earlier one, element by element for arrays), invalid UTF-8 and
//! lone UTF-16 surrogate escapes inside strings (Go reads U+FFFD), and a top-level `null`
//! (Go leaves the zero event).
//!
//! The truth is Go's own: `tests/fixtures/go/decoding/expected.json` holds, for each input
//! of `cases.txt`, what `json.Marshal(json.Unmarshal(input))` gave with Go's encoding/json
//! (`main.go` there, run with Go 1.19), or that Unmarshal failed: 23 hand-made cases, 80
//! sampled from a differential run over 106 209 generated inputs, and 11 with `machine`.
//! Each case here must give the same bytes, or fail too.
//!
//! `machine` is the crate's own key (set by broker nodes serving several producers); Go's
//! structs have none, so Go skips it and its output never holds it. The crate keeps it: its
//! output is compared with Go's with every `machine` emptied (which also omits it), so Go
//! must decode each such case without error and keep every other field as the crate does;
//! what the crate kept is checked on its own.

use agentwatch_ws::{Event, wire};

/// What Go's struct holds of an event the crate decoded: the same, without `machine`.
fn without_machine(mut event: Event) -> Event {
    for session in event.sessions.iter_mut().chain(event.updates.iter_mut()) {
        session.machine.clear();
    }
    if let Some(health) = &mut event.health {
        health.machine.clear();
    }
    event
}

/// Every `machine` the crate kept: the sessions', then the updates', then the health
/// report's.
fn machines(event: &Event) -> Vec<&str> {
    event
        .sessions
        .iter()
        .chain(&event.updates)
        .map(|s| s.machine.as_str())
        .chain(event.health.iter().map(|h| h.machine.as_str()))
        .collect()
}

struct Case {
    name: String,
    input: Vec<u8>,
    /// `None`: Go's Unmarshal failed.
    output: Option<String>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/go/decoding/expected.json"
    ))
    .unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let hex = v["input"].as_str().unwrap();
            let input = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            Case {
                name: v["name"].as_str().unwrap().to_owned(),
                input,
                output: v["output"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

#[test]
fn every_case_decodes_as_go_decodes_it() {
    let cases = cases();
    assert!(cases.len() >= 100, "the fixture lost its cases");
    let mut wrong = Vec::new();
    for case in &cases {
        let ours = Event::from_json(&case.input)
            .map_err(|e| e.to_string())
            .map(without_machine)
            .and_then(|ev| {
                wire::to_vec(&ev)
                    .map(|b| String::from_utf8(b).unwrap())
                    .map_err(|e| e.to_string())
            });
        let same = match (&ours, &case.output) {
            (Ok(ours), Some(go)) => ours == go,
            (Err(_), None) => true,
            _ => false,
        };
        if !same {
            wrong.push(format!(
                "{}:\n   input {}\n      go {:?}\n    ours {:?}",
                case.name,
                String::from_utf8_lossy(&case.input),
                case.output,
                ours
            ));
        }
    }
    assert!(wrong.is_empty(), "decoded unlike Go:\n{}", wrong.join("\n"));
}

/// Go decodes every `machine` case but the malformed one; the crate keeps each `machine`
/// that is a string, drops one of any other type as Go drops the key, and fails where Go
/// fails.
#[test]
fn machine_is_kept_where_go_drops_it() {
    let cases = cases();
    let expected: &[(&str, &[&str])] = &[
        ("machine_on_session", &["laptop"]),
        ("machine_on_session_with_subagents", &["laptop"]),
        ("machine_on_health", &["build-box"]),
        (
            "machine_snapshot_several",
            &["laptop", "build-box", "", "desk.example.org"],
        ),
        ("machine_empty_and_null", &["", ""]),
        ("machine_case_folded", &["laptop", "desk"]),
        ("machine_wrong_type_number", &[""]),
        ("machine_wrong_type_object", &[""]),
        ("machine_wrong_type_array_and_bool", &["", ""]),
        ("machine_string_then_wrong_type", &["laptop"]),
    ];
    let machine_cases: Vec<&Case> = cases
        .iter()
        .filter(|case| case.name.starts_with("machine_"))
        .collect();
    assert_eq!(
        machine_cases.len(),
        expected.len() + 1,
        "the fixture lost its machine cases"
    );
    for (name, want) in expected {
        let case = machine_cases
            .iter()
            .find(|case| case.name == *name)
            .unwrap_or_else(|| panic!("no case {name}"));
        let go = case
            .output
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: Go failed to decode it"));
        assert!(
            !go.contains("machine"),
            "{name}: Go's struct has no machine"
        );
        let ours = Event::from_json(&case.input).unwrap();
        assert_eq!(machines(&ours), *want, "{name}");
        // Written back, last in each struct, where set.
        let json = String::from_utf8(wire::to_vec(&ours).unwrap()).unwrap();
        let written = want.iter().filter(|m| !m.is_empty()).count();
        assert_eq!(json.matches(r#","machine":""#).count(), written, "{name}");
    }
    let malformed = machine_cases
        .iter()
        .find(|case| case.name == "machine_malformed_value")
        .unwrap();
    assert!(malformed.output.is_none());
    assert!(Event::from_json(&malformed.input).is_err());
}

/// Where serde_json's defaults decode unlike Go, spelled out: repeated keys merge, invalid
/// UTF-8 becomes U+FFFD, a top-level `null` is the zero event.
#[test]
fn where_serde_json_decodes_unlike_go() {
    // A repeated key merges, as Go does; serde_json's last-wins would lose `source`.
    let ev = Event::from_json(
        br#"{"type":"health","health":{"source":"codex"},"health":{"status":"failed"}}"#,
    )
    .unwrap();
    let health = ev.health.unwrap();
    assert_eq!(health.source, "codex");
    assert_eq!(health.status.as_str(), "failed");

    let ev = Event::from_json(
        br#"{"type":"lifecycle","lifecycle":{"sessionId":"s1","to":"idle"},"lifecycle":{"to":"ended"}}"#,
    )
    .unwrap();
    let lifecycle = ev.lifecycle.unwrap();
    assert_eq!(
        (lifecycle.session_id.as_str(), lifecycle.to.as_str()),
        ("s1", "ended")
    );

    let ev = Event::from_json(
        br#"{"type":"delta","updates":[{"id":"a","model":"m"},{"id":"b"}],"updates":[{"messageCount":4}]}"#,
    )
    .unwrap();
    assert_eq!(ev.updates.len(), 1);
    assert_eq!(
        (ev.updates[0].id.as_str(), ev.updates[0].model.as_str()),
        ("a", "m")
    );
    assert_eq!(ev.updates[0].message_count, 4);

    // Invalid UTF-8 inside a string: U+FFFD per invalid byte, not a rejected event.
    let ev = Event::from_json(b"{\"type\":\"delta\",\"removed\":[\"a\xffb\"]}").unwrap();
    assert_eq!(ev.removed, ["a\u{FFFD}b"]);

    // A top-level null: the zero event, as Go leaves it; it has no known type.
    let ev = Event::from_json(b"null").unwrap();
    assert_eq!(ev, Event::default());
    assert!(!ev.kind.is_known());
}
