//! Receive: datagrams and AF_XDP frames in, checked, opened as a batch,
//! coalesced and written to the TUN (the kernel's receive.c).

use std::net::{IpAddr, SocketAddr};

use crate::ip;
use crate::messages::{message_type, Message, MSG_TRANSPORT, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::offload::{self, VnetHdr};
use crate::shm::events::{ToControl, MAX_DATAGRAM};
use crate::shm::keys::slot_of_index;
use crate::shm::layout::CAPTURE_RX;
use crate::tun::TunQueue;

use crate::frame::parse_udp_frame;
use crate::process::stats::Stats;
use crate::shm::stats::DropReason;

use super::peer_batch::RxPeer;
use super::{Incoming, Worker, BATCH, LASTMINUTE_NS, REJECT_NS, REPORT_AGAIN_NS};

impl Worker {
    /// Datagrams on the UDP socket: everything on the UDP backend,
    /// handshakes (and transport from interfaces without XDP) on AF_XDP.
    /// True when it stopped with more to read.
    pub(super) fn receive_udp(&mut self) -> bool {
        for _ in 0..8 {
            let n = match self.sock.recv_batch(&mut self.rx) {
                Ok(n) => n,
                Err(_) => return false,
            };
            let mut rx = std::mem::take(&mut self.rx);
            let mut admitted = std::mem::take(&mut self.rx_udp_admitted);
            for (i, slot) in rx[..n].iter_mut().enumerate() {
                let (src, local) = (slot.src(), slot.local());
                // A slot holds one datagram, or a train coalesced by UDP_GRO.
                for at in slot.segments() {
                    if let Some(inc) = self.datagram(src, local, &mut slot.data_mut()[at.clone()]) {
                        admitted.push((i, at, inc));
                    }
                }
            }
            self.rx_crypto.generate();
            for (i, at, inc) in admitted.drain(..) {
                self.deliver(&inc, &mut rx[i].data_mut()[at]);
            }
            self.rx_crypto.clear();
            self.rx = rx;
            self.rx_udp_admitted = admitted;
            self.end_rx_batch();
            self.flush_out();
            if n < BATCH {
                return false;
            }
        }
        true
    }

    /// Frames the XDP program steered to our AF_XDP sockets: transport
    /// messages only, opened where they lie in the UMEM. A batch's frames
    /// are held while it is checked and opened together, then each returns
    /// to the fill ring. Looking at the rx ring costs no system call, so
    /// this runs every turn. True when it stopped with more to read.
    pub(super) fn receive_xdp(&mut self) -> bool {
        if self.demuxed {
            return self.receive_parked();
        }
        if self.xdp.is_empty() {
            return false;
        }
        let mut more = false;
        let mut ports = std::mem::take(&mut self.xdp);
        let mut admitted = std::mem::take(&mut self.rx_xdp_admitted);
        let capture = self.capture();
        for p in &mut ports {
            let mut full = true;
            let ifindex = p.ifindex;
            for _ in 0..8 {
                let n = p.sock.rx_batch(BATCH, |mut frame| {
                    if let Some((c, ring)) = &capture {
                        c.offer(ring, CAPTURE_RX, ifindex, frame.data());
                    }
                    let Some((src, local, at)) = parse_udp_frame(frame.data()).map(|u| {
                        let start = u.payload.as_ptr() as usize - frame.data().as_ptr() as usize;
                        (u.src, Some(u.dst.ip()), start..start + u.payload.len())
                    }) else {
                        return;
                    };
                    let Some(payload) = frame.data_mut().get_mut(at.clone()) else {
                        return;
                    };
                    if let Some(inc) = self.datagram(src, local, payload) {
                        // Offsets in the held buffer, which starts at the
                        // frame's headroom rather than at its data.
                        let off = frame.offset();
                        admitted.push((frame.hold(), off + at.start..off + at.end, inc));
                    }
                });
                self.rx_crypto.generate();
                for (held, at, inc) in admitted.drain(..) {
                    if let Some(data) = p.sock.held_buf(&held).and_then(|b| b.get_mut(at)) {
                        self.deliver(&inc, data);
                    }
                    p.sock.recycle(held);
                }
                self.rx_crypto.clear();
                if n < BATCH {
                    full = false;
                    break;
                }
            }
            more |= full;
        }
        self.xdp = ports;
        self.rx_xdp_admitted = admitted;
        self.end_rx_batch();
        more
    }

    /// One received datagram: a transport message that passes the checks
    /// before decryption is queued for the batch's open and returned, to be
    /// [`deliver`](Self::deliver)ed once the batch is opened; anything else
    /// is handled here.
    pub(super) fn datagram(
        &mut self,
        src: SocketAddr,
        local: Option<IpAddr>,
        data: &mut [u8],
    ) -> Option<Incoming> {
        match message_type(data) {
            Ok(MSG_TRANSPORT) => self.admit(src, local, data),
            Ok(_) if data.len() <= MAX_DATAGRAM => {
                self.stats.handshake();
                let ev = ToControl::Handshake {
                    from: src,
                    local,
                    datagram: data.to_vec(),
                };
                self.shared.notify(self.id, &ev);
                None
            }
            _ => {
                self.stats.drop_packet(DropReason::Malformed);
                None
            }
        }
    }

    /// The checks a transport message passes before it is worth opening:
    /// a live session for its receiver index, and a counter the replay
    /// window has not seen. Queues its open in the batch.
    pub(super) fn admit(
        &mut self,
        src: SocketAddr,
        local: Option<IpAddr>,
        data: &[u8],
    ) -> Option<Incoming> {
        let Ok(Message::Transport(t)) = Message::parse(data) else {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        };
        let (receiver, counter, text_len) = (t.receiver, t.counter, t.sealed.len() - TAG_LEN);
        let region = &self.shared.region;
        let slot = slot_of_index(receiver);
        let Some(key) = self.keys.by_index(region, receiver) else {
            self.stats.drop_packet(DropReason::UnknownIndex);
            return None;
        };
        let age = key.age_ns(self.now);
        if age >= REJECT_NS {
            self.stats.drop_packet(DropReason::KeyExpired);
            return None;
        }
        if !region.key(slot).replay(key.seq, counter, false) {
            self.stats.drop_packet(DropReason::Replay);
            return None;
        }
        let job = self.rx_crypto.push(&key.recv, counter, text_len);
        Some(Incoming {
            job,
            src,
            local,
            counter,
            receiver,
            slot,
            seq: key.seq,
            peer: key.peer,
            initiator: key.initiator,
            age,
        })
    }

    /// Opens an admitted transport message in place (`data` is the whole
    /// message, as it was when admitted) and writes its packet to the TUN.
    pub(super) fn deliver(&mut self, inc: &Incoming, data: &mut [u8]) {
        let wire_len = data.len();
        let Some(body) = data.get_mut(TRANSPORT_HEADER_LEN..) else {
            return self.stats.drop_packet(DropReason::Malformed);
        };
        let Ok(plain) = self.rx_crypto.open(inc.job, body) else {
            return self.stats.drop_packet(DropReason::DecryptFailed);
        };
        let Incoming {
            src,
            local,
            counter,
            receiver,
            slot,
            seq,
            peer,
            initiator,
            age,
            ..
        } = *inc;
        let region = &self.shared.region;
        if !region.key(slot).replay(seq, counter, true) {
            return self.stats.drop_packet(DropReason::Replay);
        }
        let p = region.peer(peer as usize);
        let is_data = !plain.is_empty();
        self.note_rx(peer, wire_len, is_data);
        self.stats.rx(wire_len);

        // The kernel's rule: remember both the peer's address and the local
        // address it wrote to, so replies leave from that address.
        let seen = (src, local);
        let known = p.endpoint();
        let moved = match known {
            Some((ep, known_local)) => ep != src || (local.is_some() && known_local != local),
            None => true,
        };
        let recent = self
            .reported_move
            .get(&peer)
            .is_some_and(|&(r, at)| r == seen && self.now.saturating_sub(at) < REPORT_AGAIN_NS);
        if moved && !recent {
            self.reported_move.insert(peer, (seen, self.now));
            self.shared.notify(
                self.id,
                &ToControl::EndpointMoved {
                    peer,
                    endpoint: src,
                    local,
                },
            );
        }
        if !initiator
            && p.current_key() != Some(slot as u32)
            && self.reported_confirm.get(&slot) != Some(&seq)
        {
            self.reported_confirm.insert(slot, seq);
            self.shared.notify(
                self.id,
                &ToControl::SessionConfirmed {
                    peer,
                    local_index: receiver,
                },
            );
        }
        if initiator && age >= LASTMINUTE_NS {
            self.need_handshake(peer);
        }
        if !is_data {
            return;
        }
        let Some(len) = ip::packet_len(plain) else {
            self.stats.drop_packet(DropReason::Malformed);
            return p.note_drop();
        };
        let Some(inner_src) = ip::source(&plain[..len]) else {
            self.stats.drop_packet(DropReason::Malformed);
            return p.note_drop();
        };
        if self.routes.table.lookup(inner_src) != Some(peer) {
            self.stats.drop_packet(DropReason::SourceNotAllowed);
            return p.note_drop();
        }
        let (tun, stats, scratch) = (&self.tun, &mut self.stats, &mut self.segbuf);
        let mut sink = |hdr: Option<&VnetHdr>, p: &[u8]| write_tun(tun, stats, scratch, hdr, p);
        match &mut self.gro {
            Some(gro) => gro.push(&plain[..len], &mut sink),
            None => sink(None, &plain[..len]),
        }
    }

    /// Adds one opened message to its peer's batch totals.
    fn note_rx(&mut self, peer: u32, bytes: usize, data: bool) {
        match &mut self.rx_peer {
            Some(r) if r.peer == peer => {
                r.bytes += bytes as u64;
                r.packets += 1;
                r.data |= data;
            }
            _ => {
                self.end_rx_peer();
                self.rx_peer = Some(RxPeer {
                    peer,
                    bytes: bytes as u64,
                    packets: 1,
                    data,
                });
            }
        }
    }

    fn end_rx_peer(&mut self) {
        if let Some(r) = self.rx_peer.take() {
            let p = self.shared.region.peer(r.peer as usize);
            p.note_rx_many(r.bytes, r.packets, self.now, r.data);
        }
    }

    /// The end of a receive batch: the peers' totals go to the region, and
    /// what coalescing still holds to the TUN.
    pub(super) fn end_rx_batch(&mut self) {
        self.end_rx_peer();
        self.flush_gro();
    }

    /// Writes out what coalescing still holds.
    fn flush_gro(&mut self) {
        let (tun, stats, scratch) = (&self.tun, &mut self.stats, &mut self.segbuf);
        if let Some(gro) = &mut self.gro {
            gro.flush(&mut |hdr: Option<&VnetHdr>, p: &[u8]| {
                write_tun(tun, stats, scratch, hdr, p)
            });
        }
    }
}

/// Writes a packet, or a coalesced super-packet, to the TUN. A kernel that
/// refuses the super-packet (some versions fail GSO writes with EINVAL)
/// gets its segments one by one instead: nothing is lost to an offload bug.
pub(super) fn write_tun(
    tun: &TunQueue,
    stats: &mut Stats,
    scratch: &mut [u8],
    hdr: Option<&VnetHdr>,
    packet: &[u8],
) {
    let Some(hdr) = hdr else {
        if tun.send(packet).is_err() {
            stats.drop_packet(DropReason::TxFull);
        }
        return;
    };
    if tun.send_offload(hdr, packet).is_ok() {
        return;
    }
    let mut whole = packet.to_vec();
    let cut = offload::for_each_packet(hdr, &mut whole, scratch, |seg| {
        if tun.send(seg).is_err() {
            stats.drop_packet(DropReason::TxFull);
        }
    });
    if cut.is_err() {
        stats.drop_packet(DropReason::Malformed);
    }
}
