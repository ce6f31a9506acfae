//! Opus through libopus, 8 kHz frames in and out: round-trip quality, recovery of lost packets
//! with in-band FEC against PLC alone. The signal is real (synthesised) speech:
//! `tests/data/speech-8k.wav`, made with `espeak-ng` and `sox -r 8000` (6.8 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use codecs::opus::{MAX_DURATION_8K, MAX_PACKET, OpusDecoder, OpusEncoder, OpusSettings};

struct Lcg(u32);
impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }
}

fn speech() -> Vec<i16> {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/speech-8k.wav"
    ))
    .expect("tests/data/speech-8k.wav");
    let wav = codecs::wav::parse(&bytes).unwrap();
    assert_eq!(wav.sample_rate, 8000);
    let n = wav.samples.len() / 160 * 160;
    wav.samples[..n].to_vec()
}

/// Best normalised cross-correlation of `b` against `a` over lags 0..max_lag (b delayed).
fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (f64, usize) {
    let mut best = (f64::MIN, 0);
    for lag in 0..max_lag {
        let n = a.len().min(b.len().saturating_sub(lag));
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for i in 0..n {
            let x = f64::from(a[i]);
            let y = f64::from(b[i + lag]);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        let c = ab / (aa.sqrt() * bb.sqrt()).max(1.0);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// Encodes `signal` frame by frame, drops the packets `lost` says, decodes with FEC recovery
/// (`fec`) or PLC only; returns the decoded 8 kHz signal.
fn transmit(signal: &[i16], lost: impl Fn(usize) -> bool, fec: bool) -> Vec<i16> {
    let mut enc = OpusEncoder::new(OpusSettings {
        expected_loss_percent: 20,
        ..OpusSettings::default()
    })
    .unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let packets: Vec<Vec<u8>> = signal
        .chunks_exact(160)
        .map(|f| {
            let mut p = [0u8; MAX_PACKET];
            let n = enc.encode(f.try_into().unwrap(), &mut p).unwrap();
            p[..n].to_vec()
        })
        .collect();
    let mut out = Vec::new();
    let mut buf = [0i16; MAX_DURATION_8K];
    for (k, p) in packets.iter().enumerate() {
        let n = if lost(k) {
            match packets.get(k + 1) {
                Some(next) if fec && !lost(k + 1) => dec.recover(next, &mut buf).unwrap(),
                _ => dec.conceal(&mut buf).unwrap(),
            }
        } else {
            dec.decode(p, &mut buf).unwrap()
        };
        assert_eq!(n, 160, "packet {k}");
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Correlation of `b` with `a` over the samples of the frames `lost` marks.
fn correlation_in_frames(a: &[i16], b: &[i16], lost: &[bool]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (k, _) in lost.iter().enumerate().filter(|(_, l)| **l) {
        for i in k * 160..(k + 1) * 160 {
            let (x, y) = (f64::from(a[i]), f64::from(b[i]));
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1.0)
}

#[test]
fn round_trip_keeps_speech_and_the_delay_is_small() {
    let signal = speech();
    let out = transmit(&signal, |_| false, true);
    let (c, lag) = best_correlation(&signal, &out, 400);
    // Delays: the 8→48 kHz FIR, the encoder's 6.5 ms look-ahead, the 48→8 kHz FIR.
    eprintln!("round trip: correlation {c:.4}, delay {lag} samples");
    assert!(c >= 0.9, "correlation {c:.3} at lag {lag}");
    assert!(lag < 160, "round trip delay {lag} samples");
}

#[test]
fn fec_recovers_lost_packets_better_than_plc() {
    let signal = speech();
    // 10 % isolated losses, deterministic (never two in a row: FEC needs the next packet).
    let mut rng = Lcg(99);
    let frames = signal.len() / 160;
    let mut lost = vec![false; frames];
    for k in 5..frames - 1 {
        if !lost[k - 1] && rng.next_u32() % 10 == 0 {
            lost[k] = true;
        }
    }
    let count = lost.iter().filter(|&&l| l).count();
    assert!(count > frames / 15, "{count} losses");
    let is_lost = |k: usize| lost.get(k).copied().unwrap_or(false);
    // What the lost frames would have decoded to, against what FEC and PLC make of them.
    let clean = transmit(&signal, |_| false, true);
    let with_fec = transmit(&signal, is_lost, true);
    let plc_only = transmit(&signal, is_lost, false);
    let c_fec = correlation_in_frames(&clean, &with_fec, &lost);
    let c_plc = correlation_in_frames(&clean, &plc_only, &lost);
    let (whole_fec, lag) = best_correlation(&signal, &with_fec, 400);
    let (whole_plc, _) = best_correlation(&signal, &plc_only, 400);
    eprintln!(
        "{count} of {frames} packets lost; lost frames vs clean decode: FEC {c_fec:.3}, PLC \
         {c_plc:.3}; whole signal vs original: FEC {whole_fec:.3} (lag {lag}), PLC {whole_plc:.3}"
    );
    assert!(
        c_fec >= 0.8,
        "FEC-recovered frames correlate {c_fec:.3} with the clean decode"
    );
    assert!(
        c_fec > c_plc + 0.1,
        "FEC {c_fec:.3} should clearly beat PLC {c_plc:.3}"
    );
    assert!(whole_fec >= 0.85, "whole signal with FEC {whole_fec:.3}");
}
