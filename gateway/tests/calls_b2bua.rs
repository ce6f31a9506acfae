//! The B2BUA core on virtual time: media anchoring in both SDPs, the ACK to leg B sent to its
//! Contact (not to the routing destination), a retransmitted 2xx re-ACKed, leg A that never
//! ACKs hung up on both sides at 64*T1, and refusals (404, 488).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::calls::b2bua::{B2bua, B2buaConfig, CallEvent, Routes};
use gateway::sip::message::{HeaderName, Message, Request, Response};
use gateway::sip::parse::parse_message;
use gateway::sip::sdp::SessionDescription;
use gateway::sip::transaction::{TimerConfig, Transmit};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const GW: &str = "10.0.0.2:5060";
const A: &str = "10.0.0.1:5060";
const B_ROUTE: &str = "10.0.0.3:5060";

fn core() -> B2bua {
    B2bua::new(B2buaConfig {
        sip_addr: addr(GW),
        routes: Routes {
            by_user: [("bob".to_owned(), addr(B_ROUTE))].into_iter().collect(),
            default: None,
        },
        timers: TimerConfig::default(),
        seed: [5; 32],
        credentials: Default::default(),
    })
    .unwrap()
}

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=a 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

fn a_invite(user: &str, body: &str) -> Vec<u8> {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_owned()
    };
    format!(
        "INVITE sip:{user}@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{A}>;tag=at\r\nTo: <sip:{user}@{GW}>\r\nCall-ID: a-call\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{A}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn drain(core: &mut B2bua) -> (Vec<Transmit>, Vec<CallEvent>) {
    let mut t = Vec::new();
    while let Some(x) = core.poll_transmit() {
        t.push(x);
    }
    let mut e = Vec::new();
    while let Some(x) = core.poll_event() {
        e.push(x);
    }
    (t, e)
}

fn parse(t: &Transmit) -> Message {
    parse_message(&t.bytes).unwrap()
}

fn req(t: &Transmit) -> Request {
    match parse(t) {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {}", r.status),
    }
}

fn resp(t: &Transmit) -> Response {
    match parse(t) {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

fn audio_of(body: &[u8]) -> (String, u16) {
    let s = SessionDescription::parse(std::str::from_utf8(body).unwrap()).unwrap();
    let m = s.audio().unwrap();
    (s.address_of(m).unwrap().to_string(), m.port)
}

/// Leg A's INVITE routed to leg B; returns the core, the call URI and B's INVITE.
fn routed(t0: Instant) -> (B2bua, String, Request) {
    let mut c = core();
    c.handle_datagram(t0, &a_invite("bob", &sdp("10.0.0.1", 20000)), addr(A));
    let (_, ev) = drain(&mut c);
    let [CallEvent::AllocateMedia { call }] = ev.as_slice() else {
        panic!("expected AllocateMedia, got {ev:?}");
    };
    assert!(call.starts_with("urn:uuid:") && call.len() == 45, "{call}");
    assert_eq!(call.as_bytes()[23], b'4', "UUID version 4: {call}");
    assert!(c.media_ready(t0, call, addr("10.0.0.2:40000"), addr("10.0.0.2:40002")));
    let (tx, _) = drain(&mut c);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].dest, addr(B_ROUTE));
    let inv = req(&tx[0]);
    (c, call.clone(), inv)
}

fn b_ok(inv: &Request) -> Vec<u8> {
    let mut r = Response::for_request(inv, 200);
    r.ensure_to_tag("bt");
    r.headers
        .push(HeaderName::Contact, "<sip:bob@10.0.0.9:5099>");
    r.headers.push(HeaderName::ContentType, "application/sdp");
    r.body = sdp("10.0.0.9", 30000).into_bytes();
    r.to_bytes()
}

