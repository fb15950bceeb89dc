//! Statistics in the region beyond the per-peer counters: one block per
//! worker (packets and bytes, drops by reason, its AF_XDP sockets' kernel
//! counters) and one entry per uplink (the XDP program's counters). The
//! control process reads them for its metrics endpoint.
//!
//! A worker block has exactly one writer, the worker it belongs to, so an
//! increment is a relaxed load and a relaxed store (two plain moves), not a
//! locked read-modify-write: readers may see a count a moment late, never a
//! torn or lost one. Nothing else may write a block while its worker runs;
//! the supervisor resets them before its workers start ([`reset`]).
//!
//! Worker and uplink figures count from the start of the running data plane
//! (a restarted one starts from zero, as the kernel's counters of its fresh
//! sockets and program do); per-peer figures live in the peer slots and
//! count from the peer's creation, as `wg show` does.

use core::sync::atomic::{AtomicU64, Ordering};

use super::layout::{UplinkStats, WorkerStats, DROP_REASONS, MAX_UPLINKS, MAX_WORKERS};
use super::{seqlock, Region};

/// Why a worker dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A transport message whose counter the replay window refused.
    Replay = 0,
    /// A transport message that did not authenticate under its key.
    DecryptFailed = 1,
    /// A transport message for a receiver index with no session.
    UnknownIndex = 2,
    /// A message for (or a packet to send under) a session past its lifetime.
    KeyExpired = 3,
    /// A decrypted packet whose inner source the peer's AllowedIPs do not cover.
    SourceNotAllowed = 4,
    /// A datagram or packet that does not parse (bad type, length, IP header).
    Malformed = 5,
    /// A packet for a peer with no known endpoint.
    NoEndpoint = 6,
    /// A packet that found no room: the AF_XDP tx ring, the UDP socket
    /// buffer or the TUN queue stayed full.
    TxFull = 7,
    /// A packet from the TUN whose destination no peer's AllowedIPs cover.
    NoRoute = 8,
    /// A datagram the kernel refused to send (unreachable, too big).
    SendFailed = 9,
    /// A handshake message for control that found the worker's event ring
    /// full (a flood control cannot keep up with): the peer sends it again.
    EventRingFull = 10,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::Replay,
        DropReason::DecryptFailed,
        DropReason::UnknownIndex,
        DropReason::KeyExpired,
        DropReason::SourceNotAllowed,
        DropReason::Malformed,
        DropReason::NoEndpoint,
        DropReason::TxFull,
        DropReason::NoRoute,
        DropReason::SendFailed,
        DropReason::EventRingFull,
    ];

    /// The label value the metrics endpoint uses.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Replay => "replay",
            DropReason::DecryptFailed => "decrypt_failed",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::KeyExpired => "key_expired",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::Malformed => "malformed",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::TxFull => "tx_full",
            DropReason::NoRoute => "no_route",
            DropReason::SendFailed => "send_failed",
            DropReason::EventRingFull => "event_ring_full",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Single-writer increment: see the module docs.
#[inline(always)]
fn add(c: &AtomicU64, v: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

/// The kernel's AF_XDP figures of a worker's sockets, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskFigures {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_invalid_descs: u64,
    pub tx_ring_empty: u64,
    /// How many sockets were summed.
    pub sockets: u64,
}

/// A copy of one worker block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerFigures {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub handshake_rx: u64,
    pub drops: [u64; DROP_REASONS],
    pub xsk: XskFigures,
    pub events_deferred: u64,
    pub events_lost: u64,
    pub udp_gso_refusals: u64,
}

impl WorkerFigures {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
}

impl WorkerStats {
    /// Worker: a transport message of `bytes` (UDP payload) authenticated.
    #[inline]
    pub fn rx(&self, bytes: usize) {
        add(&self.rx_packets, 1);
        add(&self.rx_bytes, bytes as u64);
    }

    /// Worker: a sealed transport message of `bytes` went to the wire.
    #[inline]
    pub fn tx(&self, bytes: usize) {
        add(&self.tx_packets, 1);
        add(&self.tx_bytes, bytes as u64);
    }

    /// Worker: a handshake message was passed to control.
    #[inline]
    pub fn handshake(&self) {
        add(&self.handshake_rx, 1);
    }

    /// Worker: one packet dropped for `reason`.
    #[inline]
    pub fn drop_packet(&self, reason: DropReason) {
        add(&self.drops[reason.index()], 1);
    }

    /// Worker: `n` packets dropped for `reason`.
    #[inline]
    pub fn drop_packets(&self, reason: DropReason, n: u64) {
        add(&self.drops[reason.index()], n);
    }

    /// Worker: an event for control was kept to be sent again.
    #[inline]
    pub fn event_deferred(&self) {
        add(&self.events_deferred, 1);
    }

