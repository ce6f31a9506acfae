//! An in-process call side for tests and benchmarks: it holds legs, answers, rings, fails and
//! hangs up as it is told, and reports everything back to the control plane like an engine
//! would. It moves no audio; it records who is bridged to whom and what each leg hears, so
//! tests can assert what a user would observe (the caller hears the target, not silence) and
//! that no leg is left behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::api::{CallControl, CallFuture, CallSideError, ControlPlane};
use super::config::Endpoint;
use super::core::{Audio, CallCommand, CallEvent, LegId};
use super::events::FailureReason;
use super::transfer::{LegKind, Party};
use super::uri::CallUri;

/// What an originated leg does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Rings, then answers after the delay.
    AutoAnswer(Duration),
    /// Rings until told ([`FakeCallSide::answer`]).
    Ring,
    /// Busy at once.
    Busy,
    /// Rings, never answers.
    NoAnswer,
    /// Fails at once with this reason.
    Fail(String),
    /// Fails at once as unreachable (a phone that is not registered), with this detail.
    Unreachable(String),
    /// Never even rings.
    Silent,
}

/// What a fake leg is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLeg {
    /// The call.
    pub call: CallUri,
    /// Who it is (endpoint, or the caller's name).
    pub peer: String,
    /// Answered.
    pub answered: bool,
    /// Bridged to.
    pub bridged_to: Option<LegId>,
    /// Tone or music it hears (when not bridged).
    pub playing: Option<Audio>,
    /// On hold.
    pub held: bool,
    /// Muted.
    pub muted: bool,
    /// DTMF sent to it.
    pub dtmf: String,
}

/// What a leg hears now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hears {
    /// Another leg (bridged).
    Leg(LegId),
    /// A tone or music.
    Audio(Audio),
    /// Hold music.
    Hold,
    /// Nothing at all: the failure a gateway must never produce for a caller.
    Silence,
}

#[derive(Debug, Default)]
struct State {
    legs: HashMap<LegId, FakeLeg>,
    behaviours: HashMap<String, Behaviour>,
    default: Option<Behaviour>,
    commands: Vec<CallCommand>,
    fail_bridges: bool,
}

/// The fake call side.
#[derive(Debug, Default)]
pub struct FakeCallSide {
    state: Mutex<State>,
    plane: Mutex<Weak<ControlPlane>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A key for behaviours: `sip:...`, `tdm:NUMBER`, `phone:USER`.
pub fn endpoint_key(e: &Endpoint) -> String {
    match e {
        Endpoint::Browser => "browser".into(),
        Endpoint::Sip { uri } => uri.clone(),
        Endpoint::Phone { user } => format!("phone:{user}"),
        Endpoint::Tdm { number, .. } => format!("tdm:{number}"),
    }
}

/// An SDP answer that mirrors an offer (same media, `a=setup:active`): enough for a browser's
/// `setRemoteDescription` to succeed. No media flows to it.
pub fn mirror_answer(offer: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let l = line.trim_end();
        let l = if l == "a=setup:actpass" || l == "a=setup:passive" {
            "a=setup:active"
        } else {
            l
        };
        if l.starts_with("a=candidate") || l.starts_with("a=end-of-candidates") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out
}

impl FakeCallSide {
    /// A fake call side whose originated legs auto-answer after 0 ms unless told otherwise.
    pub fn new() -> Arc<Self> {
        let f = Arc::new(FakeCallSide::default());
        lock(&f.state).default = Some(Behaviour::AutoAnswer(Duration::ZERO));
        f
    }

    /// Connects the fake to the plane it reports to.
    pub fn attach(&self, plane: &Arc<ControlPlane>) {
        *lock(&self.plane) = Arc::downgrade(plane);
    }

    /// How legs towards `key` behave (see [`endpoint_key`]).
    pub fn set_behaviour(&self, key: impl Into<String>, b: Behaviour) {
        lock(&self.state).behaviours.insert(key.into(), b);
    }

    /// How every other originated leg behaves.
    pub fn set_default(&self, b: Behaviour) {
        lock(&self.state).default = Some(b);
    }

    /// Makes every bridge command fail (to test that failures are survived and logged).
    pub fn fail_bridges(&self, on: bool) {
        lock(&self.state).fail_bridges = on;
    }

    fn report(&self, ev: CallEvent) {
        if let Some(p) = lock(&self.plane).upgrade() {
            p.call_event(ev);
        }
    }

