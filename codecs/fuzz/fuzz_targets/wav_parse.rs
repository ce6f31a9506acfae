//! Any byte string given to the WAV reader yields a WAV or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wav) = codecs::wav::parse(data) {
        // What parses must survive a write/parse round trip at the same rate.
        let again = codecs::wav::write_pcm16(wav.sample_rate, &wav.samples);
        let reparsed = codecs::wav::parse(&again).expect("our own output must parse");
        assert_eq!(reparsed.samples, wav.samples);
    }
});
