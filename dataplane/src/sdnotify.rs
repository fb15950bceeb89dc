//! systemd's readiness notification (sd_notify(3)). A `Type=notify` unit
//! runs `wirespeed -f IFACE` and starts its `ExecStartPost=` (which applies
//! the configuration through the UAPI socket) only once control says it is
//! ready, the same moment a detaching `wirespeed IFACE` returns; and
//! `wirespeed-dataplane.service` runs the host data plane, which is ready
//! once its attach socket answers, so the interfaces ordered after it
//! attach to it rather than start one of their own.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Tells the service manager we are ready, if one asked (`NOTIFY_SOCKET`).
/// `Ok(false)`: nobody asked.
pub fn ready() -> io::Result<bool> {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
    send(&addr, &msg)?;
    Ok(true)
}

/// Sends `msg` to the datagram socket `addr`: a path, or an abstract name
/// written with a leading `@`.
fn send(addr: &OsStr, msg: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = addr.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(msg.as_bytes(), &a)?;
    } else if bytes.starts_with(b"/") {
        sock.send_to(msg.as_bytes(), Path::new(addr))?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={addr:?} is neither a path nor an abstract name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_a_socket_by_path_and_by_abstract_name() {
        let dir = std::env::temp_dir().join(format!("wirespeed-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("wirespeed-notify-test-{}", std::process::id());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = UnixDatagram::bind_addr(&a).unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1\nMAINPID=7\n").unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=7\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_relative_address_is_refused() {
        let e = send(OsStr::new("notify"), "READY=1\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
