//! Session timers (RFC 4028), UPDATE (RFC 3311) and INFO DTMF with real SIPp in both roles,
//! plus virtual-time cases: the non-refresher's BYE on expiry, UPDATE glare and an UPDATE
//! offer in an early dialog.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{SDP_OFFER, Sipp, Ua};
use gateway::sip::dialog::{
    AnswerRetransmit, Dialog, DialogState, InDialogRequest, ViaTemplate, uri_socket_addr,
};
use gateway::sip::dtmf_info::{DtmfBody, DtmfInfo};
use gateway::sip::message::{HeaderName, Message, Method, Request, Response, Uri};
use gateway::sip::offer_answer::{OfferAnswer, has_sdp};
use gateway::sip::parse::parse_message;
use gateway::sip::session_timer::{
    ResponseVerdict, SessionTimer, SessionTimerConfig, SessionTimerEvent,
};
use gateway::sip::transaction::{Reliability, TimerConfig, TuEvent, stamp_received};
use gateway::sip::update::{
    ReceivedUpdate, UpdateError, UpdateOutcome, check_update, handle_update_response, new_update,
    update_response,
};

const CALLS: u32 = 5;

fn via(ua: &Ua) -> ViaTemplate {
    ViaTemplate {
        transport: "UDP".into(),
        sent_by: ua.local.to_string(),
    }
}

struct Call {
    dialog: Dialog,
    oa: OfferAnswer,
    st: SessionTimer,
    answer: AnswerRetransmit,
    digits: Vec<char>,
    updates: u32,
}

