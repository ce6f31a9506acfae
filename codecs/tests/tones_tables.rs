//! Call-progress tones: what a listener (or a tone detector) would measure in the generated audio
//! matches each country's table — frequencies, level and cadence — and the generator is seamless.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use codecs::CodecError;
use codecs::tones::{self, Country, ToneGenerator, ToneKind, dbm0_to_peak};

fn render(country: Country, kind: ToneKind, samples: usize) -> Vec<i16> {
    let mut g = ToneGenerator::new(country, kind);
    let mut out = vec![0i16; samples];
    g.fill(&mut out);
    out
}

/// Power of `freq` in `x` (Goertzel), as mean power of the equivalent sine.
fn tone_power(x: &[i16], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / 8000.0;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &v) in x.iter().enumerate() {
        re += f64::from(v) * (w * n as f64).cos();
        im -= f64::from(v) * (w * n as f64).sin();
    }
    let n = x.len() as f64;
    (re * re + im * im) * 2.0 / (n * n)
}

/// On/off runs in milliseconds, judged per 1 ms block (8 samples) by whether any sample is
/// non-zero.
fn runs_ms(x: &[i16]) -> Vec<(bool, u32)> {
    let mut runs: Vec<(bool, u32)> = Vec::new();
    for block in x.chunks(8) {
        let on = block.iter().any(|&v| v != 0);
        match runs.last_mut() {
            Some((state, len)) if *state == on => *len += 1,
            _ => runs.push((on, 1)),
        }
    }
    runs
}

#[test]
fn names_parse_case_insensitively_and_errors_list_the_choices() {
    assert_eq!("US".parse::<Country>().unwrap(), Country::Us);
    assert_eq!("Etsi".parse::<Country>().unwrap(), Country::Etsi);
    assert_eq!("uk".parse::<Country>().unwrap(), Country::Uk);
    assert_eq!("RINGBACK".parse::<ToneKind>().unwrap(), ToneKind::Ringback);
    assert_eq!(
        "Congestion".parse::<ToneKind>().unwrap(),
        ToneKind::Congestion
    );
    let CodecError::InvalidArgument(msg) = "mars".parse::<Country>().unwrap_err() else {
        panic!("wrong error variant");
    };
    for c in ["us", "etsi", "uk", "de", "fr"] {
        assert!(msg.contains(c), "{msg}");
    }
    let CodecError::InvalidArgument(msg) = "howler".parse::<ToneKind>().unwrap_err() else {
        panic!("wrong error variant");
    };
    for k in ["dial", "ringback", "busy", "congestion"] {
        assert!(msg.contains(k), "{msg}");
    }
}

#[test]
fn us_and_etsi_tables_hold_the_standard_values() {
    let s = tones::spec(Country::Us, ToneKind::Dial);
    assert_eq!(s.frequencies, &[350.0, 440.0]);
    assert!(s.cadence_ms.is_empty());
    let s = tones::spec(Country::Us, ToneKind::Ringback);
    assert_eq!(
        (s.frequencies, s.cadence_ms),
        (&[440.0, 480.0][..], &[2000, 4000][..])
    );
    let s = tones::spec(Country::Us, ToneKind::Busy);
    assert_eq!(
        (s.frequencies, s.cadence_ms),
        (&[480.0, 620.0][..], &[500, 500][..])
    );
    let s = tones::spec(Country::Us, ToneKind::Congestion);
    assert_eq!(
        (s.frequencies, s.cadence_ms),
        (&[480.0, 620.0][..], &[250, 250][..])
    );
    let expected: [(ToneKind, &[u32]); 4] = [
        (ToneKind::Dial, &[]),
        (ToneKind::Ringback, &[1000, 4000]),
        (ToneKind::Busy, &[500, 500]),
        (ToneKind::Congestion, &[250, 250]),
    ];
    for (kind, cadence) in expected {
        let s = tones::spec(Country::Etsi, kind);
        assert_eq!(s.frequencies, &[425.0], "{kind}");
        assert_eq!(s.cadence_ms, cadence, "{kind}");
    }
}

#[test]
fn generated_cadence_matches_the_table_for_every_tone() {
    for country in Country::ALL {
        for kind in ToneKind::ALL {
            let spec = tones::spec(country, kind);
            if spec.cadence_ms.is_empty() {
                let x = render(country, kind, 8000 * 3);
                assert_eq!(runs_ms(&x), vec![(true, 3000)], "{country} {kind}");
                continue;
            }
            // Two full cycles: the runs repeat the table twice, starting with "on".
            let period = spec.period_ms() as usize;
            let x = render(country, kind, period * 8 * 2);
            let expected: Vec<(bool, u32)> = spec
                .cadence_ms
                .iter()
                .chain(spec.cadence_ms)
                .enumerate()
                .map(|(i, &ms)| (i % 2 == 0, ms))
                .collect();
            assert_eq!(runs_ms(&x), expected, "{country} {kind}");
        }
    }
}

#[test]
fn frequencies_and_level_match_the_table() {
    for country in Country::ALL {
        for kind in ToneKind::ALL {
            let spec = tones::spec(country, kind);
            // The first 200 ms are "on" for every tone in the tables.
            let x = render(country, kind, 1600);
            let expected = f64::from(dbm0_to_peak(spec.level_dbm0)).powi(2) / 2.0;
            for &f in spec.frequencies {
                let p = tone_power(&x, f64::from(f));
                let db = 10.0 * (p / expected).log10();
                assert!(db.abs() < 0.5, "{country} {kind} {f} Hz: {db:.2} dB off");
            }
            // Nothing strong elsewhere (e.g. at 1 kHz or 2 kHz).
            for f in [1000.0, 2000.0] {
                assert!(
                    tone_power(&x, f) < expected * 1e-3,
                    "{country} {kind} at {f}"
                );
            }
        }
    }
}

#[test]
fn output_is_seamless_whatever_the_fill_sizes() {
    for country in Country::ALL {
        for kind in ToneKind::ALL {
            let whole = render(country, kind, 8000 * 7);
            let mut g = ToneGenerator::new(country, kind);
            let mut pieces = Vec::new();
            let mut buf = [0i16; 1000];
            for size in [1usize, 7, 8, 160, 999, 13].iter().cycle() {
                if pieces.len() >= whole.len() {
                    break;
                }
                let n = (*size).min(whole.len() - pieces.len());
                g.fill(&mut buf[..n]);
                pieces.extend_from_slice(&buf[..n]);
            }
            assert_eq!(pieces, whole, "{country} {kind}");
            // Phase continuity: no sample-to-sample jump larger than the sine's own slope allows.
            let spec = tones::spec(country, kind);
            let peak = f64::from(dbm0_to_peak(spec.level_dbm0)) * spec.frequencies.len() as f64;
            let fmax = spec.frequencies.iter().copied().fold(0.0f32, f32::max);
            let max_step = peak * std::f64::consts::TAU * f64::from(fmax) / 8000.0 + 2.0;
            for w in whole.windows(2) {
                if w[0] != 0 && w[1] != 0 {
                    let step = (f64::from(w[1]) - f64::from(w[0])).abs();
                    assert!(
                        step <= max_step,
                        "{country} {kind}: jump {step} > {max_step}"
                    );
                }
            }
        }
    }
}
