//! The attacher's side: attach the uplinks that reach the peers as they
//! come, make their AF_XDP sockets and send them to the data plane, and
//! keep the programs' maps current (ports, local addresses) and their
//! counters published, until the data plane says goodbye or is gone.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;

use super::wire::{self, Msg, Received};
use super::Setup;
use crate::process::backend::{Attached, BackendChoice, XdpUplinks};
use crate::process::{local_addrs, stats, uplinks};
use crate::shm::layout::{BACKEND_UDP, BACKEND_XDP};
use crate::shm::{monotonic_ns, Region};

/// The loop's tick (it waits for the data plane's messages this long).
const TICK_MS: i32 = 10;
/// Ticks between looks at the host's addresses.
const ADDR_TICKS: u64 = 5;
/// Ticks between looks at the peer table for peers that came or moved.
const UPLINK_TICKS: u64 = 25;
const STATS_INTERVAL_NS: u64 = 1_000_000_000;

/// Runs the attacher; the exit status to end with.
pub(super) fn serve(region: &Region, setup: &Setup, sock: BorrowedFd<'_>) -> i32 {
    let h = region.header();
    let mut port = h.bound_port.load(Ordering::Relaxed) as u16;
    let mut x = XdpUplinks::new(setup.choice, port, setup.udp_gso);
    let mut locals = local_addrs::local_addresses();
    let mut addrs = local_addrs::digest(&locals);
    x.set_local_addresses(locals.clone());
    let mut finder = uplinks::UplinkFinder::default();
    let mut watch = uplinks::EndpointsWatch::default();
    watch.changed(region);
    let peers = uplinks::peer_endpoints(region);
    let mut peers_digest = Some(peers.digest);
    let wanted = finder.uplinks(&setup.iface, &peers, h.fwmark.load(Ordering::Relaxed));
    match x.add(&wanted, setup.choice == BackendChoice::Xdp) {
        Ok(attached) => {
            if let Err(e) = send_all(sock, attached) {
                log::error!("XDP attacher: cannot reach the data plane: {e}");
                return 1;
            }
        }
        Err(e) => {
            let _ = wire::send(sock, &Msg::Failed(e.to_string()), &[]);
            return 1;
        }
    }
    publish(region, &x);
    let active = x.active();
    if wire::send(sock, &Msg::Ready { active }, &[]).is_err() || !active {
        return 0;
    }

    let mut ticks = 0u64;
    let mut next_stats_ns = 0u64;
    loop {
        match wait(sock) {
            Ok(Received::Msg(Msg::Bye, _) | Received::Closed) => break,
            Ok(Received::Msg(m, _)) => log::warn!("XDP attacher: unexpected {m:?}"),
            Ok(Received::Nothing) => {}
            Err(e) => {
                log::error!("XDP attacher: {e}");
                break;
            }
        }
        ticks += 1;
        let now = monotonic_ns();
        if now >= next_stats_ns {
            next_stats_ns = now + STATS_INTERVAL_NS;
            stats::publish_xdp(region, &x.programs);
        }
        if ticks.is_multiple_of(ADDR_TICKS) {
            let now_locals = local_addrs::local_addresses();
            let a = local_addrs::digest(&now_locals);
            if a != addrs {
                addrs = a;
                locals = now_locals;
                x.set_local_addresses(locals.clone());
                // Routes to the peers may have changed with the addresses.
                finder.forget();
                watch.forget();
                peers_digest = None;
            }
        }
        // The data plane bound a new listen port: steer it instead.
        let bound = h.bound_port.load(Ordering::Acquire) as u16;
        if bound != port {
            if let Err(e) = x.change_port(port, bound) {
                log::error!("cannot steer the new port {bound}: {e}");
            }
            port = bound;
        }
        if ticks.is_multiple_of(UPLINK_TICKS) && x.active() && watch.changed(region) {
            let peers = uplinks::peer_endpoints(region);
            if peers_digest != Some(peers.digest) {
                peers_digest = Some(peers.digest);
                let mark = h.fwmark.load(Ordering::Relaxed);
                let wanted = finder.uplinks(&setup.iface, &peers, mark);
                match x.add(&wanted, false) {
                    Ok(attached) if !attached.is_empty() => {
                        if let Err(e) = send_all(sock, attached) {
                            log::error!("XDP attacher: cannot reach the data plane: {e}");
                            break;
                        }
                        publish(region, &x);
                    }
                    Ok(_) => {}
                    Err(e) => log::error!("XDP attacher: {e}"),
                }
            }
        }
    }
    stats::publish_and_log_xdp(region, &x.programs);
    // Dropping the programs detaches them, before the data plane, waiting
    // for this process to end, ends itself.
    drop(x);
    0
}

/// The uplinks' sockets, then the line for each.
pub(super) fn send_all(sock: BorrowedFd<'_>, attached: Vec<Attached>) -> io::Result<()> {
    for a in attached {
        for s in &a.sockets {
            let o = s.options();
            let port = Msg::Port {
                ifindex: s.ifindex(),
                queue: s.queue(),
                frames: o.frames,
                frame_size: o.frame_size,
                ring_size: o.ring_size,
            };
            wire::send(sock, &port, &s.fds())?;
        }
        // Our copies close here; the data plane's keep the sockets.
        let done = Msg::Attached {
            iface: a.iface,
            summary: a.summary,
        };
        wire::send(sock, &done, &[])?;
    }
    Ok(())
}

/// What the data plane's region shows of the uplinks and the backend.
fn publish(region: &Region, x: &XdpUplinks) {
    stats::publish_uplinks(region, &x.programs);
    stats::publish_xdp(region, &x.programs);
    let code = if x.active() && !x.programs.is_empty() {
        BACKEND_XDP
    } else {
        BACKEND_UDP
    };
    region.header().backend.store(code, Ordering::Release);
}

/// Waits up to a tick for a message from the data plane.
pub(super) fn wait(sock: BorrowedFd<'_>) -> io::Result<Received> {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    let n = unsafe { libc::poll(&mut p, 1, TICK_MS) };
    if n <= 0 {
        return Ok(Received::Nothing);
    }
    wire::recv(sock.as_fd(), false)
}
