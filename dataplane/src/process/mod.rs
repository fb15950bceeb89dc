//! The data plane process: started by control (`wirespeed --dataplane`),
//! it attaches to the shared region, opens one TUN queue and one UDP socket
//! per worker, pins each worker to a core and forwards until told to stop,
//! the interface disappears, or control is gone and every key expired. A
//! control process that restarts meanwhile re-attaches to it (it writes its
//! own pid into the header, so "control is gone" turns false again).
//! Where AF_XDP uplinks follow the peers, a child of it, the XDP attacher
//! ([`attacher`]), attaches them as they come, so that the data plane
//! itself keeps the full sandbox.

pub(crate) mod attacher;
pub mod backend;
mod fdpass;
pub mod host;
mod iface_watch;
mod keycache;
mod local_addrs;
mod outbox;
mod owner;
mod shared;
mod stats;
mod uplinks;
mod worker;

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use crate::consts::REJECT_AFTER_TIME;
use crate::offload;
use crate::sandbox::{self, Sandbox};
use crate::shm::layout::{BACKEND_UDP, BACKEND_XDP, MAX_WORKERS};
use crate::shm::{monotonic_ns, Region};
use crate::tun;
use crate::udp::UdpSocketBatch;

pub use backend::BackendChoice;
pub use local_addrs::local_addresses;
use shared::Shared;
pub use stats::Stats;
use worker::Worker;

pub struct Options {
    pub iface: String,
    pub shm_path: PathBuf,
    pub workers: usize,
    /// Inherited eventfd to wake control with.
    pub wake_fd: Option<RawFd>,
    /// Inherited TUN queues, one per worker, that control opened where the
    /// interface lives now (it may have been moved to another namespace,
    /// where a name lookup from here cannot reach). Empty: open them by
    /// name here.
    pub tun_fds: Vec<RawFd>,
    pub backend: BackendChoice,
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

/// How often the supervisor copies the XDP programs' counters into the region.
const STATS_INTERVAL_NS: u64 = 1_000_000_000;

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::Relaxed);
}

/// Binds one socket per worker on the requested port (the first picks the
/// port when it is 0; the rest join it with SO_REUSEPORT).
fn bind_sockets(region: &Region, n: usize) -> io::Result<Vec<UdpSocketBatch>> {
    let h = region.header();
    let want = h.listen_port.load(Ordering::Relaxed) as u16;
    let fwmark = h.fwmark.load(Ordering::Relaxed);
    let first = UdpSocketBatch::bind(want, true)?;
    let port = first.local_port();
    let mut v = vec![first];
    for _ in 1..n {
        v.push(UdpSocketBatch::bind(port, true)?);
    }
    if fwmark != 0 {
        for s in &v {
            s.set_fwmark(fwmark)?;
        }
    }
    h.bound_port.store(port as u32, Ordering::Release);
    Ok(v)
}

/// A data plane that takes a region over (its predecessor may have died
/// holding replay-window locks) voids them all.
fn break_replay_locks(region: &Region) {
    for i in region.key_slots_in_use() {
        region.key(i).break_replay_lock();
    }
}

fn any_live_key(region: &Region) -> bool {
    let now = monotonic_ns();
    region.key_slots_in_use().into_iter().any(|i| {
        region.key(i).read().is_some_and(|(k, _)| {
            now.saturating_sub(k.created_ns) < REJECT_AFTER_TIME.as_nanos() as u64
        })
    })
}

/// An info line through the `log` facade, in the data plane's own format.
pub(super) fn note(msg: &str) {
    log::info!("{msg}");
}

fn control_alive(region: &Region) -> bool {
    crate::shm::pid_alive(region.header().control_pid.load(Ordering::Relaxed))
}

/// Drops what the data plane no longer needs once everything is open:
/// capabilities and `no_new_privs` now, for this thread and the workers it
/// starts next; the seccomp filter (if any) is returned ready for
/// [`Sandbox::enter_filter`] once the workers are running. `attacher`:
/// the process that attaches the uplinks that come later (AF_XDP uplinks
/// following the peers), which keeps what that takes so that this one
/// need not.
fn drop_privileges(
    region_dir: Option<RawFd>,
    attacher: Option<libc::pid_t>,
) -> io::Result<Sandbox> {
    let mut want_filter = sandbox::seccomp_wanted_by_env();
    if let Some(pid) = attacher {
        note(&format!(
            "sandbox: AF_XDP uplinks follow the peers: XDP programs and AF_XDP sockets \
             for them come from the XDP attacher (pid {pid}), which keeps the \
             capabilities to attach them; this process gives them up"
        ));
    }
    want_filter = filter_supported(want_filter);
    let sb = Sandbox::prepare(sandbox::KEPT_CAPS, region_dir, want_filter)?;
    drop_and_say(&sb)?;
    Ok(sb)
}

