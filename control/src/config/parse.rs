//! Reading a file: lines, sections, keys, and the rules that tie them
//! together (required keys, duplicates, which tool accepts what).

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::error::{excerpt, ConfigError, ErrorKind};
use super::key::{Key, Section};
use super::values::{self, Dns, Reason};
use super::{Config, Endpoint, InterfaceConfig, IpCidr, ParseMode, PeerConfig};
use crate::keys::{KeyError, PresharedKey, PrivateKey, PublicKey};

/// Parses a file with wg-quick's rules: every key either tool accepts.
///
/// # Errors
///
/// The first problem in the file, by line; see [`parse_with_mode`].
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_mode(text, ParseMode::WgQuick)
}

/// Parses a file; in [`ParseMode::Wg`] the wg-quick keys are errors.
///
/// # Errors
///
/// The first problem in the file, by line: a malformed line, an unknown
/// or misplaced key, a key set twice, a bad value, a peer without a
/// PublicKey or one defined twice. Nothing partial comes back, so nothing
/// from a bad file can be applied.
pub fn parse_with_mode(text: &str, mode: ParseMode) -> Result<Config, ConfigError> {
    // Editors on some systems start a UTF-8 file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new(mode);
    for (index, line) in text.lines().enumerate() {
        parser.line(index + 1, line)?;
    }
    parser.finish()
}

/// The line on which each single-valued key was set in one section.
struct Seen([Option<usize>; Key::ALL.len()]);

impl Seen {
    fn new() -> Self {
        Seen([None; Key::ALL.len()])
    }

    /// Records `key` on `line`, or says where it was set before.
    fn set(&mut self, key: Key, line: usize) -> Result<(), usize> {
        let slot = &mut self.0[key.index()];
        match *slot {
            Some(first_line) => Err(first_line),
            None => {
                *slot = Some(line);
                Ok(())
            }
        }
    }
}

/// A `[Peer]` still being read: its PublicKey may come on any line.
struct PeerDraft {
    header_line: usize,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    allowed_ips: Vec<IpCidr>,
    endpoint: Option<Endpoint>,
    persistent_keepalive: Option<u16>,
    seen: Seen,
}

impl PeerDraft {
    fn new(header_line: usize) -> Self {
        PeerDraft {
            header_line,
            public_key: None,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
            seen: Seen::new(),
        }
    }

    fn finish(self) -> Result<PeerConfig, ConfigError> {
        let public_key = self
            .public_key
            .ok_or_else(|| ConfigError::new(self.header_line, None, ErrorKind::MissingPublicKey))?;
        Ok(PeerConfig {
            public_key,
            preshared_key: self.preshared_key,
            allowed_ips: self.allowed_ips,
            endpoint: self.endpoint,
            persistent_keepalive: self.persistent_keepalive,
        })
    }
}

struct Parser {
    mode: ParseMode,
    section: Option<Section>,
    interface: InterfaceConfig,
    interface_line: Option<usize>,
    interface_seen: Seen,
    peers: Vec<PeerConfig>,
    /// Open while `section` is `Peer`.
    peer: Option<PeerDraft>,
    /// Each peer's public key and the line that set it.
    peer_keys: HashMap<PublicKey, usize>,
}

impl Parser {
    fn new(mode: ParseMode) -> Self {
        Parser {
            mode,
            section: None,
            interface: InterfaceConfig::default(),
            interface_line: None,
            interface_seen: Seen::new(),
            peers: Vec::new(),
            peer: None,
            peer_keys: HashMap::new(),
        }
    }

