//! The busy / congestion detector (`codecs::progress`): true positives at levels from −10 to
//! −36 dBm0, with white noise, off-nominal frequencies, a cadence that starts mid-tone and
//! through G.711; no detection on speech (espeak-ng, several voices, with pauses), on dial tone,
//! ringback, another country's busy tone, or silence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use codecs::g711::Law;
use codecs::progress::ProgressDetector;
use codecs::tones::{Country, ToneGenerator, ToneKind, ToneSpec, spec};

/// A tone like `base` but at `level_dbm0`, with frequencies scaled by `scale`.
fn variant(base: &ToneSpec, level_dbm0: f32, scale: f32) -> &'static ToneSpec {
    let freqs: Vec<f32> = base.frequencies.iter().map(|f| f * scale).collect();
    Box::leak(Box::new(ToneSpec {
        frequencies: Box::leak(freqs.into_boxed_slice()),
        level_dbm0,
        cadence_ms: base.cadence_ms,
    }))
}

fn render(tone: &'static ToneSpec, ms: usize) -> Vec<i16> {
    let mut g = ToneGenerator::from_spec(tone);
    let mut out = vec![0i16; ms * 8];
    g.fill(&mut out);
    out
}

/// Deterministic white noise at `dbm0` (uniform, RMS set to the level of a sine at dbm0).
fn add_noise(samples: &mut [i16], dbm0: f32, seed: u64) {
    let peak = codecs::tones::dbm0_to_peak(dbm0);
    let rms = peak / 2f32.sqrt();
    // A uniform variable on [-a, a] has RMS a/√3.
    let a = rms * 3f32.sqrt();
    let mut x = seed | 1;
    for s in samples.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
        *s = (f32::from(*s) + u * a).clamp(-32768.0, 32767.0) as i16;
    }
}

/// What the detector reports on `samples`, fed in 8-sample DAHDI chunks, and when (ms).
fn run(country: Country, samples: &[i16]) -> Option<(ToneKind, usize)> {
    let mut d = ProgressDetector::new(country);
    for (i, chunk) in samples.chunks(8).enumerate() {
        if let Some(k) = d.process(chunk) {
            return Some((k, i));
        }
    }
    None
}

#[test]
fn busy_and_congestion_are_detected_across_levels_and_plans() {
    for (country, kind) in [
        (Country::Us, ToneKind::Busy),
        (Country::Us, ToneKind::Congestion),
        (Country::Etsi, ToneKind::Busy),
        (Country::Etsi, ToneKind::Congestion),
        (Country::Uk, ToneKind::Busy),
        (Country::De, ToneKind::Busy),
        (Country::Fr, ToneKind::Congestion),
    ] {
        for level in [-10.0, -24.0, -30.0, -36.0] {
            let tone = variant(spec(country, kind), level, 1.0);
            let got = run(country, &render(tone, 5000));
            let (k, at) = got.unwrap_or_else(|| panic!("{country} {kind} at {level} dBm0"));
            assert_eq!(k, kind, "{country} {kind} at {level} dBm0");
            let period: usize = tone.cadence_ms.iter().sum::<u32>() as usize;
            assert!(
                at <= 2 * period + 100,
                "{country} {kind}: found after {at} ms"
            );
        }
    }
}

#[test]
fn busy_is_detected_in_noise_off_frequency_mid_cadence_and_through_g711() {
    let us = spec(Country::Us, ToneKind::Busy);
    let etsi = spec(Country::Etsi, ToneKind::Busy);
    // White noise 10 dB below the tone.
    for (country, base) in [(Country::Us, us), (Country::Etsi, etsi)] {
        let mut s = render(variant(base, -20.0, 1.0), 5000);
        add_noise(&mut s, -30.0, 7);
        assert_eq!(
            run(country, &s).map(|r| r.0),
            Some(ToneKind::Busy),
            "{country} in noise"
        );
    }
    // ±1.5 % off the nominal frequencies.
    for scale in [0.985, 1.015] {
        let s = render(variant(us, -24.0, scale), 5000);
        assert_eq!(
            run(Country::Us, &s).map(|r| r.0),
            Some(ToneKind::Busy),
            "×{scale}"
        );
    }
    // Listening starts 300 ms into a tone burst.
    let s = render(us, 5300);
    assert_eq!(
        run(Country::Us, &s[2400..]).map(|r| r.0),
        Some(ToneKind::Busy)
    );
    // Through A-law and µ-law, as a B-channel carries it.
    for law in [Law::Alaw, Law::Ulaw] {
        let s: Vec<i16> = render(etsi, 5000)
            .iter()
            .map(|&x| law.decode_sample(law.encode_sample(x)))
            .collect();
        assert_eq!(
            run(Country::Etsi, &s).map(|r| r.0),
            Some(ToneKind::Busy),
            "{law:?}"
        );
    }
}

