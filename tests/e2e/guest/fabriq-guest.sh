# shellcheck shell=dash
# The fabriq-guest peer (sourced by init, busybox ash): fabriq-target runs inside this guest,
# on soft-RoCE over eth0 (rxe0, 10.0.2.15), and the kernel's nvme-rdma initiator in the same
# guest connects to it. The runner put the binary and the shared libraries it links that the
# base image may lack in /e2e/bin and /e2e/lib, and its configuration in /e2e/fabriq.toml.

FABRIQ_LOG=/tmp/fabriq-target.log
# The configuration's data_dir: the node state file and the node API's token live there.
FABRIQ_DATA=/tmp/fabriq-data
# The node API, on loopback (its default address).
FABRIQ_API=127.0.0.1:8800

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

# fabriq_api METHOD PATH [JSON]: one node API call with the target's bearer token. Sets
# API_STATUS (the HTTP status) and writes the response body to /tmp/api.body. busybox nc
# half-closes the connection when its input ends, and the server then drops the request
# unanswered: so the request goes through a FIFO held open until nc has read the response
# (the server closes after it: Connection: close).
fabriq_api() {
    local method=$1 path=$2 body=${3-} token nc
    token=$(cat "$FABRIQ_DATA/api-token") || return 1
    rm -f /tmp/api.fifo /tmp/api.out
    mkfifo /tmp/api.fifo
    timeout 15 nc "${FABRIQ_API%:*}" "${FABRIQ_API#*:}" </tmp/api.fifo >/tmp/api.out &
    nc=$!
    exec 3>/tmp/api.fifo
    printf '%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n' \
        "$method" "$path" "$FABRIQ_API" "$token" >&3
    [ -z "$body" ] || printf 'Content-Type: application/json\r\nContent-Length: %s\r\n' "${#body}" >&3
    printf '\r\n%s' "$body" >&3
    wait "$nc" || true
    exec 3>&-
    API_STATUS=$(sed -n '1s/^HTTP\/1\.1 \([0-9]*\).*/\1/p' /tmp/api.out | tr -d '\r')
    sed '1,/^\r*$/d' /tmp/api.out >/tmp/api.body
    echo "# $method $path ${body:+$body }-> ${API_STATUS:-no answer}: $(cat /tmp/api.body)"
}
