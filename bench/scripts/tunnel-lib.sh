# Shared shell functions for the demo and the end-to-end bench: two network
# namespaces joined by a veth pair, a WireGuard tunnel between them run by a
# chosen implementation, and iperf3 through it. Sourced, not executed.
#
# Every name carries $TAG (default: the shell's pid) so runs never collide,
# and `tl_cleanup` removes all of it (call it from an EXIT trap).
# shellcheck shell=bash disable=SC2034  # the variables are for the scripts sourcing this

umask 077
TAG=${TAG:-$$}
NS_A="wsa$TAG"; NS_B="wsb$TAG"; NS_R="wsr$TAG"
VETH_A="wva$TAG"; VETH_B="wvb$TAG"; VETH_RA="wvra$TAG"; VETH_RB="wvrb$TAG"
UNDER_A=192.168.213.1; UNDER_B=192.168.213.2
TUN_A=10.213.0.1; TUN_B=10.213.0.2
WORK=$(mktemp -d /tmp/wirespeed-tl.XXXXXX)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WIRESPEED_GIVEN=${WIRESPEED:-}
# Where `cargo build` put it, CARGO_TARGET_DIR included.
WIRESPEED=${WIRESPEED:-${CARGO_TARGET_DIR:-$ROOT/target}/release/wirespeed}
# wireguard-go built from upstream's tree (Debian's lags it by years).
WIREGUARD_GO_UPSTREAM=${WIREGUARD_GO_UPSTREAM:-/opt/peers/bin/wireguard-go-upstream}
BORINGTUN=${BORINGTUN:-$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")}
PIDS=()

tl_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    tl_unlink
    rm -f /var/run/wireguard/wsa"$TAG"*.sock /var/run/wireguard/wsb"$TAG"*.sock
    rm -rf "$WORK"
}

# Ends everything in the namespaces and deletes them (and their links).
tl_unlink() {
    local ns
    for ns in "$NS_A" "$NS_B" "$NS_R"; do
        # A namespace that is not there fails the pipe (pipefail): fine.
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    sleep 0.3
    for ns in "$NS_A" "$NS_B" "$NS_R"; do ip netns del "$ns" 2>/dev/null || true; done
    return 0
}

# Two namespaces and the bare link between them.
tl_link() {
    ip netns add "$NS_A"; ip netns add "$NS_B"
    ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
    ip -n "$NS_A" addr add "$UNDER_A/24" dev "$VETH_A"
    ip -n "$NS_B" addr add "$UNDER_B/24" dev "$VETH_B"
    for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_A" link set "$VETH_A" up; ip -n "$NS_B" link set "$VETH_B" up
}

# The same two namespaces with a router namespace between them: A - R - B.
# The link is shaped on R (tl_shape), not on A's or B's veth, because the
# AF_XDP backend transmits with the kernel's direct xmit, which skips the
# qdisc of the device it sends on: a tbf there would not hold it back, and
# XDP on B's veth sees frames before any ingress policing. Moves UNDER_B.
tl_link_routed() {
    local ns
    UNDER_B=192.168.214.2
    for ns in "$NS_A" "$NS_B" "$NS_R"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
    ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_RA" netns "$NS_R"
    ip link add "$VETH_B" netns "$NS_B" type veth peer name "$VETH_RB" netns "$NS_R"
    ip -n "$NS_A" addr add "$UNDER_A/24" dev "$VETH_A"
    ip -n "$NS_R" addr add 192.168.213.254/24 dev "$VETH_RA"
    ip -n "$NS_R" addr add 192.168.214.254/24 dev "$VETH_RB"
    ip -n "$NS_B" addr add "$UNDER_B/24" dev "$VETH_B"
    ip -n "$NS_A" link set "$VETH_A" up; ip -n "$NS_B" link set "$VETH_B" up
    ip -n "$NS_R" link set "$VETH_RA" up; ip -n "$NS_R" link set "$VETH_RB" up
    ip netns exec "$NS_R" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$NS_A" route add 192.168.214.0/24 via 192.168.213.254
    ip -n "$NS_B" route add 192.168.213.0/24 via 192.168.214.254
}

