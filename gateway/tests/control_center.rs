//! The contact center (ACD) on virtual time: idle ordering, skills, ring-no-answer to the next
//! agent, overflow, logout while ringing, wrap-up — and the control core that joins it to the
//! transfer executor, driven without any IO.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gateway::control::center::{AcdOutput, ContactCenter, Presence, Purpose, WithdrawReason};
use gateway::control::config::{AgentConfig, Comfort, ControlConfig, Endpoint, QueueConfig};
use gateway::control::core::{
    CallCommand, CallEvent, ControlCore, ControlError, Effect, LegId, Principal,
};
use gateway::control::{CallUri, Event, LegKind, Party, TransferKind};

fn agent(id: &str, skills: &[&str]) -> AgentConfig {
    AgentConfig {
        id: id.into(),
        name: id.to_uppercase(),
        skills: skills.iter().map(|s| s.to_string()).collect(),
        endpoints: vec![Endpoint::Browser],
        token: format!("{id}-token-123"),
    }
}

/// A real music file (queues' music is read and checked when a queue is configured): one
/// second of 440 Hz, written once per test process (atomically: tests run in parallel).
fn hold_wav() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("spanbridge-hold-{}.wav", std::process::id()));
    if !p.exists() {
        let samples: Vec<i16> = (0..8000)
            .map(|i| {
                (8000.0 * (std::f64::consts::TAU * 440.0 * f64::from(i) / 8000.0).sin()) as i16
            })
            .collect();
        let tmp = p.with_extension(format!("{:?}.tmp", std::thread::current().id()));
        std::fs::write(&tmp, codecs::wav::write_pcm16(8000, &samples)).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }
    p
}

fn queue(name: &str, skill: Option<&str>) -> QueueConfig {
    QueueConfig {
        name: name.into(),
        skill: skill.map(str::to_string),
        ring_timeout_ms: 10_000,
        max_wait_ms: 60_000,
        overflow: None,
        wrap_up_ms: Some(5_000),
        comfort: Comfort::Music { file: hold_wav() },
        away_on_no_answer: true,
    }
}

fn offers(out: &[AcdOutput]) -> Vec<(CallUri, String)> {
    out.iter()
        .filter_map(|o| match o {
            AcdOutput::Offer { call, agent, .. } => Some((call.clone(), agent.clone())),
            _ => None,
        })
        .collect()
}

fn presence(c: &ContactCenter, a: &str) -> Presence {
    c.agent(a).unwrap().presence
}

fn center(agents: Vec<AgentConfig>, queues: Vec<QueueConfig>) -> ContactCenter {
    ContactCenter::new(agents, queues, Duration::from_secs(3))
}

#[test]
fn the_longest_idle_available_agent_gets_the_call() {
    let t0 = Instant::now();
    let mut c = center(
        vec![agent("a", &["s"]), agent("b", &["s"]), agent("c", &["s"])],
        vec![queue("q", Some("s"))],
    );
    // Log in b first, then c, then a: b has been idle longest.
    c.login("b", None, t0).unwrap();
    c.login("c", None, t0 + Duration::from_secs(1)).unwrap();
    c.login("a", None, t0 + Duration::from_secs(2)).unwrap();
    let call1 = CallUri::new();
    let out = c
        .enqueue(
            &call1,
            "q",
            Purpose::Caller,
            true,
            t0 + Duration::from_secs(3),
        )
        .unwrap();
    assert!(matches!(
        &out[0],
        AcdOutput::Queued {
            position: 1,
            comfort: Comfort::Music { .. },
            ..
        }
    ));
    assert_eq!(offers(&out), vec![(call1.clone(), "b".to_string())]);
    assert_eq!(presence(&c, "b"), Presence::Ringing);
    // The next call goes to c, the next-longest idle.
    let call2 = CallUri::new();
    let out = c
        .enqueue(
            &call2,
            "q",
            Purpose::Caller,
            true,
            t0 + Duration::from_secs(4),
        )
        .unwrap();
    assert_eq!(offers(&out), vec![(call2.clone(), "c".to_string())]);
    // b answers, finishes, wraps up; a (idle since t0+2) now precedes b.
    c.answered("b", &call1, t0 + Duration::from_secs(5))
        .unwrap();
    assert_eq!(presence(&c, "b"), Presence::Busy);
    let out = c.release("b", &call1, Some("q"), t0 + Duration::from_secs(6));
    assert!(out.contains(&AcdOutput::Presence {
        agent: "b".into(),
        presence: Presence::WrapUp
    }));
    let call3 = CallUri::new();
    let out = c
        .enqueue(
            &call3,
            "q",
            Purpose::Caller,
            true,
            t0 + Duration::from_secs(7),
        )
        .unwrap();
    assert_eq!(offers(&out), vec![(call3, "a".to_string())]);
}

