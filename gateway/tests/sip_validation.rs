//! Request validation in the transaction layer's receive path (RFC 3261 §8.2, §16.3 step 2,
//! §8.1.3.3), on virtual time: what every UA built on the layer answers for a malformed or
//! unsupported request, what it does with a malformed response, and a property test over
//! mutated messages that nothing panics, every request is answered exactly once (by the layer
//! or the TU) and every transaction ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::sip::message::{HeaderName, Message, Method, Response};
use gateway::sip::parse::parse_message;
use gateway::sip::transaction::{Reliability, TimerConfig, TransactionLayer, Transmit, TuEvent};
use gateway::sip::validate::UasPolicy;
use proptest::prelude::*;

fn peer() -> SocketAddr {
    "192.0.2.10:5062".parse().unwrap()
}

fn request_text(method: &str, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:bob@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@192.0.2.10>;tag=a1\r\n\
To: <sip:bob@192.0.2.1>\r\n\
Call-ID: call-{branch}\r\n\
CSeq: 1 {method}\r\n\
Contact: <sip:alice@192.0.2.10>\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn parse_response(t: &Transmit) -> Response {
    match parse_message(&t.bytes) {
        Ok(Message::Response(r)) => r,
        other => panic!("layer sent something that is not a response: {other:?}"),
    }
}

/// Feeds one datagram and returns what the layer sent and told the TU.
fn feed(layer: &mut TransactionLayer, now: Instant, bytes: &[u8]) -> (Vec<Transmit>, Vec<TuEvent>) {
    layer.handle_datagram(now, bytes, peer(), Reliability::Unreliable);
    let mut sent = Vec::new();
    while let Some(t) = layer.poll_transmit() {
        sent.push(t);
    }
    let mut events = Vec::new();
    while let Some(e) = layer.poll_event() {
        events.push(e);
    }
    (sent, events)
}

/// Runs every timer until the layer is empty (bounded), answering nothing.
fn drain_to_empty(layer: &mut TransactionLayer, mut now: Instant) -> Instant {
    for _ in 0..10_000 {
        let Some(at) = layer.poll_timeout() else {
            break;
        };
        now = now.max(at);
        layer.handle_timeout(now);
        while layer.poll_transmit().is_some() {}
        while layer.poll_event().is_some() {}
    }
    now
}

fn single_refusal(text: &str) -> Response {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let (sent, events) = feed(&mut layer, Instant::now(), text.as_bytes());
    assert!(
        events.iter().all(|e| !matches!(e, TuEvent::Request { .. })),
        "the TU must not see a refused request: {events:?}"
    );
    assert_eq!(sent.len(), 1, "exactly one response: {sent:?}");
    assert_eq!(sent[0].dest, peer());
    parse_response(&sent[0])
}

fn warning(resp: &Response) -> String {
    resp.headers
        .get(&HeaderName::Warning)
        .unwrap_or_else(|| panic!("no Warning in {} {}", resp.status, resp.reason))
        .to_owned()
}

#[test]
fn malformed_request_gets_400_saying_what_is_wrong() {
    let text = request_text("OPTIONS", "z9hG4bKm1", "Subject hello\r\n", "");
    let resp = single_refusal(&text);
    assert_eq!(resp.status, 400);
    assert!(resp.reason.contains("no colon"), "{}", resp.reason);
    let w = warning(&resp);
    assert!(w.starts_with("399 spanbridge \"line 9"), "{w}");
    assert!(w.contains("header line has no colon"), "{w}");
}

#[test]
fn wrong_version_gets_505() {
    let text = request_text("OPTIONS", "z9hG4bKv1", "", "").replace("SIP/2.0\r\n", "SIP/7.0\r\n");
    let resp = single_refusal(&text);
    assert_eq!(resp.status, 505);
    assert!(warning(&resp).contains("SIP/7.0"));
}

#[test]
fn unknown_method_gets_501_with_allow() {
    let resp = single_refusal(&request_text("FROBNICATE", "z9hG4bKu1", "", ""));
    assert_eq!(resp.status, 501);
    let allow = resp.headers.get(&HeaderName::Allow).unwrap();
    for m in [
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "PRACK", "UPDATE", "REFER",
    ] {
        assert!(allow.contains(m), "{m} missing from Allow: {allow}");
    }
    assert!(resp.headers.to().unwrap().tag().is_some(), "To tag added");
}

#[test]
fn unsupported_require_gets_420_listing_only_the_unknown_tags() {
    let resp = single_refusal(&request_text(
        "INVITE",
        "z9hG4bKr1",
        "Require: 100rel, frobnication, timer\r\n",
        "",
    ));
    assert_eq!(resp.status, 420);
    assert_eq!(
        resp.headers.get(&HeaderName::Unsupported),
        Some("frobnication")
    );
}

#[test]
fn max_forwards_zero_gets_483_but_options_is_answered() {
    let text =
        request_text("INVITE", "z9hG4bKh1", "", "").replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(single_refusal(&text).status, 483);
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let text =
        request_text("OPTIONS", "z9hG4bKh2", "", "").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let (sent, events) = feed(&mut layer, Instant::now(), text.as_bytes());
    assert!(sent.is_empty());
    assert!(matches!(events.as_slice(), [TuEvent::Request { .. }]));
}

#[test]
fn unknown_body_type_and_coding_get_415_with_accept() {
    let resp = single_refusal(&request_text(
        "INVITE",
        "z9hG4bKc1",
        "Content-Type: application/x-frob\r\n",
        "xyz",
    ));
    assert_eq!(resp.status, 415);
    assert!(
        resp.headers
            .get(&HeaderName::Accept)
            .unwrap()
            .contains("application/sdp")
    );
    let resp = single_refusal(&request_text(
        "INVITE",
        "z9hG4bKc2",
        "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
        "xyz",
    ));
    assert_eq!(resp.status, 415);
}

#[test]
fn unknown_uri_scheme_gets_416() {
    let text = request_text("OPTIONS", "z9hG4bKs1", "", "").replace(
        "OPTIONS sip:bob@192.0.2.1",
        "OPTIONS mailto:bob@example.com",
    );
    assert_eq!(single_refusal(&text).status, 416);
}

#[test]
fn oversized_request_gets_513() {
    let big = "x".repeat(70 * 1024);
    let text = request_text("OPTIONS", "z9hG4bKb1", "", &big).replace(
        "Content-Length",
        "Content-Type: application/sdp\r\nContent-Length",
    );
    let resp = single_refusal(&text);
    assert_eq!(resp.status, 513);
}

/// RFC 3261 §8.2.2.2: the same request (From tag, Call-ID, CSeq) arriving by a second path
/// (a new branch) while the first is live is refused 482; a retransmission is not.
#[test]
fn merged_request_gets_482_and_a_retransmission_does_not() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let first = request_text("OPTIONS", "z9hG4bKp1", "", "");
    let (_, events) = feed(&mut layer, now, first.as_bytes());
    assert!(matches!(events.as_slice(), [TuEvent::Request { .. }]));
    let (sent, events) = feed(&mut layer, now, first.as_bytes());
    assert!(
        sent.is_empty() && events.is_empty(),
        "retransmission absorbed"
    );
    let second = first.replace("branch=z9hG4bKp1", "branch=z9hG4bKp2");
    let (sent, events) = feed(&mut layer, now, second.as_bytes());
    assert!(events.is_empty());
    assert_eq!(parse_response(&sent[0]).status, 482);
    assert_eq!(layer.stats().rejected_requests, 1);
}

