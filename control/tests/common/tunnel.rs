//! Two namespaces joined through a third (the "wire": a bridge whose ports
//! are the capture points), one implementation on each side, keys,
//! tunnel addresses and peers configured: a tunnel ready to carry traffic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::checks::Capture;
use super::checks::{self, Dump, IfStats, PeerStatus, UdpStats};
use super::impls::{genpsk, Counting, Daemon, IfaceConf, Impl, Keys, PeerConf};
use super::netns::{attach, bridge, Netns};
use super::util::{self, unique_name};

/// Name of the underlay veth on both sides.
pub const UNDERLAY_IF: &str = "veth0";
/// The wire namespace's bridge and its ports towards A and B.
pub const WIRE_BRIDGE: &str = "br0";
pub const WIRE_PORT_A: &str = "pa";
pub const WIRE_PORT_B: &str = "pb";

#[derive(Clone, Debug)]
pub struct TunnelOpts {
    /// A preshared key on both sides.
    pub psk: bool,
    /// Persistent keepalive A -> B, seconds.
    pub keepalive_a: Option<u16>,
    /// Persistent keepalive B -> A, seconds.
    pub keepalive_b: Option<u16>,
    /// A is configured with B's endpoint (default true).
    pub a_knows_b: bool,
    /// B is configured with A's endpoint (default true; false makes B a
    /// "server" that learns A's endpoint from A's first packet).
    pub b_knows_a: bool,
    /// A is configured with a random public key for B instead of B's.
    pub a_wrong_peer_key: bool,
    /// Environment for A's daemon on top of (overriding) its `Impl::env`.
    pub a_env: Vec<(&'static str, &'static str)>,
    /// Runs once A's underlay is up, before A's daemon starts (e.g. to put
    /// something on A's uplink that the daemon must find there).
    pub a_prepare: Option<fn(&Netns)>,
}

impl Default for TunnelOpts {
    fn default() -> TunnelOpts {
        TunnelOpts {
            psk: false,
            keepalive_a: None,
            keepalive_b: None,
            a_knows_b: true,
            b_knows_a: true,
            a_wrong_peer_key: false,
            a_env: Vec::new(),
            a_prepare: None,
        }
    }
}

/// One end. Field order matters: the daemon stops before its namespace goes.
pub struct Side {
    pub imp: Impl,
    pub daemon: Daemon,
    pub ns: Netns,
    pub keys: Keys,
    /// The WireGuard interface (also the UAPI socket name).
    pub iface: String,
    pub underlay_ip: Ipv4Addr,
    pub tunnel_ip: Ipv4Addr,
    pub port: u16,
    /// The configuration applied (one peer: the other side).
    pub conf: IfaceConf,
}

impl Side {
    pub fn dump(&self) -> Dump {
        self.daemon.dump(&self.ns)
    }

    /// The status of this side's only peer.
    pub fn peer(&self) -> PeerStatus {
        let d = self.dump();
        assert_eq!(
            d.peers.len(),
            1,
            "{} ({}) should have one peer: {d:#?}",
            self.iface,
            self.imp
        );
        d.peers[0].clone()
    }

    /// Counters of the tunnel interface (TUN).
    pub fn tun_stats(&self) -> IfStats {
        checks::iface_stats(&self.ns, &self.iface)
    }

    pub fn underlay_stats(&self) -> IfStats {
        checks::iface_stats(&self.ns, UNDERLAY_IF)
    }

    pub fn udp_stats(&self) -> UdpStats {
        checks::udp_stats(&self.ns)
    }

    /// Datagrams lost on the way in at this side, as far as the kernel
    /// knows: UDP socket drops (receive buffer full: wireguard-go drops
    /// thousands during a bulk transfer) plus drops on the underlay veth.
    /// An AF_XDP receiver that drops (ring full) must be added here.
    pub fn drops(&self) -> u64 {
        self.udp_stats().in_errors + self.underlay_stats().rx_dropped
    }

