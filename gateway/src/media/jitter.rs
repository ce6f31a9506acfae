//! Adaptive jitter buffer for fixed-duration audio frames (20 ms G.711 or any payload type with a
//! fixed ptime): packets go in with their arrival time, one frame comes out per `pop(now)` tick.
//!
//! # How it plays out
//!
//! A packet with extended RTP timestamp `T` ideally plays at `T + min_transit + target`, where
//! `min_transit` is the smallest (arrival − timestamp) over a recent window — the packet that had
//! the fastest trip — and `target` is a high percentile of how much later than that the recent
//! packets arrived. The buffer plays one frame per tick; the *current delay* is
//! `now − play_timestamp − min_transit`:
//!
//! * too high (sender clock faster than ours, or jitter went down): one frame is dropped, in
//!   silence when the codec tells us (G.711), or unconditionally when far over target;
//! * too low and the next frame is not there yet (sender slower, or jitter went up): a frame is
//!   inserted ([`Playout::Stretch`], the caller conceals) instead of declaring a loss;
//! * after a run of missing frames with nothing buffered (end of talkspurt, DTX), the buffer
//!   re-primes and the next talkspurt starts exactly at the target delay.
//!
//! Packets are kept in a fixed ring of slots indexed by frame number (timestamp / frame length):
//! reordering and duplicates are resolved by the slot, packets older than the play position are
//! late (counted, dropped), and a timestamp jump beyond the ring or a misaligned timestamp
//! re-synchronises. A new SSRC resets everything. Nothing allocates after construction.

use std::time::{Duration, Instant};

use codecs::FRAME_SAMPLES;
use codecs::g711::{self, Law};
use codecs::plc::Plc;

use super::rtp::{RtpPacket, extend_sequence, extend_timestamp};

/// Frames the ring holds (at 20 ms: 640 ms ahead of the play position).
pub const SLOTS: usize = 32;
/// Largest payload stored (bigger packets are refused and counted): 60 ms of G.711, 30 ms of L16.
pub const MAX_PAYLOAD: usize = 480;
const WINDOW: usize = 512;
const RECENT: usize = 128;
const RECOMPUTE_EVERY: u32 = 16;
const MISSES_BEFORE_REPRIME: u32 = 3;
const DELAY_HISTOGRAM_MS: usize = 512;

thread_local! {
    static SCRATCH: std::cell::RefCell<[i64; WINDOW]> = const { std::cell::RefCell::new([0; WINDOW]) };
}

/// Settings of one jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// RTP clock rate of the payload (8000 for G.711).
    pub clock_rate: u32,
    /// Timestamp units per frame (160 for 20 ms at 8 kHz).
    pub frame_units: u32,
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay.
    pub max_delay: Duration,
    /// Share of recent packets the target delay must cover (0.0..=1.0).
    pub percentile: f64,
    /// Margin of the delay control loop: no drop unless a frame plus this much over target.
    pub hysteresis: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            clock_rate: 8000,
            frame_units: FRAME_SAMPLES as u32,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(400),
            percentile: 0.99,
            hysteresis: Duration::from_millis(10),
        }
    }
}

/// What one tick of playout yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The frame due now.
    Frame(FrameRef<'a>),
    /// The frame due now never came (or came too late): conceal it.
    Lost,
    /// A frame inserted to let the buffer grow (sender slower than us, or jitter rising):
    /// conceal, nothing was lost.
    Stretch,
    /// Nothing to play (not started, or silence between talkspurts).
    Empty,
}

/// A frame handed out by [`JitterBuffer::pop`], borrowed from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Payload type.
    pub payload_type: u8,
    /// Extended RTP sequence number.
    pub sequence: u64,
    /// Extended RTP timestamp.
    pub timestamp: u64,
    /// Marker bit (talkspurt start).
    pub marker: bool,
}

