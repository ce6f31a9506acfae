//! The narrowband payload formats a leg can negotiate (PCMU, PCMA, L16 at 8 kHz) and the
//! conversion of one 20 ms frame between each of them and linear PCM. Transcoding PCMU ↔ PCMA ↔
//! L16 is decode on one leg, encode on the other (PCMU ↔ PCMA could skip the linear step with
//! `codecs::g711::transcode`, but the bridge carries linear frames so that mixing, tones and
//! DTMF interworking work on any pair of legs).

use codecs::g711::{self, Law};

use super::bridge::Frame;

const FRAME: usize = codecs::FRAME_SAMPLES;

/// A payload format of 8 kHz audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Linear 16-bit big-endian (RFC 3551 L16), mono at 8 kHz, dynamic payload type.
    L16,
}

impl AudioFormat {
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
}
