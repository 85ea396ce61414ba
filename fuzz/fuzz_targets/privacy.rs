//! A privacy policy applied to arbitrary events: never panics, and what comes out holds no
//! redacted value. The first byte chooses the policy (bits over `Field::ALL`: working
//! directory, branch, model, session id, source, machine); the rest is decoded as an event.
//!
//! Checked on the redacted event as encoded and decoded again (what a viewer gets): every
//! redacted field is empty, every id under `id` redaction is a pseudonym (32 lower-case hex
//! digits, or empty where the input's was), a health report's source under `source`
//! redaction is a pseudonym, its `lastError` is empty under `dir`, `id`, `source` or
//! `machine`; every `machine` (a session's, a health report's) is a pseudonym under `machine`
//! redaction and the input's otherwise; and seq, at, type and every count are the input's.
#![no_main]

use agentwatch_ws::{Event, fuzzing, wire};
use libfuzzer_sys::fuzz_target;

fn pseudonym_or_empty(value: &str, input: &str) -> bool {
    if input.is_empty() {
        return value.is_empty();
    }
    value.len() == 32
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fuzz_target!(|data: &[u8]| {
    let Some((&fields, json)) = data.split_first() else {
        return;
    };
    let Ok(input) = Event::from_json(json) else {
        return;
    };
    let redacted = fuzzing::redact(&input, fields);
    // What a viewer receives: the encoding, decoded.
    let Ok(bytes) = wire::to_vec(&redacted) else {
        // Only values Go refuses to encode fail, and the input's encoding fails the same way.
        assert!(
            wire::to_vec(&input).is_err(),
            "redaction made an event unencodable"
        );
        return;
    };
    let out = Event::from_json(&bytes).expect("the crate's own encoding decodes");
    let (dir, branch, model, id, source, machine) = (
        fields & 1 != 0,
        fields & 2 != 0,
        fields & 4 != 0,
        fields & 8 != 0,
        fields & 16 != 0,
        fields & 32 != 0,
    );
    assert_eq!(
        (out.seq, out.at, &out.kind),
        (input.seq, input.at, &input.kind)
    );
    let sessions = |e: &Event| e.sessions.len() + e.updates.len();
    assert_eq!(sessions(&out), sessions(&input));
    let pairs = out
        .sessions
        .iter()
        .chain(&out.updates)
        .zip(input.sessions.iter().chain(&input.updates));
    for (s, original) in pairs {
        assert!(!dir || s.working_dir.is_empty());
        assert!(!branch || s.branch.is_empty());
        assert!(!model || s.model.is_empty());
        assert!(!source || s.source.is_empty());
        assert!(!id || (pseudonym_or_empty(&s.id, &original.id) && s.slug.is_empty()));
        assert!(!machine || pseudonym_or_empty(&s.machine, &original.machine));
        assert!(machine || s.machine == original.machine);
        assert_eq!(s.message_count, original.message_count);
        assert_eq!(s.subagents.len(), original.subagents.len());
        for (sub, o) in s.subagents.iter().zip(&original.subagents) {
            assert!(!model || sub.model.is_empty());
            assert!(
                !id || (pseudonym_or_empty(&sub.id, &o.id)
                    && pseudonym_or_empty(&sub.parent_id, &o.parent_id)
                    && sub.slug.is_empty())
            );
        }
    }
    assert_eq!(out.removed.len(), input.removed.len());
    for (r, o) in out.removed.iter().zip(&input.removed) {
        assert!(!id || pseudonym_or_empty(r, o));
    }
    if let (Some(lc), Some(o)) = (&out.lifecycle, &input.lifecycle) {
        assert!(!id || pseudonym_or_empty(&lc.session_id, &o.session_id));
        assert!(!source || lc.source.is_empty());
    }
    if let (Some(h), Some(o)) = (&out.health, &input.health) {
        assert!(!source || pseudonym_or_empty(&h.source, &o.source));
        assert!(!machine || pseudonym_or_empty(&h.machine, &o.machine));
        assert!(machine || h.machine == o.machine);
        assert!(!(dir || id || source || machine) || h.last_error.is_empty());
    }
});
