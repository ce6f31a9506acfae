//! The transfer executor on virtual time: every outcome and race the contact center meets,
//! applied to a model of the call's audio wiring that checks, after every step, that a present
//! caller always hears someone or a tone, and at the end that no target leg is left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gateway::control::events::FailureReason;
use gateway::control::transfer::{CallerAudio, Timeouts};
use gateway::control::{
    CallUri, Command, Event, Input, Party, Tone, TransferError, TransferKind, TransferState,
    TransferTable,
};
use proptest::prelude::*;

/// What the call model would hold, driven only by the executor's commands.
#[derive(Debug)]
struct World {
    uri: CallUri,
    caller_present: bool,
    caller_hears: Hears,
    first_agent_leg: bool,
    target_leg: bool,
    target_bridged_to: Option<&'static str>,
    events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq)]
enum Hears {
    FirstAgent,
    Target,
    Tone(Tone),
    Queue(String),
}

impl World {
    fn new(uri: &CallUri) -> Self {
        World {
            uri: uri.clone(),
            caller_present: true,
            caller_hears: Hears::FirstAgent,
            first_agent_leg: true,
            target_leg: false,
            target_bridged_to: None,
            events: Vec::new(),
        }
    }

    fn apply(&mut self, commands: Vec<Command>) {
        for c in commands {
            match c {
                Command::DialTarget(_) => self.target_leg = true,
                Command::PlayToCaller(t) => self.caller_hears = Hears::Tone(t),
                Command::BridgeFirstAgentToTarget => {
                    assert!(
                        self.first_agent_leg && self.target_leg,
                        "consult without both legs"
                    );
                    self.target_bridged_to = Some("agent");
                }
                Command::BridgeCallerToTarget => {
                    assert!(self.target_leg, "bridging to a target leg that is gone");
                    self.caller_hears = Hears::Target;
                    self.target_bridged_to = Some("caller");
                }
                Command::BridgeCallerToFirstAgent => {
                    assert!(
                        self.first_agent_leg,
                        "returning the caller to an agent who left"
                    );
                    self.caller_hears = Hears::FirstAgent;
                }
                Command::RequeueCaller(q) => self.caller_hears = Hears::Queue(q),
                Command::HangUpTarget => {
                    self.target_leg = false;
                    self.target_bridged_to = None;
                }
                Command::ReleaseFirstAgent => self.first_agent_leg = false,
                Command::Publish(e) => {
                    assert_eq!(
                        e.call_uri(),
                        Some(&self.uri),
                        "every event carries the call URI"
                    );
                    self.events.push(e);
                }
            }
        }
        if self.caller_present {
            // Never silence: the caller hears a party that is really there, or a tone.
            match &self.caller_hears {
                Hears::FirstAgent => assert!(self.first_agent_leg, "caller hears an absent agent"),
                Hears::Target => assert!(self.target_leg, "caller hears an absent target"),
                Hears::Tone(_) | Hears::Queue(_) => {}
            }
        }
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(Event::kind).collect()
    }

    fn terminal_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind(),
                    "transfer.connected"
                        | "transfer.failed"
                        | "transfer.cancelled"
                        | "transfer.timed_out"
                )
            })
            .count()
    }
}

fn setup(kind: TransferKind) -> (TransferTable, CallUri, World, Instant) {
    let mut table = TransferTable::new(Timeouts::default());
    let uri = CallUri::new();
    let mut world = World::new(&uri);
    let t0 = Instant::now();
    let out = table
        .request(uri.clone(), kind, Party::Agent("bob".into()), "support", t0)
        .unwrap();
    world.apply(out);
    (table, uri, world, t0)
}

fn feed(table: &mut TransferTable, world: &mut World, uri: &CallUri, input: Input, at: Instant) {
    // The model follows what the input says happened to the legs.
    if matches!(input, Input::TargetFailed(_) | Input::TargetHungUp) {
        world.target_leg = false;
    }
    let out = table.handle(uri, input, at).unwrap();
    world.apply(out);
}

