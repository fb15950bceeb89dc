//! The I/O ceiling: the data plane's own AF_XDP receive path (the steering
//! program, one socket per queue, a pinned thread per socket, the same
//! batch and poll pattern) writing each message's inner packet to a TUN
//! queue, with no key lookup, no crypto and no replay window. Whatever rate
//! this reaches, the data plane's workers cannot beat.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use dataplane::frame::parse_udp_frame;
use dataplane::messages::{MSG_TRANSPORT, TAG_LEN, TRANSPORT_HEADER_LEN};
use dataplane::tun::Tun;
use dataplane::xdp::XdpSteering;
use dataplane::xsk::{XskOptions, XskSocket};

const BATCH: usize = 32;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub struct Options {
    /// The uplink to steer on (every receive queue gets a socket).
    pub iface: String,
    /// The TUN interface to create and write to.
    pub tun: String,
    pub port: u16,
    /// Socket thread q runs on `cpus[q % cpus.len()]`.
    pub cpus: Vec<usize>,
}

/// Forwards until SIGINT or SIGTERM.
pub fn run(o: &Options) -> io::Result<()> {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut prog = XdpSteering::attach(&o.iface, &[o.port])?;
    // The program steers only what is addressed to this host.
    prog.set_local_addresses(&dataplane::process::local_addresses())?;
    let queues = dataplane::process::backend::rx_queues(&o.iface);
    let (tun, first) = Tun::create(&o.tun)?;
    tun.set_up()?;
    let mut tun_queues = vec![first];
    for _ in 1..queues {
        tun_queues.push(tun.open_queue()?);
    }
    let mut threads = Vec::new();
    for (q, tq) in (0..queues).zip(tun_queues) {
        let mut sock = XskSocket::new(prog.ifindex(), q, XskOptions::default())?;
        prog.set_socket(q, sock.as_raw_fd())?;
        let cpu = o.cpus.get(q as usize % o.cpus.len().max(1)).copied();
        threads.push(
            std::thread::Builder::new()
                .name(format!("fwd-{q}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        super::pin(c);
                    }
                    while !STOP.load(Ordering::Relaxed) {
                        if !matches!(sock.wait_rx(5), Ok(true)) {
                            continue;
                        }
                        for _ in 0..8 {
                            let n = sock.rx_batch(BATCH, |frame| {
                                let Some(u) = parse_udp_frame(frame.data()) else {
                                    return;
                                };
                                let p = u.payload;
                                if p.len() >= TRANSPORT_HEADER_LEN + TAG_LEN
                                    && p[0] == MSG_TRANSPORT
                                {
                                    let _ = tq.send(&p[TRANSPORT_HEADER_LEN..p.len() - TAG_LEN]);
                                }
                            });
                            if n < BATCH {
                                break;
                            }
                        }
                    }
                })?,
        );
    }
    eprintln!(
        "forwarding {} ({queues} queue(s), {:?} XDP) to {}",
        o.iface,
        prog.mode(),
        tun.name()
    );
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
