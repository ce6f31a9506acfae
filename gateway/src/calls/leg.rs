//! The technology-neutral leg interface between the call engine and the leg technologies.
//!
//! A *leg* is one party's side of a call: a SIP dialog, a WebRTC peer connection, a TDM
//! B-channel, or a built-in service. A leg technology is a **provider**: it owns the protocol
//! state of its legs, reports what happens on them as [`LegEvent`]s and obeys [`LegCommand`]s.
//! The engine ([`super::engine`]) never sees SIP, SDP, ICE or Q.931 — only these types — so the
//! routing, billing, DTMF and transfer logic is the same for every technology.
//!
//! Audio does not flow through this interface. A leg's media attaches to the media plane in one
//! of three ways ([`MediaAttachment`]):
//! - [`MediaAttachment::Rtp`]: the plane owns the leg's RTP socket (SIP). The engine opens it
//!   (`MediaCommand::OpenRtp`) before it asks the leg to offer or answer, and hands the leg the
//!   local address to put in its SDP; the leg reports what was negotiated ([`NegotiatedMedia`]),
//!   and the engine configures the plane with it.
//! - [`MediaAttachment::Port`]: the leg's IO lives elsewhere (a TDM span thread, a WebRTC task);
//!   the provider hands over a [`PortSlot`] holding the bridge side of its frame rings, which the
//!   shell attaches to the plane.
//! - [`MediaAttachment::Source`]: a built-in service; the plane plays a source to the other leg.
//!
//! # Adding a leg technology
//! 1. Pick its [`LegKind`]. Number legs with the shared [`LegIds`] allocator.
//! 2. For a call *in*: emit [`LegEvent::Incoming`] (caller, callee, Request-URI or dialled
//!    number, source, the media it offers), then obey [`LegCommand::Ring`],
//!    [`LegCommand::Answer`] or [`LegCommand::Reject`].
//! 3. For a call *out*: obey [`LegCommand::Originate`] and report [`LegEvent::Progress`],
//!    [`LegEvent::Alerting`], [`LegEvent::Answered`] or [`LegEvent::Failed`].
//! 4. Either way: report [`LegEvent::HungUp`], digits, hold/resume and transfer requests, and
//!    obey [`LegCommand::HangUp`], [`LegCommand::Hold`], [`LegCommand::Resume`],
//!    [`LegCommand::SendDigit`]. After a leg's terminal event ([`LegEvent::Failed`] or
//!    [`LegEvent::HungUp`]) or after a `HangUp`/`Reject` command, the engine forgets the leg;
//!    the provider releases everything it holds for it (and may finish its own signalling, e.g.
//!    a BYE transaction) and counts it in [`LegProvider::live_legs`] until then.
//! 5. Implement [`LegProvider`] (sans-IO: commands and time in, events out), or drive the same
//!    events and commands over channels from a task; register it with the shell
//!    ([`super::server`]). Routes reach it through its destination kind in the configuration.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A leg's identity, unique in one gateway process across all technologies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LegId(pub u64);

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leg-{}", self.0)
    }
}

/// Hands out [`LegId`]s; clones share one counter, so every provider and the engine can number
/// legs without colliding.
#[derive(Debug, Clone, Default)]
pub struct LegIds(Arc<AtomicU64>);

impl LegIds {
    /// A new allocator starting at 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id.
    pub fn next_id(&self) -> LegId {
        LegId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// The technology of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegKind {
    /// A SIP dialog (trunk, PBX, phone).
    Sip,
    /// A WebRTC peer connection (browser, softphone library).
    WebRtc,
    /// A TDM channel (E1/T1 B-channel, CAS or PRI).
    Tdm,
    /// A built-in service (echo, milliwatt, ...).
    Service,
}

impl LegKind {
    /// Lower-case name for logs, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            LegKind::Sip => "sip",
            LegKind::WebRtc => "webrtc",
            LegKind::Tdm => "tdm",
            LegKind::Service => "service",
        }
    }
}

/// An audio codec a leg can negotiate. The plane transcodes between all of them through linear
/// PCM; the engine avoids that when both legs allow a common codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum AudioCodec {
    /// G.711 µ-law.
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law.
    #[serde(rename = "PCMA")]
    Pcma,
    /// Linear 16-bit PCM at 8 kHz (RFC 3551 L16).
    #[serde(rename = "L16")]
    L16,
    /// Opus (WebRTC legs).
    #[serde(rename = "opus")]
    Opus,
}

