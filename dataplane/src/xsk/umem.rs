//! The UMEM (the packet memory an AF_XDP socket shares with the kernel) and
//! the allocator of its frames.
//!
//! One anonymous mapping of `frames * frame_size` bytes, registered with
//! `XDP_UMEM_REG` in aligned-chunk mode: frame `i` starts at UMEM address
//! `i * frame_size`, and any address inside a frame names that frame (its
//! base is the address with the low bits cleared). The kernel pins the pages
//! at registration, so they stay put while it reads and writes them.
//!
//! [`FrameAlloc`] is the free list of frame base addresses. It is sized
//! once, for every frame, so pushing a frame back never allocates, and a
//! bitmap of which frames are free makes a double free or a foreign address
//! a refused call (counted by the socket) instead of a corrupted list.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};

/// Frame sizes the UMEM accepts: the kernel requires a power of two from
/// 2,048 bytes to the page size in aligned mode.
pub const FRAME_SIZES: [u32; 2] = [2048, 4096];

/// Most frames one UMEM may have (4 GiB of 4 KiB frames would be 2^20).
pub const MAX_FRAMES: u32 = 1 << 20;

/// The mapped, registered packet memory of one socket.
#[derive(Debug)]
pub(crate) struct Umem {
    area: NonNull<u8>,
    len: usize,
    frame_size: u32,
    frames: u32,
}

// SAFETY: the Umem exclusively owns its mapping; it is accessed only through
// &self/&mut self (and by the kernel), so it may move between threads.
unsafe impl Send for Umem {}

impl Umem {
    /// Maps `frames` frames of `frame_size` bytes (validated by the caller
    /// with [`check_geometry`]).
    pub(crate) fn new(frames: u32, frame_size: u32) -> io::Result<Umem> {
        check_geometry(frames, frame_size)?;
        let len = frames as usize * frame_size as usize;
        map_area(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, None)
            .map(|area| Umem::with(area, len, frames, frame_size))
    }

    /// A UMEM in a fresh memory file, for a socket made in one process and
    /// used in another ([`super::XskHandover`]): the process that registers
    /// it pins the file's pages, and the one that maps the same file sees
    /// the very pages the kernel reads and writes. Sealed against resizing:
    /// a file shrunk under the mapping would fault in the workers.
    pub(crate) fn new_shared(frames: u32, frame_size: u32) -> io::Result<(Umem, OwnedFd)> {
        check_geometry(frames, frame_size)?;
        let len = frames as usize * frame_size as usize;
        // SAFETY: a NUL-terminated name; the result is checked below.
        let raw = unsafe {
            libc::memfd_create(
                c"wirespeed-umem".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain calls on the descriptor just created.
        let sized = unsafe {
            libc::ftruncate(raw, len as libc::off_t) == 0
                && libc::fcntl(raw, libc::F_ADD_SEALS, SEALS | libc::F_SEAL_SEAL) == 0
        };
        if !sized {
            return Err(io::Error::last_os_error());
        }
        let area = map_area(len, libc::MAP_SHARED, Some(raw))?;
        Ok((Umem::with(area, len, frames, frame_size), fd))
    }

    /// Maps the memory file of a UMEM that another process made and
    /// registered (see [`Umem::new_shared`]). The file must be exactly the
    /// geometry's size and sealed against resizing.
    pub(crate) fn map_shared(fd: BorrowedFd<'_>, frames: u32, frame_size: u32) -> io::Result<Umem> {
        check_geometry(frames, frame_size)?;
        let len = frames as usize * frame_size as usize;
        let raw = fd.as_raw_fd();
        // SAFETY: stat is plain integers (all-zero is valid) and writable.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a live descriptor and a writable stat.
        if unsafe { libc::fstat(raw, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: F_GET_SEALS takes no argument; -1 (an error) is checked.
        let seals = unsafe { libc::fcntl(raw, libc::F_GET_SEALS) };
        if st.st_size as u64 != len as u64 || seals < 0 || seals & SEALS != SEALS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "UMEM file of {} bytes (seals {seals:#x}), expected {len} bytes sealed \
                     against resizing",
                    st.st_size
                ),
            ));
        }
        map_area(len, libc::MAP_SHARED, Some(raw))
            .map(|area| Umem::with(area, len, frames, frame_size))
    }