/// Why [`JitterBuffer::insert`] did not keep a packet (all counted in [`JitterStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored for playout.
    Stored,
    /// Same frame already buffered.
    Duplicate,
    /// Its play time has passed.
    Late,
    /// Payload larger than [`MAX_PAYLOAD`].
    TooLarge,
}

/// Counters and delay figures of one buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterStats {
    /// Packets offered.
    pub received: u64,
    /// Frames played from a packet.
    pub played: u64,
    /// Frames concealed because their packet was missing at play time.
    pub concealed: u64,
    /// Frames inserted to grow the buffer.
    pub stretched: u64,
    /// Buffered frames discarded to shrink the buffer (clock drift, falling jitter).
    pub dropped: u64,
    /// Missing frames skipped (not concealed) to shrink the buffer.
    pub skipped: u64,
    /// Frames lost in a run long enough for the buffer to go idle (found from the sequence
    /// gap when the stream resumed without a talkspurt marker); heard as silence.
    pub idle_lost: u64,
    /// Packets that arrived after their play time.
    pub late: u64,
    /// Packets already buffered.
    pub duplicates: u64,
    /// Packets too large to store.
    pub too_large: u64,
    /// Re-synchronisations on timestamp jumps.
    pub resyncs: u64,
    /// Resets on a new SSRC.
    pub ssrc_changes: u64,
    /// Boxed: kept out of the buffer's hot fields (one cache line per played frame).
    delay_hist_ms: Box<[u32; DELAY_HISTOGRAM_MS]>,
    delay_sum_us: u64,
}

impl Default for JitterStats {
    fn default() -> Self {
        Self {
            received: 0,
            played: 0,
            concealed: 0,
            stretched: 0,
            dropped: 0,
            skipped: 0,
            idle_lost: 0,
            late: 0,
            duplicates: 0,
            too_large: 0,
            resyncs: 0,
            ssrc_changes: 0,
            delay_hist_ms: Box::new([0; DELAY_HISTOGRAM_MS]),
            delay_sum_us: 0,
        }
    }
}

impl JitterStats {
    fn record_delay(&mut self, d: Duration) {
        let ms = (d.as_millis() as usize).min(DELAY_HISTOGRAM_MS - 1);
        self.delay_hist_ms[ms] = self.delay_hist_ms[ms].saturating_add(1);
        self.delay_sum_us = self.delay_sum_us.saturating_add(d.as_micros() as u64);
    }

    /// Mean time a played frame spent in the buffer.
    pub fn mean_delay(&self) -> Duration {
        if self.played == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.delay_sum_us / self.played)
    }

    /// Percentile (0.0..=1.0) of the time played frames spent in the buffer, to 1 ms.
    pub fn delay_percentile(&self, p: f64) -> Duration {
        let total: u64 = self.delay_hist_ms.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * p.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (ms, &c) in self.delay_hist_ms.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Duration::from_millis(ms as u64 + 1);
            }
        }
        Duration::from_millis(DELAY_HISTOGRAM_MS as u64)
    }
}

#[derive(Clone)]
struct Slot {
    /// Frame index stored here, `None` when free.
    index: Option<u64>,
    sequence: u64,
    timestamp: u64,
    arrival: Instant,
    payload_type: u8,
    marker: bool,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

/// The adaptive jitter buffer of one inbound stream. See the module documentation.
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Box<[Slot; SLOTS]>,
    buffered: usize,
    ssrc: Option<u32>,
    /// Timestamp offset within a frame (frames are `align + k * frame_units`).
    align: u64,
    highest_ts: u64,
    highest_seq: u64,
    epoch: Instant,
    /// Next frame index to play; `None` while priming.
    play_index: Option<u64>,
    /// Frames at or below this index are late (already played or skipped).
    played_through: Option<u64>,
    misses: u32,
    /// Extended sequence number of the last frame played, and frames concealed since.
    last_played_seq: Option<u64>,
    concealed_since_played: u64,
    transits: Box<[i64; WINDOW]>,
    transit_len: usize,
    transit_next: usize,
    since_recompute: u32,
    min_transit: i64,
    target: i64,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("buffered", &self.buffered)
            .field("ssrc", &self.ssrc)
            .field("play_index", &self.play_index)
            .field("target", &self.target_delay())
            .finish_non_exhaustive()
    }
}

