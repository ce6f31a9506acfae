//! One media worker: an OS thread with an epoll set of its legs' sockets, a phase timer and a
//! command queue. See the module docs of [`super`].

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codecs::FRAME_SAMPLES;
use codecs::dtmf::DtmfParams;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::sync::mpsc::UnboundedSender;

use super::shared::{LegShared, PlaneShared};
use super::source::{Filled, SourceState};
use super::{Command, FramePort, MediaEvent, MediaId, PlaneConfig, RtpParams, random_u64};
use crate::media::bridge::Frame;
use crate::media::dtmf::{ReceivedDigit, event_to_digit};
use crate::media::inband::{DEFAULT_HOLD_FRAMES, InbandDigit, InbandDtmfGate, InbandDtmfPlayer};
use crate::media::jitter::JitterConfig;
use crate::media::leg::{LegEvent, RtpLeg, RtpLegConfig};
use crate::media::rtcp::NtpClock;

const TOKEN_TIMER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;
/// Readiness reports taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Largest datagram read (anything longer is truncated and then fails to parse as RTP).
const DATAGRAM: usize = 2048;
/// A worker this far behind its phase clock stops catching up and restarts the clock.
const GIVE_UP_BEHIND: Duration = Duration::from_millis(200);
/// Phases run per loop while catching up, before the sockets are read again.
const CATCH_UP: usize = 2;

struct RtpSlot {
    sock: UdpSocket,
    rtcp: Option<UdpSocket>,
    leg: Option<Box<RtpLeg>>,
    /// Datagrams received before the leg was configured (dropped).
    early: u64,
    failed: bool,
}

/// Frames an external leg may have waiting in the worker.
const PORT_QUEUE: usize = 6;
/// Frames an external leg's queue is primed with before playing (and re-primed after running
/// dry): its producer runs on another clock (a span's, a task's), so one frame of slack keeps
/// a phase difference or a scheduling hiccup from turning into a lost frame every time.
const PORT_PRIME: usize = 2;
/// More than this waiting means the producer's clock runs fast: one frame is dropped.
const PORT_HIGH: usize = 4;

struct PortSlot {
    port: Box<dyn FramePort>,
    gate: InbandDtmfGate,
    player: InbandDtmfPlayer,
    queue: [Frame; PORT_QUEUE],
    q_head: usize,
    q_len: usize,
    primed: bool,
    underruns: u64,
    overruns: u64,
    drift_drops: u64,
}

impl PortSlot {
    /// Takes what the port has, then the frame due this tick (silence while priming).
    fn next_frame(&mut self) -> (Frame, u64) {
        let mut got = 0;
        while let Some(f) = self.port.pop_received() {
            got += 1;
            if self.q_len == PORT_QUEUE {
                self.q_head = (self.q_head + 1) % PORT_QUEUE;
                self.q_len -= 1;
                self.drift_drops += 1;
            }
            self.queue[(self.q_head + self.q_len) % PORT_QUEUE] = f;
            self.q_len += 1;
        }
        if !self.primed && self.q_len >= PORT_PRIME {
            self.primed = true;
        }
        if !self.primed || self.q_len == 0 {
            self.primed = false;
            self.underruns += 1;
            return ([0; FRAME_SAMPLES], got);
        }
        if self.q_len > PORT_HIGH {
            self.q_head = (self.q_head + 1) % PORT_QUEUE;
            self.q_len -= 1;
            self.drift_drops += 1;
        }
        let f = self.queue[self.q_head];
        self.q_head = (self.q_head + 1) % PORT_QUEUE;
        self.q_len -= 1;
        (f, got)
    }
}

enum Kind {
    Rtp(Box<RtpSlot>),
    Port(Box<PortSlot>),
}

struct Slot {
    id: MediaId,
    phase: u16,
    partner: Option<usize>,
    source: Option<SourceState>,
    /// Muted: what the leg receives is not passed on (its partner hears comfort noise).
    muted: bool,
    /// What the leg received this tick (after the jitter buffer or the in-band gate).
    heard: Frame,
    shared: Arc<LegShared>,
    kind: Kind,
    c: Counters,
    /// Ticks until the figures are published again (every [`PUBLISH_EVERY`] ticks).
    publish_in: u8,
}

