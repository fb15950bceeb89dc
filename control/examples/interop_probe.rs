//! Drives one sans-IO [`Device`] over a real UDP socket against a real
//! WireGuard peer (wireguard-go, boringtun, the kernel) and records a
//! transcript of everything that crossed the device's boundary, so the run
//! can be replayed offline in `cargo test` (see `tests/interop_transcript.rs`
//! and `tests/data/interop/capture.sh`).
//!
//! No TUN device: the probe itself plays the inner host. In `initiate` mode
//! it hands the device one ICMP echo request for the peer's tunnel address
//! (which makes the device start a handshake) and exits when the echo reply
//! comes back through the tunnel. In `respond` mode it waits for the peer to
//! initiate (the capture script makes the peer ping us), answers its echo
//! request with an echo reply, then sends an echo request of its own and
//! exits when that is answered too: so in both modes the real peer proves it
//! decrypted a transport message sealed by our device (it could not answer
//! otherwise), and in `respond` mode that our responder-side keys are right.
//!
//! ```text
//! interop_probe --listen 192.0.2.1:51820 --private-key B64 --peer-public-key B64
//!     [--peer-endpoint 192.0.2.2:51821] --tunnel-ip 10.99.0.1 --peer-tunnel-ip 10.99.0.2
//!     --seed 1 --mode initiate|respond --out transcript.json [--label NAME] [--timeout-secs 20]
//! ```
//!
//! Transcript: the seed, `unix_at_zero` in ns, the keys, the addresses and
//! every event in order with the `now` (ns) that was passed to the device.
//! Inputs are `packet` (to `handle_packet`), `datagram_in` (to
//! `handle_datagram`, with its source) and `timers` (`update_timers`), each
//! with the call's result; the outputs each call produced follow it as
//! `datagram_out`, `deliver` and `event`, stamped with the same `now`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::device::{Device, DeviceSettings, Drop, Output, PeerSettings};
use control::keys::{PrivateKey, PublicKey};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};

/// ICMP identifier and payload of the probe's own echo request.
const ECHO_ID: u16 = 0x5753; // "WS"
const ECHO_PAYLOAD: &[u8] = b"wirespeed interop probe";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Initiate,
    Respond,
}

struct Args {
    listen: SocketAddr,
    private_key: PrivateKey,
    peer_public_key: PublicKey,
    peer_endpoint: Option<SocketAddr>,
    tunnel_ip: Ipv4Addr,
    peer_tunnel_ip: Ipv4Addr,
    seed: u64,
    mode: Mode,
    out: String,
    label: String,
    timeout: Duration,
}

const USAGE: &str = "usage: interop_probe --listen ADDR:PORT --private-key B64 --peer-public-key B64 \
[--peer-endpoint ADDR:PORT] --tunnel-ip IPV4 --peer-tunnel-ip IPV4 --seed N --mode initiate|respond \
--out PATH [--label NAME] [--timeout-secs N]";

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut private_key = None;
    let mut peer_public_key = None;
    let mut peer_endpoint = None;
    let mut tunnel_ip = None;
    let mut peer_tunnel_ip = None;
    let mut seed = None;
    let mut mode = None;
    let mut out = None;
    let mut label = String::from("unknown");
    let mut timeout = Duration::from_secs(20);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse().map_err(|e| format!("--listen: {e}"))?),
            "--private-key" => {
                private_key = Some(
                    PrivateKey::from_base64(&value()?)
                        .map_err(|e| format!("--private-key: {e}"))?,
                )
            }
            "--peer-public-key" => {
                peer_public_key = Some(
                    PublicKey::from_base64(&value()?)
                        .map_err(|e| format!("--peer-public-key: {e}"))?,
                )
            }
            "--peer-endpoint" => {
                peer_endpoint = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--peer-endpoint: {e}"))?,
                )
            }
            "--tunnel-ip" => {
                tunnel_ip = Some(value()?.parse().map_err(|e| format!("--tunnel-ip: {e}"))?)
            }
            "--peer-tunnel-ip" => {
                peer_tunnel_ip = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--peer-tunnel-ip: {e}"))?,
                )
            }
            "--seed" => seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--mode" => {
                mode = Some(match value()?.as_str() {
                    "initiate" => Mode::Initiate,
                    "respond" => Mode::Respond,
                    m => return Err(format!("--mode: unknown mode {m:?}")),
                })
            }
            "--out" => out = Some(value()?),
            "--label" => label = value()?,
            "--timeout-secs" => {
                timeout = Duration::from_secs(
                    value()?
                        .parse()
                        .map_err(|e| format!("--timeout-secs: {e}"))?,
                )
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            f => return Err(format!("unknown flag {f}\n{USAGE}")),
        }
    }
    let missing = |name: &str| format!("missing {name}\n{USAGE}");
    Ok(Args {
        listen: listen.ok_or_else(|| missing("--listen"))?,
        private_key: private_key.ok_or_else(|| missing("--private-key"))?,
        peer_public_key: peer_public_key.ok_or_else(|| missing("--peer-public-key"))?,
        peer_endpoint,
        tunnel_ip: tunnel_ip.ok_or_else(|| missing("--tunnel-ip"))?,
        peer_tunnel_ip: peer_tunnel_ip.ok_or_else(|| missing("--peer-tunnel-ip"))?,
        seed: seed.ok_or_else(|| missing("--seed"))?,
        mode: mode.ok_or_else(|| missing("--mode"))?,
        out: out.ok_or_else(|| missing("--out"))?,
        label,
        timeout,
    })
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let hi = c[0] as u32;
        let lo = c.get(1).copied().unwrap_or(0) as u32;
        sum += (hi << 8) | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying ICMP `icmp` (checksums filled in).
