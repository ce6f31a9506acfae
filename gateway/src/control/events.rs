//! Control-plane events and the log clients resume from.
//!
//! Every event carries the call URI and gets a sequence number from one [`EventLog`]; an API
//! client that reconnects asks for everything after the last number it saw and gets exactly the
//! events it missed, in order, or — if they have aged out of the bounded log — an explicit
//! [`ResumeError::TooOld`] telling it to resynchronise from the call list.

use std::collections::VecDeque;

use serde::Serialize;

use super::center::{Presence, Purpose, WithdrawReason};
use super::transfer::{Party, TransferKind};
use super::uri::CallUri;

/// One earlier transfer of a call, as the screen pop shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Milliseconds since the call was created.
    pub at_ms: u64,
    /// The agent who transferred (None: the system, e.g. a queue overflow).
    pub from: Option<String>,
    /// Where to.
    pub to: Party,
    /// Blind or attended.
    pub kind: TransferKind,
    /// `connected`, `failed: busy`, `cancelled`, ... (`in_progress` while it runs).
    pub outcome: String,
}

/// Why a transfer failed (the `reason` of `transfer.failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The target was busy.
    Busy,
    /// The target did not answer within the ring timeout.
    NoAnswer,
    /// The target rejected the call or its leg failed (with the detail).
    Rejected(String),
    /// The target hung up before the transfer completed.
    TargetHungUp,
    /// The target's endpoint cannot be reached now (its phone is not registered), with the
    /// detail. An agent whose endpoint is unreachable is set away (`endpoint_unreachable`)
    /// instead of being offered the call again.
    Unreachable(String),
}

/// An event published to API clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Event {
    /// A call's first leg appeared.
    #[serde(rename = "call.created")]
    CallCreated {
        /// The call.
        call_uri: CallUri,
        /// Who is calling (number, SIP URI or browser identity).
        caller: String,
    },
    /// The call was offered to an agent (the screen-pop payload).
    #[serde(rename = "call.offered")]
    CallOffered {
        /// The call.
        call_uri: CallUri,
        /// The agent it is offered to.
        agent: String,
        /// Who is calling.
        caller: String,
        /// The queue it comes from, if any.
        queue: Option<String>,
        /// `caller` (answer to talk to the caller) or `transfer_target` (a transfer to you).
        purpose: Purpose,
        /// Earlier transfers of this call, oldest first.
        transfer_history: Vec<HistoryEntry>,
    },
    /// An offer ended unanswered (rang out, declined, logout, the call went away).
    #[serde(rename = "call.offer_withdrawn")]
    CallOfferWithdrawn {
        /// The call.
        call_uri: CallUri,
        /// The agent it was offered to.
        agent: String,
        /// Why.
        reason: WithdrawReason,
    },
    /// The call joined a queue.
    #[serde(rename = "call.queued")]
    CallQueued {
        /// The call.
        call_uri: CallUri,
        /// The queue.
        queue: String,
        /// 1-based position.
        position: usize,
        /// Estimated wait in seconds.
        expected_wait_s: u64,
    },
    /// The caller was taken off hold.
    #[serde(rename = "call.resumed")]
    CallResumed {
        /// The call.
        call_uri: CallUri,
    },
    /// The agent's microphone toward the caller was muted or unmuted.
    #[serde(rename = "call.muted")]
    CallMuted {
        /// The call.
        call_uri: CallUri,
        /// Muted now.
        muted: bool,
    },
    /// An agent's presence changed (no call URI).
    #[serde(rename = "agent.presence")]
    AgentPresence {
        /// The agent.
        agent: String,
        /// Presence now.
        presence: Presence,
    },
    /// An agent answered.
    #[serde(rename = "call.answered")]
    CallAnswered {
        /// The call.
        call_uri: CallUri,
        /// The agent.
        agent: String,
    },
    /// The caller was put on hold.
    #[serde(rename = "call.held")]
    CallHeld {
        /// The call.
        call_uri: CallUri,
    },
    /// A transfer was accepted for execution.
    #[serde(rename = "transfer.requested")]
    TransferRequested {
        /// The call.
        call_uri: CallUri,
        /// Blind or attended.
        kind: TransferKind,
        /// Where to.
        target: Party,
    },
    /// The transfer target is ringing.
    #[serde(rename = "transfer.target_alerting")]
    TransferTargetAlerting {
        /// The call.
        call_uri: CallUri,
        /// The target.
        target: Party,
    },
    /// The transfer target answered.
    #[serde(rename = "transfer.target_answered")]
    TransferTargetAnswered {
        /// The call.
        call_uri: CallUri,
        /// The target.
        target: Party,
    },
    /// The caller is connected to the target: the indication that makes the second agent's
    /// interface pop, carrying the same call URI.
    #[serde(rename = "transfer.connected")]
    TransferConnected {
        /// The call.
        call_uri: CallUri,
        /// The party now with the caller.
        target: Party,
    },
    /// The transfer failed; the caller is back with the first agent (or the queue).
    #[serde(rename = "transfer.failed")]
    TransferFailed {
        /// The call.
        call_uri: CallUri,
        /// Why.
        reason: FailureReason,
        /// Where the caller is now.
        caller_returned_to: Party,
    },
    /// The transfer was cancelled (by the agent, or because the caller hung up).
    #[serde(rename = "transfer.cancelled")]
    TransferCancelled {
        /// The call.
        call_uri: CallUri,
        /// Who or what cancelled it.
        by: String,
    },
    /// The overall transfer deadline passed; the caller is back with the first agent.
    #[serde(rename = "transfer.timed_out")]
    TransferTimedOut {
        /// The call.
        call_uri: CallUri,
        /// Where the caller is now.
        caller_returned_to: Party,
    },
    /// The call ended.
    #[serde(rename = "call.ended")]
    CallEnded {
        /// The call.
        call_uri: CallUri,
        /// Why (e.g. `caller_hangup`, `normal_clearing`).
        cause: String,
    },
}

