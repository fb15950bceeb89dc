//! Benchmark support: shared fixtures for the criterion benches and the
//! packet-rate bench's generator and no-crypto forwarder.

pub mod packet_rate;
