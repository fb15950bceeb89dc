//! `wg-quick up|down CONF` inside a namespace with a userspace implementation
//! (WG_QUICK_USERSPACE_IMPLEMENTATION; the kernel here has no WireGuard
//! module, so `ip link add type wireguard` fails and wg-quick falls back to
//! running `$WG_QUICK_USERSPACE_IMPLEMENTATION IFACE`, which daemonizes).
//!
//! What Debian's wg-quick (wireguard-tools 1.0.20210914) does that matters
//! in a namespace:
//! * `DNS =` runs `resolvconf -a IFACE -m 0 -x` (and `-d` on down). There is
//!   no resolvconf here; a stub on PATH records the calls instead (wg-quick
//!   prepends its own directory, /usr/bin, to PATH, so a stub is only
//!   shadowed by a real /usr/bin/resolvconf).
//! * AllowedIPs 0.0.0.0/0 sets fwmark 51820, `ip rule`s (not fwmark ->
//!   table 51820; main with suppress_prefixlength 0), sysctl
//!   net.ipv4.conf.all.src_valid_mark=1 (per namespace), and firewall rules
//!   with `nft -f` when nft exists, else `iptables-restore -n` (raw
//!   PREROUTING addrtype DROP, mangle CONNMARK save/restore). Here there is
//!   no nft, and iptables-nft 1.8.9 accepts those rules inside a namespace.
//! * PostUp/PostDown lines run through bash with %i replaced.
//! * The config file name must be `IFACE.conf`, IFACE at most 15 chars;
//!   wg-quick refuses files readable by others (mode 0600 here).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::impls::Impl;
use super::netns::Netns;
use super::util::{self, TempDir};

pub struct WgQuick {
    pub imp: Impl,
    dir: TempDir,
}

impl WgQuick {
    pub fn new(imp: Impl) -> WgQuick {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let log = dir.join("resolvconf.log");
        let stub = format!(
            "#!/bin/sh\n# resolvconf(8) stub for the wirespeed tests: records, changes nothing.\n\
             echo \"resolvconf $*\" >> '{}'\nif [ \"$1\" = -a ]; then cat >> '{}'; fi\nexit 0\n",
            log.display(),
            log.display()
        );
        let path = dir.join("bin/resolvconf");
        std::fs::write(&path, stub).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        WgQuick { imp, dir }
    }

    /// What the resolvconf stub recorded so far.
    pub fn resolvconf_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("resolvconf.log")).unwrap_or_default()
    }

    /// `wg-quick ACTION CONF` in `ns`; Ok(output) on exit 0, Err(output)
    /// otherwise. Output goes through a file, not a pipe: the daemon that
    /// wg-quick starts inherits its stdout and stderr (wireguard-go logs
    /// there) and would hold a pipe open.
    pub fn run(&self, ns: &Netns, action: &str, conf: &Path) -> Result<String, String> {
        let iface = conf.file_stem().unwrap().to_string_lossy().into_owned();
        let log = self.dir.join(&format!("wg-quick-{action}-{iface}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = ns.cmd("wg-quick");
        c.args([action, conf.to_str().unwrap()])
            .env("PATH", path)
            .env("WG_QUICK_USERSPACE_IMPLEMENTATION", self.imp.program())
            .envs(self.imp.env())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        if self.imp == Impl::Boringtun {
            // Its background mode logs to /tmp/boringtun.out by default.
            c.env(
                "WG_LOG_FILE",
                self.dir.join(&format!("boringtun-{iface}.log")),
            );
        }
        let status = c.status().unwrap_or_else(|e| panic!("wg-quick: {e}"));
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if status.success() {
            Ok(out)
        } else {
            Err(format!(
                "`{}` failed ({status}):\n{out}",
                util::describe(&c)
            ))
        }
    }

    pub fn up(&self, ns: &Netns, conf: &Path) -> String {
        self.run(ns, "up", conf).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn down(&self, ns: &Netns, conf: &Path) -> String {
        self.run(ns, "down", conf).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Directory for config files (mode 0600 files, see [`TempDir::write`]).
    pub fn conf_path(&self, iface: &str) -> PathBuf {
        self.dir.join(&format!("{iface}.conf"))
    }

    pub fn write_conf(&self, iface: &str, text: &str) -> PathBuf {
        self.dir.write(&format!("{iface}.conf"), text)
    }
}
