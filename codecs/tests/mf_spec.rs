//! The MF R1 detector against what a trunk test set checks (ITU-T Q.322/Q.323, Bell MF): every
//! signal at nominal timing, KP…ST sequences, frequency tolerance (±1.5 % ± 5 Hz), twist
//! (6 dB), level (down to −25 dBm0 per frequency; nothing at −35), duration (30 ms found,
//! 10 ms never), 20 ms gaps, single and triple frequencies rejected, noise, chunking. Signals
//! come from the crate's generator, itself checked against the nominal frequencies with an
//! independent DFT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use codecs::mf::{self, DIGITS, FREQUENCIES, MfDetector, MfEvent, MfGenerator, MfParams};
use codecs::tones::dbm0_to_peak;
use proptest::prelude::*;

/// (signal, start ms, end ms) of every key-up, after `finish`.
fn detect(samples: &[i16]) -> Vec<(char, f64, f64)> {
    detect_chunked(samples, samples.len().max(1))
}

fn detect_chunked(samples: &[i16], chunk: usize) -> Vec<(char, f64, f64)> {
    let mut d = MfDetector::new();
    let mut out = Vec::new();
    let mut downs = 0;
    let mut on = |e: MfEvent| match e {
        MfEvent::KeyDown { .. } => downs += 1,
        MfEvent::KeyUp {
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

fn digits_of(found: &[(char, f64, f64)]) -> String {
    found.iter().map(|f| f.0).collect()
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

fn pair(low_hz: f64, high_hz: f64, low_dbm0: f32, high_dbm0: f32, on_ms: u32) -> Vec<i16> {
    let mut g = MfGenerator::with_frequencies(
        low_hz,
        high_hz,
        f64::from(dbm0_to_peak(low_dbm0)),
        f64::from(dbm0_to_peak(high_dbm0)),
        on_ms,
        0,
    );
    let mut out = vec![0i16; g.remaining() as usize];
    let n = g.fill(&mut out);
    out.truncate(n);
    out
}

fn nominal(digit: char) -> (f64, f64) {
    let (l, h) = mf::digit_frequencies(digit).unwrap();
    (f64::from(l), f64::from(h))
}

#[test]
fn generator_puts_energy_exactly_at_the_nominal_pair() {
    for digit in DIGITS.chars() {
        let mut x = Vec::new();
        mf::generate(&digit.to_string(), &MfParams::default(), &mut x).unwrap();
        let on = if digit == '*' { 100 } else { 68 };
        assert_eq!(x.len(), (on + 68) * 8, "{digit}: tone then pause");
        let tone = &x[..on * 8];
        let power = |f: f64| {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (n, &s) in tone.iter().enumerate() {
                let a = std::f64::consts::TAU * f * n as f64 / 8000.0;
                re += f64::from(s) * a.cos();
                im -= f64::from(s) * a.sin();
            }
            (re * re + im * im) / (tone.len() as f64).powi(2) * 2.0
        };
        let (lo, hi) = nominal(digit);
        let want = f64::from(dbm0_to_peak(-7.0)).powi(2) / 2.0;
        for f in FREQUENCIES {
            let p = power(f64::from(f));
            if f64::from(f) == lo || f64::from(f) == hi {
                assert!(
                    (p / want - 1.0).abs() < 0.05,
                    "{digit} {f} Hz: {p} vs {want}"
                );
            } else {
                assert!(p < want * 1e-3, "{digit}: stray energy at {f} Hz");
            }
        }
        assert!(x[on * 8..].iter().all(|&s| s == 0), "{digit}: silent pause");
    }
    assert!(MfGenerator::new('D', MfParams::default()).is_err());
    assert!(
        MfGenerator::new(
            '1',
            MfParams {
                level_dbm0: 0.0,
                ..MfParams::default()
            }
        )
        .is_err()
    );
}

#[test]
fn every_signal_at_nominal_timing_is_found_once_in_order_with_its_edges() {
    let mut x = silence(30);
    mf::generate(DIGITS, &MfParams::default(), &mut x).unwrap();
    x.extend(silence(30));
    let found = detect(&x);
    assert_eq!(digits_of(&found), DIGITS);
    // Edges within 5 ms of where the tones are.
    let mut t = 30.0;
    for (digit, start, end) in &found {
        let on = if *digit == '*' { 100.0 } else { 68.0 };
        assert!(
            (start - t).abs() <= 5.0,
            "{digit} starts at {start}, tone at {t}"
        );
        assert!(
            (end - (t + on)).abs() <= 5.0,
            "{digit} ends at {end}, tone to {}",
            t + on
        );
        t += on + 68.0;
    }
}

#[test]
fn a_kp_address_st_sequence_at_the_fastest_timing_is_found() {
    // Bell: 68 ± 7 ms tones, 68 ± 7 ms gaps; the fast end is 61 / 61.
    let params = MfParams {
        on_ms: 61,
        kp_ms: 90,
        off_ms: 61,
        ..MfParams::default()
    };
    let mut x = Vec::new();
    mf::generate("*5551234#", &params, &mut x).unwrap();
    assert_eq!(digits_of(&detect(&x)), "*5551234#");
}

#[test]
fn frequencies_off_nominal_by_one_and_a_half_percent_plus_5_hz_are_accepted() {
    for digit in DIGITS.chars() {
        let (lo, hi) = nominal(digit);
        for (dl, dh) in [(1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)] {
            let l = lo + dl * (lo * 0.015 + 5.0);
            let h = hi + dh * (hi * 0.015 + 5.0);
            let mut x = silence(20);
            x.extend(pair(l, h, -7.0, -7.0, 68));
            x.extend(silence(20));
            assert_eq!(
                digits_of(&detect(&x)),
                digit.to_string(),
                "{digit} at {l:.1} + {h:.1} Hz"
            );
        }
    }
}

#[test]
fn six_db_of_twist_either_way_is_accepted_and_twelve_is_not() {
    for digit in DIGITS.chars() {
        let (lo, hi) = nominal(digit);
        for (a, b) in [(-7.0, -13.0), (-13.0, -7.0)] {
            let x = pair(lo, hi, a, b, 68);
            assert_eq!(digits_of(&detect(&x)), digit.to_string(), "{digit} {a}/{b}");
        }
        let x = pair(lo, hi, -7.0, -19.0, 68);
        assert!(detect(&x).is_empty(), "{digit} with 12 dB twist");
    }
}

#[test]
fn levels_down_to_minus_25_dbm0_are_found_and_minus_35_never() {
    for digit in DIGITS.chars() {
        let (lo, hi) = nominal(digit);
        for level in [0.0 - 3.0, -7.0, -15.0, -25.0] {
            let x = pair(lo, hi, level, level, 68);
            assert_eq!(
                digits_of(&detect(&x)),
                digit.to_string(),
                "{digit} at {level}"
            );
        }
        let x = pair(lo, hi, -35.0, -35.0, 68);
        assert!(detect(&x).is_empty(), "{digit} at -35 dBm0");
    }
}

#[test]
fn thirty_ms_signals_are_found_and_ten_ms_never_at_any_alignment() {
    for offset in 0..10 {
        for digit in DIGITS.chars() {
            let (lo, hi) = nominal(digit);
            let mut x = silence(0);
            x.extend(vec![0; offset * 4]);
            x.extend(pair(lo, hi, -7.0, -7.0, 30));
            x.extend(silence(30));
            assert_eq!(
                digits_of(&detect(&x)),
                digit.to_string(),
                "30 ms {digit} @{offset}"
            );
            let mut y = vec![0; offset * 4];
            y.extend(pair(lo, hi, -7.0, -7.0, 10));
            y.extend(silence(30));
            assert!(detect(&y).is_empty(), "10 ms {digit} @{offset}");
        }
    }
}

#[test]
fn a_20_ms_gap_separates_two_signals_of_the_same_digit() {
    for offset in 0..10 {
        let (lo, hi) = nominal('5');
        let mut x = vec![0; offset * 4];
        x.extend(pair(lo, hi, -7.0, -7.0, 60));
        x.extend(silence(20));
        x.extend(pair(lo, hi, -7.0, -7.0, 60));
        assert_eq!(digits_of(&detect(&x)), "55", "offset {offset}");
    }
}

#[test]
fn single_and_triple_frequencies_are_not_signals() {
    for f in FREQUENCIES {
        let mut g = MfGenerator::with_frequencies(
            f64::from(f),
            f64::from(f),
            f64::from(dbm0_to_peak(-7.0)),
            0.0,
            100,
            0,
        );
        let mut x = vec![0i16; g.remaining() as usize];
        g.fill(&mut x);
        assert!(detect(&x).is_empty(), "single {f} Hz");
    }
    // Three equal frequencies.
    let (a, b) = (
        pair(700.0, 900.0, -10.0, -10.0, 100),
        pair(1300.0, 1300.0, -10.0, -100.0, 100),
    );
    let x: Vec<i16> = a
        .iter()
        .zip(&b)
        .map(|(p, q)| p.saturating_add(*q))
        .collect();
    assert!(detect(&x).is_empty(), "700 + 900 + 1300 Hz");
}

#[test]
fn signals_in_noise_at_20_db_snr_are_found() {
    let mut x = Vec::new();
    mf::generate("*0123456789#", &MfParams::default(), &mut x).unwrap();
    // White noise 20 dB below one tone (-27 dBm0), from a fixed LCG.
    let sigma = f64::from(dbm0_to_peak(-27.0)) / std::f64::consts::SQRT_2;
    let mut seed = 12345u32;
    for s in &mut x {
        let mut sum = 0.0;
        for _ in 0..12 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            sum += f64::from(seed >> 8) / f64::from(1u32 << 24);
        }
        *s = s.saturating_add(((sum - 6.0) * sigma) as i16);
    }
    assert_eq!(digits_of(&detect(&x)), "*0123456789#");
}

#[test]
fn dtmf_speech_like_noise_alone_gives_nothing() {
    // Pseudo-random noise, several levels: no signal.
    for level in [-10.0f32, -20.0, -30.0] {
        let sigma = f64::from(dbm0_to_peak(level));
        let mut seed = 777u32;
        let x: Vec<i16> = (0..8000 * 3)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((f64::from(seed >> 16) / 32768.0 - 1.0) * sigma) as i16
            })
            .collect();
        assert!(detect(&x).is_empty(), "noise at {level}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn results_do_not_depend_on_how_the_input_is_split(chunk in 1usize..400) {
        let mut x = silence(10);
        mf::generate("*12#", &MfParams::default(), &mut x).unwrap();
        let whole = detect(&x);
        let split = detect_chunked(&x, chunk);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn arbitrary_input_never_panics(x in proptest::collection::vec(any::<i16>(), 0..4000)) {
        let _ = detect(&x);
    }
}
