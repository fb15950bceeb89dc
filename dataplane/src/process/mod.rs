//! The data plane process: started by control (`wirespeed --dataplane`),
//! it attaches to the shared region, opens one TUN queue and one UDP socket
//! per worker, pins each worker to a core and forwards until told to stop,
//! the interface disappears, or control is gone and every key expired.

pub mod backend;
mod keycache;
mod outbox;
mod shared;
mod stats;
mod worker;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::consts::REJECT_AFTER_TIME;
use crate::shm::layout::{BACKEND_UDP, BACKEND_XDP, KEY_SLOTS, MAX_WORKERS};
use crate::shm::{monotonic_ns, Region};
use crate::tun;
use crate::udp::UdpSocketBatch;

pub use backend::BackendChoice;
use shared::Shared;
pub use stats::Stats;
use worker::Worker;

pub struct Options {
    pub iface: String,
    pub shm_path: PathBuf,
    pub workers: usize,
    /// Inherited eventfd to wake control with.
    pub wake_fd: Option<RawFd>,
    pub backend: BackendChoice,
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

/// How often the supervisor copies the XDP programs' counters into the region.
const STATS_INTERVAL_NS: u64 = 1_000_000_000;

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::Relaxed);
}

pub(super) fn log(msg: &str) {
    eprintln!("wirespeed-dataplane[{}]: {msg}", std::process::id());
}

/// Every AF_XDP socket of the setup is in copy mode (the driver offers no
/// zero-copy, as veth and many virtual NICs).
fn copy_mode_only(x: &backend::XdpSetup) -> bool {
    x.per_worker
        .iter()
        .flatten()
        .all(|p| p.sock.mode() == crate::xsk::XskMode::Copy)
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

/// A digest of every local address (interface, family, address): cheap
/// enough to poll, and it changes whenever an address comes or goes.
fn local_addresses_hash() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return 0;
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its size.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            family.hash(&mut h);
            if family == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                sin.sin_addr.s_addr.hash(&mut h);
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                sin6.sin6_addr.s6_addr.hash(&mut h);
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees exactly the list getifaddrs gave us, once.
    unsafe { libc::freeifaddrs(list) };
    h.finish()
}

fn any_live_key(region: &Region) -> bool {
    let now = monotonic_ns();
    (0..KEY_SLOTS).any(|i| {
        region.key(i).read().is_some_and(|(k, _)| {
            now.saturating_sub(k.created_ns) < REJECT_AFTER_TIME.as_nanos() as u64
        })
    })
}

fn control_alive(region: &Region) -> bool {
    let pid = region.header().control_pid.load(Ordering::Relaxed) as libc::pid_t;
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid)
}