    pub fn showconf(&self) -> String {
        self.daemon.showconf(&self.ns)
    }

    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.underlay_ip), self.port)
    }

    pub fn tunnel_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.tunnel_ip), port)
    }

    /// Changes this side's peer (the other side) with `f` and applies it
    /// (see [`Daemon::set_peer`]: on boringtun this restarts the session).
    /// Waits until this side's data plane has put its XDP program on
    /// `uplink` (it does once a configured peer's route leaves through it,
    /// a fraction of a second after configuration); false after `timeout`.
    pub fn wait_xdp_on(&self, uplink: &str, timeout: Duration) -> bool {
        let line = format!("backend: AF_XDP on {uplink} ");
        util::wait_until(timeout, Duration::from_millis(20), || {
            self.daemon.log().contains(&line)
        })
    }

    pub fn update_peer(&mut self, f: impl FnOnce(&mut PeerConf)) {
        f(&mut self.conf.peers[0]);
        self.daemon.set_peer(&self.ns, &self.conf.peers[0]);
    }
}

/// A (10.0.0.1, port 51820, tunnel 10.9.0.1/24) <-> B (10.0.0.2, 51821,
/// 10.9.0.2/24); each side allows exactly the other's tunnel address (/32);
/// MTU 1420. The underlay: A's `veth0` <-> port `pa` of bridge `br0` in the
/// wire namespace, port `pb` <-> B's `veth0`. Captures are taken on `pa` in
/// the wire namespace, which sees every frame between A and B whatever the
/// ends do (an XDP program on an end's veth hides redirected frames from a
/// tcpdump there; AF_XDP transmits may bypass the sender's taps).
pub struct Tunnel {
    pub a: Side,
    pub b: Side,
    pub wire: Netns,
    pub opts: TunnelOpts,
    /// Drop counters of A and B when the tunnel came up (before any
    /// traffic); see [`Side::drops`].
    pub drops_at_start: (u64, u64),
}

impl Tunnel {
    pub fn new(a: Impl, b: Impl) -> Tunnel {
        Tunnel::with(a, b, TunnelOpts::default())
    }

