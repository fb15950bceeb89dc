//! The passing of time: fires each peer's due timers.

use core::time::Duration;

use dataplane::consts::MAX_TIMER_HANDSHAKES;

use super::{Device, Event, Output, PeerId};
use crate::timers::TimerAction;

impl Device {
    /// Runs every timer due at `now`. Call it at least as often as
    /// [`Device::next_deadline`] says.
    pub fn update_timers(&mut self, now: Duration, out: &mut Vec<Output>) {
        let mut actions = Vec::new();
        for id in self.peers.maybe_armed() {
            actions.clear();
            if let Some(p) = self.peers.get_mut(&id) {
                p.timers.expire(now, MAX_TIMER_HANDSHAKES, &mut actions);
            }
            for &a in &actions {
                self.run_timer_action(id, a, now, out);
            }
            self.peers.settle(id);
        }
    }

    fn run_timer_action(
        &mut self,
        id: PeerId,
        action: TimerAction,
        now: Duration,
        out: &mut Vec<Output>,
    ) {
        match action {
            TimerAction::RetransmitHandshake => self.send_initiation(id, now, true, out),
            TimerAction::NewHandshake => self.send_initiation(id, now, false, out),
            TimerAction::GiveUpHandshake => {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.staged.clear();
                }
                if self.settings.transport_in_dataplane {
                    out.push(Output::DropStaged { peer: id });
                }
                out.push(Output::Event(Event::HandshakeGaveUp { peer: id }));
            }
            TimerAction::SendKeepalive => self.send_keepalive(id, now, out),
            TimerAction::SendPersistentKeepalive => {
                if self
                    .peers
                    .get(&id)
                    .is_some_and(|p| p.persistent_keepalive.is_some())
                {
                    self.send_keepalive(id, now, out);
                }
            }
            TimerAction::ZeroKeyMaterial => {
                self.clear_sessions(id);
                self.keypairs_changed(id, out);
                out.push(Output::Event(Event::KeysErased { peer: id }));
            }
        }
    }

    /// The earliest time any timer is due.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.peers
            .armed_timers()
            .filter_map(|t| t.next_deadline())
            .min()
    }
}
