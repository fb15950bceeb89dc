//! The wirespeed daemon as a process: detaching only when ready, exiting when
//! its interface or socket goes, and the two-process split surviving the
//! death of either process.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::util::{children_of, running as alive};
use common::{assert_ping, Impl, Netns, Side, TcpTransfer, Tunnel};

const WIRESPEED: &str = env!("CARGO_BIN_EXE_wirespeed");

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    f()
}

/// Where the daemon `pid` keeps the region of `iface`: named after its
/// network namespace, which the test (in another one) must look up.
fn region_of(pid: u32, iface: &str) -> PathBuf {
    let netns = dataplane::shm::netns_inode(Path::new(&format!("/proc/{pid}/ns/net"))).unwrap();
    dataplane::shm::region_path_in(Path::new(dataplane::shm::REGION_DIR), netns, iface).unwrap()
}

fn kill9(pid: u32) {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
}

#[test]
fn version_flag() {
    let out = Command::new(WIRESPEED).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wirespeed "));
}

#[test]
fn detached_daemon_is_ready_when_it_returns_and_exits_with_its_interface() {
    let Some(_serial) = common::netns_test("detached_daemon") else {
        return;
    };
    let ns = Netns::new();
    let iface = format!("wsd{}", std::process::id() % 100_000);
    let sock = format!("/var/run/wireguard/{iface}.sock");
    // Without -f it detaches; the moment it returns, all of it must be usable.
    let st = ns.cmd(WIRESPEED).arg(&iface).status().unwrap();
    assert!(st.success());
    assert!(Path::new(&sock).exists(), "UAPI socket ready on return");
    let link = ns.ip(&["link", "show", &iface]);
    assert!(link.contains("mtu 1420"), "{link}");
    let show = ns.exec(&["wg", "show", &iface, "listen-port"]);
    assert!(
        show.trim().parse::<u16>().unwrap() > 0,
        "a port is bound: {show}"
    );
    let pid: u32 = ns
        .exec(&["pgrep", "-f", &format!("wirespeed {iface}$")])
        .trim()
        .parse()
        .unwrap();
    let dp = children_of(pid);
    assert_eq!(dp.len(), 1, "one data plane child");
    // Deleting the interface ends both processes and removes the socket.
    ns.ip(&["link", "del", &iface]);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid) && !alive(dp[0])),
        "daemon exits with its interface"
    );
    assert!(!Path::new(&sock).exists());

    // Removing the socket ends it too (as wireguard-go does).
    ns.cmd(WIRESPEED).arg(&iface).status().unwrap();
    let pid: u32 = ns
        .exec(&["pgrep", "-f", &format!("wirespeed {iface}$")])
        .trim()
        .parse()
        .unwrap();
    std::fs::remove_file(&sock).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "daemon exits when its socket is removed"
    );
    assert!(wait_until(Duration::from_secs(5), || ns
        .try_ip(&["link", "show", &iface])
        .status
        .code()
        != Some(0)));
}

#[test]
fn starting_twice_on_one_interface_fails_cleanly() {
    let Some(_serial) = common::netns_test("starting_twice") else {
        return;
    };
    let ns = Netns::new();
    let iface = format!("wst{}", std::process::id() % 100_000);
    assert!(ns.cmd(WIRESPEED).arg(&iface).status().unwrap().success());
    let out = ns.cmd(WIRESPEED).arg(&iface).output().unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty(), "says why");
    ns.ip(&["link", "del", &iface]);
}

