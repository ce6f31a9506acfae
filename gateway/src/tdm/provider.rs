//! The TDM leg provider: spans from `[tdm]`, span groups with channel hunting, and per span
//! PRI (network or user side) or CAS (E&M immediate/wink, loop start either end), exposing
//! the engine's leg interface ([`LegProvider`]).
//!
//! Per span: a span thread owns the B-channels ([`tdm_driver::span`]: audio rings and
//! signalling rings); a PRI span also has its D-channel ([`DChannel`], stepped from here) and
//! its [`PriSpan`]; a CAS span a [`CasChannel`] per channel. [`TdmProvider::handle_timeout`]
//! does the non-blocking IO every few milliseconds: D-channel frames, signalling events,
//! timers. A call's audio is the channel's rings lent as a [`TdmPort`] to the media plane:
//! inbound in [`IncomingCall::attachment`], outbound in [`LegEvent::Answered`].
//!
//! Mapping to the leg interface: `Originate` to a [`Target::Tdm`] hunts a free channel of the
//! group (PRI: SETUP on that channel; CAS: seizure and in-band address; a CAS glare re-hunts
//! another channel); `Ring` sends ALERTING, or PROGRESS with "in-band information available"
//! (PI 8) when the engine opens early media (the SIP callee's 183 with SDP), `Answer` CONNECT
//! or the CAS answer, `Reject`/`HangUp` clear with the Q.850 cause. Up: PRI PROGRESS or
//! ALERTING with in-band information (PI 1 or 8) becomes [`LegEvent::Progress`] carrying the
//! channel's audio as a port (early media: a SIP caller gets 183 with SDP and hears the
//! B-channel before the answer; [`LegEvent::Answered`] hands on the same port), ALERTING
//! [`LegEvent::Alerting`], CONNECT [`LegEvent::Answered`], clearing [`LegEvent::HungUp`] (after
//! answer) or [`LegEvent::Failed`] (before), with the Q.850 cause — 38 when a span alarm
//! cleared the call.
//!
//! PRI supplementary information: the calling name travels in the SETUP's display element
//! both ways ([`IncomingCall::caller_name`], `Originate`'s `caller_name`). Hold: NOTIFY "user
//! suspended"/"user resumed" from the far end becomes [`LegEvent::Hold`]/[`LegEvent::Resume`]
//! (the engine holds the partner leg, e.g. a SIP re-INVITE sendonly), and
//! [`LegCommand::Hold`]/[`LegCommand::Resume`] send those NOTIFYs; other notifications are
//! logged and counted ([`TdmProvider::notifications_ignored`]). Redirecting number and
//! facility elements are decoded by the driver ([`PriSpan::setup_info`]) but the leg model
//! has no field for them yet, so they are not passed to the other leg.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::g711::Law;
use serde::Serialize;
use tdm_driver::cas::{CasChannel, CasConfig, CasState};
use tdm_driver::leg::{LegEvent as TdmEvent, cause};
use tdm_driver::pri::call::{CallId, SetupInfo, notification};
use tdm_driver::pri::dchannel::DChannel;
use tdm_driver::pri::q921::Role;
use tdm_driver::pri::q931::PartyNumber;
use tdm_driver::pri::span::{ChannelUse, PriSpan, PriSpanConfig, PriSpanEvent};
use tdm_driver::pri::trace::TraceRecord;
use tdm_driver::span::{ChannelSignals, ChannelSpec, SpanMedia, SpanThread};
use tdm_driver::{Backend, ChannelConfig, Ctl, SigType};

use super::config::{DChannelMode, LawName, TdmConfig, TdmSpanConfig, parse_channels};
use super::port::PortHome;
use crate::calls::leg::{
    AudioCodec, EndCause, IncomingCall, LegCommand, LegEvent, LegId, LegIds, LegKind, LegProvider,
    LegSource, MediaAttachment, MediaCaps, PortSlot, Target,
};
use crate::config::{Hunt, SpanGroupConfig};

/// How often the provider polls D-channels and signalling rings.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Glare re-hunts before a CAS call gives up.
const GLARE_RETRIES: u8 = 3;

struct Chan {
    position: u32,
    signals: ChannelSignals,
    home: PortHome,
    cas: Option<CasChannel>,
    leg: Option<LegId>,
}

struct Span<B: Backend + 'static> {
    config: TdmSpanConfig,
    law: Law,
    pri: Option<(PriSpan, DChannel<B>)>,
    chans: Vec<Chan>,
    thread: Option<SpanThread>,
    /// Calls that came in on the span and calls placed on it (since the provider started).
    calls_in: u64,
    calls_out: u64,
}

struct Group {
    name: String,
    members: Vec<(usize, usize)>,
    hunt: Hunt,
    next: usize,
}

