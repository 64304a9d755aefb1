# The end-to-end tests (busybox ash, sourced after lib.sh). Each test_NAME runs in its own
# shell with `set -eu`, starts with no NVMe controller connected and leaves none behind:
# the runner disconnects everything after each test, whatever happened.
#
# Everything a test knows about the target comes from the kernel command line (lib.sh):
# address, ports, subsystem NQNs and the namespaces' sizes and block sizes, so the same
# tests run against fabriq-target on the host and against the kernel's nvmet in the guest.
# Where the two must answer differently, the test says so with `peer_is` and why.

# discover: the discovery log lists the allowed subsystem at the advertised address, on
# the discovery port and on the I/O port, and never a subsystem the host may not reach.
test_discover() {
    local port
    for port in "$DPORT" "$PORT"; do
        run nvme discover -t "$TRANSPORT" -a "$ADDR" -s "$port" >/tmp/disc.txt
        cat /tmp/disc.txt
        discovery_entries /tmp/disc.txt >/tmp/entries.txt
        grep -qx "nvme subsystem|$NQN|$TRANSPORT|$ADDR|$PORT" /tmp/entries.txt ||
            fail "discovery log on port $port has no entry for $NQN at $TRANSPORT $ADDR:$PORT"
        ! grep -q "|$DENIED|" /tmp/entries.txt ||
            fail "discovery log on port $port lists $DENIED, which does not allow this host"
    done

    # A host on no allow list sees neither subsystem.
    local stranger=nqn.2014-08.org.nvmexpress:uuid:7e57e57e-0000-4000-8000-000000000042
    run nvme discover -t "$TRANSPORT" -a "$ADDR" -s "$DPORT" --hostnqn "$stranger" >/tmp/disc.txt
    cat /tmp/disc.txt
    discovery_entries /tmp/disc.txt >/tmp/entries.txt
    ! grep -qE "\|($NQN|$DENIED)\|" /tmp/entries.txt ||
        fail "discovery log shows a subsystem to a host that is on no allow list"
}

# discovery_entries FILE: one line per entry of `nvme discover` output:
# subtype|subnqn|trtype|traddr|trsvcid
discovery_entries() {
    awk '
        function flush() { if (nqn != "") print subtype "|" nqn "|" trtype "|" traddr "|" trsvcid; nqn = "" }
        /^=====Discovery Log Entry/ { flush(); next }
        {
            i = index($0, ":"); if (i == 0) next
            k = substr($0, 1, i - 1); v = substr($0, i + 1)
            sub(/^[[:space:]]+/, "", v); sub(/[[:space:]]+$/, "", v)
        }
        k == "subtype" { subtype = v } k == "subnqn" { nqn = v } k == "trtype" { trtype = v }
        k == "traddr" { traddr = v } k == "trsvcid" { trsvcid = v }
        END { flush() }' "$1"
}

