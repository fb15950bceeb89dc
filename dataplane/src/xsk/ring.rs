//! The four single-producer/single-consumer rings an AF_XDP socket shares
//! with the kernel: fill and tx (we produce), completion and rx (we
//! consume).
//!
//! Each ring is a power-of-two array of descriptors plus a producer and a
//! consumer index, free-running `u32` counters that wrap; the slot of index
//! `i` is `i & (size - 1)`. Only the producer writes the producer index and
//! only the consumer writes the consumer index:
//!
//! * a producer writes descriptors, then publishes the producer index with
//!   Release, so the kernel's Acquire load of it sees the descriptors;
//! * a consumer loads the producer index with Acquire before reading the
//!   descriptors it covers, and publishes its consumer index with Release
//!   after it has read them, so the producer never overwrites a slot still
//!   being read.
//!
//! The index arithmetic lives in [`ProdIdx`] and [`ConsIdx`], plain values
//! with no memory behind them, so wrap-around and "never more than the ring
//! holds" are unit tested without a socket. Every slot access masks its
//! index, so even a kernel (or test) that publishes nonsense indices cannot
//! make us touch memory outside the descriptor array.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// Producer-side index state: where the next descriptor goes, what has been
/// published, and the last consumer index seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProdIdx {
    size: u32,
    /// Index of the next slot to write (written but unpublished slots lie
    /// between `published` and `next`).
    next: u32,
    /// The producer index as last stored into the ring.
    published: u32,
    /// The consumer index as last loaded from the ring.
    cached_cons: u32,
}

impl ProdIdx {
    /// State for a ring of `size` slots whose shared indices currently read
    /// `prod` and `cons`.
    pub(crate) fn new(size: u32, prod: u32, cons: u32) -> ProdIdx {
        ProdIdx {
            size,
            next: prod,
            published: prod,
            cached_cons: cons,
        }
    }

    /// Free slots according to the cached consumer index. Saturates (never
    /// wraps) when the consumer index is garbage.
    pub(crate) fn free(&self) -> u32 {
        self.size
            .saturating_sub(self.next.wrapping_sub(self.cached_cons))
    }

    /// Records a fresh load of the consumer index.
    pub(crate) fn set_cons(&mut self, cons: u32) {
        self.cached_cons = cons;
    }

    /// Claims the next slot, returning its index, if one is free by the
    /// cached consumer index.
    pub(crate) fn claim(&mut self) -> Option<u32> {
        if self.free() == 0 {
            return None;
        }
        let i = self.next;
        self.next = self.next.wrapping_add(1);
        Some(i)
    }

    /// Slots written but not yet published.
    pub(crate) fn pending(&self) -> u32 {
        self.next.wrapping_sub(self.published)
    }

    /// Marks everything written as published; returns the new producer
    /// index to store.
    pub(crate) fn publish(&mut self) -> u32 {
        self.published = self.next;
        self.next
    }

    /// Published slots the consumer has not consumed yet, given a fresh
    /// consumer index `cons` (0 when `cons` is not behind `published`).
    pub(crate) fn unconsumed(&self, cons: u32) -> u32 {
        let n = self.published.wrapping_sub(cons);
        if n > self.size {
            0
        } else {
            n
        }
    }
}

/// Consumer-side index state: the next slot to read, what has been released
/// back to the producer, and the last producer index seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsIdx {
    size: u32,
    /// Index of the next slot to read.
    next: u32,
    /// The consumer index as last stored into the ring.
    released: u32,
    /// The producer index as last loaded from the ring.
    cached_prod: u32,
}

impl ConsIdx {
    pub(crate) fn new(size: u32, prod: u32, cons: u32) -> ConsIdx {
        ConsIdx {
            size,
            next: cons,
            released: cons,
            cached_prod: prod,
        }
    }

