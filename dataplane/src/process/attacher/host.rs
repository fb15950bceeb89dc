//! The host data plane's attacher: holds the uplinks' XDP programs for
//! every tenant at once. It reads no region; the supervisor, which reads
//! the tenants' peer tables, names the uplinks to attach and the ports
//! to steer, and asks for the programs' figures to copy into every
//! tenant's region. It watches the host's addresses itself, as the
//! per-interface attacher does.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::BorrowedFd;

use super::serve::{send_all, wait};
use super::wire::{self, Msg, Received, Uplink};
use crate::process::backend::{BackendChoice, XdpUplinks};
use crate::process::{local_addrs, stats, uplinks};

/// Ticks (of [`wait`]) between looks at the host's addresses.
const ADDR_TICKS: u64 = 5;

struct HostUplinks {
    choice: BackendChoice,
    /// Made at the first Attach, with a port steered then.
    x: Option<XdpUplinks>,
    /// The port the programs were made with: each new one steers it from
    /// the start, and unsteers it if it is steered no more.
    first_port: u16,
    ports: BTreeSet<u16>,
    locals: Vec<std::net::IpAddr>,
    digest: u64,
}

/// Runs the attacher; the exit status to end with.
pub(super) fn serve(choice: BackendChoice, sock: BorrowedFd<'_>) -> i32 {
    let locals = local_addrs::local_addresses();
    let mut h = HostUplinks {
        choice,
        x: None,
        first_port: 0,
        ports: BTreeSet::new(),
        digest: local_addrs::digest(&locals),
        locals,
    };
    let mut ticks = 0u64;
    loop {
        match wait(sock) {
            Ok(Received::Msg(Msg::Bye, _) | Received::Closed) => break,
            Ok(Received::Msg(m, _)) => match h.answer(m, sock) {
                Ok(true) => {}
                // AF_XDP was given up: nothing will be attached, and the
                // supervisor was told.
                Ok(false) => return 0,
                Err(e) => {
                    log::error!("XDP attacher: cannot reach the data plane: {e}");
                    break;
                }
            },
            Ok(Received::Nothing) => {}
            Err(e) => {
                log::error!("XDP attacher: {e}");
                break;
            }
        }
        ticks += 1;
        if ticks.is_multiple_of(ADDR_TICKS) {
            h.refresh_locals();
        }
    }
    // Dropping the programs detaches them, before the data plane, waiting
    // for this process to end, ends itself.
    drop(h);
    0
}

impl HostUplinks {
    /// Does what `m` asks, answering a request; false once AF_XDP was
    /// given up (said with the answer).
    fn answer(&mut self, m: Msg, sock: BorrowedFd<'_>) -> io::Result<bool> {
        match m {
            Msg::Steer(port) => {
                self.ports.insert(port);
                if let Some(x) = &mut self.x {
                    if let Err(e) = x.add_port(port) {
                        log::error!("cannot steer UDP port {port} to AF_XDP: {e}");
                    }
                }
            }
            Msg::Unsteer(port) => {
                self.ports.remove(&port);
                if let Some(x) = &mut self.x {
                    if let Err(e) = x.remove_port(port) {
                        log::error!("cannot stop steering UDP port {port}: {e}");
                    }
                }
            }
            Msg::Report => {
                let programs = self.x.as_ref().map_or(&[][..], |x| &x.programs[..]);
                for r in stats::report(programs) {
                    wire::send(sock, &Msg::Figures(r), &[])?;
                }
                self.ready(sock)?;
            }
            Msg::Attach {
                uplink,
                udp_gso,
                strict,
            } => {
                let iface = match uplink {
                    Uplink::Named(iface) => iface,
                    // A route's interface: one XDP serves, never a tunnel.
                    Uplink::Index(i) => match uplinks::uplink_name(i, "") {
                        Some(iface) => iface,
                        None => return self.ready(sock),
                    },
                };
                if let Err(e) = self.attach(&iface, udp_gso, strict, sock) {
                    wire::send(sock, &Msg::Failed(e.to_string()), &[])?;
                } else {
                    return self.ready(sock);
                }
            }
            other => log::warn!("XDP attacher: unexpected {other:?}"),
        }
        Ok(true)
    }

    fn ready(&self, sock: BorrowedFd<'_>) -> io::Result<bool> {
        let active = self.x.as_ref().is_none_or(XdpUplinks::active);
        wire::send(sock, &Msg::Ready { active }, &[])?;
        Ok(active)
    }

    /// One uplink, its sockets sent, every steered port on its program.
    /// An error of the attacher's own (not the uplink's) fails the call;
    /// what XdpUplinks refuses is logged there and answered as usual.
    fn attach(
        &mut self,
        iface: &str,
        udp_gso: bool,
        strict: bool,
        sock: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let x = match &mut self.x {
            Some(x) => x,
            None => {
                let Some(&port) = self.ports.first() else {
                    return Err(io::Error::other("no port to steer yet"));
                };
                let mut x = XdpUplinks::new(self.choice, port, udp_gso);
                x.set_local_addresses(self.locals.clone());
                self.first_port = port;
                self.x.insert(x)
            }
        };
        let added = x.add(&[iface.to_owned()], strict)?;
        if !added.is_empty() {
            for &p in &self.ports {
                if let Err(e) = x.add_port(p) {
                    log::error!("cannot steer UDP port {p} to AF_XDP: {e}");
                }
            }
            if !self.ports.contains(&self.first_port) {
                if let Err(e) = x.remove_port(self.first_port) {
                    log::error!("cannot stop steering UDP port {}: {e}", self.first_port);
                }
            }
        }
        send_all(sock, added)
    }

    /// The programs steer only what is addressed to this host.
    fn refresh_locals(&mut self) {
        let now = local_addrs::local_addresses();
        let d = local_addrs::digest(&now);
        if d == self.digest {
            return;
        }
        self.digest = d;
        self.locals = now;
        if let Some(x) = &mut self.x {
            x.set_local_addresses(self.locals.clone());
        }
    }
}
