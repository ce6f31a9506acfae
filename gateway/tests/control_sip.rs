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

/// Agent Bob's UAS: rings, answers PCMA with its media on `rtp` (a socket of the test), and
/// waits for the gateway's BYE.
fn bob_scenario(dir: &Path, rtp: u16) -> String {
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
  <recv request="ACK" crlf="true"/>
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
</scenario>
"#
    );
    let p = dir.join("bob.xml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_call_offered_to_alice_is_blind_transferred_by_uri_to_bob_with_audio() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    // Bob's media: a socket of this test.
    let bob_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    bob_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let bob_rtp_port = bob_rtp.local_addr().unwrap().port();
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
    let mut events = control.subscribe();
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
    let post = |token: &'static str, path: String, body: Value| {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body);
        async move {
            let resp = r.send().await.unwrap();
            let s = resp.status();
            (s, resp.text().await.unwrap())
        }
    };
    for (agent, token) in [("alice", "alice-token"), ("bob", "bob-token")] {
        let (s, body) = post(token, format!("/api/v1/agents/{agent}/login"), json!({})).await;
        assert!(s.is_success(), "{agent} login: {s} {body}");
    }

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
    let bob_xml = bob_scenario(dir.path(), bob_rtp_port);
    let bob = sipp(
        dir.path(),
        &["-sf", &bob_xml, "-p", &pb.to_string(), "-m", "1"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = sipp(
        dir.path(),
        &[
            &gw.sip_udp_addr().unwrap().to_string(),
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
    );

    let offered_a = next_event(
        &mut events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let Event::CallOffered { call_uri: uri, .. } = offered_a else {
        unreachable!()
    };
    next_event(&mut events, "call.answered", |e| {
        matches!(e, Event::CallAnswered { .. })
    })
    .await;
    // Alice talks for a moment, then transfers the call by its URI.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, body) = post(
        "alice-token",
        format!("/api/v1/calls/{uri}/transfer"),
        json!({"target": {"agent": "bob"}, "kind": "blind"}),
    )
    .await;
    assert_eq!(s.as_u16(), 202, "transfer: {body}");
    let offered_b = next_event(
        &mut events,
        "call.offered to bob",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "bob"),
    )
    .await;
    assert_eq!(
        offered_b.call_uri(),
        Some(&uri),
        "Bob's screen pop carries the call's URI"
    );
    next_event(&mut events, "transfer.connected", |e| {
        matches!(e, Event::TransferConnected { .. })
    })
    .await;

    // The caller's recording reaches Bob: 1.5 s of what Bob's socket receives.
    let recv_audio = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        let until = Instant::now() + Duration::from_secs(4);
        while got.len() < 12_000 && Instant::now() < until {
            if let Ok(n) = bob_rtp.recv(&mut buf)
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
    })
    .await
    .unwrap();
    assert!(
        recv_audio.len() >= 8_000,
        "Bob received {} samples of PCMA",
        recv_audio.len()
    );
    // Skip the first 200 ms (the bridge turning round), correlate 1 s.
    let x = &recv_audio[1_600..9_600];
    let r = best_correlation(x, &recording());
    eprintln!("caller -> Bob correlation {r:.3} over 1 s");
    assert!(r >= 0.9, "caller's audio at Bob: correlation {r:.3}");

    let (code, err) = tokio::task::spawn_blocking(move || finish(caller))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "caller SIPp: {err}");
    let (code, err) = tokio::task::spawn_blocking(move || finish(alice))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "alice SIPp (BYE after the transfer): {err}");
    let (code, err) = tokio::task::spawn_blocking(move || finish(bob))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "bob SIPp (BYE after the caller left): {err}");
    next_event(&mut events, "call.ended", |e| {
        matches!(e, Event::CallEnded { .. })
    })
    .await;

    // Nothing is left behind.
    for _ in 0..100 {
        if gw.counters().idle() && side.mapped_legs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = gw.counters();
    assert_eq!(c.calls.load(Ordering::Relaxed), 0, "live calls");
    assert_eq!(c.legs.load(Ordering::Relaxed), 0, "live legs");
    assert_eq!(c.rtp_sockets.load(Ordering::Relaxed), 0, "open RTP sockets");
    assert_eq!(side.mapped_legs(), 0, "control legs mapped to engine legs");
    let calls = control.read(|core, now| {
        core.list_calls(&gateway::control::core::Principal::Admin, now)
            .len()
    });
    assert_eq!(calls, 0, "calls in the control plane");
    server.abort();
    gw.shutdown().await.unwrap();
}
