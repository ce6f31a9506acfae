//! MF R1 (ITU-T Q.320–Q.323, "Bell MF") address signalling: generation and streaming
//! detection for 8 kHz, 16-bit mono audio.
//!
//! R1 signals are two of six frequencies (700, 900, 1100, 1300, 1500, 1700 Hz). The digits
//! 1–0 use pairs of the five lower ones; the control signals pair 1700 Hz with another:
//! KP (start of pulsing, 1100 + 1700), ST (end of pulsing, 1500 + 1700) and the spare ST'
//! (900 + 1700), ST'' (1300 + 1700), ST''' (700 + 1700). As in DAHDI's dial strings, KP is
//! written `*`, ST `#`, ST' `A`, ST'' `B` and ST''' `C`.
//!
//! # Generator
//! [`MfGenerator`] produces one signal: by default −7 dBm0 per frequency, 68 ms of tone (KP
//! 100 ms) and 68 ms of silence, the nominal Bell timings.
//!
//! # Detector
//! [`MfDetector`] runs a Goertzel filter per frequency over 80-sample windows (10 ms, a bin
//! every 100 Hz so all six frequencies sit on bin centres) that overlap by half (a new window
//! every 5 ms). A window shows a signal when:
//! - its two strongest frequencies are each at least −30 dBm0 (the receiver must work down to
//!   −25 dBm0 per frequency);
//! - they are within 7 dB of each other (6 dB twist must be accepted);
//! - every other frequency is at least 10 dB below the weaker of the two;
//! - the two carry at least 70 % of the window's energy (speech and noise spread it).
//!
//! A signal is reported ([`MfEvent::KeyDown`]) after three consecutive windows agree (20 ms of
//! steady tone: 30 ms tones are always found, 10 ms ones never) and released
//! ([`MfEvent::KeyUp`]) after two consecutive windows without it, so a 20 ms gap always
//! separates two signals. Frequencies within ±1.5 % ± 5 Hz of nominal are accepted.
//! Allocation-free and panic-free for any input; results do not depend on how the input is
//! split into calls. Proven by `codecs/tests/mf_spec.rs`.

use crate::error::CodecError;
use crate::tones::dbm0_to_peak;

/// The R1 signals in this crate's notation: digits, KP (`*`), ST (`#`), ST' (`A`), ST''
/// (`B`), ST''' (`C`).
pub const DIGITS: &str = "1234567890*#ABC";

/// The six R1 frequencies in Hz.
pub const FREQUENCIES: [f32; 6] = [700.0, 900.0, 1100.0, 1300.0, 1500.0, 1700.0];

/// (signal, lower frequency index, upper frequency index).
const PAIRS: [(char, usize, usize); 15] = [
    ('1', 0, 1),
    ('2', 0, 2),
    ('3', 1, 2),
    ('4', 0, 3),
    ('5', 1, 3),
    ('6', 2, 3),
    ('7', 0, 4),
    ('8', 1, 4),
    ('9', 2, 4),
    ('0', 3, 4),
    ('*', 2, 5),
    ('#', 4, 5),
    ('A', 1, 5),
    ('B', 3, 5),
    ('C', 0, 5),
];

fn pair_of(digit: char) -> Option<(usize, usize)> {
    let digit = digit.to_ascii_uppercase();
    PAIRS
        .iter()
        .find(|(d, _, _)| *d == digit)
        .map(|&(_, a, b)| (a, b))
}

fn signal_of(a: usize, b: usize) -> Option<char> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    PAIRS
        .iter()
        .find(|(_, x, y)| *x == lo && *y == hi)
        .map(|&(d, _, _)| d)
}

/// The (lower, upper) frequencies in Hz of an R1 signal, or `None` if `digit` is not one of
/// [`DIGITS`] (letters in either case).
pub fn digit_frequencies(digit: char) -> Option<(f32, f32)> {
    let (a, b) = pair_of(digit)?;
    Some((FREQUENCIES[a], FREQUENCIES[b]))
}

/// How signals are generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MfParams {
    /// Level of each frequency, dBm0 (G.711 µ-law reference). Default −7.
    pub level_dbm0: f32,
    /// Tone duration of a digit or ST signal, ms. Default 68.
    pub on_ms: u32,
    /// Tone duration of KP, ms. Default 100.
    pub kp_ms: u32,
    /// Silence after each signal, ms. Default 68.
    pub off_ms: u32,
}

