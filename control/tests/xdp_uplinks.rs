//! Which uplinks wirespeed's XDP program goes on, what it leaves alone, and
//! what it lets through: another program on an uplink stays attached (the
//! tunnel then takes the UDP sockets there), an interface off the path to
//! every peer gets nothing, and traffic this host forwards to the tunnel's
//! port reaches the host it is addressed to.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::netns::veth;
use common::util::wait_until;
use common::{assert_ping, Impl, Netns, Tunnel, TunnelOpts};

/// The XDP program on `iface` in `ns` as `ip link` shows it: (id, name).
fn xdp_on(ns: &Netns, iface: &str) -> Option<(u32, String)> {
    let out = ns.ip(&["-d", "link", "show", "dev", iface]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words
        .windows(2)
        .position(|w| w[0] == "prog/xdp" && w[1] == "id")?;
    let id = words.get(at + 2)?.parse().ok()?;
    let name = match words.get(at + 3) {
        Some(&"name") => words.get(at + 4).copied().unwrap_or_default(),
        _ => "",
    };
    Some((id, name.to_owned()))
}

/// Attaches a one-instruction XDP_PASS program named `fw_pass` (standing
/// for an administrator's firewall) to `veth0` in `ns` in native mode, the
/// way `ip` / libbpf users do (netlink, no bpf_link: it outlives its loader).
fn attach_foreign_program(ns: &Netns) {
    let dir = std::env::temp_dir();
    let source = dir.join(format!("{}-fw_pass.c", ns.name()));
    let object = dir.join(format!("{}-fw_pass.o", ns.name()));
    std::fs::write(
        &source,
        "__attribute__((section(\"xdp\"), used)) int fw_pass(void *ctx) { return 2; }\n\
         char _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n",
    )
    .unwrap();
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let out = std::process::Command::new(&clang)
        .args(["-O2", "-target", "bpf", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .output()
        .expect("run clang");
    let _ = std::fs::remove_file(&source);
    assert!(
        out.status.success(),
        "clang: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns.ip(&[
        "link",
        "set",
        "dev",
        "veth0",
        "xdpdrv",
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    let _ = std::fs::remove_file(&object);
}

fn foreign_program_is_left_alone(backend: &'static str) {
    let mut t = Tunnel::with(
        Impl::Wirespeed,
        Impl::Wirespeed,
        TunnelOpts {
            a_env: vec![("WIRESPEED_BACKEND", backend)],
            a_prepare: Some(attach_foreign_program),
            ..TunnelOpts::default()
        },
    );
    let (id, name) = xdp_on(&t.a.ns, "veth0").expect("the foreign program is attached");
    assert_eq!(name, "fw_pass");
    // The tunnel works, over the UDP sockets on that uplink.
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
    assert_eq!(
        xdp_on(&t.a.ns, "veth0"),
        Some((id, name.clone())),
        "the foreign program is still attached while wirespeed runs"
    );
    // The data plane looks at the peer table a few times a second.
    let said_why = |log: &str| {
        log.contains("uplink veth0: UDP sockets, not AF_XDP")
            && log.contains("another XDP program is attached")
            && log.contains(&format!("id {id}"))
    };
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            said_why(&t.a.daemon.log())
        }),
        "the log says why veth0 is not on AF_XDP:\n{}",
        t.a.daemon.log()
    );
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    t.a.daemon.stop();
    assert_eq!(
        xdp_on(&t.a.ns, "veth0"),
        Some((id, name)),
        "the foreign program is still attached after wirespeed exits"
    );
}

#[test]
fn foreign_xdp_program_survives_auto_backend() {
    let Some(_serial) = common::netns_test("foreign_xdp_auto") else {
        return;
    };
    foreign_program_is_left_alone("auto");
}

#[test]
fn foreign_xdp_program_survives_xdp_backend() {
    let Some(_serial) = common::netns_test("foreign_xdp_xdp") else {
        return;
    };
    foreign_program_is_left_alone("xdp");
}

/// A second veth pair in A's namespace, up, addressed, on no path to B.
fn add_side_link(ns: &Netns) {
    ns.ip(&[
        "link", "add", "side0", "type", "veth", "peer", "name", "side1",
    ]);
    ns.ip(&["addr", "add", "10.5.0.1/24", "dev", "side0"]);
    ns.ip(&["link", "set", "side0", "up"]);
    ns.ip(&["link", "set", "side1", "up"]);
}

#[test]
fn interfaces_off_the_path_to_the_peers_get_no_program() {
    let Some(_serial) = common::netns_test("xdp_uplink_choice") else {
        return;
    };
    let t = Tunnel::with(
        Impl::Wirespeed,
        Impl::Wirespeed,
        TunnelOpts {
            a_prepare: Some(add_side_link),
            ..TunnelOpts::default()
        },
    );
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    // The uplink towards B gets the program once the peer is configured.
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            xdp_on(&t.a.ns, "veth0").is_some_and(|(_, n)| n == "xdp_steer")
        }),
        "xdp_steer on veth0, the route to B:\n{}",
        t.a.daemon.log()
    );
    for other in ["side0", "side1"] {
        assert_eq!(
            xdp_on(&t.a.ns, other),
            None,
            "{other} carries no tunnel traffic and gets no program:\n{}",
            t.a.daemon.log()
        );
    }
}

