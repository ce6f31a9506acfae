//! The WebRTC leg provider of the call engine: [`RtcProvider`] implements
//! [`LegProvider`] (kind [`LegKind::WebRtc`]) over [`RtcLegs`].
//!
//! webrtc-rs is async, so the real work (SDP, ICE gathering, DTLS, media) happens in tokio tasks
//! off the engine's thread, as the TDM provider's happens on span threads: the provider starts
//! them from [`LegProvider::handle_command`] or from its [`RtcHandle`] (the signalling side:
//! HTTP, the agent page) and collects what they report on an internal channel, which
//! [`LegProvider::poll_event`] drains. [`spawn`] runs it on a
//! [`ProviderPort`](crate::calls::server::ProviderPort) of the shell.
//!
//! Mapping to the leg interface:
//! - **In** (a browser calls): [`RtcHandle::accept`] answers the browser's offer at once
//!   (non-trickle; the HTTP reply carries the answer) and reports [`LegEvent::Incoming`] with the
//!   leg's frame rings as [`MediaAttachment::Port`]; ICE/DTLS connect while the engine routes.
//!   `Ring` has nothing to signal, `Answer` marks the leg answered, `Reject`/`HangUp` close the
//!   peer connection.
//! - **Out** ([`Target::WebRtc`]): the endpoint must be registered
//!   ([`RtcHandle::register_endpoint`]: the signalling layer of a logged-in page); the provider
//!   makes an offer, hands it to the endpoint as an [`OutgoingOffer`] ([`LegEvent::Alerting`]
//!   once delivered), applies the answer and reports [`LegEvent::Answered`] with the rings
//!   when ICE and DTLS are up. No endpoint: [`LegEvent::Failed`] with Q.850 20 (subscriber
//!   absent); declined: 21; no answer in time: 19.
//! - Both: RFC 4733 digits from the peer become [`LegEvent::Digit`] (once per press);
//!   `SendDigit` sends RFC 4733 to the peer; the peer closing becomes [`LegEvent::HungUp`]
//!   (after answer) or [`LegEvent::Failed`] (before), ICE/DTLS failure Q.850 41, an expired
//!   signalling grace period Q.850 102. [`LegProvider::live_legs`] counts legs until their peer
//!   connection has closed.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::RtcSettings;
use super::media::RtcCodec;
use super::{CloseReason, RtcError, RtcEvent, RtcLeg, RtcLegs};
use crate::calls::leg::{
    AudioCodec, EndCause, FramePort, IncomingCall, LegCommand, LegEvent, LegId, LegIds, LegKind,
    LegProvider, LegSource, MediaAttachment, MediaCaps, PortSlot, Target,
};
use crate::calls::server::ProviderPort;
use crate::media::bridge::{BridgePort, Frame};

/// A WebRTC leg's frame rings as the engine's [`FramePort`].
#[derive(Debug)]
pub struct RtcPort(pub BridgePort);

impl FramePort for RtcPort {
    fn pop_received(&mut self) -> Option<Frame> {
        self.0.pop_inbound()
    }

    fn push_to_send(&mut self, frame: &Frame) -> bool {
        self.0.push_outbound(frame)
    }
}

/// What a browser calling in says about itself.
#[derive(Debug, Clone, Default)]
pub struct IncomingSpec {
    /// Who calls (shown to the called party).
    pub caller: String,
    /// Display name.
    pub caller_name: Option<String>,
    /// The number or user to route on (the engine's `[[route]]` table).
    pub callee: String,
    /// Where the signalling came from.
    pub source: Option<SocketAddr>,
    /// The authenticated user, if the signalling layer authenticated the caller.
    pub authenticated: Option<String>,
}

/// A browser leg created by [`RtcHandle::accept`].
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The engine's id of the leg.
    pub leg: LegId,
    /// Our SDP answer, with all candidates.
    pub sdp: String,
}

/// A browser leg created by [`RtcHandle::accept_detached`], not yet known to the engine.
#[derive(Debug)]
pub struct Detached {
    /// The leg's id (numbered by the shared allocator).
    pub leg: LegId,
    /// Our SDP answer.
    pub sdp: String,
    /// Its frame rings for the media plane.
    pub attachment: MediaAttachment,
}

