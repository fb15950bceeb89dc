#!/usr/bin/env bash
# End-to-end bench: iperf3 TCP and UDP through wirespeed (AF_XDP and UDP
# backends), wireguard-go and boringtun tunnels between two network
# namespaces, each next to the bare veth link measured in the same run.
# Prints Gbit/s received and the ratio to bare veth. Each figure is the
# median of REPEAT runs (default 3): on a small shared machine one run of
# the UDP test swings by a factor of two.
#
#   [REPEAT=N] bench/scripts/tunnel-bench.sh [SECONDS] [IMPL...]
set -euo pipefail
SECS=${1:-10}; shift || true
IMPLS=("$@"); [ ${#IMPLS[@]} -gt 0 ] || IMPLS=(wirespeed-xdp wirespeed-udp wireguard-go boringtun)
. "$(dirname "$0")/tunnel-lib.sh"
trap tl_cleanup EXIT
# Built every run unless WIRESPEED names a binary: an old build would
# measure old code.
[ -n "$WIRESPEED_GIVEN" ] || (cd "$ROOT" && cargo build --release -q -p wirespeed-control)
tl_link
# UDP: unlimited rate, datagrams that fit the tunnel's 1420-byte MTU.
UDP_ARGS=(-u -b 0 -l 1380)
REPEAT=${REPEAT:-3}
# median ADDR [iperf3 args]: the median Gbit/s of REPEAT runs.
median() {
    local i runs=()
    for ((i = 0; i < REPEAT; i++)); do runs+=("$(tl_iperf "$1" "$SECS" "${@:2}")"); done
    printf '%s\n' "${runs[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
bare=$(median "$UNDER_B")
bare_u=$(median "$UNDER_B" "${UDP_ARGS[@]}")
ratio() { python3 -c "print(f'{$1 / $2:.3f}' if $2 else 'n/a')"; }
printf '%-14s %10s %10s   %s\n' "" "TCP Gbit/s" "UDP Gbit/s" "ratio to bare veth (TCP / UDP)"
printf '%-14s %10s %10s   %s\n' "bare veth" "$bare" "$bare_u" "1.000 / 1.000"
n=0
for impl in "${IMPLS[@]}"; do
    n=$((n + 1))
    tl_tunnel "$impl" "$impl" "$n"
    g=$(median "$TUN_B")
    u=$(median "$TUN_B" "${UDP_ARGS[@]}")
    printf '%-14s %10s %10s   %s / %s\n' "$impl" "$g" "$u" "$(ratio "$g" "$bare")" "$(ratio "$u" "$bare_u")"
    tl_stop_tunnel
done