/// A killed process its parent has not reaped yet still answers signal 0.
fn is_zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The state follows the command name, which may hold ')'.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
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
    // The control process that started us: if it dies before we exit, the
    // region is ours to remove (a new control for the interface would have
    // put its own pid there).
    let owner = region.header().control_pid.load(Ordering::Acquire);
    // Only one data plane runs at a time: a predecessor's locks are void.
    for i in 0..KEY_SLOTS {
        region.key(i).break_replay_lock();
    }
    // Worker and uplink figures describe this data plane, from zero.
    crate::shm::stats::reset(&region);
    let n = opts.workers.clamp(1, MAX_WORKERS);
    region.header().workers.store(n as u32, Ordering::Release);
    // Read before the first bind: a `wg set listen-port` that bumps it
    // from here on is seen as a change and bound below. Read after, it
    // would count as applied while the sockets hold the port of before
    // (control answers `wg` as soon as we are ready, so that is likely),
    // and handshakes would go to and from the wrong port.
    let mut config_gen = region.header().config_gen.load(Ordering::Acquire);
    let sockets = bind_sockets(&region, n)?;
    let queues = (0..n)
        .map(|_| tun::open_queue(&opts.iface))
        .collect::<io::Result<Vec<_>>>()?;
    if let Ok(m) = tun::mtu(&opts.iface) {
        region.header().mtu.store(m, Ordering::Relaxed);
    }
    let port = region.header().bound_port.load(Ordering::Relaxed) as u16;
    let fwmark = region.header().fwmark.load(Ordering::Relaxed);
    let mut xdp = match opts.backend {
        BackendChoice::Udp => {
            log("backend: UDP sockets (chosen with --backend udp)");
            None
        }
        choice => match backend::setup_xdp(&opts.iface, n, port) {
            Ok(x)
                if choice == BackendChoice::Auto
                    && copy_mode_only(&x)
                    && sockets[0].offloads().0 =>
            {
                // Measured on veth (README, "Choosing the backend"): copy-mode
                // AF_XDP builds one socket buffer per frame each way, while
                // UDP with GSO/GRO moves a train of up to 64 datagrams per
                // buffer, and carried a TCP stream 1.0-1.4x faster. Dropping
                // the setup detaches the XDP program again.
                drop(x);
                log(
                    "backend: UDP sockets with GSO/GRO (AF_XDP binds in copy mode only \
                     on these uplinks, and UDP with GSO measured faster there)",
                );
                None
            }
            Ok(x) => {
                log(&format!("backend: {}", x.description));
                Some(x)
            }
            Err(e) if choice == BackendChoice::Auto => {
                log(&format!("backend: UDP sockets (AF_XDP unavailable: {e})"));
                None
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("AF_XDP backend: {e}"))),
        },
    };
    let backend_code = if xdp.is_some() {
        BACKEND_XDP
    } else {
        BACKEND_UDP
    };
    region
        .header()
        .backend
        .store(backend_code, Ordering::Release);
    if let Some(x) = &xdp {
        stats::publish_uplinks(&region, &x.programs);
    }
    let mut xdp_ports: Vec<Vec<backend::XdpPort>> = match xdp.as_mut() {
        Some(x) => std::mem::take(&mut x.per_worker),
        None => Vec::new(),
    };
    xdp_ports.resize_with(n, Vec::new);
    // SAFETY: control passed this eventfd to us and nothing else owns it.
    let wake = opts.wake_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // Lives as long as the process: workers hold a plain reference, so the
    // per-packet path touches no shared reference count.
    let shared: &'static Shared = Box::leak(Box::new(Shared::new(region, wake)));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    let mut socket_slots: Vec<Arc<Mutex<Option<UdpSocketBatch>>>> = Vec::new();
    for (i, ((sock, q), ports)) in sockets.into_iter().zip(queues).zip(xdp_ports).enumerate() {
        let w = Worker::new(i, shared, sock, q).with_xdp(ports, fwmark);
        socket_slots.push(w.new_socket.clone());
        let core = cores.get(i % cores.len().max(1)).copied();
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    w.run();
                })?,
        );
    }
    let h = shared.region.header();
    h.dataplane_pid.store(std::process::id(), Ordering::Release);
    h.dataplane_ready
        .store(std::process::id(), Ordering::Release);
    log(&format!(
        "{n} workers on {}, UDP port {}",
        opts.iface,
        h.bound_port.load(Ordering::Relaxed)
    ));

    let mut addrs = local_addresses_hash();
    let mut ticks = 0u64;
    let mut next_stats_ns = 0u64;
    h.applied_gen.store(config_gen, Ordering::Release);
    while !TERMINATE.load(Ordering::Relaxed) && !shared.stopping() {
        std::thread::sleep(Duration::from_millis(10));
        ticks += 1;
        let now = monotonic_ns();
        if now >= next_stats_ns {
            next_stats_ns = now + STATS_INTERVAL_NS;
            if let Some(x) = &xdp {
                stats::publish_xdp(&shared.region, &x.programs);
            }
        }
        if ticks % 5 == 0 {
            let a = local_addresses_hash();
            if a != addrs {
                addrs = a;
                shared.addr_gen.fetch_add(1, Ordering::AcqRel);
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
                            log(&format!("cannot steer the new port {new_port}: {e}"));
                        }
                    }
                    for (slot, s) in socket_slots.iter().zip(socks) {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                    }
                    h.bind_errno.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    log(&format!("cannot bind the new listen port: {e}"));
                    h.bind_errno.store(
                        e.raw_os_error().unwrap_or(libc::EIO) as u32,
                        Ordering::Relaxed,
                    );
                }
            }
            h.applied_gen.store(g, Ordering::Release);
        }
        if ticks % 100 == 0 {
            if tun::ifindex(&opts.iface).is_none() {
                log("interface deleted; exiting");
                break;
            }
            if let Ok(m) = tun::mtu(&opts.iface) {
                h.mtu.store(m, Ordering::Relaxed);
            }
            if !control_alive(&shared.region) && !any_live_key(&shared.region) {
                log("control is gone and every session expired; exiting");
                break;
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in handles {
        let _ = t.join();
    }
    if shared.region.header().control_pid.load(Ordering::Acquire) == owner
        && !control_alive(&shared.region)
    {
        // Control was killed and we are the last user: nobody else would
        // ever free this memory (the region's directory is RAM). Only if
        // nobody holds it: a control that restarted meanwhile may own it.
        match shared.region.remove_if_unclaimed(&opts.shm_path) {
            Ok(true) => log("control is gone: removed the shared region"),
            Ok(false) => {}
            Err(e) => log(&format!("cannot remove the shared region: {e}")),
        }
    }
    if let Some(x) = &xdp {
        stats::publish_xdp(&shared.region, &x.programs);
        for p in &x.programs {
            if let Ok(st) = p.stats() {
                log(&format!(
                    "XDP on {}: {} steered, {} passed, {} malformed, {} without socket",
                    p.iface(),
                    st.steered,
                    st.passed,
                    st.malformed,
                    st.no_socket
                ));
            }
        }
    }
    Ok(())
}
