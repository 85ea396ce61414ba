//! The Claude log line parser (`agentwatch_ws::fuzzing::claude_lines`, built under
//! `--cfg fuzzing`): the input is split into lines and fed as the monitor feeds a log.
//! Properties: no panic; every event it yields encodes; with a marker planted in every
//! content-bearing place of the lines (see `log_privacy`), no event carries the marker;
//! the parser's fast line reader gives `serde_json`'s record or none, for every line.
#![no_main]

mod log_privacy;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        assert!(
            agentwatch_ws::fuzzing::claude_fast_matches_serde(line),
            "the fast reader disagrees with serde_json"
        );
    }
    log_privacy::check_lines(data, |lines| agentwatch_ws::fuzzing::claude_lines(lines));
});
