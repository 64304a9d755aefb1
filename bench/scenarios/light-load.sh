#!/usr/bin/env bash
# Between idle and saturation: what fabriq-target's core costs at a given load. 4 KiB
# random reads at QD4 against a null namespace, at fixed rates (evenly spaced commands,
# a `--sweep` of `--rate-iops`), the generator sleeping between completions as an
# application would. Per rate: the target's CPU (% of a core), IOPS per target
# CPU-second and the latency. Target pinned to core 0, generator to core 1.
#
#   cargo build --release -p fabriq-bench -p fabriq-target
#   bash bench/scenarios/light-load.sh [OUT]        (RATES=2000,5000,..., RUNTIME=3s)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results/light-load}
BIN=build/release
. bench/scenarios/lib.sh
mkdir -p "$OUT"
start_target bench/scenarios/null-target.toml "$OUT/target.log" 0
taskset -c 1 "$BIN/fabriq-bench" run --target tcp://127.0.0.1:4420 --nqn nqn.2026-11.dev.fabriq:bench \
  --target-pid "$TARGET" --rw randread --bs 4k --iodepth 4 --runtime "${RUNTIME:-3s}" --ramp 1s \
  --no-progress --sweep "rate-iops=${RATES:-2000,5000,10000,20000,50000}" --json "$OUT/light-load.json" \
  | tee "$OUT/light-load.txt"
