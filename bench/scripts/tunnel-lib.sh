# Shared shell functions for the demo and the end-to-end bench: two network
# namespaces joined by a veth pair, a WireGuard tunnel between them run by a
# chosen implementation, and iperf3 through it. Sourced, not executed.
#
# Every name carries $TAG (default: the shell's pid) so runs never collide,
# and `tl_cleanup` removes all of it (call it from an EXIT trap).

umask 077
TAG=${TAG:-$$}
NS_A="wsa$TAG"; NS_B="wsb$TAG"
VETH_A="wva$TAG"; VETH_B="wvb$TAG"
UNDER_A=192.168.213.1; UNDER_B=192.168.213.2
TUN_A=10.213.0.1; TUN_B=10.213.0.2
WORK=$(mktemp -d /tmp/wirespeed-tl.XXXXXX)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WIRESPEED_GIVEN=${WIRESPEED:-}
WIRESPEED=${WIRESPEED:-$ROOT/target/release/wirespeed}
BORINGTUN=${BORINGTUN:-$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")}
PIDS=()

tl_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for ns in "$NS_A" "$NS_B"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    done
    sleep 0.3
    for ns in "$NS_A" "$NS_B"; do ip netns del "$ns" 2>/dev/null; done
    rm -f /var/run/wireguard/wsa"$TAG"*.sock /var/run/wireguard/wsb"$TAG"*.sock
    rm -rf "$WORK"
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

# Both ends of a tunnel share this host, but each stands for a host of its
# own: with PIN=1 (the default where there are two CPUs or more) the daemon
# in A runs on CPU 0 and the one in B on CPU 1, whatever the implementation.
# Without it, two daemons that pin their workers (wirespeed) pile onto the
# same core. iperf3 itself is never pinned.
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
        boringtun) ip netns exec "$ns" "${pin[@]}" "$BORINGTUN" --foreground --disable-drop-privileges "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        *) echo "unknown implementation $impl" >&2; return 1 ;;
    esac
    PIDS+=($!)
    for _ in $(seq 100); do
        [ -S "/var/run/wireguard/$ifc.sock" ] && ip -n "$ns" link show "$ifc" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$impl did not come up on $ifc:" >&2; cat "$WORK/$ifc.log" >&2; return 1
}

# tl_tunnel IMPL_A IMPL_B N: a tunnel numbered N between the namespaces.
# Sets IF_A and IF_B.
tl_tunnel() {
    local ia=$1 ib=$2 n=$3
    IF_A="wsa$TAG$n"; IF_B="wsb$TAG$n"
    IF_A=${IF_A:0:15}; IF_B=${IF_B:0:15}
    wg genkey >"$WORK/ka"; wg genkey >"$WORK/kb"
    tl_start "$ia" "$NS_A" "$IF_A"; tl_start "$ib" "$NS_B" "$IF_B"
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
    rm -f "/var/run/wireguard/$IF_A.sock" "/var/run/wireguard/$IF_B.sock"
}

# tl_iperf ADDR SECONDS [extra iperf3 args]: prints Gbit/s received.
tl_iperf() {
    local addr=$1 secs=$2; shift 2
    ip netns exec "$NS_B" iperf3 -s -1 -D -B "$addr" >/dev/null 2>&1
    sleep 0.3
    ip netns exec "$NS_A" iperf3 -c "$addr" -t "$secs" -J "$@" >"$WORK/iperf.json" 2>/dev/null || { echo 0; return; }
    python3 - "$WORK/iperf.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
e = d.get("end", {})
s = e.get("sum_received") or e.get("sum") or {}
print(f"{s.get('bits_per_second', 0) / 1e9:.3f}")
PY
}
