//! Any datagram: parsing never panics, and what parses re-encodes to the
//! same bytes.
#![no_main]

use dataplane::messages::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let bytes = match m {
            Message::Initiation(i) => i.to_bytes().to_vec(),
            Message::Response(r) => r.to_bytes().to_vec(),
            Message::CookieReply(c) => c.to_bytes().to_vec(),
            Message::Transport(t) => {
                assert_eq!(t.sealed, &data[16..]);
                return;
            }
        };
        assert_eq!(bytes, data);
    }
});
