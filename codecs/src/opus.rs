//! Opus (RFC 6716, RTP payload RFC 7587) between the 8 kHz 20 ms frames of the media path and the
//! 48 kHz RTP clock of WebRTC, through libopus (the `opus` crate; docs/decisions/0006).
//!
//! The encoder takes one 8 kHz frame, resamples it to 48 kHz with [`crate::resample::Resampler`]
//! and encodes 20 ms (application `AUDIO` by default, see [`OpusApplication`]) with in-band FEC
//! (LBRR) on, so a receiver can rebuild a lost packet from the
//! one after it. The decoder decodes at 48 kHz and resamples down; for a lost packet it either
//! recovers it from the next packet's FEC ([`OpusDecoder::recover`]) or conceals it with
//! libopus' PLC ([`OpusDecoder::conceal`]).
//!
//! Nothing allocates after construction: the 48 kHz buffers are fixed-size arrays, the
//! resamplers size their history when built, and libopus does not allocate in
//! `opus_encode`/`opus_decode` (`codecs/tests/opus_quality.rs` counts allocations).
//!
//! Audio is mono. A stereo peer (WebRTC always signals `opus/48000/2`) is decoded to mono by
//! libopus; we send mono packets, which every decoder accepts.
//!
//! ```
//! use codecs::opus::{OpusDecoder, OpusEncoder, OpusSettings, MAX_PACKET};
//! let mut enc = OpusEncoder::new(OpusSettings::default()).unwrap();
//! let mut dec = OpusDecoder::new().unwrap();
//! let frame = [0i16; 160];
//! let mut packet = [0u8; MAX_PACKET];
//! let n = enc.encode(&frame, &mut packet).unwrap();
//! let mut out = [0i16; 160];
//! dec.decode(&packet[..n], &mut out).unwrap();
//! ```

use crate::resample::Resampler;
use crate::{CodecError, FRAME_SAMPLES};

/// The RTP clock rate of Opus (RFC 7587 §4.1): always 48 kHz whatever the audio bandwidth.
pub const CLOCK_RATE: u32 = 48_000;
/// Samples at 48 kHz in one 20 ms frame (also the RTP timestamp step per packet).
pub const FRAME_48K: usize = 960;
/// Largest Opus packet we produce or accept, in bytes (RFC 6716 §3.4: 1275 per frame; one 20 ms
/// frame at any bitrate WebRTC uses fits far below this).
pub const MAX_PACKET: usize = 1500;
/// The longest packet duration Opus allows: 120 ms, in 48 kHz samples.
const MAX_DURATION_48K: usize = 5760;
/// The longest packet duration in 8 kHz samples.
pub const MAX_DURATION_8K: usize = MAX_DURATION_48K / 6;

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Target bitrate in bit/s (6,000..=510,000). 32 kbit/s by default: wideband speech with
    /// room for the FEC layer.
    pub bitrate: i32,
    /// In-band forward error correction (LBRR). On by default.
    pub fec: bool,
    /// Expected packet loss in percent (0..=100); tells the encoder how much FEC to spend.
    /// Updated from RTCP receiver reports with [`OpusEncoder::set_expected_loss`].
    pub expected_loss_percent: i32,
    /// Encoder complexity 0..=10 (CPU against quality). 1 by default: a gateway encodes hundreds
    /// of streams, and for narrowband speech the gain above it is small while the cost doubles
    /// (docs/BENCHMARKS.md, "Opus").
    pub complexity: i32,
    /// Widest audio band the encoder codes. Narrowband (4 kHz) by default: what we encode comes
    /// from 8 kHz frames, which carry nothing above 4 kHz, and coding a wider band only costs
    /// CPU and bits.
    pub max_bandwidth: OpusBandwidth,
    /// libopus application mode.
    pub application: OpusApplication,
    /// Discontinuous transmission (no packets during silence). Off by default: the media path
    /// and RTCP statistics expect one packet per 20 ms.
    pub dtx: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        Self {
            bitrate: 32_000,
            fec: true,
            expected_loss_percent: 10,
            complexity: 1,
            max_bandwidth: OpusBandwidth::Narrowband,
            application: OpusApplication::Audio,
            dtx: false,
        }
    }
}

