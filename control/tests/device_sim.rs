//! Two sans-IO devices joined by a simulated network and clock: handshake,
//! transport both ways, rekeying, silence, key expiry, cookies under load,
//! replayed initiations and wrong keys. Hours of protocol run in milliseconds.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use control::device::{Device, DeviceSettings, Drop, Event, Output, PeerId, PeerSettings};
use control::keys::{PresharedKey, PrivateKey, PublicKey};
use dataplane::consts::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
};
use dataplane::messages::{
    message_type, MSG_COOKIE_REPLY, MSG_INITIATION, MSG_RESPONSE, MSG_TRANSPORT,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const UNIX_START: Duration = Duration::from_secs(1_750_000_000);

/// An IPv4 packet from `src` to `dst` carrying `payload` (protocol 253, experimental).
fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        253,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let mut sum = 0u32;
    for c in p.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

struct Node {
    dev: Device,
    addr: SocketAddr,
    peer: PeerId,
    delivered: Vec<Vec<u8>>,
    events: Vec<Event>,
    drops: Vec<Drop>,
    /// Every datagram this node sent, with its type byte.
    sent: Vec<Vec<u8>>,
}

struct Sim {
    nodes: [Node; 2],
    now: Duration,
    wire: VecDeque<(usize, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Datagrams from node i are lost while `mute[i]`.
    mute: [bool; 2],
}

struct Opts {
    psk: Option<[u8; 32]>,
    threshold: u32,
    /// Node 1 is told a wrong public key for node 0.
    wrong_key_at_1: bool,
    keepalive_0: Option<u64>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            psk: None,
            threshold: 10_000,
            wrong_key_at_1: false,
            keepalive_0: None,
        }
    }
}

fn device(seed: u64, key: &PrivateKey, threshold: u32) -> Device {
    let settings = DeviceSettings {
        under_load_threshold: threshold,
        ..Default::default()
    };
    let mut d = Device::new(
        UNIX_START,
        Box::new(ChaCha20Rng::seed_from_u64(seed)),
        settings,
    );
    d.set_private_key(Some(key.clone()));
    d
}

impl Sim {
    fn new(o: Opts) -> Sim {
        let k0 = PrivateKey::from_bytes([0x10; 32]);
        let k1 = PrivateKey::from_bytes([0x20; 32]);
        let a0: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let a1: SocketAddr = "198.51.100.1:51821".parse().unwrap();
        let mut d0 = device(1, &k0, o.threshold);
        let mut d1 = device(2, &k1, o.threshold);
        let psk = o.psk.map(PresharedKey::from_bytes);
        let mut s0 = PeerSettings::new(k1.public_key());
        s0.endpoint = Some(a1);
        s0.preshared_key = psk.clone();
        s0.allowed_ips = vec![("10.0.0.2".parse().unwrap(), 32)];
        s0.persistent_keepalive = o.keepalive_0.map(Duration::from_secs);
        let mut s1 = PeerSettings::new(if o.wrong_key_at_1 {
            PublicKey([0x77; 32])
        } else {
            k0.public_key()
        });
        s1.endpoint = Some(a0);
        s1.preshared_key = psk;
        s1.allowed_ips = vec![("10.0.0.1".parse().unwrap(), 32)];
        let p0 = d0.upsert_peer(s0).unwrap();
        let p1 = d1.upsert_peer(s1).unwrap();
        let node = |dev, addr, peer| Node {
            dev,
            addr,
            peer,
            delivered: vec![],
            events: vec![],
            drops: vec![],
            sent: vec![],
        };
        Sim {
            nodes: [node(d0, a0, p0), node(d1, a1, p1)],
            now: Duration::ZERO,
            wire: VecDeque::new(),
            mute: [false; 2],
        }
    }