# tl_shape GBITS: both directions of the routed link limited to GBITS
# Gbit/s by a token bucket on R's two egresses (0: unshaped). The bucket
# holds 1 ms of traffic (at least 64 KiB, one GSO packet, so big packets
# are not split needlessly) and queues at most 10 ms.
tl_shape() {
    local dev burst
    burst=$(awk -v g="$1" 'BEGIN { b = g * 1e9 / 8 / 1000; print int(b < 65536 ? 65536 : b) }')
    for dev in "$VETH_RA" "$VETH_RB"; do
        ip netns exec "$NS_R" tc qdisc del dev "$dev" root 2>/dev/null || true
        [ "$1" = 0 ] && continue
        ip netns exec "$NS_R" tc qdisc add dev "$dev" root tbf rate "${1}gbit" burst "$burst" latency 10ms || return 1
    done
}

# Both ends of a tunnel share this host, but each stands for a host of its
# own: with PIN=1 (the default where there are two CPUs or more) the daemon
# and the iperf3 in A run on CPU 0 and those in B on CPU 1, whatever the
# implementation. Without it, two daemons that pin their workers
# (wirespeed) pile onto the same core. Left to the scheduler, the iperf3s
# landed sometimes each on its own end's CPU and sometimes each on the
# other's (the sender on the receiver's CPU), which moves work between the
# ends: in four runs that way one TCP stream through wirespeed measured
# 1.2x to 2.1x upstream wireguard-go's, in two runs pinned 1.50x and 1.59x.
CPUS=$(nproc)
PIN=${PIN:-$([ "$CPUS" -ge 2 ] && echo 1 || echo 0)}
tl_cpu_of() { [ "$1" = "$NS_A" ] && echo 0 || echo $((1 % CPUS)); }

# tl_start IMPL NS IFACE: runs a userspace WireGuard implementation in NS.
tl_start() {
    local impl=$1 ns=$2 ifc=$3 pin=()
    [ "$PIN" = 1 ] && pin=(taskset -c "$(tl_cpu_of "$ns")")
    case $impl in
        wirespeed) ip netns exec "$ns" "${pin[@]}" "$WIRESPEED" -f "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        wirespeed-xdp) ip netns exec "$ns" "${pin[@]}" "$WIRESPEED" -f --backend xdp "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        wirespeed-udp) ip netns exec "$ns" "${pin[@]}" "$WIRESPEED" -f --backend udp "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        wireguard-go) WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec "$ns" "${pin[@]}" wireguard-go -f "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        wireguard-go-upstream) WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec "$ns" "${pin[@]}" "$WIREGUARD_GO_UPSTREAM" -f "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        boringtun) ip netns exec "$ns" "${pin[@]}" "$BORINGTUN" --foreground --disable-drop-privileges "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        *) echo "unknown implementation $impl" >&2; return 1 ;;
    esac
    PIDS+=($!)
    tl_wait_up "$impl" "$ns" "$ifc"
}

# tl_wait_up WHAT NS IFACE: waits (5 s at most) for IFACE in NS and its UAPI
# socket; if they do not come, shows WHAT's log ($WORK/IFACE.log) and fails.
tl_wait_up() {
    local what=$1 ns=$2 ifc=$3
    for _ in $(seq 100); do
        [ -S "/var/run/wireguard/$ifc.sock" ] && ip -n "$ns" link show "$ifc" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$what did not come up on $ifc:" >&2; cat "$WORK/$ifc.log" >&2; return 1
}

# tl_tunnel IMPL_A IMPL_B N: a tunnel numbered N between the namespaces.
# Sets IF_A and IF_B.
tl_tunnel() {
    local ia=$1 ib=$2 n=$3
    IF_A="wsa$TAG$n"; IF_B="wsb$TAG$n"
    IF_A=${IF_A:0:15}; IF_B=${IF_B:0:15}
    wg genkey >"$WORK/ka"; wg genkey >"$WORK/kb"
    # Explicit returns: callers may run this under `if`, where set -e is off.
    tl_start "$ia" "$NS_A" "$IF_A" || return 1
    tl_start "$ib" "$NS_B" "$IF_B" || return 1
    local port=$((51820 + n))
    ip netns exec "$NS_A" wg set "$IF_A" private-key "$WORK/ka" listen-port "$port" \
        peer "$(wg pubkey <"$WORK/kb")" allowed-ips "$TUN_B/32" endpoint "$UNDER_B:$port"
    ip netns exec "$NS_B" wg set "$IF_B" private-key "$WORK/kb" listen-port "$port" \
        peer "$(wg pubkey <"$WORK/ka")" allowed-ips "$TUN_A/32" endpoint "$UNDER_A:$port"
    ip -n "$NS_A" addr add "$TUN_A/24" dev "$IF_A"; ip -n "$NS_A" link set "$IF_A" mtu 1420 up
    ip -n "$NS_B" addr add "$TUN_B/24" dev "$IF_B"; ip -n "$NS_B" link set "$IF_B" mtu 1420 up
    ip netns exec "$NS_A" ping -c 1 -W 5 "$TUN_B" >/dev/null
}