/// A refused INVITE's final is retransmitted until the ACK, which the layer absorbs: the
/// transaction ends, nothing is left behind, and a retransmitted INVITE gets the same answer
/// without being counted twice.
#[test]
fn refused_invite_is_retransmitted_until_acked_then_ends() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let t0 = Instant::now();
    let invite = request_text("INVITE", "z9hG4bKi1", "Require: frob\r\n", "");
    let (sent, _) = feed(&mut layer, t0, invite.as_bytes());
    let resp = parse_response(&sent[0]);
    assert_eq!(resp.status, 420);
    layer.handle_timeout(t0 + Duration::from_millis(500));
    let resent = layer.poll_transmit().expect("Timer G resends the 420");
    assert_eq!(resent.bytes, sent[0].bytes);
    let (again, _) = feed(
        &mut layer,
        t0 + Duration::from_millis(600),
        invite.as_bytes(),
    );
    assert_eq!(again.len(), 1);
    assert_eq!(layer.stats().rejected_requests, 1);
    let to = resp.headers.get(&HeaderName::To).unwrap();
    let ack = request_text("ACK", "z9hG4bKi1", "", "")
        .replace("To: <sip:bob@192.0.2.1>", &format!("To: {to}"));
    let (sent, events) = feed(&mut layer, t0 + Duration::from_millis(700), ack.as_bytes());
    assert!(sent.is_empty());
    assert!(events.is_empty(), "the ACK is absorbed: {events:?}");
    assert_eq!(layer.stats().absorbed_acks, 1);
    drain_to_empty(&mut layer, t0 + Duration::from_millis(700));
    assert!(layer.is_empty());
}