    fn absorb(&mut self, i: usize, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Send { to, datagram } => {
                    self.nodes[i].sent.push(datagram.clone());
                    if !self.mute[i] {
                        let from = self.nodes[i].addr;
                        self.wire.push_back((i, from, to, datagram));
                    }
                }
                Output::Deliver { packet, .. } => self.nodes[i].delivered.push(packet),
                Output::Event(e) => self.nodes[i].events.push(e),
                o => panic!("data plane output from a full-mode device: {o:?}"),
            }
        }
    }

    /// Delivers everything on the wire (and whatever that provokes).
    fn flush(&mut self) {
        while let Some((from_node, from, to, dg)) = self.wire.pop_front() {
            let dst = 1 - from_node;
            if self.nodes[dst].addr.ip() != to.ip() {
                continue; // addressed to an old endpoint: lost
            }
            let mut out = Vec::new();
            if let Err(d) = self.nodes[dst]
                .dev
                .handle_datagram(self.now, from, &dg, &mut out)
            {
                self.nodes[dst].drops.push(d);
            }
            self.absorb(dst, out);
        }
    }

    /// Node `i` sends an inner packet with `payload` to the other node.
    fn send(&mut self, i: usize, payload: &[u8]) -> Result<(), Drop> {
        let (src, dst) = if i == 0 {
            ([10, 0, 0, 1], [10, 0, 0, 2])
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1])
        };
        let mut out = Vec::new();
        let r = self.nodes[i]
            .dev
            .handle_packet(self.now, &ipv4(src, dst, payload), &mut out);
        self.absorb(i, out);
        self.flush();
        r.map(|_| ())
    }

    /// Advances the clock in 100 ms steps, running timers and the network.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(100)).min(end);
            for i in 0..2 {
                let mut out = Vec::new();
                self.nodes[i].dev.update_timers(self.now, &mut out);
                self.absorb(i, out);
            }
            self.flush();
        }
    }

    fn count_sent(&self, i: usize, ty: u8) -> usize {
        self.nodes[i]
            .sent
            .iter()
            .filter(|d| message_type(d) == Ok(ty))
            .count()
    }

    fn handshakes_completed(&self, i: usize) -> usize {
        self.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::HandshakeCompleted { .. }))
            .count()
    }

    fn current_index(&self, i: usize) -> Option<u32> {
        let n = &self.nodes[i];
        n.dev
            .peer(n.peer)
            .unwrap()
            .keypairs
            .current
            .as_ref()
            .map(|k| k.local_index)
    }
}

fn payload_of(p: &[u8]) -> &[u8] {
    &p[20..]
}

#[test]
fn handshake_then_transport_both_ways() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"ping").unwrap();
    assert_eq!(s.count_sent(0, MSG_INITIATION), 1);
    assert_eq!(s.count_sent(1, MSG_RESPONSE), 1);
    assert_eq!(
        s.nodes[1].delivered.len(),
        1,
        "staged packet delivered after the handshake"
    );
    assert_eq!(payload_of(&s.nodes[1].delivered[0]), b"ping");
    assert_eq!(s.handshakes_completed(0), 1);
    assert_eq!(
        s.handshakes_completed(1),
        1,
        "responder confirmed by the first data message"
    );
    s.send(1, b"pong").unwrap();
    assert_eq!(payload_of(&s.nodes[0].delivered[0]), b"pong");
    for n in 0..50u8 {
        s.send(n as usize % 2, &[n; 100]).unwrap();
    }
    assert_eq!(s.nodes[0].delivered.len() + s.nodes[1].delivered.len(), 52);
    assert!(
        s.nodes.iter().all(|n| n.drops.is_empty()),
        "{:?}",
        s.nodes[1].drops
    );
    // Counters: what one side sent is what the other received.
    let p0 = s.nodes[0].dev.peer(s.nodes[0].peer).unwrap();
    let p1 = s.nodes[1].dev.peer(s.nodes[1].peer).unwrap();
    assert_eq!(p0.tx_bytes, p1.rx_bytes);
    assert_eq!(p1.tx_bytes, p0.rx_bytes);
    assert_eq!(p0.last_handshake, Some(UNIX_START));
    // Transport messages are padded to 16: 20 + 4 bytes of "ping" -> 32.
    let first_data = s.nodes[0]
        .sent
        .iter()
        .find(|d| d[0] == MSG_TRANSPORT)
        .unwrap();
    assert_eq!(first_data.len(), 16 + 32 + 16);
}

