//! A planned restart of control, as `systemctl restart wirespeed@IFACE`
//! does it (systemd itself is not PID 1 where the tests run, so this runs
//! the unit's steps by hand): control detaches (`wirespeed --detach`, or
//! SIGUSR2, the unit's RestartKillSignal), the same command starts again
//! and re-attaches, and the unit's post-start step re-applies the
//! configuration from IFACE.conf. Nothing of the tunnel may notice.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::Duration;

use common::util::{children_of, running as alive, wait_until, TempDir};
use common::{assert_ping, Impl, Netns, Side, TcpTransfer, Tunnel};

const WIRESPEED: &str = env!("CARGO_BIN_EXE_wirespeed");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The interface's index, or None if it is not there.
fn ifindex(ns_name: &str, iface: &str) -> Option<u32> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns_name, "-o", "link", "show", "dev", iface])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.split(':').next()?.trim().parse().ok())
        .flatten()
}

/// Looks at the interface every 20 ms until stopped; what it saw, in order
/// of first sight.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Option<u32>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(ns: &Netns, iface: &str) -> Watch {
        let (ns, iface) = (ns.name().to_string(), iface.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let i = ifindex(&ns, &iface);
                let mut v = v.lock().unwrap();
                if v.last() != Some(&i) {
                    v.push(i);
                }
                drop(v);
                sleep(Duration::from_millis(20));
            }
        });
        Watch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Option<u32>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// `side`'s configuration as /etc/wireguard/IFACE.conf would hold it, with
/// the wg-quick keys (Address, MTU) that `wg-quick strip` must take out.
fn write_conf(side: &Side, dir: &TempDir) {
    let c = &side.conf;
    let mut text = format!("[Interface]\nPrivateKey = {}\n", c.private_key);
    for a in &c.addresses {
        text += &format!("Address = {a}\n");
    }
    text += "MTU = 1420\n";
    if let Some(port) = c.listen_port {
        text += &format!("ListenPort = {port}\n");
    }
    for p in &c.peers {
        text += &format!(
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            p.public_key,
            p.allowed_ips.join(", ")
        );
        if let Some(psk) = &p.preshared_key {
            text += &format!("PresharedKey = {psk}\n");
        }
        if let Some(ep) = &p.endpoint {
            text += &format!("Endpoint = {ep}\n");
        }
    }
    dir.write(&format!("{}.conf", side.iface), &text);
}

/// The unit's `ExecStartPost=`: `wirespeed-unit post-start IFACE`.
fn unit_post_start(side: &Side, conf_dir: &TempDir) {
    let script = repo().join("deploy/systemd/wirespeed-unit");
    let out = side
        .ns
        .cmd(script.to_str().unwrap())
        .args(["post-start", &side.iface])
        .env("WIRESPEED_CONFIG_DIR", conf_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wirespeed-unit post-start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn planned_restart_during_a_transfer_loses_nothing() {
    let Some(_serial) = common::netns_test("planned_restart") else {
        return;
    };
    let mut t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    let conf_dir = TempDir::new();
    write_conf(&t.b, &conf_dir);
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 2);
    // A new handshake after this would show in `wg show`'s seconds.
    sleep(Duration::from_millis(1100));
    let (hs_a, hs_b) = (t.a.peer().latest_handshake, t.b.peer().latest_handshake);
    assert!(hs_a.is_some() && hs_b.is_some());
    let dp = children_of(t.b.daemon.pid());
    assert_eq!(dp.len(), 1);
    let index = ifindex(t.b.ns.name(), &t.b.iface).expect("B's interface");
    let watch = Watch::start(&t.b.ns, &t.b.iface);

    const BYTES: u64 = 128 << 20;
    let transfer = TcpTransfer::start(&t.a.ns, &t.b.ns, t.b.tunnel_addr(5201), BYTES);
    assert!(transfer.wait_for_progress(8 << 20, Duration::from_secs(20)));

    // What `systemctl restart` does first (RestartKillSignal=SIGUSR2).
    let out =
        t.b.ns
            .cmd(WIRESPEED)
            .args(["--detach", &t.b.iface])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "wirespeed --detach: {}{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        t.b.daemon.log()
    );
    let status = t.b.daemon.exit_status().expect("control exited");
    assert!(status.success(), "a clean exit, not a death: {status}");
    assert!(
        transfer.received() < BYTES,
        "control left before the transfer ended"
    );
    let log = t.b.daemon.log();
    assert!(log.contains("detached: data plane pid"), "{log}");
    let sock = format!("/var/run/wireguard/{}.sock", t.b.iface);
    assert!(!Path::new(&sock).exists(), "control removed its socket");
    assert!(alive(dp[0]), "the data plane stays");

    // What the unit does next: the same command, then ExecStartPost.
    t.b.daemon.stop();
    t.b.daemon = Impl::Wirespeed.start(&t.b.ns, &t.b.iface);
    unit_post_start(&t.b, &conf_dir);
    let log = t.b.daemon.log();
    assert!(log.contains("re-attached"), "{log}");
    assert!(log.contains("handed over by control"), "{log}");
    assert!(log.contains("1 session(s) resumed"), "{log}");

    let r = transfer.finish();
    r.assert_intact(BYTES);
    let seen = watch.finish();
    assert_eq!(
        seen,
        [Some(index)],
        "the interface was there throughout, never re-created"
    );
    assert!(alive(dp[0]), "the same data plane forwarded throughout");
    t.b.daemon.assert_running();
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 3);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
    assert_eq!(t.a.peer().latest_handshake, hs_a, "no new handshake");
    assert_eq!(t.b.peer().latest_handshake, hs_b, "the adopted session");

    // And `systemctl stop` (SIGTERM) is still a full stop.
    t.b.daemon.stop();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            !alive(dp[0]) && !t.b.ns.has_link(&t.b.iface)
        }),
        "SIGTERM takes the data plane and the interface with it"
    );
}