#[derive(Debug)]
struct Leg {
    span: usize,
    chan: usize,
    call: Option<CallId>,
    outbound: bool,
    answered: bool,
    /// Outbound: group, number, glare retries left.
    retry: Option<(usize, String, u8)>,
    /// Outbound: the channel's audio, lent with early media (in-band information before
    /// the answer); the answer hands the same slot on.
    early: Option<PortSlot>,
    /// Inbound: early media is open toward the caller (PROGRESS with in-band information was
    /// sent), so a later ALERTING says in-band too.
    inband: bool,
}

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdmStartError {
    /// The configuration is inconsistent.
    #[error("[tdm]: {0}")]
    Config(String),
    /// A device operation failed.
    #[error("span {span}: {source}")]
    Device {
        /// Span.
        span: u32,
        /// The driver error.
        source: tdm_driver::TdmError,
    },
}

/// The TDM leg provider (see the module docs).
pub struct TdmProvider<B: Backend + 'static> {
    backend: Arc<B>,
    ids: LegIds,
    spans: Vec<Span<B>>,
    groups: Vec<Group>,
    legs: BTreeMap<LegId, Leg>,
    events: VecDeque<(LegId, LegEvent)>,
    traces: Vec<TraceRecord>,
    next_poll: Option<Instant>,
    /// PRI NOTIFYs whose indication has no leg event (not hold/resume).
    notifications_ignored: u64,
    /// Each leg's `call` span (from [`LegCommand::CallUri`]), entered for its log lines.
    call_spans: crate::calls::leg::LegSpans,
}

impl<B: Backend + 'static> std::fmt::Debug for TdmProvider<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdmProvider")
            .field("spans", &self.spans.len())
            .field("legs", &self.legs)
            .finish_non_exhaustive()
    }
}

fn device(span: u32) -> impl Fn(tdm_driver::TdmError) -> TdmStartError {
    move |source| TdmStartError::Device { span, source }
}

