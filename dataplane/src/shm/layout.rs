//! The fixed layout of the shared-memory region between the control process
//! and the data plane: sizes, offsets and the `repr(C)` records. Both
//! processes import this one definition; nothing else computes offsets.
//!
//! ```text
//! offset 0          Header (one page)
//! off_keys          KeySlot  x MAX_KEY_SLOTS  session keys by receiver index
//! off_peers         PeerSlot x MAX_PEER_SLOTS endpoint, send key, counters
//! off_allowed       AllowedHeader + AllowedEntry x MAX_ALLOWED
//! off_rings         Ring x (2 * MAX_WORKERS) event rings, to control then to data plane
//! off_worker_stats  WorkerStats x MAX_WORKERS per-worker counters (one writer each)
//! off_peer_info     PeerInfo x MAX_PEER_SLOTS what only control knows of a peer
//! off_uplinks       UplinkStats x MAX_UPLINKS XDP program counters per uplink
//! off_capture       CaptureControl           packet capture: on/off, filter, owner
//! off_capture_rings CaptureRing x MAX_WORKERS frames copied while capture is on
//! ```
//!
//! The arrays are laid out for their maximums (2^20 peers, as the kernel
//! allows per interface) and the file is that size, but sparse: only the
//! pages written cost memory. How much of each array is in use is the
//! header's *current* capacity (`key_slots`, `peer_slots`, `allowed_max`),
//! which control sets from what the configuration needs and only ever
//! raises. Every loop and bounds check in both processes uses the current
//! capacity: reading an untouched page of a shared tmpfs file allocates it,
//! so a scan of the maximum (or a forged receiver index pointing past the
//! capacity) would cost the memory the sparse layout saves. Growing moves
//! nothing, so no session is dropped: a receiver index names its key slot by
//! its low MAX_KEY_SLOT_BITS bits, and control only hands out indices whose
//! slot lies below the current capacity.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64};

use crate::replay::ReplayWindow;

pub const MAGIC: u64 = u64::from_le_bytes(*b"WSPDSHM\0");
/// Bumped on any change to the records below.
pub const VERSION: u32 = 6;

/// The most peers an interface may have (the kernel's limit too).
pub const MAX_PEER_SLOTS: usize = 1 << 20;
/// Key slots per peer slot. A peer holds at most four receiver indices at
/// once: its previous, current and next sessions and an initiation it
/// awaits the answer to; each needs a slot of its own. Four per peer also
/// keeps the slot table at most three-quarters full in the usual case of
/// three, so control's random choice of a free slot stays cheap.
pub const KEY_SLOTS_PER_PEER: usize = 4;
/// Key slots; a receiver index's low bits name its slot, so the data plane
/// finds a session in O(1) without a shared hash table.
pub const MAX_KEY_SLOT_BITS: u32 = 22;
pub const MAX_KEY_SLOTS: usize = 1 << MAX_KEY_SLOT_BITS;
/// AllowedIPs prefixes, four per peer at the maximum.
pub const MAX_ALLOWED: usize = 1 << 22;
/// The smallest capacity a region starts with, in peers.
pub const MIN_PEER_SLOTS: usize = 1 << 10;
pub const MAX_WORKERS: usize = 16;
pub const RING_ENTRIES: usize = 1024;
pub const RECORD_SIZE: usize = 256;
/// "No key slot" in a peer's `current_key`.
pub const NO_SLOT: u32 = u32::MAX;
/// Uplink interfaces whose XDP counters the region carries.
pub const MAX_UPLINKS: usize = 16;
/// Drop reasons a worker counts (see `stats::DropReason`).
pub const DROP_REASONS: usize = 11;

/// `Header::backend`: what the running data plane meets the network with.
pub const BACKEND_UNKNOWN: u32 = 0;
pub const BACKEND_UDP: u32 = 1;
pub const BACKEND_XDP: u32 = 2;

pub const HEADER_SIZE: usize = 4096;