    fn line(&mut self, line_no: usize, line: &str) -> Result<(), ConfigError> {
        // `#` starts a comment anywhere, even inside a hook command: that
        // is how wg-quick reads it too.
        let content = match line.find('#') {
            Some(at) => &line[..at],
            None => line,
        };
        let content = values::trim(content);
        if content.is_empty() {
            return Ok(());
        }
        if content.starts_with('[') {
            return self.header(line_no, content);
        }
        match content.split_once('=') {
            Some((key, value)) if !values::trim(key).is_empty() => {
                self.key_value(line_no, values::trim(key), values::trim(value))
            }
            _ => Err(ConfigError::new(
                line_no,
                None,
                ErrorKind::Syntax("expected \"Key = Value\" or a [Section] header"),
            )),
        }
    }

    fn header(&mut self, line_no: usize, content: &str) -> Result<(), ConfigError> {
        if !content.ends_with(']') {
            return Err(ConfigError::new(
                line_no,
                None,
                ErrorKind::Syntax("section header has no closing ']'"),
            ));
        }
        // wg ignores whitespace everywhere, so `[ Peer ]` is a header too.
        let name = values::without_spaces(&content[1..content.len() - 1]);
        let section = if name.eq_ignore_ascii_case("Interface") {
            Section::Interface
        } else if name.eq_ignore_ascii_case("Peer") {
            Section::Peer
        } else {
            return Err(ConfigError::new(
                line_no,
                None,
                ErrorKind::UnknownSection(excerpt(content)),
            ));
        };
        self.close_peer()?;
        match section {
            Section::Interface => {
                if let Some(first_line) = self.interface_line {
                    return Err(ConfigError::new(
                        line_no,
                        None,
                        ErrorKind::DuplicateInterface { first_line },
                    ));
                }
                self.interface_line = Some(line_no);
            }
            Section::Peer => self.peer = Some(PeerDraft::new(line_no)),
        }
        self.section = Some(section);
        Ok(())
    }

