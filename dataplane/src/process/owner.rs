//! Whose region a data plane serves: the control that started it (or
//! attached the tenant), or one that re-attached since and put its own pid
//! in the header. When that control dies and nobody takes its place, the
//! region's file (RAM: up to a gigabyte or more at 2^20 peers) is the data
//! plane's to remove; nothing else would.

use std::sync::atomic::Ordering;

use crate::shm::{pid_alive, Region};

pub(crate) struct RegionOwner(u32);

impl RegionOwner {
    pub fn new(region: &Region) -> RegionOwner {
        RegionOwner(control_pid(region))
    }

    /// Follows a control that re-attached: alive, its pid in the header.
    /// Called now and then while serving, so that the last live one is
    /// known when the data plane ends.
    pub fn follow(&mut self, region: &Region) {
        let pid = control_pid(region);
        if pid != self.0 && pid_alive(pid) {
            self.0 = pid;
        }
    }

    /// Whether the region's control is gone for good: the one last known,
    /// and dead (no other took its place meanwhile).
    pub fn gone(&self, region: &Region) -> bool {
        let pid = control_pid(region);
        pid == self.0 && !pid_alive(pid)
    }
}

fn control_pid(region: &Region) -> u32 {
    region.header().control_pid.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::testutil::temp_region;

    fn set(region: &Region, pid: u32) {
        region.header().control_pid.store(pid, Ordering::Release);
    }

    #[test]
    fn a_control_that_re_attached_and_died_leaves_the_region_to_us() {
        let (region, _dir) = temp_region("owner");
        let mut first = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut second = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        set(&region, first.id());
        let mut owner = RegionOwner::new(&region);
        assert!(!owner.gone(&region), "its control is alive");

        // The first control killed, a second re-attached (its pid there).
        first.kill().unwrap();
        first.wait().unwrap();
        set(&region, second.id());
        owner.follow(&region);
        assert!(!owner.gone(&region));

        // The second killed too: nobody else will free the region.
        second.kill().unwrap();
        second.wait().unwrap();
        owner.follow(&region);
        assert!(owner.gone(&region));
    }

    #[test]
    fn a_pid_written_by_another_control_is_not_gone_unseen() {
        let (region, _dir) = temp_region("owner-unseen");
        set(&region, std::process::id());
        let owner = RegionOwner::new(&region);
        // A dead pid the data plane never saw alive: not the control it
        // knows (a region someone else is dealing with).
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        set(&region, c.id());
        assert!(!owner.gone(&region));
    }
}
