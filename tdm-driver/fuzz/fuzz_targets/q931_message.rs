//! Any octet string given to the Q.931 decoder yields a message or an error, never a panic;
//! what decodes re-encodes to octets that decode to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tdm_driver::pri::q931::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        let again = Message::decode(&msg.to_bytes()).expect("our own encoding must decode");
        assert_eq!(again, msg);
    }
});
