//! Byte-level interop against real WireGuard implementations, offline.
//!
//! `tests/data/interop/capture.sh` ran our sans-IO device (through
//! `examples/interop_probe.rs`, over a real UDP socket) against wireguard-go
//! and boringtun, each once as initiator and once as responder, and stored
//! the probe's transcript beside a tcpdump of the wire. Here, without root or
//! network, for each capture:
//!
//! - every datagram of the transcript is found byte for byte, with its
//!   addresses and in order, in the pcap: the bytes really crossed the wire;
//! - a fresh device with the transcript's seed, keys and `unix_at_zero`, fed
//!   the same inputs at the same `now`, produces byte-identical datagrams,
//!   the same deliveries and events and the same results: so what we replay
//!   is exactly what the real peer saw, and since the real peer then sent
//!   transport data (and echo replies) under keys it could only derive from
//!   our handshake message, it accepted our messages;
//! - the real peer's handshake message has the documented layout and is
//!   accepted, its transport messages decrypt to the expected ICMP packets,
//!   and corrupted, replayed or misaddressed copies of its messages are
//!   refused without disturbing the session.

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use control::cookie::MacKeys;
use control::device::{Device, DeviceSettings, Drop, Output, PeerSettings};
use control::keys::{PrivateKey, PublicKey};
use dataplane::messages::{
    INITIATION_LEN, MAC_LEN, MSG_INITIATION, MSG_RESPONSE, MSG_TRANSPORT, RESPONSE_LEN,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

// ---------------------------------------------------------------------------
// pcap

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UdpRecord {
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const DLT_RAW: u32 = 12;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// Parses a classic libpcap file (either byte order, µs or ns timestamps)
/// and returns its UDP datagrams over IPv4 or IPv6. Link types: Ethernet
/// (with 802.1Q tags), raw IP, Linux cooked v1 and v2. Everything else in
/// the capture (ARP, other protocols, IP fragments) is skipped.
fn parse_pcap(file: &[u8]) -> Result<Vec<UdpRecord>, String> {
    if file.len() < 24 {
        return Err("shorter than a pcap global header".into());
    }
    let magic = [file[0], file[1], file[2], file[3]];
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => {
            return Err(format!(
                "not a pcap file (magic {magic:02x?}; pcapng is not supported)"
            ))
        }
    };
    let u32_at = |at: usize| {
        let b = [file[at], file[at + 1], file[at + 2], file[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    // Two u16 fields, major then minor, in the file's byte order.
    let major = if little {
        u16::from_le_bytes([file[4], file[5]])
    } else {
        u16::from_be_bytes([file[4], file[5]])
    };
    if major != 2 {
        return Err(format!("pcap major version {major}"));
    }
    // The link type is the low 16 bits of the last header word (the upper
    // bits may carry FCS information).
    let linktype = u32_at(20) & 0xffff;
    let mut out = Vec::new();
    let mut at = 24;
    while at < file.len() {
        if at + 16 > file.len() {
            return Err(format!("truncated record header at offset {at}"));
        }
        let incl = u32_at(at + 8) as usize;
        let orig = u32_at(at + 12) as usize;
        let start = at + 16;
        let end = start + incl;
        if end > file.len() {
            return Err(format!("truncated record at offset {at}"));
        }
        at = end;
        if incl < orig {
            continue; // cut by the snap length: cannot be compared byte for byte
        }
        let frame = &file[start..end];
        let ip = match linktype {
            LINKTYPE_ETHERNET => ethernet_payload(frame),
            LINKTYPE_RAW | DLT_RAW => Some(frame),
            LINKTYPE_LINUX_SLL => sll_payload(frame, 16, 14),
            LINKTYPE_LINUX_SLL2 => sll_payload(frame, 20, 0),
            other => return Err(format!("unsupported link type {other}")),
        };
        if let Some(rec) = ip.and_then(ip_udp) {
            out.push(rec);
        }
    }
    Ok(out)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ethernet_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        if frame.len() < at + 2 {
            return None;
        }
        match be16(frame, at) {
            0x8100 | 0x88a8 => at += 4, // VLAN tags
            0x0800 | 0x86dd => return Some(&frame[at + 2..]),
            _ => return None,
        }
    }
}

/// Linux cooked capture: a fixed header with the protocol at `proto_at`.
fn sll_payload(frame: &[u8], header: usize, proto_at: usize) -> Option<&[u8]> {
    if frame.len() < header {
        return None;
    }
    match be16(frame, proto_at) {
        0x0800 | 0x86dd => Some(&frame[header..]),
        _ => None,
    }
}

fn ip_udp(p: &[u8]) -> Option<UdpRecord> {
    let (src, dst, udp) = match p.first()? >> 4 {
        4 => {
            if p.len() < 20 || p[9] != 17 {
                return None;
            }
            let ihl = (p[0] & 15) as usize * 4;
            let total = be16(p, 2) as usize;
            let frag = be16(p, 6);
            if frag & 0x3fff != 0 || ihl < 20 || total < ihl || total > p.len() {
                return None; // fragment, or malformed
            }
            let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
            (src, dst, &p[ihl..total])
        }
        6 => {
            if p.len() < 40 || p[6] != 17 {
                return None; // extension headers are not followed
            }
            let total = 40 + be16(p, 4) as usize;
            if total > p.len() {
                return None;
            }
            let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?));
            let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?));
            (src, dst, &p[40..total])
        }
        _ => return None,
    };
    if udp.len() < 8 {
        return None;
    }
    let len = be16(udp, 4) as usize;
    if len < 8 || len > udp.len() {
        return None;
    }
    Some(UdpRecord {
        src: SocketAddr::new(src, be16(udp, 0)),
        dst: SocketAddr::new(dst, be16(udp, 2)),
        payload: udp[8..len].to_vec(),
    })
}

