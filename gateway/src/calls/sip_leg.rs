//! SIP legs: a per-leg, sans-IO SIP user agent that provides [`LegKind::Sip`] legs to the call
//! engine. A UAS leg answers an INVITE we received, a UAC leg places one we send; neither knows
//! anything of the other legs of its call — the engine joins them through [`LegEvent`]s and
//! [`LegCommand`]s.
//!
//! What a leg handles by itself, because the gateway anchors media and owns each leg's session:
//! - re-INVITE and UPDATE from the party (hold/resume, address change, codec change) are
//!   answered locally at once with the leg's own media address, and reported as
//!   [`LegEvent::MediaChanged`] / [`LegEvent::Hold`] / [`LegEvent::Resume`]; the engine decides
//!   whether the other leg must hear of it ([`LegCommand::Hold`], [`LegCommand::Reoffer`]);
//! - a re-INVITE of ours that meets the party's (RFC 3261 §14.1 glare, 491) is retried after the
//!   randomised back-off, with whatever state is wanted by then;
//! - CANCEL both ways, BYE, OPTIONS, INFO digits, REFER (202 and NOTIFY progress);
//! - digest authentication as UAS (per-user credentials; trusted networks and trunks skip it)
//!   and as UAC (401/407 from a trunk answered with the credentials the engine passes);
//! - the 2xx retransmission until ACK (RFC 3261 §13.3.1.4), and the rule of §15 that a UAS
//!   sends no BYE before the ACK of its 2xx has arrived or the retransmission gave up: a hang-up
//!   asked for in between waits for the ACK. (Sending the BYE at once is what made the old
//!   B2BUA lose calls under packet loss: the caller got a BYE for a call whose 200 OK it had
//!   not received yet, and the gateway stopped retransmitting that 200.)
//! - rport/received on responses (the transaction layer), and in-dialog requests to a NATed
//!   party sent where its requests came from.
//!
//! The provider is also the **registrar of phones** (when `[[user]]`s are configured): a
//! REGISTER is digest-challenged (MD5: what phones answer) against the users and handled by the
//! sans-IO [`Registrar`] (bindings expire, `Expires: 0` removes them, a user may register only
//! its own address-of-record). Each binding keeps the flow it came on: the datagram source for
//! UDP (a NAT's public side), the connection for TCP/TLS. [`SipLegs::registered_contact`]
//! says where to call a user: its registered Contact as Request-URI, sent to that source or on
//! that connection (at the Contact once the connection closed,
//! [`SipLegs::connection_closed`]). The control plane places agents' phone legs there
//! (`OriginateTarget::Registered`). Without users, REGISTER is answered 405.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::leg::{
    AudioCodec, DigitSource, EndCause, IncomingCall, LegCommand, LegEvent, LegId, LegIds, LegKind,
    LegProvider, LegSource, LocalMedia, MediaAttachment, MediaCaps, MediaDirection,
    NegotiatedMedia, SipTransportKind, Target,
};
use super::routing::IpNet;
use crate::sip::auth::{
    AuthVerdict, DigestAlgorithm, DigestClient, DigestServer, DigestServerConfig,
};
use crate::sip::dialog::{
    AnswerRetransmit, AnswerTimer, Dialog, DialogRole, InDialogReject, InDialogRequest,
    ViaTemplate, glare_retry_delay, uri_socket_addr,
};
use crate::sip::message::{HeaderName, Method, Request, Response, Uri};
use crate::sip::registrar::{Flow, Registrar, RegistrarConfig, RegistrarStats};
use crate::sip::registration::{
    Registration, RegistrationAction, RegistrationConfig, RegistrationState,
};
use crate::sip::sdp::{self, Codec, Direction, MediaConfig, NegotiatedAudio, SessionDescription};
use crate::sip::transaction::{
    Reliability, TimerConfig, TransactionKey, TransactionLayer, TransactionStats, TuEvent,
};
use crate::sip::transport::{ConnectionId, Transport};
use crate::sip::validate::UasPolicy;

/// Methods a SIP leg implements (the Allow header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY";

/// What the transaction layer lets through to SIP legs: the methods legs handle (REGISTER goes
/// to the phone registrar when users are configured; SUBSCRIBE, PUBLISH and MESSAGE, and
/// REGISTER without users, reach us only to be answered 405 with `Allow`), the option tags
/// legs implement, and the bodies they read.
pub fn leg_policy() -> UasPolicy {
    let mut p = UasPolicy::gateway();
    p.methods = vec![
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Options,
        Method::Info,
        Method::Update,
        Method::Refer,
        Method::Notify,
        Method::Register,
        Method::Subscribe,
        Method::Publish,
        Method::Message,
    ];
    p.option_tags = vec!["norefersub".to_owned()];
    p
}

/// Where a registered phone is reached: the Request-URI is its registered Contact, the next
/// hop the address its REGISTER came from (its NAT binding, or its connection for TCP/TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredContact {
    /// The registered Contact URI (the INVITE's Request-URI).
    pub uri: String,
    /// Where the REGISTER came from: the INVITE goes there.
    pub dest: SocketAddr,
    /// The transport it registered over.
    pub transport: SipTransportKind,
}

/// A configured SIP peer (trunk, PBX) the provider recognises and may ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipPeer {
    /// Its name (the trunk name of routes and CDRs).
    pub name: String,
    /// Its address.
    pub address: SocketAddr,
    /// Transport to reach it.
    pub transport: SipTransportKind,
    /// Calls from its address are accepted without authentication.
    pub inbound: bool,
    /// OPTIONS keepalive interval (`None`: no pings).
    pub keepalive: Option<Duration>,
}

/// Settings of the SIP leg provider.
#[derive(Debug, Clone)]
pub struct SipLegsConfig {
    /// Our UDP address (Via sent-by and Contact of UDP legs).
    pub udp: SocketAddr,
    /// Our TCP address, if listening.
    pub tcp: Option<SocketAddr>,
    /// Our TLS address, if listening.
    pub tls: Option<SocketAddr>,
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Seed for tags, branches and Call-IDs (random in production, fixed in tests).
    pub seed: [u8; 32],
    /// `User-Agent` / `Server` header value.
    pub user_agent: String,
    /// Configured peers (trunks).
    pub peers: Vec<SipPeer>,
    /// Networks whose calls need no authentication.
    pub trusted: Vec<IpNet>,
    /// Digest users (phones) that may call and register after authenticating:
    /// (user, password). With none, REGISTER is answered 405.
    pub users: Vec<(String, String)>,
    /// Digest realm.
    pub realm: String,
    /// Peers the gateway registers to (REGISTER with refresh, RFC 3261 §10.2).
    pub registrations: Vec<PeerRegistration>,
}

/// A registration of the gateway at a peer (a PBX or a carrier's registrar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRegistration {
    /// The peer's name (a [`SipPeer`]); the REGISTER goes to its address.
    pub peer: String,
    /// Host of the registrar URI and the address-of-record (default: the peer's address).
    pub host: Option<String>,
    /// User part of the address-of-record and Contact, and the digest user name.
    pub user: String,
    /// Digest password (`None`: a challenge fails the registration).
    pub password: Option<String>,
    /// Requested lifetime of the binding.
    pub expires: Duration,
}

/// Where a registration of the gateway stands (for operators and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationInfo {
    /// The peer's name.
    pub peer: String,
    /// Where it is.
    pub state: RegistrationState,
    /// Whether a binding is in force now.
    pub registered: bool,
    /// The registrar's last final status.
    pub last_status: Option<u16>,
    /// Bindings the registrar accepted (the first one and every refresh).
    pub accepted: u64,
    /// The lifetime the registrar granted last.
    pub granted: Option<Duration>,
}

#[derive(Debug)]
struct RegSlot {
    peer: usize,
    reg: Registration,
    dest: SocketAddr,
    transport: Transport,
    accepted: u64,
    granted: Option<Duration>,
}

impl SipLegsConfig {
    /// A provider on `udp` that trusts loopback and knows no peers (tests, tools).
    pub fn new(udp: SocketAddr) -> Self {
        SipLegsConfig {
            udp,
            tcp: None,
            tls: None,
            timers: TimerConfig::default(),
            seed: [7; 32],
            user_agent: format!("spanbridge/{}", env!("CARGO_PKG_VERSION")),
            peers: Vec::new(),
            trusted: vec![IpNet::host(IpAddr::from([127, 0, 0, 1]))],
            users: Vec::new(),
            realm: "spanbridge".to_owned(),
            registrations: Vec::new(),
        }
    }
}

/// Bytes to send, with the transport to use when no connection to `dest` is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTransmit {
    /// Where.
    pub dest: SocketAddr,
    /// Over what (an open connection to `dest` is reused whatever this says).
    pub transport: Transport,
    /// The message.
    pub bytes: Vec<u8>,
}

/// Counters for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipLegStats {
    /// INVITEs that became legs.
    pub incoming: u64,
    /// Legs we originated.
    pub outgoing: u64,
    /// Requests refused before a leg existed (ACL, auth, validation, loops).
    pub refused: u64,
    /// INVITEs challenged for credentials.
    pub challenged: u64,
    /// Legs ended because the party never ACKed our 2xx.
    pub ack_timeouts: u64,
    /// Re-INVITE/UPDATE offers received and answered.
    pub reoffers_received: u64,
    /// Re-INVITEs we sent.
    pub reoffers_sent: u64,
    /// Our re-INVITEs that met glare (491) and were retried.
    pub glare: u64,
    /// Digits received by INFO.
    pub info_digits: u64,
    /// BYEs that waited for the ACK of our 2xx (RFC 3261 §15).
    pub byes_deferred: u64,
}

/// A peer's reachability changed (OPTIONS keepalive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's name.
    pub name: String,
    /// Whether it answered the last ping.
    pub up: bool,
    /// Round-trip time of the last answered ping.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uas,
    Uac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// UAS: INVITE received, no final response yet. UAC: INVITE sent, no final response.
    Setup,
    /// The initial INVITE got a 2xx.
    Answered,
    /// The engine has forgotten the leg; we finish our signalling (BYE, CANCEL, ACK wait).
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    Bye,
    Reinvite,
    Other,
    StrayBye,
    Ping(usize),
    Register(usize),
}

#[derive(Debug)]
struct OutReinvite {
    offer: SessionDescription,
    hold: bool,
    codecs: Vec<Codec>,
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    role: Role,
    phase: Phase,
    transport: Transport,
    peer: SocketAddr,
    via: ViaTemplate,
    call_id: String,
    local_tag: String,
    invite: Request,
    invite_key: Option<TransactionKey>,
    invite_pending: bool,
    dialog: Option<Dialog>,
    local_addr: Option<SocketAddr>,
    prefs: Vec<Codec>,
    telephone_event: bool,
    ptime: u32,
    remote_offer: Option<SessionDescription>,
    local_sdp: Option<SessionDescription>,
    sdp_id: u64,
    sdp_version: u64,
    negotiated: Option<NegotiatedAudio>,
    awaiting_ack_answer: bool,
    alerted: bool,
    early_answer_sent: bool,
    got_provisional: bool,
    cancel_wanted: bool,
    cancel_sent: bool,
    timer_c_fired: bool,
    answer: Option<AnswerRetransmit>,
    answer_is_initial: bool,
    bye_after_ack: Option<EndCause>,
    bye_key: Option<TransactionKey>,
    digest: Option<DigestClient>,
    credentials: Option<(String, String)>,
    want_hold: bool,
    held: bool,
    remote_hold: bool,
    want_codecs: Option<Vec<Codec>>,
    reinvite_out: Option<OutReinvite>,
    reinvite_retry_at: Option<Instant>,
    refer_notify: bool,
    last_ack: Option<(SocketAddr, Vec<u8>)>,
    /// The deadline last put on the provider's leg timer heap.
    scheduled: Option<Instant>,
    /// The `call` span (with the call's URI) this leg's log lines run in; none until the
    /// engine says which call the leg belongs to ([`LegCommand::CallUri`]).
    span: tracing::Span,
}

impl Leg {
    /// When this leg's own timers (2xx retransmission, re-INVITE retry) next need it.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.answer
                .as_ref()
                .and_then(AnswerRetransmit::poll_timeout),
            self.reinvite_retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn finished(&self) -> bool {
        self.phase == Phase::Closing
            && self.bye_key.is_none()
            && self.bye_after_ack.is_none()
            && !(self.role == Role::Uac && self.invite_pending)
    }

    fn reliability(&self) -> Reliability {
        self.transport.reliability()
    }

    /// Where in-dialog requests go: the first route, else the party's Contact — unless the
    /// party is behind NAT (its Contact is not where it sends from) or on a stream we accepted,
    /// then back to where its requests come from.
    fn in_dialog_dest(&self) -> SocketAddr {
        let Some(d) = &self.dialog else {
            return self.peer;
        };
        if !d.route_set().is_empty() {
            return uri_socket_addr(d.next_hop()).unwrap_or(self.peer);
        }
        if self.role == Role::Uas {
            if self.transport != Transport::Udp {
                return self.peer;
            }
            return match uri_socket_addr(d.remote_target()) {
                Some(a) if a.ip() == self.peer.ip() => a,
                _ => self.peer,
            };
        }
        uri_socket_addr(d.remote_target()).unwrap_or(self.peer)
    }
}

