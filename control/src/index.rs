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
    /// Each peer's live indices, so removing a peer costs its own few and
    /// not a walk over every session of the device.
    by_peer: HashMap<u32, Vec<u32>>,
    /// When set, no two live indices share their low `bits` bits: the data
    /// plane then finds an index's key slot from those bits alone.
    slot_bits: Option<u32>,
    /// Slots below this are in use by the data plane (a power of two, at
    /// most `1 << bits`): new indices get a slot below it, the bits
    /// between it and `bits` being zero.
    slot_capacity: u32,
    slots_used: std::collections::HashSet<u32>,
}

impl IndexTable {
    /// A table whose indices are unique in their low `bits` bits too, with
    /// all `1 << bits` slots usable.
    pub fn with_slot_bits(bits: u32) -> Self {
        IndexTable {
            slot_bits: Some(bits),
            slot_capacity: 1 << bits,
            ..Default::default()
        }
    }

    /// Lets new indices use slots below `capacity` (rounded down to a
    /// power of two, at most `1 << bits`); never lowers it, since indices
    /// in use keep their slots.
    pub fn grow_slot_capacity(&mut self, capacity: usize) {
        let Some(b) = self.slot_bits else { return };
        let cap = capacity.min(1 << b);
        if cap == 0 {
            return;
        }
        let cap = 1u32 << cap.ilog2();
        self.slot_capacity = self.slot_capacity.max(cap);
    }

    /// Sets the slots new indices may use (as `grow_slot_capacity`
    /// rounds it), lower too: for a table that starts below `1 << bits`,
    /// before it hands out any index.
    pub fn set_slot_capacity(&mut self, capacity: usize) {
        if self.slot_bits.is_some() {
            self.slot_capacity = 1;
            self.grow_slot_capacity(capacity);
        }
    }

    /// Slots new indices may use.
    pub fn slot_capacity(&self) -> usize {
        self.slot_capacity as usize
    }

    /// Forgets every index, keeping the slot settings.
    pub fn clear(&mut self) {
        self.map.clear();
        self.by_peer.clear();
        self.slots_used.clear();
    }

    fn slot(&self, index: u32) -> Option<u32> {
        self.slot_bits.map(|b| index & ((1u32 << b) - 1))
    }

    /// Picks a fresh random index not in use and records it. `None` only
    /// when slot-unique allocation has no free slot left.
    pub fn allocate(&mut self, entry: IndexEntry, mut random: impl FnMut() -> u32) -> Option<u32> {
        if self.slot_bits.is_some() && self.slots_used.len() >= self.slot_capacity as usize {
            return None;
        }
        loop {
            let mut i = random();
            if let Some(b) = self.slot_bits {
                // Clears the bits that would name a slot past the capacity.
                let mask = (1u32 << b) - 1;
                i &= !(mask & !(self.slot_capacity - 1));
            }
            if self.map.contains_key(&i) {
                continue;
            }
            if let Some(slot) = self.slot(i) {
                if !self.slots_used.insert(slot) {
                    continue;
                }
            }
            self.insert(i, entry);
            return Some(i);
        }
    }

    fn insert(&mut self, index: u32, entry: IndexEntry) {
        self.map.insert(index, entry);
        self.by_peer.entry(entry.peer()).or_default().push(index);
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
        self.insert(index, entry);
        true
    }

    pub fn get(&self, index: u32) -> Option<IndexEntry> {
        self.map.get(&index).copied()
    }

    /// Re-labels an index (a handshake's index becomes its keypair's).
    pub fn set(&mut self, index: u32, entry: IndexEntry) {
        match self.map.insert(index, entry) {
            Some(old) if old.peer() == entry.peer() => {}
            Some(old) => {
                self.unlist(old.peer(), index);
                self.by_peer.entry(entry.peer()).or_default().push(index);
            }
            None => self.by_peer.entry(entry.peer()).or_default().push(index),
        }
    }