    fn close_peer(&mut self) -> Result<(), ConfigError> {
        if let Some(draft) = self.peer.take() {
            self.peers.push(draft.finish()?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Config, ConfigError> {
        self.close_peer()?;
        Ok(Config {
            interface: self.interface,
            peers: self.peers,
        })
    }

    fn key_value(&mut self, line_no: usize, name: &str, value: &str) -> Result<(), ConfigError> {
        let known = Key::from_name(name);
        let key_text = match known {
            Some(key) => key.name().to_string(),
            None => excerpt(name),
        };
        let fail = |kind| Err(ConfigError::new(line_no, Some(key_text.clone()), kind));

        let Some(section) = self.section else {
            return fail(ErrorKind::OutsideSection);
        };
        let Some(key) = known else {
            return fail(ErrorKind::UnknownKey(section));
        };
        if key.section() != section {
            return fail(ErrorKind::WrongSection {
                belongs_in: key.section(),
            });
        }
        if self.mode == ParseMode::Wg && key.is_wg_quick_only() {
            return fail(ErrorKind::WgQuickOnly);
        }
        if !key.is_repeatable() {
            let seen = match &mut self.peer {
                Some(draft) => &mut draft.seen,
                None => &mut self.interface_seen,
            };
            if let Err(first_line) = seen.set(key, line_no) {
                return fail(ErrorKind::Duplicate { first_line });
            }
        }
        // wg-quick lets these be empty (a template with nothing filled in);
        // wg itself refuses every empty value.
        let may_be_empty = matches!(
            key,
            Key::Address | Key::Dns | Key::PreUp | Key::PostUp | Key::PreDown | Key::PostDown
        );
        if value.is_empty() && !may_be_empty {
            return fail(ErrorKind::EmptyValue);
        }

        let result = match section {
            Section::Interface => self.interface_value(key, value),
            Section::Peer => self.peer_value(line_no, key, value),
        };
        result.map_err(|kind| ConfigError::new(line_no, Some(key_text), kind))
    }

    fn interface_value(&mut self, key: Key, value: &str) -> Result<(), ErrorKind> {
        let iface = &mut self.interface;
        match key {
            Key::PrivateKey => {
                iface.private_key = Some(decode_key(value, PrivateKey::from_base64)?)
            }
            Key::ListenPort => iface.listen_port = Some(wg_value(value, values::listen_port)?),
            Key::FwMark => iface.fwmark = Some(wg_value(value, values::fwmark)?),
            Key::Address => {
                for item in values::wg_quick_list(value) {
                    iface.address.push(checked(item, values::ip_cidr(item))?);
                }
            }
            Key::Dns => {
                for item in values::wg_quick_list(value) {
                    match checked(item, values::dns(item))? {
                        Dns::Server(ip) => iface.dns.push(ip),
                        Dns::Search(domain) => iface.dns_search.push(domain),
                    }
                }
            }
            Key::Mtu => iface.mtu = Some(checked(value, values::mtu(value))?),
            Key::Table => iface.table = Some(checked(value, values::table(value))?),
            Key::PreUp => iface.pre_up.push(value.to_string()),
            Key::PostUp => iface.post_up.push(value.to_string()),
            Key::PreDown => iface.pre_down.push(value.to_string()),
            Key::PostDown => iface.post_down.push(value.to_string()),
            Key::SaveConfig => iface.save_config = Some(checked(value, values::boolean(value))?),
            Key::PublicKey
            | Key::PresharedKey
            | Key::AllowedIps
            | Key::Endpoint
            | Key::PersistentKeepalive => {
                // key_value checked the section already.
                return Err(ErrorKind::WrongSection {
                    belongs_in: Section::Peer,
                });
            }
        }
        Ok(())
    }

    fn peer_value(&mut self, line_no: usize, key: Key, value: &str) -> Result<(), ErrorKind> {
        let Some(draft) = self.peer.as_mut() else {
            // Only reachable if `section` and `peer` disagreed.
            return Err(ErrorKind::Syntax("key outside a [Peer] section"));
        };
        match key {
            Key::PublicKey => {
                let public_key = decode_key(value, PublicKey::from_base64)?;
                if let Some(&first_line) = self.peer_keys.get(&public_key) {
                    return Err(ErrorKind::DuplicatePeer { first_line });
                }
                self.peer_keys.insert(public_key, line_no);
                draft.public_key = Some(public_key);
            }
            Key::PresharedKey => {
                draft.preshared_key = Some(decode_key(value, PresharedKey::from_base64)?);
            }
            Key::AllowedIps => {
                // wg splits on commas only and refuses empty items, so a
                // stray comma is an error rather than silently nothing.
                let list = values::without_spaces(value);
                for item in list.split(',') {
                    draft
                        .allowed_ips
                        .push(checked(item, values::ip_cidr(item))?);
                }
            }
            Key::Endpoint => draft.endpoint = Some(wg_value(value, values::endpoint)?),
            Key::PersistentKeepalive => {
                draft.persistent_keepalive = Some(wg_value(value, values::persistent_keepalive)?);
            }
            _ => {
                return Err(ErrorKind::WrongSection {
                    belongs_in: Section::Interface,
                })
            }
        }
        Ok(())
    }
}

/// Turns a value parser's refusal into the error that quotes the value.
fn checked<T>(value: &str, result: Result<T, Reason>) -> Result<T, ErrorKind> {
    result.map_err(|reason| ErrorKind::InvalidValue {
        value: excerpt(value),
        reason,
    })
}

/// A value of a `wg` key, read as `wg` reads it: whitespace removed. The
/// error quotes the value as written.
fn wg_value<T>(value: &str, parse: fn(&str) -> Result<T, Reason>) -> Result<T, ErrorKind> {
    checked(value, parse(&values::without_spaces(value)))
}

/// Decodes a key without quoting it, and wipes the copy made on the way.
fn decode_key<T>(value: &str, decode: fn(&str) -> Result<T, KeyError>) -> Result<T, ErrorKind> {
    let compact = Zeroizing::new(values::without_spaces(value));
    decode(&compact).map_err(ErrorKind::InvalidKey)
}
