//! Server tests over real unix sockets (in a temporary directory), with a
//! small in-memory device as the handler.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::errno::{EADDRINUSE, EINVAL};
use super::*;
use crate::keys::{encode_hex_key, PrivateKey};

/// Minimal device: enough state to see whether a request was applied.
#[derive(Default)]
struct Mem {
    private_key: Option<PrivateKey>,
    listen_port: u16,
    fwmark: u32,
    peers: Vec<PeerSnapshot>,
    sets: usize,
}

impl UapiHandler for Mem {
    fn get(&mut self) -> DeviceSnapshot {
        DeviceSnapshot {
            private_key: self.private_key.clone(),
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            peers: self.peers.clone(),
        }
    }

    fn set(&mut self, req: SetRequest) -> Result<(), i32> {
        if req.listen_port == Some(1) {
            return Err(EADDRINUSE);
        }
        self.sets += 1;
        if let Some(k) = req.private_key {
            self.private_key = k;
        }
        if let Some(p) = req.listen_port {
            self.listen_port = p;
        }
        if let Some(m) = req.fwmark {
            self.fwmark = m.unwrap_or(0);
        }
        if req.replace_peers {
            self.peers.clear();
        }
        for pc in req.peers {
            let at = self
                .peers
                .iter()
                .position(|p| p.public_key == pc.public_key);
            if pc.remove {
                if let Some(i) = at {
                    self.peers.remove(i);
                }
                continue;
            }
            let i = match at {
                Some(i) => i,
                None if pc.update_only => continue,
                None => {
                    self.peers.push(PeerSnapshot::new(pc.public_key));
                    self.peers.len() - 1
                }
            };
            let p = &mut self.peers[i];
            if let Some(k) = pc.preshared_key {
                p.preshared_key = k;
            }
            if let Some(e) = pc.endpoint {
                p.endpoint = Some(e);
            }
            if let Some(k) = pc.persistent_keepalive {
                p.persistent_keepalive = k;
            }
            if pc.replace_allowed_ips {
                p.allowed_ips.clear();
            }
            for (ip, cidr) in pc.allowed_ips {
                p.allowed_ips.push((canonical_prefix(ip, cidr), cidr));
            }
        }
        Ok(())
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "wsuapi-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn sock(&self) -> PathBuf {
        self.0.join("t.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn quiet(s: UapiServer) -> UapiServer {
    s.with_logger(|_| {})
}

fn serve(dir: &TempDir) -> (UapiHandle, Arc<Mutex<Mem>>) {
    let mem = Arc::new(Mutex::new(Mem::default()));
    let h = quiet(UapiServer::bind_path(dir.sock()).unwrap())
        .spawn_shared(mem.clone())
        .unwrap();
    (h, mem)
}

/// Sends `text`, half-closes, and returns everything the server wrote.
fn exchange(path: &Path, text: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(text); // the server may close early on fatal input
    let _ = s.shutdown(Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Polls `cond` for up to ten seconds.
fn wait_until(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hex(b: u8) -> String {
    encode_hex_key(&[b; 32])
}

#[test]
fn uapi_server_set_then_get() {
    let dir = TempDir::new();
    let (h, _mem) = serve(&dir);
    let set = format!(
        "set=1\nprivate_key={}\nlisten_port=51820\nfwmark=3\npublic_key={}\nendpoint=[::1]:9\n\
         allowed_ip=10.1.2.3/24\npersistent_keepalive_interval=25\n\n",
        hex(0xa8),
        hex(1)
    );
    assert_eq!(exchange(h.path(), set.as_bytes()), "errno=0\n\n");
    let got = exchange(h.path(), b"get=1\n\n");
    assert_eq!(
        got,
        format!(
            "private_key={}\nlisten_port=51820\nfwmark=3\npublic_key={}\npreshared_key={}\n\
             protocol_version=1\nendpoint=[::1]:9\nlast_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=25\nallowed_ip=10.1.2.0/24\nerrno=0\n\n",
            hex(0xa8),
            hex(1),
            hex(0)
        )
    );
}

#[test]
fn uapi_server_several_requests_per_connection() {
    let dir = TempDir::new();
    let (h, mem) = serve(&dir);
    // Pipelined, with a bad request in the middle that must not disturb the
    // ones around it (wireguard-go loses everything after a set here).
    let out = exchange(
        h.path(),
        b"set=1\nfwmark=9\n\nset=1\nfwmark=10\nbad\n\nget=1\n\nset=1\nlisten_port=1\n\nset=1\nfwmark=11\n\nget=1\n\n",
    );
    assert_eq!(
        out,
        "errno=0\n\nerrno=-71\n\nfwmark=9\nerrno=0\n\nerrno=-98\n\nerrno=0\n\nfwmark=11\nerrno=0\n\n"
    );
    assert_eq!(mem.lock().unwrap().sets, 2);
}

#[test]
fn uapi_server_bad_set_changes_nothing() {
    let dir = TempDir::new();
    let (h, mem) = serve(&dir);
    assert_eq!(
        exchange(h.path(), b"set=1\nlisten_port=5\nfwmark=6\n\n"),
        "errno=0\n\n"
    );
    let before = exchange(h.path(), b"get=1\n\n");
    for bad in [
        format!(
            "set=1\nreplace_peers=true\nlisten_port=7\npublic_key={}\nbogus=1\n\n",
            hex(1)
        ),
        format!(
            "set=1\nfwmark=0\npublic_key={}\nendpoint=1.2.3.4\n\n",
            hex(1)
        ),
        format!("set=1\nprivate_key={}\npublic_key=zz\n\n", hex(2)),
        format!("set=1\npublic_key={}\nprotocol_version=2\n\n", hex(1)),
        format!("set=1\npublic_key={}\nallowed_ip=10.0.0.0/33\n\n", hex(1)),
    ] {
        assert_eq!(
            exchange(h.path(), bad.as_bytes()),
            "errno=-22\n\n",
            "{bad:?}"
        );
    }
    assert_eq!(
        exchange(h.path(), b"set=1\nlisten_port=8\nnoequals\n\n"),
        "errno=-71\n\n"
    );
    assert_eq!(exchange(h.path(), b"get=1\n\n"), before);
    assert_eq!(mem.lock().unwrap().sets, 1);
}

#[test]
fn uapi_server_garbage_and_unknown_operations() {
    let dir = TempDir::new();
    let (h, mem) = serve(&dir);
    // Unknown operation: answered and the connection closed (the rest unread).
    assert_eq!(exchange(h.path(), b"hello\nget=1\n\n"), "errno=-22\n\n");
    assert_eq!(exchange(h.path(), b"get=2\n\n"), "errno=-22\n\n");
    assert_eq!(
        exchange(h.path(), b"\x00\xff\xfe garbage\n"),
        "errno=-22\n\n"
    );
    // get=1 with trailing lines.
    assert_eq!(
        exchange(h.path(), b"get=1\nx=1\n\nget=1\n\n"),
        "errno=-22\n\nerrno=0\n\n"
    );
    // Blank lines between requests are tolerated.
    assert_eq!(exchange(h.path(), b"\n\nget=1\n\n\n"), "errno=0\n\n");
    // Binary junk inside a set.
    assert_eq!(
        exchange(h.path(), b"set=1\nfwmark=\xff\n\n"),
        "errno=-22\n\n"
    );
    assert_eq!(mem.lock().unwrap().sets, 0);
    // Still serving.
    assert_eq!(exchange(h.path(), b"get=1\n\n"), "errno=0\n\n");
}

#[test]
fn uapi_server_cut_requests_are_dropped() {
    let dir = TempDir::new();
    let (h, mem) = serve(&dir);
    // Half-close inside a request: answered EPROTO, not applied.
    assert_eq!(exchange(h.path(), b"set=1\nfwmark=12\n"), "errno=-71\n\n");
    assert_eq!(
        exchange(h.path(), b"set=1\nfwmark=12\n\nset=1\nfwmark=13"),
        "errno=0\n\nerrno=-71\n\n"
    );
    assert_eq!(exchange(h.path(), b"get=1"), "errno=-71\n\n");
    // Full close mid-request.
    {
        let mut s = UnixStream::connect(h.path()).unwrap();
        s.write_all(b"set=1\nreplace_peers=true\nfwmark=14\n")
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(exchange(h.path(), b"get=1\n\n"), "fwmark=12\nerrno=0\n\n");
    assert_eq!(mem.lock().unwrap().sets, 1);
}

#[test]
fn uapi_server_limits() {
    let dir = TempDir::new();
    let mem = Arc::new(Mutex::new(Mem::default()));
    let limits = Limits {
        max_line_len: 100,
        max_request_bytes: 10_000,
        max_connections: 2,
        // Long enough that a loaded machine (CI runs tests in parallel)
        // cannot stall the test past it between connecting the two idle
        // clients and seeing them both counted (2 s was not, at a load
        // average of 8 on 2 cores), short enough for wait_until's 10 s.
        idle_timeout: Some(Duration::from_secs(4)),
    };
    let h = quiet(UapiServer::bind_path(dir.sock()).unwrap())
        .with_limits(limits)
        .spawn_shared(mem.clone())
        .unwrap();
    // An over-long line is refused but the connection stays in step.
    let long = format!("set=1\nfwmark={}1\n\nget=1\n\n", "0".repeat(200));
    assert_eq!(
        exchange(h.path(), long.as_bytes()),
        "errno=-22\n\nerrno=0\n\n"
    );
    // A huge line without a newline, and a huge request: EMSGSIZE, closed.
    let mut huge = b"set=1\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 50_000));
    // The server counts a connection until its thread is done, a little
    // after the client read its answer: with a cap of 2, each exchange
    // waits for the last to be gone (a loaded machine got EBUSY here).
    wait_until(|| h.active_connections() == 0);
    assert_eq!(exchange(h.path(), &huge), "errno=-90\n\n");
    let mut many = b"set=1\n".to_vec();
    for _ in 0..2_000 {
        many.extend_from_slice(b"fwmark=1\n");
    }
    many.extend_from_slice(b"\n");
    wait_until(|| h.active_connections() == 0);
    assert_eq!(exchange(h.path(), &many), "errno=-90\n\n");
    // The limit is per request, not per connection.
    let mut seq = Vec::new();
    for _ in 0..2_000 {
        seq.extend_from_slice(b"set=1\nfwmark=2\n\n");
    }
    wait_until(|| h.active_connections() == 0);
    let out = exchange(h.path(), &seq);
    assert_eq!(out.matches("errno=0\n\n").count(), 2_000);
    assert_eq!(mem.lock().unwrap().fwmark, 2);

    // Idle connections time out, and the connection cap answers EBUSY.
    wait_until(|| h.active_connections() == 0);
    let a = UnixStream::connect(h.path()).unwrap();
    let b = UnixStream::connect(h.path()).unwrap();
    wait_until(|| h.active_connections() == 2);
    assert_eq!(exchange(h.path(), b"get=1\n\n"), "errno=-16\n\n");
    wait_until(|| h.active_connections() == 0);
    assert!(exchange(h.path(), b"get=1\n\n").ends_with("errno=0\n\n"));
    drop((a, b));
}

#[test]
fn uapi_server_channel_mode() {
    let dir = TempDir::new();
    let (tx, rx) = mpsc::channel::<UapiCall>();
    let h = quiet(UapiServer::bind_path(dir.sock()).unwrap())
        .spawn(tx)
        .unwrap();
    let path = h.path().to_path_buf();
    let client = std::thread::spawn(move || {
        let a = exchange(&path, b"set=1\nlisten_port=4242\n\nget=1\n\n");
        let b = exchange(&path, b"get=1\n\n");
        (a, b)
    });
    // The "daemon" loop: owns the state, single-threaded.
    let mut mem = Mem::default();
    let mut answered = 0;
    while answered < 3 {
        let call = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if answered == 2 {
            assert_eq!(call.request, Request::Get);
            assert!(call.reply(format_errno(EINVAL)));
        } else {
            assert!(call.respond(&mut mem));
        }
        answered += 1;
    }
    let (a, b) = client.join().unwrap();
    assert_eq!(a, "errno=0\n\nlisten_port=4242\nerrno=0\n\n");
    assert_eq!(b, "errno=-22\n\n");
    // A daemon that has gone away: connections are closed unanswered.
    drop(rx);
    assert_eq!(exchange(h.path(), b"get=1\n\n"), "");
}

#[test]
fn uapi_server_socket_file_lifecycle() {
    let dir = TempDir::new();
    let path = dir.sock();

    // Mode 0700, as wireguard-go's (umask 077); no temporary files left.
    let server = quiet(UapiServer::bind_path(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
    assert!(server.socket_exists());

    // Something listening: AddrInUse, and the file is left alone.
    let err = UapiServer::bind_path(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(path.exists());

    // Dropping an unspawned server removes its socket.
    drop(server);
    assert!(!path.exists());

    // A stale socket (nobody listening) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let h = quiet(UapiServer::bind_path(&path).unwrap())
        .spawn_shared(Arc::new(Mutex::new(Mem::default())))
        .unwrap();
    assert_eq!(exchange(&path, b"get=1\n\n"), "errno=0\n\n");

    // Deleting the socket is noticed; a replacement is not ours to remove.
    std::fs::remove_file(&path).unwrap();
    assert!(!h.socket_exists());
    let other = UnixListener::bind(&path).unwrap();
    assert!(!h.socket_exists());
    drop(h);
    assert!(
        path.exists(),
        "dropping must not remove someone else's socket"
    );
    drop(other);
    std::fs::remove_file(&path).unwrap();

    // Not a socket: refused, untouched.
    std::fs::write(&path, b"x").unwrap();
    let err = UapiServer::bind_path(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"x");
    std::fs::remove_file(&path).unwrap();

    // Shutdown stops accepting and removes the file.
    let h = quiet(UapiServer::bind_path(&path).unwrap())
        .spawn_shared(Arc::new(Mutex::new(Mem::default())))
        .unwrap();
    h.shutdown();
    assert!(!path.exists());
    assert!(UnixStream::connect(&path).is_err());
}

#[test]
fn uapi_bind_rejects_bad_interface_names() {
    for name in ["", "a/b", "..", ".", "0123456789abcdef", "a\0b"] {
        let e = UapiServer::bind(name).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{name:?}");
    }
    assert_eq!(socket_path("wg0"), Path::new("/var/run/wireguard/wg0.sock"));
}

#[test]
fn uapi_dispatch_reports_handler_errors_negated() {
    let mut mem = Mem::default();
    let req = Request::parse("set=1\nlisten_port=1\n").unwrap();
    assert_eq!(dispatch(&mut mem, req), "errno=-98\n\n");
    let req = Request::parse("set=1\nlisten_port=2\n").unwrap();
    assert_eq!(dispatch(&mut mem, req), "errno=0\n\n");
    assert_eq!(
        dispatch(&mut mem, Request::Get),
        "listen_port=2\nerrno=0\n\n"
    );

    struct Zero;
    impl UapiHandler for Zero {
        fn get(&mut self) -> DeviceSnapshot {
            DeviceSnapshot::default()
        }
        fn set(&mut self, _: SetRequest) -> Result<(), i32> {
            Err(0)
        }
    }
    // Err(0) would read as success: reported as EIO instead.
    assert_eq!(
        dispatch(&mut Zero, Request::Set(SetRequest::default())),
        "errno=-5\n\n"
    );
}

/// `wg setconf` with as many peers as the region holds fits in one request:
/// the 64 MiB limit cut a million-peer configuration off at 400,000 peers
/// (the connection closed, nothing applied).
#[test]
fn the_default_request_limit_takes_the_regions_peer_capacity() {
    let hex = "ab".repeat(32);
    let peer = format!(
        "public_key={hex}\npreshared_key={hex}\nendpoint=[2001:db8::1]:51820\n\
         persistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
         allowed_ip=10.128.0.1/32\nallowed_ip=fd00::1/128\n"
    );
    let needed = dataplane::shm::layout::MAX_PEER_SLOTS * peer.len();
    assert!(
        Limits::default().max_request_bytes >= needed,
        "{} < {needed}",
        Limits::default().max_request_bytes
    );
}
