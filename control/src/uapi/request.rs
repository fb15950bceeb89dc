//! Parsing UAPI requests (`get=1` / `set=1` and their `key=value` lines) into
//! typed transactions.
//!
//! The parser is line-oriented and incremental ([`RequestParser`]) so the
//! server can feed it straight from a socket without buffering a whole
//! request as text. A `set` request is parsed completely before anything is
//! handed on: the handler receives either the whole [`SetRequest`] or nothing,
//! which is how wirespeed keeps the running state untouched when any line of a
//! request is bad (wireguard-go applies the lines before the bad one).
//!
//! Accepted syntax, checked against wireguard-go v0.0.20220316:
//! - a line without `=` is `EPROTO`; every other malformed line is `EINVAL`;
//! - a trailing `\r` is ignored (Go's line scanner drops it), any other
//!   whitespace is part of the value and makes it invalid;
//! - keys are 64 hex digits (either case); numbers are plain decimal digits
//!   (leading zeros allowed, no sign);
//! - boolean keys accept exactly `true`; `protocol_version` accepts exactly `1`;
//! - an all-zero `private_key` removes the private key, an all-zero
//!   `preshared_key` removes the preshared key, `fwmark=0` removes the mark;
//!   an empty value is always an error;
//! - device keys (`private_key`, `listen_port`, `fwmark`, `replace_peers`) are
//!   only valid before the first `public_key`; peer keys only after one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

use super::errno::{EINVAL, EPROTO};
use crate::keys::{decode_hex_key, PresharedKey, PrivateKey, PublicKey};

/// Longest line (without its `\n`) the parser accepts. The longest legitimate
/// line is an IPv6 endpoint with a zone, well under 100 bytes.
pub const MAX_LINE_LEN: usize = 4096;

/// One UAPI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get=1`: dump the device.
    Get,
    /// `set=1`: change the device.
    Set(SetRequest),
}

/// A complete, validated `set=1` transaction, in the order the lines came.
///
/// Semantics (for the handler): apply `private_key`, `listen_port`, `fwmark`;
/// if `replace_peers`, remove every peer first; then apply each
/// [`PeerChange`] in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// `None`: unchanged; `Some(None)`: remove (an all-zero key was sent);
    /// `Some(Some(k))`: set (the kernel and wireguard-go store and report the
    /// key clamped).
    pub private_key: Option<Option<PrivateKey>>,
    /// `Some(0)` asks for a random port.
    pub listen_port: Option<u16>,
    /// `None`: unchanged; `Some(None)`: remove (`fwmark=0`); `Some(Some(m))`: set.
    pub fwmark: Option<Option<u32>>,
    /// `replace_peers=true`: remove all peers before applying `peers`.
    pub replace_peers: bool,
    /// Peer sections, in order; a public key may appear more than once.
    pub peers: Vec<PeerChange>,
}

/// One `public_key=` section of a set request.
///
/// Semantics (for the handler): if `remove`, remove the peer (if present) and
/// ignore the rest of the section; otherwise, if the peer does not exist and
/// `update_only` is set, ignore the section; otherwise create the peer if
/// needed, then apply `preshared_key`, `endpoint`, `persistent_keepalive`, clear
/// the allowed IPs if `replace_allowed_ips`, and add `allowed_ips` (taking each
/// prefix away from whichever peer held it). Prefixes are given as sent, host
/// bits included; [`canonical_prefix`] masks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub public_key: PublicKey,
    pub remove: bool,
    pub update_only: bool,
    /// `None`: unchanged; `Some(None)`: remove (all-zero key); `Some(Some(k))`: set.
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; `Some(0)` turns persistent keepalive off.
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

