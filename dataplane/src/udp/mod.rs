//! The WireGuard listen port: a batched UDP socket for the portable backend
//! and for the control process's handshakes.
//!
//! One dual-stack IPv6 socket per worker, all bound to the same port with
//! SO_REUSEPORT so the kernel spreads peers (by 4-tuple hash) across workers.
//! Datagrams move `MAX_BATCH` at a time with recvmmsg/sendmmsg; every array
//! the kernel reads or writes (mmsghdr, iovec, addresses, control messages)
//! is allocated once, in the socket, so the packet loop allocates nothing.
//!
//! Sticky source: a server with several addresses must answer a peer from
//! the address the peer wrote to, or the peer's NAT/firewall drops the reply
//! and roaming breaks. Each received datagram reports its local address
//! (IP_PKTINFO / IPV6_PKTINFO), the caller keeps it with the peer's
//! endpoint, and passes it back as [`SendMsg::src`]. When that address
//! disappears the kernel refuses the message; it is then sent again with a
//! kernel-chosen source and the caller is told to forget the stale one, as
//! the kernel's WireGuard does.
//!
//! Offloads: the kernel's cost is per socket buffer, not per byte, so where
//! it allows (UDP_SEGMENT, UDP_GRO; `WIRESPEED_UDP_OFFLOAD=off` turns both
//! off) datagrams to one destination leave as trains of up to
//! [`MAX_SEGMENTS`] in one buffer (`gso.rs`), and datagrams of one flow
//! arrive coalesced into one slot, to be cut at
//! [`RecvSlot::segment_size`] ([`RecvSlot::segments`]).

use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

mod cmsg;
mod gso;

use cmsg::{CmsgBuf, CMSG_BUF_LEN};
pub use gso::{MAX_SEGMENTS, MAX_TRAIN_BYTES};

/// Most datagrams one `recv_batch` / one `sendmmsg` moves.
pub const MAX_BATCH: usize = 64;
// send_batch tracks a chunk's messages in a u64 bitmask.
const _: () = assert!(MAX_BATCH <= 64);

/// Largest UDP payload a socket can receive: 65535 bytes of IPv6 payload
/// length minus the 8-byte UDP header (IPv4 tops out 20 bytes lower).
///
/// [`RecvSlot::new`] uses this rather than the ~1,500 bytes a WireGuard
/// datagram has on a 1,500-byte path: a peer whose inner MTU is larger than
/// the path (jumbo frames, loopback, IP fragmentation) sends bigger
/// datagrams, and a short buffer would silently cut them. Only the bytes a
/// datagram actually fills are ever touched, so the untouched tail of each
/// slot costs address space, not memory or cache.
pub const MAX_UDP_PAYLOAD: usize = 65535 - 8;

/// Receive and send buffer each socket asks for (as wireguard-go does):
/// a worker that is busy for a few milliseconds must not drop a burst.
pub const SOCKET_BUFFER_BYTES: usize = 7 << 20;

/// One received datagram: a buffer the caller owns and reuses, and what
/// `recv_batch` learned about the datagram in it.
pub struct RecvSlot {
    buf: Box<[u8]>,
    len: usize,
    src: SocketAddr,
    local: Option<IpAddr>,
    ifindex: u32,
    segment_size: usize,
    truncated: bool,
}

impl RecvSlot {
    /// A slot that holds any UDP datagram ([`MAX_UDP_PAYLOAD`] bytes).
    pub fn new() -> RecvSlot {
        RecvSlot::with_capacity(MAX_UDP_PAYLOAD)
    }

    /// A slot of `capacity` bytes; longer datagrams arrive cut short and
    /// flagged [`truncated`](Self::truncated).
    pub fn with_capacity(capacity: usize) -> RecvSlot {
        RecvSlot {
            buf: vec![0; capacity].into_boxed_slice(),
            len: 0,
            src: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            local: None,
            ifindex: 0,
            segment_size: 0,
            truncated: false,
        }
    }