impl JitterBuffer {
    /// An empty buffer; `now` anchors its clock.
    pub fn new(cfg: JitterConfig, now: Instant) -> Self {
        let cfg = JitterConfig {
            clock_rate: cfg.clock_rate.max(1),
            frame_units: cfg.frame_units.max(1),
            max_delay: cfg.max_delay.max(cfg.min_delay),
            ..cfg
        };
        let empty = Slot {
            index: None,
            sequence: 0,
            timestamp: 0,
            arrival: now,
            payload_type: 0,
            marker: false,
            len: 0,
            data: [0; MAX_PAYLOAD],
        };
        let mut jb = Self {
            cfg,
            slots: Box::new(std::array::from_fn(|_| empty.clone())),
            buffered: 0,
            ssrc: None,
            align: 0,
            highest_ts: 0,
            highest_seq: 0,
            epoch: now,
            play_index: None,
            played_through: None,
            misses: 0,
            last_played_seq: None,
            concealed_since_played: 0,
            transits: Box::new([0; WINDOW]),
            transit_len: 0,
            transit_next: 0,
            since_recompute: 0,
            min_transit: 0,
            target: 0,
            stats: JitterStats::default(),
        };
        jb.target = jb.units(cfg.min_delay);
        jb
    }

    fn units(&self, d: Duration) -> i64 {
        (d.as_micros() as i64).saturating_mul(i64::from(self.cfg.clock_rate)) / 1_000_000
    }

    fn units_to_duration(&self, u: i64) -> Duration {
        Duration::from_micros(
            (u.max(0) as u64).saturating_mul(1_000_000) / u64::from(self.cfg.clock_rate),
        )
    }

    fn now_units(&self, now: Instant) -> i64 {
        self.units(now.saturating_duration_since(self.epoch))
    }

    /// The settings in use.
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Changes the frame length (another packetisation time on the wire) and/or clock rate in
    /// place: whatever is buffered is dropped and the stream re-primes; the counters are kept.
    /// Nothing allocates.
    pub fn set_framing(&mut self, clock_rate: u32, frame_units: u32) {
        let clock_rate = clock_rate.max(1);
        let frame_units = frame_units.max(1);
        if clock_rate == self.cfg.clock_rate && frame_units == self.cfg.frame_units {
            return;
        }
        let clock_changed = clock_rate != self.cfg.clock_rate;
        self.cfg.clock_rate = clock_rate;
        self.cfg.frame_units = frame_units;
        self.restart();
        if clock_changed {
            self.transit_len = 0;
            self.transit_next = 0;
            self.since_recompute = 0;
            self.target = self.units(self.cfg.min_delay);
        }
    }

    /// Forgets the buffered packets and the stream (the next packet primes it again), keeping
    /// the counters and the delay history. Nothing allocates.
    pub fn restart(&mut self) {
        self.clear_slots();
        self.ssrc = None;
        self.play_index = None;
        self.played_through = None;
        self.misses = 0;
        self.last_played_seq = None;
        self.concealed_since_played = 0;
    }

    /// Counters and delay figures.
    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// The delay the buffer currently aims for.
    pub fn target_delay(&self) -> Duration {
        self.units_to_duration(self.target)
    }

