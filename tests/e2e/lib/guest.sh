# shellcheck shell=bash
# Sourced by tests/e2e/run and tests/e2e/nvmet-standin: how a guest is put together and
# started. Needs E2E_DIR set to tests/e2e.

# guest_initrd BASE OUT WORKDIR: the cached base archive with a second cpio appended that
# holds /init and the guest scripts (the kernel unpacks concatenated archives in order),
# so editing a test does not rebuild the cached image. Whatever the caller already put in
# WORKDIR/overlay (the fabriq-guest peer's binary and configuration) goes in too.
guest_initrd() {
    local base=$1 out=$2 overlay=$3/overlay
    mkdir -p "$overlay/e2e"
    install -m 0755 "$E2E_DIR/guest/init" "$overlay/init"
    install -m 0644 "$E2E_DIR/guest/lib.sh" "$E2E_DIR/guest/tests.sh" "$E2E_DIR/guest/nvmet.sh" \
        "$E2E_DIR/guest/fabriq-guest.sh" "$overlay/e2e/"
    cp "$base" "$out"
    (cd "$overlay" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >>"$out"
}

# guest_qemu ASSETS INITRD CMDLINE NETDEV CPUS: print the QEMU command line, one word per
# line (read it with mapfile). TCG: no KVM here. 512 MiB holds the ~100 MB initramfs
# unpacked plus the nvmet peer's sparse namespaces. -nodefaults drops the VGA card and
# the rest the guest does not use.
guest_qemu() {
    local assets=$1 initrd=$2 cmdline=$3 netdev=$4 cpus=$5
    printf '%s\n' qemu-system-x86_64 -accel tcg -cpu max -smp "$cpus" -m 512 \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$assets/vmlinux" -initrd "$initrd" -append "$cmdline" \
        -netdev "$netdev" -device virtio-net-pci,netdev=n0
}
