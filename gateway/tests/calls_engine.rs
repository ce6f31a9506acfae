//! The call engine with its SIP legs on virtual time, driven with raw SIP messages: caller A at
//! 10.0.0.1, the gateway at 10.0.0.2, trunks at 10.0.0.3 (pbx) and 10.0.0.4 (backup). A fake
//! media backend records the media commands. Every scenario ends with no call, no leg and no
//! media left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gateway::calls::cdr::LegMediaStats;
use gateway::calls::engine::{
    CallKey, Engine, EngineConfig, MediaCommand, MediaNotice, MediaSource, OriginateTarget,
    TrunkSettings,
};
use gateway::calls::leg::{
    AudioCodec, DigitSource, DtmfMode, EndCause, LegId, LegIds, LegKind, MediaDirection, PortSlot,
    ServiceKind, SipTransportKind,
};
use gateway::calls::routing::{Destination, IpNet, NumberPattern, Route, RouteTable, SourceMatch};
use gateway::calls::sip_leg::{SipLegs, SipLegsConfig, SipPeer, SipTransmit};
use gateway::calls::switch::{MediaBackend, Switch};
use gateway::sip::message::{HeaderName, Message, Request, Response};
use gateway::sip::parse::parse_message;
use gateway::sip::sdp::SessionDescription;
use gateway::sip::transport::Transport;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const GW: &str = "10.0.0.2:5060";
const A: &str = "10.0.0.1:5060";
const PBX: &str = "10.0.0.3:5060";
const BACKUP: &str = "10.0.0.4:5060";
const B_CONTACT: &str = "10.0.0.9:5099";

#[derive(Debug, Default)]
struct FakeMedia {
    next_port: u16,
    open: HashSet<LegId>,
    log: Vec<MediaCommand>,
}

impl MediaBackend for FakeMedia {
    fn open_rtp(&mut self, leg: LegId, _call: CallKey, ip: IpAddr) -> Result<SocketAddr, String> {
        self.next_port += 2;
        self.open.insert(leg);
        Ok(SocketAddr::new(ip, 40000 + self.next_port))
    }
    fn attach_port(&mut self, leg: LegId, _call: CallKey, _port: PortSlot) -> Result<(), String> {
        self.open.insert(leg);
        Ok(())
    }
    fn execute(&mut self, command: &MediaCommand) -> Result<(), String> {
        if let MediaCommand::Release { leg } = command {
            self.open.remove(leg);
        }
        self.log.push(command.clone());
        Ok(())
    }
    fn leg_stats(&self, _leg: LegId) -> Option<LegMediaStats> {
        Some(LegMediaStats::default())
    }
}

fn trunk(name: &str, address: &str) -> TrunkSettings {
    TrunkSettings {
        name: name.into(),
        address: addr(address),
        transport: SipTransportKind::Udp,
        host: None,
        credentials: None,
        codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
        dtmf: DtmfMode::Rfc4733,
        propagate_hold: true,
        max_calls: None,
    }
}

fn route(name: &str, pattern: &str, dests: &[&str]) -> Route {
    Route {
        name: name.into(),
        pattern: NumberPattern::parse(pattern).unwrap(),
        source: SourceMatch::Any,
        strip: 0,
        prepend: String::new(),
        destinations: dests
            .iter()
            .map(|d| Destination::parse(d).unwrap())
            .collect(),
    }
}

struct Setup {
    trunks: Vec<TrunkSettings>,
    routes: Vec<Route>,
    users: Vec<(String, String)>,
    trusted: Vec<IpNet>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            trunks: vec![trunk("pbx", PBX), trunk("backup", BACKUP)],
            routes: vec![
                route("services-echo", "echo", &["service:echo"]),
                route("services-mw", "milliwatt", &["service:milliwatt"]),
                route("tdm", "9*", &["span_group:e1"]),
                route("failover", "fo*", &["trunk:pbx", "trunk:backup"]),
                route("pbx", "*", &["trunk:pbx"]),
            ],
            users: Vec::new(),
            trusted: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        }
    }
}

fn switch_with(s: Setup) -> Switch<FakeMedia> {
    let ids = LegIds::new();
    let mut sip_cfg = SipLegsConfig::new(addr(GW));
    sip_cfg.trusted = s.trusted;
    sip_cfg.users = s.users;
    sip_cfg.peers = s
        .trunks
        .iter()
        .map(|t| SipPeer {
            name: t.name.clone(),
            address: t.address,
            transport: SipTransportKind::Udp,
            inbound: true,
            keepalive: None,
        })
        .collect();
    let sip = SipLegs::new(sip_cfg, ids.clone());
    let mut cfg = EngineConfig::new(IpAddr::from([10, 0, 0, 2]));
    cfg.trunks = s.trunks;
    cfg.routes = RouteTable {
        routes: s.routes,
        acls: Vec::new(),
    };
    let engine = Engine::new(cfg, ids);
    Switch::new(sip, engine, FakeMedia::default())
}

fn switch() -> Switch<FakeMedia> {
    switch_with(Setup::default())
}

fn sdp(ip: &str, port: u16, codecs: &[(u8, &str)], extra: &str) -> String {
    let pts: Vec<String> = codecs.iter().map(|(p, _)| p.to_string()).collect();
    let maps: String = codecs
        .iter()
        .map(|(p, n)| format!("a=rtpmap:{p} {n}/8000\r\n"))
        .collect();
    format!(
        "v=0\r\no=a 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {} 101\r\n{maps}a=rtpmap:101 telephone-event/8000\r\n{extra}",
        pts.join(" ")
    )
}

fn g711(ip: &str, port: u16) -> String {
    sdp(ip, port, &[(0, "PCMU"), (8, "PCMA")], "")
}

fn invite_from(from: &str, user: &str, body: &str, call_id: &str, extra: &str) -> Vec<u8> {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_owned()
    };
    format!(
        "INVITE sip:{user}@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@{from}>;tag=at\r\nTo: <sip:{user}@{GW}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{from}>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn invite(user: &str, body: &str) -> Vec<u8> {
    invite_from(A, user, body, "a-call", "")
}