impl Default for MfParams {
    fn default() -> Self {
        Self {
            level_dbm0: -7.0,
            on_ms: 68,
            kp_ms: 100,
            off_ms: 68,
        }
    }
}

/// Highest level accepted per frequency: both together still fit in 16 bits.
const MAX_TONE_DBM0: f32 = -3.0;

impl MfParams {
    fn validate(&self) -> Result<(), CodecError> {
        if !self.level_dbm0.is_finite() || self.level_dbm0 > MAX_TONE_DBM0 {
            return Err(CodecError::InvalidArgument(format!(
                "MF level {} dBm0 must be a finite number of at most {MAX_TONE_DBM0} dBm0",
                self.level_dbm0
            )));
        }
        Ok(())
    }
}

fn unknown_digit(c: char) -> CodecError {
    CodecError::InvalidArgument(format!(
        "{c:?} is not an MF R1 signal; use one of {DIGITS} (* = KP, # = ST, A/B/C = ST'/ST''/ST''')"
    ))
}

fn samples_for_ms(ms: u32) -> u64 {
    u64::from(ms) * u64::from(crate::SAMPLE_RATE) / 1000
}

/// Appends the tones for `digits` (each followed by its pause) to `out`. Allocates; for a
/// per-frame source use [`MfGenerator`].
pub fn generate(digits: &str, params: &MfParams, out: &mut Vec<i16>) -> Result<(), CodecError> {
    params.validate()?;
    if let Some(bad) = digits.chars().find(|&c| pair_of(c).is_none()) {
        return Err(unknown_digit(bad));
    }
    let mut block = [0i16; 160];
    for digit in digits.chars() {
        let mut generator = MfGenerator::new(digit, *params)?;
        loop {
            let n = generator.fill(&mut block);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&block[..n]);
        }
    }
    Ok(())
}

/// Streaming, allocation-free generator of one R1 signal: its tone then `off_ms` of silence.
#[derive(Debug, Clone)]
pub struct MfGenerator {
    low: crate::dtmf::Oscillator,
    high: crate::dtmf::Oscillator,
    tone_left: u64,
    silence_left: u64,
}

impl MfGenerator {
    /// A generator for `digit` (one of [`DIGITS`]).
    pub fn new(digit: char, params: MfParams) -> Result<Self, CodecError> {
        params.validate()?;
        let (lo, hi) = digit_frequencies(digit).ok_or_else(|| unknown_digit(digit))?;
        let peak = f64::from(dbm0_to_peak(params.level_dbm0));
        let on = if digit == '*' {
            params.kp_ms
        } else {
            params.on_ms
        };
        Ok(Self::with_frequencies(
            f64::from(lo),
            f64::from(hi),
            peak,
            peak,
            on,
            params.off_ms,
        ))
    }

    /// An arbitrary pair (for testing a detector off nominal); peaks in linear 16-bit units.
    pub fn with_frequencies(
        low_hz: f64,
        high_hz: f64,
        low_peak: f64,
        high_peak: f64,
        on_ms: u32,
        off_ms: u32,
    ) -> Self {
        Self {
            low: crate::dtmf::Oscillator::new(low_hz, low_peak),
            high: crate::dtmf::Oscillator::new(high_hz, high_peak),
            tone_left: samples_for_ms(on_ms),
            silence_left: samples_for_ms(off_ms),
        }
    }

    /// Samples left (tone plus pause).
    pub fn remaining(&self) -> u64 {
        self.tone_left + self.silence_left
    }

    /// Writes the next samples into `out`; returns how many (0 once complete).
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        for slot in out.iter_mut() {
            if self.tone_left > 0 {
                self.tone_left -= 1;
                *slot = crate::dtmf::saturate(self.low.next() + self.high.next());
            } else if self.silence_left > 0 {
                self.silence_left -= 1;
                *slot = 0;
            } else {
                break;
            }
            written += 1;
        }
        written
    }
}

/// A signal starting or ending, with sample positions counted from the detector's creation
/// (or last reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfEvent {
    /// A signal was recognised; `at_sample` estimates the start of its tone.
    KeyDown {
        /// One of [`DIGITS`].
        digit: char,
        /// Estimated first sample of the tone.
        at_sample: u64,
    },
    /// The signal's tone ended.
    KeyUp {
        /// One of [`DIGITS`].
        digit: char,
        /// Estimated end of the tone (exclusive).
        at_sample: u64,
        /// The matching key-down's `at_sample`.
        started_at: u64,
    },
}

