//! The WireGuard implementations under test, run as foreground children inside
//! a namespace, and their configuration through the real `wg` tool.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::checks::{self, Dump};
use super::netns::Netns;
use super::util::{self, run, TempDir};

pub const SOCK_DIR: &str = "/var/run/wireguard";

pub fn sock_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("{SOCK_DIR}/{iface}.sock"))
}

/// How an implementation counts `rx_bytes` / `tx_bytes` in its UAPI output
/// (`wg show` transfer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    /// The UDP payload of every message exchanged with the peer: transport
    /// messages whole (16-byte header + padded plaintext + 16-byte tag, so a
    /// keepalive is 32), handshake initiations (148) and responses (92)
    /// included; cookie replies not. rx counts only messages that
    /// authenticated. The Linux kernel and wireguard-go (wirespeed follows
    /// them).
    WireBytes,
    /// Inner IP bytes only (boringtun 0.7): tx adds the plaintext length
    /// before padding for each transport message (0 for a keepalive); rx adds
    /// the inner packet's IP total length for each data message; handshakes
    /// count nothing.
    InnerBytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    WireguardGo,
    Boringtun,
    /// wirespeed with the AF_XDP backend forced (fails rather than fall back).
    Wirespeed,
    /// wirespeed with the plain UDP socket backend, TUN offloads off.
    WirespeedUdp,
    /// wirespeed as `auto` runs it on veth: the UDP socket backend (with
    /// GSO/GRO) and TUN offloads (TSO, USO, coalescing) on.
    WirespeedUdpOffload,
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::WireguardGo => "wireguard-go",
            Impl::Boringtun => "boringtun",
            Impl::Wirespeed => "wirespeed",
            Impl::WirespeedUdp => "wirespeed-udp",
            Impl::WirespeedUdpOffload => "wirespeed-udp-offload",
        }
    }

    /// The executable, resolved to a full path.
    pub fn program(self) -> PathBuf {
        match self {
            Impl::Wirespeed | Impl::WirespeedUdp | Impl::WirespeedUdpOffload => {
                PathBuf::from(env!("CARGO_BIN_EXE_wirespeed"))
            }
            Impl::WireguardGo => util::which("wireguard-go")
                .expect("wireguard-go not found on PATH (it is needed by the interop tests)"),
            Impl::Boringtun => util::which("boringtun-cli").expect(
                "boringtun-cli not found on PATH or in ~/.cargo/bin \
                 (cargo install boringtun-cli --version 0.7.1 --locked)",
            ),
        }
    }

    pub fn counting(self) -> Counting {
        match self {
            Impl::Boringtun => Counting::InnerBytes,
            Impl::WireguardGo
            | Impl::Wirespeed
            | Impl::WirespeedUdp
            | Impl::WirespeedUdpOffload => Counting::WireBytes,
        }
    }

    /// Whether the implementation needs to be told (by rebinding its UDP
    /// socket, e.g. `wg set IFACE listen-port SAME`) that its host's own
    /// address changed, to roam quickly.
    ///
    /// * wireguard-go (0.0.20220316) pins the source address of each peer
    ///   (IP_PKTINFO, "sticky sockets") and only forgets it when sendmsg
    ///   fails with EINVAL; kernel 6.x answers ENETUNREACH for a source that
    ///   is no longer local, so every send fails until the handshake retry
    ///   15 s later clears the source (and TCP backs off past 25 s). Setting
    ///   the listen port runs BindUpdate, which clears the pinned sources.
    /// * boringtun connects one UDP socket per peer, which keeps the old
    ///   source address; setting the listen port re-opens its sockets and
    ///   drops the connected ones.
    /// * The kernel module checks that the cached source is still local
    ///   before each send; wirespeed must roam on its own like the kernel.
    pub fn needs_rebind_after_address_change(self) -> bool {
        matches!(self, Impl::WireguardGo | Impl::Boringtun)
    }

    /// Whether `wg set IFACE peer KEY ...` may change a peer that exists.
    /// boringtun 0.7.1 panics its UAPI thread ("Modifying existing peers is
    /// not yet supported. Remove and add again instead.").
    pub fn can_modify_peers(self) -> bool {
        self != Impl::Boringtun
    }

    /// Environment the daemon needs, in foreground and in daemon mode alike.
    pub fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            // Refuses to start on a kernel with WireGuard support otherwise.
            Impl::WireguardGo => vec![
                ("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1"),
                ("LOG_LEVEL", "verbose"),
            ],
            // WG_SUDO = --disable-drop-privileges: as root without a login
            // terminal boringtun exits when it tries to drop privileges.
            Impl::Boringtun => vec![("WG_SUDO", "true"), ("WG_LOG_LEVEL", "info")],
            // TUN offloads (segmentation in, coalescing out) are the default
            // and run with AF_XDP; the UDP backend runs without them, so
            // every scenario also covers the plain TUN path. The TUN side
            // is the same code under either backend.
            Impl::Wirespeed => vec![("WIRESPEED_BACKEND", "xdp")],
            Impl::WirespeedUdp => vec![
                ("WIRESPEED_BACKEND", "udp"),
                ("WIRESPEED_TUN_OFFLOAD", "off"),
            ],
            Impl::WirespeedUdpOffload => vec![
                ("WIRESPEED_BACKEND", "udp"),
                ("WIRESPEED_TUN_OFFLOAD", "on"),
            ],
        }
    }

    /// Arguments for a foreground run on `iface`.
    pub fn foreground_args(self, iface: &str) -> Vec<String> {
        match self {
            Impl::WireguardGo
            | Impl::Wirespeed
            | Impl::WirespeedUdp
            | Impl::WirespeedUdpOffload => {
                vec!["-f".into(), iface.into()]
            }
            Impl::Boringtun => vec![
                "--foreground".into(),
                "--disable-drop-privileges".into(),
                iface.into(),
            ],
        }
    }

    /// Starts `IMPL -f iface` inside `ns` as a child process (killed when the
    /// returned [`Daemon`] drops) and waits until both the UAPI socket and the
    /// interface exist.
    pub fn start(self, ns: &Netns, iface: &str) -> Daemon {
        self.start_with(ns, iface, &[])
    }

    /// [`Impl::start`] with `extra` on top of (overriding) [`Impl::env`].
    pub fn start_with(self, ns: &Netns, iface: &str, extra: &[(&str, &str)]) -> Daemon {
        self.launch(ns, iface, extra, ns)
    }

    /// [`Impl::start`] of a daemon whose interface already exists and was
    /// moved into `iface_ns` (a control process restarted while its data
    /// plane kept the interface alive there).
    pub fn start_away(self, ns: &Netns, iface: &str, iface_ns: &Netns) -> Daemon {
        self.launch(ns, iface, &[], iface_ns)
    }

    fn launch(self, ns: &Netns, iface: &str, extra: &[(&str, &str)], iface_ns: &Netns) -> Daemon {
        let program = self.program();
        let sock = sock_path(iface);
        let _ = std::fs::create_dir_all(SOCK_DIR);
        // Socket names are global: a stale one is from a crashed run of ours
        // (the name carries our pid).
        let _ = std::fs::remove_file(&sock);
        let logdir = TempDir::new();
        let log_path = logdir.join("daemon.log");
        let log = File::create(&log_path).unwrap();
        let mut cmd = ns.cmd(program.to_str().unwrap());
        cmd.args(self.foreground_args(iface))
            .envs(self.env())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", util::describe(&cmd)));
        let mut d = Daemon {
            imp: self,
            iface: iface.to_string(),
            ns_name: ns.name().to_string(),
            child: Some(child),
            log_path,
            _logdir: logdir,
        };
        let mut exited = None;
        let ready = util::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            if let Ok(Some(status)) = d.child.as_mut().unwrap().try_wait() {
                exited = Some(status);
                return true;
            }
            sock.exists() && iface_ns.has_link(iface)
        });
        if let Some(status) = exited {
            panic!(
                "{self} exited before it was ready ({status}); log:\n{}",
                d.log()
            );
        }
        assert!(
            ready,
            "{self} on {iface}: UAPI socket {} and interface not both there after 10 s; log:\n{}",
            sock.display(),
            d.log()
        );
        if std::env::var_os("WIRESPEED_TEST_VERBOSE").is_some() {
            eprintln!("  started {self} {iface} in {:?}", started.elapsed());
        }
        d
    }
}

