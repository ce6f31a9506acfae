//! DTMF interop with an independent implementation, spandsp (`libspandsp-dev`): digits from
//! spandsp's generator are found by our detector, and digits from our generator are found by
//! spandsp's receiver. A small C shim (below) is compiled by the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use codecs::dtmf::{self, DIGITS, DtmfDetector, DtmfEvent, DtmfParams};

/// `shim tx DIGITS ON_MS OFF_MS LEVEL_DBM0 TWIST_DB` writes spandsp's DTMF as raw s16le to
/// stdout; `shim rx` reads raw s16le from stdin and prints the digits spandsp heard.
const SHIM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <tiffio.h>
#include <spandsp.h>

static void on_digits(void *user, const char *digits, int len)
{
    (void) user;
    fwrite(digits, 1, len, stdout);
}

int main(int argc, char **argv)
{
    int16_t buf[160];
    if (argc == 7 && strcmp(argv[1], "tx") == 0) {
        dtmf_tx_state_t *tx = dtmf_tx_init(NULL);
        dtmf_tx_set_level(tx, atoi(argv[5]), atoi(argv[6]));
        dtmf_tx_set_timing(tx, atoi(argv[3]), atoi(argv[4]));
        dtmf_tx_put(tx, argv[2], -1);
        int n;
        while ((n = dtmf_tx(tx, buf, 160)) > 0)
            fwrite(buf, sizeof(int16_t), n, stdout);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "rx") == 0) {
        dtmf_rx_state_t *rx = dtmf_rx_init(NULL, on_digits, NULL);
        size_t n;
        while ((n = fread(buf, sizeof(int16_t), 160, stdin)) > 0)
            dtmf_rx(rx, buf, (int) n);
        memset(buf, 0, sizeof(buf));
        for (int i = 0; i < 10; i++)
            dtmf_rx(rx, buf, 160);
        fputc('\n', stdout);
        return 0;
    }
    fprintf(stderr, "usage: shim tx DIGITS ON OFF LEVEL TWIST | shim rx\n");
    return 2;
}
"#;

fn build_shim(dir: &Path) -> PathBuf {
    let src = dir.join("dtmf_shim.c");
    std::fs::write(&src, SHIM).unwrap();
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "spandsp"])
        .output()
        .expect("pkg-config not found: apt-get install pkg-config libspandsp-dev");
    assert!(
        flags.status.success(),
        "pkg-config cannot find spandsp: apt-get install libspandsp-dev"
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    let exe = dir.join("dtmf_shim");
    let status = Command::new("cc")
        .arg("-O2")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .arg("-lm")
        .status()
        .expect("cc not found: apt-get install build-essential");
    assert!(status.success(), "compiling the spandsp shim failed");
    exe
}

fn spandsp_tx(
    shim: &Path,
    digits: &str,
    on_ms: u32,
    off_ms: u32,
    level: i32,
    twist: i32,
) -> Vec<i16> {
    let out = Command::new(shim)
        .args(["tx", digits])
        .args([on_ms, off_ms].map(|v| v.to_string()))
        .args([level, twist].map(|v| v.to_string()))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn spandsp_rx(shim: &Path, samples: &[i16]) -> String {
    let mut child = Command::new(shim)
        .arg("rx")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn our_digits(samples: &[i16]) -> String {
    let mut det = DtmfDetector::new();
    let mut digits = String::new();
    let mut on_event = |e: DtmfEvent| {
        if let DtmfEvent::KeyDown { digit, .. } = e {
            digits.push(digit);
        }
    };
    det.process(samples, &mut on_event);
    det.finish(&mut on_event);
    digits
}

#[test]
fn spandsp_generated_digits_are_found_by_our_detector() {
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    // spandsp's level is per tone in dBm0; its twist is the high tone relative to the low.
    for (on, off, level, twist) in [
        (40, 40, -10, 0),
        (50, 50, -26, 0),
        (40, 40, -10, -6),
        (60, 60, -20, 3),
    ] {
        let mut s = vec![0i16; 333];
        s.extend(spandsp_tx(&shim, DIGITS, on, off, level, twist));
        assert_eq!(
            our_digits(&s),
            DIGITS,
            "spandsp tones {on}/{off} ms at {level} dBm0, twist {twist} dB"
        );
    }
}

#[test]
fn our_generated_digits_are_found_by_spandsp() {
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    for (level, twist) in [(-10.0, 0.0), (-20.0, -4.0), (-6.0, 2.0)] {
        let params = DtmfParams {
            level_dbm0: level,
            twist_db: twist,
            on_ms: 50,
            off_ms: 50,
        };
        let mut s = vec![0i16; 333];
        dtmf::generate(DIGITS, &params, &mut s).unwrap();
        assert_eq!(
            spandsp_rx(&shim, &s),
            DIGITS,
            "our tones at {level} dBm0, twist {twist} dB"
        );
    }
}

/// Amplitude of the `freq` component of `x`.
fn amplitude(x: &[i16], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / 8000.0;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &v) in x.iter().enumerate() {
        re += f64::from(v) * (w * n as f64).cos();
        im -= f64::from(v) * (w * n as f64).sin();
    }
    2.0 * (re * re + im * im).sqrt() / x.len() as f64
}

#[test]
fn our_dbm0_levels_agree_with_spandsp() {
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    for level in [-10i8, -26] {
        let theirs = spandsp_tx(&shim, "1", 100, 0, i32::from(level), 0);
        let params = DtmfParams {
            level_dbm0: f32::from(level),
            twist_db: 0.0,
            on_ms: 100,
            off_ms: 0,
        };
        let mut ours = Vec::new();
        dtmf::generate("1", &params, &mut ours).unwrap();
        assert_eq!(theirs.len(), ours.len());
        for f in [697.0, 1209.0] {
            let db = 20.0 * (amplitude(&ours, f) / amplitude(&theirs, f)).log10();
            assert!(
                db.abs() < 0.2,
                "{level} dBm0 at {f} Hz: ours differs from spandsp by {db:.2} dB"
            );
        }
    }
}