    /// Packets buffered.
    pub fn len(&self) -> usize {
        self.buffered
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    fn clear_slots(&mut self) {
        for s in self.slots.iter_mut() {
            s.index = None;
        }
        self.buffered = 0;
    }

    fn reset_stream(&mut self, packet: &RtpPacket<'_>) {
        self.clear_slots();
        self.ssrc = Some(packet.ssrc);
        self.align = u64::from(packet.timestamp) % u64::from(self.cfg.frame_units);
        self.highest_ts = u64::from(packet.timestamp) + (1 << 32);
        self.highest_seq = u64::from(packet.sequence) + (1 << 16);
        self.play_index = None;
        self.played_through = None;
        self.misses = 0;
        self.last_played_seq = None;
        self.concealed_since_played = 0;
        self.transit_len = 0;
        self.transit_next = 0;
        self.since_recompute = 0;
    }

    /// Offers one received packet of this stream (telephone-events and comfort noise belong
    /// elsewhere). The payload is copied into a fixed slot.
    pub fn insert(&mut self, packet: &RtpPacket<'_>, arrival: Instant) -> InsertOutcome {
        self.stats.received += 1;
        if packet.payload.len() > MAX_PAYLOAD {
            self.stats.too_large += 1;
            return InsertOutcome::TooLarge;
        }
        match self.ssrc {
            None => self.reset_stream(packet),
            Some(s) if s != packet.ssrc => {
                self.stats.ssrc_changes += 1;
                self.reset_stream(packet);
            }
            Some(_) => {}
        }
        let mut ts = extend_timestamp(self.highest_ts, packet.timestamp);
        let mut seq = extend_sequence(self.highest_seq, packet.sequence);
        let frame = u64::from(self.cfg.frame_units);
        let misaligned = ts % frame != self.align;
        let next = self.play_index.or(self.played_through.map(|p| p + 1));
        let far_ahead = next.is_some_and(|p| ts / frame >= p + SLOTS as u64);
        let far_behind = next.is_some_and(|p| ts / frame + (SLOTS as u64) * 4 < p);
        if misaligned || far_ahead || far_behind {
            if self.play_index.is_none() && self.buffered == 0 {
                // Between talkspurts: follow the new timeline, keep the delay history.
                self.align = ts % frame;
                self.played_through = None;
            } else {
                self.stats.resyncs += 1;
                self.reset_stream(packet);
                ts = self.highest_ts;
                seq = self.highest_seq;
            }
        }
        self.highest_ts = self.highest_ts.max(ts);
        self.highest_seq = self.highest_seq.max(seq);
        self.store(packet, ts / frame, ts, seq, arrival)
    }

    fn store(
        &mut self,
        packet: &RtpPacket<'_>,
        index: u64,
        ts: u64,
        seq: u64,
        arrival: Instant,
    ) -> InsertOutcome {
        // Transit feeds the delay estimate even for late packets: they are the evidence.
        self.record_transit(arrival, ts);
        if self.played_through.is_some_and(|p| index <= p) {
            self.stats.late += 1;
            return InsertOutcome::Late;
        }
        let slot = &mut self.slots[(index % SLOTS as u64) as usize];
        if slot.index == Some(index) {
            self.stats.duplicates += 1;
            return InsertOutcome::Duplicate;
        }
        if slot.index.is_none() {
            self.buffered += 1;
        }
        // An occupant with another index is older than the ring: it can no longer play.
        slot.index = Some(index);
        slot.sequence = seq;
        slot.timestamp = ts;
        slot.arrival = arrival;
        slot.payload_type = packet.payload_type;
        slot.marker = packet.marker;
        slot.len = packet.payload.len() as u16;
        slot.data[..packet.payload.len()].copy_from_slice(packet.payload);
        InsertOutcome::Stored
    }

    fn record_transit(&mut self, arrival: Instant, ts: u64) {
        let transit = self.now_units(arrival) - ts as i64;
        if self.transit_len > 0
            && (transit - self.min_transit).abs() > 4 * self.units(self.cfg.max_delay)
        {
            // The sender's timeline moved (timestamp jump): the old history no longer applies.
            self.transit_len = 0;
            self.transit_next = 0;
        }
        self.transits[self.transit_next] = transit;
        self.transit_next = (self.transit_next + 1) % WINDOW;
        self.transit_len = (self.transit_len + 1).min(WINDOW);
        if self.transit_len == 1 || transit < self.min_transit {
            self.min_transit = transit;
        }
        self.since_recompute += 1;
        if self.since_recompute >= RECOMPUTE_EVERY || self.transit_len <= 2 {
            self.recompute_target();
        }
    }

    fn recompute_target(&mut self) {
        let elapsed = i64::from(self.since_recompute);
        self.since_recompute = 0;
        let n = self.transit_len;
        // The selection's scratch copy is per thread, not per buffer (4 KiB less per leg).
        let (min, pth) = SCRATCH.with_borrow_mut(|scratch| {
            let window = &mut scratch[..n];
            window.copy_from_slice(&self.transits[..n]);
            let min = window.iter().copied().min().unwrap_or(0);
            let rank = (((n as f64) * self.cfg.percentile).ceil() as usize).clamp(1, n) - 1;
            let (_, pth, _) = window.select_nth_unstable(rank);
            (min, *pth)
        });
        // The reference for the current delay is the fastest *recent* packet, so that a sender
        // clock slower than ours (transit creeping up) is followed within a few seconds.
        let recent = n.min(RECENT);
        self.min_transit = (1..=recent)
            .map(|back| self.transits[(self.transit_next + WINDOW - back) % WINDOW])
            .min()
            .unwrap_or(min);
        let estimate = (pth - min).clamp(
            self.units(self.cfg.min_delay),
            self.units(self.cfg.max_delay),
        );
        if estimate > self.target {
            self.target = estimate;
        } else {
            // Come down slowly (one unit per packet, ~6 ms/s at 20 ms): hysteresis against
            // a jitter burst that is about to recur.
            self.target = (self.target - elapsed).max(estimate);
        }
    }

    fn current_delay(&self, now: Instant, index: u64) -> i64 {
        let play_ts = (index * u64::from(self.cfg.frame_units) + self.align) as i64;
        self.now_units(now) - play_ts - self.min_transit
    }

    fn earliest_buffered(&self) -> Option<u64> {
        self.slots.iter().filter_map(|s| s.index).min()
    }

    /// One playout tick (call every frame duration).
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        let Some(mut index) = self.play_index else {
            return self.prime(now);
        };
        let frame = i64::from(self.cfg.frame_units);
        let hyst = self.units(self.cfg.hysteresis);
        let delay = self.current_delay(now, index);
        let excess = delay - self.target;
        // Shrink: drop the frame due now, in silence if we can tell, or anyway when far over.
        if excess >= frame + hyst {
            let i = (index % SLOTS as u64) as usize;
            let present = self.slots[i].index == Some(index);
            let quiet = present && {
                let s = &self.slots[i];
                is_quiet(s.payload_type, &s.data[..usize::from(s.len)])
            };
            if !present || quiet || excess >= 3 * frame + hyst {
                if present {
                    self.slots[i].index = None;
                    self.buffered -= 1;
                    self.stats.dropped += 1;
                } else {
                    self.stats.skipped += 1;
                }
                self.played_through = Some(index);
                index += 1;
                self.play_index = Some(index);
            }
        }
        let i = (index % SLOTS as u64) as usize;
        if self.slots[i].index == Some(index) {
            self.misses = 0;
            self.slots[i].index = None;
            self.buffered -= 1;
            self.played_through = Some(index);
            self.play_index = Some(index + 1);
            self.stats.played += 1;
            self.last_played_seq = Some(self.slots[i].sequence);
            self.concealed_since_played = 0;
            let residence = now.saturating_duration_since(self.slots[i].arrival);
            self.stats.record_delay(residence);
            let s = &self.slots[i];
            return Playout::Frame(FrameRef {
                payload: &s.data[..usize::from(s.len)],
                payload_type: s.payload_type,
                sequence: s.sequence,
                timestamp: s.timestamp,
                marker: s.marker,
            });
        }
        // Missing. Below target and something is still coming: grow instead of losing.
        if delay < self.target {
            self.stats.stretched += 1;
            return Playout::Stretch;
        }
        if self.buffered == 0 {
            self.misses += 1;
            if self.misses > MISSES_BEFORE_REPRIME {
                // End of talkspurt (or the sender went quiet): wait for the next one.
                self.play_index = None;
                self.played_through = Some(index.saturating_sub(1));
                return Playout::Empty;
            }
        }
        self.stats.concealed += 1;
        self.concealed_since_played += 1;
        self.played_through = Some(index);
        self.play_index = Some(index + 1);
        Playout::Lost
    }