    /// Filled slots not yet read, by the cached producer index, never more
    /// than the ring holds (a garbage producer index reads as a full ring
    /// at most, and masked slot indices keep every read in bounds).
    pub(crate) fn avail(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.next).min(self.size)
    }

    pub(crate) fn set_prod(&mut self, prod: u32) {
        // A producer index behind what we have already read is garbage;
        // treat it as "nothing new" rather than as ~4 billion entries.
        if prod.wrapping_sub(self.next) <= self.size {
            self.cached_prod = prod;
        }
    }

    /// Takes the next filled slot's index, if any by the cached producer.
    pub(crate) fn take(&mut self) -> Option<u32> {
        if self.avail() == 0 {
            return None;
        }
        let i = self.next;
        self.next = self.next.wrapping_add(1);
        Some(i)
    }

    /// Slots read but not yet released.
    pub(crate) fn unreleased(&self) -> u32 {
        self.next.wrapping_sub(self.released)
    }

    /// Marks everything read as released; returns the consumer index to
    /// store.
    pub(crate) fn release(&mut self) -> u32 {
        self.released = self.next;
        self.next
    }
}

/// One `mmap`ed ring region, unmapped on drop.
#[derive(Debug)]
pub(crate) struct RingMap {
    base: NonNull<u8>,
    len: usize,
}

impl RingMap {
    /// Maps `len` bytes of `fd`'s ring at page offset `pgoff`.
    fn map(fd: RawFd, len: usize, pgoff: i64) -> io::Result<RingMap> {
        // SAFETY: a fresh shared mapping chosen by the kernel (addr NULL);
        // it aliases no Rust object. The result is checked below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        match NonNull::new(p.cast::<u8>()) {
            Some(base) => Ok(RingMap { base, len }),
            None => Err(io::Error::other("mmap returned NULL")),
        }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; every pointer
        // into the region lives in the RawRing that owns this RingMap and
        // dies with it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Raw view of one ring: pointers to the shared indices, flags and slots.
pub(crate) struct RawRing<T: Copy> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    slots: NonNull<T>,
    mask: u32,
    size: u32,
    /// Keeps the memory behind the pointers mapped (None in unit tests,
    /// where the caller owns the memory).
    _map: Option<RingMap>,
    _marker: PhantomData<T>,
}

// SAFETY: the ring's memory is owned by this value (or, in tests, outlives
// it by the from_parts contract) and is only touched through &mut self or
// atomics, so moving the ring to another thread is sound.
unsafe impl<T: Copy + Send> Send for RawRing<T> {}

impl<T: Copy> RawRing<T> {
    /// A ring over caller-owned memory.
    ///
    /// # Safety
    ///
    /// `producer`, `consumer` and `flags` must point to valid, aligned
    /// `u32`s and `slots` to `size` valid, aligned `T`s, all outliving the
    /// returned value and accessed by others only atomically (indices,
    /// flags) or per the ring protocol (slots). `size` must be a nonzero
    /// power of two.
    pub(crate) unsafe fn from_parts(
        producer: NonNull<AtomicU32>,
        consumer: NonNull<AtomicU32>,
        flags: NonNull<AtomicU32>,
        slots: NonNull<T>,
        size: u32,
        map: Option<RingMap>,
    ) -> RawRing<T> {
        RawRing {
            producer,
            consumer,
            flags,
            slots,
            mask: size.wrapping_sub(1),
            size,
            _map: map,
            _marker: PhantomData,
        }
    }

