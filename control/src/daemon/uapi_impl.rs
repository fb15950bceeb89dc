//! `wg` talking to the daemon: `get` reads the device and the data plane's
//! counters; `set` applies a whole transaction after checking it fits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dataplane::shm::layout::Capacity;

use super::{keysync, now, Daemon, LogLevel};
use crate::device::{PeerId, PeerSettings};
use crate::keys::PresharedKey;
use crate::uapi::response::{DeviceSnapshot, PeerSnapshot};
use crate::uapi::{errno, SetRequest, UapiHandler};

/// Added peers named one by one in the log per request; the rest are
/// counted in one line (a million-peer `wg setconf` wrote a million lines,
/// a quarter of its time).
const LOGGED_ADDED_PEERS: usize = 16;

impl UapiHandler for Daemon {
    fn get(&mut self) -> DeviceSnapshot {
        let h = self.region.header();
        let bound = h.bound_port.load(Ordering::Acquire) as u16;
        let mut prefixes: HashMap<PeerId, Vec<(IpAddr, u8)>> = HashMap::new();
        self.dev
            .allowed_ips()
            .for_each(|a, c, id| prefixes.entry(id).or_default().push((a, c)));
        let mut ids: Vec<PeerId> = self.dev.peer_ids().collect();
        ids.sort_unstable();
        let peers = ids
            .into_iter()
            .filter_map(|id| {
                let p = self.dev.peer(id)?;
                let c = self
                    .slots
                    .slot(id)
                    .map(|s| self.region.peer(s as usize).counters())
                    .unwrap_or_default();
                let mut s = PeerSnapshot::new(p.public_key);
                s.preshared_key = (!p.preshared_key.is_zero()).then(|| p.preshared_key.clone());
                s.endpoint = p.endpoint;
                s.last_handshake = p.last_handshake;
                // The data plane's figures are not trusted to stay in range.
                s.rx_bytes = p.rx_bytes.wrapping_add(c.rx_bytes);
                s.tx_bytes = p.tx_bytes.wrapping_add(c.tx_bytes);
                s.persistent_keepalive = p
                    .persistent_keepalive
                    .map(|d| d.as_secs() as u16)
                    .unwrap_or(0);
                s.allowed_ips = prefixes.remove(&id).unwrap_or_default();
                Some(s)
            })
            .collect();
        DeviceSnapshot {
            private_key: self.dev.private_key().cloned(),
            listen_port: if bound != 0 { bound } else { self.listen_port },
            fwmark: self.fwmark,
            peers,
        }
    }

