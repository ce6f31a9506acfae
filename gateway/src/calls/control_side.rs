//! The control plane's call side ([`CallControl`]) on the real engine.
//!
//! [`EngineCallSide`] carries out the control plane's commands on the running switch (through
//! its [`SwitchHandle`]) and feeds the engine's leg notices back: a call routed to
//! `control:agent:ID` / `control:queue:NAME` becomes [`ControlPlane::incoming`], and the
//! progress of legs the control plane knows (alerting, answer, failure, hang-up) becomes
//! [`ControlPlane::call_event`]. Control-plane leg ids (UUIDs) and engine leg ids are mapped
//! here; a mapping is dropped when its leg ends.
//!
//! Reached today: agents' SIP endpoints (`kind = "sip"`), registered phones (`kind =
//! "phone"`), and browsers when the gateway runs a WebRTC provider
//! ([`EngineCallSide::with_rtc`]): a web caller's offer (click-to-call, WHIP) and an agent
//! answering in the page become answered WebRTC legs of the call
//! ([`Engine::adopt_leg`](super::engine::Engine::adopt_leg)).
//!
//! A phone endpoint names a `[[user]]` that REGISTERs to the gateway's SIP listener. Its offer
//! is looked up in the SIP provider's registrar in the same turn of the switch that places the
//! INVITE ([`SipLegs::registered_contact`]): the Request-URI is the registered Contact, the
//! INVITE goes to the address the REGISTER came from (NAT-friendly). A user registered only
//! over SIP WebSocket is reached as that WebRTC endpoint. A phone with no live binding fails
//! the offer at once with [`FailureReason::Unreachable`]: the agent is set away
//! (`endpoint_unreachable`) and the call goes to the next agent or back to its queue.
//!
//! A TDM endpoint (`kind = "tdm"`, and transfers to TDM numbers) is placed on its span group
//! ([`OriginateTarget::SpanGroup`]): the one it names, else the only configured one
//! ([`EngineCallSide::with_span_groups`]).
//!
//! What a waiting party hears: ringback while a transfer target rings; the plane's hold tone
//! (440 Hz, 0.5 s in every 2 s) on hold and in a queue with the comfort tone; a queue's music
//! file, decoded to 8 kHz once per file ([`load_music`]) and looped by the plane. Never silence:
//! a music file that cannot be read any more plays the hold tone, with a warning.
//!
//! A SIP agent's REFER runs through the same executor: blind, or attended with Replaces
//! (RFC 3891). The named dialog is the target leg of the call's own consultation (the API's
//! `consult`: the transfer completes) or the agent's leg of its own call to the target through
//! the gateway: the target's leg then moves into the caller's call (same dialog, same RTP
//! stream), the caller is bridged to it and both of the agent's legs are released. NOTIFY
//! sipfrag reports 100, then the outcome (none with `Refer-Sub: false`); a dialog that is not
//! there gives NOTIFY 481 and `transfer.failed`, and the caller stays with the agent. Limits:
//! the joined target is an external SIP party for the control plane (its agent presence is
//! not tracked), and with more than one media worker a target whose call lives on another
//! worker cannot join yet (the transfer then fails the same way).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast::error::RecvError;

use super::engine::{LegNotice, LegProgress, MediaSource, Music, OriginateTarget};
use super::leg::{EndCause, LegId as EngineLeg, LegKind as EngineKind};
use super::server::SwitchHandle;
use super::sip_leg::SipLegs;
use super::switch::ReplacedDialog;
use crate::control::Event;
use crate::control::api::{CallControl, CallFuture, CallSideError, ControlPlane};
use crate::control::config::{Comfort, ControlConfigError, Endpoint, load_music, tdm_span_group};
use crate::control::core::ControlError;
use crate::control::core::{Audio, CallCommand, CallEvent, LegId as ControlLeg, ReplacedLeg};
use crate::control::events::FailureReason;
use crate::control::{CallUri, LegKind, Party, TransferKind};
use crate::rtc::provider::RtcHandle;
use crate::sip::refer::Replaces;

