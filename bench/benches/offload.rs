//! The per-byte work a TUN super-packet costs before sealing, on one core:
//! the Internet checksum over 64 KiB and cutting a 64 KiB TCP super-packet
//! into MTU-sized segments (headers rebuilt, checksums computed; payloads
//! left where they lie). The reference, in the same run, is a `memcpy` of
//! the same bytes: what one pass over them costs at least.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::checksum::{add, fold};
use dataplane::offload::{for_each_piece, VnetHdr, GSO_TCPV4};
use std::hint::black_box;

/// A TCP super-packet of `len` bytes as the TUN hands one over: IPv4 and a
/// 32-byte TCP header (timestamps), ACK|PSH.
fn super_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20 + 12] = 8 << 4;
    p[20 + 13] = 0x18;
    for (i, b) in p[52..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn bench(c: &mut Criterion) {
    let len = 65_000;
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Bytes(len as u64));
    let packet = super_packet(len);
    let mut copy = vec![0u8; len];
    g.bench_function(BenchmarkId::new("memcpy", len), |b| {
        b.iter(|| copy.copy_from_slice(black_box(&packet)))
    });
    g.bench_function(BenchmarkId::new("checksum", len), |b| {
        b.iter(|| fold(add(0, black_box(&packet))))
    });
    let hdr = VnetHdr {
        gso_type: GSO_TCPV4,
        hdr_len: 52,
        gso_size: 1368,
        ..VnetHdr::default()
    };
    let mut work = packet.clone();
    g.bench_function(BenchmarkId::new("segment_tcp", len), |b| {
        b.iter(|| {
            let mut n = 0usize;
            for_each_piece(&hdr, black_box(&mut work), |p| n += p.head[51] as usize)
                .expect("a valid super-packet");
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
