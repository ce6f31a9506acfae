//! DTMF (ITU-T Q.23) digit generation and streaming detection for 8 kHz, 16-bit mono audio.
//!
//! # Levels
//!
//! Levels are in dBm0 with the ITU-T G.711 µ-law convention: **0 dBm0 ≙ a sine of peak
//! amplitude 22 737 in 16-bit (µ-law-aligned) PCM**, i.e. a full-scale sine (peak 32 767) is
//! +3.17 dBm0 (see [`crate::tones::FULL_SCALE_SINE_DBM0`] and [`crate::tones::dbm0_to_peak`]).
//! So −10 dBm0 is a peak of about 7 190 and −26 dBm0 about 1 139.
//!
//! # Detector
//!
//! [`DtmfDetector`] runs a Goertzel filter per DTMF frequency over 102-sample windows (12.75 ms,
//! the block length used by spandsp and common Q.24 practice) that overlap by half (a new window
//! every 51 samples; each sample enters the eight filters once, the two halves of a window are
//! combined as complex sums). Each window is judged on the Q.24 criteria:
//! - both tones at least −33 dBm0;
//! - twist within 10.5 dB normal (high tone weaker) and 6 dB reverse — the required 8 dB / 4 dB
//!   plus a margin for leakage between the tones through the rectangular window;
//! - each tone at least 6 dB above the other frequencies of its group;
//! - the two tones carrying at least 70 % of the window's energy (speech and music spread it);
//! - steady energy across the window's two halves;
//! - each tone's frequency, measured from its phase advance between successive windows, within
//!   ±2.5 % of nominal (between the ±1.5 % that must be accepted and the ±3.5 % that must be
//!   rejected).
//!
//! A digit is reported ([`DtmfEvent::KeyDown`]) after four consecutive windows agree (about 25 ms
//! of steady tone, so tones shorter than ~23 ms are rejected and 40 ms tones are always found)
//! and released ([`DtmfEvent::KeyUp`]) after three consecutive windows without it (looser
//! criteria hold a digit once pressed), so a 10 ms break does not split a digit while a 40 ms
//! pause always separates two. Timestamps are estimated to within a few milliseconds of the
//! tone's edges. Results do not depend on how the input is split into calls.
//!
//! Proven by `codecs/tests/dtmf_spec.rs` (acceptance figures), `dtmf_edge_cases.rs`,
//! `dtmf_spandsp.rs` (interop with spandsp both ways) and `dtmf_talkoff.rs` (no digit in 670 s of
//! synthetic speech and 102 s of music-like signals).

use crate::error::CodecError;
use crate::tones::dbm0_to_peak;

/// The sixteen DTMF digits in keypad order (rows 697, 770, 852, 941 Hz; columns 1209, 1336,
/// 1477, 1633 Hz).
pub const DIGITS: &str = "123A456B789C*0#D";

/// Low-group (row) frequencies in Hz.
pub const ROW_FREQUENCIES: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz.
pub const COLUMN_FREQUENCIES: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// The (row, column) frequencies in Hz of a DTMF digit, or `None` if `digit` is not one of
/// [`DIGITS`]. Letters are accepted in either case.
pub fn digit_frequencies(digit: char) -> Option<(f32, f32)> {
    let (row, col) = digit_position(digit)?;
    Some((ROW_FREQUENCIES[row], COLUMN_FREQUENCIES[col]))
}

fn digit_position(digit: char) -> Option<(usize, usize)> {
    let digit = digit.to_ascii_uppercase();
    KEYPAD
        .iter()
        .enumerate()
        .find_map(|(row, keys)| keys.iter().position(|&k| k == digit).map(|col| (row, col)))
}

/// How digits are generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DtmfParams {
    /// Level of the low (row) tone in dBm0 (G.711 µ-law reference, see the module docs).
    /// Default −10.
    pub level_dbm0: f32,
    /// Level of the high (column) tone minus the low tone, in dB. Default 0. Negative values
    /// ("normal" twist) make the high tone weaker.
    pub twist_db: f32,
    /// Tone duration per digit in milliseconds. Default 80.
    pub on_ms: u32,
    /// Silence after each digit in milliseconds. Default 80.
    pub off_ms: u32,
}

