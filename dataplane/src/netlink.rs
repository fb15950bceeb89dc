//! The kernel's routing and neighbour tables over rtnetlink, so the AF_XDP
//! transmit path can address Ethernet frames the way the kernel would.
//!
//! Raw `NETLINK_ROUTE` sockets through `libc`; messages are built and parsed
//! by hand (NLMSG_ALIGN / RTA_ALIGN, host byte order). Replies are untrusted
//! bytes: every length is checked, nothing panics on a malformed reply, and
//! `NLMSG_ERROR` replies become [`io::Error`]s carrying the kernel's errno
//! (`raw_os_error()`), e.g. `ENETUNREACH` from [`route_get`] or `ENODEV` for
//! an unknown interface index.
//!
//! A netlink socket talks to the network namespace its *creating thread* was
//! in when it was opened; the free functions open a socket per call, a
//! [`Netlink`] (and a [`NextHopCache`]) keeps one.
//!
//! These are control-path calls (one or two system calls each), made on a
//! [`NextHopCache`] miss, not per packet.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

// <linux/netlink.h>
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000); // NLA_F_NESTED, NLA_F_NET_BYTEORDER

// <linux/rtnetlink.h>
const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_MARK: u16 = 16;
const RTA_VIA: u16 = 18;
const RTN_UNICAST: u8 = 1;

// <linux/neighbour.h>
const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// `ndm_state` bits for which the link-layer address can be used to send:
/// NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

// <linux/if_link.h>
const IFINFOMSG_LEN: usize = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// How long to wait for the kernel's reply before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// `NLMSG_ALIGN` / `RTA_ALIGN`: round up to a multiple of 4, saturating.
pub(crate) const fn align4(n: usize) -> usize {
    match n.checked_add(3) {
        Some(m) => m & !3,
        None => usize::MAX & !3,
    }
}

/// The answer to a route lookup, as `ip route get` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The output interface's index.
    pub oif: u32,
    /// The next hop when it is not the destination itself (`via`). An IPv4
    /// route through an IPv6 next hop (RTA_VIA, RFC 5549) reports the IPv6
    /// address.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would choose (`src`).
    pub prefsrc: Option<IpAddr>,
}

