//! The call engine: technology-neutral, sans-IO, time passed in.
//!
//! A call is a URI, its legs and its state, owned here and nowhere else. The engine is fed leg
//! events from the providers ([`Engine::handle_leg_event`]), media results and notices from the
//! shell ([`Engine::media_opened`], [`Engine::media_event`]), commands from the control plane
//! (`hang_up`, `hold`, `originate`, `connect`, ...) and time ([`Engine::handle_timeout`]); it
//! answers with [`EngineOutput`]s: commands for legs (routed by the shell to the provider of the
//! leg's kind), media commands for the media plane (as data: the shell executes them), CDRs,
//! and notices for the control plane. Control events (`call.created`, `call.answered`,
//! `call.held`, `call.ended`) go into the engine's [`EventLog`].
//!
//! Routing: a new incoming leg is matched against the route table; the route's destinations
//! are tried in order, the next one when a destination fails with a network or resource cause
//! (Q.850 classes 3, 27, 34–47, 102, …: trunk down, no channel, timeout, 5xx), never when the
//! called party answered busy, rejected or did not answer.
//!
//! Media: the engine anchors every call. RTP legs get a plane socket before they offer or
//! answer; the outbound leg is offered the caller's codecs in the destination's preference
//! order first (so both sides can agree and nothing is transcoded), then the destination's
//! other codecs; the caller is answered with the destination's codec when it offered it, else
//! with its own best (the plane transcodes PCMU ↔ PCMA ↔ L16).
//!
//! DTMF: a digit reported by a leg (RFC 4733 or in-band from the plane, SIP INFO from the
//! provider) goes to the leg it is bridged to exactly once, in what that leg negotiated: SIP
//! INFO when its trunk asks for it, else through the plane (RFC 4733 when negotiated, in-band
//! otherwise). The same press arriving twice by two ways (INFO and RFC 4733) is passed once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::cdr::{Attempt, Cdr, CdrLeg, rfc3339};
use super::leg::{
    AudioCodec, DigitSource, DtmfMode, EndCause, IncomingCall, LegCommand, LegEvent, LegId, LegIds,
    LegKind, LegSource, LocalMedia, MediaAttachment, MediaCaps, NegotiatedMedia, PortSlot,
    ServiceKind, SipTransportKind, Target,
};
use super::q850;
use super::routing::{Destination, RouteQuery, RouteTable};
use crate::control::{CallUri, Event, EventLog};

/// The engine's small id of a call (for placing its media on one plane worker, and for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CallKey(pub u64);

/// A music file decoded to 8 kHz samples (queue music, music on hold), played in a loop.
/// Cheap to clone (shared samples); compared and shown by its name (the file).
#[derive(Clone)]
pub struct Music {
    name: Arc<str>,
    samples: Arc<[i16]>,
}

impl Music {
    /// Music called `name` (its file) made of 8 kHz `samples`.
    pub fn new(name: impl Into<Arc<str>>, samples: impl Into<Arc<[i16]>>) -> Self {
        Music {
            name: name.into(),
            samples: samples.into(),
        }
    }

    /// Its name (the file it was read from).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its 8 kHz samples.
    pub fn samples(&self) -> &Arc<[i16]> {
        &self.samples
    }
}

impl std::fmt::Debug for Music {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Music({:?}, {:.1} s)",
            self.name,
            self.samples.len() as f64 / 8000.0
        )
    }
}

impl PartialEq for Music {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && Arc::ptr_eq(&self.samples, &o.samples)
    }
}

impl Eq for Music {}

impl std::hash::Hash for Music {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.name.hash(h);
    }
}

impl Serialize for Music {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// What a leg hears from the plane when it is not bridged to another leg.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    /// Silence.
    Silence,
    /// Comfort noise (a held party).
    ComfortNoise,
    /// Ringback tone.
    Ringback,
    /// Hold tone.
    HoldTone,
    /// The leg's own audio back.
    Echo,
    /// 1004 Hz at 0 dBm0.
    Milliwatt,
    /// A music file, looped.
    Music(Music),
}

/// A media-plane command, as data; the shell executes it against the plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Open an RTP socket for `leg` on `ip`; answer with [`Engine::media_opened`].
    OpenRtp {
        /// The leg.
        leg: LegId,
        /// Its call (legs of one call share a plane worker).
        call: CallKey,
        /// Local IP.
        ip: IpAddr,
    },
    /// Attach an external leg's frame port; answer with [`Engine::media_opened`].
    AttachPort {
        /// The leg.
        leg: LegId,
        /// Its call.
        call: CallKey,
        /// The port.
        port: PortSlot,
    },
    /// Configure (or reconfigure) an RTP leg with what it negotiated.
    ConfigureRtp {
        /// The leg.
        leg: LegId,
        /// The parameters.
        media: NegotiatedMedia,
    },
    /// Bridge two legs both ways (replacing what each was connected to or playing).
    Connect {
        /// One leg.
        a: LegId,
        /// The other.
        b: LegId,
    },
    /// Play a source to a leg instead of a partner.
    Play {
        /// The leg.
        leg: LegId,
        /// What it hears.
        source: MediaSource,
    },
    /// Stop (`on`) or resume passing what the leg's party says to its partner; the leg keeps
    /// receiving and hearing.
    Mute {
        /// The leg.
        leg: LegId,
        /// Muted or not.
        on: bool,
    },
    /// Send a digit to the leg's party (RFC 4733 if negotiated, else in-band).
    SendDigit {
        /// The leg.
        leg: LegId,
        /// The digit.
        digit: char,
        /// How long.
        duration: Duration,
    },
    /// Release the leg's media (socket closed, rings freed).
    Release {
        /// The leg.
        leg: LegId,
    },
}

/// What the plane reports about a leg's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaNotice {
    /// A digit received in the media (RFC 4733 or in-band), once per press.
    Digit {
        /// The digit.
        digit: char,
        /// How long.
        duration: Duration,
        /// How it came.
        source: DigitSource,
    },
    /// No media for the inactivity timeout.
    Inactive,
    /// The leg's media failed (socket error).
    Failed(String),
}

/// What happened to a leg, for the control plane (the transfer executor listens to these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegProgress {
    /// The leg is ringing.
    Alerting,
    /// The leg answered.
    Answered,
    /// The leg failed before answer.
    Failed(EndCause),
    /// The leg hung up after answer.
    HungUp(EndCause),
    /// A digit from the leg's party.
    Digit(char),
    /// The party put us on hold.
    Held,
    /// The party resumed.
    Resumed,
    /// A new call was routed to the control plane (`control:agent:ID` / `control:queue:NAME`);
    /// its caller's leg waits unanswered for the control plane's commands.
    Offered {
        /// `agent:ID` or `queue:NAME`.
        to: String,
        /// Who is calling.
        caller: String,
    },
    /// The party asked for a transfer (SIP REFER).
    TransferRequest {
        /// Where to.
        target: String,
        /// Attended: the dialog to replace.
        replaces: Option<String>,
    },
}

/// A notice for the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegNotice {
    /// The call.
    pub call: CallUri,
    /// The leg.
    pub leg: LegId,
    /// What happened.
    pub progress: LegProgress,
}

/// What the engine asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineOutput {
    /// A command for a leg's provider.
    Leg {
        /// The leg.
        leg: LegId,
        /// Its technology (which provider).
        kind: LegKind,
        /// The command.
        command: LegCommand,
    },
    /// A media-plane command.
    Media(MediaCommand),
    /// A call ended: write its record.
    Cdr(Box<Cdr>),
    /// A leg event for the control plane.
    Notice(LegNotice),
}

/// A SIP trunk as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkSettings {
    /// Name.
    pub name: String,
    /// Next-hop address.
    pub address: SocketAddr,
    /// Transport.
    pub transport: SipTransportKind,
    /// Host part of request URIs (default: the address).
    pub host: Option<String>,
    /// Credentials for its 401/407.
    pub credentials: Option<(String, String)>,
    /// Codec preference.
    pub codecs: Vec<AudioCodec>,
    /// How to send it DTMF.
    pub dtmf: DtmfMode,
    /// Pass hold/resume of the other party on by re-INVITE (else only the media changes).
    pub propagate_hold: bool,
    /// Most simultaneous calls on it (`None`: unlimited).
    pub max_calls: Option<usize>,
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// IP of the RTP sockets.
    pub media_ip: IpAddr,
    /// Routes.
    pub routes: RouteTable,
    /// Trunks.
    pub trunks: Vec<TrunkSettings>,
    /// Codec preference of callers that came in on no trunk (phones).
    pub default_codecs: Vec<AudioCodec>,
    /// DTMF mode of such callers.
    pub default_dtmf: DtmfMode,
    /// How long an outbound leg may ring before the call fails with "no answer" (Q.850 19).
    pub no_answer_timeout: Duration,
    /// Max-Forwards for calls that carry none.
    pub max_forwards: u8,
    /// Capacity of the control event log.
    pub event_log_capacity: usize,
    /// Leg technologies that have a provider in this process (routes to others fail).
    pub providers: Vec<LegKind>,
}

impl EngineConfig {
    /// Loopback media, no routes, SIP and services.
    pub fn new(media_ip: IpAddr) -> Self {
        EngineConfig {
            media_ip,
            routes: RouteTable::default(),
            trunks: Vec::new(),
            default_codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            default_dtmf: DtmfMode::Rfc4733,
            no_answer_timeout: Duration::from_secs(90),
            max_forwards: 70,
            event_log_capacity: 10_000,
            providers: vec![LegKind::Sip, LegKind::Service],
        }
    }
}

/// Why a control-plane command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No live call has this URI (HTTP 404).
    #[error("no call {0}")]
    NoSuchCall(CallUri),
    /// No live leg has this id (HTTP 404).
    #[error("no leg {0}")]
    NoSuchLeg(LegId),
    /// The leg cannot do that now (HTTP 409).
    #[error("{0} cannot do that now: {1}")]
    NotNow(LegId, &'static str),
    /// A digit outside 0-9, *, #, A-D (HTTP 400).
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    BadDigit(char),
    /// The target names a trunk that is not configured (HTTP 400).
    #[error("unknown trunk {0:?}")]
    UnknownTrunk(String),
    /// The target needs a leg technology this gateway does not run (HTTP 501).
    #[error("no {0:?} legs in this gateway")]
    NoProvider(LegKind),
    /// Two legs of different calls, or a leg with itself (HTTP 400).
    #[error("legs {0} and {1} cannot be connected")]
    CannotConnect(LegId, LegId),
    /// The target could not be parsed or resolved (HTTP 400).
    #[error("bad target: {0}")]
    BadTarget(String),
}

