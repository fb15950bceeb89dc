//! Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, generic: the protocol name,
//! prologue, PSK and payloads are parameters, so the same code passes the
//! cacophony test vectors and, with WireGuard's construction string,
//! identifier, TAI64N payload and empty response payload, is the WireGuard
//! handshake (see `handshake.rs`).
//!
//!   <- s
//!   ...
//!   -> e, es, s, ss        (message 1: e || AEAD(s) || AEAD(payload))
//!   <- e, ee, se, psk      (message 2: e || AEAD(payload))

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::aead::{self, AeadError, TAG_LEN};
use crate::crypto::blake2s::{hash, kdf, HASH_LEN};
use crate::crypto::x25519::{self, LowOrderPoint};

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseError {
    /// Wrong length for this pattern and payload size.
    Length,
    /// A DH produced the all-zero value.
    LowOrderPoint,
    /// An AEAD tag failed: wrong keys, wrong PSK, or tampering.
    Decrypt,
    /// The initiator's static key is not one we know (message 1 only).
    UnknownPeer,
}

impl From<LowOrderPoint> for NoiseError {
    fn from(_: LowOrderPoint) -> Self {
        NoiseError::LowOrderPoint
    }
}
impl From<AeadError> for NoiseError {
    fn from(_: AeadError) -> Self {
        NoiseError::Decrypt
    }
}

/// The chaining key and handshake hash (Noise's SymmetricState). Every
/// AEAD key in this pattern is used exactly once, so the nonce is always 0.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricState {
    pub ck: [u8; HASH_LEN],
    pub h: [u8; HASH_LEN],
}

impl SymmetricState {
    /// InitializeSymmetric(protocol_name) then MixHash(prologue), with the
    /// responder's static key mixed in as IK's pre-message.
    pub fn new(protocol_name: &[u8], prologue: &[u8], responder_static: &[u8; 32]) -> Self {
        let ck = if protocol_name.len() <= HASH_LEN {
            let mut p = [0u8; HASH_LEN];
            p[..protocol_name.len()].copy_from_slice(protocol_name);
            p
        } else {
            hash(&[protocol_name])
        };
        let h = hash(&[&hash(&[&ck, prologue]), responder_static]);
        SymmetricState { ck, h }
    }

    pub fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    /// MixKey for a public ephemeral under a PSK pattern: ck = KDF1(ck, e).
    fn mix_chain(&mut self, input: &[u8]) {
        let [ck] = kdf::<1>(&self.ck, input);
        self.ck = *ck;
    }

    /// MixKey(dh): ck, k = KDF2(ck, dh).
    fn mix_key(&mut self, input: &[u8]) -> Zeroizing<[u8; 32]> {
        let [ck, k] = kdf::<2>(&self.ck, input);
        self.ck = *ck;
        k
    }

    /// MixKeyAndHash(psk): ck, τ, k = KDF3(ck, psk); h = HASH(h || τ).
    fn mix_key_and_hash(&mut self, psk: &[u8; 32]) -> Zeroizing<[u8; 32]> {
        let [ck, tau, k] = kdf::<3>(&self.ck, psk);
        self.ck = *ck;
        self.mix_hash(&tau[..]);
        k
    }

    fn encrypt_and_hash(&mut self, key: &[u8; 32], plain: &[u8], out: &mut [u8]) {
        aead::seal(key, 0, plain, &self.h, out);
        self.mix_hash(out);
    }

    fn decrypt_and_hash(
        &mut self,
        key: &[u8; 32],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), NoiseError> {
        aead::open(key, 0, sealed, &self.h, out)?;
        self.mix_hash(sealed);
        Ok(())
    }

    /// Split(): the two transport keys, initiator-to-responder first.
    pub fn split(&self) -> TransportKeys {
        let [k1, k2] = kdf::<2>(&self.ck, &[]);
        TransportKeys {
            initiator_to_responder: *k1,
            responder_to_initiator: *k2,
        }
    }
}

