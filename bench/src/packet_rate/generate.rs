//! The sending side: one thread per generator peer, each with its own UDP
//! socket (so RSS/XPS can give each its own receive queue), a handshake with
//! the device under test, every message sealed before the clock starts, then
//! sendmmsg as fast as the kernel takes them. The receiving TUN's counter,
//! sampled while every generator is still sending, gives the delivered rate.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::device::{Device, DeviceSettings, Output, PeerSettings};
use control::keys::{PrivateKey, PublicKey};
use dataplane::transport::SessionKey;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::busy::Threads;
use super::counter::Counter;
use super::packets;

/// First UDP source port of the generator peers (peer i sends from +i).
pub const BASE_PORT: u16 = 40000;
const BURST: usize = 64;

pub struct Options {
    /// sysfs `rx_packets` of the receiving TUN, opened before `netns`.
    pub counter: String,
    /// The namespace to send from (a /var/run/netns path).
    pub netns: String,
    /// The device under test's UAPI socket; `None` sends clear messages to
    /// the no-crypto forwarder instead.
    pub uapi: Option<String>,
    pub target: SocketAddr,
    pub bind: Ipv4Addr,
    pub peers: usize,
    /// Inner packet size in bytes.
    pub size: usize,
    /// Messages built per peer (each is sent once: counters never repeat).
    pub count: usize,
    /// Generator thread i runs on `cpus[i % cpus.len()]`.
    pub cpus: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// The threads doing the receiving work, for [`Report::busy_cores`].
    pub watch: Option<Threads>,
}

#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Packets per second out of the receiving TUN while all were sending.
    pub delivered_pps: f64,
    /// Packets per second the generators handed to the kernel.
    pub offered_pps: f64,
    pub window: Duration,
    /// CPUs' worth of time the watched threads ran during the window.
    pub busy_cores: Option<f64>,
}

