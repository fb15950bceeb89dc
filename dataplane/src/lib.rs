//! wirespeed data plane: everything that touches every packet.
//!
//! Transport message layout and sealing, the replay window, the AllowedIPs
//! table. No I/O lives in the protocol modules; the backends feed them bytes.

pub mod aead;
pub mod allowedips;
pub mod checksum;
pub mod consts;
pub mod coredump;
pub mod frame;
pub mod gro;
pub mod ip;
pub mod logger;
pub mod messages;
pub mod netlink;
pub mod offload;
pub mod process;
pub mod replay;
pub mod sandbox;
pub mod sdnotify;
pub mod shm;
pub mod transport;
pub mod tun;
pub mod tunns;
pub mod udp;
pub mod xdp;
pub mod xsk;
