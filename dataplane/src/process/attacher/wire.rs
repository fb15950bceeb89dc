//! What the data plane and its attacher say to each other: one message per
//! datagram of a `SOCK_SEQPACKET` socket pair (so no framing), descriptors
//! alongside (`SCM_RIGHTS`). Small fixed layouts, native byte order (both
//! ends are the same binary). Whatever else arrives is an error for the
//! receiver to report, never a panic, and descriptors that came with a
//! message they do not belong to are closed.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest message, text included.
pub const MAX_MSG: usize = 1024;
/// Most descriptors one message carries (a socket and its UMEM's file).
const MAX_FDS: usize = 2;

const PORT: u8 = 1;
const ATTACHED: u8 = 2;
const READY: u8 = 3;
const FAILED: u8 = 4;
const BYE: u8 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Attacher to data plane: one bound AF_XDP socket, with the geometry
    /// it was made with; the socket and its UMEM's memory file go along.
    Port {
        ifindex: u32,
        queue: u32,
        frames: u32,
        frame_size: u32,
        ring_size: u32,
    },
    /// Attacher to data plane: every socket of uplink `iface` was sent;
    /// `summary` is the line to log once the workers have them.
    Attached { iface: String, summary: String },
    /// Attacher to data plane: the uplinks known at the start are done.
    /// Not `active`: AF_XDP was given up, and the attacher ends.
    Ready { active: bool },
    /// Attacher to data plane: the start failed (AF_XDP was forced).
    Failed(String),
    /// Data plane to attacher: detach everything and end.
    Bye,
}

impl Msg {
    /// How many descriptors travel with this message.
    pub fn fds(&self) -> usize {
        match self {
            Msg::Port { .. } => 2,
            _ => 0,
        }
    }

    /// The message's bytes in `buf`, returning their length. Text longer
    /// than a message holds is cut at a character boundary.
    pub fn encode(&self, buf: &mut [u8; MAX_MSG]) -> usize {
        buf[..4].fill(0);
        let text = |buf: &mut [u8; MAX_MSG], kind: u8, t: &str| {
            buf[0] = kind;
            let mut end = t.len().min(MAX_MSG - 4);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            buf[4..4 + end].copy_from_slice(&t.as_bytes()[..end]);
            4 + end
        };
        match self {
            Msg::Port {
                ifindex,
                queue,
                frames,
                frame_size,
                ring_size,
            } => {
                buf[0] = PORT;
                for (i, v) in [ifindex, queue, frames, frame_size, ring_size]
                    .into_iter()
                    .enumerate()
                {
                    buf[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_ne_bytes());
                }
                24
            }
            // An interface name has no white space (the kernel refuses it).
            Msg::Attached { iface, summary } => text(buf, ATTACHED, &format!("{iface}\n{summary}")),
            Msg::Failed(t) => text(buf, FAILED, t),
            Msg::Ready { active } => {
                buf[0] = READY;
                buf[1] = u8::from(*active);
                4
            }
            Msg::Bye => {
                buf[0] = BYE;
                4
            }
        }
    }

    pub fn decode(b: &[u8]) -> io::Result<Msg> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if b.len() < 4 {
            return Err(bad("attacher message shorter than its header"));
        }
        let text = || {
            std::str::from_utf8(&b[4..])
                .map(str::to_owned)
                .map_err(|_| bad("attacher message: text not UTF-8"))
        };
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        match (b[0], b.len()) {
            (PORT, 24) => Ok(Msg::Port {
                ifindex: u32_at(4),
                queue: u32_at(8),
                frames: u32_at(12),
                frame_size: u32_at(16),
                ring_size: u32_at(20),
            }),
            (ATTACHED, _) => {
                let t = text()?;
                let (iface, summary) = t
                    .split_once('\n')
                    .ok_or_else(|| bad("attacher message: uplink without its line"))?;
                Ok(Msg::Attached {
                    iface: iface.to_owned(),
                    summary: summary.to_owned(),
                })
            }
            (FAILED, _) => text().map(Msg::Failed),
            (READY, 4) if b[1] <= 1 => Ok(Msg::Ready { active: b[1] == 1 }),
            (BYE, 4) => Ok(Msg::Bye),
            (kind, len) => Err(bad(&format!(
                "attacher message of kind {kind} and {len} bytes"
            ))),
        }
    }
}

/// What one receive got.
#[derive(Debug)]
pub enum Received {
    Msg(Msg, Vec<OwnedFd>),
    /// Nothing waiting (without `wait`).
    Nothing,
    /// The other end is closed.
    Closed,
}

/// Room for the control message of [`MAX_FDS`] descriptors, aligned as
/// `cmsghdr` wants.
#[repr(C)]
union CmsgBuf {
    _align: libc::cmsghdr,
    bytes: [u8; 64],
}

