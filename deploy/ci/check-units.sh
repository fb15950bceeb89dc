#!/usr/bin/env bash
# systemd-analyze verify on the units the package installs, offline (no
# systemd needed as PID 1). The wg-quick@ drop-in is checked in place over
# wireguard-tools' wg-quick@.service; verify only warns (exit 0) on an
# unknown key, so any output fails. A copy with a key misspelt on purpose
# must warn and name our file: that shows the drop-in is what was read.
set -euo pipefail
cd "$(dirname "$0")/../.."

base=/lib/systemd/system/wg-quick@.service
[ -f "$base" ] || { echo "check-units: $base missing (wireguard-tools)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

verify() { # DROPIN -> prints verify's output
    rm -rf "$tmp/units" && mkdir -p "$tmp/units/wg-quick@.service.d"
    cp "$base" "$tmp/units/"
    cp "$1" "$tmp/units/wg-quick@.service.d/wirespeed.conf"
    (cd "$tmp" && SYSTEMD_UNIT_PATH="$tmp/units:" systemd-analyze verify --man=no \
        "wg-quick@wg0.service" 2>&1) || echo "systemd-analyze verify exited $?"
}

out=$(verify deploy/systemd/wg-quick-wirespeed.conf)
if [ -n "$out" ]; then
    echo "check-units: deploy/systemd/wg-quick-wirespeed.conf:" >&2
    echo "$out" >&2
    exit 1
fi
grep -qx 'Environment=WG_QUICK_USERSPACE_IMPLEMENTATION=wirespeed' deploy/systemd/wg-quick-wirespeed.conf \
    || { echo "check-units: the drop-in no longer names wirespeed for wg-quick" >&2; exit 1; }

sed 's/^Environment=/Environmen=/' deploy/systemd/wg-quick-wirespeed.conf > "$tmp/broken.conf"
out=$(verify "$tmp/broken.conf")
if ! grep -q "wirespeed.conf:.*Unknown key" <<<"$out"; then
    echo "check-units: a broken drop-in went unnoticed; verify said: $out" >&2
    exit 1
fi
echo "check-units: wg-quick@.service + wirespeed drop-in verified"
