//! WebRTC legs: browsers and other WebRTC peers as call legs, with webrtc-rs 0.21 (`webrtc`,
//! `rtc` for its types) doing ICE, DTLS-SRTP, RTCP and the SDP offer/answer.
//!
//! A leg's audio is 20 ms 8 kHz linear frames through a [`LegEndpoint`]: the leg's task holds
//! the endpoint, and [`RtcLegs::answer`] / [`RtcLegs::offer`] hand the matching
//! [`BridgePort`] to the caller, who gives it to the media plane (or a [`Bridge`]) so the leg
//! bridges to SIP, TDM or another WebRTC leg like any other. Decoding, PLC/FEC, the jitter
//! buffer and RFC 4733 are the sans-IO [`media::RtcMedia`].
//!
//! What is fixed here, and why (see also `../shared/peers.md`):
//! - ICE host candidates only on the configured addresses (never a wildcard: webrtc-rs expands
//!   `0.0.0.0` per interface and skips loopback), plus optionally a public NAT 1:1 address;
//!   the STUN/TURN servers in the configuration are for clients ([`RtcLegs::client_ice_servers`]),
//!   the gateway itself sits on a routable or 1:1-mapped address. mDNS off.
//! - As answerer we are the DTLS server (`a=setup:passive`): as a client webrtc-rs' first
//!   handshake flight waits for a timer tick (~200 ms). rtcp-mux and BUNDLE are what webrtc-rs
//!   negotiates (max-bundle, require-mux); the codecs are only those configured, with
//!   telephone-event at 8 kHz (G.711) and 48 kHz (Opus).
//! - Signalling loss: [`RtcLegs::signalling_lost`] starts the grace period (30 s by default);
//!   the leg and its media stay up, and [`RtcLegs::reattach`] by the call URI within the grace
//!   period gives the signalling layer the leg back. After it the leg ends with
//!   [`CloseReason::GraceExpired`].
//!
//! [`Bridge`]: crate::media::bridge::Bridge

pub mod config;
pub mod http;
pub mod media;
pub mod provider;
pub mod sipws;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codecs::opus::{MAX_PACKET, OpusSettings};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT, MediaEngine,
};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::statistics::report::RTCStatsReportEntry;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateType, RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngineBuilder, StatsSelector, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use self::media::{Negotiated, RtcCodec, RtcMedia};
use crate::media::bridge::{BridgePort, DEFAULT_RING_FRAMES, Frame, LegEndpoint, leg_rings};
use crate::media::rtp::RtpPacket;

/// Payload type we offer for telephone-event/8000 (Chromium's number).
pub const TELEPHONE_EVENT_8K_PT: u8 = 126;
/// Payload type we offer for telephone-event/48000 (Chromium's number).
pub const TELEPHONE_EVENT_48K_PT: u8 = 110;
/// Payload type we offer for Opus.
pub const OPUS_PT: u8 = 111;

/// How a public (NAT 1:1) address is advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublicAddressMode {
    /// As an extra server-reflexive candidate beside the host candidates (peers on the private
    /// side still reach the host address).
    #[default]
    Add,
    /// Instead of the host address in host candidates (the private address is never shown).
    Replace,
}

/// A STUN or TURN server handed to clients.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:...`.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

/// Settings of the WebRTC leg provider.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// Addresses to gather host candidates on (one UDP socket each per leg, ephemeral port).
    pub host_addresses: Vec<IpAddr>,
    /// Public address of a 1:1 NAT in front of the gateway.
    pub public_address: Option<IpAddr>,
    /// How the public address is advertised.
    pub public_address_mode: PublicAddressMode,
    /// STUN/TURN servers for clients (not used by the gateway itself).
    pub ice_servers: Vec<IceServer>,
    /// Codecs to negotiate, most preferred first.
    pub codecs: Vec<RtcCodec>,
    /// Opus encoder settings.
    pub opus: OpusSettings,
    /// How long a leg survives the loss of its signalling.
    pub grace: Duration,
    /// Frames per ring between the leg and the bridge.
    pub ring_frames: usize,
    /// Longest wait for ICE gathering before the SDP is returned.
    pub gather_timeout: Duration,
    /// A leg whose ICE/DTLS does not connect within this time after the SDP exchange fails.
    pub connect_timeout: Duration,
    /// A connected leg whose peer sends no RTP for this long ends with
    /// [`CloseReason::MediaTimeout`] (a closed tab: webrtc-rs does not report the peer's DTLS
    /// close as a closed connection, and ICE takes ~30 s to fail). `Duration::ZERO`: never.
    pub media_timeout: Duration,
    /// UDP ports for ICE sockets (`None`: ephemeral). A free port is probed in turn from the
    /// range for each host address of a new leg.
    pub port_range: Option<std::ops::RangeInclusive<u16>>,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            host_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            public_address: None,
            public_address_mode: PublicAddressMode::Add,
            ice_servers: Vec::new(),
            codecs: vec![RtcCodec::Opus, RtcCodec::Pcmu, RtcCodec::Pcma],
            opus: OpusSettings::default(),
            grace: Duration::from_secs(30),
            ring_frames: DEFAULT_RING_FRAMES,
            gather_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(20),
            media_timeout: Duration::from_secs(10),
            port_range: None,
        }
    }
}

