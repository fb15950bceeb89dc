use super::*;
use crate::tun::testns::{wait_readable, NetNs};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const A1: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const A2: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const A3: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 3);
const B1: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 1);
const B2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 2);
const B3: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 3);

/// A namespace whose loopback carries three IPv4 and three IPv6
/// addresses, so "which local address" has more than one answer.
fn netns(tag: &str) -> Option<NetNs> {
    let ns = NetNs::new(tag)?;
    for a in [A1, A2, A3] {
        ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    for b in [B1, B2, B3] {
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{b}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    Some(ns)
}

struct Got {
    data: Vec<u8>,
    src: SocketAddr,
    local: Option<IpAddr>,
    ifindex: u32,
}

/// Receives exactly `n` datagrams (failing after two seconds).
fn recv_n(sock: &mut UdpSocketBatch, slots: &mut [RecvSlot], n: usize) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "got {} of {n} datagrams",
            out.len()
        );
        if !wait_readable(sock.as_raw_fd(), 100) {
            continue;
        }
        let want = (n - out.len()).min(slots.len());
        match sock.recv_batch(&mut slots[..want]) {
            // Coalesced datagrams (UDP_GRO) count one by one.
            Ok(k) => out.extend(slots[..k].iter().flat_map(|s| {
                assert!(!s.truncated());
                s.segments().map(|at| Got {
                    data: s.data()[at].to_vec(),
                    src: s.src(),
                    local: s.local(),
                    ifindex: s.ifindex(),
                })
            })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv_batch: {e}"),
        }
    }
    out
}

