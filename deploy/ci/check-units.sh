#!/usr/bin/env bash
# systemd-analyze verify on the units the package installs, offline (no
# systemd needed as PID 1). The wg-quick@ drop-in is checked in place over
# wireguard-tools' wg-quick@.service; verify only warns (exit 0) on an
# unknown key, so any output fails. A copy with a key misspelt on purpose
# must warn and name our file: that shows the drop-in is what was read.
# The native wirespeed@.service is checked the same way, with its commands
# pointed at copies here (verify insists they exist and are executable).
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

native() { # UNIT -> prints verify's output
    rm -rf "$tmp/native" && mkdir -p "$tmp/native/units" "$tmp/native/bin"
    cp deploy/systemd/wirespeed-unit "$tmp/native/bin/"
    printf '#!/bin/sh\n' >"$tmp/native/bin/wirespeed"
    chmod 755 "$tmp/native/bin/"*
    sed -e "s|/usr/sbin/wirespeed|$tmp/native/bin/wirespeed|" \
        -e "s|/usr/lib/wirespeed/wirespeed-unit|$tmp/native/bin/wirespeed-unit|" \
        "$1" >"$tmp/native/units/wirespeed@.service"
    (cd "$tmp" && SYSTEMD_UNIT_PATH="$tmp/native/units:" systemd-analyze verify --man=no \
        "wirespeed@wg0.service" 2>&1) || echo "systemd-analyze verify exited $?"
}

unit=deploy/systemd/wirespeed@.service
out=$(native "$unit")
if [ -n "$out" ]; then
    echo "check-units: $unit:" >&2
    echo "$out" >&2
    exit 1
fi
# What makes a restart hitless and a stop a full stop (see the unit).
for line in Type=notify KillMode=process KillSignal=SIGTERM RestartKillSignal=SIGUSR2 \
    'ExecStart=/usr/sbin/wirespeed --foreground %i'; do
    grep -qxF "$line" "$unit" || { echo "check-units: $unit lost $line" >&2; exit 1; }
done
sed 's/^KillMode=/KilMode=/' "$unit" >"$tmp/broken.service"
out=$(native "$tmp/broken.service")
if ! grep -q "wirespeed@.service:.*Unknown key" <<<"$out"; then
    echo "check-units: a broken wirespeed@.service went unnoticed; verify said: $out" >&2
    exit 1
fi

# The host data plane's unit, read with wg-quick@.service and the wirespeed
# drop-in (as installed), which orders wg-quick@ after it.
host_unit() { # UNIT -> prints verify's output
    rm -rf "$tmp/host" && mkdir -p "$tmp/host/units/wg-quick@.service.d" "$tmp/host/bin"
    printf '#!/bin/sh\n' >"$tmp/host/bin/wirespeed"
    chmod 755 "$tmp/host/bin/wirespeed"
    sed -e "s|/usr/sbin/wirespeed|$tmp/host/bin/wirespeed|" "$1" \
        >"$tmp/host/units/wirespeed-dataplane.service"
    cp "$base" "$tmp/host/units/"
    cp deploy/systemd/wg-quick-wirespeed.conf "$tmp/host/units/wg-quick@.service.d/wirespeed.conf"
    (cd "$tmp" && SYSTEMD_UNIT_PATH="$tmp/host/units:" systemd-analyze verify --man=no \
        wirespeed-dataplane.service "wg-quick@wg0.service" 2>&1) \
        || echo "systemd-analyze verify exited $?"
}
hunit=deploy/systemd/wirespeed-dataplane.service
out=$(host_unit "$hunit")
if [ -n "$out" ]; then
    echo "check-units: $hunit or wg-quick-wirespeed.conf:" >&2
    echo "$out" >&2
    exit 1
fi
for line in 'ExecStart=/usr/sbin/wirespeed --host-dataplane' Type=notify; do
    grep -qxF "$line" "$hunit" || { echo "check-units: $hunit lost $line" >&2; exit 1; }
done
# Every interface unit starts after it and pulls it in: started from the
# interface's own unit instead, it would die with that unit's cgroup.
for f in deploy/systemd/wg-quick-wirespeed.conf "$unit"; do
    for key in Wants After; do
        grep -Eq "^$key=.*wirespeed-dataplane\.service" "$f" ||
            { echo "check-units: $f has no $key=wirespeed-dataplane.service" >&2; exit 1; }
    done
done
sed 's/^Restart=/Restat=/' "$hunit" >"$tmp/broken-host.service"
out=$(host_unit "$tmp/broken-host.service")
if ! grep -q "wirespeed-dataplane.service:.*Unknown key" <<<"$out"; then
    echo "check-units: a broken wirespeed-dataplane.service went unnoticed; verify said: $out" >&2
    exit 1
fi
echo "check-units: wg-quick@.service + wirespeed drop-ins, wirespeed@.service, wirespeed-dataplane.service verified"
