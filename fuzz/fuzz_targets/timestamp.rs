//! `Timestamp::parse` on arbitrary text: never panics, and what parses round-trips as
//! `src/wire/time.rs` documents it:
//!
//! - formatting (`Display`, Go's `MarshalJSON` layout) and parsing again gives an equal
//!   value (same instant, same offset) and the identical text;
//! - the text is the input with the fraction truncated to nine digits and its trailing
//!   zeros (and a `.` left bare) dropped, and a zero offset (`+00:00`, `-00:00`) written `Z`;
//!   the date, clock and any other offset are kept as written;
//! - the value is encodable (its year is the one written, within 0..=9999), and its JSON
//!   form is the same text in quotes, which decodes back to the same value.
#![no_main]

use agentwatch_ws::Timestamp;
use libfuzzer_sys::fuzz_target;

/// The documented canonical form of a timestamp `parse` accepted.
fn canonical(s: &str) -> String {
    // `YYYY-MM-DDTHH:MM:SS` is always the first 19 bytes, all ASCII.
    let (clock, rest) = s.split_at(19);
    let (fraction, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..digits], &r[digits..])
        }
        None => ("", rest),
    };
    let fraction = fraction[..fraction.len().min(9)].trim_end_matches('0');
    let zone = match zone {
        "+00:00" | "-00:00" => "Z",
        z => z,
    };
    let mut out = String::from(clock);
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out.push_str(zone);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Timestamp::parse(s) else {
        return;
    };
    let text = t.to_string();
    let back = Timestamp::parse(&text)
        .unwrap_or_else(|e| panic!("{s:?} formats as {text:?}, which does not parse: {e}"));
    assert_eq!(back, t, "{s:?} -> {text:?} -> another value");
    assert!(back.same_instant(&t) && back.offset_seconds() == t.offset_seconds());
    assert_eq!(back.to_string(), text, "{s:?}: formatting is not stable");
    assert_eq!(
        text,
        canonical(s),
        "{s:?}: not the documented canonical form"
    );
    // `FromStr` is `parse`.
    assert_eq!(s.parse::<Timestamp>(), Ok(t));

    assert!(
        t.is_encodable(),
        "{s:?} parsed to a value that cannot be encoded"
    );
    let json = serde_json::to_string(&t)
        .unwrap_or_else(|e| panic!("{s:?}: a parsed timestamp does not serialize: {e}"));
    assert_eq!(
        json,
        format!("\"{text}\""),
        "{s:?}: JSON differs from Display"
    );
    let decoded: Timestamp = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{s:?}: {json} does not deserialize: {e}"));
    assert_eq!(decoded, t);
});