/// Sends all of `msgs`, returning the indices reported stale.
fn send_all(sock: &mut UdpSocketBatch, msgs: &[SendMsg<'_>]) -> Vec<usize> {
    let mut stale = Vec::new();
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while done < msgs.len() {
        assert!(Instant::now() < deadline, "sent {done} of {}", msgs.len());
        let base = done;
        match sock.send_batch(&msgs[done..], |i| stale.push(base + i)) {
            Ok(n) => done += n,
            Err(e) => panic!("send_batch of message {done}: {e}"),
        }
    }
    stale
}

fn no_more(sock: &mut UdpSocketBatch) {
    let mut slot = [RecvSlot::with_capacity(2048)];
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        sock.recv_batch(&mut slot).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
}

#[test]
fn batches_both_ways_with_sticky_source() {
    let Some(ns) = netns("udp-batch") else { return };
    ns.run(|| {
        let mut server = UdpSocketBatch::bind(0, true).unwrap();
        let mut client = UdpSocketBatch::bind(0, false).unwrap();
        assert!(server.is_dual_stack());
        let sport = server.local_port();
        let cport = client.local_port();
        assert_ne!(sport, 0);
        let mut slots: Vec<RecvSlot> = (0..MAX_BATCH).map(|_| RecvSlot::new()).collect();

        let cases: [(IpAddr, IpAddr); 4] = [
            (A2.into(), A3.into()),
            (A1.into(), A3.into()),
            (B2.into(), B3.into()),
            (B1.into(), B3.into()),
        ];
        for (server_ip, client_ip) in cases {
            let payloads: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
            let msgs: Vec<SendMsg<'_>> = payloads
                .iter()
                .map(|p| SendMsg {
                    dst: SocketAddr::new(server_ip, sport),
                    src: Some(client_ip),
                    data: p,
                })
                .collect();
            assert_eq!(client.send_batch(&msgs, |_| panic!("stale")).unwrap(), 32);
            let got = recv_n(&mut server, &mut slots, 32);
            for (g, p) in got.iter().zip(&payloads) {
                assert_eq!(&g.data, p);
                // IPv4 peers are plain V4 even on the dual-stack socket.
                assert_eq!(g.src, SocketAddr::new(client_ip, cport));
                assert_eq!(g.local, Some(server_ip));
                assert_eq!(g.ifindex, 1, "loopback");
            }

            // Reply from where the client wrote to: the client sees
            // that address, not the route's preferred source.
            let replies: Vec<SendMsg<'_>> = got
                .iter()
                .map(|g| SendMsg {
                    dst: g.src,
                    src: g.local,
                    data: &g.data,
                })
                .collect();
            assert!(send_all(&mut server, &replies).is_empty());
            let back = recv_n(&mut client, &mut slots, 32);
            for (g, p) in back.iter().zip(&payloads) {
                assert_eq!(&g.data, p);
                assert_eq!(g.src, SocketAddr::new(server_ip, sport));
                assert_eq!(g.local, Some(client_ip));
            }
            no_more(&mut server);
            no_more(&mut client);
        }
    });
}

#[test]
fn more_than_a_batch_and_odd_sizes() {
    let Some(ns) = netns("udp-big") else { return };
    ns.run(|| {
        let mut server = UdpSocketBatch::bind(0, false).unwrap();
        let mut client = UdpSocketBatch::bind(0, false).unwrap();
        // One datagram per entry and per slot: trains have their own tests.
        client.set_offloads(false, false);
        server.set_offloads(false, false);
        let dst = SocketAddr::new(A1.into(), server.local_port());
        let payload = [0x5au8; 64];
        let msgs = vec![
            SendMsg {
                dst,
                src: None,
                data: &payload
            };
            150
        ];
        assert_eq!(send_all(&mut client, &msgs), Vec::<usize>::new());
        let mut slots: Vec<RecvSlot> = (0..MAX_BATCH + 10)
            .map(|_| RecvSlot::with_capacity(2048))
            .collect();
        assert!(wait_readable(server.as_raw_fd(), 2000));
        // One call never fills more than MAX_BATCH slots.
        let first = server.recv_batch(&mut slots).unwrap();
        assert!(first <= MAX_BATCH);
        let rest = recv_n(&mut server, &mut slots, 150 - first);
        assert!(rest.iter().all(|g| g.data == payload));

        // Empty datagram, datagram larger than the slot, the largest
        // datagram IPv4 allows.
        let big = vec![1u8; 65507];
        for data in [&[][..], &[9u8; 100][..], &big[..]] {
            client
                .send_to(dst, None, data)
                .unwrap_or_else(|e| panic!("{}: {e}", data.len()));
        }
        let mut small = [RecvSlot::with_capacity(16)];
        let mut full = [RecvSlot::new()];
        assert!(wait_readable(server.as_raw_fd(), 2000));
        assert_eq!(server.recv_batch(&mut small).unwrap(), 1);
        assert!(small[0].is_empty() && !small[0].truncated());
        assert_eq!(server.recv_batch(&mut small).unwrap(), 1);
        assert_eq!(small[0].len(), 16);
        assert!(small[0].truncated());
        assert!(wait_readable(server.as_raw_fd(), 2000));
        assert_eq!(server.recv_batch(&mut full).unwrap(), 1);
        assert_eq!(full[0].data(), &big[..]);
        assert!(!full[0].truncated());

        assert_eq!(server.recv_batch(&mut []).unwrap(), 0);
        assert_eq!(client.send_batch(&[], |_| {}).unwrap(), 0);
        // Too big for UDP: an error for that message, not a panic.
        let huge = vec![0u8; 70000];
        let err = client
            .send_batch(
                &[SendMsg {
                    dst,
                    src: None,
                    data: &huge,
                }],
                |_| {},
            )
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
        let ok = SendMsg {
            dst,
            src: None,
            data: b"ok",
        };
        let two = [
            ok,
            SendMsg {
                dst,
                src: None,
                data: &huge,
            },
            ok,
        ];
        assert_eq!(
            client.send_batch(&two, |_| {}).unwrap(),
            1,
            "stops before the bad one"
        );
    });
}

/// `n` datagrams of `size` bytes to `dst` and a shorter one, each filled
/// with its own index so order and boundaries show.
fn train_payloads(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..=n)
        .map(|i| vec![i as u8; if i == n { size / 3 } else { size }])
        .collect()
}

fn to<'a>(dst: SocketAddr, payloads: &'a [Vec<u8>]) -> Vec<SendMsg<'a>> {
    payloads
        .iter()
        .map(|p| SendMsg {
            dst,
            src: None,
            data: p,
        })
        .collect()
}

