//! Seqlock helpers: one writer bumps `seq` to odd, writes, bumps to even;
//! readers retry until they read the same even value before and after.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use zeroize::Zeroizing;

/// Runs `write` inside the odd phase of `seq`. Single writer only.
pub fn write<R>(seq: &AtomicU64, write: impl FnOnce() -> R) -> R {
    let s = seq.load(Ordering::Relaxed);
    let s = if s % 2 == 1 { s + 1 } else { s }; // a writer that died mid-write
    seq.store(s + 1, Ordering::Relaxed);
    fence(Ordering::Release);
    let r = write();
    seq.store(s + 2, Ordering::Release);
    r
}

/// Reads a consistent snapshot with `read`; returns it with the even seq it
/// belongs to, or `None` after too many torn attempts (a writer died).
pub fn read<R>(seq: &AtomicU64, mut read: impl FnMut() -> R) -> Option<(R, u64)> {
    for _ in 0..10_000 {
        let s1 = seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            core::hint::spin_loop();
            continue;
        }
        let r = read();
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) == s1 {
            return Some((r, s1));
        }
    }
    None
}

/// Copies `src` (session keys, among others) into `dst`; the staging copy
/// on the stack is wiped afterwards.
pub fn store_bytes<const W: usize>(dst: &[AtomicU64; W], src: &[u8]) {
    let mut buf = Zeroizing::new([0u8; 64]);
    buf[..src.len()].copy_from_slice(src);
    for (i, w) in dst.iter().enumerate() {
        w.store(
            u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

/// Copies `src` into `dst`, wiping each word's staging copy.
pub fn load_bytes<const W: usize>(src: &[AtomicU64; W], dst: &mut [u8]) {
    for (i, w) in src.iter().enumerate() {
        let b = Zeroizing::new(w.load(Ordering::Relaxed).to_le_bytes());
        let n = (dst.len().saturating_sub(i * 8)).min(8);
        dst[i * 8..i * 8 + n].copy_from_slice(&b[..n]);
    }
}
