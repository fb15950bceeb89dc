//! The talk's "Containers" slide: the WireGuard interface is created in one
//! namespace (the host's, with the underlay) and moved into another (a
//! container's); its UDP socket (and, with AF_XDP, the XDP program and the
//! AF_XDP queues) stays where the interface was created. The kernel module
//! and wireguard-go do this, and so must wirespeed, on both backends,
//! against wireguard-go and boringtun peers.
//!
//! Each scenario: a tunnel A (wirespeed, namespace "outer" with its veth)
//! <-> B (the peer); A's interface moved into a fresh namespace "inner";
//! addresses set there; `wg` run inside "inner" reaches the UAPI socket; a
//! TCP transfer inner -> B with SHA-256 checked on both ends; the underlay
//! still in "outer"; the data plane killed and restarted while the
//! interface is away; the interface moved back and away again with a ping
//! each time; finally deleted inside "inner", and the daemon and its data
//! plane gone within a few seconds.
//!
//! Needs root; WIRESPEED_SKIP_NETNS=1 skips. WIRESPEED_PAIRINGS selects.

mod common;

use std::path::Path;
use std::time::Duration;

use common::impls::sock_path;
use common::tunnel::UNDERLAY_IF;
use common::util::running as alive;
use common::util::{self, wait_until};
use common::{assert_ping, for_each_pairing, tcp_transfer, Impl, Netns, Tunnel};
use Impl::{Boringtun, WireguardGo, Wirespeed, WirespeedUdp, WirespeedUdpOffload};

const PAIRINGS: &[(Impl, Impl, bool)] = &[
    (Wirespeed, WireguardGo, true),
    (Wirespeed, Boringtun, true),
    (WirespeedUdp, WireguardGo, true),
    (WirespeedUdp, Boringtun, true),
    (WirespeedUdpOffload, WireguardGo, true),
];

const MIB: u64 = 1 << 20;

/// The pid of the data plane the daemon's log names last.
fn dataplane_pid(log: &str) -> Option<u32> {
    log.lines()
        .rev()
        .filter_map(|l| {
            let (_, rest) = l
                .split_once("data plane pid ")
                .or_else(|| l.split_once("data plane restarted, pid "))
                // WIRESPEED_DATAPLANE=host: the host data plane serves it.
                .or_else(|| l.split_once("attached to the host data plane, pid "))?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .next()
}

/// What the tunnel's own configuration did in A's namespace, done where the
/// interface is now (a move takes it down and drops its addresses).
fn bring_up(ns: &Netns, iface: &str) {
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", iface]);
    ns.ip(&["link", "set", "dev", iface, "mtu", "1420", "up"]);
}

/// UDP ports with a socket bound in `ns`.
fn udp_ports(ns: &Netns) -> String {
    ns.exec(&["ss", "-Hulnp"])
}

#[test]
fn interface_moved_into_a_container_namespace() {
    for_each_pairing(
        "interface_moved_into_a_container_namespace",
        PAIRINGS,
        scenario,
    );
}

fn scenario(a: Impl, b: Impl) {
    // Declared first, dropped last: the daemon goes before its namespaces.
    let inner = Netns::new();
    let mut t = Tunnel::new(a, b);
    let iface = t.a.iface.clone();
    let outer_name = t.a.ns.name().to_string();
    if a == Wirespeed {
        assert!(
            t.a.wait_xdp_on(UNDERLAY_IF, Duration::from_secs(5)),
            "no XDP on the underlay before the move; log:\n{}",
            t.a.daemon.log()
        );
    }
    let first_dp = dataplane_pid(&t.a.daemon.log()).expect("data plane pid in the log");

    t.a.ns.ip(&["link", "set", &iface, "netns", inner.name()]);
    assert!(!t.a.ns.has_link(&iface));
    assert!(inner.has_link(&iface));
    // Control looks every 0.5 s, the data plane every 1 s: both have looked.
    std::thread::sleep(Duration::from_millis(2500));
    t.a.daemon.assert_running();
    assert!(alive(first_dp), "the data plane ended on the move");
    assert!(
        !t.a.daemon.log().contains("deleted"),
        "a move taken for a deletion; log:\n{}",
        t.a.daemon.log()
    );

    bring_up(&inner, &iface);
    // `wg` inside the container's namespace reaches the UAPI socket (the
    // filesystem is not per network namespace) and lists the interface.
    let listed = inner.exec(&["wg", "show", "interfaces"]);
    assert!(listed.split_whitespace().any(|i| i == iface), "{listed}");
    let dump = t.a.daemon.dump(&inner);
    assert_eq!(dump.listen_port, 51820);
    assert_eq!(dump.peers.len(), 1);
    assert_eq!(dump.peers[0].public_key, t.b.keys.public);
    // The underlay stays where the interface was created.
    assert!(
        udp_ports(&t.a.ns).contains(":51820"),
        "{}",
        udp_ports(&t.a.ns)
    );
    assert!(
        !udp_ports(&inner).contains(":51820"),
        "{}",
        udp_ports(&inner)
    );
    if a == Wirespeed {
        let link = t.a.ns.ip(&["link", "show", UNDERLAY_IF]);
        assert!(link.contains("xdp"), "XDP left the underlay: {link}");
    }

    // Traffic from the container, both ways.
    let r = tcp_transfer(&inner, &t.b.ns, t.b.tunnel_addr(5201), 16 * MIB);
    eprintln!(
        "  {a} (moved) -> {b}: {} bytes at {:.0} Mbit/s, SHA-256 equal",
        r.bytes_received,
        r.mbit_per_s()
    );
    tcp_transfer(&t.b.ns, &inner, t.a.tunnel_addr(5202), 4 * MIB);

    // A data plane that dies while the interface is away gets its queues
    // from control, opened in the namespace the interface lives in.
    util::signal(first_dp, util::SIGKILL);
    let restarted = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        dataplane_pid(&t.a.daemon.log()).is_some_and(|p| p != first_dp)
    });
    assert!(
        restarted,
        "data plane not restarted; log:\n{}",
        t.a.daemon.log()
    );
    assert_ping(&inner, "10.9.0.2", 3);
    assert_ping(&t.b.ns, "10.9.0.1", 3);

    // Back home and away again.
    inner.ip(&["link", "set", &iface, "netns", &outer_name]);
    bring_up(&t.a.ns, &iface);
    assert_ping(&t.a.ns, "10.9.0.2", 3);
    t.a.ns.ip(&["link", "set", &iface, "netns", inner.name()]);
    bring_up(&inner, &iface);
    assert_ping(&inner, "10.9.0.2", 3);
    t.a.daemon.assert_running();
    let dp = dataplane_pid(&t.a.daemon.log()).unwrap();

    // Deleted where it lives now: the daemon and its data plane end.
    inner.ip(&["link", "del", &iface]);
    let ended = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        !t.a.daemon.running()
    });
    assert!(
        ended,
        "daemon still running 5 s after the interface was deleted; log:\n{}",
        t.a.daemon.log()
    );
    assert!(
        wait_until(
            Duration::from_secs(5),
            Duration::from_millis(50),
            || !alive(dp)
        ),
        "data plane {dp} outlived its interface"
    );
    assert!(t.a.daemon.log().contains("interface deleted; exiting"));
    assert!(
        !Path::new(&sock_path(&iface)).exists(),
        "UAPI socket left behind"
    );
}

