//! TUN offloads: what the kernel hands us when the TUN advertises checksum
//! and TCP segmentation offload (IFF_VNET_HDR + TUNSETOFFLOAD), turned back
//! into the plain, fully checksummed IP packets WireGuard seals.
//!
//! With TSO a local TCP sender (or GRO on a forwarding path) gives the TUN
//! one super-packet of up to 64 KiB instead of ~45 MTU-sized ones, so the
//! sender's stack and our read path each pay once per super-packet rather
//! than once per segment. The price is doing here what a NIC would: cut the
//! payload at `gso_size`, fix lengths, IDs, sequence numbers, flags and
//! checksums. Every packet also comes with a virtio-net header (10 bytes,
//! the legacy layout the TUN uses, in host byte order); a packet whose
//! checksum the kernel left partial (NEEDS_CSUM) gets it completed.
//!
//! UDP segmentation (USO, kernel 6.2+) works the same way for UDP senders
//! that batch with UDP_SEGMENT (QUIC stacks, media): one super-packet of
//! equal-sized datagrams, cut here at `gso_size` with the UDP length and
//! checksum of each piece fixed. Any other GSO type is refused rather than
//! guessed at.

use crate::checksum::{add, fold, pseudo_header};

/// Bytes of the virtio-net header in front of every packet on the TUN.
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation, IPv4 or IPv6 (`VIRTIO_NET_HDR_GSO_UDP_L4`).
pub const GSO_UDP_L4: u8 = 5;
/// Or'd into `gso_type` when the segments carry ECN (CWR on the first).
pub const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// The most datagrams the kernel puts in one UDP super-packet (UDP_MAX_SEGMENTS).
const UDP_MAX_SEGMENTS: usize = 128;

/// Whether TUN offloads (segmentation and checksum offload on the way in,
/// coalescing on the way out) are wanted: on unless WIRESPEED_TUN_OFFLOAD
/// says `off`/`0`/`no`/`false`, because offload bugs exist in some kernels.
/// Control and data plane read the same variable (the data plane inherits
/// it), so they always agree.
pub fn wanted_by_env() -> bool {
    !matches!(
        std::env::var("WIRESPEED_TUN_OFFLOAD").as_deref(),
        Ok("0" | "off" | "no" | "false")
    )
}

/// The legacy virtio-net header (`struct virtio_net_hdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Why a packet from the TUN could not be turned into plain packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// A GSO type we never offered (UDP, or TCP behind IPv6 extension headers).
    Unsupported,
    /// Headers or offsets that do not fit the packet.
    Malformed,
}

/// How many packets `for_each_packet` will emit for a `len`-byte read: at
/// least the true count (the headers are counted as payload), so counters
/// reserved for a super-packet's segments rarely fall short.
pub fn packets_hint(hdr: &VnetHdr, len: usize) -> u64 {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => 1,
        _ if hdr.gso_size == 0 => 1,
        _ => len.div_ceil(usize::from(hdr.gso_size)).max(1) as u64,
    }
}

