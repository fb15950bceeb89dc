//! Cryptokey routing: the AllowedIPs table mapping addresses to peers.
//!
//! Each address family is a path-compressed binary trie (the structure the
//! Linux kernel's allowedips.c uses), chosen over one hash table per prefix
//! length because:
//! - a lookup follows one root-to-leaf path and stops at the first mismatch, so
//!   its cost grows with log2(prefixes), not with the number of distinct prefix
//!   lengths present (a v6 table with peers at /48, /56, /64, /96, /128 and so
//!   on would cost one hash probe per length, most of them misses);
//! - it needs no hasher on the hot path and no rehashing when configs grow;
//! - an in-order walk gives the whole table in O(n), sorted, for `wg showconf`.
//!
//! Nodes live in a `Vec` addressed by `u32` indices rather than boxed pointers:
//! v4 nodes are 16 bytes and v6 nodes 32, so a cache line holds several, and
//! the trie needs neither unsafe code nor reference counting. Values sit in a
//! parallel `Vec` so a lookup only touches them once, at the end.
//!
//! Invariant: a node without a value always has two children (it exists only
//! to branch), which keeps the trie at fewer than 2n nodes for n prefixes.
//!
//! Large tables add a jump table over 16 bits (level compression, as in
//! DIR-16 routers): a 100,000-prefix trie is about 17 levels deep, and each
//! level is a dependent load that misses cache once other work has evicted
//! the table; the jump table replaces 16 of them with one load. The 16 bits
//! are those after the prefix every key of the trie's top chain shares (its
//! anchor), not the address's first 16: a server's peers usually sit in one
//! pool (10.0.0.0/12, say), where the first 16 bits tell apart a handful of
//! entries and left a 1,000,000-peer lookup 16 levels to walk. Keys outside
//! the anchor walk from the root, past the few nodes above it. The table is
//! kept exact on every insert and remove by recomputing only the entries
//! below the changed link; a change above the anchor re-anchors it and
//! refills all 65,536 entries (about a millisecond).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a prefix could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowedIpsError {
    /// The prefix length exceeds the address width (32 for IPv4, 128 for IPv6).
    CidrTooLong { cidr: u8, max: u8 },
    /// The table already holds as many nodes as `u32` indices can address.
    TableFull,
}

impl fmt::Display for AllowedIpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CidrTooLong { cidr, max } => {
                write!(
                    f,
                    "prefix length /{cidr} is longer than the address (/{max})"
                )
            }
            Self::TableFull => f.write_str("allowed-IPs table is full"),
        }
    }
}

impl std::error::Error for AllowedIpsError {}

/// Longest-prefix-match table from IPv4 and IPv6 addresses to a value (a peer id).
/// Each prefix belongs to at most one value.
#[derive(Clone)]
pub struct AllowedIps<T> {
    v4: Trie<u32, T>,
    v6: Trie<u128, T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for AllowedIps<T> {
    // The node arrays are meaningless to a reader; sizes are what matter in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowedIps")
            .field("v4_prefixes", &self.v4.len)
            .field("v6_prefixes", &self.v6.len)
            .finish()
    }
}

impl<T> AllowedIps<T> {
    pub const fn new() -> Self {
        Self {
            v4: Trie::new(),
            v6: Trie::new(),
        }
    }

    #[cfg(test)]
    const fn with_jump(jump_bits: u8, jump_min: usize) -> Self {
        Self {
            v4: Trie::with_jump(jump_bits, jump_min),
            v6: Trie::with_jump(jump_bits, jump_min),
        }
    }

    /// Number of prefixes stored, both families together.
    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }
}

impl<T: Copy + Eq> AllowedIps<T> {
    /// A table of `prefixes` (a later one wins a prefix listed twice; an
    /// invalid one is skipped), with the jump table filled once at the end
    /// rather than kept exact through every insert: the data plane's copy
    /// of a 1,000,000-prefix table is built this way on each change.
    pub fn from_prefixes(prefixes: impl IntoIterator<Item = (IpAddr, u8, T)>) -> Self {
        let mut t = Self::new();
        let jump_min = (t.v4.jump_min, t.v6.jump_min);
        (t.v4.jump_min, t.v6.jump_min) = (usize::MAX, usize::MAX);
        let prefixes = prefixes.into_iter();
        // Fewer than two nodes a prefix; most tables are mostly IPv4.
        let n = prefixes.size_hint().0;
        t.v4.nodes.reserve(2 * n);
        t.v4.values.reserve(2 * n);
        for (addr, cidr, value) in prefixes {
            let _ = t.insert(addr, cidr, value);
        }
        if t.v4.nodes.capacity() > 2 * t.v4.nodes.len() + 1024 {
            // Mostly IPv6 after all: give the room back.
            t.v4.nodes.shrink_to_fit();
            t.v4.values.shrink_to_fit();
        }
        (t.v4.jump_min, t.v6.jump_min) = jump_min;
        t.v4.maybe_add_jump();
        t.v6.maybe_add_jump();
        t
    }