impl AudioCodec {
    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::L16 => "L16",
            AudioCodec::Opus => "opus",
        }
    }

    /// Parses a configuration or SDP name (case-insensitive).
    pub fn from_name(name: &str) -> Option<AudioCodec> {
        [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::L16,
            AudioCodec::Opus,
        ]
        .into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// Media direction from *our* side of a leg (what we send to and receive from its party).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaDirection {
    /// Both ways.
    SendRecv,
    /// We send only (the party put us on hold, or we hold it and play it something).
    SendOnly,
    /// We receive only.
    RecvOnly,
    /// No media.
    Inactive,
}

impl MediaDirection {
    /// Whether we send media to the party.
    pub fn sends(self) -> bool {
        matches!(self, MediaDirection::SendRecv | MediaDirection::SendOnly)
    }

    /// Whether we receive media from the party.
    pub fn receives(self) -> bool {
        matches!(self, MediaDirection::SendRecv | MediaDirection::RecvOnly)
    }
}

/// What a party can do with audio, as it offered it (SIP: the SDP offer of an INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaCaps {
    /// Codecs offered, in the party's order of preference.
    pub codecs: Vec<AudioCodec>,
    /// Whether RFC 4733 telephone-event was offered.
    pub telephone_event: bool,
    /// Packetisation time asked for, in ms.
    pub ptime_ms: u16,
}

/// The outcome of a leg's media negotiation: what the plane must send and expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NegotiatedMedia {
    /// The codec in use on this leg.
    pub codec: AudioCodec,
    /// Its RTP payload type (RTP legs).
    pub payload_type: u8,
    /// The telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    /// Packetisation time in ms.
    pub ptime_ms: u16,
    /// Where the party receives RTP (RTP legs).
    pub remote: Option<SocketAddr>,
    /// Where it receives RTCP when not multiplexed.
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP multiplexed on the RTP port.
    pub rtcp_mux: bool,
    /// Our direction.
    pub direction: MediaDirection,
}

pub use crate::media::plane::FramePort;

/// A [`FramePort`] handed from a provider to the shell through an event; the shell takes it
/// out once and attaches it to the plane. Compared by identity.
#[derive(Clone)]
pub struct PortSlot(Arc<Mutex<Option<Box<dyn FramePort>>>>);

impl PortSlot {
    /// A slot holding `port`.
    pub fn new(port: Box<dyn FramePort>) -> Self {
        PortSlot(Arc::new(Mutex::new(Some(port))))
    }

    /// A slot whose port arrives later (a leg that reports it when it answers).
    pub fn empty() -> Self {
        PortSlot(Arc::new(Mutex::new(None)))
    }

    /// Takes the port out (`None` if already taken).
    pub fn take(&self) -> Option<Box<dyn FramePort>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl fmt::Debug for PortSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PortSlot")
    }
}

impl PartialEq for PortSlot {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PortSlot {}

/// A built-in audio source a service leg stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// Echoes the caller's audio back.
    Echo,
    /// 1004 Hz at 0 dBm0.
    Milliwatt,
}

impl ServiceKind {
    /// The name used in routes and request URIs (`sip:echo@GATEWAY`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Echo => "echo",
            ServiceKind::Milliwatt => "milliwatt",
        }
    }

    /// Parses a service name.
    pub fn from_name(name: &str) -> Option<ServiceKind> {
        [ServiceKind::Echo, ServiceKind::Milliwatt]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

/// How a leg's audio reaches the media plane.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MediaAttachment {
    /// An RTP leg the plane owns; the engine opens it and passes its address to the leg.
    #[default]
    Rtp,
    /// An external leg's frame rings.
    Port(PortSlot),
    /// A service: the plane plays this source to the other leg.
    Source(ServiceKind),
}

/// Where an incoming call came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegSource {
    /// A network address (SIP, WebRTC signalling).
    Address(SocketAddr),
    /// A TDM channel.
    Channel {
        /// Span number.
        span: u32,
        /// Channel number within the span.
        channel: u32,
    },
}

