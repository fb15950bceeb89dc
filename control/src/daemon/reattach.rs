//! A restarted control process re-attaching to what its predecessor left
//! running: the data plane (which kept forwarding with the keys it had),
//! its TUN interface and its shared region.
//!
//! Nothing secret is kept on disk. The static private key, the peers'
//! public and preshared keys and the rest of the configuration come back
//! the way they came the first time, through UAPI (`wg setconf`, `wg-quick`,
//! the service's start-up). What the region holds lets sessions go on
//! across the restart: each peer slot still in use names its peer's public
//! key and carries its endpoint and counters; the key slots carry its
//! sessions with their indices, creation times and send counters. When the
//! configuration names a peer again, control adopts that peer's slot and
//! sessions as they are (never republishing them: that would reuse
//! nonces), provided its static key is the one the sessions were made with.
//! Peers the configuration does not name again are dropped at the next
//! `wg setconf` (or once their keys have expired). A handshake in flight at
//! the restart is lost and simply starts again.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dataplane::consts::REJECT_AFTER_TIME;
use dataplane::shm::keys::slot_of_index;
use dataplane::shm::Region;
use dataplane::tun::{Tun, TunQueue};
use dataplane::tunns;

use super::{now, pidfd, Daemon, LogLevel};
use crate::device::PeerId;
use crate::keys::PublicKey;
use crate::peer::Slot;
use crate::session::Keypair;

/// What a re-attaching control takes over.
pub(super) struct Attached {
    pub region: Region,
    /// Detached, like the one a fresh start keeps.
    pub queue: TunQueue,
    pub dataplane_pid: u32,
    pub dataplane_pidfd: OwnedFd,
    /// A copy of the eventfd the data plane wakes control with, if the
    /// kernel let us take one (else control only polls, every 100 ms).
    pub wake: Option<OwnedFd>,
    /// The host data plane's link, when it is the one that kept the tenant.
    pub host: Option<super::host::HostLink>,
}

/// Takes over the region of `iface` at `shm_path` if a data plane still
/// serves it and no control holds it. `Ok(None)`: nothing to re-attach to
/// (a stale region of a dead instance is removed on the way); the caller
/// starts afresh, which refuses if another control is running.
pub(super) fn reattach(
    iface: &str,
    shm_path: &Path,
    log: &dyn Fn(LogLevel, String),
) -> io::Result<Option<Attached>> {
    let region = match Region::adopt(shm_path) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        // A live control holds it: the fresh start says so.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(None),
        Err(e) => {
            log(LogLevel::Info, format!("cannot re-attach: {e}"));
            return Ok(None);
        }
    };
    let pid = region.header().dataplane_pid.load(Ordering::Acquire);
    // The pidfd first: if the pid is reused after the check below, the
    // pidfd still names the process that was checked (or a dead one).
    let pidfd = match pidfd::open(pid).ok().filter(|_| region.held_open_by(pid)) {
        Some(fd) => fd,
        None => {
            // Dropping the region removes the file: nobody uses it.
            log(
                LogLevel::Info,
                "removed the shared region of a previous instance whose data plane is gone".into(),
            );
            return Ok(None);
        }
    };
    let attach = || -> io::Result<TunQueue> {
        // Through the data plane's own queue: the interface may have been
        // moved into another namespace, where our name lookup cannot see it
        // (and where a same-named interface here is somebody else's).
        let queue = match dataplane_queue(pid, &pidfd) {
            Ok(theirs) => tunns::open_sibling(&theirs)?,
            Err(e) => {
                log(
                    LogLevel::Info,
                    format!("cannot borrow a TUN queue of data plane {pid} ({e}); opening {iface} by name"),
                );
                Tun::existing(iface)?.open_queue()?
            }
        };
        // Like the queue created at a fresh start: keeps the interface alive
        // without taking a share of its packets.
        queue.detach()?;
        Ok(queue)
    };
    let queue = match attach() {
        Ok(t) => t,
        Err(e) => {
            // The data plane still uses the region: leave it its file.
            region.leave();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot re-attach to the interface of data plane {pid}: {e}"),
            ));
        }
    };
    let wake = region
        .dataplane_wake_fd()
        .and_then(|fd| pidfd::get_fd(&pidfd, fd).ok())
        .filter(|fd| is_eventfd(fd) && pidfd::keep_on_exec(fd).is_ok());
    Ok(Some(Attached {
        region,
        queue,
        dataplane_pid: pid,
        dataplane_pidfd: pidfd,
        wake,
        host: None,
    }))
}

