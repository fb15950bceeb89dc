//! Where a TUN device lives, asked of one of its queue fds rather than of
//! its name: the talk's container trick moves the interface into another
//! network namespace (`ip link set wg0 netns X`) while the process that
//! made it, its underlay sockets and its XDP program stay where they were.
//!
//! Measured on kernel 6.18 (the tests below pin it): after a move the
//! queue fds, attached or detached, keep working; `TUNGETIFF` still names
//! the device and `TUNGETDEVNETNS` hands out its new namespace; the device
//! is down, so reads give EAGAIN and writes EIO until someone brings it up
//! there. The old namespace sees RTM_DELLINK and loses the name, which is
//! why a name lookup cannot tell a move from a deletion. Only deletion
//! makes `TUNGETIFF` fail, with EBADFD (and reads, and POLLERR).
//!
//! A new queue must come from a `/dev/net/tun` opened *inside* the
//! device's namespace: `TUNSETIFF` looks the name up in the namespace the
//! fd was opened in, and there it would create a fresh interface of that
//! name instead. [`open_sibling`] does that on a short-lived thread that
//! enters the namespace, which takes CAP_SYS_ADMIN (control has it; the
//! data plane is handed its queues instead).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::tun::{self, TunQueue};

/// What a queue fd says about its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    /// The device was deleted (`ip link del`, in whatever namespace it was).
    Deleted,
    /// The device exists under `name` in the namespace with inode `netns`.
    Alive { name: String, netns: u64 },
}

/// The state of the device behind `queue`; errors other than the EBADFD
/// that means "deleted" (EPERM without CAP_NET_ADMIN, say) are returned.
pub fn device_state(queue: BorrowedFd<'_>) -> io::Result<DeviceState> {
    let name = match interface_name(queue) {
        Err(e) if e.raw_os_error() == Some(libc::EBADFD) => return Ok(DeviceState::Deleted),
        r => r?,
    };
    let netns = match device_netns(queue) {
        Err(e) if e.raw_os_error() == Some(libc::EBADFD) => return Ok(DeviceState::Deleted),
        r => netns_id(r?.as_fd())?,
    };
    Ok(DeviceState::Alive { name, netns })
}

/// The device's name in its namespace (`TUNGETIFF`); EBADFD once deleted.
pub fn interface_name(queue: BorrowedFd<'_>) -> io::Result<String> {
    // SAFETY: ifreq is a C struct of integers, byte arrays and a union of
    // such; all-zero bytes is a valid (empty) value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF fills one ifreq, which `ifr` is, exclusively borrowed.
    let rc = unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNGETIFF, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A descriptor of the network namespace the device behind `queue` lives
/// in now (`TUNGETDEVNETNS`, CAP_NET_ADMIN there).
pub fn device_netns(queue: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: TUNGETDEVNETNS takes no argument and returns a new descriptor
    // or -1.
    let fd = unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNGETDEVNETNS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The identity of a namespace descriptor: its inode, which is what
/// `/proc/PID/ns/net` links name and `ip netns identify` compares.
pub fn netns_id(ns: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(File::from(ns.try_clone_to_owned()?).metadata()?.ino())
}

/// The calling thread's network namespace, as [`netns_id`] names it.
pub fn own_netns_id() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Runs `f` on a fresh thread inside network namespace `ns`: sockets, TUN
/// fds and ioctls it makes belong there, and keep that namespace after the
/// thread ends. Entering a namespace takes CAP_SYS_ADMIN.
pub fn in_netns<T: Send>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let raw = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `raw` is an open namespace descriptor borrowed for the
            // scope; setns only changes this (throwaway) thread's namespace.
            if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot enter the interface's network namespace: {e}"),
                ));
            }
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Attaches one more queue to the device behind `queue`, wherever it lives
/// now. NotFound once the device is deleted.
pub fn open_sibling(queue: &TunQueue) -> io::Result<TunQueue> {
    match device_state(queue.as_fd())? {
        DeviceState::Deleted => Err(gone()),
        DeviceState::Alive { name, netns } if netns == own_netns_id()? => tun::open_queue(&name),
        DeviceState::Alive { name, .. } => {
            let ns = device_netns(queue.as_fd())?;
            in_netns(ns.as_fd(), || tun::open_queue(&name))
        }
    }
}

