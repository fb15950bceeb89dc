//! [`XskSocket`]: one AF_XDP socket bound to one NIC queue, with its own
//! UMEM and its four rings.
//!
//! # Who owns a frame
//!
//! Every frame is, at any moment, in exactly one place, and the socket
//! counts each ([`XskSocket::frame_counts`]):
//!
//! * **free** — on the socket's free list;
//! * **rx** — given to the kernel for receiving (in the fill ring, being
//!   written, or in the rx ring waiting for us);
//! * **tx** — given to the kernel for sending (in the tx ring, or sent and
//!   waiting in the completion ring);
//! * **held** — received, and kept by the caller as a [`HeldFrame`].
//!
//! A frame received by [`XskSocket::rx_batch`] goes back to the fill ring
//! when the callback returns unless the callback explicitly transmits it
//! ([`RxFrame::transmit`]) or holds it ([`RxFrame::hold`]). Every early
//! `return`, `?` or `continue` in the callback therefore recycles the frame:
//! a drop path cannot forget to. A held frame is a non-`Clone` token that
//! only [`XskSocket::recycle`] or [`XskSocket::transmit_held`] consume.
//!
//! A frame from [`XskSocket::tx_frame`] goes back to the free list if the
//! [`TxFrame`] is dropped without [`TxFrame::submit`].
//!
//! # Receive quota
//!
//! Half the frames (at most one fill ring's worth) are kept with the kernel
//! for receiving; the rest serve transmission. Frames coming back from the
//! rx ring or the completion ring go to the free list, and each
//! [`XskSocket::rx_batch`] ends by topping the kernel's share back up from
//! it, so a burst of sends cannot starve reception for longer than its
//! completions take.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ring::{ConsRing, ProdRing, RawRing};
use super::umem::{check_geometry, FrameAlloc, Umem};

/// Largest ring the socket asks for (entries).
pub const MAX_RING_SIZE: u32 = 1 << 16;

/// Whether to bind in zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode when the driver cannot
    /// (EOPNOTSUPP: veth, most virtual NICs).
    #[default]
    Auto,
    /// Zero-copy or fail.
    Force,
    /// Copy mode.
    Off,
}

/// The mode the socket ended up bound in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XskMode {
    /// The NIC DMAs straight into and out of the UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM.
    Copy,
}

impl fmt::Display for XskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XskMode::ZeroCopy => "zero-copy",
            XskMode::Copy => "copy",
        })
    }
}

/// Geometry and mode of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskOptions {
    /// Frames in the UMEM (2 to [`MAX_FRAMES`](super::MAX_FRAMES)).
    pub frames: u32,
    /// Bytes per frame: 2048 or 4096. In copy mode received data starts
    /// 256 bytes (XDP_PACKET_HEADROOM) into the frame, so a 2048-byte frame
    /// holds received frames up to 1,792 bytes.
    pub frame_size: u32,
    /// Entries in each of the four rings (a power of two up to
    /// [`MAX_RING_SIZE`]).
    pub ring_size: u32,
    pub zero_copy: ZeroCopy,
}

impl Default for XskOptions {
    fn default() -> XskOptions {
        XskOptions {
            frames: 4096,
            frame_size: 2048,
            ring_size: 2048,
            zero_copy: ZeroCopy::Auto,
        }
    }
}

/// The kernel's counters for one socket (getsockopt XDP_STATISTICS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskStats {
    /// Received frames dropped for any reason (no fill frame, too big).
    pub rx_dropped: u64,
    /// Fill-ring descriptors the kernel refused.
    pub rx_invalid_descs: u64,
    /// Tx-ring descriptors the kernel refused (their frames never complete).
    pub tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the tx ring empty when woken.
    pub tx_ring_empty_descs: u64,
}

/// Counters kept in user space, per socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskCounters {
    /// Frames taken from the rx ring.
    pub rx_frames: u64,
    /// rx descriptors outside the UMEM or crossing a frame (never from a
    /// sane kernel); their frames are recycled when they can be named.
    pub rx_bad_descs: u64,
    /// `recvfrom` wakeups issued because the fill ring asked for one.
    pub rx_wakeups: u64,
    /// Frames put on the tx ring.
    pub tx_submitted: u64,
    /// Frames the kernel reported sent (completion ring).
    pub tx_completed: u64,
    /// `sendto` kicks issued.
    pub tx_kicks: u64,
    /// Kicks that returned EAGAIN/EBUSY/ENOBUFS/ENETDOWN (retried, or left
    /// for the next flush).
    pub tx_kick_busy: u64,
    /// Frames meant for transmission that were recycled instead: no tx ring
    /// slot, or an empty/out-of-frame range.
    pub tx_dropped: u64,
    /// `tx_frame` calls that found no free frame or no tx slot.
    pub tx_no_frame: u64,
    /// Frame addresses refused by the allocator (double free, foreign
    /// address, foreign HeldFrame). Nonzero means a bug somewhere.
    pub frame_errors: u64,
}