fn ipv4_icmp(src: Ipv4Addr, dst: Ipv4Addr, mut icmp: Vec<u8>) -> Vec<u8> {
    icmp[2..4].fill(0);
    let ck = checksum(&icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let total = 20 + icmp.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        1,
        0,
        0,
    ];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ck = checksum(&p);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(&icmp);
    p
}

fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&ECHO_ID.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(ECHO_PAYLOAD);
    ipv4_icmp(src, dst, icmp)
}

/// If `p` is an IPv4 ICMP packet, its (source, destination, ICMP message).
fn parse_icmp(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, &[u8])> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 1 {
        return None;
    }
    let ihl = (p[0] & 15) as usize * 4;
    let total = u16::from_be_bytes([p[2], p[3]]) as usize;
    if ihl < 20 || total < ihl + 8 || total > p.len() {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Some((src, dst, &p[ihl..total]))
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn result_str(r: Result<(), Drop>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(d) => format!("{d:?}"),
    }
}

struct Probe {
    args: Args,
    dev: Device,
    sock: UdpSocket,
    start: Instant,
    events: Vec<Value>,
    /// Echo requests delivered to us (respond mode) that still need a reply.
    pending_replies: Vec<Vec<u8>>,
    got_reply: bool,
    sent_reply: bool,
}

impl Probe {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records one call's outputs and carries them out.
    fn absorb(&mut self, now: Duration, outs: Vec<Output>) -> std::io::Result<()> {
        for o in outs {
            match o {
                Output::Send { to, datagram } => {
                    self.events.push(json!({
                        "now_ns": ns(now), "kind": "datagram_out", "to": to.to_string(),
                        "bytes": hex::encode(&datagram),
                    }));
                    self.sock.send_to(&datagram, to)?;
                    eprintln!(
                        "[{:>9.3} ms] sent {} bytes (type {}) to {to}",
                        ms(now),
                        datagram.len(),
                        datagram[0]
                    );
                }
                Output::Deliver { packet, .. } => {
                    self.events.push(json!({
                        "now_ns": ns(now), "kind": "deliver", "bytes": hex::encode(&packet),
                    }));
                    eprintln!("[{:>9.3} ms] delivered {} bytes", ms(now), packet.len());
                    self.inner_packet(&packet);
                }
                Output::Event(e) => {
                    eprintln!("[{:>9.3} ms] event {e:?}", ms(now));
                    self.events.push(
                        json!({ "now_ns": ns(now), "kind": "event", "event": format!("{e:?}") }),
                    );
                }
                o => unreachable!("data plane output from a full-mode device: {o:?}"),
            }
        }
        Ok(())
    }

    /// The probe as the inner host: notes echo replies, queues replies to
    /// echo requests.
    fn inner_packet(&mut self, p: &[u8]) {
        let Some((src, dst, icmp)) = parse_icmp(p) else {
            return;
        };
        if src != self.args.peer_tunnel_ip || dst != self.args.tunnel_ip {
            return;
        }
        match (self.args.mode, icmp[0]) {
            (_, 0) if icmp[4..6] == ECHO_ID.to_be_bytes() => self.got_reply = true,
            (Mode::Respond, 8) => {
                let mut reply = icmp.to_vec();
                reply[0] = 0;
                self.pending_replies.push(ipv4_icmp(dst, src, reply));
            }
            _ => {}
        }
    }

    fn send_packet(&mut self, packet: Vec<u8>) -> std::io::Result<()> {
        let now = self.now();
        let mut out = Vec::new();
        let r = self.dev.handle_packet(now, &packet, &mut out).map(|_| ());
        self.events.push(json!({
            "now_ns": ns(now), "kind": "packet", "bytes": hex::encode(&packet), "result": result_str(r),
        }));
        self.absorb(now, out)
    }

