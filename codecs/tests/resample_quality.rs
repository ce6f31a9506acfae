//! Measures the resampler the way an audio engineer would: passband ripple with tones across
//! the speech band, alias rejection with tones that the lower rate cannot carry, and image
//! rejection when upsampling. Prints the measured figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use codecs::resample::resample_all;
use std::f64::consts::PI;

const AMPLITUDE: f64 = 12000.0;

fn tone(rate: u32, freq: f64, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| (AMPLITUDE * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

/// Middle 80 % of a signal (skips the filter's start-up and flush).
fn middle(x: &[i16]) -> &[i16] {
    &x[x.len() / 10..x.len() * 9 / 10]
}

/// Least-squares amplitude of a sinusoid at `freq` and the RMS of what remains.
fn fit(x: &[i16], rate: u32, freq: f64) -> (f64, f64) {
    let w = 2.0 * PI * freq / f64::from(rate);
    let (mut ss, mut sc, mut cc, mut xs, mut xc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let v = f64::from(v);
        ss += s * s;
        sc += s * c;
        cc += c * c;
        xs += v * s;
        xc += v * c;
    }
    let det = ss * cc - sc * sc;
    let a = (xs * cc - xc * sc) / det;
    let b = (xc * ss - xs * sc) / det;
    let mut residual = 0.0;
    for (i, &v) in x.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let r = f64::from(v) - a * s - b * c;
        residual += r * r;
    }
    ((a * a + b * b).sqrt(), (residual / x.len() as f64).sqrt())
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.max(1e-12).log10()
}

const PAIRS: [(u32, u32); 6] = [
    (8000, 16000),
    (16000, 8000),
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
];

#[test]
fn passband_ripple_is_below_0_1_db() {
    for (from, to) in PAIRS {
        let edge = 0.85 * f64::from(from.min(to)) / 2.0;
        let mut gains = Vec::new();
        let mut f = 100.0;
        while f <= edge {
            let y = resample_all(from, to, &tone(from, f, 0.5)).unwrap();
            let (amp, _) = fit(middle(&y), to, f);
            gains.push(db(amp / AMPLITUDE));
            f += 150.0;
        }
        let max = gains.iter().cloned().fold(f64::MIN, f64::max);
        let min = gains.iter().cloned().fold(f64::MAX, f64::min);
        println!(
            "{from:>5} -> {to:>5} Hz: passband 100..{edge:.0} Hz, gain {min:+.4} .. {max:+.4} dB, ripple {:.4} dB",
            max - min
        );
        assert!(max - min < 0.1, "{from}->{to}: ripple {:.3} dB", max - min);
        assert!(
            max.abs() < 0.1 && min.abs() < 0.1,
            "{from}->{to}: gain off by {min:.3}/{max:.3} dB"
        );
    }
}

#[test]
fn downsampling_rejects_aliases_by_at_least_60_db() {
    for (from, to) in PAIRS.into_iter().filter(|(f, t)| f > t) {
        let nyquist_low = f64::from(to) / 2.0;
        let nyquist_high = f64::from(from) / 2.0;
        let mut worst = f64::MIN;
        let mut worst_f = 0.0;
        let mut f = nyquist_low + 10.0;
        while f < nyquist_high * 0.99 {
            let y = resample_all(from, to, &tone(from, f, 0.3)).unwrap();
            let level = db(rms(middle(&y)) * 2f64.sqrt() / AMPLITUDE);
            if level > worst {
                worst = level;
                worst_f = f;
            }
            f += 97.0;
        }
        println!("{from:>5} -> {to:>5} Hz: worst alias {worst:.1} dB (input tone {worst_f:.0} Hz)");
        assert!(
            worst <= -60.0,
            "{from}->{to}: alias at {worst:.1} dB for {worst_f} Hz"
        );
    }
}

#[test]
fn upsampling_rejects_images_by_at_least_60_db() {
    for (from, to) in PAIRS.into_iter().filter(|(f, t)| f < t) {
        let edge = 0.85 * f64::from(from) / 2.0;
        let mut worst = f64::MIN;
        let mut worst_f = 0.0;
        let mut f = 200.0;
        while f <= edge {
            let y = resample_all(from, to, &tone(from, f, 0.3)).unwrap();
            let (_, residual) = fit(middle(&y), to, f);
            let level = db(residual * 2f64.sqrt() / AMPLITUDE);
            if level > worst {
                worst = level;
                worst_f = f;
            }
            f += 233.0;
        }
        println!(
            "{from:>5} -> {to:>5} Hz: worst image + noise {worst:.1} dB (input tone {worst_f:.0} Hz)"
        );
        assert!(
            worst <= -60.0,
            "{from}->{to}: images at {worst:.1} dB for {worst_f} Hz"
        );
    }
}
