//! Tests of the XDP steering program (run in the kernel with
//! `BPF_PROG_TEST_RUN` on crafted frames) and of the loader (attach to a veth
//! in a throwaway network namespace). They need root (CAP_BPF + CAP_NET_ADMIN)
//! and skip with a message otherwise.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{action, errno_of, XdpAttachMode, XdpStats, XdpSteering};

const PORT: u16 = 51820;
const OTHER_PORT: u16 = 51821;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: XDP tests need root (CAP_BPF, CAP_NET_ADMIN)");
            return;
        }
    };
}

// ---------------------------------------------------------------------------
// Frame builders.

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

#[derive(Clone, Copy)]
enum Vlan {
    None,
    Q(u16),
    Ad(u16),
    QinQ,
}

fn ethernet(vlan: Vlan, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(1600);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    match vlan {
        Vlan::None => {}
        Vlan::Q(tci) => {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        Vlan::Ad(tci) => {
            f.extend_from_slice(&0x88a8u16.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        Vlan::QinQ => {
            f.extend_from_slice(&0x88a8u16.to_be_bytes());
            f.extend_from_slice(&10u16.to_be_bytes());
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&20u16.to_be_bytes());
        }
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn udp_header(dport: u16, payload_len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in header.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct V4 {
    vlan: Vlan,
    options: usize, // bytes of IP options, multiple of 4, <= 40
    frag_off: u16,  // host-order flags|offset field
    protocol: u8,
}

impl Default for V4 {
    fn default() -> Self {
        Self {
            vlan: Vlan::None,
            options: 0,
            frag_off: 0x4000, // DF
            protocol: 17,
        }
    }
}

fn ipv4_frame(p: &V4, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = ethernet(p.vlan, 0x0800);
    let ihl = 5 + p.options / 4;
    let total = ihl * 4 + 8 + payload.len();
    let mut ip = vec![0u8; ihl * 4];
    ip[0] = 0x40 | ihl as u8;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&p.frag_off.to_be_bytes());
    ip[8] = 64;
    ip[9] = p.protocol;
    ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
    ip[16..20].copy_from_slice(&DST4);
    for (i, b) in ip[20..].iter_mut().enumerate() {
        *b = if i + 1 == p.options { 0 } else { 1 }; // NOPs, then EOL
    }
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp_header(dport, payload.len()));
    f.extend_from_slice(payload);
    f
}

fn ipv6_frame(vlan: Vlan, next_header: u8, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = ethernet(vlan, 0x86dd);
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip[6] = next_header;
    ip[7] = 64;
    ip[8..10].copy_from_slice(&[0x20, 0x01]);
    ip[24..26].copy_from_slice(&[0x20, 0x01]);
    ip[23] = 1;
    ip[39] = 2;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp_header(dport, payload.len()));
    f.extend_from_slice(payload);
    f
}

/// A transport data message: type 4, zero reserved, receiver, counter,
/// ciphertext + tag (`len` >= 32 for a valid one).
fn transport(len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    m[0] = 4;
    if len >= 8 {
        m[4..8].copy_from_slice(&0x1122_3344u32.to_le_bytes());
    }
    for (i, b) in m.iter_mut().enumerate().skip(16) {
        *b = i as u8 ^ 0x5a;
    }
    m
}

/// A handshake initiation (1, 148 B), response (2, 92 B) or cookie reply (3, 64 B).
fn handshake(kind: u8) -> Vec<u8> {
    let len = match kind {
        1 => 148,
        2 => 92,
        _ => 64,
    };
    let mut m = vec![0xabu8; len];
    m[0] = kind;
    m[1..4].fill(0);
    m
}

// ---------------------------------------------------------------------------
// A bare AF_XDP socket with a UMEM and rings, so the XSKMAP slot is occupied
// and bpf_redirect_map really returns XDP_REDIRECT.

struct TestXsk {
    fd: OwnedFd,
    umem: *mut libc::c_void,
    umem_len: usize,
}

impl TestXsk {
    const FRAMES: usize = 16;
    const FRAME_SIZE: usize = 4096;

    fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2) call with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = Self::FRAMES * Self::FRAME_SIZE;
        // SAFETY: anonymous private mapping; no existing memory is affected.
        let umem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if umem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let xsk = Self { fd, umem, umem_len };
        // SAFETY: xdp_umem_reg is plain data; all-zero is valid.
        let mut reg: libc::xdp_umem_reg = unsafe { std::mem::zeroed() };
        reg.addr = umem as u64;
        reg.len = umem_len as u64;
        reg.chunk_size = Self::FRAME_SIZE as u32;
        xsk.setsockopt(libc::XDP_UMEM_REG, &reg)?;
        let ring: u32 = 64;
        xsk.setsockopt(libc::XDP_UMEM_FILL_RING, &ring)?;
        xsk.setsockopt(libc::XDP_UMEM_COMPLETION_RING, &ring)?;
        xsk.setsockopt(libc::XDP_RX_RING, &ring)?;
        Ok(xsk)
    }

    fn setsockopt<T>(&self, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T whose size is passed along.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                name,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for TestXsk {
    fn drop(&mut self) {
        // SAFETY: `umem`/`umem_len` came from our successful mmap; the socket
        // (closed after this, as a field) holds its own pin on the pages.
        unsafe {
            libc::munmap(self.umem, self.umem_len);
        }
    }
}

// ---------------------------------------------------------------------------
// BPF_PROG_TEST_RUN helpers.

/// The destination addresses of the frame builders.
const DST4: [u8; 4] = [192, 0, 2, 2];
const DST6: &str = "2001::2";

fn local_dsts() -> Vec<std::net::IpAddr> {
    vec![DST4.into(), DST6.parse().unwrap()]
}

/// The program loaded with the frames' destinations as local addresses.
fn loaded() -> XdpSteering {
    let mut steering = XdpSteering::load(&[PORT]).expect("load xdp_steer");
    steering
        .set_local_addresses(&local_dsts())
        .expect("local addresses");
    steering
}

/// Loaded program with a real AF_XDP socket in XSKS[0] (queue of test runs).
fn loaded_with_socket() -> (XdpSteering, TestXsk) {
    let mut steering = loaded();
    let xsk = TestXsk::new().expect("AF_XDP socket");
    steering
        .set_socket(0, xsk.fd.as_raw_fd())
        .expect("XSKS[0] = socket");
    (steering, xsk)
}

fn run(steering: &XdpSteering, frame: &[u8]) -> u32 {
    steering
        .test_run(frame)
        .unwrap_or_else(|e| panic!("test_run on {} bytes: {e}", frame.len()))
}

fn stats(steering: &XdpSteering) -> XdpStats {
    steering.stats().expect("stats")
}

fn total(s: XdpStats) -> u64 {
    s.steered + s.passed + s.malformed + s.no_socket + s.not_local
}

// ---------------------------------------------------------------------------
// Program tests.

#[test]
fn transport_to_listed_port_is_steered() {
    require_root!();
    let frame = ipv4_frame(&V4::default(), PORT, &transport(32 + 64));

    // Empty XSKS slot: bpf_redirect_map falls back to XDP_PASS.
    let steering = loaded();
    assert_eq!(run(&steering, &frame), action::PASS);
    assert_eq!(
        stats(&steering),
        XdpStats {
            no_socket: 1,
            ..XdpStats::default()
        }
    );

    // With a socket in the slot: redirected.
    let (steering, _xsk) = loaded_with_socket();
    assert_eq!(run(&steering, &frame), action::REDIRECT);
    // Minimal transport message (empty keepalive: 16 header + 16 tag).
    let minimal = ipv4_frame(&V4::default(), PORT, &transport(32));
    assert_eq!(run(&steering, &minimal), action::REDIRECT);
    assert_eq!(
        stats(&steering),
        XdpStats {
            steered: 2,
            ..XdpStats::default()
        }
    );
}

#[test]
fn transport_to_an_address_not_ours_passes() {
    require_root!();
    let (mut steering, _xsk) = loaded_with_socket();
    let v4 = ipv4_frame(&V4::default(), PORT, &transport(96));
    let v6 = ipv6_frame(Vlan::None, 17, PORT, &transport(96));
    // Forwarded traffic: this host routes for the frames' destinations.
    steering.set_local_addresses(&[]).unwrap();
    assert_eq!(run(&steering, &v4), action::PASS);
    assert_eq!(run(&steering, &v6), action::PASS);
    assert_eq!(
        stats(&steering),
        XdpStats {
            not_local: 2,
            ..XdpStats::default()
        }
    );
    // Only the IPv4 destination becomes ours.
    steering.set_local_addresses(&[DST4.into()]).unwrap();
    assert_eq!(
        steering.local_addresses(),
        vec![std::net::IpAddr::from(DST4)]
    );
    assert_eq!(run(&steering, &v4), action::REDIRECT);
    assert_eq!(run(&steering, &v6), action::PASS);
    // Both; then neither again (an address that goes away stops steering).
    steering.set_local_addresses(&local_dsts()).unwrap();
    assert_eq!(run(&steering, &v6), action::REDIRECT);
    steering.set_local_addresses(&[]).unwrap();
    assert!(steering.local_addresses().is_empty());
    assert_eq!(run(&steering, &v4), action::PASS);
    assert_eq!(
        stats(&steering),
        XdpStats {
            steered: 2,
            not_local: 4,
            ..XdpStats::default()
        }
    );
}

#[test]
fn handshakes_and_non_transport_pass() {
    require_root!();
    let (steering, _xsk) = loaded_with_socket();
    let mut frames = Vec::new();
    for kind in 1..=3u8 {
        frames.push(ipv4_frame(&V4::default(), PORT, &handshake(kind)));
        frames.push(ipv6_frame(Vlan::None, 17, PORT, &handshake(kind)));
    }
    // Reserved bytes set, unknown types, short transport.
    let mut reserved = transport(64);
    reserved[2] = 1;
    frames.push(ipv4_frame(&V4::default(), PORT, &reserved));
    let mut type5 = transport(64);
    type5[0] = 5;
    frames.push(ipv4_frame(&V4::default(), PORT, &type5));
    frames.push(ipv4_frame(&V4::default(), PORT, &transport(31)));
    frames.push(ipv4_frame(&V4::default(), PORT, &transport(4)));
    frames.push(ipv4_frame(&V4::default(), PORT, &[]));
    // Not UDP.
    let tcp = V4 {
        protocol: 6,
        ..V4::default()
    };
    frames.push(ipv4_frame(&tcp, PORT, &transport(64)));
    frames.push(ipv6_frame(Vlan::None, 6, PORT, &transport(64)));
    // IPv6 extension header before UDP: not walked, passed.
    frames.push(ipv6_frame(Vlan::None, 0, PORT, &transport(64)));
    // ARP.
    let mut arp = ethernet(Vlan::None, 0x0806);
    arp.extend_from_slice(&[0u8; 28]);
    frames.push(arp);
    // Two VLAN tags: only one is parsed.
    frames.push(ipv4_frame(
        &V4 {
            vlan: Vlan::QinQ,
            ..V4::default()
        },
        PORT,
        &transport(64),
    ));

    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(run(&steering, frame), action::PASS, "frame {i}");
    }
    let s = stats(&steering);
    assert_eq!(s.steered, 0);
    assert_eq!(s.no_socket, 0);
    assert_eq!(s.passed, frames.len() as u64, "{s:?}");
}

#[test]
fn wrong_port_passes_and_ports_are_live() {
    require_root!();
    let (mut steering, _xsk) = loaded_with_socket();
    let ours = ipv4_frame(&V4::default(), PORT, &transport(80));
    let other = ipv4_frame(&V4::default(), OTHER_PORT, &transport(80));
    // Port byte order: 51820 = 0xca6c; its byte swap 0x6cca = 27850 must not match.
    let swapped = ipv4_frame(&V4::default(), PORT.swap_bytes(), &transport(80));

    assert_eq!(run(&steering, &other), action::PASS);
    assert_eq!(run(&steering, &swapped), action::PASS);
    assert_eq!(run(&steering, &ours), action::REDIRECT);

    steering.add_port(OTHER_PORT).unwrap();
    assert_eq!(steering.ports().unwrap(), vec![PORT, OTHER_PORT]);
    assert_eq!(run(&steering, &other), action::REDIRECT);

    steering.remove_port(PORT).unwrap();
    steering.remove_port(PORT).unwrap(); // idempotent
    assert_eq!(steering.ports().unwrap(), vec![OTHER_PORT]);
    assert_eq!(run(&steering, &ours), action::PASS);

    steering.clear_socket(0).unwrap();
    steering.clear_socket(0).unwrap(); // idempotent
    assert_eq!(run(&steering, &other), action::PASS);

    let s = stats(&steering);
    assert_eq!(
        (s.steered, s.passed, s.no_socket, s.malformed),
        (2, 3, 1, 0),
        "{s:?}"
    );
}

#[test]
fn ipv6_vlan_and_ipv4_options_are_steered() {
    require_root!();
    let (steering, _xsk) = loaded_with_socket();
    let payload = transport(128);
    let mut frames = vec![
        ipv6_frame(Vlan::None, 17, PORT, &payload),
        ipv6_frame(Vlan::Q(100), 17, PORT, &payload),
        ipv6_frame(Vlan::Ad(7), 17, PORT, &payload),
    ];
    for vlan in [Vlan::Q(100), Vlan::Ad(4094)] {
        frames.push(ipv4_frame(
            &V4 {
                vlan,
                ..V4::default()
            },
            PORT,
            &payload,
        ));
    }
    for options in (4..=40).step_by(4) {
        for vlan in [Vlan::None, Vlan::Q(3)] {
            frames.push(ipv4_frame(
                &V4 {
                    vlan,
                    options,
                    ..V4::default()
                },
                PORT,
                &payload,
            ));
        }
    }
    // Ethernet padding after the datagram is fine.
    let mut padded = ipv4_frame(&V4::default(), PORT, &transport(32));
    padded.extend_from_slice(&[0u8; 18]);
    frames.push(padded);

    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(run(&steering, frame), action::REDIRECT, "frame {i}");
    }
    assert_eq!(
        stats(&steering),
        XdpStats {
            steered: frames.len() as u64,
            ..XdpStats::default()
        }
    );
}

