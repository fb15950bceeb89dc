//! One worker thread of the host data plane: it serves every tenant, each
//! through its own lane (the tenant's region, TUN queue, UDP socket, key
//! cache, statistics block, routes, staged packets: everything that is the
//! tenant's), one poll over every lane's sources per turn, then a turn of
//! each lane in round-robin order. A lane's turn reads at most one burst
//! from each of its sources, so one tenant's flood takes its share of a
//! turn and no more: the others are served on the same turn.
//!
//! A packet only ever meets the lane whose socket or queue it came from:
//! nothing looks a key, peer or route up across lanes.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::frame::parse_udp_frame;

use super::super::backend::{PortInbox, XdpPort};
use super::super::worker::{LaneReady, Parked, Worker};

/// Lanes handed to a worker thread by the supervisor (a tenant attached).
#[derive(Default)]
pub struct LaneInbox {
    new: Mutex<Vec<Worker>>,
}

impl LaneInbox {
    pub fn push(&self, lane: Worker) {
        self.new
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lane);
    }

    fn take(&self) -> Vec<Worker> {
        std::mem::take(&mut *self.new.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Where a round-robin turn over `n` lanes starts, and moves on to next
/// turn: every lane is first in turn once every `n` turns.
#[derive(Default, Debug)]
pub struct RoundRobin {
    start: usize,
}

impl RoundRobin {
    /// The order of this turn's lanes.
    pub fn order(&mut self, n: usize) -> impl Iterator<Item = usize> {
        let start = if n == 0 { 0 } else { self.start % n };
        self.start = start + 1;
        (0..n).map(move |k| (start + k) % n)
    }
}

/// How long a worker waits for any source when every lane is drained.
const POLL_MS: i32 = 5;
/// Frames taken off each AF_XDP ring per turn, for every lane together.
const RX_PER_TURN: usize = 256;

/// Which lane serves a frame to UDP port `dport`: the one whose tenant
/// listens there. None: no tenant of this worker has that port.
pub fn lane_for(ports: &[u16], dport: u16) -> Option<usize> {
    ports.iter().position(|&p| p == dport)
}

pub struct LaneSet {
    lanes: Vec<Worker>,
    inbox: Arc<LaneInbox>,
    rr: RoundRobin,
    fds: Vec<libc::pollfd>,
    more: bool,
    /// The AF_XDP sockets of this worker, shared by every lane: frames are
    /// parked in the lane of their destination port, and the ports are
    /// lent to each lane for its turn (its sends use them).
    ports: Vec<XdpPort>,
    port_inbox: Option<Arc<PortInbox>>,
    /// Frames for a port no tenant has (counted host-wide).
    unclaimed: Arc<AtomicU64>,
}

impl LaneSet {
    pub fn new(
        inbox: Arc<LaneInbox>,
        port_inbox: Option<Arc<PortInbox>>,
        unclaimed: Arc<AtomicU64>,
    ) -> LaneSet {
        LaneSet {
            lanes: Vec::new(),
            inbox,
            rr: RoundRobin::default(),
            fds: Vec::new(),
            more: false,
            ports: Vec::new(),
            port_inbox,
            unclaimed,
        }
    }

    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            for mut l in self.inbox.take() {
                l.set_demuxed();
                self.lanes.push(l);
            }
            if let Some(p) = self.port_inbox.as_ref().and_then(|i| i.take()) {
                self.ports.extend(p);
            }
            self.drop_stopped();
            for l in &mut self.lanes {
                l.before_turn();
            }
            let ready = self.wait();
            let mut more = self.demux();
            for i in self.rr.order(self.lanes.len()) {
                let lane = &mut self.lanes[i];
                std::mem::swap(&mut self.ports, lane.ports_mut());
                more |= lane.turn(LaneReady {
                    udp: ready[i].0,
                    tun: ready[i].1,
                });
                std::mem::swap(&mut self.ports, lane.ports_mut());
            }
            self.more = more;
        }
        for l in std::mem::take(&mut self.lanes) {
            self.give_back(l);
        }
    }

    /// A detached tenant's lane goes (with its socket and queue, its parked
    /// frames back to their rings); its state goes with the last of its
    /// lanes.
    fn drop_stopped(&mut self) {
        let mut i = 0;
        while i < self.lanes.len() {
            if self.lanes[i].stopping() {
                let l = self.lanes.swap_remove(i);
                self.give_back(l);
            } else {
                i += 1;
            }
        }
    }

    fn give_back(&mut self, mut lane: Worker) {
        for p in lane.take_parked() {
            if let Some(port) = self.ports.get_mut(p.port) {
                port.sock.recycle(p.held);
            }
        }
    }

    /// Takes frames off every AF_XDP ring and parks each in the lane of its
    /// destination port, as far as the lane has room. True when a ring
    /// may have more.
    fn demux(&mut self) -> bool {
        let ports_of: Vec<u16> = self.lanes.iter().map(|l| l.bound_port()).collect();
        let mut more = false;
        let lanes = &mut self.lanes;
        let unclaimed = &self.unclaimed;
        for (pi, p) in self.ports.iter_mut().enumerate() {
            let n = p.sock.rx_batch(RX_PER_TURN, |frame| {
                let Some((dport, src, local, at)) = parse_udp_frame(frame.data()).map(|u| {
                    let start = u.payload.as_ptr() as usize - frame.data().as_ptr() as usize;
                    (
                        u.dst.port(),
                        u.src,
                        Some(u.dst.ip()),
                        start..start + u.payload.len(),
                    )
                }) else {
                    unclaimed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let Some(i) = lane_for(&ports_of, dport) else {
                    unclaimed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if !lanes[i].room_to_park() {
                    return;
                }
                let off = frame.offset();
                let len = frame.len();
                lanes[i].park(Parked {
                    port: pi,
                    at: off + at.start..off + at.end,
                    frame: off..off + len,
                    held: frame.hold(),
                    src,
                    local,
                });
            });
            more |= n == RX_PER_TURN;
        }
        more
    }

    /// One poll over every lane's sources (not waiting when the last turn
    /// stopped at a budget with more to read).
    fn wait(&mut self) -> Vec<(bool, bool)> {
        self.fds.clear();
        for l in &self.lanes {
            let [udp, tun]: [RawFd; 2] = l.poll_fds();
            for fd in [udp, tun] {
                self.fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        let lane_fds = self.fds.len();
        for p in &self.ports {
            self.fds.push(libc::pollfd {
                fd: p.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = if self.more { 0 } else { POLL_MS };
        if self.fds.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(POLL_MS as u64));
            return Vec::new();
        }
        // SAFETY: poll reads and writes exactly the pollfds of the live
        // vector we pass, whose length we pass.
        let rc = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout,
            )
        };
        let readable = |fd: &libc::pollfd| fd.revents & (libc::POLLIN | libc::POLLERR) != 0;
        self.fds[..lane_fds]
            .chunks(2)
            .map(|p| {
                if rc < 0 {
                    // EINTR: look at everything rather than nothing.
                    (true, true)
                } else {
                    (
                        readable(&p[0]),
                        readable(&p[1]) || p[1].revents & libc::POLLHUP != 0,
                    )
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::shared::Shared;
    use crate::shm::stats::DropReason;
    use crate::shm::testutil::temp_region;
    use crate::tun::testns::NetNs;
    use crate::tun::Tun;
    use crate::udp::UdpSocketBatch;

    /// Tenant A's socket holds a flood, B's a few datagrams (transport
    /// messages for indices with no session: each is counted as dropped in
    /// its own tenant's region when its lane handles it). One round-robin
    /// turn handles all of B's and a bounded share of A's, leaving the
    /// rest of A's flood for later turns.
    #[test]
    fn a_flooded_lane_takes_its_budget_and_the_others_are_served_in_the_same_turn() {
        let Some(ns) = NetNs::new("lanes-budget") else {
            return;
        };
        let (a_done, b_done, a_more, b_more) = ns.run(|| {
            let mut lanes = Vec::new();
            let mut keep = Vec::new();
            let mut ports = Vec::new();
            for name in ["wslane0", "wslane1"] {
                let (region, dir) = temp_region(name);
                let (tun, q) = Tun::create(name).unwrap();
                let sock = UdpSocketBatch::bind_v4(0, false).unwrap();
                ports.push(sock.local_port());
                let shared = Arc::new(Shared::new(region, None));
                let mut lane = Worker::lane(0, shared.clone(), sock, q, false, 0);
                lane.set_demuxed();
                lanes.push(lane);
                keep.push((tun, dir, shared));
            }
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // Alternate lengths: no UDP_GRO train can merge two of them.
            let msg = |i: usize| {
                let mut m = vec![4u8, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
                m.resize(64 + i % 2, 0);
                m
            };
            const FLOOD: usize = 1200;
            for i in 0..FLOOD {
                tx.send_to(&msg(i), ("127.0.0.1", ports[0])).unwrap();
            }
            for i in 0..5 {
                tx.send_to(&msg(i), ("127.0.0.1", ports[1])).unwrap();
            }
            let mut rr = RoundRobin::default();
            let mut more = [false; 2];
            for i in rr.order(lanes.len()) {
                more[i] = lanes[i].turn(LaneReady {
                    udp: true,
                    tun: false,
                });
            }
            let done = |k: usize| {
                keep[k]
                    .2
                    .region
                    .worker_stats(0)
                    .figures()
                    .dropped(DropReason::UnknownIndex)
            };
            (done(0), done(1), more[0], more[1])
        });
        assert_eq!((b_done, b_more), (5, false));
        assert!(a_more, "A's flood must be left for later turns");
        assert!(
            a_done > 0 && a_done < 1200,
            "A handled {a_done} in one turn"
        );
    }

    #[test]
    fn a_frame_goes_to_the_lane_of_its_destination_port_only() {
        let ports = [51820, 51821, 40000];
        assert_eq!(lane_for(&ports, 51821), Some(1));
        assert_eq!(lane_for(&ports, 40000), Some(2));
        assert_eq!(lane_for(&ports, 51822), None);
        assert_eq!(lane_for(&[], 51820), None);
    }

    #[test]
    fn every_lane_is_served_once_per_turn_and_each_leads_in_turn() {
        let mut rr = RoundRobin::default();
        let turns: Vec<Vec<usize>> = (0..4).map(|_| rr.order(3).collect()).collect();
        assert_eq!(
            turns,
            [vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1], vec![0, 1, 2]]
        );
        // Lanes come and go between turns: the order stays a permutation.
        for n in [0, 1, 5, 2] {
            let mut o: Vec<usize> = rr.order(n).collect();
            o.sort();
            assert_eq!(o, (0..n).collect::<Vec<_>>());
        }
    }
}
