#!/usr/bin/env bash
# Runs wirespeed's whole test suite: installs what is missing (deploy/setup.sh),
# then formatting and lint checks, then every unit, property, vector and
# integration test in the workspace. The Debian package's own test (a release
# build, dpkg -i, wg-quick up/down, dpkg -r) is deploy/package-test.sh, run
# apart: it takes minutes more than these checks.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== rust-version, systemd units, Kubernetes manifests"
bash deploy/ci/check-msrv.sh
bash deploy/ci/check-units.sh
bash deploy/ci/check-manifests.sh

echo "== cargo test"
cargo test --workspace --locked