#[test]
fn fragments_and_bad_ip_headers_pass() {
    require_root!();
    let (steering, _xsk) = loaded_with_socket();
    let payload = transport(64);
    let mf = V4 {
        frag_off: 0x2000,
        ..V4::default()
    };
    let offset = V4 {
        frag_off: 0x0010,
        ..V4::default()
    };
    let last = V4 {
        frag_off: 0x0001,
        ..V4::default()
    };
    for p in [mf, offset, last] {
        assert_eq!(
            run(&steering, &ipv4_frame(&p, PORT, &payload)),
            action::PASS
        );
    }
    let s = stats(&steering);
    assert_eq!((s.passed, s.malformed, s.steered), (3, 0, 0));

    // IHL < 5, wrong IP versions, IHL beyond the frame, UDP length beyond the frame.
    let good = ipv4_frame(&V4::default(), PORT, &payload);
    let mut bad = Vec::new();
    for ihl in 0..5u8 {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        bad.push(f);
    }
    let mut v6_in_v4 = good.clone();
    v6_in_v4[14] = 0x65;
    bad.push(v6_in_v4);
    let mut v4_in_v6 = ipv6_frame(Vlan::None, 17, PORT, &payload);
    v4_in_v6[14] = 0x40;
    bad.push(v4_in_v6);
    let mut short = ipv4_frame(&V4::default(), PORT, &transport(32));
    short[14] = 0x4f; // 60-byte header: UDP header lands past the end
    short.truncate(14 + 60 + 4);
    bad.push(short);
    let mut long_udp = good.clone();
    long_udp[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&2000u16.to_be_bytes());
    bad.push(long_udp);
    for (i, frame) in bad.iter().enumerate() {
        assert_eq!(run(&steering, frame), action::PASS, "bad frame {i}");
    }
    let s = stats(&steering);
    assert_eq!(s.malformed, bad.len() as u64, "{s:?}");
    assert_eq!(s.steered, 0);
}

