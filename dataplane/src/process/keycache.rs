//! A worker's private copies of session keys, refreshed when control
//! republishes a slot: the per-packet path reads one atomic (the slot's seq)
//! instead of the 64 key bytes.

use crate::shm::keys::{slot_of_index, KeyMaterial};
use crate::shm::layout::KEY_SLOTS;
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

pub struct KeyCache {
    slots: Vec<Option<CachedKey>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            slots: (0..KEY_SLOTS).map(|_| None).collect(),
        }
    }
}

impl KeyCache {
    /// The session in key slot `slot`, if control has one published there.
    pub fn get(&mut self, region: &Region, slot: usize) -> Option<&CachedKey> {
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