/// SIPp calls our UAS pieces: 422 for a 60 s interval, 200 with the interval and refresher
/// for 90 s, an UPDATE refresh with a new offer answered (and the clock restarted), three INFO
/// digits received exactly once each, BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_session_timer_update_and_info_digits() {
    let mut ua = Ua::bind().await;
    let sipp = Sipp::start("session_uac.xml", Some(ua.local), CALLS, &["-r", "10"]);
    let mut calls: HashMap<String, Call> = HashMap::new();
    let (mut refused_422, mut finished) = (0u32, 0u32);
    let limit = Instant::now() + Duration::from_secs(30);
    while finished < CALLS && Instant::now() < limit {
        let events = ua.step(None, limit).await;
        let now = Instant::now();
        for ev in events {
            match ev {
                TuEvent::Request {
                    key,
                    request,
                    source,
                } => {
                    let call_id = request.headers.call_id().unwrap().to_owned();
                    match request.method {
                        Method::Invite => {
                            let mut st = SessionTimer::new(SessionTimerConfig::default());
                            if let Err(mut r422) = st.check_request(&request) {
                                r422.ensure_to_tag("st422");
                                ua.layer.send_response(now, &key, *r422).unwrap();
                                refused_422 += 1;
                                continue;
                            }
                            let contact = Uri::parse(&format!("sip:svc@{}", ua.local)).unwrap();
                            let mut dialog =
                                Dialog::new_uas(&request, &ua.unique("b"), contact, via(&ua))
                                    .unwrap();
                            let mut oa = OfferAnswer::default();
                            assert!(has_sdp(&request.headers, &request.body));
                            oa.offer_received().unwrap();
                            let mut ok = dialog.response(&request, 200);
                            ok.headers.push(HeaderName::ContentType, "application/sdp");
                            ok.body = SDP_OFFER.as_bytes().to_vec();
                            oa.answer_sent();
                            st.answer(now, &request, &mut ok);
                            assert_eq!(st.interval(), Some(Duration::from_secs(90)));
                            ua.layer.send_response(now, &key, ok.clone()).unwrap();
                            stamp_received(&mut ok, source);
                            let answer = AnswerRetransmit::new(
                                now,
                                2,
                                source,
                                ok.to_bytes(),
                                Reliability::Unreliable,
                                TimerConfig::default(),
                            );
                            calls.insert(
                                call_id,
                                Call {
                                    dialog,
                                    oa,
                                    st,
                                    answer,
                                    digits: Vec::new(),
                                    updates: 0,
                                },
                            );
                        }
                        Method::Update => {
                            let c = calls.get_mut(&call_id).unwrap();
                            c.st.check_request(&request).unwrap();
                            let kind = check_update(&mut c.dialog, &mut c.oa, &request, 3).unwrap();
                            assert_eq!(kind, ReceivedUpdate::Offer);
                            let mut r = update_response(
                                &mut c.dialog,
                                &mut c.oa,
                                &request,
                                200,
                                Some(SDP_OFFER.as_bytes()),
                                None,
                            );
                            c.st.answer(now, &request, &mut r);
                            assert!(!c.st.we_refresh(), "the UPDATE named the caller refresher");
                            assert_eq!(
                                c.st.expires_at(),
                                Some(now + Duration::from_secs(90 - 30)),
                                "the refresh restarted the clock"
                            );
                            assert!(c.oa.is_idle() && c.oa.completed() == 2);
                            c.updates += 1;
                            ua.layer.send_response(now, &key, r).unwrap();
                        }
                        Method::Info => {
                            let c = calls.get_mut(&call_id).unwrap();
                            assert_eq!(
                                c.dialog.handle_request(&request),
                                Ok(InDialogRequest::Other)
                            );
                            let d = DtmfInfo::from_request(&request).unwrap().unwrap();
                            c.digits.push(d.digit);
                            let r = c.dialog.response(&request, 200);
                            ua.layer.send_response(now, &key, r).unwrap();
                        }
                        Method::Bye => {
                            let c = calls.get_mut(&call_id).unwrap();
                            assert_eq!(c.dialog.handle_request(&request), Ok(InDialogRequest::Bye));
                            c.st.stop();
                            let r = c.dialog.response(&request, 200);
                            ua.layer.send_response(now, &key, r).unwrap();
                            finished += 1;
                        }
                        m => panic!("unexpected {m}"),
                    }
                }
                TuEvent::Ack { request, .. } => {
                    let c = calls.get_mut(request.headers.call_id().unwrap()).unwrap();
                    assert_eq!(c.dialog.handle_request(&request), Ok(InDialogRequest::Ack));
                    assert!(c.answer.ack_received(request.headers.cseq().unwrap().seq));
                }
                _ => {}
            }
        }
    }
    ua.flush().await;
    let (code, ok, failed, stderr) = sipp.finish().await;
    assert_eq!(code, Some(0), "sipp: {stderr}");
    assert_eq!((ok, failed), (u64::from(CALLS), 0));
    assert_eq!(refused_422, CALLS);
    assert_eq!(calls.len(), CALLS as usize);
    for c in calls.values() {
        assert_eq!(
            c.digits,
            vec!['1', '#', '5'],
            "each digit exactly once, in order"
        );
        assert_eq!(c.updates, 1);
        assert_eq!(c.dialog.state(), DialogState::Terminated);
        assert_eq!(c.st.poll_timeout(), None);
    }
}