    pub fn with(a_imp: Impl, b_imp: Impl, opts: TunnelOpts) -> Tunnel {
        let t0 = Instant::now();
        let ns_a = Netns::new();
        let ns_b = Netns::new();
        let wire = Netns::new();
        bridge(&wire, WIRE_BRIDGE);
        attach(
            &wire,
            WIRE_BRIDGE,
            WIRE_PORT_A,
            &ns_a,
            UNDERLAY_IF,
            "10.0.0.1/24",
        );
        attach(
            &wire,
            WIRE_BRIDGE,
            WIRE_PORT_B,
            &ns_b,
            UNDERLAY_IF,
            "10.0.0.2/24",
        );
        let (ka, kb) = (Keys::generate(), Keys::generate());
        let psk = opts.psk.then(genpsk);
        let (ia, ib) = (unique_name("i"), unique_name("i"));
        if let Some(prepare) = opts.a_prepare {
            prepare(&ns_a);
        }
        let da = a_imp.start_with(&ns_a, &ia, &opts.a_env);
        let db = b_imp.start(&ns_b, &ib);
        let a = Side {
            imp: a_imp,
            daemon: da,
            ns: ns_a,
            keys: ka,
            iface: ia,
            underlay_ip: Ipv4Addr::new(10, 0, 0, 1),
            tunnel_ip: Ipv4Addr::new(10, 9, 0, 1),
            port: 51820,
            conf: IfaceConf::default(),
        };
        let b = Side {
            imp: b_imp,
            daemon: db,
            ns: ns_b,
            keys: kb,
            iface: ib,
            underlay_ip: Ipv4Addr::new(10, 0, 0, 2),
            tunnel_ip: Ipv4Addr::new(10, 9, 0, 2),
            port: 51821,
            conf: IfaceConf::default(),
        };
        let b_key_at_a = if opts.a_wrong_peer_key {
            Keys::generate().public
        } else {
            b.keys.public.clone()
        };
        let conf = |me: &Side, peer: &Side, peer_key: String, knows: bool, keepalive| IfaceConf {
            private_key: me.keys.private.clone(),
            listen_port: Some(me.port),
            peers: vec![PeerConf {
                public_key: peer_key,
                preshared_key: psk.clone(),
                allowed_ips: vec![format!("{}/32", peer.tunnel_ip)],
                endpoint: knows.then(|| peer.endpoint().to_string()),
                keepalive,
            }],
            addresses: vec![format!("{}/24", me.tunnel_ip)],
            ..IfaceConf::default()
        };
        let mut a = a;
        let mut b = b;
        a.conf = conf(&a, &b, b_key_at_a, opts.a_knows_b, None);
        b.conf = conf(&b, &a, a.keys.public.clone(), opts.b_knows_a, None);
        a.daemon.configure(&a.ns, &a.conf);
        b.daemon.configure(&b.ns, &b.conf);
        // Persistent keepalives only once both sides are configured: the
        // first keepalive (and the handshake it starts) goes out at once,
        // and would be lost on a half-configured peer (then retried 5 s
        // later). On boringtun this re-adds the peer, before any session.
        if let Some(k) = opts.keepalive_a {
            a.update_peer(|p| p.keepalive = Some(k));
        }
        if let Some(k) = opts.keepalive_b {
            b.update_peer(|p| p.keepalive = Some(k));
        }
        let drops_at_start = (a.drops(), b.drops());
        if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
            eprintln!("  tunnel {a_imp} <-> {b_imp} up in {:?}", t0.elapsed());
        }
        Tunnel {
            a,
            b,
            wire,
            opts,
            drops_at_start,
        }
    }

    /// tcpdump on the wire between A and B (port `pa` of the bridge).
    pub fn capture(&self, filter: &str) -> Capture {
        Capture::start(&self.wire, WIRE_PORT_A, filter)
    }

    /// Both daemons still alive.
    pub fn assert_running(&mut self) {
        self.a.daemon.assert_running();
        self.b.daemon.assert_running();
    }

    /// Waits until both sides report a handshake with each other.
    pub fn wait_handshake(&self, timeout: Duration) -> bool {
        util::wait_until(timeout, Duration::from_millis(50), || {
            self.a.peer().latest_handshake.is_some() && self.b.peer().latest_handshake.is_some()
        })
    }

    /// Waits until neither side's `wg show` counters move for 300 ms (no
    /// packets in flight), up to `timeout`; returns the last snapshot.
    pub fn quiesce(&self, timeout: Duration) -> (PeerStatus, PeerStatus) {
        let deadline = Instant::now() + timeout;
        let mut last = (self.a.peer(), self.b.peer());
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = (self.a.peer(), self.b.peer());
            let same = now.0.rx == last.0.rx
                && now.0.tx == last.0.tx
                && now.1.rx == last.1.rx
                && now.1.tx == last.1.tx;
            last = now;
            if same || Instant::now() > deadline {
                return last;
            }
        }
    }

    /// Checks that what each side says it sent matches what the other says
    /// it received, given how each implementation counts; see
    /// [`check_counters`].
    pub fn check_counters(&self) {
        let (pa, pb) = self.quiesce(Duration::from_secs(3));
        let (ta, tb) = (self.a.tun_stats(), self.b.tun_stats());
        let drops_a = self.a.drops() - self.drops_at_start.0;
        let drops_b = self.b.drops() - self.drops_at_start.1;
        let ab = check_counters(self.a.imp, pa.tx, self.b.imp, pb.rx, tb.rx_packets, drops_b);
        let ba = check_counters(self.b.imp, pb.tx, self.a.imp, pa.rx, ta.rx_packets, drops_a);
        let errs: Vec<String> = [ab, ba].into_iter().filter_map(Result::err).collect();
        if !errs.is_empty() {
            panic!(
                "counters disagree: {}\nA ({}) peer: {pa:?}\nB ({}) peer: {pb:?}\n\
                 A tun {ta:?}\nB tun {tb:?}\ndrops at A {drops_a}, at B {drops_b}",
                errs.join("; "),
                self.a.imp,
                self.b.imp
            );
        }
        if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
            eprintln!(
                "  counters: A tx {} rx {} | B tx {} rx {} | tun rx pkts A {} B {} | drops A {drops_a} B {drops_b}",
                pa.tx, pa.rx, pb.tx, pb.rx, ta.rx_packets, tb.rx_packets
            );
        }
    }
}

