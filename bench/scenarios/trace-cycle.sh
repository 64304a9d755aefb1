#!/usr/bin/env bash
# Where one workload's I/O cycle spends its time, from kernel tracepoints: fabriq-target
# on the file namespace (core 0), fabriq-bench on core 1, and one second of
# block:block_rq_issue/complete and io_uring:io_uring_submit_req/complete recorded in the
# middle of the run; trace-cycle.py then says how many requests the device held, how long
# it sat without one, how long a completion took to reach the reactor, and how long the
# reactor spent in its sends. Needs root and perf (Debian: apt-get install linux-perf).
#
#   cargo build --release -p fabriq-bench -p fabriq-target
#   RW=read BS=128k QD=16 bash bench/scenarios/trace-cycle.sh [OUT]   (KEEP=1 keeps the trace text)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results/trace-cycle}
FILE=${FILE:-/var/tmp/fabriq-bench-local.img}
RW=${RW:-read}
BS=${BS:-128k}
QD=${QD:-16}
BIN=build/release
. bench/scenarios/lib.sh
command -v perf >/dev/null || { echo "trace-cycle.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
# The block device under FILE, as MAJOR:MINOR.
DEV=$(block_device "$(dirname "$FILE")")
mkdir -p "$OUT"
bench_file "$FILE"
file_target_config "$FILE" "$OUT/target.toml"
start_target "$OUT/target.toml" "$OUT/target.log" 0
name="$RW-$BS-qd$QD"
taskset -c 1 "$BIN/fabriq-bench" run --target tcp://127.0.0.1:4420 --nqn nqn.2026-11.dev.fabriq:bench \
  --target-pid $TARGET --rw "$RW" --bs "$BS" --iodepth "$QD" --runtime 5s --ramp 1s --busy-poll \
  --disk "$FILE" --no-progress >"$OUT/$name.bench.txt" &
BENCH=$!
sleep 3
perf record -q -a -o "$OUT/$name.perf.data" \
  -e block:block_rq_issue,block:block_rq_complete,io_uring:io_uring_submit_req,io_uring:io_uring_complete \
  -- sleep 1 2>/dev/null
wait $BENCH
perf script -i "$OUT/$name.perf.data" -F comm,tid,cpu,time,event,trace >"$OUT/$name.perf.txt" 2>/dev/null
rm -f "$OUT/$name.perf.data"
{
  echo "== $name: fabriq-bench"
  cat "$OUT/$name.bench.txt"
  echo "== $name: trace-cycle.py (device $DEV)"
  python3 bench/scenarios/trace-cycle.py "$OUT/$name.perf.txt" "$DEV"
} | tee "$OUT/$name.txt"
# The bench's own output is in $name.txt now. The recording's text is tens of MB: kept
# only when asked (KEEP=1).
rm -f "$OUT/$name.bench.txt"
[ "${KEEP:-0}" = 1 ] || rm -f "$OUT/$name.perf.txt"