fn recv(sw: &mut Switch<FakeMedia>, now: Instant, bytes: &[u8], source: SocketAddr) {
    sw.handle_sip(now, bytes, source, Transport::Udp);
}

fn drain(sw: &mut Switch<FakeMedia>, now: Instant) -> Vec<SipTransmit> {
    let mut v = Vec::new();
    while let Some(t) = sw.poll_transmit(now) {
        v.push(t);
    }
    v
}

fn msg(t: &SipTransmit) -> Message {
    parse_message(&t.bytes).unwrap()
}

fn req_of(t: &SipTransmit) -> Option<Request> {
    match msg(t) {
        Message::Request(r) => Some(r),
        Message::Response(_) => None,
    }
}

fn resp_of(t: &SipTransmit) -> Option<Response> {
    match msg(t) {
        Message::Response(r) => Some(r),
        Message::Request(_) => None,
    }
}

fn find_req(tx: &[SipTransmit], method: &str) -> (SocketAddr, Request) {
    tx.iter()
        .find_map(|t| {
            req_of(t)
                .filter(|r| r.method.as_str() == method)
                .map(|r| (t.dest, r))
        })
        .unwrap_or_else(|| panic!("no {method} in {:?}", summary(tx)))
}

fn find_resp(tx: &[SipTransmit], to: &str, status: u16) -> Response {
    tx.iter()
        .filter(|t| t.dest == addr(to))
        .find_map(|t| resp_of(t).filter(|r| r.status == status))
        .unwrap_or_else(|| panic!("no {status} to {to} in {:?}", summary(tx)))
}

fn summary(tx: &[SipTransmit]) -> Vec<String> {
    tx.iter()
        .map(|t| {
            let line = String::from_utf8_lossy(&t.bytes)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            format!("{} <- {line}", t.dest)
        })
        .collect()
}

fn audio_of(body: &[u8]) -> (String, u16, Vec<String>) {
    let s = SessionDescription::parse(std::str::from_utf8(body).unwrap()).unwrap();
    let m = s.audio().unwrap();
    (
        s.address_of(m).unwrap().to_string(),
        m.port,
        m.codecs()
            .iter()
            .map(|(c, _)| c.encoding_name().to_owned())
            .collect(),
    )
}

fn direction_of(body: &[u8]) -> String {
    let s = SessionDescription::parse(std::str::from_utf8(body).unwrap()).unwrap();
    let m = s.audio().unwrap();
    s.direction_of(m).as_str().to_owned()
}

/// B's response to `inv` with To tag `bt` and Contact B_CONTACT.
fn b_resp(inv: &Request, status: u16, body: Option<String>) -> Vec<u8> {
    let mut r = Response::for_request(inv, status);
    r.ensure_to_tag("bt");
    if status < 300 && status > 100 {
        r.headers
            .push(HeaderName::Contact, format!("<sip:bob@{B_CONTACT}>"));
    }
    if let Some(b) = body {
        r.headers.push(HeaderName::ContentType, "application/sdp");
        r.body = b.into_bytes();
    }
    r.to_bytes()
}

