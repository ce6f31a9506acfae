//! In-band DTMF interworking for TDM legs: digits heard in a channel's audio become events (and
//! the tone is cut out of the audio, so the far side never hears half a tone plus the RFC 4733
//! event), and received events become tones played into the channel.
//!
//! [`InbandDtmfGate`] holds the channel's audio back a few frames (run-in muting) while
//! `codecs::dtmf::DtmfDetector` looks at it: the detector needs ~35 ms of steady tone before it is
//! sure, so by the time it reports a key-down the first part of the tone is still in the gate and
//! is zeroed together with the rest of it. [`InbandDtmfPlayer`] writes tones over the outgoing
//! frames of a TDM leg from received digit events.

use codecs::dtmf::{DtmfDetector, DtmfEvent, DtmfGenerator, DtmfParams};

use super::bridge::Frame;

const FRAME: usize = codecs::FRAME_SAMPLES;
/// Most frames a gate may hold back.
pub const MAX_HOLD_FRAMES: usize = 4;
/// Frames held back by default (40 ms): enough for the detector's worst-case latency.
pub const DEFAULT_HOLD_FRAMES: usize = 2;
/// Extra samples muted before the estimated tone start and after its end (10 ms).
const MARGIN: u64 = 80;
const INTERVALS: usize = 4;
const EVENTS: usize = 8;

/// A digit found in a channel's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InbandDigit {
    /// A digit started (send the RFC 4733 start now).
    Began {
        /// The digit.
        digit: char,
        /// Estimated first sample of the tone, counted from the gate's creation.
        at_sample: u64,
    },
    /// It ended.
    Ended {
        /// The digit.
        digit: char,
        /// Estimated end of the tone (exclusive).
        at_sample: u64,
        /// Estimated start.
        started_at: u64,
    },
}

/// Run-in muting DTMF detection over a TDM channel's inbound audio. See the module docs.
#[derive(Debug, Clone)]
pub struct InbandDtmfGate {
    detector: DtmfDetector,
    hold: usize,
    line: [Frame; MAX_HOLD_FRAMES + 1],
    head: usize,
    len: usize,
    /// Sample index of the oldest frame in the line.
    oldest_sample: u64,
    /// Start of the mute for the digit held down now.
    held_from: Option<u64>,
    /// Finished mute intervals [start, end).
    intervals: [(u64, u64); INTERVALS],
    next_interval: usize,
    events: [Option<InbandDigit>; EVENTS],
    ev_head: usize,
    ev_len: usize,
    muted_samples: u64,
}

impl InbandDtmfGate {
    /// A gate holding `hold_frames` (clamped to 1..=[`MAX_HOLD_FRAMES`]) frames back.
    pub fn new(hold_frames: usize) -> Self {
        Self {
            detector: DtmfDetector::new(),
            hold: hold_frames.clamp(1, MAX_HOLD_FRAMES),
            line: [[0; FRAME]; MAX_HOLD_FRAMES + 1],
            head: 0,
            len: 0,
            oldest_sample: 0,
            held_from: None,
            intervals: [(0, 0); INTERVALS],
            next_interval: 0,
            events: [None; EVENTS],
            ev_head: 0,
            ev_len: 0,
            muted_samples: 0,
        }
    }

    /// Samples zeroed so far.
    pub fn muted_samples(&self) -> u64 {
        self.muted_samples
    }

    /// The next digit event.
    pub fn poll_event(&mut self) -> Option<InbandDigit> {
        if self.ev_len == 0 {
            return None;
        }
        let e = self.events[self.ev_head].take();
        self.ev_head = (self.ev_head + 1) % EVENTS;
        self.ev_len -= 1;
        e
    }

    fn emit(
        events: &mut [Option<InbandDigit>; EVENTS],
        head: &mut usize,
        len: &mut usize,
        e: InbandDigit,
    ) {
        if *len == EVENTS {
            *head = (*head + 1) % EVENTS;
            *len -= 1;
        }
        events[(*head + *len) % EVENTS] = Some(e);
        *len += 1;
    }