#[test]
fn only_agents_with_the_skill_are_offered() {
    let t0 = Instant::now();
    let mut c = center(
        vec![agent("sales1", &["sales"]), agent("tech1", &["support"])],
        vec![queue("support", Some("support")), queue("any", None)],
    );
    c.login("sales1", None, t0).unwrap();
    let call = CallUri::new();
    let out = c
        .enqueue(&call, "support", Purpose::Caller, true, t0)
        .unwrap();
    assert!(offers(&out).is_empty(), "sales1 lacks the skill: {out:?}");
    assert_eq!(c.position(&call).unwrap().1, 1);
    // The skilled agent logs in later and gets it at once.
    let out = c.login("tech1", None, t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(offers(&out), vec![(call, "tech1".to_string())]);
    // A queue without a skill takes anyone.
    let call2 = CallUri::new();
    let out = c
        .enqueue(
            &call2,
            "any",
            Purpose::Caller,
            true,
            t0 + Duration::from_secs(2),
        )
        .unwrap();
    assert_eq!(offers(&out), vec![(call2, "sales1".to_string())]);
}

#[test]
fn ring_no_answer_goes_to_the_next_agent_and_sets_the_first_away() {
    let t0 = Instant::now();
    let mut c = center(
        vec![agent("a", &["s"]), agent("b", &["s"])],
        vec![queue("q", Some("s"))],
    );
    c.login("a", None, t0).unwrap();
    c.login("b", None, t0 + Duration::from_millis(1)).unwrap();
    let call = CallUri::new();
    let out = c
        .enqueue(
            &call,
            "q",
            Purpose::Caller,
            true,
            t0 + Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(offers(&out), vec![(call.clone(), "a".to_string())]);
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(
        deadline,
        t0 + Duration::from_secs(11),
        "ring timeout of 10 s"
    );
    assert!(
        c.handle_timeout(deadline - Duration::from_millis(1))
            .is_empty()
    );
    let out = c.handle_timeout(deadline);
    assert!(out.contains(&AcdOutput::Withdraw {
        call: call.clone(),
        agent: "a".into(),
        reason: WithdrawReason::NoAnswer
    }));
    assert_eq!(offers(&out), vec![(call.clone(), "b".to_string())]);
    assert_eq!(presence(&c, "a"), Presence::Away);
    assert_eq!(
        c.agent("a").unwrap().away_reason.as_deref(),
        Some("ring_no_answer")
    );
    // b lets it ring out too: nobody is left, the call keeps waiting (never dropped).
    let out = c.handle_timeout(c.poll_timeout().unwrap());
    assert!(offers(&out).is_empty());
    assert!(c.is_waiting(&call));
    // a comes back: gets it again.
    let out = c
        .set_presence("a", Presence::Available, None, t0 + Duration::from_secs(30))
        .unwrap();
    assert_eq!(offers(&out), vec![(call, "a".to_string())]);
}

#[test]
fn a_declined_offer_goes_to_the_next_agent() {
    let t0 = Instant::now();
    let mut c = center(
        vec![agent("a", &[]), agent("b", &[])],
        vec![queue("q", None)],
    );
    c.login("a", None, t0).unwrap();
    c.login("b", None, t0 + Duration::from_millis(1)).unwrap();
    let call = CallUri::new();
    c.enqueue(&call, "q", Purpose::Caller, true, t0).unwrap();
    let out = c.declined("a", &call, t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(offers(&out), vec![(call.clone(), "b".to_string())]);
    assert_eq!(
        presence(&c, "a"),
        Presence::Available,
        "declining is not ringing out"
    );
    assert!(
        c.declined("a", &call, t0).is_err(),
        "not offered to a any more"
    );
}

#[test]
fn overflow_after_the_maximum_wait() {
    let t0 = Instant::now();
    let mut q = queue("q", Some("s"));
    q.max_wait_ms = 30_000;
    q.overflow = Some(Party::SipUri("sip:voicemail@pbx.example".into()));
    let mut c = center(vec![agent("a", &["s"])], vec![q]);
    let call = CallUri::new();
    c.enqueue(&call, "q", Purpose::Caller, true, t0).unwrap();
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    let out = c.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(
        out,
        vec![AcdOutput::Overflow {
            call: call.clone(),
            queue: "q".into(),
            to: Party::SipUri("sip:voicemail@pbx.example".into())
        }]
    );
    assert!(!c.is_waiting(&call));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn logout_while_ringing_hands_the_call_to_the_next_agent() {
    let t0 = Instant::now();
    let mut c = center(
        vec![agent("a", &[]), agent("b", &[])],
        vec![queue("q", None)],
    );
    c.login("a", None, t0).unwrap();
    c.login("b", None, t0 + Duration::from_millis(1)).unwrap();
    let call = CallUri::new();
    c.enqueue(&call, "q", Purpose::Caller, true, t0).unwrap();
    assert_eq!(c.agent("a").unwrap().call.as_ref(), Some(&call));
    let out = c.logout("a", t0 + Duration::from_secs(1)).unwrap();
    assert!(out.contains(&AcdOutput::Withdraw {
        call: call.clone(),
        agent: "a".into(),
        reason: WithdrawReason::LoggedOut
    }));
    assert_eq!(offers(&out), vec![(call.clone(), "b".to_string())]);
    assert_eq!(presence(&c, "a"), Presence::Offline);
    // b answers; b cannot log out on a call.
    c.answered("b", &call, t0 + Duration::from_secs(2)).unwrap();
    assert!(c.logout("b", t0).is_err());
}

#[test]
fn wrap_up_ends_on_its_timer_or_early() {
    let t0 = Instant::now();
    let mut c = center(vec![agent("a", &[])], vec![queue("q", None)]);
    c.login("a", None, t0).unwrap();
    let call = CallUri::new();
    c.enqueue(&call, "q", Purpose::Caller, true, t0).unwrap();
    c.answered("a", &call, t0).unwrap();
    c.release("a", &call, Some("q"), t0 + Duration::from_secs(60));
    assert_eq!(presence(&c, "a"), Presence::WrapUp);
    // A call arriving during wrap-up waits.
    let call2 = CallUri::new();
    let out = c
        .enqueue(
            &call2,
            "q",
            Purpose::Caller,
            true,
            t0 + Duration::from_secs(61),
        )
        .unwrap();
    assert!(offers(&out).is_empty());
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(65)));
    let out = c.handle_timeout(t0 + Duration::from_secs(65));
    assert!(out.contains(&AcdOutput::Presence {
        agent: "a".into(),
        presence: Presence::Available
    }));
    assert_eq!(offers(&out), vec![(call2.clone(), "a".to_string())]);
    c.answered("a", &call2, t0 + Duration::from_secs(66))
        .unwrap();
    c.release("a", &call2, Some("q"), t0 + Duration::from_secs(70));
    // Ending wrap-up early.
    c.set_presence("a", Presence::Available, None, t0 + Duration::from_secs(71))
        .unwrap();
    assert_eq!(presence(&c, "a"), Presence::Available);
    assert_eq!(c.poll_timeout(), None, "no wrap-up timer left");
}

#[test]
fn a_caller_who_hangs_up_while_ringing_frees_the_agent_without_losing_its_place() {
    let t0 = Instant::now();
    let mut c = center(
        vec![agent("a", &[]), agent("b", &[])],
        vec![queue("q", None)],
    );
    c.login("a", None, t0).unwrap();
    c.login("b", None, t0 + Duration::from_secs(1)).unwrap();
    let call = CallUri::new();
    c.enqueue(
        &call,
        "q",
        Purpose::Caller,
        true,
        t0 + Duration::from_secs(2),
    )
    .unwrap();
    let out = c.call_gone(&call, t0 + Duration::from_secs(3));
    assert!(out.contains(&AcdOutput::Withdraw {
        call: call.clone(),
        agent: "a".into(),
        reason: WithdrawReason::CallGone
    }));
    assert_eq!(presence(&c, "a"), Presence::Available);
    let next = CallUri::new();
    let out = c
        .enqueue(
            &next,
            "q",
            Purpose::Caller,
            true,
            t0 + Duration::from_secs(4),
        )
        .unwrap();
    assert_eq!(
        offers(&out),
        vec![(next, "a".to_string())],
        "a kept its place"
    );
    assert!(c.poll_timeout().is_some(), "a's ring timeout");
}

// ---- the control core, sans IO ----

fn core_config() -> ControlConfig {
    let mut cfg = ControlConfig {
        agents: vec![agent("alice", &["s"]), agent("bob", &["s"])],
        queues: vec![queue("support", Some("s"))],
        ..ControlConfig::default()
    };
    cfg.access.admin_tokens = vec!["admin-token-123".into()];
    cfg.validate().unwrap();
    cfg
}

fn commands(effects: &[Effect]) -> Vec<&CallCommand> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Call(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn events(effects: &[Effect]) -> Vec<&Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(ev, _) => Some(ev),
            _ => None,
        })
        .collect()
}

