//! The classic pcap file format that tcpdump, Wireshark and every other
//! capture tool read: a 24-byte file header, then a 16-byte record header
//! before each frame. Nanosecond timestamps (magic 0xa1b23c4d), Ethernet
//! link type, written in this host's byte order as libpcap does.

use std::io::{self, Write};

/// The nanosecond-resolution variant's magic number.
pub const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;

pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header; `snaplen` is the most bytes any record holds.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<PcapWriter<W>> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_NS.to_ne_bytes());
        h.extend_from_slice(&2u16.to_ne_bytes());
        h.extend_from_slice(&4u16.to_ne_bytes());
        h.extend_from_slice(&0i32.to_ne_bytes()); // thiszone: UTC
        h.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_ne_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Appends one frame taken at `realtime_ns` (ns since the Unix epoch),
    /// `orig_len` bytes long on the wire, of which `data` was kept (cut to
    /// the snaplen if longer).
    pub fn write(&mut self, realtime_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let secs = u32::try_from(realtime_ns / 1_000_000_000).unwrap_or(u32::MAX);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&secs.to_ne_bytes());
        h[4..8].copy_from_slice(&((realtime_ns % 1_000_000_000) as u32).to_ne_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        h[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_ne_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_and_records_are_laid_out_as_libpcap_reads_them() {
        let mut w = PcapWriter::new(Vec::new(), 64).unwrap();
        let frame: Vec<u8> = (0..100).collect();
        w.write(1_700_000_000_123_456_789, 100, &frame).unwrap();
        w.write(1_700_000_001_000_000_001, 3, &frame[..3]).unwrap();
        let b = w.into_inner();
        assert_eq!(b.len(), 24 + 16 + 64 + 16 + 3);
        // File header: magic, version 2.4, zone 0, sigfigs 0, snaplen, link type.
        assert_eq!(u32_at(&b, 0), 0xa1b2_3c4d);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 2);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 4);
        assert_eq!((u32_at(&b, 8), u32_at(&b, 12)), (0, 0));
        assert_eq!((u32_at(&b, 16), u32_at(&b, 20)), (64, 1));
        // First record: cut to the snaplen, original length kept.
        let r = 24;
        assert_eq!(u32_at(&b, r), 1_700_000_000);
        assert_eq!(u32_at(&b, r + 4), 123_456_789);
        assert_eq!((u32_at(&b, r + 8), u32_at(&b, r + 12)), (64, 100));
        assert_eq!(&b[r + 16..r + 16 + 64], &frame[..64]);
        let r = r + 16 + 64;
        assert_eq!((u32_at(&b, r), u32_at(&b, r + 4)), (1_700_000_001, 1));
        assert_eq!((u32_at(&b, r + 8), u32_at(&b, r + 12)), (3, 3));
        assert_eq!(&b[r + 16..], &frame[..3]);
    }

    #[test]
    fn a_kept_length_above_the_original_is_not_written() {
        let mut w = PcapWriter::new(Vec::new(), 1000).unwrap();
        w.write(0, 2, &[1, 2, 3, 4]).unwrap();
        let b = w.into_inner();
        assert_eq!((u32_at(&b, 24 + 8), u32_at(&b, 24 + 12)), (4, 4));
    }
}
