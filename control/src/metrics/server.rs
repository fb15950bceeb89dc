//! The metrics endpoint's HTTP/1.1 listener: `GET /metrics` (and `HEAD`)
//! answer 200 with the region rendered as Prometheus text, other paths 404,
//! other methods 405; every response closes the connection.
//!
//! It runs on its own threads and reads only its own mapping of the shared
//! region, so nothing it does can hold up the control loop. A client is
//! bounded in every dimension: at most [`MAX_CLIENTS`] connections are
//! served at once (more are closed at once), a request head may be at most
//! [`MAX_REQUEST`] bytes and must arrive within [`READ_DEADLINE`], and the
//! response must be taken within [`WRITE_DEADLINE`].

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

/// Connections served at the same time.
pub const MAX_CLIENTS: usize = 8;
/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client has to take the whole response.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How often the accept loop looks at its stop flag.
const POLL_MS: i32 = 200;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running endpoint; stops (and joins its accept thread) on drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections being served.
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
        render: impl Fn() -> String + Send + Sync + 'static,
    ) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), active.clone());
        let render = Arc::new(render);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(listener, &flag, &count, render))?;
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

    /// Connections being served right now.
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

/// Counts a connection thread for as long as it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop<R>(
    listener: TcpListener,
    stop: &AtomicBool,
    active: &Arc<AtomicUsize>,
    render: Arc<R>,
) where
    R: Fn() -> String + Send + Sync + 'static,
{
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes exactly the one pollfd we pass.
        if unsafe { libc::poll(&mut pfd, 1, POLL_MS) } <= 0 {
            continue;
        }
        loop {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ECONNABORTED, EMFILE...: try again on the next turn; the
                // pause keeps a persistent error from spinning.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                active.fetch_sub(1, Ordering::AcqRel);
                drop(stream); // busy: closed at once
                continue;
            }
            let slot = Slot(active.clone());
            let render = render.clone();
            // A failed spawn drops the closure, its stream and its slot.
            let _ = std::thread::Builder::new()
                .name("metrics-client".into())
                .spawn(move || {
                    let _slot = slot;
                    let _ = serve_client(stream, &*render);
                });
        }
    }
}

fn serve_client(mut stream: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let _ = stream.set_nodelay(true);
    let head = match read_head(&mut stream, Instant::now() + READ_DEADLINE)? {
        Head::Complete(h) => h,
        Head::TooLarge => {
            let r = response(
                431,
                "Request Header Fields Too Large",
                &[],
                b"request too large\n",
            );
            write_all(&mut stream, &r, Instant::now() + WRITE_DEADLINE)?;
            linger(stream);
            return Ok(());
        }
        Head::Incomplete => return Ok(()),
    };
    let r = respond(&head, render);
    write_all(&mut stream, &r, Instant::now() + WRITE_DEADLINE)?;
    linger(stream);
    Ok(())
}

/// Closes gracefully: our side first, then whatever the client still sends
/// is read and discarded (for a moment, up to a bound), so that closing
/// with unread input does not reset the connection before the client has
/// read the response.
fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        let t = deadline.saturating_duration_since(Instant::now());
        if t.is_zero() || stream.set_read_timeout(Some(t)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
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

fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::Incomplete);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(Head::Incomplete),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::Incomplete)
            }
            Err(e) => return Err(e),
        };
        // Only the new bytes (and the 3 before them) can complete the head.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            buf.truncate(from + end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
}

fn write_all(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
        // their own slot only: a scrape next to them is answered at once.
        wait_for(|| srv.active_clients() == 0);
        let idle: Vec<TcpStream> = (0..MAX_CLIENTS - 1)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                if i % 2 == 0 {
                    s.write_all(b"GET /metr").unwrap();
                }
                s
            })
            .collect();
        wait_for(|| srv.active_clients() == MAX_CLIENTS - 1);
        let t = Instant::now();
        let r = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // One more than that is turned away (closed) rather than queued.
        wait_for(|| srv.active_clients() == MAX_CLIENTS - 1);
        let blocker = TcpStream::connect(addr).unwrap();
        wait_for(|| srv.active_clients() == MAX_CLIENTS);
        let r = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.is_empty(),
            "over the limit: closed without an answer: {r}"
        );
        drop(blocker);
        drop(idle);
        // Slots come back when the idle clients go.
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
