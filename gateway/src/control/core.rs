//! The control plane's core: calls as the contact center sees them, joined to the ACD
//! ([`ContactCenter`]) and the transfer executor ([`TransferTable`]), with authorization.
//!
//! [`ControlCore`] is sans-IO like its parts. API actions, call-side news ([`CallEvent`]) and
//! timer expiries go in with the current time; [`Effect`]s come out, in order: commands for the
//! call side ([`CallCommand`], carried out through [`super::api::CallControl`]) and events to
//! publish. The async shell in [`super::api`] locks the core, feeds it, and hands the effects
//! to one executor task, so commands reach the call side in the order the core decided them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use subtle::ConstantTimeEq;

use super::center::{AcdError, AcdOutput, ContactCenter, Presence, Purpose, endpoint_kind_name};
use super::config::{AgentConfig, Comfort, ControlConfig, Endpoint, QueueConfig, RouteKind};
use super::events::{Audience, Event, FailureReason, HistoryEntry};
use super::transfer::{
    Command, Input, LegKind, Party, Timeouts, Tone, TransferError, TransferKind, TransferState,
    TransferTable,
};
use super::uri::CallUri;

/// A leg's id: assigned by whoever creates the leg (the call side for inbound legs, the
/// control plane for legs it asks the call side to create). Random, so both can make them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct LegId(pub uuid::Uuid);

impl LegId {
    /// A new random leg id.
    pub fn new() -> Self {
        LegId(uuid::Uuid::new_v4())
    }
}

impl Default for LegId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for LegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "leg-{}", self.0.simple())
    }
}

/// What a leg should hear when nobody is talking to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Audio {
    /// Ringback (a transfer target is being called).
    Ringback,
    /// Hold tone or music (the agent consults).
    Hold,
    /// A queue's comfort tone or music.
    Comfort(Comfort),
}

/// A command for the call side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCommand {
    /// Create a new outbound leg `leg` in `call` towards `to`; report progress with
    /// [`CallEvent`]s for `leg`.
    Originate {
        /// The call.
        call: CallUri,
        /// The new leg's id.
        leg: LegId,
        /// Where.
        to: Endpoint,
        /// Caller id to present.
        caller_id: String,
    },
    /// Answer an inbound leg (the caller's, so that it can hear comfort audio).
    Answer {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
    },
    /// Connect two legs both ways (re-pointing whatever each was connected to).
    Bridge {
        /// The call.
        call: CallUri,
        /// One leg.
        a: LegId,
        /// The other.
        b: LegId,
    },
    /// Feed a leg from a tone or music source (until it is bridged again).
    Play {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
        /// What to play.
        audio: Audio,
    },
    /// Put a leg on hold (it hears hold music; what it sends goes nowhere) or take it off.
    Hold {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
        /// On or off.
        on: bool,
    },
    /// Stop (or resume) forwarding what `leg` sends.
    Mute {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
        /// On or off.
        on: bool,
    },
    /// Send DTMF digits to a leg (RFC 4733, SIP INFO or in-band, as the leg negotiated).
    SendDtmf {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
        /// Digits `0-9*#A-D`.
        digits: String,
    },
    /// Release a leg.
    HangUp {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
        /// Why (`normal_clearing`, `no_answer`, `transfer_cancelled`, ...).
        cause: String,
    },
}

impl CallCommand {
    /// The call the command is for.
    pub fn call(&self) -> &CallUri {
        match self {
            CallCommand::Originate { call, .. }
            | CallCommand::Answer { call, .. }
            | CallCommand::Bridge { call, .. }
            | CallCommand::Play { call, .. }
            | CallCommand::Hold { call, .. }
            | CallCommand::Mute { call, .. }
            | CallCommand::SendDtmf { call, .. }
            | CallCommand::HangUp { call, .. } => call,
        }
    }
}

/// What the core asks the shell to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Carry out a call-side command.
    Call(CallCommand),
    /// Publish an event to API clients.
    Publish(Event, Audience),
}

/// News from the call side about a leg the control plane knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// The leg is ringing (SIP 180/183, Q.931 ALERTING).
    Alerting {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
    },
    /// The leg answered.
    Answered {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
    },
    /// The leg failed before answering.
    Failed {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
        /// Why.
        reason: FailureReason,
    },
    /// The leg hung up (after answering, or an inbound leg at any time).
    HungUp {
        /// The call.
        call: CallUri,
        /// The leg.
        leg: LegId,
        /// Why.
        cause: String,
    },
}

/// What the call side found for the dialog a SIP REFER's Replaces names (see
/// [`ControlCore::refer_replaces`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplacedLeg {
    /// A leg of the call itself: the target leg of the attended transfer in progress (a
    /// consultation started with the API's `consult`).
    Consultation(LegId),
    /// The party of the agent's own consultation call, now a leg of this call (answered,
    /// unbridged), reached at `target`.
    Joined {
        /// Its new control-plane leg id.
        leg: LegId,
        /// Who it is (the REFER's Refer-To).
        target: Party,
    },
    /// No dialog to take over: the transfer fails and the caller stays with the agent.
    NotFound {
        /// The REFER's Refer-To.
        target: Party,
        /// Why (for `transfer.failed`).
        why: String,
    },
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", content = "agent", rename_all = "snake_case")]
pub enum Principal {
    /// Manages agents and queues; acts on any call.
    Admin,
    /// Sees everything, acts on nothing.
    Supervisor,
    /// An agent, acting on calls offered to or held by them.
    Agent(String),
}

/// A refused or failed control action. Each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or an unknown one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such call, agent, queue, destination or transfer.
    #[error("{0}")]
    NotFound(String),
    /// 409: the state does not allow it (a second transfer, an agent on a call, ...).
    #[error("{0}")]
    Conflict(String),
    /// 503: the call side could not do it.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AcdError> for ControlError {
    fn from(e: AcdError) -> Self {
        let m = e.to_string();
        match e {
            AcdError::UnknownAgent(_) | AcdError::UnknownQueue(_) => ControlError::NotFound(m),
            AcdError::NoSuchEndpoint(_) => ControlError::BadRequest(m),
            _ => ControlError::Conflict(m),
        }
    }
}

impl From<TransferError> for ControlError {
    fn from(e: TransferError) -> Self {
        let m = e.to_string();
        match e {
            TransferError::AlreadyInProgress(_) | TransferError::NotAttended(_) => {
                ControlError::Conflict(m)
            }
            TransferError::NotFound(_) => ControlError::Conflict(m),
        }
    }
}

#[derive(Debug, Clone)]
struct TargetInfo {
    party: Party,
    /// The agent who will hold the call if this is an agent (known at once for direct
    /// targets, at the answer for a queue hunt).
    agent: Option<String>,
    leg: Option<LegId>,
    answered: bool,
    from: Option<String>,
}

/// A call as the control plane holds it.
#[derive(Debug, Clone)]
struct CallRecord {
    uri: CallUri,
    caller: String,
    caller_kind: LegKind,
    caller_leg: LegId,
    created: Instant,
    queue: Option<String>,
    agent: Option<String>,
    agent_leg: Option<LegId>,
    /// Pending offers: agent -> the leg originated to the agent's phone (None for browsers).
    offers: BTreeMap<String, Option<LegId>>,
    held: bool,
    muted: bool,
    target: Option<TargetInfo>,
    external: Option<(Party, LegId)>,
    history: Vec<HistoryEntry>,
    audience: BTreeSet<String>,
}

/// A call, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallView {
    /// The call's URI.
    pub call_uri: CallUri,
    /// Who is calling.
    pub caller: String,
    /// The caller's leg technology.
    pub caller_kind: LegKind,
    /// `queued`, `offered`, `connected`, `held`, `transferring`, `consulting`, `external`,
    /// `routing`.
    pub state: String,
    /// The agent holding the call.
    pub agent: Option<String>,
    /// Agents the call is being offered to.
    pub offered_to: Vec<String>,
    /// The queue the call waits in or came from.
    pub queue: Option<String>,
    /// Position in the queue while waiting.
    pub position: Option<usize>,
    /// Estimated wait in seconds while waiting.
    pub expected_wait_s: Option<u64>,
    /// On hold.
    pub held: bool,
    /// The agent's microphone muted.
    pub muted: bool,
    /// The transfer in progress.
    pub transfer: Option<TransferView>,
    /// Earlier transfers, oldest first.
    pub transfer_history: Vec<HistoryEntry>,
    /// Milliseconds since the call was created.
    pub age_ms: u64,
}

