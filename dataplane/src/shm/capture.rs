//! Packet capture on the AF_XDP path, which the kernel's packet taps never
//! see (transmissions go straight to the driver; steered frames are taken
//! before the taps). A capture command (`wirespeed capture`) claims the
//! capture in the region, writes its filter and turns it on; each worker
//! copies the frames that match into its own ring; the command drains the
//! rings into a pcap file and turns capture off again.
//!
//! Off, it costs a worker one relaxed load of [`CaptureControl::session`]
//! per batch and direction ([`armed`]). On, it costs a filter check per
//! frame, and a clock read and a copy of up to `snaplen` bytes per frame
//! that matches. A full ring loses the frame from the capture, never from
//! the wire: it is counted ([`CaptureRing::dropped`]) and the worker moves on.

use core::sync::atomic::{fence, Ordering};
use std::io;
use std::net::{IpAddr, SocketAddr};

use super::events::{decode_addr, encode_addr};
use super::layout::*;
use super::seqlock;
use super::{pid_alive, Region};
use crate::frame::parse_udp_frame;

/// Which frames a capture wants, and how much of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// Most bytes of each frame to keep (at most [`CAPTURE_DATA_MAX`]).
    pub snaplen: u32,
    /// CAPTURE_RX | CAPTURE_TX.
    pub directions: u32,
    /// One uplink's interface index, or 0 for every uplink.
    pub ifindex: u32,
    /// Frames from or to this address only.
    pub host: Option<IpAddr>,
    /// Frames from or to this UDP port only (0: any).
    pub port: u16,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            snaplen: CAPTURE_DATA_MAX as u32,
            directions: CAPTURE_RX | CAPTURE_TX,
            ifindex: 0,
            host: None,
            port: 0,
        }
    }
}

impl Filter {
    /// Whether a frame seen in `direction` on uplink `ifindex` is wanted.
    /// A frame that is not UDP matches only a filter without host and port.
    pub fn matches(&self, direction: u32, ifindex: u32, frame: &[u8]) -> bool {
        if self.directions & direction == 0 || (self.ifindex != 0 && self.ifindex != ifindex) {
            return false;
        }
        if self.host.is_none() && self.port == 0 {
            return true;
        }
        let Some(u) = parse_udp_frame(frame) else {
            return false;
        };
        let host_ok = self.host.is_none_or(|h| u.src.ip() == h || u.dst.ip() == h);
        let port_ok = self.port == 0 || u.src.port() == self.port || u.dst.port() == self.port;
        host_ok && port_ok
    }
}

/// A capture that is on, as one batch of a worker sees it.
#[derive(Debug, Clone, Copy)]
pub struct Armed {
    session: u64,
    filter: Filter,
}

/// Worker, once per batch: the capture that is on, if any. While capture
/// is off this is one relaxed load from a cache line nobody writes.
#[inline]
pub fn armed(region: &Region) -> Option<Armed> {
    let ctl = region.capture_control();
    match ctl.session.load(Ordering::Relaxed) {
        0 => None,
        s => armed_slow(ctl, s),
    }
}

#[cold]
fn armed_slow(ctl: &CaptureControl, session: u64) -> Option<Armed> {
    // Pairs with the Release store of `session` in `start`: the filter
    // written before it is visible now.
    fence(Ordering::Acquire);
    let filter = read_filter(ctl);
    // A capture that stopped (or was replaced) meanwhile may have left a
    // filter half rewritten: its frames would carry a dead session anyway,
    // but there is no point copying them.
    (ctl.session.load(Ordering::Acquire) == session).then_some(Armed { session, filter })
}

