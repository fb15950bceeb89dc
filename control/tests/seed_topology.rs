//! The topology of the talk the project started from
//! (/work/shared/seed/wireguard-slides.txt): two servers and a roaming
//! client, server 1 a NAT gateway (PostUp iptables MASQUERADE), host names as
//! endpoints, brought up with `wg-quick up` from the slides' three config
//! files (real keys) for a userspace implementation, in namespaces:
//!
//! ```text
//!                    "wan" namespace: bridge br0, 198.51.100.0/24
//!      server1 (wan0 .1)      server2 (eth0 .2)      client (eth0 .100)
//!         | eth0 203.0.113.1
//!      internet (eth0 203.0.113.10): reachable from server 1 only
//! ```
//!
//! wgserver1.example.com / wgserver2.example.com resolve through
//! /etc/netns/NAME/hosts (bind-mounted over /etc/hosts by `ip netns exec`).
//! The client's `DNS = 1.1.1.1` is kept: resolvconf is a recording stub on
//! PATH (see common/wgquick.rs). The servers get net.ipv4.ip_forward=1 (the
//! slides assume a gateway host has it).
//!
//! The slides' configs route 192.168.42.1 from the client to server 2 (its
//! 192.168.42.0/24 is more specific than server 1's 0.0.0.0/0), and server 1
//! refuses 192.168.42.100 from server 2 (cryptokey routing), so the client
//! cannot reach server 1's tunnel address with them: the test checks what
//! the slides promise and the configs deliver: client <-> server 2 directly,
//! client -> internet through server 1 (NAT), server 1 <-> server 2.
//!
//! Needs root; WIRESPEED_SKIP_NETNS=1 skips; WIRESPEED_PAIRINGS=all (or
//! `wirespeed`) runs disabled implementations too.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::impls::sock_path;
use common::netns::{attach, bridge, veth};
use common::util::{unique_name, wait_until};
use common::wgquick::WgQuick;
use common::{
    assert_no_ping, assert_ping, for_each_impl, tcp_transfer, Impl, Keys, Netns, PingOpts,
};
use Impl::{Boringtun, WireguardGo, Wirespeed, WirespeedUdp};

/// (implementation, enabled); `false` takes one out of the default run
/// (WIRESPEED_PAIRINGS=all or =NAME still runs it).
const IMPLS: &[(Impl, bool)] = &[
    (Wirespeed, true),
    (WirespeedUdp, true),
    (WireguardGo, true),
    (Boringtun, true),
];

const POST_UP: &str = "PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE; iptables -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";
const POST_DOWN: &str = "PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE; iptables -D FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";

fn server1_conf(s1: &Keys, s2: &Keys, client: &Keys) -> String {
    format!(
        "[Interface]\nAddress = 192.168.42.1/24\n{POST_UP}\n{POST_DOWN}\nListenPort = 1194\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 192.168.42.2/32, 192.168.42.0/24\nEndpoint = wgserver2.example.com:1194\nPersistentKeepalive = 25\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 192.168.42.100/32\n",
        s1.private, s2.public, client.public
    )
}

fn server2_conf(s1: &Keys, s2: &Keys, client: &Keys) -> String {
    format!(
        "[Interface]\nAddress = 192.168.42.2/24\n{POST_UP}\n{POST_DOWN}\nListenPort = 1194\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 192.168.42.1/32, 192.168.42.0/24\nEndpoint = wgserver1.example.com:1194\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 192.168.42.100/32\n",
        s2.private, s1.public, client.public
    )
}

fn client_conf(s1: &Keys, s2: &Keys, client: &Keys) -> String {
    format!(
        "[Interface]\nAddress = 192.168.42.100/24\nDNS = 1.1.1.1\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0\nEndpoint = wgserver1.example.com:1194\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 192.168.42.2/32, 192.168.42.0/24\nEndpoint = wgserver2.example.com:1194\n",
        client.private, s1.public, s2.public
    )
}

/// Removes the UAPI sockets of these interfaces on drop (a daemon killed by
/// a failing test's namespace teardown may leave one behind). Declared
/// before the namespaces, so it runs after them.
struct SocketCleanup(Vec<String>);

impl Drop for SocketCleanup {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = std::fs::remove_file(sock_path(i));
        }
    }
}