impl<B: Backend + 'static> TdmProvider<B> {
    /// Opens every span of `config` on `backend` and starts its span thread; `configure`
    /// sets each channel's signalling first (DAHDI_CHANCONFIG). Groups name spans of `config`.
    pub fn start(
        now: Instant,
        backend: Arc<B>,
        config: &TdmConfig,
        groups: &[SpanGroupConfig],
        ids: LegIds,
        configure: bool,
    ) -> Result<Self, TdmStartError> {
        config.validate().map_err(TdmStartError::Config)?;
        let ctl = Ctl::open(backend.clone()).map_err(device(0))?;
        let mut spans = Vec::with_capacity(config.spans.len());
        for sc in &config.spans {
            let st = ctl.span_stat(sc.span as i32).map_err(device(sc.span))?;
            let e1 = st.span_type.eq_ignore_ascii_case("E1") || st.total_channels == 31;
            let total = u32::try_from(st.total_channels).unwrap_or(0);
            let dchan = sc
                .signalling
                .is_pri()
                .then(|| sc.dchannel.unwrap_or(if e1 { 16 } else { 24 }));
            let positions = match &sc.channels {
                Some(c) => parse_channels(c)
                    .map_err(|e| TdmStartError::Config(format!("span {}: {e}", sc.span)))?,
                None => (1..=total)
                    .filter(|p| Some(*p) != dchan && !(e1 && *p == 16))
                    .collect(),
            };
            if let Some(bad) = positions.iter().find(|p| **p > total) {
                return Err(TdmStartError::Config(format!(
                    "span {} has {total} channels, not {bad}",
                    sc.span
                )));
            }
            let law = match sc.law {
                Some(LawName::Alaw) => Law::Alaw,
                Some(LawName::Ulaw) => Law::Ulaw,
                None if e1 => Law::Alaw,
                None => Law::Ulaw,
            };
            // Channel numbers of the span (SPANSTAT does not give the first one; DAHDI
            // numbers spans' channels consecutively in span order).
            let first = ctl
                .spans()
                .map_err(device(sc.span))?
                .iter()
                .filter(|s| s.span < sc.span as i32)
                .map(|s| s.total_channels)
                .sum::<i32>()
                + 1;
            if configure {
                let sig = sc.signalling.sigtype(e1);
                for p in &positions {
                    let chan = first + *p as i32 - 1;
                    ctl.chan_config(&ChannelConfig {
                        chan,
                        sigtype: sig,
                        deflaw: tdm_driver::Law::Default,
                        master: chan,
                        idlebits: 0,
                        netdev_name: String::new(),
                    })
                    .map_err(device(sc.span))?;
                }
                if let Some(d) = dchan {
                    let chan = first + d as i32 - 1;
                    let sigtype = match sc.dchannel_mode {
                        DChannelMode::Hdlc => SigType::HdlcFcs,
                        DChannelMode::Soft => SigType::Clear,
                    };
                    ctl.chan_config(&ChannelConfig {
                        chan,
                        sigtype,
                        deflaw: tdm_driver::Law::Default,
                        master: chan,
                        idlebits: 0,
                        netdev_name: String::new(),
                    })
                    .map_err(device(sc.span))?;
                }
            }
            let specs: Vec<ChannelSpec> = positions
                .iter()
                .map(|&position| ChannelSpec {
                    span: sc.span,
                    position,
                    law,
                })
                .collect();
            let (mut media, ports) =
                SpanMedia::open(backend.clone(), sc.span, &specs).map_err(device(sc.span))?;
            let signals = media.take_signals();
            let mut chans = Vec::with_capacity(ports.len());
            for (p, s) in ports.into_iter().zip(signals) {
                let cas = sc.signalling.cas_mode().map(|mode| {
                    let mut c = CasConfig::new(mode, sc.addressing.kind());
                    c.glare_priority = sc.glare_priority;
                    c.polarity = sc.polarity;
                    c.fixed_called = sc.fixed_called.clone();
                    // Validated with the configuration; an unparsable plan leaves detection off.
                    c.progress_tones = match &sc.tones {
                        Some(t) => t.parse().ok(),
                        None if e1 => Some(codecs::tones::Country::Etsi),
                        None => Some(codecs::tones::Country::Us),
                    };
                    if sc.signalling == super::config::Signalling::FxoKs {
                        // DAHDI's kewl after a hang-up (500 ms loop drop, then 300 ms) refuses
                        // a ring with EBUSY: the release guard must outlast it.
                        c.timers.guard = c.timers.guard.max(Duration::from_millis(1200));
                    }
                    CasChannel::new(c)
                });
                chans.push(Chan {
                    position: p.spec.position,
                    signals: s,
                    home: PortHome::new(p),
                    cas,
                    leg: None,
                });
            }
            let pri = match (sc.signalling.is_pri(), dchan) {
                (true, Some(d)) => {
                    let role = if sc.signalling == super::config::Signalling::PriNet {
                        Role::Network
                    } else {
                        Role::User
                    };
                    let mut pc = PriSpanConfig::new(sc.span, role, sc.switch.switch_type());
                    pc.b_channels = positions
                        .iter()
                        .filter_map(|p| u8::try_from(*p).ok())
                        .collect();
                    pc.trace = true;
                    let d = match sc.dchannel_mode {
                        DChannelMode::Hdlc => DChannel::open_hdlc(backend.clone(), sc.span, d),
                        DChannelMode::Soft => DChannel::open_soft(backend.clone(), sc.span, d),
                    }
                    .map_err(device(sc.span))?;
                    Some((PriSpan::new(now, pc), d))
                }
                _ => None,
            };
            let thread = media.spawn().map_err(device(sc.span))?;
            spans.push(Span {
                config: sc.clone(),
                law,
                pri,
                chans,
                thread: Some(thread),
                calls_in: 0,
                calls_out: 0,
            });
        }
        let mut gs = Vec::new();
        for g in groups {
            let mut members = Vec::new();
            for n in &g.spans {
                let Some(si) = spans.iter().position(|s| s.config.span == *n) else {
                    return Err(TdmStartError::Config(format!(
                        "span group {:?} names span {n}, which [[tdm.span]] does not configure",
                        g.name
                    )));
                };
                let count = spans.get(si).map_or(0, |s| s.chans.len());
                members.extend((0..count).map(|ci| (si, ci)));
            }
            gs.push(Group {
                name: g.name.clone(),
                members,
                hunt: g.hunt,
                next: 0,
            });
        }
        Ok(Self {
            backend,
            ids,
            spans,
            groups: gs,
            legs: BTreeMap::new(),
            events: VecDeque::new(),
            traces: Vec::new(),
            next_poll: Some(now),
            notifications_ignored: 0,
            call_spans: Default::default(),
        })
    }

    /// D-channel trace records gathered since the last call.
    pub fn take_traces(&mut self) -> Vec<TraceRecord> {
        std::mem::take(&mut self.traces)
    }

    /// PRI NOTIFYs received whose indication the call model has no event for (hold and
    /// resume are mapped to [`LegEvent::Hold`] / [`LegEvent::Resume`]).
    pub fn notifications_ignored(&self) -> u64 {
        self.notifications_ignored
    }

    /// Whether every PRI span has layer 2 up and takes calls.
    pub fn pri_ready(&self) -> bool {
        self.spans
            .iter()
            .filter_map(|s| s.pri.as_ref())
            .all(|(p, _)| p.is_ready())
    }

    fn chan_free(&self, si: usize, ci: usize) -> bool {
        let Some(span) = self.spans.get(si) else {
            return false;
        };
        let Some(ch) = span.chans.get(ci) else {
            return false;
        };
        if ch.leg.is_some() || !ch.home.is_home() {
            return false;
        }
        match (&span.pri, &ch.cas) {
            (Some((pri, _)), _) => {
                pri.is_ready()
                    && u8::try_from(ch.position).ok().is_some_and(|pos| {
                        pri.channels()
                            .iter()
                            .any(|(c, u)| *c == pos && *u == ChannelUse::Idle)
                    })
            }
            (None, Some(cas)) => cas.is_idle(),
            (None, None) => false,
        }
    }

    /// Free channels of group `gi` in hunting order.
    fn hunt(&mut self, gi: usize) -> Vec<(usize, usize)> {
        let Some(g) = self.groups.get(gi) else {
            return Vec::new();
        };
        let n = g.members.len();
        let order: Vec<(usize, usize)> = match g.hunt {
            Hunt::Ascending => g.members.clone(),
            Hunt::Descending => g.members.iter().rev().copied().collect(),
            Hunt::RoundRobin => (0..n)
                .filter_map(|i| g.members.get((g.next + i) % n.max(1)).copied())
                .collect(),
        };
        order
            .into_iter()
            .filter(|(si, ci)| self.chan_free(*si, *ci))
            .collect()
    }

    fn fail(&mut self, leg: LegId, q850: u8, text: &str) {
        self.events.push_back((
            leg,
            LegEvent::Failed {
                cause: EndCause::q850(q850, text),
            },
        ));
    }

    fn originate(
        &mut self,
        now: Instant,
        leg: LegId,
        gi: usize,
        number: &str,
        caller: &str,
        retries: u8,
    ) {
        self.originate_named(now, leg, gi, number, caller, None, retries);
    }

    /// As `originate`, a PRI SETUP also carrying `caller_name` in its display element.
    #[allow(clippy::too_many_arguments)]
    fn originate_named(
        &mut self,
        now: Instant,
        leg: LegId,
        gi: usize,
        number: &str,
        caller: &str,
        caller_name: Option<&str>,
        retries: u8,
    ) {
        let candidates = self.hunt(gi);
        if candidates.is_empty() {
            let all_down = self.groups.get(gi).is_some_and(|g| {
                g.members.iter().all(|(si, _)| {
                    self.spans.get(*si).is_some_and(|s| match &s.pri {
                        Some((p, _)) => !p.is_ready(),
                        None => s.chans.iter().all(|c| {
                            c.cas
                                .as_ref()
                                .is_some_and(|c| c.state() == CasState::Blocked)
                        }),
                    })
                })
            });
            let (q, why) = if all_down {
                (
                    cause::NETWORK_OUT_OF_ORDER,
                    "every span of the group is down or in alarm",
                )
            } else {
                (cause::NO_CIRCUIT, "no free channel in the span group")
            };
            self.fail(leg, q, why);
            return;
        }
        for (si, ci) in candidates {
            let Some(span) = self.spans.get_mut(si) else {
                continue;
            };
            let Some(ch) = span.chans.get_mut(ci) else {
                continue;
            };
            let pos = ch.position;
            let placed = match (&mut span.pri, &mut ch.cas) {
                (Some((pri, _)), _) => match pri.setup_with(
                    now,
                    number,
                    pri_setup_info(caller, caller_name),
                    u8::try_from(pos).ok(),
                ) {
                    Ok((call, _)) => Some(Some(call)),
                    Err(_) => None,
                },
                (None, Some(cas)) => cas.originate(now, number).ok().map(|()| None),
                (None, None) => None,
            };
            if let Some(call) = placed {
                ch.leg = Some(leg);
                if let Some(g) = self.groups.get_mut(gi) {
                    if let Some(i) = g.members.iter().position(|m| *m == (si, ci)) {
                        g.next = i + 1;
                    }
                }
                tracing::info!(%leg, span = span.config.span, channel = pos, number, "TDM call placed");
                // Called in the leg's call span (its command, or its glare retry).
                self.call_spans.insert(leg, tracing::Span::current());
                span.calls_out += 1;
                self.legs.insert(
                    leg,
                    Leg {
                        span: si,
                        chan: ci,
                        call,
                        outbound: true,
                        answered: false,
                        retry: Some((gi, number.to_owned(), retries)),
                        early: None,
                        inband: false,
                    },
                );
                return;
            }
        }
        self.fail(
            leg,
            cause::NO_CIRCUIT,
            "no channel of the span group took the call",
        );
    }

    fn leg_of_call(&self, si: usize, call: CallId) -> Option<LegId> {
        self.legs
            .iter()
            .find(|(_, l)| l.span == si && l.call == Some(call))
            .map(|(id, _)| *id)
    }

    fn incoming(
        &mut self,
        si: usize,
        ci: usize,
        call: Option<CallId>,
        called: String,
        calling: Option<String>,
    ) {
        let Some(span) = self.spans.get_mut(si) else {
            return;
        };
        let span_no = span.config.span;
        let codec = match span.law {
            Law::Alaw => AudioCodec::Pcma,
            Law::Ulaw => AudioCodec::Pcmu,
        };
        let Some(ch) = span.chans.get_mut(ci) else {
            return;
        };
        let Some(port) = ch.home.lend() else {
            // The previous call's audio is still attached somewhere: refuse.
            tracing::warn!(
                span = span_no,
                channel = ch.position,
                "incoming call on a channel whose audio is still in use; refused"
            );
            if let (Some((pri, _)), Some(call)) = (&mut span.pri, call) {
                pri.hangup(Instant::now(), call, cause::CHANNEL_UNAVAILABLE);
            } else if let Some(cas) = ch.cas.as_mut() {
                let _ = cas.hangup(Instant::now(), cause::CHANNEL_UNAVAILABLE);
            }
            return;
        };
        // PRI: the calling name travels in the SETUP's display element.
        let caller_name = match (&span.pri, call) {
            (Some((pri, _)), Some(call)) => pri
                .setup_info(call)
                .and_then(|i| i.display.as_deref())
                .map(display_text)
                .filter(|n| !n.is_empty()),
            _ => None,
        };
        let id = self.ids.next_id();
        ch.leg = Some(id);
        let channel = ch.position;
        tracing::info!(leg = %id, span = span_no, channel, called, "TDM call in");
        span.calls_in += 1;
        self.legs.insert(
            id,
            Leg {
                span: si,
                chan: ci,
                call,
                outbound: false,
                answered: false,
                retry: None,
                early: None,
                inband: false,
            },
        );
        let request_uri = format!("tel:{}", if called.is_empty() { "s" } else { &called });
        self.events.push_back((
            id,
            LegEvent::Incoming(IncomingCall {
                caller: calling.unwrap_or_default(),
                caller_name,
                callee: called,
                request_uri,
                source: LegSource::Channel {
                    span: span_no,
                    channel,
                },
                trunk: None,
                authenticated: None,
                media: Some(MediaCaps {
                    codecs: vec![codec],
                    telephone_event: false,
                    ptime_ms: 20,
                }),
                max_forwards: None,
                attachment: MediaAttachment::Port(PortSlot::new(Box::new(port))),
            }),
        ));
    }

    /// A TDM leg event for the gateway leg on span `si` channel `ci`.
    fn leg_event(&mut self, now: Instant, id: LegId, ev: TdmEvent) {
        let Some(leg) = self.legs.get(&id) else {
            return;
        };
        let span = self.call_span(id);
        let _entered = span.enter();
        let (si, ci, outbound, answered) = (leg.span, leg.chan, leg.outbound, leg.answered);
        match ev {
            TdmEvent::Incoming { .. } | TdmEvent::Proceeding => {}
            TdmEvent::Alerting { .. } => self.events.push_back((id, LegEvent::Alerting)),
            // PRI NOTIFY: the far user holds or resumes the call.
            TdmEvent::Held if answered || !outbound => self.events.push_back((id, LegEvent::Hold)),
            TdmEvent::Resumed if answered || !outbound => {
                self.events.push_back((id, LegEvent::Resume))
            }
            TdmEvent::Notified { indicator } => {
                self.notifications_ignored += 1;
                tracing::info!(leg = %id, indicator, "PRI NOTIFY not mapped to the call model");
            }
            TdmEvent::Elements { display, facility } => {
                let text = display.as_deref().map(display_text).unwrap_or_default();
                tracing::debug!(
                    leg = %id,
                    display = text,
                    facility = facility.len(),
                    "PRI display/facility during the call (not passed on)"
                );
            }
            TdmEvent::Progress { inband: true } if outbound && !answered => {
                // Early media: the far end's tones or announcements are in the B-channel now;
                // lend its audio once and tell the engine (SIP callers get 183 with SDP).
                if self.legs.get(&id).is_some_and(|l| l.early.is_some()) {
                    return;
                }
                let port = self
                    .spans
                    .get(si)
                    .and_then(|s| s.chans.get(ci))
                    .and_then(|c| c.home.lend());
                let Some(port) = port else {
                    tracing::warn!(leg = %id, "early media: the channel's audio is still in use");
                    return;
                };
                let slot = PortSlot::new(Box::new(port));
                if let Some(l) = self.legs.get_mut(&id) {
                    l.early = Some(slot.clone());
                }
                self.events.push_back((
                    id,
                    LegEvent::Progress {
                        media: None,
                        attachment: MediaAttachment::Port(slot),
                    },
                ));
            }
            TdmEvent::Answered => {
                if !outbound || answered {
                    return;
                }
                if let Some(slot) = self.legs.get_mut(&id).and_then(|l| {
                    l.answered = true;
                    l.early.clone()
                }) {
                    self.events.push_back((
                        id,
                        LegEvent::Answered {
                            media: None,
                            attachment: MediaAttachment::Port(slot),
                        },
                    ));
                    return;
                }
                let port = self
                    .spans
                    .get(si)
                    .and_then(|s| s.chans.get(ci))
                    .and_then(|c| c.home.lend());
                match port {
                    Some(port) => {
                        if let Some(l) = self.legs.get_mut(&id) {
                            l.answered = true;
                        }
                        self.events.push_back((
                            id,
                            LegEvent::Answered {
                                media: None,
                                attachment: MediaAttachment::Port(PortSlot::new(Box::new(port))),
                            },
                        ));
                    }
                    None => {
                        self.hangup(now, id, cause::CHANNEL_UNAVAILABLE);
                        self.fail(
                            id,
                            cause::CHANNEL_UNAVAILABLE,
                            "the channel's audio is still in use",
                        );
                    }
                }
            }
            TdmEvent::Released { cause: q } => {
                // CAS glare: take another channel for the same outbound leg.
                if outbound && !answered && q == cause::CHANNEL_UNAVAILABLE {
                    if let Some(Some((gi, number, left))) =
                        self.legs.get(&id).map(|l| l.retry.clone())
                    {
                        if left > 0 && self.spans.get(si).is_some_and(|s| s.pri.is_none()) {
                            self.detach(id);
                            tracing::info!(leg = %id, "glare: trying another channel");
                            self.originate(now, id, gi, &number, "", left - 1);
                            return;
                        }
                    }
                }
                self.detach(id);
                let cause = EndCause::q850(q, tdm_driver::pri::trace::cause_name(q));
                let ev = if answered {
                    LegEvent::HungUp { cause }
                } else {
                    LegEvent::Failed { cause }
                };
                self.events.push_back((id, ev));
            }
            _ => {}
        }
    }

    fn call_span(&self, id: LegId) -> tracing::Span {
        self.call_spans.get(id)
    }

    /// Forgets a leg's channel binding (its audio returns home when the plane drops the port).
    fn detach(&mut self, id: LegId) -> Option<Leg> {
        self.call_spans.remove(id);
        let leg = self.legs.remove(&id)?;
        if let Some(ch) = self
            .spans
            .get_mut(leg.span)
            .and_then(|s| s.chans.get_mut(leg.chan))
        {
            if ch.leg == Some(id) {
                ch.leg = None;
            }
        }
        Some(leg)
    }

    fn hangup(&mut self, now: Instant, id: LegId, q850: u8) {
        let Some(leg) = self.detach(id) else {
            return;
        };
        let Some(span) = self.spans.get_mut(leg.span) else {
            return;
        };
        match (&mut span.pri, leg.call) {
            (Some((pri, _)), Some(call)) => pri.hangup(now, call, q850),
            _ => {
                if let Some(cas) = span.chans.get_mut(leg.chan).and_then(|c| c.cas.as_mut()) {
                    let _ = cas.hangup(now, q850);
                }
            }
        }
    }

    fn poll_io(&mut self, now: Instant) {
        let mut pri_events: Vec<(usize, PriSpanEvent)> = Vec::new();
        let mut cas_events: Vec<(usize, usize, TdmEvent)> = Vec::new();
        for (si, span) in self.spans.iter_mut().enumerate() {
            if let Some((pri, d)) = span.pri.as_mut() {
                d.step(now, pri);
                while let Some(e) = pri.poll_event() {
                    pri_events.push((si, e));
                }
                while let Some(t) = pri.poll_trace() {
                    if self.traces.len() < 4096 {
                        self.traces.push(t);
                    }
                }
            }
            for (ci, ch) in span.chans.iter_mut().enumerate() {
                while let Some(e) = ch.signals.poll() {
                    if let Some(cas) = ch.cas.as_mut() {
                        cas.on_event(now, e);
                    }
                }
                if let Some(cas) = ch.cas.as_mut() {
                    cas.handle_timeout(now);
                    while let Some(c) = cas.poll_command() {
                        if ch.signals.send(c).is_err() {
                            tracing::warn!(
                                span = span.config.span,
                                channel = ch.position,
                                "signalling ring full; command dropped"
                            );
                        }
                    }
                    while let Some(e) = cas.poll_event() {
                        cas_events.push((si, ci, e));
                    }
                }
                if ch.leg.is_none() {
                    ch.home.drain_idle();
                }
            }
        }
        for (si, e) in pri_events {
            match e {
                PriSpanEvent::Leg {
                    call,
                    channel,
                    event,
                } => match (self.leg_of_call(si, call), event) {
                    (None, TdmEvent::Incoming { called, calling }) => {
                        let ci = self.spans.get(si).and_then(|s| {
                            s.chans
                                .iter()
                                .position(|c| channel.is_some_and(|ch| u32::from(ch) == c.position))
                        });
                        match ci {
                            Some(ci) => self.incoming(si, ci, Some(call), called, calling),
                            None => {
                                if let Some((pri, _)) =
                                    self.spans.get_mut(si).and_then(|s| s.pri.as_mut())
                                {
                                    pri.hangup(now, call, cause::CHANNEL_UNAVAILABLE);
                                }
                            }
                        }
                    }
                    (Some(id), ev) => self.leg_event(now, id, ev),
                    (None, _) => {}
                },
                PriSpanEvent::Alarm(on) => {
                    let span = self.spans.get(si).map_or(0, |s| s.config.span);
                    if on {
                        tracing::warn!(span, "span alarm: calls cleared (cause 38), span blocked");
                    } else {
                        tracing::info!(span, "span alarm cleared");
                    }
                }
                PriSpanEvent::LinkUp => {
                    let span = self.spans.get(si).map_or(0, |s| s.config.span);
                    tracing::info!(span, "D-channel up");
                }
                PriSpanEvent::LinkDown => {
                    let span = self.spans.get(si).map_or(0, |s| s.config.span);
                    tracing::warn!(span, "D-channel down");
                }
                _ => {}
            }
        }
        for (si, ci, e) in cas_events {
            let leg = self
                .spans
                .get(si)
                .and_then(|s| s.chans.get(ci))
                .and_then(|c| c.leg);
            match (leg, e) {
                (None, TdmEvent::Incoming { called, calling }) => {
                    self.incoming(si, ci, None, called, calling)
                }
                (Some(id), ev) => self.leg_event(now, id, ev),
                _ => {}
            }
        }
    }

    /// A snapshot for `gwctl tdm spans` and the HTTP API.
    pub fn status(&self) -> TdmStatus {
        let ctl = Ctl::open(self.backend.clone()).ok();
        let spans = self
            .spans
            .iter()
            .map(|s| {
                let alarms = ctl
                    .as_ref()
                    .and_then(|c| c.span_stat(s.config.span as i32).ok())
                    .map(|st| st.alarms.to_string())
                    .unwrap_or_else(|| "?".into());
                let dchannel = s.pri.as_ref().map(|(p, d)| {
                    let c = d.counters();
                    DChannelStatus {
                        role: match p.config().role {
                            Role::Network => "network",
                            Role::User => "user",
                        },
                        link: if p.is_link_up() { "up" } else { "down" },
                        state: format!("{:?}", p.link_state()),
                        tei: p.tei(),
                        ready: p.is_ready(),
                        calls: p.live_calls(),
                        frames_in: c.frames_in,
                        frames_out: c.frames_out,
                        bad_fcs: c.bad_fcs,
                    }
                });
                let pri_use = s.pri.as_ref().map(|(p, _)| p.channels());
                let channels = s
                    .chans
                    .iter()
                    .map(|c| {
                        let u = match (&pri_use, &c.cas) {
                            (Some(list), _) => {
                                let pri = list
                                    .iter()
                                    .find(|(n, _)| u32::from(*n) == c.position)
                                    .map(|(_, u)| *u)
                                    .unwrap_or(ChannelUse::Blocked);
                                match pri {
                                    ChannelUse::Idle if c.leg.is_some() || !c.home.is_home() => {
                                        "busy"
                                    }
                                    ChannelUse::Idle => "idle",
                                    ChannelUse::Busy => "busy",
                                    ChannelUse::Blocked => "blocked",
                                }
                            }
                            (None, Some(cas)) => match cas.state() {
                                CasState::Blocked => "blocked",
                                CasState::Idle if c.leg.is_none() && c.home.is_home() => "idle",
                                _ => "busy",
                            },
                            (None, None) => "blocked",
                        };
                        ChannelStatus {
                            channel: c.position,
                            state: u,
                            leg: c.leg.map(|l| l.to_string()),
                            glares: c.cas.as_ref().map_or(0, CasChannel::glares),
                            tones: c.cas.as_ref().map_or(0, CasChannel::tones_heard),
                        }
                    })
                    .collect();
                SpanReport {
                    span: s.config.span,
                    signalling: s.config.signalling.as_str(),
                    calls_in: s.calls_in,
                    calls_out: s.calls_out,
                    alarms,
                    running: s.thread.is_some(),
                    dchannel,
                    channels,
                }
            })
            .collect();
        TdmStatus {
            spans,
            legs: self.legs.len(),
        }
    }

    /// Channels not idle (tests assert 0 after calls).
    pub fn busy_channels(&self) -> usize {
        self.status()
            .spans
            .iter()
            .flat_map(|s| s.channels.iter())
            .filter(|c| c.state == "busy")
            .count()
    }

    /// Stops the span threads (closing every channel).
    pub fn shutdown(&mut self) {
        for s in &mut self.spans {
            if let Some(t) = s.thread.take() {
                let _ = t.stop();
            }
        }
    }
}