/// `asked`, unless this architecture has no filter (said once).
fn filter_supported(asked: bool) -> bool {
    if asked && !sandbox::seccomp::supported() {
        note("sandbox: no seccomp filter for this architecture");
        return false;
    }
    asked
}

/// Drops the capabilities (and sets `no_new_privs`) as `sb` prepared, and
/// says what is left. For the data plane of an interface and the host's.
fn drop_and_say(sb: &Sandbox) -> io::Result<()> {
    let dropped = sb
        .drop_privileges()
        .map_err(|e| io::Error::new(e.kind(), format!("dropping capabilities: {e}")))?;
    if !dropped.bounding {
        note("sandbox: no CAP_SETPCAP, the capability bounding set stays as it was");
    }
    // Read back now: capget is not among the filter's calls.
    let kept = sandbox::caps::effective()?;
    note(&format!(
        "sandbox: capabilities left: {}; no_new_privs set",
        sandbox::caps::names(kept)
    ));
    Ok(())
}

pub fn run(opts: Options) -> io::Result<()> {
    // Before the region and its keys are mapped; the binary's main already
    // did this, but any other entry into the data plane must too.
    crate::coredump::forbid_core_dumps()?;
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let region = Region::open(&opts.shm_path)?;
    // The control process that started us (or one that re-attached since):
    // if it dies before we exit, the region is ours to remove.
    let mut owner = owner::RegionOwner::new(&region);
    // Only one data plane runs at a time: a predecessor's locks are void.
    break_replay_locks(&region);
    // Worker and uplink figures describe this data plane, from zero.
    crate::shm::stats::reset(&region);
    let mut given: Vec<OwnedFd> = opts
        .tun_fds
        .iter()
        // SAFETY: control passed these queues to us (inherited, listed once
        // each) and nothing else in this process owns them.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let mut n = opts.workers.clamp(1, MAX_WORKERS);
    if !given.is_empty() {
        n = n.min(given.len());
        given.truncate(n);
    }
    region.header().workers.store(n as u32, Ordering::Release);
    // Read before the first bind: a `wg set listen-port` that bumps it
    // from here on is seen as a change and bound below. Read after, it
    // would count as applied while the sockets hold the port of before
    // (control answers `wg` as soon as we are ready, so that is likely),
    // and handshakes would go to and from the wrong port.
    let mut config_gen = region.header().config_gen.load(Ordering::Acquire);
    let sockets = bind_sockets(&region, n)?;
    let queues = if given.is_empty() {
        (0..n)
            .map(|_| tun::open_queue(&opts.iface))
            .collect::<io::Result<Vec<_>>>()?
    } else {
        given.into_iter().map(tun::TunQueue::from_fd).collect()
    };
    // Follows the interface wherever it is moved, and sees its deletion.
    let watch = iface_watch::IfaceWatch::new(queues[0].as_fd())?;
    if let iface_watch::Seen::Mtu(m) = watch.check() {
        region.header().mtu.store(m, Ordering::Relaxed);
    }
    let port = region.header().bound_port.load(Ordering::Relaxed) as u16;
    let fwmark = region.header().fwmark.load(Ordering::Relaxed);
    let mut locals = local_addrs::local_addresses();
    let mut dealer = backend::PortDealer::new(n);
    let backend_error = |e: io::Error| io::Error::new(e.kind(), format!("AF_XDP backend: {e}"));
    // With the uplinks named, the data plane attaches them now, while it
    // has the privileges; following the peers, the attacher does, now and
    // as peers come, and owns the programs and the backend's figures.
    let (mut xdp, mut attacher) = match opts.backend {
        BackendChoice::Udp => {
            log::info!("backend: UDP sockets (chosen with --backend udp)");
            (None, None)
        }
        choice => {
            let udp_gso = sockets[0].offloads().0;
            let what = match uplinks::override_from_env() {
                Some(_) => "WIRESPEED_XDP_IFACES",
                None => "the uplinks that reach the peers, as they are configured",
            };
            log::info!(
                "backend: {} (AF_XDP on {what}; UDP sockets elsewhere)",
                if choice == BackendChoice::Xdp {
                    "xdp"
                } else {
                    "auto"
                }
            );
            match uplinks::override_from_env() {
                Some(list) => {
                    let mut x = backend::XdpUplinks::new(choice, port, udp_gso);
                    x.set_local_addresses(locals.clone());
                    for a in x
                        .add(&list, choice == BackendChoice::Xdp)
                        .map_err(backend_error)?
                    {
                        dealer.deal(a);
                    }
                    (Some(x), None)
                }
                None => {
                    let setup = attacher::Setup {
                        iface: opts.iface.clone(),
                        choice,
                        udp_gso,
                    };
                    let started = attacher::spawn(&region, setup).and_then(|mut a| {
                        let active = a.start(&mut dealer)?;
                        Ok(active.then_some(a))
                    });
                    match started {
                        Ok(a) => (None, a),
                        Err(e) if choice == BackendChoice::Xdp => return Err(backend_error(e)),
                        // auto settles for UDP, as it does for an uplink
                        // that cannot be attached.
                        Err(e) => {
                            log::info!("backend: UDP sockets (the XDP attacher failed: {e})");
                            (None, None)
                        }
                    }
                }
            }
        }
    };
    // The attacher keeps the backend's figures while it runs.
    let xdp_wanted = xdp.is_some() || attacher.is_some();
    if let Some(x) = &xdp {
        let code = if x.active() && !x.programs.is_empty() {
            BACKEND_XDP
        } else {
            BACKEND_UDP
        };
        region.header().backend.store(code, Ordering::Release);
        stats::publish_uplinks(&region, &x.programs);
    } else if attacher.is_none() {
        region
            .header()
            .backend
            .store(BACKEND_UDP, Ordering::Release);
    }
    let inboxes: Vec<Option<Arc<backend::PortInbox>>> = (0..n)
        .map(|i| xdp_wanted.then(|| dealer.inboxes[i].clone()))
        .collect();
    // SAFETY: control passed this eventfd to us and nothing else owns it.
    let wake = opts.wake_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // Lives as long as the process: workers hold a plain reference, so the
    // per-packet path touches no shared reference count.
    let shared: &'static Shared = Box::leak(Box::new(Shared::new(region, wake)));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    // Opened now: once sandboxed, the data plane opens nothing.
    let region_dir = match Region::dir_of(&opts.shm_path) {
        Ok(d) => Some(d),
        Err(e) => {
            note(&format!("cannot open the region's directory: {e}"));
            None
        }
    };
    if let Some(x) = &xdp {
        // Before the sandbox: aya reads the number of possible CPUs from
        // /sys on a thread's first per-CPU map lookup (then caches it for
        // that thread), and this thread reads the XDP counters from now on.
        stats::publish_xdp(&shared.region, &x.programs);
    }
    // Whether the kernel takes UDP super-packets from the TUN (USO, 6.2+),
    // asked again here since control's answer is not passed on: offering
    // what control already set changes nothing, and the ioctl is not
    // allowed once the sandbox is on.
    let uso = offload::wanted_by_env()
        && queues
            .first()
            .is_some_and(|q| q.set_offload(true).unwrap_or(false));
    let sandbox = drop_privileges(
        region_dir.as_ref().map(|d| d.as_raw_fd()),
        attacher.as_ref().map(|a| a.pid()),
    )?;
    // The filter goes on once every worker has started (pinned, named, its
    // signal stack set up), so it need only allow what they do from then on.
    let started = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    let mut socket_slots: Vec<Arc<Mutex<Option<UdpSocketBatch>>>> = Vec::new();
    for (i, ((sock, q), inbox)) in sockets.into_iter().zip(queues).zip(inboxes).enumerate() {
        let mut w = Worker::new(i, shared, sock, q, uso);
        if let Some(inbox) = inbox {
            w = w.with_xdp(inbox, fwmark);
        }
        socket_slots.push(w.new_socket.clone());
        let core = cores.get(i % cores.len().max(1)).copied();
        let started = started.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    started.wait();
                    w.run();
                })?,
        );
    }
    started.wait();
    if sandbox.filters() {
        sandbox.enter_filter().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("seccomp filter ({e}); WIRESPEED_SECCOMP=off runs without it"),
            )
        })?;
    }
    if sandbox.filters() {
        note("sandbox: seccomp filter on (a system call outside it fails with EPERM)");
    } else if !sandbox::seccomp_wanted_by_env() {
        note("sandbox: no seccomp filter (WIRESPEED_SECCOMP=off)");
    }
    let h = shared.region.header();
    // For a control that re-attaches after a restart (see the header).
    h.dataplane_wake_fd.store(
        opts.wake_fd.map_or(0, |fd| fd as u32 + 1),
        Ordering::Release,
    );
    h.dataplane_pid.store(std::process::id(), Ordering::Release);
    h.dataplane_ready
        .store(std::process::id(), Ordering::Release);
    log::info!(
        "{n} workers on {}, UDP port {}",
        opts.iface,
        h.bound_port.load(Ordering::Relaxed)
    );

    let mut addrs = local_addrs::digest(&locals);
    let mut ticks = 0u64;
    let mut next_stats_ns = 0u64;
    h.applied_gen.store(config_gen, Ordering::Release);
    while !TERMINATE.load(Ordering::Relaxed) && !shared.stopping() {
        std::thread::sleep(Duration::from_millis(10));
        ticks += 1;
        if let Some(a) = attacher.as_mut() {
            if !a.poll(&mut dealer) {
                log::warn!(
                    "the XDP attacher ended: its programs are detached, transport \
                     messages take the UDP sockets"
                );
                attacher = None;
                h.backend.store(BACKEND_UDP, Ordering::Release);
            }
        }
        let now = monotonic_ns();
        if now >= next_stats_ns {
            next_stats_ns = now + STATS_INTERVAL_NS;
            if let Some(x) = &xdp {
                stats::publish_xdp(&shared.region, &x.programs);
            }
            if let Some(pid) = crate::shm::capture::reap_orphan(&shared.region) {
                log::info!(
                    "capture: process {pid} ended without turning capture off; turned it off"
                );
            }
        }
        if ticks.is_multiple_of(5) {
            let now_locals = local_addrs::local_addresses();
            let a = local_addrs::digest(&now_locals);
            if a != addrs {
                addrs = a;
                locals = now_locals;
                shared.addr_gen.fetch_add(1, Ordering::AcqRel);
                if let Some(x) = xdp.as_mut() {
                    x.set_local_addresses(locals.clone());
                }
            }
        }
        let g = h.config_gen.load(Ordering::Acquire);
        if g != config_gen {
            config_gen = g;
            // The old sockets stay until the new ones are bound, so a port
            // that is taken leaves the interface working on the old one.
            let old_port = h.bound_port.load(Ordering::Relaxed) as u16;
            match bind_sockets(&shared.region, n) {
                Ok(socks) => {
                    let new_port = h.bound_port.load(Ordering::Relaxed) as u16;
                    if let Some(x) = xdp.as_mut() {
                        if let Err(e) = x.change_port(old_port, new_port) {
                            log::error!("cannot steer the new port {new_port}: {e}");
                        }
                    }
                    for (slot, s) in socket_slots.iter().zip(socks) {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                    }
                    h.bind_errno.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    log::error!("cannot bind the new listen port: {e}");
                    h.bind_errno.store(
                        e.raw_os_error().unwrap_or(libc::EIO) as u32,
                        Ordering::Relaxed,
                    );
                }
            }
            h.applied_gen.store(g, Ordering::Release);
        }
        if ticks.is_multiple_of(100) {
            owner.follow(&shared.region);
            match watch.check() {
                iface_watch::Seen::Deleted => {
                    log::info!("interface deleted; exiting");
                    break;
                }
                iface_watch::Seen::Mtu(m) => h.mtu.store(m, Ordering::Relaxed),
                iface_watch::Seen::Elsewhere => {}
            }
            // A control that detached on purpose is followed by another
            // (a service restart): wait for it even with nothing to keep.
            if !control_alive(&shared.region)
                && !any_live_key(&shared.region)
                && !shared.region.awaits_reattach(monotonic_ns())
            {
                log::info!("control is gone and every session expired; exiting");
                break;
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in handles {
        let _ = t.join();
    }
    if let Some(a) = attacher {
        a.finish();
    }
    if owner.gone(&shared.region) {
        // Control was killed and we are the last user: nobody else would
        // ever free this memory (the region's directory is RAM). Only if
        // nobody holds it: a control that restarted meanwhile may own it.
        let removed = match &region_dir {
            Some(d) => shared.region.remove_if_unclaimed_in(d),
            None => Ok(false),
        };
        match removed {
            Ok(true) => log::info!("control is gone: removed the shared region"),
            Ok(false) => {}
            Err(e) => log::error!("cannot remove the shared region: {e}"),
        }
    }
    if let Some(x) = &xdp {
        stats::publish_and_log_xdp(&shared.region, &x.programs);
    }
    Ok(())
}
