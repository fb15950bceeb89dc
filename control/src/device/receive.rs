//! Datagrams from the network: handshake initiations and responses, cookie
//! replies and transport data (kernel: receive.c).

use core::time::Duration;
use std::net::SocketAddr;

use dataplane::consts::{
    KEEPALIVE_TIMEOUT, MIN_INITIATION_INTERVAL, REJECT_AFTER_TIME, REKEY_TIMEOUT,
};
use dataplane::messages::{CookieReply, Initiation, Message, Response, Transport};
use dataplane::{ip, transport};

use super::{Device, Drop, Event, Output, PeerId};
use crate::crypto::tai64n;
use crate::handshake::{self, LocalStatic};
use crate::index::IndexEntry;
use crate::peer::Slot;
use crate::session::Keypair;

impl Device {
    /// Processes one datagram received from `src`.
    pub fn handle_datagram(
        &mut self,
        now: Duration,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), Drop> {
        match Message::parse(datagram).map_err(|_| Drop::Malformed)? {
            Message::Initiation(m) => self.receive_initiation(now, src, datagram, &m, out),
            Message::Response(m) => self.receive_response(now, src, datagram, &m, out),
            Message::CookieReply(m) => self.receive_cookie_reply(now, &m),
            Message::Transport(m) => self.receive_transport(now, src, datagram.len(), &m, out),
        }
    }

    /// mac1 always, and only what passes it counts toward load: garbage from
    /// someone who does not know our public key must not make honest peers
    /// wait out a cookie round trip. Under load, a message with a valid mac2
    /// passes the per-source rate limit; one from an address some peer last
    /// completed a handshake from is answered directly while that address's
    /// rate limiter allows it; the rest get a cookie reply. Returns false
    /// when the message was answered with a cookie.
    fn admit_handshake(
        &mut self,
        now: Duration,
        src: SocketAddr,
        datagram: &[u8],
        sender_index: u32,
        out: &mut Vec<Output>,
    ) -> Result<bool, Drop> {
        let checker = self.checker.as_mut().ok_or(Drop::NoPrivateKey)?;
        if !checker.mac1_valid(datagram) {
            return Err(Drop::InvalidMac);
        }
        if !self.load.record(now) {
            return Ok(true);
        }
        let rng = &mut self.rng;
        let mut fill = |b: &mut [u8]| rng.fill_bytes(b);
        if checker.mac2_valid(datagram, src, now, &mut fill) {
            return match self.limiter.allow(src.ip(), now) {
                true => Ok(true),
                false => Err(Drop::RateLimited),
            };
        }
        if self.known.contains(&src) && self.limiter.allow(src.ip(), now) {
            return Ok(true);
        }
        let reply = checker.make_reply(datagram, sender_index, src, now, &mut fill);
        out.push(Output::Send {
            to: src,
            datagram: reply.to_bytes().to_vec(),
        });
        Ok(false)
    }

