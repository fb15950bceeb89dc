//! The fixed layout of the shared-memory region between the control process
//! and the data plane: sizes, offsets and the `repr(C)` records. Both
//! processes import this one definition; nothing else computes offsets.
//!
//! ```text
//! offset 0          Header (one page)
//! off_keys          KeySlot  x KEY_SLOTS     session keys by receiver index
//! off_peers         PeerSlot x PEER_SLOTS    endpoint, send key, counters
//! off_allowed       AllowedHeader + AllowedEntry x ALLOWED_MAX
//! off_rings         Ring x (2 * MAX_WORKERS) event rings, to control then to data plane
//! ```

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64};

use crate::replay::ReplayWindow;

pub const MAGIC: u64 = u64::from_le_bytes(*b"WSPDSHM\0");
/// Bumped on any change to the records below.
pub const VERSION: u32 = 1;

/// Key slots; a receiver index's low bits name its slot, so the data plane
/// finds a session in O(1) without a shared hash table.
pub const KEY_SLOT_BITS: u32 = 14;
pub const KEY_SLOTS: usize = 1 << KEY_SLOT_BITS;
pub const PEER_SLOTS: usize = 1 << 15;
pub const ALLOWED_MAX: usize = 1 << 18;
pub const MAX_WORKERS: usize = 16;
pub const RING_ENTRIES: usize = 1024;
pub const RECORD_SIZE: usize = 256;
/// "No key slot" in a peer's `current_key`.
pub const NO_SLOT: u32 = u32::MAX;

pub const HEADER_SIZE: usize = 4096;

#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
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

pub const OFF_KEYS: usize = HEADER_SIZE;
pub const OFF_PEERS: usize = OFF_KEYS + KEY_SLOTS * core::mem::size_of::<KeySlot>();
pub const OFF_ALLOWED: usize = OFF_PEERS + PEER_SLOTS * core::mem::size_of::<PeerSlot>();
pub const OFF_RINGS: usize = OFF_ALLOWED + 64 + ALLOWED_MAX * core::mem::size_of::<AllowedEntry>();
pub const TOTAL_SIZE: usize = (OFF_RINGS + 2 * MAX_WORKERS * RING_SIZE).next_multiple_of(4096);

const _: () = assert!(core::mem::size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<AllowedHeader>() == 64);
const _: () = assert!(OFF_PEERS % 64 == 0 && OFF_ALLOWED % 64 == 0 && OFF_RINGS % 64 == 0);
const _: () = assert!(RING_SIZE % 64 == 0);
