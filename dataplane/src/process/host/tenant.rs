//! One tenant of the host data plane: a wirespeed interface whose control
//! process attached it. It keeps its own region (a separate mapping per
//! tenant: a packet can only meet the keys, peers and routes of the region
//! of the lane it arrived on), its own UDP sockets on its listen port, and
//! one lane in each worker. It goes by the rules a data plane of its own
//! follows: when control detaches it on purpose, when the interface is
//! deleted, or when control is gone and every key expired.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::offload;
use crate::shm::layout::BACKEND_UDP;
use crate::shm::{monotonic_ns, Region, RegionDir};
use crate::tun::TunQueue;
use crate::udp::UdpSocketBatch;

use super::super::iface_watch::{IfaceWatch, Seen};
use super::super::owner::RegionOwner;
use super::super::shared::Shared;
use super::super::worker::Worker;
use super::super::{any_live_key, bind_sockets, break_replay_locks, control_alive};
use super::lanes::LaneInbox;

pub struct Tenant {
    pub iface: String,
    /// The region file's (device, inode): a re-attaching control names its
    /// tenant by handing over the same file.
    pub id: (u64, u64),
    pub shared: Arc<Shared>,
    /// Control's end of the attach connection; None once it closed.
    pub conn: Option<OwnedFd>,
    sockets: Vec<Arc<Mutex<Option<UdpSocketBatch>>>>,
    config_gen: u64,
    watch: IfaceWatch,
    /// A copy of one of the tenant's queues, for a control that re-attaches.
    queue: OwnedFd,
    region_dir: Option<RegionDir>,
    /// The port the uplinks' XDP programs steer for this tenant.
    pub steered: u16,
    /// Its peers' interfaces, for AF_XDP following them.
    pub followed: super::follow::Followed,
    /// Whether its UDP sockets send with GSO (auto weighs copy-mode AF_XDP
    /// against it).
    pub udp_gso: bool,
    /// The control that attached the tenant (or re-attached since): if it
    /// dies and nobody took its place, the region's file is ours to remove
    /// when the tenant goes.
    owner: RegionOwner,
}

/// SO_REUSEPORT would let two tenants bind one port (both are root) and
/// split its datagrams between them: the port another tenant has is
/// refused, as a data plane of its own would find it taken.
pub fn port_free(region: &Region, taken: &[u16]) -> io::Result<()> {
    let want = region.header().listen_port.load(Ordering::Relaxed) as u16;
    if want != 0 && taken.contains(&want) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("UDP port {want} belongs to another interface"),
        ));
    }
    Ok(())
}

/// Why a tenant went.
#[derive(Debug, PartialEq, Eq)]
pub enum Gone {
    Deleted,
    Expired,
}

