//! The control-actions API over real HTTP and WebSocket on loopback, against the in-process
//! fake call side: screen pops carrying the URI, transfers of every kind and outcome, every
//! refusal (400/401/403/404/409), event resume, click-to-call, admin changes, the OpenAPI
//! document against the routes, and the TLS access listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::control::access::AccessListener;
use gateway::control::api::{ControlPlane, ROUTES};
use gateway::control::config::{
    AccessConfig, AgentConfig, ClickToCallDestination, Comfort, ControlConfig, Endpoint,
    QueueConfig, RouteKind, TransferRoute,
};
use gateway::control::core::{Audio, LegId};
use gateway::control::fake::{Behaviour, FakeCallSide, FakeHandle, Hears};
use gateway::control::{CallUri, LegKind, Party};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ADMIN: &str = "admin-token-0001";
const SUPERVISOR: &str = "supervisor-token-0001";
const ALICE: &str = "alice-token-0001";
const BOB: &str = "bob-token-0001";
const CAROL: &str = "carol-token-0001";
const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\na=rtpmap:0 PCMU/8000\r\n";

fn agent(id: &str, token: &str, endpoints: Vec<Endpoint>) -> AgentConfig {
    AgentConfig {
        id: id.into(),
        name: format!("Agent {id}"),
        skills: vec!["support".into()],
        endpoints,
        token: token.into(),
    }
}

fn config() -> ControlConfig {
    let mut c = ControlConfig {
        access: AccessConfig {
            admin_tokens: vec![ADMIN.into()],
            supervisor_tokens: vec![SUPERVISOR.into()],
            ..AccessConfig::default()
        },
        agents: vec![
            agent("alice", ALICE, vec![Endpoint::Browser]),
            agent("bob", BOB, vec![Endpoint::Browser]),
            agent(
                "carol",
                CAROL,
                vec![Endpoint::Sip {
                    uri: "sip:carol@127.0.0.1:5099".into(),
                }],
            ),
        ],
        queues: vec![QueueConfig {
            name: "support".into(),
            skill: Some("support".into()),
            ring_timeout_ms: 5_000,
            max_wait_ms: 60_000,
            overflow: None,
            wrap_up_ms: Some(0),
            comfort: Comfort::Tone,
            away_on_no_answer: true,
        }],
        routes: vec![TransferRoute {
            kind: RouteKind::Tdm,
            pattern: "2XXX".into(),
            label: "Extensions".into(),
        }],
        click_to_call: vec![ClickToCallDestination {
            id: "support".into(),
            label: "Support".into(),
            target: Party::Queue("support".into()),
        }],
        ..ControlConfig::default()
    };
    c.timers.heartbeat_ms = 300;
    c.timers.transfer_ring_ms = 2_000;
    c
}

