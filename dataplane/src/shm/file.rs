//! Where the region's file lives and how it is claimed. The region holds
//! every live session key, so its file sits in a root-only directory, is
//! created exclusively (never through a symlink or over someone else's
//! file) with mode 0600, and its creator holds an exclusive `flock` on it
//! for its whole life: a locked file is a live instance, an unlocked one
//! is the leftover of a dead one.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Root-only home of every region on the host (tmpfs: the memory is RAM).
pub const REGION_DIR: &str = "/run/wirespeed";

/// Where the region of interface `iface` in the caller's network namespace
/// lives. The namespace is part of the name because interface names are
/// per namespace: two instances of `wg0` in two namespaces are unrelated.
pub fn region_path(iface: &str) -> io::Result<PathBuf> {
    // thread-self: the namespace of the calling thread, which a thread that
    // entered another namespace does not share with the main thread.
    let netns = netns_inode(Path::new("/proc/thread-self/ns/net"))?;
    region_path_in(Path::new(REGION_DIR), netns, iface)
}

/// The region of `iface` in network namespace `netns` (see [`netns_inode`])
/// inside `dir`.
pub fn region_path_in(dir: &Path, netns: u64, iface: &str) -> io::Result<PathBuf> {
    if iface.is_empty() || iface.contains(['/', '\0']) || iface == "." || iface == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {iface:?}"),
        ));
    }
    Ok(dir.join(format!("{netns}-{iface}.region")))
}

/// The identity of a network namespace: the inode of its nsfs file, such as
/// `/proc/self/ns/net` or `/proc/PID/ns/net`. Unique among live namespaces.
pub fn netns_inode(ns_file: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(ns_file)?.ino())
}

fn cstring(s: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {why}; refusing to use it", path.display()),
    )
}

/// Fails unless `st` is owned by our effective uid and carries no group or
/// other permission bits.
pub(super) fn check_private(path: &Path, st: &libc::stat) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if st.st_uid != euid {
        return Err(refused(
            path,
            &format!("owned by uid {}, not {euid}", st.st_uid),
        ));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(refused(
            path,
            &format!(
                "mode {:o} gives group or others access",
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

pub(super) fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat into the live struct we pass.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// `open(2)` returning an owned descriptor.
fn open_raw(dirfd: Option<&OwnedFd>, name: &CString, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let at = dirfd.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `name` is NUL-terminated and outlives the call; `at` is a
    // descriptor we hold open or AT_FDCWD.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (creating it with mode 0700 if missing) the directory the region
/// lives in, and checks it is a real directory (not a symlink) that only we
/// can enter. Later steps work relative to the returned descriptor, so the
/// directory cannot be swapped under them.
fn open_private_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = cstring(dir.as_os_str())?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let created = unsafe { libc::mkdir(c.as_ptr(), 0o700) } == 0;
    if !created {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
        }
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = open_raw(None, &c, flags, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => refused(dir, "not a directory (a symlink?)"),
        _ => io::Error::new(e.kind(), format!("{}: {e}", dir.display())),
    })?;
    if created {
        // The umask may have taken bits from 0700; we want exactly that.
        // SAFETY: fchmod on a descriptor we own.
        if unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    check_private(dir, &fstat(&fd)?)?;
    Ok(fd)
}

/// Takes an exclusive `flock` without waiting; `Ok(false)` if another open
/// file description holds a lock on the file.
fn try_lock_exclusive(f: &impl AsRawFd) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we hold open.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

/// Whether `name` in `dir` is still the file `f` is open on (it may have
/// been removed, or removed and recreated, since we opened it).
fn names_file(dir: &OwnedFd, name: &CString, f: &impl AsRawFd) -> io::Result<bool> {
    // SAFETY: an all-zero stat is a valid value for fstatat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `dir` is open, `st` is live.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(false),
            _ => Err(e),
        };
    }
    let ours = fstat(f)?;
    Ok(st.st_dev == ours.st_dev && st.st_ino == ours.st_ino)
}

fn unlink_at(dir: &OwnedFd, name: &CString) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is open.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Our claim on a region file we created and locked: the lock lives as
/// long as the file's descriptor; [`Claim::release`] removes the name.
pub(super) struct Claim {
    dir: OwnedFd,
    name: CString,
}

impl Claim {
    /// Removes the file's name, while the caller still holds the lock (so
    /// nobody can have replaced it with theirs in between) and only if it
    /// still names `file`.
    pub(super) fn release(&self, file: &File) {
        if let Ok(true) = names_file(&self.dir, &self.name, file) {
            let _ = unlink_at(&self.dir, &self.name);
        }
    }
}

fn split(path: &Path) -> io::Result<(&Path, CString)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        ));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Ok((dir, cstring(name)?))
}