    /// Maps `addr/cidr` to `value`. Host bits past the prefix are ignored, so
    /// 10.0.0.1/24 is 10.0.0.0/24. A prefix held by another value moves to `value`.
    pub fn insert(&mut self, addr: IpAddr, cidr: u8, value: T) -> Result<(), AllowedIpsError> {
        match addr {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), cidr, value),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), cidr, value),
        }
    }

    /// Removes exactly the prefix `addr/cidr` (host bits ignored), returning
    /// the value it belonged to. Longer or shorter prefixes are untouched.
    pub fn remove(&mut self, addr: IpAddr, cidr: u8) -> Option<T> {
        match addr {
            IpAddr::V4(a) => self.v4.remove(u32::from(a), cidr),
            IpAddr::V6(a) => self.v6.remove(u128::from(a), cidr),
        }
    }

    /// The value of exactly the prefix `addr/cidr` (host bits ignored), if
    /// the table holds that prefix.
    pub fn get_exact(&self, addr: IpAddr, cidr: u8) -> Option<T> {
        match addr {
            IpAddr::V4(a) => self.v4.get_exact(u32::from(a), cidr),
            IpAddr::V6(a) => self.v6.get_exact(u128::from(a), cidr),
        }
    }

    /// Removes the prefix `addr/cidr` if it still belongs to `value` (it
    /// may have moved to another value since): O(depth). Whoever keeps
    /// each value's prefixes removes a value with this in O(its prefixes
    /// × depth), where [`remove_value`](Self::remove_value) walks the table.
    pub fn remove_if_owned(&mut self, addr: IpAddr, cidr: u8, value: T) -> bool {
        if self.get_exact(addr, cidr) != Some(value) {
            return false;
        }
        self.remove(addr, cidr).is_some()
    }

    /// Removes every prefix belonging to `value` (a peer being deleted).
    /// O(n) for the scan, since `T` is not required to be hashable.
    pub fn remove_value(&mut self, value: T) {
        self.v4.remove_value(value);
        self.v6.remove_value(value);
    }

    /// The value of the longest prefix containing `addr`. Never allocates.
    pub fn lookup(&self, addr: IpAddr) -> Option<T> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<T> {
        self.v4.lookup(u32::from(addr))
    }

    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<T> {
        self.v6.lookup(u128::from(addr))
    }

    /// All prefixes of `value`, IPv4 first, each family in address order.
    pub fn prefixes_of(&self, value: T) -> Vec<(IpAddr, u8)> {
        let mut out = Vec::new();
        self.for_each(|addr, cidr, v| {
            if v == value {
                out.push((addr, cidr));
            }
        });
        out
    }

    /// Calls `f` once per prefix, IPv4 first, each family in address order
    /// (shorter prefix before the longer ones inside it), in one O(n) walk.
    pub fn for_each(&self, mut f: impl FnMut(IpAddr, u8, T)) {
        self.v4
            .for_each(|k, cidr, v| f(IpAddr::V4(Ipv4Addr::from(k)), cidr, v));
        self.v6
            .for_each(|k, cidr, v| f(IpAddr::V6(Ipv6Addr::from(k)), cidr, v));
    }
}

/// An address as an unsigned integer, most significant bit first.
trait Key: Copy + Eq + Default {
    const BITS: u8;
    fn mask(self, cidr: u8) -> Self;
    /// Bit `i` counted from the top; 0 for `i >= BITS`.
    fn bit(self, i: u8) -> usize;
    /// Number of leading bits `self` and `other` share.
    fn common_bits(self, other: Self) -> u8;
    /// The first `bits` bits (at most 16) as an index.
    fn top(self, bits: u8) -> usize;
    /// The `bits` bits (at most 16) after the first `from` as an index.
    fn bits_at(self, from: u8, bits: u8) -> usize;
    /// `self` with bit `i` (counted from the top) set.
    fn with_bit(self, i: u8) -> Self;
}

macro_rules! impl_key {
    ($t:ty) => {
        impl Key for $t {
            const BITS: u8 = <$t>::BITS as u8;

            #[inline]
            fn mask(self, cidr: u8) -> Self {
                // A shift by the full width is the /0 case, where nothing is kept.
                let shift = u32::from(<Self as Key>::BITS.saturating_sub(cidr));
                self & (<$t>::MAX).checked_shl(shift).unwrap_or(0)
            }

            #[inline]
            fn bit(self, i: u8) -> usize {
                let shift = u32::from(<Self as Key>::BITS.wrapping_sub(1).wrapping_sub(i));
                (self.checked_shr(shift).unwrap_or(0) & 1) as usize
            }

            #[inline]
            fn common_bits(self, other: Self) -> u8 {
                (self ^ other).leading_zeros() as u8
            }

            #[inline]
            fn top(self, bits: u8) -> usize {
                let shift = u32::from(<Self as Key>::BITS.saturating_sub(bits));
                self.checked_shr(shift).unwrap_or(0) as usize
            }

            #[inline]
            fn bits_at(self, from: u8, bits: u8) -> usize {
                self.checked_shl(u32::from(from)).unwrap_or(0).top(bits)
            }

            #[inline]
            fn with_bit(self, i: u8) -> Self {
                let shift = u32::from(<Self as Key>::BITS.wrapping_sub(1).wrapping_sub(i));
                self | (1 as $t).checked_shl(shift).unwrap_or(0)
            }
        }
    };
}

impl_key!(u32);
impl_key!(u128);

/// Index meaning "no node"; never a valid index because the arena is capped below it.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node<K> {
    /// The prefix, host bits zero.
    key: K,
    /// Subtrees whose prefixes continue with a 0 or a 1 bit at position `cidr`.
    child: [u32; 2],
    cidr: u8,
    has_value: bool,
}

/// Where the walk for every key starting with one 16-bit value stands after
/// the nodes shorter than 16 bits: the node to continue from and the deepest
/// matching node with a value so far (NONE when there is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Jump {
    node: u32,
    best: u32,
}

/// Width of the jump table index; 2^16 entries of 8 bytes.
const JUMP_BITS: u8 = 16;
/// Below this many prefixes the trie is shallow and cache-resident, and
/// half a megabyte of jump table per family would be waste.
const JUMP_MIN_PREFIXES: usize = 2048;

/// Where a node hangs: the root slot or one child slot of a parent.
#[derive(Clone, Copy)]
enum Link {
    Root,
    Child(u32, usize),
}

#[derive(Clone)]
struct Trie<K, T> {
    nodes: Vec<Node<K>>,
    values: Vec<Option<T>>,
    /// Freed node slots, reused before the arena grows.
    free: Vec<u32>,
    root: u32,
    len: usize,
    /// Empty until the table reaches `jump_min`; then `2^jump_bits` entries.
    jump: Vec<Jump>,
    /// The prefix (key, length) whose keys the jump table covers, indexed
    /// by their `jump_bits` bits after it; set with the table.
    anchor: Option<(K, u8)>,
    jump_bits: u8,
    jump_min: usize,
}

impl<K, T> Trie<K, T> {
    const fn new() -> Self {
        Self::with_jump(JUMP_BITS, JUMP_MIN_PREFIXES)
    }

    /// Tests shrink the jump table so that small random tables exercise it.
    const fn with_jump(jump_bits: u8, jump_min: usize) -> Self {
        Self {
            nodes: Vec::new(),
            values: Vec::new(),
            free: Vec::new(),
            root: NONE,
            len: 0,
            jump: Vec::new(),
            anchor: None,
            jump_bits,
            jump_min,
        }
    }

    fn clear(&mut self) {
        *self = Self::with_jump(self.jump_bits, self.jump_min);
    }
}

