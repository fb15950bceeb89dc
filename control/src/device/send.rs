//! Packets from the TUN device, initiations and keepalives (kernel: send.c).

use core::time::Duration;

use dataplane::consts::{REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME};
use dataplane::{ip, transport};

use super::{Device, Drop, Output, PeerId};
use crate::crypto::tai64n;
use crate::handshake::{self, LocalStatic};
use crate::index::IndexEntry;
use crate::peer::PendingInitiation;

impl Device {
    /// Routes an IP packet read from the TUN device to its peer by
    /// destination, seals it, or stages it and starts a handshake.
    pub fn handle_packet(
        &mut self,
        now: Duration,
        packet: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<PeerId, Drop> {
        let dst = ip::destination(packet).ok_or(Drop::InvalidInnerPacket)?;
        let id = self.allowed_ips.lookup(dst).ok_or(Drop::NoRoute)?;
        let peer = self.peers.get_mut(&id).ok_or(Drop::NoRoute)?;
        peer.stage(packet.to_vec());
        self.send_staged(id, now, out);
        Ok(id)
    }

    /// Sends a keepalive (or whatever is staged) to a peer.
    pub fn send_keepalive(&mut self, id: PeerId, now: Duration, out: &mut Vec<Output>) {
        self.flush(id, now, true, out);
    }

    /// Sends what is staged for a peer (and, with `keepalive`, a keepalive if
    /// nothing is). When the data plane owns transport, that is its job:
    /// this only checks there is a usable key, else starts a handshake.
    pub(super) fn flush(
        &mut self,
        id: PeerId,
        now: Duration,
        keepalive: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if self.settings.transport_in_dataplane {
            if peer
                .keypairs
                .current
                .as_ref()
                .is_some_and(|k| k.can_send(now))
            {
                out.push(Output::Flush {
                    peer: id,
                    keepalive,
                });
            } else {
                self.send_initiation(id, now, false, out);
            }
            return;
        }
        if keepalive && peer.staged.is_empty() {
            peer.stage(Vec::new());
        }
        self.send_staged(id, now, out);
    }

    /// The data plane holds packets for a peer without a usable session.
    pub fn request_handshake(&mut self, id: PeerId, now: Duration, out: &mut Vec<Output>) {
        let fresh = self
            .peers
            .get(&id)
            .and_then(|p| p.keypairs.current.as_ref())
            .is_some_and(|k| {
                k.can_send(now) && !(k.is_initiator && k.age(now) >= REKEY_AFTER_TIME)
            });
        if fresh {
            // A usable key exists (the data plane's view was stale, or it
            // has not seen a rotation yet): just flush.
            out.push(Output::Flush {
                peer: id,
                keepalive: false,
            });
        } else {
            self.send_initiation(id, now, false, out);
        }
    }

    /// Seals every staged packet under the current keypair; without a usable
    /// one, keeps them staged and asks for a handshake.
    pub(super) fn send_staged(&mut self, id: PeerId, now: Duration, out: &mut Vec<Output>) {
        let mtu = self.settings.mtu;
        let jitter = self.jitter();
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.staged.is_empty() {
            return;
        }
        let usable = peer
            .keypairs
            .current
            .as_ref()
            .is_some_and(|k| k.can_send(now));
        let Some(endpoint) = peer.endpoint else {
            return;
        };
        if !usable {
            self.send_initiation(id, now, false, out);
            return;
        }
        let mut need_handshake = false;
        while let Some(packet) = peer.staged.pop_front() {
            let k = peer.keypairs.current.as_mut().expect("usable checked");
            if k.send_counter >= REJECT_AFTER_MESSAGES {
                peer.staged.push_front(packet);
                need_handshake = true;
                break;
            }
            let mut wire = Vec::new();
            transport::seal(
                &k.sending,
                k.remote_index,
                k.send_counter,
                &packet,
                mtu,
                &mut wire,
            );
            k.send_counter += 1;
            peer.tx_bytes += wire.len() as u64;
            peer.timers
                .any_authenticated_packet_traversal(now, peer.persistent_keepalive);
            peer.timers.any_authenticated_packet_sent();
            if !packet.is_empty() {
                peer.timers.data_sent(now, jitter);
            }
            out.push(Output::Send {
                to: endpoint,
                datagram: wire,
            });
        }
        // Keep the key fresh: rekey after enough messages or, as initiator, time.
        let stale = peer.keypairs.current.as_ref().is_some_and(|k| {
            k.send_counter > REKEY_AFTER_MESSAGES
                || (k.is_initiator && k.age(now) >= REKEY_AFTER_TIME)
        });
        if need_handshake || stale {
            self.send_initiation(id, now, false, out);
        }
    }

    /// Sends a handshake initiation unless one went out less than
    /// REKEY_TIMEOUT ago. `is_retry` keeps the attempt counter running.
    pub(super) fn send_initiation(
        &mut self,
        id: PeerId,
        now: Duration,
        is_retry: bool,
        out: &mut Vec<Output>,
    ) {
        let (sk, pk) = match (&self.private_key, &self.public_key) {
            (Some(sk), Some(pk)) => (sk.clone(), *pk),
            _ => return,
        };
        let unix = self.unix_now(now);
        let ss = self.static_static(id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !is_retry {
            peer.timers.handshake_attempts = 0;
        }
        if peer.timers.handshake_rate_limited(now) {
            return;
        }
        let (Some(endpoint), Some(ss)) = (peer.endpoint, ss) else {
            return;
        };
        if let Some(p) = peer.pending.take() {
            self.indices.remove(p.local_index);
        }
        let ephemeral = self.random32();
        let jitter = self.jitter();
        let Some(local_index) = self.allocate_index(IndexEntry::Handshake { peer: id }) else {
            return;
        };
        let peer = self.peers.get_mut(&id).expect("present");
        let local = LocalStatic {
            private: sk.as_bytes(),
            public: pk.as_bytes(),
        };
        let created = handshake::create_initiation(
            &local,
            peer.public_key.as_bytes(),
            &ss,
            ephemeral,
            local_index,
            &tai64n::tai64n(unix),
        );
        let Ok((msg, state)) = created else {
            self.indices.remove(local_index);
            return;
        };
        let mut bytes = msg.to_bytes();
        peer.cookie_jar().stamp(&mut bytes, now);
        peer.pending = Some(Box::new(PendingInitiation { state, local_index }));
        peer.timers
            .any_authenticated_packet_traversal(now, peer.persistent_keepalive);
        peer.timers.any_authenticated_packet_sent();
        peer.timers.handshake_initiated(now, jitter);
        peer.tx_bytes += bytes.len() as u64;
        out.push(Output::Send {
            to: endpoint,
            datagram: bytes.to_vec(),
        });
    }
}
