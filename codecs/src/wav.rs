//! Reading and writing RIFF/WAVE files: 16-bit and 8-bit PCM, G.711 µ-law and A-law (format tags
//! 7 and 6), `WAVE_FORMAT_EXTENSIBLE` wrappers around them, mono or multi-channel (mixed down to
//! mono on reading).
//!
//! The reader takes arbitrary bytes and never panics: every length is checked, unknown chunks
//! are skipped, and anything it cannot use is a [`CodecError`] that says what is wrong with the
//! file. A `data` chunk whose size field is `0` or `0xFFFFFFFF` (written by recorders that never
//! patched the header) is taken to run to the end of the file.

use crate::CodecError;
use crate::g711::{self, Law};

/// How samples are stored in a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavEncoding {
    /// Signed 16-bit little-endian PCM.
    Pcm16,
    /// Unsigned 8-bit PCM.
    Pcm8,
    /// G.711 (format tag 7 for µ-law, 6 for A-law).
    G711(Law),
}

/// A decoded WAV file: mono linear samples and their rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels in the file (the samples are already mixed down to mono).
    pub channels: u16,
    /// How the file stored its samples.
    pub encoding: WavEncoding,
    /// Mono 16-bit samples.
    pub samples: Vec<i16>,
}

const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_ULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// Largest channel count accepted (a sanity bound, not a WAV limit).
const MAX_CHANNELS: u16 = 16;

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::Malformed {
        format: "WAV",
        reason: reason.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a WAV file and decodes it to mono 16-bit samples.
///
/// # Errors
/// [`CodecError::Malformed`] for a file that is not RIFF/WAVE or is truncated or inconsistent;
/// [`CodecError::Unsupported`] for a valid file in an encoding this reader does not handle
/// (e.g. 24-bit or floating point), naming what it found.
pub fn parse(bytes: &[u8]) -> Result<Wav, CodecError> {
    if bytes.len() < 12 {
        return Err(malformed(format!(
            "{} bytes is too short for a RIFF header (12 bytes)",
            bytes.len()
        )));
    }
    if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(malformed(
            "not a RIFF/WAVE file (missing \"RIFF\"...\"WAVE\" header)",
        ));
    }
    let mut at = 12usize;
    let mut fmt: Option<(WavEncoding, u16, u32, u16)> = None; // encoding, channels, rate, block align
    loop {
        let Some(id) = bytes.get(at..at + 4) else {
            return Err(if fmt.is_none() {
                malformed("no \"fmt \" chunk before the end of the file")
            } else {
                malformed("no \"data\" chunk before the end of the file")
            });
        };
        let size = u32_at(bytes, at + 4)
            .ok_or_else(|| malformed(format!("chunk header at byte {at} is truncated")))?;
        let body_start = at + 8;
        match id {
            b"fmt " => {
                let body = bytes
                    .get(body_start..body_start.saturating_add(size as usize))
                    .ok_or_else(|| malformed("\"fmt \" chunk runs past the end of the file"))?;
                fmt = Some(parse_fmt(body)?);
            }
            b"data" => {
                let (encoding, channels, sample_rate, block_align) =
                    fmt.ok_or_else(|| malformed("\"data\" chunk comes before the \"fmt \" chunk"))?;
                let available = bytes.len() - body_start.min(bytes.len());
                let len = if size == 0 || size == u32::MAX {
                    available
                } else if size as usize > available {
                    return Err(malformed(format!(
                        "truncated: the data chunk declares {size} bytes but only {available} follow"
                    )));
                } else {
                    size as usize
                };
                let data = bytes.get(body_start..body_start + len).unwrap_or(&[]);
                let samples = decode_data(data, encoding, channels, block_align);
                return Ok(Wav {
                    sample_rate,
                    channels,
                    encoding,
                    samples,
                });
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body_start
            .checked_add(size as usize)
            .and_then(|v| v.checked_add(size as usize & 1))
            .ok_or_else(|| malformed(format!("chunk size {size} at byte {at} overflows")))?;
    }
}

fn parse_fmt(body: &[u8]) -> Result<(WavEncoding, u16, u32, u16), CodecError> {
    let (Some(mut tag), Some(channels), Some(rate), Some(block_align), Some(bits)) = (
        u16_at(body, 0),
        u16_at(body, 2),
        u32_at(body, 4),
        u16_at(body, 12),
        u16_at(body, 14),
    ) else {
        return Err(malformed(format!(
            "\"fmt \" chunk is {} bytes, needs at least 16",
            body.len()
        )));
    };
    if tag == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) then the sub-format GUID, whose first two bytes
        // are the format tag.
        tag = u16_at(body, 24)
            .ok_or_else(|| malformed("WAVE_FORMAT_EXTENSIBLE \"fmt \" chunk is truncated"))?;
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(malformed(format!("{channels} channels")));
    }
    if rate == 0 || rate > 384_000 {
        return Err(malformed(format!("sample rate {rate} Hz")));
    }
    let encoding = match (tag, bits) {
        (FORMAT_PCM, 16) => WavEncoding::Pcm16,
        (FORMAT_PCM, 8) => WavEncoding::Pcm8,
        (FORMAT_ULAW, 8) => WavEncoding::G711(Law::Ulaw),
        (FORMAT_ALAW, 8) => WavEncoding::G711(Law::Alaw),
        (FORMAT_PCM, other) => {
            return Err(CodecError::Unsupported {
                what: "WAV sample size",
                detail: format!("{other}-bit PCM; use 8- or 16-bit PCM, µ-law or A-law"),
            });
        }
        (other, bits) => {
            return Err(CodecError::Unsupported {
                what: "WAV encoding",
                detail: format!(
                    "format tag {other:#06x} with {bits} bits; use PCM (1), A-law (6) or µ-law (7)"
                ),
            });
        }
    };
    let bytes_per_sample: u16 = if encoding == WavEncoding::Pcm16 { 2 } else { 1 };
    let expected_align = bytes_per_sample * channels;
    if block_align != expected_align {
        return Err(malformed(format!(
            "block align {block_align} does not match {channels} channel(s) of {bits} bits (expected {expected_align})"
        )));
    }
    Ok((encoding, channels, rate, block_align))
}