/// A running implementation; SIGTERM (then SIGKILL) on drop, and its log
/// printed if the test is failing.
pub struct Daemon {
    pub imp: Impl,
    pub iface: String,
    ns_name: String,
    child: Option<Child>,
    log_path: PathBuf,
    _logdir: TempDir,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// How the process ended, once it has (reaped by then); None while
    /// it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn assert_running(&mut self) {
        let iface = self.iface.clone();
        assert!(
            self.running(),
            "{} on {} in {} died; log:\n{}",
            self.imp,
            iface,
            self.ns_name,
            util::tail(&self.log(), 40)
        );
    }

    /// Stops the daemon: SIGTERM, up to 3 s grace, SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            util::signal(child.id(), util::SIGTERM);
            let gone = util::wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
                !matches!(child.try_wait(), Ok(None))
            });
            if !gone {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        // Cleaned up by the daemon on SIGTERM; not after SIGKILL.
        let _ = std::fs::remove_file(sock_path(&self.iface));
    }

    /// `wg set IFACE args...` (run inside `ns`); panics on failure.
    pub fn wg_set(&self, ns: &Netns, args: &[&str]) {
        let mut a = vec!["wg", "set", self.iface.as_str()];
        a.extend_from_slice(args);
        ns.exec(&a);
    }

    /// Applies `conf` with `wg set` (private key file, listen port, fwmark,
    /// peers with preshared key files, allowed IPs, endpoint, persistent
    /// keepalive), then `ip addr add` and `ip link set mtu .. up`.
    pub fn configure(&self, ns: &Netns, conf: &IfaceConf) {
        let dir = TempDir::new();
        let mut args: Vec<String> = vec!["wg".into(), "set".into(), self.iface.clone()];
        let key = dir.write("private.key", &format!("{}\n", conf.private_key));
        args.extend(["private-key".into(), key.display().to_string()]);
        if let Some(port) = conf.listen_port {
            args.extend(["listen-port".into(), port.to_string()]);
        }
        if let Some(mark) = conf.fwmark {
            args.extend(["fwmark".into(), mark.to_string()]);
        }
        for (i, p) in conf.peers.iter().enumerate() {
            args.extend(peer_args(&dir, i, p));
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.exec(&a);
        for addr in &conf.addresses {
            ns.ip(&["addr", "add", addr, "dev", &self.iface]);
        }
        let mtu = conf.mtu.unwrap_or(1420).to_string();
        ns.ip(&["link", "set", "dev", &self.iface, "mtu", &mtu, "up"]);
    }

    /// Adds or changes one peer with `wg set IFACE peer KEY ...` (every field
    /// of `peer`; fields it leaves out keep their value in the daemon).
    /// Implementations that cannot modify an existing peer (boringtun) get
    /// `peer KEY remove` first, which also drops the peer's session.
    pub fn set_peer(&self, ns: &Netns, peer: &PeerConf) {
        let dir = TempDir::new();
        if !self.imp.can_modify_peers() {
            self.wg_set(ns, &["peer", &peer.public_key, "remove"]);
        }
        let mut args: Vec<String> = vec!["wg".into(), "set".into(), self.iface.clone()];
        args.extend(peer_args(&dir, 0, peer));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.exec(&a);
    }

    /// `wg show IFACE dump`, normalised for this implementation's quirks
    /// (see [`Impl::dump`]).
    pub fn dump(&self, ns: &Netns) -> Dump {
        self.imp.dump(ns, &self.iface)
    }

    /// `wg showconf IFACE`.
    pub fn showconf(&self, ns: &Netns) -> String {
        ns.exec(&["wg", "showconf", &self.iface])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        self.stop();
        if failing {
            eprintln!(
                "---- {} log ({} in {}), last 60 lines ----\n{}\n----",
                self.imp,
                self.iface,
                self.ns_name,
                util::tail(&self.log(), 60)
            );
        }
    }
}

