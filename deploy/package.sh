#!/usr/bin/env bash
# Builds the Debian package target/debian/wirespeed_VERSION-1_ARCH.deb (in
# $CARGO_TARGET_DIR/debian when that is set) with cargo-deb, installing
# cargo-deb from crates.io first if it is missing. Prints the package's path
# last. Needs what deploy/setup.sh installs (clang and libbpf for the XDP
# program).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    echo "package.sh: installing cargo-deb $CARGO_DEB_VERSION from crates.io" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
# Release builds carry no debug info (Cargo.toml says why); --strip drops
# the symbol table as well.
out=$(cargo deb -p wirespeed-control --locked --strip 2>&1 | tee /dev/stderr | tail -n 1)
[ -f "$out" ] || { echo "package.sh: cargo deb did not say where the package is" >&2; exit 1; }
echo "$out"