/// How long each digit the control plane sends lasts.
const DIGIT: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Legs {
    to_engine: HashMap<ControlLeg, EngineLeg>,
    to_control: HashMap<EngineLeg, ControlLeg>,
    /// Transfers a SIP party asked for by REFER, by call: the referring leg (told the
    /// progress by NOTIFY).
    refers: HashMap<CallUri, EngineLeg>,
    /// Legs that joined a call from another one (an attended REFER's target), by the call they
    /// are in now: the record of the call they left does not end them.
    joined: HashMap<EngineLeg, CallUri>,
}

impl Legs {
    fn insert(&mut self, c: ControlLeg, e: EngineLeg) {
        self.to_engine.insert(c, e);
        self.to_control.insert(e, c);
    }

    fn forget(&mut self, e: EngineLeg) {
        if let Some(c) = self.to_control.remove(&e) {
            self.to_engine.remove(&c);
        }
        self.refers.retain(|_, l| *l != e);
        self.joined.remove(&e);
    }
}

type SharedLegs = Arc<Mutex<Legs>>;

fn lock(m: &Mutex<Legs>) -> MutexGuard<'_, Legs> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The engine as the control plane's call side. See the module docs.
#[derive(Debug, Clone)]
pub struct EngineCallSide {
    handle: SwitchHandle,
    legs: SharedLegs,
    /// The WebRTC provider's signalling side, when the gateway runs one.
    rtc: Option<RtcHandle>,
    /// The configured span groups' names (TDM endpoints without a group use the only one).
    span_groups: Vec<String>,
    /// Queue music read so far, by file (with the modification time it was read at).
    music: Arc<Mutex<MusicCache>>,
}

type MusicCache = HashMap<PathBuf, (Option<SystemTime>, Music)>;

fn lock_music(m: &Mutex<MusicCache>) -> MutexGuard<'_, MusicCache> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failed(e: impl std::fmt::Display) -> CallSideError {
    CallSideError::Failed(e.to_string())
}

fn stopped() -> CallSideError {
    CallSideError::Failed("the call engine has stopped".into())
}

fn target_of(to: &Endpoint) -> Result<OriginateTarget, CallSideError> {
    match to {
        Endpoint::Sip { uri } => Ok(OriginateTarget::SipUri(uri.clone())),
        Endpoint::Browser => Err(failed(
            "browser endpoints need WebRTC legs, which this engine does not run yet",
        )),
        // Looked up on the switch when the leg is placed ([`EngineCallSide::phone_target`]).
        Endpoint::Phone { user } => Err(failed(format!(
            "registered phone {user:?} needs a registration lookup"
        ))),
        Endpoint::Tdm {
            number,
            group: Some(group),
        } => Ok(OriginateTarget::SpanGroup {
            group: group.clone(),
            number: number.clone(),
        }),
        // Resolved by `EngineCallSide::span_group_of` before this.
        Endpoint::Tdm {
            number,
            group: None,
        } => Err(failed(format!("TDM number {number:?}: no span group"))),
    }
}

/// A registered-phone endpoint on its way to a target: looked up in the SIP provider's
/// registrar first; if the user is registered only over SIP WebSocket (a browser softphone),
/// it is reached as that WebRTC endpoint; otherwise the offer fails at once as
/// [`CallSideError::Unreachable`].
#[derive(Debug)]
struct PhoneLookup {
    user: String,
    /// Whether the WebRTC provider has this user registered (SIP over WebSocket).
    over_websocket: bool,
}

impl PhoneLookup {
    fn resolve(self, sip: &SipLegs, now: Instant) -> Result<OriginateTarget, CallSideError> {
        if let Some(c) = sip.registered_contact(now, &self.user) {
            return Ok(OriginateTarget::Registered {
                user: self.user,
                uri: c.uri,
                dest: c.dest,
                transport: c.transport,
            });
        }
        if self.over_websocket {
            return Ok(OriginateTarget::WebRtc(self.user));
        }
        Err(CallSideError::Unreachable(format!(
            "phone {:?} is not registered (no live REGISTER binding)",
            self.user
        )))
    }
}

fn reason_of(c: &EndCause) -> FailureReason {
    match c.q850 {
        17 => FailureReason::Busy,
        18 | 19 => FailureReason::NoAnswer,
        _ => FailureReason::Rejected(c.text.clone()),
    }
}

