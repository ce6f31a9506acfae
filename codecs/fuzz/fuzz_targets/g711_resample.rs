//! G.711 slice APIs and the resampler take any input and buffer sizes without panicking.
#![no_main]
use codecs::g711::{self, Law};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let law = if sel & 1 == 0 { Law::Ulaw } else { Law::Alaw };
    let out_len = rest.len().saturating_sub(usize::from(sel >> 4));
    let mut pcm = vec![0i16; out_len];
    let _ = g711::decode(law, rest, &mut pcm);
    let mut codes = vec![0u8; out_len];
    let _ = g711::transcode(law, Law::Ulaw, rest, &mut codes);
    let samples: Vec<i16> = rest.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let _ = g711::encode(law, &samples, &mut codes);
    let rates = codecs::resample::SUPPORTED_RATES;
    let from = rates[usize::from(sel >> 1) % rates.len()];
    let to = rates[usize::from(sel >> 4) % rates.len()];
    if let Ok(mut r) = codecs::resample::Resampler::new(from, to) {
        for piece in samples.chunks(usize::from(sel).max(1)) {
            let mut out = vec![0i16; r.output_len(piece.len())];
            let n = r.process(piece, &mut out).expect("output sized by output_len");
            assert_eq!(n, out.len());
        }
    }
});