/// An offer for a registered endpoint (an outbound leg). Answer it with
/// [`OutgoingOffer::answer`] or [`OutgoingOffer::decline`]; dropping it declines.
#[derive(Debug)]
pub struct OutgoingOffer {
    /// The leg.
    pub leg: LegId,
    /// Who calls.
    pub caller: String,
    /// Calling name.
    pub caller_name: Option<String>,
    /// Our SDP offer, with all candidates.
    pub sdp: String,
    /// What the engine decides about the leg while the endpoint is asked (it hangs up:
    /// [`LegSignal::Ended`], e.g. to send a SIP CANCEL or BYE).
    pub signals: mpsc::UnboundedReceiver<LegSignal>,
    reply: oneshot::Sender<Result<String, EndCause>>,
}

/// What the engine decided about a WebRTC leg, for the signalling layer that carries it (SIP
/// over WebSocket: 180, 200, a final response, BYE or CANCEL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegSignal {
    /// The engine rings the caller (the far end alerts).
    Ringing,
    /// The engine answered the leg (the far end answered).
    Answered,
    /// The leg is over: the engine hung it up or rejected it, or its peer connection closed
    /// (the grace period after a signalling loss ran out, ICE/DTLS failed, ...).
    Ended(EndCause),
}

impl OutgoingOffer {
    /// The endpoint's SDP answer.
    pub fn answer(self, sdp: String) {
        let _ = self.reply.send(Ok(sdp));
    }

    /// The endpoint refuses (busy, declined).
    pub fn decline(self, cause: EndCause) {
        let _ = self.reply.send(Err(cause));
    }
}

enum Internal {
    /// A leg exists (in or out); its events are forwarded from now on.
    Created {
        leg: LegId,
        rtc: RtcLeg,
        incoming: Option<Box<IncomingCall>>,
        /// Created for a call the engine has already ([`RtcHandle::accept_detached`]).
        detached: bool,
    },
    /// An outbound leg's offer reached its endpoint.
    Delivered { leg: LegId },
    /// An outbound leg's endpoint answered (the port arrives with `Connected`).
    AnswerApplied { leg: LegId, port: PortSlot },
    /// An outbound leg failed before it had a peer connection or an answer.
    OutboundFailed { leg: LegId, cause: EndCause },
    /// An event of a leg's peer connection.
    Rtc { leg: LegId, ev: RtcEvent },
    /// The signalling side hangs a leg up (HTTP DELETE).
    HangUp { leg: LegId },
    /// A digit the signalling carried (SIP INFO).
    Digit {
        leg: LegId,
        digit: char,
        duration: Duration,
    },
    /// The browser put the call on hold (or took it off) by a re-offer.
    PartyHold { leg: LegId, on: bool },
}

#[derive(Debug)]
struct Entry {
    rtc: Option<RtcLeg>,
    outbound: bool,
    answered: bool,
    connected: bool,
    /// The engine has forgotten the leg (it hung it up): report nothing more.
    released: bool,
    /// Outbound: the port to report once connected.
    port: Option<PortSlot>,
    /// Outbound: the task making the offer and waiting for the answer.
    task: Option<JoinHandle<()>>,
}

type Endpoints = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<OutgoingOffer>>>>;
type Signals = Arc<Mutex<HashMap<LegId, mpsc::UnboundedSender<LegSignal>>>>;

fn signal(signals: &Signals, leg: LegId, s: LegSignal) {
    let mut map = signals.lock().unwrap_or_else(PoisonError::into_inner);
    let last = matches!(s, LegSignal::Ended(_));
    if let Some(tx) = map.get(&leg) {
        let _ = tx.send(s);
    }
    if last {
        map.remove(&leg);
    }
}

/// The signalling side's way into a running provider (cheap to clone).
#[derive(Clone)]
pub struct RtcHandle {
    legs: RtcLegs,
    ids: LegIds,
    internal: mpsc::UnboundedSender<Internal>,
    endpoints: Endpoints,
    signals: Signals,
    answer_timeout: Duration,
}

impl std::fmt::Debug for RtcHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcHandle")
            .field("live", &self.legs.live())
            .finish_non_exhaustive()
    }
}

fn rtc_key(leg: LegId) -> String {
    format!("webrtc:{leg}")
}

fn audio_codec(c: RtcCodec) -> AudioCodec {
    match c {
        RtcCodec::Opus => AudioCodec::Opus,
        RtcCodec::Pcmu => AudioCodec::Pcmu,
        RtcCodec::Pcma => AudioCodec::Pcma,
    }
}

