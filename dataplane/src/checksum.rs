//! The Internet checksum (RFC 1071), shared by the frame builder (outer
//! IP/UDP headers) and the TUN offload code (inner TCP/UDP segments).

/// Adds `data`, as big-endian 16-bit words (an odd last byte padded with a
/// zero byte), to a one's-complement accumulator. Eight bytes at a time: a
/// one's-complement sum of 64-bit words with end-around carry folds to the
/// same 16-bit sum (RFC 1071), and `data` always starts at an even offset of
/// the checksummed whole, so the word boundaries agree.
pub fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = sum.overflowing_add(w);
        sum = s + u64::from(carry);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    let mut tail = 0u64;
    for w in &mut words {
        tail += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        tail += u64::from(*last) << 8;
    }
    // tail < 4 * 65536, so this cannot wrap twice.
    let (s, carry) = sum.overflowing_add(tail);
    s + u64::from(carry)
}

/// Folds a one's-complement accumulator to 16 bits (not yet inverted).
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
