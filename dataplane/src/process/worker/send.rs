//! Send: packets read from the TUN, routed to their peer and laid out
//! for sealing (the kernel's send.c); `flush` seals and sends them.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::aead::AeadBatch;
use crate::consts::REKEY_AFTER_MESSAGES;
use crate::ip;
use crate::messages::{TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::offload;
use crate::shm::events::ToControl;
use crate::transport;

use crate::frame::FrameHeader;
use crate::netlink::{NextHopCache, Resolve};
use crate::process::backend::XdpPort;
use crate::shm::stats::DropReason;

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
            let mut scratch = std::mem::take(&mut self.segbuf);
            let cut = offload::for_each_packet(&hdr, &mut packet[..n], &mut scratch, |p| {
                self.send_packet(p)
            });
            if cut.is_err() {
                self.stats.drop_packet(DropReason::Malformed);
            }
            self.tunbuf = packet;
            self.segbuf = scratch;
            if self.tx_xdp_pending.len() >= BATCH || self.out_len >= UDP_FLUSH_AT {
                self.flush_out();
            }
        }
        self.flush_out();
        more
    }

    /// Routes one plain packet from the TUN to its peer and seals it, or
    /// stages it until a session exists.
    pub(super) fn send_packet(&mut self, packet: &[u8]) {
        let Some(dst) = ip::destination(packet) else {
            return self.stats.drop_packet(DropReason::Malformed);
        };
        let Some(peer) = self.routes.table.lookup(dst) else {
            return self.stats.drop_packet(DropReason::NoRoute);
        };
        if !self.seal_for(peer, packet) {
            self.shared.stage(peer, packet.to_vec());
            self.need_handshake(peer);
        }
        // AF_XDP frames are few; the UDP socket's messages wait for the end
        // of their super-packet (read_tun) unless far too many pile up.
        if self.tx_xdp_pending.len() >= BATCH || self.out_len >= 4 * UDP_FLUSH_AT {
            self.flush_out();
        }
    }

    /// Seals `packet` (empty: keepalive) for `peer` under its current key
    /// and queues it; false if there is no usable key (caller stages it).
    pub(super) fn seal_for(&mut self, peer: u32, packet: &[u8]) -> bool {
        let region = &self.shared.region;
        let p = region.peer(peer as usize);
        if !p.is_active() {
            return true; // peer removed: drop
        }
        let Some(slot) = p.current_key() else {
            return false;
        };
        let Some(key) = self.keys.get(region, slot as usize) else {
            return false;
        };
        let age = key.age_ns(self.now);
        if age >= REJECT_NS {
            return false;
        }
        let Some((dst, src)) = p.endpoint() else {
            p.note_drop();
            self.stats.drop_packet(DropReason::NoEndpoint);
            return true; // nowhere to send: the kernel drops too
        };
        let Some(counter) = region.key(slot as usize).reserve_counters(key.seq, 1) else {
            return false;
        };
        let mtu = region
            .header()
            .mtu
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(576) as usize;
        let data = !packet.is_empty();
        if !self.xdp.is_empty() {
            let port = region
                .header()
                .bound_port
                .load(std::sync::atomic::Ordering::Relaxed) as u16;
            let sent = xdp_send(
                &mut self.xdp,
                &mut self.nexthops,
                &mut self.tx_crypto,
                &mut self.tx_xdp_pending,
                key,
                counter,
                packet,
                mtu,
                dst,
                src,
                port,
            );
            if let Some(len) = sent {
                p.note_tx(len as u64, self.now, data);
                self.stats.tx(len);
                let stale = (key.initiator && age >= REKEY_NS) || counter >= REKEY_AFTER_MESSAGES;
                if stale {
                    self.need_handshake(peer);
                }
                return true;
            }
        }
        if self.out_len == self.out.len() {
            self.out.push(Out {
                dst,
                src,
                peer,
                buf: Vec::with_capacity(2048),
                job: None,
            });
        }
        let o = &mut self.out[self.out_len];
        o.dst = dst;
        o.src = src;
        o.peer = peer;
        o.buf.clear();
        o.buf.resize(transport::sealed_len(packet.len(), mtu), 0);
        let n = transport::write_unsealed(key.remote_index, counter, packet, mtu, &mut o.buf);
        debug_assert_eq!(n, Some(o.buf.len()));
        o.job = Some(self.tx_crypto.push(
            &key.send,
            counter,
            o.buf.len() - TRANSPORT_HEADER_LEN - TAG_LEN,
        ));
        p.note_tx(o.buf.len() as u64, self.now, data);
        self.stats.tx(o.buf.len());
        self.out_len += 1;
        let stale = (key.initiator && age >= REKEY_NS) || counter >= REKEY_AFTER_MESSAGES;
        if stale {
            self.need_handshake(peer);
        }
        true
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

/// Lays `packet` out as a transport message in an AF_XDP frame, after
/// room for its Ethernet, IP and UDP headers, and queues its sealing in
/// `crypto`; [`Worker::flush_out`] seals it, writes the headers and sends
/// it. `None` when the next hop is not resolved yet, the route leaves
/// through an interface we have no socket on, or no frame is free: the
/// caller then sends through the kernel's UDP socket (which also makes the
/// kernel resolve the neighbour for next time).
#[allow(clippy::too_many_arguments)]
pub(super) fn xdp_send(
    ports: &mut [XdpPort],
    nexthops: &mut NextHopCache,
    crypto: &mut AeadBatch,
    pending: &mut Vec<PendingFrame>,
    key: &crate::process::keycache::CachedKey,
    counter: u64,
    packet: &[u8],
    mtu: usize,
    dst: SocketAddr,
    sticky_src: Option<IpAddr>,
    src_port: u16,
) -> Option<usize> {
    let Ok(Resolve::Resolved(nh)) = nexthops.resolve(dst.ip()) else {
        return None;
    };
    let port = ports.iter().position(|p| p.ifindex == nh.ifindex)?;
    // A sticky source other than the route's own may be a secondary
    // address, or one that has vanished; only the kernel path can tell
    // (sendmsg with pktinfo fails for a non-local source), so those replies
    // take it.
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
    let header_len = header.header_len();
    let mut frame = ports[port].sock.tx_frame()?;
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
        port,
        frame: frame.hold(),
        header,
        header_len,
        len,
        job,
    });
    Some(len)
}
