//! The Linux TUN device: where inner IP packets enter and leave the data plane.
//!
//! The device is multi-queue (`IFF_MULTI_QUEUE`) so that every worker owns one
//! queue and no two threads ever read the same queue: the kernel keeps one
//! flow on one queue, which is what keeps each inner flow in order (reading
//! one queue from several threads reorders packets and throttles TCP).
//! `IFF_NO_PI` because the IP version nibble already says what a packet is;
//! `IFF_VNET_HDR` so that the kernel can hand over TCP super-packets and
//! partial checksums once offloads are on ([`TunQueue::set_offload`]; see
//! [`crate::offload`]); writes always go out as plain packets behind a zero
//! header.
//!
//! Lifetime: a TUN interface exists while at least one queue fd is open,
//! attached or not. The control process keeps one *detached* queue
//! ([`TunQueue::detach`]) so the interface, its addresses and routes survive
//! a crashed data plane, while the kernel never hands that queue a packet.
//! Every fd is non-blocking: a worker waits in poll(2), then moves packets
//! with one readv/writev per packet here (recvmmsg/sendmmsg on the UDP side).
//! io_uring was evaluated and not adopted: with TUN and UDP offloads a packet
//! here is a super-packet of up to 64 KiB, so the system calls are already
//! about one per 64 KiB and a submission ring has little left to save.
//!
//! Name-based calls (`set_mtu`, `ifindex`, `open_queue`, ...) act in the
//! calling *thread's* network namespace, and a queue's device lives in the
//! namespace of the thread that opened it.

use crate::offload::{VnetHdr, VNET_HDR_LEN};
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Longest interface name the kernel takes: IFNAMSIZ minus the NUL.
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Largest MTU a TUN device accepts (the kernel's `MAX_MTU` for tun).
pub const MAX_MTU: u32 = 65535;

/// Flags every queue of a wirespeed device is opened with. The virtio-net
/// header is always there (the flag is device-wide, so every queue must
/// agree); whether the kernel uses it for offloads is [`TunQueue::set_offload`].
const TUN_FLAGS: libc::c_int =
    libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | libc::IFF_VNET_HDR;

/// What [`TunQueue::set_offload`] offers the kernel: checksum offload and TCP
/// segmentation (IPv4, IPv6, with ECN), and UDP segmentation where the
/// kernel knows it ([`USO`]).
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
/// UDP segmentation (kernel 6.2+; older ones refuse the whole set with
/// EINVAL, so it is offered first and dropped if refused).
const USO: libc::c_uint = libc::TUN_F_USO4 | libc::TUN_F_USO6;

/// The `TUNGETIFF` flag bits that change the packet format a queue sees; an
/// existing device must agree on all of them before we read from it.
const FORMAT_FLAGS: libc::c_int =
    libc::IFF_TUN | libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;

const TUN_PATH: &CStr = c"/dev/net/tun";

/// A multi-queue TUN interface, known by name and by the ifindex it had when
/// we created or found it (so a deleted-and-recreated interface of the same
/// name is not mistaken for ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tun {
    name: String,
    index: u32,
}

