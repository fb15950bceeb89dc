//! Any record in the rings between the two processes (each treats the
//! other as less trusted): decoding never panics, and what decodes encodes
//! back to a record that decodes to the same value.
#![no_main]

use dataplane::shm::events::{ToControl, ToDataplane};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ev) = ToControl::decode(data) {
        let again = ev.encode().expect("a decoded event fits a record");
        assert_eq!(ToControl::decode(&again), Some(ev));
    }
    if let Some(cmd) = ToDataplane::decode(data) {
        let again = cmd.encode().expect("a decoded command fits a record");
        assert_eq!(ToDataplane::decode(&again), Some(cmd));
    }
});