#[test]
fn with_preshared_key_and_mismatch() {
    let mut s = Sim::new(Opts {
        psk: Some([9; 32]),
        ..Default::default()
    });
    s.send(0, b"x").unwrap();
    assert_eq!(s.nodes[1].delivered.len(), 1);

    let mut s = Sim::new(Opts {
        psk: Some([9; 32]),
        ..Default::default()
    });
    // Same peer, but node 1's PSK for it now differs.
    let k = s.nodes[1].dev.peer(s.nodes[1].peer).unwrap().public_key;
    let mut ps = PeerSettings::new(k);
    ps.preshared_key = Some(PresharedKey::from_bytes([8; 32]));
    s.nodes[1].dev.upsert_peer(ps);
    s.send(0, b"x").unwrap();
    assert!(s.nodes[0].drops.contains(&Drop::HandshakeFailed));
    assert!(s.nodes[1].delivered.is_empty());
}

#[test]
fn initiation_from_either_side_and_crossing_initiations() {
    let mut s = Sim::new(Opts::default());
    s.send(1, b"from responder side").unwrap();
    assert_eq!(s.nodes[0].delivered.len(), 1);

    // Both sides initiate at the same instant: the network must settle on a
    // working session both ways.
    let mut s = Sim::new(Opts::default());
    let mut o0 = Vec::new();
    let mut o1 = Vec::new();
    s.nodes[0]
        .dev
        .handle_packet(s.now, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"a"), &mut o0)
        .unwrap();
    s.nodes[1]
        .dev
        .handle_packet(s.now, &ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"b"), &mut o1)
        .unwrap();
    s.absorb(0, o0);
    s.absorb(1, o1);
    s.flush();
    s.advance(Duration::from_secs(30));
    s.send(0, b"c").unwrap();
    s.send(1, b"d").unwrap();
    let got0: Vec<&[u8]> = s.nodes[0].delivered.iter().map(|p| payload_of(p)).collect();
    let got1: Vec<&[u8]> = s.nodes[1].delivered.iter().map(|p| payload_of(p)).collect();
    assert!(got1.contains(&&b"c"[..]), "{got1:?}");
    assert!(got0.contains(&&b"d"[..]), "{got0:?}");
}

#[test]
fn rekey_after_120_seconds_keeps_traffic_flowing() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"start").unwrap();
    let first = s.current_index(0).unwrap();
    // Traffic every second for five minutes of simulated time.
    for sec in 1..=300u32 {
        s.advance(Duration::from_secs(1));
        s.send((sec % 2) as usize, &sec.to_le_bytes()).unwrap();
    }
    let delivered = s.nodes[0].delivered.len() + s.nodes[1].delivered.len();
    assert_eq!(delivered, 301, "no packet lost across rekeys");
    assert_ne!(s.current_index(0), Some(first));
    // About one rekey per REKEY_AFTER_TIME (either side may initiate).
    let inits = s.count_sent(0, MSG_INITIATION) + s.count_sent(1, MSG_INITIATION);
    assert!((3..=6).contains(&inits), "{inits} initiations in 300 s");
    assert!(s.nodes.iter().all(|n| !n.drops.contains(&Drop::KeyExpired)));
}

#[test]
fn initiator_rekeys_on_send_after_rekey_after_time() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"a").unwrap();
    s.advance(REKEY_AFTER_TIME - Duration::from_secs(1));
    let before = s.count_sent(0, MSG_INITIATION);
    s.send(0, b"b").unwrap();
    assert_eq!(s.count_sent(0, MSG_INITIATION), before);
    s.advance(Duration::from_secs(2));
    s.send(0, b"c").unwrap();
    assert_eq!(s.count_sent(0, MSG_INITIATION), before + 1);
    assert_eq!(s.nodes[1].delivered.len(), 3);
}

