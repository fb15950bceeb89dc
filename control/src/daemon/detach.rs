//! A planned restart of control: on `SIGUSR2` (what `wirespeed --detach
//! IFACE` sends, and what the service unit's `RestartKillSignal=` sends on
//! `systemctl restart`) control leaves without tearing anything down. The
//! data plane, the interface, the region and the sessions stay, exactly as
//! after a crash of control, but the leaving control first hands its last
//! state to the region, marks it detached (so the data plane waits for a
//! successor even with no live session, see `dataplane::shm::handoff`),
//! removes its UAPI socket and releases the region's lock in order. The next
//! `wirespeed IFACE` re-attaches (see `reattach.rs`).
//!
//! The configuration is not kept: the static private key never leaves
//! control (not in the region, not on disk), so the successor needs it
//! re-applied anyway (`wg setconf`), and with it come the peers; their
//! sessions are adopted from the region as each is named again.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::shm::handoff::DETACH_GRACE;
use dataplane::shm::monotonic_ns;

use super::{now, pidfd, Daemon, LogLevel};
use crate::uapi::server::socket_path;

/// The signal that asks control to detach.
pub const SIGNAL: libc::c_int = libc::SIGUSR2;

/// How long a detaching control keeps trying to hand over commands that
/// found every ring full.
const FLUSH_FOR: Duration = Duration::from_secs(1);

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::Relaxed);
}

pub(super) fn install_handler() {
    // SAFETY: an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(SIGNAL, on_signal as *const () as libc::sighandler_t) };
}

pub(super) fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

impl Daemon {
    /// Whether there is a data plane to hand the interface to; without one,
    /// detaching would leave nothing running and the caller stops instead.
    pub(super) fn can_detach(&self) -> bool {
        self.child.pid().is_some()
    }

    /// Leaves the data plane, interface, region and sessions to the next
    /// control. The UAPI socket must be gone already (no change may come in
    /// after the last state is written).
    pub(super) fn detach(mut self) {
        // What the next control reads back: events the data plane sent us
        // (a session confirmed just now), the peers' figures, and commands
        // still waiting for room in the rings.
        self.drain_events();
        self.poll_activity();
        let until = now() + FLUSH_FOR;
        self.commands.retry(&self.region);
        while self.commands.pending() > 0 && now() < until {
            std::thread::sleep(Duration::from_millis(10));
            self.commands.retry(&self.region);
        }
        if self.commands.pending() > 0 {
            self.log(
                LogLevel::Error,
                format!(
                    "{} command(s) for the data plane found no room and are dropped",
                    self.commands.pending()
                ),
            );
        }
        self.region
            .mark_detached(std::process::id(), monotonic_ns());
        self.log(
            LogLevel::Info,
            format!(
                "detached: data plane pid {} keeps the interface and forwards with the \
                 sessions of {} peer(s); `wirespeed {}` re-attaches (then re-apply the \
                 configuration, e.g. `wg setconf {} FILE`); with no control within {} s \
                 the data plane exits once its sessions expire",
                self.child.pid().unwrap_or(0),
                self.slots.iter().count(),
                self.iface,
                self.iface,
                DETACH_GRACE.as_secs()
            ),
        );
        // Keeps the file for the successor; unmapping and closing it
        // releases the lock. The rest (our TUN queue, the metrics
        // listener, the data plane's handle, never signalled) is dropped.
        let Daemon { region, .. } = self;
        region.leave();
    }
}

/// `wirespeed --detach IFACE`: asks the control process serving `iface`
/// (found through its UAPI socket) to detach and waits up to `timeout` for
/// it to exit. Returns its pid.
pub fn request(iface: &str, timeout: Duration) -> io::Result<u32> {
    let path = socket_path(iface);
    let conn = UnixStream::connect(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let pid = peer_pid(&conn)?;
    drop(conn);
    // The pidfd first: whatever is checked and signalled below is that
    // process, even if it exits and its pid is reused meanwhile.
    let fd = pidfd::open(pid)?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != "wirespeed" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is served by process {pid} ({}), not by wirespeed",
                path.display(),
                comm.trim_end()
            ),
        ));
    }
    pidfd::signal(&fd, SIGNAL)?;
    let end = Instant::now() + timeout;
    while !pidfd::exited(&fd) {
        if Instant::now() >= end {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("control process {pid} still runs after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// The pid of the process that listens on the other end of `conn`.
fn peer_pid(conn: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into the live ucred we
    // pass and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(cred.pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::other("the UAPI socket's owner has no pid here"))
}

/// Whether an interface named `iface` exists in our network namespace.
pub fn interface_exists(iface: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return false;
    };
    // SAFETY: if_nametoindex reads the NUL-terminated name we pass.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_listener_of_a_socket_is_found_by_its_credentials() {
        let dir = std::env::temp_dir().join(format!("wirespeed-detach-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _l = UnixListener::bind(&path).unwrap();
        let c = UnixStream::connect(&path).unwrap();
        assert_eq!(peer_pid(&c).unwrap(), std::process::id());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_socket_no_detach() {
        let e = request("wsd-no-such-if", Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("wsd-no-such-if.sock"), "{e}");
    }

    #[test]
    fn interfaces_that_exist_and_do_not() {
        assert!(interface_exists("lo"));
        assert!(!interface_exists("wsd-no-such-if"));
        assert!(!interface_exists("bad\0name"));
    }

    #[test]
    fn a_detach_request_is_remembered_until_read() {
        install_handler();
        // SAFETY: raise sends the signal to this thread; the handler only
        // stores an atomic.
        assert_eq!(unsafe { libc::raise(SIGNAL) }, 0);
        assert!(requested());
        REQUESTED.store(false, Ordering::Relaxed);
    }
}
