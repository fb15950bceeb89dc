#!/usr/bin/env bash
# The workspace's rust-version must be true: no dependency in Cargo.lock
# (dev ones included: the tests are part of what must build) declares a
# newer one. Takes a second, so CI runs it. `cargo clippy` then holds the
# code itself to it (clippy::incompatible_msrv: no std API newer than
# rust-version). The real proof, a build with that toolchain, takes minutes
# on the CI machine; it runs when asked:
#   WIRESPEED_MSRV_BUILD=1 deploy/ci/check-msrv.sh   (rustup toolchain install MSRV first)
set -euo pipefail
cd "$(dirname "$0")/../.."

msrv=$(cargo metadata --format-version 1 --locked --offline | python3 deploy/ci/msrv.py)

if [ "${WIRESPEED_MSRV_BUILD:-0}" = 1 ]; then
    echo "check-msrv: cargo +$msrv check --workspace --all-targets --locked"
    CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/msrv cargo "+$msrv" check --workspace --all-targets --locked
fi