    /// Buffer size.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The datagram's payload.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The payload, writable so that it can be decrypted in place.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Payload length (at most [`capacity`](Self::capacity)).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the datagram was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Who sent it. IPv4 senders are plain `SocketAddr::V4`, never
    /// IPv4-mapped IPv6, whichever socket family received them.
    pub fn src(&self) -> SocketAddr {
        self.src
    }

    /// The local address the sender wrote to (the datagram's destination
    /// address): what a reply's [`SendMsg::src`] should be. IPv4 addresses
    /// are plain `IpAddr::V4`. None if the kernel did not say.
    pub fn local(&self) -> Option<IpAddr> {
        self.local
    }

    /// Index of the interface the datagram came in on; 0 if unknown.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// With UDP_GRO, the slot may hold several datagrams of one sender
    /// back to back: each this long but the last, which may be shorter.
    /// 0 when it holds one datagram.
    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    /// Where each datagram in the slot lies: one range, or one per
    /// coalesced datagram. An empty datagram is one empty range.
    pub fn segments(&self) -> impl Iterator<Item = Range<usize>> {
        let len = self.len;
        let step = match self.segment_size {
            0 => len.max(1),
            s => s,
        };
        (0..len.max(1))
            .step_by(step)
            .map(move |at| at..(at + step).min(len))
    }

    /// The datagram was longer than the slot and lost its tail: drop it.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl Default for RecvSlot {
    fn default() -> Self {
        RecvSlot::new()
    }
}

impl fmt::Debug for RecvSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvSlot")
            .field("len", &self.len)
            .field("src", &self.src)
            .field("local", &self.local)
            .field("ifindex", &self.ifindex)
            .field("segment_size", &self.segment_size)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

/// One datagram to send.
#[derive(Clone, Copy, Debug)]
pub struct SendMsg<'a> {
    /// Destination; `V4` or IPv4-mapped `V6` both reach an IPv4 peer.
    pub dst: SocketAddr,
    /// Source address to send from, normally the [`RecvSlot::local`] of the
    /// peer's last datagram; None (or an unspecified address) lets the
    /// kernel choose from the route.
    pub src: Option<IpAddr>,
    /// Payload.
    pub data: &'a [u8],
}

/// A non-blocking UDP socket that moves datagrams in batches; see the module
/// documentation.
pub struct UdpSocketBatch {
    fd: OwnedFd,
    dual_stack: bool,
    port: u16,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    /// Datagrams in each entry of the last sendmmsg (a train or one).
    entry_msgs: Box<[usize]>,
    gso: gso::GsoState,
    gro: bool,
}

// SAFETY: the raw pointers inside `hdrs` and `iovs` are rewritten before
// every system call that reads them and are meaningless in between; they
// only ever point into this struct's own boxes or into buffers borrowed for
// the duration of one `&mut self` call. Moving the struct to another thread
// therefore moves nothing that is shared.
unsafe impl Send for UdpSocketBatch {}
// SAFETY: `&self` methods only use the fd (system calls are thread-safe)
// and stack-local buffers; the pointer arrays are touched through `&mut
// self` alone.
unsafe impl Sync for UdpSocketBatch {}

impl fmt::Debug for UdpSocketBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocketBatch")
            .field("fd", &self.fd.as_raw_fd())
            .field("dual_stack", &self.dual_stack)
            .field("port", &self.port)
            .field("gso", &self.gso.on)
            .field("gro", &self.gro)
            .finish_non_exhaustive()
    }
}

impl UdpSocketBatch {
    /// Binds `[::]:port` dual-stack, or `0.0.0.0:port` where the kernel has
    /// no IPv6. With `reuseport`, other sockets (other workers) can bind the
    /// same port, each set with `reuseport` too, and the kernel spreads
    /// senders across them. Port 0 takes a free port: read it with
    /// [`local_port`](Self::local_port) and bind the other workers to it.
    pub fn bind(port: u16, reuseport: bool) -> io::Result<UdpSocketBatch> {
        let sock = match Self::open(true, port, reuseport) {
            Err(e) if ipv6_unavailable(&e) => Self::open(false, port, reuseport),
            other => other,
        };
        sock.map_err(|e| bind_error(e, port))
    }

