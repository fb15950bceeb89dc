//! The host data plane without WIRESPEED_XDP_IFACES (backend xdp or auto):
//! AF_XDP goes on the uplinks the tenants' peers are reached through, as
//! a data plane of one's own does (`super::super::uplinks`), only for
//! every tenant at once. The supervisor, sandboxed, looks the routes up
//! (netlink); which of their interfaces are uplinks XDP serves (their
//! names and kinds, an ioctl and /sys away) is its XDP attacher's call.

use super::tenant::Tenant;
use crate::process::uplinks::{peer_endpoints, UplinkFinder};
use std::sync::atomic::Ordering;

/// The interfaces (indexes, sorted, no duplicates) the routes to every
/// tenant's peers leave through, each looked up as that tenant would
/// send (its fwmark).
pub fn wanted(finder: &mut UplinkFinder, tenants: &[Tenant]) -> Vec<u32> {
    let mut out = Vec::new();
    for t in tenants {
        let region = &t.shared.region;
        let peers = peer_endpoints(region);
        let fwmark = region.header().fwmark.load(Ordering::Relaxed);
        out.extend(finder.oifs(&peers, fwmark));
    }
    out.sort_unstable();
    out.dedup();
    out
}
