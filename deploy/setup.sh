#!/usr/bin/env bash
# Installs everything wirespeed's build, demo, tests and benchmarks need on a
# fresh Debian 12 machine. Idempotent: re-running only fills in what is missing.
set -euo pipefail

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: must run as root (it installs packages)" >&2
        exit 1
    fi
}
need_root

APT_PACKAGES=(
    clang llvm libbpf-dev libxdp-dev libelf-dev zlib1g-dev pkg-config m4
    iproute2 iptables iputils-ping tcpdump iperf3 netcat-openbsd procps kmod
    wireguard-tools wireguard-go openssl bpftool
    gnuplot-nox ethtool
    systemd python3-venv
    # cargo-deb (deploy/package.sh): dpkg-shlibdeps fills in the package's
    # shared-library Depends, strip, and xz compresses the archive members.
    dpkg-dev binutils xz-utils
    # deploy/test.sh lints the shell scripts (demo, benches, CI).
    shellcheck
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# boringtun is one of the interop peers; its CLI comes from crates.io.
if ! command -v boringtun-cli >/dev/null 2>&1; then
    echo "setup.sh: installing boringtun-cli 0.7.1 from crates.io"
    cargo install boringtun-cli --version 0.7.1 --locked --quiet
fi

# The Kubernetes manifests' check (deploy/ci/check-manifests.sh) validates
# against the schemas kubernetes-validate ships, offline; it lives in its
# own virtual environment, apart from the system's Python.
CI_VENV=/opt/wirespeed-ci
KV_VERSION=1.37.0
if ! "$CI_VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KV_VERSION"; then
    echo "setup.sh: installing kubernetes-validate $KV_VERSION from PyPI into $CI_VENV"
    python3 -m venv "$CI_VENV"
    "$CI_VENV/bin/pip" install --quiet "kubernetes-validate==$KV_VERSION"
fi

# The Debian package (deploy/package.sh) is built with cargo-deb, which
# package.sh installs from crates.io on first use, into the target
# directory (pinned there, whatever else the machine has).

echo "setup.sh: all prerequisites present"
