//! Filling the region's statistics (`shm::stats`): each worker counts into
//! its own block through a [`Stats`] handle and publishes its AF_XDP
//! sockets' kernel counters from its loop (the sockets are the worker's;
//! the supervisor never sees them), and the supervisor copies the XDP
//! programs' counters about once a second.

use std::ops::Deref;

use crate::shm::layout::WorkerStats;
use crate::shm::stats::{self, XdpFigures, XskFigures};
use crate::shm::Region;
use crate::xdp::{XdpStats, XdpSteering};
use crate::xsk::XskSocket;

/// How often a worker asks the kernel for its sockets' figures.
const XSK_PUBLISH_NS: u64 = 1_000_000_000;

/// A worker's handle on its statistics block. Derefs to the block, whose
/// methods count (`rx`, `tx`, `handshake`, `drop_packet`, `drop_packets`):
/// each is a relaxed load and store on a cache line no other worker writes.
/// Exactly one handle per worker id: the block has a single writer.
pub struct Stats {
    block: &'static WorkerStats,
    next_xsk_ns: u64,
}

impl Stats {
    /// The handle of worker `worker` (`< MAX_WORKERS`) in `region`, which
    /// outlives the workers (the supervisor leaks its `Shared`).
    pub fn new(region: &'static Region, worker: usize) -> Stats {
        Stats {
            block: region.worker_stats(worker),
            next_xsk_ns: 0,
        }
    }

    /// Publishes the kernel's XDP_STATISTICS of `sockets`, summed, at most
    /// once per second: call it once per loop turn with the loop's clock;
    /// between publications it costs one comparison. The figures are the
    /// sockets' totals, so a turn that is skipped loses nothing.
    #[inline]
    pub fn publish_xsk_stats<'a>(
        &mut self,
        now_ns: u64,
        sockets: impl IntoIterator<Item = &'a XskSocket>,
    ) {
        if now_ns < self.next_xsk_ns {
            return;
        }
        self.next_xsk_ns = now_ns.saturating_add(XSK_PUBLISH_NS);
        let f = sum_xsk(sockets);
        if f.sockets > 0 {
            self.block.set_xsk(&f);
        }
    }
}

impl Deref for Stats {
    type Target = WorkerStats;
    #[inline(always)]
    fn deref(&self) -> &WorkerStats {
        self.block
    }
}

/// The kernel's figures of `sockets`, summed (a socket whose getsockopt
/// fails is left out).
fn sum_xsk<'a>(sockets: impl IntoIterator<Item = &'a XskSocket>) -> XskFigures {
    let mut f = XskFigures::default();
    for sock in sockets {
        let Ok(s) = sock.stats() else { continue };
        f.rx_dropped = f.rx_dropped.wrapping_add(s.rx_dropped);
        f.rx_invalid_descs = f.rx_invalid_descs.wrapping_add(s.rx_invalid_descs);
        f.rx_ring_full = f.rx_ring_full.wrapping_add(s.rx_ring_full);
        f.rx_fill_ring_empty = f
            .rx_fill_ring_empty
            .wrapping_add(s.rx_fill_ring_empty_descs);
        f.tx_invalid_descs = f.tx_invalid_descs.wrapping_add(s.tx_invalid_descs);
        f.tx_ring_empty = f.tx_ring_empty.wrapping_add(s.tx_ring_empty_descs);
        f.sockets += 1;
    }
    f
}

/// Supervisor: names the uplinks its XDP programs are attached to.
pub fn publish_uplinks(region: &Region, programs: &[XdpSteering]) {
    stats::set_uplinks(region, programs.iter().map(|p| (p.iface(), p.ifindex())));
}

/// At exit: the programs' last figures into the region, and a line each
/// in the log (the tests read the line).
pub fn publish_and_log_xdp(region: &Region, programs: &[XdpSteering]) {
    publish_xdp(region, programs);
    for p in programs {
        if let Ok(st) = p.stats() {
            log_xdp(p.iface(), &st);
        }
    }
}

