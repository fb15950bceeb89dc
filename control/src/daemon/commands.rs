//! Control's commands to the data plane's workers, and what happens when
//! every command ring is full. A handshake datagram is dropped then (the
//! peer sends its own again, or our retransmit timer does), but a flush is
//! what sends the packets that waited for a new session, and nothing else
//! asks for it again: flushes (and drops of staged packets, which must not
//! be overtaken by a later flush) are kept and pushed first on the next
//! occasion. Both are counted in the region's header for the metrics
//! endpoint, and logged once per [`LOG_INTERVAL`] rather than once each.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dataplane::shm::events::ToDataplane;
use dataplane::shm::Region;

/// At most one log line about full rings per this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Commands kept for the next try; beyond this they are dropped too.
pub const MAX_BACKLOG: usize = 4096;

#[derive(Default)]
pub struct Commands {
    /// (worker hint, command) that found every ring full, oldest first.
    backlog: VecDeque<(usize, ToDataplane)>,
    /// Since the last log line.
    dropped: u64,
    deferred: u64,
    last_log: Option<Duration>,
}

/// Pushes `rec` on the first worker's ring with room, starting at `hint`
/// (the data plane's workers share staged packets, so any worker will do).
fn push(region: &Region, hint: usize, rec: &[u8]) -> bool {
    let n = region.workers().max(1);
    (0..n).any(|k| region.ring_to_dataplane((hint + k) % n).push(rec))
}

impl Commands {
    /// Sends `cmd` to a worker chosen by `hint`, trying the others if its
    /// ring is full.
    pub fn send(&mut self, region: &Region, hint: usize, cmd: ToDataplane) {
        let keep = !matches!(cmd, ToDataplane::Send { .. });
        if keep && !self.backlog.is_empty() {
            self.retry(region);
            if !self.backlog.is_empty() {
                return self.defer(region, hint, cmd);
            }
        }
        let Some(rec) = cmd.encode() else { return };
        if push(region, hint, &rec) {
            return;
        }
        if keep {
            self.defer(region, hint, cmd);
        } else {
            self.drop_one(region);
        }
    }

    /// Commands that wait for room.
    pub fn pending(&self) -> usize {
        self.backlog.len()
    }

    /// Pushes what waits, oldest first, while there is room.
    pub fn retry(&mut self, region: &Region) {
        while let Some((hint, cmd)) = self.backlog.front() {
            if let Some(rec) = cmd.encode() {
                if !push(region, *hint, &rec) {
                    return;
                }
            }
            self.backlog.pop_front();
        }
    }

    fn defer(&mut self, region: &Region, hint: usize, cmd: ToDataplane) {
        if self.backlog.iter().any(|(_, c)| *c == cmd) {
            return; // already waits: once is enough
        }
        if self.backlog.len() >= MAX_BACKLOG {
            return self.drop_one(region);
        }
        self.backlog.push_back((hint, cmd));
        self.deferred += 1;
        region
            .header()
            .commands_deferred
            .fetch_add(1, Ordering::Relaxed);
    }

    fn drop_one(&mut self, region: &Region) {
        self.dropped += 1;
        region
            .header()
            .commands_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Commands waiting for room.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.backlog.len()
    }

    /// The line to log at `now` about full rings since the last one, if
    /// there is anything to say and the last was LOG_INTERVAL ago.
    pub fn log_line(&mut self, now: Duration) -> Option<String> {
        if self.dropped == 0 && self.deferred == 0 {
            return None;
        }
        if self
            .last_log
            .is_some_and(|t| now.saturating_sub(t) < LOG_INTERVAL)
        {
            return None;
        }
        let line = format!(
            "data plane command rings full: {} commands dropped, {} kept to be sent again{}",
            self.dropped,
            self.deferred,
            match self.last_log {
                Some(t) => format!(" in the last {} s", now.saturating_sub(t).as_secs()),
                None => String::new(),
            }
        );
        self.last_log = Some(now);
        self.dropped = 0;
        self.deferred = 0;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::shm::layout::{RECORD_SIZE, RING_ENTRIES};

    struct TempRegion {
        region: Option<Region>,
        dir: std::path::PathBuf,
    }

    impl Drop for TempRegion {
        fn drop(&mut self) {
            self.region.take();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A region with `workers` workers whose command rings are full.
    fn full_region(tag: &str, workers: u32) -> TempRegion {
        let dir = std::env::temp_dir().join(format!(
            "wirespeed-test-commands-{tag}-{}",
            std::process::id()
        ));
        let region = Region::create_exclusive(&dir.join("wg0.region")).unwrap();
        region.header().workers.store(workers, Ordering::Release);
        let filler = ToDataplane::Send {
            to: "192.0.2.1:1".parse().unwrap(),
            local: None,
            datagram: vec![1; 148],
        }
        .encode()
        .unwrap();
        for w in 0..workers as usize {
            for _ in 0..RING_ENTRIES {
                assert!(region.ring_to_dataplane(w).push(&filler));
            }
        }
        TempRegion {
            region: Some(region),
            dir,
        }
    }

    fn drain(region: &Region, w: usize) -> Vec<ToDataplane> {
        let mut rec = [0u8; RECORD_SIZE];
        let mut got = Vec::new();
        while let Some(n) = region.ring_to_dataplane(w).pop(&mut rec) {
            got.extend(ToDataplane::decode(&rec[..n]));
        }
        got
    }

    #[test]
    fn a_flush_that_finds_the_rings_full_is_sent_later() {
        let t = full_region("flush", 2);
        let r = t.region.as_ref().unwrap();
        let mut c = Commands::default();
        let flush = ToDataplane::Flush {
            peer: 1,
            keepalive: true,
        };
        c.send(r, 1, flush.clone());
        c.send(r, 1, flush.clone());
        c.send(r, 1, ToDataplane::DropStaged { peer: 2 });
        assert_eq!(c.waiting(), 2, "the same flush waits once");
        // Worker 1 reads its ring: the next turn of control's loop sends
        // what waited, in order.
        assert!(drain(r, 1)
            .iter()
            .all(|d| matches!(d, ToDataplane::Send { .. })));
        c.retry(r);
        assert_eq!(c.waiting(), 0);
        assert_eq!(
            drain(r, 1),
            vec![flush, ToDataplane::DropStaged { peer: 2 }]
        );
        let h = r.header();
        assert_eq!(h.commands_deferred.load(Ordering::Relaxed), 2);
        assert_eq!(h.commands_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dropped_datagrams_are_counted_and_logged_once_per_interval() {
        let t = full_region("log", 1);
        let r = t.region.as_ref().unwrap();
        let mut c = Commands::default();
        let t0 = Duration::from_secs(100);
        assert_eq!(c.log_line(t0), None, "nothing to say");
        let send = ToDataplane::Send {
            to: "192.0.2.2:2".parse().unwrap(),
            local: None,
            datagram: vec![2; 92],
        };
        let mut lines = Vec::new();
        for i in 0..1000u64 {
            c.send(r, 0, send.clone());
            lines.extend(c.log_line(t0 + Duration::from_millis(i * 15)));
        }
        assert_eq!(c.waiting(), 0, "datagrams are not kept");
        assert_eq!(r.header().commands_dropped.load(Ordering::Relaxed), 1000);
        // 15 s of drops: a line at the first and one 10 s later.
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("1 commands dropped"), "{}", lines[0]);
        assert!(lines[1].contains("667 commands dropped"), "{}", lines[1]);
    }
}
