//! Wire layout of the four WireGuard messages, the single definition both
//! processes use. Parsing checks type, length and the reserved bytes and
//! never panics; encoding writes exactly the bytes the peers expect.

/// Message type bytes (first byte of every message, followed by three zero bytes).
pub const MSG_INITIATION: u8 = 1;
pub const MSG_RESPONSE: u8 = 2;
pub const MSG_COOKIE_REPLY: u8 = 3;
pub const MSG_TRANSPORT: u8 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header of a transport message: type, reserved, receiver index, counter.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Smallest transport message: a keepalive (header + tag over an empty payload).
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Plaintext is padded to a multiple of this before sealing.
pub const PADDING_MULTIPLE: usize = 16;
/// Length of mac1 and mac2.
pub const MAC_LEN: usize = 16;
/// Length of the XChaCha20 nonce in a cookie reply.
pub const COOKIE_NONCE_LEN: usize = 24;
/// Length of a cookie (a BLAKE2s-128 MAC).
pub const COOKIE_LEN: usize = 16;
/// Encrypted static key (32) + tag.
pub const ENCRYPTED_STATIC_LEN: usize = 32 + TAG_LEN;
/// Encrypted TAI64N timestamp (12) + tag.
pub const ENCRYPTED_TIMESTAMP_LEN: usize = 12 + TAG_LEN;
/// Encrypted cookie (16) + tag.
pub const ENCRYPTED_COOKIE_LEN: usize = COOKIE_LEN + TAG_LEN;

/// Why a datagram is not a well-formed WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    UnknownType(u8),
    ReservedNotZero,
    BadLength { msg_type: u8, len: usize },
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty datagram"),
            ParseError::UnknownType(t) => write!(f, "unknown message type {t}"),
            ParseError::ReservedNotZero => write!(f, "reserved bytes are not zero"),
            ParseError::BadLength { msg_type, len } => {
                write!(f, "message type {msg_type} with invalid length {len}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Handshake initiation, message type 1.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Initiation {
    pub sender: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_static: [u8; ENCRYPTED_STATIC_LEN],
    pub encrypted_timestamp: [u8; ENCRYPTED_TIMESTAMP_LEN],
    pub mac1: [u8; MAC_LEN],
    pub mac2: [u8; MAC_LEN],
}

/// Handshake response, message type 2.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Response {
    pub sender: u32,
    pub receiver: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_nothing: [u8; TAG_LEN],
    pub mac1: [u8; MAC_LEN],
    pub mac2: [u8; MAC_LEN],
}

/// Cookie reply, message type 3.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CookieReply {
    pub receiver: u32,
    pub nonce: [u8; COOKIE_NONCE_LEN],
    pub encrypted_cookie: [u8; ENCRYPTED_COOKIE_LEN],
}

/// Transport data message, type 4, borrowed from the datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Transport<'a> {
    pub receiver: u32,
    pub counter: u64,
    /// Sealed payload including the 16-byte tag.
    pub sealed: &'a [u8],
}

