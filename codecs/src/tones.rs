//! Call-progress tones by country: dial, ringback, busy and congestion, generated from data
//! tables at 8 kHz.
//!
//! Each tone is a [`ToneSpec`] — its frequencies, the level of each in dBm0 and an on/off
//! cadence — looked up with [`spec`] and played by [`ToneGenerator`], an endless,
//! allocation-free, phase-continuous source.
//!
//! Sources of the tables (values checked with the search tools against public listings — the
//! "Precise Tone Plan" article, CCITT Blue Book Recommendation E.180 (1988, also Q.35) and its
//! Supplement 2 listing national tones, ETSI TR 101 041-2 — not copied from them):
//! - **US**: the North American "precise tone plan": dial 350+440 Hz at
//!   −13 dBm0 per tone, continuous; audible ringing 440+480 Hz at −19 dBm0, 2 s on / 4 s off;
//!   busy 480+620 Hz at −24 dBm0, 0.5 s / 0.5 s; reorder (congestion) 480+620 Hz at −24 dBm0,
//!   0.25 s / 0.25 s. The same cadences appear in ANSI IS-95's supervisory tones.
//! - **ETSI**: the harmonised European tones recommended by ETSI ES 201 970 and ITU-T E.180
//!   (see also ETSI TR 101 041-2): a single 425 Hz tone; dial continuous, ringing 1 s on / 4 s off,
//!   busy 0.5 s / 0.5 s, congestion 0.25 s / 0.25 s. The level is left to the network within a
//!   range (E.180 §2 gives the electrical limits); we send −10 dBm0, the usual nominal value.
//! - **UK** (the national plan as PBX tone-zone tables list it): dial 350+440 Hz continuous; ringing
//!   400+450 Hz 0.4/0.2/0.4/2.0 s; busy 400 Hz 0.375/0.375 s; congestion 400 Hz
//!   0.4/0.35/0.225/0.525 s.
//! - **DE** (E.180 Supplement 2's entry for Germany): 425 Hz; ringing 1/4 s, busy
//!   0.48/0.48 s, congestion 0.24/0.24 s.
//! - **FR** (the national plan as PBX tone-zone tables list it): 440 Hz; ringing 1.5/3.5 s, busy 0.5/0.5 s,
//!   congestion 0.25/0.25 s.
//!
//! # Levels
//!
//! dBm0 follows the ITU-T G.711 µ-law convention: 0 dBm0 is a sine of peak amplitude about
//! 22 737 in 16-bit PCM, so a full-scale sine (peak 32 767) is +3.17 dBm0
//! ([`FULL_SCALE_SINE_DBM0`]).

use std::fmt;
use std::str::FromStr;

use crate::dtmf::{Oscillator, saturate};
use crate::error::CodecError;

/// Level in dBm0 of a sine whose peak is the 16-bit full scale (32767), by the ITU-T G.711 µ-law
/// convention (the A-law figure is +3.14 dBm0; we use the µ-law one throughout).
pub const FULL_SCALE_SINE_DBM0: f32 = 3.17;

/// Peak amplitude (16-bit linear units) of a sine at `dbm0`.
pub fn dbm0_to_peak(dbm0: f32) -> f32 {
    32767.0 * 10f32.powf((dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)
}

/// A national (or regional) set of call-progress tones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Country {
    /// North America (precise tone plan).
    Us,
    /// The harmonised European tones of ETSI ES 201 970 / ITU-T E.180 (425 Hz).
    Etsi,
    /// United Kingdom.
    Uk,
    /// Germany.
    De,
    /// France.
    Fr,
}

impl Country {
    /// Every country, in the order error messages list them.
    pub const ALL: [Country; 5] = [
        Country::Us,
        Country::Etsi,
        Country::Uk,
        Country::De,
        Country::Fr,
    ];