/// A's ACK for the gateway's 2xx `ok` (CSeq `seq`), with an optional SDP answer.
fn a_ack(ok: &Response, seq: u32, body: &str) -> Vec<u8> {
    let to = ok.headers.get(&HeaderName::To).unwrap();
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_owned()
    };
    format!(
        "ACK sip:gw@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch=z9hG4bKack{seq}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@{A}>;tag=at\r\nTo: {to}\r\nCall-ID: a-call\r\nCSeq: {seq} ACK\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An in-dialog request from A (after the gateway's 2xx `ok`).
fn a_request(ok: &Response, method: &str, seq: u32, ctype: &str, body: &str) -> Vec<u8> {
    let to = ok.headers.get(&HeaderName::To).unwrap();
    let ct = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {ctype}\r\n")
    };
    format!(
        "{method} sip:gw@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa{method}{seq}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@{A}>;tag=at\r\nTo: {to}\r\nCall-ID: a-call\r\nCSeq: {seq} {method}\r\nContact: <sip:alice@{A}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An in-dialog request from B on the dialog of the gateway's INVITE `inv`.
fn b_request(inv: &Request, method: &str, seq: u32, ctype: &str, body: &str) -> Vec<u8> {
    let from = inv.headers.get(&HeaderName::From).unwrap();
    let to = inv.headers.get(&HeaderName::To).unwrap();
    let call_id = inv.headers.call_id().unwrap();
    let ct = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {ctype}\r\n")
    };
    format!(
        "{method} sip:gw@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {B_CONTACT};branch=z9hG4bKb{method}{seq}\r\nMax-Forwards: 70\r\nFrom: {to};tag=bt\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContact: <sip:bob@{B_CONTACT}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A call from A to "bob" answered by the pbx; returns the switch, B's INVITE and A's 200 OK.
fn answered_call(t0: Instant) -> (Switch<FakeMedia>, Request, Response) {
    answered_call_on(switch(), t0, "bob")
}

fn answered_call_on(
    mut sw: Switch<FakeMedia>,
    t0: Instant,
    user: &str,
) -> (Switch<FakeMedia>, Request, Response) {
    recv(
        &mut sw,
        t0,
        &invite(user, &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let tx = drain(&mut sw, t0);
    let (dest, inv) = find_req(&tx, "INVITE");
    assert_eq!(dest, addr(PBX));
    recv(
        &mut sw,
        t0,
        &b_resp(&inv, 200, Some(g711("10.0.0.9", 30000))),
        addr(PBX),
    );
    let tx = drain(&mut sw, t0);
    let ok = find_resp(&tx, A, 200);
    (sw, inv, ok)
}

fn assert_idle(sw: &Switch<FakeMedia>) {
    let c = sw.counts();
    assert_eq!((c.calls, c.legs, c.sip_legs), (0, 0, 0), "{c:?}");
    assert!(
        sw.media.open.is_empty(),
        "media left open: {:?}",
        sw.media.open
    );
}

/// Runs timers until `until`, collecting what was sent.
fn run_until(sw: &mut Switch<FakeMedia>, until: Instant) -> Vec<(Instant, SipTransmit)> {
    let mut out = Vec::new();
    while let Some(at) = sw.poll_timeout() {
        if at > until {
            break;
        }
        sw.handle_timeout(at);
        for t in drain(sw, at) {
            out.push((at, t));
        }
    }
    out
}

#[test]
fn basic_call_anchors_media_acks_b_contact_and_ends_with_cdr_and_events() {
    let t0 = Instant::now();
    let mut sw = switch();
    recv(
        &mut sw,
        t0,
        &invite("bob", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let tx = drain(&mut sw, t0);
    find_resp(&tx, A, 100);
    let (dest, inv) = find_req(&tx, "INVITE");
    assert_eq!(dest, addr(PBX));
    assert_eq!(inv.uri.as_str(), format!("sip:bob@{PBX}"));
    assert_ne!(inv.headers.call_id().unwrap(), "a-call");
    let (ip, b_port, codecs) = audio_of(&inv.body);
    assert_eq!(ip, "10.0.0.2");
    assert_eq!(codecs, ["PCMU", "PCMA"]);
    assert!(!String::from_utf8_lossy(&inv.body).contains("10.0.0.1"));
    let from = inv.headers.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("Alice"));

    recv(&mut sw, t0, &b_resp(&inv, 180, None), addr(PBX));
    let tx = drain(&mut sw, t0);
    find_resp(&tx, A, 180);

    let ok_b = b_resp(&inv, 200, Some(g711("10.0.0.9", 30000)));
    let t1 = t0 + Duration::from_millis(10);
    recv(&mut sw, t1, &ok_b, addr(PBX));
    let tx = drain(&mut sw, t1);
    let (ack_dest, ack) = find_req(&tx, "ACK");
    assert_eq!(
        ack_dest,
        addr(B_CONTACT),
        "ACK to B's Contact, not to the trunk"
    );
    assert_eq!(ack.uri.as_str(), format!("sip:bob@{B_CONTACT}"));
    let ok = find_resp(&tx, A, 200);
    let (ip, a_port, codecs) = audio_of(&ok.body);
    assert_eq!(ip, "10.0.0.2");
    assert_ne!(a_port, b_port, "each leg has its own anchored port");
    assert_eq!(codecs, ["PCMU"], "B's codec, no transcoding");
    // Media: both opened, both configured with the party's address, and bridged.
    let log = &sw.media.log;
    let configured: Vec<_> = log
        .iter()
        .filter_map(|c| match c {
            MediaCommand::ConfigureRtp { media, .. } => Some(media.remote.unwrap()),
            _ => None,
        })
        .collect();
    assert!(configured.contains(&addr("10.0.0.9:30000")));
    assert!(configured.contains(&addr("10.0.0.1:20000")));
    assert!(
        log.iter()
            .any(|c| matches!(c, MediaCommand::Connect { .. }))
    );
    // A retransmitted 2xx from B gets the same ACK; A hears nothing.
    recv(&mut sw, t1 + Duration::from_millis(500), &ok_b, addr(PBX));
    let tx = drain(&mut sw, t1);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].bytes, ack.to_bytes());
    // A ACKs, talks, hangs up.
    recv(&mut sw, t1, &a_ack(&ok, 1, ""), addr(A));
    let calls = sw.engine.calls(t1);
    assert_eq!(calls.len(), 1);
    let uri = calls[0].uri.clone();
    assert_eq!(calls[0].state, "answered");
    assert_eq!(calls[0].legs.len(), 2);
    let t2 = t1 + Duration::from_secs(5);
    recv(&mut sw, t2, &a_request(&ok, "BYE", 2, "", ""), addr(A));
    let tx = drain(&mut sw, t2);
    find_resp(&tx, A, 200);
    let (bye_dest, bye) = find_req(&tx, "BYE");
    assert_eq!(bye_dest, addr(B_CONTACT));
    recv(
        &mut sw,
        t2,
        &Response::for_request(&bye, 200).to_bytes(),
        addr(B_CONTACT),
    );
    let cdr = sw.poll_cdr().unwrap();
    assert_eq!(cdr.call_uri, uri);
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("alice", "bob"));
    assert_eq!(cdr.q850, 16);
    assert_eq!(cdr.ended_by, "caller");
    assert_eq!(cdr.billable_ms, 5000);
    assert_eq!(cdr.route.as_deref(), Some("pbx"));
    assert_eq!(cdr.legs.len(), 2);
    assert_eq!(cdr.legs[1].codec, Some(AudioCodec::Pcmu));
    let line = cdr.to_json_line();
    assert!(line.contains(&uri.to_string()), "{line}");
    let events = sw.engine.event_log().since(0).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds, ["call.created", "call.answered", "call.ended"]);
    assert!(events.iter().all(|e| e.event.call_uri() == Some(&uri)));
    assert_idle(&sw);
}

#[test]
fn caller_that_never_acks_gets_2xx_retransmissions_then_both_legs_get_bye_at_32_s() {
    let t0 = Instant::now();
    let (mut sw, _inv, _ok) = answered_call(t0);
    let sent = run_until(&mut sw, t0 + Duration::from_secs(40));
    let ok_times: Vec<u128> = sent
        .iter()
        .filter(|(_, t)| t.dest == addr(A) && resp_of(t).is_some_and(|r| r.status == 200))
        .map(|(at, _)| (*at - t0).as_millis())
        .collect();
    assert_eq!(
        ok_times,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    let first_byes: Vec<SocketAddr> = sent
        .iter()
        .filter(|(at, t)| {
            (*at - t0).as_millis() == 32_000
                && req_of(t).is_some_and(|r| r.method.as_str() == "BYE")
        })
        .map(|(_, t)| t.dest)
        .collect();
    assert!(
        first_byes.contains(&addr(A)) && first_byes.contains(&addr(B_CONTACT)),
        "{first_byes:?}"
    );
    assert_eq!(sw.sip.stats().ack_timeouts, 1);
    let cdr = sw.poll_cdr().unwrap();
    assert_eq!(cdr.q850, 102);
    // The BYE transactions time out unanswered (no one replies here).
    run_until(&mut sw, t0 + Duration::from_secs(120));
    assert_idle(&sw);
}

/// The bug behind the flaky loss test: the callee hangs up while the caller's ACK (or the 200
/// itself) is lost. RFC 3261 §15: the gateway keeps retransmitting the 200 and sends its BYE
/// only once the ACK arrived.
#[test]
fn bye_from_callee_before_callers_ack_waits_for_the_ack() {
    let t0 = Instant::now();
    let (mut sw, inv, ok) = answered_call(t0);
    let t1 = t0 + Duration::from_millis(100);
    recv(
        &mut sw,
        t1,
        &b_request(&inv, "BYE", 1, "", ""),
        addr(B_CONTACT),
    );
    let tx = drain(&mut sw, t1);
    find_resp(&tx, B_CONTACT, 200);
    assert!(
        tx.iter().all(|t| t.dest != addr(A)),
        "no BYE to the caller before its ACK: {:?}",
        summary(&tx)
    );
    let sent = run_until(&mut sw, t0 + Duration::from_millis(600));
    assert!(
        sent.iter()
            .any(|(_, t)| t.dest == addr(A) && resp_of(t).is_some_and(|r| r.status == 200)),
        "the 200 to the caller is still retransmitted"
    );
    let t2 = t0 + Duration::from_millis(700);
    recv(&mut sw, t2, &a_ack(&ok, 1, ""), addr(A));
    let tx = drain(&mut sw, t2);
    let (dest, bye) = find_req(&tx, "BYE");
    assert_eq!(dest, addr(A));
    assert_eq!(sw.sip.stats().byes_deferred, 1);
    recv(
        &mut sw,
        t2,
        &Response::for_request(&bye, 200).to_bytes(),
        addr(A),
    );
    assert_eq!(sw.poll_cdr().unwrap().ended_by, "callee");
    assert_idle(&sw);
}

#[test]
fn cancel_before_answer_cancels_b_after_its_provisional_and_both_get_487() {
    let t0 = Instant::now();
    let mut sw = switch();
    recv(
        &mut sw,
        t0,
        &invite("bob", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let tx = drain(&mut sw, t0);
    let (_, inv) = find_req(&tx, "INVITE");
    // A gives up before B said anything: CANCEL must wait for B's provisional (§9.1).
    let cancel = format!(
        "CANCEL sip:bob@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa-call\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@{A}>;tag=at\r\nTo: <sip:bob@{GW}>\r\nCall-ID: a-call\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    recv(&mut sw, t0, cancel.as_bytes(), addr(A));
    let tx = drain(&mut sw, t0);
    find_resp(&tx, A, 487);
    assert!(tx.iter().all(|t| t.dest != addr(PBX)), "{:?}", summary(&tx));
    recv(&mut sw, t0, &b_resp(&inv, 180, None), addr(PBX));
    let tx = drain(&mut sw, t0);
    let (dest, c) = find_req(&tx, "CANCEL");
    assert_eq!(dest, addr(PBX));
    recv(
        &mut sw,
        t0,
        &Response::for_request(&c, 200).to_bytes(),
        addr(PBX),
    );
    recv(&mut sw, t0, &b_resp(&inv, 487, None), addr(PBX));
    let tx = drain(&mut sw, t0);
    find_req(&tx, "ACK");
    let cdr = sw.poll_cdr().unwrap();
    assert_eq!(cdr.ended_by, "caller");
    assert!(cdr.answer.is_none());
    assert_idle(&sw);
}

#[test]
fn busy_and_decline_are_relayed_with_their_status() {
    for status in [486u16, 603] {
        let t0 = Instant::now();
        let mut sw = switch();
        recv(
            &mut sw,
            t0,
            &invite("bob", &g711("10.0.0.1", 20000)),
            addr(A),
        );
        let tx = drain(&mut sw, t0);
        let (_, inv) = find_req(&tx, "INVITE");
        recv(&mut sw, t0, &b_resp(&inv, status, None), addr(PBX));
        let tx = drain(&mut sw, t0);
        find_req(&tx, "ACK");
        let r = find_resp(&tx, A, status);
        let reason = r.headers.get(&HeaderName::Other("Reason".into())).unwrap();
        assert!(
            reason.starts_with(&format!(
                "Q.850;cause={}",
                if status == 486 { 17 } else { 21 }
            )),
            "{reason}"
        );
        let cdr = sw.poll_cdr().unwrap();
        assert_eq!(cdr.sip_status, Some(status));
        assert_eq!(cdr.attempts.len(), 1);
        assert_idle(&sw);
    }
}

#[test]
fn a_5xx_fails_over_to_the_next_destination_but_busy_does_not() {
    let t0 = Instant::now();
    let mut sw = switch();
    recv(
        &mut sw,
        t0,
        &invite("fo100", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let tx = drain(&mut sw, t0);
    let (dest, inv) = find_req(&tx, "INVITE");
    assert_eq!(dest, addr(PBX));
    recv(&mut sw, t0, &b_resp(&inv, 503, None), addr(PBX));
    let tx = drain(&mut sw, t0);
    let (dest, inv2) = find_req(&tx, "INVITE");
    assert_eq!(dest, addr(BACKUP), "failed over");
    assert!(
        tx.iter()
            .all(|t| t.dest != addr(A) || resp_of(t).is_none_or(|r| r.status < 300))
    );
    recv(&mut sw, t0, &b_resp(&inv2, 486, None), addr(BACKUP));
    let tx = drain(&mut sw, t0);
    find_resp(&tx, A, 486);
    let cdr = sw.poll_cdr().unwrap();
    let tried: Vec<_> = cdr
        .attempts
        .iter()
        .map(|a| (a.destination.clone(), a.sip_status))
        .collect();
    assert_eq!(
        tried,
        [
            ("trunk:pbx".to_owned(), Some(503)),
            ("trunk:backup".to_owned(), Some(486))
        ]
    );
    assert_idle(&sw);
}

#[test]
fn trunk_challenge_is_answered_with_its_credentials_and_refusal_is_a_403() {
    let t0 = Instant::now();
    let mut s = Setup::default();
    s.trunks[0].credentials = Some(("gw-user".into(), "secret".into()));
    let mut sw = switch_with(s);
    recv(
        &mut sw,
        t0,
        &invite("bob", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let tx = drain(&mut sw, t0);
    let (_, inv) = find_req(&tx, "INVITE");
    let mut challenge = Response::for_request(&inv, 401);
    challenge.ensure_to_tag("x");
    challenge.headers.push(
        HeaderName::WwwAuthenticate,
        "Digest realm=\"pbx\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"",
    );
    recv(&mut sw, t0, &challenge.to_bytes(), addr(PBX));
    let tx = drain(&mut sw, t0);
    let (dest, retry) = find_req(&tx, "INVITE");
    assert_eq!(dest, addr(PBX));
    assert_eq!(retry.headers.cseq().unwrap().seq, 2);
    let auth = retry.headers.get(&HeaderName::Authorization).unwrap();
    assert!(
        auth.contains("username=\"gw-user\"") && auth.contains("realm=\"pbx\""),
        "{auth}"
    );
    // The trunk refuses again (wrong password): the caller gets 403, not the challenge.
    let mut again = Response::for_request(&retry, 401);
    again.ensure_to_tag("y");
    again.headers.push(
        HeaderName::WwwAuthenticate,
        "Digest realm=\"pbx\", nonce=\"def\", algorithm=MD5, qop=\"auth\"",
    );
    recv(&mut sw, t0, &again.to_bytes(), addr(PBX));
    let tx = drain(&mut sw, t0);
    find_resp(&tx, A, 403);
    assert_idle(&sw);
}

#[test]
fn hold_from_the_caller_is_answered_locally_and_re_offered_to_the_callee() {
    let t0 = Instant::now();
    let (mut sw, _inv, ok) = answered_call(t0);
    recv(&mut sw, t0, &a_ack(&ok, 1, ""), addr(A));
    let (_, a_port, _) = audio_of(&ok.body);
    let t1 = t0 + Duration::from_secs(1);
    let hold = sdp("10.0.0.1", 20000, &[(0, "PCMU")], "a=sendonly\r\n");
    recv(
        &mut sw,
        t1,
        &a_request(&ok, "INVITE", 2, "application/sdp", &hold),
        addr(A),
    );
    let tx = drain(&mut sw, t1);
    let ok2 = find_resp(&tx, A, 200);
    assert_eq!(direction_of(&ok2.body), "recvonly");
    assert_eq!(audio_of(&ok2.body).1, a_port, "same anchored port");
    let (dest, reinv) = find_req(&tx, "INVITE");
    assert_eq!(dest, addr(B_CONTACT));
    assert_eq!(direction_of(&reinv.body), "sendonly");
    let ev = sw.engine.event_log().since(0).unwrap();
    assert!(ev.iter().any(|e| e.event.kind() == "call.held"));
    // B accepts; we ACK. A's 200 is ACKed.
    let answer = sdp("10.0.0.9", 30000, &[(0, "PCMU")], "a=recvonly\r\n");
    recv(
        &mut sw,
        t1,
        &b_resp(&reinv, 200, Some(answer)),
        addr(B_CONTACT),
    );
    let tx = drain(&mut sw, t1);
    let (_, ack) = find_req(&tx, "ACK");
    assert_eq!(
        ack.headers.cseq().unwrap().seq,
        reinv.headers.cseq().unwrap().seq
    );
    recv(&mut sw, t1, &a_ack(&ok2, 2, ""), addr(A));
    // Resume.
    let t2 = t1 + Duration::from_secs(1);
    let resume = sdp("10.0.0.1", 20000, &[(0, "PCMU")], "a=sendrecv\r\n");
    recv(
        &mut sw,
        t2,
        &a_request(&ok, "INVITE", 3, "application/sdp", &resume),
        addr(A),
    );
    let tx = drain(&mut sw, t2);
    assert_eq!(direction_of(&find_resp(&tx, A, 200).body), "sendrecv");
    let (_, reinv2) = find_req(&tx, "INVITE");
    assert_eq!(direction_of(&reinv2.body), "sendrecv");
    // The media plane saw the caller's direction change (it receives only while held).
    let dirs: Vec<MediaDirection> = sw
        .media
        .log
        .iter()
        .filter_map(|c| match c {
            MediaCommand::ConfigureRtp { media, .. }
                if media.remote == Some(addr("10.0.0.1:20000")) =>
            {
                Some(media.direction)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        dirs,
        [
            MediaDirection::SendRecv,
            MediaDirection::RecvOnly,
            MediaDirection::SendRecv
        ]
    );
}

#[test]
fn reinvite_glare_gets_491_and_our_offer_is_retried_after_the_backoff() {
    let t0 = Instant::now();
    let (mut sw, inv, ok) = answered_call(t0);
    recv(&mut sw, t0, &a_ack(&ok, 1, ""), addr(A));
    let t1 = t0 + Duration::from_secs(1);
    let hold = sdp("10.0.0.1", 20000, &[(0, "PCMU")], "a=inactive\r\n");
    recv(
        &mut sw,
        t1,
        &a_request(&ok, "INVITE", 2, "application/sdp", &hold),
        addr(A),
    );
    let tx = drain(&mut sw, t1);
    let (_, ours) = find_req(&tx, "INVITE");
    // The caller held with "inactive": its partner hears the hold tone from the plane.
    assert!(sw.media.log.iter().any(|c| matches!(
        c,
        MediaCommand::Play {
            source: MediaSource::HoldTone,
            ..
        }
    )));
    // B sends its own re-INVITE at the same time: glare on B's leg.
    let theirs = sdp("10.0.0.9", 30002, &[(0, "PCMU")], "");
    recv(
        &mut sw,
        t1,
        &b_request(&inv, "INVITE", 1, "application/sdp", &theirs),
        addr(B_CONTACT),
    );
    let tx = drain(&mut sw, t1);
    find_resp(&tx, B_CONTACT, 491);
    recv(&mut sw, t1, &b_resp(&ours, 491, None), addr(B_CONTACT));
    drain(&mut sw, t1);
    let sent = run_until(&mut sw, t1 + Duration::from_secs(5));
    let (at, retry) = sent
        .iter()
        .find_map(|(at, t)| {
            req_of(t)
                .filter(|r| r.method.as_str() == "INVITE")
                .map(|r| (*at, r))
        })
        .expect("re-INVITE retried");
    let waited = at - t1;
    assert!(
        waited >= Duration::from_millis(2100) && waited <= Duration::from_secs(4),
        "the owner of the Call-ID waits 2.1-4 s: {waited:?}"
    );
    assert_eq!(direction_of(&retry.body), "sendonly");
    assert!(sw.sip.stats().glare >= 2);
}

#[test]
fn digits_cross_once_in_what_the_far_leg_negotiated() {
    let t0 = Instant::now();
    let (mut sw, _inv, ok) = answered_call(t0);
    recv(&mut sw, t0, &a_ack(&ok, 1, ""), addr(A));
    let a = sw.engine.calls(t0)[0].legs[0].id;
    let b = sw.engine.calls(t0)[0].legs[1].id;
    // INFO from A, then the same press as RFC 4733 from the plane: one digit to B.
    let t1 = t0 + Duration::from_secs(1);
    recv(
        &mut sw,
        t1,
        &a_request(
            &ok,
            "INFO",
            2,
            "application/dtmf-relay",
            "Signal=5\r\nDuration=160\r\n",
        ),
        addr(A),
    );
    let tx = drain(&mut sw, t1);
    find_resp(&tx, A, 200);
    sw.media_event(
        t1 + Duration::from_millis(50),
        a,
        MediaNotice::Digit {
            digit: '5',
            duration: Duration::from_millis(160),
            source: DigitSource::Rfc4733,
        },
    );
    // A second, later press of the same digit is a new digit.
    sw.media_event(
        t1 + Duration::from_millis(600),
        a,
        MediaNotice::Digit {
            digit: '5',
            duration: Duration::from_millis(100),
            source: DigitSource::Rfc4733,
        },
    );
    let sent: Vec<(LegId, char)> = sw
        .media
        .log
        .iter()
        .filter_map(|c| match c {
            MediaCommand::SendDigit { leg, digit, .. } => Some((*leg, *digit)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [(b, '5'), (b, '5')]);
    assert_eq!(sw.engine.stats().digits_deduplicated, 1);
}

#[test]
fn a_trunk_that_wants_info_gets_info_digits() {
    let t0 = Instant::now();
    let mut s = Setup::default();
    s.trunks[0].dtmf = DtmfMode::Info;
    let (mut sw, _inv, ok) = answered_call_on(switch_with(s), t0, "bob");
    recv(&mut sw, t0, &a_ack(&ok, 1, ""), addr(A));
    let a = sw.engine.calls(t0)[0].legs[0].id;
    sw.media_event(
        t0,
        a,
        MediaNotice::Digit {
            digit: '#',
            duration: Duration::from_millis(120),
            source: DigitSource::Rfc4733,
        },
    );
    let tx = drain(&mut sw, t0);
    let (dest, info) = find_req(&tx, "INFO");
    assert_eq!(dest, addr(B_CONTACT));
    assert_eq!(
        String::from_utf8_lossy(&info.body),
        "Signal=#\r\nDuration=120\r\n"
    );
}

#[test]
fn numbers_for_the_tdm_span_group_are_refused_503_until_tdm_legs_exist() {
    let t0 = Instant::now();
    let mut sw = switch();
    recv(
        &mut sw,
        t0,
        &invite("90123", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let tx = drain(&mut sw, t0);
    let r = find_resp(&tx, A, 503);
    let reason = r.headers.get(&HeaderName::Other("Reason".into())).unwrap();
    assert!(reason.starts_with("Q.850;cause=34"), "{reason}");
    let cdr = sw.poll_cdr().unwrap();
    assert_eq!(cdr.attempts[0].destination, "span_group:e1");
    assert!(
        cdr.attempts[0]
            .text
            .as_deref()
            .unwrap()
            .contains("no TDM legs")
    );
    assert_idle(&sw);
}

#[test]
fn echo_and_milliwatt_services_answer_at_once_with_their_source() {
    for (user, source) in [
        ("echo", MediaSource::Echo),
        ("milliwatt", MediaSource::Milliwatt),
    ] {
        let t0 = Instant::now();
        let mut sw = switch();
        recv(
            &mut sw,
            t0,
            &invite(user, &g711("10.0.0.1", 20000)),
            addr(A),
        );
        let tx = drain(&mut sw, t0);
        let ok = find_resp(&tx, A, 200);
        assert_eq!(audio_of(&ok.body).2, ["PCMU"]);
        assert!(
            sw.media
                .log
                .iter()
                .any(|c| matches!(c, MediaCommand::Play { source: s, .. } if *s == source)),
            "{:?}",
            sw.media.log
        );
        let calls = sw.engine.calls(t0);
        assert_eq!(calls[0].legs[1].kind, LegKind::Service);
        recv(&mut sw, t0, &a_ack(&ok, 1, ""), addr(A));
        recv(&mut sw, t0, &a_request(&ok, "BYE", 2, "", ""), addr(A));
        let tx = drain(&mut sw, t0);
        find_resp(&tx, A, 200);
        assert_idle(&sw);
    }
}

#[test]
fn unanswered_call_is_cancelled_after_the_no_answer_timeout_and_the_caller_gets_480() {
    let t0 = Instant::now();
    let mut sw = switch();
    recv(
        &mut sw,
        t0,
        &invite("bob", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let tx = drain(&mut sw, t0);
    let (_, inv) = find_req(&tx, "INVITE");
    recv(&mut sw, t0, &b_resp(&inv, 180, None), addr(PBX));
    drain(&mut sw, t0);
    let sent = run_until(&mut sw, t0 + Duration::from_secs(91));
    let cancel_at = sent
        .iter()
        .find(|(_, t)| req_of(t).is_some_and(|r| r.method.as_str() == "CANCEL"))
        .map(|(at, _)| *at - t0)
        .unwrap();
    assert_eq!(cancel_at, Duration::from_secs(90));
    assert!(
        sent.iter()
            .any(|(_, t)| t.dest == addr(A) && resp_of(t).is_some_and(|r| r.status == 480))
    );
    recv(
        &mut sw,
        t0 + Duration::from_secs(91),
        &b_resp(&inv, 487, None),
        addr(PBX),
    );
    assert_eq!(sw.poll_cdr().unwrap().q850, 19);
    assert_idle(&sw);
}

#[test]
fn codecs_follow_the_trunk_preference_and_transcode_only_when_they_must() {
    // The trunk prefers PCMA; the caller offers both: everyone agrees on PCMA.
    let t0 = Instant::now();
    let mut s = Setup::default();
    s.trunks[0].codecs = vec![AudioCodec::Pcma, AudioCodec::Pcmu];
    let mut sw = switch_with(s);
    recv(
        &mut sw,
        t0,
        &invite("bob", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    let (_, inv) = find_req(&drain(&mut sw, t0), "INVITE");
    assert_eq!(audio_of(&inv.body).2, ["PCMA", "PCMU"]);
    let b = sdp("10.0.0.9", 30000, &[(8, "PCMA")], "");
    recv(&mut sw, t0, &b_resp(&inv, 200, Some(b)), addr(PBX));
    let ok = find_resp(&drain(&mut sw, t0), A, 200);
    assert_eq!(audio_of(&ok.body).2, ["PCMA"]);
    // The trunk takes only PCMA; the caller offers only PCMU: PCMU to A, PCMA to B, the plane
    // transcodes.
    let mut s = Setup::default();
    s.trunks[0].codecs = vec![AudioCodec::Pcma];
    let mut sw = switch_with(s);
    recv(
        &mut sw,
        t0,
        &invite("bob", &sdp("10.0.0.1", 20000, &[(0, "PCMU")], "")),
        addr(A),
    );
    let (_, inv) = find_req(&drain(&mut sw, t0), "INVITE");
    assert_eq!(audio_of(&inv.body).2, ["PCMA"]);
    let b = sdp("10.0.0.9", 30000, &[(8, "PCMA")], "");
    recv(&mut sw, t0, &b_resp(&inv, 200, Some(b)), addr(PBX));
    let ok = find_resp(&drain(&mut sw, t0), A, 200);
    assert_eq!(audio_of(&ok.body).2, ["PCMU"]);
    let codecs: Vec<AudioCodec> = sw
        .media
        .log
        .iter()
        .filter_map(|c| match c {
            MediaCommand::ConfigureRtp { media, .. } => Some(media.codec),
            _ => None,
        })
        .collect();
    assert_eq!(codecs, [AudioCodec::Pcma, AudioCodec::Pcmu]);
}

#[test]
fn late_offer_invite_is_offered_in_the_200_and_answered_in_the_ack() {
    let t0 = Instant::now();
    let mut sw = switch();
    recv(&mut sw, t0, &invite("bob", ""), addr(A));
    let (_, inv) = find_req(&drain(&mut sw, t0), "INVITE");
    recv(
        &mut sw,
        t0,
        &b_resp(&inv, 200, Some(g711("10.0.0.9", 30000))),
        addr(PBX),
    );
    let ok = find_resp(&drain(&mut sw, t0), A, 200);
    let (_, _, codecs) = audio_of(&ok.body);
    assert_eq!(codecs[0], "PCMU", "our offer, B's codec first");
    recv(
        &mut sw,
        t0,
        &a_ack(&ok, 1, &sdp("10.0.0.1", 22000, &[(0, "PCMU")], "")),
        addr(A),
    );
    assert!(sw.media.log.iter().any(|c| matches!(
        c,
        MediaCommand::ConfigureRtp { media, .. } if media.remote == Some(addr("10.0.0.1:22000"))
    )));
}

#[test]
fn an_offer_without_a_codec_we_know_is_refused_488_and_an_unknown_user_404() {
    let t0 = Instant::now();
    let mut sw = switch();
    recv(
        &mut sw,
        t0,
        &invite("bob", &sdp("10.0.0.1", 20000, &[(18, "G729")], "")),
        addr(A),
    );
    find_resp(&drain(&mut sw, t0), A, 488);
    assert_idle(&sw);
    let mut s = Setup::default();
    s.routes.retain(|r| r.name != "pbx");
    let mut sw = switch_with(s);
    recv(
        &mut sw,
        t0,
        &invite("nobody", &g711("10.0.0.1", 20000)),
        addr(A),
    );
    find_resp(&drain(&mut sw, t0), A, 404);
    assert_idle(&sw);
}

#[test]
fn rtp_inactivity_ends_the_call_with_bye_on_both_legs() {
    let t0 = Instant::now();
    let (mut sw, _inv, ok) = answered_call(t0);
    recv(&mut sw, t0, &a_ack(&ok, 1, ""), addr(A));
    let a = sw.engine.calls(t0)[0].legs[0].id;
    let t1 = t0 + Duration::from_secs(30);
    sw.media_event(t1, a, MediaNotice::Inactive);
    let tx = drain(&mut sw, t1);
    let byes: Vec<SocketAddr> = tx
        .iter()
        .filter(|t| req_of(t).is_some_and(|r| r.method.as_str() == "BYE"))
        .map(|t| t.dest)
        .collect();
    assert_eq!(byes.len(), 2, "{byes:?}");
    for t in &tx {
        if let Some(r) = req_of(t) {
            let reason = r.headers.get(&HeaderName::Other("Reason".into())).unwrap();
            assert!(reason.contains("cause=102"), "{reason}");
            recv(
                &mut sw,
                t1,
                &Response::for_request(&r, 200).to_bytes(),
                t.dest,
            );
        }
    }
    assert_eq!(sw.engine.stats().media_timeouts, 1);
    assert_idle(&sw);
}

#[test]
fn callers_outside_the_acl_must_authenticate_and_then_get_through() {
    let t0 = Instant::now();
    let s = Setup {
        users: vec![("1001".into(), "pw1001".into())],
        trusted: Vec::new(),
        ..Setup::default()
    };
    let mut sw = switch_with(s);
    let phone = "192.0.2.50:5060";
    let body = g711("192.0.2.50", 20000);
    let first = invite_from(phone, "bob", &body, "p-call", "");
    recv(&mut sw, t0, &first, addr(phone));
    let challenge = find_resp(&drain(&mut sw, t0), phone, 401);
    assert!(sw.engine.calls(t0).is_empty());
    let Message::Request(req) = parse_message(&first).unwrap() else {
        panic!()
    };
    let mut client = gateway::sip::auth::DigestClient::new("1001", "pw1001");
    let authed = client
        .authorize(&req, &challenge, "z9hG4bKretry", "cn0nce")
        .unwrap();
    recv(&mut sw, t0, &authed.to_bytes(), addr(phone));
    let tx = drain(&mut sw, t0);
    let (dest, _) = find_req(&tx, "INVITE");
    assert_eq!(dest, addr(PBX));
    // A source that is neither trusted nor a user is refused when no users are configured.
    let mut sw = switch_with(Setup {
        trusted: Vec::new(),
        ..Setup::default()
    });
    recv(
        &mut sw,
        t0,
        &invite_from("192.0.2.60:5060", "bob", &body, "x", ""),
        addr("192.0.2.60:5060"),
    );
    find_resp(&drain(&mut sw, t0), "192.0.2.60:5060", 403);
}

#[test]
fn options_out_of_dialog_is_answered_with_allow() {
    let t0 = Instant::now();
    let mut sw = switch();
    let options = format!(
        "OPTIONS sip:{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch=z9hG4bKopt\r\nMax-Forwards: 70\r\nFrom: <sip:ping@{A}>;tag=p\r\nTo: <sip:{GW}>\r\nCall-ID: opt1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    recv(&mut sw, t0, options.as_bytes(), addr(A));
    let r = find_resp(&drain(&mut sw, t0), A, 200);
    assert!(
        r.headers
            .get(&HeaderName::Allow)
            .unwrap()
            .contains("INVITE")
    );
}

#[test]
fn control_plane_originates_a_leg_connects_it_and_drops_the_old_one() {
    let t0 = Instant::now();
    let (mut sw, _inv, ok) = answered_call(t0);
    recv(&mut sw, t0, &a_ack(&ok, 1, ""), addr(A));
    let info = sw.engine.calls(t0).remove(0);
    let (a, b) = (info.legs[0].id, info.legs[1].id);
    let uri = info.uri.clone();
    sw.with_engine(t0, |e| e.set_controlled(&uri, true))
        .unwrap();
    sw.with_engine(t0, |e| e.play(a, MediaSource::Ringback))
        .unwrap();
    let c = sw
        .with_engine(t0, |e| {
            e.originate(t0, &uri, OriginateTarget::Service(ServiceKind::Echo), None)
        })
        .unwrap();
    // The service answers at once; a notice says so.
    let notices: Vec<_> = std::iter::from_fn(|| sw.poll_notice()).collect();
    assert!(
        notices
            .iter()
            .any(|n| n.leg == c && n.progress == gateway::calls::engine::LegProgress::Answered)
    );
    sw.with_engine(t0, |e| e.connect(t0, a, c)).unwrap();
    assert!(
        sw.media.log.iter().any(
            |m| matches!(m, MediaCommand::Play { leg, source: MediaSource::Echo } if *leg == a)
        )
    );
    // Muting the caller's SIP leg goes to the plane; muting the echo service silences what it
    // plays to the caller, and unmuting brings the echo back.
    sw.with_engine(t0, |e| e.mute(a, true)).unwrap();
    assert!(matches!(
        sw.media.log.last(),
        Some(MediaCommand::Mute { leg, on: true }) if *leg == a
    ));
    sw.with_engine(t0, |e| e.mute(c, true)).unwrap();
    assert!(matches!(
        sw.media.log.last(),
        Some(MediaCommand::Play { leg, source: MediaSource::ComfortNoise }) if *leg == a
    ));
    sw.with_engine(t0, |e| e.mute(c, false)).unwrap();
    assert!(matches!(
        sw.media.log.last(),
        Some(MediaCommand::Play { leg, source: MediaSource::Echo }) if *leg == a
    ));
    sw.with_engine(t0, |e| e.mute(a, false)).unwrap();
    assert!(matches!(
        sw.media.log.last(),
        Some(MediaCommand::Mute { leg, on: false }) if *leg == a
    ));
    sw.with_engine(t0, |e| {
        e.hang_up_leg(t0, b, EndCause::normal("transferred"))
    })
    .unwrap();
    let tx = drain(&mut sw, t0);
    let (_, bye) = find_req(&tx, "BYE");
    recv(
        &mut sw,
        t0,
        &Response::for_request(&bye, 200).to_bytes(),
        addr(B_CONTACT),
    );
    assert_eq!(
        sw.engine.calls(t0)[0].legs.len(),
        2,
        "caller and the new leg remain"
    );
    sw.with_engine(t0, |e| e.hang_up(t0, &uri, EndCause::normal("done")))
        .unwrap();
    let tx = drain(&mut sw, t0);
    let (dest, bye) = find_req(&tx, "BYE");
    assert_eq!(dest, addr(A));
    recv(
        &mut sw,
        t0,
        &Response::for_request(&bye, 200).to_bytes(),
        addr(A),
    );
    assert_eq!(sw.poll_cdr().unwrap().ended_by, "control");
    assert_idle(&sw);
    let bad = sw.with_engine(t0, |e| e.hang_up(t0, &uri, EndCause::normal("x")));
    assert!(bad.is_err());
}
