#!/usr/bin/env bash
# Captures the interop fixtures that tests/interop_transcript.rs replays.
#
# For each real peer (wireguard-go, boringtun) and each direction (we
# initiate, they initiate) this runs our sans-IO device in
# examples/interop_probe.rs against the real peer across a veth pair between
# two network namespaces, and stores beside this script:
#
#   <peer>-we-initiate.json    transcript written by the probe (mode initiate:
#                              the probe pings the peer's tunnel address)
#   <peer>-we-initiate.pcap    tcpdump of the UDP traffic on the probe's veth
#   <peer>-they-initiate.json  transcript (mode respond: the peer pings us,
#                              the probe answers, then pings the peer)
#   <peer>-they-initiate.pcap
#
# Regenerate (as root; needs ip, wg, tcpdump, ping, wireguard-go and
# boringtun-cli 0.7.1 on PATH or in ~/.cargo/bin):
#
#   control/tests/data/interop/capture.sh            # from the workspace root
#
# then run `cargo test -p wirespeed-control --test interop_transcript`.
# The script builds the probe with cargo unless PROBE names a binary. Keys are
# fixed (below) so fixtures stay comparable across regenerations; timestamps,
# the peer's ephemeral keys and indices change every time. Everything it
# creates is named wsi-* and removed on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../../.." && pwd)"
OUTDIR="${OUTDIR:-$HERE}"
PATH="$PATH:$HOME/.cargo/bin:/root/.cargo/bin"

# Fixed test keys, made once with `wg genkey` / `wg pubkey`. Never use them
# for anything but these fixtures.
PROBE_PRIV='aJduBgTG4BYkUDgZzRD64UhbbxvduhmmmmhqEIEVFUg='
PROBE_PUB='zzVlD8BPzssOfTaeu5WH+UduUHklBVegVjABM/291Eo='
PEER_PRIV='cMjBkeWsvdDEHUP85zyyjuwW4J+TxUojjrD3XEope3o='
PEER_PUB='S7bXXxYBUyzQNqzakl0GRRGYqzWEdCXZziskBTWOPkA='

NS_PROBE=wsi-probe
NS_PEER=wsi-peer
VETH_PROBE=wsi-vprobe
VETH_PEER=wsi-vpeer
PROBE_ADDR=192.0.2.1
PEER_ADDR=192.0.2.2
PROBE_PORT=51820
PEER_PORT=51821
TUN_PROBE=10.99.0.1
TUN_PEER=10.99.0.2

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for tool in ip wg tcpdump ping wireguard-go boringtun-cli; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

if [ -z "${PROBE:-}" ]; then
    (cd "$ROOT" && cargo build -q -p wirespeed-control --example interop_probe)
    PROBE="$ROOT/target/debug/examples/interop_probe"
fi

TMP="$(mktemp -d /tmp/wsi-capture.XXXXXX)"
PIDS=()

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    ip netns del "$NS_PROBE" 2>/dev/null
    ip netns del "$NS_PEER" 2>/dev/null
    rm -f /var/run/wireguard/wsi-wgo.sock /var/run/wireguard/wsi-bt.sock
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

setup_net() {
    ip netns add "$NS_PROBE"
    ip netns add "$NS_PEER"
    for ns in "$NS_PROBE" "$NS_PEER"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$ns" link set lo up
    done
    ip link add "$VETH_PROBE" netns "$NS_PROBE" type veth peer name "$VETH_PEER" netns "$NS_PEER"
    ip -n "$NS_PROBE" addr add "$PROBE_ADDR/24" dev "$VETH_PROBE"
    ip -n "$NS_PEER" addr add "$PEER_ADDR/24" dev "$VETH_PEER"
    ip -n "$NS_PROBE" link set "$VETH_PROBE" up
    ip -n "$NS_PEER" link set "$VETH_PEER" up
}

wait_for() { # wait_for DESCRIPTION COMMAND...
    local what="$1"
    shift
    for _ in $(seq 100); do
        if "$@" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for $what" >&2
    return 1
}

