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
