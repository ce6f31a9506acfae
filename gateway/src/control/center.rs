//! The contact center on virtual time: agents with presence, queues with ACD.
//!
//! [`ContactCenter`] is sans-IO. It is told what happened (a call joins a queue, an agent logs
//! in, answers, lets an offer ring out, finishes a call) with the current `Instant`, and answers
//! with [`AcdOutput`]s: offer this call to that agent, withdraw an offer, the call overflowed,
//! an agent's presence changed. [`ContactCenter::poll_timeout`] says when to call
//! [`ContactCenter::handle_timeout`] (ring timeouts, wrap-up ends, maximum waits).
//!
//! The distribution rule is the usual one: the call that has waited longest goes to the
//! available agent with the queue's skill who has been idle longest. An offer that rings out
//! goes to the next agent (the one who let it ring is set away when the queue says so, and is
//! never offered the same call twice in a row); a call that waits past the queue's maximum goes
//! to its overflow route.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{AgentConfig, Comfort, Endpoint, QueueConfig};
use super::transfer::Party;
use super::uri::CallUri;

/// An agent's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Not logged in.
    Offline,
    /// Logged in, waiting for a call.
    Available,
    /// A call is being offered.
    Ringing,
    /// On a call.
    Busy,
    /// After a call, for the queue's wrap-up time.
    WrapUp,
    /// Logged in but not taking calls.
    Away,
}

/// Why an offer was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// It rang out.
    NoAnswer,
    /// The agent declined it.
    Declined,
    /// The agent logged out.
    LoggedOut,
    /// The call went away (caller hung up, transfer cancelled or failed).
    CallGone,
    /// The agent's endpoint could not be reached (a phone that is not registered).
    Unreachable,
}

/// Whether a queued entry is a caller waiting for an agent, or an attended transfer hunting for
/// an agent to consult.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A caller waits.
    Caller,
    /// A transfer looks for a target agent in this queue (the caller is with the first agent
    /// or on hold).
    TransferTarget,
}

/// What the contact center asks the control plane to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcdOutput {
    /// Offer `call` to `agent` at `endpoint` (their page pops; a phone is called).
    Offer {
        /// The call.
        call: CallUri,
        /// The agent.
        agent: String,
        /// Where the agent takes calls.
        endpoint: Endpoint,
        /// The queue the offer comes from (None for direct offers).
        queue: Option<String>,
        /// What answering it means.
        purpose: Purpose,
    },
    /// An offer is over without an answer: stop ringing the agent.
    Withdraw {
        /// The call.
        call: CallUri,
        /// The agent.
        agent: String,
        /// Why.
        reason: WithdrawReason,
    },
    /// The call joined a queue (the `call.queued` event, and the comfort audio to play).
    Queued {
        /// The call.
        call: CallUri,
        /// The queue.
        queue: String,
        /// 1-based position.
        position: usize,
        /// Estimated wait.
        expected_wait: Duration,
        /// What to play.
        comfort: Comfort,
        /// Caller or transfer.
        purpose: Purpose,
    },
    /// The call waited past the queue's maximum and leaves for the overflow route.
    Overflow {
        /// The call.
        call: CallUri,
        /// The queue it leaves.
        queue: String,
        /// Where it goes.
        to: Party,
    },
    /// An agent's presence changed.
    Presence {
        /// The agent.
        agent: String,
        /// The new presence.
        presence: Presence,
    },
}

