//! Sealing and opening transport data messages (type 4) with a session key.
//!
//! ChaCha20-Poly1305 from ring; the nonce is 32 zero bits followed by the
//! 64-bit little-endian counter, the AAD is empty, and plaintext is padded to
//! a multiple of 16 (capped at the MTU) exactly as the WireGuard paper says.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroizing;

use crate::messages::{
    padded_len, write_transport_header, Transport, TAG_LEN, TRANSPORT_HEADER_LEN,
};
use crate::offload::Piece;

/// A ChaCha20-Poly1305 session key for one direction of one session.
///
/// The raw bytes are kept (zeroized on drop) so the control plane can publish
/// them to the data plane's shared memory; ring's key cannot be exported.
pub struct SessionKey {
    raw: Zeroizing<[u8; 32]>,
    aead: LessSafeKey,
}

impl SessionKey {
    /// Takes the key by reference: a key passed by value would leave a
    /// copy in the caller's frame that nothing wipes.
    pub fn new(raw: &[u8; 32]) -> Self {
        let mut copy = Zeroizing::new([0u8; 32]);
        copy.copy_from_slice(raw);
        let raw = copy;
        let aead = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &raw[..])
                .expect("ChaCha20-Poly1305 takes any 32-byte key"),
        );
        SessionKey { raw, aead }
    }

    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// ring's expanded key, for the batch's long messages.
    pub(crate) fn ring(&self) -> &LessSafeKey {
        &self.aead
    }
}

impl core::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// The 96-bit AEAD nonce for a transport counter.
pub fn counter_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Bytes a sealed message of `plaintext_len` occupies on the wire.
pub fn sealed_len(plaintext_len: usize, mtu: usize) -> usize {
    TRANSPORT_HEADER_LEN + padded_len(plaintext_len, mtu) + TAG_LEN
}

/// Seals `packet` (an IP packet, or empty for a keepalive) into `out`,
/// replacing its contents with the complete transport message.
pub fn seal(
    key: &SessionKey,
    receiver: u32,
    counter: u64,
    packet: &[u8],
    mtu: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(sealed_len(packet.len(), mtu), 0);
    let n = seal_into(key, receiver, counter, packet, mtu, out);
    debug_assert_eq!(n, Some(out.len()));
}

/// Seals into a caller's buffer (an AF_XDP frame, after the headers the
/// caller writes in front): returns the message length, or `None` if `out`
/// is shorter than [`sealed_len`].
pub fn seal_into(
    key: &SessionKey,
    receiver: u32,
    counter: u64,
    packet: &[u8],
    mtu: usize,
    out: &mut [u8],
) -> Option<usize> {
    let total = write_unsealed(receiver, counter, Piece::whole(packet), mtu, out)?;
    let padded = total - TRANSPORT_HEADER_LEN - TAG_LEN;
    let (text, tag_out) = out[TRANSPORT_HEADER_LEN..total].split_at_mut(padded);
    let tag = key
        .aead
        .seal_in_place_separate_tag(counter_nonce(counter), Aad::empty(), text)
        .expect("plaintext within ChaCha20-Poly1305 limits");
    tag_out.copy_from_slice(tag.as_ref());
    Some(total)
}

/// Lays out a transport message still to be sealed: the header, `packet`
/// padded with zeros, and room for the tag. Returns the message length, or
/// `None` if `out` is shorter than [`sealed_len`]. Sealing the bytes after
/// the header in place (see [`crate::aead::AeadBatch::seal`]) completes it;
/// a batch lays out all its messages first and seals them together.
/// `packet` may lie in two parts (a segment's headers and its payload):
/// this is the one copy of its bytes on the way out.
pub fn write_unsealed(
    receiver: u32,
    counter: u64,
    packet: Piece<'_>,
    mtu: usize,
    out: &mut [u8],
) -> Option<usize> {
    let padded = padded_len(packet.len(), mtu);
    let total = TRANSPORT_HEADER_LEN + padded + TAG_LEN;
    let out = out.get_mut(..total)?;
    let (header, body) = out.split_at_mut(TRANSPORT_HEADER_LEN);
    let header: &mut [u8; TRANSPORT_HEADER_LEN] =
        header.try_into().expect("split at header length");
    write_transport_header(header, receiver, counter);
    packet.copy_to(body);
    body[packet.len()..].fill(0);
    Some(total)
}

