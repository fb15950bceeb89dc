//! Test-only: the smallest XDP program that feeds an AF_XDP socket, loaded
//! with raw bpf(2) calls so the socket tests depend on neither the real
//! steering program (`dataplane::xdp`) nor a BPF toolchain.
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)      ; ctx->rx_queue_index
//! r1 = map_fd ll              ; the XSKMAP (BPF_PSEUDO_MAP_FD)
//! r3 = 2                      ; XDP_PASS when the map has no socket there
//! call bpf_redirect_map       ; helper 51
//! exit
//! ```
//!
//! It is attached with BPF_LINK_CREATE (attach type BPF_XDP), native mode
//! first, generic (skb) mode as the fallback; closing the link fd detaches
//! it.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

/// XDP_FLAGS_SKB_MODE / XDP_FLAGS_DRV_MODE (linux/if_link.h).
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// bpf(cmd, attr, sizeof attr) returning a new fd.
///
/// # Safety
///
/// `attr` must be the attribute struct the kernel expects for `cmd`, with
/// every pointer in it valid for the duration of the call.
unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: the caller vouches for attr; its exact size is passed, so the
    // kernel reads no further.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful bpf() of these commands returns a new fd that we
    // now own.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// An XSKMAP with a redirecting XDP program attached to one interface.
/// Dropping it detaches the program.
pub(crate) struct TestXdp {
    pub(crate) map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    /// XDP_FLAGS_DRV_MODE or XDP_FLAGS_SKB_MODE: how it was attached.
    pub(crate) mode: u32,
}

impl TestXdp {
    /// Creates the map (4 entries), loads the program and attaches it to
    /// `ifindex` (in the calling thread's network namespace).
    pub(crate) fn attach(ifindex: u32) -> io::Result<TestXdp> {
        let mut mattr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: 4,
            ..Default::default()
        };
        mattr.map_name[..7].copy_from_slice(b"wsk_xsk");
        // SAFETY: a BPF_MAP_CREATE attr with no pointers.
        let map = unsafe { bpf_fd(BPF_MAP_CREATE, &mut mattr) }?;

        let fd = map.as_raw_fd();
        let prog = [
            insn(0x61, 2, 1, 16, 0), // ldxw r2, [r1 + 16]
            insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, fd),
            insn(0, 0, 0, 0, 0), // second half of ld_imm64
            insn(0xb7, 3, 0, 0, XDP_PASS),
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
            insn(0x95, 0, 0, 0, 0),
        ];
        let license = b"GPL\0";
        let mut log = vec![0u8; 65536];
        let mut pattr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            ..Default::default()
        };
        pattr.prog_name[..7].copy_from_slice(b"wsk_xdp");
        // SAFETY: insns, license and log_buf point to live buffers of the
        // stated sizes for the duration of the call.
        let prog_fd = unsafe { bpf_fd(BPF_PROG_LOAD, &mut pattr) }.map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            io::Error::new(
                e.kind(),
                format!(
                    "BPF_PROG_LOAD: {e}: {}",
                    String::from_utf8_lossy(&log[..end])
                ),
            )
        })?;

        let mut last = None;
        for mode in [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] {
            let mut lattr = LinkCreateAttr {
                prog_fd: prog_fd.as_raw_fd() as u32,
                target_ifindex: ifindex,
                attach_type: BPF_XDP,
                flags: mode,
                ..Default::default()
            };
            // SAFETY: a BPF_LINK_CREATE attr with no pointers.
            match unsafe { bpf_fd(BPF_LINK_CREATE, &mut lattr) } {
                Ok(link) => {
                    return Ok(TestXdp {
                        map,
                        _prog: prog_fd,
                        _link: link,
                        mode,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no XDP attach mode")))
    }

    /// XSKMAP[queue] = the AF_XDP socket `xsk`.
    pub(crate) fn set_socket(&self, queue: u32, xsk: RawFd) -> io::Result<()> {
        let key = queue;
        let value = xsk as u32;
        let mut attr = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        // SAFETY: key and value are live u32s for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_ELEM,
                &mut attr as *mut MapElemAttr as *mut libc::c_void,
                mem::size_of::<MapElemAttr>() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
