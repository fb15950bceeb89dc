//! Poly1305 (RFC 8439 §2.5) of one AEAD message with AVX-512 IFMA: the
//! accumulator in radix 2^44 (44 + 44 + 42 bits), eight lanes each taking
//! every eighth block and multiplying by r^8 per step, and the lanes
//! weighted r^8 .. r^1 on the last step, so that their sum is the usual
//! Horner value. `vpmadd52luq`/`vpmadd52huq` give the low and high 52 bits
//! of 52x52-bit products, which is why the limbs stay under 2^52.
//!
//! The construction (empty AAD): the ciphertext zero-padded to 16 bytes,
//! then a block of the two lengths; every block carries the 2^128 bit.
//! Whole groups of eight ciphertext blocks go through the lanes; the rest
//! (at most seven, the padded tail, the length block) through the scalar
//! Horner step, which also makes the powers of r.
//!
//! Constant time: no branch or index depends on the key or the message,
//! only on its length.

use std::arch::x86_64::*;

use zeroize::Zeroize;

const M44: u64 = (1 << 44) - 1;
const M42: u64 = (1 << 42) - 1;
/// The 2^128 bit of a block, in the top limb (bit 128 - 88).
const HIBIT: u64 = 1 << 40;

/// A value mod 2^130 - 5 in radix 2^44, partly reduced: limbs below 2^44,
/// 2^44 + 2^13 and 2^42.
type Limbs = [u64; 3];

/// `h r mod 2^130 - 5`, partly reduced. 2^132 ≡ 20, so the limbs that
/// overflow fold back times 20 (`s = 20 r`).
fn mul(h: &Limbs, r: &Limbs) -> Limbs {
    let w = |a: u64, b: u64| a as u128 * b as u128;
    let (s1, s2) = (r[1] * 20, r[2] * 20);
    let d0 = w(h[0], r[0]) + w(h[1], s2) + w(h[2], s1);
    let mut d1 = w(h[0], r[1]) + w(h[1], r[0]) + w(h[2], s2);
    let mut d2 = w(h[0], r[2]) + w(h[1], r[1]) + w(h[2], r[0]);
    d1 += d0 >> 44;
    d2 += d1 >> 44;
    let mut h0 = (d0 as u64 & M44) + (d2 >> 42) as u64 * 5;
    let h1 = (d1 as u64 & M44) + (h0 >> 44);
    h0 &= M44;
    [h0, h1, d2 as u64 & M42]
}

