#!/usr/bin/env bash
# Compares bench_server built at two revisions with the shared bench harness:
#
#   scripts/bench_ab.sh OLD_REV [NEW_REV] -- COMPARE_ARGS...
#   scripts/bench_ab.sh d388ff6 -- --scenario fanout --peers floor --runs 3
#
# Each revision is checked out in a temporary git worktree, `bench_server` is built there in
# release mode (one shared target directory, so the second build reuses the first's
# dependencies) and copied out; then `compare.sh` runs with `--server new=...` first (the
# ratio reference) and `--server old=...`, followed by COMPARE_ARGS. NEW_REV defaults to the
# working tree as it is (uncommitted changes included).
#
# The harness is looked for in $BENCH_DIR, else ../shared/bench beside this clone. Build
# products go to $AB_TARGET (default: target/bench-ab in this clone); the worktrees and the
# copied binaries are removed on exit.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${BENCH_DIR:-$repo/../shared/bench}"
target="${AB_TARGET:-$repo/target/bench-ab}"

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
old_rev="$1"
shift
new_rev=""
if [ $# -ge 1 ] && [ "$1" != "--" ]; then
    new_rev="$1"
    shift
fi
[ $# -ge 1 ] && [ "$1" = "--" ] && shift
[ -x "$bench/compare.sh" ] || {
    echo "bench_ab: no compare.sh in $bench (set BENCH_DIR)" >&2
    exit 2
}

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-ab.XXXXXX")"
worktrees=()
cleanup() {
    for w in "${worktrees[@]}"; do
        git -C "$repo" worktree remove --force "$w" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# build NAME REV: builds bench_server at REV (the working tree when REV is empty) and copies
# it to $work/bench_server_NAME.
build() {
    local name="$1" rev="$2" src="$repo"
    if [ -n "$rev" ]; then
        src="$work/src-$name"
        git -C "$repo" worktree add --detach --quiet "$src" "$rev"
        worktrees+=("$src")
    fi
    echo "bench_ab: building bench_server ($name: ${rev:-working tree})" >&2
    CARGO_TARGET_DIR="$target" cargo build --quiet --release --example bench_server \
        --manifest-path "$src/Cargo.toml"
    cp "$target/release/examples/bench_server" "$work/bench_server_$name"
}

build new "$new_rev"
build old "$old_rev"

"$bench/compare.sh" \
    --server "new=$work/bench_server_new --port {port}" \
    --server "old=$work/bench_server_old --port {port}" \
    "$@"
