//! A host data plane's lane on the AF_XDP path: its worker thread takes the
//! frames off the AF_XDP rings it shares among tenants, demultiplexes them
//! by UDP destination port (each tenant's listen port) and parks each in
//! the lane of that port's tenant (`process::host::lanes`). On its turn,
//! the lane opens what it has parked a batch at a time, with its own keys
//! only: a frame is never looked at by another tenant's lane.
//!
//! A lane parks at most [`PARK_CAP`] frames: the frames are the UMEM's, and
//! a tenant flooded beyond its share must not hold the frames every other
//! tenant receives into. What does not fit is dropped and counted as the
//! tenant's own (TxFull: it found no room).

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use crate::shm::layout::CAPTURE_RX;
use crate::shm::stats::DropReason;
use crate::xsk::HeldFrame;

use super::super::backend::XdpPort;
use super::{Worker, BATCH};

/// Frames one lane may hold between two of its turns.
pub const PARK_CAP: usize = 8 * BATCH;

/// A frame taken off a shared AF_XDP ring for this lane.
pub struct Parked {
    /// Index of its socket among the worker thread's ports.
    pub port: usize,
    pub held: HeldFrame,
    /// The transport message, in the held frame's buffer.
    pub at: Range<usize>,
    /// The whole frame there, for the tenant's packet capture.
    pub frame: Range<usize>,
    pub src: SocketAddr,
    pub local: Option<IpAddr>,
}

impl Worker {
    /// Makes this lane take its AF_XDP frames from what its worker thread
    /// parks, instead of reading the rings itself.
    pub(in crate::process) fn set_demuxed(&mut self) {
        self.demuxed = true;
    }

    /// The UDP port this lane's tenant listens on.
    pub(in crate::process) fn bound_port(&self) -> u16 {
        self.shared
            .region
            .header()
            .bound_port
            .load(std::sync::atomic::Ordering::Relaxed) as u16
    }

    /// Whether another frame fits; if not, the one that does not is
    /// counted as the tenant's drop.
    pub(in crate::process) fn room_to_park(&mut self) -> bool {
        if self.parked.len() < PARK_CAP {
            return true;
        }
        self.stats.drop_packet(DropReason::TxFull);
        false
    }

    pub(in crate::process) fn park(&mut self, p: Parked) {
        self.parked.push(p);
    }

    /// What is still parked (a lane that goes gives its frames back).
    pub(in crate::process) fn take_parked(&mut self) -> Vec<Parked> {
        std::mem::take(&mut self.parked)
    }

    /// The worker thread's AF_XDP ports, lent to the lane for its turn (its
    /// sends lay frames out in them and flush them).
    pub(in crate::process) fn ports_mut(&mut self) -> &mut Vec<XdpPort> {
        &mut self.xdp
    }

    /// Opens the parked frames a batch at a time, up to [`PARK_CAP`] per
    /// turn (all there can be). The ports are lent to the lane by then.
    pub(super) fn receive_parked(&mut self) -> bool {
        if self.parked.is_empty() {
            return false;
        }
        let mut ports = std::mem::take(&mut self.xdp);
        let mut parked = std::mem::take(&mut self.parked);
        let mut admitted = std::mem::take(&mut self.rx_parked_admitted);
        // The tenant's own capture: it sees its own frames only.
        let capture = self.capture();
        while !parked.is_empty() {
            let take = parked.len().min(BATCH);
            for p in parked.drain(..take) {
                let Some(port) = ports.get_mut(p.port) else {
                    // Not one of this thread's ports: it cannot be given
                    // back, and must not be read.
                    continue;
                };
                if let Some((c, ring)) = &capture {
                    let ifindex = port.ifindex;
                    if let Some(f) = port
                        .sock
                        .held_buf(&p.held)
                        .and_then(|b| b.get(p.frame.clone()))
                    {
                        c.offer(ring, CAPTURE_RX, ifindex, f);
                    }
                }
                let data = port
                    .sock
                    .held_buf(&p.held)
                    .and_then(|b| b.get_mut(p.at.clone()));
                match data.and_then(|d| self.datagram(p.src, p.local, d)) {
                    Some(inc) => admitted.push((p.port, p.held, p.at, inc)),
                    None => {
                        port.sock.recycle(p.held);
                    }
                }
            }
            self.rx_crypto.generate();
            for (pi, held, at, inc) in admitted.drain(..) {
                let sock = &mut ports[pi].sock;
                if let Some(data) = sock.held_buf(&held).and_then(|b| b.get_mut(at)) {
                    self.deliver(&inc, data);
                }
                sock.recycle(held);
            }
            self.rx_crypto.clear();
        }
        self.xdp = ports;
        self.parked = parked;
        self.rx_parked_admitted = admitted;
        self.end_rx_batch();
        false
    }
}
