//! A peer: its configuration, handshake in progress, keypairs, timers,
//! packets waiting for a session, and the counters `wg show` reports.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;

use dataplane::consts::MAX_STAGED_PACKETS;
use zeroize::Zeroizing;

use crate::cookie::CookieJar;
use crate::crypto::tai64n::TIMESTAMP_LEN;
use crate::keys::{PresharedKey, PublicKey};
use crate::noise::InitiatorState;
use crate::session::Keypair;
use crate::timers::Timers;

/// An initiation we sent, awaiting its response.
pub struct PendingInitiation {
    pub state: InitiatorState,
    pub local_index: u32,
}

/// The three keypair slots of the paper: the one in use, the one before it
/// (still accepted while packets in flight drain), and a responder's new one
/// that is not used to send until the initiator confirms it.
///
/// Boxed: a keypair is two AEAD keys and a 1 KB replay window (about 2.3 KB),
/// and three of them inline made every configured peer cost 7 KB of control
/// heap whether it ever handshook or not.
#[derive(Default)]
pub struct Keypairs {
    pub current: Option<Box<Keypair>>,
    pub previous: Option<Box<Keypair>>,
    pub next: Option<Box<Keypair>>,
}

impl Keypairs {
    pub fn iter(&self) -> impl Iterator<Item = &Keypair> {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|k| &**k)
    }

    pub fn find_mut(&mut self, local_index: u32) -> Option<(&mut Keypair, Slot)> {
        if self
            .current
            .as_ref()
            .is_some_and(|k| k.local_index == local_index)
        {
            return self.current.as_deref_mut().map(|k| (k, Slot::Current));
        }
        if self
            .previous
            .as_ref()
            .is_some_and(|k| k.local_index == local_index)
        {
            return self.previous.as_deref_mut().map(|k| (k, Slot::Previous));
        }
        if self
            .next
            .as_ref()
            .is_some_and(|k| k.local_index == local_index)
        {
            return self.next.as_deref_mut().map(|k| (k, Slot::Next));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Current,
    Previous,
    Next,
}

pub struct Peer {
    pub public_key: PublicKey,
    pub preshared_key: PresharedKey,
    /// DH(our static, their static), computed at the first handshake after
    /// a key change; boxed, as most peers of a large device never need it.
    pub static_static: Option<Box<Zeroizing<[u8; 32]>>>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<Duration>,
    /// Made at the first handshake message to or from the peer (its MAC
    /// keys are two hashes, its cookie state 100 bytes): most configured
    /// peers of a large device never send one.
    cookie_jar: Option<Box<CookieJar>>,
    /// Boxed: the Noise state is a few hundred bytes only while a handshake
    /// is in flight.
    pub pending: Option<Box<PendingInitiation>>,
    pub keypairs: Keypairs,
    pub timers: Timers,
    /// Latest initiation timestamp accepted from this peer: refuses replays.
    pub latest_timestamp: Option<[u8; TIMESTAMP_LEN]>,
    /// When we last consumed an initiation from this peer (flood guard).
    pub last_initiation_consumed: Option<Duration>,
    pub staged: VecDeque<Vec<u8>>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Wall-clock time of the last completed handshake (since the Unix epoch).
    pub last_handshake: Option<Duration>,
}

impl Peer {
    pub fn new(public_key: PublicKey) -> Self {
        Peer {
            public_key,
            preshared_key: PresharedKey::zero(),
            static_static: None,
            endpoint: None,
            persistent_keepalive: None,
            cookie_jar: None,
            pending: None,
            keypairs: Keypairs::default(),
            timers: Timers::default(),
            latest_timestamp: None,
            last_initiation_consumed: None,
            staged: VecDeque::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            last_handshake: None,
        }
    }

    /// The peer's cookie state, made on first use.
    pub fn cookie_jar(&mut self) -> &mut CookieJar {
        let key = self.public_key;
        self.cookie_jar
            .get_or_insert_with(|| Box::new(CookieJar::new(key.as_bytes())))
    }

    /// The cookie state if a handshake message was ever stamped.
    pub fn cookie_jar_if_made(&mut self) -> Option<&mut CookieJar> {
        self.cookie_jar.as_deref_mut()
    }

    /// Holds a packet until a session exists, dropping the oldest when full.
    pub fn stage(&mut self, packet: Vec<u8>) {
        if self.staged.len() >= MAX_STAGED_PACKETS {
            self.staged.pop_front();
        }
        self.staged.push_back(packet);
    }

    /// Local indices of everything this peer holds in the index table.
    pub fn indices(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.keypairs.iter().map(|k| k.local_index).collect();
        if let Some(p) = &self.pending {
            v.push(p.local_index);
        }
        v
    }
}
