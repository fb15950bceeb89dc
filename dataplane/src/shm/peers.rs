//! Peer slots: where to send, with which key, and the counters the data
//! plane keeps for `wg show` and for control's timers.

use core::sync::atomic::Ordering;
use std::net::{IpAddr, SocketAddr};

use super::events::{decode_addr, decode_ip, encode_addr, encode_ip, ADDR_LEN, IP_LEN};
use super::layout::{PeerInfo, PeerSlot, NO_SLOT};
use super::seqlock;

/// What the data plane counted for a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_rx_auth_ns: u64,
    pub last_tx_auth_ns: u64,
    pub last_rx_data_ns: u64,
    pub last_tx_data_ns: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped: u64,
}

impl PeerSlot {
    /// Control: takes the slot for a new peer, counters from zero.
    pub fn activate(&self) {
        for c in [
            &self.rx_bytes,
            &self.tx_bytes,
            &self.last_rx_auth_ns,
            &self.last_tx_auth_ns,
            &self.last_rx_data_ns,
            &self.last_tx_data_ns,
            &self.rx_packets,
            &self.tx_packets,
            &self.dropped,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.current_key.store(NO_SLOT, Ordering::Relaxed);
        self.set_endpoint(None, None);
        self.in_use.store(1, Ordering::Release);
    }

    /// Control: releases the slot.
    pub fn deactivate(&self) {
        self.in_use.store(0, Ordering::Release);
        self.current_key.store(NO_SLOT, Ordering::Release);
        self.set_endpoint(None, None);
    }

    pub fn is_active(&self) -> bool {
        self.in_use.load(Ordering::Acquire) == 1
    }

    /// Control: where to send, and the local address to send from.
    pub fn set_endpoint(&self, endpoint: Option<SocketAddr>, source: Option<IpAddr>) {
        seqlock::write(&self.seq, || {
            seqlock::store_bytes(&self.endpoint, &encode_addr(endpoint));
            seqlock::store_bytes(&self.source, &encode_ip(source));
        });
    }

    pub fn endpoint(&self) -> Option<(SocketAddr, Option<IpAddr>)> {
        let ((ep, src), _) = seqlock::read(&self.seq, || {
            let mut ep = [0u8; ADDR_LEN];
            let mut src = [0u8; IP_LEN];
            seqlock::load_bytes(&self.endpoint, &mut ep);
            seqlock::load_bytes(&self.source, &mut src);
            (ep, src)
        })?;
        Some((decode_addr(&ep)?, decode_ip(&src)))
    }

    /// The seqlock value of the endpoint: changes when the endpoint does.
    pub fn endpoint_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Control: the key slot to send with.
    pub fn set_current_key(&self, slot: Option<u32>) {
        self.current_key
            .store(slot.unwrap_or(NO_SLOT), Ordering::Release);
    }

    pub fn current_key(&self) -> Option<u32> {
        let s = self.current_key.load(Ordering::Acquire);
        (s != NO_SLOT).then_some(s)
    }

    /// Data plane: an authenticated message of `bytes` arrived (`data`: not a keepalive).
    pub fn note_rx(&self, bytes: u64, now_ns: u64, data: bool) {
        self.note_rx_many(bytes, 1, now_ns, data);
    }

    /// Data plane: `packets` authenticated transport messages of `bytes`
    /// in all came in (`data`: not all keepalives).
    pub fn note_rx_many(&self, bytes: u64, packets: u64, now_ns: u64, data: bool) {
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.rx_packets.fetch_add(packets, Ordering::Relaxed);
        self.last_rx_auth_ns.fetch_max(now_ns, Ordering::Relaxed);
        if data {
            self.last_rx_data_ns.fetch_max(now_ns, Ordering::Relaxed);
        }
    }

    /// Data plane: a transport message of `bytes` went out.
    pub fn note_tx(&self, bytes: u64, now_ns: u64, data: bool) {
        self.note_tx_many(bytes, 1, now_ns, data);
    }

    /// Data plane: `packets` messages of `bytes` in all went out (`data`:
    /// not all keepalives).
    pub fn note_tx_many(&self, bytes: u64, packets: u64, now_ns: u64, data: bool) {
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tx_packets.fetch_add(packets, Ordering::Relaxed);
        self.last_tx_auth_ns.fetch_max(now_ns, Ordering::Relaxed);
        if data {
            self.last_tx_data_ns.fetch_max(now_ns, Ordering::Relaxed);
        }
    }

    pub fn note_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counters(&self) -> PeerCounters {
        PeerCounters {
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            last_rx_auth_ns: self.last_rx_auth_ns.load(Ordering::Relaxed),
            last_tx_auth_ns: self.last_tx_auth_ns.load(Ordering::Relaxed),
            last_rx_data_ns: self.last_rx_data_ns.load(Ordering::Relaxed),
            last_tx_data_ns: self.last_tx_data_ns.load(Ordering::Relaxed),
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// What control publishes about a peer besides what the data plane needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerInfoFigures {
    pub public_key: [u8; 32],
    /// Ns since the Unix epoch; 0: no handshake yet.
    pub last_handshake_unix_ns: u64,
    /// Handshake bytes counted by control (`wg show` adds them to the
    /// data plane's transport bytes).
    pub control_rx_bytes: u64,
    pub control_tx_bytes: u64,
}

impl PeerInfo {
    /// Control: the slot now belongs to the peer with this public key.
    pub fn activate(&self, public_key: &[u8; 32]) {
        seqlock::write(&self.seq, || {
            seqlock::store_bytes(&self.public_key, public_key);
            for c in [
                &self.last_handshake_unix_ns,
                &self.control_rx_bytes,
                &self.control_tx_bytes,
            ] {
                c.store(0, Ordering::Relaxed);
            }
        });
    }

    /// Control: the slot is free again.
    pub fn deactivate(&self) {
        self.activate(&[0; 32]);
    }

    /// Control: the peer's last handshake and the bytes control counted.
    pub fn set_control_figures(&self, last_handshake_unix_ns: u64, rx_bytes: u64, tx_bytes: u64) {
        self.last_handshake_unix_ns
            .store(last_handshake_unix_ns, Ordering::Relaxed);
        self.control_rx_bytes.store(rx_bytes, Ordering::Relaxed);
        self.control_tx_bytes.store(tx_bytes, Ordering::Relaxed);
    }

    /// Anyone: a consistent copy; `None` if a writer died mid-update.
    pub fn figures(&self) -> Option<PeerInfoFigures> {
        let (f, _) = seqlock::read(&self.seq, || {
            let mut public_key = [0u8; 32];
            seqlock::load_bytes(&self.public_key, &mut public_key);
            PeerInfoFigures {
                public_key,
                last_handshake_unix_ns: self.last_handshake_unix_ns.load(Ordering::Relaxed),
                control_rx_bytes: self.control_rx_bytes.load(Ordering::Relaxed),
                control_tx_bytes: self.control_tx_bytes.load(Ordering::Relaxed),
            }
        })?;
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_region;

    #[test]
    fn peer_info_round_trips() {
        let (r, _dir) = temp_region("peerinfo");
        let i = r.peer_info(5);
        assert_eq!(i.figures().unwrap().public_key, [0; 32]);
        i.activate(&[7; 32]);
        i.set_control_figures(1_700_000_000_123_456_789, 92, 148);
        let f = i.figures().unwrap();
        assert_eq!(f.public_key, [7; 32]);
        assert_eq!(
            (
                f.last_handshake_unix_ns,
                f.control_rx_bytes,
                f.control_tx_bytes
            ),
            (1_700_000_000_123_456_789, 92, 148)
        );
        // A new peer in the same slot starts from nothing.
        i.activate(&[9; 32]);
        let f = i.figures().unwrap();
        assert_eq!((f.public_key, f.control_rx_bytes), ([9; 32], 0));
        i.deactivate();
        assert_eq!(i.figures().unwrap().public_key, [0; 32]);
    }

    #[test]
    fn endpoint_key_and_counters() {
        let (r, _dir) = temp_region("peers");
        let p = r.peer(9);
        p.activate();
        assert!(p.is_active());
        assert_eq!(p.endpoint(), None);
        p.set_endpoint(
            Some("[2001:db8::2]:51820".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        );
        let (ep, src) = p.endpoint().unwrap();
        assert_eq!(ep.to_string(), "[2001:db8::2]:51820");
        assert_eq!(src.unwrap().to_string(), "2001:db8::1");
        p.set_current_key(Some(12));
        assert_eq!(p.current_key(), Some(12));
        p.note_rx(100, 5, true);
        p.note_rx(32, 7, false);
        p.note_tx(64, 6, true);
        let c = p.counters();
        assert_eq!(
            (c.rx_bytes, c.tx_bytes, c.last_rx_auth_ns, c.last_rx_data_ns),
            (132, 64, 7, 5)
        );
        p.deactivate();
        assert!(!p.is_active());
        assert_eq!(p.current_key(), None);
    }
}
