#!/usr/bin/env bash
# The Debian package as an operator meets it: build it (deploy/package.sh)
# or take the .deb given as $1, `dpkg -i` it, check what it installed (the
# binary, the man page, the wg-quick@ drop-in verified by systemd-analyze,
# wirespeed-dataplane.service installed but not enabled, wanted by the
# wg-quick@ drop-in and wirespeed@.service), bring up the
# installed example configs server1/server2 with `wg-quick up` in two
# network namespaces (keys and endpoints filled in, the environment taken
# from the installed drop-in), ping across the tunnel, take one down with
# `wg-quick down`, run the Kubernetes pod's entrypoint over the package
# (ready, then SIGTERM), start the host data plane as its unit would, then
# `dpkg -r` with it and the other interface still up: the package's
# prerm must stop them, and nothing of the package may be left running or on
# disk. Refuses to run where wirespeed is already installed; leaves the
# machine as it found it. Root, Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=/usr/sbin/wirespeed
DROPIN=/lib/systemd/system/wg-quick@.service.d/wirespeed.conf
UNIT=/lib/systemd/system/wirespeed@.service
HELPER=/usr/lib/wirespeed/wirespeed-unit
EXAMPLES=/usr/share/doc/wirespeed/examples
HOSTUNIT=/lib/systemd/system/wirespeed-dataplane.service

if dpkg-query -W -f='${Status}' wirespeed 2>/dev/null | grep -q "ok installed"; then
    echo "package-test: the wirespeed package is installed here already; not touching it" >&2
    exit 1
fi

deb=${1:-}
if [ -z "$deb" ]; then
    deb=$(bash deploy/package.sh | tail -n 1)
fi