/// Creates the file at `path` exclusively, mode 0600, locked by us. An
/// unlocked leftover of a dead instance is removed first; a locked file
/// (a live instance), a symlink or a file we do not own is refused
/// without being touched.
pub(super) fn claim(path: &Path) -> io::Result<(File, Claim)> {
    let (dir_path, name) = split(path)?;
    let dir = open_private_dir(dir_path)?;
    // Twice at most: once with a leftover to clear, once without.
    for _ in 0..2 {
        let flags =
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match open_raw(Some(&dir), &name, flags, 0o600) {
            Ok(fd) => return lock_new(path, dir, name, File::from(fd)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                remove_leftover(path, &dir, &name)?;
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: another instance keeps creating it", path.display()),
    ))
}

/// Locks a file we just created. Until the lock is taken, another starting
/// instance may take it for a dead one's leftover and replace it; checking
/// that the name still leads to our file after locking settles who won.
fn lock_new(path: &Path, dir: OwnedFd, name: CString, file: File) -> io::Result<(File, Claim)> {
    let in_use = || {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: another instance is starting on this interface",
                path.display()
            ),
        )
    };
    if !try_lock_exclusive(&file)? || !names_file(&dir, &name, &file)? {
        return Err(in_use());
    }
    // The umask may have taken bits from 0600; we want exactly that.
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(file.as_raw_fd(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((file, Claim { dir, name }))
}

/// Opens the existing region file `name` in `dir` (never through a symlink,
/// only a private plain file with one link; O_NONBLOCK so that a FIFO
/// planted there cannot hang the open) and takes its lock, which a live
/// instance holds for its whole life. `Ok(None)` if there is no such file.
fn open_existing_locked(path: &Path, dir: &OwnedFd, name: &CString) -> io::Result<Option<OwnedFd>> {
    let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let fd = match open_raw(Some(dir), name, flags, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refused(path, "a symlink")),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let st = fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink != 1 {
        return Err(refused(path, "not a plain file"));
    }
    check_private(path, &st)?;
    if !try_lock_exclusive(&fd)? {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: in use by a running instance on this interface in this network namespace",
                path.display()
            ),
        ));
    }
    Ok(Some(fd))
}

/// Removes `name` if it is the unlocked region file of a dead instance.
fn remove_leftover(path: &Path, dir: &OwnedFd, name: &CString) -> io::Result<()> {
    // Gone meanwhile: the caller's next exclusive create decides.
    let Some(fd) = open_existing_locked(path, dir, name)? else {
        return Ok(());
    };
    if names_file(dir, name, &fd)? {
        unlink_at(dir, name)?;
    }
    Ok(())
}

/// The directory a region lives in, opened ahead of time so that a
/// process that may no longer open files (the data plane, once sandboxed)
/// can still remove the region there.
pub struct RegionDir {
    /// Shared where one directory serves many regions (the host data
    /// plane's tenants): its filter allows `unlinkat` on one descriptor.
    dir: std::sync::Arc<OwnedFd>,
    name: CString,
}

impl RegionDir {
    pub(super) fn open(path: &Path) -> io::Result<RegionDir> {
        let (dir_path, name) = split(path)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let dir = open_raw(None, &cstring(dir_path.as_os_str())?, flags, 0)?;
        Ok(RegionDir {
            dir: std::sync::Arc::new(dir),
            name,
        })
    }

    /// The region at `path` in `dir`, a directory opened before: None if
    /// `path` is not directly in `dir_path`, the path `dir` was opened at.
    pub fn in_opened(
        dir: &std::sync::Arc<OwnedFd>,
        dir_path: &Path,
        path: &Path,
    ) -> Option<RegionDir> {
        let (parent, name) = split(path).ok()?;
        (parent == dir_path).then(|| RegionDir {
            dir: dir.clone(),
            name,
        })
    }

    /// The directory's descriptor (the one `unlinkat` is allowed on).
    pub fn as_raw_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }
}

/// For a process that maps the region without claiming it (the data plane)
/// and finds its control gone: removes the file `dir` names if it is still
/// the one `file` is open on and nobody holds its lock, so the last user of
/// a dead instance's region frees the memory. Returns whether it did.
pub(super) fn remove_if_unclaimed(dir: &RegionDir, file: &File) -> io::Result<bool> {
    // `file` is this process's own open file description (never locked
    // before): the lock conflicts with a live control's, and with that of a
    // starting control about to replace the file.
    if !try_lock_exclusive(file)? || !names_file(&dir.dir, &dir.name, file)? {
        return Ok(false);
    }
    unlink_at(&dir.dir, &dir.name)?;
    Ok(true)
}

/// Takes over the region file at `path` that a dead control process left
/// to its still running data plane: opens it (never through a symlink, only
/// a private plain file of ours) and takes its lock, which a live control
/// holds for its whole life. `Ok(None)` if there is no such file. The file
/// is only opened and locked here, never changed or removed: a control that
/// cannot use it just closes it.
pub(super) fn adopt(path: &Path) -> io::Result<Option<(File, Claim)>> {
    let (dir_path, name) = split(path)?;
    let dir = open_private_dir(dir_path)?;
    let Some(fd) = open_existing_locked(path, &dir, &name)? else {
        return Ok(None);
    };
    // Removed (by an exiting data plane) between our open and our lock.
    if !names_file(&dir, &name, &fd)? {
        return Ok(None);
    }
    Ok(Some((File::from(fd), Claim { dir, name })))
}

/// Whether process `pid` holds `file` open (the data plane keeps the region
/// it maps open for its whole life): what tells a data plane that serves
/// this region from an unrelated process that got its pid.
pub(super) fn held_open_by(pid: u32, file: &File) -> bool {
    let Ok(ours) = fstat(file) else { return false };
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    entries.flatten().any(|e| {
        // metadata() of /proc/PID/fd/N follows the link to the open file.
        std::fs::metadata(e.path()).is_ok_and(|m| m.dev() == ours.st_dev && m.ino() == ours.st_ino)
    })
}