impl Tun {
    /// Creates a new TUN interface and returns it with its first queue.
    ///
    /// `name` may contain one `%d` for the kernel to number (`"wg%d"`), or
    /// be empty for `tunN`; [`Tun::name`] is the name the kernel chose.
    /// Creation is exclusive (`IFF_TUN_EXCL`): an interface of that name that
    /// already exists is an [`io::ErrorKind::AlreadyExists`] error rather
    /// than silently shared with whoever owns it.
    pub fn create(name: &str) -> io::Result<(Tun, TunQueue)> {
        check_name(name, true)?;
        let fd = open_tun_dev()?;
        let mut ifr = ifreq_named(name);
        ifr.ifr_ifru.ifru_flags = (TUN_FLAGS | libc::IFF_TUN_EXCL) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is, and
        // `fd` is an open /dev/net/tun descriptor.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EBUSY) => io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("cannot create TUN interface {name:?}: an interface of that name already exists"),
                ),
                Some(libc::EPERM) => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("cannot create TUN interface {name:?}: CAP_NET_ADMIN is required"),
                ),
                _ => with_context(err, format_args!("cannot create TUN interface {name:?}")),
            });
        }
        let actual = ifr_name_string(&ifr);
        let index = ifindex(&actual).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("TUN interface {actual:?} vanished right after creation"),
            )
        })?;
        Ok((
            Tun {
                name: actual,
                index,
            },
            TunQueue { fd },
        ))
    }

    /// Finds an existing interface by name, for a process that did not
    /// create it (a restarted data plane).
    pub fn existing(name: &str) -> io::Result<Tun> {
        check_name(name, false)?;
        let index = ifindex(name).ok_or_else(|| no_such_interface(name))?;
        Ok(Tun {
            name: name.to_owned(),
            index,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ifindex the interface had when this handle was made.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether the interface still exists: same name, same ifindex. False
    /// once someone ran `ip link del`, even if a new interface took the name.
    pub fn exists(&self) -> bool {
        ifindex(&self.name) == Some(self.index)
    }

    /// Attaches one more queue (one per worker); see [`open_queue`].
    pub fn open_queue(&self) -> io::Result<TunQueue> {
        let q = open_queue(&self.name)?;
        if !self.exists() {
            return Err(no_such_interface(&self.name));
        }
        Ok(q)
    }

    /// Sets the MTU; see [`set_mtu`].
    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        set_mtu(&self.name, mtu)
    }

    /// The current MTU; see [`mtu`].
    pub fn mtu(&self) -> io::Result<u32> {
        mtu(&self.name)
    }

    /// Brings the interface up; see [`set_up`].
    pub fn set_up(&self) -> io::Result<()> {
        set_up(&self.name)
    }
}

/// One queue of a TUN device: a non-blocking fd that reads and writes whole
/// IP packets, one per call.
///
/// When the interface is deleted (`ip link del`) while a queue is open, the
/// fd reports POLLERR and every read and write fails with EBADFD; that, or
/// [`Tun::exists`] turning false, is how a worker learns it is gone.
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
}

impl TunQueue {
    /// Wraps a queue fd obtained elsewhere (passed over a unix socket).
    /// Nothing is checked; the fd must be a TUN queue opened with this
    /// module's flags.
    pub fn from_fd(fd: OwnedFd) -> TunQueue {
        TunQueue { fd }
    }