/// One rtnetlink socket, bound to the network namespace of the thread that
/// opened it. Requests are synchronous: one request, its reply, then the next.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2) with constant arguments; no pointers involved.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just created and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval that outlives the call, and the
        // length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; 16 * 1024],
        })
    }

    /// The route the kernel would use to send to `dst` (RTM_GETROUTE, like
    /// `ip route get DST [mark MARK]`); `mark` is the fwmark (SO_MARK) of the
    /// sending socket, sent as RTA_MARK when nonzero. An IPv4-mapped IPv6
    /// address is looked up as IPv4. Errors carry the kernel's errno, e.g.
    /// `ENETUNREACH` when no route matches.
    pub fn route_get(&mut self, dst: IpAddr, mark: u32) -> io::Result<Route> {
        self.route_get_typed(dst, mark).map(|(route, _)| route)
    }

    /// [`Netlink::route_get`], also returning the route type (RTN_*).
    fn route_get_typed(&mut self, dst: IpAddr, mark: u32) -> io::Result<(Route, u8)> {
        let dst = dst.to_canonical();
        let (family, addr_len) = family_of(dst);
        let mut req = Request::new(RTM_GETROUTE, NLM_F_REQUEST);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
        // scope, type, flags (u32).
        let mut rtm = [0u8; RTMSG_LEN];
        rtm[0] = family;
        rtm[1] = (addr_len * 8) as u8;
        req.push(&rtm);
        req.attr(RTA_DST, &octets(dst)[..addr_len]);
        if mark != 0 {
            req.attr(RTA_MARK, &mark.to_ne_bytes());
        }
        let mut out = None;
        self.transact(&mut req, false, |ty, body| {
            if ty != RTM_NEWROUTE {
                return Err(invalid("unexpected reply to RTM_GETROUTE"));
            }
            out = Some(parse_route(body)?);
            Ok(())
        })?;
        out.ok_or_else(|| invalid("no reply to RTM_GETROUTE"))
    }

    /// The link-layer address of neighbour `ip` on interface `ifindex`, when
    /// the kernel has one in a usable state (REACHABLE, STALE, DELAY, PROBE,
    /// PERMANENT or NOARP) and it is an Ethernet address; `None` when there
    /// is no entry, or it is INCOMPLETE, FAILED or NONE. An IPv4-mapped IPv6
    /// address is looked up as IPv4.
    ///
    /// Uses an RTM_GETNEIGH get request (Linux 5.0+), and on kernels that
    /// answer EOPNOTSUPP to that, a dump filtered here.
    pub fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
        Ok(self.neighbour_entry(ifindex, ip)?.and_then(usable_mac))
    }

    /// The neighbour entry's state and link-layer address, whatever the state.
    fn neighbour_entry(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<Neigh>> {
        match self.neighbour_get(ifindex, ip) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.neighbour_dump(ifindex, ip)
            }
            r => r,
        }
    }

    fn neighbour_get(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<Neigh>> {
        let ip = ip.to_canonical();
        let ifindex = check_ifindex(ifindex)?;
        let mut req = Request::new(RTM_GETNEIGH, NLM_F_REQUEST);
        req.push(&ndmsg(family_of(ip).0, ifindex));
        req.attr(NDA_DST, &octets(ip)[..family_of(ip).1]);
        let mut out = None;
        let r = self.transact(&mut req, false, |ty, body| {
            if ty != RTM_NEWNEIGH {
                return Err(invalid("unexpected reply to RTM_GETNEIGH"));
            }
            out = parse_neigh(body);
            Ok(())
        });
        match r {
            Ok(()) => Ok(out.map(|(_, _, n)| n)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn neighbour_dump(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<Neigh>> {
        let ip = ip.to_canonical();
        let want_ifindex = check_ifindex(ifindex)?;
        let mut req = Request::new(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP);
        // Older kernels ignore the ifindex here; the filter below does not.
        req.push(&ndmsg(family_of(ip).0, want_ifindex));
        let mut out = None;
        self.transact(&mut req, true, |ty, body| {
            if ty == RTM_NEWNEIGH {
                if let Some((idx, dst, n)) = parse_neigh(body) {
                    if idx == want_ifindex && dst == Some(ip) {
                        out = Some(n);
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The Ethernet address of interface `ifindex` (RTM_GETLINK,
    /// IFLA_ADDRESS). `ENODEV` when there is no such interface;
    /// `ErrorKind::Unsupported` when it has no 6-byte link-layer address
    /// (a TUN or WireGuard interface, for instance).
    pub fn interface_mac(&mut self, ifindex: u32) -> io::Result<[u8; 6]> {
        let idx = check_ifindex(ifindex)?;
        let mut req = Request::new(RTM_GETLINK, NLM_F_REQUEST);
        // struct ifinfomsg: family, pad, type (u16), index (i32), flags, change.
        let mut ifi = [0u8; IFINFOMSG_LEN];
        ifi[4..8].copy_from_slice(&idx.to_ne_bytes());
        req.push(&ifi);
        req.attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        let mut out = None;
        self.transact(&mut req, false, |ty, body| {
            if ty != RTM_NEWLINK {
                return Err(invalid("unexpected reply to RTM_GETLINK"));
            }
            let attrs = body.get(IFINFOMSG_LEN..).unwrap_or(&[]);
            out = attrs_of(attrs)
                .find(|&(t, _)| t == IFLA_ADDRESS)
                .and_then(|(_, v)| <[u8; 6]>::try_from(v).ok());
            Ok(())
        })?;
        out.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("interface {ifindex} has no Ethernet address"),
            )
        })
    }

    /// Sends `req` and feeds the replies with our sequence number to `each`
    /// (message type, payload after the netlink header): the first one for a
    /// get request, every one up to NLMSG_DONE for a dump. NLMSG_ERROR with
    /// a nonzero code ends it with that errno.
    fn transact(
        &mut self,
        req: &mut Request,
        dump: bool,
        mut each: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = req.finish(seq);
        // SAFETY: an all-zero sockaddr_nl is valid (plain integers).
        let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: `msg` and `kernel` are valid for the lengths passed
            // for the duration of the call.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&kernel as *const libc::sockaddr_nl).cast(),
                    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        loop {
            let n = self.recv()?;
            let mut done = false;
            for m in messages(&self.buf[..n]) {
                let Some(m) = m else {
                    return Err(invalid("malformed netlink reply"));
                };
                if m.seq != seq {
                    continue; // a late reply to an earlier, timed-out request
                }
                match m.ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR | NLMSG_DONE => {
                        // struct nlmsgerr starts with the (negative) errno;
                        // a dump's NLMSG_DONE may carry one as well.
                        let code = m
                            .body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        match code {
                            Some(c) if c != 0 => {
                                return Err(io::Error::from_raw_os_error(c.wrapping_neg()))
                            }
                            None if m.ty == NLMSG_ERROR => {
                                return Err(invalid("short NLMSG_ERROR"))
                            }
                            // An ACK, or the end of a dump.
                            _ => done = m.ty == NLMSG_DONE || !dump,
                        }
                    }
                    NLMSG_OVERRUN => return Err(invalid("netlink overrun")),
                    ty => {
                        each(ty, m.body)?;
                        done = !dump;
                    }
                }
                if done {
                    break;
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Receives one datagram into `self.buf`, growing it first if needed
    /// (peeking at the length), and returns its length.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: a zero-length peek writes nothing; the null pointer
            // is never dereferenced.
            let want = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if want < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no netlink reply from the kernel",
                        ))
                    }
                    _ => return Err(e),
                }
            }
            let want = want as usize;
            if want > self.buf.len() {
                self.buf.resize(want, 0);
            }
            // SAFETY: `self.buf` is valid for writes of its whole length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(invalid("netlink reply truncated"));
            }
            return Ok(n);
        }
    }
}

/// [`Netlink::route_get`] on a socket opened for this call.
pub fn route_get(dst: IpAddr, mark: u32) -> io::Result<Route> {
    Netlink::open()?.route_get(dst, mark)
}

/// [`Netlink::neighbour`] on a socket opened for this call.
pub fn neighbour(ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
    Netlink::open()?.neighbour(ifindex, ip)
}

/// [`Netlink::interface_mac`] on a socket opened for this call.
pub fn interface_mac(ifindex: u32) -> io::Result<[u8; 6]> {
    Netlink::open()?.interface_mac(ifindex)
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn check_ifindex(ifindex: u32) -> io::Result<i32> {
    match i32::try_from(ifindex) {
        Ok(i) if i > 0 => Ok(i),
        _ => Err(io::Error::from_raw_os_error(libc::ENODEV)),
    }
}

/// Address family and address length of `ip`.
fn family_of(ip: IpAddr) -> (u8, usize) {
    match ip {
        IpAddr::V4(_) => (AF_INET, 4),
        IpAddr::V6(_) => (AF_INET6, 16),
    }
}

/// The address bytes, in the first 4 or 16 bytes.
fn octets(ip: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b = a.octets(),
    }
    b
}

fn addr_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

/// struct ndmsg: family, pad1, pad2 (u16), ifindex (i32), state (u16),
/// flags, type.
fn ndmsg(family: u8, ifindex: i32) -> [u8; NDMSG_LEN] {
    let mut m = [0u8; NDMSG_LEN];
    m[0] = family;
    m[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    m
}

/// A neighbour entry: its NUD state and link-layer address, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Neigh {
    state: u16,
    lladdr: Option<[u8; 6]>,
}

fn usable_mac(n: Neigh) -> Option<[u8; 6]> {
    if n.state & NUD_USABLE != 0 {
        n.lladdr
    } else {
        None
    }
}

/// Parses an RTM_NEWNEIGH payload: (ifindex, NDA_DST, entry).
fn parse_neigh(body: &[u8]) -> Option<(i32, Option<IpAddr>, Neigh)> {
    let hdr = body.get(..NDMSG_LEN)?;
    let ifindex = i32::from_ne_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let state = u16::from_ne_bytes([hdr[8], hdr[9]]);
    let mut dst = None;
    let mut lladdr = None;
    for (ty, v) in attrs_of(body.get(NDMSG_LEN..)?) {
        match ty {
            NDA_DST => dst = addr_from(v),
            NDA_LLADDR => lladdr = <[u8; 6]>::try_from(v).ok(),
            _ => {}
        }
    }
    Some((
        ifindex,
        dst.map(|d| d.to_canonical()),
        Neigh { state, lladdr },
    ))
}

/// Parses an RTM_NEWROUTE payload into the route and its type.
fn parse_route(body: &[u8]) -> io::Result<(Route, u8)> {
    let hdr = body
        .get(..RTMSG_LEN)
        .ok_or_else(|| invalid("short rtmsg"))?;
    let rtype = hdr[7];
    let mut route = Route {
        oif: 0,
        gateway: None,
        prefsrc: None,
    };
    for (ty, v) in attrs_of(&body[RTMSG_LEN..]) {
        match ty {
            RTA_OIF => route.oif = ne_u32(v).unwrap_or(0),
            RTA_GATEWAY => route.gateway = addr_from(v),
            // struct rtvia: family (u16), then the address.
            RTA_VIA if route.gateway.is_none() => {
                route.gateway = v.get(2..).and_then(addr_from);
            }
            RTA_PREFSRC => route.prefsrc = addr_from(v),
            _ => {}
        }
    }
    Ok((route, rtype))
}

/// One netlink message: its type, sequence number and payload.
struct Message<'a> {
    ty: u16,
    seq: u32,
    body: &'a [u8],
}

/// The messages in a datagram; yields `None` once (and then stops) when a
/// header is malformed: shorter than itself, or longer than what is left.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Option<Message<'_>>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None; // the end (a short tail is ignored)
        }
        let len = ne_u32(&buf[0..4])? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(None);
        }
        let m = Message {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            body: &buf[NLMSG_HDRLEN..len],
        };
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Some(m))
    })
}