#[test]
fn blind_transfer_rings_then_connects_and_pops_with_the_same_uri() {
    let (mut table, uri, mut w, t0) = setup(TransferKind::Blind);
    assert_eq!(
        w.caller_hears,
        Hears::Tone(Tone::Ringback),
        "caller hears ringback at once"
    );
    assert!(w.first_agent_leg, "agent kept until the outcome is known");
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::TargetAlerting,
        t0 + Duration::from_millis(30),
    );
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::TargetAnswered,
        t0 + Duration::from_secs(3),
    );
    assert_eq!(w.caller_hears, Hears::Target);
    assert!(!w.first_agent_leg, "first agent released once connected");
    assert_eq!(
        w.kinds(),
        [
            "transfer.requested",
            "transfer.target_alerting",
            "transfer.target_answered",
            "transfer.connected"
        ]
    );
    assert!(table.is_empty(), "finished transfers leave the table");
}

#[test]
fn attended_transfer_consults_with_caller_on_hold_then_completes() {
    let (mut table, uri, mut w, t0) = setup(TransferKind::Attended);
    assert_eq!(w.caller_hears, Hears::Tone(Tone::Hold));
    feed(&mut table, &mut w, &uri, Input::TargetAlerting, t0);
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::TargetAnswered,
        t0 + Duration::from_secs(2),
    );
    assert_eq!(
        w.target_bridged_to,
        Some("agent"),
        "agent talks to the target"
    );
    assert_eq!(
        w.caller_hears,
        Hears::Tone(Tone::Hold),
        "caller still on hold"
    );
    assert_eq!(table.get(&uri).unwrap().state(), &TransferState::Consulting);
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::Complete,
        t0 + Duration::from_secs(40),
    );
    assert_eq!(w.caller_hears, Hears::Target);
    assert!(!w.first_agent_leg);
    assert_eq!(w.kinds().last(), Some(&"transfer.connected"));
}

#[test]
fn busy_target_returns_the_caller_to_the_first_agent_with_the_reason() {
    for kind in [TransferKind::Blind, TransferKind::Attended] {
        let (mut table, uri, mut w, t0) = setup(kind);
        feed(
            &mut table,
            &mut w,
            &uri,
            Input::TargetFailed(FailureReason::Busy),
            t0 + Duration::from_millis(80),
        );
        assert_eq!(w.caller_hears, Hears::FirstAgent, "{kind:?}");
        match w.events.last().unwrap() {
            Event::TransferFailed {
                reason,
                caller_returned_to,
                ..
            } => {
                assert_eq!(reason, &FailureReason::Busy);
                assert_eq!(caller_returned_to, &Party::Agent("first_agent".into()));
            }
            e => panic!("expected transfer.failed, got {e:?}"),
        }
        assert!(!w.target_leg);
        assert!(table.is_empty());
    }
}

#[test]
fn no_answer_fails_exactly_at_the_ring_timeout() {
    let (mut table, uri, mut w, t0) = setup(TransferKind::Blind);
    let alert = t0 + Duration::from_millis(200);
    feed(&mut table, &mut w, &uri, Input::TargetAlerting, alert);
    assert_eq!(table.poll_timeout(), Some(alert + Duration::from_secs(30)));
    assert!(
        table
            .handle_timeout(alert + Duration::from_millis(29_999))
            .is_empty()
    );
    let fired = table.handle_timeout(alert + Duration::from_secs(30));
    assert_eq!(fired.len(), 1);
    w.apply(fired.into_iter().next().unwrap().1);
    assert!(!w.target_leg, "the ringing target leg is released");
    assert_eq!(w.caller_hears, Hears::FirstAgent);
    assert!(matches!(
        w.events.last(),
        Some(Event::TransferFailed {
            reason: FailureReason::NoAnswer,
            ..
        })
    ));
    assert!(table.is_empty() && table.poll_timeout().is_none());
}

