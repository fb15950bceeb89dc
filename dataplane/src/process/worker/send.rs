//! Send: packets read from the TUN, routed to their peer and laid out
//! for sealing (the kernel's send.c); `flush` seals and sends them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use crate::aead::AeadBatch;
use crate::consts::REKEY_AFTER_MESSAGES;
use crate::ip;
use crate::messages::{TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::offload::{self, Piece};
use crate::shm::events::ToControl;
use crate::transport;

use crate::frame::FrameHeader;
use crate::netlink::{NextHopCache, Resolve};
use crate::process::backend::XdpPort;
use crate::shm::stats::DropReason;

use super::peer_batch::{TxPeer, TxRefused};
use super::{
    Out, PendingFrame, Worker, BATCH, NEED_INTERVAL_NS, REJECT_NS, REKEY_NS, TUN_BURST,
    UDP_FLUSH_AT,
};

impl Worker {
    /// Reads, seals and sends packets from the TUN queue. True when it
    /// stopped at the burst limit with more to read.
    pub(super) fn read_tun(&mut self) -> bool {
        let mut more = true;
        for _ in 0..TUN_BURST {
            let (hdr, n) = match self.tun.recv_offload(&mut self.tunbuf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The interface is gone: nothing left to serve.
                    self.shared
                        .stop
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    more = false;
                    break;
                }
            };
            let mut packet = std::mem::take(&mut self.tunbuf);
            self.burst_left = offload::packets_hint(&hdr, n);
            let cut = offload::for_each_piece(&hdr, &mut packet[..n], |p| self.send_packet(p));
            self.end_burst();
            if cut.is_err() {
                self.stats.drop_packet(DropReason::Malformed);
            }
            self.tunbuf = packet;
            self.flush_if_over(UDP_FLUSH_AT);
        }
        self.flush_out();
        more
    }

    /// Flushes when AF_XDP frames fill a batch or `udp_limit` messages for
    /// the UDP socket wait.
    pub(super) fn flush_if_over(&mut self, udp_limit: usize) {
        if self.tx_xdp_pending.len() >= BATCH || self.out_len >= udp_limit {
            self.flush_out();
        }
    }

    /// Routes one plain packet from the TUN to its peer and seals it, or
    /// stages it until a session exists.
    pub(super) fn send_packet(&mut self, packet: Piece<'_>) {
        let Some(dst) = ip::destination(packet.head) else {
            return self.stats.drop_packet(DropReason::Malformed);
        };
        // The segments of one super-packet share their destination.
        let peer = match self.tx_route {
            Some((ip, peer)) if ip == dst => peer,
            _ => {
                let Some(peer) = self.routes.table.lookup(dst) else {
                    return self.stats.drop_packet(DropReason::NoRoute);
                };
                self.tx_route = Some((dst, peer));
                peer
            }
        };
        if !self.seal_for(peer, packet) {
            self.shared.stage(peer, packet.to_vec());
            self.need_handshake(peer);
        }
        // AF_XDP frames are few; the UDP socket's messages wait for the end
        // of their super-packet (read_tun) unless far too many pile up.
        self.flush_if_over(4 * UDP_FLUSH_AT);
    }

    /// Seals `packet` (empty: keepalive) for `peer` under its current key
    /// and queues it; false if there is no usable key (caller stages it).
    pub(super) fn seal_for(&mut self, peer: u32, packet: Piece<'_>) -> bool {
        let reusable = self
            .tx_peer
            .as_ref()
            .is_some_and(|t| t.peer == peer && t.next < t.end);
        if !reusable {
            match self.begin_tx(peer) {
                Ok(()) => {}
                Err(TxRefused::NoSession) => return false,
                Err(TxRefused::Drop) => return true,
            }
        }
        self.burst_left = self.burst_left.saturating_sub(1);
        let Some(t) = self.tx_peer.as_mut() else {
            return false;
        };
        // The slot's key as cached (one atomic load): if control
        // republished the slot since the burst began, the counters
        // reserved belong to the old key, so start over.
        let key = match self.keys.get(&self.shared.region, t.slot) {
            Some(k) if k.seq == t.seq => k,
            _ => {
                self.tx_peer = None;
                return false;
            }
        };
        let counter = t.next;
        t.next += 1;
        let data = !packet.is_empty();
        t.data |= data;
        if let Some((port, header)) = &t.xdp {
            let sent = xdp_send(
                &mut self.xdp[*port],
                *port,
                header,
                &mut self.tx_crypto,
                &mut self.tx_xdp_pending,
                key,
                counter,
                packet,
                t.mtu,
            );
            if let Some(len) = sent {
                t.bytes += len as u64;
                t.packets += 1;
                self.stats.tx(len);
                return true;
            }
        }
        if self.out_len == self.out.len() {
            self.out.push(Out {
                dst: t.dst,
                src: t.src,
                peer,
                buf: Vec::with_capacity(2048),
                job: None,
            });
        }
        let o = &mut self.out[self.out_len];
        o.dst = t.dst;
        o.src = t.src;
        o.peer = peer;
        // Every byte is written below (the tag by the seal): only a longer
        // message than the buffer's last needs filling.
        o.buf.resize(transport::sealed_len(packet.len(), t.mtu), 0);
        let n = transport::write_unsealed(key.remote_index, counter, packet, t.mtu, &mut o.buf);
        debug_assert_eq!(n, Some(o.buf.len()));
        o.job = Some(self.tx_crypto.push(
            &key.send,
            counter,
            o.buf.len() - TRANSPORT_HEADER_LEN - TAG_LEN,
        ));
        t.bytes += o.buf.len() as u64;
        t.packets += 1;
        self.stats.tx(o.buf.len());
        self.out_len += 1;
        true
    }

    /// Reads what sealing for `peer` needs from the region and reserves
    /// counters for the rest of the burst.
    fn begin_tx(&mut self, peer: u32) -> Result<(), TxRefused> {
        self.end_tx_peer();
        let region = &self.shared.region;
        let p = region.peer(peer as usize);
        if !p.is_active() {
            return Err(TxRefused::Drop); // peer removed
        }
        let slot = p.current_key().ok_or(TxRefused::NoSession)? as usize;
        let key = self.keys.get(region, slot).ok_or(TxRefused::NoSession)?;
        let age = key.age_ns(self.now);
        if age >= REJECT_NS {
            return Err(TxRefused::NoSession);
        }
        let Some((dst, src)) = p.endpoint() else {
            p.note_drop();
            self.stats.drop_packet(DropReason::NoEndpoint);
            return Err(TxRefused::Drop); // nowhere to send: the kernel drops too
        };
        let n = self.burst_left.max(1);
        let first = region
            .key(slot)
            .reserve_counters(key.seq, n)
            .ok_or(TxRefused::NoSession)?;
        let header = region.header();
        let mtu = header.mtu.load(Ordering::Relaxed).max(576) as usize;
        let xdp = if self.xdp.is_empty() {
            None
        } else {
            let port = header.bound_port.load(Ordering::Relaxed) as u16;
            xdp_route(&self.xdp, &mut self.nexthops, dst, src, port)
        };
        let stale = (key.initiator && age >= REKEY_NS) || first + n > REKEY_AFTER_MESSAGES;
        self.tx_peer = Some(TxPeer {
            peer,
            slot,
            seq: key.seq,
            dst,
            src,
            mtu,
            next: first,
            end: first + n,
            xdp,
            bytes: 0,
            packets: 0,
            data: false,
            stale,
        });
        Ok(())
    }

    /// Adds the burst's totals to its peer's counters and asks for a rekey
    /// if its key is due.
    fn end_tx_peer(&mut self) {
        let Some(t) = self.tx_peer.take() else {
            return;
        };
        if t.packets != 0 {
            let p = self.shared.region.peer(t.peer as usize);
            p.note_tx_many(t.bytes, t.packets, self.now, t.data);
        }
        if t.stale {
            self.need_handshake(t.peer);
        }
    }

    /// The end of a super-packet (or of a flush of staged packets): what was
    /// read for it from the region is not trusted beyond it.
    pub(super) fn end_burst(&mut self) {
        self.end_tx_peer();
        self.tx_route = None;
        self.burst_left = 0;
    }

    pub(super) fn need_handshake(&mut self, peer: u32) {
        let last = self.last_need.get(&peer).copied().unwrap_or(0);
        if last != 0 && self.now.saturating_sub(last) < NEED_INTERVAL_NS {
            return;
        }
        self.last_need.insert(peer, self.now);
        self.shared
            .notify(self.id, &ToControl::HandshakeNeeded { peer });
    }
}