    fn prime(&mut self, now: Instant) -> Playout<'_> {
        let Some(first) = self.earliest_buffered() else {
            return Playout::Empty;
        };
        let i = (first % SLOTS as u64) as usize;
        let arrival = self.slots[i].arrival;
        let waited = self.units(now.saturating_duration_since(arrival));
        let due = self.current_delay(now, first) >= self.target;
        if due || waited >= self.units(self.cfg.max_delay) {
            let s = &self.slots[i];
            if let (false, Some(last)) = (s.marker, self.last_played_seq) {
                let gap = s.sequence.saturating_sub(last + 1);
                self.stats.idle_lost += gap.saturating_sub(self.concealed_since_played);
            }
            self.concealed_since_played = 0;
            self.play_index = Some(first);
            self.misses = 0;
            return self.pop(now);
        }
        Playout::Empty
    }
}

/// True for a G.711 frame (payload type 0 or 8) whose loudest sample is below about −41 dBm0:
/// a frame that can be dropped or inserted without being heard. Other payloads: false.
pub fn is_quiet(payload_type: u8, payload: &[u8]) -> bool {
    let law = match payload_type {
        0 => Law::Ulaw,
        8 => Law::Alaw,
        _ => return false,
    };
    payload
        .iter()
        .all(|&c| law.decode_sample(c).unsigned_abs() < 200)
}

