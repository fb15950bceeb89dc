//! Carrying out what the device asks for: datagrams and flushes go to the
//! data plane's command rings, keypair and endpoint changes into the region.

use std::net::{IpAddr, SocketAddr};

use dataplane::shm::events::ToDataplane;

use super::{keysync, Daemon, LogLevel};
use crate::device::{Event, Output};

impl Daemon {
    /// `reply_source`: the (peer address, local address) of the message
    /// being answered, so the reply leaves from where it arrived.
    pub(super) fn apply(&mut self, outs: Vec<Output>, reply_source: Option<(SocketAddr, IpAddr)>) {
        for o in outs {
            match o {
                Output::Send { to, datagram } => {
                    let local = match reply_source {
                        Some((from, l)) if from == to => Some(l),
                        _ => self.sources.get(&to).copied(),
                    };
                    self.command(
                        to_hash(&to),
                        ToDataplane::Send {
                            to,
                            local,
                            datagram,
                        },
                    );
                }
                Output::Flush { peer, keepalive } => {
                    if let Some(s) = self.slots.slot(peer) {
                        self.command(s as usize, ToDataplane::Flush { peer: s, keepalive });
                    }
                }
                Output::DropStaged { peer } => {
                    if let Some(s) = self.slots.slot(peer) {
                        self.command(s as usize, ToDataplane::DropStaged { peer: s });
                    }
                }
                Output::KeypairsChanged { peer } => {
                    self.keys
                        .sync_peer(&self.region, &self.dev, &self.slots, peer);
                }
                Output::Deliver { .. } => {
                    // Transport never reaches a data-plane-mode device.
                }
                Output::Event(e) => self.on_device_event(e),
            }
        }
    }

    fn on_device_event(&mut self, e: Event) {
        let name = |d: &Daemon, id| {
            d.dev
                .peer(id)
                .map(|p| p.public_key.to_base64())
                .unwrap_or_default()
        };
        match e {
            Event::HandshakeCompleted { peer } => self.log(
                LogLevel::Info,
                format!("handshake completed with peer {}", name(self, peer)),
            ),
            Event::EndpointChanged { peer, endpoint } => {
                let src = self.sources.get(&endpoint).copied();
                keysync::publish_endpoint(&self.region, &self.slots, peer, Some(endpoint), src);
                self.log(
                    LogLevel::Info,
                    format!("peer {} endpoint moved to {endpoint}", name(self, peer)),
                );
            }
            Event::HandshakeGaveUp { peer } => self.log(
                LogLevel::Info,
                format!(
                    "no handshake with peer {} after 90 s; dropping its queued packets",
                    name(self, peer)
                ),
            ),
            Event::KeysErased { peer } => self.log(
                LogLevel::Debug,
                format!("session keys of peer {} erased", name(self, peer)),
            ),
        }
    }

    /// Sends a command to a worker chosen by `hint` (see [`Commands`]).
    ///
    /// [`Commands`]: super::commands::Commands
    fn command(&mut self, hint: usize, cmd: ToDataplane) {
        self.commands.send(&self.region, hint, cmd);
    }
}

fn to_hash(a: &SocketAddr) -> usize {
    match a.ip() {
        IpAddr::V4(v) => u32::from(v) as usize ^ a.port() as usize,
        IpAddr::V6(v) => (u128::from(v) as usize) ^ a.port() as usize,
    }
}
