//! Sample-rate conversion between the telephony and wideband rates (8, 16, 24, 32, 48 kHz) for
//! speech, with a polyphase FIR filter.
//!
//! The filter is a Kaiser-windowed sinc designed when the [`Resampler`] is built: passband flat
//! to 85 % of the lower rate's Nyquist frequency (3.4 kHz when one side is 8 kHz), stopband from
//! that Nyquist frequency on, with at least 70 dB of attenuation there, so tones that cannot be
//! represented at the lower rate are removed instead of folding back as aliases (downsampling)
//! and spectral images are removed (upsampling). `codecs/tests/resample_quality.rs` measures the
//! ripple and the rejection.
//!
//! Streaming: [`Resampler::process`] keeps its history between calls, so a stream can be fed in
//! any block sizes (one 20 ms frame at a time on the media path) and gives the same output as
//! one call over the whole signal. It never allocates; all buffers are sized at construction.

use crate::CodecError;

/// Rates the resampler accepts, in Hz.
pub const SUPPORTED_RATES: [u32; 5] = [8000, 16000, 24000, 32000, 48000];

/// Stopband attenuation the filter is designed for, in dB.
const STOPBAND_DB: f64 = 75.0;
/// Passband edge as a fraction of the lower rate's Nyquist frequency.
const PASSBAND_FRACTION: f64 = 0.85;

/// A streaming rational-ratio resampler for mono 16-bit audio.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Interpolation factor L.
    up: usize,
    /// Decimation factor M.
    down: usize,
    /// Taps per polyphase branch.
    taps: usize,
    /// `up` branches of `taps` coefficients each, branch-major, newest-sample-first.
    phases: Vec<f32>,
    /// Delay line stored twice so that the last `taps` samples are always contiguous.
    history: Vec<f32>,
    /// Write position in `history` (0..taps).
    pos: usize,
    /// Position of the next output on the L-times grid, relative to the newest input.
    next: usize,
    /// Group delay of the prototype filter, in samples of the L-times grid.
    group_delay: f64,
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zeroth-order modified Bessel function of the first kind (series), for the Kaiser window.
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// Builds a resampler from `from` Hz to `to` Hz.
    ///
    /// # Errors
    /// [`CodecError::Unsupported`] unless both rates are in [`SUPPORTED_RATES`].
    pub fn new(from: u32, to: u32) -> Result<Self, CodecError> {
        for rate in [from, to] {
            if !SUPPORTED_RATES.contains(&rate) {
                return Err(CodecError::Unsupported {
                    what: "sample rate",
                    detail: format!("{rate} Hz; supported: 8000, 16000, 24000, 32000, 48000"),
                });
            }
        }
        let g = gcd(from, to);
        let up = (to / g) as usize;
        let down = (from / g) as usize;
        // The prototype runs at from*up = to*down Hz.
        let high_rate = f64::from(from) * up as f64;
        let nyquist_low = f64::from(from.min(to)) / 2.0;
        let pass_edge = PASSBAND_FRACTION * nyquist_low;
        let stop_edge = nyquist_low;
        let transition = (stop_edge - pass_edge) / high_rate; // cycles per sample
        let cutoff = (pass_edge + stop_edge) / 2.0 / high_rate;
        // Kaiser's formulas for length and beta.
        let beta = 0.1102 * (STOPBAND_DB - 8.7);
        let length_estimate = (STOPBAND_DB - 7.95) / (14.36 * transition) + 1.0;
        let taps = ((length_estimate / up as f64).ceil() as usize).max(2);
        let length = taps * up;
        let center = (length - 1) as f64 / 2.0;
        let i0_beta = bessel_i0(beta);
        let mut prototype = vec![0f64; length];
        for (n, h) in prototype.iter_mut().enumerate() {
            let t = n as f64 - center;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
            };
            let r = t / center;
            let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            *h = sinc * window;
        }
        // Normalise the DC gain of each branch to 1 (overall gain L for interpolation).
        let sum: f64 = prototype.iter().sum();
        let gain = up as f64 / sum;
        let mut phases = vec![0f32; length];
        for phase in 0..up {
            for j in 0..taps {
                // Branch `phase`, tap j multiplies the input j samples back.
                phases[phase * taps + j] = (prototype[phase + j * up] * gain) as f32;
            }
        }
        Ok(Self {
            from,
            to,
            up,
            down,
            taps,
            phases,
            history: vec![0.0; 2 * taps],
            pos: 0,
            next: 0,
            group_delay: center,
        })
    }

    /// Input rate in Hz.
    pub fn input_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Exactly how many samples the next [`process`](Self::process) call with `input_len`
    /// samples will produce.
    pub fn output_len(&self, input_len: usize) -> usize {
        let span = input_len.saturating_mul(self.up);
        if self.next >= span {
            0
        } else {
            (span - self.next).div_ceil(self.down)
        }
    }

    /// The filter's delay, in output samples: an input impulse at time 0 peaks at this output
    /// time.
    pub fn delay_samples(&self) -> f64 {
        self.group_delay / self.down as f64
    }

    /// Clears the history, as if the resampler had just been built.
    pub fn reset(&mut self) {
        self.history.fill(0.0);
        self.pos = 0;
        self.next = 0;
    }

    /// Resamples `input`, writing [`output_len`](Self::output_len) samples to the start of
    /// `output`; returns that count.
    ///
    /// # Errors
    /// [`CodecError::OutputTooSmall`] if `output` is shorter than `output_len(input.len())`; the
    /// state is unchanged then.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<usize, CodecError> {
        let needed = self.output_len(input.len());
        if output.len() < needed {
            return Err(CodecError::OutputTooSmall {
                needed,
                got: output.len(),
            });
        }
        let taps = self.taps;
        let mut written = 0;
        for &x in input {
            // Push the newest sample so that history[pos..pos + taps] runs newest to oldest.
            self.pos = if self.pos == 0 {
                taps - 1
            } else {
                self.pos - 1
            };
            let v = f32::from(x);
            self.history[self.pos] = v;
            self.history[self.pos + taps] = v;
            let window = &self.history[self.pos..self.pos + taps];
            while self.next < self.up {
                let branch = &self.phases[self.next * taps..(self.next + 1) * taps];
                let acc = dot(branch, window);
                if let Some(slot) = output.get_mut(written) {
                    *slot = acc.round().clamp(-32768.0, 32767.0) as i16;
                }
                written += 1;
                self.next += self.down;
            }
            self.next -= self.up;
        }
        Ok(written)
    }
}

