//! One host data plane (`wirespeed --host-dataplane`) serving several
//! wirespeed interfaces of one namespace as tenants, each with its own
//! listen port and its own peer (wirespeed, wireguard-go, boringtun) in a
//! namespace of its own: traffic on all of them at once, `wg show`
//! counters exact per interface.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::impls::Daemon;
use common::netns::veth;
use common::privileges::{assert_attacher_of, threads_of, with_caps, Privileges, KEPT};
use common::tunnel::{check_counters, HANDSHAKE_SLACK, MAX_MESSAGE};
use common::util::{self, unique_name, TempDir};
use common::*;

/// The host data plane, run in the foreground inside the hub namespace,
/// on a socket of this test's own (never the host-wide default, which a
/// concurrent test's control would attach to).
struct HostDp {
    child: Option<Child>,
    log_path: PathBuf,
    socket: PathBuf,
    _dir: TempDir,
}

impl HostDp {
    fn start(ns: &Netns, workers: usize) -> HostDp {
        HostDp::start_with(ns, workers, "udp", &[])
    }

    fn start_with(ns: &Netns, workers: usize, backend: &str, env: &[(&str, &str)]) -> HostDp {
        let dir = TempDir::new();
        // A directory it creates itself (0700): TempDir's is world-readable.
        let socket = dir.join("run/dataplane.sock");
        let log_path = dir.join("host.log");
        let log = std::fs::File::create(&log_path).unwrap();
        // As wirespeed-dataplane.service (Type=notify) runs it: ready means
        // the socket answers and every worker has dropped its privileges.
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let child = ns
            .cmd(env!("CARGO_BIN_EXE_wirespeed"))
            .args(["--host-dataplane", "--backend", backend, "--workers"])
            .arg(workers.to_string())
            .envs(env.iter().copied())
            .env("WIRESPEED_DATAPLANE_SOCKET", &socket)
            .env("WIRESPEED_TUN_OFFLOAD", "off")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the host data plane");
        let mut h = HostDp {
            child: Some(child),
            log_path,
            socket,
            _dir: dir,
        };
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no readiness notification ({e}); log:\n{}",
                util::tail(&h.log(), 60)
            )
        });
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(msg, format!("READY=1\nMAINPID={}\n", h.pid()));
        assert!(
            h.running() && h.socket.exists(),
            "host data plane ready without its socket; log:\n{}",
            h.log()
        );
        h
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// What a control process needs to attach to this host data plane.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "WIRESPEED_DATAPLANE_SOCKET",
                self.socket.display().to_string(),
            ),
            ("WIRESPEED_DATAPLANE", "host".into()),
        ]
    }

    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        util::signal(c.id(), util::SIGTERM);
        let gone = util::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            !matches!(c.try_wait(), Ok(None))
        });
        if !gone {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

impl Drop for HostDp {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- host data plane log, last 60 lines ----\n{}\n----",
                util::tail(&self.log(), 60)
            );
        }
    }
}

/// One tenant of the hub and its peer.
struct Leg {
    hub: Daemon,
    peer: Daemon,
    peer_ns: Netns,
    peer_imp: Impl,
    uplink: String,
    hub_keys: Keys,
    peer_keys: Keys,
    port: u16,
    hub_tun: Ipv4Addr,
    peer_tun: Ipv4Addr,
    hub_addr: Ipv4Addr,
    peer_addr: Ipv4Addr,
    /// The bridge every peer's uplink joins, when the hub has one uplink.
    _switch: Option<Netns>,
}

impl Leg {
    fn hub_peer(&self, hub_ns: &Netns) -> PeerStatus {
        self.hub.dump(hub_ns).peer(&self.peer_keys.public).clone()
    }

    fn peer_peer(&self) -> PeerStatus {
        self.peer
            .dump(&self.peer_ns)
            .peer(&self.hub_keys.public)
            .clone()
    }

    /// Datagrams lost on the way into the peer's namespace.
    fn peer_drops(&self) -> u64 {
        udp_stats(&self.peer_ns).in_errors + iface_stats(&self.peer_ns, "veth0").rx_dropped
    }
}

/// Datagrams lost on the way into the hub (shared by its tenants); an
/// uplink that several legs share counted once.
fn hub_drops(hub: &Netns, legs: &[Leg]) -> u64 {
    let mut uplinks: Vec<&str> = legs.iter().map(|l| l.uplink.as_str()).collect();
    uplinks.sort_unstable();
    uplinks.dedup();
    udp_stats(hub).in_errors
        + uplinks
            .iter()
            .map(|u| iface_stats(hub, u).rx_dropped)
            .sum::<u64>()
}

/// The counters that [`assert_exact_counters`] and
/// [`assert_transport_took_af_xdp`] measure from, taken over some legs.
struct Snapshot {
    hub_drops: u64,
    peer_drops: Vec<u64>,
    hub_udp: UdpStats,
    /// Packets through each leg's hub TUN, both ways: one data message
    /// each (the hub runs without TUN offloads).
    hub_tun: Vec<u64>,
}

impl Snapshot {
    fn now(hub: &Netns, legs: &[Leg]) -> Snapshot {
        Snapshot {
            hub_drops: hub_drops(hub, legs),
            peer_drops: legs.iter().map(Leg::peer_drops).collect(),
            hub_udp: udp_stats(hub),
            hub_tun: legs.iter().map(|l| hub_tun_packets(hub, l)).collect(),
        }
    }
}

fn hub_tun_packets(hub: &Netns, leg: &Leg) -> u64 {
    let s = iface_stats(hub, &leg.hub.iface);
    s.rx_packets + s.tx_packets
}

/// Each leg's `wg show` counters, both ways, agree with its peer's to the
/// byte, up to what was dropped on the way since `since` (taken over the
/// same legs) and what the two ends count differently (`check_counters`).
/// Call it once the legs are quiet ([`quiesce`]).
fn assert_exact_counters(hub: &Netns, legs: &[Leg], since: &Snapshot) {
    let hub_lost = hub_drops(hub, legs) - since.hub_drops;
    let mut errs = Vec::new();
    for (l, peer_drops_0) in legs.iter().zip(&since.peer_drops) {
        let (hp, pp) = (l.hub_peer(hub), l.peer_peer());
        let hub_tun = iface_stats(hub, &l.hub.iface);
        let peer_tun = iface_stats(&l.peer_ns, &l.peer.iface);
        let peer_lost = l.peer_drops() - peer_drops_0;
        errs.extend(
            [
                check_counters(
                    l.peer_imp,
                    pp.tx,
                    Impl::WirespeedUdp,
                    hp.rx,
                    hub_tun.rx_packets,
                    hub_lost,
                ),
                check_counters(
                    Impl::WirespeedUdp,
                    hp.tx,
                    l.peer_imp,
                    pp.rx,
                    peer_tun.rx_packets,
                    peer_lost,
                ),
            ]
            .into_iter()
            .filter_map(Result::err)
            .map(|e| format!("{} <-> {}: {e}", l.hub.iface, l.peer_imp)),
        );
    }
    assert!(errs.is_empty(), "counters disagree:\n{}", errs.join("\n"));
    if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
        eprintln!("  hub drops {hub_lost}");
    }
}