/// What [`G711Playout::pull`] put into the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PulledAudio {
    /// Decoded from a received packet.
    Voice,
    /// Synthesised by packet loss concealment (a loss or an inserted frame).
    Concealed,
    /// Silence: nothing to play.
    Silence,
}

/// A jitter buffer feeding a G.711 decoder with packet loss concealment: the receive half of an
/// RTP leg down to 20 ms linear frames.
#[derive(Debug)]
pub struct G711Playout {
    buffer: JitterBuffer,
    plc: Plc,
}

impl G711Playout {
    /// A playout for 20 ms G.711 frames.
    pub fn new(cfg: JitterConfig, now: Instant) -> Self {
        Self {
            buffer: JitterBuffer::new(cfg, now),
            plc: Plc::new(),
        }
    }

    /// The jitter buffer (statistics, target delay).
    pub fn buffer(&self) -> &JitterBuffer {
        &self.buffer
    }

    /// Offers a received PCMU/PCMA packet.
    pub fn insert(&mut self, packet: &RtpPacket<'_>, arrival: Instant) -> InsertOutcome {
        self.buffer.insert(packet, arrival)
    }

    /// Produces the 20 ms frame due at `now`.
    pub fn pull(&mut self, now: Instant, out: &mut [i16; FRAME_SAMPLES]) -> PulledAudio {
        match self.buffer.pop(now) {
            Playout::Frame(f) => {
                let law = if f.payload_type == 8 {
                    Law::Alaw
                } else {
                    Law::Ulaw
                };
                if let Ok(codes) = <&[u8; FRAME_SAMPLES]>::try_from(f.payload) {
                    g711::decode_frame(law, codes, out);
                } else {
                    out.fill(0);
                    let n = f.payload.len().min(FRAME_SAMPLES);
                    let _ = g711::decode(law, &f.payload[..n], &mut out[..n]);
                }
                self.plc.good_frame(out);
                PulledAudio::Voice
            }
            Playout::Lost | Playout::Stretch => {
                self.plc.conceal(out);
                PulledAudio::Concealed
            }
            Playout::Empty => {
                out.fill(0);
                if self.plc.in_gap() {
                    self.plc.reset();
                }
                PulledAudio::Silence
            }
        }
    }
}
