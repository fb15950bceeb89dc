#!/usr/bin/env bash
# Handshake-flood bench: a server under a flood of 50,000 handshake
# initiations a second from spoofed sources (198.18.0.0/16, the
# benchmarking range), while a legitimate peer re-handshakes with it.
#
#   [IMPLS="wirespeed wireguard-go"] [RATE=50000] [TRIES=3]
#       bench/scripts/handshake-flood.sh
#
# Three namespaces: the server (S), the legitimate client (C, always
# wirespeed) on one link, and the flooder (F) on another. F is a dead end:
# S routes the spoofed range back to it, where the cookie replies die, and
# nothing in F forwards, so nothing of the flood leaves the namespaces. The
# generator (`handshake-flood`, bench/src/handshake_flood.rs) knows S's
# public key, so its mac1 is valid, or breaks mac1 on purpose.
#
# For each server implementation, the time from a fresh session's first
# ping to its first reply (ping every 50 ms), TRIES times each:
#   quiet       no flood, from the endpoint of the last handshake
#   known       valid-mac1 flood, from the endpoint of the last handshake
#   new         valid-mac1 flood, from a new port (the cookie path)
#   junk-known  invalid-mac1 flood, from the endpoint of the last handshake
#   junk-new    invalid-mac1 flood, from a new port
# A fresh session: C removes and re-adds its peer, so its next packet needs
# a new handshake. And the server's memory (PSS of its process tree, data
# plane included) before the flood, its peak during it, and 5 s after.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WIRESPEED_GIVEN=${WIRESPEED:-}
WIRESPEED=${WIRESPEED:-$TARGET/release/wirespeed}
FLOOD=${HANDSHAKE_FLOOD:-$TARGET/release/handshake-flood}
IMPLS=${IMPLS:-"wirespeed wireguard-go"}
RATE=${RATE:-50000}
TRIES=${TRIES:-3}
TAG=${TAG:-$$}
NS_S="hfs$TAG"; NS_C="hfc$TAG"; NS_F="hff$TAG"
S_C=192.168.216.1; C_ADDR=192.168.216.2; S_F=192.168.217.1; F_ADDR=192.168.217.2
TUN_S=10.216.0.1; TUN_C=10.216.0.2; PORT=51820
WORK=$(mktemp -d /tmp/wirespeed-hf.XXXXXX)
PIDS=()
umask 077

cleanup() {
    local ns p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for ns in "$NS_S" "$NS_C" "$NS_F"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    sleep 0.3
    for ns in "$NS_S" "$NS_C" "$NS_F"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -f /var/run/wireguard/hf?"$TAG"*.sock
    rm -rf "$WORK"
}
trap cleanup EXIT

# Built every run unless both binaries are given: an old build would
# measure old code.
if [ -z "$WIRESPEED_GIVEN" ] || [ -z "${HANDSHAKE_FLOOD:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p wirespeed-control -p wirespeed-bench \
        --bin wirespeed --bin handshake-flood)
fi

link() {
    local ns
    for ns in "$NS_S" "$NS_C" "$NS_F"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
    ip link add "hvc$TAG" netns "$NS_C" type veth peer name "hvsc$TAG" netns "$NS_S"
    ip link add "hvf$TAG" netns "$NS_F" type veth peer name "hvsf$TAG" netns "$NS_S"
    ip -n "$NS_C" addr add "$C_ADDR/24" dev "hvc$TAG"
    ip -n "$NS_S" addr add "$S_C/24" dev "hvsc$TAG"
    ip -n "$NS_S" addr add "$S_F/24" dev "hvsf$TAG"
    ip -n "$NS_F" addr add "$F_ADDR/24" dev "hvf$TAG"
    ip -n "$NS_C" link set "hvc$TAG" up; ip -n "$NS_F" link set "hvf$TAG" up
    ip -n "$NS_S" link set "hvsc$TAG" up; ip -n "$NS_S" link set "hvsf$TAG" up
    # Spoofed sources arrive on S's flooder link and their replies go back
    # there; no reverse-path filter may drop them first.
    ip netns exec "$NS_S" sysctl -qw net.ipv4.conf.all.rp_filter=0
    ip netns exec "$NS_S" sysctl -qw "net.ipv4.conf.hvsf$TAG.rp_filter=0"
    ip -n "$NS_S" route add 198.18.0.0/15 via "$F_ADDR"
    ip netns exec "$NS_F" sysctl -qw net.ipv4.ip_forward=0
}

# start IMPL NS IFACE CPU: a userspace WireGuard daemon, pinned to CPU.
start() {
    local impl=$1 ns=$2 ifc=$3 cpu=$4
    case $impl in
        wirespeed) ip netns exec "$ns" taskset -c "$cpu" "$WIRESPEED" -f "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        wireguard-go) WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
            ip netns exec "$ns" taskset -c "$cpu" wireguard-go -f "$ifc" >"$WORK/$ifc.log" 2>&1 & ;;
        *) echo "unknown implementation $impl" >&2; return 1 ;;
    esac
    PIDS+=($!)
    DAEMON=$!
    for _ in $(seq 100); do
        [ -S "/var/run/wireguard/$ifc.sock" ] && ip -n "$ns" link show "$ifc" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$impl did not come up on $ifc:" >&2; cat "$WORK/$ifc.log" >&2; return 1
}

# PSS in MiB of a process and everything below it (wirespeed's data plane
# is its child); PSS so the shared region is not counted twice.
tree_pss() {
    python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
parent = {}
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        s = open(f"/proc/{p}/stat").read()
    except OSError:
        continue
    parent[int(p)] = int(s[s.rindex(")") + 2:].split()[1])
def ours(p):
    while p > 1:
        if p == root:
            return True
        p = parent.get(p, 0)
    return False
kb = 0
for p in filter(ours, parent):
    try:
        for line in open(f"/proc/{p}/smaps_rollup"):
            if line.startswith("Pss:"):
                kb += int(line.split()[1])
    except OSError:
        pass
print(f"{kb / 1024:.1f}")
PY
}