/// The keys a completed handshake yields.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TransportKeys {
    pub initiator_to_responder: [u8; 32],
    pub responder_to_initiator: [u8; 32],
}

/// An initiator between sending message 1 and receiving message 2.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct InitiatorState {
    pub sym: SymmetricState,
    ephemeral_private: [u8; 32],
}

/// A responder that has read message 1 and not yet written message 2.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ResponderState {
    pub sym: SymmetricState,
    pub remote_ephemeral: [u8; 32],
    pub remote_static: [u8; 32],
}

/// Length of message 1 around a payload of `payload_len` bytes.
pub const fn msg1_len(payload_len: usize) -> usize {
    32 + 32 + TAG_LEN + payload_len + TAG_LEN
}
/// Length of message 2 around a payload of `payload_len` bytes.
pub const fn msg2_len(payload_len: usize) -> usize {
    32 + payload_len + TAG_LEN
}

/// Static configuration one side brings to the handshake.
pub struct Protocol<'a> {
    pub name: &'a [u8],
    pub prologue: &'a [u8],
}

/// The initiator's half of the static-static DH, which the caller may cache
/// per peer (the kernel precomputes it); `None` computes it here.
pub struct InitiatorKeys<'a> {
    pub static_private: &'a [u8; 32],
    pub static_public: &'a [u8; 32],
    pub remote_static: &'a [u8; 32],
    pub static_static: Option<&'a [u8; 32]>,
}

/// -> e, es, s, ss, payload. Writes message 1 into `out`.
pub fn write_message1(
    proto: &Protocol<'_>,
    keys: &InitiatorKeys<'_>,
    ephemeral_private: [u8; 32],
    payload: &[u8],
    out: &mut [u8],
) -> Result<InitiatorState, NoiseError> {
    if out.len() != msg1_len(payload.len()) {
        return Err(NoiseError::Length);
    }
    let mut sym = SymmetricState::new(proto.name, proto.prologue, keys.remote_static);
    let e_pub = x25519::public_key(&ephemeral_private);
    out[..32].copy_from_slice(&e_pub);
    sym.mix_hash(&e_pub);
    sym.mix_chain(&e_pub);
    let k = sym.mix_key(&x25519::dh(&ephemeral_private, keys.remote_static)?[..]);
    let (enc_static, enc_payload) = out[32..].split_at_mut(32 + TAG_LEN);
    sym.encrypt_and_hash(&k, keys.static_public, enc_static);
    let ss = match keys.static_static {
        Some(ss) => Zeroizing::new(*ss),
        None => x25519::dh(keys.static_private, keys.remote_static)?,
    };
    let k = sym.mix_key(&ss[..]);
    sym.encrypt_and_hash(&k, payload, enc_payload);
    Ok(InitiatorState {
        sym,
        ephemeral_private,
    })
}

/// Reads message 1 as the responder. `static_static_for` is given the
/// initiator's decrypted static key and returns DH(s_r, s_i) if the key
/// belongs to a known peer, or `None` to refuse it.
pub fn read_message1(
    proto: &Protocol<'_>,
    static_private: &[u8; 32],
    static_public: &[u8; 32],
    msg: &[u8],
    payload_out: &mut [u8],
    static_static_for: impl FnOnce(&[u8; 32]) -> Option<Zeroizing<[u8; 32]>>,
) -> Result<ResponderState, NoiseError> {
    if msg.len() != msg1_len(payload_out.len()) {
        return Err(NoiseError::Length);
    }
    let mut sym = SymmetricState::new(proto.name, proto.prologue, static_public);
    let mut e_pub = [0u8; 32];
    e_pub.copy_from_slice(&msg[..32]);
    sym.mix_hash(&e_pub);
    sym.mix_chain(&e_pub);
    let k = sym.mix_key(&x25519::dh(static_private, &e_pub)?[..]);
    let (enc_static, enc_payload) = msg[32..].split_at(32 + TAG_LEN);
    let mut remote_static = Zeroizing::new([0u8; 32]);
    sym.decrypt_and_hash(&k, enc_static, &mut remote_static[..])?;
    let ss = static_static_for(&remote_static).ok_or(NoiseError::UnknownPeer)?;
    let k = sym.mix_key(&ss[..]);
    sym.decrypt_and_hash(&k, enc_payload, payload_out)?;
    Ok(ResponderState {
        sym: sym.clone(),
        remote_ephemeral: e_pub,
        remote_static: *remote_static,
    })
}

