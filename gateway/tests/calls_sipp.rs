//! Real peers: SIPp uac → gateway B2BUA → SIPp uas on 127.0.0.1. The caller plays RTP, the
//! callee (`-rtp_echo`) echoes it, so audio must cross the gateway both ways through the
//! anchored ports. After the calls the gateway holds no calls, legs, RTP sockets or
//! transactions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway::calls::b2bua::{B2buaConfig, Routes};
use gateway::calls::server::B2buaServer;
use gateway::sip::transaction::TimerConfig;

const CALLS: u32 = 10;

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

fn stat(csv: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap().split(';').collect();
    let idx = header.iter().position(|h| *h == name).unwrap();
    last[idx].trim().parse().unwrap()
}

/// Fast timers so finished transactions drain within seconds (only where no SIP message is
/// lost: Timer J must outlast the peer's retransmissions, which SIPp paces with its own 500 ms
/// T1) (Timer J = 64*T1 = 3.2 s,
/// Timer D 1 s).
fn timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
        timer_d: Duration::from_secs(1),
        ..TimerConfig::default()
    }
}

async fn gateway_to(callee: SocketAddr) -> B2buaServer {
    gateway_with(callee, None).await
}

async fn gateway_with(callee: SocketAddr, creds: Option<(&str, &str)>) -> B2buaServer {
    gateway_full(callee, creds, timers()).await
}

async fn gateway_full(
    callee: SocketAddr,
    creds: Option<(&str, &str)>,
    timers: TimerConfig,
) -> B2buaServer {
    B2buaServer::start(
        B2buaConfig {
            sip_addr: "127.0.0.1:0".parse().unwrap(),
            routes: Routes {
                by_user: [("bob".to_owned(), callee)].into_iter().collect(),
                default: None,
            },
            timers,
            seed: [3; 32],
            credentials: creds
                .map(|(u, p)| (callee, (u.to_owned(), p.to_owned())))
                .into_iter()
                .collect(),
        },
        IpAddr::from([127, 0, 0, 1]),
    )
    .await
    .unwrap()
}

struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
}

fn sipp(args: &[&str]) -> Sipp {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("stats.csv");
    let child = Command::new("sipp")
        .current_dir(dir.path())
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "30",
            "-timeout_error",
        ])
        .args(["-trace_stat", "-stf", csv.to_str().unwrap(), "-fd", "1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester");
    Sipp { child, dir }
}

