//! RTP (RFC 3550): packet parsing and serialisation, the per-leg outbound context, sequence
//! number extension (A.1) and per-source receive statistics (loss, interarrival jitter, A.8).
//!
//! Parsing borrows the datagram ([`RtpPacket`] is a view), serialising writes into a caller's
//! buffer: neither allocates.

use std::time::Instant;

use thiserror::Error;

/// Length of the fixed RTP header.
pub const HEADER_LEN: usize = 12;
/// Most CSRCs a header can carry (the CC field is 4 bits).
pub const MAX_CSRC: usize = 15;

/// Why a datagram is not a valid RTP packet. Each variant comes from the peer's bytes: the packet
/// is dropped and counted; nothing a local user can fix except the peer's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("RTP packet of {len} bytes is shorter than the 12-byte fixed header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// Version field is not 2 (often STUN, DTLS or garbage on the media port).
    #[error("RTP version {version} (only version 2 exists); not an RTP packet")]
    BadVersion {
        /// Version bits found.
        version: u8,
    },
    /// The CSRC list runs past the end of the packet.
    #[error("RTP header announces {count} CSRCs but the packet ends first")]
    TruncatedCsrc {
        /// CC field.
        count: u8,
    },
    /// The header extension runs past the end of the packet.
    #[error("RTP header extension of {words} words runs past the end of the packet")]
    TruncatedExtension {
        /// Extension length in 32-bit words (0 if even its header is missing).
        words: u16,
    },
    /// The padding count is zero or larger than the payload area.
    #[error("RTP padding count {count} is invalid for a payload area of {available} bytes")]
    BadPadding {
        /// Last byte of the packet.
        count: u8,
        /// Bytes after the header.
        available: usize,
    },
    /// Serialising: the output buffer is too small.
    #[error("output buffer of {have} bytes cannot hold an RTP packet of {need} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Serialising: a field does not fit its wire width.
    #[error("RTP field out of range: {what}")]
    FieldOutOfRange {
        /// Which field.
        what: &'static str,
    },
}

/// RTP header extension (RFC 3550 5.3.1): profile-defined 16 bits plus data in 32-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// Profile-defined identifier (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// Extension data; its length is a multiple of 4.
    pub data: &'a [u8],
}

/// One RTP packet, borrowed from a datagram or about to be written into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit (for audio: first packet of a talkspurt).
    pub marker: bool,
    /// Payload type, 7 bits.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Raw CSRC list (4 bytes each, big-endian); see [`RtpPacket::csrc`].
    pub csrc_bytes: &'a [u8],
    /// Header extension, if the X bit is set.
    pub extension: Option<RtpExtension<'a>>,
    /// Payload without padding.
    pub payload: &'a [u8],
    /// Padding bytes to add when serialising (parsed packets: how many were present, including
    /// the count byte). 0 for none.
    pub padding: u8,
}

impl<'a> RtpPacket<'a> {
    /// A packet with no CSRC, extension or padding.
    pub fn new(
        payload_type: u8,
        marker: bool,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &'a [u8],
    ) -> Self {
        Self {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc_bytes: &[],
            extension: None,
            payload,
            padding: 0,
        }
    }

