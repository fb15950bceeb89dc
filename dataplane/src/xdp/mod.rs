//! The AF_XDP data plane's kernel side: the XDP program that steers
//! WireGuard transport messages into AF_XDP sockets, and its loader.
//!
//! The program (`ebpf/xdp_steer.c`, built by `build.rs`, embedded here)
//! redirects UDP datagrams whose destination port is in `PORTS`, whose
//! destination address is one of this host's (`LOCAL4` / `LOCAL6`) and whose
//! payload is a transport data message (type 4, length >= 32) into
//! `XSKS[rx_queue_index]`; everything else -- handshakes, cookie replies,
//! traffic this host forwards, other traffic, fragments, anything it cannot
//! parse -- is passed to the kernel stack, where the control process's UDP
//! socket receives it (or the kernel forwards it).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use dataplane::xdp::XdpSteering;
//! let mut steering = XdpSteering::attach("eth0", &[51820])?;
//! steering.set_local_addresses(&["192.0.2.1".parse().unwrap()])?;
//! println!("XDP attached in {} mode", steering.mode());
//! # let xsk_fd = 0;
//! steering.set_socket(0, xsk_fd)?; // an AF_XDP socket bound to eth0 queue 0
//! let stats = steering.stats()?;
//! # let _ = stats;
//! # Ok(()) }
//! ```

mod program;

pub use program::{
    action, errno_of, foreign_program, ifindex_of, StaleProgram, XdpAttachMode, XdpStats,
    XdpSteering, LOCAL4_MAP, LOCAL6_MAP, MAX_QUEUES, PORTS_MAP, PROGRAM_NAME, STATS_MAP,
    STAT_MALFORMED, STAT_NOT_LOCAL, STAT_NO_SOCKET, STAT_PASSED, STAT_STEERED, XSKS_MAP,
};

#[cfg(test)]
mod tests;
