//! `gwctl codec`, `gwctl dtmf` and `gwctl tone` as an operator runs them, checked with sox as the
//! independent peer: files gwctl writes are read by sox and vice versa.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::f64::consts::PI;
use std::path::Path;
use std::process::{Command, Output};

fn gwctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gwctl"))
        .args(args)
        .output()
        .unwrap()
}

fn sox(args: &[&str]) {
    let out = Command::new("sox")
        .args(args)
        .output()
        .expect("sox not found: apt-get install sox");
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_s16(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Amplitude of the `freq` component and RMS of everything else, over the middle of `x`.
fn fit(x: &[i16], rate: f64, freq: f64) -> (f64, f64) {
    let x = &x[x.len() / 10..x.len() * 9 / 10];
    let w = 2.0 * PI * freq / rate;
    let (mut xs, mut xc) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        xs += f64::from(v) * (w * i as f64).sin();
        xc += f64::from(v) * (w * i as f64).cos();
    }
    let (a, b) = (2.0 * xs / x.len() as f64, 2.0 * xc / x.len() as f64);
    let mut residual = 0.0;
    for (i, &v) in x.iter().enumerate() {
        let r = f64::from(v) - a * (w * i as f64).sin() - b * (w * i as f64).cos();
        residual += r * r;
    }
    ((a * a + b * b).sqrt(), (residual / x.len() as f64).sqrt())
}

#[test]
fn convert_48k_wav_to_ulaw_is_read_correctly_by_sox() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("in48k.wav");
    let ul = dir.path().join("out.ul");
    let back = dir.path().join("back.raw");
    // sox: a 1 kHz tone at half scale, 48 kHz, 16-bit.
    sox(&[
        "-n",
        "-r",
        "48000",
        "-c",
        "1",
        "-b",
        "16",
        wav.to_str().unwrap(),
        "synth",
        "1",
        "sine",
        "1000",
        "vol",
        "0.5",
    ]);
    let out = gwctl(&[
        "codec",
        "convert",
        wav.to_str().unwrap(),
        ul.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&ul).unwrap().len(),
        8000,
        "1 s at 8 kHz, one byte per sample"
    );
    sox(&[
        "-t",
        "ul",
        "-r",
        "8000",
        "-c",
        "1",
        ul.to_str().unwrap(),
        "-t",
        "raw",
        "-e",
        "signed-integer",
        "-b",
        "16",
        back.to_str().unwrap(),
    ]);
    let x = read_s16(&back);
    let (amp, residual) = fit(&x, 8000.0, 1000.0);
    let level_db = 20.0 * (amp / 16384.0).log10();
    let snr_db = 20.0 * (amp / 2f64.sqrt() / residual).log10();
    assert!(level_db.abs() < 0.3, "level {level_db:.2} dB");
    assert!(
        snr_db > 33.0,
        "SNR after resampling and µ-law {snr_db:.1} dB"
    );
}

