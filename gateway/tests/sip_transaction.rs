//! RFC 3261 §17 transactions on virtual time: retransmission schedules, timeouts, ACK handling,
//! 100 Trying, CANCEL, reliable transports and malformed input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::sip::message::{HeaderName, Message, Method, Request, Response};
use gateway::sip::parse::parse_message;
use gateway::sip::transaction::{
    Reliability, Role, TimerConfig, TransactionLayer, Transmit, TuEvent,
};

const PEER: &str = "192.0.2.10:5060";

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

fn request(method: &str, branch: &str) -> Request {
    let text = format!(
        "{method} sip:bob@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@192.0.2.1>;tag=a1\r\n\
To: <sip:bob@192.0.2.10>\r\n\
Call-ID: call-{branch}\r\n\
CSeq: 1 {method}\r\n\
Contact: <sip:alice@192.0.2.1>\r\n\
Content-Length: 0\r\n\r\n"
    );
    match parse_message(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn response_to(req: &Request, status: u16, to_tag: &str) -> Vec<u8> {
    let mut r = Response::for_request(req, status);
    if !to_tag.is_empty() {
        r.ensure_to_tag(to_tag);
    }
    r.to_bytes()
}

/// Items with the virtual time at which they appeared.
type Timed<T> = Vec<(Duration, T)>;

/// Runs the layer on virtual time until `until`, returning every transmit with its time offset
/// from `t0` and every event.
fn run_until(
    layer: &mut TransactionLayer,
    t0: Instant,
    until: Duration,
) -> (Timed<Transmit>, Timed<TuEvent>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let drain =
        |layer: &mut TransactionLayer, now: Instant, sent: &mut Vec<_>, events: &mut Vec<_>| {
            while let Some(t) = layer.poll_transmit() {
                sent.push((now - t0, t));
            }
            while let Some(e) = layer.poll_event() {
                events.push((now - t0, e));
            }
        };
    drain(layer, t0, &mut sent, &mut events);
    while let Some(at) = layer.poll_timeout() {
        if at > t0 + until {
            break;
        }
        layer.handle_timeout(at);
        drain(layer, at, &mut sent, &mut events);
    }
    (sent, events)
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn first_line(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn invite_client_retransmits_from_500ms_doubling_and_times_out_at_64_t1() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let key = layer
        .send_request(
            t0,
            request("INVITE", "z9hG4bKa"),
            peer(),
            Reliability::Unreliable,
        )
        .unwrap();
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    // Timer A: T1, 2T1, 4T1, ... (no T2 cap for INVITE) until Timer B = 64*T1 = 32 s.
    assert_eq!(times, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert!(
        sent.iter()
            .all(|(_, t)| first_line(t).starts_with("INVITE "))
    );
    assert_eq!(
        events,
        vec![
            (ms(32_000), TuEvent::Timeout { key: key.clone() }),
            (ms(32_000), TuEvent::Terminated { key }),
        ]
    );
    assert!(layer.is_empty());
    assert_eq!(layer.stats().retransmissions, 6);
}

#[test]
fn non_invite_client_interval_caps_at_t2_and_times_out_at_64_t1() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let key = layer
        .send_request(
            t0,
            request("OPTIONS", "z9hG4bKo"),
            peer(),
            Reliability::Unreliable,
        )
        .unwrap();
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    // Timer E: 500, 1000, 2000, 4000 (= T2), 4000, ... ; Timer F at 32 s.
    assert_eq!(
        times,
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        events.first(),
        Some(&(ms(32_000), TuEvent::Timeout { key }))
    );
}

#[test]
fn non_invite_client_in_proceeding_retransmits_every_t2() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let req = request("OPTIONS", "z9hG4bKp");
    layer
        .send_request(t0, req.clone(), peer(), Reliability::Unreliable)
        .unwrap();
    let _ = layer.poll_transmit();
    // A 100 at 100 ms: Timer E continues, and from then on fires at T2 intervals.
    layer.handle_datagram(
        t0 + ms(100),
        &response_to(&req, 100, ""),
        peer(),
        Reliability::Unreliable,
    );
    let (sent, _) = run_until(&mut layer, t0, Duration::from_secs(10));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(times, vec![500, 4500, 8500]);
}

#[test]
fn reliable_transport_sends_once_and_still_times_out() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let key = layer
        .send_request(
            t0,
            request("INVITE", "z9hG4bKr"),
            peer(),
            Reliability::Reliable,
        )
        .unwrap();
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert_eq!(sent.len(), 1, "TCP/TLS: no retransmissions");
    assert_eq!(
        events.first(),
        Some(&(ms(32_000), TuEvent::Timeout { key }))
    );
}

#[test]
fn reliable_server_non_2xx_ends_on_ack_without_retransmitting() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKrs");
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(),
        Reliability::Reliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    let mut resp = Response::for_request(&inv, 486);
    resp.ensure_to_tag("b1");
    layer
        .send_response(t0 + ms(10), &key, resp.clone())
        .unwrap();
    let ack = gateway::sip::transaction::build_ack(&inv, &resp);
    layer.handle_message(
        t0 + ms(20),
        Message::Request(ack),
        peer(),
        Reliability::Reliable,
    );
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert_eq!(sent.len(), 1, "only the 486 itself");
    // Timer I is zero on reliable transports.
    assert_eq!(events, vec![(ms(20), TuEvent::Terminated { key })]);
}