    /// Gives up the fd, e.g. to pass it to another process.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Reads one packet into `buf` and returns its length.
    ///
    /// `buf` must hold the largest packet, at least the interface MTU: the
    /// kernel fills a short buffer with the head of the packet, returns
    /// `buf.len()` and drops the rest, so a read that fills `buf` exactly may
    /// have been truncated. [`io::ErrorKind::WouldBlock`] when the queue is empty, and
    /// always while the queue is detached (no error tells a worker that its
    /// queue was detached).
    ///
    /// The virtio-net header is dropped: right only while offloads are off
    /// (see [`recv_offload`](Self::recv_offload)).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        read(self.fd.as_fd(), buf)
    }

    /// Reads one packet into `buf` with its virtio-net header: with
    /// offloads on it may be a TCP super-packet or carry a partial checksum,
    /// which [`crate::offload::for_each_packet`] turns into plain packets.
    /// `buf` should hold 64 KiB.
    pub fn recv_offload(&self, buf: &mut [u8]) -> io::Result<(VnetHdr, usize)> {
        read_with_header(self.fd.as_fd(), buf)
    }

    /// Offers the kernel checksum, TCP and (where it knows it) UDP
    /// segmentation offload on this device (`on`), or takes it back.
    /// Device-wide; must be called on an attached queue. True when UDP
    /// segmentation is on, so UDP super-packets may be written too.
    pub fn set_offload(&self, on: bool) -> io::Result<bool> {
        if !on {
            return self.offer(0).map(|()| false);
        }
        match self.offer(OFFLOADS | USO) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.offer(OFFLOADS).map(|()| false)
            }
            r => r.map(|()| true),
        }
    }

    /// Offers exactly `flags` to the kernel.
    fn offer(&self, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; `fd` is an open
        // TUN queue.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes one IP packet into the kernel, as if it arrived on the
    /// interface. EINVAL for anything that is not IPv4 or IPv6, EIO while
    /// the interface is down. A detached queue still injects what it writes.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        write(self.fd.as_fd(), packet)
    }

    /// Writes one packet behind the given virtio-net header: a TCP
    /// super-packet ([`crate::gro`]) for the kernel to take in one piece.
    pub fn send_offload(&self, hdr: &VnetHdr, packet: &[u8]) -> io::Result<usize> {
        write_with_header(self.fd.as_fd(), &hdr.to_bytes(), packet)
    }

    /// Stops the kernel from delivering packets to this queue while keeping
    /// the interface alive; see [`detach_queue`].
    pub fn detach(&self) -> io::Result<()> {
        detach_queue(self.fd.as_fd())
    }

    /// Puts a detached queue back into service; see [`attach_queue`].
    pub fn attach(&self) -> io::Result<()> {
        attach_queue(self.fd.as_fd())
    }

    /// The name of the interface this queue belongs to (`TUNGETIFF`); works
    /// on a detached queue too.
    pub fn interface_name(&self) -> io::Result<String> {
        let mut ifr = ifreq_named("");
        // SAFETY: TUNGETIFF fills one ifreq, which `ifr` is.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ifr_name_string(&ifr))
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<TunQueue> for OwnedFd {
    fn from(q: TunQueue) -> OwnedFd {
        q.fd
    }
}

/// Attaches a new queue to the existing TUN interface `name`.
///
/// TUNSETIFF on a name that does not exist would *create* a fresh interface,
/// which is never what a worker wants (the old one was deleted: its routes
/// and addresses are gone). So the interface must exist before, and still
/// have the same ifindex after; otherwise the new fd is closed, which
/// removes any interface it created, and the error is NotFound.
/// An interface that exists with other flags (not multi-queue, with packet
/// info, without vnet headers, a TAP, not a TUN at all) is InvalidInput.
pub fn open_queue(name: &str) -> io::Result<TunQueue> {
    check_name(name, false)?;
    let before = ifindex(name).ok_or_else(|| no_such_interface(name))?;
    let fd = open_tun_dev()?;
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_flags = TUN_FLAGS as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is, and `fd`
    // is an open /dev/net/tun descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EINVAL) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface {name:?} is not a multi-queue TUN device"),
            ),
            _ => with_context(err, format_args!("cannot attach a queue to {name:?}")),
        });
    }
    let q = TunQueue { fd };
    if ifindex(name) != Some(before) {
        return Err(no_such_interface(name));
    }
    let mut ifr = ifreq_named("");
    // SAFETY: TUNGETIFF fills one ifreq, which `ifr` is.
    let rc = unsafe { libc::ioctl(q.fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr) };
    if rc < 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            format_args!("cannot read the flags of {name:?}"),
        ));
    }
    // SAFETY: TUNGETIFF stored the flags through ifru_flags, so that member
    // is initialised; any c_short bit pattern is a valid value.
    let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags }) & 0xffff;
    if flags & FORMAT_FLAGS != TUN_FLAGS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TUN interface {name:?} was made with flags {flags:#x}, not {TUN_FLAGS:#x} \
                 (multi-queue, no packet info, vnet header)"
            ),
        ));
    }
    Ok(q)
}

/// Detaches a queue (TUNSETQUEUE with IFF_DETACH_QUEUE): the kernel drops
/// what the queue held and stops steering packets to it, reads then return
/// WouldBlock (not an error) while writes still inject packets, and the fd
/// keeps the interface alive. With every queue detached the interface stays
/// up and drops what is routed into it. Detaching twice is EINVAL.
pub fn detach_queue(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_queue(fd, libc::IFF_DETACH_QUEUE)
}

/// Re-attaches a queue detached by [`detach_queue`]. Attaching a queue that
/// is already attached is EINVAL.
pub fn attach_queue(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_queue(fd, libc::IFF_ATTACH_QUEUE)
}

fn set_queue(fd: BorrowedFd<'_>, flag: libc::c_int) -> io::Result<()> {
    let mut ifr = ifreq_named("");
    ifr.ifr_ifru.ifru_flags = flag as libc::c_short;
    // SAFETY: TUNSETQUEUE reads one ifreq, which `ifr` is.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETQUEUE, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one packet from a TUN queue fd, dropping its virtio-net header;
/// see [`TunQueue::recv`].
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    read_with_header(fd, buf).map(|(_, n)| n)
}

