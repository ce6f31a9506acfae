//! RFC 4733 telephone-events: payload parsing and serialisation, a sender (start with marker,
//! continuation every 50 ms, end packet three times with the same timestamp) and a receiver that
//! delivers every digit exactly once, keyed by the event's RTP timestamp — so a lost start
//! packet, lost or retransmitted end packets, reordering and two identical digits in a row all
//! come out right, and an event whose end never arrives is ended by a timeout.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::rtp::{OutboundHeader, RtpSender};

/// Bytes of one event block.
pub const EVENT_LEN: usize = 4;

/// Why a telephone-event payload was refused (the peer's bytes; the packet is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TelephoneEventError {
    /// Fewer than 4 bytes.
    #[error("telephone-event payload of {len} bytes is shorter than one 4-byte event")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// Volume field above 63 on serialising.
    #[error("telephone-event volume {0} is out of range (0..=63, in -dBm0)")]
    BadVolume(u8),
}

/// One RFC 4733 event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D, 16 flash.
    pub event: u8,
    /// End bit.
    pub end: bool,
    /// Power level, 0..=63 (−dBm0).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event block of a payload (further blocks, RFC 4733 2.5.1.5 redundancy,
    /// repeat earlier events and are ignored).
    pub fn parse(payload: &[u8]) -> Result<Self, TelephoneEventError> {
        let b: &[u8; EVENT_LEN] = payload
            .first_chunk()
            .ok_or(TelephoneEventError::TooShort { len: payload.len() })?;
        Ok(Self {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// Serialises into the 4-byte block.
    pub fn to_bytes(&self) -> Result<[u8; EVENT_LEN], TelephoneEventError> {
        if self.volume > 63 {
            return Err(TelephoneEventError::BadVolume(self.volume));
        }
        let d = self.duration.to_be_bytes();
        Ok([
            self.event,
            (u8::from(self.end) << 7) | self.volume,
            d[0],
            d[1],
        ])
    }
}

/// The DTMF character of an event code (`None` for non-DTMF events).
pub fn event_to_digit(event: u8) -> Option<char> {
    b"0123456789*#ABCD"
        .get(usize::from(event))
        .map(|&c| char::from(c))
}

/// The event code of a DTMF character (`0-9 * # A-D`, lower case accepted).
pub fn digit_to_event(digit: char) -> Option<u8> {
    let d = digit.to_ascii_uppercase();
    b"0123456789*#ABCD"
        .iter()
        .position(|&c| char::from(c) == d)
        .map(|p| p as u8)
}

/// Why a digit could not be queued for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DtmfSendError {
    /// Not a DTMF character.
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit(char),
    /// Too many digits waiting.
    #[error("DTMF send queue full ({0} digits waiting); retry after some are sent")]
    QueueFull(usize),
}

const QUEUE: usize = 32;
const END_REPEATS: u8 = 3;

/// Sender settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfSenderConfig {
    /// Negotiated telephone-event payload type.
    pub payload_type: u8,
    /// Clock rate of the telephone-event (8000 with PCMU/PCMA).
    pub clock_rate: u32,
    /// How long each digit sounds.
    pub tone: Duration,
    /// Pause between digits.
    pub gap: Duration,
    /// Interval of continuation packets.
    pub interval: Duration,
    /// Interval between the three end packets.
    pub end_interval: Duration,
    /// Volume (−dBm0).
    pub volume: u8,
}

