//! Audio codecs and signal processing for spanbridge.
//!
//! Everything here is a pure function or a small state machine over sample slices: no IO, no
//! async, and no allocation in any per-frame call. The media path (gateway) and the TDM span
//! thread (tdm-driver) call into this crate on their hot paths.
//!
//! Conventions: linear audio is signed 16-bit PCM, 8 kHz mono unless a function says otherwise.
//! A *frame* is 20 ms ([`FRAME_SAMPLES`] = 160 samples at 8 kHz); a *chunk* is the 1 ms DAHDI unit
//! ([`CHUNK_SAMPLES`] = 8 samples).
#![warn(missing_docs)]

pub mod dtmf;
pub mod error;
pub mod g711;
pub mod mf;
pub mod opus;
pub mod plc;
pub mod progress;
pub mod resample;
pub mod tones;
pub mod wav;

pub use error::CodecError;

/// Telephony sample rate in Hz.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Samples in one 1 ms DAHDI chunk at 8 kHz.
pub const CHUNK_SAMPLES: usize = 8;
