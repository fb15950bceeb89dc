//! The control process behind `wirespeed IFACE`: owns the static key, the
//! device state machine, the UAPI socket and the TUN interface, runs the
//! data plane as a child process and talks to it through shared memory.
//! Restarted while the data plane still runs, it re-attaches to it (see
//! `reattach.rs`).

mod allowed_pub;
mod child;
mod commands;
pub mod detach;
mod host;
mod iface;
mod keysync;
mod outputs;
mod pidfd;
mod reattach;
mod seen;
mod uapi_impl;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dataplane::consts::DEFAULT_MTU;
use dataplane::shm::events::ToControl;
use dataplane::shm::layout::{MAX_KEY_SLOT_BITS, RECORD_SIZE};
use dataplane::shm::{monotonic_ns, region_path, Region};
use dataplane::tun::Tun;

use iface::{Change, Interface};

use crate::device::{Activity, Device, DeviceSettings};
use crate::metrics::MetricsServer;
use crate::uapi::server::{UapiCall, UapiServer};

use child::{DataplaneChild, Supervision};
use commands::Commands;
use host::{HostLink, Plane};
use keysync::{KeySync, PeerSlots};
use reattach::{Attached, Orphans};

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::Relaxed);
}

/// Log verbosity, from `-v` or the environment.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum LogLevel {
    Error,
    Info,
    Debug,
}

impl LogLevel {
    /// The name `LOG_LEVEL` and the data plane's command line know it by.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

pub struct Options {
    pub iface: String,
    pub log: LogLevel,
    pub workers: usize,
    /// "auto", "xdp" or "udp", passed to the data plane.
    pub backend: String,
    /// Where to serve Prometheus metrics (`--metrics`, WIRESPEED_METRICS).
    pub metrics: Option<SocketAddr>,
}

pub struct Daemon {
    iface: String,
    log: LogLevel,
    dev: Device,
    region: Region,
    shm_path: PathBuf,
    slots: PeerSlots,
    keys: KeySync,
    /// The local address each authenticated endpoint last wrote to, so
    /// replies leave from it (multi-homed hosts).
    sources: HashMap<SocketAddr, IpAddr>,
    seen: seen::Seen,
    allowed_pub: allowed_pub::AllowedPublisher,
    listen_port: u16,
    fwmark: u32,
    /// Followed by its fd wherever it is moved.
    tun: Interface,
    wake: OwnedFd,
    child: Plane,
    /// Serves until the daemon is dropped.
    metrics: Option<MetricsServer>,
    /// Commands for the data plane, and those waiting for room.
    commands: Commands,
    /// After a re-attach: peers of the region the configuration has not
    /// named again yet.
    orphans: Orphans,
}

pub fn now() -> Duration {
    Duration::from_nanos(monotonic_ns())
}

impl Daemon {
    pub fn log(&self, level: LogLevel, msg: impl AsRef<str>) {
        if level <= self.log {
            eprintln!("wirespeed({}): {}", self.iface, msg.as_ref());
        }
    }

