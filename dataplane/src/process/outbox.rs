//! A worker's events for control that found its ring full. Handshake
//! datagrams are shed then (the peer sends its initiation again, and a
//! flood is what fills the ring), but the other events change state that
//! nothing re-derives: a lost `SessionConfirmed` leaves the responder's
//! session unconfirmed, so what waits for it waits for good. Those wait
//! here, oldest first, and go before anything new.
//!
//! At most one event of each kind waits per peer: a newer one takes the
//! older one's place in the queue (a newer endpoint or a newer session's
//! confirmation is what control must end up with; an older one would only
//! be undone by it). So what waits is bounded by the peers, and nothing
//! that matters is ever dropped for room.

use std::collections::{HashMap, VecDeque};

use crate::shm::events::ToControl;
use crate::shm::layout::MAX_PEER_SLOTS;

/// Kinds of event that wait (all but handshake datagrams).
const KINDS: usize = 3;

/// The most events that can wait: one per kind and peer. Only an event
/// naming a peer outside the region's slots could find no room.
pub const MAX_PENDING: usize = KINDS * MAX_PEER_SLOTS;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// On the ring now.
    Pushed,
    /// Kept for the next try (or took the place of the same kind of event
    /// for the same peer, which waited already).
    Deferred,
    /// A handshake datagram that found no room: dropped.
    Shed,
    /// No room on the ring and none left here: dropped.
    Lost,
}

/// Which waiting event a new one replaces: its kind and peer.
type Key = (u8, u32);

fn key(ev: &ToControl) -> Option<Key> {
    match ev {
        ToControl::Handshake { .. } => None,
        ToControl::HandshakeNeeded { peer } => Some((0, *peer)),
        ToControl::EndpointMoved { peer, .. } => Some((1, *peer)),
        ToControl::SessionConfirmed { peer, .. } => Some((2, *peer)),
    }
}

#[derive(Default)]
pub struct Outbox {
    /// Waiting events' keys, oldest first.
    order: VecDeque<Key>,
    /// The latest record of each waiting key.
    records: HashMap<Key, Vec<u8>>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Pushes what waits, oldest first, while `push` takes it; true when
    /// anything went out.
    pub fn retry(&mut self, mut push: impl FnMut(&[u8]) -> bool) -> bool {
        let mut any = false;
        while let Some(k) = self.order.front() {
            let Some(rec) = self.records.get(k) else {
                self.order.pop_front();
                continue;
            };
            if !push(rec) {
                break;
            }
            any = true;
            if let Some(k) = self.order.pop_front() {
                self.records.remove(&k);
            }
        }
        any
    }

