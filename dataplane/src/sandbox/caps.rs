//! Capabilities: everything but a given set leaves the calling thread's
//! bounding, ambient, inheritable, permitted and effective sets. Linux keeps
//! capabilities per thread, so this runs before any other thread exists and
//! the threads started later inherit the result.
//!
//! Only raw system calls, no allocation: the tests run it in a forked child.

use std::io;

/// `CAP_NET_BIND_SERVICE`: a listen port below 1024 set while running.
pub const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_RAW`: `SO_MARK` on the sockets of a fwmark set while running
/// (Linux 5.17 and later accept it instead of `CAP_NET_ADMIN`).
pub const CAP_NET_RAW: u32 = 13;
/// `CAP_NET_ADMIN`, `CAP_IPC_LOCK`, `CAP_PERFMON`, `CAP_BPF`: loading and
/// attaching an XDP program and pinning an AF_XDP socket's memory, for a
/// data plane whose uplinks follow its peers: kept by its XDP attacher
/// process, not by the data plane (see [`super::XDP_ATTACH_CAPS`]).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;
/// `CAP_SETPCAP`: needed to shrink the bounding set and lock securebits.
pub const CAP_SETPCAP: u32 = 8;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

// securebits (linux/securebits.h): root gets no capabilities back through
// execve or a uid change, and the settings cannot be undone.
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted, inheritable) sets.
fn get() -> io::Result<(u64, u64, u64)> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget writes two `Data` words for a version 3 header, which
    // is what `d` holds; both pointers are live for the call.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
        join(d[0].inheritable, d[1].inheritable),
    ))
}

/// The calling thread's effective set.
pub fn effective() -> io::Result<u64> {
    get().map(|(e, _, _)| e)
}

/// Sets the calling thread's sets to `keep` (effective and permitted) and
/// nothing inheritable.
fn set(keep: u64) -> io::Result<()> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let word = |shift: u32| Data {
        effective: (keep >> shift) as u32,
        permitted: (keep >> shift) as u32,
        inheritable: 0,
    };
    let d = [word(0), word(32)];
    // SAFETY: capset reads one header and two `Data` words, both live.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the prctl operations used here take integer arguments only.
    let r = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Leaves the calling thread with the capabilities in `keep` (a bit per
/// capability number) and nothing else, in every set. The bounding set and
/// securebits need `CAP_SETPCAP`; without it (a container that withheld it)
/// they stay as they are, which `no_new_privs` and the seccomp filter
/// (no execve) make moot, and `Ok(false)` says so.
pub fn keep_only(keep: u64) -> io::Result<bool> {
    let (eff, perm, _) = get()?;
    let keep = keep & perm;
    let can_setpcap = eff & (1 << CAP_SETPCAP) != 0;
    if can_setpcap {
        prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT
                | SECBIT_NOROOT_LOCKED
                | SECBIT_NO_SETUID_FIXUP
                | SECBIT_NO_SETUID_FIXUP_LOCKED
                | SECBIT_KEEP_CAPS_LOCKED
                | SECBIT_NO_CAP_AMBIENT_RAISE
                | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
        )?;
        // Capability numbers run up to /proc/sys/kernel/cap_last_cap; the
        // kernel answers EINVAL past it.
        for cap in 0..64u32 {
            if keep & (1 << cap) != 0 {
                continue;
            }
            match prctl(libc::PR_CAPBSET_DROP, cap.into()) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
    }
    // Ambient capabilities would survive an execve; there must be none.
    match prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    ) {
        Ok(_) => {}
        // Kernels before 4.3 have no ambient set.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    set(keep)?;
    Ok(can_setpcap)
}

/// Sets `no_new_privs`: no execve of ours can gain privileges again, and an
/// unprivileged process may install a seccomp filter.
pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(|_| ())
}

/// A capability set as `/proc/PID/status` prints it, names for the log.
pub fn names(set: u64) -> String {
    let mut v = Vec::new();
    let mut rest = set;
    for (bit, name) in [
        (CAP_SETPCAP, "cap_setpcap"),
        (CAP_NET_BIND_SERVICE, "cap_net_bind_service"),
        (CAP_NET_ADMIN, "cap_net_admin"),
        (CAP_NET_RAW, "cap_net_raw"),
        (CAP_IPC_LOCK, "cap_ipc_lock"),
        (CAP_PERFMON, "cap_perfmon"),
        (CAP_BPF, "cap_bpf"),
    ] {
        if set & (1 << bit) != 0 {
            v.push(name.to_string());
            rest &= !(1 << bit);
        }
    }
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}