/// A contact-center request that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcdError {
    /// No such agent (404).
    #[error("no agent {0:?}")]
    UnknownAgent(String),
    /// No such queue (404).
    #[error("no queue {0:?}")]
    UnknownQueue(String),
    /// The agent exists already (409).
    #[error("agent {0:?} exists already")]
    AgentExists(String),
    /// The queue exists already (409).
    #[error("queue {0:?} exists already")]
    QueueExists(String),
    /// The agent's state does not allow this (409), with what to do.
    #[error("agent {agent:?} is {presence:?}: {hint}")]
    WrongPresence {
        /// The agent.
        agent: String,
        /// Its presence.
        presence: Presence,
        /// What to do instead.
        hint: &'static str,
    },
    /// The agent is not being offered this call (409).
    #[error("{call} is not being offered to agent {agent:?}")]
    NotOffered {
        /// The call.
        call: CallUri,
        /// The agent.
        agent: String,
    },
    /// The queue still has callers (409).
    #[error("queue {0:?} still has waiting callers")]
    QueueNotEmpty(String),
    /// The agent has no such endpoint (400).
    #[error("agent {0:?} has no endpoint of that kind")]
    NoSuchEndpoint(String),
    /// The call is already in a queue (409).
    #[error("{0} is already queued")]
    AlreadyQueued(CallUri),
}

/// An agent and its live state.
#[derive(Debug, Clone)]
pub struct AgentState {
    /// The configuration.
    pub config: AgentConfig,
    /// Presence.
    pub presence: Presence,
    /// The endpoint logged in with.
    pub endpoint: Option<Endpoint>,
    /// When the agent last became available (the idle ordering).
    pub idle_since: Option<Instant>,
    /// The call offered to or held by the agent.
    pub call: Option<CallUri>,
    /// A queue offer's ring deadline.
    pub ring_deadline: Option<Instant>,
    /// End of wrap-up.
    pub wrap_up_until: Option<Instant>,
    /// Why away.
    pub away_reason: Option<String>,
    /// What a direct offer is for.
    direct_purpose: Option<Purpose>,
}

#[derive(Debug, Clone)]
struct Waiting {
    call: CallUri,
    queue: String,
    since: Instant,
    overflow_at: Option<Instant>,
    purpose: Purpose,
    offered_to: Option<String>,
    /// Agents who let this call ring out or declined it: not offered it again while others
    /// can take it.
    skipped: HashSet<String>,
}

/// A queue and its statistics.
#[derive(Debug, Clone)]
pub struct QueueState {
    /// The configuration.
    pub config: QueueConfig,
    /// Smoothed wait of answered calls.
    avg_wait: Option<Duration>,
}

/// The contact center.
#[derive(Debug)]
pub struct ContactCenter {
    agents: BTreeMap<String, AgentState>,
    queues: BTreeMap<String, QueueState>,
    waiting: Vec<Waiting>,
    default_wrap_up: Duration,
}