/// A call arriving on a leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncomingCall {
    /// Calling party number or user (SIP: From user), as presented.
    pub caller: String,
    /// Calling party display name, if any.
    pub caller_name: Option<String>,
    /// The called number or user (SIP: Request-URI user; TDM: dialled digits).
    pub callee: String,
    /// The full request URI (SIP) or a `tel:` form of the dialled number.
    pub request_uri: String,
    /// Where it came from.
    pub source: LegSource,
    /// The configured trunk it came in on, if the provider recognised one.
    pub trunk: Option<String>,
    /// The authenticated user, if the provider authenticated the caller (digest).
    pub authenticated: Option<String>,
    /// What the caller offered for audio (`None`: no offer yet, e.g. a SIP late offer).
    pub media: Option<MediaCaps>,
    /// Hops left after us (SIP Max-Forwards − 1), passed on to the outbound leg.
    pub max_forwards: Option<u8>,
    /// How its audio attaches to the plane.
    #[serde(skip)]
    pub attachment: MediaAttachment,
}

/// Why a leg ended or failed: a Q.850 cause always, and the SIP status when SIP said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndCause {
    /// Q.850 cause value (16 = normal clearing).
    pub q850: u8,
    /// The SIP final status that failed the leg, if any.
    pub sip_status: Option<u16>,
    /// Human-readable detail for logs and CDRs.
    pub text: String,
}

impl EndCause {
    /// Normal call clearing (Q.850 16).
    pub fn normal(text: impl Into<String>) -> Self {
        EndCause {
            q850: 16,
            sip_status: None,
            text: text.into(),
        }
    }

    /// A Q.850 cause without a SIP status.
    pub fn q850(cause: u8, text: impl Into<String>) -> Self {
        EndCause {
            q850: cause,
            sip_status: None,
            text: text.into(),
        }
    }

    /// A SIP final status, with its RFC 3398 Q.850 cause.
    pub fn sip(status: u16, text: impl Into<String>) -> Self {
        EndCause {
            q850: super::q850::cause_for_sip_status(status),
            sip_status: Some(status),
            text: text.into(),
        }
    }

    /// The SIP status to send to a SIP party for this cause: the original status when it came
    /// from SIP and means the same to any caller (486, 603, 404, ...), else the RFC 3398
    /// mapping of the Q.850 cause. Statuses about our own request (401/407 challenges, 420,
    /// 423, 491, 481, 3xx) are never relayed as they are.
    pub fn sip_status_for_relay(&self) -> u16 {
        if let Some(s) = self.sip_status
            && (400..700).contains(&s)
            && !matches!(s, 401 | 407 | 420 | 421 | 422 | 423 | 481 | 491 | 494)
        {
            return s;
        }
        super::q850::sip_status_for_cause(self.q850).unwrap_or(480)
    }
}

/// A DTMF digit's way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigitSource {
    /// RFC 4733 telephone-event.
    Rfc4733,
    /// SIP INFO (application/dtmf-relay or application/dtmf).
    SipInfo,
    /// In-band tones (detected by the plane).
    Inband,
    /// A signalling message of another technology (WebRTC data, Q.931 keypad).
    Signalling,
}