    /// Worker: an event for control was lost (too many waiting).
    #[inline]
    pub fn event_lost(&self) {
        add(&self.events_lost, 1);
    }

    /// Worker: its UDP socket had `n` more GSO trains refused.
    #[inline]
    pub fn udp_gso_refused(&self, n: u64) {
        add(&self.udp_gso_refusals, n);
    }

    /// Worker: its sockets' kernel figures (absolute values, not increments).
    pub fn set_xsk(&self, x: &XskFigures) {
        self.xsk_rx_dropped.store(x.rx_dropped, Ordering::Relaxed);
        self.xsk_rx_invalid_descs
            .store(x.rx_invalid_descs, Ordering::Relaxed);
        self.xsk_rx_ring_full
            .store(x.rx_ring_full, Ordering::Relaxed);
        self.xsk_rx_fill_ring_empty
            .store(x.rx_fill_ring_empty, Ordering::Relaxed);
        self.xsk_tx_invalid_descs
            .store(x.tx_invalid_descs, Ordering::Relaxed);
        self.xsk_tx_ring_empty
            .store(x.tx_ring_empty, Ordering::Relaxed);
        self.xsk_sockets.store(x.sockets, Ordering::Relaxed);
    }

    /// Anyone: a copy of the block (each figure read once, relaxed).
    pub fn figures(&self) -> WorkerFigures {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerFigures {
            rx_packets: l(&self.rx_packets),
            rx_bytes: l(&self.rx_bytes),
            tx_packets: l(&self.tx_packets),
            tx_bytes: l(&self.tx_bytes),
            handshake_rx: l(&self.handshake_rx),
            drops: core::array::from_fn(|i| l(&self.drops[i])),
            xsk: XskFigures {
                rx_dropped: l(&self.xsk_rx_dropped),
                rx_invalid_descs: l(&self.xsk_rx_invalid_descs),
                rx_ring_full: l(&self.xsk_rx_ring_full),
                rx_fill_ring_empty: l(&self.xsk_rx_fill_ring_empty),
                tx_invalid_descs: l(&self.xsk_tx_invalid_descs),
                tx_ring_empty: l(&self.xsk_tx_ring_empty),
                sockets: l(&self.xsk_sockets),
            },
            events_deferred: l(&self.events_deferred),
            events_lost: l(&self.events_lost),
            udp_gso_refusals: l(&self.udp_gso_refusals),
        }
    }

    fn zero(&self) {
        for c in [
            &self.rx_packets,
            &self.rx_bytes,
            &self.tx_packets,
            &self.tx_bytes,
            &self.handshake_rx,
            &self.events_deferred,
            &self.events_lost,
            &self.udp_gso_refusals,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in &self.drops {
            c.store(0, Ordering::Relaxed);
        }
        self.set_xsk(&XskFigures::default());
    }
}

/// The XDP program's counters on one uplink, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpFigures {
    pub steered: u64,
    pub passed: u64,
    pub malformed: u64,
    pub no_socket: u64,
}

/// One entry of the uplink table as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkFigures {
    pub name: String,
    pub ifindex: u32,
    pub xdp: XdpFigures,
}

/// IFNAMSIZ: an interface name and its NUL.
const NAME_LEN: usize = 16;

impl UplinkStats {
    /// Supervisor: which interface this entry describes (names longer than
    /// the kernel allows are cut).
    pub fn set_identity(&self, name: &str, ifindex: u32) {
        let b = name.as_bytes();
        let b = &b[..b.len().min(NAME_LEN)];
        seqlock::write(&self.seq, || {
            seqlock::store_bytes(&self.name, b);
            self.ifindex.store(ifindex, Ordering::Relaxed);
        });
    }

    /// Supervisor: the program's current counters.
    pub fn set_xdp(&self, x: &XdpFigures) {
        self.steered.store(x.steered, Ordering::Relaxed);
        self.passed.store(x.passed, Ordering::Relaxed);
        self.malformed.store(x.malformed, Ordering::Relaxed);
        self.no_socket.store(x.no_socket, Ordering::Relaxed);
    }

    /// Anyone: the entry; `None` if a writer died mid-update.
    pub fn figures(&self) -> Option<UplinkFigures> {
        let ((raw, ifindex), _) = seqlock::read(&self.seq, || {
            let mut raw = [0u8; NAME_LEN];
            seqlock::load_bytes(&self.name, &mut raw);
            (raw, self.ifindex.load(Ordering::Relaxed))
        })?;
        let end = raw.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Some(UplinkFigures {
            name: String::from_utf8_lossy(&raw[..end]).into_owned(),
            ifindex,
            xdp: XdpFigures {
                steered: l(&self.steered),
                passed: l(&self.passed),
                malformed: l(&self.malformed),
                no_socket: l(&self.no_socket),
            },
        })
    }
}