    fn unlist(&mut self, peer: u32, index: u32) {
        if let Some(v) = self.by_peer.get_mut(&peer) {
            v.retain(|&i| i != index);
            if v.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
    }

    pub fn remove(&mut self, index: u32) {
        if let Some(e) = self.map.remove(&index) {
            self.unlist(e.peer(), index);
            if let Some(slot) = self.slot(index) {
                self.slots_used.remove(&slot);
            }
        }
    }

    /// Forgets every index of `peer`: O(its indices).
    pub fn remove_peer(&mut self, peer: u32) {
        for i in self.by_peer.remove(&peer).unwrap_or_default() {
            if let Some(e) = self.map.remove(&i) {
                debug_assert_eq!(e.peer(), peer);
                if let Some(slot) = self.slot(i) {
                    self.slots_used.remove(&slot);
                }
            }
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
    fn indices_stay_below_the_slot_capacity_and_keep_their_slots_as_it_grows() {
        let mut t = IndexTable::with_slot_bits(8);
        assert_eq!(t.slot_capacity(), 256);
        t.set_slot_capacity(1);
        assert_eq!(t.slot_capacity(), 1);
        t.grow_slot_capacity(4);
        assert_eq!(t.slot_capacity(), 4);
        // 0xab_cdef_12 would be slot 0x12: its bits 2..8 are cleared.
        let mut seq = [0xabcd_ef12u32].into_iter();
        let a = t
            .allocate(IndexEntry::Keypair { peer: 1 }, || seq.next().unwrap())
            .unwrap();
        assert_eq!(a, 0xabcd_ef02, "slot 2, high bits kept");
        t.grow_slot_capacity(3);
        assert_eq!(t.slot_capacity(), 4, "never lowered");
        t.grow_slot_capacity(64);
        let mut seq = [0x0000_0102u32, 0x0000_0133].into_iter();
        let b = t
            .allocate(IndexEntry::Keypair { peer: 2 }, || seq.next().unwrap())
            .unwrap();
        assert_eq!(b, 0x133, "slot 2 is still the first index's");
        assert_eq!(t.get(a), Some(IndexEntry::Keypair { peer: 1 }));
        t.grow_slot_capacity(1 << 20);
        assert_eq!(t.slot_capacity(), 256, "at most 1 << bits");
        // Full at the capacity.
        let mut t = IndexTable::with_slot_bits(8);
        t.slot_capacity = 2;
        let mut n = 0u32;
        let mut next = || {
            n += 1;
            n
        };
        assert!(t
            .allocate(IndexEntry::Handshake { peer: 1 }, &mut next)
            .is_some());
        assert!(t
            .allocate(IndexEntry::Handshake { peer: 1 }, &mut next)
            .is_some());
        assert_eq!(
            t.allocate(IndexEntry::Handshake { peer: 1 }, &mut next),
            None
        );
    }

    #[test]
    fn removing_a_peer_touches_only_its_indices() {
        let mut t = IndexTable::with_slot_bits(16);
        let mut n = 0u32;
        let mut next = || {
            n += 1;
            n
        };
        for peer in 0..100 {
            t.allocate(IndexEntry::Handshake { peer }, &mut next)
                .unwrap();
        }
        let i = t
            .allocate(IndexEntry::Handshake { peer: 7 }, &mut next)
            .unwrap();
        t.set(i, IndexEntry::Keypair { peer: 7 });
        // Re-labelled to another peer (not done by the device, but kept
        // consistent): it goes with its new owner.
        let j = t
            .allocate(IndexEntry::Handshake { peer: 8 }, &mut next)
            .unwrap();
        t.set(j, IndexEntry::Keypair { peer: 1000 });
        t.remove_peer(7);
        assert_eq!(t.get(i), None);
        assert_eq!(t.len(), 100);
        t.remove_peer(1000);
        assert_eq!(t.get(j), None);
        assert_eq!(t.len(), 99);
        t.remove_peer(8);
        assert_eq!(t.len(), 98);
        assert!(!t.by_peer.contains_key(&7) && !t.by_peer.contains_key(&8));
        t.clear();
        assert!(t.is_empty() && t.by_peer.is_empty());
        assert_eq!(t.slot_capacity(), 1 << 16, "clear keeps the settings");
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