/// Datagrams the hub's kernel UDP may receive and send while transport
/// takes AF_XDP: handshakes (the XDP program passes them), a few per
/// tenant, and a handful of A's messages to a port not yet steered.
const HANDSHAKES_AT_MOST: u64 = 100;

/// Transport took the AF_XDP sockets, every leg's: since `since`, each leg
/// carried ten times more data messages than the hub's kernel UDP received
/// or sent datagrams, which were the handshakes. A leg whose transport took
/// a UDP socket would have put its thousands of messages there (or, sent
/// with UDP GSO, one datagram for up to 64 of them).
fn assert_transport_took_af_xdp(hub: &Netns, legs: &[Leg], since: &Snapshot) {
    let now = udp_stats(hub);
    let (rx, tx) = (
        now.in_datagrams - since.hub_udp.in_datagrams,
        now.out_datagrams - since.hub_udp.out_datagrams,
    );
    assert!(
        rx <= HANDSHAKES_AT_MOST && tx <= HANDSHAKES_AT_MOST,
        "{rx} datagrams received and {tx} sent through the hub's UDP sockets"
    );
    let mut messages = Vec::new();
    for (l, tun_0) in legs.iter().zip(&since.hub_tun) {
        let m = hub_tun_packets(hub, l) - tun_0;
        assert!(
            m >= 10 * HANDSHAKES_AT_MOST,
            "{}: {m} data messages, too few to tell AF_XDP from UDP",
            l.hub.iface
        );
        messages.push(m);
    }
    if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
        eprintln!("  hub UDP datagrams: {rx} received, {tx} sent; data messages {messages:?}");
    }
}

/// The host data plane on `hub`: over UDP sockets, or with `xdp` AF_XDP
/// on the single uplink `up0` of [`legs_on`]'s `one_uplink`.
fn host_on(hub: &Netns, xdp: bool) -> HostDp {
    if xdp {
        HostDp::start_with(hub, 2, "xdp", &[("WIRESPEED_XDP_IFACES", "up0")])
    } else {
        HostDp::start(hub, 2)
    }
}

/// The hub `hub` with one wirespeed interface per entry of `peers`, each
/// attached to `host`, listening on 51820 + i, with its peer `peers[i]` in
/// a namespace of its own behind veth 10.0.(i+1).0/24.
fn legs(hub: &Netns, host: &HostDp, peers: &[Impl]) -> Vec<Leg> {
    legs_on(hub, host, peers, false)
}

/// [`legs`], or with `one_uplink` every peer behind one bridge that the
/// hub reaches through its single uplink `up0` (10.0.0.1/24; peer i at
/// 10.0.0.(i+2)).
fn legs_on(hub: &Netns, host: &HostDp, peers: &[Impl], one_uplink: bool) -> Vec<Leg> {
    let env = host.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut out = Vec::new();
    let mut switch = one_uplink.then(|| {
        let sw = Netns::new();
        common::netns::bridge(&sw, "br0");
        common::netns::attach(&sw, "br0", "p0", hub, "up0", "10.0.0.1/24");
        sw
    });
    for (i, &imp) in peers.iter().enumerate() {
        let n = i as u8 + 1;
        let peer_ns = Netns::new();
        let (uplink, hub_addr, peer_addr) = match &switch {
            Some(sw) => {
                let a = Ipv4Addr::new(10, 0, 0, n + 1);
                let port = format!("p{n}");
                common::netns::attach(sw, "br0", &port, &peer_ns, "veth0", &format!("{a}/24"));
                ("up0".to_string(), Ipv4Addr::new(10, 0, 0, 1), a)
            }
            None => {
                let uplink = format!("u{n}");
                veth(
                    hub,
                    &uplink,
                    Some(&format!("10.0.{n}.1/24")),
                    &peer_ns,
                    "veth0",
                    Some(&format!("10.0.{n}.2/24")),
                );
                (
                    uplink,
                    Ipv4Addr::new(10, 0, n, 1),
                    Ipv4Addr::new(10, 0, n, 2),
                )
            }
        };
        let (hub_keys, peer_keys) = (Keys::generate(), Keys::generate());
        let port = 51820 + i as u16;
        let (hub_tun, peer_tun) = (
            Ipv4Addr::new(10, 20 + n, 0, 1),
            Ipv4Addr::new(10, 20 + n, 0, 2),
        );
        let h = Impl::WirespeedUdp.start_with(hub, &unique_name("h"), &env);
        let p = imp.start(&peer_ns, &unique_name("p"));
        h.configure(
            hub,
            &IfaceConf {
                private_key: hub_keys.private.clone(),
                listen_port: Some(port),
                peers: vec![PeerConf {
                    public_key: peer_keys.public.clone(),
                    allowed_ips: vec![format!("{peer_tun}/32")],
                    endpoint: Some(format!("{peer_addr}:51820")),
                    ..PeerConf::default()
                }],
                addresses: vec![format!("{hub_tun}/24")],
                ..IfaceConf::default()
            },
        );
        p.configure(
            &peer_ns,
            &IfaceConf {
                private_key: peer_keys.private.clone(),
                listen_port: Some(51820),
                peers: vec![PeerConf {
                    public_key: hub_keys.public.clone(),
                    allowed_ips: vec![format!("{hub_tun}/32")],
                    endpoint: Some(format!("{hub_addr}:{port}")),
                    ..PeerConf::default()
                }],
                addresses: vec![format!("{peer_tun}/24")],
                ..IfaceConf::default()
            },
        );
        out.push(Leg {
            hub: h,
            peer: p,
            peer_ns,
            peer_imp: imp,
            uplink,
            hub_keys,
            peer_keys,
            port,
            hub_tun,
            peer_tun,
            hub_addr,
            peer_addr,
            _switch: if i + 1 == peers.len() {
                switch.take()
            } else {
                None
            },
        });
    }
    out
}

/// The UDP destination port of every frame in a pcap file (classic
/// format, this host's byte order, Ethernet + IPv4 without options).
fn pcap_udp_dst_ports(path: &std::path::Path) -> Vec<u16> {
    let b = std::fs::read(path).unwrap();
    let u = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let mut ports = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let kept = u(at + 8);
        let f = &b[at + 16..at + 16 + kept];
        // Ethernet (14) + IPv4 (20): the UDP destination port.
        ports.push(u16::from_be_bytes([f[36], f[37]]));
        at += 16 + kept;
    }
    ports
}