impl Armed {
    /// Copies `frame` into `ring` if the filter wants it. Returns whether it
    /// was copied (false also when the ring was full: counted there).
    #[inline]
    pub fn offer(
        &self,
        ring: &CaptureRing<'_>,
        direction: u32,
        ifindex: u32,
        frame: &[u8],
    ) -> bool {
        if !self.filter.matches(direction, ifindex, frame) {
            return false;
        }
        let cap = frame
            .len()
            .min(self.filter.snaplen as usize)
            .min(CAPTURE_DATA_MAX);
        let rec = CaptureRecord {
            session: self.session,
            realtime_ns: realtime_ns(),
            ifindex,
            direction,
            orig_len: frame.len() as u32,
            cap_len: cap as u32,
        };
        ring.push(&rec, &frame[..cap])
    }
}

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn read_filter(ctl: &CaptureControl) -> Filter {
    let mut host = [0u8; 24];
    seqlock::load_bytes(&ctl.host, &mut host);
    Filter {
        snaplen: ctl.snaplen.load(Ordering::Relaxed),
        directions: ctl.directions.load(Ordering::Relaxed),
        ifindex: ctl.ifindex.load(Ordering::Relaxed),
        host: decode_addr(&host).map(|a| a.ip()),
        port: ctl.port.load(Ordering::Relaxed) as u16,
    }
}

/// One worker's ring of captured frames, fixed-size slots of
/// [`CAPTURE_SLOT_SIZE`] bytes.
pub struct CaptureRing<'a> {
    header: &'a CaptureRingHeader,
    slots: *mut u8,
}

impl<'a> CaptureRing<'a> {
    /// # Safety
    /// `slots` must point at `CAPTURE_SLOTS * CAPTURE_SLOT_SIZE` bytes,
    /// 8-aligned, that live as long as `'a` and that only this ring's
    /// producer and consumer touch.
    pub(super) unsafe fn from_raw(header: &'a CaptureRingHeader, slots: *mut u8) -> Self {
        CaptureRing { header, slots }
    }

    /// Producer (the worker): appends one frame; false, and counted as
    /// dropped, if the ring is full.
    pub fn push(&self, rec: &CaptureRecord, data: &[u8]) -> bool {
        let head = self.header.head.load(Ordering::Relaxed);
        let tail = self.header.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= CAPTURE_SLOTS as u64 {
            // Single writer: no read-modify-write needed.
            let d = self.header.dropped.load(Ordering::Relaxed);
            self.header.dropped.store(d + 1, Ordering::Relaxed);
            return false;
        }
        let n = data.len().min(CAPTURE_DATA_MAX);
        let rec = CaptureRecord {
            cap_len: n as u32,
            ..*rec
        };
        let slot = (head % CAPTURE_SLOTS as u64) as usize;
        // SAFETY: slot < CAPTURE_SLOTS, so the record and its n ≤
        // CAPTURE_DATA_MAX bytes lie inside the ring's slot; slots are
        // 8-aligned (the ring's contract, CAPTURE_SLOT_SIZE % 8 == 0); the
        // consumer does not read this slot until `head` is published below.
        unsafe {
            let at = self.slots.add(slot * CAPTURE_SLOT_SIZE);
            core::ptr::write(at as *mut CaptureRecord, rec);
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                at.add(core::mem::size_of::<CaptureRecord>()),
                n,
            );
        }
        self.header
            .head
            .store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Consumer: takes the oldest frame, its bytes into `out` (replaced).
    /// The producer is another process: a head more than a ring ahead is
    /// not believed (the ring is emptied instead), and a length too large
    /// is cut to what a slot holds.
    pub fn pop(&self, out: &mut Vec<u8>) -> Option<CaptureRecord> {
        let tail = self.header.tail.load(Ordering::Relaxed);
        let head = self.header.head.load(Ordering::Acquire);
        if tail == head {
            return None;
        }
        if head.wrapping_sub(tail) > CAPTURE_SLOTS as u64 {
            self.header.tail.store(head, Ordering::Release);
            return None;
        }
        let slot = (tail % CAPTURE_SLOTS as u64) as usize;
        // SAFETY: the producer published this slot with the Release store of
        // `head` we acquired and does not reuse it until `tail` moves past;
        // the record is 8-aligned (see push) and every bit pattern of it is
        // valid (plain integers); the copy stays inside the slot.
        let rec = unsafe {
            let at = self.slots.add(slot * CAPTURE_SLOT_SIZE);
            let rec = core::ptr::read(at as *const CaptureRecord);
            let n = (rec.cap_len as usize).min(CAPTURE_DATA_MAX);
            out.clear();
            out.extend_from_slice(core::slice::from_raw_parts(
                at.add(core::mem::size_of::<CaptureRecord>()),
                n,
            ));
            CaptureRecord {
                cap_len: n as u32,
                ..rec
            }
        };
        self.header
            .tail
            .store(tail.wrapping_add(1), Ordering::Release);
        Some(rec)
    }

