//! TAI64N timestamps: the initiation's replay guard. Big-endian so that a
//! byte-wise comparison orders them in time.

use core::time::Duration;

pub const TIMESTAMP_LEN: usize = 12;
/// 2^62 + 10: TAI64's label for the Unix epoch, as the kernel writes it.
const TAI64_EPOCH_OFFSET: u64 = 0x4000_0000_0000_000a;
/// The kernel rounds the nanoseconds down to a power of two near 1/50 s so the
/// timestamp does not leak fine-grained clock information.
const NANOS_GRANULARITY: u32 = 1 << 24;

/// The TAI64N label of a Unix time.
pub fn tai64n(unix: Duration) -> [u8; TIMESTAMP_LEN] {
    let mut out = [0u8; TIMESTAMP_LEN];
    out[..8].copy_from_slice(&(TAI64_EPOCH_OFFSET + unix.as_secs()).to_be_bytes());
    let nanos = unix.subsec_nanos() & !(NANOS_GRANULARITY - 1);
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

/// True when `candidate` is strictly later than `previous`.
pub fn is_after(candidate: &[u8; TIMESTAMP_LEN], previous: &[u8; TIMESTAMP_LEN]) -> bool {
    candidate > previous
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_order() {
        let t = tai64n(Duration::new(1, 999_999_999));
        assert_eq!(&t[..8], &0x4000_0000_0000_000bu64.to_be_bytes());
        assert_eq!(
            u32::from_be_bytes(t[8..].try_into().unwrap()) % NANOS_GRANULARITY,
            0
        );
        let later = tai64n(Duration::new(2, 0));
        assert!(is_after(&later, &t));
        assert!(!is_after(&t, &t));
        // Within one granule the timestamps are equal, so the second is refused.
        assert!(!is_after(
            &tai64n(Duration::new(5, 1000)),
            &tai64n(Duration::new(5, 2000))
        ));
    }
}