/// The tag did not verify: wrong key, corrupted or forged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

/// Opens a parsed transport message into `out` (the padded plaintext; the
/// caller trims padding with the inner IP header's length).
pub fn open(key: &SessionKey, msg: &Transport<'_>, out: &mut Vec<u8>) -> Result<(), OpenError> {
    out.clear();
    out.extend_from_slice(msg.sealed);
    match key
        .aead
        .open_in_place(counter_nonce(msg.counter), Aad::empty(), out)
    {
        Ok(plain) => {
            let n = plain.len();
            out.truncate(n);
            Ok(())
        }
        Err(_) => {
            out.clear();
            Err(OpenError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;

    fn parse(b: &[u8]) -> Transport<'_> {
        match Message::parse(b).unwrap() {
            Message::Transport(t) => t,
            m => panic!("not transport: {m:?}"),
        }
    }

    #[test]
    fn seal_open_roundtrip_with_padding() {
        let k = SessionKey::new(&[5; 32]);
        let mut wire = Vec::new();
        seal(&k, 0x11223344, 7, b"hello", 1420, &mut wire);
        assert_eq!(wire.len(), 16 + 16 + 16);
        assert_eq!(&wire[..8], &[4, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        let t = parse(&wire);
        assert_eq!(t.counter, 7);
        let mut plain = Vec::new();
        open(&k, &t, &mut plain).unwrap();
        assert_eq!(&plain[..5], b"hello");
        assert!(plain[5..].iter().all(|&b| b == 0));
    }

    #[test]
    fn seal_into_a_dirty_buffer_matches_seal() {
        let k = SessionKey::new(&[3; 32]);
        let mut v = Vec::new();
        seal(&k, 5, 9, b"abc", 1420, &mut v);
        let mut buf = [0xffu8; 100];
        assert_eq!(seal_into(&k, 5, 9, b"abc", 1420, &mut buf), Some(v.len()));
        assert_eq!(&buf[..v.len()], &v[..]);
        assert_eq!(seal_into(&k, 5, 9, b"abc", 1420, &mut buf[..20]), None);
    }

    #[test]
    fn keepalive_is_header_plus_tag() {
        let k = SessionKey::new(&[1; 32]);
        let mut wire = Vec::new();
        seal(&k, 1, 0, &[], 1420, &mut wire);
        assert_eq!(wire.len(), 32);
        let mut plain = vec![1, 2, 3];
        open(&k, &parse(&wire), &mut plain).unwrap();
        assert!(plain.is_empty());
    }

    #[test]
    fn tampering_wrong_key_and_wrong_counter_fail() {
        let k = SessionKey::new(&[9; 32]);
        let mut wire = Vec::new();
        seal(&k, 1, 3, b"data", 1420, &mut wire);
        let mut plain = Vec::new();
        let mut bad = wire.clone();
        bad[20] ^= 1;
        assert_eq!(open(&k, &parse(&bad), &mut plain), Err(OpenError));
        assert_eq!(
            open(&SessionKey::new(&[8; 32]), &parse(&wire), &mut plain),
            Err(OpenError)
        );
        let mut t = parse(&wire);
        t.counter = 4;
        assert_eq!(open(&k, &t, &mut plain), Err(OpenError));
    }

    #[test]
    fn matches_ring_reference_nonce_layout() {
        // The same seal done by hand with ring: proves the nonce is 4 zero bytes + LE counter.
        let raw = [0x42u8; 32];
        let k = SessionKey::new(&raw);
        let mut wire = Vec::new();
        let counter = 0x0102_0304_0506_0708u64;
        seal(&k, 9, counter, &[0xaa; 32], 1420, &mut wire);
        let reference = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &raw).unwrap());
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        let mut buf = vec![0xaa; 32];
        reference
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut buf)
            .unwrap();
        assert_eq!(&wire[16..], &buf[..]);
    }
}
