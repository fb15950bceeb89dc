//! State the data plane's workers share: the region, packets waiting for a
//! session, the compiled AllowedIPs, and the wake-up line to control.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::allowedips::AllowedIps;
use crate::consts::MAX_STAGED_PACKETS;
use crate::shm::events::ToControl;
use crate::shm::layout::MAX_WORKERS;
use crate::shm::stats::DropReason;
use crate::shm::{allowed, Region};

use super::outbox::{Outbox, Sent};

/// AllowedIPs as compiled from the region's table at `seq`.
pub struct Routes {
    pub seq: u64,
    pub table: AllowedIps<u32>,
}

pub struct Shared {
    pub region: Region,
    pub staged: Mutex<HashMap<u32, VecDeque<Vec<u8>>>>,
    pub routes: RwLock<Arc<Routes>>,
    rebuild: Mutex<()>,
    /// eventfd that wakes control after an event is pushed.
    pub wake_control: Option<OwnedFd>,
    /// Per worker: events that found its ring full, to be sent again. Only
    /// that worker locks its own, so the lock is never contended.
    outboxes: Vec<Mutex<Outbox>>,
    pub stop: AtomicBool,
    /// Changes whenever the host's addresses do: workers then forget their
    /// resolved next hops, whose source addresses may be gone (frames sent
    /// through AF_XDP bypass the kernel's check that a source is local).
    pub addr_gen: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(region: Region, wake_control: Option<OwnedFd>) -> Shared {
        Shared {
            region,
            staged: Mutex::new(HashMap::new()),
            routes: RwLock::new(Arc::new(Routes {
                seq: u64::MAX,
                table: AllowedIps::new(),
            })),
            rebuild: Mutex::new(()),
            wake_control,
            outboxes: (0..MAX_WORKERS).map(|_| Mutex::default()).collect(),
            stop: AtomicBool::new(false),
            addr_gen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The current routes, rebuilt first if control published a new table.
    pub fn routes(&self) -> Arc<Routes> {
        let cur = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let seq = allowed::table_seq(&self.region);
        if cur.seq == seq {
            return cur;
        }
        // One worker builds; the others go on with the routes they have
        // (a 1,000,000-prefix table takes some 70 ms to build, and every
        // worker waited that long on each `wg set`), except before the
        // first build, when they have none.
        let _one_builder = if cur.seq == u64::MAX {
            self.rebuild.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.rebuild.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return cur,
            }
        };
        let cur = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if cur.seq == allowed::table_seq(&self.region) {
            return cur;
        }
        let Some((entries, seq)) = allowed::read_table(&self.region) else {
            return cur;
        };
        let table = AllowedIps::from_prefixes(entries);
        let new = Arc::new(Routes { seq, table });
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        new
    }

    /// Holds a packet for a peer until it has a session.
    pub fn stage(&self, peer: u32, packet: Vec<u8>) {
        let mut st = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        let q = st.entry(peer).or_default();
        if q.len() >= MAX_STAGED_PACKETS {
            q.pop_front();
        }
        q.push_back(packet);
    }

    pub fn take_staged(&self, peer: u32) -> VecDeque<Vec<u8>> {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer)
            .unwrap_or_default()
    }

    pub fn drop_staged(&self, peer: u32) {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
    }

    /// Pushes an event to control on worker `w`'s ring and wakes control;
    /// only worker `w` may call it (it counts in that worker's statistics
    /// block, which has a single writer). A full ring drops a handshake
    /// datagram (counted: the peer retries, and a flood is what fills the
    /// ring); any other event is kept and sent before anything newer, on a
    /// later call or [`retry_events`](Self::retry_events). True if it is on
    /// the ring now.
    pub fn notify(&self, w: usize, ev: &ToControl) -> bool {
        let Some(rec) = ev.encode() else { return false };
        let Some(outbox) = self.outboxes.get(w) else {
            return false;
        };
        let ring = self.region.ring_to_control(w);
        let sent = outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(ev, &rec, |r| ring.push(r));
        let stats = self.region.worker_stats(w);
        match sent {
            Sent::Pushed => {}
            Sent::Deferred => stats.event_deferred(),
            Sent::Shed => stats.drop_packet(DropReason::EventRingFull),
            Sent::Lost => stats.event_lost(),
        }
        // Woken even when nothing went on: control then makes room.
        self.wake();
        sent == Sent::Pushed
    }

