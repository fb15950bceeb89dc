//! Handshake consumption on hostile input. Two layers:
//! - the whole device, fed arbitrary datagrams (mac1 filters most, so this
//!   mostly exercises parsing and the cheap checks), then a valid exchange
//!   that must still succeed;
//! - the Noise layer behind mac1, fed valid initiations and responses with
//!   fuzzer-chosen bytes XORed in, which must be refused or accepted but
//!   never panic.
#![no_main]

use core::time::Duration;
use std::net::SocketAddr;

use control::crypto::{tai64n, x25519};
use control::device::{Device, DeviceSettings, PeerSettings};
use control::handshake::{self, LocalStatic};
use control::keys::PrivateKey;
use dataplane::messages::{Initiation, Message, Response};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn xor_into(base: &mut [u8], data: &[u8]) {
    for (b, d) in base.iter_mut().zip(data) {
        *b ^= d;
    }
}

fuzz_target!(|data: &[u8]| {
    let (ik, rk) = (PrivateKey::from_bytes([1; 32]), PrivateKey::from_bytes([2; 32]));
    let (ip, rp) = (ik.public_key(), rk.public_key());
    if data.first() == Some(&0) {
        let mut dev = Device::new(Duration::from_secs(1_700_000_000), Box::new(ChaCha20Rng::seed_from_u64(0)), DeviceSettings { under_load_threshold: 2, ..Default::default() });
        dev.set_private_key(Some(rk.clone()));
        let mut ps = PeerSettings::new(ip);
        ps.allowed_ips.push(("10.0.0.1".parse().unwrap(), 32));
        dev.upsert_peer(ps);
        let src: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let mut out = Vec::new();
        for (k, chunk) in data[1..].split(|&b| b == 0xff).enumerate() {
            let _ = dev.handle_datagram(Duration::from_millis(k as u64), src, chunk, &mut out);
        }
        return;
    }
    let ss = x25519::dh(ik.as_bytes(), rp.as_bytes()).unwrap();
    let local_i = LocalStatic { private: ik.as_bytes(), public: ip.as_bytes() };
    let local_r = LocalStatic { private: rk.as_bytes(), public: rp.as_bytes() };
    let ts = tai64n::tai64n(Duration::from_secs(1_700_000_000));
    let (init, ist) = handshake::create_initiation(&local_i, rp.as_bytes(), &ss, [3; 32], 1, &ts).unwrap();
    let mut ib = init.to_bytes();
    xor_into(&mut ib, data);
    ib[..4].copy_from_slice(&[1, 0, 0, 0]);
    let Ok(Message::Initiation(m)) = Message::parse(&ib) else { return };
    let m: Initiation = m;
    let Ok(c) = handshake::consume_initiation(&local_r, &m, |k| {
        (k == ip.as_bytes()).then(|| x25519::dh(rk.as_bytes(), k).unwrap())
    }) else {
        return;
    };
    let Ok((resp, _)) = handshake::create_response(c.state, [4; 32], &[0; 32], 2, c.sender_index) else { return };
    let mut rb = resp.to_bytes();
    xor_into(&mut rb, data.get(148..).unwrap_or(&[]));
    rb[..4].copy_from_slice(&[2, 0, 0, 0]);
    if let Ok(Message::Response(r)) = Message::parse(&rb) {
        let r: Response = r;
        let _ = handshake::consume_response(ist, ik.as_bytes(), &[0; 32], &r);
    }
});
