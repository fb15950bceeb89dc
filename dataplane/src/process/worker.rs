//! One data plane worker: its own UDP socket (SO_REUSEPORT) and TUN queue,
//! pinned to a core. Receives and opens transport messages, seals and sends
//! packets read from the TUN, hands handshake messages to control and runs
//! control's commands.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use crate::aead::{AeadBatch, JobId};
use crate::consts::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, REKEY_TIMEOUT,
};
use crate::gro::Gro;
use crate::ip;
use crate::messages::{message_type, Message, MSG_TRANSPORT, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::offload::{self, VnetHdr};
use crate::shm::events::{ToControl, ToDataplane, MAX_DATAGRAM};
use crate::shm::keys::slot_of_index;
use crate::shm::layout::RECORD_SIZE;
use crate::shm::monotonic_ns;
use crate::transport;
use crate::tun::TunQueue;
use crate::udp::{RecvSlot, SendMsg, UdpSocketBatch};
use crate::xsk::HeldFrame;

use super::backend::{PortInbox, XdpPort};
use super::keycache::KeyCache;
use super::shared::{Routes, Shared};
use super::stats::Stats;
use crate::frame::{parse_udp_frame, write_udp_frame_with, FrameHeader, UdpChecksum};
use crate::netlink::{NextHopCache, Resolve};
use crate::shm::stats::DropReason;

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
    /// One segment of a TCP super-packet at a time (TUN offloads).
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
    /// The seals of messages laid out since the last flush.
    tx_crypto: AeadBatch,
    tx_xdp_pending: Vec<PendingFrame>,
    /// The socket's count of refused GSO trains when last looked at (the
    /// first refusal is logged).
    gso_refusals_logged: u64,
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
struct Ready {
    udp: bool,
    tun: bool,
}

impl Worker {
    pub fn new(id: usize, shared: &'static Shared, sock: UdpSocketBatch, tun: TunQueue) -> Worker {
        Worker {
            id,
            shared,
            sock,
            new_socket: Arc::new(Mutex::new(None)),
            tun,
            keys: KeyCache::default(),
            rx: (0..BATCH).map(|_| RecvSlot::new()).collect(),
            out: Vec::new(),
            out_len: 0,
            tunbuf: vec![0u8; TUN_BUF],
            segbuf: vec![0u8; TUN_BUF],
            gro: offload::wanted_by_env().then(Gro::new),
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
            tx_crypto: AeadBatch::new(),
            tx_xdp_pending: Vec::with_capacity(BATCH),
            gso_refusals_logged: 0,
        }
    }

    /// Lets this worker take AF_XDP sockets for the transport fast path from
    /// `inbox`, as the supervisor attaches uplinks.
    pub fn with_xdp(mut self, inbox: Arc<PortInbox>, fwmark: u32) -> Worker {
        self.xdp_inbox = Some(inbox);
        self.nexthops = NextHopCache::new(std::time::Duration::from_secs(5)).with_mark(fwmark);
        self
    }

    pub fn run(mut self) {
        while !self.shared.stopping() {
            if let Some(s) = self
                .new_socket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                self.sock = s;
            }
            // Appended between turns: nothing pending refers to a port by
            // an index that could move.
            if let Some(ports) = self.xdp_inbox.as_ref().and_then(|i| i.take()) {
                self.xdp.extend(ports);
            }
            let ready = self.wait();
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
            self.flush_out();
            self.more = more;
        }
    }

    /// Waits for any source to be readable (not at all when the last turn
    /// stopped at a burst limit with more to read).
    fn wait(&self) -> Ready {
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

    /// Datagrams on the UDP socket: everything on the UDP backend,
    /// handshakes (and transport from interfaces without XDP) on AF_XDP.
    /// True when it stopped with more to read.
    fn receive_udp(&mut self) -> bool {
        for _ in 0..8 {
            let n = match self.sock.recv_batch(&mut self.rx) {
                Ok(n) => n,
                Err(_) => return false,
            };
            let mut rx = std::mem::take(&mut self.rx);
            let mut admitted = std::mem::take(&mut self.rx_udp_admitted);
            for (i, slot) in rx[..n].iter_mut().enumerate() {
                let (src, local) = (slot.src(), slot.local());
                // A slot holds one datagram, or a train coalesced by UDP_GRO.
                for at in slot.segments() {
                    if let Some(inc) = self.datagram(src, local, &mut slot.data_mut()[at.clone()]) {
                        admitted.push((i, at, inc));
                    }
                }
            }
            self.rx_crypto.generate();
            for (i, at, inc) in admitted.drain(..) {
                self.deliver(&inc, &mut rx[i].data_mut()[at]);
            }
            self.rx_crypto.clear();
            self.rx = rx;
            self.rx_udp_admitted = admitted;
            self.flush_gro();
            self.flush_out();
            if n < BATCH {
                return false;
            }
        }
        true
    }

    /// Frames the XDP program steered to our AF_XDP sockets: transport
    /// messages only, opened where they lie in the UMEM. A batch's frames
    /// are held while it is checked and opened together, then each returns
    /// to the fill ring. Looking at the rx ring costs no system call, so
    /// this runs every turn. True when it stopped with more to read.
    fn receive_xdp(&mut self) -> bool {
        if self.xdp.is_empty() {
            return false;
        }
        let mut more = false;
        let mut ports = std::mem::take(&mut self.xdp);
        let mut admitted = std::mem::take(&mut self.rx_xdp_admitted);
        for p in &mut ports {
            let mut full = true;
            for _ in 0..8 {
                let n = p.sock.rx_batch(BATCH, |mut frame| {
                    let Some((src, local, at)) = parse_udp_frame(frame.data()).map(|u| {
                        let start = u.payload.as_ptr() as usize - frame.data().as_ptr() as usize;
                        (u.src, Some(u.dst.ip()), start..start + u.payload.len())
                    }) else {
                        return;
                    };
                    let Some(payload) = frame.data_mut().get_mut(at.clone()) else {
                        return;
                    };
                    if let Some(inc) = self.datagram(src, local, payload) {
                        // Offsets in the held buffer, which starts at the
                        // frame's headroom rather than at its data.
                        let off = frame.offset();
                        admitted.push((frame.hold(), off + at.start..off + at.end, inc));
                    }
                });
                self.rx_crypto.generate();
                for (held, at, inc) in admitted.drain(..) {
                    if let Some(data) = p.sock.held_buf(&held).and_then(|b| b.get_mut(at)) {
                        self.deliver(&inc, data);
                    }
                    p.sock.recycle(held);
                }
                self.rx_crypto.clear();
                if n < BATCH {
                    full = false;
                    break;
                }
            }
            more |= full;
        }
        self.xdp = ports;
        self.rx_xdp_admitted = admitted;
        self.flush_gro();
        more
    }

    /// One received datagram: a transport message that passes the checks
    /// before decryption is queued for the batch's open and returned, to be
    /// [`deliver`](Self::deliver)ed once the batch is opened; anything else
    /// is handled here.
    fn datagram(
        &mut self,
        src: SocketAddr,
        local: Option<IpAddr>,
        data: &mut [u8],
    ) -> Option<Incoming> {
        match message_type(data) {
            Ok(MSG_TRANSPORT) => self.admit(src, local, data),
            Ok(_) if data.len() <= MAX_DATAGRAM => {
                self.stats.handshake();
                let ev = ToControl::Handshake {
                    from: src,
                    local,
                    datagram: data.to_vec(),
                };
                self.shared.notify(self.id, &ev);
                None
            }
            _ => {
                self.stats.drop_packet(DropReason::Malformed);
                None
            }
        }
    }

    /// The checks a transport message passes before it is worth opening:
    /// a live session for its receiver index, and a counter the replay
    /// window has not seen. Queues its open in the batch.
    fn admit(&mut self, src: SocketAddr, local: Option<IpAddr>, data: &[u8]) -> Option<Incoming> {
        let Ok(Message::Transport(t)) = Message::parse(data) else {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        };
        let (receiver, counter, text_len) = (t.receiver, t.counter, t.sealed.len() - TAG_LEN);
        let region = &self.shared.region;
        let slot = slot_of_index(receiver);
        let Some(key) = self.keys.by_index(region, receiver) else {
            self.stats.drop_packet(DropReason::UnknownIndex);
            return None;
        };
        let age = key.age_ns(self.now);
        if age >= REJECT_NS {
            self.stats.drop_packet(DropReason::KeyExpired);
            return None;
        }
        if !region.key(slot).replay(key.seq, counter, false) {
            self.stats.drop_packet(DropReason::Replay);
            return None;
        }
        let job = self.rx_crypto.push(&key.recv, counter, text_len);
        Some(Incoming {
            job,
            src,
            local,
            counter,
            receiver,
            slot,
            seq: key.seq,
            peer: key.peer,
            initiator: key.initiator,
            age,
        })
    }

    /// Opens an admitted transport message in place (`data` is the whole
    /// message, as it was when admitted) and writes its packet to the TUN.
    fn deliver(&mut self, inc: &Incoming, data: &mut [u8]) {
        let wire_len = data.len();
        let Some(body) = data.get_mut(TRANSPORT_HEADER_LEN..) else {
            return self.stats.drop_packet(DropReason::Malformed);
        };
        let Ok(plain) = self.rx_crypto.open(inc.job, body) else {
            return self.stats.drop_packet(DropReason::DecryptFailed);
        };
        let Incoming {
            src,
            local,
            counter,
            receiver,
            slot,
            seq,
            peer,
            initiator,
            age,
            ..
        } = *inc;
        let region = &self.shared.region;
        if !region.key(slot).replay(seq, counter, true) {
            return self.stats.drop_packet(DropReason::Replay);
        }
        let p = region.peer(peer as usize);
        let is_data = !plain.is_empty();
        p.note_rx(wire_len as u64, self.now, is_data);
        self.stats.rx(wire_len);

        // The kernel's rule: remember both the peer's address and the local
        // address it wrote to, so replies leave from that address.
        let seen = (src, local);
        let known = p.endpoint();
        let moved = match known {
            Some((ep, known_local)) => ep != src || (local.is_some() && known_local != local),
            None => true,
        };
        let recent = self
            .reported_move
            .get(&peer)
            .is_some_and(|&(r, at)| r == seen && self.now.saturating_sub(at) < REPORT_AGAIN_NS);
        if moved && !recent {
            self.reported_move.insert(peer, (seen, self.now));
            self.shared.notify(
                self.id,
                &ToControl::EndpointMoved {
                    peer,
                    endpoint: src,
                    local,
                },
            );
        }
        if !initiator
            && p.current_key() != Some(slot as u32)
            && self.reported_confirm.get(&slot) != Some(&seq)
        {
            self.reported_confirm.insert(slot, seq);
            self.shared.notify(
                self.id,
                &ToControl::SessionConfirmed {
                    peer,
                    local_index: receiver,
                },
            );
        }
        if initiator && age >= LASTMINUTE_NS {
            self.need_handshake(peer);
        }
        if !is_data {
            return;
        }
        let Some(len) = ip::packet_len(plain) else {
            self.stats.drop_packet(DropReason::Malformed);
            return p.note_drop();
        };
        let Some(inner_src) = ip::source(&plain[..len]) else {
            self.stats.drop_packet(DropReason::Malformed);
            return p.note_drop();
        };
        if self.routes.table.lookup(inner_src) != Some(peer) {
            self.stats.drop_packet(DropReason::SourceNotAllowed);
            return p.note_drop();
        }
        let (tun, stats, scratch) = (&self.tun, &mut self.stats, &mut self.segbuf);
        let mut sink = |hdr: Option<&VnetHdr>, p: &[u8]| write_tun(tun, stats, scratch, hdr, p);
        match &mut self.gro {
            Some(gro) => gro.push(&plain[..len], &mut sink),
            None => sink(None, &plain[..len]),
        }
    }

    /// Writes out what coalescing still holds: the end of a receive batch.
    fn flush_gro(&mut self) {
        let (tun, stats, scratch) = (&self.tun, &mut self.stats, &mut self.segbuf);
        if let Some(gro) = &mut self.gro {
            gro.flush(&mut |hdr: Option<&VnetHdr>, p: &[u8]| {
                write_tun(tun, stats, scratch, hdr, p)
            });
        }
    }

    /// Reads, seals and sends packets from the TUN queue. True when it
    /// stopped at the burst limit with more to read.
    fn read_tun(&mut self) -> bool {
        let mut more = true;
        for _ in 0..TUN_BURST {
            let (hdr, n) = match self.tun.recv_offload(&mut self.tunbuf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The interface is gone: nothing left to serve.
                    self.shared
                        .stop
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    more = false;
                    break;
                }
            };
            let mut packet = std::mem::take(&mut self.tunbuf);
            let mut scratch = std::mem::take(&mut self.segbuf);
            let cut = offload::for_each_packet(&hdr, &mut packet[..n], &mut scratch, |p| {
                self.send_packet(p)
            });
            if cut.is_err() {
                self.stats.drop_packet(DropReason::Malformed);
            }
            self.tunbuf = packet;
            self.segbuf = scratch;
            if self.tx_xdp_pending.len() >= BATCH || self.out_len >= UDP_FLUSH_AT {
                self.flush_out();
            }
        }
        self.flush_out();
        more
    }

    /// Routes one plain packet from the TUN to its peer and seals it, or
    /// stages it until a session exists.
    fn send_packet(&mut self, packet: &[u8]) {
        let Some(dst) = ip::destination(packet) else {
            return self.stats.drop_packet(DropReason::Malformed);
        };
        let Some(peer) = self.routes.table.lookup(dst) else {
            return self.stats.drop_packet(DropReason::NoRoute);
        };
        if !self.seal_for(peer, packet) {
            self.shared.stage(peer, packet.to_vec());
            self.need_handshake(peer);
        }
        // AF_XDP frames are few; the UDP socket's messages wait for the end
        // of their super-packet (read_tun) unless far too many pile up.
        if self.tx_xdp_pending.len() >= BATCH || self.out_len >= 4 * UDP_FLUSH_AT {
            self.flush_out();
        }
    }

    /// Seals `packet` (empty: keepalive) for `peer` under its current key
    /// and queues it; false if there is no usable key (caller stages it).
    fn seal_for(&mut self, peer: u32, packet: &[u8]) -> bool {
        let region = &self.shared.region;
        let p = region.peer(peer as usize);
        if !p.is_active() {
            return true; // peer removed: drop
        }
        let Some(slot) = p.current_key() else {
            return false;
        };
        let Some(key) = self.keys.get(region, slot as usize) else {
            return false;
        };
        let age = key.age_ns(self.now);
        if age >= REJECT_NS {
            return false;
        }
        let Some((dst, src)) = p.endpoint() else {
            p.note_drop();
            self.stats.drop_packet(DropReason::NoEndpoint);
            return true; // nowhere to send: the kernel drops too
        };
        let Some(counter) = region.key(slot as usize).reserve_counters(key.seq, 1) else {
            return false;
        };
        let mtu = region
            .header()
            .mtu
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(576) as usize;
        let data = !packet.is_empty();
        if !self.xdp.is_empty() {
            let port = region
                .header()
                .bound_port
                .load(std::sync::atomic::Ordering::Relaxed) as u16;
            let sent = xdp_send(
                &mut self.xdp,
                &mut self.nexthops,
                &mut self.tx_crypto,
                &mut self.tx_xdp_pending,
                key,
                counter,
                packet,
                mtu,
                dst,
                src,
                port,
            );
            if let Some(len) = sent {
                p.note_tx(len as u64, self.now, data);
                self.stats.tx(len);
                let stale = (key.initiator && age >= REKEY_NS) || counter >= REKEY_AFTER_MESSAGES;
                if stale {
                    self.need_handshake(peer);
                }
                return true;
            }
        }
        if self.out_len == self.out.len() {
            self.out.push(Out {
                dst,
                src,
                peer,
                buf: Vec::with_capacity(2048),
                job: None,
            });
        }
        let o = &mut self.out[self.out_len];
        o.dst = dst;
        o.src = src;
        o.peer = peer;
        o.buf.clear();
        o.buf.resize(transport::sealed_len(packet.len(), mtu), 0);
        let n = transport::write_unsealed(key.remote_index, counter, packet, mtu, &mut o.buf);
        debug_assert_eq!(n, Some(o.buf.len()));
        o.job = Some(self.tx_crypto.push(
            &key.send,
            counter,
            o.buf.len() - TRANSPORT_HEADER_LEN - TAG_LEN,
        ));
        p.note_tx(o.buf.len() as u64, self.now, data);
        self.stats.tx(o.buf.len());
        self.out_len += 1;
        let stale = (key.initiator && age >= REKEY_NS) || counter >= REKEY_AFTER_MESSAGES;
        if stale {
            self.need_handshake(peer);
        }
        true
    }

    /// Messages laid out but not yet sealed and sent.
    fn pending_out(&self) -> usize {
        self.out_len + self.tx_xdp_pending.len()
    }

    /// Seals every laid-out message as one batch, queues the AF_XDP ones on
    /// their sockets' tx rings and sends the rest with sendmmsg.
    fn flush_out(&mut self) {
        self.tx_crypto.generate();
        for t in self.tx_xdp_pending.drain(..) {
            let Some(port) = self.xdp.get_mut(t.port) else {
                // The ports are only ever away during receive_xdp, which
                // lays nothing out; a frame cannot be given back without
                // its socket, so it would show in the frame counts.
                self.stats.drop_packet(DropReason::TxFull);
                continue;
            };
            let sock = &mut port.sock;
            let built = sock.held_buf(&t.frame).and_then(|buf| {
                let body =
                    buf.get_mut(t.header_len + TRANSPORT_HEADER_LEN..t.header_len + t.len)?;
                self.tx_crypto.seal(t.job, body).then_some(())?;
                // No UDP checksum over IPv4: the Poly1305 tag already covers
                // every byte, and skipping it saves a pass over each packet.
                write_udp_frame_with(buf, &t.header, t.len, UdpChecksum::NoneOverIpv4)
            });
            let queued = match built {
                Some(total) => sock.transmit_held(t.frame, 0, total),
                None => Err(t.frame),
            };
            if let Err(frame) = queued {
                sock.recycle(frame);
                self.stats.drop_packet(DropReason::TxFull);
            }
        }
        for o in &mut self.out[..self.out_len] {
            if let Some(job) = o.job.take() {
                let sealed = o
                    .buf
                    .get_mut(TRANSPORT_HEADER_LEN..)
                    .is_some_and(|body| self.tx_crypto.seal(job, body));
                if !sealed {
                    // Laid out by seal_for for this very job, so this cannot
                    // happen; if it did, the plaintext must not leave.
                    debug_assert!(sealed, "laid out by seal_for for this job");
                    o.buf.clear();
                    self.stats.drop_packet(DropReason::SendFailed);
                }
            }
        }
        self.tx_crypto.clear();
        for p in &mut self.xdp {
            let _ = p.sock.flush();
        }
        if self.out_len == 0 {
            return;
        }
        // Which `out` entry each message is (unsealed ones are left out).
        let from: Vec<usize> = (0..self.out_len)
            .filter(|&i| !self.out[i].buf.is_empty())
            .collect();
        let msgs: Vec<SendMsg<'_>> = from
            .iter()
            .map(|&i| SendMsg {
                dst: self.out[i].dst,
                src: self.out[i].src,
                data: &self.out[i].buf,
            })
            .collect();
        let mut sent = 0;
        let mut stale_source = Vec::new();
        let mut stalls = 0;
        while sent < msgs.len() {
            let base = sent;
            match self
                .sock
                .send_batch(&msgs[sent..], |i| stale_source.push(base + i))
            {
                // msgs[sent] itself failed (unreachable, too big): drop it.
                Err(_) => {
                    self.stats.drop_packet(DropReason::SendFailed);
                    sent += 1;
                }
                Ok(n) => {
                    sent += n;
                    if n == 0 {
                        // Socket buffer full: wait for room, but not forever.
                        stalls += 1;
                        if stalls > 100 {
                            self.stats
                                .drop_packets(DropReason::TxFull, (msgs.len() - sent) as u64);
                            break;
                        }
                        let mut pfd = libc::pollfd {
                            fd: self.sock.as_raw_fd(),
                            events: libc::POLLOUT,
                            revents: 0,
                        };
                        // SAFETY: poll on one pollfd we own.
                        unsafe { libc::poll(&mut pfd, 1, 1) };
                    }
                }
            }
        }
        drop(msgs);
        let refused = self.sock.gso_fallbacks();
        if refused != 0 && self.gso_refusals_logged == 0 {
            super::log(&format!(
                "worker {}: the kernel refused a UDP segmentation train; \
                 that destination now gets one datagram per message",
                self.id
            ));
        }
        self.gso_refusals_logged = refused;
        // A source address that vanished: tell control to forget it.
        for i in stale_source {
            let o = &self.out[from[i]];
            let ev = ToControl::EndpointMoved {
                peer: o.peer,
                endpoint: o.dst,
                local: None,
            };
            self.shared.notify(self.id, &ev);
        }
        self.out_len = 0;
    }

    fn need_handshake(&mut self, peer: u32) {
        let last = self.last_need.get(&peer).copied().unwrap_or(0);
        if last != 0 && self.now.saturating_sub(last) < NEED_INTERVAL_NS {
            return;
        }
        self.last_need.insert(peer, self.now);
        self.shared
            .notify(self.id, &ToControl::HandshakeNeeded { peer });
    }

    fn commands(&mut self) {
        let mut rec = [0u8; RECORD_SIZE];
        while let Some(n) = self.shared.region.ring_to_dataplane(self.id).pop(&mut rec) {
            match ToDataplane::decode(&rec[..n]) {
                Some(ToDataplane::Send {
                    to,
                    local,
                    datagram,
                }) => {
                    let _ = self.sock.send_to(to, local, &datagram);
                }
                Some(ToDataplane::Flush { peer, keepalive }) => self.flush_peer(peer, keepalive),
                Some(ToDataplane::DropStaged { peer }) => self.shared.drop_staged(peer),
                None => {}
            }
        }
    }

    fn flush_peer(&mut self, peer: u32, keepalive: bool) {
        // A new session: forget the rate limit on asking for another one.
        self.last_need.remove(&peer);
        let mut staged = self.shared.take_staged(peer);
        if staged.is_empty() && keepalive {
            staged.push_back(Vec::new());
        }
        while let Some(pkt) = staged.pop_front() {
            if !self.seal_for(peer, &pkt) {
                staged.push_front(pkt);
                for p in staged {
                    self.shared.stage(peer, p);
                }
                self.need_handshake(peer);
                break;
            }
            if self.pending_out() >= BATCH {
                self.flush_out();
            }
        }
        self.flush_out();
    }
}