/// Why a WebRTC operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RtcError {
    /// The offer or answer offers no codec we are configured for.
    #[error("no common audio codec: the peer offers none of {ours:?}")]
    NoCommonCodec {
        /// What we accept.
        ours: Vec<RtcCodec>,
    },
    /// The SDP has no audio section.
    #[error("the SDP has no audio m-line")]
    NoAudio,
    /// webrtc-rs refused (bad SDP, wrong signalling state, socket errors).
    #[error("webrtc: {0}")]
    Webrtc(String),
    /// ICE gathering did not finish in time.
    #[error("ICE gathering did not complete within {0:?}")]
    GatherTimeout(Duration),
    /// No leg with that call URI.
    #[error("no WebRTC leg for call {0}")]
    UnknownCall(String),
    /// A leg with that call URI exists already.
    #[error("a WebRTC leg for call {0} exists already")]
    DuplicateCall(String),
    /// The leg has ended.
    #[error("the leg has ended")]
    Closed,
    /// Opus refused its settings.
    #[error("codec: {0}")]
    Codec(#[from] codecs::CodecError),
    /// A digit that cannot be sent.
    #[error("digit: {0}")]
    Digit(String),
}

fn werr(e: impl std::fmt::Display) -> RtcError {
    RtcError::Webrtc(e.to_string())
}

/// Why a leg ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseReason {
    /// [`RtcLeg::hangup`].
    Hangup,
    /// The peer closed the connection (DTLS close_notify / connection closed).
    PeerClosed,
    /// ICE or DTLS failed (or never connected in time).
    Failed(String),
    /// The grace period after signalling loss ended without a re-attach.
    GraceExpired,
    /// The connected peer sent no RTP for the media timeout (it went away).
    MediaTimeout,
}

/// Leg-level events for the call engine.
#[derive(Debug, Clone, PartialEq)]
pub enum RtcEvent {
    /// ICE and DTLS are up: media flows (the leg is "answered" in media terms).
    Connected,
    /// ICE connectivity changed (checking, connected, disconnected, ...).
    IceState(String),
    /// A digit from the peer (RFC 4733), once per key press.
    Digit {
        /// 0-9, *, #, A-D.
        digit: char,
        /// How long it was held.
        duration: Duration,
    },
    /// The signalling went away; the leg ends unless re-attached before the grace period ends.
    SignallingLost {
        /// The grace period.
        grace: Duration,
    },
    /// The signalling came back ([`RtcLegs::reattach`]).
    Reattached,
    /// The leg has ended; everything it held is released.
    Closed(CloseReason),
}

/// What `gwctl calls` shows of a WebRTC leg.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RtcLegStats {
    /// The call's URI.
    pub call_uri: String,
    /// ICE transport state (new, checking, connected, completed, disconnected, failed, closed).
    pub ice_state: String,
    /// Selected candidate pair: local address, remote address (with candidate types).
    pub selected_pair: Option<(String, String)>,
    /// DTLS transport state.
    pub dtls_state: String,
    /// DTLS role we play (server when answering).
    pub dtls_role: String,
    /// SRTP protection profile.
    pub srtp_profile: String,
    /// Negotiated codec (e.g. `opus/48000`, `PCMU/8000`) and payload type.
    pub codec: Option<String>,
    /// Round-trip time on the selected pair (STUN consent checks), ms.
    pub rtt_ms: Option<f64>,
    /// Packets lost from the peer (expected − received).
    pub packets_lost: i64,
    /// Share of the peer's packets lost, percent.
    pub loss_percent: f64,
    /// Interarrival jitter of the peer's stream, ms.
    pub jitter_ms: f64,
    /// Audio packets received / sent.
    pub packets_received: u64,
    /// Audio packets sent.
    pub packets_sent: u64,
    /// Lost Opus frames rebuilt from FEC.
    pub fec_recovered: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Whether the signalling is attached; otherwise seconds left of the grace period.
    pub grace_left_s: Option<f64>,
}