/// <- e, ee, se, psk, payload. Writes message 2 into `out` and returns the
/// transport keys and final handshake hash.
pub fn write_message2(
    mut state: ResponderState,
    ephemeral_private: [u8; 32],
    psk: &[u8; 32],
    payload: &[u8],
    out: &mut [u8],
) -> Result<(TransportKeys, [u8; 32]), NoiseError> {
    if out.len() != msg2_len(payload.len()) {
        return Err(NoiseError::Length);
    }
    let eph = Zeroizing::new(ephemeral_private);
    let sym = &mut state.sym;
    let e_pub = x25519::public_key(&eph);
    out[..32].copy_from_slice(&e_pub);
    sym.mix_hash(&e_pub);
    sym.mix_chain(&e_pub);
    sym.mix_chain(&x25519::dh(&eph, &state.remote_ephemeral)?[..]);
    sym.mix_chain(&x25519::dh(&eph, &state.remote_static)?[..]);
    let k = sym.mix_key_and_hash(psk);
    sym.encrypt_and_hash(&k, payload, &mut out[32..]);
    Ok((sym.split(), sym.h))
}

/// Reads message 2 as the initiator; returns the transport keys and the final
/// handshake hash.
pub fn read_message2(
    mut state: InitiatorState,
    static_private: &[u8; 32],
    psk: &[u8; 32],
    msg: &[u8],
    payload_out: &mut [u8],
) -> Result<(TransportKeys, [u8; 32]), NoiseError> {
    if msg.len() != msg2_len(payload_out.len()) {
        return Err(NoiseError::Length);
    }
    let mut e_pub = [0u8; 32];
    e_pub.copy_from_slice(&msg[..32]);
    let eph = state.ephemeral_private;
    let sym = &mut state.sym;
    sym.mix_hash(&e_pub);
    sym.mix_chain(&e_pub);
    sym.mix_chain(&x25519::dh(&eph, &e_pub)?[..]);
    sym.mix_chain(&x25519::dh(static_private, &e_pub)?[..]);
    let k = sym.mix_key_and_hash(psk);
    sym.decrypt_and_hash(&k, &msg[32..], payload_out)?;
    Ok((sym.split(), sym.h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::aead;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn h32(s: &str) -> [u8; 32] {
        h(s).try_into().unwrap()
    }

    /// The cacophony vector shipped in shared/vectors (copied into the crate
    /// so the test does not depend on the checkout's neighbours).
    #[test]
    fn cacophony_ikpsk2_vector() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/data/cacophony-Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s.json"
        ))
        .unwrap();
        let v = &v["vectors"][0];
        let s = |k: &str| v[k].as_str().unwrap();
        let proto = Protocol {
            name: s("protocol_name").as_bytes(),
            prologue: &h(s("init_prologue")),
        };
        let psk = h32(v["init_psks"][0].as_str().unwrap());
        let i_static = h32(s("init_static"));
        let i_pub = x25519::public_key(&i_static);
        let r_static = h32(s("resp_static"));
        let r_pub = x25519::public_key(&r_static);
        assert_eq!(h32(s("init_remote_static")), r_pub);
        let msgs = v["messages"].as_array().unwrap();
        let m = |i: usize, k: &str| h(msgs[i][k].as_str().unwrap());

        let p0 = m(0, "payload");
        let mut msg1 = vec![0u8; msg1_len(p0.len())];
        let keys = InitiatorKeys {
            static_private: &i_static,
            static_public: &i_pub,
            remote_static: &r_pub,
            static_static: None,
        };
        let ist = write_message1(&proto, &keys, h32(s("init_ephemeral")), &p0, &mut msg1).unwrap();
        assert_eq!(msg1, m(0, "ciphertext"));

        let mut got0 = vec![0u8; p0.len()];
        let rst = read_message1(&proto, &r_static, &r_pub, &msg1, &mut got0, |rs| {
            assert_eq!(rs, &i_pub);
            Some(x25519::dh(&r_static, rs).unwrap())
        })
        .unwrap();
        assert_eq!(got0, p0);

        let p1 = m(1, "payload");
        let mut msg2 = vec![0u8; msg2_len(p1.len())];
        let (rkeys, rh) =
            write_message2(rst, h32(s("resp_ephemeral")), &psk, &p1, &mut msg2).unwrap();
        assert_eq!(msg2, m(1, "ciphertext"));
        let mut got1 = vec![0u8; p1.len()];
        let (ikeys, ih) = read_message2(ist, &i_static, &psk, &msg2, &mut got1).unwrap();
        assert_eq!(got1, p1);
        assert_eq!(hex::encode(ih), s("handshake_hash"));
        assert_eq!(rh, ih);

        // Transport messages alternate directions, each direction counting from 0.
        for (i, msg) in msgs.iter().enumerate().skip(2) {
            let payload = h(msg["payload"].as_str().unwrap());
            let (key, counter) = if i % 2 == 0 {
                (&ikeys.initiator_to_responder, (i as u64 - 2) / 2)
            } else {
                (&rkeys.responder_to_initiator, (i as u64 - 3) / 2)
            };
            let mut out = vec![0u8; payload.len() + 16];
            aead::seal(key, counter, &payload, &[], &mut out);
            assert_eq!(
                hex::encode(&out),
                msg["ciphertext"].as_str().unwrap(),
                "message {i}"
            );
        }
        assert_eq!(ikeys.initiator_to_responder, rkeys.initiator_to_responder);
        assert_eq!(ikeys.responder_to_initiator, rkeys.responder_to_initiator);
    }

    #[test]
    fn wrong_psk_or_tampering_is_refused() {
        let proto = Protocol {
            name: b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s",
            prologue: b"p",
        };
        let i_s = [1u8; 32];
        let r_s = [2u8; 32];
        let (i_p, r_p) = (x25519::public_key(&i_s), x25519::public_key(&r_s));
        let keys = InitiatorKeys {
            static_private: &i_s,
            static_public: &i_p,
            remote_static: &r_p,
            static_static: None,
        };
        let mut msg1 = vec![0u8; msg1_len(0)];
        let ist = write_message1(&proto, &keys, [3; 32], &[], &mut msg1).unwrap();
        let mut bad = msg1.clone();
        bad[40] ^= 1;
        let ss = |rs: &[u8; 32]| Some(x25519::dh(&r_s, rs).unwrap());
        assert!(matches!(
            read_message1(&proto, &r_s, &r_p, &bad, &mut [], ss),
            Err(NoiseError::Decrypt)
        ));
        assert!(matches!(
            read_message1(&proto, &r_s, &r_p, &msg1, &mut [], |_| None),
            Err(NoiseError::UnknownPeer)
        ));
        let rst = read_message1(&proto, &r_s, &r_p, &msg1, &mut [], ss).unwrap();
        let mut msg2 = vec![0u8; msg2_len(0)];
        write_message2(rst, [4; 32], &[9; 32], &[], &mut msg2).unwrap();
        assert!(matches!(
            read_message2(ist, &i_s, &[8; 32], &msg2, &mut []),
            Err(NoiseError::Decrypt)
        ));
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let proto = Protocol {
            name: b"x",
            prologue: b"",
        };
        let r_s = [2u8; 32];
        let r_p = x25519::public_key(&r_s);
        let msg1 = vec![0u8; msg1_len(0)];
        assert!(matches!(
            read_message1(&proto, &r_s, &r_p, &msg1, &mut [], |_| None),
            Err(NoiseError::LowOrderPoint)
        ));
    }
}
