//! The running media plane: worker OS threads that own every RTP socket, every leg's media state
//! ([`RtpLeg`]: jitter buffer, PLC, RFC 4733, RTCP, latching, inactivity), the bridges between
//! legs and the audio sources (silence, comfort noise, tones, milliwatt, echo, WAV prompts).
//!
//! The engine (a tokio shell) drives it through [`MediaPlane`]: every call is a short, non-blocking
//! operation on the caller's thread (binding a socket, checking parameters against a registry)
//! followed by a command queued to the leg's worker, which applies it between two ticks. Events
//! come back on a tokio channel ([`MediaPlane::take_events`]); figures are published by the workers
//! in atomics ([`MediaPlane::stats`]).
//!
//! # Workers
//! One per core by default. Each has an epoll set (level-triggered) holding its legs' sockets, a
//! `timerfd` ticking every `tick / phases` (1 ms by default) and an `eventfd` that wakes it for
//! commands. A call's legs live on one worker (chosen by [`CallKey`], least loaded first) and
//! in one *phase*: the 20 ms tick is cut into `phases` slots and each call is processed in its
//! own slot, so the work — and the packets a worker sends — are spread evenly over the 20 ms
//! instead of leaving in one burst. Per packet received: one `recvfrom` (read once per readiness
//! report; level triggering reports a socket again if more is queued). Per phase, for every leg
//! of that phase: the frame due is pulled from its jitter buffer (or from an external leg's
//! port), then every leg is fed what it hears (its partner's frame, or a source) and sends it —
//! one `sendto` per packet. Nothing on this path allocates, locks or awaits
//! (`tests/media_noalloc.rs` counts a running worker's allocations). See
//! `docs/decisions/0004-media-plane.md` for why this model and what was measured.
//!
//! # One outbound stream per leg
//! A leg's outbound RTP context (SSRC, sequence, timestamp) is created when it is first
//! configured and kept for its life: re-configuration (re-INVITE), re-bridging, sources, hold —
//! none of them starts a new stream; the timestamp advances with real time even while nothing is
//! sent (hold, `recvonly`, telephone-events).

mod shared;
mod source;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use thiserror::Error;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::bridge::{BridgePort, Frame};
use super::codec::AudioFormat;
use super::jitter::{JitterConfig, MAX_PAYLOAD};
use super::leg::{MAX_PTIME_MS, MIN_PTIME_MS};

pub use super::leg::Direction;
pub use shared::{LatencyHistogram, LatencyReport};
use shared::{LegShared, PlaneShared};

/// The engine's opaque id of a call: legs opened with the same key live on the same worker (so
/// they can be connected) and are named by it in logs.
pub type CallKey = u64;

/// The plane's id of one leg's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId(pub u64);

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "media-{}", self.0)
    }
}

/// Settings of the plane.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// Worker threads; 0 = one per available core.
    pub workers: usize,
    /// Where RTP sockets are bound: RTP on an even port, RTCP on the next (odd) one.
    pub rtp_ports: RangeInclusive<u16>,
    /// The bridge's frame period. Only 20 ms is supported (the frame size of the bridge, the
    /// TDM driver and the codecs crate); another value is refused by [`MediaPlane::start`].
    pub tick: Duration,
    /// Slots each tick is cut into (calls are spread over them); 20 = one per millisecond.
    pub phases: u16,
    /// Jitter buffer settings of every RTP leg (clock rate and frame size follow the codec).
    pub jitter: JitterConfig,
    /// Interval between a leg's RTCP reports.
    pub rtcp_interval: Duration,
    /// Kernel receive/send buffer of each RTP socket, in bytes (`None`: the system default).
    pub socket_buffer: Option<usize>,
    /// Record processing-latency histograms ([`MediaPlane::latency`]); costs two clock reads
    /// per packet.
    pub measure_latency: bool,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            rtp_ports: 20000..=29999,
            tick: Duration::from_millis(20),
            phases: 20,
            jitter: JitterConfig::default(),
            rtcp_interval: Duration::from_secs(5),
            socket_buffer: None,
            measure_latency: false,
        }
    }
}

