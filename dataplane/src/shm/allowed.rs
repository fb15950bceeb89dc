//! The AllowedIPs table as control compiled it: a flat list of prefixes the
//! data plane turns into its own trie whenever the table's seq changes.

use core::sync::atomic::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{seqlock, Region};

/// One prefix and the peer slot it belongs to.
pub type Prefix = (IpAddr, u8, u32);

/// More prefixes than the region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Control: replaces the whole table.
pub fn write_table(r: &Region, entries: &[Prefix]) -> Result<(), TableFull> {
    if entries.len() > r.allowed_capacity() {
        return Err(TableFull);
    }
    let h = r.allowed_header();
    seqlock::write(&h.seq, || {
        for (i, &e) in entries.iter().enumerate() {
            store_entry(r, i, e);
        }
        h.count.store(entries.len() as u32, Ordering::Relaxed);
    });
    Ok(())
}

/// Control: the table becomes `entries`, of which only those at
/// `changed` differ from what the region holds (the others are there
/// already): one publication, like [`write_table`], at the cost of the
/// changes. Positions past the end are ignored.
pub fn write_changes(r: &Region, entries: &[Prefix], changed: &[usize]) -> Result<(), TableFull> {
    if entries.len() > r.allowed_capacity() {
        return Err(TableFull);
    }
    let h = r.allowed_header();
    seqlock::write(&h.seq, || {
        for &i in changed {
            if let Some(&e) = entries.get(i) {
                store_entry(r, i, e);
            }
        }
        h.count.store(entries.len() as u32, Ordering::Relaxed);
    });
    Ok(())
}

/// Writes entry `i`; only inside a seqlock write.
fn store_entry(r: &Region, i: usize, (addr, cidr, peer): Prefix) {
    let e = r.allowed_entry(i);
    let (family, bytes) = match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (4u64, b)
        }
        IpAddr::V6(a) => (6u64, a.octets()),
    };
    seqlock::store_bytes(&e.addr, &bytes);
    e.meta.store(
        family << 40 | (cidr as u64) << 32 | peer as u64,
        Ordering::Relaxed,
    );
}

/// The table's publication number.
pub fn table_seq(r: &Region) -> u64 {
    r.allowed_header().seq.load(Ordering::Acquire)
}

/// Data plane: a consistent copy of the table and its seq.
pub fn read_table(r: &Region) -> Option<(Vec<Prefix>, u64)> {
    let h = r.allowed_header();
    seqlock::read(&h.seq, || {
        let n = (h.count.load(Ordering::Relaxed) as usize).min(r.allowed_capacity());
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let e = r.allowed_entry(i);
            let mut b = [0u8; 16];
            seqlock::load_bytes(&e.addr, &mut b);
            let meta = e.meta.load(Ordering::Relaxed);
            let cidr = (meta >> 32) as u8;
            let peer = meta as u32;
            let addr = match meta >> 40 {
                4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                _ => IpAddr::V6(Ipv6Addr::from(b)),
            };
            v.push((addr, cidr, peer));
        }
        v
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_region;
    use super::*;

    #[test]
    fn write_then_read() {
        let (r, _dir) = temp_region("allowed");
        let t = vec![
            ("10.0.0.0".parse().unwrap(), 8, 1),
            ("2001:db8::".parse().unwrap(), 32, 2),
        ];
        let s0 = table_seq(&r);
        write_table(&r, &t).unwrap();
        assert_ne!(table_seq(&r), s0);
        let (got, seq) = read_table(&r).unwrap();
        assert_eq!(got, t);
        assert_eq!(seq, table_seq(&r));
    }

    #[test]
    fn changes_rewrite_only_their_entries() {
        let (r, _dir) = temp_region("allowed-changes");
        let mut t: Vec<Prefix> = vec![
            ("10.0.0.0".parse().unwrap(), 8, 1),
            ("10.1.0.0".parse().unwrap(), 16, 2),
            ("2001:db8::".parse().unwrap(), 32, 3),
        ];
        write_table(&r, &t).unwrap();
        // The first moved to peer 9, the last removed (the table shrinks).
        t[0].2 = 9;
        t.pop();
        let s0 = table_seq(&r);
        write_changes(&r, &t, &[0, 7]).unwrap();
        assert_ne!(table_seq(&r), s0, "a new publication");
        assert_eq!(read_table(&r).unwrap().0, t);
        t.push(("fd00::".parse().unwrap(), 8, 4));
        write_changes(&r, &t, &[2]).unwrap();
        assert_eq!(read_table(&r).unwrap().0, t);
    }
}
