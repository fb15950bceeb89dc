//! AllowedIPs lookup speed on a 100,000-prefix table.
//!
//! The table imitates a large deployment: mostly IPv4 with the length mix of
//! real routing tables plus many /32 peer addresses, and IPv6 at the usual
//! /32../64 allocation sizes plus /128 hosts. Half of the probes fall inside a
//! stored prefix (the common case for traffic that is routed at all, and the
//! deepest walk), half are uniformly random (mostly misses that stop early).
//! A linear scan over the same prefixes is measured on a small batch so the
//! ratio is visible.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::allowedips::AllowedIps;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

const PREFIXES: usize = 100_000;
const PEERS: u32 = 1_000;
const BATCH: usize = 4_096;
const LINEAR_BATCH: usize = 16;

/// Picks from `(weight, value)` pairs; the weights need not sum to anything.
fn weighted(rng: &mut ChaCha8Rng, table: &[(u32, u8)]) -> u8 {
    let total: u32 = table.iter().map(|t| t.0).sum();
    let mut x = rng.next_u32() % total;
    for &(w, v) in table {
        if x < w {
            return v;
        }
        x -= w;
    }
    table[table.len() - 1].1
}

fn range(rng: &mut ChaCha8Rng, lo: u8, hi: u8) -> u8 {
    lo + (rng.next_u32() % u32::from(hi - lo + 1)) as u8
}

fn v4_len(rng: &mut ChaCha8Rng) -> u8 {
    match weighted(rng, &[(40, 24), (20, 32), (25, 0), (5, 1), (5, 2), (5, 3)]) {
        0 => range(rng, 16, 23),
        1 => range(rng, 8, 15),
        2 => range(rng, 25, 31),
        3 => range(rng, 4, 7),
        n => n,
    }
}

fn v6_len(rng: &mut ChaCha8Rng) -> u8 {
    match weighted(rng, &[(30, 48), (30, 64), (20, 128), (5, 56), (15, 0)]) {
        0 => range(rng, 29, 47),
        n => n,
    }
}

fn random_v4(rng: &mut ChaCha8Rng) -> u32 {
    rng.next_u32()
}

/// Global unicast space (2000::/3), where real IPv6 tables live.
fn random_v6(rng: &mut ChaCha8Rng) -> u128 {
    let a = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    (a >> 3) | (1u128 << 125)
}

fn host_mask_v4(cidr: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(cidr)).unwrap_or(0)
}

fn host_mask_v6(cidr: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(cidr)).unwrap_or(0)
}

struct Fixture {
    table: AllowedIps<u32>,
    /// The same prefixes, host bits cleared, for probes and the linear scan.
    entries: Vec<(IpAddr, u8, u32)>,
}

fn build(rng: &mut ChaCha8Rng) -> Fixture {
    let mut table = AllowedIps::new();
    // Random draws can repeat a prefix (short lengths especially); keep
    // drawing until the table really holds PREFIXES distinct ones.
    while table.len() < PREFIXES {
        let value = rng.next_u32() % PEERS;
        let (addr, cidr) = if rng.next_u32() % 4 < 3 {
            let cidr = v4_len(rng);
            let a = random_v4(rng) & !host_mask_v4(cidr);
            (IpAddr::V4(Ipv4Addr::from(a)), cidr)
        } else {
            let cidr = v6_len(rng);
            let a = random_v6(rng) & !host_mask_v6(cidr);
            (IpAddr::V6(Ipv6Addr::from(a)), cidr)
        };
        table.insert(addr, cidr, value).expect("valid prefix");
    }
    let mut entries = Vec::with_capacity(PREFIXES);
    table.for_each(|a, c, v| entries.push((a, c, v)));
    Fixture { table, entries }
}

/// Half inside a stored prefix of the wanted family, half uniformly random.
fn probes(rng: &mut ChaCha8Rng, fx: &Fixture, n: usize, family: Option<bool>) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want_v4 = family.unwrap_or_else(|| rng.next_u32() % 4 < 3);
        if rng.next_u32().is_multiple_of(2) {
            let (net, cidr, _) = fx.entries[rng.next_u32() as usize % fx.entries.len()];
            let a = match net {
                IpAddr::V4(n) if want_v4 => {
                    IpAddr::V4((u32::from(n) | (random_v4(rng) & host_mask_v4(cidr))).into())
                }
                IpAddr::V6(n) if !want_v4 => {
                    IpAddr::V6((u128::from(n) | (random_v6(rng) & host_mask_v6(cidr))).into())
                }
                _ => continue,
            };
            out.push(a);
        } else if want_v4 {
            out.push(IpAddr::V4(random_v4(rng).into()));
        } else {
            out.push(IpAddr::V6(random_v6(rng).into()));
        }
    }
    out
}

fn linear_lookup(entries: &[(IpAddr, u8, u32)], addr: IpAddr) -> Option<u32> {
    let mut best: Option<(u8, u32)> = None;
    for &(net, cidr, value) in entries {
        let inside = match (net, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & !host_mask_v4(cidr) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & !host_mask_v6(cidr) == u128::from(n),
            _ => false,
        };
        if inside && best.is_none_or(|(c, _)| cidr > c) {
            best = Some((cidr, value));
        }
    }
    best.map(|b| b.1)
}

fn bench_allowedips(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_a110_0ed1_9500);
    let fx = build(&mut rng);
    let sets = [
        ("mixed", probes(&mut rng, &fx, BATCH, None)),
        ("v4", probes(&mut rng, &fx, BATCH, Some(true))),
        ("v6", probes(&mut rng, &fx, BATCH, Some(false))),
    ];

    // The trie must agree with the reference before its speed means anything.
    for addr in sets[0].1.iter().take(64) {
        assert_eq!(fx.table.lookup(*addr), linear_lookup(&fx.entries, *addr));
    }

    let mut group = c.benchmark_group("allowedips_100k");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, addrs) in &sets {
        group.bench_with_input(BenchmarkId::new("trie_lookup", name), addrs, |b, addrs| {
            b.iter(|| {
                let mut hits = 0u32;
                for &a in addrs {
                    hits += u32::from(black_box(fx.table.lookup(black_box(a))).is_some());
                }
                hits
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("allowedips_100k_linear");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(LINEAR_BATCH as u64));
    let few = &sets[0].1[..LINEAR_BATCH];
    group.bench_function("linear_scan_mixed", |b| {
        b.iter(|| {
            let mut hits = 0u32;
            for &a in few {
                hits += u32::from(black_box(linear_lookup(&fx.entries, black_box(a))).is_some());
            }
            hits
        })
    });
    group.finish();
}

criterion_group!(benches, bench_allowedips);
criterion_main!(benches);
