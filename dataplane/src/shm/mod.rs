//! The shared-memory contract between the control process and the data
//! plane (see `layout.rs` for the map). Control writes session keys, peer
//! endpoints and AllowedIPs; the data plane reads them on every packet and
//! writes counters (per peer, per worker, per uplink: `stats.rs`); event
//! rings carry everything else both ways.
//!
//! The region is a named file (see `file.rs` for where, and how it is
//! claimed) so a restarted process of either kind can find it again. It
//! holds every live session key: it is kept out of core dumps and, where
//! the kernel allows, its key slots out of swap.

pub mod allowed;
pub mod capture;
pub mod events;
mod file;
pub mod handoff;
pub mod keys;
pub mod layout;
mod memlock;
pub mod peers;
pub mod ring;
mod seqlock;
pub mod stats;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Once;

pub use file::{netns_inode, region_path, region_path_in, RegionDir, REGION_DIR};
use layout::*;
use memlock::memlock_advice;

/// CLOCK_MONOTONIC in nanoseconds: the one clock both processes share.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether process `pid` is alive: it exists and is not a zombie that its
/// parent has not reaped yet (which still answers signal 0).
pub fn pid_alive(pid: u32) -> bool {
    use std::os::fd::FromRawFd;
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // A pidfd needs neither kill(2) nor /proc, which the data plane's
    // sandbox refuses, and it tells an exited process its parent has not
    // reaped yet (which still answers signal 0) from a live one: it is
    // readable once the process exited.
    // SAFETY: pidfd_open takes a pid and flags, and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
    if fd < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            // Before Linux 5.3 (where the sandbox's filter is off: it
            // refuses kill and open, which this falls back to).
            Some(libc::ENOSYS) => legacy_pid_alive(p),
            _ => false,
        };
    }
    // SAFETY: pidfd_open just returned this fd and nothing else owns it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) };
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls the one pollfd we pass, without waiting.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r == 0
}

