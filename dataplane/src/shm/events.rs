//! The records that travel on the event rings, and the socket-address
//! encoding shared with the peer table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::layout::RECORD_SIZE;

/// Encoded socket address: family (0 none, 4, 6), port LE, scope id LE, 16 address bytes.
pub const ADDR_LEN: usize = 24;
/// Encoded optional IP address: family, then 16 address bytes.
pub const IP_LEN: usize = 17;

pub fn encode_addr(a: Option<SocketAddr>) -> [u8; ADDR_LEN] {
    let mut b = [0u8; ADDR_LEN];
    match a {
        None => {}
        Some(SocketAddr::V4(v4)) => {
            b[0] = 4;
            b[2..4].copy_from_slice(&v4.port().to_le_bytes());
            b[8..12].copy_from_slice(&v4.ip().octets());
        }
        Some(SocketAddr::V6(v6)) => {
            b[0] = 6;
            b[2..4].copy_from_slice(&v6.port().to_le_bytes());
            b[4..8].copy_from_slice(&v6.scope_id().to_le_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
        }
    }
    b
}

pub fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < ADDR_LEN {
        return None;
    }
    let port = u16::from_le_bytes([b[2], b[3]]);
    match b[0] {
        4 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(b[8], b[9], b[10], b[11])),
            port,
        )),
        6 => {
            let ip: [u8; 16] = b[8..24].try_into().ok()?;
            let scope = u32::from_le_bytes(b[4..8].try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                scope,
            )))
        }
        _ => None,
    }
}

pub fn encode_ip(a: Option<IpAddr>) -> [u8; IP_LEN] {
    let mut b = [0u8; IP_LEN];
    match a {
        None => {}
        Some(IpAddr::V4(v4)) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&v6.octets());
        }
    }
    b
}

pub fn decode_ip(b: &[u8]) -> Option<IpAddr> {
    match *b.first()? {
        4 if b.len() >= 5 => Some(IpAddr::V4(Ipv4Addr::new(b[1], b[2], b[3], b[4]))),
        6 if b.len() >= 17 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&b[1..17]).ok()?,
        ))),
        _ => None,
    }
}

/// Longest datagram a record carries (a handshake initiation is 148).
pub const MAX_DATAGRAM: usize = RECORD_SIZE - 1 - ADDR_LEN - IP_LEN - 2;

/// Data plane to control.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ToControl {
    /// A handshake, response or cookie message arrived: control answers it.
    Handshake {
        from: SocketAddr,
        local: Option<IpAddr>,
        datagram: Vec<u8>,
    },
    /// A packet for this peer waits for a session (none, or expired).
    HandshakeNeeded { peer: u32 },
    /// Authenticated data arrived from a new address.
    EndpointMoved {
        peer: u32,
        endpoint: SocketAddr,
        local: Option<IpAddr>,
    },
    /// The first data message under a responder's new keys arrived.
    SessionConfirmed { peer: u32, local_index: u32 },
}

/// Control to data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToDataplane {
    /// Send this handshake-layer datagram.
    Send {
        to: SocketAddr,
        local: Option<IpAddr>,
        datagram: Vec<u8>,
    },
    /// Send the peer's staged packets under its current key; if none are
    /// staged and `keepalive` is set, send a keepalive.
    Flush { peer: u32, keepalive: bool },
    /// Drop the peer's staged packets (handshake gave up, peer removed).
    DropStaged { peer: u32 },
}

const T_HANDSHAKE: u8 = 1;
const T_NEEDED: u8 = 2;
const T_MOVED: u8 = 3;
const T_CONFIRMED: u8 = 4;
const T_SEND: u8 = 11;
const T_FLUSH: u8 = 12;
const T_DROP: u8 = 13;

fn put_datagram(out: &mut Vec<u8>, d: &[u8]) -> bool {
    if d.len() > MAX_DATAGRAM {
        return false;
    }
    out.extend_from_slice(&(d.len() as u16).to_le_bytes());
    out.extend_from_slice(d);
    true
}

/// The datagram of a record, refused where `put_datagram` would have refused
/// it: a record is read from a ring the other process writes, so nothing
/// longer than a record can hold is trusted just because the bytes are there.
fn get_datagram(b: &[u8]) -> Option<Vec<u8>> {
    let n = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
    if n > MAX_DATAGRAM {
        return None;
    }
    Some(b.get(2..2 + n)?.to_vec())
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl ToControl {
    /// Encodes into a record; `None` if it does not fit.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut v = Vec::with_capacity(RECORD_SIZE);
        match self {
            ToControl::Handshake {
                from,
                local,
                datagram,
            } => {
                v.push(T_HANDSHAKE);
                v.extend_from_slice(&encode_addr(Some(*from)));
                v.extend_from_slice(&encode_ip(*local));
                if !put_datagram(&mut v, datagram) {
                    return None;
                }
            }
            ToControl::HandshakeNeeded { peer } => {
                v.push(T_NEEDED);
                v.extend_from_slice(&peer.to_le_bytes());
            }
            ToControl::EndpointMoved {
                peer,
                endpoint,
                local,
            } => {
                v.push(T_MOVED);
                v.extend_from_slice(&peer.to_le_bytes());
                v.extend_from_slice(&encode_addr(Some(*endpoint)));
                v.extend_from_slice(&encode_ip(*local));
            }
            ToControl::SessionConfirmed { peer, local_index } => {
                v.push(T_CONFIRMED);
                v.extend_from_slice(&peer.to_le_bytes());
                v.extend_from_slice(&local_index.to_le_bytes());
            }
        }
        Some(v)
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let (&t, r) = b.split_first()?;
        match t {
            T_HANDSHAKE => Some(ToControl::Handshake {
                from: decode_addr(r)?,
                local: decode_ip(r.get(ADDR_LEN..)?),
                datagram: get_datagram(r.get(ADDR_LEN + IP_LEN..)?)?,
            }),
            T_NEEDED => Some(ToControl::HandshakeNeeded {
                peer: u32_at(r, 0)?,
            }),
            T_MOVED => Some(ToControl::EndpointMoved {
                peer: u32_at(r, 0)?,
                endpoint: decode_addr(r.get(4..)?)?,
                local: decode_ip(r.get(4 + ADDR_LEN..)?),
            }),
            T_CONFIRMED => Some(ToControl::SessionConfirmed {
                peer: u32_at(r, 0)?,
                local_index: u32_at(r, 4)?,
            }),
            _ => None,
        }
    }
}

