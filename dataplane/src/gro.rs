//! Receive-side coalescing for the TUN: consecutive TCP segments of one flow
//! that arrive in the same receive batch are written to the TUN as one
//! super-packet (a virtio-net header with GSO_TCPV4/6), so the kernel's TCP
//! receive path runs once per batch instead of once per segment. This is
//! what a NIC's GRO/LRO does, with the same rules as the kernel's
//! `tcp_gro_receive`: the same addresses, ports, IP fields, ACK number and
//! TCP options; in-order sequence numbers; every segment but the last of
//! full size; only ACK (and PSH, which ends the run) among the flags.
//!
//! Where the TUN takes UDP super-packets (USO, kernel 6.2+), consecutive
//! datagrams of one UDP flow are coalesced the same way (GSO_UDP_L4), by the
//! rules of the kernel's `udp_gro_receive`: the same addresses, ports and IP
//! fields, every datagram but the last of the first one's size, at most 64.
//! The kernel cuts them back into the same datagrams (a QUIC connection or
//! a video stream through the tunnel then costs its receiver one pass
//! through the IP stack per train, not per datagram).
//!
//! Anything else (other protocols, pure ACKs, SYN/FIN/RST/URG/ECE/CWR, IP
//! options or fragments, UDP without a checksum) is written as it came,
//! after whatever of its flow was held, so no flow is ever reordered.

use crate::checksum::{add, fold, pseudo_header};
use crate::offload::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

/// Flows held at once within a batch; a new flow beyond that flushes the
/// oldest.
const MAX_FLOWS: usize = 8;
/// The largest super-packet: IPv4's total length and IPv6's payload length
/// are 16 bits.
const MAX_LEN: usize = 65535;

const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Most datagrams in one UDP super-packet (the kernel's `UDP_MAX_SEGMENTS`
/// is 64 on older kernels, 128 on newer ones).
const MAX_UDP_SEGMENTS: usize = 64;

/// Protocol, addresses and ports: what makes a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    addrs: [u8; 32],
    ports: [u8; 4],
    v6: bool,
    udp: bool,
}

/// What one plain TCP segment or UDP datagram looks like, as far as merging
/// goes (`seq` and `flags` are zero for UDP).
struct Segment {
    key: FlowKey,
    headers: usize,
    seq: u32,
    id: u16,
    flags: u8,
    payload: usize,
}

/// One flow being coalesced: the first segment's headers and every payload
/// so far, in `buf`.
struct Flow {
    key: FlowKey,
    buf: Vec<u8>,
    headers: usize,
    mss: usize,
    next_seq: u32,
    /// IPv4: the identification the next segment must carry (the kernel
    /// regenerates them as first + i when it cuts the super-packet again).
    next_id: u16,
    segments: usize,
    /// The last segment was short or carried PSH: nothing may follow.
    closed: bool,
}

/// Where coalesced and passed-through packets go: `(header, packet)`; a
/// `None` header means a plain packet.
pub trait Sink {
    fn write(&mut self, hdr: Option<&VnetHdr>, packet: &[u8]);
}

impl<F: FnMut(Option<&VnetHdr>, &[u8])> Sink for F {
    fn write(&mut self, hdr: Option<&VnetHdr>, packet: &[u8]) {
        self(hdr, packet)
    }
}

#[derive(Default)]
pub struct Gro {
    /// UDP is coalesced too: the TUN takes GSO_UDP_L4.
    udp: bool,
    flows: Vec<Flow>,
    /// Buffers of flushed flows, reused so the packet path allocates nothing
    /// once warm.
    spare: Vec<Vec<u8>>,
}

impl Gro {
    /// `udp`: the TUN takes UDP super-packets (it accepted USO).
    pub fn new(udp: bool) -> Gro {
        Gro {
            udp,
            ..Gro::default()
        }
    }

