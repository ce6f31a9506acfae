//! The per-span media thread: one OS thread per span moves 20 ms blocks between the span's
//! B-channels and lock-free rings of linear frames.
//!
//! Set-up ([`SpanMedia::open`]) opens the channels, sets 160-byte blocks and allocates every
//! ring and buffer. The thread ([`SpanMedia::spawn`]) then loops: for each channel, read one
//! block (blocking, paced by the span's clock), decode it with the channel's G.711 law and push
//! the frame into the channel's *from-line* ring; pop the next frame from its *to-line* ring
//! (silence if the gateway has not produced one: an underrun), encode it and write it. It never
//! allocates, locks, logs or awaits in steady state (`hw-tests/tests/span_thread.rs` counts
//! allocations: zero); counters are atomics the gateway reads at any time.
//!
//! The gateway side of each channel is a [`ChannelPorts`]: the producer half of the to-line
//! ring and the consumer half of the from-line ring (`ringbuf` SPSC). Stopping
//! ([`SpanThread::stop`]) ends the loop within one block and closes every channel.
//!
//! Rare paths may allocate: a read or write refused because an event is pending builds a typed
//! error before the event is fetched and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codecs::g711::{self, Law};
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::{Backend, Channel, Event, TdmError};

/// One 20 ms frame of 8 kHz linear audio.
pub type Frame = [i16; codecs::FRAME_SAMPLES];

/// Bytes per block: one 20 ms frame of G.711.
pub const BLOCK_BYTES: usize = codecs::FRAME_SAMPLES;

/// Frames each ring holds (160 ms): enough to ride out scheduling hiccups.
pub const RING_FRAMES: usize = 8;

/// Which channel of a span, and its law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Span number.
    pub span: u32,
    /// Position in the span (1-based).
    pub position: u32,
    /// The law of the channel's audio.
    pub law: Law,
}

/// Counters of one channel, updated by the span thread.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    /// Blocks read from the device and queued for the gateway.
    pub frames_from_line: AtomicU64,
    /// Blocks written to the device.
    pub frames_to_line: AtomicU64,
    /// Blocks written as silence because the gateway had no frame ready.
    pub underruns: AtomicU64,
    /// Frames dropped because the gateway had not consumed the from-line ring.
    pub overruns: AtomicU64,
    /// Events fetched from the channel (alarms, hook changes, ...).
    pub events: AtomicU64,
    /// The last event's DAHDI code (0: none yet).
    pub last_event: AtomicU64,
    /// Read or write errors other than pending events.
    pub errors: AtomicU64,
}

/// Counters of the span thread.
#[derive(Debug, Default)]
pub struct SpanCounters {
    /// Completed 20 ms cycles over all channels.
    pub cycles: AtomicU64,
    /// Largest time from a block's read() returning to its frame being in the ring, ns.
    pub max_read_to_ring_ns: AtomicU64,
    /// Sum of those times, ns (divide by frames for the mean).
    pub total_read_to_ring_ns: AtomicU64,
    /// Frames those times cover.
    pub measured_frames: AtomicU64,
}

/// The gateway's side of one channel.
pub struct ChannelPorts {
    /// The channel.
    pub spec: ChannelSpec,
    /// Push frames to send on the line.
    pub to_line: HeapProd<Frame>,
    /// Pop frames received from the line.
    pub from_line: HeapCons<Frame>,
    /// The channel's counters.
    pub counters: Arc<ChannelCounters>,
}

impl std::fmt::Debug for ChannelPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPorts")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

struct Slot<B: Backend> {
    channel: Channel<B>,
    law: Law,
    to_line: HeapCons<Frame>,
    from_line: HeapProd<Frame>,
    counters: Arc<ChannelCounters>,
}

/// A span's channels, opened and ready to be served by a thread.
pub struct SpanMedia<B: Backend> {
    span: u32,
    slots: Vec<Slot<B>>,
    counters: Arc<SpanCounters>,
}

impl<B: Backend> std::fmt::Debug for SpanMedia<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanMedia")
            .field("span", &self.span)
            .field("channels", &self.slots.len())
            .finish()
    }
}

