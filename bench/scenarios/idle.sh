#!/usr/bin/env bash
# Idle cost: fabriq-target's CPU over 30 s with 16 connected I/O queues (and their admin
# queue with keep-alive) carrying almost nothing (one command per second in all). The
# target should sleep in the kernel: its CPU is read from /proc/PID/stat by fabriq-bench.
#
#   cargo build --release -p fabriq-bench -p fabriq-target
#   bash bench/scenarios/idle.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results/idle}
BIN=build/release
. bench/scenarios/lib.sh
mkdir -p "$OUT"
start_target bench/scenarios/null-target.toml "$OUT/target.log"
"$BIN/fabriq-bench" run --target tcp://127.0.0.1:4420 --nqn nqn.2026-11.dev.fabriq:bench \
  --target-pid $TARGET --queues 16 --iodepth 1 --rw randread --bs 4k --rate-iops 1 \
  --runtime ${RUNTIME:-30s} --kato 10s --no-progress --json "$OUT/idle-16-queues.json" | tee "$OUT/idle-16-queues.txt"
