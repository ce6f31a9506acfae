//! Q.931 call control, network side against user side, every message through the codec, on
//! virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tdm_driver::pri::call::{CallControl, CallEvent, CallId, CallState, SwitchType, cause};
use tdm_driver::pri::q921::Role;
use tdm_driver::pri::q931::{Message, MessageType, PartyNumber};

struct Pair {
    now: Instant,
    net: CallControl,
    user: CallControl,
    net_events: Vec<CallEvent>,
    user_events: Vec<CallEvent>,
    trace: Vec<(bool, MessageType)>,
    cut: bool,
}

fn number(digits: &str) -> PartyNumber {
    PartyNumber {
        number_type: 4,
        plan: 1,
        presentation: None,
        reason: None,
        digits: digits.into(),
    }
}

impl Pair {
    fn new(switch: SwitchType) -> Self {
        Self {
            now: Instant::now(),
            net: CallControl::new(Role::Network, switch),
            user: CallControl::new(Role::User, switch),
            net_events: Vec::new(),
            user_events: Vec::new(),
            trace: Vec::new(),
            cut: false,
        }
    }

    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(m) = self.net.poll_transmit() {
                self.trace.push((true, m.kind));
                let m = Message::decode(&m.to_bytes()).unwrap();
                if !self.cut {
                    self.user.receive(self.now, &m);
                }
                moved = true;
            }
            while let Some(m) = self.user.poll_transmit() {
                self.trace.push((false, m.kind));
                let m = Message::decode(&m.to_bytes()).unwrap();
                if !self.cut {
                    self.net.receive(self.now, &m);
                }
                moved = true;
            }
            self.net_events
                .extend(std::iter::from_fn(|| self.net.poll_event()));
            self.user_events
                .extend(std::iter::from_fn(|| self.user.poll_event()));
            if !moved {
                return;
            }
        }
        panic!("never quiet");
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            self.pump();
            let next = [self.net.poll_timeout(), self.user.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.net.handle_timeout(self.now);
                    self.user.handle_timeout(self.now);
                }
                _ => {
                    self.now = end;
                    self.pump();
                    return;
                }
            }
        }
    }

    fn incoming(events: &[CallEvent]) -> Vec<(CallId, u8, String, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Incoming {
                    call,
                    channel,
                    called,
                    calling,
                    ..
                } => Some((
                    *call,
                    *channel,
                    called
                        .as_ref()
                        .map(|n| n.digits.clone())
                        .unwrap_or_default(),
                    calling
                        .as_ref()
                        .map(|n| n.digits.clone())
                        .unwrap_or_default(),
                )),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn full_call_network_to_user_with_numbers_and_causes() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let call = p
        .net
        .setup(
            p.now,
            number("4000"),
            Some(number("2155551000")),
            None,
            true,
        )
        .unwrap();
    p.pump();
    let inc = Pair::incoming(&p.user_events);
    assert_eq!(inc.len(), 1);
    let (ucall, ch, called, calling) = inc[0].clone();
    assert_eq!((called.as_str(), calling.as_str()), ("4000", "2155551000"));
    assert_eq!(Some(ch), p.net.channel(call));
    assert_eq!(ch, 31, "network hunts from the top of the E1");
    p.user.proceeding(ucall).unwrap();
    p.user.alerting(ucall, true).unwrap();
    p.user.connect(p.now, ucall).unwrap();
    p.pump();
    assert_eq!(p.net.state(call), CallState::Active);
    assert_eq!(p.user.state(ucall), CallState::Active);
    assert!(
        p.net_events
            .contains(&CallEvent::Progress { call, inband: true })
    );
    p.user.disconnect(p.now, ucall, cause::USER_BUSY).unwrap();
    p.pump();
    assert!(p.net_events.contains(&CallEvent::Disconnecting {
        call,
        cause: cause::USER_BUSY
    }));
    p.net.release(p.now, call, cause::NORMAL_CLEARING).unwrap();
    p.pump();
    let kinds: Vec<_> = p.trace.iter().map(|(_, k)| *k).collect();
    use MessageType::*;
    assert_eq!(
        kinds,
        [
            Setup,
            CallProceeding,
            Alerting,
            Connect,
            ConnectAcknowledge,
            Disconnect,
            Release,
            ReleaseComplete
        ]
    );
    assert_eq!(p.net.live_calls() + p.user.live_calls(), 0);
    assert!(p.user_events.contains(&CallEvent::Released {
        call: ucall,
        cause: cause::NORMAL_CLEARING
    }));
}

