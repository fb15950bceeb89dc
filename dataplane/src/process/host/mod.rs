//! The host data plane (`wirespeed --host-dataplane`): one data plane for
//! every wirespeed interface on the host. Its workers (one per core,
//! pinned) each serve every tenant through a lane per tenant ([`lanes`]);
//! control processes attach their interfaces over a root-only socket
//! ([`listen`], protocol in [`wire`]) and the data plane binds each
//! tenant's UDP sockets on its listen port ([`tenant`]).
//!
//! A `wirespeed IFACE` attaches to the one that answers on the socket of
//! its namespace, or starts one (with WIRESPEED_DATAPLANE=own, a data
//! plane of its own instead). Transport goes over the tenants' UDP
//! sockets, or over AF_XDP on the uplinks WIRESPEED_XDP_IFACES names: one
//! XDP program per uplink steers every tenant's listen port to the
//! workers' AF_XDP sockets, and each worker parks every frame in the lane
//! of its destination port; without that list, AF_XDP follows the
//! tenants' peers to their uplinks ([`follow`]). The programs and the
//! AF_XDP sockets come from the host's XDP attacher ([`xdp`]), a process
//! forked before the sandbox that keeps what attaching takes, so that
//! every thread of the host data plane runs in the whole sandbox
//! ([`sandbox`]) once its workers have started, whichever the backend.

mod follow;
pub mod lanes;
pub mod listen;
mod sandbox;
mod tenant;
pub mod wire;
mod xdp;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::shm::layout::{BACKEND_UDP, BACKEND_XDP, MAX_WORKERS};
use crate::shm::{Region, RegionDir, REGION_DIR};

use super::attacher::wire::Uplink;
use super::backend::{BackendChoice, PortDealer};
use super::local_addrs;
use super::stats::UplinkReport;
use super::uplinks::{self, UplinkFinder};
use lanes::{LaneInbox, LaneSet};
use listen::Listener;
use sandbox::HostSandbox;
use tenant::{Gone, Tenant};
use wire::{Received, Reply, Request};
use xdp::{HostXdp, Outcome};

pub use listen::{connect, socket_path, DEFAULT_SOCKET};

pub struct HostOptions {
    pub socket: PathBuf,
    pub workers: usize,
    pub backend: BackendChoice,
    /// Exit once the last tenant is gone (or none came within
    /// [`IDLE_GRACE_TICKS`]): one a control started on demand.
    pub exit_when_idle: bool,
}

/// How often the supervisor looks at the socket and the tenants' settings.
const TICK: Duration = Duration::from_millis(10);
/// Every this many ticks: the interfaces and the controls.
const SLOW_TICKS: u64 = 100;
/// Exiting when idle: how long (ticks, 30 s) one that never had a tenant
/// waits for its first.
const IDLE_GRACE_TICKS: u64 = 3000;
/// Connections that have not attached a tenant, at most.
const MAX_PENDING: usize = 64;

struct Host {
    workers: usize,
    inboxes: Vec<Arc<LaneInbox>>,
    tenants: Vec<Tenant>,
    /// Connections that have not attached a tenant (yet).
    pending: Vec<OwnedFd>,
    /// The uplinks to put AF_XDP on (WIRESPEED_XDP_IFACES), if any: one
    /// XDP program each, steering every tenant's listen port, attached
    /// with the first tenant.
    xdp_list: Option<Vec<String>>,
    /// Without that list (and not `--backend udp`): the uplinks the
    /// tenants' peers are reached through, looked up as they come.
    follow: Option<UplinkFinder>,
    /// The first tenant's UDP GSO, for auto following the peers.
    udp_gso: Option<bool>,
    choice: BackendChoice,
    /// The XDP attacher, while AF_XDP may carry (not `--backend udp`,
    /// not given up).
    xdp: Option<HostXdp>,
    dealer: PortDealer,
    locals: u64,
    /// The regions' directory, opened at start: a tenant whose control is
    /// gone for good has its region removed there.
    regions: Option<Arc<OwnedFd>>,
}