/// The AF_XDP port and frame headers for messages to `dst`: `None` when
/// the next hop is not resolved yet, the route leaves through an interface
/// we have no socket on, or the reply must leave from a sticky source other
/// than the route's own (a secondary address, or one that has vanished:
/// only the kernel path can tell, since sendmsg with pktinfo fails for a
/// non-local source). Those go through the kernel's UDP socket, which also
/// makes the kernel resolve the neighbour for next time.
fn xdp_route(
    ports: &[XdpPort],
    nexthops: &mut NextHopCache,
    dst: SocketAddr,
    sticky_src: Option<IpAddr>,
    src_port: u16,
) -> Option<(usize, FrameHeader)> {
    let Ok(Resolve::Resolved(nh)) = nexthops.resolve(dst.ip()) else {
        return None;
    };
    let port = ports.iter().position(|p| p.ifindex == nh.ifindex)?;
    if sticky_src.is_some_and(|ip| ip != nh.src_ip) {
        return None;
    }
    let header = FrameHeader {
        src_mac: nh.src_mac,
        dst_mac: nh.dst_mac,
        vlan: None,
        src: SocketAddr::new(nh.src_ip, src_port),
        dst,
    };
    Some((port, header))
}

/// Lays `packet` out as a transport message in a frame of `port`, after
/// room for its headers, and queues its sealing in `crypto`;
/// [`Worker::flush_out`] seals it, writes the headers and sends it. `None`
/// when no frame is free (the caller sends through the UDP socket).
#[allow(clippy::too_many_arguments)]
fn xdp_send(
    port: &mut XdpPort,
    port_index: usize,
    header: &FrameHeader,
    crypto: &mut AeadBatch,
    pending: &mut Vec<PendingFrame>,
    key: &crate::process::keycache::CachedKey,
    counter: u64,
    packet: Piece<'_>,
    mtu: usize,
) -> Option<usize> {
    let header_len = header.header_len();
    let mut frame = port.sock.tx_frame()?;
    let buf = frame.buf();
    let len = transport::write_unsealed(
        key.remote_index,
        counter,
        packet,
        mtu,
        buf.get_mut(header_len..)?,
    )?;
    let job = crypto.push(&key.send, counter, len - TRANSPORT_HEADER_LEN - TAG_LEN);
    pending.push(PendingFrame {
        port: port_index,
        frame: frame.hold(),
        header: *header,
        header_len,
        len,
        job,
    });
    Some(len)
}
