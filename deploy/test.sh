#!/usr/bin/env bash
# Runs wirespeed's whole test suite: installs what is missing (deploy/setup.sh),
# then formatting and lint checks, then every unit, property, vector and
# integration test in the workspace (every interface on its namespace's host
# data plane, the default), then the suites that exercise a data plane per
# interface again that way (deploy/test-own-dataplane.sh), then the Debian
# package's round trip
# (deploy/package-test.sh: cargo-deb installed into the target directory on
# first use, a release build, dpkg -i, wg-quick up/down, dpkg -r).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== shellcheck (the demo, the bench and deploy scripts)"
shellcheck -S warning deploy/*.sh deploy/ci/*.sh bench/scripts/*.sh .ci/run

echo "== rust-version, systemd units, Kubernetes manifests"
bash deploy/ci/check-msrv.sh
bash deploy/ci/check-units.sh
bash deploy/ci/check-manifests.sh

echo "== cargo test"
cargo test --workspace --locked

# The default run attaches every interface to its namespace's host data
# plane; these suites again with a data plane per interface.
echo "== a data plane per interface (WIRESPEED_DATAPLANE=own)"
OWN_SUITES="daemon_lifecycle planned_restart dataplane_sandbox xdp_uplinks netns_move metrics" \
    bash deploy/test-own-dataplane.sh

# Last, and not beside cargo test: on two cores the release build would
# only slow the timing-sensitive tunnel tests down, and the round trip
# brings up its own wirespeed daemons. It leaves no package installed, even
# when it fails.
echo "== Debian package round trip"
bash deploy/package-test.sh
