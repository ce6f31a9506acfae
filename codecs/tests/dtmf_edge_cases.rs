//! DTMF detector edge cases beyond the acceptance figures of `dtmf_spec.rs`, driven by our
//! generator: short tones and twist at every alignment to the analysis windows, a 10 ms break
//! inside a digit, a digit changing without a pause, twist beyond the limits, noise alone, the
//! worst cases combined with noise, absolute generator levels, and clipped square waves.
//!
//! Levels are dBm0 by the G.711 µ-law convention: 0 dBm0 ≙ a sine of peak 22 737 in 16-bit PCM,
//! so a full-scale sine is +3.17 dBm0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use codecs::dtmf::{self, DIGITS, DtmfDetector, DtmfEvent, DtmfGenerator, DtmfParams};
use codecs::tones::dbm0_to_peak;
use proptest::prelude::*;

/// A detected digit: (digit, start sample, end sample).
type Press = (char, u64, u64);

fn detect_chunked(samples: &[i16], chunk: usize) -> Vec<DtmfEvent> {
    let mut det = DtmfDetector::new();
    let mut events = Vec::new();
    for c in samples.chunks(chunk.max(1)) {
        det.process(c, |e| events.push(e));
    }
    det.finish(|e| events.push(e));
    events
}

/// Runs the detector and pairs key-downs with key-ups, checking the pairing on the way.
fn presses(samples: &[i16]) -> Vec<Press> {
    let events = detect_chunked(samples, 160);
    let mut out = Vec::new();
    let mut down: Option<(char, u64)> = None;
    for e in events {
        match e {
            DtmfEvent::KeyDown { digit, at_sample } => {
                assert!(down.is_none(), "key-down {digit} while {down:?} held");
                down = Some((digit, at_sample));
            }
            DtmfEvent::KeyUp {
                digit,
                at_sample,
                started_at,
            } => {
                let (d, s) = down.take().expect("key-up without key-down");
                assert_eq!((d, s), (digit, started_at));
                assert!(at_sample >= started_at);
                out.push((digit, started_at, at_sample));
            }
        }
    }
    assert!(down.is_none(), "finish() left a digit held");
    out
}

fn digits_of(p: &[Press]) -> String {
    p.iter().map(|&(d, _, _)| d).collect()
}

/// A leading silence so the first digit does not start at sample 0.
const LEAD: usize = 400;

/// `digits` with `params`, after [`LEAD`] samples of silence; also returns each tone's
/// (start, end) sample.
fn signal(digits: &str, params: &DtmfParams) -> (Vec<i16>, Vec<(u64, u64)>) {
    let mut s = vec![0i16; LEAD];
    let mut spans = Vec::new();
    let on = u64::from(params.on_ms) * 8;
    let per = on + u64::from(params.off_ms) * 8;
    for (i, _) in digits.chars().enumerate() {
        let start = LEAD as u64 + i as u64 * per;
        spans.push((start, start + on));
    }
    dtmf::generate(digits, params, &mut s).unwrap();
    s.extend(std::iter::repeat_n(0, 400));
    (s, spans)
}

fn fast(level_dbm0: f32, twist_db: f32) -> DtmfParams {
    DtmfParams {
        level_dbm0,
        twist_db,
        on_ms: 40,
        off_ms: 40,
    }
}

/// Every digit once, at 40/40 ms, with a custom pair of frequencies and peaks per digit.
fn off_nominal(factor_low: f64, factor_high: f64, level_dbm0: f32) -> Vec<i16> {
    let peak = f64::from(dbm0_to_peak(level_dbm0));
    let mut s = vec![0i16; LEAD];
    let mut buf = [0i16; 160];
    for d in DIGITS.chars() {
        let (r, c) = dtmf::digit_frequencies(d).unwrap();
        let mut g = DtmfGenerator::with_frequencies(
            f64::from(r) * factor_low,
            f64::from(c) * factor_high,
            peak,
            peak,
            fast(level_dbm0, 0.0),
        );
        loop {
            let n = g.fill(&mut buf);
            if n == 0 {
                break;
            }
            s.extend_from_slice(&buf[..n]);
        }
    }
    s
}

/// Deterministic noise with a roughly Gaussian distribution (sum of 4 uniforms), unit variance.
fn noise(len: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    // Sum of 4 uniforms on [-0.5, 0.5) has variance 4/12.
    let scale = (3.0f64).sqrt();
    (0..len)
        .map(|_| (uniform() + uniform() + uniform() + uniform()) * scale)
        .collect()
}

#[test]
fn excessive_twist_is_rejected() {
    for twist in [-14.0, 10.0] {
        let (s, _) = signal(DIGITS, &fast(-13.0, twist));
        let p = presses(&s);
        assert_eq!(digits_of(&p), "", "twist {twist}: {p:?}");
    }
}

#[test]
fn tones_of_10_to_22_ms_are_rejected_and_40_ms_found_at_every_window_alignment() {
    for shift in (0..51).step_by(5) {
        for on_ms in [10, 15, 20, 22] {
            let params = DtmfParams {
                on_ms,
                off_ms: 60,
                ..fast(-10.0, 0.0)
            };
            let (mut s, _) = signal(DIGITS, &params);
            s.splice(0..0, std::iter::repeat_n(0, shift));
            let p = presses(&s);
            assert_eq!(digits_of(&p), "", "{on_ms} ms tones, shift {shift}: {p:?}");
        }
        let (mut s, _) = signal(DIGITS, &fast(-10.0, 0.0));
        s.splice(0..0, std::iter::repeat_n(0, shift));
        assert_eq!(digits_of(&presses(&s)), DIGITS, "40 ms, shift {shift}");
    }
}

