//! The handshake-flood bench's generator: handshake initiations with random
//! contents and a valid (or deliberately broken) mac1, in IPv4/UDP datagrams
//! whose source address is spoofed from a range, sent through a raw socket
//! at a fixed rate. A valid mac1 needs only the server's public key, which
//! is what an attacker who watched one handshake has; the contents never
//! decrypt, so each message costs the server what the flood is about (the
//! mac1 check, a cookie reply or, below the load threshold, one DH).
//!
//! `bench/scripts/handshake-flood.sh` runs it inside a namespace of its own
//! whose only route leads to the server's namespace.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use control::cookie::MacKeys;
use dataplane::messages::{mac1_offset, INITIATION_LEN, MSG_INITIATION};
use rand_chacha::rand_core::RngCore;

const IP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
pub const DATAGRAM_LEN: usize = IP_HEADER_LEN + UDP_HEADER_LEN + INITIATION_LEN;
/// Datagrams handed to the kernel per sendmmsg.
const BATCH: usize = 64;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub struct Options {
    pub target: SocketAddrV4,
    /// The server's static public key: what mac1 is keyed with.
    pub server_public: [u8; 32],
    /// Break every mac1: the flood of someone who does not know the key.
    pub invalid_mac1: bool,
    /// Source addresses `first_source .. first_source + sources`, in turn.
    pub first_source: Ipv4Addr,
    pub sources: u32,
    pub rate: u32,
    pub duration: Duration,
}

/// One initiation with random contents from `src`, mac1 made with `keys`
/// (or broken), mac2 zero: the whole IPv4 datagram.
pub fn datagram(
    keys: &MacKeys,
    invalid_mac1: bool,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    rng: &mut dyn RngCore,
) -> [u8; DATAGRAM_LEN] {
    let mut msg = [0u8; INITIATION_LEN];
    msg[0] = MSG_INITIATION;
    rng.fill_bytes(&mut msg[4..mac1_offset(INITIATION_LEN)]);
    let mut m1 = keys.mac1(&msg);
    if invalid_mac1 {
        m1[0] ^= 0xff;
    }
    let at = mac1_offset(INITIATION_LEN);
    msg[at..at + m1.len()].copy_from_slice(&m1);

    let mut d = [0u8; DATAGRAM_LEN];
    let total = DATAGRAM_LEN as u16;
    d[0] = 0x45;
    d[2..4].copy_from_slice(&total.to_be_bytes());
    d[6] = 0x40; // don't fragment
    d[8] = 64;
    d[9] = libc::IPPROTO_UDP as u8;
    d[12..16].copy_from_slice(&src.ip().octets());
    d[16..20].copy_from_slice(&dst.ip().octets());
    let sum = ipv4_checksum(&d[..IP_HEADER_LEN]);
    d[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut d[IP_HEADER_LEN..];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&((UDP_HEADER_LEN + INITIATION_LEN) as u16).to_be_bytes());
    // UDP checksum 0: none, which IPv4 allows.
    udp[UDP_HEADER_LEN..].copy_from_slice(&msg);
    d
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Messages and seconds actually spent.
pub struct Report {
    pub sent: u64,
    pub elapsed: Duration,
}

/// Sends `rate` datagrams a second for `duration` or until SIGINT or
/// SIGTERM, paced per batch: each batch goes when the schedule says it is
/// due, so a late start does not turn into a burst above the rate for
/// longer than one batch.
pub fn run(o: &Options, rng: &mut dyn RngCore) -> io::Result<Report> {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let sock = raw_socket()?;
    let keys = MacKeys::new(&o.server_public);
    let sources = o.sources.max(1);
    let mut next_source = 0u32;
    let mut bufs = vec![[0u8; DATAGRAM_LEN]; BATCH];
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*o.target.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let interval = Duration::from_secs_f64(BATCH as f64 / o.rate.max(1) as f64);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut due = start;
    while start.elapsed() < o.duration && !STOP.load(Ordering::Relaxed) {
        for b in bufs.iter_mut() {
            let ip = u32::from(o.first_source).wrapping_add(next_source);
            next_source = (next_source + 1) % sources;
            // Ports vary too, as a flood from many hosts' sockets would.
            let port = 1024 + (rng.next_u32() % 60000) as u16;
            let src = SocketAddrV4::new(Ipv4Addr::from(ip), port);
            *b = datagram(&keys, o.invalid_mac1, src, o.target, rng);
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        due += interval;
        sent += send_batch(&sock, &mut bufs, &dst)? as u64;
    }
    Ok(Report {
        sent,
        elapsed: start.elapsed(),
    })
}

fn raw_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the descriptor is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own and nothing else closes.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Hands every buffer to the kernel; a full queue (ENOBUFS) drops the rest
/// of the batch, as a flooder would not wait either.
fn send_batch(
    sock: &OwnedFd,
    bufs: &mut [[u8; DATAGRAM_LEN]],
    dst: &libc::sockaddr_in,
) -> io::Result<usize> {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { core::mem::zeroed() };
            h.msg_hdr.msg_name = (dst as *const libc::sockaddr_in).cast_mut().cast();
            h.msg_hdr.msg_namelen = core::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: every header points at one live iovec over a live buffer and at
    // `dst`, all of which outlive the call; the kernel only reads them.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::cookie::CookieChecker;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn one(invalid: bool) -> [u8; DATAGRAM_LEN] {
        let keys = MacKeys::new(&[9; 32]);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        datagram(
            &keys,
            invalid,
            "198.18.0.7:4000".parse().unwrap(),
            "192.168.215.1:51820".parse().unwrap(),
            &mut rng,
        )
    }

    #[test]
    fn mac1_valid_for_the_server_key_or_broken_on_request() {
        let checker = CookieChecker::new(&[9; 32]);
        let good = one(false);
        let msg = &good[IP_HEADER_LEN + UDP_HEADER_LEN..];
        assert_eq!(msg[0], MSG_INITIATION);
        assert!(checker.mac1_valid(msg));
        assert!(!CookieChecker::new(&[8; 32]).mac1_valid(msg));
        let bad = one(true);
        assert!(!checker.mac1_valid(&bad[IP_HEADER_LEN + UDP_HEADER_LEN..]));
    }

    #[test]
    fn ipv4_and_udp_headers_carry_the_spoofed_source() {
        let d = one(false);
        assert_eq!(ipv4_checksum(&d[..IP_HEADER_LEN]), 0, "header sums to zero");
        assert_eq!(&d[12..16], &[198, 18, 0, 7]);
        assert_eq!(&d[16..20], &[192, 168, 215, 1]);
        assert_eq!(u16::from_be_bytes([d[20], d[21]]), 4000);
        assert_eq!(u16::from_be_bytes([d[22], d[23]]), 51820);
        assert_eq!(
            u16::from_be_bytes([d[24], d[25]]) as usize,
            UDP_HEADER_LEN + INITIATION_LEN
        );
    }
}