/// Media counters of one leg (see [`RtcLeg::media_counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RtcMediaCounters {
    /// Audio packets received.
    pub received: u64,
    /// Audio packets sent.
    pub sent: u64,
    /// Packets lost from the peer (expected − received).
    pub lost: i64,
    /// Packets expected from the peer (sequence span).
    pub expected: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct MediaSnapshot {
    negotiated: Option<Negotiated>,
    received: u64,
    sent: u64,
    lost: i64,
    expected: u64,
    jitter_ms: f64,
    fec_recovered: u64,
    concealed: u64,
}

enum Cmd {
    Start(Negotiated),
    Digit(char),
    Close(CloseReason),
}

struct Shared {
    call_uri: String,
    pc: Arc<dyn PeerConnection>,
    sender: Arc<dyn RtpSender>,
    cmd: mpsc::UnboundedSender<Cmd>,
    events: Mutex<Option<mpsc::UnboundedReceiver<RtcEvent>>>,
    events_tx: mpsc::UnboundedSender<RtcEvent>,
    gathered: watch::Receiver<bool>,
    grace: Duration,
    snapshot: Mutex<MediaSnapshot>,
    /// Detached since, and the generation of the detach (re-attach bumps it).
    detached: Mutex<(Option<Instant>, u64)>,
    closed: watch::Receiver<bool>,
}

/// A handle on one WebRTC leg (cheap to clone; the leg lives until hung up, failed or expired).
#[derive(Clone)]
pub struct RtcLeg {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcLeg")
            .field("call_uri", &self.shared.call_uri)
            .finish_non_exhaustive()
    }
}

/// A leg created by [`RtcLegs::answer`] or [`RtcLegs::offer`].
#[derive(Debug)]
pub struct NewLeg {
    /// The leg.
    pub leg: RtcLeg,
    /// Our SDP (answer or offer), with all candidates (non-trickle).
    pub sdp: String,
    /// The bridge side of the leg's rings: give it to the media plane.
    pub port: BridgePort,
}

impl RtcLeg {
    /// The call URI the leg was created with.
    pub fn call_uri(&self) -> &str {
        &self.shared.call_uri
    }

    /// The leg's events; `None` after the first call (one consumer: the engine).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<RtcEvent>> {
        self.shared.events.lock().ok()?.take()
    }

    /// Applies the peer's answer to our offer ([`RtcLegs::offer`]); media starts.
    ///
    /// # Errors
    /// Bad SDP, no common codec, or the leg has ended.
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), RtcError> {
        if *self.shared.closed.borrow() {
            return Err(RtcError::Closed);
        }
        let desc = RTCSessionDescription::answer(sdp.to_owned()).map_err(werr)?;
        self.shared
            .pc
            .set_remote_description(desc)
            .await
            .map_err(werr)?;
        let neg = negotiated(&*self.shared.sender).await?;
        self.shared
            .cmd
            .send(Cmd::Start(neg))
            .map_err(|_| RtcError::Closed)
    }

    /// Sends a digit to the peer as RFC 4733 events (100 ms tone, queued behind earlier ones).
    ///
    /// # Errors
    /// Not a DTMF digit, or the leg has ended.
    pub fn send_digit(&self, digit: char) -> Result<(), RtcError> {
        if crate::media::dtmf::digit_to_event(digit).is_none() {
            return Err(RtcError::Digit(format!("{digit:?} is not a DTMF digit")));
        }
        self.shared
            .cmd
            .send(Cmd::Digit(digit))
            .map_err(|_| RtcError::Closed)
    }

    /// Ends the leg: the peer connection is closed, the rings are released,
    /// [`RtcEvent::Closed`] follows. Idempotent.
    pub fn hangup(&self) {
        let _ = self.shared.cmd.send(Cmd::Close(CloseReason::Hangup));
    }

    /// Whether the leg has ended.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Waits until the leg has ended (bounded by `timeout`); true if it has.
    pub async fn closed(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.closed.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok()
    }

    /// Media counters only (received, sent, lost, expected), from the leg's last publication
    /// (every 0.5 s): cheap, no call into webrtc-rs.
    pub fn media_counters(&self) -> RtcMediaCounters {
        self.shared
            .snapshot
            .lock()
            .map(|m| RtcMediaCounters {
                received: m.received,
                sent: m.sent,
                lost: m.lost,
                expected: m.expected,
            })
            .unwrap_or_default()
    }

    /// Transport and media figures for `gwctl calls`.
    pub async fn stats(&self) -> RtcLegStats {
        let mut s = RtcLegStats {
            call_uri: self.shared.call_uri.clone(),
            ..RtcLegStats::default()
        };
        let report = self
            .shared
            .pc
            .get_stats(Instant::now(), StatsSelector::None)
            .await;
        if let Some(t) = report.transport() {
            s.ice_state = t.ice_state.to_string();
            s.dtls_state = t.dtls_state.to_string();
            s.dtls_role = t.dtls_role.to_string();
            s.srtp_profile = t.srtp_cipher.clone();
            if let Some(RTCStatsReportEntry::IceCandidatePair(p)) =
                report.get(&t.selected_candidate_pair_id)
            {
                s.rtt_ms = Some(p.current_round_trip_time * 1000.0);
            }
        }
        if let Ok(Some(dtls)) = self.shared.sender.transport().await
            && let Ok(Some(pair)) = dtls.ice_transport().get_selected_candidate_pair().await
        {
            let describe = |c: &rtc::peer_connection::transport::RTCIceCandidate| {
                format!("{}:{} {}", c.address, c.port, c.typ)
            };
            s.selected_pair = Some((describe(pair.local()), describe(pair.remote())));
        }
        if let Ok(m) = self.shared.snapshot.lock() {
            s.codec = m
                .negotiated
                .map(|n| format!("{} pt {}", n.codec, n.payload_type));
            s.packets_lost = m.lost;
            s.loss_percent = if m.expected > 0 {
                m.lost.max(0) as f64 * 100.0 / m.expected as f64
            } else {
                0.0
            };
            s.jitter_ms = m.jitter_ms;
            s.packets_received = m.received;
            s.packets_sent = m.sent;
            s.fec_recovered = m.fec_recovered;
            s.concealed = m.concealed;
        }
        if let Ok(d) = self.shared.detached.lock()
            && let Some(since) = d.0
        {
            s.grace_left_s = Some(
                self.shared
                    .grace
                    .saturating_sub(since.elapsed())
                    .as_secs_f64(),
            );
        }
        s
    }
}

