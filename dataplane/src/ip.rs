//! The few inner-IP-header fields the data plane reads on every packet.
//!
//! Decrypted payloads come from an authenticated peer but are still arbitrary
//! bytes (a peer may be buggy or hostile), and packets read from the TUN are
//! whatever the local stack produced; so every accessor here checks lengths
//! and returns `None` instead of indexing past the buffer.
//!
//! `version` only reports 4 or 6 when the buffer holds a whole fixed header of
//! that version, so the other accessors can rely on it for bounds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;

/// 4 or 6 when `p` starts with a complete fixed header of that IP version,
/// `None` for anything else (including keepalives, which are empty).
pub fn version(p: &[u8]) -> Option<u8> {
    match p.first()? >> 4 {
        4 if p.len() >= IPV4_HEADER_LEN => Some(4),
        6 if p.len() >= IPV6_HEADER_LEN => Some(6),
        _ => None,
    }
}

/// The source address of the packet in `p`.
pub fn source(p: &[u8]) -> Option<IpAddr> {
    match version(p)? {
        4 => v4_at(p, 12),
        _ => v6_at(p, 8),
    }
}

/// The destination address of the packet in `p`.
pub fn destination(p: &[u8]) -> Option<IpAddr> {
    match version(p)? {
        4 => v4_at(p, 16),
        _ => v6_at(p, 24),
    }
}

/// The packet's length as its header states it, so that padding after it
/// (WireGuard pads plaintext to 16 bytes) can be cut off. `None` when the
/// header is malformed or claims more bytes than `p` holds.
pub fn packet_len(p: &[u8]) -> Option<usize> {
    match version(p)? {
        4 => {
            let header_len = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            (header_len >= IPV4_HEADER_LEN && total >= header_len && total <= p.len())
                .then_some(total)
        }
        _ => {
            // A payload length of 0 would mean a jumbogram (RFC 2675); those
            // never fit a WireGuard message, and the kernel reads it the same
            // way, as a bare 40-byte header.
            let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([p[4], p[5]]));
            (total <= p.len()).then_some(total)
        }
    }
}

fn v4_at(p: &[u8], at: usize) -> Option<IpAddr> {
    let b: [u8; 4] = p.get(at..at + 4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(b)))
}

fn v6_at(p: &[u8], at: usize) -> Option<IpAddr> {
    let b: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4_packet(total_len: u16, buf_len: usize) -> Vec<u8> {
        let mut p = vec![0u8; buf_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total_len.to_be_bytes());
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[192, 168, 7, 9]);
        p
    }

    fn v6_packet(payload_len: u16, buf_len: usize) -> Vec<u8> {
        let mut p = vec![0u8; buf_len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p[6] = 58;
        p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"2001:db8::abcd".parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    #[test]
    fn ipv4_fields() {
        let p = v4_packet(28, 32);
        assert_eq!(version(&p), Some(4));
        assert_eq!(source(&p), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(destination(&p), Some("192.168.7.9".parse().unwrap()));
        assert_eq!(packet_len(&p), Some(28), "trailing padding is not counted");
    }

    #[test]
    fn ipv6_fields() {
        let p = v6_packet(8, 64);
        assert_eq!(version(&p), Some(6));
        assert_eq!(source(&p), Some("fd00::1".parse().unwrap()));
        assert_eq!(destination(&p), Some("2001:db8::abcd".parse().unwrap()));
        assert_eq!(packet_len(&p), Some(48));
    }

    #[test]
    fn ipv4_options_accepted() {
        let mut p = v4_packet(24, 24);
        p[0] = 0x46;
        assert_eq!(packet_len(&p), Some(24));
    }

    #[test]
    fn empty_and_short_buffers() {
        assert_eq!(version(&[]), None);
        assert_eq!(source(&[]), None);
        assert_eq!(packet_len(&[]), None);
        let p = v4_packet(20, 20);
        assert_eq!(version(&p[..19]), None);
        assert_eq!(destination(&p[..19]), None);
        let p = v6_packet(0, 40);
        assert_eq!(version(&p), Some(6));
        assert_eq!(packet_len(&p), Some(40));
        assert_eq!(version(&p[..39]), None);
        assert_eq!(source(&p[..39]), None);
    }

    #[test]
    fn other_versions_rejected() {
        let mut p = v4_packet(20, 40);
        for v in [0u8, 1, 5, 7, 15] {
            p[0] = v << 4 | 5;
            assert_eq!(version(&p), None, "version {v}");
            assert_eq!(source(&p), None);
            assert_eq!(packet_len(&p), None);
        }
    }

    #[test]
    fn malformed_ipv4_lengths() {
        let mut p = v4_packet(20, 40);
        p[0] = 0x44;
        assert_eq!(packet_len(&p), None, "IHL below 5");
        let mut p = v4_packet(20, 40);
        p[0] = 0x46;
        assert_eq!(packet_len(&p), None, "total length below header length");
        assert_eq!(
            packet_len(&v4_packet(41, 40)),
            None,
            "claims more than the buffer"
        );
        assert_eq!(packet_len(&v4_packet(40, 40)), Some(40));
        let mut p = v4_packet(60, 60);
        p[0] = 0x4f;
        assert_eq!(packet_len(&p), Some(60), "maximum IHL");
    }

    #[test]
    fn ipv6_claims_more_than_buffer() {
        assert_eq!(packet_len(&v6_packet(9, 48)), None);
        assert_eq!(packet_len(&v6_packet(u16::MAX, 100)), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics(p in prop::collection::vec(any::<u8>(), 0..80)) {
            let v = version(&p);
            let len = packet_len(&p);
            prop_assert_eq!(source(&p).is_some(), v.is_some());
            prop_assert_eq!(destination(&p).is_some(), v.is_some());
            if let Some(len) = len {
                prop_assert!(v.is_some());
                prop_assert!(len <= p.len());
            }
        }

        #[test]
        fn never_panics_on_plausible_headers(
            first in prop_oneof![0x40u8..0x50, 0x60u8..0x70],
            rest in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut p = vec![first];
            p.extend(rest);
            let _ = (version(&p), source(&p), destination(&p));
            if let Some(len) = packet_len(&p) {
                prop_assert!(len <= p.len());
                prop_assert!(len >= IPV4_HEADER_LEN);
            }
        }
    }
}