/// Where the socket's frames are (see the module docs). The four add up to
/// the UMEM's frame count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounts {
    pub free: u32,
    pub rx_kernel: u32,
    pub tx_kernel: u32,
    pub held: u32,
}

impl FrameCounts {
    pub fn total(&self) -> u64 {
        u64::from(self.free)
            + u64::from(self.rx_kernel)
            + u64::from(self.tx_kernel)
            + u64::from(self.held)
    }
}

/// An AF_XDP socket bound to one queue of one interface, with its own
/// UMEM. See the [module docs](crate::xsk) for frame ownership.
pub struct XskSocket {
    // Field order is drop order: the socket closes before the rings and the
    // UMEM it references are unmapped.
    fd: OwnedFd,
    rx: ConsRing<libc::xdp_desc>,
    tx: ProdRing<libc::xdp_desc>,
    fill: ProdRing<u64>,
    comp: ConsRing<u64>,
    umem: Umem,
    alloc: FrameAlloc,
    mode: XskMode,
    ifindex: u32,
    queue: u32,
    /// Identifies this socket in HeldFrames.
    id: u64,
    /// Frames the kernel should hold for receiving.
    fill_target: u32,
    rx_kernel: u32,
    tx_kernel: u32,
    held: u32,
    counters: XskCounters,
}

impl fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskSocket")
            .field("fd", &self.fd)
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .field("frames", &self.frame_counts())
            .finish_non_exhaustive()
    }
}

