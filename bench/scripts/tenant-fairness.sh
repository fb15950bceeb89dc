#!/usr/bin/env bash
# Tenant fairness bench: two wirespeed interfaces (tenants A and B) in one
# namespace, each with its own peer in a second namespace, and what tenant
# B gets while tenant A is flooded, against B alone:
#
#   bench/scripts/tenant-fairness.sh [SECONDS]
#
# Scenarios (each measured for B: ping round trips at 100/s, then TCP from
# B's peer into B through the tunnel, iperf3 -R):
#   alone       A idle
#   elephant    A carries a UDP flood from its peer (iperf3 -u -b 0)
#   garbage     A's port gets transport-shaped garbage (type 4, unknown
#               receiver indices) as fast as one CPU can send it
#   handshakes  A's port gets initiations with invalid MACs
#
# MODES picks how the tenants are served (default "host own"):
#   host  one host data plane (`wirespeed --host-dataplane`), both tenants
#         attached to it: fairness is the workers' turn-taking
#   own   each interface with a data plane of its own: the reference, where
#         the kernel's scheduler shares the CPU between two processes
# The tenants' side runs on CPU 0 (its data plane: --workers 1); the peers,
# the flood generators and nothing else of ours on CPU 1. Ratios are to B
# alone in the same mode and run. Writes tenant-fairness-STAMP.{txt,csv}
# to OUT_DIR (default bench/results/).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
MODES=${MODES:-"host own"}
OUT_DIR=${OUT_DIR:-bench/results}
[ -n "${WIRESPEED:-}" ] || cargo build --release -q -p wirespeed-control
. bench/scripts/tunnel-lib.sh
trap tl_cleanup EXIT
[ "$CPUS" -ge 2 ] || { echo "needs 2 CPUs (one per side)" >&2; exit 1; }

SOCK="$WORK/dataplane.sock"
A_IN=10.213.1.1; A_OUT=10.213.1.2; PORT_A=51821
B_IN=10.213.2.1; B_OUT=10.213.2.2; PORT_B=51822
FLOOD_PIDS=()

# start_tenant NS IFACE MODE CPU: a wirespeed control for IFACE in NS.
start_tenant() {
    local ns=$1 ifc=$2 mode=$3 cpu=$4
    WIRESPEED_DATAPLANE=$mode WIRESPEED_DATAPLANE_SOCKET="$SOCK" \
        ip netns exec "$ns" taskset -c "$cpu" "$WIRESPEED" -f --backend udp --workers 1 "$ifc" \
        >"$WORK/$ifc.log" 2>&1 &
    PIDS+=($!)
    tl_wait_up wirespeed "$ns" "$ifc"
}

# pair NAME PORT IN OUT MODE: tenant NAME in A, its peer in B, addresses IN/OUT.
pair() {
    local name=$1 port=$2 in=$3 out=$4 mode=$5
    local ia="wsa$TAG$name" ib="wsb$TAG$name"
    ia=${ia:0:15}; ib=${ib:0:15}
    wg genkey >"$WORK/k$name.a"; wg genkey >"$WORK/k$name.b"
    start_tenant "$NS_A" "$ia" "$mode" 0
    start_tenant "$NS_B" "$ib" own 1
    ip netns exec "$NS_A" wg set "$ia" private-key "$WORK/k$name.a" listen-port "$port" \
        peer "$(wg pubkey <"$WORK/k$name.b")" allowed-ips "$out/32" endpoint "$UNDER_B:$port"
    ip netns exec "$NS_B" wg set "$ib" private-key "$WORK/k$name.b" listen-port "$port" \
        peer "$(wg pubkey <"$WORK/k$name.a")" allowed-ips "$in/32" endpoint "$UNDER_A:$port"
    ip -n "$NS_A" addr add "$in/24" dev "$ia"; ip -n "$NS_A" link set "$ia" mtu 1420 up
    ip -n "$NS_B" addr add "$out/24" dev "$ib"; ip -n "$NS_B" link set "$ib" mtu 1420 up
    ip netns exec "$NS_B" ping -c 1 -W 5 "$in" >/dev/null
}