#[test]
fn invite_server_sends_100_trying_after_200ms_unless_tu_answered() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    layer.handle_message(
        t0,
        Message::Request(request("INVITE", "z9hG4bK1")),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { .. }) = layer.poll_event() else {
        panic!()
    };
    assert_eq!(layer.poll_timeout(), Some(t0 + ms(200)));
    layer.handle_timeout(t0 + ms(199));
    assert!(layer.poll_transmit().is_none());
    layer.handle_timeout(t0 + ms(200));
    let t = layer.poll_transmit().expect("100 Trying");
    assert_eq!(first_line(&t), "SIP/2.0 100 Trying");
    assert_eq!(t.dest, peer());
    // A retransmitted INVITE gets the 100 again, and the TU does not see it twice.
    layer.handle_message(
        t0 + ms(500),
        Message::Request(request("INVITE", "z9hG4bK1")),
        peer(),
        Reliability::Unreliable,
    );
    assert_eq!(
        first_line(&layer.poll_transmit().unwrap()),
        "SIP/2.0 100 Trying"
    );
    assert!(layer.poll_event().is_none());

    // Second INVITE: the TU rings at 50 ms, so no automatic 100.
    layer.handle_message(
        t0,
        Message::Request(request("INVITE", "z9hG4bK2")),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    let mut ringing = Response::for_request(&request("INVITE", "z9hG4bK2"), 180);
    ringing.ensure_to_tag("b2");
    layer.send_response(t0 + ms(50), &key, ringing).unwrap();
    assert_eq!(
        first_line(&layer.poll_transmit().unwrap()),
        "SIP/2.0 180 Ringing"
    );
    layer.handle_timeout(t0 + ms(300));
    assert!(layer.poll_transmit().is_none(), "no 100 after the TU's 180");
}

#[test]
fn non_2xx_ack_is_absorbed_and_2xx_ack_goes_to_the_tu() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    // Non-2xx: the ACK (same branch) is absorbed; Timer G retransmits the 486 until then.
    let inv = request("INVITE", "z9hG4bKn");
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    let mut busy = Response::for_request(&inv, 486);
    busy.ensure_to_tag("b");
    layer
        .send_response(t0 + ms(10), &key, busy.clone())
        .unwrap();
    let _ = layer.poll_transmit();
    let (sent, _) = run_until(&mut layer, t0, ms(1600));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(times, vec![510, 1510], "Timer G: T1, 2T1");
    let ack = gateway::sip::transaction::build_ack(&inv, &busy);
    layer.handle_message(
        t0 + ms(1700),
        Message::Request(ack.clone()),
        peer(),
        Reliability::Unreliable,
    );
    layer.handle_message(
        t0 + ms(1800),
        Message::Request(ack),
        peer(),
        Reliability::Unreliable,
    );
    assert!(
        layer.poll_event().is_none(),
        "ACK for a non-2xx is absorbed"
    );
    assert_eq!(layer.stats().absorbed_acks, 2);
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert!(sent.is_empty(), "no retransmission after the ACK");
    // Timer I = T4 after the first ACK.
    assert_eq!(events, vec![(ms(6700), TuEvent::Terminated { key })]);

    // 2xx: the ACK is a new transaction (new branch) and goes to the TU.
    let inv = request("INVITE", "z9hG4bKy");
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    let mut ok = Response::for_request(&inv, 200);
    ok.ensure_to_tag("y");
    layer.send_response(t0, &key, ok).unwrap();
    let mut ack = request("ACK", "z9hG4bKy-ack");
    ack.headers.set(HeaderName::CallId, "call-z9hG4bKy");
    layer.handle_message(
        t0 + ms(30),
        Message::Request(ack.clone()),
        peer(),
        Reliability::Unreliable,
    );
    match layer.poll_event() {
        Some(TuEvent::Ack { request, .. }) => assert_eq!(request, ack),
        other => panic!("expected the 2xx ACK at the TU, got {other:?}"),
    }
    // A retransmitted INVITE in Accepted is absorbed silently (2xx retransmission is the TU's).
    layer.handle_message(
        t0 + ms(40),
        Message::Request(inv),
        peer(),
        Reliability::Unreliable,
    );
    assert!(layer.poll_event().is_none());
}

