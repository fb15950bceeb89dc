//! The metrics endpoint's HTTP/1.1 listener: `GET /metrics` (and `HEAD`)
//! answer 200 with the region rendered as Prometheus text, other paths 404,
//! other methods 405; every response closes the connection.
//!
//! It runs on its own thread and reads only its own mapping of the shared
//! region, so nothing it does can hold up the control loop. One
//! non-blocking loop serves every connection, so a client that stalls
//! holds nothing but its own entry. A client is bounded in every
//! dimension: at most [`MAX_CLIENTS`] connections are open at once, a
//! request head may be at most [`MAX_REQUEST`] bytes and must arrive
//! within [`READ_DEADLINE`] of the accept, and the response must be taken
//! within [`WRITE_DEADLINE`]. A connection over the limit makes room by
//! closing the oldest open one (one that already has its answer first):
//! clients that connect and stall cannot deny the endpoint to a scraper,
//! which needs its connection for a few milliseconds only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::shm::Region;

use super::render;

/// Connections open at the same time.
pub const MAX_CLIENTS: usize = 64;
/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has, from its accept, to send its request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client has to take the whole response.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// After the response: how long, and how much, of what the client still
/// sends is read and discarded before closing (see [`Conn::step`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// How often the loop looks at its stop flag.
const POLL_MS: u64 = 200;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running endpoint; stops (and joins its thread) on drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections open.
    active: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves the region at `shm_path` (mapped again here,
    /// read only in practice) for interface `iface`.
    pub fn start(addr: SocketAddr, shm_path: &Path, iface: &str) -> io::Result<MetricsServer> {
        let region = Region::open(shm_path)?;
        let iface = iface.to_string();
        Self::serve(addr, move || render::render(&region, &iface))
    }

    /// Binds `addr` and answers `GET /metrics` with `render()`.
    pub fn serve(
        addr: SocketAddr,
        render: impl Fn() -> String + Send + 'static,
    ) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), active.clone());
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve_loop(listener, &flag, &count, &render))?;
        Ok(MetricsServer {
            addr,
            stop,
            active,
            thread: Some(thread),
        })
    }

    /// The bound address (the port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open right now.
    pub fn active_clients(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a connection is, each phase with its own deadline.
enum Phase {
    /// Waiting for the request head (the deadline counts from the accept).
    Reading { buf: Vec<u8> },
    /// Sending the response, `at` bytes of it so far.
    Writing { data: Vec<u8>, at: usize },
    /// Answered and shut down for writing: what the client still sends is
    /// read and discarded, up to `left` bytes, so that closing with unread
    /// input does not reset the connection before the client has read the
    /// response.
    Lingering { left: usize },
}

struct Conn {
    stream: TcpStream,
    accepted: Instant,
    deadline: Instant,
    phase: Phase,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            accepted: now,
            deadline: now + READ_DEADLINE,
            phase: Phase::Reading {
                buf: Vec::with_capacity(1024),
            },
        }
    }

    fn events(&self) -> libc::c_short {
        match self.phase {
            Phase::Writing { .. } => libc::POLLOUT,
            _ => libc::POLLIN,
        }
    }

    /// Does what can be done without blocking; false once the connection
    /// is finished (answered, failed, or out of time) and is to be closed.
    fn step(&mut self, now: Instant, render: &dyn Fn() -> String) -> bool {
        if now >= self.deadline {
            return false;
        }
        loop {
            match &mut self.phase {
                Phase::Reading { buf } => match read_head(&mut self.stream, buf) {
                    Ok(None) => return true,
                    Ok(Some(Head::Complete(h))) => {
                        let r = respond(&h, render);
                        self.answer(r, now);
                    }
                    Ok(Some(Head::TooLarge)) => {
                        let r = response(
                            431,
                            "Request Header Fields Too Large",
                            &[],
                            b"request too large\n",
                        );
                        self.answer(r, now);
                    }
                    Ok(Some(Head::Incomplete)) | Err(_) => return false,
                },
                Phase::Writing { data, at } => {
                    match write_some(&mut self.stream, &data[*at..]) {
                        Ok(n) => *at += n,
                        Err(_) => return false,
                    }
                    if *at < data.len() {
                        return true;
                    }
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.deadline = now + LINGER;
                    self.phase = Phase::Lingering { left: LINGER_BYTES };
                }
                Phase::Lingering { left } => {
                    let mut sink = [0u8; 4096];
                    loop {
                        match self.stream.read(&mut sink) {
                            Ok(0) => return false,
                            Ok(n) => {
                                *left = left.saturating_sub(n);
                                if *left == 0 {
                                    return false;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                            Err(_) => return false,
                        }
                    }
                }
            }
        }
    }

    fn answer(&mut self, data: Vec<u8>, now: Instant) {
        self.deadline = now + WRITE_DEADLINE;
        self.phase = Phase::Writing { data, at: 0 };
    }
}

/// The connection to close to make room for a new one: one that has its
/// answer already if any, else the oldest. A scraper is answered within
/// milliseconds of its accept, so only a flood of connections inside that
/// moment could push it out; a client that stalls is pushed out by the
/// next arrivals.
fn evictee(conns: &[Conn]) -> Option<usize> {
    conns
        .iter()
        .position(|c| matches!(c.phase, Phase::Lingering { .. }))
        .or_else(|| {
            conns
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.accepted)
                .map(|(i, _)| i)
        })
}