#[test]
fn silent_peer_new_handshake_retries_and_give_up() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"hello").unwrap();
    s.mute[1] = true; // peer 1 goes silent
    s.send(0, b"anyone?").unwrap();
    let base = s.count_sent(0, MSG_INITIATION);
    // Data sent, nothing heard for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: new handshake.
    s.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - Duration::from_millis(200));
    assert_eq!(s.count_sent(0, MSG_INITIATION), base);
    s.advance(Duration::from_millis(600));
    assert_eq!(s.count_sent(0, MSG_INITIATION), base + 1);
    // Then retries every REKEY_TIMEOUT (+ jitter) until REKEY_ATTEMPT_TIME.
    // (No new data meanwhile: sending data re-arms the new-handshake timer,
    // which starts a fresh series of attempts, as in the kernel.)
    s.advance(REKEY_ATTEMPT_TIME + REKEY_TIMEOUT * 2);
    let retries = s.count_sent(0, MSG_INITIATION) - base - 1;
    assert_eq!(retries as u32, dataplane::consts::MAX_TIMER_HANDSHAKES);
    assert!(s.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::HandshakeGaveUp { .. })));
    // Silence after giving up.
    let n = s.count_sent(0, MSG_INITIATION);
    s.advance(Duration::from_secs(60));
    assert_eq!(s.count_sent(0, MSG_INITIATION), n);
    // Peer comes back; new traffic brings a new session.
    s.mute[1] = false;
    s.send(0, b"back").unwrap();
    assert_eq!(payload_of(s.nodes[1].delivered.last().unwrap()), b"back");
}

#[test]
fn passive_keepalive_after_receiving_data() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"q").unwrap();
    let n = s.nodes[1]
        .sent
        .iter()
        .filter(|d| d[0] == MSG_TRANSPORT)
        .count();
    s.advance(KEEPALIVE_TIMEOUT + Duration::from_millis(200));
    let keepalives: Vec<_> = s.nodes[1]
        .sent
        .iter()
        .filter(|d| d[0] == MSG_TRANSPORT)
        .skip(n)
        .collect();
    assert_eq!(keepalives.len(), 1);
    assert_eq!(keepalives[0].len(), 32, "keepalive = header + tag");
    s.advance(Duration::from_secs(60));
    assert_eq!(
        s.nodes[1]
            .sent
            .iter()
            .filter(|d| d[0] == MSG_TRANSPORT)
            .count(),
        n + 1,
        "only one"
    );
}

#[test]
fn persistent_keepalive_at_configured_interval() {
    let mut s = Sim::new(Opts {
        keepalive_0: Some(25),
        ..Default::default()
    });
    s.send(0, b"x").unwrap();
    let start = s.nodes[0].sent.len();
    // Node 1's passive keepalive arrives at 10 s and restarts the interval
    // (any authenticated packet does): node 0 then sends at 35, 60, 85, 110.
    s.advance(Duration::from_secs(110));
    let ka = s.nodes[0].sent[start..]
        .iter()
        .filter(|d| d[0] == MSG_TRANSPORT && d.len() == 32)
        .count();
    assert_eq!(ka, 4, "one every 25 s");
    s.advance(Duration::from_secs(24));
    let ka2 = s.nodes[0].sent[start..]
        .iter()
        .filter(|d| d[0] == MSG_TRANSPORT && d.len() == 32)
        .count();
    assert_eq!(ka2, 4, "not sooner than the interval");
}