/// Reads the virtio-net header and one packet (into `buf`) with one readv.
pub fn read_with_header(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(VnetHdr, usize)> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    loop {
        // SAFETY: both iovecs describe valid, exclusively borrowed memory of
        // the stated lengths, which the kernel fills and nothing else sees.
        let n = unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n >= 0 {
            let n = n as usize;
            return Ok((VnetHdr::parse(&hdr), n.saturating_sub(VNET_HDR_LEN)));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Writes one plain packet to a TUN queue fd behind an all-zero virtio-net
/// header (no offload asked of the kernel); see [`TunQueue::send`]. Returns
/// the packet bytes written.
pub fn write(fd: BorrowedFd<'_>, packet: &[u8]) -> io::Result<usize> {
    write_with_header(fd, &[0u8; VNET_HDR_LEN], packet)
}

fn write_with_header(
    fd: BorrowedFd<'_>,
    hdr: &[u8; VNET_HDR_LEN],
    packet: &[u8],
) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        },
    ];
    loop {
        // SAFETY: the kernel only reads the two buffers, valid for their
        // stated lengths for the duration of the call.
        let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n >= 0 {
            return Ok((n as usize).saturating_sub(VNET_HDR_LEN));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sets the MTU of interface `name` (SIOCSIFMTU). A TUN takes 68..=65535.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    check_name(name, false)?;
    let value = libc::c_int::try_from(mtu).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("MTU {mtu} for {name:?} is out of range"),
        )
    })?;
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_mtu = value;
    if_ioctl(libc::SIOCSIFMTU, &mut ifr)
        .map_err(|e| with_context(e, format_args!("cannot set the MTU of {name:?} to {mtu}")))
}

/// The MTU of interface `name` (SIOCGIFMTU).
pub fn mtu(name: &str) -> io::Result<u32> {
    check_name(name, false)?;
    let mut ifr = ifreq_named(name);
    if_ioctl(libc::SIOCGIFMTU, &mut ifr)
        .map_err(|e| with_context(e, format_args!("cannot read the MTU of {name:?}")))?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel stored the MTU through
    // ifru_mtu; any c_int bit pattern is a valid value.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// Brings interface `name` up (IFF_UP), leaving its other flags alone.
pub fn set_up(name: &str) -> io::Result<()> {
    change_flags(name, libc::IFF_UP, 0)
}

/// Takes interface `name` down.
pub fn set_down(name: &str) -> io::Result<()> {
    change_flags(name, 0, libc::IFF_UP)
}

fn change_flags(name: &str, set: libc::c_int, clear: libc::c_int) -> io::Result<()> {
    check_name(name, false)?;
    let mut ifr = ifreq_named(name);
    if_ioctl(libc::SIOCGIFFLAGS, &mut ifr)
        .map_err(|e| with_context(e, format_args!("cannot read the flags of {name:?}")))?;
    // SAFETY: SIOCGIFFLAGS succeeded, so ifru_flags holds the kernel's flags.
    let old = unsafe { ifr.ifr_ifru.ifru_flags };
    let new = (libc::c_int::from(old) | set) & !clear;
    ifr.ifr_ifru.ifru_flags = new as libc::c_short;
    if_ioctl(libc::SIOCSIFFLAGS, &mut ifr)
        .map_err(|e| with_context(e, format_args!("cannot change the flags of {name:?}")))
}

/// The ifindex of interface `name`, or None when there is no such interface
/// (in this thread's network namespace) or the name is not a valid one.
/// A worker compares it with [`Tun::index`] to notice a deleted interface.
pub fn ifindex(name: &str) -> Option<u32> {
    if check_name(name, false).is_err() {
        return None;
    }
    // SIOCGIFINDEX on a UDP socket rather than if_nametoindex, whose first
    // try is a Unix socket: the data plane's seccomp filter refuses those
    // (and logs each refusal), and this is polled every second.
    let mut ifr = ifreq_named(name);
    if_ioctl(libc::SIOCGIFINDEX, &mut ifr).ok()?;
    // SAFETY: SIOCGIFINDEX succeeded, so the kernel stored the index
    // through ifru_ifindex; any c_int bit pattern is a valid value.
    let index = unsafe { ifr.ifr_ifru.ifru_ifindex };
    u32::try_from(index).ok().filter(|&i| i != 0)
}

/// Checks an interface name the way the kernel's `dev_valid_name` does, so
/// the user gets a message naming the problem instead of a bare EINVAL.
/// `pattern_ok` admits the empty name and a `%d`, which only creation
/// understands.
pub fn check_name(name: &str, pattern_ok: bool) -> io::Result<()> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}: {why}"),
        ))
    };
    if name.len() > MAX_NAME_LEN {
        return bad(&format!(
            "{} bytes long, at most {MAX_NAME_LEN} are allowed (IFNAMSIZ - 1)",
            name.len()
        ));
    }
    if name.is_empty() {
        return if pattern_ok { Ok(()) } else { bad("empty") };
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are reserved");
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return bad(&format!("contains {c:?}"));
    }
    if !pattern_ok && name.contains('%') {
        return bad("a %d pattern only works when creating an interface");
    }
    Ok(())
}

