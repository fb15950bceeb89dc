//! ChaCha20 (RFC 8439 §2.3) for one long message: sixteen consecutive
//! blocks per 512-bit pass, each vector lane one block counter. AVX-512
//! rotates a lane in one instruction (`vprold`) where AVX2 needs a shuffle
//! or two shifts and an OR, and a pass covers twice the blocks.

use std::arch::x86_64::*;

use zeroize::Zeroize;

/// The sixteen keystream blocks of one 512-bit pass, block-major: element
/// `b` is block `counter + b` as 64 bytes.
pub(super) type Blocks16 = [__m512i; 16];

macro_rules! quarter {
    ($x:ident, $a:literal, $b:literal, $c:literal, $d:literal, $add:ident, $xor:ident, $rol:ident) => {
        $x[$a] = $add($x[$a], $x[$b]);
        $x[$d] = $rol::<16>($xor($x[$d], $x[$a]));
        $x[$c] = $add($x[$c], $x[$d]);
        $x[$b] = $rol::<12>($xor($x[$b], $x[$c]));
        $x[$a] = $add($x[$a], $x[$b]);
        $x[$d] = $rol::<8>($xor($x[$d], $x[$a]));
        $x[$c] = $add($x[$c], $x[$d]);
        $x[$b] = $rol::<7>($xor($x[$b], $x[$c]));
    };
}

macro_rules! double_rounds {
    ($x:ident, $add:ident, $xor:ident, $rol:ident) => {
        for _ in 0..10 {
            quarter!($x, 0, 4, 8, 12, $add, $xor, $rol);
            quarter!($x, 1, 5, 9, 13, $add, $xor, $rol);
            quarter!($x, 2, 6, 10, 14, $add, $xor, $rol);
            quarter!($x, 3, 7, 11, 15, $add, $xor, $rol);
            quarter!($x, 0, 5, 10, 15, $add, $xor, $rol);
            quarter!($x, 1, 6, 11, 12, $add, $xor, $rol);
            quarter!($x, 2, 7, 8, 13, $add, $xor, $rol);
            quarter!($x, 3, 4, 9, 14, $add, $xor, $rol);
        }
    };
}

