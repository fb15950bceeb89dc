//! BLAKE2s in the four shapes WireGuard uses: HASH (32-byte digest), MAC
//! (keyed, 16 bytes), HMAC (RFC 2104 over BLAKE2s, 32 bytes) and KDF1..3
//! (HKDF-style chaining from the paper).

use blake2::digest::{FixedOutput, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use zeroize::Zeroizing;

pub const HASH_LEN: usize = 32;
const BLOCK_LEN: usize = 64;

/// HASH(input): unkeyed BLAKE2s-256 over the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// MAC(key, input): keyed BLAKE2s with a 16-byte output. The key is 16 or 32 bytes.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = Blake2sMac::<blake2::digest::consts::U16>::new_from_slice(key)
        .expect("BLAKE2s MAC keys up to 32 bytes are valid");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// HMAC(key, input) with BLAKE2s-256 as the hash (block size 64).
pub fn hmac(key: &[u8; HASH_LEN], parts: &[&[u8]]) -> Zeroizing<[u8; HASH_LEN]> {
    let mut ipad = Zeroizing::new([0x36u8; BLOCK_LEN]);
    let mut opad = Zeroizing::new([0x5cu8; BLOCK_LEN]);
    for i in 0..HASH_LEN {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    let mut inner = Blake2s256::new();
    Digest::update(&mut inner, &ipad[..]);
    for p in parts {
        Digest::update(&mut inner, p);
    }
    let inner_digest = Zeroizing::new(<[u8; HASH_LEN]>::from(inner.finalize()));
    let mut outer = Blake2s256::new();
    Digest::update(&mut outer, &opad[..]);
    Digest::update(&mut outer, &inner_digest[..]);
    Zeroizing::new(outer.finalize().into())
}

/// KDF_n(key, input) from the paper: τ0 = HMAC(key, input), τ1 = HMAC(τ0, 0x1),
/// τi = HMAC(τ0, τ(i-1) || i). Returns τ1..τn.
pub fn kdf<const N: usize>(key: &[u8; HASH_LEN], input: &[u8]) -> [Zeroizing<[u8; HASH_LEN]>; N] {
    let prk = hmac(key, &[input]);
    let mut out: [Zeroizing<[u8; HASH_LEN]>; N] = core::array::from_fn(|_| Zeroizing::new([0; 32]));
    for i in 0..N {
        let counter = [(i + 1) as u8];
        out[i] = if i == 0 {
            hmac(&prk, &[&counter])
        } else {
            let prev = *out[i - 1];
            hmac(&prk, &[&prev, &counter])
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7693 Appendix B: BLAKE2s-256("abc").
    #[test]
    fn rfc7693_abc() {
        assert_eq!(
            hex::encode(hash(&[b"abc"])),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
        );
    }

    // RFC 7693 Appendix E self-test: a digest of keyed and unkeyed BLAKE2s over
    // inputs of lengths 0,3,64,65,255,1024 and digest sizes 16,20,28,32.
    #[test]
    fn rfc7693_selftest() {
        use blake2::digest::consts::{U16, U20, U28, U32};
        use blake2::digest::{Update as _, VariableOutput};
        use blake2::Blake2sVar;
        fn selftest_seq(len: usize, seed: u32) -> Vec<u8> {
            let mut a: u32 = 0xDEAD4BADu32.wrapping_mul(seed);
            let mut b: u32 = 1;
            (0..len)
                .map(|_| {
                    let t = a.wrapping_add(b);
                    a = b;
                    b = t;
                    (t >> 24) as u8
                })
                .collect()
        }
        fn keyed(key: &[u8], input: &[u8], outlen: usize) -> Vec<u8> {
            macro_rules! run {
                ($n:ty) => {{
                    let mut m = Blake2sMac::<$n>::new_from_slice(key).unwrap();
                    Update::update(&mut m, input);
                    m.finalize_fixed().to_vec()
                }};
            }
            match outlen {
                16 => run!(U16),
                20 => run!(U20),
                28 => run!(U28),
                _ => run!(U32),
            }
        }
        let mut result = Blake2s256::new();
        for &outlen in &[16usize, 20, 28, 32] {
            for &inlen in &[0usize, 3, 64, 65, 255, 1024] {
                let input = selftest_seq(inlen, inlen as u32);
                let mut md = vec![0u8; outlen];
                let mut v = Blake2sVar::new(outlen).unwrap();
                v.update(&input);
                v.finalize_variable(&mut md).unwrap();
                Digest::update(&mut result, &md);
                let key = selftest_seq(outlen, outlen as u32);
                Digest::update(&mut result, keyed(&key, &input, outlen));
            }
        }
        assert_eq!(
            hex::encode(result.finalize()),
            "6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe"
        );
    }

    #[test]
    fn mac_is_keyed_blake2s_128() {
        // RFC 7693's keyed mode, 16-byte output, checked against the MAC of the
        // concatenated input (parts are a streaming detail).
        let key = [7u8; 32];
        let mut m = Blake2sMac::<blake2::digest::consts::U16>::new_from_slice(&key).unwrap();
        Update::update(&mut m, b"hello world");
        assert_eq!(
            mac(&key, &[b"hello ", b"world"]).to_vec(),
            m.finalize_fixed().to_vec()
        );
    }

    #[test]
    fn hmac_matches_rfc2104_definition_and_kdf_chains() {
        let key = [3u8; 32];
        let h = hmac(&key, &[b"a", b"bc"]);
        assert_eq!(*h, *hmac(&key, &[b"abc"]));
        let [t1, t2, t3] = kdf::<3>(&key, b"input");
        let prk = hmac(&key, &[b"input"]);
        assert_eq!(*t1, *hmac(&prk, &[&[1]]));
        assert_eq!(*t2, *hmac(&prk, &[&t1[..], &[2]]));
        assert_eq!(*t3, *hmac(&prk, &[&t2[..], &[3]]));
        let [k1] = kdf::<1>(&key, b"input");
        assert_eq!(*k1, *t1);
    }
}
