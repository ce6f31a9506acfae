//! The transfer executor: one sans-IO state machine per transfer, keyed by the call URI.
//!
//! The call model tells a [`Transfer`] what happened ([`Input`]: the target rang, answered,
//! failed, someone hung up, the agent pressed complete or cancel) together with the current
//! time, and carries out the [`Command`]s it returns (dial the target, play a tone to the
//! caller, re-bridge, release a leg, publish an event). Timers are explicit:
//! [`Transfer::poll_timeout`] says when to call [`Transfer::handle_timeout`]. Nothing here does
//! IO, so every race in the tests below runs in microseconds of virtual time.
//!
//! The rules that keep a caller from being lost:
//! - from the request until the end, the caller always hears someone (the first agent or the
//!   target) or a tone (ringback for blind transfers, hold tone while the agent consults);
//! - every way a transfer can fail (busy, rejection, no answer, target hang-up, time-out,
//!   cancel) reconnects the caller to the first agent, or to the fallback queue if that agent
//!   has gone, and says why in `transfer.failed` / `transfer.cancelled` / `transfer.timed_out`;
//! - a target leg that is not connected to the caller when the transfer ends is released, even
//!   if it answers later;
//! - one transfer per call at a time ([`TransferTable`] answers a second request with
//!   [`TransferError::AlreadyInProgress`], HTTP 409).
//!
//! The executor does not depend on what kind of leg the caller or target is (WebRTC, SIP or
//! TDM): legs are the call model's business, and the caller's leg keeps its outbound RTP context
//! across the re-bridge because re-bridging only re-points rings (see `media::bridge`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::events::{Event, FailureReason};
use super::uri::CallUri;

/// Blind (the agent hands the caller over and leaves) or attended (the agent talks to the
/// target first, then completes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Hand over without consulting.
    Blind,
    /// Consult the target first, with the caller on hold.
    Attended,
}

/// The technology of a leg (informational: the executor treats all alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegKind {
    /// A browser or other WebRTC endpoint.
    WebRtc,
    /// A SIP UA or trunk.
    Sip,
    /// A TDM channel.
    Tdm,
}

/// Who or where a caller can be connected to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// An agent by id.
    Agent(String),
    /// A queue by name.
    Queue(String),
    /// A SIP URI.
    SipUri(String),
    /// A number on a TDM route.
    TdmNumber(String),
}

/// A tone played to the caller while nobody is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    /// Ringback: the target is being called (blind transfer).
    Ringback,
    /// Hold tone or music: the agent is consulting (attended transfer).
    Hold,
}

/// What the caller hears now. Never "nothing" while the caller is on the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerAudio {
    /// The first agent.
    FirstAgent,
    /// The transfer target.
    Target,
    /// A tone.
    Tone(Tone),
    /// The queue's comfort tone or music (requeued).
    Queue(String),
    /// The caller has hung up.
    Gone,
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// The target leg is being set up; no alerting yet.
    Dialling,
    /// The target is ringing.
    TargetAlerting,
    /// Attended: the first agent and the target are talking; the caller is on hold.
    Consulting,
    /// Done: the caller is with the target.
    Connected,
    /// Failed; the caller is back with the first agent or the queue.
    Failed(FailureReason),
    /// Cancelled by the agent.
    Cancelled,
    /// The target never even rang within the set-up timeout, or a consultation outlasted its
    /// limit.
    TimedOut,
    /// The caller hung up before the transfer completed.
    Abandoned,
}

impl TransferState {
    /// True once the transfer is over.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            TransferState::Dialling | TransferState::TargetAlerting | TransferState::Consulting
        )
    }
}

/// What happened, as the call model reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The target leg is ringing (SIP 180/183, Q.931 ALERTING, the agent's page ringing).
    TargetAlerting,
    /// The target answered.
    TargetAnswered,
    /// The target leg failed before answering.
    TargetFailed(FailureReason),
    /// The target hung up after answering (or its leg dropped).
    TargetHungUp,
    /// The caller hung up.
    CallerHungUp,
    /// The first agent hung up (or logged out).
    FirstAgentHungUp,
    /// Attended: the first agent pressed "complete".
    Complete,
    /// The first agent pressed "cancel".
    Cancel,
}

