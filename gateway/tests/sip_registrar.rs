//! The registrar/location service and the REGISTER client against each other on virtual time,
//! and the client against SIPp acting as a digest-checking registrar (`verifyauth`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Sipp, Ua};
use gateway::sip::auth::{DigestAlgorithm, DigestClient, DigestServer, DigestServerConfig};
use gateway::sip::dialog::ViaTemplate;
use gateway::sip::message::{HeaderName, Message, Request, Response, Uri};
use gateway::sip::parse::parse_message;
use gateway::sip::registrar::{Flow, Registrar, RegistrarConfig};
use gateway::sip::registration::{
    Registration, RegistrationAction, RegistrationConfig, RegistrationState,
};
use gateway::sip::transaction::TuEvent;
use gateway::sip::transport::{ConnectionId, Transport};

fn registrar() -> Registrar {
    let mut digest = DigestServer::new(
        DigestServerConfig {
            algorithms: vec![DigestAlgorithm::Md5],
            ..DigestServerConfig::default()
        },
        [3; 32],
    );
    digest.set_user("alice", "s3cret");
    digest.set_user("bob", "hunter2");
    Registrar::new(
        RegistrarConfig {
            domains: vec!["gw.example".into()],
            ..RegistrarConfig::default()
        },
        digest,
    )
}

fn flow(port: u16, conn: Option<u64>, transport: Transport) -> Flow {
    Flow {
        transport,
        remote: SocketAddr::from(([192, 0, 2, 9], port)),
        connection: conn.map(ConnectionId),
    }
}

fn register(user: &str, call_id: &str, cseq: u32, contacts: &[&str], extra: &str) -> Request {
    let mut text = format!(
        "REGISTER sip:gw.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK{call_id}{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@gw.example>;tag=f\r\nTo: <sip:{user}@gw.example>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
    );
    for c in contacts {
        text.push_str(&format!("Contact: {c}\r\n"));
    }
    text.push_str(extra);
    text.push_str("Content-Length: 0\r\n\r\n");
    match parse_message(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// Sends `req` through the challenge: the first answer is 401, then the digest answer.
fn authed(
    reg: &mut Registrar,
    now: Instant,
    req: &Request,
    user: &str,
    pw: &str,
    f: Flow,
) -> Response {
    let r401 = reg.handle_register(now, req, f);
    assert_eq!(r401.status, 401);
    let mut client = DigestClient::new(user, pw);
    let again = client.authorize(req, &r401, "z9hG4bKauth", "cn").unwrap();
    reg.handle_register(now, &again, f)
}

fn aor(user: &str) -> Uri {
    Uri::parse(&format!("sip:{user}@gw.example")).unwrap()
}

#[test]
fn binds_several_contacts_and_lists_them_with_remaining_expiry() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let req = register(
        "alice",
        "c1",
        1,
        &[
            "<sip:alice@192.0.2.9:5070>;expires=120",
            "<sip:alice@192.0.2.9:5072>",
        ],
        "Expires: 600\r\n",
    );
    let ok = authed(
        &mut reg,
        t0,
        &req,
        "alice",
        "s3cret",
        flow(5070, None, Transport::Udp),
    );
    assert_eq!(ok.status, 200);
    let contacts: Vec<&str> = ok.headers.get_all(&HeaderName::Contact).collect();
    assert_eq!(
        contacts,
        vec![
            "<sip:alice@192.0.2.9:5070>;expires=120",
            "<sip:alice@192.0.2.9:5072>;expires=600"
        ]
    );
    let targets = reg.lookup(t0, &aor("alice"));
    assert_eq!(targets.len(), 2);
    assert_eq!(
        targets[0].uri.as_str(),
        "sip:alice@192.0.2.9:5072",
        "longest-lived first"
    );
    assert!(
        targets.iter().all(|t| t.flow.is_none()),
        "plain UDP contacts are reached directly"
    );
    // 121 s later one has lapsed.
    reg.handle_timeout(t0 + Duration::from_secs(121));
    assert_eq!(
        reg.lookup(t0 + Duration::from_secs(121), &aor("alice"))
            .len(),
        1
    );
    assert_eq!(reg.stats().expired, 1);
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(600)));
}

