//! Control-plane benchmark on the real call engine (issue 6 item 8): API and event throughput
//! with N active SIP calls, and the latency from a transfer request (HTTP POST) to
//! `transfer.connected` (WebSocket) over M blind transfers to auto-answering agents.
//!
//! Everything is real and on loopback: a SIPp UAC places the callers (INVITE to the `q` queue,
//! answers the gateway's hold re-INVITEs, waits for our BYE), the agents' phones are one SIPp
//! UAS (built-in `uas`: 180 then 200 at once), the gateway is the SIP B2BUA on the media plane
//! with the control plane on `EngineCallSide`, the API is HTTP/1.1 and the events a WebSocket.
//! Every transfer is a new INVITE to the target's phone, a re-bridge of the caller's leg and a
//! BYE to the previous agent.
//!
//! `cargo bench -p gateway --bench control_engine -- --calls 200 --transfers 1000`
//! (bounded: about a minute). Prints a table; the run fails if a call or leg is left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gateway::calls::control_side::EngineCallSide;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::control::api::ControlPlane;
use gateway::control::core::Principal;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-token";

fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// The caller: INVITE to the queue, answer any re-INVITE (hold/resume) with our SDP, take the
/// BYE. A repeated ACK is absorbed: when our 200 to a re-INVITE is retransmitted before the
/// gateway's ACK arrives, the gateway ACKs each 2xx it receives (RFC 3261 13.2.2.4). SIPp,
/// one thread under thousands of re-INVITEs a second, is sometimes later than T1: the gateway
/// retransmits its re-INVITE, SIPp answers the copy as a new one after it has moved on, and the
/// gateway's next re-INVITE may then arrive before that stray 200's ACK: answered too. Our 200
/// to a re-INVITE is sent once (loopback loses nothing; SIPp cannot take an ACK while a
/// retransmitted send is pending if optional messages follow it).
const CALLER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="queued caller">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:+1555[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200"/>
  <send><![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:+1555[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <label id="1"/>
  <recv request="INVITE" optional="true" next="2"/>
  <recv request="ACK" optional="true" next="1"/>
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
  <nop next="9"/>
  <label id="2"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:caller@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 2 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]></send>
  <recv request="INVITE" optional="true" next="2"/>
  <recv request="ACK" next="1"/>
  <label id="9"/>
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
            "300",
            "-timeout_error",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// (user+system CPU seconds) of this process.
fn cpu_self() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Sends `reqs` with `workers` concurrent clients for `dur`; each worker walks its own share of
/// the list in order (so a call's hold and resume never overlap). Returns (ok, errors, elapsed).
async fn hammer(
    http: &reqwest::Client,
    reqs: Arc<Vec<Vec<(reqwest::Method, String)>>>,
    dur: Duration,
) -> (u64, u64, Duration) {
    let n = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..reqs.len() {
        let http = http.clone();
        let reqs = reqs.clone();
        let n = n.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mine = &reqs[w];
            let mut i = 0;
            while t0.elapsed() < dur {
                let (m, url) = &mine[i % mine.len()];
                let r = http
                    .request(m.clone(), url)
                    .bearer_auth(ADMIN)
                    .json(&json!({}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let s = r.status();
                        let body = r.text().await.unwrap_or_default();
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {s} {body}");
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {e}");
                        }
                    }
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        n.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        t0.elapsed(),
    )
}

/// The calls the control plane holds: URI → (state, agent).
fn calls_of(control: &ControlPlane) -> HashMap<String, (String, Option<String>)> {
    control.read(|core, now| {
        core.list_calls(&Principal::Admin, now)
            .into_iter()
            .map(|v| (v.call_uri.to_string(), (v.state.clone(), v.agent.clone())))
            .collect()
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = arg("--calls", 200);
    let transfers = arg("--transfers", 1000);
    let agents = calls * 2;
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let uas_port = free_port();

    let mut text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

[[route]]
name = "queue"
match = "q"
to = ["control:queue:q"]

[control.access]
admin_tokens = ["{ADMIN}"]

[control.timers]
wrap_up_ms = 0
heartbeat_ms = 60000
event_log_capacity = 200000

[[control.queues]]
name = "q"
ring_timeout_ms = 10000
max_wait_ms = 120000
wrap_up_ms = 0
"#
    );
    for i in 0..agents {
        text.push_str(&format!(
            "\n[[control.agents]]\nid = \"a{i}\"\nname = \"Agent {i}\"\nendpoints = [{{ kind = \"sip\", uri = \"sip:a{i}@127.0.0.1:{uas_port}\" }}]\ntoken = \"bench-agent-token-{i}\"\n"
        ));
    }
    let config = Config::from_toml(&text, "bench").unwrap();
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
            Duration::from_secs(600),
            Country::Etsi,
        )),
    )
    .await
    .unwrap();
    let side = EngineCallSide::new(gw.handle());
    let control = ControlPlane::start(config.control.clone(), Arc::new(side.clone())).unwrap();
    side.attach(&control);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let app = gateway::web::control_app(control.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let sip = gw.sip_udp_addr().unwrap().to_string();

    for i in 0..agents {
        let r = http
            .post(format!("{base}/api/v1/agents/a{i}/login"))
            .bearer_auth(ADMIN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "login a{i}: {}", r.status());
    }

    // The agents' phones, then the callers.
    let uas = sipp(
        dir.path(),
        &[
            "-sn",
            "uas",
            "-p",
            &uas_port.to_string(),
            "-mp",
            &free_port().to_string(),
        ],
    );
    std::fs::write(dir.path().join("caller.xml"), CALLER).unwrap();
    let setup = Instant::now();
    let caller = sipp(
        dir.path(),
        &[
            &sip,
            "-sf",
            "caller.xml",
            "-s",
            "q",
            "-m",
            &calls.to_string(),
            "-l",
            &calls.to_string(),
            "-r",
            "100",
            "-mp",
            &free_port().to_string(),
            "-trace_err",
            "-error_file",
            "caller-errors.log",
        ],
    );
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let now = calls_of(&control);
        let connected = now.values().filter(|(s, _)| s == "connected").count();
        if connected == calls {
            break;
        }
        assert!(
            Instant::now() < until,
            "only {connected} of {calls} calls connected to an agent after 60 s ({} known)",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup = setup.elapsed();

    println!(
        "control plane on the real engine: {calls} active SIP calls (SIPp callers -> queue -> {agents} SIP agents on SIPp), loopback HTTP/1.1, 2 tokio workers"
    );
    println!("{:<62} {:>16}", "measurement", "result");
    println!(
        "{:<62} {:>16}",
        format!("set-up: {calls} calls queued, offered and answered"),
        ms(setup)
    );
    let uris: Vec<String> = calls_of(&control).into_keys().collect();

    // API reads.
    let cpu0 = cpu_self();
    let gets: Vec<Vec<_>> = (0..16)
        .map(|w| {
            uris.iter()
                .skip(w)
                .step_by(16)
                .map(|u| (reqwest::Method::GET, format!("{base}/api/v1/calls/{u}")))
                .collect()
        })
        .collect();
    let (n, e, el) = hammer(&http, Arc::new(gets), Duration::from_secs(3)).await;
    assert_eq!(e, 0, "GET /calls/{{uri}} failed");
    println!(
        "{:<62} {:>12.0} /s",
        "GET /api/v1/calls/{uri} (16 clients)",
        n as f64 / el.as_secs_f64()
    );
    let list = vec![vec![(reqwest::Method::GET, format!("{base}/api/v1/calls"))]; 8];
    let (n, e, el) = hammer(&http, Arc::new(list), Duration::from_secs(2)).await;
    assert_eq!(e, 0, "GET /calls failed");
    println!(
        "{:<62} {:>12.0} /s",
        format!("GET /api/v1/calls ({calls} calls in each reply, 8 clients)"),
        n as f64 / el.as_secs_f64()
    );
    let cpu_reads = cpu_self() - cpu0;

    // Actions and events: hold then resume, call by call (each a re-INVITE to the caller and
    // a tone on the plane), while 10 admin WebSockets count the events.
    let received = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for _ in 0..10 {
        let url = format!("ws://{addr}/api/v1/events?access_token={ADMIN}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let received = received.clone();
        subs.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    received.store(0, Ordering::Relaxed);
    let acts: Vec<Vec<_>> = (0..16)
        .map(|w| {
            uris.iter()
                .skip(w)
                .step_by(16)
                .flat_map(|u| {
                    [
                        (
                            reqwest::Method::POST,
                            format!("{base}/api/v1/calls/{u}/hold"),
                        ),
                        (
                            reqwest::Method::POST,
                            format!("{base}/api/v1/calls/{u}/resume"),
                        ),
                    ]
                })
                .collect()
        })
        .collect();
    // An even number of actions per call leaves every call resumed: stop on a resume.
    let seq0 = control.events_since(0).map(|e| e.len()).unwrap_or(0);
    let cpu0 = cpu_self();
    let (n, errors, el) = hammer(&http, Arc::new(acts), Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_acts = cpu_self() - cpu0;
    let published = control.events_since(0).map(|e| e.len()).unwrap_or(0) - seq0;
    let got = received.load(Ordering::Relaxed);
    println!(
        "{:<62} {:>12.0} /s",
        "POST hold / resume (16 clients, re-INVITE each)",
        n as f64 / el.as_secs_f64()
    );
    println!("{:<62} {:>16}", "  refused or failed requests", errors);
    println!(
        "{:<62} {:>12.0} /s",
        "events published",
        published as f64 / el.as_secs_f64()
    );
    println!(
        "{:<62} {:>12.0} /s",
        "events delivered (10 WebSocket subscribers)",
        got as f64 / el.as_secs_f64()
    );
    assert!(
        got >= (published as u64) * 10,
        "a subscriber missed events: {got} < 10 x {published}"
    );
    for s in subs {
        s.abort();
    }
    // Every call off hold before the transfers.
    for u in &uris {
        let _ = http
            .post(format!("{base}/api/v1/calls/{u}/resume"))
            .bearer_auth(ADMIN)
            .json(&json!({}))
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Transfers: each call in turn to the agent idle longest.
    let now = calls_of(&control);
    let busy: HashSet<String> = now.values().filter_map(|(_, a)| a.clone()).collect();
    let mut idle: VecDeque<String> = (0..agents)
        .map(|i| format!("a{i}"))
        .filter(|a| !busy.contains(a))
        .collect();
    let mut holder: HashMap<String, String> = now
        .iter()
        .filter_map(|(u, (_, a))| Some((u.clone(), a.clone()?)))
        .collect();
    let url = format!("ws://{addr}/api/v1/events?access_token={ADMIN}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut lat = Vec::with_capacity(transfers);
    let cpu0 = cpu_self();
    let t_all = Instant::now();
    for k in 0..transfers {
        let uri = &uris[k % uris.len()];
        let to = idle.pop_front().expect("an idle agent");
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/api/v1/calls/{uri}/transfer"))
            .bearer_auth(ADMIN)
            .json(&json!({ "target": { "agent": to }, "kind": "blind" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("transfer.connected within 10 s")
                .unwrap()
                .unwrap();
            if let Ok(text) = m.to_text() {
                let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                if v["call_uri"] != uri.as_str() {
                    continue;
                }
                if v["type"] == "transfer.connected" {
                    break;
                }
                if v["type"] == "transfer.failed" {
                    panic!("transfer {k} failed: {v}");
                }
            }
        }
        lat.push(t0.elapsed());
        if let Some(from) = holder.insert(uri.clone(), to) {
            idle.push_back(from);
        }
    }
    let total = t_all.elapsed();
    let cpu_transfers = cpu_self() - cpu0;
    lat.sort();
    println!(
        "{:<62} {:>16}",
        format!("transfer request -> transfer.connected, p50 ({transfers})"),
        ms(pct(&lat, 0.50))
    );
    println!(
        "{:<62} {:>16}",
        "transfer request -> transfer.connected, p99 (target 20 ms)",
        ms(pct(&lat, 0.99))
    );
    println!(
        "{:<62} {:>16}",
        "transfer request -> transfer.connected, max",
        ms(*lat.last().unwrap())
    );
    println!(
        "{:<62} {:>12.0} /s",
        "sequential transfers",
        transfers as f64 / total.as_secs_f64()
    );
    println!(
        "{:<62} {:>13.0} µs",
        "gateway CPU per transfer (engine + SIP + control + HTTP)",
        cpu_transfers / transfers as f64 * 1e6
    );
    println!(
        "{:<62} {:>13.1} s",
        "gateway CPU during the read and action phases",
        cpu_reads + cpu_acts
    );

    // Hang every call up through the API and check nothing is left.
    for u in &uris {
        let r = http
            .post(format!("{base}/api/v1/calls/{u}/hangup"))
            .bearer_auth(ADMIN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "hangup {u}: {}", r.status());
    }
    let out = caller.wait_with_output().unwrap();
    let errors = std::fs::read_to_string(dir.path().join("caller-errors.log")).unwrap_or_default();
    if out.status.code() != Some(0) {
        let keep = std::env::temp_dir().join("control_engine-caller-errors.log");
        let _ = std::fs::write(&keep, &errors);
        eprintln!("caller SIPp errors kept in {}", keep.display());
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "caller SIPp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..200 {
        if gw.counters().idle() && side.mapped_legs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = gw.counters();
    let left = (
        c.calls.load(Ordering::Relaxed),
        c.legs.load(Ordering::Relaxed),
        c.rtp_sockets.load(Ordering::Relaxed),
        side.mapped_legs(),
        calls_of(&control).len(),
        control.read(|c, _| c.transfer_count()),
    );
    println!(
        "{:<62} {:>16}",
        "left after hang-up (calls, legs, RTP sockets, mapped, control, transfers)",
        format!("{left:?}")
    );
    assert_eq!(left, (0, 0, 0, 0, 0, 0), "something was left behind");
    let mut uas = uas;
    let _ = uas.kill();
    let _ = uas.wait();
    server.abort();
    gw.shutdown().await.unwrap();
}