/// A control process restarted while the interface is away finds it
/// through its data plane (not by name, which is gone from its namespace),
/// resumes the session, and still restarts a data plane that dies.
#[test]
fn restarted_control_finds_the_moved_interface() {
    let Some(_serial) = common::netns_test("restarted_control_finds_the_moved_interface") else {
        return;
    };
    let inner = Netns::new();
    let mut t = Tunnel::new(WirespeedUdp, WireguardGo);
    let iface = t.a.iface.clone();
    t.a.ns.ip(&["link", "set", &iface, "netns", inner.name()]);
    bring_up(&inner, &iface);
    assert_ping(&inner, "10.9.0.2", 2);
    let dp = dataplane_pid(&t.a.daemon.log()).unwrap();

    util::signal(t.a.daemon.pid(), util::SIGKILL);
    // Reaps it and removes the socket it left.
    t.a.daemon.stop();
    assert!(alive(dp), "the data plane outlives control");
    assert_ping(&inner, "10.9.0.2", 2);

    t.a.daemon = WirespeedUdp.start_away(&t.a.ns, &iface, &inner);
    // The configuration comes back through UAPI, here from the container.
    let dir = util::TempDir::new();
    let conf = dir.write(
        "wg.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.9.0.2/32\nEndpoint = 10.0.0.2:51821\n",
            t.a.keys.private, t.b.keys.public
        ),
    );
    inner.exec(&["wg", "setconf", &iface, conf.to_str().unwrap()]);
    let log = t.a.daemon.log();
    assert!(log.contains("re-attached"), "{log}");
    assert!(log.contains("1 session(s) resumed"), "{log}");
    assert_ping(&inner, "10.9.0.2", 3);
    assert_ping(&t.b.ns, "10.9.0.1", 3);

    // Its queue, taken over from the data plane, opens the next one's.
    util::signal(dp, util::SIGKILL);
    let restarted = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        t.a.daemon.log().contains("data plane restarted")
    });
    assert!(restarted, "log:\n{}", t.a.daemon.log());
    assert_ping(&inner, "10.9.0.2", 3);

    inner.ip(&["link", "del", &iface]);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            !t.a.daemon.running()
        }),
        "log:\n{}",
        t.a.daemon.log()
    );
}
