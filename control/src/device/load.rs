//! "Under load": the device counts handshake messages per second and, above
//! a threshold, demands cookies. Like the kernel it stays in that state for a
//! second after the rate falls, so an attacker cannot flip it per packet.

use core::time::Duration;

const WINDOW: Duration = Duration::from_secs(1);

pub struct LoadTracker {
    threshold: u32,
    window_start: Duration,
    count: u32,
    last_under_load: Option<Duration>,
}

impl LoadTracker {
    pub fn new(threshold: u32) -> Self {
        LoadTracker {
            threshold,
            window_start: Duration::ZERO,
            count: 0,
            last_under_load: None,
        }
    }

    /// Counts one handshake message; returns whether the device is under load.
    pub fn record(&mut self, now: Duration) -> bool {
        if now.saturating_sub(self.window_start) >= WINDOW {
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.threshold {
            self.last_under_load = Some(now);
        }
        self.is_under_load(now)
    }

    pub fn is_under_load(&self, now: Duration) -> bool {
        matches!(self.last_under_load, Some(t) if now.saturating_sub(t) < WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_then_one_second_hysteresis() {
        let mut l = LoadTracker::new(3);
        let t = Duration::from_secs(10);
        assert!(!l.record(t));
        assert!(!l.record(t));
        assert!(!l.record(t));
        assert!(l.record(t));
        assert!(l.is_under_load(t + Duration::from_millis(999)));
        assert!(!l.is_under_load(t + WINDOW));
    }
}