#[test]
fn core_queue_answer_blind_transfer_to_an_agent_and_hang_up_leaves_nothing_behind() {
    let t0 = Instant::now();
    let mut core = ControlCore::new(core_config());
    let alice = Principal::Agent("alice".into());
    let bob = Principal::Agent("bob".into());
    core.login(&alice, "alice", None, t0).unwrap();
    core.login(&bob, "bob", None, t0 + Duration::from_secs(1))
        .unwrap();
    let call = CallUri::new();
    let caller_leg = LegId::new();
    let fx = core
        .incoming(
            call.clone(),
            caller_leg,
            LegKind::Sip,
            "+15551234".into(),
            Party::Queue("support".into()),
            t0,
        )
        .unwrap();
    let kinds: Vec<&str> = events(&fx).iter().map(|e| e.kind()).collect();
    assert!(
        kinds.contains(&"call.created")
            && kinds.contains(&"call.queued")
            && kinds.contains(&"call.offered"),
        "{kinds:?}"
    );
    // Bob may not act on a call offered to Alice.
    assert!(matches!(
        core.prepare_browser_answer(&bob, &call),
        Err(ControlError::Forbidden(_))
    ));
    let leg_a = core.prepare_browser_answer(&alice, &call).unwrap();
    let fx = core
        .finish_browser_answer(&alice, &call, leg_a, t0)
        .unwrap();
    assert!(commands(&fx).contains(&&CallCommand::Bridge {
        call: call.clone(),
        a: caller_leg,
        b: leg_a
    }));
    // Blind transfer to bob: bob's page pops with the same URI; bob answers; connected.
    let fx = core
        .transfer(
            &alice,
            &call,
            Party::Agent("bob".into()),
            TransferKind::Blind,
            t0,
        )
        .unwrap();
    let offered: Vec<_> = events(&fx)
        .into_iter()
        .filter_map(|e| match e {
            Event::CallOffered {
                call_uri,
                agent,
                transfer_history,
                ..
            } => Some((call_uri.clone(), agent.clone(), transfer_history.len())),
            _ => None,
        })
        .collect();
    assert_eq!(offered, vec![(call.clone(), "bob".to_string(), 1)]);
    assert!(matches!(
        core.transfer(
            &alice,
            &call,
            Party::Queue("support".into()),
            TransferKind::Blind,
            t0
        ),
        Err(ControlError::Conflict(_))
    ));
    let leg_b = core.prepare_browser_answer(&bob, &call).unwrap();
    let fx = core.finish_browser_answer(&bob, &call, leg_b, t0).unwrap();
    let cmds = commands(&fx);
    assert!(
        cmds.contains(&&CallCommand::Bridge {
            call: call.clone(),
            a: caller_leg,
            b: leg_b
        }),
        "{cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|c| matches!(c, CallCommand::HangUp { leg, .. } if *leg == leg_a))
    );
    assert!(
        events(&fx)
            .iter()
            .any(|e| matches!(e, Event::TransferConnected { call_uri, .. } if *call_uri == call))
    );
    let v = core.get_call(&bob, &call, t0).unwrap();
    assert_eq!(v.agent.as_deref(), Some("bob"));
    assert_eq!(v.transfer_history[0].outcome, "connected");
    assert!(matches!(
        core.get_call(&alice, &call, t0),
        Err(ControlError::Forbidden(_))
    ));
    assert_eq!(
        core.center().agent("alice").unwrap().presence,
        Presence::WrapUp
    );
    // The caller hangs up.
    let fx = core.call_event(
        CallEvent::HungUp {
            call: call.clone(),
            leg: caller_leg,
            cause: "normal_clearing".into(),
        },
        t0,
    );
    assert!(
        commands(&fx)
            .iter()
            .any(|c| matches!(c, CallCommand::HangUp { leg, .. } if *leg == leg_b))
    );
    assert!(events(&fx).iter().any(|e| e.kind() == "call.ended"));
    assert_eq!(
        (core.call_count(), core.leg_count(), core.transfer_count()),
        (0, 0, 0)
    );
}