// ---------------------------------------------------------------------------
// Transcripts

/// What one recorded call produced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Send { to: SocketAddr, bytes: Vec<u8> },
    Deliver(Vec<u8>),
    Event(String),
}

#[derive(Debug, Clone)]
enum InputKind {
    Packet(Vec<u8>),
    Datagram { src: SocketAddr, bytes: Vec<u8> },
    Timers,
}

/// One call into the device, its result and what it produced.
#[derive(Debug, Clone)]
struct Input {
    now: Duration,
    kind: InputKind,
    result: String,
    outputs: Vec<Out>,
}

#[derive(Debug)]
struct Transcript {
    name: String,
    mode: String,
    seed: u64,
    unix_at_zero: Duration,
    private_key: PrivateKey,
    public_key: PublicKey,
    peer_public_key: PublicKey,
    listen: SocketAddr,
    peer_endpoint: Option<SocketAddr>,
    tunnel_ip: Ipv4Addr,
    peer_tunnel_ip: Ipv4Addr,
    inputs: Vec<Input>,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/interop")
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("transcript field {k:?} missing or not a string: {v}"))
}

fn hex_field(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(str_field(v, k)).unwrap_or_else(|e| panic!("field {k:?} is not hex: {e}"))
}

fn load_transcript(name: &str) -> Transcript {
    let path = data_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(str_field(&v, "format"), "wirespeed-interop-transcript-1");
    assert_eq!(
        v["success"],
        Value::Bool(true),
        "{name}: the capture run did not complete"
    );
    let mut inputs: Vec<Input> = Vec::new();
    for e in v["events"].as_array().expect("events") {
        let now = Duration::from_nanos(e["now_ns"].as_u64().expect("now_ns"));
        let kind = match str_field(e, "kind") {
            "packet" => Some(InputKind::Packet(hex_field(e, "bytes"))),
            "datagram_in" => Some(InputKind::Datagram {
                src: str_field(e, "src").parse().expect("src"),
                bytes: hex_field(e, "bytes"),
            }),
            "timers" => Some(InputKind::Timers),
            _ => None,
        };
        if let Some(kind) = kind {
            if let Some(prev) = inputs.last() {
                assert!(prev.now <= now, "{name}: time runs backwards");
            }
            inputs.push(Input {
                now,
                kind,
                result: str_field(e, "result").to_string(),
                outputs: Vec::new(),
            });
            continue;
        }
        let out = match str_field(e, "kind") {
            "datagram_out" => Out::Send {
                to: str_field(e, "to").parse().expect("to"),
                bytes: hex_field(e, "bytes"),
            },
            "deliver" => Out::Deliver(hex_field(e, "bytes")),
            "event" => Out::Event(str_field(e, "event").to_string()),
            k => panic!("{name}: unknown event kind {k:?}"),
        };
        let last = inputs
            .last_mut()
            .unwrap_or_else(|| panic!("{name}: an output before any input"));
        assert_eq!(
            last.now, now,
            "{name}: an output stamped with another time than its input"
        );
        last.outputs.push(out);
    }
    let private_key = PrivateKey::from_base64(str_field(&v, "private_key")).expect("private_key");
    let public_key = PublicKey::from_base64(str_field(&v, "public_key")).expect("public_key");
    assert_eq!(
        private_key.public_key(),
        public_key,
        "{name}: the key pair does not match"
    );
    let peer_endpoint = match &v["peer_endpoint"] {
        Value::Null => None,
        e => Some(
            e.as_str()
                .expect("peer_endpoint")
                .parse()
                .expect("peer_endpoint"),
        ),
    };
    Transcript {
        name: name.to_string(),
        mode: str_field(&v, "mode").to_string(),
        seed: v["seed"].as_u64().expect("seed"),
        unix_at_zero: Duration::from_nanos(v["unix_at_zero_ns"].as_u64().expect("unix_at_zero_ns")),
        private_key,
        public_key,
        peer_public_key: PublicKey::from_base64(str_field(&v, "peer_public_key"))
            .expect("peer_public_key"),
        listen: str_field(&v, "listen").parse().expect("listen"),
        peer_endpoint,
        tunnel_ip: str_field(&v, "tunnel_ip").parse().expect("tunnel_ip"),
        peer_tunnel_ip: str_field(&v, "peer_tunnel_ip")
            .parse()
            .expect("peer_tunnel_ip"),
        inputs,
    }
}