    /// Binds `0.0.0.0:port`, IPv4 only: the fallback [`bind`](Self::bind)
    /// takes without IPv6, public so it can be chosen and tested.
    pub fn bind_v4(port: u16, reuseport: bool) -> io::Result<UdpSocketBatch> {
        Self::open(false, port, reuseport).map_err(|e| bind_error(e, port))
    }

    fn open(v6: bool, port: u16, reuseport: bool) -> io::Result<UdpSocketBatch> {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2) call with constant arguments.
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socket just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let fd_ref = fd.as_fd();
        if v6 {
            setsockopt_int(fd_ref, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
            setsockopt_int(fd_ref, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        }
        // IPv4 datagrams on the dual-stack socket report their destination
        // through this one too (as well as through IPV6_PKTINFO).
        setsockopt_int(fd_ref, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        if reuseport {
            setsockopt_int(fd_ref, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        // Best effort: a smaller buffer only costs drops under bursts, so
        // failing to enlarge it must not stop the port from opening.
        let size = SOCKET_BUFFER_BYTES as libc::c_int;
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if setsockopt_int(fd_ref, libc::SOL_SOCKET, force, size).is_err() {
                let _ = setsockopt_int(fd_ref, libc::SOL_SOCKET, plain, size);
            }
        }

        // SAFETY: sockaddr_storage is plain bytes; all-zero is valid.
        let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let any = if v6 {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0))
        } else {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        };
        let len = write_sockaddr(&mut name, any);
        // SAFETY: `name` holds a sockaddr of `len` bytes of the socket's family.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), ptr::from_ref(&name).cast(), len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let port = local_addr(fd.as_fd())?.port();

        // SAFETY: mmsghdr and iovec are C structs of integers and pointers;
        // all-zero (null pointers, zero lengths) is a valid value.
        let hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let iov: libc::iovec = unsafe { mem::zeroed() };
        let mut sock = UdpSocketBatch {
            fd,
            dual_stack: v6,
            port,
            hdrs: vec![hdr; MAX_BATCH].into_boxed_slice(),
            // A train's datagrams each have their own iovec.
            iovs: vec![iov; MAX_BATCH * MAX_SEGMENTS].into_boxed_slice(),
            names: vec![name; MAX_BATCH].into_boxed_slice(),
            cmsgs: vec![CmsgBuf::ZERO; MAX_BATCH].into_boxed_slice(),
            entry_msgs: vec![0; MAX_BATCH].into_boxed_slice(),
            gso: gso::GsoState::default(),
            gro: false,
        };
        let on = offload_wanted_by_env();
        sock.set_offloads(on, on);
        Ok(sock)
    }

    /// Turns segmentation offload (trains on the way out) and receive
    /// coalescing on or off, as far as the kernel allows; returns what is
    /// on now, as [`offloads`](Self::offloads) does.
    pub fn set_offloads(&mut self, gso: bool, gro: bool) -> (bool, bool) {
        let fd = self.fd.as_fd();
        // Asking for the option is how a kernel without UDP_SEGMENT (before
        // 4.18) says so; the value itself is per message.
        self.gso.on = gso && getsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok();
        let want = libc::c_int::from(gro);
        self.gro = setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, want).is_ok() && gro;
        self.offloads()
    }

    /// (segmentation offload, receive coalescing): whether trains are sent
    /// and whether received datagrams may arrive coalesced.
    pub fn offloads(&self) -> (bool, bool) {
        (self.gso.on, self.gro)
    }

    /// Trains the kernel refused so far, whose datagrams then went out one
    /// by one (their destinations get no more trains).
    pub fn gso_fallbacks(&self) -> u64 {
        self.gso.fallbacks
    }

