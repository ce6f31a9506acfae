//! Packet-loss concealment for G.711 streams, after the method of G.711 Appendix I: a lost frame
//! is filled by repeating the last pitch period of the received signal, smoothed where the
//! repetition wraps, faded out when the loss goes on, and cross-faded back into the first
//! received frame so that neither edge of the gap clicks.
//!
//! Differences from Appendix I, deliberately: no 3.75 ms output delay (the media path must not
//! add latency for the no-loss case). Instead the pitch period is chosen by normalised
//! cross-correlation so that the sample that follows the last real one is the one a period
//! earlier, and the wrap of the repeated period is cross-faded with the period before it. The
//! fade (full level for 10 ms, then −20 % per 10 ms, silence after 60 ms) and the recovery
//! cross-fade (4 ms, plus 4 ms per further 10 ms lost, at most 10 ms) follow Appendix I.
//!
//! Usage on a jitter buffer's output, 8 kHz linear samples, any frame length:
//! ```
//! use codecs::plc::Plc;
//! let mut plc = Plc::new();
//! let mut frame = [0i16; 160];
//! plc.good_frame(&mut frame); // a received frame: recorded (and cross-faded after a loss)
//! plc.conceal(&mut frame);    // a lost frame: filled in
//! ```
//! Nothing allocates; the state is a fixed-size struct.

/// History kept, in samples (48.75 ms, as Appendix I).
const HISTORY: usize = 390;
/// Shortest pitch period searched, in samples (200 Hz... 66 Hz range: 40..=120).
const PITCH_MIN: usize = 40;
/// Longest pitch period searched.
const PITCH_MAX: usize = 120;
/// Length of the correlation window for the pitch search.
const CORR_WINDOW: usize = 80;
/// Samples of full-level concealment before the fade starts (10 ms).
const FADE_START: usize = 80;
/// Samples over which the level drops by 20 % (10 ms).
const FADE_STEP: usize = 80;
/// Samples after which concealment is silent (60 ms).
const SILENT_AFTER: usize = 480;
/// Recovery cross-fade for a single lost 10 ms (4 ms), grown by this per further 10 ms.
const RECOVERY_BASE: usize = 32;
/// Longest recovery cross-fade (10 ms).
const RECOVERY_MAX: usize = 80;

/// Concealment state for one stream.
#[derive(Debug, Clone)]
pub struct Plc {
    /// The most recent output samples, a ring: `history[head]` is the oldest. Kept as i16 and
    /// never shifted, so recording a frame writes only its own samples (the media path calls
    /// this for every frame of every leg; the float copy is built only when a gap starts).
    history: [i16; HISTORY],
    head: usize,
    /// The repeated pitch period, with its wrap smoothed.
    cycle: [f32; PITCH_MAX],
    /// Length of `cycle` in use (the pitch period), 0 when not concealing.
    period: usize,
    /// Read position in `cycle`.
    cursor: usize,
    /// Samples concealed in the current gap.
    concealed: usize,
}

impl Default for Plc {
    fn default() -> Self {
        Self::new()
    }
}

impl Plc {
    /// A concealer with silent history.
    pub const fn new() -> Self {
        Self {
            history: [0; HISTORY],
            head: 0,
            cycle: [0.0; PITCH_MAX],
            period: 0,
            cursor: 0,
            concealed: 0,
        }
    }

    /// True while a gap is being concealed (a lost frame came and no good frame since).
    pub fn in_gap(&self) -> bool {
        self.period != 0
    }

    /// The pitch period, in samples, used for the current gap (0 when not in a gap).
    pub fn pitch_period(&self) -> usize {
        self.period
    }

