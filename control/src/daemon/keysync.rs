//! Publishing the device's sessions, endpoints and AllowedIPs into the
//! shared region, so the data plane uses exactly the keys control derived.
//!
//! A keypair is published once, when it first appears: publishing resets
//! its send counter, so republishing a key in use would reuse nonces.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use dataplane::shm::keys::{slot_of_index, KeyMaterial};
use dataplane::shm::Region;
use zeroize::Zeroizing;

use crate::device::{Device, PeerId};
use crate::session::Keypair;

/// Which shared-memory peer slot each device peer occupies.
#[derive(Default)]
pub(super) struct PeerSlots {
    by_peer: HashMap<PeerId, u32>,
    /// Indexed by slot: the activity poll walks it in slot order, as the
    /// region's peer slots lie.
    by_slot: Vec<Option<PeerId>>,
    free: Vec<u32>,
    next: u32,
}

impl PeerSlots {
    pub fn slot(&self, id: PeerId) -> Option<u32> {
        self.by_peer.get(&id).copied()
    }

    pub fn peer(&self, slot: u32) -> Option<PeerId> {
        self.by_slot.get(slot as usize).copied().flatten()
    }

    pub fn assign(&mut self, id: PeerId, capacity: usize) -> Option<u32> {
        if let Some(s) = self.slot(id) {
            return Some(s);
        }
        let s = match self.free.pop() {
            Some(s) => s,
            None if (self.next as usize) < capacity => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.set_slot(s, Some(id));
        self.by_peer.insert(id, s);
        Some(s)
    }

    /// Slots for a control that re-attached to a region whose slots in
    /// `used` still belong to peers it has not been told about yet: new
    /// peers get other slots until those are claimed or given back.
    pub fn with_reserved(used: impl IntoIterator<Item = u32>) -> Self {
        let used: std::collections::HashSet<u32> = used.into_iter().collect();
        let next = used.iter().max().map_or(0, |&m| m + 1);
        PeerSlots {
            // Highest last: `assign` pops the lowest free slot first.
            free: (0..next).rev().filter(|s| !used.contains(s)).collect(),
            next,
            ..Default::default()
        }
    }

    /// Gives peer `id` the reserved slot `slot`.
    pub fn assign_reserved(&mut self, id: PeerId, slot: u32) {
        self.by_peer.insert(id, slot);
        self.set_slot(slot, Some(id));
    }

    fn set_slot(&mut self, slot: u32, id: Option<PeerId>) {
        let i = slot as usize;
        if i >= self.by_slot.len() {
            self.by_slot.resize(i + 1, None);
        }
        self.by_slot[i] = id;
    }

    /// One past the highest slot that may be assigned.
    pub fn end(&self) -> u32 {
        self.by_slot.len() as u32
    }

    /// A reserved slot nobody claimed is free again.
    pub fn unreserve(&mut self, slot: u32) {
        if self.peer(slot).is_none() && slot < self.next && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }

    pub fn release(&mut self, id: PeerId) -> Option<u32> {
        let s = self.by_peer.remove(&id)?;
        self.set_slot(s, None);
        self.free.push(s);
        Some(s)
    }

    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (PeerId, u32)> + '_ {
        self.by_peer.iter().map(|(&p, &s)| (p, s))
    }
}

fn material(k: &Keypair, peer_slot: u32) -> KeyMaterial {
    KeyMaterial {
        local_index: k.local_index,
        peer: peer_slot,
        remote_index: k.remote_index,
        initiator: k.is_initiator,
        created_ns: k.created.as_nanos() as u64,
        send_key: Zeroizing::new(*k.sending.raw()),
        recv_key: Zeroizing::new(*k.receiving.raw()),
    }
}

/// Keeps the region's key slots in step with the device's keypairs.
#[derive(Default)]
pub struct KeySync {
    published: HashMap<PeerId, Vec<u32>>,
}

