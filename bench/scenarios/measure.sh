#!/usr/bin/env bash
# The measurement method of bench/README.md, end to end: fabriq-target with a
# null namespace pinned to core 0, fabriq-bench pinned to core 1, 10 s runs;
# then the same workloads in local mode on a 2 GiB O_DIRECT file. JSON
# reports land in $OUT (default ./bench-results), one per run; ROUNDS=N
# repeats the whole list N times (files NAME-rK.json), for medians on a noisy
# machine.
#
#   cargo build --release -p fabriq-bench -p fabriq-target
#   bash bench/scenarios/measure.sh [OUT] [LOCAL_FILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results}
FILE=${2:-/var/tmp/fabriq-bench-local.img}
BIN=build/release
. bench/scenarios/lib.sh
RUNTIME=${RUNTIME:-10s}
RAMP=${RAMP:-2s}
ROUNDS=${ROUNDS:-1}
mkdir -p "$OUT"

start_target bench/scenarios/null-target.toml "$OUT/target.log" 0

TCP="run --target tcp://127.0.0.1:4420 --nqn nqn.2026-11.dev.fabriq:bench --target-pid $TARGET"
COMMON="--runtime $RUNTIME --ramp $RAMP --no-progress"
run() { # name, args...
  local name=$1; shift
  [ "$ROUNDS" -gt 1 ] && name="$name-r$ROUND"
  echo "== $name: fabriq-bench $*" | tee -a "$OUT/commands.txt"
  taskset -c 1 "$BIN/fabriq-bench" "$@" $COMMON --json "$OUT/$name.json"
}

for ROUND in $(seq "$ROUNDS"); do
run tcp-randread-4k-qd1        $TCP --rw randread --bs 4k --iodepth 1
run tcp-randread-4k-qd1-poll   $TCP --rw randread --bs 4k --iodepth 1 --busy-poll
run tcp-randread-4k-qd32       $TCP --rw randread --bs 4k --iodepth 32
run tcp-randread-4k-qd128      $TCP --rw randread --bs 4k --iodepth 128
run tcp-read-128k-qd16         $TCP --rw read --bs 128k --iodepth 16
run tcp-write-128k-qd16        $TCP --rw write --bs 128k --iodepth 16
done

LOCAL="local --file $FILE"
bench_file "$FILE"
for ROUND in $(seq "$ROUNDS"); do
run local-randread-4k-qd1      $LOCAL --rw randread --bs 4k --iodepth 1
run local-randread-4k-qd32     $LOCAL --rw randread --bs 4k --iodepth 32
run local-randread-4k-qd128    $LOCAL --rw randread --bs 4k --iodepth 128
run local-read-128k-qd16       $LOCAL --rw read --bs 128k --iodepth 16
run local-write-128k-qd16      $LOCAL --rw write --bs 128k --iodepth 16
done
