//! The agent, supervisor and caller pages in real headless Chromium (playwright-core, pinned,
//! installed under target/ at first run), against the API with the in-process fake call side:
//! a web caller calls, agent A's page pops with the call's URI, A answers in the page (a real
//! RTCPeerConnection offer, POSTed WHIP-style), clicks transfer to B, B's page pops with the
//! same URI and the history, B answers; B consults A and completes; the caller hangs up.
//!
//! Needs `node`, `npm` and `/usr/lib/chromium/chromium`; fails (does not skip) without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gateway::control::Party;
use gateway::control::api::ControlPlane;
use gateway::control::config::{
    AccessConfig, AgentConfig, ClickToCallDestination, Comfort, ControlConfig, Endpoint,
    QueueConfig,
};
use gateway::control::fake::{FakeCallSide, FakeHandle};

const PLAYWRIGHT: &str = "playwright-core@1.65.1";

/// Installs the pinned playwright-core once under target/ (no browser download: we use the
/// Debian Chromium).
fn playwright_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pw-control");
    let marker = dir.join("node_modules/playwright-core/package.json");
    if !marker.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(&dir)
            .arg(PLAYWRIGHT)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status()
            .expect("npm is needed for the page tests (apt-get install npm)");
        assert!(st.success(), "npm install {PLAYWRIGHT} failed");
    }
    assert!(
        Path::new("/usr/lib/chromium/chromium").exists(),
        "Chromium is needed for the page tests (apt-get install chromium)"
    );
    dir
}

fn config() -> ControlConfig {
    let agent = |id: &str| AgentConfig {
        id: id.into(),
        name: format!("Agent {id}"),
        skills: vec!["support".into()],
        endpoints: vec![Endpoint::Browser],
        token: format!("{id}-page-token"),
    };
    let mut c = ControlConfig {
        access: AccessConfig {
            supervisor_tokens: vec!["supervisor-page-token".into()],
            ..AccessConfig::default()
        },
        agents: vec![agent("alice"), agent("bob")],
        queues: vec![QueueConfig {
            name: "support".into(),
            skill: Some("support".into()),
            ring_timeout_ms: 20_000,
            max_wait_ms: 60_000,
            overflow: None,
            wrap_up_ms: Some(0),
            comfort: Comfort::Tone,
            away_on_no_answer: false,
        }],
        click_to_call: vec![ClickToCallDestination {
            id: "support".into(),
            label: "Support".into(),
            target: Party::Queue("support".into()),
        }],
        ..ControlConfig::default()
    };
    c.timers.heartbeat_ms = 1_000;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_pop_transfer_and_pop_again_with_the_same_uri_in_chromium() {
    let pw = tokio::task::spawn_blocking(playwright_dir).await.unwrap();
    let fake = FakeCallSide::new();
    let plane = ControlPlane::start(config(), Arc::new(FakeHandle(fake.clone()))).unwrap();
    fake.attach(&plane);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(axum::serve(listener, gateway::web::app(plane.clone())).into_future());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pages/agent_transfer.cjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .env("PW_DIR", &pw)
        .env("ALICE_TOKEN", "alice-page-token")
        .env("BOB_TOKEN", "bob-page-token")
        .env("SUPERVISOR_TOKEN", "supervisor-page-token")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the page tests");
    let mut out = child.stdout.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the browser run took over 60 s")
        .unwrap();
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut out, &mut text)
        .await
        .unwrap();
    println!("{text}");
    let result: serde_json::Value = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .expect("the script printed no RESULT");
    assert!(
        status.success() && result["ok"] == true,
        "browser run failed: {result}"
    );
    assert!(
        result["call_uri"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    // The fake's answer mirrors Chromium's offer, so setRemoteDescription succeeded.
    assert_ne!(result["a_softphone"], "failed", "{result}");
    // Everything the call held is released.
    for _ in 0..100 {
        if fake.live_legs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = plane.read(|c, _| (c.call_count(), c.leg_count(), c.transfer_count()));
    assert_eq!(
        (left, fake.live_legs(), plane.session_count()),
        ((0, 0, 0), 0, 0)
    );
    server.abort();
}