/// The attributes (type without the NESTED/BYTEORDER flags, payload) in
/// `buf`; stops at the first malformed one.
pub(crate) fn attrs_of(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            buf = &[];
            return None;
        }
        let v = &buf[4..len];
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some((ty, v))
    })
}

/// A request being built in a fixed buffer (ours are all well under 128
/// bytes: header, a 12- or 16-byte family header, up to two attributes).
struct Request {
    buf: [u8; 128],
    len: usize,
}

impl Request {
    fn new(ty: u16, flags: u16) -> Request {
        let mut r = Request {
            buf: [0; 128],
            len: NLMSG_HDRLEN,
        };
        r.buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        r.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        r
    }

    /// Appends bytes, then pads to a 4-byte boundary (NLMSG_ALIGN).
    fn push(&mut self, data: &[u8]) {
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len = align4(self.len + data.len());
    }

    /// Appends an attribute: rta_len (header + payload, unpadded), rta_type,
    /// the payload, padding to RTA_ALIGN.
    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        let mut h = [0u8; 4];
        h[0..2].copy_from_slice(&len.to_ne_bytes());
        h[2..4].copy_from_slice(&ty.to_ne_bytes());
        self.buf[self.len..self.len + 4].copy_from_slice(&h);
        self.len += 4;
        self.push(data);
    }

    /// Fills in length and sequence number; the message to send.
    fn finish(&mut self, seq: u32) -> &[u8] {
        self.buf[0..4].copy_from_slice(&(self.len as u32).to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf[..self.len]
    }
}

/// Where to send an Ethernet frame for one destination: the interface, the
/// source and destination MAC addresses, and the source IP the kernel would
/// use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// The output interface (as the route says; a VLAN device's own index
    /// when the route points at one).
    pub ifindex: u32,
    /// The output interface's MAC address.
    pub src_mac: [u8; 6],
    /// The next hop's MAC address: the destination's on a directly
    /// connected network, otherwise the gateway's.
    pub dst_mac: [u8; 6],
    /// The route's preferred source address.
    pub src_ip: IpAddr,
}

/// The answer of [`NextHopCache::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Frames to this destination can be built and sent directly.
    Resolved(NextHop),
    /// Send this packet through the kernel's UDP socket instead. Either the
    /// next hop's MAC is not known yet (sending through the kernel makes it
    /// resolve the neighbour, so a later lookup succeeds), or the route is
    /// not one a frame can be built for (a local address, an interface
    /// without an Ethernet address, no preferred source address).
    Unresolved,
}

struct Entry {
    /// The usable part of the route; `None` when the route is unusable or
    /// the lookup failed.
    route: Option<RouteHop>,
    /// When the route (and a resolved neighbour) must be looked up again.
    expires: Instant,
    /// The next hop's MAC, once known.
    dst_mac: Option<[u8; 6]>,
    /// When an unresolved neighbour may be asked for again.
    retry_at: Instant,
}

#[derive(Clone, Copy)]
struct RouteHop {
    ifindex: u32,
    src_mac: [u8; 6],
    src_ip: IpAddr,
    /// Whose MAC to ask for: the gateway, or the destination itself.
    via: IpAddr,
}