#[test]
fn forwarded_traffic_to_the_tunnel_port_is_routed_not_swallowed() {
    let Some(_serial) = common::netns_test("xdp_forwarded") else {
        return;
    };
    let mut t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    // A routes for C (10.2.0.2) behind it; B sends to C through A.
    let c = Netns::new();
    veth(
        &t.a.ns,
        "vc",
        Some("10.2.0.1/24"),
        &c,
        "eth0",
        Some("10.2.0.2/24"),
    );
    c.ip(&["route", "add", "default", "via", "10.2.0.1"]);
    t.a.ns.sysctl("net.ipv4.ip_forward", "1");
    t.b.ns
        .ip(&["route", "add", "10.2.0.0/24", "via", "10.0.0.1"]);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            xdp_on(&t.a.ns, "veth0").is_some_and(|(_, n)| n == "xdp_steer")
        }),
        "xdp_steer on A's veth0:\n{}",
        t.a.daemon.log()
    );
    // The program is on the link before A knows B's endpoint and makes the
    // AF_XDP sockets (logged once the workers have them); until then A's
    // transport messages reach it through the kernel, so wait for that line
    // and send one warm-up ping before anything is counted.
    assert!(
        t.a.wait_xdp_on("veth0", Duration::from_secs(5)),
        "A's AF_XDP sockets:\n{}",
        t.a.daemon.log()
    );
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 1);

    // C runs something on the same port as A's tunnel (A listens on 51820).
    let port = t.a.port;
    let receiver = c.udp_socket(SocketAddr::from(([0, 0, 0, 0], port)));
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sender = t.b.ns.udp_socket(SocketAddr::from(([10, 0, 0, 2], 0)));
    const N: usize = 20;
    // Shaped like transport data messages: type 4, zero reserved bytes,
    // receiver index, counter, then at least a tag's worth of bytes.
    let mut msg = vec![0x5au8; 96];
    msg[..4].copy_from_slice(&[4, 0, 0, 0]);
    for i in 0..N {
        msg[8] = i as u8;
        sender
            .send_to(&msg, SocketAddr::from(([10, 2, 0, 2], port)))
            .unwrap();
    }
    let mut got = 0;
    let mut buf = [0u8; 256];
    while got < N {
        match receiver.recv_from(&mut buf) {
            Ok((len, _)) => {
                assert_eq!((len, &buf[..4]), (msg.len(), &[4u8, 0, 0, 0][..]));
                got += 1;
            }
            Err(_) => break,
        }
    }
    assert_eq!(
        got,
        N,
        "datagrams routed through A to C:\n{}",
        t.a.daemon.log()
    );
    // The tunnel itself still runs on AF_XDP.
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
    t.a.daemon.stop();
    let log = t.a.daemon.log();
    let not_local: u64 = log
        .split(" without socket, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        not_local >= N as u64,
        "the program counted the forwarded datagrams as not addressed to A:\n{log}"
    );
    let steered: u64 = log
        .split("XDP on veth0: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        steered >= 3,
        "A's own transport messages were steered:\n{log}"
    );
}
