//! Agents on registered phones, on the real engine with real peers.
//!
//! - A baresip phone registers to the gateway's SIP (UDP) listener with digest as `[[user]]`
//!   carol and answers by itself; a baresip caller dials the support queue, whose agent carol
//!   has the endpoint `{ kind = "phone", user = "carol" }`. The offer and the answer carry the
//!   call's URI; each side's decoded audio correlates with what the other side sent (speech one
//!   way, reversed speech the other); after the caller hangs up nothing is left; when the phone
//!   quits, its un-REGISTER removes the binding.
//! - Carol's phone is not registered: her offer fails at once with `unreachable`, she is set
//!   away (`endpoint_unreachable`) and the call goes to the next agent (a SIPp phone by URI),
//!   who answers; alone in the queue, the caller waits in it (offered once, not in a loop).
//! - A blind transfer (API, by URI) from agent Alice to Carol's phone fails at once while the
//!   phone is not registered (the caller stays with Alice) and connects once it has
//!   registered, the caller's recording reaching the phone.
//! - SIPp REGISTERs: the right password gets 200 and a binding at the address it came from, a
//!   wrong one gets 401 again and no binding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::control_side::EngineCallSide;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::control::Event;
use gateway::control::api::ControlPlane;
use gateway::control::core::Principal;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use serde_json::{Value, json};
use support::baresip::{Baresip, BaresipOptions};

