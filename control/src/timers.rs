//! The per-peer timers of the WireGuard paper (section 6), as deadlines that
//! the caller's clock passes, mirroring the kernel's timers.c: which protocol
//! event arms or clears which timer, and what each does when it fires.
//! Time is an input, so tests can run hours of protocol in milliseconds.

use core::time::Duration;

use dataplane::consts::{KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_TIMEOUT};

/// What a fired timer asks the peer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Resend the initiation (a retry: the attempt counter keeps counting).
    RetransmitHandshake,
    /// Too many retries: drop staged packets and stop trying.
    GiveUpHandshake,
    /// We received data but have sent nothing for KEEPALIVE_TIMEOUT.
    SendKeepalive,
    /// We sent data but heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT.
    NewHandshake,
    /// Three REJECT_AFTER_TIMEs since the last session: erase all keys.
    ZeroKeyMaterial,
    /// The configured persistent keepalive interval passed.
    SendPersistentKeepalive,
}

#[derive(Debug, Default, Clone)]
pub struct Timers {
    pub retransmit_handshake: Option<Duration>,
    pub send_keepalive: Option<Duration>,
    pub new_handshake: Option<Duration>,
    pub zero_key_material: Option<Duration>,
    pub persistent_keepalive: Option<Duration>,
    /// Set when data arrives while the keepalive timer is already armed, so
    /// another keepalive follows the first.
    pub need_another_keepalive: bool,
    /// Retries of the current handshake so far.
    pub handshake_attempts: u32,
    /// The receive path asked for a handshake near key expiry already.
    pub sent_lastminute_handshake: bool,
    /// When the last initiation went out, for the REKEY_TIMEOUT rate limit.
    pub last_sent_handshake: Option<Duration>,
}

impl Timers {
    /// After an authenticated data packet (not a keepalive) is sent.
    pub fn data_sent(&mut self, now: Duration, jitter: Duration) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter);
        }
    }

    /// After an authenticated data packet (not a keepalive) is received.
    pub fn data_received(&mut self, now: Duration) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// After any authenticated packet (keepalive, data or handshake) is sent.
    pub fn any_authenticated_packet_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// After any authenticated packet is received.
    pub fn any_authenticated_packet_received(&mut self) {
        self.new_handshake = None;
    }

    /// Before any authenticated packet is sent or after one is received.
    pub fn any_authenticated_packet_traversal(
        &mut self,
        now: Duration,
        persistent_keepalive: Option<Duration>,
    ) {
        self.persistent_keepalive = persistent_keepalive.map(|i| now + i);
    }

    /// After an initiation is sent.
    pub fn handshake_initiated(&mut self, now: Duration, jitter: Duration) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter);
        self.last_sent_handshake = Some(now);
    }

    /// After a response is consumed, or the first data under a new responder session.
    pub fn handshake_complete(&mut self) {
        self.retransmit_handshake = None;
        self.handshake_attempts = 0;
        self.sent_lastminute_handshake = false;
    }

    /// After a session's keys are derived.
    pub fn session_derived(&mut self, now: Duration) {
        self.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
    }

    /// True when an initiation went out less than REKEY_TIMEOUT ago.
    pub fn handshake_rate_limited(&self, now: Duration) -> bool {
        matches!(self.last_sent_handshake, Some(t) if now < t + REKEY_TIMEOUT)
    }

    /// The earliest armed deadline, for the caller's sleep.
    pub fn next_deadline(&self) -> Option<Duration> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every timer whose deadline is at or before `now`, disarming it,
    /// and returns what to do in the order the kernel's handlers would.
    pub fn expire(&mut self, now: Duration, max_attempts: u32, out: &mut Vec<TimerAction>) {
        let due = |t: &mut Option<Duration>| match *t {
            Some(d) if d <= now => {
                *t = None;
                true
            }
            _ => false,
        };
        if due(&mut self.retransmit_handshake) {
            if self.handshake_attempts >= max_attempts {
                self.send_keepalive = None;
                if self.zero_key_material.is_none() {
                    self.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
                }
                out.push(TimerAction::GiveUpHandshake);
            } else {
                self.handshake_attempts += 1;
                out.push(TimerAction::RetransmitHandshake);
            }
        }
        if due(&mut self.send_keepalive) {
            out.push(TimerAction::SendKeepalive);
            if self.need_another_keepalive {
                self.need_another_keepalive = false;
                self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
            }
        }
        if due(&mut self.new_handshake) {
            out.push(TimerAction::NewHandshake);
        }
        if due(&mut self.zero_key_material) {
            out.push(TimerAction::ZeroKeyMaterial);
        }
        if due(&mut self.persistent_keepalive) {
            out.push(TimerAction::SendPersistentKeepalive);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::consts::MAX_TIMER_HANDSHAKES;

    fn fire(t: &mut Timers, now: Duration) -> Vec<TimerAction> {
        let mut v = Vec::new();
        t.expire(now, MAX_TIMER_HANDSHAKES, &mut v);
        v
    }

    #[test]
    fn retransmits_then_gives_up_after_rekey_attempt_time() {
        let mut t = Timers::default();
        let mut now = Duration::ZERO;
        t.handshake_initiated(now, Duration::ZERO);
        let mut retries = 0;
        loop {
            now = t.retransmit_handshake.expect("armed");
            let a = fire(&mut t, now);
            if a == [TimerAction::GiveUpHandshake] {
                break;
            }
            assert_eq!(a, [TimerAction::RetransmitHandshake]);
            retries += 1;
            t.handshake_initiated(now, Duration::ZERO);
        }
        assert_eq!(retries, MAX_TIMER_HANDSHAKES);
        assert_eq!(now, REKEY_TIMEOUT * (MAX_TIMER_HANDSHAKES + 1));
        assert!(t.zero_key_material.is_some());
    }

    #[test]
    fn passive_keepalive_and_new_handshake() {
        let mut t = Timers::default();
        t.data_received(Duration::from_secs(1));
        t.data_received(Duration::from_secs(2));
        assert_eq!(fire(&mut t, Duration::from_secs(10)), []);
        assert_eq!(
            fire(&mut t, Duration::from_secs(11)),
            [TimerAction::SendKeepalive]
        );
        // The second data packet asked for another one.
        assert_eq!(
            fire(&mut t, Duration::from_secs(21)),
            [TimerAction::SendKeepalive]
        );
        assert_eq!(fire(&mut t, Duration::from_secs(100)), []);

        t.data_sent(Duration::from_secs(100), Duration::ZERO);
        t.any_authenticated_packet_received();
        assert_eq!(fire(&mut t, Duration::from_secs(200)), []);
        t.data_sent(Duration::from_secs(200), Duration::ZERO);
        assert_eq!(
            fire(&mut t, Duration::from_secs(215)),
            [TimerAction::NewHandshake]
        );
    }

    #[test]
    fn sending_anything_cancels_passive_keepalive() {
        let mut t = Timers::default();
        t.data_received(Duration::ZERO);
        t.any_authenticated_packet_sent();
        assert_eq!(fire(&mut t, Duration::from_secs(60)), []);
    }
}