const HALF: usize = 40;
const WINDOW: usize = 2 * HALF;
const HITS_TO_PRESS: u32 = 3;
const MISSES_TO_RELEASE: u32 = 2;
const MIN_TONE_DBM0: f32 = -30.0;
const MAX_TWIST_DB: f32 = 7.0;
const OTHERS_BELOW_DB: f32 = 10.0;
const MIN_TONE_SHARE: f32 = 0.7;
const HOLD_TONE_SHARE: f32 = 0.4;

#[derive(Debug, Clone, Copy, Default)]
struct Cplx {
    re: f32,
    im: f32,
}

/// Streaming MF R1 detector (see the module docs).
#[derive(Debug, Clone)]
pub struct MfDetector {
    coef: [f32; 6],
    cos: [f32; 6],
    sin: [f32; 6],
    rot_half: [Cplx; 6],
    s1: [f32; 6],
    s2: [f32; 6],
    half_energy: f32,
    half_fill: usize,
    prev_half: [Cplx; 6],
    prev_half_energy: f32,
    have_prev_half: bool,
    samples: u64,
    candidate: Option<char>,
    candidate_hits: u32,
    candidate_start: u64,
    held: Option<char>,
    held_start: u64,
    held_misses: u32,
    held_last_end: u64,
    min_power: f32,
    twist: f32,
    others: f32,
}

impl Default for MfDetector {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Signal(char),
    Weak(char),
    Nothing,
}

impl MfDetector {
    /// A detector with the thresholds of the module docs.
    pub fn new() -> Self {
        let mut coef = [0.0; 6];
        let mut cos = [0.0; 6];
        let mut sin = [0.0; 6];
        let mut rot_half = [Cplx::default(); 6];
        for (i, f) in FREQUENCIES.iter().enumerate() {
            let w = f64::from(*f) * std::f64::consts::TAU / f64::from(crate::SAMPLE_RATE);
            coef[i] = (2.0 * w.cos()) as f32;
            cos[i] = w.cos() as f32;
            sin[i] = w.sin() as f32;
            let a = w * HALF as f64;
            rot_half[i] = Cplx {
                re: a.cos() as f32,
                im: (-a.sin()) as f32,
            };
        }
        let min_peak = dbm0_to_peak(MIN_TONE_DBM0);
        Self {
            coef,
            cos,
            sin,
            rot_half,
            s1: [0.0; 6],
            s2: [0.0; 6],
            half_energy: 0.0,
            half_fill: 0,
            prev_half: [Cplx::default(); 6],
            prev_half_energy: 0.0,
            have_prev_half: false,
            samples: 0,
            candidate: None,
            candidate_hits: 0,
            candidate_start: 0,
            held: None,
            held_start: 0,
            held_misses: 0,
            held_last_end: 0,
            min_power: min_peak * min_peak / 2.0,
            twist: 10f32.powf(MAX_TWIST_DB / 10.0),
            others: 10f32.powf(OTHERS_BELOW_DB / 10.0),
        }
    }

    /// Forgets all state (a held signal is dropped silently).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Samples consumed since creation or the last reset.
    pub fn samples_processed(&self) -> u64 {
        self.samples
    }

    /// The signal currently held, if any.
    pub fn held_digit(&self) -> Option<char> {
        self.held
    }