fn decode_data(data: &[u8], encoding: WavEncoding, channels: u16, block_align: u16) -> Vec<i16> {
    let frames = data.chunks_exact(usize::from(block_align.max(1)));
    let channels = i32::from(channels.max(1));
    frames
        .map(|frame| {
            let sum: i32 = match encoding {
                WavEncoding::Pcm16 => frame
                    .chunks_exact(2)
                    .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
                    .sum(),
                WavEncoding::Pcm8 => frame.iter().map(|&b| (i32::from(b) - 128) << 8).sum(),
                WavEncoding::G711(law) => {
                    frame.iter().map(|&c| i32::from(law.decode_sample(c))).sum()
                }
            };
            (sum / channels) as i16
        })
        .collect()
}

fn header(tag: u16, sample_rate: u32, bits: u16, data_len: usize) -> Vec<u8> {
    let bytes_per_sample = u32::from(bits / 8);
    let mut h = Vec::with_capacity(44 + data_len);
    h.extend_from_slice(b"RIFF");
    let riff_len = u32::try_from(36 + data_len + (data_len & 1)).unwrap_or(u32::MAX);
    h.extend_from_slice(&riff_len.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * bytes_per_sample).to_le_bytes());
    h.extend_from_slice(&(bits / 8).to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&u32::try_from(data_len).unwrap_or(u32::MAX).to_le_bytes());
    h
}