/// A per-destination cache of [`NextHop`]s for the AF_XDP transmit path.
///
/// `resolve(dst)` answers from the cache while the entry is younger than the
/// TTL (a few seconds; [`NextHopCache::DEFAULT_TTL`]), and otherwise asks the
/// kernel: the route (`ip route get`, with the configured fwmark), the output
/// interface's MAC, and the neighbour entry of the gateway or destination.
/// [`NextHopCache::invalidate`] forces the next `resolve` to ask again
/// (after a send error, a routing change, or a roaming endpoint).
///
/// **When the neighbour is unknown** (no entry, INCOMPLETE or FAILED), or the
/// route is unusable for building frames, `resolve` returns
/// [`Resolve::Unresolved`]: the caller must hand *that* packet to the
/// kernel's UDP socket (with the same fwmark) instead of dropping it.
/// Sending through the kernel makes it run ARP / neighbour discovery, so a
/// later `resolve` finds the MAC. To keep a destination whose neighbour never
/// resolves from costing a netlink round trip per packet, an unresolved
/// neighbour is asked for again only after the retry interval
/// ([`NextHopCache::DEFAULT_RETRY`]); the route is kept for the TTL. A
/// failed route lookup returns its error once and then counts as
/// `Unresolved` for the retry interval; on an error, too, send through the
/// kernel.
///
/// Frames sent through AF_XDP bypass the kernel's neighbour state machine,
/// so the kernel's entry ages from REACHABLE to STALE and is not
/// re-confirmed by this traffic; STALE entries are still used (as the kernel
/// itself does). A changed MAC reaches the kernel's table through the
/// neighbour's own ARP requests or gratuitous ARP, and this cache picks it
/// up within one TTL.
///
/// The netlink socket is opened on first use, in the network namespace of
/// the thread calling `resolve` then. IPv4-mapped IPv6 destinations are
/// looked up (and cached) as IPv4. Not thread-safe by design: one per worker.
pub struct NextHopCache {
    nl: Option<Netlink>,
    ttl: Duration,
    retry: Duration,
    mark: u32,
    max_entries: usize,
    entries: HashMap<IpAddr, Entry>,
}

impl NextHopCache {
    /// How long a resolved next hop is used without asking again.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
    /// How long an unresolved neighbour (or failed route) is not asked for.
    pub const DEFAULT_RETRY: Duration = Duration::from_millis(100);
    /// The default bound on cached destinations (all are dropped when full
    /// and none has expired).
    pub const DEFAULT_MAX_ENTRIES: usize = 4096;

    /// A cache whose entries live for `ttl`, with no fwmark and the default
    /// retry interval and size.
    pub fn new(ttl: Duration) -> NextHopCache {
        NextHopCache {
            nl: None,
            ttl,
            retry: Self::DEFAULT_RETRY,
            mark: 0,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            entries: HashMap::new(),
        }
    }

    /// Uses `mark` as the fwmark in route lookups: set it to the mark of
    /// the data plane's UDP socket, so policy routing agrees with the
    /// kernel path.
    pub fn with_mark(mut self, mark: u32) -> NextHopCache {
        self.mark = mark;
        self
    }

    /// Sets how long an unresolved neighbour is not asked for again
    /// (`Duration::ZERO`: ask on every `resolve`).
    pub fn with_retry(mut self, retry: Duration) -> NextHopCache {
        self.retry = retry;
        self
    }

    /// Sets the bound on cached destinations (at least 1).
    pub fn with_max_entries(mut self, max: usize) -> NextHopCache {
        self.max_entries = max.max(1);
        self
    }

    /// The next hop for `dst`, from the cache or the kernel.
    pub fn resolve(&mut self, dst: IpAddr) -> io::Result<Resolve> {
        self.resolve_at(dst, Instant::now())
    }

    /// [`NextHopCache::resolve`] with the current time given (monotonic).
    pub fn resolve_at(&mut self, dst: IpAddr, now: Instant) -> io::Result<Resolve> {
        let dst = dst.to_canonical();
        if let Some(e) = self.entries.get(&dst) {
            if now < e.expires {
                match (e.route, e.dst_mac) {
                    (Some(r), Some(mac)) => return Ok(Resolve::Resolved(hop(r, mac))),
                    (None, _) => return Ok(Resolve::Unresolved),
                    (Some(_), None) if now < e.retry_at => return Ok(Resolve::Unresolved),
                    (Some(r), None) => {
                        // Pushed back first, so that a failing lookup is
                        // not repeated for every packet either.
                        let retry_at = now + self.retry;
                        if let Some(e) = self.entries.get_mut(&dst) {
                            e.retry_at = retry_at;
                        }
                        let mac = self.netlink()?.neighbour(r.ifindex, r.via)?;
                        if let Some(e) = self.entries.get_mut(&dst) {
                            e.dst_mac = mac;
                        }
                        return Ok(match mac {
                            Some(mac) => Resolve::Resolved(hop(r, mac)),
                            None => Resolve::Unresolved,
                        });
                    }
                }
            }
        }
        self.entries.remove(&dst);
        if self.entries.len() >= self.max_entries {
            self.entries.retain(|_, e| now < e.expires);
            if self.entries.len() >= self.max_entries {
                self.entries.clear();
            }
        }
        let looked_up = self.look_up(dst);
        let (route, dst_mac, result) = match looked_up {
            Ok(Some((r, mac))) => (Some(r), mac, Ok(())),
            Ok(None) => (None, None, Ok(())),
            Err(e) => (None, None, Err(e)),
        };
        let expires = if result.is_err() {
            now + self.retry
        } else {
            now + self.ttl
        };
        self.entries.insert(
            dst,
            Entry {
                route,
                expires,
                dst_mac,
                retry_at: now + self.retry,
            },
        );
        result?;
        Ok(match (route, dst_mac) {
            (Some(r), Some(mac)) => Resolve::Resolved(hop(r, mac)),
            _ => Resolve::Unresolved,
        })
    }

    /// Forgets `dst`, so the next `resolve` asks the kernel again.
    pub fn invalidate(&mut self, dst: IpAddr) {
        self.entries.remove(&dst.to_canonical());
    }

    /// Forgets every destination (after a routing change, say).
    pub fn invalidate_all(&mut self) {
        self.entries.clear();
    }

