//! Any octet string given to the LAPD frame decoder yields a frame or an error, never a panic;
//! what decodes re-encodes to octets that decode to the same frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tdm_driver::pri::q921::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        let again = Frame::decode(&out).expect("our own encoding must decode");
        assert_eq!(again, frame);
    }
});
