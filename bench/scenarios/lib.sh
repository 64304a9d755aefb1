# Sourced by the scenario scripts (after `cd` to the repository and setting BIN): start
# fabriq-target on 127.0.0.1:4420 and stop it when the script ends.
#
#   start_target CONFIG LOG [CPU]   runs "$BIN/fabriq-target" --config CONFIG, pinned to CPU
#                                   when given, its output in LOG; sets TARGET to its PID
#                                   and returns once it listens. Fails, with the end of
#                                   LOG, when the port is still taken after 5 s (the script
#                                   would measure somebody else's target) or the target
#                                   exits or does not listen within 10 s.
#   stop_target                     SIGTERM and wait; also done at exit.
#   bench_file FILE                 writes FILE in full (2 GiB, sequential 1 MiB writes)
#                                   unless it is already that large: every block is
#                                   allocated, so reads measure the device, not holes.
#   file_target_config FILE OUT     file-target.toml with its namespace on FILE, as OUT.
#   block_device PATH               prints MAJOR:MINOR of the block device PATH's file system
#                                   is on; fails when there is none (tmpfs, overlay).

# port_open, shared with the end-to-end tests.
# shellcheck source=../../tests/e2e/lib/ports.sh
. tests/e2e/lib/ports.sh

start_target() {
  local config=$1 log=$2 cpu=${3:-}
  # A target stopped a moment ago may take a few seconds to let its port go.
  local tries=0
  while port_open 4420; do
    if ((++tries > 50)); then
      echo "$0: 127.0.0.1:4420 is already taken (another target still running?)" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [ -n "$cpu" ]; then
    taskset -c "$cpu" "$BIN/fabriq-target" --config "$config" >"$log" 2>&1 &
  else
    "$BIN/fabriq-target" --config "$config" >"$log" 2>&1 &
  fi
  TARGET=$!
  trap stop_target EXIT
  for _ in $(seq 100); do
    port_open 4420 && return 0
    kill -0 "$TARGET" 2>/dev/null || break
    sleep 0.1
  done
  echo "$0: fabriq-target --config $config is not listening on 127.0.0.1:4420; the end of $log:" >&2
  tail -n 5 "$log" >&2
  exit 1
}

stop_target() {
  [ -n "${TARGET:-}" ] || return 0
  kill "$TARGET" 2>/dev/null
  wait "$TARGET" 2>/dev/null || true
  TARGET=
}

bench_file() {
  local file=$1
  if [ ! -f "$file" ] || [ "$(stat -c %s "$file")" -lt $((2 << 30)) ]; then
    echo "== writing $file (2 GiB, sequential 1 MiB writes)" >&2
    taskset -c 1 "$BIN/fabriq-bench" local --file "$file" --file-size 2g --rw write --bs 1m --iodepth 8 \
      --size 2g --no-progress >/dev/null
  fi
}

file_target_config() {
  sed "s#/var/tmp/fabriq-bench-local.img#$1#" bench/scenarios/file-target.toml >"$2"
}

block_device() {
  local dev
  dev=$(stat -c '%Hd:%Ld' "$1")
  if [ "${dev%%:*}" = 0 ]; then
    echo "$0: $1 is on no block device (tmpfs, overlay)" >&2
    return 1
  fi
  echo "$dev"
}