    /// Takes one plain IP packet: holds it for merging, or writes it (after
    /// its flow's held segments) to `out`.
    pub fn push(&mut self, packet: &[u8], out: &mut impl Sink) {
        let Some(seg) = parse(packet).filter(|s| self.udp || !s.key.udp) else {
            // Not mergeable. Its flow (if TCP or UDP) must not be overtaken.
            if let Some(key) = flow_key(packet) {
                self.flush_key(&key, out);
            }
            return out.write(None, packet);
        };
        if let Some(i) = self.flows.iter().position(|f| f.key == seg.key) {
            if self.flows[i].accepts(&seg, packet) {
                self.flows[i].append(&seg, packet);
                return;
            }
            let f = self.flows.remove(i);
            self.emit(f, out);
        }
        if self.flows.len() == MAX_FLOWS {
            let f = self.flows.remove(0);
            self.emit(f, out);
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.flows.push(Flow {
            key: seg.key,
            buf,
            headers: seg.headers,
            mss: seg.payload,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            next_id: seg.id.wrapping_add(1),
            segments: 1,
            closed: seg.flags & TCP_PSH != 0,
        });
    }

    /// Writes everything held (end of a receive batch).
    pub fn flush(&mut self, out: &mut impl Sink) {
        for f in std::mem::take(&mut self.flows) {
            self.emit(f, out);
        }
    }

    fn flush_key(&mut self, key: &FlowKey, out: &mut impl Sink) {
        if let Some(i) = self.flows.iter().position(|f| f.key == *key) {
            let f = self.flows.remove(i);
            self.emit(f, out);
        }
    }

    fn emit(&mut self, mut f: Flow, out: &mut impl Sink) {
        if f.segments == 1 {
            out.write(None, &f.buf);
        } else {
            let hdr = f.finish();
            out.write(Some(&hdr), &f.buf);
        }
        self.spare.push(f.buf);
    }
}

impl Flow {
    /// Merged packets have no IPv4 options or IPv6 extension headers.
    fn ip_len(&self) -> usize {
        if self.key.v6 {
            40
        } else {
            20
        }
    }

    fn accepts(&self, seg: &Segment, packet: &[u8]) -> bool {
        if self.closed
            || (!self.key.udp && seg.seq != self.next_seq)
            || (!self.key.v6 && seg.id != self.next_id)
            || seg.payload > self.mss
            || seg.headers != self.headers
            || self.buf.len() + seg.payload > MAX_LEN
            || (self.key.udp && self.segments == MAX_UDP_SEGMENTS)
        {
            return false;
        }
        let first = &self.buf;
        let tcp = self.ip_len();
        // IP fields that must agree: v4 TOS, flags/fragment, TTL, protocol;
        // v6 version/class/flow label, next header, hop limit.
        let ip_same = if self.key.v6 {
            first[..4] == packet[..4] && first[6..8] == packet[6..8]
        } else {
            first[1] == packet[1] && first[6..10] == packet[6..10]
        };
        if self.key.udp {
            return ip_same;
        }
        // TCP: ACK number, data offset, window, and every option byte
        // (timestamps included, as the kernel's GRO demands).
        ip_same
            && first[tcp + 8..tcp + 13] == packet[tcp + 8..tcp + 13]
            && first[tcp + 14..tcp + 16] == packet[tcp + 14..tcp + 16]
            && first[tcp + 20..self.headers] == packet[tcp + 20..seg.headers]
    }

    fn append(&mut self, seg: &Segment, packet: &[u8]) {
        self.buf.extend_from_slice(&packet[seg.headers..]);
        self.next_seq = self.next_seq.wrapping_add(seg.payload as u32);
        self.next_id = self.next_id.wrapping_add(1);
        self.segments += 1;
        if !self.key.udp && seg.flags & TCP_PSH != 0 {
            let tcp = self.ip_len();
            self.buf[tcp + 13] |= TCP_PSH;
            self.closed = true;
        }
        if seg.payload < self.mss {
            self.closed = true;
        }
    }