    /// Sends `ev`, encoded as `rec`, after whatever waits: what waits must
    /// not be overtaken (a newer endpoint would be undone by an older one),
    /// nor crowded out by handshakes that keep the ring full.
    pub fn send(
        &mut self,
        ev: &ToControl,
        rec: &[u8],
        mut push: impl FnMut(&[u8]) -> bool,
    ) -> Sent {
        if !self.order.is_empty() {
            self.retry(&mut push);
        }
        if self.order.is_empty() && push(rec) {
            return Sent::Pushed;
        }
        let Some(k) = key(ev) else {
            return Sent::Shed;
        };
        if let Some(waiting) = self.records.get_mut(&k) {
            waiting.clear();
            waiting.extend_from_slice(rec);
            return Sent::Deferred;
        }
        if self.order.len() >= MAX_PENDING || k.1 as usize >= MAX_PEER_SLOTS {
            return Sent::Lost;
        }
        self.order.push_back(k);
        self.records.insert(k, rec.to_vec());
        Sent::Deferred
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring of `room` records.
    struct FakeRing {
        room: usize,
        got: Vec<ToControl>,
    }

    impl FakeRing {
        fn push(&mut self, rec: &[u8]) -> bool {
            if self.got.len() >= self.room {
                return false;
            }
            self.got.push(ToControl::decode(rec).unwrap());
            true
        }
    }

    fn send(o: &mut Outbox, ring: &mut FakeRing, ev: ToControl) -> Sent {
        let rec = ev.encode().unwrap();
        o.send(&ev, &rec, |r| ring.push(r))
    }

    fn handshake(i: u8) -> ToControl {
        ToControl::Handshake {
            from: "192.0.2.1:1".parse().unwrap(),
            local: None,
            datagram: vec![i; 148],
        }
    }

    #[test]
    fn important_events_wait_and_handshakes_do_not_overtake_them() {
        let mut o = Outbox::default();
        let mut ring = FakeRing {
            room: 1,
            got: Vec::new(),
        };
        assert_eq!(send(&mut o, &mut ring, handshake(1)), Sent::Pushed);
        let confirm = ToControl::SessionConfirmed {
            peer: 3,
            local_index: 7,
        };
        assert_eq!(send(&mut o, &mut ring, confirm.clone()), Sent::Deferred);
        assert_eq!(send(&mut o, &mut ring, confirm.clone()), Sent::Deferred);
        let need = ToControl::HandshakeNeeded { peer: 3 };
        assert_eq!(send(&mut o, &mut ring, need.clone()), Sent::Deferred);
        assert_eq!(o.len(), 2, "the same event waits once");
        // A newer session's confirmation for the same peer takes the older
        // one's place, ahead of `need`.
        let newer = ToControl::SessionConfirmed {
            peer: 3,
            local_index: 9,
        };
        assert_eq!(send(&mut o, &mut ring, newer.clone()), Sent::Deferred);
        assert_eq!(o.len(), 2);
        let confirm = newer;
        // Control reads the ring: room for two, but a handshake arriving
        // first must not take it from what waits.
        ring.room = 3;
        assert_eq!(send(&mut o, &mut ring, handshake(2)), Sent::Shed);
        assert_eq!(ring.got, vec![handshake(1), confirm.clone(), need.clone()]);
        ring.room = 4;
        assert_eq!(send(&mut o, &mut ring, handshake(3)), Sent::Pushed);
        assert!(o.is_empty());
        assert_eq!(ring.got, vec![handshake(1), confirm, need, handshake(3)]);
    }

    #[test]
    fn every_peer_waits_nothing_is_lost_and_retry_keeps_the_order() {
        let mut o = Outbox::default();
        let mut ring = FakeRing {
            room: 0,
            got: Vec::new(),
        };
        // Every peer with all three kinds waiting: more than the old bound
        // of 4,096, and all kept.
        for peer in 0..MAX_PEER_SLOTS as u32 {
            for ev in [
                ToControl::HandshakeNeeded { peer },
                ToControl::EndpointMoved {
                    peer,
                    endpoint: "192.0.2.9:9".parse().unwrap(),
                    local: None,
                },
                ToControl::SessionConfirmed {
                    peer,
                    local_index: 1,
                },
            ] {
                assert_eq!(send(&mut o, &mut ring, ev), Sent::Deferred);
            }
        }
        assert_eq!(o.len(), MAX_PENDING);
        // The latest endpoint replaces the waiting one.
        let moved = ToControl::EndpointMoved {
            peer: 0,
            endpoint: "198.51.100.1:5".parse().unwrap(),
            local: None,
        };
        assert_eq!(send(&mut o, &mut ring, moved.clone()), Sent::Deferred);
        assert_eq!(o.len(), MAX_PENDING);
        // Only a peer outside the region's slots is refused.
        let stray = ToControl::HandshakeNeeded {
            peer: MAX_PEER_SLOTS as u32,
        };
        assert_eq!(send(&mut o, &mut ring, stray), Sent::Lost);
        assert!(!o.retry(|r| ring.push(r)));
        ring.room = 10;
        assert!(o.retry(|r| ring.push(r)));
        assert_eq!(o.len(), MAX_PENDING - 10);
        assert_eq!(ring.got[0], ToControl::HandshakeNeeded { peer: 0 });
        assert_eq!(ring.got[1], moved);
        assert_eq!(ring.got[9], ToControl::HandshakeNeeded { peer: 3 });
        // Sent ones may be sent again later (a new occasion).
        assert_eq!(
            send(&mut o, &mut ring, ToControl::HandshakeNeeded { peer: 0 }),
            Sent::Deferred
        );
    }
}