/// libopus' application modes (`OPUS_APPLICATION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusApplication {
    /// `VOIP`: speech intelligibility first; a variable high-pass filter (up to ~100 Hz) and
    /// SILK preference. Changes the waveform's phase, so correlation with the source drops.
    Voip,
    /// `AUDIO`: fidelity to the input. Our default: the input is already telephone-band speech
    /// from the far leg, and a transcoding gateway should pass it on as it came.
    Audio,
}

/// Audio bandwidths of Opus (RFC 6716 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusBandwidth {
    /// 4 kHz (8 kHz sampling).
    Narrowband,
    /// 6 kHz.
    Mediumband,
    /// 8 kHz (16 kHz sampling).
    Wideband,
    /// 12 kHz.
    Superwideband,
    /// 20 kHz.
    Fullband,
}

impl OpusBandwidth {
    fn to_lib(self) -> opus::Bandwidth {
        match self {
            Self::Narrowband => opus::Bandwidth::Narrowband,
            Self::Mediumband => opus::Bandwidth::Mediumband,
            Self::Wideband => opus::Bandwidth::Wideband,
            Self::Superwideband => opus::Bandwidth::Superwideband,
            Self::Fullband => opus::Bandwidth::Fullband,
        }
    }
}

fn opus_err(context: &'static str, e: opus::Error) -> CodecError {
    CodecError::InvalidArgument(format!("opus {context}: {e}"))
}

/// An Opus encoder fed with 8 kHz frames.
pub struct OpusEncoder {
    inner: opus::Encoder,
    up: Resampler,
    wide: [i16; FRAME_48K],
    settings: OpusSettings,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Builds an encoder (mono, 48 kHz).
    ///
    /// # Errors
    /// [`CodecError::InvalidArgument`] if libopus refuses a setting (bitrate, complexity or loss
    /// out of range).
    pub fn new(settings: OpusSettings) -> Result<Self, CodecError> {
        let application = match settings.application {
            OpusApplication::Voip => opus::Application::Voip,
            OpusApplication::Audio => opus::Application::Audio,
        };
        let mut inner = opus::Encoder::new(CLOCK_RATE, opus::Channels::Mono, application)
            .map_err(|e| opus_err("encoder", e))?;
        inner
            .set_bitrate(opus::Bitrate::Bits(settings.bitrate))
            .map_err(|e| opus_err("bitrate", e))?;
        inner
            .set_inband_fec(settings.fec)
            .map_err(|e| opus_err("fec", e))?;
        inner
            .set_packet_loss_perc(settings.expected_loss_percent)
            .map_err(|e| opus_err("packet loss", e))?;
        inner
            .set_complexity(settings.complexity)
            .map_err(|e| opus_err("complexity", e))?;
        inner
            .set_max_bandwidth(settings.max_bandwidth.to_lib())
            .map_err(|e| opus_err("bandwidth", e))?;
        inner
            .set_dtx(settings.dtx)
            .map_err(|e| opus_err("dtx", e))?;
        Ok(Self {
            inner,
            up: Resampler::new(crate::SAMPLE_RATE, CLOCK_RATE)?,
            wide: [0; FRAME_48K],
            settings,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> OpusSettings {
        self.settings
    }

    /// Tells the encoder the loss the far end reports (RTCP fraction lost, in percent), so the
    /// FEC layer grows with the loss. Values are clamped to 0..=100.
    pub fn set_expected_loss(&mut self, percent: i32) {
        let p = percent.clamp(0, 100);
        if p != self.settings.expected_loss_percent && self.inner.set_packet_loss_perc(p).is_ok() {
            self.settings.expected_loss_percent = p;
        }
    }

    /// Encodes one 20 ms frame of 8 kHz audio into `out`; returns the packet length.
    ///
    /// # Errors
    /// [`CodecError::OutputTooSmall`] if libopus cannot fit the packet (pass [`MAX_PACKET`]).
    pub fn encode(
        &mut self,
        frame: &[i16; FRAME_SAMPLES],
        out: &mut [u8],
    ) -> Result<usize, CodecError> {
        // 160 input samples always give exactly 960 output samples (the ratio is integral).
        let n = self.up.process(frame, &mut self.wide)?;
        debug_assert_eq!(n, FRAME_48K);
        self.inner
            .encode(&self.wide, out)
            .map_err(|_| CodecError::OutputTooSmall {
                needed: MAX_PACKET,
                got: out.len(),
            })
    }
}

/// An Opus decoder producing 8 kHz audio.
pub struct OpusDecoder {
    inner: opus::Decoder,
    down: Resampler,
    wide: Box<[i16; MAX_DURATION_48K]>,
    /// 48 kHz samples of the last decoded packet (the duration PLC and FEC fill).
    last_duration: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("last_duration", &self.last_duration)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Builds a mono 48 kHz decoder.
    ///
    /// # Errors
    /// [`CodecError::InvalidArgument`] if libopus cannot create the decoder.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: opus::Decoder::new(CLOCK_RATE, opus::Channels::Mono)
                .map_err(|e| opus_err("decoder", e))?,
            down: Resampler::new(CLOCK_RATE, crate::SAMPLE_RATE)?,
            wide: Box::new([0; MAX_DURATION_48K]),
            last_duration: FRAME_48K,
        })
    }