fn open_tun_dev() -> io::Result<OwnedFd> {
    // SAFETY: TUN_PATH is a NUL-terminated string; open has no other
    // memory-safety requirement.
    let fd = unsafe {
        libc::open(
            TUN_PATH.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            format_args!("cannot open /dev/net/tun"),
        ));
    }
    // SAFETY: open just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs one SIOC* interface ioctl on a throwaway AF_INET socket; these
/// ioctls act on the calling thread's network namespace.
fn if_ioctl(request: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: plain socket(2) call with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket just returned this fd and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: every request passed here reads and/or writes one ifreq, which
    // `ifr` is, exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An all-zero ifreq carrying `name`, which the caller has validated
/// (at most IFNAMSIZ - 1 bytes, so the name stays NUL-terminated).
fn ifreq_named(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a C struct of integers, byte arrays, a union of such
    // and a pointer member; all-zero bytes is a valid (empty) value for all.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, &b) in ifr.ifr_name[..MAX_NAME_LEN].iter_mut().zip(name.as_bytes()) {
        *dst = b as libc::c_char;
    }
    ifr
}

fn ifr_name_string(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn no_such_interface(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("there is no interface named {name:?}"),
    )
}

/// Adds what we were doing to an OS error, keeping its kind; ENODEV becomes
/// NotFound because that is what it means for every call in this module.
fn with_context(err: io::Error, what: fmt::Arguments<'_>) -> io::Error {
    let kind = match err.raw_os_error() {
        Some(libc::ENODEV) => io::ErrorKind::NotFound,
        _ => err.kind(),
    };
    io::Error::new(kind, format!("{what}: {err}"))
}

/// Network-namespace sandbox for tests that need root: every test gets its
/// own namespace so they can run in parallel and never touch the host's
/// interfaces. Shared with the `udp` tests.
#[cfg(test)]
pub(crate) mod testns {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(crate) struct NetNs {
        name: String,
    }

    impl NetNs {
        /// A fresh namespace with `lo` up, or None (and a note on stderr)
        /// when this process cannot make one: the caller skips its test.
        pub(crate) fn new(tag: &str) -> Option<NetNs> {
            static SEQ: AtomicU32 = AtomicU32::new(0);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipping {tag}: needs root for network namespaces");
                return None;
            }
            let name = format!(
                "wst-{}-{tag}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            match Command::new("ip").args(["netns", "add", &name]).output() {
                Ok(out) if out.status.success() => {}
                other => {
                    eprintln!("skipping {tag}: cannot create netns {name}: {other:?}");
                    return None;
                }
            }
            let ns = NetNs { name };
            ns.ip(&["link", "set", "lo", "up"]);
            Some(ns)
        }

        pub(crate) fn name(&self) -> &str {
            &self.name
        }