impl RtcHandle {
    /// The leg layer (stats for `gwctl calls`, re-attach after a signalling loss by the leg's
    /// key `webrtc:leg-N`).
    pub fn legs(&self) -> &RtcLegs {
        &self.legs
    }

    /// Answers a browser's SDP offer and hands the new leg to the engine as an incoming call.
    ///
    /// # Errors
    /// What [`RtcLegs::answer`] refuses (bad SDP, no common codec, ...), or the provider has
    /// stopped.
    pub async fn accept(&self, offer: &str, spec: IncomingSpec) -> Result<Accepted, RtcError> {
        let leg = self.ids.next_id();
        self.accept_as(leg, offer, spec).await
    }

    async fn accept_as(
        &self,
        leg: LegId,
        offer: &str,
        spec: IncomingSpec,
    ) -> Result<Accepted, RtcError> {
        let new = self.legs.answer(&rtc_key(leg), offer).await?;
        let codec = super::choose_codec(offer, &self.legs.config().codecs)
            .map(audio_codec)
            .unwrap_or(AudioCodec::Pcmu);
        let mut codecs = vec![codec];
        for c in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            if !codecs.contains(&c) {
                codecs.push(c);
            }
        }
        let incoming = IncomingCall {
            caller: spec.caller,
            caller_name: spec.caller_name,
            request_uri: format!("webrtc:{}", spec.callee),
            callee: spec.callee,
            source: LegSource::Address(
                spec.source
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
            trunk: None,
            authenticated: spec.authenticated,
            media: Some(MediaCaps {
                codecs,
                telephone_event: true,
                ptime_ms: 20,
            }),
            max_forwards: None,
            attachment: MediaAttachment::Port(PortSlot::new(Box::new(RtcPort(new.port)))),
        };
        let rtc = new.leg.clone();
        if self
            .internal
            .send(Internal::Created {
                leg,
                rtc: new.leg,
                incoming: Some(Box::new(incoming)),
                detached: false,
            })
            .is_err()
        {
            rtc.hangup();
            return Err(RtcError::Closed);
        }
        Ok(Accepted { leg, sdp: new.sdp })
    }

