//! The narrowband payload formats a leg can negotiate (PCMU, PCMA, L16 at 8 kHz) and the
//! conversion of one 20 ms frame between each of them and linear PCM. Transcoding PCMU ↔ PCMA ↔
//! L16 is decode on one leg, encode on the other (PCMU ↔ PCMA could skip the linear step with
//! `codecs::g711::transcode`, but the bridge carries linear frames so that mixing, tones and
//! DTMF interworking work on any pair of legs).

use codecs::g711::{self, Law};

use super::bridge::Frame;

const FRAME: usize = codecs::FRAME_SAMPLES;

/// A payload format a leg can negotiate.
///
/// Extension point for wideband/stateful codecs (Opus, issue 5): add a variant here with its RTP
/// clock rate in [`AudioFormat::clock_rate`], and its per-leg state (decoder, encoder, a
/// `codecs::resample::Resampler` each way between its rate and the bridge's 8 kHz) as an arm of
/// [`LegCodec`]. The jitter buffer, the RTP context and the plane already work in the format's
/// clock units and ask [`LegCodec`] for samples, so nothing else changes shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Linear 16-bit big-endian (RFC 3551 L16), mono at 8 kHz, dynamic payload type.
    L16,
}

impl AudioFormat {
    /// RTP clock rate (timestamp units per second).
    pub const fn clock_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma | Self::L16 => 8000,
        }
    }

    /// The SDP encoding name (`a=rtpmap`).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::L16 => "L16",
        }
    }

    /// The static payload type, if the format has one (RFC 3551).
    pub const fn static_payload_type(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::L16 => None,
        }
    }

    /// Bytes per 8 kHz sample on the wire.
    const fn bytes_per_sample(self) -> usize {
        match self {
            Self::Pcmu | Self::Pcma => 1,
            Self::L16 => 2,
        }
    }

    /// Samples (at the format's clock) carried by a payload of `len` bytes.
    pub const fn payload_samples(self, len: usize) -> usize {
        len / self.bytes_per_sample()
    }

    /// Decodes a payload of any length into `out`; returns the samples written (limited by the
    /// shorter of the two).
    pub fn decode_into(self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = self.payload_samples(payload.len()).min(out.len());
        match self {
            Self::Pcmu | Self::Pcma => {
                let law = if self == Self::Pcmu {
                    Law::Ulaw
                } else {
                    Law::Alaw
                };
                for (o, &c) in out[..n].iter_mut().zip(payload) {
                    *o = law.decode_sample(c);
                }
            }
            Self::L16 => {
                for (o, c) in out[..n].iter_mut().zip(payload.chunks_exact(2)) {
                    *o = i16::from_be_bytes([c[0], c[1]]);
                }
            }
        }
        n
    }

    /// Encodes samples of any count into `out`; returns the payload length (0 if `out` cannot
    /// hold them all).
    pub fn encode_from(self, pcm: &[i16], out: &mut [u8]) -> usize {
        let need = pcm.len() * self.bytes_per_sample();
        let Some(out) = out.get_mut(..need) else {
            return 0;
        };
        match self {
            Self::Pcmu | Self::Pcma => {
                let law = if self == Self::Pcmu {
                    Law::Ulaw
                } else {
                    Law::Alaw
                };
                if g711::encode(law, pcm, out).is_err() {
                    return 0;
                }
            }
            Self::L16 => {
                for (c, s) in out.chunks_exact_mut(2).zip(pcm) {
                    c.copy_from_slice(&s.to_be_bytes());
                }
            }
        }
        need
    }

    /// Payload bytes of one 20 ms frame.
    pub const fn frame_bytes(self) -> usize {
        match self {
            Self::Pcmu | Self::Pcma => FRAME,
            Self::L16 => 2 * FRAME,
        }
    }

    /// Decodes a payload into a frame; a short payload is padded with silence, extra bytes are
    /// ignored (a peer with another ptime is not our frame size: it is cut to 20 ms).
    pub fn decode(self, payload: &[u8], out: &mut Frame) {
        match self {
            Self::Pcmu | Self::Pcma => {
                let law = if self == Self::Pcmu {
                    Law::Ulaw
                } else {
                    Law::Alaw
                };
                if let Some(codes) = payload.first_chunk::<FRAME>() {
                    g711::decode_frame(law, codes, out);
                } else {
                    out.fill(0);
                    for (o, &c) in out.iter_mut().zip(payload) {
                        *o = law.decode_sample(c);
                    }
                }
            }
            Self::L16 => {
                out.fill(0);
                for (o, c) in out.iter_mut().zip(payload.chunks_exact(2)) {
                    *o = i16::from_be_bytes([c[0], c[1]]);
                }
            }
        }
    }

    /// Encodes a frame into `out` (at least [`AudioFormat::frame_bytes`] long); returns the
    /// payload length, 0 if `out` is too small.
    pub fn encode(self, frame: &Frame, out: &mut [u8]) -> usize {
        match self {
            Self::Pcmu | Self::Pcma => {
                let law = if self == Self::Pcmu {
                    Law::Ulaw
                } else {
                    Law::Alaw
                };
                match out.first_chunk_mut::<FRAME>() {
                    Some(codes) => {
                        g711::encode_frame(law, frame, codes);
                        FRAME
                    }
                    None => 0,
                }
            }
            Self::L16 => {
                let Some(bytes) = out.get_mut(..2 * FRAME) else {
                    return 0;
                };
                for (c, s) in bytes.chunks_exact_mut(2).zip(frame) {
                    c.copy_from_slice(&s.to_be_bytes());
                }
                2 * FRAME
            }
        }
    }
}

