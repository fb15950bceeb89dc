//! Why a configuration file was refused, with the line and key to blame.

use core::fmt;

use super::key::Section;
use crate::keys::KeyError;

/// A refused configuration file.
///
/// Displays as `line 7: AllowedIPs: "10.0.0.0/33" is not a valid prefix`.
/// The caller knows the file name and prefixes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based.
    pub line: usize,
    /// The canonical spelling for a known key; an unknown one as written
    /// (escaped and shortened, since it goes into logs).
    pub key: Option<String>,
    pub kind: ErrorKind,
}

/// What was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The line is not `Key = Value`, a section header or a comment.
    Syntax(&'static str),
    /// A header other than `[Interface]` or `[Peer]` (escaped, shortened).
    UnknownSection(String),
    /// A key before the first section header.
    OutsideSection,
    /// A key neither `wg` nor `wg-quick` knows, in this section.
    UnknownKey(Section),
    /// A known key in the other section.
    WrongSection {
        belongs_in: Section,
    },
    /// A wg-quick key read in [`ParseMode::Wg`](super::ParseMode::Wg).
    WgQuickOnly,
    /// A single-valued key set twice in one section.
    Duplicate {
        first_line: usize,
    },
    /// A second `[Interface]` header.
    DuplicateInterface {
        first_line: usize,
    },
    EmptyValue,
    /// `value` is escaped and shortened; `reason` reads on from it.
    InvalidValue {
        value: String,
        reason: &'static str,
    },
    /// A key that does not decode. The value is never echoed: it may be a
    /// private key, or one pasted into the wrong line.
    InvalidKey(KeyError),
    /// A `[Peer]` section (on `line`) without a PublicKey.
    MissingPublicKey,
    /// A PublicKey that an earlier peer already has, on `first_line`.
    DuplicatePeer {
        first_line: usize,
    },
}

/// Longest excerpt of user text an error carries: enough to recognise the
/// value, without pasting a megabyte line into a log.
const EXCERPT_CHARS: usize = 64;

/// `s` shortened and with unprintable characters escaped, so a hostile file
/// cannot forge log lines or terminal output through an error message.
pub(super) fn excerpt(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push_str("...");
            break;
        }
        // escape_debug also covers invisible and bidi-override characters;
        // a quote needs no escape since errors wrap values in double quotes.
        if c == '\'' {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

impl ConfigError {
    pub(super) fn new(line: usize, key: Option<String>, kind: ErrorKind) -> Self {
        ConfigError { line, key, kind }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Syntax(reason) => f.write_str(reason),
            ErrorKind::UnknownSection(name) => {
                write!(
                    f,
                    "unknown section \"{name}\" (expected [Interface] or [Peer])"
                )
            }
            ErrorKind::OutsideSection => {
                f.write_str("appears before any [Interface] or [Peer] section")
            }
            ErrorKind::UnknownKey(section) => write!(f, "unknown key in {section}"),
            ErrorKind::WrongSection { belongs_in } => {
                let other = match belongs_in {
                    Section::Interface => Section::Peer,
                    Section::Peer => Section::Interface,
                };
                write!(f, "belongs in {belongs_in}, not {other}")
            }
            ErrorKind::WgQuickOnly => {
                f.write_str("only wg-quick understands this key, not wg setconf (strip it first)")
            }
            ErrorKind::Duplicate { first_line } => write!(f, "already set on line {first_line}"),
            ErrorKind::DuplicateInterface { first_line } => {
                write!(
                    f,
                    "second [Interface] section (the first is on line {first_line})"
                )
            }
            ErrorKind::EmptyValue => f.write_str("has no value"),
            ErrorKind::InvalidValue { value, reason } => write!(f, "\"{value}\" {reason}"),
            ErrorKind::InvalidKey(e) => write!(f, "{e}"),
            ErrorKind::MissingPublicKey => f.write_str("[Peer] section has no PublicKey"),
            ErrorKind::DuplicatePeer { first_line } => {
                write!(f, "the same peer is already defined on line {first_line}")
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::InvalidKey(e) => Some(e),
            _ => None,
        }
    }
}