/// A copy of one of the TUN queues data plane `pid` reads (found by the
/// `iff:` line the kernel writes in a TUN fd's fdinfo). The copy shares the
/// data plane's open file: detaching it would detach a worker's queue.
fn dataplane_queue(pid: u32, pidfd: &OwnedFd) -> io::Result<TunQueue> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let names_tun = info
            .lines()
            .any(|l| l.strip_prefix("iff:").is_some_and(|n| !n.trim().is_empty()));
        if !names_tun {
            continue;
        }
        let copy = pidfd::get_fd(pidfd, fd)?;
        if let Ok(tunns::DeviceState::Alive { .. }) = tunns::device_state(copy.as_fd()) {
            return Ok(TunQueue::from_fd(copy));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "it holds no TUN queue",
    ))
}

fn is_eventfd(fd: &OwnedFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventfd]")
}

/// A fresh eventfd, inherited by the data planes we start.
pub(super) fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1, checked below. Not
    // close-on-exec: the data plane inherits it to wake us.
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(efd) })
}

/// Peer slots of the region that wait for the configuration to name their
/// peer again.
#[derive(Default)]
pub(super) struct Orphans {
    by_key: HashMap<[u8; 32], u32>,
    /// Key slots holding each orphan peer slot's sessions.
    keys: HashMap<u32, Vec<usize>>,
    /// The static public key the sessions were made with.
    static_public: Option<[u8; 32]>,
    /// When control re-attached: by REJECT_AFTER_TIME later every session
    /// found then has expired, and what is left unclaimed is dropped.
    since: Duration,
}

impl Orphans {
    /// Every peer slot in use in `region`, with its sessions.
    pub fn scan(region: &Region) -> Orphans {
        let mut o = Orphans {
            static_public: region.static_public_key(),
            since: now(),
            ..Default::default()
        };
        for s in 0..region.peer_slots() {
            if !region.peer(s).is_active() {
                continue;
            }
            let key = region
                .peer_info(s)
                .figures()
                .map(|f| f.public_key)
                .unwrap_or_default();
            o.by_key.insert(key, s as u32);
            o.keys.insert(s as u32, Vec::new());
        }
        for k in region.key_slots_in_use() {
            if let Some((m, _)) = region.key(k).read() {
                if let Some(v) = o.keys.get_mut(&m.peer) {
                    v.push(k);
                }
            }
        }
        o
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Whether the unclaimed ones are past use at `t`.
    pub fn expired(&self, t: Duration) -> bool {
        !self.keys.is_empty() && t >= self.since + REJECT_AFTER_TIME
    }
}

impl Daemon {
    /// Peer `id` (just added, public key `key`) takes over its slot and
    /// sessions if the region has them and they were made with our static
    /// key. False: it gets a fresh slot as usual.
    pub(super) fn claim_orphan(&mut self, id: PeerId, key: &PublicKey) -> bool {
        let Some(slot) = self.orphans.by_key.remove(key.as_bytes()) else {
            return false;
        };
        let keys = self.orphans.keys.remove(&slot).unwrap_or_default();
        let ours = self.dev.public_key().map(|k| *k.as_bytes());
        if ours.is_none() || ours != self.orphans.static_public {
            self.release_orphan(slot, keys);
            return false;
        }
        self.slots.assign_reserved(id, slot);
        let resumed = self.adopt_sessions(id, slot, keys);
        let info = self.region.peer_info(slot as usize).figures();
        if let Some(f) = info {
            let hs = (f.last_handshake_unix_ns != 0)
                .then(|| Duration::from_nanos(f.last_handshake_unix_ns));
            self.dev
                .restore_figures(id, hs, f.control_rx_bytes, f.control_tx_bytes);
        }
        // Where the peer last wrote from, unless the configuration says
        // otherwise (then the caller publishes that).
        if let Some((ep, src)) = self.region.peer(slot as usize).endpoint() {
            if self.dev.peer(id).is_some_and(|p| p.endpoint.is_none()) {
                let mut out = Vec::new();
                self.dev.set_endpoint(id, ep, &mut out);
            }
            if let Some(src) = src {
                self.sources.insert(ep, src);
            }
        }
        self.log(
            LogLevel::Info,
            format!("peer {key}: {resumed} session(s) resumed from the running data plane"),
        );
        true
    }

