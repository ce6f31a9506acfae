//! Call-progress tones: every plan's frequencies and cadence, measured on the generated signal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use codecs::tones::{Country, ToneGenerator, ToneKind, dbm0_to_peak, spec};

fn amplitude_at(x: &[i16], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / 8000.0;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &v) in x.iter().enumerate() {
        re += f64::from(v) * (w * n as f64).cos();
        im += f64::from(v) * (w * n as f64).sin();
    }
    (re * re + im * im).sqrt() * 2.0 / x.len() as f64
}

const ALL: [Country; 5] = [
    Country::Us,
    Country::Etsi,
    Country::Uk,
    Country::De,
    Country::Fr,
];
const KINDS: [ToneKind; 4] = [
    ToneKind::Dial,
    ToneKind::Ringback,
    ToneKind::Busy,
    ToneKind::Congestion,
];

#[test]
fn known_plan_values() {
    let us_busy = spec(Country::Us, ToneKind::Busy);
    assert_eq!(us_busy.frequencies, &[480.0, 620.0]);
    assert_eq!(us_busy.cadence_ms, &[500, 500]);
    assert_eq!(
        spec(Country::Us, ToneKind::Ringback).cadence_ms,
        &[2000, 4000]
    );
    assert_eq!(
        spec(Country::Us, ToneKind::Dial).frequencies,
        &[350.0, 440.0]
    );
    assert_eq!(spec(Country::Etsi, ToneKind::Dial).frequencies, &[425.0]);
    assert_eq!(
        spec(Country::Etsi, ToneKind::Ringback).cadence_ms,
        &[1000, 4000]
    );
    assert_eq!(
        spec(Country::Etsi, ToneKind::Congestion).cadence_ms,
        &[250, 250]
    );
}

#[test]
fn every_tone_has_its_frequencies_level_and_cadence() {
    for country in ALL {
        for kind in KINDS {
            let spec = spec(country, kind);
            let cycle: u32 = spec.cadence_ms.iter().sum();
            let seconds = if cycle == 0 {
                2.0
            } else {
                2.0 * f64::from(cycle) / 1000.0
            };
            let mut x = vec![0i16; (seconds * 8000.0) as usize];
            ToneGenerator::new(country, kind).fill(&mut x);
            // Frequencies and level over the first "on" period (or 1 s when continuous).
            let first_on = spec
                .cadence_ms
                .first()
                .map(|&ms| ms as usize * 8)
                .unwrap_or(8000);
            let on = &x[..first_on];
            let expected = f64::from(dbm0_to_peak(spec.level_dbm0));
            for &f in spec.frequencies {
                let a = amplitude_at(on, f64::from(f));
                assert!(
                    (a / expected - 1.0).abs() < 0.05,
                    "{country:?} {kind:?} {f} Hz: {a:.0} vs {expected:.0}"
                );
            }
            assert!(amplitude_at(on, 1000.0) < expected * 0.05);
            // Cadence: each 10 ms block is on or off as the table says.
            let mut t = 0usize;
            for (i, &ms) in spec
                .cadence_ms
                .iter()
                .cycle()
                .take(spec.cadence_ms.len() * 2)
                .enumerate()
            {
                let len = ms as usize * 8;
                let segment = &x[t..t + len];
                // Skip 10 ms at each edge.
                let inner = &segment[80..len - 80];
                let peak = inner.iter().map(|v| v.unsigned_abs()).max().unwrap();
                if i % 2 == 0 {
                    assert!(
                        f64::from(peak) > expected * 0.5,
                        "{country:?} {kind:?}: on segment {i} silent"
                    );
                } else {
                    assert_eq!(peak, 0, "{country:?} {kind:?}: off segment {i} not silent");
                }
                t += len;
            }
        }
    }
}

#[test]
fn output_does_not_depend_on_buffer_sizes() {
    let mut a = vec![0i16; 16000];
    ToneGenerator::new(Country::Uk, ToneKind::Ringback).fill(&mut a);
    let mut g = ToneGenerator::new(Country::Uk, ToneKind::Ringback);
    let mut b = Vec::new();
    for size in [1usize, 7, 160, 999].iter().cycle() {
        if b.len() >= a.len() {
            break;
        }
        let mut buf = vec![0i16; (*size).min(a.len() - b.len())];
        g.fill(&mut buf);
        b.extend(buf);
    }
    assert_eq!(a, b);
}

#[test]
fn names_parse_and_unknown_ones_list_the_choices() {
    assert_eq!("ETSI".parse::<Country>().unwrap(), Country::Etsi);
    assert_eq!("reorder".parse::<ToneKind>().unwrap(), ToneKind::Congestion);
    let e = "xx".parse::<Country>().unwrap_err().to_string();
    assert!(e.contains("us, etsi"), "{e}");
    let e = "howler".parse::<ToneKind>().unwrap_err().to_string();
    assert!(e.contains("dial, ringback"), "{e}");
}