/// Waits until no leg's counters move for 300 ms.
fn quiesce(hub: &Netns, legs: &[Leg]) {
    let snap = || -> Vec<(u64, u64, u64, u64)> {
        legs.iter()
            .map(|l| {
                let (a, b) = (l.hub_peer(hub), l.peer_peer());
                (a.rx, a.tx, b.rx, b.tx)
            })
            .collect()
    };
    let mut last = snap();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let now = snap();
        if now == last {
            return;
        }
        last = now;
    }
}

#[test]
fn three_tenants_of_one_host_data_plane_carry_traffic_at_once_with_exact_counters() {
    let Some(_serial) = netns_test("host_dataplane_three_tenants") else {
        return;
    };
    three_tenants(false);
}

/// The same three tenants over one veth uplink with AF_XDP: the uplink's
/// XDP program steers all three listen ports to the AF_XDP sockets, and
/// each worker parks every frame in the lane of its destination port.
#[test]
fn three_tenants_share_one_af_xdp_uplink_with_exact_counters() {
    let Some(_serial) = netns_test("host_dataplane_three_tenants_xdp") else {
        return;
    };
    three_tenants(true);
}

fn three_tenants(xdp: bool) {
    let hub = Netns::new();
    let mut host = host_on(&hub, xdp);
    // The uplinks are attached with the first tenant, by the attacher:
    // no thread of the host data plane keeps what that takes, before or
    // after.
    let attacher = xdp.then(|| {
        wait_sandboxed(&host);
        assert_threads(&host, &with_caps(KEPT, 2));
        assert_attacher(&host)
    });
    let peers = [Impl::WirespeedUdp, Impl::WireguardGo, Impl::Boringtun];
    let mut legs = legs_on(&hub, &host, &peers, xdp);
    assert_threads(&host, &with_caps(KEPT, 2));
    // Every interface is the host data plane's tenant: no control runs a
    // data plane of its own.
    for l in &mut legs {
        l.hub.assert_running();
        assert!(
            l.hub.log().contains("attached to the host data plane"),
            "{}: not attached; log:\n{}",
            l.hub.iface,
            l.hub.log()
        );
        assert_eq!(
            util::children_of(l.hub.pid()),
            Vec::<u32>::new(),
            "{} started a data plane of its own",
            l.hub.iface
        );
    }
    assert_eq!(
        host.log().matches(": attached, UDP port").count(),
        3,
        "{}",
        host.log()
    );
    for l in &legs {
        assert!(
            host.log()
                .contains(&format!("{}: UDP port {}", l.hub.iface, l.port)),
            "{}",
            host.log()
        );
    }
    if xdp {
        assert!(
            host.log().contains("backend: AF_XDP on up0"),
            "{}",
            host.log()
        );
    }
    // The middle tenant's capture of what it receives over AF_XDP: its
    // frames only, though all three share the rings.
    let capture = xdp.then(|| {
        let dir = TempDir::new();
        let (file, log) = (dir.join("b.pcap"), dir.join("capture.log"));
        let child = hub
            .cmd(env!("CARGO_BIN_EXE_wirespeed"))
            .args([
                "capture",
                &legs[1].hub.iface,
                "-c",
                "50",
                "--direction",
                "rx",
                "-w",
            ])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let on = util::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        });
        assert!(on, "{}", std::fs::read_to_string(&log).unwrap_or_default());
        (child, file, dir)
    });
    let at_start = Snapshot::now(&hub, &legs);
    // All three at once, each way on one leg at least.
    const BYTES: u64 = 6 << 20;
    let transfers: Vec<_> = legs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let to = SocketAddr::new(IpAddr::V4(l.hub_tun), 5000 + i as u16);
            let back = SocketAddr::new(IpAddr::V4(l.peer_tun), 6000 + i as u16);
            (
                TcpTransfer::start(&l.peer_ns, &hub, to, BYTES),
                TcpTransfer::start(&hub, &l.peer_ns, back, BYTES),
            )
        })
        .collect();
    for (up, down) in transfers {
        up.finish().assert_intact(BYTES);
        down.finish().assert_intact(BYTES);
    }
    assert!(host.running(), "host data plane died; log:\n{}", host.log());
    if let Some((mut child, file, _dir)) = capture {
        let done = util::wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            child.try_wait().unwrap().is_some()
        });
        if !done {
            let _ = child.kill();
        }
        let ports = pcap_udp_dst_ports(&file);
        assert_eq!(ports.len(), 50, "the capture's count");
        assert!(ports.iter().all(|&p| p == legs[1].port), "{ports:?}");
    }
    quiesce(&hub, &legs);
    if xdp {
        assert_transport_took_af_xdp(&hub, &legs, &at_start);
        if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
            eprintln!("{}", host.log());
        }
    }
    for l in &legs {
        let hp = l.hub_peer(&hub);
        assert!(hp.rx >= BYTES && hp.tx >= BYTES, "{}: {hp:?}", l.hub.iface);
    }
    assert_exact_counters(&hub, &legs, &at_start);
    if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
        eprintln!("  host data plane pid {}", host.pid());
    }
    if let Some(a) = attacher {
        // Killed, the host data plane takes its attacher along, and the
        // program with it: no privileged orphan is left.
        util::signal(host.pid(), util::SIGKILL);
        host.stop();
        assert_gone(a);
        assert!(!has_xdp(&hub, "up0"));
    }
}

/// The receiver index (raw, as on the wire) of the first transport message
/// `peer_ns` sends over `leg`'s uplink: the hub tenant's own session index.
fn hub_receiver_index(hub: &Netns, leg: &Leg) -> [u8; 4] {
    let filter = format!("udp and src host {} and udp[8] = 4", leg.peer_addr);
    let mut cmd = hub.cmd("timeout");
    cmd.args([
        "10",
        "tcpdump",
        "-i",
        &leg.uplink,
        "-n",
        "-p",
        "-c",
        "1",
        "-x",
        &filter,
    ]);
    let dump = std::thread::spawn(move || util::output(&mut cmd));
    std::thread::sleep(Duration::from_millis(500));
    let pings = ping(&leg.peer_ns, &leg.hub_tun.to_string(), 3);
    assert!(pings.received > 0, "no ping over {}", leg.hub.iface);
    let out = dump.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = text
        .lines()
        .filter_map(|l| l.trim().split_once(":  "))
        .flat_map(|(_, hex)| {
            hex.split_whitespace()
                .flat_map(|w| {
                    (0..w.len() / 2).map(move |i| u8::from_str_radix(&w[2 * i..2 * i + 2], 16))
                })
                .collect::<Vec<_>>()
        })
        .map(|b| b.expect("tcpdump hex"))
        .collect();
    // IPv4 header (20, no options) + UDP (8) + type and reserved (4).
    assert!(
        bytes.len() >= 36 && bytes[28] == 4,
        "no transport message captured:\n{text}"
    );
    bytes[32..36].try_into().unwrap()
}