/// A target for [`Engine::originate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginateTarget {
    /// A number on a configured trunk.
    Trunk {
        /// The trunk.
        trunk: String,
        /// The number.
        number: String,
    },
    /// A SIP URI with an IP-literal host.
    SipUri(String),
    /// A number on a TDM span group.
    SpanGroup {
        /// The group.
        group: String,
        /// The number.
        number: String,
    },
    /// A WebRTC endpoint.
    WebRtc(String),
    /// A built-in service.
    Service(ServiceKind),
    /// A phone registered to the SIP provider, where its registration says (see
    /// [`SipLegs::registered_contact`](super::sip_leg::SipLegs::registered_contact)): the
    /// INVITE has its Contact as Request-URI and goes to the address the REGISTER came from.
    Registered {
        /// The phone's user name (logs, CDRs: `phone:USER`).
        user: String,
        /// The registered Contact URI.
        uri: String,
        /// Where its REGISTER came from.
        dest: SocketAddr,
        /// The transport it registered over.
        transport: SipTransportKind,
    },
}

/// A leg as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegInfo {
    /// Id.
    pub id: LegId,
    /// Technology.
    pub kind: LegKind,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `setup`, `early` or `answered`.
    pub state: &'static str,
    /// Who: trunk, URI, service, caller number.
    pub peer: String,
    /// Codec in use.
    pub codec: Option<AudioCodec>,
    /// Remote RTP address.
    pub remote: Option<SocketAddr>,
    /// Our RTP address.
    pub local: Option<SocketAddr>,
    /// The leg it is bridged to.
    pub bridged_to: Option<LegId>,
    /// What it hears instead of a partner.
    pub playing: Option<MediaSource>,
    /// The party put us on hold.
    pub held: bool,
}

/// A call as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallInfo {
    /// The URI.
    pub uri: CallUri,
    /// The engine's key.
    pub key: CallKey,
    /// `routing`, `ringing`, `early`, `answered` or `ending`.
    pub state: &'static str,
    /// Age in ms.
    pub age_ms: u64,
    /// Calling party.
    pub caller: String,
    /// Called party.
    pub callee: String,
    /// Route.
    pub route: Option<String>,
    /// Whether the control plane manages its legs.
    pub controlled: bool,
    /// Legs.
    pub legs: Vec<LegInfo>,
}

/// Counters of one trunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrunkCounters {
    /// Calls in from it.
    pub calls_in: u64,
    /// Calls out to it.
    pub calls_out: u64,
    /// Outbound calls it answered.
    pub answered: u64,
    /// Outbound calls that failed on it.
    pub failed: u64,
    /// Live legs on it.
    pub active: u64,
    /// Reachable (OPTIONS keepalive), if pinged.
    pub up: Option<bool>,
}

/// Engine-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Calls created.
    pub calls_total: u64,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls that ended without answer.
    pub calls_failed: u64,
    /// Calls ended for RTP inactivity.
    pub media_timeouts: u64,
    /// Digits relayed between legs.
    pub digits_relayed: u64,
    /// Digits dropped as the second copy of a press that came two ways.
    pub digits_deduplicated: u64,
    /// Per trunk.
    pub trunks: BTreeMap<String, TrunkCounters>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Early,
    Answered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MediaSlot {
    None,
    Opening,
    Open(Option<SocketAddr>),
}

#[derive(Debug, Clone)]
struct PendingOriginate {
    target: Target,
    caller: String,
    caller_name: Option<String>,
    max_forwards: u8,
    codecs: Vec<AudioCodec>,
    ptime_ms: u16,
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    kind: LegKind,
    call: CallKey,
    direction: Direction,
    phase: Phase,
    attachment: MediaAttachment,
    media: MediaSlot,
    offered: Option<MediaCaps>,
    negotiated: Option<NegotiatedMedia>,
    peer: Option<LegId>,
    playing: Option<MediaSource>,
    trunk: Option<String>,
    prefs: Vec<AudioCodec>,
    dtmf: DtmfMode,
    propagate_hold: bool,
    held_by_party: bool,
    last_digit: Option<(char, Instant, DigitSource)>,
    desc: String,
    answered_at: Option<Instant>,
    pending_originate: Option<PendingOriginate>,
    pending_answer: bool,
    pending_early: bool,
    cdr_index: usize,
}

#[derive(Debug)]
struct RouteState {
    name: String,
    number: String,
    destinations: Vec<Destination>,
    next: usize,
}

#[derive(Debug)]
struct Call {
    key: CallKey,
    uri: CallUri,
    span: tracing::Span,
    created: Instant,
    answered: Option<Instant>,
    /// When the caller was first connected to another party (RFC 3339).
    connected: Option<String>,
    caller: String,
    caller_name: Option<String>,
    callee: String,
    request_uri: String,
    max_forwards: u8,
    a_leg: LegId,
    legs: Vec<LegId>,
    route: Option<RouteState>,
    current_b: Option<LegId>,
    current_dest: Option<String>,
    in_trunk: Option<String>,
    controlled: bool,
    no_answer_at: Option<Instant>,
    attempts: Vec<Attempt>,
    cdr_legs: Vec<CdrLeg>,
}

/// The call engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    ids: LegIds,
    calls: HashMap<CallKey, Call>,
    /// No-answer deadlines, earliest first (entries of calls answered or gone are skipped).
    no_answer_timers: BinaryHeap<Reverse<(Instant, CallKey)>>,
    by_uri: HashMap<CallUri, CallKey>,
    legs: HashMap<LegId, Leg>,
    out: VecDeque<EngineOutput>,
    internal: VecDeque<(LegId, LegEvent)>,
    next_call: u64,
    events: EventLog,
    stats: EngineStats,
    trunk_up: HashMap<String, bool>,
    providers: HashSet<LegKind>,
    wall: (Instant, SystemTime),
}

/// Two presses of one digit by different ways closer than this are one press.
const DIGIT_DEDUP_WINDOW: Duration = Duration::from_millis(300);

fn valid_digit(d: char) -> bool {
    d.is_ascii_digit() || matches!(d, '*' | '#' | 'A' | 'B' | 'C' | 'D')
}

impl Engine {
    /// An engine with no calls, numbering legs it originates with `ids` (shared with the
    /// providers).
    pub fn new(cfg: EngineConfig, ids: LegIds) -> Self {
        let mut stats = EngineStats::default();
        for t in &cfg.trunks {
            stats
                .trunks
                .insert(t.name.clone(), TrunkCounters::default());
        }
        Engine {
            events: EventLog::new(cfg.event_log_capacity.max(16)),
            providers: cfg.providers.iter().copied().collect(),
            cfg,
            ids,
            calls: HashMap::new(),
            no_answer_timers: BinaryHeap::new(),
            by_uri: HashMap::new(),
            legs: HashMap::new(),
            out: VecDeque::new(),
            internal: VecDeque::new(),
            next_call: 0,
            stats,
            trunk_up: HashMap::new(),
            wall: (Instant::now(), SystemTime::now()),
        }
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<EngineOutput> {
        self.out.pop_front()
    }

    /// The control event log (`call.created`, `call.answered`, `call.held`, `call.ended`).
    pub fn event_log(&self) -> &EventLog {
        &self.events
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Live calls.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Live legs the engine knows of.
    pub fn leg_count(&self) -> usize {
        self.legs.len()
    }

    /// Registers a leg technology (its provider now runs; routes to it may be used).
    pub fn add_provider(&mut self, kind: LegKind) {
        self.providers.insert(kind);
    }

    /// A trunk's keepalive said it is up or down; routes skip a down trunk.
    pub fn set_trunk_status(&mut self, trunk: &str, up: bool) {
        self.trunk_up.insert(trunk.to_owned(), up);
        if let Some(t) = self.stats.trunks.get_mut(trunk) {
            t.up = Some(up);
        }
    }

    /// The call a leg belongs to.
    pub fn call_of_leg(&self, leg: LegId) -> Option<&CallUri> {
        let key = self.legs.get(&leg)?.call;
        self.calls.get(&key).map(|c| &c.uri)
    }

    /// The tracing span of a leg's call (to log inside it).
    pub fn span_of_leg(&self, leg: LegId) -> Option<tracing::Span> {
        let key = self.legs.get(&leg)?.call;
        self.calls.get(&key).map(|c| c.span.clone())
    }

    fn wall_time(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.wall.0) {
            Some(d) => self.wall.1 + d,
            None => self.wall.1 - self.wall.0.saturating_duration_since(at),
        }
    }

    fn leg_cmd(&mut self, leg: LegId, kind: LegKind, command: LegCommand) {
        if kind == LegKind::Service {
            self.service_command(leg, command);
        } else {
            self.out.push_back(EngineOutput::Leg { leg, kind, command });
        }
    }

    /// Tells a leg's provider which call the leg belongs to (for its log lines).
    fn tell_call_uri(&mut self, leg: LegId) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        let kind = l.kind;
        let Some(uri) = self.calls.get(&l.call).map(|c| c.uri.clone()) else {
            return;
        };
        self.leg_cmd(leg, kind, LegCommand::CallUri { uri });
    }

    fn media(&mut self, c: MediaCommand) {
        self.out.push_back(EngineOutput::Media(c));
    }

    fn notice(&mut self, leg: LegId, progress: LegProgress) {
        let Some(uri) = self.call_of_leg(leg).cloned() else {
            return;
        };
        self.out.push_back(EngineOutput::Notice(LegNotice {
            call: uri,
            leg,
            progress,
        }));
    }

    // ----- the built-in service provider ----------------------------------------------------

    fn service_command(&mut self, leg: LegId, command: LegCommand) {
        if let LegCommand::Originate {
            target: Target::Service(kind),
            ..
        } = command
        {
            self.internal.push_back((
                leg,
                LegEvent::Answered {
                    media: None,
                    attachment: MediaAttachment::Source(kind),
                },
            ));
        }
        // HangUp and the rest: a service holds nothing.
    }

    fn drain_internal(&mut self, now: Instant) {
        while let Some((leg, ev)) = self.internal.pop_front() {
            self.on_leg_event(now, leg, ev);
        }
    }

    // ----- leg events -----------------------------------------------------------------------

    /// Feeds an event of leg `leg` (from its provider).
    pub fn handle_leg_event(&mut self, now: Instant, kind: LegKind, leg: LegId, ev: LegEvent) {
        if let LegEvent::Incoming(info) = ev {
            self.on_incoming(now, kind, leg, info);
        } else {
            self.on_leg_event(now, leg, ev);
        }
        self.drain_internal(now);
    }