    fn datagram_in(&mut self, src: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
        let now = self.now();
        let mut out = Vec::new();
        let r = self.dev.handle_datagram(now, src, bytes, &mut out);
        eprintln!(
            "[{:>9.3} ms] received {} bytes (type {}) from {src}: {}",
            ms(now),
            bytes.len(),
            bytes[0],
            result_str(r)
        );
        self.events.push(json!({
            "now_ns": ns(now), "kind": "datagram_in", "src": src.to_string(),
            "bytes": hex::encode(bytes), "result": result_str(r),
        }));
        self.absorb(now, out)
    }

    fn timers_if_due(&mut self) -> std::io::Result<()> {
        let now = self.now();
        if self.dev.next_deadline().is_none_or(|d| d > now) {
            return Ok(());
        }
        let mut out = Vec::new();
        self.dev.update_timers(now, &mut out);
        self.events
            .push(json!({ "now_ns": ns(now), "kind": "timers", "result": "ok" }));
        self.absorb(now, out)
    }

    fn done(&self) -> bool {
        self.got_reply && (self.args.mode == Mode::Initiate || self.sent_reply)
    }

    fn run(&mut self) -> std::io::Result<bool> {
        if self.args.mode == Mode::Initiate {
            let req = echo_request(self.args.tunnel_ip, self.args.peer_tunnel_ip, 1);
            self.send_packet(req)?;
        }
        let mut buf = vec![0u8; 65536];
        while !self.done() {
            if self.now() > self.args.timeout {
                return Ok(false);
            }
            let wait = match self.dev.next_deadline() {
                Some(d) => d
                    .saturating_sub(self.now())
                    .clamp(Duration::from_millis(1), Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            self.sock.set_read_timeout(Some(wait))?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, src)) => {
                    let bytes = buf[..n].to_vec();
                    self.datagram_in(src, &bytes)?;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
            for reply in std::mem::take(&mut self.pending_replies) {
                self.send_packet(reply)?;
                if !self.sent_reply {
                    // Our own request, now that the session is confirmed.
                    let req = echo_request(self.args.tunnel_ip, self.args.peer_tunnel_ip, 1);
                    self.send_packet(req)?;
                }
                self.sent_reply = true;
            }
            self.timers_if_due()?;
        }
        Ok(true)
    }

    fn transcript(&self, ok: bool, unix_at_zero: Duration) -> Value {
        let a = &self.args;
        json!({
            "format": "wirespeed-interop-transcript-1",
            "label": a.label,
            "mode": match a.mode { Mode::Initiate => "initiate", Mode::Respond => "respond" },
            "success": ok,
            "seed": a.seed,
            "unix_at_zero_ns": ns(unix_at_zero),
            "private_key": a.private_key.to_base64(),
            "public_key": a.private_key.public_key().to_base64(),
            "peer_public_key": a.peer_public_key.to_base64(),
            "listen": a.listen.to_string(),
            "peer_endpoint": a.peer_endpoint.map(|e| e.to_string()),
            "tunnel_ip": a.tunnel_ip.to_string(),
            "peer_tunnel_ip": a.peer_tunnel_ip.to_string(),
            "events": self.events,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let sock = match UdpSocket::bind(args.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bind {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    // Wall time and the monotonic clock are read together: now = 0 is this
    // instant, and the device's TAI64N timestamps are unix_at_zero + now.
    let unix_at_zero = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let start = Instant::now();
    let mut dev = Device::new(
        unix_at_zero,
        Box::new(ChaCha20Rng::seed_from_u64(args.seed)),
        DeviceSettings::default(),
    );
    dev.set_private_key(Some(args.private_key.clone()));
    let mut peer = PeerSettings::new(args.peer_public_key);
    peer.endpoint = args.peer_endpoint;
    peer.allowed_ips = vec![(IpAddr::V4(args.peer_tunnel_ip), 32)];
    if dev.upsert_peer(peer).is_none() {
        eprintln!("the peer's public key is our own");
        return ExitCode::from(2);
    }
    let mut probe = Probe {
        args,
        dev,
        sock,
        start,
        events: Vec::new(),
        pending_replies: Vec::new(),
        got_reply: false,
        sent_reply: false,
    };
    let result = probe.run();
    let ok = matches!(result, Ok(true));
    let text =
        serde_json::to_string_pretty(&probe.transcript(ok, unix_at_zero)).expect("json") + "\n";
    if let Err(e) = std::fs::write(&probe.args.out, text) {
        eprintln!("writing {}: {e}", probe.args.out);
        return ExitCode::from(1);
    }
    match result {
        Ok(true) => {
            eprintln!("echo round trip complete; transcript in {}", probe.args.out);
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("timed out; partial transcript in {}", probe.args.out);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "socket error: {e}; partial transcript in {}",
                probe.args.out
            );
            ExitCode::from(1)
        }
    }
}