struct H {
    base: String,
    plane: Arc<ControlPlane>,
    fake: Arc<FakeCallSide>,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for H {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// reqwest is built without a bundled crypto provider: use ring, like the gateway.
fn crypto() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

async fn start(cfg: ControlConfig) -> H {
    crypto();
    let fake = FakeCallSide::new();
    let plane = ControlPlane::start(cfg, Arc::new(FakeHandle(fake.clone()))).unwrap();
    fake.attach(&plane);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gateway::web::app(plane.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    H {
        base: format!("http://{addr}"),
        plane,
        fake,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        server,
    }
}

impl H {
    async fn req(
        &self,
        method: &str,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.req("GET", Some(token), path, None).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.req("POST", Some(token), path, Some(body)).await
    }

    async fn login(&self, token: &str, id: &str) {
        let (s, v) = self
            .post(token, &format!("/api/v1/agents/{id}/login"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["presence"], "available");
    }

    async fn answer(&self, token: &str, call: &CallUri) -> LegId {
        let (s, v) = self
            .post(
                token,
                &format!("/api/v1/calls/{call}/answer"),
                json!({ "sdp": SDP }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["call_uri"], call.to_string());
        serde_json::from_value(v["leg"].clone()).unwrap()
    }

    async fn ws(&self, token: &str, after: Option<u64>) -> Ws {
        let mut url = format!(
            "{}/api/v1/events?access_token={token}",
            self.base.replace("http://", "ws://")
        );
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut w = Ws {
            ws,
            seen: Vec::new(),
        };
        w.next_of("hello").await;
        w
    }

    /// Waits until the plane's executor has carried out everything (the fake's state settles).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    async fn place(&self, caller: &str) -> (CallUri, LegId) {
        self.fake
            .place_call(Party::Queue("support".into()), caller, LegKind::Sip)
            .unwrap()
    }

    async fn assert_nothing_left(&self) {
        for _ in 0..100 {
            if self.fake.live_legs() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (calls, legs, transfers) = self
            .plane
            .read(|c, _| (c.call_count(), c.leg_count(), c.transfer_count()));
        assert_eq!(
            (
                calls,
                legs,
                transfers,
                self.fake.live_legs(),
                self.plane.session_count()
            ),
            (0, 0, 0, 0, 0),
            "something left behind"
        );
    }
}

struct Ws {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    seen: Vec<Value>,
}

impl Ws {
    async fn next(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("no event within 5 s")
                .expect("stream ended")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "heartbeat" {
                    self.seen.push(v.clone());
                }
                return v;
            }
        }
    }

    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    async fn close(mut self) {
        let _ = self.ws.send(Message::Close(None)).await;
    }
}

#[tokio::test]
async fn screen_pop_blind_transfer_pops_the_second_agent_with_the_same_uri() {
    let h = start(config()).await;
    h.login(ALICE, "alice").await;
    h.login(BOB, "bob").await;
    let mut wa = h.ws(ALICE, None).await;
    let mut wb = h.ws(BOB, None).await;
    let mut wsup = h.ws(SUPERVISOR, None).await;
    let (call, caller_leg) = h.place("+15550001").await;

    let pop = wa.next_of("call.offered").await;
    assert_eq!(pop["call_uri"], call.to_string());
    assert_eq!(pop["caller"], "+15550001");
    assert_eq!(pop["agent"], "alice");
    assert_eq!(pop["queue"], "support");
    assert!(wsup.next_of("call.created").await["call_uri"] == call.to_string());
    h.settle().await;
    assert_eq!(
        h.fake.hears(caller_leg),
        Hears::Audio(Audio::Comfort(Comfort::Tone)),
        "queued caller hears comfort tone"
    );

    let leg_a = h.answer(ALICE, &call).await;
    assert_eq!(wa.next_of("call.answered").await["agent"], "alice");
    h.settle().await;
    assert_eq!(h.fake.hears(caller_leg), Hears::Leg(leg_a));
    let (s, v) = h.get(ALICE, &format!("/api/v1/calls/{call}")).await;
    assert_eq!(
        (s, v["state"].as_str(), v["agent"].as_str()),
        (StatusCode::OK, Some("connected"), Some("alice"))
    );

    let (s, v) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{call}/transfer"),
            json!({ "target": { "agent": "bob" }, "kind": "blind" }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "transferring");
    let pop_b = wb.next_of("call.offered").await;
    assert_eq!(
        pop_b["call_uri"],
        call.to_string(),
        "the second agent's pop carries the same URI"
    );
    assert_eq!(pop_b["purpose"], "transfer_target");
    assert_eq!(pop_b["transfer_history"][0]["from"], "alice");
    assert_eq!(pop_b["transfer_history"][0]["to"]["agent"], "bob");
    h.settle().await;
    assert_eq!(
        h.fake.hears(caller_leg),
        Hears::Audio(Audio::Ringback),
        "caller hears ringback, not silence"
    );

    let leg_b = h.answer(BOB, &call).await;
    let done_b = wb.next_of("transfer.connected").await;
    assert_eq!(done_b["call_uri"], call.to_string());
    let done_a = wa.next_of("transfer.connected").await;
    assert_eq!(done_a["call_uri"], call.to_string());
    h.settle().await;
    assert_eq!(h.fake.hears(caller_leg), Hears::Leg(leg_b));
    assert!(h.fake.leg(leg_a).is_none(), "first agent's leg released");
    let (s, v) = h.get(BOB, &format!("/api/v1/calls/{call}")).await;
    assert_eq!((s, v["agent"].as_str()), (StatusCode::OK, Some("bob")));
    assert_eq!(v["transfer_history"][0]["outcome"], "connected");
    let (s, _) = h.get(ALICE, &format!("/api/v1/calls/{call}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "alice no longer holds the call");

    // Every event on the supervisor stream carries a seq; order is strictly increasing.
    let (s, _) = h
        .post(BOB, &format!("/api/v1/calls/{call}/hangup"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let ended = wb.next_of("call.ended").await;
    assert_eq!(
        (ended["call_uri"].as_str(), ended["cause"].as_str()),
        (Some(call.to_string().as_str()), Some("agent_hangup"))
    );
    wsup.next_of("call.ended").await;
    let seqs: Vec<u64> = wsup.seen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let kinds: Vec<&str> = wsup
        .seen
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for k in [
        "call.created",
        "call.queued",
        "call.offered",
        "call.answered",
        "transfer.requested",
        "transfer.target_alerting",
        "transfer.target_answered",
        "transfer.connected",
        "call.ended",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    h.assert_nothing_left().await;
    for w in [wa, wb, wsup] {
        w.close().await;
    }
}

#[tokio::test]
async fn attended_transfer_consult_complete_and_cancel() {
    let h = start(config()).await;
    h.login(ALICE, "alice").await;
    h.login(BOB, "bob").await;
    let mut wb = h.ws(BOB, None).await;
    let (call, caller_leg) = h.place("+15550002").await;
    let leg_a = h.answer(ALICE, &call).await;

    // Consult bob, then cancel: the caller is back with alice.
    let (s, v) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{call}/consult"),
            json!({ "target": { "agent": "bob" } }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    wb.next_of("call.offered").await;
    h.settle().await;
    assert_eq!(
        h.fake.hears(caller_leg),
        Hears::Audio(Audio::Hold),
        "caller on hold during consult"
    );
    let leg_b = h.answer(BOB, &call).await;
    h.settle().await;
    assert_eq!(h.fake.hears(leg_a), Hears::Leg(leg_b), "alice talks to bob");
    let (s, v) = h.get(ALICE, &format!("/api/v1/calls/{call}")).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("consulting"))
    );
    let (s, _) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{call}/transfer/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        wb.next_of("transfer.cancelled").await["call_uri"],
        call.to_string()
    );
    h.settle().await;
    assert_eq!(h.fake.hears(caller_leg), Hears::Leg(leg_a));
    assert!(h.fake.leg(leg_b).is_none(), "bob's leg released on cancel");

    // Consult again and complete.
    let (s, _) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{call}/transfer"),
            json!({ "target": { "agent": "bob" }, "kind": "attended" }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wb.next_of("call.offered").await;
    let leg_b2 = h.answer(BOB, &call).await;
    wb.next_of("transfer.target_answered").await;
    let (s, v) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{call}/transfer/complete"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "released", "alice has handed the call on");
    assert_eq!(
        wb.next_of("transfer.connected").await["call_uri"],
        call.to_string()
    );
    h.settle().await;
    assert_eq!(h.fake.hears(caller_leg), Hears::Leg(leg_b2));
    let (s, _) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{call}/transfer/complete"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "alice is no longer on the call");
    h.fake.remote_hang_up(caller_leg);
    wb.next_of("call.ended").await;
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn busy_and_unanswered_targets_return_the_caller_to_the_first_agent() {
    let h = start(config()).await;
    h.login(ALICE, "alice").await;
    h.login(BOB, "bob").await;
    let mut wa = h.ws(ALICE, None).await;
    // Bob takes a call first: he is busy.
    let (c1, _) = h.place("+15550003").await;
    let (c2, caller2) = h.place("+15550004").await;
    // Alice (idle longest) got c1; Bob c2.
    let leg_a = h.answer(ALICE, &c1).await;
    let _leg_b = h.answer(BOB, &c2).await;
    let (s, _) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{c1}/transfer"),
            json!({ "target": { "agent": "bob" } }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let f = wa.next_of("transfer.failed").await;
    assert_eq!(f["reason"], "busy");
    assert_eq!(f["caller_returned_to"]["agent"], "alice");
    h.settle().await;
    let caller1 = h.fake.legs_to("+15550003")[0];
    assert_eq!(
        h.fake.hears(caller1),
        Hears::Leg(leg_a),
        "caller back with alice"
    );

    // To a TDM extension that rings and never answers: no_answer after the ring timeout (2 s).
    h.fake.set_behaviour("tdm:2001", Behaviour::NoAnswer);
    let (s, v) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{c1}/transfer"),
            json!({ "target": { "tdm_number": "2001" } }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    wa.next_of("transfer.target_alerting").await;
    let f = wa.next_of("transfer.failed").await;
    assert_eq!(f["reason"], "no_answer");
    h.settle().await;
    assert_eq!(h.fake.hears(caller1), Hears::Leg(leg_a));
    assert!(
        h.fake.legs_to("tdm:2001").is_empty(),
        "the unanswered target leg is released"
    );

    // And one that answers: the caller is connected to the external leg.
    let (s, _) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{c1}/transfer"),
            json!({ "target": { "tdm_number": "2002" } }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wa.next_of("transfer.connected").await;
    h.settle().await;
    let ext = h.fake.legs_to("tdm:2002")[0];
    assert_eq!(h.fake.hears(caller1), Hears::Leg(ext));
    h.fake.remote_hang_up(ext);
    wa.next_of("call.ended").await;
    h.fake.remote_hang_up(caller2);
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn a_sip_agent_is_called_on_its_phone_and_answers_there() {
    let h = start(config()).await;
    h.fake
        .set_behaviour("sip:carol@127.0.0.1:5099", Behaviour::Ring);
    h.login(CAROL, "carol").await;
    let mut wc = h.ws(CAROL, None).await;
    let (call, caller) = h.place("+15550005").await;
    assert_eq!(
        wc.next_of("call.offered").await["call_uri"],
        call.to_string()
    );
    h.settle().await;
    let phone = h.fake.legs_to("sip:carol@127.0.0.1:5099");
    assert_eq!(phone.len(), 1, "carol's phone is called");
    let (s, v) = h
        .post(
            CAROL,
            &format!("/api/v1/calls/{call}/answer"),
            json!({ "sdp": SDP }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "answer on the phone: {v}");
    assert!(h.fake.answer(phone[0]));
    wc.next_of("call.answered").await;
    h.settle().await;
    assert_eq!(h.fake.hears(caller), Hears::Leg(phone[0]));
    // Hold, mute, DTMF act on the legs.
    let (s, v) = h
        .post(CAROL, &format!("/api/v1/calls/{call}/hold"), json!({}))
        .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("held")));
    wc.next_of("call.held").await;
    h.settle().await;
    assert_eq!(h.fake.hears(caller), Hears::Hold);
    let (s, _) = h
        .post(CAROL, &format!("/api/v1/calls/{call}/resume"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    wc.next_of("call.resumed").await;
    let (s, v) = h
        .post(CAROL, &format!("/api/v1/calls/{call}/mute"), json!({}))
        .await;
    assert_eq!((s, v["muted"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, _) = h
        .post(
            CAROL,
            &format!("/api/v1/calls/{call}/dtmf"),
            json!({ "digits": "12#" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .post(
            CAROL,
            &format!("/api/v1/calls/{call}/dtmf"),
            json!({ "digits": "12x" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    h.settle().await;
    assert_eq!(h.fake.hears(caller), Hears::Leg(phone[0]));
    assert!(h.fake.leg(phone[0]).unwrap().muted);
    assert_eq!(h.fake.leg(caller).unwrap().dtmf, "12#", "digits sent once");
    // The phone hangs up: the call ends.
    h.fake.remote_hang_up(phone[0]);
    assert_eq!(wc.next_of("call.ended").await["cause"], "agent_hangup");
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn every_refusal_is_a_clear_error() {
    let h = start(config()).await;
    h.login(ALICE, "alice").await;
    let (call, caller) = h.place("+15550006").await;
    let leg_a = h.answer(ALICE, &call).await;
    let p = format!("/api/v1/calls/{call}");

    // 401: no token, unknown token (with a JSON error and WWW-Authenticate).
    let (s, v) = h.req("GET", None, &p, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthorized");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("bearer"),
        "{v}"
    );
    let (s, _) = h.get("not-a-token", &p).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let r = h.http.get(format!("{}{p}", h.base)).send().await.unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"spanbridge\""
    );
    // 403: another agent's call, for every action.
    for action in [
        "hangup",
        "hold",
        "mute",
        "transfer/cancel",
        "transfer/complete",
        "answer",
    ] {
        let (s, v) = h
            .post(BOB, &format!("{p}/{action}"), json!({ "sdp": SDP }))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{action}: {v}");
    }
    let (s, v) = h
        .post(
            BOB,
            &format!("{p}/transfer"),
            json!({ "target": { "agent": "carol" } }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = h.get(BOB, &p).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // 403: forbidden targets (the toll-fraud guard): no route for PSTN numbers or SIP URIs.
    for target in [
        json!({ "tdm_number": "900123456" }),
        json!({ "sip_uri": "sip:+4420123@evil.example" }),
        json!({ "tdm_number": "20011" }),
    ] {
        let (s, v) = h
            .post(ALICE, &format!("{p}/transfer"), json!({ "target": target }))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{target}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no transfer route"),
            "{v}"
        );
    }
    // 403: supervisors see but do not act; agents do not administer or log others in.
    let (s, _) = h.get(SUPERVISOR, &p).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.post(SUPERVISOR, &format!("{p}/hangup"), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h.post(ALICE, "/api/v1/agents/bob/login", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .req("DELETE", Some(ALICE), "/api/v1/queues/support", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h.post(ALICE, "/api/v1/agents", json!({ "id": "x", "name": "x", "endpoints": [{ "kind": "browser" }], "token": "xxxxxxxxxxxx" })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // 404: unknown URI, unknown target, unknown route; 400: a malformed URI or body.
    let (s, v) = h
        .get(ALICE, &format!("/api/v1/calls/{}", CallUri::new()))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{}/hangup", CallUri::new()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .post(
            ALICE,
            &format!("{p}/transfer"),
            json!({ "target": { "agent": "nobody" } }),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.get(ALICE, "/api/v1/no-such-thing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.get(ALICE, "/api/v1/calls/not-a-uri").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = h
        .post(ALICE, &format!("{p}/transfer"), json!({ "target": "bob" }))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = h
        .post(
            ALICE,
            &format!("{p}/transfer"),
            json!({ "target": { "agent": "alice" } }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "self-transfer");
    // 409: a second transfer while one is in progress (bob is offline: the target fails only
    // when tried, so make the first one hang on a silent extension).
    h.fake.set_behaviour("tdm:2005", Behaviour::Silent);
    let (s, _) = h
        .post(
            ALICE,
            &format!("{p}/transfer"),
            json!({ "target": { "tdm_number": "2005" } }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = h
        .post(
            ALICE,
            &format!("{p}/transfer"),
            json!({ "target": { "queue": "support" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already in progress"),
        "{v}"
    );
    let (s, _) = h
        .post(ALICE, &format!("{p}/transfer/complete"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "complete of a blind transfer");
    let (s, _) = h.post(ALICE, &format!("{p}/hold"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "hold during a transfer");
    let (s, _) = h
        .post(ALICE, "/api/v1/agents/alice/logout", json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "logout on a call");
    let (s, _) = h
        .post(ALICE, &format!("{p}/transfer/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    h.settle().await;
    assert_eq!(h.fake.hears(caller), Hears::Leg(leg_a));
    h.fake.remote_hang_up(caller);
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn a_reconnecting_client_resumes_from_its_sequence_number() {
    let mut cfg = config();
    cfg.timers.event_log_capacity = 40;
    let h = start(cfg).await;
    let mut w = h.ws(ADMIN, Some(0)).await;
    h.login(ALICE, "alice").await;
    let (call, caller) = h.place("+15550007").await;
    let last = w.next_of("call.offered").await["seq"].as_u64().unwrap();
    w.close().await;
    // While disconnected: answer, hold, resume.
    h.answer(ALICE, &call).await;
    h.post(ALICE, &format!("/api/v1/calls/{call}/hold"), json!({}))
        .await;
    h.post(ALICE, &format!("/api/v1/calls/{call}/resume"), json!({}))
        .await;
    h.settle().await;
    let mut w = h.ws(ADMIN, Some(last)).await;
    let mut kinds = Vec::new();
    let mut seqs = Vec::new();
    while kinds.last() != Some(&"call.resumed".to_string()) {
        let e = w.next().await;
        if e["type"] == "heartbeat" {
            continue;
        }
        seqs.push(e["seq"].as_u64().unwrap());
        kinds.push(e["type"].as_str().unwrap().to_string());
    }
    assert_eq!(seqs.first(), Some(&(last + 1)), "nothing missed");
    assert!(
        seqs.windows(2).all(|x| x[1] == x[0] + 1),
        "no gaps, no repeats: {seqs:?}"
    );
    for k in ["call.answered", "call.held", "call.resumed"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    // A heartbeat arrives with the latest seq.
    let hb = w.next_of("heartbeat").await;
    assert_eq!(hb["seq"].as_u64(), seqs.last().copied());
    w.close().await;
    // Age the log out, then ask for the beginning: an explicit resume error, not silence.
    for _ in 0..30 {
        h.post(ALICE, &format!("/api/v1/calls/{call}/hold"), json!({}))
            .await;
        h.post(ALICE, &format!("/api/v1/calls/{call}/resume"), json!({}))
            .await;
    }
    h.settle().await;
    let url = format!(
        "{}/api/v1/events?access_token={ADMIN}&after=1",
        h.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
    assert_eq!(v["code"], "resume_failed", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("no longer kept"),
        "{v}"
    );
    // An agent only sees events of its own calls and presence.
    h.fake.remote_hang_up(caller);
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn agents_see_only_their_calls_events() {
    let h = start(config()).await;
    h.login(ALICE, "alice").await;
    let mut wb = h.ws(BOB, None).await;
    let (call, caller) = h.place("+15550008").await;
    h.answer(ALICE, &call).await;
    h.fake.remote_hang_up(caller);
    // Bob then logs in: his stream shows presence changes but nothing of alice's call.
    h.settle().await;
    h.login(BOB, "bob").await;
    let p = wb.next_of("agent.presence").await;
    let _ = p;
    loop {
        let e = wb.next().await;
        if e["type"] == "agent.presence" && e["agent"] == "bob" && e["presence"] == "available" {
            break;
        }
    }
    assert!(
        wb.seen.iter().all(|e| e.get("call_uri").is_none()),
        "bob saw another agent's call: {:?}",
        wb.seen
    );
    let (s, v) = h.get(BOB, "/api/v1/calls").await;
    assert_eq!(
        (s, v["calls"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn click_to_call_whip_creates_a_call_and_delete_hangs_up() {
    let h = start(config()).await;
    h.login(ALICE, "alice").await;
    let mut wa = h.ws(ALICE, None).await;
    let (s, v) = h
        .req("GET", None, "/api/v1/click-to-call/destinations", None)
        .await;
    assert_eq!(
        (s, v["destinations"][0]["id"].as_str()),
        (StatusCode::OK, Some("support"))
    );
    let r = h
        .http
        .post(format!(
            "{}/api/v1/whip?destination=support&caller=Web%20Visitor",
            h.base
        ))
        .header("content-type", "application/sdp")
        .body(SDP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let uri: CallUri = r.headers()["x-call-uri"].to_str().unwrap().parse().unwrap();
    let answer = r.text().await.unwrap();
    assert!(
        answer.starts_with("v=0") && answer.contains("a=setup:active"),
        "{answer}"
    );
    let pop = wa.next_of("call.offered").await;
    assert_eq!(pop["call_uri"], uri.to_string());
    assert_eq!(pop["caller"], "Web Visitor");
    let (s, v) = h.req("GET", None, &location, None).await;
    assert_eq!(
        (s, v["call_uri"].as_str(), v["state"].as_str()),
        (
            StatusCode::OK,
            Some(uri.to_string().as_str()),
            Some("offered")
        )
    );
    // Unknown destination, not SDP: refused.
    let r = h
        .http
        .post(format!("{}/api/v1/whip?destination=premium", h.base))
        .header("content-type", "application/sdp")
        .body(SDP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = h
        .http
        .post(format!("{}/api/v1/whip?destination=support", h.base))
        .header("content-type", "application/sdp")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // JSON form.
    let (s, v) = h
        .req(
            "POST",
            None,
            "/api/v1/click-to-call",
            Some(json!({ "destination": "support", "sdp": SDP })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let second = v["resource"].as_str().unwrap().to_string();
    // DELETE hangs up: the pop is withdrawn and the call ends.
    let r = h
        .http
        .delete(format!("{}{location}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(wa.next_of("call.ended").await["cause"], "caller_hangup");
    let (s, _) = h.req("GET", None, &location, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = h
        .http
        .delete(format!("{}{second}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn admin_manages_agents_and_queues_at_run_time() {
    let h = start(config()).await;
    let new_agent = json!({ "id": "dave", "name": "Dave", "skills": ["billing"], "endpoints": [{ "kind": "browser" }], "token": "dave-token-0001" });
    let (s, v) = h.post(ADMIN, "/api/v1/agents", new_agent.clone()).await;
    assert_eq!(
        (s, v["presence"].as_str()),
        (StatusCode::CREATED, Some("offline")),
        "{v}"
    );
    let (s, _) = h.post(ADMIN, "/api/v1/agents", new_agent.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let mut dup = new_agent.clone();
    dup["id"] = json!("dave2");
    let (s, _) = h.post(ADMIN, "/api/v1/agents", dup).await;
    assert_eq!(s, StatusCode::CONFLICT, "token in use");
    let (s, v) = h
        .post(
            ADMIN,
            "/api/v1/agents",
            json!({ "id": "bad id", "name": "x", "endpoints": [], "token": "short" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // The new token works at once.
    h.login("dave-token-0001", "dave").await;
    let (s, v) = h
        .post(
            ADMIN,
            "/api/v1/queues",
            json!({ "name": "billing", "skill": "billing", "ring_timeout_ms": 1000 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["available_agents"], 1);
    let (call, caller) = h
        .fake
        .place_call(Party::Queue("billing".into()), "+15550009", LegKind::Tdm)
        .unwrap();
    h.settle().await;
    let (s, v) = h
        .get("dave-token-0001", &format!("/api/v1/calls/{call}"))
        .await;
    assert_eq!(
        (s, v["state"].as_str(), v["offered_to"][0].as_str()),
        (StatusCode::OK, Some("offered"), Some("dave"))
    );
    let (s, _) = h
        .req("DELETE", Some(ADMIN), "/api/v1/agents/dave", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "dave is ringing");
    let (s, v) = h
        .req(
            "PUT",
            Some(ADMIN),
            "/api/v1/queues/billing",
            Some(json!({ "name": "billing", "skill": "billing", "ring_timeout_ms": 2000 })),
        )
        .await;
    assert_eq!(
        (s, v["ring_timeout_ms"].as_u64()),
        (StatusCode::OK, Some(2000))
    );
    h.fake.remote_hang_up(caller);
    h.settle().await;
    let (s, _) = h
        .req("DELETE", Some(ADMIN), "/api/v1/queues/billing", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .req("DELETE", Some(ADMIN), "/api/v1/queues/support", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "support is a click-to-call target");
    let mut upd = new_agent.clone();
    upd["name"] = json!("David");
    let (s, v) = h
        .req("PUT", Some(ADMIN), "/api/v1/agents/dave", Some(upd))
        .await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("David")));
    let (s, _) = h
        .post("dave-token-0001", "/api/v1/agents/dave/logout", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .req("DELETE", Some(ADMIN), "/api/v1/agents/dave", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.get("dave-token-0001", "/api/v1/me").await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a removed agent's token stops working"
    );
    let (s, v) = h.get(ALICE, "/api/v1/transfer-targets").await;
    assert_eq!(s, StatusCode::OK);
    let labels: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["label"].as_str())
        .collect();
    assert!(
        labels.contains(&"Agent bob")
            && labels.contains(&"Queue support")
            && labels.contains(&"Extensions"),
        "{labels:?}"
    );
    assert!(!labels.contains(&"Agent alice"), "not oneself");
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_nothing_else() {
    let h = start(config()).await;
    let (s, doc) = h.req("GET", None, "/api/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            for p in op["parameters"].as_array().unwrap() {
                if p["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())),
                        "{path}: {p}"
                    );
                }
            }
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed, "OpenAPI paths and router differ");
    // Every documented route is really routed: the fallback says "no route", a missing method
    // is a 405; neither may happen for a documented operation.
    let uri = CallUri::new().to_string();
    for (method, path) in &routed {
        if path.ends_with("/events") {
            continue;
        }
        let p = path
            .replace("{call_uri}", &uri)
            .replace("{agent_id}", "alice")
            .replace("{queue}", "support")
            .replace("{session}", "00000000-0000-4000-8000-000000000000");
        let (s, v) = h
            .req(
                &method.to_uppercase(),
                Some(SUPERVISOR),
                &p,
                Some(json!({})),
            )
            .await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {p}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!msg.starts_with("no route"), "{method} {p}: {v}");
        // Errors are the documented shape, with a documented status.
        if s.is_client_error() || s.is_server_error() {
            assert!(
                v["error"]["status"].as_u64() == Some(u64::from(s.as_u16())),
                "{method} {p}: {v}"
            );
            let documented = &doc["paths"][path][method]["responses"][s.as_str()];
            assert!(
                !documented.is_null(),
                "{method} {path} answered {s}, which is not documented"
            );
        }
    }
}

#[tokio::test]
async fn the_access_listener_serves_the_api_over_tls_only() {
    crypto();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("access.crt");
    let key_path = dir.path().join("access.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let mut cfg = config();
    cfg.access.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.access.tls_cert = Some(cert_path);
    cfg.access.tls_key = Some(key_path);
    let fake = FakeCallSide::new();
    let plane = ControlPlane::start(cfg.clone(), Arc::new(FakeHandle(fake.clone()))).unwrap();
    fake.attach(&plane);
    let listener = AccessListener::bind(&cfg.access).await.unwrap();
    assert!(listener.is_tls());
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(listener.serve(gateway::web::app(plane.clone()), std::future::pending()));

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let r = client
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["principal"]["role"], "agent");
    let r = client
        .get(format!("{base}/api/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client.get(format!("{base}/agent")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the pages are published too");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    assert!(
        plain
            .get(format!("http://{addr}/api/v1/me"))
            .bearer_auth(ALICE)
            .send()
            .await
            .is_err()
    );
    // A non-loopback plain listener is refused by configuration.
    let mut bad = cfg.access.clone();
    bad.listen = Some("0.0.0.0:0".parse().unwrap());
    bad.tls_cert = None;
    bad.tls_key = None;
    assert!(AccessListener::bind(&bad).await.is_err());
    server.abort();
}

#[tokio::test]
async fn races_caller_hangs_up_mid_transfer_agent_leaves_consult_late_answer_and_refer() {
    let h = start(config()).await;
    h.login(ALICE, "alice").await;
    h.login(BOB, "bob").await;
    let mut wa = h.ws(ALICE, None).await;
    let mut wb = h.ws(BOB, None).await;

    // 1. The caller hangs up while the target rings: cancelled, bob's pop withdrawn, nothing left.
    let (c1, caller1) = h.place("+15550010").await;
    h.answer(ALICE, &c1).await;
    h.post(
        ALICE,
        &format!("/api/v1/calls/{c1}/transfer"),
        json!({ "target": { "agent": "bob" } }),
    )
    .await;
    wb.next_of("call.offered").await;
    h.fake.remote_hang_up(caller1);
    assert_eq!(
        wa.next_of("transfer.cancelled").await["by"],
        "caller_hangup"
    );
    assert_eq!(
        wb.next_of("call.offer_withdrawn").await["call_uri"],
        c1.to_string()
    );
    wb.next_of("call.ended").await;
    h.assert_nothing_left().await;
    let (_, v) = h.get(BOB, "/api/v1/agents/bob").await;
    assert_eq!(v["presence"], "available", "bob is free again");

    // 2. The first agent hangs up during the consultation: the transfer completes.
    // (Bob has been idle longer than Alice now: keep him away so the call goes to Alice.)
    let (s, _) = h
        .req(
            "PUT",
            Some(BOB),
            "/api/v1/agents/bob/presence",
            Some(json!({ "presence": "away" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (c2, caller2) = h.place("+15550011").await;
    h.answer(ALICE, &c2).await;
    h.req(
        "PUT",
        Some(BOB),
        "/api/v1/agents/bob/presence",
        Some(json!({ "presence": "available" })),
    )
    .await;
    let (s, _) = h
        .post(
            ALICE,
            &format!("/api/v1/calls/{c2}/consult"),
            json!({ "target": { "agent": "bob" } }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wb.next_of("call.offered").await;
    let b_leg = h.answer(BOB, &c2).await;
    wb.next_of("transfer.target_answered").await;
    let (s, _) = h
        .post(ALICE, &format!("/api/v1/calls/{c2}/hangup"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        wb.next_of("transfer.connected").await["call_uri"],
        c2.to_string()
    );
    h.settle().await;
    assert_eq!(
        h.fake.hears(caller2),
        Hears::Leg(b_leg),
        "caller with bob after alice left"
    );

    // 3. A late answer from a leg we already released is released again.
    let stale = LegId::new();
    h.plane
        .call_event(gateway::control::core::CallEvent::Answered {
            call: c2.clone(),
            leg: stale,
        });
    h.settle().await;
    assert!(h.fake.commands().iter().any(
        |c| matches!(c, gateway::control::core::CallCommand::HangUp { leg, .. } if *leg == stale)
    ));

    // 4. A SIP REFER from the holding agent's leg runs through the same executor; from any
    //    other leg it is refused.
    assert!(
        h.plane
            .refer(
                &c2,
                LegId::new(),
                Party::TdmNumber("2003".into()),
                gateway::control::TransferKind::Blind
            )
            .is_err()
    );
    h.plane
        .refer(
            &c2,
            b_leg,
            Party::TdmNumber("2003".into()),
            gateway::control::TransferKind::Blind,
        )
        .unwrap();
    assert_eq!(
        wb.next_of("transfer.connected").await["target"]["tdm_number"],
        "2003"
    );
    h.settle().await;
    let ext = h.fake.legs_to("tdm:2003")[0];
    assert_eq!(h.fake.hears(caller2), Hears::Leg(ext));
    h.fake.remote_hang_up(caller2);
    h.assert_nothing_left().await;
}
