//! The addresses peers last completed a handshake from. Under load an
//! initiation cannot be tied to a peer before its DH (the static key inside
//! is encrypted), but its source address can: one that some peer completed a
//! handshake from is answered without the cookie round trip while its rate
//! limiter allows, so a flood of spoofed sources does not cost known peers
//! five seconds per re-handshake. A spoofer of such an address only spends
//! that address's budget.
//!
//! One entry per peer at most, so the table is bounded by the peer count and
//! a flood cannot grow it: only a completed handshake adds an address.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::PeerId;

#[derive(Default)]
pub struct KnownEndpoints {
    by_peer: HashMap<PeerId, SocketAddr>,
    /// Peers per address: two peers may share one (the same NAT mapping
    /// reused after a restart), and one leaving must not forget the other.
    peers_at: HashMap<SocketAddr, u32>,
}

impl KnownEndpoints {
    /// `id` completed a handshake from `addr`; its previous address goes.
    pub fn set(&mut self, id: PeerId, addr: SocketAddr) {
        if self.by_peer.get(&id) == Some(&addr) {
            return;
        }
        self.remove(id);
        self.by_peer.insert(id, addr);
        *self.peers_at.entry(addr).or_insert(0) += 1;
    }

    pub fn remove(&mut self, id: PeerId) {
        let Some(old) = self.by_peer.remove(&id) else {
            return;
        };
        if let Some(n) = self.peers_at.get_mut(&old) {
            *n -= 1;
            if *n == 0 {
                self.peers_at.remove(&old);
            }
        }
    }

    pub fn clear(&mut self) {
        self.by_peer.clear();
        self.peers_at.clear();
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.peers_at.contains_key(addr)
    }

    pub fn len(&self) -> usize {
        self.peers_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_per_peer_and_shared_addresses_counted() {
        let mut k = KnownEndpoints::default();
        k.set(1, a("192.0.2.1:1000"));
        k.set(1, a("192.0.2.1:2000"));
        assert!(
            !k.contains(&a("192.0.2.1:1000")),
            "a peer's old address goes"
        );
        assert!(k.contains(&a("192.0.2.1:2000")));
        assert_eq!(k.len(), 1);
        // Another peer at the same address: removing one keeps it known.
        k.set(2, a("192.0.2.1:2000"));
        k.remove(1);
        assert!(k.contains(&a("192.0.2.1:2000")));
        k.remove(2);
        assert!(!k.contains(&a("192.0.2.1:2000")));
        assert_eq!(k.len(), 0);
        k.set(3, a("[2001:db8::1]:51820"));
        k.clear();
        assert!(!k.contains(&a("[2001:db8::1]:51820")));
    }
}
