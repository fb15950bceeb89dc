//! Curve25519 Diffie-Hellman (x25519-dalek, since ring's X25519 has no
//! static keys), with the all-zero result refused as the paper requires.

use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The DH result was all zeros: the peer sent a low-order point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowOrderPoint;

/// DH(private, public) -> 32 bytes, refusing non-contributory results.
pub fn dh(private: &[u8; 32], public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, LowOrderPoint> {
    let secret = StaticSecret::from(*private);
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    let bytes = Zeroizing::new(shared.to_bytes());
    if bool::from(bytes.ct_eq(&[0u8; 32])) {
        return Err(LowOrderPoint);
    }
    Ok(bytes)
}

/// DH_PUBKEY(private).
pub fn public_key(private: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // RFC 7748 section 6.1.
    #[test]
    fn rfc7748_dh() {
        let a = h32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let b = h32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        assert_eq!(
            hex::encode(public_key(&a)),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(
            hex::encode(public_key(&b)),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
        );
        let k = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
        assert_eq!(hex::encode(*dh(&a, &public_key(&b)).unwrap()), k);
        assert_eq!(hex::encode(*dh(&b, &public_key(&a)).unwrap()), k);
    }

    // RFC 7748 section 5.2 single-scalar vector.
    #[test]
    fn rfc7748_scalarmult() {
        let k = h32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = h32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        assert_eq!(
            hex::encode(*dh(&k, &u).unwrap()),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
        );
    }

    #[test]
    fn zero_point_refused() {
        assert_eq!(dh(&[1; 32], &[0; 32]), Err(LowOrderPoint));
    }
}