impl XskSocket {
    /// Creates a socket with a fresh UMEM, binds it to queue `queue` of
    /// interface `ifindex` (in the calling thread's network namespace) with
    /// XDP_USE_NEED_WAKEUP, and gives the kernel half the frames (at most a
    /// fill ring's worth) to receive into.
    ///
    /// With [`ZeroCopy::Auto`] it binds with XDP_ZEROCOPY first and, when
    /// that fails with EOPNOTSUPP, starts over in copy mode; [`mode`]
    /// reports the result. Errors are the OS errors as returned (EINVAL for
    /// a bad geometry, ENODEV for a bad ifindex, EBUSY when the queue
    /// already has a socket, EOPNOTSUPP for a forced zero-copy the driver
    /// lacks, EPERM without CAP_NET_RAW), for the caller to put in context.
    ///
    /// [`mode`]: XskSocket::mode
    pub fn new(ifindex: u32, queue: u32, opts: XskOptions) -> io::Result<XskSocket> {
        check_options(&opts)?;
        match opts.zero_copy {
            ZeroCopy::Off => Self::open(ifindex, queue, &opts, libc::XDP_COPY),
            ZeroCopy::Force => Self::open(ifindex, queue, &opts, libc::XDP_ZEROCOPY),
            ZeroCopy::Auto => match Self::open(ifindex, queue, &opts, libc::XDP_ZEROCOPY) {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    Self::open(ifindex, queue, &opts, libc::XDP_COPY)
                }
                other => other,
            },
        }
    }

    /// One complete attempt: socket, UMEM, rings, bind. A failed bind is
    /// not retried on the same socket (its UMEM state after a failed bind
    /// is the kernel's business); the caller starts over.
    fn open(ifindex: u32, queue: u32, opts: &XskOptions, mode_flag: u16) -> io::Result<XskSocket> {
        let umem = Umem::new(opts.frames, opts.frame_size)?;
        let fd = socket_for(&umem, opts.ring_size)?;
        let raw = fd.as_raw_fd();
        // Mapped before the bind, the order libxdp uses; mapping a bound
        // socket's rings (see `adopt`) works on the 6.18 kernel here, but
        // is needed only there.
        let rings = Rings::map(raw, opts.ring_size)?;
        bind(raw, ifindex, queue, mode_flag)?;
        let mode = bound_mode(raw)?;
        Ok(Self::assemble(
            fd,
            rings,
            umem,
            opts.ring_size,
            ifindex,
            queue,
            mode,
        ))
    }

    /// A socket that another process created, registered and bound
    /// ([`super::XskHandover`]): maps its rings and its UMEM's memory file
    /// here, and gives the kernel its share of frames to receive into. The
    /// rings of a bound socket can be mapped on the kernels this runs on
    /// (6.18 here); one that refuses (EBUSY) leaves that uplink on UDP.
    pub(super) fn adopt(
        fd: OwnedFd,
        umem_file: BorrowedFd<'_>,
        opts: &XskOptions,
        ifindex: u32,
        queue: u32,
    ) -> io::Result<XskSocket> {
        check_options(opts)?;
        let umem = Umem::map_shared(umem_file, opts.frames, opts.frame_size)?;
        let rings = Rings::map(fd.as_raw_fd(), opts.ring_size)?;
        // Asked of the socket, not taken from the sender's word.
        let mode = bound_mode(fd.as_raw_fd())?;
        Ok(Self::assemble(
            fd,
            rings,
            umem,
            opts.ring_size,
            ifindex,
            queue,
            mode,
        ))
    }

    fn assemble(
        fd: OwnedFd,
        rings: Rings,
        umem: Umem,
        ring_size: u32,
        ifindex: u32,
        queue: u32,
        mode: XskMode,
    ) -> XskSocket {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut sock = XskSocket {
            fd,
            rx: rings.rx,
            tx: rings.tx,
            fill: rings.fill,
            comp: rings.comp,
            alloc: FrameAlloc::new(umem.frames(), umem.frame_size()),
            fill_target: (umem.frames() / 2).min(ring_size),
            umem,
            mode,
            ifindex,
            queue,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            rx_kernel: 0,
            tx_kernel: 0,
            held: 0,
            counters: XskCounters::default(),
        };
        sock.refill();
        sock
    }

    /// The mode the socket is bound in.
    pub fn mode(&self) -> XskMode {
        self.mode
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub fn frame_size(&self) -> usize {
        self.umem.frame_size() as usize
    }

    /// Frames the kernel is kept supplied with for receiving.
    pub fn rx_quota(&self) -> u32 {
        self.fill_target
    }

    /// User-space counters.
    pub fn counters(&self) -> XskCounters {
        self.counters
    }

    /// Where the frames are right now.
    pub fn frame_counts(&self) -> FrameCounts {
        FrameCounts {
            free: self.alloc.len() as u32,
            rx_kernel: self.rx_kernel,
            tx_kernel: self.tx_kernel,
            held: self.held,
        }
    }

    /// Whether the kernel asks for a wakeup to process the fill ring
    /// (`rx_batch` issues it itself).
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Whether the kernel asks for a `sendto` kick to process the tx ring
    /// (`flush` issues it itself).
    pub fn tx_needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain integers; all-zero is valid.
        let mut st: libc::xdp_statistics = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: st is writable for `len` bytes, len is in/out as the call
        // requires; an older kernel fills a prefix and the rest stays zero.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(XskStats {
            rx_dropped: st.rx_dropped,
            rx_invalid_descs: st.rx_invalid_descs,
            tx_invalid_descs: st.tx_invalid_descs,
            rx_ring_full: st.rx_ring_full,
            rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: st.tx_ring_empty_descs,
        })
    }

    /// Waits up to `timeout_ms` (-1: forever) for received frames; true when
    /// the rx ring has some. EINTR reads as false.
    pub fn wait_rx(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(rc > 0 && pfd.revents & libc::POLLIN != 0)
    }

    /// Takes up to `max` received frames off the rx ring and calls `f` with
    /// each, in order. After `f` returns, the frame is recycled (back to
    /// the kernel for receiving) unless `f` called [`RxFrame::transmit`]
    /// (queued on the tx ring, sent at the next [`flush`]) or
    /// [`RxFrame::hold`]. Then tops the fill ring up. Returns the number of
    /// frames taken.
    ///
    /// [`flush`]: XskSocket::flush
    pub fn rx_batch<F>(&mut self, max: usize, mut f: F) -> usize
    where
        F: FnMut(RxFrame<'_>),
    {
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        let n = self.rx.available().min(want);
        let mut taken = 0usize;
        for _ in 0..n {
            let Some(desc) = self.rx.pop() else { break };
            taken += 1;
            self.rx_kernel = self.rx_kernel.saturating_sub(1);
            self.counters.rx_frames += 1;
            let Some((base, offset)) = self.umem.locate(desc.addr, desc.len) else {
                self.counters.rx_bad_descs += 1;
                if let Some(base) = self.umem.frame_base(desc.addr) {
                    self.free_frame(base);
                }
                continue;
            };
            let mut verdict = Verdict::Recycle;
            {
                // SAFETY: base is a frame inside the UMEM (locate); the
                // kernel handed it to us through the rx ring and owns it no
                // more; this is the only slice of it, and it dies with the
                // RxFrame before the frame goes anywhere else.
                let frame = unsafe { self.umem.frame_mut(base) };
                f(RxFrame {
                    frame,
                    base,
                    offset,
                    len: desc.len,
                    verdict: &mut verdict,
                    owner: self.id,
                });
            }
            match verdict {
                Verdict::Recycle => self.free_frame(base),
                Verdict::Transmit { offset, len } => {
                    if !self.push_tx(base, offset, len) {
                        self.counters.tx_dropped += 1;
                        self.free_frame(base);
                    }
                }
                Verdict::Hold => self.held += 1,
            }
        }
        self.rx.release();
        self.refill();
        taken
    }

    /// Gives a held frame back (to the fill ring, or the free list when the
    /// kernel already has its receive quota). False when the frame belongs
    /// to another socket (counted in `frame_errors`).
    pub fn recycle(&mut self, frame: HeldFrame) -> bool {
        if frame.owner != self.id {
            self.counters.frame_errors += 1;
            return false;
        }
        self.held = self.held.saturating_sub(1);
        self.free_frame(frame.base);
        self.refill();
        true
    }

    /// The whole buffer of a held frame (its data is at
    /// `frame.offset()..frame.offset() + frame.len()`); None for a frame of
    /// another socket.
    pub fn held_buf(&mut self, frame: &HeldFrame) -> Option<&mut [u8]> {
        if frame.owner != self.id {
            return None;
        }
        // SAFETY: the HeldFrame token (not Clone, made only by RxFrame::hold
        // or TxFrame::hold of this socket, consumed by recycle/transmit_held) proves the
        // frame is ours and out of the kernel's hands; the slice borrows
        // self mutably, so no other slice of any frame is live.
        Some(unsafe { self.umem.frame_mut(frame.base) })
    }

    /// Queues a held frame for transmission, `len` bytes from `offset` in
    /// its buffer (sent at the next [`flush`]). Gives the frame back when
    /// the tx ring is full, the range is empty or leaves the frame, or the
    /// frame is another socket's.
    ///
    /// [`flush`]: XskSocket::flush
    pub fn transmit_held(
        &mut self,
        frame: HeldFrame,
        offset: usize,
        len: usize,
    ) -> Result<(), HeldFrame> {
        if frame.owner != self.id {
            return Err(frame);
        }
        let (Ok(off), Ok(l)) = (u32::try_from(offset), u32::try_from(len)) else {
            return Err(frame);
        };
        if !self.push_tx(frame.base, off, l) {
            return Err(frame);
        }
        self.held = self.held.saturating_sub(1);
        Ok(())
    }

    /// A free frame to build an outgoing packet in, if there is a free
    /// frame and a free tx slot. When there is not, it reaps completions
    /// and, if the kernel still has unsent descriptors, flushes once before
    /// giving up. Write into [`TxFrame::buf`], then [`TxFrame::submit`];
    /// dropping the TxFrame unsubmitted returns the frame.
    pub fn tx_frame(&mut self) -> Option<TxFrame<'_>> {
        if self.alloc.is_empty() || self.tx.free() == 0 {
            self.reap_completions();
            if (self.alloc.is_empty() || self.tx.free() == 0)
                && (self.tx.pending() != 0 || self.tx.unconsumed() != 0)
            {
                // Errors surface at the caller's own flush.
                let _ = self.flush();
            }
            if self.tx.free() == 0 {
                self.counters.tx_no_frame += 1;
                return None;
            }
        }
        let Some(base) = self.alloc.alloc() else {
            self.counters.tx_no_frame += 1;
            return None;
        };
        Some(TxFrame {
            sock: self,
            base,
            submitted: false,
        })
    }

    /// Publishes every queued tx descriptor, kicks the kernel with
    /// `sendto(MSG_DONTWAIT)` while it asks for it (copy mode: always; each
    /// kick sends at most 32 frames, so one flush may kick several times),
    /// and reaps completions. Transient refusals (EAGAIN, EBUSY, ENOBUFS,
    /// ENETDOWN) leave the rest queued for the next flush and are not
    /// errors.
    pub fn flush(&mut self) -> io::Result<()> {
        self.tx.publish();
        let mut rounds = self.tx.unconsumed().div_ceil(32) + 2;
        loop {
            self.reap_completions();
            if self.tx.unconsumed() == 0 || !self.tx.needs_wakeup() || rounds == 0 {
                return Ok(());
            }
            rounds -= 1;
            self.counters.tx_kicks += 1;
            // SAFETY: a zero-length sendto with no buffer and no address is
            // the documented AF_XDP tx kick; nothing is read or written.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                if self.mode == XskMode::ZeroCopy {
                    // The driver sends asynchronously after the kick.
                    self.reap_completions();
                    return Ok(());
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // More than one kick's budget, or the completion ring or
                // device queue was full: reap (top of the loop) and retry.
                Some(libc::EAGAIN | libc::EBUSY) => self.counters.tx_kick_busy += 1,
                Some(libc::ENOBUFS | libc::ENETDOWN) => {
                    self.counters.tx_kick_busy += 1;
                    self.reap_completions();
                    return Ok(());
                }
                _ => return Err(e),
            }
        }
    }

    /// Moves completed tx frames to the free list; returns how many.
    pub fn reap_completions(&mut self) -> u32 {
        let n = self.comp.available();
        for _ in 0..n {
            let Some(addr) = self.comp.pop() else { break };
            if self.alloc.free(addr) {
                self.tx_kernel = self.tx_kernel.saturating_sub(1);
                self.counters.tx_completed += 1;
            } else {
                self.counters.frame_errors += 1;
            }
        }
        self.comp.release();
        n
    }

    fn free_frame(&mut self, addr: u64) {
        if !self.alloc.free(addr) {
            self.counters.frame_errors += 1;
        }
    }

    /// Puts `len` bytes at `offset` of frame `base` on the tx ring
    /// (unpublished). False when the range is empty or leaves the frame, or
    /// the ring is full.
    fn push_tx(&mut self, base: u64, offset: u32, len: u32) -> bool {
        let frame = self.umem.frame_size();
        if len == 0 || u64::from(offset) + u64::from(len) > u64::from(frame) {
            return false;
        }
        let desc = libc::xdp_desc {
            addr: base + u64::from(offset),
            len,
            options: 0,
        };
        if !self.tx.push(desc) {
            return false;
        }
        self.tx_kernel += 1;
        self.counters.tx_submitted += 1;
        true
    }

    /// Tops the kernel's receive share up to the quota from the free list,
    /// and wakes the kernel if the fill ring asks for it.
    fn refill(&mut self) {
        let want = self.fill_target.saturating_sub(self.rx_kernel);
        if want == 0 {
            return;
        }
        if (self.alloc.len() as u64) < u64::from(want) {
            self.reap_completions();
        }
        let mut pushed = 0;
        while pushed < want {
            let Some(addr) = self.alloc.alloc() else {
                break;
            };
            if !self.fill.push(addr) {
                self.free_frame(addr);
                break;
            }
            pushed += 1;
        }
        if pushed != 0 {
            self.fill.publish();
            self.rx_kernel += pushed;
        }
        if self.fill.needs_wakeup() {
            self.counters.rx_wakeups += 1;
            // SAFETY: a zero-length recvfrom with no buffer and no address is
            // the documented AF_XDP rx wakeup; nothing is read or written.
            // Its result (usually EAGAIN) carries no information.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                    ptr::null_mut(),
                );
            }
        }
    }
}

