//! The data plane child process: started from our own executable in
//! `--dataplane` mode (a fresh address space: it never sees the static
//! key), watched, and restarted if it dies. A start that fails (the binary
//! gone during an upgrade, the region refused, the port taken) is retried
//! with back-off, never fatal: the interface and its UAPI socket stay, and
//! traffic resumes with the keys in shared memory once a start succeeds.
//! After a control restart the data plane is not our child but our
//! predecessor's; it is watched through a pidfd instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dataplane::shm::layout::MAX_WORKERS;
use dataplane::shm::Region;
use dataplane::tun::TunQueue;
use dataplane::tunns;

use super::{pidfd, LogLevel};

/// First wait before starting a data plane again after a failure.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A data plane that ran this long died of something new: restart it at
/// once, and the back-off starts over.
const STABLE: Duration = Duration::from_secs(10);

/// 0.1 s, doubling on each failure up to 5 s; back to 0.1 s once a data
/// plane has run for a while.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    /// The wait before the next try, after a failure.
    pub fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

enum Running {
    /// Started by us.
    Child(Child),
    /// Left running by the control process before us.
    Adopted { pid: u32, pidfd: OwnedFd },
    /// Dead; another start is due at this time.
    Down { retry_at: Instant },
}

/// What [`DataplaneChild::supervise`] saw or did, for the log.
#[derive(Debug)]
pub enum Supervision {
    Exited(String),
    Restarted(u32),
    StartFailed { error: String, retry_in: Duration },
}

