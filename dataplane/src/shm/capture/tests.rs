use super::*;
use crate::frame::{write_udp_frame, FrameHeader};
use crate::shm::testutil::temp_region;

/// A process id no process has (above the kernel's pid_max limit).
const DEAD_PID: u32 = i32::MAX as u32;

fn udp_frame(src: &str, dst: &str, payload: usize) -> Vec<u8> {
    let hdr = FrameHeader {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        vlan: None,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    };
    let mut buf = vec![0u8; 2048];
    let n = write_udp_frame(&mut buf, &hdr, payload).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn off_until_started_and_off_again_after_stop() {
    let (r, _dir) = temp_region("cap-onoff");
    assert!(armed(&r).is_none());
    let f = Filter {
        snaplen: 96,
        directions: CAPTURE_TX,
        ifindex: 7,
        host: Some("10.0.0.2".parse().unwrap()),
        port: 51820,
    };
    let me = std::process::id();
    let s = start(&r, &f, me).unwrap();
    let a = armed(&r).expect("on after start");
    assert_eq!((a.session, a.filter), (s, f));
    stop(&r, me);
    assert!(armed(&r).is_none());
    // Each capture gets a session of its own.
    let s2 = start(&r, &Filter::default(), me).unwrap();
    assert_ne!(s2, s);
    assert_eq!(armed(&r).unwrap().filter, Filter::default());
}

#[test]
fn frames_go_through_the_ring_cut_to_the_snaplen() {
    let (r, _dir) = temp_region("cap-ring");
    let me = std::process::id();
    let f = Filter {
        snaplen: 60,
        ..Filter::default()
    };
    let s = start(&r, &f, me).unwrap();
    let ring = r.capture_ring(2);
    let a = armed(&r).unwrap();
    let big = udp_frame("10.0.0.1:51820", "10.0.0.2:51821", 148);
    let small = udp_frame("10.0.0.2:51821", "10.0.0.1:51820", 4);
    assert!(a.offer(&ring, CAPTURE_TX, 3, &big));
    assert!(a.offer(&ring, CAPTURE_RX, 3, &small));
    let mut out = Vec::new();
    let rec = ring.pop(&mut out).unwrap();
    assert_eq!(
        (
            rec.session,
            rec.direction,
            rec.ifindex,
            rec.orig_len,
            rec.cap_len
        ),
        (s, CAPTURE_TX, 3, big.len() as u32, 60)
    );
    assert_eq!(out, big[..60]);
    assert!(
        rec.realtime_ns > 1_600_000_000 * 1_000_000_000,
        "a wall-clock time"
    );
    let rec = ring.pop(&mut out).unwrap();
    assert_eq!(
        (rec.direction, rec.orig_len),
        (CAPTURE_RX, small.len() as u32)
    );
    assert_eq!(out, small);
    assert!(ring.pop(&mut out).is_none());
    // Other workers' rings saw nothing.
    assert!(r.capture_ring(0).pop(&mut out).is_none());
}

#[test]
fn a_full_ring_drops_and_counts_and_takes_again_once_drained() {
    let (r, _dir) = temp_region("cap-full");
    let ring = r.capture_ring(0);
    let rec = CaptureRecord {
        session: 1,
        ..CaptureRecord::default()
    };
    for i in 0..CAPTURE_SLOTS {
        assert!(ring.push(&rec, &[i as u8; 10]), "slot {i}");
    }
    assert!(!ring.push(&rec, &[0; 10]));
    assert!(!ring.push(&rec, &[0; 10]));
    assert_eq!(ring.dropped(), 2);
    let mut out = Vec::new();
    assert_eq!(ring.pop(&mut out).unwrap().cap_len, 10);
    assert_eq!(out, [0u8; 10]);
    assert!(ring.push(&rec, &[9; 10]));
    assert_eq!(ring.dropped(), 2);
}

#[test]
fn a_corrupt_head_or_length_is_not_believed() {
    let (r, _dir) = temp_region("cap-corrupt");
    let ring = r.capture_ring(1);
    ring.push(&CaptureRecord::default(), &[1; 8]);
    // A producer that claims more than a ring's worth: emptied, not read.
    ring.header
        .head
        .store(10 * CAPTURE_SLOTS as u64, Ordering::Release);
    let mut out = Vec::new();
    assert!(ring.pop(&mut out).is_none());
    assert!(ring.pop(&mut out).is_none());
    // A record that claims more bytes than its slot holds is cut to it.
    ring.push(&CaptureRecord::default(), &[2; 8]);
    let slot = (ring.header.tail.load(Ordering::Relaxed) % CAPTURE_SLOTS as u64) as usize;
    // SAFETY: the slot's record lies inside the ring (slot < CAPTURE_SLOTS).
    unsafe {
        let at = ring.slots.add(slot * CAPTURE_SLOT_SIZE) as *mut CaptureRecord;
        (*at).cap_len = u32::MAX;
    }
    assert_eq!(
        ring.pop(&mut out).unwrap().cap_len as usize,
        CAPTURE_DATA_MAX
    );
    assert_eq!(out.len(), CAPTURE_DATA_MAX);
}

#[test]
fn filters_by_direction_uplink_host_and_port() {
    let f = udp_frame("192.0.2.1:40000", "10.0.0.1:51820", 32);
    let any = Filter::default();
    assert!(any.matches(CAPTURE_RX, 5, &f));
    assert!(
        any.matches(CAPTURE_TX, 9, &[0u8; 20]),
        "not UDP, no host filter"
    );
    let rx_only = Filter {
        directions: CAPTURE_RX,
        ..any
    };
    assert!(rx_only.matches(CAPTURE_RX, 5, &f));
    assert!(!rx_only.matches(CAPTURE_TX, 5, &f));
    let uplink = Filter { ifindex: 5, ..any };
    assert!(uplink.matches(CAPTURE_RX, 5, &f));
    assert!(!uplink.matches(CAPTURE_RX, 6, &f));
    let host = |h: &str| Filter {
        host: Some(h.parse().unwrap()),
        ..any
    };
    assert!(host("192.0.2.1").matches(CAPTURE_RX, 5, &f));
    assert!(host("10.0.0.1").matches(CAPTURE_RX, 5, &f));
    assert!(!host("10.0.0.2").matches(CAPTURE_RX, 5, &f));
    assert!(!host("10.0.0.1").matches(CAPTURE_RX, 5, &[0u8; 60]));
    let port = |p| Filter { port: p, ..any };
    assert!(port(40000).matches(CAPTURE_RX, 5, &f));
    assert!(port(51820).matches(CAPTURE_RX, 5, &f));
    assert!(!port(51821).matches(CAPTURE_RX, 5, &f));
    let v6 = udp_frame("[fd00::1]:51820", "[fd00::2]:1234", 32);
    assert!(host("fd00::2").matches(CAPTURE_TX, 1, &v6));
    assert!(!host("10.0.0.1").matches(CAPTURE_TX, 1, &v6));
}

#[test]
fn one_capture_at_a_time_but_a_dead_owner_is_taken_over() {
    let (r, _dir) = temp_region("cap-owner");
    let me = std::process::id();
    start(&r, &Filter::default(), me).unwrap();
    let e = start(&r, &Filter::default(), DEAD_PID).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains(&me.to_string()), "{e}");
    // Stopping as someone else changes nothing.
    stop(&r, DEAD_PID);
    assert!(armed(&r).is_some());
    stop(&r, me);
    // An owner that died holding it (SIGKILL) does not block the next one.
    start(&r, &Filter::default(), DEAD_PID).unwrap();
    let s = start(&r, &Filter::default(), me).unwrap();
    assert_eq!(armed(&r).unwrap().session, s);
    assert_eq!(r.capture_control().owner_pid.load(Ordering::Relaxed), me);
}

