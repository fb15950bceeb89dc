//! The interface as control follows it: by its detached queue fd, never by
//! name, so that moving it into another network namespace (a container's,
//! the talk's "Containers" slide) is told apart from deleting it. The
//! underlay (UDP sockets, XDP program, AF_XDP queues, this process) stays in
//! the namespace where the interface was created; only the interface moves,
//! as many times and in whichever direction the operator likes. Control
//! ends only when the interface is deleted, wherever it then lives.

use std::io;
use std::os::fd::AsFd;

use dataplane::tun::TunQueue;
use dataplane::tunns::{self, DeviceState};

/// What a look at the interface found that is worth acting on.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    Deleted,
    /// Moved (or renamed) since the last look; `home`: back in our namespace.
    Moved {
        name: String,
        netns: u64,
        home: bool,
    },
}

pub(super) struct Interface {
    /// Detached: keeps the interface alive and takes none of its packets.
    queue: TunQueue,
    home: u64,
    last: Option<(String, u64)>,
}

impl Interface {
    pub fn new(queue: TunQueue) -> io::Result<Interface> {
        let home = tunns::own_netns_id()?;
        let mut i = Interface {
            queue,
            home,
            last: None,
        };
        if let Ok(DeviceState::Alive { name, netns }) = tunns::device_state(i.queue.as_fd()) {
            i.last = Some((name, netns));
        }
        Ok(i)
    }

    pub fn queue(&self) -> &TunQueue {
        &self.queue
    }

    /// Whether the interface is in another namespace than ours.
    pub fn away(&self) -> bool {
        self.last.as_ref().is_some_and(|(_, ns)| *ns != self.home)
    }

    /// Looks at the interface; a failed look (no right to ask) changes
    /// nothing.
    pub fn check(&mut self) -> Option<Change> {
        match tunns::device_state(self.queue.as_fd()) {
            Ok(DeviceState::Deleted) => Some(Change::Deleted),
            Ok(DeviceState::Alive { name, netns }) => {
                let now = Some((name.clone(), netns));
                if self.last == now {
                    return None;
                }
                self.last = now;
                Some(Change::Moved {
                    name,
                    netns,
                    home: netns == self.home,
                })
            }
            Err(_) => None,
        }
    }

    /// The MTU in whatever namespace the interface lives.
    pub fn mtu(&self) -> io::Result<u32> {
        tunns::mtu(&self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A namespace of our own for the duration of a test.
    struct Ns(String);

    impl Ns {
        fn new(tag: &str) -> Option<Ns> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipping: needs root");
                return None;
            }
            let name = format!("wsi-{}-{tag}", std::process::id());
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Ns(name))
        }

        fn ip(&self, args: &[&str]) {
            let st = Command::new("ip")
                .arg("-n")
                .arg(&self.0)
                .args(args)
                .status()
                .unwrap();
            assert!(st.success(), "ip -n {} {args:?}", self.0);
        }

        fn fd(&self) -> std::fs::File {
            std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap()
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn moves_either_way_are_reported_and_only_deletion_ends_it() {
        let (Some(home), Some(away)) = (Ns::new("home"), Ns::new("away")) else {
            return;
        };
        let (home_fd, away_fd) = (home.fd(), away.fd());
        let home_id = tunns::netns_id(home_fd.as_fd()).unwrap();
        let away_id = tunns::netns_id(away_fd.as_fd()).unwrap();
        // Control's namespace is where it created the interface.
        let mut i = tunns::in_netns(home_fd.as_fd(), || {
            let (_tun, q) = dataplane::tun::Tun::create("wsc0")?;
            q.detach()?;
            Interface::new(q)
        })
        .unwrap();
        assert_eq!(i.check(), None);
        assert!(!i.away());

        home.ip(&["link", "set", "wsc0", "netns", &away.0]);
        away.ip(&["link", "set", "wsc0", "mtu", "1300"]);
        let moved = |netns, home| Change::Moved {
            name: "wsc0".into(),
            netns,
            home,
        };
        assert_eq!(i.check(), Some(moved(away_id, false)));
        assert!(i.away());
        assert_eq!(i.check(), None);
        assert_eq!(i.mtu().unwrap(), 1300);

        away.ip(&["link", "set", "wsc0", "netns", &home.0]);
        assert_eq!(i.check(), Some(moved(home_id, true)));
        home.ip(&["link", "set", "wsc0", "netns", &away.0]);
        assert_eq!(i.check(), Some(moved(away_id, false)));

        away.ip(&["link", "del", "wsc0"]);
        assert_eq!(i.check(), Some(Change::Deleted));
    }
}
