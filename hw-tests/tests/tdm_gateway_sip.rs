//! SIP ↔ PRI through the gateway's engine, on dahdi-sim's E1 pair as `dahdi_cfg` configured it
//! (span 1 network side, span 2 user side): a SIPp caller dials `9` + number; a `[[route]]`
//! strips the `9` and sends the call to span group "out" (span 1); it arrives on span 2, where
//! a second route sends it on to a SIPp callee. The causes cross the PRI in both directions
//! per RFC 3398: the callee's 486 becomes Q.850 17 on span 2, DISCONNECT 17 reaches span 1,
//! and the caller gets 486; the callee's 180 becomes ALERTING and the caller's 180; the
//! caller's CANCEL clears the PRI call and CANCELs the callee (487); while span 2 is in RED
//! alarm the PRI refuses with 38 and the route falls over to the SIP trunk, and after recovery
//! calls cross the PRI again. The SIPp callee checks the called and calling numbers as the
//! PRI delivered them. After each phase the gateway
//! holds no call, leg or transaction and no B-channel is busy; one CDR per engine call, with
//! its cause.
//!
//! Not here yet: an answered call with audio. The switch's media backend
//! (`calls::relay_media`) cannot carry frame ports, so a TDM leg that answers is cleared with
//! 47; that test comes when the media plane stands behind the switch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::leg::LegKind;
use gateway::calls::relay_media::RelayMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::sip::transaction::TimerConfig;
use gateway::tdm::{TdmBackend, TdmConfig, TdmHandle};
use hw_tests::{configure_spans, dahdi_root, sim_command, sim_control};

const CALLS: u32 = 3;
/// The number the SIP caller presents; the SIPp callee behind the PRI checks it arrives.
const CALLER: &str = "3025550100";

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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

struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
}

/// SIPp on 127.0.0.1, bounded by its own 20 s timeout (a failure, not a hang).
fn sipp(args: &[String]) -> Sipp {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("stats.csv");
    let child = Command::new("sipp")
        .current_dir(dir.path())
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "20",
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
    /// (exit code, successful calls, failed calls, stderr).
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

fn config(callee: SocketAddr, cdr: &Path) -> Config {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

[cdr]
path = "{cdr}"

[[trunk]]
name = "callee"
address = "{callee}"

[[span_group]]
name = "out"
spans = [1]
hunt = "ascending"

[[route]]
name = "to-pri"
match = "9*"
strip = 1
to = ["span_group:out", "trunk:callee"]

[[route]]
name = "from-pri"
match = "4*"
to = ["trunk:callee"]
"#,
        cdr = cdr.display()
    );
    let mut cfg = Config::from_toml(&text, "test").unwrap();
    let mut tdm = TdmConfig::sim_pri_pair();
    tdm.backend = TdmBackend::Dahdi;
    tdm.root = dahdi_root().display().to_string();
    cfg.tdm = Some(tdm);
    cfg
}

/// Fast SIP timers so finished transactions drain within seconds (SIPp loses nothing here).
fn timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
        timer_d: Duration::from_secs(1),
        ..TimerConfig::default()
    }
}