/// Sends `msg` with `fds` (as many as [`Msg::fds`] says).
pub fn send(sock: BorrowedFd<'_>, msg: &Msg, fds: &[RawFd]) -> io::Result<()> {
    if fds.len() != msg.fds() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "attacher message with the wrong number of descriptors",
        ));
    }
    let mut buf = [0u8; MAX_MSG];
    let len = msg.encode(&mut buf);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let mut cbuf = CmsgBuf { bytes: [0; 64] };
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
        // SAFETY: msg_control points at `space` (<= 64) writable bytes
        // aligned for cmsghdr, so CMSG_FIRSTHDR is a valid header there,
        // and CMSG_DATA has room for `data_len` bytes after it.
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
        // SAFETY: mh points at live buffers (iov, cbuf) for the call.
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

/// Receives one message, waiting for it with `wait`, without otherwise.
pub fn recv(sock: BorrowedFd<'_>, wait: bool) -> io::Result<Received> {
    let mut buf = [0u8; MAX_MSG];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf { bytes: [0; 64] };
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
            _ => return Err(e),
        }
    };
    // Whatever happens next, descriptors that arrived are owned (and so
    // closed) here.
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed control messages; CMSG_FIRSTHDR/NXTHDR stay inside them
    // and CMSG_DATA of an SCM_RIGHTS message holds whole descriptors that
    // this process now owns.
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
            "attacher message or its descriptors cut short",
        ));
    }
    let msg = Msg::decode(&buf[..n])?;
    if fds.len() != msg.fds() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "attacher message {msg:?} with {} descriptors, not {}",
                fds.len(),
                msg.fds()
            ),
        ));
    }
    Ok(Received::Msg(msg, fds))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn roundtrip(m: Msg) -> Msg {
        let mut buf = [0u8; MAX_MSG];
        let n = m.encode(&mut buf);
        Msg::decode(&buf[..n]).unwrap()
    }

    #[test]
    fn every_message_decodes_to_itself() {
        for m in [
            Msg::Port {
                ifindex: 7,
                queue: 3,
                frames: 4096,
                frame_size: 2048,
                ring_size: 2048,
            },
            Msg::Attached {
                iface: "eth0".into(),
                summary: "backend: AF_XDP on eth0 (Driver mode XDP)".into(),
            },
            Msg::Failed("no XDP here".into()),
            Msg::Ready { active: true },
            Msg::Ready { active: false },
            Msg::Bye,
        ] {
            assert_eq!(roundtrip(m.clone()), m);
        }
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MSG);
        let Msg::Failed(t) = roundtrip(Msg::Failed(long.clone())) else {
            panic!("kind changed");
        };
        assert!(t.len() <= MAX_MSG - 4 && long.starts_with(&t) && !t.is_empty());
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut port = [0u8; MAX_MSG];
        let n = Msg::Port {
            ifindex: 1,
            queue: 0,
            frames: 2,
            frame_size: 2048,
            ring_size: 2,
        }
        .encode(&mut port);
        for b in [
            &[][..],
            &[PORT, 0, 0][..],
            &port[..n - 1],
            &[READY, 2, 0, 0][..],
            &[BYE, 0, 0, 0, 0][..],
            &[ATTACHED, 0, 0, 0, 0xff][..],
            &[ATTACHED, 0, 0, 0, b'x'][..],
            &[99, 0, 0, 0][..],
        ] {
            assert!(Msg::decode(b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn descriptors_cross_and_stay_usable() {
        let (a, b) = pair().unwrap();
        let (mut r, mut w) = std::io::pipe().unwrap();
        let port = Msg::Port {
            ifindex: 2,
            queue: 1,
            frames: 64,
            frame_size: 4096,
            ring_size: 64,
        };
        send(a.as_fd(), &port, &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        send(a.as_fd(), &Msg::Bye, &[]).unwrap();
        let Received::Msg(m, fds) = recv(b.as_fd(), true).unwrap() else {
            panic!("no message");
        };
        assert_eq!((m, fds.len()), (port, 2));
        // The received write end reaches the pipe whose read end we keep.
        std::fs::File::from(fds[1].try_clone().unwrap())
            .write_all(b"x")
            .unwrap();
        let mut got = [0u8; 1];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        w.write_all(b"y").unwrap();
        assert!(matches!(
            recv(b.as_fd(), false).unwrap(),
            Received::Msg(Msg::Bye, ref f) if f.is_empty()
        ));
        assert!(matches!(recv(b.as_fd(), false).unwrap(), Received::Nothing));
        drop(a);
        assert!(matches!(recv(b.as_fd(), true).unwrap(), Received::Closed));
    }

    #[test]
    fn wrong_descriptor_counts_are_refused() {
        let (a, b) = pair().unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        // The sender checks its own side...
        assert!(send(a.as_fd(), &Msg::Bye, &[r.as_raw_fd()]).is_err());
        // ...and the receiver the other's: a Port without descriptors.
        let mut buf = [0u8; MAX_MSG];
        let n = Msg::Port {
            ifindex: 1,
            queue: 0,
            frames: 2,
            frame_size: 2048,
            ring_size: 2,
        }
        .encode(&mut buf);
        // SAFETY: a live socket and a buffer of n readable bytes.
        let sent = unsafe { libc::send(a.as_raw_fd(), buf.as_ptr().cast(), n, 0) };
        assert_eq!(sent, n as isize);
        assert!(recv(b.as_fd(), true).is_err());
    }
}