impl PeerChange {
    /// A section that names the peer and changes nothing.
    pub fn new(public_key: PublicKey) -> Self {
        PeerChange {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Positive errno for the response (written negated, as wireguard-go does).
    pub errno: i32,
    /// Line within the request, 1 = the `get=1`/`set=1` line; 0 = not tied to a line.
    pub line: usize,
    /// What was wrong, for the log. Never contains key material.
    pub message: String,
    /// The stream cannot be resynchronised (unknown operation, request too
    /// large): the server answers and closes the connection.
    pub fatal: bool,
}

impl ParseError {
    pub(crate) fn new(errno: i32, line: usize, message: impl Into<String>) -> Self {
        ParseError {
            errno,
            line,
            message: message.into(),
            fatal: false,
        }
    }
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "line {}: {} (errno {})",
                self.line, self.message, self.errno
            )
        } else {
            write!(f, "{} (errno {})", self.message, self.errno)
        }
    }
}

impl std::error::Error for ParseError {}

/// What feeding one line produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// The request is not finished (or the parser is between requests).
    Incomplete,
    /// A request ended (blank line), or the stream is broken.
    Complete(Result<Request, ParseError>),
}

#[derive(Debug)]
enum State {
    Idle,
    Get {
        error: Option<ParseError>,
    },
    Set {
        req: SetRequest,
        error: Option<ParseError>,
    },
}

/// Incremental parser: feed it one line at a time with
/// [`RequestParser::feed_line`]; several requests may follow each other.
#[derive(Debug)]
pub struct RequestParser {
    state: State,
    line: usize,
    max_line_len: usize,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestParser {
    pub fn new() -> Self {
        Self::with_max_line_len(MAX_LINE_LEN)
    }

    /// A parser that refuses lines longer than `max_line_len` bytes.
    pub fn with_max_line_len(max_line_len: usize) -> Self {
        RequestParser {
            state: State::Idle,
            line: 0,
            max_line_len,
        }
    }

    /// True between requests (nothing of a request has been seen).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Feeds one line, without its `\n` (a trailing `\r` is dropped).
    ///
    /// Blank lines between requests are ignored. After an error inside a
    /// request the parser keeps consuming lines up to the blank line that ends
    /// it (keeping nothing of them), so the stream stays in step and the error
    /// is reported once, when the request ends.
    pub fn feed_line(&mut self, line: &[u8]) -> Progress {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.line += 1;
        let line_no = self.line;
        let too_long = line.len() > self.max_line_len;
        match &mut self.state {
            State::Idle => {
                self.line = 1;
                match line {
                    b"" => {
                        self.line = 0;
                        Progress::Incomplete
                    }
                    b"get=1" => {
                        self.state = State::Get { error: None };
                        Progress::Incomplete
                    }
                    b"set=1" => {
                        self.state = State::Set {
                            req: SetRequest::default(),
                            error: None,
                        };
                        Progress::Incomplete
                    }
                    _ => {
                        self.line = 0;
                        let mut e = ParseError::new(
                            EINVAL,
                            1,
                            format!("invalid UAPI operation {:?}", printable(line, 16)),
                        );
                        e.fatal = true;
                        Progress::Complete(Err(e))
                    }
                }
            }
            State::Get { error } => {
                if line.is_empty() {
                    let error = error.take();
                    self.reset();
                    return Progress::Complete(match error {
                        Some(e) => Err(e),
                        None => Ok(Request::Get),
                    });
                }
                if error.is_none() {
                    *error = Some(ParseError::new(
                        EINVAL,
                        line_no,
                        "get=1 must be followed by a blank line",
                    ));
                }
                Progress::Incomplete
            }
            State::Set { req, error } => {
                if line.is_empty() {
                    let error = error.take();
                    let req = core::mem::take(req);
                    self.reset();
                    return Progress::Complete(match error {
                        Some(e) => Err(e),
                        None => Ok(Request::Set(req)),
                    });
                }
                if error.is_none() {
                    let r = if too_long {
                        Err(ParseError::new(
                            EINVAL,
                            line_no,
                            format!("line longer than {} bytes", self.max_line_len),
                        ))
                    } else {
                        parse_set_line(req, line, line_no)
                    };
                    if let Err(e) = r {
                        *error = Some(e);
                        // Keep nothing of a failed request.
                        *req = SetRequest::default();
                    }
                }
                Progress::Incomplete
            }
        }
    }

    /// The stream ended. Returns an `EPROTO` error if a request was cut short
    /// (it is discarded, never applied), and resets the parser.
    pub fn finish(&mut self) -> Option<ParseError> {
        let cut = !self.is_idle();
        let line = self.line;
        self.reset();
        cut.then(|| {
            let mut e = ParseError::new(EPROTO, line, "connection ended inside a request");
            e.fatal = true;
            e
        })
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.line = 0;
    }
}

impl Request {
    /// Parses one complete request from text (lines separated by `\n`). The
    /// blank line that ends the request may be left out at the end of the
    /// text; anything after it is an error.
    pub fn parse(text: &str) -> Result<Request, ParseError> {
        let mut parser = RequestParser::new();
        let mut lines = text.split('\n').peekable();
        // `split` yields a final "" after a trailing '\n'.
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            if last && line.is_empty() {
                break;
            }
            if let Progress::Complete(r) = parser.feed_line(line.as_bytes()) {
                let rest_empty = lines.all(|l| l.is_empty());
                return match r {
                    Ok(_) if !rest_empty => Err(ParseError::new(
                        EINVAL,
                        0,
                        "text continues after the end of the request",
                    )),
                    r => r,
                };
            }
        }
        if parser.is_idle() {
            return Err(ParseError::new(EINVAL, 0, "empty request"));
        }
        match parser.feed_line(b"") {
            Progress::Complete(r) => r,
            Progress::Incomplete => unreachable!("a blank line always ends a request"),
        }
    }
}