impl Impl {
    /// `wg show IFACE dump` parsed, with the implementation's quirks undone:
    /// boringtun reports the time *since* the last handshake where `wg`
    /// expects an epoch time, and omits it when there was none (which `wg`
    /// prints as 0, indistinguishable from "0 s ago"): its handshake is
    /// taken from the raw UAPI `get=1` and turned into an epoch time.
    pub fn dump(self, ns: &Netns, iface: &str) -> Dump {
        let text = ns.exec(&["wg", "show", iface, "dump"]);
        let mut dump = checks::parse_dump(&text)
            .unwrap_or_else(|e| panic!("cannot parse `wg show {iface} dump` ({e}):\n{text}"));
        if self == Impl::Boringtun {
            let raw = checks::uapi_get(iface);
            let now = util::now_epoch();
            for peer in checks::parse_uapi_get(&raw).peers {
                if let Some(p) = dump
                    .peers
                    .iter_mut()
                    .find(|p| p.public_key == peer.public_key)
                {
                    p.latest_handshake = peer.handshake_sec.map(|ago| now.saturating_sub(ago));
                }
            }
        }
        dump
    }
}

/// `peer KEY [preshared-key FILE] [allowed-ips ..] [endpoint ..]
/// [persistent-keepalive N|off]` for `wg set`; key files go to `dir`.
fn peer_args(dir: &TempDir, i: usize, p: &PeerConf) -> Vec<String> {
    let mut args: Vec<String> = vec!["peer".into(), p.public_key.clone()];
    if let Some(psk) = &p.preshared_key {
        let f = dir.write(&format!("psk{i}"), &format!("{psk}\n"));
        args.extend(["preshared-key".into(), f.display().to_string()]);
    }
    if !p.allowed_ips.is_empty() {
        args.extend(["allowed-ips".into(), p.allowed_ips.join(",")]);
    }
    if let Some(ep) = &p.endpoint {
        args.extend(["endpoint".into(), ep.clone()]);
    }
    args.extend([
        "persistent-keepalive".into(),
        p.keepalive.map_or("off".to_string(), |k| k.to_string()),
    ]);
    args
}