# start_peer IMPL IFACE WITH_ENDPOINT: starts the real peer in its namespace.
start_peer() {
    local impl="$1" iface="$2" with_endpoint="$3"
    case "$impl" in
    wireguard-go)
        ip netns exec "$NS_PEER" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
            wireguard-go -f "$iface" >"$TMP/$iface.log" 2>&1 &
        ;;
    boringtun)
        ip netns exec "$NS_PEER" boringtun-cli --foreground --disable-drop-privileges "$iface" \
            >"$TMP/$iface.log" 2>&1 &
        ;;
    esac
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_for "$iface UAPI socket" test -S "/var/run/wireguard/$iface.sock"
    echo "$PEER_PRIV" >"$TMP/peer.key"
    local endpoint=()
    if [ "$with_endpoint" = yes ]; then endpoint=(endpoint "$PROBE_ADDR:$PROBE_PORT"); fi
    ip netns exec "$NS_PEER" wg set "$iface" private-key "$TMP/peer.key" listen-port "$PEER_PORT" \
        peer "$PROBE_PUB" allowed-ips "$TUN_PROBE/32" "${endpoint[@]}"
    ip -n "$NS_PEER" addr add "$TUN_PEER/24" dev "$iface"
    ip -n "$NS_PEER" link set "$iface" up
}

stop_pid() {
    kill -INT "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# run_case IMPL IFACE DIRECTION SEED
run_case() {
    local impl="$1" iface="$2" dir="$3" seed="$4"
    local name="$impl-$dir"
    echo "=== $name"
    setup_net
    local mode peer_endpoint=()
    if [ "$dir" = we-initiate ]; then
        mode=initiate
        peer_endpoint=(--peer-endpoint "$PEER_ADDR:$PEER_PORT")
        start_peer "$impl" "$iface" no
    else
        mode=respond
        start_peer "$impl" "$iface" yes
    fi

    # --immediate-mode: without it libpcap hands over packets a ring block at
    # a time, and the last ones before the SIGINT never reach the file.
    ip netns exec "$NS_PROBE" tcpdump --immediate-mode -Z root -U -n -i "$VETH_PROBE" -w "$TMP/$name.pcap" udp \
        2>"$TMP/$name.tcpdump.log" &
    local tcpdump_pid=$!
    PIDS+=("$tcpdump_pid")
    wait_for "tcpdump" grep -q "listening on" "$TMP/$name.tcpdump.log"

    ip netns exec "$NS_PROBE" "$PROBE" --listen "$PROBE_ADDR:$PROBE_PORT" --private-key "$PROBE_PRIV" \
        --peer-public-key "$PEER_PUB" "${peer_endpoint[@]}" --tunnel-ip "$TUN_PROBE" \
        --peer-tunnel-ip "$TUN_PEER" --seed "$seed" --mode "$mode" --label "$name" \
        --timeout-secs 20 --out "$TMP/$name.json" &
    local probe_pid=$!
    PIDS+=("$probe_pid")
    if [ "$mode" = respond ]; then
        sleep 0.5 # let the probe bind
        ip netns exec "$NS_PEER" ping -n -c 1 -W 10 "$TUN_PROBE" >"$TMP/$name.ping.log" 2>&1 &
        PIDS+=("$!")
    fi
    local rc=0
    wait "$probe_pid" || rc=$?
    sleep 0.3 # let tcpdump see the last datagram
    stop_pid "$tcpdump_pid"
    stop_pid "$PEER_PID"
    ip netns del "$NS_PROBE"
    ip netns del "$NS_PEER"
    rm -f "/var/run/wireguard/$iface.sock"
    if [ "$rc" != 0 ]; then
        echo "probe failed for $name (exit $rc); peer log:" >&2
        cat "$TMP/$iface.log" >&2 || true
        return 1
    fi
    local packets
    packets="$(tcpdump -r "$TMP/$name.pcap" -n 2>/dev/null | wc -l)"
    if [ "$packets" -lt 4 ]; then
        echo "capture for $name holds only $packets packets" >&2
        return 1
    fi
    cp "$TMP/$name.json" "$TMP/$name.pcap" "$OUTDIR/"
    echo "    wrote $OUTDIR/$name.json and $name.pcap ($packets packets)"
}

run_case wireguard-go wsi-wgo we-initiate 1
run_case wireguard-go wsi-wgo they-initiate 2
run_case boringtun wsi-bt we-initiate 3
run_case boringtun wsi-bt they-initiate 4
echo "all captures done"
