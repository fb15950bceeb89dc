//! Observations and traffic: ping, TCP transfers with SHA-256 on both ends,
//! `wg show dump` and raw UAPI parsing, interface and UDP counters, tcpdump
//! captures on the underlay, random-datagram floods and iperf3.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::impls::sock_path;
use super::netns::Netns;
use super::util;

// ---------------------------------------------------------------- ping

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

#[derive(Clone, Debug)]
pub struct PingOpts {
    pub count: u32,
    /// Source address (`ping -I`).
    pub source: Option<String>,
    /// ICMP payload size (`ping -s`); the IP packet is 28 bytes more.
    pub size: Option<u32>,
    /// Seconds between echo requests.
    pub interval: f32,
    /// Overall deadline in seconds (`ping -w`).
    pub deadline: u32,
}

impl PingOpts {
    pub fn new(count: u32) -> PingOpts {
        PingOpts {
            count,
            source: None,
            size: None,
            interval: 0.1,
            deadline: 5,
        }
    }
}

/// `ping -c count` from `ns` to `to`; returns how many replies came back.
pub fn ping(ns: &Netns, to: &str, count: u32) -> PingStats {
    ping_with(ns, to, &PingOpts::new(count))
}

pub fn ping_with(ns: &Netns, to: &str, o: &PingOpts) -> PingStats {
    let mut args: Vec<String> = ["ping", "-n", "-q", "-c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(o.count.to_string());
    args.extend([
        "-i".into(),
        format!("{}", o.interval),
        "-W".into(),
        "1".into(),
    ]);
    args.extend(["-w".into(), o.deadline.to_string()]);
    if let Some(src) = &o.source {
        args.extend(["-I".into(), src.clone()]);
    }
    if let Some(size) = o.size {
        args.extend(["-s".into(), size.to_string()]);
    }
    args.push(to.to_string());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.try_exec(&a);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !text.contains("packets transmitted") {
        // "connect: Network is unreachable" and the like: nothing went out.
        eprintln!(
            "  {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return PingStats {
            transmitted: 0,
            received: 0,
        };
    }
    parse_ping(&text).unwrap_or_else(|| {
        panic!(
            "cannot parse ping output from {}: {text}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn parse_ping(text: &str) -> Option<PingStats> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    Some(PingStats {
        transmitted: nums.next()??,
        received: nums.next()??,
    })
}

/// Panics unless all `count` echo requests from `ns` to `to` are answered.
pub fn assert_ping(ns: &Netns, to: &str, count: u32) {
    let s = ping(ns, to, count);
    // With a deadline, ping sends until `count` replies are in, so one or
    // two more may arrive.
    assert!(s.received >= count, "ping {to} from {}: {s:?}", ns.name());
}

/// Panics if any echo request from `ns` to `to` is answered.
pub fn assert_no_ping(ns: &Netns, to: &str, o: &PingOpts) {
    let s = ping_with(ns, to, o);
    assert_eq!(
        s.received,
        0,
        "ping {to} from {} ({o:?}) should fail: {s:?}",
        ns.name()
    );
}

// ---------------------------------------------------------------- TCP transfer

#[derive(Clone, Debug)]
pub struct TransferResult {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sha_sent: String,
    pub sha_received: String,
    /// The sender's address as the receiver saw it (what NAT made of it).
    pub peer_seen_by_receiver: SocketAddr,
    pub elapsed: Duration,
}

impl TransferResult {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes_received as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }

    pub fn assert_intact(&self, expected: u64) {
        assert_eq!(self.bytes_sent, expected, "sender did not send everything");
        assert_eq!(
            self.bytes_received, expected,
            "receiver did not get everything"
        );
        assert_eq!(
            self.sha_sent, self.sha_received,
            "SHA-256 differs between the two ends"
        );
    }
}

/// A TCP transfer of random bytes from one namespace to a listener in
/// another, SHA-256 computed on both ends, running on two threads.
pub struct TcpTransfer {
    received: Arc<AtomicU64>,
    sender: JoinHandle<Result<(u64, String), String>>,
    receiver: JoinHandle<Result<(u64, String, SocketAddr), String>>,
    start: Instant,
    /// Ends a paced sender, at [`TcpTransfer::finish`] or when a failing
    /// test drops the transfer (its thread would pace on otherwise).
    stop: StopOnDrop,
}

/// How much a [`TcpTransfer`] sends.
enum Amount {
    /// Exactly this many bytes, as fast as TCP takes them.
    Bytes(u64),
    /// This many bytes a second at most, until told to stop.
    Paced(u64),
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Bytes a stalled transfer may wait before it counts as failed.
const STALL: Duration = Duration::from_secs(20);

/// A paced sender's write: small enough that it notices a stop soon.
const PACED_CHUNK: usize = 64 * 1024;

impl TcpTransfer {
    /// Listens on `to_addr` inside `to`, connects from `from`, sends `bytes`.
    pub fn start(from: &Netns, to: &Netns, to_addr: SocketAddr, bytes: u64) -> TcpTransfer {
        TcpTransfer::launch(from, to, to_addr, Amount::Bytes(bytes))
    }

    /// Like [`TcpTransfer::start`], but sends at most `bytes_per_second`
    /// for as long as it runs, until [`TcpTransfer::finish`]: a transfer
    /// that is still going whatever happens meanwhile takes, and leaves
    /// the CPU to it. Check it with `assert_intact(r.bytes_sent)`.
    pub fn paced(
        from: &Netns,
        to: &Netns,
        to_addr: SocketAddr,
        bytes_per_second: u64,
    ) -> TcpTransfer {
        TcpTransfer::launch(from, to, to_addr, Amount::Paced(bytes_per_second.max(1)))
    }

    fn launch(from: &Netns, to: &Netns, to_addr: SocketAddr, amount: Amount) -> TcpTransfer {
        let listener = to.tcp_listener(to_addr);
        let received = Arc::new(AtomicU64::new(0));
        let rx_count = received.clone();
        let receiver = std::thread::spawn(move || -> Result<(u64, String, SocketAddr), String> {
            listener.set_nonblocking(false).map_err(|e| e.to_string())?;
            let (mut s, peer) = accept_timeout(&listener, STALL)?;
            s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("receiver read after {total} bytes: {e}")),
                };
                ctx.update(&buf[..n]);
                total += n as u64;
                rx_count.store(total, Ordering::Relaxed);
            }
            Ok((total, hex::encode(ctx.finish().as_ref()), peer))
        });
        let stream = from.tcp_connect(to_addr, Duration::from_secs(10));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let start = Instant::now();
        let sender = std::thread::spawn(move || -> Result<(u64, String), String> {
            let mut s = stream.map_err(|e| format!("connect {to_addr}: {e}"))?;
            s.set_write_timeout(Some(STALL))
                .map_err(|e| e.to_string())?;
            let mut urandom = std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 256 * 1024];
            let mut sent = 0u64;
            loop {
                let n = match amount {
                    Amount::Bytes(bytes) => (bytes - sent).min(buf.len() as u64) as usize,
                    Amount::Paced(_) if stopped.load(Ordering::Relaxed) => 0,
                    Amount::Paced(rate) => {
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        std::thread::sleep(due.saturating_sub(start.elapsed()));
                        PACED_CHUNK
                    }
                };
                if n == 0 {
                    break;
                }
                urandom
                    .read_exact(&mut buf[..n])
                    .map_err(|e| e.to_string())?;
                ctx.update(&buf[..n]);
                s.write_all(&buf[..n])
                    .map_err(|e| format!("sender write after {sent} bytes: {e}"))?;
                sent += n as u64;
            }
            s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            // Wait for the receiver to close so that all data is through.
            let mut rest = [0u8; 16];
            s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
            let _ = s.read(&mut rest);
            Ok((sent, hex::encode(ctx.finish().as_ref())))
        });
        TcpTransfer {
            received,
            sender,
            receiver,
            start,
            stop: StopOnDrop(stop),
        }
    }

    /// Bytes the receiver has read so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits (up to `timeout`) until the receiver has `bytes`; false on timeout.
    pub fn wait_for_progress(&self, bytes: u64, timeout: Duration) -> bool {
        util::wait_until(timeout, Duration::from_millis(5), || {
            self.received() >= bytes || self.sender.is_finished()
        })
    }

    /// Waits for the end of the transfer: all its bytes, or for a paced
    /// one what it sent until now.
    pub fn finish(self) -> TransferResult {
        self.stop.0.store(true, Ordering::Relaxed);
        let recv = self.receiver.join().expect("receiver thread panicked");
        let sent = self.sender.join().expect("sender thread panicked");
        let elapsed = self.start.elapsed();
        let (bytes_received, sha_received, peer) = recv.unwrap_or_else(|e| panic!("{e}"));
        let (bytes_sent, sha_sent) = sent.unwrap_or_else(|e| panic!("{e}"));
        TransferResult {
            bytes_sent,
            bytes_received,
            sha_sent,
            sha_received,
            peer_seen_by_receiver: peer,
            elapsed,
        }
    }
}