#[test]
fn invite_server_timer_h_fires_when_the_ack_never_comes() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKh");
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    layer
        .send_response(t0, &key, Response::for_request(&inv, 603))
        .unwrap();
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    // The 603 itself, then Timer G: 500, 1000, 2000, 4000 (T2 cap), 4000...
    assert_eq!(
        times,
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        events,
        vec![
            (ms(32_000), TuEvent::Timeout { key: key.clone() }),
            (ms(32_000), TuEvent::Terminated { key }),
        ]
    );
}

#[test]
fn cancel_matches_the_pending_invite_and_unknown_cancel_gets_481() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKc");
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key: inv_key, .. }) = layer.poll_event() else {
        panic!()
    };
    let cancel = gateway::sip::transaction::build_cancel(&inv);
    layer.handle_message(
        t0 + ms(100),
        Message::Request(cancel),
        peer(),
        Reliability::Unreliable,
    );
    let t = layer.poll_transmit().unwrap();
    assert_eq!(first_line(&t), "SIP/2.0 200 OK");
    assert!(String::from_utf8_lossy(&t.bytes).contains("CSeq: 1 CANCEL"));
    assert_eq!(
        layer.poll_event(),
        Some(TuEvent::Cancelled {
            invite: inv_key.clone()
        })
    );
    // The TU answers the INVITE 487; the CANCEL's key is distinct from the INVITE's.
    layer
        .send_response(t0 + ms(110), &inv_key, Response::for_request(&inv, 487))
        .unwrap();
    assert_eq!(
        first_line(&layer.poll_transmit().unwrap()),
        "SIP/2.0 487 Request Terminated"
    );

    let stray = gateway::sip::transaction::build_cancel(&request("INVITE", "z9hG4bKnone"));
    layer.handle_message(t0, Message::Request(stray), peer(), Reliability::Unreliable);
    assert!(first_line(&layer.poll_transmit().unwrap()).starts_with("SIP/2.0 481"));
    assert!(layer.poll_event().is_none());
}

#[test]
fn client_cancel_uses_the_invite_branch_and_its_own_transaction() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv_key = layer
        .send_request(
            t0,
            request("INVITE", "z9hG4bKcc"),
            peer(),
            Reliability::Unreliable,
        )
        .unwrap();
    let _ = layer.poll_transmit();
    let cancel_key = layer.cancel(t0 + ms(100), &inv_key).unwrap();
    assert_eq!(cancel_key.branch, inv_key.branch);
    assert_eq!(cancel_key.method, Method::Cancel);
    assert_eq!(cancel_key.role, Role::Client);
    let t = layer.poll_transmit().unwrap();
    assert_eq!(first_line(&t), "CANCEL sip:bob@192.0.2.10 SIP/2.0");
}

