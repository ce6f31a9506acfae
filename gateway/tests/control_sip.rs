//! The control plane on the real call engine, with real SIP peers: a SIPp caller is routed to
//! agent Alice (a SIPp UAS that echoes), Alice's call is blind-transferred by its call URI to
//! agent Bob (a SIPp UAS whose media is a socket of this test), Bob is offered the call with the
//! same URI, and the caller's recording reaches Bob (cross-correlated). Afterwards no call,
//! leg, RTP socket or mapped control leg is left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::UdpSocket;
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
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use serde_json::{Value, json};

const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn scenario(name: &str) -> String {
    format!(
        "{}/tests/data/sipp/{name}",
        env!("CARGO_MANIFEST_DIR").to_owned()
    )
}

/// How an agent's phone answers.
enum Answer {
    /// 180, then 200 with PCMA on this port (a socket of the test); waits for the BYE.
    Rtp(u16),
    /// 486 Busy Here.
    Busy,
}

/// An agent's UAS scenario (written to `dir`).
fn agent_scenario(dir: &Path, name: &str, answer: Answer) -> String {
    let rtp = match answer {
        Answer::Rtp(p) => p,
        Answer::Busy => {
            let p = dir.join(format!("{name}.xml"));
            std::fs::write(&p, BUSY).unwrap();
            return p.to_str().unwrap().to_owned();
        }
    };
    let text = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent bob">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]></send>
  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bob 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {rtp} RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]></send>
  <recv request="ACK" crlf="true">
    <action>
      <ereg regexp="tag=([^;> ]+)" search_in="hdr" header="From:" assign_to="from,ftag"/>
      <log message="REPLACES [call_id];to-tag=[pid]SIPpTag01[call_number];from-tag=[$ftag]"/>
    </action>
  </recv>
  <recv request="BYE"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <Reference variables="from"/>
</scenario>
"#
    );
    let p = dir.join(format!("{name}.xml"));
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

const BUSY: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="busy agent">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[

      SIP/2.0 486 Busy Here
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <recv request="ACK"/>
</scenario>
"#;

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

/// The caller's recording as linear samples (the RTP payloads are the last 240 bytes of each
/// captured frame: 30 ms of A-law).
fn recording() -> Vec<f64> {
    let data = std::fs::read(PCAP).expect("sip-tester's g711a.pcap");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &data[at + 16..at + 16 + len];
        for &b in &frame[frame.len() - 240..] {
            out.push(f64::from(codecs::g711::alaw_decode(b)));
        }
        at += 16 + len;
    }
    out
}

