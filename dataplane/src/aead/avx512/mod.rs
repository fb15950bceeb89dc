//! ChaCha20-Poly1305 of one long transport message with AVX-512: ChaCha20
//! sixteen blocks a pass XORed straight into the message, Poly1305 eight blocks a step with IFMA. Used by the batch for
//! messages past `SHORT_MAX` on CPUs that have AVX-512F, VL, BW and IFMA;
//! ring's AVX2 code does them elsewhere.
//!
//! Open authenticates before it decrypts: the keystream of the first pass
//! (block 0 gives the Poly1305 key) is kept while the ciphertext is
//! hashed, and a forgery leaves the message untouched.

mod chacha;
mod poly1305;

use std::sync::OnceLock;

use subtle::Choice;
use zeroize::Zeroize;

use super::chacha::state;

/// Whether this CPU runs the AVX-512 path, and it is not turned off with
/// `WIRESPEED_AEAD=ring` (for A/B measurements); decided once.
pub(crate) fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let wanted = std::env::var("WIRESPEED_AEAD").map_or(true, |v| v != "ring");
        wanted
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512ifma")
    })
}

/// Longest text whose keystream past the first pass (blocks 16 ..) is at
/// most eight blocks: the tail that [`tails_x2`] computes two at a time.
pub(crate) const PAIRED_TAIL_MAX: usize = 64 * 23;

/// Text bytes the first pass covers (blocks 1 .. 16; block 0 is the key).
const FIRST_PASS_TEXT: usize = 64 * 15;

/// Whether a text of `len` bytes has a tail [`tails_x2`] computes.
pub(crate) fn has_paired_tail(len: usize) -> bool {
    len > FIRST_PASS_TEXT && len <= PAIRED_TAIL_MAX
}

/// Keystream blocks 16 .. 24 of two messages (key words and nonce words)
/// into `out[..8]` and `out[8..]`; of one message into `out[..8]` when `b`
/// is `None`.
///
/// # Safety
/// [`available`] must have returned true.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tails_x2(
    a: (&[u32; 8], [u32; 3]),
    b: Option<(&[u32; 8], [u32; 3])>,
    out: &mut [[u64; 8]],
) {
    let mut sa = state(a.0, a.1);
    let mut sb = b.map_or(sa, |b| state(b.0, b.1));
    let ks = chacha::blocks8x2(&sa, 16, &sb, 16);
    let n = if b.is_some() { 16 } else { 8 };
    chacha::store(&ks[..n], out);
    sa.zeroize();
    sb.zeroize();
}

/// Encrypts `text` in place under the key words `key` and the 96-bit
/// nonce words `nonce`; returns the tag. `tail` is the keystream from
/// block 16 on where [`tails_x2`] computed it.
///
/// # Safety
/// [`available`] must have returned true.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
pub(crate) unsafe fn seal(
    key: &[u32; 8],
    nonce: [u32; 3],
    text: &mut [u8],
    tail: Option<&[[u64; 8]]>,
) -> [u8; 16] {
    let mut s = state(key, nonce);
    let first = chacha::blocks16(&s, 0);
    let otk = chacha::otk(first[0]);
    decrypt_from(&s, &first, text, tail);
    let tag = poly1305::aead_tag(&otk, text);
    wipe(&mut s, otk);
    tag
}

/// Checks `tag` over the ciphertext `text` and, if it matches, decrypts
/// `text` in place; a mismatch leaves `text` as it was. `tail` as for
/// [`seal`].
///
/// # Safety
/// [`available`] must have returned true.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
pub(crate) unsafe fn open(
    key: &[u32; 8],
    nonce: [u32; 3],
    text: &mut [u8],
    tag: &[u8],
    tail: Option<&[[u64; 8]]>,
) -> Choice {
    let mut s = state(key, nonce);
    let first = chacha::blocks16(&s, 0);
    let otk = chacha::otk(first[0]);
    let ok = super::tag_eq(&poly1305::aead_tag(&otk, text), tag);
    if bool::from(ok) {
        decrypt_from(&s, &first, text, tail);
    }
    wipe(&mut s, otk);
    ok
}

/// XORs the keystream into `text`: blocks 1 .. 16 from `first` (blocks 0
/// .. 16, computed already for the one-time key), the rest from `tail` or
/// from further passes.
#[target_feature(enable = "avx512f,avx512bw")]
fn decrypt_from(
    s: &[u32; 16],
    first: &chacha::Blocks16,
    text: &mut [u8],
    tail: Option<&[[u64; 8]]>,
) {
    chacha::xor_blocks(text, 0, first, 1);
    if text.len() > FIRST_PASS_TEXT {
        match tail {
            Some(t) if has_paired_tail(text.len()) => chacha::xor_stored(text, FIRST_PASS_TEXT, t),
            _ => chacha::xor_stream(s, 16, &mut text[FIRST_PASS_TEXT..]),
        }
    }
}

/// Wipes the copies of the key and the one-time key this call made in
/// memory (register copies are out of reach).
fn wipe(s: &mut [u32; 16], mut otk: [u64; 4]) {
    s.zeroize();
    otk.zeroize();
}

#[cfg(test)]
mod tests;