#[test]
fn client_invite_acks_a_non_2xx_final_itself_and_once_to_the_tu() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKf");
    let key = layer
        .send_request(t0, inv.clone(), peer(), Reliability::Unreliable)
        .unwrap();
    let _ = layer.poll_transmit();
    let busy = response_to(&inv, 486, "callee");
    layer.handle_datagram(t0 + ms(50), &busy, peer(), Reliability::Unreliable);
    let ack = layer.poll_transmit().unwrap();
    let ack_text = String::from_utf8_lossy(&ack.bytes).into_owned();
    assert!(ack_text.starts_with("ACK sip:bob@192.0.2.10 SIP/2.0\r\n"));
    assert!(
        ack_text.contains("branch=z9hG4bKf"),
        "same branch as the INVITE"
    );
    assert!(ack_text.contains("tag=callee"), "To from the response");
    assert!(ack_text.contains("CSeq: 1 ACK"));
    assert!(
        matches!(layer.poll_event(), Some(TuEvent::Response { response, .. }) if response.status == 486)
    );
    // The 486 retransmitted: ACK again, TU not told twice.
    layer.handle_datagram(t0 + ms(550), &busy, peer(), Reliability::Unreliable);
    assert_eq!(layer.poll_transmit().unwrap().bytes, ack.bytes);
    assert!(layer.poll_event().is_none());
    // No INVITE retransmissions after the final; Timer D (32 s) ends it.
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert!(sent.is_empty());
    assert_eq!(events, vec![(ms(32_050), TuEvent::Terminated { key })]);
}

#[test]
fn client_invite_passes_2xx_retransmissions_to_the_tu_until_timer_m() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKok");
    let key = layer
        .send_request(t0, inv.clone(), peer(), Reliability::Unreliable)
        .unwrap();
    let _ = layer.poll_transmit();
    let ok = response_to(&inv, 200, "callee");
    layer.handle_datagram(t0 + ms(50), &ok, peer(), Reliability::Unreliable);
    layer.handle_datagram(t0 + ms(550), &ok, peer(), Reliability::Unreliable);
    let mut oks = 0;
    while let Some(e) = layer.poll_event() {
        assert!(matches!(e, TuEvent::Response { ref response, .. } if response.status == 200));
        oks += 1;
    }
    assert_eq!(oks, 2, "each 2xx goes to the TU so it can re-send its ACK");
    assert!(
        layer.poll_transmit().is_none(),
        "the transaction does not ACK a 2xx"
    );
    let (_, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert_eq!(events, vec![(ms(32_050), TuEvent::Terminated { key })]);
}

#[test]
fn non_invite_server_absorbs_retransmissions_and_replays_its_final() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let opt = request("OPTIONS", "z9hG4bKs");
    layer.handle_message(
        t0,
        Message::Request(opt.clone()),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    layer.handle_message(
        t0 + ms(500),
        Message::Request(opt.clone()),
        peer(),
        Reliability::Unreliable,
    );
    assert!(layer.poll_event().is_none());
    assert!(
        layer.poll_transmit().is_none(),
        "nothing to replay before the TU answers"
    );
    layer
        .send_response(t0 + ms(600), &key, Response::for_request(&opt, 200))
        .unwrap();
    let first = layer.poll_transmit().unwrap();
    layer.handle_message(
        t0 + ms(1500),
        Message::Request(opt),
        peer(),
        Reliability::Unreliable,
    );
    assert_eq!(layer.poll_transmit().unwrap().bytes, first.bytes);
    assert_eq!(layer.stats().absorbed_requests, 2);
    // Timer J = 64*T1 after the final.
    let (_, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert_eq!(events, vec![(ms(32_600), TuEvent::Terminated { key })]);
}

#[test]
fn server_transaction_whose_tu_never_answers_still_ends() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    layer.handle_message(
        t0,
        Message::Request(request("OPTIONS", "z9hG4bKq")),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    let (_, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert_eq!(
        events.last(),
        Some(&(ms(32_000), TuEvent::Terminated { key }))
    );
    assert!(layer.is_empty());
}

#[test]
fn non_invite_client_timer_k_is_t4_unreliable_and_zero_reliable() {
    for (rel, want) in [
        (Reliability::Unreliable, 5_100),
        (Reliability::Reliable, 100),
    ] {
        let t0 = Instant::now();
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let req = request("BYE", "z9hG4bKk");
        let key = layer.send_request(t0, req.clone(), peer(), rel).unwrap();
        layer.handle_datagram(t0 + ms(100), &response_to(&req, 200, "t"), peer(), rel);
        let (_, events) = run_until(&mut layer, t0, Duration::from_secs(60));
        assert!(matches!(
            events.first(),
            Some((_, TuEvent::Response { .. }))
        ));
        assert_eq!(
            events.last(),
            Some(&(ms(want), TuEvent::Terminated { key })),
            "{rel:?}"
        );
    }
}

#[test]
fn malformed_response_is_dropped_and_counted_malformed_request_gets_400() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKm");
    layer
        .send_request(t0, inv.clone(), peer(), Reliability::Unreliable)
        .unwrap();
    let _ = layer.poll_transmit();
    // A 486 whose status code is out of range, and one whose CSeq is garbage.
    let good = String::from_utf8(response_to(&inv, 486, "x")).unwrap();
    for bad in [
        good.replacen("486", "4860", 1),
        good.replace("CSeq: 1 INVITE", "CSeq: one INVITE"),
    ] {
        layer.handle_datagram(t0 + ms(10), bad.as_bytes(), peer(), Reliability::Unreliable);
    }
    assert_eq!(layer.stats().malformed_responses_dropped, 2);
    assert!(layer.poll_event().is_none());
    assert!(
        layer.poll_transmit().is_none(),
        "no ACK for a response we could not parse"
    );
    // The transaction keeps retransmitting as if nothing arrived.
    layer.handle_timeout(t0 + ms(500));
    assert!(first_line(&layer.poll_transmit().unwrap()).starts_with("INVITE"));

    let bad_req = String::from_utf8(request("OPTIONS", "z9hG4bKbad").to_bytes())
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards 70");
    layer.handle_datagram(t0, bad_req.as_bytes(), peer(), Reliability::Unreliable);
    let t = layer.poll_transmit().unwrap();
    assert!(
        first_line(&t).starts_with("SIP/2.0 400"),
        "{}",
        first_line(&t)
    );
    assert_eq!(layer.stats().malformed_requests, 1);
}

#[test]
fn response_with_unknown_branch_is_a_counted_stray() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKunknown");
    layer.handle_datagram(
        t0,
        &response_to(&inv, 200, "z"),
        peer(),
        Reliability::Unreliable,
    );
    assert_eq!(layer.stats().stray_responses, 1);
    assert!(layer.poll_event().is_none());
}