/// A well-formed transport message for `receiver` that no key opens.
fn forged(receiver: [u8; 4], counter: u64) -> Vec<u8> {
    let mut m = vec![4u8, 0, 0, 0];
    m.extend_from_slice(&receiver);
    m.extend_from_slice(&counter.to_le_bytes());
    m.extend((0..80u32).map(|i| (i as u8).wrapping_mul(37) ^ counter as u8));
    m
}

#[test]
fn a_tenants_peer_cannot_reach_another_tenant_with_its_receiver_indices() {
    let Some(_serial) = netns_test("host_dataplane_cross_tenant") else {
        return;
    };
    let hub = Netns::new();
    let _host = HostDp::start(&hub, 2);
    let legs = legs(&hub, &_host, &[Impl::WirespeedUdp, Impl::WireguardGo]);
    let (a, b) = (&legs[0], &legs[1]);
    let index_a = hub_receiver_index(&hub, a);
    let index_b = hub_receiver_index(&hub, b);
    assert_ne!(index_a, index_b);
    // Nothing more from the peers themselves meanwhile.
    quiesce(&hub, &legs);
    let tun = |ns: &Netns, i: &str| iface_stats(ns, i).rx_packets;
    let before = (
        tun(&hub, &a.hub.iface),
        tun(&hub, &b.hub.iface),
        tun(&a.peer_ns, &a.peer.iface),
        tun(&b.peer_ns, &b.peer.iface),
        a.hub_peer(&hub).rx,
        b.hub_peer(&hub).rx,
        udp_stats(&hub).in_datagrams,
    );
    // From A's peer's own address and port: to B's port with B's index, to
    // A's port with B's index, and to B's port with A's index.
    let sock = a
        .peer_ns
        .udp_socket(SocketAddr::new(IpAddr::V4(a.peer_addr), 0));
    const N: u64 = 200;
    let hub_addr = IpAddr::V4(a.hub_addr);
    for (k, (index, port)) in [(index_b, b.port), (index_b, a.port), (index_a, b.port)]
        .into_iter()
        .enumerate()
    {
        for i in 0..N {
            let m = forged(index, (k as u64) << 32 | i);
            sock.send_to(&m, SocketAddr::new(hub_addr, port)).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = (
        tun(&hub, &a.hub.iface),
        tun(&hub, &b.hub.iface),
        tun(&a.peer_ns, &a.peer.iface),
        tun(&b.peer_ns, &b.peer.iface),
        a.hub_peer(&hub).rx,
        b.hub_peer(&hub).rx,
        udp_stats(&hub).in_datagrams,
    );
    // They did reach the tenants' sockets.
    assert!(after.6 - before.6 >= 3 * N, "{before:?} -> {after:?}");
    assert_eq!(
        (after.0, after.1, after.2, after.3, after.4, after.5),
        (before.0, before.1, before.2, before.3, before.4, before.5),
        "a forged message was delivered (TUN rx of hub A, hub B, peer A, peer B; wg rx of A, B)"
    );
    // Both tenants still work.
    assert_ping(&a.peer_ns, &a.hub_tun.to_string(), 2);
    assert_ping(&b.peer_ns, &b.hub_tun.to_string(), 2);
}

/// `wg set` with `leg`'s hub configuration (keys and peer; the addresses
/// stay on the interface across a control restart).
fn reconfigure_hub(hub: &Netns, leg: &Leg, port: u16) {
    let dir = TempDir::new();
    let key = dir.write("k", &format!("{}\n", leg.hub_keys.private));
    let (k, p, e, a) = (
        key.display().to_string(),
        port.to_string(),
        format!("{}:51820", leg.peer_addr),
        format!("{}/32", leg.peer_tun),
    );
    hub.exec(&[
        "wg",
        "set",
        &leg.hub.iface,
        "private-key",
        &k,
        "listen-port",
        &p,
        "peer",
        &leg.peer_keys.public,
        "allowed-ips",
        &a,
        "endpoint",
        &e,
    ]);
}

fn listening(ns: &Netns, port: u16) -> bool {
    ns.exec(&["ss", "-Hnlu"]).lines().any(|l| {
        l.split_whitespace()
            .nth(3)
            .is_some_and(|a| a.ends_with(&format!(":{port}")))
    })
}

#[test]
fn one_tenant_restarted_reconfigured_and_deleted_while_two_others_carry_transfers() {
    let Some(_serial) = netns_test("host_dataplane_tenant_lifecycle") else {
        return;
    };
    tenant_lifecycle(false);
}

/// The same with the three tenants on one AF_XDP uplink, where A's comings
/// and goings also rewrite the XDP program's map from port to tenant.
#[test]
fn one_tenant_restarted_reconfigured_and_deleted_on_a_shared_af_xdp_uplink() {
    let Some(_serial) = netns_test("host_dataplane_tenant_lifecycle_xdp") else {
        return;
    };
    tenant_lifecycle(true);
}

/// What B's and C's transfers each send a second: enough for ten thousand
/// messages and more each over the test (which [`assert_transport_took_af_xdp`]
/// needs), little enough to leave the two cores to A's restarts and pings.
const LIFECYCLE_RATE: u64 = 4 << 20;

/// Tenant A (a wirespeed peer) goes through a kill of its control, a
/// restart that re-attaches, a reconfiguration, a new listen port, a
/// refused one (B's, C's) and its deletion, while B (wireguard-go) and C
/// (boringtun) each carry a paced TCP transfer that moves on after every
/// step, ends intact (SHA-256) and leaves exact `wg show` counters.
fn tenant_lifecycle(xdp: bool) {
    let hub = Netns::new();
    let mut host = host_on(&hub, xdp);
    let peers = [Impl::WirespeedUdp, Impl::WireguardGo, Impl::Boringtun];
    let mut legs = legs_on(&hub, &host, &peers, xdp);
    if xdp {
        assert!(
            host.log().contains("backend: AF_XDP on up0"),
            "{}",
            host.log()
        );
    }
    let env = host.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 2);
    let hs_a = legs[0].peer_peer().latest_handshake;
    assert!(hs_a.is_some());

    // B's peer sends to the hub, the hub to C's peer: both directions of
    // the shared data plane carry a tenant's bulk.
    let at_start = Snapshot::now(&hub, &legs[1..]);
    let (b, c) = (&legs[1], &legs[2]);
    let transfers = [
        (
            "B",
            TcpTransfer::paced(
                &b.peer_ns,
                &hub,
                SocketAddr::new(IpAddr::V4(b.hub_tun), 5100),
                LIFECYCLE_RATE,
            ),
        ),
        (
            "C",
            TcpTransfer::paced(
                &hub,
                &c.peer_ns,
                SocketAddr::new(IpAddr::V4(c.peer_tun), 5200),
                LIFECYCLE_RATE,
            ),
        ),
    ];
    // Each transfer moves on after `step`: a MiB more than it had.
    let moving_on = |step: &str| {
        for (name, t) in &transfers {
            let at = t.received();
            let on = t.wait_for_progress(at + (1 << 20), Duration::from_secs(20));
            assert!(
                on && t.received() > at,
                "{name}'s transfer stalled at {at} bytes after {step}"
            );
        }
    };
    moving_on("its start");

    // A's control is killed: the host data plane forwards on with its keys.
    let iface_a = legs[0].hub.iface.clone();
    util::signal(legs[0].hub.pid(), util::SIGKILL);
    assert!(util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || { legs[0].hub.exit_status().is_some() }
    ));
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 2);
    moving_on("A's control was killed");

    // Started again, it re-attaches to its tenant: the session goes on
    // (the peer saw no new handshake).
    // (Reaped, and its stale UAPI socket removed, before the new one binds.)
    legs[0].hub.stop();
    legs[0].hub = Impl::WirespeedUdp.start_with(&hub, &iface_a, &env);
    assert!(
        util::wait_until(Duration::from_secs(5), Duration::from_millis(10), || legs
            [0]
        .hub
        .log()
        .contains("re-attached to the running data plane")),
        "{}",
        legs[0].hub.log()
    );
    assert!(util::children_of(legs[0].hub.pid()).is_empty());
    reconfigure_hub(&hub, &legs[0], legs[0].port);
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 3);
    assert_eq!(
        legs[0].peer_peer().latest_handshake,
        hs_a,
        "A's session was not kept"
    );
    moving_on("A was restarted and reconfigured");

    // A new listen port: only A's sockets move.
    let new_port = 52000;
    reconfigure_hub(&hub, &legs[0], new_port);
    assert!(
        util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            listening(&hub, new_port) && !listening(&hub, legs[0].port)
        }),
        "A's port did not move; log:\n{}",
        host.log()
    );
    // B's and C's ports are theirs: A cannot have them too (SO_REUSEPORT
    // would split their datagrams between them).
    for l in &legs[1..] {
        assert!(listening(&hub, l.port), "{}'s port moved too", l.hub.iface);
        let out = hub.try_exec(&["wg", "set", &iface_a, "listen-port", &l.port.to_string()]);
        assert!(!out.status.success(), "A took {}'s port", l.hub.iface);
    }
    assert!(listening(&hub, new_port));
    let a = &legs[0];
    a.peer.wg_set(
        &a.peer_ns,
        &[
            "peer",
            &a.hub_keys.public,
            "endpoint",
            &format!("{}:{new_port}", a.hub_addr),
        ],
    );
    assert_ping(&a.peer_ns, &a.hub_tun.to_string(), 3);
    moving_on("A's port moved");

    // A deleted: its tenant goes (its port closes), the host stays.
    let before_delete: Vec<PeerStatus> = legs[1..].iter().map(|l| l.hub_peer(&hub)).collect();
    hub.ip(&["link", "del", &iface_a]);
    assert!(
        util::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            let gone = host
                .log()
                .lines()
                .any(|l| l.contains(&format!("{iface_a}: ")) && l.contains("detached"));
            gone && !listening(&hub, new_port)
        }),
        "A's tenant is still there; log:\n{}",
        host.log()
    );
    assert!(host.running());
    moving_on("A was deleted");
    if xdp {
        assert_steered_at_least(&host, &before_delete);
    }

    // B and C never noticed.
    let mut sent = Vec::new();
    for (name, t) in transfers {
        let r = t.finish();
        r.assert_intact(r.bytes_sent);
        // At least the MiB of each step above.
        assert!(r.bytes_sent >= 5 << 20, "{name}: {r:?}");
        if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
            eprintln!("  {name}: {} bytes in {:?}", r.bytes_sent, r.elapsed);
        }
        sent.push(r.bytes_sent);
    }
    let rest = &legs[1..];
    for l in rest {
        assert_ping(&l.peer_ns, &l.hub_tun.to_string(), 2);
    }
    quiesce(&hub, rest);
    if xdp {
        assert_transport_took_af_xdp(&hub, rest, &at_start);
    }
    let (hub_b, hub_c) = (rest[0].hub_peer(&hub), rest[1].hub_peer(&hub));
    assert!(hub_b.rx >= sent[0], "B: {hub_b:?}, {} sent", sent[0]);
    assert!(hub_c.tx >= sent[1], "C: {hub_c:?}, {} sent", sent[1]);
    assert_exact_counters(&hub, rest, &at_start);
}