impl Transcript {
    /// A device set up exactly as the probe set up its own.
    fn fresh_device(&self) -> Device {
        let rng = ChaCha20Rng::seed_from_u64(self.seed);
        let mut dev = Device::new(self.unix_at_zero, Box::new(rng), DeviceSettings::default());
        dev.set_private_key(Some(self.private_key.clone()));
        let mut peer = PeerSettings::new(self.peer_public_key);
        peer.endpoint = self.peer_endpoint;
        peer.allowed_ips = vec![(IpAddr::V4(self.peer_tunnel_ip), 32)];
        dev.upsert_peer(peer).expect("peer key differs from ours");
        dev
    }

    /// Every datagram in either direction, in order, as the pcap should hold it.
    fn wire_datagrams(&self) -> Vec<UdpRecord> {
        let mut v = Vec::new();
        for i in &self.inputs {
            if let InputKind::Datagram { src, bytes } = &i.kind {
                v.push(UdpRecord {
                    src: *src,
                    dst: self.listen,
                    payload: bytes.clone(),
                });
            }
            for o in &i.outputs {
                if let Out::Send { to, bytes } = o {
                    v.push(UdpRecord {
                        src: self.listen,
                        dst: *to,
                        payload: bytes.clone(),
                    });
                }
            }
        }
        v
    }

    /// Indices of the inputs that are datagrams from the real peer.
    fn peer_datagrams(&self) -> impl Iterator<Item = (usize, &[u8])> {
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(n, i)| match &i.kind {
                InputKind::Datagram { bytes, .. } => Some((n, bytes.as_slice())),
                _ => None,
            })
    }

    /// The index of the real peer's (only) handshake message.
    fn peer_handshake(&self) -> (usize, &[u8]) {
        let hs: Vec<_> = self
            .peer_datagrams()
            .filter(|(_, b)| b[0] == MSG_INITIATION || b[0] == MSG_RESPONSE)
            .collect();
        assert_eq!(
            hs.len(),
            1,
            "{}: expected one handshake message from the peer",
            self.name
        );
        hs[0]
    }

    /// Every datagram our device sent.
    fn our_datagrams(&self) -> Vec<&[u8]> {
        self.inputs
            .iter()
            .flat_map(|i| &i.outputs)
            .filter_map(|o| match o {
                Out::Send { bytes, .. } => Some(bytes.as_slice()),
                _ => None,
            })
            .collect()
    }
}

fn result_str(r: Result<(), Drop>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(d) => format!("{d:?}"),
    }
}