    /// Parses one datagram strictly: version 2, every length checked.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let fixed: &[u8; HEADER_LEN] = buf
            .first_chunk()
            .ok_or(RtpError::TooShort { len: buf.len() })?;
        let version = fixed[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion { version });
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let cc = fixed[0] & 0x0f;
        let marker = fixed[1] & 0x80 != 0;
        let payload_type = fixed[1] & 0x7f;
        let sequence = u16::from_be_bytes([fixed[2], fixed[3]]);
        let timestamp = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let ssrc = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        let rest = &buf[HEADER_LEN..];
        let csrc_len = usize::from(cc) * 4;
        let (csrc_bytes, rest) = rest
            .split_at_checked(csrc_len)
            .ok_or(RtpError::TruncatedCsrc { count: cc })?;
        let (extension, rest) = if has_extension {
            let (ext_head, rest) = rest
                .split_first_chunk::<4>()
                .ok_or(RtpError::TruncatedExtension { words: 0 })?;
            let profile = u16::from_be_bytes([ext_head[0], ext_head[1]]);
            let words = u16::from_be_bytes([ext_head[2], ext_head[3]]);
            let (data, rest) = rest
                .split_at_checked(usize::from(words) * 4)
                .ok_or(RtpError::TruncatedExtension { words })?;
            (Some(RtpExtension { profile, data }), rest)
        } else {
            (None, rest)
        };
        let (payload, padding) = if has_padding {
            let count = rest.last().copied().unwrap_or(0);
            if count == 0 || usize::from(count) > rest.len() {
                return Err(RtpError::BadPadding {
                    count,
                    available: rest.len(),
                });
            }
            (&rest[..rest.len() - usize::from(count)], count)
        } else {
            (rest, 0)
        };
        Ok(Self {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc_bytes,
            extension,
            payload,
            padding,
        })
    }

    /// The contributing sources.
    pub fn csrc(&self) -> impl Iterator<Item = u32> + '_ {
        self.csrc_bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Bytes [`RtpPacket::write`] will produce.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN
            + self.csrc_bytes.len()
            + self.extension.map_or(0, |e| 4 + e.data.len())
            + self.payload.len()
            + usize::from(self.padding)
    }

    /// Serialises into `out`, returning the bytes written.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        if self.payload_type > 0x7f {
            return Err(RtpError::FieldOutOfRange {
                what: "payload type above 127",
            });
        }
        if self.csrc_bytes.len() % 4 != 0 || self.csrc_bytes.len() > MAX_CSRC * 4 {
            return Err(RtpError::FieldOutOfRange {
                what: "CSRC list not 0..=15 whole 32-bit entries",
            });
        }
        let ext_words = match self.extension {
            Some(e) if e.data.len() % 4 != 0 || e.data.len() / 4 > usize::from(u16::MAX) => {
                return Err(RtpError::FieldOutOfRange {
                    what: "header extension not a whole number of 32-bit words",
                });
            }
            Some(e) => Some(e.data.len() / 4),
            None => None,
        };
        let need = self.wire_len();
        let have = out.len();
        let out = out
            .get_mut(..need)
            .ok_or(RtpError::BufferTooSmall { need, have })?;
        let cc = (self.csrc_bytes.len() / 4) as u8;
        out[0] = 0x80
            | if self.padding > 0 { 0x20 } else { 0 }
            | if self.extension.is_some() { 0x10 } else { 0 }
            | cc;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type;
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = HEADER_LEN;
        out[at..at + self.csrc_bytes.len()].copy_from_slice(self.csrc_bytes);
        at += self.csrc_bytes.len();
        if let (Some(e), Some(words)) = (self.extension, ext_words) {
            out[at..at + 2].copy_from_slice(&e.profile.to_be_bytes());
            out[at + 2..at + 4].copy_from_slice(&(words as u16).to_be_bytes());
            at += 4;
            out[at..at + e.data.len()].copy_from_slice(e.data);
            at += e.data.len();
        }
        out[at..at + self.payload.len()].copy_from_slice(self.payload);
        at += self.payload.len();
        if self.padding > 0 {
            let end = at + usize::from(self.padding);
            out[at..end].fill(0);
            out[end - 1] = self.padding;
            at = end;
        }
        Ok(at)
    }
}

/// The header fields of one outbound packet, chosen by [`RtpSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Our SSRC.
    pub ssrc: u32,
}

impl OutboundHeader {
    /// A packet with this header and `payload`.
    pub fn packet<'a>(&self, payload: &'a [u8]) -> RtpPacket<'a> {
        RtpPacket::new(
            self.payload_type,
            self.marker,
            self.sequence,
            self.timestamp,
            self.ssrc,
            payload,
        )
    }
}

/// The outbound RTP context of one leg, kept for the leg's whole life: whatever the leg is
/// bridged to, the peer sees one stream (one SSRC, sequence numbers +1 per packet, timestamps
/// advancing with the media clock). A change of source (a transfer, hold music starting) marks
/// the next packet as a talkspurt start instead of starting a new stream.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    next_sequence: u16,
    next_timestamp: u32,
    talkspurt_start: bool,
    packets_sent: u64,
    octets_sent: u64,
    last_timestamp: u32,
}

