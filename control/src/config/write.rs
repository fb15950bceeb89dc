//! Writing a configuration back out, in the order and spelling of
//! `wg-quick save` (wg-quick's keys, then `wg showconf`'s).
//!
//! The output parses back to an equal [`Config`] for anything [`parse`]
//! produced. A config assembled by hand can break that only by holding
//! values `parse` would refuse, e.g. a hook with a newline or a `#`.
//!
//! [`parse`]: super::parse

use core::fmt::{self, Display, Formatter, Write};

use zeroize::Zeroizing;

use super::key::{Key, Section};
use super::{Config, Endpoint, InterfaceConfig, IpCidr, PeerConfig, Table};

impl Display for Config {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // Like `wg showconf`, always an [Interface], so the file is
        // recognisable even with nothing in it.
        write_interface(f, &self.interface)?;
        for peer in &self.peers {
            f.write_char('\n')?;
            write_peer(f, peer)?;
        }
        Ok(())
    }
}

fn line(f: &mut Formatter<'_>, key: Key, value: impl Display) -> fmt::Result {
    writeln!(f, "{key} = {value}")
}

/// Repeated keys become one comma-separated line, as `wg showconf` writes
/// AllowedIPs.
fn list_line<T: Display>(f: &mut Formatter<'_>, key: Key, items: &[T]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "{key} = ")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_char('\n')
}

/// Hooks stay one line each: they run in order, and a comma inside one
/// is part of the command.
fn hook_lines(f: &mut Formatter<'_>, key: Key, commands: &[String]) -> fmt::Result {
    for command in commands {
        if command.is_empty() {
            writeln!(f, "{key} =")?;
        } else {
            line(f, key, command)?;
        }
    }
    Ok(())
}

/// 0 is written as `off`: it parses back to the explicit zero, where a
/// missing line would mean "unset".
fn zero_as_off(f: &mut Formatter<'_>, key: Key, value: u64, hex: bool) -> fmt::Result {
    match (value, hex) {
        (0, _) => line(f, key, "off"),
        (v, true) => line(f, key, format_args!("0x{v:x}")),
        (v, false) => line(f, key, v),
    }
}

fn write_interface(f: &mut Formatter<'_>, iface: &InterfaceConfig) -> fmt::Result {
    writeln!(f, "{}", Section::Interface)?;
    list_line(f, Key::Address, &iface.address)?;
    if !iface.dns.is_empty() || !iface.dns_search.is_empty() {
        write!(f, "{} = ", Key::Dns)?;
        let servers = iface.dns.iter().map(|ip| ip as &dyn Display);
        let domains = iface.dns_search.iter().map(|d| d as &dyn Display);
        for (i, entry) in servers.chain(domains).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{entry}")?;
        }
        f.write_char('\n')?;
    }
    if let Some(mtu) = iface.mtu {
        line(f, Key::Mtu, mtu)?;
    }
    if let Some(table) = &iface.table {
        line(f, Key::Table, table)?;
    }
    hook_lines(f, Key::PreUp, &iface.pre_up)?;
    hook_lines(f, Key::PostUp, &iface.post_up)?;
    hook_lines(f, Key::PreDown, &iface.pre_down)?;
    hook_lines(f, Key::PostDown, &iface.post_down)?;
    if let Some(save) = iface.save_config {
        line(f, Key::SaveConfig, save)?;
    }
    if let Some(port) = iface.listen_port {
        line(f, Key::ListenPort, port)?;
    }
    if let Some(mark) = iface.fwmark {
        zero_as_off(f, Key::FwMark, mark.into(), true)?;
    }
    if let Some(key) = &iface.private_key {
        // The formatter's sink may keep it, but this copy at least is wiped.
        let encoded = Zeroizing::new(key.to_base64());
        line(f, Key::PrivateKey, encoded.as_str())?;
    }
    Ok(())
}

fn write_peer(f: &mut Formatter<'_>, peer: &PeerConfig) -> fmt::Result {
    writeln!(f, "{}", Section::Peer)?;
    line(f, Key::PublicKey, peer.public_key)?;
    if let Some(psk) = &peer.preshared_key {
        let encoded = Zeroizing::new(psk.to_base64());
        line(f, Key::PresharedKey, encoded.as_str())?;
    }
    list_line(f, Key::AllowedIps, &peer.allowed_ips)?;
    if let Some(endpoint) = &peer.endpoint {
        line(f, Key::Endpoint, endpoint)?;
    }
    if let Some(seconds) = peer.persistent_keepalive {
        zero_as_off(f, Key::PersistentKeepalive, seconds.into(), false)?;
    }
    Ok(())
}

impl Display for IpCidr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.cidr)
    }
}

impl Display for Endpoint {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr already brackets IPv6 and appends a non-zero scope.
            Endpoint::Addr(addr) => write!(f, "{addr}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Display for Table {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Table::Off => f.write_str("off"),
            Table::Auto => f.write_str("auto"),
            Table::Id(id) => write!(f, "{id}"),
            Table::Name(name) => f.write_str(name),
        }
    }
}
