//! The Internet checksum (RFC 1071), shared by the frame builder (outer
//! IP/UDP headers) and the TUN offload code (inner TCP/UDP segments).

/// Adds `data`, as big-endian 16-bit words (an odd last byte padded with a
/// zero byte), to a one's-complement accumulator. `data` always starts at
/// an even offset of the checksummed whole, so the word boundaries agree.
///
/// The words are summed in the machine's little-endian order and the folded
/// sum byte-swapped once at the end (RFC 1071 §2(B): the one's-complement
/// sum is independent of byte order up to that swap). Summing 32-bit halves
/// of 64-bit words into 64-bit lanes needs no end-around carry inside the
/// loop, so the lanes have no chain between them and the compiler
/// vectorizes it: this runs over every byte a tunnel carries.
#[inline]
pub fn add(sum: u64, data: &[u8]) -> u64 {
    let le = fold(sum_le(data));
    let (s, carry) = sum.overflowing_add(u64::from(le.swap_bytes()));
    s + u64::from(carry)
}

/// The sum of `data` as little-endian 16-bit words, not yet folded.
#[inline]
fn sum_le(data: &[u8]) -> u64 {
    // Headers and pseudo-headers are too short for wide lanes to pay.
    #[cfg(target_arch = "x86_64")]
    if data.len() >= 128 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the one feature the function is built
        // with; it is otherwise the same safe code as `sum_le_words`.
        return unsafe { sum_le_avx2(data) };
    }
    sum_le_words(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_le_avx2(data: &[u8]) -> u64 {
    sum_le_words(data)
}

#[inline(always)]
fn sum_le_words(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    // Each lane gains less than 2^32 per word: no overflow below 2^32
    // words, far beyond any packet.
    let (mut lo, mut hi) = (0u64, 0u64);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        lo += w & 0xffff_ffff;
        hi += w >> 32;
    }
    let mut tail = 0u64;
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        tail += u64::from(u16::from_le_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        // The zero pad byte follows it: in little-endian order, the low byte.
        tail += u64::from(*last);
    }
    lo + hi + tail
}

/// Folds a one's-complement accumulator to 16 bits (not yet inverted).
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header of a TCP or UDP checksum (RFC 793/768, RFC 8200 §8.1)
/// for the IP packet starting with `ip`: its addresses, `proto` and the
/// transport length `len`, as an accumulator for [`add`].
pub fn pseudo_header(ip: &[u8], proto: u8, len: usize) -> u64 {
    let addrs = if ip[0] >> 4 == 6 {
        &ip[8..40]
    } else {
        &ip[12..20]
    };
    let sum = add(0, addrs);
    let sum = add(sum, &[0, proto]);
    add(sum, &(len as u32).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 as written: big-endian 16-bit words, end-around carry after
    /// every addition.
    fn reference(mut sum: u16, data: &[u8]) -> u16 {
        for w in data.chunks(2) {
            let word = u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]);
            let (s, carry) = sum.overflowing_add(word);
            sum = s + u16::from(carry);
        }
        sum
    }

    #[test]
    fn known_sums() {
        // RFC 1071 §3's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(fold(add(0, &[])), 0);
        assert_eq!(fold(add(0, &[0xab])), 0xab00);
        assert_eq!(fold(add(0, &[0xff; 4096])), 0xffff);
    }

    proptest! {
        #[test]
        fn matches_rfc_1071_in_any_even_split(
            data in prop::collection::vec(any::<u8>(), 0..3000),
            start in any::<u16>(),
            cut in any::<usize>(),
        ) {
            let cut = (cut % (data.len() + 1)) & !1;
            let sum = add(add(u64::from(start), &data[..cut]), &data[cut..]);
            let want = reference(reference(start, &data[..cut]), &data[cut..]);
            // 0 and 0xffff are the same number in one's complement.
            prop_assert_eq!(fold(sum) % 0xffff, want % 0xffff);
        }
    }
}