/// The negotiated parameters of an RTP leg (from the SDP offer/answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpParams {
    /// Audio format.
    pub format: AudioFormat,
    /// Its payload type.
    pub payload_type: u8,
    /// Telephone-event payload type (RFC 4733), if negotiated; without it digits are sent as
    /// in-band tones.
    pub telephone_event: Option<u8>,
    /// Comfort-noise payload type (RFC 3389), if negotiated: a held party then gets CN packets
    /// instead of silence.
    pub comfort_noise: Option<u8>,
    /// Packetisation time we send with (10..=60 ms; L16 at most 30 ms).
    pub ptime_ms: u16,
    /// The peer's RTP address from its SDP (replaced by where its media comes from: symmetric
    /// RTP). `None`: wait for the peer's first packet.
    pub remote: Option<SocketAddr>,
    /// The peer's RTCP address (`a=rtcp`), when not multiplexed; default: RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Direction from OUR side (the answer's view of what we do).
    pub direction: Direction,
    /// Nothing received (RTP or RTCP) for this long raises [`MediaEvent::Inactive`];
    /// `Duration::ZERO` disables it (e.g. for a long hold).
    pub inactivity_timeout: Duration,
}

impl RtpParams {
    /// `format` on its static payload type (96 for L16), telephone-event 101, 20 ms, send and
    /// receive, RTCP on port + 1, a 30 s inactivity timeout.
    pub fn new(format: AudioFormat, remote: Option<SocketAddr>) -> Self {
        Self {
            format,
            payload_type: format.static_payload_type().unwrap_or(96),
            telephone_event: Some(101),
            comfort_noise: None,
            ptime_ms: 20,
            remote,
            remote_rtcp: None,
            rtcp_mux: false,
            direction: Direction::SendRecv,
            inactivity_timeout: Duration::from_secs(30),
        }
    }

    fn validate(&self, local: SocketAddr) -> Result<(), MediaError> {
        let bad = |why: String| Err(MediaError::InvalidParams(why));
        if self.payload_type > 127 {
            return bad(format!("payload type {} is above 127", self.payload_type));
        }
        for (what, pt) in [
            ("telephone-event", self.telephone_event),
            ("comfort noise", self.comfort_noise),
        ] {
            match pt {
                Some(pt) if pt > 127 => {
                    return bad(format!("{what} payload type {pt} is above 127"));
                }
                Some(pt) if pt == self.payload_type => {
                    return bad(format!(
                        "{what} payload type {pt} is the audio payload type as well"
                    ));
                }
                _ => {}
            }
        }
        if !(MIN_PTIME_MS..=MAX_PTIME_MS).contains(&self.ptime_ms) {
            return bad(format!(
                "ptime {} ms is outside {MIN_PTIME_MS}..={MAX_PTIME_MS} ms",
                self.ptime_ms
            ));
        }
        let packet_bytes = self.format.frame_bytes() * usize::from(self.ptime_ms) / 20;
        if packet_bytes > MAX_PAYLOAD {
            return bad(format!(
                "{} at {} ms makes {packet_bytes}-byte packets; at most {MAX_PAYLOAD} are \
                 supported (use a shorter ptime)",
                self.format.encoding_name(),
                self.ptime_ms
            ));
        }
        for addr in [self.remote, self.remote_rtcp].into_iter().flatten() {
            if addr.is_ipv4() != local.is_ipv4() {
                return bad(format!(
                    "remote {addr} is not of the address family of the leg's socket {local}"
                ));
            }
            if addr.port() == 0 {
                return bad(format!("remote {addr} has port 0"));
            }
        }
        Ok(())
    }
}

/// A call-progress tone.
pub use codecs::tones::{Country, ToneKind};

/// What a leg hears while it is not connected, or instead of its partner.
#[derive(Debug, Clone)]
pub enum Source {
    /// Digital silence (RTP legs still send packets: the stream stays alive).
    Silence,
    /// Comfort noise: RFC 3389 packets when the leg negotiated CN, else silence.
    ComfortNoise,
    /// A call-progress tone, looping with its cadence.
    Tone(Country, ToneKind),
    /// The digital milliwatt: 1004 Hz at 0 dBm0 (the level reference of a line test).
    Milliwatt,
    /// The hold (and queue comfort) tone: 440 Hz at −18 dBm0, 0.5 s on, 1.5 s off.
    HoldTone,
    /// The leg's own received audio, back to it.
    Echo,
    /// 8 kHz linear samples (a prompt, music), once or looped. Once played,
    /// [`MediaEvent::PlayFinished`] is sent and silence follows.
    Wav(Arc<[i16]>, bool),
}