        /// Runs `ip -n <ns> args...`, panicking with ip's message on failure.
        pub(crate) fn ip(&self, args: &[&str]) {
            let out = Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(args)
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "ip -n {} {:?}: {}",
                self.name,
                args,
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// Runs `f` on a thread that has entered the namespace, so every
        /// socket, TUN and ioctl it makes lives there.
        pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let path = format!("/var/run/netns/{}", self.name);
            std::thread::scope(|s| {
                s.spawn(move || {
                    let file = File::open(&path).expect("open netns");
                    // SAFETY: file is an open namespace fd; setns only
                    // changes this thread's network namespace.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        }
    }

    impl Drop for NetNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }

    /// Waits up to `ms` for `fd` to become readable.
    pub(crate) fn wait_readable(fd: i32, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        rc > 0 && pfd.revents & libc::POLLIN != 0
    }
}

#[cfg(test)]
mod tests {
    use super::testns::{wait_readable, NetNs};
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::{Duration, Instant};

    const TUN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in data.chunks(2) {
            let word = if chunk.len() == 2 {
                u16::from_be_bytes([chunk[0], chunk[1]])
            } else {
                u16::from_be_bytes([chunk[0], 0])
            };
            sum += u32::from(word);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let c = checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]); // no checksum: allowed over IPv4
        u.extend_from_slice(data);
        ipv4(src, dst, 17, &u)
    }

    /// (src, dst, sport, dport, payload) of an IPv4/UDP packet, or None.
    fn parse_udp4(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16, &[u8])> {
        if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 17 {
            return None;
        }
        let ihl = usize::from(p[0] & 0xf) * 4;
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let u = p.get(ihl..)?;
        let sport = u16::from_be_bytes([u[0], u[1]]);
        let dport = u16::from_be_bytes([u[2], u[3]]);
        Some((src, dst, sport, dport, u.get(8..)?))
    }

    /// Reads packets from `q` until one satisfies `want` or `ms` pass;
    /// other packets (IPv6 router solicitations, MLD) are skipped.
    fn recv_matching(
        q: &TunQueue,
        ms: u64,
        mut want: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if !wait_readable(q.as_raw_fd(), left.as_millis() as i32 + 1) {
                continue;
            }
            match q.recv(&mut buf) {
                Ok(n) if want(&buf[..n]) => return Some(buf[..n].to_vec()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("tun read: {e}"),
            }
        }
    }

    /// Creates `wst0` in the namespace, up, MTU 1420, 10.77.0.1/24.
    fn setup(ns: &NetNs) -> (Tun, TunQueue) {
        let (tun, q) = ns.run(|| {
            let (tun, q) = Tun::create("wst0").expect("create tun");
            tun.set_mtu(1420).expect("mtu");
            tun.set_up().expect("up");
            (tun, q)
        });
        ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "wst0"]);
        (tun, q)
    }

    #[test]
    fn names_are_checked() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let err = Tun::create(&long).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("at most 15"), "{err}");
        assert!(check_name(&"a".repeat(MAX_NAME_LEN), false).is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\0b", "wg%d"] {
            assert!(check_name(bad, false).is_err(), "{bad:?}");
        }
        assert!(check_name("", true).is_ok());
        assert!(check_name("wg%d", true).is_ok());
        assert_eq!(ifindex(&long), None);
        assert_eq!(ifindex("a/b"), None);
        assert_eq!(
            open_queue(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            set_mtu("", 1420).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn packets_both_ways() {
        let Some(ns) = NetNs::new("tun-io") else {
            return;
        };
        let (tun, q) = setup(&ns);
        ns.run(|| {
            assert_eq!(tun.mtu().unwrap(), 1420);
            assert_eq!(mtu("wst0").unwrap(), 1420);
            assert_eq!(q.interface_name().unwrap(), "wst0");
            assert!(tun.exists());
            assert_eq!(ifindex("wst0"), Some(tun.index()));

            // Out of the stack, into the TUN.
            let sock = UdpSocket::bind((TUN_ADDR, 0)).unwrap();
            let sport = sock.local_addr().unwrap().port();
            sock.send_to(b"hello tun", (PEER_ADDR, 9999)).unwrap();
            let pkt = recv_matching(&q, 2000, |p| {
                parse_udp4(p).is_some_and(|(_, _, _, dport, _)| dport == 9999)
            })
            .expect("datagram routed into the TUN");
            let (src, dst, sp, _, payload) = parse_udp4(&pkt).unwrap();
            assert_eq!(
                (src, dst, sp, payload),
                (TUN_ADDR, PEER_ADDR, sport, &b"hello tun"[..])
            );

            // Out of the TUN, into the stack: a UDP datagram to a socket.
            let rx = UdpSocket::bind((TUN_ADDR, 0)).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let port = rx.local_addr().unwrap().port();
            let pkt = udp4(PEER_ADDR, 4444, TUN_ADDR, port, b"from the tunnel");
            assert_eq!(q.send(&pkt).unwrap(), pkt.len());
            let mut buf = [0u8; 64];
            let (n, from) = rx
                .recv_from(&mut buf)
                .expect("datagram written into the TUN");
            assert_eq!(&buf[..n], b"from the tunnel");
            assert_eq!(from, (PEER_ADDR, 4444).into());

            // An ICMP echo request written in is answered back out.
            let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
            icmp.extend_from_slice(b"ping payload");
            let c = checksum(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            q.send(&ipv4(PEER_ADDR, TUN_ADDR, 1, &icmp)).unwrap();
            let reply = recv_matching(&q, 2000, |p| p.len() >= 28 && p[0] >> 4 == 4 && p[9] == 1)
                .expect("echo reply");
            assert_eq!(&reply[12..16], &TUN_ADDR.octets());
            assert_eq!(&reply[16..20], &PEER_ADDR.octets());
            assert_eq!(reply[20], 0, "echo reply type");
            assert_eq!(&reply[24..26], &[0x12, 0x34]);
            assert_eq!(&reply[28..], b"ping payload");

            // Garbage is refused, not a panic.
            let err = q.send(&[0x00, 1, 2, 3]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
            let _ = q.send(&[]);

            // Nothing queued: WouldBlock, not a hang.
            while q.recv(&mut [0u8; 2048]).is_ok() {}
            assert_eq!(
                q.recv(&mut [0u8; 2048]).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
        });
    }

    #[test]
    fn exclusive_create_and_open_queue_checks() {
        let Some(ns) = NetNs::new("tun-excl") else {
            return;
        };
        let (tun, _q) = setup(&ns);
        ns.run(|| {
            let err = Tun::create("wst0").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            // lo exists but is no TUN.
            assert_eq!(
                open_queue("lo").unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            // A missing interface is not created by attaching to it.
            assert_eq!(
                open_queue("wst9").unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
            assert_eq!(ifindex("wst9"), None);
            assert_eq!(mtu("wst9").unwrap_err().kind(), io::ErrorKind::NotFound);
            assert_eq!(set_up("wst9").unwrap_err().kind(), io::ErrorKind::NotFound);
            // The kernel numbers a pattern.
            let (numbered, _q2) = Tun::create("wsn%d").unwrap();
            assert_eq!(numbered.name(), "wsn0");
            assert!(Tun::existing("wst0").unwrap() == tun);
            assert!(set_mtu("wst0", 70000).is_err());
            assert!(set_mtu("wst0", u32::MAX).is_err());
        });
    }

    #[test]
    fn multi_queue_detach_and_lifetime() {
        let Some(ns) = NetNs::new("tun-mq") else {
            return;
        };
        let (tun, q1) = setup(&ns);
        ns.run(|| {
            let q2 = tun.open_queue().unwrap();

            // Many flows over two attached queues: both queues see traffic,
            // none is lost.
            let count_flows = |queues: &[&TunQueue], flows: u16, base: u16| -> Vec<usize> {
                let socks: Vec<UdpSocket> = (0..flows)
                    .map(|_| UdpSocket::bind((TUN_ADDR, 0)).unwrap())
                    .collect();
                for (i, s) in socks.iter().enumerate() {
                    s.send_to(b"x", (PEER_ADDR, base + i as u16)).unwrap();
                }
                let mut buf = [0u8; 2048];
                let mut seen = vec![0usize; queues.len()];
                let mut total = 0;
                let deadline = Instant::now() + Duration::from_secs(3);
                while total < usize::from(flows) && Instant::now() < deadline {
                    for (k, q) in queues.iter().enumerate() {
                        while let Ok(n) = q.recv(&mut buf) {
                            if parse_udp4(&buf[..n])
                                .is_some_and(|(_, _, _, d, _)| (base..base + flows).contains(&d))
                            {
                                seen[k] += 1;
                                total += 1;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen
            };
            let seen = count_flows(&[&q1, &q2], 64, 20000);
            assert_eq!(seen.iter().sum::<usize>(), 64, "{seen:?}");
            assert!(
                seen.iter().all(|&n| n > 0),
                "both queues get flows: {seen:?}"
            );

            // Detached: q1 neither reads nor writes, q2 gets everything.
            q1.detach().unwrap();
            // Detached: q1 is handed nothing (reads are WouldBlock, not an
            // error) but still injects what it writes; q2 gets every flow.
            assert_eq!(
                q1.recv(&mut [0u8; 2048]).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            let rx = UdpSocket::bind((TUN_ADDR, 0)).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let port = rx.local_addr().unwrap().port();
            let pkt = udp4(PEER_ADDR, 4444, TUN_ADDR, port, b"via detached");
            assert_eq!(q1.send(&pkt).unwrap(), pkt.len());
            let mut small = [0u8; 64];
            let (n, _) = rx.recv_from(&mut small).unwrap();
            assert_eq!(&small[..n], b"via detached");
            assert_eq!(q1.interface_name().unwrap(), "wst0");
            assert_eq!(
                q1.detach().unwrap_err().raw_os_error(),
                Some(libc::EINVAL),
                "detaching twice"
            );
            let seen = count_flows(&[&q2], 64, 21000);
            assert_eq!(seen, vec![64]);

            q1.attach().unwrap();
            assert_eq!(
                q1.attach().unwrap_err().raw_os_error(),
                Some(libc::EINVAL),
                "attaching twice"
            );
            let seen = count_flows(&[&q1, &q2], 64, 22000);
            assert_eq!(seen.iter().sum::<usize>(), 64, "{seen:?}");

            // A detached queue keeps the interface alive when the data
            // plane's queues go away, and a new data plane can attach.
            q1.detach().unwrap();
            drop(q2);
            assert!(tun.exists(), "interface survives with a detached queue");
            let q3 = tun.open_queue().unwrap();
            let seen = count_flows(&[&q3], 8, 23000);
            assert_eq!(seen, vec![8]);

            // Last fd closed: the interface is gone.
            drop(q3);
            drop(q1);
            let deadline = Instant::now() + Duration::from_secs(2);
            while tun.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!tun.exists());
            assert_eq!(
                tun.open_queue().unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
        });
    }

    /// Kernel behaviour the workers rely on, pinned so a kernel change shows.
    #[test]
    fn truncation_down_and_deleted() {
        let Some(ns) = NetNs::new("tun-edge") else {
            return;
        };
        let (tun, q) = setup(&ns);
        ns.run(|| {
            let s = UdpSocket::bind((TUN_ADDR, 0)).unwrap();
            // Let the IPv6 chatter of a fresh interface pass, then drain it.
            std::thread::sleep(Duration::from_millis(200));
            while q.recv(&mut [0u8; 2048]).is_ok() {}

            // A short buffer gets the head of the packet, the rest is lost:
            // a read that fills the buffer may have been truncated.
            s.send_to(&[7u8; 1000], (PEER_ADDR, 9)).unwrap();
            assert!(wait_readable(q.as_raw_fd(), 2000));
            let mut small = [0u8; 100];
            assert_eq!(q.recv(&mut small).unwrap(), 100);
            assert_eq!(
                q.recv(&mut [0u8; 2048]).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );

            let pkt = udp4(PEER_ADDR, 1, TUN_ADDR, 9, b"x");
            set_down("wst0").unwrap();
            assert_eq!(q.send(&pkt).unwrap_err().raw_os_error(), Some(libc::EIO));
            set_up("wst0").unwrap();
            assert_eq!(q.send(&pkt).unwrap(), pkt.len());
        });

        // Deleted under our feet: EBADFD and POLLERR, and ifindex notices.
        ns.ip(&["link", "del", "wst0"]);
        ns.run(|| {
            assert!(!tun.exists());
            assert_eq!(ifindex("wst0"), None);
            let mut buf = [0u8; 2048];
            assert_eq!(
                q.recv(&mut buf).unwrap_err().raw_os_error(),
                Some(libc::EBADFD)
            );
            let pkt = udp4(PEER_ADDR, 1, TUN_ADDR, 9, b"x");
            assert_eq!(q.send(&pkt).unwrap_err().raw_os_error(), Some(libc::EBADFD));
            let mut pfd = libc::pollfd {
                fd: q.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, count 1.
            unsafe { libc::poll(&mut pfd, 1, 0) };
            assert_ne!(pfd.revents & libc::POLLERR, 0);
        });
    }
}
