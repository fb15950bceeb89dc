//! Whole Ethernet frames carrying UDP, as AF_XDP receives and sends them.
//!
//! Pure functions: no I/O, no allocation, no panics on any input.
//!
//! # Receiving
//!
//! [`parse_udp_frame`] accepts Ethernet II with at most one 802.1Q (0x8100)
//! or 802.1ad (0x88a8) tag, then IPv4 (any IHL ≥ 5, options skipped, not a
//! fragment) or IPv6 (next header UDP directly, no extension headers), then
//! UDP. Every length field is checked against the buffer; bytes after the IP
//! packet (Ethernet padding of short frames) are ignored. Checksums are *not*
//! verified by the parser: the Ethernet FCS covers the wire, and WireGuard's
//! AEAD covers the payload. [`verify_checksums`] is there for a caller that
//! wants the kernel's behaviour anyway (it costs one pass over the payload).
//!
//! # Sending, zero copy
//!
//! The headers in front of a UDP payload have a fixed length for a given
//! address family and tagging, [`header_len`]. The data plane seals a
//! WireGuard message straight into the frame buffer at that offset, then
//! calls [`write_udp_frame`], which fills in Ethernet, IP and UDP headers in
//! front of it (computing the UDP checksum over the payload in place) and
//! returns the frame's total length:
//!
//! ```
//! use dataplane::frame::{header_len, parse_udp_frame, write_udp_frame, FrameHeader};
//!
//! let hdr = FrameHeader {
//!     src_mac: [2, 0, 0, 0, 0, 1],
//!     dst_mac: [2, 0, 0, 0, 0, 2],
//!     vlan: None,
//!     src: "10.0.0.1:51820".parse().unwrap(),
//!     dst: "10.0.0.2:51820".parse().unwrap(),
//! };
//! let mut umem_frame = [0u8; 2048];
//! let off = hdr.header_len();
//! assert_eq!(off, header_len(false, false));
//! // ... seal the message into umem_frame[off..] ...
//! umem_frame[off..off + 4].copy_from_slice(b"\x04\0\0\0");
//! let len = write_udp_frame(&mut umem_frame, &hdr, 4).unwrap();
//! let parsed = parse_udp_frame(&umem_frame[..len]).unwrap();
//! assert_eq!(parsed.payload, b"\x04\0\0\0");
//! ```
//!
//! Header choices: IPv4 packets carry TTL 64, DF set and an identification
//! of 0 (RFC 6864 §4.1: the ID of an atomic datagram, DF set and not a
//! fragment, has no meaning; Linux, too, sends 0 for DF-set datagrams from
//! an unconnected socket, which a WireGuard socket is); TOS 0. IPv6 packets
//! carry hop limit 64, traffic class 0 and flow label 0. The UDP checksum
//! is computed (a receiving stack on veth drops frames whose checksum is
//! wrong), except where the caller asks for none over IPv4
//! ([`UdpChecksum::NoneOverIpv4`]): the data plane does for its sealed
//! messages, which Poly1305 already protects byte for byte.
//!
//! Frames shorter than the Ethernet minimum (60 bytes without FCS) are not
//! padded here; NICs and veth pad or accept them.

use crate::checksum::{add, fold};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Length of an untagged Ethernet II header.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an IPv4 header without options, as written here.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// TPID of an 802.1Q VLAN tag (the one [`write_udp_frame`] writes).
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// TPID of an 802.1ad service tag (accepted when parsing).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

const IPPROTO_UDP: u8 = 17;
const TTL: u8 = 64;

/// The largest UDP payload that fits an IPv4 packet (total length is 16 bits).
pub const MAX_PAYLOAD_V4: usize = 65535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;
/// The largest UDP payload without an IPv6 jumbogram (payload length is 16 bits).
pub const MAX_PAYLOAD_V6: usize = 65535 - UDP_HEADER_LEN;

/// A UDP datagram found in an Ethernet frame by [`parse_udp_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    /// Source IP address and UDP port. For IPv6, flow info and scope id are 0.
    pub src: SocketAddr,
    /// Destination IP address and UDP port.
    pub dst: SocketAddr,
    /// The UDP payload, exactly as long as the UDP length field says.
    pub payload: &'a [u8],
    /// The VLAN ID (the low 12 bits of the TCI) when the frame had a tag.
    pub vlan: Option<u16>,
    /// Ethernet source address.
    pub src_mac: [u8; 6],
    /// Ethernet destination address.
    pub dst_mac: [u8; 6],
}