#[test]
fn policy_can_be_replaced_or_turned_off() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    layer.set_policy(Some(UasPolicy {
        methods: vec![Method::Options],
        ..UasPolicy::default()
    }));
    let (sent, _) = feed(
        &mut layer,
        Instant::now(),
        request_text("INVITE", "z9hG4bKo1", "", "").as_bytes(),
    );
    assert_eq!(parse_response(&sent[0]).status, 501);
    layer.set_policy(None);
    let (sent, events) = feed(
        &mut layer,
        Instant::now(),
        request_text("FROBNICATE", "z9hG4bKo2", "", "").as_bytes(),
    );
    assert!(sent.is_empty());
    assert!(matches!(events.as_slice(), [TuEvent::Request { .. }]));
}

fn options_client(layer: &mut TransactionLayer, now: Instant, branch: &str) {
    let Message::Request(req) = parse_message(
        request_text("OPTIONS", branch, "", "")
            .replace("192.0.2.10:5060;branch", "192.0.2.1:5060;branch")
            .as_bytes(),
    )
    .unwrap() else {
        unreachable!()
    };
    layer
        .send_request(now, req, peer(), Reliability::Unreliable)
        .unwrap();
    while layer.poll_transmit().is_some() {}
}

fn response_text(branch: &str, extra_via: bool) -> String {
    let via2 = if extra_via {
        "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKother\r\n"
    } else {
        ""
    };
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport=5060\r\n{via2}\
From: <sip:alice@192.0.2.10>;tag=a1\r\nTo: <sip:bob@192.0.2.1>;tag=b\r\n\
Call-ID: call-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Malformed responses (missing CSeq, garbage status, two Via values) are dropped and counted;
/// the transaction still completes on the good response that follows, and the counters say
/// what was wrong.
#[test]
fn malformed_responses_are_dropped_and_counted_and_the_transaction_still_completes() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    options_client(&mut layer, now, "z9hG4bKc9");
    let good = response_text("z9hG4bKc9", false);
    let no_cseq = good.replace("CSeq: 1 OPTIONS\r\n", "");
    let bad_status = good.replace("200 OK", "2000 OK");
    let two_vias = response_text("z9hG4bKc9", true);
    for bad in [&no_cseq, &bad_status, &two_vias] {
        let (sent, events) = feed(&mut layer, now, bad.as_bytes());
        assert!(sent.is_empty() && events.is_empty(), "{bad}: {events:?}");
    }
    assert_eq!(layer.stats().malformed_responses_dropped, 3);
    assert_eq!(layer.stats().misrouted_responses, 1);
    assert!(
        layer
            .stats()
            .last_malformed
            .as_deref()
            .unwrap()
            .contains("Via")
    );
    let (_, events) = feed(&mut layer, now, good.as_bytes());
    assert!(matches!(
        events.as_slice(),
        [TuEvent::Response { response, .. }] if response.status == 200
    ));
    drain_to_empty(&mut layer, now);
    assert!(layer.is_empty());
}

const SEEDS: [&str; 5] = [
    "INVITE sip:bob@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKs1;rport\r\n\
Max-Forwards: 70\r\nFrom: \"A\" <sip:alice@192.0.2.10>;tag=a1\r\nTo: <sip:bob@192.0.2.1>\r\n\
Call-ID: s1@x\r\nCSeq: 7 INVITE\r\nContact: <sip:alice@192.0.2.10>\r\nSupported: 100rel, timer\r\n\
Session-Expires: 1800\r\nContent-Type: application/sdp\r\nContent-Length: 13\r\n\r\nv=0\r\no=- 1 1\r\n",
    "OPTIONS sip:bob@192.0.2.1 SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKs2\r\nf: <sip:a@b>;tag=x\r\n\
t: <sip:bob@192.0.2.1>\r\ni: s2\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
    "BYE sip:bob@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKs3\r\nMax-Forwards: 70\r\n\
From: <sip:a@b>;tag=x\r\nTo: <sip:bob@192.0.2.1>;tag=y\r\nCall-ID: s3\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
    "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1\r\nFrom: <sip:a@b>;tag=x\r\n\
To: <sip:bob@192.0.2.1>;tag=y\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nRSeq: 1\r\nRequire: 100rel\r\nContent-Length: 0\r\n\r\n",
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1\r\nFrom: <sip:a@b>;tag=x\r\n\
To: <sip:bob@192.0.2.1>;tag=y\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.1>\r\nContent-Length: 0\r\n\r\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    Truncate(usize),
    InsertGarbage(usize, Vec<u8>),
    ReplaceStartToken(String),
}

