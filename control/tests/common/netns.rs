//! Network namespaces: creation with a machine-unique name, commands inside,
//! veth pairs, sockets created inside, and teardown (killing everything that
//! still runs inside) on drop, so a failing test cleans up after itself.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use super::util::{self, describe, output, run, unique_name};

pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace `ws<pid>n<k>` with the loopback up.
    pub fn new() -> Netns {
        let name = unique_name("n");
        // A leftover from a crashed run that had the same pid is ours to remove.
        if std::path::Path::new(&format!("/var/run/netns/{name}")).exists() {
            let _ = output(Command::new("ip").args(["netns", "del", &name]));
        }
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME prog` (mount namespace with /etc/netns/NAME bind
    /// mounts and this namespace's /sys), ready for more args.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Runs `args` inside; panics on a non-zero exit. Returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut c = self.cmd(args[0]);
        c.args(&args[1..]);
        run(&mut c)
    }

    /// Runs `args` inside and returns the output whatever the exit status.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        let mut c = self.cmd(args[0]);
        c.args(&args[1..]);
        output(&mut c)
    }

    /// `bash -c script` inside; panics on failure; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        self.exec(&["bash", "-c", script])
    }

    /// `bash -c script` inside, whatever the exit status.
    pub fn try_sh(&self, script: &str) -> Output {
        self.try_exec(&["bash", "-c", script])
    }

    /// `ip -n NAME args`; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        run(&mut c)
    }

    /// `ip -n NAME args`, whatever the exit status.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        output(&mut c)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Whether interface `iface` exists in this namespace.
    pub fn has_link(&self, iface: &str) -> bool {
        self.try_ip(&["link", "show", "dev", iface])
            .status
            .success()
    }

    /// Writes /etc/netns/NAME/hosts, which `ip netns exec` bind-mounts over
    /// /etc/hosts for every command run through [`Netns::cmd`].
    pub fn set_hosts(&self, entries: &[(&str, Ipv4Addr)]) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut text =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (host, ip) in entries {
            text.push_str(&format!("{ip}\t{host}\n"));
        }
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Runs `f` on a thread that joined this namespace: sockets it creates
    /// live in the namespace for their whole life, whichever thread uses them.
    pub fn enter<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: plain syscall on a valid fd; it only changes this
                // thread's network namespace, and the thread ends with `f`.
                let r = unsafe { util::setns(file.as_raw_fd(), util::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
                f()
            });
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    pub fn tcp_listener(&self, addr: SocketAddr) -> TcpListener {
        self.enter(|| TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
    }

    pub fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        self.enter(|| TcpStream::connect_timeout(&addr, timeout))
    }

    pub fn udp_socket(&self, addr: SocketAddr) -> UdpSocket {
        self.enter(|| UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}")))
    }

    /// Pids of every process whose network namespace is this one.
    pub fn pids(&self) -> Vec<u32> {
        let out = output(Command::new("ip").args(["netns", "pids", &self.name]));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Terminates everything still running inside: SIGTERM, a grace period,
    /// then SIGKILL.
    pub fn kill_all(&self) {
        let pids = self.pids();
        if pids.is_empty() {
            return;
        }
        for &p in &pids {
            util::signal(p, util::SIGTERM);
        }
        util::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
            self.pids().is_empty()
        });
        for p in self.pids() {
            util::signal(p, util::SIGKILL);
        }
        util::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
            self.pids().is_empty()
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let mut c = Command::new("ip");
        c.args(["netns", "del", &self.name]);
        let out = output(&mut c);
        if !out.status.success() {
            eprintln!(
                "warning: `{}`: {}",
                describe(&c),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// A veth pair `a_if` (in `a`, address `a_addr`, CIDR) <-> `b_if` (in `b`),
/// both up. The pair is created inside `a` so no name touches the root
/// namespace; it disappears with either namespace.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr: Option<&str>,
) {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        // No IPv6 on the underlay: no ND/MLD noise in its counters and captures.
        ns.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1");
        if let Some(addr) = addr {
            ns.ip(&["addr", "add", addr, "dev", ifname]);
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// A bridge `br` in `ns`, up; attach veths with [`attach`].
pub fn bridge(ns: &Netns, br: &str) {
    ns.ip(&["link", "add", br, "type", "bridge"]);
    ns.sysctl(&format!("net.ipv6.conf.{br}.disable_ipv6"), "1");
    ns.ip(&["link", "set", br, "up"]);
}

/// A veth from `host` (`host_if`, address `addr`) to a port of bridge `br` in `sw`.
pub fn attach(sw: &Netns, br: &str, port: &str, host: &Netns, host_if: &str, addr: &str) {
    veth(sw, port, None, host, host_if, Some(addr));
    sw.ip(&["link", "set", port, "master", br]);
}
