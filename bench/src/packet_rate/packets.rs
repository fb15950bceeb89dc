//! The inner packets and the messages that carry them.

use std::net::Ipv4Addr;

use dataplane::checksum::{add, fold};
use dataplane::messages::{write_transport_header, TAG_LEN, TRANSPORT_HEADER_LEN};
use dataplane::transport::{self, SessionKey};

/// MTU the messages are padded to (the data plane's default).
pub const MTU: usize = 1420;
/// Where every inner packet goes: an address nothing in the receiving
/// namespace owns, so the kernel drops it right after the TUN (no reply
/// traffic competes with the bench).
pub const INNER_DST: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);

/// The inner source address of generator peer `i` (its AllowedIPs entry).
pub fn inner_source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250 + 2) as u8)
}

/// An IPv4/UDP packet of exactly `size` bytes (at least 28) from `src` to
/// [`INNER_DST`], with a correct header checksum and no UDP checksum.
pub fn inner_packet(src: Ipv4Addr, size: usize) -> Vec<u8> {
    let size = size.max(28);
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&INNER_DST.octets());
    let sum = !fold(add(0, &p[..20]));
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&9u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    p
}

/// Length of the transport message that carries an inner packet of `size`.
pub fn message_len(size: usize) -> usize {
    transport::sealed_len(size.max(28), MTU)
}

/// `count` messages, back to back, each `message_len(inner.len())` bytes,
/// with counters from `first`. With a key they are sealed for real; without
/// one the packet travels in clear behind a zero tag, for the forwarder that
/// measures the I/O ceiling (same sizes, same path, no crypto).
pub fn build(key: Option<(&SessionKey, u32)>, first: u64, inner: &[u8], count: usize) -> Vec<u8> {
    let len = message_len(inner.len());
    let mut buf = vec![0u8; len * count];
    for (k, msg) in buf.chunks_exact_mut(len).enumerate() {
        let counter = first + k as u64;
        match key {
            Some((key, receiver)) => {
                let n = transport::seal_into(key, receiver, counter, inner, MTU, msg);
                debug_assert_eq!(n, Some(len));
            }
            None => {
                let (hdr, body) = msg.split_at_mut(TRANSPORT_HEADER_LEN);
                let hdr: &mut [u8; TRANSPORT_HEADER_LEN] =
                    hdr.try_into().expect("split at header length");
                write_transport_header(hdr, 0, counter);
                body[..inner.len()].copy_from_slice(inner);
                debug_assert!(body.len() >= inner.len() + TAG_LEN);
            }
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::messages::Message;

    #[test]
    fn inner_packet_is_valid_ipv4() {
        let p = inner_packet(inner_source(3), 64);
        assert_eq!(p.len(), 64);
        assert_eq!(dataplane::ip::packet_len(&p), Some(64));
        assert_eq!(
            dataplane::ip::source(&p),
            Some(std::net::IpAddr::V4(inner_source(3)))
        );
    }

    #[test]
    fn sealed_messages_open_with_their_counters() {
        let key = SessionKey::new(&[7; 32]);
        let inner = inner_packet(inner_source(0), 1420);
        let buf = build(Some((&key, 99)), 5, &inner, 3);
        let len = message_len(1420);
        assert_eq!(buf.len(), 3 * len);
        let mut out = Vec::new();
        for (k, msg) in buf.chunks_exact(len).enumerate() {
            let Ok(Message::Transport(t)) = Message::parse(msg) else {
                panic!("not a transport message")
            };
            assert_eq!((t.receiver, t.counter), (99, 5 + k as u64));
            transport::open(&key, &t, &mut out).unwrap();
            assert_eq!(out, inner);
        }
    }

    #[test]
    fn clear_messages_carry_the_packet_after_the_header() {
        let inner = inner_packet(inner_source(1), 64);
        let buf = build(None, 0, &inner, 2);
        let len = message_len(64);
        assert_eq!(&buf[len + 16..len + 16 + 64], &inner[..]);
        assert_eq!(buf[0], 4);
    }
}
