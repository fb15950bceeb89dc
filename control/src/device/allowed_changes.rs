//! The AllowedIPs changes a device made since they were last published, so
//! that `wg set wg0 peer P allowed-ips ...` with 1,000,000 peers rewrites
//! the few region entries that changed instead of all of them (a walk of
//! the whole table and a slot lookup per prefix, 150-300 ms each time).

use std::net::IpAddr;

/// Beyond this many listed prefixes (or a quarter of the table, if more),
/// publishing the whole table is as cheap and the list is dropped.
const MAX_LISTED: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedChanges {
    /// Publish the whole table: nothing published yet, cleared, or too
    /// many changes to list.
    Full,
    /// These prefixes (host bits as given) changed owner or went away.
    Prefixes(Vec<(IpAddr, u8)>),
}

impl AllowedChanges {
    /// `addr/cidr` changed in a table now holding `len` prefixes.
    pub(super) fn note(&mut self, addr: IpAddr, cidr: u8, len: usize) {
        if let AllowedChanges::Prefixes(v) = self {
            if v.len() >= MAX_LISTED.max(len / 4) {
                *self = AllowedChanges::Full;
            } else {
                v.push((addr, cidr));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_becomes_the_whole_table() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut c = AllowedChanges::Prefixes(Vec::new());
        c.note(a, 32, 10);
        assert_eq!(c, AllowedChanges::Prefixes(vec![(a, 32)]));
        for _ in 0..MAX_LISTED {
            c.note(a, 32, 10);
        }
        assert_eq!(c, AllowedChanges::Full);
        c.note(a, 32, 10);
        assert_eq!(c, AllowedChanges::Full, "stays whole");
    }
}