/// Everything [`write_udp_frame`] needs to address a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Ethernet source address (the sending interface's).
    pub src_mac: [u8; 6],
    /// Ethernet destination address (the next hop's).
    pub dst_mac: [u8; 6],
    /// A VLAN ID (0..=4095) to tag the frame with (802.1Q, priority 0).
    pub vlan: Option<u16>,
    /// Source address and port; the same family as `dst`.
    pub src: SocketAddr,
    /// Destination address and port; the same family as `src`.
    pub dst: SocketAddr,
}

impl FrameHeader {
    /// Whether the frame will be IPv6 (judged by `dst`).
    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The offset of the UDP payload in the frame: [`header_len`] for this
    /// header's family and tagging.
    pub fn header_len(&self) -> usize {
        header_len(self.is_ipv6(), self.vlan.is_some())
    }
}

/// The length of the Ethernet (+ tag) + IP + UDP headers that
/// [`write_udp_frame`] writes: the offset at which the payload goes.
/// 42 (IPv4), 46 (IPv4, tagged), 62 (IPv6), 66 (IPv6, tagged); always even.
pub const fn header_len(ipv6: bool, vlan: bool) -> usize {
    ETH_HEADER_LEN
        + if vlan { VLAN_TAG_LEN } else { 0 }
        + if ipv6 {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        }
        + UDP_HEADER_LEN
}

/// Where the parts of a parsed frame lie.
struct Layout {
    vlan: Option<u16>,
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the UDP header.
    l4: usize,
    /// The UDP length field (header included), checked against the buffer.
    udp_len: usize,
    ipv6: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn layout(frame: &[u8]) -> Option<Layout> {
    let mut ethertype = be16(frame, 12)?;
    let mut l3 = ETH_HEADER_LEN;
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        vlan = Some(be16(frame, 14)? & 0x0fff);
        ethertype = be16(frame, 16)?;
        l3 += VLAN_TAG_LEN;
    }
    let ip = frame.get(l3..)?;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let first = *ip.first()?;
            let ihl = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || ihl < IPV4_HEADER_LEN || ip.len() < ihl {
                return None;
            }
            let total = usize::from(be16(ip, 2)?);
            if total < ihl + UDP_HEADER_LEN || total > ip.len() {
                return None;
            }
            // More-fragments flag or a nonzero fragment offset.
            if be16(ip, 6)? & 0x3fff != 0 || ip[9] != IPPROTO_UDP {
                return None;
            }
            let udp_len = usize::from(be16(ip, ihl + 4)?);
            if udp_len < UDP_HEADER_LEN || udp_len > total - ihl {
                return None;
            }
            Some(Layout {
                vlan,
                l3,
                l4: l3 + ihl,
                udp_len,
                ipv6: false,
            })
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < IPV6_HEADER_LEN || ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return None;
            }
            let payload_len = usize::from(be16(ip, 4)?);
            if payload_len < UDP_HEADER_LEN || payload_len > ip.len() - IPV6_HEADER_LEN {
                return None;
            }
            let udp_len = usize::from(be16(ip, IPV6_HEADER_LEN + 4)?);
            if udp_len < UDP_HEADER_LEN || udp_len > payload_len {
                return None;
            }
            Some(Layout {
                vlan,
                l3,
                l4: l3 + IPV6_HEADER_LEN,
                udp_len,
                ipv6: true,
            })
        }
        _ => None,
    }
}

/// Parses an Ethernet frame carrying a UDP datagram (see the module docs for
/// what is accepted). `None` for anything else or anything malformed; never
/// panics. Checksums are not verified ([`verify_checksums`] does that).
pub fn parse_udp_frame(frame: &[u8]) -> Option<UdpFrame<'_>> {
    let l = layout(frame)?;
    let ip = frame.get(l.l3..)?;
    let udp = frame.get(l.l4..l.l4.checked_add(l.udp_len)?)?;
    let sport = be16(udp, 0)?;
    let dport = be16(udp, 2)?;
    let (src, dst) = if l.ipv6 {
        let s = Ipv6Addr::from(array::<16>(ip, 8)?);
        let d = Ipv6Addr::from(array::<16>(ip, 24)?);
        (
            SocketAddr::V6(SocketAddrV6::new(s, sport, 0, 0)),
            SocketAddr::V6(SocketAddrV6::new(d, dport, 0, 0)),
        )
    } else {
        let s = Ipv4Addr::from(array::<4>(ip, 12)?);
        let d = Ipv4Addr::from(array::<4>(ip, 16)?);
        (
            SocketAddr::V4(SocketAddrV4::new(s, sport)),
            SocketAddr::V4(SocketAddrV4::new(d, dport)),
        )
    };
    Some(UdpFrame {
        src,
        dst,
        payload: udp.get(UDP_HEADER_LEN..)?,
        vlan: l.vlan,
        dst_mac: array(frame, 0)?,
        src_mac: array(frame, 6)?,
    })
}