fn parse_set_line(req: &mut SetRequest, line: &[u8], line_no: usize) -> Result<(), ParseError> {
    let invalid = |msg: String| ParseError::new(EINVAL, line_no, msg);
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        // The line is not echoed: it could be a key that lost its name.
        return Err(ParseError::new(EPROTO, line_no, "line is not key=value"));
    };
    let (key, value) = (&line[..eq], &line[eq + 1..]);
    let (Ok(key), Ok(value)) = (core::str::from_utf8(key), core::str::from_utf8(value)) else {
        return Err(invalid("line is not valid UTF-8".into()));
    };
    let bad_value = |what: &str| {
        invalid(format!(
            "invalid {key} value {:?}: {what}",
            printable(value.as_bytes(), 80)
        ))
    };

    if key == "public_key" {
        let k = decode_hex_key(value)
            .map_err(|_| invalid("invalid public_key (want 64 hex digits)".into()))?;
        req.peers.push(PeerChange::new(PublicKey(k)));
        return Ok(());
    }

    let Some(peer) = req.peers.last_mut() else {
        // Device section.
        match key {
            "private_key" => {
                let k = decode_hex_key(value)
                    .map_err(|_| invalid("invalid private_key (want 64 hex digits)".into()))?;
                req.private_key = Some(if k == [0; 32] {
                    None
                } else {
                    Some(PrivateKey::from_bytes(k))
                });
            }
            "listen_port" => {
                req.listen_port = Some(
                    parse_decimal(value).ok_or_else(|| bad_value("want a port number 0-65535"))?,
                );
            }
            "fwmark" => {
                let m: u32 = parse_decimal(value)
                    .ok_or_else(|| bad_value("want a decimal number 0-4294967295"))?;
                req.fwmark = Some((m != 0).then_some(m));
            }
            "replace_peers" => {
                parse_true(value).ok_or_else(|| bad_value("the only accepted value is true"))?;
                req.replace_peers = true;
            }
            _ => {
                return Err(invalid(format!(
                    "invalid UAPI device key {:?}",
                    printable(key.as_bytes(), 40)
                )))
            }
        }
        return Ok(());
    };

    match key {
        "remove" => {
            parse_true(value).ok_or_else(|| bad_value("the only accepted value is true"))?;
            peer.remove = true;
        }
        "update_only" => {
            parse_true(value).ok_or_else(|| bad_value("the only accepted value is true"))?;
            peer.update_only = true;
        }
        "preshared_key" => {
            let k = decode_hex_key(value)
                .map_err(|_| invalid("invalid preshared_key (want 64 hex digits)".into()))?;
            peer.preshared_key = Some(if k == [0; 32] {
                None
            } else {
                Some(PresharedKey::from_bytes(k))
            });
        }
        "endpoint" => {
            peer.endpoint = Some(parse_endpoint(value).map_err(&bad_value)?);
        }
        "persistent_keepalive_interval" => {
            peer.persistent_keepalive =
                Some(parse_decimal(value).ok_or_else(|| bad_value("want seconds 0-65535"))?);
        }
        "replace_allowed_ips" => {
            parse_true(value).ok_or_else(|| bad_value("the only accepted value is true"))?;
            peer.replace_allowed_ips = true;
        }
        "allowed_ip" => {
            peer.allowed_ips
                .push(parse_prefix(value).map_err(&bad_value)?);
        }
        "protocol_version" => {
            if value != "1" {
                return Err(bad_value("only protocol version 1 is supported"));
            }
        }
        _ => {
            return Err(invalid(format!(
                "invalid UAPI peer key {:?}",
                printable(key.as_bytes(), 40)
            )))
        }
    }
    Ok(())
}