fn serve_loop(
    listener: TcpListener,
    stop: &AtomicBool,
    active: &AtomicUsize,
    render: &dyn Fn() -> String,
) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let next = conns.iter().map(|c| c.deadline).min();
        let wait = next.map_or(Duration::from_millis(POLL_MS), |d| {
            d.saturating_duration_since(now)
                .min(Duration::from_millis(POLL_MS))
        });
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(conns.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: c.events(),
            revents: 0,
        }));
        // Rounded up: a deadline a fraction of a millisecond away must not
        // turn into a busy loop of zero-timeout polls.
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: poll reads and writes exactly the `fds.len()` pollfds of
        // the live vector we pass.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            continue; // EINTR
        }
        let now = Instant::now();
        // Every connection whose socket is ready or whose time is up, before
        // new ones are accepted (their indices match `fds[1..]`).
        let mut i = 0;
        conns.retain_mut(|c| {
            let ready = fds[1 + i].revents != 0;
            i += 1;
            !(ready || now >= c.deadline) || c.step(now, render)
        });
        if fds[0].revents != 0 {
            accept_all(&listener, &mut conns, now, render);
        }
        active.store(conns.len(), Ordering::Release);
    }
}

fn accept_all(
    listener: &TcpListener,
    conns: &mut Vec<Conn>,
    now: Instant,
    render: &dyn Fn() -> String,
) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // ECONNABORTED, EMFILE...: try again on the next turn; the
            // pause keeps a persistent error from spinning.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        if conns.len() >= MAX_CLIENTS {
            if let Some(i) = evictee(conns) {
                conns.swap_remove(i);
            }
        }
        let mut c = Conn::new(stream, now);
        // The request is usually there already: answer it at once.
        if c.step(now, render) {
            conns.push(c);
        }
    }
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed or ran out of time first.
    Incomplete,
}

/// Position just past the blank line that ends a request head, if any.
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Reads what the client sent so far: `None` while the head is not
/// complete and more may come.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Head>> {
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(Some(Head::Incomplete)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        // Only the new bytes (and the 3 before them) can complete the head.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            buf.truncate(from + end);
            return Ok(Some(Head::Complete(std::mem::take(buf))));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Some(Head::TooLarge));
        }
    }
}

/// Writes as much of `data` as the socket takes now.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A whole response: status line, headers, body; the connection closes after it.
fn response(code: u16, reason: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    response_with(code, reason, extra, body, true)
}

fn response_with(
    code: u16,
    reason: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    send_body: bool,
) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        r.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    for (k, v) in extra {
        r.push_str(k);
        r.push_str(": ");
        r.push_str(v);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    if send_body {
        r.extend_from_slice(body);
    }
    r
}

