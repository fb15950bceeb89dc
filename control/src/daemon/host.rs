//! Control's side of the host data plane (`dataplane::process::host`): the
//! interface is attached as a tenant to the one that answers on the
//! namespace's socket, started if none does, instead of getting a data
//! plane of its own (which WIRESPEED_DATAPLANE=own asks for). The link plays
//! the part the child process plays otherwise: its connection is watched, a
//! host data plane that goes away is attached to again (started again) with
//! the same back-off, and stopping on purpose detaches the tenant.
//!
//! The host binds the tenant's UDP sockets (not control): it follows `wg
//! set listen-port` the way a data plane of its own does, through the
//! region, and a socket bound here would have to be passed again on every
//! change.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dataplane::process::host::{self, wire};
use dataplane::shm::Region;
use dataplane::tun::TunQueue;
use dataplane::tunns;

use super::child::{Backoff, DataplaneChild, Supervision};
use super::LogLevel;

/// What WIRESPEED_DATAPLANE asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Unset: the host data plane, started if none answers; where that
    /// fails (one in another namespace answers, or it cannot start), a data
    /// plane of our own, saying why.
    Default,
    /// `host`: the host data plane or an error.
    Host,
    /// `own`: always a data plane of our own.
    Own,
}

pub fn wanted() -> Want {
    match std::env::var("WIRESPEED_DATAPLANE").as_deref() {
        Ok("host") => Want::Host,
        Ok("own") => Want::Own,
        Err(std::env::VarError::NotPresent) | Ok("") => Want::Default,
        Ok(other) => {
            eprintln!(
                "wirespeed: WIRESPEED_DATAPLANE={other} is neither host nor own; \
                 taking the default (host)"
            );
            Want::Default
        }
        Err(std::env::VarError::NotUnicode(_)) => Want::Default,
    }
}

const STABLE: Duration = Duration::from_secs(10);

pub struct HostLink {
    socket: PathBuf,
    /// The tenant's connection; None while the host data plane is away.
    conn: Option<OwnedFd>,
    pid: u32,
    workers: usize,
    backend: String,
    log: LogLevel,
    /// A host data plane we started (reaped when it ends).
    started: Option<Child>,
    retry_at: Instant,
    last_attach: Instant,
    backoff: Backoff,
}

fn hello(c: &OwnedFd) -> io::Result<(usize, u32)> {
    match wire::call(c.as_fd(), &wire::Request::Hello, &[])? {
        (wire::Reply::Workers { n, pid }, _) => Ok((n, pid)),
        (r, _) => Err(io::Error::other(format!("unexpected reply {r:?}"))),
    }
}