/// Our UAC pieces against SIPp: the 422 raises our interval to SIPp's Min-SE (120 s) and the
/// INVITE is resent; the 200 makes us refresher; at half the interval (virtual clock) the
/// refresh goes out as an UPDATE naming us refresher; then an INFO digit and BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_caller_retries_after_422_and_refreshes_by_update() {
    let mut ua = Ua::bind().await;
    let sipp = Sipp::start("session_uas.xml", None, CALLS, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limit = Instant::now() + Duration::from_secs(30);
    for _ in 0..CALLS {
        let mut st = SessionTimer::new(SessionTimerConfig {
            session_expires: Duration::from_secs(90),
            ..SessionTimerConfig::default()
        });
        let mut invite = ua.new_request(Method::Invite, sipp.addr, "callee");
        invite
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        invite.body = SDP_OFFER.as_bytes().to_vec();
        st.decorate_request(&mut invite);
        let mut oa = OfferAnswer::default();
        oa.offer_sent().unwrap();
        let mut inv_key = ua
            .layer
            .send_request(
                Instant::now(),
                invite.clone(),
                sipp.addr,
                Reliability::Unreliable,
            )
            .unwrap();
        let mut dialog: Option<Dialog> = None;
        let mut stage = 0;
        let mut keys = Vec::new();
        while stage < 4 && Instant::now() < limit {
            for ev in ua.step(None, limit).await {
                let now = Instant::now();
                let TuEvent::Response { key, response } = ev else {
                    assert!(!matches!(ev, TuEvent::Timeout { .. }), "{ev:?}");
                    continue;
                };
                if response.status < 200 {
                    continue;
                }
                if key == inv_key && response.status == 422 {
                    assert_eq!(st.handle_response(now, &response), ResponseVerdict::Retry);
                    // Same call, next CSeq, new branch; decorated with the raised interval.
                    let mut again = invite.clone();
                    again.headers.set(HeaderName::CSeq, "2 INVITE");
                    let b = ua.branch();
                    again.headers.set(
                        HeaderName::Via,
                        format!("SIP/2.0/UDP {};branch={b};rport", ua.local),
                    );
                    st.decorate_request(&mut again);
                    invite = again.clone();
                    inv_key = ua
                        .layer
                        .send_request(now, again, sipp.addr, Reliability::Unreliable)
                        .unwrap();
                } else if key == inv_key && response.status == 200 {
                    let mut d = Dialog::new_uac(&invite, &response, via(&ua)).unwrap();
                    assert_eq!(st.handle_response(now, &response), ResponseVerdict::Running);
                    assert!(st.we_refresh());
                    assert_eq!(st.interval(), Some(Duration::from_secs(120)));
                    oa.answer_received();
                    let ack = d.ack_for_2xx(&response, &ua.branch(), None).unwrap();
                    let dest = uri_socket_addr(d.next_hop()).unwrap();
                    ua.send_raw(dest, &ack.to_bytes()).await;
                    // Jump the session clock to half the interval instead of waiting 60 s.
                    let half = now + Duration::from_secs(60);
                    assert_eq!(st.poll_timeout(), Some(half));
                    assert_eq!(
                        st.handle_timeout(half),
                        Some(SessionTimerEvent::Refresh(Method::Update)),
                        "SIPp allows UPDATE"
                    );
                    let mut upd = new_update(&mut d, &mut oa, &ua.branch(), None).unwrap();
                    st.decorate_request(&mut upd);
                    keys.push(
                        ua.layer
                            .send_request(now, upd, dest, Reliability::Unreliable)
                            .unwrap(),
                    );
                    dialog = Some(d);
                    stage = 1;
                } else if keys.contains(&key) {
                    let d = dialog.as_mut().unwrap();
                    let dest = uri_socket_addr(d.next_hop()).unwrap();
                    assert_eq!(response.status, 200, "{}", response.reason);
                    match stage {
                        1 => {
                            assert_eq!(
                                handle_update_response(d, &mut oa, &response),
                                UpdateOutcome::Accepted
                            );
                            assert_eq!(
                                st.handle_response(now, &response),
                                ResponseVerdict::Running
                            );
                            let info = DtmfInfo::new('7', Duration::from_millis(100))
                                .unwrap()
                                .info_request(d, &ua.branch(), DtmfBody::DtmfRelay)
                                .unwrap();
                            keys.push(
                                ua.layer
                                    .send_request(now, info, dest, Reliability::Unreliable)
                                    .unwrap(),
                            );
                            stage = 2;
                        }
                        2 => {
                            let bye = d.new_request(Method::Bye, &ua.branch()).unwrap();
                            keys.push(
                                ua.layer
                                    .send_request(now, bye, dest, Reliability::Unreliable)
                                    .unwrap(),
                            );
                            stage = 3;
                        }
                        _ => {
                            d.handle_response(&response);
                            st.stop();
                            stage = 4;
                        }
                    }
                }
            }
        }
        assert_eq!(stage, 4, "call did not complete");
        assert_eq!(dialog.unwrap().state(), DialogState::Terminated);
    }
    let (code, ok, failed, stderr) = sipp.finish().await;
    assert_eq!(code, Some(0), "sipp: {stderr}");
    assert_eq!((ok, failed), (u64::from(CALLS), 0));
}