/// Correlation each audio direction must reach.
const MIN_CORRELATION: f64 = 0.9;

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn scenario(name: &str) -> String {
    format!("{}/tests/data/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sipp(dir: &Path, args: &[&str]) -> Child {
    Command::new("sipp")
        .current_dir(dir)
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "30",
            "-timeout_error",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester")
}

fn finish(c: Child) -> (Option<i32>, String) {
    let out = c.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<gateway::control::Sequenced>>,
    what: &str,
    f: impl Fn(&Event) -> bool,
) -> Event {
    let until = Instant::now() + Duration::from_secs(15);
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

/// A gateway with the control plane on its engine and the control API on HTTP.
struct Rig {
    gw: GatewayServer,
    side: EngineCallSide,
    control: Arc<ControlPlane>,
    events: tokio::sync::broadcast::Receiver<Arc<gateway::control::Sequenced>>,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// A gateway on the real media plane with the control plane on the engine; users carol
    /// (password `carol-secret`) and alice (`alice-secret`); the queue `support` (no skill)
    /// with `agents` (id, endpoint as TOML); calls to `support` go to the queue.
    async fn start(agents: &[(&str, String)]) -> Rig {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut text = r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

[[user]]
name = "carol"
password = "carol-secret"

[[user]]
name = "alice"
password = "alice-secret"

[[route]]
name = "support line"
match = "support"
to = ["control:queue:support"]

[[control.queues]]
name = "support"
ring_timeout_ms = 10000
max_wait_ms = 60000
wrap_up_ms = 0
comfort = { kind = "tone" }
"#
        .to_owned();
        for (id, endpoint) in agents {
            text.push_str(&format!(
                "\n[[control.agents]]\nid = \"{id}\"\nname = \"{id}\"\nendpoints = [{endpoint}]\ntoken = \"{id}-token\"\n"
            ));
        }
        let config = Config::from_toml(&text, "test").unwrap();
        let plane = MediaPlane::start(PlaneConfig {
            workers: 1,
            ..PlaneConfig::default()
        })
        .unwrap();
        let gw = GatewayServer::start(
            ServerOptions {
                config: config.clone(),
                timers: None,
                seed: None,
                external: Vec::new(),
            },
            Box::new(PlaneMedia::new(
                plane,
                Duration::from_secs(30),
                Country::Etsi,
            )),
        )
        .await
        .unwrap();
        let side = EngineCallSide::new(gw.handle());
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
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Rig {
            gw,
            side,
            control,
            events,
            base,
            http,
            server,
        }
    }

    fn sip_addr(&self) -> SocketAddr {
        self.gw.sip_udp_addr().unwrap()
    }

    async fn login(&self, agent: &str) {
        let resp = self
            .http
            .post(format!("{}/api/v1/agents/{agent}/login", self.base))
            .bearer_auth(format!("{agent}-token"))
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

    fn agent(&self, id: &str) -> Value {
        self.control
            .read(|core, now| serde_json::to_value(core.agent(id, now).unwrap()).unwrap())
    }

    async fn bindings(&self) -> usize {
        self.gw
            .handle()
            .run(|sw, _| sw.sip.registered_bindings())
            .await
            .unwrap()
    }

    async fn contact(
        &self,
        user: &'static str,
    ) -> Option<gateway::calls::sip_leg::RegisteredContact> {
        self.gw
            .handle()
            .run(move |sw, now| sw.sip.registered_contact(now, user))
            .await
            .unwrap()
    }

    /// Waits until nothing is left and says so.
    async fn assert_nothing_left(self) {
        for _ in 0..200 {
            let calls = self
                .control
                .read(|core, now| core.list_calls(&Principal::Admin, now).len());
            if self.gw.counters().idle() && self.side.mapped_legs() == 0 && calls == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = self.gw.counters();
        assert_eq!(c.calls.load(Ordering::Relaxed), 0, "live calls");
        assert_eq!(c.legs.load(Ordering::Relaxed), 0, "live legs");
        assert_eq!(c.sip_legs.load(Ordering::Relaxed), 0, "live SIP legs");
        assert_eq!(c.media_legs.load(Ordering::Relaxed), 0, "media legs");
        assert_eq!(c.rtp_sockets.load(Ordering::Relaxed), 0, "open RTP sockets");
        assert_eq!(
            self.side.mapped_legs(),
            0,
            "control legs mapped to engine legs"
        );
        let calls = self
            .control
            .read(|core, now| core.list_calls(&Principal::Admin, now).len());
        assert_eq!(calls, 0, "calls in the control plane");
        self.server.abort();
        self.gw.shutdown().await.unwrap();
    }
}

/// 2 s of what an agent decoded, from 1.5 s into its dump (past any comfort tone before the
/// answer and the bridge turning round).
fn steady(heard: &[i16]) -> &[i16] {
    let start = 12_000;
    assert!(
        heard.len() >= start + 16_000,
        "only {} samples decoded",
        heard.len()
    );
    &heard[start..start + 16_000]
}

fn correlation(who: &str, sent: &[i16], heard: &[i16]) -> f64 {
    let (c, lag) = support::best_correlation(sent, steady(heard));
    eprintln!("{who}: correlation {c:.4} at lag {lag}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_call_reaches_the_agents_registered_baresip_phone_with_audio_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let speech = support::speech_8k();
    let reversed: Vec<i16> = speech.iter().rev().copied().collect();
    let caller_wav = dir.path().join("caller.wav");
    let phone_wav = dir.path().join("phone.wav");
    // baresip ends a call when its microphone file ends: 20 s of each signal.
    std::fs::write(
        &caller_wav,
        codecs::wav::write_pcm16(8000, &speech.repeat(3)),
    )
    .unwrap();
    std::fs::write(
        &phone_wav,
        codecs::wav::write_pcm16(8000, &reversed.repeat(3)),
    )
    .unwrap();

    let mut rig = Rig::start(&[("carol", r#"{ kind = "phone", user = "carol" }"#.into())]).await;
    let gw_addr = rig.sip_addr();
    assert_eq!(rig.bindings().await, 0);

    // Carol's phone registers (401, then digest) and answers calls by itself.
    let mut opts = BaresipOptions::new("carol", &phone_wav);
    opts.auto_answer = true;
    opts.register = Some((gw_addr, "carol-secret".into()));
    let phone = tokio::task::spawn_blocking(move || Baresip::start(opts))
        .await
        .unwrap();
    // It registers as it starts (before its control socket is up: no event to wait for).
    let until = Instant::now() + Duration::from_secs(10);
    while rig.contact("carol").await.is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let contact = rig
        .contact("carol")
        .await
        .unwrap_or_else(|| panic!("carol's phone did not register; its log:\n{}", phone.log()));
    assert_eq!(
        contact.dest,
        phone.sip_addr(),
        "reached where its REGISTER came from"
    );
    assert_eq!(rig.bindings().await, 1);
    rig.login("carol").await;

    // The caller dials the support queue.
    let mut caller = tokio::task::spawn_blocking(move || {
        Baresip::start(BaresipOptions::new("caller", &caller_wav))
    })
    .await
    .unwrap();
    let target = format!("sip:support@{gw_addr}");
    let caller = tokio::task::spawn_blocking(move || {
        caller.command("dial", &target);
        caller
    })
    .await
    .unwrap();
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to carol",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "carol"),
    )
    .await;
    let uri = offered.call_uri().unwrap().clone();
    let answered = next_event(
        events,
        "call.answered by carol",
        |e| matches!(e, Event::CallAnswered { agent, .. } if agent == "carol"),
    )
    .await;
    assert_eq!(
        answered.call_uri(),
        Some(&uri),
        "the answer carries the call's URI"
    );
    let cdr_rx = rig.gw.handle().subscribe_cdrs();

    let (caller, phone) = tokio::task::spawn_blocking(move || {
        let (mut caller, mut phone) = (caller, phone);
        caller.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        // 4 s of speech both ways, then the caller hangs up.
        std::thread::sleep(Duration::from_secs(4));
        caller.command("hangup", "");
        caller.wait_event("CALL_CLOSED", Duration::from_secs(10));
        phone.wait_event("CALL_CLOSED", Duration::from_secs(10));
        (caller, phone)
    })
    .await
    .unwrap();
    let ended = next_event(&mut rig.events, "call.ended", |e| {
        matches!(e, Event::CallEnded { .. })
    })
    .await;
    assert_eq!(ended.call_uri(), Some(&uri));
    let mut cdr_rx = cdr_rx;
    let cdr = tokio::time::timeout(Duration::from_secs(5), cdr_rx.recv())
        .await
        .expect("the call's record")
        .unwrap();
    assert_eq!(cdr.call_uri, uri);
    assert!(
        cdr.legs.iter().any(|l| l.peer.contains("phone:carol")),
        "the phone's leg is named after it in the record: {cdr:?}"
    );

    // Audio both ways, each the other side's signal (the dumps are complete now).
    let at_phone = phone.decoded_audio();
    let at_caller = caller.decoded_audio();
    let c_to_phone = correlation("caller -> phone", &speech, &at_phone);
    let c_to_caller = correlation("phone -> caller", &reversed, &at_caller);
    assert!(
        c_to_phone >= MIN_CORRELATION,
        "caller at the phone: {c_to_phone:.3}"
    );
    assert!(
        c_to_caller >= MIN_CORRELATION,
        "phone at the caller: {c_to_caller:.3}"
    );
    let (own, _) = support::best_correlation(&reversed, steady(&at_phone));
    assert!(own < 0.5, "the phone heard its own signal? {own:.3}");

    // Quitting, the phone un-REGISTERs: no binding is left.
    caller.close();
    tokio::task::spawn_blocking(move || phone.close())
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while rig.bindings().await > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.bindings().await,
        0,
        "the un-REGISTER removed the binding"
    );
    assert!(rig.contact("carol").await.is_none());
    rig.assert_nothing_left().await;
}

/// Carol's phone is not registered: the offer fails at once with a reason that says so, Carol
/// is set away and the caller goes to the next agent, Bob (a SIPp phone by SIP URI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_phone_fails_its_offer_at_once_and_the_next_agent_gets_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let mut rig = Rig::start(&[
        ("carol", r#"{ kind = "phone", user = "carol" }"#.into()),
        (
            "bob",
            format!(r#"{{ kind = "sip", uri = "sip:bob@127.0.0.1:{pb}" }}"#),
        ),
    ])
    .await;
    // Carol first: idle longest, she is offered the call first.
    rig.login("carol").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.login("bob").await;
    let bob = sipp(
        dir.path(),
        &[
            "-sn",
            "uas",
            "-p",
            &pb.to_string(),
            "-mp",
            &free_port().to_string(),
            "-rtp_echo",
            "-m",
            "1",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = sipp(
        dir.path(),
        &[
            &rig.sip_addr().to_string(),
            "-sf",
            &scenario("calls_uac_audio_hold.xml"),
            "-s",
            "support",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-m",
            "1",
            "-d",
            "3000",
        ],
    );
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to carol",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "carol"),
    )
    .await;
    let offered_at = Instant::now();
    let uri = offered.call_uri().unwrap().clone();
    let withdrawn = next_event(
        events,
        "carol's offer withdrawn",
        |e| matches!(e, Event::CallOfferWithdrawn { agent, .. } if agent == "carol"),
    )
    .await;
    let text = serde_json::to_string(&withdrawn).unwrap();
    assert!(
        text.contains("\"unreachable\""),
        "withdrawn as unreachable: {text}"
    );
    assert!(
        offered_at.elapsed() < Duration::from_secs(1),
        "at once, not after a ring timeout: {:?}",
        offered_at.elapsed()
    );
    let to_bob = next_event(
        events,
        "call.offered to bob",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "bob"),
    )
    .await;
    assert_eq!(
        to_bob.call_uri(),
        Some(&uri),
        "the same call goes on to Bob"
    );
    next_event(
        events,
        "call.answered by bob",
        |e| matches!(e, Event::CallAnswered { agent, .. } if agent == "bob"),
    )
    .await;
    let carol = rig.agent("carol");
    assert_eq!(carol["presence"], "away", "{carol}");
    assert_eq!(carol["away_reason"], "endpoint_unreachable", "{carol}");
    for (who, p) in [("caller", caller), ("bob", bob)] {
        let (code, err) = tokio::task::spawn_blocking(move || finish(p))
            .await
            .unwrap();
        assert_eq!(code, Some(0), "{who} SIPp: {err}");
    }
    next_event(&mut rig.events, "call.ended", |e| {
        matches!(e, Event::CallEnded { .. })
    })
    .await;
    rig.assert_nothing_left().await;
}

/// Carol alone in the queue, phone not registered: offered once (no offer loop), the caller
/// waits in the queue until it hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_an_unregistered_phone_the_caller_waits_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(&[("carol", r#"{ kind = "phone", user = "carol" }"#.into())]).await;
    rig.login("carol").await;
    let caller = sipp(
        dir.path(),
        &[
            &rig.sip_addr().to_string(),
            "-sf",
            &scenario("calls_uac_audio_hold.xml"),
            "-s",
            "support",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-m",
            "1",
            "-d",
            "2000",
        ],
    );
    let mut offers = 0;
    let mut queued = false;
    let mut reason = String::new();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, rig.events.recv())
            .await
            .expect("call.ended within 15 s")
            .unwrap();
        match &ev.event {
            Event::CallOffered { .. } => offers += 1,
            Event::CallQueued { .. } => queued = true,
            Event::CallOfferWithdrawn { .. } => {
                reason = serde_json::to_string(&ev.event).unwrap();
            }
            Event::CallEnded { .. } => break,
            _ => {}
        }
    }
    assert!(queued, "the caller was queued");
    assert_eq!(offers, 1, "offered once, not again and again");
    assert!(reason.contains("unreachable"), "{reason}");
    let (code, err) = tokio::task::spawn_blocking(move || finish(caller))
        .await
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "the caller was answered by the queue and hung up: {err}"
    );
    assert_eq!(rig.agent("carol")["away_reason"], "endpoint_unreachable");
    rig.assert_nothing_left().await;
}

/// Carol's phone registers over TCP: the queue's call reaches it on the connection it
/// registered on, the SIPp caller's recording is heard there, and its un-REGISTER (over the
/// same connection) removes the binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_over_tcp_takes_a_queue_call_on_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(&[("carol", r#"{ kind = "phone", user = "carol" }"#.into())]).await;
    let tcp = rig.gw.sip_tcp_addr().unwrap();
    let speech = support::speech_8k().repeat(3);
    let phone_wav = dir.path().join("phone.wav");
    std::fs::write(&phone_wav, codecs::wav::write_pcm16(8000, &speech)).unwrap();
    let mut opts = BaresipOptions::new("carol", &phone_wav);
    opts.auto_answer = true;
    opts.register = Some((tcp, "carol-secret".into()));
    opts.register_tcp = true;
    let phone = tokio::task::spawn_blocking(move || Baresip::start(opts))
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while rig.contact("carol").await.is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = rig
        .contact("carol")
        .await
        .unwrap_or_else(|| panic!("no TCP registration; log:\n{}", phone.log()));
    assert_eq!(
        c.transport,
        gateway::calls::leg::SipTransportKind::Tcp,
        "{c:?}"
    );
    rig.login("carol").await;
    let caller = sipp(
        dir.path(),
        &[
            &rig.sip_addr().to_string(),
            "-sf",
            &scenario("calls_uac_audio_hold.xml"),
            "-s",
            "support",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-m",
            "1",
            "-d",
            "4000",
        ],
    );
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to carol",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "carol"),
    )
    .await;
    let answered = next_event(
        events,
        "call.answered by carol",
        |e| matches!(e, Event::CallAnswered { agent, .. } if agent == "carol"),
    )
    .await;
    assert_eq!(answered.call_uri(), offered.call_uri());
    let phone = tokio::task::spawn_blocking(move || {
        let mut phone = phone;
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        let closed = phone.wait_event("CALL_CLOSED", Duration::from_secs(15));
        assert_ne!(closed["param"], "end of file", "{closed}");
        phone
    })
    .await
    .unwrap();
    let (code, err) = tokio::task::spawn_blocking(move || finish(caller))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "caller SIPp: {err}");
    let heard = phone.decoded_audio();
    let onset = heard
        .iter()
        .position(|s| s.unsigned_abs() > 200)
        .unwrap_or(0);
    let seg = &heard[(onset + 1_600).min(heard.len())..(onset + 9_600).min(heard.len())];
    assert!(
        seg.len() >= 8_000,
        "the phone decoded {} samples",
        heard.len()
    );
    let (c, _) = support::best_correlation(&recording(), seg);
    eprintln!("caller -> TCP phone: correlation {c:.4}");
    assert!(
        c >= MIN_CORRELATION,
        "the caller's recording at the phone: {c:.3}"
    );
    tokio::task::spawn_blocking(move || phone.close())
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while rig.bindings().await > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rig.bindings().await, 0, "un-REGISTERed over TCP");
    rig.assert_nothing_left().await;
}

