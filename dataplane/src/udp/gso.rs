//! UDP segmentation offload on the way out: consecutive datagrams to one
//! destination, of one size (the last may be shorter), leave as one
//! `sendmmsg` entry carrying `UDP_SEGMENT`, so the kernel builds, routes
//! and queues one socket buffer per train instead of one per datagram
//! (the segments are cut by the device, or as late as the kernel can).
//! Where the kernel or the route refuses a train, that destination goes
//! back to one datagram per entry.

use std::io;
use std::net::SocketAddr;

use super::SendMsg;

/// Most datagrams in one train: the kernel's UDP_MAX_SEGMENTS (64 before
/// 6.9, 128 since), taken at the lower figure so older kernels accept it.
pub const MAX_SEGMENTS: usize = 64;

/// Most payload bytes in one train: one UDP datagram over IPv4 carries at
/// most 65,535 − 20 − 8 bytes, and the train travels as one until it is cut.
pub const MAX_TRAIN_BYTES: usize = 65_535 - 20 - 8;

/// Destinations remembered as refusing trains; beyond this the oldest is
/// forgotten (and simply refused again, once, if it still refuses).
const REFUSED_MAX: usize = 64;

/// How many of `msgs`, from the front, go out as one train: messages to the
/// same destination from the same source, all as long as the first but the
/// last, which may be shorter. 1 when trains are not `allowed`.
pub(super) fn train_len(msgs: &[SendMsg<'_>], allowed: bool) -> usize {
    let Some(first) = msgs.first() else {
        return 0;
    };
    let size = first.data.len();
    if !allowed || size == 0 {
        return 1;
    }
    let mut n = 1;
    let mut bytes = size;
    for m in &msgs[1..] {
        let len = m.data.len();
        if n == MAX_SEGMENTS
            || m.dst != first.dst
            || m.src != first.src
            || len == 0
            || len > size
            || bytes + len > MAX_TRAIN_BYTES
        {
            break;
        }
        n += 1;
        bytes += len;
        if len < size {
            break;
        }
    }
    n
}

/// Errors with which the kernel refuses a train rather than the datagrams
/// in it: no GSO on this kernel or socket (ENOPROTOOPT, EOPNOTSUPP), a
/// segment larger than the route's MTU or a device that cannot checksum it
/// (EINVAL, EIO), a train over the size limit (EMSGSIZE).
pub(super) fn refuses_trains(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Whether trains are sent, and to whom not.
#[derive(Clone, Debug, Default)]
pub(super) struct GsoState {
    /// The kernel accepts UDP_SEGMENT on this socket, and it is wanted.
    pub on: bool,
    /// Destinations whose train was refused while its datagrams alone
    /// went out (oldest first).
    refused: Vec<SocketAddr>,
    /// Trains refused so far.
    pub fallbacks: u64,
}

impl GsoState {
    pub fn allows(&self, dst: SocketAddr) -> bool {
        self.on && !self.refused.contains(&dst)
    }

    /// `dst` refused a train whose datagrams then went out one by one.
    pub fn refuse(&mut self, dst: SocketAddr) {
        self.fallbacks += 1;
        if self.refused.contains(&dst) {
            return;
        }
        if self.refused.len() == REFUSED_MAX {
            self.refused.remove(0);
        }
        self.refused.push(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn msg(dst: u16, data: &[u8]) -> SendMsg<'_> {
        SendMsg {
            dst: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dst),
            src: None,
            data,
        }
    }

    #[test]
    fn trains_stop_at_a_new_destination_size_or_source() {
        let big = [0u8; 100];
        let small = [0u8; 40];
        let m = [msg(1, &big), msg(1, &big), msg(2, &big), msg(2, &big)];
        assert_eq!(train_len(&m, true), 2);
        assert_eq!(train_len(&m[2..], true), 2);
        assert_eq!(train_len(&m, false), 1);
        // A shorter one ends the train, and is in it.
        let m = [msg(1, &big), msg(1, &small), msg(1, &big)];
        assert_eq!(train_len(&m, true), 2);
        // A longer one is not.
        let m = [msg(1, &small), msg(1, &big)];
        assert_eq!(train_len(&m, true), 1);
        let mut other_src = msg(1, &big);
        other_src.src = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(train_len(&[msg(1, &big), other_src], true), 1);
        assert_eq!(train_len(&[msg(1, &[]), msg(1, &[])], true), 1);
        assert_eq!(train_len(&[], true), 0);
    }

    #[test]
    fn trains_respect_the_segment_and_byte_limits() {
        let seg = [0u8; 100];
        let many: Vec<_> = (0..MAX_SEGMENTS + 5).map(|_| msg(1, &seg)).collect();
        assert_eq!(train_len(&many, true), MAX_SEGMENTS);
        let big = vec![0u8; 1452];
        let many: Vec<_> = (0..60).map(|_| msg(1, &big)).collect();
        let n = train_len(&many, true);
        assert_eq!(n, MAX_TRAIN_BYTES / 1452);
        assert!(n * 1452 <= MAX_TRAIN_BYTES);
    }

    #[test]
    fn refused_destinations_are_remembered_and_bounded() {
        let mut g = GsoState {
            on: true,
            ..Default::default()
        };
        let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        assert!(g.allows(a));
        g.refuse(a);
        g.refuse(a);
        assert!(!g.allows(a));
        assert_eq!(g.fallbacks, 2);
        for p in 2..(REFUSED_MAX as u16 + 2) {
            g.refuse(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
        }
        assert!(g.allows(a), "the oldest is forgotten");
        assert!(
            !GsoState::default().allows(a),
            "off until the kernel says yes"
        );
    }
}