    /// The lower-case name accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Country::Us => "us",
            Country::Etsi => "etsi",
            Country::Uk => "uk",
            Country::De => "de",
            Country::Fr => "fr",
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Country {
    type Err = CodecError;

    /// Parses a country name, ignoring case: `us` (also `usa`, `na`), `etsi` (also `eu`), `uk`
    /// (also `gb`), `de`, `fr`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        let alias = match wanted.as_str() {
            "usa" | "na" => Some(Country::Us),
            "eu" => Some(Country::Etsi),
            "gb" => Some(Country::Uk),
            _ => None,
        };
        alias
            .or_else(|| Country::ALL.into_iter().find(|c| c.name() == wanted))
            .ok_or_else(|| {
                CodecError::InvalidArgument(format!(
                    "unknown country {s:?}: use one of {}",
                    choices(Country::ALL.iter().map(|c| c.name()))
                ))
            })
    }
}

/// Which call-progress tone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToneKind {
    /// Dial tone: the line is ready for digits.
    Dial,
    /// Ringback (audible ringing): the called party is being alerted.
    Ringback,
    /// Busy: the called party is engaged.
    Busy,
    /// Congestion (US: reorder): the network cannot complete the call.
    Congestion,
}

impl ToneKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [ToneKind; 4] = [
        ToneKind::Dial,
        ToneKind::Ringback,
        ToneKind::Busy,
        ToneKind::Congestion,
    ];

    /// The lower-case name accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            ToneKind::Dial => "dial",
            ToneKind::Ringback => "ringback",
            ToneKind::Busy => "busy",
            ToneKind::Congestion => "congestion",
        }
    }
}

impl fmt::Display for ToneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ToneKind {
    type Err = CodecError;

    /// Parses a tone name, ignoring case: `dial`, `ringback` (also `ring`, `ringing`), `busy`,
    /// `congestion` (also `reorder`, `fastbusy`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        let alias = match wanted.as_str() {
            "dialtone" => Some(ToneKind::Dial),
            "ring" | "ringing" => Some(ToneKind::Ringback),
            "reorder" | "fastbusy" => Some(ToneKind::Congestion),
            _ => None,
        };
        alias
            .or_else(|| ToneKind::ALL.into_iter().find(|k| k.name() == wanted))
            .ok_or_else(|| {
                CodecError::InvalidArgument(format!(
                    "unknown tone {s:?}: use one of {}",
                    choices(ToneKind::ALL.iter().map(|k| k.name()))
                ))
            })
    }
}

fn choices<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// One call-progress tone as data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    /// The frequencies sounded together, in Hz (one or two).
    pub frequencies: &'static [f32],
    /// Level of each frequency component, in dBm0 (see the module docs for the reference).
    pub level_dbm0: f32,
    /// Cadence in milliseconds, alternating on, off, on, off, ... and repeated forever; empty
    /// for a continuous tone. Always an even number of entries.
    pub cadence_ms: &'static [u32],
}

