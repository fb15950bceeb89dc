//! Key types: 32-byte Curve25519 keys and preshared keys, base64 as in `wg(8)`.
//!
//! Secrets zeroize on drop and compare in constant time; public keys are
//! plain values (they identify peers and index tables).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64, or not 32 bytes once decoded.
    Malformed,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "key is not 32 bytes of base64 (44 characters ending in '=')"
        )
    }
}

impl std::error::Error for KeyError {}

/// Decodes a key as `wg` writes it: standard base64 of 32 bytes.
pub fn decode_base64_key(s: &str) -> Result<[u8; 32], KeyError> {
    let s = s.trim();
    if s.len() != 44 {
        return Err(KeyError::Malformed);
    }
    let mut out = [0u8; 32];
    // 44 base64 characters decode to at most 33 bytes; 32 fit exactly when the
    // padding is right, anything else is an error from the decoder.
    match STANDARD.decode_slice(s, &mut out) {
        Ok(32) => Ok(out),
        _ => {
            out.zeroize();
            Err(KeyError::Malformed)
        }
    }
}

/// Encodes a key as `wg` prints it.
pub fn encode_base64_key(k: &[u8; 32]) -> String {
    STANDARD.encode(k)
}

/// Decodes a key in hex, as the UAPI carries it.
pub fn decode_hex_key(s: &str) -> Result<[u8; 32], KeyError> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(KeyError::Malformed);
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16);
        let lo = (pair[1] as char).to_digit(16);
        match (hi, lo) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => {
                out.zeroize();
                return Err(KeyError::Malformed);
            }
        }
    }
    Ok(out)
}

/// Encodes a key in lowercase hex for the UAPI.
pub fn encode_hex_key(k: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in k {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// A Curve25519 public key: identifies a peer.
#[derive(Clone, Copy, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_base64_key(s).map(PublicKey)
    }
    pub fn to_base64(&self) -> String {
        encode_base64_key(&self.0)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Constant-time comparison, for places where a key is a secret-derived check.
    pub fn ct_eq(&self, other: &PublicKey) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl core::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A Curve25519 static private key. Never printed by Debug.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        PrivateKey(b)
    }
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_base64_key(s).map(PrivateKey)
    }
    pub fn to_base64(&self) -> String {
        encode_base64_key(&self.0)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The key with Curve25519's clamping applied, as the kernel and
    /// wireguard-go store (and report) it; the public key is unchanged.
    pub fn clamped(&self) -> Self {
        let mut b = self.0;
        b[0] &= 248;
        b[31] = (b[31] & 127) | 64;
        PrivateKey(b)
    }

    /// Generates a fresh key from the operating system's RNG.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        PrivateKey(b).clamped()
    }
    /// The public key `wg pubkey` would print for this private key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for PrivateKey {}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A 32-byte preshared key mixed into the handshake (all zero when unset).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        PresharedKey(b)
    }
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_base64_key(s).map(PresharedKey)
    }
    pub fn to_base64(&self) -> String {
        encode_base64_key(&self.0)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The all-zero key, which the protocol uses when no PSK is configured.
    pub fn zero() -> Self {
        PresharedKey([0; 32])
    }
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; 32]).into()
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for PresharedKey {}

impl core::fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip_and_errors() {
        let k = [0xabu8; 32];
        let s = encode_base64_key(&k);
        assert_eq!(s.len(), 44);
        assert_eq!(decode_base64_key(&s), Ok(k));
        assert!(decode_base64_key("short").is_err());
        assert!(decode_base64_key(&s.replace('=', "A")).is_err());
        assert!(decode_base64_key("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=").is_err());
    }

    #[test]
    fn hex_roundtrip_and_errors() {
        let k: [u8; 32] = core::array::from_fn(|i| i as u8 * 7);
        let s = encode_hex_key(&k);
        assert_eq!(decode_hex_key(&s), Ok(k));
        assert!(decode_hex_key(&s[..62]).is_err());
        assert!(decode_hex_key(&s.replace('0', "g")).is_err());
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        // `echo yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk= | wg pubkey`
        let sk = PrivateKey::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        assert_eq!(
            sk.public_key().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let sk = PrivateKey::from_bytes([1; 32]);
        assert!(!format!("{sk:?}").contains("AQE"));
    }
}
