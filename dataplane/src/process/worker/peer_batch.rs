//! What sealing for a peer reads from the shared region (its session key
//! slot, endpoint, counters, next hop), looked up once per TUN super-packet
//! rather than once per segment: a 64 KiB super-packet's 45 segments all go
//! to the same peer, so the seqlocked endpoint read, the counter
//! reservation (a cache line every worker writes) and the next-hop lookup
//! are paid once per train. A burst lasts one super-packet (or one flush of
//! staged packets), so nothing here is older than a few microseconds.
//! The receive side keeps its per-peer totals the same way, per batch.

use std::net::{IpAddr, SocketAddr};

use crate::frame::FrameHeader;

pub(super) struct TxPeer {
    pub peer: u32,
    /// The key slot and the publication of it the counters belong to.
    pub slot: usize,
    pub seq: u64,
    pub dst: SocketAddr,
    pub src: Option<IpAddr>,
    pub mtu: usize,
    /// Counters reserved for this burst, `next..end`: unused ones are never
    /// sent, a gap the receiver's replay window does not mind.
    pub next: u64,
    pub end: u64,
    /// The AF_XDP port and frame headers for `dst`, when its next hop is
    /// resolved through an interface we have a socket on.
    pub xdp: Option<(usize, FrameHeader)>,
    /// Totals for the peer's counters, added when the burst ends.
    pub bytes: u64,
    pub packets: u64,
    pub data: bool,
    /// The key is due for a rekey: ask for a handshake when the burst ends.
    pub stale: bool,
}

/// The totals of a receive batch's messages from one peer, added to its
/// counters in the region when the batch ends or another peer's message
/// comes: four atomic writes to a cache line control also reads, paid once
/// per batch instead of once per message.
pub(super) struct RxPeer {
    pub peer: u32,
    pub bytes: u64,
    pub packets: u64,
    pub data: bool,
}

/// Why a burst for a peer could not start.
pub(super) enum TxRefused {
    /// No usable session: stage the packet and ask for a handshake.
    NoSession,
    /// Nowhere to send it, or the peer is gone: drop it.
    Drop,
}