fn ip4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn seed_topology(imp: Impl) {
    let (i1, i2, ic) = (unique_name("i"), unique_name("i"), unique_name("i"));
    let _cleanup = SocketCleanup(vec![i1.clone(), i2.clone(), ic.clone()]);
    let wan = Netns::new();
    let s1 = Netns::new();
    let s2 = Netns::new();
    let client = Netns::new();
    let inet = Netns::new();
    bridge(&wan, "br0");
    attach(&wan, "br0", "p1", &s1, "wan0", "198.51.100.1/24");
    attach(&wan, "br0", "p2", &s2, "eth0", "198.51.100.2/24");
    attach(&wan, "br0", "p3", &client, "eth0", "198.51.100.100/24");
    veth(
        &s1,
        "eth0",
        Some("203.0.113.1/24"),
        &inet,
        "eth0",
        Some("203.0.113.10/24"),
    );
    let hosts = [
        ("wgserver1.example.com", ip4(198, 51, 100, 1)),
        ("wgserver2.example.com", ip4(198, 51, 100, 2)),
    ];
    for ns in [&s1, &s2, &client] {
        ns.set_hosts(&hosts);
    }
    for ns in [&s1, &s2] {
        ns.sysctl("net.ipv4.ip_forward", "1");
    }

    let (k1, k2, kc) = (Keys::generate(), Keys::generate(), Keys::generate());
    let q = WgQuick::new(imp);
    let c1 = q.write_conf(&i1, &server1_conf(&k1, &k2, &kc));
    let c2 = q.write_conf(&i2, &server2_conf(&k1, &k2, &kc));
    let cc = q.write_conf(&ic, &client_conf(&k1, &k2, &kc));

    let t = std::time::Instant::now();
    // Server 2 first: server 1's PersistentKeepalive starts a handshake with
    // it as soon as server 1 is up (lost if server 2 is not, then retried
    // only after 5 s).
    q.up(&s2, &c2);
    q.up(&s1, &c1);
    let out = q.up(&client, &cc);
    if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
        eprintln!("  3 x wg-quick up: {:?}", t.elapsed());
    }
    assert!(
        out.contains("resolvconf -a"),
        "wg-quick did not set DNS:\n{out}"
    );
    for (ns, i) in [(&s1, &i1), (&s2, &i2), (&client, &ic)] {
        assert!(ns.has_link(i), "{i} missing after wg-quick up");
        assert!(
            sock_path(i).exists(),
            "{} missing after wg-quick up",
            sock_path(i).display()
        );
    }

    // What wg-quick made of the configs.
    let dump = imp.dump(&client, &ic);
    assert_eq!(
        dump.peer(&k1.public).endpoint.as_deref(),
        Some("198.51.100.1:1194")
    );
    assert_eq!(
        dump.peer(&k2.public).endpoint.as_deref(),
        Some("198.51.100.2:1194")
    );
    assert_eq!(
        dump.fwmark,
        Some(51820),
        "wg-quick sets fwmark 51820 for 0.0.0.0/0"
    );
    let rules = client.ip(&["-4", "rule"]);
    assert!(
        rules.contains("lookup 51820"),
        "no policy routing on the client:\n{rules}"
    );
    let nat = s1.exec(&["iptables", "-t", "nat", "-S", "POSTROUTING"]);
    assert!(
        nat.contains("-o eth0 -j MASQUERADE"),
        "PostUp did not run on server 1:\n{nat}"
    );
    let resolv = q.resolvconf_log();
    assert!(
        resolv.contains(&format!("resolvconf -a {ic}")) && resolv.contains("nameserver 1.1.1.1"),
        "resolvconf stub log:\n{resolv}"
    );

    // Client <-> server 2 directly.
    assert_ping(&client, "192.168.42.2", 3);
    let p = imp.dump(&s2, &i2).peer(&kc.public).clone();
    assert!(
        p.latest_handshake.is_some(),
        "no client session on server 2: {p:?}"
    );
    assert!(
        p.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("198.51.100.100:")),
        "server 2 should see the client directly: {p:?}"
    );
    assert_ping(&s2, "192.168.42.100", 2);

    // Server 1 <-> server 2 (host names resolved through /etc/netns hosts).
    assert_ping(&s1, "192.168.42.2", 2);
    assert_ping(&s2, "192.168.42.1", 2);

    // Client -> internet host through server 1, NATed to server 1's address.
    assert_ping(&client, "203.0.113.10", 3);
    let to = SocketAddr::new(IpAddr::V4(ip4(203, 0, 113, 10)), 8080);
    let r = tcp_transfer(&client, &inet, to, 4 << 20);
    assert_eq!(
        r.peer_seen_by_receiver.ip(),
        IpAddr::V4(ip4(203, 0, 113, 1)),
        "the internet host should see server 1's address (MASQUERADE)"
    );
    let p = imp.dump(&s1, &i1).peer(&kc.public).clone();
    assert!(
        p.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("198.51.100.100:")),
        "server 1 learned the client's endpoint: {p:?}"
    );
    // Only server 1 reaches the internet host.
    let quick = PingOpts {
        deadline: 1,
        ..PingOpts::new(1)
    };
    assert_no_ping(&s2, "203.0.113.10", &quick);

    // Down, client first; everything wg-quick added goes away.
    for (ns, conf, i) in [(&client, &cc, &ic), (&s2, &c2, &i2), (&s1, &c1, &i1)] {
        down(&q, ns, conf, i);
    }
    let rules = client.ip(&["-4", "rule"]);
    assert!(
        !rules.contains("lookup 51820"),
        "policy routing left behind:\n{rules}"
    );
    let mangle = client.exec(&["iptables-save"]);
    assert!(
        !mangle.contains("wg-quick(8)"),
        "wg-quick firewall rules left behind:\n{mangle}"
    );
    let nat = s1.exec(&["iptables", "-t", "nat", "-S", "POSTROUTING"]);
    assert!(
        !nat.contains("MASQUERADE"),
        "PostDown did not run on server 1:\n{nat}"
    );
    assert!(q.resolvconf_log().contains(&format!("resolvconf -d {ic}")));
}

fn down(q: &WgQuick, ns: &Netns, conf: &Path, iface: &str) {
    let t = std::time::Instant::now();
    q.down(ns, conf);
    if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
        eprintln!("  wg-quick down {iface}: {:?}", t.elapsed());
    }
    assert!(
        !ns.has_link(iface),
        "{iface} still there after wg-quick down"
    );
    let gone = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        !sock_path(iface).exists()
    });
    assert!(
        gone,
        "{} still there 5 s after wg-quick down",
        sock_path(iface).display()
    );
}

#[test]
fn slides_topology_with_wg_quick() {
    for_each_impl("slides_topology_with_wg_quick", IMPLS, seed_topology);
}
