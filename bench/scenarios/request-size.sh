#!/usr/bin/env bash
# The disk's speed by request size at the same bytes in flight: `fabriq-bench local` on the
# 2 GiB file with the block layer's merging turned off (so every request reaches the device
# at the size it was submitted), 128 KiB x 16 up to 2 MiB x 1, 2 MiB in flight each time,
# sequential reads and writes. A local run at 128 KiB QD16 with merging on reaches the
# device as 2 MiB requests; a network target's commands reach it one at a time: this is how
# much that alone is worth on this device. Needs root (it writes the device's
# queue/nomerges and puts the old value back when it ends).
#
#   cargo build --release -p fabriq-bench
#   bash bench/scenarios/request-size.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results/request-size}
FILE=${FILE:-/var/tmp/fabriq-bench-local.img}
BIN=build/release
. bench/scenarios/lib.sh
# The whole disk under FILE (a partition's queue settings are its disk's).
DEV=/sys/dev/block/$(block_device "$(dirname "$FILE")")
mkdir -p "$OUT"
bench_file "$FILE"
[ -e "$DEV/queue/nomerges" ] || DEV=$DEV/..
NOMERGES=$DEV/queue/nomerges
OLD=$(cat "$NOMERGES")
trap 'echo "$OLD" > "$NOMERGES"' EXIT
echo 2 >"$NOMERGES"
: >"$OUT/summary.txt"
for rw in read write; do
  for c in "128k 16" "256k 8" "512k 4" "1m 2" "2m 1"; do
    set -- $c
    name="$rw-$1-qd$2"
    taskset -c 1 "$BIN/fabriq-bench" local --file "$FILE" --rw "$rw" --bs "$1" --iodepth "$2" \
      --runtime "${RUNTIME:-3s}" --ramp 1s --busy-poll --no-progress --disk "$FILE" \
      --json "$OUT/$name.json" >"$OUT/$name.txt"
    printf '%-18s %s\n' "$name" "$(grep -E 'bandwidth|disk ' "$OUT/$name.txt" | tr -s ' ' | paste -sd' ')" | tee -a "$OUT/summary.txt"
  done
done
