//! The keys a configuration file may hold: their spelling, their section,
//! and which tool accepts them.

use core::fmt;

/// A section of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    Interface,
    Peer,
}

impl Section {
    /// The header as `wg showconf` writes it.
    pub fn header(self) -> &'static str {
        match self {
            Section::Interface => "[Interface]",
            Section::Peer => "[Peer]",
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header())
    }
}

/// A key of the `wg(8)` or `wg-quick(8)` format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    PrivateKey,
    ListenPort,
    FwMark,
    Address,
    Dns,
    Mtu,
    Table,
    PreUp,
    PostUp,
    PreDown,
    PostDown,
    SaveConfig,
    PublicKey,
    PresharedKey,
    AllowedIps,
    Endpoint,
    PersistentKeepalive,
}

impl Key {
    pub const ALL: [Key; 17] = [
        Key::PrivateKey,
        Key::ListenPort,
        Key::FwMark,
        Key::Address,
        Key::Dns,
        Key::Mtu,
        Key::Table,
        Key::PreUp,
        Key::PostUp,
        Key::PreDown,
        Key::PostDown,
        Key::SaveConfig,
        Key::PublicKey,
        Key::PresharedKey,
        Key::AllowedIps,
        Key::Endpoint,
        Key::PersistentKeepalive,
    ];

    /// The spelling `wg showconf` and `wg-quick save` write.
    pub fn name(self) -> &'static str {
        match self {
            Key::PrivateKey => "PrivateKey",
            Key::ListenPort => "ListenPort",
            Key::FwMark => "FwMark",
            Key::Address => "Address",
            Key::Dns => "DNS",
            Key::Mtu => "MTU",
            Key::Table => "Table",
            Key::PreUp => "PreUp",
            Key::PostUp => "PostUp",
            Key::PreDown => "PreDown",
            Key::PostDown => "PostDown",
            Key::SaveConfig => "SaveConfig",
            Key::PublicKey => "PublicKey",
            Key::PresharedKey => "PresharedKey",
            Key::AllowedIps => "AllowedIPs",
            Key::Endpoint => "Endpoint",
            Key::PersistentKeepalive => "PersistentKeepalive",
        }
    }

    /// Looks a key up the way `wg` does: ASCII case does not matter.
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    pub fn section(self) -> Section {
        match self {
            Key::PublicKey
            | Key::PresharedKey
            | Key::AllowedIps
            | Key::Endpoint
            | Key::PersistentKeepalive => Section::Peer,
            _ => Section::Interface,
        }
    }

    /// True for the keys `wg-quick` consumes itself and `wg setconf` refuses.
    pub fn is_wg_quick_only(self) -> bool {
        matches!(
            self,
            Key::Address
                | Key::Dns
                | Key::Mtu
                | Key::Table
                | Key::PreUp
                | Key::PostUp
                | Key::PreDown
                | Key::PostDown
                | Key::SaveConfig
        )
    }

    /// True for the keys whose lines add up instead of conflicting.
    pub fn is_repeatable(self) -> bool {
        matches!(
            self,
            Key::Address
                | Key::Dns
                | Key::PreUp
                | Key::PostUp
                | Key::PreDown
                | Key::PostDown
                | Key::AllowedIps
        )
    }

    /// Position in [`Key::ALL`], for per-key tables.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