# connect: a plain connect brings up a live controller and one block device per namespace,
# with the configured size and block size; data written reads back; disconnect removes it.
test_connect() {
    connect
    local c n dev bs mib
    c=$(ctrl_sysfs)
    expect_eq "controller state" "$(cat "$c/state")" live
    expect_eq "controller transport" "$(cat "$c/transport")" "$TRANSPORT"
    expect_eq "controller hostnqn" "$(cat "$c/hostnqn")" "$HOSTNQN"
    for n in $(nsids); do
        dev=$(ns_dev "$n")
        bs=$(ns_field "$n" bs) mib=$(ns_field "$n" mib)
        expect_eq "$dev logical block size" "$(cat "/sys/block/${dev#/dev/}/queue/logical_block_size")" "$bs"
        expect_eq "$dev size in MiB" $(($(cat "/sys/block/${dev#/dev/}/size") / 2048)) "$mib"
        # 1 MiB of random data at an offset that is not a multiple of the transfer size.
        run dd if=/dev/urandom of=/tmp/data bs=64k count=16 status=none
        write_blocks "$dev" 4096 3 /tmp/data
        read_blocks "$dev" 4096 3 256 /tmp/back
        cmp /tmp/data /tmp/back || fail "namespace $n: data read back differs from data written"
    done
    disconnect
    for _ in $(seq 50); do
        subsys_dir "$NQN" >/dev/null || return 0
        sleep 0.1
    done
    fail "subsystem still present 5 s after disconnect"
}

# digests: with header and data digests (CRC32C) on every PDU, data still round-trips. The
# host fails the connection on a wrong digest, and refuses the connect when the target's
# ICResp does not echo the digests it asked for, so passing I/O proves both ways work.
test_digests() {
    connect --hdr-digest --data-digest
    local dev
    dev=$(ns_dev 1)
    # Block sizes from 4 KiB to 256 KiB: in-capsule data, R2T and H2CData/C2HData PDUs.
    run fio --name=digests --filename="$dev" --ioengine=libaio --direct=1 --iodepth=8 \
        --rw=randwrite --bsrange=4k-256k --size=8m --randrepeat=1 --randseed=101 \
        --verify=crc32c --verify_fatal=1 --verify_state_save=0
}

# queues: --nr-io-queues N gives the controller N I/O queues (sysfs queue_count counts the
# admin queue too), and I/O submitted from each CPU travels on its own queue (seen in the
# host's nvme_setup_cmd trace). The guest has 2 CPUs; the host asks for at most one I/O
# queue per CPU, and uses what the target grants in Set Features (Number of Queues).
test_queues() {
    local c dev n
    connect --nr-io-queues 1
    expect_eq "queue_count with --nr-io-queues 1" "$(cat "$(ctrl_sysfs)/queue_count")" 2
    disconnect

    connect --nr-io-queues 2
    c=$(ctrl_sysfs)
    expect_eq "queue_count with --nr-io-queues 2" "$(cat "$c/queue_count")" 3
    dev=$(ns_dev 1)
    trace_clear
    run dd if=/dev/urandom of=/tmp/data bs=64k count=4 status=none
    run taskset -c 0 dd if=/tmp/data of="$dev" bs=64k oflag=direct conv=notrunc status=none
    run taskset -c 1 dd if=/tmp/data of="$dev" bs=64k seek=4 oflag=direct conv=notrunc status=none
    for n in 1 2; do
        trace_events | grep "qid=$n, .*nvme_cmd_write" >/dev/null ||
            fail "no write went to I/O queue $n"
    done
    read_blocks "$dev" 65536 4 4 /tmp/back
    cmp /tmp/data /tmp/back || fail "data written through queue 2 differs"
    if [ "$TRANSPORT" = rdma ]; then
        # fabriq in the guest runs two reactors: the two I/O queue pairs are on one each
        # (the writes above went through both, and what one wrote the other read).
        # shellcheck source=/dev/null
        . /e2e/fabriq-guest.sh
        grep 'RDMA queue pair accepted' "$FABRIQ_LOG" | tail -n 2 | tee /tmp/accepted.txt
        expect_eq "I/O queue pairs accepted" "$(grep -c 'qid=[12] ' /tmp/accepted.txt)" 2
        expect_eq "reactors of the two I/O queue pairs" \
            "$(grep -o 'reactor=[0-9]*' /tmp/accepted.txt | sort -u | wc -l)" 2
    fi
}

# id_ctrl: Identify Controller matches the connection and what NVMe over Fabrics requires.
test_id_ctrl() {
    trace_clear
    connect
    local dev c f=/tmp/id-ctrl.txt connect_res
    dev=$(ctrl_dev) c=$(ctrl_sysfs)
    run nvme id-ctrl "$dev" >$f
    cat $f
    expect_eq subnqn "$(id_field $f subnqn)" "$NQN"
    local cntlid mdts ver
    cntlid=$(($(id_field $f cntlid)))
    # The admin queue's Connect is the first command completed (qid 0, command id 0); its
    # result's low 16 bits are the controller ID.
    connect_res=$(trace_events | sed -nE 's/^nvme_complete_rq: nvme[0-9]+: qid=0, cmdid=0, res=(0x[0-9a-f]+),.*/\1/p' | head -n1)
    [ -n "$connect_res" ] || fail "no Connect completion in the host's trace"
    expect_eq "cntlid (Identify vs the Connect response)" "$cntlid" $((connect_res & 0xffff))
    # 0xFFF0..0xFFFF are reserved (0xFFFF: dynamic controller model, in Connect only).
    [ "$cntlid" -le $((0xffef)) ] || fail "cntlid $cntlid is in the reserved range"
    # MDTS is a power of two in units of the minimum page size (4 KiB); 0: no limit. The
    # host must then keep every transfer within it.
    mdts=$(id_field $f mdts)
    [ "$mdts" -le 16 ] || fail "mdts $mdts is not a sane transfer limit"
    if [ "$mdts" -gt 0 ]; then
        local kb
        kb=$(cat "/sys/block/$(basename "$(ns_dev 1)")/queue/max_hw_sectors_kb")
        [ "$kb" -le $((4 << mdts)) ] || fail "host allows $kb KiB transfers, mdts $mdts allows $((4 << mdts))"
    fi
    ver=$(($(id_field $f ver)))
    [ "$ver" -ge $((0x10300)) ] || fail "version $(id_field $f ver) is below 1.3"
    if [ "$ver" -ge $((0x10400)) ]; then
        expect_eq "cntrltype (I/O controller)" "$(id_field $f cntrltype)" 1
    fi
    # sysfs keeps the fields' space padding; id_field strips it.
    expect_eq "serial number (Identify vs sysfs)" "$(id_field $f sn)" "$(sed 's/ *$//' "$c/serial")"
    expect_eq "model number (Identify vs sysfs)" "$(id_field $f mn)" "$(sed 's/ *$//' "$c/model")"
    [ -n "$(id_field $f sn)" ] || fail "empty serial number"
    # Fabrics: fixed 64-byte SQEs and 16-byte CQEs, SGLs, capsule sizes, keep alive.
    expect_eq sqes "$(id_field $f sqes)" 0x66
    expect_eq cqes "$(id_field $f cqes)" 0x44
    [ $(($(id_field $f sgls) & 3)) -ne 0 ] || fail "sgls $(id_field $f sgls): SGLs not supported"
    [ "$(id_field $f ioccsz)" -ge 4 ] || fail "ioccsz $(id_field $f ioccsz) is below 4 (64 bytes)"
    [ "$(id_field $f iorcsz)" -ge 1 ] || fail "iorcsz $(id_field $f iorcsz) is below 1 (16 bytes)"
    [ "$(id_field $f kas)" -gt 0 ] || fail "kas 0: no keep alive, which fabrics require"
    [ "$(id_field $f maxcmd)" -gt 0 ] || fail "maxcmd 0"
    [ "$(id_field $f nn)" -ge "$(nsids | wc -l)" ] || fail "nn $(id_field $f nn) is below the namespace count"
}

# id_ns: Identify Namespace and the active namespace list match the configuration.
test_id_ns() {
    connect
    local dev n f=/tmp/id-ns.txt nsze bs lbaf lbads
    dev=$(ctrl_dev)
    run nvme list-ns "$dev" >/tmp/list-ns.txt
    cat /tmp/list-ns.txt
    expect_eq "active namespaces" "$(sed -nE 's/^\[ *[0-9]+\]:0x([0-9a-f]+)$/\1/p' /tmp/list-ns.txt | tr '\n' ' ')" \
        "$(for n in $(nsids); do printf '%x ' "$n"; done)"
    for n in $(nsids); do
        bs=$(ns_field "$n" bs)
        run nvme id-ns "$(ns_dev "$n")" >$f
        cat $f
        nsze=$(($(id_field $f nsze)))
        expect_eq "namespace $n nsze" "$nsze" "$(ns_blocks "$n")"
        expect_eq "namespace $n ncap" $(($(id_field $f ncap))) "$nsze"
        # FLBAS bits 3:0 pick the LBA format in use; its LBADS is log2 of the block size.
        lbaf=$(($(id_field $f flbas) & 15))
        lbads=$(sed -nE "s/^lbaf +$lbaf : ms:([0-9]+) +lbads:([0-9]+) .*/\2/p" $f)
        expect_eq "namespace $n lbaf $lbaf block size" $((1 << ${lbads:-0})) "$bs"
        expect_eq "namespace $n metadata size" "$(sed -nE "s/^lbaf +$lbaf : ms:([0-9]+) .*/\1/p" $f)" 0
    done
}

# list_subsys: nvme-cli's view of the connection: the subsystem and a live TCP path to the
# address and port the host connected to.
test_list_subsys() {
    connect
    run nvme list-subsys >/tmp/ls.txt
    cat /tmp/ls.txt
    grep -q "NQN=$NQN\$" /tmp/ls.txt || fail "nvme list-subsys does not show $NQN"
    grep -qE "^ \+- nvme[0-9]+ $TRANSPORT traddr=$ADDR,trsvcid=$PORT(,[^ ]*)? live" /tmp/ls.txt ||
        fail "nvme list-subsys shows no live $TRANSPORT path to $ADDR:$PORT"
}

# fio_verify: fio writes checksummed blocks and reads them back: 4 KiB blocks at random
# offsets (every block of the region exactly once), then blocks of 4 KiB to 256 KiB one
# after another (transfers above the in-capsule size, several data PDUs, splits at the
# target's MDTS). After a disconnect and a new connection (a new controller), a
# verify-only pass over the same regions finds every block intact: the data lives in the
# target, not in any cache of the host's.
test_fio_verify() {
    connect
    local n
    for n in $(nsids); do fio_regions "$(ns_dev "$n")" "$n"; done
    disconnect
    connect
    for n in $(nsids); do fio_regions "$(ns_dev "$n")" "$n" --verify_only; done
}

# fio_regions DEV NSID [--verify_only]: the jobs both passes of fio_verify share. Random
# offsets come from a fixed seed, so the verify-only pass regenerates the same offsets
# and contents. (Mixed block sizes at random offsets would overlap, and fio then verifies
# only what was written last: hence fixed-size random writes, and mixed sizes in order.)
fio_regions() {
    local dev=$1 n=$2
    shift 2
    run fio --ioengine=libaio --direct=1 --iodepth=16 --filename="$dev" \
        --randrepeat=1 --randseed=$((4000 + n)) --verify=crc32c --verify_fatal=1 \
        --verify_state_save=0 "$@" \
        --name="random-4k-ns$n" --rw=randwrite --bs=4k --offset=1m --size=8m \
        --name="sequential-mixed-ns$n" --rw=write --bsrange=4k-256k --offset=9m --size=8m \
        >/tmp/fio.txt
    cat /tmp/fio.txt
    ! grep -q 'verify limited' /tmp/fio.txt || fail "fio could not verify every block"
}

# flush: Flush succeeds on every namespace, through nvme-cli and through the block layer:
# when the controller reports a volatile write cache (VWC bit 0), an fsync makes the host
# send Flush (seen in its trace) and it must succeed.
test_flush() {
    connect
    local n dev vwc
    run nvme id-ctrl "$(ctrl_dev)" >/tmp/id-ctrl.txt
    vwc=$(($(id_field /tmp/id-ctrl.txt vwc)))
    say "vwc $vwc"
    for n in $(nsids); do
        dev=$(ns_dev "$n")
        run nvme flush "$dev" >/tmp/flush.txt
        cat /tmp/flush.txt
        grep -q 'NVMe Flush: success' /tmp/flush.txt || fail "nvme flush on namespace $n did not succeed"
        trace_clear
        run dd if=/dev/urandom of="$dev" bs=4096 count=4 conv=fsync status=none
        if [ $((vwc & 1)) -eq 1 ]; then
            trace_events | grep -q "nsid=$n, .*nvme_cmd_flush" ||
                fail "namespace $n: fsync sent no Flush although the controller has a volatile write cache"
        fi
    done
}

# Layout of the zeroing tests, in blocks: a 64-block pattern with blocks 16..31 zeroed.
ZERO_SLBA=16
ZERO_BLOCKS=16
REGION_BLOCKS=64

# expected_after_zeroing BS FILE: the pattern with the zeroed range cleared.
expected_after_zeroing() {
    pattern "$2" $REGION_BLOCKS "$1" 245
    dd if=/dev/zero of="$2" bs="$1" seek=$ZERO_SLBA count=$ZERO_BLOCKS conv=notrunc status=none
}

# write_zeroes: Write Zeroes clears exactly its range: zeros there, the pattern around it.
test_write_zeroes() {
    connect
    local n dev bs
    for n in $(nsids); do
        dev=$(ns_dev "$n") bs=$(ns_field "$n" bs)
        pattern /tmp/pat $REGION_BLOCKS "$bs" 245
        write_blocks "$dev" "$bs" 0 /tmp/pat
        run nvme write-zeroes "$dev" --start-block=$ZERO_SLBA --block-count=$((ZERO_BLOCKS - 1))
        read_blocks "$dev" "$bs" 0 $REGION_BLOCKS /tmp/back
        expected_after_zeroing "$bs" /tmp/expected
        cmp /tmp/expected /tmp/back || fail "namespace $n: not zeros in blocks $ZERO_SLBA..$((ZERO_SLBA + ZERO_BLOCKS - 1)) and the pattern elsewhere"
    done
}

# dsm: Dataset Management with the Deallocate attribute succeeds and leaves the blocks
# around the range alone. fabriq must advertise that deallocated blocks read as zeros
# (DLFEAT bits 2:0 = 001b) and return zeros there. nvmet (Linux 6.1) reports DLFEAT 0: it
# promises nothing, so only the command's success and the neighbours are checked for it.
test_dsm() {
    connect
    local n dev bs dlfeat
    for n in $(nsids); do
        dev=$(ns_dev "$n") bs=$(ns_field "$n" bs)
        run nvme id-ns "$dev" >/tmp/id-ns.txt
        dlfeat=$(($(id_field /tmp/id-ns.txt dlfeat)))
        say "namespace $n dlfeat $dlfeat"
        if peer_is fabriq && [ $((dlfeat & 7)) -ne 1 ]; then
            fail "namespace $n: DLFEAT $dlfeat does not say deallocated blocks read as zeros"
        fi
        pattern /tmp/pat $REGION_BLOCKS "$bs" 245
        write_blocks "$dev" "$bs" 0 /tmp/pat
        run nvme dsm "$dev" --ad --slbs=$ZERO_SLBA --blocks=$ZERO_BLOCKS
        read_blocks "$dev" "$bs" 0 $REGION_BLOCKS /tmp/back
        if [ $((dlfeat & 7)) -eq 1 ]; then
            expected_after_zeroing "$bs" /tmp/expected
            cmp /tmp/expected /tmp/back || fail "namespace $n: deallocated blocks do not read as zeros, or neighbours changed"
        else
            if cmp -s /tmp/pat /tmp/back; then
                say "namespace $n: deallocated blocks still hold the pattern"
            else
                say "namespace $n: deallocated blocks changed (not promised)"
            fi
            cmp -n $((ZERO_SLBA * bs)) /tmp/pat /tmp/back || fail "namespace $n: blocks before the range changed"
            local tail_at=$(((ZERO_SLBA + ZERO_BLOCKS) * bs))
            tail -c +$((tail_at + 1)) /tmp/pat >/tmp/pat.tail
            tail -c +$((tail_at + 1)) /tmp/back >/tmp/back.tail
            cmp /tmp/pat.tail /tmp/back.tail || fail "namespace $n: blocks after the range changed"
        fi
    done
}

# smart_log: after writes, the SMART / Health log counts them: Data Units Written (units of
# 1000 512-byte blocks, rounded up) and Host Write Commands both grow. nvmet counts only
# block-device-backed namespaces, so the writes go to namespace 1 (a loop device there).
test_smart_log() {
    connect
    local dev before_units before_cmds after_units after_cmds
    dev=$(ctrl_dev)
    run nvme smart-log "$dev" >/tmp/smart.txt
    cat /tmp/smart.txt
    before_units=$(smart_field /tmp/smart.txt 'Data Units Written')
    before_cmds=$(smart_field /tmp/smart.txt host_write_commands)
    # 4 MiB in 64 writes of 64 KiB: 8192 blocks of 512 bytes, at least 8 data units.
    run dd if=/dev/urandom of="$(ns_dev 1)" bs=64k count=64 oflag=direct status=none
    run nvme smart-log "$dev" >/tmp/smart.txt
    cat /tmp/smart.txt
    after_units=$(smart_field /tmp/smart.txt 'Data Units Written')
    after_cmds=$(smart_field /tmp/smart.txt host_write_commands)
    [ $((after_units - before_units)) -ge 8 ] ||
        fail "Data Units Written went from $before_units to $after_units after 4 MiB of writes"
    [ $((after_cmds - before_cmds)) -ge 64 ] ||
        fail "Host Write Commands went from $before_cmds to $after_cmds after 64 writes"
}

# smart_field FILE NAME: a counter of `nvme smart-log`, without its "(4.10 MB)" remark.
smart_field() {
    sed -nE "s/^$2[[:space:]]*:[[:space:]]*([0-9,]+).*/\1/p" "$1" | tr -d , | head -n1
}

# error_log: the Error Information log page can be read, and a failed command (a read
# just past the end of namespace 1) is recorded in it: a newer error count, the
# namespace, the LBA, an I/O queue, and the status the command failed with.
# fabriq must fail the read with LBA Out of Range (the specification's status for it).
# nvmet does not: its block-device backend gives Internal Error (the bio fails beyond the
# device end) and its file backend Capacity Exceeded, so for nvmet any error is accepted.
test_error_log() {
    connect
    local dev ctrl f=/tmp/err.txt before after nsze status
    dev=$(ns_dev 1) ctrl=$(ctrl_dev)
    run nvme error-log "$ctrl" --log-entries=1 >$f
    cat $f
    before=$(($(id_field $f error_count)))
    nsze=$(ns_blocks 1)
    if nvme read "$dev" --start-block="$nsze" --block-count=0 --data-size=512 --data=/tmp/x >/tmp/read.txt 2>&1; then
        cat /tmp/read.txt
        fail "a read at LBA $nsze, past the end of namespace 1, succeeded"
    fi
    cat /tmp/read.txt
    # "NVMe status: LBA Out of Range: The command references ...(0x4080)"
    status=$(sed -nE 's/^NVMe status: ([^:(]+).*/\1/p' /tmp/read.txt)
    [ -n "$status" ] || fail "the failed read printed no NVMe status"
    if peer_is fabriq; then
        expect_eq "status of a read past the end" "$status" "LBA Out of Range"
    fi
    run nvme error-log "$ctrl" --log-entries=1 >$f
    cat $f
    after=$(($(id_field $f error_count)))
    [ "$after" -gt "$before" ] || fail "error count $after did not grow (was $before)"
    expect_eq "error entry nsid" $(($(id_field $f nsid))) 1
    expect_eq "error entry lba" $(($(id_field $f lba))) "$nsze"
    [ $(($(id_field $f sqid))) -ge 1 ] || fail "error entry names the admin queue, not an I/O queue"
    case $(id_field $f status_field) in
    *"($status:"*) ;;
    *) fail "error entry status '$(id_field $f status_field)' is not the read's '$status'" ;;
    esac
}

