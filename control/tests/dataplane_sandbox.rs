//! The running data plane's privileges, read from /proc/PID/task/*/status:
//! after setup every thread of it keeps only CAP_NET_BIND_SERVICE and
//! CAP_NET_RAW, has no_new_privs and a seccomp filter, and the tunnel
//! still carries traffic on both backends, AF_XDP uplinks that come at run
//! time included: a separate attacher process attaches them and hands the
//! sockets over. (That it then cannot read
//! control's memory is shown in `dataplane/src/sandbox/tests.rs`, with the
//! same sandbox in a forked child.)

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::netns::veth;
use common::privileges::{
    assert_attacher_of, privileges, threads_of, with_caps, Privileges, KEPT, XDP_ATTACH,
};
use common::tunnel::UNDERLAY_IF;
use common::util::{self, children_of, unique_name};
use common::{
    assert_ping, ping_with, tcp_transfer, Capture, IfaceConf, Impl, Keys, Netns, PeerConf,
    PingOpts, Tunnel, TunnelOpts,
};

const WIRESPEED: &str = env!("CARGO_BIN_EXE_wirespeed");

/// The data plane child of control `pid`, once it is there.
fn data_plane_of(pid: u32) -> u32 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let dp = children_of(pid);
        if dp.len() == 1 || Instant::now() > end {
            assert_eq!(dp.len(), 1, "one data plane child of {pid}");
            return dp[0];
        }
        sleep(Duration::from_millis(50));
    }
}

/// The full sandbox: two capabilities and a filter (or none, with
/// WIRESPEED_SECCOMP=off).
fn sandboxed(seccomp: u32) -> Privileges {
    with_caps(KEPT, seccomp)
}

fn assert_privileges(dp: u32, want: &Privileges) {
    let threads = threads_of(dp);
    assert!(
        threads.iter().any(|(n, _)| n.starts_with("worker-")),
        "{threads:?}"
    );
    for (name, p) in &threads {
        assert_eq!(p, want, "data plane {dp} thread {name}");
    }
}

fn assert_sandboxed(dp: u32, seccomp: u32) {
    assert_privileges(dp, &sandboxed(seccomp));
}

/// The data plane's one child, the XDP attacher.
fn assert_attacher(dp: u32) {
    assert_attacher_of(dp);
}

