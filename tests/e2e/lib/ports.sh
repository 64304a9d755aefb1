# shellcheck shell=bash
# Sourced by tests/e2e/run and tests/e2e/bench-nvmet: host TCP ports, picked and probed.

# used_ports: every local TCP port in use on the host, in decimal.
used_ports() {
    local sl local_addr rest
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r sl local_addr rest; do
        [[ $sl == sl ]] || echo $((16#${local_addr##*:}))
    done | sort -u
}

# free_ports N: N distinct ports nobody on the host uses now (from the ephemeral range's
# upper neighbour, so they do not collide with outgoing connections either).
free_ports() {
    local used n=$1 p
    used=" $(used_ports | tr '\n' ' ') "
    while ((n > 0)); do
        p=$((20000 + RANDOM % 12000))
        [[ $used == *" $p "* ]] && continue
        used+="$p "
        echo "$p"
        n=$((n - 1))
    done
}

# port_open PORT: does something accept connections on 127.0.0.1:PORT?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ports_open PORT...: does every PORT accept?
ports_open() {
    local p
    for p in "$@"; do port_open "$p" || return 1; done
}
