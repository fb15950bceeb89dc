//! Process file descriptors: how a restarted control process watches,
//! signals and borrows descriptors from a data plane it did not start (its
//! predecessor's child, which is not ours to wait for), without being
//! fooled by a pid that was reused.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A descriptor that refers to process `pid` for as long as it is held.
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    fd_result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })
}

/// A copy (close-on-exec) of descriptor `fd` of the process behind `pidfd`.
/// Needs ptrace rights over it (root does).
pub fn get_fd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two descriptor numbers and flags and returns
    // a new descriptor or -1; no memory is passed.
    fd_result(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

/// Sends `sig` to the process behind `pidfd` (never to a successor that got
/// its pid).
pub fn signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a null siginfo sends a plain signal; no
    // other memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            core::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process behind `pidfd` has exited (a pidfd turns readable then).
pub fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes exactly the one pollfd we pass.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// Lets `fd` be inherited by the processes we start (an eventfd a new data
/// plane wakes us with).
pub fn keep_on_exec(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor we own; no memory is passed.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn watches_and_signals_a_process_that_is_not_reaped_by_us() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = open(child.id()).unwrap();
        assert!(!exited(&pidfd));
        signal(&pidfd, libc::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !exited(&pidfd) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(exited(&pidfd), "readable once the process is dead");
        child.wait().unwrap();
    }

    #[test]
    fn borrows_a_descriptor_of_another_process() {
        // Our own process stands in for the data plane.
        let pidfd = open(std::process::id()).unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let copy = get_fd(&pidfd, f.as_raw_fd());
        // Without ptrace rights (not root, or Yama) the kernel refuses.
        if let Ok(copy) = copy {
            let a = std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
            let b = std::fs::metadata(format!("/proc/self/fd/{}", copy.as_raw_fd())).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
            keep_on_exec(&copy).unwrap();
        }
    }
}