#[test]
fn twist_of_8_db_normal_and_4_db_reverse_holds_at_every_window_alignment() {
    // Normal twist: the high (column) tone weaker than the low one.
    for (level, twist) in [(-10.0, -8.0), (-10.0, 4.0), (-18.0, -8.0), (-18.0, 4.0)] {
        for shift in (0..51).step_by(10) {
            let (mut s, _) = signal(DIGITS, &fast(level, twist));
            s.splice(0..0, std::iter::repeat_n(0, shift));
            let p = presses(&s);
            assert_eq!(
                digits_of(&p),
                DIGITS,
                "level {level} twist {twist} shift {shift}"
            );
        }
    }
}

#[test]
fn noise_alone_gives_no_digit() {
    for seed in 1..=3 {
        let s: Vec<i16> = noise(8000 * 10, seed)
            .into_iter()
            .map(|v| (v * 3000.0).round() as i16)
            .collect();
        assert_eq!(digits_of(&presses(&s)), "", "seed {seed}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn loud_clipped_square_waves_never_panic(
        period in 2usize..40,
        len in 0usize..3000,
    ) {
        let s: Vec<i16> = (0..len).map(|n| if (n / period) % 2 == 0 { i16::MAX } else { i16::MIN }).collect();
        let _ = detect_chunked(&s, 8);
    }
}

#[test]
fn generator_levels_follow_the_dbm0_reference() {
    // −10 dBm0 low tone, high tone 4 dB weaker: peaks 22 737·10^(−10/20) and ·10^(−14/20).
    let params = DtmfParams {
        level_dbm0: -10.0,
        twist_db: -4.0,
        on_ms: 100,
        off_ms: 0,
    };
    let mut s = Vec::new();
    dtmf::generate("1", &params, &mut s).unwrap();
    assert_eq!(s.len(), 800);
    let amplitude = |f: f64| {
        let w = std::f64::consts::TAU * f / 8000.0;
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &v) in s.iter().enumerate() {
            re += f64::from(v) * (w * n as f64).cos();
            im -= f64::from(v) * (w * n as f64).sin();
        }
        2.0 * (re * re + im * im).sqrt() / s.len() as f64
    };
    let low = amplitude(697.0);
    let high = amplitude(1209.0);
    let expect_low = 22_737.0 * 10f64.powf(-10.0 / 20.0);
    let expect_high = 22_737.0 * 10f64.powf(-14.0 / 20.0);
    assert!(
        (low / expect_low - 1.0).abs() < 0.01,
        "697 Hz peak {low}, expected {expect_low}"
    );
    assert!(
        (high / expect_high - 1.0).abs() < 0.01,
        "1209 Hz peak {high}, expected {expect_high}"
    );
}

#[test]
fn a_10_ms_break_inside_a_tone_does_not_split_the_digit() {
    for shift in (0..51).step_by(3) {
        let params = DtmfParams {
            on_ms: 60,
            off_ms: 0,
            ..fast(-10.0, 0.0)
        };
        let mut s = vec![0i16; 400 + shift];
        dtmf::generate("5", &params, &mut s).unwrap();
        s.extend(std::iter::repeat_n(0, 80));
        dtmf::generate("5", &params, &mut s).unwrap();
        s.extend(std::iter::repeat_n(0, 400));
        let p = presses(&s);
        assert_eq!(digits_of(&p), "5", "shift {shift}: {p:?}");
    }
}

#[test]
fn a_digit_changing_without_a_pause_is_reported_as_two_digits() {
    let params = DtmfParams {
        on_ms: 60,
        off_ms: 0,
        ..fast(-10.0, 0.0)
    };
    let (s, _) = signal("12", &params);
    assert_eq!(digits_of(&presses(&s)), "12");
}

#[test]
fn combined_worst_cases_still_give_every_digit_once() {
    // −26 dBm0, or ±1.5 % off, each with white noise at 15 dB SNR.
    let cases: [(&str, Vec<i16>, f32); 3] = [
        ("-26 dBm0", signal(DIGITS, &fast(-26.0, 0.0)).0, -26.0),
        ("+1.5 %", off_nominal(1.015, 1.015, -10.0), -10.0),
        ("-1.5 %", off_nominal(0.985, 0.985, -10.0), -10.0),
    ];
    for (name, clean, level) in cases {
        let peak = f64::from(dbm0_to_peak(level));
        let noise_rms = (peak * peak / 10f64.powf(1.5)).sqrt();
        for seed in 1..=3 {
            let noisy: Vec<i16> = clean
                .iter()
                .zip(noise(clean.len(), seed))
                .map(|(&x, v)| (f64::from(x) + v * noise_rms).round() as i16)
                .collect();
            let p = presses(&noisy);
            assert_eq!(digits_of(&p), DIGITS, "{name}, seed {seed}: {p:?}");
        }
    }
}
