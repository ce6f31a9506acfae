//! The DTMF detector against the requirements an operator would check with a test set
//! (ITU-T Q.24 style): every digit at 40 ms on / 40 ms off, frequency tolerance, twist, level,
//! duration, noise, chunking. Signals come from the crate's generator, which is itself checked
//! here against the nominal frequencies with an independent DFT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use codecs::dtmf::{self, DIGITS, DtmfDetector, DtmfEvent, DtmfGenerator, DtmfParams};
use codecs::tones::dbm0_to_peak;
use proptest::prelude::*;

/// (digit, start_ms, end_ms) of every key-up, after `finish`.
fn detect(samples: &[i16]) -> Vec<(char, f64, f64)> {
    detect_chunked(samples, samples.len().max(1))
}

fn detect_chunked(samples: &[i16], chunk: usize) -> Vec<(char, f64, f64)> {
    let mut d = DtmfDetector::new();
    let mut out = Vec::new();
    let mut downs = 0;
    let mut on = |e: DtmfEvent| match e {
        DtmfEvent::KeyDown { .. } => downs += 1,
        DtmfEvent::KeyUp {
            digit,
            at_sample,
            started_at,
        } => out.push((digit, started_at as f64 / 8.0, at_sample as f64 / 8.0)),
    };
    for c in samples.chunks(chunk) {
        d.process(c, &mut on);
    }
    d.finish(&mut on);
    assert_eq!(downs, out.len(), "every key-down has exactly one key-up");
    out
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

/// One tone pair with explicit frequencies and levels (dBm0 per tone).
fn pair(low_hz: f64, high_hz: f64, low_dbm0: f32, high_dbm0: f32, on_ms: u32) -> Vec<i16> {
    let params = DtmfParams {
        on_ms,
        off_ms: 0,
        ..DtmfParams::default()
    };
    let mut g = DtmfGenerator::with_frequencies(
        low_hz,
        high_hz,
        f64::from(dbm0_to_peak(low_dbm0)),
        f64::from(dbm0_to_peak(high_dbm0)),
        params,
    );
    let mut out = vec![0i16; g.remaining() as usize];
    let n = g.fill(&mut out);
    out.truncate(n);
    out
}

fn nominal(digit: char) -> (f64, f64) {
    let (l, h) = dtmf::digit_frequencies(digit).unwrap();
    (f64::from(l), f64::from(h))
}

#[test]
fn generator_puts_energy_exactly_at_the_nominal_pair() {
    // Independent check of the test signal: a direct DFT at the 8 DTMF frequencies.
    for digit in DIGITS.chars() {
        let mut x = Vec::new();
        dtmf::generate(
            &digit.to_string(),
            &DtmfParams {
                on_ms: 100,
                off_ms: 0,
                ..Default::default()
            },
            &mut x,
        )
        .unwrap();
        let power = |f: f64| {
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &v) in x.iter().enumerate() {
                let w = std::f64::consts::TAU * f * n as f64 / 8000.0;
                re += f64::from(v) * w.cos();
                im += f64::from(v) * w.sin();
            }
            (re * re + im * im).sqrt() * 2.0 / x.len() as f64
        };
        let (l, h) = nominal(digit);
        let expected = f64::from(dbm0_to_peak(-10.0));
        assert!((power(l) / expected - 1.0).abs() < 0.05, "{digit} low");
        assert!((power(h) / expected - 1.0).abs() < 0.05, "{digit} high");
        for f in [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0] {
            if f != l && f != h {
                assert!(power(f) < expected * 0.05, "{digit}: leakage at {f}");
            }
        }
    }
}

#[test]
fn all_16_digits_at_40ms_on_40ms_off_are_found_once_with_timestamps() {
    let params = DtmfParams {
        on_ms: 40,
        off_ms: 40,
        ..DtmfParams::default()
    };
    let mut x = silence(100);
    dtmf::generate(DIGITS, &params, &mut x).unwrap();
    x.extend(silence(100));
    let found = detect(&x);
    let digits: String = found.iter().map(|d| d.0).collect();
    assert_eq!(digits, DIGITS);
    for (i, (digit, start, end)) in found.iter().enumerate() {
        let true_start = 100.0 + 80.0 * i as f64;
        assert!(
            (start - true_start).abs() <= 15.0,
            "{digit}: start {start} vs {true_start}"
        );
        assert!(
            (end - (true_start + 40.0)).abs() <= 15.0,
            "{digit}: end {end}"
        );
    }
}

#[test]
fn frequency_deviation_of_1_5_percent_is_accepted_and_3_5_percent_rejected() {
    for digit in DIGITS.chars() {
        let (l, h) = nominal(digit);
        for (dl, dh) in [
            (1.015, 1.015),
            (0.985, 0.985),
            (1.015, 0.985),
            (0.985, 1.015),
        ] {
            let x = [
                silence(20),
                pair(l * dl, h * dh, -10.0, -10.0, 50),
                silence(50),
            ]
            .concat();
            let found = detect(&x);
            assert_eq!(found.len(), 1, "{digit} at ×{dl}/×{dh}: {found:?}");
            assert_eq!(found[0].0, digit);
        }
        for (dl, dh) in [
            (1.035, 1.0),
            (0.965, 1.0),
            (1.0, 1.035),
            (1.0, 0.965),
            (1.035, 1.035),
            (0.965, 0.965),
        ] {
            let x = [
                silence(20),
                pair(l * dl, h * dh, -10.0, -10.0, 50),
                silence(50),
            ]
            .concat();
            let found = detect(&x);
            assert!(
                found.is_empty(),
                "{digit} at ×{dl}/×{dh} must be rejected: {found:?}"
            );
        }
    }
}