/// A transfer in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferView {
    /// Where to.
    pub target: Party,
    /// Blind or attended.
    pub kind: TransferKind,
    /// The executor's state.
    pub state: TransferState,
    /// The agent who asked.
    pub from: Option<String>,
    /// The agent who answered as target.
    pub target_agent: Option<String>,
}

/// An agent, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Skills.
    pub skills: Vec<String>,
    /// Presence.
    pub presence: Presence,
    /// The endpoint kind logged in with.
    pub endpoint: Option<&'static str>,
    /// The configured endpoints.
    pub endpoints: Vec<Endpoint>,
    /// The call offered to or held by the agent.
    pub call_uri: Option<CallUri>,
    /// Milliseconds available (the idle ordering), while available.
    pub idle_ms: Option<u64>,
    /// Why away.
    pub away_reason: Option<String>,
    /// Wrap-up left, in milliseconds.
    pub wrap_up_left_ms: Option<u64>,
}

/// A queue, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueView {
    /// The configuration.
    #[serde(flatten)]
    pub config: QueueConfig,
    /// Calls waiting, oldest first.
    pub waiting: Vec<CallUri>,
    /// Agents with the skill who are available now.
    pub available_agents: usize,
    /// Agents with the skill who are logged in.
    pub staffed_agents: usize,
}

/// A transfer target a principal may choose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetOption {
    /// The target (for `agent` and `queue`), or a pattern's example kind.
    pub target: Option<Party>,
    /// What to show.
    pub label: String,
    /// Agents: their presence.
    pub presence: Option<Presence>,
    /// Routes: `sip` or `tdm` and the pattern a free-form target must match.
    pub route: Option<(RouteKind, String)>,
}

/// The control plane's state.
#[derive(Debug)]
pub struct ControlCore {
    config: ControlConfig,
    center: ContactCenter,
    transfers: TransferTable,
    calls: HashMap<CallUri, CallRecord>,
    legs: HashMap<LegId, CallUri>,
    pending: VecDeque<(CallUri, Input)>,
}

const DIGITS: &str = "0123456789*#ABCDabcd";

impl ControlCore {
    /// A core for this configuration (which must have passed
    /// [`ControlConfig::validate`]).
    pub fn new(config: ControlConfig) -> Self {
        let t = config.timers;
        let center = ContactCenter::new(
            config.agents.clone(),
            config.queues.clone(),
            Duration::from_millis(t.wrap_up_ms),
        );
        let transfers = TransferTable::new(Timeouts {
            setup: Duration::from_millis(t.transfer_setup_ms),
            ring: Duration::from_millis(t.transfer_ring_ms),
            consult: Duration::from_millis(t.consult_ms),
        });
        ControlCore {
            config,
            center,
            transfers,
            calls: HashMap::new(),
            legs: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// The configuration (agents and queues as configured at start; see the views for live
    /// ones).
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The contact center.
    pub fn center(&self) -> &ContactCenter {
        &self.center
    }

    /// Calls held (for leak checks: 0 when every call has ended).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Legs known (0 when every call has ended).
    pub fn leg_count(&self) -> usize {
        self.legs.len()
    }

    /// Transfers in progress.
    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }

    // ---- authentication ----

    /// The principal a bearer token belongs to (constant-time comparison against every
    /// token).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let mut found = None;
        let t = token.as_bytes();
        for a in &self.config.access.admin_tokens {
            if bool::from(a.as_bytes().ct_eq(t)) {
                found = Some(Principal::Admin);
            }
        }
        for s in &self.config.access.supervisor_tokens {
            if bool::from(s.as_bytes().ct_eq(t)) {
                found = Some(Principal::Supervisor);
            }
        }
        for a in self.center.agents() {
            if bool::from(a.config.token.as_bytes().ct_eq(t)) {
                found = Some(Principal::Agent(a.config.id.clone()));
            }
        }
        found
    }

    // ---- calls from the call side ----

    /// A new call's first leg appeared, for `to` (an agent or a queue). Returns its effects;
    /// an unroutable call is refused (the caller side should reject the leg).
    pub fn incoming(
        &mut self,
        call: CallUri,
        leg: LegId,
        kind: LegKind,
        caller: String,
        to: Party,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        if self.calls.contains_key(&call) {
            return Err(ControlError::Conflict(format!("{call} exists already")));
        }
        match &to {
            Party::Queue(q) if self.center.queue(q).is_none() => {
                return Err(ControlError::NotFound(format!("no queue {q:?}")));
            }
            Party::Agent(a) if self.center.agent(a).is_none() => {
                return Err(ControlError::NotFound(format!("no agent {a:?}")));
            }
            Party::SipUri(_) | Party::TdmNumber(_) => {
                return Err(ControlError::BadRequest(
                    "calls enter the contact center for an agent or a queue".into(),
                ));
            }
            _ => {}
        }
        let mut out = Vec::new();
        self.calls.insert(
            call.clone(),
            CallRecord {
                uri: call.clone(),
                caller: caller.clone(),
                caller_kind: kind,
                caller_leg: leg,
                created: now,
                queue: None,
                agent: None,
                agent_leg: None,
                offers: BTreeMap::new(),
                held: false,
                muted: false,
                target: None,
                external: None,
                history: Vec::new(),
                audience: BTreeSet::new(),
            },
        );
        self.legs.insert(leg, call.clone());
        out.push(Effect::Publish(
            Event::CallCreated {
                call_uri: call.clone(),
                caller,
            },
            Audience::Agents(Vec::new()),
        ));
        match to {
            Party::Queue(q) => {
                out.push(Effect::Call(CallCommand::Answer {
                    call: call.clone(),
                    leg,
                }));
                match self.center.enqueue(&call, &q, Purpose::Caller, true, now) {
                    Ok(o) => self.acd(o, now, &mut out),
                    Err(e) => {
                        self.end_call(&call, "unroutable", now, &mut out);
                        return Err(e.into());
                    }
                }
            }
            Party::Agent(a) => match self.center.offer_direct(&call, &a, Purpose::Caller, now) {
                Ok(o) => {
                    out.push(Effect::Call(CallCommand::Play {
                        call: call.clone(),
                        leg,
                        audio: Audio::Ringback,
                    }));
                    self.acd(o, now, &mut out);
                }
                Err(_) => {
                    self.end_call(&call, "user_busy", now, &mut out);
                }
            },
            _ => {}
        }
        self.drain(now, &mut out);
        Ok(out)
    }