/// The SIP leg provider. See the module docs.
#[derive(Debug)]
pub struct SipLegs {
    config: SipLegsConfig,
    ids: LegIds,
    layer: TransactionLayer,
    digest: DigestServer,
    /// Phones registering to us (`None` when no digest users are configured).
    registrar: Option<Registrar>,
    /// The stream connection of the message being handled (for registration flows).
    inbound_connection: Option<ConnectionId>,
    legs: HashMap<LegId, Leg>,
    by_dialog: HashMap<(String, String), LegId>,
    by_initial: HashMap<(String, String), LegId>,
    by_server_invite: HashMap<TransactionKey, LegId>,
    by_client: HashMap<TransactionKey, (LegId, Purpose)>,
    by_call_id: HashMap<String, LegId>,
    dest_transport: HashMap<SocketAddr, Transport>,
    events: VecDeque<(LegId, LegEvent)>,
    transmits: VecDeque<SipTransmit>,
    counter: u64,
    stats: SipLegStats,
    pings: Vec<PingState>,
    peer_status: VecDeque<PeerStatus>,
    /// Registrations not started yet (they start at the first timeout, `created`).
    regs_pending: bool,
    created: Instant,
    regs: Vec<RegSlot>,
    /// ACKs of finished UAC legs, resent for a retransmitted 2xx until the INVITE transaction
    /// ends (our ACK may have been lost).
    orphan_acks: HashMap<TransactionKey, (SocketAddr, Transport, Vec<u8>)>,
    /// Leg deadlines, earliest first; an entry whose leg's deadline has moved is skipped when
    /// it comes up. Keeps `poll_timeout` independent of the number of legs.
    leg_timers: BinaryHeap<Reverse<(Instant, LegId)>>,
    /// Call spans told for outbound legs before their `Originate` (taken by it).
    pending_spans: HashMap<LegId, tracing::Span>,
}

#[derive(Debug)]
struct PingState {
    next_at: Instant,
    sent_at: Option<Instant>,
    up: Option<bool>,
}

/// A command's name for log lines.
fn command_name(c: &LegCommand) -> &'static str {
    match c {
        LegCommand::CallUri { .. } => "call-uri",
        LegCommand::Originate { .. } => "originate",
        LegCommand::Ring { .. } => "ring",
        LegCommand::Answer { .. } => "answer",
        LegCommand::Reject { .. } => "reject",
        LegCommand::HangUp { .. } => "hang-up",
        LegCommand::Hold => "hold",
        LegCommand::Resume => "resume",
        LegCommand::Reoffer { .. } => "reoffer",
        LegCommand::SendDigit { .. } => "send-digit",
        LegCommand::TransferProgress { .. } => "transfer-progress",
    }
}

/// The Request-URI of a SIP target, for log lines.
fn target_uri(t: &Target) -> &str {
    match t {
        Target::Sip { uri, .. } => uri,
        _ => "?",
    }
}

fn sdp_codec(c: AudioCodec) -> Option<Codec> {
    match c {
        AudioCodec::Pcmu => Some(Codec::Pcmu),
        AudioCodec::Pcma => Some(Codec::Pcma),
        AudioCodec::Opus => Some(Codec::Opus),
        AudioCodec::L16 => None,
    }
}

fn leg_codec(c: Codec) -> AudioCodec {
    match c {
        Codec::Pcmu => AudioCodec::Pcmu,
        Codec::Pcma => AudioCodec::Pcma,
        Codec::Opus => AudioCodec::Opus,
    }
}

fn leg_direction(d: Direction) -> MediaDirection {
    match d {
        Direction::SendRecv => MediaDirection::SendRecv,
        Direction::SendOnly => MediaDirection::SendOnly,
        Direction::RecvOnly => MediaDirection::RecvOnly,
        Direction::Inactive => MediaDirection::Inactive,
    }
}

fn negotiated_media(n: &NegotiatedAudio) -> NegotiatedMedia {
    let usable = n.remote_rtp.port() != 0 && !n.remote_rtp.ip().is_unspecified();
    let remote = usable.then_some(n.remote_rtp);
    NegotiatedMedia {
        codec: leg_codec(n.codec),
        payload_type: n.pt,
        telephone_event: n.telephone_event_pt,
        ptime_ms: u16::try_from(n.ptime).unwrap_or(20),
        remote,
        remote_rtcp: if n.rtcp_mux {
            None
        } else {
            remote.map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1)))
        },
        rtcp_mux: n.rtcp_mux,
        direction: leg_direction(n.direction),
    }
}

fn parse_sdp(body: &[u8]) -> Option<SessionDescription> {
    let text = std::str::from_utf8(body).ok()?;
    SessionDescription::parse(text).ok()
}

fn has_sdp(headers: &crate::sip::message::Headers, body: &[u8]) -> bool {
    !body.is_empty()
        && headers
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|t| t.eq_ignore_ascii_case("application/sdp"))
}

/// What the party offered, in our terms (`None` if it offered no audio we know).
fn caps_of(offer: &SessionDescription) -> Option<MediaCaps> {
    let m = offer.audio()?;
    let codecs: Vec<AudioCodec> = m.codecs().into_iter().map(|(c, _)| leg_codec(c)).collect();
    if codecs.is_empty() {
        return None;
    }
    Some(MediaCaps {
        codecs,
        telephone_event: m.telephone_event(8000).is_some(),
        ptime_ms: m.ptime.and_then(|p| u16::try_from(p).ok()).unwrap_or(20),
    })
}

/// The party's direction toward us says it holds us: it will not receive (sendonly, inactive)
/// or gave the RFC 2543 null address.
fn offer_holds(offer: &SessionDescription) -> bool {
    let Some(m) = offer.audio() else {
        return false;
    };
    let dir = offer.direction_of(m);
    let null = offer.address_of(m).is_some_and(|ip| ip.is_unspecified());
    null || !dir.receives()
}

/// The user part of a URI (empty if none).
fn user_of(uri: &Uri) -> String {
    uri.sip_parts()
        .and_then(|p| p.user.map(str::to_owned))
        .unwrap_or_else(|| {
            // tel:+1555... carries the number after the scheme.
            let s = uri.as_str();
            match s.split_once(':') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tel") => {
                    rest.split(';').next().unwrap_or_default().to_owned()
                }
                _ => String::new(),
            }
        })
}

/// A user part safe to put in our URIs.
fn sanitize_user(s: &str) -> String {
    let out: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+*#._-!~".contains(*c))
        .take(64)
        .collect();
    if out.is_empty() {
        "anonymous".to_owned()
    } else {
        out
    }
}

fn sanitize_display(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\r' | '\n'))
        .take(64)
        .collect()
}

/// `Reason: Q.850;cause=N` (RFC 3326), if the message carries one.
fn reason_cause(headers: &crate::sip::message::Headers) -> Option<u8> {
    let name = HeaderName::Other("Reason".to_owned());
    for v in headers.get_all(&name) {
        for item in v.split(',') {
            let mut parts = item.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|p| p.eq_ignore_ascii_case("Q.850"))
            {
                continue;
            }
            for p in parts {
                if let Some((k, val)) = p.split_once('=')
                    && k.trim().eq_ignore_ascii_case("cause")
                    && let Ok(c) = val.trim().parse::<u8>()
                    && c <= 127
                {
                    return Some(c);
                }
            }
        }
    }
    None
}

fn reason_header(cause: &EndCause) -> String {
    let text = sanitize_display(&cause.text);
    format!("Q.850;cause={};text=\"{text}\"", cause.q850)
}

/// A DTMF digit in an INFO body (`application/dtmf-relay` or `application/dtmf`).
pub fn parse_dtmf_info(content_type: &str, body: &[u8]) -> Option<(char, Duration)> {
    let text = std::str::from_utf8(body).ok()?;
    let digit_of = |s: &str| -> Option<char> {
        let s = s.trim();
        match s {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => {
                let mut cs = s.chars();
                let c = cs.next()?.to_ascii_uppercase();
                (cs.next().is_none() && (c.is_ascii_digit() || "*#ABCD".contains(c))).then_some(c)
            }
        }
    };
    if content_type.eq_ignore_ascii_case("application/dtmf-relay") {
        let mut digit = None;
        let mut duration = Duration::from_millis(100);
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "signal" => digit = digit_of(v),
                "duration" => {
                    if let Ok(ms) = v.trim().parse::<u64>() {
                        duration = Duration::from_millis(ms.clamp(40, 5000));
                    }
                }
                _ => {}
            }
        }
        return digit.map(|d| (d, duration));
    }
    if content_type.eq_ignore_ascii_case("application/dtmf") {
        return digit_of(text).map(|d| (d, Duration::from_millis(100)));
    }
    None
}

