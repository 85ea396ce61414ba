//! Entry points for the fuzz targets in `fuzz/` into code that is otherwise private.
//!
//! Compiled only under `--cfg fuzzing`, which `cargo fuzz` passes to every crate it builds;
//! hidden from the docs and not part of the API. See CONTRIBUTING.md, "Fuzzing".

#[cfg(feature = "monitor")]
pub use crate::monitor::fuzzing::{
    claude_fast_matches_serde, claude_lines, codex_lines, gemini_lines, gemini_whole,
};

/// The redaction one policy applies to an event: `fields` is a bit set over
/// [`Field::ALL`](crate::privacy::Field::ALL) (bit 0: the working directory), under a fixed
/// key.
pub fn redact(event: &crate::Event, fields: u8) -> crate::Event {
    crate::privacy::fuzz_redact(event, fields)
}