/// The XDP program's figures that the host data plane logs when a tenant
/// goes (the uplink's, every tenant's) count at least the transport
/// messages `tenants` (each the hub's view of a leg's peer) had received
/// before: B's and C's traffic went through it.
fn assert_steered_at_least(host: &HostDp, tenants: &[PeerStatus]) {
    let steered = || {
        host.log().lines().rev().find_map(|l| {
            let (_, rest) = l.split_once("XDP on up0: ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let logged = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        steered().is_some()
    });
    assert!(logged, "no XDP figures; log:\n{}", host.log());
    // A message is MAX_MESSAGE bytes at most; the handshakes were counted
    // but not steered.
    let least: u64 = tenants
        .iter()
        .map(|p| p.rx.saturating_sub(HANDSHAKE_SLACK) / MAX_MESSAGE)
        .sum();
    let steered = steered().unwrap_or(0);
    assert!(
        steered >= least && least > 0,
        "{steered} steered, {least} transport messages received at least"
    );
    if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
        eprintln!("  XDP on up0: {steered} steered, B and C had {least} at least");
    }
}

#[test]
fn controls_attach_again_when_the_host_data_plane_dies() {
    let Some(_serial) = netns_test("host_dataplane_dies") else {
        return;
    };
    let hub = Netns::new();
    let mut host = HostDp::start(&hub, 2);
    let mut legs = legs(&hub, &host, &[Impl::WirespeedUdp, Impl::WireguardGo]);
    for l in &legs {
        assert_ping(&l.peer_ns, &l.hub_tun.to_string(), 2);
    }
    let old = host.pid();
    util::signal(old, util::SIGKILL);
    assert!(util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || !host.running()
    ));
    // WIRESPEED_DATAPLANE=host: a control starts another one (in its own
    // process group, inside the hub namespace, ended with it), and both
    // attach to it again with the sessions in their regions.
    for l in &mut legs {
        let attached_again =
            util::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
                l.hub.log().contains("data plane restarted")
            });
        assert!(
            attached_again,
            "{} did not attach again:\n{}",
            l.hub.iface,
            l.hub.log()
        );
        l.hub.assert_running();
    }
    for l in &legs {
        assert_ping(&l.peer_ns, &l.hub_tun.to_string(), 3);
    }
    let pids: Vec<u32> = legs
        .iter()
        .map(|l| {
            let line = l
                .hub
                .log()
                .lines()
                .rev()
                .find(|x| x.contains("data plane restarted"))
                .unwrap()
                .to_string();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_ne!(pids[0], old);
    assert_eq!(
        pids[0], pids[1],
        "both must be tenants of one new host data plane"
    );
}

#[test]
fn a_planned_detach_leaves_the_tenant_to_the_next_control() {
    let Some(_serial) = netns_test("host_dataplane_planned_detach") else {
        return;
    };
    let hub = Netns::new();
    let host = HostDp::start(&hub, 2);
    let mut legs = legs(&hub, &host, &[Impl::WirespeedUdp, Impl::WireguardGo]);
    let env = host.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for l in &legs {
        assert_ping(&l.peer_ns, &l.hub_tun.to_string(), 2);
    }
    let hs = legs[1].peer_peer().latest_handshake;
    let iface = legs[1].hub.iface.clone();
    let out = hub.exec(&[env!("CARGO_BIN_EXE_wirespeed"), "--detach", &iface]);
    assert!(out.contains("detached"), "{out}");
    assert!(util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || { legs[1].hub.exit_status().is_some() }
    ));
    // No control: the host data plane forwards on, and the other tenant
    // never noticed.
    assert_ping(&legs[1].peer_ns, &legs[1].hub_tun.to_string(), 2);
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 2);
    legs[1].hub.stop();
    legs[1].hub = Impl::WirespeedUdp.start_with(&hub, &iface, &env);
    assert!(
        util::wait_until(Duration::from_secs(5), Duration::from_millis(10), || legs
            [1]
        .hub
        .log()
        .contains("re-attached to the running data plane")),
        "{}",
        legs[1].hub.log()
    );
    reconfigure_hub(&hub, &legs[1], legs[1].port);
    assert_ping(&legs[1].peer_ns, &legs[1].hub_tun.to_string(), 3);
    assert_eq!(
        legs[1].peer_peer().latest_handshake,
        hs,
        "the session was not kept"
    );
}