    /// News about a leg.
    pub fn call_event(&mut self, ev: CallEvent, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        let (call, leg) = match &ev {
            CallEvent::Alerting { call, leg }
            | CallEvent::Answered { call, leg }
            | CallEvent::Failed { call, leg, .. }
            | CallEvent::HungUp { call, leg, .. } => (call.clone(), *leg),
        };
        let known = self.legs.get(&leg) == Some(&call);
        let Some(rec) = self.calls.get(&call).filter(|_| known).cloned() else {
            // A leg we no longer want (an answer that crossed our hang-up): release it.
            if let CallEvent::Answered { .. } = ev {
                out.push(Effect::Call(CallCommand::HangUp {
                    call,
                    leg,
                    cause: "normal_clearing".into(),
                }));
            }
            return out;
        };
        let transfer_active = self.transfers.get(&call).is_some();
        let is_target = rec.target.as_ref().and_then(|t| t.leg) == Some(leg);
        let offer_agent = rec
            .offers
            .iter()
            .find(|(_, l)| **l == Some(leg))
            .map(|(a, _)| a.clone());
        let direct_target_agent = rec.target.as_ref().and_then(|t| match &t.party {
            Party::Agent(a) => Some(a.clone()),
            _ => None,
        });
        if leg == rec.caller_leg {
            match ev {
                CallEvent::HungUp { cause, .. } => self.caller_gone(&call, &cause, now, &mut out),
                CallEvent::Failed { reason, .. } => {
                    self.caller_gone(&call, &format!("{reason:?}").to_lowercase(), now, &mut out)
                }
                _ => {}
            }
        } else if is_target {
            let input = match ev {
                CallEvent::Alerting { .. } => Some(Input::TargetAlerting),
                CallEvent::Answered { .. } => {
                    if let Some(t) = self.calls.get_mut(&call).and_then(|r| r.target.as_mut()) {
                        t.answered = true;
                    }
                    Some(Input::TargetAnswered)
                }
                CallEvent::Failed { reason, .. } => {
                    self.forget_target_leg(&call);
                    Some(Input::TargetFailed(reason))
                }
                CallEvent::HungUp { .. } => {
                    self.forget_target_leg(&call);
                    self.release_target_agent(&call, now, &mut out);
                    Some(Input::TargetHungUp)
                }
            };
            if let Some(i) = input {
                if transfer_active {
                    self.pending.push_back((call.clone(), i));
                }
            }
        } else if let Some(agent) = offer_agent {
            let is_transfer_target =
                transfer_active && direct_target_agent.as_ref() == Some(&agent);
            match ev {
                CallEvent::Alerting { .. } => {
                    if is_transfer_target {
                        self.pending
                            .push_back((call.clone(), Input::TargetAlerting));
                    }
                }
                CallEvent::Answered { .. } => {
                    if let Err(e) = self.agent_answered(&agent, &call, leg, now, &mut out) {
                        tracing::warn!(uri = %call, %agent, "answer from phone refused: {e}");
                        out.push(Effect::Call(CallCommand::HangUp {
                            call: call.clone(),
                            leg,
                            cause: "normal_clearing".into(),
                        }));
                    }
                }
                CallEvent::Failed { reason, .. } => {
                    if let Some(r) = self.calls.get_mut(&call) {
                        r.offers.insert(agent.clone(), None);
                    }
                    self.legs.remove(&leg);
                    if is_transfer_target {
                        self.pending
                            .push_back((call.clone(), Input::TargetFailed(reason)));
                    } else if let FailureReason::Unreachable(why) = &reason {
                        // Offering it again would fail the same way: the agent is set away,
                        // the call goes to the next agent or waits in its queue.
                        tracing::warn!(uri = %call, %agent, "agent's endpoint unreachable: {why}");
                        if let Ok(o) = self.center.unreachable(&agent, &call, now) {
                            self.acd(o, now, &mut out);
                        }
                    } else if let Ok(o) = self.center.declined(&agent, &call, now) {
                        self.acd(o, now, &mut out);
                    }
                }
                CallEvent::HungUp { .. } => {
                    if let Some(r) = self.calls.get_mut(&call) {
                        r.offers.insert(agent.clone(), None);
                    }
                    self.legs.remove(&leg);
                    if is_transfer_target {
                        self.pending.push_back((
                            call.clone(),
                            Input::TargetFailed(FailureReason::Rejected("hung up".into())),
                        ));
                    } else if let Ok(o) = self.center.declined(&agent, &call, now) {
                        self.acd(o, now, &mut out);
                    }
                }
            }
        } else if Some(leg) == rec.agent_leg {
            if let CallEvent::HungUp { .. } | CallEvent::Failed { .. } = ev {
                self.agent_leg_gone(&call, now, &mut out);
            }
        } else if rec.external.as_ref().map(|e| e.1) == Some(leg) {
            if let CallEvent::HungUp { .. } | CallEvent::Failed { .. } = ev {
                if let Some(r) = self.calls.get_mut(&call) {
                    r.external = None;
                }
                self.legs.remove(&leg);
                self.hang_up_caller(&call, "normal_clearing", now, &mut out);
            }
        }
        self.drain(now, &mut out);
        out
    }

    /// A SIP REFER from `leg` (an agent's SIP leg) asks to transfer the call: the same path as
    /// the API's transfer action, authorized as the agent who holds that leg. (The call side
    /// answers the REFER 202 on `Ok` and sends NOTIFYs from the transfer events.)
    pub fn refer(
        &mut self,
        call: &CallUri,
        leg: LegId,
        target: Party,
        kind: TransferKind,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        let rec = self
            .calls
            .get(call)
            .ok_or_else(|| ControlError::NotFound(format!("no call {call}")))?;
        let agent = match (&rec.agent, rec.agent_leg) {
            (Some(a), Some(l)) if l == leg => a.clone(),
            _ => {
                return Err(ControlError::Forbidden(
                    "REFER from a leg that is not the agent's".into(),
                ));
            }
        };
        self.transfer(&Principal::Agent(agent), call, target, kind, now)
    }

    /// A SIP REFER with Replaces from `leg` (the agent's SIP leg): an attended transfer whose
    /// consultation the agent set up. `replaced` is what the call side found for the dialog
    /// the Replaces names (see [`ReplacedLeg`]). Authorized as the agent holding that leg, like
    /// [`refer`](Self::refer). A consultation leg of this call completes the transfer in
    /// progress (the API's `complete`); a joined leg completes a new attended transfer at once
    /// (`transfer.requested`, `transfer.target_answered`, `transfer.connected`: the caller is
    /// bridged to it, the agent released); nothing found fails one at once
    /// (`transfer.failed`, the caller stays with the agent).
    pub fn refer_replaces(
        &mut self,
        call: &CallUri,
        leg: LegId,
        replaced: ReplacedLeg,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        let rec = self.record(call)?;
        let agent = match (&rec.agent, rec.agent_leg) {
            (Some(a), Some(l)) if l == leg => a.clone(),
            _ => {
                return Err(ControlError::Forbidden(
                    "REFER from a leg that is not the agent's".into(),
                ));
            }
        };
        let (target, found, target_leg) = match replaced {
            ReplacedLeg::Consultation(l) => {
                if rec.target.as_ref().and_then(|t| t.leg) != Some(l) {
                    return Err(ControlError::NotFound(format!(
                        "the dialog named by Replaces is not the consultation of {call}"
                    )));
                }
                return self.complete_transfer(&Principal::Agent(agent), call, now);
            }
            ReplacedLeg::Joined { leg, target } => (target, Ok(()), Some(leg)),
            ReplacedLeg::NotFound { target, why } => {
                (target, Err(FailureReason::Rejected(why)), None)
            }
        };
        let fallback = rec
            .queue
            .clone()
            .or_else(|| self.center.queues().next().map(|q| q.config.name.clone()))
            .unwrap_or_default();
        let created = rec.created;
        let cmds = self.transfers.request_replacing(
            call.clone(),
            target.clone(),
            Party::Agent(agent.clone()),
            &fallback,
            found,
        )?;
        if let Some(l) = target_leg {
            self.legs.insert(l, call.clone());
        }
        if let Some(rec) = self.calls.get_mut(call) {
            rec.held = false;
            rec.target = Some(TargetInfo {
                party: target.clone(),
                agent: None,
                leg: target_leg,
                answered: target_leg.is_some(),
                from: Some(agent.clone()),
            });
            rec.history.push(HistoryEntry {
                at_ms: ms(now.saturating_duration_since(created)),
                from: Some(agent),
                to: target,
                kind: TransferKind::Attended,
                outcome: "in_progress".into(),
            });
        }
        let mut out = Vec::new();
        self.run_transfer(call, cmds, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    // ---- API actions ----

    fn record(&self, call: &CallUri) -> Result<&CallRecord, ControlError> {
        self.calls
            .get(call)
            .ok_or_else(|| ControlError::NotFound(format!("no call {call}")))
    }

    fn may_see(&self, p: &Principal, rec: &CallRecord) -> bool {
        match p {
            Principal::Admin | Principal::Supervisor => true,
            Principal::Agent(a) => involved(rec, a),
        }
    }

    fn check_act(&self, p: &Principal, call: &CallUri) -> Result<&CallRecord, ControlError> {
        let rec = self.record(call)?;
        match p {
            Principal::Admin => Ok(rec),
            Principal::Supervisor => Err(ControlError::Forbidden(
                "supervisor tokens see calls but do not act on them".into(),
            )),
            Principal::Agent(a) if involved(rec, a) => Ok(rec),
            Principal::Agent(a) => Err(ControlError::Forbidden(format!(
                "{call} is not offered to or held by agent {a:?}"
            ))),
        }
    }

    /// The agent (or admin acting for the holding agent) that holds the call.
    fn holder(&self, p: &Principal, call: &CallUri) -> Result<(String, LegId), ControlError> {
        let rec = self.check_act(p, call)?;
        match (&rec.agent, rec.agent_leg) {
            (Some(a), Some(l))
                if matches!(p, Principal::Admin) || p == &Principal::Agent(a.clone()) =>
            {
                Ok((a.clone(), l))
            }
            _ => Err(ControlError::Conflict(format!(
                "{call} is not connected to {}",
                match p {
                    Principal::Agent(a) => format!("agent {a:?}"),
                    _ => "an agent".into(),
                }
            ))),
        }
    }

    /// Calls the principal may see.
    pub fn list_calls(&self, p: &Principal, now: Instant) -> Vec<CallView> {
        let mut v: Vec<CallView> = self
            .calls
            .values()
            .filter(|r| self.may_see(p, r))
            .map(|r| self.view(r, now))
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.age_ms));
        v
    }