/// Any WireGuard message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message<'a> {
    Initiation(Initiation),
    Response(Response),
    CookieReply(CookieReply),
    Transport(Transport<'a>),
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn header(msg_type: u8) -> [u8; 4] {
    [msg_type, 0, 0, 0]
}

/// Offsets of mac1 and mac2 for a handshake message of `len` bytes: mac1
/// covers everything before it, mac2 everything before it including mac1.
pub const fn mac1_offset(len: usize) -> usize {
    len - 2 * MAC_LEN
}
pub const fn mac2_offset(len: usize) -> usize {
    len - MAC_LEN
}

/// Reads the message type and checks the reserved bytes, without looking further.
pub fn message_type(b: &[u8]) -> Result<u8, ParseError> {
    if b.is_empty() {
        return Err(ParseError::Empty);
    }
    let t = b[0];
    if !(MSG_INITIATION..=MSG_TRANSPORT).contains(&t) {
        return Err(ParseError::UnknownType(t));
    }
    if b.len() < 4 {
        return Err(ParseError::BadLength {
            msg_type: t,
            len: b.len(),
        });
    }
    if b[1..4] != [0, 0, 0] {
        return Err(ParseError::ReservedNotZero);
    }
    Ok(t)
}

impl<'a> Message<'a> {
    /// Parses one datagram. Total: any byte string yields a message or an error.
    pub fn parse(b: &'a [u8]) -> Result<Self, ParseError> {
        let t = message_type(b)?;
        let bad = ParseError::BadLength {
            msg_type: t,
            len: b.len(),
        };
        match t {
            MSG_INITIATION if b.len() == INITIATION_LEN => Ok(Message::Initiation(Initiation {
                sender: u32_at(b, 4),
                ephemeral: arr(b, 8),
                encrypted_static: arr(b, 40),
                encrypted_timestamp: arr(b, 88),
                mac1: arr(b, 116),
                mac2: arr(b, 132),
            })),
            MSG_RESPONSE if b.len() == RESPONSE_LEN => Ok(Message::Response(Response {
                sender: u32_at(b, 4),
                receiver: u32_at(b, 8),
                ephemeral: arr(b, 12),
                encrypted_nothing: arr(b, 44),
                mac1: arr(b, 60),
                mac2: arr(b, 76),
            })),
            MSG_COOKIE_REPLY if b.len() == COOKIE_REPLY_LEN => {
                Ok(Message::CookieReply(CookieReply {
                    receiver: u32_at(b, 4),
                    nonce: arr(b, 8),
                    encrypted_cookie: arr(b, 32),
                }))
            }
            MSG_TRANSPORT if b.len() >= TRANSPORT_MIN_LEN => Ok(Message::Transport(Transport {
                receiver: u32_at(b, 4),
                counter: u64::from_le_bytes(arr(b, 8)),
                sealed: &b[TRANSPORT_HEADER_LEN..],
            })),
            _ => Err(bad),
        }
    }
}

impl Initiation {
    pub fn to_bytes(&self) -> [u8; INITIATION_LEN] {
        let mut b = [0u8; INITIATION_LEN];
        b[0..4].copy_from_slice(&header(MSG_INITIATION));
        b[4..8].copy_from_slice(&self.sender.to_le_bytes());
        b[8..40].copy_from_slice(&self.ephemeral);
        b[40..88].copy_from_slice(&self.encrypted_static);
        b[88..116].copy_from_slice(&self.encrypted_timestamp);
        b[116..132].copy_from_slice(&self.mac1);
        b[132..148].copy_from_slice(&self.mac2);
        b
    }
}

impl Response {
    pub fn to_bytes(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[0..4].copy_from_slice(&header(MSG_RESPONSE));
        b[4..8].copy_from_slice(&self.sender.to_le_bytes());
        b[8..12].copy_from_slice(&self.receiver.to_le_bytes());
        b[12..44].copy_from_slice(&self.ephemeral);
        b[44..60].copy_from_slice(&self.encrypted_nothing);
        b[60..76].copy_from_slice(&self.mac1);
        b[76..92].copy_from_slice(&self.mac2);
        b
    }
}

impl CookieReply {
    pub fn to_bytes(&self) -> [u8; COOKIE_REPLY_LEN] {
        let mut b = [0u8; COOKIE_REPLY_LEN];
        b[0..4].copy_from_slice(&header(MSG_COOKIE_REPLY));
        b[4..8].copy_from_slice(&self.receiver.to_le_bytes());
        b[8..32].copy_from_slice(&self.nonce);
        b[32..64].copy_from_slice(&self.encrypted_cookie);
        b
    }
}

/// Writes a transport header into the first 16 bytes of `out`.
pub fn write_transport_header(out: &mut [u8; TRANSPORT_HEADER_LEN], receiver: u32, counter: u64) {
    out[0..4].copy_from_slice(&header(MSG_TRANSPORT));
    out[4..8].copy_from_slice(&receiver.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
}

/// Length of `len` plaintext bytes once padded, capped at the MTU so padding
/// never makes a packet exceed it (as the kernel does).
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let padded = len.div_ceil(PADDING_MULTIPLE) * PADDING_MULTIPLE;
    if len > mtu {
        len
    } else {
        padded.min(mtu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_initiation() -> Initiation {
        Initiation {
            sender: 0x0403_0201,
            ephemeral: [7; 32],
            encrypted_static: [8; ENCRYPTED_STATIC_LEN],
            encrypted_timestamp: [9; ENCRYPTED_TIMESTAMP_LEN],
            mac1: [10; MAC_LEN],
            mac2: [11; MAC_LEN],
        }
    }

    #[test]
    fn initiation_layout_is_exact() {
        let b = sample_initiation().to_bytes();
        assert_eq!(&b[..8], &[1, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(b[8], 7);
        assert_eq!(b[40], 8);
        assert_eq!(b[88], 9);
        assert_eq!(b[mac1_offset(INITIATION_LEN)], 10);
        assert_eq!(b[mac2_offset(INITIATION_LEN)], 11);
        assert_eq!(
            Message::parse(&b),
            Ok(Message::Initiation(sample_initiation()))
        );
    }

    #[test]
    fn response_and_cookie_roundtrip() {
        let r = Response {
            sender: 1,
            receiver: 2,
            ephemeral: [3; 32],
            encrypted_nothing: [4; 16],
            mac1: [5; 16],
            mac2: [6; 16],
        };
        let b = r.to_bytes();
        assert_eq!(b[60], 5);
        assert_eq!(Message::parse(&b), Ok(Message::Response(r)));
        let c = CookieReply {
            receiver: 9,
            nonce: [1; 24],
            encrypted_cookie: [2; 32],
        };
        assert_eq!(Message::parse(&c.to_bytes()), Ok(Message::CookieReply(c)));
    }

    #[test]
    fn transport_parse() {
        let mut b = vec![0u8; 48];
        let mut h = [0u8; 16];
        write_transport_header(&mut h, 77, 1 << 40);
        b[..16].copy_from_slice(&h);
        match Message::parse(&b).unwrap() {
            Message::Transport(t) => {
                assert_eq!(t.receiver, 77);
                assert_eq!(t.counter, 1 << 40);
                assert_eq!(t.sealed.len(), 32);
            }
            m => panic!("wrong message {m:?}"),
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Message::parse(&[]), Err(ParseError::Empty));
        assert_eq!(
            Message::parse(&[5, 0, 0, 0]),
            Err(ParseError::UnknownType(5))
        );
        assert_eq!(Message::parse(&[0]), Err(ParseError::UnknownType(0)));
        assert!(matches!(
            Message::parse(&[1, 0]),
            Err(ParseError::BadLength { .. })
        ));
        let mut b = sample_initiation().to_bytes();
        b[2] = 1;
        assert_eq!(Message::parse(&b), Err(ParseError::ReservedNotZero));
        assert!(Message::parse(&b[..147]).is_err());
        assert!(Message::parse(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut long = sample_initiation().to_bytes().to_vec();
        long.push(0);
        assert!(Message::parse(&long).is_err());
    }

    use proptest::prelude::{Just, Strategy};

    proptest::proptest! {
        #[test]
        fn parse_is_total_and_reencodes(
            data in proptest::prop_oneof![Just(148usize), Just(92), Just(64), 0..200usize]
                .prop_flat_map(|n| proptest::collection::vec(proptest::num::u8::ANY, n)),
            ty in 0u8..6,
        ) {
            let mut data = data;
            if !data.is_empty() {
                data[0] = ty;
            }
            if data.len() >= 4 && ty % 2 == 0 {
                data[1..4].fill(0);
            }
            if let Ok(m) = Message::parse(&data) {
                let again = match m {
                    Message::Initiation(i) => i.to_bytes().to_vec(),
                    Message::Response(r) => r.to_bytes().to_vec(),
                    Message::CookieReply(c) => c.to_bytes().to_vec(),
                    Message::Transport(t) => {
                        let mut h = [0u8; TRANSPORT_HEADER_LEN];
                        write_transport_header(&mut h, t.receiver, t.counter);
                        [&h[..], t.sealed].concat()
                    }
                };
                proptest::prop_assert_eq!(again, data);
            }
        }
    }

    #[test]
    fn padding() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(16, 1420), 16);
        assert_eq!(padded_len(17, 1420), 32);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1500, 1420), 1500);
    }
}