/// What the plane tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// A DTMF digit received on `id` (RFC 4733, or in-band on an external leg), once per digit,
    /// when it ends.
    Digit {
        /// The leg.
        id: MediaId,
        /// `0-9`, `*`, `#`, `A-D`.
        digit: char,
        /// How long it was held.
        duration: Duration,
    },
    /// Nothing received for the inactivity timeout: end the call (SIP BYE).
    Inactive {
        /// The leg.
        id: MediaId,
    },
    /// The leg now sends to `remote` (the peer's first packet, or a re-latch).
    Latched {
        /// The leg.
        id: MediaId,
        /// Where its media comes from and now goes.
        remote: SocketAddr,
    },
    /// The leg's media failed (a socket error); the call should end.
    Failed {
        /// The leg.
        id: MediaId,
        /// What happened.
        reason: String,
    },
    /// A [`Source::Wav`] played once has finished.
    PlayFinished {
        /// The leg.
        id: MediaId,
    },
}

/// The bridge side of an external leg, whose IO lives elsewhere (a TDM channel's span thread, a
/// WebRTC leg's task): frames it received from its peer come out, frames to send go in.
/// Implemented for [`BridgePort`] and [`tdm_driver::span::ChannelPorts`]. Both calls must be
/// wait-free: the worker calls them once per 20 ms tick.
pub trait FramePort: Send {
    /// The next 20 ms frame the leg received, if one is ready.
    fn pop_received(&mut self) -> Option<Frame>;
    /// Queues a 20 ms frame for the leg to send; false when its queue is full (dropped).
    fn push_to_send(&mut self, frame: &Frame) -> bool;
}

impl FramePort for BridgePort {
    fn pop_received(&mut self) -> Option<Frame> {
        self.pop_inbound()
    }

    fn push_to_send(&mut self, frame: &Frame) -> bool {
        self.push_outbound(frame)
    }
}

impl FramePort for tdm_driver::span::ChannelPorts {
    fn pop_received(&mut self) -> Option<Frame> {
        use ringbuf::traits::Consumer;
        self.from_line.try_pop()
    }

    fn push_to_send(&mut self, frame: &Frame) -> bool {
        use ringbuf::traits::Producer;
        self.to_line.try_push(*frame).is_ok()
    }
}

/// Why a plane operation was refused. Each says what to fix.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MediaError {
    /// No such leg (never opened, or released).
    #[error("{0} is not a live media leg (released, or never opened)")]
    UnknownId(MediaId),
    /// Every port pair of the configured range is taken.
    #[error(
        "no free RTP port pair in {first}..={last} on {ip}: widen [media] rtp_ports or end calls"
    )]
    NoPorts {
        /// The address bound to.
        ip: IpAddr,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// Binding a socket failed for another reason than the port being taken.
    #[error("cannot bind an RTP socket on {addr}: {source}")]
    Bind {
        /// What was tried.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Negotiated parameters the plane cannot use.
    #[error("RTP parameters refused: {0}")]
    InvalidParams(String),
    /// The operation needs an RTP leg, and this one is external.
    #[error("{0} is an external leg (TDM/WebRTC port); it has no RTP parameters")]
    NotRtp(MediaId),
    /// The legs live on different workers (opened with different call keys).
    #[error(
        "{a} and {b} live on different media workers; open the legs of one call with the same \
         CallKey"
    )]
    CrossWorker {
        /// First leg.
        a: MediaId,
        /// Second leg.
        b: MediaId,
    },
    /// A leg cannot join a call whose legs live on another worker (legs do not migrate
    /// between workers yet).
    #[error(
        "{id} cannot join call {call}: that call's media lives on another worker (legs do not \
         migrate between workers yet; with [media] workers = 1 every call shares one)"
    )]
    MoveAcrossWorkers {
        /// The leg.
        id: MediaId,
        /// The call it was to join.
        call: CallKey,
    },
    /// A leg cannot be connected to itself (use [`Source::Echo`]).
    #[error("{0} cannot be connected to itself; play Source::Echo for a loop")]
    SelfConnect(MediaId),
    /// Not a DTMF digit.
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit(char),
    /// The plane was shut down.
    #[error("the media plane is shut down")]
    ShutDown,
    /// A worker thread could not be started, or an OS resource (epoll, timer) not created.
    #[error("media plane start-up failed: {0}")]
    Start(io::Error),
}