/// What the call model must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Set up the target leg.
    DialTarget(Party),
    /// Feed the caller's outbound side from a tone source.
    PlayToCaller(Tone),
    /// Attended: connect the first agent and the target (the caller stays on hold).
    BridgeFirstAgentToTarget,
    /// Connect the caller and the target (the re-bridge; the caller's leg keeps its RTP
    /// context).
    BridgeCallerToTarget,
    /// Connect the caller back to the first agent.
    BridgeCallerToFirstAgent,
    /// Put the caller back into a queue (the first agent is gone).
    RequeueCaller(String),
    /// Release the target leg.
    HangUpTarget,
    /// Release the first agent's leg (their part is done).
    ReleaseFirstAgent,
    /// Publish an event.
    Publish(Event),
}

/// A transfer request that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Another transfer of this call is under way (HTTP 409).
    #[error("a transfer of {0} is already in progress")]
    AlreadyInProgress(CallUri),
    /// No transfer of this call is under way (HTTP 404).
    #[error("no transfer of {0} is in progress")]
    NotFound(CallUri),
    /// "Complete" was asked of a blind transfer (HTTP 409).
    #[error("{0} is a blind transfer: there is nothing to complete")]
    NotAttended(CallUri),
}

/// Timeouts of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The target must at least ring within this (SIP: a 180, or the REFER's NOTIFY).
    pub setup: Duration,
    /// Ringing without an answer for this long fails the transfer with `no_answer`.
    pub ring: Duration,
    /// An attended consultation longer than this ends: the target is released and the caller
    /// goes back to the first agent (`transfer.timed_out`), so nobody waits on hold forever.
    pub consult: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            setup: Duration::from_secs(10),
            ring: Duration::from_secs(30),
            consult: Duration::from_secs(600),
        }
    }
}

/// One transfer of one call.
#[derive(Debug, Clone)]
pub struct Transfer {
    uri: CallUri,
    kind: TransferKind,
    target: Party,
    fallback_queue: String,
    first_party: Party,
    first_agent_present: bool,
    target_leg_up: bool,
    state: TransferState,
    caller_audio: CallerAudio,
    deadline: Option<Instant>,
    timeouts: Timeouts,
}

impl Transfer {
    /// Starts a transfer of the call `uri` (whose caller is now talking to the first agent) to
    /// `target`. `fallback_queue` takes the caller if the transfer fails after the first agent
    /// has gone. Returns the transfer and the commands to carry out now.
    pub fn start(
        uri: CallUri,
        kind: TransferKind,
        target: Party,
        fallback_queue: impl Into<String>,
        timeouts: Timeouts,
        now: Instant,
    ) -> (Self, Vec<Command>) {
        Self::start_from(
            uri,
            kind,
            target,
            Some(Party::Agent("first_agent".into())),
            fallback_queue,
            timeouts,
            now,
        )
    }

    /// Like [`start`](Self::start), naming the party the caller is with now (`first`, reported
    /// in `caller_returned_to`), or `None` when nobody is (a queue overflow: a failure puts the
    /// caller back into `fallback_queue`).
    pub fn start_from(
        uri: CallUri,
        kind: TransferKind,
        target: Party,
        first: Option<Party>,
        fallback_queue: impl Into<String>,
        timeouts: Timeouts,
        now: Instant,
    ) -> (Self, Vec<Command>) {
        let kind = if first.is_none() {
            TransferKind::Blind
        } else {
            kind
        };
        let tone = match kind {
            TransferKind::Blind => Tone::Ringback,
            TransferKind::Attended => Tone::Hold,
        };
        let t = Transfer {
            uri: uri.clone(),
            kind,
            target: target.clone(),
            fallback_queue: fallback_queue.into(),
            first_agent_present: first.is_some(),
            first_party: first.unwrap_or(Party::Queue(String::new())),
            target_leg_up: true,
            state: TransferState::Dialling,
            caller_audio: CallerAudio::Tone(tone),
            deadline: Some(now + timeouts.setup),
            timeouts,
        };
        // The first agent's leg stays reserved until the target answers (blind) or the agent
        // completes (attended): a failed transfer returns the caller to them.
        let out = vec![
            Command::Publish(Event::TransferRequested {
                call_uri: uri,
                kind,
                target: target.clone(),
            }),
            Command::PlayToCaller(tone),
            Command::DialTarget(target),
        ];
        (t, out)
    }

    /// The call this transfer belongs to.
    pub fn uri(&self) -> &CallUri {
        &self.uri
    }

    /// Where the transfer is.
    pub fn state(&self) -> &TransferState {
        &self.state
    }

    /// What the caller hears now.
    pub fn caller_audio(&self) -> &CallerAudio {
        &self.caller_audio
    }

    /// Blind or attended (an attended transfer turns blind when the agent leaves or completes
    /// early).
    pub fn kind(&self) -> TransferKind {
        self.kind
    }

    /// Where the caller is being transferred to.
    pub fn target(&self) -> &Party {
        &self.target
    }

