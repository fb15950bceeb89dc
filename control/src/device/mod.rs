//! The sans-IO WireGuard device: peers, their sessions and timers, the index
//! table, cookies and rate limiting under load, and cryptokey routing.
//!
//! Inputs are datagrams from the network, packets from the TUN device, and
//! the passing of time; outputs are datagrams to send, packets to deliver
//! and events. Nothing here touches a socket or a clock, so the whole
//! protocol runs in tests with a simulated clock.

mod activity;
mod adopt;
mod allowed_changes;
mod known;
mod load;
mod peers;
mod receive;
#[cfg(test)]
mod scale_tests;
mod send;
mod tick;

use core::time::Duration;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use dataplane::allowedips::AllowedIps;
use dataplane::consts::REKEY_TIMEOUT_JITTER_MAX;
use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::cookie::CookieChecker;
use crate::crypto::x25519;
use crate::index::IndexTable;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::peer::Peer;
use crate::ratelimit::RateLimiter;
use known::KnownEndpoints;
use peers::Peers;

pub use activity::Activity;
pub use allowed_changes::AllowedChanges;
pub use load::LoadTracker;

/// A peer's handle inside one device.
pub type PeerId = u32;

/// Tunables that are not part of the `wg` configuration.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Inner MTU: the upper bound for padding.
    pub mtu: usize,
    /// Handshake messages per second above which the device is under load
    /// and demands cookies (mac2) and applies per-source rate limits.
    pub under_load_threshold: u32,
    /// Bound on the rate limiter's table, so a spoofed flood cannot grow it.
    pub ratelimit_max_sources: usize,
    /// Transport data is sealed and opened by the data plane process: the
    /// device then never sees transport messages or TUN packets, asks for
    /// flushes instead of sealing, learns of traffic through
    /// [`Device::note_activity`], and reports keypair changes to publish.
    pub transport_in_dataplane: bool,
    /// Receiver indices unique in their low bits (the data plane's key slots).
    pub index_slot_bits: Option<u32>,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings {
            mtu: dataplane::consts::DEFAULT_MTU as usize,
            under_load_threshold: 512,
            ratelimit_max_sources: 1 << 16,
            transport_in_dataplane: false,
            index_slot_bits: None,
        }
    }
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram to `to`.
    Send { to: SocketAddr, datagram: Vec<u8> },
    /// Write this decrypted IP packet to the TUN device.
    Deliver { peer: PeerId, packet: Vec<u8> },
    /// Something an operator or the data plane wants to know.
    Event(Event),
    /// Data plane mode: send the peer's staged packets under its current
    /// key, or a keepalive if none are staged and `keepalive` is set.
    Flush { peer: PeerId, keepalive: bool },
    /// Data plane mode: drop the peer's staged packets.
    DropStaged { peer: PeerId },
    /// Data plane mode: the peer's keypairs changed; publish them.
    KeypairsChanged { peer: PeerId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session was confirmed: as initiator on the response, as responder on
    /// the first message under the new keys.
    HandshakeCompleted { peer: PeerId },
    /// An authenticated message came from a new address.
    EndpointChanged { peer: PeerId, endpoint: SocketAddr },
    /// REKEY_ATTEMPT_TIME passed without a response: staged packets dropped.
    HandshakeGaveUp { peer: PeerId },
    /// All of a peer's session keys were erased.
    KeysErased { peer: PeerId },
}

/// Why an input was dropped. Drops are silent on the wire; this is for
/// counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Malformed,
    NoPrivateKey,
    InvalidMac,
    RateLimited,
    HandshakeFailed,
    UnknownPeer,
    ReplayedInitiation,
    InitiationFlood,
    UnknownIndex,
    KeyExpired,
    Replay,
    DecryptFailed,
    InvalidInnerPacket,
    SourceNotAllowed,
    NoRoute,
    UnsolicitedCookie,
    IndicesExhausted,
}

/// Configuration of one peer as `wg set` gives it.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<Duration>,
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

impl PeerSettings {
    pub fn new(public_key: PublicKey) -> Self {
        PeerSettings {
            public_key,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
        }
    }
}

pub struct Device {
    private_key: Option<PrivateKey>,
    public_key: Option<PublicKey>,
    peers: Peers,
    by_key: HashMap<PublicKey, PeerId>,
    next_peer_id: PeerId,
    allowed_ips: AllowedIps<PeerId>,
    /// The prefixes each peer was given (some may have moved to another
    /// peer since), so removing a peer's costs its own prefixes, not a
    /// walk over the whole table.
    prefixes_of: HashMap<PeerId, Vec<(IpAddr, u8)>>,
    /// What changed in `allowed_ips` since the daemon last published it.
    allowed_changes: AllowedChanges,
    indices: IndexTable,
    checker: Option<CookieChecker>,
    limiter: RateLimiter,
    known: KnownEndpoints,
    load: LoadTracker,
    rng: Box<dyn RngCore + Send>,
    /// Unix time at monotonic zero: turns the monotonic `now` into TAI64N.
    unix_at_zero: Duration,
    settings: DeviceSettings,
}

