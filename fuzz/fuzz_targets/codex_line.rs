//! The Codex log line parser (`agentwatch_ws::fuzzing::codex_lines`, built under
//! `--cfg fuzzing`): the input is split into lines and fed as the monitor feeds a log.
//! Properties: no panic; every event it yields encodes; with a marker planted in every
//! content-bearing place of the lines (see `log_privacy`), no event carries the marker.
#![no_main]

mod log_privacy;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    log_privacy::check_lines(data, |lines| agentwatch_ws::fuzzing::codex_lines(lines));
});
