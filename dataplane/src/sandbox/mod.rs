//! Least privilege for the data plane once it is set up. It parses
//! whatever the network sends, so after opening its TUN queues, sockets
//! and XDP programs it keeps only the capabilities its steady state uses
//! (`CAP_NET_BIND_SERVICE` and `CAP_NET_RAW`, for rebinding on a new listen
//! port or fwmark), sets `no_new_privs`, and enters a seccomp filter of the
//! system calls its loops make. With fewer capabilities than control (the
//! kernel's ptrace check) and control non-dumpable, it can neither ptrace
//! control nor read its memory through `/proc/PID/mem` or
//! `process_vm_readv`; the filter refuses those calls and every `open`
//! besides. `WIRESPEED_SECCOMP=off` leaves the filter out, for debugging.

pub mod caps;
mod policy;
pub mod seccomp;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::RawFd;

/// The capabilities the data plane keeps (bits by capability number).
pub const KEPT_CAPS: u64 = (1 << caps::CAP_NET_BIND_SERVICE) | (1 << caps::CAP_NET_RAW);

/// What the XDP attacher keeps (`process::attacher`): the process, forked
/// from the data plane before its sandbox, that loads and attaches XDP
/// programs and makes AF_XDP sockets for the uplinks that come at run time
/// (AF_XDP with the uplinks following the peers), so that the data plane
/// itself keeps only [`KEPT_CAPS`] and its filter. It has no seccomp
/// filter (attaching loads programs, creates maps and sockets and reads
/// /sys), but parses nothing from the network, and without
/// `CAP_SYS_PTRACE`, `CAP_SYS_ADMIN` or `CAP_DAC_*`, with fewer
/// capabilities than control, it cannot reach control's memory either.
pub const XDP_ATTACH_CAPS: u64 = KEPT_CAPS
    | (1 << caps::CAP_NET_ADMIN)
    | (1 << caps::CAP_IPC_LOCK)
    | (1 << caps::CAP_PERFMON)
    | (1 << caps::CAP_BPF);

/// Whether `WIRESPEED_SECCOMP` asks for the filter (anything but `off`).
pub fn seccomp_wanted_by_env() -> bool {
    !matches!(
        std::env::var("WIRESPEED_SECCOMP").as_deref(),
        Ok("off" | "0" | "no" | "false")
    )
}

/// The sandbox, prepared (every allocation done) before it is entered, so
/// that entering it makes system calls only.
pub struct Sandbox {
    keep: u64,
    filter: Option<Vec<libc::sock_filter>>,
}

/// What [`Sandbox::drop_privileges`] could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The bounding set was shrunk too (it needs `CAP_SETPCAP`).
    pub bounding: bool,
}

impl Sandbox {
    /// `region_dir`: the directory the data plane may remove its region
    /// from; `with_filter`: whether to build the seccomp filter at all.
    pub fn prepare(keep: u64, region_dir: Option<RawFd>, with_filter: bool) -> io::Result<Sandbox> {
        let filter = if with_filter {
            let pid = std::process::id() as i32;
            Some(seccomp::build(&policy::rules(region_dir, pid))?)
        } else {
            None
        };
        Ok(Sandbox { keep, filter })
    }

    /// The host data plane's sandbox ([`policy::host_rules`]): `dirs` are
    /// the directories it may remove files from.
    pub fn prepare_host(keep: u64, dirs: &[RawFd], with_filter: bool) -> io::Result<Sandbox> {
        let filter = if with_filter {
            let pid = std::process::id() as i32;
            Some(seccomp::build(&policy::host_rules(dirs, pid))?)
        } else {
            None
        };
        Ok(Sandbox { keep, filter })
    }

    /// Whether entering installs a seccomp filter.
    pub fn filters(&self) -> bool {
        self.filter.is_some()
    }

    /// Drops every capability but the kept ones and sets `no_new_privs`,
    /// for the calling thread and the threads it starts afterwards (so: in
    /// the main thread, before any other is started).
    pub fn drop_privileges(&self) -> io::Result<Dropped> {
        let bounding = caps::keep_only(self.keep)?;
        caps::set_no_new_privs()?;
        Ok(Dropped { bounding })
    }

    /// Installs the seccomp filter on every thread of the process; after
    /// [`drop_privileges`](Self::drop_privileges) (which sets the
    /// `no_new_privs` the kernel requires).
    pub fn enter_filter(&self) -> io::Result<()> {
        match &self.filter {
            Some(f) => seccomp::install(f),
            None => Ok(()),
        }
    }

    /// Both steps, for a process with one thread.
    pub fn enter(&self) -> io::Result<Dropped> {
        let d = self.drop_privileges()?;
        self.enter_filter()?;
        Ok(d)
    }
}