/// Waits for the seccomp filter, which goes on once the workers have
/// started (after the attach socket is there).
fn wait_sandboxed(host: &HostDp) {
    assert!(
        util::wait_until(Duration::from_secs(5), Duration::from_millis(10), || host
            .log()
            .contains("seccomp filter on")),
        "{}",
        host.log()
    );
}

fn assert_attacher(host: &HostDp) -> u32 {
    assert_attacher_of(host.pid())
}

/// The process `pid` ends (soon: with its parent, or reaped by it).
fn assert_gone(pid: u32) {
    let gone = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "process {pid} is still there");
}

fn assert_threads(host: &HostDp, want: &Privileges) {
    let threads = threads_of(host.pid());
    assert!(
        threads.iter().any(|(n, _)| n.starts_with("worker-")),
        "{threads:?}"
    );
    for (name, p) in &threads {
        assert_eq!(
            p,
            want,
            "host data plane thread {name}; log:\n{}",
            host.log()
        );
    }
}

/// The host data plane runs sandboxed from its start, and stays so, and
/// working, through what it does for its whole life: a tenant attaching
/// (descriptors received, region mapped, sockets bound), one going with
/// its control dead (its region removed), a listen port moved (sockets
/// bound again), a control restarted (re-attach).
#[test]
fn the_host_data_plane_is_sandboxed_through_attach_rebind_and_reattach() {
    let Some(_serial) = netns_test("host_dataplane_sandbox") else {
        return;
    };
    let hub = Netns::new();
    let host = HostDp::start(&hub, 2);
    let want = with_caps(KEPT, 2);
    assert!(util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || host.log().contains("seccomp filter on")
    ));
    assert_threads(&host, &want);
    let mut legs = legs(&hub, &host, &[Impl::WirespeedUdp, Impl::WireguardGo]);
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 2);
    assert_threads(&host, &want);

    // B's control killed, its interface deleted: the tenant goes, and its
    // region is removed in the directory opened at start (no open by path).
    let iface_b = legs[1].hub.iface.clone();
    let regions = |iface: &str| {
        let suffix = format!("-{iface}.region");
        std::fs::read_dir("/run/wirespeed")
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(&suffix)
            })
            .count()
    };
    assert_eq!(regions(&iface_b), 1);
    kill_and_delete(&hub, &host, &mut legs[1].hub, &iface_b);
    assert_eq!(regions(&iface_b), 0);
    assert_threads(&host, &want);

    let new_port = 52010;
    reconfigure_hub(&hub, &legs[0], new_port);
    assert!(
        util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            listening(&hub, new_port)
        }),
        "not rebound; log:\n{}",
        host.log()
    );
    let a = &legs[0];
    a.peer.wg_set(
        &a.peer_ns,
        &[
            "peer",
            &a.hub_keys.public,
            "endpoint",
            &format!("{}:{new_port}", a.hub_addr),
        ],
    );
    assert_ping(&a.peer_ns, &a.hub_tun.to_string(), 2);
    assert_threads(&host, &want);

    // A control restarted takes its tenant over (descriptors sent back).
    let env = host.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // (Killed: a control that stops detaches its tenant on purpose.)
    let iface = legs[0].hub.iface.clone();
    util::signal(legs[0].hub.pid(), util::SIGKILL);
    assert!(util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || legs[0].hub.exit_status().is_some()
    ));
    legs[0].hub.stop();
    legs[0].hub = Impl::WirespeedUdp.start_with(&hub, &iface, &env);
    assert!(
        util::wait_until(Duration::from_secs(5), Duration::from_millis(10), || legs
            [0]
        .hub
        .log()
        .contains("re-attached to the running data plane")),
        "{}",
        legs[0].hub.log()
    );
    assert_threads(&host, &want);

    // The control that re-attached killed too, its interface deleted: the
    // region is removed all the same (the host follows the control that
    // took the tenant over, seen alive at a slow tick).
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 2);
    std::thread::sleep(Duration::from_millis(1500));
    kill_and_delete(&hub, &host, &mut legs[0].hub, &iface);
    assert_eq!(regions(&iface), 0);
    assert!(
        !host.log().contains("Operation not permitted"),
        "{}",
        host.log()
    );
}

/// Kills the control `hub` of `iface` (-9) and deletes the interface: its
/// tenant goes, and with its control gone for good, the host data plane
/// removes its region.
fn kill_and_delete(hub_ns: &Netns, host: &HostDp, hub: &mut Daemon, iface: &str) {
    util::signal(hub.pid(), util::SIGKILL);
    assert!(util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || hub.exit_status().is_some()
    ));
    hub_ns.ip(&["link", "del", iface]);
    assert!(
        util::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            host.log().contains(&format!(
                "{iface}: control is gone: removed the shared region"
            ))
        }),
        "{}",
        host.log()
    );
}