    /// [`RtcHandle::accept`] for a signalling layer that must follow the engine's decisions
    /// (SIP over WebSocket): the receiver gets [`LegSignal`]s for the new leg (ringing,
    /// answered, ended), registered before the engine hears of the leg so none is missed.
    ///
    /// # Errors
    /// As [`RtcHandle::accept`].
    pub async fn accept_signalled(
        &self,
        offer: &str,
        spec: IncomingSpec,
    ) -> Result<(Accepted, mpsc::UnboundedReceiver<LegSignal>), RtcError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let leg = self.ids.next_id();
        self.signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(leg, tx);
        match self.accept_as(leg, offer, spec).await {
            Ok(a) => Ok((a, rx)),
            Err(e) => {
                self.signals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&leg);
                Err(e)
            }
        }
    }

    /// A digit the signalling carried (SIP INFO `application/dtmf-relay` or
    /// `application/dtmf`): the engine hears [`LegEvent::Digit`] with
    /// [`DigitSource::SipInfo`](crate::calls::leg::DigitSource::SipInfo).
    pub fn signalled_digit(&self, leg: LegId, digit: char, duration: Duration) {
        let _ = self.internal.send(Internal::Digit {
            leg,
            digit,
            duration,
        });
    }

    /// The browser behind `leg` put the call on hold (`on`) or resumed it, by a re-offer (SIP
    /// re-INVITE with `sendonly`/`inactive` audio): the engine hears [`LegEvent::Hold`] /
    /// [`LegEvent::Resume`] (its partner then hears the hold tone, not the browser).
    pub fn party_hold(&self, leg: LegId, on: bool) {
        let _ = self.internal.send(Internal::PartyHold { leg, on });
    }

    /// The signalling of `leg` went away (its WebSocket closed): the leg and its media stay up
    /// for the grace period (`[rtc] grace_s`), then end with Q.850 102 unless
    /// [`RtcHandle::reattach`] is called.
    ///
    /// # Errors
    /// No such leg.
    pub fn signalling_lost(&self, leg: LegId) -> Result<(), RtcError> {
        self.legs.signalling_lost(&rtc_key(leg))
    }

    /// The signalling of `leg` is back (a request of its dialog on a new connection): the
    /// grace timer stops.
    ///
    /// # Errors
    /// No such leg, or it has ended (the grace period ran out).
    pub fn reattach(&self, leg: LegId) -> Result<RtcLeg, RtcError> {
        self.legs.reattach(&rtc_key(leg))
    }

    /// Every live WebRTC leg, with its engine leg id when it has one (`gwctl calls`).
    pub fn live_legs(&self) -> Vec<(Option<LegId>, RtcLeg)> {
        self.legs
            .all()
            .into_iter()
            .map(|(key, leg)| {
                let id = key
                    .strip_prefix("webrtc:leg-")
                    .and_then(|n| n.parse::<u64>().ok())
                    .map(LegId);
                (id, leg)
            })
            .collect()
    }

    /// The WebRTC leg of `leg` (stats, its local SDP).
    pub fn rtc_leg(&self, leg: LegId) -> Option<RtcLeg> {
        self.legs.find(&rtc_key(leg))
    }

    /// Answers a browser's offer for a leg the engine adds to a call it has already (an agent
    /// answering in the page, a transfer target): no [`LegEvent::Incoming`] is reported. The
    /// caller hands [`Detached::attachment`] to the engine with the leg id; from then on the
    /// leg obeys `HangUp`/`SendDigit` and reports digits and `HungUp` like any other (it counts
    /// as answered).
    ///
    /// # Errors
    /// As [`RtcHandle::accept`].
    pub async fn accept_detached(&self, offer: &str) -> Result<Detached, RtcError> {
        let leg = self.ids.next_id();
        let new = self.legs.answer(&rtc_key(leg), offer).await?;
        let rtc = new.leg.clone();
        if self
            .internal
            .send(Internal::Created {
                leg,
                rtc: new.leg,
                incoming: None,
                detached: true,
            })
            .is_err()
        {
            rtc.hangup();
            return Err(RtcError::Closed);
        }
        Ok(Detached {
            leg,
            sdp: new.sdp,
            attachment: MediaAttachment::Port(PortSlot::new(Box::new(RtcPort(new.port)))),
        })
    }

    /// Whether `leg` is a live WebRTC leg of this provider.
    pub fn has_leg(&self, leg: LegId) -> bool {
        self.legs.find(&rtc_key(leg)).is_some()
    }

    /// Hangs up a leg from the signalling side (the browser's HTTP DELETE); the engine hears
    /// [`LegEvent::HungUp`] (or `Failed` before answer) with normal clearing.
    pub fn hang_up(&self, leg: LegId) {
        let _ = self.internal.send(Internal::HangUp { leg });
    }

    /// Registers endpoint `name` (a logged-in page, a softphone): outbound legs to
    /// [`Target::WebRtc`] `{ endpoint: name }` deliver their offers here until the receiver is
    /// dropped. A later registration of the same name replaces the earlier one.
    pub fn register_endpoint(&self, name: &str) -> mpsc::UnboundedReceiver<OutgoingOffer> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), tx);
        rx
    }

    /// Whether `name` is registered (and its receiver alive).
    pub fn is_registered(&self, name: &str) -> bool {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|tx| !tx.is_closed())
    }
}

/// The WebRTC leg provider (see the module docs).
pub struct RtcProvider {
    handle: RtcHandle,
    internal: mpsc::UnboundedReceiver<Internal>,
    table: HashMap<LegId, Entry>,
    events: VecDeque<(LegId, LegEvent)>,
    /// Each leg's `call` span (from [`LegCommand::CallUri`]), entered for its log lines.
    call_spans: crate::calls::leg::LegSpans,
}

impl std::fmt::Debug for RtcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcProvider")
            .field("legs", &self.table)
            .finish_non_exhaustive()
    }
}

fn close_cause(reason: &CloseReason) -> EndCause {
    match reason {
        CloseReason::Hangup | CloseReason::PeerClosed => EndCause::normal("WebRTC peer hung up"),
        CloseReason::Failed(why) => EndCause::q850(41, format!("ICE/DTLS failed: {why}")),
        CloseReason::MediaTimeout => {
            EndCause::q850(41, "the WebRTC peer stopped sending media (it went away)")
        }
        CloseReason::GraceExpired => EndCause::q850(
            102,
            "the signalling did not come back within the grace period",
        ),
    }
}

