//! A worker's private copies of session keys, refreshed when control
//! republishes a slot: the per-packet path reads one atomic (the slot's seq)
//! instead of the 64 key bytes.

use crate::shm::keys::{slot_of_index, KeyMaterial};
use crate::shm::Region;
use crate::transport::SessionKey;

pub struct CachedKey {
    pub seq: u64,
    pub local_index: u32,
    pub peer: u32,
    pub remote_index: u32,
    pub initiator: bool,
    pub created_ns: u64,
    pub send: SessionKey,
    pub recv: SessionKey,
}

impl CachedKey {
    fn new(k: KeyMaterial, seq: u64) -> Self {
        CachedKey {
            seq,
            local_index: k.local_index,
            peer: k.peer,
            remote_index: k.remote_index,
            initiator: k.initiator,
            created_ns: k.created_ns,
            send: SessionKey::new(&k.send_key),
            recv: SessionKey::new(&k.recv_key),
        }
    }

    pub fn age_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.created_ns)
    }
}

/// As many entries as the region has key slots in use, grown when a slot
/// past them is asked for and the region has grown since (capacities never
/// shrink, so a slot below the length needs no check against the header).
#[derive(Default)]
pub struct KeyCache {
    slots: Vec<Option<CachedKey>>,
}

impl KeyCache {
    /// The session in key slot `slot`, if control has one published there.
    pub fn get(&mut self, region: &Region, slot: usize) -> Option<&CachedKey> {
        if slot >= self.slots.len() {
            // Past the capacity is no session, and never a read of the
            // region there (its untouched pages would cost memory).
            let cap = region.key_slots();
            if slot >= cap {
                return None;
            }
            self.slots.resize_with(cap, || None);
        }
        let shm = region.key(slot);
        let seq = shm.seq();
        let stale = !matches!(&self.slots[slot], Some(c) if c.seq == seq);
        if stale {
            self.slots[slot] = shm.read().map(|(k, seq)| CachedKey::new(k, seq));
        }
        self.slots[slot].as_ref()
    }

    /// The session a receiver index names, checking the whole index (the
    /// slot only uses its low bits).
    pub fn by_index(&mut self, region: &Region, index: u32) -> Option<&CachedKey> {
        self.get(region, slot_of_index(index))
            .filter(|k| k.local_index == index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::layout::{Capacity, MAX_KEY_SLOTS};
    use crate::shm::testutil::temp_region;

    /// A receiver index from the network naming a slot past the capacity
    /// finds nothing and reads nothing there (its page would be allocated).
    #[test]
    fn an_index_past_the_capacity_names_no_session() {
        let (r, _dir) = temp_region("keycache");
        let mut c = KeyCache::default();
        let far = 0x7000_0000 | (MAX_KEY_SLOTS as u32 - 1);
        assert!(c.by_index(&r, far).is_none());
        assert!(c.get(&r, Capacity::MIN.keys).is_none());
        assert!(c.slots.len() <= Capacity::MIN.keys);
        assert!(!r.key_slots_in_use().contains(&(MAX_KEY_SLOTS - 1)));
        // Once the capacity covers it, an index there finds its session.
        let next = 0x7000_0000 | Capacity::MIN.keys as u32;
        assert!(c.by_index(&r, next).is_none());
        r.grow(Capacity::for_config(Capacity::MIN.peers * 2, 0).unwrap());
        r.key(Capacity::MIN.keys).publish(&KeyMaterial {
            local_index: next,
            peer: 1,
            remote_index: 2,
            initiator: false,
            created_ns: 0,
            send_key: zeroize::Zeroizing::new([1; 32]),
            recv_key: zeroize::Zeroizing::new([2; 32]),
        });
        assert_eq!(c.by_index(&r, next).map(|k| k.peer), Some(1));
    }
}
