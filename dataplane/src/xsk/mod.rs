//! Raw AF_XDP sockets: the data plane's packet I/O on the XDP fast path.
//!
//! One [`XskSocket`] per worker, bound to one NIC rx/tx queue, with its own
//! UMEM ([`XskOptions::frames`] frames of 2 or 4 KiB) and its four rings
//! (fill, completion, rx, tx). An XDP program redirects the queue's
//! WireGuard transport messages into the socket through an XSKMAP entry at
//! the queue's index (`dataplane::xdp` loads it; pass it
//! [`as_raw_fd`](std::os::fd::AsRawFd::as_raw_fd)).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use dataplane::xsk::{XskOptions, XskSocket};
//! let mut sock = XskSocket::new(2, 0, XskOptions::default())?;
//! println!("AF_XDP bound in {} mode", sock.mode());
//! loop {
//!     sock.wait_rx(100)?;
//!     sock.rx_batch(64, |frame| {
//!         let _packet: &[u8] = frame.data();
//!         // returning (or bailing out early) recycles the frame
//!     });
//!     if let Some(mut tx) = sock.tx_frame() {
//!         let n = 60; // build the Ethernet frame in tx.buf()
//!         tx.buf()[..n].fill(0);
//!         tx.submit(n);
//!     }
//!     sock.flush()?; // publishes tx and kicks the kernel (copy mode)
//! }
//! # }
//! ```
//!
//! # Why raw `libc`
//!
//! Everything an AF_XDP socket needs — `sockaddr_xdp`, `xdp_umem_reg`,
//! `xdp_mmap_offsets`, `xdp_desc`, `xdp_statistics`, the socket options and
//! mmap page offsets — is already in the `libc` crate, and the ring protocol
//! is a few dozen lines of index arithmetic. Binding libxdp (or xsk-rs,
//! which builds libxdp from C sources and wants m4, clang, libelf and zlib)
//! would add a C build dependency and hide the two things this data plane
//! must control exactly: how many descriptors go on the fill ring (xsk-rs's
//! produce is all-or-nothing, and offering more than the ring holds fails),
//! and where every frame is at every moment, so that no drop path can lose
//! one. Here frame ownership is explicit (below, and [`FrameCounts`]), the
//! allocator never allocates per packet, and the index arithmetic is unit
//! tested without a kernel.
//!
//! # Frame ownership
//!
//! A received frame is lent to the [`XskSocket::rx_batch`] callback as an
//! [`RxFrame`] and recycled to the fill ring when the callback returns —
//! including on every early return — unless the callback calls
//! [`RxFrame::transmit`] (send it back out of this socket, after editing it
//! in place) or [`RxFrame::hold`] (keep it as a [`HeldFrame`] token, which
//! only [`XskSocket::recycle`] or [`XskSocket::transmit_held`] consume). A
//! [`TxFrame`] dropped without [`TxFrame::submit`] returns its frame.
//!
//! # Facts measured on veth (kernel 6.18, 2 vCPUs)
//!
//! * `XDP_ZEROCOPY` bind: EOPNOTSUPP; [`ZeroCopy::Auto`] falls back to copy
//!   mode (a fresh socket and UMEM, not a second bind of the failed one).
//! * Copy mode, tx: the ring's NEED_WAKEUP flag is set from bind on and
//!   stays set, so every [`XskSocket::flush`] with frames queued costs
//!   `sendto` calls; each sends at most 32 frames (the kernel's per-call
//!   budget, returning EAGAIN with more left) and `flush` kicks again. The
//!   transmit runs inside the syscall; completions arrive when the receiver
//!   has taken the skb, which may be after `flush` returns (32 of 64 were
//!   complete at return in one run) — `tx_frame` and `flush` reap them.
//! * Copy mode: `poll` on the socket also drives tx (the kernel runs its tx
//!   path on every poll while NEED_WAKEUP is set; visible as
//!   `tx_ring_empty_descs` growing by one per poll with nothing queued).
//! * Copy mode, rx: the fill ring's NEED_WAKEUP flag is never set, so
//!   `rx_batch` issues no `recvfrom` wakeups. Received data starts 256
//!   bytes (XDP_PACKET_HEADROOM) into its frame.
//! * A burst larger than the receive quota (frames the kernel holds) is
//!   dropped at the socket and counted in `rx_dropped` and
//!   `rx_fill_ring_empty_descs`; with the default geometry 20,000
//!   back-to-back datagrams arrived without loss.
//! * A frame longer than the device MTU is completed (the frame comes back)
//!   but never delivered; no counter shows it. Keep frames within the MTU.

mod handover;
mod ring;
mod socket;
mod umem;

#[cfg(test)]
mod testprog;
#[cfg(test)]
mod tests;

pub use handover::XskHandover;
pub use socket::{
    FrameCounts, HeldFrame, RxFrame, TxFrame, XskCounters, XskMode, XskOptions, XskSocket,
    XskStats, ZeroCopy, MAX_RING_SIZE,
};
pub use umem::{FrameAlloc, FRAME_SIZES, MAX_FRAMES};