fn reply(c: &OwnedFd, r: &Reply, fds: &[i32]) {
    if let Err(e) = wire::send(c.as_fd(), r.encode().as_bytes(), fds) {
        log::error!("attach socket: cannot reply: {e}");
    }
}

impl Host {
    /// Answers what a connection that has no tenant sent; Some(conn) if it
    /// stays pending.
    fn serve_pending(&mut self, c: OwnedFd) -> Option<OwnedFd> {
        let (msg, fds) = match wire::recv(c.as_fd(), false) {
            Ok(Received::Msg(m, f)) => (m, f),
            Ok(Received::Nothing) => return Some(c),
            Ok(Received::Closed) => return None,
            Err(e) => {
                log::error!("attach socket: {e}");
                return None;
            }
        };
        let req = match Request::decode(&msg) {
            Ok(r) if r.fds(self.workers) == fds.len() => r,
            Ok(r) => {
                reply(
                    &c,
                    &Reply::Err(format!("{} descriptors with {r:?}", fds.len())),
                    &[],
                );
                return None;
            }
            Err(e) => {
                reply(&c, &Reply::Err(e.to_string()), &[]);
                return None;
            }
        };
        match req {
            Request::Hello => {
                reply(
                    &c,
                    &Reply::Workers {
                        n: self.workers,
                        pid: std::process::id(),
                    },
                    &[],
                );
                Some(c)
            }
            Request::Attach { iface, shm } => {
                match self.attach(&iface, Path::new(&shm), fds) {
                    Ok(port) => {
                        reply(&c, &Reply::Ok { port }, &[]);
                        log::info!("{iface}: attached, UDP port {port}");
                        if let Some(t) = self.tenants.last_mut() {
                            t.conn = Some(c);
                        }
                    }
                    Err(e) => {
                        log::error!("{iface}: attach refused: {e}");
                        reply(&c, &Reply::Err(e.to_string()), &[]);
                    }
                }
                None
            }
            Request::Reattach { iface } => {
                match self.reattach(fds) {
                    Ok((i, [q, w])) => {
                        let t = &mut self.tenants[i];
                        reply(
                            &c,
                            &Reply::Ok { port: t.port() },
                            &[q.as_raw_fd(), w.as_raw_fd()],
                        );
                        log::info!("{iface}: control re-attached");
                        t.conn = Some(c);
                    }
                    Err(e) => reply(&c, &Reply::Err(e.to_string()), &[]),
                }
                None
            }
            Request::Detach => {
                reply(
                    &c,
                    &Reply::Err("nothing attached on this connection".into()),
                    &[],
                );
                None
            }
        }
    }