fn parse_true(value: &str) -> Option<()> {
    (value == "true").then_some(())
}

/// Plain decimal digits (leading zeros allowed, no sign, no spaces), as Go's
/// `strconv.ParseUint(s, 10, n)` accepts them.
fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an endpoint as `wg` sends it: `a.b.c.d:port` or `[v6]:port`, with
/// an optional `%zone` on the IPv6 address (a number, or the name of an
/// interface, looked up in /sys/class/net). Host names are not resolved: `wg`
/// resolves them before sending.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or("want [IPv6]:port")?;
        let (addr, zone) = match host.split_once('%') {
            Some((a, z)) => (a, Some(z)),
            None => (host, None),
        };
        let ip: Ipv6Addr = addr.parse().map_err(|_| "not an IPv6 address")?;
        let scope = match zone {
            None => 0,
            Some(z) => resolve_zone(z).ok_or("unknown IPv6 zone")?,
        };
        let port = parse_decimal(port).ok_or("bad port")?;
        Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)))
    } else {
        let (host, port) = s.rsplit_once(':').ok_or("want IP:port")?;
        let ip: Ipv4Addr = host.parse().map_err(|_| {
            "not an IPv4 address (IPv6 goes in brackets; host names are not resolved)"
        })?;
        let port = parse_decimal(port).ok_or("bad port")?;
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    }
}

fn resolve_zone(zone: &str) -> Option<u32> {
    if zone.is_empty() {
        return None;
    }
    if let Some(n) = parse_decimal::<u32>(zone) {
        return Some(n);
    }
    // An interface name: at most IFNAMSIZ-1 bytes, never a path.
    if zone.len() > 15 || zone == "." || zone == ".." || zone.contains(['/', '\0']) {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{zone}/ifindex")).ok()?;
    text.trim().parse().ok().filter(|&n| n != 0)
}

/// Parses `addr/cidr` as `allowed_ip` carries it. The host bits are kept;
/// an IPv4-mapped IPv6 address stays IPv6 (as in wireguard-go).
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), &'static str> {
    let (addr, cidr) = s.split_once('/').ok_or("want address/prefix-length")?;
    let (ip, max) = if addr.contains(':') {
        (
            IpAddr::V6(addr.parse().map_err(|_| "not an IPv6 address")?),
            128,
        )
    } else {
        (
            IpAddr::V4(addr.parse().map_err(|_| "not an IPv4 address")?),
            32,
        )
    };
    let cidr: u8 = parse_decimal(cidr)
        .filter(|&c| c <= max)
        .ok_or("bad prefix length")?;
    Ok((ip, cidr))
}