impl ToDataplane {
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut v = Vec::with_capacity(RECORD_SIZE);
        match self {
            ToDataplane::Send {
                to,
                local,
                datagram,
            } => {
                v.push(T_SEND);
                v.extend_from_slice(&encode_addr(Some(*to)));
                v.extend_from_slice(&encode_ip(*local));
                if !put_datagram(&mut v, datagram) {
                    return None;
                }
            }
            ToDataplane::Flush { peer, keepalive } => {
                v.push(T_FLUSH);
                v.extend_from_slice(&peer.to_le_bytes());
                v.push(*keepalive as u8);
            }
            ToDataplane::DropStaged { peer } => {
                v.push(T_DROP);
                v.extend_from_slice(&peer.to_le_bytes());
            }
        }
        Some(v)
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let (&t, r) = b.split_first()?;
        match t {
            T_SEND => Some(ToDataplane::Send {
                to: decode_addr(r)?,
                local: decode_ip(r.get(ADDR_LEN..)?),
                datagram: get_datagram(r.get(ADDR_LEN + IP_LEN..)?)?,
            }),
            T_FLUSH => Some(ToDataplane::Flush {
                peer: u32_at(r, 0)?,
                keepalive: *r.get(4)? != 0,
            }),
            T_DROP => Some(ToDataplane::DropStaged {
                peer: u32_at(r, 0)?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_longer_than_a_record_holds_is_refused() {
        // Found by the event_decode fuzz target: decode accepted a length
        // encode refuses, from input longer than a record.
        for t in [T_HANDSHAKE, T_SEND] {
            let mut b = vec![t];
            b.extend_from_slice(&encode_addr(Some("192.0.2.1:9".parse().unwrap())));
            b.extend_from_slice(&encode_ip(None));
            let n = MAX_DATAGRAM + 1;
            b.extend_from_slice(&(n as u16).to_le_bytes());
            b.extend(std::iter::repeat_n(0xff, n));
            assert_eq!(ToControl::decode(&b), None);
            assert_eq!(ToDataplane::decode(&b), None);
            b.truncate(b.len() - 1);
            let at = 1 + ADDR_LEN + IP_LEN;
            b[at..at + 2].copy_from_slice(&(MAX_DATAGRAM as u16).to_le_bytes());
            let decoded = ToControl::decode(&b).is_some() || ToDataplane::decode(&b).is_some();
            assert!(decoded, "the longest datagram a record holds still decodes");
        }
    }

    #[test]
    fn records_roundtrip() {
        let from: SocketAddr = "[2001:db8::1%3]:51820".parse().unwrap();
        let all_c = [
            ToControl::Handshake {
                from,
                local: Some("10.0.0.1".parse().unwrap()),
                datagram: vec![1; 148],
            },
            ToControl::HandshakeNeeded { peer: 7 },
            ToControl::EndpointMoved {
                peer: 1,
                endpoint: "192.0.2.1:9".parse().unwrap(),
                local: None,
            },
            ToControl::SessionConfirmed {
                peer: 2,
                local_index: 0xdead_beef,
            },
        ];
        for c in all_c {
            let e = c.encode().unwrap();
            assert!(e.len() <= RECORD_SIZE);
            assert_eq!(ToControl::decode(&e), Some(c));
        }
        let all_d = [
            ToDataplane::Send {
                to: from,
                local: None,
                datagram: vec![2; 92],
            },
            ToDataplane::Flush {
                peer: 3,
                keepalive: true,
            },
            ToDataplane::DropStaged { peer: 4 },
        ];
        for d in all_d {
            assert_eq!(ToDataplane::decode(&d.encode().unwrap()), Some(d));
        }
        assert!(ToControl::Handshake {
            from,
            local: None,
            datagram: vec![0; 300]
        }
        .encode()
        .is_none());
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        for n in 0..64usize {
            for t in 0..16u8 {
                let mut b = vec![0xffu8; n];
                if n > 0 {
                    b[0] = t;
                }
                let _ = ToControl::decode(&b);
                let _ = ToDataplane::decode(&b);
            }
        }
    }
}
