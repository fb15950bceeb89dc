//! The shared-memory contract between the control process and the data
//! plane (see `layout.rs` for the map). Control writes session keys, peer
//! endpoints and AllowedIPs; the data plane reads them on every packet and
//! writes counters (per peer, per worker, per uplink: `stats.rs`); event
//! rings carry everything else both ways.
//!
//! The region is a file under /dev/shm so a restarted process of either kind
//! re-attaches to it and sessions survive.

pub mod allowed;
pub mod events;
pub mod keys;
pub mod layout;
pub mod peers;
pub mod ring;
mod seqlock;
pub mod stats;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use layout::*;

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

/// Where the region of interface `iface` lives.
pub fn default_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/wirespeed-{iface}"))
}

/// A mapping of the whole region.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    _file: File,
}

// SAFETY: every field the region exposes is an atomic, or an UnsafeCell
// guarded by a documented lock protocol, so sharing the mapping between
// threads is as safe as sharing it between processes.
unsafe impl Send for Region {}
// SAFETY: see Send.
unsafe impl Sync for Region {}

impl Region {
    /// Creates (or truncates and re-initialises) the region at `path`.
    pub fn create(path: &Path) -> io::Result<Region> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(TOTAL_SIZE as u64)?;
        let r = Self::map(file)?;
        let h = r.header();
        h.version.store(VERSION, Ordering::Relaxed);
        h.key_slots.store(KEY_SLOTS as u32, Ordering::Relaxed);
        h.peer_slots.store(PEER_SLOTS as u32, Ordering::Relaxed);
        h.allowed_max.store(ALLOWED_MAX as u32, Ordering::Relaxed);
        h.max_workers.store(MAX_WORKERS as u32, Ordering::Relaxed);
        h.ring_entries.store(RING_ENTRIES as u32, Ordering::Relaxed);
        h.total_size.store(TOTAL_SIZE as u64, Ordering::Relaxed);
        for i in 0..PEER_SLOTS {
            r.peer(i).current_key.store(NO_SLOT, Ordering::Relaxed);
        }
        // Magic last: a reader that sees it sees an initialised region.
        h.magic.store(MAGIC, Ordering::Release);
        Ok(r)
    }

    /// Maps an existing region, checking magic, version and size.
    pub fn open(path: &Path) -> io::Result<Region> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() != TOTAL_SIZE as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory region has the wrong size",
            ));
        }
        let r = Self::map(file)?;
        let h = r.header();
        if h.magic.load(Ordering::Acquire) != MAGIC || h.version.load(Ordering::Relaxed) != VERSION
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory region has another magic or layout version",
            ));
        }
        Ok(r)
    }

    fn map(file: File) -> io::Result<Region> {
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
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p as *mut u8).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Region {
            base,
            len: TOTAL_SIZE,
            _file: file,
        })
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

    /// Key slot `i` (`i < KEY_SLOTS`).
    pub fn key(&self, i: usize) -> &KeySlot {
        assert!(i < KEY_SLOTS, "key slot out of range");
        // SAFETY: in range and 64-aligned by the layout's asserts.
        unsafe { self.at(OFF_KEYS + i * core::mem::size_of::<KeySlot>()) }
    }

    /// Peer slot `i` (`i < PEER_SLOTS`).
    pub fn peer(&self, i: usize) -> &PeerSlot {
        assert!(i < PEER_SLOTS, "peer slot out of range");
        // SAFETY: in range and 64-aligned by the layout's asserts.
        unsafe { self.at(OFF_PEERS + i * core::mem::size_of::<PeerSlot>()) }
    }

    pub fn allowed_header(&self) -> &AllowedHeader {
        // SAFETY: the AllowedHeader sits at OFF_ALLOWED, 64 bytes reserved.
        unsafe { self.at(OFF_ALLOWED) }
    }

    pub fn allowed_entry(&self, i: usize) -> &AllowedEntry {
        assert!(i < ALLOWED_MAX, "allowed entry out of range");
        // SAFETY: in range; entries are 8-aligned after the 64-byte header.
        unsafe { self.at(OFF_ALLOWED + 64 + i * core::mem::size_of::<AllowedEntry>()) }
    }

    /// What control publishes about the peer in peer slot `i` (`i < PEER_SLOTS`).
    pub fn peer_info(&self, i: usize) -> &PeerInfo {
        assert!(i < PEER_SLOTS, "peer slot out of range");
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
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into
        // it outlives self because every accessor borrows self.
        unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn temp_region(tag: &str) -> (Region, PathBuf) {
        let path =
            std::env::temp_dir().join(format!("wirespeed-test-{tag}-{}", std::process::id()));
        (Region::create(&path).unwrap(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_open_sees_the_same_memory() {
        let (a, path) = testutil::temp_region("open");
        let b = Region::open(&path).unwrap();
        a.header().listen_port.store(51820, Ordering::Relaxed);
        assert_eq!(b.header().listen_port.load(Ordering::Relaxed), 51820);
        assert_eq!(b.peer(7).current_key.load(Ordering::Relaxed), NO_SLOT);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn open_refuses_foreign_files() {
        let path =
            std::env::temp_dir().join(format!("wirespeed-test-foreign-{}", std::process::id()));
        std::fs::write(&path, b"not a region").unwrap();
        assert!(Region::open(&path).is_err());
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(TOTAL_SIZE as u64).unwrap();
        assert!(Region::open(&path).is_err(), "right size, no magic");
        std::fs::remove_file(path).unwrap();
    }
}
