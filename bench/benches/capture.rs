//! What packet capture costs a worker: the per-batch check while it is off,
//! and per frame while it is on (filter, clock, copy into the ring) for a
//! 64-byte and a full-size WireGuard frame, whole and cut to 128 bytes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::frame::{write_udp_frame, FrameHeader};
use dataplane::shm::capture::{self, Filter};
use dataplane::shm::layout::{CAPTURE_RX, CAPTURE_SLOTS};
use dataplane::shm::Region;

fn frame(payload: usize) -> Vec<u8> {
    let hdr = FrameHeader {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        vlan: None,
        src: "10.0.0.2:51821".parse().unwrap(),
        dst: "10.0.0.1:51820".parse().unwrap(),
    };
    let mut buf = vec![0u8; 2048];
    let n = write_udp_frame(&mut buf, &hdr, payload).unwrap();
    buf.truncate(n);
    buf
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("wirespeed-bench-capture-{}", std::process::id()));
    let region = Region::create_exclusive(&dir.join("wg0.region")).expect("a region (as root)");
    let mut g = c.benchmark_group("capture");
    g.bench_function("off: check per batch", |b| {
        b.iter(|| black_box(capture::armed(black_box(&region)).is_some()))
    });
    let me = std::process::id();
    // WireGuard transport of a 64-byte and a 1,420-byte inner packet.
    for (name, payload) in [("64", 32 + 64), ("1420", 32 + 1420)] {
        let f = frame(payload);
        for snaplen in [4064u32, 128] {
            capture::start(
                &region,
                &Filter {
                    snaplen,
                    ..Filter::default()
                },
                me,
            )
            .unwrap();
            let armed = capture::armed(&region).unwrap();
            let ring = region.capture_ring(0);
            let mut n = 0usize;
            g.throughput(Throughput::Elements(1));
            g.bench_function(
                format!("on: frame of {name} B inner, snaplen {snaplen}"),
                |b| {
                    b.iter(|| {
                        n += 1;
                        if n.is_multiple_of(CAPTURE_SLOTS) {
                            // What the capture command does: empties the ring.
                            ring.skip_all();
                        }
                        armed.offer(&ring, CAPTURE_RX, 2, black_box(&f))
                    })
                },
            );
            capture::stop(&region, me);
        }
    }
    g.finish();
    drop(region);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