#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    /// Current capacities (see the module's notes): powers of two, at most
    /// the MAX_ constants, written by control only and never lowered.
    pub key_slots: AtomicU32,
    pub peer_slots: AtomicU32,
    pub allowed_max: AtomicU32,
    pub max_workers: AtomicU32,
    pub ring_entries: AtomicU32,
    pub total_size: AtomicU64,
    pub control_pid: AtomicU32,
    pub dataplane_pid: AtomicU32,
    /// Set by the data plane once its workers run (pid of that instance).
    pub dataplane_ready: AtomicU32,
    /// Workers the current data plane runs (≤ MAX_WORKERS).
    pub workers: AtomicU32,
    /// Requested by control (0: any port).
    pub listen_port: AtomicU32,
    /// The port the data plane actually bound.
    pub bound_port: AtomicU32,
    pub fwmark: AtomicU32,
    pub mtu: AtomicU32,
    /// Bumped when listen_port or fwmark change, so workers rebind.
    pub config_gen: AtomicU64,
    /// The config_gen the data plane last applied, and the errno of that
    /// bind (0: success), so control can answer `wg set` truthfully.
    pub applied_gen: AtomicU64,
    pub bind_errno: AtomicU32,
    /// The control process's last sign of life (CLOCK_MONOTONIC ns).
    pub control_heartbeat_ns: AtomicU64,
    /// BACKEND_* of the running data plane, set once it has chosen.
    pub backend: AtomicU32,
    /// Entries of the uplink table in use (≤ MAX_UPLINKS).
    pub uplinks: AtomicU32,
    /// Control only: commands that found every command ring full and
    /// were dropped (handshake datagrams: the peers send theirs again) ...
    pub commands_dropped: AtomicU64,
    /// ... and those kept to be sent again (flushes, drops of staged
    /// packets), since control started.
    pub commands_deferred: AtomicU64,
    /// The data plane's descriptor number of the eventfd that wakes
    /// control, plus one (0: none): a control that re-attaches to a running
    /// data plane takes a copy of it with pidfd_getfd.
    pub dataplane_wake_fd: AtomicU32,
    /// The pid of a control that left on purpose (`SIGUSR2`), handing the
    /// data plane to the next one; 0 otherwise. It took the place of
    /// padding, so the layout (and its version) stay as they were: an
    /// older data plane ignores it and an older region reads 0.
    pub control_detached: AtomicU32,
    /// Control's static public key (not secret): the sessions in the key
    /// slots were made with it, and a re-attaching control adopts them only
    /// if it is configured with the same key.
    pub static_public_key: [AtomicU64; 4],
    /// Bumped by control after every change to a peer's endpoint (and once
    /// when it creates or adopts the region), so that whoever follows the
    /// peers' uplinks rescans the peer table only when it may have changed,
    /// not once a second at 2^20 peers. It took the place of padding, as
    /// `control_detached` did: an older data plane ignores it, and a region
    /// of an older control reads 0, which readers take as "always maybe".
    pub endpoints_gen: AtomicU64,
}

/// Session keys for one receiver index, published with a seqlock.
#[repr(C, align(64))]
pub struct KeySlot {
    /// Odd while control rewrites the slot; changes on every publication.
    pub seq: AtomicU64,
    pub local_index: AtomicU32,
    pub peer: AtomicU32,
    pub remote_index: AtomicU32,
    pub flags: AtomicU32,
    pub created_ns: AtomicU64,
    pub send_key: [AtomicU64; 4],
    pub recv_key: [AtomicU64; 4],
    /// Next sending counter; senders reserve blocks with fetch_add.
    pub send_counter: AtomicU64,
    /// Data plane only: spin lock over `replay`.
    pub replay_lock: AtomicU32,
    pub _pad: u32,
    pub replay: UnsafeCell<ReplayState>,
}

/// The receive window and the publication it belongs to: a window whose
/// epoch differs from the slot's seq is stale and is reset before use, so
/// control never has to touch it.
#[repr(C)]
pub struct ReplayState {
    pub epoch: u64,
    pub window: ReplayWindow,
}

pub const KEY_VALID: u32 = 1;
pub const KEY_INITIATOR: u32 = 2;

/// One peer as the data plane needs it.
#[repr(C, align(64))]
pub struct PeerSlot {
    /// Seqlock over `endpoint` and `source`.
    pub seq: AtomicU64,
    pub in_use: AtomicU32,
    /// Key slot to send with, or NO_SLOT.
    pub current_key: AtomicU32,
    /// Encoded SocketAddr (see `events::encode_addr`).
    pub endpoint: [AtomicU64; 4],
    /// Encoded local source address to send from (sticky source), or empty.
    pub source: [AtomicU64; 3],
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub last_rx_auth_ns: AtomicU64,
    pub last_tx_auth_ns: AtomicU64,
    pub last_rx_data_ns: AtomicU64,
    pub last_tx_data_ns: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    pub dropped: AtomicU64,
}