impl Default for DtmfSenderConfig {
    fn default() -> Self {
        Self {
            payload_type: 101,
            clock_rate: 8000,
            tone: Duration::from_millis(100),
            gap: Duration::from_millis(60),
            interval: Duration::from_millis(50),
            end_interval: Duration::from_millis(20),
            volume: 10,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ActiveEvent {
    event: u8,
    timestamp: u32,
    started: Instant,
    next_send: Instant,
    ends_sent: u8,
    sent_start: bool,
    /// How long the event lasts; `None` while live (until `end_digit`).
    length: Option<Duration>,
}

/// Longest live event: the 16-bit duration field holds 8.19 s at 8 kHz.
pub const MAX_LIVE: Duration = Duration::from_secs(8);

/// One telephone-event packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// RTP header fields (from the leg's [`RtpSender`]: same SSRC and sequence space).
    pub header: OutboundHeader,
    /// The 4-byte payload.
    pub payload: [u8; EVENT_LEN],
}

/// Sends queued digits as RFC 4733 events on a leg's RTP stream. While
/// [`DtmfSender::is_active`], the leg sends no audio and advances its media clock with
/// [`RtpSender::skip`] instead, so the next event and the audio after it get fresh timestamps.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    cfg: DtmfSenderConfig,
    /// Queued events and their length (`None`: live, lasts until [`DtmfSender::end_digit`]).
    queue: [(u8, Option<Duration>); QUEUE],
    head: usize,
    len: usize,
    active: Option<ActiveEvent>,
    not_before: Option<Instant>,
}

impl DtmfSender {
    /// A sender with nothing queued.
    pub fn new(cfg: DtmfSenderConfig) -> Self {
        Self {
            cfg,
            queue: [(0, None); QUEUE],
            head: 0,
            len: 0,
            active: None,
            not_before: None,
        }
    }

    /// Queues a digit of the configured tone length.
    pub fn send_digit(&mut self, digit: char) -> Result<(), DtmfSendError> {
        self.enqueue(digit, false)
    }

    /// Changes the telephone-event payload type (a re-negotiation); queued digits stay queued.
    pub fn set_payload_type(&mut self, payload_type: u8) {
        self.cfg.payload_type = payload_type;
    }

    /// Queues a digit that sounds for `length` (clamped to 40 ms ..= [`MAX_LIVE`]; RFC 4733
    /// and Q.24 receivers need at least 40 ms).
    pub fn send_digit_for(&mut self, digit: char, length: Duration) -> Result<(), DtmfSendError> {
        let event = digit_to_event(digit).ok_or(DtmfSendError::NotADigit(digit))?;
        if self.len == QUEUE {
            return Err(DtmfSendError::QueueFull(QUEUE));
        }
        let length = length.clamp(Duration::from_millis(40), MAX_LIVE);
        self.queue[(self.head + self.len) % QUEUE] = (event, Some(length));
        self.len += 1;
        Ok(())
    }

    /// Queues a digit that lasts until [`DtmfSender::end_digit`] (mirroring a key held on another
    /// leg, e.g. an in-band tone being detected), at most [`MAX_LIVE`].
    pub fn begin_digit(&mut self, digit: char) -> Result<(), DtmfSendError> {
        self.enqueue(digit, true)
    }

    /// Ends the live digit being sent: the event's duration becomes the time it was held. A live
    /// digit still waiting in the queue gets `measured`, or the configured tone length.
    /// `measured` overrides the held time with the source's own measure of the tone (an in-band
    /// detector's start/end estimates, more exact than when its events were reported).
    pub fn end_digit(&mut self, now: Instant, measured: Option<Duration>) {
        if let Some(a) = self.active.as_mut()
            && a.length.is_none()
        {
            let length = measured.unwrap_or(now.saturating_duration_since(a.started));
            a.length = Some(length);
            a.next_send = now.max(a.started + length.min(MAX_LIVE));
            return;
        }
        for i in 0..self.len {
            let slot = &mut self.queue[(self.head + i) % QUEUE];
            if slot.1.is_none() {
                slot.1 = Some(measured.unwrap_or(self.cfg.tone));
                return;
            }
        }
    }

    fn enqueue(&mut self, digit: char, live: bool) -> Result<(), DtmfSendError> {
        let event = digit_to_event(digit).ok_or(DtmfSendError::NotADigit(digit))?;
        if self.len == QUEUE {
            return Err(DtmfSendError::QueueFull(QUEUE));
        }
        let length = if live { None } else { Some(self.cfg.tone) };
        self.queue[(self.head + self.len) % QUEUE] = (event, length);
        self.len += 1;
        Ok(())
    }

