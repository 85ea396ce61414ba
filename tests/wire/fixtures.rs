//! Golden-fixture tests: every `*.json` file in the fixtures directory holds the exact
//! bytes Go's `json.Marshal` produced for one `monitor.Event`. Each must decode,
//! re-encode to the same JSON value (numbers compared as written, not through f64),
//! and re-encode to identical bytes.
//!
//! The directory is `tests/fixtures/go` in this crate (vendored: the fixtures are the wire
//! truth and travel with the code; see its README for how they were made), or
//! `$AGENTWATCH_FIXTURES_DIR` to check another set.

use std::path::PathBuf;

use agentwatch_ws::{Event, wire};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("AGENTWATCH_FIXTURES_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go")),
    }
}

/// All `*.json` fixtures, sorted, with their bytes. Panics if there are none.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fixtures dir {}: {e}", dir.display()));
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes =
                std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    assert!(
        !out.is_empty(),
        "no *.json fixtures found in {}: set AGENTWATCH_FIXTURES_DIR",
        dir.display()
    );
    out
}

/// The number tokens of a JSON text, in order, exactly as written.
fn number_tokens(json: &[u8]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                out.push(std::str::from_utf8(&json[start..i]).unwrap());
            }
            _ => i += 1,
        }
    }
    out
}

/// Runs `check` on every fixture, reporting all failures at once.
fn for_each_fixture(check: impl Fn(&str, &[u8]) -> Result<(), String>) {
    let all = fixtures();
    let failures: Vec<String> = all
        .iter()
        .filter_map(|(name, bytes)| check(name, bytes).err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

fn decode(bytes: &[u8]) -> Result<Event, String> {
    Event::from_json(bytes).map_err(|e| format!("decode failed: {e}"))
}

fn encode(ev: &Event) -> Result<Vec<u8>, String> {
    wire::to_vec(ev).map_err(|e| format!("encode failed: {e}"))
}

#[test]
fn fixtures_decode() {
    for_each_fixture(|_, bytes| decode(bytes).map(drop));
}

#[test]
fn fixtures_reencode_to_same_json_value() {
    for_each_fixture(|_, bytes| {
        let out = encode(&decode(bytes)?)?;
        let want: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("fixture is not JSON: {e}"))?;
        let got: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| format!("output is not JSON: {e}"))?;
        if want != got {
            return Err(format!("value differs:\n want {want}\n  got {got}"));
        }
        let (want_nums, got_nums) = (number_tokens(bytes), number_tokens(&out));
        if want_nums != got_nums {
            return Err(format!(
                "number tokens differ:\n want {want_nums:?}\n  got {got_nums:?}"
            ));
        }
        Ok(())
    })
}

#[test]
fn fixtures_reencode_to_identical_bytes() {
    for_each_fixture(|_, bytes| {
        let ev = decode(bytes)?;
        let out = encode(&ev)?;
        if out != bytes {
            return Err(format!(
                "bytes differ:\n want {}\n  got {}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&out)
            ));
        }
        // The other entry points agree.
        let s = ev.to_json().map_err(|e| e.to_string())?;
        let mut w = Vec::new();
        wire::to_writer(&mut w, &ev).map_err(|e| e.to_string())?;
        if s.as_bytes() != bytes || w != bytes {
            return Err("to_json / to_writer differ from to_vec".into());
        }
        Ok(())
    })
}

#[test]
fn fixtures_decode_is_stable() {
    // decode(encode(decode(x))) == decode(x), and plain serde_json gives the same value.
    for_each_fixture(|_, bytes| {
        let ev = decode(bytes)?;
        let again = decode(&encode(&ev)?)?;
        if again != ev {
            return Err("second decode differs from the first".into());
        }
        let plain = serde_json::to_vec(&ev).map_err(|e| e.to_string())?;
        if decode(&plain)? != ev {
            return Err("plain serde_json encoding decodes differently".into());
        }
        Ok(())
    })
}

#[test]
fn number_tokens_helper() {
    assert_eq!(
        number_tokens(br#"{"a":"1\"2","b":[-0,1e+21,0.5],"c":18446744073709551615}"#),
        ["-0", "1e+21", "0.5", "18446744073709551615"]
    );
}
