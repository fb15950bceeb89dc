//! One data plane worker: its own UDP socket (SO_REUSEPORT) and TUN queue,
//! pinned to a core. Split by direction as the kernel splits WireGuard:
//! `receive` opens transport messages and writes them to the TUN, `send`
//! reads the TUN and lays out sealed messages, `flush` seals and sends
//! them, `commands` runs control's requests, `event_loop` drives it all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::aead::{AeadBatch, JobId};
use crate::consts::{KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_TIMEOUT};
use crate::gro::Gro;
use crate::offload;
use crate::shm::{capture, monotonic_ns};
use crate::tun::TunQueue;
use crate::udp::{RecvSlot, UdpSocketBatch};
use crate::xsk::HeldFrame;

use super::backend::{PortInbox, XdpPort};
use super::keycache::KeyCache;
use super::shared::{Routes, Shared};
use super::stats::Stats;
use crate::frame::FrameHeader;
use crate::netlink::NextHopCache;

mod commands;
mod event_loop;
mod flush;
mod parked;
mod peer_batch;
mod receive;
mod send;

pub(in crate::process) use self::parked::Parked;
pub(in crate::process) use self::Ready as LaneReady;

const BATCH: usize = 32;
/// Sealed messages for the UDP socket are sent once this many wait (a TUN
/// super-packet's segments are always sent together, as one train): enough
/// for the trains of a few super-packets per sendmmsg.
const UDP_FLUSH_AT: usize = 128;
const TUN_BURST: usize = 64;
const POLL_MS: i32 = 5;
/// Largest inner packet read from the TUN: its MTU is at most 65535, and a
/// TCP super-packet is at most an IPv6 header plus 65535 bytes of payload.
const TUN_BUF: usize = 40 + 65535;
/// At most one "handshake needed" per peer per this long from one worker.
const NEED_INTERVAL_NS: u64 = 1_000_000_000;
/// An endpoint change not yet visible in the region is reported again after this.
const REPORT_AGAIN_NS: u64 = 50_000_000;

const REJECT_NS: u64 = REJECT_AFTER_TIME.as_nanos() as u64;
const REKEY_NS: u64 = REKEY_AFTER_TIME.as_nanos() as u64;
const LASTMINUTE_NS: u64 =
    REJECT_NS - KEEPALIVE_TIMEOUT.as_nanos() as u64 - REKEY_TIMEOUT.as_nanos() as u64;

/// A message waiting for the next sendmmsg: laid out by `seal_for`, sealed
/// (its `job` done) by `flush_out`.
struct Out {
    dst: SocketAddr,
    src: Option<IpAddr>,
    peer: u32,
    buf: Vec<u8>,
    job: Option<JobId>,
}

/// A transport message laid out in an AF_XDP frame, to be sealed and given
/// its headers at the next `flush_out`.
struct PendingFrame {
    /// Index into the worker's `xdp` ports.
    port: usize,
    frame: HeldFrame,
    header: FrameHeader,
    header_len: usize,
    /// The transport message's length, after the headers.
    len: usize,
    job: JobId,
}

pub struct Worker {
    pub id: usize,
    shared: &'static Shared,
    sock: UdpSocketBatch,
    /// A replacement socket from the supervisor (listen port changed).
    pub new_socket: Arc<Mutex<Option<UdpSocketBatch>>>,
    tun: TunQueue,
    keys: KeyCache,
    rx: Vec<RecvSlot>,
    out: Vec<Out>,
    out_len: usize,
    tunbuf: Vec<u8>,
    /// One segment at a time of a coalesced super-packet the TUN refused,
    /// written again segment by segment (the send path cuts without a
    /// copy, see `offload::for_each_piece`).
    segbuf: Vec<u8>,
    /// Coalescing of received TCP segments into TUN super-packets; None
    /// when TUN offloads are off.
    gro: Option<Gro>,
    /// The last endpoint reported per peer and when: the same report is not
    /// repeated while control is still publishing it, but is repeated after
    /// that (an address can come back after moving away and back).
    reported_move: HashMap<u32, ((SocketAddr, Option<IpAddr>), u64)>,
    reported_confirm: HashMap<usize, u64>,
    last_need: HashMap<u32, u64>,
    /// This worker's view of the AllowedIPs, refreshed once per loop turn.
    routes: Arc<Routes>,
    /// AF_XDP sockets of this worker (empty on the UDP backend).
    xdp: Vec<XdpPort>,
    /// Where the supervisor hands over sockets of uplinks attached later.
    xdp_inbox: Option<Arc<PortInbox>>,
    nexthops: NextHopCache,
    addr_gen: u64,
    now: u64,
    /// The last turn stopped at a burst limit: poll without sleeping.
    more: bool,
    /// This worker's counters in the region (it is their only writer).
    stats: Stats,
    /// The receive batch's opens, and the messages waiting for them
    /// (reused buffers: nothing is allocated per packet).
    rx_crypto: AeadBatch,
    rx_udp_admitted: Vec<(usize, std::ops::Range<usize>, Incoming)>,
    rx_xdp_admitted: Vec<(HeldFrame, std::ops::Range<usize>, Incoming)>,
    /// A host data plane's lane: its AF_XDP frames come parked by its
    /// worker thread (see `parked`), not from rings of its own.
    demuxed: bool,
    parked: Vec<parked::Parked>,
    rx_parked_admitted: Vec<(usize, HeldFrame, std::ops::Range<usize>, Incoming)>,
    /// The seals of messages laid out since the last flush.
    tx_crypto: AeadBatch,
    tx_xdp_pending: Vec<PendingFrame>,
    /// The peer the current burst (one TUN super-packet) goes to, with what
    /// sealing for it needs, and the destination address it was routed by.
    tx_peer: Option<peer_batch::TxPeer>,
    /// The peer the receive batch's last message came from, with its totals.
    rx_peer: Option<peer_batch::RxPeer>,
    tx_route: Option<(IpAddr, u32)>,
    /// Packets of the current burst not yet sealed (counters to reserve).
    burst_left: u64,
    /// The socket's count of refused GSO trains when last looked at (a new
    /// socket starts again from 0), and whether the first was logged.
    gso_refusals_seen: u64,
    gso_refusal_logged: bool,
    /// A host data plane's lane: keeps the tenant's state alive for as
    /// long as this lane (and so every reference into it) lives. Last, so
    /// that it is dropped after every other field.
    _tenant: Option<Arc<Shared>>,
}

