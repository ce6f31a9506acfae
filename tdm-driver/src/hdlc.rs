//! Software HDLC for D-channels on clear (unframed 64 kbit/s) channels: flags, bit stuffing,
//! FCS-16 and abort detection, as the DAHDI kernel does for HDLCFCS channels.
//!
//! Bits go on the line least significant bit first (ISO 3309). [`HdlcEncoder`] queues frames and
//! fills fixed-size blocks with stuffed frames and idle flags; [`HdlcDecoder`] takes any byte
//! stream and reports frames and framing errors. Neither panics on any input.

use std::collections::VecDeque;

/// The FCS-16 of a correct frame taken over its data and its FCS (RFC 1662 "good final FCS").
const FCS_GOOD: u16 = 0xf0b8;
/// The HDLC flag octet, 0111 1110.
pub const FLAG: u8 = 0x7e;
/// Largest frame (without FCS) the decoder accepts by default; Q.921's N201 is 260 octets.
pub const DEFAULT_MAX_FRAME: usize = 512;

/// Updates an FCS-16 (CRC-CCITT, reflected polynomial 0x8408) with `data`.
fn fcs16_update(mut fcs: u16, data: &[u8]) -> u16 {
    for &byte in data {
        fcs ^= u16::from(byte);
        for _ in 0..8 {
            fcs = if fcs & 1 != 0 {
                (fcs >> 1) ^ 0x8408
            } else {
                fcs >> 1
            };
        }
    }
    fcs
}

/// The FCS-16 of `data` as transmitted after it (complemented; send the low octet first).
pub fn fcs16(data: &[u8]) -> u16 {
    !fcs16_update(0xffff, data)
}

/// What went wrong with a frame on the line. The frame is dropped; a line with many of these
/// has a bit-rate, framing or cabling problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HdlcError {
    /// The received FCS does not match the frame (bit errors on the line).
    #[error("HDLC frame with a bad FCS dropped")]
    BadFcs,
    /// Seven or more consecutive one bits inside a frame: the sender aborted it.
    #[error("HDLC frame aborted by the sender (7 or more one bits)")]
    Abort,
    /// The bits between two flags are not a whole number of octets.
    #[error("HDLC frame of {bits} bits is not a whole number of octets")]
    NotOctetAligned {
        /// Bits received between the flags.
        bits: usize,
    },
    /// Fewer than 3 octets between flags (at least one octet plus the 2-octet FCS).
    #[error("HDLC frame of {octets} octets is too short to carry an FCS")]
    TooShort {
        /// Octets received between the flags.
        octets: usize,
    },
    /// More octets than the decoder's maximum frame size: a missing closing flag.
    #[error("HDLC frame longer than {max} octets dropped (closing flag missing?)")]
    TooLong {
        /// The decoder's limit, FCS included.
        max: usize,
    },
}

/// One result of decoding: a good frame (FCS removed) or a dropped one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HdlcEvent {
    /// A frame whose FCS was correct, without its FCS.
    Frame(Vec<u8>),
    /// A frame that was dropped, and why.
    Error(HdlcError),
}

/// Turns frames into a continuous HDLC bit stream, idle flags between frames.
#[derive(Debug, Default)]
pub struct HdlcEncoder {
    /// Stuffed bits waiting to go on the line, one bit per entry.
    pending: VecDeque<bool>,
    /// Position inside the idle flag being sent (0 = at a flag boundary).
    idle_phase: u8,
}

impl HdlcEncoder {
    /// An encoder with nothing queued: it sends idle flags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `frame` (without FCS): opening flag, stuffed data and FCS, closing flag.
    pub fn queue_frame(&mut self, frame: &[u8]) {
        let fcs = fcs16(frame).to_le_bytes();
        self.push_flag();
        let mut ones = 0u8;
        for &byte in frame.iter().chain(fcs.iter()) {
            for bit in 0..8 {
                let one = byte >> bit & 1 == 1;
                self.pending.push_back(one);
                if one {
                    ones += 1;
                    if ones == 5 {
                        self.pending.push_back(false);
                        ones = 0;
                    }
                } else {
                    ones = 0;
                }
            }
        }
        self.push_flag();
    }

    /// Queues an abort (eight one bits) at the current end of the stream.
    pub fn queue_abort(&mut self) {
        self.pending.extend([true; 8]);
    }

    fn push_flag(&mut self) {
        for bit in 0..8 {
            self.pending.push_back(FLAG >> bit & 1 == 1);
        }
    }

