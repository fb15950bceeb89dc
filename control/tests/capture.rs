//! `wirespeed capture`: the frames the AF_XDP sockets send and receive,
//! which tcpdump on the gateway cannot see, end up in a pcap file that
//! tcpdump reads, both directions, with the headers that went on the wire.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::util::{wait_until, TempDir};
use common::{assert_ping, Impl, Netns, Tunnel};

/// One frame of a pcap file: (kept bytes, original length).
type Frame = (Vec<u8>, u32);

/// A pcap reader for what the test needs: the classic format, either
/// timestamp resolution, this host's byte order, Ethernet.
fn read_pcap(path: &Path) -> Vec<Frame> {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() >= 24, "a pcap file header");
    let u = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    assert!(
        [0xa1b2_c3d4, 0xa1b2_3c4d].contains(&u(0)),
        "pcap magic: {:#x}",
        u(0)
    );
    assert_eq!(u(20), 1, "LINKTYPE_ETHERNET");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let (kept, orig) = (u(at + 8) as usize, u(at + 12));
        frames.push((b[at + 16..at + 16 + kept].to_vec(), orig));
        at += 16 + kept;
    }
    frames
}

fn mac_of(ns: &Netns, iface: &str) -> [u8; 6] {
    let out = ns.ip(&["link", "show", "dev", iface]);
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out}"));
    let v: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// (source MAC, destination MAC, source address and port, destination).
type Addressing = ([u8; 6], [u8; 6], (Ipv4Addr, u16), (Ipv4Addr, u16));

/// What a WireGuard transport frame says about itself, after checking that its Ethernet,
/// IPv4 and UDP headers agree with each other and with its length.
fn transport_frame(f: &[u8], orig: u32) -> Addressing {
    assert_eq!(f.len() as u32, orig, "kept whole");
    assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4 ethertype");
    let ip = &f[14..];
    assert_eq!(ip[0], 0x45, "IPv4, no options");
    assert_eq!(ip[9], 17, "UDP");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(14 + total, f.len(), "IP total length");
    let udp = &ip[20..];
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, total - 20);
    let wg = &udp[8..];
    assert_eq!(&wg[..4], &[4, 0, 0, 0], "WireGuard transport data");
    assert_eq!((wg.len() - 16) % 16, 0, "header, padded text and tag");
    let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    let port = |o: usize| u16::from_be_bytes([udp[o], udp[o + 1]]);
    (
        f[6..12].try_into().unwrap(),
        f[0..6].try_into().unwrap(),
        (addr(12), port(0)),
        (addr(16), port(2)),
    )
}

/// Starts `wirespeed capture IFACE ARGS -w FILE` in `ns` and waits until it
/// has turned capture on.
fn start_capture(ns: &Netns, iface: &str, args: &[&str], file: &Path, log: &Path) -> Child {
    let mut cmd = ns.cmd(env!("CARGO_BIN_EXE_wirespeed"));
    cmd.args(["capture", iface])
        .args(args)
        .arg("-w")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let child = cmd.spawn().unwrap();
    let on = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        std::fs::read_to_string(log).is_ok_and(|l| l.contains("listening on"))
    });
    assert!(
        on,
        "capture started: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    child
}

/// Waits (generously) for `child` to exit on its own; kills it otherwise.
fn wait_exit(mut child: Child, log: &Path) -> String {
    let done = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(done, "capture ended by itself after its count:\n{text}");
    text
}

#[test]
fn capture_writes_af_xdp_frames_both_ways_to_a_pcap_file() {
    let Some(_serial) = common::netns_test("capture_pcap") else {
        return;
    };
    let t = Tunnel::new(Impl::Wirespeed, Impl::WireguardGo);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 1);
    assert!(
        t.a.wait_xdp_on("veth0", Duration::from_secs(5)),
        "AF_XDP on veth0:\n{}",
        t.a.daemon.log()
    );
    // The handshake is done: from here on, every frame between the two is
    // a transport message, and A's go through its AF_XDP socket.
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 1);
    let dir = TempDir::new();
    let (file, log) = (dir.join("both.pcap"), dir.join("both.log"));
    let cap = start_capture(
        &t.a.ns,
        &t.a.iface,
        &["-c", "10", "-i", "veth0"],
        &file,
        &log,
    );
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 5);
    let said = wait_exit(cap, &log);
    assert!(said.contains("10 packets captured"), "{said}");
    assert!(said.contains("0 packets dropped"), "{said}");

    let (mac_a, mac_b) = (mac_of(&t.a.ns, "veth0"), mac_of(&t.b.ns, "veth0"));
    let a = (t.a.underlay_ip, t.a.port);
    let b = (t.b.underlay_ip, t.b.port);
    let frames = read_pcap(&file);
    assert_eq!(frames.len(), 10, "the count");
    let (mut sent, mut received) = (0, 0);
    for (f, orig) in &frames {
        match transport_frame(f, *orig) {
            (src, dst, from, to) if from == a && to == b => {
                assert_eq!((src, dst), (mac_a, mac_b), "sent: A's MAC to B's");
                sent += 1;
            }
            (src, dst, from, to) if from == b && to == a => {
                assert_eq!((src, dst), (mac_b, mac_a), "received: B's MAC to A's");
                received += 1;
            }
            other => panic!("a frame neither from A to B nor back: {other:?}"),
        }
    }
    assert!(
        sent >= 4 && received >= 4,
        "{sent} sent, {received} received"
    );

    // tcpdump reads it as it reads its own files.
    let text =
        t.a.ns
            .exec(&["tcpdump", "-r", file.to_str().unwrap(), "-nn"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    assert!(text.contains("10.0.0.1.51820 > 10.0.0.2.51821"), "{text}");
    assert!(text.contains("10.0.0.2.51821 > 10.0.0.1.51820"), "{text}");

    // A filter by direction, and a snapshot length.
    let (file, log) = (dir.join("rx.pcap"), dir.join("rx.log"));
    let cap = start_capture(
        &t.a.ns,
        &t.a.iface,
        &["-c", "3", "--direction", "rx", "-s", "42"],
        &file,
        &log,
    );
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    wait_exit(cap, &log);
    let frames = read_pcap(&file);
    assert_eq!(frames.len(), 3);
    for (f, orig) in &frames {
        assert_eq!(f.len(), 42, "cut to the snapshot length");
        assert!(*orig > 42 + 32, "the original length is kept");
        assert_eq!(&f[6..12], &mac_b, "received only");
        assert_eq!(&f[14 + 12..14 + 16], &b.0.octets(), "from B");
    }

    // A capture command killed outright leaves capture on; the data plane
    // notices and turns it off.
    let (file, log) = (dir.join("killed.pcap"), dir.join("killed.log"));
    let mut cap = start_capture(&t.a.ns, &t.a.iface, &[], &file, &log);
    let pid = cap.id();
    cap.kill().unwrap();
    cap.wait().unwrap();
    let line = format!("capture: process {pid} ended without turning capture off");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || t
            .a
            .daemon
            .log()
            .contains(&line)),
        "{line}:\n{}",
        t.a.daemon.log()
    );
}

#[test]
fn capture_is_refused_for_an_interface_without_a_data_plane() {
    let Some(_serial) = common::netns_test("capture_none") else {
        return;
    };
    let ns = Netns::new();
    let dir = TempDir::new();
    let out = ns
        .cmd(env!("CARGO_BIN_EXE_wirespeed"))
        .args(["capture", "nosuch0", "-w"])
        .arg(dir.join("x.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no wirespeed data plane for nosuch0"), "{err}");
}