fn accept_timeout(
    l: &std::net::TcpListener,
    timeout: Duration,
) -> Result<(std::net::TcpStream, SocketAddr), String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok((s, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(format!("no connection within {timeout:?}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// Sends `bytes` random bytes over TCP from `from` to `to_addr` in `to` and
/// checks byte counts and SHA-256 on both ends.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_addr: SocketAddr, bytes: u64) -> TransferResult {
    let r = TcpTransfer::start(from, to, to_addr, bytes).finish();
    r.assert_intact(bytes);
    r
}

// ---------------------------------------------------------------- wg show dump / UAPI

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: String,
    /// None for "(none)".
    pub preshared_key: Option<String>,
    /// None for "(none)".
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Epoch seconds; None when there was no handshake (0 in the dump).
    pub latest_handshake: Option<u64>,
    pub rx: u64,
    pub tx: u64,
    /// Seconds; None for "off".
    pub keepalive: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    /// None for "(none)" (boringtun never reports it).
    pub private_key: Option<String>,
    /// None for "(none)" (boringtun never reports it).
    pub public_key: Option<String>,
    pub listen_port: u16,
    /// None for "off".
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerStatus>,
}

impl Dump {
    pub fn peer(&self, public_key: &str) -> &PeerStatus {
        self.peers
            .iter()
            .find(|p| p.public_key == public_key)
            .unwrap_or_else(|| panic!("no peer {public_key} in {self:#?}"))
    }
}

fn none_or(s: &str) -> Option<String> {
    (s != "(none)").then(|| s.to_string())
}

/// Parses `wg show IFACE dump` (one interface): a line `private-key
/// public-key listen-port fwmark`, then per peer `public-key preshared-key
/// endpoint allowed-ips latest-handshake transfer-rx transfer-tx
/// persistent-keepalive`, tab-separated.
pub fn parse_dump(text: &str) -> Result<Dump, String> {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let first: Vec<&str> = lines.next().ok_or("empty dump")?.split('\t').collect();
    if first.len() != 4 {
        return Err(format!("interface line has {} fields", first.len()));
    }
    let num = |s: &str, what: &str| s.parse::<u64>().map_err(|e| format!("{what} {s:?}: {e}"));
    let mut dump = Dump {
        private_key: none_or(first[0]),
        public_key: none_or(first[1]),
        listen_port: num(first[2], "listen port")? as u16,
        fwmark: if first[3] == "off" {
            None
        } else {
            Some(parse_mark(first[3])?)
        },
        peers: vec![],
    };
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 8 {
            return Err(format!("peer line has {} fields: {line:?}", f.len()));
        }
        let hs = num(f[4], "latest handshake")?;
        dump.peers.push(PeerStatus {
            public_key: f[0].to_string(),
            preshared_key: none_or(f[1]),
            endpoint: none_or(f[2]),
            allowed_ips: if f[3] == "(none)" {
                vec![]
            } else {
                f[3].split(',').map(str::to_string).collect()
            },
            latest_handshake: (hs != 0).then_some(hs),
            rx: num(f[5], "rx")?,
            tx: num(f[6], "tx")?,
            keepalive: if f[7] == "off" {
                None
            } else {
                Some(num(f[7], "keepalive")? as u16)
            },
        });
    }
    Ok(dump)
}

fn parse_mark(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("fwmark {s:?}: {e}"))
}

