# The nvmet peer: the Linux kernel's own NVMe/TCP target, set up in this guest through
# configfs with the same subsystems, namespaces and allow lists as the fabriq peer's
# configuration, so the same tests run against both. Sourced by init; uses lib.sh.
#
# Backing store: a loop device over a sparse tmpfs file, with the namespace's block size
# (`losetup -b`). nvmet's block-device backend reports the device's logical block size;
# loop turns Deallocate and Write Zeroes into hole punches (reads return zeros) and counts
# I/O, which nvmet's SMART log reports. The alternatives fall short in Linux 6.1: brd (a
# ramdisk) ignores discard and keeps no I/O statistics, and nvmet's file backend on tmpfs
# fails Write Zeroes (tmpfs has no FALLOC_FL_ZERO_RANGE) and counts nothing in SMART.
#
# nvmet has no discovery-only port: every port serves discovery for the subsystems linked
# to it, so the runner passes e2e.dport equal to e2e.port for this peer.

NVMET=/sys/kernel/config/nvmet
# A host that is on the denied subsystem's allow list instead of us.
OTHER_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001

# nvmet_namespace SUBSYS NSID BLOCK-SIZE MIB
nvmet_namespace() {
    local subsys=$1 nsid=$2 bs=$3 mib=$4 img dev ns
    img=/tmp/nvmet-${subsys##*:}-$nsid.img
    truncate -s "${mib}M" "$img"
    ns=$NVMET/subsystems/$subsys/namespaces/$nsid
    mkdir "$ns"
    # util-linux's losetup by its path: busybox's shell prefers its own applet, which cannot
    # set the sector size.
    dev=$(/sbin/losetup --find --show --sector-size "$bs" "$img")
    echo "$dev" >"$ns/device_path"
    echo 1 >"$ns/enable"
}

# nvmet_setup: run with `set -e` in a shell of its own (a function called in an `if` or
# `||` list would run with errexit off).
nvmet_setup() {
    modprobe loop max_loop=4
    local spec s p

    mkdir "$NVMET/hosts/$HOSTNQN" "$NVMET/hosts/$OTHER_HOSTNQN"

    s=$NVMET/subsystems/$NQN
    mkdir "$s"
    echo 0 >"$s/attr_allow_any_host"
    ln -s "$NVMET/hosts/$HOSTNQN" "$s/allowed_hosts/"
    for spec in $NAMESPACES; do
        # shellcheck disable=SC2046 # nsid:bs:mib becomes three arguments
        nvmet_namespace "$NQN" $(echo "$spec" | tr ':' ' ')
    done

    s=$NVMET/subsystems/$DENIED
    mkdir "$s"
    echo 0 >"$s/attr_allow_any_host"
    ln -s "$NVMET/hosts/$OTHER_HOSTNQN" "$s/allowed_hosts/"
    nvmet_namespace "$DENIED" 1 512 16

    # Listening on an address other than the guest's own (the stand-in for fabriq serves
    # the address the other guest reaches it at) needs that address on eth0.
    if [ "$ADDR" != 10.0.2.15 ]; then
        ip addr add "$ADDR/32" dev eth0
    fi
    p=$NVMET/ports/1
    mkdir "$p"
    echo tcp >"$p/addr_trtype"
    echo ipv4 >"$p/addr_adrfam"
    echo "$ADDR" >"$p/addr_traddr"
    echo "$PORT" >"$p/addr_trsvcid"
    ln -s "$NVMET/subsystems/$NQN" "$p/subsystems/"
    ln -s "$NVMET/subsystems/$DENIED" "$p/subsystems/"
}