#[test]
fn a_detached_idle_interface_waits_for_the_next_control() {
    let Some(_serial) = common::netns_test("detach_idle") else {
        return;
    };
    let ns = Netns::new();
    let iface = format!("wsi{}", std::process::id() % 100_000);
    let mut d = Impl::Wirespeed.start(&ns, &iface);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", &iface]);
    ns.ip(&["link", "set", "dev", &iface, "up"]);
    let index = ifindex(ns.name(), &iface).unwrap();
    let dp = children_of(d.pid());
    assert_eq!(dp.len(), 1);
    // No peer, no session: a data plane whose control died would leave
    // within a second (it checks once a second). SIGUSR2 is the unit's
    // RestartKillSignal.
    common::util::signal(d.pid(), libc::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || d
            .exit_status()
            .is_some()),
        "control leaves on SIGUSR2"
    );
    assert!(d.exit_status().unwrap().success(), "{}", d.log());
    sleep(Duration::from_secs(3));
    assert!(alive(dp[0]), "the data plane waits for the next control");
    assert_eq!(
        ifindex(ns.name(), &iface),
        Some(index),
        "and keeps the interface"
    );
    let addrs = ns.ip(&["-o", "addr", "show", "dev", &iface]);
    assert!(addrs.contains("10.77.0.1/24"), "{addrs}");

    d.stop();
    let mut d = Impl::Wirespeed.start(&ns, &iface);
    // Written just after the socket the start waits for.
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || d
            .log()
            .contains("handed over by control")),
        "{}",
        d.log()
    );
    d.stop();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            !alive(dp[0]) && !ns.has_link(&iface)
        }),
        "the re-attached control tears down on SIGTERM: data plane alive {}, link {}\n{}",
        alive(dp[0]),
        ns.has_link(&iface),
        d.log()
    );
}

/// `wirespeed-unit STEP iface` inside `ns`, as the unit runs it.
fn unit_step(ns: &Netns, step: &str, iface: &str, conf_dir: &TempDir) -> String {
    let script = repo().join("deploy/systemd/wirespeed-unit");
    // A file, not a pipe: the daemons wg-quick starts inherit it and
    // outlive the step (systemd waits for the step's exit, not for EOF).
    let out = conf_dir.join(&format!("{step}.out"));
    let f = std::fs::File::create(&out).unwrap();
    let status = ns
        .cmd(script.to_str().unwrap())
        .args([step, iface])
        .env("WIRESPEED_CONFIG_DIR", conf_dir.path())
        .env("WIRESPEED", WIRESPEED)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "wirespeed-unit {step}: {text}");
    text
}

#[test]
fn the_units_fresh_start_goes_through_wg_quick_and_its_stop_runs_post_down() {
    let Some(_serial) = common::netns_test("unit_fresh_start") else {
        return;
    };
    let ns = Netns::new();
    let iface = format!("wsu{}", std::process::id() % 100_000);
    let dir = TempDir::new();
    let key = ns.exec(&["wg", "genkey"]);
    let peer = ns.sh("wg genkey | wg pubkey");
    let marks = dir.path().display().to_string();
    dir.write(
        &format!("{iface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.78.0.1/24\n\
             PostUp = touch {marks}/up-%i\nPostDown = touch {marks}/down-%i # a comment\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.78.1.0/24\n",
            key.trim(),
            peer.trim()
        ),
    );
    let sock = PathBuf::from(format!("/var/run/wireguard/{iface}.sock"));

    // ExecStartPre: wg-quick brings the file up, its daemon hands over.
    let said = unit_step(&ns, "pre-start", &iface, &dir);
    assert!(said.contains("detached"), "{said}");
    assert!(
        dir.join(&format!("up-{iface}")).exists(),
        "PostUp ran: {said}"
    );
    assert!(!sock.exists(), "wg-quick's control left");
    let routes = ns.ip(&["route", "show", "dev", &iface]);
    assert!(routes.contains("10.78.1.0/24"), "{routes}");

    // ExecStart, then ExecStartPost.
    let mut d = Impl::Wirespeed.start(&ns, &iface);
    unit_step(&ns, "post-start", &iface, &dir);
    assert!(d.log().contains("re-attached"), "{}", d.log());
    let peers = ns.exec(&["wg", "show", &iface, "peers"]);
    assert_eq!(peers.trim(), peer.trim());
    let addrs = ns.ip(&["-o", "addr", "show", "dev", &iface]);
    assert!(addrs.contains("10.78.0.1/24"), "{addrs}");

    // `systemctl stop`: SIGTERM, then ExecStopPost.
    d.stop();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || !ns
            .has_link(&iface)),
        "SIGTERM deletes the interface"
    );
    unit_step(&ns, "post-stop", &iface, &dir);
    assert!(dir.join(&format!("down-{iface}")).exists(), "PostDown ran");
}
