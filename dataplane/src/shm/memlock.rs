//! What to tell the operator when the kernel refuses to lock key slots:
//! said once per process, with the limit in force and how to raise it, since
//! a per-slot warning would repeat for each of 100,000 sessions and still
//! not say what to change.

use std::io;

/// The soft RLIMIT_MEMLOCK in bytes, `None` when unlimited or unknown.
fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (r == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The one line for a refused mlock (`err`) while the key slots of the
/// current capacity take `capacity_bytes`.
pub(super) fn memlock_advice(err: &io::Error, capacity_bytes: usize) -> String {
    memlock_advice_with(err, memlock_limit(), capacity_bytes as u64)
}

fn memlock_advice_with(err: &io::Error, limit: Option<u64>, capacity_bytes: u64) -> String {
    let limit = match limit {
        Some(l) => mib(l),
        None => "unlimited".to_string(),
    };
    format!(
        "wirespeed: cannot lock more session keys in memory ({err}; RLIMIT_MEMLOCK is {limit}, \
         the key slots of this capacity take up to {}): keys beyond the limit may be swapped out. \
         Raise the limit (LimitMEMLOCK=infinity in the systemd unit, `ulimit -l unlimited`) \
         or grant CAP_IPC_LOCK. Said once.",
        mib(capacity_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_limit_and_the_setting_to_change() {
        let e = io::Error::from_raw_os_error(libc::ENOMEM);
        let line = memlock_advice_with(&e, Some(8 << 20), 64 << 20);
        assert!(line.contains("RLIMIT_MEMLOCK is 8.0 MiB"), "{line}");
        assert!(line.contains("up to 64.0 MiB"), "{line}");
        assert!(line.contains("LimitMEMLOCK=infinity"), "{line}");
        assert!(!line.contains('\n'), "one line");
        assert!(memlock_advice_with(&e, None, 0).contains("is unlimited"));
    }

    #[test]
    fn reads_the_limit_of_this_process() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        let line = memlock_advice(&e, 1 << 20);
        assert!(line.contains("RLIMIT_MEMLOCK is "), "{line}");
    }
}