/// The effective gid in /proc/PID/status.
fn egid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn region_is_root_only_and_neither_process_is_dumpable() {
    let Some(_serial) = common::netns_test("private_region") else {
        return;
    };
    let ns = Netns::new();
    let iface = format!("wsp{}", std::process::id() % 100_000);
    // Root, but with another group: the files in /proc/PID of a dumpable
    // process belong to its effective uid and gid, those of a non-dumpable
    // one to root:root (the directory itself always shows the former).
    // The group is what tells the two apart from outside when uid is 0.
    const GID: u32 = 4242;
    let st = ns.cmd(WIRESPEED).arg(&iface).gid(GID).status().unwrap();
    assert!(st.success());
    let pid: u32 = ns
        .exec(&["pgrep", "-f", &format!("wirespeed {iface}$")])
        .trim()
        .parse()
        .unwrap();
    let dp = children_of(pid);
    assert_eq!(dp.len(), 1, "one data plane child");
    for (who, p) in [("control", pid), ("data plane", dp[0])] {
        assert_eq!(egid(p), GID, "{who} runs with the test's group");
        let owner = std::fs::metadata(format!("/proc/{p}/environ")).unwrap();
        assert_eq!(
            (owner.uid(), owner.gid()),
            (0, 0),
            "{who} is not dumpable: its /proc entries belong to root:root"
        );
    }
    let region = region_of(pid, &iface);
    let m = std::fs::symlink_metadata(&region).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o600, 0),
        "{}",
        region.display()
    );
    let dir = std::fs::symlink_metadata(dataplane::shm::REGION_DIR).unwrap();
    assert!(dir.file_type().is_dir());
    assert_eq!((dir.mode() & 0o7777, dir.uid()), (0o700, 0));
    ns.ip(&["link", "del", &iface]);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid) && !alive(dp[0])),
        "daemon exits with its interface"
    );
    assert!(!region.exists(), "control removes its region on exit");
}

#[test]
fn same_interface_in_another_namespace_leaves_the_running_one_alone() {
    let Some(_serial) = common::netns_test("same_name_other_netns") else {
        return;
    };
    let t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    let b_addr = t.b.tunnel_ip.to_string();
    assert_ping(&t.a.ns, &b_addr, 2);
    let hs_before = t.a.peer().latest_handshake;
    let dp = children_of(t.a.daemon.pid());
    let region = region_of(t.a.daemon.pid(), &t.a.iface);
    let ino = std::fs::metadata(&region).unwrap().ino();
    let sock = common::impls::sock_path(&t.a.iface);

    // The UAPI socket's name is not per namespace (as with wireguard-go):
    // the newcomer is refused, and must leave everything of A's alone.
    let other = Netns::new();
    let out = other.cmd(WIRESPEED).arg(&t.a.iface).output().unwrap();
    assert!(!out.status.success(), "the second instance is refused");
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty(), "says why");
    drop(other);

    assert!(sock.exists(), "A's UAPI socket is still there");
    assert_eq!(
        std::fs::metadata(&region).unwrap().ino(),
        ino,
        "A's region untouched"
    );
    assert_eq!(
        children_of(t.a.daemon.pid()),
        dp,
        "A's data plane never died"
    );
    assert_ping(&t.a.ns, &b_addr, 3);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
    assert_eq!(
        t.a.peer().latest_handshake,
        hs_before,
        "same session: A's keys were never touched"
    );
}

#[test]
fn killed_data_plane_is_restarted_and_sessions_resume() {
    let Some(_serial) = common::netns_test("killed_data_plane") else {
        return;
    };
    let t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    let b_addr = t.b.tunnel_ip.to_string();
    assert_ping(&t.a.ns, &b_addr, 2);
    let hs_before = t.a.peer().latest_handshake;
    let dp = children_of(t.a.daemon.pid());
    assert_eq!(dp.len(), 1);
    kill9(dp[0]);
    assert!(wait_until(Duration::from_secs(10), || {
        let now = children_of(t.a.daemon.pid());
        now.len() == 1 && now[0] != dp[0]
    }));
    assert_ping(&t.a.ns, &b_addr, 3);
    assert_eq!(
        t.a.peer().latest_handshake,
        hs_before,
        "same session: keys came back from shared memory"
    );
    assert!(
        t.a.daemon.log().contains("restart"),
        "restart is logged:\n{}",
        t.a.daemon.log()
    );
}

#[test]
fn data_plane_keeps_forwarding_after_control_is_killed() {
    let Some(_serial) = common::netns_test("control_killed") else {
        return;
    };
    let t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    let b_addr = t.b.tunnel_ip.to_string();
    assert_ping(&t.a.ns, &b_addr, 2);
    let dp = children_of(t.b.daemon.pid());
    kill9(t.b.daemon.pid());
    sleep(Duration::from_millis(300));
    assert!(alive(dp[0]), "the data plane outlives control");
    assert_ping(&t.a.ns, &b_addr, 3);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
    // With the interface gone the orphaned data plane exits, and takes the
    // region its dead control left behind with it (40 MB of RAM).
    let region = region_of(dp[0], &t.b.iface);
    assert!(region.exists(), "{}", region.display());
    t.b.ns.ip(&["link", "del", &t.b.iface]);
    assert!(
        common::util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            !alive(dp[0])
        }),
        "the data plane exits with its interface"
    );
    assert!(
        !region.exists(),
        "{} is removed by the last process that used it",
        region.display()
    );
}