    /// Maps the ring of `size` entries that the kernel describes with
    /// `off`, at page offset `pgoff` of the socket `fd`.
    pub(crate) fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: i64,
    ) -> io::Result<RawRing<T>> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("AF_XDP ring offsets: {what}"),
            )
        };
        if size == 0 || !size.is_power_of_two() {
            return Err(bad("size not a power of two"));
        }
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| bad("offset too large"));
        let (prod, cons, flags, desc) = (
            to_usize(off.producer)?,
            to_usize(off.consumer)?,
            to_usize(off.flags)?,
            to_usize(off.desc)?,
        );
        let len = (size as usize)
            .checked_mul(mem::size_of::<T>())
            .and_then(|n| n.checked_add(desc))
            .ok_or_else(|| bad("ring too large"))?;
        for o in [prod, cons, flags] {
            if o % mem::align_of::<AtomicU32>() != 0 || o.saturating_add(4) > len {
                return Err(bad("index outside the ring or misaligned"));
            }
        }
        if desc % mem::align_of::<T>() != 0 {
            return Err(bad("descriptors misaligned"));
        }
        let map = RingMap::map(fd, len, pgoff)?;
        let base = map.base.as_ptr();
        // SAFETY: every offset was checked above to lie inside the `len`
        // mapped bytes with room for its type and to be aligned (mmap
        // returns page-aligned memory); the mapping lives as long as the
        // ring because the ring owns `map`; the kernel touches indices
        // atomically and slots per the ring protocol; size is a power of
        // two.
        unsafe {
            let at = |o: usize| NonNull::new_unchecked(base.add(o));
            Ok(RawRing::from_parts(
                at(prod).cast(),
                at(cons).cast(),
                at(flags).cast(),
                at(desc).cast(),
                size,
                Some(map),
            ))
        }
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid and aligned for the ring's lifetime (from_parts).
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: valid and aligned for the ring's lifetime (from_parts).
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: valid and aligned for the ring's lifetime (from_parts).
        unsafe { self.flags.as_ref() }
    }

    fn read(&self, idx: u32) -> T {
        // SAFETY: the masked index is < size, so the slot is inside the
        // array; the producer wrote it before publishing the producer index
        // we loaded with Acquire, and will not rewrite it before we release
        // it.
        unsafe { ptr::read(self.slots.as_ptr().add((idx & self.mask) as usize)) }
    }

    fn write(&mut self, idx: u32, v: T) {
        // SAFETY: the masked index is < size, so the slot is inside the
        // array; the slot is free (the consumer released it, as ProdIdx
        // checked against a consumer index loaded with Acquire) and the
        // consumer will not read it before we publish with Release.
        unsafe { ptr::write(self.slots.as_ptr().add((idx & self.mask) as usize), v) }
    }

    fn needs_wakeup(&self) -> bool {
        self.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// A ring we produce into (fill, tx).
pub(crate) struct ProdRing<T: Copy> {
    raw: RawRing<T>,
    idx: ProdIdx,
}

impl<T: Copy> ProdRing<T> {
    pub(crate) fn new(raw: RawRing<T>) -> ProdRing<T> {
        let prod = raw.producer().load(Ordering::Relaxed);
        let cons = raw.consumer().load(Ordering::Acquire);
        let idx = ProdIdx::new(raw.size(), prod, cons);
        ProdRing { raw, idx }
    }

    /// Free slots, reloading the consumer index when the cached one shows
    /// none.
    pub(crate) fn free(&mut self) -> u32 {
        if self.idx.free() == 0 {
            self.idx
                .set_cons(self.raw.consumer().load(Ordering::Acquire));
        }
        self.idx.free()
    }

    /// Writes `v` into the next slot (unpublished until [`publish`]);
    /// false when the ring is full.
    ///
    /// [`publish`]: ProdRing::publish
    pub(crate) fn push(&mut self, v: T) -> bool {
        if self.free() == 0 {
            return false;
        }
        match self.idx.claim() {
            Some(i) => {
                self.raw.write(i, v);
                true
            }
            None => false,
        }
    }

    /// Written but unpublished slots.
    pub(crate) fn pending(&self) -> u32 {
        self.idx.pending()
    }

    /// Publishes every written slot (Release: the slots' contents are
    /// visible to the kernel before the new index is).
    pub(crate) fn publish(&mut self) {
        if self.idx.pending() != 0 {
            let p = self.idx.publish();
            self.raw.producer().store(p, Ordering::Release);
        }
    }

    /// Published slots the kernel has not consumed yet.
    pub(crate) fn unconsumed(&self) -> u32 {
        self.idx
            .unconsumed(self.raw.consumer().load(Ordering::Acquire))
    }

    /// Whether the kernel asks for a syscall to process this ring. A full
    /// fence first: our index store must not be reordered after the flag
    /// load, or we could miss a wakeup the kernel asked for in between.
    pub(crate) fn needs_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.raw.needs_wakeup()
    }
}

