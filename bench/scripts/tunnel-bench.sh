#!/usr/bin/env bash
# End-to-end bench: iperf3 TCP through wirespeed, wireguard-go and boringtun
# tunnels between two network namespaces, each next to the bare veth link
# measured in the same run. Prints Gbit/s and the ratio to bare veth.
#
#   bench/scripts/tunnel-bench.sh [SECONDS] [IMPL...]
set -euo pipefail
SECS=${1:-10}; shift || true
IMPLS=("$@"); [ ${#IMPLS[@]} -gt 0 ] || IMPLS=(wirespeed-xdp wirespeed-udp wireguard-go boringtun)
. "$(dirname "$0")/tunnel-lib.sh"
trap tl_cleanup EXIT
[ -x "$WIRESPEED" ] || (cd "$ROOT" && cargo build --release -q -p wirespeed-control)
tl_link
bare=$(tl_iperf "$UNDER_B" "$SECS")
printf '%-14s %8s Gbit/s   %s\n' "bare veth" "$bare" "1.00"
n=0
for impl in "${IMPLS[@]}"; do
    n=$((n + 1))
    tl_tunnel "$impl" "$impl" "$n"
    g=$(tl_iperf "$TUN_B" "$SECS")
    ratio=$(python3 -c "print(f'{$g / $bare:.3f}' if $bare else 'n/a')")
    printf '%-14s %8s Gbit/s   %s of bare veth\n' "$impl" "$g" "$ratio"
    tl_stop_tunnel
done