impl AsRawFd for XskSocket {
    /// The socket's fd, for an XSKMAP entry and for poll.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Recycle,
    Transmit { offset: u32, len: u32 },
    Hold,
}

/// One received frame, lent to the [`XskSocket::rx_batch`] callback.
/// Dropping it (the default) recycles the frame.
pub struct RxFrame<'a> {
    frame: &'a mut [u8],
    base: u64,
    offset: u32,
    len: u32,
    verdict: &'a mut Verdict,
    owner: u64,
}

impl RxFrame<'_> {
    /// The received bytes (Ethernet header first).
    pub fn data(&self) -> &[u8] {
        let (o, l) = (self.offset as usize, self.len as usize);
        self.frame.get(o..o + l).unwrap_or(&[])
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        let (o, l) = (self.offset as usize, self.len as usize);
        self.frame.get_mut(o..o + l).unwrap_or(&mut [])
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the data starts in [`buf`](RxFrame::buf) (the headroom in
    /// front of it: 256 bytes in copy mode).
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    /// UMEM address of the data.
    pub fn addr(&self) -> u64 {
        self.base + u64::from(self.offset)
    }

    /// The whole frame buffer, headroom and tailroom included, for building
    /// a reply in place.
    pub fn buf(&mut self) -> &mut [u8] {
        self.frame
    }

    /// Moves the data window to `len` bytes at `offset` of [`buf`]; false
    /// (and no change) if that leaves the frame.
    ///
    /// [`buf`]: RxFrame::buf
    pub fn set_data(&mut self, offset: usize, len: usize) -> bool {
        match offset.checked_add(len) {
            Some(end) if end <= self.frame.len() => {
                // Both fit in u32: the frame is at most 4 KiB.
                self.offset = offset as u32;
                self.len = len as u32;
                true
            }
            _ => false,
        }
    }

    /// Sends the current data window from this socket's tx ring at the next
    /// flush instead of recycling. If it cannot be queued (empty window, tx
    /// ring full) the frame is recycled and counted in `tx_dropped`.
    pub fn transmit(self) {
        *self.verdict = Verdict::Transmit {
            offset: self.offset,
            len: self.len,
        };
    }

    /// Keeps the frame past the callback. The caller must hand the token to
    /// [`XskSocket::recycle`] or [`XskSocket::transmit_held`]; a dropped
    /// token loses the frame (visible in [`XskSocket::frame_counts`]).
    pub fn hold(self) -> HeldFrame {
        *self.verdict = Verdict::Hold;
        HeldFrame {
            owner: self.owner,
            base: self.base,
            offset: self.offset,
            len: self.len,
        }
    }
}

/// A frame kept by the caller: received and kept past the rx callback, or
/// taken for transmission and not yet queued. Not `Clone`: exactly one
/// token per frame, consumed when the frame is given back.
#[must_use = "a dropped HeldFrame never returns to the fill ring; pass it to recycle()"]
#[derive(Debug, PartialEq, Eq)]
pub struct HeldFrame {
    owner: u64,
    base: u64,
    offset: u32,
    len: u32,
}

impl HeldFrame {
    /// UMEM address of the data.
    pub fn addr(&self) -> u64 {
        self.base + u64::from(self.offset)
    }

    /// Where the data starts in the frame buffer.
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A free frame for an outgoing packet, from [`XskSocket::tx_frame`]. A
/// tx ring slot is guaranteed for it; dropped unsubmitted, the frame goes
/// back to the free list.
pub struct TxFrame<'a> {
    sock: &'a mut XskSocket,
    base: u64,
    submitted: bool,
}

impl TxFrame<'_> {
    /// UMEM address of the frame.
    pub fn addr(&self) -> u64 {
        self.base
    }

    /// The whole frame buffer (frame_size bytes; contents are whatever the
    /// frame last held).
    pub fn buf(&mut self) -> &mut [u8] {
        // SAFETY: the frame was taken off the free list for this TxFrame, so
        // neither the kernel nor any other slice has it; the slice borrows
        // self, so it is gone before submit/drop hands the frame on.
        unsafe { self.sock.umem.frame_mut(self.base) }
    }

    /// Queues the first `len` bytes of the buffer for sending (at the next
    /// flush). False, and the frame is freed, when `len` is 0 or larger than
    /// the frame.
    pub fn submit(self, len: usize) -> bool {
        self.submit_at(0, len)
    }

    /// Queues `len` bytes starting at `offset` of the buffer (headers built
    /// in front of a payload written at a fixed offset, say).
    pub fn submit_at(mut self, offset: usize, len: usize) -> bool {
        let (Ok(off), Ok(l)) = (u32::try_from(offset), u32::try_from(len)) else {
            self.sock.counters.tx_dropped += 1;
            return false;
        };
        if self.sock.push_tx(self.base, off, l) {
            self.submitted = true;
            true
        } else {
            self.sock.counters.tx_dropped += 1;
            false
        }
    }
}