#[test]
fn trains_arrive_coalesced_or_one_by_one() {
    let Some(ns) = netns("udp-gso") else { return };
    ns.run(|| {
        let mut client = UdpSocketBatch::bind(0, true).unwrap();
        let mut coalescing = UdpSocketBatch::bind(0, true).unwrap();
        let mut plain = UdpSocketBatch::bind(0, true).unwrap();
        assert_eq!(client.offloads(), (true, true), "kernel 6.18 has both");
        plain.set_offloads(true, false);
        let mut slots: Vec<RecvSlot> = (0..8).map(|_| RecvSlot::new()).collect();
        for (dst_ip, size) in [(IpAddr::from(A1), 1452), (IpAddr::from(B1), 1200)] {
            let payloads = train_payloads(150, size);
            // Two destinations interleaved by halves: four trains or more.
            let gro_dst = SocketAddr::new(dst_ip, coalescing.local_port());
            let plain_dst = SocketAddr::new(dst_ip, plain.local_port());
            let mut msgs = to(gro_dst, &payloads);
            msgs.extend(to(plain_dst, &payloads));
            assert!(send_all(&mut client, &msgs).is_empty());

            assert!(wait_readable(coalescing.as_raw_fd(), 2000));
            let k = coalescing.recv_batch(&mut slots).unwrap();
            assert!(
                slots[..k].iter().any(|s| s.segment_size() == size),
                "a train arrived coalesced"
            );
            let first: Vec<Vec<u8>> = slots[..k]
                .iter()
                .flat_map(|s| s.segments().map(|at| s.data()[at].to_vec()))
                .collect();
            let rest = recv_n(&mut coalescing, &mut slots, payloads.len() - first.len());
            let got: Vec<Vec<u8>> = first
                .into_iter()
                .chain(rest.into_iter().map(|g| g.data))
                .collect();
            assert_eq!(got, payloads);

            let got = recv_n(&mut plain, &mut slots, payloads.len());
            assert!(got.iter().map(|g| &g.data).eq(payloads.iter()));
            assert_eq!(client.gso_fallbacks(), 0);
            no_more(&mut coalescing);
            no_more(&mut plain);
        }
    });
}

#[test]
fn refused_trains_go_one_by_one() {
    let Some(ns) = netns("udp-gso-mtu") else {
        return;
    };
    // Segments longer than the route's MTU: the kernel refuses the train
    // (EINVAL) but sends the same datagrams alone, fragmented.
    ns.ip(&["link", "set", "lo", "mtu", "1000"]);
    ns.run(|| {
        let mut client = UdpSocketBatch::bind(0, false).unwrap();
        let mut server = UdpSocketBatch::bind(0, false).unwrap();
        let mut slots: Vec<RecvSlot> = (0..8).map(|_| RecvSlot::new()).collect();
        let dst = SocketAddr::new(A1.into(), server.local_port());
        let payloads = train_payloads(20, 1200);
        for round in 0..2 {
            assert!(send_all(&mut client, &to(dst, &payloads)).is_empty());
            let got = recv_n(&mut server, &mut slots, payloads.len());
            assert!(
                got.iter().map(|g| &g.data).eq(payloads.iter()),
                "round {round}"
            );
            // Refused once: the destination gets no more trains.
            assert_eq!(client.gso_fallbacks(), 1);
        }
        // Small enough for the route: trains again, to anyone else.
        let other = UdpSocketBatch::bind(0, false).unwrap();
        let small = train_payloads(20, 500);
        let dst = SocketAddr::new(A1.into(), other.local_port());
        assert!(send_all(&mut client, &to(dst, &small)).is_empty());
        assert_eq!(client.gso_fallbacks(), 1);
    });
}

#[test]
fn slot_segments() {
    let mut s = RecvSlot::with_capacity(100);
    assert_eq!(
        s.segments().collect::<Vec<_>>(),
        vec![0..0],
        "empty datagram"
    );
    s.len = 10;
    assert_eq!(s.segments().collect::<Vec<_>>(), vec![0..10]);
    s.segment_size = 4;
    assert_eq!(s.segments().collect::<Vec<_>>(), vec![0..4, 4..8, 8..10]);
    s.segment_size = 5;
    assert_eq!(s.segments().collect::<Vec<_>>(), vec![0..5, 5..10]);
}

