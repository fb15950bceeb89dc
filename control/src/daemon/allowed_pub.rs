//! Publishing the device's AllowedIPs into the region by its changes: the
//! region's table mirrored here with each prefix's position, so a change
//! rewrites its own entry (a removal moves the last entry into its place)
//! and the count, in one seqlock publication. The whole table is written
//! when the device asks for it (first publication, `wg setconf` replacing
//! the peers, too many changes) or a change cannot be placed.

use std::collections::HashMap;
use std::net::IpAddr;

use dataplane::shm::allowed::{self, Prefix};
use dataplane::shm::Region;

use crate::device::{AllowedChanges, Device};

use super::keysync::PeerSlots;

#[derive(Default)]
pub(super) struct AllowedPublisher {
    /// The region's table as last written.
    entries: Vec<Prefix>,
    /// Position in `entries` of each (masked) prefix.
    pos: HashMap<(IpAddr, u8), usize>,
    /// The region may differ from `entries`: the next publication is whole.
    stale: bool,
}

/// `addr` with the bits past `cidr` cleared, as the table stores it.
fn masked(addr: IpAddr, cidr: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32u32.saturating_sub(cidr.into()))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128u32.saturating_sub(cidr.into()))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl AllowedPublisher {
    pub fn publish(
        &mut self,
        region: &Region,
        dev: &mut Device,
        slots: &PeerSlots,
    ) -> Result<(), allowed::TableFull> {
        let changes = dev.take_allowed_changes();
        let listed = match changes {
            AllowedChanges::Prefixes(v) if !self.stale => v,
            _ => return self.publish_all(region, dev, slots),
        };
        let mut changed = Vec::with_capacity(listed.len() + 1);
        for (addr, cidr) in listed {
            let key = (masked(addr, cidr), cidr);
            let owner = dev.allowed_ips().get_exact(addr, cidr);
            let slot = owner.and_then(|id| slots.slot(id));
            if owner.is_some() && slot.is_none() {
                // A peer without a slot yet: the whole table next time
                // picks its prefixes up once it has one.
                self.stale = true;
            }
            match (slot, self.pos.get(&key).copied()) {
                (Some(s), Some(i)) => {
                    self.entries[i].2 = s;
                    changed.push(i);
                }
                (Some(s), None) => {
                    self.pos.insert(key, self.entries.len());
                    changed.push(self.entries.len());
                    self.entries.push((key.0, cidr, s));
                }
                (None, Some(i)) => {
                    self.pos.remove(&key);
                    self.entries.swap_remove(i);
                    if let Some(&(a, c, _)) = self.entries.get(i) {
                        self.pos.insert((a, c), i);
                        changed.push(i);
                    }
                }
                (None, None) => {}
            }
        }
        let r = allowed::write_changes(region, &self.entries, &changed);
        if r.is_err() {
            self.stale = true;
        }
        r
    }

    /// Rewrites the region's table from the device's (O(n)).
    fn publish_all(
        &mut self,
        region: &Region,
        dev: &Device,
        slots: &PeerSlots,
    ) -> Result<(), allowed::TableFull> {
        self.entries.clear();
        self.pos.clear();
        let mut stale = false;
        dev.allowed_ips()
            .for_each(|addr, cidr, id| match slots.slot(id) {
                Some(s) => self.entries.push((addr, cidr, s)),
                None => stale = true,
            });
        for (i, &(a, c, _)) in self.entries.iter().enumerate() {
            self.pos.insert((a, c), i);
        }
        let r = allowed::write_table(region, &self.entries);
        self.stale = stale || r.is_err();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceSettings, PeerId, PeerSettings};
    use crate::keys::PublicKey;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    struct Setup {
        region: Region,
        dir: std::path::PathBuf,
        dev: Device,
        slots: PeerSlots,
        publisher: AllowedPublisher,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Setup {
        fn new() -> Setup {
            let dir = std::env::temp_dir()
                .join(format!("wirespeed-test-allowed-pub-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Setup {
                region: Region::create_exclusive(&dir.join("wg0.region")).unwrap(),
                dir,
                dev: Device::new(
                    core::time::Duration::ZERO,
                    Box::new(ChaCha20Rng::seed_from_u64(1)),
                    DeviceSettings::default(),
                ),
                slots: PeerSlots::default(),
                publisher: AllowedPublisher::default(),
            }
        }

        fn set(&mut self, n: u8, prefixes: &[&str]) -> PeerId {
            let mut s = PeerSettings::new(PublicKey([n; 32]));
            s.allowed_ips = prefixes
                .iter()
                .map(|p| {
                    let (a, c) = p.split_once('/').unwrap();
                    (a.parse().unwrap(), c.parse().unwrap())
                })
                .collect();
            let id = self.dev.upsert_peer(s).unwrap();
            self.slots.assign(id, 1024).unwrap();
            id
        }

        /// Publishes; true if only the changes were written.
        fn publish(&mut self) -> bool {
            let before = allowed::table_seq(&self.region);
            let whole = matches!(self.dev.allowed_changes_peek(), AllowedChanges::Full);
            self.publisher
                .publish(&self.region, &mut self.dev, &self.slots)
                .unwrap();
            assert_ne!(allowed::table_seq(&self.region), before, "published");
            !whole
        }

        /// The region's table equals the device's, whatever the order.
        fn check(&self) {
            let mut got = allowed::read_table(&self.region).unwrap().0;
            let mut want = Vec::new();
            self.dev.allowed_ips().for_each(|a, c, id| {
                want.push((a, c, self.slots.slot(id).unwrap()));
            });
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
    }

    /// After each kind of change, publishing only the changes leaves the
    /// region's table as publishing all of it would.
    #[test]
    fn published_changes_equal_the_whole_table() {
        let mut t = Setup::new();
        let a = t.set(1, &["10.0.0.0/24", "10.0.1.0/24", "fd00::/64"]);
        let b = t.set(2, &["10.1.0.0/16"]);
        for n in 3..40 {
            t.set(n, &[&format!("10.2.{n}.1/32")]);
        }
        assert!(!t.publish(), "the first publication is whole");
        t.check();
        // A prefix moves to another peer, host bits as given.
        t.set(2, &["10.0.1.7/24"]);
        assert!(t.publish());
        t.check();
        // A peer's prefixes replaced, and a peer removed.
        t.dev.clear_allowed_ips(a);
        t.set(1, &["192.168.0.0/16"]);
        t.dev.remove_peer(b);
        t.slots.release(b);
        assert!(t.publish());
        t.check();
        // Nothing changed: still a publication, the same table.
        assert!(t.publish());
        t.check();
        // Everything replaced: whole again.
        t.dev.remove_all_peers();
        t.set(50, &["172.16.0.0/12"]);
        assert!(!t.publish());
        t.check();
    }

    #[test]
    fn masking_matches_the_table() {
        let m = |s: &str, c| masked(s.parse().unwrap(), c).to_string();
        assert_eq!(m("10.1.2.3", 16), "10.1.0.0");
        assert_eq!(m("10.1.2.3", 0), "0.0.0.0");
        assert_eq!(m("10.1.2.3", 32), "10.1.2.3");
        assert_eq!(m("fd00::1:2", 112), "fd00::1:0");
        assert_eq!(m("fd00::1", 128), "fd00::1");
    }
}