#[test]
fn keys_expire_after_reject_after_time_and_are_erased() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"a").unwrap();
    // Capture a transport message to replay much later.
    let old = s.nodes[0]
        .sent
        .iter()
        .rev()
        .find(|d| d[0] == MSG_TRANSPORT)
        .unwrap()
        .clone();
    // Both sides muted: no rekey can happen.
    s.mute = [true, true];
    s.advance(REJECT_AFTER_TIME + Duration::from_secs(1));
    let mut out = Vec::new();
    let from = s.nodes[0].addr;
    let mut old2 = old.clone();
    old2[8] = old2[8].wrapping_add(100); // a fresh counter, so replay is not the reason
    let r = s.nodes[1].dev.handle_datagram(s.now, from, &old2, &mut out);
    assert!(
        matches!(r, Err(Drop::KeyExpired) | Err(Drop::UnknownIndex)),
        "{r:?}"
    );
    // The expired key is never used to send: sending stages and initiates.
    let before = s.count_sent(0, MSG_TRANSPORT);
    let _ = s.send(0, b"late");
    assert_eq!(s.count_sent(0, MSG_TRANSPORT), before);
    // After 3 x REJECT_AFTER_TIME everything is erased.
    s.advance(REJECT_AFTER_TIME * 2);
    assert!(s.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, Event::KeysErased { .. })));
    let p = s.nodes[1].dev.peer(s.nodes[1].peer).unwrap();
    assert!(
        p.keypairs.current.is_none() && p.keypairs.previous.is_none() && p.keypairs.next.is_none()
    );
    let r = s.nodes[1].dev.handle_datagram(s.now, from, &old, &mut out);
    assert_eq!(r, Err(Drop::UnknownIndex));
}

#[test]
fn replayed_transport_and_initiation_refused() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"once").unwrap();
    let init = s.nodes[0]
        .sent
        .iter()
        .find(|d| d[0] == MSG_INITIATION)
        .unwrap()
        .clone();
    let data = s.nodes[0]
        .sent
        .iter()
        .find(|d| d[0] == MSG_TRANSPORT)
        .unwrap()
        .clone();
    let from = s.nodes[0].addr;
    let mut out = Vec::new();
    assert_eq!(
        s.nodes[1].dev.handle_datagram(s.now, from, &data, &mut out),
        Err(Drop::Replay)
    );
    s.now += Duration::from_secs(10);
    assert_eq!(
        s.nodes[1].dev.handle_datagram(s.now, from, &init, &mut out),
        Err(Drop::ReplayedInitiation)
    );
    assert!(out.is_empty(), "no response to a replayed initiation");
    assert_eq!(s.nodes[1].delivered.len(), 1);
}

#[test]
fn wrong_static_key_never_gets_a_session() {
    let mut s = Sim::new(Opts {
        wrong_key_at_1: true,
        ..Default::default()
    });
    let _ = s.send(0, b"let me in");
    s.advance(Duration::from_secs(30));
    assert!(
        s.nodes[1].drops.contains(&Drop::UnknownPeer),
        "{:?}",
        s.nodes[1].drops
    );
    assert_eq!(s.count_sent(1, MSG_RESPONSE), 0);
    assert!(s.nodes[1].delivered.is_empty());
    assert_eq!(s.handshakes_completed(0), 0);
}

#[test]
fn cookie_exchange_under_load() {
    // Threshold 0: every handshake message puts the responder under load.
    let mut s = Sim::new(Opts {
        threshold: 0,
        ..Default::default()
    });
    s.send(0, b"busy?").unwrap();
    assert_eq!(
        s.count_sent(1, MSG_COOKIE_REPLY),
        1,
        "first initiation answered with a cookie"
    );
    assert_eq!(s.count_sent(1, MSG_RESPONSE), 0);
    // The retransmission carries mac2 and is answered. Node 0 is also under load
    // when the response arrives, so the responder's mac2 matters too: node 1 gets
    // a cookie from node 0 in turn and the handshake completes on a later try.
    s.advance(Duration::from_secs(20));
    assert!(s.count_sent(1, MSG_RESPONSE) >= 1);
    assert_eq!(payload_of(&s.nodes[1].delivered[0]), b"busy?");
    let init2 = s.nodes[0]
        .sent
        .iter()
        .filter(|d| d[0] == MSG_INITIATION)
        .nth(1)
        .unwrap();
    assert_ne!(
        &init2[132..148],
        &[0u8; 16],
        "mac2 present after the cookie"
    );
}