    /// True while the target leg exists (dialled and not released).
    pub fn target_leg_up(&self) -> bool {
        self.target_leg_up
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state.is_terminal() {
            None
        } else {
            self.deadline
        }
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Command> {
        match self.deadline {
            Some(d) if now >= d && !self.state.is_terminal() => {}
            _ => return Vec::new(),
        }
        self.deadline = None;
        let mut out = Vec::new();
        match self.state {
            TransferState::Dialling | TransferState::Consulting => {
                self.release_target(&mut out);
                let to = self.return_caller(&mut out);
                self.state = TransferState::TimedOut;
                out.push(Command::Publish(Event::TransferTimedOut {
                    call_uri: self.uri.clone(),
                    caller_returned_to: to,
                }));
            }
            TransferState::TargetAlerting => {
                self.release_target(&mut out);
                self.fail(FailureReason::NoAnswer, &mut out);
            }
            _ => {}
        }
        out
    }

    /// Feeds what happened; returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<Vec<Command>, TransferError> {
        let mut out = Vec::new();
        if self.state.is_terminal() {
            // Late news for a finished transfer: a target that answers or rings now is not
            // connected to anyone, so release it; everything else is moot.
            // (A 200 OK that crossed our CANCEL re-creates the leg, so this is sent even if we
            // released it already; the call model treats it as idempotent.)
            if input == Input::TargetAnswered && self.state != TransferState::Connected {
                self.target_leg_up = true;
                self.release_target(&mut out);
            }
            if input == Input::Complete {
                return Err(TransferError::NotFound(self.uri.clone()));
            }
            return Ok(out);
        }
        match input {
            Input::TargetAlerting => {
                if self.state == TransferState::Dialling {
                    self.state = TransferState::TargetAlerting;
                    self.deadline = Some(now + self.timeouts.ring);
                    out.push(Command::Publish(Event::TransferTargetAlerting {
                        call_uri: self.uri.clone(),
                        target: self.target.clone(),
                    }));
                }
            }
            Input::TargetAnswered => {
                if matches!(
                    self.state,
                    TransferState::Dialling | TransferState::TargetAlerting
                ) {
                    self.deadline = None;
                    out.push(Command::Publish(Event::TransferTargetAnswered {
                        call_uri: self.uri.clone(),
                        target: self.target.clone(),
                    }));
                    if self.kind == TransferKind::Attended && self.first_agent_present {
                        self.state = TransferState::Consulting;
                        self.deadline = Some(now + self.timeouts.consult);
                        out.push(Command::BridgeFirstAgentToTarget);
                    } else {
                        self.connect(&mut out);
                    }
                }
            }
            Input::TargetFailed(reason) => {
                self.target_leg_up = false;
                self.fail(reason, &mut out);
            }
            Input::TargetHungUp => {
                self.target_leg_up = false;
                self.fail(FailureReason::TargetHungUp, &mut out);
            }
            Input::CallerHungUp => {
                self.caller_audio = CallerAudio::Gone;
                self.deadline = None;
                if self.state != TransferState::Consulting {
                    // Nobody is waiting for the target any more.
                    self.release_target(&mut out);
                }
                // In a consultation the agent and the target keep talking; the call model
                // decides when their legs end.
                self.state = TransferState::Abandoned;
                out.push(Command::Publish(Event::TransferCancelled {
                    call_uri: self.uri.clone(),
                    by: "caller_hangup".into(),
                }));
            }
            Input::FirstAgentHungUp => {
                let was_present = self.first_agent_present;
                self.first_agent_present = false;
                if was_present {
                    match self.state {
                        // Attended, agent gone while consulting: complete the transfer
                        // ("transfer on hang-up"), as PBXs do.
                        TransferState::Consulting => self.connect(&mut out),
                        // Attended, agent gone before the answer: carry on as a blind
                        // transfer; the caller now hears ringback.
                        _ => {
                            self.kind = TransferKind::Blind;
                            if self.caller_audio != CallerAudio::Tone(Tone::Ringback) {
                                self.caller_audio = CallerAudio::Tone(Tone::Ringback);
                                out.push(Command::PlayToCaller(Tone::Ringback));
                            }
                        }
                    }
                }
            }
            Input::Complete => {
                if self.kind != TransferKind::Attended {
                    return Err(TransferError::NotAttended(self.uri.clone()));
                }
                match self.state {
                    TransferState::Consulting => self.connect(&mut out),
                    _ => {
                        // Completing before the target answered turns the transfer blind.
                        self.kind = TransferKind::Blind;
                        self.first_agent_present = false;
                        self.caller_audio = CallerAudio::Tone(Tone::Ringback);
                        out.push(Command::PlayToCaller(Tone::Ringback));
                        out.push(Command::ReleaseFirstAgent);
                    }
                }
            }
            Input::Cancel => {
                self.deadline = None;
                self.release_target(&mut out);
                let _ = self.return_caller(&mut out);
                self.state = TransferState::Cancelled;
                out.push(Command::Publish(Event::TransferCancelled {
                    call_uri: self.uri.clone(),
                    by: "agent".into(),
                }));
            }
        }
        Ok(out)
    }

