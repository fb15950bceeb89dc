//! Session key slots: control publishes, the data plane reads, reserves send
//! counters and keeps each slot's replay window.

use core::sync::atomic::{AtomicU32, Ordering};

use zeroize::Zeroizing;

use super::layout::{KeySlot, KEY_INITIATOR, KEY_VALID, MAX_KEY_SLOTS};
use super::seqlock;
use crate::consts::REJECT_AFTER_MESSAGES;

/// The slot a receiver index lives in: its low bits. Fixed whatever the
/// region's capacity, so growing it moves no session; a slot at or past
/// [`Region::key_slots`](super::Region::key_slots) names none.
pub fn slot_of_index(index: u32) -> usize {
    index as usize & (MAX_KEY_SLOTS - 1)
}

/// What control publishes for one session.
#[derive(Clone)]
pub struct KeyMaterial {
    pub local_index: u32,
    pub peer: u32,
    pub remote_index: u32,
    pub initiator: bool,
    /// CLOCK_MONOTONIC ns at which the session was derived.
    pub created_ns: u64,
    pub send_key: Zeroizing<[u8; 32]>,
    pub recv_key: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("local_index", &self.local_index)
            .field("peer", &self.peer)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("created_ns", &self.created_ns)
            .finish_non_exhaustive()
    }
}

struct SpinGuard<'a>(&'a AtomicU32);

impl<'a> SpinGuard<'a> {
    fn lock(l: &'a AtomicU32) -> Self {
        while l
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        SpinGuard(l)
    }
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl KeySlot {
    /// Control: installs a session. The send counter restarts at 0 and the
    /// replay window is reset lazily by the data plane (epoch mismatch).
    pub fn publish(&self, k: &KeyMaterial) {
        seqlock::write(&self.seq, || {
            self.local_index.store(k.local_index, Ordering::Relaxed);
            self.peer.store(k.peer, Ordering::Relaxed);
            self.remote_index.store(k.remote_index, Ordering::Relaxed);
            self.created_ns.store(k.created_ns, Ordering::Relaxed);
            seqlock::store_bytes(&self.send_key, &k.send_key[..]);
            seqlock::store_bytes(&self.recv_key, &k.recv_key[..]);
            // Release: a sender whose fetch_add sees this reset also sees the
            // odd seq stored before it, and refuses the counter.
            self.send_counter.store(0, Ordering::Release);
            let flags = KEY_VALID | if k.initiator { KEY_INITIATOR } else { 0 };
            self.flags.store(flags, Ordering::Relaxed);
        });
    }

    /// Control: erases the slot's keys.
    pub fn clear(&self) {
        seqlock::write(&self.seq, || {
            self.flags.store(0, Ordering::Relaxed);
            seqlock::store_bytes(&self.send_key, &[0u8; 32]);
            seqlock::store_bytes(&self.recv_key, &[0u8; 32]);
            self.send_counter.store(u64::MAX, Ordering::Release);
        });
    }

    /// The slot's publication number; changes whenever its keys do.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Data plane: a consistent copy of the keys and the seq they belong to,
    /// or `None` if the slot holds no session.
    pub fn read(&self) -> Option<(KeyMaterial, u64)> {
        let (k, seq) = seqlock::read(&self.seq, || {
            let mut send = Zeroizing::new([0u8; 32]);
            let mut recv = Zeroizing::new([0u8; 32]);
            seqlock::load_bytes(&self.send_key, &mut send[..]);
            seqlock::load_bytes(&self.recv_key, &mut recv[..]);
            let flags = self.flags.load(Ordering::Relaxed);
            (
                flags,
                KeyMaterial {
                    local_index: self.local_index.load(Ordering::Relaxed),
                    peer: self.peer.load(Ordering::Relaxed),
                    remote_index: self.remote_index.load(Ordering::Relaxed),
                    initiator: flags & KEY_INITIATOR != 0,
                    created_ns: self.created_ns.load(Ordering::Relaxed),
                    send_key: send,
                    recv_key: recv,
                },
            )
        })?;
        (k.0 & KEY_VALID != 0).then_some((k.1, seq))
    }

    /// Data plane: reserves `n` consecutive send counters under the
    /// publication `seq`. `None` if the slot was republished or cleared since
    /// (the counters would belong to another key) or the key is used up.
    pub fn reserve_counters(&self, seq: u64, n: u64) -> Option<u64> {
        let first = self.send_counter.fetch_add(n, Ordering::AcqRel);
        if self.seq.load(Ordering::Acquire) != seq {
            return None;
        }
        let end = first.checked_add(n)?;
        (end <= REJECT_AFTER_MESSAGES).then_some(first)
    }

    /// Data plane: the next counter that would be reserved (for rekey checks).
    pub fn send_counter(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    /// Data plane: `would_accept` (when `commit` is false) or `accept` on the
    /// slot's replay window for publication `seq`.
    pub fn replay(&self, seq: u64, counter: u64, commit: bool) -> bool {
        let _g = SpinGuard::lock(&self.replay_lock);
        // SAFETY: the replay state is only touched by data plane threads and
        // only while holding `replay_lock`, which we hold.
        let st = unsafe { &mut *self.replay.get() };
        if st.epoch != seq {
            st.epoch = seq;
            st.window.reset();
        }
        if commit {
            st.window.accept(counter)
        } else {
            st.window.would_accept(counter)
        }
    }

    /// Data plane start-up: a predecessor that died inside the lock must not
    /// wedge its successor. Call only when no other data plane runs.
    pub fn break_replay_lock(&self) {
        self.replay_lock.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_region;
    use super::*;

    fn km(i: u32) -> KeyMaterial {
        KeyMaterial {
            local_index: i,
            peer: 3,
            remote_index: 99,
            initiator: true,
            created_ns: 1234,
            send_key: Zeroizing::new([i as u8; 32]),
            recv_key: Zeroizing::new([i as u8 + 1; 32]),
        }
    }

    #[test]
    fn publish_read_clear() {
        let (r, _dir) = temp_region("keys");
        let s = r.key(slot_of_index(0xabcd_0005));
        assert!(s.read().is_none());
        s.publish(&km(0xabcd_0005));
        let (k, seq) = s.read().unwrap();
        assert_eq!(k.local_index, 0xabcd_0005);
        assert_eq!(*k.send_key, [5; 32]);
        assert_eq!(*k.recv_key, [6; 32]);
        assert!(k.initiator);
        assert_eq!(s.reserve_counters(seq, 10), Some(0));
        assert_eq!(s.reserve_counters(seq, 1), Some(10));
        s.publish(&km(0xabcd_0005));
        assert_eq!(s.reserve_counters(seq, 1), None, "old publication refused");
        let (_, seq2) = s.read().unwrap();
        // The refused reservation still consumed counter 0 of the new key:
        // wasted, never reused.
        assert_eq!(s.reserve_counters(seq2, 1), Some(1));
        s.clear();
        assert!(s.read().is_none());
        assert_eq!(s.reserve_counters(seq2, 1), None);
    }

    #[test]
    fn replay_window_resets_per_publication() {
        let (r, _dir) = temp_region("replay");
        let s = r.key(1);
        s.publish(&km(1));
        let (_, seq) = s.read().unwrap();
        assert!(s.replay(seq, 5, false));
        assert!(s.replay(seq, 5, true));
        assert!(!s.replay(seq, 5, false));
        s.publish(&km(1));
        let (_, seq2) = s.read().unwrap();
        assert!(s.replay(seq2, 5, true), "new session, fresh window");
    }
}