impl Default for DtmfParams {
    fn default() -> Self {
        Self {
            level_dbm0: -10.0,
            twist_db: 0.0,
            on_ms: 80,
            off_ms: 80,
        }
    }
}

/// Highest level accepted for either tone: the two tones together then still fit in 16 bits.
const MAX_TONE_DBM0: f32 = -3.0;

impl DtmfParams {
    fn validate(&self) -> Result<(), CodecError> {
        let high = self.level_dbm0 + self.twist_db;
        if !self.level_dbm0.is_finite() || !self.twist_db.is_finite() {
            return Err(CodecError::InvalidArgument(format!(
                "DTMF level {} dBm0 and twist {} dB must be finite numbers",
                self.level_dbm0, self.twist_db
            )));
        }
        if self.level_dbm0 > MAX_TONE_DBM0 || high > MAX_TONE_DBM0 {
            return Err(CodecError::InvalidArgument(format!(
                "DTMF tone levels {} and {} dBm0 are too loud: each tone must be at most \
                 {MAX_TONE_DBM0} dBm0",
                self.level_dbm0, high
            )));
        }
        Ok(())
    }
}

/// Appends the tones for `digits` (each followed by its pause) to `out`.
///
/// Fails with [`CodecError::InvalidArgument`] on a character outside [`DIGITS`] (letters in
/// either case are fine) or on levels that are not finite or too loud; `out` is then unchanged.
/// This allocates; for a per-frame, allocation-free source use [`DtmfGenerator`].
pub fn generate(digits: &str, params: &DtmfParams, out: &mut Vec<i16>) -> Result<(), CodecError> {
    params.validate()?;
    if let Some(bad) = digits.chars().find(|&c| digit_position(c).is_none()) {
        return Err(unknown_digit(bad));
    }
    let per_digit = samples_for_ms(params.on_ms).saturating_add(samples_for_ms(params.off_ms));
    out.reserve(
        usize::try_from(per_digit)
            .unwrap_or(0)
            .saturating_mul(digits.len()),
    );
    let mut block = [0i16; 160];
    for digit in digits.chars() {
        let mut generator = DtmfGenerator::new(digit, *params)?;
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

fn unknown_digit(c: char) -> CodecError {
    CodecError::InvalidArgument(format!(
        "{c:?} is not a DTMF digit; use one of {DIGITS} (letters in either case)"
    ))
}

fn samples_for_ms(ms: u32) -> u64 {
    u64::from(ms) * u64::from(crate::SAMPLE_RATE) / 1000
}

/// A sine oscillator with an exact phase accumulator (no drift over long runs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Oscillator {
    /// Phase in turns, in [0, 1).
    phase: f64,
    /// Phase increment per sample, in turns.
    step: f64,
    amplitude: f64,
}

impl Oscillator {
    pub(crate) fn new(freq_hz: f64, peak: f64) -> Self {
        Self {
            phase: 0.0,
            step: freq_hz / f64::from(crate::SAMPLE_RATE),
            amplitude: peak,
        }
    }

    #[inline]
    pub(crate) fn next(&mut self) -> f64 {
        let v = self.amplitude * (std::f64::consts::TAU * self.phase).sin();
        self.phase += self.step;
        if self.phase >= 1.0 {
            self.phase -= 1.0;
        }
        v
    }
}

#[inline]
pub(crate) fn saturate(v: f64) -> i16 {
    // `as` saturates for floats; round to nearest first.
    v.round() as i16
}

/// Streaming, allocation-free generator of one digit: `on_ms` of tone then `off_ms` of silence.
#[derive(Debug, Clone)]
pub struct DtmfGenerator {
    low: Oscillator,
    high: Oscillator,
    tone_left: u64,
    silence_left: u64,
}

impl DtmfGenerator {
    /// A generator for `digit` (one of [`DIGITS`], letters in either case).
    ///
    /// Fails with [`CodecError::InvalidArgument`] on an unknown digit or invalid levels.
    pub fn new(digit: char, params: DtmfParams) -> Result<Self, CodecError> {
        params.validate()?;
        let (row, col) = digit_frequencies(digit).ok_or_else(|| unknown_digit(digit))?;
        let low_peak = f64::from(dbm0_to_peak(params.level_dbm0));
        let high_peak = f64::from(dbm0_to_peak(params.level_dbm0 + params.twist_db));
        Ok(Self::with_frequencies(
            f64::from(row),
            f64::from(col),
            low_peak,
            high_peak,
            params,
        ))
    }

    /// A generator for an arbitrary tone pair (e.g. off-nominal frequencies for testing a
    /// detector); peaks are in linear 16-bit units (see [`crate::tones::dbm0_to_peak`]), only
    /// `on_ms` and `off_ms` of `params` are used.
    pub fn with_frequencies(
        low_hz: f64,
        high_hz: f64,
        low_peak: f64,
        high_peak: f64,
        params: DtmfParams,
    ) -> Self {
        Self {
            low: Oscillator::new(low_hz, low_peak),
            high: Oscillator::new(high_hz, high_peak),
            tone_left: samples_for_ms(params.on_ms),
            silence_left: samples_for_ms(params.off_ms),
        }
    }

    /// Samples left to produce (tone plus pause).
    pub fn remaining(&self) -> u64 {
        self.tone_left + self.silence_left
    }

    /// Writes the next samples into `out`; returns how many were written (less than
    /// `out.len()` only at the end, 0 once the digit and its pause are complete).
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        for slot in out.iter_mut() {
            if self.tone_left > 0 {
                self.tone_left -= 1;
                *slot = saturate(self.low.next() + self.high.next());
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

/// A digit starting or ending, with sample positions counted from the detector's creation (or
/// last [`DtmfDetector::reset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEvent {
    /// A digit was recognised; `at_sample` is the estimated start of its tone.
    KeyDown {
        /// The digit, one of [`DIGITS`].
        digit: char,
        /// Estimated first sample of the tone.
        at_sample: u64,
    },
    /// The digit's tone ended; `at_sample` is the estimated first sample after it.
    KeyUp {
        /// The digit, one of [`DIGITS`].
        digit: char,
        /// Estimated end of the tone (exclusive).
        at_sample: u64,
        /// The `at_sample` of the matching [`DtmfEvent::KeyDown`].
        started_at: u64,
    },
}

/// Samples per half window (the hop between windows).
const HALF: usize = 51;
/// Samples per analysis window.
const WINDOW: usize = 2 * HALF;
/// Consecutive matching windows before a key-down.
const HITS_TO_PRESS: u32 = 4;
/// Consecutive windows without the digit before a key-up: three hops (19 ms) bridge a 10 ms
/// break in the tone (Q.24) yet release well inside a 40 ms pause.
const MISSES_TO_RELEASE: u32 = 3;

/// Minimum level of each tone (dBm0).
const MIN_TONE_DBM0: f32 = -33.0;
/// Largest accepted normal twist (high tone weaker), dB: the 8 dB of the requirement plus a
/// margin for the leakage of the strong tone into the weak one's bin through the rectangular
/// 102-sample window (up to about ±2 dB for 941 Hz next to a weak 1209 Hz).
const MAX_NORMAL_TWIST_DB: f32 = 10.5;
/// Largest accepted reverse twist (low tone weaker), dB: 4 dB plus the same kind of margin.
const MAX_REVERSE_TWIST_DB: f32 = 6.0;
/// How far the strongest tone of a group must exceed the others of that group, dB.
const RELATIVE_PEAK_DB: f32 = 6.0;
/// Share of the window's energy the two tones must carry. A clean digit at the ±1.5 % frequency
/// limit still gives about 0.8 (the 1633 Hz bin loses a quarter of a tone 24 Hz off-centre), so
/// 0.75 would leave little margin there. Speech rarely exceeds 0.65: over the 772 s of
/// `tests/dtmf_talkoff.rs`, 53 windows pass every other criterion at 0.6 and 13 at 0.7, never
/// two in a row (a key-down needs four).
const MIN_TONE_SHARE: f32 = 0.7;
/// Share kept while a digit is held (hysteresis).
const HOLD_TONE_SHARE: f32 = 0.4;
/// The weaker half of a window must carry at least this fraction of the stronger's energy.
const MIN_HALF_BALANCE: f32 = 0.5;
/// Largest accepted deviation of a measured tone frequency from nominal.
const MAX_FREQ_DEVIATION: f32 = 0.025;

fn db_to_power_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

#[derive(Debug, Clone, Copy, Default)]
struct Complex {
    re: f32,
    im: f32,
}

impl Complex {
    #[inline]
    fn mul(self, o: Complex) -> Complex {
        Complex {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    #[inline]
    fn mul_conj(self, o: Complex) -> Complex {
        Complex {
            re: self.re * o.re + self.im * o.im,
            im: self.im * o.re - self.re * o.im,
        }
    }
    #[inline]
    fn norm_sqr(self) -> f32 {
        self.re * self.re + self.im * self.im
    }
}

/// Per-frequency constants.
#[derive(Debug, Clone, Copy)]
struct Bins {
    /// 2 cos ω.
    coef: [f32; 8],
    /// cos ω, sin ω.
    cos: [f32; 8],
    sin: [f32; 8],
    /// e^{-jω·HALF}: rotates the second half's sum onto the first half's time origin.
    rot_half: [Complex; 8],
    /// ω in radians per sample.
    omega: [f32; 8],
}

impl Bins {
    fn new() -> Self {
        let mut b = Bins {
            coef: [0.0; 8],
            cos: [0.0; 8],
            sin: [0.0; 8],
            rot_half: [Complex::default(); 8],
            omega: [0.0; 8],
        };
        for (i, f) in ROW_FREQUENCIES
            .iter()
            .chain(COLUMN_FREQUENCIES.iter())
            .enumerate()
        {
            let w = f64::from(*f) * std::f64::consts::TAU / f64::from(crate::SAMPLE_RATE);
            b.omega[i] = w as f32;
            b.coef[i] = (2.0 * w.cos()) as f32;
            b.cos[i] = w.cos() as f32;
            b.sin[i] = w.sin() as f32;
            let a = w * HALF as f64;
            b.rot_half[i] = Complex {
                re: a.cos() as f32,
                im: (-a.sin()) as f32,
            };
        }
        b
    }
}

/// What one window looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// A digit passing every onset criterion (strict).
    Digit(char),
    /// A digit passing only the looser hold criteria.
    Weak(char),
    /// No digit.
    Nothing,
}

/// Streaming DTMF detector (see the module docs for the method).
///
/// Feed any number of samples per [`process`](Self::process) call; events are passed to the
/// callback as soon as they are certain. Allocation-free and panic-free for any input.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    bins: Bins,
    /// Goertzel state for the current half window.
    s1: [f32; 8],
    s2: [f32; 8],
    half_energy: f32,
    half_fill: usize,
    /// Complex sums of the previous half (relative to its own first sample).
    prev_half: [Complex; 8],
    prev_half_energy: f32,
    have_prev_half: bool,
    /// Complex DFT values of the previous window, for the phase-advance frequency check.
    prev_window: [Complex; 8],
    have_prev_window: bool,
    /// Samples consumed so far.
    samples: u64,
    /// Candidate digit and its run of strict hits.
    candidate: Option<char>,
    candidate_hits: u32,
    candidate_start: u64,
    /// Digit currently held down.
    held: Option<char>,
    held_start: u64,
    held_misses: u32,
    held_last_end: u64,
    min_tone_power: f32,
    normal_twist: f32,
    reverse_twist: f32,
    relative_peak: f32,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfDetector {
    /// A detector with the default (Q.24-style) thresholds.
    pub fn new() -> Self {
        let min_peak = dbm0_to_peak(MIN_TONE_DBM0);
        Self {
            bins: Bins::new(),
            s1: [0.0; 8],
            s2: [0.0; 8],
            half_energy: 0.0,
            half_fill: 0,
            prev_half: [Complex::default(); 8],
            prev_half_energy: 0.0,
            have_prev_half: false,
            prev_window: [Complex::default(); 8],
            have_prev_window: false,
            samples: 0,
            candidate: None,
            candidate_hits: 0,
            candidate_start: 0,
            held: None,
            held_start: 0,
            held_misses: 0,
            held_last_end: 0,
            // Mean power of a sine is peak² / 2.
            min_tone_power: min_peak * min_peak / 2.0,
            normal_twist: db_to_power_ratio(MAX_NORMAL_TWIST_DB),
            reverse_twist: db_to_power_ratio(MAX_REVERSE_TWIST_DB),
            relative_peak: db_to_power_ratio(RELATIVE_PEAK_DB),
        }
    }

    /// Forgets all state, including the sample counter; a held digit is dropped silently (call
    /// [`finish`](Self::finish) first to get its key-up).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Samples consumed since creation or the last reset.
    pub fn samples_processed(&self) -> u64 {
        self.samples
    }

    /// The digit currently held down, if any.
    pub fn held_digit(&self) -> Option<char> {
        self.held
    }

    /// Analyses `samples` (the continuation of the stream) and reports digits starting and
    /// ending to `on_event`.
    pub fn process(&mut self, samples: &[i16], mut on_event: impl FnMut(DtmfEvent)) {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (HALF - self.half_fill).min(rest.len());
            let (now, later) = rest.split_at(take);
            rest = later;
            self.accumulate(now);
            self.half_fill += take;
            self.samples += take as u64;
            if self.half_fill == HALF {
                self.end_half(&mut on_event);
            }
        }
    }

    /// End of stream: reports the key-up of a digit still held (ending at the last sample fed).
    /// The detector can then be reused for a new stream after [`reset`](Self::reset).
    pub fn finish(&mut self, mut on_event: impl FnMut(DtmfEvent)) {
        if let Some(digit) = self.held.take() {
            on_event(DtmfEvent::KeyUp {
                digit,
                at_sample: self.samples.max(self.held_start),
                started_at: self.held_start,
            });
        }
        self.candidate = None;
        self.candidate_hits = 0;
        self.held_misses = 0;
    }

    #[inline]
    fn accumulate(&mut self, samples: &[i16]) {
        let coef = self.bins.coef;
        let mut s1 = self.s1;
        let mut s2 = self.s2;
        let mut energy = 0.0f32;
        for &x in samples {
            let x = f32::from(x);
            energy += x * x;
            for i in 0..8 {
                let s0 = x + coef[i] * s1[i] - s2[i];
                s2[i] = s1[i];
                s1[i] = s0;
            }
        }
        self.s1 = s1;
        self.s2 = s2;
        self.half_energy += energy;
    }

    fn end_half(&mut self, on_event: &mut impl FnMut(DtmfEvent)) {
        // Y = s1 - e^{-jω} s2 is the half's DFT up to a phase common to every half.
        let mut half = [Complex::default(); 8];
        for (i, y) in half.iter_mut().enumerate() {
            *y = Complex {
                re: self.s1[i] - self.bins.cos[i] * self.s2[i],
                im: self.bins.sin[i] * self.s2[i],
            };
        }
        let energy = self.half_energy;
        self.s1 = [0.0; 8];
        self.s2 = [0.0; 8];
        self.half_energy = 0.0;
        self.half_fill = 0;

        if self.have_prev_half {
            let mut window = [Complex::default(); 8];
            for i in 0..8 {
                let late = half[i].mul(self.bins.rot_half[i]);
                window[i] = Complex {
                    re: self.prev_half[i].re + late.re,
                    im: self.prev_half[i].im + late.im,
                };
            }
            let verdict = self.judge(&window, self.prev_half_energy, energy);
            self.prev_window = window;
            self.have_prev_window = true;
            // The window just analysed covers [end - WINDOW, end).
            let end = self.samples;
            self.advance(verdict, end, on_event);
        }
        self.prev_half = half;
        self.prev_half_energy = energy;
        self.have_prev_half = true;
    }

    fn judge(&self, window: &[Complex; 8], energy_a: f32, energy_b: f32) -> Verdict {
        let total = energy_a + energy_b;
        if total <= 0.0 {
            return Verdict::Nothing;
        }
        // Mean power of each tone: |X|² · 2 / N²; mean power of the window: E / N.
        let n = WINDOW as f32;
        let mut power = [0.0f32; 8];
        for (p, x) in power.iter_mut().zip(window.iter()) {
            *p = x.norm_sqr() * 2.0 / (n * n);
        }
        let mean_power = total / n;
        let (row, row_power) = strongest(&power[..4]);
        let (col, col_power) = strongest(&power[4..]);
        let digit = KEYPAD[row][col];

        if row_power < self.min_tone_power || col_power < self.min_tone_power {
            return Verdict::Nothing;
        }
        // Twist: high minus low.
        if col_power * self.normal_twist < row_power || row_power * self.reverse_twist < col_power {
            return Verdict::Nothing;
        }
        let share = (row_power + col_power) / mean_power;
        if share < HOLD_TONE_SHARE {
            return Verdict::Nothing;
        }
        let held = self.held == Some(digit);
        let dominant = |group: &[f32], best: usize| {
            group
                .iter()
                .enumerate()
                .all(|(i, &p)| i == best || p * self.relative_peak <= group[best])
        };
        if !dominant(&power[..4], row) || !dominant(&power[4..], col) {
            return if held {
                Verdict::Weak(digit)
            } else {
                Verdict::Nothing
            };
        }
        let balanced = energy_a.min(energy_b) >= MIN_HALF_BALANCE * energy_a.max(energy_b);
        let in_tune = self.have_prev_window
            && self.deviation_ok(window, row)
            && self.deviation_ok(window, 4 + col);
        if share >= MIN_TONE_SHARE && balanced && in_tune {
            Verdict::Digit(digit)
        } else if held {
            Verdict::Weak(digit)
        } else {
            Verdict::Nothing
        }
    }

    /// Whether bin `i`'s tone frequency, measured from the phase advance over one hop, is within
    /// [`MAX_FREQ_DEVIATION`] of nominal.
    fn deviation_ok(&self, window: &[Complex; 8], i: usize) -> bool {
        // X_k · conj(X_{k-1}) ≈ |·| e^{j ω0 HALF}; removing e^{j ω HALF} leaves e^{j δ HALF}.
        let advance = window[i]
            .mul_conj(self.prev_window[i])
            .mul(self.bins.rot_half[i]);
        if advance.norm_sqr() <= 0.0 {
            return false;
        }
        let delta = advance.im.atan2(advance.re) / HALF as f32;
        delta.abs() <= MAX_FREQ_DEVIATION * self.bins.omega[i]
    }

    fn advance(&mut self, verdict: Verdict, end: u64, on_event: &mut impl FnMut(DtmfEvent)) {
        let start = end.saturating_sub(WINDOW as u64);
        // Key-up bookkeeping for a held digit.
        if let Some(held) = self.held {
            let keeps = matches!(verdict, Verdict::Digit(d) | Verdict::Weak(d) if d == held);
            if keeps {
                self.held_misses = 0;
                self.held_last_end = end;
            } else {
                self.held_misses += 1;
                if self.held_misses >= MISSES_TO_RELEASE {
                    let at = self
                        .held_last_end
                        .saturating_sub(EDGE_CORRECTION)
                        .max(self.held_start);
                    on_event(DtmfEvent::KeyUp {
                        digit: held,
                        at_sample: at,
                        started_at: self.held_start,
                    });
                    self.held = None;
                    self.held_misses = 0;
                }
            }
        }
        // Key-down candidates (only strict hits count).
        match verdict {
            Verdict::Digit(d) if self.held != Some(d) => {
                if self.candidate == Some(d) {
                    self.candidate_hits += 1;
                } else {
                    self.candidate = Some(d);
                    self.candidate_hits = 1;
                    self.candidate_start = start + EDGE_CORRECTION;
                }
                if self.candidate_hits >= HITS_TO_PRESS && self.held.is_none() {
                    self.held = Some(d);
                    self.held_start = self.candidate_start;
                    self.held_misses = 0;
                    self.held_last_end = end;
                    self.candidate = None;
                    self.candidate_hits = 0;
                    on_event(DtmfEvent::KeyDown {
                        digit: d,
                        at_sample: self.held_start,
                    });
                }
            }
            Verdict::Digit(_) => {
                self.candidate = None;
                self.candidate_hits = 0;
            }
            Verdict::Weak(_) | Verdict::Nothing => {
                self.candidate = None;
                self.candidate_hits = 0;
            }
        }
    }
}

/// A window counts as a hit once roughly three quarters of it holds tone; its edges are moved
/// inwards by this much to estimate where the tone begins and ends.
const EDGE_CORRECTION: u64 = 20;

fn strongest(group: &[f32]) -> (usize, f32) {
    let mut best = 0;
    let mut best_power = f32::MIN;
    for (i, &p) in group.iter().enumerate() {
        if p > best_power {
            best = i;
            best_power = p;
        }
    }
    (best, best_power)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(samples: &[i16]) -> Vec<DtmfEvent> {
        let mut det = DtmfDetector::new();
        let mut events = Vec::new();
        det.process(samples, |e| events.push(e));
        det.finish(|e| events.push(e));
        events
    }

    #[test]
    fn every_digit_has_its_frequencies() {
        for (i, d) in DIGITS.chars().enumerate() {
            let (r, c) = digit_frequencies(d).unwrap();
            assert_eq!(r, ROW_FREQUENCIES[i / 4]);
            assert_eq!(c, COLUMN_FREQUENCIES[i % 4]);
        }
        assert_eq!(digit_frequencies('a'), digit_frequencies('A'));
        assert_eq!(digit_frequencies('x'), None);
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn window_sums_match_a_direct_dft() {
        // Feed one window of a known signal and compare the combined half sums to a direct DFT.
        let x: Vec<i16> = (0..WINDOW)
            .map(|n| ((n as f32 * 0.37).sin() * 9000.0 + (n as f32 * 1.1).cos() * 4000.0) as i16)
            .collect();
        let mut det = DtmfDetector::new();
        det.process(&x[..HALF], |_| {});
        let first = det.prev_half;
        det.process(&x[HALF..], |_| {});
        for i in 0..8 {
            let w = f64::from(det.bins.omega[i]);
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (n, &v) in x.iter().enumerate() {
                re += f64::from(v) * (w * n as f64).cos();
                im -= f64::from(v) * (w * n as f64).sin();
            }
            let late = det.prev_half[i].mul(det.bins.rot_half[i]);
            let ours = Complex {
                re: first[i].re + late.re,
                im: first[i].im + late.im,
            };
            // Ours equals the DFT up to the common factor e^{-jω(HALF-1)}: compare magnitudes.
            let a = f64::from(ours.norm_sqr()).sqrt();
            let b = (re * re + im * im).sqrt();
            assert!((a - b).abs() <= 1e-3 * b.max(1.0), "bin {i}: {a} vs {b}");
        }
    }

    #[test]
    fn silence_and_empty_input_report_nothing() {
        assert!(detect(&[]).is_empty());
        assert!(detect(&[0; 8000]).is_empty());
    }

    #[test]
    fn one_digit_gives_one_press_and_release() {
        let mut s = Vec::new();
        generate("5", &DtmfParams::default(), &mut s).unwrap();
        let events = detect(&s);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(events[0], DtmfEvent::KeyDown { digit: '5', .. }));
        assert!(matches!(events[1], DtmfEvent::KeyUp { digit: '5', .. }));
    }

    #[test]
    fn unknown_digit_is_rejected() {
        let mut s = Vec::new();
        let err = generate("12x", &DtmfParams::default(), &mut s).unwrap_err();
        assert!(matches!(err, CodecError::InvalidArgument(_)));
        assert!(s.is_empty());
        assert!(DtmfGenerator::new('E', DtmfParams::default()).is_err());
    }

    #[test]
    fn too_loud_levels_are_rejected() {
        let p = DtmfParams {
            level_dbm0: 3.0,
            ..DtmfParams::default()
        };
        assert!(DtmfGenerator::new('1', p).is_err());
        let p = DtmfParams {
            level_dbm0: f32::NAN,
            ..DtmfParams::default()
        };
        assert!(DtmfGenerator::new('1', p).is_err());
    }
}
