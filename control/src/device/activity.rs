//! Data plane mode: traffic happens in another process, which records when
//! it last sent and received; control turns those times back into the
//! timer events the kernel would have raised per packet.

use core::time::Duration;

use super::{Device, Output, PeerId};

/// Traffic of one peer observed since the previous call, as the latest time
/// of each kind (monotonic, the same clock as `now`), or `None` if none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    pub tx_auth: Option<Duration>,
    pub tx_data: Option<Duration>,
    pub rx_auth: Option<Duration>,
    pub rx_data: Option<Duration>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    // At equal times a receive is taken to precede the send it provoked.
    RxData,
    RxAuth,
    TxData,
    TxAuth,
}

impl Device {
    /// Applies traffic the data plane saw, in time order.
    pub fn note_activity(&mut self, id: PeerId, now: Duration, a: Activity, out: &mut Vec<Output>) {
        let mut ev: Vec<(Duration, Kind)> = [
            (a.rx_data, Kind::RxData),
            (a.rx_auth, Kind::RxAuth),
            (a.tx_data, Kind::TxData),
            (a.tx_auth, Kind::TxAuth),
        ]
        .into_iter()
        .filter_map(|(t, k)| t.map(|t| (t, k)))
        .collect();
        ev.sort();
        for (t, kind) in ev {
            let jitter = self.jitter();
            let Some(p) = self.peers.get_mut(&id) else {
                return;
            };
            match kind {
                Kind::RxData => p.timers.data_received(t),
                Kind::RxAuth => {
                    p.timers.any_authenticated_packet_received();
                    p.timers
                        .any_authenticated_packet_traversal(t, p.persistent_keepalive);
                    self.keep_key_fresh_on_receive(id, now, out);
                }
                Kind::TxData => p.timers.data_sent(t, jitter),
                Kind::TxAuth => {
                    p.timers
                        .any_authenticated_packet_traversal(t, p.persistent_keepalive);
                    p.timers.any_authenticated_packet_sent();
                }
            }
        }
    }

    /// The data plane received the first message under the responder keys
    /// with `local_index`: they become current.
    pub fn confirm_session(
        &mut self,
        id: PeerId,
        local_index: u32,
        now: Duration,
        out: &mut Vec<Output>,
    ) {
        let is_next = self
            .peers
            .get(&id)
            .and_then(|p| p.keypairs.next.as_ref())
            .is_some_and(|k| k.local_index == local_index);
        if is_next {
            self.promote_next(id, now, out);
        }
    }
}