/// Largest UDP payload of one WireGuard message on this tunnel (MTU 1420 +
/// 32 bytes of header and tag; handshake messages are smaller).
pub const MAX_MESSAGE: u64 = 1420 + 32;
/// Slack for handshake and keepalive messages that one side counts and the
/// other, counting inner bytes, does not: a few handshakes (148 + 92) and
/// keepalives (32).
pub const HANDSHAKE_SLACK: u64 = 4 * (148 + 92) + 16 * 32;

/// Compares one direction: `tx` as counted by `sender`, `rx` as counted by
/// `receiver`; `delivered` is the number of data packets the receiver wrote
/// into its TUN, `drops` the datagrams its UDP stack dropped (socket buffer
/// full) over the same period.
///
/// * Same counting: `tx - rx` is exactly the bytes lost on the way, so 0
///   when nothing was dropped, between 32 and 1452 bytes per drop otherwise.
///   A receiver that drops where the kernel cannot see it (an AF_XDP ring
///   overflowing) shows up as a mismatch: count those drops in
///   [`Side::drops`].
/// * Wire-bytes sender, inner-bytes receiver (wireguard-go -> boringtun):
///   each delivered message costs 32 bytes of header and tag plus 0..15 of
///   padding on the sender's side only; handshakes and keepalives only there.
/// * Inner-bytes sender, wire-bytes receiver (boringtun -> wireguard-go):
///   the receiver adds 32 per message plus the sender's padding (boringtun
///   pads nothing) and the handshakes and keepalives it received.
pub fn check_counters(
    sender: Impl,
    tx: u64,
    receiver: Impl,
    rx: u64,
    delivered: u64,
    drops: u64,
) -> Result<(), String> {
    let (tx, rx, n) = (tx as i128, rx as i128, delivered as i128);
    let lost = (drops * MAX_MESSAGE) as i128;
    let slack = HANDSHAKE_SLACK as i128;
    let dir = format!("{sender} tx {tx} -> {receiver} rx {rx}");
    match (sender.counting(), receiver.counting()) {
        (a, b) if a == b => {
            let d = tx - rx;
            if drops == 0 && d != 0 {
                return Err(format!(
                    "{dir}: differ by {d} with no drops seen (must be equal)"
                ));
            }
            // Each lost message is a whole one: 32 bytes at least.
            let least = 32 * drops as i128;
            if !(least..=lost).contains(&d) {
                return Err(format!(
                    "{dir}: differ by {d}, {drops} drops allow {least}..={lost}"
                ));
            }
        }
        (Counting::WireBytes, Counting::InnerBytes) => {
            let d = tx - rx - 32 * n;
            if !(0..=15 * n + slack + lost).contains(&d) {
                return Err(format!(
                    "{dir}: tx - rx - 32*{n} delivered = {d}, outside 0..={} (padding, handshakes, drops)",
                    15 * n + slack + lost
                ));
            }
        }
        (Counting::InnerBytes, Counting::WireBytes) => {
            let d = rx - tx - 32 * n;
            if !(-lost..=15 * n + slack).contains(&d) {
                return Err(format!(
                    "{dir}: rx - tx - 32*{n} delivered = {d}, outside {}..={} (padding, handshakes, drops)",
                    -lost,
                    15 * n + slack
                ));
            }
        }
        _ => unreachable!(),
    }
    Ok(())
}
