//! "Every log line of a call carries its URI", checked on the `gateway` binary as an operator
//! runs it: JSON logs (`--log-format json`, `SPANBRIDGE_LOG=info,gateway=debug`), real SIPp
//! peers (caller → gateway → callee), three calls — answered with RTP and hung up by the
//! caller, refused 486 by the callee, cancelled by the caller while it rings. Each call's URI
//! comes from its CDR, its Call-IDs (both legs) from the gateway's SIP trace, its leg ids from
//! the CDR. Every log line that names one of them must carry `uri` (as an event field, in its
//! span, or in one of its parent spans) equal to that call's URI, and each call has such lines
//! from the engine, the SIP legs and the media backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sipp")
        .join(name)
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn http_json(addr: &str, path: &str) -> serde_json::Value {
    let r = http_get(addr, path);
    let body = r.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {r}"))
}

/// Runs one SIPp (to completion); panics with its stderr unless it exits 0.
fn sipp(args: &[String]) -> std::process::Child {
    Command::new("sipp")
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

fn wait_ok(who: &str, child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{who} SIPp failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One SIPp call: a callee with `uas` (a scenario file or the built-in `uas`), then a caller
/// with `uac`, both to completion.
fn call(gw_sip: &str, uas_port: u16, uas: &str, uac: &str) {
    let mut uas_args: Vec<String> = vec![
        "-p".into(),
        uas_port.to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-rtp_echo".into(),
        "-m".into(),
        "1".into(),
    ];
    if uas == "uas" {
        uas_args.extend(["-sn".into(), "uas".into()]);
    } else {
        uas_args.extend(["-sf".into(), scenario(uas).to_str().unwrap().into()]);
    }
    let callee = sipp(&uas_args);
    std::thread::sleep(Duration::from_millis(300));
    let caller = sipp(&[
        gw_sip.to_owned(),
        "-sf".into(),
        scenario(uac).to_str().unwrap().into(),
        "-s".into(),
        "bob".into(),
        "-p".into(),
        free_port().to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        "1".into(),
    ]);
    wait_ok(&format!("caller ({uac})"), caller);
    wait_ok(&format!("callee ({uas})"), callee);
}

/// The `uri` a JSON log line carries: the event's field, else its current span's, else one of
/// its parent spans'.
fn line_uri(v: &serde_json::Value) -> Option<String> {
    if let Some(u) = v["fields"]["uri"].as_str() {
        return Some(u.to_owned());
    }
    if let Some(u) = v["span"]["uri"].as_str() {
        return Some(u.to_owned());
    }
    v["spans"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|s| s["uri"].as_str().map(str::to_owned))
}

/// Leg numbers a line names as `leg-N`.
fn legs_named(line: &str) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut rest = line;
    while let Some(i) = rest.find("leg-") {
        rest = &rest[i + 4..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            out.insert(n);
        }
    }
    out
}

#[test]
fn every_log_line_of_a_call_carries_its_uri() {
    let dir = tempfile::tempdir().unwrap();
    let cdr = dir.path().join("cdr.jsonl");
    let uas_port = free_port();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[http]
listen = "127.0.0.1:0"
[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]
[cdr]
path = "{}"
[[trunk]]
name = "callee"
address = "127.0.0.1:{uas_port}"
[[route]]
name = "bob"
match = "bob"
to = ["trunk:callee"]
"#,
            cdr.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env("SPANBRIDGE_LOG", "info,gateway=debug")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, logs) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let (mut http, mut sip) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.is_none() || sip.is_none() {
        let line = logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("listener log lines within 30 s");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if let Some(a) = v["fields"]["listen"].as_str() {
            http = Some(a.to_owned());
        }
        if let Some(a) = v["fields"]["sip_udp"].as_str() {
            sip = Some(a.to_owned());
        }
        seen.push(line);
    }
    let (http, sip) = (http.unwrap(), sip.unwrap());

    call(&sip, uas_port, "uas", "calls_uac_pcap.xml");
    call(
        &sip,
        uas_port,
        "calls_uas_busy.xml",
        "calls_uac_expect_busy.xml",
    );
    call(
        &sip,
        uas_port,
        "calls_uas_ring_cancelled.xml",
        "calls_uac_cancel.xml",
    );

    // The three CDRs (written when each call ended), then every call's legs gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cdrs: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&cdr).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(cdrs.len(), 3, "one CDR per call: {cdrs:#?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = http_get(&http, "/metrics");
        if m.contains("gateway_sip_legs_active 0") && m.contains("gateway_calls_active 0") {
            break;
        }
        assert!(Instant::now() < deadline, "legs left after the calls:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Media release lines come from the switch task right after the last leg; give the log
    // pipe a moment.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        if let Ok(l) = logs.recv_timeout(Duration::from_millis(100)) {
            seen.push(l);
        }
    }

    // What names each call: its URI, its legs, the Call-IDs of its SIP dialogs.
    struct Names {
        uri: String,
        legs: BTreeSet<u64>,
        call_ids: BTreeSet<String>,
    }
    let trace = http_json(&http, "/diag/sip/trace?since=0");
    let mut calls: Vec<Names> = cdrs
        .iter()
        .map(|c| Names {
            uri: c["call_uri"].as_str().unwrap().to_owned(),
            legs: c["legs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["leg"].as_u64().unwrap())
                .collect(),
            call_ids: BTreeSet::new(),
        })
        .collect();
    for m in trace["messages"].as_array().unwrap() {
        let (Some(id), Some(uri)) = (m["call_id"].as_str(), m["call_uri"].as_str()) else {
            continue;
        };
        if let Some(c) = calls.iter_mut().find(|c| c.uri == uri) {
            c.call_ids.insert(id.to_owned());
        }
    }
    for c in &calls {
        assert_eq!(c.legs.len(), 2, "caller and callee legs of {}", c.uri);
        assert_eq!(c.call_ids.len(), 2, "two dialogs of {}", c.uri);
    }

    let mut layers: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let mut checked = 0;
    for line in &seen {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        let named = legs_named(line);
        let mut owners = calls.iter().filter(|c| {
            line.contains(&c.uri)
                || c.call_ids.iter().any(|id| line.contains(id.as_str()))
                || !named.is_disjoint(&c.legs)
        });
        let Some(owner) = owners.next() else {
            continue;
        };
        assert!(owners.next().is_none(), "a line names two calls: {line}");
        checked += 1;
        assert_eq!(
            line_uri(&v).as_deref(),
            Some(owner.uri.as_str()),
            "a log line of call {} without its URI: {line}",
            owner.uri
        );
        let target = v["target"].as_str().unwrap_or_default();
        let layer = if target.starts_with("gateway::calls::engine") {
            "engine"
        } else if target.starts_with("gateway::calls::sip_leg") {
            "sip leg"
        } else if target.starts_with("gateway::calls::plane_media")
            || target.starts_with("gateway::media")
        {
            "media"
        } else {
            "other"
        };
        layers.entry(owner.uri.clone()).or_default().insert(layer);
    }
    // Lines in a call's span that name nothing of it count for it too (e.g. "routed").
    for line in &seen {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(u) = line_uri(&v) {
            assert!(
                calls.iter().any(|c| c.uri == u),
                "a line carries the URI of no call: {line}"
            );
        }
    }
    assert!(checked > 0);
    for c in &calls {
        let got = layers.get(&c.uri).cloned().unwrap_or_default();
        for want in ["engine", "sip leg", "media"] {
            assert!(
                got.contains(want),
                "call {}: no {want} line naming it (layers seen: {got:?})\n{}",
                c.uri,
                seen.join("\n")
            );
        }
    }
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
        assert!(Instant::now() < deadline, "gateway did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}