    /// One call.
    pub fn get_call(
        &self,
        p: &Principal,
        call: &CallUri,
        now: Instant,
    ) -> Result<CallView, ControlError> {
        let rec = self.record(call)?;
        if !self.may_see(p, rec) {
            return Err(ControlError::Forbidden(format!(
                "{call} is not offered to or held by you"
            )));
        }
        Ok(self.view(rec, now))
    }

    fn view(&self, r: &CallRecord, now: Instant) -> CallView {
        let t = self.transfers.get(&r.uri);
        let pos = self.center.position(&r.uri);
        let state = if let Some(t) = t {
            if t.state() == &TransferState::Consulting {
                "consulting"
            } else {
                "transferring"
            }
        } else if r.agent.is_some() {
            if r.held { "held" } else { "connected" }
        } else if r.external.is_some() {
            "external"
        } else if !r.offers.is_empty() {
            "offered"
        } else if pos.is_some() {
            "queued"
        } else {
            "routing"
        };
        CallView {
            call_uri: r.uri.clone(),
            caller: r.caller.clone(),
            caller_kind: r.caller_kind,
            state: state.into(),
            agent: r.agent.clone(),
            offered_to: r.offers.keys().cloned().collect(),
            queue: r.queue.clone(),
            position: pos.as_ref().map(|p| p.1),
            expected_wait_s: pos.as_ref().map(|p| p.2.as_secs()),
            held: r.held,
            muted: r.muted,
            transfer: t.map(|t| TransferView {
                target: t.target().clone(),
                kind: t.kind(),
                state: t.state().clone(),
                from: r.target.as_ref().and_then(|x| x.from.clone()),
                target_agent: r.target.as_ref().and_then(|x| x.agent.clone()),
            }),
            transfer_history: r.history.clone(),
            age_ms: ms(now.saturating_duration_since(r.created)),
        }
    }

    /// Checks that `p` may answer `call` in the browser now; returns the id for the new leg.
    /// The shell then asks the call side for the WebRTC leg and calls
    /// [`finish_browser_answer`](Self::finish_browser_answer).
    pub fn prepare_browser_answer(
        &self,
        p: &Principal,
        call: &CallUri,
    ) -> Result<LegId, ControlError> {
        let rec = self.check_act(p, call)?;
        let Principal::Agent(a) = p else {
            return Err(ControlError::Forbidden(
                "only the agent the call is offered to can answer it".into(),
            ));
        };
        let st = self
            .center
            .agent(a)
            .ok_or_else(|| ControlError::NotFound(format!("no agent {a:?}")))?;
        if st.presence != Presence::Ringing
            || st.call.as_ref() != Some(call)
            || !rec.offers.contains_key(a)
        {
            return Err(ControlError::Conflict(format!(
                "{call} is not ringing at agent {a:?}"
            )));
        }
        if st.endpoint != Some(Endpoint::Browser) {
            return Err(ControlError::Conflict(format!(
                "agent {a:?} is logged in with a phone: answer on the phone"
            )));
        }
        Ok(LegId::new())
    }

    /// The agent's browser leg `leg` exists now: connect it.
    pub fn finish_browser_answer(
        &mut self,
        p: &Principal,
        call: &CallUri,
        leg: LegId,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.prepare_browser_answer(p, call)?;
        let Principal::Agent(a) = p else {
            return Err(ControlError::Forbidden("not an agent".into()));
        };
        let mut out = Vec::new();
        self.agent_answered(a, call, leg, now, &mut out)?;
        self.drain(now, &mut out);
        Ok(out)
    }