impl<K: Key, T: Copy + Eq> Trie<K, T> {
    fn link(&self, link: Link) -> u32 {
        match link {
            Link::Root => self.root,
            Link::Child(parent, side) => self.nodes[parent as usize].child[side],
        }
    }

    fn set_link(&mut self, link: Link, to: u32) {
        match link {
            Link::Root => self.root = to,
            Link::Child(parent, side) => self.nodes[parent as usize].child[side] = to,
        }
    }

    fn can_alloc(&self, count: usize) -> bool {
        self.free.len() + (NONE as usize).saturating_sub(self.nodes.len()) >= count
    }

    /// Callers check `can_alloc` first, so an insert either completes or
    /// changes nothing.
    fn alloc(&mut self, key: K, cidr: u8, value: Option<T>) -> u32 {
        let node = Node {
            key,
            child: [NONE; 2],
            cidr,
            has_value: value.is_some(),
        };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                self.values[i as usize] = value;
                i
            }
            None => {
                self.nodes.push(node);
                self.values.push(value);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, i: u32) {
        self.nodes[i as usize].child = [NONE; 2];
        self.nodes[i as usize].has_value = false;
        self.values[i as usize] = None;
        self.free.push(i);
    }

    fn insert(&mut self, key: K, cidr: u8, value: T) -> Result<(), AllowedIpsError> {
        if cidr > K::BITS {
            return Err(AllowedIpsError::CidrTooLong { cidr, max: K::BITS });
        }
        if !self.can_alloc(2) {
            return Err(AllowedIpsError::TableFull);
        }
        let key = key.mask(cidr);
        let mut at = Link::Root;
        // Each arm names the part of the key space whose walks changed.
        let changed = loop {
            let cur = self.link(at);
            if cur == NONE {
                let new = self.alloc(key, cidr, Some(value));
                self.set_link(at, new);
                break Some(self.link_region(at));
            }
            let node = self.nodes[cur as usize];
            let common = key.common_bits(node.key).min(cidr).min(node.cidr);
            if common == node.cidr {
                if node.cidr == cidr {
                    self.values[cur as usize] = Some(value);
                    if node.has_value {
                        // Same node index, so no jump entry changes.
                        return Ok(());
                    }
                    self.nodes[cur as usize].has_value = true;
                    break Some((node.key, node.cidr));
                }
                at = Link::Child(cur, key.bit(node.cidr));
            } else if common == cidr {
                // The new prefix contains this node: it slots in above it.
                let new = self.alloc(key, cidr, Some(value));
                self.nodes[new as usize].child[node.key.bit(cidr)] = cur;
                self.set_link(at, new);
                break Some(self.link_region(at));
            } else {
                // The prefixes diverge below both lengths: branch where they part.
                let branch = self.alloc(key.mask(common), common, None);
                let leaf = self.alloc(key, cidr, Some(value));
                self.nodes[branch as usize].child[key.bit(common)] = leaf;
                self.nodes[branch as usize].child[node.key.bit(common)] = cur;
                self.set_link(at, branch);
                break Some(self.link_region(at));
            }
        };
        self.len += 1;
        if let Some(region) = changed {
            self.refresh_jump(region);
        }
        self.maybe_add_jump();
        Ok(())
    }

    fn remove(&mut self, key: K, cidr: u8) -> Option<T> {
        if cidr > K::BITS {
            return None;
        }
        let key = key.mask(cidr);
        // Only the parent and grandparent slots are needed: removing a leaf can
        // leave its parent a valueless single-child node, which must be spliced
        // out to keep the invariant, and that cannot cascade further.
        let mut at = Link::Root;
        let mut parent_at = None;
        let mut cur = self.root;
        loop {
            let node = self.nodes.get(cur as usize)?;
            if node.cidr > cidr || key.common_bits(node.key) < node.cidr {
                return None;
            }
            if node.cidr == cidr {
                break;
            }
            parent_at = Some(at);
            at = Link::Child(cur, key.bit(node.cidr));
            cur = node.child[key.bit(node.cidr)];
        }
        let old = self.values[cur as usize].take()?;
        self.nodes[cur as usize].has_value = false;
        self.len -= 1;
        // The region of the highest link rewritten contains every other change.
        let changed = match self.nodes[cur as usize].child {
            [NONE, NONE] => {
                self.set_link(at, NONE);
                self.release(cur);
                match (at, parent_at) {
                    (Link::Child(parent, side), Some(parent_at))
                        if !self.nodes[parent as usize].has_value =>
                    {
                        let sibling = self.nodes[parent as usize].child[1 - side];
                        self.set_link(parent_at, sibling);
                        self.release(parent);
                        self.link_region(parent_at)
                    }
                    _ => self.link_region(at),
                }
            }
            [only, NONE] | [NONE, only] => {
                self.set_link(at, only);
                self.release(cur);
                self.link_region(at)
            }
            // Still needed as the branch point of two subtrees.
            _ => (key, cidr),
        };
        self.refresh_jump(changed);
        Some(old)
    }

    /// The key space whose walks pass through `link`, as (prefix, length).
    fn link_region(&self, link: Link) -> (K, u8) {
        match link {
            Link::Root => (K::default(), 0),
            Link::Child(parent, side) => {
                let p = self.nodes[parent as usize];
                let key = if side == 1 {
                    p.key.with_bit(p.cidr)
                } else {
                    p.key
                };
                (key, p.cidr + 1)
            }
        }
    }

    /// Adds the jump table once the trie is large enough to need it.
    fn maybe_add_jump(&mut self) {
        if self.jump.is_empty() && self.len >= self.jump_min {
            self.rebuild_jump();
        }
    }

    /// Where the jump table pays: the end of the chain of single-child
    /// nodes from the root (the prefix all keys below share), no deeper
    /// than leaves `jump_bits` bits of key to index.
    fn choose_anchor(&self) -> (K, u8) {
        let max = K::BITS - self.jump_bits;
        let mut cur = self.root;
        while let Some(node) = self.nodes.get(cur as usize) {
            if node.cidr >= max {
                return (node.key.mask(max), max);
            }
            cur = match node.child {
                [c, NONE] if c != NONE => c,
                [NONE, c] if c != NONE => c,
                _ => return (node.key, node.cidr),
            };
        }
        (K::default(), 0)
    }

