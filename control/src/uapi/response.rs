//! Formatting UAPI responses: the `get=1` dump and the `errno=` status.
//!
//! The layout is wireguard-go's, line for line (v0.0.20220316):
//!
//! ```text
//! private_key=<hex>                 only if set
//! listen_port=N                     only if nonzero
//! fwmark=N                          only if nonzero
//! public_key=<hex>                  then, per peer:
//! preshared_key=<hex>               always (all zero when unset)
//! protocol_version=1
//! endpoint=IP:PORT | [IPv6]:PORT    only if known
//! last_handshake_time_sec=N         0 when never
//! last_handshake_time_nsec=N
//! tx_bytes=N
//! rx_bytes=N
//! persistent_keepalive_interval=N
//! allowed_ip=A/N                    one per prefix
//! errno=0
//! (blank line)
//! ```
//!
//! Errors are `errno=-N` (wireguard-go writes the errno negated, and `wg`
//! negates it back to print e.g. "Invalid argument").

use core::fmt::Write as _;
use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

use crate::keys::{PresharedKey, PrivateKey, PublicKey};

/// The device as `get=1` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub private_key: Option<PrivateKey>,
    /// 0 when not listening (the line is then left out).
    pub listen_port: u16,
    /// 0 when unset (the line is then left out).
    pub fwmark: u32,
    /// In the order they are to be listed (`wg show` sorts them itself).
    pub peers: Vec<PeerSnapshot>,
}

/// One peer as `get=1` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub public_key: PublicKey,
    /// `None` is reported as the all-zero key, as wireguard-go does.
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Time of the last completed handshake since the Unix epoch; `None`: never.
    pub last_handshake: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Seconds; 0 = off.
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

impl PeerSnapshot {
    /// A peer with nothing but its key.
    pub fn new(public_key: PublicKey) -> Self {
        PeerSnapshot {
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: 0,
            allowed_ips: Vec::new(),
        }
    }
}

/// The whole response to `get=1`, `errno=0` and blank line included.
pub fn format_get(device: &DeviceSnapshot) -> String {
    let allowed: usize = device.peers.iter().map(|p| p.allowed_ips.len()).sum();
    // Typical sizes: ~330 bytes of fixed lines per peer, ~25 per prefix.
    let mut out = String::with_capacity(128 + device.peers.len() * 360 + allowed * 32);
    write_get(device, &mut out);
    out
}

/// Appends the response to `get=1` to `out`. Linear in peers + allowed IPs.
pub fn write_get(device: &DeviceSnapshot, out: &mut String) {
    if let Some(k) = &device.private_key {
        if k.as_bytes() != &[0u8; 32] {
            push_key(out, "private_key=", k.as_bytes());
        }
    }
    if device.listen_port != 0 {
        let _ = writeln!(out, "listen_port={}", device.listen_port);
    }
    if device.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", device.fwmark);
    }
    for p in &device.peers {
        push_key(out, "public_key=", p.public_key.as_bytes());
        match &p.preshared_key {
            Some(k) => push_key(out, "preshared_key=", k.as_bytes()),
            None => push_key(out, "preshared_key=", &[0u8; 32]),
        }
        out.push_str("protocol_version=1\n");
        if let Some(e) = &p.endpoint {
            // Display gives `a.b.c.d:p` and `[v6]:p` (`[v6%scope]:p` with a
            // scope), which `wg` parses back.
            let _ = writeln!(out, "endpoint={e}");
        }
        let hs = p.last_handshake.unwrap_or(Duration::ZERO);
        let _ = write!(
            out,
            "last_handshake_time_sec={}\nlast_handshake_time_nsec={}\ntx_bytes={}\nrx_bytes={}\npersistent_keepalive_interval={}\n",
            hs.as_secs(),
            hs.subsec_nanos(),
            p.tx_bytes,
            p.rx_bytes,
            p.persistent_keepalive
        );
        for (ip, cidr) in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={ip}/{cidr}");
        }
    }
    out.push_str("errno=0\n\n");
}

/// The status line ending a request: `errno=0` for success, otherwise the
/// errno negated (a positive or negative `errno` gives the same line).
pub fn format_errno(errno: i32) -> String {
    if errno == 0 {
        "errno=0\n\n".to_owned()
    } else {
        format!("errno=-{}\n\n", errno.unsigned_abs())
    }
}