    /// Gives peer `id` the sessions of peer slot `slot` found in key slots
    /// `keys`; returns how many. What cannot be adopted is cleared.
    fn adopt_sessions(&mut self, id: PeerId, slot: u32, keys: Vec<usize>) -> usize {
        let t = now();
        let current = self.region.peer(slot as usize).current_key();
        let mut found: Vec<(usize, Keypair)> = keys
            .into_iter()
            .filter_map(|k| {
                let (m, _) = self.region.key(k).read()?;
                let created = Duration::from_nanos(m.created_ns);
                let kp = Keypair::from_keys(
                    &m.send_key,
                    &m.recv_key,
                    m.initiator,
                    m.local_index,
                    m.remote_index,
                    created,
                );
                Some((k, kp))
            })
            .collect();
        // Newest first: of two candidates for one place, the newer wins.
        found.sort_by_key(|f| std::cmp::Reverse(f.1.created));
        let current_created = found
            .iter()
            .find(|(k, _)| Some(*k as u32) == current)
            .map(|(_, kp)| kp.created);
        let mut adopted = Vec::new();
        for (k, mut kp) in found {
            let index = kp.local_index;
            let place = if Some(k as u32) == current {
                Slot::Current
            } else if !kp.is_initiator && current_created.is_none_or(|c| kp.created > c) {
                // A responder's session the initiator has not used yet.
                Slot::Next
            } else {
                Slot::Previous
            };
            kp.send_counter = self.region.key(k).send_counter();
            let usable = kp.can_receive(t) && slot_of_index(index) == k;
            if usable && self.dev.adopt_keypair(id, kp, place) {
                adopted.push(index);
            } else {
                self.region.key(k).clear();
            }
        }
        let n = adopted.len();
        self.keys.adopt(id, adopted);
        // The data plane's current key may have been one we just cleared.
        let cur = self
            .dev
            .peer(id)
            .and_then(|p| p.keypairs.current.as_ref())
            .map(|k| slot_of_index(k.local_index) as u32);
        self.region.peer(slot as usize).set_current_key(cur);
        n
    }

    /// Clears an orphan's sessions and frees its slot.
    fn release_orphan(&mut self, slot: u32, keys: Vec<usize>) {
        for k in keys {
            let key = self.region.key(k);
            if key.read().is_some_and(|(m, _)| m.peer == slot) {
                key.clear();
            }
        }
        self.region.peer(slot as usize).deactivate();
        self.region.peer_info(slot as usize).deactivate();
        self.region.endpoints_changed();
        self.slots.unreserve(slot);
    }

    /// Drops every orphan: the configuration was replaced without them, or
    /// their sessions have expired.
    pub(super) fn drop_orphans(&mut self) {
        let n = self.orphans.len();
        if n == 0 {
            return;
        }
        self.orphans.by_key.clear();
        let all: Vec<(u32, Vec<usize>)> = self.orphans.keys.drain().collect();
        for (slot, keys) in all {
            self.release_orphan(slot, keys);
        }
        self.log(
            LogLevel::Info,
            format!("dropped {n} peer(s) the configuration no longer names"),
        );
    }
}