    fn with(area: NonNull<u8>, len: usize, frames: u32, frame_size: u32) -> Umem {
        Umem {
            area,
            len,
            frame_size,
            frames,
        }
    }

    /// Registers the area with the AF_XDP socket `fd` (XDP_UMEM_REG).
    pub(crate) fn register(&self, fd: RawFd) -> io::Result<()> {
        let reg = libc::xdp_umem_reg {
            addr: self.area.as_ptr() as u64,
            len: self.len as u64,
            chunk_size: self.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        // SAFETY: reg is a valid xdp_umem_reg for the duration of the call
        // and its size is passed; it describes memory this Umem owns and
        // keeps mapped until after the socket is closed (XskSocket drops
        // its fd before its Umem).
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_XDP,
                libc::XDP_UMEM_REG,
                (&reg as *const libc::xdp_umem_reg).cast(),
                std::mem::size_of::<libc::xdp_umem_reg>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    pub(crate) fn frames(&self) -> u32 {
        self.frames
    }

    /// Base address of the frame containing `addr`, if `addr` is inside the
    /// UMEM.
    pub(crate) fn frame_base(&self, addr: u64) -> Option<u64> {
        if addr >= self.len as u64 {
            return None;
        }
        Some(addr & !u64::from(self.frame_size - 1))
    }

    /// Splits a descriptor (`addr`, `len`) into its frame base and the
    /// offset of `addr` in that frame, if all `len` bytes lie in one frame.
    pub(crate) fn locate(&self, addr: u64, len: u32) -> Option<(u64, u32)> {
        let base = self.frame_base(addr)?;
        let off = (addr - base) as u32;
        if u64::from(off) + u64::from(len) > u64::from(self.frame_size) {
            return None;
        }
        Some((base, off))
    }

    /// The whole frame at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be a frame base inside the UMEM (from [`frame_base`] or
    /// [`locate`]) that the kernel does not own right now (not in the fill
    /// or tx ring, not awaiting completion), and no other slice of that
    /// frame may be live.
    ///
    /// [`frame_base`]: Umem::frame_base
    /// [`locate`]: Umem::locate
    pub(crate) unsafe fn frame_mut(&mut self, base: u64) -> &mut [u8] {
        // SAFETY: base + frame_size <= len (base is a frame base inside the
        // area and the area is a whole number of frames); exclusivity and
        // kernel non-ownership are the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.area.as_ptr().add(base as usize),
                self.frame_size as usize,
            )
        }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: area/len are what mmap returned; no slice into the area
        // outlives the Umem (they borrow it). The kernel holds its own page
        // pins until it releases the socket, so unmapping does not pull
        // memory from under it.
        unsafe {
            libc::munmap(self.area.as_ptr().cast(), self.len);
        }
    }
}

/// Seals a shared UMEM's file carries: its size is fixed.
const SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// Maps `len` bytes, readable and writable, populated: anonymous memory
/// (`fd` None) or the start of a memory file.
fn map_area(len: usize, flags: i32, fd: Option<RawFd>) -> io::Result<NonNull<u8>> {
    // SAFETY: a new mapping where the kernel chooses, overlapping no memory
    // of ours. Of a memory file, it shares pages only with the kernel: the
    // process that made the UMEM dropped its own view once it had
    // registered it (XskHandover). The result is checked below.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_POPULATE,
            fd.unwrap_or(-1),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: NULL"))
}

/// Checks a UMEM geometry: a frame size from [`FRAME_SIZES`] and 2 to
/// [`MAX_FRAMES`] frames.
pub(crate) fn check_geometry(frames: u32, frame_size: u32) -> io::Result<()> {
    if !FRAME_SIZES.contains(&frame_size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("AF_XDP frame size {frame_size}: must be 2048 or 4096"),
        ));
    }
    if !(2..=MAX_FRAMES).contains(&frames) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("AF_XDP frame count {frames}: must be 2 to {MAX_FRAMES}"),
        ));
    }
    Ok(())
}

/// Free list of frame base addresses, fixed capacity, LIFO (the frame freed
/// last, still warm in cache, is handed out first).
#[derive(Debug)]
pub struct FrameAlloc {
    free: Vec<u64>,
    /// Bit `i` set: frame `i` is on the free list.
    is_free: Vec<u64>,
    frame_size: u32,
    frames: u32,
}

