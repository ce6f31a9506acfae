//! REFER/NOTIFY (RFC 3515), Refer-Sub (RFC 4488), Replaces (RFC 3891) and sipfrag: the
//! helpers on virtual time (including "the final NOTIFY never comes"), and with real SIPp as
//! the transferor (blind REFER to us, with and without a subscription) and as the transferee
//! (our attended REFER with Replaces through a PBX).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Sipp, Ua};
use gateway::sip::dialog::{Dialog, DialogId, InDialogRequest, ViaTemplate, uri_socket_addr};
use gateway::sip::message::{HeaderName, Message, Method, Request, Response, Uri};
use gateway::sip::parse::parse_message;
use gateway::sip::refer::{
    ReferClient, ReferEvent, ReferNotifier, ReferTo, Replaces, accept_refer, check_replaces,
    parse_sipfrag, refer_sub_requested, sipfrag,
};
use gateway::sip::transaction::{Reliability, TransactionKey, TuEvent};

fn req(text: &str) -> Request {
    match parse_message(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn dialog_pair() -> (Dialog, Dialog) {
    let invite = req(
        "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=ta\r\nCall-ID: c1@192.0.2.1\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>\r\nContent-Length: 0\r\n\r\n",
    );
    let vt = |h: &str| ViaTemplate {
        transport: "UDP".into(),
        sent_by: h.into(),
    };
    let mut uas = Dialog::new_uas(
        &invite,
        "tb",
        Uri::parse("sip:b@192.0.2.2").unwrap(),
        vt("192.0.2.2"),
    )
    .unwrap();
    let ok = uas.response(&invite, 200);
    let uac = Dialog::new_uac(&invite, &ok, vt("192.0.2.1")).unwrap();
    (uac, uas)
}

#[test]
fn replaces_round_trips_through_refer_to_and_matches_the_right_side() {
    let (uac, uas) = dialog_pair();
    // The UAC names its dialog for the UAS (its peer): the UAS must recognise it.
    let r = Replaces::for_peer_of(uac.id());
    assert_eq!(r.to_string(), "c1@192.0.2.1;to-tag=tb;from-tag=ta");
    assert!(r.matches(uas.id()));
    assert!(
        !r.matches(uac.id()),
        "tags are from the recipient's point of view"
    );
    let value = ReferTo::format(&Uri::parse("sip:b@192.0.2.2").unwrap(), Some(&r));
    assert_eq!(
        value,
        "<sip:b@192.0.2.2?Replaces=c1%40192.0.2.1%3Bto-tag%3Dtb%3Bfrom-tag%3Dta>"
    );
    let parsed = ReferTo::parse(&value).unwrap();
    assert_eq!(parsed.replaces, Some(r.clone()));
    assert_eq!(parsed.target.as_str(), "sip:b@192.0.2.2");
    // Other embedded headers survive, unescaped.
    let rt = ReferTo::parse("<sip:c@192.0.2.3?Referred-By=%3Csip%3Aa%40x%3E&Foo=bar>").unwrap();
    assert_eq!(
        rt.headers,
        vec![
            ("Referred-By".to_owned(), "<sip:a@x>".to_owned()),
            ("Foo".to_owned(), "bar".to_owned())
        ]
    );
    assert!(Replaces::parse("abc;to-tag=1").is_err());
    assert!(ReferTo::parse("<sip:c@x?Replaces=%ZZ>").is_err());
}

#[test]
fn check_replaces_gives_rfc3891_answers() {
    let (uac, uas) = dialog_pair();
    let r = Replaces::for_peer_of(uac.id());
    assert_eq!(check_replaces(&r, Some(&uas)), Ok(()));
    assert_eq!(check_replaces(&r, None), Err(481));
    assert_eq!(check_replaces(&r, Some(&uac)), Err(481), "wrong dialog");
    let mut early = r.clone();
    early.early_only = true;
    assert_eq!(check_replaces(&early, Some(&uas)), Err(486));
    let mut u2 = uas.clone();
    u2.terminate();
    assert_eq!(check_replaces(&r, Some(&u2)), Err(603));
    // An early dialog we did not initiate cannot be replaced.
    let invite = req(
        "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK9\r\n\
         To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=ta\r\nCall-ID: e1\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>\r\nContent-Length: 0\r\n\r\n",
    );
    let early_uas = Dialog::new_uas(
        &invite,
        "tb",
        Uri::parse("sip:b@192.0.2.2").unwrap(),
        ViaTemplate {
            transport: "UDP".into(),
            sent_by: "192.0.2.2".into(),
        },
    )
    .unwrap();
    let r = Replaces {
        call_id: "e1".into(),
        to_tag: "tb".into(),
        from_tag: "ta".into(),
        early_only: false,
    };
    assert_eq!(check_replaces(&r, Some(&early_uas)), Err(481));
}

/// Transferee and transferor on virtual time: 202, NOTIFY 100 (active), NOTIFY 180, final
/// NOTIFY 200 (terminated); the client sees Accepted, Progress, Succeeded; nothing after.
#[test]
fn notifier_and_client_agree_on_progress_and_success() {
    let (mut uac, mut uas) = dialog_pair();
    let t0 = Instant::now();
    let mut refer = uac.new_request(Method::Refer, "z9hG4bKr").unwrap();
    refer
        .headers
        .push(HeaderName::ReferTo, "<sip:agent2@192.0.2.9>");
    let mut client = ReferClient::new(t0, &refer, Duration::from_secs(60));
    assert_eq!(uas.handle_request(&refer), Ok(InDialogRequest::Other));
    let rt = ReferTo::from_request(&refer).unwrap();
    assert_eq!(rt.target.as_str(), "sip:agent2@192.0.2.9");
    let accepted = accept_refer(&mut uas, &refer);
    assert_eq!(accepted.status, 202);
    assert!(accepted.headers.get(&HeaderName::ReferSub).is_none());
    assert_eq!(
        client.handle_response(t0, &accepted),
        Some(ReferEvent::Accepted { subscribed: true })
    );
    let mut notifier = ReferNotifier::new(t0, &refer, Duration::from_secs(60));
    let mut seen = Vec::new();
    for (i, status) in [100u16, 180, 200].into_iter().enumerate() {
        let n = notifier
            .notify(t0, &mut uas, &format!("z9hG4bKn{i}"), status, "")
            .unwrap()
            .unwrap();
        // On the wire and back: the NOTIFY parses, is in the dialog, carries the sipfrag.
        let n = req(std::str::from_utf8(&n.to_bytes()).unwrap());
        assert_eq!(n.headers.get(&HeaderName::Event), Some("refer;id=2"));
        assert_eq!(uac.handle_request(&n), Ok(InDialogRequest::Other));
        let (answer, ev) = client.handle_notify(&n);
        assert_eq!(answer, 200);
        seen.push(ev.unwrap());
    }
    assert_eq!(
        seen,
        vec![
            ReferEvent::Progress(100),
            ReferEvent::Progress(180),
            ReferEvent::Succeeded(200)
        ]
    );
    assert!(client.is_done() && notifier.is_terminated());
    assert!(
        notifier
            .notify(t0, &mut uas, "z9hG4bKx", 200, "")
            .unwrap()
            .is_none()
    );
    assert_eq!(client.poll_timeout(), None);
}

/// The classic hang: 202, NOTIFY 100, then nothing. The client times out, so the transfer
/// executor can take the caller back.
#[test]
fn missing_final_notify_times_out() {
    let (mut uac, mut uas) = dialog_pair();
    let t0 = Instant::now();
    let refer = uac.new_request(Method::Refer, "z9hG4bKr").unwrap();
    let mut client = ReferClient::new(t0, &refer, Duration::from_secs(30));
    uas.handle_request(&refer).unwrap();
    client.handle_response(t0, &accept_refer(&mut uas, &refer));
    let mut notifier = ReferNotifier::new(t0, &refer, Duration::from_secs(60));
    let n = notifier
        .notify(t0, &mut uas, "z9hG4bKn", 100, "Trying")
        .unwrap()
        .unwrap();
    assert!(matches!(
        client.handle_notify(&n),
        (200, Some(ReferEvent::Progress(100)))
    ));
    let at = client.poll_timeout().unwrap();
    assert_eq!(at - t0, Duration::from_secs(30));
    assert_eq!(client.handle_timeout(at - Duration::from_millis(1)), None);
    assert_eq!(client.handle_timeout(at), Some(ReferEvent::TimedOut));
    // A late NOTIFY is answered 481 and changes nothing.
    let late = notifier
        .notify(t0, &mut uas, "z9hG4bKn2", 200, "")
        .unwrap()
        .unwrap();
    assert_eq!(client.handle_notify(&late), (481, None));
    // The notifier's own subscription lapses: its final NOTIFY says so.
    let (mut a, mut b) = dialog_pair();
    let r = a.new_request(Method::Refer, "z9hG4bKr2").unwrap();
    b.handle_request(&r).unwrap();
    let mut nt = ReferNotifier::new(t0, &r, Duration::from_secs(60));
    assert_eq!(nt.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    let last = nt
        .notify(t0 + Duration::from_secs(60), &mut b, "z9hG4bKl", 180, "")
        .unwrap()
        .unwrap();
    assert_eq!(
        last.headers.get(&HeaderName::SubscriptionState),
        Some("terminated;reason=timeout")
    );
}

#[test]
fn refer_sub_false_means_no_notifies_and_the_202_is_the_end() {
    let (mut uac, mut uas) = dialog_pair();
    let t0 = Instant::now();
    let mut refer = uac.new_request(Method::Refer, "z9hG4bKr").unwrap();
    ReferClient::decline_subscription(&mut refer);
    assert!(!refer_sub_requested(&refer));
    let mut client = ReferClient::new(t0, &refer, Duration::from_secs(30));
    uas.handle_request(&refer).unwrap();
    let accepted = accept_refer(&mut uas, &refer);
    assert_eq!(accepted.headers.get(&HeaderName::ReferSub), Some("false"));
    assert_eq!(
        client.handle_response(t0, &accepted),
        Some(ReferEvent::Succeeded(202))
    );
    let mut notifier = ReferNotifier::new(t0, &refer, Duration::from_secs(60));
    assert!(!notifier.is_subscribed());
    assert!(
        notifier
            .notify(t0, &mut uas, "z9hG4bKn", 100, "")
            .unwrap()
            .is_none()
    );
    // A refused REFER fails the transfer.
    let r2 = uac.new_request(Method::Refer, "z9hG4bKr2").unwrap();
    let mut c2 = ReferClient::new(t0, &r2, Duration::from_secs(30));
    let mut no = Response::for_request(&r2, 603);
    no.ensure_to_tag("tb");
    assert_eq!(c2.handle_response(t0, &no), Some(ReferEvent::Failed(603)));
    assert_eq!(parse_sipfrag(&sipfrag(486, "")), Some(486));
    assert_eq!(
        parse_sipfrag(b"SIP/2.0 180 Ringing\r\nTo: x\r\n"),
        Some(180)
    );
    assert_eq!(parse_sipfrag(b"garbage"), None);
}

struct Transferee {
    dialog: Dialog,
    notifier: Option<ReferNotifier>,
    final_at: Option<Instant>,
}

/// SIPp's phone transfers its call to us (blind REFER): 202, NOTIFY 100 at once, NOTIFY 200
/// (terminated) 100 ms later; SIPp checks both and hangs up. With `Refer-Sub: false` the 202
/// echoes it and no NOTIFY is sent.
async fn run_transferee(scenario: &str, expect_notifies: bool) {
    const CALLS: u32 = 5;
    let mut ua = Ua::bind().await;
    let sipp = Sipp::start(scenario, Some(ua.local), CALLS, &["-r", "10"]);
    let mut calls: HashMap<String, Transferee> = HashMap::new();
    let (mut finished, mut notifies) = (0u32, 0u32);
    let limit = Instant::now() + Duration::from_secs(30);
    while finished < CALLS && Instant::now() < limit {
        let wake = calls.values().filter_map(|c| c.final_at).min();
        let events = ua.step(wake, limit).await;
        let now = Instant::now();
        for ev in events {
            match ev {
                TuEvent::Request { key, request, .. } => {
                    let call_id = request.headers.call_id().unwrap().to_owned();
                    let resp = match request.method {
                        Method::Invite => {
                            let contact = Uri::parse(&format!("sip:svc@{}", ua.local)).unwrap();
                            let via = ViaTemplate {
                                transport: "UDP".into(),
                                sent_by: ua.local.to_string(),
                            };
                            let mut d =
                                Dialog::new_uas(&request, &ua.unique("t"), contact, via).unwrap();
                            let ok = d.response(&request, 200);
                            calls.insert(
                                call_id,
                                Transferee {
                                    dialog: d,
                                    notifier: None,
                                    final_at: None,
                                },
                            );
                            ok
                        }
                        Method::Refer => {
                            let c = calls.get_mut(&call_id).unwrap();
                            assert_eq!(
                                c.dialog.handle_request(&request),
                                Ok(InDialogRequest::Other)
                            );
                            let rt = ReferTo::from_request(&request).unwrap();
                            assert!(rt.target.as_str().starts_with("sip:agent2@"));
                            assert!(rt.replaces.is_none(), "blind transfer");
                            let accepted = accept_refer(&mut c.dialog, &request);
                            let mut n = ReferNotifier::new(now, &request, Duration::from_secs(60));
                            if let Some(first) = n
                                .notify(now, &mut c.dialog, &ua.branch(), 100, "Trying")
                                .unwrap()
                            {
                                let dest = uri_socket_addr(c.dialog.next_hop()).unwrap();
                                // The 202 must go before the NOTIFY: queue it first.
                                ua.layer.send_response(now, &key, accepted).unwrap();
                                ua.layer
                                    .send_request(now, first, dest, Reliability::Unreliable)
                                    .unwrap();
                                notifies += 1;
                                c.final_at = Some(now + Duration::from_millis(100));
                                c.notifier = Some(n);
                                continue;
                            }
                            c.notifier = Some(n);
                            accepted
                        }
                        Method::Bye => {
                            let c = calls.get_mut(&call_id).unwrap();
                            assert_eq!(c.dialog.handle_request(&request), Ok(InDialogRequest::Bye));
                            finished += 1;
                            c.dialog.response(&request, 200)
                        }
                        m => panic!("unexpected {m}"),
                    };
                    ua.layer.send_response(now, &key, resp).unwrap();
                }
                TuEvent::Ack { request, .. } => {
                    let c = calls.get_mut(request.headers.call_id().unwrap()).unwrap();
                    assert_eq!(c.dialog.handle_request(&request), Ok(InDialogRequest::Ack));
                }
                TuEvent::Response { response, .. } => {
                    assert_eq!(response.status, 200, "SIPp answers our NOTIFYs 200");
                }
                TuEvent::Timeout { key } => panic!("timeout {key:?}"),
                _ => {}
            }
        }
        for c in calls.values_mut() {
            if c.final_at.is_some_and(|t| t <= now) {
                c.final_at = None;
                let n = c.notifier.as_mut().unwrap();
                let fin = n
                    .notify(now, &mut c.dialog, &ua.branch(), 200, "OK")
                    .unwrap()
                    .unwrap();
                let dest = uri_socket_addr(c.dialog.next_hop()).unwrap();
                ua.layer
                    .send_request(now, fin, dest, Reliability::Unreliable)
                    .unwrap();
                notifies += 1;
                assert!(n.is_terminated());
            }
        }
    }
    ua.flush().await;
    let (code, ok, failed, stderr) = sipp.finish().await;
    assert_eq!(code, Some(0), "sipp: {stderr}");
    assert_eq!((ok, failed), (u64::from(CALLS), 0));
    assert_eq!(notifies, if expect_notifies { 2 * CALLS } else { 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_transferor_gets_202_and_sipfrag_notifies() {
    run_transferee("refer_uac.xml", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_transferor_with_refer_sub_false_gets_no_notify() {
    run_transferee("refer_nosub_uac.xml", false).await;
}

/// We are the transferor: our call to SIPp (a PBX), then an attended REFER whose Refer-To
/// carries Replaces naming another dialog of ours; SIPp accepts, NOTIFYs 100 then 200
/// (terminated); our ReferClient reports Succeeded and we hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_attended_refer_through_sipp_succeeds() {
    const CALLS: u32 = 5;
    let mut ua = Ua::bind().await;
    let sipp = Sipp::start("refer_uas.xml", None, CALLS, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limit = Instant::now() + Duration::from_secs(30);
    // The consultation dialog (ours with the second agent) the REFER asks to replace.
    let consult = DialogId {
        call_id: "consult-1@gw".into(),
        local_tag: "gwc".into(),
        remote_tag: "agent2tag".into(),
    };
    for _ in 0..CALLS {
        let invite = ua.new_request(Method::Invite, sipp.addr, "pbx");
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
        let mut client: Option<ReferClient> = None;
        let mut refer_key: Option<TransactionKey> = None;
        let mut events_seen = Vec::new();
        let mut done = false;
        while !done && Instant::now() < limit {
            for ev in ua.step(None, limit).await {
                let now = Instant::now();
                match ev {
                    TuEvent::Response { key, response }
                        if key == inv_key && response.status == 200 =>
                    {
                        let via = ViaTemplate {
                            transport: "UDP".into(),
                            sent_by: ua.local.to_string(),
                        };
                        let mut d = Dialog::new_uac(&invite, &response, via).unwrap();
                        let ack = d.ack_for_2xx(&response, &ua.branch(), None).unwrap();
                        let dest = uri_socket_addr(d.next_hop()).unwrap();
                        ua.send_raw(dest, &ack.to_bytes()).await;
                        let mut refer = d.new_request(Method::Refer, &ua.branch()).unwrap();
                        let target = Uri::parse("sip:agent2@192.0.2.77").unwrap();
                        refer.headers.push(
                            HeaderName::ReferTo,
                            ReferTo::format(&target, Some(&Replaces::for_peer_of(&consult))),
                        );
                        refer
                            .headers
                            .push(HeaderName::ReferredBy, format!("<sip:gw@{}>", ua.local));
                        client = Some(ReferClient::new(now, &refer, Duration::from_secs(10)));
                        refer_key = Some(
                            ua.layer
                                .send_request(now, refer, dest, Reliability::Unreliable)
                                .unwrap(),
                        );
                        dialog = Some(d);
                    }
                    TuEvent::Response { key, response }
                        if Some(&key) == refer_key.as_ref() && response.status >= 200 =>
                    {
                        events_seen
                            .extend(client.as_mut().unwrap().handle_response(now, &response));
                    }
                    TuEvent::Request { key, request, .. } if request.method == Method::Notify => {
                        let d = dialog.as_mut().unwrap();
                        assert_eq!(d.handle_request(&request), Ok(InDialogRequest::Other));
                        let c = client.as_mut().unwrap();
                        let (status, ev) = c.handle_notify(&request);
                        let r = d.response(&request, status);
                        ua.layer.send_response(now, &key, r).unwrap();
                        if let Some(ev) = ev {
                            events_seen.push(ev.clone());
                            if let ReferEvent::Succeeded(_) = ev {
                                let bye = d.new_request(Method::Bye, &ua.branch()).unwrap();
                                let dest = uri_socket_addr(d.next_hop()).unwrap();
                                ua.layer
                                    .send_request(now, bye, dest, Reliability::Unreliable)
                                    .unwrap();
                            }
                        }
                    }
                    TuEvent::Response { key, response } if key.method == Method::Bye => {
                        assert_eq!(response.status, 200);
                        done = true;
                    }
                    TuEvent::Timeout { key } => panic!("timeout {key:?}"),
                    _ => {}
                }
            }
        }
        assert!(done, "transfer did not complete: {events_seen:?}");
        assert_eq!(
            events_seen,
            vec![
                ReferEvent::Accepted { subscribed: true },
                ReferEvent::Progress(100),
                ReferEvent::Succeeded(200)
            ]
        );
    }
    ua.flush().await;
    let (code, ok, failed, stderr) = sipp.finish().await;
    assert_eq!(code, Some(0), "sipp: {stderr}");
    assert_eq!((ok, failed), (u64::from(CALLS), 0));
}
