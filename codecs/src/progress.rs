//! Call-progress tone detection: busy and congestion (reorder) by their frequencies and
//! cadence, for a country's tone plan ([`crate::tones`]).
//!
//! A [`ProgressDetector`] cuts the audio into 20 ms blocks. In each block it measures the
//! energy at the plan's busy-tone frequencies with the Goertzel algorithm and calls the block
//! "tone" when those frequencies carry most of the block's energy (at least [`PURITY`]), above
//! a floor ([`MIN_LEVEL_DBM0`]), and — for a dual tone — with each component present (within
//! [`MAX_TWIST_DB`] of the other). Runs of tone and no-tone blocks are segments; when the last
//! four segments (on, off, on, off) match the busy or the congestion cadence of the plan, each
//! within [`CADENCE_TOLERANCE`] (at least [`CADENCE_SLACK_MS`]), the tone is reported once.
//!
//! A continuous tone (dial tone), ringback (long on, longer off), and speech (no steady
//! energy at the exact frequencies, no regular cadence) never match. Detection takes two
//! cycles: about 2 s for a 0.5/0.5 s busy tone, 1 s for a 0.25/0.25 s congestion tone.
//!
//! No allocation: the state is a few fixed arrays, so the TDM span thread can run it.

use crate::tones::{Country, ToneKind, ToneSpec, dbm0_to_peak, spec};

/// Samples per analysis block (20 ms at 8 kHz).
const BLOCK: usize = crate::FRAME_SAMPLES;
/// Milliseconds per block.
const BLOCK_MS: u32 = 20;
/// Share of a block's energy the tone's frequencies must carry.
pub const PURITY: f32 = 0.6;
/// Weakest tone accepted (all components together), dBm0.
pub const MIN_LEVEL_DBM0: f32 = -42.0;
/// Largest level difference between the two components of a dual tone, dB.
pub const MAX_TWIST_DB: f32 = 10.0;
/// Relative tolerance of each cadence segment.
pub const CADENCE_TOLERANCE: f32 = 0.2;
/// Smallest absolute tolerance of a cadence segment, ms (covers 20 ms block edges).
pub const CADENCE_SLACK_MS: u32 = 60;
/// Segments compared against a cadence (on, off, on, off).
const MATCH_SEGMENTS: usize = 4;

/// Detects busy and congestion tones of one country's plan (see the module docs).
#[derive(Debug, Clone)]
pub struct ProgressDetector {
    country: Country,
    /// Goertzel coefficients (2 cos ω) of the busy tone's frequencies.
    coeff: [f32; 2],
    voices: usize,
    s1: [f32; 2],
    s2: [f32; 2],
    energy: f32,
    fill: usize,
    /// Least tone energy per block.
    min_energy: f32,
    /// The current segment: tone or not, and its length so far.
    on: bool,
    run_ms: u32,
    /// Completed segment lengths, oldest first; `segments[len-1]` is the newest.
    segments: [u32; MATCH_SEGMENTS],
    len: usize,
    /// Whether the newest completed segment was a tone segment.
    newest_on: bool,
    /// Whether a segment has completed since the start (the first one may be cut).
    started: bool,
    detected: Option<ToneKind>,
}

impl ProgressDetector {
    /// A detector for `country`'s busy and congestion tones.
    pub fn new(country: Country) -> Self {
        let busy = spec(country, ToneKind::Busy);
        let mut coeff = [0.0; 2];
        let voices = busy.frequencies.len().min(2);
        for (c, f) in coeff.iter_mut().zip(busy.frequencies) {
            let w = 2.0 * std::f32::consts::PI * f / crate::SAMPLE_RATE as f32;
            *c = 2.0 * w.cos();
        }
        // Mean power of a sine of peak A is A²/2; over a block, A²·BLOCK/2.
        let peak = dbm0_to_peak(MIN_LEVEL_DBM0);
        Self {
            country,
            coeff,
            voices,
            s1: [0.0; 2],
            s2: [0.0; 2],
            energy: 0.0,
            fill: 0,
            min_energy: peak * peak * BLOCK as f32 / 2.0,
            on: false,
            run_ms: 0,
            segments: [0; MATCH_SEGMENTS],
            len: 0,
            newest_on: false,
            started: false,
            detected: None,
        }
    }

    /// The plan this detector listens for.
    pub fn country(&self) -> Country {
        self.country
    }

    /// Starts over (a new call, or after a detection).
    pub fn reset(&mut self) {
        *self = Self::new(self.country);
    }

    /// What was detected since the last reset, if anything.
    pub fn detected(&self) -> Option<ToneKind> {
        self.detected
    }

    /// Feeds received audio (any length); returns the tone at the moment it is recognised
    /// (once per reset).
    pub fn process(&mut self, samples: &[i16]) -> Option<ToneKind> {
        let mut found = None;
        for &s in samples {
            let x = f32::from(s);
            self.energy += x * x;
            for i in 0..self.voices {
                let s0 = x + self.coeff[i] * self.s1[i] - self.s2[i];
                self.s2[i] = self.s1[i];
                self.s1[i] = s0;
            }
            self.fill += 1;
            if self.fill == BLOCK {
                let on = self.block_has_tone();
                self.fill = 0;
                self.energy = 0.0;
                self.s1 = [0.0; 2];
                self.s2 = [0.0; 2];
                if let Some(kind) = self.advance(on) {
                    found = Some(kind);
                }
            }
        }
        found
    }

