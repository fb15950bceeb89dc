#!/usr/bin/env bash
# Runs the integration suites that bring up wirespeed tunnels with every
# interface attached to its namespace's host data plane
# (WIRESPEED_DATAPLANE=host, inherited by the daemons the tests start), one
# test at a time. Not part of deploy/test.sh: host mode is opt-in, and the
# suites not listed here have not been run this way. Extra arguments go to
# cargo test (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
export WIRESPEED_DATAPLANE=host
suites=(tunnel_interop first_packet seed_topology tun_offload uapi_wg_tool
    netns_move metrics capture daemon_lifecycle planned_restart xdp_uplinks
    host_dataplane)
failed=()
for s in "${suites[@]}"; do
    echo "== $s (host data plane)"
    cargo test -p wirespeed-control --locked --test "$s" "$@" -- --test-threads=1 ||
        failed+=("$s")
done
if ((${#failed[@]})); then
    echo "failed in host mode: ${failed[*]}"
    exit 1
fi
