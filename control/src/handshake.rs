//! WireGuard's handshake messages built on the generic Noise core: the
//! construction and identifier strings, the TAI64N timestamp as the
//! initiation's payload, the empty response payload, and the indices and
//! MAC fields around them.

use dataplane::messages::{Initiation, Response, ENCRYPTED_TIMESTAMP_LEN, MAC_LEN};
use zeroize::Zeroizing;

use crate::crypto::tai64n::TIMESTAMP_LEN;
use crate::noise::{
    self, InitiatorKeys, InitiatorState, NoiseError, Protocol, ResponderState, TransportKeys,
};

pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

const WIREGUARD: Protocol<'static> = Protocol {
    name: CONSTRUCTION,
    prologue: IDENTIFIER,
};

/// The static keys the local side brings to every handshake.
pub struct LocalStatic<'a> {
    pub private: &'a [u8; 32],
    pub public: &'a [u8; 32],
}

/// Builds an initiation (mac fields zero; the cookie jar stamps them).
pub fn create_initiation(
    local: &LocalStatic<'_>,
    peer_public: &[u8; 32],
    static_static: &[u8; 32],
    ephemeral_private: [u8; 32],
    sender_index: u32,
    timestamp: &[u8; TIMESTAMP_LEN],
) -> Result<(Initiation, InitiatorState), NoiseError> {
    let mut body = [0u8; noise::msg1_len(TIMESTAMP_LEN)];
    let keys = InitiatorKeys {
        static_private: local.private,
        static_public: local.public,
        remote_static: peer_public,
        static_static: Some(static_static),
    };
    let state = noise::write_message1(&WIREGUARD, &keys, ephemeral_private, timestamp, &mut body)?;
    let mut msg = Initiation {
        sender: sender_index,
        ephemeral: [0; 32],
        encrypted_static: [0; 48],
        encrypted_timestamp: [0; ENCRYPTED_TIMESTAMP_LEN],
        mac1: [0; MAC_LEN],
        mac2: [0; MAC_LEN],
    };
    msg.ephemeral.copy_from_slice(&body[..32]);
    msg.encrypted_static.copy_from_slice(&body[32..80]);
    msg.encrypted_timestamp.copy_from_slice(&body[80..]);
    Ok((msg, state))
}

/// A decrypted initiation, not yet checked against the peer's last timestamp.
pub struct ConsumedInitiation {
    pub peer_public: [u8; 32],
    pub timestamp: [u8; TIMESTAMP_LEN],
    pub sender_index: u32,
    pub state: ResponderState,
}

/// Decrypts an initiation. `static_static_for` maps the initiator's static key
/// to the precomputed DH with it, or `None` for an unknown key.
pub fn consume_initiation(
    local: &LocalStatic<'_>,
    msg: &Initiation,
    static_static_for: impl FnOnce(&[u8; 32]) -> Option<Zeroizing<[u8; 32]>>,
) -> Result<ConsumedInitiation, NoiseError> {
    let mut body = [0u8; noise::msg1_len(TIMESTAMP_LEN)];
    body[..32].copy_from_slice(&msg.ephemeral);
    body[32..80].copy_from_slice(&msg.encrypted_static);
    body[80..].copy_from_slice(&msg.encrypted_timestamp);
    let mut timestamp = [0u8; TIMESTAMP_LEN];
    let state = noise::read_message1(
        &WIREGUARD,
        local.private,
        local.public,
        &body,
        &mut timestamp,
        static_static_for,
    )?;
    Ok(ConsumedInitiation {
        peer_public: state.remote_static,
        timestamp,
        sender_index: msg.sender,
        state,
    })
}

/// Builds the response to a consumed initiation and derives the session:
/// returns (message with zero macs, keys, where the responder sends with
/// `responder_to_initiator`).
pub fn create_response(
    state: ResponderState,
    ephemeral_private: [u8; 32],
    psk: &[u8; 32],
    sender_index: u32,
    receiver_index: u32,
) -> Result<(Response, TransportKeys), NoiseError> {
    let mut body = [0u8; noise::msg2_len(0)];
    let (keys, _hash) = noise::write_message2(state, ephemeral_private, psk, &[], &mut body)?;
    let mut msg = Response {
        sender: sender_index,
        receiver: receiver_index,
        ephemeral: [0; 32],
        encrypted_nothing: [0; 16],
        mac1: [0; MAC_LEN],
        mac2: [0; MAC_LEN],
    };
    msg.ephemeral.copy_from_slice(&body[..32]);
    msg.encrypted_nothing.copy_from_slice(&body[32..]);
    Ok((msg, keys))
}

/// Consumes a response with the initiator state it answers.
pub fn consume_response(
    state: InitiatorState,
    local_private: &[u8; 32],
    psk: &[u8; 32],
    msg: &Response,
) -> Result<TransportKeys, NoiseError> {
    let mut body = [0u8; noise::msg2_len(0)];
    body[..32].copy_from_slice(&msg.ephemeral);
    body[32..].copy_from_slice(&msg.encrypted_nothing);
    let (keys, _hash) = noise::read_message2(state, local_private, psk, &body, &mut [])?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::x25519;

    #[test]
    fn initiation_and_response_roundtrip() {
        let (i_priv, r_priv) = ([11u8; 32], [22u8; 32]);
        let (i_pub, r_pub) = (x25519::public_key(&i_priv), x25519::public_key(&r_priv));
        let ss = x25519::dh(&i_priv, &r_pub).unwrap();
        let ts = crate::crypto::tai64n::tai64n(core::time::Duration::from_secs(1_700_000_000));
        let local_i = LocalStatic {
            private: &i_priv,
            public: &i_pub,
        };
        let (init, ist) =
            create_initiation(&local_i, &r_pub, &ss, [33; 32], 0xaabbccdd, &ts).unwrap();
        let local_r = LocalStatic {
            private: &r_priv,
            public: &r_pub,
        };
        let consumed = consume_initiation(&local_r, &init, |k| {
            assert_eq!(k, &i_pub);
            Some(x25519::dh(&r_priv, k).unwrap())
        })
        .unwrap();
        assert_eq!(consumed.timestamp, ts);
        assert_eq!(consumed.sender_index, 0xaabbccdd);
        let psk = [5u8; 32];
        let (resp, rkeys) = create_response(consumed.state, [44; 32], &psk, 7, 0xaabbccdd).unwrap();
        assert_eq!(resp.receiver, 0xaabbccdd);
        let ikeys = consume_response(ist.clone(), &i_priv, &psk, &resp).unwrap();
        assert_eq!(ikeys.initiator_to_responder, rkeys.initiator_to_responder);
        assert_eq!(ikeys.responder_to_initiator, rkeys.responder_to_initiator);
        assert!(
            consume_response(ist, &i_priv, &[0; 32], &resp).is_err(),
            "PSK mismatch"
        );
    }
}
