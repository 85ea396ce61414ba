//! Entry points for the fuzz targets in `fuzz/` into code that is otherwise private.
//!
//! Compiled only under `--cfg fuzzing`, which `cargo fuzz` passes to every crate it builds;
//! hidden from the docs and not part of the API. See CONTRIBUTING.md, "Fuzzing".

#[cfg(feature = "monitor")]
pub use crate::monitor::fuzzing::{
    claude_fast_matches_serde, claude_lines, codex_lines, gemini_lines, gemini_whole,
};