impl Tenant {
    /// Attaches the tenant of `region` with its wake eventfd and one TUN
    /// queue per worker, binding its UDP sockets and handing each worker
    /// its lane. `region_dir`: where its region is removed, if ever.
    pub fn attach(
        iface: &str,
        region_dir: Option<RegionDir>,
        region: Region,
        wake: OwnedFd,
        queues: Vec<OwnedFd>,
        inboxes: &[Arc<LaneInbox>],
        taken: &[u16],
    ) -> io::Result<Tenant> {
        let n = inboxes.len();
        if queues.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} TUN queues for {n} workers", queues.len()),
            ));
        }
        let id = region.file_id()?;
        // No other data plane serves it now: a predecessor's locks are void.
        break_replay_locks(&region);
        port_free(&region, taken)?;
        crate::shm::stats::reset(&region);
        let h = region.header();
        h.workers.store(n as u32, Ordering::Release);
        // Read before the bind, as a data plane of its own does (a change
        // from here on is seen and bound by `tick`).
        let config_gen = h.config_gen.load(Ordering::Acquire);
        let sockets = bind_sockets(&region, n)?;
        let udp_gso = sockets.first().is_some_and(|s| s.offloads().0);
        let queues: Vec<TunQueue> = queues.into_iter().map(TunQueue::from_fd).collect();
        let queue = queues[0].as_fd().try_clone_to_owned()?;
        let watch = IfaceWatch::new(queues[0].as_fd())?;
        if let Seen::Mtu(m) = watch.check() {
            h.mtu.store(m, Ordering::Relaxed);
        }
        h.backend.store(BACKEND_UDP, Ordering::Release);
        let uso = offload::wanted_by_env()
            && queues
                .first()
                .is_some_and(|q| q.set_offload(true).unwrap_or(false));
        let owner = RegionOwner::new(&region);
        let fwmark = h.fwmark.load(Ordering::Relaxed);
        let shared = Arc::new(Shared::new(region, Some(wake)));
        let mut slots = Vec::with_capacity(n);
        for (i, (sock, q)) in sockets.into_iter().zip(queues).enumerate() {
            let lane = Worker::lane(i, shared.clone(), sock, q, uso, fwmark);
            slots.push(lane.new_socket.clone());
            inboxes[i].push(lane);
        }
        let h = shared.region.header();
        h.dataplane_wake_fd.store(0, Ordering::Release);
        h.dataplane_pid.store(std::process::id(), Ordering::Release);
        h.applied_gen.store(config_gen, Ordering::Release);
        h.dataplane_ready
            .store(std::process::id(), Ordering::Release);
        Ok(Tenant {
            iface: iface.to_string(),
            id,
            shared,
            conn: None,
            sockets: slots,
            udp_gso,
            config_gen,
            watch,
            queue,
            region_dir,
            owner,
            steered: 0,
            followed: Default::default(),
        })
    }

    /// What the tenant's metrics say carries its transport messages.
    pub fn set_backend(&self, code: u32) {
        self.shared
            .region
            .header()
            .backend
            .store(code, Ordering::Release);
    }

    pub fn port(&self) -> u16 {
        self.shared
            .region
            .header()
            .bound_port
            .load(Ordering::Relaxed) as u16
    }

    /// What a re-attaching control gets: a copy of one of the tenant's TUN
    /// queues (the interface may live in another namespace now) and the
    /// eventfd the lanes wake control with.
    pub fn handover(&self) -> io::Result<[OwnedFd; 2]> {
        let wake = match &self.shared.wake_control {
            Some(w) => w.try_clone()?,
            None => return Err(io::Error::other("tenant without a wake eventfd")),
        };
        Ok([self.queue.try_clone()?, wake])
    }

    /// Follows control's configuration changes (a new listen port: only
    /// this tenant's sockets are bound again); every `slow` call also
    /// looks at the interface and at control. Some: time for it to go.
    /// `taken`: the other tenants' ports.
    pub fn tick(&mut self, slow: bool, taken: &[u16]) -> Option<Gone> {
        let h = self.shared.region.header();
        let g = h.config_gen.load(Ordering::Acquire);
        if g != self.config_gen {
            self.config_gen = g;
            // The old sockets stay until the new ones are bound, so a port
            // that is taken leaves the tenant working on the old one.
            match port_free(&self.shared.region, taken)
                .and_then(|()| bind_sockets(&self.shared.region, self.sockets.len()))
            {
                Ok(socks) => {
                    for (slot, s) in self.sockets.iter().zip(socks) {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                    }
                    h.bind_errno.store(0, Ordering::Relaxed);
                    log::info!("{}: UDP port {}", self.iface, self.port());
                }
                Err(e) => {
                    log::error!("{}: cannot bind the new listen port: {e}", self.iface);
                    h.bind_errno.store(
                        e.raw_os_error().unwrap_or(libc::EIO) as u32,
                        Ordering::Relaxed,
                    );
                }
            }
            h.applied_gen.store(g, Ordering::Release);
        }
        // A lane found the interface gone (its TUN queue failed): every
        // lane has dropped out already.
        if self.shared.stopping() {
            return Some(Gone::Deleted);
        }
        if !slow {
            return None;
        }
        self.owner.follow(&self.shared.region);
        if let Some(pid) = crate::shm::capture::reap_orphan(&self.shared.region) {
            log::info!(
                "{}: capture: process {pid} ended without turning capture off; turned it off",
                self.iface
            );
        }
        match self.watch.check() {
            Seen::Deleted => return Some(Gone::Deleted),
            Seen::Mtu(m) => h.mtu.store(m, Ordering::Relaxed),
            Seen::Elsewhere => {}
        }
        let region = &self.shared.region;
        if self.conn.is_none()
            && !control_alive(region)
            && !any_live_key(region)
            && !region.awaits_reattach(monotonic_ns())
        {
            return Some(Gone::Expired);
        }
        None
    }

    /// Takes the tenant's lanes out of every worker (each drops its own at
    /// its next turn, the last one the region); a region whose control is
    /// gone for good is removed, as a data plane of its own would.
    pub fn detach(self) {
        let region = &self.shared.region;
        if self.owner.gone(region) {
            let removed = match &self.region_dir {
                Some(d) => region.remove_if_unclaimed_in(d),
                None => Ok(false),
            };
            match removed {
                Ok(true) => {
                    log::info!("{}: control is gone: removed the shared region", self.iface)
                }
                Ok(false) => {}
                Err(e) => log::error!("{}: cannot remove the shared region: {e}", self.iface),
            }
        }
        self.shared.stop.store(true, Ordering::Release);
    }
}