impl SipLegs {
    /// A provider with no legs, numbering new legs with `ids`.
    pub fn new(config: SipLegsConfig, ids: LegIds) -> Self {
        let mut digest = DigestServer::new(
            DigestServerConfig {
                realm: config.realm.clone(),
                ..DigestServerConfig::default()
            },
            config.seed,
        );
        for (u, p) in &config.users {
            digest.set_user(u, p);
        }
        let registrar = (!config.users.is_empty()).then(|| {
            // Its own nonces (another seed): a REGISTER's challenge is not an INVITE's.
            let mut seed = config.seed;
            seed[0] ^= 0x5a;
            let mut d = DigestServer::new(
                DigestServerConfig {
                    realm: config.realm.clone(),
                    // MD5 only, as for SIP WebSocket clients: phones answer the first
                    // challenge and many know no other algorithm (baresip 1.0 fails a
                    // SHA-256 challenge with ENOSYS, SIPp 3.6 refuses it).
                    algorithms: vec![DigestAlgorithm::Md5],
                    ..DigestServerConfig::default()
                },
                seed,
            );
            for (u, p) in &config.users {
                d.set_user(u, p);
            }
            Registrar::new(RegistrarConfig::default(), d)
        });
        let mut dest_transport = HashMap::new();
        for p in &config.peers {
            let t = match p.transport {
                SipTransportKind::Udp => Transport::Udp,
                SipTransportKind::Tcp => Transport::Tcp,
                SipTransportKind::Tls => Transport::Tls,
            };
            if t != Transport::Udp {
                dest_transport.insert(p.address, t);
            }
        }
        let now = Instant::now();
        let pings = config
            .peers
            .iter()
            .map(|_| PingState {
                next_at: now,
                sent_at: None,
                up: None,
            })
            .collect();
        let mut layer = TransactionLayer::new(config.timers);
        layer.set_policy(Some(leg_policy()));
        SipLegs {
            layer,
            digest,
            registrar,
            inbound_connection: None,
            config,
            ids,
            legs: HashMap::new(),
            by_dialog: HashMap::new(),
            by_initial: HashMap::new(),
            by_server_invite: HashMap::new(),
            by_client: HashMap::new(),
            by_call_id: HashMap::new(),
            dest_transport,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            counter: 0,
            stats: SipLegStats::default(),
            pings,
            peer_status: VecDeque::new(),
            regs_pending: true,
            created: now,
            regs: Vec::new(),
            orphan_acks: HashMap::new(),
            leg_timers: BinaryHeap::new(),
            pending_spans: HashMap::new(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &SipLegStats {
        &self.stats
    }

    /// Transaction-layer counters (malformed messages, retransmissions).
    pub fn transaction_stats(&self) -> &TransactionStats {
        self.layer.stats()
    }

    /// Live transactions (they outlive legs by their completion timers).
    pub fn transactions(&self) -> usize {
        self.layer.len()
    }

    /// Where registered phone `user` is reached now: its most recent live binding over UDP,
    /// TCP or TLS (`None` when it is not registered, or only over a WebSocket, which this
    /// provider does not serve).
    pub fn registered_contact(&self, now: Instant, user: &str) -> Option<RegisteredContact> {
        let reg = self.registrar.as_ref()?;
        reg.lookup_user(now, user).into_iter().find_map(|t| {
            // The flow it registered on: its source address is what a NAT lets back in (UDP),
            // its connection while that is open (TCP, TLS); a closed connection leaves the
            // Contact's address.
            let flow = t.flow.unwrap_or(t.registered_from);
            let transport = match flow.transport {
                Transport::Udp => SipTransportKind::Udp,
                Transport::Tcp => SipTransportKind::Tcp,
                Transport::Tls => SipTransportKind::Tls,
                Transport::Ws | Transport::Wss => return None,
            };
            let dest = if flow.transport == Transport::Udp || flow.connection.is_some() {
                flow.remote
            } else {
                uri_socket_addr(&t.uri)?
            };
            Some(RegisteredContact {
                uri: t.uri.to_string(),
                dest,
                transport,
            })
        })
    }

    /// Live registrations of phones (0 when no users are configured).
    pub fn registered_bindings(&self) -> usize {
        self.registrar.as_ref().map_or(0, Registrar::binding_count)
    }

    /// The phone registrar's counters (`None` when no users are configured).
    pub fn registrar_stats(&self) -> Option<&RegistrarStats> {
        self.registrar.as_ref().map(Registrar::stats)
    }

    /// The leg a SIP Call-ID belongs to (for traces).
    pub fn leg_of_call_id(&self, call_id: &str) -> Option<LegId> {
        self.by_call_id.get(call_id).copied()
    }

    /// The live leg whose dialog a received Replaces names (RFC 3891), read either way round:
    /// as the recipient of an INVITE with it would (to-tag = our tag: a dialog of ours with the
    /// transferor) or as the peer of our dialog sees it (to-tag = the peer's tag: a dialog of
    /// ours with the target). `Err` is the RFC 3891 §3 status: 481 for no such (or an early)
    /// dialog, 486 for a confirmed one named `early-only`, 603 for one already ending.
    pub fn leg_of_replaces(&self, r: &crate::sip::refer::Replaces) -> Result<LegId, u16> {
        let candidates = [
            (&r.to_tag, false), // our local tag is the to-tag
            (&r.from_tag, true),
        ];
        for (tag, reversed) in candidates {
            let Some(id) = self.by_dialog.get(&(r.call_id.clone(), tag.clone())) else {
                continue;
            };
            let Some(d) = self.legs.get(id).and_then(|l| l.dialog.as_ref()) else {
                continue;
            };
            let ours = d.id();
            let named = if reversed {
                ours.remote_tag == r.to_tag
            } else {
                ours.remote_tag == r.from_tag
            };
            if !named || ours.call_id != r.call_id {
                continue;
            }
            return match d.state() {
                crate::sip::dialog::DialogState::Confirmed if r.early_only => Err(486),
                crate::sip::dialog::DialogState::Confirmed => Ok(*id),
                crate::sip::dialog::DialogState::Early => Err(481),
                crate::sip::dialog::DialogState::Terminated => Err(603),
            };
        }
        Err(481)
    }

    /// The Call-ID of a leg.
    pub fn call_id_of(&self, leg: LegId) -> Option<&str> {
        self.legs.get(&leg).map(|l| l.call_id.as_str())
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        let t = self.layer.poll_transmit()?;
        let transport = self
            .dest_transport
            .get(&t.dest)
            .copied()
            .unwrap_or(Transport::Udp);
        Some(SipTransmit {
            dest: t.dest,
            transport,
            bytes: t.bytes,
        })
    }

    /// The next change of a peer's reachability.
    pub fn poll_peer_status(&mut self) -> Option<PeerStatus> {
        self.peer_status.pop_front()
    }

    /// Feeds a message received from `source` over `transport`.
    pub fn handle_received(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: SocketAddr,
        transport: Transport,
    ) {
        self.handle_received_on(now, bytes, source, transport, None);
    }

    /// As [`SipLegs::handle_received`], for a message that came on stream connection
    /// `connection` (a phone registering over TCP/TLS is reached on that connection while it
    /// is open, see [`SipLegs::connection_closed`]).
    pub fn handle_received_on(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: SocketAddr,
        transport: Transport,
        connection: Option<ConnectionId>,
    ) {
        self.layer
            .handle_datagram(now, bytes, source, transport.reliability());
        if transport != Transport::Udp {
            self.dest_transport.insert(source, transport);
        }
        self.inbound_connection = connection;
        self.run(now);
        self.inbound_connection = None;
    }

    /// Stream connection `id` closed: phones registered on it are reached at their Contact
    /// from now on (or, for flows only that connection reaches, not at all).
    pub fn connection_closed(&mut self, id: ConnectionId) {
        if let Some(r) = self.registrar.as_mut() {
            r.connection_closed(id);
        }
    }

    fn token(&mut self) -> [u8; 32] {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(self.config.seed);
        h.update(self.counter.to_be_bytes());
        h.finalize().into()
    }

    fn hex(&mut self, len: usize) -> String {
        let t = self.token();
        t.iter()
            .take(len.div_ceil(2))
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.hex(16))
    }

    fn random_u32(&mut self) -> u32 {
        let t = self.token();
        u32::from_be_bytes([t[0], t[1], t[2], t[3]])
    }

    fn local_addr_for(&self, t: Transport) -> Option<SocketAddr> {
        match t {
            Transport::Udp => Some(self.config.udp),
            Transport::Tcp => self.config.tcp,
            Transport::Tls => self.config.tls,
            // WebSocket connections are accepted, never opened by us: no local address.
            Transport::Ws | Transport::Wss => None,
        }
    }

    fn contact_for(&self, t: Transport) -> Option<Uri> {
        let addr = self.local_addr_for(t)?;
        let text = match t {
            Transport::Udp => format!("sip:gw@{addr}"),
            Transport::Tcp => format!("sip:gw@{addr};transport=tcp"),
            // `sip:` with transport=tls, not `sips:` (RFC 5630 §3.1.3: a request that came with
            // a `sip:` URI over TLS gets a `sip:` Contact; many UAs cannot send to `sips:`).
            Transport::Tls => format!("sip:gw@{addr};transport=tls"),
            Transport::Ws => format!("sip:gw@{addr};transport=ws"),
            Transport::Wss => format!("sips:gw@{addr};transport=wss"),
        };
        Uri::parse(&text).ok()
    }

    fn emit(&mut self, leg: LegId, ev: LegEvent) {
        self.events.push_back((leg, ev));
    }

    fn push_raw(&mut self, dest: SocketAddr, transport: Transport, bytes: Vec<u8>) {
        self.transmits.push_back(SipTransmit {
            dest,
            transport,
            bytes,
        });
    }

    fn respond(&mut self, now: Instant, key: &TransactionKey, mut resp: Response) {
        resp.headers
            .push(HeaderName::Server, self.config.user_agent.clone());
        // Fails only if the transaction already ended; nothing more can be done then.
        let _ = self.layer.send_response(now, key, resp);
    }

    fn answer_plain(&mut self, now: Instant, key: &TransactionKey, req: &Request, status: u16) {
        let mut resp = Response::for_request(req, status);
        let tag = self.hex(8);
        resp.ensure_to_tag(&tag);
        if matches!(status, 405 | 501) || req.method == Method::Options {
            resp.headers.push(HeaderName::Allow, ALLOW);
        }
        if req.method == Method::Options && status == 200 {
            resp.headers.push(HeaderName::Accept, "application/sdp");
        }
        self.respond(now, key, resp);
    }

    fn send_request(
        &mut self,
        now: Instant,
        leg: &Leg,
        req: Request,
        dest: SocketAddr,
        purpose: Purpose,
    ) -> Option<TransactionKey> {
        match self.layer.send_request(now, req, dest, leg.reliability()) {
            Ok(k) => {
                self.by_client.insert(k.clone(), (leg.id, purpose));
                Some(k)
            }
            Err(_) => None,
        }
    }

    fn take(&mut self, id: LegId) -> Option<Leg> {
        self.legs.remove(&id)
    }

    /// Puts a leg back, or drops it and its indexes if its work is done.
    fn put(&mut self, leg: Leg) {
        if leg.finished() {
            tracing::debug!(parent: &leg.span, leg = %leg.id, call_id = %leg.call_id, "SIP leg closed");
            if let (Some(k), Some((dest, bytes))) = (&leg.invite_key, &leg.last_ack)
                && leg.role == Role::Uac
            {
                self.orphan_acks
                    .insert(k.clone(), (*dest, leg.transport, bytes.clone()));
            }
            self.by_dialog
                .remove(&(leg.call_id.clone(), leg.local_tag.clone()));
            if let Some(k) = &leg.invite_key {
                self.by_server_invite.remove(k);
            }
            self.by_call_id.remove(&leg.call_id);
            self.by_initial.retain(|_, v| *v != leg.id);
            self.by_client.retain(|_, (l, _)| *l != leg.id);
            if leg.transport != Transport::Udp
                && !self.config.peers.iter().any(|p| p.address == leg.peer)
                && !self.legs.values().any(|l| l.peer == leg.peer)
            {
                self.dest_transport.remove(&leg.peer);
            }
            return;
        }
        let mut leg = leg;
        let next = leg.next_deadline();
        if let Some(at) = next
            && next != leg.scheduled
        {
            self.leg_timers.push(Reverse((at, leg.id)));
        }
        leg.scheduled = next;
        self.legs.insert(leg.id, leg);
    }

    fn run(&mut self, now: Instant) {
        while let Some(ev) = self.layer.poll_event() {
            match ev {
                TuEvent::Request {
                    key,
                    request,
                    source,
                } => self.on_request(now, key, request, source),
                TuEvent::Ack { request, .. } => self.on_ack(now, &request),
                TuEvent::Cancelled { invite } => self.on_cancelled(now, &invite),
                TuEvent::Response { key, response } => self.on_response(now, &key, response),
                TuEvent::Timeout { key } => self.on_timeout(now, &key),
                TuEvent::Terminated { key } => {
                    self.orphan_acks.remove(&key);
                    if key.role == crate::sip::transaction::Role::Client {
                        self.on_client_terminated(&key);
                    }
                }
            }
        }
    }

    fn on_client_terminated(&mut self, key: &TransactionKey) {
        let Some((id, purpose)) = self.by_client.remove(key) else {
            return;
        };
        let Some(mut leg) = self.take(id) else {
            return;
        };
        match purpose {
            Purpose::Invite if leg.invite_key.as_ref() == Some(key) => leg.invite_pending = false,
            Purpose::Bye if leg.bye_key.as_ref() == Some(key) => leg.bye_key = None,
            _ => {}
        }
        self.put(leg);
    }

    // ----- requests -------------------------------------------------------------------------

    fn on_request(&mut self, now: Instant, key: TransactionKey, req: Request, source: SocketAddr) {
        let to_tag = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));
        let Ok(call_id) = req.headers.call_id().map(str::to_owned) else {
            return;
        };
        if let Some(tag) = to_tag {
            match self.by_dialog.get(&(call_id, tag)).copied() {
                Some(id) => self.on_in_dialog(now, id, key, req, source),
                None => self.answer_plain(now, &key, &req, 481),
            }
            return;
        }
        match req.method {
            Method::Invite => self.on_new_invite(now, key, req, source),
            Method::Options => self.answer_plain(now, &key, &req, 200),
            Method::Register if self.registrar.is_some() => {
                self.on_register(now, &key, &req, source)
            }
            Method::Register | Method::Subscribe | Method::Publish | Method::Message => {
                self.stats.refused += 1;
                self.answer_plain(now, &key, &req, 405);
            }
            Method::Extension(_) => {
                self.stats.refused += 1;
                self.answer_plain(now, &key, &req, 501);
            }
            _ => self.answer_plain(now, &key, &req, 481),
        }
    }

    /// A phone's REGISTER (digest-authenticated against the configured users; `Expires: 0`
    /// removes the binding). The binding remembers the flow, so calls to the phone go back
    /// where the REGISTER came from.
    fn on_register(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        req: &Request,
        source: SocketAddr,
    ) {
        let flow = Flow {
            transport: self.transport_of(source),
            remote: source,
            connection: self.inbound_connection,
        };
        let Some(reg) = self.registrar.as_mut() else {
            return;
        };
        let resp = reg.handle_register(now, req, flow);
        let user = req
            .headers
            .to()
            .ok()
            .map(|t| user_of(&t.uri))
            .unwrap_or_default();
        match resp.status {
            200 => {
                tracing::info!(%source, user = %sanitize_user(&user), bindings = reg.binding_count(), "phone REGISTER accepted")
            }
            401 => tracing::debug!(%source, "phone REGISTER challenged"),
            s => {
                tracing::info!(%source, user = %sanitize_user(&user), status = s, "phone REGISTER refused")
            }
        }
        self.respond(now, key, resp);
    }

    fn transport_of(&self, source: SocketAddr) -> Transport {
        self.dest_transport
            .get(&source)
            .copied()
            .unwrap_or(Transport::Udp)
    }

    fn peer_for(&self, source: SocketAddr) -> Option<&SipPeer> {
        self.config
            .peers
            .iter()
            .find(|p| p.address == source)
            .or_else(|| {
                let mut same_ip = self
                    .config
                    .peers
                    .iter()
                    .filter(|p| p.address.ip() == source.ip());
                let first = same_ip.next();
                // Only unambiguous by address: two trunks on one host need distinct ports.
                if same_ip.next().is_some() {
                    None
                } else {
                    first
                }
            })
    }

