//! The UAPI server driven by the real `wg` tool (wireguard-tools), the way
//! users and wg-quick drive wireguard-go: `wg set`, `wg show`, `wg showconf`,
//! `wg setconf` / `addconf` / `syncconf`, peer removal, errors, and a large
//! dump. The device behind the socket is an in-memory model implementing the
//! UAPI semantics (replace_peers, remove, update_only, replace_allowed_ips,
//! allowed IPs owned by one peer at a time, clamped private keys).
//!
//! Needs `wg` in PATH and permission to create /var/run/wireguard/*.sock
//! (root); skipped otherwise. Each test uses its own interface name,
//! `wsuapiN-<pid>`, and removes its socket (also when it fails).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::keys::{encode_base64_key, PresharedKey, PrivateKey, PublicKey};
use control::uapi::errno::EADDRINUSE;
use control::uapi::{
    canonical_prefix, DeviceSnapshot, PeerSnapshot, SetRequest, UapiHandle, UapiHandler, UapiServer,
};

// ---------------------------------------------------------------------------
// The in-memory device.

#[derive(Default)]
struct Peer {
    psk: Option<PresharedKey>,
    endpoint: Option<SocketAddr>,
    keepalive: u16,
    allowed: Vec<(IpAddr, u8)>,
    last_handshake: Option<Duration>,
    rx: u64,
    tx: u64,
}

#[derive(Default)]
struct MemDevice {
    private_key: Option<PrivateKey>,
    listen_port: u16,
    fwmark: u32,
    /// Insertion order -> peer; `index` maps keys to their slot.
    peers: BTreeMap<u64, (PublicKey, Peer)>,
    index: HashMap<PublicKey, u64>,
    next: u64,
    /// Which peer owns each prefix (cryptokey routing: at most one).
    owner: HashMap<(IpAddr, u8), PublicKey>,
    /// Ports that "fail to bind", to exercise handler errors through `wg`.
    busy_ports: Vec<u16>,
}

impl MemDevice {
    fn remove_peer(&mut self, k: &PublicKey) {
        if let Some(slot) = self.index.remove(k) {
            let (_, p) = self.peers.remove(&slot).unwrap();
            for a in p.allowed {
                self.owner.remove(&a);
            }
        }
    }

    fn peer_mut(&mut self, k: &PublicKey) -> Option<&mut Peer> {
        let slot = self.index.get(k)?;
        self.peers.get_mut(slot).map(|(_, p)| p)
    }

    fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

impl UapiHandler for MemDevice {
    fn get(&mut self) -> DeviceSnapshot {
        DeviceSnapshot {
            private_key: self.private_key.clone(),
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            peers: self
                .peers
                .values()
                .map(|(k, p)| PeerSnapshot {
                    public_key: *k,
                    preshared_key: p.psk.clone(),
                    endpoint: p.endpoint,
                    last_handshake: p.last_handshake,
                    rx_bytes: p.rx,
                    tx_bytes: p.tx,
                    persistent_keepalive: p.keepalive,
                    allowed_ips: p.allowed.clone(),
                })
                .collect(),
        }
    }