impl ContactCenter {
    /// A contact center with these agents (all offline) and queues.
    pub fn new(
        agents: impl IntoIterator<Item = AgentConfig>,
        queues: impl IntoIterator<Item = QueueConfig>,
        default_wrap_up: Duration,
    ) -> Self {
        let mut c = ContactCenter {
            agents: BTreeMap::new(),
            queues: BTreeMap::new(),
            waiting: Vec::new(),
            default_wrap_up,
        };
        for a in agents {
            c.agents.insert(a.id.clone(), AgentState::offline(a));
        }
        for q in queues {
            c.queues.insert(
                q.name.clone(),
                QueueState {
                    config: q,
                    avg_wait: None,
                },
            );
        }
        c
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Option<&AgentState> {
        self.agents.get(id)
    }

    /// Every agent, by id.
    pub fn agents(&self) -> impl Iterator<Item = &AgentState> {
        self.agents.values()
    }

    /// One queue.
    pub fn queue(&self, name: &str) -> Option<&QueueState> {
        self.queues.get(name)
    }

    /// Every queue, by name.
    pub fn queues(&self) -> impl Iterator<Item = &QueueState> {
        self.queues.values()
    }

    /// Calls waiting in `queue`, oldest first (callers and transfer hunts).
    pub fn waiting_in(&self, queue: &str) -> Vec<CallUri> {
        let mut w: Vec<&Waiting> = self.waiting.iter().filter(|w| w.queue == queue).collect();
        w.sort_by_key(|w| w.since);
        w.into_iter().map(|w| w.call.clone()).collect()
    }

    /// Where `call` waits: (queue, 1-based position, estimated wait).
    pub fn position(&self, call: &CallUri) -> Option<(String, usize, Duration)> {
        let w = self.waiting.iter().find(|w| &w.call == call)?;
        let pos = self
            .waiting
            .iter()
            .filter(|o| o.queue == w.queue && o.since <= w.since)
            .count();
        Some((w.queue.clone(), pos, self.expected_wait(&w.queue, pos)))
    }

    /// True if `call` waits in a queue (or is being offered from one).
    pub fn is_waiting(&self, call: &CallUri) -> bool {
        self.waiting.iter().any(|w| &w.call == call)
    }

    fn expected_wait(&self, queue: &str, position: usize) -> Duration {
        let Some(q) = self.queues.get(queue) else {
            return Duration::ZERO;
        };
        let per_call = q
            .avg_wait
            .unwrap_or(Duration::from_millis(q.config.ring_timeout_ms));
        let staffed = self
            .agents
            .values()
            .filter(|a| a.presence != Presence::Offline && has_skill(a, &q.config))
            .count()
            .max(1);
        per_call.saturating_mul(u32::try_from(position).unwrap_or(u32::MAX))
            / u32::try_from(staffed).unwrap_or(u32::MAX)
    }

    // ---- agents ----

    /// Logs an agent in (available) with the endpoint of `endpoint_kind` (`browser`, `sip`,
    /// `phone`, `tdm`), or its first endpoint.
    pub fn login(
        &mut self,
        agent: &str,
        endpoint_kind: Option<&str>,
        now: Instant,
    ) -> Result<Vec<AcdOutput>, AcdError> {
        let a = self
            .agents
            .get_mut(agent)
            .ok_or_else(|| AcdError::UnknownAgent(agent.into()))?;
        let endpoint = match endpoint_kind {
            None => a.config.endpoints.first().cloned(),
            Some(k) => a
                .config
                .endpoints
                .iter()
                .find(|e| endpoint_kind_name(e) == k)
                .cloned(),
        }
        .ok_or_else(|| AcdError::NoSuchEndpoint(agent.into()))?;
        if matches!(a.presence, Presence::Ringing | Presence::Busy) {
            return Err(AcdError::WrongPresence {
                agent: agent.into(),
                presence: a.presence,
                hint: "finish the current call first",
            });
        }
        a.endpoint = Some(endpoint);
        let mut out = Vec::new();
        if a.presence == Presence::Offline {
            set_presence(a, Presence::Available, now, &mut out);
        }
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// Logs an agent out. A call ringing at the agent goes to the next agent; an agent on a
    /// call must finish or transfer it first.
    pub fn logout(&mut self, agent: &str, now: Instant) -> Result<Vec<AcdOutput>, AcdError> {
        let a = self
            .agents
            .get_mut(agent)
            .ok_or_else(|| AcdError::UnknownAgent(agent.into()))?;
        if a.presence == Presence::Busy {
            return Err(AcdError::WrongPresence {
                agent: agent.into(),
                presence: a.presence,
                hint: "hang up or transfer the call, then log out",
            });
        }
        let mut out = Vec::new();
        if a.presence == Presence::Ringing {
            self.withdraw_from(agent, WithdrawReason::LoggedOut, false, now, &mut out);
        }
        if let Some(a) = self.agents.get_mut(agent) {
            a.endpoint = None;
            a.wrap_up_until = None;
            a.away_reason = None;
            set_presence(a, Presence::Offline, now, &mut out);
        }
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// Sets an agent available (also ends wrap-up early) or away.
    pub fn set_presence(
        &mut self,
        agent: &str,
        presence: Presence,
        reason: Option<String>,
        now: Instant,
    ) -> Result<Vec<AcdOutput>, AcdError> {
        let a = self
            .agents
            .get_mut(agent)
            .ok_or_else(|| AcdError::UnknownAgent(agent.into()))?;
        let hint = match (a.presence, presence) {
            (Presence::Offline, _) => Some("log in first"),
            (Presence::Ringing | Presence::Busy, _) => {
                Some("presence changes when the call is answered or over")
            }
            (_, Presence::Available | Presence::Away) => None,
            _ => Some("only available and away can be set"),
        };
        if let Some(hint) = hint {
            return Err(AcdError::WrongPresence {
                agent: agent.into(),
                presence: a.presence,
                hint,
            });
        }
        let mut out = Vec::new();
        a.wrap_up_until = None;
        a.away_reason = if presence == Presence::Away {
            reason
        } else {
            None
        };
        if a.presence != presence {
            set_presence(a, presence, now, &mut out);
        }
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// Offers `call` to `agent` directly (a call or a transfer to that agent). Whoever asked
    /// owns the ring timeout. Fails unless the agent is available.
    pub fn offer_direct(
        &mut self,
        call: &CallUri,
        agent: &str,
        purpose: Purpose,
        now: Instant,
    ) -> Result<Vec<AcdOutput>, AcdError> {
        let a = self
            .agents
            .get_mut(agent)
            .ok_or_else(|| AcdError::UnknownAgent(agent.into()))?;
        if a.presence != Presence::Available {
            return Err(AcdError::WrongPresence {
                agent: agent.into(),
                presence: a.presence,
                hint: "the agent cannot take a call now",
            });
        }
        let endpoint = a.endpoint.clone().ok_or_else(|| AcdError::WrongPresence {
            agent: agent.into(),
            presence: Presence::Offline,
            hint: "log in first",
        })?;
        let mut out = Vec::new();
        a.call = Some(call.clone());
        a.ring_deadline = None;
        a.direct_purpose = Some(purpose);
        set_presence(a, Presence::Ringing, now, &mut out);
        out.push(AcdOutput::Offer {
            call: call.clone(),
            agent: agent.into(),
            endpoint,
            queue: None,
            purpose,
        });
        Ok(out)
    }

    /// The agent answered the call offered to them. Returns the purpose of the offer (a caller
    /// from a queue, or a transfer target) with the outputs.
    pub fn answered(
        &mut self,
        agent: &str,
        call: &CallUri,
        now: Instant,
    ) -> Result<(Purpose, Vec<AcdOutput>), AcdError> {
        let a = self
            .agents
            .get_mut(agent)
            .ok_or_else(|| AcdError::UnknownAgent(agent.into()))?;
        if a.presence != Presence::Ringing || a.call.as_ref() != Some(call) {
            return Err(AcdError::NotOffered {
                call: call.clone(),
                agent: agent.into(),
            });
        }
        let mut out = Vec::new();
        a.ring_deadline = None;
        set_presence(a, Presence::Busy, now, &mut out);
        let mut purpose = a.direct_purpose.take().unwrap_or(Purpose::TransferTarget);
        if let Some(i) = self
            .waiting
            .iter()
            .position(|w| &w.call == call && w.offered_to.as_deref() == Some(agent))
        {
            let w = self.waiting.swap_remove(i);
            purpose = w.purpose;
            if let Some(q) = self.queues.get_mut(&w.queue) {
                let waited = now.saturating_duration_since(w.since);
                q.avg_wait = Some(match q.avg_wait {
                    None => waited,
                    Some(avg) => (avg * 7 + waited) / 8,
                });
            }
        }
        Ok((purpose, out))
    }

    /// The agent declined the offer: the next agent gets it (the agent stays available).
    pub fn declined(
        &mut self,
        agent: &str,
        call: &CallUri,
        now: Instant,
    ) -> Result<Vec<AcdOutput>, AcdError> {
        match self.agents.get(agent) {
            None => return Err(AcdError::UnknownAgent(agent.into())),
            Some(a) if a.presence != Presence::Ringing || a.call.as_ref() != Some(call) => {
                return Err(AcdError::NotOffered {
                    call: call.clone(),
                    agent: agent.into(),
                });
            }
            Some(_) => {}
        }
        let mut out = Vec::new();
        self.withdraw_from(agent, WithdrawReason::Declined, false, now, &mut out);
        if let Some(a) = self.agents.get_mut(agent) {
            a.idle_since = Some(now);
        }
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// The offer of `call` to `agent` failed because the agent's endpoint cannot be reached
    /// (its phone is not registered): the offer is withdrawn ([`WithdrawReason::Unreachable`]),
    /// the agent is set away with reason `endpoint_unreachable` (offering again would fail
    /// the same way, at once, for ever) and the call goes to the next agent or waits.
    pub fn unreachable(
        &mut self,
        agent: &str,
        call: &CallUri,
        now: Instant,
    ) -> Result<Vec<AcdOutput>, AcdError> {
        match self.agents.get(agent) {
            None => return Err(AcdError::UnknownAgent(agent.into())),
            Some(a) if a.presence != Presence::Ringing || a.call.as_ref() != Some(call) => {
                return Err(AcdError::NotOffered {
                    call: call.clone(),
                    agent: agent.into(),
                });
            }
            Some(_) => {}
        }
        let mut out = Vec::new();
        self.withdraw_from(agent, WithdrawReason::Unreachable, false, now, &mut out);
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// The agent's part in `call` is over (hang-up, transfer away): wrap-up, then available.
    /// `queue` picks the wrap-up time. Does nothing if the agent does not hold that call.
    pub fn release(
        &mut self,
        agent: &str,
        call: &CallUri,
        queue: Option<&str>,
        now: Instant,
    ) -> Vec<AcdOutput> {
        let wrap = queue
            .and_then(|q| self.queues.get(q))
            .and_then(|q| q.config.wrap_up_ms)
            .map_or(self.default_wrap_up, Duration::from_millis);
        let mut out = Vec::new();
        let Some(a) = self.agents.get_mut(agent) else {
            return out;
        };
        if a.call.as_ref() != Some(call) || a.presence != Presence::Busy {
            return out;
        }
        a.call = None;
        if wrap.is_zero() {
            set_presence(a, Presence::Available, now, &mut out);
        } else {
            a.wrap_up_until = Some(now + wrap);
            set_presence(a, Presence::WrapUp, now, &mut out);
        }
        self.dispatch(now, &mut out);
        out
    }

    /// Puts a call into a queue.
    pub fn enqueue(
        &mut self,
        call: &CallUri,
        queue: &str,
        purpose: Purpose,
        overflow: bool,
        now: Instant,
    ) -> Result<Vec<AcdOutput>, AcdError> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| AcdError::UnknownQueue(queue.into()))?;
        if self.waiting.iter().any(|w| &w.call == call) {
            return Err(AcdError::AlreadyQueued(call.clone()));
        }
        let overflow_at = (overflow && q.config.overflow.is_some())
            .then(|| now + Duration::from_millis(q.config.max_wait_ms));
        let comfort = q.config.comfort.clone();
        self.waiting.push(Waiting {
            call: call.clone(),
            queue: queue.into(),
            since: now,
            overflow_at,
            purpose,
            offered_to: None,
            skipped: HashSet::new(),
        });
        let (_, position, expected_wait) = self.position(call).unwrap_or_default();
        let mut out = vec![AcdOutput::Queued {
            call: call.clone(),
            queue: queue.into(),
            position,
            expected_wait,
            comfort,
            purpose,
        }];
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// The call is gone (caller hung up, transfer over): leaves its queue; an agent it is
    /// ringing goes back to available without losing its place. Agents on the call are
    /// unaffected (use [`release`](Self::release)).
    pub fn call_gone(&mut self, call: &CallUri, now: Instant) -> Vec<AcdOutput> {
        let mut out = Vec::new();
        self.waiting.retain(|w| &w.call != call);
        let ringing: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.presence == Presence::Ringing && a.call.as_ref() == Some(call))
            .map(|a| a.config.id.clone())
            .collect();
        for id in ringing {
            if let Some(a) = self.agents.get_mut(&id) {
                a.call = None;
                a.ring_deadline = None;
                out.push(AcdOutput::Withdraw {
                    call: call.clone(),
                    agent: id.clone(),
                    reason: WithdrawReason::CallGone,
                });
                // Back to available, keeping its place in the idle order.
                set_presence(a, Presence::Available, now, &mut out);
            }
        }
        self.dispatch(now, &mut out);
        out
    }

    /// A transfer's hunt for a target is over: its queue entry leaves and an agent still ringing
    /// for it goes back to available. Offers of the call to a caller purpose are untouched.
    pub fn cancel_hunt(&mut self, call: &CallUri, now: Instant) -> Vec<AcdOutput> {
        let mut out = Vec::new();
        let mut ringing: Vec<String> = Vec::new();
        for a in self.agents.values() {
            if a.presence != Presence::Ringing || a.call.as_ref() != Some(call) {
                continue;
            }
            let queued = self
                .waiting
                .iter()
                .find(|w| &w.call == call && w.offered_to.as_deref() == Some(a.config.id.as_str()));
            let purpose = queued.map_or(a.direct_purpose, |w| Some(w.purpose));
            if purpose == Some(Purpose::TransferTarget) {
                ringing.push(a.config.id.clone());
            }
        }
        self.waiting
            .retain(|w| !(&w.call == call && w.purpose == Purpose::TransferTarget));
        for id in ringing {
            if let Some(a) = self.agents.get_mut(&id) {
                a.call = None;
                a.ring_deadline = None;
                a.direct_purpose = None;
                out.push(AcdOutput::Withdraw {
                    call: call.clone(),
                    agent: id.clone(),
                    reason: WithdrawReason::CallGone,
                });
                set_presence(a, Presence::Available, now, &mut out);
            }
        }
        self.dispatch(now, &mut out);
        out
    }

    /// Stops ringing `agent` (the offer it has); the call goes back to waiting if it came from
    /// a queue. `no_answer` sets the agent away or to the back of the idle order; an
    /// unreachable endpoint sets it away (`endpoint_unreachable`).
    fn withdraw_from(
        &mut self,
        agent: &str,
        reason: WithdrawReason,
        no_answer: bool,
        now: Instant,
        out: &mut Vec<AcdOutput>,
    ) {
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        let Some(call) = a.call.take() else { return };
        a.ring_deadline = None;
        out.push(AcdOutput::Withdraw {
            call: call.clone(),
            agent: agent.into(),
            reason,
        });
        let mut away = false;
        for w in self.waiting.iter_mut() {
            if w.call == call && w.offered_to.as_deref() == Some(agent) {
                w.offered_to = None;
                w.skipped.insert(agent.into());
                away = no_answer
                    && self
                        .queues
                        .get(&w.queue)
                        .is_some_and(|q| q.config.away_on_no_answer);
            }
        }
        if let Some(a) = self.agents.get_mut(agent) {
            let p = if reason == WithdrawReason::Unreachable {
                a.away_reason = Some("endpoint_unreachable".into());
                Presence::Away
            } else if away {
                a.away_reason = Some("ring_no_answer".into());
                Presence::Away
            } else {
                Presence::Available
            };
            set_presence(a, p, now, out);
        }
    }

    // ---- timers ----

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let agents = self
            .agents
            .values()
            .filter_map(|a| a.ring_deadline.or(a.wrap_up_until));
        let waits = self.waiting.iter().filter_map(|w| w.overflow_at);
        agents.chain(waits).min()
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<AcdOutput> {
        let mut out = Vec::new();
        let rung_out: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.ring_deadline.is_some_and(|d| d <= now))
            .map(|a| a.config.id.clone())
            .collect();
        for id in rung_out {
            self.withdraw_from(&id, WithdrawReason::NoAnswer, true, now, &mut out);
            if let Some(a) = self.agents.get_mut(&id) {
                // To the back of the idle order.
                a.idle_since = Some(now);
            }
        }
        for a in self.agents.values_mut() {
            if a.wrap_up_until.is_some_and(|d| d <= now) && a.presence == Presence::WrapUp {
                a.wrap_up_until = None;
                set_presence(a, Presence::Available, now, &mut out);
            }
        }
        let mut overflowed = Vec::new();
        self.waiting.retain(|w| {
            let due = w.overflow_at.is_some_and(|d| d <= now) && w.purpose == Purpose::Caller;
            if due {
                overflowed.push(w.clone());
            }
            !due
        });
        for w in overflowed {
            if let Some(agent) = &w.offered_to {
                if let Some(a) = self.agents.get_mut(agent) {
                    a.call = None;
                    a.ring_deadline = None;
                    out.push(AcdOutput::Withdraw {
                        call: w.call.clone(),
                        agent: agent.clone(),
                        reason: WithdrawReason::CallGone,
                    });
                    set_presence(a, Presence::Available, now, &mut out);
                }
            }
            if let Some(to) = self
                .queues
                .get(&w.queue)
                .and_then(|q| q.config.overflow.clone())
            {
                out.push(AcdOutput::Overflow {
                    call: w.call,
                    queue: w.queue,
                    to,
                });
            }
        }
        self.dispatch(now, &mut out);
        out
    }

    /// Matches waiting calls with idle agents.
    fn dispatch(&mut self, now: Instant, out: &mut Vec<AcdOutput>) {
        let mut order: Vec<usize> = (0..self.waiting.len()).collect();
        order.sort_by_key(|&i| self.waiting.get(i).map(|w| w.since));
        for i in order {
            let Some(w) = self.waiting.get(i) else {
                continue;
            };
            if w.offered_to.is_some() {
                continue;
            }
            let Some(q) = self.queues.get(&w.queue) else {
                continue;
            };
            let eligible = |a: &&AgentState| {
                a.presence == Presence::Available && a.endpoint.is_some() && has_skill(a, &q.config)
            };
            let pick = self
                .agents
                .values()
                .filter(eligible)
                .filter(|a| !w.skipped.contains(&a.config.id))
                .min_by_key(|a| (a.idle_since, a.config.id.clone()))
                .or_else(|| {
                    // Everyone left has let it ring out: start over rather than strand it.
                    self.agents
                        .values()
                        .filter(eligible)
                        .min_by_key(|a| a.idle_since)
                })
                .map(|a| a.config.id.clone());
            let Some(agent_id) = pick else { continue };
            let ring = Duration::from_millis(q.config.ring_timeout_ms);
            let queue = w.queue.clone();
            let purpose = w.purpose;
            let call = w.call.clone();
            if let Some(w) = self.waiting.get_mut(i) {
                w.offered_to = Some(agent_id.clone());
            }
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.call = Some(call.clone());
                a.ring_deadline = Some(now + ring);
                set_presence(a, Presence::Ringing, now, out);
                out.push(AcdOutput::Offer {
                    call,
                    agent: agent_id,
                    endpoint: a.endpoint.clone().unwrap_or(Endpoint::Browser),
                    queue: Some(queue),
                    purpose,
                });
            }
        }
    }

    // ---- administration ----

    /// Adds an agent (offline).
    pub fn add_agent(&mut self, config: AgentConfig) -> Result<(), AcdError> {
        if self.agents.contains_key(&config.id) {
            return Err(AcdError::AgentExists(config.id));
        }
        self.agents
            .insert(config.id.clone(), AgentState::offline(config));
        Ok(())
    }

    /// Replaces an agent's configuration, keeping its live state (an endpoint it no longer
    /// has is dropped at the next login).
    pub fn update_agent(&mut self, config: AgentConfig) -> Result<(), AcdError> {
        let a = self
            .agents
            .get_mut(&config.id)
            .ok_or_else(|| AcdError::UnknownAgent(config.id.clone()))?;
        a.config = config;
        Ok(())
    }

    /// Removes an agent, which must not be ringing or on a call.
    pub fn remove_agent(&mut self, id: &str, now: Instant) -> Result<Vec<AcdOutput>, AcdError> {
        let a = self
            .agents
            .get(id)
            .ok_or_else(|| AcdError::UnknownAgent(id.into()))?;
        if matches!(a.presence, Presence::Ringing | Presence::Busy) {
            return Err(AcdError::WrongPresence {
                agent: id.into(),
                presence: a.presence,
                hint: "wait until the agent's call is over",
            });
        }
        self.agents.remove(id);
        for w in self.waiting.iter_mut() {
            w.skipped.remove(id);
        }
        let mut out = vec![AcdOutput::Presence {
            agent: id.into(),
            presence: Presence::Offline,
        }];
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// Adds a queue.
    pub fn add_queue(&mut self, config: QueueConfig) -> Result<(), AcdError> {
        if self.queues.contains_key(&config.name) {
            return Err(AcdError::QueueExists(config.name));
        }
        self.queues.insert(
            config.name.clone(),
            QueueState {
                config,
                avg_wait: None,
            },
        );
        Ok(())
    }

    /// Replaces a queue's configuration (waiting callers stay).
    pub fn update_queue(
        &mut self,
        config: QueueConfig,
        now: Instant,
    ) -> Result<Vec<AcdOutput>, AcdError> {
        let q = self
            .queues
            .get_mut(&config.name)
            .ok_or_else(|| AcdError::UnknownQueue(config.name.clone()))?;
        q.config = config;
        let mut out = Vec::new();
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// Removes an empty queue.
    pub fn remove_queue(&mut self, name: &str) -> Result<(), AcdError> {
        if !self.queues.contains_key(name) {
            return Err(AcdError::UnknownQueue(name.into()));
        }
        if self.waiting.iter().any(|w| w.queue == name) {
            return Err(AcdError::QueueNotEmpty(name.into()));
        }
        self.queues.remove(name);
        Ok(())
    }
}

impl AgentState {
    fn offline(config: AgentConfig) -> Self {
        AgentState {
            config,
            presence: Presence::Offline,
            endpoint: None,
            idle_since: None,
            call: None,
            ring_deadline: None,
            wrap_up_until: None,
            away_reason: None,
            direct_purpose: None,
        }
    }
}

fn has_skill(a: &AgentState, q: &QueueConfig) -> bool {
    q.skill
        .as_ref()
        .is_none_or(|s| a.config.skills.iter().any(|k| k == s))
}

/// The `kind` name of an endpoint (`browser`, `sip`, `phone`, `tdm`).
pub fn endpoint_kind_name(e: &Endpoint) -> &'static str {
    match e {
        Endpoint::Browser => "browser",
        Endpoint::Sip { .. } => "sip",
        Endpoint::Phone { .. } => "phone",
        Endpoint::Tdm { .. } => "tdm",
    }
}

fn set_presence(a: &mut AgentState, p: Presence, now: Instant, out: &mut Vec<AcdOutput>) {
    if p == Presence::Available && a.presence != Presence::Ringing {
        a.idle_since = Some(now);
    }
    if p == Presence::Available && a.idle_since.is_none() {
        a.idle_since = Some(now);
    }
    if a.presence != p {
        a.presence = p;
        out.push(AcdOutput::Presence {
            agent: a.config.id.clone(),
            presence: p,
        });
    }
}