    fn block_has_tone(&self) -> bool {
        let mut parts = [0.0f32; 2];
        for (i, part) in parts.iter_mut().enumerate().take(self.voices) {
            let (s1, s2, c) = (self.s1[i], self.s2[i], self.coeff[i]);
            let power = s1 * s1 + s2 * s2 - c * s1 * s2;
            // |X|² ≈ (A·N/2)² for a sine of peak A; its energy in the block is A²·N/2.
            *part = 2.0 * power / BLOCK as f32;
        }
        let tone: f32 = parts.iter().sum();
        if tone < self.min_energy || tone < PURITY * self.energy {
            return false;
        }
        if self.voices == 2 {
            let ratio = 10f32.powf(-MAX_TWIST_DB / 10.0);
            let (lo, hi) = (parts[0].min(parts[1]), parts[0].max(parts[1]));
            if lo < ratio * hi {
                return false;
            }
        }
        true
    }

    fn advance(&mut self, on: bool) -> Option<ToneKind> {
        if on == self.on {
            self.run_ms = self.run_ms.saturating_add(BLOCK_MS);
            return None;
        }
        // A segment ended. The very first one may have begun before we listened.
        let ended = self.run_ms;
        let was_on = self.on;
        self.on = on;
        self.run_ms = BLOCK_MS;
        if !self.started {
            self.started = true;
            return None;
        }
        if self.len == MATCH_SEGMENTS {
            self.segments.copy_within(1.., 0);
            self.len -= 1;
        }
        if let Some(slot) = self.segments.get_mut(self.len) {
            *slot = ended;
            self.len += 1;
        }
        self.newest_on = was_on;
        // Judge when a silence ends: the last four segments are on, off, on, off.
        if was_on || self.len < MATCH_SEGMENTS || self.detected.is_some() {
            return None;
        }
        for kind in [ToneKind::Busy, ToneKind::Congestion] {
            if cadence_matches(spec(self.country, kind), &self.segments) {
                self.detected = Some(kind);
                return Some(kind);
            }
        }
        None
    }
}

/// Whether `segments` (on, off, on, off, ...) follow `tone`'s cadence from one of its "on"
/// entries.
fn cadence_matches(tone: &ToneSpec, segments: &[u32]) -> bool {
    let cadence = tone.cadence_ms;
    if cadence.is_empty() || cadence.len() % 2 != 0 {
        return false;
    }
    (0..cadence.len()).step_by(2).any(|start| {
        segments.iter().enumerate().all(|(j, &got)| {
            let want = cadence
                .get((start + j) % cadence.len())
                .copied()
                .unwrap_or(0);
            within(got, want)
        })
    })
}

fn within(got: u32, want: u32) -> bool {
    let slack = ((want as f32 * CADENCE_TOLERANCE) as u32).max(CADENCE_SLACK_MS);
    got.abs_diff(want) <= slack
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tones::ToneGenerator;

    fn detect(country: Country, tone: Country, kind: ToneKind, ms: usize) -> Option<ToneKind> {
        let mut g = ToneGenerator::new(tone, kind);
        let mut d = ProgressDetector::new(country);
        let mut buf = [0i16; 80];
        let mut found = None;
        for _ in 0..ms / 10 {
            g.fill(&mut buf);
            found = found.or(d.process(&buf));
        }
        found
    }

    #[test]
    fn every_plan_detects_its_own_busy_and_congestion() {
        for c in Country::ALL {
            assert_eq!(
                detect(c, c, ToneKind::Busy, 4000),
                Some(ToneKind::Busy),
                "{c}"
            );
            assert_eq!(
                detect(c, c, ToneKind::Congestion, 4000),
                Some(ToneKind::Congestion),
                "{c}"
            );
            assert_eq!(detect(c, c, ToneKind::Dial, 8000), None, "{c} dial");
            assert_eq!(detect(c, c, ToneKind::Ringback, 20000), None, "{c} ring");
        }
    }

    #[test]
    fn busy_and_congestion_share_frequencies_in_every_plan() {
        // The detector measures the busy tone's frequencies for both.
        for c in Country::ALL {
            assert_eq!(
                spec(c, ToneKind::Busy).frequencies,
                spec(c, ToneKind::Congestion).frequencies,
                "{c}"
            );
        }
    }

    #[test]
    fn cadence_tolerance_separates_busy_from_congestion() {
        let busy = spec(Country::Us, ToneKind::Busy);
        assert!(cadence_matches(busy, &[520, 480, 440, 560]));
        assert!(!cadence_matches(busy, &[260, 240, 250, 250]));
        let uk = spec(Country::Uk, ToneKind::Congestion);
        assert!(cadence_matches(uk, &[400, 350, 225, 525]));
        assert!(cadence_matches(uk, &[225, 525, 400, 350]));
        assert!(!cadence_matches(uk, &[225, 350, 400, 525]));
    }
}
