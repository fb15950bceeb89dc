//! Handshake cost on one core: initiations consumed per second (mac1 check,
//! one DH, static and timestamp decryption), and the full responder path
//! (consumption plus the response's ephemeral key and two more DHs).

use core::time::Duration;
use std::net::SocketAddr;
use std::time::Instant;

use control::cookie::CookieJar;
use control::crypto::{tai64n, x25519};
use control::device::{Device, DeviceSettings, PeerSettings};
use control::handshake::{self, LocalStatic};
use control::keys::PrivateKey;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const UNIX: Duration = Duration::from_secs(1_750_000_000);

/// `n` distinct, valid initiations from one initiator to one responder, with
/// timestamps far enough apart that none is a replay of another.
fn initiations(init: &PrivateKey, resp: &PrivateKey, n: usize) -> Vec<[u8; 148]> {
    let i_pub = init.public_key();
    let r_pub = resp.public_key();
    let ss = x25519::dh(init.as_bytes(), r_pub.as_bytes()).unwrap();
    let mut jar = CookieJar::new(r_pub.as_bytes());
    let local = LocalStatic {
        private: init.as_bytes(),
        public: i_pub.as_bytes(),
    };
    (0..n)
        .map(|k| {
            let ts = tai64n::tai64n(UNIX + Duration::from_millis(50 * k as u64));
            let mut eph = [0u8; 32];
            eph[..8].copy_from_slice(&(k as u64 + 1).to_le_bytes());
            let (msg, _) =
                handshake::create_initiation(&local, r_pub.as_bytes(), &ss, eph, k as u32, &ts)
                    .unwrap();
            let mut b = msg.to_bytes();
            jar.stamp(&mut b, Duration::ZERO);
            b
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let init = PrivateKey::from_bytes([1; 32]);
    let resp = PrivateKey::from_bytes([2; 32]);
    let msgs = initiations(&init, &resp, 256);
    let r_pub = resp.public_key();
    let ss_r = x25519::dh(resp.as_bytes(), init.public_key().as_bytes()).unwrap();

    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    // Reference: one bare X25519 DH, the floor any consumption pays once.
    g.bench_function("reference_x25519_dh", |b| {
        let e = init.public_key();
        b.iter(|| x25519::dh(resp.as_bytes(), e.as_bytes()).unwrap())
    });
    g.bench_function("consume_initiation", |b| {
        let local = LocalStatic {
            private: resp.as_bytes(),
            public: r_pub.as_bytes(),
        };
        let mut k = 0;
        b.iter(|| {
            let m = &msgs[k % msgs.len()];
            k += 1;
            let parsed = match dataplane::messages::Message::parse(m).unwrap() {
                dataplane::messages::Message::Initiation(i) => i,
                _ => unreachable!(),
            };
            handshake::consume_initiation(&local, &parsed, |_| Some(ss_r.clone())).unwrap()
        })
    });

    g.bench_function("responder_initiation_to_response", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                // A fresh device per round: each initiation is consumed once.
                let mut dev = Device::new(
                    UNIX,
                    Box::new(ChaCha20Rng::seed_from_u64(done)),
                    DeviceSettings::default(),
                );
                dev.set_private_key(Some(resp.clone()));
                dev.upsert_peer(PeerSettings::new(init.public_key()));
                let src: SocketAddr = "192.0.2.1:51820".parse().unwrap();
                let mut out = Vec::with_capacity(4);
                let round = (iters - done).min(msgs.len() as u64) as usize;
                let start = Instant::now();
                for (k, m) in msgs[..round].iter().enumerate() {
                    out.clear();
                    let now = Duration::from_millis(50 * k as u64);
                    dev.handle_datagram(now, src, m, &mut out).unwrap();
                }
                total += start.elapsed();
                done += round as u64;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
