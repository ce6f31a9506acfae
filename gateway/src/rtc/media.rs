//! The media half of a WebRTC leg, sans-IO: decrypted RTP in (from webrtc-rs), 20 ms 8 kHz frames
//! out through the jitter buffer and the decoder (G.711 with PLC, or Opus with FEC/PLC); frames
//! in, RTP out through one outbound context kept for the leg's life; RFC 4733 both ways, each
//! received digit reported once.
//!
//! Opus is decoded one frame behind the jitter buffer's play position so that a lost packet can
//! be rebuilt from the in-band FEC of the packet after it (which must have arrived by then): 20 ms
//! of extra delay on Opus legs buys FEC recovery instead of extrapolation.

use std::time::{Duration, Instant};

use codecs::opus::{MAX_DURATION_8K, MAX_PACKET, OpusDecoder, OpusEncoder, OpusSettings};
use codecs::plc::Plc;

use crate::media::bridge::Frame;
use crate::media::codec::AudioFormat;
use crate::media::dtmf::{
    DtmfReceiver, DtmfSendError, DtmfSender, DtmfSenderConfig, ReceivedDigit, event_to_digit,
};
use crate::media::jitter::{JitterBuffer, JitterConfig, MAX_PAYLOAD, Playout, PulledAudio};
use crate::media::rtp::{OutboundHeader, ReceiveStats, RtpPacket, RtpSender};

const FRAME: usize = codecs::FRAME_SAMPLES;

/// The audio codecs a WebRTC leg negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtcCodec {
    /// Opus at 48 kHz (RFC 7587), in-band FEC.
    Opus,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl RtcCodec {
    /// RTP clock rate.
    pub const fn clock_rate(self) -> u32 {
        match self {
            Self::Opus => codecs::opus::CLOCK_RATE,
            Self::Pcmu | Self::Pcma => 8000,
        }
    }

    /// Timestamp units per 20 ms packet.
    pub const fn frame_units(self) -> u32 {
        self.clock_rate() / 50
    }

    /// The SDP encoding name (`a=rtpmap`), lower case.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Opus => "opus",
            Self::Pcmu => "pcmu",
            Self::Pcma => "pcma",
        }
    }
}

impl std::fmt::Display for RtcCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Opus => "opus/48000",
            Self::Pcmu => "PCMU/8000",
            Self::Pcma => "PCMA/8000",
        })
    }
}

/// What was negotiated for one leg's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec both directions use.
    pub codec: RtcCodec,
    /// Its payload type.
    pub payload_type: u8,
    /// The telephone-event payload type at the codec's clock rate, if negotiated.
    pub telephone_event: Option<u8>,
    /// Our SSRC (the sender's).
    pub ssrc: u32,
}

/// One outbound packet: header fields and the payload length written to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutPacket {
    /// Header fields (payload type, sequence, timestamp, SSRC, marker).
    pub header: OutboundHeader,
    /// Payload bytes at the start of the buffer passed in.
    pub len: usize,
}

/// Counters of one leg's media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCounters {
    /// Audio packets received.
    pub received: u64,
    /// Audio packets sent.
    pub sent: u64,
    /// Telephone-event packets sent.
    pub events_sent: u64,
    /// Frames decoded from a packet.
    pub decoded: u64,
    /// Lost frames rebuilt from the next packet's FEC (Opus).
    pub fec_recovered: u64,
    /// Frames concealed (PLC).
    pub concealed: u64,
    /// Packets whose payload type was not negotiated, or that failed to decode.
    pub dropped: u64,
}

#[derive(Debug)]
enum Slot {
    Empty,
    Lost,
    Packet { len: usize },
}

enum Decoder {
    G711 { format: AudioFormat, plc: Box<Plc> },
    Opus(Box<OpusState>),
}

struct OpusState {
    dec: OpusDecoder,
    enc: OpusEncoder,
    /// The frame popped last tick, decoded this tick.
    held: Slot,
    held_payload: [u8; MAX_PAYLOAD],
    scratch: [i16; MAX_DURATION_8K],
}

/// The sans-IO media state of one WebRTC leg.
pub struct RtcMedia {
    neg: Negotiated,
    jitter: JitterBuffer,
    decoder: Decoder,
    sender: RtpSender,
    dtmf_tx: DtmfSender,
    dtmf_rx: DtmfReceiver,
    stats: Option<ReceiveStats>,
    counters: MediaCounters,
}