impl RtcProvider {
    /// A provider with `settings` (validated here), numbering legs with `ids`. Call from
    /// inside a tokio runtime.
    ///
    /// # Errors
    /// The `[rtc]` section is invalid.
    pub fn new(settings: &RtcSettings, ids: LegIds) -> Result<Self, String> {
        settings.validate().map_err(|e| format!("[rtc]: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Self {
            handle: RtcHandle {
                legs: RtcLegs::new(settings.to_rtc_config()),
                ids,
                internal: tx,
                endpoints: Arc::default(),
                signals: Arc::default(),
                answer_timeout: settings.answer_timeout(),
            },
            internal: rx,
            table: HashMap::new(),
            events: VecDeque::new(),
            call_spans: Default::default(),
        })
    }

    /// Its handle for the signalling side.
    pub fn handle(&self) -> RtcHandle {
        self.handle.clone()
    }

    fn forward(&self, leg: LegId, rtc: &RtcLeg) {
        let Some(mut rx) = rtc.take_events() else {
            return;
        };
        let tx = self.handle.internal.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let last = matches!(ev, RtcEvent::Closed(_));
                if tx.send(Internal::Rtc { leg, ev }).is_err() || last {
                    break;
                }
            }
        });
    }

    fn emit(&mut self, leg: LegId, ev: LegEvent) {
        if self.table.get(&leg).is_some_and(|e| !e.released) {
            self.events.push_back((leg, ev));
        }
    }

    fn call_span(&self, leg: LegId) -> tracing::Span {
        self.call_spans.get(leg)
    }

    fn on_internal(&mut self, it: Internal) {
        match it {
            Internal::Created {
                leg,
                rtc,
                incoming,
                detached,
            } => {
                let gone = match self.table.get_mut(&leg) {
                    // Outbound: the leg was hung up while its offer was being made.
                    Some(e) if e.released => true,
                    Some(e) => {
                        e.rtc = Some(rtc.clone());
                        false
                    }
                    None => {
                        self.table.insert(
                            leg,
                            Entry {
                                rtc: Some(rtc.clone()),
                                outbound: incoming.is_none() && !detached,
                                answered: detached,
                                connected: false,
                                released: false,
                                port: None,
                                task: None,
                            },
                        );
                        false
                    }
                };
                self.forward(leg, &rtc);
                if gone {
                    rtc.hangup();
                } else if let Some(info) = incoming {
                    self.events.push_back((leg, LegEvent::Incoming(*info)));
                }
            }
            Internal::Delivered { leg } => self.emit(leg, LegEvent::Alerting),
            Internal::AnswerApplied { leg, port } => {
                let Some(e) = self.table.get_mut(&leg) else {
                    return;
                };
                e.task = None;
                if e.connected {
                    e.answered = true;
                    self.emit(
                        leg,
                        LegEvent::Answered {
                            media: None,
                            attachment: MediaAttachment::Port(port),
                        },
                    );
                } else {
                    e.port = Some(port);
                }
            }
            Internal::OutboundFailed { leg, cause } => {
                let Some(e) = self.table.get_mut(&leg) else {
                    return;
                };
                e.task = None;
                let rtc = e.rtc.clone();
                signal(&self.handle.signals, leg, LegSignal::Ended(cause.clone()));
                self.emit(leg, LegEvent::Failed { cause });
                if let Some(e) = self.table.get_mut(&leg) {
                    e.released = true;
                }
                match rtc {
                    Some(r) => r.hangup(),
                    None => {
                        self.table.remove(&leg);
                        self.call_spans.remove(leg);
                    }
                }
            }
            Internal::Rtc { leg, ev } => self.on_rtc(leg, ev),
            Internal::HangUp { leg } => {
                if let Some(r) = self.table.get(&leg).and_then(|e| e.rtc.clone()) {
                    r.hangup();
                }
            }
            Internal::Digit {
                leg,
                digit,
                duration,
            } => self.emit(
                leg,
                LegEvent::Digit {
                    digit,
                    duration,
                    source: crate::calls::leg::DigitSource::SipInfo,
                },
            ),
            Internal::PartyHold { leg, on } => {
                self.emit(leg, if on { LegEvent::Hold } else { LegEvent::Resume })
            }
        }
    }

    fn on_rtc(&mut self, leg: LegId, ev: RtcEvent) {
        let span = self.call_span(leg);
        let _entered = span.enter();
        match ev {
            RtcEvent::Connected => {
                let Some(e) = self.table.get_mut(&leg) else {
                    return;
                };
                e.connected = true;
                if e.outbound
                    && !e.answered
                    && let Some(port) = e.port.take()
                {
                    e.answered = true;
                    self.emit(
                        leg,
                        LegEvent::Answered {
                            media: None,
                            attachment: MediaAttachment::Port(port),
                        },
                    );
                }
            }
            RtcEvent::Digit { digit, duration } => self.emit(
                leg,
                LegEvent::Digit {
                    digit,
                    duration,
                    source: crate::calls::leg::DigitSource::Rfc4733,
                },
            ),
            RtcEvent::Closed(reason) => {
                signal(
                    &self.handle.signals,
                    leg,
                    LegSignal::Ended(close_cause(&reason)),
                );
                self.call_spans.remove(leg);
                let Some(e) = self.table.remove(&leg) else {
                    return;
                };
                if let Some(t) = e.task {
                    t.abort();
                }
                if !e.released {
                    let cause = close_cause(&reason);
                    tracing::info!(%leg, ?reason, "WebRTC leg closed");
                    self.events.push_back((
                        leg,
                        if e.answered {
                            LegEvent::HungUp { cause }
                        } else {
                            LegEvent::Failed { cause }
                        },
                    ));
                }
            }
            RtcEvent::IceState(s) => tracing::debug!(%leg, ice = %s, "ICE state"),
            RtcEvent::SignallingLost { grace } => {
                tracing::info!(%leg, ?grace, "WebRTC signalling lost; leg kept for the grace period")
            }
            RtcEvent::Reattached => tracing::info!(%leg, "WebRTC signalling re-attached"),
        }
    }

    fn originate(&mut self, leg: LegId, endpoint: String, caller: String, name: Option<String>) {
        let sink = self
            .handle
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&endpoint)
            .filter(|tx| !tx.is_closed())
            .cloned();
        let Some(sink) = sink else {
            self.events.push_back((
                leg,
                LegEvent::Failed {
                    cause: EndCause::q850(
                        20,
                        format!("WebRTC endpoint {endpoint:?} is not registered"),
                    ),
                },
            ));
            return;
        };
        let h = self.handle.clone();
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        self.handle
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(leg, sig_tx);
        let task = tokio::spawn(async move {
            let tx = h.internal.clone();
            let fail = |cause: EndCause| {
                let _ = tx.send(Internal::OutboundFailed { leg, cause });
            };
            let new = match h.legs.offer(&rtc_key(leg)).await {
                Ok(n) => n,
                Err(e) => return fail(EndCause::q850(47, format!("WebRTC offer: {e}"))),
            };
            let rtc = new.leg.clone();
            let _ = tx.send(Internal::Created {
                leg,
                rtc: new.leg,
                incoming: None,
                detached: false,
            });
            let (reply, answer) = oneshot::channel();
            let offer = OutgoingOffer {
                leg,
                caller,
                caller_name: name,
                sdp: new.sdp,
                signals: sig_rx,
                reply,
            };
            if sink.send(offer).is_err() {
                return fail(EndCause::q850(
                    20,
                    format!("WebRTC endpoint {endpoint:?} went away"),
                ));
            }
            let _ = tx.send(Internal::Delivered { leg });
            let sdp = match tokio::time::timeout(h.answer_timeout, answer).await {
                Ok(Ok(Ok(sdp))) => sdp,
                Ok(Ok(Err(cause))) => return fail(cause),
                Ok(Err(_)) => return fail(EndCause::q850(21, "the endpoint declined")),
                Err(_) => return fail(EndCause::q850(19, "the endpoint did not answer")),
            };
            if let Err(e) = rtc.accept_answer(&sdp).await {
                return fail(EndCause::q850(88, format!("the endpoint's answer: {e}")));
            }
            let _ = tx.send(Internal::AnswerApplied {
                leg,
                port: PortSlot::new(Box::new(RtcPort(new.port))),
            });
        });
        self.table.insert(
            leg,
            Entry {
                rtc: None,
                outbound: true,
                answered: false,
                connected: false,
                released: false,
                port: None,
                task: Some(task),
            },
        );
    }

    fn release(&mut self, leg: LegId) {
        let Some(e) = self.table.get_mut(&leg) else {
            return;
        };
        e.released = true;
        // Outbound with its offer still being made: the leg is closed when it is created
        // (`Internal::Created` of a released entry), or the entry goes when the offer fails.
        if let Some(r) = e.rtc.clone() {
            r.hangup();
        }
    }

    /// Drains what the leg tasks reported (also done by [`LegProvider::poll_event`]).
    fn drain(&mut self) {
        while let Ok(it) = self.internal.try_recv() {
            self.on_internal(it);
        }
    }

    /// Waits for the next report of a leg task and handles it; `false` if none can come.
    pub async fn next_report(&mut self) -> bool {
        match self.internal.recv().await {
            Some(it) => {
                self.on_internal(it);
                true
            }
            None => false,
        }
    }

    /// Closes every leg (the gateway stops).
    pub fn shutdown(&mut self) {
        let legs: Vec<LegId> = self.table.keys().copied().collect();
        for l in legs {
            self.release(l);
        }
    }
}