#[test]
fn truncation_at_every_length() {
    require_root!();
    let (steering, _xsk) = loaded_with_socket();
    let payload = transport(48);
    let frames = [
        ipv4_frame(&V4::default(), PORT, &payload),
        ipv4_frame(
            &V4 {
                vlan: Vlan::Q(5),
                options: 12,
                ..V4::default()
            },
            PORT,
            &payload,
        ),
        ipv6_frame(Vlan::None, 17, PORT, &payload),
        ipv6_frame(Vlan::Ad(9), 17, PORT, &payload),
    ];
    let mut runs = 0u64;
    for frame in &frames {
        for len in 0..=frame.len() {
            let cut = &frame[..len];
            match steering.test_run(cut) {
                // The kernel refuses data shorter than an Ethernet header
                // before the program runs.
                Err(e) if len < 14 => assert_eq!(errno_of(&e), Some(libc::EINVAL), "{len}: {e}"),
                Err(e) => panic!("test_run on {len} of {} bytes: {e}", frame.len()),
                Ok(act) if len < 14 => panic!("kernel ran the program on {len} bytes: {act}"),
                Ok(act) => {
                    runs += 1;
                    let expect = if len == frame.len() {
                        action::REDIRECT
                    } else {
                        action::PASS
                    };
                    assert_eq!(act, expect, "{len} of {} bytes", frame.len());
                }
            }
        }
    }
    let s = stats(&steering);
    assert_eq!(s.steered, frames.len() as u64, "{s:?}");
    assert_eq!(total(s), runs, "{s:?}");
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

#[test]
fn random_frames_never_fail() {
    require_root!();
    let (steering, _xsk) = loaded_with_socket();
    let mut rng = Rng(0x05ee_d0fa_11c0_ffee);
    let templates = [
        ipv4_frame(&V4::default(), PORT, &transport(64)),
        ipv4_frame(
            &V4 {
                vlan: Vlan::Q(1),
                options: 8,
                ..V4::default()
            },
            PORT,
            &transport(64),
        ),
        ipv6_frame(Vlan::None, 17, PORT, &transport(64)),
        ipv6_frame(Vlan::Ad(2), 17, PORT, &transport(64)),
    ];
    const RUNS: u64 = 4000;
    let mut actions = [0u64; 5];
    for i in 0..RUNS {
        let frame = match i % 3 {
            // Pure noise.
            0 => {
                let mut f = vec![0u8; 14 + rng.below(1500)];
                rng.fill(&mut f);
                f
            }
            // A valid header prefix, then noise.
            1 => {
                let t = &templates[rng.below(templates.len())];
                let keep = rng.below(t.len());
                let mut f = t[..keep].to_vec();
                let mut tail = vec![0u8; rng.below(200)];
                rng.fill(&mut tail);
                f.extend_from_slice(&tail);
                if f.len() < 14 {
                    f.resize(14, 0);
                }
                f
            }
            // A valid frame with a few bytes flipped and a random length.
            _ => {
                let mut f = templates[rng.below(templates.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(f.len());
                    f[at] ^= 1 << rng.below(8);
                }
                let len = 14 + rng.below(f.len() - 13);
                f.truncate(len);
                f
            }
        };
        let act = steering
            .test_run(&frame)
            .unwrap_or_else(|e| panic!("run {i}: {e} on {frame:02x?}"));
        assert!(
            act == action::PASS || act == action::REDIRECT,
            "run {i}: action {act}"
        );
        actions[act as usize] += 1;
    }
    let s = stats(&steering);
    assert_eq!(total(s), RUNS, "every packet counted once: {s:?}");
    assert_eq!(s.steered, actions[action::REDIRECT as usize]);
    eprintln!("random frames: {s:?}");
}

#[test]
fn embedded_object_is_aligned_elf() {
    let object = super::program::object_bytes();
    assert_eq!(object.as_ptr() as usize % 8, 0);
    assert_eq!(&object[..4], b"\x7fELF");
}

// ---------------------------------------------------------------------------
// Attach tests in a throwaway network namespace.

fn ip(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace `wsx-<pid>-<n>` with a veth pair `wsa` / `wsb`, both up.
/// Deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wsx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&[
            "-n", &ns.name, "link", "add", "wsa", "type", "veth", "peer", "name", "wsb",
        ])?;
        ip(&["-n", &ns.name, "link", "set", "wsa", "up"])?;
        ip(&["-n", &ns.name, "link", "set", "wsb", "up"])?;
        Ok(ns)
    }

    /// Moves the calling thread into the namespace until the guard drops.
    fn enter(&self) -> io::Result<NetnsGuard> {
        let open = |path: &str| std::fs::File::open(path).map(OwnedFd::from);
        let original = open("/proc/thread-self/ns/net")?;
        let target = open(&format!("/run/netns/{}", self.name))?;
        setns(&target)?;
        Ok(NetnsGuard { original })
    }

    /// `ip link show dev wsa`: (XDP mode token, program id) if a program is attached.
    fn xdp_on_wsa(&self) -> Option<(String, u32)> {
        let out = ip(&["-n", &self.name, "link", "show", "dev", "wsa"]).expect("ip link show");
        let words: Vec<&str> = out.split_whitespace().collect();
        let mode = words.iter().find(|w| {
            matches!(
                **w,
                "xdp" | "xdpgeneric" | "xdpdrv" | "xdpoffload" | "xdpmulti"
            )
        })?;
        let id_at = words
            .windows(3)
            .position(|w| w[0] == "prog/xdp" && w[1] == "id")?;
        Some((mode.to_string(), words[id_at + 2].parse().ok()?))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: deleting netns {}: {e}", self.name);
        }
    }
}

