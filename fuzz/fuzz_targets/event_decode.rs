//! `Event::from_json` on arbitrary bytes: never panics, and whatever decodes re-encodes
//! stably: `encode(decode(encode(x))) == encode(x)`.
//!
//! Only the round trip of what the crate itself writes is asserted, not how the input
//! decodes: repeated keys, invalid UTF-8 and a top-level `null` may decode however the
//! crate documents (Go's rules), as long as the re-encoding is stable.
#![no_main]

use agentwatch_ws::{Event, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::from_json(data) else {
        return;
    };
    // Values Go refuses to encode (a non-finite float, a year outside 0..=9999) are
    // errors, not panics: nothing to round-trip.
    let Ok(first) = wire::to_vec(&event) else {
        return;
    };
    let again = Event::from_json(&first).unwrap_or_else(|e| {
        panic!(
            "the crate's own encoding does not decode: {e}\n{}",
            String::from_utf8_lossy(&first)
        )
    });
    let second = wire::to_vec(&again).unwrap_or_else(|e| {
        panic!(
            "a decoded encoding does not encode: {e}\n{}",
            String::from_utf8_lossy(&first)
        )
    });
    assert!(
        first == second,
        "encode(decode(encode(x))) != encode(x)\n first: {}\nsecond: {}",
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second)
    );
});