/// The best normalised cross-correlation of `x` against any window of `reference`.
fn best_correlation(x: &[f64], reference: &[f64]) -> f64 {
    let ex: f64 = x.iter().map(|v| v * v).sum();
    let mut best = 0.0f64;
    for lag in 0..reference.len().saturating_sub(x.len()) {
        let w = &reference[lag..lag + x.len()];
        let ew: f64 = w.iter().map(|v| v * v).sum();
        if ew == 0.0 || ex == 0.0 {
            continue;
        }
        let dot: f64 = x.iter().zip(w).map(|(a, b)| a * b).sum();
        best = best.max(dot / (ex * ew).sqrt());
    }
    best
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
    /// A gateway on the real plane with the control plane on the engine; agents Alice (SIP
    /// URI on port `pa`) and Bob (port `pb`) logged in; calls to `support` go to Alice.
    async fn start(pa: u16, pb: u16) -> Rig {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let text = format!(
            r#"
    [http]
    listen = "127.0.0.1:0"

    [sip]
    udp = "127.0.0.1:0"
    trusted = ["127.0.0.0/8"]

    [[route]]
    name = "support line"
    match = "support"
    to = ["control:agent:alice"]

    [[route]]
    name = "bob direct"
    match = "bob"
    to = ["uri:sip:bob@127.0.0.1:{pb}"]

    [control.timers]
    transfer_setup_ms = 10000
    transfer_ring_ms = 10000

    [[control.agents]]
    id = "alice"
    name = "Alice"
    endpoints = [{{ kind = "sip", uri = "sip:alice@127.0.0.1:{pa}" }}]
    token = "alice-token"

    [[control.agents]]
    id = "bob"
    name = "Bob"
    endpoints = [{{ kind = "sip", uri = "sip:bob@127.0.0.1:{pb}" }}]
    token = "bob-token"
    "#
        );
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
        let r = Rig {
            gw,
            side,
            control,
            events,
            base,
            http,
            server,
        };
        for (agent, token) in [("alice", "alice-token"), ("bob", "bob-token")] {
            let (s, body) = r
                .post(token, &format!("/api/v1/agents/{agent}/login"), json!({}))
                .await;
            assert!(s.is_success(), "{agent} login: {s} {body}");
        }
        r
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (reqwest::StatusCode, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = resp.status();
        (s, resp.text().await.unwrap())
    }

    fn caller(&self, dir: &Path) -> Child {
        sipp(
            dir,
            &[
                &self.gw.sip_udp_addr().unwrap().to_string(),
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
                "8000",
            ],
        )
    }

    /// Waits until nothing is left and says so.
    async fn assert_nothing_left(self) {
        for _ in 0..100 {
            if self.gw.counters().idle() && self.side.mapped_legs() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = self.gw.counters();
        assert_eq!(c.calls.load(Ordering::Relaxed), 0, "live calls");
        assert_eq!(c.legs.load(Ordering::Relaxed), 0, "live legs");
        assert_eq!(c.rtp_sockets.load(Ordering::Relaxed), 0, "open RTP sockets");
        assert_eq!(
            self.side.mapped_legs(),
            0,
            "control legs mapped to engine legs"
        );
        let calls = self.control.read(|core, now| {
            core.list_calls(&gateway::control::core::Principal::Admin, now)
                .len()
        });
        assert_eq!(calls, 0, "calls in the control plane");
        self.server.abort();
        self.gw.shutdown().await.unwrap();
    }
}

/// Receives PCMA at `sock` for up to `limit` (or 1.5 s of audio) as linear samples.
fn receive_audio(sock: &UdpSocket, limit: Duration) -> Vec<f64> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    let until = Instant::now() + limit;
    while got.len() < 12_000 && Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf)
            && n > 12
            && buf[1] & 0x7f == 8
        {
            got.extend(
                buf[12..n]
                    .iter()
                    .map(|&b| f64::from(codecs::g711::alaw_decode(b))),
            );
        }
    }
    got
}