impl KeySync {
    /// Publishes new keypairs of `id`, clears its vanished ones and points
    /// its peer slot at the current keypair.
    pub fn sync_peer(&mut self, region: &Region, dev: &Device, slots: &PeerSlots, id: PeerId) {
        let Some(pslot) = slots.slot(id) else { return };
        let live: Vec<&Keypair> = dev
            .peer(id)
            .map(|p| p.keypairs.iter().collect())
            .unwrap_or_default();
        let old = self.published.remove(&id).unwrap_or_default();
        for &index in &old {
            if !live.iter().any(|k| k.local_index == index) {
                clear_index(region, index);
            }
        }
        for k in &live {
            if !old.contains(&k.local_index) {
                let slot = slot_of_index(k.local_index);
                // Locked as slots come into use, not the whole capacity
                // ahead (that would make all of it resident).
                region.lock_key_slot(slot);
                region.key(slot).publish(&material(k, pslot));
            }
        }
        let current = dev.peer(id).and_then(|p| p.keypairs.current.as_ref());
        region
            .peer(pslot as usize)
            .set_current_key(current.map(|k| slot_of_index(k.local_index) as u32));
        self.published
            .insert(id, live.iter().map(|k| k.local_index).collect());
    }

    /// Records sessions of `id` that are in the region already (found there
    /// after a restart): they must never be published again, which would
    /// restart their send counters and reuse nonces.
    pub fn adopt(&mut self, id: PeerId, indices: Vec<u32>) {
        self.published.insert(id, indices);
    }

    /// Clears everything published for a peer that is going away.
    pub fn forget_peer(&mut self, region: &Region, id: PeerId) {
        for index in self.published.remove(&id).unwrap_or_default() {
            clear_index(region, index);
        }
    }
}

/// Clears a key slot, but only if it still holds this index: the slot may
/// already carry a newer session.
fn clear_index(region: &Region, index: u32) {
    let slot = region.key(slot_of_index(index));
    if slot.local_index.load(Ordering::Relaxed) == index {
        slot.clear();
    }
}

/// Writes a peer's endpoint and sticky source address.
pub fn publish_endpoint(
    region: &Region,
    slots: &PeerSlots,
    id: PeerId,
    ep: Option<SocketAddr>,
    src: Option<IpAddr>,
) {
    if let Some(s) = slots.slot(id) {
        region.peer(s as usize).set_endpoint(ep, src);
        region.endpoints_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_slots_go_only_to_their_peers() {
        let mut s = PeerSlots::with_reserved([1, 4]);
        let got: Vec<u32> = (10..15).map(|id| s.assign(id, 8).unwrap()).collect();
        assert_eq!(got, [0, 2, 3, 5, 6], "1 and 4 are kept");
        s.assign_reserved(20, 4);
        assert_eq!((s.slot(20), s.peer(4)), (Some(4), Some(20)));
        s.unreserve(4);
        s.unreserve(1);
        assert_eq!(s.assign(30, 8), Some(1), "an unclaimed slot is free again");
        assert_eq!(s.assign(31, 8), Some(7));
        assert_eq!(s.assign(32, 8), None, "4 still belongs to peer 20");
    }

    #[test]
    fn an_endpoint_written_tells_whoever_follows_the_peers() {
        let dir =
            std::env::temp_dir().join(format!("wirespeed-test-keysync-gen-{}", std::process::id()));
        let region = Region::create_exclusive(&dir.join("wg0.region")).unwrap();
        let gen = || region.header().endpoints_gen.load(Ordering::Acquire);
        let before = gen();
        assert_ne!(before, 0, "a region of ours says it bumps");
        let mut slots = PeerSlots::with_reserved([]);
        slots.assign(7, 8).unwrap();
        let ep = "192.0.2.1:51820".parse().unwrap();
        publish_endpoint(&region, &slots, 7, Some(ep), None);
        assert!(gen() > before);
        assert_eq!(region.peer(0).endpoint().map(|(e, _)| e), Some(ep));
        drop(region);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