    /// Records a received frame. After a gap, the start of the frame is cross-faded from the
    /// concealment signal into the real one (the frame is modified in place).
    pub fn good_frame(&mut self, frame: &mut [i16]) {
        if self.in_gap() {
            let len = (RECOVERY_BASE + (self.concealed.saturating_sub(FADE_STEP) / FADE_STEP) * 32)
                .min(RECOVERY_MAX)
                .min(frame.len());
            for (i, sample) in frame.iter_mut().take(len).enumerate() {
                let synthetic = self.next_synthetic();
                let w = (i + 1) as f32 / (len + 1) as f32;
                *sample = to_i16(w * f32::from(*sample) + (1.0 - w) * synthetic);
            }
            self.period = 0;
            self.concealed = 0;
        }
        self.remember(frame);
    }

    /// Fills a lost frame with concealment audio.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if !self.in_gap() {
            self.start_gap();
        }
        for sample in out.iter_mut() {
            *sample = to_i16(self.next_synthetic());
        }
        self.remember(out);
    }

    /// Forgets everything (a new stream).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    fn remember(&mut self, frame: &[i16]) {
        let mut rest = &frame[frame.len().saturating_sub(HISTORY)..];
        while !rest.is_empty() {
            let n = (HISTORY - self.head).min(rest.len());
            self.history[self.head..self.head + n].copy_from_slice(&rest[..n]);
            self.head = (self.head + n) % HISTORY;
            rest = &rest[n..];
        }
    }

    /// Picks the pitch period and builds the smoothed cycle.
    fn start_gap(&mut self) {
        let mut h = [0f32; HISTORY];
        let (newer, older) = self.history.split_at(self.head);
        for (d, &s) in h.iter_mut().zip(older.iter().chain(newer)) {
            *d = f32::from(s);
        }
        let end = HISTORY;
        let target = &h[end - CORR_WINDOW..end];
        let mut best = (f32::MIN, PITCH_MIN);
        for p in PITCH_MIN..=PITCH_MAX {
            let candidate = &h[end - CORR_WINDOW - p..end - p];
            let (mut cross, mut energy) = (0f32, 0f32);
            for (a, b) in target.iter().zip(candidate) {
                cross += a * b;
                energy += b * b;
            }
            let score = if energy > 0.0 {
                cross / energy.sqrt()
            } else {
                0.0
            };
            if score > best.0 {
                best = (score, p);
            }
        }
        let period = best.1;
        // The cycle is the last period; its last quarter is cross-faded with the period before
        // so that wrapping from cycle[period-1] to cycle[0] joins like consecutive samples.
        let quarter = (period / 4).max(1);
        for i in 0..period {
            let recent = h[end - period + i];
            self.cycle[i] = if i >= period - quarter {
                let w = (i - (period - quarter) + 1) as f32 / (quarter + 1) as f32;
                (1.0 - w) * recent + w * h[end - 2 * period + i]
            } else {
                recent
            };
        }
        self.period = period;
        self.cursor = 0;
        self.concealed = 0;
    }

    fn next_synthetic(&mut self) -> f32 {
        if self.period == 0 {
            return 0.0;
        }
        let value = self.cycle[self.cursor] * self.gain();
        self.cursor += 1;
        if self.cursor >= self.period {
            self.cursor = 0;
        }
        self.concealed += 1;
        value
    }

    fn gain(&self) -> f32 {
        if self.concealed < FADE_START {
            1.0
        } else if self.concealed >= SILENT_AFTER {
            0.0
        } else {
            1.0 - 0.2 * (self.concealed - FADE_START) as f32 / FADE_STEP as f32
        }
    }
}

