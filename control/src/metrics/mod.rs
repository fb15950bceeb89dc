//! The metrics endpoint (opt-in: `wirespeed --metrics ADDR:PORT` or
//! `WIRESPEED_METRICS=ADDR:PORT`): per-peer, per-worker and per-uplink
//! figures from the shared region in the Prometheus text format, served
//! over HTTP/1.1 at `/metrics` by threads of the control process that
//! never touch the control loop's state.
//!
//! * [`render`]: region -> text (a pure formatter over a [`render::Snapshot`]);
//! * [`server`]: the listener.

pub mod render;
pub mod server;

pub use server::MetricsServer;

/// Parses the `--metrics` / `WIRESPEED_METRICS` value: `ADDR:PORT`, with an
/// IPv6 address in brackets (`[::1]:9586`).
pub fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("metrics address {s:?} is not ADDR:PORT (e.g. 127.0.0.1:9586 or [::1]:9586)")
    })
}
