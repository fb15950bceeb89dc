//! The device's peers, and which of them may have a timer armed: the timer
//! tick and the next-deadline scan run on every turn of control's loop, and
//! walking all of 1,000,000 configured peers there made control busy when
//! idle and a `wg set` wait for it; they now visit only these.

use std::collections::{HashMap, HashSet};

use super::PeerId;
use crate::peer::Peer;

#[derive(Default)]
pub struct Peers {
    /// Boxed: the map keeps an eighth or more of its slots empty and
    /// doubles as it grows, which for a 400-byte value cost as much again
    /// per peer; a box makes that slack 8 bytes a slot.
    map: HashMap<PeerId, Box<Peer>>,
    /// Peers lent out mutably since their timers were last seen disarmed:
    /// a superset of those with a timer armed, since a new peer has none
    /// and only a mutable borrow can arm one.
    touched: HashSet<PeerId>,
    /// Peers lent out mutably since [`Peers::take_changed`]: those whose
    /// handshake time and byte counts may have changed, which the daemon
    /// copies to the region for the metrics endpoint.
    changed: HashSet<PeerId>,
}

impl Peers {
    pub fn get(&self, id: &PeerId) -> Option<&Peer> {
        self.map.get(id).map(|p| &**p)
    }

    /// The peer, which then counts as possibly having timers armed.
    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut Peer> {
        let p = self.map.get_mut(id)?;
        self.touched.insert(*id);
        self.changed.insert(*id);
        Some(&mut **p)
    }

    pub fn insert(&mut self, id: PeerId, peer: Peer) {
        self.map.insert(id, Box::new(peer));
    }

    pub fn remove(&mut self, id: &PeerId) -> Option<Box<Peer>> {
        self.touched.remove(id);
        self.changed.remove(id);
        self.map.remove(id)
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.touched.clear();
        self.changed.clear();
    }

    /// The peers lent out mutably since the last call.
    pub fn take_changed(&mut self) -> Vec<PeerId> {
        let ids = self.changed.iter().copied().collect();
        // A set of a million after `wg setconf` need not stay that large.
        self.changed = HashSet::new();
        ids
    }

    pub fn keys(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.map.keys()
    }

    /// The peers that may have a timer armed, in id order (the order the
    /// timer tick has always fired them in).
    pub fn maybe_armed(&self) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = self.touched.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Forgets `id` as possibly armed if none of its timers is.
    pub fn settle(&mut self, id: PeerId) {
        if self
            .map
            .get(&id)
            .is_none_or(|p| p.timers.next_deadline().is_none())
        {
            self.touched.remove(&id);
        }
    }

    /// The timers of the peers that may have one armed.
    pub fn armed_timers(&self) -> impl Iterator<Item = &crate::timers::Timers> + '_ {
        self.touched
            .iter()
            .filter_map(|id| self.map.get(id))
            .map(|p| &p.timers)
    }
}

impl std::ops::Index<&PeerId> for Peers {
    type Output = Peer;

    fn index(&self, id: &PeerId) -> &Peer {
        self.get(id).expect("no such peer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;
    use core::time::Duration;

    #[test]
    fn only_peers_lent_mutably_may_be_armed_until_settled() {
        let mut p = Peers::default();
        for id in 0..5 {
            p.insert(id, Peer::new(PublicKey([id as u8; 32])));
        }
        assert!(p.maybe_armed().is_empty(), "new peers have no timers");
        p.get_mut(&3)
            .unwrap()
            .timers
            .session_derived(Duration::ZERO);
        let _ = p.get_mut(&1);
        assert_eq!(p.maybe_armed(), [1, 3]);
        p.settle(1);
        p.settle(3);
        assert_eq!(p.maybe_armed(), [3], "3 has a timer armed");
        assert_eq!(p.armed_timers().count(), 1);
        let mut changed = p.take_changed();
        changed.sort_unstable();
        assert_eq!(changed, [1, 3]);
        assert!(p.take_changed().is_empty());
        p.remove(&3);
        assert!(p.maybe_armed().is_empty());
    }
}
