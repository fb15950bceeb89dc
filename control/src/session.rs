//! A keypair: the two session keys of one completed handshake, with the
//! send counter and receive replay window that belong to them.

use core::time::Duration;

use dataplane::consts::{REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME};
use dataplane::replay::ReplayWindow;
use dataplane::transport::SessionKey;

use crate::noise::TransportKeys;

pub struct Keypair {
    pub sending: SessionKey,
    pub receiving: SessionKey,
    /// Our index: the receiver index the peer puts on messages to us.
    pub local_index: u32,
    /// The peer's index, which we put on messages to it.
    pub remote_index: u32,
    pub created: Duration,
    pub is_initiator: bool,
    /// Next counter to use when sending.
    pub send_counter: u64,
    pub replay: ReplayWindow,
}

impl Keypair {
    pub fn new(
        keys: &TransportKeys,
        is_initiator: bool,
        local_index: u32,
        remote_index: u32,
        now: Duration,
    ) -> Self {
        // References, not copies: a key copied to the stack stays there.
        let (send, recv) = if is_initiator {
            (&keys.initiator_to_responder, &keys.responder_to_initiator)
        } else {
            (&keys.responder_to_initiator, &keys.initiator_to_responder)
        };
        Keypair {
            sending: SessionKey::new(send),
            receiving: SessionKey::new(recv),
            local_index,
            remote_index,
            created: now,
            is_initiator,
            send_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// A keypair whose keys were derived earlier, by this or an earlier
    /// control process (found again in shared memory after a restart).
    pub fn from_keys(
        sending: &[u8; 32],
        receiving: &[u8; 32],
        is_initiator: bool,
        local_index: u32,
        remote_index: u32,
        created: Duration,
    ) -> Self {
        Keypair {
            sending: SessionKey::new(sending),
            receiving: SessionKey::new(receiving),
            local_index,
            remote_index,
            created,
            is_initiator,
            send_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    pub fn age(&self, now: Duration) -> Duration {
        now.saturating_sub(self.created)
    }

    /// Whether this keypair may still seal one more message.
    pub fn can_send(&self, now: Duration) -> bool {
        self.send_counter < REJECT_AFTER_MESSAGES && self.age(now) < REJECT_AFTER_TIME
    }

    /// Whether messages sealed under this keypair are still accepted.
    pub fn can_receive(&self, now: Duration) -> bool {
        self.age(now) < REJECT_AFTER_TIME
    }
}

impl core::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("created", &self.created)
            .field("is_initiator", &self.is_initiator)
            .field("send_counter", &self.send_counter)
            .finish()
    }
}