impl Device {
    /// `unix_at_zero` is the wall-clock time (since the Unix epoch) that the
    /// caller's monotonic `now = 0` corresponds to.
    pub fn new(
        unix_at_zero: Duration,
        rng: Box<dyn RngCore + Send>,
        settings: DeviceSettings,
    ) -> Self {
        Device {
            private_key: None,
            public_key: None,
            peers: Peers::default(),
            by_key: HashMap::new(),
            next_peer_id: 0,
            allowed_ips: AllowedIps::new(),
            prefixes_of: HashMap::new(),
            allowed_changes: AllowedChanges::Full,
            indices: match settings.index_slot_bits {
                Some(b) => IndexTable::with_slot_bits(b),
                None => IndexTable::default(),
            },
            checker: None,
            limiter: RateLimiter::new(settings.ratelimit_max_sources),
            known: KnownEndpoints::default(),
            load: LoadTracker::new(settings.under_load_threshold),
            rng,
            unix_at_zero,
            settings,
        }
    }

    pub fn settings(&self) -> &DeviceSettings {
        &self.settings
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.public_key
    }

    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.private_key.as_ref()
    }

    /// Sets (or clears) the static private key. Sessions made under the old
    /// key are dropped, and a peer whose key equals our new public key is
    /// removed, as the kernel does.
    pub fn set_private_key(&mut self, key: Option<PrivateKey>) {
        let public = key.as_ref().map(PrivateKey::public_key);
        if public == self.public_key && key.as_ref() == self.private_key.as_ref() {
            return;
        }
        self.private_key = key;
        self.public_key = public;
        self.checker = public.map(|p| CookieChecker::new(p.as_bytes()));
        if let Some(p) = public {
            if let Some(id) = self.by_key.get(&p).copied() {
                self.remove_peer(id);
            }
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.clear_sessions(id);
            if let Some(p) = self.peers.get_mut(&id) {
                p.static_static = None;
            }
        }
    }

    /// The DH of our static key and peer `id`'s, computed at its first
    /// handshake and kept: computing it for every peer as it is added made
    /// `wg setconf` with 100,000 peers cost one X25519 each (seconds),
    /// most of them for peers that may never handshake.
    pub(super) fn static_static(&mut self, id: PeerId) -> Option<Zeroizing<[u8; 32]>> {
        let sk = self.private_key.as_ref()?;
        let p = self.peers.get_mut(&id)?;
        if p.static_static.is_none() {
            p.static_static = x25519::dh(sk.as_bytes(), p.public_key.as_bytes())
                .ok()
                .map(Box::new);
        }
        p.static_static.as_deref().cloned()
    }

    /// Adds a peer, or updates the one with that public key. Returns its id,
    /// or `None` if the key is our own.
    pub fn upsert_peer(&mut self, s: PeerSettings) -> Option<PeerId> {
        if Some(s.public_key) == self.public_key {
            return None;
        }
        let id = match self.by_key.get(&s.public_key) {
            Some(&id) => id,
            None => {
                let id = self.next_peer_id;
                self.next_peer_id = self.next_peer_id.wrapping_add(1);
                self.peers.insert(id, Peer::new(s.public_key));
                self.by_key.insert(s.public_key, id);
                id
            }
        };
        let peer = self.peers.get_mut(&id).expect("inserted above");
        if let Some(psk) = s.preshared_key {
            peer.preshared_key = psk;
        }
        if s.endpoint.is_some() {
            peer.endpoint = s.endpoint;
        }
        if s.persistent_keepalive.is_some() {
            peer.persistent_keepalive = s.persistent_keepalive.filter(|d| !d.is_zero());
        }
        if !s.allowed_ips.is_empty() {
            let mine = self.prefixes_of.entry(id).or_default();
            for (addr, cidr) in s.allowed_ips {
                if self.allowed_ips.get_exact(addr, cidr) == Some(id) {
                    continue; // listed already
                }
                // Validated by the config layers; an invalid prefix is ignored here.
                if self.allowed_ips.insert(addr, cidr, id).is_ok() {
                    mine.push((addr, cidr));
                    self.allowed_changes
                        .note(addr, cidr, self.allowed_ips.len());
                }
            }
        }
        Some(id)
    }

    pub fn remove_peer(&mut self, id: PeerId) {
        if let Some(p) = self.peers.remove(&id) {
            self.by_key.remove(&p.public_key);
            self.known.remove(id);
            self.indices.remove_peer(id);
            self.clear_allowed_ips(id);
        }
    }

    /// Removes the prefixes peer `id` still holds (`wg set ... allowed-ips`
    /// replaces them; removing the peer drops them): O(its prefixes ×
    /// depth). Those that moved to another peer since stay with it.
    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        for (addr, cidr) in self.prefixes_of.remove(&id).unwrap_or_default() {
            if self.allowed_ips.remove_if_owned(addr, cidr, id) {
                self.allowed_changes
                    .note(addr, cidr, self.allowed_ips.len());
            }
        }
    }

    /// Limits new receiver indices to key slots below `slots`: the data
    /// plane's capacity when the device starts.
    pub fn set_index_slots(&mut self, slots: usize) {
        self.indices.set_slot_capacity(slots);
    }

    /// Lets new receiver indices use key slots below `slots` (the data
    /// plane's current capacity); never lowers it.
    pub fn grow_index_slots(&mut self, slots: usize) {
        self.indices.grow_slot_capacity(slots);
    }

    /// Removes every peer at once: O(n), where n one-by-one removals would
    /// each walk the AllowedIPs table (`wg setconf` with 20,000 peers).
    pub fn remove_all_peers(&mut self) {
        self.peers.clear();
        self.by_key.clear();
        self.known.clear();
        self.allowed_ips.clear();
        self.allowed_changes = AllowedChanges::Full;
        self.prefixes_of.clear();
        self.indices.clear();
    }

    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// The peers whose state may have changed since the last call (each
    /// at least once): what the handshake time and byte counts published
    /// for the metrics endpoint need refreshing for.
    pub fn take_changed_peers(&mut self) -> Vec<PeerId> {
        self.peers.take_changed()
    }

    /// What changed in the AllowedIPs table since the last call: the
    /// prefixes to look up again (their owner now, or gone), or all of it.
    pub fn take_allowed_changes(&mut self) -> AllowedChanges {
        core::mem::replace(
            &mut self.allowed_changes,
            AllowedChanges::Prefixes(Vec::new()),
        )
    }

    /// What [`Device::take_allowed_changes`] would return (tests).
    #[cfg(test)]
    pub(crate) fn allowed_changes_peek(&self) -> &AllowedChanges {
        &self.allowed_changes
    }

    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    pub fn allowed_ips(&self) -> &AllowedIps<PeerId> {
        &self.allowed_ips
    }

    pub fn allowed_ips_mut(&mut self) -> &mut AllowedIps<PeerId> {
        // Changes made through it are not listed one by one.
        self.allowed_changes = AllowedChanges::Full;
        &mut self.allowed_ips
    }

    /// Erases a peer's handshake state and keypairs.
    fn clear_sessions(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            for i in p.indices() {
                self.indices.remove(i);
            }
            p.pending = None;
            p.keypairs = Default::default();
        }
    }

    /// Data plane mode: tells the caller to republish this peer's keys.
    fn keypairs_changed(&mut self, id: PeerId, out: &mut Vec<Output>) {
        if self.settings.transport_in_dataplane {
            out.push(Output::KeypairsChanged { peer: id });
        }
    }

    /// Erases all of a peer's sessions now (e.g. its key or ours changed).
    pub fn expire_sessions(&mut self, id: PeerId, out: &mut Vec<Output>) {
        self.clear_sessions(id);
        self.keypairs_changed(id, out);
    }

    /// Sets a peer's persistent keepalive; turning it on sends one at once,
    /// as the kernel does, so a peer behind NAT becomes reachable.
    pub fn set_persistent_keepalive(
        &mut self,
        id: PeerId,
        interval: Option<Duration>,
        now: Duration,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let interval = interval.filter(|d| !d.is_zero());
        let was = p.persistent_keepalive;
        p.persistent_keepalive = interval;
        if interval.is_some() && was != interval && p.endpoint.is_some() {
            self.send_keepalive(id, now, out);
        }
    }

    /// The wall-clock time for a monotonic `now`.
    pub fn unix_now(&self, now: Duration) -> Duration {
        self.unix_at_zero + now
    }

    fn jitter(&mut self) -> Duration {
        let max = REKEY_TIMEOUT_JITTER_MAX.as_millis() as u32 + 1;
        Duration::from_millis((self.rng.next_u32() % max) as u64)
    }

    fn random32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.rng.fill_bytes(&mut b);
        b
    }

    /// Whether handshakes are arriving faster than the configured threshold.
    pub fn under_load(&self, now: Duration) -> bool {
        self.load.is_under_load(now)
    }

    /// How many addresses are answered without a cookie under load: at most
    /// one per peer.
    pub fn known_endpoints(&self) -> usize {
        self.known.len()
    }
}