# refused_host: Connect is refused with the right status, which the host logs:
#   a subsystem that exists but does not allow this host: Connect Invalid Host (0x184);
#   the allowed subsystem with a host NQN not on its list: Connect Invalid Host;
#   a subsystem that does not exist: Connect Invalid Parameters (0x182) pointing at the
#     SUBNQN field of the Connect data (IATTR 1, IPO 256), which the host prints as
#     'Connect Invalid Data Parameter, subsysnqn'.
# No controller is left behind.
test_refused_host() {
    local stranger=nqn.2014-08.org.nvmexpress:uuid:7e57e57e-0000-4000-8000-000000000043 c
    local missing=nqn.2026-11.dev.fabriq:no-such-subsystem
    refused "$DENIED" "Connect for subsystem $DENIED is not allowed, hostnqn: $HOSTNQN"
    refused "$NQN" "Connect for subsystem $NQN is not allowed, hostnqn: $stranger" --hostnqn "$stranger"
    refused "$missing" "Connect Invalid Data Parameter, subsysnqn \"$missing\""
    for c in /sys/class/nvme/nvme*; do
        [ ! -e "$c" ] || fail "a controller remains after the refused connects: ${c##*/}"
    done
}

# refused SUBNQN KERNEL-MESSAGE [NVME-CONNECT-OPTIONS...]: nvme connect must fail and the
# host's kernel log must say why.
refused() {
    local nqn=$1 message=$2 mark
    shift 2
    mark=$(dmesg_mark)
    if nvme connect -t "$TRANSPORT" -a "$ADDR" -s "$PORT" -n "$nqn" "$@"; then
        fail "connect to $nqn $* was accepted"
    fi
    sleep 0.2
    dmesg_since "$mark"
    dmesg_since "$mark" | grep -qF "$message" || fail "the host did not log: $message"
}

