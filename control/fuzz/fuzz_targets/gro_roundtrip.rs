//! Decrypted packets through receive coalescing (TCP and UDP): pushing any
//! sequence of packets never panics, and cutting what comes out back into
//! packets gives as many packets as went in, each as long as it was, in
//! the same order (only checksums may be recomputed). The input is a list
//! of packets, each behind a 2-byte big-endian length.
#![no_main]

use dataplane::gro::Gro;
use dataplane::offload::{for_each_packet, VnetHdr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut packets = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        packets.push(rest[2..2 + n].to_vec());
        rest = &rest[2 + n..];
    }
    let mut gro = Gro::new(true);
    let mut written: Vec<(Option<VnetHdr>, Vec<u8>)> = Vec::new();
    {
        let mut sink = |h: Option<&VnetHdr>, p: &[u8]| written.push((h.copied(), p.to_vec()));
        for p in &packets {
            gro.push(p, &mut sink);
        }
        gro.flush(&mut sink);
    }
    let mut lens = Vec::new();
    let mut scratch = vec![0u8; 65536];
    for (h, mut p) in written {
        match h {
            None => lens.push(p.len()),
            Some(h) => {
                for_each_packet(&h, &mut p, &mut scratch, |s| lens.push(s.len()))
                    .expect("a super-packet made by coalescing cuts back");
            }
        }
    }
    let want: Vec<usize> = packets.iter().map(|p| p.len()).collect();
    assert_eq!(lens, want);
});
