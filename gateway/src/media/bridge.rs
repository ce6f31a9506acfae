//! The lock-free audio bridge: each leg has an inbound and an outbound SPSC ring of 20 ms linear
//! frames, and a [`Bridge`] moves frames from one leg's inbound ring to the other's outbound ring
//! once per 20 ms tick.
//!
//! A leg's IO side (network task or TDM span thread) holds a [`LegEndpoint`]: it pushes what it
//! receives and pops what it must send. The bridge holds the matching [`BridgePort`]s. Because
//! only the bridge touches the ports, re-pointing a side to another leg (a transfer) is a plain
//! swap between two ticks: the kept leg is fed on every tick, with a hold source (silence, tone)
//! while its side has no partner. Rings are allocated once, at leg set-up; nothing on the tick
//! path allocates or locks.

use std::sync::{Arc, Weak};

use codecs::FRAME_SAMPLES;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::wrap::Wrap;
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// One 20 ms frame of 8 kHz linear audio.
pub type Frame = [i16; FRAME_SAMPLES];

/// Default ring depth: 8 frames (160 ms) absorbs scheduling hiccups without adding delay in the
/// steady state (the rings run nearly empty).
pub const DEFAULT_RING_FRAMES: usize = 8;

/// The IO side of one leg: frames received from the leg's peer go in, frames to send come out.
pub struct LegEndpoint {
    inbound: HeapProd<Frame>,
    outbound: HeapCons<Frame>,
    overruns: u64,
}

impl std::fmt::Debug for LegEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegEndpoint")
            .field("inbound_queued", &self.inbound.occupied_len())
            .field("outbound_queued", &self.outbound.occupied_len())
            .field("overruns", &self.overruns)
            .finish()
    }
}

impl LegEndpoint {
    /// Queues a frame received from the peer. Returns false (and counts an overrun) when the
    /// bridge has not kept up and the ring is full: the frame is dropped.
    pub fn push_received(&mut self, frame: &Frame) -> bool {
        if self.inbound.try_push(*frame).is_err() {
            self.overruns += 1;
            return false;
        }
        true
    }

    /// The next frame to send to the peer, if the bridge has produced one.
    pub fn pop_to_send(&mut self) -> Option<Frame> {
        self.outbound.try_pop()
    }

    /// Frames dropped because the inbound ring was full.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// A handle that tells whether this leg's rings still exist (for release checks).
    pub fn watch(&self) -> RingWatch {
        RingWatch {
            rings: [
                Arc::downgrade(self.inbound.rb_ref()),
                Arc::downgrade(self.outbound.rb_ref()),
            ],
        }
    }
}

/// The bridge side of one leg (the other halves of its two rings).
pub struct BridgePort {
    inbound: HeapCons<Frame>,
    outbound: HeapProd<Frame>,
}

impl std::fmt::Debug for BridgePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgePort")
            .field("inbound_queued", &self.inbound.occupied_len())
            .field("outbound_queued", &self.outbound.occupied_len())
            .finish()
    }
}

impl BridgePort {
    /// The next frame the leg received from its peer, if any.
    pub fn pop_inbound(&mut self) -> Option<Frame> {
        self.inbound.try_pop()
    }

    /// Queues a frame for the leg to send; false when its ring is full (the leg is not draining
    /// it) and the frame is dropped.
    pub fn push_outbound(&mut self, frame: &Frame) -> bool {
        self.outbound.try_push(*frame).is_ok()
    }
}

/// Weak references to a leg's rings: [`RingWatch::live`] counts those not yet freed.
#[derive(Debug, Clone)]
pub struct RingWatch {
    rings: [Weak<HeapRb<Frame>>; 2],
}

impl RingWatch {
    /// Rings of the watched leg still allocated (0, 1 or 2).
    pub fn live(&self) -> usize {
        self.rings.iter().filter(|w| w.strong_count() > 0).count()
    }
}

/// Allocates the two rings of a new leg (`capacity` frames each, at least 1).
pub fn leg_rings(capacity: usize) -> (LegEndpoint, BridgePort) {
    let (in_prod, in_cons) = HeapRb::<Frame>::new(capacity.max(1)).split();
    let (out_prod, out_cons) = HeapRb::<Frame>::new(capacity.max(1)).split();
    (
        LegEndpoint {
            inbound: in_prod,
            outbound: out_cons,
            overruns: 0,
        },
        BridgePort {
            inbound: in_cons,
            outbound: out_prod,
        },
    )
}

/// What a side hears while it has no partner (during a transfer, on hold).
pub trait HoldSource: Send {
    /// Fills the next 20 ms.
    fn fill(&mut self, frame: &mut Frame);
}

/// Silence.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silence;

impl HoldSource for Silence {
    fn fill(&mut self, frame: &mut Frame) {
        frame.fill(0);
    }
}

/// A call-progress tone (e.g. ringback while a transfer target is alerted).
impl HoldSource for codecs::tones::ToneGenerator {
    fn fill(&mut self, frame: &mut Frame) {
        codecs::tones::ToneGenerator::fill(self, frame);
    }
}

/// Which side of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first leg.
    A,
    /// The second leg.
    B,
}

/// Counters of one direction (frames flowing *towards* a side).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionStats {
    /// Frames moved from the partner.
    pub moved: u64,
    /// Ticks where the partner had no frame ready (silence was sent instead).
    pub underruns: u64,
    /// Frames that did not fit the outbound ring (the leg is not draining it).
    pub overruns: u64,
    /// Frames from the hold source (no partner).
    pub held: u64,
}