#[test]
fn handshake_flood_from_spoofed_sources_does_not_block_honest_peer() {
    let mut s = Sim::new(Opts {
        threshold: 5,
        ..Default::default()
    });
    // Establish the honest peer's session first so it holds a cookie path.
    let init = {
        let mut out = Vec::new();
        s.nodes[0]
            .dev
            .handle_packet(s.now, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), &mut out)
            .unwrap();
        match &out[0] {
            Output::Send { datagram, .. } => datagram.clone(),
            o => panic!("{o:?}"),
        }
    };
    // 1,000 copies of a (valid-mac1) initiation from spoofed addresses. Once
    // past the threshold of 5 per second, each gets only a cookie reply.
    for i in 0..1000u32 {
        let from = SocketAddr::new(IpAddr::from([203, 0, (i >> 8) as u8, i as u8]), 1000);
        let mut out = Vec::new();
        let _ = s.nodes[1].dev.handle_datagram(s.now, from, &init, &mut out);
        if i < 6 {
            continue;
        }
        assert!(out.iter().all(
            |o| matches!(o, Output::Send { datagram, .. } if datagram[0] == MSG_COOKIE_REPLY)
        ));
    }
    assert!(s.nodes[1].dev.under_load(s.now));
    // The honest peer still gets through: cookie, then mac2, then response.
    s.advance(Duration::from_secs(12));
    s.send(0, b"honest").unwrap();
    assert!(s.nodes[1]
        .delivered
        .iter()
        .any(|p| payload_of(p) == b"honest"));
}

#[test]
fn source_outside_allowed_ips_is_dropped() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"ok").unwrap();
    // Node 0 claims 10.9.9.9 as source: node 1 only allows 10.0.0.1 from it.
    let mut out = Vec::new();
    let _ = s.nodes[0].dev.handle_packet(
        s.now,
        &ipv4([10, 9, 9, 9], [10, 0, 0, 2], b"spoof"),
        &mut out,
    );
    s.absorb(0, out);
    s.flush();
    assert!(s.nodes[1].drops.contains(&Drop::SourceNotAllowed));
    assert_eq!(s.nodes[1].delivered.len(), 1);
    // No route: a destination outside every peer's AllowedIPs.
    let mut out = Vec::new();
    assert_eq!(
        s.nodes[0]
            .dev
            .handle_packet(s.now, &ipv4([10, 0, 0, 1], [8, 8, 8, 8], b"x"), &mut out),
        Err(Drop::NoRoute)
    );
}

#[test]
fn roaming_updates_endpoint() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"before").unwrap();
    s.nodes[0].addr = "192.0.2.99:40000".parse().unwrap();
    s.send(0, b"after").unwrap();
    let ep = s.nodes[1].dev.peer(s.nodes[1].peer).unwrap().endpoint;
    assert_eq!(ep, Some(s.nodes[0].addr));
    assert!(s.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, Event::EndpointChanged { .. })));
    s.send(1, b"reply reaches new address").unwrap();
    assert_eq!(
        payload_of(s.nodes[0].delivered.last().unwrap()),
        b"reply reaches new address"
    );
}

#[test]
fn responder_does_not_send_on_unconfirmed_keys() {
    let mut s = Sim::new(Opts::default());
    // Deliver only the initiation to node 1; hold node 1's response.
    let mut out = Vec::new();
    s.nodes[0]
        .dev
        .handle_packet(s.now, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), &mut out)
        .unwrap();
    let init = match &out[0] {
        Output::Send { datagram, .. } => datagram.clone(),
        o => panic!("{o:?}"),
    };
    let mut out = Vec::new();
    s.nodes[1]
        .dev
        .handle_datagram(s.now, s.nodes[0].addr, &init, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1);
    // Node 1 has data for node 0 but only a `next` keypair: it must not use it.
    let mut out = Vec::new();
    s.nodes[1]
        .dev
        .handle_packet(
            s.now,
            &ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"early"),
            &mut out,
        )
        .unwrap();
    assert!(out
        .iter()
        .all(|o| !matches!(o, Output::Send { datagram, .. } if datagram[0] == MSG_TRANSPORT)));
}