/// One request on the UAPI socket of `iface` (`/var/run/wireguard/IFACE.sock`,
/// global to the machine, so no namespace is involved); returns everything
/// the daemon wrote before closing (empty if it closed without a reply).
pub fn uapi_request(iface: &str, request: &[u8]) -> String {
    let path = sock_path(iface);
    let mut s =
        UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request)
        .unwrap_or_else(|e| panic!("write to {}: {e}", path.display()));
    let mut reply = String::new();
    let mut r = BufReader::new(s);
    // Read until the blank line that ends a reply, or EOF.
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                let end = line == "\n";
                reply.push_str(&line);
                if end {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read from {}: {e} (so far: {reply:?})", path.display()),
        }
    }
    reply
}

/// `get=1` on the UAPI socket.
pub fn uapi_get(iface: &str) -> String {
    uapi_request(iface, b"get=1\n\n")
}

/// The `errno=N` of a UAPI reply.
pub fn uapi_errno(reply: &str) -> Option<i64> {
    reply
        .lines()
        .find_map(|l| l.strip_prefix("errno=")?.trim().parse().ok())
}

#[derive(Clone, Debug, Default)]
pub struct UapiPeer {
    /// base64, as `wg` prints it.
    pub public_key: String,
    /// `last_handshake_time_sec` as sent (epoch, or for boringtun seconds ago).
    pub handshake_sec: Option<u64>,
    pub rx: u64,
    pub tx: u64,
    pub endpoint: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct UapiGet {
    pub listen_port: Option<u16>,
    pub peers: Vec<UapiPeer>,
    pub errno: Option<i64>,
}

/// The fields of a `get=1` reply the tests look at.
pub fn parse_uapi_get(text: &str) -> UapiGet {
    use base64::Engine;
    let mut g = UapiGet::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "listen_port" => g.listen_port = v.parse().ok(),
            "errno" => g.errno = v.parse().ok(),
            "public_key" => g.peers.push(UapiPeer {
                public_key: hex::decode(v)
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                    .unwrap_or_default(),
                ..UapiPeer::default()
            }),
            _ => {
                let Some(p) = g.peers.last_mut() else {
                    continue;
                };
                match k {
                    "last_handshake_time_sec" => p.handshake_sec = v.parse().ok(),
                    "rx_bytes" => p.rx = v.parse().unwrap_or(0),
                    "tx_bytes" => p.tx = v.parse().unwrap_or(0),
                    "endpoint" => p.endpoint = Some(v.to_string()),
                    _ => {}
                }
            }
        }
    }
    g
}