#[test]
fn the_data_plane_turns_off_a_capture_whose_command_died() {
    let (r, _dir) = temp_region("cap-reap");
    start(&r, &Filter::default(), std::process::id()).unwrap();
    assert_eq!(reap_orphan(&r), None, "its owner is alive");
    assert!(armed(&r).is_some());
    stop(&r, std::process::id());
    start(&r, &Filter::default(), DEAD_PID).unwrap();
    assert!(armed(&r).is_some());
    assert_eq!(reap_orphan(&r), Some(DEAD_PID));
    assert!(armed(&r).is_none());
    assert_eq!(r.capture_control().owner_pid.load(Ordering::Relaxed), 0);
    assert_eq!(reap_orphan(&r), None, "nothing left to reap");
}

#[test]
fn a_new_start_skips_what_an_earlier_capture_left_in_the_rings() {
    let (r, _dir) = temp_region("cap-skip");
    let me = std::process::id();
    start(&r, &Filter::default(), me).unwrap();
    let a = armed(&r).unwrap();
    let frame = udp_frame("10.0.0.1:1", "10.0.0.2:2", 4);
    assert!(a.offer(&r.capture_ring(4), CAPTURE_RX, 1, &frame));
    stop(&r, me);
    start(&r, &Filter::default(), me).unwrap();
    assert!(r.capture_ring(4).pop(&mut Vec::new()).is_none());
}