/// The WebRTC leg provider: creates legs and finds them again by call URI.
#[derive(Clone)]
pub struct RtcLegs {
    inner: Arc<Provider>,
}

struct Provider {
    cfg: RtcConfig,
    legs: Mutex<HashMap<String, RtcLeg>>,
    next_port: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for RtcLegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcLegs")
            .field("config", &self.inner.cfg)
            .field("legs", &self.live())
            .finish()
    }
}

#[derive(Clone)]
struct Handler {
    events: mpsc::UnboundedSender<RtcEvent>,
    gathered: watch::Sender<bool>,
    state: mpsc::UnboundedSender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.events.send(RtcEvent::IceState(state.to_string()));
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

fn codec_parameters(codec: RtcCodec) -> RTCRtpCodecParameters {
    let (mime, clock, channels, fmtp, pt) = match codec {
        RtcCodec::Opus => (
            MIME_TYPE_OPUS,
            48000,
            2,
            "minptime=10;useinbandfec=1",
            OPUS_PT,
        ),
        RtcCodec::Pcmu => (MIME_TYPE_PCMU, 8000, 0, "", 0),
        RtcCodec::Pcma => (MIME_TYPE_PCMA, 8000, 0, "", 8),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: clock,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

fn telephone_event(clock: u32) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_TELEPHONE_EVENT.to_owned(),
            clock_rate: clock,
            channels: 0,
            sdp_fmtp_line: "0-16".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: if clock == 48000 {
            TELEPHONE_EVENT_48K_PT
        } else {
            TELEPHONE_EVENT_8K_PT
        },
    }
}

/// Which of `ours` the SDP offers, by encoding name in its audio section; the first of ours.
pub fn choose_codec(sdp: &str, ours: &[RtcCodec]) -> Result<RtcCodec, RtcError> {
    let lower = sdp.to_ascii_lowercase();
    let audio = lower
        .split("\nm=")
        .find(|m| m.starts_with("audio ") || m.starts_with("m=audio "))
        .ok_or(RtcError::NoAudio)?;
    let offered = |name: &str| {
        audio.lines().any(|l| {
            l.strip_prefix("a=rtpmap:")
                .and_then(|r| r.split_once(' '))
                .is_some_and(|(_, enc)| enc.trim().starts_with(name))
        })
    };
    ours.iter()
        .copied()
        .find(|c| {
            offered(match c {
                RtcCodec::Opus => "opus/48000",
                RtcCodec::Pcmu => "pcmu/8000",
                RtcCodec::Pcma => "pcma/8000",
            })
        })
        .ok_or_else(|| RtcError::NoCommonCodec {
            ours: ours.to_vec(),
        })
}

/// The codec, payload types and SSRC negotiated on `sender` (after both descriptions are set).
async fn negotiated(sender: &dyn RtpSender) -> Result<Negotiated, RtcError> {
    let params = sender.get_parameters().await.map_err(werr)?;
    let ssrc = params
        .encodings
        .iter()
        .find_map(|e| e.rtp_coding_parameters.ssrc)
        .ok_or_else(|| RtcError::Webrtc("sender has no SSRC".into()))?;
    let codecs = &params.rtp_parameters.codecs;
    let (codec, payload_type) = codecs
        .iter()
        .find_map(|c| {
            let mime = c.rtp_codec.mime_type.to_ascii_lowercase();
            let codec = match mime.as_str() {
                "audio/opus" => RtcCodec::Opus,
                "audio/pcmu" => RtcCodec::Pcmu,
                "audio/pcma" => RtcCodec::Pcma,
                _ => return None,
            };
            Some((codec, c.payload_type))
        })
        .ok_or(RtcError::NoCommonCodec { ours: vec![] })?;
    let telephone_event = codecs
        .iter()
        .find(|c| {
            c.rtp_codec
                .mime_type
                .eq_ignore_ascii_case(MIME_TYPE_TELEPHONE_EVENT)
                && c.rtp_codec.clock_rate == codec.clock_rate()
        })
        .map(|c| c.payload_type);
    Ok(Negotiated {
        codec,
        payload_type,
        telephone_event,
        ssrc,
    })
}

impl RtcLegs {
    /// A provider with `cfg`.
    pub fn new(cfg: RtcConfig) -> Self {
        Self {
            inner: Arc::new(Provider {
                cfg,
                legs: Mutex::new(HashMap::new()),
                next_port: std::sync::atomic::AtomicU32::new(0),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RtcConfig {
        &self.inner.cfg
    }

    /// The STUN/TURN servers to hand to clients (for an `RTCPeerConnection` configuration).
    pub fn client_ice_servers(&self) -> &[IceServer] {
        &self.inner.cfg.ice_servers
    }

    /// Legs alive (tests assert 0 after every call ends).
    pub fn live(&self) -> usize {
        self.inner.legs.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Every live leg with its call URI (key), sorted by key.
    pub fn all(&self) -> Vec<(String, RtcLeg)> {
        let mut v: Vec<(String, RtcLeg)> = self
            .inner
            .legs
            .lock()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The leg of a call, if it exists.
    pub fn find(&self, call_uri: &str) -> Option<RtcLeg> {
        self.inner.legs.lock().ok()?.get(call_uri).cloned()
    }

    /// Answers a peer's offer (non-trickle): returns the leg, our answer with all candidates,
    /// and the bridge side of the leg's rings. Media starts when ICE and DTLS connect.
    ///
    /// # Errors
    /// Bad or audio-less SDP, no common codec, a duplicate call URI, sockets that cannot be
    /// bound, ICE gathering that does not finish.
    pub async fn answer(&self, call_uri: &str, offer: &str) -> Result<NewLeg, RtcError> {
        let codec = choose_codec(offer, &self.inner.cfg.codecs)?;
        let (leg, port) = self.create(call_uri, codec).await?;
        let result = async {
            let pc = &leg.shared.pc;
            let desc = RTCSessionDescription::offer(offer.to_owned()).map_err(werr)?;
            pc.set_remote_description(desc).await.map_err(werr)?;
            let answer = pc.create_answer(None).await.map_err(werr)?;
            pc.set_local_description(answer).await.map_err(werr)?;
            let sdp = self.gathered_sdp(&leg).await?;
            let neg = negotiated(&*leg.shared.sender).await?;
            leg.shared
                .cmd
                .send(Cmd::Start(neg))
                .map_err(|_| RtcError::Closed)?;
            Ok::<_, RtcError>(sdp)
        }
        .await;
        match result {
            Ok(sdp) => Ok(NewLeg { leg, sdp, port }),
            Err(e) => {
                let _ = leg
                    .shared
                    .cmd
                    .send(Cmd::Close(CloseReason::Failed(e.to_string())));
                Err(e)
            }
        }
    }

    /// Makes an offer (non-trickle) for a new leg, with the configured codecs; apply the peer's
    /// answer with [`RtcLeg::accept_answer`].
    ///
    /// # Errors
    /// As [`RtcLegs::answer`].
    pub async fn offer(&self, call_uri: &str) -> Result<NewLeg, RtcError> {
        let first = *self
            .inner
            .cfg
            .codecs
            .first()
            .ok_or(RtcError::NoCommonCodec { ours: vec![] })?;
        let (leg, port) = self.create(call_uri, first).await?;
        let result = async {
            let pc = &leg.shared.pc;
            let offer = pc.create_offer(None).await.map_err(werr)?;
            pc.set_local_description(offer).await.map_err(werr)?;
            self.gathered_sdp(&leg).await
        }
        .await;
        match result {
            Ok(sdp) => Ok(NewLeg { leg, sdp, port }),
            Err(e) => {
                let _ = leg
                    .shared
                    .cmd
                    .send(Cmd::Close(CloseReason::Failed(e.to_string())));
                Err(e)
            }
        }
    }

    /// The signalling of `call_uri` went away (WebSocket closed): the leg stays up for the grace
    /// period, then ends unless [`RtcLegs::reattach`] is called.
    ///
    /// # Errors
    /// [`RtcError::UnknownCall`].
    pub fn signalling_lost(&self, call_uri: &str) -> Result<(), RtcError> {
        let leg = self
            .find(call_uri)
            .ok_or_else(|| RtcError::UnknownCall(call_uri.to_owned()))?;
        let generation = {
            let mut d = leg.shared.detached.lock().map_err(|_| RtcError::Closed)?;
            if d.0.is_some() {
                return Ok(());
            }
            d.0 = Some(Instant::now());
            d.1 += 1;
            d.1
        };
        let grace = self.inner.cfg.grace;
        let weak = Arc::downgrade(&leg.shared);
        notify(&leg, RtcEvent::SignallingLost { grace });
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(shared) = weak.upgrade() {
                let expired = shared
                    .detached
                    .lock()
                    .map(|d| d.0.is_some() && d.1 == generation)
                    .unwrap_or(false);
                if expired {
                    let _ = shared.cmd.send(Cmd::Close(CloseReason::GraceExpired));
                }
            }
        });
        Ok(())
    }

    /// Gives the signalling layer the leg of `call_uri` back after a signalling loss (the
    /// re-attach primitive); the grace timer is cancelled.
    ///
    /// # Errors
    /// [`RtcError::UnknownCall`] (never existed, or ended: the grace period is over).
    pub fn reattach(&self, call_uri: &str) -> Result<RtcLeg, RtcError> {
        let leg = self
            .find(call_uri)
            .ok_or_else(|| RtcError::UnknownCall(call_uri.to_owned()))?;
        if leg.is_closed() {
            return Err(RtcError::UnknownCall(call_uri.to_owned()));
        }
        let was_detached = {
            let mut d = leg.shared.detached.lock().map_err(|_| RtcError::Closed)?;
            let was = d.0.take().is_some();
            d.1 += 1;
            was
        };
        if was_detached {
            notify(&leg, RtcEvent::Reattached);
        }
        Ok(leg)
    }

    async fn gathered_sdp(&self, leg: &RtcLeg) -> Result<String, RtcError> {
        let timeout = self.inner.cfg.gather_timeout;
        let mut rx = leg.shared.gathered.clone();
        if tokio::time::timeout(timeout, rx.wait_for(|g| *g))
            .await
            .is_err()
        {
            return Err(RtcError::GatherTimeout(timeout));
        }
        leg.shared
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| RtcError::Webrtc("no local description".into()))
    }

    /// Where a new leg's ICE socket on `ip` binds: port 0, or the next free port of the
    /// configured range (probed by binding; a port taken between the probe and webrtc-rs' own
    /// bind fails that leg, the next leg moves on).
    fn local_addr(&self, ip: IpAddr) -> Result<SocketAddr, RtcError> {
        let Some(range) = self.inner.cfg.port_range.clone() else {
            return Ok(SocketAddr::new(ip, 0));
        };
        let (lo, hi) = (*range.start(), *range.end());
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let start = self
            .inner
            .next_port
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..span {
            let offset = (start.wrapping_add(i)) % span;
            let Ok(port) = u16::try_from(u32::from(lo) + offset) else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            if std::net::UdpSocket::bind(addr).is_ok() {
                self.inner.next_port.store(
                    start.wrapping_add(i + 1),
                    std::sync::atomic::Ordering::Relaxed,
                );
                return Ok(addr);
            }
        }
        Err(RtcError::Webrtc(format!(
            "no free UDP port on {ip} in the ICE port range {lo}..={hi}"
        )))
    }

    async fn create(
        &self,
        call_uri: &str,
        codec: RtcCodec,
    ) -> Result<(RtcLeg, BridgePort), RtcError> {
        let cfg = &self.inner.cfg;
        if self.find(call_uri).is_some() {
            return Err(RtcError::DuplicateCall(call_uri.to_owned()));
        }
        let mut media_engine = MediaEngine::default();
        for c in &cfg.codecs {
            media_engine
                .register_codec(codec_parameters(*c), RtpCodecKind::Audio)
                .map_err(werr)?;
        }
        if cfg.codecs.contains(&RtcCodec::Opus) {
            media_engine
                .register_codec(telephone_event(48000), RtpCodecKind::Audio)
                .map_err(werr)?;
        }
        if cfg.codecs.iter().any(|c| *c != RtcCodec::Opus) {
            media_engine
                .register_codec(telephone_event(8000), RtpCodecKind::Audio)
                .map_err(werr)?;
        }
        let registry =
            register_default_interceptors(Registry::new(), &mut media_engine).map_err(werr)?;
        let mut settings = SettingEngineBuilder::new()
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(cfg.host_addresses.iter().any(|a| a.is_loopback()));
        if let Some(public) = cfg.public_address {
            settings = settings.with_nat_1to1_ips(
                vec![public.to_string()],
                match cfg.public_address_mode {
                    PublicAddressMode::Add => RTCIceCandidateType::Srflx,
                    PublicAddressMode::Replace => RTCIceCandidateType::Host,
                },
            );
        }
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (gathered_tx, gathered_rx) = watch::channel(false);
        let (state_tx, state_rx) = mpsc::unbounded_channel();
        let (tracks_tx, tracks_rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            events: ev_tx.clone(),
            gathered: gathered_tx,
            state: state_tx,
            tracks: tracks_tx,
        });
        let mut addrs = Vec::with_capacity(cfg.host_addresses.len());
        for ip in &cfg.host_addresses {
            addrs.push(self.local_addr(*ip)?);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(addrs)
            .build()
            .await
            .map_err(werr)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc = (uuid::Uuid::new_v4().as_u128() as u32) | 1;
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("spanbridge-{ssrc:08x}"),
            format!("audio-{ssrc:08x}"),
            "spanbridge audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec_parameters(codec).rtp_codec,
                ..Default::default()
            }],
        )));
        let sender = match pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = pc.close().await;
                return Err(werr(e));
            }
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            call_uri: call_uri.to_owned(),
            pc: Arc::clone(&pc),
            sender,
            cmd: cmd_tx,
            events: Mutex::new(Some(ev_rx)),
            events_tx: ev_tx.clone(),
            gathered: gathered_rx,
            grace: cfg.grace,
            snapshot: Mutex::new(MediaSnapshot::default()),
            detached: Mutex::new((None, 0)),
            closed: closed_rx,
        });
        let leg = RtcLeg {
            shared: Arc::clone(&shared),
        };
        let inserted = match self.inner.legs.lock() {
            Ok(mut legs) if !legs.contains_key(call_uri) => {
                legs.insert(call_uri.to_owned(), leg.clone());
                true
            }
            _ => false,
        };
        if !inserted {
            let _ = pc.close().await;
            return Err(RtcError::DuplicateCall(call_uri.to_owned()));
        }
        let (endpoint, port) = leg_rings(cfg.ring_frames);
        let task = LegTask {
            shared,
            provider: Arc::downgrade(&self.inner),
            track: Arc::clone(&track),
            endpoint,
            events: ev_tx,
            cmd: cmd_rx,
            states: state_rx,
            tracks: tracks_rx,
            closed: closed_tx,
            opus: cfg.opus,
            connect_timeout: cfg.connect_timeout,
            media_timeout: cfg.media_timeout,
        };
        tokio::spawn(task.run());
        Ok((leg, port))
    }
}