/// `wg setconf` of `side`'s configuration: what a service that restarts
/// control re-applies (control keeps no configuration on disk).
fn setconf(side: &Side) {
    let c = &side.conf;
    let mut text = format!("[Interface]\nPrivateKey = {}\n", c.private_key);
    if let Some(port) = c.listen_port {
        text += &format!("ListenPort = {port}\n");
    }
    for p in &c.peers {
        text += &format!(
            "[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            p.public_key,
            p.allowed_ips.join(",")
        );
        if let Some(psk) = &p.preshared_key {
            text += &format!("PresharedKey = {psk}\n");
        }
        if let Some(ep) = &p.endpoint {
            text += &format!("Endpoint = {ep}\n");
        }
    }
    let dir = common::util::TempDir::new();
    let path = dir.write("wg.conf", &text);
    side.ns
        .exec(&["wg", "setconf", &side.iface, path.to_str().unwrap()]);
}

#[test]
fn restarted_control_resumes_the_sessions_of_a_running_transfer() {
    let Some(_serial) = common::netns_test("control_restart") else {
        return;
    };
    let mut t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 2);
    // A new handshake after this would show in `wg show`'s seconds.
    sleep(Duration::from_millis(1100));
    let (hs_a, hs_b) = (t.a.peer().latest_handshake, t.b.peer().latest_handshake);
    assert!(hs_a.is_some() && hs_b.is_some());
    let dp = children_of(t.b.daemon.pid());
    assert_eq!(dp.len(), 1);

    const BYTES: u64 = 128 << 20;
    let transfer = TcpTransfer::start(&t.a.ns, &t.b.ns, t.b.tunnel_addr(5201), BYTES);
    assert!(transfer.wait_for_progress(8 << 20, Duration::from_secs(20)));
    kill9(t.b.daemon.pid());
    // Reaps it and removes the socket it left.
    t.b.daemon.stop();
    assert!(
        transfer.received() < BYTES,
        "control was killed before the transfer ended"
    );
    // The same command again, then the configuration (control keeps none).
    t.b.daemon = Impl::Wirespeed.start(&t.b.ns, &t.b.iface);
    setconf(&t.b);
    let log = t.b.daemon.log();
    assert!(log.contains("re-attached"), "{log}");
    assert!(log.contains("1 session(s) resumed"), "{log}");
    assert!(
        !log.contains("cannot share"),
        "the data plane's events wake the new control: {log}"
    );

    let r = transfer.finish();
    r.assert_intact(BYTES);
    assert!(alive(dp[0]), "the same data plane forwarded throughout");
    t.b.daemon.assert_running();
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
    assert_eq!(t.a.peer().latest_handshake, hs_a, "no new handshake");
    assert_eq!(
        t.b.peer().latest_handshake,
        hs_b,
        "the restarted control reports the session it adopted"
    );
    // And it is in charge: deleting the interface ends both processes.
    let pid = t.b.daemon.pid();
    let region = region_of(pid, &t.b.iface);
    t.b.ns.ip(&["link", "del", &t.b.iface]);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(dp[0])
            && !t.b.daemon.running()),
        "both exit with the interface"
    );
    assert!(!region.exists(), "{}", region.display());
}

#[test]
fn a_data_plane_that_cannot_restart_is_retried_not_fatal() {
    let Some(_serial) = common::netns_test("respawn_backoff") else {
        return;
    };
    let mut t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    let b_addr = t.b.tunnel_ip.to_string();
    assert_ping(&t.a.ns, &b_addr, 2);
    let hs_before = t.a.peer().latest_handshake;
    let pid = t.a.daemon.pid();
    let dp = children_of(pid);
    // A region others could read is refused by every data plane start
    // (control keeps the mapping it has).
    let region = region_of(pid, &t.a.iface);
    let mode = |m: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&region, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(0o644);
    kill9(dp[0]);
    let failures = || {
        t.a.daemon
            .log()
            .matches("data plane restart failed")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || failures() >= 3),
        "{}",
        t.a.daemon.log()
    );
    t.a.daemon.assert_running();
    mode(0o600);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let now = children_of(pid);
            now.len() == 1 && now[0] != dp[0]
        }),
        "{}",
        t.a.daemon.log()
    );
    assert_ping(&t.a.ns, &b_addr, 3);
    assert_eq!(
        t.a.peer().latest_handshake,
        hs_before,
        "same session: keys came back from shared memory"
    );
}