    /// A second handle on the same socket with its own batch arrays, so one
    /// thread can receive while another sends.
    pub fn try_clone(&self) -> io::Result<UdpSocketBatch> {
        Ok(UdpSocketBatch {
            fd: self.fd.try_clone()?,
            dual_stack: self.dual_stack,
            port: self.port,
            hdrs: self.hdrs.clone(),
            iovs: self.iovs.clone(),
            names: self.names.clone(),
            cmsgs: self.cmsgs.clone(),
            entry_msgs: self.entry_msgs.clone(),
            gso: self.gso.clone(),
            gro: self.gro,
        })
    }

    /// The bound port (the kernel's choice when bound to port 0).
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// True for the dual-stack IPv6 socket, false for the IPv4 fallback.
    pub fn is_dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// Marks every outgoing datagram (SO_MARK) so policy routing can keep
    /// tunnel traffic out of the tunnel (wg's `fwmark`); 0 clears it.
    /// Needs CAP_NET_ADMIN.
    pub fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        setsockopt_int(
            self.fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            mark as libc::c_int,
        )
    }

    /// The (receive, send) buffer sizes the kernel granted, as it reports
    /// them (twice what was asked, for its bookkeeping overhead).
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        let rcv = getsockopt_int(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        let snd = getsockopt_int(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        Ok((
            usize::try_from(rcv).unwrap_or(0),
            usize::try_from(snd).unwrap_or(0),
        ))
    }

    /// Receives up to `min(slots.len(), MAX_BATCH)` datagrams with one
    /// recvmmsg and returns how many slots were filled, from the front.
    /// [`io::ErrorKind::WouldBlock`] when nothing is waiting.
    pub fn recv_batch(&mut self, slots: &mut [RecvSlot]) -> io::Result<usize> {
        let n = slots.len().min(MAX_BATCH);
        if n == 0 {
            return Ok(0);
        }
        for (i, slot) in slots[..n].iter_mut().enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: slot.buf.as_mut_ptr().cast(),
                iov_len: slot.buf.len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = ptr::from_mut(&mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_BUF_LEN as _;
            h.msg_hdr.msg_flags = 0;
        }
        let got = loop {
            // SAFETY: the first n headers point at n valid sockaddr_storage,
            // iovec and control buffers owned by self, and each iovec at a
            // slot buffer exclusively borrowed for this call, all with the
            // lengths given; the kernel writes within those lengths only.
            let rc = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                    ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        for (i, slot) in slots[..got.min(n)].iter_mut().enumerate() {
            let h = &self.hdrs[i];
            slot.len = (h.msg_len as usize).min(slot.buf.len());
            slot.truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            slot.src = read_sockaddr(&self.names[i], h.msg_hdr.msg_namelen)
                .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
            let info = cmsg::read_received(&h.msg_hdr);
            slot.local = info.local;
            slot.ifindex = info.ifindex;
            slot.segment_size = info.segment_size;
        }
        Ok(got.min(n))
    }

    /// Sends `msgs` with sendmmsg, `MAX_BATCH` per system call, and returns
    /// how many were sent, counted from the front.
    ///
    /// A message whose `src` the kernel refuses (EINVAL, ENETUNREACH or
    /// EADDRNOTAVAIL: the address was removed or cannot reach `dst`) is sent
    /// again without it, and `on_stale_source(i)` is called with its index
    /// so the caller can forget that source; a `src` of the other family
    /// than `dst` is dropped the same way.
    ///
    /// `Ok(n)` with `n < msgs.len()` means `msgs[n]` was not sent: either the
    /// socket buffer is full (EAGAIN; wait for POLLOUT), or `msgs[n]` itself
    /// fails, which calling again with `msgs[n..]` reports as `Err`. So `Err`
    /// is only ever about `msgs[0]` (unreachable destination, EMSGSIZE, a
    /// firewall's EPERM, an IPv6 destination on the IPv4 fallback socket):
    /// count it, drop it and go on with `msgs[1..]`.
    pub fn send_batch<F: FnMut(usize)>(
        &mut self,
        msgs: &[SendMsg<'_>],
        mut on_stale_source: F,
    ) -> io::Result<usize> {
        let mut done = 0;
        // Messages before this index go one per entry: their train was refused.
        let mut single_until = 0;
        // A refused train's destination, blamed once its first datagram
        // goes out alone (if that fails too, the train was not the problem).
        let mut refused_train: Option<SocketAddr> = None;
        while done < msgs.len() {
            let (entries, encode_err, mismatched) = self.prepare(msgs, done, single_until);
            if entries == 0 {
                let err = encode_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
                return if done == 0 { Err(err) } else { Ok(done) };
            }

            let rc = loop {
                // SAFETY: the first `entries` headers point at addresses,
                // control messages and iovecs owned by self (prepare wrote
                // them), and each iovec at a caller's payload borrowed for
                // this call, all with the lengths given; sendmmsg only reads
                // them (and writes msg_len).
                let rc = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        self.hdrs.as_mut_ptr(),
                        entries as libc::c_uint,
                        libc::MSG_DONTWAIT as _,
                    )
                };
                if rc >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break rc;
                }
            };
            if rc > 0 {
                if let Some(dst) = refused_train.take() {
                    self.gso.refuse(dst);
                }
                for i in 0..rc as usize {
                    let k = self.entry_msgs[i];
                    if mismatched & (1 << i) != 0 {
                        (done..done + k).for_each(&mut on_stale_source);
                    }
                    done += k;
                }
                continue;
            }
            // Nothing went: the error belongs to the first entry.
            let err = if rc == 0 {
                io::Error::from_raw_os_error(libc::EAGAIN)
            } else {
                io::Error::last_os_error()
            };
            if err.kind() == io::ErrorKind::WouldBlock {
                return Ok(done);
            }
            let k = self.entry_msgs[0];
            if k > 1 {
                // Never lose a refused train: its datagrams go again alone.
                single_until = done + k;
                refused_train = gso::refuses_trains(&err).then_some(msgs[done].dst);
                continue;
            }
            refused_train = None;
            let first = &msgs[done];
            if source_refused(&err) && has_source(first) {
                match send_one(self.fd.as_fd(), self.dual_stack, first, false) {
                    Ok(()) => {
                        on_stale_source(done);
                        done += 1;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
                    Err(e) => return if done == 0 { Err(e) } else { Ok(done) },
                }
            }
            return if done == 0 { Err(err) } else { Ok(done) };
        }
        Ok(done)
    }

    /// Lays out up to `MAX_BATCH` sendmmsg entries from `msgs[from..]`: a
    /// train where GSO is allowed (and `from` is past `single_until`), one
    /// datagram otherwise. Returns the number of entries, the error that
    /// stopped it early (only an address family the socket cannot reach),
    /// and a bitmask of entries whose source is of the wrong family.
    fn prepare(
        &mut self,
        msgs: &[SendMsg<'_>],
        from: usize,
        single_until: usize,
    ) -> (usize, Option<io::Error>, u64) {
        let mut entries = 0;
        let mut iov_used = 0;
        let mut at = from;
        let mut mismatched: u64 = 0;
        while entries < MAX_BATCH && at < msgs.len() {
            let msg = &msgs[at];
            let enc = match encode(
                msg,
                self.dual_stack,
                true,
                &mut self.names[entries],
                &mut self.cmsgs[entries],
            ) {
                Ok(enc) => enc,
                Err(e) => return (entries, Some(e), mismatched),
            };
            if enc.src_mismatch {
                mismatched |= 1 << entries;
            }
            let allowed = at >= single_until && self.gso.allows(msg.dst);
            let k = gso::train_len(&msgs[at..], allowed);
            let mut controllen = enc.controllen;
            if k > 1 {
                // Every segment but the last is this long (train_len made
                // sure), and a datagram fits in u16 as the kernel wants.
                let size = msg.data.len() as u16;
                controllen =
                    self.cmsgs[entries].push(controllen, libc::SOL_UDP, libc::UDP_SEGMENT, size);
            }
            for (iov, m) in self.iovs[iov_used..iov_used + k]
                .iter_mut()
                .zip(&msgs[at..at + k])
            {
                *iov = libc::iovec {
                    // The kernel only reads from a send buffer.
                    iov_base: m.data.as_ptr().cast_mut().cast(),
                    iov_len: m.data.len(),
                };
            }
            let h = &mut self.hdrs[entries];
            h.msg_len = 0;
            h.msg_hdr.msg_name = ptr::from_mut(&mut self.names[entries]).cast();
            h.msg_hdr.msg_namelen = enc.namelen;
            h.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovs[iov_used]);
            h.msg_hdr.msg_iovlen = k as _;
            if controllen == 0 {
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            } else {
                h.msg_hdr.msg_control = self.cmsgs[entries].0.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = controllen as _;
            }
            h.msg_hdr.msg_flags = 0;
            self.entry_msgs[entries] = k;
            iov_used += k;
            at += k;
            entries += 1;
        }
        (entries, None, mismatched)
    }

    /// Sends one datagram: the slow path (handshakes, cookie replies).
    /// Returns `Ok(true)` when `src` was stale and the datagram went out
    /// from a kernel-chosen address instead (forget `src`), `Ok(false)`
    /// when sent as asked. WouldBlock when the socket buffer is full.
    pub fn send_to(&self, dst: SocketAddr, src: Option<IpAddr>, data: &[u8]) -> io::Result<bool> {
        let msg = SendMsg { dst, src, data };
        match send_one(self.fd.as_fd(), self.dual_stack, &msg, true) {
            Ok(()) => Ok(src_mismatch(&msg)),
            Err(e) if source_refused(&e) && has_source(&msg) => {
                send_one(self.fd.as_fd(), self.dual_stack, &msg, false).map(|()| true)
            }
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for UdpSocketBatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UdpSocketBatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Errors that mean "this source address cannot be used" rather than "this
/// destination cannot be reached". Measured on Linux 6.18: a deleted IPv4
/// source gives ENETUNREACH (no route leaves from a non-local address), a
/// deleted IPv6 source EINVAL; EADDRNOTAVAIL covers addresses not usable
/// (yet). A destination that is unreachable anyway fails again without the
/// source, so the retry never hides a real error.
fn source_refused(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::ENETUNREACH | libc::EADDRNOTAVAIL)
    )
}

fn has_source(msg: &SendMsg<'_>) -> bool {
    msg.src.is_some_and(|s| !s.is_unspecified())
}

/// The message's source is of the other family than its destination.
fn src_mismatch(msg: &SendMsg<'_>) -> bool {
    let dst = canonical_sockaddr(msg.dst);
    match msg.src.map(canonical_ip) {
        Some(s) if !s.is_unspecified() => s.is_ipv4() != dst.is_ipv4(),
        _ => false,
    }
}

/// IPv4-mapped IPv6 becomes plain IPv4, so each address has one spelling.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_sockaddr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

struct Encoded {
    namelen: libc::socklen_t,
    controllen: usize,
    src_mismatch: bool,
}

/// Writes the destination (and, if `with_src`, the source control message)
/// of one message. Fails only for an IPv6 destination on an IPv4 socket.
fn encode(
    msg: &SendMsg<'_>,
    dual_stack: bool,
    with_src: bool,
    name: &mut libc::sockaddr_storage,
    cmsg: &mut CmsgBuf,
) -> io::Result<Encoded> {
    let dst = canonical_sockaddr(msg.dst);
    let src = msg.src.map(canonical_ip).filter(|s| !s.is_unspecified());
    let namelen = match (dst, dual_stack) {
        (SocketAddr::V6(_), false) => {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        }
        (SocketAddr::V4(v4), true) => write_sockaddr(
            name,
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0)),
        ),
        (dst, _) => write_sockaddr(name, dst),
    };
    let mismatch = src_mismatch(msg);
    let controllen = match (src, dst) {
        (Some(IpAddr::V4(s)), SocketAddr::V4(_)) if with_src => {
            // ipi_spec_dst is the source for sending; ipi_addr is ignored.
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(s).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            cmsg.push(0, libc::IPPROTO_IP, libc::IP_PKTINFO, info)
        }
        (Some(IpAddr::V6(s)), SocketAddr::V6(d)) if with_src && dual_stack => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: s.octets(),
                },
                // A link-local source needs the link the peer is on.
                ipi6_ifindex: if s.is_unicast_link_local() {
                    d.scope_id()
                } else {
                    0
                },
            };
            cmsg.push(0, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info)
        }
        _ => 0,
    };
    Ok(Encoded {
        namelen,
        controllen,
        src_mismatch: mismatch,
    })
}

