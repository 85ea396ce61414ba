#!/usr/bin/env bash
# Runs the fuzz targets for a while each and reports.
#
#   fuzz/run.sh [seconds-per-target] [targets...]
#
# Defaults: 30 seconds, every target `cargo fuzz list` shows. Each target runs with debug
# assertions and overflow checks (`-a`) and AddressSanitizer, on the stable toolchain
# (RUSTC_BOOTSTRAP=1), over two corpora: fuzz/corpus/<target> (scratch, gitignored: new
# inputs libFuzzer finds go there) and fuzz/seeds/<target> (checked in, only read).
# A target's output is kept in fuzz/artifacts/<target>/run.log, a crashing input in
# fuzz/artifacts/<target>/ (reproduce with `cargo fuzz run <target> <file>`).
#
# Prints the executions per target (libFuzzer's "Done N runs" line) and exits non-zero if
# any target crashed or failed to run; every target runs either way.
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

seconds=${1:-30}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: fuzz/run.sh [seconds-per-target] [targets...]" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# One build for every target, so that the time limit is spent fuzzing.
cargo fuzz build -a

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    corpora=("fuzz/corpus/$t")
    if [[ -d fuzz/seeds/$t ]]; then
        corpora+=("fuzz/seeds/$t")
    fi
    log="fuzz/artifacts/$t/run.log"
    echo "== $t: ${seconds}s"
    status=0
    # -timeout: one input taking longer is a finding (a hang); -rss_limit_mb: so is memory
    # beyond that (the sanitizer's overhead included).
    cargo fuzz run -a "$t" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
    if ((status != 0)); then
        failed+=("$t")
        echo "   FAILED (exit $status), see $log:"
        grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|Test unit written|^error' "$log" | head -n 8 | sed 's/^/   /'
    else
        echo "   ${done_line:-no \"Done\" line, see $log}"
    fi
done

if ((${#failed[@]} > 0)); then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s without a failure"