/// Feeds one recorded input to `dev` and returns its result and outputs.
fn apply(dev: &mut Device, now: Duration, kind: &InputKind) -> (String, Vec<Out>) {
    let mut out = Vec::new();
    let r = match kind {
        InputKind::Packet(p) => dev.handle_packet(now, p, &mut out).map(|_| ()),
        InputKind::Datagram { src, bytes } => dev.handle_datagram(now, *src, bytes, &mut out),
        InputKind::Timers => {
            dev.update_timers(now, &mut out);
            Ok(())
        }
    };
    let outs = out
        .into_iter()
        .map(|o| match o {
            Output::Send { to, datagram } => Out::Send {
                to,
                bytes: datagram,
            },
            Output::Deliver { packet, .. } => Out::Deliver(packet),
            Output::Event(e) => Out::Event(format!("{e:?}")),
            o => panic!("data plane output from a full-mode device: {o:?}"),
        })
        .collect();
    (result_str(r), outs)
}

/// Replays input `n` and asserts the device does exactly what it did live.
fn replay_step(t: &Transcript, dev: &mut Device, n: usize) {
    let input = &t.inputs[n];
    let (result, outs) = apply(dev, input.now, &input.kind);
    assert_eq!(
        result, input.result,
        "{}: input {n} ({:?}) result differs",
        t.name, input.kind
    );
    assert_eq!(
        outs.len(),
        input.outputs.len(),
        "{}: input {n}: {outs:?} vs recorded {:?}",
        t.name,
        input.outputs
    );
    for (k, (got, want)) in outs.iter().zip(&input.outputs).enumerate() {
        assert_eq!(
            got, want,
            "{}: input {n} output {k} differs from the wire",
            t.name
        );
    }
}

/// Feeds a datagram that is not in the transcript and returns the result;
/// a refused datagram must produce no output at all.
fn inject(dev: &mut Device, now: Duration, src: SocketAddr, bytes: &[u8]) -> Result<(), Drop> {
    let mut out = Vec::new();
    let r = dev.handle_datagram(now, src, bytes, &mut out);
    if r.is_err() {
        assert!(out.is_empty(), "a refused datagram produced {out:?}");
    }
    r
}

// ---------------------------------------------------------------------------
// ICMP

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += ((c[0] as u32) << 8) | c.get(1).copied().unwrap_or(0) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP packet with valid checksums: (source, destination, ICMP message).
fn icmp_of(p: &[u8]) -> (Ipv4Addr, Ipv4Addr, &[u8]) {
    assert!(
        p.len() >= 28 && p[0] == 0x45 && p[9] == 1,
        "not IPv4 ICMP: {}",
        hex::encode(p)
    );
    assert_eq!(be16(p, 2) as usize, p.len(), "IPv4 total length");
    assert_eq!(checksum(&p[..20]), 0, "IPv4 header checksum");
    let icmp = &p[20..];
    assert_eq!(checksum(icmp), 0, "ICMP checksum");
    (
        Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        icmp,
    )
}

// ---------------------------------------------------------------------------
// The checks

/// (a) Every datagram of the transcript is on the wire, in order.
fn check_wire(name: &str) {
    let t = load_transcript(name);
    let path = data_dir().join(format!("{name}.pcap"));
    let pcap = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let records = parse_pcap(&pcap).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let wanted = t.wire_datagrams();
    assert!(
        wanted.len() >= 4,
        "{name}: a handshake and an echo round trip need at least 4 datagrams"
    );
    let mut rest = records.iter();
    for (k, w) in wanted.iter().enumerate() {
        let found = rest.by_ref().any(|r| r == w);
        assert!(
            found,
            "{name}: transcript datagram {k} ({} -> {}, {} bytes) is not in the pcap (in order)",
            w.src,
            w.dst,
            w.payload.len()
        );
    }
    // Per direction, the probe's port saw exactly the transcript's datagrams
    // while the probe ran (a socket keeps order in each direction; across
    // directions the capture and the probe may interleave differently).
    // Anything after them arrived once the probe had exited.
    for (dir, to_probe) in [("to the probe", true), ("from the probe", false)] {
        let on_wire: Vec<_> = records
            .iter()
            .filter(|r| {
                if to_probe {
                    r.dst == t.listen
                } else {
                    r.src == t.listen
                }
            })
            .collect();
        let recorded: Vec<_> = wanted
            .iter()
            .filter(|r| {
                if to_probe {
                    r.dst == t.listen
                } else {
                    r.src == t.listen
                }
            })
            .collect();
        assert!(
            on_wire.len() >= recorded.len(),
            "{name}: fewer datagrams {dir} on the wire than in the transcript"
        );
        assert_eq!(
            on_wire[..recorded.len()],
            recorded[..],
            "{name}: datagrams {dir} differ from the transcript"
        );
        if !to_probe {
            assert_eq!(
                on_wire.len(),
                recorded.len(),
                "{name}: the probe sent something it did not record"
            );
        }
    }
}

