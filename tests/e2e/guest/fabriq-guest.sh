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

# The running target's PID, and where a wrapper shell writes its exit status: a test may
# restart the target (fabriq_guest_restart), and the new process is then no child of init's
# shell, which could not `wait` for it.
FABRIQ_PID_FILE=/tmp/fabriq-target.pid
FABRIQ_STATUS_FILE=/tmp/fabriq-target.status

# fabriq_guest_start: the rxe device, then the target.
fabriq_guest_start() {
    rdma link add rxe0 type rxe netdev eth0 || return 1
    fabriq_launch
}

# fabriq_launch: starts the target (its output appended to FABRIQ_LOG after a marker line)
# and waits until it printed its connect hints (after every listener is bound, including those
# added through the node API before a restart, and every reactor runs).
fabriq_launch() {
    local mark
    mark="----- fabriq-target start $(cut -d' ' -f1 /proc/uptime)"
    echo "$mark" >>"$FABRIQ_LOG"
    rm -f "$FABRIQ_PID_FILE" "$FABRIQ_STATUS_FILE"
    (
        LD_LIBRARY_PATH=/e2e/lib RUST_LOG=${FABRIQ_RUST_LOG:-info} \
            /e2e/bin/fabriq-target --config /e2e/fabriq.toml >>"$FABRIQ_LOG" 2>&1 &
        echo $! >"$FABRIQ_PID_FILE"
        wait $!
        echo $? >"$FABRIQ_STATUS_FILE"
    ) &
    for _ in $(seq 300); do
        if [ -s "$FABRIQ_PID_FILE" ] && sed -n "/^$mark\$/,\$p" "$FABRIQ_LOG" | grep -q '^nvme connect'; then
            return 0
        fi
        [ ! -e "$FABRIQ_STATUS_FILE" ] || break
        sleep 0.1
    done
    echo "----- fabriq-target log"
    cat "$FABRIQ_LOG"
    return 1
}

# fabriq_terminate: SIGTERM; the target must exit 0 within 20 s. Sets FABRIQ_RESULT.
fabriq_terminate() {
    local pid status
    pid=$(cat "$FABRIQ_PID_FILE")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 200); do
        [ -s "$FABRIQ_STATUS_FILE" ] && break
        sleep 0.1
    done
    if [ ! -s "$FABRIQ_STATUS_FILE" ]; then
        kill -KILL "$pid" 2>/dev/null
        FABRIQ_RESULT="did not exit within 20 s of SIGTERM"
        return 1
    fi
    status=$(cat "$FABRIQ_STATUS_FILE")
    FABRIQ_RESULT="exited with status $status after SIGTERM"
    if grep -q 'torn down with work posted' "$FABRIQ_LOG"; then
        FABRIQ_RESULT="$FABRIQ_RESULT, but tore an RDMA queue down with work posted (buffers lost)"
        return 1
    fi
    [ "$status" = 0 ]
}

# fabriq_guest_restart: SIGTERM (exit 0 required), then start again with the same
# configuration and data_dir. For tests; returns non-zero with FABRIQ_RESULT set.
fabriq_guest_restart() {
    fabriq_terminate || return 1
    fabriq_launch
}

# fabriq_guest_stop: SIGTERM while a host is connected (admin and I/O queue pairs live): the
# target must close them and exit 0 within 20 s. Prints the log's tail when it does not, or
# when FABRIQ_SHOW_LOG=1.
fabriq_guest_stop() {
    local status=0
    nvme connect -t rdma -a "$ADDR" -s "$PORT" -n "$NQN" --ctrl-loss-tmo=1 >/dev/null 2>&1 ||
        echo "# (could not connect before the stop)"
    fabriq_terminate || status=1
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
