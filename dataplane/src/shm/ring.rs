//! A single-producer single-consumer ring of fixed-size records in shared
//! memory. Each record starts with its length (u16 LE).

use core::sync::atomic::Ordering;

use super::layout::{RingHeader, RECORD_SIZE, RING_ENTRIES};

pub struct Ring<'a> {
    header: &'a RingHeader,
    records: *mut u8,
}

impl<'a> Ring<'a> {
    /// # Safety
    /// `records` must point at `RING_ENTRIES * RECORD_SIZE` bytes that live as
    /// long as `'a` and that only this ring's producer and consumer touch.
    pub(super) unsafe fn from_raw(header: &'a RingHeader, records: *mut u8) -> Self {
        Ring { header, records }
    }

    /// Producer: appends one record; false if the ring is full or `data`
    /// does not fit a record.
    pub fn push(&self, data: &[u8]) -> bool {
        if data.len() > RECORD_SIZE - 2 {
            return false;
        }
        let head = self.header.head.load(Ordering::Relaxed);
        let tail = self.header.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= RING_ENTRIES as u64 {
            return false;
        }
        let slot = (head % RING_ENTRIES as u64) as usize;
        // SAFETY: slot < RING_ENTRIES so the record lies inside the ring;
        // the consumer does not read it until `head` is published below.
        unsafe {
            let rec = self.records.add(slot * RECORD_SIZE);
            core::ptr::copy_nonoverlapping((data.len() as u16).to_le_bytes().as_ptr(), rec, 2);
            core::ptr::copy_nonoverlapping(data.as_ptr(), rec.add(2), data.len());
        }
        self.header
            .head
            .store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Consumer: takes the oldest record into `out`, returning its length.
    /// The producer is another process, trusted less than its consumer may
    /// be: a `head` more than a ring ahead of `tail` is not believed (the
    /// ring is emptied instead of read round and round).
    pub fn pop(&self, out: &mut [u8; RECORD_SIZE]) -> Option<usize> {
        let tail = self.header.tail.load(Ordering::Relaxed);
        let head = self.header.head.load(Ordering::Acquire);
        if tail == head {
            return None;
        }
        if head.wrapping_sub(tail) > RING_ENTRIES as u64 {
            self.header.tail.store(head, Ordering::Release);
            return None;
        }
        let slot = (tail % RING_ENTRIES as u64) as usize;
        let mut len = [0u8; 2];
        // SAFETY: the producer published this record with the Release store
        // of `head` we acquired; it will not reuse the slot until we move
        // `tail` past it.
        unsafe {
            let rec = self.records.add(slot * RECORD_SIZE);
            core::ptr::copy_nonoverlapping(rec, len.as_mut_ptr(), 2);
            let n = (u16::from_le_bytes(len) as usize).min(RECORD_SIZE - 2);
            core::ptr::copy_nonoverlapping(rec.add(2), out.as_mut_ptr(), n);
            self.header
                .tail
                .store(tail.wrapping_add(1), Ordering::Release);
            Some(n)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.header.tail.load(Ordering::Acquire) == self.header.head.load(Ordering::Acquire)
    }

    /// Consumer start-up: forget records a dead predecessor left unread
    /// (they were about sessions that state sync re-derives).
    pub fn drain(&self) {
        let head = self.header.head.load(Ordering::Acquire);
        self.header.tail.store(head, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_region;
    use super::*;

    #[test]
    fn fifo_until_full() {
        let (r, _dir) = temp_region("ring");
        let ring = r.ring_to_control(0);
        let mut out = [0u8; RECORD_SIZE];
        assert_eq!(ring.pop(&mut out), None);
        for i in 0..RING_ENTRIES {
            assert!(ring.push(&(i as u32).to_le_bytes()));
        }
        assert!(!ring.push(b"full"));
        for i in 0..RING_ENTRIES {
            assert_eq!(ring.pop(&mut out), Some(4));
            assert_eq!(u32::from_le_bytes(out[..4].try_into().unwrap()), i as u32);
        }
        assert!(ring.is_empty());
        assert!(!ring.push(&[0; RECORD_SIZE]), "too long");
    }

    #[test]
    fn a_head_beyond_the_ring_is_not_believed() {
        let (r, _dir) = temp_region("ring-bogus");
        let ring = r.ring_to_control(0);
        let mut out = [0u8; RECORD_SIZE];
        assert!(ring.push(b"real"));
        ring.header
            .head
            .store(RING_ENTRIES as u64 + 7, Ordering::Release);
        assert_eq!(ring.pop(&mut out), None, "a corrupt head empties the ring");
        assert!(ring.is_empty());
        assert!(ring.push(b"next"));
        assert_eq!(ring.pop(&mut out), Some(4));
    }
}