#[test]
fn stale_source_falls_back() {
    let Some(ns) = netns("udp-stale") else { return };
    let (mut server, client4, client6) = ns.run(|| {
        let server = UdpSocketBatch::bind(0, false).unwrap();
        let client4 = UdpSocket::bind((A3, 0)).unwrap();
        let client6 = UdpSocket::bind((B3, 0)).unwrap();
        (server, client4, client6)
    });
    // The addresses the peers had been writing to disappear.
    ns.ip(&["addr", "del", "10.78.0.2/32", "dev", "lo"]);
    ns.ip(&["-6", "addr", "del", "fd00:78::2/128", "dev", "lo"]);
    ns.run(|| {
        let to4 = client4.local_addr().unwrap();
        let to6 = client6.local_addr().unwrap();
        let msgs = [
            SendMsg {
                dst: to4,
                src: Some(A2.into()),
                data: b"stale v4",
            },
            SendMsg {
                dst: to4,
                src: Some(A1.into()),
                data: b"good v4",
            },
            SendMsg {
                dst: to6,
                src: Some(B2.into()),
                data: b"stale v6",
            },
            SendMsg {
                dst: to6,
                src: None,
                data: b"none v6",
            },
            // A source of the wrong family is dropped, too.
            SendMsg {
                dst: to4,
                src: Some(B1.into()),
                data: b"mixed",
            },
        ];
        let mut stale = Vec::new();
        assert_eq!(server.send_batch(&msgs, |i| stale.push(i)).unwrap(), 5);
        assert_eq!(stale, vec![0, 2, 4]);

        for s in [&client4, &client6] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut recv = |s: &UdpSocket| {
            let (n, from) = s.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), from.ip())
        };
        let (d, from) = recv(&client4);
        assert_eq!(
            (d.as_slice(), from == IpAddr::from(A2)),
            (&b"stale v4"[..], false)
        );
        assert_eq!(recv(&client4), (b"good v4".to_vec(), A1.into()));
        let (d, from) = recv(&client6);
        assert_eq!(
            (d.as_slice(), from == IpAddr::from(B2)),
            (&b"stale v6"[..], false)
        );
        assert_eq!(recv(&client6).0, b"none v6");
        assert_eq!(recv(&client4).0, b"mixed");

        // The slow path falls back the same way and says so.
        assert!(server.send_to(to4, Some(A2.into()), b"slow").unwrap());
        assert!(!server.send_to(to4, Some(A1.into()), b"slow").unwrap());
        assert_eq!(recv(&client4).0, b"slow");
        assert_eq!(recv(&client4), (b"slow".to_vec(), A1.into()));
    });
}

#[test]
fn reuseport_sockets_share_a_port() {
    let Some(ns) = netns("udp-reuse") else { return };
    ns.run(|| {
        let mut a = UdpSocketBatch::bind(0, true).unwrap();
        let port = a.local_port();
        let mut b = UdpSocketBatch::bind(port, true).unwrap();
        assert_eq!(b.local_port(), port);
        let err = UdpSocketBatch::bind(port, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");

        // 64 peers: the kernel hashes them over both sockets.
        let peers: Vec<UdpSocket> = (0..64).map(|_| UdpSocket::bind((A3, 0)).unwrap()).collect();
        for p in &peers {
            p.send_to(b"hi", (A1, port)).unwrap();
        }
        let mut slots: Vec<RecvSlot> = (0..MAX_BATCH)
            .map(|_| RecvSlot::with_capacity(2048))
            .collect();
        let mut got = [Vec::new(), Vec::new()];
        let deadline = Instant::now() + Duration::from_secs(2);
        while got[0].len() + got[1].len() < 64 {
            assert!(Instant::now() < deadline);
            for (k, s) in [&mut a, &mut b].into_iter().enumerate() {
                if let Ok(n) = s.recv_batch(&mut slots) {
                    got[k].extend(slots[..n].iter().map(|s| s.src()));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !got[0].is_empty() && !got[1].is_empty(),
            "{} / {}",
            got[0].len(),
            got[1].len()
        );

        // Each socket answers its own peers, from the shared port.
        for (k, s) in [&mut a, &mut b].into_iter().enumerate() {
            let msgs: Vec<SendMsg<'_>> = got[k]
                .iter()
                .map(|&dst| SendMsg {
                    dst,
                    src: Some(A1.into()),
                    data: b"back",
                })
                .collect();
            assert_eq!(send_all(s, &msgs), Vec::<usize>::new());
        }
        let mut buf = [0u8; 16];
        for p in &peers {
            p.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let (n, from) = p.recv_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..n], from),
                (&b"back"[..], SocketAddr::new(A1.into(), port))
            );
        }
    });
}