impl<B: Backend + 'static> Drop for TdmProvider<B> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<B: Backend + 'static> LegProvider for TdmProvider<B> {
    fn kind(&self) -> LegKind {
        LegKind::Tdm
    }

    fn handle_command(&mut self, now: Instant, leg: LegId, command: LegCommand) {
        if let LegCommand::CallUri { uri } = &command {
            let legs = &self.legs;
            self.call_spans
                .told(leg, uri, legs.len(), |id| legs.contains_key(id));
            return;
        }
        let span = self.call_span(leg);
        let _entered = span.enter();
        match command {
            LegCommand::Originate {
                target,
                caller,
                caller_name,
                ..
            } => match target {
                Target::Tdm { group, number } => {
                    match self.groups.iter().position(|g| g.name == group) {
                        Some(gi) => self.originate_named(
                            now,
                            leg,
                            gi,
                            &number,
                            &caller,
                            caller_name.as_deref(),
                            GLARE_RETRIES,
                        ),
                        None => self.fail(leg, cause::NO_CIRCUIT, "no such span group"),
                    }
                }
                _ => self.fail(leg, 111, "not a TDM target"),
            },
            LegCommand::Ring { early_media } => {
                // With early media (the far end's SIP 183 with SDP, an announcement): PROGRESS
                // with "in-band information available" (PI 8); without: ALERTING (PI 8 too
                // once early media is open).
                if let Some(l) = self.legs.get_mut(&leg) {
                    if early_media.is_some() {
                        l.inband = true;
                    }
                    let inband = l.inband;
                    if let (Some(span), Some(call)) = (self.spans.get_mut(l.span), l.call) {
                        if let Some((pri, _)) = span.pri.as_mut() {
                            if early_media.is_some() {
                                pri.progress(now, call);
                            } else {
                                pri.alerting(now, call, inband);
                            }
                        }
                    }
                }
            }
            LegCommand::Answer { .. } => {
                let Some(l) = self.legs.get_mut(&leg) else {
                    return;
                };
                l.answered = true;
                let (si, ci, call) = (l.span, l.chan, l.call);
                if let Some(span) = self.spans.get_mut(si) {
                    match (&mut span.pri, call) {
                        (Some((pri, _)), Some(call)) => {
                            pri.answer(now, call);
                        }
                        _ => {
                            if let Some(cas) = span.chans.get_mut(ci).and_then(|c| c.cas.as_mut()) {
                                let _ = cas.answer(now);
                            }
                        }
                    }
                }
            }
            LegCommand::Reject { cause } | LegCommand::HangUp { cause } => {
                self.hangup(now, leg, cause.q850);
            }
            LegCommand::Hold | LegCommand::Resume => {
                // PRI: NOTIFY "user suspended" / "user resumed" tells the far end (its PBX
                // may play hold music); the B-channel stays connected.
                let indicator = if command == LegCommand::Hold {
                    notification::USER_SUSPENDED
                } else {
                    notification::USER_RESUMED
                };
                if let Some(l) = self.legs.get(&leg)
                    && let (Some(call), Some(span)) = (l.call, self.spans.get_mut(l.span))
                    && let Some((pri, _)) = span.pri.as_mut()
                    && !pri.notify(now, call, indicator)
                {
                    tracing::info!(%leg, "PRI call not active: hold/resume not notified");
                }
            }
            _ => {}
        }
        if !self.legs.contains_key(&leg) {
            self.call_spans.remove(leg);
        }
        self.next_poll = Some(now);
    }

