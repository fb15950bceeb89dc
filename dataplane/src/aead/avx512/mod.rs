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

/// Encrypts `text` in place under the key words `key` and the 96-bit
/// nonce words `nonce`; returns the tag.
///
/// # Safety
/// [`available`] must have returned true.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
pub(crate) unsafe fn seal(key: &[u32; 8], nonce: [u32; 3], text: &mut [u8]) -> [u8; 16] {
    let mut s = state(key, nonce);
    let first = chacha::blocks16(&s, 0);
    let otk = chacha::otk(first[0]);
    decrypt_from(&s, &first, text);
    let tag = poly1305::aead_tag(&otk, text);
    wipe(&mut s, otk);
    tag
}

/// Checks `tag` over the ciphertext `text` and, if it matches, decrypts
/// `text` in place; a mismatch leaves `text` as it was.
///
/// # Safety
/// [`available`] must have returned true.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
pub(crate) unsafe fn open(key: &[u32; 8], nonce: [u32; 3], text: &mut [u8], tag: &[u8]) -> Choice {
    let mut s = state(key, nonce);
    let first = chacha::blocks16(&s, 0);
    let otk = chacha::otk(first[0]);
    let ok = super::tag_eq(&poly1305::aead_tag(&otk, text), tag);
    if bool::from(ok) {
        decrypt_from(&s, &first, text);
    }
    wipe(&mut s, otk);
    ok
}

/// XORs the keystream into `text`: blocks 1 .. 16 from `first` (blocks 0
/// .. 16, computed already for the one-time key), the rest from further
/// passes.
#[target_feature(enable = "avx512f,avx512bw")]
fn decrypt_from(s: &[u32; 16], first: &chacha::Blocks16, text: &mut [u8]) {
    chacha::xor_blocks(text, 0, first, 1);
    if text.len() > 64 * 15 {
        chacha::xor_stream(s, 16, &mut text[64 * 15..]);
    }
}

/// Wipes the copies of the key and the one-time key this call made in
/// memory (register copies are out of reach).
fn wipe(s: &mut [u32; 16], mut otk: [u64; 4]) {
    use zeroize::Zeroize;
    s.zeroize();
    otk.zeroize();
}

#[cfg(test)]
mod tests;