    fn connect(&mut self, out: &mut Vec<Command>) {
        self.deadline = None;
        out.push(Command::BridgeCallerToTarget);
        self.caller_audio = CallerAudio::Target;
        if self.first_agent_present {
            self.first_agent_present = false;
            out.push(Command::ReleaseFirstAgent);
        }
        self.state = TransferState::Connected;
        out.push(Command::Publish(Event::TransferConnected {
            call_uri: self.uri.clone(),
            target: self.target.clone(),
        }));
    }

    fn release_target(&mut self, out: &mut Vec<Command>) {
        if self.target_leg_up {
            self.target_leg_up = false;
            out.push(Command::HangUpTarget);
        }
    }

    /// Sends the caller back to the first agent, or the fallback queue; returns where.
    fn return_caller(&mut self, out: &mut Vec<Command>) -> Party {
        if self.first_agent_present {
            out.push(Command::BridgeCallerToFirstAgent);
            self.caller_audio = CallerAudio::FirstAgent;
            self.first_party.clone()
        } else {
            out.push(Command::RequeueCaller(self.fallback_queue.clone()));
            self.caller_audio = CallerAudio::Queue(self.fallback_queue.clone());
            Party::Queue(self.fallback_queue.clone())
        }
    }

    fn fail(&mut self, reason: FailureReason, out: &mut Vec<Command>) {
        self.deadline = None;
        let to = self.return_caller(out);
        self.state = TransferState::Failed(reason.clone());
        out.push(Command::Publish(Event::TransferFailed {
            call_uri: self.uri.clone(),
            reason,
            caller_returned_to: to,
        }));
    }
}

/// Every transfer in progress, keyed by call URI.
#[derive(Debug, Default)]
pub struct TransferTable {
    active: HashMap<CallUri, Transfer>,
    timeouts: Timeouts,
}

impl TransferTable {
    /// An empty table with the given timeouts.
    pub fn new(timeouts: Timeouts) -> Self {
        TransferTable {
            active: HashMap::new(),
            timeouts,
        }
    }

    /// Starts a transfer, unless one of the same call is in progress.
    pub fn request(
        &mut self,
        uri: CallUri,
        kind: TransferKind,
        target: Party,
        fallback_queue: &str,
        now: Instant,
    ) -> Result<Vec<Command>, TransferError> {
        self.request_from(
            uri,
            kind,
            target,
            Some(Party::Agent("first_agent".into())),
            fallback_queue,
            now,
        )
    }

    /// Starts a transfer from `first` (see [`Transfer::start_from`]), unless one of the same
    /// call is in progress.
    pub fn request_from(
        &mut self,
        uri: CallUri,
        kind: TransferKind,
        target: Party,
        first: Option<Party>,
        fallback_queue: &str,
        now: Instant,
    ) -> Result<Vec<Command>, TransferError> {
        if self.active.contains_key(&uri) {
            return Err(TransferError::AlreadyInProgress(uri));
        }
        let (t, out) = Transfer::start_from(
            uri.clone(),
            kind,
            target,
            first,
            fallback_queue,
            self.timeouts,
            now,
        );
        self.active.insert(uri, t);
        Ok(out)
    }