fn apply(seed: &str, muts: &[Mutation]) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for m in muts {
        match m {
            Mutation::FlipByte(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] = *v;
            }
            Mutation::DeleteLine(i) | Mutation::DuplicateLine(i) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<&str> = text.split("\r\n").collect();
                if lines.len() > 2 {
                    let i = 1 + i % (lines.len() - 2);
                    if matches!(m, Mutation::DeleteLine(_)) {
                        lines.remove(i);
                    } else {
                        let l = lines[i];
                        lines.insert(i, l);
                    }
                }
                b = lines.join("\r\n").into_bytes();
            }
            Mutation::Truncate(n) if !b.is_empty() => b.truncate(n % b.len()),
            Mutation::InsertGarbage(i, g) => {
                let i = if b.is_empty() { 0 } else { i % b.len() };
                b.splice(i..i, g.iter().copied());
            }
            Mutation::ReplaceStartToken(t) => {
                if let Some(sp) = b.iter().position(|c| *c == b' ') {
                    b.splice(..sp, t.bytes());
                }
            }
            _ => {}
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (
            any::<usize>(),
            prop::sample::select(vec![
                b':', b' ', b'\r', b'\n', b';', b'<', b'"', 0xff, b'0', b'-'
            ])
        )
            .prop_map(|(i, v)| Mutation::FlipByte(i, v)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, g)| Mutation::InsertGarbage(i, g)),
        prop::sample::select(vec![
            "SIP/3.0", "FOO", "ACK", "CANCEL", "INVITE", "SIP/2.0", "PRACK", ""
        ])
        .prop_map(|t| Mutation::ReplaceStartToken(t.to_owned())),
    ]
}

/// What the layer sends must parse — except a 400/505/513 to a malformed request, which copies
/// the request's own (possibly broken) From/To/Call-ID/CSeq as RFC 3261 §8.2.6.2 says; that one
/// must still have a well-formed status line and a Via (it goes back to the source address).
fn check_output(t: &Transmit, input_ok: bool) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(&t.bytes).into_owned();
    if parse_message(&t.bytes).is_ok() {
        return Ok(());
    }
    prop_assert!(
        !input_ok,
        "answer to a well-formed message does not parse: {text:?}"
    );
    let status_ok = ["SIP/2.0 400 ", "SIP/2.0 505 ", "SIP/2.0 513 "]
        .iter()
        .any(|p| text.starts_with(p));
    prop_assert!(status_ok, "unparsable output {text:?}");
    prop_assert!(
        text.split("\r\n").any(|l| l.starts_with("Via: SIP/")),
        "no Via in {:?}",
        text
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Mutated requests and responses from a peer: the layer never panics, never sends a
    /// message it could not parse itself, answers every request that could be answered at most
    /// once (the TU answers the ones it is given), and every transaction — including those of
    /// our own outstanding INVITE the responses hit — ends.
    #[test]
    fn mutated_messages_never_panic_and_every_transaction_ends(
        seeds in prop::collection::vec((0..SEEDS.len(), prop::collection::vec(mutation(), 0..4)), 1..6),
        tu_answers in any::<bool>(),
    ) {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let t0 = Instant::now();
        // Our own INVITE, so mutated responses have something to hit.
        let Message::Request(inv) = parse_message(
            "INVITE sip:bob@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1\r\n\
From: <sip:a@b>;tag=x\r\nTo: <sip:bob@192.0.2.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:a@192.0.2.1>\r\nContent-Length: 0\r\n\r\n".as_bytes()).unwrap() else { unreachable!() };
        layer.send_request(t0, inv, peer(), Reliability::Unreliable).unwrap();
        let mut now = t0;
        for (i, muts) in &seeds {
            now += Duration::from_millis(10);
            let bytes = apply(SEEDS[*i], muts);
            layer.handle_datagram(now, &bytes, peer(), Reliability::Unreliable);
            let input_ok = parse_message(&bytes).is_ok();
            while let Some(t) = layer.poll_transmit() {
                check_output(&t, input_ok)?;
            }
            while let Some(ev) = layer.poll_event() {
                if let TuEvent::Request { key, request, .. } = ev
                    && tu_answers
                {
                    let mut r = Response::for_request(&request, 200);
                    r.ensure_to_tag("tu");
                    if request.method == Method::Invite {
                        r.status = 486;
                        r.reason = "Busy Here".into();
                    }
                    layer.send_response(now, &key, r).unwrap();
                }
            }
        }
        let mut guard = 0;
        while let Some(at) = layer.poll_timeout() {
            guard += 1;
            prop_assert!(guard < 10_000, "timers never end");
            prop_assert!(at <= t0 + Duration::from_secs(400), "a timer beyond any RFC bound: {:?}", at - t0);
            now = now.max(at);
            layer.handle_timeout(now);
            while let Some(t) = layer.poll_transmit() {
                check_output(&t, false)?;
            }
            while layer.poll_event().is_some() {}
        }
        prop_assert!(layer.is_empty(), "{} transactions left", layer.len());
    }
}