    fn set(&mut self, req: SetRequest) -> Result<(), i32> {
        // Everything that can fail is checked before anything changes.
        if let Some(p) = req.listen_port {
            if self.busy_ports.contains(&p) {
                return Err(EADDRINUSE);
            }
        }
        if let Some(k) = req.private_key {
            self.private_key = k.map(|k| {
                let mut b = *k.as_bytes();
                b[0] &= 248;
                b[31] = (b[31] & 127) | 64;
                PrivateKey::from_bytes(b)
            });
        }
        if let Some(p) = req.listen_port {
            self.listen_port = if p == 0 { 43_210 } else { p };
        }
        if let Some(m) = req.fwmark {
            self.fwmark = m.unwrap_or(0);
        }
        if req.replace_peers {
            self.peers.clear();
            self.index.clear();
            self.owner.clear();
        }
        for pc in req.peers {
            if pc.remove {
                self.remove_peer(&pc.public_key);
                continue;
            }
            if !self.index.contains_key(&pc.public_key) {
                if pc.update_only {
                    continue;
                }
                let slot = self.next;
                self.next += 1;
                self.index.insert(pc.public_key, slot);
                self.peers.insert(slot, (pc.public_key, Peer::default()));
            }
            if pc.replace_allowed_ips {
                let old = std::mem::take(&mut self.peer_mut(&pc.public_key).unwrap().allowed);
                for a in old {
                    self.owner.remove(&a);
                }
            }
            for (ip, cidr) in pc.allowed_ips {
                let a = (canonical_prefix(ip, cidr), cidr);
                if let Some(prev) = self.owner.insert(a, pc.public_key) {
                    if prev == pc.public_key {
                        continue;
                    }
                    if let Some(q) = self.peer_mut(&prev) {
                        q.allowed.retain(|x| *x != a);
                    }
                }
                self.peer_mut(&pc.public_key).unwrap().allowed.push(a);
            }
            let p = self.peer_mut(&pc.public_key).unwrap();
            if let Some(k) = pc.preshared_key {
                p.psk = k;
            }
            if let Some(e) = pc.endpoint {
                p.endpoint = Some(e);
            }
            if let Some(k) = pc.persistent_keepalive {
                p.keepalive = k;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Harness.

struct Fixture {
    iface: String,
    dev: Arc<Mutex<MemDevice>>,
    server: Option<UapiHandle>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    /// None (and a note on stderr) when `wg` or root is missing.
    fn new(n: u32) -> Option<Fixture> {
        if Command::new("wg").arg("--version").output().is_err() {
            eprintln!("skipping: `wg` (wireguard-tools) is not installed");
            return None;
        }
        let iface = format!("wsuapi{n}-{}", std::process::id());
        assert!(iface.len() <= 15);
        let dev = Arc::new(Mutex::new(MemDevice::default()));
        let server = match UapiServer::bind(&iface) {
            Ok(s) => s.with_logger(|_| {}).spawn_shared(dev.clone()).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("skipping: cannot create the UAPI socket: {e}");
                return None;
            }
            Err(e) => panic!("bind {iface}: {e}"),
        };
        let dir = std::env::temp_dir().join(format!("{iface}-files"));
        std::fs::create_dir_all(&dir).unwrap();
        Some(Fixture {
            iface,
            dev,
            server: Some(server),
            dir,
        })
    }

    fn path(&self) -> &Path {
        self.server.as_ref().unwrap().path()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }

    /// Runs `wg ARGS`, returning (success, stdout, stderr).
    fn wg(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("wg")
            .args(args)
            .env_remove("WG_HIDE_KEYS")
            .env("WG_COLOR_MODE", "never")
            .output()
            .expect("run wg");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn wg_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.wg(args);
        assert!(ok, "wg {args:?} failed: {err}");
        out
    }

    fn dump(&self) -> Vec<Vec<String>> {
        self.wg_ok(&["show", &self.iface, "dump"])
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// The peer lines of `wg show dump`, keyed by public key.
    fn dump_peers(&self) -> BTreeMap<String, Vec<String>> {
        self.dump()
            .into_iter()
            .skip(1)
            .map(|f| (f[0].clone(), f))
            .collect()
    }

    fn raw(&self, text: &[u8]) -> String {
        let mut s = UnixStream::connect(self.path()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(text);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

fn key(b: u8) -> PublicKey {
    PublicKey([b; 32])
}

/// A private key as `wg genkey` makes them: clamped, so the device reports
/// it unchanged (the kernel and wireguard-go store keys clamped).
fn genkey() -> PrivateKey {
    let mut b = *PrivateKey::generate().as_bytes();
    b[0] &= 248;
    b[31] = (b[31] & 127) | 64;
    PrivateKey::from_bytes(b)
}

fn b64(k: &PublicKey) -> String {
    k.to_base64()
}

// ---------------------------------------------------------------------------

#[test]
fn uapi_wg_set_show_showconf_and_errors() {
    let Some(fx) = Fixture::new(0) else { return };
    let iface = fx.iface.clone();
    let ifc = iface.as_str();

    // `wg` finds a userspace interface through nothing but its socket.
    assert!(fx
        .wg_ok(&["show", "interfaces"])
        .split_whitespace()
        .any(|i| i == ifc));
    assert_eq!(fx.wg_ok(&["show", ifc, "dump"]), "(none)\t(none)\t0\toff\n");

    let sk = genkey();
    let sk_file = fx.file("sk", &format!("{}\n", sk.to_base64()));
    let psk = PresharedKey::from_bytes([0x5a; 32]);
    let psk_file = fx.file("psk", &psk.to_base64());
    let (k1, k2, k3, k4) = (key(1), key(2), key(3), key(4));

    fx.wg_ok(&[
        "set",
        ifc,
        "private-key",
        &sk_file,
        "listen-port",
        "51999",
        "fwmark",
        "0x20",
        "peer",
        &b64(&k1),
        "preshared-key",
        &psk_file,
        "allowed-ips",
        "10.0.0.0/24,fd00::/64",
        "endpoint",
        "127.0.0.1:1234",
        "persistent-keepalive",
        "25",
    ]);
    {
        let d = fx.dev.lock().unwrap();
        assert_eq!(d.listen_port, 51999);
        assert_eq!(d.fwmark, 0x20);
        assert_eq!(
            d.private_key.as_ref().unwrap().public_key(),
            sk.public_key()
        );
        assert_eq!(d.peer_count(), 1);
    }
    let dump = fx.dump();
    assert_eq!(
        dump[0],
        [
            sk.to_base64(),
            sk.public_key().to_base64(),
            "51999".into(),
            "0x20".into()
        ]
    );
    assert_eq!(
        dump[1],
        [
            b64(&k1),
            psk.to_base64(),
            "127.0.0.1:1234".into(),
            "10.0.0.0/24,fd00::/64".into(),
            "0".into(),
            "0".into(),
            "0".into(),
            "25".into()
        ]
    );
    assert_eq!(
        fx.wg_ok(&["show", ifc, "public-key"]).trim(),
        sk.public_key().to_base64()
    );
    assert_eq!(fx.wg_ok(&["show", ifc, "listen-port"]).trim(), "51999");
    assert_eq!(fx.wg_ok(&["show", ifc, "fwmark"]).trim(), "0x20");
    assert_eq!(
        fx.wg_ok(&["show", ifc, "preshared-keys"]),
        format!("{}\t{}\n", b64(&k1), psk.to_base64())
    );

    // Handshake time and counters reach `wg show` exactly.
    {
        let mut d = fx.dev.lock().unwrap();
        let p = d.peer_mut(&k1).unwrap();
        p.last_handshake = Some(Duration::new(1_700_000_123, 456_000_000));
        p.rx = 123_456_789_012;
        p.tx = 42;
    }
    let l = &fx.dump()[1];
    assert_eq!(
        (&*l[4], &*l[5], &*l[6]),
        ("1700000123", "123456789012", "42")
    );
    assert_eq!(
        fx.wg_ok(&["show", ifc, "latest-handshakes"]),
        format!("{}\t1700000123\n", b64(&k1))
    );
    assert_eq!(
        fx.wg_ok(&["show", ifc, "transfer"]),
        format!("{}\t123456789012\t42\n", b64(&k1))
    );
    let pretty = fx.wg_ok(&["show", ifc]);
    assert!(pretty.contains(&format!("interface: {ifc}")), "{pretty}");
    assert!(pretty.contains("listening port: 51999"), "{pretty}");
    assert!(
        pretty.contains("persistent keepalive: every 25 seconds"),
        "{pretty}"
    );

    // showconf, byte for byte.
    assert_eq!(
        fx.wg_ok(&["showconf", ifc]),
        format!(
            "[Interface]\nListenPort = 51999\nFwMark = 0x20\nPrivateKey = {}\n\n\
             [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.0.0.0/24, fd00::/64\n\
             Endpoint = 127.0.0.1:1234\nPersistentKeepalive = 25\n",
            sk.to_base64(),
            b64(&k1),
            psk.to_base64()
        )
    );

    // IPv6 endpoint, allowed IPs with host bits (masked by the device),
    // a prefix moving from one peer to another, keepalive off.
    fx.wg_ok(&[
        "set",
        ifc,
        "peer",
        &b64(&k2),
        "endpoint",
        "[::1]:51820",
        "allowed-ips",
        "10.0.0.7/24,192.168.1.1/32",
    ]);
    let peers = fx.dump_peers();
    assert_eq!(peers[&b64(&k1)][3], "fd00::/64");
    assert_eq!(peers[&b64(&k2)][2], "[::1]:51820");
    assert_eq!(peers[&b64(&k2)][3], "10.0.0.0/24,192.168.1.1/32");
    assert_eq!(peers[&b64(&k2)][1], "(none)");
    fx.wg_ok(&[
        "set",
        ifc,
        "peer",
        &b64(&k1),
        "persistent-keepalive",
        "off",
        "allowed-ips",
        "",
    ]);
    let peers = fx.dump_peers();
    assert_eq!(peers[&b64(&k1)][3], "(none)");
    assert_eq!(peers[&b64(&k1)][7], "off");

    // setconf: replaces everything.
    let conf = fx.file(
        "set.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 52000\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.2.0.0/16\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.3.0.0/16, fd03::/48\nEndpoint = 127.0.0.3:3\n",
            sk.to_base64(),
            b64(&k2),
            b64(&k3)
        ),
    );
    fx.wg_ok(&["setconf", ifc, &conf]);
    let dump = fx.dump();
    assert_eq!(dump[0][2], "52000");
    assert_eq!(dump[0][3], "off", "setconf without FwMark clears it");
    let peers = fx.dump_peers();
    assert_eq!(peers.keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![b64(&k2), b64(&k3)];
        v.sort();
        v
    });
    assert_eq!(peers[&b64(&k2)][3], "10.2.0.0/16");
    // replace_peers dropped the old k2 with its endpoint.
    assert_eq!(peers[&b64(&k2)][2], "(none)");
    assert_eq!(peers[&b64(&k3)][2], "127.0.0.3:3");
    assert_eq!(peers[&b64(&k3)][3], "10.3.0.0/16,fd03::/48");

    // addconf: adds, keeps the rest.
    let add = fx.file(
        "add.conf",
        &format!(
            "[Peer]\nPublicKey = {}\nAllowedIPs = 10.4.0.0/16\nPersistentKeepalive = 5\n",
            b64(&k4)
        ),
    );
    fx.wg_ok(&["addconf", ifc, &add]);
    assert_eq!(fx.dump_peers().len(), 3);
    assert_eq!(fx.dump()[0][2], "52000");

    // syncconf: k3 goes away, k4's allowed IPs are replaced.
    let sync = fx.file(
        "sync.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 52000\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.2.0.0/16\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.44.0.0/16\nPersistentKeepalive = 5\n",
            sk.to_base64(),
            b64(&k2),
            b64(&k4)
        ),
    );
    fx.wg_ok(&["syncconf", ifc, &sync]);
    let peers = fx.dump_peers();
    assert!(!peers.contains_key(&b64(&k3)));
    assert_eq!(peers[&b64(&k4)][3], "10.44.0.0/16");
    assert_eq!(peers[&b64(&k4)][7], "5");

    // Peer removal.
    fx.wg_ok(&["set", ifc, "peer", &b64(&k2), "remove"]);
    assert_eq!(
        fx.dump_peers().keys().cloned().collect::<Vec<_>>(),
        vec![b64(&k4)]
    );
    assert_eq!(fx.dev.lock().unwrap().peer_count(), 1);

    // fwmark off, listen-port 0 (random), private key removed with an empty file.
    fx.wg_ok(&["set", ifc, "fwmark", "7"]);
    assert_eq!(fx.dump()[0][3], "0x7");
    fx.wg_ok(&["set", ifc, "fwmark", "off", "listen-port", "0"]);
    assert_eq!(fx.dump()[0][3], "off");
    assert_eq!(fx.dump()[0][2], "43210");
    let empty = fx.file("empty", "");
    fx.wg_ok(&["set", ifc, "private-key", &empty]);
    assert_eq!(fx.dump()[0][0], "(none)");
    fx.wg_ok(&["set", ifc, "private-key", &sk_file]);

    // A handler error reaches the user through `wg` with the right errno, and
    // nothing of that request is applied.
    fx.dev.lock().unwrap().busy_ports.push(1);
    let before = fx.dump();
    let (ok, _, err) = fx.wg(&["set", ifc, "fwmark", "9", "listen-port", "1"]);
    assert!(!ok);
    assert!(err.contains("Address already in use"), "{err}");
    assert_eq!(fx.dump(), before);

    // Garbage over a raw connection: errno=-22 like wireguard-go, state unchanged.
    let gets = |fx: &Fixture| fx.raw(b"get=1\n\n");
    let state = gets(&fx);
    assert!(state.ends_with("errno=0\n\n"));
    assert_eq!(fx.raw(b"hello world\n\n"), "errno=-22\n\n");
    assert_eq!(
        fx.raw(
            format!(
                "set=1\nreplace_peers=true\nlisten_port=1234\npublic_key={}\nallowed_ip=10.9.0.0/16\nbogus=1\n\n",
                "77".repeat(32)
            )
            .as_bytes()
        ),
        "errno=-22\n\n"
    );
    assert_eq!(fx.raw(b"set=1\nlisten_port=5\nfwmark\n\n"), "errno=-71\n\n");
    assert_eq!(fx.raw(b"set=1\nfwmark=1\n"), "errno=-71\n\n", "cut request");
    assert_eq!(gets(&fx), state);

    // update_only never creates a peer.
    assert_eq!(
        fx.raw(
            format!(
                "set=1\npublic_key={}\nupdate_only=true\nallowed_ip=10.8.0.0/16\n\n",
                "88".repeat(32)
            )
            .as_bytes()
        ),
        "errno=0\n\n"
    );
    assert_eq!(gets(&fx), state);

    // Gone with the server.
    let path = fx.path().to_path_buf();
    drop(fx);
    assert!(!path.exists());
    let (ok, _, _) = Command::new("wg")
        .args(["show", ifc])
        .output()
        .map(|o| (o.status.success(), (), ()))
        .unwrap();
    assert!(!ok);
}

#[test]
fn uapi_wg_setconf_and_dump_twenty_thousand_peers() {
    let Some(fx) = Fixture::new(1) else { return };
    let ifc = fx.iface.as_str();
    const N: u32 = 20_000;
    let sk = genkey();
    let mut conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 53000\n",
        sk.to_base64()
    );
    for i in 0..N {
        let mut k = [0x99u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        conf.push_str(&format!(
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.{}.{}.0/24, fd00::{:x}/128\nEndpoint = 192.0.2.{}:{}\n",
            encode_base64_key(&k),
            i >> 8 & 255,
            i & 255,
            i,
            i % 250 + 1,
            10_000 + i % 50_000
        ));
    }
    let file = fx.file("big.conf", &conf);

    let t = Instant::now();
    fx.wg_ok(&["setconf", ifc, &file]);
    let set_took = t.elapsed();
    assert_eq!(fx.dev.lock().unwrap().peer_count(), N as usize);

    let t = Instant::now();
    let dump = fx.wg_ok(&["show", ifc, "dump"]);
    let dump_took = t.elapsed();
    assert_eq!(dump.lines().count(), N as usize + 1);
    assert!(dump.contains("\t10.78.31.0/24,fd00::4e1f/128\t"));
    eprintln!("{N} peers: setconf {set_took:?}, show dump {dump_took:?}");
    assert!(
        dump_took < Duration::from_secs(20),
        "dump took {dump_took:?}"
    );
}
