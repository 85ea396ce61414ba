#!/usr/bin/env bash
# Counts the instructions the server executes for a fan-out burst, under valgrind's callgrind:
# a figure that does not depend on what else the machine is doing (user-space instructions
# only: the kernel's share of each write is not in it).
#
#   scripts/callgrind_fanout.sh [--clients N] [--count M] [--bin PATH] [-- SERVER_ARGS...]
#   scripts/callgrind_fanout.sh -- --policies 2
#
# Starts PATH (default target/release/examples/bench_server; build it first with
# `cargo build --release --example bench_server`) under callgrind on a free port, runs the
# shared harness's load generator against it (N clients, default 200; one burst of M events
# of 512 bytes, default 5 000), stops the server and prints the total instructions, the
# instructions per delivery (fixed costs included: start-up and N handshakes) and where the
# profile is (read it with `callgrind_annotate FILE`). The load generator is the one
# `compare.sh` builds: $LOADGEN, else /tmp/bench-target/release/loadgen (run compare.sh once,
# or `cargo build --release` in ../shared/bench/loadgen with CARGO_TARGET_DIR=/tmp/bench-target).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/target/release/examples/bench_server"
loadgen="${LOADGEN:-/tmp/bench-target/release/loadgen}"
clients=200
count=5000
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients="$2"; shift 2 ;;
        --count) count="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --) shift; break ;;
        *) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "no server at $bin: cargo build --release --example bench_server" >&2; exit 2; }
[ -x "$loadgen" ] || { echo "no load generator at $loadgen (see --help)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 2; }

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
out="$(mktemp /tmp/callgrind.fanout.XXXXXX)"
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --port "$port" "$@" 2>"$out.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.5
done
"$loadgen" --url "ws://127.0.0.1:$port/ws" --clients "$clients" --count "$count" --bytes 512 \
    --timeout-s 900 --label callgrind >"$out.loadgen" 2>"$out.loadgen.log"
kill -TERM "$server"
wait "$server" || true
trap - EXIT
total="$(sed -n 's/^summary: *//p' "$out")"
received="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["received"])' "$out.loadgen")"
echo "server args: ${*:-(none)}; clients $clients, events $count, deliveries received $received"
echo "instructions: $total ($((total / received)) per delivery, fixed costs included)"
echo "profile: $out"