#[repr(C, align(64))]
pub struct AllowedHeader {
    /// Seqlock: odd while the table is rewritten.
    pub seq: AtomicU64,
    pub count: AtomicU32,
    pub _pad: u32,
}

/// One AllowedIPs prefix: address words, then `family << 40 | cidr << 32 | peer`.
#[repr(C)]
pub struct AllowedEntry {
    pub addr: [AtomicU64; 2],
    pub meta: AtomicU64,
}

/// A single-producer single-consumer ring of fixed-size records.
#[repr(C, align(64))]
pub struct RingHeader {
    pub head: AtomicU64,
    pub _pad0: [u64; 7],
    pub tail: AtomicU64,
    pub _pad1: [u64; 7],
}

pub const RING_SIZE: usize = core::mem::size_of::<RingHeader>() + RING_ENTRIES * RECORD_SIZE;

/// One worker's counters. Only that worker writes its block (plain
/// load + store, no locked instruction: see `stats.rs`); anyone may read it.
/// 128-byte alignment keeps neighbouring workers off each other's cache
/// lines, adjacent-line prefetch included.
#[repr(C, align(128))]
pub struct WorkerStats {
    /// Transport messages that authenticated (what peers' `rx_bytes` count).
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Transport messages sealed and handed to the wire (keepalives included).
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Handshake messages (initiation, response, cookie) passed to control.
    pub handshake_rx: AtomicU64,
    /// Packets dropped, indexed by `stats::DropReason`.
    pub drops: [AtomicU64; DROP_REASONS],
    /// The kernel's XDP_STATISTICS, summed over this worker's AF_XDP
    /// sockets, as the worker last published them (about once a second).
    pub xsk_rx_dropped: AtomicU64,
    pub xsk_rx_invalid_descs: AtomicU64,
    pub xsk_rx_ring_full: AtomicU64,
    pub xsk_rx_fill_ring_empty: AtomicU64,
    pub xsk_tx_invalid_descs: AtomicU64,
    pub xsk_tx_ring_empty: AtomicU64,
    /// AF_XDP sockets summed into the figures above.
    pub xsk_sockets: AtomicU64,
    /// Events for control that found the worker's ring full and were kept
    /// to be sent again (handshake datagrams are dropped instead, counted
    /// under `DropReason::EventRingFull`).
    pub events_deferred: AtomicU64,
    /// Events lost because too many were waiting already.
    pub events_lost: AtomicU64,
    /// UDP segmentation trains the kernel refused (their datagrams were
    /// sent again one per message, and that destination gets no more
    /// trains), as the worker last published them.
    pub udp_gso_refusals: AtomicU64,
}

/// What only control knows about the peer in the same-numbered peer slot:
/// who it is, its last handshake, and the handshake bytes control counted
/// (the data plane counts transport bytes in the `PeerSlot`). Lets anything
/// attached to the region (the metrics endpoint) report `wg show` figures.
#[repr(C, align(64))]
pub struct PeerInfo {
    /// Seqlock over `public_key`.
    pub seq: AtomicU64,
    pub public_key: [AtomicU64; 4],
    /// Wall-clock time of the last handshake, ns since the Unix epoch (0: none).
    pub last_handshake_unix_ns: AtomicU64,
    pub control_rx_bytes: AtomicU64,
    pub control_tx_bytes: AtomicU64,
}

/// The XDP steering program's counters on one uplink, summed over CPUs,
/// copied by the data plane's supervisor about once a second.
#[repr(C, align(64))]
pub struct UplinkStats {
    /// Seqlock over `name` and `ifindex`.
    pub seq: AtomicU64,
    /// Interface name, NUL-padded (IFNAMSIZ).
    pub name: [AtomicU64; 2],
    pub ifindex: AtomicU32,
    pub _pad: u32,
    pub steered: AtomicU64,
    pub passed: AtomicU64,
    pub malformed: AtomicU64,
    pub no_socket: AtomicU64,
}

