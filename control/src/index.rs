//! Receiver indices: random 32-bit values, unique per device, that tell us on
//! each incoming message which handshake or keypair it belongs to without
//! revealing anything about the peer.

use std::collections::HashMap;

/// What an index currently names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexEntry {
    /// An initiation we sent and await a response to.
    Handshake { peer: u32 },
    /// A keypair (current, previous or next) of this peer.
    Keypair { peer: u32 },
}

impl IndexEntry {
    pub fn peer(&self) -> u32 {
        match *self {
            IndexEntry::Handshake { peer } | IndexEntry::Keypair { peer } => peer,
        }
    }
}

#[derive(Default)]
pub struct IndexTable {
    map: HashMap<u32, IndexEntry>,
    /// When set, no two live indices share their low `bits` bits: the data
    /// plane then finds an index's key slot from those bits alone.
    slot_bits: Option<u32>,
    slots_used: std::collections::HashSet<u32>,
}

impl IndexTable {
    /// A table whose indices are unique in their low `bits` bits too.
    pub fn with_slot_bits(bits: u32) -> Self {
        IndexTable {
            slot_bits: Some(bits),
            ..Default::default()
        }
    }

    fn slot(&self, index: u32) -> Option<u32> {
        self.slot_bits.map(|b| index & ((1u32 << b) - 1))
    }

    /// Picks a fresh random index not in use and records it. `None` only
    /// when slot-unique allocation has no free slot left.
    pub fn allocate(&mut self, entry: IndexEntry, mut random: impl FnMut() -> u32) -> Option<u32> {
        if let Some(b) = self.slot_bits {
            if self.slots_used.len() >= 1usize << b {
                return None;
            }
        }
        loop {
            let i = random();
            if self.map.contains_key(&i) {
                continue;
            }
            if let Some(slot) = self.slot(i) {
                if !self.slots_used.insert(slot) {
                    continue;
                }
            }
            self.map.insert(i, entry);
            return Some(i);
        }
    }

    /// Records an index chosen elsewhere (a session a restarted control
    /// finds in shared memory). False, and nothing recorded, if the index
    /// or its slot is taken.
    pub fn claim(&mut self, index: u32, entry: IndexEntry) -> bool {
        if self.map.contains_key(&index) {
            return false;
        }
        if let Some(slot) = self.slot(index) {
            if !self.slots_used.insert(slot) {
                return false;
            }
        }
        self.map.insert(index, entry);
        true
    }

    pub fn get(&self, index: u32) -> Option<IndexEntry> {
        self.map.get(&index).copied()
    }

    /// Re-labels an index (a handshake's index becomes its keypair's).
    pub fn set(&mut self, index: u32, entry: IndexEntry) {
        self.map.insert(index, entry);
    }

    pub fn remove(&mut self, index: u32) {
        if self.map.remove(&index).is_some() {
            if let Some(slot) = self.slot(index) {
                self.slots_used.remove(&slot);
            }
        }
    }

    pub fn remove_peer(&mut self, peer: u32) {
        let gone: Vec<u32> = self
            .map
            .iter()
            .filter(|(_, e)| e.peer() == peer)
            .map(|(&i, _)| i)
            .collect();
        for i in gone {
            self.remove(i);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_indices_are_not_allocated_again() {
        let mut t = IndexTable::with_slot_bits(4);
        assert!(t.claim(0x15, IndexEntry::Keypair { peer: 1 }));
        assert!(
            !t.claim(0x15, IndexEntry::Keypair { peer: 2 }),
            "same index"
        );
        assert!(!t.claim(0x25, IndexEntry::Keypair { peer: 2 }), "same slot");
        assert_eq!(t.get(0x25), None);
        let mut seq = [0x35u32, 0x16].into_iter();
        let i = t.allocate(IndexEntry::Handshake { peer: 3 }, || seq.next().unwrap());
        assert_eq!(i, Some(0x16), "slot 5 is taken by the claimed index");
    }

    #[test]
    fn allocation_skips_indices_in_use() {
        let mut t = IndexTable::default();
        let mut seq = [5u32, 5, 5, 6].into_iter();
        let a = t.allocate(IndexEntry::Handshake { peer: 1 }, || seq.next().unwrap());
        let b = t.allocate(IndexEntry::Keypair { peer: 2 }, || seq.next().unwrap());
        assert_eq!((a, b), (Some(5), Some(6)));
        t.remove_peer(1);
        assert_eq!(t.get(5), None);
        assert_eq!(t.get(6), Some(IndexEntry::Keypair { peer: 2 }));
    }

    #[test]
    fn slot_unique_allocation() {
        let mut t = IndexTable::with_slot_bits(2);
        let mut seq = [0x10u32, 0x20, 0x21, 0x32, 0x43, 0x44].into_iter();
        let mut next = || seq.next().unwrap();
        let got: Vec<_> = (0..4)
            .map(|_| {
                t.allocate(IndexEntry::Keypair { peer: 1 }, &mut next)
                    .unwrap()
            })
            .collect();
        // 0x20 shares slot 0 with 0x10 and is skipped.
        assert_eq!(got, [0x10, 0x21, 0x32, 0x43]);
        assert_eq!(
            t.allocate(IndexEntry::Keypair { peer: 1 }, &mut next),
            None,
            "all 4 slots used"
        );
        t.remove(0x21);
        let mut again = [0x45u32].into_iter();
        assert_eq!(
            t.allocate(IndexEntry::Keypair { peer: 1 }, || again.next().unwrap()),
            Some(0x45)
        );
    }
}
