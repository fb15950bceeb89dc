//! Integration-test harness: real WireGuard implementations (wireguard-go,
//! boringtun, wirespeed) in network namespaces, joined by veths, configured
//! with the real `wg` / `wg-quick`, checked with ping, TCP transfers hashed on
//! both ends, `wg show` counters, interface counters and tcpdump.
//!
//! Every netns test starts with
//!
//! ```ignore
//! let Some(_serial) = common::netns_test("name") else { return };
//! ```
//!
//! which fails the test with a clear message when not root (or prints a
//! SKIPPED line and returns None when WIRESPEED_SKIP_NETNS=1), and holds a
//! process-wide lock so the netns tests of one binary run one at a time (two
//! cores: parallel transfers would make timings and drop counts flaky).
//! [`for_each_pairing`] / [`for_each_impl`] do that and run a scenario per
//! entry of a const list, each isolated with catch_unwind.
//!
//! Data planes (issue 11): every wirespeed daemon a test starts inherits the
//! test's environment (nothing here clears it; `Impl::env` sets only the
//! backend and offloads), so by default it attaches its interface to the
//! host data plane of its namespace, started on demand and gone with the
//! namespace's last tenant (or killed with the namespace by `Netns`'s drop).
//! `deploy/test-own-dataplane.sh` runs the tunnel suites again with
//! `WIRESPEED_DATAPLANE=own` exported: a data plane per interface.
//!
//! The pieces, bottom up:
//! * [`netns::Netns`]: `Netns::new()` (name `ws<pid>n<k>`, lo up, deleted
//!   with everything still running inside on drop); `cmd`/`exec`/`try_exec`/
//!   `sh` (through `ip netns exec`), `ip` (`ip -n`), `sysctl`, `set_hosts`
//!   (/etc/netns/NAME/hosts), `enter(|| ..)` runs a closure on a thread
//!   inside the namespace, `tcp_listener`/`tcp_connect`/`udp_socket` create
//!   sockets there. `netns::veth`, `netns::bridge`, `netns::attach` wire
//!   namespaces (IPv6 off on the underlay).
//! * [`impls::Impl`] `{WireguardGo, Boringtun, Wirespeed}`: `start(&ns,
//!   iface)` runs it in the foreground in `ns` and waits for the UAPI socket
//!   and the interface; the returned [`impls::Daemon`] has `configure(&ns,
//!   &IfaceConf)` (`wg set` + `ip addr` + MTU 1420 + up), `set_peer`,
//!   `wg_set`, `dump`, `showconf`, `log`, `assert_running`; SIGTERM on drop,
//!   log printed if the test failed. `Keys::generate()`, `impls::genpsk()`.
//!   Quirks are methods: `counting()`, `can_modify_peers()`,
//!   `needs_rebind_after_address_change()`, `env()`.
//! * [`tunnel::Tunnel`]: `Tunnel::new(a, b)` / `Tunnel::with(a, b,
//!   TunnelOpts{..})`: A 10.0.0.1:51820 / tunnel 10.9.0.1 <-> B
//!   10.0.0.2:51821 / 10.9.0.2, `veth0` on each side to a bridge in a third
//!   namespace (`t.wire`, captures: `t.capture(filter)`), each side
//!   allowing the other's /32.
//!   `Side` (t.a, t.b): `ns`, `daemon`, `keys`, `iface`, `peer()`,
//!   `tun_stats()`, `underlay_stats()`, `drops()`, `endpoint()`,
//!   `tunnel_addr(port)`, `update_peer(|p| ..)`. `Tunnel::check_counters()`,
//!   `quiesce()`, `wait_handshake()`.
//! * [`checks`] module: `ping`/`ping_with`/`assert_ping`/`assert_no_ping`,
//!   `tcp_transfer` and `TcpTransfer` (random bytes, SHA-256 both ends,
//!   progress, what address the receiver saw), `parse_dump` (`wg show
//!   dump`), `uapi_request`/`uapi_get`/`parse_uapi_get`, `iface_stats`,
//!   `udp_stats`, `Capture` (tcpdump; `wg_filter(type, len)`), `udp_blast`,
//!   `Iperf3Server`/`iperf3_client`.
//! * [`wgquick::WgQuick`]: `wg-quick up|down` for an implementation, with a
//!   resolvconf stub.
//!
//! Environment: WIRESPEED_SKIP_NETNS=1 skips; WIRESPEED_PAIRINGS=all (or a
//! comma list of `a-b` pairings / implementation names) runs disabled
//! entries; WIRESPEED_TEST_VERBOSE=1 prints timings and counters;
//! WIRESPEED_KEEP_TMP=1 keeps key files and daemon logs. Daemon logs are
//! printed when a test fails.
#![allow(dead_code)]