/// How to send DTMF to a leg's party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DtmfMode {
    /// RFC 4733 when negotiated, else in-band (the plane decides per leg).
    #[default]
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay`).
    Info,
    /// In-band tones only.
    Inband,
}

/// Where an outbound leg goes (interpreted by the provider of its kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A SIP request URI sent to `dest` (next hop).
    Sip {
        /// The Request-URI.
        uri: String,
        /// The next hop's address.
        dest: SocketAddr,
        /// `udp`, `tcp` or `tls`.
        transport: SipTransportKind,
        /// Credentials for a 401/407 from this destination (user, password).
        #[serde(skip)]
        credentials: Option<(String, String)>,
        /// The trunk's name, for logs and counters.
        trunk: Option<String>,
    },
    /// A number on a TDM span group (the provider hunts a channel).
    Tdm {
        /// The span group.
        group: String,
        /// The number to dial.
        number: String,
    },
    /// A WebRTC endpoint (a registered browser, an agent page) by its identity.
    WebRtc {
        /// Who.
        endpoint: String,
    },
    /// A built-in service.
    Service(ServiceKind),
}

/// SIP transport of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SipTransportKind {
    /// UDP.
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

/// Our media for an offer (outbound leg) or an answer (inbound leg).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalMedia {
    /// Our RTP address on this leg (RTP legs; `None` for others).
    pub address: Option<SocketAddr>,
    /// Codecs in order of preference: offered in this order, or the first the offer contains
    /// is answered.
    pub codecs: Vec<AudioCodec>,
    /// Offer/accept telephone-event.
    pub telephone_event: bool,
    /// Packetisation time in ms.
    pub ptime_ms: u16,
}

/// What the engine asks a leg to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegCommand {
    /// The call this leg belongs to, told once before any other command for the leg (an
    /// outbound leg: just before its [`LegCommand::Originate`], so the provider may not know the
    /// leg yet). Changes nothing on the wire: the provider logs the leg's lines inside a
    /// `call` span with this `uri` (see [`call_span`]) so that every log line of a call
    /// carries its URI.
    CallUri {
        /// The call's URI.
        uri: crate::control::CallUri,
    },
    /// Place a call (this leg is new; the provider learns its id here).
    Originate {
        /// Where to.
        target: Target,
        /// Calling number/user to present.
        caller: String,
        /// Calling name to present.
        caller_name: Option<String>,
        /// Our media offer.
        media: LocalMedia,
        /// Hops left (SIP Max-Forwards) so loops through other gateways end.
        max_forwards: u8,
    },
    /// Tell the caller it is ringing; with media, open early media (SIP 183 with an answer).
    Ring {
        /// Early media to answer with.
        early_media: Option<LocalMedia>,
    },
    /// Answer the call.
    Answer {
        /// Our media answer.
        media: LocalMedia,
    },
    /// Refuse an incoming call that is not answered.
    Reject {
        /// Why.
        cause: EndCause,
    },
    /// End the leg: hang up an answered call, cancel an outbound one, reject an inbound one.
    HangUp {
        /// Why.
        cause: EndCause,
    },
    /// Put the party on hold (we stop expecting its audio and play it ours).
    Hold,
    /// Take the party off hold.
    Resume,
    /// Offer the party a new codec list (to stop transcoding after the other side changed).
    Reoffer {
        /// Codecs, preferred first.
        codecs: Vec<AudioCodec>,
    },
    /// Send a digit by signalling (SIP INFO); RTP/in-band digits go through the plane.
    SendDigit {
        /// `0-9`, `*`, `#`, `A-D`.
        digit: char,
        /// How long.
        duration: Duration,
    },
    /// Report the progress of a transfer the party asked for (SIP: NOTIFY with a sipfrag).
    TransferProgress {
        /// The status line to report (100, 180, 200, 486, ...).
        status: u16,
    },
}

/// What a leg reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// A new call arrived on this (new) leg.
    Incoming(IncomingCall),
    /// The far end made progress (SIP 183 with SDP, Q.931 PROGRESS with in-band information).
    /// Early media flows when it carries negotiated media (RTP legs) or a port (legs whose
    /// audio lives elsewhere, e.g. a TDM B-channel); the same port comes again in
    /// [`LegEvent::Answered`] and is then attached already.
    Progress {
        /// Early media, if negotiated (RTP legs).
        media: Option<NegotiatedMedia>,
        /// How the leg's early audio attaches: [`MediaAttachment::Port`] for a port leg with
        /// in-band information, [`MediaAttachment::Rtp`] (the default) otherwise.
        attachment: MediaAttachment,
    },
    /// The far end is alerting (SIP 180, Q.931 ALERTING).
    Alerting,
    /// The far end answered.
    Answered {
        /// Media as negotiated (RTP legs); `None` for ports and services.
        media: Option<NegotiatedMedia>,
        /// How the leg's audio attaches (outbound legs tell it here).
        attachment: MediaAttachment,
    },
    /// The leg's media changed (our answer was accepted, a re-INVITE moved or re-coded it).
    MediaChanged {
        /// The new parameters.
        media: NegotiatedMedia,
    },
    /// An outbound leg failed before answer, or an inbound caller gave up (CANCEL).
    Failed {
        /// Why.
        cause: EndCause,
    },
    /// The party hung up after answer (or the leg's transport gave up).
    HungUp {
        /// Why.
        cause: EndCause,
    },
    /// The party sent a digit by signalling (SIP INFO, Q.931 keypad).
    Digit {
        /// The digit.
        digit: char,
        /// How long it was pressed.
        duration: Duration,
        /// How it came.
        source: DigitSource,
    },
    /// The party put us on hold.
    Hold,
    /// The party took us off hold.
    Resume,
    /// The party asked to transfer the call (SIP REFER).
    TransferRequest {
        /// Where to (SIP: the Refer-To URI).
        target: String,
        /// Attended: the dialog to replace (SIP Replaces), as `call-id;to-tag=..;from-tag=..`.
        replaces: Option<String>,
    },
}