/// The answer to one request head (pure: no I/O besides calling `render`).
pub fn respond(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let bad = || response(400, "Bad Request", &[], b"bad request\n");
    let Ok(text) = std::str::from_utf8(head) else {
        return bad();
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad();
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") {
        return bad();
    }
    // origin-form, or absolute-form (which HTTP/1.1 servers must accept).
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path != "/metrics" {
        return response(404, "Not Found", &[], b"not found; try /metrics\n");
    }
    match method {
        "GET" | "HEAD" => {
            let body = render();
            response_with(
                200,
                "OK",
                &[("Content-Type", CONTENT_TYPE)],
                body.as_bytes(),
                method == "GET",
            )
        }
        _ => response(
            405,
            "Method Not Allowed",
            &[("Allow", "GET, HEAD")],
            b"method not allowed\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> String {
        "# HELP x y\n# TYPE x gauge\nx 1\n".to_string()
    }

    fn answer(req: &str) -> String {
        String::from_utf8(respond(req.as_bytes(), &body)).unwrap()
    }

    fn status(r: &str) -> &str {
        r.split(' ').nth(1).unwrap_or("")
    }

    #[test]
    fn get_metrics_is_200_with_the_exposition_content_type() {
        let r = answer("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(r.contains(&format!("\r\nContent-Length: {}\r\n", body().len())));
        assert!(r.contains("\r\nConnection: close\r\n"));
        assert!(r.ends_with(&format!("\r\n\r\n{}", body())));
        // Query strings, absolute-form, HTTP/1.0, bare LF.
        for req in [
            "GET /metrics?x=1 HTTP/1.1\r\n\r\n",
            "GET http://host:9586/metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.0\n\n",
        ] {
            assert_eq!(status(&answer(req)), "200", "{req:?}");
        }
    }

    #[test]
    fn head_has_headers_only() {
        let r = answer("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&r), "200");
        assert!(r.ends_with("\r\n\r\n"));
        assert!(r.contains(&format!("Content-Length: {}", body().len())));
    }

    #[test]
    fn everything_else_is_refused() {
        for (req, code) in [
            ("GET / HTTP/1.1\r\n\r\n", "404"),
            ("GET /metricsx HTTP/1.1\r\n\r\n", "404"),
            ("GET /metrics/ HTTP/1.1\r\n\r\n", "404"),
            ("POST /metrics HTTP/1.1\r\n\r\n", "405"),
            ("DELETE /other HTTP/1.1\r\n\r\n", "404"),
            ("GET /metrics\r\n\r\n", "400"),
            ("GET /metrics HTTP/1.1 extra\r\n\r\n", "400"),
            ("GET /metrics SPDY/3\r\n\r\n", "400"),
            ("\r\n\r\n", "400"),
            ("", "400"),
        ] {
            let r = answer(req);
            assert_eq!(status(&r), code, "{req:?} -> {r}");
            assert!(!r.contains("x 1"), "no metrics for {req:?}");
        }
        assert!(answer("POST /metrics HTTP/1.1\r\n\r\n").contains("\r\nAllow: GET, HEAD\r\n"));
        let r = String::from_utf8(respond(b"GET /\xff HTTP/1.1\r\n\r\n", &body)).unwrap();
        assert_eq!(status(&r), "400");
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// Polls `cond` for up to ten seconds.
    fn wait_for(cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A server that turned us away may have closed already.
        let _ = s.write_all(req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn serves_over_tcp_and_slow_or_greedy_clients_stall_nothing() {
        let srv = MetricsServer::serve("127.0.0.1:0".parse().unwrap(), body).unwrap();
        let addr = srv.local_addr();
        let r = get(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("x 1\n"),
            "{r}"
        );
        // Clients that connect and send nothing (or half a request) hold
        // their own connection only: a scrape next to them is answered at
        // once, even when there are more of them than the endpoint keeps
        // open (the oldest make room).
        wait_for(|| srv.active_clients() == 0);
        let mut stalled: Vec<TcpStream> = (0..MAX_CLIENTS + 8)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                if i % 2 == 0 {
                    s.write_all(b"GET /metr").unwrap();
                }
                s
            })
            .collect();
        wait_for(|| srv.active_clients() == MAX_CLIENTS);
        for _ in 0..3 {
            let t = Instant::now();
            let r = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
            assert!(
                r.starts_with("HTTP/1.1 200"),
                "next to stalled clients: {r:?}"
            );
            // The bound the issue sets for a scrape beside stalled clients.
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            assert!(srv.active_clients() <= MAX_CLIENTS);
        }
        // The bound holds: the first stalled clients were closed to make
        // room (they read the end of the stream, not an answer).
        stalled[0]
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stalled[0].read_to_end(&mut rest);
        assert!(rest.is_empty(), "evicted without an answer: {rest:?}");
        drop(stalled);
        // Entries go when the stalled clients do.
        wait_for(|| srv.active_clients() == 0);
        let r = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // An endless head is cut off at MAX_REQUEST.
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST + 100, b'a');
        let r = get(addr, &big);
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        drop(srv);
        assert!(
            TcpStream::connect(addr).is_err(),
            "stopped and closed on drop"
        );
    }
}