#[test]
fn twenty_three_calls_fill_a_t1_and_the_next_is_refused() {
    let mut p = Pair::new(SwitchType::Ni2);
    for i in 0..23 {
        p.user
            .setup(p.now, number(&format!("{}", 5000 + i)), None, None, true)
            .unwrap();
    }
    p.pump();
    let inc = Pair::incoming(&p.net_events);
    assert_eq!(inc.len(), 23);
    let mut chans: Vec<u8> = inc.iter().map(|i| i.1).collect();
    chans.sort();
    assert_eq!(chans, (1..=23).collect::<Vec<_>>());
    assert!(p.user.setup(p.now, number("1"), None, None, true).is_err());
    assert!(p.net.setup(p.now, number("1"), None, None, true).is_err());
}

#[test]
fn glare_on_one_b_channel_exclusive_is_refused_with_cause_44() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let n = p
        .net
        .setup(p.now, number("1"), None, Some(5), true)
        .unwrap();
    let u = p
        .user
        .setup(p.now, number("2"), None, Some(5), true)
        .unwrap();
    p.pump();
    // Both SETUPs crossed; each side refuses the other's exclusive request for channel 5.
    assert!(p.net_events.contains(&CallEvent::Released {
        call: n,
        cause: cause::CHANNEL_UNAVAILABLE
    }));
    assert!(p.user_events.contains(&CallEvent::Released {
        call: u,
        cause: cause::CHANNEL_UNAVAILABLE
    }));
    assert_eq!(p.net.live_calls() + p.user.live_calls(), 0);
}

#[test]
fn t303_retransmits_setup_once_then_clears() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    p.cut = true;
    let call = p.user.setup(p.now, number("1"), None, None, true).unwrap();
    p.advance(Duration::from_millis(3_990));
    assert_eq!(
        p.trace.iter().filter(|t| t.1 == MessageType::Setup).count(),
        1
    );
    p.advance(Duration::from_millis(20));
    assert_eq!(
        p.trace.iter().filter(|t| t.1 == MessageType::Setup).count(),
        2
    );
    p.advance(Duration::from_secs(4));
    assert!(p.user_events.contains(&CallEvent::Released {
        call,
        cause: cause::NO_USER_RESPONDING
    }));
    assert_eq!(p.user.live_calls(), 0);
}

#[test]
fn t305_and_t308_clear_a_call_whose_peer_vanished() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let call = p.net.setup(p.now, number("1"), None, None, true).unwrap();
    p.pump();
    let ucall = Pair::incoming(&p.user_events)[0].0;
    p.user.connect(p.now, ucall).unwrap();
    p.pump();
    p.cut = true;
    p.net
        .disconnect(p.now, call, cause::NORMAL_CLEARING)
        .unwrap();
    p.advance(Duration::from_secs(29));
    assert_eq!(p.net.state(call), CallState::DisconnectRequest);
    p.advance(Duration::from_secs(2)); // T305 → RELEASE
    assert_eq!(p.net.state(call), CallState::ReleaseRequest);
    p.advance(Duration::from_secs(8)); // T308 twice
    assert_eq!(p.net.live_calls(), 0);
    assert_eq!(
        p.trace
            .iter()
            .filter(|t| t.0 && t.1 == MessageType::Release)
            .count(),
        2
    );
}

