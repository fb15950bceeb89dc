//! The XDP attacher: a small process, forked by the data plane before it
//! enters its sandbox, that keeps the privileges attaching an uplink takes
//! so that the data plane need not.
//!
//! Where the AF_XDP uplinks follow the peers (no `WIRESPEED_XDP_IFACES`),
//! an uplink gets its XDP program when a peer's endpoint first appears
//! behind it, long after setup. Attaching loads and verifies a program and
//! creates maps (`bpf(2)` with `CAP_BPF`, `CAP_PERFMON`), links it to the
//! interface (`CAP_NET_ADMIN`), reads the queue count from /sys, creates
//! AF_XDP sockets (outside the data plane's seccomp filter) and registers
//! their UMEMs (`CAP_IPC_LOCK`, or a memory-lock limit). The attacher does
//! all of that and sends each bound socket with its UMEM's memory file over
//! a socket pair (`SCM_RIGHTS`); the data plane maps them with system calls
//! its filter allows and hands them to its workers. The attacher also holds
//! the programs (their links detach when it ends), keeps their port and
//! local-address maps current and publishes their counters into the
//! region, so the data plane keeps no program of its own in this mode.
//!
//! It parses nothing from the network: its inputs are the peer table's
//! endpoints and the listen port in the region, the host's addresses and
//! routes. It keeps the capabilities the data plane used to keep in this
//! mode ([`crate::sandbox::XDP_ATTACH_CAPS`]), with `no_new_privs`; it ends
//! when the data plane says goodbye or its end of the pair closes, and the
//! kernel kills it if the data plane dies first (`PR_SET_PDEATHSIG`).
//!
//! The host data plane (`super::host`) forks one too ([`spawn_host`]): it
//! serves many regions, which the attacher does not read; the host's
//! supervisor says which uplinks to attach and which ports to steer, and
//! gets the programs' figures back for every tenant's region ([`host`]).

mod host;
mod serve;
pub(crate) mod wire;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::backend::{Attached, BackendChoice, PortDealer};
use super::stats::UplinkReport;
use crate::sandbox::{self, Sandbox};
use crate::shm::Region;
use crate::xsk::{XskHandover, XskOptions, ZeroCopy};
use wire::{Msg, Received};

/// How long the start (the uplinks of the peers configured so far) may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the data plane waits at exit for the programs to be detached.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the attacher needs to know that the region does not say.
pub struct Setup {
    /// The tunnel interface (never an uplink).
    pub iface: String,
    pub choice: BackendChoice,
    /// UDP GSO works here (see [`super::backend::XdpUplinks::new`]).
    pub udp_gso: bool,
}

/// The data plane's end.
pub struct Attacher {
    sock: OwnedFd,
    pid: libc::pid_t,
    /// Sockets of an uplink whose line has not come yet.
    pending: Vec<XskHandover>,
    /// Figures of the programs that came since the last request.
    reported: Vec<UplinkReport>,
}

/// How the host's attacher answered a request ([`Attacher::call`]).
#[derive(Debug)]
pub struct Answer {
    /// AF_XDP carries, or may yet: not, and the attacher has ended.
    pub active: bool,
    /// What a Report brought, in the programs' order.
    pub figures: Vec<UplinkReport>,
}

/// Forks the attacher. Only while the calling process has one thread (the
/// child of a threaded process may find a lock held forever) and still all
/// its privileges.
pub fn spawn(region: &Region, setup: Setup) -> io::Result<Attacher> {
    fork(|sock| serve::serve(region, &setup, sock))
}

/// Forks the host data plane's attacher, which reads no region; the same
/// contract as [`spawn`]. `choice`: auto or xdp.
pub fn spawn_host(choice: BackendChoice) -> io::Result<Attacher> {
    fork(|sock| host::serve(choice, sock))
}

fn fork(serve: impl FnOnce(BorrowedFd<'_>) -> i32) -> io::Result<Attacher> {
    let (ours, theirs) = wire::pair()?;
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork in a single-threaded process (the caller's contract);
    // the child only runs `child` and then _exits, never returning here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ours);
        let code = child(serve, theirs, parent);
        // SAFETY: ends the child without running the parent's destructors
        // or atexit handlers, which belong to the data plane.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    Ok(Attacher {
        sock: ours,
        pid,
        pending: Vec::new(),
        reported: Vec::new(),
    })
}