fn setns(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: `fd` is an open namespace file; setns only affects this thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct NetnsGuard {
    original: OwnedFd,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        setns(&self.original).expect("return to the original network namespace");
    }
}

fn have_ip() -> bool {
    Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

macro_rules! require_netns {
    () => {
        require_root!();
        if !have_ip() {
            eprintln!("skipping: iproute2 `ip` not found");
            return;
        }
    };
}

#[test]
fn attach_native_on_veth_and_detach_on_drop() {
    require_netns!();
    let ns = Netns::new().expect("netns with veth");
    {
        let _inside = ns.enter().expect("enter netns");
        let steering = XdpSteering::attach("wsa", &[PORT]).expect("attach");
        eprintln!(
            "veth attach mode: {} (driver error: {:?})",
            steering.mode(),
            steering.driver_error()
        );
        assert_eq!(steering.mode(), XdpAttachMode::Driver);
        assert!(steering.removed_stale().is_empty());
        let id = steering.program_id().unwrap();
        assert_eq!(ns.xdp_on_wsa(), Some(("xdp".to_owned(), id)));

        // A second instance must not steal a live instance's link.
        let err = XdpSteering::attach("wsa", &[PORT]).expect_err("second attach");
        assert_eq!(errno_of(&err), Some(libc::EBUSY), "{err}");
        eprintln!("second attach refused: {err}");
        assert_eq!(ns.xdp_on_wsa(), Some(("xdp".to_owned(), id)));

        drop(steering);
        assert_eq!(ns.xdp_on_wsa(), None, "program still attached after drop");
    }
    assert!(XdpSteering::attach("no-such-if0", &[PORT]).is_err());
}

fn stale_program_is_replaced(ip_mode: &str, stale_mode: XdpAttachMode) {
    let ns = Netns::new().expect("netns with veth");
    let object = std::env::temp_dir().join(format!("{}-xdp_steer.o", ns.name));
    std::fs::write(&object, super::program::object_bytes()).unwrap();
    let attached = ip(&[
        "-n",
        &ns.name,
        "link",
        "set",
        "dev",
        "wsa",
        ip_mode,
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    let _ = std::fs::remove_file(&object);
    attached.expect("ip link set ... obj");
    let (token, stale_id) = ns.xdp_on_wsa().expect("stale program attached by ip");
    eprintln!("stale program {stale_id} attached by `ip ... {ip_mode}` shows as {token}");

    let _inside = ns.enter().expect("enter netns");
    let steering = XdpSteering::attach("wsa", &[PORT]).expect("attach over a stale program");
    assert_eq!(
        steering.removed_stale().len(),
        1,
        "{:?}",
        steering.removed_stale()
    );
    let stale = &steering.removed_stale()[0];
    assert_eq!((stale.id, stale.mode), (stale_id, stale_mode));
    assert_eq!(stale.name, "xdp_steer");
    let id = steering.program_id().unwrap();
    assert_ne!(id, stale_id);
    assert_eq!(ns.xdp_on_wsa(), Some(("xdp".to_owned(), id)));
    drop(steering);
    assert_eq!(ns.xdp_on_wsa(), None);
}

#[test]
fn stale_generic_program_is_replaced() {
    require_netns!();
    stale_program_is_replaced("xdpgeneric", XdpAttachMode::Skb);
}

#[test]
fn stale_native_program_is_replaced() {
    require_netns!();
    stale_program_is_replaced("xdpdrv", XdpAttachMode::Driver);
}

/// Builds a one-instruction XDP_PASS program, not ours, with clang (the
/// compiler `build.rs` uses) into a file named after `ns`; `function` is its
/// program name.
fn foreign_object(ns: &Netns, function: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir();
    let source = dir.join(format!("{}-{function}.c", ns.name));
    let object = dir.join(format!("{}-{function}.o", ns.name));
    std::fs::write(
        &source,
        format!(
            "__attribute__((section(\"xdp\"), used)) int {function}(void *ctx) {{ return 2; }}\n\
             char _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n"
        ),
    )
    .unwrap();
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let out = Command::new(&clang)
        .args(["-O2", "-target", "bpf", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .output()
        .expect("run clang");
    let _ = std::fs::remove_file(&source);
    assert!(
        out.status.success(),
        "clang: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    object
}

fn foreign_program_is_left_attached(ip_mode: &str, function: &str) {
    let ns = Netns::new().expect("netns with veth");
    let object = foreign_object(&ns, function);
    let attached = ip(&[
        "-n",
        &ns.name,
        "link",
        "set",
        "dev",
        "wsa",
        ip_mode,
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    let _ = std::fs::remove_file(&object);
    attached.expect("ip link set ... obj");
    let before = ns.xdp_on_wsa().expect("foreign program attached by ip");

    let _inside = ns.enter().expect("enter netns");
    let err = XdpSteering::attach("wsa", &[PORT]).expect_err("attach over a foreign program");
    eprintln!("attach refused: {err}");
    let foreign = super::foreign_program(&err).expect("error names the foreign program");
    assert_eq!(foreign.id, before.1);
    assert_eq!(foreign.name, function);
    assert_eq!(
        ns.xdp_on_wsa(),
        Some(before),
        "the foreign program is still attached, untouched"
    );
}

#[test]
fn foreign_generic_program_is_left_attached() {
    require_netns!();
    foreign_program_is_left_attached("xdpgeneric", "fw_pass");
}

#[test]
fn foreign_native_program_is_left_attached() {
    require_netns!();
    foreign_program_is_left_attached("xdpdrv", "fw_pass");
}

/// A program that only borrows our name (no PORTS / XSKS maps) is not ours.
#[test]
fn foreign_program_named_like_ours_is_left_attached() {
    require_netns!();
    foreign_program_is_left_attached("xdpgeneric", super::PROGRAM_NAME);
}

#[test]
fn set_socket_accepts_a_bound_socket_and_rejects_other_fds() {
    require_netns!();
    let ns = Netns::new().expect("netns with veth");
    let _inside = ns.enter().expect("enter netns");
    let mut steering = XdpSteering::attach("wsa", &[PORT]).expect("attach");
    let xsk = TestXsk::new().expect("AF_XDP socket");
    // Bind in copy mode to wsa queue 0 (zero-copy is unsupported on veth).
    // SAFETY: sockaddr_xdp is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
    addr.sxdp_family = libc::AF_XDP as u16;
    addr.sxdp_ifindex = steering.ifindex();
    addr.sxdp_queue_id = 0;
    addr.sxdp_flags = libc::XDP_COPY;
    // SAFETY: `addr` is a valid sockaddr_xdp of the size passed.
    let rc = unsafe {
        libc::bind(
            xsk.fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    steering
        .set_socket(0, xsk.fd.as_raw_fd())
        .expect("set_socket");
    steering.clear_socket(0).expect("clear_socket");
    // A UDP socket is not an AF_XDP socket; queue 64 is out of range.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(steering.set_socket(1, udp.as_raw_fd()).is_err());
    assert!(steering
        .set_socket(super::MAX_QUEUES, xsk.fd.as_raw_fd())
        .is_err());
}

const HOLDER_ENV: &str = "WIRESPEED_XDP_TEST_HOLDER_NETNS";

/// Child half of `sigkilled_holder_releases_its_program`: attaches in the
/// netns named by the environment, reports, then waits to be killed.
#[test]
#[ignore = "helper run as a child process by sigkilled_holder_releases_its_program"]
fn holder_child() {
    let Ok(name) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let ns = Netns { name };
    let inside = ns.enter().expect("enter netns");
    let steering = XdpSteering::attach("wsa", &[PORT]).expect("attach");
    println!("HOLDER-ATTACHED {}", steering.program_id().unwrap());
    std::mem::forget(inside);
    std::mem::forget(ns); // the parent owns (and deletes) the netns
    loop {
        std::thread::park();
    }
}

#[test]
fn sigkilled_holder_releases_its_program() {
    use std::io::{BufRead as _, BufReader};
    require_netns!();
    let ns = Netns::new().expect("netns with veth");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "xdp::tests::holder_child",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLDER_ENV, &ns.name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn holder");
    let mut id = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("HOLDER-ATTACHED ").nth(1) {
            id = rest.trim().parse::<u32>().ok();
            break;
        }
    }
    let Some(id) = id else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("holder did not attach");
    };
    assert_eq!(ns.xdp_on_wsa(), Some(("xdp".to_owned(), id)));
    child.kill().expect("SIGKILL holder"); // Child::kill sends SIGKILL
    child.wait().unwrap();
    // The link's last reference was the dead process's fd: detached at exit.
    let mut left = ns.xdp_on_wsa();
    for _ in 0..50 {
        if left.is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = ns.xdp_on_wsa();
    }
    assert_eq!(left, None, "program survived its SIGKILLed holder");
}
