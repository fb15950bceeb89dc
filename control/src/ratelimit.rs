//! Per-source handshake rate limiting, applied under load: 20 handshakes a
//! second per IPv4 address or IPv6 /64 with a burst of 5, as the kernel does.
//! Keyed by source so a spoofed flood cannot spend an honest peer's budget;
//! bounded in size so the flood cannot grow it without limit either.

use core::time::Duration;
use std::collections::HashMap;
use std::net::IpAddr;

const PACKETS_PER_SECOND: u64 = 20;
const PACKETS_BURST: u64 = 5;
const PACKET_COST_NS: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const TOKEN_MAX_NS: u64 = PACKET_COST_NS * PACKETS_BURST;
/// Entries idle this long hold a full bucket anyway and are dropped.
const IDLE_EXPIRY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Hash, PartialEq, Eq, Debug)]
enum SourceKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

fn key_of(ip: IpAddr) -> SourceKey {
    match ip {
        IpAddr::V4(a) => SourceKey::V4(a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => SourceKey::V4(v4.octets()),
            None => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&a.octets()[..8]);
                SourceKey::V6Prefix(p)
            }
        },
    }
}

struct Bucket {
    tokens_ns: u64,
    last: Duration,
}

pub struct RateLimiter {
    buckets: HashMap<SourceKey, Bucket>,
    max_entries: usize,
    last_gc: Duration,
}

impl RateLimiter {
    pub fn new(max_entries: usize) -> Self {
        RateLimiter {
            buckets: HashMap::new(),
            max_entries,
            last_gc: Duration::ZERO,
        }
    }

    /// True if a handshake from `ip` may be processed now.
    pub fn allow(&mut self, ip: IpAddr, now: Duration) -> bool {
        if now.saturating_sub(self.last_gc) >= IDLE_EXPIRY {
            self.buckets
                .retain(|_, b| now.saturating_sub(b.last) < IDLE_EXPIRY);
            self.last_gc = now;
        }
        let key = key_of(ip);
        if let Some(b) = self.buckets.get_mut(&key) {
            let elapsed = now
                .saturating_sub(b.last)
                .as_nanos()
                .min(TOKEN_MAX_NS as u128) as u64;
            b.tokens_ns = (b.tokens_ns + elapsed).min(TOKEN_MAX_NS);
            b.last = now;
            if b.tokens_ns >= PACKET_COST_NS {
                b.tokens_ns -= PACKET_COST_NS;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= self.max_entries {
            return false;
        }
        self.buckets.insert(
            key,
            Bucket {
                tokens_ns: TOKEN_MAX_NS - PACKET_COST_NS,
                last: now,
            },
        );
        true
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_twenty_per_second_per_source() {
        let mut rl = RateLimiter::new(1024);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let t0 = Duration::from_secs(5);
        let allowed = (0..50).filter(|_| rl.allow(a, t0)).count();
        assert_eq!(allowed, PACKETS_BURST as usize);
        // Another source is unaffected by the first one's flood.
        assert!(rl.allow(b, t0));
        // Over one second, about 20 more get through.
        let mut n = 0;
        for ms in 1..=1000 {
            if rl.allow(a, t0 + Duration::from_millis(ms)) {
                n += 1;
            }
        }
        assert!((19..=21).contains(&n), "{n}");
    }

    #[test]
    fn ipv6_limited_per_64_and_table_bounded() {
        let mut rl = RateLimiter::new(3);
        let t = Duration::from_secs(1);
        for i in 0..5u16 {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            let _ = rl.allow(ip, t);
        }
        assert_eq!(rl.len(), 1);
        assert!(!rl.allow("2001:db8::99".parse().unwrap(), t));
        assert!(rl.allow("10.0.0.1".parse().unwrap(), t));
        assert!(rl.allow("10.0.0.2".parse().unwrap(), t));
        assert!(
            !rl.allow("10.0.0.3".parse().unwrap(), t),
            "table full: new sources refused"
        );
        // Idle entries expire, freeing room.
        assert!(rl.allow("10.0.0.3".parse().unwrap(), t + Duration::from_secs(2)));
    }
}
