//! The host data plane's sandbox. It parses what every tenant's peers
//! send, so it keeps what the per-interface data plane keeps
//! ([`sandbox::KEPT_CAPS`]: binding a tenant's port below 1024, its
//! fwmark), sets `no_new_privs` and enters a seccomp filter
//! ([`sandbox::Sandbox::prepare_host`]) that adds to the per-interface one
//! only what taking tenants for its whole life needs.
//!
//! Capabilities and `no_new_privs` go at the start, before any thread is
//! started; the filter once every worker has started. Attaching uplinks
//! (named or following the peers) is the XDP attacher's, a process forked
//! before this (`super::xdp`): no thread here keeps what that takes.

use std::io;

use crate::sandbox::{self, Sandbox};

use super::super::{drop_and_say, filter_supported, note};

pub struct HostSandbox {
    /// The filter, entered once the workers have started.
    last: Option<Sandbox>,
}

impl HostSandbox {
    /// Prepares the sandbox and drops the capabilities, in the main thread
    /// before any other is started. `dirs`: where files may be removed.
    pub fn start(dirs: &[i32]) -> io::Result<HostSandbox> {
        let want_filter = filter_supported(sandbox::seccomp_wanted_by_env());
        let last = Sandbox::prepare_host(sandbox::KEPT_CAPS, dirs, want_filter)?;
        drop_and_say(&last)?;
        Ok(HostSandbox { last: Some(last) })
    }

    /// For a worker thread as it starts: only what the lanes need.
    pub fn worker() -> io::Result<()> {
        sandbox::caps::keep_only(sandbox::KEPT_CAPS).map(|_| ())
    }

    /// The filter on every thread, once the workers have started. Once.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(sb) = self.last.take() else {
            return Ok(());
        };
        if sb.filters() {
            sb.enter_filter().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("seccomp filter ({e}); WIRESPEED_SECCOMP=off runs without it"),
                )
            })?;
            note("sandbox: seccomp filter on (a system call outside it fails with EPERM)");
        } else if !sandbox::seccomp_wanted_by_env() {
            note("sandbox: no seccomp filter (WIRESPEED_SECCOMP=off)");
        }
        Ok(())
    }
}
