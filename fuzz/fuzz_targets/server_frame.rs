//! Any bytes as a server frame, as clients decode them: never a panic, and
//! whatever decodes re-encodes and decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thoonk_protocol::ServerMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<ServerMessage>(data) {
        let text = serde_json::to_string(&message).expect("a decoded frame encodes");
        let again: ServerMessage = serde_json::from_str(&text).expect("an encoded frame decodes");
        assert_eq!(again, message);
    }
});
