#!/usr/bin/env bash
# Builds the Debian package target/debian/wirespeed_VERSION-1_ARCH.deb (in
# $CARGO_TARGET_DIR/debian when that is set) with cargo-deb, installing
# cargo-deb from crates.io first if it is missing. Prints the package's path
# last. Needs what deploy/setup.sh installs (clang and libbpf for the XDP
# program; dpkg-dev, binutils and xz-utils for cargo-deb).
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-deb is pinned and kept in the target directory, not in ~/.cargo/bin:
# the package is built by this exact version and build of it whatever the
# machine has installed, a clean checkout (CI's) installs it once, and
# `cargo clean` takes it away with the rest. Without default features it
# skips the built-in xz (liblzma bindings) and the debug-id code: it then
# runs xz(1), and writes the same data.tar.xz Debian 12's dpkg reads. That
# halves its build (about 45 s instead of 80 s on a 2-core machine).
CARGO_DEB_VERSION=3.8.0
target=${CARGO_TARGET_DIR:-target}
tools="$target/tools/cargo-deb-$CARGO_DEB_VERSION"
cargo_deb="$tools/bin/cargo-deb"
if ! "$cargo_deb" --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    echo "package.sh: installing cargo-deb $CARGO_DEB_VERSION from crates.io into $tools" >&2
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    # Its own build directory: cargo install would otherwise build in
    # $CARGO_TARGET_DIR, when set, and leave its objects there.
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet \
        --no-default-features --root "$tools" --target-dir "$build"
fi
# Release builds carry no debug info (Cargo.toml says why); --strip drops
# the symbol table as well.
out=$("$cargo_deb" -p wirespeed-control --locked --strip 2>&1 | tee /dev/stderr | tail -n 1)
[ -f "$out" ] || { echo "package.sh: cargo deb did not say where the package is" >&2; exit 1; }
echo "$out"