/// A ring we consume from (completion, rx).
pub(crate) struct ConsRing<T: Copy> {
    raw: RawRing<T>,
    idx: ConsIdx,
}

impl<T: Copy> ConsRing<T> {
    pub(crate) fn new(raw: RawRing<T>) -> ConsRing<T> {
        let prod = raw.producer().load(Ordering::Acquire);
        let cons = raw.consumer().load(Ordering::Relaxed);
        let idx = ConsIdx::new(raw.size(), prod, cons);
        ConsRing { raw, idx }
    }

    /// Entries ready to read, reloading the producer index (Acquire) when
    /// the cached one shows none.
    pub(crate) fn available(&mut self) -> u32 {
        if self.idx.avail() == 0 {
            self.idx
                .set_prod(self.raw.producer().load(Ordering::Acquire));
        }
        self.idx.avail()
    }

    /// Reads the next entry counted by [`available`]; never reloads the
    /// producer index.
    ///
    /// [`available`]: ConsRing::available
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.idx.take().map(|i| self.raw.read(i))
    }

    /// Gives every read slot back to the kernel (Release: our reads of the
    /// slots happen before the kernel may overwrite them).
    pub(crate) fn release(&mut self) {
        if self.idx.unreleased() != 0 {
            let c = self.idx.release();
            self.raw.consumer().store(c, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prod_idx_never_offers_more_than_the_ring_holds() {
        let mut p = ProdIdx::new(4, 0, 0);
        assert_eq!(p.free(), 4);
        for want in 0..4 {
            assert_eq!(p.claim(), Some(want));
        }
        assert_eq!(p.claim(), None);
        assert_eq!(p.free(), 0);
        assert_eq!(p.pending(), 4);
        assert_eq!(p.publish(), 4);
        assert_eq!(p.pending(), 0);
        assert_eq!(p.unconsumed(0), 4);
        assert_eq!(p.unconsumed(3), 1);
        p.set_cons(3);
        assert_eq!(p.free(), 3);
    }

    #[test]
    fn prod_idx_wraps_around_u32() {
        let start = u32::MAX - 2;
        let mut p = ProdIdx::new(8, start, start);
        let mut cons = start;
        for round in 0..100u32 {
            let mut got = 0;
            while let Some(i) = p.claim() {
                assert_eq!(i, start.wrapping_add(round * 8 + got));
                got += 1;
            }
            assert_eq!(got, 8, "round {round}");
            let pub_idx = p.publish();
            assert_eq!(p.unconsumed(cons), 8);
            cons = pub_idx;
            p.set_cons(cons);
            assert_eq!(p.unconsumed(cons), 0);
        }
    }

    #[test]
    fn prod_idx_survives_garbage_consumer() {
        let mut p = ProdIdx::new(4, 10, 10);
        // Consumer ahead of the producer: nonsense, must not overflow.
        p.set_cons(1000);
        assert!(p.free() <= 4);
        p.set_cons(10u32.wrapping_sub(100));
        assert_eq!(p.free(), 0);
        assert_eq!(p.claim(), None);
        assert_eq!(p.unconsumed(5000), 0);
    }

    #[test]
    fn cons_idx_reads_only_what_was_produced() {
        let start = u32::MAX - 1;
        let mut c = ConsIdx::new(4, start, start);
        assert_eq!(c.avail(), 0);
        assert_eq!(c.take(), None);
        c.set_prod(start.wrapping_add(3));
        assert_eq!(c.avail(), 3);
        assert_eq!(c.take(), Some(start));
        assert_eq!(c.take(), Some(start.wrapping_add(1)));
        assert_eq!(c.unreleased(), 2);
        assert_eq!(c.release(), start.wrapping_add(2));
        assert_eq!(c.take(), Some(start.wrapping_add(2)));
        assert_eq!(c.take(), None);
        // A producer index far beyond the ring is clamped to one ring.
        c.set_prod(start.wrapping_add(3 + 4));
        assert_eq!(c.avail(), 4);
        c.set_prod(start.wrapping_add(1000));
        assert_eq!(c.avail(), 4, "garbage producer index ignored");
        // Behind what we have read: ignored.
        c.set_prod(start);
        assert_eq!(c.avail(), 4);
    }

    /// Ring memory owned by the test, playing the kernel's side.
    struct Fake<T> {
        prod: AtomicU32,
        cons: AtomicU32,
        flags: AtomicU32,
        slots: NonNull<[T]>,
    }

    impl<T: Copy + Default> Fake<T> {
        fn new(size: u32, start: u32) -> Fake<T> {
            let slots = vec![T::default(); size as usize].into_boxed_slice();
            Fake {
                prod: AtomicU32::new(start),
                cons: AtomicU32::new(start),
                flags: AtomicU32::new(0),
                slots: NonNull::from(Box::leak(slots)),
            }
        }

        fn raw(&self) -> RawRing<T> {
            // SAFETY: the indices are live, aligned atomics and the slots a
            // leaked (freed in Drop) array of `len` T; every test keeps the
            // Fake alive longer than its rings.
            unsafe {
                RawRing::from_parts(
                    NonNull::from(&self.prod),
                    NonNull::from(&self.cons),
                    NonNull::from(&self.flags),
                    self.slots.cast(),
                    self.slots.len() as u32,
                    None,
                )
            }
        }
    }

    impl<T> Drop for Fake<T> {
        fn drop(&mut self) {
            // SAFETY: slots came from Box::leak in new() and is freed once.
            drop(unsafe { Box::from_raw(self.slots.as_ptr()) });
        }
    }

    #[test]
    fn producer_and_consumer_rings_agree_across_wrap() {
        // One fake ring; a ProdRing writes, a ConsRing reads, through the
        // same memory, starting just below the u32 wrap.
        let fake = Fake::<u64>::new(8, u32::MAX - 5);
        let mut prod = ProdRing::new(fake.raw());
        let mut cons = ConsRing::new(fake.raw());
        let mut next_put = 0u64;
        let mut next_get = 0u64;
        for round in 0..50 {
            let burst = 1 + round % 11;
            for _ in 0..burst {
                if prod.push(next_put) {
                    next_put += 1;
                }
            }
            // Nothing visible before publish.
            assert_eq!(cons.available(), 0);
            prod.publish();
            let n = cons.available();
            assert!(n <= 8);
            for _ in 0..n {
                assert_eq!(cons.pop(), Some(next_get));
                next_get += 1;
            }
            assert_eq!(cons.pop(), None);
            assert_eq!(prod.unconsumed(), n, "released only at release()");
            cons.release();
            assert_eq!(prod.unconsumed(), 0);
        }
        assert_eq!(next_get, next_put);
        assert!(next_put > 200);
        assert!(fake.prod.load(Ordering::Relaxed) < 1000, "index wrapped");
    }

    #[test]
    fn full_ring_refuses_until_released() {
        let fake = Fake::<u64>::new(4, 0);
        let mut prod = ProdRing::new(fake.raw());
        let mut cons = ConsRing::new(fake.raw());
        for v in 0..4 {
            assert!(prod.push(v));
        }
        assert!(!prod.push(99));
        prod.publish();
        assert!(!prod.push(99), "published but not consumed: still full");
        assert_eq!(cons.available(), 4);
        assert_eq!(cons.pop(), Some(0));
        assert!(!prod.push(99), "read but not released: still full");
        cons.release();
        assert!(prod.push(4));
        assert!(!prod.push(99));
        prod.publish();
        let got: Vec<u64> = std::iter::from_fn(|| {
            if cons.available() == 0 {
                None
            } else {
                cons.pop()
            }
        })
        .collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn need_wakeup_flag_is_read() {
        let fake = Fake::<u64>::new(4, 0);
        let prod = ProdRing::new(fake.raw());
        assert!(!prod.needs_wakeup());
        fake.flags
            .store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(prod.needs_wakeup());
    }
}