/// A 16-byte block with the 2^128 bit, as limbs.
fn limbs(lo: u64, hi: u64) -> Limbs {
    [
        lo & M44,
        ((lo >> 44) | (hi << 20)) & M44,
        (hi >> 24) | HIBIT,
    ]
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// One Horner step: `h = (h + m) r`.
fn absorb(h: &mut Limbs, m: &Limbs, r: &Limbs) {
    let sum = [h[0] + m[0], h[1] + m[1], h[2] + m[2]];
    *h = mul(&sum, r);
}

/// The AEAD tag of ciphertext `ct` (empty AAD) under the one-time key
/// `otk` (little-endian words: r, then s).
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn aead_tag(otk: &[u64; 4], ct: &[u8]) -> [u8; 16] {
    let r = limbs(
        otk[0] & 0x0fff_fffc_0fff_ffff,
        otk[1] & 0x0fff_fffc_0fff_fffc,
    );
    // limbs() set the 2^128 bit, which is no part of r.
    let r = [r[0], r[1], r[2] & !HIBIT];
    let groups = ct.len() / 128;
    let mut h = if groups > 0 {
        lanes(&r, &ct[..groups * 128])
    } else {
        [0; 3]
    };
    let rest = &ct[groups * 128..];
    let mut chunks = rest.chunks_exact(16);
    for c in &mut chunks {
        absorb(&mut h, &limbs(le64(c), le64(&c[8..])), &r);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut b = [0u8; 16];
        b[..tail.len()].copy_from_slice(tail);
        absorb(&mut h, &limbs(le64(&b), le64(&b[8..])), &r);
        b.zeroize();
    }
    absorb(&mut h, &limbs(0, ct.len() as u64), &r);
    let tag = finish(&h, otk[2], otk[3]);
    h.zeroize();
    tag
}

/// Fully reduces `h` and adds `s`, mod 2^128.
fn finish(h: &Limbs, s0: u64, s1: u64) -> [u8; 16] {
    let [mut h0, mut h1, mut h2] = *h;
    let mut c;
    for _ in 0..2 {
        c = h1 >> 44;
        h1 &= M44;
        h2 += c;
        c = h2 >> 42;
        h2 &= M42;
        h0 += c * 5;
        c = h0 >> 44;
        h0 &= M44;
        h1 += c;
    }
    // h - p = h + 5 - 2^130: take it where it does not go negative.
    let mut g0 = h0 + 5;
    c = g0 >> 44;
    g0 &= M44;
    let mut g1 = h1 + c;
    c = g1 >> 44;
    g1 &= M44;
    let g2 = (h2 + c).wrapping_sub(1 << 42);
    let keep_g = (g2 >> 63).wrapping_sub(1);
    h0 = (h0 & !keep_g) | (g0 & keep_g);
    h1 = (h1 & !keep_g) | (g1 & keep_g);
    h2 = (h2 & !keep_g) | (g2 & M42 & keep_g);
    let v = (h0 as u128 | (h1 as u128) << 44 | (h2 as u128) << 88)
        .wrapping_add(s0 as u128 | (s1 as u128) << 64);
    v.to_le_bytes()
}

/// The Horner value `Σ m_i r^(n - i + 1)` of the `n` blocks of `ct` (a
/// multiple of 128 bytes, not empty), partly reduced.
#[target_feature(enable = "avx512f,avx512ifma")]
fn lanes(r: &Limbs, ct: &[u8]) -> Limbs {
    let (r8, last) = powers(r);
    let m44 = _mm512_set1_epi64(M44 as i64);
    let hibit = _mm512_set1_epi64(HIBIT as i64);
    let even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    let odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    let mut h = [_mm512_setzero_si512(); 3];
    let groups = ct.chunks_exact(128);
    let n = groups.len();
    for (i, g) in groups.enumerate() {
        // SAFETY: g is 128 bytes; loadu needs no alignment.
        let (a, b) = unsafe {
            (
                _mm512_loadu_si512(g.as_ptr() as *const __m512i),
                _mm512_loadu_si512(g.as_ptr().add(64) as *const __m512i),
            )
        };
        let lo = _mm512_permutex2var_epi64(a, even, b);
        let hi = _mm512_permutex2var_epi64(a, odd, b);
        let m0 = _mm512_and_si512(lo, m44);
        let m1 = _mm512_and_si512(
            _mm512_or_si512(_mm512_srli_epi64::<44>(lo), _mm512_slli_epi64::<20>(hi)),
            m44,
        );
        let m2 = _mm512_or_si512(_mm512_srli_epi64::<24>(hi), hibit);
        h[0] = _mm512_add_epi64(h[0], m0);
        h[1] = _mm512_add_epi64(h[1], m1);
        h[2] = _mm512_add_epi64(h[2], m2);
        h = if i + 1 == n { last.mul(&h) } else { r8.mul(&h) };
    }
    let mut out = [0u64; 3];
    for (o, v) in out.iter_mut().zip(h) {
        *o = _mm512_reduce_add_epi64(v) as u64;
    }
    // Eight lanes below 2^44 (2^42 on top) sum below 2^47: carry back into
    // the partly reduced form `mul` takes.
    let c = out[0] >> 44;
    out[0] &= M44;
    out[1] += c;
    let c = out[1] >> 44;
    out[1] &= M44;
    out[2] += c;
    let c = out[2] >> 42;
    out[2] &= M42;
    out[0] += c * 5;
    out
}

/// The multipliers of [`lanes`]: r^8 in every lane, and r^8 .. r^1 in
/// lanes 0 .. 7 for the last step. Computed in the lanes, three
/// multiplications deep: [r, r^2] pairs, then [r .. r^4], then [r .. r^8],
/// each from the previous vector times a blend of 1 and its top power.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn powers(r: &Limbs) -> (Lanes, Lanes) {
    let one = [
        _mm512_set1_epi64(1),
        _mm512_setzero_si512(),
        _mm512_setzero_si512(),
    ];
    let splat = |v: &[__m512i; 3], lane: i64| {
        let idx = _mm512_set1_epi64(lane);
        v.map(|l| _mm512_permutexvar_epi64(idx, l))
    };
    let blend = |mask: __mmask8, v: &[__m512i; 3]| {
        Lanes::from_limbs(core::array::from_fn(|k| {
            _mm512_mask_blend_epi64(mask, one[k], v[k])
        }))
    };
    let rv = r.map(|l| _mm512_set1_epi64(l as i64));
    // [r, r^2, r, r^2, ...]
    let a = blend(0xaa, &rv).mul(&rv);
    // [r, r^2, r^3, r^4, r, r^2, r^3, r^4]
    let b = blend(0xcc, &splat(&a, 1)).mul(&a);
    // [r, r^2, ..., r^8]
    let c = blend(0xf0, &splat(&b, 3)).mul(&b);
    let reverse = _mm512_setr_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    (
        Lanes::from_limbs(splat(&c, 7)),
        Lanes::from_limbs(c.map(|l| _mm512_permutexvar_epi64(reverse, l))),
    )
}

/// A multiplier per lane: r's limbs and 20 r1, 20 r2.
struct Lanes {
    r: [__m512i; 3],
    s1: __m512i,
    s2: __m512i,
}