/// Asserts that `got` holds at least 1.2 s of the caller's recording.
fn assert_recording(who: &str, got: &[f64]) {
    assert!(
        got.len() >= 9_600,
        "{who} received {} samples of PCMA",
        got.len()
    );
    // Skip the first 200 ms (the bridge turning round), correlate 1 s.
    let r = best_correlation(&got[1_600..9_600], &recording());
    eprintln!("caller -> {who} correlation {r:.3} over 1 s");
    assert!(r >= 0.9, "caller's audio at {who}: correlation {r:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_call_offered_to_alice_is_blind_transferred_by_uri_to_bob_with_audio() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    // Bob's media: a socket of this test.
    let bob_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    bob_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let bob_rtp_port = bob_rtp.local_addr().unwrap().port();
    let mut rig = Rig::start(pa, pb).await;
    let mut cdrs = rig.gw.handle().subscribe_cdrs();

    // The agents' phones, then the caller (7 s of A-law audio, BYE after 8 s).
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
    let bob_xml = agent_scenario(dir.path(), "bob", Answer::Rtp(bob_rtp_port));
    let bob = sipp(
        dir.path(),
        &["-sf", &bob_xml, "-p", &pb.to_string(), "-m", "1"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = rig.caller(dir.path());
    let events = &mut rig.events;
    let offered_a = next_event(
        events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let Event::CallOffered { call_uri: uri, .. } = offered_a else {
        unreachable!()
    };
    next_event(events, "call.answered", |e| {
        matches!(e, Event::CallAnswered { .. })
    })
    .await;
    // Alice talks for a moment, then transfers the call by its URI.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, body) = rig
        .post(
            "alice-token",
            &format!("/api/v1/calls/{uri}/transfer"),
            json!({"target": {"agent": "bob"}, "kind": "blind"}),
        )
        .await;
    assert_eq!(s.as_u16(), 202, "transfer: {body}");
    let events = &mut rig.events;
    let offered_b = next_event(
        events,
        "call.offered to bob",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "bob"),
    )
    .await;
    assert_eq!(
        offered_b.call_uri(),
        Some(&uri),
        "Bob's screen pop carries the call's URI"
    );
    next_event(events, "transfer.connected", |e| {
        matches!(e, Event::TransferConnected { .. })
    })
    .await;
    // The caller's recording reaches Bob.
    let got = tokio::task::spawn_blocking(move || receive_audio(&bob_rtp, Duration::from_secs(4)))
        .await
        .unwrap();
    assert_recording("Bob", &got);

    for (who, p) in [
        ("caller", caller),
        ("alice (BYE after the transfer)", alice),
        ("bob (BYE after the caller left)", bob),
    ] {
        let (code, err) = tokio::task::spawn_blocking(move || finish(p))
            .await
            .unwrap();
        assert_eq!(code, Some(0), "{who} SIPp: {err}");
    }
    next_event(&mut rig.events, "call.ended", |e| {
        matches!(e, Event::CallEnded { .. })
    })
    .await;
    // The record: answered when Alice took the call (billing from there), counted answered.
    let cdr = tokio::time::timeout(Duration::from_secs(5), cdrs.recv())
        .await
        .expect("the call's record within 5 s")
        .unwrap();
    assert_eq!(cdr.call_uri, uri);
    let answer = cdr
        .answer
        .clone()
        .expect("a control-plane call has an answer time");
    let connected = cdr.connected.clone().expect("the caller met an agent");
    assert!(
        answer >= cdr.start && answer <= connected && connected < cdr.end,
        "{cdr:?}"
    );
    assert!(cdr.billable_ms >= 5_000, "billed from the answer: {cdr:?}");
    let (answered, failed) = rig
        .gw
        .handle()
        .run(|sw, _| {
            let s = sw.engine.stats();
            (s.calls_answered, s.calls_failed)
        })
        .await
        .unwrap();
    assert_eq!((answered, failed), (1, 0), "counted as an answered call");
    assert_eq!(rig.gw.counters().answered.load(Ordering::Relaxed), 1);
    rig.assert_nothing_left().await;
}

/// Bob is busy: the transfer fails with `busy` and the caller is back with Alice, whose phone
/// hears the caller's recording again; Alice's leg was never released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_busy_agent_returns_the_caller_to_alice_with_audio() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let alice_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    alice_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let alice_rtp_port = alice_rtp.local_addr().unwrap().port();
    let mut rig = Rig::start(pa, pb).await;
    let alice_xml = agent_scenario(dir.path(), "alice", Answer::Rtp(alice_rtp_port));
    let alice = sipp(
        dir.path(),
        &["-sf", &alice_xml, "-p", &pa.to_string(), "-m", "1"],
    );
    let bob_xml = agent_scenario(dir.path(), "bob", Answer::Busy);
    let bob = sipp(
        dir.path(),
        &["-sf", &bob_xml, "-p", &pb.to_string(), "-m", "1"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = rig.caller(dir.path());
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let Event::CallOffered { call_uri: uri, .. } = offered else {
        unreachable!()
    };
    next_event(events, "call.answered", |e| {
        matches!(e, Event::CallAnswered { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, body) = rig
        .post(
            "alice-token",
            &format!("/api/v1/calls/{uri}/transfer"),
            json!({"target": {"agent": "bob"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 202, "transfer: {body}");
    let failed = next_event(&mut rig.events, "transfer.failed", |e| {
        matches!(e, Event::TransferFailed { .. })
    })
    .await;
    let text = serde_json::to_string(&failed).unwrap();
    assert!(text.contains("busy"), "the failure says busy: {text}");
    assert_eq!(failed.call_uri(), Some(&uri));
    // Drain what Alice got before and during the attempt, then hear the caller again.
    let got = tokio::task::spawn_blocking(move || {
        // What was queued before the failure is not proof: drop it.
        alice_rtp.set_nonblocking(true).unwrap();
        while alice_rtp.recv(&mut [0u8; 1500]).is_ok() {}
        alice_rtp.set_nonblocking(false).unwrap();
        receive_audio(&alice_rtp, Duration::from_secs(4))
    })
    .await
    .unwrap();
    assert_recording("Alice after the failed transfer", &got);
    for (who, p) in [("caller", caller), ("alice", alice), ("bob (486)", bob)] {
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

/// The engine ends a call by itself (here: a whole-call hang-up, as RTP inactivity would): the
/// control plane hears of every leg it held, the call ends there too and Alice is not left
/// busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_engine_ends_by_itself_ends_in_the_control_plane_and_frees_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut rig = Rig::start(pa, pb).await;
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
    let mut caller = rig.caller(dir.path());
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let Event::CallOffered { call_uri: uri, .. } = offered else {
        unreachable!()
    };
    next_event(events, "call.answered", |e| {
        matches!(e, Event::CallAnswered { .. })
    })
    .await;
    let u = uri.clone();
    rig.gw
        .handle()
        .run(move |sw, now| {
            sw.with_engine(now, |e| {
                e.hang_up(
                    now,
                    &u,
                    gateway::calls::leg::EndCause::q850(41, "test: the engine ends the call"),
                )
            })
        })
        .await
        .unwrap()
        .unwrap();
    let ended = next_event(&mut rig.events, "call.ended", |e| {
        matches!(e, Event::CallEnded { .. })
    })
    .await;
    assert_eq!(ended.call_uri(), Some(&uri));
    let presence = rig.control.read(|core, now| {
        serde_json::to_value(core.agent("alice", now).unwrap()).unwrap()["presence"].clone()
    });
    assert_ne!(
        presence, "busy",
        "Alice is not left busy on a call that is gone"
    );
    let (code, err) = tokio::task::spawn_blocking(move || finish(alice))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "alice SIPp got the BYE: {err}");
    // The caller's scenario expected to hang up itself; it got our BYE instead.
    let _ = caller.kill();
    let _ = caller.wait();
    rig.assert_nothing_left().await;
}

/// Agent Alice's phone: answers, then REFERs the call to `sip:bob@...` and expects 202, the
/// NOTIFY progress (trying, ringing, and a final 200 sipfrag) and only then our BYE.
const ALICE_REFERS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent alice refers">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500"><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:alice@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=alice 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]></send>
  <recv request="ACK">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="them"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="us"/>
    </action>
  </recv>
  <pause milliseconds="800"/>
  <send retrans="500"><![CDATA[

      REFER sip:gw@GATEWAY SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$us]
      To: [$them]
      Call-ID: [call_id]
      CSeq: 1 REFER
      Max-Forwards: 70
      Contact: <sip:alice@[local_ip]:[local_port]>
      Refer-To: <sip:bob@127.0.0.1>
      Content-Length: 0

    ]]></send>
  <recv response="202"/>
  <recv request="NOTIFY">
    <action><ereg regexp="SIP/2.0 100" search_in="body" check_it="true" assign_to="n1"/></action>
  </recv>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <recv request="NOTIFY">
    <action><ereg regexp="SIP/2.0 180" search_in="body" check_it="true" assign_to="n2"/></action>
  </recv>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <recv request="NOTIFY">
    <action><ereg regexp="SIP/2.0 200" search_in="body" check_it="true" assign_to="n3"/></action>
  </recv>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <recv request="BYE"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <Reference variables="n1,n2,n3"/>
</scenario>
"#;

/// Alice's phone REFERs the call to Bob: the same executor runs it (202, NOTIFY trying,
/// ringing, 200 before the BYE), Bob is offered the call with its URI and hears the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_agents_refer_runs_through_the_executor_with_notify_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let bob_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    bob_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let bob_rtp_port = bob_rtp.local_addr().unwrap().port();
    let mut rig = Rig::start(pa, pb).await;
    let alice_xml = dir.path().join("alice.xml");
    let gateway = rig.gw.sip_udp_addr().unwrap().to_string();
    std::fs::write(&alice_xml, ALICE_REFERS.replace("GATEWAY", &gateway)).unwrap();
    let alice = sipp(
        dir.path(),
        &[
            "-sf",
            alice_xml.to_str().unwrap(),
            "-p",
            &pa.to_string(),
            "-mp",
            &free_port().to_string(),
            "-m",
            "1",
        ],
    );
    let bob_xml = agent_scenario(dir.path(), "bob", Answer::Rtp(bob_rtp_port));
    let bob = sipp(
        dir.path(),
        &["-sf", &bob_xml, "-p", &pb.to_string(), "-m", "1"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = rig.caller(dir.path());
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let uri = offered.call_uri().unwrap().clone();
    let offered_b = next_event(
        events,
        "call.offered to bob (after the REFER)",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "bob"),
    )
    .await;
    assert_eq!(offered_b.call_uri(), Some(&uri));
    next_event(events, "transfer.connected", |e| {
        matches!(e, Event::TransferConnected { .. })
    })
    .await;
    let got = tokio::task::spawn_blocking(move || receive_audio(&bob_rtp, Duration::from_secs(4)))
        .await
        .unwrap();
    assert_recording("Bob after the REFER", &got);
    for (who, p) in [
        ("alice (202, NOTIFY 100/180/200, then BYE)", alice),
        ("caller", caller),
        ("bob", bob),
    ] {
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

/// How Alice's phone expects its attended REFER to end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attended {
    /// 202, NOTIFY 100, NOTIFY 200 sipfrag, then our BYE.
    Completes,
    /// `Refer-Sub: false`: 202 echoing it, no NOTIFY at all, then our BYE.
    CompletesWithoutNotify,
    /// 202, NOTIFY 100, NOTIFY 481 sipfrag; the call goes on until the caller hangs up.
    Fails481,
    /// Like `Completes`, the consultation being the API's `consult` (Replaces names the
    /// gateway's leg to Bob, as Bob sees it).
    CompletesApiConsult,
}

fn ok_response() -> &'static str {
    r#"  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
"#
}

/// Agent Alice's phone on the caller's call: answers (PCMA on `rtp`), then waits for the
/// test's trigger (an INFO in the call's dialog carrying `X-Replaces:`, the %-escaped
/// Replaces of her consultation call, known only once that call is up), answers it and sends
/// REFER with `Refer-To: <sip:bob@127.0.0.1?Replaces=...>`.
fn alice_attended(dir: &Path, gateway: &str, rtp: u16, how: Attended) -> String {
    let refer_sub = if how == Attended::CompletesWithoutNotify {
        "Refer-Sub: false\n      Supported: norefersub\n      "
    } else {
        ""
    };
    let mut text = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent alice attended refer">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500"><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:alice@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=alice 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {rtp} RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]></send>
  <recv request="ACK">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="them"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="us"/>
    </action>
  </recv>
  <recv request="INFO" timeout="20000">
    <action>
      <ereg regexp="[^ ]+" search_in="hdr" header="X-Replaces:" check_it="true" assign_to="rep"/>
    </action>
  </recv>
{ok}  <send retrans="500"><![CDATA[

      REFER sip:gw@{gateway} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$us]
      To: [$them]
      Call-ID: [call_id]
      CSeq: 1 REFER
      Max-Forwards: 70
      Contact: <sip:alice@[local_ip]:[local_port]>
      {refer_sub}Refer-To: <sip:bob@127.0.0.1?Replaces=[$rep]>
      Content-Length: 0

    ]]></send>
"#,
        ok = ok_response()
    );
    let notify = |code: u16, var: &str| {
        format!(
            r#"  <recv request="NOTIFY">
    <action><ereg regexp="SIP/2.0 {code}" search_in="body" check_it="true" assign_to="{var}"/></action>
  </recv>
{}"#,
            ok_response()
        )
    };
    let mut vars = vec!["rep"];
    match how {
        Attended::Completes | Attended::CompletesApiConsult => {
            text.push_str("  <recv response=\"202\"/>\n");
            text.push_str(&notify(100, "n1"));
            text.push_str(&notify(200, "n2"));
            vars.extend(["n1", "n2"]);
        }
        Attended::CompletesWithoutNotify => {
            text.push_str(
                r#"  <recv response="202">
    <action><ereg regexp="false" search_in="hdr" header="Refer-Sub:" check_it="true" assign_to="echoed"/></action>
  </recv>
"#,
            );
            vars.push("echoed");
        }
        Attended::Fails481 => {
            text.push_str("  <recv response=\"202\"/>\n");
            text.push_str(&notify(100, "n1"));
            text.push_str(&notify(481, "n2"));
            vars.extend(["n1", "n2"]);
        }
    }
    text.push_str("  <recv request=\"BYE\" timeout=\"20000\"/>\n");
    text.push_str(ok_response());
    text.push_str(&format!(
        "  <Reference variables=\"{}\"/>\n</scenario>\n",
        vars.join(",")
    ));
    let p = dir.join("alice.xml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Alice's second line: calls Bob through the gateway (the consultation, call 2), logs the
/// Replaces that names this dialog as Alice sees it (RFC 3891: to-tag = the far end's tag,
/// from-tag = hers), then waits for the gateway's BYE.
const ALICE_CONSULTS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="alice consults bob">
  <send retrans="500"><![CDATA[

      INVITE sip:bob@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@[local_ip]:[local_port]>;tag=consulttag[pid]
      To: <sip:bob@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=alice 2 2 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200">
    <action>
      <ereg regexp="tag=([^;> ]+)" search_in="hdr" header="To:" check_it="true" assign_to="all,totag"/>
    </action>
  </recv>
  <send><![CDATA[

      ACK sip:bob@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@[local_ip]:[local_port]>;tag=consulttag[pid]
      To: <sip:bob@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <nop>
    <action><log message="REPLACES [call_id];to-tag=[$totag];from-tag=consulttag[pid]"/></action>
  </nop>
  <recv request="BYE" timeout="20000"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <Reference variables="all"/>
</scenario>
"#;

/// %-escapes a Replaces value for a URI header (RFC 3261 §19.1.1).
fn escape(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The Replaces the SIPp scenario whose file name starts with `prefix` logged.
async fn logged_replaces(dir: &Path, prefix: &str) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with("_logs.log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if let Some(line) = text.lines().find(|l| l.contains("REPLACES ")) {
                    let v = line.split("REPLACES ").nth(1).unwrap().trim();
                    return v.to_owned();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{prefix}: no Replaces logged");
}

impl Rig {
    /// Alice's SIP leg of `uri` (the outbound leg to her phone) and its Call-ID.
    async fn alice_leg(
        &self,
        uri: &gateway::control::CallUri,
    ) -> (gateway::calls::leg::LegId, String) {
        let u = uri.clone();
        self.gw
            .handle()
            .run(move |sw, now| {
                let info = sw.engine.call(now, &u).unwrap();
                let leg = info
                    .legs
                    .iter()
                    .find(|l| l.direction == "outbound")
                    .unwrap()
                    .id;
                (leg, sw.sip.call_id_of(leg).unwrap().to_owned())
            })
            .await
            .unwrap()
    }

    /// Sends the trigger to Alice's phone: an INFO with the caller's call's Call-ID (SIPp
    /// matches calls by Call-ID) carrying the Replaces to use.
    fn trigger(&self, pa: u16, call_id: &str, replaces: &str) -> Result<(), String> {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = s.local_addr().unwrap();
        let msg = format!(
            "INFO sip:alice@127.0.0.1:{pa} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bKtrigger{}\r\n\
             From: <sip:test@127.0.0.1>;tag=trigger\r\n\
             To: <sip:alice@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INFO\r\n\
             Max-Forwards: 70\r\n\
             X-Replaces: {replaces}\r\n\
             Content-Length: 0\r\n\r\n",
            pa
        );
        // (SIPp answers it towards the call's peer, the gateway, which drops the stray 200.)
        s.send_to(msg.as_bytes(), ("127.0.0.1", pa))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Receives PCMA at `sock` (Bob's media) for up to `limit` (or 1.5 s of audio), echoing every
/// packet back (with another SSRC) so that Bob also talks to the caller.
fn receive_and_echo(sock: &UdpSocket, limit: Duration) -> Vec<f64> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    let until = Instant::now() + limit;
    while got.len() < 12_000 && Instant::now() < until {
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && n > 12
            && buf[1] & 0x7f == 8
        {
            got.extend(
                buf[12..n]
                    .iter()
                    .map(|&b| f64::from(codecs::g711::alaw_decode(b))),
            );
            buf[8..12].copy_from_slice(&0xB0B0_B0B0u32.to_be_bytes());
            let _ = sock.send_to(&buf[..n], from);
        }
    }
    got
}

/// One attended transfer by REFER with Replaces: the caller reaches Alice, Alice calls Bob
/// through the gateway on her second line, then REFERs the caller's call with the Replaces of
/// that consultation (`how` says which ending).
async fn attended_refer(how: Attended) {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let bob_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    bob_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let bob_rtp_port = bob_rtp.local_addr().unwrap().port();
    let alice_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    alice_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let alice_rtp_port = alice_rtp.local_addr().unwrap().port();
    let mut rig = Rig::start(pa, pb).await;
    let gateway = rig.gw.sip_udp_addr().unwrap().to_string();
    let alice_xml = alice_attended(dir.path(), &gateway, alice_rtp_port, how);
    let alice = sipp(
        dir.path(),
        &[
            "-sf",
            &alice_xml,
            "-p",
            &pa.to_string(),
            "-m",
            "1",
            "-trace_msg",
            "-trace_err",
        ],
    );
    let bob_xml = agent_scenario(dir.path(), "bob", Answer::Rtp(bob_rtp_port));
    let bob = sipp(
        dir.path(),
        &[
            "-sf",
            &bob_xml,
            "-p",
            &pb.to_string(),
            "-m",
            "1",
            "-trace_logs",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = rig.caller(dir.path());
    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let uri = offered.call_uri().unwrap().clone();
    next_event(events, "call.answered", |e| {
        matches!(e, Event::CallAnswered { .. })
    })
    .await;
    let (alice_leg, call_id) = rig.alice_leg(&uri).await;

    let consult = if how == Attended::CompletesApiConsult {
        // Alice consults Bob through the API; the call's consultation leg rings Bob.
        let (st, body) = rig
            .post(
                "alice-token",
                &format!("/api/v1/calls/{uri}/consult"),
                json!({"target": {"agent": "bob"}}),
            )
            .await;
        assert!(st.is_success(), "consult: {st} {body}");
        next_event(&mut rig.events, "transfer.target_answered", |e| {
            matches!(e, Event::TransferTargetAnswered { .. })
        })
        .await;
        None
    } else if how == Attended::Fails481 {
        None
    } else {
        // Alice's second line calls Bob through the gateway.
        let consult_xml = dir.path().join("consult.xml");
        std::fs::write(&consult_xml, ALICE_CONSULTS).unwrap();
        Some(sipp(
            dir.path(),
            &[
                &gateway,
                "-sf",
                consult_xml.to_str().unwrap(),
                "-p",
                &free_port().to_string(),
                "-mp",
                &free_port().to_string(),
                "-m",
                "1",
                "-trace_logs",
            ],
        ))
    };
    let replaces = match (&consult, how) {
        (Some(_), _) => logged_replaces(dir.path(), "consult_").await,
        (None, Attended::CompletesApiConsult) => logged_replaces(dir.path(), "bob_").await,
        (None, _) => "no-such-call@127.0.0.1;to-tag=nobody;from-tag=nobody".to_owned(),
    };
    if let Err(e) = rig.trigger(pa, &call_id, &escape(&replaces)) {
        let mut alice = alice;
        let _ = alice.kill();
        let (_, err) = finish(alice);
        let mut msgs = String::new();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let p = f.unwrap().path();
            if p.to_string_lossy().contains("alice_") {
                msgs.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        panic!("Alice's phone did not answer the trigger ({e}): {err}\n{msgs}");
    }

    if how == Attended::Fails481 {
        let failed = next_event(&mut rig.events, "transfer.failed", |e| {
            matches!(e, Event::TransferFailed { .. })
        })
        .await;
        assert_eq!(failed.call_uri(), Some(&uri));
        let text = serde_json::to_string(&failed).unwrap();
        assert!(text.contains("481"), "the failure says why: {text}");
        // The caller is still with Alice: her phone hears the caller's recording.
        let got = tokio::task::spawn_blocking(move || {
            alice_rtp.set_nonblocking(true).unwrap();
            while alice_rtp.recv(&mut [0u8; 1500]).is_ok() {}
            alice_rtp.set_nonblocking(false).unwrap();
            receive_audio(&alice_rtp, Duration::from_secs(4))
        })
        .await
        .unwrap();
        assert_recording("Alice after the refused REFER", &got);
        let alive = rig
            .gw
            .handle()
            .run(move |sw, _| sw.engine.leg_kind(alice_leg).is_some())
            .await
            .unwrap();
        assert!(alive, "Alice's leg of the caller's call was never released");
        // Bob was never involved: his phone still waits for an INVITE.
        let mut bob = bob;
        let _ = bob.kill();
        let _ = bob.wait();
    } else {
        let connected = next_event(&mut rig.events, "transfer.connected", |e| {
            matches!(e, Event::TransferConnected { .. })
        })
        .await;
        assert_eq!(
            connected.call_uri(),
            Some(&uri),
            "transfer.connected carries the caller's call URI"
        );
        // Caller -> Bob: the recording, correlated; Bob -> caller: Bob's packets reach the
        // leg bridged to the caller's.
        let got =
            tokio::task::spawn_blocking(move || receive_and_echo(&bob_rtp, Duration::from_secs(4)))
                .await
                .unwrap();
        assert_recording("Bob after the attended REFER", &got);
        let u = uri.clone();
        let (bridged, bob_in) = rig
            .gw
            .handle()
            .run(move |sw, now| {
                let info = sw.engine.call(now, &u).unwrap();
                let caller = info.legs.iter().find(|l| l.direction == "inbound").unwrap();
                let b = caller.bridged_to.unwrap();
                let stats = sw.media.leg_stats(b).unwrap();
                (
                    info.legs
                        .iter()
                        .any(|l| l.id == b && l.bridged_to == Some(caller.id))
                        && info.legs.len() == 2,
                    stats.packets_received,
                )
            })
            .await
            .unwrap();
        assert!(
            bridged,
            "the caller and Bob are bridged, nobody else is in the call"
        );
        assert!(
            bob_in >= 50,
            "Bob's audio reaches the caller's bridge: {bob_in} packets"
        );
        if let Some(consult) = consult {
            let (code, err) = tokio::task::spawn_blocking(move || finish(consult))
                .await
                .unwrap();
            assert_eq!(
                code,
                Some(0),
                "Alice's consultation line (BYE after the transfer): {err}"
            );
        }
        let (code, err) = tokio::task::spawn_blocking(move || finish(bob))
            .await
            .unwrap();
        assert_eq!(code, Some(0), "bob (BYE after the caller left): {err}");
    }
    for (who, p) in [("alice", alice), ("caller", caller)] {
        let (code, err) = tokio::task::spawn_blocking(move || finish(p))
            .await
            .unwrap();
        assert_eq!(code, Some(0), "{who} SIPp: {err}");
    }
    next_event(
        &mut rig.events,
        "call.ended",
        |e| matches!(e, Event::CallEnded { call_uri, .. } if *call_uri == uri),
    )
    .await;
    rig.assert_nothing_left().await;
}

/// Alice consults Bob on her own call through the gateway, then REFERs the caller's call with
/// that dialog's Replaces: the caller is bridged to Bob (audio both ways), Alice hears NOTIFY
/// 100 and 200 then our BYE on both her lines; nothing is left once the caller hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_refer_with_replaces_bridges_the_caller_to_the_consulted_agent() {
    attended_refer(Attended::Completes).await;
}

/// The same with `Refer-Sub: false`: the 202 echoes it, no NOTIFY is sent, the transfer still
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_refer_without_subscription_completes_with_no_notify() {
    attended_refer(Attended::CompletesWithoutNotify).await;
}

/// Replaces naming no dialog: Alice gets NOTIFY 481, `transfer.failed` says 481, and the
/// caller stays with Alice with audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_refer_naming_an_unknown_dialog_fails_and_the_caller_stays_with_alice() {
    attended_refer(Attended::Fails481).await;
}

/// Alice consults Bob with the API's `consult`, then her phone REFERs with the Replaces of the
/// gateway's leg to Bob: the consultation completes as with `transfer/complete` (NOTIFY 100,
/// 200, BYE), the caller is with Bob, nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_refer_naming_the_api_consultation_completes_it() {
    attended_refer(Attended::CompletesApiConsult).await;
}