fn push_key(out: &mut String, prefix: &str, k: &[u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(prefix.len() + 65);
    out.push_str(prefix);
    for b in k {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::encode_hex_key;

    #[test]
    fn empty_device() {
        assert_eq!(format_get(&DeviceSnapshot::default()), "errno=0\n\n");
        // A zero private key is "unset", as in wireguard-go.
        let d = DeviceSnapshot {
            private_key: Some(PrivateKey::from_bytes([0; 32])),
            ..Default::default()
        };
        assert_eq!(format_get(&d), "errno=0\n\n");
    }

    #[test]
    fn full_device_matches_wireguard_go_layout() {
        let mut p1 = PeerSnapshot::new(PublicKey([0x11; 32]));
        p1.preshared_key = Some(PresharedKey::from_bytes([0x33; 32]));
        p1.endpoint = Some("1.2.3.4:51820".parse().unwrap());
        p1.last_handshake = Some(Duration::new(1_700_000_000, 123_456_789));
        p1.tx_bytes = 1234;
        p1.rx_bytes = 5678;
        p1.persistent_keepalive = 25;
        p1.allowed_ips = vec![
            ("10.0.0.0".parse().unwrap(), 24),
            ("fd00::1".parse().unwrap(), 128),
        ];
        let mut p2 = PeerSnapshot::new(PublicKey([0x22; 32]));
        p2.endpoint = Some("[::ffff:1.2.3.4]:5".parse().unwrap());
        let d = DeviceSnapshot {
            private_key: Some(PrivateKey::from_bytes([0xa8; 32])),
            listen_port: 40331,
            fwmark: 7,
            peers: vec![p1, p2],
        };
        let expected = format!(
            "private_key={}\nlisten_port=40331\nfwmark=7\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=1.2.3.4:51820\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n\
             tx_bytes=1234\nrx_bytes=5678\npersistent_keepalive_interval=25\n\
             allowed_ip=10.0.0.0/24\nallowed_ip=fd00::1/128\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=[::ffff:1.2.3.4]:5\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
             tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n\
             errno=0\n\n",
            encode_hex_key(&[0xa8; 32]),
            encode_hex_key(&[0x11; 32]),
            encode_hex_key(&[0x33; 32]),
            encode_hex_key(&[0x22; 32]),
            encode_hex_key(&[0; 32]),
        );
        assert_eq!(format_get(&d), expected);
    }

    #[test]
    fn no_endpoint_no_port_no_fwmark() {
        let d = DeviceSnapshot {
            peers: vec![PeerSnapshot::new(PublicKey([1; 32]))],
            ..Default::default()
        };
        let s = format_get(&d);
        assert!(!s.contains("listen_port") && !s.contains("fwmark") && !s.contains("endpoint"));
        assert!(s.starts_with("public_key="));
    }

    #[test]
    fn errno_lines() {
        assert_eq!(format_errno(0), "errno=0\n\n");
        assert_eq!(format_errno(22), "errno=-22\n\n");
        assert_eq!(format_errno(-22), "errno=-22\n\n");
        assert_eq!(format_errno(i32::MIN), "errno=-2147483648\n\n");
    }

    #[test]
    fn twenty_thousand_peers_format_fast() {
        let peers: Vec<PeerSnapshot> = (0..20_000u32)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                let mut p = PeerSnapshot::new(PublicKey(k));
                p.endpoint = Some(SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 51820)));
                p.allowed_ips = vec![
                    (IpAddr::from([10, 1, (i >> 8) as u8, i as u8]), 32),
                    (
                        IpAddr::from([0xfd00, 0, 0, 0, 0, 0, (i >> 16) as u16, i as u16]),
                        128,
                    ),
                ];
                p
            })
            .collect();
        let d = DeviceSnapshot {
            peers,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let s = format_get(&d);
        let took = t.elapsed();
        assert_eq!(s.matches("public_key=").count(), 20_000);
        assert_eq!(s.matches("allowed_ip=").count(), 40_000);
        assert!(s.ends_with("errno=0\n\n"));
        // Generous even for an unoptimised build on a loaded machine.
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
}