    /// True while an event is being sent (the leg must not send audio).
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// True when digits wait to be sent.
    pub fn has_queued(&self) -> bool {
        self.len > 0
    }

    /// When [`DtmfSender::poll`] next has something to send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.active, self.len) {
            (Some(a), _) => Some(a.next_send),
            (None, 0) => None,
            (None, _) => self.not_before,
        }
    }

    fn units(&self, d: Duration) -> u64 {
        (d.as_micros() as u64).saturating_mul(u64::from(self.cfg.clock_rate)) / 1_000_000
    }

    /// The next packet due at `now`, if any (call until `None`).
    pub fn poll(&mut self, now: Instant, rtp: &mut RtpSender) -> Option<EventPacket> {
        if self.active.is_none() {
            if self.len == 0 || self.not_before.is_some_and(|t| now < t) {
                return None;
            }
            let (event, length) = self.queue[self.head];
            self.head = (self.head + 1) % QUEUE;
            self.len -= 1;
            self.active = Some(ActiveEvent {
                event,
                timestamp: rtp.next_timestamp(),
                started: now,
                next_send: now,
                ends_sent: 0,
                sent_start: false,
                length,
            });
        }
        let mut a = self.active?;
        if now < a.next_send {
            return None;
        }
        let elapsed = now.saturating_duration_since(a.started);
        let length = a.length.unwrap_or(MAX_LIVE).min(MAX_LIVE);
        let ending = elapsed >= length;
        let duration = self
            .units(if ending { length } else { elapsed })
            .min(u64::from(u16::MAX)) as u16;
        let block = TelephoneEvent {
            event: a.event,
            end: ending,
            volume: self.cfg.volume.min(63),
            duration,
        };
        let payload = [
            block.event,
            (u8::from(block.end) << 7) | block.volume,
            duration.to_be_bytes()[0],
            duration.to_be_bytes()[1],
        ];
        let header =
            rtp.next_event_packet(self.cfg.payload_type, a.timestamp, !a.sent_start, EVENT_LEN);
        a.sent_start = true;
        if ending {
            a.ends_sent += 1;
            if a.ends_sent >= END_REPEATS {
                self.active = None;
                self.not_before = Some(now + self.cfg.gap);
                return Some(EventPacket { header, payload });
            }
            a.next_send = now + self.cfg.end_interval;
        } else {
            a.next_send = (a.next_send + self.cfg.interval).min(a.started + length);
        }
        self.active = Some(a);
        Some(EventPacket { header, payload })
    }
}

/// A digit seen by [`DtmfReceiver`]: each event yields one `Began` and one `Ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedDigit {
    /// A new event (first packet seen of it, with or without marker).
    Began {
        /// Event code.
        event: u8,
        /// RTP timestamp identifying the event.
        timestamp: u32,
    },
    /// The event is over.
    Ended {
        /// Event code.
        event: u8,
        /// RTP timestamp identifying the event.
        timestamp: u32,
        /// Duration in timestamp units (the largest reported).
        duration: u16,
        /// True when no end packet came (timeout or a newer event started).
        inferred: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct RxEvent {
    ssrc: u32,
    timestamp: u32,
    event: u8,
    duration: u16,
    last_seen: Instant,
}

const HISTORY: usize = 16;
const OUT_QUEUE: usize = 8;

/// Receives telephone-events and delivers each digit once. See the module documentation.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    timeout: Duration,
    current: Option<RxEvent>,
    /// (ssrc, timestamp) of finished events, newest last.
    done: [Option<(u32, u32)>; HISTORY],
    done_next: usize,
    out: [Option<ReceivedDigit>; OUT_QUEUE],
    out_head: usize,
    out_len: usize,
    /// Packets ignored as repeats of finished events.
    pub repeats_ignored: u64,
    /// Malformed payloads dropped.
    pub malformed: u64,
}