/// The prefix with its host bits cleared, as the kernel and wireguard-go
/// store and report allowed IPs (`10.1.2.3/24` becomes `10.1.2.0/24`).
pub fn canonical_prefix(addr: IpAddr, cidr: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let c = u32::from(cidr.min(32));
            let mask = if c == 0 { 0 } else { u32::MAX << (32 - c) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let c = u32::from(cidr.min(128));
            let mask = if c == 0 { 0 } else { u128::MAX << (128 - c) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// At most `max` bytes of `b`, lossily, for error messages.
fn printable(b: &[u8], max: usize) -> String {
    let cut = &b[..b.len().min(max)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if b.len() > max {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::encode_hex_key;

    fn hex(b: u8) -> String {
        encode_hex_key(&[b; 32])
    }

    fn set(text: &str) -> SetRequest {
        match Request::parse(text) {
            Ok(Request::Set(s)) => s,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn err(text: &str) -> ParseError {
        match Request::parse(text) {
            Err(e) => e,
            Ok(r) => panic!("{text:?} parsed: {r:?}"),
        }
    }

    #[test]
    fn get_and_empty_set() {
        assert_eq!(Request::parse("get=1\n\n"), Ok(Request::Get));
        assert_eq!(Request::parse("get=1\n"), Ok(Request::Get));
        assert_eq!(
            Request::parse("set=1\n\n"),
            Ok(Request::Set(SetRequest::default()))
        );
        assert_eq!(err("get=1\nfoo=bar\n\n").errno, EINVAL);
        assert_eq!(err("get=1\n\nget=1\n\n").errno, EINVAL);
        assert_eq!(err("").errno, EINVAL);
    }

    #[test]
    fn unknown_operation_is_fatal_einval() {
        for op in ["get=2\n\n", "foo=1\n\n", "set\n\n", "GET=1\n\n"] {
            let e = err(op);
            assert_eq!(e.errno, EINVAL, "{op:?}");
            assert!(e.fatal, "{op:?}");
        }
    }

    #[test]
    fn device_keys() {
        let s = set(&format!(
            "set=1\nprivate_key={}\nlisten_port=51820\nfwmark=0051\nreplace_peers=true\n\n",
            hex(0xa8)
        ));
        assert_eq!(
            s.private_key,
            Some(Some(PrivateKey::from_bytes([0xa8; 32])))
        );
        assert_eq!(s.listen_port, Some(51820));
        assert_eq!(s.fwmark, Some(Some(51)));
        assert!(s.replace_peers);
        assert!(s.peers.is_empty());

        // Removal forms.
        let s = set(&format!("set=1\nprivate_key={}\nfwmark=0\n\n", hex(0)));
        assert_eq!(s.private_key, Some(None));
        assert_eq!(s.fwmark, Some(None));
        // Absent keys are "unchanged".
        let s = set("set=1\nlisten_port=0\n\n");
        assert_eq!(s.private_key, None);
        assert_eq!(s.fwmark, None);
        assert_eq!(s.listen_port, Some(0));
        assert!(!s.replace_peers);
        // Upper-case hex is accepted, like Go's hex decoder.
        let s = set(&format!("set=1\nprivate_key={}\n", "AB".repeat(32)));
        assert_eq!(
            s.private_key,
            Some(Some(PrivateKey::from_bytes([0xab; 32])))
        );
        // Numbers at their limits.
        assert_eq!(
            set("set=1\nfwmark=4294967295\n").fwmark,
            Some(Some(u32::MAX))
        );
        assert_eq!(set("set=1\nlisten_port=65535\n").listen_port, Some(65535));
    }

    #[test]
    fn peer_keys() {
        let s = set(&format!(
            "set=1\npublic_key={}\nprotocol_version=1\npreshared_key={}\nendpoint=1.2.3.4:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.0.0.1/24\n\
             allowed_ip=fd00::1/128\nallowed_ip=::ffff:1.2.3.4/128\n\
             public_key={}\nremove=true\n\
             public_key={}\nupdate_only=true\npreshared_key={}\nendpoint=[fd00::2]:5\n\n",
            hex(1),
            hex(3),
            hex(2),
            hex(4),
            hex(0)
        ));
        assert_eq!(s.peers.len(), 3);
        let p = &s.peers[0];
        assert_eq!(p.public_key, PublicKey([1; 32]));
        assert_eq!(
            p.preshared_key,
            Some(Some(PresharedKey::from_bytes([3; 32])))
        );
        assert_eq!(p.endpoint, Some("1.2.3.4:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert!(p.replace_allowed_ips && !p.remove && !p.update_only);
        assert_eq!(
            p.allowed_ips,
            vec![
                ("10.0.0.1".parse().unwrap(), 24),
                ("fd00::1".parse().unwrap(), 128),
                ("::ffff:1.2.3.4".parse().unwrap(), 128),
            ]
        );
        assert!(matches!(p.allowed_ips[2].0, IpAddr::V6(_)));
        let p = &s.peers[1];
        assert_eq!(*p, {
            let mut q = PeerChange::new(PublicKey([2; 32]));
            q.remove = true;
            q
        });
        let p = &s.peers[2];
        assert!(p.update_only && !p.remove);
        assert_eq!(p.preshared_key, Some(None));
        assert_eq!(p.endpoint, Some("[fd00::2]:5".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, None);
    }

    #[test]
    fn same_peer_twice_gives_two_sections() {
        let s = set(&format!(
            "set=1\npublic_key={k}\nallowed_ip=10.0.0.0/8\npublic_key={k}\nremove=true\n",
            k = hex(9)
        ));
        assert_eq!(s.peers.len(), 2);
        assert!(!s.peers[0].remove && s.peers[1].remove);
    }

    #[test]
    fn protocol_version_other_than_1_is_einval() {
        for v in ["2", "0", "01", "", " 1", "1 "] {
            let e = err(&format!(
                "set=1\npublic_key={}\nprotocol_version={v}\n\n",
                hex(1)
            ));
            assert_eq!(e.errno, EINVAL, "{v:?}");
            assert_eq!(e.line, 3);
            assert!(!e.fatal);
        }
    }

    #[test]
    fn malformed_lines() {
        let k = hex(1);
        let cases: &[(&str, i32)] = &[
            // wireguard-go: no '=' is EPROTO (-71), everything else EINVAL (-22).
            ("set=1\nfoo\n\n", EPROTO),
            ("set=1\nbogus=1\n\n", EINVAL),
            ("set=1\n=5\n\n", EINVAL),
            ("set=1\nprivate_key=zz\n\n", EINVAL),
            ("set=1\nprivate_key=\n\n", EINVAL),
            ("set=1\nlisten_port=70000\n\n", EINVAL),
            ("set=1\nlisten_port=\n\n", EINVAL),
            ("set=1\nlisten_port=+5\n\n", EINVAL),
            ("set=1\nlisten_port=-1\n\n", EINVAL),
            ("set=1\nfwmark=0x10\n\n", EINVAL),
            ("set=1\nfwmark= 7\n\n", EINVAL),
            ("set=1\nfwmark=4294967296\n\n", EINVAL),
            ("set=1\n fwmark=7\n\n", EINVAL),
            ("set=1\nreplace_peers=false\n\n", EINVAL),
            ("set=1\nreplace_peers=TRUE\n\n", EINVAL),
            ("set=1\npublic_key=\n\n", EINVAL),
            ("set=1\npublic_key=1234\n\n", EINVAL),
            // Peer-only keys before any peer, device keys inside a peer.
            (&format!("set=1\npreshared_key={k}\n\n"), EINVAL),
            ("set=1\nprotocol_version=1\n\n", EINVAL),
            ("set=1\nallowed_ip=10.0.0.0/8\n\n", EINVAL),
            (&format!("set=1\npublic_key={k}\nlisten_port=5\n\n"), EINVAL),
            (
                &format!("set=1\npublic_key={k}\nreplace_peers=true\n\n"),
                EINVAL,
            ),
            (
                &format!("set=1\npublic_key={k}\nprivate_key={k}\n\n"),
                EINVAL,
            ),
            (&format!("set=1\npublic_key={k}\nremove=false\n\n"), EINVAL),
            (
                &format!("set=1\npublic_key={k}\nupdate_only=false\n\n"),
                EINVAL,
            ),
            (
                &format!("set=1\npublic_key={k}\nreplace_allowed_ips=false\n\n"),
                EINVAL,
            ),
            (
                &format!("set=1\npublic_key={k}\npreshared_key=\n\n"),
                EINVAL,
            ),
            (
                &format!("set=1\npublic_key={k}\npreshared_key=00\n\n"),
                EINVAL,
            ),
            (
                &format!("set=1\npublic_key={k}\npersistent_keepalive_interval=65536\n\n"),
                EINVAL,
            ),
            (
                &format!("set=1\npublic_key={k}\npersistent_keepalive_interval=+5\n\n"),
                EINVAL,
            ),
            (&format!("set=1\npublic_key={k}\nbogus=1\n\n"), EINVAL),
            (&format!("set=1\npublic_key={k}\nfoo\n\n"), EPROTO),
        ];
        for (text, errno) in cases {
            let e = err(text);
            assert_eq!(e.errno, *errno, "{text:?}: {e}");
            assert!(!e.fatal, "{text:?}");
        }
    }

    #[test]
    fn endpoints() {
        let ok = |s: &str| parse_endpoint(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("1.2.3.4:51820"), "1.2.3.4:51820".parse().unwrap());
        assert_eq!(ok("1.2.3.4:05"), "1.2.3.4:5".parse().unwrap());
        assert_eq!(ok("0.0.0.0:0"), "0.0.0.0:0".parse().unwrap());
        assert_eq!(ok("[::1]:5"), "[::1]:5".parse().unwrap());
        assert_eq!(ok("[::ffff:1.2.3.4]:5").to_string(), "[::ffff:1.2.3.4]:5");
        assert_eq!(ok("[fe80::1%7]:5").to_string(), "[fe80::1%7]:5");
        // The loopback interface exists in every network namespace.
        if std::path::Path::new("/sys/class/net/lo/ifindex").exists() {
            match ok("[fe80::1%lo]:5") {
                SocketAddr::V6(a) => assert_ne!(a.scope_id(), 0),
                a => panic!("{a}"),
            }
        }
        for bad in [
            "",
            "1.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:+5",
            "1.2.3.4:65536",
            "010.1.1.1:5",
            "[1.2.3.4]:5",
            "::1:5",
            "[::1]",
            "[::1]5",
            "localhost:5",
            "[fe80::1%]:5",
            "[fe80::1%no-such-if0]:5",
            "[fe80::1%../../x]:5",
            " 1.2.3.4:5",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
        let e = err(&format!(
            "set=1\npublic_key={}\nendpoint=1.2.3.4\n\n",
            hex(1)
        ));
        assert_eq!((e.errno, e.line), (EINVAL, 3));
    }

    #[test]
    fn prefixes() {
        let ok = |s: &str| parse_prefix(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("0.0.0.0/0"), ("0.0.0.0".parse().unwrap(), 0));
        assert_eq!(ok("::/0"), ("::".parse().unwrap(), 0));
        assert_eq!(ok("10.0.0.0/08"), ("10.0.0.0".parse().unwrap(), 8));
        assert_eq!(ok("10.1.2.3/32"), ("10.1.2.3".parse().unwrap(), 32));
        for bad in [
            "10.7.0.1",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            " 10.0.0.0/8",
            "010.1.1.1/32",
            "fe80::%eth0/64",
            "10.0.0.0/",
            "/8",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_prefix_masks_host_bits() {
        let c = |a: &str, n| canonical_prefix(a.parse().unwrap(), n).to_string();
        assert_eq!(c("10.1.2.3", 24), "10.1.2.0");
        assert_eq!(c("10.1.2.3", 0), "0.0.0.0");
        assert_eq!(c("10.1.2.3", 32), "10.1.2.3");
        assert_eq!(c("fd00::1:2", 112), "fd00::1:0");
        assert_eq!(c("fd00::1", 0), "::");
        assert_eq!(c("fd00::1", 128), "fd00::1");
    }

    #[test]
    fn crlf_is_accepted() {
        let s = set("set=1\r\nfwmark=7\r\n\r\n");
        assert_eq!(s.fwmark, Some(Some(7)));
    }

    #[test]
    fn incremental_parser_keeps_in_step_after_errors() {
        let mut p = RequestParser::new();
        let mut out = Vec::new();
        let text = "\nset=1\nlisten_port=1\nbad\nlisten_port=2\n\nget=1\n\nset=1\nfwmark=3\n\n";
        for line in text.split_terminator('\n') {
            if let Progress::Complete(r) = p.feed_line(line.as_bytes()) {
                out.push(r);
            }
        }
        assert!(p.is_idle());
        assert_eq!(out.len(), 3);
        let e = out[0].as_ref().unwrap_err();
        assert_eq!((e.errno, e.line, e.fatal), (EPROTO, 3, false));
        assert_eq!(out[1], Ok(Request::Get));
        assert!(matches!(&out[2], Ok(Request::Set(s)) if s.fwmark == Some(Some(3))));
    }

    #[test]
    fn first_error_wins_and_nothing_is_kept() {
        let e = err(&format!(
            "set=1\nlisten_port=1\npublic_key={}\nendpoint=bad\nbogus=1\nfoo\n\n",
            hex(1)
        ));
        assert_eq!((e.errno, e.line), (EINVAL, 4));
    }

    #[test]
    fn finish_reports_cut_requests() {
        let mut p = RequestParser::new();
        assert_eq!(p.finish(), None);
        assert_eq!(p.feed_line(b"set=1"), Progress::Incomplete);
        assert_eq!(p.feed_line(b"fwmark=1"), Progress::Incomplete);
        let e = p.finish().unwrap();
        assert_eq!(e.errno, EPROTO);
        assert!(e.fatal);
        assert!(p.is_idle());
    }

    #[test]
    fn long_and_binary_lines() {
        let mut p = RequestParser::with_max_line_len(16);
        p.feed_line(b"set=1");
        p.feed_line(b"fwmark=00000000000000001");
        match p.feed_line(b"") {
            Progress::Complete(Err(e)) => assert_eq!((e.errno, e.line), (EINVAL, 2)),
            other => panic!("{other:?}"),
        }
        let mut p = RequestParser::new();
        p.feed_line(b"set=1");
        p.feed_line(b"fwmark=\xff\xfe");
        assert!(matches!(p.feed_line(b""), Progress::Complete(Err(e)) if e.errno == EINVAL));
    }

    #[test]
    fn error_messages_do_not_leak_keys() {
        let secret = "ab".repeat(31) + "zz";
        let e = err(&format!("set=1\nprivate_key={secret}\n\n"));
        assert!(!e.message.contains(&secret[..20]), "{e}");
        let e = err(&format!(
            "set=1\npublic_key={}\npreshared_key={secret}\n\n",
            hex(1)
        ));
        assert!(!e.message.contains(&secret[..20]), "{e}");
    }
}
