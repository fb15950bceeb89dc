//! The worker's loop: wait for a source, then receive, send, obey control.

use std::os::fd::AsRawFd;

use crate::shm::monotonic_ns;

use super::{Ready, Worker, POLL_MS};

impl Worker {
    pub fn run(mut self) {
        while !self.shared.stopping() {
            self.before_turn();
            let ready = self.wait();
            self.turn(ready);
        }
    }

    /// Takes what the supervisor handed over since the last turn.
    pub(in crate::process) fn before_turn(&mut self) {
        if let Some(s) = self
            .new_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.sock = s;
            self.gso_refusals_seen = 0;
        }
        // Appended between turns: nothing pending (nor the burst cache,
        // emptied at the end of every turn) refers to a port by an
        // index that could move.
        if let Some(ports) = self.xdp_inbox.as_ref().and_then(|i| i.take()) {
            self.xdp.extend(ports);
        }
    }

    /// One turn over what `ready` says is readable: each source read up to
    /// its burst limit (the per-turn budget that keeps one tenant's flood
    /// from starving the others on a host data plane). Returns whether a
    /// source stopped at its limit with more to read.
    pub(in crate::process) fn turn(&mut self, ready: Ready) -> bool {
        self.now = monotonic_ns();
        self.stats
            .publish_xsk_stats(self.now, self.xdp.iter().map(|p| &p.sock));
        if self.routes.seq != crate::shm::allowed::table_seq(&self.shared.region) {
            self.routes = self.shared.routes();
        }
        let g = self
            .shared
            .addr_gen
            .load(std::sync::atomic::Ordering::Acquire);
        if g != self.addr_gen {
            self.addr_gen = g;
            self.nexthops.invalidate_all();
        }
        // Each source is read only when poll says it has something:
        // a read that ends in EAGAIN is a wasted system call, and on the
        // AF_XDP backend the UDP socket carries only handshakes.
        let mut more = self.receive_xdp();
        if ready.udp {
            more |= self.receive_udp();
        }
        if ready.tun {
            more |= self.read_tun();
        }
        self.commands();
        // Nothing read from the region outlives a loop turn.
        self.end_burst();
        self.flush_out();
        // Events that found the ring full, before the next turn's.
        self.shared.retry_events(self.id);
        self.more = more;
        more
    }

    /// The lane's UDP socket and TUN queue, for a poll over every lane.
    pub(in crate::process) fn poll_fds(&self) -> [std::os::fd::RawFd; 2] {
        [self.sock.as_raw_fd(), self.tun.as_raw_fd()]
    }

    /// Whether the lane's tenant was told to stop (detached).
    pub(in crate::process) fn stopping(&self) -> bool {
        self.shared.stopping()
    }

    /// Waits for any source to be readable (not at all when the last turn
    /// stopped at a burst limit with more to read).
    pub(super) fn wait(&self) -> Ready {
        let mut fds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; 2 + 8];
        fds[0].fd = self.sock.as_raw_fd();
        fds[1].fd = self.tun.as_raw_fd();
        let mut n = 2;
        for p in self.xdp.iter().take(fds.len() - 2) {
            fds[n].fd = p.sock.as_raw_fd();
            n += 1;
        }
        let timeout = if self.more { 0 } else { POLL_MS };
        // SAFETY: poll reads and writes exactly the `n` pollfds we pass.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout) };
        if rc < 0 {
            // EINTR: look at everything rather than nothing.
            return Ready {
                udp: true,
                tun: true,
            };
        }
        let readable = |fd: &libc::pollfd| fd.revents & (libc::POLLIN | libc::POLLERR) != 0;
        Ready {
            udp: readable(&fds[0]),
            tun: readable(&fds[1]) || fds[1].revents & libc::POLLHUP != 0,
        }
    }
}
