//! 100rel/PRACK (RFC 3262) with real SIPp in both roles, plus a virtual-time exchange between
//! our own UAC and UAS where the first PRACK is lost and the offer rides in the 183.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{SDP_OFFER, Sipp, Ua};
use gateway::sip::dialog::{
    AnswerRetransmit, AnswerTimer, Dialog, InDialogRequest, ViaTemplate, uri_socket_addr,
};
use gateway::sip::message::{HeaderName, Method, Response, Uri};
use gateway::sip::offer_answer::{BodyRole, OfferAnswer, has_sdp};
use gateway::sip::prack::{
    PrackConfig, Provisional, UacPrack, UasPrack, UasPrackEvent, offer_100rel,
};
use gateway::sip::transaction::{
    Reliability, TimerConfig, TransactionKey, TransactionLayer, TuEvent, stamp_received,
};

const CALLS: u32 = 20;

fn via(ua: &Ua) -> ViaTemplate {
    ViaTemplate {
        transport: "UDP".into(),
        sent_by: ua.local.to_string(),
    }
}

struct UasCall {
    invite_key: TransactionKey,
    source: SocketAddr,
    dialog: Dialog,
    rel: UasPrack,
    answer: Option<AnswerRetransmit>,
}

/// SIPp calls with `Supported: 100rel`; our UAS (transaction layer + dialog + UasPrack)
/// answers each with a reliable 183 carrying the SDP answer and holds the 200 until the PRACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_gets_reliable_183_and_the_200_only_after_prack() {
    let mut ua = Ua::bind().await;
    let sipp = Sipp::start("prack_uac.xml", Some(ua.local), CALLS, &["-r", "20"]);
    let mut calls: HashMap<String, UasCall> = HashMap::new();
    let (mut pracked, mut resends, mut finished) = (0u32, 0u32, 0u32);
    let limit = Instant::now() + Duration::from_secs(30);
    while finished < CALLS && Instant::now() < limit {
        let wake = calls
            .values()
            .flat_map(|c| {
                [
                    c.rel.poll_timeout(),
                    c.answer.as_ref().and_then(|a| a.poll_timeout()),
                ]
            })
            .flatten()
            .min();
        let events = ua.step(wake, limit).await;
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
                            let contact = Uri::parse(&format!("sip:svc@{}", ua.local)).unwrap();
                            let mut dialog =
                                Dialog::new_uas(&request, &ua.unique("b"), contact, via(&ua))
                                    .unwrap();
                            let mut rel =
                                UasPrack::for_invite(&request, PrackConfig::default(), 1000)
                                    .expect("SIPp supports 100rel");
                            let mut oa = OfferAnswer::default();
                            assert_eq!(
                                oa.classify_incoming(has_sdp(&request.headers, &request.body)),
                                Ok(BodyRole::Offer)
                            );
                            oa.offer_received().unwrap();
                            let mut p = dialog.response(&request, 183);
                            p.headers.push(HeaderName::ContentType, "application/sdp");
                            p.body = SDP_OFFER.as_bytes().to_vec();
                            oa.answer_sent();
                            let p = rel.provisional(now, p).expect("first one goes at once");
                            ua.layer.send_response(now, &key, p).unwrap();
                            let ok = dialog.response(&request, 200);
                            assert!(rel.final_response(ok).is_none(), "200 held until PRACK");
                            calls.insert(
                                call_id,
                                UasCall {
                                    invite_key: key,
                                    source,
                                    dialog,
                                    rel,
                                    answer: None,
                                },
                            );
                        }
                        Method::Prack => {
                            let c = calls.get_mut(&call_id).expect("PRACK for a known call");
                            assert_eq!(
                                c.dialog.handle_request(&request),
                                Ok(InDialogRequest::Other)
                            );
                            let out = c.rel.handle_prack(now, &request);
                            assert_eq!(out.status, 200);
                            pracked += 1;
                            let r = c.dialog.response(&request, out.status);
                            ua.layer.send_response(now, &key, r).unwrap();
                            for mut rel in out.release {
                                assert_eq!(rel.status, 200);
                                ua.layer
                                    .send_response(now, &c.invite_key, rel.clone())
                                    .unwrap();
                                stamp_received(&mut rel, c.source);
                                let seq = rel.headers.cseq().unwrap().seq;
                                c.answer = Some(AnswerRetransmit::new(
                                    now,
                                    seq,
                                    c.source,
                                    rel.to_bytes(),
                                    Reliability::Unreliable,
                                    TimerConfig::default(),
                                ));
                            }
                        }
                        Method::Bye => {
                            let c = calls.get_mut(&call_id).expect("BYE for a known call");
                            assert_eq!(c.dialog.handle_request(&request), Ok(InDialogRequest::Bye));
                            let r = c.dialog.response(&request, 200);
                            ua.layer.send_response(now, &key, r).unwrap();
                            finished += 1;
                        }
                        m => panic!("unexpected {m}"),
                    }
                }
                TuEvent::Ack { request, .. } => {
                    let call_id = request.headers.call_id().unwrap();
                    let c = calls.get_mut(call_id).expect("ACK for a known call");
                    assert_eq!(c.dialog.handle_request(&request), Ok(InDialogRequest::Ack));
                    let seq = request.headers.cseq().unwrap().seq;
                    assert!(c.answer.as_mut().unwrap().ack_received(seq));
                }
                _ => {}
            }
        }
        for c in calls.values_mut() {
            if c.rel.poll_timeout().is_some_and(|t| t <= now) {
                match c.rel.handle_timeout(now) {
                    Some(UasPrackEvent::Resend(r)) => {
                        resends += 1;
                        ua.layer.send_response(now, &c.invite_key, r).unwrap();
                    }
                    Some(UasPrackEvent::GaveUp) => panic!("SIPp never PRACKed"),
                    None => {}
                }
            }
            if let Some(a) = c.answer.as_mut()
                && let AnswerTimer::Resend { dest, bytes } = a.handle_timeout(now)
            {
                ua.send_raw(dest, &bytes).await;
            }
        }
    }
    ua.flush().await;
    let (code, ok, failed, stderr) = sipp.finish().await;
    assert_eq!(code, Some(0), "sipp: {stderr}");
    assert_eq!((ok, failed), (u64::from(CALLS), 0));
    assert_eq!(finished, CALLS);
    assert_eq!(pracked, CALLS, "one PRACK per call");
    assert_eq!(
        resends, 0,
        "SIPp PRACKed at once, nothing to retransmit on loopback"
    );
    assert!(calls.values().all(|c| !c.rel.is_waiting()));
}