/// (b) A fresh device fed the same inputs at the same times does exactly
/// what the probe did on the wire.
fn check_replay(name: &str) {
    let t = load_transcript(name);
    let mut dev = t.fresh_device();
    for n in 0..t.inputs.len() {
        replay_step(&t, &mut dev, n);
    }
    // The session the real peer and we agreed on is up.
    let events: Vec<_> = t
        .inputs
        .iter()
        .flat_map(|i| &i.outputs)
        .filter(|o| matches!(o, Out::Event(e) if e.starts_with("HandshakeCompleted")))
        .collect();
    assert_eq!(events.len(), 1, "{name}: one completed handshake");
    let id = dev.peer_id(&t.peer_public_key).expect("peer");
    assert!(
        dev.peer(id).unwrap().keypairs.current.is_some(),
        "{name}: no current keypair after the replay"
    );
}

/// The real peer's messages: layout, acceptance, and what they decrypt to.
fn check_peer_messages(name: &str) {
    let t = load_transcript(name);
    let ours = t.our_datagrams();
    let (hs_at, hs) = t.peer_handshake();
    assert_eq!(
        &hs[1..4],
        &[0, 0, 0],
        "{name}: reserved bytes of the peer's handshake message"
    );
    let mac2 = &hs[hs.len() - MAC_LEN..];
    assert_eq!(
        mac2, &[0; MAC_LEN],
        "{name}: no cookie was in play, so mac2 is zero"
    );
    assert_eq!(
        t.inputs[hs_at].result, "ok",
        "{name}: the peer's handshake message was refused"
    );
    let mac1 = MacKeys::new(t.public_key.as_bytes()).mac1(hs);
    assert_eq!(
        &hs[hs.len() - 2 * MAC_LEN..hs.len() - MAC_LEN],
        &mac1,
        "{name}: mac1 keyed by our public key"
    );
    match t.mode.as_str() {
        "initiate" => {
            // We sent the initiation; the peer's response answers it.
            assert_eq!(hs[0], MSG_RESPONSE, "{name}");
            assert_eq!(hs.len(), RESPONSE_LEN, "{name}");
            let init = ours[0];
            assert_eq!(init[0], MSG_INITIATION, "{name}: our first datagram");
            assert_eq!(init.len(), INITIATION_LEN);
            assert_eq!(
                &hs[8..12],
                &init[4..8],
                "{name}: the response's receiver is our sender index"
            );
            assert!(t.inputs[hs_at]
                .outputs
                .contains(&Out::Event("HandshakeCompleted { peer: 0 }".into())));
        }
        "respond" => {
            assert_eq!(hs[0], MSG_INITIATION, "{name}");
            assert_eq!(hs.len(), INITIATION_LEN, "{name}");
            let resp = ours[0];
            assert_eq!(resp[0], MSG_RESPONSE, "{name}: our first datagram");
            assert_eq!(resp.len(), RESPONSE_LEN);
            assert_eq!(
                &resp[8..12],
                &hs[4..8],
                "{name}: our response's receiver is the peer's sender index"
            );
            let answered = t.inputs[hs_at]
                .outputs
                .iter()
                .any(|o| matches!(o, Out::Send { bytes, .. } if bytes == resp));
            assert!(
                answered,
                "{name}: the response answers the initiation directly"
            );
        }
        m => panic!("{name}: unknown mode {m}"),
    }
    // Every transport message from the peer was accepted; together they
    // delivered exactly the ICMP packets the exchange calls for.
    // Our sender index, in our initiation or our response alike.
    let our_index = &ours[0][4..8];
    let mut delivered = Vec::new();
    for (n, b) in t.peer_datagrams().filter(|(_, b)| b[0] == MSG_TRANSPORT) {
        assert_eq!(&b[1..4], &[0, 0, 0], "{name}: reserved bytes");
        assert_eq!(
            &b[4..8],
            our_index,
            "{name}: transport addressed to our index"
        );
        assert!(
            b.len() >= 32,
            "{name}: transport shorter than header and tag"
        );
        assert_eq!(
            t.inputs[n].result, "ok",
            "{name}: transport input {n} refused"
        );
        for o in &t.inputs[n].outputs {
            if let Out::Deliver(p) = o {
                delivered.push(p.clone());
            }
        }
    }
    let sent: Vec<&Vec<u8>> = t
        .inputs
        .iter()
        .filter_map(|i| match &i.kind {
            InputKind::Packet(p) => Some(p),
            _ => None,
        })
        .collect();
    let (peer_ip, our_ip) = (t.peer_tunnel_ip, t.tunnel_ip);
    let reply_to = |req: &[u8], reply: &[u8], name: &str| {
        let (rs, rd, rq) = icmp_of(req);
        let (ps, pd, rp) = icmp_of(reply);
        assert_eq!(
            (ps, pd),
            (rd, rs),
            "{name}: the reply swaps the request's addresses"
        );
        assert_eq!(
            (rq[0], rp[0]),
            (8, 0),
            "{name}: echo request and echo reply"
        );
        assert_eq!(
            &rq[4..],
            &rp[4..],
            "{name}: identifier, sequence and data echoed"
        );
    };
    match t.mode.as_str() {
        "initiate" => {
            // Our echo request went out; the peer's reply came back.
            assert_eq!(delivered.len(), 1, "{name}");
            assert_eq!(sent.len(), 1, "{name}");
            let (s, d, _) = icmp_of(sent[0]);
            assert_eq!((s, d), (our_ip, peer_ip));
            reply_to(sent[0], &delivered[0], name);
        }
        _ => {
            // The peer's ping reached us and we answered it; then our own
            // ping was answered by the peer.
            assert_eq!(delivered.len(), 2, "{name}");
            assert_eq!(sent.len(), 2, "{name}");
            let (s, d, _) = icmp_of(&delivered[0]);
            assert_eq!((s, d), (peer_ip, our_ip));
            reply_to(&delivered[0], sent[0], name);
            reply_to(sent[1], &delivered[1], name);
        }
    }
}