/// A mono 16-bit PCM WAV file.
pub fn write_pcm16(sample_rate: u32, samples: &[i16]) -> Vec<u8> {
    let mut out = header(FORMAT_PCM, sample_rate, 16, samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A mono G.711 WAV file (format tag 7 or 6) from already-encoded bytes.
pub fn write_g711(law: Law, sample_rate: u32, codes: &[u8]) -> Vec<u8> {
    let tag = match law {
        Law::Ulaw => FORMAT_ULAW,
        Law::Alaw => FORMAT_ALAW,
    };
    let mut out = header(tag, sample_rate, 8, codes.len());
    out.extend_from_slice(codes);
    if codes.len() & 1 == 1 {
        out.push(0);
    }
    out
}

/// A mono G.711 WAV file encoding `samples`.
pub fn write_g711_from_linear(law: Law, sample_rate: u32, samples: &[i16]) -> Vec<u8> {
    let mut codes = vec![0u8; samples.len()];
    // Lengths are equal, so encoding cannot fail.
    let _ = g711::encode(law, samples, &mut codes);
    write_g711(law, sample_rate, &codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm16_round_trip() {
        let samples: Vec<i16> = (0..1001).map(|i| (i * 37 - 18000) as i16).collect();
        let file = write_pcm16(16000, &samples);
        let wav = parse(&file).unwrap();
        assert_eq!(wav.sample_rate, 16000);
        assert_eq!(wav.encoding, WavEncoding::Pcm16);
        assert_eq!(wav.samples, samples);
    }

    #[test]
    fn g711_round_trip_is_the_codec_round_trip() {
        let samples: Vec<i16> = (0..333).map(|i| (i * 97 - 16000) as i16).collect();
        for law in [Law::Ulaw, Law::Alaw] {
            let wav = parse(&write_g711_from_linear(law, 8000, &samples)).unwrap();
            assert_eq!(wav.encoding, WavEncoding::G711(law));
            let expect: Vec<i16> = samples
                .iter()
                .map(|&s| law.decode_sample(law.encode_sample(s)))
                .collect();
            assert_eq!(wav.samples, expect);
        }
    }

    #[test]
    fn stereo_is_mixed_down_and_unknown_chunks_skipped() {
        let mut file = write_pcm16(8000, &[]);
        // Rewrite as stereo with a LIST chunk before data.
        file.truncate(36);
        file[22] = 2; // channels
        file[28..32].copy_from_slice(&32000u32.to_le_bytes());
        file[32] = 4; // block align
        file.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
        file.extend_from_slice(b"data\x08\x00\x00\x00");
        for s in [1000i16, 3000, -2000, -4000] {
            file.extend_from_slice(&s.to_le_bytes());
        }
        let wav = parse(&file).unwrap();
        assert_eq!(wav.channels, 2);
        assert_eq!(wav.samples, vec![2000, -3000]);
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let good = write_pcm16(8000, &[1, 2, 3, 4]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"RIFF".to_vec(), "too short"),
            (b"RIFX\0\0\0\0WAVE".to_vec(), "not a RIFF/WAVE"),
            (good[..30].to_vec(), "fmt"),
            (good[..40].to_vec(), "data"),
            (good[..46].to_vec(), "truncated"),
            (
                {
                    let mut f = good.clone();
                    f[34] = 24;
                    f
                },
                "24-bit",
            ),
            (
                {
                    let mut f = good.clone();
                    f[20] = 3;
                    f
                },
                "format tag",
            ),
            (
                {
                    let mut f = good.clone();
                    f[22] = 0;
                    f
                },
                "0 channels",
            ),
        ];
        for (bytes, needle) in cases {
            let e = parse(&bytes).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in {e:?}");
        }
    }

    #[test]
    fn unpatched_data_size_runs_to_end_of_file() {
        let mut f = write_pcm16(8000, &[5, 6, 7]);
        f[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&f).unwrap().samples, vec![5, 6, 7]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let mut with_header = write_pcm16(8000, &[]);
            with_header.truncate(12);
            with_header.extend_from_slice(&bytes);
            let _ = parse(&with_header);
        }
    }
}