#[test]
fn overlap_dialling_restart_and_status() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let call = p
        .user
        .setup(p.now, number("12"), None, None, false)
        .unwrap();
    p.pump();
    let (ncall, _, called, _) = Pair::incoming(&p.net_events)[0].clone();
    assert_eq!(called, "12");
    p.net.setup_acknowledge(p.now, ncall).unwrap();
    p.pump();
    assert!(matches!(
        p.user_events.last(),
        Some(CallEvent::MoreDigitsWanted { .. })
    ));
    p.user.send_digits(p.now, call, "34", true).unwrap();
    p.pump();
    assert!(p.net_events.contains(&CallEvent::Digits {
        call: ncall,
        digits: "34".into()
    }));
    p.net.proceeding(ncall).unwrap();
    p.pump();
    assert_eq!(p.user.state(call), CallState::OutgoingCallProceeding);
    p.user.status_enquiry(p.now, call).unwrap();
    p.pump();
    assert!(p.user_events.contains(&CallEvent::Status {
        call,
        state: 9,
        cause: cause::STATUS_ENQUIRY_RESPONSE
    }));
    p.net.restart(p.now, &[]);
    p.pump();
    assert!(p.net_events.contains(&CallEvent::RestartAcknowledged));
    assert!(
        p.user_events
            .contains(&CallEvent::Restarted { channels: vec![] })
    );
    assert_eq!(p.net.live_calls() + p.user.live_calls(), 0);
}

#[test]
fn link_loss_clears_setting_up_calls_and_t309_clears_active_ones() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let active = p.net.setup(p.now, number("1"), None, None, true).unwrap();
    p.pump();
    let u = Pair::incoming(&p.user_events)[0].0;
    p.user.connect(p.now, u).unwrap();
    p.pump();
    let pending = p.net.setup(p.now, number("2"), None, None, true).unwrap();
    p.cut = true;
    p.pump();
    p.net.link_changed(p.now, false);
    assert_eq!(p.net.state(pending), CallState::Null);
    assert_eq!(p.net.state(active), CallState::Active);
    p.advance(Duration::from_secs(7));
    assert_eq!(p.net.state(active), CallState::Null);
}

#[test]
fn t310_t313_t322_and_t316_expire_on_virtual_time() {
    let mut p = Pair::new(SwitchType::Dms100);
    // T310: CALL PROCEEDING, then nothing: the caller disconnects with cause 102 after 10 s.
    let call = p.user.setup(p.now, number("1"), None, None, true).unwrap();
    p.pump();
    let ncall = Pair::incoming(&p.net_events)[0].0;
    p.net.proceeding(ncall).unwrap();
    p.pump();
    p.cut = true;
    p.advance(Duration::from_millis(9_990));
    assert_eq!(p.user.state(call), CallState::OutgoingCallProceeding);
    p.advance(Duration::from_millis(20));
    assert_eq!(p.user.state(call), CallState::DisconnectRequest);
    assert!(p.user_events.contains(&CallEvent::Disconnecting {
        call,
        cause: cause::TIMER_EXPIRY
    }));

    // T313: the user answers and CONNECT ACK never comes.
    let mut p = Pair::new(SwitchType::Att5ess);
    let call = p.net.setup(p.now, number("1"), None, None, true).unwrap();
    p.pump();
    let ucall = Pair::incoming(&p.user_events)[0].0;
    p.cut = true;
    p.user.connect(p.now, ucall).unwrap();
    p.advance(Duration::from_millis(3_990));
    assert_eq!(p.user.state(ucall), CallState::ConnectRequest);
    p.advance(Duration::from_millis(20));
    assert_eq!(p.user.state(ucall), CallState::DisconnectRequest);
    let _ = call;

    // T322: STATUS ENQUIRY unanswered clears the call.
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let call = p.net.setup(p.now, number("1"), None, None, true).unwrap();
    p.pump();
    p.cut = true;
    p.net.status_enquiry(p.now, call).unwrap();
    p.advance(Duration::from_millis(4_010));
    assert_eq!(p.net.state(call), CallState::DisconnectRequest);

    // T316: RESTART unanswered is sent once more after 2 min, then given up.
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    p.cut = true;
    p.net.restart(p.now, &[3]);
    p.advance(Duration::from_secs(119));
    assert_eq!(
        p.trace
            .iter()
            .filter(|t| t.1 == MessageType::Restart)
            .count(),
        1
    );
    p.advance(Duration::from_secs(2));
    assert_eq!(
        p.trace
            .iter()
            .filter(|t| t.1 == MessageType::Restart)
            .count(),
        2
    );
    p.advance(Duration::from_secs(300));
    assert_eq!(
        p.trace
            .iter()
            .filter(|t| t.1 == MessageType::Restart)
            .count(),
        2
    );
    assert_eq!(p.net.poll_timeout(), None);
}

