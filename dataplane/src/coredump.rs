//! Both wirespeed processes hold key material (control the static key and
//! every session's, the data plane the session keys): neither may leave it
//! in a core file, nor let processes of the same user attach to it or read
//! its memory through /proc. Non-dumpable does both; it does not survive
//! execve, so each process sets it itself.

use std::io;

/// Marks the calling process non-dumpable (`PR_SET_DUMPABLE` 0).
pub fn forbid_core_dumps() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no
    // memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the calling process may be dumped (`PR_GET_DUMPABLE`).
pub fn dumpable() -> io::Result<bool> {
    // SAFETY: PR_GET_DUMPABLE only returns a value.
    let r = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child, so the test process itself stays dumpable (and
    /// the other tests' view of it unchanged).
    #[test]
    fn a_process_that_forbids_dumps_is_not_dumpable() {
        assert!(dumpable().unwrap(), "test processes start dumpable");
        // SAFETY: the child only makes raw system calls (prctl, _exit): no
        // allocation or lock another thread of ours might have held.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = match (forbid_core_dumps(), dumpable()) {
                (Ok(()), Ok(false)) => 0,
                _ => 1,
            };
            // SAFETY: ends the forked child without running the parent's
            // exit handlers or destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child we just forked, into a live integer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(dumpable().unwrap());
    }
}
