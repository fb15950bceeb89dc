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
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    match line.trim() {
        "errno=0" => Ok(()),
        other => Err(io::Error::other(format!(
            "{socket}: set refused ({other:?})"
        ))),
    }
}