    /// The number of cached destinations, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn netlink(&mut self) -> io::Result<&mut Netlink> {
        if self.nl.is_none() {
            self.nl = Some(Netlink::open()?);
        }
        // Just set when it was None.
        self.nl.as_mut().ok_or_else(|| invalid("netlink socket"))
    }

    /// Asks the kernel: `None` when the route cannot be used for frames.
    fn look_up(&mut self, dst: IpAddr) -> io::Result<Option<(RouteHop, Option<[u8; 6]>)>> {
        let mark = self.mark;
        let nl = self.netlink()?;
        let (route, rtype) = nl.route_get_typed(dst, mark)?;
        let Some(src_ip) = route.prefsrc else {
            return Ok(None);
        };
        if rtype != RTN_UNICAST || route.oif == 0 {
            return Ok(None);
        }
        let src_mac = match nl.interface_mac(route.oif) {
            Ok(mac) if mac != [0; 6] => mac,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return Ok(None),
            Err(e) => return Err(e),
        };
        let via = route.gateway.map_or(dst, |g| g.to_canonical());
        let r = RouteHop {
            ifindex: route.oif,
            src_mac,
            src_ip: src_ip.to_canonical(),
            via,
        };
        let mac = nl.neighbour(route.oif, via)?;
        Ok(Some((r, mac)))
    }
}