/// The escape hatch: no filter, the rest of the sandbox stays.
#[test]
fn the_host_data_plane_without_seccomp_keeps_the_rest_of_its_sandbox() {
    let Some(_serial) = netns_test("host_dataplane_seccomp_off") else {
        return;
    };
    let hub = Netns::new();
    let host = HostDp::start_with(&hub, 2, "udp", &[("WIRESPEED_SECCOMP", "off")]);
    assert!(util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || host
            .log()
            .contains("no seccomp filter (WIRESPEED_SECCOMP=off)")
    ));
    let legs = legs(&hub, &host, &[Impl::WirespeedUdp]);
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 2);
    assert_threads(&host, &with_caps(KEPT, 0));
}

/// A control in another network namespace, where the UDP sockets the host
/// data plane binds would not reach it, does not attach: it says why and
/// runs a data plane of its own. (It is the control that checks: the
/// sandboxed host data plane cannot look at another process's namespace.)
#[test]
fn a_control_in_another_namespace_runs_a_data_plane_of_its_own() {
    let Some(_serial) = netns_test("host_dataplane_other_netns") else {
        return;
    };
    let hub = Netns::new();
    let host = HostDp::start(&hub, 1);
    let other = Netns::new();
    let socket = host.socket.display().to_string();
    let mut c = Impl::WirespeedUdp.start_with(
        &other,
        &unique_name("o"),
        &[("WIRESPEED_DATAPLANE_SOCKET", socket.as_str())],
    );
    c.assert_running();
    assert!(
        c.log().contains("in another network namespace"),
        "{}",
        c.log()
    );
    assert_eq!(util::children_of(c.pid()).len(), 1, "{}", c.log());
    assert!(!host.log().contains("attached"), "{}", host.log());
}

/// The pids of the host data planes running inside `ns` (not their XDP
/// attachers, forked with the same command line).
fn host_dataplanes_in(ns: &Netns) -> Vec<u32> {
    ns.pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == b"--host-dataplane"))
                .unwrap_or(false)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() != "xdp-attacher")
        })
        .collect()
}

#[test]
fn wirespeed_dataplane_host_starts_one_host_data_plane_per_network_namespace() {
    let Some(_serial) = netns_test("host_dataplane_per_netns") else {
        return;
    };
    let (a_ns, b_ns) = (Netns::new(), Netns::new());
    veth(
        &a_ns,
        "u1",
        Some("10.0.1.1/24"),
        &b_ns,
        "veth0",
        Some("10.0.1.2/24"),
    );
    // The default socket path (empty: not a test's own), as in production:
    // each namespace must get its own host data plane there, not be
    // refused by the other namespace's one.
    let env = [
        ("WIRESPEED_DATAPLANE", "host"),
        ("WIRESPEED_DATAPLANE_SOCKET", ""),
    ];
    let (a_if, b_if) = (unique_name("h"), unique_name("h"));
    let a = Impl::WirespeedUdp.start_with(&a_ns, &a_if, &env);
    let b = Impl::WirespeedUdp.start_with(&b_ns, &b_if, &env);
    let (ak, bk) = (Keys::generate(), Keys::generate());
    let conf = |me: &Keys, peer: &Keys, tun: &str, peer_tun: &str, peer_at: &str| IfaceConf {
        private_key: me.private.clone(),
        listen_port: Some(51820),
        peers: vec![PeerConf {
            public_key: peer.public.clone(),
            allowed_ips: vec![format!("{peer_tun}/32")],
            endpoint: Some(format!("{peer_at}:51820")),
            ..PeerConf::default()
        }],
        addresses: vec![format!("{tun}/24")],
        ..IfaceConf::default()
    };
    a.configure(&a_ns, &conf(&ak, &bk, "10.30.0.1", "10.30.0.2", "10.0.1.2"));
    b.configure(&b_ns, &conf(&bk, &ak, "10.30.0.2", "10.30.0.1", "10.0.1.1"));
    assert_ping(&a_ns, "10.30.0.2", 2);
    for (ns, d) in [(&a_ns, &a), (&b_ns, &b)] {
        let hosts = host_dataplanes_in(ns);
        assert_eq!(
            hosts.len(),
            1,
            "{}: host data planes {hosts:?}; log:\n{}",
            ns.name(),
            d.log()
        );
    }
}

#[test]
fn a_host_data_plane_started_on_demand_exits_with_its_last_tenant() {
    let Some(_serial) = netns_test("host_dataplane_exits_when_idle") else {
        return;
    };
    let ns = Netns::new();
    let env = [
        ("WIRESPEED_DATAPLANE", "host"),
        ("WIRESPEED_DATAPLANE_SOCKET", ""),
    ];
    let mut a = Impl::WirespeedUdp.start_with(&ns, &unique_name("h"), &env);
    let mut b = Impl::WirespeedUdp.start_with(&ns, &unique_name("h"), &env);
    let hosts = host_dataplanes_in(&ns);
    assert_eq!(hosts.len(), 1, "{hosts:?}; log:\n{}", a.log());
    // One tenant left: it stays.
    a.stop();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(host_dataplanes_in(&ns), hosts, "log:\n{}", b.log());
    b.assert_running();
    // The last one went: nothing else would end it (the namespace's
    // deletion does not), and it would keep the namespace alive.
    b.stop();
    let gone = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        host_dataplanes_in(&ns).is_empty()
    });
    assert!(gone, "still running: {:?}", host_dataplanes_in(&ns));
    // A control after it starts the next one.
    let c = Impl::WirespeedUdp.start_with(&ns, &unique_name("h"), &env);
    let next = host_dataplanes_in(&ns);
    assert_eq!(next.len(), 1, "log:\n{}", c.log());
}