    /// True when nothing but idle flags remain to be sent.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Fills `out` with the next line octets: queued frames, then idle flags. A new frame only
    /// starts at a flag boundary, so idle fill never leaves a partial flag.
    pub fn fill(&mut self, out: &mut [u8]) {
        for octet in out.iter_mut() {
            let mut value = 0u8;
            for bit in 0..8 {
                let one = if self.idle_phase == 0 {
                    match self.pending.pop_front() {
                        Some(one) => one,
                        None => self.next_idle_bit(),
                    }
                } else {
                    self.next_idle_bit()
                };
                if one {
                    value |= 1 << bit;
                }
            }
            *octet = value;
        }
    }

    fn next_idle_bit(&mut self) -> bool {
        let one = FLAG >> self.idle_phase & 1 == 1;
        self.idle_phase = (self.idle_phase + 1) % 8;
        one
    }

    /// Encodes everything queued plus idle flag bits up to an octet boundary, into `out`.
    /// (A partial flag followed by a whole one is inter-frame fill the decoder ignores.)
    pub fn drain_into(&mut self, out: &mut Vec<u8>) {
        while !self.pending.is_empty() {
            let mut octet = [0u8];
            self.fill(&mut octet);
            out.push(octet[0]);
        }
    }
}

/// Streaming HDLC receiver: feed it line octets in any chunking; it reports frames and errors.
#[derive(Debug)]
pub struct HdlcDecoder {
    max_frame: usize,
    /// A flag has been seen and bits are being collected.
    in_frame: bool,
    /// Consecutive one bits seen on the line.
    ones: u8,
    /// Destuffed bits of the current frame, packed LSB first.
    data: Vec<u8>,
    bits: usize,
    /// The current frame was already dropped as too long; wait for the next flag.
    overlong: bool,
}