impl RtpSender {
    /// A context with the given SSRC and random-looking initial sequence and timestamp (the
    /// caller picks them; RFC 3550 wants them unpredictable).
    pub fn new(ssrc: u32, initial_sequence: u16, initial_timestamp: u32) -> Self {
        Self {
            ssrc,
            next_sequence: initial_sequence,
            next_timestamp: initial_timestamp,
            talkspurt_start: true,
            packets_sent: 0,
            octets_sent: 0,
            last_timestamp: initial_timestamp,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets sent so far (for the SR sender info).
    pub fn packets_sent(&self) -> u64 {
        self.packets_sent
    }

    /// Payload octets sent so far (for the SR sender info).
    pub fn octets_sent(&self) -> u64 {
        self.octets_sent
    }

    /// Timestamp of the most recent packet (for the SR sender info).
    pub fn last_timestamp(&self) -> u32 {
        self.last_timestamp
    }

    /// The header of the next packet carrying `samples` samples of media, then advances the
    /// context. The marker is set on the first packet after creation, a gap or a source change.
    pub fn next_packet(
        &mut self,
        payload_type: u8,
        samples: u32,
        payload_len: usize,
    ) -> OutboundHeader {
        let h = OutboundHeader {
            marker: self.talkspurt_start,
            payload_type,
            sequence: self.next_sequence,
            timestamp: self.next_timestamp,
            ssrc: self.ssrc,
        };
        self.talkspurt_start = false;
        self.last_timestamp = self.next_timestamp;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(samples);
        self.packets_sent += 1;
        self.octets_sent += payload_len as u64;
        h
    }

    /// A header for an extra packet that shares the timestamp of an event already started (RFC
    /// 4733 continuation and end packets): a new sequence number, the given timestamp, no
    /// advance of the media clock.
    pub fn next_event_packet(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
        payload_len: usize,
    ) -> OutboundHeader {
        let h = OutboundHeader {
            marker,
            payload_type,
            sequence: self.next_sequence,
            timestamp,
            ssrc: self.ssrc,
        };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.last_timestamp = timestamp;
        self.packets_sent += 1;
        self.octets_sent += payload_len as u64;
        h
    }

    /// The timestamp the next media packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.next_timestamp
    }

    /// Media time passed without sending (silence suppression, hold): the timestamp advances by
    /// `samples`, the sequence does not, and the next packet starts a talkspurt.
    pub fn skip(&mut self, samples: u32) {
        self.next_timestamp = self.next_timestamp.wrapping_add(samples);
        self.talkspurt_start = true;
    }

    /// The audio source behind this leg changed (re-bridge, transfer): same stream, and the next
    /// packet carries the marker bit.
    pub fn source_changed(&mut self) {
        self.talkspurt_start = true;
    }
}

/// Extends a 16-bit sequence number to 64 bits relative to a reference extended value: picks the
/// candidate nearest `reference` (so 65535 → 0 continues upward). Never below 0.
pub fn extend_sequence(reference: u64, sequence: u16) -> u64 {
    let delta = i64::from(sequence.wrapping_sub(reference as u16) as i16);
    (reference as i64).saturating_add(delta).max(0) as u64
}

/// Extends a 32-bit RTP timestamp to 64 bits relative to a reference extended value.
pub fn extend_timestamp(reference: u64, timestamp: u32) -> u64 {
    let delta = i64::from(timestamp.wrapping_sub(reference as u32) as i32);
    (reference as i64).saturating_add(delta).max(0) as u64
}

const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const SEQ_MOD: u32 = 1 << 16;

/// What [`ReceiveStats::update`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// In sequence or a small jump forward/back: counted.
    Accepted {
        /// The packet's extended sequence number.
        extended: u64,
    },
    /// A very large jump; counted only if the next packet confirms it (then the source is
    /// treated as restarted).
    Suspicious,
}

/// Receive statistics of one source (RFC 3550 A.1, A.3, A.8): packets, loss, jitter, highest
/// extended sequence number.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    ssrc: u32,
    clock_rate: u32,
    started: bool,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    epoch: Option<Instant>,
    last_transit: Option<i64>,
    /// Jitter in timestamp units, times 16 (A.8 integer form).
    jitter_q4: u64,
    last_arrival: Option<Instant>,
}