impl std::fmt::Debug for RtcMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcMedia")
            .field("negotiated", &self.neg)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl RtcMedia {
    /// Media state for a negotiated leg.
    ///
    /// # Errors
    /// The Opus encoder refused `opus` (a setting out of range).
    pub fn new(
        neg: Negotiated,
        opus: OpusSettings,
        now: Instant,
    ) -> Result<Self, codecs::CodecError> {
        let jitter = JitterBuffer::new(
            JitterConfig {
                clock_rate: neg.codec.clock_rate(),
                frame_units: neg.codec.frame_units(),
                ..JitterConfig::default()
            },
            now,
        );
        let decoder = match neg.codec {
            RtcCodec::Opus => Decoder::Opus(Box::new(OpusState {
                dec: OpusDecoder::new()?,
                enc: OpusEncoder::new(opus)?,
                held: Slot::Empty,
                held_payload: [0; MAX_PAYLOAD],
                scratch: [0; MAX_DURATION_8K],
            })),
            RtcCodec::Pcmu => Decoder::G711 {
                format: AudioFormat::Pcmu,
                plc: Box::new(Plc::new()),
            },
            RtcCodec::Pcma => Decoder::G711 {
                format: AudioFormat::Pcma,
                plc: Box::new(Plc::new()),
            },
        };
        let seed = neg.ssrc;
        Ok(Self {
            neg,
            jitter,
            decoder,
            sender: RtpSender::new(neg.ssrc, (seed >> 16) as u16, seed.rotate_left(11)),
            dtmf_tx: DtmfSender::new(DtmfSenderConfig {
                payload_type: neg.telephone_event.unwrap_or(101),
                clock_rate: neg.codec.clock_rate(),
                ..DtmfSenderConfig::default()
            }),
            dtmf_rx: DtmfReceiver::new(Duration::from_millis(250)),
            stats: None,
            counters: MediaCounters::default(),
        })
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> Negotiated {
        self.neg
    }

    /// Counters.
    pub fn counters(&self) -> MediaCounters {
        self.counters
    }

    /// Receive statistics of the peer's stream (loss, jitter), once a packet came.
    pub fn receive_stats(&self) -> Option<&ReceiveStats> {
        self.stats.as_ref()
    }

    /// The jitter buffer (delay, counters).
    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.jitter
    }

    /// The outbound RTP context.
    pub fn sender(&self) -> &RtpSender {
        &self.sender
    }

    /// Tells the Opus encoder the loss the peer reports (percent), so FEC follows the loss.
    pub fn set_peer_loss(&mut self, percent: i32) {
        if let Decoder::Opus(o) = &mut self.decoder {
            o.enc.set_expected_loss(percent.max(5));
        }
    }

    /// One received (decrypted) RTP packet.
    pub fn on_rtp(&mut self, now: Instant, p: &RtpPacket<'_>) {
        if Some(p.payload_type) == self.neg.telephone_event {
            self.dtmf_rx
                .handle_packet(now, p.ssrc, p.timestamp, p.payload);
            return;
        }
        if p.payload_type != self.neg.payload_type {
            self.counters.dropped += 1;
            return;
        }
        let clock = self.neg.codec.clock_rate();
        let stats = self
            .stats
            .get_or_insert_with(|| ReceiveStats::new(p.ssrc, clock));
        if stats.ssrc() != p.ssrc {
            *stats = ReceiveStats::new(p.ssrc, clock);
        }
        stats.update(p.sequence, p.timestamp, now);
        self.counters.received += 1;
        let _ = self.jitter.insert(p, now);
    }

    /// The next received digit, once per digit (at its end), with its duration.
    pub fn poll_digit(&mut self) -> Option<(char, Duration)> {
        while let Some(d) = self.dtmf_rx.poll_event() {
            if let ReceivedDigit::Ended {
                event, duration, ..
            } = d
                && let Some(c) = event_to_digit(event)
            {
                let ms = u64::from(duration) * 1000 / u64::from(self.neg.codec.clock_rate());
                return Some((c, Duration::from_millis(ms)));
            }
        }
        None
    }

    /// Runs digit timeouts (an event whose end packets never came).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.dtmf_rx.handle_timeout(now);
    }

    /// The 20 ms frame of received audio due at `now`.
    pub fn pull(&mut self, now: Instant, out: &mut Frame) -> PulledAudio {
        match &mut self.decoder {
            Decoder::G711 { format, plc } => match self.jitter.pop(now) {
                Playout::Frame(f) => {
                    format.decode(f.payload, out);
                    plc.good_frame(out);
                    self.counters.decoded += 1;
                    PulledAudio::Voice
                }
                Playout::Lost | Playout::Stretch => {
                    plc.conceal(out);
                    self.counters.concealed += 1;
                    PulledAudio::Concealed
                }
                Playout::Empty => {
                    out.fill(0);
                    plc.reset();
                    PulledAudio::Silence
                }
            },
            Decoder::Opus(o) => {
                let o = &mut **o;
                // Pop this tick's frame, keep it; decode the one held since last tick.
                let mut next_payload = [0u8; MAX_PAYLOAD];
                let next = match self.jitter.pop(now) {
                    Playout::Frame(f) => {
                        let len = f.payload.len().min(MAX_PAYLOAD);
                        next_payload[..len].copy_from_slice(&f.payload[..len]);
                        Slot::Packet { len }
                    }
                    Playout::Lost | Playout::Stretch => Slot::Lost,
                    Playout::Empty => Slot::Empty,
                };
                let held = std::mem::replace(&mut o.held, Slot::Empty);
                let result = match held {
                    Slot::Empty => {
                        out.fill(0);
                        PulledAudio::Silence
                    }
                    Slot::Packet { len } => {
                        match o.dec.decode(&o.held_payload[..len], &mut o.scratch) {
                            Ok(_) => {
                                self.counters.decoded += 1;
                                PulledAudio::Voice
                            }
                            Err(_) => {
                                self.counters.dropped += 1;
                                let _ = o.dec.conceal(&mut o.scratch);
                                self.counters.concealed += 1;
                                PulledAudio::Concealed
                            }
                        }
                    }
                    Slot::Lost => {
                        let r = match &next {
                            Slot::Packet { len } if *len <= MAX_PACKET => {
                                self.counters.fec_recovered += 1;
                                o.dec.recover(&next_payload[..*len], &mut o.scratch)
                            }
                            _ => {
                                self.counters.concealed += 1;
                                o.dec.conceal(&mut o.scratch)
                            }
                        };
                        if r.is_err() {
                            o.scratch.fill(0);
                        }
                        PulledAudio::Concealed
                    }
                };
                if result != PulledAudio::Silence {
                    // A 20 ms packet decodes to exactly one frame; longer ones are cut to 20 ms.
                    out.copy_from_slice(&o.scratch[..FRAME]);
                }
                if let Slot::Packet { len } = next {
                    o.held_payload[..len].copy_from_slice(&next_payload[..len]);
                }
                o.held = next;
                result
            }
        }
    }

    /// Encodes one 20 ms frame to send; the payload goes to the start of `out` (at least
    /// [`MAX_PACKET`] bytes). `None` while a telephone-event is being sent instead (the media
    /// clock still advances) or if encoding failed.
    pub fn send(&mut self, frame: &Frame, out: &mut [u8]) -> Option<OutPacket> {
        let units = self.neg.codec.frame_units();
        if self.dtmf_tx.is_active() {
            self.sender.skip(units);
            return None;
        }
        let len = match &mut self.decoder {
            Decoder::G711 { format, .. } => format.encode(frame, out),
            Decoder::Opus(o) => o.enc.encode(frame, out).ok()?,
        };
        if len == 0 {
            return None;
        }
        let header = self.sender.next_packet(self.neg.payload_type, units, len);
        self.counters.sent += 1;
        Some(OutPacket { header, len })
    }

    /// Queues a digit to send as RFC 4733 events.
    ///
    /// # Errors
    /// Not a DTMF digit, or the queue is full. (Without a negotiated telephone-event the digits
    /// are queued but never sent: check [`RtcMedia::has_telephone_event`] first.)
    pub fn send_digit(&mut self, digit: char) -> Result<(), DtmfSendError> {
        self.dtmf_tx.send_digit(digit)
    }

    /// Whether telephone-event was negotiated (digits can be sent in band otherwise only).
    pub fn has_telephone_event(&self) -> bool {
        self.neg.telephone_event.is_some()
    }

    /// The next telephone-event packet due at `now` (call until `None`); payload to `out`.
    pub fn poll_dtmf(&mut self, now: Instant, out: &mut [u8]) -> Option<OutPacket> {
        self.neg.telephone_event?;
        let p = self.dtmf_tx.poll(now, &mut self.sender)?;
        let dst = out.get_mut(..p.payload.len())?;
        dst.copy_from_slice(&p.payload);
        self.counters.events_sent += 1;
        Some(OutPacket {
            header: p.header,
            len: p.payload.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::TelephoneEvent;

    fn neg(codec: RtcCodec) -> Negotiated {
        Negotiated {
            codec,
            payload_type: match codec {
                RtcCodec::Opus => 111,
                RtcCodec::Pcmu => 0,
                RtcCodec::Pcma => 8,
            },
            telephone_event: Some(if codec == RtcCodec::Opus { 110 } else { 126 }),
            ssrc: 0x1234_5678,
        }
    }

    fn tone(k: usize) -> Frame {
        std::array::from_fn(|i| {
            let t = (k * FRAME + i) as f64 / 8000.0;
            ((t * 700.0 * std::f64::consts::TAU).sin() * 9000.0) as i16
        })
    }

    /// Sends `frames` through `a` into `b` on virtual time, dropping packets `lost` marks;
    /// returns what `b` played.
    fn run(codec: RtcCodec, frames: usize, lost: impl Fn(usize) -> bool) -> (Vec<i16>, RtcMedia) {
        let t0 = Instant::now();
        let mut a = RtcMedia::new(neg(codec), OpusSettings::default(), t0).unwrap();
        let mut b = RtcMedia::new(neg(codec), OpusSettings::default(), t0).unwrap();
        let mut buf = [0u8; MAX_PACKET];
        let mut out = Vec::new();
        let mut frame = [0i16; FRAME];
        for k in 0..frames + 10 {
            let now = t0 + Duration::from_millis(20 * k as u64);
            if k < frames
                && let Some(p) = a.send(&tone(k), &mut buf)
                && !lost(k)
            {
                let pkt = p.header.packet(&buf[..p.len]);
                b.on_rtp(now, &pkt);
            }
            b.pull(now, &mut frame);
            out.extend_from_slice(&frame);
        }
        (out, b)
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64
    }

    #[test]
    fn g711_and_opus_frames_arrive_and_losses_are_concealed() {
        for codec in [RtcCodec::Pcmu, RtcCodec::Pcma, RtcCodec::Opus] {
            let (out, b) = run(codec, 100, |k| k % 10 == 5);
            let c = b.counters();
            assert!(c.decoded >= 85, "{codec}: {c:?}");
            assert!(c.received == 90, "{codec}: {c:?}");
            if codec == RtcCodec::Opus {
                assert!(c.fec_recovered >= 9, "{codec}: {c:?}");
            } else {
                assert!(c.concealed >= 9, "{codec}: {c:?}");
            }
            // The tone is there at the right level (no gaps of silence where packets were lost).
            let e = energy(&out[40 * FRAME..90 * FRAME]);
            assert!(e > 9000.0 * 9000.0 / 2.0 * 0.5, "{codec}: energy {e}");
            // No frame falls silent (a gap would be 0); FEC-rebuilt Opus frames come from the
            // lower-rate LBRR layer and may be quieter.
            for k in 40..90 {
                let fe = energy(&out[k * FRAME..(k + 1) * FRAME]);
                assert!(
                    fe > 9000.0 * 9000.0 / 2.0 * 0.1,
                    "{codec}: frame {k} energy {fe}"
                );
            }
        }
    }

    #[test]
    fn digits_are_reported_once_and_sent_with_the_leg_ssrc() {
        let t0 = Instant::now();
        let mut a = RtcMedia::new(neg(RtcCodec::Opus), OpusSettings::default(), t0).unwrap();
        let mut b = RtcMedia::new(neg(RtcCodec::Opus), OpusSettings::default(), t0).unwrap();
        a.send_digit('5').unwrap();
        a.send_digit('#').unwrap();
        let mut buf = [0u8; MAX_PACKET];
        let mut got = Vec::new();
        let frame = [0i16; FRAME];
        let mut events = 0;
        for k in 0..60 {
            let now = t0 + Duration::from_millis(10 * k);
            while let Some(p) = a.poll_dtmf(now, &mut buf) {
                assert_eq!(p.header.ssrc, 0x1234_5678);
                assert_eq!(p.header.payload_type, 110);
                TelephoneEvent::parse(&buf[..p.len]).unwrap();
                let pkt = p.header.packet(&buf[..p.len]);
                // Every event packet delivered twice: duplicates must not double digits.
                b.on_rtp(now, &pkt);
                b.on_rtp(now, &pkt);
                events += 1;
            }
            if k % 2 == 0 {
                let _ = a.send(&frame, &mut buf);
            }
            b.handle_timeout(now);
            while let Some(d) = b.poll_digit() {
                got.push(d);
            }
        }
        assert!(events >= 6, "{events} event packets");
        let digits: Vec<char> = got.iter().map(|d| d.0).collect();
        assert_eq!(digits, vec!['5', '#']);
        for (_, dur) in got {
            assert!(
                dur >= Duration::from_millis(80) && dur <= Duration::from_millis(150),
                "{dur:?}"
            );
        }
    }

    #[test]
    fn foreign_payload_types_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut b = RtcMedia::new(neg(RtcCodec::Pcmu), OpusSettings::default(), t0).unwrap();
        b.on_rtp(t0, &RtpPacket::new(96, false, 1, 160, 9, &[0; 160]));
        assert_eq!(b.counters().dropped, 1);
        assert_eq!(b.counters().received, 0);
    }
}