impl HostLink {
    /// A link to the host data plane that answers, or to one we started;
    /// None: the interface gets a data plane of its own.
    pub fn connect(workers: usize, backend: &str, log: LogLevel) -> io::Result<Option<HostLink>> {
        let want = wanted();
        if want == Want::Own {
            return Ok(None);
        }
        let mut link = HostLink {
            socket: host::socket_path(),
            conn: None,
            pid: 0,
            workers,
            backend: backend.to_string(),
            log,
            started: None,
            retry_at: Instant::now(),
            last_attach: Instant::now(),
            backoff: Backoff::default(),
        };
        match link.open() {
            Ok(_) => {
                // Not said in silence: a user who asked for a backend on a
                // host data plane that was running already gets its own.
                if link.started.is_none() && (backend != "auto" || workers > 0) {
                    eprintln!(
                        "wirespeed: the running host data plane (pid {}) keeps its own backend \
                         and workers; --backend {backend} and --workers apply to one this \
                         interface starts",
                        link.pid
                    );
                }
                Ok(Some(link))
            }
            // Not asked for by name: one we cannot use is passed over.
            Err(e) if want == Want::Default => {
                eprintln!(
                    "wirespeed: no host data plane on {} ({e}); running a data plane of our own",
                    link.socket.display()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A fresh connection that said hello: (workers, pid), to the host data
    /// plane that answers or to one started now.
    fn open(&mut self) -> io::Result<(OwnedFd, usize)> {
        let c = match host::connect(&self.socket) {
            Ok(c) => c,
            // One answers, from another network namespace: said, not
            // passed over in silence.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
            Err(_) => self.start_host()?,
        };
        let (c, (n, pid)) = match hello(&c) {
            Ok(h) => (c, h),
            // One started on demand whose last tenant just went closes
            // us unanswered on its way out: the next one is ours to start.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                let c = match host::connect(&self.socket) {
                    Ok(c) => c,
                    Err(_) => self.start_host()?,
                };
                let h = hello(&c)?;
                (c, h)
            }
        };
        self.pid = pid;
        Ok((c, n))
    }

    /// Starts a host data plane, in its own process group (a signal to ours
    /// does not reach it), to outlive us.
    fn start_host(&mut self) -> io::Result<OwnedFd> {
        if let Some(mut c) = self.started.take() {
            let _ = c.try_wait();
        }
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        // Started on demand, it goes with the namespace's last interface:
        // nothing else would end it, and it would keep a deleted namespace
        // (and its sockets) alive.
        cmd.arg("--host-dataplane")
            .arg("--exit-when-idle")
            .arg("--backend")
            .arg(&self.backend)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Our unit's readiness is ours to tell (NotifyAccess=main
            // would log the child's as refused).
            .env_remove("NOTIFY_SOCKET");
        if self.workers > 0 {
            cmd.arg("--workers").arg(self.workers.to_string());
        }
        if self.log >= LogLevel::Debug {
            cmd.arg("-v");
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = host::connect(&self.socket) {
                self.started = Some(child);
                return Ok(c);
            }
            if let Some(st) = child.try_wait()? {
                // Another control may have started one meanwhile.
                return host::connect(&self.socket).map_err(|_| {
                    io::Error::other(format!("the host data plane failed to start: {st}"))
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("the host data plane did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Attaches the interface as a new tenant: its region, wake eventfd, one
    /// TUN queue per host worker (opened where the interface lives now).
    pub fn attach(
        &mut self,
        iface: &str,
        shm: &Path,
        wake: &OwnedFd,
        region: &Region,
        tun: &TunQueue,
    ) -> io::Result<u16> {
        // The interface's first queue before a host data plane is started
        // for it: a control that saw the host data plane go before it saw
        // its interface deleted would start one for nothing, which then
        // waits half a minute for a first tenant.
        let first = tunns::open_sibling(tun)?;
        let (c, n) = self.open()?;
        let region_fd = reopen_region(region)?;
        let queues = std::iter::once(Ok(first))
            .chain((1..n).map(|_| tunns::open_sibling(tun)))
            .collect::<io::Result<Vec<_>>>()?;
        let mut fds = vec![region_fd.as_raw_fd(), wake.as_raw_fd()];
        fds.extend(queues.iter().map(|q| q.as_raw_fd()));
        region.header().dataplane_ready.store(0, Ordering::Release);
        let req = wire::Request::Attach {
            iface: iface.to_string(),
            shm: shm.display().to_string(),
        };
        match wire::call(c.as_fd(), &req, &fds)? {
            (wire::Reply::Ok { port }, _) => {
                self.conn = Some(c);
                self.last_attach = Instant::now();
                Ok(port)
            }
            (wire::Reply::Err(e), _) => Err(io::Error::other(format!("host data plane: {e}"))),
            (r, _) => Err(io::Error::other(format!("unexpected reply {r:?}"))),
        }
    }

    /// For a restarted control: takes over its tenant of `region`, which
    /// the host data plane kept serving; returns a TUN queue of the
    /// interface and the wake eventfd. NotFound: the host has no such tenant.
    pub fn reattach(&mut self, iface: &str, region: &Region) -> io::Result<(TunQueue, OwnedFd)> {
        let (c, _) = self.open()?;
        let region_fd = reopen_region(region)?;
        let req = wire::Request::Reattach {
            iface: iface.to_string(),
        };
        match wire::call(c.as_fd(), &req, &[region_fd.as_raw_fd()])? {
            (wire::Reply::Ok { .. }, fds) if fds.len() == 2 => {
                let mut it = fds.into_iter();
                let (Some(q), Some(w)) = (it.next(), it.next()) else {
                    return Err(io::Error::other("reattach reply without its descriptors"));
                };
                // The copy shares the host's open file: detaching it would
                // detach a lane's queue. A sibling of our own is detached.
                let theirs = TunQueue::from_fd(q);
                let queue = tunns::open_sibling(&theirs)?;
                queue.detach()?;
                self.conn = Some(c);
                self.last_attach = Instant::now() - STABLE;
                Ok((queue, w))
            }
            (wire::Reply::Err(e), _) => Err(io::Error::new(io::ErrorKind::NotFound, e)),
            (r, _) => Err(io::Error::other(format!("unexpected reply {r:?}"))),
        }
    }

    /// The pid of the host data plane that last answered.
    pub fn host_pid(&self) -> u32 {
        self.pid
    }

    /// The host data plane's pid while attached.
    pub fn pid(&self) -> Option<u32> {
        self.conn.as_ref().map(|_| self.pid)
    }

    /// Whether the host data plane closed our connection (it ended).
    fn lost(&self) -> bool {
        let Some(c) = &self.conn else { return false };
        // Nothing comes unsolicited: readable means closed (or garbage).
        !matches!(wire::recv(c.as_fd(), false), Ok(wire::Received::Nothing))
    }

    pub fn supervise(
        &mut self,
        iface: &str,
        shm: &Path,
        wake: &OwnedFd,
        region: &Region,
        tun: &TunQueue,
    ) -> Vec<Supervision> {
        let mut seen = Vec::new();
        // Reaps a host data plane we started once it ends.
        let ended = self
            .started
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if ended {
            self.started = None;
        }
        if self.lost() {
            self.conn = None;
            seen.push(Supervision::Exited(format!(
                "host data plane {} closed the connection",
                self.pid
            )));
            self.retry_at = if self.last_attach.elapsed() >= STABLE {
                self.backoff.reset();
                Instant::now()
            } else {
                Instant::now() + self.backoff.failed()
            };
        }
        if self.conn.is_some() || Instant::now() < self.retry_at {
            return seen;
        }
        match self.attach(iface, shm, wake, region, tun) {
            Ok(_) => seen.push(Supervision::Restarted(self.pid)),
            Err(e) => {
                let retry_in = self.backoff.failed();
                seen.push(Supervision::StartFailed {
                    error: e.to_string(),
                    retry_in,
                });
                self.retry_at = Instant::now() + retry_in;
            }
        }
        seen
    }

    /// Control stops on purpose: the tenant goes (its lanes, sockets and
    /// queues); the host data plane serves the others on.
    pub fn stop(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = wire::call(c.as_fd(), &wire::Request::Detach, &[]);
        }
    }
}

/// The region's file opened afresh through /proc: a duplicate of ours
/// would carry our `flock` to the host data plane, and a control restarted
/// after a crash could then never claim the region again.
fn reopen_region(region: &Region) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", region.file_fd().as_raw_fd()))
}

/// The data plane a control process works with: its own child, or its
/// tenant on the host data plane.
pub enum Plane {
    Own(DataplaneChild),
    Host(HostLink),
}

impl Plane {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Plane::Own(c) => c.pid(),
            Plane::Host(h) => h.pid(),
        }
    }

    pub fn supervise(
        &mut self,
        iface: &str,
        shm: &Path,
        wake: &OwnedFd,
        region: &Region,
        tun: &TunQueue,
    ) -> Vec<Supervision> {
        match self {
            Plane::Own(c) => c.supervise(iface, shm, wake.as_raw_fd(), region, tun),
            Plane::Host(h) => h.supervise(iface, shm, wake, region, tun),
        }
    }

    pub fn stop(&mut self) {
        match self {
            Plane::Own(c) => c.stop(),
            Plane::Host(h) => h.stop(),
        }
    }
}