impl LegProvider for RtcProvider {
    fn kind(&self) -> LegKind {
        LegKind::WebRtc
    }

    fn handle_command(&mut self, _now: Instant, leg: LegId, command: LegCommand) {
        self.drain();
        if let LegCommand::CallUri { uri } = &command {
            let table = &self.table;
            self.call_spans
                .told(leg, uri, table.len(), |id| table.contains_key(id));
            return;
        }
        let span = self.call_span(leg);
        let _entered = span.enter();
        match command {
            LegCommand::Originate {
                target: Target::WebRtc { endpoint },
                caller,
                caller_name,
                ..
            } => self.originate(leg, endpoint, caller, caller_name),
            LegCommand::Originate { target, .. } => self.events.push_back((
                leg,
                LegEvent::Failed {
                    cause: EndCause::q850(111, format!("not a WebRTC target: {target:?}")),
                },
            )),
            LegCommand::Ring { .. } => signal(&self.handle.signals, leg, LegSignal::Ringing),
            LegCommand::Answer { .. } => {
                if let Some(e) = self.table.get_mut(&leg) {
                    e.answered = true;
                }
                signal(&self.handle.signals, leg, LegSignal::Answered);
            }
            LegCommand::Reject { cause } | LegCommand::HangUp { cause } => {
                signal(&self.handle.signals, leg, LegSignal::Ended(cause));
                self.release(leg);
            }
            LegCommand::SendDigit { digit, .. } => {
                if let Some(r) = self.table.get(&leg).and_then(|e| e.rtc.as_ref())
                    && let Err(e) = r.send_digit(digit)
                {
                    tracing::debug!(%leg, "digit not sent: {e}");
                }
            }
            LegCommand::CallUri { .. }
            | LegCommand::Hold
            | LegCommand::Resume
            | LegCommand::Reoffer { .. }
            | LegCommand::TransferProgress { .. } => {
                // The plane plays hold tones into the port; a browser leg needs no re-offer.
            }
        }
    }

