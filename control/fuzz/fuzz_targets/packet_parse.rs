//! Any frame an uplink delivers, and any packet (with its virtio-net
//! header) the TUN hands over: the frame parser never panics and what it
//! finds lies inside the frame; cutting a super-packet never panics and
//! never emits more than the scratch buffer holds.
#![no_main]

use dataplane::frame::parse_udp_frame;
use dataplane::offload::{for_each_packet, VnetHdr, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(u) = parse_udp_frame(data) {
        let start = u.payload.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + u.payload.len() <= data.len());
    }
    if data.len() >= VNET_HDR_LEN {
        let hdr = VnetHdr::parse(data[..VNET_HDR_LEN].try_into().unwrap());
        let mut packet = data[VNET_HDR_LEN..].to_vec();
        let mut scratch = vec![0u8; 4096];
        let mut emitted = 0usize;
        let r = for_each_packet(&hdr, &mut packet, &mut scratch, |p| {
            assert!(p.len() <= 4096.max(data.len()));
            emitted += 1;
        });
        if let Ok(n) = r {
            assert_eq!(n, emitted);
        }
    }
});