impl<B: Backend + 'static> SpanMedia<B> {
    /// Opens `channels` (all of one span) with 160-byte blocks, and allocates their rings.
    /// Returns the media set and the gateway-side ports, in the order given.
    pub fn open(
        backend: Arc<B>,
        span: u32,
        channels: &[ChannelSpec],
    ) -> Result<(Self, Vec<ChannelPorts>), TdmError> {
        let mut slots = Vec::with_capacity(channels.len());
        let mut ports = Vec::with_capacity(channels.len());
        for spec in channels {
            if spec.span != span {
                return Err(TdmError::InvalidArgument {
                    op: "span media",
                    reason: format!(
                        "channel {}/{} is not on span {span}",
                        spec.span, spec.position
                    ),
                });
            }
            let mut channel = Channel::open_span_channel(backend.clone(), span, spec.position)?;
            channel.set_block_size(BLOCK_BYTES)?;
            let (to_prod, to_cons) = HeapRb::<Frame>::new(RING_FRAMES).split();
            let (from_prod, from_cons) = HeapRb::<Frame>::new(RING_FRAMES).split();
            let counters = Arc::new(ChannelCounters::default());
            slots.push(Slot {
                channel,
                law: spec.law,
                to_line: to_cons,
                from_line: from_prod,
                counters: counters.clone(),
            });
            ports.push(ChannelPorts {
                spec: *spec,
                to_line: to_prod,
                from_line: from_cons,
                counters,
            });
        }
        Ok((
            SpanMedia {
                span,
                slots,
                counters: Arc::new(SpanCounters::default()),
            },
            ports,
        ))
    }

    /// The thread's counters (shared; read them while it runs).
    pub fn counters(&self) -> Arc<SpanCounters> {
        self.counters.clone()
    }

    /// Starts the span thread.
    pub fn spawn(self) -> Result<SpanThread, TdmError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let counters = self.counters.clone();
        let span = self.span;
        let join = std::thread::Builder::new()
            .name(format!("span-{span}"))
            .spawn(move || run(self, &stop_flag))
            .map_err(|e| TdmError::InvalidArgument {
                op: "span media",
                reason: format!("cannot start the span {span} thread: {e}"),
            })?;
        Ok(SpanThread {
            stop,
            join: Some(join),
            counters,
        })
    }
}

/// What a span thread reports when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanReport {
    /// Cycles completed.
    pub cycles: u64,
    /// CPU time the thread used.
    pub cpu_time: Duration,
    /// Wall time it ran.
    pub wall_time: Duration,
}

/// A running span thread.
#[derive(Debug)]
pub struct SpanThread {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<SpanReport>>,
    counters: Arc<SpanCounters>,
}

impl SpanThread {
    /// The thread's counters.
    pub fn counters(&self) -> &SpanCounters {
        &self.counters
    }

    /// Asks the thread to stop, waits for it (at most one block per channel) and returns its
    /// report. Every channel is closed when this returns.
    pub fn stop(mut self) -> Result<SpanReport, TdmError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.join.take().map(JoinHandle::join) {
            Some(Ok(report)) => Ok(report),
            _ => Err(TdmError::InvalidArgument {
                op: "span media",
                reason: "the span thread ended abnormally".into(),
            }),
        }
    }
}

impl Drop for SpanThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn run<B: Backend>(mut media: SpanMedia<B>, stop: &AtomicBool) -> SpanReport {
    let started = Instant::now();
    let cpu_start = thread_cpu_time();
    let mut block = [0u8; BLOCK_BYTES];
    let mut frame: Frame = [0; codecs::FRAME_SAMPLES];
    let counters = media.counters.clone();
    while !stop.load(Ordering::Relaxed) {
        for slot in media.slots.iter_mut() {
            // Receive: one block from the line into the from-line ring.
            match slot.channel.read_block(&mut block) {
                Ok(n) if n == BLOCK_BYTES => {
                    let read_at = Instant::now();
                    if let Ok(codes) = <&[u8; BLOCK_BYTES]>::try_from(&block[..]) {
                        g711::decode_frame(slot.law, codes, &mut frame);
                    }
                    if slot.from_line.try_push(frame).is_err() {
                        slot.counters.overruns.fetch_add(1, Ordering::Relaxed);
                    } else {
                        slot.counters
                            .frames_from_line
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let ns = read_at.elapsed().as_nanos() as u64;
                    counters
                        .max_read_to_ring_ns
                        .fetch_max(ns, Ordering::Relaxed);
                    counters
                        .total_read_to_ring_ns
                        .fetch_add(ns, Ordering::Relaxed);
                    counters.measured_frames.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(TdmError::EventPending { .. }) => fetch_events(slot),
                Err(_) => {
                    slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Transmit: the next frame for the line, or silence.
            let out = match slot.to_line.try_pop() {
                Some(f) => f,
                None => {
                    slot.counters.underruns.fetch_add(1, Ordering::Relaxed);
                    [0; codecs::FRAME_SAMPLES]
                }
            };
            let mut codes = [0u8; BLOCK_BYTES];
            g711::encode_frame(slot.law, &out, &mut codes);
            match slot.channel.write_block(&codes) {
                Ok(_) => {
                    slot.counters.frames_to_line.fetch_add(1, Ordering::Relaxed);
                }
                Err(TdmError::EventPending { .. }) => fetch_events(slot),
                Err(_) => {
                    slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counters.cycles.fetch_add(1, Ordering::Relaxed);
        if media.slots.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    SpanReport {
        cycles: counters.cycles.load(Ordering::Relaxed),
        cpu_time: thread_cpu_time().saturating_sub(cpu_start),
        wall_time: started.elapsed(),
    }
}

fn fetch_events<B: Backend>(slot: &mut Slot<B>) {
    // Drain the queue (bounded, in case a broken device reports events forever).
    for _ in 0..16 {
        match slot.channel.get_event() {
            Ok(Some(event)) => {
                slot.counters.events.fetch_add(1, Ordering::Relaxed);
                slot.counters
                    .last_event
                    .store(u64::from(event_code(event)), Ordering::Relaxed);
            }
            _ => break,
        }
    }
}

fn event_code(event: Event) -> u32 {
    u32::try_from(event.to_raw()).unwrap_or(0)
}