# ---------------------------------------------------------------------------------------------
# Volumes made through fabriq-target's node API (the runner's node phase, lib/node.sh): the
# runner creates one volume per pool (a sparse file, a loop device) with this host allowed,
# and passes what the API answered on how to connect. These tests run in this order in one
# guest: node_grow writes the data that node_restart verifies after the target was killed.
#
#   e2e.vols=TRANSPORT/ADDRESS/PORT/NQN/BLOCK-SIZE/MIB/GROWN-MIB,...   one entry per volume
#
# Mid-test the guest asks the runner for host-side actions (host_action): it prints
# `E2E-HOST SEQ ACTION [ARG]` on the serial console and waits, bounded, for the runner's
# reply in the file reply.SEQ on a read-only 9p share.

VOLS=$(param vols | tr ',' ' ')
# The share's mount tag (lib/node.sh's NODE_SHARE_TAG) and where it is mounted.
HOST_SHARE_TAG=e2e-host
HOST_SHARE=/host
# How long the runner may take for an action: a restart of the target is the longest, a few
# seconds; the bound only stops a guest from waiting for a runner that is gone.
HOST_ACTION_LIMIT_S=60
# Data regions each volume gets, in MiB: before the grow at 1..9, after it from the old end.
VOL_BEFORE_OFFSET_MIB=1
VOL_BEFORE_MIB=8
VOL_AFTER_MIB=4

# vol_field SPEC N: field N of an e2e.vols entry: 1 transport, 2 address, 3 port, 4 NQN,
# 5 block size, 6 MiB, 7 MiB after the grow.
vol_field() { echo "$1" | cut -d/ -f"$2"; }

vols_required() {
    [ -n "$VOLS" ] || fail "no e2e.vols on the kernel command line: the node_* tests run in the runner's node phase (--peer fabriq)"
}

# vol_connect SPEC [NVME-CONNECT-OPTIONS...]: connect to the volume as the API said to, and
# wait for its block device.
vol_connect() {
    local spec=$1
    shift
    run nvme connect -t "$(vol_field "$spec" 1)" -a "$(vol_field "$spec" 2)" -s "$(vol_field "$spec" 3)" \
        -n "$(vol_field "$spec" 4)" "$@"
    vol_dev "$spec" >/dev/null
}

# vol_dev SPEC: the volume's block device (namespace 1 of its subsystem). A subshell: ns_dev
# looks for $NQN.
vol_dev() (
    NQN=$(vol_field "$1" 4)
    ns_dev 1
)

# vol_mib DEV: the block device's size in MiB, as the kernel has it now.
vol_mib() { echo $(($(cat "/sys/block/${1#/dev/}/size") / 2048)); }