#[test]
fn sox_alaw_to_16k_wav_and_raw_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let al = dir.path().join("in.al");
    let wav = dir.path().join("out16k.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-t",
        "al",
        al.to_str().unwrap(),
        "synth",
        "0.5",
        "sine",
        "700",
        "vol",
        "0.3",
    ]);
    let out = gwctl(&[
        "codec",
        "convert",
        "--rate",
        "16000",
        al.to_str().unwrap(),
        wav.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // sox reads our WAV header.
    let info = Command::new("soxi")
        .arg(wav.to_str().unwrap())
        .output()
        .expect("soxi (sox)");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("16000"), "{info}");
    assert!(info.contains("Channels       : 1"), "{info}");
    let raw = dir.path().join("x.raw");
    sox(&[
        wav.to_str().unwrap(),
        "-t",
        "raw",
        "-e",
        "signed-integer",
        "-b",
        "16",
        raw.to_str().unwrap(),
    ]);
    let (amp, residual) = fit(&read_s16(&raw), 16000.0, 700.0);
    assert!((20.0 * (amp / (0.3 * 32768.0)).log10()).abs() < 0.3);
    assert!(amp / 2f64.sqrt() / residual > 40.0);
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wav");
    let out = gwctl(&["codec", "convert", missing.to_str().unwrap(), "x.ul"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("missing.wav"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let out = gwctl(&[
        "codec",
        "convert",
        garbage.to_str().unwrap(),
        dir.path().join("o.ul").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed WAV"), "{err}");

    let odd = dir.path().join("odd.s16");
    std::fs::write(&odd, [1u8, 2, 3]).unwrap();
    let out = gwctl(&[
        "codec",
        "convert",
        odd.to_str().unwrap(),
        dir.path().join("o.ul").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a whole number of 16-bit samples"),
        "{err}"
    );

    let out = gwctl(&["codec", "convert", odd.to_str().unwrap(), "out.mp3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot tell the audio format"), "{err}");

    let out = gwctl(&[
        "codec",
        "convert",
        "--rate",
        "44100",
        odd.to_str().unwrap(),
        "out.wav",
    ]);
    assert!(!out.status.success());
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "gwctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn dtmf_generate_then_detect_prints_each_digit_once_with_times() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("digits.wav");
    stdout(&gwctl(&[
        "dtmf",
        "generate",
        "159#*0AD",
        wav.to_str().unwrap(),
        "--on-ms",
        "60",
        "--off-ms",
        "60",
    ]));
    // sox agrees on the file: 8 digits × 120 ms at 8 kHz.
    let info = Command::new("soxi")
        .args(["-s", wav.to_str().unwrap()])
        .output()
        .expect("soxi (sox)");
    assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), "7680");
    let text = stdout(&gwctl(&["dtmf", "detect", wav.to_str().unwrap()]));
    let lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let digits: String = lines.iter().map(|l| l[2].clone()).collect();
    assert_eq!(digits, "159#*0AD");
    for (i, l) in lines.iter().enumerate() {
        let start: f64 = l[0].parse().unwrap();
        let end: f64 = l[1].parse().unwrap();
        assert!((start - 120.0 * i as f64).abs() <= 15.0, "{l:?}");
        assert!((end - (120.0 * i as f64 + 60.0)).abs() <= 15.0, "{l:?}");
    }
}

#[test]
fn dtmf_detect_finds_digits_sox_made_at_48k() {
    // An independent generator: sox synthesises the pairs for 3 (697+1477) and # (941+1477)
    // with silence between, at 48 kHz; gwctl resamples and detects.
    let dir = tempfile::tempdir().unwrap();
    let parts = [("a", 697, 1477), ("b", 941, 1477)];
    let mut files = Vec::new();
    for (name, lo, hi) in parts {
        let f = dir.path().join(format!("{name}.wav"));
        sox(&[
            "-r",
            "48000",
            "-c",
            "2",
            "-n",
            "-r",
            "48000",
            "-c",
            "1",
            "-b",
            "16",
            f.to_str().unwrap(),
            "synth",
            "0.07",
            "sine",
            &lo.to_string(),
            "sine",
            &hi.to_string(),
            "vol",
            "0.2",
            "pad",
            "0.05",
            "0.1",
        ]);
        files.push(f);
    }
    let joined = dir.path().join("both.wav");
    let mut args: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    args.push(joined.to_str().unwrap());
    sox(&args);
    let text = stdout(&gwctl(&[
        "dtmf",
        "detect",
        joined.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let digits: String = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digit"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digits, "3#");
}

#[test]
fn tone_writes_a_cadenced_tone_sox_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("busy.wav");
    stdout(&gwctl(&[
        "tone",
        "us",
        "busy",
        wav.to_str().unwrap(),
        "--seconds",
        "3",
    ]));
    let raw = dir.path().join("busy.raw");
    sox(&[
        wav.to_str().unwrap(),
        "-t",
        "raw",
        "-e",
        "signed-integer",
        "-b",
        "16",
        raw.to_str().unwrap(),
    ]);
    let x = read_s16(&raw);
    assert_eq!(x.len(), 24000);
    // 0.5 s on / 0.5 s off: energy in each 100 ms block.
    for (i, block) in x.chunks(800).enumerate() {
        let rms = (block.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / 800.0).sqrt();
        let on = (i / 5) % 2 == 0;
        assert_eq!(rms > 100.0, on, "block {i}: rms {rms:.0}");
    }
    let (a480, _) = fit(&x[..4000], 8000.0, 480.0);
    let (a620, _) = fit(&x[..4000], 8000.0, 620.0);
    assert!(
        a480 > 500.0 && a620 > 500.0,
        "480 Hz {a480:.0}, 620 Hz {a620:.0}"
    );
}

#[test]
fn dtmf_and_tone_refuse_bad_arguments_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = gwctl(&[
        "dtmf",
        "generate",
        "12X",
        dir.path().join("x.wav").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'X' is not a DTMF digit"));
    let out = gwctl(&[
        "tone",
        "mars",
        "busy",
        dir.path().join("x.wav").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("unknown country") && err.contains("etsi"),
        "{err}"
    );
    let out = gwctl(&[
        "tone",
        "us",
        "howler",
        dir.path().join("x.wav").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tone"));
    let out = gwctl(&[
        "dtmf",
        "detect",
        dir.path().join("none.wav").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