/// Whether `frame` parses ([`parse_udp_frame`]) and its checksums are right:
/// the IPv4 header checksum, and the UDP checksum (which IPv6 requires and
/// IPv4 may leave 0, meaning none). Costs one pass over the payload.
pub fn verify_checksums(frame: &[u8]) -> bool {
    let Some(l) = layout(frame) else {
        return false;
    };
    let Some(udp) = frame.get(l.l4..l.l4 + l.udp_len) else {
        return false;
    };
    let Some(ip) = frame.get(l.l3..l.l4) else {
        return false;
    };
    let mut sum = 0u64;
    if l.ipv6 {
        if udp[6..8] == [0, 0] {
            return false;
        }
        sum = add(sum, &ip[8..40]);
    } else {
        if fold(add(0, ip)) != 0xffff {
            return false;
        }
        if udp[6..8] == [0, 0] {
            return true;
        }
        sum = add(sum, &ip[12..20]);
    }
    sum += u64::from(IPPROTO_UDP) + l.udp_len as u64;
    fold(add(sum, udp)) == 0xffff
}

/// Writes the Ethernet, IP and UDP headers for `hdr` into `buf[..header_len]`
/// in front of a `payload_len`-byte payload that is already (or will later
/// be, but then the UDP checksum is wrong) at `buf[header_len..]`, where
/// `header_len` is [`header_len`]`(ipv6, vlan.is_some())`. The UDP checksum
/// covers the payload as it is in `buf` now. Returns the frame's total
/// length, `header_len + payload_len`.
///
/// `None`, writing nothing, when `src` and `dst` are of different families
/// (an IPv4-mapped IPv6 address counts as IPv6: convert it first), the VLAN
/// ID is above 4095, the payload is longer than the IP length fields allow
/// ([`MAX_PAYLOAD_V4`], [`MAX_PAYLOAD_V6`]), or `buf` is too short.
pub fn write_udp_frame(buf: &mut [u8], hdr: &FrameHeader, payload_len: usize) -> Option<usize> {
    write_udp_frame_with(buf, hdr, payload_len, UdpChecksum::Full)
}

/// Whether [`write_udp_frame_with`] computes the UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Always computed (one pass over the payload).
    Full,
    /// 0 ("none", RFC 768) over IPv4, computed over IPv6 (where it is
    /// mandatory). For payloads that carry their own authentication, such
    /// as sealed WireGuard messages, whose Poly1305 tag already fails any
    /// corrupted byte: the pass over the payload buys nothing there.
    NoneOverIpv4,
}

