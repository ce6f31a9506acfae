//! RFC 3261 §12–14 dialogs on virtual time: ACK routing through Record-Route proxies to the
//! Contact (the "call drops at 32 s" bug), the UAS's 2xx retransmission until ACK, BYE, CANCEL of
//! an early dialog, CSeq rules, target refresh and re-INVITE glare with §14.1 back-off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::sip::dialog::{
    AnswerRetransmit, AnswerTimer, Dialog, DialogId, DialogRole, DialogState, InDialogReject,
    InDialogRequest, ViaTemplate, glare_retry_delay, uri_socket_addr,
};
use gateway::sip::message::{HeaderName, Headers, Message, Method, Request, Response, Uri};
use gateway::sip::parse::{self, parse_message};
use gateway::sip::transaction::{
    Reliability, TimerConfig, TransactionKey, TransactionLayer, TuEvent,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn req(text: &str) -> Request {
    match parse_message(text.replace('\n', "\r\n").as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn resp(text: &str) -> Response {
    match parse_message(text.replace('\n', "\r\n").as_bytes()).unwrap() {
        Message::Response(r) => r,
        Message::Request(_) => panic!("not a response"),
    }
}

fn via(sent_by: &str) -> ViaTemplate {
    ViaTemplate {
        transport: "UDP".into(),
        sent_by: sent_by.into(),
    }
}

const INVITE: &str = "INVITE sip:bob@biloxi.example SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv1
Max-Forwards: 70
Route: <sip:10.0.1.1;lr>
From: <sip:alice@atlanta.example>;tag=a1
To: <sip:bob@biloxi.example>
Call-ID: c1@10.0.0.1
CSeq: 10 INVITE
Contact: <sip:alice@10.0.0.1:5060>
Content-Length: 0

";

fn ok_with(record_route: &str, contact: &str) -> Response {
    resp(&format!(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv1
{record_route}From: <sip:alice@atlanta.example>;tag=a1
To: <sip:bob@biloxi.example>;tag=b1
Call-ID: c1@10.0.0.1
CSeq: 10 INVITE
Contact: {contact}
Content-Length: 0

"
    ))
}

fn routes(r: &Request) -> Vec<String> {
    r.headers
        .routes()
        .unwrap()
        .iter()
        .map(|n| n.uri.to_string())
        .collect()
}

#[test]
fn ack_for_2xx_follows_reversed_record_route_and_targets_the_contact() {
    // INVITE went out via the outbound proxy 10.0.1.1; the 2xx came back through two
    // record-routing proxies and names Bob's device in Contact.
    let invite = req(INVITE);
    let ok = ok_with(
        "Record-Route: <sip:10.0.2.2;lr>, <sip:10.0.1.1;lr>\n",
        "<sip:bob@10.0.9.9:5070>",
    );
    let mut d = Dialog::new_uac(&invite, &ok, via("10.0.0.1:5060")).unwrap();
    assert_eq!(d.state(), DialogState::Confirmed);
    let ack = d.ack_for_2xx(&ok, "z9hG4bKack1", None).unwrap();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri.as_str(), "sip:bob@10.0.9.9:5070");
    assert_eq!(routes(&ack), vec!["sip:10.0.1.1;lr", "sip:10.0.2.2;lr"]);
    assert_eq!(ack.headers.cseq().unwrap().seq, 10);
    assert_eq!(ack.headers.cseq().unwrap().method, Method::Ack);
    assert_eq!(ack.headers.to().unwrap().tag(), Some("b1"));
    assert_eq!(ack.headers.top_via().unwrap().branch(), Some("z9hG4bKack1"));
    assert_eq!(uri_socket_addr(d.next_hop()), Some(addr("10.0.1.1:5060")));
    // A retransmitted 2xx gets the identical ACK (RFC 3261 §13.2.2.4).
    assert_eq!(d.ack_for_2xx(&ok, "z9hG4bKother", None).unwrap(), ack);
}

#[test]
fn ack_without_record_route_goes_to_the_contact_not_to_the_invite_destination() {
    let invite = req(INVITE);
    let ok = ok_with("", "<sip:bob@10.0.9.9:5070;transport=udp>");
    let mut d = Dialog::new_uac(&invite, &ok, via("10.0.0.1:5060")).unwrap();
    let ack = d.ack_for_2xx(&ok, "z9hG4bKack2", None).unwrap();
    assert!(routes(&ack).is_empty());
    assert_eq!(ack.uri.as_str(), "sip:bob@10.0.9.9:5070;transport=udp");
    assert_eq!(uri_socket_addr(d.next_hop()), Some(addr("10.0.9.9:5070")));
}

#[test]
fn strict_router_becomes_the_request_uri_and_the_contact_goes_last() {
    let invite = req(INVITE);
    let ok = ok_with("Record-Route: <sip:10.0.2.2>\n", "<sip:bob@10.0.9.9:5070>");
    let mut d = Dialog::new_uac(&invite, &ok, via("10.0.0.1:5060")).unwrap();
    let bye = d.new_request(Method::Bye, "z9hG4bKbye").unwrap();
    assert_eq!(bye.uri.as_str(), "sip:10.0.2.2");
    assert_eq!(routes(&bye), vec!["sip:bob@10.0.9.9:5070"]);
    assert_eq!(bye.headers.cseq().unwrap().seq, 11);
}

#[test]
fn early_dialog_route_set_is_replaced_by_the_2xx_and_a_2xx_without_contact_is_refused() {
    let invite = req(INVITE);
    let ringing = resp(
        "SIP/2.0 180 Ringing
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv1
Record-Route: <sip:10.0.7.7;lr>
From: <sip:alice@atlanta.example>;tag=a1
To: <sip:bob@biloxi.example>;tag=b1
Call-ID: c1@10.0.0.1
CSeq: 10 INVITE
Content-Length: 0

",
    );
    let mut d = Dialog::new_uac(&invite, &ringing, via("10.0.0.1:5060")).unwrap();
    assert_eq!(d.state(), DialogState::Early);
    // No Contact in the 180: the Request-URI stands in until one comes.
    assert_eq!(d.remote_target().as_str(), "sip:bob@biloxi.example");
    // A re-INVITE is refused while the initial INVITE is pending (§14.1).
    assert!(d.new_request(Method::Invite, "z9hG4bKx").is_err());
    let ok = ok_with(
        "Record-Route: <sip:10.0.2.2;lr>\n",
        "<sip:bob@10.0.9.9:5070>",
    );
    assert!(!d.handle_response(&ok));
    assert_eq!(d.state(), DialogState::Confirmed);
    assert_eq!(d.remote_target().as_str(), "sip:bob@10.0.9.9:5070");
    assert_eq!(d.route_set().len(), 1);
    assert_eq!(d.route_set()[0].uri.as_str(), "sip:10.0.2.2;lr");

    let no_contact = resp(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv1
From: <sip:alice@atlanta.example>;tag=a1
To: <sip:bob@biloxi.example>;tag=b1
Call-ID: c1@10.0.0.1
CSeq: 10 INVITE
Content-Length: 0

",
    );
    assert!(Dialog::new_uac(&invite, &no_contact, via("10.0.0.1:5060")).is_err());
}

fn uas_dialog() -> (Dialog, Request) {
    let invite = req("INVITE sip:gw@10.0.0.2 SIP/2.0
Via: SIP/2.0/UDP 10.0.2.2;branch=z9hG4bKp2
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv1
Max-Forwards: 69
Record-Route: <sip:10.0.2.2;lr>
From: <sip:alice@atlanta.example>;tag=a1
To: <sip:gw@10.0.0.2>
Call-ID: c2@10.0.0.1
CSeq: 5 INVITE
Contact: <sip:alice@10.0.0.1:5060>
Content-Length: 0

");
    let d = Dialog::new_uas(
        &invite,
        "g1",
        Uri::parse("sip:gw@10.0.0.2:5060").unwrap(),
        via("10.0.0.2:5060"),
    )
    .unwrap();
    (d, invite)
}

fn in_dialog(method: &str, seq: u32, extra: &str) -> Request {
    req(&format!(
        "{method} sip:gw@10.0.0.2:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{method}{seq}
Max-Forwards: 70
From: <sip:alice@atlanta.example>;tag=a1
To: <sip:gw@10.0.0.2>;tag=g1
Call-ID: c2@10.0.0.1
CSeq: {seq} {method}
{extra}Content-Length: 0

"
    ))
}

#[test]
fn uas_dialog_answers_with_record_route_and_contact_and_applies_cseq_rules() {
    let (mut d, invite) = uas_dialog();
    assert_eq!(d.role(), DialogRole::Uas);
    let ringing = d.response(&invite, 180);
    assert_eq!(ringing.headers.to().unwrap().tag(), Some("g1"));
    assert_eq!(d.state(), DialogState::Early);
    let ok = d.response(&invite, 200);
    assert_eq!(d.state(), DialogState::Confirmed);
    assert_eq!(
        ok.headers.get(&HeaderName::RecordRoute),
        Some("<sip:10.0.2.2;lr>")
    );
    assert_eq!(
        ok.headers.get(&HeaderName::Contact),
        Some("<sip:gw@10.0.0.2:5060>")
    );
    // Our BYE toward Alice goes through the proxy, in order, to her Contact.
    let id = DialogId::for_received_request(&in_dialog("INFO", 6, "")).unwrap();
    assert_eq!(&id, d.id());

    // ACK for the 2xx, then INFO/REFER/NOTIFY pass through; an old CSeq gets 500.
    assert_eq!(
        d.handle_request(&in_dialog("ACK", 5, "")),
        Ok(InDialogRequest::Ack)
    );
    assert_eq!(
        d.handle_request(&in_dialog("INFO", 6, "")),
        Ok(InDialogRequest::Other)
    );
    assert_eq!(
        d.handle_request(&in_dialog("REFER", 7, "Refer-To: <sip:carol@10.0.0.5>\n")),
        Ok(InDialogRequest::Other)
    );
    let old = d.handle_request(&in_dialog("NOTIFY", 6, ""));
    assert_eq!(old, Err(InDialogReject::CSeqOutOfOrder));
    assert_eq!(old.unwrap_err().status(), Some(500));
    // A re-INVITE with a new Contact moves the remote target (address change).
    assert_eq!(
        d.handle_request(&in_dialog(
            "INVITE",
            8,
            "Contact: <sip:alice@10.0.0.77:5062>\n"
        )),
        Ok(InDialogRequest::ReInvite)
    );
    assert_eq!(d.remote_target().as_str(), "sip:alice@10.0.0.77:5062");
    // A second re-INVITE before the first is answered: 500 (§14.2).
    assert_eq!(
        d.handle_request(&in_dialog("INVITE", 9, "")),
        Err(InDialogReject::PendingInvite)
    );
    let bye = d.new_request(Method::Bye, "z9hG4bKgbye").unwrap();
    assert_eq!(bye.uri.as_str(), "sip:alice@10.0.0.77:5062");
    assert_eq!(routes(&bye), vec!["sip:10.0.2.2;lr"]);
    assert_eq!(bye.headers.cseq().unwrap().seq, 1);
    assert_eq!(bye.headers.from().unwrap().tag(), Some("g1"));
    assert_eq!(bye.headers.to().unwrap().tag(), Some("a1"));
    // BYE from Alice ends it; anything later gets 481.
    assert_eq!(
        d.handle_request(&in_dialog("BYE", 10, "")),
        Ok(InDialogRequest::Bye)
    );
    assert_eq!(d.state(), DialogState::Terminated);
    assert_eq!(
        d.handle_request(&in_dialog("INFO", 11, ""))
            .unwrap_err()
            .status(),
        Some(481)
    );
    assert!(d.new_request(Method::Info, "z9hG4bKlate").is_err());
}

#[test]
fn crossing_reinvites_both_get_491_and_back_off_per_rfc3261_14_1() {
    let invite = req(INVITE);
    let ok = ok_with("", "<sip:bob@10.0.9.9:5070>");
    let mut alice = Dialog::new_uac(&invite, &ok, via("10.0.0.1:5060")).unwrap();
    // Bob's side of the same dialog.
    let bob_view = req("INVITE sip:bob@10.0.9.9:5070 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv1
Max-Forwards: 70
From: <sip:alice@atlanta.example>;tag=a1
To: <sip:bob@biloxi.example>
Call-ID: c1@10.0.0.1
CSeq: 10 INVITE
Contact: <sip:alice@10.0.0.1:5060>
Content-Length: 0

");
    let mut bob = Dialog::new_uas(
        &bob_view,
        "b1",
        Uri::parse("sip:bob@10.0.9.9:5070").unwrap(),
        via("10.0.9.9:5070"),
    )
    .unwrap();
    let _ = bob.response(&bob_view, 200);
    let mut ack = alice.ack_for_2xx(&ok, "z9hG4bKa", None).unwrap();
    ack.headers
        .set(HeaderName::To, "<sip:bob@biloxi.example>;tag=b1");
    assert_eq!(bob.handle_request(&ack), Ok(InDialogRequest::Ack));

    // Both re-INVITE at once (hold from each side).
    let from_alice = alice.new_request(Method::Invite, "z9hG4bKra").unwrap();
    let from_bob = bob.new_request(Method::Invite, "z9hG4bKrb").unwrap();
    assert_eq!(
        alice.new_request(Method::Invite, "z9hG4bKra2"),
        Err(gateway::sip::dialog::DialogError::InviteInProgress)
    );
    let at_bob = bob.handle_request(&from_alice);
    let at_alice = alice.handle_request(&from_bob);
    assert_eq!(at_bob, Err(InDialogReject::Glare));
    assert_eq!(at_alice, Err(InDialogReject::Glare));
    assert_eq!(at_bob.unwrap_err().status(), Some(491));
    // Each gets the other's 491; the dialogs survive and may re-INVITE again after back-off.
    let mut r491_for_alice = Response::for_request(&from_alice, 491);
    r491_for_alice.ensure_to_tag("b1");
    assert!(!alice.handle_response(&r491_for_alice));
    let r491_for_bob = Response::for_request(&from_bob, 491);
    assert!(!bob.handle_response(&r491_for_bob));
    assert_eq!(alice.state(), DialogState::Confirmed);
    assert!(alice.new_request(Method::Invite, "z9hG4bKra3").is_ok());
    assert!(bob.new_request(Method::Invite, "z9hG4bKrb3").is_ok());

    // §14.1: the Call-ID owner (UAC) waits 2.1..=4 s, the other 0..=2 s, in 10 ms steps; so
    // the two retries never collide again.
    let mut uac: Vec<Duration> = (0..1000)
        .map(|r| glare_retry_delay(DialogRole::Uac, r * 7919))
        .collect();
    let mut uas: Vec<Duration> = (0..1000)
        .map(|r| glare_retry_delay(DialogRole::Uas, r * 7919))
        .collect();
    uac.sort();
    uas.sort();
    assert_eq!(uac.first(), Some(&Duration::from_millis(2100)));
    assert_eq!(uac.last(), Some(&Duration::from_millis(4000)));
    assert_eq!(uas.first(), Some(&Duration::ZERO));
    assert_eq!(uas.last(), Some(&Duration::from_millis(2000)));
    assert!(uac.iter().chain(&uas).all(|d| d.as_millis() % 10 == 0));
}

#[test]
fn unacked_2xx_is_retransmitted_t1_doubling_to_t2_then_gives_up_at_64_t1() {
    let t0 = Instant::now();
    let mut r = AnswerRetransmit::new(
        t0,
        1,
        addr("10.0.0.1:5060"),
        b"SIP/2.0 200 OK\r\n".to_vec(),
        Reliability::Unreliable,
        TimerConfig::default(),
    );
    let mut resends = Vec::new();
    let end = loop {
        let at = r.poll_timeout().unwrap();
        match r.handle_timeout(at) {
            AnswerTimer::Resend { .. } => resends.push((at - t0).as_millis()),
            AnswerTimer::GaveUp => break (at - t0).as_millis(),
            AnswerTimer::Idle => {}
        }
    };
    assert_eq!(
        resends,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(end, 32_000);
    assert_eq!(r.poll_timeout(), None);

    // An ACK for another CSeq does not stop it; ours does.
    let mut r = AnswerRetransmit::new(
        t0,
        7,
        addr("10.0.0.1:5060"),
        vec![1],
        Reliability::Reliable,
        TimerConfig::default(),
    );
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    assert!(!r.ack_received(6));
    assert!(r.ack_received(7));
    assert_eq!(r.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------------
// A call on a simulated network: UAC → P1 → P2 → UAS, both proxies record-routing (loose).

const UAC: &str = "10.0.0.1:5060";
const P1: &str = "10.0.1.1:5060";
const P2: &str = "10.0.2.2:5060";
const UAS: &str = "10.0.9.9:5070";

fn rebuild(headers: &Headers, mut f: impl FnMut(&mut Headers, &str, &str) -> bool) -> Headers {
    let mut out = Headers::new();
    for h in headers.iter() {
        if f(&mut out, h.name.as_str(), &h.value) {
            out.push(h.name.clone(), h.value.clone());
        }
    }
    out
}

/// A stateless loose-routing proxy (RFC 3261 §16.4/§16.12) with a one-entry location service.
struct Proxy {
    me: SocketAddr,
    location: Option<(String, String)>,
    seen: BTreeMap<String, usize>,
}

impl Proxy {
    fn handle(&mut self, bytes: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let me = self.me.to_string();
        match parse_message(bytes).ok()? {
            Message::Request(mut r) => {
                *self.seen.entry(r.method.to_string()).or_default() += 1;
                // Pop our own Route.
                let mut popped = false;
                r.headers = rebuild(&r.headers, |_, name, value| {
                    if !popped && name == "Route" {
                        popped = true;
                        let ours = parse::parse_name_addr(value, false)
                            .ok()
                            .and_then(|n| uri_socket_addr(&n.uri))
                            == Some(addr(&me));
                        return !ours;
                    }
                    true
                });
                if uri_socket_addr(&r.uri) == Some(addr(&me))
                    && let Some((user, contact)) = &self.location
                    && r.uri.as_str().contains(user.as_str())
                {
                    r.uri = Uri::parse(contact).unwrap();
                }
                let initial = r.method == Method::Invite && r.headers.to().unwrap().tag().is_none();
                let branch = format!(
                    "z9hG4bK{}-{}",
                    self.me.port() + self.me.ip().to_string().len() as u16,
                    r.headers.top_via().unwrap().branch().unwrap()
                );
                let mut out = Headers::new();
                out.push(HeaderName::Via, format!("SIP/2.0/UDP {me};branch={branch}"));
                if initial {
                    out.push(HeaderName::RecordRoute, format!("<sip:{me};lr>"));
                }
                for h in r.headers.iter() {
                    out.push(h.name.clone(), h.value.clone());
                }
                r.headers = out;
                let next = match r.headers.routes().unwrap().first() {
                    Some(route) => uri_socket_addr(&route.uri)?,
                    None => uri_socket_addr(&r.uri)?,
                };
                Some((next, r.to_bytes()))
            }
            Message::Response(mut r) => {
                *self.seen.entry(format!("{}", r.status)).or_default() += 1;
                let mut popped = false;
                r.headers = rebuild(&r.headers, |_, name, _| {
                    if !popped && name == "Via" {
                        popped = true;
                        return false;
                    }
                    true
                });
                let v = r.headers.top_via().ok()?;
                let port = v.rport().flatten().or(v.port).unwrap_or(5060);
                let host = v.received().unwrap_or(&v.host).to_owned();
                Some((addr(&format!("{host}:{port}")), r.to_bytes()))
            }
        }
    }
}

struct Uac {
    layer: TransactionLayer,
    invite: Request,
    invite_key: Option<TransactionKey>,
    dialog: Option<Dialog>,
    acks_sent: Vec<SocketAddr>,
    finals: Vec<u16>,
}

struct Uas {
    layer: TransactionLayer,
    dialog: Option<Dialog>,
    answer: Option<AnswerRetransmit>,
    invite_key: Option<TransactionKey>,
    invite: Option<Request>,
    acks: usize,
    byes_received: usize,
    byes_sent: usize,
    gave_up: bool,
    answer_immediately: bool,
    cancelled: usize,
}

/// Decides whether the network loses a datagram.
type DropRule = Box<dyn FnMut(SocketAddr, SocketAddr, &str, usize) -> bool>;

struct Net {
    t0: Instant,
    now: Instant,
    queue: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Returns true to drop the datagram (from, to, first line, count of that line so far).
    drop: DropRule,
    counts: HashMap<(SocketAddr, SocketAddr, String), usize>,
    uac: Uac,
    uas: Uas,
    proxies: Vec<Proxy>,
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

impl Net {
    fn new(answer_immediately: bool) -> Net {
        let t0 = Instant::now();
        let invite = req(&format!(
            "INVITE sip:bob@{P2} SIP/2.0
Via: SIP/2.0/UDP {UAC};branch=z9hG4bKsim1;rport
Max-Forwards: 70
Route: <sip:{P1};lr>
From: <sip:alice@{UAC}>;tag=a1
To: <sip:bob@{P2}>
Call-ID: sim1@10.0.0.1
CSeq: 1 INVITE
Contact: <sip:alice@{UAC}>
Content-Length: 0

"
        ));
        Net {
            t0,
            now: t0,
            queue: Vec::new(),
            drop: Box::new(|_, _, _, _| false),
            counts: HashMap::new(),
            uac: Uac {
                layer: TransactionLayer::new(TimerConfig::default()),
                invite,
                invite_key: None,
                dialog: None,
                acks_sent: Vec::new(),
                finals: Vec::new(),
            },
            uas: Uas {
                layer: TransactionLayer::new(TimerConfig::default()),
                dialog: None,
                answer: None,
                invite_key: None,
                invite: None,
                acks: 0,
                byes_received: 0,
                byes_sent: 0,
                gave_up: false,
                answer_immediately,
                cancelled: 0,
            },
            proxies: vec![
                Proxy {
                    me: addr(P1),
                    location: None,
                    seen: BTreeMap::new(),
                },
                Proxy {
                    me: addr(P2),
                    location: Some(("bob".into(), format!("sip:bob@{UAS}"))),
                    seen: BTreeMap::new(),
                },
            ],
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let line = first_line(&bytes);
        let n = self.counts.entry((from, to, line.clone())).or_default();
        *n += 1;
        let n = *n;
        if (self.drop)(from, to, &line, n) {
            return;
        }
        self.queue
            .push((self.now + Duration::from_millis(10), from, to, bytes));
    }

    fn start_call(&mut self) {
        let key = self
            .uac
            .layer
            .send_request(
                self.now,
                self.uac.invite.clone(),
                addr(P1),
                Reliability::Unreliable,
            )
            .unwrap();
        self.uac.invite_key = Some(key);
        self.pump();
    }

    /// Moves every pending output onto the network and runs both cores' TUs.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            while let Some(t) = self.uac.layer.poll_transmit() {
                self.send(addr(UAC), t.dest, t.bytes);
                progress = true;
            }
            while let Some(t) = self.uas.layer.poll_transmit() {
                self.send(addr(UAS), t.dest, t.bytes);
                progress = true;
            }
            while let Some(e) = self.uac.layer.poll_event() {
                self.uac_event(e);
                progress = true;
            }
            while let Some(e) = self.uas.layer.poll_event() {
                self.uas_event(e);
                progress = true;
            }
            if !progress {
                break;
            }
        }
    }

    fn uac_event(&mut self, e: TuEvent) {
        if let TuEvent::Request { key, request, .. } = &e
            && let Some(d) = &mut self.uac.dialog
        {
            let status = match d.handle_request(request) {
                Ok(_) => 200,
                Err(rej) => rej.status().unwrap_or(500),
            };
            let r = d.response(request, status);
            let now = self.now;
            self.uac.layer.send_response(now, key, r).unwrap();
            return;
        }
        let TuEvent::Response { response, .. } = e else {
            return;
        };
        let cseq = response.headers.cseq().unwrap();
        if cseq.method == Method::Invite {
            if response.status >= 200 {
                self.uac.finals.push(response.status);
            }
            if response.headers.to().unwrap().tag().is_some() && response.status < 300 {
                match &mut self.uac.dialog {
                    None => {
                        self.uac.dialog =
                            Some(Dialog::new_uac(&self.uac.invite, &response, via(UAC)).unwrap());
                    }
                    Some(d) => {
                        d.handle_response(&response);
                    }
                }
            } else if let Some(d) = &mut self.uac.dialog {
                d.handle_response(&response);
            }
            if (200..300).contains(&response.status) {
                let d = self.uac.dialog.as_mut().unwrap();
                let ack = d.ack_for_2xx(&response, "z9hG4bKsimack", None).unwrap();
                let dest = uri_socket_addr(d.next_hop()).unwrap();
                self.uac.acks_sent.push(dest);
                self.send(addr(UAC), dest, ack.to_bytes());
            }
        } else if let Some(d) = &mut self.uac.dialog {
            d.handle_response(&response);
        }
    }

    fn uas_event(&mut self, e: TuEvent) {
        let now = self.now;
        match e {
            TuEvent::Request {
                key,
                request,
                source,
            } => {
                if request.headers.to().unwrap().tag().is_none() {
                    let mut d = Dialog::new_uas(
                        &request,
                        "b1",
                        Uri::parse(&format!("sip:bob@{UAS}")).unwrap(),
                        via(UAS),
                    )
                    .unwrap();
                    let ringing = d.response(&request, 180);
                    self.uas.layer.send_response(now, &key, ringing).unwrap();
                    if self.uas.answer_immediately {
                        let ok = d.response(&request, 200);
                        let bytes = ok.to_bytes();
                        self.uas.layer.send_response(now, &key, ok).unwrap();
                        self.uas.answer = Some(AnswerRetransmit::new(
                            now,
                            1,
                            source,
                            bytes,
                            Reliability::Unreliable,
                            TimerConfig::default(),
                        ));
                    }
                    self.uas.dialog = Some(d);
                    self.uas.invite_key = Some(key);
                    self.uas.invite = Some(request);
                    return;
                }
                let d = self.uas.dialog.as_mut().unwrap();
                let status = match d.handle_request(&request) {
                    Ok(InDialogRequest::Bye) => {
                        self.uas.byes_received += 1;
                        200
                    }
                    Ok(_) => 200,
                    Err(rej) => rej.status().unwrap_or(500),
                };
                let r = d.response(&request, status);
                self.uas.layer.send_response(now, &key, r).unwrap();
            }
            TuEvent::Ack { request, .. } => {
                let d = self.uas.dialog.as_mut().unwrap();
                if d.handle_request(&request) == Ok(InDialogRequest::Ack) {
                    self.uas.acks += 1;
                    if let Some(a) = &mut self.uas.answer {
                        a.ack_received(request.headers.cseq().unwrap().seq);
                    }
                }
            }
            TuEvent::Cancelled { invite } => {
                self.uas.cancelled += 1;
                let d = self.uas.dialog.as_mut().unwrap();
                let r = d.response(self.uas.invite.as_ref().unwrap(), 487);
                self.uas.layer.send_response(now, &invite, r).unwrap();
            }
            _ => {}
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.queue.iter().map(|q| q.0).min(),
            self.uac.layer.poll_timeout(),
            self.uas.layer.poll_timeout(),
            self.uas.answer.as_ref().and_then(|a| a.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run_until(&mut self, until: Duration) {
        while let Some(at) = self.next_deadline() {
            if at > self.t0 + until {
                break;
            }
            self.now = at.max(self.now);
            let now = self.now;
            let due: Vec<_> = {
                let (due, rest) = self.queue.drain(..).partition(|q| q.0 <= now);
                self.queue = rest;
                due
            };
            for (_, from, to, bytes) in due {
                if to == addr(UAC) {
                    self.uac
                        .layer
                        .handle_datagram(now, &bytes, from, Reliability::Unreliable);
                } else if to == addr(UAS) {
                    self.uas
                        .layer
                        .handle_datagram(now, &bytes, from, Reliability::Unreliable);
                } else if let Some(p) = self.proxies.iter_mut().find(|p| p.me == to)
                    && let Some((next, out)) = p.handle(&bytes)
                {
                    self.send(to, next, out);
                }
                self.pump();
            }
            self.uac.layer.handle_timeout(now);
            self.uas.layer.handle_timeout(now);
            if let Some(a) = &mut self.uas.answer {
                match a.handle_timeout(now) {
                    AnswerTimer::Resend { dest, bytes } => self.send(addr(UAS), dest, bytes),
                    AnswerTimer::GaveUp => {
                        self.uas.gave_up = true;
                        let d = self.uas.dialog.as_mut().unwrap();
                        d.ack_never_came();
                        let bye = d.new_request(Method::Bye, "z9hG4bKgiveup").unwrap();
                        let dest = uri_socket_addr(d.next_hop()).unwrap();
                        self.uas.byes_sent += 1;
                        self.uas
                            .layer
                            .send_request(now, bye, dest, Reliability::Unreliable)
                            .unwrap();
                    }
                    AnswerTimer::Idle => {}
                }
            }
            self.pump();
        }
    }

    fn seen(&self, proxy: usize, what: &str) -> usize {
        self.proxies[proxy].seen.get(what).copied().unwrap_or(0)
    }
}

#[test]
fn call_through_two_record_routing_proxies_stays_up_past_64_t1_with_lost_2xx_and_ack() {
    let mut net = Net::new(true);
    // Lose the first 200 OK leaving the UAS and the first ACK leaving the UAC.
    net.drop = Box::new(|from, _to, line, n| {
        (from == addr(UAS) && line.starts_with("SIP/2.0 200") && n == 1)
            || (from == addr(UAC) && line.starts_with("ACK") && n == 1)
    });
    net.start_call();
    net.run_until(Duration::from_secs(40));

    // The UAS retransmitted its 2xx until an ACK reached it, and never gave up.
    assert_eq!(net.uas.acks, 1, "ACK must reach the UAS");
    assert!(
        !net.uas.gave_up,
        "UAS gave up waiting for ACK: the call would drop at 32 s"
    );
    assert_eq!(net.uas.byes_sent, 0);
    assert!(net.uas.answer.as_ref().unwrap().is_done());
    // The ACKs went to P1 (first route), each proxy forwarded exactly the one that arrived.
    assert_eq!(net.uac.acks_sent, vec![addr(P1), addr(P1)]);
    assert_eq!(net.seen(0, "ACK"), 1);
    assert_eq!(net.seen(1, "ACK"), 1);
    let uac_d = net.uac.dialog.as_ref().unwrap();
    let uas_d = net.uas.dialog.as_ref().unwrap();
    assert_eq!(uac_d.state(), DialogState::Confirmed);
    assert_eq!(uas_d.state(), DialogState::Confirmed);
    assert_eq!(
        uac_d
            .route_set()
            .iter()
            .map(|r| r.uri.to_string())
            .collect::<Vec<_>>(),
        vec![format!("sip:{P1};lr"), format!("sip:{P2};lr")]
    );
    assert_eq!(uac_d.remote_target().as_str(), format!("sip:bob@{UAS}"));
    assert_eq!(net.uac.finals, vec![200, 200]);

    // BYE from the caller goes the same way and ends both dialogs.
    let bye = net
        .uac
        .dialog
        .as_mut()
        .unwrap()
        .new_request(Method::Bye, "z9hG4bKsimbye")
        .unwrap();
    let now = net.now;
    net.uac
        .layer
        .send_request(now, bye, addr(P1), Reliability::Unreliable)
        .unwrap();
    net.pump();
    net.run_until(Duration::from_secs(80));
    assert_eq!(net.uas.byes_received, 1);
    assert_eq!(net.seen(1, "BYE"), 1);
    assert_eq!(
        net.uac.dialog.as_ref().unwrap().state(),
        DialogState::Terminated
    );
    assert_eq!(
        net.uas.dialog.as_ref().unwrap().state(),
        DialogState::Terminated
    );
    assert!(net.uac.layer.is_empty() && net.uas.layer.is_empty());
}

#[test]
fn uas_that_never_gets_the_ack_gives_up_at_32_s_and_sends_bye_along_the_route_set() {
    let mut net = Net::new(true);
    // Every ACK lost: the failure the previous test rules out.
    net.drop = Box::new(|from, _, line, _| from == addr(UAC) && line.starts_with("ACK"));
    net.start_call();
    net.run_until(Duration::from_secs(31));
    assert!(!net.uas.gave_up);
    net.run_until(Duration::from_secs(33));
    assert!(net.uas.gave_up);
    assert_eq!(net.uas.byes_sent, 1);
    // The UAS's BYE went to P2 (its route set) and reached the caller.
    assert_eq!(net.seen(1, "BYE"), 1);
    assert_eq!(net.seen(0, "BYE"), 1);
    net.run_until(Duration::from_secs(70));
    assert_eq!(
        net.uac.dialog.as_ref().unwrap().state(),
        DialogState::Terminated
    );
    assert!(net.uac.layer.is_empty() && net.uas.layer.is_empty());
}

#[test]
fn cancel_of_an_early_dialog_gets_487_and_ends_both_sides() {
    let mut net = Net::new(false);
    net.start_call();
    net.run_until(Duration::from_millis(200));
    assert_eq!(net.uac.dialog.as_ref().unwrap().state(), DialogState::Early);
    assert_eq!(net.uas.dialog.as_ref().unwrap().state(), DialogState::Early);
    let now = net.now;
    let key = net.uac.invite_key.clone().unwrap();
    net.uac.layer.cancel(now, &key).unwrap();
    net.pump();
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.uas.cancelled, 1);
    assert_eq!(net.uac.finals, vec![487]);
    assert_eq!(
        net.uac.dialog.as_ref().unwrap().state(),
        DialogState::Terminated
    );
    assert_eq!(
        net.uas.dialog.as_ref().unwrap().state(),
        DialogState::Terminated
    );
    // The non-2xx ACK is hop-by-hop (transaction layer) and went to P1; no transaction is
    // left on either side.
    assert_eq!(net.seen(0, "CANCEL"), 1);
    assert!(net.uac.layer.is_empty() && net.uas.layer.is_empty());
}