/// An agent whose endpoint cannot be reached (phone not registered) is set away with the
/// reason, the call goes to the next agent; alone, the agent is not offered the call again and
/// the call waits.
#[test]
fn an_unreachable_endpoint_sets_the_agent_away_and_the_call_goes_on() {
    let t0 = Instant::now();
    let mut c = center(
        vec![agent("a", &["s"]), agent("b", &["s"])],
        vec![queue("q", Some("s"))],
    );
    c.login("a", None, t0).unwrap();
    c.login("b", None, t0 + Duration::from_secs(1)).unwrap();
    let call = CallUri::new();
    let t1 = t0 + Duration::from_secs(2);
    let out = c.enqueue(&call, "q", Purpose::Caller, true, t1).unwrap();
    assert_eq!(offers(&out), vec![(call.clone(), "a".to_string())]);
    let out = c.unreachable("a", &call, t1).unwrap();
    assert!(out.contains(&AcdOutput::Withdraw {
        call: call.clone(),
        agent: "a".into(),
        reason: WithdrawReason::Unreachable,
    }));
    assert_eq!(offers(&out), vec![(call.clone(), "b".to_string())]);
    assert_eq!(presence(&c, "a"), Presence::Away);
    assert_eq!(
        c.agent("a").unwrap().away_reason.as_deref(),
        Some("endpoint_unreachable")
    );
    // b's endpoint is unreachable too: nobody is left, the call waits (no offer loop).
    let out = c.unreachable("b", &call, t1).unwrap();
    assert!(offers(&out).is_empty(), "{out:?}");
    assert_eq!(presence(&c, "b"), Presence::Away);
    assert!(
        c.unreachable("b", &call, t1).is_err(),
        "not offered any more"
    );
}
