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

start_target() {
  local config=$1 log=$2 cpu=${3:-}
  # A target stopped a moment ago may take a few seconds to let its port go.
  local tries=0
  while (exec 3<>/dev/tcp/127.0.0.1/4420) 2>/dev/null; do
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
    (exec 3<>/dev/tcp/127.0.0.1/4420) 2>/dev/null && return 0
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
