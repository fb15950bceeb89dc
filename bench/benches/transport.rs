//! Transport message cost on one core at 64 and 1,420-byte payloads:
//! sealing and opening as the data plane does them, next to ring's bare
//! ChaCha20-Poly1305 on the same bytes (the crypto floor; `openssl speed
//! -evp chacha20-poly1305` is the external one, see bench/scripts).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::messages::Message;
use dataplane::transport::{open, seal, SessionKey};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

fn bench(c: &mut Criterion) {
    let key = SessionKey::new([7; 32]);
    let raw = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).unwrap());
    let mut g = c.benchmark_group("transport");
    for size in [64usize, 1420] {
        let packet = vec![0x45u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        let mut out = Vec::with_capacity(2048);
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::new("seal", size), &packet, |b, p| {
            b.iter(|| {
                counter += 1;
                seal(&key, 1, counter, p, 1420, &mut out);
            })
        });
        let mut wire = Vec::new();
        seal(&key, 1, 0, &packet, 1420, &mut wire);
        let mut plain = Vec::with_capacity(2048);
        g.bench_with_input(BenchmarkId::new("open", size), &wire, |b, w| {
            b.iter(|| {
                let Ok(Message::Transport(t)) = Message::parse(w) else {
                    unreachable!()
                };
                open(&key, &t, &mut plain).unwrap();
            })
        });
        let mut buf = packet.clone();
        g.bench_with_input(
            BenchmarkId::new("reference_ring_aead", size),
            &size,
            |b, _| {
                b.iter(|| {
                    let tag = raw
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key([0; 12]),
                            Aad::empty(),
                            &mut buf,
                        )
                        .unwrap();
                    let _ = criterion::black_box(tag);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