fn to_i16(v: f32) -> i16 {
    v.round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced-speech-like signal: 7 harmonics of a 137 Hz fundamental (a period of 58.4
    /// samples, deliberately not an integer).
    fn voiced(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                let mut v = 0.0;
                for h in 1..=7 {
                    v += (2.0 * std::f64::consts::PI * 137.0 * h as f64 * t + h as f64).sin()
                        / (h * h) as f64;
                }
                (v * 6000.0) as i16
            })
            .collect()
    }

    fn max_step(x: &[i16]) -> i32 {
        x.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_lost_frame_is_filled_without_a_discontinuity() {
        let signal = voiced(160 * 12);
        let natural = max_step(&signal);
        // Lose the frame whose edges are loudest, where a bad fill would click hardest.
        let lost = (4..9)
            .max_by_key(|&k| {
                signal[160 * k - 1].unsigned_abs() + signal[160 * k + 160].unsigned_abs()
            })
            .unwrap();
        let (start, end) = (160 * lost, 160 * lost + 160);
        let mut plc = Plc::new();
        let mut out = Vec::new();
        for (k, chunk) in signal.chunks(160).enumerate() {
            let mut frame = [0i16; 160];
            frame.copy_from_slice(chunk);
            if k == lost {
                plc.conceal(&mut frame);
                // The true period is 58.39 samples; a whole number of periods is a good choice.
                let p = plc.pitch_period() as f64;
                let periods = (p / 58.39).round();
                assert!(
                    periods >= 1.0 && (p - periods * 58.39).abs() <= 1.0,
                    "pitch {p}"
                );
            } else {
                plc.good_frame(&mut frame);
            }
            out.extend_from_slice(&frame);
        }
        // Around both edges of the gap the largest sample-to-sample step stays within the
        // signal's own largest step (plus a margin), where zero-filling would jump by thousands.
        let entry = max_step(&out[start - 20..start + 20]);
        let exit = max_step(&out[end - 20..end + 40]);
        assert!(
            entry <= natural * 6 / 5,
            "entry step {entry}, natural {natural}"
        );
        assert!(
            exit <= natural * 6 / 5,
            "exit step {exit}, natural {natural}"
        );
        let mut zero_filled = signal.clone();
        zero_filled[start..end].fill(0);
        // The same measures catch zero-filling (the test can fail).
        let zero_entry = max_step(&zero_filled[start - 20..start + 20]);
        let zero_exit = max_step(&zero_filled[end - 20..end + 40]);
        assert!(
            zero_entry.max(zero_exit) > natural * 6 / 5,
            "zero-fill steps {zero_entry}/{zero_exit}, natural {natural}"
        );
        // The filled frame resembles what was lost: SNR of the concealment above 10 dB.
        let (mut sig, mut err) = (0f64, 0f64);
        for i in start..end {
            sig += f64::from(signal[i]).powi(2);
            err += (f64::from(signal[i]) - f64::from(out[i])).powi(2);
        }
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 10.0, "concealment SNR {snr:.1} dB");
        // After recovery the output is the received signal again.
        assert_eq!(&out[end + 80..], &signal[end + 80..]);
    }

    #[test]
    fn a_long_loss_fades_to_silence_after_60_ms() {
        let signal = voiced(800);
        let mut plc = Plc::new();
        for chunk in signal.chunks(160) {
            let mut f = [0i16; 160];
            f.copy_from_slice(chunk);
            plc.good_frame(&mut f);
        }
        let mut gap = vec![0i16; 800];
        for f in gap.chunks_mut(80) {
            plc.conceal(f);
        }
        assert!(
            gap[..80].iter().any(|&s| s.abs() > 1000),
            "first 10 ms at full level"
        );
        assert!(gap[480..].iter().all(|&s| s == 0), "silent after 60 ms");
        let early = gap[80..160]
            .iter()
            .map(|&s| i32::from(s).abs())
            .max()
            .unwrap();
        let late = gap[400..480]
            .iter()
            .map(|&s| i32::from(s).abs())
            .max()
            .unwrap();
        assert!(late < early / 2, "fading: {early} then {late}");
    }

    #[test]
    fn any_frame_lengths_and_silence_are_handled() {
        let mut plc = Plc::new();
        plc.conceal(&mut []);
        plc.conceal(&mut [0i16; 7]);
        plc.good_frame(&mut [1i16; 1000]);
        plc.conceal(&mut [0i16; 3]);
        plc.good_frame(&mut []);
        plc.good_frame(&mut [i16::MAX; 5]);
        plc.conceal(&mut [0i16; 500]);
        plc.good_frame(&mut [i16::MIN; 500]);
        assert!(!plc.in_gap());
    }
}
