//! Configures the device under test over its UAPI socket, as `wg set` would:
//! the bench holds every key, so it needs no `wg` binary (the lent machine
//! has none).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use control::keys::{encode_hex_key, PrivateKey, PublicKey};

/// Sets the device's private key and listen port and replaces its peers with
/// `peers`, peer `i` owning `sources[i]/32`.
pub fn configure(
    socket: &str,
    private: &PrivateKey,
    port: u16,
    peers: &[PublicKey],
    sources: &[std::net::Ipv4Addr],
) -> io::Result<()> {
    let mut req = format!(
        "set=1\nprivate_key={}\nlisten_port={port}\nreplace_peers=true\n",
        encode_hex_key(private.as_bytes())
    );
    for (p, src) in peers.iter().zip(sources) {
        req.push_str(&format!(
            "public_key={}\nreplace_allowed_ips=true\nallowed_ip={src}/32\n",
            encode_hex_key(p.as_bytes())
        ));
    }
    req.push('\n');
    // The socket appears before the daemon has finished starting; a refused
    // or dropped connection in that window is worth another try.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match request(socket, &req) {
            Err(e) if std::time::Instant::now() < deadline && transient(&e) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotFound
            | io::ErrorKind::UnexpectedEof
    )
}

fn request(socket: &str, req: &str) -> io::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.as_bytes())?;
    let mut line = String::new();
    if BufReader::new(s).read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    match line.trim() {
        "errno=0" => Ok(()),
        other => Err(io::Error::other(format!(
            "{socket}: set refused ({other:?})"
        ))),
    }
}
