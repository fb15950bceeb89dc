//! The cross-platform userspace API (UAPI): the text protocol `wg` speaks to
//! userspace WireGuard implementations over `/var/run/wireguard/IFACE.sock`.
//!
//! - [`request`]: parsing `get=1` / `set=1` requests into a [`Request`]; a
//!   `set` is validated as a whole before the handler sees any of it, so a bad
//!   line anywhere leaves the running state unchanged.
//! - [`response`]: formatting the `get=1` dump ([`DeviceSnapshot`]) and the
//!   `errno=` status exactly as wireguard-go does.
//! - [`server`]: the unix socket ([`UapiServer`]), one thread per connection,
//!   handing complete requests to the daemon's handler.
//!
//! The daemon implements [`UapiHandler`] on its device state and either
//! shares it behind a mutex ([`UapiServer::spawn_shared`]) or, keeping its
//! state on its own thread, receives [`UapiCall`]s from a channel
//! ([`UapiServer::spawn`]) and answers each with [`UapiCall::respond`].

pub mod request;
pub mod response;
pub mod server;

#[cfg(test)]
mod tests;

pub use request::{
    canonical_prefix, ParseError, PeerChange, Progress, Request, RequestParser, SetRequest,
};
pub use response::{format_errno, format_get, DeviceSnapshot, PeerSnapshot};
pub use server::{socket_path, Limits, UapiCall, UapiHandle, UapiServer, SOCKET_DIR};

/// The errno values the UAPI uses, positive (the response line carries them
/// negated). Linux numbering, as `wg` interprets them.
pub mod errno {
    /// I/O error.
    pub const EIO: i32 = 5;
    /// No space: more peers or prefixes than the data plane's tables hold.
    pub const ENOSPC: i32 = 28;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Device or resource busy (too many UAPI connections).
    pub const EBUSY: i32 = 16;
    /// Invalid argument: a malformed or unknown key or value.
    pub const EINVAL: i32 = 22;
    /// Protocol error: a line without `=`, a request cut short.
    pub const EPROTO: i32 = 71;
    /// Message too long: a request over the size limit.
    pub const EMSGSIZE: i32 = 90;
    /// Address already in use: the listen port cannot be bound.
    pub const EADDRINUSE: i32 = 98;
}

/// The device side of the UAPI, implemented by the daemon on its state.
pub trait UapiHandler {
    /// The current configuration and statistics, for `get=1`.
    fn get(&mut self) -> DeviceSnapshot;

    /// Applies a complete, syntactically valid `set=1` transaction (see
    /// [`SetRequest`] and [`PeerChange`] for the semantics). Returns a
    /// positive errno on failure (e.g. [`errno::EADDRINUSE`] when the listen
    /// port cannot be bound), in which case the state should be unchanged:
    /// check everything that can fail before changing anything.
    fn set(&mut self, req: SetRequest) -> Result<(), i32>;
}

/// Runs one request against `handler` and returns the complete response text
/// (`get` dump or `errno=` line, ending with the blank line).
pub fn dispatch<H: UapiHandler + ?Sized>(handler: &mut H, request: Request) -> String {
    match request {
        Request::Get => format_get(&handler.get()),
        Request::Set(req) => match handler.set(req) {
            Ok(()) => format_errno(0),
            Err(e) => format_errno(if e == 0 { errno::EIO } else { e }),
        },
    }
}