    fn downsample(&mut self, wide_len: usize, out: &mut [i16]) -> Result<usize, CodecError> {
        let wide = self.wide.get(..wide_len).unwrap_or(&[]);
        self.down.process(wide, out)
    }

    /// Decodes one packet into 8 kHz samples at the start of `out`; returns how many (160 for a
    /// 20 ms packet; up to [`MAX_DURATION_8K`]).
    ///
    /// # Errors
    /// [`CodecError::Malformed`] for a packet libopus rejects (the caller should then
    /// [`conceal`](Self::conceal)); [`CodecError::OutputTooSmall`] if `out` is shorter than the
    /// packet's duration.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if packet.is_empty() {
            return self.conceal(out);
        }
        let duration = opus::packet::get_nb_samples(packet, CLOCK_RATE).map_err(|e| {
            CodecError::Malformed {
                format: "Opus",
                reason: e.to_string(),
            }
        })?;
        if duration > MAX_DURATION_48K {
            return Err(CodecError::Malformed {
                format: "Opus",
                reason: format!("packet of {duration} samples (more than 120 ms)"),
            });
        }
        if out.len() < self.down.output_len(duration) {
            return Err(CodecError::OutputTooSmall {
                needed: self.down.output_len(duration),
                got: out.len(),
            });
        }
        let n = self
            .inner
            .decode(packet, &mut self.wide[..], false)
            .map_err(|e| CodecError::Malformed {
                format: "Opus",
                reason: e.to_string(),
            })?;
        self.last_duration = n;
        self.downsample(n, out)
    }

    /// Rebuilds the packet before `next` (which was lost) from `next`'s in-band FEC; falls back
    /// to PLC when `next` carries none. Then call [`decode`](Self::decode) with `next` as usual.
    /// Writes one lost packet's duration (as the last packet's) to `out`; returns the count.
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn recover(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if next.is_empty() {
            return self.conceal(out);
        }
        // libopus itself falls back to PLC when `next` carries no LBRR data (CELT-only packets,
        // or the encoder spent none on this frame).
        let duration = self.last_duration.clamp(120, MAX_DURATION_48K);
        if out.len() < self.down.output_len(duration) {
            return Err(CodecError::OutputTooSmall {
                needed: self.down.output_len(duration),
                got: out.len(),
            });
        }
        let n = self
            .inner
            .decode(next, &mut self.wide[..duration], true)
            .map_err(|e| CodecError::Malformed {
                format: "Opus",
                reason: e.to_string(),
            })?;
        self.downsample(n, out)
    }

    /// Conceals one lost packet (libopus PLC: pitch-based extrapolation fading to silence);
    /// writes the last packet's duration to `out` and returns the count.
    ///
    /// # Errors
    /// [`CodecError::OutputTooSmall`] if `out` is shorter than that duration.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let duration = self.last_duration.clamp(120, MAX_DURATION_48K);
        if out.len() < self.down.output_len(duration) {
            return Err(CodecError::OutputTooSmall {
                needed: self.down.output_len(duration),
                got: out.len(),
            });
        }
        let n = self
            .inner
            .decode(&[], &mut self.wide[..duration], false)
            .map_err(|e| CodecError::Malformed {
                format: "Opus",
                reason: e.to_string(),
            })?;
        self.downsample(n, out)
    }
}