/// One plain packet that a packet from the TUN stands for: its headers
/// and its payload, which lie apart. A segment's headers are rebuilt for it
/// on the stack while its payload stays where the TUN read put it, so
/// sealing copies each byte once, straight into the message, rather than
/// once into a joined segment and again into the message.
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    pub head: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Piece<'a> {
    /// A packet that is whole already.
    pub fn whole(packet: &'a [u8]) -> Piece<'a> {
        Piece {
            head: packet,
            body: &[],
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the two parts into the start of `out`, which must hold them.
    pub fn copy_to(&self, out: &mut [u8]) {
        let (head, body) = out[..self.len()].split_at_mut(self.head.len());
        head.copy_from_slice(self.head);
        body.copy_from_slice(self.body);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        [self.head, self.body].concat()
    }
}

/// The most header bytes a segment can have: IPv4 with options (60) and TCP
/// with options (60).
const MAX_HEADERS: usize = 120;
/// The longest packet a segment may be: IPv4's total length is 16 bits.
const MAX_PACKET: usize = 65535;

/// Calls `emit` with each plain packet `packet` stands for: itself (its
/// checksum completed if the kernel left it partial), or the segments of a
/// TCP or UDP super-packet, one at a time. Returns how many packets were
/// emitted.
pub fn for_each_piece(
    hdr: &VnetHdr,
    packet: &mut [u8],
    emit: impl FnMut(Piece<'_>),
) -> Result<usize, OffloadError> {
    pieces(hdr, packet, MAX_PACKET, emit)
}

/// [`for_each_piece`] with each packet joined in `scratch`, for callers
/// that need it in one slice; a segment longer than `scratch` is refused.
pub fn for_each_packet(
    hdr: &VnetHdr,
    packet: &mut [u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    pieces(hdr, packet, scratch.len(), |p| {
        if p.body.is_empty() {
            return emit(p.head); // whole already
        }
        let out = &mut scratch[..p.len()];
        p.copy_to(out);
        emit(out)
    })
}

/// The work of both: `max` bounds a segment's length.
fn pieces(
    hdr: &VnetHdr,
    packet: &mut [u8],
    max: usize,
    mut emit: impl FnMut(Piece<'_>),
) -> Result<usize, OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(packet, hdr.csum_start.into(), hdr.csum_offset.into())?;
            }
            emit(Piece::whole(packet));
            Ok(1)
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(hdr, packet, max, emit),
        GSO_UDP_L4 => segment_udp(hdr, packet, max, emit),
        _ => Err(OffloadError::Unsupported),
    }
}

/// Finishes a partial checksum: the field holds the pseudo-header sum, so
/// the one's-complement sum from `start` to the end, field included, is the
/// checksum. 0 goes out as 0xffff, as the kernel's skb_checksum_help does.
pub fn complete_checksum(
    packet: &mut [u8],
    start: usize,
    offset: usize,
) -> Result<(), OffloadError> {
    let at = start.checked_add(offset).ok_or(OffloadError::Malformed)?;
    if at.checked_add(2).is_none_or(|end| end > packet.len()) || !start.is_multiple_of(2) {
        return Err(OffloadError::Malformed);
    }
    let sum = !fold(add(0, &packet[start..]));
    let sum = if sum == 0 { 0xffff } else { sum };
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn segment_tcp(
    hdr: &VnetHdr,
    packet: &[u8],
    max: usize,
    mut emit: impl FnMut(Piece<'_>),
) -> Result<usize, OffloadError> {
    let (v6, ip_len) = ip_header(packet, 20)?;
    if v6 != (hdr.gso_type & !GSO_ECN == GSO_TCPV6) {
        return Err(OffloadError::Malformed);
    }
    let proto = if v6 { packet[6] } else { packet[9] };
    if proto != IPPROTO_TCP {
        return Err(OffloadError::Unsupported);
    }
    let tcp_len = usize::from(packet[ip_len + 12] >> 4) * 4;
    let headers = ip_len + tcp_len;
    let mss = usize::from(hdr.gso_size);
    if tcp_len < 20 || packet.len() < headers || mss == 0 || headers + mss > max {
        return Err(OffloadError::Malformed);
    }
    let (template, payload) = packet.split_at(headers);
    let mut head = [0u8; MAX_HEADERS];
    let head = &mut head[..headers];
    head.copy_from_slice(template);
    let segments = payload.len().div_ceil(mss).max(1);
    let seq = u32::from_be_bytes(packet[ip_len + 4..ip_len + 8].try_into().expect("4 bytes"));
    let flags = packet[ip_len + 13];
    let id = be16(packet, 4);
    let tcp = ip_len;
    for i in 0..segments {
        let body = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let len = headers + body.len();
        fix_ip_header(head, len, v6, ip_len, id, i);
        let seg_seq = seq.wrapping_add((i * mss) as u32);
        head[tcp + 4..tcp + 8].copy_from_slice(&seg_seq.to_be_bytes());
        let mut f = flags;
        if i + 1 < segments {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        head[tcp + 13] = f;
        head[tcp + 16..tcp + 18].fill(0);
        // The headers are a whole number of 32-bit words, so the payload
        // starts at an even offset and sums on its own.
        let sum = add(pseudo_header(head, IPPROTO_TCP, len - tcp), &head[tcp..]);
        let csum = !fold(add(sum, body));
        head[tcp + 16..tcp + 18].copy_from_slice(&csum.to_be_bytes());
        emit(Piece { head, body });
    }
    Ok(segments)
}

/// The IP version and header length of `packet`, checked to hold at least
/// `transport` more bytes.
fn ip_header(packet: &[u8], transport: usize) -> Result<(bool, usize), OffloadError> {
    let v6 = match packet.first().map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ => return Err(OffloadError::Malformed),
    };
    let ip_len = if v6 {
        40
    } else {
        usize::from(packet[0] & 0x0f) * 4
    };
    if packet.len() < ip_len + transport || (!v6 && ip_len < 20) {
        return Err(OffloadError::Malformed);
    }
    Ok((v6, ip_len))
}

/// Writes a segment's IP length (and, for IPv4, its ID and header
/// checksum) into its headers `head`: segment `i`, `len` bytes long, of a
/// super-packet whose first ID was `id`.
fn fix_ip_header(head: &mut [u8], len: usize, v6: bool, ip_len: usize, id: u16, i: usize) {
    if v6 {
        head[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        head[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        head[10..12].fill(0);
        let sum = !fold(add(0, &head[..ip_len]));
        head[10..12].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Cuts a UDP super-packet into its datagrams: each gets the IP and UDP
/// headers with its own lengths, IPv4 ID and a full UDP checksum.
fn segment_udp(
    hdr: &VnetHdr,
    packet: &[u8],
    max: usize,
    mut emit: impl FnMut(Piece<'_>),
) -> Result<usize, OffloadError> {
    let (v6, ip_len) = ip_header(packet, 8)?;
    let proto = if v6 { packet[6] } else { packet[9] };
    if proto != IPPROTO_UDP {
        return Err(OffloadError::Unsupported);
    }
    let headers = ip_len + 8;
    let size = usize::from(hdr.gso_size);
    if size == 0 || headers + size > max {
        return Err(OffloadError::Malformed);
    }
    let (template, payload) = packet.split_at(headers);
    let segments = payload.len().div_ceil(size).max(1);
    if segments > UDP_MAX_SEGMENTS {
        return Err(OffloadError::Malformed);
    }
    let mut head = [0u8; MAX_HEADERS];
    let head = &mut head[..headers];
    head.copy_from_slice(template);
    let id = be16(packet, 4);
    let udp = ip_len;
    for i in 0..segments {
        let body = &payload[(i * size).min(payload.len())..((i + 1) * size).min(payload.len())];
        let len = headers + body.len();
        fix_ip_header(head, len, v6, ip_len, id, i);
        head[udp + 4..udp + 6].copy_from_slice(&((len - udp) as u16).to_be_bytes());
        head[udp + 6..udp + 8].fill(0);
        let sum = add(pseudo_header(head, IPPROTO_UDP, len - udp), &head[udp..]);
        let csum = !fold(add(sum, body));
        // Zero means "no checksum" in UDP; the kernel sends all ones instead.
        let csum = if csum == 0 { 0xffff } else { csum };
        head[udp + 6..udp + 8].copy_from_slice(&csum.to_be_bytes());
        emit(Piece { head, body });
    }
    Ok(segments)
}

/// Test packets shared by the offload and coalescing tests.
#[cfg(test)]
pub(crate) mod test_packets {
    use crate::checksum::{add, fold, pseudo_header};

    /// A valid IPv4 or IPv6 TCP packet (full checksums, 12 bytes of
    /// options with a timestamp byte `ts`) carrying `payload`.
    pub fn tcp(
        v6: bool,
        sport: u16,
        seq: u32,
        payload: &[u8],
        flags: u8,
        ts: u8,
        id: u16,
    ) -> Vec<u8> {
        let ip_len = if v6 { 40 } else { 20 };
        let tcp_len = 32;
        let mut p = vec![0u8; ip_len + tcp_len + payload.len()];
        let total = p.len();
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = 6;
            p[7] = 64;
            p[8] = 0xfd;
            p[23] = 1;
            p[24] = 0xfd;
            p[39] = 2;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&id.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
            let s = !fold(add(0, &p[..20]));
            p[10..12].copy_from_slice(&s.to_be_bytes());
        }
        let t = ip_len;
        p[t..t + 2].copy_from_slice(&sport.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        p[t + 12] = 8 << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        p[t + 20..t + 24].copy_from_slice(&[1, 1, 8, 10]);
        p[t + 27] = ts;
        p[ip_len + tcp_len..].copy_from_slice(payload);
        let c = !fold(add(pseudo_header(&p, 6, total - t), &p[t..]));
        p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// A valid IPv4 or IPv6 UDP datagram (full checksums) carrying
    /// `payload`, from port `sport` to 4433.
    pub fn udp(v6: bool, sport: u16, payload: &[u8], id: u16) -> Vec<u8> {
        // The TCP builder's IP header, cut to UDP's size and relabelled.
        let mut p = tcp(v6, sport, 0, &[], 0, 0, id);
        let ip_len = if v6 { 40 } else { 20 };
        p.truncate(ip_len + 8);
        p.extend_from_slice(payload);
        let total = p.len();
        if v6 {
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = 17;
        } else {
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[9] = 17;
            p[10..12].fill(0);
            let s = !fold(add(0, &p[..20]));
            p[10..12].copy_from_slice(&s.to_be_bytes());
        }
        let u = ip_len;
        p[u + 2..u + 4].copy_from_slice(&4433u16.to_be_bytes());
        p[u + 4..u + 6].copy_from_slice(&((total - u) as u16).to_be_bytes());
        p[u + 6..u + 8].fill(0);
        let c = !fold(add(pseudo_header(&p, 17, total - u), &p[u..]));
        // 0 means "no checksum" in UDP; a computed 0 is sent as all ones.
        let c = if c == 0 { 0xffff } else { c };
        p[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 the slow way, for checking.
    fn sum16(data: &[u8]) -> u32 {
        let mut s = 0u32;
        for c in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        s
    }

    fn fold32(mut s: u32) -> u16 {
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// Whether a plain IPv4/IPv6 TCP packet's checksums verify.
    fn checksums_ok(p: &[u8]) -> bool {
        l4_checksums_ok(p, 6)
    }

    /// Whether a plain IPv4/IPv6 packet of protocol `proto` verifies.
    fn l4_checksums_ok(p: &[u8], proto: u32) -> bool {
        let v6 = p[0] >> 4 == 6;
        let ip_len = if v6 { 40 } else { usize::from(p[0] & 0xf) * 4 };
        if !v6 && fold32(sum16(&p[..ip_len])) != 0xffff {
            return false;
        }
        let tcp = &p[ip_len..];
        let mut pseudo = if v6 {
            sum16(&p[8..40])
        } else {
            sum16(&p[12..20])
        };
        pseudo += proto + tcp.len() as u32;
        fold32(pseudo + sum16(tcp)) == 0xffff
    }

    /// A TCP super-packet with `payload` bytes, as the kernel hands one
    /// over (lengths of the whole; the checksums do not matter to the cut).
    fn super_packet(v6: bool, payload: usize, flags: u8) -> Vec<u8> {
        let body: Vec<u8> = (0..payload).map(|i| (i * 7 + 3) as u8).collect();
        test_packets::tcp(v6, 5555, 0xffff_ff00, &body, flags, 9, 0xfffe)
    }

    fn gso(v6: bool, mss: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: if v6 { 72 } else { 52 },
            gso_size: mss,
            csum_start: if v6 { 40 } else { 20 },
            csum_offset: 16,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = gso(true, 1368);
        assert_eq!(VnetHdr::parse(&h.to_bytes()), h);
        assert_eq!(VnetHdr::parse(&[0; VNET_HDR_LEN]), VnetHdr::default());
    }

    #[test]
    fn tcp_super_packets_are_cut_into_valid_segments() {
        for v6 in [false, true] {
            for payload in [1usize, 1368, 1369, 10_000, 65_000 - 72] {
                let mut p = super_packet(v6, payload, 0x18 | TCP_FIN | TCP_CWR);
                let original = p.clone();
                let mut scratch = vec![0u8; 65536];
                let mut segs: Vec<Vec<u8>> = Vec::new();
                let n = for_each_packet(&gso(v6, 1368), &mut p, &mut scratch, |s| {
                    segs.push(s.to_vec())
                })
                .unwrap();
                assert_eq!(n, payload.div_ceil(1368));
                assert_eq!(segs.len(), n);
                let hl = if v6 { 72 } else { 52 };
                let mut rebuilt = Vec::new();
                for (i, s) in segs.iter().enumerate() {
                    assert!(checksums_ok(s), "segment {i} of {payload} (v6 {v6})");
                    assert!(s.len() <= hl + 1368);
                    assert_eq!(crate::ip::packet_len(s), Some(s.len()));
                    let t = hl - 32;
                    let seq = u32::from_be_bytes(s[t + 4..t + 8].try_into().unwrap());
                    assert_eq!(seq, 0xffff_ff00u32.wrapping_add((i * 1368) as u32));
                    let last = i + 1 == n;
                    assert_eq!(s[t + 13] & TCP_FIN != 0, last);
                    assert_eq!(s[t + 13] & TCP_PSH != 0, last);
                    assert_eq!(s[t + 13] & TCP_CWR != 0, i == 0);
                    assert_eq!(s[t + 13] & 0x10, 0x10, "ACK kept");
                    if !v6 {
                        assert_eq!(be16(s, 4), 0xfffeu16.wrapping_add(i as u16));
                    }
                    rebuilt.extend_from_slice(&s[hl..]);
                }
                assert_eq!(rebuilt, original[hl..]);
            }
        }
    }

    /// The pieces are the joined segments, and their payloads are the
    /// super-packet's own bytes, not copies.
    #[test]
    fn pieces_leave_payloads_where_they_lie() {
        for v6 in [false, true] {
            let mut p = super_packet(v6, 10_000, 0x18);
            let mut joined: Vec<Vec<u8>> = Vec::new();
            let mut scratch = vec![0u8; 65536];
            for_each_packet(&gso(v6, 1368), &mut p.clone(), &mut scratch, |s| {
                joined.push(s.to_vec())
            })
            .unwrap();
            let range = p.as_ptr_range();
            let mut pieces = Vec::new();
            for_each_piece(&gso(v6, 1368), &mut p, |s| {
                assert!(range.contains(&s.body.as_ptr()));
                assert!(!range.contains(&s.head.as_ptr()));
                pieces.push(s.to_vec());
            })
            .unwrap();
            assert_eq!(pieces, joined);
        }
    }

    /// A UDP super-packet as a sender using UDP_SEGMENT hands the TUN one:
    /// one IP and UDP header, then `payload` bytes (lengths of the whole,
    /// the UDP checksum left partial).
    fn udp_super_packet(v6: bool, payload: usize) -> Vec<u8> {
        let ip_len = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; ip_len + 8 + payload];
        let total = p.len();
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = IPPROTO_UDP;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
            p[8] = 64;
            p[9] = IPPROTO_UDP;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        }
        p[ip_len..ip_len + 2].copy_from_slice(&4433u16.to_be_bytes());
        p[ip_len + 2..ip_len + 4].copy_from_slice(&443u16.to_be_bytes());
        p[ip_len + 4..ip_len + 6].copy_from_slice(&((total - ip_len) as u16).to_be_bytes());
        for (i, b) in p[ip_len + 8..].iter_mut().enumerate() {
            *b = (i * 13 + 5) as u8;
        }
        p
    }

    fn uso(v6: bool, size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: if v6 { 48 } else { 28 },
            gso_size: size,
            csum_start: if v6 { 40 } else { 20 },
            csum_offset: 6,
        }
    }

    #[test]
    fn udp_super_packets_are_cut_into_valid_datagrams() {
        for v6 in [false, true] {
            let hl = if v6 { 48 } else { 28 };
            for payload in [1usize, 1200, 1201, 12_000, 64 * 1000] {
                let mut p = udp_super_packet(v6, payload);
                let original = p.clone();
                let mut scratch = vec![0u8; 65536];
                let mut segs: Vec<Vec<u8>> = Vec::new();
                let hdr = uso(v6, 1200);
                let n =
                    for_each_packet(&hdr, &mut p, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
                assert_eq!(n, payload.div_ceil(1200));
                assert!(packets_hint(&hdr, original.len()) >= n as u64);
                let mut rebuilt = Vec::new();
                for (i, s) in segs.iter().enumerate() {
                    assert!(
                        l4_checksums_ok(s, 17),
                        "datagram {i} of {payload} (v6 {v6})"
                    );
                    assert_eq!(crate::ip::packet_len(s), Some(s.len()));
                    let u = hl - 8;
                    assert_eq!(usize::from(be16(s, u + 4)), s.len() - u, "UDP length");
                    assert_ne!(be16(s, u + 6), 0, "a checksum, not 'none'");
                    let addrs = if v6 { 8..40 } else { 12..20 };
                    assert_eq!(s[addrs.clone()], original[addrs], "addresses");
                    assert_eq!(s[u..u + 4], original[u..u + 4], "ports");
                    if !v6 {
                        assert_eq!(be16(s, 4), 0xfff0u16.wrapping_add(i as u16));
                    }
                    let last = i + 1 == n;
                    assert!(s.len() == hl + 1200 || last, "only the last is shorter");
                    rebuilt.extend_from_slice(&s[hl..]);
                }
                assert_eq!(rebuilt, original[hl..]);
            }
        }
    }

    #[test]
    fn udp_super_packets_the_kernel_would_not_build_are_refused() {
        // More datagrams than UDP_MAX_SEGMENTS.
        let mut p = udp_super_packet(false, 129 * 100);
        let mut scratch = vec![0u8; 2048];
        assert_eq!(
            for_each_packet(&uso(false, 100), &mut p, &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
        // A TCP packet under the UDP type.
        let mut t = super_packet(false, 3000, 0x18);
        assert_eq!(
            for_each_packet(&uso(false, 1200), &mut t, &mut scratch, |_| {}),
            Err(OffloadError::Unsupported)
        );
        // Too short for a UDP header.
        let mut short = udp_super_packet(true, 0);
        short.truncate(44);
        assert_eq!(
            for_each_packet(&uso(true, 1200), &mut short, &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
    }

    #[test]
    fn partial_checksums_are_completed() {
        // A single TCP segment whose checksum field holds the pseudo-header
        // sum, as the kernel leaves it with NEEDS_CSUM.
        let mut p = super_packet(false, 100, 0x18);
        let t = 20;
        let len = p.len() - t;
        let pseudo = fold32(sum16(&p[12..20]) + 6 + len as u32);
        p[t + 16..t + 18].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut out = Vec::new();
        assert_eq!(
            for_each_packet(&hdr, &mut p, &mut [], |s| out.push(s.to_vec())),
            Ok(1)
        );
        assert!(checksums_ok(&out[0]));
    }

    #[test]
    fn plain_packets_pass_untouched() {
        let mut p = super_packet(true, 10, 0x18);
        let before = p.clone();
        let mut out = Vec::new();
        let n = for_each_packet(&VnetHdr::default(), &mut p, &mut [], |s| {
            out.push(s.to_vec())
        });
        assert_eq!(n, Ok(1));
        assert_eq!(out, vec![before]);
    }

    #[test]
    fn refuses_what_was_never_offered_or_does_not_fit() {
        let mut p = super_packet(false, 3000, 0x18);
        let mut scratch = vec![0u8; 2048];
        let mut udp = gso(false, 1368);
        udp.gso_type = GSO_UDP_L4; // on a TCP packet
        assert_eq!(
            for_each_packet(&udp, &mut p, &mut scratch, |_| {}),
            Err(OffloadError::Unsupported)
        );
        // Family does not match the GSO type.
        assert_eq!(
            for_each_packet(&gso(true, 1368), &mut p, &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
        assert_eq!(
            for_each_packet(&gso(false, 0), &mut p, &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
        // Scratch smaller than one segment.
        assert_eq!(
            for_each_packet(&gso(false, 4000), &mut p, &mut scratch, |_| {}),
            Err(OffloadError::Malformed)
        );
        let csum = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        assert_eq!(
            for_each_packet(&csum, &mut p[..70], &mut [], |_| {}),
            Err(OffloadError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            flags in any::<u8>(),
            gso_type in prop::sample::select(vec![0u8, 1, 3, 4, 5, 0x81, 0x84]),
            hdr_len in any::<u16>(),
            gso_size in any::<u16>(),
            csum_start in any::<u16>(),
            csum_offset in any::<u16>(),
        ) {
            let hdr = VnetHdr { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset };
            let mut p = bytes;
            let mut scratch = vec![0u8; 4096];
            let _ = for_each_packet(&hdr, &mut p, &mut scratch, |s| assert!(s.len() <= 4096));
        }
    }
}