    fn on_new_invite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        req: Request,
        source: SocketAddr,
    ) {
        let refuse = |me: &mut Self, status: u16| {
            me.stats.refused += 1;
            me.answer_plain(now, &key, &req, status);
        };
        let (Ok(call_id), Ok(from)) = (req.headers.call_id(), req.headers.from()) else {
            return refuse(self, 400);
        };
        let from_tag = from.tag().unwrap_or_default().to_owned();
        let initial = (call_id.to_owned(), from_tag);
        if self.by_initial.contains_key(&initial) {
            // Same Call-ID and From tag, another branch: a loop or a spiral back to us.
            return refuse(self, 482);
        }
        // Method, scheme, Max-Forwards, merged-request, Require and body-type checks were
        // made by the transaction layer against [`leg_policy`].
        let peer = self.peer_for(source).cloned();
        let trusted = peer.as_ref().is_some_and(|p| p.inbound)
            || self.config.trusted.iter().any(|n| n.contains(source.ip()));
        let mut authenticated = None;
        if !trusted {
            if self.config.users.is_empty() {
                tracing::info!(%source, "INVITE refused: source not in any ACL or trunk");
                return refuse(self, 403);
            }
            match self.digest.verify(now, &req, false) {
                AuthVerdict::Authorized { username } => authenticated = Some(username),
                AuthVerdict::Challenge { failure, stale } => {
                    self.stats.challenged += 1;
                    tracing::debug!(%source, %failure, "INVITE challenged");
                    let mut resp = self.digest.challenge(now, &req, stale, false);
                    let tag = self.hex(8);
                    resp.ensure_to_tag(&tag);
                    return self.respond(now, &key, resp);
                }
            }
        }
        let offer = if has_sdp(&req.headers, &req.body) {
            match parse_sdp(&req.body) {
                Some(o) => Some(o),
                None => return refuse(self, 400),
            }
        } else {
            None
        };
        let caps = match &offer {
            Some(o) => match caps_of(o) {
                Some(c) => Some(c),
                None => return refuse(self, 488),
            },
            None => None,
        };
        let transport = self.transport_of(source);
        let (Some(sent_by), Some(contact)) =
            (self.local_addr_for(transport), self.contact_for(transport))
        else {
            return refuse(self, 500);
        };
        let via = ViaTemplate {
            transport: transport.via_token().to_owned(),
            sent_by: sent_by.to_string(),
        };
        let tag = self.hex(8);
        let Ok(dialog) = Dialog::new_uas(&req, &tag, contact, via.clone()) else {
            return refuse(self, 400);
        };
        let id = self.ids.next_id();
        let caller = user_of(&from.uri);
        let info = IncomingCall {
            caller: if caller.is_empty() {
                "anonymous".to_owned()
            } else {
                caller
            },
            caller_name: from.display_name.clone().filter(|d| !d.is_empty()),
            callee: user_of(&req.uri),
            request_uri: req.uri.to_string(),
            source: LegSource::Address(source),
            trunk: peer.map(|p| p.name),
            authenticated,
            media: caps,
            max_forwards: req
                .headers
                .max_forwards()
                .ok()
                .flatten()
                .map(|m| m.saturating_sub(1)),
            attachment: MediaAttachment::Rtp,
        };
        let sdp_id = u64::from(self.random_u32());
        let call_id = call_id.to_owned();
        self.by_initial.insert(initial, id);
        self.by_dialog.insert((call_id.clone(), tag.clone()), id);
        self.by_server_invite.insert(key.clone(), id);
        self.by_call_id.insert(call_id.clone(), id);
        self.stats.incoming += 1;
        // 100 Trying at once: the next hop stops retransmitting while we route.
        let trying = Response::for_request(&req, 100);
        self.respond(now, &key, trying);
        let leg = Leg {
            id,
            role: Role::Uas,
            phase: Phase::Setup,
            transport,
            peer: source,
            via,
            call_id,
            local_tag: tag,
            invite: req,
            invite_key: Some(key),
            invite_pending: true,
            dialog: Some(dialog),
            local_addr: None,
            prefs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime: 20,
            remote_offer: offer,
            local_sdp: None,
            sdp_id,
            sdp_version: 1,
            negotiated: None,
            awaiting_ack_answer: false,
            alerted: false,
            early_answer_sent: false,
            got_provisional: false,
            cancel_wanted: false,
            cancel_sent: false,
            timer_c_fired: false,
            answer: None,
            answer_is_initial: false,
            bye_after_ack: None,
            bye_key: None,
            digest: None,
            credentials: None,
            want_hold: false,
            held: false,
            remote_hold: false,
            want_codecs: None,
            reinvite_out: None,
            reinvite_retry_at: None,
            refer_notify: false,
            last_ack: None,
            scheduled: None,
            span: tracing::Span::none(),
        };
        self.legs.insert(id, leg);
        self.emit(id, LegEvent::Incoming(info));
    }

    fn on_in_dialog(
        &mut self,
        now: Instant,
        id: LegId,
        key: TransactionKey,
        req: Request,
        source: SocketAddr,
    ) {
        let Some(mut leg) = self.take(id) else {
            return self.answer_plain(now, &key, &req, 481);
        };
        let span = leg.span.clone();
        let _entered = span.enter();
        tracing::debug!(leg = %id, call_id = %leg.call_id, method = %req.method, "in-dialog request");
        let verdict = match leg.dialog.as_mut() {
            Some(d) => d.handle_request(&req),
            None => Err(InDialogReject::Terminated),
        };
        // A NATed party may move: its in-dialog requests say where it is now.
        if leg.role == Role::Uas && leg.transport == Transport::Udp {
            leg.peer = source;
        }
        let engine_knows = leg.phase != Phase::Closing;
        match verdict {
            Err(rej) => {
                if rej == InDialogReject::Glare {
                    self.stats.glare += 1;
                }
                if let Some(status) = rej.status()
                    && let Some(d) = leg.dialog.as_mut()
                {
                    let mut resp = d.response(&req, status);
                    if rej == InDialogReject::PendingInvite {
                        resp.headers
                            .push(HeaderName::Other("Retry-After".into()), "1");
                    }
                    self.respond(now, &key, resp);
                } else if let Some(status) = rej.status() {
                    self.answer_plain(now, &key, &req, status);
                }
            }
            Ok(InDialogRequest::Bye) => {
                if let Some(d) = leg.dialog.as_mut() {
                    let resp = d.response(&req, 200);
                    self.respond(now, &key, resp);
                }
                let cause = match reason_cause(&req.headers) {
                    Some(c) => EndCause::q850(c, "BYE from the party"),
                    None => EndCause::normal("BYE from the party"),
                };
                leg.answer = None;
                leg.bye_after_ack = None;
                if leg.role == Role::Uas
                    && leg.phase == Phase::Setup
                    && let (Some(k), Some(d)) = (leg.invite_key.clone(), leg.dialog.as_mut())
                {
                    // BYE on an early dialog (RFC 3261 §15): the INVITE ends with 487.
                    let resp = d.response(&leg.invite, 487);
                    self.respond(now, &k, resp);
                }
                if engine_knows {
                    let ev = if leg.phase == Phase::Answered {
                        LegEvent::HungUp { cause }
                    } else {
                        LegEvent::Failed { cause }
                    };
                    self.emit(id, ev);
                }
                leg.phase = Phase::Closing;
                leg.invite_pending = false;
            }
            Ok(InDialogRequest::ReInvite) => {
                self.on_reoffer(now, &mut leg, &key, &req, true);
            }
            Ok(InDialogRequest::Update) => {
                self.on_reoffer(now, &mut leg, &key, &req, false);
            }
            Ok(InDialogRequest::Ack) => {}
            Ok(InDialogRequest::Other) => self.on_other_in_dialog(now, &mut leg, &key, &req),
        }
        self.put(leg);
    }

    fn on_other_in_dialog(
        &mut self,
        now: Instant,
        leg: &mut Leg,
        key: &TransactionKey,
        req: &Request,
    ) {
        let engine_knows = leg.phase != Phase::Closing;
        let status = match req.method {
            Method::Info => {
                let ct = req
                    .headers
                    .content_type()
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match parse_dtmf_info(&ct, &req.body) {
                    Some((digit, duration)) => {
                        self.stats.info_digits += 1;
                        if engine_knows {
                            self.emit(
                                leg.id,
                                LegEvent::Digit {
                                    digit,
                                    duration,
                                    source: DigitSource::SipInfo,
                                },
                            );
                        }
                        200
                    }
                    // An empty INFO is a keepalive probe (RFC 6086 legacy use): fine.
                    None if req.body.is_empty() => 200,
                    None => 415,
                }
            }
            Method::Options | Method::Notify => 200,
            Method::Refer => match crate::sip::refer::ReferTo::from_request(req) {
                Ok(t) if engine_knows && leg.phase == Phase::Answered => {
                    let target = t.target.to_string();
                    let replaces = t.replaces.map(|r| r.to_string());
                    leg.refer_notify = crate::sip::refer::refer_sub_requested(req);
                    self.emit(leg.id, LegEvent::TransferRequest { target, replaces });
                    202
                }
                Ok(_) => 603,
                Err(_) => 400,
            },
            _ => 501,
        };
        if let Some(d) = leg.dialog.as_mut() {
            let mut resp = d.response(req, status);
            if status == 501 {
                resp.headers.push(HeaderName::Allow, ALLOW);
            }
            if status == 202 && !leg.refer_notify {
                // RFC 4488 §4: echoed, so the transferor knows no NOTIFY will come.
                resp.headers.push(HeaderName::ReferSub, "false");
            }
            self.respond(now, key, resp);
        }
    }

    /// A re-INVITE (`invite`) or UPDATE from the party: answered here, at once.
    fn on_reoffer(
        &mut self,
        now: Instant,
        leg: &mut Leg,
        key: &TransactionKey,
        req: &Request,
        invite: bool,
    ) {
        self.stats.reoffers_received += 1;
        let engine_knows = leg.phase != Phase::Closing;
        let offer = if has_sdp(&req.headers, &req.body) {
            match parse_sdp(&req.body) {
                Some(o) => Some(o),
                None => {
                    if let Some(d) = leg.dialog.as_mut() {
                        let resp = d.response(req, 400);
                        self.respond(now, key, resp);
                    }
                    return;
                }
            }
        } else {
            None
        };
        let status;
        let mut body = None;
        match offer {
            None if !invite => {
                // UPDATE without SDP: a session refresh.
                status = 200;
            }
            None => {
                // Offerless re-INVITE: we offer our current session in the 2xx, the answer
                // comes in the ACK.
                let hold = leg.want_hold;
                match self.fresh_offer(leg, hold, None) {
                    Some(o) => {
                        leg.awaiting_ack_answer = true;
                        body = Some(o.to_string().into_bytes());
                        leg.local_sdp = Some(o);
                        status = 200;
                    }
                    None => status = 488,
                }
            }
            Some(offer) => {
                let was_hold = leg.remote_hold;
                let holds = offer_holds(&offer);
                // Keep the codec in use if it is still offered (no change on the other leg),
                // else our preference among the new offer.
                let mut prefs = leg.prefs.clone();
                if let Some(n) = &leg.negotiated {
                    prefs.retain(|c| *c != n.codec);
                    prefs.insert(0, n.codec);
                }
                let direction = if leg.want_hold {
                    Direction::SendOnly
                } else {
                    Direction::SendRecv
                };
                let answer = leg.local_addr.and_then(|addr| {
                    sdp::create_answer(
                        &offer,
                        &MediaConfig {
                            rtp_addr: addr,
                            codecs: prefs,
                            telephone_event: leg.telephone_event,
                            ptime: leg.ptime,
                            direction,
                            rtcp_mux: true,
                        },
                        leg.sdp_id,
                        leg.sdp_version,
                    )
                    .ok()
                });
                match answer {
                    Some((mut answer, neg)) => {
                        let changed = leg.negotiated.as_ref() != Some(&neg);
                        if changed
                            || leg
                                .local_sdp
                                .as_ref()
                                .is_none_or(|l| l.media != answer.media)
                        {
                            leg.sdp_version += 1;
                        }
                        answer.session_version = leg.sdp_version;
                        body = Some(answer.to_string().into_bytes());
                        leg.local_sdp = Some(answer);
                        leg.remote_offer = Some(offer);
                        leg.remote_hold = holds;
                        if changed {
                            leg.negotiated = Some(neg.clone());
                        }
                        status = 200;
                        if engine_knows {
                            if changed {
                                self.emit(
                                    leg.id,
                                    LegEvent::MediaChanged {
                                        media: negotiated_media(&neg),
                                    },
                                );
                            }
                            if holds && !was_hold {
                                self.emit(leg.id, LegEvent::Hold);
                            } else if !holds && was_hold {
                                self.emit(leg.id, LegEvent::Resume);
                            }
                        }
                    }
                    None => status = 488,
                }
            }
        }
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        let mut resp = d.response(req, status);
        if let Some(b) = body {
            resp.headers
                .push(HeaderName::ContentType, "application/sdp");
            resp.body = b;
        }
        if invite && status < 300 {
            let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
            let mut sent = resp.clone();
            sent.headers
                .push(HeaderName::Server, self.config.user_agent.clone());
            crate::sip::transaction::stamp_received(&mut sent, leg.peer);
            leg.answer = Some(AnswerRetransmit::new(
                now,
                seq,
                leg.peer,
                sent.to_bytes(),
                leg.reliability(),
                self.config.timers,
            ));
            leg.answer_is_initial = false;
        }
        self.respond(now, key, resp);
    }

    fn on_ack(&mut self, now: Instant, req: &Request) {
        let Some(tag) = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
        else {
            return;
        };
        let Ok(call_id) = req.headers.call_id() else {
            return;
        };
        let Some(id) = self.by_dialog.get(&(call_id.to_owned(), tag)).copied() else {
            return;
        };
        let Some(mut leg) = self.take(id) else {
            return;
        };
        let span = leg.span.clone();
        let _entered = span.enter();
        let ok = leg
            .dialog
            .as_mut()
            .is_some_and(|d| d.handle_request(req) == Ok(InDialogRequest::Ack));
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        if ok && leg.answer.as_mut().is_some_and(|a| a.ack_received(seq)) {
            leg.answer = None;
            if leg.awaiting_ack_answer {
                leg.awaiting_ack_answer = false;
                let neg = parse_sdp(&req.body)
                    .zip(leg.local_sdp.as_ref())
                    .and_then(|(ans, offer)| sdp::accept_answer(offer, &ans).ok());
                match neg {
                    Some(n) => {
                        if leg.negotiated.as_ref() != Some(&n) && leg.phase == Phase::Answered {
                            self.emit(
                                id,
                                LegEvent::MediaChanged {
                                    media: negotiated_media(&n),
                                },
                            );
                        }
                        leg.negotiated = Some(n);
                    }
                    None if leg.negotiated.is_none() => {
                        // Late offer never answered: nothing to talk with.
                        if leg.phase == Phase::Answered {
                            self.emit(
                                id,
                                LegEvent::HungUp {
                                    cause: EndCause::q850(127, "ACK carried no usable SDP answer"),
                                },
                            );
                            leg.phase = Phase::Closing;
                        }
                        self.send_bye(now, &mut leg, &EndCause::q850(127, "no SDP answer"));
                    }
                    None => {}
                }
            }
            if let Some(cause) = leg.bye_after_ack.take() {
                self.send_bye(now, &mut leg, &cause);
            }
        }
        self.put(leg);
    }

    fn on_cancelled(&mut self, now: Instant, invite: &TransactionKey) {
        let Some(id) = self.by_server_invite.get(invite).copied() else {
            return;
        };
        let Some(mut leg) = self.take(id) else {
            return;
        };
        let span = leg.span.clone();
        let _entered = span.enter();
        if leg.phase == Phase::Setup {
            tracing::info!(leg = %id, call_id = %leg.call_id, "CANCEL from the caller: 487");
            if let Some(d) = leg.dialog.as_mut() {
                let resp = d.response(&leg.invite, 487);
                self.respond(now, invite, resp);
            }
            leg.phase = Phase::Closing;
            leg.invite_pending = false;
            self.emit(
                id,
                LegEvent::Failed {
                    cause: EndCause {
                        q850: 16,
                        sip_status: Some(487),
                        text: "caller cancelled".to_owned(),
                    },
                },
            );
        }
        self.put(leg);
    }

    // ----- responses ------------------------------------------------------------------------

    fn on_response(&mut self, now: Instant, key: &TransactionKey, resp: Response) {
        let Some((id, purpose)) = self.by_client.get(key).copied() else {
            if (200..300).contains(&resp.status)
                && let Some((dest, transport, bytes)) = self.orphan_acks.get(key).cloned()
            {
                self.push_raw(dest, transport, bytes);
            }
            return;
        };
        if let Purpose::Ping(i) = purpose {
            return self.on_ping_response(now, i, &resp);
        }
        if let Purpose::Register(j) = purpose {
            return self.on_register_response(now, j, &resp);
        }
        let Some(mut leg) = self.take(id) else {
            return;
        };
        let span = leg.span.clone();
        let _entered = span.enter();
        tracing::debug!(leg = %id, call_id = %leg.call_id, status = resp.status, "response");
        match purpose {
            Purpose::Invite => self.on_invite_response(now, &mut leg, key, &resp),
            Purpose::Reinvite => self.on_reinvite_response(now, &mut leg, &resp),
            Purpose::Bye => {
                if resp.status >= 200 && leg.bye_key.as_ref() == Some(key) {
                    leg.bye_key = None;
                }
            }
            Purpose::Other => {
                if matches!(resp.status, 408 | 481) && leg.phase == Phase::Answered {
                    // §12.2.1.2: the dialog is gone at the party.
                    if let Some(d) = leg.dialog.as_mut() {
                        d.terminate();
                    }
                    self.emit(
                        leg.id,
                        LegEvent::HungUp {
                            cause: EndCause::sip(resp.status, "dialog gone at the party"),
                        },
                    );
                    leg.phase = Phase::Closing;
                }
            }
            Purpose::StrayBye | Purpose::Ping(_) | Purpose::Register(_) => {}
        }
        self.put(leg);
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        leg: &mut Leg,
        key: &TransactionKey,
        resp: &Response,
    ) {
        if leg.invite_key.as_ref() != Some(key) {
            return;
        }
        let status = resp.status;
        let to_tag = resp
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));
        if status < 200 {
            leg.got_provisional = true;
            if leg.cancel_wanted {
                self.send_cancel(now, leg);
                return;
            }
            if status == 100 {
                return;
            }
            if to_tag.is_some() && leg.dialog.is_none() {
                leg.dialog = Dialog::new_uac(&leg.invite, resp, leg.via.clone()).ok();
            } else if let Some(d) = leg.dialog.as_mut()
                && d.id().remote_tag == to_tag.clone().unwrap_or_default()
            {
                d.handle_response(resp);
            }
            let early = self.accept_answer_in(leg, resp);
            let had_early = early.is_some();
            if let Some(n) = early {
                self.emit(
                    leg.id,
                    LegEvent::Progress {
                        media: Some(negotiated_media(&n)),
                        attachment: MediaAttachment::Rtp,
                    },
                );
            }
            if (180..=182).contains(&status) && !leg.alerted {
                leg.alerted = true;
                self.emit(leg.id, LegEvent::Alerting);
            } else if status == 183 && !had_early && leg.negotiated.is_none() {
                self.emit(
                    leg.id,
                    LegEvent::Progress {
                        media: None,
                        attachment: MediaAttachment::Rtp,
                    },
                );
            }
            return;
        }
        if status < 300 {
            self.on_invite_2xx(now, leg, resp, to_tag);
            return;
        }
        // A final failure.
        leg.invite_pending = false;
        if matches!(status, 401 | 407) && !leg.cancel_wanted && leg.phase == Phase::Setup {
            let branch = self.branch();
            let cnonce = self.hex(16);
            let retry = match (&leg.credentials, leg.digest.as_mut()) {
                (Some(_), Some(client)) => {
                    client.authorize(&leg.invite, resp, &branch, &cnonce).ok()
                }
                _ => None,
            };
            if let Some(retry) = retry {
                let dest = leg.peer;
                leg.invite = retry.clone();
                leg.dialog = None;
                if let Some(k) = self.send_request(now, leg, retry, dest, Purpose::Invite) {
                    leg.invite_key = Some(k);
                    leg.invite_pending = true;
                    leg.got_provisional = false;
                    return;
                }
            }
        }
        if let Some(d) = leg.dialog.as_mut() {
            d.handle_response(resp);
        }
        if leg.phase == Phase::Setup {
            let mut cause = if leg.timer_c_fired && status == 487 {
                EndCause {
                    q850: 19,
                    sip_status: Some(480),
                    text: "no answer (Timer C)".to_owned(),
                }
            } else {
                let text = if resp.reason.is_empty() {
                    crate::sip::message::default_reason(status).to_owned()
                } else {
                    resp.reason.clone()
                };
                EndCause::sip(status, text)
            };
            if let Some(c) = reason_cause(&resp.headers) {
                cause.q850 = c;
            }
            if !leg.cancel_wanted {
                self.emit(leg.id, LegEvent::Failed { cause });
            }
        }
        leg.phase = Phase::Closing;
    }

    fn on_invite_2xx(
        &mut self,
        now: Instant,
        leg: &mut Leg,
        resp: &Response,
        to_tag: Option<String>,
    ) {
        let branch = self.branch();
        let same_dialog = leg
            .dialog
            .as_ref()
            .is_some_and(|d| Some(&d.id().remote_tag) == to_tag.as_ref());
        let confirmed_other = leg.phase != Phase::Setup && !same_dialog;
        if confirmed_other {
            // A second fork answered: ACK it and hang it up at once.
            if let Ok(mut d) = Dialog::new_uac(&leg.invite, resp, leg.via.clone())
                && let Ok(ack) = d.ack_for_2xx(resp, &branch, None)
            {
                let dest = uri_socket_addr(d.next_hop()).unwrap_or(leg.peer);
                self.push_raw(dest, leg.transport, ack.to_bytes());
                let bye_branch = self.branch();
                if let Ok(bye) = d.new_request(Method::Bye, &bye_branch) {
                    self.send_request(now, leg, bye, dest, Purpose::StrayBye);
                }
            }
            return;
        }
        if !same_dialog {
            leg.dialog = Dialog::new_uac(&leg.invite, resp, leg.via.clone()).ok();
        } else if let Some(d) = leg.dialog.as_mut() {
            d.handle_response(resp);
        }
        let dest = leg.in_dialog_dest();
        let ack = leg
            .dialog
            .as_mut()
            .and_then(|d| d.ack_for_2xx(resp, &branch, None).ok());
        match ack {
            Some(a) => {
                let bytes = a.to_bytes();
                leg.last_ack = Some((dest, bytes.clone()));
                leg.invite_pending = false;
                self.push_raw(dest, leg.transport, bytes);
            }
            None => {
                // A 2xx we cannot build a dialog from (no Contact): ACK it plainly and give up.
                let mut ack = crate::sip::transaction::build_ack(&leg.invite, resp);
                ack.headers.set(
                    HeaderName::Via,
                    format!(
                        "SIP/2.0/{} {};branch={branch}",
                        leg.via.transport, leg.via.sent_by
                    ),
                );
                self.push_raw(leg.peer, leg.transport, ack.to_bytes());
                if leg.phase == Phase::Setup && !leg.cancel_wanted {
                    self.emit(
                        leg.id,
                        LegEvent::Failed {
                            cause: EndCause::q850(111, "2xx without a usable Contact"),
                        },
                    );
                }
                leg.phase = Phase::Closing;
                return;
            }
        }
        if leg.phase != Phase::Setup {
            return; // a retransmitted 2xx: ACKed again, nothing else
        }
        if leg.cancel_wanted {
            // The engine gave up while the party answered: its call must not stay up.
            leg.phase = Phase::Closing;
            self.send_bye(now, leg, &EndCause::normal("cancelled before answer"));
            return;
        }
        let neg = self
            .accept_answer_in(leg, resp)
            .or_else(|| leg.negotiated.clone());
        let Some(neg) = neg else {
            self.emit(
                leg.id,
                LegEvent::Failed {
                    cause: EndCause::q850(127, "2xx without an SDP answer"),
                },
            );
            leg.phase = Phase::Closing;
            self.send_bye(now, leg, &EndCause::q850(127, "no SDP answer"));
            return;
        };
        leg.phase = Phase::Answered;
        self.emit(
            leg.id,
            LegEvent::Answered {
                media: Some(negotiated_media(&neg)),
                attachment: MediaAttachment::Rtp,
            },
        );
        self.try_reinvite(now, leg);
    }

    /// The SDP answer in a response to our offer, if it changes what was negotiated.
    fn accept_answer_in(&mut self, leg: &mut Leg, resp: &Response) -> Option<NegotiatedAudio> {
        if !has_sdp(&resp.headers, &resp.body) {
            return None;
        }
        let answer = parse_sdp(&resp.body)?;
        let offer = leg.local_sdp.as_ref()?;
        let n = sdp::accept_answer(offer, &answer).ok()?;
        if leg.negotiated.as_ref() == Some(&n) {
            return None;
        }
        leg.negotiated = Some(n.clone());
        Some(n)
    }

    fn on_reinvite_response(&mut self, now: Instant, leg: &mut Leg, resp: &Response) {
        if resp.status < 200 {
            return;
        }
        let branch = self.branch();
        if let Some(d) = leg.dialog.as_mut() {
            d.handle_response(resp);
        }
        let Some(out) = leg.reinvite_out.take() else {
            if (200..300).contains(&resp.status) {
                // A retransmitted 2xx: ACK again.
                let dest = leg.in_dialog_dest();
                if let Some(ack) = leg
                    .dialog
                    .as_mut()
                    .and_then(|d| d.ack_for_2xx(resp, &branch, None).ok())
                {
                    self.push_raw(dest, leg.transport, ack.to_bytes());
                }
            }
            return;
        };
        let engine_knows = leg.phase == Phase::Answered;
        match resp.status {
            200..=299 => {
                let dest = leg.in_dialog_dest();
                if let Some(ack) = leg
                    .dialog
                    .as_mut()
                    .and_then(|d| d.ack_for_2xx(resp, &branch, None).ok())
                {
                    self.push_raw(dest, leg.transport, ack.to_bytes());
                }
                leg.held = out.hold;
                leg.prefs = out.codecs;
                let neg =
                    parse_sdp(&resp.body).and_then(|a| sdp::accept_answer(&out.offer, &a).ok());
                leg.local_sdp = Some(out.offer);
                if let Some(n) = neg
                    && leg.negotiated.as_ref() != Some(&n)
                {
                    leg.negotiated = Some(n.clone());
                    if engine_knows {
                        self.emit(
                            leg.id,
                            LegEvent::MediaChanged {
                                media: negotiated_media(&n),
                            },
                        );
                    }
                }
                if leg.want_codecs.as_ref() == Some(&leg.prefs) {
                    leg.want_codecs = None;
                }
                self.try_reinvite(now, leg);
            }
            491 => {
                self.stats.glare += 1;
                let role = leg.dialog.as_ref().map_or(DialogRole::Uac, Dialog::role);
                let r = self.random_u32();
                leg.reinvite_retry_at = Some(now + glare_retry_delay(role, r));
            }
            408 | 481 => {
                if let Some(d) = leg.dialog.as_mut() {
                    d.terminate();
                }
                if engine_knows {
                    self.emit(
                        leg.id,
                        LegEvent::HungUp {
                            cause: EndCause::sip(resp.status, "re-INVITE: dialog gone"),
                        },
                    );
                    leg.phase = Phase::Closing;
                }
                if resp.status == 408 {
                    self.send_bye(now, leg, &EndCause::q850(102, "re-INVITE timed out"));
                }
            }
            _ => {
                // Refused (488, 500, ...): the old session stays; stop wanting the change.
                leg.want_hold = leg.held;
                leg.want_codecs = None;
            }
        }
    }

    fn on_timeout(&mut self, now: Instant, key: &TransactionKey) {
        let Some((id, purpose)) = self.by_client.get(key).copied() else {
            return;
        };
        if let Purpose::Ping(i) = purpose {
            return self.on_ping_timeout(i);
        }
        if let Purpose::Register(j) = purpose {
            return self.on_register_timeout(now, j);
        }
        let Some(mut leg) = self.take(id) else {
            return;
        };
        let span = leg.span.clone();
        let _entered = span.enter();
        tracing::debug!(leg = %id, call_id = %leg.call_id, ?purpose, "transaction timed out");
        match purpose {
            Purpose::Invite if leg.invite_key.as_ref() == Some(key) => {
                if leg.got_provisional && !leg.cancel_sent {
                    // Timer C: the layer sent CANCEL; the 487 ends the leg.
                    leg.timer_c_fired = true;
                } else {
                    leg.invite_pending = false;
                    if leg.phase == Phase::Setup && !leg.cancel_wanted {
                        self.emit(
                            id,
                            LegEvent::Failed {
                                cause: EndCause::sip(408, "no response from the destination"),
                            },
                        );
                    }
                    leg.phase = Phase::Closing;
                }
            }
            Purpose::Bye => leg.bye_key = None,
            Purpose::Reinvite => {
                leg.reinvite_out.take();
                if leg.phase == Phase::Answered {
                    self.emit(
                        id,
                        LegEvent::HungUp {
                            cause: EndCause::sip(408, "re-INVITE timed out"),
                        },
                    );
                    leg.phase = Phase::Closing;
                }
                self.send_bye(now, &mut leg, &EndCause::q850(102, "re-INVITE timed out"));
            }
            _ => {}
        }
        self.put(leg);
    }

    // ----- registrations --------------------------------------------------------------------

    /// Where each registration of the gateway stands.
    pub fn registrations(&self, now: Instant) -> Vec<RegistrationInfo> {
        self.regs
            .iter()
            .map(|r| RegistrationInfo {
                peer: self
                    .config
                    .peers
                    .get(r.peer)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                state: r.reg.state(),
                registered: r.reg.is_registered(now),
                last_status: r.reg.last_status(),
                accepted: r.accepted,
                granted: r.granted,
            })
            .collect()
    }

    /// Sends the un-REGISTER (`Expires: 0`) of every registration (at shutdown).
    pub fn unregister_all(&mut self, now: Instant) {
        for j in 0..self.regs.len() {
            let branch = self.branch();
            let Some(slot) = self.regs.get_mut(j) else {
                continue;
            };
            if let Some(req) = slot.reg.unregister(&branch) {
                self.send_register(now, j, req);
            }
        }
    }

    fn start_registrations(&mut self, now: Instant) {
        self.regs_pending = false;
        for spec in self.config.registrations.clone() {
            let Some(i) = self.config.peers.iter().position(|p| p.name == spec.peer) else {
                tracing::warn!(trunk = %spec.peer, "registration for an unknown trunk: skipped");
                continue;
            };
            let Some(peer) = self.config.peers.get(i).cloned() else {
                continue;
            };
            let transport = match peer.transport {
                SipTransportKind::Udp => Transport::Udp,
                SipTransportKind::Tcp => Transport::Tcp,
                SipTransportKind::Tls => Transport::Tls,
            };
            let (Some(local), Some(contact)) =
                (self.local_addr_for(transport), self.contact_for(transport))
            else {
                tracing::warn!(trunk = %spec.peer, "no local listener for the trunk's transport: not registering");
                continue;
            };
            let host = spec
                .host
                .clone()
                .unwrap_or_else(|| peer.address.to_string());
            let param = if transport == Transport::Tls {
                ";transport=tls"
            } else {
                ""
            };
            let (Ok(registrar), Ok(aor)) = (
                Uri::parse(&format!("sip:{host}{param}")),
                Uri::parse(&format!("sip:{}@{host}", spec.user)),
            ) else {
                tracing::warn!(trunk = %spec.peer, %host, user = %spec.user, "registration: bad registrar host or user");
                continue;
            };
            let contact = Uri::parse(&contact.as_str().replacen(
                "gw@",
                &format!("{}@", spec.user),
                1,
            ))
            .unwrap_or(contact);
            let call_id = format!("{}@{}", self.hex(20), local.ip());
            let tag = self.hex(8);
            let mut cfg = RegistrationConfig::new(
                registrar,
                aor,
                contact,
                ViaTemplate {
                    transport: transport.via_token().to_owned(),
                    sent_by: local.to_string(),
                },
                &call_id,
                &tag,
            );
            cfg.expires = spec.expires;
            // Retry soon after a failure: a gateway that cannot take calls should not wait.
            cfg.retry_after = Duration::from_secs(5).min(spec.expires.max(Duration::from_secs(1)));
            cfg.retry_max = Duration::from_secs(300);
            let client = DigestClient::new(&spec.user, spec.password.as_deref().unwrap_or(""));
            self.regs.push(RegSlot {
                peer: i,
                reg: Registration::new(cfg, client),
                dest: peer.address,
                transport,
                accepted: 0,
                granted: None,
            });
            let j = self.regs.len() - 1;
            let branch = self.branch();
            if let Some(slot) = self.regs.get_mut(j) {
                let req = slot.reg.register(&branch);
                tracing::info!(trunk = %spec.peer, expires_s = spec.expires.as_secs(), "registering");
                self.send_register(now, j, req);
            }
        }
    }

    fn registration_timers(&mut self, now: Instant) {
        if self.regs_pending && !self.config.registrations.is_empty() && self.created <= now {
            self.start_registrations(now);
        }
        for j in 0..self.regs.len() {
            let due = self
                .regs
                .get(j)
                .and_then(|r| r.reg.poll_timeout())
                .is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let branch = self.branch();
            let req = self
                .regs
                .get_mut(j)
                .and_then(|r| r.reg.handle_timeout(now, &branch));
            if let Some(req) = req {
                self.send_register(now, j, req);
            }
        }
    }

    fn send_register(&mut self, now: Instant, j: usize, req: Request) {
        let Some(slot) = self.regs.get(j) else {
            return;
        };
        let (dest, reliability) = (slot.dest, slot.transport.reliability());
        match self.layer.send_request(now, req, dest, reliability) {
            Ok(k) => {
                self.by_client.insert(k, (LegId(0), Purpose::Register(j)));
            }
            Err(e) => tracing::warn!(%dest, "cannot send REGISTER: {e:?}"),
        }
    }

    fn reg_peer_name(&self, j: usize) -> String {
        self.regs
            .get(j)
            .and_then(|r| self.config.peers.get(r.peer))
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    fn on_register_response(&mut self, now: Instant, j: usize, resp: &Response) {
        let branch = self.branch();
        let cnonce = self.hex(16);
        let name = self.reg_peer_name(j);
        let Some(slot) = self.regs.get_mut(j) else {
            return;
        };
        match slot.reg.handle_response(now, resp, &branch, &cnonce) {
            RegistrationAction::Send(req) => self.send_register(now, j, req),
            RegistrationAction::Registered { expires } => {
                slot.accepted += 1;
                slot.granted = Some(expires);
                tracing::info!(trunk = %name, expires_s = expires.as_secs(), "registered");
            }
            RegistrationAction::Failed { status, retry_in } => {
                tracing::warn!(trunk = %name, status, retry_in_s = retry_in.as_secs(), "registration failed (status 0: credentials refused)");
            }
            RegistrationAction::Unregistered => {
                tracing::info!(trunk = %name, "unregistered");
            }
            RegistrationAction::Nothing => {}
        }
    }

    fn on_register_timeout(&mut self, now: Instant, j: usize) {
        let name = self.reg_peer_name(j);
        if let Some(slot) = self.regs.get_mut(j)
            && let RegistrationAction::Failed { retry_in, .. } = slot.reg.transaction_timed_out(now)
        {
            tracing::warn!(trunk = %name, retry_in_s = retry_in.as_secs(), "registrar does not answer REGISTER");
        }
    }

    // ----- pings ----------------------------------------------------------------------------

    fn send_ping(&mut self, now: Instant, i: usize) {
        let Some(peer) = self.config.peers.get(i).cloned() else {
            return;
        };
        let transport = match peer.transport {
            SipTransportKind::Udp => Transport::Udp,
            SipTransportKind::Tcp => Transport::Tcp,
            SipTransportKind::Tls => Transport::Tls,
        };
        let Some(local) = self.local_addr_for(transport) else {
            return;
        };
        let Ok(uri) = Uri::parse(&format!("sip:{}", peer.address)) else {
            return;
        };
        let branch = self.branch();
        let tag = self.hex(8);
        let call_id = format!("{}@{}", self.hex(20), local.ip());
        let mut req = Request::new(Method::Options, uri.clone());
        let h = &mut req.headers;
        h.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {local};branch={branch};rport",
                transport.via_token()
            ),
        );
        h.push(HeaderName::MaxForwards, "70");
        h.push(HeaderName::From, format!("<sip:gw@{local}>;tag={tag}"));
        h.push(HeaderName::To, format!("<{uri}>"));
        h.push(HeaderName::CallId, call_id);
        h.push(HeaderName::CSeq, "1 OPTIONS");
        h.push(HeaderName::UserAgent, self.config.user_agent.clone());
        h.push(HeaderName::Accept, "application/sdp");
        let reliability = transport.reliability();
        if let Ok(k) = self.layer.send_request(now, req, peer.address, reliability) {
            self.by_client.insert(k, (LegId(0), Purpose::Ping(i)));
            if let Some(p) = self.pings.get_mut(i) {
                p.sent_at = Some(now);
            }
        }
    }

    fn on_ping_response(&mut self, now: Instant, i: usize, resp: &Response) {
        if resp.status < 200 {
            return;
        }
        let Some(p) = self.pings.get_mut(i) else {
            return;
        };
        let rtt = p.sent_at.take().map(|s| now.saturating_duration_since(s));
        let changed = p.up != Some(true);
        p.up = Some(true);
        if changed && let Some(peer) = self.config.peers.get(i) {
            self.peer_status.push_back(PeerStatus {
                name: peer.name.clone(),
                up: true,
                rtt,
            });
        }
    }

    fn on_ping_timeout(&mut self, i: usize) {
        let Some(p) = self.pings.get_mut(i) else {
            return;
        };
        p.sent_at = None;
        let changed = p.up != Some(false);
        p.up = Some(false);
        if changed && let Some(peer) = self.config.peers.get(i) {
            tracing::warn!(trunk = %peer.name, address = %peer.address, "trunk does not answer OPTIONS");
            self.peer_status.push_back(PeerStatus {
                name: peer.name.clone(),
                up: false,
                rtt: None,
            });
        }
    }

    // ----- commands -------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn originate(
        &mut self,
        now: Instant,
        id: LegId,
        target: Target,
        caller: &str,
        caller_name: Option<&str>,
        media: LocalMedia,
        max_forwards: u8,
    ) {
        let fail = |me: &mut Self, cause: EndCause| me.emit(id, LegEvent::Failed { cause });
        let Target::Sip {
            uri,
            dest,
            transport,
            credentials,
            trunk: _,
        } = target
        else {
            return fail(self, EndCause::q850(79, "not a SIP target"));
        };
        let transport = match transport {
            SipTransportKind::Udp => Transport::Udp,
            SipTransportKind::Tcp => Transport::Tcp,
            SipTransportKind::Tls => Transport::Tls,
        };
        let (Some(local), Some(contact)) =
            (self.local_addr_for(transport), self.contact_for(transport))
        else {
            return fail(
                self,
                EndCause::q850(
                    38,
                    format!("no {} listener for this destination", transport.via_token()),
                ),
            );
        };
        let Ok(target_uri) = Uri::parse(&uri) else {
            return fail(self, EndCause::q850(28, format!("bad target URI {uri:?}")));
        };
        let Some(addr) = media.address else {
            return fail(self, EndCause::q850(47, "no media address"));
        };
        let prefs: Vec<Codec> = media.codecs.iter().filter_map(|c| sdp_codec(*c)).collect();
        if prefs.is_empty() {
            return fail(self, EndCause::q850(65, "no codec to offer"));
        }
        let sdp_id = u64::from(self.random_u32());
        let offer = sdp::create_offer(
            &MediaConfig {
                rtp_addr: addr,
                codecs: prefs.clone(),
                telephone_event: media.telephone_event,
                ptime: u32::from(media.ptime_ms),
                direction: Direction::SendRecv,
                rtcp_mux: true,
            },
            sdp_id,
            1,
        );
        let branch = self.branch();
        let tag = self.hex(8);
        let call_id = format!("{}@{}", self.hex(24), local.ip());
        let user = sanitize_user(caller);
        let from = match caller_name.map(sanitize_display).filter(|n| !n.is_empty()) {
            Some(name) => format!("\"{name}\" <sip:{user}@{}>;tag={tag}", local.ip()),
            None => format!("<sip:{user}@{}>;tag={tag}", local.ip()),
        };
        let mut inv = Request::new(Method::Invite, target_uri.clone());
        let h = &mut inv.headers;
        h.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {local};branch={branch};rport",
                transport.via_token()
            ),
        );
        h.push(HeaderName::MaxForwards, max_forwards.to_string());
        h.push(HeaderName::From, from);
        h.push(HeaderName::To, format!("<{target_uri}>"));
        h.push(HeaderName::CallId, call_id.clone());
        h.push(HeaderName::CSeq, "1 INVITE");
        h.push(HeaderName::Contact, format!("<{contact}>"));
        h.push(HeaderName::Allow, ALLOW);
        h.push(HeaderName::UserAgent, self.config.user_agent.clone());
        h.push(HeaderName::ContentType, "application/sdp");
        inv.body = offer.to_string().into_bytes();
        if transport != Transport::Udp {
            self.dest_transport.insert(dest, transport);
        }
        let via = ViaTemplate {
            transport: transport.via_token().to_owned(),
            sent_by: local.to_string(),
        };
        let mut leg = Leg {
            id,
            role: Role::Uac,
            phase: Phase::Setup,
            transport,
            peer: dest,
            via,
            call_id: call_id.clone(),
            local_tag: tag.clone(),
            invite: inv.clone(),
            invite_key: None,
            invite_pending: true,
            dialog: None,
            local_addr: Some(addr),
            prefs,
            telephone_event: media.telephone_event,
            ptime: u32::from(media.ptime_ms),
            remote_offer: None,
            local_sdp: Some(offer),
            sdp_id,
            sdp_version: 1,
            negotiated: None,
            awaiting_ack_answer: false,
            alerted: false,
            early_answer_sent: false,
            got_provisional: false,
            cancel_wanted: false,
            cancel_sent: false,
            timer_c_fired: false,
            answer: None,
            answer_is_initial: false,
            bye_after_ack: None,
            bye_key: None,
            digest: credentials.as_ref().map(|(u, p)| DigestClient::new(u, p)),
            credentials,
            want_hold: false,
            held: false,
            remote_hold: false,
            want_codecs: None,
            reinvite_out: None,
            reinvite_retry_at: None,
            refer_notify: false,
            last_ack: None,
            scheduled: None,
            span: tracing::Span::current(),
        };
        match self.send_request(now, &leg, inv, dest, Purpose::Invite) {
            Some(k) => {
                leg.invite_key = Some(k);
                self.stats.outgoing += 1;
                self.by_dialog.insert((call_id.clone(), tag), id);
                self.by_call_id.insert(call_id, id);
                self.legs.insert(id, leg);
            }
            None => fail(self, EndCause::q850(41, "could not send the INVITE")),
        }
    }

    fn set_local_media(leg: &mut Leg, media: &LocalMedia) {
        if media.address.is_some() {
            leg.local_addr = media.address;
        }
        let prefs: Vec<Codec> = media.codecs.iter().filter_map(|c| sdp_codec(*c)).collect();
        if !prefs.is_empty() {
            leg.prefs = prefs;
        }
        leg.telephone_event = media.telephone_event;
        leg.ptime = u32::from(media.ptime_ms.max(10));
    }

    /// Builds (once) our answer to the party's initial offer.
    fn initial_answer(&mut self, leg: &mut Leg) -> Result<SessionDescription, EndCause> {
        if let Some(l) = &leg.local_sdp {
            return Ok(l.clone());
        }
        let addr = leg
            .local_addr
            .ok_or_else(|| EndCause::q850(47, "no media address"))?;
        let Some(offer) = &leg.remote_offer else {
            return Err(EndCause::q850(127, "no offer to answer"));
        };
        let (answer, neg) = sdp::create_answer(
            offer,
            &MediaConfig {
                rtp_addr: addr,
                codecs: leg.prefs.clone(),
                telephone_event: leg.telephone_event,
                ptime: leg.ptime,
                direction: Direction::SendRecv,
                rtcp_mux: true,
            },
            leg.sdp_id,
            leg.sdp_version,
        )
        .map_err(|e| EndCause {
            q850: 65,
            sip_status: Some(488),
            text: e.to_string(),
        })?;
        leg.remote_hold = offer_holds(offer);
        leg.negotiated = Some(neg.clone());
        leg.local_sdp = Some(answer.clone());
        self.emit(
            leg.id,
            LegEvent::MediaChanged {
                media: negotiated_media(&neg),
            },
        );
        Ok(answer)
    }

    /// A new offer of ours for this leg's session (re-INVITE, late offer).
    fn fresh_offer(
        &mut self,
        leg: &mut Leg,
        hold: bool,
        codecs: Option<&[Codec]>,
    ) -> Option<SessionDescription> {
        let addr = leg.local_addr?;
        let mut prefs = codecs
            .map(<[Codec]>::to_vec)
            .unwrap_or_else(|| leg.prefs.clone());
        if codecs.is_none()
            && let Some(n) = &leg.negotiated
        {
            prefs.retain(|c| *c != n.codec);
            prefs.insert(0, n.codec);
        }
        leg.sdp_version += 1;
        Some(sdp::create_offer(
            &MediaConfig {
                rtp_addr: addr,
                codecs: prefs,
                telephone_event: leg.telephone_event,
                ptime: leg.ptime,
                direction: if hold {
                    Direction::SendOnly
                } else {
                    Direction::SendRecv
                },
                rtcp_mux: true,
            },
            leg.sdp_id,
            leg.sdp_version,
        ))
    }

    fn ring(&mut self, now: Instant, leg: &mut Leg, early: Option<LocalMedia>) {
        if leg.role != Role::Uas || leg.phase != Phase::Setup {
            return;
        }
        let Some(key) = leg.invite_key.clone() else {
            return;
        };
        let mut status = 180;
        let mut body = None;
        if let Some(m) = early
            && leg.remote_offer.is_some()
        {
            Self::set_local_media(leg, &m);
            match self.initial_answer(leg) {
                Ok(a) => {
                    status = 183;
                    body = Some(a.to_string().into_bytes());
                    leg.early_answer_sent = true;
                }
                Err(_) => status = 180,
            }
        }
        if status == 180 && leg.alerted {
            return;
        }
        leg.alerted |= status == 180;
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        let mut resp = d.response(&leg.invite, status);
        if let Some(b) = body {
            resp.headers
                .push(HeaderName::ContentType, "application/sdp");
            resp.body = b;
        }
        self.respond(now, &key, resp);
    }

    fn answer(&mut self, now: Instant, leg: &mut Leg, media: LocalMedia) {
        if leg.role != Role::Uas || leg.phase != Phase::Setup {
            return;
        }
        let Some(key) = leg.invite_key.clone() else {
            return;
        };
        Self::set_local_media(leg, &media);
        let body = if leg.remote_offer.is_some() {
            match self.initial_answer(leg) {
                Ok(a) => a.to_string().into_bytes(),
                Err(cause) => {
                    let status = cause.sip_status_for_relay();
                    self.reject_uas(now, leg, status, &cause);
                    self.emit(leg.id, LegEvent::Failed { cause });
                    return;
                }
            }
        } else {
            // Late offer: we offer in the 2xx, the answer comes in the ACK.
            match self.fresh_offer(leg, false, None) {
                Some(o) => {
                    leg.awaiting_ack_answer = true;
                    let b = o.to_string().into_bytes();
                    leg.local_sdp = Some(o);
                    b
                }
                None => {
                    let cause = EndCause::q850(47, "no media address");
                    self.reject_uas(now, leg, 500, &cause);
                    self.emit(leg.id, LegEvent::Failed { cause });
                    return;
                }
            }
        };
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        let mut ok = d.response(&leg.invite, 200);
        ok.headers.push(HeaderName::Allow, ALLOW);
        ok.headers.push(HeaderName::ContentType, "application/sdp");
        ok.body = body;
        let mut sent = ok.clone();
        sent.headers
            .push(HeaderName::Server, self.config.user_agent.clone());
        crate::sip::transaction::stamp_received(&mut sent, leg.peer);
        let seq = leg.invite.headers.cseq().map(|c| c.seq).unwrap_or(0);
        leg.answer = Some(AnswerRetransmit::new(
            now,
            seq,
            leg.peer,
            sent.to_bytes(),
            leg.reliability(),
            self.config.timers,
        ));
        leg.answer_is_initial = true;
        leg.phase = Phase::Answered;
        leg.invite_pending = false;
        self.respond(now, &key, ok);
    }

    fn reject_uas(&mut self, now: Instant, leg: &mut Leg, status: u16, cause: &EndCause) {
        let Some(key) = leg.invite_key.clone() else {
            return;
        };
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        let mut resp = d.response(&leg.invite, status.clamp(300, 699));
        resp.headers
            .push(HeaderName::Other("Reason".into()), reason_header(cause));
        self.respond(now, &key, resp);
        leg.phase = Phase::Closing;
        leg.invite_pending = false;
    }

    fn send_cancel(&mut self, now: Instant, leg: &mut Leg) {
        if leg.cancel_sent {
            return;
        }
        let Some(k) = leg.invite_key.clone() else {
            return;
        };
        leg.cancel_sent = true;
        if let Ok(ck) = self.layer.cancel(now, &k) {
            self.by_client.insert(ck, (leg.id, Purpose::Other));
        }
    }

    fn send_bye(&mut self, now: Instant, leg: &mut Leg, cause: &EndCause) {
        let branch = self.branch();
        let dest = leg.in_dialog_dest();
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        d.ack_never_came();
        let Ok(mut bye) = d.new_request(Method::Bye, &branch) else {
            return;
        };
        if cause.q850 != 16 {
            bye.headers
                .push(HeaderName::Other("Reason".into()), reason_header(cause));
        }
        bye.headers
            .push(HeaderName::UserAgent, self.config.user_agent.clone());
        d.terminate();
        leg.answer = None;
        leg.bye_key = self.send_request(now, leg, bye, dest, Purpose::Bye);
    }

    fn hang_up(&mut self, now: Instant, leg: &mut Leg, cause: EndCause) {
        if leg.phase == Phase::Closing {
            return;
        }
        match (leg.role, leg.phase) {
            (Role::Uas, Phase::Setup) => {
                let status = cause.sip_status_for_relay();
                self.reject_uas(now, leg, status, &cause);
            }
            (Role::Uac, Phase::Setup) => {
                leg.cancel_wanted = true;
                leg.phase = Phase::Closing;
                // §9.1: no CANCEL before a provisional response; it goes when one arrives.
                if leg.got_provisional {
                    self.send_cancel(now, leg);
                }
            }
            (_, _) => {
                leg.phase = Phase::Closing;
                if leg.role == Role::Uas && leg.answer_is_initial && leg.answer.is_some() {
                    // §15: not before the ACK of our 2xx (or the give-up of its retransmission).
                    self.stats.byes_deferred += 1;
                    leg.bye_after_ack = Some(cause);
                } else {
                    self.send_bye(now, leg, &cause);
                }
            }
        }
    }

    /// Sends a re-INVITE if the wanted state differs from the negotiated one and none is in
    /// progress either way.
    fn try_reinvite(&mut self, now: Instant, leg: &mut Leg) {
        if leg.phase != Phase::Answered
            || leg.reinvite_out.is_some()
            || leg.reinvite_retry_at.is_some()
            || leg.awaiting_ack_answer
        {
            return;
        }
        let codecs_change = leg
            .want_codecs
            .as_ref()
            .is_some_and(|w| w.first() != leg.negotiated.as_ref().map(|n| &n.codec));
        if leg.want_hold == leg.held && !codecs_change {
            leg.want_codecs = None;
            return;
        }
        let hold = leg.want_hold;
        let codecs = if codecs_change {
            leg.want_codecs.clone()
        } else {
            None
        };
        let Some(offer) = self.fresh_offer(leg, hold, codecs.as_deref()) else {
            return;
        };
        let branch = self.branch();
        let dest = leg.in_dialog_dest();
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        let Ok(mut req) = d.new_request(Method::Invite, &branch) else {
            return; // an INVITE is in progress the other way: retried after it
        };
        req.headers.push(HeaderName::Allow, ALLOW);
        req.headers
            .push(HeaderName::UserAgent, self.config.user_agent.clone());
        req.headers.push(HeaderName::ContentType, "application/sdp");
        req.body = offer.to_string().into_bytes();
        let codecs = codecs.unwrap_or_else(|| leg.prefs.clone());
        if self
            .send_request(now, leg, req, dest, Purpose::Reinvite)
            .is_some()
        {
            self.stats.reoffers_sent += 1;
            leg.reinvite_out = Some(OutReinvite {
                offer,
                hold,
                codecs,
            });
        }
    }

    fn send_info_digit(&mut self, now: Instant, leg: &mut Leg, digit: char, duration: Duration) {
        if leg.phase != Phase::Answered {
            return;
        }
        let branch = self.branch();
        let dest = leg.in_dialog_dest();
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        let Ok(mut req) = d.new_request(Method::Info, &branch) else {
            return;
        };
        req.headers
            .push(HeaderName::ContentType, "application/dtmf-relay");
        req.body = format!("Signal={digit}\r\nDuration={}\r\n", duration.as_millis()).into_bytes();
        self.send_request(now, leg, req, dest, Purpose::Other);
    }

    fn send_refer_notify(&mut self, now: Instant, leg: &mut Leg, status: u16) {
        if !leg.refer_notify || leg.phase != Phase::Answered {
            return;
        }
        let branch = self.branch();
        let dest = leg.in_dialog_dest();
        let Some(d) = leg.dialog.as_mut() else {
            return;
        };
        let Ok(mut req) = d.new_request(Method::Notify, &branch) else {
            return;
        };
        let final_ = status >= 200;
        req.headers.push(HeaderName::Event, "refer");
        req.headers.push(
            HeaderName::Other("Subscription-State".into()),
            if final_ {
                "terminated;reason=noresource".to_owned()
            } else {
                "active;expires=60".to_owned()
            },
        );
        req.headers
            .push(HeaderName::ContentType, "message/sipfrag;version=2.0");
        req.body = format!(
            "SIP/2.0 {status} {}\r\n",
            crate::sip::message::default_reason(status)
        )
        .into_bytes();
        if final_ {
            leg.refer_notify = false;
        }
        self.send_request(now, leg, req, dest, Purpose::Other);
    }
}