    /// Anchors the jump table afresh and fills every entry.
    fn rebuild_jump(&mut self) {
        if self.jump.is_empty() {
            self.jump = vec![
                Jump {
                    node: NONE,
                    best: NONE
                };
                1usize << self.jump_bits
            ];
        }
        let anchor = self.choose_anchor();
        self.anchor = Some(anchor);
        self.fill_from_root(anchor);
    }

    /// Recomputes the jump entries for keys starting with `key/depth` after a
    /// change to the trie there. Changes deeper than the jump width leave the
    /// entries alone: a walk stops at the first node of that depth, and that
    /// node keeps its index. A change above the anchor re-anchors the table.
    fn refresh_jump(&mut self, (key, depth): (K, u8)) {
        let Some((anchor, at)) = self.anchor else {
            return;
        };
        let key = key.mask(depth);
        if depth <= at {
            // Disjoint from the anchor's keys, or containing all of them.
            if anchor.mask(depth) == key {
                self.rebuild_jump();
            }
            return;
        }
        if depth > at + self.jump_bits || key.common_bits(anchor) < at {
            return;
        }
        self.fill_from_root((key, depth));
    }

    /// Fills the entries for keys starting with `key/depth` (inside the
    /// anchor's) from a walk down from the root.
    fn fill_from_root(&mut self, (key, depth): (K, u8)) {
        let mut cur = self.root;
        let mut best = NONE;
        while let Some(node) = self.nodes.get(cur as usize) {
            if node.cidr >= depth {
                break;
            }
            if key.common_bits(node.key) < node.cidr {
                cur = NONE;
                break;
            }
            if node.has_value {
                best = cur;
            }
            cur = node.child[key.bit(node.cidr)];
        }
        self.fill_jump(key, depth, cur, best);
    }

    /// Fills the entries for keys starting with `key/depth`, whose walk has
    /// reached `cur` (with `cur.cidr >= depth`) having matched `best`. Recursion
    /// is at most `jump_bits` deep, one bit per level.
    fn fill_jump(&mut self, key: K, depth: u8, cur: u32, best: u32) {
        let Some(&node) = self.nodes.get(cur as usize) else {
            return self.set_jump(key, depth, Jump { node: NONE, best });
        };
        if node.cidr >= self.jump_end() {
            return self.set_jump(key, depth, Jump { node: cur, best });
        }
        if key.common_bits(node.key) < depth {
            return self.set_jump(key, depth, Jump { node: NONE, best });
        }
        if node.cidr > depth {
            // Path compression skipped bit `depth`: only one half can still match.
            let (on, off) = if node.key.bit(depth) == 0 {
                (key, key.with_bit(depth))
            } else {
                (key.with_bit(depth), key)
            };
            self.fill_jump(on, depth + 1, cur, best);
            return self.set_jump(off, depth + 1, Jump { node: NONE, best });
        }
        let best = if node.has_value { cur } else { best };
        self.fill_jump(key, depth + 1, node.child[0], best);
        self.fill_jump(key.with_bit(depth), depth + 1, node.child[1], best);
    }

    /// The depth at which walks from the jump table start.
    fn jump_end(&self) -> u8 {
        self.anchor.map_or(0, |(_, at)| at) + self.jump_bits
    }

    /// The entry for `key`, if the jump table covers it.
    #[inline]
    fn jump_entry(&self, key: K) -> Option<&Jump> {
        let (anchor, at) = self.anchor?;
        if key.common_bits(anchor) < at {
            return None;
        }
        self.jump.get(key.bits_at(at, self.jump_bits))
    }

    fn set_jump(&mut self, key: K, depth: u8, entry: Jump) {
        let at = self.anchor.map_or(0, |(_, at)| at);
        let start = key.bits_at(at, self.jump_bits);
        let count = 1usize << self.jump_end().saturating_sub(depth);
        if let Some(entries) = self.jump.get_mut(start..start + count) {
            entries.fill(entry);
        }
    }

    fn get_exact(&self, key: K, cidr: u8) -> Option<T> {
        if cidr > K::BITS {
            return None;
        }
        let key = key.mask(cidr);
        let mut cur = self.root;
        loop {
            let node = self.nodes.get(cur as usize)?;
            if node.cidr > cidr || key.common_bits(node.key) < node.cidr {
                return None;
            }
            if node.cidr == cidr {
                return self.values.get(cur as usize).copied().flatten();
            }
            cur = node.child[key.bit(node.cidr)];
        }
    }

    fn remove_value(&mut self, value: T) {
        let mut doomed = Vec::new();
        self.for_each(|key, cidr, v| {
            if v == value {
                doomed.push((key, cidr));
            }
        });
        for (key, cidr) in doomed {
            self.remove(key, cidr);
        }
    }

    #[inline]
    fn lookup(&self, key: K) -> Option<T> {
        let (mut cur, mut best) = match self.jump_entry(key) {
            Some(j) => (j.node, j.best),
            None => (self.root, NONE),
        };
        // NONE is past the end of the arena, so `get` also ends the walk.
        while let Some(node) = self.nodes.get(cur as usize) {
            if key.common_bits(node.key) < node.cidr {
                break;
            }
            if node.has_value {
                best = cur;
            }
            cur = node.child[key.bit(node.cidr)];
        }
        // A /BITS node has no children; `bit` of an out-of-range position is 0
        // and child[0] is NONE there, so the loop above ends on its own.
        self.values.get(best as usize).copied().flatten()
    }

    fn for_each(&self, mut f: impl FnMut(K, u8, T)) {
        // Depth is at most BITS + 1 and the stack holds at most one pending
        // sibling per level, so it stays small.
        let mut stack = Vec::with_capacity(usize::from(K::BITS) + 2);
        stack.push(self.root);
        while let Some(cur) = stack.pop() {
            let Some(node) = self.nodes.get(cur as usize) else {
                continue;
            };
            if let Some(Some(v)) = self.values.get(cur as usize) {
                f(node.key, node.cidr, *v);
            }
            stack.push(node.child[1]);
            stack.push(node.child[0]);
        }
    }

    /// How many nodes a lookup of `key` reads after the jump table (tests).
    #[cfg(test)]
    fn nodes_walked(&self, key: K) -> usize {
        let mut cur = self.jump_entry(key).map_or(self.root, |j| j.node);
        let mut n = 0;
        while let Some(node) = self.nodes.get(cur as usize) {
            n += 1;
            if key.common_bits(node.key) < node.cidr {
                break;
            }
            cur = node.child[key.bit(node.cidr)];
        }
        n
    }

