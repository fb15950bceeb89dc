//! AEAD(key, counter, plain, auth) with ChaCha20-Poly1305 (ring) for handshake
//! fields, and XAEAD with XChaCha20-Poly1305 (RustCrypto; off the hot path)
//! for cookie replies.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

pub const TAG_LEN: usize = 16;
/// ChaCha20-Poly1305 (RFC 8439) nonce length.
pub const NONCE_LEN: usize = 12;

/// Authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

fn ring_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte key"))
}

/// WireGuard's AEAD nonce: 32 zero bits followed by the little-endian
/// 64-bit counter.
fn wg_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Seals `plain` into `out` (plain.len() + 16 bytes) under WireGuard's
/// counter nonce (4 zero bytes || LE64(counter)).
pub fn seal(key: &[u8; 32], counter: u64, plain: &[u8], aad: &[u8], out: &mut [u8]) {
    seal_with_nonce(key, &wg_nonce(counter), plain, aad, out);
}

/// Opens `sealed` (ciphertext || tag) into `out` (sealed.len() - 16 bytes)
/// under WireGuard's counter nonce (4 zero bytes || LE64(counter)).
pub fn open(
    key: &[u8; 32],
    counter: u64,
    sealed: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), AeadError> {
    open_with_nonce(key, &wg_nonce(counter), sealed, aad, out)
}

/// RFC 8439 ChaCha20-Poly1305 seal with an arbitrary 96-bit nonce: writes
/// ciphertext || tag into `out` (plain.len() + 16 bytes).
pub fn seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    plain: &[u8],
    aad: &[u8],
    out: &mut [u8],
) {
    assert_eq!(out.len(), plain.len() + TAG_LEN, "AEAD output buffer size");
    let (text, tag_out) = out.split_at_mut(plain.len());
    text.copy_from_slice(plain);
    let tag = ring_key(key)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), text)
        .expect("handshake fields are far below AEAD limits");
    tag_out.copy_from_slice(tag.as_ref());
}

/// RFC 8439 ChaCha20-Poly1305 open with an arbitrary 96-bit nonce: `sealed`
/// is ciphertext || tag, `out` must be sealed.len() - 16 bytes.
pub fn open_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    sealed: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), AeadError> {
    if sealed.len() < TAG_LEN || out.len() != sealed.len() - TAG_LEN {
        return Err(AeadError);
    }
    let mut buf = zeroize::Zeroizing::new(sealed.to_vec());
    let plain = ring_key(key)
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| AeadError)?;
    out.copy_from_slice(plain);
    Ok(())
}

/// XAEAD seal with a 24-byte nonce.
pub fn xseal(key: &[u8; 32], nonce: &[u8; 24], plain: &[u8], aad: &[u8], out: &mut [u8]) {
    assert_eq!(out.len(), plain.len() + TAG_LEN, "XAEAD output buffer size");
    let (text, tag_out) = out.split_at_mut(plain.len());
    text.copy_from_slice(plain);
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, text)
        .expect("cookie is far below AEAD limits");
    tag_out.copy_from_slice(&tag);
}

/// XAEAD open with a 24-byte nonce.
pub fn xopen(
    key: &[u8; 32],
    nonce: &[u8; 24],
    sealed: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), AeadError> {
    if sealed.len() < TAG_LEN || out.len() != sealed.len() - TAG_LEN {
        return Err(AeadError);
    }
    let (text, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    out.copy_from_slice(text);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, out, tag.into())
        .map_err(|_| {
            out.iter_mut().for_each(|b| *b = 0);
            AeadError
        })
}
