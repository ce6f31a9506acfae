//! Talk-off: the DTMF detector must report nothing on speech and music. Speech comes from
//! espeak-ng (several languages, voices, speeds and pitches), music-like signals from sox
//! (plucked chords, sweeps, tremolo, two-tone pairs near but not at valid DTMF pairs). Together
//! well over five minutes of audio; the test prints how much of each it analysed.
//!
//! Not included, on purpose: two chirps that pass through a valid row and column frequency at
//! the same moment. At musical sweep rates such a signal *is* a DTMF pair within ±2.5 % for
//! more than 25 ms, so any detector that meets the acceptance requirements reports it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use codecs::dtmf::{DtmfDetector, DtmfEvent};

const TEXT_EN: &str = "Thank you for calling. All of our agents are busy at the moment. Your call is \
important to us, please stay on the line and the next available agent will answer. You can also \
reach us on the web, where most questions about orders, deliveries, invoices and returns are \
answered within minutes. If you are calling about a technical problem, please have your \
customer number ready. Seven, eight, nine, zero, star, hash. Mississippi, Massachusetts, \
Connecticut. The quick brown fox jumps over the lazy dog while the five boxing wizards jump \
quickly. Peter Piper picked a peck of pickled peppers. She sells sea shells by the sea shore.";
const TEXT_DE: &str = "Vielen Dank für Ihren Anruf. Alle Mitarbeiter sind im Gespräch. Bitte \
bleiben Sie in der Leitung, der nächste freie Mitarbeiter ist gleich für Sie da. Zwölf Boxkämpfer \
jagen Viktor quer über den großen Sylter Deich. Fischers Fritz fischt frische Fische. Eins, zwei, \
drei, vier, fünf, sechs, sieben, acht, neun, null.";
const TEXT_FR: &str = "Merci de votre appel. Tous nos conseillers sont actuellement en ligne. \
Veuillez patienter, votre appel sera traité dans quelques instants. Les chaussettes de \
l'archiduchesse sont-elles sèches, archi-sèches? Un, deux, trois, quatre, cinq, six, sept, huit.";
const TEXT_ES: &str = "Gracias por llamar. Todos nuestros agentes están ocupados. Por favor, \
permanezca en la línea. El perro de San Roque no tiene rabo porque Ramón Rodríguez se lo ha \
cortado. Uno, dos, tres, cuatro, cinco, seis, siete, ocho, nueve.";
const TEXT_IT: &str = "Grazie per aver chiamato. Tutti i nostri operatori sono occupati. Sopra la \
panca la capra campa, sotto la panca la capra crepa. Uno, due, tre, quattro, cinque, sei.";

fn require(tool: &str, package: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty());
    assert!(
        ok,
        "{tool} is required for the talk-off test: apt-get install {package}"
    );
}