impl LegProvider for SipLegs {
    fn kind(&self) -> LegKind {
        LegKind::Sip
    }

    fn handle_command(&mut self, now: Instant, id: LegId, command: LegCommand) {
        if let LegCommand::CallUri { uri } = command {
            // Only remembered for the leg's log lines: nothing is sent, no state changes.
            let span = super::leg::call_span(&uri);
            match self.legs.get_mut(&id) {
                Some(leg) => leg.span = span,
                None => {
                    // Taken by the Originate that follows at once; a leg that went before its
                    // URI came leaves an entry, so keep the map bounded.
                    if self.pending_spans.len() >= 1024 {
                        self.pending_spans.clear();
                    }
                    self.pending_spans.insert(id, span);
                }
            }
            return;
        }
        if let LegCommand::Originate {
            target,
            caller,
            caller_name,
            media,
            max_forwards,
        } = command
        {
            let span = self
                .pending_spans
                .remove(&id)
                .unwrap_or_else(tracing::Span::none);
            let _entered = span.enter();
            tracing::debug!(leg = %id, target = target_uri(&target), "SIP leg command: originate");
            if !self.legs.contains_key(&id) {
                self.originate(
                    now,
                    id,
                    target,
                    &caller,
                    caller_name.as_deref(),
                    media,
                    max_forwards,
                );
            }
            self.run(now);
            return;
        }
        let Some(mut leg) = self.take(id) else {
            return;
        };
        let span = leg.span.clone();
        let _entered = span.enter();
        tracing::debug!(leg = %id, call_id = %leg.call_id, command = command_name(&command), "SIP leg command");
        match command {
            LegCommand::CallUri { .. } | LegCommand::Originate { .. } => {}
            LegCommand::Ring { early_media } => self.ring(now, &mut leg, early_media),
            LegCommand::Answer { media } => self.answer(now, &mut leg, media),
            LegCommand::Reject { cause } | LegCommand::HangUp { cause } => {
                self.hang_up(now, &mut leg, cause)
            }
            LegCommand::Hold => {
                leg.want_hold = true;
                self.try_reinvite(now, &mut leg);
            }
            LegCommand::Resume => {
                leg.want_hold = false;
                self.try_reinvite(now, &mut leg);
            }
            LegCommand::Reoffer { codecs } => {
                let c: Vec<Codec> = codecs.iter().filter_map(|c| sdp_codec(*c)).collect();
                if !c.is_empty() {
                    leg.want_codecs = Some(c);
                    self.try_reinvite(now, &mut leg);
                }
            }
            LegCommand::SendDigit { digit, duration } => {
                self.send_info_digit(now, &mut leg, digit, duration)
            }
            LegCommand::TransferProgress { status } => {
                self.send_refer_notify(now, &mut leg, status)
            }
        }
        self.put(leg);
        self.run(now);
    }

