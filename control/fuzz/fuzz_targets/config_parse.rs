//! Fuzzes the configuration parser: no input may panic it, and whatever it
//! accepts must write out and parse back to the same configuration.
//!
//! `cargo +nightly fuzz run config_parse -- -dict=config_parse.dict`

#![no_main]

use control::config::{parse, parse_with_mode, ParseMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Configuration files are text; bytes that are not UTF-8 never reach
    // the parser, so there is nothing to learn from them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = parse(text) {
        let written = config.to_string();
        match parse(&written) {
            Ok(again) => assert_eq!(again, config, "round trip changed:\n{written}"),
            Err(e) => panic!("written config refused: {e}\n{written}"),
        }
        let stripped = config.strip();
        assert_eq!(
            parse_with_mode(&stripped.to_string(), ParseMode::Wg).as_ref(),
            Ok(&stripped)
        );
    }
    let _ = parse_with_mode(text, ParseMode::Wg);
});
