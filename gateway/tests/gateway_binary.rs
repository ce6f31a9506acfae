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
