//! Browser callers and browser agents on the real call engine and media plane, with real
//! WebRTC peers (aiortc): a web caller POSTs its offer to the control plane's WHIP route
//! (`/api/v1/whip?destination=support`), the queue offers the call to agent Alice, who answers
//! in her "page" (her own aiortc offer POSTed to `/api/v1/calls/URI/answer`), the caller and
//! Alice hear each other, then she blind-transfers the call by its URI to agent Bob; Bob's
//! `call.offered` carries the same URI and the transfer history; Bob answers in his page and
//! the caller and Bob hear each other (cross-correlated; neither hears itself, the caller no
//! longer hears Alice). The caller
//! hangs up (WHIP DELETE) and nothing is left: no call or leg in the engine or the control
//! plane, no mapped control leg, no WebRTC leg, no media leg or socket.
//! The same caller transferred to Bob on a SIP phone (SIPp echoing its RTP) hears its own
//! speech back through Bob's phone; the caller's hang-up sends Bob a BYE.
//! Another test runs the `gateway` binary on its embedded default configuration (fixed
//! ports made ephemeral): the caller and agent pages load, and a WHIP caller reaches demo
//! agent Alice answering in her page, with audio both ways.
//! The tests fail, not skip, when aiortc is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::control_side::EngineCallSide;
use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::control::Event;
use gateway::control::api::ControlPlane;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::rtc::provider::RtcService;
use gateway::sip::transaction::TimerConfig;
use serde_json::json;
use support::{Peer, best_correlation, speech_8k};

const T: Duration = Duration::from_secs(15);

type Events = tokio::sync::broadcast::Receiver<Arc<gateway::control::Sequenced>>;

async fn next_event(rx: &mut Events, what: &str, f: impl Fn(&Event) -> bool) -> Event {
    let until = Instant::now() + T;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap();
        if f(&ev.event) {
            return ev.event.clone();
        }
    }
}

