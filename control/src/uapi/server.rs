//! The UAPI unix socket: `/var/run/wireguard/IFACE.sock`.
//!
//! [`UapiServer::bind`] creates the socket the way wireguard-go does
//! (directory mode 0755, socket mode 0700 — wireguard-go binds under umask
//! 077 — and a stale socket nobody listens on is replaced, a live one is
//! `AddrInUse`). The socket is created inside a private temporary directory,
//! made owner-only, and only then linked into place, so it is never reachable
//! with looser permissions and an existing socket is never clobbered.
//!
//! Running it: one accept thread, one thread per connection (at most
//! [`Limits::max_connections`]). A connection may carry any number of
//! requests. Each complete request goes to the daemon in one of three ways:
//!
//! - [`UapiServer::spawn`]: as a [`UapiCall`] on an `mpsc` channel, for a
//!   single-threaded daemon that owns its state; the daemon answers with
//!   [`UapiCall::respond`] (or [`UapiCall::reply`]). The connection thread
//!   waits for the answer; a call dropped unanswered closes the connection.
//! - [`UapiServer::spawn_shared`]: to a [`UapiHandler`] behind `Arc<Mutex<_>>`
//!   (held only while the request runs, not while the response is written).
//! - [`UapiServer::spawn_with`]: to any closure `Request -> Option<String>`.
//!
//! Malformed input is answered with `errno=-N` and never reaches the daemon.
//! Lines over [`Limits::max_line_len`] are refused (`EINVAL`); a request over
//! [`Limits::max_request_bytes`] is answered with `EMSGSIZE` and the
//! connection closed, as is an unknown operation (`EINVAL`; wireguard-go just
//! closes). A request cut short by the client disconnecting is dropped, never
//! applied (wireguard-go applies a `set` that ends at EOF).
//!
//! The returned [`UapiHandle`] removes the socket file when dropped (only if
//! the file is still ours), and [`UapiHandle::socket_exists`] lets the daemon
//! exit when someone deletes its socket, as wireguard-go does.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::errno::{EBUSY, EMSGSIZE, EPROTO};
use super::request::{Progress, Request, RequestParser, MAX_LINE_LEN};
use super::response::{format_errno, format_get};
use super::{dispatch, UapiHandler};

/// Where `wg` looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// `/var/run/wireguard/IFACE.sock`.
pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{iface}.sock"))
}

/// What one peer of a `wg setconf` takes on the wire with a key, a preshared
/// key, an endpoint, a keepalive and a few allowed IPs (one /32 and an
/// endpoint take 150).
pub const SETCONF_BYTES_PER_PEER: usize = 400;

/// Resource limits for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line, without its `\n`.
    pub max_line_len: usize,
    /// Largest accepted request, all lines included. The default takes a
    /// `wg setconf` of as many peers as the region holds (2^20), at
    /// [`SETCONF_BYTES_PER_PEER`] each; 64 MiB cut one off at 400,000. The
    /// request is parsed as it streams in, so the limit bounds the parsed
    /// peers, not a buffer of this size.
    pub max_request_bytes: usize,
    /// Connections served at once; more are answered `errno=-16` (EBUSY).
    pub max_connections: usize,
    /// A connection silent (or not reading) for this long is closed.
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_len: MAX_LINE_LEN,
            max_request_bytes: (dataplane::shm::layout::MAX_PEER_SLOTS * SETCONF_BYTES_PER_PEER)
                .next_power_of_two(),
            max_connections: 16,
            idle_timeout: Some(Duration::from_secs(60)),
        }
    }
}

type LogFn = Arc<dyn Fn(&str) + Send + Sync>;
type DispatchFn = Arc<dyn Fn(Request) -> Option<String> + Send + Sync>;

/// A request from a client, waiting for the daemon's answer
/// ([`UapiServer::spawn`]).
#[derive(Debug)]
pub struct UapiCall {
    pub request: Request,
    /// Where the complete response text goes (see [`super::dispatch`]).
    pub reply: Sender<String>,
}

impl UapiCall {
    /// Runs the request against `handler` and sends the response. Returns
    /// false if the client has gone (the request was still applied).
    pub fn respond<H: UapiHandler + ?Sized>(self, handler: &mut H) -> bool {
        let response = dispatch(handler, self.request);
        self.reply.send(response).is_ok()
    }

    /// Sends a response built by the caller (e.g. `format_errno(EBUSY)`).
    pub fn reply(self, response: String) -> bool {
        self.reply.send(response).is_ok()
    }
}

/// The socket file, removed on drop if it is still the one we created.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn is_ours(&self) -> bool {
        fs::symlink_metadata(&self.path)
            .map(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id)
            .unwrap_or(false)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.is_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A bound UAPI socket, not yet serving. Dropping it removes the socket file.
pub struct UapiServer {
    listener: UnixListener,
    file: SocketFile,
    limits: Limits,
    log: LogFn,
}

