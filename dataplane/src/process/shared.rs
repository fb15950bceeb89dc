//! State the data plane's workers share: the region, packets waiting for a
//! session, the compiled AllowedIPs, and the wake-up line to control.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::allowedips::AllowedIps;
use crate::consts::MAX_STAGED_PACKETS;
use crate::shm::events::ToControl;
use crate::shm::{allowed, Region};

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
        let _one_builder = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut table = AllowedIps::new();
        for (addr, cidr, peer) in entries {
            let _ = table.insert(addr, cidr, peer);
        }
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

    /// Pushes an event to control on worker `w`'s ring and wakes control.
    /// A full ring drops the event: control re-derives state from the
    /// region, and handshakes are retried by the peer.
    pub fn notify(&self, w: usize, ev: &ToControl) -> bool {
        let Some(rec) = ev.encode() else { return false };
        let ok = self.region.ring_to_control(w).push(&rec);
        if let Some(fd) = &self.wake_control {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
        }
        ok
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