    /// An inbound call (a SIP trunk or a TDM line) for `to`: creates the caller leg and tells
    /// the plane. Returns the call's URI and the caller's leg.
    pub fn place_call(
        &self,
        to: Party,
        caller: &str,
        kind: LegKind,
    ) -> Result<(CallUri, LegId), super::core::ControlError> {
        let call = CallUri::new();
        let leg = LegId::new();
        lock(&self.state).legs.insert(
            leg,
            FakeLeg {
                call: call.clone(),
                peer: caller.into(),
                answered: false,
                bridged_to: None,
                playing: None,
                held: false,
                muted: false,
                dtmf: String::new(),
            },
        );
        let plane = lock(&self.plane).upgrade();
        let Some(plane) = plane else {
            return Err(super::core::ControlError::Unavailable(
                "fake not attached".into(),
            ));
        };
        if let Err(e) = plane.incoming(call.clone(), leg, kind, caller.into(), to) {
            lock(&self.state).legs.remove(&leg);
            return Err(e);
        }
        Ok((call, leg))
    }

    /// A leg's remote party hangs up.
    pub fn remote_hang_up(&self, leg: LegId) {
        let removed = {
            let mut s = lock(&self.state);
            let l = s.legs.remove(&leg);
            for other in s.legs.values_mut() {
                if other.bridged_to == Some(leg) {
                    other.bridged_to = None;
                }
            }
            l
        };
        if let Some(l) = removed {
            self.report(CallEvent::HungUp {
                call: l.call,
                leg,
                cause: "normal_clearing".into(),
            });
        }
    }

    /// A ringing leg answers.
    pub fn answer(&self, leg: LegId) -> bool {
        let call = {
            let mut s = lock(&self.state);
            match s.legs.get_mut(&leg) {
                Some(l) if !l.answered => {
                    l.answered = true;
                    Some(l.call.clone())
                }
                _ => None,
            }
        };
        match call {
            Some(call) => {
                self.report(CallEvent::Answered { call, leg });
                true
            }
            None => false,
        }
    }

    /// A leg.
    pub fn leg(&self, leg: LegId) -> Option<FakeLeg> {
        lock(&self.state).legs.get(&leg).cloned()
    }

    /// Legs of a call whose peer is `peer`.
    pub fn legs_to(&self, peer: &str) -> Vec<LegId> {
        lock(&self.state)
            .legs
            .iter()
            .filter(|(_, l)| l.peer == peer)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every live leg.
    pub fn live_legs(&self) -> usize {
        lock(&self.state).legs.len()
    }

    /// What `leg` hears.
    pub fn hears(&self, leg: LegId) -> Hears {
        let s = lock(&self.state);
        match s.legs.get(&leg) {
            None => Hears::Silence,
            Some(l) if l.held => Hears::Hold,
            Some(l) => match (l.bridged_to, &l.playing) {
                (Some(b), _) if s.legs.contains_key(&b) => Hears::Leg(b),
                (_, Some(a)) => Hears::Audio(a.clone()),
                _ => Hears::Silence,
            },
        }
    }

    /// Every command received, in order.
    pub fn commands(&self) -> Vec<CallCommand> {
        lock(&self.state).commands.clone()
    }

    fn originate(self: &Arc<Self>, call: CallUri, leg: LegId, to: &Endpoint) {
        let key = endpoint_key(to);
        let b = {
            let mut s = lock(&self.state);
            let b = s
                .behaviours
                .get(&key)
                .cloned()
                .or_else(|| s.default.clone())
                .unwrap_or(Behaviour::Ring);
            s.legs.insert(
                leg,
                FakeLeg {
                    call: call.clone(),
                    peer: key,
                    answered: false,
                    bridged_to: None,
                    playing: None,
                    held: false,
                    muted: false,
                    dtmf: String::new(),
                },
            );
            b
        };
        let fail = |reason: FailureReason| {
            lock(&self.state).legs.remove(&leg);
            self.report(CallEvent::Failed {
                call: call.clone(),
                leg,
                reason,
            });
        };
        match b {
            Behaviour::Busy => fail(FailureReason::Busy),
            Behaviour::Fail(r) => fail(FailureReason::Rejected(r)),
            Behaviour::Unreachable(r) => fail(FailureReason::Unreachable(r)),
            Behaviour::Silent => {}
            Behaviour::Ring | Behaviour::NoAnswer => self.report(CallEvent::Alerting { call, leg }),
            Behaviour::AutoAnswer(d) => {
                self.report(CallEvent::Alerting {
                    call: call.clone(),
                    leg,
                });
                if d.is_zero() {
                    self.answer(leg);
                } else {
                    let me = Arc::downgrade(self);
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        if let Some(me) = me.upgrade() {
                            me.answer(leg);
                        }
                    });
                }
            }
        }
    }
}