    fn poll_event(&mut self) -> Option<(LegId, LegEvent)> {
        self.drain();
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn handle_timeout(&mut self, _now: Instant) {
        self.drain();
    }

    fn live_legs(&self) -> usize {
        self.table.len().max(self.handle.legs.live())
    }
}

/// A running WebRTC provider task.
#[derive(Debug)]
pub struct RtcService {
    handle: RtcHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RtcService {
    /// The signalling side's handle.
    pub fn handle(&self) -> RtcHandle {
        self.handle.clone()
    }

    /// Stops the task; every leg's peer connection closes.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Runs `provider` in a tokio task serving `port`: commands in, events out.
pub fn spawn(mut provider: RtcProvider, mut port: ProviderPort) -> RtcService {
    let handle = provider.handle();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                cmd = port.commands.recv() => match cmd {
                    Some((leg, c)) => provider.handle_command(Instant::now(), leg, c),
                    None => break,
                },
                more = provider.next_report() => if !more { break },
                _ = &mut stopped => break,
            }
            while let Some((leg, ev)) = provider.poll_event() {
                if port.events.send((leg, ev)).is_err() {
                    tracing::warn!("the call engine is gone; WebRTC provider stops");
                    provider.shutdown();
                    return;
                }
            }
        }
        provider.shutdown();
    });
    RtcService {
        handle,
        stop: Some(stop),
        task,
    }
}

/// Starts the provider of `[rtc]` on `port` (numbering legs with the port's ids).
///
/// # Errors
/// The `[rtc]` section is invalid.
pub fn start(settings: &RtcSettings, port: ProviderPort) -> Result<RtcService, String> {
    let provider = RtcProvider::new(settings, port.ids.clone())?;
    Ok(spawn(provider, port))
}
