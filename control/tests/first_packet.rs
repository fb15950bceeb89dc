//! The packet that starts a tunnel: on a fresh tunnel with no traffic yet,
//! one echo request must be answered, with no retry. The kernel holds it
//! (up to 128 per peer) while the handshake runs and sends it as soon as
//! the session exists; wirespeed stages it in the data plane the same way.
//!
//! What lost it was not the staging: the data plane read the listen-port
//! generation after binding its first sockets, so a `wg set listen-port`
//! arriving during its start counted as applied while the sockets kept the
//! random start-up port. Initiations then left from, or were sent to, a
//! port nobody listened on. It happened in a few percent of fresh tunnels,
//! hence many rounds.
//!
//! Needs root; WIRESPEED_SKIP_NETNS=1 skips with a loud line.

mod common;

use common::{wg_filter, Impl, Tunnel};
use Impl::{Wirespeed, WirespeedUdp};

/// Fresh tunnels per backend.
const ROUNDS: usize = 16;

#[test]
fn the_first_echo_on_a_fresh_tunnel_is_answered() {
    let Some(_serial) = common::netns_test("the_first_echo_on_a_fresh_tunnel_is_answered") else {
        return;
    };
    for imp in [Wirespeed, WirespeedUdp] {
        for round in 0..ROUNDS {
            let t = Tunnel::new(imp, imp);
            let cap = t.capture(&wg_filter(1, Some(148)));
            let to = t.b.tunnel_ip.to_string();
            // One echo and one only: `-w` would send more until one is
            // answered, hiding a lost first.
            let out =
                t.a.ns
                    .try_exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", &to]);
            let inits = cap.stop();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(" 1 received"),
                "{imp} round {round}: the first echo went unanswered: {text}\n\
                 initiations on the wire: {inits:?}\nA log:\n{}\nB log:\n{}",
                t.a.daemon.log(),
                t.b.daemon.log()
            );
            for p in &inits {
                assert!(
                    p.src == t.a.endpoint() && p.dst == t.b.endpoint(),
                    "{imp} round {round}: an initiation from {} to {}, not between the \
                     configured listen ports {} and {}",
                    p.src,
                    p.dst,
                    t.a.endpoint(),
                    t.b.endpoint()
                );
            }
        }
    }
}
