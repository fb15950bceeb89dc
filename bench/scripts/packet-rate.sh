#!/usr/bin/env bash
# Packet-rate bench: transport messages with 64- and 1,420-byte inner
# packets pushed from one namespace into wirespeed's AF_XDP workers in
# another, counted where they leave (the TUN's receive counter). Next to it,
# in the same run: the same packets merely forwarded from AF_XDP to a TUN
# with no crypto (the I/O ceiling, `packet-rate forward`) and
# `openssl speed -evp chacha20-poly1305` at that size (the crypto ceiling).
#
#   bench/scripts/packet-rate.sh [WORKERS...]     (default: 1)
#
# Worker i runs on CPU i and generator i on CPU WORKERS+i, so a run with W
# workers needs 2W CPUs. Each generator is its own peer with its own UDP
# port, and XPS sends it out of its own veth queue into its own worker.
# SIZES and COUNT (messages per generator) override the defaults.
# CAPTURE=1 runs `wirespeed capture IFACE -w /dev/null $CAPTURE_ARGS` while
# wirespeed is measured (the cost of capture when on; its summary goes to
# stderr).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WIRESPEED_GIVEN=${WIRESPEED:-}
BIN=${PACKET_RATE:-$ROOT/target/release/packet-rate}
WIRESPEED=${WIRESPEED:-$ROOT/target/release/wirespeed}
SIZES=${SIZES:-"64 1420"}
WORKERS=("$@"); [ ${#WORKERS[@]} -gt 0 ] || WORKERS=(1)
TAG=${TAG:-$$}
NS_A="wpa$TAG"; NS_B="wpb$TAG"; VETH_A="wpva$TAG"; VETH_B="wpvb$TAG"
TUN_FWD="wpf$TAG"; TUN_WS="wpw$TAG"
ADDR_A=192.168.214.1; ADDR_B=192.168.214.2; PORT=51820
LOG=$(mktemp -d /tmp/wirespeed-pr.XXXXXX)
PID=""

cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    # Under set -e a failing cleanup step would be the script's exit status.
    for ns in "$NS_A" "$NS_B"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    sleep 0.3
    for ns in "$NS_A" "$NS_B"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -f "/var/run/wireguard/$TUN_WS.sock"
    rm -rf "$LOG"
}
trap cleanup EXIT
# Built every run unless both binaries are given (the device run carries
# them): an old build would measure old code.
if [ -z "${PACKET_RATE:-}" ] || [ -z "${WIRESPEED_GIVEN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p wirespeed-control -p wirespeed-bench --bin wirespeed --bin packet-rate)
fi
seq_csv() { local from=$1 n=$2 i out=""; for ((i = from; i < from + n; i++)); do out+="${out:+,}$i"; done; echo "$out"; }

# link W: the namespaces and a veth pair with W queues each way; generator
# CPU W+i transmits on queue i, which lands on receive queue i.
link() {
    local w=$1 i
    ip netns add "$NS_A"; ip netns add "$NS_B"
    ip link add "$VETH_A" netns "$NS_A" numtxqueues "$w" numrxqueues "$w" type veth \
        peer name "$VETH_B" netns "$NS_B" numtxqueues "$w" numrxqueues "$w"
    ip -n "$NS_A" addr add "$ADDR_A/24" dev "$VETH_A"
    ip -n "$NS_B" addr add "$ADDR_B/24" dev "$VETH_B"
    for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_A" link set "$VETH_A" up; ip -n "$NS_B" link set "$VETH_B" up
    for ((i = 0; w > 1 && i < w; i++)); do
        ip netns exec "$NS_B" bash -c "printf '%x' $((1 << (w + i))) >/sys/class/net/$VETH_B/queues/tx-$i/xps_cpus" 2>/dev/null || true
    done
}

unlink() {
    for ns in "$NS_A" "$NS_B"; do ip netns del "$ns" 2>/dev/null || true; done
    sleep 0.2
}

# KEEP_LOGS=DIR keeps each daemon's log there.
stop() {
    kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""
    if [ -n "${KEEP_LOGS:-}" ]; then
        for f in "$LOG"/*.log; do cat "$f" >>"$KEEP_LOGS/$(basename "$f")"; done
    fi
    rm -f "$LOG"/*.log
}

# wait_iface NAME: waits for the TUN to appear and its owner to be running.
wait_iface() {
    local i
    for i in $(seq 100); do ip -n "$NS_A" link show "$1" >/dev/null 2>&1 && break; sleep 0.05; done
    sleep 0.3
    if ! kill -0 "$PID" 2>/dev/null || ! ip -n "$NS_A" link show "$1" >/dev/null 2>&1; then
        echo "$1 did not come up:" >&2; cat "$LOG"/*.log >&2 || true; return 1
    fi
}

# generate W SIZE TUN WATCH_PID WATCH_PREFIX [UAPI]: prints delivered Mpps,
# offered Mpps and the CPUs' worth of time the receiving threads used.
generate() {
    local w=$1 size=$2 tun=$3 pid=$4 prefix=$5 uapi=${6:-} count
    count=${COUNT:-$([ "$size" -le 256 ] && echo 4000000 || echo 1500000)}
    ip netns exec "$NS_A" "$BIN" generate \
        --counter "/sys/class/net/$tun/statistics/rx_packets" --netns "/var/run/netns/$NS_B" \
        --target "$ADDR_A:$PORT" --bind "$ADDR_B" --peers "$w" --size "$size" \
        --count "$count" --cpus "$(seq_csv "$w" "$w")" ${uapi:+--uapi "$uapi"} \
        --watch-pid "$pid" --watch-threads "$prefix" \
        --warmup-ms 500 --duration-ms 3000 >"$LOG/gen.out" 2>"$LOG/gen.err" \
        || { cat "$LOG/gen.err" "$LOG"/*.log >&2 || true; echo 0 0 0; return; }
    sed -n 's/.*delivered_mpps=\([0-9.]*\).*offered_mpps=\([0-9.]*\).*busy_cores=\([0-9.]*\).*/\1 \2 \3/p' "$LOG/gen.out"
}

ceiling_io() {
    local w=$1 size=$2
    ip netns exec "$NS_A" "$BIN" forward --iface "$VETH_A" --tun "$TUN_FWD" --port "$PORT" \
        --cpus "$(seq_csv 0 "$w")" >"$LOG/fwd.log" 2>&1 &
    PID=$!
    wait_iface "$TUN_FWD"
    generate "$w" "$size" "$TUN_FWD" "$PID" fwd-
    stop
}

through_wirespeed() {
    local w=$1 size=$2
    ip netns exec "$NS_A" "$WIRESPEED" -f --backend xdp --workers "$w" "$TUN_WS" >"$LOG/ws.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do [ -S "/var/run/wireguard/$TUN_WS.sock" ] && break; sleep 0.05; done
    wait_iface "$TUN_WS"
    ip -n "$NS_A" link set "$TUN_WS" up
    local cap=""
    if [ -n "${CAPTURE:-}" ]; then
        # shellcheck disable=SC2086 # CAPTURE_ARGS is a list of options
        ip netns exec "$NS_A" "$WIRESPEED" capture "$TUN_WS" -w /dev/null ${CAPTURE_ARGS:-} \
            2>"$LOG/capture.err" &
        cap=$!
        for _ in $(seq 100); do grep -q "listening on" "$LOG/capture.err" 2>/dev/null && break; sleep 0.05; done
    fi
    generate "$w" "$size" "$TUN_WS" "$PID" worker- "/var/run/wireguard/$TUN_WS.sock"
    if [ -n "$cap" ]; then
        kill -INT "$cap" 2>/dev/null || true; wait "$cap" 2>/dev/null || true
        sed 's/^/  capture: /' "$LOG/capture.err" >&2
    fi
    stop
}

# Mpps openssl seals at SIZE on one core.
ceiling_crypto() {
    openssl speed -evp chacha20-poly1305 -bytes "$1" -seconds 2 2>/dev/null \
        | awk -v s="$1" '/^[Cc]ha[Cc]ha20-[Pp]oly1305/ { v = $NF; sub(/k$/, "", v); printf "%.4f\n", v * 1000 / s / 1e6 }'
}

# Per core: delivered Mpps divided by the CPUs the receiving threads were
# busy, i.e. what one saturated worker does when the generators (which also
# pay for the veth and XDP copy) cannot saturate it.
per_core() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "0" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

printf '%-3s %5s | %-26s | %-26s | %-9s | %s\n' "" "" "wirespeed AF_XDP" "no-crypto forwarder" "openssl" "wirespeed per core vs"
printf '%-3s %5s | %6s %6s %5s %7s | %6s %6s %5s %7s | %9s | %5s %6s %6s\n' W size \
    Mpps offer busy "/core" Mpps offer busy "/core" "Mpps/core" "I/O" crypto lower
for w in "${WORKERS[@]}"; do
    link "$w"
    for size in $SIZES; do
        # A failed measurement (its logs go to stderr) reads as zeros.
        read -r io io_off io_busy < <(ceiling_io "$w" "$size") || true
        read -r ws ws_off ws_busy < <(through_wirespeed "$w" "$size") || true
        io=${io:-0} io_off=${io_off:-0} io_busy=${io_busy:-0}
        ws=${ws:-0} ws_off=${ws_off:-0} ws_busy=${ws_busy:-0}
        io_core=$(per_core "$io" "$io_busy"); ws_core=$(per_core "$ws" "$ws_busy")
        cr=$(ceiling_crypto "$size")
        lower=$(awk -v a="$io_core" -v b="$cr" 'BEGIN { print (a < b ? a : b) }')
        printf '%-3s %5s | %6s %6s %5s %7s | %6s %6s %5s %7s | %9s | %5s %6s %6s\n' "$w" "$size" \
            "$ws" "$ws_off" "$ws_busy" "$ws_core" "$io" "$io_off" "$io_busy" "$io_core" "$cr" \
            "$(ratio "$ws_core" "$io_core")" "$(ratio "$ws_core" "$cr")" "$(ratio "$ws_core" "$lower")"
    done
    unlink
done
echo "(Mpps delivered out of the TUN; offer: what the generators sent; busy: CPUs the"
echo " receiving threads used; /core: Mpps per busy CPU; openssl: one core at that size)"