    fn poll_event(&mut self) -> Option<(LegId, LegEvent)> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_poll
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.next_poll.is_some_and(|t| t > now) {
            return;
        }
        self.poll_io(now);
        self.next_poll = Some(now + POLL_INTERVAL);
    }

    fn live_legs(&self) -> usize {
        self.legs.len()
    }
}

/// One span's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpanReport {
    /// Span number.
    pub span: u32,
    /// Its signalling.
    pub signalling: &'static str,
    /// Calls that came in on the span (since the provider started).
    pub calls_in: u64,
    /// Calls placed on the span (a CAS glare retry on another channel counts again).
    pub calls_out: u64,
    /// Alarms as DAHDI reports them (`OK`, `RED`, `YELLOW+...`).
    pub alarms: String,
    /// Its span thread runs.
    pub running: bool,
    /// PRI: the D-channel.
    pub dchannel: Option<DChannelStatus>,
    /// Every channel the span carries calls on.
    pub channels: Vec<ChannelStatus>,
}

/// A PRI span's D-channel.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DChannelStatus {
    /// `network` or `user`.
    pub role: &'static str,
    /// Q.921 multiple-frame operation: `up` or `down`.
    pub link: &'static str,
    /// Q.921 state.
    pub state: String,
    /// TEI.
    pub tei: u8,
    /// Calls are taken (no alarm, link up, no RESTART outstanding).
    pub ready: bool,
    /// Q.931 calls.
    pub calls: usize,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Frames dropped for a bad FCS.
    pub bad_fcs: u64,
}