/// Blocks `counter..counter + 16` of `state` (its word 12 is ignored).
#[target_feature(enable = "avx512f")]
pub(super) fn blocks16(state: &[u32; 16], counter: u32) -> Blocks16 {
    let mut x: [__m512i; 16] = core::array::from_fn(|i| _mm512_set1_epi32(state[i] as i32));
    x[12] = _mm512_add_epi32(
        _mm512_set1_epi32(counter as i32),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    rounds(x)
}

/// Blocks `ca..ca + 8` of `a` in elements 0 .. 8 and `cb..cb + 8` of `b`
/// in 8 .. 16: two messages' short tails in one pass, which costs what a
/// pass for one of them would (the rounds are a chain of dependent steps;
/// the lanes are free).
#[target_feature(enable = "avx512f")]
pub(super) fn blocks8x2(a: &[u32; 16], ca: u32, b: &[u32; 16], cb: u32) -> Blocks16 {
    let mut x: [__m512i; 16] = core::array::from_fn(|i| {
        _mm512_mask_blend_epi32(
            0xff00,
            _mm512_set1_epi32(a[i] as i32),
            _mm512_set1_epi32(b[i] as i32),
        )
    });
    let (ca, cb) = (ca as i32, cb as i32);
    x[12] = _mm512_setr_epi32(
        ca,
        ca.wrapping_add(1),
        ca.wrapping_add(2),
        ca.wrapping_add(3),
        ca.wrapping_add(4),
        ca.wrapping_add(5),
        ca.wrapping_add(6),
        ca.wrapping_add(7),
        cb,
        cb.wrapping_add(1),
        cb.wrapping_add(2),
        cb.wrapping_add(3),
        cb.wrapping_add(4),
        cb.wrapping_add(5),
        cb.wrapping_add(6),
        cb.wrapping_add(7),
    );
    rounds(x)
}

/// The 20 rounds and the feed-forward of the rows `x` (one state word per
/// vector, a lane per block), as blocks.
#[inline]
#[target_feature(enable = "avx512f")]
fn rounds(mut x: [__m512i; 16]) -> Blocks16 {
    let input = x;
    double_rounds!(x, _mm512_add_epi32, _mm512_xor_si512, _mm512_rol_epi32);
    for (w, i) in x.iter_mut().zip(&input) {
        *w = _mm512_add_epi32(*w, *i);
    }
    transpose16(&x)
}

/// Rows (one state word, a lane per block) to blocks (one block's sixteen
/// words per vector): 32-bit then 64-bit interleaves within 128-bit lanes,
/// then two rounds of 128-bit lane shuffles.
#[target_feature(enable = "avx512f")]
fn transpose16(x: &[__m512i; 16]) -> Blocks16 {
    // t[2k] holds words 2k, 2k+1 of blocks 4L and 4L+1 in 128-bit lane L;
    // t[2k+1] the same for blocks 4L+2 and 4L+3.
    let mut t = [_mm512_setzero_si512(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_epi32(x[2 * k], x[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(x[2 * k], x[2 * k + 1]);
    }
    // u[g][j] holds words 4g..4g+3 of block 4L+j in lane L.
    let mut u = [[_mm512_setzero_si512(); 4]; 4];
    for (g, ug) in u.iter_mut().enumerate() {
        let t = &t[4 * g..4 * g + 4];
        ug[0] = _mm512_unpacklo_epi64(t[0], t[2]);
        ug[1] = _mm512_unpackhi_epi64(t[0], t[2]);
        ug[2] = _mm512_unpacklo_epi64(t[1], t[3]);
        ug[3] = _mm512_unpackhi_epi64(t[1], t[3]);
    }
    let mut out = [_mm512_setzero_si512(); 16];
    for j in 0..4 {
        // v0 = [u0.L0 u0.L1 u1.L0 u1.L1], v1 = [u0.L2 u0.L3 u1.L2 u1.L3],
        // v2, v3 the same for u2 and u3.
        let v0 = _mm512_shuffle_i32x4::<0x44>(u[0][j], u[1][j]);
        let v1 = _mm512_shuffle_i32x4::<0xee>(u[0][j], u[1][j]);
        let v2 = _mm512_shuffle_i32x4::<0x44>(u[2][j], u[3][j]);
        let v3 = _mm512_shuffle_i32x4::<0xee>(u[2][j], u[3][j]);
        out[j] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        out[4 + j] = _mm512_shuffle_i32x4::<0xdd>(v0, v2);
        out[8 + j] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        out[12 + j] = _mm512_shuffle_i32x4::<0xdd>(v1, v3);
    }
    out
}

/// XORs keystream blocks `ks[from..]` into `data`, block `from` at byte
/// `at`; stops at the end of `data`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn xor_blocks(data: &mut [u8], at: usize, ks: &Blocks16, from: usize) {
    let mut off = at;
    for k in &ks[from..] {
        if !xor_block(data, off, *k) {
            return;
        }
        off += 64;
    }
}

/// XORs keystream blocks stored as little-endian words (as the batch's
/// scratch holds them) into `data` from byte `at` on, up to its end.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn xor_stored(data: &mut [u8], at: usize, ks: &[[u64; 8]]) {
    let mut off = at;
    for k in ks {
        // SAFETY: k is 64 bytes; loadu needs no alignment.
        let k = unsafe { _mm512_loadu_si512(k.as_ptr() as *const __m512i) };
        if !xor_block(data, off, k) {
            return;
        }
        off += 64;
    }
}

/// Stores blocks as little-endian words, into as many of `out` as there
/// are (at most 16).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn store(ks: &[__m512i], out: &mut [[u64; 8]]) {
    for (k, o) in ks.iter().zip(out) {
        // SAFETY: o is 64 bytes; storeu needs no alignment.
        unsafe { _mm512_storeu_si512(o.as_mut_ptr() as *mut __m512i, *k) };
    }
}

/// XORs one keystream block into the up to 64 bytes of `data` from `off`;
/// false once `data` ends there or within the block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn xor_block(data: &mut [u8], off: usize, k: __m512i) -> bool {
    let end = data.len();
    let p = data.as_mut_ptr();
    if off + 64 <= end {
        // SAFETY: off + 64 <= data.len(), so the 64 bytes from p + off are
        // data's; loadu/storeu need no alignment.
        unsafe {
            let q = p.add(off) as *mut __m512i;
            _mm512_storeu_si512(q, _mm512_xor_si512(_mm512_loadu_si512(q), k));
        }
        return off + 64 < end;
    }
    if off < end {
        let mask: __mmask64 = (1u64 << (end - off)) - 1;
        // SAFETY: masked byte loads and stores touch only the bytes whose
        // mask bit is set (faults on the others are suppressed): the
        // end - off < 64 bytes of data from p + off.
        unsafe {
            let q = p.add(off) as *mut i8;
            let d = _mm512_maskz_loadu_epi8(mask, q);
            _mm512_mask_storeu_epi8(q, mask, _mm512_xor_si512(d, k));
        }
    }
    false
}