    /// Checks the structural invariants; panics on violation (tests only).
    #[cfg(test)]
    fn check(&self) {
        let mut reachable = 0;
        let mut with_value = 0;
        let mut stack = vec![(self.root, None::<(K, u8)>)];
        while let Some((cur, parent)) = stack.pop() {
            let Some(node) = self.nodes.get(cur as usize) else {
                assert_eq!(cur, NONE, "dangling index");
                continue;
            };
            reachable += 1;
            assert_eq!(node.has_value, self.values[cur as usize].is_some());
            assert!(node.cidr <= K::BITS);
            assert!(node.key.mask(node.cidr) == node.key, "host bits set");
            if node.has_value {
                with_value += 1;
            } else {
                assert!(
                    node.child.iter().all(|&c| c != NONE),
                    "valueless node without two children"
                );
            }
            if let Some((pkey, pcidr)) = parent {
                assert!(node.cidr > pcidr);
                assert!(
                    node.key.common_bits(pkey) >= pcidr,
                    "child outside parent prefix"
                );
            }
            for (side, &c) in node.child.iter().enumerate() {
                if let Some(child) = self.nodes.get(c as usize) {
                    assert_eq!(child.key.bit(node.cidr), side, "child on the wrong side");
                }
                stack.push((c, Some((node.key, node.cidr))));
            }
        }
        assert_eq!(with_value, self.len);
        assert_eq!(reachable, self.nodes.len() - self.free.len());
        assert!(reachable <= 2 * self.len.max(1));
        if !self.jump.is_empty() {
            let k = self.jump_bits;
            let (anchor, at) = self.anchor.expect("anchored with the table");
            assert!(anchor.mask(at) == anchor, "host bits in the anchor");
            assert!(at + k <= K::BITS);
            assert_eq!(self.jump.len(), 1 << k);
            for (t, entry) in self.jump.iter().enumerate() {
                // The walk the jump entry stands for, done from the root.
                let mut key = anchor;
                for i in 0..k {
                    if (t >> (k - 1 - i)) & 1 == 1 {
                        key = key.with_bit(at + i);
                    }
                }
                assert_eq!(self.jump_entry(key), Some(entry));
                let mut cur = self.root;
                let mut best = NONE;
                while let Some(node) = self.nodes.get(cur as usize) {
                    if node.cidr >= at + k {
                        break;
                    }
                    if key.common_bits(node.key) < node.cidr {
                        cur = NONE;
                        break;
                    }
                    if node.has_value {
                        best = cur;
                    }
                    cur = node.child[key.bit(node.cidr)];
                }
                assert_eq!(*entry, Jump { node: cur, best }, "jump entry {t:#x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn check(t: &AllowedIps<u32>) {
        t.v4.check();
        t.v6.check();
    }

    /// A server's peers, one /32 each from one pool: their addresses share
    /// the first 16 bits (and more), so a jump table over those bits left a
    /// 12-level walk for 4,096 peers (16 for 1,000,000); anchored where the
    /// trie branches, the table leads to the leaf itself. A default route
    /// and a second pool added later re-anchor it and keep lookups exact.
    #[test]
    fn a_pool_of_host_routes_is_one_jump_deep() {
        let mut t = AllowedIps::new();
        let pool = |p: u32| Ipv4Addr::from(0x0a40_0000 + p);
        for p in 0..4096 {
            t.insert(IpAddr::V4(pool(p)), 32, p).unwrap();
        }
        check(&t);
        for p in (0..4096).step_by(7) {
            assert_eq!(t.lookup_v4(pool(p)), Some(p));
            assert_eq!(t.v4.nodes_walked(u32::from(pool(p))), 1, "peer {p}");
        }
        // Above the anchor: the table re-anchors and stays exact.
        t.insert(ip("0.0.0.0"), 0, 9999).unwrap();
        t.insert(ip("10.64.0.0"), 10, 8888).unwrap();
        t.insert(ip("192.168.0.1"), 32, 7777).unwrap();
        check(&t);
        assert_eq!(t.lookup_v4(pool(5)), Some(5));
        assert_eq!(t.lookup_v4(pool(5000)), Some(8888));
        assert_eq!(t.lookup(ip("192.168.0.1")), Some(7777));
        assert_eq!(t.lookup(ip("192.168.0.2")), Some(9999));
        for p in 0..4096 {
            t.remove(IpAddr::V4(pool(p)), 32);
        }
        check(&t);
        assert_eq!(t.lookup_v4(pool(5)), Some(8888));
    }

    #[test]
    fn built_at_once_equals_built_by_inserts() {
        let mut prefixes: Vec<(IpAddr, u8, u32)> = (0..5000u32)
            .map(|p| (IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + p * 3)), 32, p))
            .collect();
        prefixes.push((ip("10.0.0.0"), 20, 1_000_000));
        prefixes.push((ip("fd00::1"), 128, 7));
        prefixes.push((ip("10.0.0.3"), 32, 2_000_000)); // listed again: this one wins
        prefixes.push((ip("10.0.0.0"), 33, 1)); // invalid: skipped
        let bulk = AllowedIps::from_prefixes(prefixes.iter().copied());
        let mut one_by_one = AllowedIps::new();
        for &(a, c, v) in &prefixes {
            let _ = one_by_one.insert(a, c, v);
        }
        check(&bulk);
        assert!(!bulk.v4.jump.is_empty());
        assert_eq!(bulk.len(), one_by_one.len());
        for probe in (0..20_000u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i)) {
            assert_eq!(
                bulk.lookup_v4(probe),
                one_by_one.lookup_v4(probe),
                "{probe}"
            );
        }
        assert_eq!(bulk.lookup(ip("10.0.0.3")), Some(2_000_000));
        assert_eq!(bulk.lookup(ip("fd00::1")), Some(7));
    }

    #[test]
    fn empty_table() {
        let t = AllowedIps::<u32>::new();
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
        assert_eq!(t.lookup(ip("::1")), None);
        check(&t);
    }