pub mod checks;
pub mod impls;
pub mod netns;
pub mod privileges;
pub mod tunnel;
pub mod util;
pub mod wgquick;

use std::sync::{Mutex, MutexGuard};

#[allow(unused_imports)]
pub use checks::*;
#[allow(unused_imports)]
pub use impls::{Daemon, IfaceConf, Impl, Keys, PeerConf};
#[allow(unused_imports)]
pub use netns::Netns;
#[allow(unused_imports)]
pub use tunnel::{Side, Tunnel, TunnelOpts};

static SERIAL: Mutex<()> = Mutex::new(());

/// The programs the harness runs besides the implementations.
const TOOLS: &[&str] = &["ip", "wg", "ping", "tcpdump", "ss", "sysctl", "bash"];

/// Gate for a netns test; see the module docs. The guard serialises the
/// netns tests of this binary (a poisoned lock from a failed test is fine).
pub fn netns_test(test: &str) -> Option<MutexGuard<'static, ()>> {
    if std::env::var("WIRESPEED_SKIP_NETNS").as_deref() == Ok("1") {
        // Straight to fd 2: libtest captures eprintln! of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED {test}: WIRESPEED_SKIP_NETNS=1, network-namespace test NOT RUN !!!!!!!!\n"
        );
        return None;
    }
    if !util::is_root() {
        panic!(
            "{test}: the netns integration tests must run as root (they create network \
             namespaces, veths and TUN devices). Run as root, or set WIRESPEED_SKIP_NETNS=1 \
             to skip them explicitly."
        );
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| util::which(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{test}: programs missing from PATH: {missing:?}"
    );
    Some(
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// Selects the pairings to run from a test file's const list of
/// `(A, B, enabled)`: the enabled ones, or, when WIRESPEED_PAIRINGS is set,
/// exactly those it names (`all`, or a comma list like
/// `wirespeed-wireguard-go,wireguard-go-boringtun`; disabled ones included).
pub fn select_pairings(list: &[(Impl, Impl, bool)]) -> Vec<(Impl, Impl)> {
    let want = std::env::var("WIRESPEED_PAIRINGS").ok();
    list.iter()
        .filter(|(a, b, on)| match &want {
            None => *on,
            Some(w) => {
                let name = format!("{a}-{b}");
                w.split(',').any(|x| x.trim() == "all" || x.trim() == name)
            }
        })
        .map(|&(a, b, _)| (a, b))
        .collect()
}

/// Like [`select_pairings`] for a const list of single implementations
/// `(impl, enabled)`; WIRESPEED_PAIRINGS entries match the impl's name.
pub fn select_impls(list: &[(Impl, bool)]) -> Vec<Impl> {
    let want = std::env::var("WIRESPEED_PAIRINGS").ok();
    list.iter()
        .filter(|(i, on)| match &want {
            None => *on,
            Some(w) => w
                .split(',')
                .any(|x| x.trim() == "all" || x.trim() == i.name()),
        })
        .map(|&(i, _)| i)
        .collect()
}

/// [`for_each_pairing`] for a list of single implementations.
pub fn for_each_impl(test: &str, list: &[(Impl, bool)], scenario: fn(Impl)) {
    let Some(_serial) = netns_test(test) else {
        return;
    };
    let selected = select_impls(list);
    let mut failed = vec![];
    for (i, _) in list.iter().filter(|(i, _)| !selected.contains(i)) {
        eprintln!("[{test}] {i}: disabled (WIRESPEED_PAIRINGS=all runs it)");
    }
    for i in selected {
        let t = std::time::Instant::now();
        let r = std::panic::catch_unwind(|| scenario(i));
        let verdict = if r.is_ok() { "ok" } else { "FAILED" };
        eprintln!(
            "[{test}] {i}: {verdict} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        if r.is_err() {
            failed.push(i.name());
        }
    }
    assert!(
        failed.is_empty(),
        "{test} failed for: {}",
        failed.join(", ")
    );
}

/// Runs `scenario` for every selected pairing, each isolated with
/// catch_unwind (its namespaces and daemons are torn down by Drop), then
/// fails listing the pairings that failed.
pub fn for_each_pairing(test: &str, list: &[(Impl, Impl, bool)], scenario: fn(Impl, Impl)) {
    let Some(_serial) = netns_test(test) else {
        return;
    };
    let pairs = select_pairings(list);
    for (a, b, on) in list {
        if !on && !pairs.contains(&(*a, *b)) {
            eprintln!("[{test}] {a} <-> {b}: disabled (WIRESPEED_PAIRINGS=all runs it)");
        }
    }
    let mut failed = vec![];
    for (a, b) in pairs {
        let t = std::time::Instant::now();
        let r = std::panic::catch_unwind(|| scenario(a, b));
        let verdict = if r.is_ok() { "ok" } else { "FAILED" };
        eprintln!(
            "[{test}] {a} <-> {b}: {verdict} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        if r.is_err() {
            failed.push(format!("{a} <-> {b}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{test} failed for: {}",
        failed.join(", ")
    );
}

#[cfg(test)]
mod parser_tests {
    use super::checks::*;

    #[test]
    fn parses_wg_dump() {
        let text = "cHJpdg==\tcHVi\t51820\toff\n\
                    UEVFUg==\t(none)\t10.0.0.2:51821\t10.9.0.2/32,10.9.1.0/24\t1795629083\t440\t532\t25\n\
                    UEVFUjI=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n";
        let d = parse_dump(text).unwrap();
        assert_eq!(d.listen_port, 51820);
        assert_eq!(d.fwmark, None);
        assert_eq!(d.peers.len(), 2);
        let p = &d.peers[0];
        assert_eq!(p.endpoint.as_deref(), Some("10.0.0.2:51821"));
        assert_eq!(p.allowed_ips, vec!["10.9.0.2/32", "10.9.1.0/24"]);
        assert_eq!(
            (p.latest_handshake, p.rx, p.tx, p.keepalive),
            (Some(1795629083), 440, 532, Some(25))
        );
        let q = &d.peers[1];
        assert_eq!(
            (q.endpoint.clone(), q.latest_handshake, q.keepalive),
            (None, None, None)
        );
        assert!(q.allowed_ips.is_empty());
        assert_eq!(
            parse_dump("(none)\t(none)\t1\t0xca6c\n").unwrap().fwmark,
            Some(51820)
        );
    }

    #[test]
    fn parses_uapi_get() {
        let g = parse_uapi_get(
            "own_public_key=00\nlisten_port=51821\npublic_key=1357606d82d333ee1d4a7ad641c0c6a89c4546549fb86b36502cd32fc3993a33\n\
             endpoint=10.0.0.1:51820\nallowed_ip=10.9.0.1/32\nlast_handshake_time_sec=35\nrx_bytes=252\ntx_bytes=253\nerrno=0\n\n",
        );
        assert_eq!(g.listen_port, Some(51821));
        assert_eq!(g.errno, Some(0));
        assert_eq!(g.peers.len(), 1);
        assert_eq!(
            g.peers[0].public_key,
            "E1dgbYLTM+4dSnrWQcDGqJxFRlSfuGs2UCzTL8OZOjM="
        );
        assert_eq!(
            (g.peers[0].handshake_sec, g.peers[0].rx, g.peers[0].tx),
            (Some(35), 252, 253)
        );
        assert_eq!(uapi_errno("errno=-22\n\n"), Some(-22));
    }

    #[test]
    fn parses_ping_and_tcpdump() {
        let s = parse_ping("3 packets transmitted, 2 received, 33% packet loss, time 402ms\n");
        assert_eq!(
            s,
            Some(PingStats {
                transmitted: 3,
                received: 2
            })
        );
        let s = parse_ping(
            "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4000ms\n",
        );
        assert_eq!(
            s,
            Some(PingStats {
                transmitted: 5,
                received: 0
            })
        );
        let p = parse_tcpdump_line(
            "1700000000.123456 IP 10.0.0.1.51820 > 10.0.0.2.51821: UDP, length 32",
        )
        .unwrap();
        assert_eq!(
            (p.src.to_string(), p.dst.to_string(), p.len),
            ("10.0.0.1:51820".into(), "10.0.0.2:51821".into(), 32)
        );
        assert!((p.time - 1_700_000_000.123456).abs() < 1e-6);
    }

    #[test]
    fn wg_filter_shape() {
        assert_eq!(
            wg_filter(4, Some(32)),
            "udp and udp[8] = 4 and udp[9:2] = 0 and udp[11] = 0 and udp[4:2] = 40"
        );
    }
}