impl Event {
    /// The URI of the call the event is about (None for agent events).
    pub fn call_uri(&self) -> Option<&CallUri> {
        Some(match self {
            Event::AgentPresence { .. } => return None,
            Event::CallCreated { call_uri, .. }
            | Event::CallOffered { call_uri, .. }
            | Event::CallOfferWithdrawn { call_uri, .. }
            | Event::CallQueued { call_uri, .. }
            | Event::CallResumed { call_uri }
            | Event::CallMuted { call_uri, .. }
            | Event::CallAnswered { call_uri, .. }
            | Event::CallHeld { call_uri }
            | Event::TransferRequested { call_uri, .. }
            | Event::TransferTargetAlerting { call_uri, .. }
            | Event::TransferTargetAnswered { call_uri, .. }
            | Event::TransferConnected { call_uri, .. }
            | Event::TransferFailed { call_uri, .. }
            | Event::TransferCancelled { call_uri, .. }
            | Event::TransferTimedOut { call_uri, .. }
            | Event::CallEnded { call_uri, .. } => call_uri,
        })
    }

    /// The event's type name as clients see it (`transfer.connected`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CallCreated { .. } => "call.created",
            Event::CallOffered { .. } => "call.offered",
            Event::CallOfferWithdrawn { .. } => "call.offer_withdrawn",
            Event::CallQueued { .. } => "call.queued",
            Event::CallResumed { .. } => "call.resumed",
            Event::CallMuted { .. } => "call.muted",
            Event::AgentPresence { .. } => "agent.presence",
            Event::CallAnswered { .. } => "call.answered",
            Event::CallHeld { .. } => "call.held",
            Event::TransferRequested { .. } => "transfer.requested",
            Event::TransferTargetAlerting { .. } => "transfer.target_alerting",
            Event::TransferTargetAnswered { .. } => "transfer.target_answered",
            Event::TransferConnected { .. } => "transfer.connected",
            Event::TransferFailed { .. } => "transfer.failed",
            Event::TransferCancelled { .. } => "transfer.cancelled",
            Event::TransferTimedOut { .. } => "transfer.timed_out",
            Event::CallEnded { .. } => "call.ended",
        }
    }
}

/// Who may see an event besides admins and supervisors (who see everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Audience {
    /// Every authenticated client (agent presence).
    #[default]
    Everyone,
    /// These agents only (the agents a call was offered to or held by).
    Agents(Vec<String>),
}

