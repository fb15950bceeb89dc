//! Control messages of the UDP socket: the source address a reply leaves
//! from (IP_PKTINFO / IPV6_PKTINFO), the segment size of a GSO train
//! (UDP_SEGMENT) on the way out, and what the kernel reports with each
//! received datagram (its destination address, and the segment size of a
//! UDP_GRO-coalesced one).

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;

use super::canonical_ip;

/// Control-message space per datagram. Received: a v4 datagram on the
/// dual-stack socket carries both IP_PKTINFO (32 bytes) and IPV6_PKTINFO
/// (40 bytes), a coalesced one UDP_GRO (24 bytes) as well. Sent: one
/// pktinfo and UDP_SEGMENT (16 bytes).
pub(super) const CMSG_BUF_LEN: usize = 128;

// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const _: () = assert!(
    unsafe {
        libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32)
            + libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as u32)
            + libc::CMSG_SPACE(mem::size_of::<libc::c_int>() as u32)
    } as usize
        <= CMSG_BUF_LEN
);

/// Control-message buffer, aligned for `cmsghdr` as CMSG_FIRSTHDR requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct CmsgBuf(pub(super) [u8; CMSG_BUF_LEN]);

impl CmsgBuf {
    pub(super) const ZERO: CmsgBuf = CmsgBuf([0; CMSG_BUF_LEN]);

    /// Appends one control message after the `used` bytes already written
    /// (0 starts afresh) and returns the new length, or `used` unchanged if
    /// it does not fit (the buffer is sized so that the ones sent here
    /// always do).
    pub(super) fn push<T: Copy>(
        &mut self,
        used: usize,
        level: libc::c_int,
        ty: libc::c_int,
        value: T,
    ) -> usize {
        if used == 0 {
            *self = CmsgBuf::ZERO;
        }
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<T>() as u32) } as usize;
        // `used` is always a sum of CMSG_SPACEs, so the header lands
        // aligned for cmsghdr (the buffer itself is 8-aligned).
        if !used.is_multiple_of(mem::align_of::<libc::cmsghdr>()) || used + space > CMSG_BUF_LEN {
            return used;
        }
        // SAFETY: `used + space` bytes fit in the buffer (checked above), and
        // the header at `used` is aligned for cmsghdr; the payload is written
        // unaligned because CMSG_DATA promises no alignment.
        unsafe {
            let c = self.0.as_mut_ptr().add(used).cast::<libc::cmsghdr>();
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<T>() as u32) as _;
            (*c).cmsg_level = level;
            (*c).cmsg_type = ty;
            ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), value);
        }
        used + space
    }
}

/// What the kernel said about one received datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RecvInfo {
    /// The local address the sender wrote to.
    pub local: Option<IpAddr>,
    /// The interface it came in on; 0 if unknown.
    pub ifindex: u32,
    /// With UDP_GRO: the size of each coalesced datagram but the last
    /// (which may be shorter); 0 for a single datagram.
    pub segment_size: usize,
}

/// Reads the control messages of a header the kernel just filled.
pub(super) fn read_received(mh: &libc::msghdr) -> RecvInfo {
    let mut info = RecvInfo::default();
    // SAFETY: `mh` is a header the kernel just filled: msg_control points at
    // a CmsgBuf of ours and msg_controllen says how much of it holds control
    // messages, so CMSG_FIRSTHDR/CMSG_NXTHDR stay inside it; each payload is
    // read only after checking its cmsg_len covers the type read, and read
    // unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            let len = (*c).cmsg_len as usize;
            let data = libc::CMSG_DATA(c);
            let holds = |size: usize| len >= libc::CMSG_LEN(size as u32) as usize;
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if holds(mem::size_of::<libc::in_pktinfo>()) =>
                {
                    let p = ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    info.local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
                    info.ifindex = u32::try_from(p.ipi_ifindex).unwrap_or(0);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if holds(mem::size_of::<libc::in6_pktinfo>()) =>
                {
                    let p = ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    info.local = Some(canonical_ip(IpAddr::V6(Ipv6Addr::from(
                        p.ipi6_addr.s6_addr,
                    ))));
                    info.ifindex = p.ipi6_ifindex;
                }
                // The kernel reports the segment size as an int (udp_cmsg_recv).
                (libc::SOL_UDP, libc::UDP_GRO) if holds(mem::size_of::<libc::c_int>()) => {
                    let size = ptr::read_unaligned(data.cast::<libc::c_int>());
                    info.segment_size = usize::try_from(size).unwrap_or(0);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    info
}