/// Two legs joined: A's inbound feeds B's outbound and B's inbound feeds A's outbound.
pub struct Bridge {
    a: Option<BridgePort>,
    b: Option<BridgePort>,
    hold: Box<dyn HoldSource>,
    to_a: DirectionStats,
    to_b: DirectionStats,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("a", &self.a)
            .field("b", &self.b)
            .field("to_a", &self.to_a)
            .field("to_b", &self.to_b)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Joins two legs; a side left without partner hears `hold`.
    pub fn new(a: BridgePort, b: BridgePort, hold: Box<dyn HoldSource>) -> Self {
        Self {
            a: Some(a),
            b: Some(b),
            hold,
            to_a: DirectionStats::default(),
            to_b: DirectionStats::default(),
        }
    }

    /// Counters of the frames flowing towards `side`.
    pub fn stats(&self, side: Side) -> DirectionStats {
        match side {
            Side::A => self.to_a,
            Side::B => self.to_b,
        }
    }

    /// Detaches one side (its leg goes away or is being replaced) and returns its port; until
    /// [`Bridge::attach`], the other side hears the hold source.
    pub fn detach(&mut self, side: Side) -> Option<BridgePort> {
        match side {
            Side::A => self.a.take(),
            Side::B => self.b.take(),
        }
    }

    /// Connects `port` on `side`, returning the port it replaces (a transfer is one call). Frames
    /// still queued in the new leg's inbound ring from before are discarded, so the kept leg does
    /// not hear stale audio.
    pub fn attach(&mut self, side: Side, mut port: BridgePort) -> Option<BridgePort> {
        port.inbound.clear();
        match side {
            Side::A => self.a.replace(port),
            Side::B => self.b.replace(port),
        }
    }

    /// One 20 ms tick: moves at most one frame each way. With a partner that produced nothing
    /// this tick the kept side gets silence (underrun); with no partner, the hold source.
    pub fn tick(&mut self) {
        let mut frame = [0i16; FRAME_SAMPLES];
        Self::direction(
            &mut self.a,
            &mut self.b,
            &mut *self.hold,
            &mut self.to_b,
            &mut frame,
        );
        Self::direction(
            &mut self.b,
            &mut self.a,
            &mut *self.hold,
            &mut self.to_a,
            &mut frame,
        );
    }

    fn direction(
        from: &mut Option<BridgePort>,
        to: &mut Option<BridgePort>,
        hold: &mut dyn HoldSource,
        stats: &mut DirectionStats,
        frame: &mut Frame,
    ) {
        let Some(to) = to.as_mut() else {
            // Nobody to feed; still drain the source so it hears current audio when re-joined.
            if let Some(from) = from.as_mut() {
                let _ = from.inbound.try_pop();
            }
            return;
        };
        match from.as_mut().map(|f| f.inbound.try_pop()) {
            Some(Some(f)) => {
                *frame = f;
                stats.moved += 1;
            }
            Some(None) => {
                frame.fill(0);
                stats.underruns += 1;
            }
            None => {
                hold.fill(frame);
                stats.held += 1;
            }
        }
        if to.outbound.try_push(*frame).is_err() {
            stats.overruns += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: i16) -> Frame {
        [n; FRAME_SAMPLES]
    }

    #[test]
    fn frames_cross_both_ways_in_order() {
        let (mut a, pa) = leg_rings(4);
        let (mut b, pb) = leg_rings(4);
        let mut bridge = Bridge::new(pa, pb, Box::new(Silence));
        for n in 1..=100 {
            assert!(a.push_received(&numbered(n)));
            assert!(b.push_received(&numbered(-n)));
            bridge.tick();
            assert_eq!(b.pop_to_send(), Some(numbered(n)));
            assert_eq!(a.pop_to_send(), Some(numbered(-n)));
        }
        assert_eq!(bridge.stats(Side::A).moved, 100);
        assert_eq!(bridge.stats(Side::B).underruns, 0);
    }

    #[test]
    fn kept_side_hears_ringback_while_alone() {
        use codecs::tones::{Country, ToneGenerator, ToneKind};
        let (mut a, pa) = leg_rings(8);
        let (_b, pb) = leg_rings(8);
        let hold = ToneGenerator::new(Country::Etsi, ToneKind::Ringback);
        let mut bridge = Bridge::new(pa, pb, Box::new(hold));
        drop(bridge.detach(Side::B));
        // ETSI ringback: 1 s of 425 Hz, 4 s off. The first 50 frames sound, the next don't.
        let mut loud = 0;
        for k in 0..100 {
            bridge.tick();
            let f = a.pop_to_send().unwrap();
            let peak = f.iter().map(|s| s.unsigned_abs()).max().unwrap();
            if k < 50 {
                assert!(peak > 1000, "frame {k} peak {peak}");
                loud += 1;
            } else {
                assert_eq!(peak, 0, "frame {k}");
            }
        }
        assert_eq!(loud, 50);
        assert_eq!(bridge.stats(Side::A).held, 100);
    }

    #[test]
    fn underrun_and_overrun_are_counted() {
        let (mut a, pa) = leg_rings(2);
        let (_b, pb) = leg_rings(2);
        let mut bridge = Bridge::new(pa, pb, Box::new(Silence));
        bridge.tick();
        assert_eq!(bridge.stats(Side::B).underruns, 1);
        assert_eq!(a.pop_to_send(), Some(numbered(0)));
        // B never drains its outbound ring: after 2 frames it overflows.
        for _ in 0..4 {
            bridge.tick();
        }
        assert_eq!(bridge.stats(Side::B).overruns, 3);
        assert!(a.push_received(&numbered(1)));
        assert!(a.push_received(&numbered(1)));
        assert!(!a.push_received(&numbered(1)));
        assert_eq!(a.overruns(), 1);
    }
}
