//! The attach protocol between a control process and the host data plane:
//! one short text message per `SOCK_SEQPACKET` datagram, with descriptors
//! alongside (`SCM_RIGHTS`).
//!
//! - `HELLO` -> `WORKERS n pid`: how many TUN queues an attach must bring.
//! - `ATTACH iface shm_path` with [region, wake eventfd, n TUN queues] ->
//!   `OK port` (the UDP port the host bound for the tenant) or `ERR text`.
//!   The connection then belongs to the tenant: its end is control's end.
//! - `REATTACH iface` with [region] -> `OK port` with [TUN queue, wake
//!   eventfd] for a restarted control whose tenant still runs, or `ERR`.
//! - `DETACH` on a tenant's connection -> `OK 0`: control stops on purpose.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use crate::shm::layout::MAX_WORKERS;

use super::super::fdpass;

/// Longest message (an interface name and a region path fit easily).
pub const MAX_MSG: usize = 1024;
/// Region, wake eventfd and one TUN queue per worker.
pub const MAX_FDS: usize = 2 + MAX_WORKERS;
const _: () = assert!(MAX_FDS <= fdpass::MAX_FDS);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello,
    Attach { iface: String, shm: String },
    Reattach { iface: String },
    Detach,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Workers { n: usize, pid: u32 },
    Ok { port: u16 },
    Err(String),
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A name or path word: no spaces (the separator), nothing empty.
fn word(s: Option<&str>) -> io::Result<String> {
    match s {
        Some(w) if !w.is_empty() && !w.contains(char::is_whitespace) => Ok(w.to_string()),
        _ => Err(bad("attach message with a missing or malformed field")),
    }
}

impl Request {
    pub fn encode(&self) -> String {
        match self {
            Request::Hello => "HELLO".into(),
            Request::Attach { iface, shm } => format!("ATTACH {iface} {shm}"),
            Request::Reattach { iface } => format!("REATTACH {iface}"),
            Request::Detach => "DETACH".into(),
        }
    }

    pub fn decode(b: &[u8]) -> io::Result<Request> {
        let s = std::str::from_utf8(b).map_err(|_| bad("attach message is not UTF-8"))?;
        let mut it = s.split(' ');
        let r = match it.next() {
            Some("HELLO") => Request::Hello,
            Some("ATTACH") => Request::Attach {
                iface: word(it.next())?,
                shm: word(it.next())?,
            },
            Some("REATTACH") => Request::Reattach {
                iface: word(it.next())?,
            },
            Some("DETACH") => Request::Detach,
            _ => return Err(bad("unknown attach request")),
        };
        if it.next().is_some() {
            return Err(bad("attach request with extra fields"));
        }
        Ok(r)
    }

    /// How many descriptors come with it (`workers`: the host's count).
    pub fn fds(&self, workers: usize) -> usize {
        match self {
            Request::Attach { .. } => 2 + workers,
            Request::Reattach { .. } => 1,
            Request::Hello | Request::Detach => 0,
        }
    }
}

impl Reply {
    pub fn encode(&self) -> String {
        match self {
            Reply::Workers { n, pid } => format!("WORKERS {n} {pid}"),
            Reply::Ok { port } => format!("OK {port}"),
            Reply::Err(t) => format!("ERR {t}"),
        }
    }

    pub fn decode(b: &[u8]) -> io::Result<Reply> {
        let s = std::str::from_utf8(b).map_err(|_| bad("attach reply is not UTF-8"))?;
        let num = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok());
        let (head, rest) = s.split_once(' ').unwrap_or((s, ""));
        let mut it = rest.split(' ');
        match head {
            "WORKERS" => match (num(it.next()), num(it.next())) {
                (Some(n), Some(pid)) if (1..=MAX_WORKERS as u64).contains(&n) => {
                    Ok(Reply::Workers {
                        n: n as usize,
                        pid: pid as u32,
                    })
                }
                _ => Err(bad("malformed WORKERS reply")),
            },
            "OK" => match num(it.next()) {
                Some(p) if p <= u16::MAX as u64 => Ok(Reply::Ok { port: p as u16 }),
                _ => Err(bad("malformed OK reply")),
            },
            "ERR" => Ok(Reply::Err(rest.to_string())),
            _ => Err(bad("unknown attach reply")),
        }
    }
}

/// Sends one message with `fds`.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS || msg.len() > MAX_MSG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "attach message or descriptor list too long",
        ));
    }
    fdpass::send(sock, msg, fds)
}

pub enum Received {
    Msg(Vec<u8>, Vec<OwnedFd>),
    Closed,
    Nothing,
}

/// Receives one message, waiting for it with `wait`, without otherwise.
pub fn recv(sock: BorrowedFd<'_>, wait: bool) -> io::Result<Received> {
    let mut buf = [0u8; MAX_MSG];
    Ok(match fdpass::recv(sock, &mut buf, wait)? {
        fdpass::Received::Msg(n, fds) => Received::Msg(buf[..n].to_vec(), fds),
        fdpass::Received::Nothing => Received::Nothing,
        fdpass::Received::Closed => Received::Closed,
    })
}

/// Sends `req` and waits for the reply (with whatever descriptors it brings).
pub fn call(
    sock: BorrowedFd<'_>,
    req: &Request,
    fds: &[RawFd],
) -> io::Result<(Reply, Vec<OwnedFd>)> {
    send(sock, req.encode().as_bytes(), fds)?;
    match recv(sock, true)? {
        Received::Msg(b, fds) => Ok((Reply::decode(&b)?, fds)),
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the host data plane closed the connection",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    #[test]
    fn requests_and_replies_decode_to_themselves() {
        for r in [
            Request::Hello,
            Request::Attach {
                iface: "wg0".into(),
                shm: "/run/wirespeed/1-wg0.region".into(),
            },
            Request::Reattach {
                iface: "wg1".into(),
            },
            Request::Detach,
        ] {
            assert_eq!(Request::decode(r.encode().as_bytes()).unwrap(), r);
        }
        for r in [
            Reply::Workers { n: 4, pid: 77 },
            Reply::Ok { port: 51820 },
            Reply::Err("port taken".into()),
        ] {
            assert_eq!(Reply::decode(r.encode().as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for b in [
            &b""[..],
            b"ATTACH",
            b"ATTACH wg0",
            b"ATTACH  /x",
            b"ATTACH wg0 /x extra",
            b"HELLO there",
            b"\xff\xfe",
            b"WHAT",
        ] {
            assert!(Request::decode(b).is_err(), "{b:?}");
        }
        for b in [
            &b"WORKERS 0 1"[..],
            b"WORKERS 99 1",
            b"OK 70000",
            b"OK",
            b"NO",
        ] {
            assert!(Reply::decode(b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn descriptors_cross() {
        let (a, b) = super::super::super::fdpass::pair().unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        send(a.as_fd(), b"HELLO", &[f.as_raw_fd(), f.as_raw_fd()]).unwrap();
        match recv(b.as_fd(), true).unwrap() {
            Received::Msg(m, got) => {
                assert_eq!(m, b"HELLO");
                assert_eq!(got.len(), 2);
            }
            _ => panic!("nothing received"),
        }
        drop(a);
        assert!(matches!(recv(b.as_fd(), true).unwrap(), Received::Closed));
    }
}
