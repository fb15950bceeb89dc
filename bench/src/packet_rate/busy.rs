//! CPU time spent by the threads that move the packets (the data plane's
//! workers, the forwarder's threads), read from /proc schedstat. On a
//! machine where the generators cannot saturate a worker, delivered packets
//! per busy CPU-second is what a worker can do when saturated (a lower
//! bound: an idle-ish worker also pays for waking up).

use std::fs;

/// Threads whose name starts with `prefix`, in process `pid` or its direct
/// children (the data plane runs as a child of the control process).
pub struct Threads {
    pid: u32,
    prefix: String,
}

impl Threads {
    pub fn new(pid: u32, prefix: &str) -> Threads {
        Threads {
            pid,
            prefix: prefix.to_string(),
        }
    }

    /// Total nanoseconds on CPU of the matching threads so far.
    pub fn cpu_ns(&self) -> u64 {
        let mut pids = vec![self.pid];
        pids.extend(children(self.pid));
        let mut total = 0;
        for p in pids {
            let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.filter_map(|e| e.ok()) {
                let dir = t.path();
                let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
                if !comm.starts_with(&self.prefix) {
                    continue;
                }
                let stat = fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
                total += stat
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        total
    }
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // The command name may hold spaces and parentheses: the
                    // fields after it start after the last ')'.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