#[test]
fn refusals_423_403_404_400_and_out_of_order_cseq() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let f = flow(5070, None, Transport::Udp);
    let short = register(
        "alice",
        "c2",
        1,
        &["<sip:alice@192.0.2.9>"],
        "Expires: 30\r\n",
    );
    let r = authed(&mut reg, t0, &short, "alice", "s3cret", f);
    assert_eq!(r.status, 423);
    assert_eq!(r.headers.get(&HeaderName::MinExpires), Some("60"));
    // bob's credentials cannot register alice.
    let req = register("alice", "c3", 1, &["<sip:x@192.0.2.9>"], "");
    assert_eq!(authed(&mut reg, t0, &req, "bob", "hunter2", f).status, 403);
    // A domain we do not serve.
    let mut other = register("alice", "c4", 1, &["<sip:x@192.0.2.9>"], "");
    other.uri = Uri::parse("sip:elsewhere.example").unwrap();
    assert_eq!(reg.handle_register(t0, &other, f).status, 404);
    // `*` needs Expires: 0.
    let star = register("alice", "c5", 1, &["*"], "Expires: 60\r\n");
    assert_eq!(
        authed(&mut reg, t0, &star, "alice", "s3cret", f).status,
        400
    );
    // Same Call-ID, CSeq not higher: 500, binding unchanged.
    let first = register(
        "alice",
        "c6",
        5,
        &["<sip:alice@192.0.2.9>"],
        "Expires: 300\r\n",
    );
    assert_eq!(
        authed(&mut reg, t0, &first, "alice", "s3cret", f).status,
        200
    );
    let stale = register(
        "alice",
        "c6",
        4,
        &["<sip:alice@192.0.2.9>"],
        "Expires: 0\r\n",
    );
    assert_eq!(
        authed(&mut reg, t0, &stale, "alice", "s3cret", f).status,
        500
    );
    assert_eq!(reg.lookup(t0, &aor("alice")).len(), 1);
    // `*` with Expires: 0 and a higher CSeq removes everything.
    let star = register("alice", "c6", 9, &["*"], "Expires: 0\r\n");
    assert_eq!(
        authed(&mut reg, t0, &star, "alice", "s3cret", f).status,
        200
    );
    assert!(reg.lookup(t0, &aor("alice")).is_empty());
    assert_eq!(reg.binding_count(), 0);
}

/// What JsSIP sends over a WebSocket: a `.invalid` Contact with +sip.instance and reg-id and
/// `Supported: outbound`. The binding is an outbound one, keyed by instance/reg-id (a
/// re-register from a new connection replaces it), answered with `Require: outbound`, looked
/// up with its flow, and dropped when the connection closes.
#[test]
fn outbound_websocket_binding_follows_its_flow() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let contact = "<sip:k3x9@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;\
                   +sip.instance=\"<urn:uuid:8f1a9a6c-5a4e-4d2b-9a36-3f5e1b0c7d21>\";expires=600";
    let req = register(
        "alice",
        "ws1",
        1,
        &[contact],
        "Supported: path, gruu, outbound\r\n",
    );
    let ws1 = flow(40001, Some(7), Transport::Ws);
    let ok = authed(&mut reg, t0, &req, "alice", "s3cret", ws1);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers.get(&HeaderName::Require), Some("outbound"));
    let b = &reg.bindings(&aor("alice"))[0];
    assert!(b.outbound);
    assert_eq!(b.reg_id, Some(1));
    assert_eq!(
        b.instance.as_deref(),
        Some("<urn:uuid:8f1a9a6c-5a4e-4d2b-9a36-3f5e1b0c7d21>")
    );
    let t = reg.lookup(t0, &aor("alice"));
    assert_eq!(t[0].flow, Some(ws1), "calls must go back on the WebSocket");
    // The browser reconnected (new connection, new Contact user part, new Call-ID): same
    // instance and reg-id, so the old binding is replaced, not duplicated.
    let contact2 = contact.replace("k3x9", "q8w2");
    let req = register("alice", "ws2", 1, &[&contact2], "Supported: outbound\r\n");
    let ws2 = flow(40002, Some(8), Transport::Ws);
    assert_eq!(
        authed(&mut reg, t0, &req, "alice", "s3cret", ws2).status,
        200
    );
    let t = reg.lookup(t0, &aor("alice"));
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].flow, Some(ws2));
    // The old connection closing no longer matters; the new one closing drops the binding.
    assert_eq!(reg.connection_closed(ConnectionId(7)), 0);
    assert_eq!(reg.connection_closed(ConnectionId(8)), 1);
    assert!(reg.lookup(t0, &aor("alice")).is_empty());
    assert_eq!(reg.stats().flow_failures, 1);
}

#[test]
fn too_many_bindings_are_refused() {
    let mut digest = DigestServer::new(DigestServerConfig::default(), [1; 32]);
    digest.set_user("alice", "pw");
    let mut reg = Registrar::new(
        RegistrarConfig {
            max_bindings: 2,
            authenticate: false,
            ..RegistrarConfig::default()
        },
        digest,
    );
    let f = flow(5060, None, Transport::Udp);
    let t0 = Instant::now();
    for (i, expect) in [(1, 200), (2, 200), (3, 403)] {
        let c = format!("<sip:alice@192.0.2.{i}>");
        let r = reg.handle_register(t0, &register("alice", &format!("m{i}"), 1, &[&c], ""), f);
        assert_eq!(r.status, expect);
    }
}

