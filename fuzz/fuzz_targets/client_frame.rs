//! Any bytes as a client frame, as the gateway decodes them: never a panic,
//! and whatever decodes re-encodes and decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thoonk_protocol::ClientMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<ClientMessage>(data) {
        let text = serde_json::to_string(&message).expect("a decoded frame encodes");
        let again: ClientMessage = serde_json::from_str(&text).expect("an encoded frame decodes");
        assert_eq!(again, message);
    }
});