/// Whether an Opus packet carries SILK LBRR (in-band FEC) data for the previous frame.
///
/// Only SILK and hybrid packets can (CELT-only packets have none). The LBRR flag is the bit after
/// the VAD flags at the start of the first SILK frame (RFC 6716 §4.2.3–4.2.4). The flags are range coded
/// with probability ½ each, so the first byte's top bits are the flags themselves. Meant for
/// statistics and tests: decoding does not depend on it.
pub fn lbrr_present(packet: &[u8]) -> bool {
    let Some(&toc) = packet.first() else {
        return false;
    };
    let config = toc >> 3;
    // Configs 0..=11 are SILK-only, 12..=15 hybrid, 16..=31 CELT-only.
    if config >= 16 {
        return false;
    }
    // Frames of 10 ms hold one SILK frame, 20 ms one, 40 ms two, 60 ms three.
    let silk_frames = match config & 3 {
        2 => 2,
        3 => 3,
        _ => 1,
    };
    let stereo = toc & 0x04 != 0;
    // Code 0 (one frame) has the frame data right after the TOC; for the other codes we rely on
    // libopus (no cheap answer): assume FEC may be present.
    if toc & 0x03 != 0 {
        return true;
    }
    let Some(&first) = packet.get(1) else {
        return false;
    };
    // Bits, MSB first: VAD flag per SILK frame, then the LBRR flag (mid channel).
    let lbrr_bit = 7 - silk_frames;
    let mid = first >> lbrr_bit & 1 == 1;
    if mid || !stereo {
        return mid;
    }
    // Stereo: the side channel's VAD flags and LBRR flag follow (bit 2 × frames + 1, MSB first).
    let side_shift = 6 - 2 * silk_frames;
    first >> side_shift & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, offset: usize) -> [i16; FRAME_SAMPLES] {
        std::array::from_fn(|i| {
            let t = (offset * FRAME_SAMPLES + i) as f64 / 8000.0;
            ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0
                + (t * 1230.0 * std::f64::consts::TAU).sin() * 3000.0) as i16
                * i16::from(n > 0)
        })
    }

    #[test]
    fn settings_out_of_range_are_errors() {
        let bad = OpusSettings {
            complexity: 42,
            ..OpusSettings::default()
        };
        assert!(OpusEncoder::new(bad).is_err());
    }

    #[test]
    fn a_voip_packet_carries_fec_after_the_first() {
        let mut enc = OpusEncoder::new(OpusSettings::default()).unwrap();
        let mut pkt = [0u8; MAX_PACKET];
        let mut with_fec = 0;
        for k in 0..50 {
            let n = enc.encode(&tone(1, k), &mut pkt).unwrap();
            assert!(n > 2 && n < 400, "{n}");
            if k > 2 && lbrr_present(&pkt[..n]) {
                with_fec += 1;
            }
        }
        assert!(with_fec > 30, "{with_fec} of 47 packets carried LBRR");
    }

    #[test]
    fn garbage_and_short_buffers_are_errors_not_panics() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [0i16; MAX_DURATION_8K];
        // TOC code 3 with a frame count of 0 is invalid.
        assert!(dec.decode(&[0x03, 0x00], &mut out).is_err());
        let mut enc = OpusEncoder::new(OpusSettings::default()).unwrap();
        let mut pkt = [0u8; MAX_PACKET];
        let n = enc.encode(&tone(1, 0), &mut pkt).unwrap();
        assert!(matches!(
            dec.decode(&pkt[..n], &mut out[..10]),
            Err(CodecError::OutputTooSmall { .. })
        ));
        assert!(enc.encode(&tone(1, 1), &mut []).is_err());
        assert!(!lbrr_present(&[]));
    }
}
