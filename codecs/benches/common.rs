//! Shared helpers for the codecs benchmarks: deterministic test signals and running the C
//! reference timing programs (spandsp) so their figures print in the same run.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// A deterministic pseudo-random generator (LCG), good enough for test signals.
pub struct Lcg(pub u32);

impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }
}

/// Speech-like 8 kHz signal: a few harmonics with a slowly varying envelope plus noise.
pub fn speechlike(samples: usize, seed: u32) -> Vec<i16> {
    let mut rng = Lcg(seed);
    (0..samples)
        .map(|n| {
            let t = n as f64 / 8000.0;
            let env = 0.2 + 0.8 * (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin());
            let f0 = 140.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            let mut v = 0.0;
            for h in 1..8 {
                v += (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64;
            }
            let noise = (rng.next_u32() >> 16) as f64 / 65536.0 - 0.5;
            ((v * 0.35 + noise * 0.05) * env * 32767.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Compiles `benches/c/<name>.c` against spandsp and runs it; returns its "key value" lines.
/// Returns an explanation instead when the C side cannot run (missing compiler or library).
pub fn run_c_reference(name: &str) -> Result<Vec<(String, f64)>, String> {
    run_c_reference_with(name, &[])
}

/// [`run_c_reference`] with arguments for the program.
pub fn run_c_reference_with(name: &str, args: &[&str]) -> Result<Vec<(String, f64)>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/c/{name}.c"));
    let exe = dir.path().join(name);
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "spandsp"])
        .output()
        .map_err(|e| format!("pkg-config: {e} (apt-get install pkg-config libspandsp-dev)"))?;
    if !flags.status.success() {
        return Err("spandsp not found: apt-get install libspandsp-dev".into());
    }
    let flags = String::from_utf8_lossy(&flags.stdout).to_string();
    let status = Command::new("cc")
        .args(["-O2", "-march=x86-64"])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .arg("-lm")
        .status()
        .map_err(|e| format!("cc: {e}"))?;
    if !status.success() {
        return Err(format!("compiling {} failed", src.display()));
    }
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{name} exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect())
}