fn raw8k(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn sox(args: &[&str]) {
    let out = Command::new("sox")
        .args(args)
        .output()
        .expect("sox: apt-get install sox");
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Speech from espeak-ng at 8 kHz, 16-bit; `gain` scales it (to test loud and quiet talkers).
fn speech(
    dir: &Path,
    name: &str,
    voice: &str,
    speed: u32,
    pitch: u32,
    gain: f32,
    text: &str,
) -> Vec<i16> {
    let wav = dir.join(format!("{name}.wav"));
    let raw = dir.join(format!("{name}.raw"));
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
        .expect("espeak-ng: apt-get install espeak-ng");
    assert!(
        out.status.success(),
        "espeak-ng {voice}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sox(&[
        wav.to_str().unwrap(),
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
        raw.to_str().unwrap(),
        "vol",
        &gain.to_string(),
    ]);
    raw8k(&raw)
}

/// A sox `synth` signal at 8 kHz mono, made of `voices` generators mixed down.
fn synth(dir: &Path, name: &str, input_rate: u32, voices: usize, args: &[&str]) -> Vec<i16> {
    let raw = dir.join(format!("{name}.raw"));
    let mut all = vec![
        "-r".to_string(),
        input_rate.to_string(),
        "-c".to_string(),
        voices.to_string(),
        "-n".to_string(),
        "-r".into(),
        "8000".into(),
        "-c".into(),
        "1".into(),
        "-b".into(),
        "16".into(),
        "-e".into(),
        "signed-integer".into(),
        "-t".into(),
        "raw".into(),
        raw.to_str().unwrap().into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    sox(&refs);
    raw8k(&raw)
}

fn digits_in(samples: &[i16]) -> Vec<(char, f64)> {
    let mut d = DtmfDetector::new();
    let mut found = Vec::new();
    let mut on = |e: DtmfEvent| {
        if let DtmfEvent::KeyDown { digit, at_sample } = e {
            found.push((digit, at_sample as f64 / 8000.0));
        }
    };
    d.process(samples, &mut on);
    d.finish(&mut on);
    found
}

#[test]
fn no_digit_in_five_minutes_of_speech_and_music() {
    require("espeak-ng", "espeak-ng");
    require("sox", "sox");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Speech: 5 languages × voice variants × speeds/pitches × levels.
    let mut speech_sets: Vec<(String, Vec<i16>)> = Vec::new();
    let texts = [
        ("en", TEXT_EN),
        ("de", TEXT_DE),
        ("fr", TEXT_FR),
        ("es", TEXT_ES),
        ("it", TEXT_IT),
    ];
    let variants: [(&str, u32, u32, f32); 6] = [
        ("", 160, 50, 1.0),
        ("+f3", 140, 70, 1.0),
        ("+m3", 180, 30, 0.5),
        ("+f5", 120, 90, 1.5),
        ("+m7", 200, 20, 1.0),
        ("+klatt", 150, 60, 0.3),
    ];
    let mut handles = Vec::new();
    for (lang, text) in texts {
        for (variant, speed, pitch, gain) in variants {
            let dir = d.to_path_buf();
            let voice = format!("{lang}{variant}");
            handles.push(std::thread::spawn(move || {
                let name = format!("speech-{}", voice.replace('+', "_"));
                let s = speech(&dir, &name, &voice, speed, pitch, gain, text);
                (name, s)
            }));
        }
    }
    for h in handles {
        speech_sets.push(h.join().unwrap());
    }
    let speech_seconds: f64 = speech_sets
        .iter()
        .map(|(_, s)| s.len() as f64 / 8000.0)
        .sum();

    // Music-like signals.
    let music_sets: Vec<(&str, Vec<i16>)> = vec![
        (
            "plucked C major chord",
            synth(
                d,
                "chord1",
                48000,
                3,
                &[
                    "synth", "8", "pluck", "C4", "pluck", "E4", "pluck", "G4", "repeat", "2",
                ],
            ),
        ),
        (
            "plucked A minor 7 chord",
            synth(
                d,
                "chord2",
                48000,
                4,
                &[
                    "synth", "8", "pluck", "A3", "pluck", "C4", "pluck", "E4", "pluck", "G4",
                ],
            ),
        ),
        (
            "sine sweep 300-3400 Hz",
            synth(d, "sweep", 8000, 1, &["synth", "12", "sine", "300-3400"]),
        ),
        (
            "glissandi crossing in the low band",
            synth(
                d,
                "sweeps",
                8000,
                2,
                &[
                    "synth", "0.4", "sine", "600-1000", "sine", "1000-600", "repeat", "24",
                ],
            ),
        ),
        (
            "glissando through the high band over a held 1000 Hz",
            synth(
                d,
                "sweeps2",
                8000,
                2,
                &[
                    "synth",
                    "0.5",
                    "sine",
                    "1100-1700",
                    "sine",
                    "1000",
                    "repeat",
                    "12",
                ],
            ),
        ),
        (
            "square wave with tremolo",
            synth(
                d,
                "trem",
                8000,
                1,
                &[
                    "synth", "8", "square", "440", "tremolo", "6", "40", "vol", "0.3",
                ],
            ),
        ),
        (
            "sawtooth arpeggio",
            synth(
                d,
                "saw",
                8000,
                1,
                &[
                    "synth", "0.25", "sawtooth", "262", "synth", "0.25", "sawtooth", "330", "vol",
                    "0.3", "repeat", "20",
                ],
            ),
        ),
        (
            "two low-group tones 697+941 Hz",
            synth(
                d,
                "lowpair",
                8000,
                2,
                &["synth", "4", "sine", "697", "sine", "941", "vol", "0.3"],
            ),
        ),
        (
            "two high-group tones 1209+1477 Hz",
            synth(
                d,
                "highpair",
                8000,
                2,
                &["synth", "4", "sine", "1209", "sine", "1477", "vol", "0.3"],
            ),
        ),
        (
            "pair 5 % off 770+1336 Hz",
            synth(
                d,
                "offpair",
                8000,
                2,
                &["synth", "4", "sine", "808", "sine", "1403", "vol", "0.3"],
            ),
        ),
        (
            "single DTMF row tone with harmonics",
            synth(
                d,
                "row",
                8000,
                1,
                &["synth", "4", "square", "697", "vol", "0.2"],
            ),
        ),
        (
            "pink noise",
            synth(
                d,
                "pink",
                8000,
                1,
                &["synth", "6", "pinknoise", "vol", "0.5"],
            ),
        ),
        (
            "brown noise with tremolo",
            synth(
                d,
                "brown",
                8000,
                1,
                &["synth", "6", "brownnoise", "tremolo", "3", "80"],
            ),
        ),
    ];
    let music_seconds: f64 = music_sets
        .iter()
        .map(|(_, s)| s.len() as f64 / 8000.0)
        .sum();

    let mut hits = Vec::new();
    for (name, s) in &speech_sets {
        for (digit, t) in digits_in(s) {
            hits.push(format!("{name}: '{digit}' at {t:.2} s"));
        }
    }
    for (name, s) in &music_sets {
        for (digit, t) in digits_in(s) {
            hits.push(format!("{name}: '{digit}' at {t:.2} s"));
        }
    }
    println!(
        "talk-off: {speech_seconds:.0} s of speech ({} recordings), {music_seconds:.0} s of music-like signals ({} signals), {} false digits",
        speech_sets.len(),
        music_sets.len(),
        hits.len()
    );
    assert!(
        speech_seconds >= 300.0,
        "only {speech_seconds:.0} s of speech generated"
    );
    assert!(
        music_seconds >= 60.0,
        "only {music_seconds:.0} s of music generated"
    );
    assert!(hits.is_empty(), "talk-off: {hits:#?}");

    // The detector is alive on the same material: a digit mixed into speech is still found.
    let mut with_digit = speech_sets[0].1.clone();
    let mut tone = Vec::new();
    codecs::dtmf::generate(
        "7",
        &codecs::dtmf::DtmfParams {
            level_dbm0: -6.0,
            on_ms: 80,
            off_ms: 0,
            ..Default::default()
        },
        &mut tone,
    )
    .unwrap();
    for (i, t) in tone.iter().enumerate() {
        let s = &mut with_digit[16000 + i];
        *s = (i32::from(*s) / 4 + i32::from(*t)).clamp(-32768, 32767) as i16;
    }
    let found: Vec<char> = digits_in(&with_digit).iter().map(|d| d.0).collect();
    assert_eq!(
        found,
        vec!['7'],
        "a digit over speech must still be detected"
    );
}