/// The device's MTU, read in the namespace it lives in.
pub fn mtu(queue: &TunQueue) -> io::Result<u32> {
    match device_state(queue.as_fd())? {
        DeviceState::Deleted => Err(gone()),
        DeviceState::Alive { name, netns } if netns == own_netns_id()? => tun::mtu(&name),
        DeviceState::Alive { name, .. } => {
            let ns = device_netns(queue.as_fd())?;
            in_netns(ns.as_fd(), || tun::mtu(&name))
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "the TUN interface was deleted")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tun::testns::NetNs;
    use crate::tun::Tun;

    fn ns_id(ns: &NetNs) -> u64 {
        ns.run(|| own_netns_id().unwrap())
    }

    /// Kernel behaviour this module rests on, and what it makes of it: a
    /// move is not a deletion, queues follow the device, and deletion in
    /// the namespace it was moved to is seen from the one it came from.
    #[test]
    fn a_moved_device_is_followed_and_its_deletion_seen() {
        let (Some(home), Some(away)) = (NetNs::new("mv-home"), NetNs::new("mv-away")) else {
            return;
        };
        let (q, detached) = home.run(|| {
            let (tun, q) = Tun::create("wsm0").unwrap();
            let detached = tun.open_queue().unwrap();
            detached.detach().unwrap();
            (q, detached)
        });
        let alive = |ns: &NetNs| DeviceState::Alive {
            name: "wsm0".into(),
            netns: ns_id(ns),
        };
        assert_eq!(device_state(q.as_fd()).unwrap(), alive(&home));

        home.ip(&["link", "set", "wsm0", "netns", away.name()]);
        // The old namespace lost the name, the fds did not lose the device.
        assert_eq!(home.run(|| tun::ifindex("wsm0")), None);
        assert_eq!(device_state(q.as_fd()).unwrap(), alive(&away));
        assert_eq!(device_state(detached.as_fd()).unwrap(), alive(&away));
        // Down after the move: nothing to read, writes refused.
        let mut buf = [0u8; 2048];
        assert_eq!(
            q.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        // A queue opened from here, for the device over there, by the fd.
        let q2 = home.run(|| open_sibling(&detached)).unwrap();
        assert_eq!(device_state(q2.as_fd()).unwrap(), alive(&away));
        assert_eq!(
            home.run(|| tun::ifindex("wsm0")),
            None,
            "nothing created here"
        );
        away.ip(&["link", "set", "wsm0", "mtu", "1280"]);
        assert_eq!(home.run(|| mtu(&detached)).unwrap(), 1280);

        // Back and away again: still the same device.
        away.ip(&["link", "set", "wsm0", "netns", home.name()]);
        assert_eq!(device_state(q2.as_fd()).unwrap(), alive(&home));
        assert_eq!(home.run(|| mtu(&detached)).unwrap(), 1280);
        home.ip(&["link", "set", "wsm0", "netns", away.name()]);

        away.ip(&["link", "del", "wsm0"]);
        for fd in [q.as_fd(), q2.as_fd(), detached.as_fd()] {
            assert_eq!(device_state(fd).unwrap(), DeviceState::Deleted);
        }
        assert_eq!(
            open_sibling(&detached).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn entering_a_namespace_that_is_not_one_fails_cleanly() {
        let f = File::open("/dev/null").unwrap();
        let e = in_netns(f.as_fd(), || Ok(())).unwrap_err();
        assert!(e.to_string().contains("network namespace"), "{e}");
    }
}
