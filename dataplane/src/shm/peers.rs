//! Peer slots: where to send, with which key, and the counters the data
//! plane keeps for `wg show` and for control's timers.

use core::sync::atomic::Ordering;
use std::net::{IpAddr, SocketAddr};

use super::events::{decode_addr, decode_ip, encode_addr, encode_ip, ADDR_LEN, IP_LEN};
use super::layout::{PeerSlot, NO_SLOT};
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
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.last_rx_auth_ns.fetch_max(now_ns, Ordering::Relaxed);
        if data {
            self.last_rx_data_ns.fetch_max(now_ns, Ordering::Relaxed);
        }
    }

    /// Data plane: a transport message of `bytes` went out.
    pub fn note_tx(&self, bytes: u64, now_ns: u64, data: bool) {
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_region;

    #[test]
    fn endpoint_key_and_counters() {
        let (r, path) = temp_region("peers");
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
        std::fs::remove_file(path).unwrap();
    }
}
