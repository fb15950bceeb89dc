use super::*;
use dataplane::shm::layout::CaptureRecord;

fn args(s: &str) -> Result<Args, String> {
    Args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
}

#[test]
fn arguments_in_any_order_with_defaults() {
    let a = args("wg0 -w /tmp/x.pcap").unwrap();
    assert_eq!(a.iface, "wg0");
    assert_eq!(a.out, Some(PathBuf::from("/tmp/x.pcap")));
    assert_eq!((a.uplink, a.count, a.host, a.port), (None, None, None, 0));
    assert_eq!(a.snaplen, CAPTURE_DATA_MAX as u32);
    assert_eq!(a.directions, CAPTURE_RX | CAPTURE_TX);
    let a =
        args("-c 10 -i eth1 --direction tx -s 96 --host fd00::1 --port 51820 -w - wg1").unwrap();
    assert_eq!(a.iface, "wg1");
    assert_eq!(a.out, None, "- is standard output");
    assert_eq!(a.uplink.as_deref(), Some("eth1"));
    assert_eq!(
        (a.count, a.snaplen, a.directions),
        (Some(10), 96, CAPTURE_TX)
    );
    assert_eq!(a.host, Some("fd00::1".parse().unwrap()));
    assert_eq!(a.port, 51820);
    assert_eq!(
        args("wg0 -w f --direction rx").unwrap().directions,
        CAPTURE_RX
    );
    // tcpdump's -s 0, and anything above what a slot holds: whole frames.
    assert_eq!(
        args("wg0 -w f -s 0").unwrap().snaplen,
        CAPTURE_DATA_MAX as u32
    );
    assert_eq!(
        args("wg0 -w f -s 99999").unwrap().snaplen,
        CAPTURE_DATA_MAX as u32
    );
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (bad, says) in [
        ("-w f", "interface"),
        ("wg0", "-w"),
        ("wg0 -w", "-w needs"),
        ("wg0 -w f -c 0", "positive"),
        ("wg0 -w f -c x", "positive"),
        ("wg0 -w f -s x", "number"),
        ("wg0 -w f --direction up", "rx, tx or both"),
        ("wg0 -w f --host 10.0.0", "IP address"),
        ("wg0 -w f --port 0", "port"),
        ("wg0 -w f --port 70000", "port"),
        ("wg0 -w f --bogus", "unknown option"),
        ("wg0 wg1 -w f", "unexpected"),
    ] {
        let e = args(bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

/// A region of its own, removed on drop.
struct TempRegion {
    dir: PathBuf,
    region: Option<Region>,
}

impl TempRegion {
    fn new(tag: &str) -> TempRegion {
        let dir = std::env::temp_dir().join(format!(
            "wirespeed-test-capture-{tag}-{}",
            std::process::id()
        ));
        let region = Region::create_exclusive(&dir.join("wg0.region")).unwrap();
        region.header().workers.store(2, Ordering::Release);
        region
            .header()
            .dataplane_pid
            .store(std::process::id(), Ordering::Release);
        TempRegion {
            dir,
            region: Some(region),
        }
    }

    fn region(&self) -> &Region {
        self.region.as_ref().unwrap()
    }
}

impl Drop for TempRegion {
    fn drop(&mut self) {
        self.region.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn record(session: u64, realtime_ns: u64, len: u32) -> CaptureRecord {
    CaptureRecord {
        session,
        realtime_ns,
        ifindex: 2,
        direction: CAPTURE_RX,
        orig_len: len,
        cap_len: len,
    }
}

/// The records of a pcap file: (seconds, nanoseconds, kept, original, bytes).
fn records(b: &[u8]) -> Vec<(u32, u32, u32, u32, Vec<u8>)> {
    let u = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    let mut v = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let n = u(at + 8) as usize;
        v.push((
            u(at),
            u(at + 4),
            u(at + 8),
            u(at + 12),
            b[at + 16..at + 16 + n].to_vec(),
        ));
        at += 16 + n;
    }
    v
}

#[test]
fn drains_every_worker_in_time_order_up_to_the_count_and_skips_other_sessions() {
    let t = TempRegion::new("drain");
    let r = t.region();
    let me = std::process::id();
    let session = capture::start(r, &Filter::default(), me).unwrap();
    let (w0, w1) = (r.capture_ring(0), r.capture_ring(1));
    assert!(w0.push(&record(session, 3_000_000_002, 3), &[3; 3]));
    assert!(w0.push(&record(session + 7, 1, 9), &[9; 9]));
    assert!(w1.push(&record(session, 1_000_000_001, 1), &[1]));
    assert!(w1.push(&record(session, 2_000_000_000, 2), &[2; 2]));
    assert!(w1.push(&record(session, 4_000_000_000, 4), &[4; 4]));
    let mut pcap = PcapWriter::new(Vec::new(), 100).unwrap();
    let n = drain_until_done(r, session, Some(3), &mut pcap).unwrap();
    assert_eq!(n, 3);
    let got = records(&pcap.into_inner());
    assert_eq!(
        got,
        vec![
            (1, 1, 1, 1, vec![1]),
            (2, 0, 2, 2, vec![2; 2]),
            (3, 2, 3, 3, vec![3; 3]),
        ]
    );
}

#[test]
fn draining_ends_when_the_data_plane_is_gone() {
    let t = TempRegion::new("gone");
    let r = t.region();
    let session = capture::start(r, &Filter::default(), std::process::id()).unwrap();
    r.header().dataplane_pid.store(0, Ordering::Release);
    assert!(r.capture_ring(0).push(&record(session, 5, 1), &[7]));
    let mut pcap = PcapWriter::new(Vec::new(), 100).unwrap();
    let n = drain_until_done(r, session, None, &mut pcap).unwrap();
    assert_eq!(n, 1, "what was waiting is still written");
}