fn parse_req(text: &str) -> Request {
    match parse_message(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn confirmed_pair() -> (Request, Dialog, Dialog) {
    let invite = parse_req(
        "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: vt\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:a@192.0.2.1>\r\nSupported: timer\r\nContent-Length: 0\r\n\r\n",
    );
    let vt = |h: &str| ViaTemplate {
        transport: "UDP".into(),
        sent_by: h.into(),
    };
    let mut uas = Dialog::new_uas(
        &invite,
        "b",
        Uri::parse("sip:b@192.0.2.2").unwrap(),
        vt("192.0.2.2"),
    )
    .unwrap();
    let ok = uas.response(&invite, 200);
    let uac = Dialog::new_uac(&invite, &ok, vt("192.0.2.1")).unwrap();
    (invite, uac, uas)
}

/// Virtual time: the caller (refresher by our choice of `prefer_refresher: false`) never
/// refreshes; at 1800 s - 32 s we are told to BYE, and the BYE the dialog builds is valid.
#[test]
fn non_refresher_sends_bye_when_no_refresh_comes() {
    let (invite, _uac, mut uas) = confirmed_pair();
    let t0 = Instant::now();
    let mut st = SessionTimer::new(SessionTimerConfig {
        prefer_refresher: false,
        ..SessionTimerConfig::default()
    });
    let mut inv = invite.clone();
    inv.headers.push(HeaderName::SessionExpires, "1800");
    st.check_request(&inv).unwrap();
    let mut ok = Response::for_request(&inv, 200);
    st.answer(t0, &inv, &mut ok);
    assert!(!st.we_refresh());
    let mut now = t0;
    let mut events = Vec::new();
    while let Some(at) = st.poll_timeout() {
        now = at;
        events.extend(st.handle_timeout(at));
    }
    assert_eq!(events, vec![SessionTimerEvent::Expired]);
    assert_eq!(now - t0, Duration::from_secs(1768));
    let bye = uas.new_request(Method::Bye, "z9hG4bKbye").unwrap();
    assert!(parse_message(&bye.to_bytes()).is_ok());
}

/// UPDATE glare in a confirmed dialog: both sides offer at once; each answers the other 491
/// and the offers are void, so both may offer again after the back-off.
#[test]
fn crossing_update_offers_get_491_on_both_sides() {
    let (_invite, mut uac, mut uas) = confirmed_pair();
    let (mut oa_a, mut oa_b) = (OfferAnswer::default(), OfferAnswer::default());
    // The initial exchange completed (offer in INVITE, answer in 200).
    oa_a.offer_sent().unwrap();
    oa_a.answer_received();
    oa_b.offer_received().unwrap();
    oa_b.answer_sent();
    let sdp = SDP_OFFER.as_bytes();
    let from_a = new_update(&mut uac, &mut oa_a, "z9hG4bKa", Some(sdp)).unwrap();
    let from_b = new_update(&mut uas, &mut oa_b, "z9hG4bKb", Some(sdp)).unwrap();
    assert_eq!(
        new_update(&mut uac, &mut oa_a, "z9hG4bKa2", Some(sdp)).unwrap_err(),
        UpdateError::OfferPending
    );
    let at_b = check_update(&mut uas, &mut oa_b, &from_a, 0).unwrap_err();
    let at_a = check_update(&mut uac, &mut oa_a, &from_b, 0).unwrap_err();
    assert_eq!((at_a.status, at_b.status), (491, 491));
    // B's 491 reaches A, A's 491 reaches B: both offers are void.
    let to_a = update_response(&mut uas, &mut oa_b, &from_a, 491, None, None);
    let to_b = update_response(&mut uac, &mut oa_a, &from_b, 491, None, None);
    assert_eq!(
        handle_update_response(&mut uac, &mut oa_a, &to_a),
        UpdateOutcome::Glare
    );
    assert_eq!(
        handle_update_response(&mut uas, &mut oa_b, &to_b),
        UpdateOutcome::Glare
    );
    assert!(
        oa_a.is_idle() && oa_b.is_idle(),
        "the offers are void after 491"
    );
    assert_eq!(uac.state(), DialogState::Confirmed);
}

/// An UPDATE with a second offer before we answered the first: 500 with Retry-After.
#[test]
fn update_offer_while_an_answer_is_owed_gets_500_with_retry_after() {
    let (_invite, mut uac, mut uas) = confirmed_pair();
    let mut oa_b = OfferAnswer::default();
    oa_b.offer_received().unwrap();
    let mut oa_a = OfferAnswer::default();
    oa_a.offer_sent().unwrap();
    oa_a.answer_received();
    let upd = new_update(&mut uac, &mut oa_a, "z9hG4bKu", Some(SDP_OFFER.as_bytes())).unwrap();
    let refusal = check_update(&mut uas, &mut oa_b, &upd, 27).unwrap_err();
    assert_eq!(refusal.status, 500);
    assert_eq!(refusal.retry_after, Some(5));
    let r = update_response(&mut uas, &mut oa_b, &upd, 500, None, refusal.retry_after);
    assert_eq!(r.headers.get(&HeaderName::RetryAfter), Some("5"));
}

/// UPDATE in an early dialog (RFC 3311 §5.1): once the INVITE's offer was answered in a
/// reliable 183, the caller may change the session before the call is answered; the dialogs
/// stay early and the UAS answers in the UPDATE's 200.
#[test]
fn update_with_an_offer_in_an_early_dialog() {
    let invite = parse_req(
        "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: early\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>\r\nContent-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n",
    );
    let vt = |h: &str| ViaTemplate {
        transport: "UDP".into(),
        sent_by: h.into(),
    };
    let mut uas = Dialog::new_uas(
        &invite,
        "b",
        Uri::parse("sip:b@192.0.2.2").unwrap(),
        vt("192.0.2.2"),
    )
    .unwrap();
    let p183 = uas.response(&invite, 183);
    let mut uac = Dialog::new_uac(&invite, &p183, vt("192.0.2.1")).unwrap();
    assert_eq!(uac.state(), DialogState::Early);
    let (mut oa_a, mut oa_b) = (OfferAnswer::default(), OfferAnswer::default());
    oa_a.offer_sent().unwrap();
    oa_b.offer_received().unwrap();
    oa_b.answer_sent(); // in the reliable 183
    oa_a.answer_received();
    let upd = new_update(&mut uac, &mut oa_a, "z9hG4bKe", Some(SDP_OFFER.as_bytes())).unwrap();
    assert_eq!(
        check_update(&mut uas, &mut oa_b, &upd, 0),
        Ok(ReceivedUpdate::Offer)
    );
    let ok = update_response(
        &mut uas,
        &mut oa_b,
        &upd,
        200,
        Some(SDP_OFFER.as_bytes()),
        None,
    );
    assert!(ok.headers.get(&HeaderName::Contact).is_some());
    assert_eq!(
        handle_update_response(&mut uac, &mut oa_a, &ok),
        UpdateOutcome::Accepted
    );
    assert!(oa_a.is_idle() && oa_b.is_idle());
    assert_eq!(oa_a.completed(), 2);
    assert_eq!(uac.state(), DialogState::Early);
    assert_eq!(uas.state(), DialogState::Early);
}
