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

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::super::worker::{LaneReady, Worker};

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

pub struct LaneSet {
    lanes: Vec<Worker>,
    inbox: Arc<LaneInbox>,
    rr: RoundRobin,
    fds: Vec<libc::pollfd>,
    more: bool,
}

impl LaneSet {
    pub fn new(inbox: Arc<LaneInbox>) -> LaneSet {
        LaneSet {
            lanes: Vec::new(),
            inbox,
            rr: RoundRobin::default(),
            fds: Vec::new(),
            more: false,
        }
    }

    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.lanes.extend(self.inbox.take());
            // A detached tenant's lane goes (with its socket and queue);
            // its state goes with the last of its lanes.
            self.lanes.retain(|l| !l.stopping());
            for l in &mut self.lanes {
                l.before_turn();
            }
            let ready = self.wait();
            let mut more = false;
            for i in self.rr.order(self.lanes.len()) {
                more |= self.lanes[i].turn(LaneReady {
                    udp: ready[i].0,
                    tun: ready[i].1,
                });
            }
            self.more = more;
        }
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
        self.fds
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