/// [`write_udp_frame`] with a choice of UDP checksum.
pub fn write_udp_frame_with(
    buf: &mut [u8],
    hdr: &FrameHeader,
    payload_len: usize,
    checksum: UdpChecksum,
) -> Option<usize> {
    let ipv6 = match (hdr.src.ip(), hdr.dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return None,
    };
    if hdr.vlan.is_some_and(|v| v > 0x0fff) {
        return None;
    }
    let max = if ipv6 { MAX_PAYLOAD_V6 } else { MAX_PAYLOAD_V4 };
    if payload_len > max {
        return None;
    }
    let hlen = header_len(ipv6, hdr.vlan.is_some());
    let total = hlen + payload_len;
    let frame = buf.get_mut(..total)?;
    let (head, payload) = frame.split_at_mut(hlen);

    // Ethernet.
    head[0..6].copy_from_slice(&hdr.dst_mac);
    head[6..12].copy_from_slice(&hdr.src_mac);
    let mut at = 12;
    if let Some(vid) = hdr.vlan {
        head[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        head[14..16].copy_from_slice(&vid.to_be_bytes());
        at += VLAN_TAG_LEN;
    }
    let ethertype = if ipv6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    head[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
    at += 2;

    let udp_len = (UDP_HEADER_LEN + payload_len) as u16;
    // The pseudo-header's sum: addresses, protocol, UDP length.
    let mut sum = u64::from(IPPROTO_UDP) + u64::from(udp_len);

    // IP.
    match (hdr.src.ip(), hdr.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = &mut head[at..at + IPV4_HEADER_LEN];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(IPV4_HEADER_LEN as u16 + udp_len).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]); // identification
            ip[6..8].copy_from_slice(&[0x40, 0]); // DF, offset 0
            ip[8] = TTL;
            ip[9] = IPPROTO_UDP;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let csum = !fold(add(0, ip));
            ip[10..12].copy_from_slice(&csum.to_be_bytes());
            sum = add(sum, &ip[12..20]);
            at += IPV4_HEADER_LEN;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = &mut head[at..at + IPV6_HEADER_LEN];
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            sum = add(sum, &ip[8..40]);
            at += IPV6_HEADER_LEN;
        }
        _ => return None, // checked above
    }

    // UDP.
    let udp = &mut head[at..at + UDP_HEADER_LEN];
    udp[0..2].copy_from_slice(&hdr.src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&hdr.dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    if checksum == UdpChecksum::NoneOverIpv4 && !ipv6 {
        return Some(total);
    }
    sum = add(sum, udp);
    sum = add(sum, payload);
    let mut csum = !fold(sum);
    if csum == 0 {
        // 0 means "no checksum" (IPv4) or is invalid (IPv6); RFC 768 sends
        // the all-ones form of a computed zero.
        csum = 0xffff;
    }
    udp[6..8].copy_from_slice(&csum.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A straightforward RFC 768 / RFC 1071 checksum: the pseudo-header and
    /// the UDP datagram concatenated, summed 16 bits at a time in a u32.
    fn reference_udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                bytes.extend_from_slice(&s.octets());
                bytes.extend_from_slice(&d.octets());
                bytes.push(0);
                bytes.push(17);
                bytes.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                bytes.extend_from_slice(&s.octets());
                bytes.extend_from_slice(&d.octets());
                bytes.extend_from_slice(&(udp.len() as u32).to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, 17]);
            }
            _ => panic!("mixed families"),
        }
        let mut u = udp.to_vec();
        u[6] = 0;
        u[7] = 0;
        bytes.extend_from_slice(&u);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            sum += u32::from(pair[0]) << 8 | u32::from(pair[1]);
            if sum > 0xffff {
                sum = (sum & 0xffff) + 1;
            }
        }
        let c = !(sum as u16);
        if c == 0 {
            0xffff
        } else {
            c
        }
    }

    /// RFC 1071 over a header: a correct one sums (and inverts) to 0.
    fn reference_ip_checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in header.chunks(2) {
            sum += u32::from(pair[0]) << 8 | u32::from(pair[1]);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn hdr(src: &str, dst: &str, vlan: Option<u16>) -> FrameHeader {
        FrameHeader {
            src_mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
            dst_mac: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee],
            vlan,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    fn build(h: &FrameHeader, payload: &[u8]) -> Vec<u8> {
        let off = h.header_len();
        let mut buf = vec![0xa5u8; off + payload.len() + 7];
        buf[off..off + payload.len()].copy_from_slice(payload);
        let len = write_udp_frame(&mut buf, h, payload.len()).unwrap();
        assert_eq!(len, off + payload.len());
        buf.truncate(len);
        buf
    }

    /// Checks every checksum of a written frame independently.
    fn check_checksums(frame: &[u8], h: &FrameHeader) {
        let l3 = ETH_HEADER_LEN + if h.vlan.is_some() { VLAN_TAG_LEN } else { 0 };
        let l4 = if h.is_ipv6() {
            l3 + IPV6_HEADER_LEN
        } else {
            let ip = &frame[l3..l3 + IPV4_HEADER_LEN];
            assert_eq!(reference_ip_checksum(ip), 0, "IPv4 header checksum");
            l3 + IPV4_HEADER_LEN
        };
        let udp = &frame[l4..];
        let stated = u16::from_be_bytes([udp[6], udp[7]]);
        assert_ne!(stated, 0);
        assert_eq!(
            stated,
            reference_udp_checksum(h.src.ip(), h.dst.ip(), udp),
            "UDP checksum"
        );
        assert!(verify_checksums(frame));
    }

    #[test]
    fn header_lengths() {
        assert_eq!(header_len(false, false), 42);
        assert_eq!(header_len(false, true), 46);
        assert_eq!(header_len(true, false), 62);
        assert_eq!(header_len(true, true), 66);
        assert_eq!(hdr("[::1]:1", "[::2]:2", Some(3)).header_len(), 66);
    }

    #[test]
    fn ipv4_fields_as_written() {
        let h = hdr("192.0.2.1:51820", "198.51.100.7:4500", None);
        let f = build(&h, b"hello, world");
        assert_eq!(&f[0..6], &h.dst_mac);
        assert_eq!(&f[6..12], &h.src_mac);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 20 + 8 + 12);
        assert_eq!(&ip[4..6], &[0, 0], "ID 0");
        assert_eq!(&ip[6..8], &[0x40, 0], "DF, no fragment offset");
        assert_eq!(ip[8], 64, "TTL");
        assert_eq!(ip[9], 17);
        assert_eq!(&ip[12..16], &[192, 0, 2, 1]);
        assert_eq!(&ip[16..20], &[198, 51, 100, 7]);
        let udp = &f[34..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 51820);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4500);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 20);
        check_checksums(&f, &h);
        let p = parse_udp_frame(&f).unwrap();
        assert_eq!(p.payload, b"hello, world");
        assert_eq!(p.src, h.src);
        assert_eq!(p.dst, h.dst);
        assert_eq!(p.vlan, None);
        assert_eq!(p.src_mac, h.src_mac);
        assert_eq!(p.dst_mac, h.dst_mac);
    }

    #[test]
    fn ipv6_tagged_fields_as_written() {
        let h = hdr("[fd00::1]:1", "[2001:db8::99]:65535", Some(4095));
        let f = build(&h, &[7u8; 33]);
        assert_eq!(&f[12..14], &[0x81, 0x00]);
        assert_eq!(&f[14..16], &[0x0f, 0xff]);
        assert_eq!(&f[16..18], &[0x86, 0xdd]);
        let ip = &f[18..58];
        assert_eq!(&ip[0..4], &[0x60, 0, 0, 0]);
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 8 + 33);
        assert_eq!(ip[6], 17);
        assert_eq!(ip[7], 64);
        check_checksums(&f, &h);
        let p = parse_udp_frame(&f).unwrap();
        assert_eq!(p.vlan, Some(4095));
        assert_eq!(p.payload, &[7u8; 33][..]);
        assert_eq!(p.dst, h.dst);
    }

    /// A known-answer frame: the UDP checksum of this IPv4 datagram was
    /// computed by hand from RFC 768.
    #[test]
    fn known_udp_checksum() {
        let h = FrameHeader {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            vlan: None,
            src: "10.0.0.1:1".parse().unwrap(),
            dst: "10.0.0.2:2".parse().unwrap(),
        };
        let f = build(&h, &[0x01]);
        // Pseudo-header 0a00+0001+0a00+0002+0011+0009 = 0x141d; UDP header
        // 0001+0002+0009 and payload 0100 bring it to 0x1529; !0x1529 = 0xead6.
        assert_eq!(&f[40..42], &[0xea, 0xd6]);
    }

    #[test]
    fn no_checksum_over_ipv4_only_when_asked() {
        let payload = [0xabu8; 100];
        for (src, dst, zero) in [
            ("10.0.0.1:51820", "10.0.0.2:51820", true),
            ("[fd00::1]:51820", "[fd00::2]:51820", false),
        ] {
            let h = hdr(src, dst, None);
            let mut buf = [0u8; 256];
            let off = h.header_len();
            buf[off..off + payload.len()].copy_from_slice(&payload);
            let n = write_udp_frame_with(&mut buf, &h, payload.len(), UdpChecksum::NoneOverIpv4)
                .unwrap();
            let udp_csum = &buf[off - 2..off];
            assert_eq!(udp_csum == [0, 0], zero, "{src}");
            assert!(verify_checksums(&buf[..n]), "{src}");
            let parsed = parse_udp_frame(&buf[..n]).unwrap();
            assert_eq!(parsed.payload, payload);
            // The default still computes it.
            let n = write_udp_frame(&mut buf, &h, payload.len()).unwrap();
            assert_ne!(&buf[off - 2..off], &[0, 0]);
            assert!(verify_checksums(&buf[..n]));
        }
    }

    #[test]
    fn zero_checksum_is_sent_as_all_ones() {
        // Find a payload whose checksum computes to 0: adjust the last two
        // bytes so the whole sum is 0xffff.
        let h = hdr("10.1.2.3:1000", "10.3.2.1:2000", None);
        let mut payload = [0u8; 4];
        let f = build(&h, &payload);
        let c = u16::from_be_bytes([f[40], f[41]]);
        // Adding `c` to the sum turns the inverted result into 0.
        payload[2..4].copy_from_slice(&c.to_be_bytes());
        let f = build(&h, &payload);
        assert_eq!(&f[40..42], &[0xff, 0xff]);
        assert!(verify_checksums(&f));
        check_checksums(&f, &h);
    }

    #[test]
    fn write_rejects_bad_input() {
        let mut buf = [0u8; 2048];
        let mixed = hdr("10.0.0.1:1", "[::1]:1", None);
        assert_eq!(write_udp_frame(&mut buf, &mixed, 0), None);
        let mapped = hdr("10.0.0.1:1", "[::ffff:10.0.0.2]:1", None);
        assert_eq!(write_udp_frame(&mut buf, &mapped, 0), None);
        let bad_vlan = hdr("10.0.0.1:1", "10.0.0.2:1", Some(4096));
        assert_eq!(write_udp_frame(&mut buf, &bad_vlan, 0), None);
        let h = hdr("10.0.0.1:1", "10.0.0.2:1", None);
        assert_eq!(write_udp_frame(&mut buf, &h, 2048 - 42), Some(2048));
        assert_eq!(write_udp_frame(&mut buf, &h, 2048 - 41), None);
        assert_eq!(write_udp_frame(&mut buf[..41], &h, 0), None);
        let mut big = vec![0u8; 70_000];
        assert_eq!(
            write_udp_frame(&mut big, &h, MAX_PAYLOAD_V4),
            Some(65535 + 14)
        );
        assert_eq!(write_udp_frame(&mut big, &h, MAX_PAYLOAD_V4 + 1), None);
        let h6 = hdr("[::1]:1", "[::2]:1", None);
        assert_eq!(
            write_udp_frame(&mut big, &h6, MAX_PAYLOAD_V6),
            Some(65535 + 54)
        );
        assert_eq!(write_udp_frame(&mut big, &h6, MAX_PAYLOAD_V6 + 1), None);
        assert!(verify_checksums(&big[..65535 + 54]));
    }

    #[test]
    fn empty_payload() {
        let h = hdr("[fe80::1]:5", "[ff02::1]:6", None);
        let f = build(&h, &[]);
        assert_eq!(f.len(), 62);
        check_checksums(&f, &h);
        assert_eq!(parse_udp_frame(&f).unwrap().payload, b"");
    }

    #[test]
    fn parse_accepts_qinq_tag_and_padding() {
        let h = hdr("10.0.0.1:1", "10.0.0.2:2", Some(100));
        let mut f = build(&h, b"x");
        f[12..14].copy_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
        // Priority bits are not part of the VLAN ID.
        f[14] |= 0xe0;
        f.resize(60, 0); // Ethernet minimum-size padding
        let p = parse_udp_frame(&f).unwrap();
        assert_eq!(p.vlan, Some(100));
        assert_eq!(p.payload, b"x");
        assert!(verify_checksums(&f));
    }

    #[test]
    fn parse_skips_ipv4_options() {
        let h = hdr("10.0.0.1:1", "10.0.0.2:2", None);
        let f = build(&h, b"payload");
        // Insert 8 bytes of options (two NOPs ... and padding) after the
        // fixed header; fix IHL, total length and the header checksum.
        let mut g = f[..34].to_vec();
        g.extend_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0]);
        g.extend_from_slice(&f[34..]);
        g[14] = 0x47;
        let total = u16::from_be_bytes([g[16], g[17]]) + 8;
        g[16..18].copy_from_slice(&total.to_be_bytes());
        g[24..26].copy_from_slice(&[0, 0]);
        let c = reference_ip_checksum(&g[14..42]);
        g[24..26].copy_from_slice(&c.to_be_bytes());
        let p = parse_udp_frame(&g).unwrap();
        assert_eq!(p.payload, b"payload");
        assert_eq!(p.src, h.src);
        assert!(verify_checksums(&g));
    }

    #[test]
    fn parse_rejects() {
        let h4 = hdr("10.0.0.1:1", "10.0.0.2:2", None);
        let f4 = build(&h4, b"abcdef");
        let h6 = hdr("[fd00::1]:1", "[fd00::2]:2", None);
        let f6 = build(&h6, b"abcdef");
        assert!(parse_udp_frame(&f4).is_some());
        assert!(parse_udp_frame(&f6).is_some());

        let mutate = |f: &[u8], at: usize, v: &[u8]| {
            let mut g = f.to_vec();
            g[at..at + v.len()].copy_from_slice(v);
            parse_udp_frame(&g).is_none()
        };
        // Ethernet.
        assert!(mutate(&f4, 12, &[0x08, 0x06]), "ARP");
        assert!(parse_udp_frame(&f4[..13]).is_none());
        // Two tags.
        let mut two = f4[..12].to_vec();
        two.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2]);
        two.extend_from_slice(&f4[12..]);
        assert!(parse_udp_frame(&two).is_none(), "double tag");
        // IPv4.
        assert!(mutate(&f4, 14, &[0x44]), "IHL 4");
        assert!(mutate(&f4, 14, &[0x65]), "version 6 under IPv4 ethertype");
        assert!(mutate(&f4, 14, &[0x4f]), "IHL past the end");
        assert!(mutate(&f4, 20, &[0x20, 0x00]), "more fragments");
        assert!(mutate(&f4, 20, &[0x00, 0x01]), "fragment offset");
        assert!(!mutate(&f4, 20, &[0x00, 0x00]), "DF clear is fine");
        assert!(mutate(&f4, 23, &[6]), "TCP");
        assert!(mutate(&f4, 16, &[0, 42]), "total length past buffer");
        assert!(mutate(&f4, 16, &[0, 27]), "total length below IP+UDP");
        assert!(parse_udp_frame(&f4[..f4.len() - 1]).is_none(), "truncated");
        // UDP length.
        assert!(mutate(&f4, 38, &[0, 7]), "UDP length below 8");
        assert!(mutate(&f4, 38, &[0, 15]), "UDP length past IP");
        let mut short = f4.clone();
        short[38..40].copy_from_slice(&[0, 10]);
        assert_eq!(parse_udp_frame(&short).unwrap().payload, b"ab");
        // IPv6.
        assert!(mutate(&f6, 14, &[0x40]), "version 4 under IPv6 ethertype");
        assert!(mutate(&f6, 20, &[0, 0, 0]), "hop-by-hop header");
        assert!(mutate(&f6, 20, &[44]), "fragment header");
        assert!(mutate(&f6, 18, &[0, 15]), "payload length past buffer");
        assert!(mutate(&f6, 18, &[0, 0]), "payload length 0 (jumbogram)");
        assert!(mutate(&f6, 58, &[0, 15]), "UDP length past IP");
        assert!(mutate(&f6, 58, &[0, 0]), "UDP length 0");
        assert!(parse_udp_frame(&f6[..61]).is_none());
        assert!(parse_udp_frame(&[]).is_none());
    }

    #[test]
    fn verify_detects_corruption() {
        let h4 = hdr("10.0.0.1:1", "10.0.0.2:2", Some(9));
        let mut f = build(&h4, b"some payload bytes");
        assert!(verify_checksums(&f));
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(!verify_checksums(&f), "payload bit flip");
        f[last] ^= 1;
        f[30] ^= 0x80; // IPv4 source address
        assert!(!verify_checksums(&f), "header bit flip");
        f[30] ^= 0x80;
        f[44..46].copy_from_slice(&[0, 0]);
        assert!(verify_checksums(&f), "IPv4 UDP checksum 0 means none");
        let h6 = hdr("[fd00::1]:1", "[fd00::2]:2", None);
        let mut f = build(&h6, b"x");
        f[60..62].copy_from_slice(&[0, 0]);
        assert!(!verify_checksums(&f), "IPv6 requires a UDP checksum");
        assert!(!verify_checksums(&[0u8; 10]));
    }

    #[test]
    fn summing_matches_reference_at_every_length() {
        // Exercise every remainder of the eight-byte loop.
        for n in 0..40usize {
            let payload: Vec<u8> = (0..n).map(|i| (i * 37 + 200) as u8).collect();
            for h in [
                hdr("10.9.8.7:65535", "10.0.0.255:0", None),
                hdr("[::ffff:1]:9", "[fe80::abcd]:8", Some(1)),
            ] {
                let f = build(&h, &payload);
                check_checksums(&f, &h);
            }
        }
    }

    fn arb_header() -> impl Strategy<Value = FrameHeader> {
        let v4 = (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>(),
        )
            .prop_map(|(s, sp, d, dp)| {
                (
                    SocketAddr::from((Ipv4Addr::from(s), sp)),
                    SocketAddr::from((Ipv4Addr::from(d), dp)),
                )
            });
        let v6 = (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>(),
        )
            .prop_map(|(s, sp, d, dp)| {
                (
                    SocketAddr::from((Ipv6Addr::from(s), sp)),
                    SocketAddr::from((Ipv6Addr::from(d), dp)),
                )
            });
        (
            prop_oneof![v4, v6],
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            proptest::option::of(0u16..4096),
        )
            .prop_map(|((src, dst), src_mac, dst_mac, vlan)| FrameHeader {
                src_mac,
                dst_mac,
                vlan,
                src,
                dst,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn write_then_parse_round_trips(
            h in arb_header(),
            payload in prop::collection::vec(any::<u8>(), 0..1600),
            slack in 0usize..64,
            junk in any::<u8>(),
        ) {
            let off = h.header_len();
            // The buffer starts out dirty: every header byte must be written.
            let mut buf = vec![junk; off + payload.len() + slack];
            buf[off..off + payload.len()].copy_from_slice(&payload);
            let len = write_udp_frame(&mut buf, &h, payload.len()).unwrap();
            prop_assert_eq!(len, off + payload.len());
            prop_assert_eq!(&buf[off..len], &payload[..], "payload untouched");
            check_checksums(&buf[..len], &h);
            // Parsing the whole buffer (trailing bytes are padding) or just
            // the frame gives the same answer.
            for f in [&buf[..len], &buf[..]] {
                let p = parse_udp_frame(f).unwrap();
                prop_assert_eq!(p.src, h.src);
                prop_assert_eq!(p.dst, h.dst);
                prop_assert_eq!(p.payload, &payload[..]);
                prop_assert_eq!(p.vlan, h.vlan);
                prop_assert_eq!(p.src_mac, h.src_mac);
                prop_assert_eq!(p.dst_mac, h.dst_mac);
            }
        }

        #[test]
        fn parse_never_panics(frame in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Some(p) = parse_udp_frame(&frame) {
                prop_assert!(p.payload.len() <= frame.len());
            }
            let _ = verify_checksums(&frame);
        }

        #[test]
        fn parse_never_panics_on_plausible_frames(
            ethertype in prop_oneof![
                Just([0x08u8, 0x00]), Just([0x86, 0xdd]), Just([0x81, 0x00]), Just([0x88, 0xa8])
            ],
            inner in prop_oneof![Just([0x08u8, 0x00]), Just([0x86, 0xdd])],
            first in prop_oneof![0x40u8..0x50, 0x60u8..0x70],
            proto in prop_oneof![Just(17u8), any::<u8>()],
            rest in prop::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&ethertype);
            if ethertype[0] != 0x08 && ethertype[0] != 0x86 {
                f.extend_from_slice(&[0, 5]);
                f.extend_from_slice(&inner);
            }
            f.push(first);
            f.extend_from_slice(&rest);
            // Put the protocol where either version keeps it.
            let l3 = f.len() - rest.len() - 1;
            if let Some(b) = f.get_mut(l3 + 9) { *b = proto; }
            if let Some(b) = f.get_mut(l3 + 6) { *b = proto; }
            if let Some(p) = parse_udp_frame(&f) {
                prop_assert!(p.payload.len() + 42 <= f.len());
            }
            let _ = verify_checksums(&f);
        }

        #[test]
        fn corrupting_a_written_frame_never_panics(
            h in arb_header(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = build(&h, &payload);
            for (i, b) in flips {
                let i = i.index(f.len());
                f[i] = b;
            }
            let f = &f[..cut.index(f.len() + 1)];
            if let Some(p) = parse_udp_frame(f) {
                prop_assert!(p.payload.len() <= f.len());
            }
            let _ = verify_checksums(f);
        }
    }
}