#[test]
fn invite_server_whose_tu_never_answers_sends_408_and_ends() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    layer.handle_message(
        t0,
        Message::Request(request("INVITE", "z9hG4bKsilent")),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(600));
    let lines: Vec<(u64, String)> = sent
        .iter()
        .map(|(d, t)| (d.as_millis() as u64, first_line(t)))
        .collect();
    assert_eq!(lines[0], (200, "SIP/2.0 100 Trying".to_owned()));
    assert_eq!(
        lines[1],
        (180_000, "SIP/2.0 408 Request Timeout".to_owned())
    );
    assert_eq!(
        events,
        vec![
            (ms(180_000), TuEvent::Timeout { key: key.clone() }),
            (ms(212_000), TuEvent::Terminated { key }),
        ]
    );
    assert!(layer.is_empty());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Receive a (possibly mutated) request or response.
        Receive {
            which: u8,
            flip_at: usize,
            flip_to: u8,
        },
        /// Send a request as UAC.
        Send { which: u8, reliable: bool },
        /// TU answers the oldest pending server transaction.
        Answer { status: u16 },
        /// Advance virtual time.
        Wait { ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0usize..400, any::<u8>()).prop_map(|(which, flip_at, flip_to)| Op::Receive {
                which,
                flip_at,
                flip_to
            }),
            (0u8..3, any::<bool>()).prop_map(|(which, reliable)| Op::Send { which, reliable }),
            prop_oneof![Just(100u16), Just(180), Just(200), Just(486)]
                .prop_map(|status| Op::Answer { status }),
            (0u64..40_000).prop_map(|ms| Op::Wait { ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Whatever arrives and whatever the TU does, nothing panics and every transaction
        /// ends once time runs on.
        #[test]
        fn no_panic_and_no_stuck_transaction(ops in proptest::collection::vec(op(), 1..40)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut layer = TransactionLayer::new(TimerConfig::default());
            let methods = ["INVITE", "OPTIONS", "BYE"];
            let mut pending = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Receive { which, flip_at, flip_to } => {
                        let method = methods[usize::from(which % 3)];
                        let req = request(method, &format!("z9hG4bK{}", which % 2));
                        let mut bytes = if which < 3 {
                            req.to_bytes()
                        } else {
                            response_to(&req, 180 + u16::from(which) * 100, "t")
                        };
                        if let Some(b) = bytes.get_mut(flip_at) { *b = flip_to; }
                        layer.handle_datagram(now, &bytes, peer(), Reliability::Unreliable);
                    }
                    Op::Send { which, reliable } => {
                        let method = methods[usize::from(which % 3)];
                        let rel = if reliable { Reliability::Reliable } else { Reliability::Unreliable };
                        let _ = layer.send_request(now, request(method, &format!("z9hG4bKc{i}")), peer(), rel);
                    }
                    Op::Answer { status } => {
                        if let Some((key, req)) = pending.first().cloned() {
                            let mut r = Response::for_request(&req, status);
                            r.ensure_to_tag("x");
                            if layer.send_response(now, &key, r).is_err() || status >= 200 {
                                pending.remove(0);
                            }
                        }
                    }
                    Op::Wait { ms } => {
                        now += Duration::from_millis(ms);
                        layer.handle_timeout(now);
                    }
                }
                while layer.poll_transmit().is_some() {}
                while let Some(e) = layer.poll_event() {
                    if let TuEvent::Request { key, request, .. } = e {
                        pending.push((key, request));
                    }
                }
            }
            // Ten minutes later everything has ended.
            let end = now + Duration::from_secs(600);
            while let Some(at) = layer.poll_timeout() {
                prop_assert!(at <= end, "a timer is scheduled beyond 10 minutes");
                layer.handle_timeout(at);
            }
            prop_assert!(layer.is_empty(), "{} transactions left", layer.len());
        }
    }
}