/// Figures of one leg (published by its worker every 100 ms).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaStats {
    /// RTP leg (false: external port).
    pub rtp: bool,
    /// The local RTP address (RTP legs).
    pub local: Option<SocketAddr>,
    /// The negotiated format (RTP legs, once configured).
    pub format: Option<AudioFormat>,
    /// Where media goes now (latched or from SDP).
    pub remote: Option<SocketAddr>,
    /// Datagrams received on the leg's sockets (RTP legs) or frames from the port (external).
    pub packets_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Packets sent (RTP legs: audio, events, CN, RTCP) or frames to the port (external).
    pub packets_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Packets lost according to the sequence numbers (RFC 3550 cumulative lost).
    pub packets_lost: i64,
    /// Interarrival jitter (RFC 3550).
    pub jitter: Duration,
    /// Round-trip time from RTCP, if measured.
    pub round_trip: Option<Duration>,
    /// The jitter buffer's current target delay.
    pub jitter_buffer_delay: Duration,
    /// Frames concealed by PLC (packet missing at play time).
    pub frames_concealed: u64,
    /// Packets that arrived after their play time.
    pub packets_late: u64,
    /// Datagrams that were not valid RTP/RTCP, or of a payload type not negotiated.
    pub malformed: u64,
    /// Media from an address other than the latched one (dropped).
    pub foreign: u64,
    /// Packets that could not be sent (socket buffer full or an error).
    pub send_errors: u64,
    /// External legs: ticks with no frame from the port (silence used).
    pub underruns: u64,
    /// External legs: frames the port's queue refused, plus frames dropped because its
    /// producer ran ahead of the plane's clock.
    pub overruns: u64,
    /// Digits reported.
    pub digits: u64,
}

/// Resources the plane holds; after every call has ended all are 0 (tests assert it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaneCounts {
    /// Live legs (RTP and external).
    pub legs: usize,
    /// Open sockets.
    pub sockets: usize,
    /// Connected pairs of legs.
    pub bridges: usize,
    /// Legs playing a source.
    pub sources: usize,
}

impl PlaneCounts {
    /// True when nothing is held.
    pub fn is_idle(&self) -> bool {
        *self == Self::default()
    }
}

enum Command {
    OpenRtp {
        id: MediaId,
        phase: u16,
        rtp: UdpSocket,
        rtcp: Option<UdpSocket>,
        shared: Arc<LegShared>,
    },
    Configure {
        id: MediaId,
        params: RtpParams,
    },
    Attach {
        id: MediaId,
        phase: u16,
        port: Box<dyn FramePort>,
        shared: Arc<LegShared>,
    },
    Connect {
        a: MediaId,
        b: MediaId,
    },
    Play {
        id: MediaId,
        source: Source,
    },
    Mute {
        id: MediaId,
        on: bool,
    },
    SendDigit {
        id: MediaId,
        digit: char,
        duration: Duration,
    },
    Release {
        id: MediaId,
    },
    Shutdown,
}