impl core::fmt::Debug for UapiServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UapiServer")
            .field("path", &self.file.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl UapiServer {
    /// Creates `/var/run/wireguard/IFACE.sock` (and the directory, mode 0755).
    /// Fails with `AddrInUse` if a process is listening on it already, with
    /// `InvalidInput` for a name that is not a valid interface name.
    pub fn bind(iface: &str) -> io::Result<UapiServer> {
        if iface.is_empty()
            || iface.len() > 15
            || iface == "."
            || iface == ".."
            || iface.contains(['/', '\0'])
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interface name {iface:?}"),
            ));
        }
        let dir = Path::new(SOCKET_DIR);
        if !dir.is_dir() {
            DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
            fs::set_permissions(dir, Permissions::from_mode(0o755))?;
        }
        Self::bind_path(socket_path(iface))
    }

    /// Creates the socket at `path` (the directory must exist), with the same
    /// stale-socket handling and permissions as [`UapiServer::bind`].
    pub fn bind_path(path: impl AsRef<Path>) -> io::Result<UapiServer> {
        let path = path.as_ref().to_path_buf();
        clear_stale(&path)?;
        let (listener, id) = bind_private(&path)?;
        Ok(UapiServer {
            listener,
            file: SocketFile { path, id },
            limits: Limits::default(),
            log: Arc::new(|m: &str| eprintln!("UAPI: {m}")),
        })
    }

    /// Replaces the default [`Limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where refused requests and connection errors are reported (default:
    /// stderr). Messages never contain key material.
    pub fn with_logger(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.log = Arc::new(log);
        self
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// True while the socket file is still the one this server created.
    pub fn socket_exists(&self) -> bool {
        self.file.is_ours()
    }

    /// Serves requests by sending each as a [`UapiCall`] on `tx`, for a daemon
    /// that owns its state on one thread:
    ///
    /// ```no_run
    /// # use control::uapi::*;
    /// # fn run(mut device: impl UapiHandler) -> std::io::Result<()> {
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let uapi = UapiServer::bind("wg0")?.spawn(tx)?;
    /// while uapi.socket_exists() {
    ///     // ... the daemon's own work, then:
    ///     while let Ok(call) = rx.try_recv() {
    ///         call.respond(&mut device);
    ///     }
    /// #   break;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn spawn(self, tx: Sender<UapiCall>) -> io::Result<UapiHandle> {
        self.spawn_with(move |request| {
            let (reply, answer) = mpsc::channel();
            tx.send(UapiCall { request, reply }).ok()?;
            answer.recv().ok()
        })
    }

    /// Serves requests with a handler shared behind a mutex (locked only
    /// while the handler runs; a poisoned lock is used as is).
    pub fn spawn_shared<H>(self, handler: Arc<Mutex<H>>) -> io::Result<UapiHandle>
    where
        H: UapiHandler + Send + 'static,
    {
        self.spawn_with(move |request| {
            let lock = || handler.lock().unwrap_or_else(PoisonError::into_inner);
            // The lock is held while the handler runs, not while formatting.
            Some(match request {
                Request::Get => {
                    let snapshot = lock().get();
                    format_get(&snapshot)
                }
                set => dispatch(&mut *lock(), set),
            })
        })
    }

    /// Serves requests with `f`, which returns the complete response text
    /// (see [`super::dispatch`]), or `None` to close the connection unanswered.
    /// `f` is called from the connection threads, possibly concurrently.
    pub fn spawn_with<F>(self, f: F) -> io::Result<UapiHandle>
    where
        F: Fn(Request) -> Option<String> + Send + Sync + 'static,
    {
        let UapiServer {
            listener,
            file,
            limits,
            log,
        } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let dispatch: DispatchFn = Arc::new(f);
        let thread = {
            let (stop, active) = (stop.clone(), active.clone());
            thread::Builder::new()
                .name("uapi-accept".into())
                .spawn(move || accept_loop(listener, stop, active, dispatch, limits, log))?
        };
        Ok(UapiHandle {
            file,
            stop,
            active,
            thread: Some(thread),
        })
    }
}

/// A running server. Dropping it stops accepting and removes the socket file;
/// connections already open finish their current request.
#[derive(Debug)]
pub struct UapiHandle {
    file: SocketFile,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl UapiHandle {
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// True while the socket file is still the one this server created;
    /// false once someone deleted or replaced it (time for the daemon to exit,
    /// as wireguard-go does).
    pub fn socket_exists(&self) -> bool {
        self.file.is_ours()
    }

    /// Connections being served now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Stops the server and removes the socket file (same as dropping it).
    pub fn shutdown(self) {}
}

impl Drop for UapiHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // Wake the blocking accept with a connection of our own. If the
            // file is gone nobody can connect: the thread stays parked in
            // accept until the process exits, harmlessly.
            if self.file.is_ours() && UnixStream::connect(&self.file.path).is_ok() {
                let _ = t.join();
            }
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn accept_loop(
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    dispatch: DispatchFn,
    limits: Limits,
    log: LogFn,
) {
    let limits = Arc::new(limits);
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log(&format!("accept: {e}"));
                // Out of descriptors and the like: don't spin.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= limits.max_connections {
            log("too many connections, refusing one");
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = (&stream).write_all(format_errno(EBUSY).as_bytes());
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(active.clone());
        let (dispatch, limits, log2) = (dispatch.clone(), limits.clone(), log.clone());
        let spawned = thread::Builder::new()
            .name("uapi-conn".into())
            .spawn(move || {
                let _guard = guard;
                serve_connection(stream, &*dispatch, &limits, &*log2);
            });
        if let Err(e) = spawned {
            log(&format!("cannot start a connection thread: {e}"));
        }
    }
}