/// Both backends: a tunnel between two wirespeed daemons whose data planes
/// are sandboxed, carrying a ping and a hashed TCP transfer, and a new
/// listen port bound and used while sandboxed (a port below 1024, with a
/// fwmark: the two capabilities it keeps). On AF_XDP, A's uplink is fixed
/// (WIRESPEED_XDP_IFACES), B's follows its peer, its XDP program attached
/// after the sandbox (once the peer was configured) by its attacher: the
/// full sandbox on both.
fn sandboxed_tunnel(imp: Impl) {
    let xdp = imp == Impl::Wirespeed;
    let opts = TunnelOpts {
        a_env: if xdp {
            vec![("WIRESPEED_XDP_IFACES", "veth0")]
        } else {
            Vec::new()
        },
        ..TunnelOpts::default()
    };
    let t = Tunnel::with(imp, imp, opts);
    let dps = [
        data_plane_of(t.a.daemon.pid()),
        data_plane_of(t.b.daemon.pid()),
    ];
    assert_sandboxed(dps[0], 2);
    assert_sandboxed(dps[1], 2);
    if xdp {
        assert_attacher(dps[1]);
    } else {
        assert!(children_of(dps[1]).is_empty(), "no attacher on UDP");
    }
    let control =
        privileges(&std::fs::read_to_string(format!("/proc/{}/status", t.a.daemon.pid())).unwrap());
    assert_ne!(
        control.permitted & !XDP_ATTACH,
        0,
        "control keeps capabilities the data plane lacks, so the kernel's \
         ptrace check keeps the data plane out of control's memory"
    );
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    tcp_transfer(&t.a.ns, &t.b.ns, t.b.tunnel_addr(5201), 8 << 20);
    if xdp {
        // B attaches once it has looked up the route to its new peer, on
        // its supervisor's next round after the configuration.
        for side in [&t.a, &t.b] {
            let end = Instant::now() + Duration::from_secs(10);
            let mut link = side.ns.ip(&["link", "show", "veth0"]);
            while !link.contains("prog/xdp") && Instant::now() < end {
                sleep(Duration::from_millis(100));
                link = side.ns.ip(&["link", "show", "veth0"]);
            }
            assert!(link.contains("prog/xdp"), "{}: {link}", side.ns.name());
        }
        assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
        // Attached at run time, and the data plane gave up nothing for it.
        assert!(
            t.b.wait_xdp_on(UNDERLAY_IF, Duration::from_secs(5)),
            "{}",
            t.b.daemon.log()
        );
        assert_sandboxed(dps[1], 2);
    }

    t.a.daemon
        .wg_set(&t.a.ns, &["listen-port", "443", "fwmark", "0x42"]);
    let end = Instant::now() + Duration::from_secs(5);
    while t.a.dump().listen_port != 443 && Instant::now() < end {
        sleep(Duration::from_millis(50));
    }
    let ss = t.a.ns.exec(&["ss", "-Hulnp", "sport", "= :443"]);
    assert!(
        ss.contains(&format!("pid={},", dps[0])),
        "the sandboxed data plane bound port 443: {ss}"
    );
    // Traffic through the new sockets (and, on AF_XDP, the XDP program
    // steering the new port, its map updated by the sandboxed process).
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    assert_sandboxed(dps[0], 2);

    if !xdp {
        // The sandboxed data plane follows its interface's MTU (it pads to
        // it): lowered to 1300, a 1300-byte packet is padded to 1300, not
        // to 1312, and its message is 1332 bytes (AF_XDP frames are not
        // visible to tcpdump on B, so the UDP backend shows it).
        t.a.ns.ip(&["link", "set", &t.a.iface, "mtu", "1300"]);
        sleep(Duration::from_millis(1500));
        let cap = Capture::start(&t.b.ns, UNDERLAY_IF, "udp");
        let mut o = PingOpts::new(3);
        o.size = Some(1300 - 28);
        ping_with(&t.a.ns, &t.b.tunnel_ip.to_string(), &o);
        let from_a: Vec<usize> = cap
            .stop()
            .iter()
            .filter(|p| p.dst.port() == t.b.port && p.len > 1000)
            .map(|p| p.len)
            .collect();
        assert!(
            !from_a.is_empty() && from_a.iter().all(|&l| l == 16 + 1300 + 16),
            "messages padded to the new MTU: {from_a:?}"
        );
    }

    // With control gone, the sandboxed data plane alone must still see its
    // interface deleted (it asks a queue fd, TUNGETIFF) and end, rather
    // than forward for a dead interface until its keys expire.
    // SAFETY: kill on a pid of ours (the test started the daemon).
    unsafe { libc::kill(t.a.daemon.pid() as libc::pid_t, libc::SIGKILL) };
    let end = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{}/exe", t.a.daemon.pid())).exists()
        && Instant::now() < end
    {
        sleep(Duration::from_millis(20));
    }
    assert!(std::path::Path::new(&format!("/proc/{}", dps[0])).exists());
    t.a.ns.ip(&["link", "del", &t.a.iface]);
    let end = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{}/exe", dps[0])).exists() && Instant::now() < end {
        sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{}/exe", dps[0])).exists(),
        "the sandboxed data plane outlived its deleted interface"
    );
}

#[test]
fn data_plane_keeps_two_capabilities_no_new_privs_and_a_seccomp_filter() {
    common::for_each_impl(
        "dataplane_sandbox",
        &[(Impl::Wirespeed, true), (Impl::WirespeedUdp, true)],
        sandboxed_tunnel,
    );
}

/// WIRESPEED_SECCOMP=off leaves only the filter out.
#[test]
fn seccomp_off_leaves_the_filter_out_and_the_rest_in() {
    let Some(_serial) = common::netns_test("seccomp_off") else {
        return;
    };
    let ns = Netns::new();
    let iface = format!("wss{}", std::process::id() % 100_000);
    let st = ns
        .cmd(WIRESPEED)
        .env("WIRESPEED_SECCOMP", "off")
        .env("WIRESPEED_BACKEND", "udp")
        .arg(&iface)
        .status()
        .unwrap();
    assert!(st.success());
    let pid: u32 = ns
        .exec(&["pgrep", "-f", &format!("wirespeed {iface}$")])
        .trim()
        .parse()
        .unwrap();
    let dp = data_plane_of(pid);
    assert_sandboxed(dp, 0);
    ns.ip(&["link", "del", &iface]);
}

