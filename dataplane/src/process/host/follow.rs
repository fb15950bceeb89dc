//! The host data plane without WIRESPEED_XDP_IFACES (backend xdp or auto):
//! AF_XDP goes on the uplinks the tenants' peers are reached through, as a
//! data plane of one's own does (`super::super::uplinks`), only for every
//! tenant at once.

use super::tenant::Tenant;
use crate::process::uplinks::{peer_endpoints, UplinkFinder};
use std::sync::atomic::Ordering;

/// The uplinks (sorted, no duplicates) to every tenant's peers, each
/// looked up as that tenant would send (its fwmark), never a tenant's own
/// interface.
pub fn wanted(finder: &mut UplinkFinder, tenants: &[Tenant]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tenants {
        let region = &t.shared.region;
        let peers = peer_endpoints(region);
        let fwmark = region.header().fwmark.load(Ordering::Relaxed);
        out.extend(finder.uplinks(&t.iface, &peers, fwmark));
    }
    out.retain(|u| !tenants.iter().any(|t| &t.iface == u));
    out.sort();
    out.dedup();
    out
}
