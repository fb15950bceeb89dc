//! One datagram with descriptors over a `SOCK_SEQPACKET` socket
//! (SCM_RIGHTS), for the two protocols that pass them: the XDP attacher's
//! ([`super::attacher::wire`]) and the host data plane's attach socket
//! ([`super::host::wire`]). Each encodes its own messages; the control
//! message handling, where the unsafe code is, lives only here.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message may carry: the host's attach message
/// (a region, an eventfd and one TUN queue per worker) is the largest.
pub const MAX_FDS: usize = 32;

/// Room for the control message of [`MAX_FDS`] descriptors, aligned as
/// `cmsghdr` wants.
#[repr(C)]
union CmsgBuf {
    _align: libc::cmsghdr,
    bytes: [u8; 256],
}

// CMSG_SPACE(4 * MAX_FDS) = 16 + 128, rounded: well inside the buffer.
const _: () = assert!(16 + 4 * MAX_FDS <= 256);

/// What one receive found.
#[derive(Debug)]
pub enum Received {
    /// A message of this many bytes (at the start of the buffer), and the
    /// descriptors that came with it, owned here from now on.
    Msg(usize, Vec<OwnedFd>),
    /// Nothing waiting (without `wait`).
    Nothing,
    /// The other end is closed (or died with data unread).
    Closed,
}

/// Sends `msg` with `fds` as one datagram.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    let mut cbuf = CmsgBuf { bytes: [0; 256] };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut mh: libc::msghdr = unsafe { mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        // SAFETY: the union is read as bytes only through this pointer.
        mh.msg_control = unsafe { cbuf.bytes.as_mut_ptr() }.cast();
        mh.msg_controllen = space;
        // SAFETY: msg_control points at `space` (<= 256: at most MAX_FDS
        // descriptors, checked above) writable bytes aligned for cmsghdr,
        // so CMSG_FIRSTHDR is a valid header there, and CMSG_DATA has room
        // for `data_len` bytes after it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                data_len as usize,
            );
        }
    }
    loop {
        // SAFETY: mh points at live buffers (iov, cbuf) for the call; the
        // kernel only reads the iovec's bytes.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one datagram into `buf`, waiting for it with `wait`, without
/// otherwise. A message or control message that did not fit is an error
/// (its descriptors are closed).
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8], wait: bool) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf { bytes: [0; 256] };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut mh: libc::msghdr = unsafe { mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    // SAFETY: the union is written as bytes only, by the kernel.
    mh.msg_control = unsafe { cbuf.bytes.as_mut_ptr() }.cast();
    mh.msg_controllen = mem::size_of::<CmsgBuf>();
    let flags = libc::MSG_CMSG_CLOEXEC | if wait { 0 } else { libc::MSG_DONTWAIT };
    let n = loop {
        // SAFETY: mh points at live, writable buffers for the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(Received::Nothing),
            // The peer died with data unread: as good as closed.
            io::ErrorKind::ConnectionReset => return Ok(Received::Closed),
            _ => return Err(e),
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed control messages; CMSG_FIRSTHDR/NXTHDR stay inside them
    // and CMSG_DATA of an SCM_RIGHTS message holds whole descriptors that
    // this process now owns (and so closes, whatever happens next).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len.saturating_sub(data as usize - c as usize);
                for i in 0..len / mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    if mh.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message or its descriptors cut short",
        ));
    }
    Ok(Received::Msg(n, fds))
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