/// Packet capture (see `capture.rs`): what is wanted, by whom. Its own
/// cache line, which nothing else writes: every worker reads `session`
/// once per batch, and a line written for other reasons would bounce.
#[repr(C, align(64))]
pub struct CaptureControl {
    /// 0: capture is off; else the running capture's session id, which
    /// every record it gets carries. Stored (Release) after the fields below.
    pub session: AtomicU64,
    /// Source of session ids (bumped by each capture command).
    pub sessions: AtomicU64,
    /// The capture command that owns the capture (0: none): claimed with a
    /// compare-and-swap; the data plane turns capture off when it is gone.
    pub owner_pid: AtomicU32,
    /// Most bytes of each frame to copy.
    pub snaplen: AtomicU32,
    /// CAPTURE_RX | CAPTURE_TX.
    pub directions: AtomicU32,
    /// Only frames of this uplink (0: every uplink).
    pub ifindex: AtomicU32,
    /// Only frames to or from this IP address (`events::encode_addr` with
    /// port 0; family 0: any address) ...
    pub host: [AtomicU64; 3],
    /// ... and this UDP port, either end (0: any port).
    pub port: AtomicU32,
    pub _pad: u32,
}

pub const CAPTURE_RX: u32 = 1;
pub const CAPTURE_TX: u32 = 2;
/// Frames one worker's capture ring holds.
pub const CAPTURE_SLOTS: usize = 512;
/// One record: a [`CaptureRecord`] then the frame's first bytes; as large
/// as the largest AF_XDP frame, so nothing is cut shorter than asked.
pub const CAPTURE_SLOT_SIZE: usize = 4096;
pub const CAPTURE_DATA_MAX: usize = CAPTURE_SLOT_SIZE - core::mem::size_of::<CaptureRecord>();

/// A worker's ring of captured frames (single producer: the worker; single
/// consumer: the capture command). Head and tail on lines of their own.
#[repr(C, align(64))]
pub struct CaptureRingHeader {
    pub head: AtomicU64,
    /// Frames the worker could not copy because the ring was full (only
    /// the worker writes it).
    pub dropped: AtomicU64,
    pub _pad0: [u64; 6],
    pub tail: AtomicU64,
    pub _pad1: [u64; 7],
}

/// What precedes each captured frame in its slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureRecord {
    /// The capture session it was taken for (stale ones are skipped).
    pub session: u64,
    /// CLOCK_REALTIME when it was taken, ns.
    pub realtime_ns: u64,
    /// The uplink's interface index.
    pub ifindex: u32,
    /// CAPTURE_RX or CAPTURE_TX.
    pub direction: u32,
    /// The frame's length on the wire, and the bytes of it copied.
    pub orig_len: u32,
    pub cap_len: u32,
}

pub const CAPTURE_RING_SIZE: usize =
    core::mem::size_of::<CaptureRingHeader>() + CAPTURE_SLOTS * CAPTURE_SLOT_SIZE;

pub const OFF_KEYS: usize = HEADER_SIZE;
pub const OFF_PEERS: usize = OFF_KEYS + MAX_KEY_SLOTS * core::mem::size_of::<KeySlot>();
pub const OFF_ALLOWED: usize = OFF_PEERS + MAX_PEER_SLOTS * core::mem::size_of::<PeerSlot>();
pub const OFF_RINGS: usize = OFF_ALLOWED + 64 + MAX_ALLOWED * core::mem::size_of::<AllowedEntry>();
pub const OFF_WORKER_STATS: usize = (OFF_RINGS + 2 * MAX_WORKERS * RING_SIZE)
    .next_multiple_of(core::mem::align_of::<WorkerStats>());
pub const OFF_PEER_INFO: usize =
    OFF_WORKER_STATS + MAX_WORKERS * core::mem::size_of::<WorkerStats>();
pub const OFF_UPLINKS: usize = OFF_PEER_INFO + MAX_PEER_SLOTS * core::mem::size_of::<PeerInfo>();
pub const OFF_CAPTURE: usize = OFF_UPLINKS + MAX_UPLINKS * core::mem::size_of::<UplinkStats>();
/// Page-aligned: the rings are most of the region, and stay untouched (no
/// memory behind them in the tmpfs file) until a capture first runs.
pub const OFF_CAPTURE_RINGS: usize =
    (OFF_CAPTURE + core::mem::size_of::<CaptureControl>()).next_multiple_of(4096);
