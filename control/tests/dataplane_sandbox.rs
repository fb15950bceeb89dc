//! The running data plane's privileges, read from /proc/PID/task/*/status:
//! after setup every thread of it keeps only CAP_NET_BIND_SERVICE and
//! CAP_NET_RAW, has no_new_privs and a seccomp filter, and the tunnel
//! still carries traffic on both backends. (That it then cannot read
//! control's memory is shown in `dataplane/src/sandbox/tests.rs`, with the
//! same sandbox in a forked child.)

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::tunnel::UNDERLAY_IF;
use common::util::children_of;
use common::{
    assert_ping, ping_with, tcp_transfer, Capture, Impl, Netns, PingOpts, Tunnel, TunnelOpts,
};

const WIRESPEED: &str = env!("CARGO_BIN_EXE_wirespeed");

/// CAP_NET_BIND_SERVICE (10) and CAP_NET_RAW (13).
const KEPT: u64 = (1 << 10) | (1 << 13);

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

#[derive(Debug, PartialEq, Eq)]
struct Privileges {
    inheritable: u64,
    permitted: u64,
    effective: u64,
    bounding: u64,
    ambient: u64,
    no_new_privs: u32,
    seccomp: u32,
}

fn privileges(status: &str) -> Privileges {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in\n{status}"))
            .trim()
            .to_string()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    Privileges {
        inheritable: hex("CapInh"),
        permitted: hex("CapPrm"),
        effective: hex("CapEff"),
        bounding: hex("CapBnd"),
        ambient: hex("CapAmb"),
        no_new_privs: field("NoNewPrivs").parse().unwrap(),
        seccomp: field("Seccomp").parse().unwrap(),
    }
}

/// Every thread's privileges, by thread name.
fn threads_of(pid: u32) -> Vec<(String, Privileges)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        v.push((name, privileges(&status)));
    }
    v
}

/// The full sandbox: two capabilities and a filter (or none, with
/// WIRESPEED_SECCOMP=off).
fn sandboxed(seccomp: u32) -> Privileges {
    with_caps(KEPT, seccomp)
}

/// What a data plane keeps while its AF_XDP uplinks follow its peers:
/// CAP_NET_ADMIN (12), CAP_IPC_LOCK (14), CAP_PERFMON (38) and CAP_BPF
/// (39) besides the two, and no filter.
const XDP_ATTACH: u64 = KEPT | (1 << 12) | (1 << 14) | (1 << 38) | (1 << 39);

fn with_caps(caps: u64, seccomp: u32) -> Privileges {
    Privileges {
        inheritable: 0,
        permitted: caps,
        effective: caps,
        bounding: caps,
        ambient: 0,
        no_new_privs: 1,
        seccomp,
    }
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

/// Both backends: a tunnel between two wirespeed daemons whose data planes
/// are sandboxed, carrying a ping and a hashed TCP transfer, and a new
/// listen port bound and used while sandboxed (a port below 1024, with a
/// fwmark: the two capabilities it keeps). On AF_XDP, A's uplink is fixed
/// (WIRESPEED_XDP_IFACES): the full sandbox; B's follows its peer: fewer
/// capabilities than control, no filter, and its XDP program attached
/// after the sandbox, once the peer was configured.
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
    if xdp {
        assert_privileges(dps[1], &with_caps(XDP_ATTACH, 0));
    } else {
        assert_sandboxed(dps[1], 2);
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