impl Default for HdlcDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl HdlcDecoder {
    /// A decoder hunting for a flag, accepting frames of at most `max_frame` octets plus FCS.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            in_frame: false,
            ones: 0,
            data: Vec::with_capacity(max_frame + 2),
            bits: 0,
            overlong: false,
        }
    }

    /// Decodes `line` and appends what it completes to `events`.
    pub fn push(&mut self, line: &[u8], events: &mut Vec<HdlcEvent>) {
        for &octet in line {
            for bit in 0..8 {
                self.push_bit(octet >> bit & 1 == 1, events);
            }
        }
    }

    fn push_bit(&mut self, one: bool, events: &mut Vec<HdlcEvent>) {
        if one {
            self.ones = self.ones.saturating_add(1);
            if self.ones == 7 {
                if self.in_frame && self.bits > 0 && !self.overlong {
                    events.push(HdlcEvent::Error(HdlcError::Abort));
                }
                self.in_frame = false;
                self.reset_frame();
            } else if self.ones < 6 && self.in_frame {
                self.append(true, events);
            }
            return;
        }
        let ones = self.ones;
        self.ones = 0;
        match ones {
            5 => {} // a stuffed zero
            6 => {
                // A flag: its leading zero and first five ones were collected as data.
                if self.in_frame {
                    self.bits = self.bits.saturating_sub(6);
                    self.finish_frame(events);
                }
                self.in_frame = true;
                self.reset_frame();
            }
            _ if ones >= 7 => {} // end of an abort / idle ones
            _ => {
                if self.in_frame {
                    self.append(false, events);
                }
            }
        }
    }

    fn append(&mut self, one: bool, events: &mut Vec<HdlcEvent>) {
        if self.overlong {
            return;
        }
        // Room for the frame, its FCS and the 6 bits of a closing flag collected as data.
        if self.bits >= (self.max_frame + 2) * 8 + 6 {
            events.push(HdlcEvent::Error(HdlcError::TooLong {
                max: self.max_frame + 2,
            }));
            self.overlong = true;
            return;
        }
        let index = self.bits / 8;
        if index == self.data.len() {
            self.data.push(0);
        }
        if one && let Some(octet) = self.data.get_mut(index) {
            *octet |= 1 << (self.bits % 8);
        }
        self.bits += 1;
    }

    fn reset_frame(&mut self) {
        self.data.clear();
        self.bits = 0;
        self.overlong = false;
    }

    fn finish_frame(&mut self, events: &mut Vec<HdlcEvent>) {
        // Fewer than 8 bits between flags is inter-frame fill (a partial idle flag), not a frame.
        if self.overlong || self.bits < 8 {
            return;
        }
        if self.bits % 8 != 0 {
            events.push(HdlcEvent::Error(HdlcError::NotOctetAligned {
                bits: self.bits,
            }));
            return;
        }
        let octets = self.bits / 8;
        let Some(frame) = self.data.get(..octets) else {
            return;
        };
        if octets < 3 {
            events.push(HdlcEvent::Error(HdlcError::TooShort { octets }));
        } else if fcs16_update(0xffff, frame) != FCS_GOOD {
            events.push(HdlcEvent::Error(HdlcError::BadFcs));
        } else {
            events.push(HdlcEvent::Frame(frame[..octets - 2].to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(line: &[u8]) -> Vec<HdlcEvent> {
        let mut decoder = HdlcDecoder::default();
        let mut events = Vec::new();
        decoder.push(line, &mut events);
        events
    }

    #[test]
    fn fcs16_matches_rfc1662_check_value() {
        // CRC-16/X-25 of "123456789" is 0x906E.
        assert_eq!(fcs16(b"123456789"), 0x906e);
        let mut with_fcs = b"123456789".to_vec();
        with_fcs.extend_from_slice(&fcs16(b"123456789").to_le_bytes());
        assert_eq!(fcs16_update(0xffff, &with_fcs), FCS_GOOD);
    }

    #[test]
    fn ones_are_stuffed_and_frames_round_trip() {
        let frame = [0xff, 0xff, 0x7e, 0x00, 0x3f];
        let mut encoder = HdlcEncoder::new();
        encoder.queue_frame(&frame);
        let mut line = vec![FLAG; 2];
        encoder.drain_into(&mut line);
        line.extend([FLAG; 2]);
        assert_eq!(decode_all(&line), vec![HdlcEvent::Frame(frame.to_vec())]);
        // Stuffing: apart from flags (exactly six ones), no run of six or more ones is sent.
        let bits: Vec<bool> = line
            .iter()
            .flat_map(|o| (0..8).map(move |b| o >> b & 1 == 1))
            .collect();
        let mut run = 0;
        for (i, &one) in bits.iter().enumerate() {
            if one {
                run += 1;
            } else {
                assert!(run <= 6, "run of {run} ones before bit {i}");
                run = 0;
            }
        }
        // 7 octets of data+FCS with 0xff 0xff 0x7e need at least 3 stuffed zeros.
        assert!(bits.len() >= (2 + 2 + 7) * 8 + 3);
    }

    #[test]
    fn corrupted_bit_gives_bad_fcs_and_abort_is_reported() {
        let mut encoder = HdlcEncoder::new();
        encoder.queue_frame(&[1, 2, 3, 4]);
        let mut line = Vec::new();
        encoder.drain_into(&mut line);
        line.push(FLAG);
        line[3] ^= 0x04;
        let events = decode_all(&line);
        assert!(
            events.iter().any(|e| matches!(
                e,
                HdlcEvent::Error(HdlcError::BadFcs | HdlcError::NotOctetAligned { .. })
            )),
            "{events:?}"
        );
        assert!(!events.iter().any(|e| matches!(e, HdlcEvent::Frame(_))));

        let mut encoder = HdlcEncoder::new();
        encoder.pending.clear();
        encoder.push_flag();
        encoder
            .pending
            .extend([false, true, false, true, false, false, true, true]);
        encoder.queue_abort();
        let mut line = Vec::new();
        encoder.drain_into(&mut line);
        line.extend([FLAG; 2]);
        assert_eq!(decode_all(&line), vec![HdlcEvent::Error(HdlcError::Abort)]);
    }

    #[test]
    fn idle_flags_produce_no_events_and_fill_is_continuous() {
        let mut encoder = HdlcEncoder::new();
        let mut block = [0u8; 16];
        encoder.fill(&mut block);
        assert_eq!(block, [FLAG; 16]);
        assert!(decode_all(&block).is_empty());
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_any_chunking(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..6),
            block in 1usize..40,
        ) {
            let mut encoder = HdlcEncoder::new();
            let mut decoder = HdlcDecoder::default();
            let mut events = Vec::new();
            for frame in &frames {
                encoder.queue_frame(frame);
            }
            let mut buf = vec![0u8; block];
            let mut guard = 0;
            while !encoder.is_idle() && guard < 10_000 {
                encoder.fill(&mut buf);
                decoder.push(&buf, &mut events);
                guard += 1;
            }
            encoder.fill(&mut buf);
            decoder.push(&buf, &mut events);
            let expected: Vec<_> = frames.iter().cloned().map(HdlcEvent::Frame).collect();
            prop_assert_eq!(events, expected);
        }

        #[test]
        fn arbitrary_line_bits_never_panic(line in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut decoder = HdlcDecoder::new(64);
            let mut events = Vec::new();
            decoder.push(&line, &mut events);
            for event in events {
                if let HdlcEvent::Frame(frame) = event {
                    prop_assert!(frame.len() <= 64);
                }
            }
        }
    }
}