impl ReceiveStats {
    /// Statistics of source `ssrc` with media clock `clock_rate` Hz (8000 for G.711).
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate: clock_rate.max(1),
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: SEQ_MOD + 1,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            epoch: None,
            last_transit: None,
            jitter_q4: 0,
            last_arrival: None,
        }
    }

    /// The source these statistics describe.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// Accounts one received packet: its sequence number, RTP timestamp and arrival time.
    pub fn update(&mut self, sequence: u16, timestamp: u32, arrival: Instant) -> SequenceVerdict {
        self.last_arrival = Some(arrival);
        if !self.started {
            self.started = true;
            self.init_seq(sequence);
        } else {
            let udelta = sequence.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                if sequence < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(SEQ_MOD);
                }
                self.max_seq = sequence;
            } else if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
                if u32::from(sequence) == self.bad_seq {
                    // Two sequential packets after a big jump: the source restarted.
                    self.init_seq(sequence);
                    self.last_transit = None;
                } else {
                    self.bad_seq = (u32::from(sequence) + 1) & (SEQ_MOD - 1);
                    return SequenceVerdict::Suspicious;
                }
            }
            // else: duplicate or reordered within MAX_MISORDER; counted as received.
        }
        self.received += 1;
        self.update_jitter(timestamp, arrival);
        SequenceVerdict::Accepted {
            extended: extend_sequence(self.extended_max(), sequence),
        }
    }

    fn update_jitter(&mut self, timestamp: u32, arrival: Instant) {
        let epoch = *self.epoch.get_or_insert(arrival);
        let elapsed = arrival.saturating_duration_since(epoch);
        let arrival_units =
            (elapsed.as_micros() as u64).saturating_mul(u64::from(self.clock_rate)) / 1_000_000;
        // Transit modulo 2^32, as the RFC does with unsigned arithmetic.
        let transit = i64::from((arrival_units as u32).wrapping_sub(timestamp) as i32);
        if let Some(last) = self.last_transit {
            let d = i64::from(((transit - last) as i32).unsigned_abs().min(u32::MAX >> 1)) as u64;
            // J += (|D| - J) / 16, in Q4: jq4 += |D| - round(jq4 / 16)
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Highest extended sequence number received (cycles plus highest 16-bit value).
    pub fn extended_max(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max_seq)
    }

    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected from the first to the highest sequence number.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Cumulative packets lost (negative with duplicates), clamped to the 24-bit RR field.
    pub fn cumulative_lost(&self) -> i32 {
        let lost = self.expected() as i64 - self.received as i64;
        lost.clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    /// Interarrival jitter in timestamp units (RFC 3550 A.8).
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4).min(u64::from(u32::MAX)) as u32
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_q4 as f64 / 16.0 * 1000.0 / f64::from(self.clock_rate)
    }

    /// Arrival time of the most recent packet (for inactivity timeouts).
    pub fn last_arrival(&self) -> Option<Instant> {
        self.last_arrival
    }

    /// Fraction lost since the previous call, in 1/256 (the RR field), and starts a new
    /// interval (A.3). Call once per report sent.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_and_writes_a_full_header() {
        let csrc = [0, 0, 0, 1, 0, 0, 0, 2];
        let ext = [9, 9, 9, 9];
        let p = RtpPacket {
            csrc_bytes: &csrc,
            extension: Some(RtpExtension {
                profile: 0xbede,
                data: &ext,
            }),
            padding: 3,
            ..RtpPacket::new(8, true, 65535, 0xdead_beef, 0x1234_5678, b"abc")
        };
        let mut buf = [0u8; 64];
        let n = p.write(&mut buf).unwrap();
        assert_eq!(n, 12 + 8 + 8 + 3 + 3);
        assert_eq!(buf[0], 0x80 | 0x20 | 0x10 | 2);
        let q = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(q, p);
        assert_eq!(q.csrc().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn rejects_bad_lengths_with_typed_errors() {
        assert_eq!(
            RtpPacket::parse(&[0x80; 11]),
            Err(RtpError::TooShort { len: 11 })
        );
        let mut h = [0u8; 12];
        h[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(&h),
            Err(RtpError::BadVersion { version: 1 })
        );
        h[0] = 0x81;
        assert_eq!(
            RtpPacket::parse(&h),
            Err(RtpError::TruncatedCsrc { count: 1 })
        );
        h[0] = 0x90;
        assert_eq!(
            RtpPacket::parse(&h),
            Err(RtpError::TruncatedExtension { words: 0 })
        );
        let mut p = [0u8; 14];
        p[0] = 0xa0;
        p[13] = 3;
        assert_eq!(
            RtpPacket::parse(&p),
            Err(RtpError::BadPadding {
                count: 3,
                available: 2
            })
        );
        p[13] = 0;
        assert!(matches!(
            RtpPacket::parse(&p),
            Err(RtpError::BadPadding { count: 0, .. })
        ));
        let small = RtpPacket::new(0, false, 1, 1, 1, &[0; 160]);
        assert_eq!(
            small.write(&mut [0; 100]),
            Err(RtpError::BufferTooSmall {
                need: 172,
                have: 100
            })
        );
    }

    #[test]
    fn sender_keeps_one_stream_across_source_changes() {
        let mut s = RtpSender::new(7, 65534, 1000);
        let a = s.next_packet(0, 160, 160);
        let b = s.next_packet(0, 160, 160);
        assert!(a.marker && !b.marker);
        s.source_changed();
        let c = s.next_packet(0, 160, 160);
        assert_eq!((a.sequence, b.sequence, c.sequence), (65534, 65535, 0));
        assert_eq!((b.timestamp, c.timestamp), (1160, 1320));
        assert!(c.marker);
        assert_eq!(c.ssrc, 7);
        s.skip(800);
        let d = s.next_packet(0, 160, 160);
        assert_eq!((d.sequence, d.timestamp, d.marker), (1, 1480 + 800, true));
    }

    #[test]
    fn extension_picks_nearest() {
        assert_eq!(extend_sequence(65535, 0), 65536);
        assert_eq!(extend_sequence(65536, 65535), 65535);
        assert_eq!(extend_sequence(3, 65535), 0);
        assert_eq!(extend_timestamp(u64::from(u32::MAX), 5), (1 << 32) + 5);
    }

    #[test]
    fn stats_count_loss_wrap_and_jitter() {
        let t0 = Instant::now();
        let mut st = ReceiveStats::new(1, 8000);
        // 100 packets across the wrap, every 10th lost, perfect timing.
        for i in 0u16..100 {
            if i % 10 == 5 {
                continue;
            }
            let seq = 65500u16.wrapping_add(i);
            let v = st.update(
                seq,
                u32::from(i) * 160,
                t0 + Duration::from_millis(u64::from(i) * 20),
            );
            assert_eq!(
                v,
                SequenceVerdict::Accepted {
                    extended: 65500 + u64::from(i)
                }
            );
        }
        assert_eq!(st.extended_max(), 65599);
        assert_eq!(st.expected(), 100);
        assert_eq!(st.cumulative_lost(), 10);
        assert_eq!(st.take_fraction_lost(), 25); // 10 % of 256
        assert_eq!(st.take_fraction_lost(), 0);
        assert_eq!(st.jitter(), 0);

        // Alternating ±8 ms arrival error converges towards |D| = 16 ms = 128 units.
        let mut st = ReceiveStats::new(1, 8000);
        for i in 0u64..2000 {
            let skew = if i % 2 == 0 { 0 } else { 16 };
            st.update(
                i as u16,
                (i * 160) as u32,
                t0 + Duration::from_millis(i * 20 + skew),
            );
        }
        assert!((st.jitter() as i64 - 128).abs() <= 8, "{}", st.jitter());
        assert!((st.jitter_ms() - 16.0).abs() < 1.0);
    }

    #[test]
    fn stats_restart_after_confirmed_jump() {
        let t0 = Instant::now();
        let mut st = ReceiveStats::new(1, 8000);
        st.update(10, 0, t0);
        st.update(11, 160, t0);
        assert_eq!(st.update(30000, 320, t0), SequenceVerdict::Suspicious);
        assert!(matches!(
            st.update(30001, 480, t0),
            SequenceVerdict::Accepted { .. }
        ));
        assert_eq!(st.expected(), 1);
        assert_eq!(st.received(), 1);
    }
}