struct Rig {
    gw: GatewayServer,
    rtc: RtcService,
    side: EngineCallSide,
    control: Arc<ControlPlane>,
    events: Events,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// A gateway on the real plane with a WebRTC provider and the control plane on the
    /// engine; browser agents Alice (skill `support`) and Bob (skill `sales`) logged in; the
    /// click-to-call destination `support` goes to the `support` queue.
    async fn start() -> Rig {
        Rig::start_with(r#"{ kind = "browser" }"#).await
    }

    /// The same with Bob reached at `bob` (an endpoint in TOML).
    async fn start_with(bob: &str) -> Rig {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let text = r#"
    [http]
    listen = "127.0.0.1:0"

    [sip]
    udp = "127.0.0.1:0"
    trusted = ["127.0.0.0/8"]

    [rtc]
    codecs = ["pcmu", "opus"]

    [control.timers]
    transfer_setup_ms = 10000
    transfer_ring_ms = 10000

    [[control.agents]]
    id = "alice"
    name = "Alice"
    skills = ["support"]
    endpoints = [{ kind = "browser" }]
    token = "alice-token"

    [[control.agents]]
    id = "bob"
    name = "Bob"
    skills = ["sales"]
    endpoints = [BOB]
    token = "bob-token"

    [[control.queues]]
    name = "support"
    skill = "support"
    ring_timeout_ms = 10000
    max_wait_ms = 60000
    comfort = { kind = "tone" }

    [[control.click_to_call]]
    id = "support"
    label = "Support"
    target = { queue = "support" }
    "#;
        let config = Config::from_toml(&text.replace("BOB", bob), "test").unwrap();
        let plane = MediaPlane::start(PlaneConfig {
            workers: 1,
            ..PlaneConfig::default()
        })
        .unwrap();
        let mut gw = GatewayServer::start(
            ServerOptions {
                config: config.clone(),
                // Short SIP timers: transactions (Timer M after a 2xx) end within the test.
                timers: Some(TimerConfig {
                    t1: Duration::from_millis(50),
                    t2: Duration::from_millis(400),
                    t4: Duration::from_millis(500),
                    timer_d: Duration::from_secs(1),
                    ..TimerConfig::default()
                }),
                seed: None,
                external: vec![LegKind::WebRtc],
            },
            Box::new(PlaneMedia::new(
                plane,
                Duration::from_secs(30),
                Country::Etsi,
            )),
        )
        .await
        .unwrap();
        let port = gw.take_provider(LegKind::WebRtc).unwrap();
        let rtc = gateway::rtc::provider::start(config.rtc.as_ref().unwrap(), port).unwrap();
        let side = EngineCallSide::new(gw.handle()).with_rtc(rtc.handle());
        let control = ControlPlane::start(config.control.clone(), Arc::new(side.clone())).unwrap();
        side.attach(&control);
        let events = control.subscribe();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = gateway::web::control_app(control.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = Rig {
            gw,
            rtc,
            side,
            control,
            events,
            base,
            http,
            server,
        };
        for (agent, token) in [("alice", "alice-token"), ("bob", "bob-token")] {
            let resp = r
                .http
                .post(format!("{}/api/v1/agents/{agent}/login", r.base))
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let s = resp.status();
            assert!(
                s.is_success(),
                "{agent} login: {s} {}",
                resp.text().await.unwrap()
            );
        }
        r
    }

    /// POSTs an SDP body; returns status, the headers and the body.
    async fn post_sdp(
        &self,
        token: Option<&str>,
        path: &str,
        sdp: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/sdp")
            .body(sdp.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let s = resp.status().as_u16();
        let h = resp.headers().clone();
        (s, h, resp.text().await.unwrap())
    }

    fn live(&self) -> String {
        let c = self.gw.counters();
        let calls = self.control.read(|core, now| {
            core.list_calls(&gateway::control::core::Principal::Admin, now)
                .len()
        });
        format!(
            "engine calls {} legs {} sip legs {} transactions {} media legs {} sockets {}; webrtc legs {}; mapped legs {}; control calls {calls}",
            c.calls.load(Ordering::Relaxed),
            c.legs.load(Ordering::Relaxed),
            c.sip_legs.load(Ordering::Relaxed),
            c.transactions.load(Ordering::Relaxed),
            c.media_legs.load(Ordering::Relaxed),
            c.rtp_sockets.load(Ordering::Relaxed),
            self.rtc.handle().legs().live(),
            self.side.mapped_legs(),
        )
    }

    /// Waits (at most 10 s) until nothing is left and says so.
    async fn assert_nothing_left(self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls = self.control.read(|core, now| {
                core.list_calls(&gateway::control::core::Principal::Admin, now)
                    .len()
            });
            let c = self.gw.counters();
            if c.idle()
                && c.calls.load(Ordering::Relaxed) == 0
                && c.legs.load(Ordering::Relaxed) == 0
                && self.side.mapped_legs() == 0
                && self.rtc.handle().legs().live() == 0
                && calls == 0
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not released within 10 s: {}",
                self.live()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("released: {}", self.live());
        self.server.abort();
        self.rtc.shutdown().await;
        self.gw.shutdown().await.unwrap();
    }
}

/// The best correlation with the reference among the three loudest 0.5 s windows of `x` (one
/// clean stretch proves the path on a loaded machine, as in `rtc_engine`).
fn best_windows(reference: &[i16], x: &[i16]) -> f64 {
    let w = 4000;
    let mut windows: Vec<(f64, usize)> = (0..x.len() / w)
        .map(|k| {
            let e: f64 = x[k * w..(k + 1) * w]
                .iter()
                .map(|&s| f64::from(s).powi(2))
                .sum();
            (e, k)
        })
        .collect();
    windows.sort_by(|a, b| b.0.total_cmp(&a.0));
    windows
        .iter()
        .take(3)
        .map(|&(_, k)| best_correlation(reference, &x[k * w..(k + 1) * w]).0)
        .fold(f64::MIN, f64::max)
}

/// Alice's voice: the speech at half speed (resampled to 16 kHz, played at 8 kHz), unlike the
/// speech forwards or backwards.
fn slower(speech: &[i16]) -> Vec<i16> {
    codecs::resample::resample_all(8000, 16000, speech).unwrap()
}

/// The web caller POSTs its offer to the click-to-call destination `support` (the queue); the
/// queue offers the call to Alice, who answers in her page; caller and Alice hear each other.
/// Returns the call's URI and the WHIP session's resource.
async fn caller_talks_to_alice(
    rig: &mut Rig,
    caller: &mut Peer,
    alice: &mut Peer,
    reference: &[i16],
) -> (String, String) {
    let reference = reference.to_vec();
    // The web caller: WHIP to the click-to-call destination `support` (the queue).
    let offer =
        tokio::task::block_in_place(|| caller.request(json!({"cmd": "offer", "codec": "PCMU"}), T));
    let (s, h, answer) = rig
        .post_sdp(
            None,
            "/api/v1/whip?destination=support&caller=Web%20Caller",
            offer["sdp"].as_str().unwrap(),
        )
        .await;
    assert!((200..300).contains(&s), "WHIP: {s} {answer}");
    assert!(answer.starts_with("v=0"), "WHIP answer: {answer}");
    let uri = h
        .get("x-call-uri")
        .expect("x-call-uri on the WHIP answer")
        .to_str()
        .unwrap()
        .to_owned();
    let resource = h
        .get("location")
        .expect("Location of the WHIP session")
        .to_str()
        .unwrap()
        .to_owned();
    tokio::task::block_in_place(|| {
        caller.request(json!({"cmd": "answer", "sdp": answer}), T);
    });

    // The queue offers the call to Alice; she answers in her page.
    let offered_a = next_event(
        &mut rig.events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    assert_eq!(
        offered_a.call_uri().map(ToString::to_string).as_deref(),
        Some(uri.as_str()),
        "Alice's pop carries the URI of the WHIP answer"
    );
    let a_offer =
        tokio::task::block_in_place(|| alice.request(json!({"cmd": "offer", "codec": "PCMU"}), T));
    let (s, _, a_answer) = rig
        .post_sdp(
            Some("alice-token"),
            &format!("/api/v1/calls/{uri}/answer"),
            a_offer["sdp"].as_str().unwrap(),
        )
        .await;
    assert!((200..300).contains(&s), "Alice answers: {s} {a_answer}");
    tokio::task::block_in_place(|| {
        alice.request(json!({"cmd": "answer", "sdp": a_answer}), T);
        caller.request(json!({"cmd": "wait-connected"}), T);
        alice.request(json!({"cmd": "wait-connected"}), T);
    });
    next_event(&mut rig.events, "call.answered", |e| {
        matches!(e, Event::CallAnswered { .. })
    })
    .await;
    let calls = rig
        .gw
        .handle()
        .run(|sw, now| sw.engine.calls(now))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "one engine call: {calls:?}");
    assert_eq!(
        calls[0].uri.to_string(),
        uri,
        "the engine's call has the URI"
    );
    assert_eq!(
        rig.rtc.handle().legs().live(),
        2,
        "caller's and Alice's legs"
    );

    // Caller and Alice hear each other.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice_voice = slower(&reference);
    let (at_caller, at_alice) = tokio::task::block_in_place(|| {
        std::thread::scope(|sc| {
            let c = sc.spawn(|| caller.record(2.0));
            let a = sc.spawn(|| alice.record(2.0));
            (c.join().unwrap(), a.join().unwrap())
        })
    });
    for (who, got, hears) in [
        ("caller (before the transfer)", &at_caller, &alice_voice),
        ("alice", &at_alice, &reference),
    ] {
        assert!(got.len() >= 12_000, "{who}: only {} samples", got.len());
        let c = best_windows(hears, got);
        eprintln!("{who} hears the other party: correlation {c:.3}");
        assert!(c >= 0.9, "{who} hears the other party: correlation {c:.3}");
    }

    (uri, resource)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_caller_to_browser_agent_blind_transfer_by_uri_to_browser_agent_audio_both_ways() {
    tokio::time::timeout(Duration::from_secs(40), run())
        .await
        .expect("the whole scenario within 40 s");
}

async fn run() {
    let reference = speech_8k();
    let reversed: Vec<i16> = reference.iter().rev().copied().collect();
    let (dc, da, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let wav_c = support::write_wav_8k(dc.path(), &reference);
    let wav_a = support::write_wav_8k(da.path(), &slower(&reference));
    let wav_b = support::write_wav_8k(db.path(), &reversed);
    let mut rig = Rig::start().await;
    let (mut caller, mut alice, mut bob) = tokio::task::block_in_place(|| {
        (
            Peer::aiortc(&wav_c),
            Peer::aiortc(&wav_a),
            Peer::aiortc(&wav_b),
        )
    });

    let (uri, resource) =
        caller_talks_to_alice(&mut rig, &mut caller, &mut alice, &reference).await;
    let alice_voice = slower(&reference);

    // Alice transfers the call by its URI to Bob (blind).
    let resp = rig
        .http
        .post(format!("{}/api/v1/calls/{uri}/transfer", rig.base))
        .bearer_auth("alice-token")
        .json(&json!({"target": {"agent": "bob"}, "kind": "blind"}))
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    assert_eq!(s, 202, "transfer: {}", resp.text().await.unwrap());
    let offered_b = next_event(
        &mut rig.events,
        "call.offered to bob",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "bob"),
    )
    .await;
    let Event::CallOffered {
        call_uri,
        transfer_history,
        ..
    } = &offered_b
    else {
        unreachable!()
    };
    assert_eq!(
        call_uri.to_string(),
        uri,
        "Bob's pop carries the call's URI"
    );
    assert!(
        transfer_history
            .iter()
            .any(|h| h.from.as_deref() == Some("alice")),
        "Bob's pop carries the transfer history (from Alice): {offered_b:?}"
    );
    let b_offer =
        tokio::task::block_in_place(|| bob.request(json!({"cmd": "offer", "codec": "PCMU"}), T));
    let (s, _, b_answer) = rig
        .post_sdp(
            Some("bob-token"),
            &format!("/api/v1/calls/{uri}/answer"),
            b_offer["sdp"].as_str().unwrap(),
        )
        .await;
    assert!((200..300).contains(&s), "Bob answers: {s} {b_answer}");
    tokio::task::block_in_place(|| {
        bob.request(json!({"cmd": "answer", "sdp": b_answer}), T);
        bob.request(json!({"cmd": "wait-connected"}), T);
    });
    next_event(&mut rig.events, "transfer.connected", |e| {
        matches!(e, Event::TransferConnected { .. })
    })
    .await;

    // Caller and Bob hear each other (recorded at the same time).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (at_caller, at_bob) = tokio::task::block_in_place(|| {
        std::thread::scope(|sc| {
            let c = sc.spawn(|| caller.record(3.0));
            let b = sc.spawn(|| bob.record(3.0));
            (c.join().unwrap(), b.join().unwrap())
        })
    });
    for (who, got, hears, own) in [
        ("caller", &at_caller, &reversed, &reference),
        ("bob", &at_bob, &reference, &reversed),
    ] {
        assert!(got.len() >= 16_000, "{who}: only {} samples", got.len());
        let c = best_windows(hears, got);
        let echo = best_windows(own, got);
        eprintln!("{who} hears the other party: correlation {c:.3}; itself {echo:.3}");
        assert!(c >= 0.9, "{who} hears the other party: correlation {c:.3}");
        assert!(echo < 0.5, "{who} hears itself: correlation {echo:.3}");
    }
    let alice_at_caller = best_windows(&alice_voice, &at_caller);
    eprintln!("caller vs Alice's voice: correlation {alice_at_caller:.3}");
    assert!(
        alice_at_caller < 0.5,
        "the caller still hears Alice after the transfer ({alice_at_caller:.3})"
    );

    // The caller hangs up (WHIP DELETE): everything is released.
    let resp = rig
        .http
        .delete(format!("{}{resource}", rig.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "WHIP DELETE");
    next_event(&mut rig.events, "call.ended", |e| {
        matches!(e, Event::CallEnded { .. })
    })
    .await;
    tokio::task::block_in_place(|| {
        caller.close();
        alice.close();
        bob.close();
    });
    rig.assert_nothing_left().await;
}

/// The `gateway` binary on its embedded default (fixed ports made ephemeral): the caller page
/// and the agent page are served, and a web caller's WHIP offer reaches demo agent Alice, who
/// answers with her own offer; caller and Alice hear each other over real WebRTC legs. The
/// caller's DELETE leaves no call behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_gateway_serves_web_callers_and_browser_agents_with_audio() {
    tokio::time::timeout(Duration::from_secs(40), default_binary())
        .await
        .expect("the whole scenario within 40 s");
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn default_binary() {
    use std::io::BufRead;
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let text = gateway::config::DEFAULT_CONFIG
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:8081", "127.0.0.1:0")
        .replace("127.0.0.1:5060", "127.0.0.1:0");
    assert!(
        text.contains("[rtc]"),
        "the default configuration runs WebRTC legs"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Child(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let core = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the core listener's log line within 20 s");
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            if let Some(listen) = v["fields"]["listen"].as_str()
                && v["fields"]["tls"].is_null()
            {
                return format!("http://{listen}");
            }
        }
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for page in ["/caller", "/agent"] {
        let r = http.get(format!("{core}{page}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {page}");
    }
    let r = http
        .post(format!("{core}/api/v1/agents/alice/login"))
        .bearer_auth("demo-alice-token")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "alice logs in: {}", r.status());

    let reference = speech_8k();
    let (dc, da) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wav_c = support::write_wav_8k(dc.path(), &reference);
    let alice_voice = slower(&reference);
    let wav_a = support::write_wav_8k(da.path(), &alice_voice);
    let (mut caller, mut alice) =
        tokio::task::block_in_place(|| (Peer::aiortc(&wav_c), Peer::aiortc(&wav_a)));
    let offer =
        tokio::task::block_in_place(|| caller.request(json!({"cmd": "offer", "codec": "PCMU"}), T));
    let r = http
        .post(format!("{core}/api/v1/whip?destination=support"))
        .header("content-type", "application/sdp")
        .body(offer["sdp"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let uri = r
        .headers()
        .get("x-call-uri")
        .map(|v| v.to_str().unwrap().to_owned());
    let resource = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let answer = r.text().await.unwrap();
    assert!((200..300).contains(&s), "WHIP: {s} {answer}");
    let (uri, resource) = (uri.expect("x-call-uri"), resource.expect("Location"));
    tokio::task::block_in_place(|| {
        caller.request(json!({"cmd": "answer", "sdp": answer}), T);
    });
    // Alice's page: the call is offered to her (the only agent logged in); she answers.
    let deadline = Instant::now() + T;
    loop {
        let r = http
            .get(format!("{core}/api/v1/calls/{uri}"))
            .bearer_auth("demo-alice-token")
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if v["offered_to"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "alice"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call never reached Alice: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a_offer =
        tokio::task::block_in_place(|| alice.request(json!({"cmd": "offer", "codec": "PCMU"}), T));
    let r = http
        .post(format!("{core}/api/v1/calls/{uri}/answer"))
        .bearer_auth("demo-alice-token")
        .header("content-type", "application/sdp")
        .body(a_offer["sdp"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let a_answer = r.text().await.unwrap();
    assert!((200..300).contains(&s), "Alice answers: {s} {a_answer}");
    tokio::task::block_in_place(|| {
        alice.request(json!({"cmd": "answer", "sdp": a_answer}), T);
        caller.request(json!({"cmd": "wait-connected"}), T);
        alice.request(json!({"cmd": "wait-connected"}), T);
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (at_caller, at_alice) = tokio::task::block_in_place(|| {
        std::thread::scope(|sc| {
            let c = sc.spawn(|| caller.record(2.0));
            let a = sc.spawn(|| alice.record(2.0));
            (c.join().unwrap(), a.join().unwrap())
        })
    });
    for (who, got, hears) in [
        ("caller", &at_caller, &alice_voice),
        ("alice", &at_alice, &reference),
    ] {
        assert!(got.len() >= 12_000, "{who}: only {} samples", got.len());
        let c = best_windows(hears, got);
        eprintln!("default gateway: {who} hears the other party: correlation {c:.3}");
        assert!(c >= 0.9, "{who} hears the other party: correlation {c:.3}");
    }
    let r = http
        .delete(format!("{core}{resource}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "WHIP DELETE");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http
            .get(format!("{core}/api/v1/calls"))
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        let n = v["calls"].as_array().map_or(usize::MAX, Vec::len);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls left after the hang-up: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| {
        caller.close();
        alice.close();
    });
    drop(child);
}

/// The same caller, transferred by Alice to Bob on a SIP phone (SIPp, echoing its RTP): Bob's
/// pop carries the URI, the caller hears its own speech back through Bob's phone (WebRTC ->
/// SIP -> WebRTC through the plane) and no longer Alice; the caller's hang-up sends Bob a BYE
/// and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_caller_blind_transferred_by_uri_to_a_sip_agent_with_audio() {
    tokio::time::timeout(Duration::from_secs(40), to_sip())
        .await
        .expect("the whole scenario within 40 s");
}

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

async fn to_sip() {
    let reference = speech_8k();
    let (dc, da, dsipp) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let wav_c = support::write_wav_8k(dc.path(), &reference);
    let alice_voice = slower(&reference);
    let wav_a = support::write_wav_8k(da.path(), &alice_voice);
    let pb = free_port();
    let mut rig = Rig::start_with(&format!(
        r#"{{ kind = "sip", uri = "sip:bob@127.0.0.1:{pb}" }}"#
    ))
    .await;
    let bob = std::process::Command::new("sipp")
        .current_dir(dsipp.path())
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "30",
            "-timeout_error",
        ])
        .args(["-sn", "uas", "-rtp_echo", "-m", "1"])
        .args(["-p", &pb.to_string(), "-mp", &free_port().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester");
    let (mut caller, mut alice) =
        tokio::task::block_in_place(|| (Peer::aiortc(&wav_c), Peer::aiortc(&wav_a)));
    let (uri, resource) =
        caller_talks_to_alice(&mut rig, &mut caller, &mut alice, &reference).await;

    let resp = rig
        .http
        .post(format!("{}/api/v1/calls/{uri}/transfer", rig.base))
        .bearer_auth("alice-token")
        .json(&json!({"target": {"agent": "bob"}, "kind": "blind"}))
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    assert_eq!(s, 202, "transfer: {}", resp.text().await.unwrap());
    let offered_b = next_event(
        &mut rig.events,
        "call.offered to bob",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "bob"),
    )
    .await;
    assert_eq!(
        offered_b.call_uri().map(ToString::to_string).as_deref(),
        Some(uri.as_str()),
        "Bob's pop carries the call's URI"
    );
    next_event(&mut rig.events, "transfer.connected", |e| {
        matches!(e, Event::TransferConnected { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_caller = tokio::task::block_in_place(|| caller.record(3.0));
    assert!(
        at_caller.len() >= 16_000,
        "caller: only {} samples",
        at_caller.len()
    );
    let c = best_windows(&reference, &at_caller);
    let a = best_windows(&alice_voice, &at_caller);
    eprintln!("caller hears itself through Bob's SIP phone: {c:.3}; Alice: {a:.3}");
    assert!(
        c >= 0.9,
        "the caller's speech through Bob's phone: correlation {c:.3}"
    );
    assert!(a < 0.5, "the caller still hears Alice ({a:.3})");

    let resp = rig
        .http
        .delete(format!("{}{resource}", rig.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "WHIP DELETE");
    let out = tokio::task::spawn_blocking(move || bob.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "Bob's SIPp (BYE after the caller left): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::task::block_in_place(|| {
        caller.close();
        alice.close();
    });
    rig.assert_nothing_left().await;
}