/// Figures are published to [`LegShared`] every this many ticks (100 ms): fresh enough for
/// `gwctl` and tests, and three cache lines written per leg per 100 ms instead of per tick.
const PUBLISH_EVERY: u8 = 5;

#[derive(Default)]
struct Counters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    send_errors: u64,
    digits: u64,
}

pub(super) struct Worker {
    index: usize,
    phases: usize,
    phase_len: Duration,
    jitter: JitterConfig,
    rtcp_interval: Duration,
    ntp: NtpClock,
    measure: bool,
    epoll: Epoll,
    timer: TimerFd,
    timer_armed: bool,
    wake: Arc<EventFd>,
    rx: mpsc::Receiver<Command>,
    processed: Arc<AtomicU64>,
    events: UnboundedSender<MediaEvent>,
    shared: Arc<PlaneShared>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    ids: HashMap<MediaId, usize>,
    live: usize,
    phase_lists: Vec<Vec<usize>>,
    /// Second packets of ptime-10 legs, sent half a tick after their phase.
    deferred: Vec<Vec<(usize, MediaId)>>,
    next_phase: usize,
    next_deadline: Instant,
    buf: Box<[u8; DATAGRAM]>,
    out: Box<[u8; DATAGRAM]>,
    ev_buf: Vec<EpollEvent>,
    stop: bool,
}

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Worker {
    pub(super) fn new(
        index: usize,
        cfg: &PlaneConfig,
        rx: mpsc::Receiver<Command>,
        wake: Arc<EventFd>,
        processed: Arc<AtomicU64>,
        events: UnboundedSender<MediaEvent>,
        shared: Arc<PlaneShared>,
    ) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io_err)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io_err)?;
        epoll
            .add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TIMER))
            .map_err(io_err)?;
        epoll
            .add(&*wake, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE))
            .map_err(io_err)?;
        let phases = usize::from(cfg.phases.max(1));
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Self {
            index,
            phases,
            phase_len: cfg.tick / phases as u32,
            jitter: cfg.jitter,
            rtcp_interval: cfg.rtcp_interval,
            ntp: NtpClock::new(now, unix),
            measure: cfg.measure_latency,
            epoll,
            timer,
            timer_armed: false,
            wake,
            rx,
            processed,
            events,
            shared,
            slots: Vec::new(),
            free: Vec::new(),
            ids: HashMap::new(),
            live: 0,
            phase_lists: vec![Vec::new(); phases],
            deferred: vec![Vec::new(); phases],
            next_phase: 0,
            next_deadline: now,
            buf: Box::new([0; DATAGRAM]),
            out: Box::new([0; DATAGRAM]),
            ev_buf: vec![EpollEvent::empty(); EVENTS],
            stop: false,
        })
    }

    pub(super) fn run(mut self) {
        let mut behind = false;
        while !self.stop {
            let timeout = if behind {
                EpollTimeout::ZERO
            } else {
                EpollTimeout::NONE
            };
            let n = match self.epoll.wait(&mut self.ev_buf, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(worker = self.index, error = %e, "media worker: epoll_wait failed; stopping");
                    break;
                }
            };
            let woke = if self.measure {
                Some(Instant::now())
            } else {
                None
            };
            for k in 0..n {
                let Some(ev) = self.ev_buf.get(k) else { break };
                match ev.data() {
                    TOKEN_TIMER => {
                        let _ = self.timer.wait();
                    }
                    TOKEN_WAKE => {
                        let _ = self.wake.read();
                    }
                    token => self.on_readable(token, woke),
                }
            }
            self.drain_commands();
            behind = self.timer_armed && self.run_due_phases();
        }
        self.release_all();
    }

    // ---------------------------------------------------------------- receive path

    fn on_readable(&mut self, token: u64, woke: Option<Instant>) {
        let i = (token >> 1) as usize;
        let is_rtcp = token & 1 == 1;
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        let Kind::Rtp(r) = &mut slot.kind else {
            return;
        };
        let sock = if is_rtcp {
            r.rtcp.as_ref()
        } else {
            Some(&r.sock)
        };
        let Some(sock) = sock else { return };
        match sock.recv_from(&mut self.buf[..]) {
            Ok((n, from)) => {
                slot.c.rx_packets += 1;
                slot.c.rx_bytes += n as u64;
                let bytes = &self.buf[..n.min(DATAGRAM)];
                match r.leg.as_deref_mut() {
                    Some(leg) => {
                        let now = Instant::now();
                        if is_rtcp {
                            leg.handle_rtcp_datagram(now, from, bytes);
                        } else {
                            leg.handle_datagram(now, from, bytes);
                        }
                        drain_leg_events(
                            leg,
                            slot.id,
                            &slot.shared,
                            &mut slot.c.digits,
                            &self.events,
                        );
                    }
                    None => r.early += 1,
                }
                if let (Some(t), Some(h)) = (woke, self.shared.receive.get(self.index)) {
                    h.record(t.elapsed());
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionRefused => {}
                _ => {
                    if !r.failed {
                        r.failed = true;
                        let _ = self.epoll.delete(sock);
                        let _ = self.events.send(MediaEvent::Failed {
                            id: slot.id,
                            reason: format!("receiving on the leg's socket failed: {e}"),
                        });
                    }
                }
            },
        }
    }

    // ---------------------------------------------------------------- tick path

    fn arm_timer(&mut self) {
        if self.timer_armed {
            return;
        }
        let now = Instant::now();
        let period = TimeSpec::from_duration(self.phase_len);
        if self
            .timer
            .set(Expiration::Interval(period), TimerSetTimeFlags::empty())
            .is_ok()
        {
            self.timer_armed = true;
            self.next_deadline = now + self.phase_len;
        }
    }

    fn disarm_timer(&mut self) {
        if self.timer_armed {
            let _ = self.timer.unset();
            self.timer_armed = false;
        }
    }

    /// Runs the phases that are due (at most [`CATCH_UP`], so that a worker that fell behind
    /// still reads its sockets in between); true when more are due already.
    fn run_due_phases(&mut self) -> bool {
        let mut now = Instant::now();
        if now.saturating_duration_since(self.next_deadline) > GIVE_UP_BEHIND {
            self.shared.overloaded.fetch_add(1, Ordering::Relaxed);
            self.next_deadline = now;
        }
        let mut ran = 0;
        while self.next_deadline <= now {
            if ran == CATCH_UP {
                return true;
            }
            ran += 1;
            let deadline = self.next_deadline;
            if now.saturating_duration_since(deadline) > self.phase_len * self.phases as u32 {
                self.shared.overloaded.fetch_add(1, Ordering::Relaxed);
            }
            let p = self.next_phase;
            self.run_phase(p, deadline);
            self.next_phase = (p + 1) % self.phases;
            self.next_deadline += self.phase_len;
            now = Instant::now();
        }
        false
    }

    fn run_phase(&mut self, p: usize, deadline: Instant) {
        let list = std::mem::take(&mut self.phase_lists[p]);
        let now = Instant::now();
        for &i in &list {
            self.pull(i, now);
        }
        for &i in &list {
            self.feed(i, p, now, deadline);
        }
        self.phase_lists[p] = list;
        let mut deferred = std::mem::take(&mut self.deferred[p]);
        for &(i, id) in &deferred {
            self.send_deferred(i, id, deadline);
        }
        deferred.clear();
        self.deferred[p] = deferred;
    }

    fn pull(&mut self, i: usize, now: Instant) {
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        match &mut slot.kind {
            Kind::Rtp(r) => match r.leg.as_deref_mut() {
                Some(leg) => {
                    leg.pull(now, &mut slot.heard);
                }
                None => slot.heard.fill(0),
            },
            Kind::Port(ps) => {
                let (frame, got) = ps.next_frame();
                slot.c.rx_packets += got;
                slot.c.rx_bytes += got * (2 * FRAME_SAMPLES) as u64;
                if !ps.gate.push(&frame, &mut slot.heard) {
                    slot.heard.fill(0);
                }
                while let Some(d) = ps.gate.poll_event() {
                    if let InbandDigit::Ended {
                        digit,
                        at_sample,
                        started_at,
                    } = d
                    {
                        slot.c.digits += 1;
                        let samples = at_sample.saturating_sub(started_at);
                        let _ = self.events.send(MediaEvent::Digit {
                            id: slot.id,
                            digit,
                            duration: Duration::from_micros(samples * 125),
                        });
                    }
                }
            }
        }
    }

    fn feed(&mut self, i: usize, p: usize, now: Instant, deadline: Instant) {
        let mut input = [0i16; FRAME_SAMPLES];
        let mut comfort_noise = false;
        match self.slots.get(i) {
            Some(Some(s)) => {
                if s.source.is_none()
                    && let Some(Some(partner)) = s.partner.and_then(|j| self.slots.get(j))
                {
                    if partner.muted {
                        comfort_noise = true;
                    } else {
                        input = partner.heard;
                    }
                }
            }
            _ => return,
        }
        let Self {
            slots,
            deferred,
            events,
            shared,
            out,
            phases,
            index,
            measure,
            ..
        } = self;
        let Some(Some(slot)) = slots.get_mut(i) else {
            return;
        };
        let publish = slot.publish_in == 0;
        slot.publish_in = if publish {
            PUBLISH_EVERY - 1
        } else {
            slot.publish_in - 1
        };
        if let Some(src) = slot.source.as_mut() {
            // A muted leg's own audio reaches no one, not even an echo.
            let own = if slot.muted {
                [0i16; FRAME_SAMPLES]
            } else {
                slot.heard
            };
            match src.fill(&mut input, &own) {
                Filled::Audio => {}
                Filled::ComfortNoise => comfort_noise = true,
                Filled::Finished => {
                    slot.source = None;
                    shared.sources.fetch_sub(1, Ordering::AcqRel);
                    let _ = events.send(MediaEvent::PlayFinished { id: slot.id });
                }
            }
        }
        match &mut slot.kind {
            Kind::Rtp(r) => {
                let Some(leg) = r.leg.as_deref_mut() else {
                    return;
                };
                let sent = if comfort_noise {
                    leg.send_comfort_noise(&mut out[..])
                } else {
                    leg.send(&input, &mut out[..])
                };
                if let Some((n, to)) = sent {
                    send(&r.sock, &out[..n], to, &mut slot.c);
                    if *measure && let Some(h) = shared.send.get(*index) {
                        h.record(deadline.elapsed());
                    }
                }
                if leg.has_pending() {
                    let q = (p + *phases / 2) % *phases;
                    if let Some(d) = deferred.get_mut(q) {
                        d.push((i, slot.id));
                    }
                }
                while let Some((n, to)) = leg.poll_dtmf(now, &mut out[..]) {
                    send(&r.sock, &out[..n], to, &mut slot.c);
                }
                if let Some((n, to)) = leg.poll_rtcp(now, &mut out[..]) {
                    let sock = match (&r.rtcp, leg.config().rtcp_mux) {
                        (Some(s), false) => s,
                        _ => &r.sock,
                    };
                    send(sock, &out[..n], to, &mut slot.c);
                }
                leg.handle_timeout(now);
                drain_leg_events(leg, slot.id, &slot.shared, &mut slot.c.digits, events);
                if publish {
                    publish_rtp(&slot.shared, &slot.c, r.early, leg);
                }
            }
            Kind::Port(ps) => {
                ps.player.fill(&mut input);
                if ps.port.push_to_send(&input) {
                    slot.c.tx_packets += 1;
                    slot.c.tx_bytes += (2 * FRAME_SAMPLES) as u64;
                } else {
                    ps.overruns += 1;
                }
                if !publish {
                    return;
                }
                let sh = &slot.shared;
                sh.rx_packets.store(slot.c.rx_packets, Ordering::Relaxed);
                sh.rx_bytes.store(slot.c.rx_bytes, Ordering::Relaxed);
                sh.tx_packets.store(slot.c.tx_packets, Ordering::Relaxed);
                sh.tx_bytes.store(slot.c.tx_bytes, Ordering::Relaxed);
                sh.underruns.store(ps.underruns, Ordering::Relaxed);
                sh.overruns
                    .store(ps.overruns + ps.drift_drops, Ordering::Relaxed);
                sh.digits.store(slot.c.digits, Ordering::Relaxed);
            }
        }
    }

    fn send_deferred(&mut self, i: usize, id: MediaId, deadline: Instant) {
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        if slot.id != id {
            return;
        }
        let Kind::Rtp(r) = &mut slot.kind else { return };
        let Some(leg) = r.leg.as_deref_mut() else {
            return;
        };
        if let Some((n, to)) = leg.send_pending(&mut self.out[..]) {
            send(&r.sock, &self.out[..n], to, &mut slot.c);
            if self.measure
                && let Some(h) = self.shared.send.get(self.index)
            {
                h.record(deadline.elapsed());
            }
        }
    }

    // ---------------------------------------------------------------- commands

    fn drain_commands(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    self.apply(cmd);
                    self.processed.fetch_add(1, Ordering::AcqRel);
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.stop = true;
                    return;
                }
            }
        }
    }

    fn slot_of(&self, id: MediaId) -> Option<usize> {
        self.ids.get(&id).copied()
    }

    fn insert(&mut self, slot: Slot) -> usize {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.ids.insert(slot.id, i);
        let phase = usize::from(slot.phase) % self.phases;
        self.phase_lists[phase].push(i);
        if let Some(s) = self.slots.get_mut(i) {
            *s = Some(slot);
        }
        self.live += 1;
        // Deferred lists must never grow on the tick path.
        for d in &mut self.deferred {
            if d.capacity() < self.live {
                d.reserve(self.live - d.len());
            }
        }
        self.shared.legs.fetch_add(1, Ordering::AcqRel);
        self.arm_timer();
        i
    }

    fn new_slot(id: MediaId, phase: u16, shared: Arc<LegShared>, kind: Kind) -> Slot {
        shared.rtt_us.store(u64::MAX, Ordering::Relaxed);
        Slot {
            id,
            phase,
            partner: None,
            source: None,
            muted: false,
            heard: [0; FRAME_SAMPLES],
            shared,
            kind,
            c: Counters::default(),
            publish_in: 0,
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::OpenRtp {
                id,
                phase,
                rtp,
                rtcp,
                shared,
            } => {
                let i = self.free.last().copied().unwrap_or(self.slots.len());
                let token = (i as u64) << 1;
                if let Err(e) = self
                    .epoll
                    .add(&rtp, EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    let _ = self.events.send(MediaEvent::Failed {
                        id,
                        reason: format!("cannot watch the leg's RTP socket: {e}"),
                    });
                    return;
                }
                let mut sockets = 1;
                let rtcp = rtcp.and_then(|s| {
                    self.epoll
                        .add(&s, EpollEvent::new(EpollFlags::EPOLLIN, token | 1))
                        .ok()
                        .map(|()| {
                            sockets += 1;
                            s
                        })
                });
                self.shared.sockets.fetch_add(sockets, Ordering::AcqRel);
                let kind = Kind::Rtp(Box::new(RtpSlot {
                    sock: rtp,
                    rtcp,
                    leg: None,
                    early: 0,
                    failed: false,
                }));
                let got = self.insert(Self::new_slot(id, phase, shared, kind));
                debug_assert_eq!(got, i);
            }
            Command::Attach {
                id,
                phase,
                port,
                shared,
            } => {
                let kind = Kind::Port(Box::new(PortSlot {
                    port,
                    gate: InbandDtmfGate::new(DEFAULT_HOLD_FRAMES),
                    player: InbandDtmfPlayer::new(DtmfParams::default()),
                    queue: [[0; FRAME_SAMPLES]; PORT_QUEUE],
                    q_head: 0,
                    q_len: 0,
                    primed: false,
                    underruns: 0,
                    overruns: 0,
                    drift_drops: 0,
                }));
                self.insert(Self::new_slot(id, phase, shared, kind));
            }
            Command::Configure { id, params } => self.configure(id, params),
            Command::Mute { id, on } => {
                if let Some(i) = self.slot_of(id)
                    && let Some(Some(slot)) = self.slots.get_mut(i)
                {
                    slot.muted = on;
                }
            }
            Command::Connect { a, b } => self.connect(a, b),
            Command::Play { id, source } => {
                let Some(i) = self.slot_of(id) else { return };
                let Some(Some(slot)) = self.slots.get_mut(i) else {
                    return;
                };
                if slot.source.is_none() {
                    self.shared.sources.fetch_add(1, Ordering::AcqRel);
                }
                slot.source = Some(SourceState::new(source));
                if let Kind::Rtp(r) = &mut slot.kind
                    && let Some(leg) = r.leg.as_deref_mut()
                {
                    leg.source_changed();
                }
            }
            Command::SendDigit {
                id,
                digit,
                duration,
            } => {
                let Some(i) = self.slot_of(id) else { return };
                let Some(Some(slot)) = self.slots.get_mut(i) else {
                    return;
                };
                match &mut slot.kind {
                    Kind::Rtp(r) => match r.leg.as_deref_mut() {
                        Some(leg) => {
                            if let Err(e) = leg.send_digit_for(digit, duration) {
                                tracing::warn!(%id, %digit, error = %e, "digit not sent");
                            }
                        }
                        None => {
                            tracing::warn!(%id, %digit, "digit not sent: leg not configured yet")
                        }
                    },
                    Kind::Port(ps) => {
                        ps.player.play_for(digit, duration);
                    }
                }
            }
            Command::Release { id } => self.release(id),
            Command::Shutdown => self.stop = true,
        }
    }

    fn configure(&mut self, id: MediaId, p: RtpParams) {
        let Some(i) = self.slot_of(id) else { return };
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        let Kind::Rtp(r) = &mut slot.kind else { return };
        let now = Instant::now();
        let seed = random_u64();
        let cfg = RtpLegConfig {
            format: p.format,
            payload_type: p.payload_type,
            telephone_event: p.telephone_event,
            ssrc: seed as u32,
            initial_sequence: (seed >> 32) as u16,
            initial_timestamp: (seed >> 16) as u32 ^ (seed >> 48) as u32,
            remote: p.remote,
            inactivity_timeout: p.inactivity_timeout,
            jitter: self.jitter,
            ntp_clock: Some(self.ntp),
            rtcp_interval: self.rtcp_interval,
            ptime_ms: p.ptime_ms,
            direction: p.direction,
            comfort_noise: p.comfort_noise,
            rtcp_mux: p.rtcp_mux,
            remote_rtcp: p.remote_rtcp,
        };
        match r.leg.as_deref_mut() {
            Some(leg) => leg.reconfigure(now, cfg),
            None => r.leg = Some(Box::new(RtpLeg::new(cfg, now))),
        }
        slot.shared.remote.store(p.remote);
    }

    fn unpartner(&mut self, i: usize) {
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        let Some(j) = slot.partner.take() else { return };
        if let Some(Some(other)) = self.slots.get_mut(j)
            && other.partner == Some(i)
        {
            other.partner = None;
        }
        self.shared.bridges.fetch_sub(1, Ordering::AcqRel);
    }

    fn clear_source(&mut self, i: usize) {
        if let Some(Some(slot)) = self.slots.get_mut(i) {
            if slot.source.take().is_some() {
                self.shared.sources.fetch_sub(1, Ordering::AcqRel);
            }
            if let Kind::Rtp(r) = &mut slot.kind
                && let Some(leg) = r.leg.as_deref_mut()
            {
                leg.source_changed();
            }
        }
    }

    fn connect(&mut self, a: MediaId, b: MediaId) {
        let (Some(ia), Some(ib)) = (self.slot_of(a), self.slot_of(b)) else {
            return;
        };
        let already = matches!(self.slots.get(ia), Some(Some(s)) if s.partner == Some(ib));
        if !already {
            self.unpartner(ia);
            self.unpartner(ib);
            if let Some(Some(s)) = self.slots.get_mut(ia) {
                s.partner = Some(ib);
            }
            if let Some(Some(s)) = self.slots.get_mut(ib) {
                s.partner = Some(ia);
            }
            self.shared.bridges.fetch_add(1, Ordering::AcqRel);
        }
        self.clear_source(ia);
        self.clear_source(ib);
        // Both are processed in a's phase, so each hears the other's frame of the same tick.
        let pa = match self.slots.get(ia) {
            Some(Some(s)) => s.phase,
            _ => return,
        };
        let pb = match self.slots.get_mut(ib) {
            Some(Some(s)) => std::mem::replace(&mut s.phase, pa),
            _ => return,
        };
        if pa != pb {
            let from = usize::from(pb) % self.phases;
            self.phase_lists[from].retain(|&x| x != ib);
            self.phase_lists[usize::from(pa) % self.phases].push(ib);
        }
    }

    fn release(&mut self, id: MediaId) {
        let Some(i) = self.ids.remove(&id) else {
            return;
        };
        self.unpartner(i);
        let Some(slot) = self.slots.get_mut(i).and_then(|s| s.take()) else {
            return;
        };
        if slot.source.is_some() {
            self.shared.sources.fetch_sub(1, Ordering::AcqRel);
        }
        let phase = usize::from(slot.phase) % self.phases;
        self.phase_lists[phase].retain(|&x| x != i);
        for d in &mut self.deferred {
            d.retain(|&(x, _)| x != i);
        }
        if let Kind::Rtp(r) = &slot.kind {
            let mut n = 0;
            let _ = self.epoll.delete(&r.sock);
            n += 1;
            if let Some(s) = &r.rtcp {
                let _ = self.epoll.delete(s);
                n += 1;
            }
            self.shared.sockets.fetch_sub(n, Ordering::AcqRel);
        }
        drop(slot);
        self.free.push(i);
        self.live -= 1;
        self.shared.legs.fetch_sub(1, Ordering::AcqRel);
        if self.live == 0 {
            self.disarm_timer();
        }
    }

    fn release_all(&mut self) {
        let ids: Vec<MediaId> = self.ids.keys().copied().collect();
        for id in ids {
            self.release(id);
        }
        // Commands still queued (a racing open) must not leak what they carry.
        while let Ok(cmd) = self.rx.try_recv() {
            if let Command::OpenRtp { id, .. } | Command::Attach { id, .. } = &cmd {
                let id = *id;
                self.apply(cmd);
                self.release(id);
            }
            self.processed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr, c: &mut Counters) {
    match sock.send_to(bytes, to) {
        Ok(n) => {
            c.tx_packets += 1;
            c.tx_bytes += n as u64;
        }
        Err(_) => c.send_errors += 1,
    }
}

fn drain_leg_events(
    leg: &mut RtpLeg,
    id: MediaId,
    shared: &LegShared,
    digits: &mut u64,
    events: &UnboundedSender<MediaEvent>,
) {
    while let Some(e) = leg.poll_event() {
        let ev = match e {
            LegEvent::Digit(ReceivedDigit::Ended {
                event, duration, ..
            }) => {
                let Some(digit) = event_to_digit(event) else {
                    continue;
                };
                *digits += 1;
                let rate = u64::from(leg.config().format.clock_rate().max(1));
                MediaEvent::Digit {
                    id,
                    digit,
                    duration: Duration::from_micros(u64::from(duration) * 1_000_000 / rate),
                }
            }
            LegEvent::Digit(ReceivedDigit::Began { .. }) => continue,
            LegEvent::Latched(remote) => {
                shared.remote.store(Some(remote));
                MediaEvent::Latched { id, remote }
            }
            LegEvent::Inactive => MediaEvent::Inactive { id },
        };
        let _ = events.send(ev);
    }
}

fn publish_rtp(sh: &LegShared, c: &Counters, early: u64, leg: &RtpLeg) {
    const R: Ordering = Ordering::Relaxed;
    sh.rx_packets.store(c.rx_packets, R);
    sh.rx_bytes.store(c.rx_bytes, R);
    sh.tx_packets.store(c.tx_packets, R);
    sh.tx_bytes.store(c.tx_bytes, R);
    sh.send_errors.store(c.send_errors, R);
    sh.digits.store(c.digits, R);
    let c = leg.counters();
    sh.malformed
        .store(c.malformed + c.unknown_payload_type + early, R);
    sh.foreign.store(c.foreign_source, R);
    if let Some(st) = leg.receive_stats() {
        sh.lost.store(i64::from(st.cumulative_lost()), R);
        sh.jitter_us.store((st.jitter_ms() * 1000.0) as u64, R);
    }
    if let Some(rtt) = leg.round_trip() {
        sh.rtt_us.store(rtt.as_micros() as u64, R);
    }
    let jb = leg.jitter_buffer();
    sh.jb_delay_us
        .store(jb.target_delay().as_micros() as u64, R);
    sh.concealed.store(jb.stats().concealed, R);
    sh.late.store(jb.stats().late, R);
}
