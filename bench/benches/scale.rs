//! The data plane's per-packet cost as the configuration grows: 1, 1,000,
//! 100,000 and 1,000,000 peers, each with a session in the shared region
//! and one /32 AllowedIPs entry, packets spread over the peers at random
//! (so neither the key slots, the worker's key cache nor the trie stay in
//! cache for them).
//!
//! * `rx`: receiver index → key slot (capacity check, the slot's seq
//!   against the worker's cached key), AEAD open, replay window, AllowedIPs
//!   source check — the receive path of `process/worker/receive.rs`.
//! * `tx`: AllowedIPs destination lookup → peer slot → its current key
//!   slot (seq check, counter reservation) → seal.
//!
//! * `rx-hot`, `tx-hot`: the same with packets spread over 1,000 active
//!   peers (chosen at random) of the configured ones, the realistic case: a
//!   device with 1,000,000 peers configured has far fewer sending at once,
//!   and the cost per packet should then not grow with the configuration.
//!
//! Throughput is in packets (64-byte payloads, so the AEAD does not hide
//! the look-ups); criterion reports elements/s, i.e. Mpps on one core.
//! Before the runs, a table of what each configuration costs in memory:
//! the region's allocated pages (its tmpfs file's blocks) and
//! control's heap for the same peers (glibc mallinfo2 around building a
//! `Device` with them; above 100,000 peers scaled from 100,000). Then what
//! publishing the AllowedIPs table costs as it is done on every change
//! (`wg set wg0 peer P allowed-ips ...`): control rewriting the region's
//! table, and the data plane reading it and building its trie.
//! `SCALE_PEERS=1,1000` picks the sizes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::allowedips::AllowedIps;
use dataplane::messages::Message;
use dataplane::shm::keys::{slot_of_index, KeyMaterial};
use dataplane::shm::layout::{Capacity, MAX_KEY_SLOT_BITS};
use dataplane::shm::{allowed, Region};
use dataplane::transport::{open, seal, SessionKey};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

const PACKETS: usize = 4096;
/// Peers sending at once in the hot working set cases.
const HOT_PEERS: usize = 1000;
const PAYLOAD: usize = 64;

fn sizes() -> Vec<usize> {
    std::env::var("SCALE_PEERS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 1_000, 100_000, 1_000_000])
}

/// Peer `p`'s address: 10.0.0.0/8 and up, one /32 each.
fn addr_of(p: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + p as u32)
}

/// Peer `p`'s receiver index: slot `p` (below the capacity) and random
/// high bits, as control allocates them.
fn index_of(p: usize, cap: &Capacity, rng: &mut ChaCha20Rng) -> u32 {
    assert!(p < cap.keys);
    (rng.next_u32() << MAX_KEY_SLOT_BITS) | p as u32
}

