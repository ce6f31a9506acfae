//! The audio sources a leg can hear instead of a partner, as per-tick state (no allocation).

use std::sync::Arc;

use codecs::FRAME_SAMPLES;
use codecs::tones::{ToneGenerator, ToneSpec};

use super::Source;
use crate::media::bridge::Frame;

/// The digital milliwatt of a line test: 1004 Hz (not 1000, which would sample the same eight
/// points forever) at 0 dBm0, continuous.
static MILLIWATT: ToneSpec = ToneSpec {
    frequencies: &[1004.0],
    level_dbm0: 0.0,
    cadence_ms: &[],
};

/// What a held or queued party hears when no music is configured: 440 Hz at −18 dBm0,
/// half a second in every two — audibly "still connected", never silence, and quiet enough to
/// sit under for minutes.
static HOLD_TONE: ToneSpec = ToneSpec {
    frequencies: &[440.0],
    level_dbm0: -18.0,
    cadence_ms: &[500, 1500],
};

/// A source being played.
pub(super) enum SourceState {
    Silence,
    /// RTP legs with CN negotiated send RFC 3389 packets; everything else hears silence.
    ComfortNoise,
    Tone(ToneGenerator),
    Echo,
    Wav {
        samples: Arc<[i16]>,
        at: usize,
        looped: bool,
    },
}

/// What one tick of a source produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filled {
    /// Audio in the frame.
    Audio,
    /// The leg should send comfort noise (the frame holds silence).
    ComfortNoise,
    /// A prompt played once just ended (the frame is completed with silence).
    Finished,
}

impl SourceState {
    pub(super) fn new(source: Source) -> Self {
        match source {
            Source::Silence => Self::Silence,
            Source::ComfortNoise => Self::ComfortNoise,
            Source::Tone(country, kind) => Self::Tone(ToneGenerator::new(country, kind)),
            Source::Milliwatt => Self::Tone(ToneGenerator::from_spec(&MILLIWATT)),
            Source::HoldTone => Self::Tone(ToneGenerator::from_spec(&HOLD_TONE)),
            Source::Echo => Self::Echo,
            Source::Wav(samples, looped) => Self::Wav {
                samples,
                at: 0,
                looped,
            },
        }
    }

    /// The next 20 ms; `own` is what the leg itself received this tick (for the echo).
    pub(super) fn fill(&mut self, out: &mut Frame, own: &Frame) -> Filled {
        match self {
            Self::Silence => {
                out.fill(0);
                Filled::Audio
            }
            Self::ComfortNoise => {
                out.fill(0);
                Filled::ComfortNoise
            }
            Self::Tone(g) => {
                g.fill(out);
                Filled::Audio
            }
            Self::Echo => {
                *out = *own;
                Filled::Audio
            }
            Self::Wav {
                samples,
                at,
                looped,
            } => {
                let len = samples.len();
                let mut filled = 0;
                while filled < FRAME_SAMPLES {
                    if *at >= len {
                        if *looped && len > 0 {
                            *at = 0;
                        } else {
                            out[filled..].fill(0);
                            *self = Self::Silence;
                            return Filled::Finished;
                        }
                    }
                    let n = (FRAME_SAMPLES - filled).min(len - *at);
                    out[filled..filled + n].copy_from_slice(&samples[*at..*at + n]);
                    filled += n;
                    *at += n;
                }
                if !*looped && *at >= len {
                    *self = Self::Silence;
                    return Filled::Finished;
                }
                Filled::Audio
            }
        }
    }
}