/// A leg technology, sans-IO. The shell feeds it commands and time and drains its events; how
/// it talks to its network or device is its own business (SIP adds a datagram input and a
/// transmit output of its own).
pub trait LegProvider {
    /// The kind of legs it provides.
    fn kind(&self) -> LegKind;
    /// Obeys a command for `leg`.
    fn handle_command(&mut self, now: Instant, leg: LegId, command: LegCommand);
    /// The next event.
    fn poll_event(&mut self) -> Option<(LegId, LegEvent)>;
    /// When [`LegProvider::handle_timeout`] must run next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Runs timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// Legs it still holds resources for (tests assert 0 after calls).
    fn live_legs(&self) -> usize;
}

/// The tracing span a call's log lines run in: `call` with the field `uri` (the engine's own
/// span of the call has the same shape, so JSON logs carry `span.uri` either way).
pub fn call_span(uri: &crate::control::CallUri) -> tracing::Span {
    tracing::info_span!("call", uri = %uri)
}

/// Each leg's `call` span, kept by a provider (from [`LegCommand::CallUri`]) and entered for
/// the leg's log lines.
#[derive(Debug, Default)]
pub struct LegSpans(std::collections::HashMap<LegId, tracing::Span>);

impl LegSpans {
    /// The leg's span, or none when the leg was never told its call.
    pub fn get(&self, leg: LegId) -> tracing::Span {
        self.0
            .get(&leg)
            .cloned()
            .unwrap_or_else(tracing::Span::none)
    }

    /// Sets the leg's span.
    pub fn insert(&mut self, leg: LegId, span: tracing::Span) {
        self.0.insert(leg, span);
    }

    /// Forgets the leg's span.
    pub fn remove(&mut self, leg: LegId) {
        self.0.remove(&leg);
    }

    /// Records the call `uri` told for `leg`. An outbound leg is told before its Originate and
    /// an inbound one may be gone by then, so spans of legs `live` no longer has are pruned
    /// whenever the map outgrows the `live_count` legs.
    pub fn told(
        &mut self,
        leg: LegId,
        uri: &crate::control::CallUri,
        live_count: usize,
        live: impl Fn(&LegId) -> bool,
    ) {
        if self.0.len() > 2 * live_count + 16 {
            self.0.retain(|id, _| live(id));
        }
        self.0.insert(leg, call_span(uri));
    }
}

/// Parses a local IP for media, falling back to loopback (used by providers' defaults).
pub fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_status_keeps_user_meaning_and_hides_our_own_challenges() {
        assert_eq!(EndCause::sip(486, "busy").sip_status_for_relay(), 486);
        assert_eq!(EndCause::sip(603, "decline").sip_status_for_relay(), 603);
        // A trunk's challenge to us is not the caller's business: call rejected (21) -> 403.
        assert_eq!(EndCause::sip(401, "auth").sip_status_for_relay(), 403);
        assert_eq!(EndCause::sip(407, "auth").sip_status_for_relay(), 403);
        // A TDM cause: 17 user busy -> 486, 34 no circuit -> 503.
        assert_eq!(EndCause::q850(17, "busy").sip_status_for_relay(), 486);
        assert_eq!(EndCause::q850(34, "no circuit").sip_status_for_relay(), 503);
        // Normal clearing before answer has no response of its own: 480.
        assert_eq!(EndCause::normal("gone").sip_status_for_relay(), 480);
    }

    #[test]
    fn ids_are_shared_between_clones() {
        let a = LegIds::new();
        let b = a.clone();
        assert_eq!(a.next_id(), LegId(1));
        assert_eq!(b.next_id(), LegId(2));
    }

    #[test]
    fn codec_names_round_trip() {
        for c in [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::L16,
            AudioCodec::Opus,
        ] {
            assert_eq!(AudioCodec::from_name(c.name()), Some(c));
        }
        assert_eq!(AudioCodec::from_name("pcmu"), Some(AudioCodec::Pcmu));
        assert_eq!(AudioCodec::from_name("G729"), None);
    }
}
