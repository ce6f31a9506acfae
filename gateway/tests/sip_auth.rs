//! Digest authentication: the RFC 2617 and RFC 7616 example vectors, our UAS against our UAC on
//! virtual time (MD5 and SHA-256, replay, stale nonces, wrong passwords) and REGISTER refresh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gateway::sip::auth::{
    AuthFailure, AuthVerdict, DigestAlgorithm, DigestClient, DigestClientError, DigestInput,
    DigestServer, DigestServerConfig, Registration, RegistrationAction, RegistrationConfig,
    digest_response, pick_challenge,
};
use gateway::sip::dialog::ViaTemplate;
use gateway::sip::message::{HeaderName, Message, Request, Response, Uri};
use gateway::sip::parse::parse_message;

#[test]
fn rfc2617_section_3_5_example() {
    // RFC 2617 §3.5: GET /dir/index.html, Mufasa / "Circle Of Life".
    let r = digest_response(&DigestInput {
        algorithm: DigestAlgorithm::Md5,
        username: "Mufasa",
        realm: "testrealm@host.com",
        password: "Circle Of Life",
        method: "GET",
        uri: "/dir/index.html",
        nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop_auth: Some(("00000001", "0a4f113b")),
    });
    assert_eq!(r, "6629fae49393a05397450978507c4ef1");
}