    fn on_leg_event(&mut self, now: Instant, id: LegId, ev: LegEvent) {
        let Some(span) = self.span_of_leg(id) else {
            // A leg the engine already forgot (it hung it up): nothing to do.
            return;
        };
        let _entered = span.enter();
        match ev {
            LegEvent::Incoming(_) => {}
            LegEvent::Alerting => self.on_alerting(id),
            LegEvent::Progress { media, attachment } => self.on_progress(id, media, attachment),
            LegEvent::Answered { media, attachment } => {
                self.on_answered(now, id, media, attachment)
            }
            LegEvent::MediaChanged { media } => self.on_media_changed(id, media),
            LegEvent::Failed { cause } => {
                tracing::info!(leg = %id, q850 = cause.q850, sip = ?cause.sip_status, "leg failed: {}", cause.text);
                self.notice(id, LegProgress::Failed(cause.clone()));
                self.on_leg_end(now, id, cause);
            }
            LegEvent::HungUp { cause } => {
                tracing::info!(leg = %id, q850 = cause.q850, "leg hung up: {}", cause.text);
                self.notice(id, LegProgress::HungUp(cause.clone()));
                self.on_leg_end(now, id, cause);
            }
            LegEvent::Digit {
                digit,
                duration,
                source,
            } => self.on_digit(now, id, digit, duration, source),
            LegEvent::Hold => self.on_hold(id),
            LegEvent::Resume => self.on_resume(id),
            LegEvent::TransferRequest { target, replaces } => {
                tracing::info!(leg = %id, %target, "party asks for a transfer");
                self.notice(id, LegProgress::TransferRequest { target, replaces });
            }
        }
    }

    fn on_incoming(&mut self, now: Instant, kind: LegKind, id: LegId, info: IncomingCall) {
        self.next_call += 1;
        let key = CallKey(self.next_call);
        let uri = CallUri::new();
        let span = super::leg::call_span(&uri);
        let entered = span.clone();
        let _entered = entered.enter();
        let source_ip = match &info.source {
            LegSource::Address(a) => Some(a.ip()),
            LegSource::Channel { .. } => None,
        };
        tracing::info!(
            leg = %id,
            kind = kind.as_str(),
            caller = %info.caller,
            callee = %info.callee,
            source = ?info.source,
            trunk = ?info.trunk,
            "incoming call"
        );
        let trunk = info.trunk.as_ref().and_then(|t| self.trunk(t).cloned());
        let prefs = trunk
            .as_ref()
            .map_or_else(|| self.cfg.default_codecs.clone(), |t| t.codecs.clone());
        let dtmf = trunk.as_ref().map_or(self.cfg.default_dtmf, |t| t.dtmf);
        let propagate_hold = trunk.as_ref().is_none_or(|t| t.propagate_hold);
        if let Some(t) = info
            .trunk
            .as_ref()
            .and_then(|t| self.stats.trunks.get_mut(t))
        {
            t.calls_in += 1;
            t.active += 1;
        }
        self.stats.calls_total += 1;
        let desc = info
            .trunk
            .as_ref()
            .map_or_else(|| info.caller.clone(), |t| format!("trunk:{t}"));
        let leg = Leg {
            id,
            kind,
            call: key,
            direction: Direction::Inbound,
            phase: Phase::Setup,
            attachment: info.attachment.clone(),
            media: MediaSlot::None,
            offered: info.media.clone(),
            negotiated: None,
            peer: None,
            playing: None,
            trunk: info.trunk.clone(),
            prefs,
            dtmf,
            propagate_hold,
            held_by_party: false,
            last_digit: None,
            desc: desc.clone(),
            answered_at: None,
            pending_originate: None,
            pending_answer: false,
            pending_early: false,
            cdr_index: 0,
        };
        let call = Call {
            key,
            uri: uri.clone(),
            span: span.clone(),
            created: now,
            answered: None,
            connected: None,
            caller: info.caller.clone(),
            caller_name: info.caller_name.clone(),
            callee: info.callee.clone(),
            request_uri: info.request_uri.clone(),
            max_forwards: info.max_forwards.unwrap_or(self.cfg.max_forwards),
            a_leg: id,
            legs: vec![id],
            route: None,
            current_b: None,
            current_dest: None,
            in_trunk: info.trunk.clone(),
            controlled: false,
            no_answer_at: None,
            attempts: Vec::new(),
            cdr_legs: vec![CdrLeg {
                leg: id,
                kind,
                direction: "inbound",
                peer: desc,
                codec: None,
                answered: None,
                q850: None,
                media: None,
            }],
        };
        self.legs.insert(id, leg);
        self.calls.insert(key, call);
        self.by_uri.insert(uri.clone(), key);
        self.tell_call_uri(id);
        if let MediaAttachment::Port(slot) = &info.attachment {
            // A leg whose IO runs elsewhere (WebRTC, TDM) brings its frame rings with the call.
            if let Some(l) = self.legs.get_mut(&id) {
                l.media = MediaSlot::Opening;
            }
            self.media(MediaCommand::AttachPort {
                leg: id,
                call: key,
                port: slot.clone(),
            });
        }
        self.events.publish(Event::CallCreated {
            call_uri: uri,
            caller: info.caller.clone(),
        });
        let route = self
            .cfg
            .routes
            .lookup(&RouteQuery {
                number: &info.callee,
                trunk: info.trunk.as_deref(),
                source_ip,
                user: info.authenticated.as_deref(),
            })
            .cloned();
        let Some(route) = route else {
            tracing::info!(callee = %info.callee, "no route");
            self.end_call(now, key, EndCause::q850(3, "no route"), "gateway");
            return;
        };
        let number = route.translate(&info.callee);
        tracing::info!(route = %route.name, %number, "routed");
        if let Some(c) = self.calls.get_mut(&key) {
            c.route = Some(RouteState {
                name: route.name.clone(),
                number,
                destinations: route.destinations.clone(),
                next: 0,
            });
        }
        self.try_next_destination(now, key, None);
    }

    fn trunk(&self, name: &str) -> Option<&TrunkSettings> {
        self.cfg.trunks.iter().find(|t| t.name == name)
    }

