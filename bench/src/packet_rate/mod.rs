//! The packet-rate bench: transport messages of a fixed size pushed into the
//! data plane's workers as fast as a generator can send them, measured where
//! they come out (the TUN device's receive counter), next to the same
//! packets merely forwarded from AF_XDP to the TUN with no crypto (the I/O
//! ceiling). `bench/scripts/packet-rate.sh` runs it in namespaces; the
//! crypto ceiling comes from `openssl speed` there.

pub mod busy;
pub mod counter;
pub mod forward;
pub mod generate;
pub mod packets;
pub mod uapi;

use std::os::fd::AsRawFd;

/// Pins the calling thread to `cpu` (ignored when it does not exist).
pub fn pin(cpu: usize) {
    if let Some(id) = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.id == cpu)
    {
        core_affinity::set_for_current(id);
    }
}

/// Moves the calling thread into the network namespace at `path` (threads
/// it spawns afterwards start there too).
pub fn enter_netns(path: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns on a namespace fd we own; it changes only this thread's
    // network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
