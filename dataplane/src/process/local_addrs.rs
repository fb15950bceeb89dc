//! This host's own addresses, as the XDP program needs them: only transport
//! messages addressed to one of them are ours to steer; the rest is traffic
//! the host forwards for others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every address of every interface in this network namespace (getifaddrs:
/// one netlink dump), sorted and without duplicates. Empty when the kernel
/// cannot be asked, which steers nothing: the UDP sockets then carry
/// everything, slower but correct.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its size.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(
                    sin.sin_addr.s_addr.to_ne_bytes(),
                )));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees exactly the list getifaddrs gave us, once.
    unsafe { libc::freeifaddrs(list) };
    out.sort_unstable();
    out.dedup();
    out
}

/// A digest of [`local_addresses`]: cheap to compare, and it changes
/// whenever an address comes or goes.
pub fn digest(addrs: &[IpAddr]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addrs.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_the_list_is_canonical() {
        let addrs = local_addresses();
        // Every namespace has lo; a test host has it up with 127.0.0.1.
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        let mut sorted = addrs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, addrs);
        assert_eq!(digest(&addrs), digest(&sorted));
        assert_ne!(digest(&addrs), digest(&addrs[1..]));
    }
}
