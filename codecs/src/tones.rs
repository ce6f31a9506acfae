//! Call-progress tones by country: dial, ringback, busy and congestion, generated from data
//! tables at 8 kHz.

/// Level in dBm0 of a sine whose peak is the 16-bit full scale (32767), by the ITU-T G.711 µ-law
/// convention (the A-law figure is +3.14 dBm0; we use the µ-law one throughout).
pub const FULL_SCALE_SINE_DBM0: f32 = 3.17;

/// Peak amplitude (16-bit linear units) of a sine at `dbm0`.
pub fn dbm0_to_peak(dbm0: f32) -> f32 {
    32767.0 * 10f32.powf((dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)
}

use core::str::FromStr;

use crate::CodecError;

/// A country (or standard) whose tone plan we carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Country {
    /// United States / North America (the "precise tone plan").
    Us,
    /// ETSI recommended values (ETSI ES 201 970, ITU-T E.180 425 Hz plan), used by most of
    /// continental Europe.
    Etsi,
    /// United Kingdom.
    Uk,
    /// Germany.
    De,
    /// France.
    Fr,
}

/// Country codes accepted by [`Country::from_str`].
pub const COUNTRIES: &str = "us, etsi, uk, de, fr";

impl FromStr for Country {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "us" | "usa" | "na" => Ok(Country::Us),
            "etsi" | "eu" => Ok(Country::Etsi),
            "uk" | "gb" => Ok(Country::Uk),
            "de" => Ok(Country::De),
            "fr" => Ok(Country::Fr),
            other => Err(CodecError::InvalidArgument(format!(
                "unknown country {other:?}: use one of {COUNTRIES}"
            ))),
        }
    }
}

/// Which call-progress tone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToneKind {
    /// Dial tone: the line is ready for digits.
    Dial,
    /// Ringback (audible ringing): the far end is being alerted.
    Ringback,
    /// Busy: the called party is busy.
    Busy,
    /// Congestion (reorder, fast busy): the network cannot complete the call.
    Congestion,
}

/// Tone names accepted by [`ToneKind::from_str`].
pub const TONE_KINDS: &str = "dial, ringback, busy, congestion";

impl FromStr for ToneKind {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "dial" | "dialtone" => Ok(ToneKind::Dial),
            "ringback" | "ring" | "ringing" => Ok(ToneKind::Ringback),
            "busy" => Ok(ToneKind::Busy),
            "congestion" | "reorder" | "fastbusy" => Ok(ToneKind::Congestion),
            other => Err(CodecError::InvalidArgument(format!(
                "unknown tone {other:?}: use one of {TONE_KINDS}"
            ))),
        }
    }
}

/// The definition of one tone: frequencies summed at a level, switched on and off by a cadence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    /// One or two frequencies in Hz, summed.
    pub frequencies: &'static [f32],
    /// Level of each frequency component, dBm0.
    pub level_dbm0: f32,
    /// Alternating on/off durations in ms, starting with "on"; empty for a continuous tone.
    pub cadence_ms: &'static [u32],
}

const fn tone(
    frequencies: &'static [f32],
    level_dbm0: f32,
    cadence_ms: &'static [u32],
) -> ToneSpec {
    ToneSpec {
        frequencies,
        level_dbm0,
        cadence_ms,
    }
}

