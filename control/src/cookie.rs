//! mac1, mac2 and cookie replies (WireGuard paper section 5.4.7 and 5.4.4).
//!
//! Every handshake message carries mac1, keyed by the receiver's public key,
//! so a responder drops junk before doing any DH. Under load the responder
//! also demands mac2, keyed by a cookie bound to the sender's address, and
//! answers messages without it with an encrypted cookie reply.

use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

use dataplane::consts::{COOKIE_SECRET_MAX_AGE, COOKIE_VALID_FOR};
use dataplane::messages::{
    mac1_offset, mac2_offset, CookieReply, COOKIE_LEN, COOKIE_NONCE_LEN, ENCRYPTED_COOKIE_LEN,
    MAC_LEN,
};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::aead::{xopen, xseal};
use crate::crypto::blake2s::{hash, mac};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// Keys derived from the public key of a message's receiver.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKeys {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
}

impl MacKeys {
    pub fn new(receiver_public: &[u8; 32]) -> Self {
        MacKeys {
            mac1_key: hash(&[LABEL_MAC1, receiver_public]),
            cookie_key: hash(&[LABEL_COOKIE, receiver_public]),
        }
    }

    /// mac1 over everything before the mac1 field.
    pub fn mac1(&self, msg: &[u8]) -> [u8; MAC_LEN] {
        mac(&self.mac1_key, &[&msg[..mac1_offset(msg.len())]])
    }
}

/// mac2 over everything before the mac2 field, keyed by a cookie.
pub fn mac2(cookie: &[u8; COOKIE_LEN], msg: &[u8]) -> [u8; MAC_LEN] {
    mac(cookie, &[&msg[..mac2_offset(msg.len())]])
}

fn ct_eq16(a: &[u8], b: &[u8; MAC_LEN]) -> bool {
    a.len() == MAC_LEN && bool::from(a.ct_eq(b))
}

/// What the responder concluded from a handshake message's MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacVerdict {
    /// mac1 is wrong: drop silently.
    Invalid,
    /// mac1 is right; mac2 absent or stale.
    Mac1Only,
    /// Both MACs verify: the sender proved it receives at its address.
    Mac1AndMac2,
}

/// Why a cookie reply was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// No handshake message was sent to which this could be the reply.
    Unsolicited,
    /// The cookie did not decrypt under our last mac1.
    Decrypt,
}

/// The responder's side: checks MACs and makes cookies from a secret that
/// changes every two minutes.
pub struct CookieChecker {
    keys: MacKeys,
    secret: [u8; 32],
    secret_born: Option<Duration>,
}

impl Drop for CookieChecker {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl CookieChecker {
    pub fn new(own_public: &[u8; 32]) -> Self {
        CookieChecker {
            keys: MacKeys::new(own_public),
            secret: [0; 32],
            secret_born: None,
        }
    }

    /// The cookie for `src` under the current secret, rotating it first if it
    /// is older than two minutes (or was never made).
    fn cookie_for(
        &mut self,
        src: SocketAddr,
        now: Duration,
        fill_random: &mut dyn FnMut(&mut [u8]),
    ) -> [u8; COOKIE_LEN] {
        let stale = match self.secret_born {
            None => true,
            Some(born) => now.saturating_sub(born) >= COOKIE_SECRET_MAX_AGE,
        };
        if stale {
            fill_random(&mut self.secret);
            self.secret_born = Some(now);
        }
        let port = src.port().to_be_bytes();
        match src.ip() {
            IpAddr::V4(a) => mac(&self.secret, &[&a.octets(), &port]),
            IpAddr::V6(a) => mac(&self.secret, &[&a.octets(), &port]),
        }
    }

    /// Checks mac1 always and mac2 only if the caller is under load (a
    /// valid-looking mac2 costs a MAC computation we only need then).
    pub fn verify(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        check_mac2: bool,
        now: Duration,
        fill_random: &mut dyn FnMut(&mut [u8]),
    ) -> MacVerdict {
        if !self.mac1_valid(msg) {
            return MacVerdict::Invalid;
        }
        if check_mac2 && self.mac2_valid(msg, src, now, fill_random) {
            MacVerdict::Mac1AndMac2
        } else {
            MacVerdict::Mac1Only
        }
    }

    /// Whether `msg` carries a mac1 made with our public key: proof that
    /// the sender knows it, and nothing else.
    pub fn mac1_valid(&self, msg: &[u8]) -> bool {
        if msg.len() < 2 * MAC_LEN {
            return false;
        }
        let m1 = &msg[mac1_offset(msg.len())..mac2_offset(msg.len())];
        ct_eq16(m1, &self.keys.mac1(msg))
    }

    /// Whether `msg` (whose mac1 was valid) carries a mac2 made with the
    /// cookie we would give `src` now: proof that the sender receives there.
    pub fn mac2_valid(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Duration,
        fill_random: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        if msg.len() < 2 * MAC_LEN {
            return false;
        }
        // A secret that expired makes every outstanding cookie invalid; do not
        // rotate it just to check (that would be a free rotation for attackers).
        let fresh =
            matches!(self.secret_born, Some(b) if now.saturating_sub(b) < COOKIE_SECRET_MAX_AGE);
        if !fresh {
            return false;
        }
        let cookie = self.cookie_for(src, now, fill_random);
        let m2 = &msg[mac2_offset(msg.len())..];
        ct_eq16(m2, &mac2(&cookie, msg))
    }