    fn receive_initiation(
        &mut self,
        now: Duration,
        src: SocketAddr,
        datagram: &[u8],
        msg: &Initiation,
        out: &mut Vec<Output>,
    ) -> Result<(), Drop> {
        if !self.admit_handshake(now, src, datagram, msg.sender, out)? {
            return Ok(());
        }
        let (sk, pk) = match (&self.private_key, &self.public_key) {
            (Some(sk), Some(pk)) => (sk.clone(), *pk),
            _ => return Err(Drop::NoPrivateKey),
        };
        let local = LocalStatic {
            private: sk.as_bytes(),
            public: pk.as_bytes(),
        };
        let mut found: Option<PeerId> = None;
        let consumed = handshake::consume_initiation(&local, msg, |key| {
            let id = self.by_key.get(&crate::keys::PublicKey(*key)).copied()?;
            found = Some(id);
            self.static_static(id)
        })
        .map_err(|e| match e {
            crate::noise::NoiseError::UnknownPeer => Drop::UnknownPeer,
            _ => Drop::HandshakeFailed,
        })?;
        let id = found.ok_or(Drop::UnknownPeer)?;
        let peer = self.peers.get_mut(&id).ok_or(Drop::UnknownPeer)?;
        if let Some(prev) = &peer.latest_timestamp {
            if !tai64n::is_after(&consumed.timestamp, prev) {
                return Err(Drop::ReplayedInitiation);
            }
        }
        if matches!(peer.last_initiation_consumed, Some(t) if now < t + MIN_INITIATION_INTERVAL) {
            return Err(Drop::InitiationFlood);
        }
        peer.latest_timestamp = Some(consumed.timestamp);
        peer.last_initiation_consumed = Some(now);
        peer.rx_bytes += datagram.len() as u64;
        peer.timers.any_authenticated_packet_received();
        peer.timers
            .any_authenticated_packet_traversal(now, peer.persistent_keepalive);
        // A crossing initiation of ours is superseded, as in the kernel where
        // one handshake slot per peer is overwritten.
        if let Some(p) = peer.pending.take() {
            self.indices.remove(p.local_index);
        }
        self.set_endpoint(id, src, out);

        let ephemeral = self.random32();
        let local_index = self
            .allocate_index(IndexEntry::Keypair { peer: id })
            .ok_or(Drop::IndicesExhausted)?;
        let peer = self.peers.get_mut(&id).expect("checked above");
        let (resp, keys) = handshake::create_response(
            consumed.state,
            ephemeral,
            peer.preshared_key.as_bytes(),
            local_index,
            consumed.sender_index,
        )
        .map_err(|_| Drop::HandshakeFailed)
        .inspect_err(|_| self.indices.remove(local_index))?;
        let peer = self.peers.get_mut(&id).expect("checked above");
        let keypair = Keypair::new(&keys, false, local_index, consumed.sender_index, now);
        // A responder's keys wait in `next` until the initiator uses them;
        // the old next and previous go.
        let old_next = peer.keypairs.next.replace(Box::new(keypair));
        let old_prev = peer.keypairs.previous.take();
        peer.timers.session_derived(now);
        let mut bytes = resp.to_bytes();
        peer.cookie_jar().stamp(&mut bytes, now);
        peer.timers
            .any_authenticated_packet_traversal(now, peer.persistent_keepalive);
        peer.timers.any_authenticated_packet_sent();
        peer.tx_bytes += bytes.len() as u64;
        for k in [old_next, old_prev].into_iter().flatten() {
            self.indices.remove(k.local_index);
        }
        self.keypairs_changed(id, out);
        out.push(Output::Send {
            to: src,
            datagram: bytes.to_vec(),
        });
        Ok(())
    }

    fn receive_response(
        &mut self,
        now: Duration,
        src: SocketAddr,
        datagram: &[u8],
        msg: &Response,
        out: &mut Vec<Output>,
    ) -> Result<(), Drop> {
        if !self.admit_handshake(now, src, datagram, msg.sender, out)? {
            return Ok(());
        }
        let id = match self.indices.get(msg.receiver) {
            Some(IndexEntry::Handshake { peer }) => peer,
            _ => return Err(Drop::UnknownIndex),
        };
        let sk = self.private_key.clone().ok_or(Drop::NoPrivateKey)?;
        let peer = self.peers.get_mut(&id).ok_or(Drop::UnknownIndex)?;
        let pending = match &peer.pending {
            Some(p) if p.local_index == msg.receiver => p,
            _ => return Err(Drop::UnknownIndex),
        };
        // Keep the pending state on failure: a forged response must not
        // cancel the real one still on its way.
        let keys = handshake::consume_response(
            pending.state.clone(),
            sk.as_bytes(),
            peer.preshared_key.as_bytes(),
            msg,
        )
        .map_err(|_| Drop::HandshakeFailed)?;
        let local_index = pending.local_index;
        peer.pending = None;
        let keypair = Keypair::new(&keys, true, local_index, msg.sender, now);
        // Initiator: the new keypair is usable at once.
        let kp = &mut peer.keypairs;
        let mut dropped = Vec::new();
        if let Some(next) = kp.next.take() {
            dropped.extend(kp.current.take());
            dropped.extend(kp.previous.replace(next));
        } else {
            dropped.extend(core::mem::replace(&mut kp.previous, kp.current.take()));
        }
        kp.current = Some(Box::new(keypair));
        for k in dropped {
            self.indices.remove(k.local_index);
        }
        self.indices
            .set(local_index, IndexEntry::Keypair { peer: id });
        let unix = self.unix_now(now);
        let peer = self.peers.get_mut(&id).expect("present");
        peer.timers.session_derived(now);
        peer.timers.handshake_complete();
        peer.last_handshake = Some(unix);
        peer.rx_bytes += datagram.len() as u64;
        peer.timers.any_authenticated_packet_received();
        peer.timers
            .any_authenticated_packet_traversal(now, peer.persistent_keepalive);
        out.push(Output::Event(Event::HandshakeCompleted { peer: id }));
        self.keypairs_changed(id, out);
        self.set_endpoint(id, src, out);
        self.known.set(id, src);
        // Confirms the session to the responder: staged data, or a keepalive.
        self.send_keepalive(id, now, out);
        Ok(())
    }