impl Audience {
    /// True if `agent` may see the event.
    pub fn includes(&self, agent: &str) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::Agents(a) => a.iter().any(|x| x == agent),
        }
    }
}

/// An event with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sequenced {
    /// Position in the log, starting at 1, strictly increasing.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Who may see it (not serialised).
    #[serde(skip)]
    pub audience: Audience,
}

/// Why a resume request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The events after `after` are no longer all in the log.
    #[error(
        "events after {after} are no longer kept (oldest kept is {oldest}): list the calls again and resume from {latest}"
    )]
    TooOld {
        /// What the client asked for.
        after: u64,
        /// The oldest sequence number still kept.
        oldest: u64,
        /// The newest sequence number.
        latest: u64,
    },
    /// The client claims to have seen events that were never published.
    #[error("sequence {after} is in the future (latest is {latest})")]
    FromTheFuture {
        /// What the client asked for.
        after: u64,
        /// The newest sequence number.
        latest: u64,
    },
}

/// A bounded, append-only log of events with sequence numbers.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Sequenced>,
    capacity: usize,
    next_seq: u64,
}

impl EventLog {
    /// A log keeping the last `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        EventLog {
            events: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Appends an event everyone may see; returns its sequence number.
    pub fn publish(&mut self, event: Event) -> u64 {
        self.publish_to(event, Audience::Everyone).seq
    }

    /// Appends an event for `audience`; returns it as logged.
    pub fn publish_to(&mut self, event: Event, audience: Audience) -> &Sequenced {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(Sequenced {
            seq,
            event,
            audience,
        });
        // Just pushed, so the log is not empty.
        &self.events[self.events.len() - 1]
    }

    /// The newest sequence number (0 before the first event).
    pub fn latest(&self) -> u64 {
        self.next_seq - 1
    }

    /// Every event after `after`, in order: exactly what a client that saw `after` missed.
    pub fn since(&self, after: u64) -> Result<Vec<Sequenced>, ResumeError> {
        let latest = self.latest();
        if after > latest {
            return Err(ResumeError::FromTheFuture { after, latest });
        }
        let oldest = self.events.front().map_or(self.next_seq, |e| e.seq);
        if after + 1 < oldest {
            return Err(ResumeError::TooOld {
                after,
                oldest,
                latest,
            });
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(uri: &CallUri) -> Event {
        Event::CallEnded {
            call_uri: uri.clone(),
            cause: "normal_clearing".into(),
        }
    }

    #[test]
    fn a_reconnecting_client_gets_exactly_what_it_missed() {
        let mut log = EventLog::new(100);
        let uri = CallUri::new();
        for _ in 0..10 {
            log.publish(ended(&uri));
        }
        let missed = log.since(7).unwrap();
        assert_eq!(
            missed.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert!(log.since(10).unwrap().is_empty());
        assert_eq!(log.since(0).unwrap().len(), 10);
        assert!(matches!(
            log.since(11),
            Err(ResumeError::FromTheFuture { .. })
        ));
    }

    #[test]
    fn aged_out_events_are_reported_not_silently_skipped() {
        let mut log = EventLog::new(3);
        let uri = CallUri::new();
        for _ in 0..5 {
            log.publish(ended(&uri));
        }
        assert_eq!(log.since(2).unwrap().len(), 3);
        let e = log.since(1).unwrap_err();
        assert_eq!(
            e,
            ResumeError::TooOld {
                after: 1,
                oldest: 3,
                latest: 5
            }
        );
        assert!(e.to_string().contains("resume from 5"));
    }

    #[test]
    fn events_serialise_with_type_seq_and_uri() {
        let uri = CallUri::new();
        let s = Sequenced {
            audience: Audience::Everyone,
            seq: 42,
            event: Event::TransferConnected {
                call_uri: uri.clone(),
                target: Party::Agent("bob".into()),
            },
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "transfer.connected");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["call_uri"], uri.to_string());
        assert_eq!(s.event.kind(), "transfer.connected");
        assert_eq!(s.event.call_uri(), Some(&uri));
    }
}