#[test]
fn unknown_call_reference_gets_release_complete_81() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let stray = Message::new(
        MessageType::Connect,
        tdm_driver::pri::q931::CallReference {
            value: 77,
            from_destination: true,
        },
    );
    p.net.receive(p.now, &stray);
    let reply = p.net.poll_transmit().unwrap();
    assert_eq!(reply.kind, MessageType::ReleaseComplete);
    assert_eq!(
        reply.cause().map(|c| c.value),
        Some(cause::INVALID_CALL_REFERENCE)
    );
}

/// A call from the user side with `digits` and no sending complete, acknowledged by the
/// network (overlap: network in state 25 under T302, user in state 2 under T304).
fn overlap_call(p: &mut Pair, digits: &str) -> (CallId, CallId) {
    let call = p
        .user
        .setup(p.now, number(digits), None, None, false)
        .unwrap();
    p.pump();
    let ncall = Pair::incoming(&p.net_events)[0].0;
    p.net.setup_acknowledge(p.now, ncall).unwrap();
    p.pump();
    assert_eq!(p.net.state(ncall), CallState::OverlapReceiving);
    assert_eq!(p.user.state(call), CallState::OverlapSending);
    (call, ncall)
}

#[test]
fn t302_restarts_on_each_information_then_reports_overlap_timeout() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let (call, ncall) = overlap_call(&mut p, "");
    // Digits every 10 s keep the network waiting (T302 15 s restarts on each INFORMATION).
    for d in ["1", "2", "3"] {
        p.advance(Duration::from_secs(10));
        p.user.send_digits(p.now, call, d, false).unwrap();
        p.pump();
    }
    assert!(
        !p.net_events
            .iter()
            .any(|e| matches!(e, CallEvent::OverlapTimeout { .. })),
        "{:?}",
        p.net_events
    );
    p.advance(Duration::from_millis(14_990));
    assert!(
        !p.net_events
            .iter()
            .any(|e| matches!(e, CallEvent::OverlapTimeout { .. }))
    );
    p.advance(Duration::from_millis(20));
    assert!(
        p.net_events
            .contains(&CallEvent::OverlapTimeout { call: ncall })
    );
    // The number is complete enough: the network proceeds; the user's T304 stops.
    p.net.proceeding(ncall).unwrap();
    p.pump();
    assert_eq!(p.user.state(call), CallState::OutgoingCallProceeding);
    assert_eq!(p.net.state(ncall), CallState::IncomingCallProceeding);
    let digits: String = p
        .net_events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Digits { digits, .. } => Some(digits.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(digits, "123");
}

#[test]
fn t302_clears_with_cause_28_when_the_application_does_not_proceed() {
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    // The caller waits longer than the network (its T304 would clear first otherwise).
    p.user.timers_mut().t304 = Duration::from_secs(60);
    let (call, ncall) = overlap_call(&mut p, "5");
    p.advance(Duration::from_secs(16));
    assert!(
        p.net_events
            .contains(&CallEvent::OverlapTimeout { call: ncall })
    );
    assert_eq!(p.net.state(ncall), CallState::OverlapReceiving);
    // Nobody decides: after another T302 the network clears, cause 28, toward the caller.
    p.advance(Duration::from_secs(15));
    assert!(p.user_events.contains(&CallEvent::Disconnecting {
        call,
        cause: cause::INVALID_NUMBER_FORMAT
    }));
    p.user
        .release(p.now, call, cause::INVALID_NUMBER_FORMAT)
        .unwrap();
    p.pump();
    assert_eq!(p.net.live_calls() + p.user.live_calls(), 0);
}

#[test]
fn t304_clears_overlap_sending_when_the_network_stays_silent() {
    let mut p = Pair::new(SwitchType::Ni2);
    let (call, _ncall) = overlap_call(&mut p, "9");
    p.cut = true;
    // T304 (20 s) restarts with each INFORMATION sent.
    p.advance(Duration::from_secs(15));
    p.user.send_digits(p.now, call, "1", false).unwrap();
    p.advance(Duration::from_millis(19_990));
    assert_eq!(p.user.state(call), CallState::OverlapSending);
    p.advance(Duration::from_millis(20));
    assert_eq!(p.user.state(call), CallState::DisconnectRequest);
    assert!(p.user_events.contains(&CallEvent::Disconnecting {
        call,
        cause: cause::TIMER_EXPIRY
    }));
    assert!(
        p.trace
            .iter()
            .any(|(from_net, k)| !from_net && *k == MessageType::Disconnect)
    );
}