fn child(serve: impl FnOnce(BorrowedFd<'_>) -> i32, sock: OwnedFd, parent: libc::pid_t) -> i32 {
    // SAFETY: prctl and signal with constant arguments; getppid cannot fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            // The data plane died before the line above took effect.
            return 0;
        }
        libc::prctl(libc::PR_SET_NAME, c"xdp-attacher".as_ptr());
        // The data plane decides when this ends (a Ctrl-C reaches the whole
        // process group, and the programs must outlast the workers).
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    // None of the data plane's descriptors (TUN queues, UDP sockets, the
    // region's file and directory) is any business of this process.
    let s = sock.as_raw_fd() as libc::c_uint;
    // SAFETY: closes descriptors this process holds no Rust owner of that
    // is used again (it _exits); close_range ignores the ones not open.
    unsafe {
        if s > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, s - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, s + 1, u32::MAX, 0u32);
    }
    let dropped =
        Sandbox::prepare(sandbox::XDP_ATTACH_CAPS, None, false).and_then(|sb| sb.drop_privileges());
    if let Err(e) = dropped {
        let _ = wire::send(
            sock.as_fd(),
            &Msg::Failed(format!("XDP attacher: dropping capabilities: {e}")),
            &[],
        );
        return 1;
    }
    serve(sock.as_fd())
}

impl Attacher {
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Waits for the start's outcome, dealing the sockets of the uplinks
    /// attached meanwhile. Ok(false): AF_XDP was given up and the
    /// attacher has ended.
    pub fn start(&mut self, dealer: &mut PortDealer) -> io::Result<bool> {
        self.answer(dealer, "the first uplinks")?
            .map_err(io::Error::other)
    }

    /// Waits (a bounded while: attaching loads and verifies a program) for
    /// the attacher's Ready (its `active`) or Failed (Ok(Err)), dealing
    /// what comes before; Err: it timed out or ended. `what` names what
    /// it was asked for.
    fn answer(&mut self, dealer: &mut PortDealer, what: &str) -> io::Result<Result<bool, String>> {
        let end = Instant::now() + START_TIMEOUT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || !readable(&self.sock, left) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the XDP attacher did not answer ({what})"),
                ));
            }
            match wire::recv(self.sock.as_fd(), false)? {
                Received::Msg(Msg::Ready { active }, _) => return Ok(Ok(active)),
                Received::Msg(Msg::Failed(e), _) => return Ok(Err(e)),
                Received::Msg(m, fds) => self.take(m, fds, dealer)?,
                Received::Nothing => {}
                Received::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the XDP attacher ended ({what})"),
                    ))
                }
            }
        }
    }

    /// Deals what the attacher sent since the last call, without waiting.
    /// False once the attacher is gone (its programs with it).
    pub fn poll(&mut self, dealer: &mut PortDealer) -> bool {
        loop {
            match wire::recv(self.sock.as_fd(), false) {
                Ok(Received::Nothing) => return true,
                Ok(Received::Closed) => return false,
                Ok(Received::Msg(m, fds)) => {
                    if let Err(e) = self.take(m, fds, dealer) {
                        log::warn!("XDP attacher: {e}");
                    }
                }
                Err(e) => log::warn!("XDP attacher: {e}"),
            }
        }
    }

    fn take(&mut self, m: Msg, fds: Vec<OwnedFd>, dealer: &mut PortDealer) -> io::Result<()> {
        match m {
            Msg::Port {
                ifindex,
                queue,
                frames,
                frame_size,
                ring_size,
            } => {
                let [sock, umem]: [OwnedFd; 2] = fds.try_into().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "a socket without its UMEM")
                })?;
                let opts = XskOptions {
                    frames,
                    frame_size,
                    ring_size,
                    zero_copy: ZeroCopy::Auto,
                };
                let h = XskHandover::from_fds(sock, umem, opts, ifindex, queue)?;
                self.pending.push(h);
            }
            Msg::Attached { iface, summary } => dealer.deal(Attached {
                iface,
                sockets: std::mem::take(&mut self.pending),
                summary,
            }),
            Msg::Figures(r) => self.reported.push(r),
            other => log::warn!("XDP attacher: unexpected {other:?}"),
        }
        Ok(())
    }

    /// The host's: a message that wants no answer (Steer, Unsteer).
    pub fn tell(&self, m: &Msg) -> io::Result<()> {
        wire::send(self.sock.as_fd(), m, &[])
    }

    /// The host's: a request (Attach, Report) and its answer, dealing the
    /// sockets that come with it: Ok(Err) is its Failed, Err the
    /// attacher's end. Waits, as the supervisor did when it attached
    /// uplinks itself.
    pub fn call(&mut self, m: &Msg, dealer: &mut PortDealer) -> io::Result<Result<Answer, String>> {
        self.reported.clear();
        self.tell(m)?;
        Ok(self.answer(dealer, "a request")?.map(|active| Answer {
            active,
            figures: std::mem::take(&mut self.reported),
        }))
    }

    /// Asks the attacher to detach its programs and end, and waits for it
    /// (a bounded while): the programs go before the data plane does.
    pub fn finish(self) {
        if wire::send(self.sock.as_fd(), &Msg::Bye, &[]).is_err() {
            return;
        }
        let end = Instant::now() + FINISH_TIMEOUT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || !readable(&self.sock, left) {
                log::warn!("the XDP attacher ({}) did not end in time", self.pid);
                return;
            }
            match wire::recv(self.sock.as_fd(), false) {
                Ok(Received::Closed) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Whether `sock` has something to read (or is closed) within `timeout`.
fn readable(sock: &OwnedFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}