    fn attach(&mut self, iface: &str, shm: &Path, fds: Vec<OwnedFd>) -> io::Result<u16> {
        let mut it = fds.into_iter();
        let (Some(region), Some(wake)) = (it.next(), it.next()) else {
            return Err(io::Error::other("missing descriptors"));
        };
        let region = Region::from_fd(region)?;
        let id = region.file_id()?;
        if self.tenants.iter().any(|t| t.id == id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this region is attached already (REATTACH takes it over)",
            ));
        }
        let taken: Vec<u16> = self.tenants.iter().map(Tenant::port).collect();
        // The regions' directory opened at start: the sandbox opens nothing.
        let region_dir = (self.regions.as_ref())
            .and_then(|d| RegionDir::in_opened(d, Path::new(REGION_DIR), shm))
            .or_else(|| Region::dir_of(shm).ok());
        let mut t = Tenant::attach(
            iface,
            region_dir,
            region,
            wake,
            it.collect(),
            &self.inboxes,
            &taken,
        )?;
        let port = t.port();
        self.udp_gso.get_or_insert(t.udp_gso);
        self.steer(port);
        t.steered = port;
        t.set_backend(self.backend_code());
        self.tenants.push(t);
        Ok(port)
    }

    /// BACKEND_XDP once an uplink carries transport messages over AF_XDP.
    fn backend_code(&self) -> u32 {
        match &self.xdp {
            Some(x) if x.carries() => BACKEND_XDP,
            _ => BACKEND_UDP,
        }
    }

    /// Has the uplinks' XDP programs steer `port` to the AF_XDP sockets
    /// (with uplinks named, attaching them for the first tenant).
    fn steer(&mut self, port: u16) {
        let Some(x) = &mut self.xdp else { return };
        if let Err(e) = x.steer(port) {
            return self.lose_xdp(&e);
        }
        let Some(list) = self.xdp_list.as_ref().filter(|_| !x.started()) else {
            return;
        };
        let list: Vec<Uplink> = list.iter().cloned().map(Uplink::Named).collect();
        // Named uplinks: no UDP GSO preference, auto takes AF_XDP
        // wherever it can attach.
        let strict = self.choice == BackendChoice::Xdp;
        match x.attach(&list, false, strict, &mut self.dealer) {
            Ok(Outcome::Active(true)) => {}
            Ok(Outcome::Active(false)) => self.give_up_xdp(),
            Ok(Outcome::Failed(e)) => {
                log::error!("AF_XDP uplinks: {e}; the tenants use UDP sockets")
            }
            Err(e) => self.lose_xdp(&e),
        }
    }

    /// Following the peers: asks for AF_XDP on the uplinks the tenants'
    /// peers are reached through that were not asked for yet (the
    /// attacher steers every tenant's port there).
    fn follow_peers(&mut self) {
        let (Some(finder), Some(x)) = (&mut self.follow, &mut self.xdp) else {
            return;
        };
        let wanted: Vec<Uplink> = (follow::wanted(finder, &mut self.tenants).into_iter())
            .map(Uplink::Index)
            .collect();
        // Following the peers, auto weighs copy-mode AF_XDP against UDP
        // GSO as a data plane of its own does.
        let gso = self.udp_gso.unwrap_or(false);
        match x.attach(&wanted, gso, false, &mut self.dealer) {
            Ok(Outcome::Active(true)) => {}
            Ok(Outcome::Active(false)) => self.give_up_xdp(),
            Ok(Outcome::Failed(e)) => log::error!("AF_XDP uplinks: {e}"),
            Err(e) => self.lose_xdp(&e),
        }
        self.set_backend();
    }

    fn set_backend(&mut self) {
        let code = self.backend_code();
        for t in &mut self.tenants {
            t.set_backend(code);
        }
    }

    /// auto found UDP with GSO faster than AF_XDP here (said in the log
    /// by the attacher, which has ended).
    fn give_up_xdp(&mut self) {
        if let Some(x) = self.xdp.take() {
            x.finish();
        }
        self.follow = None;
        self.set_backend();
    }

    /// The attacher is gone (or stuck): its programs with it.
    fn lose_xdp(&mut self, e: &io::Error) {
        log::warn!(
            "the XDP attacher: {e}; its programs are detached, transport messages take \
             the UDP sockets"
        );
        self.give_up_xdp();
    }

    /// The programs' figures now (none without the attacher).
    fn uplink_figures(&mut self) -> Vec<UplinkReport> {
        let Some(x) = &mut self.xdp else {
            return Vec::new();
        };
        match x.report(&mut self.dealer) {
            Ok(r) => r,
            Err(e) => {
                self.lose_xdp(&e);
                Vec::new()
            }
        }
    }

    /// The uplinks' XDP programs and their counters, into every tenant's
    /// region (its metrics show the uplinks its frames share).
    fn publish_uplinks(&mut self) {
        if self.xdp.is_none() {
            return;
        }
        let figures = self.uplink_figures();
        for t in &self.tenants {
            super::stats::publish_reports(&t.shared.region, &figures);
        }
    }

    /// Steers `port` no more, unless another tenant listens there too.
    fn unsteer(&mut self, port: u16) {
        if self.tenants.iter().any(|t| t.steered == port) {
            return;
        }
        if let Some(x) = &self.xdp {
            if let Err(e) = x.unsteer(port) {
                self.lose_xdp(&e);
            }
        }
    }

    /// The host's addresses changed: the XDP programs steer only what is
    /// addressed to it, and the lanes forget next hops whose source
    /// addresses may be gone.
    fn refresh_locals(&mut self) {
        let now = local_addrs::local_addresses();
        let d = local_addrs::digest(&now);
        if d == self.locals {
            return;
        }
        self.locals = d;
        // Routes may have moved with the addresses (the attacher follows
        // the addresses itself).
        if let Some(f) = &mut self.follow {
            f.forget();
        }
        for t in &mut self.tenants {
            t.followed.forget();
            t.shared.addr_gen.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The tenant of the region in `fds` and what its new control needs.
    fn reattach(&self, fds: Vec<OwnedFd>) -> io::Result<(usize, [OwnedFd; 2])> {
        let region = fds
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::other("missing region"))?;
        let st = std::fs::File::from(region).metadata()?;
        let id = {
            use std::os::unix::fs::MetadataExt;
            (st.dev(), st.ino())
        };
        let Some(i) = self.tenants.iter().position(|t| t.id == id) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no tenant with this region",
            ));
        };
        // Its old control may have died a moment ago, before this loop saw
        // its connection close.
        if self.tenants[i].conn.as_ref().is_some_and(|c| !hung_up(c)) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "the tenant's control is still attached",
            ));
        }
        Ok((i, self.tenants[i].handover()?))
    }

    /// Messages on tenants' connections, and their housekeeping.
    fn serve_tenants(&mut self, slow: bool) {
        let mut i = 0;
        while i < self.tenants.len() {
            let taken: Vec<u16> = (self.tenants.iter().enumerate())
                .filter(|&(j, _)| j != i)
                .map(|(_, t)| t.port())
                .collect();
            let got = (self.tenants[i].conn.as_ref()).map(|c| wire::recv(c.as_fd(), false));
            let mut detach = false;
            match got {
                Some(Ok(Received::Msg(m, _)))
                    if Request::decode(&m).ok() == Some(Request::Detach) =>
                {
                    // Before the reply: its control exits on it.
                    let figures = self.uplink_figures();
                    let t = &self.tenants[i];
                    log_uplinks(t, &figures);
                    if let Some(c) = &t.conn {
                        reply(c, &Reply::Ok { port: 0 }, &[]);
                    }
                    detach = true;
                }
                Some(Ok(Received::Msg(..))) => {
                    if let Some(c) = &self.tenants[i].conn {
                        reply(c, &Reply::Err("unexpected request".into()), &[])
                    }
                }
                None | Some(Ok(Received::Nothing)) => {}
                Some(Ok(Received::Closed) | Err(_)) => {
                    let t = &mut self.tenants[i];
                    log::info!(
                        "{}: control closed its connection; forwarding goes on with the keys it left",
                        t.iface
                    );
                    t.conn = None;
                }
            }
            let t = &mut self.tenants[i];
            let gone = if detach {
                log::info!("{}: detached by its control", t.iface);
                true
            } else {
                match t.tick(slow, &taken) {
                    Some(Gone::Deleted) => {
                        log::info!("{}: interface deleted; detached", t.iface);
                        true
                    }
                    Some(Gone::Expired) => {
                        log::info!(
                            "{}: control is gone and every session expired; detached",
                            t.iface
                        );
                        true
                    }
                    None => false,
                }
            };
            if gone {
                let t = self.tenants.swap_remove(i);
                if !detach {
                    let figures = self.uplink_figures();
                    log_uplinks(&t, &figures);
                }
                let port = t.steered;
                t.detach();
                self.unsteer(port);
            } else {
                let (old, new) = (self.tenants[i].steered, self.tenants[i].port());
                if old != new {
                    self.tenants[i].steered = new;
                    self.steer(new);
                    self.unsteer(old);
                }
                i += 1;
            }
        }
    }
}

