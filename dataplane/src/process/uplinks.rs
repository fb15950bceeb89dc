//! Which uplinks get the XDP program: the interfaces the tunnel's traffic
//! actually uses, not every interface that is up. An interface the tunnel
//! never uses (a container's veth, a management NIC, another tenant's
//! uplink) is left as it was, whatever XDP program it has or might get.
//!
//! * `WIRESPEED_XDP_IFACES=eth0,eth1` names them outright.
//! * Otherwise, for every peer with an endpoint, the interface the kernel's
//!   route to that endpoint leaves through (RTM_GETROUTE, with the
//!   interface's fwmark, as the kernel would send).
//! * A peer without an endpoint (a roaming client the server waits for)
//!   adds nothing until it has one: its handshake always reaches the UDP
//!   socket (the XDP program passes handshakes), control learns its
//!   endpoint from it, and the next look at the peer table finds the route.
//!   Until then its transport messages take the UDP sockets. Guessing
//!   instead (the default route's interface, or every interface that is
//!   up) would put the program on interfaces the tunnel may never use,
//!   which is what this module exists to avoid.
//!
//! Following the peers, the XDP attacher (`super::attacher`) makes these
//! look-ups as peers come, not the sandboxed data plane.
//!
//! The set only grows while the data plane runs (an uplink once attached
//! keeps its program until exit): a peer that roams away leaves its old
//! uplink steering at no cost to anyone else, since the program passes
//! everything not addressed to this host and the tunnel's port.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::netlink::Netlink;
use crate::shm::Region;

/// The operator's list, when `WIRESPEED_XDP_IFACES` is set (empty entries
/// ignored; an empty list means no uplink at all).
pub fn override_from_env() -> Option<Vec<String>> {
    std::env::var("WIRESPEED_XDP_IFACES")
        .ok()
        .map(|list| parse_list(&list))
}

fn parse_list(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    v.dedup();
    v
}

/// What the peer table says about where the tunnel's traffic goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerEndpoints {
    /// Endpoint addresses of the peers that have one, without duplicates.
    pub endpoints: Vec<IpAddr>,
    /// Changes when any peer comes, goes or moves.
    pub digest: u64,
}

/// Whether a region's peer endpoints may have changed since the last look,
/// from the header's `endpoints_gen` (control bumps it at every change):
/// the peer table, up to 2^20 slots, is read again only then. A region of
/// a control that does not bump it (0) may always have changed.
#[derive(Default)]
pub struct EndpointsWatch {
    seen: Option<u64>,
}

impl EndpointsWatch {
    /// True the first time, and whenever the region's endpoints may have
    /// changed since the last call that returned true. Read before the
    /// endpoints are: a change after it makes the next call true again.
    pub fn changed(&mut self, region: &Region) -> bool {
        let gen = region.header().endpoints_gen.load(Ordering::Acquire);
        if gen != 0 && self.seen == Some(gen) {
            return false;
        }
        self.seen = Some(gen);
        true
    }

    /// Makes the next [`EndpointsWatch::changed`] true (the routes moved).
    pub fn forget(&mut self) {
        self.seen = None;
    }
}

/// Reads the peer table (one pass over the slots: atomic loads only).
pub fn peer_endpoints(region: &Region) -> PeerEndpoints {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut out = PeerEndpoints::default();
    for i in 0..region.peer_slots() {
        let slot = region.peer(i);
        if !slot.is_active() {
            continue;
        }
        (i, slot.endpoint_seq()).hash(&mut h);
        if let Some((ep, _)) = slot.endpoint() {
            out.endpoints.push(ep.ip().to_canonical());
        }
    }
    out.endpoints.sort_unstable();
    out.endpoints.dedup();
    out.digest = h.finish();
    out
}

/// Looks up the uplinks for a set of endpoints, remembering each endpoint's
/// output interface until [`UplinkFinder::forget`] (the host's addresses or
/// routes changed), so a peer that roams costs one route lookup, not one per
/// peer.
#[derive(Default)]
pub struct UplinkFinder {
    oif_of: HashMap<IpAddr, Option<u32>>,
}

impl UplinkFinder {
    pub fn forget(&mut self) {
        self.oif_of.clear();
    }

    /// The uplinks (sorted names) that carry traffic to `peers`, except
    /// `own_iface` (the tunnel itself) and interfaces XDP cannot serve.
    pub fn uplinks(&mut self, own_iface: &str, peers: &PeerEndpoints, fwmark: u32) -> Vec<String> {
        let mut names: Vec<String> = (self.oifs(peers, fwmark).into_iter())
            .filter_map(|i| uplink_name(i, own_iface))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The interfaces (indexes) the routes to `peers` leave through, with
    /// `fwmark`: netlink only, which a sandboxed data plane may ask (the
    /// host data plane's attacher makes uplinks of them, [`uplink_name`]).
    pub fn oifs(&mut self, peers: &PeerEndpoints, fwmark: u32) -> Vec<u32> {
        let mut oifs = Vec::new();
        let mut nl = None;
        for &ep in &peers.endpoints {
            let oif = match self.oif_of.get(&ep) {
                Some(oif) => *oif,
                None => {
                    let oif = netlink(&mut nl)
                        .and_then(|n| n.route_get(ep, fwmark))
                        .ok()
                        .map(|r| r.oif);
                    self.oif_of.insert(ep, oif);
                    oif
                }
            };
            oifs.extend(oif);
        }
        oifs
    }
}

/// The name of interface `ifindex` if the XDP program can serve it and it
/// is not `own_iface` (an ioctl and /sys: not for a sandboxed process).
pub fn uplink_name(ifindex: u32, own_iface: &str) -> Option<String> {
    name_of(ifindex).filter(|n| eligible(n, own_iface))
}

fn netlink(nl: &mut Option<Netlink>) -> io::Result<&mut Netlink> {
    if nl.is_none() {
        *nl = Some(Netlink::open()?);
    }
    Ok(nl.as_mut().expect("just set"))
}

fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    name.to_str().ok().map(str::to_owned)
}

fn sys(iface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// An interface the XDP program can serve: Ethernet (ARPHRD_ETHER), not a
/// bridge (its ports see the frames first), not loopback or our own TUN (a
/// route into the tunnel is a routing loop the UDP path reports).
fn eligible(iface: &str, own_iface: &str) -> bool {
    iface != own_iface
        && iface != "lo"
        && sys(iface, "type").as_deref() == Some("1")
        && !std::path::Path::new(&format!("/sys/class/net/{iface}/bridge")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_list() {
        assert_eq!(parse_list("eth0, eth1,,eth1"), ["eth0", "eth1"]);
        assert!(parse_list(" , ").is_empty());
    }

    #[test]
    fn the_tunnel_and_loopback_are_never_uplinks() {
        assert!(!eligible("lo", "wg0"));
        assert!(!eligible("wg0", "wg0"));
        assert!(!eligible("no-such-if0", "wg0"));
    }

    #[test]
    fn no_peers_no_uplinks() {
        let mut f = UplinkFinder::default();
        assert!(f.uplinks("wg0", &PeerEndpoints::default(), 0).is_empty());
        // Loopback routes through lo, which XDP does not serve.
        let peers = PeerEndpoints {
            endpoints: vec!["127.0.0.1".parse().unwrap()],
            digest: 1,
        };
        assert!(f.uplinks("wg0", &peers, 0).is_empty());
    }
}