    /// Takes the next 20 ms of the channel's audio; once the gate is full, writes the frame
    /// leaving it (tone cut out) to `out` and returns true.
    pub fn push(&mut self, frame: &Frame, out: &mut Frame) -> bool {
        let slot = (self.head + self.len) % self.line.len();
        self.line[slot] = *frame;
        self.len += 1;
        let Self {
            detector,
            held_from,
            intervals,
            next_interval,
            events,
            ev_head,
            ev_len,
            ..
        } = self;
        detector.process(frame, |ev| match ev {
            DtmfEvent::KeyDown { digit, at_sample } => {
                *held_from = Some(at_sample.saturating_sub(MARGIN));
                Self::emit(
                    events,
                    ev_head,
                    ev_len,
                    InbandDigit::Began { digit, at_sample },
                );
            }
            DtmfEvent::KeyUp {
                digit,
                at_sample,
                started_at,
            } => {
                let from = held_from
                    .take()
                    .unwrap_or(started_at.saturating_sub(MARGIN));
                intervals[*next_interval] = (from, at_sample + MARGIN);
                *next_interval = (*next_interval + 1) % INTERVALS;
                Self::emit(
                    events,
                    ev_head,
                    ev_len,
                    InbandDigit::Ended {
                        digit,
                        at_sample,
                        started_at,
                    },
                );
            }
        });
        if self.len <= self.hold {
            return false;
        }
        *out = self.line[self.head];
        self.head = (self.head + 1) % self.line.len();
        self.len -= 1;
        let start = self.oldest_sample;
        self.oldest_sample += FRAME as u64;
        for (i, s) in out.iter_mut().enumerate() {
            let n = start + i as u64;
            let muted = self.held_from.is_some_and(|h| n >= h)
                || self.intervals.iter().any(|&(a, b)| n >= a && n < b);
            if muted {
                *s = 0;
                self.muted_samples += 1;
            }
        }
        true
    }
}

const PLAY_QUEUE: usize = 16;

/// Plays received digits as in-band tones over a TDM leg's outgoing frames, one after another
/// (at least `min_tone` of tone, then a pause), whatever the events' timing.
#[derive(Debug, Clone)]
pub struct InbandDtmfPlayer {
    params: DtmfParams,
    queue: [(char, u32); PLAY_QUEUE],
    head: usize,
    len: usize,
    current: Option<DtmfGenerator>,
    dropped: u64,
}

impl InbandDtmfPlayer {
    /// A player; `params` sets level, tone and pause lengths (Q.24 wants ≥ 40 ms of each).
    pub fn new(params: DtmfParams) -> Self {
        Self {
            params,
            queue: [('0', 0); PLAY_QUEUE],
            head: 0,
            len: 0,
            current: None,
            dropped: 0,
        }
    }

    /// Digits not played because the queue was full or the digit was unknown.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queues a digit (call once per received digit: on its RFC 4733 start).
    pub fn play(&mut self, digit: char) {
        self.play_for(
            digit,
            std::time::Duration::from_millis(u64::from(self.params.on_ms)),
        );
    }

    /// Queues a digit sounding for `on` (at least 40 ms, at most 8 s), then the usual pause.
    /// Returns false (and counts it dropped) when the queue is full or `digit` is not DTMF.
    pub fn play_for(&mut self, digit: char, on: std::time::Duration) -> bool {
        if self.len == PLAY_QUEUE || codecs::dtmf::digit_frequencies(digit).is_none() {
            self.dropped += 1;
            return false;
        }
        let on_ms = on.as_millis().clamp(40, 8000) as u32;
        self.queue[(self.head + self.len) % PLAY_QUEUE] = (digit, on_ms);
        self.len += 1;
        true
    }

    /// True while a tone or its pause is being played.
    pub fn is_playing(&self) -> bool {
        self.current.is_some() || self.len > 0
    }

    /// Overwrites `frame` with tone while a digit plays; leaves it alone otherwise.
    pub fn fill(&mut self, frame: &mut Frame) {
        let mut at = 0;
        while at < FRAME {
            if self.current.is_none() {
                if self.len == 0 {
                    return;
                }
                let (digit, on_ms) = self.queue[self.head];
                self.head = (self.head + 1) % PLAY_QUEUE;
                self.len -= 1;
                let params = DtmfParams {
                    on_ms,
                    ..self.params
                };
                match DtmfGenerator::new(digit, params) {
                    Ok(g) => self.current = Some(g),
                    Err(_) => {
                        self.dropped += 1;
                        continue;
                    }
                }
            }
            let Some(g) = self.current.as_mut() else {
                return;
            };
            let n = g.fill(&mut frame[at..]);
            at += n;
            if g.remaining() == 0 {
                self.current = None;
            }
            if n == 0 {
                self.current = None;
            }
        }
    }
}
