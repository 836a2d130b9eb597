//! The signalling parser on arbitrary bytes: it must never panic, and whatever it accepts must
//! serialize and parse back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxs_protocol::signalling::ClientMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = ClientMessage::from_json(text) {
        let again = ClientMessage::from_json(&msg.to_json()).expect("our own output parses");
        assert_eq!(again, msg);
    }
});