    /// Starts the route's next destination; when none is left the call fails with `last`.
    fn try_next_destination(&mut self, now: Instant, key: CallKey, mut last: Option<EndCause>) {
        loop {
            let Some(call) = self.calls.get_mut(&key) else {
                return;
            };
            let next = call.route.as_mut().and_then(|r| {
                let d = r.destinations.get(r.next).cloned();
                r.next += 1;
                d.map(|d| (d, r.number.clone()))
            });
            let Some((dest, number)) = next else {
                let cause = last.unwrap_or_else(|| EndCause::q850(34, "no destination available"));
                self.end_call(now, key, cause, "gateway");
                return;
            };
            call.current_dest = Some(dest.to_string());
            match self.start_destination(now, key, &dest, &number) {
                Ok(()) => return,
                Err(cause) => {
                    tracing::warn!(destination = %dest, q850 = cause.q850, "destination unavailable: {}", cause.text);
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.attempts.push(Attempt {
                            destination: dest.to_string(),
                            q850: Some(cause.q850),
                            sip_status: cause.sip_status,
                            text: Some(cause.text.clone()),
                        });
                    }
                    last = Some(cause);
                }
            }
        }
    }

    fn start_destination(
        &mut self,
        now: Instant,
        key: CallKey,
        dest: &Destination,
        number: &str,
    ) -> Result<(), EndCause> {
        if let Destination::Control(to) = dest {
            let Some(c) = self.calls.get_mut(&key) else {
                return Ok(());
            };
            c.controlled = true;
            let (a, caller) = (c.a_leg, c.caller.clone());
            tracing::info!(%to, "handed to the control plane");
            // The caller's socket now, so that it can hear ringback or comfort audio at once.
            self.ensure_media(a);
            self.notice(
                a,
                LegProgress::Offered {
                    to: to.clone(),
                    caller,
                },
            );
            return Ok(());
        }
        let (kind, target, prefs, dtmf, trunk, propagate) = self.resolve(dest, number)?;
        let leg = self.new_outbound_leg(
            now,
            key,
            kind,
            target,
            prefs,
            dtmf,
            trunk,
            propagate,
            dest.to_string(),
        )?;
        if let Some(c) = self.calls.get_mut(&key) {
            c.current_b = Some(leg);
            let at = now + self.cfg.no_answer_timeout;
            c.no_answer_at = Some(at);
            self.no_answer_timers.push(Reverse((at, key)));
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn resolve(
        &self,
        dest: &Destination,
        number: &str,
    ) -> Result<
        (
            LegKind,
            Target,
            Vec<AudioCodec>,
            DtmfMode,
            Option<String>,
            bool,
        ),
        EndCause,
    > {
        match dest {
            Destination::Trunk(name) => {
                let t = self.trunk(name).ok_or_else(|| {
                    EndCause::q850(3, format!("trunk {name:?} is not configured"))
                })?;
                if self.trunk_up.get(name) == Some(&false) {
                    return Err(EndCause::q850(
                        38,
                        format!("trunk {name} is down (no OPTIONS answer)"),
                    ));
                }
                if let Some(max) = t.max_calls {
                    let active = self.stats.trunks.get(name).map_or(0, |c| c.active);
                    if active >= max as u64 {
                        return Err(EndCause::q850(
                            34,
                            format!("trunk {name} is full ({max} calls)"),
                        ));
                    }
                }
                let host = t.host.clone().unwrap_or_else(|| t.address.to_string());
                let user: String = number
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "+*#._-".contains(*c))
                    .collect();
                let uri = if user.is_empty() {
                    format!("sip:{host}")
                } else {
                    format!("sip:{user}@{host}")
                };
                Ok((
                    LegKind::Sip,
                    Target::Sip {
                        uri,
                        dest: t.address,
                        transport: t.transport,
                        credentials: t.credentials.clone(),
                        trunk: Some(name.clone()),
                    },
                    t.codecs.clone(),
                    t.dtmf,
                    Some(name.clone()),
                    t.propagate_hold,
                ))
            }
            Destination::Uri(u) => {
                let parsed = crate::sip::message::Uri::parse(u)
                    .map_err(|e| EndCause::q850(28, format!("bad URI {u:?}: {e}")))?;
                let addr = crate::sip::dialog::uri_socket_addr(&parsed).ok_or_else(|| {
                    EndCause::q850(3, format!("{u}: only IP-literal hosts are reachable"))
                })?;
                let transport = match parsed.param("transport").flatten() {
                    Some(t) if t.eq_ignore_ascii_case("tcp") => SipTransportKind::Tcp,
                    Some(t) if t.eq_ignore_ascii_case("tls") => SipTransportKind::Tls,
                    _ => SipTransportKind::Udp,
                };
                Ok((
                    LegKind::Sip,
                    Target::Sip {
                        uri: u.clone(),
                        dest: addr,
                        transport,
                        credentials: None,
                        trunk: None,
                    },
                    self.cfg.default_codecs.clone(),
                    self.cfg.default_dtmf,
                    None,
                    true,
                ))
            }
            Destination::SpanGroup(g) => {
                if !self.providers.contains(&LegKind::Tdm) {
                    return Err(EndCause::q850(
                        34,
                        format!("span group {g}: this gateway runs no TDM legs yet"),
                    ));
                }
                Ok((
                    LegKind::Tdm,
                    Target::Tdm {
                        group: g.clone(),
                        number: number.to_owned(),
                    },
                    vec![AudioCodec::Pcma, AudioCodec::Pcmu],
                    DtmfMode::Inband,
                    None,
                    false,
                ))
            }
            Destination::Control(c) => Err(EndCause::q850(
                3,
                format!("control:{c} is a route destination, not a dialable target"),
            )),
            Destination::WebRtc(endpoint) => {
                if !self.providers.contains(&LegKind::WebRtc) {
                    return Err(EndCause::q850(
                        34,
                        format!("webrtc:{endpoint}: this gateway runs no WebRTC legs"),
                    ));
                }
                Ok((
                    LegKind::WebRtc,
                    Target::WebRtc {
                        endpoint: endpoint.clone(),
                    },
                    self.cfg.default_codecs.clone(),
                    DtmfMode::Rfc4733,
                    None,
                    true,
                ))
            }
            Destination::Service(s) => Ok((
                LegKind::Service,
                Target::Service(*s),
                Vec::new(),
                DtmfMode::Rfc4733,
                None,
                false,
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_outbound_leg(
        &mut self,
        _now: Instant,
        key: CallKey,
        kind: LegKind,
        target: Target,
        prefs: Vec<AudioCodec>,
        dtmf: DtmfMode,
        trunk: Option<String>,
        propagate_hold: bool,
        desc: String,
    ) -> Result<LegId, EndCause> {
        if !self.providers.contains(&kind) {
            return Err(EndCause::q850(
                58,
                format!("no {} legs in this gateway", kind.as_str()),
            ));
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(EndCause::q850(41, "call gone"));
        };
        let a = call.a_leg;
        let id = self.ids.next_id();
        call.legs.push(id);
        call.cdr_legs.push(CdrLeg {
            leg: id,
            kind,
            direction: "outbound",
            peer: desc.clone(),
            codec: None,
            answered: None,
            q850: None,
            media: None,
        });
        let cdr_index = call.cdr_legs.len() - 1;
        let caller = call.caller.clone();
        let caller_name = call.caller_name.clone();
        let max_forwards = call.max_forwards;
        let a_caps = self.legs.get(&a).and_then(|l| l.offered.clone());
        let ptime_ms = a_caps.as_ref().map_or(20, |c| c.ptime_ms);
        // Offer the caller's codecs in the destination's order first, then the rest of ours.
        let mut codecs: Vec<AudioCodec> = match &a_caps {
            Some(caps) => prefs
                .iter()
                .filter(|c| caps.codecs.contains(c))
                .copied()
                .collect(),
            None => Vec::new(),
        };
        for c in &prefs {
            if !codecs.contains(c) {
                codecs.push(*c);
            }
        }
        if let Some(t) = trunk.as_ref().and_then(|t| self.stats.trunks.get_mut(t)) {
            t.calls_out += 1;
            t.active += 1;
        }
        let attachment = match kind {
            LegKind::Service => match &target {
                Target::Service(s) => MediaAttachment::Source(*s),
                _ => MediaAttachment::Rtp,
            },
            LegKind::Sip => MediaAttachment::Rtp,
            _ => MediaAttachment::Port(PortSlot::empty()),
        };
        let pending = PendingOriginate {
            target,
            caller,
            caller_name,
            max_forwards,
            codecs,
            ptime_ms,
        };
        let rtp = attachment == MediaAttachment::Rtp;
        self.legs.insert(
            id,
            Leg {
                id,
                kind,
                call: key,
                direction: Direction::Outbound,
                phase: Phase::Setup,
                attachment,
                media: MediaSlot::None,
                offered: None,
                negotiated: None,
                peer: None,
                playing: None,
                trunk,
                prefs,
                dtmf,
                propagate_hold,
                held_by_party: false,
                last_digit: None,
                desc,
                answered_at: None,
                pending_originate: Some(pending),
                pending_answer: false,
                pending_early: false,
                cdr_index,
            },
        );
        tracing::info!(leg = %id, kind = kind.as_str(), "originating");
        self.ensure_media(a);
        if rtp {
            self.ensure_media(id);
        } else {
            self.send_originate(id);
        }
        Ok(id)
    }

    /// Opens the leg's plane socket if it is an RTP leg without one.
    fn ensure_media(&mut self, id: LegId) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        if leg.attachment != MediaAttachment::Rtp || leg.media != MediaSlot::None {
            return;
        }
        leg.media = MediaSlot::Opening;
        let call = leg.call;
        let ip = self.cfg.media_ip;
        self.media(MediaCommand::OpenRtp { leg: id, call, ip });
    }

    fn local_address(&self, id: LegId) -> Option<SocketAddr> {
        match self.legs.get(&id)?.media {
            MediaSlot::Open(a) => a,
            _ => None,
        }
    }

    fn media_ready(&self, id: LegId) -> bool {
        self.legs.get(&id).is_some_and(|l| {
            l.attachment != MediaAttachment::Rtp || matches!(l.media, MediaSlot::Open(_))
        })
    }

    fn send_originate(&mut self, id: LegId) {
        let address = self.local_address(id);
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let Some(p) = leg.pending_originate.take() else {
            return;
        };
        let kind = leg.kind;
        let te = leg.dtmf != DtmfMode::Inband;
        self.tell_call_uri(id);
        self.leg_cmd(
            id,
            kind,
            LegCommand::Originate {
                target: p.target,
                caller: p.caller,
                caller_name: p.caller_name,
                media: LocalMedia {
                    address,
                    codecs: p.codecs,
                    telephone_event: te,
                    ptime_ms: p.ptime_ms,
                },
                max_forwards: p.max_forwards,
            },
        );
    }

    /// The shell opened (or failed to open) a leg's media: its local RTP address, or `None`
    /// for an attached port.
    pub fn media_opened(
        &mut self,
        now: Instant,
        leg: LegId,
        result: Result<Option<SocketAddr>, String>,
    ) {
        let Some(span) = self.span_of_leg(leg) else {
            // The leg is gone already: release what was opened for it.
            if result.is_ok() {
                self.media(MediaCommand::Release { leg });
            }
            return;
        };
        let _entered = span.enter();
        match result {
            Ok(addr) => {
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.media = MediaSlot::Open(addr);
                }
                self.send_originate(leg);
                let (answer, early) = self
                    .legs
                    .get(&leg)
                    .map_or((false, false), |l| (l.pending_answer, l.pending_early));
                if early {
                    self.ring_early(leg);
                }
                if answer {
                    self.answer_leg(now, leg);
                }
            }
            Err(e) => {
                tracing::warn!(leg = %leg, "no media for the leg: {e}");
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.media = MediaSlot::None;
                }
                let cause = EndCause::q850(47, format!("no media port: {e}"));
                let kind = self.legs.get(&leg).map(|l| l.kind);
                if let Some(kind) = kind {
                    self.leg_cmd(
                        leg,
                        kind,
                        LegCommand::HangUp {
                            cause: cause.clone(),
                        },
                    );
                }
                self.on_leg_end(now, leg, cause);
            }
        }
        self.drain_internal(now);
    }

    /// Codecs to answer `a` with: its partner's codec first when `a` offered it (no
    /// transcoding), then `a`'s own preference.
    fn answer_codecs(&self, a: LegId) -> Vec<AudioCodec> {
        let Some(leg) = self.legs.get(&a) else {
            return Vec::new();
        };
        let partner_codec = self
            .partner_of(a)
            .and_then(|b| self.legs.get(&b))
            .and_then(|b| b.negotiated.as_ref())
            .map(|n| n.codec);
        let mut v = Vec::new();
        if let Some(c) = partner_codec
            && leg.offered.as_ref().is_none_or(|o| o.codecs.contains(&c))
        {
            v.push(c);
        }
        for c in &leg.prefs {
            if !v.contains(c) {
                v.push(*c);
            }
        }
        v
    }

    /// The leg `a` is bridged to, or the call's current outbound leg for its caller.
    fn partner_of(&self, a: LegId) -> Option<LegId> {
        let leg = self.legs.get(&a)?;
        if leg.peer.is_some() {
            return leg.peer;
        }
        let call = self.calls.get(&leg.call)?;
        if call.a_leg == a {
            call.current_b
        } else if call.current_b == Some(a) {
            Some(call.a_leg)
        } else {
            None
        }
    }

    fn local_media_for(&self, id: LegId) -> LocalMedia {
        let leg = self.legs.get(&id);
        LocalMedia {
            address: self.local_address(id),
            codecs: self.answer_codecs(id),
            telephone_event: leg.is_none_or(|l| l.dtmf != DtmfMode::Inband),
            ptime_ms: leg
                .and_then(|l| l.offered.as_ref())
                .map_or(20, |o| o.ptime_ms),
        }
    }

    fn answer_leg(&mut self, now: Instant, id: LegId) {
        if !self.media_ready(id) {
            self.ensure_media(id);
            if let Some(l) = self.legs.get_mut(&id) {
                l.pending_answer = true;
            }
            return;
        }
        let media = self.local_media_for(id);
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        l.pending_answer = false;
        l.pending_early = false;
        if l.direction != Direction::Inbound || l.phase == Phase::Answered {
            return;
        }
        l.phase = Phase::Answered;
        l.answered_at = Some(now);
        let (kind, key, cdr_index, peer) = (l.kind, l.call, l.cdr_index, l.peer);
        self.leg_cmd(id, kind, LegCommand::Answer { media });
        let wall = rfc3339(self.wall_time(now));
        let who = peer.and_then(|p| self.legs.get(&p)).map(|p| p.desc.clone());
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if let Some(cl) = call.cdr_legs.get_mut(cdr_index)
            && cl.answered.is_none()
        {
            cl.answered = Some(wall);
        }
        // A caller we answer ourselves (the control plane queues it, or bridges it to the
        // agent who took it): the call is answered now, as the caller sees it (billing starts).
        if call.a_leg == id && call.answered.is_none() {
            let who = who
                .or_else(|| call.current_dest.clone())
                .unwrap_or_else(|| "control".to_owned());
            self.call_answered(now, key, who);
        }
    }

    /// Marks a call answered (once): its record's answer time, the answered count and the
    /// `call.answered` event.
    fn call_answered(&mut self, now: Instant, key: CallKey, who: String) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.answered.is_some() {
            return;
        }
        call.answered = Some(now);
        call.no_answer_at = None;
        let uri = call.uri.clone();
        self.stats.calls_answered += 1;
        tracing::info!(by = %who, "call answered");
        self.events.publish(Event::CallAnswered {
            call_uri: uri,
            agent: who,
        });
    }

    /// Notes when the caller was first connected to another party (the called party, an
    /// agent); for a queued call, later than its answer.
    fn caller_connected(&mut self, now: Instant, a: LegId, b: LegId) {
        let key = match self.legs.get(&a) {
            Some(l) => l.call,
            None => return,
        };
        let wall = rfc3339(self.wall_time(now));
        if let Some(call) = self.calls.get_mut(&key)
            && (call.a_leg == a || call.a_leg == b)
            && call.connected.is_none()
        {
            call.connected = Some(wall);
        }
    }

    fn ring_early(&mut self, id: LegId) {
        if !self.media_ready(id) {
            self.ensure_media(id);
            if let Some(l) = self.legs.get_mut(&id) {
                l.pending_early = true;
            }
            return;
        }
        let media = self.local_media_for(id);
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        l.pending_early = false;
        if l.direction != Direction::Inbound || l.phase != Phase::Setup {
            return;
        }
        l.phase = Phase::Early;
        let kind = l.kind;
        self.leg_cmd(
            id,
            kind,
            LegCommand::Ring {
                early_media: Some(media),
            },
        );
    }

    fn configure(&mut self, id: LegId, media: NegotiatedMedia) {
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&l.call)
            && let Some(cl) = call.cdr_legs.get_mut(l.cdr_index)
        {
            cl.codec = Some(media.codec);
        }
        l.negotiated = Some(media.clone());
        if l.attachment == MediaAttachment::Rtp {
            self.media(MediaCommand::ConfigureRtp { leg: id, media });
        }
    }

    /// Bridges `a` and `b` in the plane (or plays a service's source to the other).
    fn bridge(&mut self, a: LegId, b: LegId) {
        let (Some(la), Some(lb)) = (self.legs.get(&a), self.legs.get(&b)) else {
            return;
        };
        if la.peer == Some(b) && lb.peer == Some(a) && la.playing.is_none() && lb.playing.is_none()
        {
            return;
        }
        let (sa, sb) = (la.attachment.clone(), lb.attachment.clone());
        for (x, y) in [(a, b), (b, a)] {
            // Whoever x was bridged to before is left alone (it hears nothing until told).
            let old = self.legs.get(&x).and_then(|l| l.peer).filter(|o| *o != y);
            if let Some(o) = old
                && let Some(ol) = self.legs.get_mut(&o)
            {
                ol.peer = None;
            }
            if let Some(l) = self.legs.get_mut(&x) {
                l.peer = Some(y);
                l.playing = None;
            }
        }
        match (sa, sb) {
            (_, MediaAttachment::Source(s)) => self.play_service(a, s),
            (MediaAttachment::Source(s), _) => self.play_service(b, s),
            _ => self.media(MediaCommand::Connect { a, b }),
        }
    }

    fn play_service(&mut self, to: LegId, s: ServiceKind) {
        let source = match s {
            ServiceKind::Echo => MediaSource::Echo,
            ServiceKind::Milliwatt => MediaSource::Milliwatt,
        };
        self.media(MediaCommand::Play { leg: to, source });
    }

    fn is_current_b(&self, id: LegId) -> Option<(CallKey, LegId)> {
        let leg = self.legs.get(&id)?;
        let call = self.calls.get(&leg.call)?;
        (call.current_b == Some(id)).then_some((call.key, call.a_leg))
    }

    fn on_alerting(&mut self, id: LegId) {
        self.notice(id, LegProgress::Alerting);
        let Some((_, a)) = self.is_current_b(id) else {
            return;
        };
        if let Some(l) = self.legs.get(&a)
            && l.phase == Phase::Setup
            && !l.pending_early
        {
            let kind = l.kind;
            self.leg_cmd(a, kind, LegCommand::Ring { early_media: None });
        }
    }

    fn on_progress(
        &mut self,
        id: LegId,
        media: Option<NegotiatedMedia>,
        attachment: MediaAttachment,
    ) {
        // Early media: negotiated RTP, or a port leg's rings (a TDM B-channel with in-band
        // information), attached now and kept for the answer.
        let port = match attachment {
            MediaAttachment::Port(slot) => Some(slot),
            _ => None,
        };
        if media.is_none() && port.is_none() {
            return;
        }
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        if l.phase == Phase::Setup {
            l.phase = Phase::Early;
        }
        if let Some(slot) = port
            && l.attachment != MediaAttachment::Port(slot.clone())
        {
            l.media = MediaSlot::Opening;
            l.attachment = MediaAttachment::Port(slot.clone());
            let call = l.call;
            self.media(MediaCommand::AttachPort {
                leg: id,
                call,
                port: slot,
            });
        }
        if let Some(media) = media {
            self.configure(id, media);
        }
        let Some((_, a)) = self.is_current_b(id) else {
            return;
        };
        self.bridge(a, id);
        self.ring_early(a);
    }

    fn on_answered(
        &mut self,
        now: Instant,
        id: LegId,
        media: Option<NegotiatedMedia>,
        attachment: MediaAttachment,
    ) {
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        l.phase = Phase::Answered;
        l.answered_at = Some(now);
        let key = l.call;
        let cdr_index = l.cdr_index;
        if let MediaAttachment::Port(slot) = &attachment
            && l.attachment != attachment
        {
            // (A port that came with early media is attached already.)
            l.media = MediaSlot::Opening;
            let port = slot.clone();
            l.attachment = attachment.clone();
            self.media(MediaCommand::AttachPort {
                leg: id,
                call: key,
                port,
            });
        } else if let MediaAttachment::Source(_) = attachment {
            l.attachment = attachment;
        }
        let wall = rfc3339(self.wall_time(now));
        let trunk = self.legs.get(&id).and_then(|l| l.trunk.clone());
        if let Some(call) = self.calls.get_mut(&key)
            && let Some(cl) = call.cdr_legs.get_mut(cdr_index)
        {
            cl.answered = Some(wall);
        }
        if let Some(m) = media {
            self.configure(id, m);
        }
        self.notice(id, LegProgress::Answered);
        let Some((key, a)) = self.is_current_b(id) else {
            return;
        };
        if let Some(t) = trunk.and_then(|t| self.stats.trunks.get_mut(&t)) {
            t.answered += 1;
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.answered.is_some() {
            return;
        }
        call.answered = Some(now);
        call.no_answer_at = None;
        let uri = call.uri.clone();
        let who = self
            .legs
            .get(&id)
            .map(|l| l.desc.clone())
            .unwrap_or_default();
        self.stats.calls_answered += 1;
        tracing::info!(leg = %id, "answered");
        self.bridge(a, id);
        self.caller_connected(now, a, id);
        self.answer_leg(now, a);
        self.events.publish(Event::CallAnswered {
            call_uri: uri,
            agent: who,
        });
        if let Some(call) = self.calls.get_mut(&key)
            && let Some(al) = self.legs.get(&a)
            && let Some(cl) = call.cdr_legs.get_mut(al.cdr_index)
        {
            cl.answered = Some(rfc3339(
                self.wall.1 + now.saturating_duration_since(self.wall.0),
            ));
        }
    }

    fn on_media_changed(&mut self, id: LegId, media: NegotiatedMedia) {
        let old = self
            .legs
            .get(&id)
            .and_then(|l| l.negotiated.as_ref().map(|n| n.codec));
        let new_codec = media.codec;
        self.configure(id, media);
        // The party changed codec mid-call: offer the other side the same one, so the call
        // stops being transcoded if it can.
        let Some(old) = old else {
            return;
        };
        if old == new_codec {
            return;
        }
        let Some(peer) = self.legs.get(&id).and_then(|l| l.peer) else {
            return;
        };
        if let Some(p) = self.legs.get(&peer)
            && p.kind == LegKind::Sip
            && p.phase == Phase::Answered
            && p.negotiated.as_ref().is_some_and(|n| n.codec != new_codec)
            && p.prefs.contains(&new_codec)
        {
            let mut codecs = vec![new_codec];
            codecs.extend(p.prefs.iter().copied().filter(|c| *c != new_codec));
            tracing::info!(leg = %peer, codec = new_codec.name(), "re-offering to avoid transcoding");
            self.leg_cmd(peer, LegKind::Sip, LegCommand::Reoffer { codecs });
        }
    }

    fn on_hold(&mut self, id: LegId) {
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        if l.held_by_party {
            return;
        }
        l.held_by_party = true;
        let receives = l.negotiated.as_ref().is_none_or(|n| n.direction.receives());
        let peer = l.peer;
        let key = l.call;
        let kind = l.kind;
        tracing::info!(leg = %id, "party put the call on hold");
        if let Some(uri) = self.calls.get(&key).map(|c| c.uri.clone()) {
            self.events.publish(Event::CallHeld { call_uri: uri });
        }
        self.notice(id, LegProgress::Held);
        let Some(peer) = peer else {
            return;
        };
        if let Some(p) = self.legs.get(&peer)
            && p.propagate_hold
            && p.phase == Phase::Answered
            && p.kind != LegKind::Service
        {
            let kind = p.kind;
            self.leg_cmd(peer, kind, LegCommand::Hold);
        }
        if !receives || kind == LegKind::WebRtc {
            // The party sends nothing while it holds us (inactive), or is a browser, which
            // plays no music on hold and keeps sending its microphone: its partner hears the
            // hold tone, never silence or what the holding party says.
            if let Some(p) = self.legs.get_mut(&peer) {
                p.playing = Some(MediaSource::HoldTone);
            }
            self.media(MediaCommand::Play {
                leg: peer,
                source: MediaSource::HoldTone,
            });
        }
    }

    fn on_resume(&mut self, id: LegId) {
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        if !l.held_by_party {
            return;
        }
        l.held_by_party = false;
        let peer = l.peer;
        tracing::info!(leg = %id, "party resumed the call");
        self.notice(id, LegProgress::Resumed);
        let Some(peer) = peer else {
            return;
        };
        if let Some(p) = self.legs.get(&peer)
            && p.propagate_hold
            && p.phase == Phase::Answered
            && p.kind != LegKind::Service
        {
            let kind = p.kind;
            self.leg_cmd(peer, kind, LegCommand::Resume);
        }
        let playing = self.legs.get(&peer).is_some_and(|p| p.playing.is_some());
        if playing {
            self.bridge(id, peer);
        }
    }

    fn on_digit(
        &mut self,
        now: Instant,
        id: LegId,
        digit: char,
        duration: Duration,
        source: DigitSource,
    ) {
        let digit = digit.to_ascii_uppercase();
        if !valid_digit(digit) {
            return;
        }
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        if let Some((d, at, src)) = l.last_digit
            && d == digit
            && src != source
            && now.saturating_duration_since(at) < DIGIT_DEDUP_WINDOW
        {
            self.stats.digits_deduplicated += 1;
            tracing::debug!(leg = %id, %digit, ?source, "digit already received another way");
            return;
        }
        l.last_digit = Some((digit, now, source));
        let peer = l.peer;
        tracing::info!(leg = %id, %digit, ?source, "digit");
        self.notice(id, LegProgress::Digit(digit));
        let Some(peer) = peer else {
            return;
        };
        self.send_digit_to(peer, digit, duration);
    }

    fn send_digit_to(&mut self, peer: LegId, digit: char, duration: Duration) {
        let Some(p) = self.legs.get(&peer) else {
            return;
        };
        if matches!(p.attachment, MediaAttachment::Source(_)) {
            return;
        }
        self.stats.digits_relayed += 1;
        if (p.dtmf == DtmfMode::Info && p.kind == LegKind::Sip) || p.kind == LegKind::WebRtc {
            // WebRTC legs send RFC 4733 on their own peer connection (the plane only has the
            // leg's linear frames).
            let kind = p.kind;
            self.leg_cmd(peer, kind, LegCommand::SendDigit { digit, duration });
        } else {
            self.media(MediaCommand::SendDigit {
                leg: peer,
                digit,
                duration,
            });
        }
    }

    /// What the plane reported about a leg's media.
    pub fn media_event(&mut self, now: Instant, leg: LegId, notice: MediaNotice) {
        let Some(span) = self.span_of_leg(leg) else {
            return;
        };
        let _entered = span.enter();
        match notice {
            MediaNotice::Digit {
                digit,
                duration,
                source,
            } => self.on_digit(now, leg, digit, duration, source),
            MediaNotice::Inactive => {
                let Some(key) = self.legs.get(&leg).map(|l| l.call) else {
                    return;
                };
                tracing::warn!(leg = %leg, "no RTP within the inactivity timeout: hanging up");
                self.stats.media_timeouts += 1;
                self.end_call(
                    now,
                    key,
                    EndCause::q850(102, "RTP inactivity timeout"),
                    "gateway",
                );
            }
            MediaNotice::Failed(reason) => {
                let Some(key) = self.legs.get(&leg).map(|l| l.call) else {
                    return;
                };
                tracing::warn!(leg = %leg, "media failed: {reason}");
                self.end_call(
                    now,
                    key,
                    EndCause::q850(41, format!("media failed: {reason}")),
                    "gateway",
                );
            }
        }
        self.drain_internal(now);
    }

    // ----- ending ---------------------------------------------------------------------------

    /// Forgets a leg that ended by itself (its provider told us), and decides what it means
    /// for the call.
    fn on_leg_end(&mut self, now: Instant, id: LegId, cause: EndCause) {
        let Some(leg) = self.forget_leg(id, &cause) else {
            return;
        };
        let key = leg.call;
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.controlled {
            if call.legs.is_empty() {
                self.finish_call(now, key, cause, "control");
            }
            return;
        }
        if id == call.a_leg {
            self.end_call(now, key, cause, "caller");
            return;
        }
        if call.current_b == Some(id) && call.answered.is_none() {
            let dest = call.current_dest.clone().unwrap_or_default();
            if let Some(c) = self.calls.get_mut(&key) {
                c.attempts.push(Attempt {
                    destination: dest,
                    q850: Some(cause.q850),
                    sip_status: cause.sip_status,
                    text: Some(cause.text.clone()),
                });
                c.current_b = None;
            }
            if let Some(t) = leg
                .trunk
                .as_ref()
                .and_then(|t| self.stats.trunks.get_mut(t))
            {
                t.failed += 1;
            }
            if q850::is_failover_cause(cause.q850) {
                self.try_next_destination(now, key, Some(cause));
            } else {
                self.end_call(now, key, cause, "callee");
            }
            return;
        }
        self.end_call(now, key, cause, "callee");
    }

    /// Removes a leg from the engine (and releases its media), returning what it was.
    fn forget_leg(&mut self, id: LegId, cause: &EndCause) -> Option<Leg> {
        let leg = self.legs.remove(&id)?;
        if matches!(leg.media, MediaSlot::Open(_) | MediaSlot::Opening) {
            self.media(MediaCommand::Release { leg: id });
        }
        if let Some(p) = leg.peer
            && let Some(pl) = self.legs.get_mut(&p)
            && pl.peer == Some(id)
        {
            pl.peer = None;
        }
        if let Some(t) = leg
            .trunk
            .as_ref()
            .and_then(|t| self.stats.trunks.get_mut(t))
        {
            t.active = t.active.saturating_sub(1);
        }
        if let Some(call) = self.calls.get_mut(&leg.call) {
            call.legs.retain(|l| *l != id);
            if call.current_b == Some(id) && call.answered.is_some() {
                // keep current_b for the CDR's destination only
            }
            if let Some(cl) = call.cdr_legs.get_mut(leg.cdr_index) {
                cl.q850 = Some(cause.q850);
            }
        }
        Some(leg)
    }

    /// Ends a call: every remaining leg is hung up (or rejected, or cancelled) with `cause`.
    fn end_call(&mut self, now: Instant, key: CallKey, cause: EndCause, by: &str) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let legs = call.legs.clone();
        for id in legs {
            let Some(kind) = self.legs.get(&id).map(|l| l.kind) else {
                continue;
            };
            let inbound_unanswered = self
                .legs
                .get(&id)
                .is_some_and(|l| l.direction == Direction::Inbound && l.phase != Phase::Answered);
            let command = if inbound_unanswered {
                LegCommand::Reject {
                    cause: cause.clone(),
                }
            } else {
                LegCommand::HangUp {
                    cause: cause.clone(),
                }
            };
            self.leg_cmd(id, kind, command);
            self.forget_leg(id, &cause);
        }
        self.finish_call(now, key, cause, by);
    }

    /// Writes the CDR and the `call.ended` event and forgets the call.
    fn finish_call(&mut self, now: Instant, key: CallKey, cause: EndCause, by: &str) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        let _entered = call.span.enter();
        self.by_uri.remove(&call.uri);
        for id in &call.legs {
            self.forget_leg(*id, &cause);
        }
        if call.answered.is_none() {
            self.stats.calls_failed += 1;
        }
        if let Some(t) = call
            .in_trunk
            .as_ref()
            .and_then(|t| self.stats.trunks.get_mut(t))
        {
            // the inbound leg's `active` was released with the leg
            let _ = t;
        }
        tracing::info!(
            q850 = cause.q850,
            sip = ?cause.sip_status,
            ended_by = by,
            "call ended: {}",
            cause.text
        );
        self.events.publish(Event::CallEnded {
            call_uri: call.uri.clone(),
            cause: q850::cause_name(cause.q850).to_owned(),
        });
        let duration = now.saturating_duration_since(call.created);
        let billable = call
            .answered
            .map_or(Duration::ZERO, |a| now.saturating_duration_since(a));
        let cdr = Cdr {
            call_uri: call.uri.clone(),
            start: rfc3339(self.wall_time(call.created)),
            answer: call.answered.map(|a| rfc3339(self.wall_time(a))),
            connected: call.connected.clone(),
            end: rfc3339(self.wall_time(now)),
            duration_ms: duration.as_millis() as u64,
            billable_ms: billable.as_millis() as u64,
            caller: call.caller.clone(),
            caller_name: call.caller_name.clone(),
            callee: call.callee.clone(),
            request_uri: call.request_uri.clone(),
            route: call.route.as_ref().map(|r| r.name.clone()),
            dialled: call.route.as_ref().map(|r| r.number.clone()),
            in_trunk: call.in_trunk.clone(),
            destination: call.current_dest.clone(),
            q850: cause.q850,
            sip_status: cause.sip_status,
            cause: cause.text.clone(),
            ended_by: by.to_owned(),
            attempts: call.attempts.clone(),
            legs: call.cdr_legs.clone(),
        };
        self.out.push_back(EngineOutput::Cdr(Box::new(cdr)));
    }

    // ----- timers ---------------------------------------------------------------------------

    /// When [`Engine::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.no_answer_timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs the timers due at `now` (no-answer).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<CallKey> = Vec::new();
        while let Some(&Reverse((at, key))) = self.no_answer_timers.peek() {
            if at > now {
                break;
            }
            self.no_answer_timers.pop();
            let is_due = self
                .calls
                .get(&key)
                .is_some_and(|c| c.no_answer_at.is_some_and(|t| t <= now));
            if is_due && !due.contains(&key) {
                due.push(key);
            }
        }
        for key in due {
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            call.no_answer_at = None;
            let span = call.span.clone();
            let _entered = span.enter();
            tracing::info!("no answer within {:?}", self.cfg.no_answer_timeout);
            let cause = EndCause {
                q850: 19,
                sip_status: Some(480),
                text: "no answer".to_owned(),
            };
            if let Some(b) = call.current_b
                && let Some(c) = self.calls.get_mut(&key)
            {
                c.attempts.push(Attempt {
                    destination: c.current_dest.clone().unwrap_or_default(),
                    q850: Some(19),
                    sip_status: None,
                    text: Some("no answer".to_owned()),
                });
                let _ = b;
            }
            self.end_call(now, key, cause, "gateway");
        }
        self.drain_internal(now);
    }

    // ----- the command interface (control plane) -------------------------------------------

    /// Live calls.
    pub fn calls(&self, now: Instant) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self.calls.values().map(|c| self.info(now, c)).collect();
        v.sort_by_key(|c| c.key);
        v
    }

    /// One call by URI.
    pub fn call(&self, now: Instant, uri: &CallUri) -> Option<CallInfo> {
        let key = self.by_uri.get(uri)?;
        self.calls.get(key).map(|c| self.info(now, c))
    }

    fn info(&self, now: Instant, c: &Call) -> CallInfo {
        let legs = c
            .legs
            .iter()
            .filter_map(|id| self.legs.get(id))
            .map(|l| LegInfo {
                id: l.id,
                kind: l.kind,
                direction: match l.direction {
                    Direction::Inbound => "inbound",
                    Direction::Outbound => "outbound",
                },
                state: match l.phase {
                    Phase::Setup => "setup",
                    Phase::Early => "early",
                    Phase::Answered => "answered",
                },
                peer: l.desc.clone(),
                codec: l.negotiated.as_ref().map(|n| n.codec),
                remote: l.negotiated.as_ref().and_then(|n| n.remote),
                local: match l.media {
                    MediaSlot::Open(a) => a,
                    _ => None,
                },
                bridged_to: l.peer,
                playing: l.playing.clone(),
                held: l.held_by_party,
            })
            .collect();
        let state = if c.answered.is_some() {
            "answered"
        } else if c
            .current_b
            .is_some_and(|b| self.legs.get(&b).is_some_and(|l| l.phase == Phase::Early))
        {
            "early"
        } else if c.current_b.is_some() {
            "ringing"
        } else {
            "routing"
        };
        CallInfo {
            uri: c.uri.clone(),
            key: c.key,
            state,
            age_ms: now.saturating_duration_since(c.created).as_millis() as u64,
            caller: c.caller.clone(),
            callee: c.callee.clone(),
            route: c.route.as_ref().map(|r| r.name.clone()),
            controlled: c.controlled,
            legs,
        }
    }

    fn key_of(&self, uri: &CallUri) -> Result<CallKey, EngineError> {
        self.by_uri
            .get(uri)
            .copied()
            .ok_or_else(|| EngineError::NoSuchCall(uri.clone()))
    }

    /// Hangs up a whole call.
    pub fn hang_up(
        &mut self,
        now: Instant,
        uri: &CallUri,
        cause: EndCause,
    ) -> Result<(), EngineError> {
        let key = self.key_of(uri)?;
        let span = self.calls.get(&key).map(|c| c.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        tracing::info!("hang-up requested by the control plane");
        self.end_call(now, key, cause, "control");
        self.drain_internal(now);
        Ok(())
    }

    /// Hangs up one leg; the call goes on if the control plane manages it (see
    /// [`Engine::set_controlled`]), else it ends as if that party had hung up.
    pub fn hang_up_leg(
        &mut self,
        now: Instant,
        leg: LegId,
        cause: EndCause,
    ) -> Result<(), EngineError> {
        let l = self.legs.get(&leg).ok_or(EngineError::NoSuchLeg(leg))?;
        let kind = l.kind;
        let command = if l.direction == Direction::Inbound && l.phase != Phase::Answered {
            LegCommand::Reject {
                cause: cause.clone(),
            }
        } else {
            LegCommand::HangUp {
                cause: cause.clone(),
            }
        };
        let span = self.span_of_leg(leg);
        let _entered = span.as_ref().map(tracing::Span::enter);
        self.leg_cmd(leg, kind, command);
        self.on_leg_end(now, leg, cause);
        self.drain_internal(now);
        Ok(())
    }

    /// The control plane takes over (or gives back) the call's legs: while controlled, a leg
    /// that ends does not end the call (the call ends when its last leg does), so a transfer
    /// can drop one party and keep the others.
    pub fn set_controlled(&mut self, uri: &CallUri, controlled: bool) -> Result<(), EngineError> {
        let key = self.key_of(uri)?;
        if let Some(c) = self.calls.get_mut(&key) {
            c.controlled = controlled;
        }
        Ok(())
    }

    /// Puts a leg's party on hold: it is re-offered sendonly and hears `source` (hold tone,
    /// comfort noise) instead of its partner.
    pub fn hold(&mut self, leg: LegId, source: MediaSource) -> Result<(), EngineError> {
        let l = self.legs.get_mut(&leg).ok_or(EngineError::NoSuchLeg(leg))?;
        if l.phase != Phase::Answered {
            return Err(EngineError::NotNow(leg, "not answered"));
        }
        l.playing = Some(source.clone());
        let kind = l.kind;
        self.leg_cmd(leg, kind, LegCommand::Hold);
        self.media(MediaCommand::Play { leg, source });
        Ok(())
    }

    /// Takes a leg off hold and bridges it back to its partner.
    pub fn resume(&mut self, leg: LegId) -> Result<(), EngineError> {
        let l = self.legs.get(&leg).ok_or(EngineError::NoSuchLeg(leg))?;
        if l.phase != Phase::Answered {
            return Err(EngineError::NotNow(leg, "not answered"));
        }
        let kind = l.kind;
        let peer = l.peer;
        self.leg_cmd(leg, kind, LegCommand::Resume);
        if let Some(p) = peer {
            if let Some(pl) = self.legs.get_mut(&leg) {
                pl.playing = Some(MediaSource::Silence);
            }
            self.bridge(leg, p);
        }
        Ok(())
    }

    /// Mutes (or unmutes) a leg's party: its partner hears comfort noise instead of it, while
    /// the leg keeps receiving (and hearing its partner). Any leg kind with media (SIP, WebRTC,
    /// TDM); a built-in service has no voice of its own, so muting it silences what it plays.
    pub fn mute(&mut self, leg: LegId, on: bool) -> Result<(), EngineError> {
        let l = self.legs.get(&leg).ok_or(EngineError::NoSuchLeg(leg))?;
        if let MediaAttachment::Source(_) = l.attachment {
            let peer = l.peer;
            if let Some(p) = peer {
                if on {
                    if let Some(pl) = self.legs.get_mut(&p) {
                        pl.playing = Some(MediaSource::ComfortNoise);
                    }
                    self.media(MediaCommand::Play {
                        leg: p,
                        source: MediaSource::ComfortNoise,
                    });
                } else {
                    if let Some(pl) = self.legs.get_mut(&p) {
                        pl.playing = Some(MediaSource::Silence);
                    }
                    self.bridge(p, leg);
                }
            }
            return Ok(());
        }
        let span = self.span_of_leg(leg);
        let _entered = span.as_ref().map(tracing::Span::enter);
        tracing::info!(%leg, muted = on, "mute");
        self.media(MediaCommand::Mute { leg, on });
        Ok(())
    }

    /// Sends digits to a leg's party (in what it negotiated).
    pub fn send_dtmf(
        &mut self,
        leg: LegId,
        digits: &str,
        duration: Duration,
    ) -> Result<(), EngineError> {
        if !self.legs.contains_key(&leg) {
            return Err(EngineError::NoSuchLeg(leg));
        }
        let digits: Vec<char> = digits.chars().map(|c| c.to_ascii_uppercase()).collect();
        if let Some(bad) = digits.iter().find(|d| !valid_digit(**d)) {
            return Err(EngineError::BadDigit(*bad));
        }
        for d in digits {
            self.send_digit_to(leg, d, duration);
        }
        Ok(())
    }

    /// Reports a transfer the leg's party asked for (SIP: NOTIFY with a sipfrag of `status`).
    pub fn transfer_progress(&mut self, leg: LegId, status: u16) -> Result<(), EngineError> {
        let kind = self.legs.get(&leg).ok_or(EngineError::NoSuchLeg(leg))?.kind;
        self.leg_cmd(leg, kind, LegCommand::TransferProgress { status });
        Ok(())
    }

    /// Whom a live leg is bridged to.
    pub fn leg_peer(&self, leg: LegId) -> Option<LegId> {
        self.legs.get(&leg)?.peer
    }

    /// The first (caller's) leg of a call, while it is live (and still in that call).
    pub fn caller_leg(&self, uri: &CallUri) -> Option<LegId> {
        let key = self.by_uri.get(uri)?;
        let a = self.calls.get(key)?.a_leg;
        self.legs
            .get(&a)
            .is_some_and(|l| l.call == *key)
            .then_some(a)
    }

    /// The engine's key of a live call (its media placement).
    pub fn call_key(&self, uri: &CallUri) -> Option<CallKey> {
        self.by_uri.get(uri).copied()
    }

    /// Whether the control plane manages the call `leg` belongs to.
    pub fn is_controlled(&self, leg: LegId) -> bool {
        self.legs
            .get(&leg)
            .and_then(|l| self.calls.get(&l.call))
            .is_some_and(|c| c.controlled)
    }

    /// The other party of `leg`: whom it is bridged to, else the only other live leg of its
    /// call.
    pub fn other_leg(&self, leg: LegId) -> Option<LegId> {
        let l = self.legs.get(&leg)?;
        if let Some(p) = l.peer {
            return Some(p);
        }
        let call = self.calls.get(&l.call)?;
        let mut others = call
            .legs
            .iter()
            .copied()
            .filter(|x| *x != leg && self.legs.contains_key(x));
        match (others.next(), others.next()) {
            (Some(o), None) => Some(o),
            _ => None,
        }
    }

    /// Moves an answered leg out of its call into call `to`: the target of an attended
    /// transfer by REFER with Replaces (the transferor's own consultation call) joins the
    /// caller's call, keeping its leg, dialog and outbound RTP stream. It is unbridged from
    /// whoever it was with (both hear silence until bridged again). The call it left is
    /// managed by the control plane from then on (it ends when its last leg does) and ends at
    /// once if no leg is left. The leg's media must already be placed with `to`'s key (see
    /// [`MediaBackend::move_leg`](super::switch::MediaBackend::move_leg)).
    pub fn move_leg(&mut self, now: Instant, leg: LegId, to: &CallUri) -> Result<(), EngineError> {
        let to_key = self.key_of(to)?;
        let l = self.legs.get(&leg).ok_or(EngineError::NoSuchLeg(leg))?;
        if l.phase != Phase::Answered {
            return Err(EngineError::NotNow(leg, "not answered"));
        }
        let from_key = l.call;
        if from_key == to_key {
            return Ok(());
        }
        let old_peer = l.peer;
        let cdr_index = l.cdr_index;
        for x in [Some(leg), old_peer].into_iter().flatten() {
            let Some(xl) = self.legs.get_mut(&x) else {
                continue;
            };
            if xl.peer.is_some_and(|p| p == leg || x == leg) {
                xl.peer = None;
            }
            if matches!(xl.attachment, MediaAttachment::Source(_)) {
                continue;
            }
            xl.playing = Some(MediaSource::Silence);
            self.media(MediaCommand::Play {
                leg: x,
                source: MediaSource::Silence,
            });
        }
        let Some(from) = self.calls.get_mut(&from_key) else {
            return Err(EngineError::NoSuchLeg(leg));
        };
        from.legs.retain(|x| *x != leg);
        if from.current_b == Some(leg) {
            from.current_b = None;
        }
        from.controlled = true;
        let from_uri = from.uri.clone();
        let left_empty = from.legs.is_empty();
        let mut cdr = from.cdr_legs.get(cdr_index).cloned();
        if let Some(c) = from.cdr_legs.get_mut(cdr_index) {
            // It left this call normally (it goes on in the other one).
            c.q850 = Some(16);
        }
        from.span
            .in_scope(|| tracing::info!(%leg, to = %to, "leg moved to another call"));
        let Some(call) = self.calls.get_mut(&to_key) else {
            return Err(EngineError::NoSuchCall(to.clone()));
        };
        call.legs.push(leg);
        if let Some(c) = cdr.as_mut() {
            c.q850 = None;
        }
        let new_index = match cdr {
            Some(c) => {
                call.cdr_legs.push(c);
                call.cdr_legs.len() - 1
            }
            // No record to carry over: nothing of the new call's is overwritten.
            None => usize::MAX,
        };
        call.span
            .in_scope(|| tracing::info!(%leg, from = %from_uri, "leg joined from another call"));
        if let Some(l) = self.legs.get_mut(&leg) {
            l.call = to_key;
            l.cdr_index = new_index;
        }
        self.tell_call_uri(leg);
        if left_empty {
            self.finish_call(
                now,
                from_key,
                EndCause::normal("its last leg moved"),
                "transfer",
            );
        }
        self.drain_internal(now);
        Ok(())
    }

    /// The technology of a live leg.
    pub fn leg_kind(&self, leg: LegId) -> Option<LegKind> {
        self.legs.get(&leg).map(|l| l.kind)
    }

    /// Answers an inbound leg that is still ringing (a caller the control plane queues, so
    /// that it hears comfort audio). Answering an answered leg does nothing.
    pub fn answer(&mut self, now: Instant, leg: LegId) -> Result<(), EngineError> {
        let l = self.legs.get(&leg).ok_or(EngineError::NoSuchLeg(leg))?;
        if l.direction != Direction::Inbound {
            return Err(EngineError::NotNow(leg, "not an inbound leg"));
        }
        let span = self.span_of_leg(leg);
        let _entered = span.as_ref().map(tracing::Span::enter);
        self.answer_leg(now, leg);
        Ok(())
    }

    /// Plays a source to a leg (ringback while a transfer target rings, hold tone, ...).
    pub fn play(&mut self, leg: LegId, source: MediaSource) -> Result<(), EngineError> {
        let l = self.legs.get_mut(&leg).ok_or(EngineError::NoSuchLeg(leg))?;
        l.playing = Some(source.clone());
        let ringing_caller = l.direction == Direction::Inbound && l.phase == Phase::Setup;
        let audible = source != MediaSource::Silence;
        self.media(MediaCommand::Play { leg, source });
        // A caller still in setup hears the tone only as early media (183 with SDP).
        if ringing_caller && audible {
            self.ring_early(leg);
        }
        Ok(())
    }

    /// Re-points the bridge: `a` and `b` (legs of one call) are connected both ways; whoever
    /// each was connected to is left alone (tell it what to hear with [`Engine::play`]).
    pub fn connect(&mut self, now: Instant, a: LegId, b: LegId) -> Result<(), EngineError> {
        let (Some(la), Some(lb)) = (self.legs.get(&a), self.legs.get(&b)) else {
            return Err(EngineError::NoSuchLeg(if self.legs.contains_key(&a) {
                b
            } else {
                a
            }));
        };
        if a == b || la.call != lb.call {
            return Err(EngineError::CannotConnect(a, b));
        }
        let span = self.span_of_leg(a);
        let _entered = span.as_ref().map(tracing::Span::enter);
        if let Some(l) = self.legs.get_mut(&a) {
            l.playing = Some(MediaSource::Silence);
        }
        self.bridge(a, b);
        self.caller_connected(now, a, b);
        // The caller of a call that a control-plane leg answered is answered now too.
        if let Some(l) = self.legs.get(&a)
            && l.direction == Direction::Inbound
            && l.phase != Phase::Answered
        {
            self.answer_leg(now, a);
        }
        Ok(())
    }

    /// Originates a new leg in call `uri` (a transfer target, a consultation); it is not
    /// bridged to anyone until [`Engine::connect`]. Progress arrives as [`LegNotice`]s.
    pub fn originate(
        &mut self,
        now: Instant,
        uri: &CallUri,
        target: OriginateTarget,
        caller: Option<String>,
    ) -> Result<LegId, EngineError> {
        let key = self.key_of(uri)?;
        let (dest, number) = match &target {
            OriginateTarget::Trunk { trunk, number } => {
                if self.trunk(trunk).is_none() {
                    return Err(EngineError::UnknownTrunk(trunk.clone()));
                }
                (Some(Destination::Trunk(trunk.clone())), number.clone())
            }
            OriginateTarget::SipUri(u) => (Some(Destination::Uri(u.clone())), String::new()),
            OriginateTarget::SpanGroup { group, number } => {
                (Some(Destination::SpanGroup(group.clone())), number.clone())
            }
            OriginateTarget::Service(s) => (Some(Destination::Service(*s)), String::new()),
            OriginateTarget::WebRtc(e) => (Some(Destination::WebRtc(e.clone())), String::new()),
            OriginateTarget::Registered { .. } => (None, String::new()),
        };
        let ((kind, t, prefs, dtmf, trunk, propagate), desc) = match (dest, target) {
            (Some(dest), _) => (
                self.resolve(&dest, &number).map_err(|c| match dest {
                    Destination::SpanGroup(_) => EngineError::NoProvider(LegKind::Tdm),
                    Destination::WebRtc(_) => EngineError::NoProvider(LegKind::WebRtc),
                    _ => EngineError::BadTarget(c.text),
                })?,
                dest.to_string(),
            ),
            (
                None,
                OriginateTarget::Registered {
                    user,
                    uri,
                    dest,
                    transport,
                },
            ) => (
                (
                    LegKind::Sip,
                    Target::Sip {
                        uri,
                        dest,
                        transport,
                        credentials: None,
                        trunk: None,
                    },
                    self.cfg.default_codecs.clone(),
                    self.cfg.default_dtmf,
                    None,
                    true,
                ),
                format!("phone:{user}"),
            ),
            (None, t) => return Err(EngineError::BadTarget(format!("{t:?}"))),
        };
        if let Some(c) = caller
            && let Some(call) = self.calls.get_mut(&key)
        {
            call.caller = c;
        }
        let span = self.calls.get(&key).map(|c| c.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let leg = self
            .new_outbound_leg(now, key, kind, t, prefs, dtmf, trunk, propagate, desc)
            .map_err(|c| EngineError::BadTarget(c.text))?;
        self.drain_internal(now);
        Ok(leg)
    }

    /// Adds an inbound leg its provider has already answered (a browser the signalling side
    /// accepted: a web caller, an agent answering in the page) to call `uri`, and attaches its
    /// media. When no call has that URI yet (click-to-call: the control plane numbers the call
    /// before it knows where it goes), the call is created under `uri` with `leg` as its
    /// caller, managed by the control plane (see [`Engine::set_controlled`]) and not routed.
    /// No notice is sent for the answer: whoever adopts the leg knows it is answered.
    ///
    /// # Errors
    /// [`EngineError::NotNow`] when `leg` is already a live leg.
    pub fn adopt_leg(
        &mut self,
        now: Instant,
        uri: &CallUri,
        leg: LegId,
        kind: LegKind,
        attachment: MediaAttachment,
    ) -> Result<(), EngineError> {
        if self.legs.contains_key(&leg) {
            return Err(EngineError::NotNow(leg, "the leg exists already"));
        }
        let desc = format!("{}:{leg}", kind.as_str());
        let wall = rfc3339(self.wall_time(now));
        let cdr_leg = CdrLeg {
            leg,
            kind,
            direction: "inbound",
            peer: desc.clone(),
            codec: None,
            answered: Some(wall),
            q850: None,
            media: None,
        };
        let mut created = false;
        let key = match self.by_uri.get(uri).copied() {
            Some(key) => key,
            None => {
                created = true;
                self.next_call += 1;
                let key = CallKey(self.next_call);
                let span = super::leg::call_span(uri);
                self.stats.calls_total += 1;
                self.calls.insert(
                    key,
                    Call {
                        key,
                        uri: uri.clone(),
                        span,
                        created: now,
                        answered: None,
                        connected: None,
                        caller: desc.clone(),
                        caller_name: None,
                        callee: String::new(),
                        request_uri: format!("{}:control", kind.as_str()),
                        max_forwards: self.cfg.max_forwards,
                        a_leg: leg,
                        legs: Vec::new(),
                        route: None,
                        current_b: None,
                        current_dest: None,
                        in_trunk: None,
                        controlled: true,
                        no_answer_at: None,
                        attempts: Vec::new(),
                        cdr_legs: Vec::new(),
                    },
                );
                self.by_uri.insert(uri.clone(), key);
                self.events.publish(Event::CallCreated {
                    call_uri: uri.clone(),
                    caller: desc.clone(),
                });
                key
            }
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(EngineError::NoSuchCall(uri.clone()));
        };
        let _entered = call.span.clone().entered();
        call.legs.push(leg);
        call.cdr_legs.push(cdr_leg);
        let cdr_index = call.cdr_legs.len() - 1;
        let port = match &attachment {
            MediaAttachment::Port(slot) => Some(slot.clone()),
            _ => None,
        };
        let rtp = attachment == MediaAttachment::Rtp;
        self.legs.insert(
            leg,
            Leg {
                id: leg,
                kind,
                call: key,
                direction: Direction::Inbound,
                phase: Phase::Answered,
                attachment,
                media: if port.is_some() {
                    MediaSlot::Opening
                } else {
                    MediaSlot::None
                },
                offered: None,
                negotiated: None,
                peer: None,
                playing: None,
                trunk: None,
                prefs: self.cfg.default_codecs.clone(),
                dtmf: self.cfg.default_dtmf,
                propagate_hold: true,
                held_by_party: false,
                last_digit: None,
                desc,
                answered_at: Some(now),
                pending_originate: None,
                pending_answer: false,
                pending_early: false,
                cdr_index,
            },
        );
        tracing::info!(leg = %leg, kind = kind.as_str(), "leg adopted (answered by its provider)");
        self.tell_call_uri(leg);
        if created {
            // The caller's provider answered it on the control plane's behalf: the call is
            // answered from here (its time with an agent starts at `connected`).
            self.call_answered(now, key, "control".to_owned());
        }
        if let Some(port) = port {
            self.media(MediaCommand::AttachPort {
                leg,
                call: key,
                port,
            });
        } else if rtp {
            self.ensure_media(leg);
        }
        self.drain_internal(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_validated() {
        assert!(valid_digit('5') && valid_digit('#') && valid_digit('D'));
        assert!(!valid_digit('E') && !valid_digit('x'));
    }
}
