//! Protocol constants shared by the data plane and the control plane.
//!
//! Values are those of the WireGuard paper (section 6) and the Linux kernel
//! implementation; one place so both processes agree.

use core::time::Duration;

/// A sending key is renegotiated after this many messages.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// A key is never used for more messages than this (2^64 - 2^13 - 1 in the paper),
/// leaving room for the replay window above it.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// The initiator renegotiates once its current key is this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// No key older than this is used to send or receive.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// After this long without a completed handshake, retries stop.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retry interval for an unanswered initiation (plus up to [`REKEY_TIMEOUT_JITTER_MAX`]).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to each retransmission.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(333);
/// Passive keepalive: sent when data was received but nothing sent for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Number of initiation retransmissions before giving up (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT).
pub const MAX_TIMER_HANDSHAKES: u32 =
    (REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()) as u32;
/// Packets held per peer while a handshake is pending.
pub const MAX_STAGED_PACKETS: usize = 128;
/// A responder refuses a second initiation from a peer sooner than this
/// (the kernel's INITIATIONS_PER_SECOND = 50).
pub const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);
/// Cookie secrets rotate, and received cookies expire, after this long.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// A received cookie is used only while younger than this (the kernel's
/// COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY).
pub const COOKIE_VALID_FOR: Duration = Duration::from_secs(120 - 5);

/// Replay window: bitmap size in bits (RFC 6479, as the kernel's COUNTER_BITS_TOTAL).
pub const REPLAY_WINDOW_BITS: u64 = 8192;

/// Default MTU of a wirespeed interface (1500 minus the 80 bytes of IPv6+UDP+WireGuard overhead).
pub const DEFAULT_MTU: u16 = 1420;
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 51820;
