//! Flush: seal every laid-out message as one batch and hand them to the
//! AF_XDP rings or the UDP socket (trains under GSO).

use std::os::fd::AsRawFd;

use crate::messages::TRANSPORT_HEADER_LEN;
use crate::shm::events::ToControl;
use crate::shm::layout::CAPTURE_TX;
use crate::udp::SendMsg;

use crate::frame::{write_udp_frame_with, UdpChecksum};
use crate::shm::stats::DropReason;

use super::Worker;

impl Worker {
    /// Messages laid out but not yet sealed and sent.
    pub(super) fn pending_out(&self) -> usize {
        self.out_len + self.tx_xdp_pending.len()
    }

    /// Seals every laid-out message as one batch, queues the AF_XDP ones on
    /// their sockets' tx rings and sends the rest with sendmmsg.
    pub(super) fn flush_out(&mut self) {
        self.tx_crypto.generate();
        let capture = if self.tx_xdp_pending.is_empty() {
            None
        } else {
            self.capture()
        };
        for t in self.tx_xdp_pending.drain(..) {
            let Some(port) = self.xdp.get_mut(t.port) else {
                // The ports are only ever away during receive_xdp, which
                // lays nothing out; a frame cannot be given back without
                // its socket, so it would show in the frame counts.
                self.stats.drop_packet(DropReason::TxFull);
                continue;
            };
            let ifindex = port.ifindex;
            let sock = &mut port.sock;
            let built = sock.held_buf(&t.frame).and_then(|buf| {
                let body =
                    buf.get_mut(t.header_len + TRANSPORT_HEADER_LEN..t.header_len + t.len)?;
                self.tx_crypto.seal(t.job, body).then_some(())?;
                // No UDP checksum over IPv4: the Poly1305 tag already covers
                // every byte, and skipping it saves a pass over each packet.
                let total = write_udp_frame_with(buf, &t.header, t.len, UdpChecksum::NoneOverIpv4)?;
                // Taken before the tx ring: one it refuses (counted as
                // TxFull) is in the capture but never on the wire.
                if let (Some((c, ring)), Some(frame)) = (&capture, buf.get(..total)) {
                    c.offer(ring, CAPTURE_TX, ifindex, frame);
                }
                Some(total)
            });
            let queued = match built {
                Some(total) => sock.transmit_held(t.frame, 0, total),
                None => Err(t.frame),
            };
            if let Err(frame) = queued {
                sock.recycle(frame);
                self.stats.drop_packet(DropReason::TxFull);
            }
        }
        for o in &mut self.out[..self.out_len] {
            if let Some(job) = o.job.take() {
                let sealed = o
                    .buf
                    .get_mut(TRANSPORT_HEADER_LEN..)
                    .is_some_and(|body| self.tx_crypto.seal(job, body));
                if !sealed {
                    // Laid out by seal_for for this very job, so this cannot
                    // happen; if it did, the plaintext must not leave.
                    debug_assert!(sealed, "laid out by seal_for for this job");
                    o.buf.clear();
                    self.stats.drop_packet(DropReason::SendFailed);
                }
            }
        }
        self.tx_crypto.clear();
        for p in &mut self.xdp {
            let _ = p.sock.flush();
        }
        if self.out_len == 0 {
            return;
        }
        // Which `out` entry each message is (unsealed ones are left out).
        let from: Vec<usize> = (0..self.out_len)
            .filter(|&i| !self.out[i].buf.is_empty())
            .collect();
        let msgs: Vec<SendMsg<'_>> = from
            .iter()
            .map(|&i| SendMsg {
                dst: self.out[i].dst,
                src: self.out[i].src,
                data: &self.out[i].buf,
            })
            .collect();
        let mut sent = 0;
        let mut stale_source = Vec::new();
        let mut stalls = 0;
        while sent < msgs.len() {
            let base = sent;
            match self
                .sock
                .send_batch(&msgs[sent..], |i| stale_source.push(base + i))
            {
                // msgs[sent] itself failed (unreachable, too big): drop it.
                Err(_) => {
                    self.stats.drop_packet(DropReason::SendFailed);
                    sent += 1;
                }
                Ok(n) => {
                    sent += n;
                    if n == 0 {
                        // Socket buffer full: wait for room, but not forever.
                        stalls += 1;
                        if stalls > 100 {
                            self.stats
                                .drop_packets(DropReason::TxFull, (msgs.len() - sent) as u64);
                            break;
                        }
                        let mut pfd = libc::pollfd {
                            fd: self.sock.as_raw_fd(),
                            events: libc::POLLOUT,
                            revents: 0,
                        };
                        // SAFETY: poll on one pollfd we own.
                        unsafe { libc::poll(&mut pfd, 1, 1) };
                    }
                }
            }
        }
        drop(msgs);
        let refused = self.sock.gso_fallbacks();
        if refused > self.gso_refusals_seen {
            if !self.gso_refusal_logged {
                self.gso_refusal_logged = true;
                log::warn!(
                    "worker {}: the kernel refused a UDP segmentation train; \
                     that destination now gets one datagram per message",
                    self.id
                );
            }
            self.stats.udp_gso_refused(refused - self.gso_refusals_seen);
            self.gso_refusals_seen = refused;
        }
        // A source address that vanished: tell control to forget it.
        for i in stale_source {
            let o = &self.out[from[i]];
            let ev = ToControl::EndpointMoved {
                peer: o.peer,
                endpoint: o.dst,
                local: None,
            };
            self.shared.notify(self.id, &ev);
        }
        self.out_len = 0;
    }
}