fn legacy_pid_alive(p: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(p, 0) } != 0 {
        return false;
    }
    !std::fs::read_to_string(format!("/proc/{p}/stat"))
        .ok()
        .and_then(|s| {
            // The state follows the command name, which may hold ')'.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// A mapping of the whole region.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    file: File,
    /// Set for the instance that created the file: its name goes with it.
    claim: Option<file::Claim>,
}

// SAFETY: every field the region exposes is an atomic, or an UnsafeCell
// guarded by a documented lock protocol, so sharing the mapping between
// threads is as safe as sharing it between processes.
unsafe impl Send for Region {}
// SAFETY: see Send.
unsafe impl Sync for Region {}

impl Region {
    /// Creates the region at `path` for a new instance: exclusively, mode
    /// 0600, in a private directory, locked for as long as the region lives
    /// (see `file.rs`); dropping the region removes the file. Refuses, and
    /// leaves the file alone, while another instance holds it.
    pub fn create_exclusive(path: &Path) -> io::Result<Region> {
        let (file, claim) = file::claim(path)?;
        if let Err(e) = file.set_len(TOTAL_SIZE as u64) {
            // Still locked by us: the half-made file is ours to remove.
            claim.release(&file);
            return Err(e);
        }
        let r = Self::map(file, Some(claim))?;
        r.initialise();
        Ok(r)
    }

    fn initialise(&self) {
        let h = self.header();
        h.version.store(VERSION, Ordering::Relaxed);
        h.max_workers.store(MAX_WORKERS as u32, Ordering::Relaxed);
        h.endpoints_gen.store(1, Ordering::Relaxed);
        h.ring_entries.store(RING_ENTRIES as u32, Ordering::Relaxed);
        h.total_size.store(TOTAL_SIZE as u64, Ordering::Relaxed);
        self.grow(Capacity::MIN);
        // Magic last: a reader that sees it sees an initialised region.
        h.magic.store(MAGIC, Ordering::Release);
    }

    /// The capacities in use (see `layout.rs`), each within its maximum
    /// whatever the header says: the data plane writes the header too, and
    /// control must not trust it to bound a loop.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            peers: self.peer_slots(),
            keys: self.key_slots(),
            allowed: self.allowed_capacity(),
        }
    }

    /// Key slots in use: a receiver index whose slot is at or past this
    /// names no session.
    pub fn key_slots(&self) -> usize {
        (self.header().key_slots.load(Ordering::Acquire) as usize).min(MAX_KEY_SLOTS)
    }

    /// Peer slots in use: every peer's slot is below this.
    pub fn peer_slots(&self) -> usize {
        (self.header().peer_slots.load(Ordering::Acquire) as usize).min(MAX_PEER_SLOTS)
    }

    /// AllowedIPs entries the table may hold now.
    pub fn allowed_capacity(&self) -> usize {
        (self.header().allowed_max.load(Ordering::Acquire) as usize).min(MAX_ALLOWED)
    }

    /// Control: raises the capacities to at least `want` (never lowers
    /// them). Nothing in use moves, so every session carries on: the new
    /// slots are made ready first, then published with Release, so a
    /// reader that sees a capacity sees its slots initialised.
    pub fn grow(&self, want: Capacity) {
        let h = self.header();
        let old = self.capacity();
        let new = old.max(Capacity {
            peers: want.peers.min(MAX_PEER_SLOTS),
            keys: want.keys.min(MAX_KEY_SLOTS),
            allowed: want.allowed.min(MAX_ALLOWED),
        });
        for i in old.peers..new.peers {
            self.peer(i).current_key.store(NO_SLOT, Ordering::Relaxed);
        }
        h.allowed_max.store(new.allowed as u32, Ordering::Release);
        h.key_slots.store(new.keys as u32, Ordering::Release);
        h.peer_slots.store(new.peers as u32, Ordering::Release);
    }

    /// Maps an existing region, checking that it is a private file of ours
    /// (never through a symlink) with the right magic, version and size.
    pub fn open(path: &Path) -> io::Result<Region> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        Self::checked(file, path)
    }

    /// Maps a region whose descriptor control handed over (a host data
    /// plane's tenant, see `process::host`), with the checks of
    /// [`Region::open`].
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Region> {
        Self::checked(File::from(fd), Path::new("(handed-over region)"))
    }

    /// Maps `file` if it is a private plain file of ours with this size,
    /// magic and layout version (`path` names it in errors).
    fn checked(file: File, path: &Path) -> io::Result<Region> {
        let st = file::fstat(&file)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(invalid("shared memory region is not a plain file"));
        }
        file::check_private(path, &st)?;
        if st.st_size as u64 != TOTAL_SIZE as u64 {
            return Err(invalid("shared memory region has the wrong size"));
        }
        let r = Self::map(file, None)?;
        let h = r.header();
        if h.magic.load(Ordering::Acquire) != MAGIC || h.version.load(Ordering::Relaxed) != VERSION
        {
            return Err(invalid(
                "shared memory region has another magic or layout version",
            ));
        }
        Ok(r)
    }

    /// The region's open file, to be opened afresh (through /proc) for a
    /// host data plane: passing this one would pass its lock along.
    pub fn file_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.file)
    }

    /// The region file's identity (device, inode): what tells a tenant
    /// that re-attaches from a new one.
    pub fn file_id(&self) -> io::Result<(u64, u64)> {
        let st = file::fstat(&self.file)?;
        Ok((st.st_dev, st.st_ino))
    }

    /// For a user that did not create the region (the data plane) and
    /// outlived its creator: removes the file if it still names this region
    /// and no live instance holds it. Returns whether it did.
    pub fn remove_if_unclaimed(&self, path: &Path) -> io::Result<bool> {
        self.remove_if_unclaimed_in(&Self::dir_of(path)?)
    }

    /// Opens the directory of the region at `path` now, for a later
    /// [`remove_if_unclaimed_in`](Self::remove_if_unclaimed_in) by a
    /// process that can no longer open files then.
    pub fn dir_of(path: &Path) -> io::Result<RegionDir> {
        RegionDir::open(path)
    }

    /// [`remove_if_unclaimed`](Self::remove_if_unclaimed) in a directory
    /// opened beforehand.
    pub fn remove_if_unclaimed_in(&self, dir: &RegionDir) -> io::Result<bool> {
        if self.claim.is_some() {
            return Ok(false);
        }
        file::remove_if_unclaimed(dir, &self.file)
    }

    /// For a control process that restarts while the data plane it left
    /// behind keeps running: takes over the existing region at `path` (its
    /// lock must be free: a live control holds it), checks it is a private
    /// file of ours with this layout, and maps it. Nothing in it changes.
    /// Like [`Region::create_exclusive`]'s, the returned region removes the
    /// file when dropped. `Ok(None)`: there is no region at `path`.
    pub fn adopt(path: &Path) -> io::Result<Option<Region>> {
        let Some((file, claim)) = file::adopt(path)? else {
            return Ok(None);
        };
        let st = file::fstat(&file)?;
        if st.st_size as u64 != TOTAL_SIZE as u64 {
            return Err(invalid("shared memory region has the wrong size"));
        }
        // Not yet claimed: a region of another layout is left where it is.
        let mut r = Self::map(file, None)?;
        let h = r.header();
        if h.magic.load(Ordering::Acquire) != MAGIC || h.version.load(Ordering::Relaxed) != VERSION
        {
            return Err(invalid(
                "shared memory region has another magic or layout version",
            ));
        }
        r.claim = Some(claim);
        // Adopted by a control that bumps it: readers may rely on it now.
        r.endpoints_changed();
        Ok(Some(r))
    }

    /// Unmaps the region without removing its file, even if this instance
    /// claimed it: for a control that re-attached and then gave up, leaving
    /// the region to the data plane that still uses it.
    pub fn leave(mut self) {
        self.claim = None;
    }

    /// Whether process `pid` has this region's file open (see
    /// [`Region::adopt`]: is the data plane named in the header really ours?).
    pub fn held_open_by(&self, pid: u32) -> bool {
        pid != 0 && file::held_open_by(pid, &self.file)
    }

    /// Control: a peer's endpoint was written (or the peer went), after
    /// the write; see [`Header::endpoints_gen`].
    pub fn endpoints_changed(&self) {
        self.header().endpoints_gen.fetch_add(1, Ordering::Release);
    }

    /// Control: records the static public key its sessions are made with.
    pub fn set_static_public_key(&self, key: Option<&[u8; 32]>) {
        seqlock::store_bytes(
            &self.header().static_public_key,
            key.map_or(&[0u8; 32][..], |k| &k[..]),
        );
    }

    /// The static public key recorded by [`Region::set_static_public_key`].
    pub fn static_public_key(&self) -> Option<[u8; 32]> {
        let mut k = [0u8; 32];
        seqlock::load_bytes(&self.header().static_public_key, &mut k);
        (k != [0; 32]).then_some(k)
    }

    /// The data plane's descriptor number of the eventfd that wakes control.
    pub fn dataplane_wake_fd(&self) -> Option<i32> {
        match self.header().dataplane_wake_fd.load(Ordering::Acquire) {
            0 => None,
            n => i32::try_from(n - 1).ok(),
        }
    }

    /// Maps `file`; with a `claim`, the file is removed if that fails.
    fn map(file: File, claim: Option<file::Claim>) -> io::Result<Region> {
        // SAFETY: a fresh shared mapping of a file we hold open, of exactly
        // its size; the kernel picks the address. Failure is checked.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                TOTAL_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        let Some(base) = NonNull::new(p as *mut u8).filter(|_| p != libc::MAP_FAILED) else {
            let e = io::Error::last_os_error();
            if let Some(c) = &claim {
                c.release(&file);
            }
            return Err(e);
        };
        // From here on, dropping `r` undoes everything.
        let r = Region {
            base,
            len: TOTAL_SIZE,
            file,
            claim,
        };
        r.keep_out_of_dumps()?;
        // Those that hold sessions already (a region being re-attached);
        // control locks each new one as it publishes it.
        for slot in r.key_slots_in_use() {
            r.lock_key_slot(slot);
        }
        Ok(r)
    }

    /// Session keys must not end up in a core file, whatever the process's
    /// dumpable setting.
    fn keep_out_of_dumps(&self) -> io::Result<()> {
        // SAFETY: advises on exactly our own mapping; changes no contents.
        let r = unsafe {
            libc::madvise(
                self.base.as_ptr() as *mut libc::c_void,
                self.len,
                libc::MADV_DONTDUMP,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // No read-ahead where the region is a disk file rather than tmpfs:
        // it would fill the page cache around every slot touched, which
        // costs memory and makes untouched slots look in use.
        // SAFETY: as above; best effort, the result is ignored.
        unsafe {
            libc::madvise(
                self.base.as_ptr() as *mut libc::c_void,
                self.len,
                libc::MADV_RANDOM,
            )
        };
        Ok(())
    }

    /// Keeps key slot `i` (which holds secrets) out of swap: called for
    /// each slot as it comes into use, since locking the whole capacity
    /// ahead would make all of it resident. Best effort: without
    /// CAP_IPC_LOCK or with a low RLIMIT_MEMLOCK the kernel refuses, which
    /// is said once and otherwise ignored. A page stays resident while any
    /// mapping of it is locked, so control's lock covers the data plane.
    pub fn lock_key_slot(&self, i: usize) {
        static WARNED: Once = Once::new();
        if i >= MAX_KEY_SLOTS {
            return;
        }
        let size = core::mem::size_of::<KeySlot>();
        // mlock rounds to whole pages itself.
        // SAFETY: slot i < MAX_KEY_SLOTS lies inside the key array of our
        // mapping; mlock changes no contents.
        let r = unsafe {
            libc::mlock(
                self.base.as_ptr().add(OFF_KEYS + i * size) as *const libc::c_void,
                size,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            WARNED.call_once(|| eprintln!("{}", memlock_advice(&e, self.key_slots() * size)));
        }
    }

    /// The key slots below the capacity that can hold a session: those
    /// with memory behind them (publishing a key writes its slot; a slot
    /// never written is a hole in the file). A scan of these instead of
    /// every slot keeps it from allocating the untouched ones: reading a
    /// hole of a shared tmpfs mapping allocates a page. A page swapped
    /// out counts as not there, which the lock on slots in use prevents
    /// where the kernel allows it. If the kernel cannot say (mincore
    /// fails), every slot below the capacity.
    pub fn key_slots_in_use(&self) -> Vec<usize> {
        let cap = self.key_slots();
        let size = core::mem::size_of::<KeySlot>();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).unwrap_or(0);
        if page == 0 || !OFF_KEYS.is_multiple_of(page) {
            return (0..cap).collect();
        }
        let len = (cap * size).next_multiple_of(page);
        let mut resident = vec![0u8; len / page];
        // SAFETY: OFF_KEYS is page-aligned (checked above) and so is the
        // mapping; [OFF_KEYS, OFF_KEYS + len) lies inside it (the key
        // array's maximum is larger and followed by more of the region).
        // mincore writes one byte per page of that range into `resident`,
        // which has exactly that many.
        let r = unsafe {
            libc::mincore(
                self.base.as_ptr().add(OFF_KEYS) as *mut libc::c_void,
                len,
                resident.as_mut_ptr(),
            )
        };
        if r != 0 {
            return (0..cap).collect();
        }
        (0..cap)
            .filter(|&i| {
                let first = i * size / page;
                let last = ((i + 1) * size - 1) / page;
                resident[first..=last].iter().any(|b| b & 1 != 0)
            })
            .collect()
    }

    /// # Safety
    /// `off + size_of::<T>()` must lie within the region, `off` must be
    /// aligned for `T`, and `T` must be one of the layout's records (all of
    /// whose bit patterns, including all-zero, are valid).
    unsafe fn at<T>(&self, off: usize) -> &T {
        debug_assert!(off + core::mem::size_of::<T>() <= self.len);
        debug_assert_eq!(off % core::mem::align_of::<T>(), 0);
        // SAFETY: the caller's contract; the mapping lives as long as self.
        unsafe { &*(self.base.as_ptr().add(off) as *const T) }
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the header is at offset 0 and HEADER_SIZE ≥ its size.
        unsafe { self.at(0) }
    }

    /// The running data plane's worker count, as a bound for indexing its
    /// rings and counters: within 1..=MAX_WORKERS whatever the header says
    /// (the data plane writes it; control must not trust it blindly).
    pub fn workers(&self) -> usize {
        (self.header().workers.load(Ordering::Acquire) as usize).clamp(1, MAX_WORKERS)
    }

    /// Key slot `i` (`i < MAX_KEY_SLOTS`; callers keep to
    /// [`Region::key_slots`], which an index from the network must be
    /// checked against first).
    pub fn key(&self, i: usize) -> &KeySlot {
        assert!(i < MAX_KEY_SLOTS, "key slot out of range");
        // SAFETY: in range and 64-aligned by the layout's asserts.
        unsafe { self.at(OFF_KEYS + i * core::mem::size_of::<KeySlot>()) }
    }

    /// Peer slot `i` (`i < MAX_PEER_SLOTS`; in use: `i <` [`Region::peer_slots`]).
    pub fn peer(&self, i: usize) -> &PeerSlot {
        assert!(i < MAX_PEER_SLOTS, "peer slot out of range");
        // SAFETY: in range and 64-aligned by the layout's asserts.
        unsafe { self.at(OFF_PEERS + i * core::mem::size_of::<PeerSlot>()) }
    }

    pub fn allowed_header(&self) -> &AllowedHeader {
        // SAFETY: the AllowedHeader sits at OFF_ALLOWED, 64 bytes reserved.
        unsafe { self.at(OFF_ALLOWED) }
    }

    pub fn allowed_entry(&self, i: usize) -> &AllowedEntry {
        assert!(i < MAX_ALLOWED, "allowed entry out of range");
        // SAFETY: in range; entries are 8-aligned after the 64-byte header.
        unsafe { self.at(OFF_ALLOWED + 64 + i * core::mem::size_of::<AllowedEntry>()) }
    }

    /// What control publishes about the peer in peer slot `i` (`i < MAX_PEER_SLOTS`).
    pub fn peer_info(&self, i: usize) -> &PeerInfo {
        assert!(i < MAX_PEER_SLOTS, "peer slot out of range");
        // SAFETY: in range and 64-aligned by the layout's asserts.
        unsafe { self.at(OFF_PEER_INFO + i * core::mem::size_of::<PeerInfo>()) }
    }

    /// Worker `w`'s counters (`w < MAX_WORKERS`); only that worker writes them.
    pub fn worker_stats(&self, w: usize) -> &WorkerStats {
        assert!(w < MAX_WORKERS, "worker out of range");
        // SAFETY: in range and 128-aligned by the layout's asserts.
        unsafe { self.at(OFF_WORKER_STATS + w * core::mem::size_of::<WorkerStats>()) }
    }

    /// Entry `i` of the uplink table (`i < MAX_UPLINKS`).
    pub fn uplink(&self, i: usize) -> &UplinkStats {
        assert!(i < MAX_UPLINKS, "uplink out of range");
        // SAFETY: in range and 64-aligned by the layout's asserts.
        unsafe { self.at(OFF_UPLINKS + i * core::mem::size_of::<UplinkStats>()) }
    }

    /// The packet capture's control block (see `capture.rs`).
    pub fn capture_control(&self) -> &CaptureControl {
        // SAFETY: in range and 64-aligned by the layout's asserts.
        unsafe { self.at(OFF_CAPTURE) }
    }

    /// Worker `w`'s ring of captured frames (`w < MAX_WORKERS`).
    pub fn capture_ring(&self, w: usize) -> capture::CaptureRing<'_> {
        assert!(w < MAX_WORKERS, "worker out of range");
        let off = OFF_CAPTURE_RINGS + w * CAPTURE_RING_SIZE;
        // SAFETY: in range and 64-aligned (page-aligned start, 64-multiple
        // ring size); the slots follow the header inside the same
        // CAPTURE_RING_SIZE block, 8-aligned since the header is 128 bytes.
        unsafe {
            let header: &CaptureRingHeader = self.at(off);
            let slots = self
                .base
                .as_ptr()
                .add(off + core::mem::size_of::<CaptureRingHeader>());
            capture::CaptureRing::from_raw(header, slots)
        }
    }

    /// Ring carrying events from worker `w` to control.
    pub fn ring_to_control(&self, w: usize) -> ring::Ring<'_> {
        self.ring(w)
    }

    /// Ring carrying commands from control to worker `w`.
    pub fn ring_to_dataplane(&self, w: usize) -> ring::Ring<'_> {
        self.ring(MAX_WORKERS + w)
    }

    fn ring(&self, n: usize) -> ring::Ring<'_> {
        assert!(n < 2 * MAX_WORKERS, "ring out of range");
        let off = OFF_RINGS + n * RING_SIZE;
        // SAFETY: in range and 64-aligned; the records follow the header
        // inside the same RING_SIZE block.
        unsafe {
            let header: &RingHeader = self.at(off);
            let records = self
                .base
                .as_ptr()
                .add(off + core::mem::size_of::<RingHeader>());
            ring::Ring::from_raw(header, records)
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Before the descriptor (and with it the lock) goes.
        if let Some(c) = &self.claim {
            c.release(&self.file);
        }
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into
        // it outlives self because every accessor borrows self.
        unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use std::path::PathBuf;

    /// A private directory of its own for one test's region files, removed
    /// (with whatever is left in it) on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            let d =
                std::env::temp_dir().join(format!("wirespeed-test-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            TempDir(d)
        }

        pub fn region(&self) -> PathBuf {
            self.0.join("wg0.region")
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh region in its own directory.
    pub fn temp_region(tag: &str) -> (Region, TempDir) {
        let dir = TempDir::new(tag);
        (Region::create_exclusive(&dir.region()).unwrap(), dir)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{temp_region, TempDir};
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    #[test]
    fn pids_alive_and_dead() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        // Above the kernel's pid_max limit, and not a pid_t.
        assert!(!pid_alive(i32::MAX as u32));
        assert!(!pid_alive(u32::MAX));
        // Exited but not reaped yet: still answers signal 0.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!pid_alive(pid), "a zombie is not alive");
        child.wait().unwrap();
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn create_then_open_sees_the_same_memory() {
        let (a, dir) = temp_region("open");
        let b = Region::open(&dir.region()).unwrap();
        a.header().listen_port.store(51820, Ordering::Relaxed);
        assert_eq!(b.header().listen_port.load(Ordering::Relaxed), 51820);
        assert_eq!(b.peer(7).current_key.load(Ordering::Relaxed), NO_SLOT);
    }

    #[test]
    fn open_refuses_foreign_files() {
        let dir = TempDir::new("foreign");
        std::fs::create_dir(dir.path()).unwrap();
        let path = dir.region();
        std::fs::write(&path, b"not a region").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Region::open(&path).is_err());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(TOTAL_SIZE as u64).unwrap();
        assert!(Region::open(&path).is_err(), "right size, no magic");
    }

    /// A host data plane maps what control hands over only if it is a
    /// region: the same memory, a fresh open file (not control's locked
    /// one), and the checks of `open` for anything else.
    #[test]
    fn a_handed_over_region_is_the_same_memory_and_a_foreign_file_is_refused() {
        let (a, dir) = temp_region("fromfd");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.region())
            .unwrap();
        let b = Region::from_fd(f.into()).unwrap();
        a.header().listen_port.store(51999, Ordering::Relaxed);
        assert_eq!(b.header().listen_port.load(Ordering::Relaxed), 51999);
        assert_eq!(a.file_id().unwrap(), b.file_id().unwrap());
        let other = dir.path().join("other");
        std::fs::write(&other, b"not a region").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = std::fs::File::open(&other).unwrap();
        assert!(Region::from_fd(f.into()).is_err());
        std::fs::set_permissions(dir.region(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let f = std::fs::File::open(dir.region()).unwrap();
        assert!(Region::from_fd(f.into()).is_err(), "others can read it");
    }

    #[test]
    fn open_refuses_a_region_others_can_read() {
        let (_r, dir) = temp_region("readable");
        assert!(Region::open(&dir.region()).is_ok());
        std::fs::set_permissions(dir.region(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Region::open(&dir.region()).is_err());
    }

    #[test]
    fn file_is_0600_in_a_0700_directory_and_goes_with_the_region() {
        let (r, dir) = temp_region("modes");
        assert_eq!(mode(&dir.region()), 0o600);
        assert_eq!(mode(dir.path()), 0o700);
        drop(r);
        assert!(!dir.region().exists(), "the creator removes its file");
    }

    #[test]
    fn refuses_a_directory_others_can_enter_or_a_symlinked_one() {
        let dir = TempDir::new("opendir");
        std::fs::create_dir(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Region::create_exclusive(&dir.region()).is_err());
        assert!(!dir.region().exists());
        let real = TempDir::new("realdir");
        std::fs::create_dir(real.path()).unwrap();
        std::fs::set_permissions(real.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        symlink(real.path(), &link).unwrap();
        assert!(Region::create_exclusive(&link.join("wg0.region")).is_err());
        assert!(!real.region().exists());
    }

    #[test]
    fn refuses_a_symlink_and_leaves_its_target_alone() {
        let dir = TempDir::new("symlink");
        std::fs::create_dir(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        symlink(&target, dir.region()).unwrap();
        let e = Region::create_exclusive(&dir.region())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert!(std::fs::symlink_metadata(dir.region())
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(
            Region::open(&dir.region()).is_err(),
            "open does not follow it either"
        );
    }

    #[test]
    fn refuses_while_a_live_instance_holds_the_region() {
        let (live, dir) = temp_region("live");
        live.header().listen_port.store(4242, Ordering::Relaxed);
        let e = Region::create_exclusive(&dir.region())
            .err()
            .expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert_eq!(live.header().listen_port.load(Ordering::Relaxed), 4242);
        let again = Region::open(&dir.region()).unwrap();
        assert_eq!(again.header().listen_port.load(Ordering::Relaxed), 4242);
        assert!(
            !again.remove_if_unclaimed(&dir.region()).unwrap(),
            "a claimed region stays"
        );
        assert!(dir.region().exists());
    }

    #[test]
    fn replaces_the_unlocked_leftover_of_a_dead_instance() {
        let dir = TempDir::new("stale");
        std::fs::create_dir(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.region(), b"left by a crash").unwrap();
        std::fs::set_permissions(dir.region(), std::fs::Permissions::from_mode(0o600)).unwrap();
        // Held open (not locked) so its inode number cannot be reused.
        let old = std::fs::File::open(dir.region()).unwrap();
        let r = Region::create_exclusive(&dir.region()).unwrap();
        let m = std::fs::metadata(dir.region()).unwrap();
        assert_ne!(m.ino(), old.metadata().unwrap().ino(), "a new file");
        assert_eq!(old.metadata().unwrap().nlink(), 0, "the old one is removed");
        assert_eq!(m.len(), TOTAL_SIZE as u64);
        assert_eq!(r.header().magic.load(Ordering::Relaxed), MAGIC);
    }

    #[test]
    fn the_last_user_of_a_dead_instance_removes_its_region() {
        let (creator, dir) = temp_region("orphan");
        let user = Region::open(&dir.region()).unwrap();
        // The creator dies without cleaning up: its lock goes (with its
        // descriptor and its mapping, which also holds the open file), its
        // file stays.
        let (fd, base, len) = (creator.file.as_raw_fd(), creator.base, creator.len);
        std::mem::forget(creator);
        // SAFETY: undoes the mapping and closes the descriptor of a region
        // that was forgotten, so nothing will use or release them again.
        unsafe {
            libc::munmap(base.as_ptr() as *mut libc::c_void, len);
            libc::close(fd);
        }
        assert!(user.remove_if_unclaimed(&dir.region()).unwrap());
        assert!(!dir.region().exists());
    }

    /// The kernel's flags ("dd": not dumped, "lo": locked) of the mapping
    /// that holds `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if inside {
                    return flags.to_string();
                }
            } else if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                    }
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn the_mapping_stays_out_of_core_dumps_and_its_keys_out_of_swap() {
        let (r, _dir) = temp_region("nodump");
        let base = r.base.as_ptr() as usize;
        for off in [0, OFF_KEYS, OFF_PEERS, TOTAL_SIZE - 1] {
            assert!(
                vm_flags(base + off).split_whitespace().any(|f| f == "dd"),
                "{off:#x}"
            );
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let at = OFF_KEYS + 5 * core::mem::size_of::<KeySlot>();
            r.lock_key_slot(5);
            let flags = vm_flags(base + at);
            assert!(
                flags.split_whitespace().any(|f| f == "lo"),
                "a key slot in use is locked: {flags}"
            );
            // A region mapped again locks the slots that hold sessions.
            r.key(5).publish(&km(5));
            let again = Region::open(&_dir.region()).unwrap();
            let flags = vm_flags(again.base.as_ptr() as usize + at);
            assert!(flags.split_whitespace().any(|f| f == "lo"), "{flags}");
        }
    }

    fn km(index: u32) -> keys::KeyMaterial {
        keys::KeyMaterial {
            local_index: index,
            peer: 1,
            remote_index: 2,
            initiator: true,
            created_ns: 3,
            send_key: zeroize::Zeroizing::new([4; 32]),
            recv_key: zeroize::Zeroizing::new([5; 32]),
        }
    }

    /// Bytes of the region's file that have memory behind them.
    fn allocated(dir: &TempDir) -> u64 {
        std::fs::metadata(dir.region()).unwrap().blocks() * 512
    }

    #[test]
    fn capacity_grows_without_moving_a_session_and_memory_follows_it() {
        let (r, dir) = temp_region("grow");
        assert_eq!(r.capacity(), Capacity::MIN);
        let small = allocated(&dir);
        // The minimum's peer slots and the header, not the layout's maximum.
        assert!(small < 2 << 20, "{small} bytes for {:?}", r.capacity());
        // A session in the last key slot of the first capacity, under an
        // index whose high bits are set.
        let index = 0xab00_0000 | (Capacity::MIN.keys as u32 - 1);
        let slot = keys::slot_of_index(index);
        assert_eq!(slot, Capacity::MIN.keys - 1);
        r.lock_key_slot(slot);
        r.key(slot).publish(&km(index));
        let (_, seq) = r.key(slot).read().unwrap();
        assert!(r.key_slots_in_use().contains(&slot));
        assert!(r.key_slots_in_use().len() < 16);

        let other = Region::open(&dir.region()).unwrap();
        let want = Capacity::for_config(100_000, 100_000).unwrap();
        r.grow(want);
        assert_eq!(other.capacity(), want, "seen through another mapping");
        assert_eq!(keys::slot_of_index(index), slot, "the index's slot stays");
        let (k, seq2) = other.key(slot).read().expect("the session is still there");
        assert_eq!((k.local_index, seq2), (index, seq));
        assert_eq!(
            other
                .peer(want.peers - 1)
                .current_key
                .load(Ordering::Relaxed),
            NO_SLOT,
            "new peer slots are ready"
        );
        // Scans keep to the slots with memory: they allocate nothing.
        let before = allocated(&dir);
        assert!(other.key_slots_in_use().contains(&slot));
        // The slots sharing a page or two with it, not the capacity's.
        let used = other.key_slots_in_use();
        assert!(used.len() < 16, "{used:?}");
        assert_eq!(allocated(&dir), before);
        // 131,072 peer slots (24 MiB) written; the key slots (576 MiB at
        // this capacity) and the allowed table untouched.
        assert!(before < 32 << 20, "{before} bytes for {want:?}");
        // Never lowered.
        r.grow(Capacity::MIN);
        assert_eq!(r.capacity(), want);
        // The layout holds the kernel's 2^20 peers.
        let max = Capacity::for_config(MAX_PEER_SLOTS, MAX_ALLOWED).unwrap();
        assert_eq!(max.peers, 1 << 20);
        let far = 0x8000_0000 | (MAX_KEY_SLOTS as u32 - 1);
        assert_eq!(keys::slot_of_index(far), MAX_KEY_SLOTS - 1);
        r.key(MAX_KEY_SLOTS - 1);
    }

    #[test]
    fn a_header_claiming_more_than_the_layout_is_clamped() {
        let (r, _dir) = temp_region("clamp");
        r.header().peer_slots.store(u32::MAX, Ordering::Relaxed);
        r.header().key_slots.store(u32::MAX, Ordering::Relaxed);
        r.header().allowed_max.store(u32::MAX, Ordering::Relaxed);
        assert_eq!(
            (r.peer_slots(), r.key_slots(), r.allowed_capacity()),
            (MAX_PEER_SLOTS, MAX_KEY_SLOTS, MAX_ALLOWED)
        );
    }

    #[test]
    fn adopt_takes_over_only_an_unlocked_region() {
        let dir = TempDir::new("adopt");
        assert!(Region::adopt(&dir.region()).unwrap().is_none(), "no file");
        let a = Region::create_exclusive(&dir.region()).unwrap();
        a.header().listen_port.store(51820, Ordering::Relaxed);
        let e = Region::adopt(&dir.region()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "a live owner: {e}");
        // The owner dies without cleaning up: its lock goes with it.
        // SAFETY: unlocks a descriptor we hold open.
        assert_eq!(unsafe { libc::flock(a.file.as_raw_fd(), libc::LOCK_UN) }, 0);
        let b = Region::adopt(&dir.region()).unwrap().unwrap();
        assert_eq!(
            b.header().listen_port.load(Ordering::Relaxed),
            51820,
            "the same region, untouched"
        );
        assert!(b.held_open_by(std::process::id()));
        assert!(!b.held_open_by(1), "init does not hold our region");
        let e = Region::adopt(&dir.region()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "now ours: {e}");
        drop(b);
        assert!(!dir.region().exists(), "the adopter removes it when done");
        drop(a);
    }

    #[test]
    fn adopt_leaves_a_region_of_another_layout_alone() {
        let (a, dir) = temp_region("adopt-version");
        a.header().version.store(VERSION - 1, Ordering::Relaxed);
        // SAFETY: unlocks a descriptor we hold open.
        assert_eq!(unsafe { libc::flock(a.file.as_raw_fd(), libc::LOCK_UN) }, 0);
        assert!(Region::adopt(&dir.region()).is_err());
        assert!(dir.region().exists());
    }

    #[test]
    fn static_key_and_wake_fd_round_trip() {
        let (r, _dir) = temp_region("static-key");
        assert_eq!(r.static_public_key(), None);
        assert_eq!(r.dataplane_wake_fd(), None);
        r.set_static_public_key(Some(&[3; 32]));
        assert_eq!(r.static_public_key(), Some([3; 32]));
        r.set_static_public_key(None);
        assert_eq!(r.static_public_key(), None);
        r.header().dataplane_wake_fd.store(1, Ordering::Relaxed);
        assert_eq!(r.dataplane_wake_fd(), Some(0));
    }

    #[test]
    fn worker_count_is_clamped_to_the_layout() {
        let (r, _dir) = temp_region("workers");
        for (stored, seen) in [(0, 1), (3, 3), (33, MAX_WORKERS), (u32::MAX, MAX_WORKERS)] {
            r.header().workers.store(stored, Ordering::Relaxed);
            assert_eq!(r.workers(), seen, "{stored}");
            r.ring_to_control(r.workers() - 1);
            r.ring_to_dataplane(r.workers() - 1);
        }
    }

    #[test]
    fn region_names_carry_the_network_namespace() {
        let a = region_path_in(Path::new("/run/wirespeed"), 4026531840, "wg0").unwrap();
        let b = region_path_in(Path::new("/run/wirespeed"), 4026532999, "wg0").unwrap();
        assert_ne!(a, b);
        assert!(region_path_in(Path::new("/x"), 1, "../etc").is_err());
        let own = region_path("wg0").unwrap();
        assert!(own.starts_with(REGION_DIR));
        let ino = netns_inode(Path::new("/proc/self/ns/net")).unwrap();
        assert!(own.to_string_lossy().contains(&ino.to_string()));
    }
}