struct WorkerHandle {
    tx: mpsc::Sender<Command>,
    wake: Arc<EventFd>,
    submitted: AtomicU64,
    processed: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Entry {
    worker: usize,
    call: CallKey,
    phase: u16,
    local: Option<SocketAddr>,
    format: Option<AudioFormat>,
    shared: Arc<LegShared>,
}

struct CallPlace {
    worker: usize,
    phase: u16,
    legs: usize,
}

struct Registry {
    legs: HashMap<MediaId, Entry>,
    calls: HashMap<CallKey, CallPlace>,
    /// Legs per worker and phase (for placing new calls).
    load: Vec<Vec<u32>>,
    next_port: u16,
    next_id: u64,
}

struct Inner {
    cfg: PlaneConfig,
    workers: Vec<WorkerHandle>,
    registry: Mutex<Registry>,
    events: Mutex<Option<UnboundedReceiver<MediaEvent>>>,
    shared: Arc<PlaneShared>,
    down: AtomicBool,
}

/// The handle of the running plane. Cheap to clone; `Send + Sync`. See the module docs.
#[derive(Clone)]
pub struct MediaPlane {
    inner: Arc<Inner>,
}

impl fmt::Debug for MediaPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPlane")
            .field("workers", &self.inner.workers.len())
            .field("counts", &self.inner.shared.counts())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the registry lock leaves consistent data (every update is one
    // insert/remove); keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

impl MediaPlane {
    /// Starts the workers.
    pub fn start(cfg: PlaneConfig) -> io::Result<MediaPlane> {
        if cfg.tick != Duration::from_millis(20) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "media tick of {:?} is not supported: the bridge moves 20 ms frames",
                    cfg.tick
                ),
            ));
        }
        if cfg.phases == 0 || cfg.phases > 200 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("media phases {} must be within 1..=200", cfg.phases),
            ));
        }
        if cfg.rtp_ports.is_empty() || *cfg.rtp_ports.end() < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("RTP port range {:?} is empty", cfg.rtp_ports),
            ));
        }
        let n = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.workers
        };
        let (ev_tx, ev_rx): (UnboundedSender<MediaEvent>, _) = unbounded_channel();
        let shared = Arc::new(PlaneShared::new(n, cfg.measure_latency));
        let mut workers = Vec::with_capacity(n);
        for w in 0..n {
            let (tx, rx) = mpsc::channel();
            let wake = Arc::new(EventFd::from_value_and_flags(
                0,
                EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
            )?);
            let processed = Arc::new(AtomicU64::new(0));
            let worker = worker::Worker::new(
                w,
                &cfg,
                rx,
                Arc::clone(&wake),
                Arc::clone(&processed),
                ev_tx.clone(),
                Arc::clone(&shared),
            )?;
            let thread = std::thread::Builder::new()
                .name(format!("media-{w}"))
                .spawn(move || worker.run())?;
            workers.push(WorkerHandle {
                tx,
                wake,
                submitted: AtomicU64::new(0),
                processed,
                thread: Mutex::new(Some(thread)),
            });
        }
        let first = *cfg.rtp_ports.start();
        let span = u32::from(*cfg.rtp_ports.end()) - u32::from(first) + 1;
        let start_port = first.saturating_add((random_u64() % u64::from(span)) as u16) & !1;
        let registry = Registry {
            legs: HashMap::new(),
            calls: HashMap::new(),
            load: vec![vec![0; usize::from(cfg.phases)]; n],
            next_port: start_port.max(first),
            next_id: 1,
        };
        Ok(MediaPlane {
            inner: Arc::new(Inner {
                cfg,
                workers,
                registry: Mutex::new(registry),
                events: Mutex::new(Some(ev_rx)),
                shared,
                down: AtomicBool::new(false),
            }),
        })
    }

    /// Stops the workers and closes every socket (idempotent). Operations afterwards fail with
    /// [`MediaError::ShutDown`].
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    fn submit(&self, worker: usize, cmd: Command) -> Result<(), MediaError> {
        if self.inner.down.load(Ordering::Acquire) {
            return Err(MediaError::ShutDown);
        }
        let w = self.inner.workers.get(worker).ok_or(MediaError::ShutDown)?;
        w.submitted.fetch_add(1, Ordering::AcqRel);
        if w.tx.send(cmd).is_err() {
            return Err(MediaError::ShutDown);
        }
        let _ = w.wake.write(1);
        Ok(())
    }

    /// Where a new leg of `call` goes: the call's worker and phase if it has legs, else the
    /// least loaded worker and its least loaded phase.
    fn place(reg: &mut Registry, call: CallKey) -> (usize, u16) {
        if let Some(p) = reg.calls.get_mut(&call) {
            p.legs += 1;
            return (p.worker, p.phase);
        }
        let worker = (0..reg.load.len())
            .min_by_key(|&w| reg.load[w].iter().sum::<u32>())
            .unwrap_or(0);
        let phase = reg.load[worker]
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map_or(0, |(p, _)| p as u16);
        reg.calls.insert(
            call,
            CallPlace {
                worker,
                phase,
                legs: 1,
            },
        );
        (worker, phase)
    }

    fn new_id(reg: &mut Registry) -> MediaId {
        let id = MediaId(reg.next_id);
        reg.next_id += 1;
        id
    }

    fn bind_pair(
        &self,
        reg: &mut Registry,
        ip: IpAddr,
    ) -> Result<(UdpSocket, UdpSocket), MediaError> {
        let first = *self.inner.cfg.rtp_ports.start();
        let last = *self.inner.cfg.rtp_ports.end();
        let lo = first + (first & 1);
        if lo >= last {
            return Err(MediaError::NoPorts { ip, first, last });
        }
        let pairs = (u32::from(last) - u32::from(lo)).div_ceil(2);
        let mut port = reg.next_port.clamp(lo, last.saturating_sub(1)) & !1;
        if port < lo {
            port = lo;
        }
        for _ in 0..pairs {
            let p = port;
            port = if u32::from(p) + 3 > u32::from(last) {
                lo
            } else {
                p + 2
            };
            let rtp_addr = SocketAddr::new(ip, p);
            let rtp = match UdpSocket::bind(rtp_addr) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    return Err(MediaError::Bind {
                        addr: rtp_addr,
                        source: e,
                    });
                }
            };
            let rtcp_addr = SocketAddr::new(ip, p + 1);
            let rtcp = match UdpSocket::bind(rtcp_addr) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    return Err(MediaError::Bind {
                        addr: rtcp_addr,
                        source: e,
                    });
                }
            };
            for s in [&rtp, &rtcp] {
                s.set_nonblocking(true).map_err(|e| MediaError::Bind {
                    addr: rtp_addr,
                    source: e,
                })?;
            }
            if let Some(size) = self.inner.cfg.socket_buffer {
                shared::set_buffers(&rtp, size);
            }
            reg.next_port = port;
            return Ok((rtp, rtcp));
        }
        Err(MediaError::NoPorts { ip, first, last })
    }

    /// Binds an RTP socket (even port; RTCP on port + 1) on `ip` within the configured range
    /// and hands it to `call`'s worker. Nothing is sent until [`MediaPlane::configure_rtp`];
    /// packets arriving before that are counted and dropped.
    pub fn open_rtp(&self, call: CallKey, ip: IpAddr) -> Result<(MediaId, SocketAddr), MediaError> {
        let mut reg = lock(&self.inner.registry);
        if self.inner.down.load(Ordering::Acquire) {
            return Err(MediaError::ShutDown);
        }
        let (rtp, rtcp) = self.bind_pair(&mut reg, ip)?;
        let local = rtp.local_addr().map_err(|e| MediaError::Bind {
            addr: SocketAddr::new(ip, 0),
            source: e,
        })?;
        let (worker, phase) = Self::place(&mut reg, call);
        let id = Self::new_id(&mut reg);
        let shared = Arc::new(LegShared::default());
        if let Err(e) = self.submit(
            worker,
            Command::OpenRtp {
                id,
                phase,
                rtp,
                rtcp: Some(rtcp),
                shared: Arc::clone(&shared),
            },
        ) {
            Self::unplace(&mut reg, call);
            return Err(e);
        }
        reg.load[worker][usize::from(phase)] += 1;
        reg.legs.insert(
            id,
            Entry {
                worker,
                call,
                phase,
                local: Some(local),
                format: None,
                shared,
            },
        );
        Ok((id, local))
    }

    fn unplace(reg: &mut Registry, call: CallKey) {
        if let Some(p) = reg.calls.get_mut(&call) {
            p.legs = p.legs.saturating_sub(1);
            if p.legs == 0 {
                reg.calls.remove(&call);
            }
        }
    }

    /// Applies negotiated parameters (again on a re-INVITE: codec, address, hold). The leg's
    /// outbound RTP context (SSRC, sequence, timestamp) is kept for its life.
    pub fn configure_rtp(&self, id: MediaId, params: RtpParams) -> Result<(), MediaError> {
        let mut reg = lock(&self.inner.registry);
        let e = reg.legs.get_mut(&id).ok_or(MediaError::UnknownId(id))?;
        let local = e.local.ok_or(MediaError::NotRtp(id))?;
        params.validate(local)?;
        e.format = Some(params.format);
        let worker = e.worker;
        self.submit(worker, Command::Configure { id, params })
    }

    /// Adds a leg whose IO lives elsewhere (a TDM channel, a WebRTC leg): the plane holds its
    /// bridge side. Digits in its audio are detected in-band (and muted, so the tone is not
    /// also passed on); digits sent to it are played as tones.
    pub fn attach_port(
        &self,
        call: CallKey,
        port: Box<dyn FramePort>,
    ) -> Result<MediaId, MediaError> {
        let mut reg = lock(&self.inner.registry);
        if self.inner.down.load(Ordering::Acquire) {
            return Err(MediaError::ShutDown);
        }
        let (worker, phase) = Self::place(&mut reg, call);
        let id = Self::new_id(&mut reg);
        let shared = Arc::new(LegShared::default());
        if let Err(e) = self.submit(
            worker,
            Command::Attach {
                id,
                phase,
                port,
                shared: Arc::clone(&shared),
            },
        ) {
            Self::unplace(&mut reg, call);
            return Err(e);
        }
        reg.load[worker][usize::from(phase)] += 1;
        reg.legs.insert(
            id,
            Entry {
                worker,
                call,
                phase,
                local: None,
                format: None,
                shared,
            },
        );
        Ok(id)
    }

    /// Bridges `a` and `b` both ways, replacing whatever each was connected to (the former
    /// partners fall back to silence) or playing.
    pub fn connect(&self, a: MediaId, b: MediaId) -> Result<(), MediaError> {
        if a == b {
            return Err(MediaError::SelfConnect(a));
        }
        let mut reg = lock(&self.inner.registry);
        let (wa, pa) = {
            let e = reg.legs.get(&a).ok_or(MediaError::UnknownId(a))?;
            (e.worker, e.phase)
        };
        let (wb, pb) = {
            let e = reg.legs.get(&b).ok_or(MediaError::UnknownId(b))?;
            (e.worker, e.phase)
        };
        if wa != wb {
            return Err(MediaError::CrossWorker { a, b });
        }
        self.submit(wa, Command::Connect { a, b })?;
        if pa != pb {
            // The worker moves b into a's phase (both are processed in the same slot).
            reg.load[wb][usize::from(pb)] = reg.load[wb][usize::from(pb)].saturating_sub(1);
            reg.load[wa][usize::from(pa)] += 1;
            if let Some(e) = reg.legs.get_mut(&b) {
                e.phase = pa;
            }
        }
        Ok(())
    }

    /// What `id` hears from now on instead of its partner (or while it has none).
    /// [`MediaPlane::connect`] ends it.
    pub fn play(&self, id: MediaId, source: Source) -> Result<(), MediaError> {
        let reg = lock(&self.inner.registry);
        let w = reg.legs.get(&id).ok_or(MediaError::UnknownId(id))?.worker;
        self.submit(w, Command::Play { id, source })
    }

    /// Mutes (or unmutes) `id`: what it receives is no longer passed to its partner (who hears
    /// comfort noise, or silence on an external port) while the leg itself keeps receiving
    /// (jitter buffer, figures, digits, inactivity timer) and hearing its partner. Survives
    /// [`MediaPlane::connect`]: a muted leg stays muted when re-bridged.
    pub fn mute(&self, id: MediaId, on: bool) -> Result<(), MediaError> {
        let reg = lock(&self.inner.registry);
        let w = reg.legs.get(&id).ok_or(MediaError::UnknownId(id))?.worker;
        self.submit(w, Command::Mute { id, on })
    }

    /// Sends a digit to the leg's peer as it negotiated: RFC 4733 events, or in-band tones
    /// (legs without telephone-event, external legs). `duration` is clamped to 40 ms..8 s.
    pub fn send_digit(
        &self,
        id: MediaId,
        digit: char,
        duration: Duration,
    ) -> Result<(), MediaError> {
        if codecs::dtmf::digit_frequencies(digit).is_none() {
            return Err(MediaError::NotADigit(digit));
        }
        let reg = lock(&self.inner.registry);
        let w = reg.legs.get(&id).ok_or(MediaError::UnknownId(id))?.worker;
        self.submit(
            w,
            Command::SendDigit {
                id,
                digit,
                duration,
            },
        )
    }

    /// Releases the leg: its sockets are closed, rings and port dropped, and its partner falls
    /// back to silence. Unknown ids are ignored. Takes effect within a millisecond; after
    /// [`MediaPlane::counts`] returns, it is done.
    pub fn release(&self, id: MediaId) {
        let mut reg = lock(&self.inner.registry);
        let Some(e) = reg.legs.remove(&id) else {
            return;
        };
        reg.load[e.worker][usize::from(e.phase)] =
            reg.load[e.worker][usize::from(e.phase)].saturating_sub(1);
        Self::unplace(&mut reg, e.call);
        let _ = self.submit(e.worker, Command::Release { id });
    }

    /// Makes `id` a leg of call `call` (a leg that moves between calls: the target of an
    /// attended transfer joining the caller's call), so that it can be connected to that
    /// call's legs. Its worker, sockets and outbound RTP stream stay as they are.
    ///
    /// # Errors
    /// [`MediaError::MoveAcrossWorkers`] when `call`'s legs live on another worker.
    pub fn move_leg(&self, id: MediaId, call: CallKey) -> Result<(), MediaError> {
        let mut reg = lock(&self.inner.registry);
        let (worker, phase, old) = {
            let e = reg.legs.get(&id).ok_or(MediaError::UnknownId(id))?;
            (e.worker, e.phase, e.call)
        };
        if old == call {
            return Ok(());
        }
        match reg.calls.get_mut(&call) {
            Some(p) if p.worker != worker => {
                return Err(MediaError::MoveAcrossWorkers { id, call });
            }
            Some(p) => p.legs += 1,
            None => {
                reg.calls.insert(
                    call,
                    CallPlace {
                        worker,
                        phase,
                        legs: 1,
                    },
                );
            }
        }
        Self::unplace(&mut reg, old);
        if let Some(e) = reg.legs.get_mut(&id) {
            e.call = call;
        }
        Ok(())
    }

    /// The leg's figures (published by its worker every 100 ms), or `None` for an unknown leg.
    pub fn stats(&self, id: MediaId) -> Option<MediaStats> {
        let reg = lock(&self.inner.registry);
        let e = reg.legs.get(&id)?;
        Some(e.shared.snapshot(e.local, e.format))
    }

    /// Waits (up to `timeout`) until every worker has applied every command submitted before
    /// this call. False on timeout.
    pub fn flush(&self, timeout: Duration) -> bool {
        let targets: Vec<u64> = self
            .inner
            .workers
            .iter()
            .map(|w| w.submitted.load(Ordering::Acquire))
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .inner
                .workers
                .iter()
                .zip(&targets)
                .all(|(w, &t)| w.processed.load(Ordering::Acquire) >= t);
            if done || self.inner.down.load(Ordering::Acquire) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// What the plane holds, after the commands already submitted have been applied (waits for
    /// that up to 1 s).
    pub fn counts(&self) -> PlaneCounts {
        self.flush(Duration::from_secs(1));
        self.inner.shared.counts()
    }

    /// The engine's event stream (taken once; `None` afterwards).
    pub fn take_events(&self) -> Option<UnboundedReceiver<MediaEvent>> {
        lock(&self.inner.events).take()
    }

    /// Processing-latency histograms (when [`PlaneConfig::measure_latency`] is on).
    pub fn latency(&self) -> LatencyReport {
        self.inner.shared.latency()
    }

    /// Clears the latency histograms (after a benchmark's warm-up).
    pub fn reset_latency(&self) {
        self.inner.shared.reset_latency();
    }

    /// Worker threads (named `media-N`).
    pub fn worker_count(&self) -> usize {
        self.inner.workers.len()
    }
}

impl Inner {
    fn shutdown(&self) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        for w in &self.workers {
            let _ = w.tx.send(Command::Shutdown);
            let _ = w.wake.write(1);
        }
        for w in &self.workers {
            if let Some(t) = lock(&w.thread).take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