#[test]
fn a_target_that_never_rings_times_out_and_the_caller_goes_back() {
    // E.g. a REFER accepted with 202 and then no NOTIFY, or a SIP target that never sends 180.
    let (mut table, uri, mut w, t0) = setup(TransferKind::Blind);
    let fired = table.handle_timeout(t0 + Duration::from_secs(10));
    w.apply(fired.into_iter().flat_map(|(_, c)| c).collect());
    assert_eq!(w.kinds().last(), Some(&"transfer.timed_out"));
    assert!(!w.target_leg);
    assert_eq!(w.caller_hears, Hears::FirstAgent);
    let _ = uri;
}

#[test]
fn caller_hanging_up_mid_transfer_releases_the_target() {
    let (mut table, uri, mut w, t0) = setup(TransferKind::Blind);
    feed(&mut table, &mut w, &uri, Input::TargetAlerting, t0);
    w.caller_present = false;
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::CallerHungUp,
        t0 + Duration::from_secs(1),
    );
    assert!(!w.target_leg);
    assert!(
        matches!(w.events.last(), Some(Event::TransferCancelled { by, .. }) if by == "caller_hangup")
    );
    assert!(table.is_empty());
}

#[test]
fn a_target_answering_after_the_cancel_is_hung_up() {
    let mut table = TransferTable::new(Timeouts::default());
    let uri = CallUri::new();
    let t0 = Instant::now();
    let (mut t, out) = gateway::control::Transfer::start(
        uri.clone(),
        TransferKind::Attended,
        Party::SipUri("sip:bob@pbx".into()),
        "support",
        Timeouts::default(),
        t0,
    );
    let mut w = World::new(&uri);
    w.apply(out);
    w.apply(t.handle(Input::TargetAlerting, t0).unwrap());
    w.apply(
        t.handle(Input::Cancel, t0 + Duration::from_secs(2))
            .unwrap(),
    );
    assert_eq!(w.caller_hears, Hears::FirstAgent);
    assert!(!w.target_leg);
    // The call model reports a 200 OK that crossed the CANCEL: the leg is re-opened...
    w.target_leg = true;
    let late = t
        .handle(Input::TargetAnswered, t0 + Duration::from_millis(2001))
        .unwrap();
    // ... and the executor has it released, without touching the caller.
    assert_eq!(late, vec![Command::HangUpTarget]);
    w.apply(late);
    assert_eq!(w.caller_hears, Hears::FirstAgent);
    assert_eq!(w.terminal_events(), 1);
    assert!(table.is_empty());
    let _ = &mut table;
}

#[test]
fn first_agent_hanging_up_during_consult_completes_the_transfer() {
    let (mut table, uri, mut w, t0) = setup(TransferKind::Attended);
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::TargetAnswered,
        t0 + Duration::from_secs(1),
    );
    w.first_agent_leg = false;
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::FirstAgentHungUp,
        t0 + Duration::from_secs(5),
    );
    assert_eq!(w.caller_hears, Hears::Target);
    assert_eq!(w.kinds().last(), Some(&"transfer.connected"));
}

#[test]
fn first_agent_leaving_before_the_answer_makes_it_blind_and_a_failure_requeues() {
    let (mut table, uri, mut w, t0) = setup(TransferKind::Attended);
    feed(&mut table, &mut w, &uri, Input::TargetAlerting, t0);
    w.first_agent_leg = false;
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::FirstAgentHungUp,
        t0 + Duration::from_secs(1),
    );
    assert_eq!(
        w.caller_hears,
        Hears::Tone(Tone::Ringback),
        "hold tone becomes ringback"
    );
    feed(
        &mut table,
        &mut w,
        &uri,
        Input::TargetFailed(FailureReason::Rejected("603 Decline".into())),
        t0 + Duration::from_secs(2),
    );
    assert_eq!(
        w.caller_hears,
        Hears::Queue("support".into()),
        "agent gone: back to the queue"
    );
    assert!(matches!(
        w.events.last(),
        Some(Event::TransferFailed { caller_returned_to: Party::Queue(q), .. }) if q == "support"
    ));
}

