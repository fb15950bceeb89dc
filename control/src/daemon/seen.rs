//! The data plane's traffic times of each peer slot as control last saw
//! them, so that each poll turns only what is newer into timer events.
//! Indexed by slot and walked in slot order like the region's peer slots:
//! a map keyed by peer made the poll of 1,000,000 peers a hash probe and a
//! cache miss each, 70% of control's time while idle.

use dataplane::shm::peers::PeerCounters;

use crate::device::PeerId;

#[derive(Default)]
pub(super) struct Seen {
    /// The peer that held the slot when last seen, and its times (last
    /// rx auth, tx auth, rx data, tx data).
    slots: Vec<Option<(PeerId, [u64; 4])>>,
}

impl Seen {
    /// Records what slot `slot` shows for peer `id` now, and returns what
    /// was seen before: nothing (zeros) for a peer new to the slot.
    pub fn swap(&mut self, slot: u32, id: PeerId, now: &PeerCounters) -> PeerCounters {
        let i = slot as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        let times = [
            now.last_rx_auth_ns,
            now.last_tx_auth_ns,
            now.last_rx_data_ns,
            now.last_tx_data_ns,
        ];
        let prev = match self.slots[i].replace((id, times)) {
            Some((was, t)) if was == id => t,
            _ => [0; 4],
        };
        PeerCounters {
            last_rx_auth_ns: prev[0],
            last_tx_auth_ns: prev[1],
            last_rx_data_ns: prev[2],
            last_tx_data_ns: prev[3],
            ..PeerCounters::default()
        }
    }

    /// The slot's peer is gone.
    pub fn forget(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ns: u64) -> PeerCounters {
        PeerCounters {
            last_rx_data_ns: ns,
            ..PeerCounters::default()
        }
    }

    #[test]
    fn what_was_seen_belongs_to_the_peer_in_the_slot() {
        let mut s = Seen::default();
        assert_eq!(s.swap(5, 1, &at(10)).last_rx_data_ns, 0, "first look");
        assert_eq!(s.swap(5, 1, &at(20)).last_rx_data_ns, 10);
        assert_eq!(s.swap(5, 2, &at(30)).last_rx_data_ns, 0, "a new peer in it");
        s.forget(5);
        assert_eq!(s.swap(5, 2, &at(40)).last_rx_data_ns, 0, "forgotten");
        assert_eq!(s.swap(0, 3, &at(1)).last_rx_data_ns, 0);
    }
}
