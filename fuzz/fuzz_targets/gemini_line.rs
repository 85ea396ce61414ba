//! The Gemini log line parser (`agentwatch_ws::fuzzing::gemini_lines`, built under
//! `--cfg fuzzing`): the input is split into lines and fed as the monitor feeds a `.jsonl`
//! chat, and the whole input is also read as a `.json` chat.
//! Properties: no panic; every event it yields encodes; with a marker planted in every
//! content-bearing place of the lines (see `log_privacy`), no event carries the marker.
#![no_main]

mod log_privacy;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    log_privacy::check_lines(data, |lines| agentwatch_ws::fuzzing::gemini_lines(lines));
    // The same bytes as a whole `.json` chat, the form rewritten on each save.
    log_privacy::check_whole(data, agentwatch_ws::fuzzing::gemini_whole);
});