/// A control that finds its host data plane gone and its interface deleted
/// (both while it was not looking, as on a loaded machine: `wg-quick down`
/// while the host data plane exits with its last tenant) does not start
/// another one for nothing, which would wait half a minute for a tenant.
#[test]
fn a_control_whose_interface_went_starts_no_host_data_plane() {
    let Some(_serial) = netns_test("host_dataplane_no_start_for_nothing") else {
        return;
    };
    let ns = Netns::new();
    let env = [("WIRESPEED_DATAPLANE_SOCKET", "")];
    let iface = unique_name("h");
    let mut a = Impl::WirespeedUdp.start_with(&ns, &iface, &env);
    let hosts = host_dataplanes_in(&ns);
    assert_eq!(hosts.len(), 1, "{hosts:?}; log:\n{}", a.log());
    // Started, and stopped for sure (SIGSTOP takes effect asynchronously).
    let started = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        a.log().contains("attached to the host data plane")
    });
    assert!(started, "log:\n{}", a.log());
    // Attached long enough ago (10 s) that losing the host data plane is
    // answered at once, not after a back-off.
    std::thread::sleep(Duration::from_millis(10_500));
    util::signal(a.pid(), util::SIGSTOP);
    let stopped = util::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        std::fs::read_to_string(format!("/proc/{}/stat", a.pid()))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('T')))
    });
    assert!(stopped);
    util::signal(hosts[0], util::SIGKILL);
    ns.ip(&["link", "del", &iface]);
    let killed = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        host_dataplanes_in(&ns).is_empty()
    });
    assert!(killed);
    util::signal(a.pid(), util::SIGCONT);
    let exited = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        a.exit_status().is_some()
    });
    assert!(exited, "log:\n{}", a.log());
    assert_eq!(
        host_dataplanes_in(&ns),
        Vec::<u32>::new(),
        "log:\n{}",
        a.log()
    );
}

/// Whether `iface` in `ns` has an XDP program attached.
fn has_xdp(ns: &Netns, iface: &str) -> bool {
    ns.exec(&["ip", "-o", "link", "show", "dev", iface])
        .contains(" prog/xdp")
}

/// The uplinks come long after the start, as the peers do, and the
/// sandbox stays whole: the programs and sockets come from the host's XDP
/// attacher, a child that keeps what attaching takes and goes with the
/// host data plane.
#[test]
fn without_a_list_of_uplinks_af_xdp_follows_every_tenants_peers() {
    let Some(_serial) = netns_test("host_dataplane_follows_peers") else {
        return;
    };
    let hub = Netns::new();
    // WIRESPEED_BACKEND=xdp (Impl::Wirespeed) and no WIRESPEED_XDP_IFACES:
    // the uplinks are the routes to the peers, as with a data plane of
    // one's own; u3 leads to no peer and stays as it was.
    let env = [
        ("WIRESPEED_DATAPLANE", "host"),
        ("WIRESPEED_DATAPLANE_SOCKET", ""),
    ];
    let spare = Netns::new();
    veth(&hub, "u3", Some("10.0.3.1/24"), &spare, "veth0", None);
    let mut legs = Vec::new();
    for n in 1..=2u8 {
        let peer_ns = Netns::new();
        let uplink = format!("u{n}");
        veth(
            &hub,
            &uplink,
            Some(&format!("10.0.{n}.1/24")),
            &peer_ns,
            "veth0",
            Some(&format!("10.0.{n}.2/24")),
        );
        let (hk, pk) = (Keys::generate(), Keys::generate());
        let port = 51820 + u16::from(n);
        let (hub_tun, peer_tun) = (format!("10.4{n}.0.1"), format!("10.4{n}.0.2"));
        let h = Impl::Wirespeed.start_with(&hub, &unique_name("h"), &env);
        let p = Impl::WireguardGo.start(&peer_ns, &unique_name("p"));
        let conf = |me: &Keys, peer: &Keys, lp, tun: &str, ptun: &str, ep: String| IfaceConf {
            private_key: me.private.clone(),
            listen_port: Some(lp),
            peers: vec![PeerConf {
                public_key: peer.public.clone(),
                allowed_ips: vec![format!("{ptun}/32")],
                endpoint: Some(ep),
                ..PeerConf::default()
            }],
            addresses: vec![format!("{tun}/24")],
            ..IfaceConf::default()
        };
        h.configure(
            &hub,
            &conf(
                &hk,
                &pk,
                port,
                &hub_tun,
                &peer_tun,
                format!("10.0.{n}.2:51820"),
            ),
        );
        p.configure(
            &peer_ns,
            &conf(
                &pk,
                &hk,
                51820,
                &peer_tun,
                &hub_tun,
                format!("10.0.{n}.1:{port}"),
            ),
        );
        legs.push((h, p, peer_ns, uplink, hub_tun));
    }
    for (h, _, peer_ns, uplink, hub_tun) in &legs {
        // The line comes once the workers have the uplink's sockets.
        let line = format!("backend: AF_XDP on {uplink} ");
        let on = util::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            has_xdp(&hub, uplink) && legs[0].0.log().contains(&line)
        });
        assert!(on, "no XDP program on {uplink}; log:\n{}", legs[0].0.log());
        assert_ping(peer_ns, hub_tun, 3);
        assert!(h.dump(&hub).peers[0].rx > 0);
    }
    assert!(!has_xdp(&hub, "u3"), "u3 leads to no peer");
    let hosts = host_dataplanes_in(&hub);
    assert_eq!(hosts.len(), 1);
    for (name, p) in threads_of(hosts[0]) {
        assert_eq!(
            p,
            with_caps(KEPT, 2),
            "host data plane thread {name}; log:\n{}",
            legs[0].0.log()
        );
    }
    let attacher = assert_attacher_of(hosts[0]);
    // The first tenant that goes logs the programs' figures (the host's
    // log is its control's, which started it): the pings came through
    // AF_XDP on both uplinks.
    for (h, ..) in &mut legs {
        h.stop();
    }
    let log = legs[0].0.log();
    for uplink in ["u1", "u2"] {
        assert!(
            util::steered(&log, uplink) >= 3,
            "the program on {uplink} steered the pings:\n{log}"
        );
    }
    // The last tenant gone, the host data plane exits, its attacher too.
    let ended = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        host_dataplanes_in(&hub).is_empty()
    });
    assert!(ended, "{log}");
    assert_gone(attacher);
    assert!(!has_xdp(&hub, "u1") && !has_xdp(&hub, "u2"));
}

/// auto without named uplinks follows the peers as a data plane of its
/// own does: on veth AF_XDP binds in copy mode only and UDP with GSO is
/// faster, so the tenants keep their UDP sockets, the uplink keeps no
/// program, and the attacher, with nothing left to do, ends.
#[test]
fn auto_without_a_list_of_uplinks_weighs_af_xdp_as_a_data_plane_of_its_own_does() {
    let Some(_serial) = netns_test("host_dataplane_auto_follows") else {
        return;
    };
    let hub = Netns::new();
    let host = HostDp::start_with(&hub, 2, "auto", &[]);
    wait_sandboxed(&host);
    let attacher = assert_attacher(&host);
    let legs = legs(&hub, &host, &[Impl::WireguardGo]);
    let weighed = util::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        host.log().contains("AF_XDP binds in copy mode only")
    });
    assert!(weighed, "{}", host.log());
    assert_gone(attacher);
    assert!(!has_xdp(&hub, &legs[0].uplink));
    assert_ping(&legs[0].peer_ns, &legs[0].hub_tun.to_string(), 2);
    assert_threads(&host, &with_caps(KEPT, 2));
}
