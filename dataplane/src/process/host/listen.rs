//! The host data plane's attach socket: a `SOCK_SEQPACKET` Unix socket in
//! a root-only directory (0700), itself 0600, that answers only root
//! (SO_PEERCRED). Only controls in its network namespace may attach (the
//! UDP sockets the data plane binds for a tenant live there, so a control
//! elsewhere would get sockets it cannot be reached on): the control side
//! checks that, in [`connect`], because the sandboxed data plane cannot
//! look at another process's namespaces (`/proc/PID/ns` needs ptrace
//! access, which fewer capabilities than control's rule out).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the host data plane of the host's own network namespace listens,
/// unless WIRESPEED_DATAPLANE_SOCKET names another place.
pub const DEFAULT_SOCKET: &str = "/run/wirespeed/dataplane.sock";

/// Where the host data plane of our network namespace listens.
pub fn socket_path() -> PathBuf {
    match std::env::var_os("WIRESPEED_DATAPLANE_SOCKET") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let own = crate::tunns::own_netns_id().ok();
            let init = crate::shm::netns_inode(Path::new("/proc/1/ns/net")).ok();
            default_socket(own, init)
        }
    }
}

/// The path is shared by every network namespace but a host data plane
/// answers only its own (the UDP sockets it binds live there): one name for
/// all would leave the controls of every other namespace refused, and the
/// first to start one would take it from the rest. The namespace of pid 1
/// keeps the documented name; the others get one carrying their namespace's
/// inode, like the regions (`NETNS-IFACE.region`), and so does ours when
/// pid 1's cannot be told (a container that hides it): a name of its own is
/// only unexpected, a shared one is refused.
fn default_socket(own: Option<u64>, init: Option<u64>) -> PathBuf {
    match (own, init) {
        (Some(own), Some(init)) if own == init => PathBuf::from(DEFAULT_SOCKET),
        (Some(own), _) => PathBuf::from(format!("/run/wirespeed/{own}-dataplane.sock")),
        (None, _) => PathBuf::from(DEFAULT_SOCKET),
    }
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_os_str().as_bytes();
    if b.len() >= a.sun_path.len() || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not usable as a socket path", path.display()),
        ));
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + b.len() + 1;
    Ok((a, len as libc::socklen_t))
}

/// Connects to the host data plane at `path`: Err if none answers, or if
/// the one that does is in another network namespace.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let s = connect_any(path)?;
    // The peer's credentials are the listener's, from when it listened.
    let host = peer_cred(s.as_fd())?.pid;
    let theirs = crate::shm::netns_inode(Path::new(&format!("/proc/{host}/ns/net")));
    let ours = crate::shm::netns_inode(Path::new("/proc/self/ns/net"));
    // Unknown (a /proc without it, a control without CAP_SYS_PTRACE): the
    // data plane is trusted to be ours, as it was before it checked.
    if let (Ok(t), Ok(o)) = (theirs, ours) {
        if t != o {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the host data plane on {} (process {host}) is in another network \
                     namespace, where the UDP sockets it binds would not reach us",
                    path.display()
                ),
            ));
        }
    }
    Ok(s)
}

