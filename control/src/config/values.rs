//! Single values: ports, marks, prefixes, endpoints, tables, DNS entries.
//!
//! Each parser answers with the reason a value was refused, phrased to
//! follow the quoted value in an error: `"10.0.0.0/33" is not a valid prefix`.

use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::{Endpoint, IpCidr, Table};

/// The reason a value was refused.
pub(super) type Reason = &'static str;

/// `wg` drops every whitespace character from a line before reading it, so
/// `AllowedIPs = 10.0.0.1/32, 10.0.0.2/32` and `Endpoint = host : 1` work;
/// the same set as C's `isspace`, which includes vertical tab.
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

pub(super) fn trim(s: &str) -> &str {
    s.trim_matches(is_space)
}

pub(super) fn without_spaces(s: &str) -> String {
    s.chars().filter(|&c| !is_space(c)).collect()
}

/// A decimal number of ASCII digits only: `FromStr` would also take a
/// leading `+`, which `wg` does not.
fn decimal<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn listen_port(s: &str) -> Result<u16, Reason> {
    decimal(s).ok_or("is not a port number from 0 to 65535")
}

/// Decimal or `0x` hex (lowercase `x` only, as `wg` reads it), or `off`.
pub(super) fn fwmark(s: &str) -> Result<u32, Reason> {
    const REASON: Reason = "is neither off nor a number from 0 to 0xffffffff";
    if s.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    match s.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).map_err(|_| REASON)
        }
        Some(_) => Err(REASON),
        None => decimal(s).ok_or(REASON),
    }
}

/// Seconds, where 0 and `off` both disable keepalives.
pub(super) fn persistent_keepalive(s: &str) -> Result<u16, Reason> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    decimal(s).ok_or("is neither off nor a number of seconds from 0 to 65535")
}

/// `addr/cidr`, or a bare address meaning a single host.
pub(super) fn ip_cidr(s: &str) -> Result<IpCidr, Reason> {
    const REASON: Reason = "is not a valid prefix";
    let (addr, cidr) = match s.split_once('/') {
        Some((addr, cidr)) => (addr, Some(cidr)),
        None => (s, None),
    };
    // Like wg: a colon decides the family, so each parser sees only its own.
    let addr = if addr.contains(':') {
        IpAddr::V6(Ipv6Addr::from_str(addr).map_err(|_| REASON)?)
    } else {
        IpAddr::V4(Ipv4Addr::from_str(addr).map_err(|_| REASON)?)
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let cidr = match cidr {
        Some(c) => decimal::<u8>(c).ok_or(REASON)?,
        None => max,
    };
    IpCidr::new(addr, cidr).ok_or(REASON)
}

fn endpoint_port(s: &str) -> Result<u16, Reason> {
    // Port 0 cannot be sent to; service names (which wg would look up) are
    // refused rather than resolved here.
    match decimal::<u16>(s) {
        Some(p) if p != 0 => Ok(p),
        _ => Err("does not end in a port from 1 to 65535"),
    }
}

/// `1.2.3.4:51820`, `[2001:db8::1]:51820`, `[fe80::1%2]:51820` or
/// `vpn.example.com:51820`; names are left for the caller to resolve.
pub(super) fn endpoint(s: &str) -> Result<Endpoint, Reason> {
    const NO_PORT: Reason = "has no port (expected host:port or [IPv6 address]:port)";
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("has no ']' after the IPv6 address")?;
        let port = endpoint_port(after.strip_prefix(':').ok_or(NO_PORT)?)?;
        let (addr, scope_id) = match inside.split_once('%') {
            // Only numeric scopes: an interface name would need a lookup.
            Some((addr, scope)) => (
                addr,
                decimal(scope).ok_or("has a scope id that is not a number")?,
            ),
            None => (inside, 0),
        };
        let ip = Ipv6Addr::from_str(addr)
            .map_err(|_| "does not hold an IPv6 address in its brackets")?;
        return Ok(Endpoint::Addr(SocketAddr::V6(SocketAddrV6::new(
            ip, port, 0, scope_id,
        ))));
    }
    let (host, port) = s.rsplit_once(':').ok_or(NO_PORT)?;
    if host.contains(':') {
        return Err("has an IPv6 address without brackets (write [address]:port)");
    }
    let port = endpoint_port(port)?;
    if looks_like_ipv4(host) {
        let ip = Ipv4Addr::from_str(host).map_err(|_| "does not hold a valid IPv4 address")?;
        return Ok(Endpoint::Addr(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    if !is_host_name(host) {
        return Err("does not hold a valid host name");
    }
    Ok(Endpoint::Host {
        host: host.to_string(),
        port,
    })
}

/// Digits and dots only: meant as an IPv4 address, never as a name (which
/// the resolver would otherwise read as a number, e.g. `1234` = 0.0.4.210).
fn looks_like_ipv4(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, with
/// an optional final dot.
pub(super) fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && !looks_like_ipv4(s)
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// wg-quick splits Address and DNS on commas and whitespace alike, and
/// skips empty items.
pub(super) fn wg_quick_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || is_space(c))
        .filter(|item| !item.is_empty())
}

/// One DNS entry.
pub(super) enum Dns {
    Server(IpAddr),
    Search(String),
}

/// wg-quick's rule: digits and dots, or anything with a colon, is a server
/// address; anything else is a search domain.
pub(super) fn dns(s: &str) -> Result<Dns, Reason> {
    if looks_like_ipv4(s) || s.contains(':') {
        return IpAddr::from_str(s)
            .map(Dns::Server)
            .map_err(|_| "is not a valid IP address");
    }
    if is_host_name(s) {
        Ok(Dns::Search(s.to_string()))
    } else {
        Err("is neither an IP address nor a search domain")
    }
}

/// At least the IPv4 minimum, and no more than a TUN device can carry.
pub(super) fn mtu(s: &str) -> Result<u16, Reason> {
    match decimal::<u16>(s) {
        Some(m) if m >= 68 => Ok(m),
        _ => Err("is not an MTU from 68 to 65535"),
    }
}

/// `off`, `auto`, a table number, or a table name for `ip`.
pub(super) fn table(s: &str) -> Result<Table, Reason> {
    const REASON: Reason = "is neither off, auto, a table number nor a table name";
    if s.eq_ignore_ascii_case("off") {
        return Ok(Table::Off);
    }
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Table::Auto);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return decimal(s).map(Table::Id).ok_or(REASON);
    }
    let name_ok = s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if name_ok {
        Ok(Table::Name(s.to_string()))
    } else {
        Err(REASON)
    }
}

pub(super) fn boolean(s: &str) -> Result<bool, Reason> {
    if s.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if s.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err("is neither true nor false")
    }
}