# vol_fio DEV SEED OFFSET-MIB MIB [--verify_only]: random 4 KiB writes over the region, each
# block once, checksummed (crc32c) and read back; with --verify_only the same seed gives the
# same offsets and contents, and only the reads and checks are done.
vol_fio() {
    local dev=$1 seed=$2 offset=$3 mib=$4 how="writes and verifies"
    shift 4
    [ $# -eq 0 ] || how="$*"
    say "fio $how on $dev: ${mib} MiB at ${offset} MiB"
    if ! fio --name="vol-$seed" --filename="$dev" --ioengine=libaio --direct=1 --iodepth=16 \
        --rw=randwrite --bs=4k --offset="${offset}m" --size="${mib}m" --randrepeat=1 \
        --randseed="$seed" --verify=crc32c --verify_fatal=1 --verify_state_save=0 "$@" \
        >/tmp/fio.txt 2>&1; then
        cat /tmp/fio.txt
        fail "fio $* on $dev (${mib} MiB at ${offset} MiB) failed"
    fi
    cat /tmp/fio.txt
    ! grep -q 'verify limited' /tmp/fio.txt || fail "fio could not verify every block of $dev"
}

# vol_regions DEV I SPEC [--verify_only]: both of volume I's regions: the one written before
# the grow, and the one past the old end.
vol_regions() {
    local dev=$1 i=$2 spec=$3
    shift 3
    vol_fio "$dev" $((100 + i)) $VOL_BEFORE_OFFSET_MIB $VOL_BEFORE_MIB "$@"
    vol_fio "$dev" $((200 + i)) "$(vol_field "$spec" 6)" $VOL_AFTER_MIB "$@"
}

# host_action ACTION [ARG]: ask the runner to do ACTION on the host now (grow, crash,
# revoke N: lib/node.sh) and wait until it says it did; a refusal or no answer fails the test.
host_action() {
    local seq reply
    seq=$(($(cat /tmp/e2e-host-seq 2>/dev/null || echo 0) + 1))
    echo "$seq" >/tmp/e2e-host-seq
    if ! grep -q " $HOST_SHARE 9p " /proc/mounts; then
        mkdir -p $HOST_SHARE
        run mount -t 9p -o trans=virtio,version=9p2000.L,ro "$HOST_SHARE_TAG" $HOST_SHARE
    fi
    say "asking the runner ($seq): $*"
    # The console, not the test's output: the runner follows the serial console.
    echo "E2E-HOST $seq $*" >/dev/console
    for _ in $(seq $((HOST_ACTION_LIMIT_S * 10))); do
        if [ -e "$HOST_SHARE/reply.$seq" ]; then
            reply=$(cat "$HOST_SHARE/reply.$seq")
            [ "$reply" = ok ] || fail "the runner's '$*': $reply"
            say "the runner did: $*"
            return 0
        fi
        sleep 0.1
    done
    fail "the runner did not answer '$*' within ${HOST_ACTION_LIMIT_S}s"
}

# node_grow: each volume the API made is a disk of the block size and size asked for, and
# takes checksummed writes; then the runner grows every volume through the API while this
# host stays connected, and the kernel sees the new size by itself (the target's
# namespace-attribute-changed event makes it rescan: this test never does), Identify says
# it too, and the new blocks past the old end take checksummed writes.
test_node_grow() {
    vols_required
    local spec i dev mib grown blocks
    i=0
    for spec in $VOLS; do
        i=$((i + 1))
        vol_connect "$spec"
        dev=$(vol_dev "$spec")
        expect_eq "volume $i block size" "$(cat "/sys/block/${dev#/dev/}/queue/logical_block_size")" \
            "$(vol_field "$spec" 5)"
        expect_eq "volume $i size in MiB" "$(vol_mib "$dev")" "$(vol_field "$spec" 6)"
        vol_fio "$dev" $((100 + i)) $VOL_BEFORE_OFFSET_MIB $VOL_BEFORE_MIB
    done
    host_action grow
    i=0
    for spec in $VOLS; do
        i=$((i + 1))
        dev=$(vol_dev "$spec") grown=$(vol_field "$spec" 7)
        for _ in $(seq 150); do
            [ "$(vol_mib "$dev")" = "$grown" ] && break
            sleep 0.1
        done
        mib=$(vol_mib "$dev")
        if [ "$mib" != "$grown" ]; then
            # Tell a missing event from a wrong size.
            nvme ns-rescan "$(ctrl_dev "$(vol_field "$spec" 4)")" || true
            sleep 1
            fail "volume $i: still $mib MiB 15 s after the grow to $grown MiB (after an explicit ns-rescan: $(vol_mib "$dev") MiB)"
        fi
        say "volume $i: $dev grew to $mib MiB without a rescan from the host"
        run nvme id-ns "$dev" >/tmp/id-ns.txt
        blocks=$((grown * 1048576 / $(vol_field "$spec" 5)))
        expect_eq "volume $i nsze after the grow" $(($(id_field /tmp/id-ns.txt nsze))) "$blocks"
        vol_fio "$dev" $((200 + i)) "$(vol_field "$spec" 6)" $VOL_AFTER_MIB
    done
    # For node_restart: the data it verifies is on the volumes.
    touch /tmp/node-data-written
}

# node_restart: connected to every volume, the host sees the runner SIGKILL the target and
# start it again with the same configuration, with no API call: the kernel reconnects by
# itself (reconnect delay 1 s) to the same subsystem, so the volumes and their host lists came
# back; the same disk is there at the grown size, and a verify-only pass finds every block
# node_grow wrote before the kill.
test_node_restart() {
    vols_required
    [ -e /tmp/node-data-written ] ||
        fail "node_grow did not run before in this guest: it writes the data this test verifies"
    local spec i dev c mark state
    for spec in $VOLS; do vol_connect "$spec" --reconnect-delay=1 --ctrl-loss-tmo=60; done
    mark=$(dmesg_mark)
    host_action crash
    i=0
    for spec in $VOLS; do
        i=$((i + 1))
        c=$(ctrl_dev "$(vol_field "$spec" 4)") c=${c#/dev/}
        for _ in $(seq 300); do
            state=$(cat "/sys/class/nvme/$c/state" 2>/dev/null || echo gone)
            [ "$state" = live ] && dmesg_since "$mark" | grep -q "$c: Successfully reconnected" && break
            sleep 0.1
        done
        dmesg_since "$mark" | grep "$c: " || true
        expect_eq "volume $i controller $c after the restart" "$state" live
        dmesg_since "$mark" | grep -q "$c: Successfully reconnected" ||
            fail "volume $i: controller $c is live but the host logged no reconnect: did the kill reach it?"
        dev=$(vol_dev "$spec")
        expect_eq "volume $i size in MiB after the restart" "$(vol_mib "$dev")" "$(vol_field "$spec" 7)"
        vol_regions "$dev" "$i" "$spec" --verify_only
    done
}

# node_refused: after the restart too, a host NQN that is not on a volume's allow list is
# refused with Connect Invalid Host, and the discovery log shows this host every volume at the
# address the API gave and a stranger none.
test_node_refused() {
    vols_required
    local stranger=nqn.2014-08.org.nvmexpress:uuid:7e57e57e-0000-4000-8000-000000000044 spec nqn c
    for spec in $VOLS; do
        nqn=$(vol_field "$spec" 4)
        refused "$nqn" "Connect for subsystem $nqn is not allowed, hostnqn: $stranger" --hostnqn "$stranger"
    done
    for c in /sys/class/nvme/nvme*; do
        [ ! -e "$c" ] || fail "a controller remains after the refused connects: ${c##*/}"
    done
    run nvme discover -t tcp -a "$ADDR" -s "$DPORT" >/tmp/disc.txt
    cat /tmp/disc.txt
    discovery_entries /tmp/disc.txt >/tmp/entries.txt
    for spec in $VOLS; do
        grep -qx "nvme subsystem|$(vol_field "$spec" 4)|$(vol_field "$spec" 1)|$(vol_field "$spec" 2)|$(vol_field "$spec" 3)" /tmp/entries.txt ||
            fail "the discovery log has no entry for $(vol_field "$spec" 4) at $(vol_field "$spec" 2):$(vol_field "$spec" 3)"
    done
    run nvme discover -t tcp -a "$ADDR" -s "$DPORT" --hostnqn "$stranger" >/tmp/disc.txt
    cat /tmp/disc.txt
    ! grep -q 'vol:' /tmp/disc.txt || fail "the discovery log shows a volume to a host on no allow list"
}

# node_revoke: connected to the first volume, the runner revokes this host through the API:
# the target drops the connection, the kernel's reconnects are refused (Connect Invalid Host),
# and with a 3 s controller loss time-out the kernel removes the controller and its disk. A new
# connect is refused too.
test_node_revoke() {
    vols_required
    local spec nqn c mark
    spec=${VOLS%% *} nqn=$(vol_field "${VOLS%% *}" 4)
    vol_connect "$spec" --reconnect-delay=1 --ctrl-loss-tmo=3
    c=$(ctrl_dev "$nqn") c=${c#/dev/}
    mark=$(dmesg_mark)
    host_action revoke 1
    for _ in $(seq 200); do
        [ -e "/sys/class/nvme/$c" ] || break
        sleep 0.1
    done
    dmesg_since "$mark"
    [ ! -e "/sys/class/nvme/$c" ] ||
        fail "controller $c is still there ($(cat "/sys/class/nvme/$c/state" 2>/dev/null)) 20 s after the revoke"
    dmesg_since "$mark" | grep -qF "Connect for subsystem $nqn is not allowed, hostnqn: $HOSTNQN" ||
        fail "the host lost $c, but no reconnect was refused with Connect Invalid Host"
    ! subsys_dir "$nqn" >/dev/null || fail "the subsystem $nqn is still in sysfs"
    refused "$nqn" "Connect for subsystem $nqn is not allowed, hostnqn: $HOSTNQN"
}

# ---- The CSI node plugin (the runner's CSI phase, lib/csi.sh)
#
# fabriq-csi runs here as a Kubernetes node plugin does (--mode node, a Unix socket), and
# the tests make the calls kubelet would, with fabriq-csi-call. e2e.vols holds the volumes
# the runner made through the node API: 1 for ext4, 2 for raw block, 3 for xfs. Each call
# that changes something is made twice: the second must find the work done and succeed.

CSI_SOCK=/run/csi/csi.sock
CSI_LOG=/tmp/fabriq-csi.log
CSI_STATE=/run/fabriq-csi
CSI_PODS=/run/pods

csi_required() {
    vols_required
    [ -x /e2e/bin/fabriq-csi ] || fail "no /e2e/bin/fabriq-csi: the csi_* tests run in the runner's CSI phase"
}

# csi_start: the node plugin in the background; waits for its socket. On the way out the
# test's trap stops it, unmounts what is left under $CSI_PODS and disconnects.
csi_start() {
    mkdir -p "$(dirname $CSI_SOCK)" $CSI_PODS
    # resize2fs and xfs_growfs look for mounts in /etc/mtab, as on any Kubernetes node.
    [ -e /etc/mtab ] || ln -s /proc/self/mounts /etc/mtab
    LD_LIBRARY_PATH=/e2e/lib RUST_LOG=info /e2e/bin/fabriq-csi --mode node --endpoint "unix://$CSI_SOCK" \
        --state-dir $CSI_STATE --max-volumes 8 --topology zone=e2e --reconnect-delay 1 --ctrl-loss-tmo 30 \
        --device-timeout-s 60 >>$CSI_LOG 2>&1 &
    CSI_PID=$!
    trap 'csi_cleanup' EXIT
    for _ in $(seq 200); do
        [ -S $CSI_SOCK ] && return 0
        kill -0 $CSI_PID 2>/dev/null || break
        sleep 0.1
    done
    cat $CSI_LOG
    fail "fabriq-csi did not serve on $CSI_SOCK within 20 s"
}

# csi_restart: the plugin stopped (SIGTERM: it must exit 0) and started again, as a DaemonSet
# update does while volumes stay staged and published.
csi_restart() {
    local rc=0
    kill -TERM "$CSI_PID"
    wait "$CSI_PID" || rc=$?
    [ $rc -eq 0 ] || fail "fabriq-csi exited $rc on SIGTERM"
    [ ! -e $CSI_SOCK ] || fail "fabriq-csi left its socket behind"
    CSI_PID=
    csi_start
}

csi_cleanup() {
    [ -z "${CSI_PID:-}" ] || kill -TERM "$CSI_PID" 2>/dev/null
    echo "----- fabriq-csi log (tail)"
    tail -n 40 $CSI_LOG
    grep " $CSI_PODS/\| /run/stage" /proc/mounts | cut -d' ' -f2 | sort -r | while read -r m; do umount "$m"; done
    nvme disconnect-all >/dev/null 2>&1
}

# csi RPC KEY=VALUE...: one call, which must succeed; prints the answer.
csi() {
    echo "+ csi $*" >&2
    LD_LIBRARY_PATH=/e2e/lib /e2e/bin/fabriq-csi-call $CSI_SOCK "$@" || fail "CSI $1 failed (see above)"
}

# csi2 RPC KEY=VALUE...: the same call twice (idempotency); prints the second answer.
csi2() {
    csi "$@" >/dev/null
    csi "$@"
}

# csi_expect CODE RPC KEY=VALUE...: the call must fail with the gRPC code CODE.
csi_expect() {
    local code=$1
    shift
    echo "+ csi $* (expecting $code)" >&2
    LD_LIBRARY_PATH=/e2e/lib /e2e/bin/fabriq-csi-call --expect "$code" $CSI_SOCK "$@" ||
        fail "CSI $1 did not fail with $code"
}

# csi_ctx N: volume N's publish context, as the controller would hand it to the node.
csi_ctx() {
    local spec
    spec=$(echo "$VOLS" | tr ' ' '\n' | sed -n "${1}p")
    echo "ctx.transport=$(vol_field "$spec" 1) ctx.traddr=$(vol_field "$spec" 2) ctx.trsvcid=$(vol_field "$spec" 3) ctx.subnqn=$(vol_field "$spec" 4) ctx.nsid=1"
}

csi_vol() { echo "$VOLS" | tr ' ' '\n' | sed -n "${1}p"; }

# csi_field KEY TEXT: the value of KEY=... in TEXT.
csi_field() { echo "$2" | sed -n "s|^$1=||p"; }

# csi_gone N: volume N's subsystem has left sysfs (waits up to 10 s: a disconnect is async).
csi_gone() {
    local nqn
    nqn=$(vol_field "$(csi_vol "$1")" 4)
    for _ in $(seq 100); do
        subsys_dir "$nqn" >/dev/null || return 0
        sleep 0.1
    done
    fail "volume $1's subsystem $nqn is still connected after NodeUnstageVolume"
}

# is_mounted PATH [FSTYPE]
is_mounted() { grep -q " $1 ${2:-[a-z0-9]*} " /proc/mounts; }

# csi_fs_cycle N FS: volume N through stage, publish, files written, unpublish, unstage,
# stage and publish again, files intact; a read-only publish beside it refuses writes;
# stats; then the runner grows the volume and NodeExpandVolume grows the file system online.
csi_fs_cycle() {
    local n=$1 fs=$2 id ctx stage pod ro out total grown_mib spec
    id=vol-$fs ctx=$(csi_ctx "$n") stage=/run/stage/$id pod=$CSI_PODS/p-$fs/volume ro=$CSI_PODS/r-$fs/volume
    spec=$(csi_vol "$n")
    # shellcheck disable=SC2086 # ctx is words
    csi2 stage id=$id staging=$stage fs=$fs $ctx
    is_mounted $stage "$fs" || fail "$stage is not an $fs mount after NodeStageVolume"
    say "the volume is $(vol_dev "$spec"), $(vol_mib "$(vol_dev "$spec")") MiB"
    csi2 publish id=$id staging=$stage target=$pod fs=$fs
    is_mounted "$pod" "$fs" || fail "$pod is not mounted after NodePublishVolume"
    mkdir -p "$pod/dir"
    echo "written through fabriq-csi" >"$pod/dir/hello"
    run dd if=/dev/urandom of="$pod/dir/blob" bs=64k count=32 2>/dev/null
    (cd "$pod" && md5sum dir/hello dir/blob >/tmp/csi-sums-$fs)
    sync
    # A new plugin process knows what the old one staged (its records in the state directory).
    csi_restart
    # Read-only publish of the same staging: reads work, writes are refused.
    csi2 publish id=$id staging=$stage target=$ro fs=$fs ro=1
    [ "$(cat "$ro/dir/hello")" = "written through fabriq-csi" ] || fail "the read-only publish does not show the file"
    ! touch "$ro/nope" 2>/dev/null || fail "a write to the read-only publish succeeded"
    # The same target with another read-only setting is refused.
    csi_expect AlreadyExists publish id=$id staging=$stage target=$ro fs=$fs
    csi2 unpublish id=$id target=$ro
    out=$(csi stats id=$id path=$pod)
    echo "$out"
    [ "$(csi_field bytes.total "$out")" -gt 0 ] && [ "$(csi_field inodes.total "$out")" -gt 0 ] ||
        fail "NodeGetVolumeStats has no bytes or inodes"
    expect_eq "abnormal" "$(csi_field abnormal "$out")" false
    total=$(csi_field bytes.total "$out")

    csi2 unpublish id=$id target=$pod
    [ ! -e "$pod" ] || fail "$pod is still there after NodeUnpublishVolume"
    csi_expect NotFound stats id=$id path=$pod
    csi2 unstage id=$id staging=$stage
    ! is_mounted $stage || fail "$stage is still mounted after NodeUnstageVolume"
    csi_gone "$n"

    # Again: the file system is found, not made anew, and the files are intact.
    # shellcheck disable=SC2086
    csi stage id=$id staging=$stage fs=$fs $ctx
    csi publish id=$id staging=$stage target=$pod fs=$fs
    (cd "$pod" && md5sum -c /tmp/csi-sums-$fs) || fail "the files written before the unstage changed"

    # Online expansion: the runner grows the volume; the node rescans and grows the fs.
    host_action grow "$n"
    grown_mib=$(vol_field "$spec" 7)
    out=$(csi2 expand id=$id path=$pod staging=$stage fs=$fs required=$((grown_mib * 1048576)))
    expect_eq "NodeExpandVolume capacity_bytes" "$(csi_field capacity_bytes "$out")" $((grown_mib * 1048576))
    out=$(csi stats id=$id path=$pod)
    [ "$(csi_field bytes.total "$out")" -gt "$total" ] ||
        fail "the file system did not grow: $(csi_field bytes.total "$out") bytes, $total before"
    say "file system: $total bytes before, $(csi_field bytes.total "$out") after"
    (cd "$pod" && md5sum -c /tmp/csi-sums-$fs) || fail "the files changed in the expansion"

    csi2 unpublish id=$id target=$pod
    csi2 unstage id=$id staging=$stage
    csi_gone "$n"
}

# csi_ext4: node info; bad requests; volume 1 as ext4 through the whole cycle.
test_csi_ext4() {
    csi_required
    csi_start
    local out
    out=$(csi info)
    echo "$out"
    expect_eq "node id" "$(csi_field node_id "$out")" "$HOSTNQN"
    expect_eq "max volumes" "$(csi_field max_volumes_per_node "$out")" 8
    expect_eq "topology" "$(csi_field topology.topology.fabriq.dev/zone "$out")" e2e
    expect_eq "probe" "$(csi probe)" "ready=true"
    # shellcheck disable=SC2046 # the context is words
    csi_expect InvalidArgument stage id=vol-x fs=ext4 $(csi_ctx 1)
    csi_expect InvalidArgument stage id=vol-x staging=/run/stage/x fs=ext4 ctx.traddr=10.0.2.2
    csi_expect FailedPrecondition publish id=vol-x staging=/run/stage/x target=$CSI_PODS/x fs=ext4
    # Never staged, never published: done already.
    csi unstage id=vol-x staging=/run/stage/x
    csi unpublish id=vol-x target=$CSI_PODS/x
    csi_fs_cycle 1 ext4
}

# csi_block: volume 2 as a raw block device: published as a device file (twice, as two pods
# of one node may), data written through one file reads back from the other and after a new
# stage; NodeExpandVolume after a grow reports the new size; after the host is revoked the
# stats say abnormal, and unpublish and unstage still clean up.
test_csi_block() {
    csi_required
    csi_start
    local id=vol-block ctx stage=/run/stage/vol-block a=$CSI_PODS/b1/dev b=$CSI_PODS/b2/dev out spec grown_mib
    ctx=$(csi_ctx 2) spec=$(csi_vol 2)
    # shellcheck disable=SC2086
    csi2 stage id=$id staging=$stage block=1 $ctx
    csi2 publish id=$id staging=$stage target=$a block=1 mode=multi-writer
    csi2 publish id=$id staging=$stage target=$b block=1 mode=multi-writer
    [ -b "$a" ] && [ -b "$b" ] || fail "the published targets are not block devices"
    run dd if=/dev/urandom of=/tmp/csi-pattern bs=64k count=32 2>/dev/null
    run dd if=/tmp/csi-pattern of="$a" bs=64k oflag=direct 2>/dev/null
    run dd if="$b" of=/tmp/csi-back bs=64k count=32 iflag=direct 2>/dev/null
    cmp /tmp/csi-pattern /tmp/csi-back || fail "what was written through $a does not read back through $b"
    out=$(csi stats id=$id path=$a)
    echo "$out"
    expect_eq "block stats bytes.total" "$(csi_field bytes.total "$out")" $(($(vol_field "$spec" 6) * 1048576))
    csi2 unpublish id=$id target=$b
    csi2 unpublish id=$id target=$a
    [ ! -e "$a" ] && [ ! -e "$b" ] || fail "the device files are still there after NodeUnpublishVolume"
    csi2 unstage id=$id staging=$stage
    csi_gone 2
    # shellcheck disable=SC2086
    csi stage id=$id staging=$stage block=1 $ctx
    csi publish id=$id staging=$stage target=$a block=1
    run dd if="$a" of=/tmp/csi-back bs=64k count=32 iflag=direct 2>/dev/null
    cmp /tmp/csi-pattern /tmp/csi-back || fail "the data changed across unstage and stage"
    # A block volume staged cannot be published as a file system.
    csi_expect FailedPrecondition publish id=$id staging=$stage target=$CSI_PODS/b3/mnt fs=ext4
    host_action grow 2
    grown_mib=$(vol_field "$spec" 7)
    out=$(csi2 expand id=$id path=$a block=1 required=$((grown_mib * 1048576)))
    expect_eq "NodeExpandVolume capacity_bytes" "$(csi_field capacity_bytes "$out")" $((grown_mib * 1048576))
    expect_eq "device size (MiB)" "$(vol_mib "$(vol_dev "$spec")")" "$grown_mib"
    # The runner takes this host off the volume's allow list: the target drops the
    # connection and refuses the reconnects, and the volume's stats say it is abnormal.
    host_action revoke 2
    for _ in $(seq 200); do
        out=$(csi stats id=$id path=$a)
        [ "$(csi_field abnormal "$out")" = true ] && break
        sleep 0.1
    done
    echo "$out"
    expect_eq "abnormal after the revoke" "$(csi_field abnormal "$out")" true
    # Unpublish and unstage still clean up: the controller that keeps reconnecting goes.
    csi2 unpublish id=$id target=$a
    csi2 unstage id=$id staging=$stage
    csi_gone 2
}

# csi_xfs: volume 3 as xfs through the whole cycle; then a stage asking for ext4 is refused
# (the volume carries xfs: never formatted over).
test_csi_xfs() {
    csi_required
    csi_start
    csi_fs_cycle 3 xfs
    # shellcheck disable=SC2046 # the context is words
    csi_expect FailedPrecondition stage id=vol-xfs staging=/run/stage/vol-xfs fs=ext4 $(csi_ctx 3)
    csi unstage id=vol-xfs staging=/run/stage/vol-xfs
    csi_gone 3
}

# ---------------------------------------------------------------------------------------------
# A volume made by fabriq-provisioner (the runner's provisioner phase, lib/prov.sh): the runner
# registers a node, creates one volume through the provisioner and publishes it to this host;
# e2e.vols carries what the publication said (one entry, the format above). These tests run
# in this order in one guest: prov_refused unpublishes this host at its end.

# prov_fio: the published volume connects with exactly what the provisioner answered, is a
# disk of the size and block size asked for, and takes checksummed writes that read back,
# also after a disconnect and a new connection.
test_prov_fio() {
    vols_required
    local spec=${VOLS%% *} dev
    vol_connect "$spec"
    dev=$(vol_dev "$spec")
    expect_eq "block size" "$(cat "/sys/block/${dev#/dev/}/queue/logical_block_size")" "$(vol_field "$spec" 5)"
    expect_eq "size in MiB" "$(vol_mib "$dev")" "$(vol_field "$spec" 6)"
    vol_fio "$dev" 301 $VOL_BEFORE_OFFSET_MIB $VOL_BEFORE_MIB
    run nvme disconnect -n "$(vol_field "$spec" 4)"
    vol_connect "$spec"
    vol_fio "$(vol_dev "$spec")" 301 $VOL_BEFORE_OFFSET_MIB $VOL_BEFORE_MIB --verify_only
}

# prov_refused: a host the volume was never published to is refused (Connect Invalid Host) and
# sees no volume in the discovery log; then the runner unpublishes this host through the
# provisioner, and this host is refused too.
test_prov_refused() {
    vols_required
    local stranger=nqn.2014-08.org.nvmexpress:uuid:7e57e57e-0000-4000-8000-000000000055
    local spec=${VOLS%% *} nqn
    nqn=$(vol_field "$spec" 4)
    refused "$nqn" "Connect for subsystem $nqn is not allowed, hostnqn: $stranger" --hostnqn "$stranger"
    run nvme discover -t tcp -a "$ADDR" -s "$DPORT" --hostnqn "$stranger" >/tmp/disc.txt
    ! grep -q 'vol:' /tmp/disc.txt || fail "the discovery log shows the volume to a host it was not published to"
    run nvme discover -t tcp -a "$ADDR" -s "$DPORT" >/tmp/disc.txt
    grep -q "$nqn" /tmp/disc.txt || fail "the discovery log does not show the volume to the host it was published to"
    host_action unpublish
    refused "$nqn" "Connect for subsystem $nqn is not allowed, hostnqn: $HOSTNQN"
    for c in /sys/class/nvme/nvme*; do
        [ ! -e "$c" ] || fail "a controller remains after the refused connects: ${c##*/}"
    done
}

# ---------------------------------------------------------------------------------------------
# NVMe/RDMA only (the fabriq-guest peer: fabriq-target in this guest, on rxe0). The runner
# runs the rdma_* tests for that peer alone.

# rdma_api_listener: an NVMe/RDMA listener added through the node API on a second port is
# served at once: the node state file records it; discovery through it lists the subsystem at
# that port with the RDMA transport fields (connected QPs, RDMA CM); the kernel's nvme-rdma
# connects through it and data round-trips; after a restart of the target it is back on the
# same port with the same port ID and serves again. Removed through the API, the state file forgets
# it, discovery no longer lists it and a connect to it fails, while the configured listener
# still serves.
test_rdma_api_listener() {
    # shellcheck source=/dev/null
    . /e2e/fabriq-guest.sh
    local port=4421 id c
    fabriq_api POST /v1/listeners "{\"transport\":\"rdma\",\"address\":\"$ADDR:$port\"}"
    expect_eq "POST /v1/listeners" "$API_STATUS" 201
    grep -q '"transport":"rdma"' /tmp/api.body || fail "the new listener is not rdma: $(cat /tmp/api.body)"
    grep -q '"source":"api"' /tmp/api.body || fail "the new listener's source is not api"
    id=$(sed -nE 's/.*"port_id":([0-9]+).*/\1/p' /tmp/api.body)
    [ -n "$id" ] || fail "no port_id in $(cat /tmp/api.body)"
    grep -q "\"address\": \"$ADDR:$port\"" "$FABRIQ_DATA/node-state.json" ||
        fail "node-state.json does not record $ADDR:$port: $(cat "$FABRIQ_DATA/node-state.json")"
    grep -q '"transport": "rdma"' "$FABRIQ_DATA/node-state.json" || fail "node-state.json does not say rdma"
    fabriq_api POST /v1/listeners "{\"transport\":\"rdma\",\"address\":\"$ADDR:$port\"}"
    expect_eq "the same listener again" "$API_STATUS" 409

    run nvme discover -t rdma -a "$ADDR" -s "$port" >/tmp/disc.txt
    cat /tmp/disc.txt
    discovery_entries /tmp/disc.txt >/tmp/entries.txt
    grep -qx "nvme subsystem|$NQN|rdma|$ADDR|$port" /tmp/entries.txt ||
        fail "the discovery log has no entry for $NQN at rdma $ADDR:$port"
    grep -qx "nvme subsystem|$NQN|rdma|$ADDR|$PORT" /tmp/entries.txt ||
        fail "the discovery log lost the configured listener"
    grep -qE '^rdma_qptype:[[:space:]]*connected' /tmp/disc.txt || fail "no rdma_qptype connected in the entries"
    grep -qE '^rdma_cms:[[:space:]]*rdma-cm' /tmp/disc.txt || fail "no rdma_cms rdma-cm in the entries"

    run nvme connect -t rdma -a "$ADDR" -s "$port" -n "$NQN"
    c=$(ctrl_sysfs)
    expect_eq "controller transport" "$(cat "$c/transport")" rdma
    grep -q "trsvcid=$port" "$c/address" || fail "the controller is not on port $port: $(cat "$c/address")"
    local dev
    dev=$(ns_dev 1)
    run dd if=/dev/urandom of=/tmp/data bs=64k count=8 status=none
    write_blocks "$dev" 4096 16 /tmp/data
    read_blocks "$dev" 4096 16 128 /tmp/back
    cmp /tmp/data /tmp/back || fail "data read back through the API's listener differs"
    disconnect

    # A restart binds it again from the node state file, on the same port, and the data is
    # there (memory namespaces: only until the stop; so the check is a fresh round trip).
    fabriq_guest_restart || fail "restarting fabriq-target: $FABRIQ_RESULT"
    fabriq_api GET /v1/listeners
    expect_eq "GET /v1/listeners after the restart" "$API_STATUS" 200
    grep -q "\"port_id\":$id,\"transport\":\"rdma\",\"address\":\"$ADDR:$port\"" /tmp/api.body ||
        fail "the API's rdma listener is not back after the restart: $(cat /tmp/api.body)"
    run nvme connect -t rdma -a "$ADDR" -s "$port" -n "$NQN"
    dev=$(ns_dev 1)
    write_blocks "$dev" 4096 16 /tmp/data
    read_blocks "$dev" 4096 16 128 /tmp/back
    cmp /tmp/data /tmp/back || fail "data read back through the restored listener differs"
    disconnect

    fabriq_api DELETE "/v1/listeners/$id"
    expect_eq "DELETE /v1/listeners/$id" "$API_STATUS" 204
    ! grep -q "$ADDR:$port" "$FABRIQ_DATA/node-state.json" || fail "node-state.json still has $ADDR:$port"
    run nvme discover -t rdma -a "$ADDR" -s "$PORT" >/tmp/disc.txt
    ! grep -qE "^trsvcid:[[:space:]]*$port\$" /tmp/disc.txt || fail "discovery still lists port $port"
    sleep 0.5
    if nvme connect -t rdma -a "$ADDR" -s "$port" -n "$NQN" >/tmp/connect.txt 2>&1; then
        fail "a connect to the removed listener succeeded"
    fi
    cat /tmp/connect.txt
    connect
    disconnect
}

# rdma_hostile: a hostile host (fabriq-rdma-testpeer) sends connect requests with malformed
# private data (each rejected with its STS), commands with bad SGLs (each completed with its
# NVMe status, the queue serving on), a capsule shorter than an SQE (disconnected), and
# vanishes three times while the target RDMA READs its memory and three times while it
# RDMA WRITEs into it: together more transfer buffers than the target's 16 MiB pool holds,
# so a leak on any of these paths would stall what follows. Then fabriq-target still runs,
# logged no panic, and serves the kernel's initiator: 128 KiB writes at queue depth 16,
# verified.
test_rdma_hostile() {
    # shellcheck source=/dev/null
    . /e2e/fabriq-guest.sh
    local peer="/e2e/bin/fabriq-rdma-testpeer $ADDR $PORT $NQN $HOSTNQN" i
    [ -x /e2e/bin/fabriq-rdma-testpeer ] || fail "no /e2e/bin/fabriq-rdma-testpeer (built with --features rdma)"
    # shellcheck disable=SC2086 # $peer is words
    run env LD_LIBRARY_PATH=/e2e/lib $peer private-data bad-sgl short-capsule
    for i in 1 2 3; do
        # shellcheck disable=SC2086
        run env LD_LIBRARY_PATH=/e2e/lib $peer vanish-read vanish-write
    done
    kill -0 "$(pidof fabriq-target)" 2>/dev/null || fail "fabriq-target is gone"
    ! grep -q 'panicked' "$FABRIQ_LOG" || fail "fabriq-target panicked: $(grep -m1 panicked "$FABRIQ_LOG")"
    grep -c 'RDMA connect request rejected' "$FABRIQ_LOG" | sed 's/^/# rejected connect requests: /'
    connect
    run fio --name=after-hostile --filename="$(ns_dev 1)" --ioengine=libaio --direct=1 --iodepth=16 \
        --rw=randwrite --bs=128k --size=16m --randrepeat=1 --randseed=77 \
        --verify=crc32c --verify_fatal=1 --verify_state_save=0 >/tmp/fio.txt
    cat /tmp/fio.txt
    disconnect
}
