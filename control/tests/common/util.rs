//! Small process, naming and timing helpers shared by the netns harness.

use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// libc is not a dependency of this crate; std links the C library anyway, so
// the handful of calls the harness needs are declared here.
extern "C" {
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn geteuid() -> u32;
    pub(crate) fn setns(fd: c_int, nstype: c_int) -> c_int;
}

pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;
pub const CLONE_NEWNET: i32 = 0x4000_0000;

/// Sends `sig` to `pid`; false if the process does not exist.
pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid as c_int, sig) == 0 }
}

/// Whether a process with this pid still exists (zombies included).
pub fn alive(pid: u32) -> bool {
    signal(pid, 0)
}

/// Whether `pid` is running: it exists and is not a zombie its parent has
/// not reaped yet (which `alive` still counts).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// The pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { geteuid() == 0 }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique machine-wide: `ws` + pid + `tag` + a per-process counter.
/// At most 15 characters (an interface name) for a one-letter tag.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("ws{}{}{}", std::process::id(), tag, n);
    assert!(
        name.len() <= 15,
        "generated name {name} is longer than IFNAMSIZ-1"
    );
    name
}

/// A directory under /tmp removed on drop (kept when WIRESPEED_KEEP_TMP=1).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(unique_name("t"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory with mode 0600.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("WIRESPEED_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `prog arg arg ...` as a shell-like string, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its output, whatever the exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(std::process::Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

/// Runs `cmd`, panics with its stdout and stderr unless it exits 0; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every `every` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Seconds since the Unix epoch.
pub fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Full path of `prog` on PATH, if any.
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // cargo-installed tools (boringtun-cli) when ~/.cargo/bin is not on PATH.
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(prog)).find(|p| p.is_file())
}

/// N of the first "XDP on UPLINK: N steered, ..." line of a data plane's
/// log (the figures logged when it ends, or when a tenant goes); 0 if none.
pub fn steered(log: &str, uplink: &str) -> u64 {
    log.split(&format!("XDP on {uplink}: "))
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The last `n` lines of a text, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