impl Lanes {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn from_limbs(r: [__m512i; 3]) -> Self {
        let twenty = _mm512_set1_epi64(20);
        Lanes {
            r,
            s1: mul_small(r[1], twenty),
            s2: mul_small(r[2], twenty),
        }
    }

    /// `h r` per lane, partly reduced (as [`mul`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul(&self, h: &[__m512i; 3]) -> [__m512i; 3] {
        let z = _mm512_setzero_si512();
        let lo = |a, b| _mm512_madd52lo_epu64(z, a, b);
        let hi = |a, b| _mm512_madd52hi_epu64(z, a, b);
        let add3 = |a, b, c| _mm512_add_epi64(_mm512_add_epi64(a, b), c);
        let [r0, r1, r2] = self.r;
        let (s1, s2) = (self.s1, self.s2);
        // Limb k of the product is dlo_k + dhi_k 2^52 = dlo_k + (dhi_k << 8) 2^44.
        let dlo0 = add3(lo(h[0], r0), lo(h[1], s2), lo(h[2], s1));
        let dhi0 = add3(hi(h[0], r0), hi(h[1], s2), hi(h[2], s1));
        let dlo1 = add3(lo(h[0], r1), lo(h[1], r0), lo(h[2], s2));
        let dhi1 = add3(hi(h[0], r1), hi(h[1], r0), hi(h[2], s2));
        let dlo2 = add3(lo(h[0], r2), lo(h[1], r1), lo(h[2], r0));
        let dhi2 = add3(hi(h[0], r2), hi(h[1], r1), hi(h[2], r0));
        let m44 = _mm512_set1_epi64(M44 as i64);
        let m42 = _mm512_set1_epi64(M42 as i64);
        // The carries out of each limb are taken in parallel rather than
        // one after another, which shortens the chain from one step to
        // the next; the limbs end a little above 44/44/42 bits (by under
        // 2^11), well inside the 52 bits the next products take.
        let t0 = dlo0;
        let t1 = _mm512_add_epi64(dlo1, _mm512_slli_epi64::<8>(dhi0));
        let t2 = _mm512_add_epi64(dlo2, _mm512_slli_epi64::<8>(dhi1));
        // Past bit 130 (t2 from bit 42, dhi2 from bit 52 - 10 below it)
        // folds back times 5.
        let c = _mm512_add_epi64(_mm512_srli_epi64::<42>(t2), _mm512_slli_epi64::<10>(dhi2));
        let h0 = add3(_mm512_and_si512(t0, m44), c, _mm512_slli_epi64::<2>(c));
        let h1 = add3(
            _mm512_and_si512(t1, m44),
            _mm512_srli_epi64::<44>(t0),
            _mm512_srli_epi64::<44>(h0),
        );
        let h2 = _mm512_add_epi64(_mm512_and_si512(t2, m42), _mm512_srli_epi64::<44>(t1));
        [_mm512_and_si512(h0, m44), h1, h2]
    }
}

/// 64-bit lane multiply by a small constant without AVX-512DQ's
/// `vpmullq`: the operands are below 2^44 and 20, so the 32x32 products
/// of `vpmuludq` on the low and high halves suffice.
#[inline]
#[target_feature(enable = "avx512f")]
fn mul_small(a: __m512i, small: __m512i) -> __m512i {
    let lo = _mm512_mul_epu32(a, small);
    let hi = _mm512_mul_epu32(_mm512_srli_epi64::<32>(a), small);
    _mm512_add_epi64(lo, _mm512_slli_epi64::<32>(hi))
}

#[cfg(test)]
mod tests {
    use super::super::available;
    use super::*;
    use crate::aead::poly1305::Poly1305;
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    #[test]
    fn matches_scalar_poly1305_at_every_length() {
        if !available() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for len in 0..=1600 {
            let mut key = [0u64; 4];
            key.iter_mut().for_each(|w| *w = rng.next_u64());
            let mut ct = vec![0u8; len];
            rng.fill_bytes(&mut ct);
            // SAFETY: available() checked the features at run time.
            let got = unsafe { aead_tag(&key, &ct) };
            assert_eq!(got, Poly1305::aead_tag(&key, &[], &ct), "{len} bytes");
        }
    }

    #[test]
    fn extreme_limbs_reduce_correctly() {
        if !available() {
            return;
        }
        // All-ones keys and blocks push every limb to its bound, and
        // values just above p must wrap.
        for key in [[u64::MAX; 4], [0; 4], [u64::MAX, u64::MAX, 0, 0]] {
            for fill in [0xffu8, 0x00, 0xfb] {
                for len in [128, 256, 1024, 1408, 1420, 2048] {
                    let ct = vec![fill; len];
                    // SAFETY: available() checked the features at run time.
                    let got = unsafe { aead_tag(&key, &ct) };
                    assert_eq!(got, Poly1305::aead_tag(&key, &[], &ct), "{len} x {fill:#x}");
                }
            }
        }
    }
}