    #[test]
    fn ipv4_longest_prefix() {
        let mut t = AllowedIps::new();
        t.insert(ip("10.0.0.0"), 8, 1).unwrap();
        t.insert(ip("10.1.0.0"), 16, 2).unwrap();
        t.insert(ip("10.1.2.0"), 24, 3).unwrap();
        t.insert(ip("10.1.2.3"), 32, 4).unwrap();
        t.insert(ip("192.168.0.0"), 16, 5).unwrap();
        check(&t);
        assert_eq!(t.len(), 5);
        assert_eq!(t.lookup(ip("10.200.0.1")), Some(1));
        assert_eq!(t.lookup(ip("10.1.200.1")), Some(2));
        assert_eq!(t.lookup(ip("10.1.2.200")), Some(3));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(4));
        assert_eq!(t.lookup(ip("192.168.44.1")), Some(5));
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert_eq!(t.lookup(ip("192.169.0.1")), None);
        // Families are separate: the v4-mapped form is a v6 address.
        assert_eq!(t.lookup(ip("::ffff:10.1.2.3")), None);
    }

    #[test]
    fn ipv6_longest_prefix() {
        let mut t = AllowedIps::new();
        t.insert(ip("2001:db8::"), 32, 1).unwrap();
        t.insert(ip("2001:db8:1::"), 48, 2).unwrap();
        t.insert(ip("2001:db8:1:2::"), 64, 3).unwrap();
        t.insert(ip("2001:db8:1:2::42"), 128, 4).unwrap();
        t.insert(ip("fd00::"), 8, 5).unwrap();
        check(&t);
        assert_eq!(t.lookup(ip("2001:db8:ffff::1")), Some(1));
        assert_eq!(t.lookup(ip("2001:db8:1:ffff::1")), Some(2));
        assert_eq!(t.lookup(ip("2001:db8:1:2::43")), Some(3));
        assert_eq!(t.lookup(ip("2001:db8:1:2::42")), Some(4));
        assert_eq!(t.lookup(ip("fdab::1")), Some(5));
        assert_eq!(t.lookup(ip("2001:db9::1")), None);
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
    }

    #[test]
    fn default_routes() {
        let mut t = AllowedIps::new();
        t.insert(ip("0.0.0.0"), 0, 1).unwrap();
        t.insert(ip("::"), 0, 2).unwrap();
        t.insert(ip("10.0.0.0"), 8, 3).unwrap();
        check(&t);
        assert_eq!(t.lookup(ip("1.2.3.4")), Some(1));
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(1));
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(3));
        assert_eq!(t.lookup(ip("::")), Some(2));
        assert_eq!(
            t.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(2)
        );
        // Host bits on a /0 are all bits.
        t.insert(ip("1.2.3.4"), 0, 7).unwrap();
        assert_eq!(t.lookup(ip("9.9.9.9")), Some(7));
        assert_eq!(t.prefixes_of(7), vec![(ip("0.0.0.0"), 0)]);
        assert_eq!(t.remove(ip("0.0.0.0"), 0), Some(7));
        assert_eq!(t.lookup(ip("9.9.9.9")), None);
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(3));
        check(&t);
    }

    #[test]
    fn host_routes() {
        let mut t = AllowedIps::new();
        t.insert(ip("192.0.2.1"), 32, 1).unwrap();
        t.insert(ip("192.0.2.2"), 32, 2).unwrap();
        t.insert(ip("2001:db8::1"), 128, 3).unwrap();
        t.insert(ip("2001:db8::"), 128, 4).unwrap();
        check(&t);
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(1));
        assert_eq!(t.lookup(ip("192.0.2.2")), Some(2));
        assert_eq!(t.lookup(ip("192.0.2.3")), None);
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(3));
        assert_eq!(t.lookup(ip("2001:db8::")), Some(4));
        assert_eq!(t.lookup(ip("2001:db8::2")), None);
        t.insert(ip("255.255.255.255"), 32, 5).unwrap();
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(5));
    }

    #[test]
    fn masking() {
        let mut t = AllowedIps::new();
        t.insert(ip("10.0.0.1"), 24, 1).unwrap();
        t.insert(ip("2001:db8::dead:beef"), 64, 2).unwrap();
        assert_eq!(t.prefixes_of(1), vec![(ip("10.0.0.0"), 24)]);
        assert_eq!(t.prefixes_of(2), vec![(ip("2001:db8::"), 64)]);
        assert_eq!(t.lookup(ip("10.0.0.200")), Some(1));
        // Removal masks the same way.
        assert_eq!(t.remove(ip("10.0.0.77"), 24), Some(1));
        assert_eq!(t.remove(ip("2001:db8::1"), 64), Some(2));
        assert!(t.is_empty());
        check(&t);
    }

    #[test]
    fn bad_cidr() {
        let mut t = AllowedIps::new();
        assert_eq!(
            t.insert(ip("10.0.0.0"), 33, 1),
            Err(AllowedIpsError::CidrTooLong { cidr: 33, max: 32 })
        );
        assert_eq!(
            t.insert(ip("::"), 129, 1),
            Err(AllowedIpsError::CidrTooLong {
                cidr: 129,
                max: 128
            })
        );
        assert_eq!(
            t.insert(ip("::"), 255, 1),
            Err(AllowedIpsError::CidrTooLong {
                cidr: 255,
                max: 128
            })
        );
        assert!(t.is_empty());
        assert_eq!(t.remove(ip("10.0.0.0"), 200), None);
        assert!(t
            .insert(ip("10.0.0.0"), 33, 1)
            .unwrap_err()
            .to_string()
            .contains("/33"));
    }

    #[test]
    fn prefix_moves_between_values() {
        let mut t = AllowedIps::new();
        t.insert(ip("10.0.0.0"), 24, 1).unwrap();
        t.insert(ip("10.0.1.0"), 24, 1).unwrap();
        t.insert(ip("10.0.0.0"), 24, 2).unwrap();
        check(&t);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(ip("10.0.0.5")), Some(2));
        assert_eq!(t.lookup(ip("10.0.1.5")), Some(1));
        assert_eq!(t.prefixes_of(1), vec![(ip("10.0.1.0"), 24)]);
        assert_eq!(t.prefixes_of(2), vec![(ip("10.0.0.0"), 24)]);
        // Re-inserting with the same value is a no-op.
        t.insert(ip("10.0.0.0"), 24, 2).unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn removal() {
        let mut t = AllowedIps::new();
        t.insert(ip("10.0.0.0"), 8, 1).unwrap();
        t.insert(ip("10.1.0.0"), 16, 2).unwrap();
        t.insert(ip("10.2.0.0"), 16, 3).unwrap();
        assert_eq!(t.remove(ip("10.1.0.0"), 24), None, "not an exact prefix");
        assert_eq!(t.remove(ip("10.0.0.0"), 12), None, "branch point, no value");
        assert_eq!(t.remove(ip("10.0.0.0"), 8), Some(1));
        assert_eq!(t.remove(ip("10.0.0.0"), 8), None);
        check(&t);
        assert_eq!(t.lookup(ip("10.3.0.1")), None);
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(2));
        assert_eq!(t.remove(ip("10.1.0.0"), 16), Some(2));
        check(&t);
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(3));
        assert_eq!(t.remove(ip("10.2.0.0"), 16), Some(3));
        assert!(t.is_empty());
        check(&t);
        assert_eq!(t.v4.nodes.len(), t.v4.free.len(), "every node freed");
    }

    #[test]
    fn exact_get_and_owned_removal() {
        let mut t = AllowedIps::new();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        t.insert(a("10.0.0.0"), 8, 1).unwrap();
        t.insert(a("10.1.0.0"), 16, 2).unwrap();
        t.insert(a("2001:db8::"), 32, 1).unwrap();
        assert_eq!(t.get_exact(a("10.1.2.3"), 16), Some(2), "host bits ignored");
        assert_eq!(t.get_exact(a("10.0.0.0"), 9), None, "only that prefix");
        assert_eq!(t.get_exact(a("10.0.0.0"), 33), None);
        assert!(!t.remove_if_owned(a("10.1.0.0"), 16, 1), "not 1's");
        assert_eq!(t.lookup(a("10.1.0.1")), Some(2));
        assert!(t.remove_if_owned(a("10.0.0.0"), 8, 1));
        assert!(t.remove_if_owned(a("2001:db8::"), 32, 1));
        assert!(!t.remove_if_owned(a("2001:db8::"), 32, 1), "gone already");
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(a("10.2.0.0")), None);
        t.v4.check();
        t.v6.check();
    }

    #[test]
    fn remove_value_and_clear() {
        let mut t = AllowedIps::new();
        for i in 0..50u32 {
            t.insert(IpAddr::V4(Ipv4Addr::new(10, i as u8, 0, 0)), 16, i % 3)
                .unwrap();
            t.insert(
                IpAddr::V6(Ipv6Addr::new(0xfd00, i as u16, 0, 0, 0, 0, 0, 0)),
                32,
                i % 3,
            )
            .unwrap();
        }
        assert_eq!(t.len(), 100);
        t.remove_value(1);
        check(&t);
        assert!(t.prefixes_of(1).is_empty());
        assert_eq!(t.len(), 100 - 2 * 17);
        assert_eq!(t.lookup(ip("10.1.0.1")), None);
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(2));
        assert_eq!(t.lookup(ip("fd00:3::1")), Some(0));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.2.0.1")), None);
        check(&t);
    }

    #[test]
    fn for_each_is_ordered_and_complete() {
        let mut t = AllowedIps::new();
        t.insert(ip("fd00::"), 8, 9).unwrap();
        t.insert(ip("10.1.0.0"), 16, 2).unwrap();
        t.insert(ip("10.0.0.0"), 8, 1).unwrap();
        t.insert(ip("1.0.0.0"), 8, 3).unwrap();
        let mut seen = Vec::new();
        t.for_each(|a, c, v| seen.push((a, c, v)));
        assert_eq!(
            seen,
            vec![
                (ip("1.0.0.0"), 8, 3),
                (ip("10.0.0.0"), 8, 1),
                (ip("10.1.0.0"), 16, 2),
                (ip("fd00::"), 8, 9),
            ]
        );
    }

    #[test]
    fn freed_slots_are_reused() {
        let mut t = AllowedIps::new();
        for round in 0..10u32 {
            for i in 0..64u8 {
                t.insert(IpAddr::V4(Ipv4Addr::new(10, i, 0, 0)), 16, round)
                    .unwrap();
            }
            t.remove_value(round);
            assert!(t.is_empty());
        }
        assert!(t.v4.nodes.len() <= 128);
    }

    /// The production jump table (16 bits, enabled past JUMP_MIN_PREFIXES)
    /// on a table large enough to switch it on, then shrunk by removals.
    #[test]
    fn large_table_with_jump() {
        let mut t = AllowedIps::new();
        let mut m = Model::default();
        // A fixed xorshift stream keeps the test deterministic without a dev-dependency.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut inserted = Vec::new();
        while t.v4.len < JUMP_MIN_PREFIXES || t.v6.len < JUMP_MIN_PREFIXES {
            let r = next();
            let (a, c) = if r % 2 == 0 {
                (
                    IpAddr::V6(Ipv6Addr::from(u128::from(next()) << 64 | u128::from(r))),
                    (r >> 8) as u8 % 129,
                )
            } else {
                (
                    IpAddr::V4(Ipv4Addr::from((r >> 32) as u32)),
                    8 + (r >> 8) as u8 % 25,
                )
            };
            let v = (r >> 20) as u32 % 50;
            t.insert(a, c, v).unwrap();
            m.insert(a, c, v);
            inserted.push((a, c));
        }
        t.insert(ip("0.0.0.0"), 0, 99).unwrap();
        m.insert(ip("0.0.0.0"), 0, 99);
        assert!(!t.v4.jump.is_empty() && !t.v6.jump.is_empty());
        check(&t);
        let probe = |t: &AllowedIps<u32>, m: &Model, next: &mut dyn FnMut() -> u64| {
            for &(n, _, _) in m.entries.iter().step_by(41) {
                assert_eq!(t.lookup(n), m.lookup(n), "{n}");
            }
            for _ in 0..100 {
                let r = next();
                let a = IpAddr::V4(Ipv4Addr::from(r as u32));
                assert_eq!(t.lookup(a), m.lookup(a), "{a}");
            }
        };
        probe(&t, &m, &mut next);
        for (i, &(a, c)) in inserted.iter().enumerate() {
            if i % 3 != 0 {
                assert_eq!(t.remove(a, c), m.remove(a, c));
            }
        }
        t.remove_value(7);
        m.entries.retain(|e| e.2 != 7);
        assert_eq!(t.remove(ip("0.0.0.0"), 0), Some(99));
        m.remove(ip("0.0.0.0"), 0);
        check(&t);
        assert_eq!(t.len(), m.entries.len());
        probe(&t, &m, &mut next);
    }

    /// The specification: a list of (network, cidr, value), one value per prefix,
    /// searched exhaustively.
    #[derive(Default)]
    struct Model {
        entries: Vec<(IpAddr, u8, u32)>,
    }

    fn width(a: IpAddr) -> u8 {
        if a.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// Masks bit by bit, independently of the trie's shift-based masks.
    fn model_mask(a: IpAddr, cidr: u8) -> IpAddr {
        match a {
            IpAddr::V4(v) => {
                let mut bits = u32::from(v);
                for i in cidr..32 {
                    bits &= !(1 << (31 - i));
                }
                IpAddr::V4(bits.into())
            }
            IpAddr::V6(v) => {
                let mut bits = u128::from(v);
                for i in cidr..128 {
                    bits &= !(1 << (127 - i));
                }
                IpAddr::V6(bits.into())
            }
        }
    }

    impl Model {
        fn insert(&mut self, a: IpAddr, cidr: u8, v: u32) {
            let net = model_mask(a, cidr);
            self.entries.retain(|&(n, c, _)| (n, c) != (net, cidr));
            self.entries.push((net, cidr, v));
        }

        fn remove(&mut self, a: IpAddr, cidr: u8) -> Option<u32> {
            let net = model_mask(a, cidr);
            let i = self
                .entries
                .iter()
                .position(|&(n, c, _)| (n, c) == (net, cidr))?;
            Some(self.entries.remove(i).2)
        }

        fn lookup(&self, a: IpAddr) -> Option<u32> {
            self.entries
                .iter()
                .filter(|&&(n, c, _)| a.is_ipv4() == n.is_ipv4() && model_mask(a, c) == n)
                .max_by_key(|e| e.1)
                .map(|e| e.2)
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(IpAddr, u8, u32),
        Remove(IpAddr, u8),
        RemoveValue(u32),
    }

    /// Addresses built from a few bits at several depths, so random prefixes
    /// nest, collide and diverge at every level instead of being disjoint.
    fn addr() -> impl Strategy<Value = IpAddr> {
        let v4 = (0u32..4, 0u32..4, 0u32..4, 0u32..16)
            .prop_map(|(a, b, c, d)| IpAddr::V4((a << 30 | b << 20 | c << 4 | d).into()));
        let v6 = (0u128..4, 0u128..4, 0u128..4, 0u128..256)
            .prop_map(|(a, b, c, d)| IpAddr::V6((a << 126 | b << 64 | c << 8 | d).into()));
        prop_oneof![
            3 => v4,
            3 => v6,
            1 => any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
            1 => any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        ]
    }

    fn prefix() -> impl Strategy<Value = (IpAddr, u8)> {
        (addr(), any::<u8>()).prop_map(|(a, c)| {
            let w = width(a);
            // Favour the lengths where the generated bits sit.
            let c = match c % 4 {
                0 => c % (w + 1),
                1 => [0, 1, 2, 11, 12, w - 4, w - 1, w][usize::from(c / 4) % 8],
                2 if w == 32 => [20, 21, 22, 26, 27, 28, 29, 30][usize::from(c / 4) % 8],
                2 => [62, 63, 64, 65, 66, 118, 120, 125][usize::from(c / 4) % 8],
                _ => w.saturating_sub(c % 8),
            };
            (a, c)
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (prefix(), 0u32..6).prop_map(|((a, c), v)| Op::Insert(a, c, v)),
            3 => prefix().prop_map(|(a, c)| Op::Remove(a, c)),
            1 => (0u32..6).prop_map(Op::RemoveValue),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn matches_linear_scan(
            ops in prop::collection::vec(op(), 0..120),
            probes in prop::collection::vec(addr(), 0..80),
        ) {
            // The default table (jump table off at this size) and two with
            // small jump tables switched on early, so their upkeep is exercised.
            let mut tables = [
                AllowedIps::new(),
                AllowedIps::with_jump(4, 0),
                AllowedIps::with_jump(8, 5),
            ];
            let mut m = Model::default();
            for op in &ops {
                match *op {
                    Op::Insert(a, c, v) => {
                        for t in &mut tables {
                            t.insert(a, c, v).unwrap();
                        }
                        m.insert(a, c, v);
                    }
                    Op::Remove(a, c) => {
                        let want = m.remove(a, c);
                        for t in &mut tables {
                            prop_assert_eq!(t.remove(a, c), want);
                        }
                    }
                    Op::RemoveValue(v) => {
                        for t in &mut tables {
                            t.remove_value(v);
                        }
                        m.entries.retain(|e| e.2 != v);
                    }
                }
                // Cheap with 16 entries, and catches a stale entry at once.
                check(&tables[1]);
            }
            // Probe every stored network too, and its neighbours, where
            // off-by-one masks would show.
            let extra: Vec<IpAddr> = m.entries.iter().flat_map(|&(n, _, _)| {
                let flip = |a: IpAddr, x: u128| match a {
                    IpAddr::V4(v) => IpAddr::V4((u32::from(v) ^ x as u32).into()),
                    IpAddr::V6(v) => IpAddr::V6((u128::from(v) ^ x).into()),
                };
                [n, flip(n, 1), flip(n, u128::MAX)]
            }).collect();
            let mut expect = m.entries.clone();
            expect.sort_by_key(|&(a, c, _)| (a, c));
            for t in &tables {
                check(t);
                prop_assert_eq!(t.len(), m.entries.len());
                for &a in probes.iter().chain(&extra) {
                    prop_assert_eq!(t.lookup(a), m.lookup(a), "lookup {}", a);
                }
                let mut dumped = Vec::new();
                t.for_each(|a, c, v| dumped.push((a, c, v)));
                let mut sorted = dumped.clone();
                sorted.sort_by_key(|&(a, c, _)| (a, c));
                prop_assert_eq!(&dumped, &sorted, "for_each out of order");
                prop_assert_eq!(&dumped, &expect);
                for v in 0..6 {
                    let mut want: Vec<_> =
                        m.entries.iter().filter(|e| e.2 == v).map(|e| (e.0, e.1)).collect();
                    want.sort();
                    prop_assert_eq!(t.prefixes_of(v), want);
                }
            }
        }
    }
}
