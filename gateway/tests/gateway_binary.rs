//! The `gateway` binary as an operator starts it: it logs its listeners, answers `GET /healthz`,
//! stops cleanly on SIGINT, and refuses a bad configuration with a message that names the line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn starts_logs_its_listener_answers_healthz_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, "[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no listener log line within 20 s");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if let Some(listen) = v["fields"]["listen"].as_str() {
            break listen.to_string();
        }
    };
    let reply = http_get(&addr, "/healthz");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"status\":\"ok\""), "{reply}");
    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not stop within 10 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_configuration_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[http]\nlisten = \"127.0.0.1:0\"\nlisen = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen") && err.contains("line 3"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--config",
            dir.path().join("missing.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn the_printed_default_configuration_is_the_one_that_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = gateway::config::Config::from_toml(&text, "printed default").unwrap();
    assert_eq!(parsed, gateway::config::Config::embedded_default().unwrap());
    assert!(
        parsed.http.listen.ip().is_loopback(),
        "the default listens on loopback only"
    );
}

#[test]
fn the_access_listener_publishes_the_pages_and_the_api_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        "[http]\nlisten = \"127.0.0.1:0\"\n\
         [control.access]\nlisten = \"127.0.0.1:0\"\napi_on_core = false\n\
         [[control.agents]]\nid = \"alice\"\nname = \"Alice\"\nendpoints = [{ kind = \"browser\" }]\ntoken = \"alice-binary-token\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut core, mut access) = (None, None);
    while core.is_none() || access.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no listener log lines within 20 s");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if let Some(listen) = v["fields"]["listen"].as_str() {
            if v["fields"]["tls"].is_null() {
                core = Some(listen.to_string());
            } else {
                access = Some(listen.to_string());
            }
        }
    }
    let (core, access) = (core.unwrap(), access.unwrap());
    assert!(http_get(&access, "/agent").starts_with("HTTP/1.1 200"));
    assert!(http_get(&access, "/api/v1/me").starts_with("HTTP/1.1 401"));
    assert!(
        http_get(&core, "/api/v1/me").starts_with("HTTP/1.1 404"),
        "api_on_core = false keeps the API off the core listener"
    );
    assert!(http_get(&core, "/healthz").starts_with("HTTP/1.1 200"));
    child.kill().unwrap();
    child.wait().unwrap();

    // A non-loopback access listener without TLS is refused at start, naming the fix.
    std::fs::write(
        &config,
        "[http]\nlisten = \"127.0.0.1:0\"\n[control.access]\nlisten = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_cert"));
}

/// Starts the binary on `config_text`, returns the child, its log lines and the addresses it
/// logged (HTTP listen, SIP UDP).
struct Running {
    child: std::process::Child,
    logs: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(config_text: &str) -> (Running, String, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gw.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut r = Running {
            child,
            logs: rx,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut http, mut sip) = (None, None);
        while http.is_none() || sip.is_none() {
            let line = r
                .logs
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("listener log lines within 20 s");
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            if let Some(a) = v["fields"]["listen"].as_str() {
                http = Some(a.to_owned());
            }
            if let Some(a) = v["fields"]["sip_udp"].as_str() {
                sip = Some(a.to_owned());
            }
            r.seen.push(line);
        }
        (r, http.unwrap(), sip.unwrap(), dir)
    }

    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(Instant::now() < deadline, "gateway did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn sip_exchange(sip: &str, request: &str, want: &[u16]) -> Vec<String> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = sock.local_addr().unwrap();
    let text = request
        .replace("{me}", &me.to_string())
        .replace("{gw}", sip);
    sock.send_to(text.as_bytes(), sip).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want.len() {
        let (n, _) = sock.recv_from(&mut buf).expect("a SIP response within 5 s");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        got.push(msg);
    }
    for (m, w) in got.iter().zip(want) {
        assert!(
            m.starts_with(&format!("SIP/2.0 {w}")),
            "expected {w}, got {m}"
        );
    }
    got
}

/// The binary with SIP: OPTIONS answered, a number for the TDM span group refused 503 with
/// Q.850 cause 34 (and the start-up log says why), a call to an unreachable trunk failed, and
/// `/metrics` and `/diag/calls` telling the story.
#[test]
fn sip_gateway_answers_options_refuses_tdm_numbers_and_reports_metrics() {
    let config = r#"
[http]
listen = "127.0.0.1:0"
[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]
[[trunk]]
name = "nowhere"
address = "127.0.0.1:9"
[[span_group]]
name = "e1"
spans = [1]
[[route]]
name = "tdm"
match = "9*"
to = ["span_group:e1"]
[[route]]
name = "rest"
match = "*"
to = ["trunk:nowhere"]
"#;
    let (mut gw, http, sip, _dir) = Running::start(config);
    let options = "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKo1\r\nMax-Forwards: 70\r\nFrom: <sip:t@{me}>;tag=1\r\nTo: <sip:{gw}>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let r = sip_exchange(&sip, options, &[200]);
    assert!(r[0].contains("Allow: INVITE"), "{}", r[0]);
    let sdp = "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:90123@{{gw}} SIP/2.0\r\nVia: SIP/2.0/UDP {{me}};branch=z9hG4bKi1\r\nMax-Forwards: 70\r\nFrom: <sip:t@{{me}}>;tag=1\r\nTo: <sip:90123@{{gw}}>\r\nCall-ID: i1\r\nCSeq: 1 INVITE\r\nContact: <sip:t@{{me}}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let r = sip_exchange(&sip, &invite, &[100, 503]);
    assert!(r[1].contains("Reason: Q.850;cause=34"), "{}", r[1]);
    // The start-up log said TDM calls are refused, and why.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(l) = gw.logs.recv_timeout(Duration::from_millis(100)) {
            gw.seen.push(l);
        }
    }
    assert!(
        gw.seen
            .iter()
            .any(|l| l.contains("TDM legs are not part of this build") && l.contains("503")),
        "{:#?}",
        gw.seen
    );
    // Every log line of the call carries its URI.
    let call_lines: Vec<&String> = gw.seen.iter().filter(|l| l.contains("\"call\"")).collect();
    assert!(!call_lines.is_empty());
    assert!(
        call_lines.iter().all(|l| l.contains("urn:uuid:")),
        "{call_lines:#?}"
    );
    let metrics = http_get(&http, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for want in [
        "gateway_calls_total 1",
        "gateway_calls_failed_total 1",
        "gateway_calls_active 0",
        "gateway_rtp_sockets_open 0",
        "gateway_trunk_calls_out_total{trunk=\"nowhere\"} 0",
        "gateway_calls_per_second",
        "gateway_rtp_jitter_ms{stat=\"max\"}",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }
    let calls = http_get(&http, "/diag/calls");
    assert!(calls.contains("\"calls\":[]"), "{calls}");
    let trace = http_get(&http, "/diag/sip/trace?since=0");
    assert!(trace.contains("INVITE sip:90123@"), "{trace}");
    assert!(trace.contains("SIP/2.0 503"), "{trace}");
    gw.stop();
}

#[test]
fn the_default_configuration_offers_the_services_and_routes_9_to_tdm() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--print-default-config")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "udp = \"127.0.0.1:5060\"",
        "tcp = \"127.0.0.1:5060\"",
        "listen = \"127.0.0.1:8080\"",
        "service:echo",
        "service:milliwatt",
        "match = \"9*\"",
        "span_group:e1",
        "trunk:pbx",
    ] {
        assert!(text.contains(want), "{want}");
    }
}