/// Flips one bit of `b` at `at` and, if `fix_mac1`, recomputes mac1 so the
/// message gets past the MAC check to the Noise layer.
fn corrupt(b: &[u8], at: usize, fix_mac1: Option<&PublicKey>) -> Vec<u8> {
    let mut c = b.to_vec();
    c[at] ^= 0x01;
    if let Some(pk) = fix_mac1 {
        let mac1 = MacKeys::new(pk.as_bytes()).mac1(&c);
        let off = c.len() - 2 * MAC_LEN;
        c[off..off + MAC_LEN].copy_from_slice(&mac1);
    }
    c
}

/// A doctored message, what was done to it and the drop it must meet.
type Refusal = (&'static str, Vec<u8>, Drop);

/// Corrupted, replayed and misaddressed copies of the real peer's messages
/// are refused, emit nothing, and leave the device on course: the rest of
/// the replay stays byte-identical.
fn check_refusals(name: &str) {
    let t = load_transcript(name);
    let (hs_at, hs) = t.peer_handshake();
    let hs = hs.to_vec();
    let InputKind::Datagram { src, .. } = t.inputs[hs_at].kind.clone() else {
        unreachable!()
    };
    let mut dev = t.fresh_device();
    for n in 0..hs_at {
        replay_step(&t, &mut dev, n);
    }
    let now = t.inputs[hs_at].now;
    let pk = &t.public_key;
    let (refusals, expect_after): (Vec<Refusal>, Drop) = if hs[0] == MSG_INITIATION {
        (
            vec![
                (
                    "bit flip without fixing mac1",
                    corrupt(&hs, 40, None),
                    Drop::InvalidMac,
                ),
                ("mac1 flipped", corrupt(&hs, 116, None), Drop::InvalidMac),
                (
                    "ephemeral flipped, mac1 fixed",
                    corrupt(&hs, 8, Some(pk)),
                    Drop::HandshakeFailed,
                ),
                (
                    "encrypted static flipped, mac1 fixed",
                    corrupt(&hs, 40, Some(pk)),
                    Drop::HandshakeFailed,
                ),
                (
                    "encrypted timestamp flipped, mac1 fixed",
                    corrupt(&hs, 100, Some(pk)),
                    Drop::HandshakeFailed,
                ),
                (
                    "mac1 keyed by the peer's own key",
                    corrupt(&hs, 8, Some(&t.peer_public_key)),
                    Drop::InvalidMac,
                ),
            ],
            // The same initiation again carries no newer timestamp.
            Drop::ReplayedInitiation,
        )
    } else {
        let mut wrong_receiver = hs.clone();
        wrong_receiver[8] ^= 0x80;
        let off = RESPONSE_LEN - 2 * MAC_LEN;
        let mac1 = MacKeys::new(pk.as_bytes()).mac1(&wrong_receiver);
        wrong_receiver[off..off + MAC_LEN].copy_from_slice(&mac1);
        (
            vec![
                (
                    "bit flip without fixing mac1",
                    corrupt(&hs, 20, None),
                    Drop::InvalidMac,
                ),
                ("mac1 flipped", corrupt(&hs, 60, None), Drop::InvalidMac),
                (
                    "ephemeral flipped, mac1 fixed",
                    corrupt(&hs, 20, Some(pk)),
                    Drop::HandshakeFailed,
                ),
                (
                    "encrypted nothing flipped, mac1 fixed",
                    corrupt(&hs, 50, Some(pk)),
                    Drop::HandshakeFailed,
                ),
                (
                    "receiver index changed, mac1 fixed",
                    wrong_receiver,
                    Drop::UnknownIndex,
                ),
            ],
            // The pending handshake was consumed by the genuine response.
            Drop::UnknownIndex,
        )
    };
    for (what, bytes, want) in &refusals {
        assert_eq!(
            inject(&mut dev, now, src, bytes),
            Err(*want),
            "{name}: {what}"
        );
    }
    // The genuine message, after all that, does exactly what it did live.
    replay_step(&t, &mut dev, hs_at);
    assert_eq!(
        inject(&mut dev, now, src, &hs),
        Err(expect_after),
        "{name}: the handshake message again"
    );
    // Transport messages: a flipped bit fails the tag, a second copy is a replay.
    for n in hs_at + 1..t.inputs.len() {
        if let InputKind::Datagram { src, bytes } = &t.inputs[n].kind {
            if bytes[0] == MSG_TRANSPORT {
                let now = t.inputs[n].now;
                let mut flipped = bytes.clone();
                *flipped.last_mut().unwrap() ^= 0x80;
                assert_eq!(
                    inject(&mut dev, now, *src, &flipped),
                    Err(Drop::DecryptFailed),
                    "{name}: tag flipped"
                );
                let mut body = bytes.clone();
                body[16] ^= 0x01;
                assert_eq!(
                    inject(&mut dev, now, *src, &body),
                    Err(Drop::DecryptFailed),
                    "{name}: ciphertext"
                );
                let mut index = bytes.clone();
                index[4] ^= 0x01;
                assert_eq!(
                    inject(&mut dev, now, *src, &index),
                    Err(Drop::UnknownIndex),
                    "{name}: receiver"
                );
                replay_step(&t, &mut dev, n);
                assert_eq!(
                    inject(&mut dev, now, *src, bytes),
                    Err(Drop::Replay),
                    "{name}: replayed transport"
                );
                continue;
            }
        }
        replay_step(&t, &mut dev, n);
    }
}

macro_rules! capture {
    ($module:ident, $name:literal) => {
        mod $module {
            #[test]
            fn transcript_datagrams_are_on_the_wire() {
                super::check_wire($name);
            }

            #[test]
            fn replay_is_byte_identical() {
                super::check_replay($name);
            }

            #[test]
            fn peer_messages_accepted_and_decrypted() {
                super::check_peer_messages($name);
            }

            #[test]
            fn corrupted_and_replayed_copies_refused() {
                super::check_refusals($name);
            }
        }
    };
}

capture!(wireguard_go_we_initiate, "wireguard-go-we-initiate");
capture!(wireguard_go_they_initiate, "wireguard-go-they-initiate");
capture!(boringtun_we_initiate, "boringtun-we-initiate");
capture!(boringtun_they_initiate, "boringtun-they-initiate");

/// The pcap reader on hand-made files: both byte orders, ns timestamps,
/// Ethernet with a VLAN tag, Linux cooked v1 and v2, raw IPv6, and what it
/// must skip (non-UDP, fragments, frames cut by the snap length).
#[test]
fn pcap_reader_link_types() {
    fn udp4(payload: &[u8], frag: u16) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            (frag >> 8) as u8,
            frag as u8,
            64,
            17,
            0,
            0,
        ];
        p.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
        let ulen = 8 + payload.len();
        p.extend_from_slice(&[0xca, 0x6c, 0xca, 0x6d, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        p.extend_from_slice(payload);
        p
    }
    fn udp6(payload: &[u8]) -> Vec<u8> {
        let ulen = 8 + payload.len();
        let mut p = vec![0x60, 0, 0, 0, (ulen >> 8) as u8, ulen as u8, 17, 64];
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&[0x00, 0x35, 0x00, 0x36, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        p.extend_from_slice(payload);
        p
    }
    fn file(little: bool, nanos: bool, linktype: u32, frames: &[(Vec<u8>, usize)]) -> Vec<u8> {
        let w32 = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let w16 = |v: u16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        f.extend_from_slice(&w16(2));
        f.extend_from_slice(&w16(4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(65535));
        f.extend_from_slice(&w32(linktype));
        for (frame, orig) in frames {
            f.extend_from_slice(&w32(1));
            f.extend_from_slice(&w32(2));
            f.extend_from_slice(&w32(frame.len() as u32));
            f.extend_from_slice(&w32(*orig as u32));
            f.extend_from_slice(frame);
        }
        f
    }
    let want4 = UdpRecord {
        src: "192.0.2.1:51820".parse().unwrap(),
        dst: "192.0.2.2:51821".parse().unwrap(),
        payload: b"hello".to_vec(),
    };
    let ip = udp4(b"hello", 0x4000);
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x81, 0x00, 0, 7, 0x08, 0x00]);
    eth.extend_from_slice(&ip);
    let mut arp = vec![0u8; 12];
    arp.extend_from_slice(&[0x08, 0x06, 0, 0]);
    let frag = {
        let mut e = vec![0u8; 12];
        e.extend_from_slice(&[0x08, 0x00]);
        e.extend_from_slice(&udp4(b"frag", 0x2000));
        e
    };
    let cut = eth[..eth.len() - 1].to_vec();
    let frames = vec![
        (arp, 16),
        (frag.clone(), frag.len()),
        (cut, eth.len()),
        (eth.clone(), eth.len()),
    ];
    for (little, nanos) in [(true, false), (false, false), (true, true), (false, true)] {
        let got = parse_pcap(&file(little, nanos, LINKTYPE_ETHERNET, &frames)).unwrap();
        assert_eq!(got, vec![want4.clone()], "little={little} nanos={nanos}");
    }
    let mut sll = vec![0, 4, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip);
    assert_eq!(
        parse_pcap(&file(
            true,
            false,
            LINKTYPE_LINUX_SLL,
            &[(sll.clone(), sll.len())]
        ))
        .unwrap(),
        vec![want4.clone()]
    );
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    sll2.extend_from_slice(&ip);
    assert_eq!(
        parse_pcap(&file(
            true,
            false,
            LINKTYPE_LINUX_SLL2,
            &[(sll2.clone(), sll2.len())]
        ))
        .unwrap(),
        vec![want4]
    );
    let v6 = udp6(b"six");
    let got = parse_pcap(&file(false, false, LINKTYPE_RAW, &[(v6.clone(), v6.len())])).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].src, "[::1]:53".parse().unwrap());
    assert_eq!(got[0].payload, b"six");
    assert!(
        parse_pcap(&file(true, false, 228, &[(v6.clone(), v6.len())])).is_err(),
        "unknown link type"
    );
    assert!(
        parse_pcap(b"\x0a\x0d\x0d\x0a not a classic pcap file").is_err(),
        "pcapng"
    );
    let mut truncated = file(true, false, LINKTYPE_RAW, &[(v6.clone(), v6.len())]);
    truncated.pop();
    assert!(parse_pcap(&truncated).is_err(), "truncated record");
}