/// Serves one connection until EOF, an error, or a fatal request.
fn serve_connection(
    stream: UnixStream,
    dispatch: &(dyn Fn(Request) -> Option<String> + Send + Sync),
    limits: &Limits,
    log: &(dyn Fn(&str) + Send + Sync),
) {
    let _ = stream.set_read_timeout(limits.idle_timeout);
    let _ = stream.set_write_timeout(limits.idle_timeout);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = stream;
    let mut parser = RequestParser::with_max_line_len(limits.max_line_len);
    let mut line = Vec::with_capacity(256);
    let mut request_bytes = 0usize;
    let respond = |w: &mut UnixStream, text: &str| w.write_all(text.as_bytes()).is_ok();

    loop {
        line.clear();
        let budget = limits.max_request_bytes.saturating_sub(request_bytes) + 1;
        let (consumed, newline) =
            match read_line_capped(&mut reader, &mut line, limits.max_line_len + 1, budget) {
                Ok(r) => r,
                Err(e) => {
                    if !parser.is_idle() {
                        log(&format!("connection dropped inside a request: {e}"));
                    }
                    return;
                }
            };
        request_bytes += consumed;
        if request_bytes > limits.max_request_bytes {
            log(&format!(
                "request larger than {} bytes, closing the connection",
                limits.max_request_bytes
            ));
            respond(&mut writer, &format_errno(EMSGSIZE));
            return;
        }
        if !newline {
            // EOF, at a line start or inside a line. Whatever was cut short
            // is dropped, and said so if the client still listens.
            let cut = parser.finish();
            if cut.is_some() || consumed > 0 {
                log("connection ended inside a request; request dropped");
                respond(&mut writer, &format_errno(EPROTO));
            }
            return;
        }
        match parser.feed_line(&line) {
            Progress::Incomplete => {}
            Progress::Complete(Ok(request)) => match dispatch(request) {
                Some(text) => {
                    if !respond(&mut writer, &text) {
                        return;
                    }
                }
                None => return,
            },
            Progress::Complete(Err(e)) => {
                log(&format!("request refused: {e}"));
                if !respond(&mut writer, &format_errno(e.errno)) || e.fatal {
                    return;
                }
            }
        }
        if parser.is_idle() {
            request_bytes = 0;
        }
    }
}

/// Reads through the next `\n` (consumed, not stored), keeping at most `keep`
/// bytes of the line in `out` and consuming at most `max_consume` bytes.
/// Returns the bytes consumed and whether the line ended with `\n`.
fn read_line_capped(
    r: &mut impl BufRead,
    out: &mut Vec<u8>,
    keep: usize,
    max_consume: usize,
) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((consumed, false));
        }
        let avail = buf.len().min(max_consume - consumed);
        let (take, found) = match buf[..avail].iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail, false),
        };
        let content = if found { take - 1 } else { take };
        let room = keep.saturating_sub(out.len());
        out.extend_from_slice(&buf[..content.min(room)]);
        r.consume(take);
        consumed += take;
        if found || consumed >= max_consume {
            return Ok((consumed, found));
        }
    }
}

/// Removes a socket nobody listens on; refuses a live one or a non-socket.
fn clear_stale(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if !m.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Err(e) => Err(e),
        },
    }
}

/// Binds a listener at `path` with mode 0700 without ever exposing it with
/// other permissions: bind in a fresh owner-only directory beside `path`,
/// chmod, then hard-link into place (which fails rather than replace a file
/// that appeared meanwhile). Returns the listener and the socket's (dev, ino).
fn bind_private(path: &Path) -> io::Result<(UnixListener, (u64, u64))> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket path has no file name"))?
        .to_string_lossy();
    let tmpdir = loop {
        let d = parent.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => break d,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let tmpsock = tmpdir.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&tmpsock)?;
        fs::set_permissions(&tmpsock, Permissions::from_mode(0o700))?;
        let m = fs::symlink_metadata(&tmpsock)?;
        match fs::hard_link(&tmpsock, path) {
            Ok(()) => Ok((listener, (m.dev(), m.ino()))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} appeared while binding", path.display()),
            )),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmpsock);
    let _ = fs::remove_dir(&tmpdir);
    result
}