impl Sipp {
    fn finish(self) -> (Option<i32>, u64, u64, String) {
        let out = self.child.wait_with_output().unwrap();
        let csv = self.dir.path().join("stats.csv");
        (
            out.status.code(),
            stat(&csv, "SuccessfulCall(C)"),
            stat(&csv, "FailedCall(C)"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

async fn wait_idle(gw: &B2buaServer) {
    wait_idle_for(gw, Duration::from_secs(10)).await;
}

async fn wait_idle_for(gw: &B2buaServer, limit: Duration) {
    for _ in 0..limit.as_millis() / 50 {
        let c = gw.counters();
        if c.calls.load(Ordering::Relaxed) == 0
            && c.legs.load(Ordering::Relaxed) == 0
            && c.rtp_sockets.load(Ordering::Relaxed) == 0
            && c.transactions.load(Ordering::Relaxed) == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_idle(gw: &B2buaServer) {
    let c = gw.counters();
    assert_eq!(c.calls.load(Ordering::Relaxed), 0, "live calls");
    assert_eq!(c.legs.load(Ordering::Relaxed), 0, "live legs");
    assert_eq!(c.rtp_sockets.load(Ordering::Relaxed), 0, "open RTP sockets");
    assert_eq!(
        c.transactions.load(Ordering::Relaxed),
        0,
        "live transactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_through_gateway_to_sipp_uas_with_rtp_both_ways_and_bye_from_caller() {
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    let gw = gateway_to(callee).await;
    let uas = sipp(&[
        "-sn",
        "uas",
        "-p",
        &uas_port.to_string(),
        "-mp",
        &free_port().to_string(),
        "-rtp_echo",
        "-m",
        &CALLS.to_string(),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let target = gw.sip_addr().to_string();
    let uac_args = vec![
        target,
        "-sf".to_owned(),
        scenario("calls_uac_pcap.xml").to_str().unwrap().to_owned(),
        "-s".to_owned(),
        "bob".to_owned(),
        "-p".to_owned(),
        free_port().to_string(),
        "-mp".to_owned(),
        free_port().to_string(),
        "-m".to_owned(),
        CALLS.to_string(),
        "-r".to_owned(),
        "10".to_owned(),
        "-l".to_owned(),
        "5".to_owned(),
    ];
    let (uac_code, uac_ok, uac_failed, uac_err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = uac_args.iter().map(String::as_str).collect();
        sipp(&args).finish()
    })
    .await
    .unwrap();
    let (uas_code, uas_ok, uas_failed, uas_err) = tokio::task::spawn_blocking(move || uas.finish())
        .await
        .unwrap();
    assert_eq!(uac_code, Some(0), "caller SIPp failed: {uac_err}");
    assert_eq!((uac_ok, uac_failed), (u64::from(CALLS), 0));
    // The callee saw every call through to the BYE the gateway relayed.
    assert_eq!(uas_code, Some(0), "callee SIPp failed: {uas_err}");
    assert_eq!((uas_ok, uas_failed), (u64::from(CALLS), 0));
    let c = gw.counters();
    assert_eq!(c.answered.load(Ordering::Relaxed), u64::from(CALLS));
    assert_eq!(c.ended.load(Ordering::Relaxed), u64::from(CALLS));
    wait_idle(&gw).await;
    let (a_to_b, b_to_a) = (
        c.rtp_a_to_b.load(Ordering::Relaxed),
        c.rtp_b_to_a.load(Ordering::Relaxed),
    );
    eprintln!("RTP relayed: caller->callee {a_to_b}, callee->caller {b_to_a}");
    assert!(
        a_to_b >= u64::from(CALLS),
        "caller RTP relayed to callee: {a_to_b}"
    );
    assert!(
        b_to_a >= u64::from(CALLS),
        "callee's echo relayed back: {b_to_a}"
    );
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}

type SippResult = (Option<i32>, u64, u64, String);

/// Runs a callee SIPp with `uas_scenario` and a caller SIPp with `uac_scenario` through a new
/// gateway, `CALLS` calls; returns (caller, callee) results and the gateway.
async fn run_pair(uas_scenario: &str, uac_scenario: &str) -> (SippResult, SippResult, B2buaServer) {
    run_pair_with(uas_scenario, uac_scenario, None).await
}

async fn run_pair_with(
    uas_scenario: &str,
    uac_scenario: &str,
    creds: Option<(&str, &str)>,
) -> (SippResult, SippResult, B2buaServer) {
    run_pair_full(uas_scenario, uac_scenario, creds, &[], timers()).await
}

async fn run_pair_full(
    uas_scenario: &str,
    uac_scenario: &str,
    creds: Option<(&str, &str)>,
    sipp_extra: &[&str],
    timers: TimerConfig,
) -> (SippResult, SippResult, B2buaServer) {
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    let gw = gateway_full(callee, creds, timers).await;
    let uas_args: Vec<String> = vec![
        "-sf".into(),
        scenario(uas_scenario).to_str().unwrap().into(),
        "-p".into(),
        uas_port.to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-rtp_echo".into(),
        "-m".into(),
        CALLS.to_string(),
    ]
    .into_iter()
    .chain(sipp_extra.iter().map(|s| (*s).to_owned()))
    .collect();
    let uas = sipp(&uas_args.iter().map(String::as_str).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uac_args: Vec<String> = vec![
        gw.sip_addr().to_string(),
        "-sf".into(),
        scenario(uac_scenario).to_str().unwrap().into(),
        "-s".into(),
        "bob".into(),
        "-p".into(),
        free_port().to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        CALLS.to_string(),
        "-r".into(),
        "10".into(),
        "-l".into(),
        "5".into(),
    ]
    .into_iter()
    .chain(sipp_extra.iter().map(|s| (*s).to_owned()))
    .collect();
    let caller = tokio::task::spawn_blocking(move || {
        sipp(&uac_args.iter().map(String::as_str).collect::<Vec<_>>()).finish()
    })
    .await
    .unwrap();
    let callee = tokio::task::spawn_blocking(move || uas.finish())
        .await
        .unwrap();
    (caller, callee, gw)
}

fn assert_all_ok(who: &str, r: &SippResult) {
    assert_eq!(r.0, Some(0), "{who} SIPp failed: {}", r.3);
    assert_eq!(
        (r.1, r.2),
        (u64::from(CALLS), 0),
        "{who} successful/failed calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_from_the_callee_reaches_the_caller_and_ends_both_legs() {
    let (caller, callee, gw) = run_pair("calls_uas_bye.xml", "calls_uac_wait_bye.xml").await;
    assert_all_ok("caller", &caller);
    assert_all_ok("callee", &callee);
    assert_eq!(
        gw.counters().answered.load(Ordering::Relaxed),
        u64::from(CALLS)
    );
    wait_idle(&gw).await;
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_486_from_the_callee_is_relayed_to_the_caller() {
    let (caller, callee, gw) = run_pair("calls_uas_busy.xml", "calls_uac_expect_busy.xml").await;
    assert_all_ok("caller", &caller);
    assert_all_ok("callee", &callee);
    assert_eq!(gw.counters().answered.load(Ordering::Relaxed), 0);
    assert_eq!(
        gw.counters().ended.load(Ordering::Relaxed),
        u64::from(CALLS)
    );
    wait_idle(&gw).await;
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_is_relayed_and_both_sides_get_487() {
    let (caller, callee, gw) =
        run_pair("calls_uas_ring_cancelled.xml", "calls_uac_cancel.xml").await;
    assert_all_ok("caller", &caller);
    assert_all_ok("callee", &callee);
    assert_eq!(gw.counters().answered.load(Ordering::Relaxed), 0);
    wait_idle(&gw).await;
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}

/// Hold and resume by re-INVITE from the caller: the offer's direction (sendonly, then sendrecv)
/// reaches the callee through the gateway and the callee's answer (recvonly, then sendrecv)
/// comes back, both with the gateway's media address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_hold_and_resume_are_relayed_across_the_b2bua() {
    let (caller, callee, gw) = run_pair("calls_uas_hold.xml", "calls_uac_hold_resume.xml").await;
    assert_all_ok("caller", &caller);
    assert_all_ok("callee", &callee);
    wait_idle(&gw).await;
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}

/// The trunk challenges every INVITE; the gateway answers with its configured credentials and
/// the call goes through (SIPp's `verifyauth` checks the MD5 digest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_401_is_answered_with_configured_credentials() {
    let (caller, callee, gw) = run_pair_with(
        "calls_uas_auth.xml",
        "calls_uac_pcap.xml",
        Some(("gw-user", "trunk-pw")),
    )
    .await;
    assert_all_ok("caller", &caller);
    assert_all_ok("callee", &callee);
    wait_idle(&gw).await;
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}

/// Wrong trunk password: the trunk refuses (403), the caller gets the failure, nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_refusing_our_credentials_fails_the_call_cleanly() {
    let (caller, _callee, gw) = run_pair_with(
        "calls_uas_auth.xml",
        "calls_uac_pcap.xml",
        Some(("gw-user", "wrong")),
    )
    .await;
    assert_eq!(
        (caller.1, caller.2),
        (0, u64::from(CALLS)),
        "caller calls ok/failed"
    );
    assert_eq!(gw.counters().answered.load(Ordering::Relaxed), 0);
    assert_eq!(
        gw.counters().ended.load(Ordering::Relaxed),
        u64::from(CALLS)
    );
    wait_idle(&gw).await;
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}

/// Both SIPp instances lose 10 % of the SIP messages they send and receive (`-lost 10`); every
/// call must still complete through the gateway's retransmissions and theirs, and no call may be
/// dropped for a lost ACK. RFC 3261 default timers here: with a shortened T1 our Timer J would
/// expire before SIPp (T1 = 500 ms) retransmits a BYE whose 200 was lost, and the gateway would
/// rightly answer the late copy 481.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known issue (issue 4): about 1 run in 4 a callee BYE is not relayed to the caller within SIPp's 30 s; run with --ignored while fixing it"]
async fn calls_complete_under_10_percent_sip_loss_on_both_sides() {
    let (caller, callee, gw) = run_pair_full(
        "calls_uas_bye.xml",
        "calls_uac_wait_bye.xml",
        None,
        &[
            "-lost",
            "10",
            "-max_invite_retrans",
            "10",
            "-max_non_invite_retrans",
            "10",
        ],
        TimerConfig::default(),
    )
    .await;
    // Under random loss SIPp may also log a retransmission that reaches a call it has already
    // finished ("Dead call ... (successful)") and exit with 1 for it; what matters is its call
    // statistics: every call successful, none failed.
    for (who, r) in [("caller", &caller), ("callee", &callee)] {
        assert!(
            matches!(r.0, Some(0) | Some(1)),
            "{who} SIPp failed: {}",
            r.3
        );
        assert_eq!(
            (r.1, r.2),
            (u64::from(CALLS), 0),
            "{who} successful/failed calls: {}",
            r.3
        );
    }
    assert_eq!(
        gw.counters().answered.load(Ordering::Relaxed),
        u64::from(CALLS)
    );
    assert_eq!(gw.counters().ack_timeouts.load(Ordering::Relaxed), 0);
    // Timers J and D (32 s) keep the last transactions alive that long.
    wait_idle_for(&gw, Duration::from_secs(40)).await;
    assert_idle(&gw);
    gw.shutdown().await.unwrap();
}
