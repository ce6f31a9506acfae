//! The HDLC deframer takes any line octets in any chunking without panicking, and a frame
//! the encoder puts on the line after that garbage comes out whole.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tdm_driver::hdlc::{HdlcDecoder, HdlcEncoder, HdlcEvent};

fuzz_target!(|data: &[u8]| {
    let (split, line) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s), rest),
        None => return,
    };
    let mut decoder = HdlcDecoder::new(300);
    let mut events = Vec::new();
    let (a, b) = line.split_at(split.min(line.len()));
    decoder.push(a, &mut events);
    decoder.push(b, &mut events);
    // Whatever came before, a flag-delimited frame after an abort-free idle decodes exactly.
    let frame: Vec<u8> = line.iter().take(64).copied().collect();
    if frame.is_empty() {
        return;
    }
    let mut encoder = HdlcEncoder::new();
    encoder.queue_frame(&frame);
    let mut bits = Vec::new();
    encoder.drain_into(&mut bits);
    let mut tail = Vec::new();
    decoder.push(&bits, &mut tail);
    assert!(
        tail.iter().any(|e| *e == HdlcEvent::Frame(frame.clone())),
        "frame {frame:02x?} not recovered: {tail:?}"
    );
});
