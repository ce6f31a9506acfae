//! Control-plane benchmark: API and event throughput with 200 active calls, and the latency
//! from a transfer request (HTTP POST) to `transfer.connected` (WebSocket) over 1,000
//! transfers to auto-answering targets — all over real HTTP/WebSocket on loopback, against the
//! in-process fake call side (rerun against the engine when it lands).
//!
//! `cargo bench -p gateway --bench control_api` (bounded: about 15 s). Prints a table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gateway::control::api::ControlPlane;
use gateway::control::config::{
    AccessConfig, AgentConfig, Comfort, ControlConfig, Endpoint, QueueConfig,
};
use gateway::control::fake::{FakeCallSide, FakeHandle};
use gateway::control::{CallUri, LegKind, Party};
use serde_json::{Value, json};

const CALLS: usize = 200;
const TRANSFERS: usize = 1_000;
const ADMIN: &str = "bench-admin-token";

fn config() -> ControlConfig {
    let mut agents = Vec::new();
    for i in 0..CALLS * 2 {
        agents.push(AgentConfig {
            id: format!("a{i}"),
            name: format!("Agent {i}"),
            skills: vec![],
            endpoints: vec![Endpoint::Sip {
                uri: format!("sip:a{i}@127.0.0.1"),
            }],
            token: format!("bench-agent-token-{i}"),
        });
    }
    let mut c = ControlConfig {
        access: AccessConfig {
            admin_tokens: vec![ADMIN.into()],
            ..AccessConfig::default()
        },
        agents,
        queues: vec![QueueConfig {
            name: "q".into(),
            skill: None,
            ring_timeout_ms: 10_000,
            max_wait_ms: 60_000,
            overflow: None,
            wrap_up_ms: Some(0),
            comfort: Comfort::Tone,
            away_on_no_answer: false,
        }],
        ..ControlConfig::default()
    };
    c.timers.wrap_up_ms = 0;
    c.timers.event_log_capacity = 100_000;
    c.timers.heartbeat_ms = 60_000;
    c
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

async fn hammer(
    http: &reqwest::Client,
    urls: Arc<Vec<(reqwest::Method, String, String)>>,
    workers: usize,
    dur: Duration,
) -> (u64, Duration) {
    let n = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let http = http.clone();
        let urls = urls.clone();
        let n = n.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while t0.elapsed() < dur {
                let (m, url, token) = &urls[i % urls.len()];
                let r = http
                    .request(m.clone(), url)
                    .bearer_auth(token)
                    .json(&json!({}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += workers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "requests failed");
    (n.load(Ordering::Relaxed), t0.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let fake = FakeCallSide::new();
    let plane = ControlPlane::start(config(), Arc::new(FakeHandle(fake.clone()))).unwrap();
    fake.attach(&plane);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(axum::serve(listener, gateway::web::app(plane.clone())).into_future());
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // Log everyone in and set up 200 calls, each with agent a(2i); a(2i+1) is its partner.
    for i in 0..CALLS * 2 {
        let r = http
            .post(format!("{base}/api/v1/agents/a{i}/login"))
            .bearer_auth(ADMIN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let mut calls: Vec<(CallUri, usize)> = Vec::new();
    for i in 0..CALLS {
        let (uri, _) = fake
            .place_call(
                Party::Agent(format!("a{}", 2 * i)),
                &format!("+1555{i:07}"),
                LegKind::Sip,
            )
            .unwrap();
        calls.push((uri, 2 * i));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let connected = plane.read(|c, now| {
        c.list_calls(&gateway::control::core::Principal::Admin, now)
            .iter()
            .filter(|v| v.state == "connected")
            .count()
    });
    assert_eq!(connected, CALLS, "all calls connected before measuring");

    println!(
        "control plane benchmark ({CALLS} active calls, fake call side, loopback HTTP/1.1, 2 tokio workers)"
    );
    println!("{:<58} {:>14}", "measurement", "result");

    // API: GET one call by URI (agent token), 16 concurrent clients, 3 s.
    let gets: Vec<_> = calls
        .iter()
        .map(|(u, a)| {
            (
                reqwest::Method::GET,
                format!("{base}/api/v1/calls/{u}"),
                format!("bench-agent-token-{a}"),
            )
        })
        .collect();
    let (n, el) = hammer(&http, Arc::new(gets), 16, Duration::from_secs(3)).await;
    println!(
        "{:<58} {:>10.0} /s",
        "GET /calls/{uri} (agent token, 16 clients)",
        n as f64 / el.as_secs_f64()
    );

    // API: list all 200 calls (admin), 8 clients, 2 s.
    let list = vec![(
        reqwest::Method::GET,
        format!("{base}/api/v1/calls"),
        ADMIN.to_string(),
    )];
    let (n, el) = hammer(&http, Arc::new(list), 8, Duration::from_secs(2)).await;
    println!(
        "{:<58} {:>10.0} /s",
        "GET /calls (admin, 200 calls in each reply, 8 clients)",
        n as f64 / el.as_secs_f64()
    );

    // Actions + events: hold/resume on every call while 10 admin WebSockets count events.
    let mut subs = Vec::new();
    let received = Arc::new(AtomicU64::new(0));
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    received.store(0, Ordering::Relaxed);
    let mut acts = Vec::new();
    for (u, a) in &calls {
        let t = format!("bench-agent-token-{a}");
        acts.push((
            reqwest::Method::POST,
            format!("{base}/api/v1/calls/{u}/hold"),
            t.clone(),
        ));
        acts.push((
            reqwest::Method::POST,
            format!("{base}/api/v1/calls/{u}/resume"),
            t,
        ));
    }
    let seq0 = plane.events_since(0).map(|e| e.len()).unwrap_or(0);
    let (n, el) = hammer(&http, Arc::new(acts), 16, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = plane.events_since(0).map(|e| e.len()).unwrap_or(0) - seq0;
    let got = received.load(Ordering::Relaxed);
    println!(
        "{:<58} {:>10.0} /s",
        "POST hold/resume (agent tokens, 16 clients)",
        n as f64 / el.as_secs_f64()
    );
    println!(
        "{:<58} {:>10.0} /s",
        "events published",
        published as f64 / el.as_secs_f64()
    );
    println!(
        "{:<58} {:>10.0} /s",
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

    // Transfer latency: POST /transfer -> transfer.connected on an admin WebSocket; targets are
    // SIP agents whose phones auto-answer at once. Calls ping-pong between their two agents.
    let url = format!("ws://{addr}/api/v1/events?access_token={ADMIN}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut holder: Vec<usize> = calls.iter().map(|c| c.1).collect();
    let mut lat = Vec::with_capacity(TRANSFERS);
    let t_all = Instant::now();
    for k in 0..TRANSFERS {
        let i = k % CALLS;
        let (uri, _) = &calls[i];
        let from = holder[i];
        let to = from ^ 1;
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/api/v1/calls/{uri}/transfer"))
            .bearer_auth(format!("bench-agent-token-{from}"))
            .json(&json!({ "target": { "agent": format!("a{to}") }, "kind": "blind" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Ok(text) = m.to_text() {
                let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                if v["type"] == "transfer.connected" && v["call_uri"] == uri.to_string() {
                    break;
                }
                if v["type"] == "transfer.failed" && v["call_uri"] == uri.to_string() {
                    panic!("transfer failed: {v}");
                }
            }
        }
        lat.push(t0.elapsed());
        holder[i] = to;
    }
    let total = t_all.elapsed();
    lat.sort();
    println!(
        "{:<58} {:>14}",
        format!("transfer request -> transfer.connected, p50 ({TRANSFERS})"),
        ms(pct(&lat, 0.50))
    );
    println!(
        "{:<58} {:>14}",
        "transfer request -> transfer.connected, p99 (target 20 ms)",
        ms(pct(&lat, 0.99))
    );
    println!(
        "{:<58} {:>14}",
        "transfer request -> transfer.connected, max",
        ms(*lat.last().unwrap())
    );
    println!(
        "{:<58} {:>10.0} /s",
        "sequential transfers",
        TRANSFERS as f64 / total.as_secs_f64()
    );
    let left = plane.read(|c, _| c.transfer_count());
    assert_eq!(left, 0, "transfers left behind");
    server.abort();
}
