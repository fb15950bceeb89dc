//! The host data plane without WIRESPEED_XDP_IFACES (backend xdp or auto):
//! AF_XDP goes on the uplinks the tenants' peers are reached through, as
//! a data plane of one's own does (`super::super::uplinks`), only for
//! every tenant at once. The supervisor, sandboxed, looks the routes up
//! (netlink); which of their interfaces are uplinks XDP serves (their
//! names and kinds, an ioctl and /sys away) is its XDP attacher's call.
//!
//! Looked at once a second, a tenant's peer table (up to 2^20 slots) is
//! read again only when its control says an endpoint changed
//! ([`EndpointsWatch`]); otherwise its interfaces as last found stand.

use super::tenant::Tenant;
use crate::process::uplinks::{peer_endpoints, EndpointsWatch, UplinkFinder};
use crate::shm::Region;
use std::sync::atomic::Ordering;

/// One tenant's peers' interfaces, as last looked up.
#[derive(Default)]
pub struct Followed {
    watch: EndpointsWatch,
    oifs: Vec<u32>,
}

impl Followed {
    /// The interfaces the routes to the peers of `region` leave through,
    /// with its fwmark: looked up again only if its endpoints may have
    /// changed since.
    pub fn oifs(&mut self, finder: &mut UplinkFinder, region: &Region) -> &[u32] {
        if self.watch.changed(region) {
            let peers = peer_endpoints(region);
            let fwmark = region.header().fwmark.load(Ordering::Relaxed);
            self.oifs = finder.oifs(&peers, fwmark);
        }
        &self.oifs
    }

    /// The routes moved: look again next time.
    pub fn forget(&mut self) {
        self.watch.forget();
    }
}

/// The interfaces (indexes, sorted, no duplicates) the routes to every
/// tenant's peers leave through, each looked up as that tenant would
/// send (its fwmark).
pub fn wanted(finder: &mut UplinkFinder, tenants: &mut [Tenant]) -> Vec<u32> {
    let mut out = Vec::new();
    for t in tenants {
        out.extend_from_slice(t.followed.oifs(finder, &t.shared.region));
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::testutil::temp_region;
    use std::net::SocketAddr;

    fn peer_at(region: &Region, slot: usize, ep: &str) {
        region.peer(slot).activate();
        region
            .peer(slot)
            .set_endpoint(Some(ep.parse::<SocketAddr>().unwrap()), None);
    }

    /// Loopback's index: where the route to 127.0.0.1 leaves.
    fn lo() -> u32 {
        crate::netlink::Netlink::open()
            .and_then(|mut n| n.route_get("127.0.0.1".parse().unwrap(), 0))
            .unwrap()
            .oif
    }

    #[test]
    fn the_peer_table_is_read_again_only_when_control_says_it_changed() {
        let (region, _dir) = temp_region("follow");
        let r = &region;
        let mut finder = UplinkFinder::default();
        let mut f = Followed::default();
        assert_eq!(f.oifs(&mut finder, r), &[] as &[u32]);

        // Written without the bump: not looked at (what a second's scan
        // of a million slots would have found is not wanted).
        peer_at(r, 3, "127.0.0.1:51820");
        assert_eq!(f.oifs(&mut finder, r), &[] as &[u32]);

        // Control's bump after the write: read again.
        r.endpoints_changed();
        assert_eq!(f.oifs(&mut finder, r), &[lo()]);

        // The routes moved: read again without a bump.
        r.peer(3).deactivate();
        assert_eq!(f.oifs(&mut finder, r), &[lo()]);
        f.forget();
        assert_eq!(f.oifs(&mut finder, r), &[] as &[u32]);
    }

    #[test]
    fn a_region_of_a_control_that_never_bumps_is_read_every_time() {
        let (region, _dir) = temp_region("follow-old");
        let r = &region;
        r.header().endpoints_gen.store(0, Ordering::Relaxed);
        let mut finder = UplinkFinder::default();
        let mut f = Followed::default();
        assert_eq!(f.oifs(&mut finder, r), &[] as &[u32]);
        peer_at(r, 0, "127.0.0.1:51820");
        assert_eq!(f.oifs(&mut finder, r), &[lo()]);
    }
}