/// AF_XDP with the uplinks following the peers (no WIRESPEED_XDP_IFACES):
/// the data plane has the full sandbox from the start, a peer that appears
/// later behind a second uplink still gets AF_XDP there (the attacher
/// attaches the program and hands the sockets over), and both uplinks'
/// programs steer the tunnel's messages into the sockets the sandboxed
/// workers read.
#[test]
fn uplinks_that_come_later_get_af_xdp_with_the_data_plane_sandboxed() {
    let Some(_serial) = common::netns_test("xdp_later_uplink") else {
        return;
    };
    let mut t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    let dp = data_plane_of(t.a.daemon.pid());
    assert_sandboxed(dp, 2);
    assert_attacher(dp);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    assert!(
        t.a.wait_xdp_on(UNDERLAY_IF, Duration::from_secs(10)),
        "{}",
        t.a.daemon.log()
    );

    // C, behind a second uplink of A, becomes A's peer only now.
    let c = Netns::new();
    veth(
        &t.a.ns,
        "side0",
        Some("10.5.0.1/24"),
        &c,
        "eth0",
        Some("10.5.0.2/24"),
    );
    let kc = Keys::generate();
    let dc = Impl::WirespeedUdp.start(&c, &unique_name("i"));
    dc.configure(
        &c,
        &IfaceConf {
            private_key: kc.private.clone(),
            listen_port: Some(51822),
            peers: vec![PeerConf {
                public_key: t.a.keys.public.clone(),
                allowed_ips: vec![format!("{}/32", t.a.tunnel_ip)],
                endpoint: Some("10.5.0.1:51820".into()),
                ..PeerConf::default()
            }],
            addresses: vec!["10.9.0.3/24".into()],
            ..IfaceConf::default()
        },
    );
    t.a.daemon.set_peer(
        &t.a.ns,
        &PeerConf {
            public_key: kc.public.clone(),
            allowed_ips: vec!["10.9.0.3/32".into()],
            endpoint: Some("10.5.0.2:51822".into()),
            ..PeerConf::default()
        },
    );
    assert_ping(&t.a.ns, "10.9.0.3", 3);
    assert!(
        t.a.wait_xdp_on("side0", Duration::from_secs(10)),
        "AF_XDP on the second uplink:\n{}",
        t.a.daemon.log()
    );
    assert_ping(&c, &t.a.tunnel_ip.to_string(), 5);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 5);
    assert_sandboxed(dp, 2);
    assert_attacher(dp);

    t.a.daemon.stop();
    let log = t.a.daemon.log();
    for uplink in [UNDERLAY_IF, "side0"] {
        assert!(
            util::steered(&log, uplink) >= 5,
            "the program on {uplink} steered the tunnel's messages:\n{log}"
        );
    }
    drop(dc);
}

/// The attacher lives and dies with its data plane: a data plane killed
/// with SIGKILL takes its attacher along (no privileged orphan is left,
/// and its program link goes with it), and the data plane control starts
/// in its place gets an attacher of its own, which attaches the uplink
/// again while the new data plane keeps the full sandbox.
#[test]
fn the_attacher_ends_with_its_data_plane() {
    let Some(_serial) = common::netns_test("xdp_attacher_killed") else {
        return;
    };
    let t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 2);
    let dp = data_plane_of(t.a.daemon.pid());
    let attacher = children_of(dp);
    assert_eq!(attacher.len(), 1, "the attacher of {dp}");
    // SAFETY: kill on a pid of ours (a grandchild of the test).
    unsafe { libc::kill(dp as libc::pid_t, libc::SIGKILL) };
    let gone = |pid: u32| !std::path::Path::new(&format!("/proc/{pid}/exe")).exists();
    let end = Instant::now() + Duration::from_secs(5);
    while !gone(attacher[0]) && Instant::now() < end {
        sleep(Duration::from_millis(20));
    }
    assert!(gone(attacher[0]), "the attacher outlived its data plane");

    let end = Instant::now() + Duration::from_secs(10);
    let mut next = children_of(t.a.daemon.pid());
    while !(next.len() == 1 && next[0] != dp) && Instant::now() < end {
        sleep(Duration::from_millis(50));
        next = children_of(t.a.daemon.pid());
    }
    assert!(next.len() == 1 && next[0] != dp, "a new data plane");
    let end = Instant::now() + Duration::from_secs(10);
    while children_of(next[0]).len() != 1 && Instant::now() < end {
        sleep(Duration::from_millis(50));
    }
    assert_attacher(next[0]);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    let end = Instant::now() + Duration::from_secs(10);
    let mut link = t.a.ns.ip(&["link", "show", UNDERLAY_IF]);
    while !link.contains("prog/xdp") && Instant::now() < end {
        sleep(Duration::from_millis(100));
        link = t.a.ns.ip(&["link", "show", UNDERLAY_IF]);
    }
    assert!(link.contains("prog/xdp"), "attached again: {link}");
    assert_sandboxed(next[0], 2);
}