/// One channel's use.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelStatus {
    /// Position in the span.
    pub channel: u32,
    /// `idle`, `busy` or `blocked`.
    pub state: &'static str,
    /// The leg on it.
    pub leg: Option<String>,
    /// CAS: outgoing calls this channel gave up to the far end's seizure (glare).
    pub glares: u64,
    /// CAS: outgoing calls cleared because busy or congestion tone was heard.
    pub tones: u64,
}

/// Every span's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TdmStatus {
    /// Spans.
    pub spans: Vec<SpanReport>,
    /// Live TDM legs.
    pub legs: usize,
}

/// A display element's text: printable characters only (some switches put a display-type
/// octet such as 0xb1 first; non-ASCII octets are not IA5).
fn display_text(octets: &[u8]) -> String {
    octets
        .iter()
        .filter(|o| (0x20..0x7f).contains(*o))
        .map(|o| char::from(*o))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// What a PRI SETUP for a gateway call carries: the calling number when it is one (digits),
/// presentation allowed, and the calling name as display (IA5, at most 32 characters).
fn pri_setup_info(caller: &str, caller_name: Option<&str>) -> SetupInfo {
    let calling = Some(caller)
        .filter(|c| !c.is_empty() && c.chars().all(|d| d.is_ascii_digit()))
        .map(|c| PartyNumber {
            number_type: 0,
            plan: 1,
            presentation: Some((0, 0)),
            reason: None,
            digits: c.to_owned(),
        });
    let display = caller_name
        .map(|n| display_text(n.as_bytes()))
        .filter(|n| !n.is_empty())
        .map(|n| n.bytes().take(32).collect());
    SetupInfo {
        calling,
        display,
        ..SetupInfo::default()
    }
}
