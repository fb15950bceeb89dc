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

use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

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

/// Control-message space per datagram. A v4 datagram on the dual-stack
/// socket carries both IP_PKTINFO (32 bytes) and IPV6_PKTINFO (40 bytes);
/// the rest is headroom for UDP_GRO and timestamps later.
const CMSG_BUF_LEN: usize = 128;

// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const _: () = assert!(
    unsafe {
        libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32)
            + libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as u32)
    } as usize
        <= CMSG_BUF_LEN
);

/// Control-message buffer, aligned for `cmsghdr` as CMSG_FIRSTHDR requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_LEN]);

impl CmsgBuf {
    const ZERO: CmsgBuf = CmsgBuf([0; CMSG_BUF_LEN]);
}

/// One received datagram: a buffer the caller owns and reuses, and what
/// `recv_batch` learned about the datagram in it.
pub struct RecvSlot {
    buf: Box<[u8]>,
    len: usize,
    src: SocketAddr,
    local: Option<IpAddr>,
    ifindex: u32,
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
        Ok(UdpSocketBatch {
            fd,
            dual_stack: v6,
            port,
            hdrs: vec![hdr; MAX_BATCH].into_boxed_slice(),
            iovs: vec![iov; MAX_BATCH].into_boxed_slice(),
            names: vec![name; MAX_BATCH].into_boxed_slice(),
            cmsgs: vec![CmsgBuf::ZERO; MAX_BATCH].into_boxed_slice(),
        })
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
            let (local, ifindex) = read_pktinfo(&h.msg_hdr);
            slot.local = local;
            slot.ifindex = ifindex;
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
        while done < msgs.len() {
            let chunk = &msgs[done..msgs.len().min(done + MAX_BATCH)];
            let mut prepared = 0;
            let mut encode_err = None;
            // Bit i: chunk[i]'s source is of the wrong family; reported once
            // the message is known to have gone out. MAX_BATCH fits in a u64.
            let mut mismatched: u64 = 0;
            for (i, msg) in chunk.iter().enumerate() {
                let enc = match encode(
                    msg,
                    self.dual_stack,
                    true,
                    &mut self.names[i],
                    &mut self.cmsgs[i],
                ) {
                    Ok(enc) => enc,
                    Err(e) => {
                        encode_err = Some(e);
                        break;
                    }
                };
                if enc.src_mismatch {
                    mismatched |= 1 << i;
                }
                self.iovs[i] = libc::iovec {
                    // The kernel only reads from a send buffer.
                    iov_base: msg.data.as_ptr().cast_mut().cast(),
                    iov_len: msg.data.len(),
                };
                let h = &mut self.hdrs[i];
                h.msg_len = 0;
                h.msg_hdr.msg_name = ptr::from_mut(&mut self.names[i]).cast();
                h.msg_hdr.msg_namelen = enc.namelen;
                h.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
                h.msg_hdr.msg_iovlen = 1;
                if enc.controllen == 0 {
                    h.msg_hdr.msg_control = ptr::null_mut();
                    h.msg_hdr.msg_controllen = 0;
                } else {
                    h.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = enc.controllen as _;
                }
                h.msg_hdr.msg_flags = 0;
                prepared += 1;
            }
            if prepared == 0 {
                let err = encode_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
                return if done == 0 { Err(err) } else { Ok(done) };
            }

            let rc = loop {
                // SAFETY: the first `prepared` headers point at addresses,
                // control messages and iovecs owned by self, and each iovec
                // at a caller's payload borrowed for this call, all with the
                // lengths given; sendmmsg only reads them (and writes
                // msg_len).
                let rc = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        self.hdrs.as_mut_ptr(),
                        prepared as libc::c_uint,
                        libc::MSG_DONTWAIT as _,
                    )
                };
                if rc >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break rc;
                }
            };
            if rc > 0 {
                for i in 0..rc as usize {
                    if mismatched & (1 << i) != 0 {
                        on_stale_source(done + i);
                    }
                }
                done += rc as usize;
                continue;
            }
            // Nothing went: the error belongs to msgs[done].
            let err = if rc == 0 {
                io::Error::from_raw_os_error(libc::EAGAIN)
            } else {
                io::Error::last_os_error()
            };
            if err.kind() == io::ErrorKind::WouldBlock {
                return Ok(done);
            }
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
            put_cmsg(cmsg, libc::IPPROTO_IP, libc::IP_PKTINFO, info)
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
            put_cmsg(cmsg, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info)
        }
        _ => 0,
    };
    Ok(Encoded {
        namelen,
        controllen,
        src_mismatch: mismatch,
    })
}