/// A key pair from `wg genkey` / `wg pubkey`.
#[derive(Clone, Debug)]
pub struct Keys {
    pub private: String,
    pub public: String,
}

impl Keys {
    pub fn generate() -> Keys {
        let private = run(Command::new("wg").arg("genkey")).trim().to_string();
        Keys {
            public: pubkey(&private),
            private,
        }
    }
}

/// `wg pubkey` of a base64 private key.
pub fn pubkey(private: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run wg pubkey");
    writeln!(child.stdin.take().unwrap(), "{private}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wg pubkey failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `wg genpsk`.
pub fn genpsk() -> String {
    run(Command::new("wg").arg("genpsk")).trim().to_string()
}

#[derive(Clone, Debug, Default)]
pub struct PeerConf {
    pub public_key: String,
    pub preshared_key: Option<String>,
    /// CIDRs, e.g. "10.9.0.2/32".
    pub allowed_ips: Vec<String>,
    /// "host:port".
    pub endpoint: Option<String>,
    pub keepalive: Option<u16>,
}

#[derive(Clone, Debug, Default)]
pub struct IfaceConf {
    pub private_key: String,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerConf>,
    /// CIDRs added with `ip addr add`, e.g. "10.9.0.1/24".
    pub addresses: Vec<String>,
    /// Defaults to 1420 (wg-quick's choice over a 1500-byte underlay).
    pub mtu: Option<u32>,
}

/// Whether the file at `p` is a socket that accepts connections.
pub fn socket_alive(p: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(p).is_ok()
}
