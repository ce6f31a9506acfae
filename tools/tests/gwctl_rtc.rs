//! `gwctl calls` on a live WebRTC call: a real aiortc peer (Debian's python3-aiortc, through
//! gateway/tests/peers/aiortc_peer.py) POSTs its offer to the gateway's WHIP route and talks to
//! the built-in echo service; `gwctl calls` shows the WebRTC leg's ICE state and selected
//! candidate pair, DTLS state and role, SRTP profile, codec, RTT and loss, read from the leg
//! itself. Fails (not skips) when aiortc is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::web::{WebState, router_with};
use serde_json::{Value, json};

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

struct Aiortc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Aiortc {
    fn start(wav: &std::path::Path) -> Aiortc {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/peers/aiortc_peer.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--wav", wav.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiortc (apt-get install python3-aiortc)");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut a = Aiortc { child, lines: rx };
        assert_eq!(a.recv()["type"], "ready", "aiortc did not start");
        a
    }

    fn recv(&mut self) -> Value {
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("aiortc: no reply in 20 s");
        serde_json::from_str(&l).unwrap()
    }

    fn request(&mut self, cmd: Value) -> Value {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let r = self.recv();
        assert_ne!(r["type"], "error", "aiortc: {cmd} -> {r}");
        r
    }
}

impl Drop for Aiortc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP POST of an SDP body; returns (status, headers, body).
fn post_sdp(addr: &str, path: &str, sdp: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gwctl_calls_shows_ice_dtls_srtp_codec_rtt_and_loss_of_a_live_webrtc_leg() {
    tokio::time::timeout(Duration::from_secs(45), run())
        .await
        .expect("within 45 s");
}

async fn run() {
    let text = "[http]\nlisten = \"127.0.0.1:0\"\n[sip]\nudp = \"127.0.0.1:0\"\n\
        [rtc]\ncodecs = [\"pcmu\"]\n\
        [[route]]\nname = \"echo\"\nmatch = \"echo\"\nto = [\"service:echo\"]\n";
    let config = Config::from_toml(text, "test").unwrap();
    let plane = MediaPlane::start(PlaneConfig {
        workers: 1,
        ..PlaneConfig::default()
    })
    .unwrap();
    let mut gw = GatewayServer::start(
        ServerOptions {
            config: config.clone(),
            timers: None,
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap().to_string();
    let app = router_with(WebState {
        switch: Some(gw.handle()),
        ..Default::default()
    })
    .merge(gateway::rtc::http::router(rtc.handle()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("tone-8k.wav");
    let tone: Vec<i16> = (0..8000 * 4)
        .map(|i| {
            (8000.0 * (f64::from(i) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin()) as i16
        })
        .collect();
    std::fs::write(&wav, codecs::wav::write_pcm16(8000, &tone)).unwrap();

    let h = http.clone();
    let peer = tokio::task::spawn_blocking(move || {
        let mut a = Aiortc::start(&wav);
        let offer = a.request(json!({"cmd": "offer", "codec": "PCMU"}));
        let (status, head, answer) = post_sdp(
            &h,
            "/api/v1/rtc/whip?to=echo&caller=web",
            offer["sdp"].as_str().unwrap(),
        );
        assert_eq!(status, 201, "WHIP: {head}\n{answer}");
        a.request(json!({"cmd": "answer", "sdp": answer}));
        a.request(json!({"cmd": "wait-connected"}));
        a
    })
    .await
    .unwrap();
    // Let media and a few STUN consent checks (RTT) go by.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let h = http.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || gwctl(&["calls", "--gateway", &h]))
        .await
        .unwrap();
    eprintln!("{out}");
    assert!(ok, "gwctl calls failed: {err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("webrtc:"))
        .unwrap_or_else(|| panic!("no WebRTC transport line: {out}"));
    assert!(line.contains("ice connected"), "ICE state: {line}");
    assert!(
        line.contains("pair 127.0.0.1:") && line.contains("host <-> 127.0.0.1:"),
        "selected pair: {line}"
    );
    assert!(line.contains("dtls connected (server)"), "DTLS: {line}");
    assert!(line.contains("srtp SRTP_"), "SRTP profile: {line}");
    assert!(line.contains("codec PCMU"), "codec: {line}");
    assert!(line.contains(" ms  loss "), "RTT: {line}");
    assert!(line.contains("loss 0.00 %"), "loss on loopback: {line}");
    drop(peer);
    server.abort();
    rtc.shutdown().await;
    gw.shutdown().await.unwrap();
}