    /// Worker `w`, once per loop turn: sends what waits in its outbox.
    pub fn retry_events(&self, w: usize) {
        let Some(outbox) = self.outboxes.get(w) else {
            return;
        };
        let mut o = outbox.lock().unwrap_or_else(|e| e.into_inner());
        if o.is_empty() {
            return;
        }
        let ring = self.region.ring_to_control(w);
        o.retry(|r| ring.push(r));
        drop(o);
        self.wake();
    }

    fn wake(&self) {
        if let Some(fd) = &self.wake_control {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::layout::{RECORD_SIZE, RING_ENTRIES};
    use crate::shm::testutil::temp_region;

    fn handshake(i: u16) -> ToControl {
        ToControl::Handshake {
            from: "192.0.2.1:51820".parse().unwrap(),
            local: None,
            datagram: i.to_le_bytes().repeat(74),
        }
    }

    /// While one worker builds the routes of a new table, another keeps
    /// the routes it has instead of waiting for the build; once built, the
    /// new ones are everyone's.
    #[test]
    fn a_worker_does_not_wait_for_another_building_the_routes() {
        let (region, _dir) = temp_region("routes");
        let shared = Arc::new(Shared::new(region, None));
        let a = ("10.0.0.0".parse().unwrap(), 8, 1);
        allowed::write_table(&shared.region, &[a]).unwrap();
        let first = shared.routes();
        assert_eq!(first.table.len(), 1);
        let b = ("10.1.0.0".parse().unwrap(), 16, 2);
        allowed::write_table(&shared.region, &[a, b]).unwrap();
        let building = shared.rebuild.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = shared.clone();
        std::thread::spawn(move || {
            let _ = tx.send(other.routes().seq);
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("waited for the other builder");
        assert_eq!(got, first.seq, "the routes it had");
        drop(building);
        let new = shared.routes();
        assert_eq!(new.seq, allowed::table_seq(&shared.region));
        assert_eq!(new.table.len(), 2);
    }

    /// A handshake flood fills the ring when the first data under a
    /// responder's session arrives: its confirmation reaches control once
    /// control has read what was there, ahead of the flood's next datagrams.
    #[test]
    fn a_confirmation_on_a_full_ring_is_delivered_later() {
        let (region, _dir) = temp_region("outbox");
        let shared = Shared::new(region, None);
        for i in 0..RING_ENTRIES as u16 {
            assert!(shared.notify(0, &handshake(i)));
        }
        let confirm = ToControl::SessionConfirmed {
            peer: 1,
            local_index: 0x1234,
        };
        shared.notify(0, &confirm);
        let mut rec = [0u8; RECORD_SIZE];
        let mut got = Vec::new();
        let ring = shared.region.ring_to_control(0);
        while let Some(n) = ring.pop(&mut rec) {
            got.push(ToControl::decode(&rec[..n]).unwrap());
        }
        assert!(!got.contains(&confirm));
        // The flood goes on.
        shared.notify(0, &handshake(9999));
        while let Some(n) = ring.pop(&mut rec) {
            got.push(ToControl::decode(&rec[..n]).unwrap());
        }
        assert_eq!(
            got.iter().filter(|e| **e == confirm).count(),
            1,
            "delivered once"
        );
    }

    #[test]
    fn shed_and_deferred_events_are_counted() {
        let (region, _dir) = temp_region("outbox-count");
        let shared = Shared::new(region, None);
        for i in 0..RING_ENTRIES as u16 {
            shared.notify(2, &handshake(i));
        }
        assert!(!shared.notify(2, &handshake(0)));
        assert!(!shared.notify(2, &ToControl::HandshakeNeeded { peer: 4 }));
        let f = shared.region.worker_stats(2).figures();
        assert_eq!(f.dropped(DropReason::EventRingFull), 1);
        assert_eq!((f.events_deferred, f.events_lost), (1, 0));
        // A quiet worker sends what waits at its next loop turn.
        let ring = shared.region.ring_to_control(2);
        let mut rec = [0u8; RECORD_SIZE];
        while ring.pop(&mut rec).is_some() {}
        shared.retry_events(2);
        let n = ring.pop(&mut rec).unwrap();
        assert_eq!(
            ToControl::decode(&rec[..n]),
            Some(ToControl::HandshakeNeeded { peer: 4 })
        );
    }
}
