//! `Engine::adopt_leg` on virtual time: a leg its provider answered already (a browser the
//! signalling side accepted) creates the call under the control plane's URI, attaches its media
//! port and is not routed; a second adopted leg joins the same call; the call is managed by the
//! control plane (one leg hanging up does not end it); when the last leg goes the call ends
//! with a record of both legs and everything is released.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use gateway::calls::engine::{Engine, EngineConfig, EngineError, EngineOutput, MediaCommand};
use gateway::calls::leg::{EndCause, LegCommand, LegIds, LegKind, MediaAttachment, PortSlot};
use gateway::control::{CallUri, Event};

fn outputs(e: &mut Engine) -> Vec<EngineOutput> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

#[test]
fn adopted_browser_legs_make_a_controlled_call_under_the_given_uri_and_release_everything() {
    let ids = LegIds::new();
    let mut e = Engine::new(EngineConfig::new(IpAddr::from([127, 0, 0, 1])), ids.clone());
    e.add_provider(LegKind::WebRtc);
    let t0 = Instant::now();
    let uri = CallUri::new();
    let (caller, agent) = (ids.next_id(), ids.next_id());

    // The web caller: the call appears under the control plane's URI, unrouted, controlled.
    e.adopt_leg(
        t0,
        &uri,
        caller,
        LegKind::WebRtc,
        MediaAttachment::Port(PortSlot::empty()),
    )
    .unwrap();
    let out = outputs(&mut e);
    let key = match out.as_slice() {
        // The provider learns the call's URI (for its log lines), then the port is attached.
        [
            EngineOutput::Leg {
                leg: told,
                command: LegCommand::CallUri { uri: u },
                ..
            },
            EngineOutput::Media(MediaCommand::AttachPort { leg, call, .. }),
        ] if *told == caller && *leg == caller && *u == uri => *call,
        other => panic!("expected CallUri then one AttachPort for the caller, got {other:?}"),
    };
    e.media_opened(t0, caller, Ok(None));
    assert!(
        outputs(&mut e).is_empty(),
        "an answered leg is neither answered again nor routed"
    );
    let info = e
        .call(t0, &uri)
        .expect("the call has the control plane's URI");
    assert!(info.controlled, "the control plane manages the call");
    assert_eq!(info.key, key);
    assert_eq!(e.caller_leg(&uri), Some(caller));
    assert_eq!(e.leg_kind(caller), Some(LegKind::WebRtc));

    // The same leg twice is refused.
    assert!(matches!(
        e.adopt_leg(
            t0,
            &uri,
            caller,
            LegKind::WebRtc,
            MediaAttachment::Port(PortSlot::empty())
        ),
        Err(EngineError::NotNow(..))
    ));

    // The agent answering in the page joins the same call, on the same plane worker.
    let t1 = t0 + Duration::from_secs(2);
    e.adopt_leg(
        t1,
        &uri,
        agent,
        LegKind::WebRtc,
        MediaAttachment::Port(PortSlot::empty()),
    )
    .unwrap();
    match outputs(&mut e).as_slice() {
        [
            EngineOutput::Leg {
                leg: told,
                command: LegCommand::CallUri { uri: u },
                ..
            },
            EngineOutput::Media(MediaCommand::AttachPort { leg, call, .. }),
        ] if *told == agent && *u == uri && *leg == agent && *call == key => {}
        other => {
            panic!("expected CallUri then the agent's AttachPort in call {key:?}, got {other:?}")
        }
    }
    e.media_opened(t1, agent, Ok(None));
    assert_eq!((e.call_count(), e.leg_count()), (1, 2));
    e.connect(t1, caller, agent).unwrap();
    assert!(
        outputs(&mut e).iter().any(|o| matches!(
            o,
            EngineOutput::Media(MediaCommand::Connect { a, b }) if *a == caller && *b == agent
        )),
        "the two browser legs are bridged"
    );

    // The agent leaves: the call goes on (controlled); the caller leaves: it ends.
    let t2 = t1 + Duration::from_secs(5);
    e.hang_up_leg(t2, agent, EndCause::normal("agent left"))
        .unwrap();
    let out = outputs(&mut e);
    assert!(out.iter().any(|o| matches!(
        o,
        EngineOutput::Leg { leg, kind: LegKind::WebRtc, command: LegCommand::HangUp { .. } } if *leg == agent
    )));
    assert!(
        out.iter().any(
            |o| matches!(o, EngineOutput::Media(MediaCommand::Release { leg }) if *leg == agent)
        )
    );
    assert_eq!((e.call_count(), e.leg_count()), (1, 1), "the caller stays");
    e.hang_up_leg(t2, caller, EndCause::normal("caller left"))
        .unwrap();
    let out = outputs(&mut e);
    assert!(out.iter().any(
        |o| matches!(o, EngineOutput::Media(MediaCommand::Release { leg }) if *leg == caller)
    ));
    let cdr = out
        .iter()
        .find_map(|o| match o {
            EngineOutput::Cdr(c) => Some(c),
            _ => None,
        })
        .expect("the call's record");
    assert_eq!(cdr.call_uri, uri);
    let legs: Vec<_> = cdr.legs.iter().map(|l| (l.leg, l.kind)).collect();
    assert_eq!(
        legs,
        [(caller, LegKind::WebRtc), (agent, LegKind::WebRtc)],
        "both legs in the record"
    );
    assert!(
        cdr.legs.iter().all(|l| l.answered.is_some()),
        "{:?}",
        cdr.legs
    );
    assert_eq!(cdr.duration_ms, 7_000);
    // Answered when the web caller was accepted (t0), connected to the agent at t1: billed
    // from the answer, counted as an answered call, `call.answered` published once.
    assert_eq!(cdr.answer.as_deref(), Some(cdr.start.as_str()), "{cdr:?}");
    assert_eq!(cdr.billable_ms, 7_000);
    let connected = cdr.connected.as_deref().expect("the caller met the agent");
    assert!(
        connected > cdr.start.as_str() && connected < cdr.end.as_str(),
        "{cdr:?}"
    );
    assert_eq!(
        (e.stats().calls_answered, e.stats().calls_failed),
        (1, 0),
        "an answered call, not a failed one"
    );
    let answered: Vec<_> = e
        .event_log()
        .since(0)
        .unwrap()
        .into_iter()
        .filter(|s| matches!(&s.event, Event::CallAnswered { call_uri, .. } if *call_uri == uri))
        .collect();
    assert_eq!(answered.len(), 1, "call.answered once: {answered:?}");
    assert_eq!((e.call_count(), e.leg_count()), (0, 0));
    assert!(e.call(t2, &uri).is_none());
}