/// XORs the keystream of `state` from block `counter` on into `data`,
/// sixteen blocks a pass. (An eight-lane 256-bit pass for a short tail
/// measured no faster per pass than a sixteen-lane one on the 2-core EPYC
/// this was written on, whose vector units are 512 bits wide.)
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn xor_stream(state: &[u32; 16], mut counter: u32, data: &mut [u8]) {
    let mut at = 0;
    while at < data.len() {
        xor_blocks(data, at, &blocks16(state, counter), 0);
        at += 64 * 16;
        counter = counter.wrapping_add(16);
    }
}

/// The first 32 bytes of keystream block `b` as little-endian words: the
/// Poly1305 one-time key when `b` is block 0.
#[target_feature(enable = "avx512f")]
pub(super) fn otk(b: __m512i) -> [u64; 4] {
    let mut w = [0u64; 8];
    // SAFETY: w is 64 bytes; storeu needs no alignment.
    unsafe { _mm512_storeu_si512(w.as_mut_ptr() as *mut __m512i, b) };
    let k = [w[0], w[1], w[2], w[3]];
    w.zeroize();
    k
}

#[cfg(test)]
mod tests {
    use super::super::available;
    use super::*;
    use crate::aead::chacha::{block, key_words, state};
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    fn bytes(b: __m512i) -> [u8; 64] {
        let mut out = [0u8; 64];
        // SAFETY: out is 64 bytes; storeu needs no alignment; only called
        // where AVX-512F was detected.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, b) };
        out
    }

    #[test]
    fn passes_match_scalar_blocks() {
        if !available() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..32 {
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            let s = state(&key_words(&key), [rng.next_u32(), rng.next_u32(), 0]);
            // Counters that wrap within a pass too.
            let counter = if round % 4 == 0 {
                u32::MAX - 5
            } else {
                rng.next_u32()
            };
            // SAFETY: available() checked the features at run time.
            let wide = unsafe { blocks16(&s, counter) };
            for (b, got) in wide.iter().enumerate() {
                let mut one = s;
                one[12] = counter.wrapping_add(b as u32);
                let mut want = [0u8; 64];
                block(&one, &mut want);
                assert_eq!(bytes(*got), want, "block {b}");
            }
        }
    }

    #[test]
    fn paired_tails_match_scalar_blocks() {
        if !available() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for round in 0..16 {
            let mut ka = [0u8; 32];
            let mut kb = [0u8; 32];
            rng.fill_bytes(&mut ka);
            rng.fill_bytes(&mut kb);
            let a = state(&key_words(&ka), [rng.next_u32(), rng.next_u32(), 0]);
            let b = state(&key_words(&kb), [0, rng.next_u32(), rng.next_u32()]);
            let (ca, cb) = if round == 0 {
                (u32::MAX - 3, 16)
            } else {
                (rng.next_u32(), rng.next_u32())
            };
            // SAFETY: available() checked the features at run time.
            let got = unsafe { blocks8x2(&a, ca, &b, cb) };
            for (i, g) in got.iter().enumerate() {
                let (mut one, c) = if i < 8 { (a, ca) } else { (b, cb) };
                one[12] = c.wrapping_add(i as u32 % 8);
                let mut want = [0u8; 64];
                block(&one, &mut want);
                assert_eq!(bytes(*g), want, "lane {i}");
            }
        }
    }

    #[test]
    fn xor_stream_matches_scalar_at_every_length() {
        if !available() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let s = state(&key_words(&[9; 32]), [1, 2, 3]);
        for len in 0..=1600 {
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let mut want = data.clone();
            crate::aead::chacha::xor_stream(&s, 1, &mut want);
            // SAFETY: available() checked the features at run time.
            unsafe { xor_stream(&s, 1, &mut data) };
            assert_eq!(data, want, "{len} bytes");
        }
    }
}