/// Our UAC offers 100rel; SIPp answers with a reliable 183 (SDP answer, RSeq 1): we PRACK it
/// with the right RAck, complete the call on the 200, ACK it to SIPp's Contact and BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_caller_pracks_sipps_reliable_183() {
    let mut ua = Ua::bind().await;
    let sipp = Sipp::start("prack_uas.xml", None, CALLS, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limit = Instant::now() + Duration::from_secs(30);
    let mut pracks = 0u32;
    for _ in 0..CALLS {
        let mut invite = ua.new_request(Method::Invite, sipp.addr, "callee");
        offer_100rel(&mut invite, false);
        invite
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        invite.body = SDP_OFFER.as_bytes().to_vec();
        let mut oa = OfferAnswer::default();
        oa.offer_sent().unwrap();
        let mut uac = UacPrack::new(&invite).unwrap();
        let inv_key = ua
            .layer
            .send_request(
                Instant::now(),
                invite.clone(),
                sipp.addr,
                Reliability::Unreliable,
            )
            .unwrap();
        let mut dialog: Option<Dialog> = None;
        let mut bye_key = None;
        let mut done = false;
        while !done && Instant::now() < limit {
            for ev in ua.step(None, limit).await {
                let now = Instant::now();
                let TuEvent::Response { key, response } = ev else {
                    if let TuEvent::Timeout { key } = ev {
                        panic!("timeout {key:?}");
                    }
                    continue;
                };
                if key == inv_key && response.status < 200 && response.status > 100 {
                    match uac.handle_provisional(&response) {
                        Provisional::Reliable(rack) => {
                            let d = dialog.get_or_insert_with(|| {
                                Dialog::new_uac(&invite, &response, via(&ua)).unwrap()
                            });
                            assert_eq!(
                                oa.classify_incoming(has_sdp(&response.headers, &response.body)),
                                Ok(BodyRole::Answer)
                            );
                            oa.answer_received();
                            let prack = UacPrack::prack(d, &rack, &ua.branch(), None).unwrap();
                            assert_eq!(prack.headers.get(&HeaderName::RAck), Some("1 1 INVITE"));
                            let dest = uri_socket_addr(d.next_hop()).unwrap();
                            ua.layer
                                .send_request(now, prack, dest, Reliability::Unreliable)
                                .unwrap();
                            pracks += 1;
                        }
                        other => panic!("expected a reliable 183, got {other:?}"),
                    }
                } else if key == inv_key && response.status == 200 {
                    let d = dialog.as_mut().expect("early dialog from the 183");
                    d.handle_response(&response);
                    let ack = d.ack_for_2xx(&response, &ua.branch(), None).unwrap();
                    let dest = uri_socket_addr(d.next_hop()).unwrap();
                    ua.send_raw(dest, &ack.to_bytes()).await;
                    if bye_key.is_none() {
                        let bye = d.new_request(Method::Bye, &ua.branch()).unwrap();
                        bye_key = Some(
                            ua.layer
                                .send_request(now, bye, dest, Reliability::Unreliable)
                                .unwrap(),
                        );
                    }
                } else if Some(&key) == bye_key.as_ref() && response.status == 200 {
                    done = true;
                } else if key.method == Method::Prack {
                    assert_eq!(response.status, 200);
                }
            }
        }
        assert!(done, "call did not complete");
        assert!(oa.is_idle() && oa.completed() == 1);
    }
    let (code, ok, failed, stderr) = sipp.finish().await;
    assert_eq!(code, Some(0), "sipp: {stderr}");
    assert_eq!((ok, failed), (u64::from(CALLS), 0));
    assert_eq!(pracks, CALLS);
}