/// Runs one measurement.
pub fn run(o: &Options) -> io::Result<Report> {
    let counter = Counter::open(&o.counter)?;
    let sources: Vec<Ipv4Addr> = (0..o.peers).map(packets::inner_source).collect();
    let keys: Vec<PrivateKey> = (0..o.peers).map(|_| PrivateKey::generate()).collect();
    let dut = match &o.uapi {
        Some(sock) => {
            let dut = PrivateKey::generate();
            let publics: Vec<PublicKey> = keys.iter().map(PrivateKey::public_key).collect();
            super::uapi::configure(sock, &dut, o.target.port(), &publics, &sources)?;
            Some(dut.public_key())
        }
        None => None,
    };
    super::enter_netns(&o.netns)?;

    let ready = Arc::new(Barrier::new(o.peers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let (ready, stop, finished, failed) = (
            ready.clone(),
            stop.clone(),
            finished.clone(),
            failed.clone(),
        );
        let cpu = o.cpus.get(i % o.cpus.len().max(1)).copied();
        let (bind, target, size, count, src) = (o.bind, o.target, o.size, o.count, sources[i]);
        threads.push(std::thread::spawn(
            move || -> io::Result<(u64, Duration)> {
                if let Some(c) = cpu {
                    super::pin(c);
                }
                let prepared = prepare(
                    bind,
                    BASE_PORT + i as u16,
                    target,
                    &key,
                    dut.as_ref(),
                    src,
                    size,
                    count,
                );
                if prepared.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                ready.wait();
                let (sock, buf) = prepared?;
                let r = blast(&sock, &buf, packets::message_len(size), &stop);
                finished.fetch_add(1, Ordering::Relaxed);
                r
            },
        ));
    }
    ready.wait();
    let outcome = measure(o, &counter, &finished, &failed);
    stop.store(true, Ordering::Relaxed);
    let mut offered = 0.0;
    for t in threads {
        let (sent, took) = t
            .join()
            .map_err(|_| io::Error::other("generator thread panicked"))??;
        offered += sent as f64 / took.as_secs_f64().max(1e-9);
    }
    let (delivered, window, busy_ns) = outcome?;
    Ok(Report {
        delivered_pps: delivered as f64 / window.as_secs_f64(),
        offered_pps: offered,
        window,
        busy_cores: busy_ns.map(|ns| ns as f64 / window.as_nanos() as f64),
    })
}

/// Samples the counter after the warm-up until the duration ends or the
/// first generator runs dry: (packets, over how long).
fn measure(
    o: &Options,
    counter: &Counter,
    finished: &AtomicUsize,
    failed: &AtomicBool,
) -> io::Result<(u64, Duration, Option<u64>)> {
    if failed.load(Ordering::Relaxed) {
        return Err(io::Error::other("a generator could not get ready"));
    }
    std::thread::sleep(o.warmup);
    if finished.load(Ordering::Relaxed) > 0 {
        return Err(io::Error::other(
            "generators ran dry during the warm-up: raise --count",
        ));
    }
    let busy = || o.watch.as_ref().map(Threads::cpu_ns);
    let first = (Instant::now(), counter.read()?, busy());
    let mut last = first;
    while last.0.duration_since(first.0) < o.duration {
        std::thread::sleep(Duration::from_millis(20));
        // Checked before reading: a sample counts only if every generator was
        // still sending when it was taken.
        if finished.load(Ordering::Relaxed) > 0 {
            break;
        }
        last = (Instant::now(), counter.read()?, busy());
    }
    let window = last.0.duration_since(first.0);
    if window < Duration::from_millis(100) {
        return Err(io::Error::other(
            "measurement window too short: raise --count",
        ));
    }
    let busy_ns = last.2.zip(first.2).map(|(b, a)| b.saturating_sub(a));
    Ok((last.1.saturating_sub(first.1), window, busy_ns))
}

/// A connected socket and this peer's messages, sealed if `dut` is given.
#[allow(clippy::too_many_arguments)]
fn prepare(
    bind: Ipv4Addr,
    port: u16,
    target: SocketAddr,
    key: &PrivateKey,
    dut: Option<&PublicKey>,
    src: Ipv4Addr,
    size: usize,
    count: usize,
) -> io::Result<(UdpSocket, Vec<u8>)> {
    let sock = UdpSocket::bind((bind, port))?;
    sock.connect(target)?;
    let inner = packets::inner_packet(src, size);
    let buf = match dut {
        Some(dut) => {
            let (session, receiver, first) = handshake(&sock, key, dut, target)?;
            packets::build(Some((&session, receiver)), first, &inner, count)
        }
        None => packets::build(None, 0, &inner, count),
    };
    Ok((sock, buf))
}

/// A complete handshake as initiator: (sending key, receiver index, next
/// counter).
fn handshake(
    sock: &UdpSocket,
    me: &PrivateKey,
    dut: &PublicKey,
    target: SocketAddr,
) -> io::Result<(SessionKey, u32, u64)> {
    let start = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let rng = ChaCha20Rng::from_seed(*PrivateKey::generate().as_bytes());
    let mut dev = Device::new(unix, Box::new(rng), DeviceSettings::default());
    dev.set_private_key(Some(me.clone()));
    let mut settings = PeerSettings::new(*dut);
    settings.endpoint = Some(target);
    settings.allowed_ips = vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)];
    let id = dev
        .upsert_peer(settings)
        .ok_or_else(|| io::Error::other("peer refused"))?;
    sock.set_read_timeout(Some(Duration::from_millis(250)))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(15) {
        out.clear();
        dev.request_handshake(id, start.elapsed(), &mut out);
        send_outputs(sock, &out)?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            out.clear();
            let _ = dev.handle_datagram(start.elapsed(), from, &buf[..n], &mut out);
            send_outputs(sock, &out)?;
            if let Some(kp) = dev.peer(id).and_then(|p| p.keypairs.current.as_ref()) {
                return Ok((
                    SessionKey::new(kp.sending.raw()),
                    kp.remote_index,
                    kp.send_counter,
                ));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no handshake with {target}"),
    ))
}

fn send_outputs(sock: &UdpSocket, out: &[Output]) -> io::Result<()> {
    for o in out {
        if let Output::Send { datagram, .. } = o {
            match sock.send(datagram) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Sends every message in `buf` (each `len` bytes) until done or told to
/// stop: (messages sent, time taken).
fn blast(
    sock: &UdpSocket,
    buf: &[u8],
    len: usize,
    stop: &AtomicBool,
) -> io::Result<(u64, Duration)> {
    let total = buf.len() / len;
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is a
    // valid (empty) value.
    let mut iov: [libc::iovec; BURST] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BURST] = unsafe { std::mem::zeroed() };
    let start = Instant::now();
    let mut next = 0usize;
    while next < total && !stop.load(Ordering::Relaxed) {
        let n = (total - next).min(BURST);
        for j in 0..n {
            iov[j] = libc::iovec {
                iov_base: buf[(next + j) * len..].as_ptr() as *mut libc::c_void,
                iov_len: len,
            };
            hdrs[j].msg_hdr.msg_iov = &mut iov[j];
            hdrs[j].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `n` headers each point at one iovec inside `buf`,
        // which outlives the call; the socket is connected, so no name.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::ConnectionRefused => continue,
                _ => return Err(e),
            }
        }
        next += r as usize;
    }
    Ok((next as u64, start.elapsed()))
}
