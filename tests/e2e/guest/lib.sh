# shellcheck shell=dash disable=SC2034 # its variables are used by the files that source it
# Shared by the guest's init, the nvmet peer and the tests (busybox ash, sourced).
# Reads the run's parameters from the kernel command line, and holds the helpers the tests
# are written with: assertions that leave a reason for the E2E-FAIL marker, connecting and
# finding a namespace's block device through sysfs.

# param NAME [DEFAULT]: the value of e2e.NAME on the kernel command line.
param() {
    local word
    # shellcheck disable=SC2013 # the command line is words
    for word in $(cat /proc/cmdline); do
        case $word in "e2e.$1="*)
            echo "${word#*=}"
            return
            ;;
        esac
    done
    echo "${2-}"
}

PEER=$(param peer fabriq)
ADDR=$(param addr)
PORT=$(param port 4420)
DPORT=$(param dport 8009)
NQN=$(param nqn)
DENIED=$(param denied)
NAMESPACES=$(param ns | tr ',' ' ')
HOSTNQN=$(param hostnqn)
# tcp, or rdma (soft-RoCE on eth0 in this guest, for the fabriq-guest peer).
TRANSPORT=$(param transport tcp)

# fail REASON: end the test; REASON becomes the E2E-FAIL line.
fail() {
    echo "$*" >/tmp/e2e-reason
    echo "FAIL: $*"
    exit 1
}

# say TEXT: a note in the test's output (shown only when the test fails).
say() { echo "# $*"; }

# run CMD...: echo and run CMD; a non-zero exit fails the test, naming CMD. The echo goes to
# stderr, so `run CMD >FILE` captures only CMD's output.
run() {
    echo "+ $*" >&2
    "$@" || fail "'$*' exited $?"
}

# peer_is NAME: is the target under test NAME (fabriq or nvmet)? Tests use it to state
# where the expectations for the two peers differ, and why.
peer_is() { [ "$PEER" = "$1" ]; }

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
    [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
    say "$1 = $2"
}

# ns_field NSID FIELD: a field of the namespace's spec in e2e.ns: bs (block size in bytes)
# or mib (size in MiB).
ns_field() {
    local spec
    for spec in $NAMESPACES; do
        [ "${spec%%:*}" = "$1" ] || continue
        case $2 in
        bs) echo "$spec" | cut -d: -f2 ;;
        mib) echo "$spec" | cut -d: -f3 ;;
        esac
        return
    done
    fail "namespace $1 is not in e2e.ns"
}

# nsids: the namespace ids of the allowed subsystem.
nsids() {
    local spec
    for spec in $NAMESPACES; do echo "${spec%%:*}"; done
}

# subsys_dir NQN: the sysfs directory of the host's subsystem for NQN, if connected.
subsys_dir() {
    local d
    for d in /sys/class/nvme-subsystem/nvme-subsys*; do
        [ -e "$d/subsysnqn" ] && [ "$(cat "$d/subsysnqn")" = "$1" ] && {
            echo "$d"
            return 0
        }
    done
    return 1
}

# ctrl_dev [NQN]: the controller's character device (/dev/nvmeN) for the subsystem.
ctrl_dev() {
    local d c
    d=$(subsys_dir "${1:-$NQN}") || fail "no subsystem ${1:-$NQN} in sysfs"
    for c in "$d"/nvme*; do
        case ${c##*/} in nvme[0-9]*n[0-9]* | nvme-subsys*) continue ;; esac
        [ -e "$c/cntlid" ] && {
            echo "/dev/${c##*/}"
            return 0
        }
    done
    fail "subsystem ${1:-$NQN} has no controller"
}

# ctrl_sysfs [NQN]: the controller's sysfs directory.
ctrl_sysfs() { echo "/sys/class/nvme/$(basename "$(ctrl_dev "$@")")"; }

# ns_dev NSID: the block device of namespace NSID of the allowed subsystem. With native
# multipath (Debian's kernel), that is the subsystem's head disk, nvme<S>n<N>, listed in the
# subsystem's sysfs directory; its `nsid` attribute says which namespace it is (the name's
# N is an instance number, not the nsid). Waits up to 10 s: namespaces are scanned after
# connect returns.
ns_dev() {
    local d b
    for _ in $(seq 100); do
        if d=$(subsys_dir "$NQN"); then
            for b in "$d"/nvme*n*; do
                [ -e "$b/nsid" ] && [ "$(cat "$b/nsid")" = "$1" ] && [ -b "/dev/${b##*/}" ] && {
                    echo "/dev/${b##*/}"
                    return 0
                }
            done
        fi
        sleep 0.1
    done
    fail "no block device for namespace $1 of $NQN within 10 s"
}

# connect [NVME-CONNECT-OPTIONS...]: connect to the allowed subsystem and wait for its
# namespaces' block devices.
connect() {
    run nvme connect -t "$TRANSPORT" -a "$ADDR" -s "$PORT" -n "$NQN" "$@"
    local n
    for n in $(nsids); do ns_dev "$n" >/dev/null; done
}

disconnect() {
    run nvme disconnect -n "$NQN"
}

# id_field OUTPUT-FILE FIELD: the value of "FIELD : value" in nvme-cli's normal output.
id_field() {
    sed -nE "s/^$2[[:space:]]*:[[:space:]]*(.*[^[:space:]])[[:space:]]*\$/\\1/p" "$1" | head -n1
}

# ns_blocks NSID: the namespace's size in logical blocks, from e2e.ns.
ns_blocks() { echo $(($(ns_field "$1" mib) * 1048576 / $(ns_field "$1" bs))); }

# dmesg_mark: write a unique line into the kernel log and print it; dmesg_since MARK prints
# the kernel log from that line on, so a test looks only at what it caused.
dmesg_mark() {
    local mark
    mark="e2e-mark-$(cut -d' ' -f1 /proc/uptime)-$$"
    echo "$mark" >/dev/kmsg
    echo "$mark"
}
dmesg_since() { dmesg | sed -n "/$1/,\$p"; }

# pattern FILE BLOCKS BS OCTAL-BYTE: a file of BLOCKS blocks filled with one byte value.
pattern() {
    dd if=/dev/zero bs="$3" count="$2" 2>/dev/null | tr '\000' "\\$4" >"$1"
}

# read_blocks DEV BS SLBA COUNT FILE: read through the block layer with O_DIRECT (no page
# cache between the test and the target; the block layer splits at the target's MDTS).
read_blocks() {
    run dd if="$1" of="$5" bs="$2" skip="$3" count="$4" iflag=direct status=none
}

# write_blocks DEV BS SLBA FILE: write FILE at SLBA with O_DIRECT.
write_blocks() {
    run dd if="$4" of="$1" bs="$2" seek="$3" oflag=direct conv=notrunc status=none
}

# The host's own trace of every NVMe command it sends and every completion it gets
# (tracepoints nvme_setup_cmd and nvme_complete_rq): what a failing test prints, and what
# the runner's --trace shows for every test.
TRACEFS=/sys/kernel/tracing

trace_setup() {
    echo 2048 >$TRACEFS/buffer_size_kb
    echo 1 >$TRACEFS/events/nvme/nvme_setup_cmd/enable
    echo 1 >$TRACEFS/events/nvme/nvme_complete_rq/enable
}

trace_clear() { echo >$TRACEFS/trace; }

# trace_events: the recorded events, without ftrace's task/CPU/timestamp columns.
trace_events() { grep -v '^#' $TRACEFS/trace | sed -E 's/^.* (nvme_(setup_cmd|complete_rq): )/\1/'; }