# ping_b: B's round trips at 100/s for SECS: "p50_ms p99_ms lost_share".
ping_b() {
    ip netns exec "$NS_B" ping -n -i 0.01 -W 1 -c $((SECS * 100)) "$B_IN" 2>/dev/null |
        python3 -c '
import re, sys
n = int(sys.argv[1])
t = sorted(float(m.group(1)) for m in re.finditer(r"time=([0-9.]+)", sys.stdin.read()))
q = lambda p: t[min(len(t) - 1, int(p * len(t)))] if t else float("nan")
print(f"{q(0.5):.3f} {q(0.99):.3f} {1 - len(t) / n:.3f}")' $((SECS * 100))
}

# flood SCENARIO: starts what floods tenant A (nothing for "alone").
flood() {
    case $1 in
        alone) ;;
        elephant)
            ip netns exec "$NS_A" iperf3 -s -p 5202 -B "$A_IN" >/dev/null 2>&1 &
            FLOOD_PIDS+=($!)
            sleep 0.3
            ip netns exec "$NS_B" taskset -c 1 iperf3 -c "$A_IN" -p 5202 -u -b 0 -l 1380 -t 3600 \
                >/dev/null 2>&1 &
            FLOOD_PIDS+=($!) ;;
        garbage|handshakes)
            ip netns exec "$NS_B" taskset -c 1 python3 - "$UNDER_A" "$PORT_A" "$1" <<'PY' &
import os, socket, struct, sys
host, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
if kind == "garbage":
    # type 4, reserved zeros, receiver index, counter, 64 bytes + tag
    msgs = [struct.pack("<IIQ", 4, i, i) + os.urandom(80) for i in range(1, 4097)]
else:
    # an initiation's size and type; its MACs are random, so invalid
    msgs = [struct.pack("<I", 1) + os.urandom(144) for _ in range(4096)]
while True:
    for m in msgs:
        try:
            s.send(m)
        except OSError:
            pass
PY
            FLOOD_PIDS+=($!) ;;
    esac
    sleep 1
}

unflood() {
    for p in "${FLOOD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${FLOOD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    FLOOD_PIDS=()
}

mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
CSV="$OUT_DIR/tenant-fairness-$STAMP.csv"
TXT="$OUT_DIR/tenant-fairness-$STAMP.txt"
echo "mode,scenario,b_ping_p50_ms,b_ping_p99_ms,b_ping_lost,b_tcp_gbps,b_tcp_share_of_alone" >"$CSV"
{
    echo "# $(uname -r), $CPUS CPUs, ${SECS}s per measurement; tenant B while tenant A is flooded"
    printf '%-5s %-11s %10s %10s %8s %10s %9s\n' mode scenario "p50 ms" "p99 ms" lost "TCP Gb/s" "vs alone"
} | tee "$TXT"
tl_link
for mode in $MODES; do
    if [ "$mode" = host ]; then
        WIRESPEED_DATAPLANE_SOCKET="$SOCK" ip netns exec "$NS_A" taskset -c 0 \
            "$WIRESPEED" --host-dataplane --backend udp --workers 1 >"$WORK/host.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
    fi
    pair a "$PORT_A" "$A_IN" "$A_OUT" "$mode"
    pair b "$PORT_B" "$B_IN" "$B_OUT" "$mode"
    alone=""
    for scenario in alone elephant garbage handshakes; do
        flood "$scenario"
        read -r p50 p99 lost < <(ping_b)
        gbps=$(tl_iperf "$B_OUT" "$SECS" -R)
        unflood
        [ -n "$alone" ] || alone=$gbps
        share=$(python3 -c "print(f'{$gbps / $alone:.2f}' if $alone else 'n/a')")
        echo "$mode,$scenario,$p50,$p99,$lost,$gbps,$share" >>"$CSV"
        printf '%-5s %-11s %10s %10s %8s %10s %9s\n' "$mode" "$scenario" "$p50" "$p99" "$lost" "$gbps" "$share" |
            tee -a "$TXT"
    done
    if [ "$mode" = host ]; then
        grep -h "tenant\|lane" "$WORK/host.log" | tail -5 | sed 's/^/  host: /' || true
    fi
    # Every tenant and peer goes before the next mode starts afresh.
    for ifc in "wsa${TAG}a" "wsa${TAG}b"; do ip -n "$NS_A" link del "${ifc:0:15}" 2>/dev/null || true; done
    for ifc in "wsb${TAG}a" "wsb${TAG}b"; do ip -n "$NS_B" link del "${ifc:0:15}" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    rm -f "$SOCK"
done
echo "wrote $TXT and $CSV"