impl ToneSpec {
    /// Length of one cadence cycle in milliseconds (0 for a continuous tone).
    pub fn period_ms(&self) -> u32 {
        self.cadence_ms.iter().sum()
    }
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

static US: [ToneSpec; 4] = [
    tone(&[350.0, 440.0], -13.0, &[]),
    tone(&[440.0, 480.0], -19.0, &[2000, 4000]),
    tone(&[480.0, 620.0], -24.0, &[500, 500]),
    tone(&[480.0, 620.0], -24.0, &[250, 250]),
];

static ETSI: [ToneSpec; 4] = [
    tone(&[425.0], -10.0, &[]),
    tone(&[425.0], -10.0, &[1000, 4000]),
    tone(&[425.0], -10.0, &[500, 500]),
    tone(&[425.0], -10.0, &[250, 250]),
];

static UK: [ToneSpec; 4] = [
    tone(&[350.0, 440.0], -13.0, &[]),
    tone(&[400.0, 450.0], -13.0, &[400, 200, 400, 2000]),
    tone(&[400.0], -10.0, &[375, 375]),
    tone(&[400.0], -10.0, &[400, 350, 225, 525]),
];

static DE: [ToneSpec; 4] = [
    tone(&[425.0], -10.0, &[]),
    tone(&[425.0], -10.0, &[1000, 4000]),
    tone(&[425.0], -10.0, &[480, 480]),
    tone(&[425.0], -10.0, &[240, 240]),
];

static FR: [ToneSpec; 4] = [
    tone(&[440.0], -10.0, &[]),
    tone(&[440.0], -10.0, &[1500, 3500]),
    tone(&[440.0], -10.0, &[500, 500]),
    tone(&[440.0], -10.0, &[250, 250]),
];

/// The table entry for `country`'s `kind` of tone.
pub fn spec(country: Country, kind: ToneKind) -> &'static ToneSpec {
    let table = match country {
        Country::Us => &US,
        Country::Etsi => &ETSI,
        Country::Uk => &UK,
        Country::De => &DE,
        Country::Fr => &FR,
    };
    match kind {
        ToneKind::Dial => &table[0],
        ToneKind::Ringback => &table[1],
        ToneKind::Busy => &table[2],
        ToneKind::Congestion => &table[3],
    }
}

/// Endless source of one call-progress tone at 8 kHz.
///
/// [`fill`](Self::fill) continues exactly where the previous call stopped (phase and cadence),
/// so any split of the output into calls gives the same samples. No allocation.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    spec: &'static ToneSpec,
    oscillators: [Oscillator; 2],
    /// How many of `oscillators` sound.
    voices: usize,
    /// Index into `spec.cadence_ms` of the current segment.
    segment: usize,
    /// Samples left in the current segment.
    left: u64,
}

impl ToneGenerator {
    /// A generator for `country`'s `kind` of tone, starting at the beginning of an "on" period.
    pub fn new(country: Country, kind: ToneKind) -> Self {
        Self::from_spec(spec(country, kind))
    }

    /// A generator for any tone description. At most the first two frequencies sound; an odd
    /// number of cadence entries simply makes the cycle start "on" again after its last entry.
    pub fn from_spec(spec: &'static ToneSpec) -> Self {
        let peak = f64::from(dbm0_to_peak(spec.level_dbm0));
        let mut oscillators = [Oscillator::new(0.0, 0.0); 2];
        let voices = spec.frequencies.len().min(oscillators.len());
        for (osc, &f) in oscillators.iter_mut().zip(spec.frequencies) {
            *osc = Oscillator::new(f64::from(f), peak);
        }
        let mut generator = Self {
            spec,
            oscillators,
            voices,
            segment: 0,
            left: 0,
        };
        generator.left = generator.segment_samples(0);
        generator
    }

    /// The tone being played.
    pub fn spec(&self) -> &'static ToneSpec {
        self.spec
    }

    fn segment_samples(&self, segment: usize) -> u64 {
        self.spec.cadence_ms.get(segment).map_or(u64::MAX, |&ms| {
            u64::from(ms) * u64::from(crate::SAMPLE_RATE) / 1000
        })
    }

    /// Writes the next `out.len()` samples of the tone.
    pub fn fill(&mut self, out: &mut [i16]) {
        for slot in out.iter_mut() {
            while self.left == 0 {
                let n = self.spec.cadence_ms.len().max(1);
                self.segment = (self.segment + 1) % n;
                self.left = self.segment_samples(self.segment);
                if self.spec.period_ms() == 0 {
                    // A cadence of zero-length segments: treat as continuous.
                    self.left = u64::MAX;
                }
            }
            self.left -= 1;
            let mut v = 0.0;
            for osc in &mut self.oscillators[..self.voices] {
                v += osc.next();
            }
            // Even segments sound, odd ones are silent; the oscillators keep running so the
            // phase stays continuous across the cadence.
            *slot = if self.segment % 2 == 0 {
                saturate(v)
            } else {
                0
            };
        }
    }
}