/// Dot product with four independent accumulators so the compiler can vectorise it.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Resamples a whole signal at once, compensating the filter delay so the output lines up with
/// the input in time (output length = input length × to / from, rounded).
///
/// Allocates; meant for files and tools, not the media path.
///
/// # Errors
/// [`CodecError::Unsupported`] for a rate outside [`SUPPORTED_RATES`].
pub fn resample_all(from: u32, to: u32, input: &[i16]) -> Result<Vec<i16>, CodecError> {
    if from == to {
        return Ok(input.to_vec());
    }
    let mut r = Resampler::new(from, to)?;
    let delay = r.delay_samples().round() as usize;
    // Feed enough trailing silence to flush the filter's delay.
    let flush_in = (delay * from as usize).div_ceil(to as usize) + 1;
    let mut out = vec![0i16; r.output_len(input.len())];
    let n = r.process(input, &mut out)?;
    out.truncate(n);
    let zeros = vec![0i16; flush_in];
    let mut tail = vec![0i16; r.output_len(zeros.len())];
    let m = r.process(&zeros, &mut tail)?;
    out.extend_from_slice(&tail[..m]);
    let wanted = (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    Ok(out.into_iter().skip(delay).take(wanted).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_rates_are_refused_with_the_list() {
        let e = Resampler::new(8000, 44100).unwrap_err();
        assert!(e.to_string().contains("44100"), "{e}");
        assert!(Resampler::new(0, 8000).is_err());
    }

    #[test]
    fn output_len_is_exact_and_short_output_is_refused() {
        for (from, to) in [(8000, 48000), (48000, 8000), (16000, 48000), (48000, 16000)] {
            let mut r = Resampler::new(from, to).unwrap();
            let mut total = 0;
            for len in [1usize, 7, 160, 33, 960, 5] {
                let expect = r.output_len(len);
                let mut out = vec![0i16; expect];
                let got = r.process(&vec![100i16; len], &mut out).unwrap();
                assert_eq!(got, expect);
                total += len;
                let _ = total;
            }
            let need = r.output_len(960);
            if need > 0 {
                let mut small = vec![0i16; need - 1];
                assert!(matches!(
                    r.process(&[0i16; 960], &mut small),
                    Err(CodecError::OutputTooSmall { .. })
                ));
            }
        }
    }

    #[test]
    fn block_size_does_not_change_the_output() {
        let signal: Vec<i16> = (0..4000)
            .map(|i| ((i * 7919) % 20000 - 10000) as i16)
            .collect();
        let mut whole = Resampler::new(8000, 48000).unwrap();
        let mut a = vec![0i16; whole.output_len(signal.len())];
        whole.process(&signal, &mut a).unwrap();
        let mut pieces = Resampler::new(8000, 48000).unwrap();
        let mut b = Vec::new();
        for chunk in signal.chunks(37) {
            let mut out = vec![0i16; pieces.output_len(chunk.len())];
            let n = pieces.process(chunk, &mut out).unwrap();
            b.extend_from_slice(&out[..n]);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn resample_all_keeps_time_alignment() {
        // A click at sample 400 of an 8 kHz signal lands at sample 2400 at 48 kHz.
        let mut x = vec![0i16; 800];
        x[400] = 20000;
        let y = resample_all(8000, 48000, &x).unwrap();
        assert_eq!(y.len(), 4800);
        let peak = y
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.unsigned_abs())
            .map(|(i, _)| i)
            .unwrap();
        assert!((2398..=2402).contains(&peak), "peak at {peak}");
    }
}
