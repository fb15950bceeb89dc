#!/usr/bin/env bash
# Runs the integration suites that bring up wirespeed tunnels with every
# interface on a data plane of its own (WIRESPEED_DATAPLANE=own, inherited
# by the daemons the tests start) instead of its namespace's host data
# plane, the default, one test at a time: the path a control takes where it
# can have no host data plane. OWN_SUITES="a b" runs only those suites:
# deploy/test.sh runs the ones that exercise a data plane of one's own
# (its supervision, restarts, sandbox and attacher, AF_XDP uplinks,
# namespace moves, metrics) after the default run, and leaves the
# interop matrix (tunnel_interop, 6-7 minutes here) to a run of this
# script by hand. Extra arguments go to cargo test (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
export WIRESPEED_DATAPLANE=own
all="tunnel_interop first_packet seed_topology tun_offload uapi_wg_tool
    netns_move metrics capture daemon_lifecycle planned_restart xdp_uplinks
    dataplane_sandbox device_sim"
read -r -a suites <<<"$(echo ${OWN_SUITES:-$all})"
failed=()
for s in "${suites[@]}"; do
    echo "== $s (a data plane per interface)"
    cargo test -p wirespeed-control --locked --test "$s" "$@" -- --test-threads=1 ||
        failed+=("$s")
done
if ((${#failed[@]})); then
    echo "failed with a data plane per interface: ${failed[*]}"
    exit 1
fi