#[test]
fn timers_follow_a_configured_t1_t2_t4() {
    let timers = TimerConfig {
        t1: ms(100),
        t2: ms(400),
        t4: ms(1000),
        ..TimerConfig::default()
    };
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(timers);
    let key = layer
        .send_request(
            t0,
            request("OPTIONS", "z9hG4bKt1"),
            peer(),
            Reliability::Unreliable,
        )
        .unwrap();
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    // 100, 200, 400 (= T2) doubling, then every 400 ms until Timer F = 64*T1 = 6.4 s.
    assert_eq!(&times[..5], &[0, 100, 300, 700, 1100]);
    assert!(
        times.windows(2).skip(3).all(|w| w[1] - w[0] == 400),
        "{times:?}"
    );
    assert_eq!(events.first(), Some(&(ms(6_400), TuEvent::Timeout { key })));

    // T4 drives Timer K.
    let mut layer = TransactionLayer::new(timers);
    let req = request("BYE", "z9hG4bKt4");
    let key = layer
        .send_request(t0, req.clone(), peer(), Reliability::Unreliable)
        .unwrap();
    layer.handle_datagram(
        t0 + ms(50),
        &response_to(&req, 200, "x"),
        peer(),
        Reliability::Unreliable,
    );
    let (_, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert_eq!(
        events.last(),
        Some(&(ms(1_050), TuEvent::Terminated { key }))
    );
}

#[test]
fn ringing_invite_client_outlives_timer_b_and_timer_c_cancels_it() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKtc");
    let key = layer
        .send_request(t0, inv.clone(), peer(), Reliability::Unreliable)
        .unwrap();
    let _ = layer.poll_transmit();
    // 180 at 1 s stops Timers A and B and starts Timer C (181 s); a later 180 restarts it.
    layer.handle_datagram(
        t0 + ms(1_000),
        &response_to(&inv, 180, "r"),
        peer(),
        Reliability::Unreliable,
    );
    layer.handle_datagram(
        t0 + ms(61_000),
        &response_to(&inv, 180, "r"),
        peer(),
        Reliability::Unreliable,
    );
    while layer.poll_event().is_some() {}
    let (sent, events) = run_until(&mut layer, t0, ms(242_000));
    // Nothing happens at 32 s (Timer B would have ended a ringing call: the "drops at 30 s" bug).
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, ms(242_000));
    assert_eq!(first_line(&sent[0].1), "CANCEL sip:bob@192.0.2.10 SIP/2.0");
    assert_eq!(
        events,
        vec![(ms(242_000), TuEvent::Timeout { key: key.clone() })]
    );
    // The callee answers the CANCEL and then the INVITE 487: ACKed, ended by Timer D.
    let cancel = gateway::sip::transaction::build_cancel(&inv);
    layer.handle_datagram(
        t0 + ms(242_100),
        &response_to(&cancel, 200, "r"),
        peer(),
        Reliability::Unreliable,
    );
    layer.handle_datagram(
        t0 + ms(242_200),
        &response_to(&inv, 487, "r"),
        peer(),
        Reliability::Unreliable,
    );
    let ack = layer.poll_transmit().unwrap();
    assert!(first_line(&ack).starts_with("ACK "));
    let (_, events) = run_until(&mut layer, t0, Duration::from_secs(600));
    assert!(
        events.contains(&(ms(274_200), TuEvent::Terminated { key })),
        "{events:?}"
    );
    assert!(layer.is_empty());
}

