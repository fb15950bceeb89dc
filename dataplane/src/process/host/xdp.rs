//! The supervisor's side of the host's AF_XDP: the uplinks' programs are
//! held by the host's XDP attacher (`process::attacher`, forked before
//! the sandbox), which keeps what attaching takes so that no thread of
//! the host data plane need. The supervisor names the uplinks and ports,
//! deals the sockets that come back to the workers, and copies the
//! programs' figures into every tenant's region.

use std::collections::HashSet;
use std::io;

use crate::process::attacher::wire::{Msg, Uplink};
use crate::process::attacher::{self, Attacher};
use crate::process::backend::{BackendChoice, PortDealer};
use crate::process::stats::UplinkReport;

pub struct HostXdp {
    attacher: Attacher,
    /// Uplinks asked for: the attacher tries each once.
    asked: HashSet<Uplink>,
    /// An uplink carries transport messages over AF_XDP.
    carries: bool,
}

/// What became of a request: the attacher's trouble (it is gone, or
/// did not answer) is the error.
pub enum Outcome {
    /// Done; false: AF_XDP was given up (UDP with GSO beats copy mode
    /// here) and the attacher has ended.
    Active(bool),
    /// It failed (an uplink that had to be attached could not be).
    Failed(String),
}

impl HostXdp {
    /// Forks the attacher: only while the process has one thread and all
    /// its privileges (see [`attacher::spawn_host`]).
    pub fn spawn(choice: BackendChoice) -> io::Result<HostXdp> {
        Ok(HostXdp {
            attacher: attacher::spawn_host(choice)?,
            asked: HashSet::new(),
            carries: false,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.attacher.pid()
    }

    /// Whether an uplink carries transport messages over AF_XDP.
    pub fn carries(&self) -> bool {
        self.carries
    }

    /// Whether any uplink was asked for yet.
    pub fn started(&self) -> bool {
        !self.asked.is_empty()
    }

    /// Has every program (those to come too) steer `port`.
    pub fn steer(&self, port: u16) -> io::Result<()> {
        self.attacher.tell(&Msg::Steer(port))
    }

    /// Has every program steer `port` no more.
    pub fn unsteer(&self, port: u16) -> io::Result<()> {
        self.attacher.tell(&Msg::Unsteer(port))
    }

    /// Asks for AF_XDP on the uplinks of `wanted` not asked for before,
    /// dealing their sockets to the workers (a steered port first: a
    /// program is made steering one). `udp_gso` and `strict` as in
    /// [`Msg::Attach`]; the first failure ends the list.
    pub fn attach(
        &mut self,
        wanted: &[Uplink],
        udp_gso: bool,
        strict: bool,
        dealer: &mut PortDealer,
    ) -> io::Result<Outcome> {
        for uplink in wanted {
            if !self.asked.insert(uplink.clone()) {
                continue;
            }
            let m = Msg::Attach {
                uplink: uplink.clone(),
                udp_gso,
                strict,
            };
            let dealt = dealer.dealt();
            match self.attacher.call(&m, dealer)? {
                Ok(a) if !a.active => return Ok(Outcome::Active(false)),
                Ok(_) => self.carries |= dealer.dealt() > dealt,
                Err(e) => return Ok(Outcome::Failed(e)),
            }
        }
        Ok(Outcome::Active(true))
    }

    /// The programs' figures now, in their order.
    pub fn report(&mut self, dealer: &mut PortDealer) -> io::Result<Vec<UplinkReport>> {
        match self.attacher.call(&Msg::Report, dealer)? {
            Ok(a) => Ok(a.figures),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// Has the attacher detach the programs and end (a bounded wait).
    pub fn finish(self) {
        self.attacher.finish();
    }
}
