//! An AF_XDP socket made in one process and used in another.
//!
//! Making one takes what a sandboxed data plane no longer has: its seccomp
//! filter allows no AF_XDP socket, and registering a UMEM without
//! `CAP_IPC_LOCK` counts it against a memory-lock limit. So where uplinks
//! get AF_XDP at run time, a helper that keeps those privileges makes the
//! socket ([`XskHandover::create`]): its UMEM in a sealed memory file,
//! registered and bound there. The socket and the file cross to the data
//! plane (`SCM_RIGHTS`), which maps both and uses the socket as its own
//! ([`XskHandover::adopt`]). The kernel keeps the pages it pinned at
//! registration, so the maker's own view of the UMEM goes at once, and the
//! data plane's mapping of the same file reaches the very pages the kernel
//! reads and writes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::socket::{bind, bound_mode, check_options, socket_for};
use super::umem::Umem;
use super::{XskMode, XskOptions, XskSocket, ZeroCopy};

/// A bound AF_XDP socket and its UMEM's memory file, rings not mapped.
#[derive(Debug)]
pub struct XskHandover {
    sock: OwnedFd,
    umem: OwnedFd,
    opts: XskOptions,
    ifindex: u32,
    queue: u32,
    mode: XskMode,
}

impl XskHandover {
    /// A socket bound to `queue` of `ifindex` (zero-copy as
    /// [`XskOptions::zero_copy`] says, falling back to copy mode as
    /// [`XskSocket::new`] does), its UMEM registered from a memory file.
    pub fn create(ifindex: u32, queue: u32, opts: XskOptions) -> io::Result<XskHandover> {
        check_options(&opts)?;
        let attempt = |flag| Self::attempt(ifindex, queue, opts, flag);
        match opts.zero_copy {
            ZeroCopy::Off => attempt(libc::XDP_COPY),
            ZeroCopy::Force => attempt(libc::XDP_ZEROCOPY),
            ZeroCopy::Auto => match attempt(libc::XDP_ZEROCOPY) {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => attempt(libc::XDP_COPY),
                other => other,
            },
        }
    }

    fn attempt(ifindex: u32, queue: u32, opts: XskOptions, flag: u16) -> io::Result<XskHandover> {
        let (umem, file) = Umem::new_shared(opts.frames, opts.frame_size)?;
        let sock = socket_for(&umem, opts.ring_size)?;
        bind(sock.as_raw_fd(), ifindex, queue, flag)?;
        let mode = bound_mode(sock.as_raw_fd())?;
        // Only this process's view goes: the kernel holds the pages.
        drop(umem);
        Ok(XskHandover {
            sock,
            umem: file,
            opts,
            ifindex,
            queue,
            mode,
        })
    }

    /// What another process sent: a bound AF_XDP socket and its UMEM's
    /// file, with the geometry they were made with. Fails when `sock` is
    /// not a bound AF_XDP socket.
    pub fn from_fds(
        sock: OwnedFd,
        umem: OwnedFd,
        opts: XskOptions,
        ifindex: u32,
        queue: u32,
    ) -> io::Result<XskHandover> {
        check_options(&opts)?;
        let mode = bound_mode(sock.as_raw_fd())?;
        Ok(XskHandover {
            sock,
            umem,
            opts,
            ifindex,
            queue,
            mode,
        })
    }

    /// The socket and the UMEM's file, to send to another process.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.sock.as_raw_fd(), self.umem.as_raw_fd()]
    }

    pub fn options(&self) -> XskOptions {
        self.opts
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The mode the socket is bound in.
    pub fn mode(&self) -> XskMode {
        self.mode
    }

    /// The socket, ready for this process's workers: UMEM and rings mapped
    /// here, the kernel's share of frames on the fill ring. No system call
    /// outside the data plane's seccomp filter (mmap without PROT_EXEC,
    /// getsockopt, fstat, fcntl).
    pub fn adopt(self) -> io::Result<XskSocket> {
        let XskHandover {
            sock,
            umem,
            opts,
            ifindex,
            queue,
            ..
        } = self;
        XskSocket::adopt(sock, umem.as_fd(), &opts, ifindex, queue)
    }
}

impl AsRawFd for XskHandover {
    /// The socket (for an XSKMAP entry).
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
