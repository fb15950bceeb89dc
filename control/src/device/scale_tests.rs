//! What keeps many peers cheap: a peer's AllowedIPs removed by its own
//! list of prefixes (leaving those that moved to another peer), and the
//! static-static DH computed at a peer's first handshake, not as it is added.

use super::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn device() -> Device {
    let mut d = Device::new(
        Duration::from_secs(1_750_000_000),
        Box::new(ChaCha20Rng::seed_from_u64(7)),
        DeviceSettings::default(),
    );
    d.set_private_key(Some(PrivateKey::from_bytes([1; 32])));
    d
}

fn peer(d: &mut Device, n: u8, prefixes: &[&str]) -> PeerId {
    let mut s = PeerSettings::new(PrivateKey::from_bytes([n; 32]).public_key());
    s.allowed_ips = prefixes
        .iter()
        .map(|p| {
            let (a, c) = p.split_once('/').unwrap();
            (a.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    d.upsert_peer(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn removing_a_peer_leaves_the_prefixes_that_moved_away() {
    let mut d = device();
    let a = peer(&mut d, 2, &["10.0.0.0/24", "10.0.1.0/24", "fd00::/64"]);
    // The same prefix again is listed once.
    peer(&mut d, 2, &["10.0.0.0/24"]);
    let b = peer(&mut d, 3, &["10.0.1.0/24", "10.0.2.0/24"]);
    assert_eq!(
        d.allowed_ips().lookup(ip("10.0.1.1")),
        Some(b),
        "moved to b"
    );
    d.remove_peer(a);
    assert_eq!(d.allowed_ips().lookup(ip("10.0.0.1")), None);
    assert_eq!(d.allowed_ips().lookup(ip("fd00::1")), None);
    assert_eq!(d.allowed_ips().lookup(ip("10.0.1.1")), Some(b));
    assert_eq!(d.allowed_ips().len(), 2);
    // Replacing b's: the old ones go, a new one stays.
    d.clear_allowed_ips(b);
    peer(&mut d, 3, &["192.168.0.0/16"]);
    assert_eq!(d.allowed_ips().len(), 1);
    assert_eq!(d.allowed_ips().lookup(ip("192.168.1.1")), Some(b));
    d.remove_peer(b);
    assert!(d.allowed_ips().is_empty());
    assert!(d.prefixes_of.is_empty(), "nothing left listed");
}

#[test]
fn clearing_every_peer_forgets_their_lists() {
    let mut d = device();
    let a = peer(&mut d, 2, &["10.0.0.0/24"]);
    d.remove_all_peers();
    assert!(d.prefixes_of.is_empty());
    // A new peer with the same id space starts from nothing.
    let c = peer(&mut d, 4, &["10.9.0.0/16"]);
    d.clear_allowed_ips(a);
    assert_eq!(d.allowed_ips().lookup(ip("10.9.0.1")), Some(c));
}

#[test]
fn the_static_static_dh_waits_for_the_first_handshake() {
    let mut d = device();
    let a = peer(&mut d, 2, &[]);
    assert!(d.peers[&a].static_static.is_none(), "not computed on add");
    let ss = d.static_static(a).expect("computed on demand");
    assert_eq!(
        d.peers[&a].static_static.as_deref().map(|s| &**s),
        Some(&*ss),
        "and kept"
    );
    let expected = x25519::dh(
        &[1; 32],
        PrivateKey::from_bytes([2; 32]).public_key().as_bytes(),
    );
    assert_eq!(Some(&*ss), expected.as_deref().ok());
    // A new private key voids it.
    d.set_private_key(Some(PrivateKey::from_bytes([9; 32])));
    assert!(d.peers[&a].static_static.is_none());
    assert_ne!(d.static_static(a), Some(ss));
}

fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks + m.hblkhd
}

/// An idle configured peer (key, endpoint, one /32, as `wg setconf` leaves
/// it) costs control under 1 KB of heap: its keypairs, handshake state
/// and cookie state are allocated when it first handshakes, not as it is
/// added. The heap is measured around building the device, so every
/// allocation a peer makes counts (a size_of check would miss boxed or
/// pre-sized ones); other tests' threads allocate concurrently, so the
/// bound is checked on the smallest of three runs.
#[test]
fn an_idle_peer_costs_well_under_a_kilobyte_of_heap() {
    const PEERS: usize = 20_000;
    let per_peer = (0..3)
        .map(|_| {
            let before = heap_in_use();
            let mut d = device();
            for p in 0..PEERS {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&(p as u64 + 1).to_le_bytes());
                let mut s = PeerSettings::new(PublicKey(k));
                s.endpoint = Some(SocketAddr::from(([192, 0, 2, 1], 1024 + p as u16 % 60000)));
                s.allowed_ips = vec![(
                    IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + p as u32)),
                    32,
                )];
                d.upsert_peer(s).unwrap();
            }
            let used = heap_in_use().saturating_sub(before);
            drop(d);
            used / PEERS
        })
        .min()
        .unwrap();
    eprintln!("control heap per idle peer: {per_peer} B");
    // About 700 B now (the boxed peer 370, its maps' slots, its prefix
    // list, its trie nodes); 12 KB when keypairs were inline.
    assert!(per_peer < 900, "{per_peer} B per idle peer");
}

/// The timer tick visits the peers that may have a timer armed, not every
/// configured one: after a tick, idle peers are off that list, and a peer
/// whose handshake went out is on it until its timers are all disarmed.
#[test]
fn the_timer_tick_visits_only_peers_with_timers() {
    let mut d = device();
    let ids: Vec<PeerId> = (10..200)
        .map(|n| {
            let mut s = PeerSettings::new(PrivateKey::from_bytes([n; 32]).public_key());
            s.endpoint = Some(SocketAddr::from(([192, 0, 2, 1], 51820)));
            d.upsert_peer(s).unwrap()
        })
        .collect();
    let mut out = Vec::new();
    let t = Duration::from_secs(1);
    d.update_timers(t, &mut out);
    assert!(d.peers.maybe_armed().is_empty(), "configured, never used");
    assert_eq!(d.next_deadline(), None);
    d.request_handshake(ids[7], t, &mut out);
    assert!(matches!(out.last(), Some(Output::Send { .. })), "{out:?}");
    d.update_timers(t, &mut out);
    assert_eq!(d.peers.maybe_armed(), [ids[7]]);
    assert!(d.next_deadline().is_some());
}