/// Our client and our registrar on virtual time: challenge, bind, refresh ahead of expiry
/// (challenged again, answered), un-REGISTER; the registrar ends with no binding.
#[test]
fn client_and_registrar_on_virtual_time() {
    let mut reg = registrar();
    let mut cfg = RegistrationConfig::new(
        Uri::parse("sip:gw.example").unwrap(),
        aor("alice"),
        Uri::parse("sip:alice@192.0.2.9:5070").unwrap(),
        ViaTemplate {
            transport: "UDP".into(),
            sent_by: "192.0.2.9:5070".into(),
        },
        "vt-reg",
        "ft",
    );
    cfg.expires = Duration::from_secs(120);
    let mut client = Registration::new(cfg, DigestClient::new("alice", "s3cret"));
    let f = flow(5070, None, Transport::Udp);
    let t0 = Instant::now();
    let mut now = t0;
    let mut req = client.register("z9hG4bK1");
    let mut registrations = 0;
    for round in 0..6 {
        let resp = reg.handle_register(now, &req, f);
        match client.handle_response(now, &resp, &format!("z9hG4bKr{round}"), "cn") {
            RegistrationAction::Send(next) => req = next,
            RegistrationAction::Registered { expires } => {
                assert_eq!(expires, Duration::from_secs(120));
                registrations += 1;
                let at = client.poll_timeout().unwrap();
                assert_eq!(at - now, Duration::from_secs(88));
                now = at;
                req = client
                    .handle_timeout(now, &format!("z9hG4bKt{round}"))
                    .unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(registrations >= 2, "initial and at least one refresh");
    assert!(client.is_registered(now));
    assert_eq!(reg.lookup(now, &aor("alice")).len(), 1);
    let un = client.unregister("z9hG4bKun").unwrap();
    let r401 = reg.handle_register(now, &un, f);
    let RegistrationAction::Send(un2) = client.handle_response(now, &r401, "z9hG4bKun2", "cn")
    else {
        panic!()
    };
    let ok = reg.handle_register(now, &un2, f);
    assert_eq!(ok.status, 200);
    assert_eq!(
        client.handle_response(now, &ok, "x", "y"),
        RegistrationAction::Unregistered
    );
    assert_eq!(client.state(), RegistrationState::Unregistered);
    assert!(reg.lookup(now, &aor("alice")).is_empty());
}

/// Our REGISTER client against SIPp playing a registrar that checks our digest answer with
/// `verifyauth`: 401, authenticated REGISTER (verified), 200 with a 4 s lifetime, the refresh
/// 2 s later (challenged and verified again), then the un-REGISTER with Expires: 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_registers_refreshes_and_unregisters_at_sipp() {
    let mut ua = Ua::bind().await;
    let sipp = Sipp::start("registrar_uas.xml", None, 1, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let local = ua.local;
    let mut cfg = RegistrationConfig::new(
        Uri::parse(&format!("sip:{}", sipp.addr)).unwrap(),
        Uri::parse(&format!("sip:alice@{}", sipp.addr)).unwrap(),
        Uri::parse(&format!("sip:alice@{local}")).unwrap(),
        ViaTemplate {
            transport: "UDP".into(),
            sent_by: local.to_string(),
        },
        &ua.unique("reg"),
        "ft",
    );
    cfg.expires = Duration::from_secs(4);
    let mut client = Registration::new(cfg, DigestClient::new("alice", "s3cret"));
    let first = client.register(&ua.branch());
    ua.layer
        .send_request(
            Instant::now(),
            first,
            sipp.addr,
            gateway::sip::transaction::Reliability::Unreliable,
        )
        .unwrap();
    let limit = Instant::now() + Duration::from_secs(20);
    let (mut registered, mut unregistered) = (0, false);
    while !unregistered && Instant::now() < limit {
        let wake = client.poll_timeout();
        let events = ua.step(wake, limit).await;
        let now = Instant::now();
        for ev in events {
            match ev {
                TuEvent::Response { response, .. } if response.status >= 200 => {
                    let b = ua.branch();
                    match client.handle_response(now, &response, &b, "0a4f113b") {
                        RegistrationAction::Send(r) => {
                            ua.layer
                                .send_request(
                                    now,
                                    r,
                                    sipp.addr,
                                    gateway::sip::transaction::Reliability::Unreliable,
                                )
                                .unwrap();
                        }
                        RegistrationAction::Registered { expires } => {
                            assert_eq!(expires, Duration::from_secs(4));
                            registered += 1;
                            if registered == 2 {
                                let un = client.unregister(&ua.branch()).unwrap();
                                assert_eq!(un.headers.get(&HeaderName::Expires), Some("0"));
                                ua.layer
                                    .send_request(
                                        now,
                                        un,
                                        sipp.addr,
                                        gateway::sip::transaction::Reliability::Unreliable,
                                    )
                                    .unwrap();
                            }
                        }
                        RegistrationAction::Unregistered => unregistered = true,
                        other => panic!("{other:?} for {} {}", response.status, response.reason),
                    }
                }
                TuEvent::Timeout { key } => panic!("timeout {key:?}"),
                _ => {}
            }
        }
        if let Some(r) = client.handle_timeout(Instant::now(), &ua.branch()) {
            ua.layer
                .send_request(
                    Instant::now(),
                    r,
                    sipp.addr,
                    gateway::sip::transaction::Reliability::Unreliable,
                )
                .unwrap();
        }
    }
    ua.flush().await;
    assert!(
        unregistered,
        "registered {registered} times, never unregistered"
    );
    assert_eq!(registered, 2);
    let (code, ok, failed, stderr) = sipp.finish().await;
    assert_eq!(code, Some(0), "sipp: {stderr}");
    assert_eq!((ok, failed), (1, 0));
}