pub const TOTAL_SIZE: usize =
    (OFF_CAPTURE_RINGS + MAX_WORKERS * CAPTURE_RING_SIZE).next_multiple_of(4096);

const _: () = assert!(core::mem::size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<AllowedHeader>() == 64);
const _: () = assert!(
    OFF_PEERS.is_multiple_of(64) && OFF_ALLOWED.is_multiple_of(64) && OFF_RINGS.is_multiple_of(64)
);
const _: () = assert!(RING_SIZE.is_multiple_of(64));
const _: () = assert!(
    OFF_WORKER_STATS.is_multiple_of(128) && core::mem::size_of::<WorkerStats>().is_multiple_of(128)
);

const _: () = assert!(core::mem::size_of::<PeerInfo>() == 64 && OFF_PEER_INFO.is_multiple_of(64));
const _: () = assert!(core::mem::size_of::<UplinkStats>() == 64 && OFF_UPLINKS.is_multiple_of(64));
const _: () =
    assert!(core::mem::size_of::<CaptureControl>() == 64 && OFF_CAPTURE.is_multiple_of(64));
const _: () = assert!(core::mem::size_of::<CaptureRingHeader>() == 128);
const _: () = assert!(core::mem::size_of::<CaptureRecord>() == 32);
const _: () = assert!(CAPTURE_RING_SIZE.is_multiple_of(64) && CAPTURE_SLOT_SIZE.is_multiple_of(8));

/// How much of each array is in use: what the header's capacity fields say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub peers: usize,
    pub keys: usize,
    pub allowed: usize,
}

impl Capacity {
    /// What a new region starts with.
    pub const MIN: Capacity = Capacity {
        peers: MIN_PEER_SLOTS,
        keys: MIN_PEER_SLOTS * KEY_SLOTS_PER_PEER,
        allowed: MIN_PEER_SLOTS * 4,
    };

    /// The capacity for `peers` peers with `allowed` prefixes in all: the
    /// next powers of two (so that a key slot is a mask of the index's
    /// bits, and growth steps are few), at least [`Capacity::MIN`]. `None`
    /// when either is beyond what the layout holds.
    pub fn for_config(peers: usize, allowed: usize) -> Option<Capacity> {
        if peers > MAX_PEER_SLOTS || allowed > MAX_ALLOWED {
            return None;
        }
        let peers = peers.next_power_of_two().max(MIN_PEER_SLOTS);
        Some(Capacity {
            peers,
            keys: peers * KEY_SLOTS_PER_PEER,
            allowed: allowed.next_power_of_two().max(peers * 4).min(MAX_ALLOWED),
        })
    }

    /// The larger of each field: capacities never shrink.
    pub fn max(self, other: Capacity) -> Capacity {
        Capacity {
            peers: self.peers.max(other.peers),
            keys: self.keys.max(other.keys),
            allowed: self.allowed.max(other.allowed),
        }
    }
}

const _: () = assert!(MAX_KEY_SLOTS == MAX_PEER_SLOTS * KEY_SLOTS_PER_PEER);
const _: () = assert!(MAX_ALLOWED >= MAX_PEER_SLOTS * 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_follows_the_configuration() {
        assert_eq!(Capacity::for_config(0, 0), Some(Capacity::MIN));
        assert_eq!(Capacity::for_config(1000, 1000), Some(Capacity::MIN));
        let c = Capacity::for_config(100_000, 100_000).unwrap();
        assert_eq!((c.peers, c.keys, c.allowed), (1 << 17, 1 << 19, 1 << 19));
        let c = Capacity::for_config(10, 1_000_000).unwrap();
        assert_eq!((c.peers, c.allowed), (MIN_PEER_SLOTS, 1 << 20));
        let max = Capacity::for_config(MAX_PEER_SLOTS, MAX_ALLOWED).unwrap();
        assert_eq!(
            (max.peers, max.keys, max.allowed),
            (MAX_PEER_SLOTS, MAX_KEY_SLOTS, MAX_ALLOWED)
        );
        assert_eq!(Capacity::for_config(MAX_PEER_SLOTS + 1, 0), None);
        assert_eq!(Capacity::for_config(1, MAX_ALLOWED + 1), None);
    }
}
