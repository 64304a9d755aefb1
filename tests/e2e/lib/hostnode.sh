# shellcheck shell=bash
# Sourced by tests/e2e/run before the phase libraries: what the node, provisioner and CSI
# phases (lib/node.sh, lib/prov.sh, lib/csi.sh) share. Each of them runs a host-side
# fabriq-target with its node API and pools, boots the guest with a read-only reply share,
# follows the guest's console for host actions (`E2E-HOST SEQ ACTION [ARG]`, see lib/node.sh),
# calls a REST API with curl, and at the end stops its daemons with SIGTERM (exit 0 wanted).
#
# Needs from run: log, guest_qemu, and its globals (NET, GUEST_FWD_ADDR, TIMEOUT, GUEST_CPUS,
# TEST_TIMEOUT, TRACE, VERBOSE).

# The 9p mount tag of the share that carries the runner's replies (guest/tests.sh mounts it).
NODE_SHARE_TAG=e2e-host

# hostnode_guest_ids: the guest's host identity and the address it reaches this host at, in
# the caller's locals uuid, hostnqn and addr (bash's dynamic scope).
hostnode_guest_ids() {
    # shellcheck disable=SC2034 # the caller's locals
    uuid=$(cat /proc/sys/kernel/random/uuid)
    # shellcheck disable=SC2034
    hostnqn=nqn.2014-08.org.nvmexpress:uuid:$uuid
    # shellcheck disable=SC2034
    if [[ $NET == open ]]; then addr=10.0.2.2; else addr=$GUEST_FWD_ADDR; fi
}

