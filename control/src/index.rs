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
}

impl IndexTable {
    /// Picks a fresh random index not in use and records it.
    pub fn allocate(&mut self, entry: IndexEntry, mut random: impl FnMut() -> u32) -> u32 {
        loop {
            let i = random();
            if let std::collections::hash_map::Entry::Vacant(v) = self.map.entry(i) {
                v.insert(entry);
                return i;
            }
        }
    }

    pub fn get(&self, index: u32) -> Option<IndexEntry> {
        self.map.get(&index).copied()
    }

    /// Re-labels an index (a handshake's index becomes its keypair's).
    pub fn set(&mut self, index: u32, entry: IndexEntry) {
        self.map.insert(index, entry);
    }

    pub fn remove(&mut self, index: u32) {
        self.map.remove(&index);
    }

    pub fn remove_peer(&mut self, peer: u32) {
        self.map.retain(|_, e| e.peer() != peer);
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
    fn allocation_skips_indices_in_use() {
        let mut t = IndexTable::default();
        let mut seq = [5u32, 5, 5, 6].into_iter();
        let a = t.allocate(IndexEntry::Handshake { peer: 1 }, || seq.next().unwrap());
        let b = t.allocate(IndexEntry::Keypair { peer: 2 }, || seq.next().unwrap());
        assert_eq!((a, b), (5, 6));
        t.remove_peer(1);
        assert_eq!(t.get(5), None);
        assert_eq!(t.get(6), Some(IndexEntry::Keypair { peer: 2 }));
    }
}
