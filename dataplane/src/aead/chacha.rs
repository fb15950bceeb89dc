//! ChaCha20 block function (RFC 8439 §2.3): a scalar version, and an AVX2
//! one that computes eight independent blocks at once, each lane with its
//! own key, nonce and counter, so a batch of short messages fills the
//! vector lanes even though each message is only a few blocks long.

use zeroize::Zeroize;

/// "expand 32-byte k"
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The input state for the key words `key` and the 96-bit nonce words
/// `nonce`, with block counter 0 (word 12 is set per block).
pub(crate) fn state(key: &[u32; 8], nonce: [u32; 3]) -> [u32; 16] {
    let mut s = [0u32; 16];
    s[..4].copy_from_slice(&SIGMA);
    s[4..12].copy_from_slice(key);
    s[13..].copy_from_slice(&nonce);
    s
}

/// Little-endian words of a 32-byte key.
pub(crate) fn key_words(key: &[u8; 32]) -> [u32; 8] {
    core::array::from_fn(|i| {
        u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]])
    })
}

/// Nonce words of a 12-byte RFC 8439 nonce.
#[cfg(test)]
pub(crate) fn nonce_words(n: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([n[i], n[i + 1], n[i + 2], n[i + 3]]);
    [w(0), w(4), w(8)]
}

#[inline(always)]
fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

/// The 20 rounds plus feed-forward: one keystream block as words.
fn rounds(input: &[u32; 16]) -> [u32; 16] {
    let mut x = *input;
    for _ in 0..10 {
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 1, 5, 9, 13);
        quarter(&mut x, 2, 6, 10, 14);
        quarter(&mut x, 3, 7, 11, 15);
        quarter(&mut x, 0, 5, 10, 15);
        quarter(&mut x, 1, 6, 11, 12);
        quarter(&mut x, 2, 7, 8, 13);
        quarter(&mut x, 3, 4, 9, 14);
    }
    for (w, i) in x.iter_mut().zip(input) {
        *w = w.wrapping_add(*i);
    }
    x
}

/// One keystream block of `input` (a full state, counter included) as
/// 64-bit little-endian words, the layout the batch scratch uses.
pub(crate) fn block_words(input: &[u32; 16], out: &mut [u64; 8]) {
    let mut x = rounds(input);
    for (o, w) in out.iter_mut().zip(x.chunks_exact(2)) {
        *o = u64::from(w[0]) | u64::from(w[1]) << 32;
    }
    x.zeroize();
}

/// One 64-byte keystream block of `input`.
pub(crate) fn block(input: &[u32; 16], out: &mut [u8; 64]) {
    let mut x = rounds(input);
    for (o, w) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    x.zeroize();
}

/// XORs the keystream of `input` starting at block `counter` into `data`,
/// block by block; for a message whose keystream was not precomputed.
pub(crate) fn xor_stream(input: &[u32; 16], counter: u32, data: &mut [u8]) {
    let mut s = *input;
    let mut ks = [0u8; 64];
    for (i, chunk) in data.chunks_mut(64).enumerate() {
        s[12] = counter.wrapping_add(i as u32);
        block(&s, &mut ks);
        for (d, k) in chunk.iter_mut().zip(&ks) {
            *d ^= k;
        }
    }
    ks.zeroize();
}

/// Whether this CPU runs [`blocks_x8`]; detected once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn have_x8() -> bool {
    use std::sync::OnceLock;
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| std::is_x86_feature_detected!("avx2"))
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn have_x8() -> bool {
    false
}

