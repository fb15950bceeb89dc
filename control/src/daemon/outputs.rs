//! Carrying out what the device asks for: datagrams and flushes go to the
//! data plane's command rings, keypair and endpoint changes into the region.

use std::net::{IpAddr, SocketAddr};

use dataplane::shm::events::ToDataplane;

use super::{keysync, Daemon, LogLevel};
use crate::device::{Event, Output};

/// Whether the device's answer to a handshake message shows that the
/// message was authenticated (keys derived, a handshake completed, an
/// endpoint learnt). A cookie reply alone says nothing about the sender.
pub(super) fn authenticated(out: &[Output]) -> bool {
    out.iter().any(|o| !matches!(o, Output::Send { .. }))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, DeviceSettings, PeerSettings};
    use crate::keys::PrivateKey;
    use core::time::Duration;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn device(key: u8, threshold: u32) -> Device {
        let settings = DeviceSettings {
            under_load_threshold: threshold,
            transport_in_dataplane: true,
            ..Default::default()
        };
        let mut d = Device::new(
            Duration::from_secs(1_750_000_000),
            Box::new(ChaCha20Rng::seed_from_u64(key as u64)),
            settings,
        );
        d.set_private_key(Some(PrivateKey::from_bytes([key; 32])));
        d
    }

    /// The server's outputs for one genuine initiation, at `threshold`.
    fn answer(threshold: u32) -> Vec<Output> {
        let mut server = device(1, threshold);
        let mut client = device(2, 10_000);
        let server_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let mut p = PeerSettings::new(server.public_key().unwrap());
        p.endpoint = Some(server_addr);
        let id = client.upsert_peer(p).unwrap();
        server.upsert_peer(PeerSettings::new(client.public_key().unwrap()));
        let mut out = Vec::new();
        client.request_handshake(id, Duration::ZERO, &mut out);
        let init = out
            .iter()
            .find_map(|o| match o {
                Output::Send { datagram, .. } => Some(datagram.clone()),
                _ => None,
            })
            .unwrap();
        let mut out = Vec::new();
        let from = "198.51.100.7:40000".parse().unwrap();
        server
            .handle_datagram(Duration::ZERO, from, &init, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_cookie_reply_is_not_an_authenticated_source() {
        // Under load (threshold 0) the answer is a cookie reply only.
        assert!(!authenticated(&answer(0)));
        assert!(authenticated(&answer(10_000)));
    }
}
