//! Real-peer test: SIPp (Debian package `sip-tester`) against the gateway's UDP UAS on
//! 127.0.0.1. Each scenario runs a bounded number of calls; the test asserts SIPp's exit code
//! and its own count of successful and failed calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;

use gateway::sip::uas::UdpUas;

const CALLS: u32 = 50;

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sipp")
        .join(name)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIPp's cumulative (C) counter `name` from the last row of its `-trace_stat` CSV.
fn stat(csv: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap().split(';').collect();
    let idx = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    last[idx].trim().parse().unwrap()
}

struct SippRun {
    exit_code: Option<i32>,
    successful: u64,
    failed: u64,
    stderr: String,
}

fn run_sipp(target: std::net::SocketAddr, scenario_file: &str, extra: &[&str]) -> SippRun {
    if Command::new("sipp").arg("-v").output().is_err() {
        panic!(
            "sipp not found: install the Debian package `sip-tester` (apt-get install -y sip-tester)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("stats.csv");
    let out = Command::new("sipp")
        .current_dir(dir.path())
        .arg(target.to_string())
        .args(["-sf", scenario(scenario_file).to_str().unwrap()])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-m", &CALLS.to_string(), "-r", "100", "-l", "20"])
        .args(["-timeout", "30", "-timeout_error", "-nostdin"])
        .args(["-trace_stat", "-stf", csv.to_str().unwrap(), "-fd", "1"])
        .args(extra)
        .output()
        .expect("run sipp");
    SippRun {
        exit_code: out.status.code(),
        successful: stat(&csv, "SuccessfulCall(C)"),
        failed: stat(&csv, "FailedCall(C)"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn check(scenario_file: &'static str) -> UdpUas {
    check_with(scenario_file, &[]).await
}

async fn check_with(scenario_file: &'static str, extra: &'static [&'static str]) -> UdpUas {
    let uas = UdpUas::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let target = uas.local_addr();
    let run = tokio::task::spawn_blocking(move || run_sipp(target, scenario_file, extra))
        .await
        .unwrap();
    assert_eq!(
        run.exit_code,
        Some(0),
        "{scenario_file}: sipp failed: {}",
        run.stderr
    );
    assert_eq!(run.successful, u64::from(CALLS), "{scenario_file}");
    assert_eq!(run.failed, 0, "{scenario_file}");
    uas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_get_200_with_allow() {
    let uas = check("options_uac.xml").await;
    assert!(
        uas.counters()
            .received
            .load(std::sync::atomic::Ordering::Relaxed)
            >= u64::from(CALLS)
    );
    uas.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_unknown_method_gets_501_with_allow() {
    check("unknown_method_uac.xml")
        .await
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_malformed_request_gets_400() {
    let uas = check("malformed_uac.xml").await;
    assert!(
        uas.counters()
            .malformed_requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= u64::from(CALLS)
    );
    uas.shutdown().await.unwrap();
}

/// SIPp drops 10 % of what it sends and receives (`-lost 10`; up to 10 retransmissions so a call
/// fails only if 11 attempts in a row are lost): it retransmits OPTIONS, and our
/// server transactions must replay the same 200 rather than hand the TU a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_survive_10_percent_loss_by_retransmission() {
    let uas = check_with(
        "options_uac.xml",
        &["-lost", "10", "-max_non_invite_retrans", "10"],
    )
    .await;
    let received = uas
        .counters()
        .received
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        received > u64::from(CALLS),
        "SIPp retransmitted ({received} datagrams for {CALLS} calls)"
    );
    let answered = uas
        .counters()
        .answered
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        answered,
        u64::from(CALLS),
        "each OPTIONS reached the TU exactly once"
    );
    uas.shutdown().await.unwrap();
}

async fn registrar() -> UdpUas {
    use gateway::sip::auth::{DigestAlgorithm, DigestServer, DigestServerConfig};
    use gateway::sip::transaction::TimerConfig;
    use gateway::sip::uas::OptionsUas;
    let mut digest = DigestServer::new(
        DigestServerConfig {
            realm: "spanbridge".into(),
            // SIPp 3.6 implements MD5 digest only.
            algorithms: vec![DigestAlgorithm::Md5],
            ..DigestServerConfig::default()
        },
        [42; 32],
    );
    digest.set_user("alice", "s3cret");
    UdpUas::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        OptionsUas::with_registrar(TimerConfig::default(), digest),
    )
    .await
    .unwrap()
}

/// SIPp's `[authentication]` answers our 401 challenge (MD5, qop=auth) and gets 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_register_answers_our_digest_challenge() {
    let uas = registrar().await;
    let target = uas.local_addr();
    let run = tokio::task::spawn_blocking(move || {
        run_sipp(
            target,
            "register_auth_uac.xml",
            &["-au", "alice", "-ap", "s3cret"],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.exit_code, Some(0), "sipp failed: {}", run.stderr);
    assert_eq!(run.successful, u64::from(CALLS));
    assert_eq!(run.failed, 0);
    let authorized = uas
        .counters()
        .authorized
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(authorized, u64::from(CALLS));
    uas.shutdown().await.unwrap();
}

/// The same scenario with a wrong password: every REGISTER is challenged again, none accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_register_with_wrong_password_is_refused() {
    let uas = registrar().await;
    let target = uas.local_addr();
    let run = tokio::task::spawn_blocking(move || {
        run_sipp(
            target,
            "register_auth_uac.xml",
            &["-au", "alice", "-ap", "guess"],
        )
    })
    .await
    .unwrap();
    assert_ne!(run.exit_code, Some(0));
    assert_eq!(run.successful, 0);
    assert_eq!(run.failed, u64::from(CALLS));
    let authorized = uas
        .counters()
        .authorized
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(authorized, 0);
    uas.shutdown().await.unwrap();
}

async fn tcp_uas(uas: gateway::sip::uas::OptionsUas) -> UdpUas {
    use gateway::sip::transport::TransportConfig;
    UdpUas::bind_transport(
        TransportConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            ..TransportConfig::default()
        },
        uas,
    )
    .await
    .unwrap()
}

/// SIPp over one TCP connection (`-t t1`): 50 OPTIONS framed by Content-Length on the stream,
/// every 200 returned on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_over_tcp_get_200_on_the_same_connection() {
    let uas = tcp_uas(gateway::sip::uas::OptionsUas::default()).await;
    let target = uas.tcp_addr().unwrap();
    let run = tokio::task::spawn_blocking(move || {
        run_sipp(
            target,
            "options_uac.xml",
            &["-t", "t1", "-max_socket", "10"],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.exit_code, Some(0), "sipp failed: {}", run.stderr);
    assert_eq!(run.successful, u64::from(CALLS));
    assert_eq!(run.failed, 0);
    let c = uas.counters();
    assert_eq!(
        c.received.load(std::sync::atomic::Ordering::Relaxed),
        u64::from(CALLS)
    );
    assert_eq!(c.send_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    uas.shutdown().await.unwrap();
}

/// Digest REGISTER over TCP: the 401 and the 200 both travel back on SIPp's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_register_with_digest_over_tcp() {
    use gateway::sip::auth::{DigestAlgorithm, DigestServer, DigestServerConfig};
    use gateway::sip::transaction::TimerConfig;
    use gateway::sip::uas::OptionsUas;
    let mut digest = DigestServer::new(
        DigestServerConfig {
            algorithms: vec![DigestAlgorithm::Md5],
            ..DigestServerConfig::default()
        },
        [9; 32],
    );
    digest.set_user("alice", "s3cret");
    let uas = tcp_uas(OptionsUas::with_registrar(TimerConfig::default(), digest)).await;
    let target = uas.tcp_addr().unwrap();
    let run = tokio::task::spawn_blocking(move || {
        run_sipp(
            target,
            "register_auth_uac.xml",
            &["-t", "t1", "-au", "alice", "-ap", "s3cret"],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.exit_code, Some(0), "sipp failed: {}", run.stderr);
    assert_eq!(run.successful, u64::from(CALLS));
    assert_eq!(
        uas.counters()
            .authorized
            .load(std::sync::atomic::Ordering::Relaxed),
        u64::from(CALLS)
    );
    uas.shutdown().await.unwrap();
}

async fn check_refusals(scenario_file: &'static str) -> UdpUas {
    use gateway::sip::transaction::TimerConfig;
    use gateway::sip::uas::OptionsUas;
    use gateway::sip::validate::UasPolicy;
    let uas = UdpUas::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        OptionsUas::new(TimerConfig::default()).with_layer_policy(Some(UasPolicy::gateway())),
    )
    .await
    .unwrap();
    let target = uas.local_addr();
    let run = tokio::task::spawn_blocking(move || run_sipp(target, scenario_file, &[]))
        .await
        .unwrap();
    assert_eq!(
        run.exit_code,
        Some(0),
        "{scenario_file}: sipp failed: {}",
        run.stderr
    );
    assert_eq!(run.successful, u64::from(CALLS), "{scenario_file}");
    assert_eq!(run.failed, 0, "{scenario_file}");
    uas
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// `OPTIONS ... SIP/7.0`: 505 from the transaction layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_wrong_sip_version_gets_505() {
    let uas = check_refusals("bad_version_uac.xml").await;
    assert!(counter(&uas.counters().malformed_requests) >= u64::from(CALLS));
    assert_eq!(counter(&uas.counters().answered), 0, "the TU never saw one");
    uas.shutdown().await.unwrap();
}

/// INVITE with `Require: frobnication, 100rel`: 420 with `Unsupported: frobnication` (100rel
/// is ours), and SIPp's ACK is absorbed by the INVITE server transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_unsupported_require_gets_420_and_the_ack_is_absorbed() {
    let uas = check_refusals("require_uac.xml").await;
    let c = uas.counters();
    // Give the last ACK a moment to be counted.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(counter(&c.rejected_requests), u64::from(CALLS));
    assert_eq!(counter(&c.absorbed_acks), u64::from(CALLS));
    assert_eq!(counter(&c.answered), 0);
    uas.shutdown().await.unwrap();
}

/// INVITE with `Max-Forwards: 0`: 483.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_max_forwards_zero_gets_483() {
    let uas = check_refusals("max_forwards_uac.xml").await;
    assert_eq!(counter(&uas.counters().rejected_requests), u64::from(CALLS));
    uas.shutdown().await.unwrap();
}

/// The same request by two paths (new branch, same From tag/Call-ID/CSeq): 200 then 482.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_merged_request_gets_482() {
    let uas = check_refusals("merged_uac.xml").await;
    let c = uas.counters();
    assert_eq!(
        counter(&c.answered),
        u64::from(CALLS),
        "first copies answered"
    );
    assert_eq!(counter(&c.rejected_requests), u64::from(CALLS));
    uas.shutdown().await.unwrap();
}

/// Our client transactions against a SIPp UAS that sends three broken responses before the
/// good 200: each broken one is dropped and counted, every OPTIONS still completes with 200,
/// and no transaction is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_malformed_responses_are_dropped_counted_and_transactions_complete() {
    use gateway::sip::message::{HeaderName, Method, Request, Uri};
    use gateway::sip::transaction::{Reliability, TimerConfig, TransactionLayer, TuEvent};
    use std::time::{Duration, Instant};
    const N: u32 = 20;
    let sipp_port = free_udp_port();
    let sipp_addr: std::net::SocketAddr = format!("127.0.0.1:{sipp_port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("stats.csv");
    let mut child = std::process::Command::new("sipp")
        .current_dir(dir.path())
        .args([
            "-sf",
            scenario("malformed_responses_uas.xml").to_str().unwrap(),
        ])
        .args(["-i", "127.0.0.1", "-p", &sipp_port.to_string()])
        .args(["-m", &N.to_string(), "-timeout", "30", "-nostdin"])
        .args(["-trace_stat", "-stf", csv.to_str().unwrap(), "-fd", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sipp not found: install sip-tester");
    // Give SIPp time to bind its socket.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut completed = 0u32;
    let mut buf = vec![0u8; 65_535];
    for i in 0..N {
        let mut req = Request::new(
            Method::Options,
            Uri::parse(&format!("sip:ping@{sipp_addr}")).unwrap(),
        );
        let h = &mut req.headers;
        h.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP {local};branch=z9hG4bKmr{i};rport"),
        );
        h.push(HeaderName::MaxForwards, "70");
        h.push(HeaderName::From, format!("<sip:probe@{local}>;tag=p{i}"));
        h.push(HeaderName::To, format!("<sip:ping@{sipp_addr}>"));
        h.push(HeaderName::CallId, format!("mr-{i}-{}", std::process::id()));
        h.push(HeaderName::CSeq, "1 OPTIONS");
        h.push(HeaderName::ContentLength, "0");
        let key = layer
            .send_request(Instant::now(), req, sipp_addr, Reliability::Unreliable)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = false;
        while !done && Instant::now() < deadline {
            while let Some(t) = layer.poll_transmit() {
                sock.send_to(&t.bytes, t.dest).await.unwrap();
            }
            let wake = layer.poll_timeout().unwrap_or(deadline).min(deadline);
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    let (n, from) = r.unwrap();
                    layer.handle_datagram(Instant::now(), &buf[..n], from, Reliability::Unreliable);
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    layer.handle_timeout(Instant::now());
                }
            }
            while let Some(ev) = layer.poll_event() {
                match ev {
                    TuEvent::Response { key: k, response } if k == key => {
                        assert_eq!(response.status, 200);
                        completed += 1;
                        done = true;
                    }
                    TuEvent::Timeout { .. } => panic!("OPTIONS {i} timed out"),
                    _ => {}
                }
            }
        }
        if !done {
            child.kill().ok();
            let out = child.wait_with_output().unwrap();
            panic!(
                "OPTIONS {i} never completed; {:?}; sipp: {}",
                layer.stats(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Drain stragglers for a moment.
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut buf)).await
        {
            layer.handle_datagram(Instant::now(), &buf[..n], from, Reliability::Unreliable);
        }
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "sipp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(completed, N);
    let s = layer.stats();
    assert_eq!(s.malformed_responses_dropped, u64::from(3 * N), "{s:?}");
    assert_eq!(s.misrouted_responses, u64::from(N));
    // Timer K (5 s on UDP) ends the completed transactions; skip ahead on virtual time.
    layer.handle_timeout(Instant::now() + Duration::from_secs(6));
    assert!(layer.is_empty(), "{} transactions left", layer.len());
    assert_eq!(stat(&csv, "SuccessfulCall(C)"), u64::from(N));
}
