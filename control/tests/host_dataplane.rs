//! One host data plane (`wirespeed --host-dataplane`) serving several
//! wirespeed interfaces of one namespace as tenants, each with its own
//! listen port and its own peer (wirespeed, wireguard-go, boringtun) in a
//! namespace of its own: traffic on all of them at once, `wg show`
//! counters exact per interface.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::impls::Daemon;
use common::netns::veth;
use common::tunnel::check_counters;
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
        let dir = TempDir::new();
        // A directory it creates itself (0700): TempDir's is world-readable.
        let socket = dir.join("run/dataplane.sock");
        let log_path = dir.join("host.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = ns
            .cmd(env!("CARGO_BIN_EXE_wirespeed"))
            .args(["--host-dataplane", "--backend", "udp", "--workers"])
            .arg(workers.to_string())
            .env("WIRESPEED_DATAPLANE_SOCKET", &socket)
            .env("WIRESPEED_TUN_OFFLOAD", "off")
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
        let up = util::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            h.socket.exists()
        });
        assert!(
            up && h.running(),
            "host data plane not up; log:\n{}",
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

/// Datagrams lost on the way into the hub (shared by its tenants).
fn hub_drops(hub: &Netns, legs: &[Leg]) -> u64 {
    udp_stats(hub).in_errors
        + legs
            .iter()
            .map(|l| iface_stats(hub, &l.uplink).rx_dropped)
            .sum::<u64>()
}

/// The hub `hub` with one wirespeed interface per entry of `peers`, each
/// attached to `host`, listening on 51820 + i, with its peer `peers[i]` in
/// a namespace of its own behind veth 10.0.(i+1).0/24.
fn legs(hub: &Netns, host: &HostDp, peers: &[Impl]) -> Vec<Leg> {
    let env = host.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut out = Vec::new();
    for (i, &imp) in peers.iter().enumerate() {
        let n = i as u8 + 1;
        let peer_ns = Netns::new();
        let uplink = format!("u{n}");
        veth(
            hub,
            &uplink,
            Some(&format!("10.0.{n}.1/24")),
            &peer_ns,
            "veth0",
            Some(&format!("10.0.{n}.2/24")),
        );
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
                    endpoint: Some(format!("10.0.{n}.2:51820")),
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
                    endpoint: Some(format!("10.0.{n}.1:{port}")),
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
        });
    }
    out
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
    let hub = Netns::new();
    let mut host = HostDp::start(&hub, 2);
    let mut legs = legs(
        &hub,
        &host,
        &[Impl::WirespeedUdp, Impl::WireguardGo, Impl::Boringtun],
    );
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
    let hub_drops_0 = hub_drops(&hub, &legs);
    let peer_drops_0: Vec<u64> = legs.iter().map(Leg::peer_drops).collect();
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
    quiesce(&hub, &legs);
    let hub_lost = hub_drops(&hub, &legs) - hub_drops_0;
    let mut errs = Vec::new();
    for (i, l) in legs.iter().enumerate() {
        let (hp, pp) = (l.hub_peer(&hub), l.peer_peer());
        assert!(hp.rx >= BYTES && hp.tx >= BYTES, "{}: {hp:?}", l.hub.iface);
        let hub_tun = iface_stats(&hub, &l.hub.iface);
        let peer_tun = iface_stats(&l.peer_ns, &l.peer.iface);
        let peer_lost = l.peer_drops() - peer_drops_0[i];
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
        eprintln!("  host data plane pid {}, hub drops {hub_lost}", host.pid());
    }
}
