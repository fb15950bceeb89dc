//! What the data plane and its attacher say to each other: one message per
//! datagram of a `SOCK_SEQPACKET` socket pair (so no framing), descriptors
//! alongside (`SCM_RIGHTS`). Small fixed layouts, native byte order (both
//! ends are the same binary). Whatever else arrives is an error for the
//! receiver to report, never a panic, and descriptors that came with a
//! message they do not belong to are closed.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use super::super::fdpass;
use super::super::stats::UplinkReport;
use crate::xdp::XdpStats;
pub use fdpass::pair;

/// Largest message, text included.
pub const MAX_MSG: usize = 1024;
/// Most descriptors one message carries (a socket and its UMEM's file).
const MAX_FDS: usize = 2;

const PORT: u8 = 1;
const ATTACHED: u8 = 2;
const READY: u8 = 3;
const FAILED: u8 = 4;
const BYE: u8 = 5;
const ATTACH: u8 = 6;
const STEER: u8 = 7;
const UNSTEER: u8 = 8;
const REPORT: u8 = 9;
const FIGURES: u8 = 10;

/// Where a figures message's interface name starts.
const FIGURES_NAME: usize = 48;
/// IFNAMSIZ less its NUL: the longest interface name.
const IFNAME_MAX: usize = 15;

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
    // The host data plane's attacher, which reads no region: its
    // supervisor says what to attach and steer. A request (Attach,
    // Report) is answered by what it brings (Port and Attached, Figures)
    // and then Ready, or Failed.
    /// Host to attacher: put AF_XDP on `uplink` (once: asked again, it
    /// is only answered). `udp_gso`: UDP GSO works for the tenants, so
    /// `auto` weighs copy-mode AF_XDP against it (heeded at the first
    /// uplink); `strict`: an error other than a foreign program fails.
    Attach {
        uplink: Uplink,
        udp_gso: bool,
        strict: bool,
    },
    /// Host to attacher: steer this UDP port to AF_XDP, on every uplink
    /// attached and to come.
    Steer(u16),
    /// Host to attacher: steer this port no more.
    Unsteer(u16),
    /// Host to attacher: the programs' figures, please.
    Report,
    /// Attacher to host: one program's figures, in the programs' order.
    Figures(UplinkReport),
}

/// An uplink to attach: named by the operator, or the interface a route
/// to a peer leaves through (the attacher checks XDP can serve it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uplink {
    Named(String),
    Index(u32),
}

/// Whether `name` could be an interface's (the kernel's rule, less the
/// exotic): what a name in a message must be.
fn iface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
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
            Msg::Attach {
                uplink,
                udp_gso,
                strict,
            } => {
                let n = match uplink {
                    Uplink::Named(iface) => text(buf, ATTACH, iface),
                    Uplink::Index(i) => {
                        buf[0] = ATTACH;
                        buf[3] = 1;
                        buf[4..8].copy_from_slice(&i.to_ne_bytes());
                        8
                    }
                };
                buf[1] = u8::from(*udp_gso);
                buf[2] = u8::from(*strict);
                n
            }
            Msg::Steer(port) | Msg::Unsteer(port) => {
                buf[0] = if matches!(self, Msg::Steer(_)) {
                    STEER
                } else {
                    UNSTEER
                };
                buf[4..6].copy_from_slice(&port.to_ne_bytes());
                6
            }
            Msg::Report => {
                buf[0] = REPORT;
                4
            }
            Msg::Figures(r) => {
                buf[0] = FIGURES;
                buf[1] = u8::from(r.stats.is_some());
                buf[4..8].copy_from_slice(&r.ifindex.to_ne_bytes());
                let s = r.stats.unwrap_or_default();
                let counters = [s.steered, s.passed, s.malformed, s.no_socket, s.not_local];
                for (i, v) in counters.into_iter().enumerate() {
                    buf[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_ne_bytes());
                }
                let name = &r.iface.as_bytes()[..r.iface.len().min(MAX_MSG - FIGURES_NAME)];
                buf[FIGURES_NAME..FIGURES_NAME + name.len()].copy_from_slice(name);
                FIGURES_NAME + name.len()
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
        let u64_at = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[i..i + 8]);
            u64::from_ne_bytes(v)
        };
        let name = |at: usize| {
            std::str::from_utf8(&b[at..])
                .ok()
                .filter(|n| iface_name(n))
                .map(str::to_owned)
                .ok_or_else(|| bad("attacher message: not an interface name"))
        };
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
            (ATTACH, n) if b[1] <= 1 && b[2] <= 1 && b[3] <= 1 => Ok(Msg::Attach {
                uplink: match (b[3], n) {
                    (0, _) => Uplink::Named(name(4)?),
                    (_, 8) if u32_at(4) != 0 => Uplink::Index(u32_at(4)),
                    _ => return Err(bad("attacher message: not an interface index")),
                },
                udp_gso: b[1] == 1,
                strict: b[2] == 1,
            }),
            (STEER, 6) => Ok(Msg::Steer(u16::from_ne_bytes([b[4], b[5]]))),
            (UNSTEER, 6) => Ok(Msg::Unsteer(u16::from_ne_bytes([b[4], b[5]]))),
            (REPORT, 4) => Ok(Msg::Report),
            (FIGURES, n) if n > FIGURES_NAME && b[1] <= 1 => Ok(Msg::Figures(UplinkReport {
                iface: name(FIGURES_NAME)?,
                ifindex: u32_at(4),
                stats: (b[1] == 1).then(|| XdpStats {
                    steered: u64_at(8),
                    passed: u64_at(16),
                    malformed: u64_at(24),
                    no_socket: u64_at(32),
                    not_local: u64_at(40),
                }),
            })),
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
    fdpass::send(sock, &buf[..len], fds)
}

