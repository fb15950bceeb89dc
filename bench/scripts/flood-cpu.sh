#!/usr/bin/env bash
# Where the UDP flood's kernel work lands: per-CPU system+softirq jiffies
# (from /proc/stat) over one iperf3 UDP flood through each wirespeed
# backend, next to the Gbit/s it carried. A's daemon is on CPU 0 and
# sends; B's is on CPU 1 and receives (tunnel-lib.sh, PIN=1).
#
#   [ROUNDS=N] bench/scripts/flood-cpu.sh [SECONDS]
set -euo pipefail
SECS=${1:-5}
ROUNDS=${ROUNDS:-2}
. "$(dirname "$0")/tunnel-lib.sh"
trap tl_cleanup EXIT
[ -n "$WIRESPEED_GIVEN" ] || (cd "$ROOT" && cargo build --release -q -p wirespeed-control)
tl_link
# cpuN system+softirq, one line per CPU.
snap() { awk '/^cpu[0-9]/ { print $1, $4 + $8 }' /proc/stat; }
n=0
for ((r = 0; r < ROUNDS; r++)); do
    for impl in wirespeed-xdp wirespeed-udp; do
        n=$((n + 1))
        tl_tunnel "$impl" "$impl" "$n"
        before=$(snap)
        g=$(tl_iperf "$TUN_B" "$SECS" -u -b 0 -l 1380)
        after=$(snap)
        printf '%-14s %6s Gbit/s  kernel jiffies:' "$impl" "$g"
        paste <(echo "$before") <(echo "$after") | awk '{ printf " %s %d", $1, $4 - $2 }'
        echo
        tl_stop_tunnel
    done
done