fn notify(leg: &RtcLeg, ev: RtcEvent) {
    let _ = leg.shared.events_tx.send(ev);
}

struct LegTask {
    shared: Arc<Shared>,
    provider: std::sync::Weak<Provider>,
    track: Arc<TrackLocalStaticRTP>,
    endpoint: LegEndpoint,
    events: mpsc::UnboundedSender<RtcEvent>,
    cmd: mpsc::UnboundedReceiver<Cmd>,
    states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    closed: watch::Sender<bool>,
    opus: OpusSettings,
    connect_timeout: Duration,
    media_timeout: Duration,
}

impl LegTask {
    async fn run(mut self) {
        let reason = self.media_loop().await;
        let _ = self.shared.pc.close().await;
        if let Some(p) = self.provider.upgrade()
            && let Ok(mut legs) = p.legs.lock()
            && legs
                .get(&self.shared.call_uri)
                .is_some_and(|l| Arc::ptr_eq(&l.shared, &self.shared))
        {
            legs.remove(&self.shared.call_uri);
        }
        let _ = self.events.send(RtcEvent::Closed(reason));
        let _ = self.closed.send(true);
    }

    async fn media_loop(&mut self) -> CloseReason {
        let (pkt_tx, mut pkt_rx) = mpsc::channel::<rtc::rtp::Packet>(256);
        let mut media: Option<RtcMedia> = None;
        let mut pending_digits: Vec<char> = Vec::new();
        let mut connected = false;
        let connect_deadline = tokio::time::sleep(self.connect_timeout);
        tokio::pin!(connect_deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut buf = [0u8; MAX_PACKET];
        let mut frame: Frame = [0; codecs::FRAME_SAMPLES];
        let mut ticks: u64 = 0;
        let mut last_rtp = Instant::now();
        let mut readers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let reason = loop {
            tokio::select! {
                cmd = self.cmd.recv() => match cmd {
                    None => break CloseReason::Hangup,
                    Some(Cmd::Close(r)) => break r,
                    Some(Cmd::Start(neg)) => match RtcMedia::new(neg, self.opus, Instant::now()) {
                        Ok(mut m) => {
                            for d in pending_digits.drain(..) {
                                let _ = m.send_digit(d);
                            }
                            if let Ok(mut s) = self.shared.snapshot.lock() {
                                s.negotiated = Some(neg);
                            }
                            media = Some(m);
                        }
                        Err(e) => break CloseReason::Failed(e.to_string()),
                    },
                    Some(Cmd::Digit(d)) => match media.as_mut() {
                        Some(m) => { let _ = m.send_digit(d); }
                        None => pending_digits.push(d),
                    },
                },
                state = self.states.recv() => match state {
                    Some(RTCPeerConnectionState::Connected) => {
                        if !connected {
                            connected = true;
                            last_rtp = Instant::now();
                            let _ = self.events.send(RtcEvent::Connected);
                        }
                    }
                    Some(RTCPeerConnectionState::Failed) => {
                        break CloseReason::Failed("ICE/DTLS failed".into())
                    }
                    Some(RTCPeerConnectionState::Closed) | None => break CloseReason::PeerClosed,
                    Some(_) => {}
                },
                track = self.tracks.recv() => {
                    if let Some(track) = track {
                        let tx = pkt_tx.clone();
                        readers.push(tokio::spawn(async move {
                            while let Some(ev) = track.poll().await {
                                if let TrackRemoteEvent::OnRtpPacket(p) = ev
                                    && tx.send(p).await.is_err()
                                {
                                    break;
                                }
                            }
                        }));
                    }
                },
                Some(p) = pkt_rx.recv() => {
                    last_rtp = Instant::now();
                    if let Some(m) = media.as_mut() {
                        let now = Instant::now();
                        let pkt = RtpPacket::new(
                            p.header.payload_type,
                            p.header.marker,
                            p.header.sequence_number,
                            p.header.timestamp,
                            p.header.ssrc,
                            &p.payload,
                        );
                        m.on_rtp(now, &pkt);
                        while let Some((digit, duration)) = m.poll_digit() {
                            let _ = self.events.send(RtcEvent::Digit { digit, duration });
                        }
                    }
                },
                () = &mut connect_deadline, if !connected => {
                    break CloseReason::Failed(format!(
                        "not connected within {:?}", self.connect_timeout
                    ));
                },
                _ = tick.tick() => {
                    ticks += 1;
                    let Some(m) = media.as_mut() else {
                        // Not negotiated yet: drain what the bridge sends so the ring stays fresh.
                        while self.endpoint.pop_to_send().is_some() {}
                        continue;
                    };
                    let now = Instant::now();
                    if connected
                        && !self.media_timeout.is_zero()
                        && now.saturating_duration_since(last_rtp) > self.media_timeout
                    {
                        break CloseReason::MediaTimeout;
                    }
                    m.handle_timeout(now);
                    while let Some((digit, duration)) = m.poll_digit() {
                        let _ = self.events.send(RtcEvent::Digit { digit, duration });
                    }
                    m.pull(now, &mut frame);
                    if connected {
                        self.endpoint.push_received(&frame);
                    }
                    let out = self.endpoint.pop_to_send().unwrap_or([0; codecs::FRAME_SAMPLES]);
                    if connected {
                        while let Some(p) = m.poll_dtmf(now, &mut buf) {
                            write(&self.track, &p, &buf).await;
                        }
                        if let Some(p) = m.send(&out, &mut buf) {
                            write(&self.track, &p, &buf).await;
                        }
                    }
                    if ticks % 25 == 0 {
                        publish(&self.shared, m);
                    }
                },
            }
        };
        for r in readers {
            r.abort();
        }
        if let Some(m) = media.as_ref() {
            publish(&self.shared, m);
        }
        reason
    }
}

fn publish(shared: &Shared, m: &RtcMedia) {
    if let Ok(mut s) = shared.snapshot.lock() {
        let c = m.counters();
        s.negotiated = Some(m.negotiated());
        s.received = c.received;
        s.sent = c.sent;
        s.fec_recovered = c.fec_recovered;
        s.concealed = c.concealed;
        if let Some(r) = m.receive_stats() {
            s.lost = i64::from(r.cumulative_lost());
            s.expected = r.expected();
            s.jitter_ms = r.jitter_ms();
        }
    }
}

async fn write(track: &TrackLocalStaticRTP, p: &media::OutPacket, buf: &[u8]) {
    let Some(payload) = buf.get(..p.len) else {
        return;
    };
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            marker: p.header.marker,
            payload_type: p.header.payload_type,
            sequence_number: p.header.sequence,
            timestamp: p.header.timestamp,
            ssrc: p.header.ssrc,
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(payload),
    };
    let _ = track.write_rtp(packet).await;
}
