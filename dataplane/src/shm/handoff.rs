//! A planned hand-over from one control process to the next (a restart of
//! the service): the leaving control marks the region, and the data plane
//! then waits for a successor even when it holds no live session, which it
//! would not do for a control that simply died (nobody may come then, and
//! the interface would linger for nothing). The wait is bounded: a detached
//! interface nobody re-attaches to goes away like a dead control's.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Region;
use crate::consts::REJECT_AFTER_TIME;

/// How long after a detach the data plane waits for a new control, live
/// sessions or not: as long as a session could have lived.
pub const DETACH_GRACE: Duration = REJECT_AFTER_TIME;

impl Region {
    /// Control, leaving on purpose at `now_ns` (CLOCK_MONOTONIC): its data
    /// plane is to wait for the next control.
    pub fn mark_detached(&self, pid: u32, now_ns: u64) {
        let h = self.header();
        // The grace counts from the last sign of life, so that goes first.
        h.control_heartbeat_ns.store(now_ns, Ordering::Relaxed);
        h.control_detached.store(pid, Ordering::Release);
    }

    /// Control, re-attaching: the hand-over is complete.
    pub fn clear_detached(&self) {
        self.header().control_detached.store(0, Ordering::Release);
    }

    /// Data plane: whether the control named in the region left on purpose
    /// less than [`DETACH_GRACE`] before `now_ns`. A mark left by an earlier
    /// control (another pid than the current one) does not count.
    pub fn awaits_reattach(&self, now_ns: u64) -> bool {
        let h = self.header();
        let detached = h.control_detached.load(Ordering::Acquire);
        let since = h.control_heartbeat_ns.load(Ordering::Relaxed);
        detached != 0
            && detached == h.control_pid.load(Ordering::Acquire)
            && now_ns.saturating_sub(since) < DETACH_GRACE.as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_region;
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_detach_is_awaited_for_the_grace_and_no_longer() {
        let (r, _dir) = temp_region("handoff");
        r.header().control_pid.store(4242, Ordering::Relaxed);
        let t = 1_000 * SEC;
        assert!(!r.awaits_reattach(t), "a fresh region: no detach");
        r.mark_detached(4242, t);
        assert!(r.awaits_reattach(t));
        assert!(r.awaits_reattach(t + DETACH_GRACE.as_nanos() as u64 - 1));
        assert!(!r.awaits_reattach(t + DETACH_GRACE.as_nanos() as u64));
        // A clock read before the mark (another thread) is no reason to quit.
        assert!(r.awaits_reattach(t - SEC));
    }

    #[test]
    fn a_new_control_ends_the_wait() {
        let (r, _dir) = temp_region("handoff-new");
        r.header().control_pid.store(4242, Ordering::Relaxed);
        r.mark_detached(4242, 10 * SEC);
        // What a re-attaching control writes, in its order.
        r.header().control_pid.store(4343, Ordering::Release);
        assert!(!r.awaits_reattach(10 * SEC), "the mark names another pid");
        r.clear_detached();
        assert_eq!(r.header().control_detached.load(Ordering::Relaxed), 0);
        // And if the new control dies unannounced, nothing is awaited.
        assert!(!r.awaits_reattach(11 * SEC));
    }
}
