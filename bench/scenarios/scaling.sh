#!/usr/bin/env bash
# Scaling with reactors (1, 2) and I/O queues per host (1, 2, 4): 4 KiB random reads at
# QD 32 per queue against a null namespace. This machine has two cores, so with two
# reactors the target and the generator share them (nothing is pinned): the figure that
# matters is IOPS per target CPU-second, and whether queues spread over both reactors.
#
#   cargo build --release -p fabriq-bench -p fabriq-target
#   bash bench/scenarios/scaling.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results/scaling}
BIN=build/release
. bench/scenarios/lib.sh
mkdir -p "$OUT"
for reactors in 1 2; do
  sed "s/^reactors = 1$/reactors = $reactors/" bench/scenarios/null-target.toml >"$OUT/target-$reactors.toml"
  start_target "$OUT/target-$reactors.toml" "$OUT/target-$reactors.log"
  "$BIN/fabriq-bench" run --target tcp://127.0.0.1:4420 --nqn nqn.2026-11.dev.fabriq:bench --target-pid $TARGET \
    --rw randread --bs 4k --iodepth 32 --runtime ${RUNTIME:-5s} --ramp 1s --no-progress \
    --sweep queues=1,2,4 --label "reactors=$reactors" --json "$OUT/reactors-$reactors.json" --plot "$OUT/reactors-$reactors" \
    | tee "$OUT/reactors-$reactors.txt"
  stop_target
done