#[test]
fn twist_of_8_db_normal_and_4_db_reverse_is_tolerated() {
    for digit in DIGITS.chars() {
        let (l, h) = nominal(digit);
        // Normal twist: the high (column) tone weaker.
        let x = [silence(20), pair(l, h, -8.0, -16.0, 50), silence(50)].concat();
        assert_eq!(
            detect(&x).iter().map(|d| d.0).collect::<String>(),
            digit.to_string(),
            "normal twist {digit}"
        );
        // Reverse twist: the low (row) tone weaker.
        let x = [silence(20), pair(l, h, -14.0, -10.0, 50), silence(50)].concat();
        assert_eq!(
            detect(&x).iter().map(|d| d.0).collect::<String>(),
            digit.to_string(),
            "reverse twist {digit}"
        );
    }
    // Far beyond the limits nothing is reported (a single tone with a trace of the other).
    let (l, h) = nominal('5');
    let x = [silence(20), pair(l, h, -6.0, -26.0, 50), silence(50)].concat();
    assert!(detect(&x).is_empty(), "20 dB normal twist must be rejected");
    let x = [silence(20), pair(l, h, -24.0, -8.0, 50), silence(50)].concat();
    assert!(
        detect(&x).is_empty(),
        "16 dB reverse twist must be rejected"
    );
}

#[test]
fn works_down_to_minus_26_dbm0_per_tone() {
    for digit in DIGITS.chars() {
        let (l, h) = nominal(digit);
        let x = [silence(20), pair(l, h, -26.0, -26.0, 50), silence(50)].concat();
        let found = detect(&x);
        assert_eq!(found.len(), 1, "{digit} at -26 dBm0: {found:?}");
        assert_eq!(found[0].0, digit);
    }
    // Well below the sensitivity limit nothing is reported.
    let (l, h) = nominal('1');
    let x = [silence(20), pair(l, h, -45.0, -45.0, 50), silence(50)].concat();
    assert!(detect(&x).is_empty());
}

#[test]
fn tones_shorter_than_23_ms_are_rejected_longer_ones_found() {
    for digit in DIGITS.chars() {
        let (l, h) = nominal(digit);
        let short = [silence(20), pair(l, h, -10.0, -10.0, 20), silence(50)].concat();
        assert!(
            detect(&short).is_empty(),
            "{digit}: a 20 ms tone must not count"
        );
        let ok = [silence(20), pair(l, h, -10.0, -10.0, 40), silence(50)].concat();
        assert_eq!(detect(&ok).len(), 1, "{digit}: a 40 ms tone must count");
    }
}

/// White noise from a deterministic generator, at `rms`.
fn noise(n: usize, rms: f64, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            // Sum of 12 uniforms: approximately Gaussian with unit variance.
            let mut acc = 0.0;
            for _ in 0..12 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += (s >> 11) as f64 / (1u64 << 53) as f64;
            }
            (acc - 6.0) * rms
        })
        .collect()
}

#[test]
fn digits_are_found_in_white_noise_at_15_db_snr() {
    let params = DtmfParams {
        level_dbm0: -10.0,
        on_ms: 60,
        off_ms: 60,
        ..DtmfParams::default()
    };
    let mut x = silence(60);
    dtmf::generate(DIGITS, &params, &mut x).unwrap();
    // Signal power of two tones at -10 dBm0 each: 2 * peak²/2.
    let peak = f64::from(dbm0_to_peak(-10.0));
    let signal_power = peak * peak;
    let noise_rms = (signal_power / 10f64.powf(1.5)).sqrt();
    let n = noise(x.len(), noise_rms, 7);
    let noisy: Vec<i16> = x
        .iter()
        .zip(&n)
        .map(|(&s, &v)| (f64::from(s) + v).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    let found: String = detect(&noisy).iter().map(|d| d.0).collect();
    assert_eq!(found, DIGITS);
    // Noise alone is never a digit.
    let only: Vec<i16> = noise(8000 * 10, 3000.0, 9)
        .iter()
        .map(|&v| v as i16)
        .collect();
    assert!(detect(&only).is_empty());
}

#[test]
fn two_identical_digits_with_a_short_pause_are_two_digits() {
    let params = DtmfParams {
        on_ms: 50,
        off_ms: 40,
        ..DtmfParams::default()
    };
    let mut x = Vec::new();
    dtmf::generate("55", &params, &mut x).unwrap();
    let found: String = detect(&x).iter().map(|d| d.0).collect();
    assert_eq!(found, "55");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn chunk_size_does_not_change_the_events(chunk in prop::sample::select(vec![1usize, 7, 8, 51, 102, 160, 1000]), seed in 0u64..1000) {
        let params = DtmfParams { on_ms: 45, off_ms: 45, ..DtmfParams::default() };
        let mut x = silence(13);
        dtmf::generate("159#0D", &params, &mut x).unwrap();
        let n = noise(x.len(), 300.0, seed);
        let x: Vec<i16> = x.iter().zip(&n).map(|(&s, &v)| (f64::from(s) + v) as i16).collect();
        let whole = detect(&x);
        prop_assert_eq!(detect_chunked(&x, chunk), whole.clone());
        prop_assert_eq!(whole.iter().map(|d| d.0).collect::<String>(), "159#0D");
    }

    #[test]
    fn arbitrary_samples_never_panic(x in prop::collection::vec(any::<i16>(), 0..4000), chunk in 1usize..300) {
        let _ = detect_chunked(&x, chunk);
    }
}