/// A tenant that goes gets the uplinks' last figures in its region and a
/// line each in the log, as a data plane of its own leaves at exit (the
/// programs are shared: the figures are every tenant's).
fn log_uplinks(t: &Tenant, figures: &[UplinkReport]) {
    if !figures.is_empty() {
        super::stats::publish_and_log_reports(&t.shared.region, figures);
    }
}

/// Whether the other end of `c` closed it.
fn hung_up(c: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: c.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: polls the one pollfd we pass, without waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
}

/// Whether one started on demand is done: no tenant and no control on its
/// way to one, after it had a tenant (or waited long enough for a first).
fn idle(tenants: usize, pending: usize, had_tenant: bool, ticks: u64) -> bool {
    tenants == 0 && pending == 0 && (had_tenant || ticks >= IDLE_GRACE_TICKS)
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::Relaxed);
}

pub fn run(opts: HostOptions) -> io::Result<()> {
    crate::coredump::forbid_core_dumps()?;
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        // The XDP attacher may end long before us (auto gave AF_XDP up):
        // reaped by the kernel, since the filter has no wait4 and nothing
        // else of ours has children.
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let xdp_list = match opts.backend {
        BackendChoice::Udp => None,
        _ => uplinks::override_from_env(),
    };
    let listener = Listener::bind(&opts.socket)?;
    let regions = listen::open_dir(Path::new(REGION_DIR)).map(Arc::new);
    let dirs: Vec<i32> = (listener.dir_fd().into_iter())
        .chain(regions.as_ref().map(|d| d.as_raw_fd()))
        .collect();
    // Forked while this is the only thread and before the sandbox: it
    // keeps what attaching takes, for named uplinks and followed peers
    // alike, so that no thread here need.
    let xdp = match opts.backend {
        BackendChoice::Udp => None,
        choice => match HostXdp::spawn(choice) {
            Ok(x) => {
                super::note(&format!(
                    "sandbox: XDP programs and AF_XDP sockets come from the XDP attacher \
                     (pid {}), which keeps the capabilities to attach them",
                    x.pid()
                ));
                Some(x)
            }
            Err(e) if choice == BackendChoice::Xdp => {
                return Err(io::Error::new(e.kind(), format!("XDP attacher: {e}")))
            }
            Err(e) => {
                super::note(&format!(
                    "backend: UDP sockets (the XDP attacher failed: {e})"
                ));
                None
            }
        },
    };
    // Without named uplinks AF_XDP goes where the tenants' peers are, as
    // with a data plane of one's own (auto then weighs copy mode against
    // UDP GSO at the first uplink).
    let follow = (xdp.is_some() && xdp_list.is_none()).then(UplinkFinder::default);
    // Before any other thread: they inherit what the main thread keeps.
    let mut host_sandbox = HostSandbox::start(&dirs)?;
    let n = opts.workers.clamp(1, MAX_WORKERS);
    let dealer = PortDealer::new(n);
    let unclaimed = Arc::new(AtomicU64::new(0));
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut inboxes = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    // The filter goes on once every worker has started (pinned, its
    // capabilities dropped), so it need only allow what they do from then on.
    let started = Arc::new(Barrier::new(n + 1));
    for i in 0..n {
        let inbox = Arc::new(LaneInbox::default());
        inboxes.push(inbox.clone());
        let ports = xdp.is_some().then(|| dealer.inboxes[i].clone());
        let unclaimed = unclaimed.clone();
        let core = cores.get(i % cores.len().max(1)).copied();
        let started = started.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let dropped = HostSandbox::worker();
                    started.wait();
                    if let Err(e) = dropped {
                        log::error!("worker {i}: dropping capabilities: {e}; terminating");
                        TERMINATE.store(true, Ordering::Relaxed);
                        return;
                    }
                    LaneSet::new(inbox, ports, unclaimed).run(stop);
                })?,
        );
    }
    log::info!(
        "host data plane: {n} workers, {}, attach socket {}",
        match (&xdp_list, &follow) {
            (Some(l), _) if xdp.is_some() =>
                format!("AF_XDP on {} (UDP sockets elsewhere)", l.join(",")),
            (_, Some(_)) => "AF_XDP on the uplinks to the tenants' peers".to_string(),
            _ => "UDP sockets".to_string(),
        },
        opts.socket.display()
    );
    started.wait();
    // The socket answers and the workers run sandboxed: interfaces ordered
    // after wirespeed-dataplane.service attach now. Before the filter,
    // which has no socket(2).
    if let Err(e) = crate::sdnotify::ready() {
        log::error!("cannot tell the service manager we are ready: {e}");
    }
    host_sandbox.finish()?;
    let mut host = Host {
        workers: n,
        inboxes,
        tenants: Vec::new(),
        pending: Vec::new(),
        xdp_list,
        follow,
        udp_gso: None,
        choice: opts.backend,
        xdp,
        dealer,
        locals: 0,
        regions,
    };
    let mut ticks = 0u64;
    let mut unclaimed_seen = 0u64;
    let mut had_tenant = false;
    while !TERMINATE.load(Ordering::Relaxed) {
        while let Some(c) = listener.accept() {
            // Root only, but a stuck client must not pile them up.
            if host.pending.len() >= MAX_PENDING {
                host.pending.remove(0);
            }
            host.pending.push(c);
        }
        for c in std::mem::take(&mut host.pending) {
            if let Some(c) = host.serve_pending(c) {
                host.pending.push(c);
            }
        }
        ticks += 1;
        let slow = ticks.is_multiple_of(SLOW_TICKS);
        host.serve_tenants(slow);
        had_tenant |= !host.tenants.is_empty();
        if opts.exit_when_idle && idle(host.tenants.len(), host.pending.len(), had_tenant, ticks) {
            log::info!("host data plane: no tenant left; exiting");
            break;
        }
        if slow {
            host.refresh_locals();
            host.follow_peers();
            host.publish_uplinks();
            let u = unclaimed.load(Ordering::Relaxed);
            if u != unclaimed_seen {
                log::info!(
                    "{} AF_XDP frame(s) for a port no tenant has dropped ({u} in all)",
                    u - unclaimed_seen
                );
                unclaimed_seen = u;
            }
        }
        std::thread::sleep(TICK);
    }
    if TERMINATE.load(Ordering::Relaxed) {
        log::info!("host data plane: terminating on signal");
    }
    drop(listener);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    // The programs go before we do (their sockets with the workers).
    if let Some(x) = host.xdp.take() {
        x.finish();
    }
    // The lanes are gone: the tenants' regions are unmapped with these.
    for t in host.tenants.drain(..) {
        t.detach();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_started_on_demand_is_idle_only_without_tenants_or_controls_on_their_way() {
        assert!(!idle(1, 0, true, 10), "a tenant left");
        assert!(!idle(0, 1, true, 10), "a control attaching");
        assert!(idle(0, 0, true, 10), "the last tenant went");
        assert!(!idle(0, 0, false, 10), "the first has not come yet");
        assert!(idle(0, 0, false, IDLE_GRACE_TICKS), "none came");
    }

    /// What lets a control that restarts at once take its tenant over:
    /// the old connection is seen closed even before the loop read it.
    #[test]
    fn a_closed_connection_is_seen_hung_up_and_an_open_one_is_not() {
        let (a, b) = super::super::fdpass::pair().unwrap();
        wire::send(a.as_fd(), b"HELLO", &[]).unwrap();
        assert!(!hung_up(&b), "unread data is not a hang-up");
        drop(a);
        assert!(hung_up(&b));
    }
}