/// Waits until both PRI spans take calls (`ready`) or neither does.
async fn pri_ready(tdm: &TdmHandle, ready: bool, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let s = tdm.status().await.expect("the TDM provider runs");
        if s.spans
            .iter()
            .all(|s| s.dchannel.as_ref().is_some_and(|d| d.ready == ready))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "D-channels not ready={ready} within {limit:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the gateway holds nothing and no B-channel is busy, then asserts it.
async fn assert_all_released(gw: &GatewayServer, tdm: &TdmHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = tdm.status().await.unwrap();
        let busy = s
            .spans
            .iter()
            .flat_map(|s| s.channels.iter())
            .filter(|c| c.state == "busy")
            .count();
        if gw.counters().idle() && s.legs == 0 && busy == 0 {
            return;
        }
        if Instant::now() > deadline {
            let c = gw.counters();
            panic!(
                "not released within 10 s: calls {} legs {} sip legs {} transactions {} \
                 media legs {}; TDM {s:?}",
                c.calls.load(Ordering::Relaxed),
                c.legs.load(Ordering::Relaxed),
                c.sip_legs.load(Ordering::Relaxed),
                c.transactions.load(Ordering::Relaxed),
                c.media_legs.load(Ordering::Relaxed),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One SIPp callee and one SIPp caller (dialling `number`), CALLS calls one at a time.
async fn run_pair(
    gw: &GatewayServer,
    uas_port: u16,
    uas: &str,
    uac: &str,
    number: &str,
) -> (
    (Option<i32>, u64, u64, String),
    (Option<i32>, u64, u64, String),
) {
    let calls = CALLS.to_string();
    let callee = sipp(&[
        "-p".into(),
        uas_port.to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        calls.clone(),
        "-sf".into(),
        scenario(uas).display().to_string(),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let args: Vec<String> = vec![
        gw.sip_udp_addr().unwrap().to_string(),
        "-sf".into(),
        scenario(uac).display().to_string(),
        "-s".into(),
        number.into(),
        "-p".into(),
        free_port().to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        calls,
        "-l".into(),
        "1".into(),
        "-key".into(),
        "caller".into(),
        CALLER.into(),
    ];
    let caller = tokio::task::spawn_blocking(move || sipp(&args).finish())
        .await
        .unwrap();
    let callee = tokio::task::spawn_blocking(move || callee.finish())
        .await
        .unwrap();
    (caller, callee)
}

fn assert_ok(who: &str, r: &(Option<i32>, u64, u64, String)) {
    assert_eq!(r.0, Some(0), "{who}: SIPp failed: {}", r.3);
    assert_eq!(
        (r.1, r.2),
        (u64::from(CALLS), 0),
        "{who}: successful/failed"
    );
}

fn cdrs(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Per SIPp call, two engine calls: `to-pri` (SIP caller → span group "out") and `from-pri`
/// (span 2 → the SIP callee), each with the dialled number, the caller's number and `q850`,
/// and neither answered.
fn assert_cdrs(lines: &[serde_json::Value], dialled: &str, q850: u8) {
    let route = |name: &str| {
        lines
            .iter()
            .filter(|l| l["route"] == name)
            .collect::<Vec<_>>()
    };
    let (to_pri, from_pri) = (route("to-pri"), route("from-pri"));
    assert_eq!(
        (to_pri.len(), from_pri.len()),
        (CALLS as usize, CALLS as usize),
        "{lines:?}"
    );
    for l in to_pri {
        assert_eq!(l["destination"], "span_group:out", "{l}");
        assert_eq!(l["callee"], format!("9{dialled}"), "{l}");
        assert_eq!(l["dialled"], dialled, "{l}");
    }
    for l in from_pri {
        assert_eq!(l["destination"], "trunk:callee", "{l}");
        assert_eq!(l["callee"], dialled, "{l}");
        assert_eq!(
            l["caller"], CALLER,
            "the calling number crossed the PRI: {l}"
        );
        assert_eq!(l["legs"][0]["kind"], "tdm", "{l}");
    }
    for l in lines {
        assert_eq!(l["q850"], q850, "{l}");
        assert!(l["answer"].is_null(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_calls_cross_the_pri_loopback_with_their_causes_mapped_both_ways() {
    configure_spans().expect("dahdi_cfg must succeed");
    let dir = tempfile::tempdir().unwrap();
    let cdr = dir.path().join("cdr.jsonl");
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    let cfg = config(callee, &cdr);
    let mut gw = GatewayServer::start(
        ServerOptions {
            config: cfg.clone(),
            timers: Some(timers()),
            seed: Some([7; 32]),
            external: vec![LegKind::Tdm],
        },
        Box::new(RelayMedia::new()),
    )
    .await
    .unwrap();
    let port = gw.take_provider(LegKind::Tdm).expect("a TDM provider port");
    let tdm = gateway::tdm::start(cfg.tdm.as_ref().unwrap(), &cfg.span_groups, port)
        .expect("the TDM provider opens both spans");
    let handle = tdm.handle();
    pri_ready(&handle, true, Duration::from_secs(10)).await;

    // Busy: SIP 486 → Q.850 17 on span 2 → DISCONNECT 17 on span 1 → SIP 486 to the caller.
    let (caller, callee) = run_pair(
        &gw,
        uas_port,
        "pri_uas_busy.xml",
        "pri_uac_busy.xml",
        "94021",
    )
    .await;
    assert_ok("busy caller", &caller);
    assert_ok("busy callee", &callee);
    assert_all_released(&gw, &handle).await;
    let lines = cdrs(&cdr);
    // Each SIPp call is two engine calls: SIP → span 1, and span 2 → SIP.
    assert_eq!(lines.len(), 2 * CALLS as usize, "{lines:?}");
    assert_cdrs(&lines, "4021", 17);

    // Ringing and CANCEL: 180 → ALERTING → 180; CANCEL → DISCONNECT → CANCEL, 487 both ends.
    let (caller, callee) = run_pair(
        &gw,
        uas_port,
        "pri_uas_ring_cancelled.xml",
        "pri_uac_cancel.xml",
        "94022",
    )
    .await;
    assert_ok("cancelling caller", &caller);
    assert_ok("cancelled callee", &callee);
    assert_all_released(&gw, &handle).await;
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 4 * CALLS as usize, "{lines:?}");
    assert_cdrs(&lines[2 * CALLS as usize..], "4022", 16);
    assert_eq!(gw.counters().answered.load(Ordering::Relaxed), 0);

    // A RED alarm on span 2 takes the PRI out of service: the call to span group "out" fails
    // with 38 and the route falls over to its next destination, the SIP trunk (here busy).
    let control = sim_control().expect("dahdi-sim's control file (hw-tests/run sets it)");
    struct Clear(PathBuf);
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = sim_command(&self.0, "clear 2");
        }
    }
    let clear = Clear(control.clone());
    sim_command(&control, "alarm 2 RED").unwrap();
    pri_ready(&handle, false, Duration::from_secs(5)).await;
    let (caller, callee) = run_pair(
        &gw,
        uas_port,
        "pri_uas_busy.xml",
        "pri_uac_busy.xml",
        "94021",
    )
    .await;
    assert_ok("caller during the alarm", &caller);
    assert_ok("fallback callee", &callee);
    assert_all_released(&gw, &handle).await;
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 5 * CALLS as usize, "{lines:?}");
    for l in &lines[4 * CALLS as usize..] {
        assert_eq!(l["route"], "to-pri", "{l}");
        assert_eq!(l["attempts"][0]["destination"], "span_group:out", "{l}");
        assert_eq!(l["attempts"][0]["q850"], 38, "{l}");
        assert_eq!(l["attempts"][1]["destination"], "trunk:callee", "{l}");
        assert_eq!(l["attempts"][1]["sip_status"], 486, "{l}");
        assert_eq!(l["q850"], 17, "{l}");
    }

    // Recovery: layer 2 back, calls cross the PRI again.
    drop(clear);
    pri_ready(&handle, true, Duration::from_secs(10)).await;
    let (caller, callee) = run_pair(
        &gw,
        uas_port,
        "pri_uas_busy.xml",
        "pri_uac_busy.xml",
        "94021",
    )
    .await;
    assert_ok("caller after recovery", &caller);
    assert_ok("callee after recovery", &callee);
    assert_all_released(&gw, &handle).await;
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 7 * CALLS as usize, "{lines:?}");
    assert_cdrs(&lines[5 * CALLS as usize..], "4021", 17);

    tdm.shutdown().await;
    gw.shutdown().await.unwrap();
}
