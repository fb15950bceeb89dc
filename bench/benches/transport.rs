//! Transport message cost on one core at 64 and 1,420-byte payloads:
//! sealing and opening as the data plane does them, next to ring's bare
//! ChaCha20-Poly1305 on the same bytes (the crypto floor; `openssl speed
//! -evp chacha20-poly1305` is the external one, see bench/scripts).
//!
//! The `aead` group compares the batched AEAD (`dataplane::aead`) on 32
//! messages under 4 keys with ring sealing or opening the same 32 messages
//! one by one with a prebuilt key each (as `SessionKey` holds one);
//! throughput is per message.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::aead::AeadBatch;
use dataplane::messages::Message;
use dataplane::transport::{open, seal, SessionKey};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

fn bench(c: &mut Criterion) {
    let key = SessionKey::new(&[7; 32]);
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
                    let _ = std::hint::black_box(tag);
                })
            },
        );
    }
    g.finish();
}

const BATCH: usize = 32;
const TAG: usize = 16;

fn aead(c: &mut Criterion) {
    let keys: [[u8; 32]; 4] = core::array::from_fn(|i| [i as u8 + 1; 32]);
    let ring_keys: Vec<LessSafeKey> = keys
        .iter()
        .map(|k| LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).unwrap()))
        .collect();
    let session_keys: [SessionKey; 4] = core::array::from_fn(|i| SessionKey::new(&keys[i]));
    // Message i: key i % 4, counter 1000 + i (distinct per key as on the
    // wire).
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(1000 + i as u64).to_le_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut g = c.benchmark_group("aead");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut batch = AeadBatch::new();
    for size in [64usize, 128, 256, 512, 768, 1420] {
        let mut bodies: Vec<Vec<u8>> = (0..BATCH).map(|i| vec![i as u8; size + TAG]).collect();
        g.bench_function(BenchmarkId::new("batch_seal", size), |b| {
            b.iter(|| {
                batch.clear();
                let ids: [_; BATCH] = core::array::from_fn(|i| {
                    batch.push(&session_keys[i % 4], 1000 + i as u64, size)
                });
                batch.generate();
                for (id, body) in ids.iter().zip(bodies.iter_mut()) {
                    assert!(batch.seal(*id, body));
                }
            })
        });
        g.bench_function(BenchmarkId::new("ring_seal", size), |b| {
            b.iter(|| {
                for (i, body) in bodies.iter_mut().enumerate() {
                    let (text, tag_out) = body.split_at_mut(size);
                    let tag = ring_keys[i % 4]
                        .seal_in_place_separate_tag(nonce(i), Aad::empty(), text)
                        .unwrap();
                    tag_out.copy_from_slice(tag.as_ref());
                }
            })
        });

        // Opening decrypts in place, so both sides copy the sealed
        // messages back first (the same memcpy on each side).
        let sealed: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| {
                let mut m = vec![i as u8; size];
                let tag = ring_keys[i % 4]
                    .seal_in_place_separate_tag(nonce(i), Aad::empty(), &mut m)
                    .unwrap();
                m.extend_from_slice(tag.as_ref());
                m
            })
            .collect();
        g.bench_function(BenchmarkId::new("batch_open", size), |b| {
            b.iter(|| {
                for (body, s) in bodies.iter_mut().zip(&sealed) {
                    body.copy_from_slice(s);
                }
                batch.clear();
                let ids: [_; BATCH] = core::array::from_fn(|i| {
                    batch.push(&session_keys[i % 4], 1000 + i as u64, size)
                });
                batch.generate();
                for (id, body) in ids.iter().zip(bodies.iter_mut()) {
                    batch.open(*id, body).unwrap();
                }
            })
        });
        g.bench_function(BenchmarkId::new("ring_open", size), |b| {
            b.iter(|| {
                for (body, s) in bodies.iter_mut().zip(&sealed) {
                    body.copy_from_slice(s);
                }
                for (i, body) in bodies.iter_mut().enumerate() {
                    ring_keys[i % 4]
                        .open_in_place(nonce(i), Aad::empty(), body)
                        .unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, aead);
criterion_main!(benches);
