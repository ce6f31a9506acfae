//! `gwctl calls`, `gwctl sip trace --ladder` and `gwctl sip ping` against a gateway core running
//! in this process, with a real call between two SIPp instances going through it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::web::{WebState, router_with};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn gwctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gwctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/tests/data/sipp")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_trace_and_ping_show_a_live_call() {
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sip]\nudp = \"127.0.0.1:0\"\ntrusted = [\"127.0.0.0/8\"]\n\
         [[trunk]]\nname = \"callee\"\naddress = \"{callee}\"\n\
         [[route]]\nname = \"bob\"\nmatch = \"bob\"\nto = [\"trunk:callee\"]\n"
    );
    let config = Config::from_toml(&text, "test").unwrap();
    let gw = GatewayServer::start(
        ServerOptions {
            config,
            timers: None,
            seed: None,
            external: Vec::new(),
        },
        Box::new(plane_media()),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap().to_string();
    let app = router_with(WebState {
        switch: Some(gw.handle()),
        ..Default::default()
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let sip = gw.sip_udp_addr().unwrap().to_string();

    // No calls yet.
    let h = http.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || gwctl(&["calls", "--gateway", &h]))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("no live calls"), "{out}");

    // A ping to the gateway itself.
    let target = format!("sip:{sip}");
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || gwctl(&["sip", "ping", &target, "--count", "2"]))
            .await
            .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.matches("200 OK").count() == 2 && out.contains("rtt"),
        "{out}"
    );
    assert!(
        out.contains("spanbridge"),
        "the Server header is shown: {out}"
    );
    // A ping to nobody fails after the timeout.
    let (ok, out, _) = tokio::task::spawn_blocking(move || {
        gwctl(&[
            "sip",
            "ping",
            &format!("sip:127.0.0.1:{}", free_port()),
            "--timeout",
            "1",
        ])
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("no answer"), "{out}");

    // A call that lasts 4 s.
    let mut uas = Command::new("sipp")
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-sn",
            "uas",
            "-p",
            &uas_port.to_string(),
        ])
        .args([
            "-mp",
            &free_port().to_string(),
            "-rtp_echo",
            "-m",
            "1",
            "-timeout",
            "20",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut uac = Command::new("sipp")
        .args([&sip, "-i", "127.0.0.1", "-nostdin", "-sf"])
        .arg(scenario("calls_uac_audio_hold.xml"))
        .args([
            "-s",
            "bob",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
        ])
        .args(["-m", "1", "-d", "4000", "-timeout", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let h = http.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || gwctl(&["calls", "--gateway", &h]))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("urn:uuid:") && out.contains("answered"),
        "{out}"
    );
    assert!(
        out.contains("sipp -> bob") && out.contains("trunk:callee"),
        "{out}"
    );
    assert!(out.contains("PCMA") || out.contains("PCMU"), "{out}");
    let uri = out
        .split_whitespace()
        .find(|w| w.starts_with("urn:uuid:"))
        .unwrap()
        .to_owned();
    let h = http.clone();
    let u = uri.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        gwctl(&["sip", "trace", "--gateway", &h, "--call", &u, "--ladder"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("gateway"), "{out}");
    assert!(out.contains("INVITE +SDP"), "{out}");
    assert!(out.contains("200 OK (INVITE) +SDP"), "{out}");
    assert!(out.contains("ACK"), "{out}");
    assert!(lines.len() >= 8, "both legs' exchanges: {out}");
    let h = http.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || {
        gwctl(&["sip", "trace", "--gateway", &h, "--call", &uri])
    })
    .await
    .unwrap();
    assert!(ok && out.contains("Call-ID:"), "{out}");
    let uac_ok = tokio::task::spawn_blocking(move || uac.wait().unwrap().success())
        .await
        .unwrap();
    let uas_ok = tokio::task::spawn_blocking(move || uas.wait().unwrap().success())
        .await
        .unwrap();
    assert!(uac_ok && uas_ok);
    // A gateway that is not there: a clear error.
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        gwctl(&["calls", "--gateway", &format!("127.0.0.1:{}", free_port())])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("cannot reach the gateway"), "{err}");
    server.abort();
    gw.shutdown().await.unwrap();
}

/// The real media plane, one worker (the machines are small and shared).
fn plane_media() -> PlaneMedia {
    let plane = MediaPlane::start(PlaneConfig {
        workers: 1,
        ..PlaneConfig::default()
    })
    .unwrap();
    PlaneMedia::new(plane, Duration::from_secs(30), Country::Etsi)
}
