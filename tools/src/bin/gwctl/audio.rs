//! `gwctl codec`, `gwctl dtmf` and `gwctl tone`: sox-like audio tools over the `codecs` crate.

use std::path::{Path, PathBuf};

use codecs::CodecError;
use codecs::g711::{self, Law};
use codecs::resample;
use codecs::wav::{self, Wav};

/// What can go wrong in an audio command, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's contents are not valid for its format.
    #[error("{path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: CodecError,
    },
    /// The format could not be told from the name and was not given.
    #[error(
        "{path}: cannot tell the audio format from the extension; use .wav, .ul/.ulaw, .al/.alaw, .raw/.s16 or pass --from/--to"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A parameter is invalid.
    #[error("{0}")]
    Invalid(#[from] CodecError),
}

/// A file format gwctl reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AudioFormat {
    /// RIFF/WAVE (PCM 8/16-bit, µ-law, A-law; any rate the resampler supports).
    Wav,
    /// Headerless G.711 µ-law, 8 kHz mono.
    Ulaw,
    /// Headerless G.711 A-law, 8 kHz mono.
    Alaw,
    /// Headerless signed 16-bit little-endian, 8 kHz mono.
    S16,
}

impl AudioFormat {
    /// The format implied by a file name's extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "wav" => Some(Self::Wav),
            "ul" | "ulaw" | "mulaw" | "pcmu" | "u8" => Some(Self::Ulaw),
            "al" | "alaw" | "pcma" | "a8" => Some(Self::Alaw),
            "raw" | "s16" | "sw" | "pcm" => Some(Self::S16),
            _ => None,
        }
    }

    fn resolve(given: Option<Self>, path: &Path) -> Result<Self, AudioError> {
        given
            .or_else(|| Self::from_path(path))
            .ok_or_else(|| AudioError::UnknownFormat {
                path: path.to_path_buf(),
            })
    }
}

/// WAV sample encodings gwctl writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WavOut {
    /// 16-bit PCM.
    Pcm16,
    /// G.711 µ-law (format tag 7).
    Ulaw,
    /// G.711 A-law (format tag 6).
    Alaw,
}

/// Mono linear audio with its rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Samples per second.
    pub rate: u32,
    /// Samples.
    pub samples: Vec<i16>,
}

/// Reads an audio file of the given (or implied) format.
pub fn read_audio(path: &Path, format: Option<AudioFormat>) -> Result<Audio, AudioError> {
    let format = AudioFormat::resolve(format, path)?;
    let bytes = std::fs::read(path).map_err(|source| AudioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let decode_err = |source| AudioError::Decode {
        path: path.to_path_buf(),
        source,
    };
    Ok(match format {
        AudioFormat::Wav => {
            let Wav {
                sample_rate,
                samples,
                ..
            } = wav::parse(&bytes).map_err(decode_err)?;
            Audio {
                rate: sample_rate,
                samples,
            }
        }
        AudioFormat::Ulaw | AudioFormat::Alaw => {
            let law = if format == AudioFormat::Ulaw {
                Law::Ulaw
            } else {
                Law::Alaw
            };
            let mut samples = vec![0i16; bytes.len()];
            g711::decode(law, &bytes, &mut samples).map_err(decode_err)?;
            Audio {
                rate: 8000,
                samples,
            }
        }
        AudioFormat::S16 => {
            if bytes.len() % 2 != 0 {
                return Err(decode_err(CodecError::Malformed {
                    format: "s16 raw",
                    reason: format!(
                        "{} bytes is not a whole number of 16-bit samples",
                        bytes.len()
                    ),
                }));
            }
            Audio {
                rate: 8000,
                samples: bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            }
        }
    })
}

/// Reads any supported file and returns it at `rate` Hz.
pub fn read_audio_at(
    path: &Path,
    format: Option<AudioFormat>,
    rate: u32,
) -> Result<Vec<i16>, AudioError> {
    let audio = read_audio(path, format)?;
    resample::resample_all(audio.rate, rate, &audio.samples).map_err(|source| AudioError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes audio; headerless formats are 8 kHz, so the caller resamples first.
pub fn write_audio(
    path: &Path,
    format: AudioFormat,
    wav_encoding: WavOut,
    audio: &Audio,
) -> Result<(), AudioError> {
    let bytes = match format {
        AudioFormat::Wav => match wav_encoding {
            WavOut::Pcm16 => wav::write_pcm16(audio.rate, &audio.samples),
            WavOut::Ulaw => wav::write_g711_from_linear(Law::Ulaw, audio.rate, &audio.samples),
            WavOut::Alaw => wav::write_g711_from_linear(Law::Alaw, audio.rate, &audio.samples),
        },
        AudioFormat::Ulaw | AudioFormat::Alaw => {
            let law = if format == AudioFormat::Ulaw {
                Law::Ulaw
            } else {
                Law::Alaw
            };
            let mut codes = vec![0u8; audio.samples.len()];
            g711::encode(law, &audio.samples, &mut codes)?;
            codes
        }
        AudioFormat::S16 => audio.samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
    };
    std::fs::write(path, bytes).map_err(|source| AudioError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `gwctl codec convert`.
pub fn convert(
    input: &Path,
    output: &Path,
    from: Option<AudioFormat>,
    to: Option<AudioFormat>,
    rate: Option<u32>,
    wav_encoding: WavOut,
) -> Result<String, AudioError> {
    let to = AudioFormat::resolve(to, output)?;
    let audio = read_audio(input, from)?;
    let target_rate = match to {
        AudioFormat::Wav => rate.unwrap_or(match wav_encoding {
            WavOut::Pcm16 => audio.rate,
            WavOut::Ulaw | WavOut::Alaw => 8000,
        }),
        _ => 8000,
    };
    let samples =
        resample::resample_all(audio.rate, target_rate, &audio.samples).map_err(|source| {
            AudioError::Decode {
                path: input.to_path_buf(),
                source,
            }
        })?;
    let out = Audio {
        rate: target_rate,
        samples,
    };
    write_audio(output, to, wav_encoding, &out)?;
    Ok(format!(
        "{} ({} Hz, {} samples) -> {} ({:?}, {} Hz, {:.2} s)",
        input.display(),
        audio.rate,
        audio.samples.len(),
        output.display(),
        to,
        target_rate,
        out.samples.len() as f64 / f64::from(target_rate)
    ))
}
