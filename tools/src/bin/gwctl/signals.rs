//! `gwctl dtmf detect|generate` and `gwctl tone`: DTMF and call-progress tone files.

use std::path::Path;

use codecs::dtmf::{self, DtmfDetector, DtmfEvent, DtmfParams};
use codecs::tones::{Country, ToneGenerator, ToneKind};
use codecs::wav;

use crate::audio::{self, AudioError, AudioFormat};

/// One detected digit, in milliseconds from the start of the file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DetectedDigit {
    /// Key-down time.
    pub start_ms: u64,
    /// Key-up time.
    pub end_ms: u64,
    /// The digit.
    pub digit: char,
}

/// Runs the detector over a file (any supported format, resampled to 8 kHz).
pub fn detect(path: &Path, format: Option<AudioFormat>) -> Result<Vec<DetectedDigit>, AudioError> {
    let samples = audio::read_audio_at(path, format, 8000)?;
    let mut detector = DtmfDetector::new();
    let mut digits = Vec::new();
    let mut on_event = |e: DtmfEvent| {
        if let DtmfEvent::KeyUp {
            digit,
            at_sample,
            started_at,
        } = e
        {
            digits.push(DetectedDigit {
                start_ms: started_at / 8,
                end_ms: at_sample / 8,
                digit,
            });
        }
    };
    detector.process(&samples, &mut on_event);
    detector.finish(&mut on_event);
    Ok(digits)
}

/// Writes `digits` as DTMF to a WAV file (8 kHz, 16-bit).
pub fn generate(digits: &str, out: &Path, params: &DtmfParams) -> Result<usize, AudioError> {
    let mut samples = Vec::new();
    dtmf::generate(digits, params, &mut samples)?;
    write_wav(out, &samples)?;
    Ok(samples.len())
}

/// Writes `seconds` of a country's call-progress tone to a WAV file (8 kHz, 16-bit).
pub fn tone(country: &str, kind: &str, seconds: f64, out: &Path) -> Result<usize, AudioError> {
    let country: Country = country.parse()?;
    let kind: ToneKind = kind.parse()?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(AudioError::Invalid(codecs::CodecError::InvalidArgument(
            format!("--seconds {seconds}: give a duration between 0 and 3600"),
        )));
    }
    let mut generator = ToneGenerator::new(country, kind);
    let mut samples = vec![0i16; (seconds * 8000.0).round() as usize];
    generator.fill(&mut samples);
    write_wav(out, &samples)?;
    Ok(samples.len())
}

fn write_wav(path: &Path, samples: &[i16]) -> Result<(), AudioError> {
    std::fs::write(path, wav::write_pcm16(8000, samples)).map_err(|source| AudioError::Write {
        path: path.to_path_buf(),
        source,
    })
}