/// The per-leg codec state between a leg's wire format and the bridge's 8 kHz linear frames.
///
/// G.711 and L16 are stateless; a stateful codec (Opus: decoder, encoder and resamplers) adds an
/// arm holding its state in a `Box`, built once when the leg is configured (so the per-packet
/// path still does not allocate).
#[derive(Debug, Clone)]
pub enum LegCodec {
    /// A stateless 8 kHz format (PCMU, PCMA, L16).
    Narrowband(AudioFormat),
}

impl LegCodec {
    /// The state for `format`.
    pub fn new(format: AudioFormat) -> Self {
        match format {
            AudioFormat::Pcmu | AudioFormat::Pcma | AudioFormat::L16 => Self::Narrowband(format),
        }
    }

    /// The wire format.
    pub fn format(&self) -> AudioFormat {
        match self {
            Self::Narrowband(f) => *f,
        }
    }

    /// RTP timestamp units for `samples` samples of 8 kHz bridge audio.
    pub fn units_for(&self, samples: usize) -> u32 {
        (samples as u64 * u64::from(self.format().clock_rate()) / 8000) as u32
    }

    /// 8 kHz samples in a payload of `len` bytes.
    pub fn samples_in(&self, len: usize) -> usize {
        match self {
            Self::Narrowband(f) => f.payload_samples(len),
        }
    }

    /// Decodes a payload into 8 kHz samples; returns how many were written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        match self {
            Self::Narrowband(f) => f.decode_into(payload, out),
        }
    }

    /// Encodes 8 kHz samples into a payload; returns its length (0: `out` too small).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        match self {
            Self::Narrowband(f) => f.encode_from(pcm, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_transcodes_through_linear() {
        let frame: Frame = std::array::from_fn(|n| ((n as f64 * 0.3).sin() * 8000.0) as i16);
        let mut bytes = [0u8; 320];
        let mut back = [0i16; FRAME];
        for f in [AudioFormat::Pcmu, AudioFormat::Pcma, AudioFormat::L16] {
            let n = f.encode(&frame, &mut bytes);
            assert_eq!(n, f.frame_bytes());
            f.decode(&bytes[..n], &mut back);
            for (a, b) in frame.iter().zip(&back) {
                // G.711 quantisation error is below 1/32 of the amplitude at this level.
                assert!((a - b).abs() <= 8000 / 32, "{f:?}: {a} vs {b}");
            }
        }
        assert_eq!(AudioFormat::L16.encode(&frame, &mut [0; 100]), 0);
        AudioFormat::Pcmu.decode(&[0xff; 10], &mut back);
        assert!(back.iter().all(|&s| s == 0));
    }

    #[test]
    fn any_length_round_trips_and_matches_the_frame_codec() {
        let pcm: Vec<i16> = (0..480)
            .map(|n| ((n as f64 * 0.2).sin() * 9000.0) as i16)
            .collect();
        for f in [AudioFormat::Pcmu, AudioFormat::Pcma, AudioFormat::L16] {
            let mut c = LegCodec::new(f);
            for len in [80usize, 160, 240, 320, 480] {
                let mut wire = [0u8; 960];
                let n = c.encode(&pcm[..len], &mut wire);
                assert_eq!(n, len * f.frame_bytes() / 160);
                assert_eq!(c.samples_in(n), len);
                let mut back = [0i16; 480];
                assert_eq!(c.decode(&wire[..n], &mut back), len);
                if len == 160 {
                    let mut frame = [0i16; FRAME];
                    f.decode(&wire[..n], &mut frame);
                    assert_eq!(&frame[..], &back[..160]);
                }
            }
            assert_eq!(c.encode(&pcm[..160], &mut [0u8; 10]), 0);
            assert_eq!(c.units_for(160), 160);
        }
    }
}
