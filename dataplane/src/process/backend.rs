//! Choosing the wire: AF_XDP on the uplink interfaces when they and our
//! privileges allow it, plain UDP sockets otherwise. Handshakes always use
//! the UDP sockets (the XDP program passes them to the kernel); with AF_XDP
//! the transport messages bypass the kernel's UDP stack both ways.

use std::io;

use crate::xdp::XdpSteering;
use crate::xsk::{XskOptions, XskSocket};

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

/// The XDP programs (held for the data plane's lifetime: dropping one
/// detaches it) and each worker's sockets.
pub struct XdpSetup {
    pub programs: Vec<XdpSteering>,
    pub per_worker: Vec<Vec<XdpPort>>,
    pub description: String,
}

fn sys(iface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Interfaces to steer on: WIRESPEED_XDP_IFACES if set, else every
/// Ethernet interface that is up and is not a bridge or our own TUN.
fn uplinks(own_iface: &str) -> Vec<String> {
    if let Ok(list) = std::env::var("WIRESPEED_XDP_IFACES") {
        return list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != own_iface && n != "lo")
        .filter(|n| sys(n, "type").as_deref() == Some("1"))
        // Administratively up (IFF_UP): the carrier may flap, e.g. while
        // XDP is attached to the other end of a veth.
        .filter(|n| {
            sys(n, "flags")
                .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                .is_some_and(|f| f & 1 != 0)
        })
        .filter(|n| !std::path::Path::new(&format!("/sys/class/net/{n}/bridge")).exists())
        .collect();
    v.sort();
    v
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

/// Attaches the steering program to every uplink and opens one AF_XDP
/// socket per receive queue, spread over `workers`.
pub fn setup_xdp(own_iface: &str, workers: usize, port: u16) -> io::Result<XdpSetup> {
    let ifaces = uplinks(own_iface);
    if ifaces.is_empty() {
        return Err(io::Error::other(
            "no Ethernet uplink interface to attach XDP to",
        ));
    }
    let mut programs = Vec::new();
    let mut per_worker: Vec<Vec<XdpPort>> = (0..workers).map(|_| Vec::new()).collect();
    let mut parts = Vec::new();
    let mut next = 0usize;
    for iface in &ifaces {
        let mut prog = XdpSteering::attach(iface, &[port])?;
        let queues = rx_queues(iface);
        let mut mode = None;
        for q in 0..queues {
            let sock = XskSocket::new(prog.ifindex(), q, XskOptions::default()).map_err(|e| {
                io::Error::new(e.kind(), format!("AF_XDP socket on {iface} queue {q}: {e}"))
            })?;
            prog.set_socket(q, std::os::fd::AsRawFd::as_raw_fd(&sock))?;
            mode = Some(sock.mode());
            per_worker[next % workers].push(XdpPort {
                ifindex: prog.ifindex(),
                sock,
            });
            next += 1;
        }
        parts.push(format!(
            "{iface} ({:?} mode XDP, {} AF_XDP, {queues} queue{})",
            prog.mode(),
            mode.map(|m| m.to_string()).unwrap_or_default(),
            if queues == 1 { "" } else { "s" }
        ));
        programs.push(prog);
    }
    Ok(XdpSetup {
        programs,
        per_worker,
        description: format!("AF_XDP on {}", parts.join(", ")),
    })
}

impl XdpSetup {
    /// The listen port changed: steer the new one instead.
    pub fn change_port(&mut self, old: u16, new: u16) -> io::Result<()> {
        for p in &mut self.programs {
            p.add_port(new)?;
            if old != new {
                p.remove_port(old)?;
            }
        }
        Ok(())
    }
}