fn log_xdp(iface: &str, st: &XdpStats) {
    log::info!(
        "XDP on {iface}: {} steered, {} passed, {} malformed, {} without socket, \
         {} not addressed to this host",
        st.steered,
        st.passed,
        st.malformed,
        st.no_socket,
        st.not_local
    );
}

/// One uplink's XDP program as its holder reports it to a process that
/// does not hold it (the host data plane's XDP attacher to its
/// supervisor): its name, index and counters, None where its counter map
/// could not be read this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkReport {
    pub iface: String,
    pub ifindex: u32,
    pub stats: Option<XdpStats>,
}

/// The holder's side: a report per program, in the programs' order.
pub fn report(programs: &[XdpSteering]) -> Vec<UplinkReport> {
    programs
        .iter()
        .map(|p| UplinkReport {
            iface: p.iface().to_owned(),
            ifindex: p.ifindex(),
            stats: p.stats().ok(),
        })
        .collect()
}

/// [`publish_uplinks`] and [`publish_xdp`] from reports: the uplinks'
/// names, then their counters (one not read keeps its last figures).
pub fn publish_reports(region: &Region, reports: &[UplinkReport]) {
    stats::set_uplinks(
        region,
        reports.iter().map(|r| (r.iface.as_str(), r.ifindex)),
    );
    for (i, r) in reports
        .iter()
        .take(crate::shm::layout::MAX_UPLINKS)
        .enumerate()
    {
        if let Some(s) = &r.stats {
            region.uplink(i).set_xdp(&figures(s));
        }
    }
}

/// [`publish_and_log_xdp`] from reports.
pub fn publish_and_log_reports(region: &Region, reports: &[UplinkReport]) {
    publish_reports(region, reports);
    for r in reports {
        if let Some(s) = &r.stats {
            log_xdp(&r.iface, s);
        }
    }
}

fn figures(s: &XdpStats) -> XdpFigures {
    XdpFigures {
        steered: s.steered,
        passed: s.passed,
        malformed: s.malformed,
        no_socket: s.no_socket,
    }
}

/// Supervisor: copies each program's counters (summed over CPUs) into the
/// region. A program whose map cannot be read keeps its last figures.
pub fn publish_xdp(region: &Region, programs: &[XdpSteering]) {
    for (i, p) in programs
        .iter()
        .take(crate::shm::layout::MAX_UPLINKS)
        .enumerate()
    {
        if let Ok(s) = p.stats() {
            region.uplink(i).set_xdp(&figures(&s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::testutil::temp_region;

    fn report(iface: &str, ifindex: u32, steered: Option<u64>) -> UplinkReport {
        UplinkReport {
            iface: iface.into(),
            ifindex,
            stats: steered.map(|steered| XdpStats {
                steered,
                passed: steered + 1,
                malformed: 2,
                no_socket: 3,
                not_local: 4,
            }),
        }
    }

    /// What the host's supervisor copies into every tenant's region from
    /// its attacher's reports: names in order, counters where read, the
    /// last ones kept where not.
    #[test]
    fn reports_reach_the_region_and_an_unread_map_keeps_its_figures() {
        let (r, _dir) = temp_region("reports");
        publish_reports(&r, &[report("u1", 4, Some(10)), report("u2", 7, Some(5))]);
        publish_reports(&r, &[report("u1", 4, Some(12)), report("u2", 7, None)]);
        let got = stats::uplinks(&r);
        let seen: Vec<(&str, u32, u64, u64)> = got
            .iter()
            .map(|u| (u.name.as_str(), u.ifindex, u.xdp.steered, u.xdp.passed))
            .collect();
        assert_eq!(seen, [("u1", 4, 12, 13), ("u2", 7, 5, 6)]);
        assert_eq!((got[0].xdp.malformed, got[0].xdp.no_socket), (2, 3));
    }
}
