# shellcheck shell=dash
# The fabriq-guest peer (sourced by init, busybox ash): fabriq-target runs inside this guest,
# on soft-RoCE over eth0 (rxe0, 10.0.2.15), and the kernel's nvme-rdma initiator in the same
# guest connects to it. The runner put the binary and the shared libraries it links that the
# base image may lack in /e2e/bin and /e2e/lib, and its configuration in /e2e/fabriq.toml.

FABRIQ_LOG=/tmp/fabriq-target.log

# fabriq_guest_start: the rxe device, then the target; waits until it printed its connect
# hints (after every listener is bound and every reactor runs).
fabriq_guest_start() {
    rdma link add rxe0 type rxe netdev eth0 || return 1
    LD_LIBRARY_PATH=/e2e/lib RUST_LOG=${FABRIQ_RUST_LOG:-info} \
        /e2e/bin/fabriq-target --config /e2e/fabriq.toml >"$FABRIQ_LOG" 2>&1 &
    FABRIQ_PID=$!
    local i
    for i in $(seq 300); do
        grep -q '^nvme connect' "$FABRIQ_LOG" && return 0
        kill -0 "$FABRIQ_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "----- fabriq-target log"
    cat "$FABRIQ_LOG"
    return 1
}

# fabriq_guest_stop: SIGTERM while a host is connected (admin and I/O queue pairs live): the
# target must close them and exit 0 within 20 s. Prints the log's tail when it does not, or
# when FABRIQ_SHOW_LOG=1.
fabriq_guest_stop() {
    local i status=0
    nvme connect -t rdma -a "$ADDR" -s "$PORT" -n "$NQN" --ctrl-loss-tmo=1 >/dev/null 2>&1 ||
        echo "# (could not connect before the stop)"
    kill -TERM "$FABRIQ_PID" 2>/dev/null
    for i in $(seq 200); do
        kill -0 "$FABRIQ_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$FABRIQ_PID" 2>/dev/null; then
        kill -KILL "$FABRIQ_PID"
        FABRIQ_RESULT="did not exit within 20 s of SIGTERM"
        status=1
    else
        wait "$FABRIQ_PID" || status=$?
        FABRIQ_RESULT="exited with status $status after SIGTERM"
    fi
    nvme disconnect-all >/dev/null 2>&1
    if [ $status -ne 0 ] || [ "${FABRIQ_SHOW_LOG:-0}" = 1 ]; then
        echo "----- fabriq-target log (last 80 lines)"
        tail -n 80 "$FABRIQ_LOG"
        echo "-----"
    fi
    return $status
}