#[test]
fn media_is_anchored_both_ways_and_the_ack_goes_to_b_contact() {
    let t0 = Instant::now();
    let (mut c, call, inv) = routed(t0);
    // Leg B is offered A's codecs at the gateway's leg-B address, nothing of A's address.
    assert_eq!(audio_of(&inv.body), ("10.0.0.2".to_owned(), 40002));
    assert!(!String::from_utf8_lossy(&inv.body).contains("10.0.0.1"));
    assert!(String::from_utf8_lossy(&inv.body).contains("telephone-event/8000"));
    assert_eq!(inv.uri.as_str(), format!("sip:bob@{B_ROUTE}"));
    assert_ne!(inv.headers.call_id().unwrap(), "a-call");

    let ok = b_ok(&inv);
    c.handle_datagram(t0 + Duration::from_millis(10), &ok, addr(B_ROUTE));
    let (tx, ev) = drain(&mut c);
    let ack = tx.iter().find(|t| req_method(t) == Some("ACK")).unwrap();
    assert_eq!(
        ack.dest,
        addr("10.0.0.9:5099"),
        "ACK to B's Contact, not to {B_ROUTE}"
    );
    assert_eq!(req(ack).uri.as_str(), "sip:bob@10.0.0.9:5099");
    let to_a = tx.iter().find(|t| t.dest == addr(A)).unwrap();
    let to_a = resp(to_a);
    assert_eq!(to_a.status, 200);
    assert_eq!(audio_of(&to_a.body), ("10.0.0.2".to_owned(), 40000));
    assert!(!String::from_utf8_lossy(&to_a.body).contains("10.0.0.9"));
    assert_eq!(
        ev,
        vec![CallEvent::MediaPeers {
            call: call.clone(),
            a_remote: addr("10.0.0.1:20000"),
            b_remote: addr("10.0.0.9:30000"),
        }]
    );
    // B retransmits its 2xx (our ACK was lost): the same ACK goes out again, A hears nothing.
    c.handle_datagram(t0 + Duration::from_millis(510), &ok, addr(B_ROUTE));
    let (tx, _) = drain(&mut c);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].dest, addr("10.0.0.9:5099"));
    assert_eq!(tx[0].bytes, ack.bytes);
    assert_eq!(c.calls(), 1);
    assert_eq!(c.legs(), 2);
}

fn req_method(t: &Transmit) -> Option<&'static str> {
    match parse(t) {
        Message::Request(r) if r.method.as_str() == "ACK" => Some("ACK"),
        Message::Request(r) if r.method.as_str() == "BYE" => Some("BYE"),
        _ => None,
    }
}

#[test]
fn leg_a_that_never_acks_gets_2xx_retransmissions_then_both_legs_get_bye_at_32_s() {
    let t0 = Instant::now();
    let (mut c, call, inv) = routed(t0);
    c.handle_datagram(t0, &b_ok(&inv), addr(B_ROUTE));
    let _ = drain(&mut c);
    let mut ok_to_a = Vec::new();
    let mut byes = Vec::new();
    let mut ended = Vec::new();
    while let Some(at) = c.poll_timeout() {
        if at > t0 + Duration::from_secs(40) {
            break;
        }
        c.handle_timeout(at);
        let (tx, ev) = drain(&mut c);
        for t in tx {
            match parse(&t) {
                Message::Response(r) if r.status == 200 && t.dest == addr(A) => {
                    ok_to_a.push((at - t0).as_millis())
                }
                Message::Request(r) if r.method.as_str() == "BYE" => {
                    byes.push((t.dest, (at - t0).as_millis(), r.uri.to_string()))
                }
                _ => {}
            }
        }
        ended.extend(ev);
    }
    assert_eq!(
        ok_to_a,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    // First BYE of each leg at 32 s, to each party's Contact (then BYE retransmissions).
    let first: Vec<_> = byes.iter().filter(|b| b.1 == 32_000).cloned().collect();
    assert_eq!(
        first,
        vec![
            (addr(A), 32_000, format!("sip:alice@{A}")),
            (
                addr("10.0.0.9:5099"),
                32_000,
                "sip:bob@10.0.0.9:5099".to_owned()
            ),
        ]
    );
    assert_eq!(
        ended,
        vec![CallEvent::Ended {
            call,
            reason: "ACK timeout".to_owned()
        }]
    );
    assert_eq!(c.calls(), 0);
    assert_eq!(c.legs(), 0);
}

#[test]
fn unknown_user_gets_404_and_an_offerless_invite_488_with_no_call_left() {
    let t0 = Instant::now();
    let mut c = core();
    c.handle_datagram(t0, &a_invite("nobody", &sdp("10.0.0.1", 20000)), addr(A));
    let (tx, ev) = drain(&mut c);
    assert_eq!(resp(&tx[0]).status, 404);
    assert!(ev.is_empty());
    let mut c = core();
    c.handle_datagram(t0, &a_invite("bob", ""), addr(A));
    let (tx, ev) = drain(&mut c);
    assert_eq!(resp(&tx[0]).status, 488);
    assert!(ev.is_empty());
    assert_eq!(c.calls(), 0);
    assert_eq!(c.stats().rejected, 1);
}