impl TxFrame<'_> {
    /// Keeps the frame to finish later (a batch seals all its packets
    /// before any is queued). The token goes to
    /// [`XskSocket::transmit_held`] or [`XskSocket::recycle`] like a held
    /// received frame.
    pub fn hold(mut self) -> HeldFrame {
        self.submitted = true;
        self.sock.held += 1;
        HeldFrame {
            owner: self.sock.id,
            base: self.base,
            offset: 0,
            len: 0,
        }
    }
}

impl Drop for TxFrame<'_> {
    fn drop(&mut self) {
        if !self.submitted {
            self.sock.free_frame(self.base);
        }
    }
}

fn setsockopt_u32(fd: RawFd, opt: libc::c_int, v: u32) -> io::Result<()> {
    // SAFETY: v is a live u32 and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (&v as *const u32).cast(),
            mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn mmap_offsets(fd: RawFd) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: xdp_mmap_offsets is plain integers; all-zero is valid.
    let mut off: libc::xdp_mmap_offsets = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: off is writable for len bytes; len is in/out.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != mem::size_of::<libc::xdp_mmap_offsets>() {
        // Pre-5.4 layout: no ring flags, so no need_wakeup.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "AF_XDP without need_wakeup ring flags (kernel older than 5.4)",
        ));
    }
    Ok(off)
}