/// The plane holds the call side as `Arc<dyn CallControl>`; the fake needs `Arc<Self>` for its
/// timers, so the trait is implemented on a thin wrapper.
#[derive(Debug, Clone)]
pub struct FakeHandle(pub Arc<FakeCallSide>);

impl CallControl for FakeHandle {
    fn execute(&self, command: CallCommand) -> CallFuture<'_, ()> {
        let f = self.0.clone();
        Box::pin(async move {
            lock(&f.state).commands.push(command.clone());
            match command {
                CallCommand::Originate { call, leg, to, .. } => {
                    f.originate(call, leg, &to);
                    Ok(())
                }
                CallCommand::Answer { leg, .. } => {
                    let mut s = lock(&f.state);
                    let l = s
                        .legs
                        .get_mut(&leg)
                        .ok_or_else(|| CallSideError::NoSuchLeg(leg.to_string()))?;
                    l.answered = true;
                    Ok(())
                }
                CallCommand::Bridge { a, b, .. } => {
                    let mut s = lock(&f.state);
                    if s.fail_bridges {
                        return Err(CallSideError::Failed("bridge failure injected".into()));
                    }
                    if !s.legs.contains_key(&a) || !s.legs.contains_key(&b) {
                        return Err(CallSideError::NoSuchLeg(format!("{a} or {b}")));
                    }
                    // Re-pointing: whoever was bridged to a or b loses it.
                    for l in s.legs.values_mut() {
                        if l.bridged_to == Some(a) || l.bridged_to == Some(b) {
                            l.bridged_to = None;
                        }
                    }
                    for (x, y) in [(a, b), (b, a)] {
                        if let Some(l) = s.legs.get_mut(&x) {
                            l.bridged_to = Some(y);
                            l.playing = None;
                            l.held = false;
                        }
                    }
                    Ok(())
                }
                CallCommand::Play { leg, audio, .. } => {
                    let mut s = lock(&f.state);
                    let l = s
                        .legs
                        .get_mut(&leg)
                        .ok_or_else(|| CallSideError::NoSuchLeg(leg.to_string()))?;
                    let old = l.bridged_to.take();
                    l.playing = Some(audio);
                    if let Some(o) = old.and_then(|o| s.legs.get_mut(&o)) {
                        o.bridged_to = None;
                    }
                    Ok(())
                }
                CallCommand::Hold { leg, on, .. } => {
                    let mut s = lock(&f.state);
                    let l = s
                        .legs
                        .get_mut(&leg)
                        .ok_or_else(|| CallSideError::NoSuchLeg(leg.to_string()))?;
                    l.held = on;
                    Ok(())
                }
                CallCommand::Mute { leg, on, .. } => {
                    let mut s = lock(&f.state);
                    let l = s
                        .legs
                        .get_mut(&leg)
                        .ok_or_else(|| CallSideError::NoSuchLeg(leg.to_string()))?;
                    l.muted = on;
                    Ok(())
                }
                CallCommand::SendDtmf { leg, digits, .. } => {
                    let mut s = lock(&f.state);
                    let l = s
                        .legs
                        .get_mut(&leg)
                        .ok_or_else(|| CallSideError::NoSuchLeg(leg.to_string()))?;
                    l.dtmf.push_str(&digits);
                    Ok(())
                }
                CallCommand::HangUp { leg, .. } => {
                    let mut s = lock(&f.state);
                    s.legs.remove(&leg);
                    for l in s.legs.values_mut() {
                        if l.bridged_to == Some(leg) {
                            l.bridged_to = None;
                        }
                    }
                    // Releasing a leg that is already gone is not an error (idempotent).
                    Ok(())
                }
            }
        })
    }

    fn accept_webrtc(
        &self,
        call: &CallUri,
        leg: LegId,
        offer_sdp: String,
    ) -> CallFuture<'_, String> {
        let f = self.0.clone();
        let call = call.clone();
        Box::pin(async move {
            if offer_sdp.contains("m=audio 0 ") || !offer_sdp.contains("m=audio") {
                return Err(CallSideError::Failed("the SDP offer has no audio".into()));
            }
            lock(&f.state).legs.insert(
                leg,
                FakeLeg {
                    call,
                    peer: "browser".into(),
                    answered: true,
                    bridged_to: None,
                    playing: None,
                    held: false,
                    muted: false,
                    dtmf: String::new(),
                },
            );
            Ok(mirror_answer(&offer_sdp))
        })
    }
}