// ---------------------------------------------------------------- counters

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Kernel counters of `iface` in `ns` (`ip -s -j link`). On a TUN device, rx
/// counts what the daemon wrote into it (delivered to the kernel) and tx
/// what the kernel handed to the daemon.
pub fn iface_stats(ns: &Netns, iface: &str) -> IfStats {
    let text = ns.ip(&["-s", "-j", "link", "show", "dev", iface]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("ip -j output");
    let s = &v[0]["stats64"];
    let g = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
    IfStats {
        rx_packets: g("rx", "packets"),
        rx_bytes: g("rx", "bytes"),
        rx_errors: g("rx", "errors"),
        rx_dropped: g("rx", "dropped"),
        tx_packets: g("tx", "packets"),
        tx_bytes: g("tx", "bytes"),
        tx_errors: g("tx", "errors"),
        tx_dropped: g("tx", "dropped"),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub in_datagrams: u64,
    pub out_datagrams: u64,
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
}

/// The namespace's UDP counters (/proc/net/snmp): `in_errors` counts
/// datagrams dropped at a socket (receive buffer full and the like).
pub fn udp_stats(ns: &Netns) -> UdpStats {
    let text = ns.exec(&["cat", "/proc/net/snmp"]);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next().unwrap_or("").split_whitespace().collect();
    let vals: Vec<&str> = udp.next().unwrap_or("").split_whitespace().collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| vals.get(i)?.parse().ok())
            .unwrap_or(0)
    };
    UdpStats {
        in_datagrams: get("InDatagrams"),
        out_datagrams: get("OutDatagrams"),
        in_errors: get("InErrors"),
        rcvbuf_errors: get("RcvbufErrors"),
    }
}

// ---------------------------------------------------------------- capture

#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// Seconds since the epoch (tcpdump -tt).
    pub time: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// UDP payload length.
    pub len: usize,
}

/// tcpdump on an interface of a namespace, UDP only; lines parsed on stop.
pub struct Capture {
    child: Option<Child>,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

/// BPF for WireGuard messages of `ty` (1 initiation, 2 response, 3 cookie,
/// 4 transport) with an optional UDP payload length (32 = keepalive).
pub fn wg_filter(ty: u8, payload_len: Option<u16>) -> String {
    let mut f = format!("udp and udp[8] = {ty} and udp[9:2] = 0 and udp[11] = 0");
    if let Some(l) = payload_len {
        f.push_str(&format!(" and udp[4:2] = {}", l + 8));
    }
    f
}

impl Capture {
    /// Starts `tcpdump -i iface filter` in `ns` and returns once it listens.
    pub fn start(ns: &Netns, iface: &str, filter: &str) -> Capture {
        let mut c = ns.cmd("tcpdump");
        c.args(["-i", iface, "-n", "-l", "-tt", "-p", "-U", "-q"])
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("tcpdump: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let err = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut s);
            s
        });
        let mut cap = Capture {
            child: Some(child),
            out: Some(out),
            err: Some(err),
        };
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let (_, err) = cap.stop_raw();
            panic!(
                "tcpdump did not start listening on {iface} in {}: {err}",
                ns.name()
            );
        }
        cap
    }

    fn stop_raw(&mut self) -> (String, String) {
        if let Some(mut child) = self.child.take() {
            util::signal(child.id(), util::SIGINT);
            let done = util::wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
                !matches!(child.try_wait(), Ok(None))
            });
            if !done {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let out = self
            .out
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let err = self
            .err
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (out, err)
    }

    /// Stops tcpdump and returns the UDP packets it saw.
    pub fn stop(mut self) -> Vec<Packet> {
        let (out, _) = self.stop_raw();
        out.lines().filter_map(parse_tcpdump_line).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_raw();
    }
}