    /// An attended transfer whose consultation happened outside the executor (a SIP agent's
    /// REFER with Replaces naming its own call to `target` through the gateway): the target's
    /// leg is already answered and in the call, so the transfer completes at once —
    /// `found: Ok(())` — or, when the named dialog could not be taken over, fails at once with
    /// `found: Err(reason)` and the caller stays with `first`. Either way it is over when this
    /// returns (nothing is left in the table), unless another transfer of the call was under
    /// way ([`TransferError::AlreadyInProgress`]).
    pub fn request_replacing(
        &mut self,
        uri: CallUri,
        target: Party,
        first: Party,
        fallback_queue: &str,
        found: Result<(), FailureReason>,
    ) -> Result<Vec<Command>, TransferError> {
        if self.active.contains_key(&uri) {
            return Err(TransferError::AlreadyInProgress(uri));
        }
        let mut t = Transfer {
            uri: uri.clone(),
            kind: TransferKind::Attended,
            target: target.clone(),
            fallback_queue: fallback_queue.to_owned(),
            first_party: first,
            first_agent_present: true,
            target_leg_up: found.is_ok(),
            state: TransferState::Consulting,
            caller_audio: CallerAudio::FirstAgent,
            deadline: None,
            timeouts: self.timeouts,
        };
        let mut out = vec![Command::Publish(Event::TransferRequested {
            call_uri: uri.clone(),
            kind: TransferKind::Attended,
            target: target.clone(),
        })];
        match found {
            Ok(()) => {
                out.push(Command::Publish(Event::TransferTargetAnswered {
                    call_uri: uri,
                    target,
                }));
                t.connect(&mut out);
            }
            Err(reason) => t.fail(reason, &mut out),
        }
        Ok(out)
    }

    /// Feeds an input to the transfer of `uri`. Finished transfers leave the table; late
    /// target answers for a call with no transfer are answered with [`Command::HangUpTarget`]
    /// by the caller of this API (see [`Transfer::handle`]).
    pub fn handle(
        &mut self,
        uri: &CallUri,
        input: Input,
        now: Instant,
    ) -> Result<Vec<Command>, TransferError> {
        let t = self
            .active
            .get_mut(uri)
            .ok_or_else(|| TransferError::NotFound(uri.clone()))?;
        let out = t.handle(input, now)?;
        // (A transfer stays in the table until terminal, so `t` is live here.)
        if t.state().is_terminal() {
            self.active.remove(uri);
        }
        Ok(out)
    }

    /// The earliest timer of any transfer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.active
            .values()
            .filter_map(Transfer::poll_timeout)
            .min()
    }

    /// Fires due timers; returns (call, commands) pairs.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(CallUri, Vec<Command>)> {
        let mut fired = Vec::new();
        for (uri, t) in self.active.iter_mut() {
            let out = t.handle_timeout(now);
            if !out.is_empty() {
                fired.push((uri.clone(), out));
            }
        }
        self.active.retain(|_, t| !t.state().is_terminal());
        fired
    }

    /// The transfer of `uri`, if one is in progress.
    pub fn get(&self, uri: &CallUri) -> Option<&Transfer> {
        self.active.get(uri)
    }

    /// Transfers in progress.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// True if no transfer is in progress.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri() -> CallUri {
        CallUri::new()
    }

    #[test]
    fn a_replacing_transfer_completes_at_once_and_leaves_nothing() {
        let mut t = TransferTable::new(Timeouts::default());
        let u = uri();
        let out = t
            .request_replacing(
                u.clone(),
                Party::SipUri("sip:bob@127.0.0.1".into()),
                Party::Agent("alice".into()),
                "q",
                Ok(()),
            )
            .unwrap();
        assert!(out.contains(&Command::BridgeCallerToTarget));
        assert!(out.contains(&Command::ReleaseFirstAgent));
        assert!(!out.iter().any(|c| matches!(c, Command::DialTarget(_))));
        assert!(matches!(
            out.last(),
            Some(Command::Publish(Event::TransferConnected { call_uri, .. })) if *call_uri == u
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn a_replacing_transfer_that_found_nothing_keeps_the_caller_with_the_agent() {
        let mut t = TransferTable::new(Timeouts::default());
        let out = t
            .request_replacing(
                uri(),
                Party::SipUri("sip:bob@127.0.0.1".into()),
                Party::Agent("alice".into()),
                "q",
                Err(FailureReason::Rejected("481".into())),
            )
            .unwrap();
        assert!(out.contains(&Command::BridgeCallerToFirstAgent));
        assert!(!out.contains(&Command::ReleaseFirstAgent));
        assert!(!out.contains(&Command::HangUpTarget));
        assert!(matches!(
            out.last(),
            Some(Command::Publish(Event::TransferFailed {
                caller_returned_to: Party::Agent(a),
                ..
            })) if a == "alice"
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn a_replacing_transfer_waits_for_one_in_progress() {
        let mut t = TransferTable::new(Timeouts::default());
        let u = uri();
        t.request(
            u.clone(),
            TransferKind::Attended,
            Party::Agent("bob".into()),
            "q",
            Instant::now(),
        )
        .unwrap();
        let r = t.request_replacing(
            u.clone(),
            Party::SipUri("sip:carol@127.0.0.1".into()),
            Party::Agent("alice".into()),
            "q",
            Ok(()),
        );
        assert_eq!(r, Err(TransferError::AlreadyInProgress(u)));
    }
}