    /// Analyses `samples` and reports signals starting and ending to `on_event`.
    pub fn process(&mut self, samples: &[i16], mut on_event: impl FnMut(MfEvent)) {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (HALF - self.half_fill).min(rest.len());
            let (now, later) = rest.split_at(take);
            rest = later;
            for &x in now {
                let x = f32::from(x);
                self.half_energy += x * x;
                for i in 0..6 {
                    let s0 = x + self.coef[i] * self.s1[i] - self.s2[i];
                    self.s2[i] = self.s1[i];
                    self.s1[i] = s0;
                }
            }
            self.half_fill += take;
            self.samples += take as u64;
            if self.half_fill == HALF {
                self.end_half(&mut on_event);
            }
        }
    }

    /// End of stream: reports the key-up of a signal still held.
    pub fn finish(&mut self, mut on_event: impl FnMut(MfEvent)) {
        if let Some(digit) = self.held.take() {
            on_event(MfEvent::KeyUp {
                digit,
                at_sample: self.samples.max(self.held_start),
                started_at: self.held_start,
            });
        }
        self.candidate = None;
        self.candidate_hits = 0;
        self.held_misses = 0;
    }

    fn end_half(&mut self, on_event: &mut impl FnMut(MfEvent)) {
        let mut half = [Cplx::default(); 6];
        for (i, y) in half.iter_mut().enumerate() {
            *y = Cplx {
                re: self.s1[i] - self.cos[i] * self.s2[i],
                im: self.sin[i] * self.s2[i],
            };
        }
        let energy = self.half_energy;
        self.s1 = [0.0; 6];
        self.s2 = [0.0; 6];
        self.half_energy = 0.0;
        self.half_fill = 0;
        if self.have_prev_half {
            let mut power = [0.0f32; 6];
            let n = WINDOW as f32;
            for (i, p) in power.iter_mut().enumerate() {
                let r = self.rot_half[i];
                let late = Cplx {
                    re: half[i].re * r.re - half[i].im * r.im,
                    im: half[i].re * r.im + half[i].im * r.re,
                };
                let re = self.prev_half[i].re + late.re;
                let im = self.prev_half[i].im + late.im;
                *p = (re * re + im * im) * 2.0 / (n * n);
            }
            let verdict = self.judge(&power, self.prev_half_energy + energy);
            let end = self.samples;
            self.advance(verdict, end, on_event);
        }
        self.prev_half = half;
        self.prev_half_energy = energy;
        self.have_prev_half = true;
    }

    fn judge(&self, power: &[f32; 6], energy: f32) -> Verdict {
        if energy <= 0.0 {
            return Verdict::Nothing;
        }
        let mut order = [0usize, 1, 2, 3, 4, 5];
        order.sort_unstable_by(|&a, &b| power[b].total_cmp(&power[a]));
        let (a, b) = (order[0], order[1]);
        let (pa, pb) = (power[a], power[b]);
        if pb < self.min_power || pb * self.twist < pa {
            return Verdict::Nothing;
        }
        let Some(digit) = signal_of(a, b) else {
            return Verdict::Nothing;
        };
        let mean = energy / WINDOW as f32;
        let share = (pa + pb) / mean;
        if share < HOLD_TONE_SHARE {
            return Verdict::Nothing;
        }
        let others_ok = order[2..].iter().all(|&i| power[i] * self.others <= pb);
        if share >= MIN_TONE_SHARE && others_ok {
            Verdict::Signal(digit)
        } else if self.held == Some(digit) {
            Verdict::Weak(digit)
        } else {
            Verdict::Nothing
        }
    }

    fn advance(&mut self, verdict: Verdict, end: u64, on_event: &mut impl FnMut(MfEvent)) {
        let start = end.saturating_sub(WINDOW as u64);
        if let Some(held) = self.held {
            let still = matches!(verdict, Verdict::Signal(d) | Verdict::Weak(d) if d == held);
            if still {
                self.held_misses = 0;
                self.held_last_end = end;
                return;
            }
            self.held_misses += 1;
            if self.held_misses < MISSES_TO_RELEASE {
                return;
            }
            // The tone ended about half a window after the last window that held it began.
            let at = self.held_last_end.saturating_sub(HALF as u64);
            on_event(MfEvent::KeyUp {
                digit: held,
                at_sample: at.max(self.held_start),
                started_at: self.held_start,
            });
            self.held = None;
            self.held_misses = 0;
            self.candidate = None;
            self.candidate_hits = 0;
        }
        match verdict {
            Verdict::Signal(d) => {
                if self.candidate == Some(d) {
                    self.candidate_hits += 1;
                } else {
                    self.candidate = Some(d);
                    self.candidate_hits = 1;
                    // The first window that holds it starts about half a window into the tone.
                    self.candidate_start = start + HALF as u64;
                }
                if self.candidate_hits >= HITS_TO_PRESS {
                    let at = self.candidate_start.saturating_sub(HALF as u64 / 2);
                    on_event(MfEvent::KeyDown {
                        digit: d,
                        at_sample: at,
                    });
                    self.held = Some(d);
                    self.held_start = at;
                    self.held_last_end = end;
                    self.held_misses = 0;
                    self.candidate = None;
                    self.candidate_hits = 0;
                }
            }
            _ => {
                self.candidate = None;
                self.candidate_hits = 0;
            }
        }
    }
}