    fn set(&mut self, req: SetRequest) -> Result<(), i32> {
        // Everything that can fail is checked before anything changes.
        let adding = req
            .peers
            .iter()
            .filter(|p| !p.remove && self.dev.peer_id(&p.public_key).is_none())
            .count();
        let existing = if req.replace_peers {
            0
        } else {
            // Slots kept for peers of before a restart count as taken.
            self.slots.len() + self.orphans.len()
        };
        let new_prefixes: usize = req.peers.iter().map(|p| p.allowed_ips.len()).sum();
        let prefixes = if req.replace_peers {
            0
        } else {
            self.dev.allowed_ips().len()
        };
        // Peer slots of peers removed by this request are only freed as it
        // goes, so the peers kept and added count against the capacity.
        let Some(need) = Capacity::for_config(existing + adding, prefixes + new_prefixes) else {
            return Err(errno::ENOSPC);
        };
        // Raised before anything changes (it never shrinks): the slots and
        // sessions in use stay where they are.
        if need.max(self.region.capacity()) != self.region.capacity() {
            self.region.grow(need);
            self.dev.grow_index_slots(self.region.key_slots());
            self.log(
                LogLevel::Info,
                format!(
                    "shared memory capacity raised to {:?}",
                    self.region.capacity()
                ),
            );
        }
        let t = now();
        let mut out = Vec::new();
        // The port is bound first: if it is taken, nothing else changes.
        let want_port = req.listen_port.unwrap_or(self.listen_port);
        let want_mark = req.fwmark.map(|m| m.unwrap_or(0)).unwrap_or(self.fwmark);
        if want_port != self.listen_port || want_mark != self.fwmark {
            self.rebind(want_port, want_mark)?;
        }
        if let Some(k) = req.private_key.map(|k| k.map(|k| k.clamped())) {
            let same = match (&k, self.dev.private_key()) {
                (Some(a), Some(b)) => a == b,
                (None, None) => true,
                _ => false,
            };
            if !same {
                self.dev.set_private_key(k);
                // What a control that re-attaches after a restart checks
                // before it adopts the sessions (a public key: not secret).
                let public = self.dev.public_key().map(|p| *p.as_bytes());
                self.region.set_static_public_key(public.as_ref());
                // Old sessions are void, and a peer with our own key is gone.
                let ids: Vec<PeerId> = self.slots.iter().map(|(id, _)| id).collect();
                for id in ids {
                    if self.dev.peer(id).is_none() {
                        self.forget_peer(id);
                    } else {
                        self.keys
                            .sync_peer(&self.region, &self.dev, &self.slots, id);
                    }
                }
            }
        }
        if req.replace_peers {
            let ids: Vec<PeerId> = self.dev.peer_ids().collect();
            self.dev.remove_all_peers();
            for id in ids {
                self.forget_peer(id);
            }
        }
        let mut added = 0usize;
        for change in req.peers {
            let existing = self.dev.peer_id(&change.public_key);
            if change.remove {
                if let Some(id) = existing {
                    self.dev.remove_peer(id);
                    self.forget_peer(id);
                }
                continue;
            }
            if change.update_only && existing.is_none() {
                continue;
            }
            if change.replace_allowed_ips {
                if let Some(id) = existing {
                    self.dev.clear_allowed_ips(id);
                }
            }
            let mut s = PeerSettings::new(change.public_key);
            s.preshared_key = change
                .preshared_key
                .map(|k| k.unwrap_or_else(PresharedKey::zero));
            s.endpoint = change.endpoint;
            s.allowed_ips = change.allowed_ips;
            let Some(id) = self.dev.upsert_peer(s) else {
                continue;
            };
            if existing.is_none() && self.claim_orphan(id, &change.public_key) {
                // Its slot, counters and sessions are those of before the
                // restart: nothing to reset.
            } else if existing.is_none() {
                let Some(slot) = self.slots.assign(id, self.region.peer_slots()) else {
                    self.dev.remove_peer(id);
                    continue;
                };
                // Who the slot belongs to first: a reader that sees the slot
                // in use can name the peer.
                self.region
                    .peer_info(slot as usize)
                    .activate(change.public_key.as_bytes());
                self.region.peer(slot as usize).activate();
                added += 1;
                if added <= LOGGED_ADDED_PEERS {
                    self.log(LogLevel::Info, format!("peer {} added", change.public_key));
                }
            }
            if let Some(ep) = change.endpoint {
                let src = self.sources.get(&ep).copied();
                keysync::publish_endpoint(&self.region, &self.slots, id, Some(ep), src);
            }
            if let Some(k) = change.persistent_keepalive {
                self.dev.set_persistent_keepalive(
                    id,
                    Some(Duration::from_secs(k as u64)),
                    t,
                    &mut out,
                );
            }
        }
        if added > LOGGED_ADDED_PEERS {
            self.log(
                LogLevel::Info,
                format!(
                    "{} more peers added ({added} in this request)",
                    added - LOGGED_ADDED_PEERS
                ),
            );
        }
        if req.replace_peers {
            // `wg setconf` without them: the configuration dropped them.
            self.drop_orphans();
        }
        if self
            .allowed_pub
            .publish(&self.region, &mut self.dev, &self.slots)
            .is_err()
        {
            self.log(LogLevel::Error, "AllowedIPs table full");
        }
        self.apply(out, None);
        Ok(())
    }
}

impl Daemon {
    /// Asks the data plane to bind `port` with `mark` and waits for its
    /// answer, so `wg set listen-port` fails like wireguard-go's when the
    /// port is taken, and traffic uses the new port once `wg` returns.
    fn rebind(&mut self, port: u16, mark: u32) -> Result<(), i32> {
        let h = self.region.header();
        let (old_port, old_mark) = (self.listen_port, self.fwmark);
        h.listen_port.store(port as u32, Ordering::Release);
        h.fwmark.store(mark, Ordering::Release);
        let gen = h.config_gen.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while h.applied_gen.load(Ordering::Acquire) < gen {
            if std::time::Instant::now() > deadline {
                self.log(LogLevel::Error, "data plane did not rebind in time");
                return Err(errno::EIO);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match h.bind_errno.load(Ordering::Relaxed) {
            0 => {
                self.listen_port = port;
                self.fwmark = mark;
                Ok(())
            }
            e => {
                h.listen_port.store(old_port as u32, Ordering::Release);
                h.fwmark.store(old_mark, Ordering::Release);
                // Passed on to `wg` as an errno: only a real one, or EIO.
                Err(if e < 4096 { e as i32 } else { errno::EIO })
            }
        }
    }

    fn forget_peer(&mut self, id: PeerId) {
        self.keys.forget_peer(&self.region, id);
        if let Some(s) = self.slots.release(id) {
            let p = self.region.peer(s as usize);
            p.deactivate();
            self.region.peer_info(s as usize).deactivate();
            self.region.endpoints_changed();
            self.seen.forget(s);
        }
    }
}