pub struct DataplaneChild {
    running: Running,
    workers: usize,
    backend: String,
    /// Passed on to the data plane (its own lines and aya's).
    log: LogLevel,
    last_start: Instant,
    backoff: Backoff,
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One queue per worker for a new data plane, opened where the interface
/// lives now (it may have been moved into another namespace, where the
/// data plane could not open it by name), as descriptors it inherits.
fn open_queues(tun: &TunQueue, workers: usize) -> io::Result<Vec<OwnedFd>> {
    (0..workers.clamp(1, MAX_WORKERS))
        .map(|_| {
            let q = tunns::open_sibling(tun)
                .map_err(|e| io::Error::new(e.kind(), format!("TUN queue: {e}")))?;
            inheritable(q.as_fd())
        })
        .collect()
}

/// A copy of `fd` that a started process inherits (F_DUPFD leaves
/// close-on-exec off); the original stays close-on-exec.
fn inheritable(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD on a descriptor we hold returns a new one or -1.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

// One parameter per argument of the data plane's command line.
#[allow(clippy::too_many_arguments)]
fn start(
    iface: &str,
    shm: &Path,
    workers: usize,
    backend: &str,
    log: LogLevel,
    wake_fd: i32,
    region: &Region,
    tun: &TunQueue,
) -> io::Result<Child> {
    let exe = std::env::current_exe()?;
    // Closed here once the child has its copies: an attached queue nobody
    // reads would swallow the flows the kernel steers to it.
    let queues = open_queues(tun, workers)?;
    let list = queues
        .iter()
        .map(|q| q.as_raw_fd().to_string())
        .collect::<Vec<_>>()
        .join(",");
    region.header().dataplane_ready.store(0, Ordering::Release);
    let spawned = Command::new(exe)
        .arg("--dataplane")
        .arg(iface)
        .arg(shm)
        .arg(workers.to_string())
        .arg(wake_fd.to_string())
        .arg(backend)
        .arg(list)
        .arg(log.name())
        .spawn();
    drop(queues);
    let mut child = spawned?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.header().dataplane_ready.load(Ordering::Acquire) != child.id() {
        if let Some(st) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "data plane failed to start: {st}"
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("data plane did not become ready"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

impl DataplaneChild {
    // One parameter per argument of the data plane's command line.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        iface: &str,
        shm: &Path,
        workers: usize,
        backend: &str,
        log: LogLevel,
        wake_fd: i32,
        region: &Region,
        tun: &TunQueue,
    ) -> io::Result<Self> {
        let workers = if workers == 0 {
            default_workers()
        } else {
            workers
        };
        let child = start(iface, shm, workers, backend, log, wake_fd, region, tun)?;
        Ok(DataplaneChild {
            running: Running::Child(child),
            backend: backend.to_string(),
            log,
            workers,
            last_start: Instant::now(),
            backoff: Backoff::default(),
        })
    }

    /// A data plane our predecessor started; `workers`, `backend` and `log`
    /// are for the ones we may start later.
    pub fn adopted(pid: u32, pidfd: OwnedFd, workers: usize, backend: &str, log: LogLevel) -> Self {
        let workers = if workers == 0 {
            default_workers()
        } else {
            workers
        };
        let now = Instant::now();
        DataplaneChild {
            running: Running::Adopted { pid, pidfd },
            backend: backend.to_string(),
            log,
            workers,
            // It has been running for a while: its death is restarted at once.
            last_start: now.checked_sub(STABLE).unwrap_or(now),
            backoff: Backoff::default(),
        }
    }

    /// The running data plane's pid.
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Child(c) => Some(c.id()),
            Running::Adopted { pid, .. } => Some(*pid),
            Running::Down { .. } => None,
        }
    }

    /// How the data plane ended, if it has.
    fn exited(&mut self) -> Option<String> {
        match &mut self.running {
            Running::Child(c) => match c.try_wait() {
                Ok(Some(st)) => Some(match st.signal() {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exit status {}", st.code().unwrap_or(-1)),
                }),
                _ => None,
            },
            // Its parent (or init) reaps it: the status is not ours to see.
            Running::Adopted { pidfd, .. } => pidfd::exited(pidfd).then(|| "ended".to_string()),
            Running::Down { .. } => None,
        }
    }

    /// Notices a data plane that died and starts another once its back-off
    /// has passed; a start that fails is tried again later. Call it on
    /// every turn of control's loop.
    pub fn supervise(
        &mut self,
        iface: &str,
        shm: &Path,
        wake_fd: i32,
        region: &Region,
        tun: &TunQueue,
    ) -> Vec<Supervision> {
        let mut seen = Vec::new();
        if let Some(how) = self.exited() {
            seen.push(Supervision::Exited(how));
            let retry_at = if self.last_start.elapsed() >= STABLE {
                self.backoff.reset();
                Instant::now()
            } else {
                Instant::now() + self.backoff.failed()
            };
            self.running = Running::Down { retry_at };
        }
        let Running::Down { retry_at } = self.running else {
            return seen;
        };
        if Instant::now() < retry_at {
            return seen;
        }
        self.last_start = Instant::now();
        match start(
            iface,
            shm,
            self.workers,
            &self.backend,
            self.log,
            wake_fd,
            region,
            tun,
        ) {
            Ok(child) => {
                seen.push(Supervision::Restarted(child.id()));
                self.running = Running::Child(child);
            }
            Err(e) => {
                let retry_in = self.backoff.failed();
                seen.push(Supervision::StartFailed {
                    error: e.to_string(),
                    retry_in,
                });
                self.running = Running::Down {
                    retry_at: Instant::now() + retry_in,
                };
            }
        }
        seen
    }

    pub fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        match &mut self.running {
            Running::Child(child) => {
                // SAFETY: sends SIGTERM to our own child, whose pid we hold unreaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::Adopted { pidfd, .. } => {
                let _ = pidfd::signal(pidfd, libc::SIGTERM);
                while Instant::now() < deadline {
                    if pidfd::exited(pidfd) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = pidfd::signal(pidfd, libc::SIGKILL);
            }
            Running::Down { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_tenth_of_a_second_to_five_seconds() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.failed(), BACKOFF_FIRST);
    }

    #[test]
    fn an_adopted_data_plane_that_ends_is_noticed() {
        let mut p = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = pidfd::open(p.id()).unwrap();
        let mut c = DataplaneChild::adopted(p.id(), fd, 1, "udp", LogLevel::Info);
        assert_eq!(c.pid(), Some(p.id()));
        assert_eq!(c.exited(), None);
        c.stop();
        p.wait().unwrap();
        assert!(c.exited().is_some());
    }
}