/// Both ends ours, on virtual time over a lossy "network": the INVITE has no SDP, so the UAS
/// offers in a reliable 183 and the PRACK carries the answer. The first PRACK is lost: the
/// UAS retransmits the 183 at T1, the UAC discards the retransmission as already seen (its
/// PRACK transaction retransmits by itself), and the held 200 goes out only after the PRACK
/// finally arrives.
#[test]
fn offer_in_reliable_183_answer_in_prack_with_a_lost_prack() {
    let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:5060".parse().unwrap();
    let mut uac = TransactionLayer::new(TimerConfig::default());
    let mut uas = TransactionLayer::new(TimerConfig::default());
    let t0 = Instant::now();
    let text = format!(
        "INVITE sip:b@{b} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKi\r\nMax-Forwards: 70\r\n\
         From: <sip:a@{a}>;tag=ta\r\nTo: <sip:b@{b}>\r\nCall-ID: vt1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:a@{a}>\r\nSupported: 100rel\r\nContent-Length: 0\r\n\r\n"
    );
    let Ok(gateway::sip::message::Message::Request(invite)) =
        gateway::sip::parse::parse_message(text.as_bytes())
    else {
        unreachable!()
    };
    let vt = |addr: SocketAddr| ViaTemplate {
        transport: "UDP".into(),
        sent_by: addr.to_string(),
    };
    let mut uac_oa = OfferAnswer::default();
    let mut uac_rel = UacPrack::new(&invite).unwrap();
    let inv_key = uac
        .send_request(t0, invite.clone(), b, Reliability::Unreliable)
        .unwrap();

    // Deliver INVITE.
    let wire = uac.poll_transmit().unwrap();
    uas.handle_datagram(t0, &wire.bytes, a, Reliability::Unreliable);
    let Some(TuEvent::Request {
        key: uas_key,
        request,
        ..
    }) = uas.poll_event()
    else {
        panic!()
    };
    let mut uas_dialog = Dialog::new_uas(
        &request,
        "tb",
        Uri::parse(&format!("sip:b@{b}")).unwrap(),
        vt(b),
    )
    .unwrap();
    let mut uas_oa = OfferAnswer::default();
    assert_eq!(uas_oa.classify_incoming(false), Ok(BodyRole::None));
    let mut rel = UasPrack::for_invite(&request, PrackConfig::default(), 42).unwrap();
    let mut p183 = uas_dialog.response(&request, 183);
    p183.headers
        .push(HeaderName::ContentType, "application/sdp");
    p183.body = SDP_OFFER.as_bytes().to_vec();
    uas_oa.offer_sent().unwrap();
    let p183 = rel.provisional(t0, p183).unwrap();
    uas.send_response(t0, &uas_key, p183).unwrap();
    let held = uas_dialog.response(&request, 200);
    assert!(rel.final_response(held).is_none());

    // Deliver the 183 to the UAC: reliable, carries an offer; answer in the PRACK.
    let wire = uas.poll_transmit().unwrap();
    uac.handle_datagram(t0, &wire.bytes, b, Reliability::Unreliable);
    let Some(TuEvent::Response { response: r183, .. }) = uac.poll_event() else {
        panic!()
    };
    let Provisional::Reliable(rack) = uac_rel.handle_provisional(&r183) else {
        panic!()
    };
    assert_eq!(rack.rseq, 42);
    assert_eq!(
        uac_oa.classify_incoming(has_sdp(&r183.headers, &r183.body)),
        Ok(BodyRole::Offer)
    );
    uac_oa.offer_received().unwrap();
    let mut uac_dialog = Dialog::new_uac(&invite, &r183, vt(a)).unwrap();
    let prack = UacPrack::prack(
        &mut uac_dialog,
        &rack,
        "z9hG4bKp",
        Some(SDP_OFFER.as_bytes()),
    )
    .unwrap();
    uac_oa.answer_sent();
    uac.send_request(t0, prack, b, Reliability::Unreliable)
        .unwrap();
    let _lost = uac.poll_transmit().unwrap();

    // T1 later: the UAS resends the 183, the UAC's PRACK transaction resends the PRACK.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(rel.poll_timeout(), Some(t1));
    let Some(UasPrackEvent::Resend(again)) = rel.handle_timeout(t1) else {
        panic!()
    };
    uas.send_response(t1, &uas_key, again).unwrap();
    let wire = uas.poll_transmit().unwrap();
    uac.handle_datagram(t1, &wire.bytes, b, Reliability::Unreliable);
    let Some(TuEvent::Response { response: dup, key }) = uac.poll_event() else {
        panic!()
    };
    assert_eq!(key, inv_key);
    assert_eq!(uac_rel.handle_provisional(&dup), Provisional::Discard);
    uac.handle_timeout(t1);
    let prack_wire = uac.poll_transmit().expect("Timer E resends the PRACK");

    // The PRACK arrives: the answer completes the UAS's offer, the 200 is released.
    uas.handle_datagram(t1, &prack_wire.bytes, a, Reliability::Unreliable);
    let Some(TuEvent::Request {
        key: prack_key,
        request: prack,
        ..
    }) = uas.poll_event()
    else {
        panic!()
    };
    assert_eq!(
        uas_dialog.handle_request(&prack),
        Ok(InDialogRequest::Other)
    );
    assert_eq!(
        uas_oa.classify_incoming(has_sdp(&prack.headers, &prack.body)),
        Ok(BodyRole::Answer)
    );
    uas_oa.answer_received();
    let out = rel.handle_prack(t1, &prack);
    assert_eq!(out.status, 200);
    let r: Response = uas_dialog.response(&prack, 200);
    uas.send_response(t1, &prack_key, r).unwrap();
    assert_eq!(out.release.len(), 1);
    uas.send_response(t1, &uas_key, out.release[0].clone())
        .unwrap();
    assert!(rel.poll_timeout().is_none(), "no more 183 retransmissions");
    assert!(uas_oa.is_idle() && uac_oa.is_idle());
    let finals: Vec<u16> = std::iter::from_fn(|| uas.poll_transmit())
        .map(|t| {
            let Ok(gateway::sip::message::Message::Response(r)) =
                gateway::sip::parse::parse_message(&t.bytes)
            else {
                panic!()
            };
            r.status
        })
        .collect();
    assert_eq!(finals, vec![200, 200], "PRACK's 200, then the INVITE's");
}