#[test]
fn garbage_datagrams_are_dropped_without_effect() {
    let mut s = Sim::new(Opts::default());
    s.send(0, b"a").unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let from = s.nodes[0].addr;
    for len in 0..400usize {
        let mut b = vec![0u8; len];
        rand_chacha::rand_core::RngCore::fill_bytes(&mut rng, &mut b);
        if len > 0 {
            b[0] = (len % 6) as u8;
        }
        if len > 4 {
            b[1..4].fill(0);
        }
        let mut out = Vec::new();
        assert!(s.nodes[1]
            .dev
            .handle_datagram(s.now, from, &b, &mut out)
            .is_err());
        assert!(out.is_empty());
    }
    s.send(0, b"still fine").unwrap();
    assert_eq!(s.nodes[1].delivered.len(), 2);
}

/// An initiation to node 1 with a valid mac1 from a device node 1 does not
/// know: what a flooder who knows the server's public key sends. Node 1
/// gets as far as the DH before refusing it, unless it is under load.
fn stranger_initiation(s: &Sim) -> Vec<u8> {
    let mut d = device(9, &PrivateKey::from_bytes([0x30; 32]), 10_000);
    let mut p = PeerSettings::new(s.nodes[1].dev.public_key().unwrap());
    p.endpoint = Some(s.nodes[1].addr);
    p.allowed_ips = vec![("10.0.0.2".parse().unwrap(), 32)];
    let id = d.upsert_peer(p).unwrap();
    let mut out = Vec::new();
    d.request_handshake(id, s.now, &mut out);
    match &out[..] {
        [Output::Send { datagram, .. }] => datagram.clone(),
        o => panic!("{o:?}"),
    }
}

/// `n` copies of `dg` to node 1 from spoofed sources at the current time.
fn flood_node1(s: &mut Sim, dg: &[u8], n: u32) {
    for i in 0..n {
        let from = SocketAddr::new(IpAddr::from([203, 0, (i >> 8) as u8, i as u8]), 1000);
        let mut out = Vec::new();
        let _ = s.nodes[1].dev.handle_datagram(s.now, from, dg, &mut out);
    }
}

/// Node 0 loses its session (a restart, say) and sends a new initiation,
/// which is returned and not put on the wire.
fn fresh_initiation_from_node0(s: &mut Sim) -> Vec<u8> {
    let mut out = Vec::new();
    let p = s.nodes[0].peer;
    s.nodes[0].dev.expire_sessions(p, &mut out);
    s.nodes[0].dev.request_handshake(p, s.now, &mut out);
    s.nodes[0].sent.extend(out.iter().filter_map(|o| match o {
        Output::Send { datagram, .. } => Some(datagram.clone()),
        _ => None,
    }));
    out.into_iter()
        .find_map(|o| match o {
            Output::Send { datagram, .. } if datagram[0] == MSG_INITIATION => Some(datagram),
            _ => None,
        })
        .expect("an initiation")
}

/// Node 1's answers to `dg` from `from`, by message type.
fn answer_types(s: &mut Sim, from: SocketAddr, dg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.nodes[1].dev.handle_datagram(s.now, from, dg, &mut out);
    let types = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { datagram, .. } => Some(datagram[0]),
            _ => None,
        })
        .collect();
    s.absorb(1, out);
    types
}

#[test]
fn invalid_mac1_flood_does_not_count_toward_load() {
    let mut s = Sim::new(Opts {
        threshold: 5,
        ..Default::default()
    });
    let init = fresh_initiation_from_node0(&mut s);
    // Garbage from someone who does not know node 1's public key: the
    // stranger's initiation with its mac1 broken.
    let mut junk = stranger_initiation(&s);
    junk[116] ^= 0xff;
    flood_node1(&mut s, &junk, 1000);
    assert!(
        !s.nodes[1].dev.under_load(s.now),
        "junk put node 1 under load"
    );
    let from = s.nodes[0].addr;
    assert_eq!(
        answer_types(&mut s, from, &init),
        vec![MSG_RESPONSE],
        "answered directly, no cookie round trip"
    );
}