#[test]
fn a_second_transfer_of_the_same_call_gets_409_and_complete_on_blind_is_refused() {
    let (mut table, uri, _w, t0) = setup(TransferKind::Blind);
    let e = table
        .request(
            uri.clone(),
            TransferKind::Blind,
            Party::Queue("sales".into()),
            "support",
            t0,
        )
        .unwrap_err();
    assert_eq!(e, TransferError::AlreadyInProgress(uri.clone()));
    assert!(e.to_string().contains("already in progress"));
    assert_eq!(
        table.handle(&uri, Input::Complete, t0).unwrap_err(),
        TransferError::NotAttended(uri.clone())
    );
    let other = CallUri::new();
    assert_eq!(
        table.handle(&other, Input::Cancel, t0).unwrap_err(),
        TransferError::NotFound(other)
    );
    assert_eq!(table.len(), 1);
}

fn any_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::TargetAlerting),
        Just(Input::TargetAnswered),
        Just(Input::TargetFailed(FailureReason::Busy)),
        Just(Input::TargetFailed(FailureReason::Rejected("500".into()))),
        Just(Input::TargetHungUp),
        Just(Input::CallerHungUp),
        Just(Input::FirstAgentHungUp),
        Just(Input::Complete),
        Just(Input::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any order of events, any timing: the caller is never left in silence, at most one
    /// outcome is published, a finished transfer leaves no target leg unless it is with the
    /// caller (or in a consultation the caller abandoned), and the table ends empty.
    #[test]
    fn no_sequence_of_events_loses_the_caller(
        attended in any::<bool>(),
        steps in prop::collection::vec((any_input(), 0u64..40_000), 0..12),
    ) {
        let kind = if attended { TransferKind::Attended } else { TransferKind::Blind };
        let (mut table, uri, mut w, t0) = setup(kind);
        let mut now = t0;
        for (input, dt) in steps {
            now += Duration::from_millis(dt);
            for (_, cmds) in table.handle_timeout(now) {
                w.apply(cmds);
            }
            if table.get(&uri).is_none() {
                break;
            }
            // Keep the model consistent with what the input claims happened.
            match &input {
                Input::CallerHungUp => w.caller_present = false,
                Input::FirstAgentHungUp => w.first_agent_leg = false,
                Input::TargetHungUp | Input::TargetFailed(_) => {
                    w.target_leg = false;
                    if w.caller_hears == Hears::Target { w.caller_hears = Hears::Tone(Tone::Hold); }
                }
                _ => {}
            }
            match table.handle(&uri, input, now) {
                Ok(cmds) => w.apply(cmds),
                // Blind from the start, or turned blind when the first agent left.
                Err(TransferError::NotAttended(_)) => {
                    prop_assert!(kind == TransferKind::Blind || !w.first_agent_leg)
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            prop_assert!(w.terminal_events() <= 1);
        }
        // Drive the clock until every timer has fired.
        while let Some(t) = table.poll_timeout() {
            for (_, cmds) in table.handle_timeout(t) {
                w.apply(cmds);
            }
        }
        prop_assert!(table.is_empty());
        prop_assert_eq!(w.terminal_events(), 1);
        let connected = w.kinds().contains(&"transfer.connected");
        let abandoned_consult = w.kinds().contains(&"transfer.cancelled") && w.target_bridged_to == Some("agent");
        if !connected && !abandoned_consult {
            prop_assert!(!w.target_leg, "target leg left behind: {:?}", w.kinds());
        }
        if w.caller_present && !connected {
            prop_assert!(w.caller_hears != Hears::Target);
        }
        let _ = CallerAudio::Gone;
    }
}
