//! Benchmark support: shared fixtures for the criterion benches, the
//! packet-rate bench's generator and no-crypto forwarder, and the
//! handshake-flood bench's generator.

pub mod handshake_flood;
pub mod packet_rate;
