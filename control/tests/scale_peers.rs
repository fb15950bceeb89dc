//! A hundred thousand peers on a real interface: `wg setconf` applies them
//! in seconds (it grows the shared region past its starting capacity of
//! 1,024 peers, and used to pay one X25519 per peer), `wg show` lists
//! them all, the one real peer among them still handshakes and carries
//! pings, and removing a thousand of them (each once a walk of the whole
//! AllowedIPs table) leaves the rest.
//!
//! The time bounds are hang guards, far above what it takes.
//! Needs root; WIRESPEED_SKIP_NETNS=1 skips with a loud line.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::util::TempDir;
use common::{Impl, Tunnel};
use control::keys::encode_base64_key;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const PEERS: usize = 100_000;
const REMOVED: usize = 1_000;
const GUARD: Duration = Duration::from_secs(120);

fn peer_count(t: &Tunnel) -> usize {
    t.a.ns
        .exec(&["wg", "show", &t.a.iface, "peers"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn a_hundred_thousand_peers_apply_in_seconds_and_the_real_one_still_works() {
    let Some(_serial) = common::netns_test("scale_peers") else {
        return;
    };
    let t = Tunnel::new(Impl::WirespeedUdp, Impl::WirespeedUdp);
    let to = t.b.tunnel_ip.to_string();
    common::assert_ping(&t.a.ns, &to, 1);

    // A's configuration as it runs (private key, port, peer B), then
    // random keys (any 32 bytes do as a public key in a configuration),
    // one /32 in 10.128.0.0/9 and an endpoint each.
    let mut conf = t.a.ns.exec(&["wg", "showconf", &t.a.iface]);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut keys = Vec::with_capacity(PEERS - 1);
    for i in 0..PEERS - 1 {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        let k = encode_base64_key(&k);
        let ip = 0x0a80_0000u32 + i as u32;
        let _ = write!(
            conf,
            "\n[Peer]\nPublicKey = {k}\nAllowedIPs = {}/32\nEndpoint = 192.0.2.{}:{}\n",
            std::net::Ipv4Addr::from(ip),
            1 + i % 250,
            1024 + i % 60_000
        );
        keys.push(k);
    }
    let dir = TempDir::new();
    let file = dir.write("wg-a.conf", &conf);
    let started = Instant::now();
    t.a.ns
        .exec(&["wg", "setconf", &t.a.iface, file.to_str().unwrap()]);
    let took = started.elapsed();
    eprintln!("scale_peers: wg setconf with {PEERS} peers took {took:?}");
    assert!(took < GUARD, "wg setconf took {took:?}");
    assert_eq!(peer_count(&t), PEERS);
    // setconf replaced B's peer too: a new handshake, then pings.
    common::assert_ping(&t.a.ns, &to, 3);
    let hs =
        t.a.ns
            .exec(&["wg", "show", &t.a.iface, "latest-handshakes"]);
    let b_key = &t.b.keys.public;
    assert!(
        hs.lines()
            .any(|l| l.starts_with(b_key.as_str()) && !l.trim_end().ends_with("\t0")),
        "B has a handshake: {:?}",
        hs.lines().find(|l| l.starts_with(b_key.as_str()))
    );

    // A thousand removed in one `wg set`.
    let mut args: Vec<&str> = vec!["wg", "set", &t.a.iface];
    for k in &keys[..REMOVED] {
        args.extend(["peer", k.as_str(), "remove"]);
    }
    let started = Instant::now();
    t.a.ns.exec(&args);
    let took = started.elapsed();
    eprintln!("scale_peers: removing {REMOVED} peers took {took:?}");
    assert!(took < GUARD, "removing took {took:?}");
    assert_eq!(peer_count(&t), PEERS - REMOVED);
    let listed = t.a.ns.exec(&["wg", "show", &t.a.iface, "peers"]);
    assert!(!listed.contains(keys[0].as_str()) && listed.contains(keys[REMOVED].as_str()));
    common::assert_ping(&t.a.ns, &to, 3);
}
