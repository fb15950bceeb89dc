//! The primitives of the WireGuard paper (section 5.4), each in its own file:
//! BLAKE2s HASH/MAC/HMAC/KDF, X25519 DH, ChaCha20-Poly1305 and
//! XChaCha20-Poly1305 AEAD, TAI64N timestamps.

pub mod aead;
pub mod blake2s;
pub mod tai64n;
pub mod x25519;
