# shellcheck shell=bash
# Sourced by tests/e2e/run: the CSI phase, which runs the guest tests named csi_* (issue 5's
# node service with the real kernel). The `fabriq-csi` binary runs inside the guest as a
# Kubernetes node plugin would (`--mode node`, a Unix socket), and the tests drive it over
# that socket with `fabriq-csi-call`, one CSI call per command.
#
#   1. A fabriq-target of its own with the node API and a sparse file pool, as in the node
#      phase (lib/node.sh, whose configuration, API client, volume creation, guest loop and
#      host actions this phase uses): one volume per CSI use, made through the node API with
#      the guest's host NQN allowed. What the API answers (transport, address, port, NQN) is
#      the volume's publish context, as the controller service would hand it to the node.
#   2. Both binaries (stripped when `strip` is there) with the shared libraries they link go
#      into the appended cpio (/e2e/bin, /e2e/lib); they are the ones beside the target binary,
#      else build/release or build/debug (cargo build -p fabriq-csi --bins).
#   3. The guest asks for `grow N` mid-test (volume N to its grown size through the API),
#      then expands the volume through NodeExpandVolume.
#
# Needs from run, lib/hostnode.sh and lib/node.sh: log, die, free_ports, start_fabriq,
# stop_fabriq, show_target_log, summarize, guest_initrd, hostnode_*, node_* and their globals.

# The volumes: name:pool:block size:MiB:MiB after `grow N`. A file system (ext4), raw block,
# and xfs (mkfs.xfs refuses file systems under 300 MB).
CSI_VOLUMES=(csi-ext4:file:4096:64:96 csi-block:file:512:16:24 csi-xfs:file:4096:320:352)
# The sparse pool file: room for all three after their grow.
CSI_POOL_MIB=1024

CSI_TESTS=()

# csi_split_tests NAMED: moves the csi_* tests out of TESTS into CSI_TESTS (fabriq peer only;
# named for another peer, an error).
csi_split_tests() {
    local named=$1 t rest=()
    CSI_TESTS=()
    for t in "${TESTS[@]}"; do
        if [[ $t == csi_* ]]; then CSI_TESTS+=("$t"); else rest+=("$t"); fi
    done
    TESTS=("${rest[@]}")
    if ((${#CSI_TESTS[@]})) && [[ $PEER != fabriq ]]; then
        ((named == 0)) || die "the csi_* tests need --peer fabriq: their volumes come from fabriq-target's node API"
        CSI_TESTS=()
    fi
}

# csi_find_bin NAME: the driver's binary NAME: $FABRIQ_CSI_BIN_DIR/NAME, else beside the
# target binary, else build/release or build/debug.
csi_find_bin() {
    local name=$1 d
    for d in ${FABRIQ_CSI_BIN_DIR:-} "$(dirname "$TARGET_BIN")" "$REPO/build/release" "$REPO/build/debug"; do
        [[ -x $d/$name ]] && echo "$d/$name" && return 0
    done
    die "no $name binary: cargo build -p fabriq-csi --bins (or set FABRIQ_CSI_BIN_DIR)"
}

# csi_stage_binaries DIR: both binaries in DIR/e2e/bin, their libraries in DIR/e2e/lib.
csi_stage_binaries() {
    local dir=$1 name bin lib
    mkdir -p "$dir/e2e/bin" "$dir/e2e/lib"
    for name in fabriq-csi fabriq-csi-call; do
        bin=$(csi_find_bin "$name")
        if command -v strip >/dev/null; then
            strip -o "$dir/e2e/bin/$name" "$bin"
        else
            install -m 0755 "$bin" "$dir/e2e/bin/$name"
        fi
        while read -r lib; do
            case $lib in */ld-linux*) continue ;; esac
            cp -L "$lib" "$dir/e2e/lib/"
        done < <(ldd "$bin" | sed -nE 's/.*=> (\/[^ ]+) \(0x.*/\1/p')
    done
}

# csi_phase ASSETS: the whole phase; a failure adds to FAILED_PHASES.
csi_phase() {
    local assets=$1 started uuid hostnqn addr netdev cmdline ok=0
    # lib/node.sh's functions, pointed at this phase's directory, pool and volumes.
    # shellcheck disable=SC2034 # read by lib/node.sh's functions (bash's dynamic scope)
    local NODE_DIR=$RUN_DIR/csi NODE_POOL_MIB=$CSI_POOL_MIB NODE_LOOP=''
    # shellcheck disable=SC2034
    local NODE_VOLUMES=("${CSI_VOLUMES[@]}")
    started=$(date +%s.%N)
    mkdir -p "$NODE_DIR/share" "$NODE_DIR/data"
    hostnode_guest_ids
    # shellcheck disable=SC2034 # lib/node.sh's revoke action reads it
    NODE_HOSTNQN=$hostnqn
    read -r NODE_PORT NODE_DPORT NODE_API_PORT < <(free_ports 3 | paste -sd' ')
    node_tokens
    csi_stage_binaries "$NODE_DIR/overlay"
    node_write_config "$NODE_DIR/fabriq.toml" "$NODE_PORT" "$NODE_DPORT" "$addr"
    start_fabriq "$NODE_DIR/fabriq.toml" "$NODE_DIR/target.log" "$NODE_PORT" "$NODE_DPORT" "$NODE_API_PORT" ||
        die "fabriq-target with the node API did not start (CSI phase)"
    node_create_volumes "$hostnqn" "$addr" "$NODE_PORT"

    cmdline=$(hostnode_cmdline "$(
        IFS=,
        echo "${CSI_TESTS[*]}"
    )" "$addr" "$NODE_PORT" "$NODE_DPORT" "$(
        IFS=,
        echo "${NODE_VOLS[*]}"
    )" "$hostnqn" "$uuid")
    netdev=$(node_netdev "$addr" "$NODE_PORT" "$NODE_DPORT")

    guest_initrd "$assets/initramfs.cpio" "$NODE_DIR/initrd.img" "$NODE_DIR"
    log "CSI phase: booting the guest ($(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $started }") s after its start; tests: ${CSI_TESTS[*]})"
    node_run_guest "$assets" "$netdev" "$cmdline"

    hostnode_stop_target "" || ok=1
    log "fabriq-target (CSI phase) $TARGET_RESULT"
    summarize "$NODE_DIR/console.log" "${CSI_TESTS[@]}" || ok=1
    log "CSI phase: $(awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $started }") s"
    if ((ok != 0)); then
        echo "----- CSI phase: guest console (last 200 lines)"
        tail -n 200 "$NODE_DIR/console.log.txt"
        show_target_log "$NODE_DIR/target.log"
        FAILED_PHASES+=(csi)
    fi
}
