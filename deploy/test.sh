#!/usr/bin/env bash
# Runs wirespeed's whole test suite: installs what is missing (deploy/setup.sh),
# then formatting and lint checks, then every unit, property, vector and
# integration test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