    /// Turns the held bytes into one GSO packet: lengths of the whole, a
    /// fresh IPv4 header checksum, and the TCP or UDP checksum left partial
    /// (the pseudo-header sum) for the kernel to treat as CHECKSUM_PARTIAL.
    fn finish(&mut self) -> VnetHdr {
        let len = self.buf.len();
        let tcp = self.ip_len();
        let udp = self.key.udp;
        let b = &mut self.buf;
        if self.key.v6 {
            b[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            b[10..12].fill(0);
            let sum = !fold(add(0, &b[..tcp]));
            b[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let (proto, csum_offset, gso_type) = match (udp, self.key.v6) {
            (true, _) => (IPPROTO_UDP, 6, GSO_UDP_L4),
            (false, true) => (IPPROTO_TCP, 16, GSO_TCPV6),
            (false, false) => (IPPROTO_TCP, 16, GSO_TCPV4),
        };
        if udp {
            b[tcp + 4..tcp + 6].copy_from_slice(&((len - tcp) as u16).to_be_bytes());
        }
        let sum = pseudo_header(b, proto, len - tcp);
        let at = tcp + csum_offset;
        b[at..at + 2].copy_from_slice(&fold(sum).to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: self.headers as u16,
            gso_size: self.mss as u16,
            csum_start: tcp as u16,
            csum_offset: csum_offset as u16,
        }
    }
}

/// The flow of any TCP or UDP packet, mergeable or not.
fn flow_key(p: &[u8]) -> Option<FlowKey> {
    let (v6, ip_len, proto) = match p.first()? >> 4 {
        4 => (false, usize::from(p[0] & 0x0f) * 4, *p.get(9)?),
        6 => (true, 40, *p.get(6)?),
        _ => return None,
    };
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || p.len() < ip_len + 4 {
        return None;
    }
    let mut addrs = [0u8; 32];
    if v6 {
        addrs.copy_from_slice(p.get(8..40)?);
    } else {
        addrs[..8].copy_from_slice(p.get(12..20)?);
    }
    let ports = p.get(ip_len..ip_len + 4)?.try_into().ok()?;
    Some(FlowKey {
        addrs,
        ports,
        v6,
        udp: proto == IPPROTO_UDP,
    })
}

/// A TCP segment or UDP datagram that may be merged: plain headers (no
/// IPv4 options or fragments, no IPv6 extension headers), some payload,
/// lengths that agree with the buffer; for TCP only ACK/PSH set, for UDP a
/// checksum (the kernel computes one for every datagram it cuts, so one
/// sent without could not come out as it went in).
fn parse(p: &[u8]) -> Option<Segment> {
    let key = flow_key(p)?;
    let v6 = key.v6;
    let ip_len = if v6 { 40 } else { 20 };
    if !v6 {
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        // IHL 5, and neither more-fragments nor an offset (DF is fine).
        if p[0] != 0x45 || total != p.len() || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
            return None;
        }
    } else if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
        return None;
    }
    let id = if v6 {
        0
    } else {
        u16::from_be_bytes([p[4], p[5]])
    };
    if key.udp {
        let udp = p.get(ip_len..ip_len + 8)?;
        let headers = ip_len + 8;
        if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != p.len() - ip_len
            || p.len() <= headers
            || udp[6..8] == [0, 0]
        {
            return None;
        }
        return Some(Segment {
            key,
            headers,
            seq: 0,
            id,
            flags: 0,
            payload: p.len() - headers,
        });
    }
    let tcp = p.get(ip_len..ip_len + 20)?;
    let tcp_len = usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    let headers = ip_len + tcp_len;
    if tcp_len < 20 || p.len() <= headers || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    Some(Segment {
        key,
        headers,
        seq: u32::from_be_bytes(tcp[4..8].try_into().ok()?),
        id,
        flags,
        payload: p.len() - headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::for_each_packet;

    use crate::offload::test_packets::tcp as segment_with_id;

    /// A valid TCP segment (full checksums) with `payload` bytes.
    fn segment(v6: bool, sport: u16, seq: u32, payload: &[u8], flags: u8, ts: u8) -> Vec<u8> {
        segment_with_id(v6, sport, seq, payload, flags, ts, (seq / 100) as u16)
    }

    fn run(packets: &[Vec<u8>]) -> Vec<(Option<VnetHdr>, Vec<u8>)> {
        let mut gro = Gro::new(true);
        let mut out = Vec::new();
        let mut sink = |h: Option<&VnetHdr>, p: &[u8]| out.push((h.copied(), p.to_vec()));
        for p in packets {
            gro.push(p, &mut sink);
        }
        gro.flush(&mut sink);
        out
    }

    /// What the kernel will see: each written packet cut back into segments
    /// by the offload code (which the TUN's own GSO matches).
    fn resegment(written: &[(Option<VnetHdr>, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut segs = Vec::new();
        for (h, p) in written {
            let mut p = p.clone();
            let mut scratch = vec![0u8; 65536];
            let h = h.unwrap_or_default();
            for_each_packet(&h, &mut p, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        }
        segs
    }

    fn datagram(v6: bool, sport: u16, len: usize, i: u16) -> Vec<u8> {
        let body: Vec<u8> = (0..len).map(|j| (usize::from(i) * 7 + j) as u8).collect();
        crate::offload::test_packets::udp(v6, sport, &body, 0xfff0u16.wrapping_add(i))
    }

    #[test]
    fn udp_trains_become_one_packet_each_and_cut_back_exactly() {
        for v6 in [false, true] {
            // Six full datagrams and a short one: one train. Then a full one
            // after the short: a new train (nothing follows a short one).
            let mut sent: Vec<Vec<u8>> = (0..6).map(|i| datagram(v6, 999, 1200, i)).collect();
            sent.push(datagram(v6, 999, 300, 6));
            sent.push(datagram(v6, 999, 1200, 7));
            let written = run(&sent);
            assert_eq!(written.len(), 2, "v6 {v6}");
            let h = written[0].0.unwrap();
            assert_eq!(
                (h.gso_type, h.gso_size, h.csum_offset, h.hdr_len),
                (GSO_UDP_L4, 1200, 6, if v6 { 48 } else { 28 })
            );
            assert_eq!(written[0].1.len(), h.hdr_len as usize + 6 * 1200 + 300);
            assert_eq!(written[1].0, None, "a lone datagram is written as it came");
            assert_eq!(resegment(&written), sent, "v6 {v6}");
        }
    }

    #[test]
    fn udp_is_left_alone_without_uso_and_ordered_with_its_flow() {
        let sent: Vec<Vec<u8>> = (0..4).map(|i| datagram(false, 5, 1000, i)).collect();
        let mut gro = Gro::new(false);
        let mut out = Vec::new();
        for p in &sent {
            gro.push(p, &mut |h: Option<&VnetHdr>, p: &[u8]| {
                out.push((h.copied(), p.to_vec()))
            });
        }
        assert!(out.iter().all(|(h, _)| h.is_none()));
        assert_eq!(out.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), sent);

        // With USO: a datagram without a checksum, or another size, is not
        // merged, but still leaves after what its flow held.
        let mut zero = datagram(false, 5, 1000, 4);
        zero[26..28].fill(0);
        let mut sent: Vec<Vec<u8>> = (0..3).map(|i| datagram(false, 5, 1000, i)).collect();
        sent.push(zero);
        sent.push(datagram(false, 6, 1000, 0));
        sent.push(datagram(false, 5, 1000, 5));
        let written = run(&sent);
        assert_eq!(resegment(&written), sent);
        assert_eq!(written.len(), 4);
    }

    #[test]
    fn udp_trains_stop_at_64_datagrams() {
        let sent: Vec<Vec<u8>> = (0..70).map(|i| datagram(true, 1, 100, i)).collect();
        let written = run(&sent);
        assert_eq!(written.len(), 2);
        assert_eq!(written[0].1.len(), 48 + 64 * 100);
        assert_eq!(resegment(&written), sent);
    }

    #[test]
    fn a_run_of_full_segments_becomes_one_packet_and_cuts_back_exactly() {
        for v6 in [false, true] {
            let mss = 1368;
            let mut sent = Vec::new();
            for i in 0..5u32 {
                let body: Vec<u8> = (0..mss).map(|j| (i as usize * 31 + j) as u8).collect();
                let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                sent.push(segment_with_id(
                    v6,
                    1000,
                    5000 + i * mss as u32,
                    &body,
                    flags,
                    9,
                    0xfffeu16.wrapping_add(i as u16),
                ));
            }
            let written = run(&sent);
            assert_eq!(written.len(), 1, "v6 {v6}");
            let (h, p) = &written[0];
            let h = h.unwrap();
            assert_eq!(h.gso_size as usize, mss);
            assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            assert_eq!(p.len(), h.hdr_len as usize + 5 * mss);
            let back = resegment(&written);
            // IPv4 IDs: the first segment's, counting up, as sent.
            assert_eq!(back, sent, "v6 {v6}");
        }
    }

    #[test]
    fn order_and_boundaries_are_kept() {
        let a = |seq: u32, n: usize, f: u8| segment(false, 1000, seq, &vec![1u8; n], f, 9);
        let b = |seq: u32, n: usize| segment(false, 2000, seq, &vec![2u8; n], TCP_ACK, 9);
        let pure_ack = segment(false, 1000, 0, &[], TCP_ACK, 9);
        let sent = vec![
            a(0, 100, TCP_ACK),
            b(0, 100),
            a(100, 100, TCP_ACK),
            // Short segment: ends the run.
            a(200, 50, TCP_ACK),
            a(250, 100, TCP_ACK),
            // Out of order: not merged.
            a(400, 100, TCP_ACK),
            // A pure ACK of flow A flushes what A held, then goes out.
            pure_ack.clone(),
            b(100, 100),
            // Different timestamp: not merged.
            segment(false, 2000, 200, &[2u8; 100], TCP_ACK, 10),
            // FIN: passes through after B's run.
            segment(false, 2000, 300, &[2u8; 10], TCP_ACK | 0x01, 10),
        ];
        let written = run(&sent);
        let back = resegment(&written);
        // Same packets; per flow, same order.
        let of = |v: &[Vec<u8>], port: u16| -> Vec<Vec<u8>> {
            v.iter()
                .filter(|p| u16::from_be_bytes([p[20], p[21]]) == port)
                .cloned()
                .collect()
        };
        assert_eq!(of(&back, 1000), of(&sent, 1000));
        assert_eq!(of(&back, 2000), of(&sent, 2000));
        assert_eq!(back.len(), sent.len());
        // The pure ACK left after A's first run was written.
        let ack_at = written.iter().position(|(_, p)| *p == pure_ack).unwrap();
        assert!(written[..ack_at]
            .iter()
            .any(|(h, p)| h.is_some() && u16::from_be_bytes([p[20], p[21]]) == 1000));
    }

    #[test]
    fn non_tcp_and_odd_packets_pass_through_unchanged() {
        let mut udp = segment(false, 1000, 0, &[5u8; 40], TCP_ACK, 9);
        udp[9] = 17;
        let mut opts = segment(false, 1000, 0, &[5u8; 40], TCP_ACK, 9);
        opts[0] = 0x46;
        let garbage = vec![0x45u8, 0, 0];
        let sent = vec![udp, opts, garbage, vec![], vec![0x60; 10]];
        let written = run(&sent);
        assert_eq!(written.len(), sent.len());
        for ((h, p), s) in written.iter().zip(&sent) {
            assert!(h.is_none());
            assert_eq!(p, s);
        }
    }

    #[test]
    fn super_packets_stay_within_64k() {
        let sent: Vec<Vec<u8>> = (0..60u32)
            .map(|i| segment_with_id(false, 1000, i * 1368, &[3u8; 1368], TCP_ACK, 9, i as u16))
            .collect();
        let written = run(&sent);
        assert!(written.len() >= 2);
        assert!(written.iter().all(|(_, p)| p.len() <= MAX_LEN));
        assert_eq!(resegment(&written), sent);
    }
}
