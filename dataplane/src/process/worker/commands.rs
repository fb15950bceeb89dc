//! Control's commands to this worker: send a handshake datagram, send what
//! waited for a new session, drop what waited for one that failed.

use crate::offload::Piece;
use crate::shm::events::ToDataplane;
use crate::shm::layout::RECORD_SIZE;

use super::{Worker, BATCH};

impl Worker {
    pub(super) fn commands(&mut self) {
        let mut rec = [0u8; RECORD_SIZE];
        while let Some(n) = self.shared.region.ring_to_dataplane(self.id).pop(&mut rec) {
            match ToDataplane::decode(&rec[..n]) {
                Some(ToDataplane::Send {
                    to,
                    local,
                    datagram,
                }) => {
                    let _ = self.sock.send_to(to, local, &datagram);
                }
                Some(ToDataplane::Flush { peer, keepalive }) => self.flush_peer(peer, keepalive),
                Some(ToDataplane::DropStaged { peer }) => self.shared.drop_staged(peer),
                None => {}
            }
        }
    }

    pub(super) fn flush_peer(&mut self, peer: u32, keepalive: bool) {
        // A new session: forget the rate limit on asking for another one.
        self.last_need.remove(&peer);
        let mut staged = self.shared.take_staged(peer);
        if staged.is_empty() && keepalive {
            staged.push_back(Vec::new());
        }
        self.burst_left = staged.len() as u64;
        while let Some(pkt) = staged.pop_front() {
            if !self.seal_for(peer, Piece::whole(&pkt)) {
                staged.push_front(pkt);
                for p in staged {
                    self.shared.stage(peer, p);
                }
                self.need_handshake(peer);
                break;
            }
            if self.pending_out() >= BATCH {
                self.flush_out();
            }
        }
        self.end_burst();
        self.flush_out();
    }
}