fn hop(r: RouteHop, dst_mac: [u8; 6]) -> NextHop {
    NextHop {
        ifindex: r.ifindex,
        src_mac: r.src_mac,
        dst_mac,
        src_ip: r.src_ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(align4(0), 0);
        assert_eq!(align4(1), 4);
        assert_eq!(align4(4), 4);
        assert_eq!(align4(5), 8);
        assert_eq!(align4(usize::MAX), usize::MAX & !3);
    }

    #[test]
    fn request_layout() {
        let mut r = Request::new(RTM_GETROUTE, NLM_F_REQUEST);
        r.push(&[7u8; RTMSG_LEN]);
        r.attr(RTA_DST, &[10, 0, 0, 1]);
        r.attr(99, &[1, 2, 3]); // padded to 4
        r.attr(RTA_MARK, &5u32.to_ne_bytes());
        let m = r.finish(42).to_vec();
        assert_eq!(m.len(), 16 + 12 + 8 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()),
            m.len() as u32
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_GETROUTE);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 42);
        let attrs: Vec<_> = attrs_of(&m[28..]).collect();
        assert_eq!(
            attrs,
            vec![
                (RTA_DST, &[10u8, 0, 0, 1][..]),
                (99, &[1, 2, 3][..]),
                (RTA_MARK, &5u32.to_ne_bytes()[..]),
            ]
        );
        // rta_len is unpadded.
        assert_eq!(u16::from_ne_bytes([m[36], m[37]]), 7);
    }

    fn nlmsg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn parses_messages_and_stops_on_malformed() {
        let mut d = nlmsg(RTM_NEWROUTE, 1, &[1, 2, 3]); // padded body
        d.extend(nlmsg(NLMSG_DONE, 2, &0i32.to_ne_bytes()));
        let ms: Vec<_> = messages(&d).map(|m| m.unwrap()).collect();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].body, &[1, 2, 3]);
        assert_eq!((ms[1].ty, ms[1].seq), (NLMSG_DONE, 2));

        let mut bad = d.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        let ms: Vec<_> = messages(&bad).collect();
        assert!(ms.len() == 1 && ms[0].is_none());
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&bad).next().unwrap().is_none());
        // A last message whose padding is missing still parses.
        let one = nlmsg(RTM_NEWROUTE, 1, &[1, 2, 3]);
        assert_eq!(messages(&one[..one.len() - 1]).count(), 1);
    }

    #[test]
    fn parses_route_reply() {
        let mut body = vec![AF_INET, 32, 0, 0, 254, 0, 0, RTN_UNICAST, 0, 0, 0, 0];
        body.extend(attr(RTA_OIF, &7u32.to_ne_bytes()));
        body.extend(attr(RTA_GATEWAY | 0x4000, &[10, 0, 0, 254]));
        body.extend(attr(RTA_PREFSRC, &[10, 0, 0, 1]));
        body.extend(attr(RTA_MARK, &[1])); // wrong size, ignored
        let (r, t) = parse_route(&body).unwrap();
        assert_eq!(t, RTN_UNICAST);
        assert_eq!(r.oif, 7);
        assert_eq!(r.gateway, Some("10.0.0.254".parse().unwrap()));
        assert_eq!(r.prefsrc, Some("10.0.0.1".parse().unwrap()));

        // RFC 5549: an IPv4 route via an IPv6 next hop.
        let mut body = vec![AF_INET, 32, 0, 0, 254, 0, 0, RTN_UNICAST, 0, 0, 0, 0];
        let mut via = (AF_INET6 as u16).to_ne_bytes().to_vec();
        via.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend(attr(RTA_VIA, &via));
        let (r, _) = parse_route(&body).unwrap();
        assert_eq!(r.gateway, Some("fe80::1".parse().unwrap()));
        assert!(parse_route(&body[..11]).is_err());
    }

    #[test]
    fn parses_neighbour_reply() {
        let mut body = ndmsg(AF_INET, 3).to_vec();
        body[8..10].copy_from_slice(&0x02u16.to_ne_bytes());
        body.extend(attr(NDA_DST, &[10, 0, 0, 2]));
        body.extend(attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 9]));
        let (idx, dst, n) = parse_neigh(&body).unwrap();
        assert_eq!((idx, dst), (3, Some("10.0.0.2".parse().unwrap())));
        assert_eq!(usable_mac(n), Some([2, 0, 0, 0, 0, 9]));
        for (state, usable) in [
            (0x01u16, false), // INCOMPLETE
            (0x02, true),     // REACHABLE
            (0x04, true),     // STALE
            (0x08, true),     // DELAY
            (0x10, true),     // PROBE
            (0x20, false),    // FAILED
            (0x40, true),     // NOARP
            (0x80, true),     // PERMANENT
            (0x00, false),    // NONE
        ] {
            let n = Neigh {
                state,
                lladdr: Some([1; 6]),
            };
            assert_eq!(usable_mac(n).is_some(), usable, "state {state:#x}");
        }
        // A non-Ethernet lladdr is not an address we can use.
        let mut body = ndmsg(AF_INET, 3).to_vec();
        body[8..10].copy_from_slice(&0x80u16.to_ne_bytes());
        body.extend(attr(NDA_LLADDR, &[1, 2, 3, 4]));
        assert_eq!(usable_mac(parse_neigh(&body).unwrap().2), None);
        assert!(parse_neigh(&body[..11]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            for m in messages(&d).flatten() {
                let _ = parse_route(m.body);
                let _ = parse_neigh(m.body);
                let _ = attrs_of(m.body).count();
            }
            let _ = parse_route(&d);
            let _ = parse_neigh(&d);
            let _ = attrs_of(&d).count();
        }
    }

    /// Tests against the kernel in throwaway network namespaces (root only).
    mod kernel {
        use super::super::*;
        use crate::frame::{parse_udp_frame, write_udp_frame, FrameHeader};
        use std::fs::File;
        use std::net::{SocketAddr, UdpSocket};
        use std::process::Command;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::mpsc;

        static NEXT: AtomicUsize = AtomicUsize::new(0);

        fn is_root() -> bool {
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            if !root {
                eprintln!("skipped: needs root for network namespaces");
            }
            root
        }

        fn ip(args: &str) -> String {
            let out = Command::new("ip")
                .args(args.split_whitespace())
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// A network namespace named `wsn-<pid>-<n>`, deleted on drop.
        struct Ns(String);

        impl Ns {
            fn new() -> Ns {
                let name = format!(
                    "wsn-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                ip(&format!("netns add {name}"));
                let ns = Ns(name);
                ns.ip("link set lo up");
                ns
            }

            fn ip(&self, args: &str) -> String {
                ip(&format!("-n {} {args}", self.0))
            }

            fn exec(&self, args: &str) -> bool {
                Command::new("ip")
                    .args(["netns", "exec", &self.0])
                    .args(args.split_whitespace())
                    .output()
                    .expect("ip netns exec")
                    .status
                    .success()
            }

            fn ifindex(&self, dev: &str) -> u32 {
                let out = self.ip(&format!("-o link show dev {dev}"));
                out.split(':').next().unwrap().trim().parse().unwrap()
            }

            fn mac(&self, dev: &str) -> [u8; 6] {
                let out = self.ip(&format!("-o link show dev {dev}"));
                let s = out.split("link/ether ").nth(1).expect("link/ether");
                let mut mac = [0u8; 6];
                for (i, part) in s[..17].split(':').enumerate() {
                    mac[i] = u8::from_str_radix(part, 16).unwrap();
                }
                mac
            }

            /// Starts `f` on a thread that has entered this namespace.
            fn spawn<T: Send + 'static>(
                &self,
                f: impl FnOnce() -> T + Send + 'static,
            ) -> std::thread::JoinHandle<T> {
                let path = format!("/var/run/netns/{}", self.0);
                std::thread::spawn(move || {
                    let ns = File::open(&path).expect("open netns");
                    // SAFETY: setns with a valid namespace fd; CLONE_NEWNET
                    // changes only this thread's network namespace, and the
                    // thread ends with `f`.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                    f()
                })
            }

            /// Runs `f` on a thread that has entered this namespace.
            fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
                join(self.spawn(f))
            }
        }

        fn join<T>(t: std::thread::JoinHandle<T>) -> T {
            t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        }

        impl Drop for Ns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }

        /// Two namespaces joined by a veth pair: `wsa` (10.77.0.1/24,
        /// fd77::1/64) in `a`, `wsb` (10.77.0.2/24, fd77::2/64) in `b`.
        struct Pair {
            a: Ns,
            b: Ns,
        }

        fn pair() -> Pair {
            let a = Ns::new();
            let b = Ns::new();
            a.ip(&format!(
                "link add wsa type veth peer name wsb netns {}",
                b.0
            ));
            a.ip("addr add 10.77.0.1/24 dev wsa");
            a.ip("addr add fd77::1/64 dev wsa nodad");
            b.ip("addr add 10.77.0.2/24 dev wsb");
            b.ip("addr add fd77::2/64 dev wsb nodad");
            a.ip("link set wsa up");
            b.ip("link set wsb up");
            Pair { a, b }
        }

        fn state(ns: &Ns, ifindex: u32, peer: IpAddr) -> Option<Neigh> {
            ns.run(move || {
                Netlink::open()
                    .unwrap()
                    .neighbour_entry(ifindex, peer)
                    .unwrap()
            })
        }

        fn v(s: &str) -> IpAddr {
            s.parse().unwrap()
        }

        #[test]
        fn ipv4_routes_neighbours_and_links() {
            if !is_root() {
                return;
            }
            let p = pair();
            let (a, b) = (&p.a, &p.b);
            let wsa = a.ifindex("wsa");
            let wsa_mac = a.mac("wsa");
            let wsb_mac = b.mac("wsb");

            let r = a.run(|| route_get(v("10.77.0.2"), 0).unwrap());
            assert_eq!(
                r,
                Route {
                    oif: wsa,
                    gateway: None,
                    prefsrc: Some(v("10.77.0.1"))
                }
            );
            // Mapped addresses are looked up as IPv4.
            let r2 = a.run(|| route_get(v("::ffff:10.77.0.2"), 0).unwrap());
            assert_eq!(r2, r);

            // No entry before any traffic; REACHABLE with wsb's MAC after a ping.
            assert_eq!(a.run(move || neighbour(wsa, v("10.77.0.2")).unwrap()), None);
            assert!(a.exec("ping -c 1 -w 5 10.77.0.2"), "ping");
            let n = state(a, wsa, v("10.77.0.2")).unwrap();
            assert_eq!(n.state, 0x02, "REACHABLE");
            assert_eq!(n.lladdr, Some(wsb_mac));
            assert_eq!(
                a.run(move || neighbour(wsa, v("10.77.0.2")).unwrap()),
                Some(wsb_mac)
            );
            // The dump fallback finds the same entry.
            let dumped = a.run(move || {
                Netlink::open()
                    .unwrap()
                    .neighbour_dump(wsa, v("10.77.0.2"))
                    .unwrap()
            });
            assert_eq!(dumped, Some(n));

            // Unknown, unusable and static entries.
            assert_eq!(
                a.run(move || neighbour(wsa, v("10.77.0.99")).unwrap()),
                None
            );
            a.ip("neigh add 10.77.0.51 dev wsa nud incomplete");
            a.ip("neigh add 10.77.0.52 dev wsa nud failed");
            a.ip("neigh add 10.77.0.53 dev wsa nud noarp lladdr 02:00:00:00:00:53");
            a.ip("neigh add 10.77.0.54 dev wsa nud stale lladdr 02:00:00:00:00:54");
            a.ip("neigh add 10.77.0.55 dev wsa nud permanent lladdr 02:00:00:00:00:55");
            let got = a.run(move || {
                let mut nl = Netlink::open().unwrap();
                (51..=55)
                    .map(|i| {
                        let ip = IpAddr::V4(Ipv4Addr::new(10, 77, 0, i));
                        nl.neighbour(wsa, ip).unwrap()
                    })
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                got,
                vec![
                    None,
                    None,
                    Some([2, 0, 0, 0, 0, 0x53]),
                    Some([2, 0, 0, 0, 0, 0x54]),
                    Some([2, 0, 0, 0, 0, 0x55]),
                ]
            );

            // Interfaces.
            assert_eq!(a.run(move || interface_mac(wsa).unwrap()), wsa_mac);
            let e = a.run(|| interface_mac(9999).unwrap_err());
            assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
            let e = a.run(|| neighbour(9999, v("10.77.0.2")).unwrap_err());
            assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
            let lo = a.ifindex("lo");
            assert_eq!(a.run(move || interface_mac(lo).unwrap()), [0; 6]);

            // A route via a gateway.
            a.ip("route add 192.0.2.0/24 via 10.77.0.2");
            let r = a.run(|| route_get(v("192.0.2.9"), 0).unwrap());
            assert_eq!(r.oif, wsa);
            assert_eq!(r.gateway, Some(v("10.77.0.2")));
            assert_eq!(r.prefsrc, Some(v("10.77.0.1")));

            // Policy routing by fwmark; without the mark there is no route.
            a.ip("rule add fwmark 0x77 table 77");
            a.ip("route add 198.51.100.0/24 via 10.77.0.254 dev wsa table 77");
            let r = a.run(|| route_get(v("198.51.100.1"), 0x77).unwrap());
            assert_eq!(r.gateway, Some(v("10.77.0.254")));
            assert_eq!(r.oif, wsa);
            let e = a.run(|| route_get(v("198.51.100.1"), 0).unwrap_err());
            assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
        }

        #[test]
        fn ipv6_routes_and_neighbours() {
            if !is_root() {
                return;
            }
            let p = pair();
            let (a, b) = (&p.a, &p.b);
            let wsa = a.ifindex("wsa");
            let wsb_mac = b.mac("wsb");
            let r = a.run(|| route_get(v("fd77::2"), 0).unwrap());
            assert_eq!(r.oif, wsa);
            assert_eq!(r.gateway, None);
            assert_eq!(r.prefsrc, Some(v("fd77::1")));

            assert_eq!(a.run(move || neighbour(wsa, v("fd77::2")).unwrap()), None);
            assert!(a.exec("ping -6 -c 1 -w 5 fd77::2"), "ping -6");
            let n = state(a, wsa, v("fd77::2")).unwrap();
            assert_eq!(n.state, 0x02, "REACHABLE");
            assert_eq!(
                a.run(move || neighbour(wsa, v("fd77::2")).unwrap()),
                Some(wsb_mac)
            );
            assert_eq!(a.run(move || neighbour(wsa, v("fd77::99")).unwrap()), None);

            a.ip("-6 route add 2001:db8::/32 via fd77::2");
            let r = a.run(|| route_get(v("2001:db8::1"), 0).unwrap());
            assert_eq!(r.oif, wsa);
            assert_eq!(r.gateway, Some(v("fd77::2")));
            assert_eq!(r.prefsrc, Some(v("fd77::1")));
            let e = a.run(|| route_get(v("2001:db9::1"), 0).unwrap_err());
            assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
        }

        #[test]
        fn next_hop_cache() {
            if !is_root() {
                return;
            }
            let p = pair();
            let (a, b) = (&p.a, &p.b);
            let wsa = a.ifindex("wsa");
            let wsa_mac = a.mac("wsa");
            let wsb_mac = b.mac("wsb");
            a.ip("route add 192.0.2.0/24 via 10.77.0.2");
            let expected = NextHop {
                ifindex: wsa,
                src_mac: wsa_mac,
                dst_mac: wsb_mac,
                src_ip: v("10.77.0.1"),
            };
            let (tx, rx) = mpsc::channel::<&'static str>();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            // The cache lives on one thread in `a`; this thread changes the
            // neighbour table in between when asked to.
            let worker = a.spawn(move || {
                let mut c =
                    NextHopCache::new(Duration::from_secs(3)).with_retry(Duration::from_millis(50));
                let peer = v("10.77.0.2");
                let t0 = Instant::now();
                assert_eq!(c.resolve_at(peer, t0).unwrap(), Resolve::Unresolved);
                assert_eq!(c.len(), 1);
                // Within the retry interval: no new lookup, still unresolved.
                assert_eq!(c.resolve_at(peer, t0).unwrap(), Resolve::Unresolved);
                // What the data plane does: send through the kernel, which
                // resolves the neighbour.
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.send_to(b"x", "10.77.0.2:9").unwrap();
                let deadline = Instant::now() + Duration::from_secs(3);
                let hop = loop {
                    match c.resolve(peer).unwrap() {
                        Resolve::Resolved(h) => break h,
                        Resolve::Unresolved if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Resolve::Unresolved => panic!("neighbour never resolved"),
                    }
                };
                assert_eq!(hop, expected);
                // Mapped and gateway destinations share the neighbour.
                assert_eq!(
                    c.resolve(v("::ffff:10.77.0.2")).unwrap(),
                    Resolve::Resolved(expected)
                );
                assert_eq!(
                    c.resolve(v("192.0.2.55")).unwrap(),
                    Resolve::Resolved(expected)
                );
                // Local destinations cannot be framed.
                assert_eq!(c.resolve(v("10.77.0.1")).unwrap(), Resolve::Unresolved);
                // No route: the error once, then Unresolved for a while.
                let t = Instant::now();
                let e = c.resolve_at(v("203.0.113.1"), t).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
                assert_eq!(
                    c.resolve_at(v("203.0.113.1"), t).unwrap(),
                    Resolve::Unresolved
                );

                // The neighbour's MAC changes: the cache keeps the old one
                // until the TTL runs out (or it is invalidated).
                tx.send("change mac").unwrap();
                done_rx.recv().unwrap();
                let now = Instant::now();
                assert_eq!(
                    c.resolve_at(peer, now).unwrap(),
                    Resolve::Resolved(expected)
                );
                let later = now + Duration::from_secs(3);
                let moved = NextHop {
                    dst_mac: [2, 0, 0, 0, 0, 0x42],
                    ..expected
                };
                assert_eq!(c.resolve_at(peer, later).unwrap(), Resolve::Resolved(moved));
                assert_eq!(
                    c.resolve_at(v("192.0.2.55"), later).unwrap(),
                    Resolve::Resolved(moved)
                );

                // The entry is deleted: cached until invalidated.
                tx.send("delete").unwrap();
                done_rx.recv().unwrap();
                assert_eq!(c.resolve_at(peer, later).unwrap(), Resolve::Resolved(moved));
                c.invalidate(v("::ffff:10.77.0.2"));
                assert_eq!(c.resolve_at(peer, later).unwrap(), Resolve::Unresolved);
                c.invalidate_all();
                assert!(c.is_empty());
            });
            // Ends when the worker drops `tx`: finished or panicked.
            for step in rx {
                match step {
                    "change mac" => a.ip(
                        "neigh replace 10.77.0.2 lladdr 02:00:00:00:00:42 dev wsa nud permanent",
                    ),
                    "delete" => a.ip("neigh del 10.77.0.2 dev wsa"),
                    other => panic!("unknown step {other}"),
                };
                done_tx.send(()).unwrap();
            }
            join(worker);
        }

        /// Sends a whole frame out of `ifindex` through an AF_PACKET socket,
        /// as an AF_XDP transmit would.
        fn packet_send(ifindex: u32, frame: &[u8]) {
            // SAFETY: socket(2) with constant arguments.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: a descriptor we just created and own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: an all-zero sockaddr_ll is valid (plain integers).
            let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: `frame` and `sll` are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
        }

        /// UDP and UDPv6 InCsumErrors of the calling thread's network
        /// namespace (/proc/self/net would show the main thread's).
        fn udp_csum_errors() -> (u64, u64) {
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
            let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
            let names = udp.next().unwrap().split_whitespace();
            let values = udp.next().unwrap().split_whitespace();
            let v4 = names
                .zip(values)
                .find(|(n, _)| *n == "InCsumErrors")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap();
            let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap();
            let v6 = snmp6
                .lines()
                .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            (v4, v6)
        }

        /// Frames built from a resolved next hop with `write_udp_frame` are
        /// accepted by the peer's UDP stack (which checks the checksums);
        /// a frame with a bad UDP checksum is not.
        #[test]
        fn written_frames_reach_a_udp_socket() {
            if !is_root() {
                return;
            }
            let p = pair();
            let (a, b) = (&p.a, &p.b);
            assert!(a.exec("ping -c 1 -w 5 10.77.0.2"), "ping");
            assert!(a.exec("ping -6 -c 1 -w 5 fd77::2"), "ping -6");

            let (ready_tx, ready_rx) = mpsc::channel::<()>();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let receiver = b.spawn(move || {
                let s4 = UdpSocket::bind("10.77.0.2:5555").unwrap();
                let s6 = UdpSocket::bind("[fd77::2]:5556").unwrap();
                ready_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                for s in [&s4, &s6] {
                    s.set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        got.push((buf[..n].to_vec(), from));
                    }
                }
                (got, udp_csum_errors())
            });
            ready_rx.recv().unwrap();

            let sent = a.run(|| {
                let mut c = NextHopCache::new(NextHopCache::DEFAULT_TTL);
                let mut good = Vec::new();
                let cases: Vec<(SocketAddr, Vec<u8>, bool)> = vec![
                    ("10.77.0.2:5555".parse().unwrap(), b"bad v4".to_vec(), true),
                    (
                        "10.77.0.2:5555".parse().unwrap(),
                        b"good v4".to_vec(),
                        false,
                    ),
                    ("10.77.0.2:5555".parse().unwrap(), vec![0xab; 1401], false),
                    ("[fd77::2]:5556".parse().unwrap(), b"bad v6".to_vec(), true),
                    (
                        "[fd77::2]:5556".parse().unwrap(),
                        b"good v6".to_vec(),
                        false,
                    ),
                    ("[fd77::2]:5556".parse().unwrap(), vec![0xcd; 1377], false),
                    ("[fd77::2]:5556".parse().unwrap(), Vec::new(), false),
                ];
                for (dst, payload, corrupt) in cases {
                    let Resolve::Resolved(hop) = c.resolve(dst.ip()).unwrap() else {
                        panic!("{dst} unresolved after ping");
                    };
                    let hdr = FrameHeader {
                        src_mac: hop.src_mac,
                        dst_mac: hop.dst_mac,
                        vlan: None,
                        src: SocketAddr::new(hop.src_ip, 40000),
                        dst,
                    };
                    let mut buf = [0u8; 2048];
                    let off = hdr.header_len();
                    buf[off..off + payload.len()].copy_from_slice(&payload);
                    let n = write_udp_frame(&mut buf, &hdr, payload.len()).unwrap();
                    assert_eq!(parse_udp_frame(&buf[..n]).unwrap().payload, &payload[..]);
                    if corrupt {
                        buf[n - 1] ^= 0xff;
                    } else {
                        good.push((payload, hdr.src));
                    }
                    packet_send(hop.ifindex, &buf[..n]);
                }
                good
            });
            go_tx.send(()).unwrap();
            let (got, csum_errors) = join(receiver);
            assert_eq!(got, sent);
            assert_eq!(
                csum_errors,
                (1, 1),
                "the corrupted frames died of their checksum"
            );
        }
    }
}