# hostnode_token: a fresh random API token (32 hex digits).
hostnode_token() {
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

# hostnode_api_auth DIR TOKEN: DIR/api-auth, the curl header file hostnode_api sends (the
# token travels in a file, not on curl's command line).
hostnode_api_auth() {
    (
        umask 077
        echo "Authorization: Bearer $2" >"$1/api-auth"
    )
}

# hostnode_api DIR URL MAX_S WHAT METHOD PATH STATUS [JSON]: one request to the REST API at URL
# with the header file DIR/api-auth; prints the response body. Another status fails, naming
# the request and the API's JSON error; no answer within MAX_S seconds fails, naming WHAT.
hostnode_api() {
    local dir=$1 url=$2 max_s=$3 what=$4 method=$5 path=$6 want=$7 code
    local args=(-sS --max-time "$max_s" -o "$dir/api-body" -w '%{http_code}' -X "$method"
        -H "@$dir/api-auth")
    (($# < 8)) || args+=(-H 'Content-Type: application/json' --data "$8")
    : >"$dir/api-body"
    if ! code=$(curl "${args[@]}" "$url$path"); then
        echo "$method $path: no answer from $what" >&2
        return 1
    fi
    if [[ $code != "$want" ]]; then
        echo "$method $path answered $code, not $want: $(cat "$dir/api-body")" >&2
        return 1
    fi
    cat "$dir/api-body"
}

# hostnode_config DATA_DIR API_PORT TOKEN_FILE PORT DPORT ADDR: the [target], [api] and
# listener tables of a host-side fabriq-target whose volumes come from its node API, the
# listeners advertised for the guest at ADDR as in the static phase. The caller writes the
# leading comment before and its [[pool]] tables after.
hostnode_config() {
    local data=$1 api_port=$2 token_file=$3 port=$4 dport=$5 adv=$6
    cat <<EOF
[target]
reactors = 1
data_dir = "$data"

[api]
address = "127.0.0.1:$api_port"
token_file = "$token_file"

[[listener]]
transport = "tcp"
address = "127.0.0.1:$port"
advertise = "$adv:$port"

[[listener]]
transport = "tcp"
address = "127.0.0.1:$dport"
advertise = "$adv:$dport"
discovery_only = true
EOF
}

# hostnode_cmdline TESTS ADDR PORT DPORT VOLS HOSTNQN UUID: the guest's kernel command line
# (TESTS and VOLS comma-separated).
hostnode_cmdline() {
    local cmdline="console=ttyS0 panic=-1 quiet mitigations=off"
    cmdline+=" e2e.peer=fabriq e2e.tests=$1"
    cmdline+=" e2e.addr=$2 e2e.port=$3 e2e.dport=$4 e2e.vols=$5"
    cmdline+=" e2e.hostnqn=$6 e2e.hostid=$7 e2e.timeout=$TEST_TIMEOUT e2e.trace=$TRACE e2e.verbose=$VERBOSE"
    echo "$cmdline"
}

# hostnode_seq SEQ ACTION...: whether SEQ, the first word of a host action line, is a number;
# a malformed line is logged and ignored.
hostnode_seq() {
    [[ $1 =~ ^[0-9]+$ ]] && return 0
    log "ignoring a malformed host action line: $*"
    return 1
}

# hostnode_reply DIR SEQ REPLY OUT: the reply to host action SEQ on the share (DIR/share),
# written whole (renamed into place); OUT, the action's output, is shown when it failed.
hostnode_reply() {
    local dir=$1 seq=$2 reply=$3 out=$4
    [[ $reply == ok ]] || cat "$out" >&2
    printf '%s\n' "$reply" >"$dir/reply.tmp"
    mv "$dir/reply.tmp" "$dir/share/reply.$seq"
    log "host action $seq: $reply"
}

# hostnode_run_guest DIR HANDLER ASSETS NETDEV CMDLINE: boot the guest (DIR/initrd.img) with
# the reply share DIR/share; follow its console (DIR/console.log) for markers, and hand each
# host action line's words to the function HANDLER, until the guest powers off.
hostnode_run_guest() {
    local dir=$1 handler=$2 assets=$3 netdev=$4 cmdline=$5 console=$1/console.log qemu line status=0
    mapfile -t qemu < <(guest_qemu "$assets" "$dir/initrd.img" "$cmdline" "$netdev" "$GUEST_CPUS")
    qemu+=(-virtfs "local,path=$dir/share,mount_tag=$NODE_SHARE_TAG,security_model=none,readonly=on")
    timeout -k 10 "$TIMEOUT" "${qemu[@]}" -serial stdio -monitor none </dev/null >"$console" 2>&1 &
    QEMU_PID=$!
    # The loop runs in this shell (the node phase's crash action starts the target again,
    # which must stay this shell's child); a signal still interrupts its read and runs run's
    # trap.
    while IFS= read -r line; do
        line=${line%$'\r'}
        # shellcheck disable=SC2086 # SEQ ACTION ARG are words
        case $line in
        # Anywhere in the line: a kernel message may have started it on the shared console.
        *'E2E-HOST '*) "$handler" ${line#*E2E-HOST } ;;
        E2E-PASS* | E2E-FAIL* | E2E-READY* | E2E-DONE*) echo "  $line" ;;
        esac
    done < <(tail -n +1 -F --pid="$QEMU_PID" "$console" 2>/dev/null)
    wait "$QEMU_PID" 2>/dev/null || status=$?
    QEMU_PID=
    ((status != 124 && status != 137)) || log "QEMU stopped at the ${TIMEOUT}s time limit"
}

# sigterm_wait PID RESULT_VAR: SIGTERM to PID (a child of this shell), which must exit 0 within
# 20 s (SIGKILL after that); RESULT_VAR is set to a phrase saying how it ended. Returns 1
# unless it exited 0.
sigterm_wait() {
    local pid=$1 i status=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        printf -v "$2" '%s' "did not exit within 20 s of SIGTERM"
        return 1
    fi
    wait "$pid" || status=$?
    if ((status != 0)); then
        printf -v "$2" '%s' "exited with status $status after SIGTERM"
        return 1
    fi
    printf -v "$2" '%s' "exited 0 after SIGTERM"
}

# hostnode_stop_target WHY: stop_fabriq at a phase's end; a target that is not running then
# (a host action failed to start it again) is a failure too, WHY appended to TARGET_RESULT's
# phrase. Returns 1 on either failure.
hostnode_stop_target() {
    if [[ -n ${TARGET_PID:-} ]]; then
        stop_fabriq
    else
        # shellcheck disable=SC2034 # the phases log it
        TARGET_RESULT="was not running at the end$1"
        return 1
    fi
}