fn party_of(to: &str) -> Option<Party> {
    match to.split_once(':')? {
        ("agent", id) => Some(Party::Agent(id.to_owned())),
        ("queue", q) => Some(Party::Queue(q.to_owned())),
        _ => None,
    }
}

/// The NOTIFY status for a REFER the control plane refused.
fn refer_status(e: &ControlError) -> u16 {
    match e {
        ControlError::Forbidden(_) => 403,
        ControlError::NotFound(_) => 404,
        ControlError::BadRequest(_) => 400,
        _ => 603,
    }
}

fn kind_of(k: EngineKind) -> LegKind {
    match k {
        EngineKind::WebRtc => LegKind::WebRtc,
        EngineKind::Tdm => LegKind::Tdm,
        EngineKind::Sip | EngineKind::Service => LegKind::Sip,
    }
}

impl EngineCallSide {
    /// A call side over the running switch behind `handle`.
    pub fn new(handle: SwitchHandle) -> Self {
        EngineCallSide {
            handle,
            legs: SharedLegs::default(),
            rtc: None,
            span_groups: Vec::new(),
            music: Arc::default(),
        }
    }

    /// TDM endpoints (`kind = "tdm"`) are called through these span groups (the
    /// configuration's `[[span_group]]`s): the one the endpoint names, else the only one.
    pub fn with_span_groups(mut self, groups: &[crate::config::SpanGroupConfig]) -> Self {
        self.span_groups = groups.iter().map(|g| g.name.clone()).collect();
        self
    }

    /// `to` with its span group filled in when it is a TDM endpoint that names none.
    fn span_group_of(&self, to: Endpoint) -> Result<Endpoint, CallSideError> {
        match to {
            Endpoint::Tdm { number, group } => {
                let g = tdm_span_group(&number, group.as_deref(), &self.span_groups)
                    .map_err(failed)?
                    .to_owned();
                Ok(Endpoint::Tdm {
                    number,
                    group: Some(g),
                })
            }
            other => Ok(other),
        }
    }

    /// What `audio` is on the plane. Queue music is read once per file (and again when the
    /// file changes); a file that cannot be read any more plays the hold tone, never silence.
    async fn source_of(&self, audio: &Audio) -> MediaSource {
        let file = match audio {
            Audio::Ringback => return MediaSource::Ringback,
            Audio::Hold | Audio::Comfort(Comfort::Tone) => return MediaSource::HoldTone,
            Audio::Comfort(Comfort::Music { file }) => file.clone(),
        };
        let stamp = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        if let Some(m) = lock_music(&self.music)
            .get(&file)
            .filter(|(at, _)| *at == stamp)
        {
            return MediaSource::Music(m.1.clone());
        }
        let path = file.clone();
        let loaded = tokio::task::spawn_blocking(move || load_music(&path))
            .await
            .map_err(|e| ControlConfigError(e.to_string()))
            .and_then(|r| r);
        match loaded {
            Ok(samples) => {
                let m = Music::new(file.display().to_string(), samples);
                lock_music(&self.music).insert(file, (stamp, m.clone()));
                MediaSource::Music(m)
            }
            Err(e) => {
                tracing::warn!("{e}; the hold tone plays instead");
                MediaSource::HoldTone
            }
        }
    }

    /// Browser legs (web callers, agents answering in the page) through the WebRTC provider
    /// behind `rtc` (started on the same switch's provider port).
    pub fn with_rtc(mut self, rtc: RtcHandle) -> Self {
        self.rtc = Some(rtc);
        self
    }

