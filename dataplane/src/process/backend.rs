//! Choosing the wire: AF_XDP on the uplink interfaces when they and our
//! privileges allow it, plain UDP sockets otherwise. Handshakes always use
//! the UDP sockets (the XDP program passes them to the kernel); with AF_XDP
//! the transport messages bypass the kernel's UDP stack both ways.
//!
//! The choice is per uplink: an uplink where another XDP program is attached
//! (see [`crate::xdp::foreign_program`]), or where attaching failed, stays
//! on the UDP sockets, which carry every transport message that does not
//! arrive through an AF_XDP socket and send every one whose route leaves
//! through an interface without one. Which uplinks are tried is
//! [`super::uplinks`]' business; [`XdpUplinks`] attaches them one at a time
//! as they become wanted, and [`PortDealer`] hands their sockets to the
//! workers. Both live in the data plane when the uplinks are named
//! (`WIRESPEED_XDP_IFACES`, all attached before the sandbox); when they
//! follow the peers, `XdpUplinks` lives in the XDP attacher process
//! ([`super::attacher`]) and the sockets cross over to the dealer. The
//! host data plane's lives in its attacher either way.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::xdp::XdpSteering;
use crate::xsk::{XskHandover, XskMode, XskOptions, XskSocket};

/// What the operator asked for (`--backend`, WIRESPEED_BACKEND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// AF_XDP if it can be set up, else UDP; the choice and the reason are logged.
    Auto,
    /// AF_XDP or fail.
    Xdp,
    /// UDP sockets only.
    Udp,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "xdp" | "af_xdp" => Ok(BackendChoice::Xdp),
            "udp" => Ok(BackendChoice::Udp),
            _ => Err(format!("unknown backend {s:?} (auto, xdp or udp)")),
        }
    }
}

/// One AF_XDP socket a worker owns.
pub struct XdpPort {
    pub sock: XskSocket,
    pub ifindex: u32,
}

/// AF_XDP sockets the supervisor hands to one worker while it runs; the
/// worker appends them to its own between two turns of its loop.
#[derive(Default)]
pub struct PortInbox {
    pending: AtomicBool,
    ports: Mutex<Vec<XdpPort>>,
}

impl PortInbox {
    fn put(&self, port: XdpPort) {
        self.ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(port);
        self.pending.store(true, Ordering::Release);
    }