fn xdp_options(fd: RawFd) -> io::Result<u32> {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: opts is writable for len bytes; len is in/out.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut opts as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(opts.flags)
}

/// Checks the geometry and the ring size.
pub(super) fn check_options(opts: &XskOptions) -> io::Result<()> {
    check_geometry(opts.frames, opts.frame_size)?;
    if !opts.ring_size.is_power_of_two() || opts.ring_size > MAX_RING_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "AF_XDP ring size {}: must be a power of two up to {MAX_RING_SIZE}",
                opts.ring_size
            ),
        ));
    }
    Ok(())
}

/// The mode a bound socket is in.
pub(super) fn bound_mode(fd: RawFd) -> io::Result<XskMode> {
    Ok(if xdp_options(fd)? & libc::XDP_OPTIONS_ZEROCOPY != 0 {
        XskMode::ZeroCopy
    } else {
        XskMode::Copy
    })
}

/// The four rings of a socket, mapped.
struct Rings {
    fill: ProdRing<u64>,
    comp: ConsRing<u64>,
    rx: ConsRing<libc::xdp_desc>,
    tx: ProdRing<libc::xdp_desc>,
}

impl Rings {
    /// Maps the rings of `size` entries that were set up on socket `raw`.
    fn map(raw: RawFd, size: u32) -> io::Result<Rings> {
        let off = mmap_offsets(raw)?;
        Ok(Rings {
            fill: ProdRing::new(RawRing::<u64>::map(
                raw,
                &off.fr,
                size,
                libc::XDP_UMEM_PGOFF_FILL_RING as i64,
            )?),
            comp: ConsRing::new(RawRing::<u64>::map(
                raw,
                &off.cr,
                size,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
            )?),
            rx: ConsRing::new(RawRing::<libc::xdp_desc>::map(
                raw,
                &off.rx,
                size,
                libc::XDP_PGOFF_RX_RING,
            )?),
            tx: ProdRing::new(RawRing::<libc::xdp_desc>::map(
                raw,
                &off.tx,
                size,
                libc::XDP_PGOFF_TX_RING,
            )?),
        })
    }
}

/// A new AF_XDP socket with `umem` registered and its four rings of
/// `ring_size` entries set up, not bound yet.
pub(super) fn socket_for(umem: &Umem, ring_size: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a freshly created fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    umem.register(raw)?;
    for opt in [
        libc::XDP_UMEM_FILL_RING,
        libc::XDP_UMEM_COMPLETION_RING,
        libc::XDP_RX_RING,
        libc::XDP_TX_RING,
    ] {
        setsockopt_u32(raw, opt, ring_size)?;
    }
    Ok(fd)
}

/// Binds socket `raw` to `queue` of `ifindex`, with need_wakeup and
/// `mode_flag` (XDP_COPY or XDP_ZEROCOPY).
pub(super) fn bind(raw: RawFd, ifindex: u32, queue: u32, mode_flag: u16) -> io::Result<()> {
    let sa = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: mode_flag | libc::XDP_USE_NEED_WAKEUP,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: sa is a valid sockaddr_xdp for the call and its size is
    // passed.
    let rc = unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_xdp).cast(),
            mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