#[test]
fn replies_leave_from_the_address_the_peer_wrote_to() {
    let Some(_serial) = common::netns_test("sticky_source") else {
        return;
    };
    let mut t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    let b_addr = t.b.tunnel_ip.to_string();
    // B is multi-homed: A talks to its second address.
    t.b.ns.ip(&["addr", "add", "10.0.0.12/24", "dev", "veth0"]);
    let second = format!("10.0.0.12:{}", t.b.port);
    t.a.update_peer(|p| p.endpoint = Some(second.clone()));
    assert_ping(&t.a.ns, &b_addr, 3);
    // Had B answered from 10.0.0.2, A would have roamed to that address.
    assert_eq!(
        t.a.peer().endpoint.as_deref(),
        Some(second.as_str()),
        "B replied from the address A wrote to"
    );
    // The address disappears: B's next replies must fall back to another
    // source instead of failing.
    t.b.ns.ip(&["addr", "del", "10.0.0.12/24", "dev", "veth0"]);
    let first = format!("10.0.0.2:{}", t.b.port);
    t.a.update_peer(|p| p.endpoint = Some(first.clone()));
    assert_ping(&t.a.ns, &b_addr, 3);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
}

#[test]
fn xdp_program_attached_while_running_and_gone_after_exit() {
    let Some(_serial) = common::netns_test("xdp_attach") else {
        return;
    };
    let mut t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    // Attached once the peer (whose route leaves through veth0) is
    // configured: the data plane looks at the peer table a few times a second.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let link = t.a.ns.ip(&["link", "show", "veth0"]);
            link.contains("prog/xdp") && link.contains("xdp_steer")
        }),
        "{}",
        t.a.ns.ip(&["link", "show", "veth0"])
    );
    // The program is on the link before its AF_XDP sockets are made and
    // handed to the workers (the log line comes after that); a worker takes
    // them at its next turn. Until then replies go through the kernel, so
    // one ping first, then the three that must be steered.
    assert!(
        wait_until(Duration::from_secs(5), || t
            .a
            .daemon
            .log()
            .contains("backend: AF_XDP on veth0")),
        "backend choice is logged:\n{}",
        t.a.daemon.log()
    );
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 1);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    t.a.daemon.stop();
    assert!(wait_until(Duration::from_secs(5), || !t
        .a
        .ns
        .ip(&["link", "show", "veth0"])
        .contains("prog/xdp")));
    // The steered transport messages went through AF_XDP, not the kernel.
    let log = t.a.daemon.log();
    let steered: u64 = log
        .split("XDP on veth0: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(steered >= 3, "transport messages steered to AF_XDP:\n{log}");
}

/// The data plane's lines and aya's (through the `log` facade) follow
/// LOG_LEVEL as control's do: aya's debug lines with debug, the data
/// plane's own at info, only errors with error.
#[test]
fn data_plane_and_aya_lines_follow_log_level() {
    let Some(_serial) = common::netns_test("dataplane_log_level") else {
        return;
    };
    let xdp_attached = |t: &Tunnel| {
        wait_until(Duration::from_secs(5), || {
            t.a.ns.ip(&["link", "show", "veth0"]).contains("xdp_steer")
        })
    };
    for level in ["debug", "info", "error"] {
        let t = Tunnel::with(
            Impl::Wirespeed,
            Impl::Wirespeed,
            common::TunnelOpts {
                a_env: vec![("LOG_LEVEL", level)],
                ..Default::default()
            },
        );
        assert!(xdp_attached(&t), "{level}: XDP on veth0");
        assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 1);
        let log = t.a.daemon.log();
        let aya = log
            .lines()
            .any(|l| l.starts_with("wirespeed-dataplane[") && l.contains("]: aya::"));
        let own = log.lines().any(|l| {
            l.starts_with("wirespeed-dataplane[") && l.contains("]: backend: AF_XDP on veth0")
        });
        assert_eq!(
            (aya, own),
            match level {
                "debug" => (true, true),
                "info" => (false, true),
                _ => (false, false),
            },
            "{level}: (aya's lines, the data plane's own):\n{log}"
        );
    }
}
