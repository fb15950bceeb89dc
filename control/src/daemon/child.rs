//! The data plane child process: started from our own executable in
//! `--dataplane` mode (a fresh address space: it never sees the static
//! key), watched, and restarted if it dies.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dataplane::shm::Region;

pub struct DataplaneChild {
    child: Child,
    workers: usize,
    backend: String,
    last_start: Instant,
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn start(
    iface: &str,
    shm: &Path,
    workers: usize,
    backend: &str,
    wake_fd: i32,
    region: &Region,
) -> io::Result<Child> {
    let exe = std::env::current_exe()?;
    region.header().dataplane_ready.store(0, Ordering::Release);
    let mut child = Command::new(exe)
        .arg("--dataplane")
        .arg(iface)
        .arg(shm)
        .arg(workers.to_string())
        .arg(wake_fd.to_string())
        .arg(backend)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.header().dataplane_ready.load(Ordering::Acquire) != child.id() {
        if let Some(st) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "data plane failed to start: {st}"
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(io::Error::other("data plane did not become ready"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

impl DataplaneChild {
    pub fn spawn(
        iface: &str,
        shm: &Path,
        workers: usize,
        backend: &str,
        wake_fd: i32,
        region: &Region,
    ) -> io::Result<Self> {
        let workers = if workers == 0 {
            default_workers()
        } else {
            workers
        };
        let child = start(iface, shm, workers, backend, wake_fd, region)?;
        Ok(DataplaneChild {
            child,
            backend: backend.to_string(),
            workers,
            last_start: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's exit status, if it has died.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(match st.signal() {
                Some(sig) => format!("killed by signal {sig}"),
                None => format!("exit status {}", st.code().unwrap_or(-1)),
            }),
            _ => None,
        }
    }

    pub fn respawn(
        &mut self,
        iface: &str,
        shm: &Path,
        wake_fd: i32,
        region: &Region,
    ) -> io::Result<()> {
        // A data plane that dies at once would otherwise be restarted in a
        // tight loop.
        let since = self.last_start.elapsed();
        if since < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(1) - since);
        }
        self.child = start(iface, shm, self.workers, &self.backend, wake_fd, region)?;
        self.last_start = Instant::now();
        Ok(())
    }

    pub fn stop(&mut self) {
        // SAFETY: sends SIGTERM to our own child, whose pid we hold unreaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