/// Writes a packet, or a coalesced super-packet, to the TUN. A kernel that
/// refuses the super-packet (some versions fail GSO writes with EINVAL)
/// gets its segments one by one instead: nothing is lost to an offload bug.
fn write_tun(
    tun: &TunQueue,
    stats: &mut Stats,
    scratch: &mut [u8],
    hdr: Option<&VnetHdr>,
    packet: &[u8],
) {
    let Some(hdr) = hdr else {
        if tun.send(packet).is_err() {
            stats.drop_packet(DropReason::TxFull);
        }
        return;
    };
    if tun.send_offload(hdr, packet).is_ok() {
        return;
    }
    let mut whole = packet.to_vec();
    let cut = offload::for_each_packet(hdr, &mut whole, scratch, |seg| {
        if tun.send(seg).is_err() {
            stats.drop_packet(DropReason::TxFull);
        }
    });
    if cut.is_err() {
        stats.drop_packet(DropReason::Malformed);
    }
}

/// Lays `packet` out as a transport message in an AF_XDP frame, after
/// room for its Ethernet, IP and UDP headers, and queues its sealing in
/// `crypto`; [`Worker::flush_out`] seals it, writes the headers and sends
/// it. `None` when the next hop is not resolved yet, the route leaves
/// through an interface we have no socket on, or no frame is free: the
/// caller then sends through the kernel's UDP socket (which also makes the
/// kernel resolve the neighbour for next time).
#[allow(clippy::too_many_arguments)]
fn xdp_send(
    ports: &mut [XdpPort],
    nexthops: &mut NextHopCache,
    crypto: &mut AeadBatch,
    pending: &mut Vec<PendingFrame>,
    key: &super::keycache::CachedKey,
    counter: u64,
    packet: &[u8],
    mtu: usize,
    dst: SocketAddr,
    sticky_src: Option<IpAddr>,
    src_port: u16,
) -> Option<usize> {
    let Ok(Resolve::Resolved(nh)) = nexthops.resolve(dst.ip()) else {
        return None;
    };
    let port = ports.iter().position(|p| p.ifindex == nh.ifindex)?;
    // A sticky source other than the route's own may be a secondary
    // address, or one that has vanished; only the kernel path can tell
    // (sendmsg with pktinfo fails for a non-local source), so those replies
    // take it.
    if sticky_src.is_some_and(|ip| ip != nh.src_ip) {
        return None;
    }
    let header = FrameHeader {
        src_mac: nh.src_mac,
        dst_mac: nh.dst_mac,
        vlan: None,
        src: SocketAddr::new(nh.src_ip, src_port),
        dst,
    };
    let header_len = header.header_len();
    let mut frame = ports[port].sock.tx_frame()?;
    let buf = frame.buf();
    let len = transport::write_unsealed(
        key.remote_index,
        counter,
        packet,
        mtu,
        buf.get_mut(header_len..)?,
    )?;
    let job = crypto.push(&key.send, counter, len - TRANSPORT_HEADER_LEN - TAG_LEN);
    pending.push(PendingFrame {
        port,
        frame: frame.hold(),
        header,
        header_len,
        len,
        job,
    });
    Some(len)
}