#[test]
fn no_detection_on_other_tones_noise_or_silence() {
    for country in Country::ALL {
        for kind in [ToneKind::Dial, ToneKind::Ringback] {
            let s = render(spec(country, kind), 20_000);
            assert_eq!(run(country, &s), None, "{country} {kind}");
        }
    }
    // Another plan's busy tone: US detector, ETSI 425 Hz busy; ETSI detector, US busy.
    let s = render(spec(Country::Etsi, ToneKind::Busy), 6000);
    assert_eq!(run(Country::Us, &s), None, "425 Hz is not US busy");
    let s = render(spec(Country::Us, ToneKind::Busy), 6000);
    assert_eq!(run(Country::Etsi, &s), None, "480+620 Hz is not ETSI busy");
    // A single component of the US busy pair, with the right cadence.
    let lone: &'static ToneSpec = Box::leak(Box::new(ToneSpec {
        frequencies: &[480.0],
        level_dbm0: -20.0,
        cadence_ms: &[500, 500],
    }));
    assert_eq!(run(Country::Us, &render(lone, 6000)), None, "480 Hz alone");
    // Noise keyed with the busy cadence.
    let mut s = vec![0i16; 6000 * 8];
    add_noise(&mut s, -20.0, 3);
    for (i, x) in s.iter_mut().enumerate() {
        if (i / 4000) % 2 == 1 {
            *x = 0;
        }
    }
    for country in Country::ALL {
        assert_eq!(run(country, &s), None, "{country}: keyed noise");
    }
    assert_eq!(run(Country::Us, &vec![0i16; 80_000]), None, "silence");
}

fn require(tool: &str, package: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty());
    assert!(ok, "{tool} is required: apt-get install {package}");
}

/// espeak-ng speech at 8 kHz via sox, `gain` applied.
fn speech(dir: &std::path::Path, voice: &str, speed: u32, pitch: u32, gain: f32) -> Vec<i16> {
    let text = "Hello, you have reached the sales office. Please hold the line. \
        One moment please, one moment please. Busy, busy, busy. \
        Ah, ah, ah, ah. Oh, oh, oh, oh. Mm, mm, mm, mm. La la la la la la la la.";
    let wav = dir.join(format!("{}.wav", voice.replace('+', "_")));
    let raw = wav.with_extension("raw");
    let out = Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-s",
            &speed.to_string(),
            "-p",
            &pitch.to_string(),
            "-w",
        ])
        .arg(&wav)
        .arg(text)
        .output()
        .expect("espeak-ng");
    assert!(out.status.success(), "espeak-ng {voice}");
    let out = Command::new("sox")
        .arg(&wav)
        .args([
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .args(["vol", &gain.to_string()])
        .output()
        .expect("sox");
    assert!(
        out.status.success(),
        "sox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&raw)
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn no_detection_on_speech() {
    require("espeak-ng", "espeak-ng");
    require("sox", "sox");
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0usize;
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/speech-8k.wav"
    ))
    .unwrap();
    let mut sets = vec![codecs::wav::parse(&bytes).unwrap().samples];
    for (voice, speed, pitch, gain) in [
        ("en", 160, 50, 1.0),
        ("en+f3", 140, 80, 1.5),
        ("en+m3", 200, 20, 0.5),
        ("de", 150, 60, 1.0),
        ("fr+f5", 120, 90, 1.0),
    ] {
        sets.push(speech(dir.path(), voice, speed, pitch, gain));
    }
    for s in &sets {
        total += s.len();
        for country in Country::ALL {
            assert_eq!(run(country, s), None, "{country} on speech");
            // Speech chopped into 0.5 s / 0.5 s and 0.25 s / 0.25 s bursts.
            for half in [4000usize, 2000] {
                let chopped: Vec<i16> = s
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| if (i / half) % 2 == 0 { x } else { 0 })
                    .collect();
                assert_eq!(run(country, &chopped), None, "{country} on chopped speech");
            }
        }
    }
    eprintln!("speech analysed: {:.1} s", total as f64 / 8000.0);
    assert!(total > 8000 * 30, "at least 30 s of speech");
}