    /// The cookie reply to a handshake message (whose mac1 was valid) from `src`.
    pub fn make_reply(
        &mut self,
        msg: &[u8],
        sender_index: u32,
        src: SocketAddr,
        now: Duration,
        fill_random: &mut dyn FnMut(&mut [u8]),
    ) -> CookieReply {
        let cookie = self.cookie_for(src, now, fill_random);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        fill_random(&mut nonce);
        let aad = &msg[mac1_offset(msg.len())..mac2_offset(msg.len())];
        let mut encrypted_cookie = [0u8; ENCRYPTED_COOKIE_LEN];
        xseal(
            &self.keys.cookie_key,
            &nonce,
            &cookie,
            aad,
            &mut encrypted_cookie,
        );
        CookieReply {
            receiver: sender_index,
            nonce,
            encrypted_cookie,
        }
    }
}

/// The initiator's side, one per peer: stamps MACs on outgoing handshake
/// messages and keeps the cookie the peer last gave us.
pub struct CookieJar {
    keys: MacKeys,
    cookie: Option<([u8; COOKIE_LEN], Duration)>,
    last_mac1: Option<[u8; MAC_LEN]>,
}

impl Drop for CookieJar {
    fn drop(&mut self) {
        if let Some((c, _)) = self.cookie.as_mut() {
            c.zeroize();
        }
    }
}

impl CookieJar {
    pub fn new(peer_public: &[u8; 32]) -> Self {
        CookieJar {
            keys: MacKeys::new(peer_public),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills mac1 and (if we hold a cookie younger than its lifetime) mac2.
    pub fn stamp(&mut self, msg: &mut [u8], now: Duration) {
        let len = msg.len();
        let m1 = self.keys.mac1(msg);
        msg[mac1_offset(len)..mac2_offset(len)].copy_from_slice(&m1);
        self.last_mac1 = Some(m1);
        let m2 = match &self.cookie {
            Some((c, at)) if now.saturating_sub(*at) < COOKIE_VALID_FOR => mac2(c, msg),
            _ => [0u8; MAC_LEN],
        };
        msg[mac2_offset(len)..].copy_from_slice(&m2);
    }

    /// Stores the cookie from a reply to our last handshake message.
    pub fn consume_reply(&mut self, reply: &CookieReply, now: Duration) -> Result<(), CookieError> {
        let aad = self.last_mac1.ok_or(CookieError::Unsolicited)?;
        let mut cookie = [0u8; COOKIE_LEN];
        xopen(
            &self.keys.cookie_key,
            &reply.nonce,
            &reply.encrypted_cookie,
            &aad,
            &mut cookie,
        )
        .map_err(|_| CookieError::Decrypt)?;
        self.cookie = Some((cookie, now));
        // One reply per message sent: a second copy of the reply is refused.
        self.last_mac1 = None;
        Ok(())
    }

    pub fn has_fresh_cookie(&self, now: Duration) -> bool {
        matches!(&self.cookie, Some((_, at)) if now.saturating_sub(*at) < COOKIE_VALID_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::messages::INITIATION_LEN;

    fn counter_rng() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            for x in b {
                n = n.wrapping_add(1);
                *x = n;
            }
        }
    }

    #[test]
    fn mac1_checked_mac2_demanded_under_load_and_cookie_roundtrip() {
        let responder_pub = [7u8; 32];
        let mut checker = CookieChecker::new(&responder_pub);
        let mut jar = CookieJar::new(&responder_pub);
        let mut rng = counter_rng();
        let src: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let now = Duration::from_secs(10);

        let mut msg = [0x55u8; INITIATION_LEN];
        jar.stamp(&mut msg, now);
        assert_eq!(
            checker.verify(&msg, src, false, now, &mut rng),
            MacVerdict::Mac1Only
        );
        assert_eq!(
            checker.verify(&msg, src, true, now, &mut rng),
            MacVerdict::Mac1Only
        );
        let mut bad = msg;
        bad[10] ^= 1;
        assert_eq!(
            checker.verify(&bad, src, false, now, &mut rng),
            MacVerdict::Invalid
        );

        let reply = checker.make_reply(&msg, 42, src, now, &mut rng);
        assert_eq!(reply.receiver, 42);
        jar.consume_reply(&reply, now).unwrap();
        assert_eq!(
            jar.consume_reply(&reply, now),
            Err(CookieError::Unsolicited)
        );

        jar.stamp(&mut msg, now + Duration::from_secs(1));
        assert_eq!(
            checker.verify(&msg, src, true, now, &mut rng),
            MacVerdict::Mac1AndMac2
        );
        // The cookie is bound to the source address and port.
        let other: SocketAddr = "192.0.2.2:51820".parse().unwrap();
        assert_eq!(
            checker.verify(&msg, other, true, now, &mut rng),
            MacVerdict::Mac1Only
        );
        // After the secret's two minutes the cookie no longer counts.
        let later = now + COOKIE_SECRET_MAX_AGE;
        assert_eq!(
            checker.verify(&msg, src, true, later, &mut rng),
            MacVerdict::Mac1Only
        );
    }

    #[test]
    fn forged_reply_refused() {
        let mut jar = CookieJar::new(&[1; 32]);
        let mut msg = [0u8; INITIATION_LEN];
        jar.stamp(&mut msg, Duration::ZERO);
        let mut checker = CookieChecker::new(&[2; 32]); // wrong responder key
        let mut rng = counter_rng();
        let reply = checker.make_reply(
            &msg,
            1,
            "[::1]:1".parse().unwrap(),
            Duration::ZERO,
            &mut rng,
        );
        assert_eq!(
            jar.consume_reply(&reply, Duration::ZERO),
            Err(CookieError::Decrypt)
        );
        assert!(!jar.has_fresh_cookie(Duration::ZERO));
    }
}