/// REGISTER, 401, REGISTER with credentials: a 401 again (wrong password) passes.
const REGISTER_REFUSED: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="REGISTER with a wrong password">
  <send retrans="500"><![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:alice@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Max-Forwards: 70
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Expires: 60
      Content-Length: 0

    ]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:alice@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Max-Forwards: 70
      Contact: <sip:sipp@[local_ip]:[local_port]>
      [authentication]
      Expires: 60
      Content-Length: 0

    ]]></send>
  <recv response="401"/>
</scenario>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_register_right_password_binds_wrong_password_gets_401_and_no_binding() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(&[]).await;
    let gw = rig.sip_addr().to_string();
    let refused = dir.path().join("refused.xml");
    std::fs::write(&refused, REGISTER_REFUSED).unwrap();
    let p = free_port();
    let wrong = sipp(
        dir.path(),
        &[
            &gw,
            "-sf",
            refused.to_str().unwrap(),
            "-au",
            "alice",
            "-ap",
            "guess",
            "-p",
            &p.to_string(),
            "-m",
            "1",
        ],
    );
    let (code, err) = tokio::task::spawn_blocking(move || finish(wrong))
        .await
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "the wrong password was challenged again: {err}"
    );
    assert_eq!(rig.bindings().await, 0, "no binding for a wrong password");
    assert!(rig.contact("alice").await.is_none());

    let right = sipp(
        dir.path(),
        &[
            &gw,
            "-sf",
            &scenario("register_auth_uac.xml"),
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            "-p",
            &p.to_string(),
            "-m",
            "1",
        ],
    );
    let (code, err) = tokio::task::spawn_blocking(move || finish(right))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "200 with expires=60: {err}");
    let c = rig.contact("alice").await.expect("alice is registered");
    assert_eq!(c.dest, SocketAddr::from(([127, 0, 0, 1], p)));
    assert!(c.uri.starts_with("sip:sipp@127.0.0.1"), "{c:?}");
    let stats = rig
        .gw
        .handle()
        .run(|sw, _| sw.sip.registrar_stats().cloned())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.accepted, 1, "{stats:?}");
    assert!(stats.challenged >= 3, "{stats:?}");
    rig.server.abort();
    rig.gw.shutdown().await.unwrap();
}

