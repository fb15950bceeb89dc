//! Configuration files in the `wg(8)` format, with the `wg-quick(8)` keys.
//!
//! [`parse`] turns a file into a [`Config`] or a [`ConfigError`] naming the
//! line and key; nothing partial ever comes back, so a bad file can never
//! half-apply. `Display` on [`Config`] writes the canonical `wg showconf`
//! text (plus the wg-quick keys that are set), which parses back equal.
//!
//! `wg setconf` refuses the wg-quick keys while `wg-quick` accepts them, so
//! the caller picks with [`ParseMode`], or parses everything and takes
//! [`Config::strip`] for the part the device itself understands.

mod error;
mod key;
mod parse;
mod values;
mod write;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

use crate::keys::{PresharedKey, PrivateKey, PublicKey};

pub use error::{ConfigError, ErrorKind};
pub use key::{Key, Section};
pub use parse::{parse, parse_with_mode};

/// Which tool's rules a file is read by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseMode {
    /// `wg setconf` / `wg addconf`: only the keys the device understands.
    Wg,
    /// `wg-quick`: also Address, DNS, MTU, Table, the hooks and SaveConfig.
    WgQuick,
}

/// A whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub interface: InterfaceConfig,
    /// In file order; public keys are unique.
    pub peers: Vec<PeerConfig>,
}

/// The `[Interface]` section.
///
/// `None` means the key was absent. That differs from an explicit zero or
/// "off" for `wg addconf`, which leaves absent settings as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub private_key: Option<PrivateKey>,
    /// `Some(0)` asks for a random port.
    pub listen_port: Option<u16>,
    /// `Some(0)` is "off": clear the mark.
    pub fwmark: Option<u32>,

    // wg-quick only from here on.
    /// Interface addresses with their prefix, host bits included.
    pub address: Vec<IpCidr>,
    /// DNS servers for resolvconf.
    pub dns: Vec<IpAddr>,
    /// DNS search domains: the DNS entries that are not addresses.
    pub dns_search: Vec<String>,
    pub mtu: Option<u16>,
    pub table: Option<Table>,
    /// Shell commands, verbatim (`%i` unexpanded), in file order.
    pub pre_up: Vec<String>,
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub post_down: Vec<String>,
    pub save_config: Option<bool>,
}

/// One `[Peer]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// As written: host bits beyond the prefix are kept, as `wg` keeps them.
    pub allowed_ips: Vec<IpCidr>,
    pub endpoint: Option<Endpoint>,
    /// Seconds; `Some(0)` is an explicit "off".
    pub persistent_keepalive: Option<u16>,
}

/// An address with a prefix length, e.g. `10.0.0.1/24`.
///
/// The address keeps its host bits: for Address they are the interface's
/// own address, and for AllowedIPs `wg` passes them through unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpCidr {
    pub addr: IpAddr,
    /// At most 32 for IPv4 and 128 for IPv6.
    pub cidr: u8,
}

impl IpCidr {
    /// `None` if `cidr` is longer than the address.
    pub fn new(addr: IpAddr, cidr: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (cidr <= max).then_some(IpCidr { addr, cidr })
    }
}

/// A peer's endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Addr(SocketAddr),
    /// A name left unresolved: resolving blocks and can fail transiently,
    /// so it is the caller's decision when and how often to try.
    Host {
        host: String,
        port: u16,
    },
}

/// wg-quick's `Table`: which routing table the AllowedIPs routes go into.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Add no routes.
    Off,
    /// The default: the main table, or a fresh one for default routes.
    Auto,
    Id(u32),
    /// A name from `/etc/iproute2/rt_tables`, passed to `ip` as written.
    Name(String),
}

impl InterfaceConfig {
    /// Whether any key that only wg-quick understands is set.
    pub fn has_wg_quick_keys(&self) -> bool {
        !self.address.is_empty()
            || !self.dns.is_empty()
            || !self.dns_search.is_empty()
            || self.mtu.is_some()
            || self.table.is_some()
            || !self.pre_up.is_empty()
            || !self.post_up.is_empty()
            || !self.pre_down.is_empty()
            || !self.post_down.is_empty()
            || self.save_config.is_some()
    }

    /// The settings `wg setconf` understands, wg-quick's removed.
    pub fn strip(&self) -> InterfaceConfig {
        InterfaceConfig {
            private_key: self.private_key.clone(),
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            ..InterfaceConfig::default()
        }
    }
}

impl Config {
    /// Whether any key that only wg-quick understands is set.
    pub fn has_wg_quick_keys(&self) -> bool {
        self.interface.has_wg_quick_keys()
    }

    /// What `wg-quick strip` prints: the config without wg-quick's keys,
    /// ready for `wg setconf`.
    pub fn strip(&self) -> Config {
        Config {
            interface: self.interface.strip(),
            peers: self.peers.clone(),
        }
    }
}
