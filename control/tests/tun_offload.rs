//! TUN offloads through a real tunnel: a UDP sender that batches with
//! UDP_SEGMENT (as QUIC stacks do) hands wirespeed's TUN one super-packet
//! per batch when the TUN offers UDP segmentation (USO, kernel 6.2+); the
//! data plane cuts it into datagrams, and every one of them must arrive
//! whole at the far end, where the receiving data plane writes each train
//! to its TUN as one super-packet again. On both backends. And the other end of the UDP
//! backend's batching: a route that refuses its segmentation trains costs
//! no packet, and the refusals are counted.
//!
//! Needs root; WIRESPEED_SKIP_NETNS=1 skips with a loud line.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::tunnel::UNDERLAY_IF;
use common::{assert_ping, for_each_impl, netns_test, tcp_transfer, Impl, Tunnel, TunnelOpts};

/// The backends with TUN offloads on (WirespeedUdp runs without them).
const IMPLS: &[(Impl, bool)] = &[(Impl::Wirespeed, true), (Impl::WirespeedUdpOffload, true)];

/// Datagram payload size and datagrams per UDP_SEGMENT send.
const SIZE: usize = 1200;
const PER_SEND: usize = 10;
const SENDS: usize = 100;

#[test]
fn udp_segmentation_offload_super_packets_arrive_as_datagrams() {
    for_each_impl(
        "udp_segmentation_offload_super_packets_arrive_as_datagrams",
        IMPLS,
        |imp| {
            let t = Tunnel::new(imp, imp);
            assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 1);
            // The kernel only hands the TUN UDP super-packets if the device
            // took USO; otherwise it segments them itself before the TUN.
            let features = t.a.ns.exec(&["ethtool", "-k", &t.a.iface]);
            assert!(
                features.contains("tx-udp-segmentation: on"),
                "USO not offered on {}:\n{features}",
                t.a.iface
            );
            // B writes what it receives to its TUN; with USO it coalesces
            // each train of datagrams into one super-packet, which the TUN
            // counts as one packet.
            let b_features = t.b.ns.exec(&["ethtool", "-k", &t.b.iface]);
            let b_uso = b_features.contains("tx-udp-segmentation: on");
            let rx_packets = || -> u64 {
                let path = format!("/sys/class/net/{}/statistics/rx_packets", t.b.iface);
                t.b.ns.exec(&["cat", &path]).trim().parse().unwrap()
            };
            let rx_before = rx_packets();
            let target = SocketAddr::new(IpAddr::V4(t.b.tunnel_ip), 7400);
            let rx = t.b.ns.udp_socket(target);
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let tx = t.a.ns.udp_socket("0.0.0.0:0".parse().unwrap());
            tx.connect(target).unwrap();
            let receiver = std::thread::spawn(move || receive_all(rx));
            for s in 0..SENDS {
                let batch: Vec<u8> = (0..PER_SEND)
                    .flat_map(|i| datagram(s * PER_SEND + i))
                    .collect();
                send_segmented(&tx, &batch, SIZE as u16);
                // Paced: the test is about segmentation, not socket buffers.
                std::thread::sleep(Duration::from_millis(2));
            }
            let got = receiver.join().unwrap();
            let missing: Vec<usize> = (0..SENDS * PER_SEND).filter(|i| !got[*i]).collect();
            assert!(
                missing.is_empty(),
                "{} of {} datagrams missing or damaged, first {:?}",
                missing.len(),
                SENDS * PER_SEND,
                &missing[..missing.len().min(10)]
            );
            let writes = rx_packets() - rx_before;
            assert!(b_uso, "USO not offered on {}:\n{b_features}", t.b.iface);
            assert!(
                writes <= (SENDS * PER_SEND / 2) as u64,
                "{} datagrams took {writes} TUN writes at B: not coalesced",
                SENDS * PER_SEND
            );
        },
    );
}

#[test]
fn refused_udp_segmentation_trains_lose_nothing_and_are_counted() {
    let Some(_serial) = netns_test("refused_udp_segmentation_trains_lose_nothing_and_are_counted")
    else {
        return;
    };
    let opts = TunnelOpts {
        a_env: vec![("WIRESPEED_METRICS", "127.0.0.1:9588")],
        ..TunnelOpts::default()
    };
    let t = Tunnel::with(Impl::WirespeedUdpOffload, Impl::WirespeedUdpOffload, opts);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 1);
    // An underlay MTU below one tunnel datagram (1420 + 60): the kernel
    // refuses a train whose segments exceed it (EINVAL), and sends the same
    // datagrams alone, fragmented.
    t.a.ns.ip(&["link", "set", UNDERLAY_IF, "mtu", "1280"]);
    let to = SocketAddr::new(IpAddr::V4(t.b.tunnel_ip), 7401);
    tcp_transfer(&t.a.ns, &t.b.ns, to, 8 << 20);
    let refusals = scrape(&t.a.ns, "127.0.0.1:9588")
        .lines()
        .filter(|l| l.starts_with("wirespeed_worker_udp_gso_refusals_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(refusals >= 1.0, "no refusal counted");
    let log = t.a.daemon.log();
    let logged = log.matches("refused a UDP segmentation train").count();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        (1..=workers).contains(&logged),
        "logged {logged} times, want once per worker that saw it:\n{log}"
    );
}

/// The metrics text served at `addr` inside `ns`.
fn scrape(ns: &common::Netns, addr: &str) -> String {
    let mut s = ns
        .tcp_connect(addr.parse().unwrap(), Duration::from_secs(2))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Datagram `n`: its number, then bytes that depend on it.
fn datagram(n: usize) -> Vec<u8> {
    let mut d = vec![0u8; SIZE];
    d[..4].copy_from_slice(&(n as u32).to_be_bytes());
    for (i, b) in d[4..].iter_mut().enumerate() {
        *b = (n * 31 + i * 7) as u8;
    }
    d
}

/// Which datagrams arrived intact (until the sender has been quiet for 2 s).
fn receive_all(rx: UdpSocket) -> Vec<bool> {
    let mut got = vec![false; SENDS * PER_SEND];
    let mut buf = [0u8; 2048];
    while let Ok(n) = rx.recv(&mut buf) {
        if n < 4 {
            continue;
        }
        let k = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        if k < got.len() && buf[..n] == datagram(k)[..] {
            got[k] = true;
        }
    }
    got
}

/// One sendmsg of `data` with UDP_SEGMENT: the kernel sends it as
/// `data.len() / size` datagrams (one GSO packet through the stack).
fn send_segmented(sock: &UdpSocket, data: &[u8], size: u16) {
    const SOL_UDP: libc::c_int = 17;
    const UDP_SEGMENT: libc::c_int = 103;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64-aligned room for one cmsg carrying a u16.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; every pointer in it is set below to
    // memory that outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
    // SAFETY: msg_control points at `control`, large enough for the one
    // cmsg CMSG_FIRSTHDR returns, whose data holds the u16 written.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
    }
    // SAFETY: `msg` and everything it points at are valid for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    assert_eq!(
        n,
        data.len() as isize,
        "sendmsg with UDP_SEGMENT: {}",
        std::io::Error::last_os_error()
    );
}