/// The SIPp caller's recording (sip-tester's g711a.pcap: 30 ms A-law frames, the RTP payload
/// is the last 240 bytes of each captured frame) as linear samples.
fn recording() -> Vec<i16> {
    let data = std::fs::read("/usr/share/sip-tester/g711a.pcap").expect("sip-tester's g711a.pcap");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &data[at + 16..at + 16 + len];
        out.extend(
            frame[frame.len() - 240..]
                .iter()
                .map(|&b| codecs::g711::alaw_decode(b)),
        );
        at += 16 + len;
    }
    out
}

/// Agent Alice (a SIPp phone by URI) has the caller and blind-transfers it by its URI to Carol,
/// whose phone is not registered: the transfer fails at once as unreachable and the caller is
/// still with Alice. Carol's baresip phone then registers; the same transfer goes to it: Carol
/// is offered the call with its URI, her phone answers, the transfer connects and the caller's
/// recording reaches her phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_to_a_phone_fails_unregistered_then_connects_once_it_registers() {
    let dir = tempfile::tempdir().unwrap();
    let pa = free_port();
    let mut rig = Rig::start(&[
        (
            "alice",
            format!(r#"{{ kind = "sip", uri = "sip:alice@127.0.0.1:{pa}" }}"#),
        ),
        ("carol", r#"{ kind = "phone", user = "carol" }"#.into()),
    ])
    .await;
    rig.login("alice").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.login("carol").await;
    let alice = sipp(
        dir.path(),
        &[
            "-sn",
            "uas",
            "-p",
            &pa.to_string(),
            "-mp",
            &free_port().to_string(),
            "-rtp_echo",
            "-m",
            "1",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The caller plays its recording (8 s) and hangs up after 12 s.
    let caller = sipp(
        dir.path(),
        &[
            &rig.sip_addr().to_string(),
            "-sf",
            &scenario("calls_uac_audio_hold.xml"),
            "-s",
            "support",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-m",
            "1",
            "-d",
            "12000",
        ],
    );
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let uri = offered.call_uri().unwrap().clone();
    next_event(
        events,
        "call.answered by alice",
        |e| matches!(e, Event::CallAnswered { agent, .. } if agent == "alice"),
    )
    .await;
    let transfer = |rig: &Rig| {
        let req = rig
            .http
            .post(format!("{}/api/v1/calls/{uri}/transfer", rig.base))
            .bearer_auth("alice-token")
            .json(&json!({"target": {"agent": "carol"}, "kind": "blind"}));
        async move {
            let resp = req.send().await.unwrap();
            let s = resp.status();
            assert_eq!(s.as_u16(), 202, "transfer: {}", resp.text().await.unwrap());
        }
    };
    transfer(&rig).await;
    let asked = Instant::now();
    let failed = next_event(&mut rig.events, "transfer.failed", |e| {
        matches!(e, Event::TransferFailed { .. })
    })
    .await;
    let text = serde_json::to_string(&failed).unwrap();
    assert!(
        text.contains("unreachable") && text.contains("not registered"),
        "the failure says why: {text}"
    );
    assert!(asked.elapsed() < Duration::from_secs(1), "at once");
    assert_eq!(failed.call_uri(), Some(&uri));
    // A transfer to her is asked for by a person, not repeated by the ACD: she stays available.
    assert_eq!(rig.agent("carol")["presence"], "available");

    // Carol's phone registers.
    // baresip ends a call when its microphone file ends: 20 s of speech.
    let speech = support::speech_8k().repeat(3);
    let phone_wav = dir.path().join("phone.wav");
    std::fs::write(&phone_wav, codecs::wav::write_pcm16(8000, &speech)).unwrap();
    let mut opts = BaresipOptions::new("carol", &phone_wav);
    opts.auto_answer = true;
    opts.register = Some((rig.sip_addr(), "carol-secret".into()));
    let phone = tokio::task::spawn_blocking(move || Baresip::start(opts))
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while rig.contact("carol").await.is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rig.contact("carol").await.is_some(), "{}", phone.log());
    transfer(&rig).await;
    let events = &mut rig.events;
    let to_carol = next_event(
        events,
        "call.offered to carol",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "carol"),
    )
    .await;
    assert_eq!(
        to_carol.call_uri(),
        Some(&uri),
        "Carol's screen pop carries the URI"
    );
    next_event(events, "transfer.connected", |e| {
        matches!(e, Event::TransferConnected { .. })
    })
    .await;
    let phone = tokio::task::spawn_blocking(move || {
        let mut phone = phone;
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        // The caller's BYE (12 s after its answer) ends the call.
        let closed = phone.wait_event("CALL_CLOSED", Duration::from_secs(15));
        assert_ne!(closed["param"], "end of file", "{closed}");
        phone
    })
    .await
    .unwrap();
    for (who, p) in [
        ("caller", caller),
        ("alice (BYE after the transfer)", alice),
    ] {
        let (code, err) = tokio::task::spawn_blocking(move || finish(p))
            .await
            .unwrap();
        assert_eq!(code, Some(0), "{who} SIPp: {err}");
    }
    let heard = phone.decoded_audio();
    let onset = heard
        .iter()
        .position(|s| s.unsigned_abs() > 200)
        .unwrap_or(0);
    let seg = &heard[(onset + 1_600).min(heard.len())..(onset + 9_600).min(heard.len())];
    assert!(
        seg.len() >= 8_000,
        "the phone decoded {} samples",
        heard.len()
    );
    let (c, _) = support::best_correlation(&recording(), seg);
    eprintln!("caller -> transferred phone: correlation {c:.4}");
    assert!(
        c >= MIN_CORRELATION,
        "the caller's recording at Carol's phone: {c:.3}"
    );
    let (own, _) = support::best_correlation(&support::speech_8k(), seg);
    assert!(
        own < 0.5,
        "Carol's phone heard its own microphone? {own:.3}"
    );
    tokio::task::spawn_blocking(move || phone.close())
        .await
        .unwrap();
    rig.assert_nothing_left().await;
}