ns1=wsp1-$$
ns2=wsp2-$$
if1=wspkg1-$$
if2=wspkg2-$$
tmp=$(mktemp -d)
installed=0
cleanup() {
    set +e
    for ns in "$ns1" "$ns2"; do
        if ip netns list | grep -q "^$ns\b"; then
            for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null; done
            ip netns del "$ns"
        fi
    done
    # Purge: not even dpkg's record of the removed package stays.
    [ "$installed" = 1 ] && dpkg -r wirespeed >/dev/null 2>&1
    dpkg-query -W wirespeed >/dev/null 2>&1 && dpkg -P wirespeed >/dev/null 2>&1
    # A daemon killed above had no chance to remove its UAPI socket or its
    # shared-memory region; the names carry our PID, so they are ours.
    rm -f "/var/run/wireguard/$if1.sock" "/var/run/wireguard/$if2.sock" \
        /run/wirespeed/*-"$if1".region /run/wirespeed/*-"$if2".region
    rm -rf "$tmp"
}
trap cleanup EXIT
# Run as a CI step, a cancelled job gets SIGTERM or SIGINT: exit so that
# the EXIT trap still takes the package and the namespaces away.
trap 'exit 143' TERM
trap 'exit 130' INT
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
passed=0
pass() {
    passed=$((passed + 1))
    echo "package-test: ok: $*"
}

# Our daemons: the processes in our namespaces running the installed binary.
ours_in() {
    for pid in $(ip netns pids "$1" 2>/dev/null); do
        case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
        "$BIN" | "$BIN (deleted)") echo "$pid" ;;
        esac
    done
}
ours() { ours_in "$ns1"; ours_in "$ns2"; }

# $auto in Cargo.toml's depends is filled in by dpkg-shlibdeps; without
# dpkg-dev cargo-deb only warns and the package would not depend on libc6.
depends=$(dpkg-deb -f "$deb" Depends)
grep -q 'libc6 (>= ' <<<"$depends" || fail "the package's Depends lack the shared libraries': $depends"
dpkg -i "$deb" >/dev/null
installed=1
pass "dpkg -i $(basename "$deb") (Depends: $depends)"
[ -x "$BIN" ] || fail "$BIN missing"
"$BIN" --version | grep -q '^wirespeed ' || fail "wirespeed --version"
man -w wirespeed | grep -q '/man8/wirespeed.8' || fail "man wirespeed finds no page"
out=$(cd "$tmp" && systemd-analyze verify --man=no wg-quick@wg0.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
[ -f "$UNIT" ] && [ -x "$HELPER" ] || fail "$UNIT or $HELPER missing"
out=$(cd "$tmp" && systemd-analyze verify --man=no wirespeed@wg0.service 2>&1) || fail "systemd-analyze verify wirespeed@: $out"
[ -z "$out" ] || fail "systemd-analyze verify wirespeed@: $out"
pass "$BIN, wirespeed(8), the wg-quick@ drop-in and wirespeed@.service (systemd-analyze verify clean)"
[ -f "$HOSTUNIT" ] || fail "$HOSTUNIT missing"
out=$(cd "$tmp" && systemd-analyze verify --man=no wirespeed-dataplane.service 2>&1) || fail "systemd-analyze verify wirespeed-dataplane: $out"
[ -z "$out" ] || fail "systemd-analyze verify wirespeed-dataplane: $out"
[ "$(systemctl is-enabled wirespeed-dataplane.service 2>/dev/null)" != enabled ] ||
    fail "wirespeed-dataplane.service enabled by the install"
# Not enabled, but pulled in by the interfaces' units, each started after it.
for f in "$DROPIN" "$UNIT"; do
    for key in Wants After; do
        grep -Eq "^$key=.*wirespeed-dataplane\.service" "$f" ||
            fail "$f: no $key=wirespeed-dataplane.service"
    done
done
pass "$HOSTUNIT (not enabled; wanted by wg-quick@ and wirespeed@, systemd-analyze verify clean)"

# Two hosts on one link; the examples' PostUp NATs out of eth0, so that is
# the link's name on both.
ip netns add "$ns1"
ip netns add "$ns2"
ip link add eth0 netns "$ns1" type veth peer name eth0 netns "$ns2"
ip -n "$ns1" addr add 192.0.2.1/24 dev eth0
ip -n "$ns2" addr add 192.0.2.2/24 dev eth0
for ns in "$ns1" "$ns2"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
done

k1=$(wg genkey) k2=$(wg genkey) kc=$(wg genkey)
# Two names: the UAPI sockets in /var/run/wireguard are not per namespace.
fill() { # EXAMPLE IFACE -> $tmp/IFACE.conf with keys and endpoints
    sed -e "s|\[server 1 private key\]|$k1|; s|\[server 2 private key\]|$k2|" \
        -e "s|\[server 1 public key\]|$(wg pubkey <<<"$k1")|" \
        -e "s|\[server 2 public key\]|$(wg pubkey <<<"$k2")|" \
        -e "s|\[client public key\]|$(wg pubkey <<<"$kc")|" \
        -e "s|wgserver1.example.com|192.0.2.1|; s|wgserver2.example.com|192.0.2.2|" \
        "$EXAMPLES/$1" >"$tmp/$2.conf"
    chmod 600 "$tmp/$2.conf"
    ! grep -q '\[.* key\]' "$tmp/$2.conf" || fail "a placeholder left in $1"
}
fill server1.conf "$if1"
fill server2.conf "$if2"

# What wg-quick@.service would run with: the drop-in's environment.
dropin_env=$(sed -n 's/^Environment=//p' "$DROPIN")
[ "$dropin_env" = WG_QUICK_USERSPACE_IMPLEMENTATION=wirespeed ] || fail "drop-in says: $dropin_env"
env "$dropin_env" ip netns exec "$ns1" wg-quick up "$tmp/$if1.conf" 2>"$tmp/up1.log" || fail "wg-quick up server1: $(cat "$tmp/up1.log")"
env "$dropin_env" ip netns exec "$ns2" wg-quick up "$tmp/$if2.conf" 2>"$tmp/up2.log" || fail "wg-quick up server2: $(cat "$tmp/up2.log")"
grep -q "userspace implementation" "$tmp/up1.log" || fail "wg-quick did not fall back to wirespeed: $(cat "$tmp/up1.log")"
[ "$(ours | wc -l)" -ge 2 ] || fail "no $BIN daemons in the namespaces"
pass "wg-quick up server1.conf and server2.conf ($(ours | wc -l) processes of $BIN)"

# server1 started first and its handshake went nowhere; the retry comes
# within 5 s (REKEY_TIMEOUT), hence the 20 s deadline.
ip netns exec "$ns1" ping -c 3 -i 0.2 -w 20 192.168.42.2 >/dev/null || fail "no ping through the tunnel"
hs=$(ip netns exec "$ns1" wg show "$if1" latest-handshakes | awk '{print $2}' | sort -n | tail -1)
[ "${hs:-0}" -gt 0 ] || fail "no handshake in wg show"
ip netns exec "$ns1" iptables -t nat -S POSTROUTING | grep -q MASQUERADE || fail "server1's PostUp did not run"
pass "ping 192.168.42.2 through the tunnel; wg show has the handshake; PostUp's MASQUERADE in place"

ip netns exec "$ns1" wg-quick down "$tmp/$if1.conf" 2>/dev/null || fail "wg-quick down server1"
! ip -n "$ns1" link show "$if1" >/dev/null 2>&1 || fail "$if1 still in $ns1 after wg-quick down"
! ip netns exec "$ns1" iptables -t nat -S POSTROUTING | grep -q MASQUERADE || fail "server1's PostDown did not run"
# The daemon sees its interface deleted and exits: give it 5 s.
for _ in $(seq 50); do
    [ -n "$(ours_in "$ns1")" ] || break
    sleep 0.1
done
[ -z "$(ours_in "$ns1")" ] || fail "daemons left in $ns1 5 s after wg-quick down: $(ours_in "$ns1")"
pass "wg-quick down server1: interface, NAT rule and daemon gone"

# The Kubernetes pod's main process (deploy/kubernetes/wirespeed-pod, what
# the image runs over this package): up, ready by the DaemonSet's probe,
# down on SIGTERM with exit 0.
ip netns exec "$ns1" deploy/kubernetes/wirespeed-pod "$tmp/$if1.conf" >"$tmp/pod.log" 2>&1 &
pod=$!
ready=0
for _ in $(seq 100); do
    if [ "$(ip netns exec "$ns1" wg show "$if1" listen-port 2>/dev/null)" = 1194 ]; then
        ready=1
        break
    fi
    sleep 0.1
done
[ "$ready" = 1 ] || fail "wirespeed-pod: the readiness probe never passed: $(cat "$tmp/pod.log")"
kill -TERM "$pod"
rc=0
wait "$pod" || rc=$?
[ "$rc" = 0 ] || fail "wirespeed-pod exited $rc on SIGTERM: $(cat "$tmp/pod.log")"
! ip -n "$ns1" link show "$if1" >/dev/null 2>&1 || fail "$if1 still there after the pod's SIGTERM"
pass "wirespeed-pod: ready by 'wg show $if1 listen-port', SIGTERM took it down, exit 0"

# The host data plane as its unit runs it (ExecStart), sandboxed, in ns1
# with a socket of its own: removing the package must stop it too.
exec_start=$(sed -n 's/^ExecStart=//p' "$HOSTUNIT")
# shellcheck disable=SC2086 # ExecStart is a command line.
ip netns exec "$ns1" env WIRESPEED_DATAPLANE_SOCKET="$tmp/host/dataplane.sock" \
    $exec_start >"$tmp/host.log" 2>&1 &
up=0
for _ in $(seq 100); do
    if grep -q "seccomp filter on" "$tmp/host.log"; then
        up=1
        break
    fi
    sleep 0.1
done
[ "$up" = 1 ] && [ -S "$tmp/host/dataplane.sock" ] ||
    fail "the host data plane did not come up sandboxed: $(cat "$tmp/host.log")"
pass "$exec_start: up, attach socket there, seccomp filter on"

# server2 and the host data plane are still up: removing the package must
# stop them.
dpkg -r wirespeed >/dev/null
installed=0
[ -z "$(ours)" ] || fail "still running after dpkg -r: $(ours)"
! ip -n "$ns2" link show "$if2" >/dev/null 2>&1 || fail "$if2 still in $ns2 after dpkg -r"
for f in "$BIN" "$DROPIN" "$UNIT" "$HELPER" "$HOSTUNIT" "/var/run/wireguard/$if1.sock" "/var/run/wireguard/$if2.sock" /usr/share/man/man8/wirespeed.8.gz "$EXAMPLES"; do
    [ ! -e "$f" ] || fail "$f left after dpkg -r"
done
pass "dpkg -r with server2 and a host data plane up: both stopped, the interface and UAPI socket gone, the package's files gone"
echo "package-test: $passed passed, 0 failed"