    /// Creates the interface, the shared region and the data plane, or
    /// re-attaches to those a previous control process left running; returns
    /// once all are ready (so a detaching parent can exit then).
    pub fn start(opts: Options) -> io::Result<(Daemon, UapiServer)> {
        // SAFETY: async-signal-safe handlers that only store an atomic.
        unsafe {
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        detach::install_handler();
        let shm_path = region_path(&opts.iface)?;
        let iface = opts.iface.clone();
        let log = |level: LogLevel, msg: String| {
            if level <= opts.log {
                eprintln!("wirespeed({iface}): {msg}");
            }
        };
        // A host data plane that answers (or one WIRESPEED_DATAPLANE=host
        // starts) takes the interface as a tenant.
        let link = HostLink::connect(opts.workers, &opts.backend, opts.log)
            .map_err(|e| io::Error::new(e.kind(), format!("host data plane: {e}")))?;
        let link = match link {
            Some(mut link) => match Region::adopt(&shm_path) {
                Ok(Some(region)) => match link.reattach(&opts.iface, &region) {
                    Ok((queue, wake)) => {
                        let pid = link.pid().unwrap_or(0);
                        let a = Attached {
                            region,
                            queue,
                            dataplane_pid: pid,
                            dataplane_pidfd: pidfd::open(pid)?,
                            wake: Some(wake),
                            host: Some(link),
                        };
                        return Self::start_attached(opts, shm_path, a);
                    }
                    Err(e) => {
                        let served_by = region.header().dataplane_pid.load(Ordering::Acquire);
                        region.leave();
                        if served_by == link.host_pid() {
                            // Its queues are the host's tenants': the own
                            // data plane's re-attach below must not take one.
                            return Err(io::Error::new(
                                e.kind(),
                                format!("cannot re-attach to the host data plane: {e}"),
                            ));
                        }
                        log(
                            LogLevel::Info,
                            format!("the host data plane does not serve this region ({e})"),
                        );
                        // Perhaps a data plane of its own does (below).
                        Some(link)
                    }
                },
                _ => Some(link),
            },
            None => None,
        };
        match reattach::reattach(&opts.iface, &shm_path, &log)? {
            Some(a) => Self::start_attached(opts, shm_path, a),
            None => Self::start_fresh(opts, shm_path, link),
        }
    }

    fn start_fresh(
        opts: Options,
        shm_path: PathBuf,
        link: Option<HostLink>,
    ) -> io::Result<(Daemon, UapiServer)> {
        let (tun, queue) = Tun::create(&opts.iface)?;
        tun.set_mtu(DEFAULT_MTU as u32)?;
        // TCP segmentation and checksum offload: local TCP hands the TUN
        // 64 KiB super-packets that the workers cut up, instead of one
        // packet (and one read) per segment. Offload bugs exist in some
        // kernels, so WIRESPEED_TUN_OFFLOAD=off turns it off; a kernel that
        // refuses just leaves it off. Set before detaching: the ioctl needs
        // an attached queue.
        if dataplane::offload::wanted_by_env() {
            if let Err(e) = queue.set_offload(true) {
                eprintln!("wirespeed({}): TUN offloads unavailable: {e}", opts.iface);
            }
        }
        // Keeps the interface alive across data plane restarts without
        // taking a share of its packets.
        queue.detach()?;
        // Only now that the interface and the socket are ours: a refused
        // start must not touch another instance's region.
        let uapi = UapiServer::bind(&opts.iface)?;
        // Removed again when `region` is dropped, on every path out of here.
        let region = Region::create_exclusive(&shm_path)
            .map_err(|e| io::Error::new(e.kind(), format!("shared memory region: {e}")))?;
        let h = region.header();
        h.control_pid.store(std::process::id(), Ordering::Release);
        h.mtu.store(DEFAULT_MTU as u32, Ordering::Relaxed);
        let wake = reattach::new_eventfd()?;
        let metrics = start_metrics(&opts, &shm_path)?;
        let iface = Interface::new(queue)?;
        let child = match link {
            Some(mut link) => {
                link.attach(&opts.iface, &shm_path, &wake, &region, iface.queue())
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("attaching to the host data plane: {e}"))
                    })?;
                Plane::Host(link)
            }
            None => Plane::Own(DataplaneChild::spawn(
                &opts.iface,
                &shm_path,
                opts.workers,
                &opts.backend,
                opts.log,
                wake.as_raw_fd(),
                &region,
                iface.queue(),
            )?),
        };
        let d = Daemon::assemble(opts, region, shm_path, iface, wake, child, metrics);
        d.log(
            LogLevel::Info,
            format!(
                "interface created, {} pid {}",
                match d.child {
                    Plane::Own(_) => "data plane",
                    Plane::Host(_) => "attached to the host data plane,",
                },
                d.child.pid().unwrap_or(0)
            ),
        );
        d.log_metrics();
        Ok((d, uapi))
    }

    /// Takes over what a killed control process left: the data plane goes
    /// on forwarding throughout, and the sessions resume as the
    /// configuration names their peers again.
    fn start_attached(
        opts: Options,
        shm_path: PathBuf,
        a: Attached,
    ) -> io::Result<(Daemon, UapiServer)> {
        // Whatever can fail comes before the region names us: until then a
        // refused start leaves the data plane as it found it (still waiting
        // for a successor, after a planned detach), and its file with it.
        let ready = || -> io::Result<_> {
            let uapi = UapiServer::bind(&opts.iface)?;
            let metrics = start_metrics(&opts, &shm_path)?;
            let wake = match a.wake {
                Some(w) => w,
                None => {
                    eprintln!(
                        "wirespeed({}): cannot share the running data plane's wake-up eventfd; \
                         polling its events every 100 ms until it restarts",
                        opts.iface
                    );
                    reattach::new_eventfd()?
                }
            };
            Ok((uapi, metrics, wake, Interface::new(a.queue)?))
        };
        let (uapi, metrics, wake, iface) = match ready() {
            Ok(r) => r,
            Err(e) => {
                a.region.leave();
                return Err(e);
            }
        };
        let h = a.region.header();
        let handed_over = h.control_detached.load(Ordering::Acquire);
        // The data plane takes a live control_pid as a sign to keep going
        // once its keys expire, and to leave the region's file to us.
        h.control_pid.store(std::process::id(), Ordering::Release);
        a.region.clear_detached();
        let child = match a.host {
            Some(link) => Plane::Host(link),
            None => Plane::Own(DataplaneChild::adopted(
                a.dataplane_pid,
                a.dataplane_pidfd,
                opts.workers,
                &opts.backend,
                opts.log,
            )),
        };
        let orphans = Orphans::scan(&a.region);
        let mut d = Daemon::assemble(opts, a.region, shm_path, iface, wake, child, metrics);
        d.slots = PeerSlots::with_reserved(orphans.slots());
        d.listen_port = d.region.header().listen_port.load(Ordering::Relaxed) as u16;
        d.fwmark = d.region.header().fwmark.load(Ordering::Relaxed);
        d.log(
            LogLevel::Info,
            format!(
                "re-attached to the running data plane, pid {}{}; sessions of {} peer(s) \
                 resume as the configuration names them again",
                a.dataplane_pid,
                match handed_over {
                    0 => String::new(),
                    pid => format!(", handed over by control {pid}"),
                },
                orphans.len()
            ),
        );
        d.orphans = orphans;
        d.log_metrics();
        Ok((d, uapi))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        opts: Options,
        region: Region,
        shm_path: PathBuf,
        tun: Interface,
        wake: OwnedFd,
        child: Plane,
        metrics: Option<MetricsServer>,
    ) -> Daemon {
        let unix_at_zero = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(now());
        let settings = DeviceSettings {
            mtu: DEFAULT_MTU as usize,
            transport_in_dataplane: true,
            index_slot_bits: Some(MAX_KEY_SLOT_BITS),
            ..Default::default()
        };
        let mut dev = Device::new(unix_at_zero, Box::new(rand_core::OsRng), settings);
        // New indices only name key slots the data plane has (a region
        // adopted after a restart may have grown past the minimum).
        dev.set_index_slots(region.key_slots());
        Daemon {
            iface: opts.iface,
            log: opts.log,
            dev,
            region,
            shm_path,
            slots: PeerSlots::default(),
            keys: KeySync::default(),
            sources: HashMap::new(),
            seen: seen::Seen::default(),
            allowed_pub: allowed_pub::AllowedPublisher::default(),
            listen_port: 0,
            fwmark: 0,
            tun,
            wake,
            child,
            metrics,
            commands: Commands::default(),
            orphans: Orphans::default(),
        }
    }

    fn log_metrics(&self) {
        if let Some(m) = &self.metrics {
            self.log(
                LogLevel::Info,
                format!("metrics on http://{}/metrics", m.local_addr()),
            );
        }
    }

    /// Serves until SIGTERM/SIGINT, the UAPI socket is removed, or the
    /// interface is deleted (all of which tear everything down), or until
    /// SIGUSR2, which leaves it all to the next control (`detach.rs`).
    pub fn run(mut self, uapi: UapiServer) -> io::Result<()> {
        let (tx, requests) = std::sync::mpsc::channel::<UapiCall>();
        let wake = self.wake.try_clone()?;
        let tx = std::sync::Mutex::new(tx);
        let uapi = uapi.spawn_with(move |request| {
            let (reply, answer) = std::sync::mpsc::channel();
            tx.lock().ok()?.send(UapiCall { request, reply }).ok()?;
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe {
                libc::write(
                    wake.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
            answer.recv().ok()
        })?;
        let mut last_poll = Duration::ZERO;
        let mut last_check = Duration::ZERO;
        loop {
            if TERMINATE.load(Ordering::Relaxed) {
                self.log(LogLevel::Info, "terminating on signal");
                break;
            }
            if detach::requested() {
                if self.can_detach() {
                    // No configuration change may land after the last
                    // state is handed over; those already asked are answered.
                    drop(uapi);
                    while let Ok(call) = requests.try_recv() {
                        call.respond(&mut self);
                    }
                    self.detach();
                    return Ok(());
                }
                self.log(
                    LogLevel::Error,
                    "asked to detach, but no data plane runs to keep the interface; stopping",
                );
                break;
            }
            let t = now();
            let wait = self
                .dev
                .next_deadline()
                .map(|d| d.saturating_sub(t))
                .unwrap_or(Duration::MAX);
            self.wait(wait.min(Duration::from_millis(100)));
            let t = now();
            self.region
                .header()
                .control_heartbeat_ns
                .store(t.as_nanos() as u64, Ordering::Relaxed);
            while let Ok(call) = requests.try_recv() {
                call.respond(&mut self);
            }
            // What found the command rings full goes before anything new.
            self.commands.retry(&self.region);
            if let Some(line) = self.commands.log_line(t) {
                self.log(LogLevel::Error, line);
            }
            self.drain_events();
            if t.saturating_sub(last_poll) >= Duration::from_millis(100) {
                last_poll = t;
                self.poll_activity();
            }
            let mut out = Vec::new();
            self.dev.update_timers(now(), &mut out);
            self.apply(out, None);
            if t.saturating_sub(last_check) >= Duration::from_millis(500) {
                last_check = t;
                if !uapi.socket_exists() {
                    self.log(LogLevel::Info, "UAPI socket removed; exiting");
                    break;
                }
                if !self.watch_interface() {
                    break;
                }
            }
            self.supervise_dataplane();
            if self.orphans.expired(t) {
                self.drop_orphans();
            }
        }
        drop(uapi);
        self.child.stop();
        // The region's file goes when `self.region` is dropped.
        Ok(())
    }

    /// Restarts a data plane that died, with back-off; never fatal.
    fn supervise_dataplane(&mut self) {
        let seen = self.child.supervise(
            &self.iface,
            &self.shm_path,
            &self.wake,
            &self.region,
            self.tun.queue(),
        );
        for s in seen {
            match s {
                Supervision::Exited(how) => self.log(
                    LogLevel::Error,
                    format!("data plane exited ({how}); restarting it"),
                ),
                Supervision::Restarted(pid) => {
                    self.log(LogLevel::Info, format!("data plane restarted, pid {pid}"))
                }
                Supervision::StartFailed { error, retry_in } => self.log(
                    LogLevel::Error,
                    format!(
                        "data plane restart failed ({error}); trying again in {:.1} s",
                        retry_in.as_secs_f64()
                    ),
                ),
            }
        }
    }

    /// Notices the interface moved between namespaces (it keeps serving
    /// it) or deleted (false: time to exit). While it lives in another
    /// namespace the data plane cannot read its MTU there, so this does.
    fn watch_interface(&mut self) -> bool {
        match self.tun.check() {
            Some(Change::Deleted) => {
                self.log(LogLevel::Info, "interface deleted; exiting");
                return false;
            }
            Some(Change::Moved {
                name, home: true, ..
            }) => self.log(
                LogLevel::Info,
                format!("interface {name} is back in this network namespace"),
            ),
            Some(Change::Moved { name, netns, .. }) => self.log(
                LogLevel::Info,
                format!(
                    "interface is now {name} in network namespace {netns} (inode); \
                     its UDP sockets, XDP program and AF_XDP queues stay here"
                ),
            ),
            None => {}
        }
        if self.tun.away() {
            if let Ok(m) = self.tun.mtu() {
                self.region.header().mtu.store(m, Ordering::Relaxed);
            }
        }
        true
    }

    /// Sleeps until the data plane or the UAPI thread signals the eventfd,
    /// or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let mut fd = libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(1000) as i32;
        // SAFETY: poll reads and writes exactly the one pollfd we pass.
        if unsafe { libc::poll(&mut fd, 1, ms) } > 0 {
            let mut buf = [0u8; 8];
            // SAFETY: reads the 8-byte eventfd counter into a live buffer.
            unsafe { libc::read(fd.fd, buf.as_mut_ptr() as *mut libc::c_void, 8) };
        }
    }

    /// Events the data plane's workers pushed.
    fn drain_events(&mut self) {
        let workers = self.region.workers();
        let mut rec = [0u8; RECORD_SIZE];
        for w in 0..workers {
            // Bounded per pass so a handshake flood cannot starve the UAPI.
            for _ in 0..4096 {
                let Some(n) = self.region.ring_to_control(w).pop(&mut rec) else {
                    break;
                };
                if let Some(ev) = ToControl::decode(&rec[..n]) {
                    self.on_event(ev);
                }
            }
        }
    }

    fn on_event(&mut self, ev: ToControl) {
        let t = now();
        let mut out = Vec::new();
        match ev {
            ToControl::Handshake {
                from,
                local,
                datagram,
            } => {
                let r = self.dev.handle_datagram(t, from, &datagram, &mut out);
                match r {
                    // Not for a cookie reply: a spoofed flood would fill
                    // the table with its sources and keep it full.
                    Ok(()) if outputs::authenticated(&out) => {
                        if let Some(l) = local {
                            if self.sources.len() < 1 << 16 {
                                self.sources.insert(from, l);
                            }
                        }
                    }
                    Ok(()) => {}
                    Err(d) => self.log(
                        LogLevel::Debug,
                        format!("dropped handshake message from {from}: {d:?}"),
                    ),
                }
                self.apply(out, local.map(|l| (from, l)));
            }
            ToControl::HandshakeNeeded { peer } => {
                if let Some(id) = self.slots.peer(peer) {
                    self.dev.request_handshake(id, t, &mut out);
                    self.apply(out, None);
                }
            }
            ToControl::EndpointMoved {
                peer,
                endpoint,
                local,
            } => {
                if let Some(id) = self.slots.peer(peer) {
                    match local {
                        Some(l) => self.sources.insert(endpoint, l),
                        None => self.sources.remove(&endpoint),
                    };
                    self.dev.set_endpoint(id, endpoint, &mut out);
                    // The local address may have changed with the same
                    // remote one, which the device does not track.
                    let src = self.sources.get(&endpoint).copied();
                    keysync::publish_endpoint(&self.region, &self.slots, id, Some(endpoint), src);
                    self.apply(out, None);
                }
            }
            ToControl::SessionConfirmed { peer, local_index } => {
                if let Some(id) = self.slots.peer(peer) {
                    self.dev.confirm_session(id, local_index, t, &mut out);
                    self.apply(out, None);
                }
            }
        }
    }

    /// Turns the data plane's per-peer timestamps into timer events.
    fn poll_activity(&mut self) {
        let t = now();
        // For the metrics endpoint, which reads only the region: the
        // figures of the peers that changed, not of every peer each time.
        for id in self.dev.take_changed_peers() {
            if let (Some(p), Some(slot)) = (self.dev.peer(id), self.slots.slot(id)) {
                let hs = p.last_handshake.map_or(0, |d| d.as_nanos() as u64);
                self.region
                    .peer_info(slot as usize)
                    .set_control_figures(hs, p.rx_bytes, p.tx_bytes);
            }
        }
        let mut out = Vec::new();
        for slot in 0..self.slots.end() {
            let Some(id) = self.slots.peer(slot) else {
                continue;
            };
            let c = self.region.peer(slot as usize).counters();
            let prev = self.seen.swap(slot, id, &c);
            // A time from the future (the data plane's word) would hold
            // timers off; it counts as now.
            let now_ns = t.as_nanos() as u64;
            let newer = |a: u64, b: u64| (a > b).then(|| Duration::from_nanos(a.min(now_ns)));
            let a = Activity {
                tx_auth: newer(c.last_tx_auth_ns, prev.last_tx_auth_ns),
                tx_data: newer(c.last_tx_data_ns, prev.last_tx_data_ns),
                rx_auth: newer(c.last_rx_auth_ns, prev.last_rx_auth_ns),
                rx_data: newer(c.last_rx_data_ns, prev.last_rx_data_ns),
            };
            if a != Activity::default() {
                self.dev.note_activity(id, t, a, &mut out);
            }
        }
        self.apply(out, None);
    }
}

/// Before the data plane starts: a taken port fails the start cleanly.
fn start_metrics(opts: &Options, shm_path: &std::path::Path) -> io::Result<Option<MetricsServer>> {
    match opts.metrics {
        Some(addr) => match MetricsServer::start(addr, shm_path, &opts.iface) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                let msg = format!("metrics endpoint on {addr}: {e}");
                Err(io::Error::new(e.kind(), msg))
            }
        },
        None => Ok(None),
    }
}