impl FrameAlloc {
    /// An allocator over `frames` frames of `frame_size` bytes (a power of
    /// two), all free; [`alloc`] hands out frame 0 first.
    ///
    /// [`alloc`]: FrameAlloc::alloc
    pub fn new(frames: u32, frame_size: u32) -> FrameAlloc {
        let frame_size = frame_size
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(1 << 31);
        let n = frames as usize;
        let mut a = FrameAlloc {
            free: Vec::with_capacity(n),
            is_free: vec![0; n.div_ceil(64)],
            frame_size,
            frames,
        };
        for i in (0..frames).rev() {
            a.free(u64::from(i) * u64::from(frame_size));
        }
        a
    }

    /// Takes a free frame's base address.
    pub fn alloc(&mut self) -> Option<u64> {
        let addr = self.free.pop()?;
        let (word, bit) = self.slot(addr)?;
        self.is_free[word] &= !bit;
        Some(addr)
    }

    /// Gives back the frame containing `addr` (any address inside it).
    /// False, and nothing changes, when `addr` is outside the UMEM or the
    /// frame is already free.
    pub fn free(&mut self, addr: u64) -> bool {
        let base = addr & !u64::from(self.frame_size - 1);
        let Some((word, bit)) = self.slot(base) else {
            return false;
        };
        if self.is_free[word] & bit != 0 || self.free.len() >= self.free.capacity() {
            return false;
        }
        self.is_free[word] |= bit;
        self.free.push(base);
        true
    }

    /// Frames on the free list.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Frames the allocator manages.
    pub fn capacity(&self) -> u32 {
        self.frames
    }

    fn slot(&self, base: u64) -> Option<(usize, u64)> {
        let i = base / u64::from(self.frame_size);
        if i >= u64::from(self.frames) {
            return None;
        }
        let i = i as usize;
        Some((i / 64, 1u64 << (i % 64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_hands_out_every_frame_once() {
        let mut a = FrameAlloc::new(100, 2048);
        assert_eq!(a.len(), 100);
        let got: Vec<u64> = std::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got.len(), 100);
        assert_eq!(got[0], 0);
        for (i, addr) in got.iter().enumerate() {
            assert_eq!(*addr, i as u64 * 2048);
        }
        assert!(a.is_empty());
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn free_rejects_double_free_and_foreign_addresses() {
        let mut a = FrameAlloc::new(4, 4096);
        let f = a.alloc().unwrap();
        assert!(!a.free(4096), "already free");
        assert!(!a.free(4 * 4096), "outside the UMEM");
        assert!(!a.free(u64::MAX));
        assert!(a.free(f + 100), "address inside the frame frees the frame");
        assert!(!a.free(f));
        assert_eq!(a.len(), 4);
        assert_eq!(a.alloc(), Some(f), "LIFO");
    }

    #[test]
    fn never_grows_past_capacity() {
        let mut a = FrameAlloc::new(3, 2048);
        let cap = a.free.capacity();
        for _ in 0..10 {
            let xs: Vec<u64> = std::iter::from_fn(|| a.alloc()).collect();
            for x in xs.iter().rev() {
                assert!(a.free(*x));
                assert!(!a.free(*x));
            }
        }
        assert_eq!(a.free.capacity(), cap);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn geometry_checks() {
        assert!(check_geometry(2, 2048).is_ok());
        assert!(check_geometry(4096, 4096).is_ok());
        assert!(check_geometry(1, 2048).is_err());
        assert!(check_geometry(0, 2048).is_err());
        assert!(check_geometry(64, 1024).is_err());
        assert!(check_geometry(64, 3000).is_err());
        assert!(check_geometry(MAX_FRAMES + 1, 2048).is_err());
    }

    #[test]
    fn umem_locates_descriptors() {
        let u = Umem::new(4, 2048).unwrap();
        assert_eq!(u.locate(0, 2048), Some((0, 0)));
        assert_eq!(u.locate(2048 + 256, 100), Some((2048, 256)));
        assert_eq!(u.locate(2048 + 256, 1793), None, "crosses a frame");
        assert_eq!(u.locate(4 * 2048, 1), None, "outside");
        assert_eq!(u.locate(u64::MAX, u32::MAX), None);
        assert_eq!(u.frame_base(3 * 2048 + 5), Some(3 * 2048));
    }
}