struct Tmp(PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A region with `n` peers as control would leave it.
fn populate(n: usize) -> (Region, Tmp, Vec<u32>) {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = Tmp(base.join(format!("wirespeed-scale-{}-{n}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let r = Region::create_exclusive(&dir.0.join("wg0.region")).expect("region");
    let cap = Capacity::for_config(n, n).expect("within the layout");
    r.grow(cap);
    let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
    let mut indices = Vec::with_capacity(n);
    let mut table = Vec::with_capacity(n);
    for p in 0..n {
        let index = index_of(p, &cap, &mut rng);
        let slot = slot_of_index(index);
        r.lock_key_slot(slot);
        r.key(slot).publish(&KeyMaterial {
            local_index: index,
            peer: p as u32,
            remote_index: index,
            initiator: true,
            created_ns: dataplane::shm::monotonic_ns(),
            send_key: Zeroizing::new(key_of(p)),
            recv_key: Zeroizing::new(key_of(p)),
        });
        let peer = r.peer(p);
        peer.activate();
        peer.set_endpoint(
            Some(format!("192.0.2.1:{}", 1024 + p % 60000).parse().unwrap()),
            None,
        );
        peer.set_current_key(Some(slot as u32));
        table.push((IpAddr::V4(addr_of(p)), 32u8, p as u32));
        indices.push(index);
    }
    allowed::write_table(&r, &table).expect("fits");
    (r, dir, indices)
}

fn key_of(p: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(p as u64 + 1).to_le_bytes());
    k
}

/// An IPv4 header (20 bytes) from `src` to `dst`, then zeros.
fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PAYLOAD as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

/// What a worker keeps per key slot (as `process/keycache.rs`).
struct Cached {
    seq: u64,
    local_index: u32,
    peer: u32,
    key: SessionKey,
}

struct Worker {
    cache: Vec<Option<Cached>>,
    routes: AllowedIps<u32>,
}

impl Worker {
    fn new(r: &Region) -> Worker {
        let (entries, _) = allowed::read_table(r).expect("table");
        Worker {
            cache: Vec::new(),
            routes: AllowedIps::from_prefixes(entries),
        }
    }

    fn key(&mut self, r: &Region, slot: usize) -> Option<&Cached> {
        if slot >= self.cache.len() {
            let cap = r.key_slots();
            if slot >= cap {
                return None;
            }
            self.cache.resize_with(cap, || None);
        }
        let shm = r.key(slot);
        let seq = shm.seq();
        if !matches!(&self.cache[slot], Some(c) if c.seq == seq) {
            self.cache[slot] = shm.read().map(|(k, seq)| Cached {
                seq,
                local_index: k.local_index,
                peer: k.peer,
                key: SessionKey::new(&k.recv_key),
            });
        }
        self.cache[slot].as_ref()
    }

    /// The receive path for one message; true if it would be delivered.
    fn receive(&mut self, r: &Region, wire: &[u8], plain: &mut Vec<u8>) -> bool {
        let Ok(Message::Transport(t)) = Message::parse(wire) else {
            return false;
        };
        let slot = slot_of_index(t.receiver);
        let Some(k) = self.key(r, slot).filter(|k| k.local_index == t.receiver) else {
            return false;
        };
        let (seq, peer) = (k.seq, k.peer);
        if open(&k.key, &t, plain).is_err() {
            return false;
        }
        // The window is committed for real: the counters repeat as the
        // packets are replayed round after round, so what it answers is
        // ignored, what it costs is not.
        let _ = std::hint::black_box(r.key(slot).replay(seq, t.counter, true));
        let src = Ipv4Addr::new(plain[12], plain[13], plain[14], plain[15]);
        self.routes.lookup_v4(src) == Some(peer)
    }

    /// The send path for one packet; true if sealed.
    fn send(&mut self, r: &Region, packet: &[u8], out: &mut Vec<u8>) -> bool {
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let Some(peer) = self.routes.lookup_v4(dst) else {
            return false;
        };
        let Some(slot) = r.peer(peer as usize).current_key() else {
            return false;
        };
        let slot = slot as usize;
        let Some(k) = self.key(r, slot) else {
            return false;
        };
        let (seq, index) = (k.seq, k.local_index);
        let Some(counter) = r.key(slot).reserve_counters(seq, 1) else {
            return false;
        };
        let k = self.cache[slot].as_ref().expect("just read");
        seal(&k.key, index, counter, packet, 1420, out);
        true
    }
}

/// Bytes of the region's file with memory behind them (on tmpfs: its
/// pages; what every process mapping it shares).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks as u64 + m.hblkhd as u64
}

/// Control's heap for `n` peers with one /32 and an endpoint each: a
/// `Device` without a private key (so no DH per peer), as `wg setconf`
/// leaves it.
fn control_heap(n: usize) -> u64 {
    use control::device::{Device, DeviceSettings, PeerSettings};
    use control::keys::PublicKey;
    let before = heap_in_use();
    let mut d = Device::new(
        Duration::ZERO,
        Box::new(ChaCha20Rng::seed_from_u64(1)),
        DeviceSettings::default(),
    );
    for p in 0..n {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&(p as u64 + 1).to_le_bytes());
        let mut s = PeerSettings::new(PublicKey(k));
        s.endpoint = Some(format!("192.0.2.1:{}", 1024 + p % 60000).parse().unwrap());
        s.allowed_ips = vec![(IpAddr::V4(addr_of(p)), 32)];
        d.upsert_peer(s);
    }
    let after = heap_in_use();
    drop(d);
    after.saturating_sub(before)
}

fn memory_table() {
    println!();
    println!("scale: memory per configuration (region: allocated pages of its file; control: heap of its Device)");
    println!(
        "{:>10} {:>14} {:>12} {:>14} {:>12}",
        "peers", "region MiB", "B/peer", "control MiB", "B/peer"
    );
    for n in sizes() {
        let (r, dir, _) = populate(n);
        // The worker's routes and key cache are the data plane's heap,
        // not counted here; the region is what both processes share.
        let rss = allocated(&dir.0.join("wg0.region"));
        drop(r);
        // Above 100,000 peers it would take gigabytes: scaled from 100,000.
        let heap = if n <= 100_000 {
            control_heap(n)
        } else {
            control_heap(100_000) * (n / 100_000) as u64
        };
        println!(
            "{:>10} {:>14.1} {:>12} {:>14.1} {:>12}",
            n,
            rss as f64 / (1 << 20) as f64,
            rss / n as u64,
            heap as f64 / (1 << 20) as f64,
            heap / n as u64
        );
    }
    println!();
}

/// One publication of the whole AllowedIPs table with `n` prefixes: the
/// control side (`allowed::write_table`, as control's first publication
/// does after its walk of the device's table) and the data plane side (the
/// copy and trie build of `Shared::routes`), best of three; and what
/// control writes for one changed prefix (`allowed::write_changes`).
fn update_table() {
    println!("scale: one AllowedIPs publication (whole table), best of 3");
    println!(
        "{:>10} {:>14} {:>16} {:>10} {:>10} {:>16}",
        "peers", "control ms", "data plane ms", "(read", "build)", "one change ms"
    );
    for n in sizes() {
        let (r, _dir, _) = populate(n);
        let table: Vec<_> = (0..n)
            .map(|p| (IpAddr::V4(addr_of(p)), 32u8, p as u32))
            .collect();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let [mut write, mut total, mut read, mut build, mut one] = [f64::MAX; 5];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            allowed::write_table(&r, &table).expect("fits");
            write = write.min(ms(t));
            let t = std::time::Instant::now();
            std::hint::black_box(Worker::new(&r));
            total = total.min(ms(t));
            let t = std::time::Instant::now();
            let (entries, _) = allowed::read_table(&r).expect("table");
            read = read.min(ms(t));
            let t = std::time::Instant::now();
            std::hint::black_box(AllowedIps::from_prefixes(entries));
            build = build.min(ms(t));
            // What control writes now for one prefix changed.
            let t = std::time::Instant::now();
            allowed::write_changes(&r, &table, &[n / 2]).expect("fits");
            one = one.min(ms(t));
        }
        println!("{n:>10} {write:>14.1} {total:>16.1} {read:>10.1} {build:>10.1} {one:>16.3}");
    }
    println!();
}