    fn poll_event(&mut self) -> Option<(LegId, LegEvent)> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let legs = self.leg_timers.peek().map(|Reverse((at, _))| *at);
        let pings = self
            .config
            .peers
            .iter()
            .zip(&self.pings)
            .filter(|(p, _)| p.keepalive.is_some())
            .map(|(_, s)| s.next_at);
        let regs = self.regs.iter().filter_map(|r| r.reg.poll_timeout()).chain(
            (self.regs_pending && !self.config.registrations.is_empty()).then_some(self.created),
        );
        // Lapsed phone bindings are purged when due (lookups ignore them anyway).
        let bindings = self.registrar.as_ref().and_then(Registrar::poll_timeout);
        pings
            .chain(legs)
            .chain(regs)
            .chain(bindings)
            .chain(self.layer.poll_timeout())
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.run(now);
        if let Some(r) = self.registrar.as_mut() {
            r.handle_timeout(now);
        }
        let mut due: Vec<LegId> = Vec::new();
        while let Some(&Reverse((at, id))) = self.leg_timers.peek() {
            if at > now {
                break;
            }
            self.leg_timers.pop();
            let is_due = self
                .legs
                .get(&id)
                .and_then(Leg::next_deadline)
                .is_some_and(|t| t <= now);
            if is_due && !due.contains(&id) {
                due.push(id);
            }
        }
        for id in due {
            let Some(mut leg) = self.take(id) else {
                continue;
            };
            let span = leg.span.clone();
            let _entered = span.enter();
            leg.scheduled = None;
            if leg.reinvite_retry_at.is_some_and(|t| t <= now) {
                leg.reinvite_retry_at = None;
                self.try_reinvite(now, &mut leg);
            }
            let timer = leg.answer.as_mut().map(|a| a.handle_timeout(now));
            match timer {
                Some(AnswerTimer::Resend { dest, bytes }) => {
                    self.push_raw(dest, leg.transport, bytes);
                }
                Some(AnswerTimer::GaveUp) => {
                    leg.answer = None;
                    self.stats.ack_timeouts += 1;
                    let cause = EndCause::q850(102, "the party never ACKed our 2xx");
                    tracing::warn!(leg = %leg.id, call_id = %leg.call_id, "no ACK for our 2xx within 64*T1: hanging up");
                    if leg.phase == Phase::Answered {
                        self.emit(
                            id,
                            LegEvent::HungUp {
                                cause: cause.clone(),
                            },
                        );
                        leg.phase = Phase::Closing;
                    }
                    let cause = leg.bye_after_ack.take().unwrap_or(cause);
                    self.send_bye(now, &mut leg, &cause);
                }
                _ => {}
            }
            self.put(leg);
        }
        for i in 0..self.config.peers.len() {
            let Some(interval) = self.config.peers.get(i).and_then(|p| p.keepalive) else {
                continue;
            };
            let due = self.pings.get(i).is_some_and(|p| p.next_at <= now);
            if due {
                if let Some(p) = self.pings.get_mut(i) {
                    p.next_at = now + interval;
                }
                self.send_ping(now, i);
            }
        }
        self.registration_timers(now);
        self.run(now);
    }

    fn live_legs(&self) -> usize {
        self.legs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_bodies_give_one_digit() {
        assert_eq!(
            parse_dtmf_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Some(('5', Duration::from_millis(160)))
        );
        assert_eq!(
            parse_dtmf_info("application/dtmf-relay", b"Signal=11\r\n"),
            Some(('#', Duration::from_millis(100)))
        );
        assert_eq!(
            parse_dtmf_info("application/dtmf", b"*"),
            Some(('*', Duration::from_millis(100)))
        );
        assert_eq!(
            parse_dtmf_info("application/dtmf-relay", b"Signal=55\r\n"),
            None
        );
        assert_eq!(parse_dtmf_info("text/plain", b"5"), None);
    }

    /// A phone at `phone` (behind a NAT: its Contact names another address) REGISTERs as
    /// carol; returns the final status and the response.
    fn register(
        legs: &mut SipLegs,
        now: Instant,
        phone: SocketAddr,
        password: &str,
        call_id: &str,
        cseq: u32,
        expires: u32,
    ) -> Response {
        register_on(legs, now, phone, password, call_id, cseq, expires, None)
    }

    /// As [`register`], over TCP connection `tcp` when given.
    #[allow(clippy::too_many_arguments)]
    fn register_on(
        legs: &mut SipLegs,
        now: Instant,
        phone: SocketAddr,
        password: &str,
        call_id: &str,
        cseq: u32,
        expires: u32,
        tcp: Option<ConnectionId>,
    ) -> Response {
        use crate::sip::message::Message;
        let (transport, via) = match tcp {
            Some(_) => (Transport::Tcp, "TCP"),
            None => (Transport::Udp, "UDP"),
        };
        let text = format!(
            "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/{via} 10.0.0.9:5062;branch=z9hG4bK{call_id}{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@127.0.0.1>;tag=f{call_id}\r\n\
             To: <sip:carol@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:carol@10.0.0.9:5062>\r\n\
             Expires: {expires}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let parse = |b: &[u8]| match crate::sip::parse::parse_message(b) {
            Ok(Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        };
        legs.handle_received_on(now, text.as_bytes(), phone, transport, tcp);
        let t = legs.poll_transmit().expect("a response to the REGISTER");
        assert_eq!(t.dest, phone, "answered where it came from");
        let challenge = parse(&t.bytes);
        if challenge.status != 401 {
            return challenge;
        }
        let Ok(Message::Request(req)) = crate::sip::parse::parse_message(text.as_bytes()) else {
            panic!("our REGISTER parses");
        };
        let mut client = DigestClient::new("carol", password);
        let authed = client
            .authorize(
                &req,
                &challenge,
                &format!("z9hG4bKa{call_id}{cseq}"),
                "c0ffee",
            )
            .unwrap();
        legs.handle_received_on(now, &authed.to_bytes(), phone, transport, tcp);
        let t = legs
            .poll_transmit()
            .expect("a response to the authorized REGISTER");
        parse(&t.bytes)
    }

    #[test]
    fn phones_register_with_digest_expire_and_unregister() {
        let mut cfg = SipLegsConfig::new(SocketAddr::from(([127, 0, 0, 1], 5060)));
        cfg.users = vec![("carol".into(), "secret".into())];
        let mut legs = SipLegs::new(cfg, LegIds::new());
        let t0 = Instant::now();
        let nat = SocketAddr::from(([192, 0, 2, 7], 40_000));

        // A wrong password: challenged again, no binding.
        let r = register(&mut legs, t0, nat, "wrong", "bad", 1, 120);
        assert_eq!(r.status, 401, "wrong password");
        assert_eq!(legs.registered_bindings(), 0);
        assert_eq!(legs.registered_contact(t0, "carol"), None);

        let r = register(&mut legs, t0, nat, "secret", "reg", 1, 120);
        assert_eq!(r.status, 200);
        let c = legs
            .registered_contact(t0, "carol")
            .expect("carol is registered");
        assert_eq!(
            c.uri, "sip:carol@10.0.0.9:5062",
            "the Request-URI: its Contact"
        );
        assert_eq!(
            c.dest, nat,
            "the INVITE goes where the REGISTER came from (NAT)"
        );
        assert_eq!(c.transport, SipTransportKind::Udp);
        assert_eq!(legs.registered_contact(t0, "dave"), None);

        // The binding lapses after its 120 s; the provider's timer purges it.
        let later = t0 + Duration::from_secs(119);
        assert!(legs.registered_contact(later, "carol").is_some());
        let gone = t0 + Duration::from_secs(121);
        assert_eq!(legs.registered_contact(gone, "carol"), None);
        assert!(legs.poll_timeout().is_some_and(|t| t <= gone));
        legs.handle_timeout(gone);
        assert_eq!(legs.registered_bindings(), 0, "purged");

        // Registered again, then un-REGISTER (Expires: 0).
        let r = register(&mut legs, gone, nat, "secret", "reg2", 1, 120);
        assert_eq!(r.status, 200);
        assert_eq!(legs.registered_bindings(), 1);
        let r = register(&mut legs, gone, nat, "secret", "reg2", 3, 0);
        assert_eq!(r.status, 200);
        assert_eq!(legs.registered_bindings(), 0, "un-REGISTER removed it");
        assert_eq!(legs.registered_contact(gone, "carol"), None);
    }

    #[test]
    fn a_phone_registered_over_tcp_is_reached_on_its_connection_then_at_its_contact() {
        let mut cfg = SipLegsConfig::new(SocketAddr::from(([127, 0, 0, 1], 5060)));
        cfg.users = vec![("carol".into(), "secret".into())];
        let mut legs = SipLegs::new(cfg, LegIds::new());
        let t0 = Instant::now();
        let conn = SocketAddr::from(([10, 0, 0, 9], 51_000));
        let r = register_on(
            &mut legs,
            t0,
            conn,
            "secret",
            "tcp",
            1,
            120,
            Some(ConnectionId(3)),
        );
        assert_eq!(r.status, 200);
        let c = legs.registered_contact(t0, "carol").unwrap();
        assert_eq!(
            (c.dest, c.transport),
            (conn, SipTransportKind::Tcp),
            "its connection"
        );
        legs.connection_closed(ConnectionId(9));
        assert_eq!(legs.registered_contact(t0, "carol").unwrap().dest, conn);
        legs.connection_closed(ConnectionId(3));
        let c = legs.registered_contact(t0, "carol").unwrap();
        assert_eq!(
            (c.dest, c.transport),
            (
                SocketAddr::from(([10, 0, 0, 9], 5062)),
                SipTransportKind::Tcp
            ),
            "the connection is gone: its Contact"
        );
    }

    #[test]
    fn register_without_users_is_refused_405() {
        let cfg = SipLegsConfig::new(SocketAddr::from(([127, 0, 0, 1], 5060)));
        let mut legs = SipLegs::new(cfg, LegIds::new());
        let phone = SocketAddr::from(([127, 0, 0, 1], 5062));
        let r = register(&mut legs, Instant::now(), phone, "x", "r", 1, 60);
        assert_eq!(r.status, 405);
    }

    #[test]
    fn reason_header_is_read() {
        let mut h = crate::sip::message::Headers::new();
        h.push(
            HeaderName::Other("Reason".into()),
            "SIP;cause=200, Q.850;cause=17;text=\"User busy\"",
        );
        assert_eq!(reason_cause(&h), Some(17));
    }
}