# Samples tree_pss every 0.5 s into FILE until killed.
sample_pss() {
    while :; do tree_pss "$1" >>"$2"; sleep 0.5; done
}

CLIENT_PORT=$PORT
# rehandshake [new]: C drops its session (and with "new" first moves to a
# new port); sets TOOK to the seconds from the first ping to the first
# reply, or "fail". Not run in a subshell: CLIENT_PORT must carry over.
rehandshake() {
    local t0 t1
    # Handshake timestamps are rounded down to 1/50 s (as the kernel's are),
    # and a responder refuses an initiation whose timestamp is not newer
    # than the last one it took from that peer: two fresh sessions within
    # one such step would time the 5 s retry, not the server.
    sleep 0.05
    if [ "${1:-}" = new ]; then
        CLIENT_PORT=$((CLIENT_PORT + 1))
        ip netns exec "$NS_C" wg set "$IF_C" listen-port "$CLIENT_PORT"
    fi
    ip netns exec "$NS_C" wg set "$IF_C" peer "$PUB_S" remove
    ip netns exec "$NS_C" wg set "$IF_C" peer "$PUB_S" allowed-ips "$TUN_S/32" endpoint "$S_C:$PORT"
    t0=$(date +%s.%N)
    if ! ip netns exec "$NS_C" ping -n -q -c 1 -i 0.05 -w 20 "$TUN_S" >/dev/null; then
        TOOK=fail; return 0
    fi
    t1=$(date +%s.%N)
    TOOK=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

# tries CASE [new]: TRIES re-handshakes, printed as one row.
tries() {
    local c=$1 i out=()
    for ((i = 0; i < TRIES; i++)); do rehandshake "${2:-}"; out+=("$TOOK"); done
    printf '%-13s %-11s %s\n' "$IMPL" "$c" "${out[*]}" | tee -a "$WORK/times"
}

# flood on|off [invalid]: starts or stops the generator in F, pinned to the
# CPU the server is not on.
flood() {
    if [ "$1" = on ]; then
        ip netns exec "$NS_F" taskset -c "$FLOOD_CPU" "$FLOOD" --target "$S_F:$PORT" --pubkey "$PUB_S" \
            --rate "$RATE" --secs 600 --first-source 198.18.0.0 --sources 65536 \
            --invalid-mac1 "$([ "${2:-}" = invalid ] && echo 1 || echo 0)" >"$WORK/flood.out" 2>&1 &
        FLOODER=$!
        # Load is judged over a second; let it set in.
        sleep 2
    else
        kill "$FLOODER" 2>/dev/null || true
        wait "$FLOODER" 2>/dev/null || true
        echo "  flooder: $(cat "$WORK/flood.out")"
    fi
}

CPUS=$(nproc)
SERVER_CPU=0
FLOOD_CPU=$((1 % CPUS))
link
echo "# $(uname -r), $CPUS CPUs, flood $RATE/s; seconds to the first ping reply of a fresh session, $TRIES tries"
n=0
for IMPL in $IMPLS; do
    n=$((n + 1))
    IF_S="hfs$TAG$n"; IF_C="hfc$TAG$n"; IF_S=${IF_S:0:15}; IF_C=${IF_C:0:15}
    CLIENT_PORT=$PORT
    wg genkey >"$WORK/ks"; wg genkey >"$WORK/kc"
    PUB_S=$(wg pubkey <"$WORK/ks"); PUB_C=$(wg pubkey <"$WORK/kc")
    start "$IMPL" "$NS_S" "$IF_S" "$SERVER_CPU"
    SERVER=$DAEMON
    start wirespeed "$NS_C" "$IF_C" "$FLOOD_CPU"
    ip netns exec "$NS_S" wg set "$IF_S" private-key "$WORK/ks" listen-port "$PORT" \
        peer "$PUB_C" allowed-ips "$TUN_C/32"
    ip netns exec "$NS_C" wg set "$IF_C" private-key "$WORK/kc" listen-port "$CLIENT_PORT" \
        peer "$PUB_S" allowed-ips "$TUN_S/32" endpoint "$S_C:$PORT"
    ip -n "$NS_S" addr add "$TUN_S/24" dev "$IF_S"; ip -n "$NS_S" link set "$IF_S" up
    ip -n "$NS_C" addr add "$TUN_C/24" dev "$IF_C"; ip -n "$NS_C" link set "$IF_C" up
    ip netns exec "$NS_C" ping -n -q -c 1 -w 10 "$TUN_S" >/dev/null
    tries quiet
    before=$(tree_pss "$SERVER")
    : >"$WORK/pss"
    sample_pss "$SERVER" "$WORK/pss" &
    SAMPLER=$!
    flood on
    tries known
    # The last new port is the known one from here on.
    tries new new
    flood off
    flood on invalid
    tries junk-known
    tries junk-new new
    flood off
    kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true
    sleep 5
    after=$(tree_pss "$SERVER")
    peak=$(sort -n "$WORK/pss" | tail -1)
    printf '%-13s memory MiB   before %s  peak %s  after %s\n' "$IMPL" "$before" "$peak" "$after" |
        tee -a "$WORK/times"
    ip -n "$NS_S" link del "$IF_S" 2>/dev/null || true
    ip -n "$NS_C" link del "$IF_C" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    if [ -n "${KEEP_LOGS:-}" ]; then cp "$WORK"/*.log "$KEEP_LOGS"/; fi
done