#[test]
fn known_endpoint_answered_directly_under_valid_mac1_flood() {
    let mut s = Sim::new(Opts {
        threshold: 5,
        ..Default::default()
    });
    s.send(0, b"first").unwrap();
    assert_eq!(s.handshakes_completed(1), 1);
    assert_eq!(s.nodes[1].dev.known_endpoints(), 1);
    s.advance(Duration::from_secs(10));
    let flood = stranger_initiation(&s);
    flood_node1(&mut s, &flood, 1000);
    assert!(s.nodes[1].dev.under_load(s.now));
    let init = fresh_initiation_from_node0(&mut s);
    let from = s.nodes[0].addr;
    assert_eq!(answer_types(&mut s, from, &init), vec![MSG_RESPONSE]);
    s.flush();
    assert_eq!(s.handshakes_completed(0), 2, "re-handshake done at once");
    assert_eq!(s.nodes[1].dev.known_endpoints(), 1, "one address per peer");
}

#[test]
fn new_address_under_flood_takes_one_cookie_round_trip() {
    let mut s = Sim::new(Opts {
        threshold: 5,
        ..Default::default()
    });
    s.send(0, b"first").unwrap();
    s.advance(Duration::from_secs(10));
    let flood = stranger_initiation(&s);
    s.nodes[0].addr = "192.0.2.77:40000".parse().unwrap();
    flood_node1(&mut s, &flood, 1000);
    let init = fresh_initiation_from_node0(&mut s);
    let from = s.nodes[0].addr;
    assert_eq!(answer_types(&mut s, from, &init), vec![MSG_COOKIE_REPLY]);
    s.flush();
    // The flood goes on, 100 a second; node 0 retries with mac2.
    let start = s.now;
    while s.handshakes_completed(0) < 2 && s.now < start + Duration::from_secs(10) {
        flood_node1(&mut s, &flood, 10);
        s.advance(Duration::from_millis(100));
    }
    assert!(s.nodes[1].dev.under_load(s.now));
    assert_eq!(s.handshakes_completed(0), 2);
    assert!(
        s.now - start < Duration::from_millis(6500),
        "one cookie round trip, took {:?}",
        s.now - start
    );
}

#[test]
fn spoofer_of_a_known_endpoint_spends_only_its_rate_limit() {
    let mut s = Sim::new(Opts {
        threshold: 5,
        ..Default::default()
    });
    s.send(0, b"first").unwrap();
    s.advance(Duration::from_secs(10));
    let flood = stranger_initiation(&s);
    flood_node1(&mut s, &flood, 1000);
    // 100 copies from node 0's address: the per-source burst of 5 reaches
    // the DH (and fails there: unknown peer); the rest get cookies.
    let known = s.nodes[0].addr;
    let mut types = Vec::new();
    for _ in 0..100 {
        types.extend(answer_types(&mut s, known, &flood));
    }
    let cookies = types.iter().filter(|&&t| t == MSG_COOKIE_REPLY).count();
    assert_eq!(cookies, 95, "answered directly while the limiter allowed");
    // The same from any other address: cookies only.
    let other: SocketAddr = "192.0.2.1:51821".parse().unwrap();
    let mut types = Vec::new();
    for _ in 0..100 {
        types.extend(answer_types(&mut s, other, &flood));
    }
    assert_eq!(types, vec![MSG_COOKIE_REPLY; 100]);
    // A removed peer's address is no longer known.
    let p = s.nodes[1].peer;
    s.nodes[1].dev.remove_peer(p);
    assert_eq!(s.nodes[1].dev.known_endpoints(), 0);
    s.advance(Duration::from_secs(1));
    flood_node1(&mut s, &flood, 1000);
    assert_eq!(answer_types(&mut s, known, &flood), vec![MSG_COOKIE_REPLY]);
}