    fn receive_cookie_reply(&mut self, now: Duration, msg: &CookieReply) -> Result<(), Drop> {
        let id = self
            .indices
            .get(msg.receiver)
            .ok_or(Drop::UnknownIndex)?
            .peer();
        let peer = self.peers.get_mut(&id).ok_or(Drop::UnknownIndex)?;
        // No jar means nothing was ever sent to the peer to reply to.
        peer.cookie_jar_if_made()
            .ok_or(Drop::UnsolicitedCookie)?
            .consume_reply(msg, now)
            .map_err(|_| Drop::UnsolicitedCookie)
    }

    fn receive_transport(
        &mut self,
        now: Duration,
        src: SocketAddr,
        wire_len: usize,
        msg: &Transport<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), Drop> {
        let id = match self.indices.get(msg.receiver) {
            Some(IndexEntry::Keypair { peer }) => peer,
            _ => return Err(Drop::UnknownIndex),
        };
        let peer = self.peers.get_mut(&id).ok_or(Drop::UnknownIndex)?;
        let (keypair, slot) = peer
            .keypairs
            .find_mut(msg.receiver)
            .ok_or(Drop::UnknownIndex)?;
        if !keypair.can_receive(now) {
            return Err(Drop::KeyExpired);
        }
        // Cheap check first: an old or repeated counter costs no AEAD.
        if !keypair.replay.would_accept(msg.counter) {
            return Err(Drop::Replay);
        }
        let mut plain = Vec::with_capacity(msg.sealed.len());
        transport::open(&keypair.receiving, msg, &mut plain).map_err(|_| Drop::DecryptFailed)?;
        if !keypair.replay.accept(msg.counter) {
            return Err(Drop::Replay);
        }
        peer.rx_bytes += wire_len as u64;
        if slot == Slot::Next {
            self.promote_next(id, now, out);
        }
        self.keep_key_fresh_on_receive(id, now, out);
        let peer = self.peers.get_mut(&id).expect("present");
        peer.timers.any_authenticated_packet_received();
        peer.timers
            .any_authenticated_packet_traversal(now, peer.persistent_keepalive);
        self.set_endpoint(id, src, out);
        if plain.is_empty() {
            return Ok(()); // keepalive
        }
        let len = ip::packet_len(&plain).ok_or(Drop::InvalidInnerPacket)?;
        plain.truncate(len);
        let inner_src = ip::source(&plain).ok_or(Drop::InvalidInnerPacket)?;
        if self.allowed_ips.lookup(inner_src) != Some(id) {
            return Err(Drop::SourceNotAllowed);
        }
        let peer = self.peers.get_mut(&id).expect("present");
        peer.timers.data_received(now);
        out.push(Output::Deliver {
            peer: id,
            packet: plain,
        });
        Ok(())
    }

    /// The initiator used a responder's new keys: they become current, and
    /// what waited for them goes out.
    pub(super) fn promote_next(&mut self, id: PeerId, now: Duration, out: &mut Vec<Output>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let kp = &mut peer.keypairs;
        let Some(confirmed) = kp.next.take() else {
            return;
        };
        let old_prev = core::mem::replace(&mut kp.previous, kp.current.take());
        kp.current = Some(confirmed);
        if let Some(k) = old_prev {
            self.indices.remove(k.local_index);
        }
        let unix = self.unix_now(now);
        let peer = self.peers.get_mut(&id).expect("present");
        peer.timers.handshake_complete();
        peer.last_handshake = Some(unix);
        // Where the initiation came from (receive_initiation set it).
        if let Some(ep) = peer.endpoint {
            self.known.set(id, ep);
        }
        out.push(Output::Event(Event::HandshakeCompleted { peer: id }));
        self.keypairs_changed(id, out);
        self.flush(id, now, false, out);
    }

    /// The initiator renegotiates before its keys reach REJECT_AFTER_TIME if
    /// it is still receiving on them.
    pub(super) fn keep_key_fresh_on_receive(
        &mut self,
        id: PeerId,
        now: Duration,
        out: &mut Vec<Output>,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.timers.sent_lastminute_handshake {
            return;
        }
        let stale = peer.keypairs.current.as_ref().is_some_and(|k| {
            k.is_initiator && k.age(now) >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        });
        if stale {
            peer.timers.sent_lastminute_handshake = true;
            self.send_initiation(id, now, false, out);
        }
    }

    /// Records where a peer was last heard from (roaming).
    pub fn set_endpoint(&mut self, id: PeerId, src: SocketAddr, out: &mut Vec<Output>) {
        if let Some(peer) = self.peers.get_mut(&id) {
            if peer.endpoint != Some(src) {
                peer.endpoint = Some(src);
                out.push(Output::Event(Event::EndpointChanged {
                    peer: id,
                    endpoint: src,
                }));
            }
        }
    }

    pub(super) fn allocate_index(&mut self, entry: IndexEntry) -> Option<u32> {
        let rng = &mut self.rng;
        self.indices.allocate(entry, || rng.next_u32())
    }
}
