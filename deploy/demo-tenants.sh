# Sourced by `deploy/demo.sh --tenants` (after tunnel-lib.sh): two wirespeed
# interfaces, tenants "red" and "blue", in one namespace on one uplink,
# both served by one host data plane (`wirespeed --host-dataplane`) that
# takes the uplink with AF_XDP, the case a data plane per interface
# cannot serve (one XDP attach point per uplink). Each tenant has
# its own keys, listen port and peer in the other namespace (red's
# peer runs wirespeed, blue's wireguard-go). Both carry a transfer at once;
# `wg show` counts each tenant's own.
# shellcheck shell=bash
SOCK="$WORK/dataplane.sock"
export WIRESPEED_DATAPLANE_SOCKET="$SOCK"

echo "== two namespaces, $NS_A ($UNDER_A) and $NS_B ($UNDER_B), joined by a veth pair"
tl_link
echo "== one host data plane in $NS_A"
# AF_XDP on the uplink both tenants share (one XDP program steers both ports).
WIRESPEED_XDP_IFACES="$VETH_A" ip netns exec "$NS_A" "$WIRESPEED" --host-dataplane >"$WORK/host.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { cat "$WORK/host.log" >&2; exit 1; }

# tenant NAME PORT NET PEER_IMPL: interface NAME in A attached to the host
# data plane, its peer (PEER_IMPL) in B; NET.1 is A's address, NET.2 B's.
tenant() {
    local name=$1 port=$2 net=$3 impl=$4
    local ia="${name}$TAG" ib="${name}p$TAG"
    ia=${ia:0:15}; ib=${ib:0:15}
    wg genkey >"$WORK/$name.a"; wg genkey >"$WORK/$name.b"
    WIRESPEED_DATAPLANE=host tl_start wirespeed "$NS_A" "$ia"
    WIRESPEED_DATAPLANE=own tl_start "$impl" "$NS_B" "$ib"
    ip netns exec "$NS_A" wg set "$ia" private-key "$WORK/$name.a" listen-port "$port" \
        peer "$(wg pubkey <"$WORK/$name.b")" allowed-ips "$net.2/32" endpoint "$UNDER_B:$port"
    ip netns exec "$NS_B" wg set "$ib" private-key "$WORK/$name.b" listen-port "$port" \
        peer "$(wg pubkey <"$WORK/$name.a")" allowed-ips "$net.1/32" endpoint "$UNDER_A:$port"
    ip -n "$NS_A" addr add "$net.1/24" dev "$ia"; ip -n "$NS_A" link set "$ia" mtu 1420 up
    ip -n "$NS_B" addr add "$net.2/24" dev "$ib"; ip -n "$NS_B" link set "$ib" mtu 1420 up
    echo "== tenant $name: $ia ($net.1, port $port) <-> $ib ($net.2, $impl)"
    ip netns exec "$NS_A" ping -c 3 -i 0.2 "$net.2" | tail -2 | sed 's/^/  /'
}
RED="red$TAG"; BLUE="blue$TAG"
RED=${RED:0:15}; BLUE=${BLUE:0:15}
tenant red 51821 10.213.1 wirespeed
tenant blue 51822 10.213.2 wireguard-go
sleep 0.5
echo
echo "== the host data plane's log"
sed 's/^/  /' "$WORK/host.log"
echo
echo "== TCP through both tenants at once, ${SECS}s (iperf3)"
for n in 1 2; do
    ip netns exec "$NS_B" iperf3 -s -1 -D -p $((5200 + n)) -B "10.213.$n.2" >/dev/null 2>&1
done
sleep 0.3
clients=()
for n in 1 2; do
    timeout $((SECS + 30)) ip netns exec "$NS_A" iperf3 -c "10.213.$n.2" -p $((5200 + n)) \
        -t "$SECS" -J --connect-timeout 5000 >"$WORK/iperf$n.json" 2>/dev/null &
    clients+=($!)
done
for c in "${clients[@]}"; do wait "$c" || true; done
sleep 0.5
for n in 1 2; do
    python3 - "$WORK/iperf$n.json" "$([ $n = 1 ] && echo red || echo blue)" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))["end"]["sum_received"]
    print(f"  {sys.argv[2]:5s} {s['bits_per_second'] / 1e9:.2f} Gbit/s, {s['bytes']} bytes")
except (OSError, ValueError, KeyError):
    print(f"  {sys.argv[2]:5s} no result")
PY
done
echo
for ifc in "$RED" "$BLUE"; do
    echo "== wg show $ifc (counts only this tenant's traffic)"
    ip netns exec "$NS_A" wg show "$ifc"
    echo
done