tl_stop_tunnel() {
    ip -n "$NS_A" link del "$IF_A" 2>/dev/null || true
    ip -n "$NS_B" link del "$IF_B" 2>/dev/null || true
    # The daemons may already have exited with their interfaces.
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    # A host data plane a wirespeed control started (not its child once
    # that control is gone) exits with its last tenant, but within a second:
    # the next tunnel's control must start its own (a child, so counted by
    # tl_daemon_cpu, with that tunnel's --backend), not attach to it.
    local ns i
    for ns in "$NS_A" "$NS_B"; do
        for i in $(seq 50); do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
            [ "$i" = 30 ] && { ip netns pids "$ns" | xargs -r kill 2>/dev/null || true; }
            sleep 0.1
        done
    done
    rm -f "/var/run/wireguard/$IF_A.sock" "/var/run/wireguard/$IF_B.sock"
}

# tl_iperf ADDR SECONDS [extra iperf3 args]: prints Gbit/s received (0 when
# the run failed) and leaves the bytes received in $WORK/iperf.bytes.
tl_iperf() {
    local addr=$1 secs=$2; shift 2
    echo 0 >"$WORK/iperf.bytes"
    local pin_a=() pin_b=()
    if [ "$PIN" = 1 ]; then
        pin_a=(taskset -c "$(tl_cpu_of "$NS_A")"); pin_b=(taskset -c "$(tl_cpu_of "$NS_B")")
    fi
    ip netns exec "$NS_B" "${pin_b[@]}" iperf3 -s -1 -D -B "$addr" -I "$WORK/iperf.pid" >/dev/null 2>&1
    sleep 0.3
    # A stalled tunnel must not hang the run; nor may its server, left
    # waiting for a client that gave up, keep the port for the next run.
    timeout $((secs + 30)) ip netns exec "$NS_A" "${pin_a[@]}" iperf3 -c "$addr" -t "$secs" -J --connect-timeout 5000 "$@" \
        >"$WORK/iperf.json" 2>/dev/null || true
    # The server removes its pid file as it exits, maybe between two reads.
    local server
    server=$(cat "$WORK/iperf.pid" 2>/dev/null) || true
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -f "$WORK/iperf.pid"
    python3 - "$WORK/iperf.json" "$WORK/iperf.bytes" <<'PY'
import json, sys
try:
    e = json.load(open(sys.argv[1])).get("end", {})
except ValueError:
    e = {}
s = e.get("sum_received") or e.get("sum") or {}
open(sys.argv[2], "w").write(f"{s.get('bytes', 0)}\n")
print(f"{s.get('bits_per_second', 0) / 1e9:.3f}")
PY
}

# CPU time, in seconds, of the daemons started by tl_start and of every
# process below them (wirespeed's data plane is a child, wirespeed-
# dataplane), threads and reaped children included: utime+stime+cutime+
# cstime from /proc/PID/stat.
tl_daemon_cpu() {
    python3 - "$(getconf CLK_TCK)" "${PIDS[@]}" <<'PY'
import os, sys
hz, roots = int(sys.argv[1]), {int(p) for p in sys.argv[2:]}
procs = {}
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        s = open(f"/proc/{p}/stat").read()
    except OSError:
        continue
    f = s[s.rindex(")") + 2:].split()  # comm may hold spaces
    procs[int(p)] = (int(f[1]), sum(map(int, f[11:15])))
def ours(p):
    while p > 1:
        if p in roots:
            return True
        p = procs.get(p, (0,))[0]
    return False
print(sum(t for p, (_, t) in procs.items() if ours(p)) / hz)
PY
}

# Busy CPU time of the whole host, in seconds, from /proc/stat: all but
# idle and iowait (guest time is already inside user).
tl_host_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat
}