/// `PACKETS` picks of peers below `n`: any of them, or (`hot`) one of
/// `HOT_PEERS` chosen at random.
fn picks(n: usize, hot: bool) -> Vec<usize> {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let active: Vec<usize> = if hot {
        (0..HOT_PEERS)
            .map(|_| (rng.next_u64() % n as u64) as usize)
            .collect()
    } else {
        (0..n).collect()
    };
    (0..PACKETS)
        .map(|_| active[(rng.next_u64() % active.len() as u64) as usize])
        .collect()
}

fn scale(c: &mut Criterion) {
    memory_table();
    update_table();
    let mut g = c.benchmark_group("scale");
    g.throughput(Throughput::Elements(PACKETS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    for n in sizes() {
        let (r, _dir, indices) = populate(n);
        let mut w = Worker::new(&r);
        let mut counters = vec![0u64; n];
        for hot in [false, true] {
            if hot && n <= HOT_PEERS {
                continue;
            }
            let suffix = if hot { "-hot" } else { "" };
            let picks = picks(n, hot);
            run_packets(
                &mut g,
                &r,
                &mut w,
                &indices,
                &mut counters,
                &picks,
                n,
                suffix,
            );
        }
    }
    g.finish();
}

/// The rx and tx benchmarks for packets to and from the peers `picks`.
#[allow(clippy::too_many_arguments)]
fn run_packets(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    r: &Region,
    w: &mut Worker,
    indices: &[u32],
    counters: &mut [u64],
    picks: &[usize],
    n: usize,
    suffix: &str,
) {
    {
        let mut wire = Vec::new();
        for &p in picks {
            let mut m = Vec::new();
            let key = SessionKey::new(&key_of(p));
            counters[p] += 1;
            seal(
                &key,
                indices[p],
                counters[p],
                &ip_packet(addr_of(p), Ipv4Addr::new(192, 168, 0, 1)),
                1420,
                &mut m,
            );
            wire.push(m);
        }
        let outbound: Vec<Vec<u8>> = picks
            .iter()
            .map(|&p| ip_packet(Ipv4Addr::new(192, 168, 0, 1), addr_of(p)))
            .collect();
        let mut plain = Vec::with_capacity(2048);
        // Every key cached once, as a worker that has run a while has.
        for (p, m) in picks.iter().zip(&wire) {
            assert!(w.receive(r, m, &mut plain), "peer {p}");
        }
        g.bench_function(BenchmarkId::new(format!("rx{suffix}"), n), |b| {
            b.iter(|| {
                let mut ok = 0;
                for m in &wire {
                    ok += w.receive(r, m, &mut plain) as usize;
                }
                ok
            })
        });
        let mut out = Vec::with_capacity(2048);
        g.bench_function(BenchmarkId::new(format!("tx{suffix}"), n), |b| {
            b.iter(|| {
                let mut ok = 0;
                for p in &outbound {
                    ok += w.send(r, p, &mut out) as usize;
                }
                assert_eq!(ok, PACKETS);
                ok
            })
        });
    }
}

criterion_group!(benches, scale);
criterion_main!(benches);