/// Receives one message, waiting for it with `wait`, without otherwise.
pub fn recv(sock: BorrowedFd<'_>, wait: bool) -> io::Result<Received> {
    let mut buf = [0u8; MAX_MSG];
    let (n, fds) = match fdpass::recv(sock, &mut buf, wait)? {
        fdpass::Received::Msg(n, fds) => (n, fds),
        fdpass::Received::Nothing => return Ok(Received::Nothing),
        fdpass::Received::Closed => return Ok(Received::Closed),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd};

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
            Msg::Attach {
                uplink: Uplink::Named("eth0".into()),
                udp_gso: true,
                strict: false,
            },
            Msg::Attach {
                uplink: Uplink::Named("enp65s0f0np0".into()),
                udp_gso: false,
                strict: true,
            },
            Msg::Attach {
                uplink: Uplink::Index(u32::MAX),
                udp_gso: true,
                strict: true,
            },
            Msg::Steer(51820),
            Msg::Unsteer(65535),
            Msg::Report,
            figures(Some(u64::MAX)),
            figures(None),
        ] {
            assert_eq!(roundtrip(m.clone()), m);
        }
    }

    fn figures(steered: Option<u64>) -> Msg {
        Msg::Figures(UplinkReport {
            iface: "u1".into(),
            ifindex: 9,
            stats: steered.map(|steered| XdpStats {
                steered,
                passed: 2,
                malformed: 3,
                no_socket: 4,
                not_local: 5,
            }),
        })
    }

    /// The host's messages, cut short at every length or with a byte
    /// changed where it matters, are errors (and never a panic).
    #[test]
    fn malformed_host_messages_are_errors() {
        let attach = |uplink| Msg::Attach {
            uplink,
            udp_gso: true,
            strict: true,
        };
        // With how much of it a message is still one: a name cut short is
        // a shorter name, anything shorter has no name, counters or header.
        for (m, whole) in [
            (attach(Uplink::Named("eth0".into())), 5),
            (attach(Uplink::Index(3)), 8),
            (Msg::Steer(1), 6),
            (Msg::Report, 4),
            (figures(Some(7)), FIGURES_NAME + 1),
        ] {
            let mut buf = [0u8; MAX_MSG];
            let n = m.encode(&mut buf);
            for cut in 0..whole {
                assert!(Msg::decode(&buf[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            // One byte too many: a fixed layout is refused, a name is not
            // one any more (NUL).
            assert!(Msg::decode(&buf[..n + 1]).is_err(), "{m:?} and a NUL");
        }
        let mut buf = [0u8; MAX_MSG];
        let n = figures(None).encode(&mut buf);
        buf[1] = 2;
        assert!(Msg::decode(&buf[..n]).is_err(), "a flag that is not one");
        for bad in ["", "a b", "../x", "a/b", "toolongforaname0", "é\u{0}"] {
            let mut b = vec![ATTACH, 0, 0, 0];
            b.extend_from_slice(bad.as_bytes());
            assert!(Msg::decode(&b).is_err(), "{bad:?}");
        }
        for b in [
            &[ATTACH, 2, 0, 0, b'x'][..],
            &[ATTACH, 0, 9, 0, b'x'][..],
            &[ATTACH, 0, 0, 0, 0xff][..],
            &[ATTACH, 0, 0, 2, 1, 0, 0, 0][..],
            &[ATTACH, 0, 0, 1, 0, 0, 0, 0][..],
            &[ATTACH, 0, 0, 1, 1, 0, 0][..],
            &[STEER, 0, 0, 0, 1, 2, 3][..],
            &[UNSTEER, 0, 0, 0, 1][..],
        ] {
            assert!(Msg::decode(b).is_err(), "{b:?}");
        }
    }

    /// Garbage of every length: an error or a message, never a panic.
    #[test]
    fn garbage_never_panics() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            for _ in 0..50 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Mostly valid kinds, so the decoders get to work.
                        (x % 12) as u8
                    })
                    .collect();
                let _ = Msg::decode(&b);
            }
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
