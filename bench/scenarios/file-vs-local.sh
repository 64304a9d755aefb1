#!/usr/bin/env bash
# fabriq-target on a file namespace against local io_uring on the same file: the
# issue's 90% bar. Each workload is a `compare` of A = local, B = NVMe/TCP through
# fabriq-target, interleaved A B A B (ROUNDS rounds), because this machine's
# virtual disk drifts by half its speed within minutes. Target pinned to core 0,
# generator to core 1. POLL=1 (the default) makes the generator busy-poll in both
# modes, as SPDK's perf initiator does (the issue's reference figures come from it);
# POLL=0 lets it sleep in io_uring_enter between completions. FILE puts the 2 GiB
# file elsewhere (FILE=/dev/shm/fabriq-bench.img: a memory-speed backend, tmpfs,
# O_DIRECT since Linux 6.6, where what limits is the target's CPU and not a disk).
# When FILE is on a block device, both sides report what that device served (`--disk`:
# requests per second, their size after the block layer merged them, busy time): the
# same commands can reach it as different requests. DEEP=1 adds 128 KiB reads and writes
# at QD32 and QD64: how the ratio moves when more of the queue can wait at the disk while
# data crosses the network.
#
#   cargo build --release -p fabriq-bench -p fabriq-target
#   bash bench/scenarios/file-vs-local.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results/file-vs-local}
FILE=${FILE:-/var/tmp/fabriq-bench-local.img}
BIN=build/release
. bench/scenarios/lib.sh
ROUNDS=${ROUNDS:-5}
RUNTIME=${RUNTIME:-3s}
mkdir -p "$OUT"
bench_file "$FILE"
file_target_config "$FILE" "$OUT/target.toml"
start_target "$OUT/target.toml" "$OUT/target.log" 0
COMMON="--runtime $RUNTIME --ramp 1s"
[ "${POLL:-1}" = 1 ] && COMMON="$COMMON --busy-poll"
[ "$(stat -f -c %T "$FILE")" = tmpfs ] || COMMON="$COMMON --disk $FILE"
WORKLOADS=("randread 4k 1" "randread 4k 32" "randread 4k 128" "read 128k 16" "write 128k 16")
[ "${DEEP:-0}" = 1 ] && WORKLOADS+=("read 128k 32" "read 128k 64" "write 128k 32" "write 128k 64")
for w in "${WORKLOADS[@]}"; do
  set -- $w
  name="$1-$2-qd$3"
  echo "== $name"
  taskset -c 1 "$BIN/fabriq-bench" compare --rounds "$ROUNDS" --json "$OUT/$name.json" \
    --a "local --file $FILE --rw $1 --bs $2 --iodepth $3 $COMMON" \
    --b "run --target tcp://127.0.0.1:4420 --nqn nqn.2026-11.dev.fabriq:bench --target-pid $TARGET --rw $1 --bs $2 --iodepth $3 $COMMON" \
    | tail -11 | tee "$OUT/$name.txt"
done