    /// The agent declines the offer.
    pub fn decline(
        &mut self,
        p: &Principal,
        call: &CallUri,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.check_act(p, call)?;
        let Principal::Agent(a) = p else {
            return Err(ControlError::Forbidden(
                "only the agent offered the call can decline it".into(),
            ));
        };
        let transfer_target = self
            .calls
            .get(call)
            .and_then(|r| r.target.as_ref())
            .is_some_and(|t| t.party == Party::Agent(a.clone()));
        let o = self.center.declined(a, call, now)?;
        let mut out = Vec::new();
        self.acd(o, now, &mut out);
        if transfer_target {
            self.pending.push_back((
                call.clone(),
                Input::TargetFailed(FailureReason::Rejected("declined".into())),
            ));
        }
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Hangs up: the holding agent ends the call; a consulted target leaves the consultation;
    /// the first agent during a transfer leaves it to complete on its own.
    pub fn hang_up(
        &mut self,
        p: &Principal,
        call: &CallUri,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        let rec = self.check_act(p, call)?.clone();
        let mut out = Vec::new();
        let me = match p {
            Principal::Agent(a) => Some(a.clone()),
            _ => None,
        };
        let is_target_agent = me.is_some()
            && rec.target.as_ref().and_then(|t| t.agent.clone()) == me
            && rec.agent != me;
        let transfer_active = self.transfers.get(call).is_some();
        let target_answered = rec.target.as_ref().is_some_and(|t| t.answered);
        if is_target_agent && transfer_active && !target_answered {
            // Ringing as a transfer target: hanging up means declining.
            return self.decline(p, call, now);
        }
        if is_target_agent && transfer_active {
            if let Some(leg) = rec.target.as_ref().and_then(|t| t.leg) {
                out.push(Effect::Call(CallCommand::HangUp {
                    call: call.clone(),
                    leg,
                    cause: "normal_clearing".into(),
                }));
                self.legs.remove(&leg);
            }
            self.forget_target_leg(call);
            self.release_target_agent(call, now, &mut out);
            self.pending.push_back((call.clone(), Input::TargetHungUp));
        } else if transfer_active && rec.agent.is_some() && (me.is_none() || rec.agent == me) {
            if let Some(leg) = rec.agent_leg {
                out.push(Effect::Call(CallCommand::HangUp {
                    call: call.clone(),
                    leg,
                    cause: "normal_clearing".into(),
                }));
            }
            self.agent_leg_gone(call, now, &mut out);
        } else if me.is_some() && rec.agent != me {
            // Offered but not answered: hanging up means declining.
            return self.decline(p, call, now);
        } else {
            self.hang_up_caller(call, "agent_hangup", now, &mut out);
        }
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Hangs up a call by its caller (the click-to-call DELETE).
    pub fn caller_hang_up(
        &mut self,
        call: &CallUri,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.record(call)?;
        let mut out = Vec::new();
        self.hang_up_caller(call, "caller_hangup", now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Holds or resumes the caller.
    pub fn hold(
        &mut self,
        p: &Principal,
        call: &CallUri,
        on: bool,
    ) -> Result<Vec<Effect>, ControlError> {
        self.holder(p, call)?;
        if self.transfers.get(call).is_some() {
            return Err(ControlError::Conflict(format!(
                "{call} is being transferred: the transfer controls the caller's audio"
            )));
        }
        let rec = self
            .calls
            .get_mut(call)
            .ok_or_else(|| ControlError::NotFound(format!("no call {call}")))?;
        if rec.held == on {
            return Ok(Vec::new());
        }
        rec.held = on;
        let aud = audience(rec);
        Ok(vec![
            Effect::Call(CallCommand::Hold {
                call: call.clone(),
                leg: rec.caller_leg,
                on,
            }),
            Effect::Publish(
                if on {
                    Event::CallHeld {
                        call_uri: call.clone(),
                    }
                } else {
                    Event::CallResumed {
                        call_uri: call.clone(),
                    }
                },
                aud,
            ),
        ])
    }

    /// Mutes or unmutes the agent toward the caller.
    pub fn mute(
        &mut self,
        p: &Principal,
        call: &CallUri,
        on: bool,
    ) -> Result<Vec<Effect>, ControlError> {
        let (_, leg) = self.holder(p, call)?;
        let rec = self
            .calls
            .get_mut(call)
            .ok_or_else(|| ControlError::NotFound(format!("no call {call}")))?;
        if rec.muted == on {
            return Ok(Vec::new());
        }
        rec.muted = on;
        Ok(vec![
            Effect::Call(CallCommand::Mute {
                call: call.clone(),
                leg,
                on,
            }),
            Effect::Publish(
                Event::CallMuted {
                    call_uri: call.clone(),
                    muted: on,
                },
                audience(rec),
            ),
        ])
    }

    /// Sends DTMF toward the caller (or the external party the call is with).
    pub fn dtmf(
        &mut self,
        p: &Principal,
        call: &CallUri,
        digits: &str,
    ) -> Result<Vec<Effect>, ControlError> {
        if digits.is_empty() || digits.len() > 32 || !digits.chars().all(|c| DIGITS.contains(c)) {
            return Err(ControlError::BadRequest(format!(
                "digits {digits:?}: 1-32 of 0-9 * # A-D"
            )));
        }
        self.holder(p, call)?;
        let rec = self.record(call)?;
        Ok(vec![Effect::Call(CallCommand::SendDtmf {
            call: call.clone(),
            leg: rec.caller_leg,
            digits: digits.to_ascii_uppercase(),
        })])
    }

    /// Whether `p` may transfer to `target`: agents and queues that exist, external targets
    /// only through a route (the toll-fraud guard).
    pub fn check_target(&self, p: &Principal, target: &Party) -> Result<(), ControlError> {
        match target {
            Party::Agent(a) => {
                if self.center.agent(a).is_none() {
                    return Err(ControlError::NotFound(format!("no agent {a:?}")));
                }
                if p == &Principal::Agent(a.clone()) {
                    return Err(ControlError::BadRequest(
                        "an agent cannot transfer to themself".into(),
                    ));
                }
            }
            Party::Queue(q) => {
                if self.center.queue(q).is_none() {
                    return Err(ControlError::NotFound(format!("no queue {q:?}")));
                }
            }
            Party::SipUri(_) | Party::TdmNumber(_) => {
                if !self.config.routes.iter().any(|r| r.permits(target)) {
                    tracing::warn!(
                        ?p,
                        ?target,
                        "transfer to an external target refused: no route permits it"
                    );
                    return Err(ControlError::Forbidden(format!(
                        "no transfer route permits {}",
                        match target {
                            Party::SipUri(u) => format!("SIP URI {u:?}"),
                            Party::TdmNumber(n) => format!("number {n:?}"),
                            _ => String::new(),
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    /// Transfer targets the principal may choose.
    pub fn targets(&self, p: &Principal) -> Vec<TargetOption> {
        let mut v = Vec::new();
        for a in self.center.agents() {
            if p == &Principal::Agent(a.config.id.clone()) {
                continue;
            }
            v.push(TargetOption {
                target: Some(Party::Agent(a.config.id.clone())),
                label: a.config.name.clone(),
                presence: Some(a.presence),
                route: None,
            });
        }
        for q in self.center.queues() {
            v.push(TargetOption {
                target: Some(Party::Queue(q.config.name.clone())),
                label: format!("Queue {}", q.config.name),
                presence: None,
                route: None,
            });
        }
        for r in &self.config.routes {
            v.push(TargetOption {
                target: None,
                label: if r.label.is_empty() {
                    r.pattern.clone()
                } else {
                    r.label.clone()
                },
                presence: None,
                route: Some((r.kind, r.pattern.clone())),
            });
        }
        v
    }

    /// Starts a transfer of `call` to `target`.
    pub fn transfer(
        &mut self,
        p: &Principal,
        call: &CallUri,
        target: Party,
        kind: TransferKind,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        let (agent, _) = self.holder(p, call)?;
        self.check_target(p, &target)?;
        if target == Party::Agent(agent.clone()) {
            return Err(ControlError::BadRequest(format!(
                "{call} is already with agent {agent:?}"
            )));
        }
        let fallback = self
            .record(call)?
            .queue
            .clone()
            .or_else(|| self.center.queues().next().map(|q| q.config.name.clone()))
            .unwrap_or_default();
        let cmds = self.transfers.request_from(
            call.clone(),
            kind,
            target.clone(),
            Some(Party::Agent(agent.clone())),
            &fallback,
            now,
        )?;
        let created = self.record(call)?.created;
        if let Some(rec) = self.calls.get_mut(call) {
            rec.held = false;
            rec.target = Some(TargetInfo {
                agent: match &target {
                    Party::Agent(a) => Some(a.clone()),
                    _ => None,
                },
                party: target.clone(),
                leg: None,
                answered: false,
                from: Some(agent.clone()),
            });
            rec.history.push(HistoryEntry {
                at_ms: ms(now.saturating_duration_since(created)),
                from: Some(agent),
                to: target,
                kind,
                outcome: "in_progress".into(),
            });
        }
        let mut out = Vec::new();
        self.run_transfer(call, cmds, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Attended: completes the transfer.
    pub fn complete_transfer(
        &mut self,
        p: &Principal,
        call: &CallUri,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.transfer_input(p, call, Input::Complete, now)
    }

    /// Cancels the transfer; the caller goes back to the agent.
    pub fn cancel_transfer(
        &mut self,
        p: &Principal,
        call: &CallUri,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.transfer_input(p, call, Input::Cancel, now)
    }

    fn transfer_input(
        &mut self,
        p: &Principal,
        call: &CallUri,
        input: Input,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.holder(p, call)?;
        let cmds = self.transfers.handle(call, input, now)?;
        let mut out = Vec::new();
        self.run_transfer(call, cmds, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    // ---- agents ----

    fn check_self(&self, p: &Principal, agent: &str) -> Result<(), ControlError> {
        match p {
            Principal::Admin => Ok(()),
            Principal::Agent(a) if a == agent => Ok(()),
            _ => Err(ControlError::Forbidden(format!(
                "only agent {agent:?} or an admin may change agent {agent:?}"
            ))),
        }
    }

    /// Logs an agent in.
    pub fn login(
        &mut self,
        p: &Principal,
        agent: &str,
        endpoint: Option<&str>,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.check_self(p, agent)?;
        let o = self.center.login(agent, endpoint, now)?;
        let mut out = Vec::new();
        self.acd(o, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Logs an agent out.
    pub fn logout(
        &mut self,
        p: &Principal,
        agent: &str,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.check_self(p, agent)?;
        let o = self.center.logout(agent, now)?;
        let mut out = Vec::new();
        self.acd(o, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Sets presence (available or away).
    pub fn set_presence(
        &mut self,
        p: &Principal,
        agent: &str,
        presence: Presence,
        reason: Option<String>,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        self.check_self(p, agent)?;
        let o = self.center.set_presence(agent, presence, reason, now)?;
        let mut out = Vec::new();
        self.acd(o, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Every agent (any principal may list them: the transfer list needs them).
    pub fn agents(&self, now: Instant) -> Vec<AgentView> {
        self.center
            .agents()
            .map(|a| AgentView {
                id: a.config.id.clone(),
                name: a.config.name.clone(),
                skills: a.config.skills.clone(),
                presence: a.presence,
                endpoint: a.endpoint.as_ref().map(endpoint_kind_name),
                endpoints: a.config.endpoints.clone(),
                call_uri: a.call.clone(),
                idle_ms: (a.presence == Presence::Available)
                    .then(|| a.idle_since.map(|s| ms(now.saturating_duration_since(s))))
                    .flatten(),
                away_reason: a.away_reason.clone(),
                wrap_up_left_ms: a
                    .wrap_up_until
                    .map(|u| ms(u.saturating_duration_since(now))),
            })
            .collect()
    }

    /// One agent.
    pub fn agent(&self, id: &str, now: Instant) -> Result<AgentView, ControlError> {
        self.agents(now)
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("no agent {id:?}")))
    }

    /// Every queue.
    pub fn queues(&self) -> Vec<QueueView> {
        self.center
            .queues()
            .map(|q| {
                let skilled = |a: &&super::center::AgentState| {
                    q.config
                        .skill
                        .as_ref()
                        .is_none_or(|s| a.config.skills.iter().any(|k| k == s))
                };
                QueueView {
                    config: q.config.clone(),
                    waiting: self.center.waiting_in(&q.config.name),
                    available_agents: self
                        .center
                        .agents()
                        .filter(skilled)
                        .filter(|a| a.presence == Presence::Available)
                        .count(),
                    staffed_agents: self
                        .center
                        .agents()
                        .filter(skilled)
                        .filter(|a| a.presence != Presence::Offline)
                        .count(),
                }
            })
            .collect()
    }

    fn admin(p: &Principal) -> Result<(), ControlError> {
        if p == &Principal::Admin {
            Ok(())
        } else {
            Err(ControlError::Forbidden(
                "managing agents and queues needs an admin token".into(),
            ))
        }
    }

    fn token_taken(&self, token: &str, except_agent: Option<&str>) -> bool {
        self.config.access.admin_tokens.iter().any(|t| t == token)
            || self
                .config
                .access
                .supervisor_tokens
                .iter()
                .any(|t| t == token)
            || self
                .center
                .agents()
                .any(|a| a.config.token == token && Some(a.config.id.as_str()) != except_agent)
    }

    /// Admin: adds an agent.
    pub fn add_agent(&mut self, p: &Principal, a: AgentConfig) -> Result<(), ControlError> {
        Self::admin(p)?;
        a.validate()
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        if self.token_taken(&a.token, None) {
            return Err(ControlError::Conflict("that token is in use".into()));
        }
        Ok(self.center.add_agent(a)?)
    }

    /// Admin: replaces an agent's configuration.
    pub fn update_agent(&mut self, p: &Principal, a: AgentConfig) -> Result<(), ControlError> {
        Self::admin(p)?;
        a.validate()
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        if self.token_taken(&a.token, Some(&a.id)) {
            return Err(ControlError::Conflict("that token is in use".into()));
        }
        Ok(self.center.update_agent(a)?)
    }

    /// Admin: removes an agent (not while ringing or on a call).
    pub fn remove_agent(
        &mut self,
        p: &Principal,
        id: &str,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        Self::admin(p)?;
        let o = self.center.remove_agent(id, now)?;
        let mut out = Vec::new();
        self.acd(o, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    fn check_queue_refs(&self, q: &QueueConfig) -> Result<(), ControlError> {
        q.validate()
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        match &q.overflow {
            Some(Party::Queue(o)) if o != &q.name && self.center.queue(o).is_none() => Err(
                ControlError::BadRequest(format!("overflow queue {o:?} does not exist")),
            ),
            Some(Party::Agent(a)) if self.center.agent(a).is_none() => Err(
                ControlError::BadRequest(format!("overflow agent {a:?} does not exist")),
            ),
            _ => Ok(()),
        }
    }

    /// Admin: adds a queue.
    pub fn add_queue(&mut self, p: &Principal, q: QueueConfig) -> Result<(), ControlError> {
        Self::admin(p)?;
        self.check_queue_refs(&q)?;
        Ok(self.center.add_queue(q)?)
    }

    /// Admin: replaces a queue's configuration.
    pub fn update_queue(
        &mut self,
        p: &Principal,
        q: QueueConfig,
        now: Instant,
    ) -> Result<Vec<Effect>, ControlError> {
        Self::admin(p)?;
        self.check_queue_refs(&q)?;
        let o = self.center.update_queue(q, now)?;
        let mut out = Vec::new();
        self.acd(o, now, &mut out);
        self.drain(now, &mut out);
        Ok(out)
    }

    /// Admin: removes an empty queue that nothing points at.
    pub fn remove_queue(&mut self, p: &Principal, name: &str) -> Result<(), ControlError> {
        Self::admin(p)?;
        let target = Party::Queue(name.to_string());
        if self
            .center
            .queues()
            .any(|q| q.config.overflow.as_ref() == Some(&target))
            || self.config.click_to_call.iter().any(|d| d.target == target)
        {
            return Err(ControlError::Conflict(format!(
                "queue {name:?} is an overflow or click-to-call target"
            )));
        }
        Ok(self.center.remove_queue(name)?)
    }

    /// A click-to-call destination by id.
    pub fn click_to_call_target(&self, id: &str) -> Result<Party, ControlError> {
        self.config
            .click_to_call
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.target.clone())
            .ok_or_else(|| ControlError::NotFound(format!("no click-to-call destination {id:?}")))
    }

    // ---- timers ----

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.center.poll_timeout(), self.transfers.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        let o = self.center.handle_timeout(now);
        self.acd(o, now, &mut out);
        for (call, cmds) in self.transfers.handle_timeout(now) {
            self.run_transfer(&call, cmds, now, &mut out);
        }
        self.drain(now, &mut out);
        out
    }

    // ---- internals ----

    fn publish(&self, call: &CallUri, ev: Event, out: &mut Vec<Effect>) {
        let aud = self
            .calls
            .get(call)
            .map_or(Audience::Agents(Vec::new()), audience);
        out.push(Effect::Publish(ev, aud));
    }

    fn agent_answered(
        &mut self,
        agent: &str,
        call: &CallUri,
        leg: LegId,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Result<(), ControlError> {
        let (purpose, o) = self.center.answered(agent, call, now)?;
        self.legs.insert(leg, call.clone());
        let Some(rec) = self.calls.get_mut(call) else {
            return Err(ControlError::NotFound(format!("no call {call}")));
        };
        rec.offers.remove(agent);
        match purpose {
            Purpose::Caller => {
                rec.agent = Some(agent.to_string());
                rec.agent_leg = Some(leg);
                let caller_leg = rec.caller_leg;
                out.push(Effect::Call(CallCommand::Bridge {
                    call: call.clone(),
                    a: caller_leg,
                    b: leg,
                }));
                self.acd(o, now, out);
                self.publish(
                    call,
                    Event::CallAnswered {
                        call_uri: call.clone(),
                        agent: agent.to_string(),
                    },
                    out,
                );
            }
            Purpose::TransferTarget => {
                if let Some(t) = rec.target.as_mut() {
                    t.agent = Some(agent.to_string());
                    t.leg = Some(leg);
                    t.answered = true;
                }
                self.acd(o, now, out);
                self.publish(
                    call,
                    Event::CallAnswered {
                        call_uri: call.clone(),
                        agent: agent.to_string(),
                    },
                    out,
                );
                self.pending
                    .push_back((call.clone(), Input::TargetAnswered));
            }
        }
        Ok(())
    }

    /// Handles what the ACD asked for.
    fn acd(&mut self, outputs: Vec<AcdOutput>, now: Instant, out: &mut Vec<Effect>) {
        for o in outputs {
            match o {
                AcdOutput::Presence { agent, presence } => out.push(Effect::Publish(
                    Event::AgentPresence { agent, presence },
                    Audience::Everyone,
                )),
                AcdOutput::Offer {
                    call,
                    agent,
                    endpoint,
                    queue,
                    purpose,
                } => {
                    let Some(rec) = self.calls.get_mut(&call) else {
                        // The ACD holds a call the core does not know: drop the offer.
                        let o = self.center.call_gone(&call, now);
                        self.acd(o, now, out);
                        continue;
                    };
                    rec.audience.insert(agent.clone());
                    let leg = (endpoint != Endpoint::Browser).then(LegId::new);
                    rec.offers.insert(agent.clone(), leg);
                    let caller = rec.caller.clone();
                    let history = rec.history.clone();
                    let is_direct_target = purpose == Purpose::TransferTarget
                        && rec
                            .target
                            .as_ref()
                            .is_some_and(|t| t.party == Party::Agent(agent.clone()));
                    if let Some(leg) = leg {
                        self.legs.insert(leg, call.clone());
                        out.push(Effect::Call(CallCommand::Originate {
                            call: call.clone(),
                            leg,
                            to: endpoint,
                            caller_id: caller.clone(),
                        }));
                    } else if is_direct_target {
                        // The page pops: the target is alerting.
                        self.pending
                            .push_back((call.clone(), Input::TargetAlerting));
                    }
                    self.publish(
                        &call,
                        Event::CallOffered {
                            call_uri: call.clone(),
                            agent,
                            caller,
                            queue,
                            purpose,
                            transfer_history: history,
                        },
                        out,
                    );
                }
                AcdOutput::Withdraw {
                    call,
                    agent,
                    reason,
                } => {
                    let leg = self
                        .calls
                        .get_mut(&call)
                        .and_then(|r| r.offers.remove(&agent))
                        .flatten();
                    if let Some(leg) = leg {
                        self.legs.remove(&leg);
                        out.push(Effect::Call(CallCommand::HangUp {
                            call: call.clone(),
                            leg,
                            cause: "offer_withdrawn".into(),
                        }));
                    }
                    let direct_target = self.transfers.get(&call).is_some()
                        && self
                            .calls
                            .get(&call)
                            .and_then(|r| r.target.as_ref())
                            .is_some_and(|t| t.party == Party::Agent(agent.clone()));
                    if direct_target && matches!(reason, super::center::WithdrawReason::LoggedOut) {
                        self.pending.push_back((
                            call.clone(),
                            Input::TargetFailed(FailureReason::Rejected("agent logged out".into())),
                        ));
                    }
                    self.publish(
                        &call,
                        Event::CallOfferWithdrawn {
                            call_uri: call.clone(),
                            agent,
                            reason,
                        },
                        out,
                    );
                }
                AcdOutput::Queued {
                    call,
                    queue,
                    position,
                    expected_wait,
                    comfort,
                    purpose,
                } => {
                    if purpose != Purpose::Caller {
                        continue;
                    }
                    let Some(rec) = self.calls.get_mut(&call) else {
                        continue;
                    };
                    rec.queue = Some(queue.clone());
                    out.push(Effect::Call(CallCommand::Play {
                        call: call.clone(),
                        leg: rec.caller_leg,
                        audio: Audio::Comfort(comfort),
                    }));
                    self.publish(
                        &call,
                        Event::CallQueued {
                            call_uri: call.clone(),
                            queue,
                            position,
                            expected_wait_s: expected_wait.as_secs(),
                        },
                        out,
                    );
                }
                AcdOutput::Overflow { call, queue, to } => {
                    tracing::info!(uri = %call, %queue, ?to, "queue overflow");
                    match to {
                        Party::Queue(q) => {
                            match self.center.enqueue(&call, &q, Purpose::Caller, true, now) {
                                Ok(o) => self.acd(o, now, out),
                                Err(e) => {
                                    tracing::warn!(uri = %call, "overflow to queue {q:?} failed: {e}");
                                    self.requeue_without_overflow(&call, &queue, now, out);
                                }
                            }
                        }
                        other => {
                            let created = self.calls.get(&call).map(|r| r.created);
                            match self.transfers.request_from(
                                call.clone(),
                                TransferKind::Blind,
                                other.clone(),
                                None,
                                &queue,
                                now,
                            ) {
                                Ok(cmds) => {
                                    if let Some(rec) = self.calls.get_mut(&call) {
                                        rec.target = Some(TargetInfo {
                                            agent: match &other {
                                                Party::Agent(a) => Some(a.clone()),
                                                _ => None,
                                            },
                                            party: other.clone(),
                                            leg: None,
                                            answered: false,
                                            from: None,
                                        });
                                        rec.history.push(HistoryEntry {
                                            at_ms: created.map_or(0, |c| {
                                                ms(now.saturating_duration_since(c))
                                            }),
                                            from: None,
                                            to: other,
                                            kind: TransferKind::Blind,
                                            outcome: "in_progress".into(),
                                        });
                                    }
                                    self.run_transfer(&call, cmds, now, out);
                                }
                                Err(e) => {
                                    tracing::warn!(uri = %call, "overflow failed: {e}");
                                    self.requeue_without_overflow(&call, &queue, now, out);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn requeue_without_overflow(
        &mut self,
        call: &CallUri,
        queue: &str,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if let Ok(o) = self
            .center
            .enqueue(call, queue, Purpose::Caller, false, now)
        {
            self.acd(o, now, out);
        }
    }

    /// Carries out the transfer executor's commands.
    fn run_transfer(
        &mut self,
        call: &CallUri,
        cmds: Vec<Command>,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        for c in cmds {
            let Some(rec) = self.calls.get(call).cloned() else {
                return;
            };
            match c {
                Command::DialTarget(party) => self.dial_target(call, &rec, party, now, out),
                Command::PlayToCaller(tone) => out.push(Effect::Call(CallCommand::Play {
                    call: call.clone(),
                    leg: rec.caller_leg,
                    audio: match tone {
                        Tone::Ringback => Audio::Ringback,
                        Tone::Hold => Audio::Hold,
                    },
                })),
                Command::BridgeFirstAgentToTarget => {
                    if let (Some(a), Some(b)) =
                        (rec.agent_leg, rec.target.as_ref().and_then(|t| t.leg))
                    {
                        out.push(Effect::Call(CallCommand::Bridge {
                            call: call.clone(),
                            a,
                            b,
                        }));
                    }
                }
                Command::BridgeCallerToTarget => {
                    let t = rec.target.clone();
                    match t.as_ref().and_then(|t| t.leg) {
                        Some(b) => out.push(Effect::Call(CallCommand::Bridge {
                            call: call.clone(),
                            a: rec.caller_leg,
                            b,
                        })),
                        None => {
                            // A blind transfer to a queue: the caller waits there.
                            if let Some(Party::Queue(q)) = t.map(|t| t.party) {
                                match self.center.enqueue(call, &q, Purpose::Caller, true, now) {
                                    Ok(o) => self.acd(o, now, out),
                                    Err(e) => {
                                        tracing::warn!(uri = %call, "requeue into {q:?} failed: {e}")
                                    }
                                }
                            }
                        }
                    }
                }
                Command::BridgeCallerToFirstAgent => {
                    if let Some(b) = rec.agent_leg {
                        out.push(Effect::Call(CallCommand::Bridge {
                            call: call.clone(),
                            a: rec.caller_leg,
                            b,
                        }));
                    }
                }
                Command::RequeueCaller(q) => {
                    let o = self.center.enqueue(call, &q, Purpose::Caller, false, now);
                    match o {
                        Ok(o) => self.acd(o, now, out),
                        Err(e) => {
                            tracing::error!(uri = %call, "cannot requeue the caller into {q:?}: {e}; ending the call");
                            self.hang_up_caller(call, "unroutable", now, out);
                            return;
                        }
                    }
                }
                Command::HangUpTarget => {
                    let answered = rec.target.as_ref().is_some_and(|t| t.answered);
                    if let Some(leg) = rec.target.as_ref().and_then(|t| t.leg) {
                        self.legs.remove(&leg);
                        out.push(Effect::Call(CallCommand::HangUp {
                            call: call.clone(),
                            leg,
                            cause: "normal_clearing".into(),
                        }));
                    }
                    self.forget_target_leg(call);
                    if answered {
                        self.release_target_agent(call, now, out);
                    } else {
                        // Withdraw offers still ringing for the transfer.
                        let o = self.center.cancel_hunt(call, now);
                        self.acd(o, now, out);
                    }
                }
                Command::ReleaseFirstAgent => {
                    if let Some(leg) = rec.agent_leg {
                        self.legs.remove(&leg);
                        out.push(Effect::Call(CallCommand::HangUp {
                            call: call.clone(),
                            leg,
                            cause: "normal_clearing".into(),
                        }));
                    }
                    if let Some(a) = &rec.agent {
                        let o = self.center.release(a, call, rec.queue.as_deref(), now);
                        self.acd(o, now, out);
                    }
                    if let Some(r) = self.calls.get_mut(call) {
                        r.agent = None;
                        r.agent_leg = None;
                        r.muted = false;
                    }
                }
                Command::Publish(ev) => {
                    let outcome = match &ev {
                        Event::TransferConnected { .. } => Some("connected".to_string()),
                        Event::TransferFailed { reason, .. } => {
                            Some(format!("failed: {}", fmt_reason(reason)))
                        }
                        Event::TransferCancelled { by, .. } => Some(format!("cancelled by {by}")),
                        Event::TransferTimedOut { .. } => Some("timed_out".to_string()),
                        _ => None,
                    };
                    let connected = matches!(ev, Event::TransferConnected { .. });
                    self.publish(call, ev, out);
                    if let Some(outcome) = outcome {
                        self.finish_transfer(call, connected, outcome, now, out);
                    }
                }
            }
        }
    }

    fn finish_transfer(
        &mut self,
        call: &CallUri,
        connected: bool,
        outcome: String,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if !connected {
            // However it failed, nobody may still be ringing for it.
            let o = self.center.cancel_hunt(call, now);
            self.acd(o, now, out);
        }
        let Some(rec) = self.calls.get_mut(call) else {
            return;
        };
        if let Some(h) = rec.history.last_mut() {
            h.outcome = outcome;
        }
        let Some(t) = rec.target.take() else { return };
        if connected {
            match (t.agent, t.leg) {
                (Some(a), Some(l)) => {
                    rec.agent = Some(a);
                    rec.agent_leg = Some(l);
                }
                (None, Some(l)) => rec.external = Some((t.party, l)),
                _ => {} // a queue: the caller waits there
            }
        }
    }

    fn dial_target(
        &mut self,
        call: &CallUri,
        rec: &CallRecord,
        party: Party,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let kind = self.transfers.get(call).map(|t| t.kind());
        match party {
            Party::Agent(a) => {
                match self
                    .center
                    .offer_direct(call, &a, Purpose::TransferTarget, now)
                {
                    Ok(o) => self.acd(o, now, out),
                    Err(AcdError::WrongPresence {
                        presence: Presence::Busy | Presence::Ringing | Presence::WrapUp,
                        ..
                    }) => {
                        self.pending
                            .push_back((call.clone(), Input::TargetFailed(FailureReason::Busy)));
                    }
                    Err(e) => self.pending.push_back((
                        call.clone(),
                        Input::TargetFailed(FailureReason::Rejected(e.to_string())),
                    )),
                }
            }
            Party::Queue(q) => {
                if kind == Some(TransferKind::Blind) {
                    self.pending
                        .push_back((call.clone(), Input::TargetAnswered));
                } else {
                    match self
                        .center
                        .enqueue(call, &q, Purpose::TransferTarget, false, now)
                    {
                        Ok(o) => {
                            self.pending
                                .push_back((call.clone(), Input::TargetAlerting));
                            self.acd(o, now, out);
                        }
                        Err(e) => self.pending.push_back((
                            call.clone(),
                            Input::TargetFailed(FailureReason::Rejected(e.to_string())),
                        )),
                    }
                }
            }
            Party::SipUri(uri) => self.originate_target(call, rec, Endpoint::Sip { uri }, out),
            Party::TdmNumber(number) => self.originate_target(
                call,
                rec,
                Endpoint::Tdm {
                    number,
                    group: None,
                },
                out,
            ),
        }
    }

    fn originate_target(
        &mut self,
        call: &CallUri,
        rec: &CallRecord,
        to: Endpoint,
        out: &mut Vec<Effect>,
    ) {
        let leg = LegId::new();
        self.legs.insert(leg, call.clone());
        if let Some(t) = self.calls.get_mut(call).and_then(|r| r.target.as_mut()) {
            t.leg = Some(leg);
        }
        out.push(Effect::Call(CallCommand::Originate {
            call: call.clone(),
            leg,
            to,
            caller_id: rec.caller.clone(),
        }));
    }

    fn forget_target_leg(&mut self, call: &CallUri) {
        if let Some(t) = self.calls.get_mut(call).and_then(|r| r.target.as_mut()) {
            if let Some(l) = t.leg.take() {
                self.legs.remove(&l);
            }
        }
    }

    /// The agent who answered as transfer target leaves (wrap-up).
    fn release_target_agent(&mut self, call: &CallUri, now: Instant, out: &mut Vec<Effect>) {
        let Some(rec) = self.calls.get_mut(call) else {
            return;
        };
        let queue = rec.queue.clone();
        let Some(t) = rec.target.as_mut() else { return };
        if !t.answered {
            return;
        }
        t.answered = false;
        if let Some(a) = t.agent.clone() {
            if rec.agent.as_ref() != Some(&a) {
                if let Some(t) = rec.target.as_mut() {
                    if matches!(t.party, Party::Queue(_)) {
                        t.agent = None;
                    }
                }
                let o = self.center.release(&a, call, queue.as_deref(), now);
                self.acd(o, now, out);
            }
        }
    }

    /// The holding agent's leg is gone.
    fn agent_leg_gone(&mut self, call: &CallUri, now: Instant, out: &mut Vec<Effect>) {
        let Some(rec) = self.calls.get(call).cloned() else {
            return;
        };
        if let Some(l) = rec.agent_leg {
            self.legs.remove(&l);
        }
        if let Some(a) = &rec.agent {
            let o = self.center.release(a, call, rec.queue.as_deref(), now);
            self.acd(o, now, out);
        }
        if let Some(r) = self.calls.get_mut(call) {
            r.agent = None;
            r.agent_leg = None;
        }
        if self.transfers.get(call).is_some() {
            self.pending
                .push_back((call.clone(), Input::FirstAgentHungUp));
        } else {
            self.hang_up_caller(call, "agent_hangup", now, out);
        }
    }

    /// Ends the call from our side: releases the caller's leg and everything else.
    fn hang_up_caller(&mut self, call: &CallUri, cause: &str, now: Instant, out: &mut Vec<Effect>) {
        let Some(rec) = self.calls.get(call) else {
            return;
        };
        out.push(Effect::Call(CallCommand::HangUp {
            call: call.clone(),
            leg: rec.caller_leg,
            cause: cause.into(),
        }));
        self.caller_gone(call, cause, now, out);
    }

    /// The caller is gone: the transfer (if any) learns it, then the call ends.
    fn caller_gone(&mut self, call: &CallUri, cause: &str, now: Instant, out: &mut Vec<Effect>) {
        if self.transfers.get(call).is_some() {
            if let Ok(cmds) = self.transfers.handle(call, Input::CallerHungUp, now) {
                self.run_transfer(call, cmds, now, out);
            }
        }
        self.end_call(call, cause, now, out);
    }

    /// Releases everything the call holds and forgets it.
    fn end_call(&mut self, call: &CallUri, cause: &str, now: Instant, out: &mut Vec<Effect>) {
        let Some(rec) = self.calls.get(call).cloned() else {
            return;
        };
        let mut legs: Vec<LegId> = Vec::new();
        legs.extend(rec.agent_leg);
        legs.extend(rec.target.as_ref().and_then(|t| t.leg));
        legs.extend(rec.offers.values().flatten().copied());
        legs.extend(rec.external.as_ref().map(|e| e.1));
        for leg in legs {
            out.push(Effect::Call(CallCommand::HangUp {
                call: call.clone(),
                leg,
                cause: cause.into(),
            }));
        }
        let o = self.center.call_gone(call, now);
        self.acd(o, now, out);
        let mut agents: Vec<String> = rec.agent.iter().cloned().collect();
        agents.extend(rec.target.as_ref().and_then(|t| t.agent.clone()));
        for a in agents {
            let o = self.center.release(&a, call, rec.queue.as_deref(), now);
            self.acd(o, now, out);
        }
        self.publish(
            call,
            Event::CallEnded {
                call_uri: call.clone(),
                cause: cause.into(),
            },
            out,
        );
        self.calls.remove(call);
        self.legs.retain(|_, c| c != call);
        self.pending.retain(|(c, _)| c != call);
    }

    /// Feeds queued executor inputs (produced while handling something else) until none is
    /// left.
    fn drain(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let mut guard = 0;
        while let Some((call, input)) = self.pending.pop_front() {
            guard += 1;
            if guard > 1000 {
                tracing::error!("transfer input loop did not settle; dropping the rest");
                self.pending.clear();
                break;
            }
            match self.transfers.handle(&call, input.clone(), now) {
                Ok(cmds) => self.run_transfer(&call, cmds, now, out),
                Err(TransferError::NotFound(_)) => {
                    // The transfer ended already; a late answer was handled in run_transfer's
                    // HangUpTarget.
                }
                Err(e) => tracing::warn!(uri = %call, ?input, "transfer input refused: {e}"),
            }
        }
    }
}

fn involved(rec: &CallRecord, agent: &str) -> bool {
    rec.agent.as_deref() == Some(agent)
        || rec.offers.contains_key(agent)
        || rec.target.as_ref().and_then(|t| t.agent.as_deref()) == Some(agent)
}

fn audience(rec: &CallRecord) -> Audience {
    Audience::Agents(rec.audience.iter().cloned().collect())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn fmt_reason(r: &FailureReason) -> String {
    match r {
        FailureReason::Busy => "busy".into(),
        FailureReason::NoAnswer => "no_answer".into(),
        FailureReason::Rejected(s) => format!("rejected ({s})"),
        FailureReason::TargetHungUp => "target_hung_up".into(),
        FailureReason::Unreachable(s) => format!("unreachable ({s})"),
    }
}
