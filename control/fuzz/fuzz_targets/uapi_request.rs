//! Any UAPI request text (what a local `wg` or anything else that can reach
//! the socket writes): parsing never panics.
#![no_main]

use control::uapi::request::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Request::parse(text);
    }
});