    /// Worker: the sockets handed over since the last call (one atomic load
    /// when there are none).
    #[inline]
    pub fn take(&self) -> Option<Vec<XdpPort>> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(std::mem::take(
            &mut *self.ports.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Deals AF_XDP sockets to the workers' inboxes in turn, mapping each
/// into this process first (the data plane's side of [`Attached`]).
pub struct PortDealer {
    pub inboxes: Vec<Arc<PortInbox>>,
    next: usize,
}

impl PortDealer {
    pub fn new(workers: usize) -> PortDealer {
        PortDealer {
            inboxes: (0..workers.max(1)).map(|_| Arc::default()).collect(),
            next: 0,
        }
    }

    /// Sockets dealt so far (a count that only grows).
    pub fn dealt(&self) -> usize {
        self.next
    }

    /// Maps the uplink's sockets here and gives them to the workers, then
    /// logs the uplink's line (so that line in the log means the workers
    /// have the sockets). A socket that cannot be mapped is closed, which
    /// takes it out of the XDP program's socket map: its queue's transport
    /// messages then reach the UDP sockets.
    pub fn deal(&mut self, uplink: Attached) {
        let mut dealt = 0;
        for h in uplink.sockets {
            let (ifindex, queue) = (h.ifindex(), h.queue());
            match h.adopt() {
                Ok(sock) => {
                    self.inboxes[self.next % self.inboxes.len()].put(XdpPort { sock, ifindex });
                    self.next += 1;
                    dealt += 1;
                }
                Err(e) => log::warn!(
                    "AF_XDP socket on interface {ifindex} queue {queue}: cannot map it ({e}); \
                     that queue stays on UDP"
                ),
            }
        }
        if dealt > 0 {
            log::info!("{}", uplink.summary);
        } else {
            log::warn!(
                "uplink {}: UDP sockets, not AF_XDP (none of its AF_XDP sockets could be mapped)",
                uplink.iface
            );
        }
    }
}

/// One uplink just attached: its AF_XDP sockets, made but not yet mapped
/// by the process whose workers use them, and the line saying so.
#[derive(Debug)]
pub struct Attached {
    pub iface: String,
    pub sockets: Vec<XskHandover>,
    pub summary: String,
}

/// The XDP programs attached so far (held for the data plane's lifetime:
/// dropping one detaches it, and only ours are ever detached). Their
/// sockets go to whoever asked ([`Attached`]): the data plane's workers
/// directly, or across from the attacher process (`super::attacher`).
pub struct XdpUplinks {
    choice: BackendChoice,
    port: u16,
    /// UDP GSO works here: with it, UDP sockets beat copy-mode AF_XDP.
    udp_gso: bool,
    pub programs: Vec<XdpSteering>,
    /// Uplinks attached, or tried and left to the UDP sockets: each is tried
    /// once (a foreign program does not go away by asking again).
    tried: HashSet<String>,
    /// auto found copy-mode AF_XDP only, where UDP with GSO is faster:
    /// nothing more is attached.
    given_up: bool,
    locals: Vec<IpAddr>,
}

impl XdpUplinks {
    /// Nothing attached yet; `choice` is auto or xdp.
    pub fn new(choice: BackendChoice, port: u16, udp_gso: bool) -> XdpUplinks {
        XdpUplinks {
            choice,
            port,
            udp_gso,
            programs: Vec::new(),
            tried: HashSet::new(),
            given_up: false,
            locals: Vec::new(),
        }
    }

    /// Whether AF_XDP carries (or may yet carry) transport messages.
    pub fn active(&self) -> bool {
        !self.given_up
    }

    /// Attaches to each uplink of `wanted` not tried before. An uplink that
    /// cannot be had stays on the UDP sockets, with the reason in the log;
    /// with `strict` (the operator forced AF_XDP and this is the start) an
    /// error other than another program's presence fails instead. Returns
    /// the uplinks attached.
    pub fn add(&mut self, wanted: &[String], strict: bool) -> io::Result<Vec<Attached>> {
        let mut added = Vec::new();
        for iface in wanted {
            if self.given_up || !self.tried.insert(iface.clone()) {
                continue;
            }
            match self.attach(iface) {
                Ok(Some(a)) => added.push(a),
                Ok(None) => {}
                Err(e) if crate::xdp::foreign_program(&e).is_some() => log::info!(
                    "uplink {iface}: UDP sockets, not AF_XDP ({e}; \
                     wirespeed does not chain XDP programs)"
                ),
                Err(e) if strict => return Err(e),
                Err(e) => log::info!("uplink {iface}: UDP sockets, not AF_XDP ({e})"),
            }
        }
        Ok(added)
    }

    /// One uplink: the program, one AF_XDP socket per receive queue, the
    /// sockets to go to the workers. None when auto decided for UDP
    /// instead.
    fn attach(&mut self, iface: &str) -> io::Result<Option<Attached>> {
        let mut prog = XdpSteering::attach(iface, &[self.port])?;
        for stale in prog.removed_stale() {
            log::info!(
                "uplink {iface}: replaced a stale XDP program of ours (id {}, {} mode)",
                stale.id,
                stale.mode
            );
        }
        if let Err(e) = prog.set_local_addresses(&self.locals) {
            log::warn!("uplink {iface}: {e}");
        }
        let queues = rx_queues(iface);
        let mut socks = Vec::new();
        for q in 0..queues {
            let sock =
                XskHandover::create(prog.ifindex(), q, XskOptions::default()).map_err(|e| {
                    io::Error::new(e.kind(), format!("AF_XDP socket on {iface} queue {q}: {e}"))
                })?;
            prog.set_socket(q, std::os::fd::AsRawFd::as_raw_fd(&sock))?;
            socks.push(sock);
        }
        let copy_only = socks.iter().all(|s| s.mode() == XskMode::Copy);
        if self.choice == BackendChoice::Auto
            && self.programs.is_empty()
            && copy_only
            && self.udp_gso
        {
            // Measured on veth (README, "Choosing the backend"): copy-mode
            // AF_XDP builds one socket buffer per frame each way, while
            // UDP with GSO/GRO moves a train of up to 64 datagrams per
            // buffer, and carried a TCP stream 1.0-1.4x faster. Dropping
            // the program detaches it again.
            self.given_up = true;
            log::info!(
                "backend: UDP sockets with GSO/GRO (AF_XDP binds in copy mode only \
                 on these uplinks, and UDP with GSO measured faster there)",
            );
            return Ok(None);
        }
        let mode = socks.first().map(|s| s.mode().to_string());
        let summary = format!(
            "backend: AF_XDP on {iface} ({:?} mode XDP, {} AF_XDP, {queues} queue{})",
            prog.mode(),
            mode.unwrap_or_default(),
            if queues == 1 { "" } else { "s" }
        );
        self.programs.push(prog);
        Ok(Some(Attached {
            iface: iface.to_owned(),
            sockets: socks,
            summary,
        }))
    }

    /// The host's addresses changed: steer for exactly `locals` from now on.
    pub fn set_local_addresses(&mut self, locals: Vec<IpAddr>) {
        for p in &mut self.programs {
            if let Err(e) = p.set_local_addresses(&locals) {
                log::warn!("uplink {}: {e}", p.iface());
            }
        }
        self.locals = locals;
    }

    /// Steers `port` too (a host data plane's new tenant).
    pub fn add_port(&mut self, port: u16) -> io::Result<()> {
        for p in &mut self.programs {
            p.add_port(port)?;
        }
        Ok(())
    }

    /// Steers `port` no more (a host data plane's tenant went).
    pub fn remove_port(&mut self, port: u16) -> io::Result<()> {
        for p in &mut self.programs {
            p.remove_port(port)?;
        }
        Ok(())
    }

    /// The listen port changed: steer the new one instead.
    pub fn change_port(&mut self, old: u16, new: u16) -> io::Result<()> {
        self.port = new;
        for p in &mut self.programs {
            p.add_port(new)?;
            if old != new {
                p.remove_port(old)?;
            }
        }
        Ok(())
    }
}

/// Receive queues of `iface` (one AF_XDP socket each), at least 1.
pub fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}