// Tone plans. US: the North American precise tone plan (dial 350+440 Hz, audible ringing
// 440+480 Hz 2 s/4 s, busy 480+620 Hz 0.5 s/0.5 s, reorder 480+620 Hz 0.25 s/0.25 s). ETSI:
// ES 201 970 / ITU-T E.180 recommended values (425 Hz; ringing 1 s/4 s, busy 0.5/0.5,
// congestion 0.25/0.25). UK, DE, FR: the national plans as DAHDI's tone zone data lists them.
static US: [ToneSpec; 4] = [
    tone(&[350.0, 440.0], -13.0, &[]),
    tone(&[440.0, 480.0], -19.0, &[2000, 4000]),
    tone(&[480.0, 620.0], -24.0, &[500, 500]),
    tone(&[480.0, 620.0], -24.0, &[250, 250]),
];
static ETSI: [ToneSpec; 4] = [
    tone(&[425.0], -13.0, &[]),
    tone(&[425.0], -13.0, &[1000, 4000]),
    tone(&[425.0], -13.0, &[500, 500]),
    tone(&[425.0], -13.0, &[250, 250]),
];
static UK: [ToneSpec; 4] = [
    tone(&[350.0, 440.0], -13.0, &[]),
    tone(&[400.0, 450.0], -19.0, &[400, 200, 400, 2000]),
    tone(&[400.0], -13.0, &[375, 375]),
    tone(&[400.0], -13.0, &[400, 350, 225, 525]),
];
static DE: [ToneSpec; 4] = [
    tone(&[425.0], -13.0, &[]),
    tone(&[425.0], -13.0, &[1000, 4000]),
    tone(&[425.0], -13.0, &[480, 480]),
    tone(&[425.0], -13.0, &[240, 240]),
];
static FR: [ToneSpec; 4] = [
    tone(&[440.0], -13.0, &[]),
    tone(&[440.0], -13.0, &[1500, 3500]),
    tone(&[440.0], -13.0, &[500, 500]),
    tone(&[440.0], -13.0, &[250, 250]),
];

/// The definition of `kind` in `country`'s tone plan.
pub fn spec_of(country: Country, kind: ToneKind) -> &'static ToneSpec {
    let plan = match country {
        Country::Us => &US,
        Country::Etsi => &ETSI,
        Country::Uk => &UK,
        Country::De => &DE,
        Country::Fr => &FR,
    };
    match kind {
        ToneKind::Dial => &plan[0],
        ToneKind::Ringback => &plan[1],
        ToneKind::Busy => &plan[2],
        ToneKind::Congestion => &plan[3],
    }
}

/// An endless, cadenced call-progress tone at 8 kHz. Phase-continuous across [`fill`]
/// calls, allocation-free.
///
/// [`fill`]: ToneGenerator::fill
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    spec: &'static ToneSpec,
    /// Per-frequency phase (cycles, 0..1) and increment per sample.
    phase: [f64; 2],
    step: [f64; 2],
    amplitude: f64,
    /// Position in the cadence cycle, in samples, and the cycle length.
    position: u64,
    cycle: u64,
}

impl ToneGenerator {
    /// A generator for `kind` in `country`'s plan, starting at the beginning of an "on" period.
    pub fn new(country: Country, kind: ToneKind) -> Self {
        Self::from_spec(spec_of(country, kind))
    }

    /// A generator for any tone definition (frequencies beyond the first two are ignored).
    pub fn from_spec(spec: &'static ToneSpec) -> Self {
        let mut step = [0.0; 2];
        for (s, f) in step.iter_mut().zip(spec.frequencies) {
            *s = f64::from(*f) / f64::from(crate::SAMPLE_RATE);
        }
        let cycle = spec.cadence_ms.iter().map(|&ms| u64::from(ms) * 8).sum();
        Self {
            spec,
            phase: [0.0; 2],
            step,
            amplitude: f64::from(dbm0_to_peak(spec.level_dbm0)),
            position: 0,
            cycle,
        }
    }

    /// The tone's definition.
    pub fn spec(&self) -> &'static ToneSpec {
        self.spec
    }

    fn is_on(&self) -> bool {
        if self.cycle == 0 {
            return true;
        }
        let mut t = self.position % self.cycle;
        for (i, &ms) in self.spec.cadence_ms.iter().enumerate() {
            let len = u64::from(ms) * 8;
            if t < len {
                return i % 2 == 0;
            }
            t -= len;
        }
        false
    }

    /// Fills `out` with the next samples of the tone.
    pub fn fill(&mut self, out: &mut [i16]) {
        let components = self.spec.frequencies.len().min(2);
        for sample in out.iter_mut() {
            let on = self.is_on();
            let mut v = 0.0;
            for i in 0..components {
                if on {
                    v += (self.phase[i] * std::f64::consts::TAU).sin();
                }
                self.phase[i] = (self.phase[i] + self.step[i]).fract();
            }
            *sample = (v * self.amplitude).round().clamp(-32768.0, 32767.0) as i16;
            self.position += 1;
        }
    }
}
