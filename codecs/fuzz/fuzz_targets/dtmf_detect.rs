//! Any sample stream, cut into any chunk sizes, goes through the DTMF detector without a panic,
//! and key-up events always follow a key-down of the same digit.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let samples: Vec<i16> = rest
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let chunk = usize::from(cut).max(1);
    let mut detector = codecs::dtmf::DtmfDetector::new();
    let mut down: Option<char> = None;
    let mut check = |e: codecs::dtmf::DtmfEvent| match e {
        codecs::dtmf::DtmfEvent::KeyDown { digit, .. } => {
            assert!(down.is_none(), "two key-downs without a key-up");
            down = Some(digit);
        }
        codecs::dtmf::DtmfEvent::KeyUp { digit, .. } => {
            assert_eq!(down.take(), Some(digit), "key-up without its key-down");
        }
    };
    for piece in samples.chunks(chunk) {
        detector.process(piece, &mut check);
    }
    detector.finish(&mut check);
});