impl DtmfReceiver {
    /// A receiver ending an event `timeout` after its last packet when no end packet comes
    /// (RFC 4733 suggests a few continuation intervals; 250 ms is a good default).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            current: None,
            done: [None; HISTORY],
            done_next: 0,
            out: [None; OUT_QUEUE],
            out_head: 0,
            out_len: 0,
            repeats_ignored: 0,
            malformed: 0,
        }
    }

    fn emit(&mut self, d: ReceivedDigit) {
        if self.out_len == OUT_QUEUE {
            // The caller stopped draining: drop the oldest rather than grow.
            self.out_head = (self.out_head + 1) % OUT_QUEUE;
            self.out_len -= 1;
        }
        self.out[(self.out_head + self.out_len) % OUT_QUEUE] = Some(d);
        self.out_len += 1;
    }

    /// The next delivered digit event.
    pub fn poll_event(&mut self) -> Option<ReceivedDigit> {
        if self.out_len == 0 {
            return None;
        }
        let d = self.out[self.out_head].take();
        self.out_head = (self.out_head + 1) % OUT_QUEUE;
        self.out_len -= 1;
        d
    }

    /// When [`DtmfReceiver::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_seen + self.timeout)
    }

    fn finish(&mut self, c: RxEvent, inferred: bool) {
        self.done[self.done_next] = Some((c.ssrc, c.timestamp));
        self.done_next = (self.done_next + 1) % HISTORY;
        self.emit(ReceivedDigit::Ended {
            event: c.event,
            timestamp: c.timestamp,
            duration: c.duration,
            inferred,
        });
    }

    /// Ends an event whose end packets never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(c) = self.current
            && now >= c.last_seen + self.timeout
        {
            self.current = None;
            self.finish(c, true);
        }
    }

    /// Feeds one telephone-event packet (its SSRC, RTP timestamp and payload).
    pub fn handle_packet(&mut self, now: Instant, ssrc: u32, timestamp: u32, payload: &[u8]) {
        let Ok(ev) = TelephoneEvent::parse(payload) else {
            self.malformed += 1;
            return;
        };
        if self.done.contains(&Some((ssrc, timestamp))) {
            self.repeats_ignored += 1;
            return;
        }
        if let Some(mut c) = self.current {
            if c.ssrc == ssrc && c.timestamp == timestamp {
                c.duration = c.duration.max(ev.duration);
                c.last_seen = now;
                if ev.end {
                    self.current = None;
                    self.finish(c, false);
                } else {
                    self.current = Some(c);
                }
                return;
            }
            if c.ssrc == ssrc && (timestamp.wrapping_sub(c.timestamp) as i32) < 0 {
                // A straggler of an older event we never saw begin: too late to matter.
                self.repeats_ignored += 1;
                return;
            }
            // A newer event (or a new source) while the previous one lacks its end.
            self.current = None;
            self.finish(c, true);
        }
        self.emit(ReceivedDigit::Began {
            event: ev.event,
            timestamp,
        });
        let c = RxEvent {
            ssrc,
            timestamp,
            event: ev.event,
            duration: ev.duration,
            last_seen: now,
        };
        if ev.end {
            self.finish(c, false);
        } else {
            self.current = Some(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_errors() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let b = e.to_bytes().unwrap();
        assert_eq!(b, [11, 0x8a, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&b).unwrap(), e);
        assert_eq!(
            TelephoneEvent::parse(&b[..3]),
            Err(TelephoneEventError::TooShort { len: 3 })
        );
        assert!(TelephoneEvent { volume: 64, ..e }.to_bytes().is_err());
        assert_eq!(event_to_digit(11), Some('#'));
        assert_eq!(digit_to_event('d'), Some(15));
        assert_eq!(digit_to_event('x'), None);
    }
}