/// A received transport message that passed the checks before
/// decryption, waiting for its batch to be opened.
#[derive(Clone, Copy)]
struct Incoming {
    job: JobId,
    src: SocketAddr,
    local: Option<IpAddr>,
    counter: u64,
    receiver: u32,
    slot: usize,
    seq: u64,
    peer: u32,
    initiator: bool,
    age: u64,
}

/// Which of the worker's file descriptors poll found readable.
pub(in crate::process) struct Ready {
    pub udp: bool,
    pub tun: bool,
}

impl Worker {
    /// `uso`: the TUN takes UDP super-packets, so received UDP is
    /// coalesced too.
    pub fn new(
        id: usize,
        shared: &'static Shared,
        sock: UdpSocketBatch,
        tun: TunQueue,
        uso: bool,
    ) -> Worker {
        Worker {
            id,
            shared,
            _tenant: None,
            sock,
            new_socket: Arc::new(Mutex::new(None)),
            tun,
            keys: KeyCache::default(),
            rx: (0..BATCH).map(|_| RecvSlot::new()).collect(),
            out: Vec::new(),
            out_len: 0,
            tunbuf: vec![0u8; TUN_BUF],
            segbuf: vec![0u8; TUN_BUF],
            gro: offload::wanted_by_env().then(|| Gro::new(uso)),
            reported_move: HashMap::new(),
            reported_confirm: HashMap::new(),
            last_need: HashMap::new(),
            routes: shared.routes(),
            xdp: Vec::new(),
            xdp_inbox: None,
            nexthops: NextHopCache::new(std::time::Duration::from_secs(5)),
            addr_gen: 0,
            now: monotonic_ns(),
            more: false,
            stats: Stats::new(&shared.region, id),
            rx_crypto: AeadBatch::new(),
            rx_udp_admitted: Vec::with_capacity(BATCH),
            rx_xdp_admitted: Vec::with_capacity(BATCH),
            demuxed: false,
            parked: Vec::new(),
            rx_parked_admitted: Vec::new(),
            tx_crypto: AeadBatch::new(),
            tx_xdp_pending: Vec::with_capacity(BATCH),
            gso_refusals_seen: 0,
            gso_refusal_logged: false,
            tx_peer: None,
            rx_peer: None,
            tx_route: None,
            burst_left: 0,
        }
    }

    /// The packet capture, if one is on: read once per batch (one relaxed
    /// load while it is off), with this worker's ring to copy frames into.
    #[inline]
    fn capture(&self) -> Option<(capture::Armed, capture::CaptureRing<'static>)> {
        let shared: &'static Shared = self.shared;
        let region = &shared.region;
        capture::armed(region).map(|a| (a, region.capture_ring(self.id)))
    }

    /// One tenant's lane of a host data plane's worker `id` (see
    /// `process::host`): the same per-tenant state as a worker of its own,
    /// driven turn by turn by the worker thread that serves every tenant.
    /// `fwmark`: the tenant's, for the routes its AF_XDP frames take.
    pub fn lane(
        id: usize,
        shared: Arc<Shared>,
        sock: UdpSocketBatch,
        tun: TunQueue,
        uso: bool,
        fwmark: u32,
    ) -> Worker {
        // SAFETY: the reference and everything derived from it (the stats
        // block, capture rings) are held only by this lane, which also
        // holds `shared` in `_tenant`: the Shared (and its region mapping)
        // is freed only after the lane is dropped, and nothing the lane
        // hands out outlives one of its turns.
        let r: &'static Shared = unsafe { &*Arc::as_ptr(&shared) };
        let mut w = Worker::new(id, r, sock, tun, uso);
        w.nexthops = NextHopCache::new(std::time::Duration::from_secs(5)).with_mark(fwmark);
        w._tenant = Some(shared);
        w
    }

    /// The tenant this lane serves (the same `Arc` for all its lanes).
    pub fn tenant(&self) -> Option<&Arc<Shared>> {
        self._tenant.as_ref()
    }

    /// Lets this worker take AF_XDP sockets for the transport fast path from
    /// `inbox`, as the supervisor attaches uplinks.
    pub fn with_xdp(mut self, inbox: Arc<PortInbox>, fwmark: u32) -> Worker {
        self.xdp_inbox = Some(inbox);
        self.nexthops = NextHopCache::new(std::time::Duration::from_secs(5)).with_mark(fwmark);
        self
    }
}
