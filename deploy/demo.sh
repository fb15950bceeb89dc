#!/usr/bin/env bash
# The built-in demo: installs what is missing, builds wirespeed, brings up a
# wirespeed tunnel between two network namespaces, pushes traffic through
# it, shows `wg show`, and measures TCP throughput through the tunnel next
# to the bare link it runs over. Run as root.
#
#   deploy/demo.sh             one tunnel
#   deploy/demo.sh --tenants   two interfaces (tenants) on one uplink, served
#                              by one host data plane, each with its own peer
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=0
case ${1:-} in
    --tenants) TENANTS=1 ;;
    "") ;;
    *) echo "usage: $0 [--tenants]" >&2; exit 2 ;;
esac
bash deploy/setup.sh
cargo build --release -q -p wirespeed-control
. bench/scripts/tunnel-lib.sh
trap tl_cleanup EXIT
SECS=${DEMO_SECONDS:-5}
[ "$TENANTS" = 1 ] && { . deploy/demo-tenants.sh; exit 0; }

echo "== two namespaces, $NS_A ($UNDER_A) and $NS_B ($UNDER_B), joined by a veth pair"
tl_link
# Measured first: attaching XDP to a veth turns TSO off on its peer.
bare=$(tl_iperf "$UNDER_B" "$SECS")
echo "== wirespeed tunnel: $TUN_A <-> $TUN_B"
tl_tunnel wirespeed wirespeed 1
ip netns exec "$NS_A" ping -c 3 -i 0.2 "$TUN_B"
# Each data plane settles on a backend per uplink once its peer is
# configured (a fraction of a second after the start): its choice and why.
sleep 0.5
echo
echo "== backend chosen by each side"
# The host data plane chooses when it first looks up the peer's uplink
# (once a second), maybe after the first ping.
for _ in $(seq 30); do
    n=0
    for f in "$WORK"/*.log; do grep -q "backend:" "$f" && n=$((n + 1)); done
    [ "$n" -ge 2 ] && break
    sleep 0.1
done
grep -h "backend:" "$WORK"/*.log | sed 's/^/  /'
echo
echo "== wg show (side A)"
ip netns exec "$NS_A" wg show "$IF_A"
echo
echo "== TCP throughput, ${SECS}s each (iperf3)"
tun=$(tl_iperf "$TUN_B" "$SECS")
printf '  bare veth link:   %s Gbit/s\n' "$bare"
printf '  wirespeed tunnel: %s Gbit/s (%s of the bare link)\n' "$tun" \
    "$(python3 -c "print(f'{$tun / $bare:.1%}' if $bare else 'n/a')")"
echo
echo "== wg show after the transfer (side A)"
ip netns exec "$NS_A" wg show "$IF_A" transfer