#[test]
fn invite_server_2xx_waits_timer_l_then_ends() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let inv = request("INVITE", "z9hG4bKl");
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    let mut ok = Response::for_request(&inv, 200);
    ok.ensure_to_tag("l");
    layer.send_response(t0 + ms(100), &key, ok).unwrap();
    let (sent, events) = run_until(&mut layer, t0, Duration::from_secs(60));
    assert_eq!(
        sent.len(),
        1,
        "the transaction never retransmits a 2xx (the dialog does)"
    );
    assert_eq!(events, vec![(ms(32_100), TuEvent::Terminated { key })]);
}

#[test]
fn responses_carry_received_and_rport_of_the_real_source() {
    // The request says it came from 192.0.2.1:5060 and asks for rport; it really came through a
    // NAT as 198.51.100.7:40000.
    let nat: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut inv = request("INVITE", "z9hG4bKnat");
    inv.headers.push(
        HeaderName::Via,
        "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp",
    );
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        nat,
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    layer.handle_timeout(t0 + ms(200));
    let trying = layer.poll_transmit().unwrap();
    assert_eq!(trying.dest, nat, "replies go to the source, not to sent-by");
    let Message::Response(r) = parse_message(&trying.bytes).unwrap() else {
        panic!()
    };
    let vias = r.headers.vias().unwrap();
    assert_eq!(vias[0].received(), Some("198.51.100.7"));
    assert_eq!(vias[0].rport(), Some(Some(40000)));
    assert_eq!(vias[0].branch(), Some("z9hG4bKnat"));
    assert_eq!(vias[1].host, "proxy.example.com", "further Vias untouched");
    assert_eq!(vias[1].received(), None);
    // The TU's own response is stamped too.
    layer
        .send_response(t0 + ms(300), &key, Response::for_request(&inv, 486))
        .unwrap();
    let busy = layer.poll_transmit().unwrap();
    assert!(String::from_utf8_lossy(&busy.bytes).contains(";rport=40000;received=198.51.100.7"));

    // Without rport and from the sent-by address itself: nothing added.
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut opt = request("OPTIONS", "z9hG4bKplain");
    opt.headers.set(
        HeaderName::Via,
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKplain",
    );
    layer.handle_message(
        t0,
        Message::Request(opt.clone()),
        peer(),
        Reliability::Unreliable,
    );
    let Some(TuEvent::Request { key, .. }) = layer.poll_event() else {
        panic!()
    };
    layer
        .send_response(t0, &key, Response::for_request(&opt, 200))
        .unwrap();
    let ok = String::from_utf8(layer.poll_transmit().unwrap().bytes).unwrap();
    assert!(
        ok.contains("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKplain\r\n"),
        "{ok}"
    );
}

#[test]
fn absurd_configured_timers_are_clamped_not_a_panic() {
    let huge = Duration::from_secs(u64::MAX / 4);
    let timers = TimerConfig {
        t1: huge,
        t2: huge,
        t4: huge,
        timer_d: huge,
        timer_c: Some(huge),
        trying_delay: huge,
        server_invite_timeout: huge,
    };
    let t0 = Instant::now();
    let mut layer = TransactionLayer::new(timers);
    let inv = request("INVITE", "z9hG4bKhuge");
    layer
        .send_request(t0, inv.clone(), peer(), Reliability::Unreliable)
        .unwrap();
    layer.handle_message(
        t0,
        Message::Request(request("INVITE", "z9hG4bKhuge2")),
        peer(),
        Reliability::Unreliable,
    );
    // T1 is clamped to 60 s: the first retransmission is at 60 s, Timer B at 64 min.
    assert_eq!(layer.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    let (_, _) = run_until(&mut layer, t0, Duration::from_secs(24 * 3600));
    assert!(layer.is_empty());
}