/// Connects to whatever answers at `path`.
fn connect_any(path: &Path) -> io::Result<OwnedFd> {
    let s = seqpacket()?;
    let (a, len) = sockaddr(path)?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes for the call.
    let rc = unsafe { libc::connect(s.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // A host data plane that stops answering must not hang control.
    let tv = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads one timeval from the live value we pass.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

pub struct Listener {
    sock: OwnedFd,
    path: PathBuf,
    /// The socket's directory, opened at bind: the sandboxed data plane
    /// removes its socket file there (`unlinkat`), as it can open no path.
    dir: Option<OwnedFd>,
}

impl Listener {
    /// Binds at `path`, creating its directory 0700 if missing (and
    /// refusing one that others can enter). A socket file nobody answers
    /// on is a dead host data plane's and is replaced; one that answers is
    /// a live one's: refused.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        if let Err(e) = std::fs::create_dir(dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
            }
        } else {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let md = std::fs::symlink_metadata(dir)?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if !md.is_dir() || md.uid() != euid || md.mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}: must be a directory of ours that only we can enter (0700)",
                    dir.display()
                ),
            ));
        }
        if connect_any(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("a host data plane already answers on {}", path.display()),
            ));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() || !is_socket(&m) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists and is not a socket", path.display()),
                ))
            }
            Ok(_) => std::fs::remove_file(path)?,
            Err(_) => {}
        }
        let sock = seqpacket()?;
        let (a, len) = sockaddr(path)?;
        // Created 0600 (no window where others could connect).
        // SAFETY: umask only swaps the process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        // SAFETY: `a` is a valid sockaddr_un of `len` bytes for the call.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &a as *const _ as *const libc::sockaddr,
                len,
            )
        };
        let err = io::Error::last_os_error();
        // SAFETY: restores the mask we read.
        unsafe { libc::umask(old) };
        if rc != 0 {
            return Err(err);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: plain calls on a socket we own; results checked.
        unsafe {
            if libc::listen(sock.as_raw_fd(), 64) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fl = libc::fcntl(sock.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(sock.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(Listener {
            sock,
            path: path.to_path_buf(),
            dir: open_dir(dir),
        })
    }

    /// A connection waiting, if any, from root (others
    /// are closed at once, and said so).
    pub fn accept(&self) -> Option<OwnedFd> {
        loop {
            // SAFETY: accept4 with null address pointers; result checked.
            let fd = unsafe {
                libc::accept4(
                    self.sock.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    // A client that reads nothing cannot stall the
                    // supervisor's replies.
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if fd < 0 {
                return None;
            }
            // SAFETY: a fresh descriptor that nothing else owns.
            let c = unsafe { OwnedFd::from_raw_fd(fd) };
            match self.admit(std::os::fd::AsFd::as_fd(&c)) {
                Ok(()) => return Some(c),
                Err(e) => log::error!("attach socket: refused a connection: {e}"),
            }
        }
    }

    fn admit(&self, c: BorrowedFd<'_>) -> io::Result<()> {
        let cred = peer_cred(c)?;
        if cred.uid != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("uid {} is not root", cred.uid),
            ));
        }
        Ok(())
    }
}

impl Listener {
    /// The directory the socket file is removed from, for the sandbox.
    pub fn dir_fd(&self) -> Option<i32> {
        self.dir.as_ref().map(|d| d.as_raw_fd())
    }
}

/// `dir`, opened for `*at` calls (never through a symlink).
pub fn open_dir(dir: &Path) -> Option<OwnedFd> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: open with a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    // SAFETY: a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Drop for Listener {
    fn drop(&mut self) {
        let name = self.path.file_name().map(|n| n.as_bytes());
        let name = name.and_then(|n| std::ffi::CString::new(n).ok());
        match (&self.dir, name) {
            (Some(d), Some(n)) => {
                // SAFETY: unlinkat with our directory and a NUL-terminated
                // name; failing leaves a file the next bind replaces.
                unsafe { libc::unlinkat(d.as_raw_fd(), n.as_ptr(), 0) };
            }
            _ => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn is_socket(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_socket()
}

pub fn peer_cred(c: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    // SAFETY: ucred is plain data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_network_namespace_but_the_hosts_has_a_socket_of_its_own() {
        assert_eq!(default_socket(Some(7), Some(7)), Path::new(DEFAULT_SOCKET));
        let a = default_socket(Some(8), Some(7));
        let b = default_socket(Some(9), Some(7));
        assert_ne!(a, Path::new(DEFAULT_SOCKET));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Path::new(DEFAULT_SOCKET).parent());
        // pid 1's namespace unknown: ours cannot be told from another's.
        assert_eq!(default_socket(Some(8), None), a);
        assert_ne!(default_socket(Some(9), None), a);
    }

    #[test]
    fn the_socket_and_its_directory_are_private_and_one_host_answers() {
        let base = std::env::temp_dir().join(format!("wirespeed-host-{}", std::process::id()));
        let path = base.join("dataplane.sock");
        let l = Listener::bind(&path).unwrap();
        let dmode = std::fs::metadata(&base).unwrap().mode() & 0o777;
        let smode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o777;
        assert_eq!((dmode, smode), (0o700, 0o600));
        assert_eq!(
            Listener::bind(&path).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        let c = connect(&path).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mut got = None;
        for _ in 0..100 {
            got = l.accept();
            if got.is_some() || !root {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Only root is answered.
        assert_eq!(got.is_some(), root);
        drop(c);
        drop(l);
        // A dead data plane's socket file is replaced.
        let s = seqpacket().unwrap();
        let (a, len) = sockaddr(&path).unwrap();
        // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
        unsafe { libc::bind(s.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) };
        drop(s);
        assert!(Listener::bind(&path).is_ok());
        let _ = std::fs::remove_dir_all(&base);
    }
}
