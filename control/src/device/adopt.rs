//! A restarted control process taking over the sessions that the data plane
//! kept running meanwhile: keypairs whose keys it finds in shared memory,
//! and what `wg show` reported about the peer. Only sessions come back; a
//! handshake that was in flight is lost and starts again when needed.

use core::time::Duration;

use dataplane::consts::REJECT_AFTER_TIME;

use super::{Device, PeerId};
use crate::index::IndexEntry;
use crate::peer::Slot;
use crate::session::Keypair;

impl Device {
    /// Installs `kp` as the `slot` keypair of peer `id`, with its index and
    /// creation time as they were, so the usual timers follow from them:
    /// rekey after REKEY_AFTER_TIME, keys erased three REJECT_AFTER_TIMEs
    /// after the newest session. False, and nothing changed, if the peer is
    /// unknown, already has that keypair, or the index is in use.
    pub fn adopt_keypair(&mut self, id: PeerId, kp: Keypair, slot: Slot) -> bool {
        let Some(p) = self.peers.get(&id) else {
            return false;
        };
        let taken = match slot {
            Slot::Current => p.keypairs.current.is_some(),
            Slot::Previous => p.keypairs.previous.is_some(),
            Slot::Next => p.keypairs.next.is_some(),
        };
        if taken
            || !self
                .indices
                .claim(kp.local_index, IndexEntry::Keypair { peer: id })
        {
            return false;
        }
        let p = self.peers.get_mut(&id).expect("checked above");
        let zero_at = kp.created + REJECT_AFTER_TIME * 3;
        let t = &mut p.timers.zero_key_material;
        *t = Some(t.map_or(zero_at, |z| z.max(zero_at)));
        let place = match slot {
            Slot::Current => &mut p.keypairs.current,
            Slot::Previous => &mut p.keypairs.previous,
            Slot::Next => &mut p.keypairs.next,
        };
        *place = Some(Box::new(kp));
        true
    }

    /// Restores a peer's last handshake (wall clock) and the handshake bytes
    /// counted before the restart.
    pub fn restore_figures(
        &mut self,
        id: PeerId,
        last_handshake: Option<Duration>,
        rx_bytes: u64,
        tx_bytes: u64,
    ) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.last_handshake = last_handshake;
            p.rx_bytes = rx_bytes;
            p.tx_bytes = tx_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceSettings, Event, Output, PeerSettings};
    use crate::keys::PrivateKey;
    use dataplane::consts::REKEY_AFTER_TIME;
    use dataplane::messages::Message;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn device() -> (Device, PeerId) {
        let settings = DeviceSettings {
            transport_in_dataplane: true,
            index_slot_bits: Some(14),
            ..Default::default()
        };
        let mut d = Device::new(
            Duration::from_secs(1_750_000_000),
            Box::new(ChaCha20Rng::seed_from_u64(7)),
            settings,
        );
        d.set_private_key(Some(PrivateKey::from_bytes([1; 32])));
        let other = PrivateKey::from_bytes([2; 32]).public_key();
        let mut s = PeerSettings::new(other);
        s.endpoint = Some("192.0.2.2:51820".parse().unwrap());
        let id = d.upsert_peer(s).unwrap();
        (d, id)
    }

    fn keypair(index: u32, initiator: bool, created: Duration) -> Keypair {
        Keypair::from_keys(&[4; 32], &[5; 32], initiator, index, 99, created)
    }

    fn initiations(out: &[Output]) -> usize {
        out.iter()
            .filter(|o| {
                matches!(o, Output::Send { datagram, .. }
                    if matches!(Message::parse(datagram), Ok(Message::Initiation(_))))
            })
            .count()
    }

    #[test]
    fn an_adopted_session_is_used_until_it_is_due_for_rekey() {
        let (mut d, id) = device();
        let created = Duration::from_secs(1000);
        assert!(d.adopt_keypair(id, keypair(0x1234_0001, true, created), Slot::Current));
        // The data plane asks (its view of the key was stale): the adopted
        // key is fresh, so it is told to flush, no handshake.
        let mut out = Vec::new();
        d.request_handshake(id, created + Duration::from_secs(30), &mut out);
        assert_eq!(initiations(&out), 0, "{out:?}");
        assert!(out.contains(&Output::Flush {
            peer: id,
            keepalive: false
        }));
        // Past REKEY_AFTER_TIME from the key's creation (not from the
        // restart), the initiator rekeys.
        let mut out = Vec::new();
        d.request_handshake(id, created + REKEY_AFTER_TIME, &mut out);
        assert_eq!(initiations(&out), 1, "{out:?}");
    }

    #[test]
    fn adopted_keys_are_erased_on_the_usual_schedule() {
        let (mut d, id) = device();
        let created = Duration::from_secs(1000);
        assert!(d.adopt_keypair(id, keypair(0x1234_0001, false, created), Slot::Current));
        let older = created - Duration::from_secs(100);
        assert!(d.adopt_keypair(id, keypair(0x1234_0002, true, older), Slot::Previous));
        let erase_at = created + REJECT_AFTER_TIME * 3;
        let mut out = Vec::new();
        d.update_timers(erase_at - Duration::from_millis(1), &mut out);
        assert!(d.peer(id).unwrap().keypairs.current.is_some(), "{out:?}");
        d.update_timers(erase_at, &mut out);
        assert!(out.contains(&Output::Event(Event::KeysErased { peer: id })));
        assert!(out.contains(&Output::KeypairsChanged { peer: id }));
        assert!(d.peer(id).unwrap().keypairs.iter().next().is_none());
    }

    #[test]
    fn an_index_or_keypair_in_use_is_not_adopted_twice() {
        let (mut d, id) = device();
        let t = Duration::from_secs(5);
        assert!(d.adopt_keypair(id, keypair(0x1234_0001, true, t), Slot::Current));
        assert!(!d.adopt_keypair(id, keypair(0x1234_0002, true, t), Slot::Current));
        assert!(!d.adopt_keypair(id, keypair(0x1234_0001, true, t), Slot::Previous));
        assert!(!d.adopt_keypair(id + 1, keypair(0x1234_0003, true, t), Slot::Current));
        assert_eq!(d.indices.len(), 1);
    }
}
