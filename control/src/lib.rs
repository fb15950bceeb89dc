//! wirespeed control plane: everything that decides what goes on the wire
//! besides sealing transport data. The protocol is sans-IO: state, bytes and
//! the current time in; state, bytes and events out.

pub mod capture;
pub mod config;
pub mod cookie;
pub mod crypto;
pub mod daemon;
pub mod device;
pub mod handshake;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod noise;
pub mod peer;
pub mod ratelimit;
pub mod session;
pub mod timers;
pub mod uapi;