/// Keystream blocks of `input[..out.len()]` into `out` (at most 8), as
/// [`block_words`] would. Runs all eight AVX2 lanes whatever `out.len()`;
/// the caller decides when a short pass is worth it.
pub(crate) fn blocks_x8(input: &[[u32; 16]; 8], out: &mut [[u64; 8]]) {
    assert!(out.len() <= 8);
    #[cfg(target_arch = "x86_64")]
    if have_x8() {
        // SAFETY: AVX2 was detected at run time on this CPU; out.len() <= 8
        // was checked above.
        unsafe { avx2::blocks_x8(input, out) };
        return;
    }
    for (i, o) in input.iter().zip(out.iter_mut()) {
        block_words(i, o);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// 8x8 transpose of 32-bit words: row `i` (lane i's eight words) becomes
    /// column `i`. Its own inverse, so it serves for loading and storing.
    macro_rules! transpose8 {
        ($r:expr) => {{
            let r = $r;
            let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
            let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
            let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
            let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
            let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
            let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
            let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
            let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
            // u0: words 0|4 of lanes 0-3, u1: 1|5, u2: 2|6, u3: 3|7; u4-u7
            // the same for lanes 4-7.
            let u0 = _mm256_unpacklo_epi64(t0, t2);
            let u1 = _mm256_unpackhi_epi64(t0, t2);
            let u2 = _mm256_unpacklo_epi64(t1, t3);
            let u3 = _mm256_unpackhi_epi64(t1, t3);
            let u4 = _mm256_unpacklo_epi64(t4, t6);
            let u5 = _mm256_unpackhi_epi64(t4, t6);
            let u6 = _mm256_unpacklo_epi64(t5, t7);
            let u7 = _mm256_unpackhi_epi64(t5, t7);
            [
                _mm256_permute2x128_si256(u0, u4, 0x20),
                _mm256_permute2x128_si256(u1, u5, 0x20),
                _mm256_permute2x128_si256(u2, u6, 0x20),
                _mm256_permute2x128_si256(u3, u7, 0x20),
                _mm256_permute2x128_si256(u0, u4, 0x31),
                _mm256_permute2x128_si256(u1, u5, 0x31),
                _mm256_permute2x128_si256(u2, u6, 0x31),
                _mm256_permute2x128_si256(u3, u7, 0x31),
            ]
        }};
    }

    // Rotations by 16 and 8 are byte shuffles (one µop) rather than two
    // shifts and an OR.
    macro_rules! rotl {
        ($x:expr, 16, $m16:expr, $m8:expr) => {
            _mm256_shuffle_epi8($x, $m16)
        };
        ($x:expr, 8, $m16:expr, $m8:expr) => {
            _mm256_shuffle_epi8($x, $m8)
        };
        ($x:expr, $n:literal, $m16:expr, $m8:expr) => {
            _mm256_or_si256(_mm256_slli_epi32($x, $n), _mm256_srli_epi32($x, 32 - $n))
        };
    }

    macro_rules! quarter {
        ($x:ident, $a:literal, $b:literal, $c:literal, $d:literal, $m16:ident, $m8:ident) => {
            $x[$a] = _mm256_add_epi32($x[$a], $x[$b]);
            $x[$d] = rotl!(_mm256_xor_si256($x[$d], $x[$a]), 16, $m16, $m8);
            $x[$c] = _mm256_add_epi32($x[$c], $x[$d]);
            $x[$b] = rotl!(_mm256_xor_si256($x[$b], $x[$c]), 12, $m16, $m8);
            $x[$a] = _mm256_add_epi32($x[$a], $x[$b]);
            $x[$d] = rotl!(_mm256_xor_si256($x[$d], $x[$a]), 8, $m16, $m8);
            $x[$c] = _mm256_add_epi32($x[$c], $x[$d]);
            $x[$b] = rotl!(_mm256_xor_si256($x[$b], $x[$c]), 7, $m16, $m8);
        };
    }

    /// # Safety
    /// The CPU must support AVX2, and `out.len() <= 8`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks_x8(input: &[[u32; 16]; 8], out: &mut [[u64; 8]]) {
        let mut lo = [_mm256_setzero_si256(); 8];
        let mut hi = [_mm256_setzero_si256(); 8];
        for i in 0..8 {
            let p = input[i].as_ptr() as *const __m256i;
            // SAFETY: input[i] is 16 u32s = two 32-byte vectors; loadu has no
            // alignment requirement.
            unsafe {
                lo[i] = _mm256_loadu_si256(p);
                hi[i] = _mm256_loadu_si256(p.add(1));
            }
        }
        let a = transpose8!(lo);
        let b = transpose8!(hi);
        let mut x = [
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5],
            b[6], b[7],
        ];
        // Opaque to LLVM on purpose: with known masks it re-lowers rot16 to
        // two shuffles (pshuflw + pshufhw) and distributes rot8's shuffle
        // over the preceding XOR, both extra µops (measured ~13% slower).
        let m16 = black_box(_mm256_set_epi8(
            13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2, 13, 12, 15, 14, 9, 8, 11, 10, 5,
            4, 7, 6, 1, 0, 3, 2,
        ));
        let m8 = black_box(_mm256_set_epi8(
            14, 13, 12, 15, 10, 9, 8, 11, 6, 5, 4, 7, 2, 1, 0, 3, 14, 13, 12, 15, 10, 9, 8, 11, 6,
            5, 4, 7, 2, 1, 0, 3,
        ));
        for _ in 0..10 {
            quarter!(x, 0, 4, 8, 12, m16, m8);
            quarter!(x, 1, 5, 9, 13, m16, m8);
            quarter!(x, 2, 6, 10, 14, m16, m8);
            quarter!(x, 3, 7, 11, 15, m16, m8);
            quarter!(x, 0, 5, 10, 15, m16, m8);
            quarter!(x, 1, 6, 11, 12, m16, m8);
            quarter!(x, 2, 7, 8, 13, m16, m8);
            quarter!(x, 3, 4, 9, 14, m16, m8);
        }
        // Back to one row per lane, then add the input rows: the feed-forward
        // in row form needs no second copy of the transposed state.
        let lo = transpose8!([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        let hi = transpose8!([x[8], x[9], x[10], x[11], x[12], x[13], x[14], x[15]]);
        for (i, o) in out.iter_mut().enumerate() {
            let p = input[i].as_ptr() as *const __m256i;
            let q = o.as_mut_ptr() as *mut __m256i;
            // SAFETY: i < out.len() <= 8, so input[i] exists; input[i] and
            // *o are 64 bytes each, two 32-byte vectors; loadu/storeu have no
            // alignment requirement. Lanes are little-endian words, as
            // block_words lays them out.
            unsafe {
                let l = _mm256_add_epi32(lo[i], _mm256_loadu_si256(p));
                let h = _mm256_add_epi32(hi[i], _mm256_loadu_si256(p.add(1)));
                _mm256_storeu_si256(q, l);
                _mm256_storeu_si256(q.add(1), h);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    fn key_0_to_31() -> [u8; 32] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn rfc8439_2_3_2_block() {
        let nonce = hex::decode("000000090000004a00000000").unwrap();
        let mut s = state(
            &key_words(&key_0_to_31()),
            nonce_words(&nonce.try_into().unwrap()),
        );
        s[12] = 1;
        let mut out = [0u8; 64];
        block(&s, &mut out);
        assert_eq!(
            hex::encode(out),
            "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
             d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
        );
    }

    #[test]
    fn rfc8439_2_4_2_encryption() {
        let nonce = hex::decode("000000000000004a00000000").unwrap();
        let s = state(
            &key_words(&key_0_to_31()),
            nonce_words(&nonce.try_into().unwrap()),
        );
        let mut text = SUNSCREEN.to_vec();
        xor_stream(&s, 1, &mut text);
        assert_eq!(
            hex::encode(&text),
            "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b\
             f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8\
             07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736\
             5af90bbf74a35be6b40b8eedf2785e42874d"
        );
    }

    pub(crate) const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could \
offer you only one tip for the future, sunscreen would be it.";

    #[test]
    fn x8_matches_scalar() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for round in 0..64 {
            let mut input = [[0u32; 16]; 8];
            for lane in input.iter_mut() {
                let mut key = [0u8; 32];
                rng.fill_bytes(&mut key);
                let n = [rng.next_u32(), rng.next_u32(), rng.next_u32()];
                *lane = state(&key_words(&key), n);
                // Counters near the 32-bit wrap too.
                lane[12] = if round % 4 == 0 {
                    u32::MAX - (rng.next_u32() % 4)
                } else {
                    rng.next_u32()
                };
            }
            // Every pass length, as generate's tail uses them.
            let n = round % 9;
            let mut got = [[0u64; 8]; 8];
            blocks_x8(&input, &mut got[..n]);
            for (i, g) in input.iter().zip(&got).take(n) {
                let mut want = [0u8; 64];
                block(i, &mut want);
                let want: Vec<u64> = want
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                assert_eq!(&g[..], &want[..]);
            }
            assert!(got[n..].iter().all(|g| *g == [0; 8]));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_is_used_where_available() {
        assert_eq!(have_x8(), std::is_x86_feature_detected!("avx2"));
    }
}