/// Puts one control message at the start of `buf`; returns the control
/// length to send.
fn put_cmsg<T: Copy>(buf: &mut CmsgBuf, level: libc::c_int, ty: libc::c_int, value: T) -> usize {
    *buf = CmsgBuf::ZERO;
    // SAFETY: msghdr is a C struct of integers and pointers; all-zero is valid.
    let mut mh: libc::msghdr = unsafe { mem::zeroed() };
    mh.msg_control = buf.0.as_mut_ptr().cast();
    mh.msg_controllen = CMSG_BUF_LEN as _;
    // SAFETY: msg_control points at CMSG_BUF_LEN bytes aligned for cmsghdr,
    // so CMSG_FIRSTHDR returns a pointer to its start (non-null, as the
    // buffer holds a cmsghdr), and the const assertion above guarantees
    // CMSG_SPACE(size_of::<T>()) fits for the pktinfo types used here; the
    // payload is written unaligned because CMSG_DATA promises no alignment.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&mh);
        if c.is_null() {
            return 0;
        }
        (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<T>() as u32) as _;
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), value);
        libc::CMSG_SPACE(mem::size_of::<T>() as u32) as usize
    }
}

/// The local address and ifindex from a received message's pktinfo.
fn read_pktinfo(mh: &libc::msghdr) -> (Option<IpAddr>, u32) {
    let mut local = None;
    let mut ifindex = 0;
    // SAFETY: `mh` is a header the kernel just filled: msg_control points at
    // a CmsgBuf of ours and msg_controllen says how much of it holds control
    // messages, so CMSG_FIRSTHDR/CMSG_NXTHDR stay inside it; each payload is
    // read only after checking its cmsg_len covers the type read, and read
    // unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            let len = (*c).cmsg_len as usize;
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if len
                        >= libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as usize =>
                {
                    let info = ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                    ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if len
                        >= libc::CMSG_LEN(mem::size_of::<libc::in6_pktinfo>() as u32) as usize =>
                {
                    let info = ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    local = Some(canonical_ip(IpAddr::V6(Ipv6Addr::from(
                        info.ipi6_addr.s6_addr,
                    ))));
                    ifindex = info.ipi6_ifindex;
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    (local, ifindex)
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

fn bind_error(err: io::Error, port: u16) -> io::Error {
    io::Error::new(err.kind(), format!("cannot open UDP port {port}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tun::testns::{wait_readable, NetNs};
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    const A1: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
    const A2: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
    const A3: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 3);
    const B1: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 1);
    const B2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 2);
    const B3: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 3);

    /// A namespace whose loopback carries three IPv4 and three IPv6
    /// addresses, so "which local address" has more than one answer.
    fn netns(tag: &str) -> Option<NetNs> {
        let ns = NetNs::new(tag)?;
        for a in [A1, A2, A3] {
            ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        for b in [B1, B2, B3] {
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{b}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        Some(ns)
    }

    struct Got {
        data: Vec<u8>,
        src: SocketAddr,
        local: Option<IpAddr>,
        ifindex: u32,
    }

    /// Receives exactly `n` datagrams (failing after two seconds).
    fn recv_n(sock: &mut UdpSocketBatch, slots: &mut [RecvSlot], n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "got {} of {n} datagrams",
                out.len()
            );
            if !wait_readable(sock.as_raw_fd(), 100) {
                continue;
            }
            let want = (n - out.len()).min(slots.len());
            match sock.recv_batch(&mut slots[..want]) {
                Ok(k) => out.extend(slots[..k].iter().map(|s| {
                    assert!(!s.truncated());
                    Got {
                        data: s.data().to_vec(),
                        src: s.src(),
                        local: s.local(),
                        ifindex: s.ifindex(),
                    }
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        out
    }

    /// Sends all of `msgs`, returning the indices reported stale.
    fn send_all(sock: &mut UdpSocketBatch, msgs: &[SendMsg<'_>]) -> Vec<usize> {
        let mut stale = Vec::new();
        let mut done = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while done < msgs.len() {
            assert!(Instant::now() < deadline, "sent {done} of {}", msgs.len());
            let base = done;
            match sock.send_batch(&msgs[done..], |i| stale.push(base + i)) {
                Ok(n) => done += n,
                Err(e) => panic!("send_batch of message {done}: {e}"),
            }
        }
        stale
    }

    fn no_more(sock: &mut UdpSocketBatch) {
        let mut slot = [RecvSlot::with_capacity(2048)];
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            sock.recv_batch(&mut slot).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn batches_both_ways_with_sticky_source() {
        let Some(ns) = netns("udp-batch") else { return };
        ns.run(|| {
            let mut server = UdpSocketBatch::bind(0, true).unwrap();
            let mut client = UdpSocketBatch::bind(0, false).unwrap();
            assert!(server.is_dual_stack());
            let sport = server.local_port();
            let cport = client.local_port();
            assert_ne!(sport, 0);
            let mut slots: Vec<RecvSlot> = (0..MAX_BATCH).map(|_| RecvSlot::new()).collect();

            let cases: [(IpAddr, IpAddr); 4] = [
                (A2.into(), A3.into()),
                (A1.into(), A3.into()),
                (B2.into(), B3.into()),
                (B1.into(), B3.into()),
            ];
            for (server_ip, client_ip) in cases {
                let payloads: Vec<Vec<u8>> =
                    (0..32u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
                let msgs: Vec<SendMsg<'_>> = payloads
                    .iter()
                    .map(|p| SendMsg {
                        dst: SocketAddr::new(server_ip, sport),
                        src: Some(client_ip),
                        data: p,
                    })
                    .collect();
                assert_eq!(client.send_batch(&msgs, |_| panic!("stale")).unwrap(), 32);
                let got = recv_n(&mut server, &mut slots, 32);
                for (g, p) in got.iter().zip(&payloads) {
                    assert_eq!(&g.data, p);
                    // IPv4 peers are plain V4 even on the dual-stack socket.
                    assert_eq!(g.src, SocketAddr::new(client_ip, cport));
                    assert_eq!(g.local, Some(server_ip));
                    assert_eq!(g.ifindex, 1, "loopback");
                }

                // Reply from where the client wrote to: the client sees
                // that address, not the route's preferred source.
                let replies: Vec<SendMsg<'_>> = got
                    .iter()
                    .map(|g| SendMsg {
                        dst: g.src,
                        src: g.local,
                        data: &g.data,
                    })
                    .collect();
                assert!(send_all(&mut server, &replies).is_empty());
                let back = recv_n(&mut client, &mut slots, 32);
                for (g, p) in back.iter().zip(&payloads) {
                    assert_eq!(&g.data, p);
                    assert_eq!(g.src, SocketAddr::new(server_ip, sport));
                    assert_eq!(g.local, Some(client_ip));
                }
                no_more(&mut server);
                no_more(&mut client);
            }
        });
    }

    #[test]
    fn more_than_a_batch_and_odd_sizes() {
        let Some(ns) = netns("udp-big") else { return };
        ns.run(|| {
            let mut server = UdpSocketBatch::bind(0, false).unwrap();
            let mut client = UdpSocketBatch::bind(0, false).unwrap();
            let dst = SocketAddr::new(A1.into(), server.local_port());
            let payload = [0x5au8; 64];
            let msgs = vec![
                SendMsg {
                    dst,
                    src: None,
                    data: &payload
                };
                150
            ];
            assert_eq!(send_all(&mut client, &msgs), Vec::<usize>::new());
            let mut slots: Vec<RecvSlot> = (0..MAX_BATCH + 10)
                .map(|_| RecvSlot::with_capacity(2048))
                .collect();
            assert!(wait_readable(server.as_raw_fd(), 2000));
            // One call never fills more than MAX_BATCH slots.
            let first = server.recv_batch(&mut slots).unwrap();
            assert!(first <= MAX_BATCH);
            let rest = recv_n(&mut server, &mut slots, 150 - first);
            assert!(rest.iter().all(|g| g.data == payload));

            // Empty datagram, datagram larger than the slot, the largest
            // datagram IPv4 allows.
            let big = vec![1u8; 65507];
            for data in [&[][..], &[9u8; 100][..], &big[..]] {
                client
                    .send_to(dst, None, data)
                    .unwrap_or_else(|e| panic!("{}: {e}", data.len()));
            }
            let mut small = [RecvSlot::with_capacity(16)];
            let mut full = [RecvSlot::new()];
            assert!(wait_readable(server.as_raw_fd(), 2000));
            assert_eq!(server.recv_batch(&mut small).unwrap(), 1);
            assert!(small[0].is_empty() && !small[0].truncated());
            assert_eq!(server.recv_batch(&mut small).unwrap(), 1);
            assert_eq!(small[0].len(), 16);
            assert!(small[0].truncated());
            assert!(wait_readable(server.as_raw_fd(), 2000));
            assert_eq!(server.recv_batch(&mut full).unwrap(), 1);
            assert_eq!(full[0].data(), &big[..]);
            assert!(!full[0].truncated());

            assert_eq!(server.recv_batch(&mut []).unwrap(), 0);
            assert_eq!(client.send_batch(&[], |_| {}).unwrap(), 0);
            // Too big for UDP: an error for that message, not a panic.
            let huge = vec![0u8; 70000];
            let err = client
                .send_batch(
                    &[SendMsg {
                        dst,
                        src: None,
                        data: &huge,
                    }],
                    |_| {},
                )
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
            let ok = SendMsg {
                dst,
                src: None,
                data: b"ok",
            };
            let two = [
                ok,
                SendMsg {
                    dst,
                    src: None,
                    data: &huge,
                },
                ok,
            ];
            assert_eq!(
                client.send_batch(&two, |_| {}).unwrap(),
                1,
                "stops before the bad one"
            );
        });
    }

    #[test]
    fn stale_source_falls_back() {
        let Some(ns) = netns("udp-stale") else { return };
        let (mut server, client4, client6) = ns.run(|| {
            let server = UdpSocketBatch::bind(0, false).unwrap();
            let client4 = UdpSocket::bind((A3, 0)).unwrap();
            let client6 = UdpSocket::bind((B3, 0)).unwrap();
            (server, client4, client6)
        });
        // The addresses the peers had been writing to disappear.
        ns.ip(&["addr", "del", "10.78.0.2/32", "dev", "lo"]);
        ns.ip(&["-6", "addr", "del", "fd00:78::2/128", "dev", "lo"]);
        ns.run(|| {
            let to4 = client4.local_addr().unwrap();
            let to6 = client6.local_addr().unwrap();
            let msgs = [
                SendMsg {
                    dst: to4,
                    src: Some(A2.into()),
                    data: b"stale v4",
                },
                SendMsg {
                    dst: to4,
                    src: Some(A1.into()),
                    data: b"good v4",
                },
                SendMsg {
                    dst: to6,
                    src: Some(B2.into()),
                    data: b"stale v6",
                },
                SendMsg {
                    dst: to6,
                    src: None,
                    data: b"none v6",
                },
                // A source of the wrong family is dropped, too.
                SendMsg {
                    dst: to4,
                    src: Some(B1.into()),
                    data: b"mixed",
                },
            ];
            let mut stale = Vec::new();
            assert_eq!(server.send_batch(&msgs, |i| stale.push(i)).unwrap(), 5);
            assert_eq!(stale, vec![0, 2, 4]);

            for s in [&client4, &client6] {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            }
            let mut buf = [0u8; 64];
            let mut recv = |s: &UdpSocket| {
                let (n, from) = s.recv_from(&mut buf).unwrap();
                (buf[..n].to_vec(), from.ip())
            };
            let (d, from) = recv(&client4);
            assert_eq!(
                (d.as_slice(), from == IpAddr::from(A2)),
                (&b"stale v4"[..], false)
            );
            assert_eq!(recv(&client4), (b"good v4".to_vec(), A1.into()));
            let (d, from) = recv(&client6);
            assert_eq!(
                (d.as_slice(), from == IpAddr::from(B2)),
                (&b"stale v6"[..], false)
            );
            assert_eq!(recv(&client6).0, b"none v6");
            assert_eq!(recv(&client4).0, b"mixed");

            // The slow path falls back the same way and says so.
            assert!(server.send_to(to4, Some(A2.into()), b"slow").unwrap());
            assert!(!server.send_to(to4, Some(A1.into()), b"slow").unwrap());
            assert_eq!(recv(&client4).0, b"slow");
            assert_eq!(recv(&client4), (b"slow".to_vec(), A1.into()));
        });
    }

    #[test]
    fn reuseport_sockets_share_a_port() {
        let Some(ns) = netns("udp-reuse") else { return };
        ns.run(|| {
            let mut a = UdpSocketBatch::bind(0, true).unwrap();
            let port = a.local_port();
            let mut b = UdpSocketBatch::bind(port, true).unwrap();
            assert_eq!(b.local_port(), port);
            let err = UdpSocketBatch::bind(port, false).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");

            // 64 peers: the kernel hashes them over both sockets.
            let peers: Vec<UdpSocket> =
                (0..64).map(|_| UdpSocket::bind((A3, 0)).unwrap()).collect();
            for p in &peers {
                p.send_to(b"hi", (A1, port)).unwrap();
            }
            let mut slots: Vec<RecvSlot> = (0..MAX_BATCH)
                .map(|_| RecvSlot::with_capacity(2048))
                .collect();
            let mut got = [Vec::new(), Vec::new()];
            let deadline = Instant::now() + Duration::from_secs(2);
            while got[0].len() + got[1].len() < 64 {
                assert!(Instant::now() < deadline);
                for (k, s) in [&mut a, &mut b].into_iter().enumerate() {
                    if let Ok(n) = s.recv_batch(&mut slots) {
                        got[k].extend(slots[..n].iter().map(|s| s.src()));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                !got[0].is_empty() && !got[1].is_empty(),
                "{} / {}",
                got[0].len(),
                got[1].len()
            );

            // Each socket answers its own peers, from the shared port.
            for (k, s) in [&mut a, &mut b].into_iter().enumerate() {
                let msgs: Vec<SendMsg<'_>> = got[k]
                    .iter()
                    .map(|&dst| SendMsg {
                        dst,
                        src: Some(A1.into()),
                        data: b"back",
                    })
                    .collect();
                assert_eq!(send_all(s, &msgs), Vec::<usize>::new());
            }
            let mut buf = [0u8; 16];
            for p in &peers {
                p.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let (n, from) = p.recv_from(&mut buf).unwrap();
                assert_eq!(
                    (&buf[..n], from),
                    (&b"back"[..], SocketAddr::new(A1.into(), port))
                );
            }
        });
    }

    #[test]
    fn ipv4_only_socket_and_options() {
        let Some(ns) = netns("udp-v4") else { return };
        ns.run(|| {
            let mut server = UdpSocketBatch::bind_v4(0, true).unwrap();
            assert!(!server.is_dual_stack());
            let mut clone = server.try_clone().unwrap();
            let client = UdpSocket::bind((A3, 0)).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            client
                .send_to(b"v4 only", (A2, server.local_port()))
                .unwrap();
            let mut slots = [RecvSlot::with_capacity(2048)];
            let got = recv_n(&mut clone, &mut slots, 1);
            assert_eq!(got[0].data, b"v4 only");
            assert_eq!(got[0].local, Some(A2.into()));
            assert_eq!(got[0].src, client.local_addr().unwrap());

            let msg = SendMsg {
                dst: got[0].src,
                src: got[0].local,
                data: b"reply",
            };
            assert_eq!(server.send_batch(&[msg], |_| panic!("stale")).unwrap(), 1);
            let mut buf = [0u8; 16];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from.ip()), (&b"reply"[..], IpAddr::from(A2)));
            // An IPv4-mapped destination is the same IPv4 peer.
            let mapped = SocketAddr::new(A3.to_ipv6_mapped().into(), got[0].src.port());
            assert!(!server.send_to(mapped, Some(A1.into()), b"mapped").unwrap());
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from.ip()), (&b"mapped"[..], IpAddr::from(A1)));

            // IPv6 destinations cannot be reached from here: an error.
            let v6 = SocketAddr::new(B1.into(), 9);
            let err = server
                .send_batch(
                    &[SendMsg {
                        dst: v6,
                        src: None,
                        data: b"x",
                    }],
                    |_| {},
                )
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT));
            assert!(server.send_to(v6, None, b"x").is_err());

            server.set_fwmark(0x51820).unwrap();
            let mark = getsockopt_int(server.as_fd(), libc::SOL_SOCKET, libc::SO_MARK).unwrap();
            assert_eq!(mark, 0x51820);
            let (rcv, snd) = server.buffer_sizes().unwrap();
            assert!(
                rcv >= SOCKET_BUFFER_BYTES && snd >= SOCKET_BUFFER_BYTES,
                "{rcv} {snd}"
            );
        });
    }

    #[test]
    fn address_conversions() {
        let mapped = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into(), 51820);
        assert_eq!(
            canonical_sockaddr(mapped),
            "192.0.2.1:51820".parse().unwrap()
        );
        // SAFETY: sockaddr_storage is plain bytes; all-zero is valid.
        let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
        for a in ["192.0.2.1:1", "[2001:db8::1]:65535", "[fe80::1%3]:7"] {
            let a: SocketAddr = a.parse().unwrap();
            let len = write_sockaddr(&mut st, a);
            assert_eq!(read_sockaddr(&st, len), Some(a));
        }
        let len = write_sockaddr(&mut st, mapped);
        assert_eq!(
            read_sockaddr(&st, len),
            Some("192.0.2.1:51820".parse().unwrap())
        );
        // A length too short for the family is refused, not over-read.
        assert_eq!(read_sockaddr(&st, 4), None);
    }

    #[test]
    fn ipv6_disabled_still_serves_ipv4() {
        let Some(ns) = netns("udp-nov6") else { return };
        ns.run(|| {
            // /proc/sys/net follows the opening thread's namespace.
            for f in ["all", "default", "lo"] {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1").unwrap();
            }
            let mut server = UdpSocketBatch::bind(0, true).unwrap();
            let client = UdpSocket::bind((A3, 0)).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            client.send_to(b"v4", (A1, server.local_port())).unwrap();
            let mut slots = [RecvSlot::with_capacity(2048)];
            let got = recv_n(&mut server, &mut slots, 1);
            assert_eq!(
                (got[0].src, got[0].local),
                (client.local_addr().unwrap(), Some(A1.into()))
            );
            assert!(!server.send_to(got[0].src, got[0].local, b"back").unwrap());
            let mut buf = [0u8; 8];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from.ip()), (&b"back"[..], IpAddr::from(A1)));
            let v6 = SocketAddr::new(B1.into(), 9);
            assert!(server.send_to(v6, None, b"x").is_err());
        });
    }
}