#[test]
fn rfc7616_section_3_9_1_examples_md5_and_sha256() {
    let input = |algorithm| DigestInput {
        algorithm,
        username: "Mufasa",
        realm: "http-auth@example.org",
        password: "Circle of Life",
        method: "GET",
        uri: "/dir/index.html",
        nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        qop_auth: Some(("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
    };
    assert_eq!(
        digest_response(&input(DigestAlgorithm::Md5)),
        "8ca523f5e9506fed4657c9700eebdbec"
    );
    assert_eq!(
        digest_response(&input(DigestAlgorithm::Sha256)),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
}

fn invite() -> Request {
    let text = "INVITE sip:100@10.0.0.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@10.0.0.1>;tag=a\r\n\
To: <sip:100@10.0.0.2>\r\n\
Call-ID: auth1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@10.0.0.1>\r\n\
Content-Length: 0\r\n\r\n";
    match parse_message(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn server(algorithms: Vec<DigestAlgorithm>) -> DigestServer {
    let mut s = DigestServer::new(
        DigestServerConfig {
            realm: "gw".into(),
            algorithms,
            ..DigestServerConfig::default()
        },
        [7; 32],
    );
    s.set_user("alice", "s3cret");
    s
}

#[test]
fn uac_answers_uas_challenge_preferring_sha256_and_each_nonce_count_is_used_once() {
    let t0 = Instant::now();
    let mut srv = server(vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]);
    let req = invite();
    assert_eq!(
        srv.verify(t0, &req, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::NoCredentials,
            stale: false
        }
    );
    let challenge = srv.challenge(t0, &req, false, false);
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.headers.count(&HeaderName::WwwAuthenticate), 2);
    assert_eq!(
        pick_challenge(&challenge).unwrap().algorithm,
        DigestAlgorithm::Sha256
    );
    let mut client = DigestClient::new("alice", "s3cret");
    let authed = client
        .authorize(&req, &challenge, "z9hG4bK2", "cn1")
        .unwrap();
    assert_eq!(authed.headers.cseq().unwrap().seq, 2);
    assert_eq!(authed.headers.top_via().unwrap().branch(), Some("z9hG4bK2"));
    let creds = authed.headers.authorization().unwrap().unwrap();
    assert_eq!(creds.get("algorithm"), Some("SHA-256"));
    assert_eq!(creds.get("nc"), Some("00000001"));
    assert_eq!(
        srv.verify(t0, &authed, false),
        AuthVerdict::Authorized {
            username: "alice".into()
        }
    );
    // The same credentials again (a captured request replayed): refused.
    assert_eq!(
        srv.verify(t0, &authed, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::Replay,
            stale: false
        }
    );
    // The next request on the same nonce with nc=2 is fine.
    let pick = pick_challenge(&challenge).unwrap();
    let mut next = authed.clone();
    next.headers.set(
        HeaderName::Authorization,
        client.credentials(&pick, &next.method, &next.uri, "cn2"),
    );
    assert_eq!(
        next.headers.authorization().unwrap().unwrap().get("nc"),
        Some("00000002")
    );
    assert!(matches!(
        srv.verify(t0, &next, false),
        AuthVerdict::Authorized { .. }
    ));
}

#[test]
fn md5_only_server_with_proxy_challenge() {
    let t0 = Instant::now();
    let mut srv = server(vec![DigestAlgorithm::Md5]);
    let req = invite();
    let challenge = srv.challenge(t0, &req, false, true);
    assert_eq!(challenge.status, 407);
    let authed = DigestClient::new("alice", "s3cret")
        .authorize(&req, &challenge, "z9hG4bK3", "x")
        .unwrap();
    assert!(
        authed
            .headers
            .get(&HeaderName::ProxyAuthorization)
            .is_some()
    );
    assert!(authed.headers.get(&HeaderName::Authorization).is_none());
    assert!(matches!(
        srv.verify(t0, &authed, true),
        AuthVerdict::Authorized { .. }
    ));
    // Proxy credentials do not satisfy a UAS (401) check.
    assert!(matches!(
        srv.verify(t0, &authed, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::NoCredentials,
            ..
        }
    ));
}

#[test]
fn expired_nonce_gets_stale_true_and_the_client_retries_once() {
    let t0 = Instant::now();
    let mut srv = server(vec![DigestAlgorithm::Md5]);
    let req = invite();
    let challenge = srv.challenge(t0, &req, false, false);
    let mut client = DigestClient::new("alice", "s3cret");
    let authed = client.authorize(&req, &challenge, "z9hG4bK4", "c").unwrap();
    let late = t0 + Duration::from_secs(301);
    assert_eq!(
        srv.verify(late, &authed, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::StaleNonce,
            stale: true
        }
    );
    let again = srv.challenge(late, &authed, true, false);
    assert!(
        again
            .headers
            .get(&HeaderName::WwwAuthenticate)
            .unwrap()
            .contains("stale=true")
    );
    // stale=true: the client answers again even though it answered this realm before.
    let retry = client.authorize(&authed, &again, "z9hG4bK5", "c2").unwrap();
    assert_eq!(retry.headers.cseq().unwrap().seq, 3);
    assert!(matches!(
        srv.verify(late, &retry, false),
        AuthVerdict::Authorized { .. }
    ));
}

#[test]
fn wrong_password_unknown_user_tampered_uri_and_missing_qop_are_refused() {
    let t0 = Instant::now();
    let mut srv = server(vec![DigestAlgorithm::Md5]);
    let req = invite();
    let challenge = srv.challenge(t0, &req, false, false);

    let mut wrong = DigestClient::new("alice", "guess");
    let bad = wrong.authorize(&req, &challenge, "z9hG4bK6", "c").unwrap();
    assert_eq!(
        srv.verify(t0, &bad, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::WrongResponse,
            stale: false
        }
    );
    // Challenged again without stale: the client stops instead of looping.
    let again = srv.challenge(t0, &bad, false, false);
    assert_eq!(
        wrong.authorize(&bad, &again, "z9hG4bK7", "c"),
        Err(DigestClientError::Rejected)
    );

    let stranger = DigestClient::new("mallory", "s3cret")
        .authorize(&req, &challenge, "z9hG4bK8", "c")
        .unwrap();
    assert!(matches!(
        srv.verify(t0, &stranger, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::UnknownUser,
            ..
        }
    ));

    let good = DigestClient::new("alice", "s3cret")
        .authorize(&req, &challenge, "z9hG4bK9", "c")
        .unwrap();
    let mut moved = good.clone();
    moved.uri = Uri::parse("sip:900@10.0.0.2").unwrap();
    assert!(matches!(
        srv.verify(t0, &moved, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::UriMismatch,
            ..
        }
    ));
    let v = good.headers.get(&HeaderName::Authorization).unwrap();
    let no_qop = v.split(", qop=").next().unwrap().to_owned();
    let mut legacy = good.clone();
    legacy.headers.set(HeaderName::Authorization, no_qop);
    assert!(matches!(
        srv.verify(t0, &legacy, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::QopRequired,
            ..
        }
    ));
    let mut forged = good.clone();
    forged.headers.set(
        HeaderName::Authorization,
        v.replace(
            &challenge_nonce(&challenge),
            "00000000000000000000000000000000",
        ),
    );
    assert!(matches!(
        srv.verify(t0, &forged, false),
        AuthVerdict::Challenge {
            failure: AuthFailure::UnknownNonce,
            ..
        }
    ));
}

fn challenge_nonce(resp: &Response) -> String {
    pick_challenge(resp)
        .unwrap()
        .params
        .get("nonce")
        .unwrap()
        .to_owned()
}

#[test]
fn nonce_table_is_bounded_and_forgets_old_nonces() {
    let t0 = Instant::now();
    let mut srv = DigestServer::new(
        DigestServerConfig {
            max_nonces: 100,
            algorithms: vec![DigestAlgorithm::Md5],
            ..DigestServerConfig::default()
        },
        [1; 32],
    );
    let req = invite();
    for _ in 0..1000 {
        let _ = srv.challenge(t0, &req, false, false);
    }
    assert_eq!(srv.live_nonces(), 100);
    let _ = srv.challenge(t0 + Duration::from_secs(601), &req, false, false);
    assert_eq!(srv.live_nonces(), 1);
}

fn reply(srv: &mut DigestServer, now: Instant, req: &Request, expires: &str) -> Response {
    match srv.verify(now, req, false) {
        AuthVerdict::Authorized { .. } => {
            let mut ok = Response::for_request(req, 200);
            ok.headers.push(
                HeaderName::Contact,
                format!("<sip:gw@10.0.0.1:5060>;expires={expires}"),
            );
            ok
        }
        AuthVerdict::Challenge { stale, .. } => srv.challenge(now, req, stale, false),
    }
}

#[test]
fn register_answers_401_and_refreshes_before_expiry_with_the_same_call_id() {
    let t0 = Instant::now();
    let mut registrar = server(vec![DigestAlgorithm::Md5]);
    let mut reg = Registration::new(
        RegistrationConfig {
            registrar: Uri::parse("sip:10.0.0.2").unwrap(),
            aor: Uri::parse("sip:alice@10.0.0.2").unwrap(),
            contact: Uri::parse("sip:gw@10.0.0.1:5060").unwrap(),
            expires: Duration::from_secs(3600),
            via: ViaTemplate {
                transport: "UDP".into(),
                sent_by: "10.0.0.1:5060".into(),
            },
            call_id: "reg-1".into(),
            from_tag: "rt".into(),
            retry_after: Duration::from_secs(60),
            retry_max: Duration::from_secs(600),
            instance: None,
            reg_id: None,
        },
        DigestClient::new("alice", "s3cret"),
    );
    let first = reg.register("z9hG4bKr1");
    let r401 = reply(&mut registrar, t0, &first, "120");
    assert_eq!(r401.status, 401);
    let RegistrationAction::Send(second) = reg.handle_response(t0, &r401, "z9hG4bKr2", "c1") else {
        panic!("expected an authenticated REGISTER");
    };
    let ok = reply(&mut registrar, t0, &second, "120");
    assert_eq!(ok.status, 200);
    assert_eq!(
        reg.handle_response(t0, &ok, "z9hG4bKr3", "c2"),
        RegistrationAction::Registered {
            expires: Duration::from_secs(120)
        }
    );
    assert!(reg.is_registered(t0 + Duration::from_secs(119)));
    // Refresh 32 s before the 120 s binding lapses.
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(88)));
    assert!(
        reg.handle_timeout(t0 + Duration::from_secs(87), "x")
            .is_none()
    );
    let t1 = t0 + Duration::from_secs(88);
    let refresh = reg.handle_timeout(t1, "z9hG4bKr4").unwrap();
    assert_eq!(refresh.headers.call_id().unwrap(), "reg-1");
    assert_eq!(refresh.headers.cseq().unwrap().seq, 3);
    // The registrar challenges the refresh with a new nonce; it is answered and accepted.
    let r401 = reply(&mut registrar, t1, &refresh, "120");
    let RegistrationAction::Send(again) = reg.handle_response(t1, &r401, "z9hG4bKr5", "c3") else {
        panic!("expected an authenticated refresh");
    };
    let ok = reply(&mut registrar, t1, &again, "120");
    assert!(matches!(
        reg.handle_response(t1, &ok, "z9hG4bKr6", "c4"),
        RegistrationAction::Registered { .. }
    ));
    assert!(reg.is_registered(t0 + Duration::from_secs(200)));
}

#[test]
fn register_with_a_wrong_password_fails_and_schedules_a_retry() {
    let t0 = Instant::now();
    let mut registrar = server(vec![DigestAlgorithm::Md5]);
    let mut reg = Registration::new(
        RegistrationConfig {
            registrar: Uri::parse("sip:10.0.0.2").unwrap(),
            aor: Uri::parse("sip:alice@10.0.0.2").unwrap(),
            contact: Uri::parse("sip:gw@10.0.0.1:5060").unwrap(),
            expires: Duration::from_secs(600),
            via: ViaTemplate {
                transport: "UDP".into(),
                sent_by: "10.0.0.1:5060".into(),
            },
            call_id: "reg-2".into(),
            from_tag: "rt".into(),
            retry_after: Duration::from_secs(60),
            retry_max: Duration::from_secs(600),
            instance: None,
            reg_id: None,
        },
        DigestClient::new("alice", "wrong"),
    );
    let first = reg.register("z9hG4bKw1");
    let r401 = reply(&mut registrar, t0, &first, "600");
    let RegistrationAction::Send(second) = reg.handle_response(t0, &r401, "z9hG4bKw2", "c") else {
        panic!("expected an answer to the first challenge");
    };
    let r401 = reply(&mut registrar, t0, &second, "600");
    assert_eq!(r401.status, 401);
    assert_eq!(
        reg.handle_response(t0, &r401, "z9hG4bKw3", "c"),
        RegistrationAction::Failed {
            status: 0,
            retry_in: Duration::from_secs(60)
        }
    );
    assert!(!reg.is_registered(t0));
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(60)));
}
