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
//! Signalling goes through the thread too ([`signal`]): each channel also has an SPSC ring of
//! [`SignalCommand`]s (hook, wink, flash, CAS bits, polarity, cadence, in-band dialling with
//! spanbridge's DTMF/MF generator or DAHDI_DIAL, digit detection) and one of [`SignalEvent`]s
//! (the driver's events, received CAS bits, detected digits, dial and wink completion). The
//! gateway holds them as [`ChannelSignals`] ([`SpanMedia::take_signals`]). Commands are run
//! and events fetched without allocating, failures included: the thread talks to the device
//! through the bare OS-error calls.
//!
//! [`SpanMedia::run_once`] serves every channel once at a given instant: the thread calls it
//! in a loop with the real time; tests on virtual time call it themselves (with channels
//! opened non-blocking, [`SpanOptions::nonblocking`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codecs::g711::{self, Law};
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::backend::Op;
use crate::{Backend, Channel, Event, Hook, TdmError, abi};

pub mod signal;
pub use signal::{
    ChannelSignals, CommandKind, DialError, DialString, DigitKind, MAX_DIAL, SignalCommand,
    SignalEvent,
};

/// One 20 ms frame of 8 kHz linear audio.
pub type Frame = [i16; codecs::FRAME_SAMPLES];

/// Bytes per block: one 20 ms frame of G.711.
pub const BLOCK_BYTES: usize = codecs::FRAME_SAMPLES;

/// Frames each ring holds (160 ms): enough to ride out scheduling hiccups.
pub const RING_FRAMES: usize = 8;

/// Blocks of silence queued ahead on each channel's transmit side when the thread starts
/// (40 ms of latency that absorbs a 40 ms scheduling stall without a gap on the line).
pub const TX_SLACK: usize = 2;

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
    /// Signalling commands executed.
    pub commands: AtomicU64,
    /// Signalling events dropped because the gateway had not consumed the event ring.
    pub events_dropped: AtomicU64,
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

/// How [`SpanMedia::open_with`] opens the channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanOptions {
    /// Open channels non-blocking: a read with no block ready is skipped instead of waited for
    /// (for [`SpanMedia::run_once`] on virtual time; the thread wants blocking reads).
    pub nonblocking: bool,
}

/// What the thread is dialling.
enum Tone {
    Dtmf(codecs::dtmf::DtmfGenerator),
    Mf(codecs::mf::MfGenerator),
    /// Samples of silence left.
    Pause(u32),
}

struct Dialer {
    string: DialString,
    next: usize,
    tone: Tone,
}

impl Dialer {
    fn new(string: DialString) -> Self {
        let pause = u32::from(string.pre_ms) * 8;
        Dialer {
            string,
            next: 0,
            tone: Tone::Pause(pause),
        }
    }

    /// Fills `out` with the next 20 ms (silence after the end); true once the whole string
    /// has been sent.
    fn fill(&mut self, out: &mut Frame) -> bool {
        let mut filled = 0;
        while filled < out.len() {
            let rest = out.get_mut(filled..).unwrap_or(&mut []);
            let n = match &mut self.tone {
                Tone::Dtmf(g) => g.fill(rest),
                Tone::Mf(g) => g.fill(rest),
                Tone::Pause(left) => {
                    let n = (*left as usize).min(rest.len());
                    rest.iter_mut().take(n).for_each(|s| *s = 0);
                    *left -= n as u32;
                    n
                }
            };
            filled += n;
            if filled == out.len() {
                break;
            }
            // The current tone is over: the next digit, or the end.
            let Some(d) = self.string.digit(self.next) else {
                out.iter_mut().skip(filled).for_each(|s| *s = 0);
                return true;
            };
            self.next += 1;
            self.tone = tone_for(&self.string, d);
        }
        false
    }
}

fn tone_for(s: &DialString, d: u8) -> Tone {
    match s.kind {
        DigitKind::Dtmf => codecs::dtmf::DtmfGenerator::new(
            char::from(d),
            codecs::dtmf::DtmfParams {
                level_dbm0: f32::from(s.level_dbm0),
                twist_db: 0.0,
                on_ms: u32::from(s.on_ms),
                off_ms: u32::from(s.off_ms),
            },
        )
        .map_or(Tone::Pause(0), Tone::Dtmf),
        DigitKind::MfR1 => codecs::mf::MfGenerator::new(
            char::from(d),
            codecs::mf::MfParams {
                level_dbm0: f32::from(s.level_dbm0),
                on_ms: u32::from(s.on_ms),
                kp_ms: u32::from(s.kp_ms),
                off_ms: u32::from(s.off_ms),
            },
        )
        .map_or(Tone::Pause(0), Tone::Mf),
    }
}