#[test]
fn ipv4_only_socket_and_options() {
    let Some(ns) = netns("udp-v4") else { return };
    ns.run(|| {
        let mut server = UdpSocketBatch::bind_v4(0, true).unwrap();
        assert!(!server.is_dual_stack());
        let mut clone = server.try_clone().unwrap();
        let client = UdpSocket::bind((A3, 0)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client
            .send_to(b"v4 only", (A2, server.local_port()))
            .unwrap();
        let mut slots = [RecvSlot::with_capacity(2048)];
        let got = recv_n(&mut clone, &mut slots, 1);
        assert_eq!(got[0].data, b"v4 only");
        assert_eq!(got[0].local, Some(A2.into()));
        assert_eq!(got[0].src, client.local_addr().unwrap());

        let msg = SendMsg {
            dst: got[0].src,
            src: got[0].local,
            data: b"reply",
        };
        assert_eq!(server.send_batch(&[msg], |_| panic!("stale")).unwrap(), 1);
        let mut buf = [0u8; 16];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"reply"[..], IpAddr::from(A2)));
        // An IPv4-mapped destination is the same IPv4 peer.
        let mapped = SocketAddr::new(A3.to_ipv6_mapped().into(), got[0].src.port());
        assert!(!server.send_to(mapped, Some(A1.into()), b"mapped").unwrap());
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"mapped"[..], IpAddr::from(A1)));

        // IPv6 destinations cannot be reached from here: an error.
        let v6 = SocketAddr::new(B1.into(), 9);
        let err = server
            .send_batch(
                &[SendMsg {
                    dst: v6,
                    src: None,
                    data: b"x",
                }],
                |_| {},
            )
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT));
        assert!(server.send_to(v6, None, b"x").is_err());

        server.set_fwmark(0x51820).unwrap();
        let mark = getsockopt_int(server.as_fd(), libc::SOL_SOCKET, libc::SO_MARK).unwrap();
        assert_eq!(mark, 0x51820);
        let (rcv, snd) = server.buffer_sizes().unwrap();
        assert!(
            rcv >= SOCKET_BUFFER_BYTES && snd >= SOCKET_BUFFER_BYTES,
            "{rcv} {snd}"
        );
    });
}

#[test]
fn address_conversions() {
    let mapped = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into(), 51820);
    assert_eq!(
        canonical_sockaddr(mapped),
        "192.0.2.1:51820".parse().unwrap()
    );
    // SAFETY: sockaddr_storage is plain bytes; all-zero is valid.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    for a in ["192.0.2.1:1", "[2001:db8::1]:65535", "[fe80::1%3]:7"] {
        let a: SocketAddr = a.parse().unwrap();
        let len = write_sockaddr(&mut st, a);
        assert_eq!(read_sockaddr(&st, len), Some(a));
    }
    let len = write_sockaddr(&mut st, mapped);
    assert_eq!(
        read_sockaddr(&st, len),
        Some("192.0.2.1:51820".parse().unwrap())
    );
    // A length too short for the family is refused, not over-read.
    assert_eq!(read_sockaddr(&st, 4), None);
}

#[test]
fn ipv6_disabled_still_serves_ipv4() {
    let Some(ns) = netns("udp-nov6") else { return };
    ns.run(|| {
        // /proc/sys/net follows the opening thread's namespace.
        for f in ["all", "default", "lo"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1").unwrap();
        }
        let mut server = UdpSocketBatch::bind(0, true).unwrap();
        let client = UdpSocket::bind((A3, 0)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.send_to(b"v4", (A1, server.local_port())).unwrap();
        let mut slots = [RecvSlot::with_capacity(2048)];
        let got = recv_n(&mut server, &mut slots, 1);
        assert_eq!(
            (got[0].src, got[0].local),
            (client.local_addr().unwrap(), Some(A1.into()))
        );
        assert!(!server.send_to(got[0].src, got[0].local, b"back").unwrap());
        let mut buf = [0u8; 8];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"back"[..], IpAddr::from(A1)));
        let v6 = SocketAddr::new(B1.into(), 9);
        assert!(server.send_to(v6, None, b"x").is_err());
    });
}
