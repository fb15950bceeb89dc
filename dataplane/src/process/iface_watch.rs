//! The data plane's view of its TUN interface: deleted, or alive with an
//! MTU it can read, or moved into another network namespace (a container's)
//! where it keeps serving it but cannot read its MTU without entering that
//! namespace, which it has no right to do; control, which can, publishes
//! the MTU then. Asked of a queue fd, never of the name: after a move the
//! name is gone from here, or is another interface's.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::tun;
use crate::tunns::{self, DeviceState};

pub struct IfaceWatch {
    /// A copy of one worker's queue fd.
    queue: OwnedFd,
    /// Our namespace, where the uplinks are.
    here: u64,
    /// The interface's index here when we started: what tells "here" from
    /// "elsewhere" once TUNGETDEVNETNS is refused (it needs CAP_NET_ADMIN,
    /// which the sandboxed data plane no longer has).
    ifindex: Option<u32>,
}

/// What one look found.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Deleted,
    /// Alive here, with this MTU.
    Mtu(u32),
    /// Alive in another namespace (or not readable now).
    Elsewhere,
}

impl IfaceWatch {
    pub fn new(queue: BorrowedFd<'_>) -> io::Result<IfaceWatch> {
        let ifindex = tunns::interface_name(queue)
            .ok()
            .and_then(|n| tun::ifindex(&n));
        Ok(IfaceWatch {
            queue: queue.try_clone_to_owned()?,
            here: tunns::own_netns_id()?,
            ifindex,
        })
    }

    /// Called from the namespace `new` was.
    pub fn check(&self) -> Seen {
        use std::os::fd::AsFd;
        match tunns::device_state(self.queue.as_fd()) {
            Ok(DeviceState::Deleted) => Seen::Deleted,
            Ok(DeviceState::Alive { name, netns }) if netns == self.here => {
                tun::mtu(&name).map_or(Seen::Elsewhere, Seen::Mtu)
            }
            Ok(DeviceState::Alive { .. }) => Seen::Elsewhere,
            // Sandboxed: the name still answers (or EBADFD: deleted), and
            // the name here with the index it had is the same device.
            Err(_) => match tunns::interface_name(self.queue.as_fd()) {
                Err(e) if e.raw_os_error() == Some(libc::EBADFD) => Seen::Deleted,
                Ok(name) if self.ifindex.is_some() && tun::ifindex(&name) == self.ifindex => {
                    tun::mtu(&name).map_or(Seen::Elsewhere, Seen::Mtu)
                }
                _ => Seen::Elsewhere,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tun::testns::NetNs;
    use crate::tun::Tun;
    use std::os::fd::AsFd;

    #[test]
    fn a_move_is_not_a_deletion() {
        let (Some(home), Some(away)) = (NetNs::new("iw-home"), NetNs::new("iw-away")) else {
            return;
        };
        // The data plane never leaves its namespace: every look is made
        // from `home`.
        let (q, watch) = home.run(|| {
            let (tun, q) = Tun::create("wsw0").unwrap();
            tun.set_mtu(1400).unwrap();
            let w = IfaceWatch::new(q.as_fd()).unwrap();
            (q, w)
        });
        assert_eq!(home.run(|| watch.check()), Seen::Mtu(1400));
        home.ip(&["link", "set", "wsw0", "netns", away.name()]);
        assert_eq!(home.run(|| watch.check()), Seen::Elsewhere);
        // Another interface taking the name here is not ours.
        home.ip(&[
            "link", "add", "wsw0", "type", "veth", "peer", "name", "wsw0p",
        ]);
        assert_eq!(home.run(|| watch.check()), Seen::Elsewhere);
        away.ip(&["link", "del", "wsw0"]);
        assert_eq!(home.run(|| watch.check()), Seen::Deleted);
        drop(q);
    }
}