/// An active call placed by the network toward the user.
fn active_call(p: &mut Pair) -> (CallId, CallId) {
    let call = p.net.setup(p.now, number("1"), None, None, true).unwrap();
    p.pump();
    let ucall = Pair::incoming(&p.user_events)[0].0;
    p.user.connect(p.now, ucall).unwrap();
    p.pump();
    assert_eq!(p.net.state(call), CallState::Active);
    assert_eq!(p.user.state(ucall), CallState::Active);
    (call, ucall)
}

#[test]
fn notify_hold_and_resume_reach_the_other_side() {
    use tdm_driver::pri::call::notification;
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let (call, ucall) = active_call(&mut p);
    p.user.notify(ucall, notification::USER_SUSPENDED).unwrap();
    p.pump();
    p.net.notify(call, notification::USER_RESUMED).unwrap();
    p.pump();
    assert!(p.net_events.contains(&CallEvent::Notify {
        call,
        indicator: notification::USER_SUSPENDED
    }));
    assert!(p.user_events.contains(&CallEvent::Notify {
        call: ucall,
        indicator: notification::USER_RESUMED
    }));
    // NOTIFY is for calls that are set up.
    let pending = p.net.setup(p.now, number("2"), None, None, true).unwrap();
    assert!(p.net.notify(pending, notification::USER_SUSPENDED).is_err());
    // A NOTIFY without its notification indicator is answered with STATUS cause 96.
    let bare = Message::new(
        MessageType::Notify,
        tdm_driver::pri::q931::CallReference {
            value: call.value,
            from_destination: true,
        },
    );
    p.pump();
    p.net.receive(p.now, &bare);
    let reply = p.net.poll_transmit().unwrap();
    assert_eq!(reply.kind, MessageType::Status);
    assert_eq!(
        reply.cause().map(|c| c.value),
        Some(cause::MANDATORY_IE_MISSING)
    );
    assert_eq!(p.net.state(call), CallState::Active);
}

#[test]
fn redirecting_number_display_and_facility_reach_the_called_side() {
    use tdm_driver::pri::call::SetupInfo;
    let mut p = Pair::new(SwitchType::EuroIsdnE1);
    let redirecting = PartyNumber {
        number_type: 2,
        plan: 1,
        presentation: Some((0, 3)),
        reason: Some(2), // no reply
        digits: "3001".into(),
    };
    let calling = PartyNumber {
        presentation: Some((1, 3)), // restricted
        ..number("2155551000")
    };
    let info = SetupInfo {
        calling: Some(calling.clone()),
        redirecting: Some(redirecting.clone()),
        display: Some(b"Alice".to_vec()),
        facility: vec![vec![0x91, 0xa1, 0x03, 0x02, 0x01, 0x07]],
    };
    p.net
        .setup_with(p.now, number("4000"), info.clone(), None, true)
        .unwrap();
    p.pump();
    let got = p
        .user_events
        .iter()
        .find_map(|e| match e {
            CallEvent::Incoming { info, calling, .. } => Some((info.clone(), calling.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(got.0, info);
    assert_eq!(got.1, Some(calling));
    // Display and facility on a later message are reported too (before the message's event).
    let ucall = Pair::incoming(&p.user_events)[0].0;
    let mut alerting = Message::new(
        MessageType::Alerting,
        tdm_driver::pri::q931::CallReference {
            value: ucall.value,
            from_destination: true,
        },
    );
    alerting
        .ies
        .push(tdm_driver::pri::q931::Ie::Display(b"Bob".to_vec()));
    let call = p.net.calls()[0];
    p.net.receive(p.now, &alerting);
    p.pump();
    let idx = p
        .net_events
        .iter()
        .position(|e| {
            *e == CallEvent::Elements {
                call,
                message: MessageType::Alerting,
                display: Some(b"Bob".to_vec()),
                facility: vec![],
            }
        })
        .unwrap();
    assert!(matches!(
        p.net_events.get(idx + 1),
        Some(CallEvent::Alerting { .. })
    ));
}
