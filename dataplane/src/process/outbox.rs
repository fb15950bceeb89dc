//! A worker's events for control that found its ring full. Handshake
//! datagrams are shed then (the peer sends its initiation again, and a
//! flood is what fills the ring), but the other events change state that
//! nothing re-derives: a lost `SessionConfirmed` leaves the responder's
//! session unconfirmed, so what waits for it waits for good. Those wait
//! here, oldest first, and go before anything new, each at most once.

use std::collections::{HashSet, VecDeque};

use crate::shm::events::ToControl;

/// Events kept for the next try; beyond this (one per peer and kind is
/// the most that can be distinct for long) they are lost and counted.
pub const MAX_PENDING: usize = 4096;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// On the ring now.
    Pushed,
    /// Kept for the next try (or already kept: the same event waits once).
    Deferred,
    /// A handshake datagram that found no room: dropped.
    Shed,
    /// No room on the ring and none left here: dropped.
    Lost,
}

#[derive(Default)]
pub struct Outbox {
    pending: VecDeque<(ToControl, Vec<u8>)>,
    queued: HashSet<ToControl>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Pushes what waits, oldest first, while `push` takes it; true when
    /// anything went out.
    pub fn retry(&mut self, mut push: impl FnMut(&[u8]) -> bool) -> bool {
        let mut any = false;
        while let Some((_, rec)) = self.pending.front() {
            if !push(rec) {
                break;
            }
            any = true;
            if let Some((ev, _)) = self.pending.pop_front() {
                self.queued.remove(&ev);
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
        if !self.pending.is_empty() {
            self.retry(&mut push);
        }
        let sheddable = matches!(ev, ToControl::Handshake { .. });
        if self.pending.is_empty() && push(rec) {
            return Sent::Pushed;
        }
        if sheddable {
            return Sent::Shed;
        }
        if self.queued.contains(ev) {
            return Sent::Deferred;
        }
        if self.pending.len() >= MAX_PENDING {
            return Sent::Lost;
        }
        self.queued.insert(ev.clone());
        self.pending.push_back((ev.clone(), rec.to_vec()));
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
    fn retry_sends_in_order_and_the_bound_holds() {
        let mut o = Outbox::default();
        let mut ring = FakeRing {
            room: 0,
            got: Vec::new(),
        };
        for peer in 0..MAX_PENDING as u32 {
            assert_eq!(
                send(&mut o, &mut ring, ToControl::HandshakeNeeded { peer }),
                Sent::Deferred
            );
        }
        let over = ToControl::HandshakeNeeded {
            peer: MAX_PENDING as u32,
        };
        assert_eq!(send(&mut o, &mut ring, over), Sent::Lost);
        assert!(!o.retry(|r| ring.push(r)));
        ring.room = 10;
        assert!(o.retry(|r| ring.push(r)));
        assert_eq!(o.len(), MAX_PENDING - 10);
        assert_eq!(ring.got[9], ToControl::HandshakeNeeded { peer: 9 });
        // Sent ones may be sent again later (a new occasion).
        assert_eq!(
            send(&mut o, &mut ring, ToControl::HandshakeNeeded { peer: 0 }),
            Sent::Deferred
        );
    }
}