    /// Consumer: forgets whatever waits (an earlier capture's leftovers).
    pub fn skip_all(&self) {
        let head = self.header.head.load(Ordering::Acquire);
        self.header.tail.store(head, Ordering::Release);
    }

    /// Frames lost to a full ring since the data plane started.
    pub fn dropped(&self) -> u64 {
        self.header.dropped.load(Ordering::Relaxed)
    }
}

/// Capture command: claims the capture for process `pid`, writes `filter`
/// and turns capture on. Returns the session id the records will carry.
/// Fails while another live process holds it; takes it over from one that
/// died without turning it off.
pub fn start(region: &Region, filter: &Filter, pid: u32) -> io::Result<u64> {
    let ctl = region.capture_control();
    loop {
        match ctl
            .owner_pid
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => break,
            Err(other) if other != pid && pid_alive(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a capture is already running (process {other})"),
                ));
            }
            Err(other) => {
                if ctl
                    .owner_pid
                    .compare_exchange(other, pid, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
        }
    }
    // Off while the filter changes (a dead owner may have left it on).
    ctl.session.store(0, Ordering::Release);
    ctl.snaplen.store(
        filter.snaplen.clamp(1, CAPTURE_DATA_MAX as u32),
        Ordering::Relaxed,
    );
    ctl.directions.store(filter.directions, Ordering::Relaxed);
    ctl.ifindex.store(filter.ifindex, Ordering::Relaxed);
    seqlock::store_bytes(
        &ctl.host,
        &encode_addr(filter.host.map(|h| SocketAddr::new(h, 0))),
    );
    ctl.port.store(filter.port as u32, Ordering::Relaxed);
    for w in 0..MAX_WORKERS {
        region.capture_ring(w).skip_all();
    }
    let session = loop {
        let s = ctl.sessions.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        if s != 0 {
            break s;
        }
    };
    ctl.session.store(session, Ordering::Release);
    Ok(session)
}

/// Capture command: turns capture off and gives up its claim (if `pid`
/// still holds it: the data plane may have taken it away already).
pub fn stop(region: &Region, pid: u32) {
    let ctl = region.capture_control();
    if ctl.owner_pid.load(Ordering::Acquire) == pid {
        ctl.session.store(0, Ordering::Release);
        let _ = ctl
            .owner_pid
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Data plane supervisor: turns off a capture whose command died without
/// doing so (SIGKILL), so workers stop copying frames nobody reads. Returns
/// the dead owner's pid when it did.
pub fn reap_orphan(region: &Region) -> Option<u32> {
    let ctl = region.capture_control();
    // The session before the owner: a command that takes over in between
    // starts a new session, which the last compare-and-swap leaves alone.
    let session = ctl.session.load(Ordering::Acquire);
    let owner = ctl.owner_pid.load(Ordering::Acquire);
    if owner == 0 || pid_alive(owner) {
        return None;
    }
    ctl.owner_pid
        .compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    let _ = ctl
        .session
        .compare_exchange(session, 0, Ordering::AcqRel, Ordering::Relaxed);
    Some(owner)
}

#[cfg(test)]
mod tests;
