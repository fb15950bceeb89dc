//! The host data plane's sandbox. It parses what every tenant's peers
//! send, so it keeps what the per-interface data plane keeps
//! ([`sandbox::KEPT_CAPS`]: binding a tenant's port below 1024, its
//! fwmark), sets `no_new_privs` and enters a seccomp filter
//! ([`sandbox::Sandbox::prepare_host`]) that adds to the per-interface one
//! only what taking tenants for its whole life needs.
//!
//! With uplinks named (WIRESPEED_XDP_IFACES), the XDP programs and AF_XDP
//! sockets are made with the first tenant (they steer its port): until
//! then the supervisor keeps what attaching needs
//! ([`sandbox::XDP_ATTACH_CAPS`]) without a filter, and the workers drop
//! to [`sandbox::KEPT_CAPS`] as they start; once attached (or failed), the
//! supervisor drops to them as well and the filter goes on every thread.

use std::io;

use crate::sandbox::{self, Sandbox};

use super::super::note;

pub struct HostSandbox {
    /// Entered once the XDP stage is over (at once without uplinks).
    last: Option<Sandbox>,
}

impl HostSandbox {
    /// Prepares both stages and enters the first, in the main thread
    /// before any other is started. `dirs`: where files may be removed.
    pub fn start(xdp: bool, dirs: &[i32]) -> io::Result<HostSandbox> {
        let mut want_filter = sandbox::seccomp_wanted_by_env();
        if want_filter && !sandbox::seccomp::supported() {
            note("sandbox: no seccomp filter for this architecture");
            want_filter = false;
        }
        let last = Sandbox::prepare_host(sandbox::KEPT_CAPS, dirs, want_filter)?;
        // CAP_SETPCAP too: the workers, and the supervisor once attached,
        // shrink their bounding sets with it.
        let first_caps = if xdp {
            sandbox::XDP_ATTACH_CAPS | (1 << sandbox::caps::CAP_SETPCAP)
        } else {
            sandbox::KEPT_CAPS
        };
        let first = Sandbox::prepare_host(first_caps, dirs, false)?;
        let dropped = first
            .drop_privileges()
            .map_err(|e| io::Error::new(e.kind(), format!("dropping capabilities: {e}")))?;
        if !dropped.bounding {
            note("sandbox: no CAP_SETPCAP, the capability bounding set stays as it was");
        }
        let kept = sandbox::caps::effective()?;
        note(&format!(
            "sandbox: capabilities left: {}; no_new_privs set",
            sandbox::caps::names(kept)
        ));
        if xdp {
            note(
                "sandbox: the XDP programs and AF_XDP sockets of the uplinks come with the \
                 first tenant: until then the supervisor keeps the capabilities to attach \
                 them, and the seccomp filter waits",
            );
        }
        Ok(HostSandbox { last: Some(last) })
    }

    /// For a worker thread as it starts: only what the lanes need.
    pub fn worker() -> io::Result<()> {
        sandbox::caps::keep_only(sandbox::KEPT_CAPS).map(|_| ())
    }

    /// The last stage: the supervisor's capabilities down to the workers',
    /// the filter on every thread. Once.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(sb) = self.last.take() else {
            return Ok(());
        };
        let before = sandbox::caps::effective()?;
        sb.drop_privileges()
            .map_err(|e| io::Error::new(e.kind(), format!("dropping capabilities: {e}")))?;
        let kept = sandbox::caps::effective()?;
        if kept != before {
            note(&format!(
                "sandbox: the XDP stage is over; capabilities left: {}",
                sandbox::caps::names(kept)
            ));
        }
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