/// Supervisor, before its workers start: every worker block and the uplink
/// table from zero (the figures of a previous data plane are void).
pub fn reset(region: &Region) {
    region.header().uplinks.store(0, Ordering::Release);
    for w in 0..MAX_WORKERS {
        region.worker_stats(w).zero();
    }
    for i in 0..MAX_UPLINKS {
        let u = region.uplink(i);
        u.set_identity("", 0);
        u.set_xdp(&XdpFigures::default());
    }
}

/// Supervisor: names the uplinks the XDP program is attached to (at most
/// MAX_UPLINKS; the rest go uncounted) and publishes how many there are.
pub fn set_uplinks<'a>(region: &Region, uplinks: impl IntoIterator<Item = (&'a str, u32)>) {
    let mut n = 0;
    for (i, (name, ifindex)) in uplinks.into_iter().take(MAX_UPLINKS).enumerate() {
        region.uplink(i).set_identity(name, ifindex);
        n = i + 1;
    }
    region.header().uplinks.store(n as u32, Ordering::Release);
}

/// Anyone: the uplink table.
pub fn uplinks(region: &Region) -> Vec<UplinkFigures> {
    let n = (region.header().uplinks.load(Ordering::Acquire) as usize).min(MAX_UPLINKS);
    (0..n).filter_map(|i| region.uplink(i).figures()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_region;
    use super::*;

    #[test]
    fn reasons_are_indexed_in_order_with_unique_names() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DROP_REASONS);
    }

    #[test]
    fn worker_counters_add_up_and_reset() {
        let (r, _dir) = temp_region("wstats");
        let w = r.worker_stats(3);
        w.rx(148);
        w.rx(32);
        w.tx(96);
        w.handshake();
        w.drop_packet(DropReason::Replay);
        w.drop_packets(DropReason::TxFull, 5);
        w.event_deferred();
        w.event_deferred();
        w.event_lost();
        w.set_xsk(&XskFigures {
            rx_dropped: 7,
            rx_ring_full: 2,
            sockets: 1,
            ..Default::default()
        });
        let f = r.worker_stats(3).figures();
        assert_eq!((f.rx_packets, f.rx_bytes), (2, 180));
        assert_eq!((f.tx_packets, f.tx_bytes, f.handshake_rx), (1, 96, 1));
        assert_eq!(f.dropped(DropReason::Replay), 1);
        assert_eq!(f.dropped(DropReason::TxFull), 5);
        assert_eq!(f.dropped(DropReason::Malformed), 0);
        assert_eq!((f.events_deferred, f.events_lost), (2, 1));
        assert_eq!(
            (f.xsk.rx_dropped, f.xsk.rx_ring_full, f.xsk.sockets),
            (7, 2, 1)
        );
        assert_eq!(r.worker_stats(2).figures(), WorkerFigures::default());
        reset(&r);
        assert_eq!(r.worker_stats(3).figures(), WorkerFigures::default());
    }

    #[test]
    fn workers_count_in_parallel_without_losing_increments() {
        let (r, _dir) = temp_region("wstats-par");
        std::thread::scope(|s| {
            for w in 0..4 {
                let r = &r;
                s.spawn(move || {
                    let b = r.worker_stats(w);
                    for _ in 0..100_000 {
                        b.rx(10);
                    }
                });
            }
        });
        for w in 0..4 {
            let f = r.worker_stats(w).figures();
            assert_eq!((f.rx_packets, f.rx_bytes), (100_000, 1_000_000));
        }
    }

    #[test]
    fn uplink_table_round_trips() {
        let (r, _dir) = temp_region("uplinks");
        assert!(uplinks(&r).is_empty());
        set_uplinks(&r, [("veth0", 7), ("fifteen-chars-x", 9)]);
        r.uplink(1).set_xdp(&XdpFigures {
            steered: 10,
            passed: 3,
            malformed: 1,
            no_socket: 0,
        });
        let u = uplinks(&r);
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].name.as_str(), u[0].ifindex), ("veth0", 7));
        assert_eq!(u[1].name, "fifteen-chars-x");
        assert_eq!(
            (u[1].xdp.steered, u[1].xdp.passed, u[1].xdp.malformed),
            (10, 3, 1)
        );
        // Longer than IFNAMSIZ: cut, never a panic.
        r.uplink(0)
            .set_identity("a-name-much-longer-than-sixteen", 1);
        assert_eq!(uplinks(&r)[0].name, "a-name-much-long");
        reset(&r);
        assert!(uplinks(&r).is_empty());
    }
}