/// Writes `addr` as a sockaddr_in or sockaddr_in6 and returns its length.
fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as
            // aligned as sockaddr_in.
            unsafe { ptr::write(ptr::from_mut(storage).cast::<libc::sockaddr_in>(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                // Same convention as std: passed through unswapped.
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and at least as
            // aligned as sockaddr_in6.
            unsafe { ptr::write(ptr::from_mut(storage).cast::<libc::sockaddr_in6>(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a sockaddr the kernel wrote; IPv4-mapped becomes `V4`.
fn read_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, and
            // sockaddr_storage is large and aligned enough to hold one.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6, and
            // sockaddr_storage is large and aligned enough to hold one.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// One sendmsg with stack buffers, so it needs neither `&mut self` nor the
/// batch arrays.
fn send_one(
    fd: BorrowedFd<'_>,
    dual_stack: bool,
    msg: &SendMsg<'_>,
    with_src: bool,
) -> io::Result<()> {
    // SAFETY: sockaddr_storage is plain bytes; all-zero is valid.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut cmsg = CmsgBuf::ZERO;
    let enc = encode(msg, dual_stack, with_src, &mut name, &mut cmsg)?;
    let mut iov = libc::iovec {
        // The kernel only reads from a send buffer.
        iov_base: msg.data.as_ptr().cast_mut().cast(),
        iov_len: msg.data.len(),
    };
    // SAFETY: msghdr is a C struct of integers and pointers; all-zero is valid.
    let mut mh: libc::msghdr = unsafe { mem::zeroed() };
    mh.msg_name = ptr::from_mut(&mut name).cast();
    mh.msg_namelen = enc.namelen;
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if enc.controllen > 0 {
        mh.msg_control = cmsg.0.as_mut_ptr().cast();
        mh.msg_controllen = enc.controllen as _;
    }
    loop {
        // SAFETY: every pointer in `mh` refers to a live local or to the
        // caller's payload, with the lengths given; sendmsg only reads them.
        let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &mh, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain bytes; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `storage`.
    let rc =
        unsafe { libc::getsockname(fd.as_raw_fd(), ptr::from_mut(&mut storage).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    read_sockaddr(&storage, len).ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is one c_int, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes, one c_int, into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The kernel was built or booted without IPv6 (socket() refuses the
/// family, or [::] cannot be bound).
fn ipv6_unavailable(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// UDP offloads are on unless `WIRESPEED_UDP_OFFLOAD=off` (as for the
/// TUN's): drivers that mishandle coalesced UDP exist.
pub fn offload_wanted_by_env() -> bool {
    std::env::var("WIRESPEED_UDP_OFFLOAD").map_or(true, |v| v != "off")
}

fn bind_error(err: io::Error, port: u16) -> io::Error {
    io::Error::new(err.kind(), format!("cannot open UDP port {port}: {err}"))
}

#[cfg(test)]
mod tests;
