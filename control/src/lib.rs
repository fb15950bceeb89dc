//! wirespeed control plane: everything that decides what goes on the wire
//! besides sealing transport data. The protocol is sans-IO: state, bytes and
//! the current time in; state, bytes and events out.

pub mod crypto;
pub mod keys;