/// `1700000000.123456 IP 10.0.0.1.51820 > 10.0.0.2.51821: UDP, length 32`
pub fn parse_tcpdump_line(line: &str) -> Option<Packet> {
    let mut w = line.split_whitespace();
    let time = w.next()?.parse().ok()?;
    if w.next()? != "IP" {
        return None;
    }
    let src = w.next()?;
    w.next()?; // ">"
    let dst = w.next()?.trim_end_matches(':');
    let len = line.rsplit_once("length ")?.1.trim().parse().ok()?;
    let sock = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.rsplit_once('.')?;
        Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
    };
    Some(Packet {
        time,
        src: sock(src)?,
        dst: sock(dst)?,
        len,
    })
}

// ---------------------------------------------------------------- garbage

/// Sends `count` datagrams of random content from a socket inside `from` to
/// `target`: a fifth pure noise of random length (0..1500), the rest shaped
/// like WireGuard messages (type 1..4, zero reserved bytes, the right sizes
/// for handshakes and cookie replies, random lengths >= 32 for transport)
/// with random bodies, so they get past the first length/type checks.
/// Returns the number sent.
pub fn udp_blast(from: &Netns, target: SocketAddr, count: usize, seed: u64) -> usize {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let sock = from.udp_socket(SocketAddr::new(
        if target.is_ipv4() {
            IpAddr::from([0u8, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut buf = [0u8; 1500];
    let mut sent = 0;
    for i in 0..count {
        let kind = rng.next_u32() % 5;
        let len = match kind {
            0 => (rng.next_u32() % 1501) as usize,
            1 => 148,
            2 => 92,
            3 => 64,
            _ => 32 + (rng.next_u32() % 1420) as usize,
        };
        rng.fill_bytes(&mut buf[..len]);
        if kind != 0 {
            buf[0] = kind as u8;
            buf[1..4].fill(0);
        }
        if sock.send_to(&buf[..len], target).is_ok() {
            sent += 1;
        }
        if i % 64 == 63 {
            // Let the receiver drain a little; a full socket buffer would
            // drop most of the flood before anything parses it.
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    sent
}

// ---------------------------------------------------------------- iperf3

/// `iperf3 -s -1` (one test, then exit) bound to `addr` inside `ns`.
pub struct Iperf3Server {
    child: Child,
}

impl Iperf3Server {
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> Iperf3Server {
        let mut c = ns.cmd("iperf3");
        c.args(["-s", "-1", "-B", &addr.to_string(), "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("start iperf3 -s");
        let listening = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            let out = ns.try_exec(&["ss", "-Htln", &format!("sport = :{port}")]);
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        });
        assert!(listening, "iperf3 server did not listen on {addr}:{port}");
        Iperf3Server { child }
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Debug)]
pub struct IperfResult {
    pub sent_bits_per_second: f64,
    pub received_bits_per_second: f64,
    pub retransmits: u64,
    pub json: serde_json::Value,
}

/// `iperf3 -c server -J -t secs [-R] [-P streams]` from `ns`.
pub fn iperf3_client(
    ns: &Netns,
    server: IpAddr,
    port: u16,
    secs: u32,
    reverse: bool,
    streams: u32,
) -> IperfResult {
    let server = server.to_string();
    let port = port.to_string();
    let secs = secs.to_string();
    let streams = streams.to_string();
    let mut args = vec![
        "iperf3", "-c", &server, "-p", &port, "-J", "-t", &secs, "-P", &streams,
    ];
    if reverse {
        args.push("-R");
    }
    let out = ns.try_exec(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if let Some(err) = json.get("error") {
        panic!("iperf3 failed: {err}");
    }
    let end = &json["end"];
    IperfResult {
        sent_bits_per_second: end["sum_sent"]["bits_per_second"].as_f64().unwrap_or(0.0),
        received_bits_per_second: end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        json,
    }
}