    /// Starts feeding the engine's leg notices to `plane` (a task on the current runtime; it
    /// ends when the plane or the switch goes).
    pub fn attach(&self, plane: &Arc<ControlPlane>) {
        let plane_arc = Arc::clone(plane);
        let mut notices = self.handle.subscribe_notices();
        let plane = Arc::downgrade(plane);
        self.attach_cdrs(plane.clone());
        self.attach_refer_progress(&plane_arc);
        let side = self.clone();
        tokio::spawn(async move {
            loop {
                match notices.recv().await {
                    Ok(n) => {
                        if !side.on_notice(&plane, n).await {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(k)) => {
                        tracing::error!("control plane missed {k} leg notices (lagging)");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    /// Starts telling `plane` about calls the engine ended by itself (RTP inactivity, a media
    /// failure, a whole-call hang-up): every leg still mapped when its call's record is
    /// written is reported hung up, so no agent stays busy on a call that is gone.
    fn attach_cdrs(&self, plane: Weak<ControlPlane>) {
        let mut cdrs = self.handle.subscribe_cdrs();
        let legs = Arc::clone(&self.legs);
        tokio::spawn(async move {
            loop {
                let cdr = match cdrs.recv().await {
                    Ok(c) => c,
                    Err(RecvError::Lagged(k)) => {
                        tracing::error!("control plane missed {k} call records (lagging)");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                };
                let Some(plane) = plane.upgrade() else {
                    break;
                };
                for l in &cdr.legs {
                    let c = {
                        let mut m = lock(&legs);
                        if m.joined
                            .get(&l.leg)
                            .is_some_and(|now_in| *now_in != cdr.call_uri)
                        {
                            // It left this call and goes on in another.
                            continue;
                        }
                        let c = m.to_control.get(&l.leg).copied();
                        m.forget(l.leg);
                        c
                    };
                    if let Some(c) = c {
                        plane.call_event(CallEvent::HungUp {
                            call: cdr.call_uri.clone(),
                            leg: c,
                            cause: cdr.cause.clone(),
                        });
                    }
                }
            }
        });
    }

    fn phone_lookup(&self, user: &str) -> PhoneLookup {
        PhoneLookup {
            user: user.to_owned(),
            over_websocket: self.rtc.as_ref().is_some_and(|r| r.is_registered(user)),
        }
    }

    /// Live control-plane legs mapped to engine legs (tests assert 0 after calls).
    pub fn mapped_legs(&self) -> usize {
        lock(&self.legs).to_engine.len()
    }

    fn engine_leg(&self, leg: &ControlLeg) -> Result<EngineLeg, CallSideError> {
        lock(&self.legs)
            .to_engine
            .get(leg)
            .copied()
            .ok_or_else(|| CallSideError::NoSuchLeg(leg.to_string()))
    }

    /// Handles one notice; `false` when the control plane is gone.
    async fn on_notice(&self, plane: &Weak<ControlPlane>, n: LegNotice) -> bool {
        let Some(plane) = plane.upgrade() else {
            return false;
        };
        let LegNotice {
            call,
            leg,
            progress,
        } = n;
        if let LegProgress::Offered { to, caller } = progress {
            self.offered(&plane, call, leg, &to, caller).await;
            return true;
        }
        let Some(c) = lock(&self.legs).to_control.get(&leg).copied() else {
            // A leg of a call the control plane does not manage.
            return true;
        };
        let ev = match progress {
            LegProgress::Alerting => CallEvent::Alerting { call, leg: c },
            LegProgress::Answered => CallEvent::Answered { call, leg: c },
            LegProgress::Failed(cause) => {
                lock(&self.legs).forget(leg);
                CallEvent::Failed {
                    call,
                    leg: c,
                    reason: reason_of(&cause),
                }
            }
            LegProgress::HungUp(cause) => {
                lock(&self.legs).forget(leg);
                CallEvent::HungUp {
                    call,
                    leg: c,
                    cause: cause.text,
                }
            }
            LegProgress::TransferRequest { target, replaces } => {
                self.referred(&plane, call, leg, c, &target, replaces).await;
                return true;
            }
            _ => return true,
        };
        plane.call_event(ev);
        true
    }

    /// A SIP agent's REFER (already answered 202 by its leg): a transfer through the control
    /// plane's executor. Blind: `sip:ID@...` names agent ID when there is one; anything else
    /// is a SIP URI target (allowed only where a control route permits it). With Replaces:
    /// attended (see [`EngineCallSide::referred_attended`]).
    async fn referred(
        &self,
        plane: &ControlPlane,
        call: CallUri,
        leg: EngineLeg,
        c: ControlLeg,
        target: &str,
        replaces: Option<String>,
    ) {
        if let Some(r) = replaces {
            self.referred_attended(plane, call, leg, c, target, &r)
                .await;
            return;
        }
        let user = target
            .split_once(':')
            .map(|(_, r)| r)
            .and_then(|r| r.split_once('@'))
            .map(|(u, _)| u.to_owned());
        let agent = user.filter(|u| plane.read(|core, now| core.agent(u, now).is_ok()));
        let party = match agent {
            Some(a) => Party::Agent(a),
            None => Party::SipUri(target.to_owned()),
        };
        let status = match plane.refer(&call, c, party, TransferKind::Blind) {
            Ok(()) => {
                lock(&self.legs).refers.insert(call.clone(), leg);
                100
            }
            Err(e) => {
                tracing::info!(uri = %call, "REFER refused: {e}");
                refer_status(&e)
            }
        };
        self.notify(leg, status).await;
    }

    /// A REFER with Replaces: the transferor (the agent on `leg`) consulted the target and
    /// names that dialog. What it names is looked up and taken over by the switch
    /// ([`Switch::take_over_replaced`](super::switch::Switch::take_over_replaced)): the target
    /// leg of this call's consultation (the API's `consult`) completes that transfer; the
    /// agent's own call to the target through the gateway gives up its other party, which
    /// joins this call, and the executor completes an attended transfer to it at once (the
    /// caller is bridged to it, the agent's leg here is released after the final NOTIFY, the
    /// agent's leg of the consultation call gets a BYE). A dialog that is not there (RFC 3891:
    /// 481) or cannot be taken over fails the transfer (`transfer.failed`, a NOTIFY with that
    /// status) and the caller stays with the agent.
    async fn referred_attended(
        &self,
        plane: &ControlPlane,
        call: CallUri,
        leg: EngineLeg,
        c: ControlLeg,
        target: &str,
        replaces: &str,
    ) {
        let party = Party::SipUri(target.to_owned());
        let parsed = Replaces::parse(replaces);
        let found = self
            .handle
            .run(move |sw, now| {
                // RFC 3515 §2.4.5: the first NOTIFY says the new "call" is being tried.
                let _ = sw.with_engine(now, |e| e.transfer_progress(leg, 100));
                match parsed {
                    Ok(r) => sw.take_over_replaced(now, leg, &r),
                    Err(e) => Err((400, e.to_string())),
                }
            })
            .await;
        let Some(found) = found else {
            return;
        };
        let replaced = match found {
            Ok(ReplacedDialog::InCall(named)) => {
                match lock(&self.legs).to_control.get(&named).copied() {
                    Some(l) => Ok((ReplacedLeg::Consultation(l), None)),
                    None => Err((481, "the named dialog is not a leg of the transfer".into())),
                }
            }
            Ok(ReplacedDialog::Moved {
                target,
                released,
                from,
            }) => {
                let joined = ControlLeg::new();
                {
                    let mut m = lock(&self.legs);
                    m.insert(joined, target);
                    m.joined.insert(target, call.clone());
                }
                Ok((
                    ReplacedLeg::Joined {
                        leg: joined,
                        target: party.clone(),
                    },
                    Some((target, released, from)),
                ))
            }
            Err(e) => Err(e),
        };
        let (replaced, moved) = match replaced {
            Ok(r) => r,
            Err((status, why)) => {
                tracing::info!(uri = %call, status, "REFER with Replaces: {why}");
                let failed = ReplacedLeg::NotFound {
                    target: party,
                    why: format!("{status}: {why}"),
                };
                if let Err(e) = plane.refer_replaces(&call, c, failed) {
                    tracing::info!(uri = %call, "REFER refused: {e}");
                }
                self.notify(leg, status).await;
                return;
            }
        };
        lock(&self.legs).refers.insert(call.clone(), leg);
        match plane.refer_replaces(&call, c, replaced) {
            Ok(()) => {
                if let Some((_, released, _)) = moved {
                    // The transferor's leg of its consultation call: that call ends with it.
                    let _ = self
                        .handle
                        .run(move |sw, now| {
                            sw.with_engine(now, |e| {
                                e.hang_up_leg(now, released, EndCause::normal("transferred"))
                            })
                        })
                        .await;
                }
            }
            Err(e) => {
                tracing::info!(uri = %call, "REFER with Replaces refused: {e}");
                lock(&self.legs).refers.remove(&call);
                if let Some((target, released, from)) = moved {
                    // Nothing changed for the caller: the consulted party goes back to the
                    // transferor's consultation call.
                    lock(&self.legs).forget(target);
                    let _ = self
                        .handle
                        .run(move |sw, now| {
                            if sw.move_leg(now, target, &from).is_ok() {
                                let _ = sw.with_engine(now, |e| e.connect(now, released, target));
                            }
                        })
                        .await;
                }
                self.notify(leg, refer_status(&e)).await;
            }
        }
    }

    /// Reports `status` of a transfer to the leg that asked for it (SIP: a NOTIFY sipfrag).
    async fn notify(&self, leg: EngineLeg, status: u16) {
        let _ = self
            .handle
            .run(move |sw, now| sw.with_engine(now, |e| e.transfer_progress(leg, status)))
            .await;
    }

    /// Tells referring SIP parties how their transfer goes (NOTIFY sipfrag).
    fn attach_refer_progress(&self, plane: &Arc<ControlPlane>) {
        let mut events = plane.subscribe();
        let side = self.clone();
        tokio::spawn(async move {
            loop {
                let ev = match events.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                let (call, status) = match &ev.event {
                    Event::TransferTargetAlerting { call_uri, .. } => (call_uri, 180),
                    Event::TransferConnected { call_uri, .. } => (call_uri, 200),
                    Event::TransferFailed {
                        call_uri, reason, ..
                    } => (
                        call_uri,
                        match reason {
                            FailureReason::Busy => 486,
                            FailureReason::NoAnswer => 480,
                            _ => 603,
                        },
                    ),
                    Event::TransferTimedOut { call_uri, .. } => (call_uri, 408),
                    Event::TransferCancelled { call_uri, .. } => (call_uri, 487),
                    _ => continue,
                };
                let leg = {
                    let mut m = lock(&side.legs);
                    if status >= 200 {
                        m.refers.remove(call)
                    } else {
                        m.refers.get(call).copied()
                    }
                };
                if let Some(leg) = leg {
                    let _ = side
                        .handle
                        .run(move |sw, now| {
                            sw.with_engine(now, |e| e.transfer_progress(leg, status))
                        })
                        .await;
                }
            }
        });
    }

    async fn offered(
        &self,
        plane: &ControlPlane,
        call: CallUri,
        leg: EngineLeg,
        to: &str,
        caller: String,
    ) {
        let kind = self
            .handle
            .run(move |sw, _| sw.engine.leg_kind(leg))
            .await
            .flatten()
            .unwrap_or(EngineKind::Sip);
        let c = ControlLeg::new();
        lock(&self.legs).insert(c, leg);
        let refused = match party_of(to) {
            Some(party) => plane
                .incoming(call.clone(), c, kind_of(kind), caller, party)
                .err()
                .map(|e| e.to_string()),
            None => Some(format!("{to:?} is neither agent:ID nor queue:NAME")),
        };
        if let Some(why) = refused {
            // Nobody will take it: the caller is refused, not left ringing.
            tracing::warn!(uri = %call, "control plane refused the call: {why}");
            lock(&self.legs).forget(leg);
            let _ = self
                .handle
                .run(move |sw, now| {
                    sw.with_engine(now, |e| {
                        e.hang_up(now, &call, EndCause::q850(21, format!("refused: {why}")))
                    })
                })
                .await;
        }
    }
}

impl CallControl for EngineCallSide {
    fn execute(&self, command: CallCommand) -> CallFuture<'_, ()> {
        Box::pin(async move {
            match command {
                CallCommand::Originate {
                    call,
                    leg,
                    to,
                    caller_id,
                } => {
                    let to = self.span_group_of(to)?;
                    let phone = match &to {
                        Endpoint::Phone { user } => Some(self.phone_lookup(user)),
                        _ => None,
                    };
                    let target = match &phone {
                        Some(_) => None,
                        None => Some(target_of(&to)?),
                    };
                    let legs = Arc::clone(&self.legs);
                    self.handle
                        .run(move |sw, now| {
                            // A phone is looked up in the same turn of the switch that places
                            // the INVITE: the binding cannot lapse in between.
                            let target = match (target, phone) {
                                (Some(t), _) => t,
                                (None, Some(p)) => p.resolve(&sw.sip, now)?,
                                (None, None) => return Err(failed("no target")),
                            };
                            sw.with_engine(now, |e| {
                                // Mapped before the switch pumps, so that its first notice
                                // finds the leg.
                                e.originate(now, &call, target, Some(caller_id))
                                    .map(|l| lock(&legs).insert(leg, l))
                            })
                            .map_err(failed)
                        })
                        .await
                        .ok_or_else(stopped)?
                }
                cmd => {
                    let leg = match &cmd {
                        CallCommand::Answer { leg, .. }
                        | CallCommand::Play { leg, .. }
                        | CallCommand::Hold { leg, .. }
                        | CallCommand::Mute { leg, .. }
                        | CallCommand::SendDtmf { leg, .. }
                        | CallCommand::HangUp { leg, .. } => Some(self.engine_leg(leg)?),
                        _ => None,
                    };
                    let pair = match &cmd {
                        CallCommand::Bridge { a, b, .. } => {
                            Some((self.engine_leg(a)?, self.engine_leg(b)?))
                        }
                        _ => None,
                    };
                    let source = match &cmd {
                        CallCommand::Play { audio, .. } => Some(self.source_of(audio).await),
                        _ => None,
                    };
                    let legs = Arc::clone(&self.legs);
                    self.handle
                        .run(move |sw, now| {
                            sw.with_engine(now, |e| match (cmd, leg, pair) {
                                (CallCommand::Bridge { .. }, _, Some((a, b))) => {
                                    e.connect(now, a, b)
                                }
                                (CallCommand::Answer { .. }, Some(l), _) => e.answer(now, l),
                                (CallCommand::Play { .. }, Some(l), _) => {
                                    e.play(l, source.unwrap_or(MediaSource::HoldTone))
                                }
                                (CallCommand::Hold { on: true, .. }, Some(l), _) => {
                                    e.hold(l, MediaSource::HoldTone)
                                }
                                (CallCommand::Hold { on: false, .. }, Some(l), _) => e.resume(l),
                                (CallCommand::Mute { on, .. }, Some(l), _) => e.mute(l, on),
                                (CallCommand::SendDtmf { digits, .. }, Some(l), _) => {
                                    e.send_dtmf(l, &digits, DIGIT)
                                }
                                (CallCommand::HangUp { call, cause, .. }, Some(l), _) => {
                                    // A referring party released because its transfer
                                    // connected (the caller is still here and with someone
                                    // else) hears the final NOTIFY before our BYE.
                                    let referred = lock(&legs).refers.get(&call) == Some(&l);
                                    if referred
                                        && e.caller_leg(&call).is_some_and(|a| a != l)
                                        && e.leg_peer(l).is_none()
                                    {
                                        lock(&legs).refers.remove(&call);
                                        let _ = e.transfer_progress(l, 200);
                                    }
                                    // Gone for the control plane as soon as it asks.
                                    lock(&legs).forget(l);
                                    e.hang_up_leg(now, l, EndCause::normal(cause))
                                }
                                _ => Ok(()),
                            })
                        })
                        .await
                        .ok_or_else(stopped)?
                        .map_err(failed)
                }
            }
        })
    }

    fn accept_webrtc(
        &self,
        call: &CallUri,
        leg: ControlLeg,
        offer_sdp: String,
    ) -> CallFuture<'_, String> {
        let call = call.clone();
        Box::pin(async move {
            let Some(rtc) = self.rtc.clone() else {
                return Err(failed(
                    "this gateway runs no WebRTC legs (no [rtc] section): browser offers are refused",
                ));
            };
            let d = rtc.accept_detached(&offer_sdp).await.map_err(failed)?;
            let (id, sdp) = (d.leg, d.sdp);
            let attachment = d.attachment;
            let legs = Arc::clone(&self.legs);
            let adopted = self
                .handle
                .run(move |sw, now| {
                    sw.with_engine(now, |e| {
                        // Mapped in the same turn of the switch, before any notice of the leg.
                        e.adopt_leg(now, &call, id, EngineKind::WebRtc, attachment)
                            .map(|()| lock(&legs).insert(leg, id))
                    })
                })
                .await;
            match adopted {
                Some(Ok(())) => Ok(sdp),
                Some(Err(e)) => {
                    rtc.hang_up(id);
                    Err(failed(e))
                }
                None => {
                    rtc.hang_up(id);
                    Err(stopped())
                }
            }
        })
    }
}