struct Slot<B: Backend> {
    channel: Channel<B>,
    law: Law,
    to_line: HeapCons<Frame>,
    from_line: HeapProd<Frame>,
    counters: Arc<ChannelCounters>,
    commands: HeapCons<SignalCommand>,
    events: HeapProd<SignalEvent>,
    dialer: Option<Dialer>,
    detect: Option<DigitKind>,
    dtmf: codecs::dtmf::DtmfDetector,
    mf: codecs::mf::MfDetector,
    /// Busy/congestion detector while enabled (plain data: switching it needs no allocation).
    tones: Option<codecs::progress::ProgressDetector>,
    /// A wink's or flash's second hook change, and when it is due.
    timed_hook: Option<(Hook, Instant)>,
}

/// A span's channels, opened and ready to be served by a thread.
pub struct SpanMedia<B: Backend> {
    span: u32,
    slots: Vec<Slot<B>>,
    counters: Arc<SpanCounters>,
    signals: Vec<ChannelSignals>,
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
        Self::open_with(backend, span, channels, SpanOptions::default())
    }

    /// [`SpanMedia::open`] with options.
    pub fn open_with(
        backend: Arc<B>,
        span: u32,
        channels: &[ChannelSpec],
        options: SpanOptions,
    ) -> Result<(Self, Vec<ChannelPorts>), TdmError> {
        let mut slots = Vec::with_capacity(channels.len());
        let mut ports = Vec::with_capacity(channels.len());
        let mut signals = Vec::with_capacity(channels.len());
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
            let mut channel = Channel::open_span_channel_with(
                backend.clone(),
                span,
                spec.position,
                options.nonblocking,
            )?;
            channel.set_block_size(BLOCK_BYTES)?;
            // Slack against scheduling stalls: with DAHDI's default two buffers each way
            // (40 ms), a span thread held off the CPU longer loses received blocks and leaves
            // the line idle mid-tone, which splits or drops in-band digits (CAS addressing).
            // TX_SLACK blocks of silence queued ahead ride out that long a stall; the thread
            // then writes one block per block read, so the queue stays that deep.
            if !options.nonblocking {
                channel.set_buffer_config(&crate::channel::BufferConfig {
                    tx_policy: crate::types::BufferPolicy::Immediate,
                    num_bufs: RING_FRAMES,
                    buf_size: BLOCK_BYTES,
                })?;
                let mut idle = [0u8; BLOCK_BYTES];
                g711::encode_frame(spec.law, &[0; codecs::FRAME_SAMPLES], &mut idle);
                for _ in 0..TX_SLACK {
                    // Best effort: a refused write only means less slack.
                    let _ = channel.write_io(&idle);
                }
            }
            let (to_prod, to_cons) = HeapRb::<Frame>::new(RING_FRAMES).split();
            let (from_prod, from_cons) = HeapRb::<Frame>::new(RING_FRAMES).split();
            let (cmd_prod, cmd_cons) = HeapRb::<SignalCommand>::new(signal::COMMAND_RING).split();
            let (evt_prod, evt_cons) = HeapRb::<SignalEvent>::new(signal::EVENT_RING).split();
            let counters = Arc::new(ChannelCounters::default());
            slots.push(Slot {
                channel,
                law: spec.law,
                to_line: to_cons,
                from_line: from_prod,
                counters: counters.clone(),
                commands: cmd_cons,
                events: evt_prod,
                dialer: None,
                detect: None,
                dtmf: codecs::dtmf::DtmfDetector::new(),
                mf: codecs::mf::MfDetector::new(),
                tones: None,
                timed_hook: None,
            });
            signals.push(ChannelSignals {
                spec: *spec,
                commands: cmd_prod,
                events: evt_cons,
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
                signals,
            },
            ports,
        ))
    }

    /// The signalling side of every channel, in the order given to `open` (once; empty after).
    pub fn take_signals(&mut self) -> Vec<ChannelSignals> {
        std::mem::take(&mut self.signals)
    }

    /// Serves every channel once at `now`: signalling commands and due timed hook changes,
    /// one block received (and run through the digit detector when enabled), one block sent
    /// (the dialler's tones while dialling), pending events fetched. Never allocates.
    pub fn run_once(&mut self, now: Instant) {
        let mut block = [0u8; BLOCK_BYTES];
        let mut frame: Frame = [0; codecs::FRAME_SAMPLES];
        let counters = &self.counters;
        for slot in self.slots.iter_mut() {
            slot.run_commands(now);
            // Receive: one block from the line into the from-line ring.
            match slot.channel.read_io(&mut block) {
                Ok(n) if n == BLOCK_BYTES => {
                    let read_at = Instant::now();
                    g711::decode_frame(slot.law, &block, &mut frame);
                    slot.detect_digits(&frame);
                    slot.detect_tones(&frame);
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
                Err(e) if e.raw_os_error() == Some(abi::ELAST) => slot.fetch_events(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Transmit: the dialler's tones, else the next frame for the line, else silence.
            // (A frame the gateway queued while the dialler plays is dropped: the ring keeps
            // moving.)
            let from_gateway = slot.to_line.try_pop();
            let mut out = [0i16; codecs::FRAME_SAMPLES];
            if let Some(d) = slot.dialer.as_mut() {
                if d.fill(&mut out) {
                    slot.dialer = None;
                    slot.push_event(SignalEvent::DialDone);
                }
            } else {
                match from_gateway {
                    Some(f) => out = f,
                    None => {
                        slot.counters.underruns.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let mut codes = [0u8; BLOCK_BYTES];
            g711::encode_frame(slot.law, &out, &mut codes);
            let mut written = slot.channel.write_io(&codes);
            if matches!(&written, Err(e) if e.raw_os_error() == Some(abi::ELAST)) {
                // An event is pending: fetch it, then send the block anyway (a dropped block
                // would cut 20 ms out of a digit being dialled).
                slot.fetch_events();
                written = slot.channel.write_io(&codes);
            }
            match written {
                Ok(_) => {
                    slot.counters.frames_to_line.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(abi::ELAST) => slot.fetch_events(),
                Err(_) => {
                    slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counters.cycles.fetch_add(1, Ordering::Relaxed);
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

fn run<B: Backend + 'static>(mut media: SpanMedia<B>, stop: &AtomicBool) -> SpanReport {
    let started = Instant::now();
    let cpu_start = thread_cpu_time();
    while !stop.load(Ordering::Relaxed) {
        media.run_once(Instant::now());
        if media.slots.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    SpanReport {
        cycles: media.counters.cycles.load(Ordering::Relaxed),
        cpu_time: thread_cpu_time().saturating_sub(cpu_start),
        wall_time: started.elapsed(),
    }
}

impl<B: Backend> Slot<B> {
    fn push_event(&mut self, event: SignalEvent) {
        if self.events.try_push(event).is_err() {
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn hook(&mut self, hook: Hook) {
        match self.channel.op_io(Op::Hook(hook.to_raw())) {
            Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => {
                self.push_event(SignalEvent::Failed {
                    command: CommandKind::Hook,
                    errno: e.raw_os_error().unwrap_or(0),
                });
            }
            _ => {}
        }
    }

    fn simple(&mut self, op: Op<'_>, command: CommandKind) {
        if let Err(e) = self.channel.op_io(op) {
            self.push_event(SignalEvent::Failed {
                command,
                errno: e.raw_os_error().unwrap_or(0),
            });
        }
    }

    fn run_commands(&mut self, now: Instant) {
        if let Some((hook, due)) = self.timed_hook {
            if now >= due {
                self.timed_hook = None;
                self.hook(hook);
                self.push_event(SignalEvent::HookDone);
            }
        }
        // Bounded: a flood of commands cannot starve the audio of the other channels.
        for _ in 0..signal::COMMAND_RING {
            let Some(command) = self.commands.try_pop() else {
                break;
            };
            self.counters.commands.fetch_add(1, Ordering::Relaxed);
            match command {
                SignalCommand::Hook(hook) => {
                    self.timed_hook = None;
                    self.hook(hook);
                }
                SignalCommand::Wink { ms } => {
                    self.hook(Hook::OffHook);
                    self.timed_hook =
                        Some((Hook::OnHook, now + Duration::from_millis(u64::from(ms))));
                }
                SignalCommand::Flash { ms } => {
                    self.hook(Hook::OnHook);
                    self.timed_hook =
                        Some((Hook::OffHook, now + Duration::from_millis(u64::from(ms))));
                }
                SignalCommand::TxBits(bits) => {
                    self.simple(Op::SetTxBits(i32::from(bits & 0xf)), CommandKind::TxBits);
                }
                SignalCommand::Polarity(reversed) => {
                    self.simple(Op::SetPolarity(i32::from(reversed)), CommandKind::Polarity);
                }
                SignalCommand::Cadence { on_ms, off_ms } => {
                    let mut c = abi::RingCadence::default();
                    c.ringcadence[0] = i32::from(on_ms);
                    c.ringcadence[1] = i32::from(off_ms);
                    self.simple(Op::SetCadence(&c), CommandKind::Cadence);
                }
                SignalCommand::Dial(string) => {
                    self.dialer = Some(Dialer::new(string));
                }
                SignalCommand::DriverDial(string) => {
                    let mut d = abi::DialOperation {
                        op: abi::DAHDI_DIAL_OP_APPEND,
                        ..Default::default()
                    };
                    // DAHDI's dial string: `T` switches to DTMF, `M` to MF.
                    let mode = match string.kind {
                        DigitKind::Dtmf => b'T',
                        DigitKind::MfR1 => b'M',
                    };
                    let digits = string.digits().as_bytes();
                    if let Some(first) = d.dialstr.get_mut(0) {
                        *first = mode as _;
                    }
                    for (slot, b) in d.dialstr.iter_mut().skip(1).zip(digits) {
                        *slot = *b as _;
                    }
                    self.simple(Op::Dial(&d), CommandKind::Dial);
                }
                SignalCommand::CancelDial => {
                    if self.dialer.take().is_some() {
                        self.push_event(SignalEvent::DialDone);
                    }
                    let d = abi::DialOperation {
                        op: abi::DAHDI_DIAL_OP_CANCEL,
                        ..Default::default()
                    };
                    // Cancelling when the driver is not dialling is harmless; a driver without
                    // DAHDI_DIAL support has nothing to cancel.
                    let _ = self.channel.op_io(Op::Dial(&d));
                }
                SignalCommand::Timing(timing) => {
                    let mut p = abi::Params::default();
                    timing.write_into(&mut p);
                    self.simple(Op::SetParams(&p), CommandKind::Timing);
                }
                SignalCommand::Detect(kind) => {
                    if kind != self.detect {
                        self.dtmf.reset();
                        self.mf.reset();
                    }
                    self.detect = kind;
                }
                SignalCommand::DetectTones(country) => {
                    self.tones = country.map(codecs::progress::ProgressDetector::new);
                }
            }
        }
    }

    fn detect_tones(&mut self, frame: &Frame) {
        if let Some(kind) = self.tones.as_mut().and_then(|d| d.process(frame)) {
            self.push_event(SignalEvent::Tone(kind));
        }
    }

    fn detect_digits(&mut self, frame: &Frame) {
        let mut found: [Option<(u8, u64)>; 4] = [None; 4];
        let mut n = 0;
        let mut keep = |digit: char, samples: u64| {
            if let Some(slot) = found.get_mut(n) {
                *slot = Some((digit as u8, samples));
                n += 1;
            }
        };
        let kind = match self.detect {
            Some(DigitKind::Dtmf) => {
                self.dtmf.process(frame, |e| {
                    if let codecs::dtmf::DtmfEvent::KeyUp {
                        digit,
                        at_sample,
                        started_at,
                    } = e
                    {
                        keep(digit, at_sample.saturating_sub(started_at));
                    }
                });
                DigitKind::Dtmf
            }
            Some(DigitKind::MfR1) => {
                self.mf.process(frame, |e| {
                    if let codecs::mf::MfEvent::KeyUp {
                        digit,
                        at_sample,
                        started_at,
                    } = e
                    {
                        keep(digit, at_sample.saturating_sub(started_at));
                    }
                });
                DigitKind::MfR1
            }
            None => return,
        };
        for (digit, samples) in found.into_iter().flatten() {
            self.push_event(SignalEvent::Digit {
                kind,
                digit,
                duration_ms: u16::try_from(samples / 8).unwrap_or(u16::MAX),
            });
        }
    }

    fn fetch_events(&mut self) {
        // Drain the queue (bounded, in case a broken device reports events forever).
        for _ in 0..16 {
            let mut raw = 0;
            if self.channel.op_io(Op::GetEvent(&mut raw)).is_err() {
                break;
            }
            let Some(event) = Event::from_raw(raw) else {
                break;
            };
            self.counters.events.fetch_add(1, Ordering::Relaxed);
            self.counters
                .last_event
                .store(u64::from(event_code(event)), Ordering::Relaxed);
            self.push_event(SignalEvent::Line(event));
            if event == Event::BitsChanged {
                let mut bits = 0;
                if self.channel.op_io(Op::GetRxBits(&mut bits)).is_ok() {
                    self.push_event(SignalEvent::Bits((bits & 0xf) as u8));
                }
            }
        }
    }
}

fn event_code(event: Event) -> u32 {
    u32::try_from(event.to_raw()).unwrap_or(0)
}
