#!/usr/bin/env bash
# Runs the integration suites that bring up wirespeed tunnels with every
# interface on a data plane of its own (WIRESPEED_DATAPLANE=own, inherited
# by the daemons the tests start) instead of its namespace's host data
# plane, the default, one test at a time: the path a control takes where it
# can have no host data plane. deploy/test.sh runs it after the default
# run. Extra arguments go to cargo test (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
export WIRESPEED_DATAPLANE=own
suites=(tunnel_interop first_packet seed_topology tun_offload uapi_wg_tool
    netns_move metrics capture daemon_lifecycle planned_restart xdp_uplinks
    dataplane_sandbox device_sim)
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
