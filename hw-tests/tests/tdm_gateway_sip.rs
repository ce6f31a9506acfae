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
//! Last, an answered call with audio both ways: the two SDPs name the test's own RTP
//! sockets, which send 1004 Hz (caller) and 697 Hz (callee) as PCMA through the media plane,
//! the span-1 and span-2 B-channels and the plane again; each end must hear the other's tone
//! (judged per 20 ms frame), and the BYE clears both engine calls with 16.
//!
//! `early_media_crosses_the_pri_loopback_before_the_answer`: the callee's 183 with SDP
//! becomes PROGRESS with PI 8 on span 2, span 1's PROGRESS becomes the caller's 183 with SDP,
//! and the callee's tone reaches the caller before the 200 OK (timed against the moment the
//! SIPp caller got it).
//!
//! `gateway_{network,user}_side_against_libpri_*`: the gateway runs one span only and libpri
//! (the C harness tdm-driver/tests/c/libpri_peer.c) is the far PRI end on the other span's
//! D-channel: SIP ↔ libpri calls both ways, busy (17 ↔ 486) and answered calls cleared from
//! each side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
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
        assert!(
            csv.exists(),
            "SIPp wrote no statistics (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
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
    run_pair_with(gw, uas_port, uas, uac, number, CALLS, &[], &[]).await
}

type SippOutcome = (Option<i32>, u64, u64, String);

/// [`run_pair`] with `calls` calls and extra `-key NAME VALUE` pairs for each side.
#[allow(clippy::too_many_arguments)]
async fn run_pair_with(
    gw: &GatewayServer,
    uas_port: u16,
    uas: &str,
    uac: &str,
    number: &str,
    calls: u32,
    uas_keys: &[(&str, String)],
    uac_keys: &[(&str, String)],
) -> (SippOutcome, SippOutcome) {
    let keys = |k: &[(&str, String)]| {
        k.iter()
            .flat_map(|(n, v)| ["-key".to_owned(), (*n).to_owned(), v.clone()])
            .collect::<Vec<_>>()
    };
    let calls = calls.to_string();
    let mut uas_args: Vec<String> = vec![
        "-p".into(),
        uas_port.to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        calls.clone(),
        "-sf".into(),
        scenario(uas).display().to_string(),
    ];
    uas_args.extend(keys(uas_keys));
    let callee = sipp(&uas_args);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut args: Vec<String> = vec![
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
    args.extend(keys(uac_keys));
    let caller = tokio::task::spawn_blocking(move || sipp(&args).finish())
        .await
        .unwrap();
    let callee = tokio::task::spawn_blocking(move || callee.finish())
        .await
        .unwrap();
    (caller, callee)
}

fn assert_ok(who: &str, r: &SippOutcome) {
    assert_n_ok(who, r, CALLS);
}

fn assert_n_ok(who: &str, r: &SippOutcome, calls: u32) {
    assert_eq!(r.0, Some(0), "{who}: SIPp failed: {}", r.3);
    assert_eq!(
        (r.1, r.2),
        (u64::from(calls), 0),
        "{who}: successful/failed"
    );
}

fn rtp_packet(seq: u16, samples: &[i16]) -> Vec<u8> {
    let mut p = vec![0x80, if seq == 0 { 0x80 | 8 } else { 8 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x5b0b_0001u32.to_be_bytes());
    p.extend(samples.iter().map(|&x| codecs::g711::alaw_encode(x)));
    p
}

/// The A-law payload of an RTP packet, decoded (None: not PCMA or malformed).
fn rtp_audio(p: &[u8]) -> Option<Vec<i16>> {
    let (&b0, &b1) = (p.first()?, p.get(1)?);
    if b0 >> 6 != 2 || b1 & 0x7f != 8 {
        return None;
    }
    let mut off = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let len = u16::from_be_bytes([*p.get(off + 2)?, *p.get(off + 3)?]);
        off += 4 + 4 * usize::from(len);
    }
    Some(
        p.get(off..)?
            .iter()
            .map(|&c| codecs::g711::alaw_decode(c))
            .collect(),
    )
}

fn share_at(x: &[i16], freq: f64) -> f64 {
    let (mut re, mut im, mut total) = (0.0, 0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        let a = std::f64::consts::TAU * freq * n as f64 / 8000.0;
        re += f64::from(s) * a.cos();
        im -= f64::from(s) * a.sin();
        total += f64::from(s) * f64::from(s);
    }
    if total == 0.0 {
        0.0
    } else {
        2.0 * (re * re + im * im) / x.len() as f64 / total
    }
}

/// At least 25 loud 20 ms frames of `got` (0.5 s), and 80 % of the loud ones, carry `freq`.
fn assert_tone(who: &str, got: &[i16], freq: f64) {
    let loud: Vec<f64> = got
        .chunks_exact(160)
        .filter(|f| f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 160.0 > 1.0e5)
        .map(|f| share_at(f, freq))
        .collect();
    let good = loud.iter().filter(|&&s| s > 0.8).count();
    assert!(
        good >= 25 && good * 10 >= loud.len() * 8,
        "{who}: {good} of {} loud frames carry {freq} Hz (of {} samples)",
        loud.len(),
        got.len()
    );
}

/// The two RTP ends of a talking call, as the SDP named them: each waits for the gateway's
/// first packet (so it knows where the gateway's leg is), then both send a tone for 1.5 s
/// (`caller` 1004 Hz, `callee` 697 Hz) and keep what they hear. Returns (caller heard,
/// callee heard).
fn exchange(caller: UdpSocket, callee: UdpSocket, limit: Duration) -> (Vec<i16>, Vec<i16>) {
    let deadline = Instant::now() + limit;
    let socks = [caller, callee];
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let mut peers: [Option<SocketAddr>; 2] = [None, None];
    let mut heard: [Vec<i16>; 2] = [Vec::new(), Vec::new()];
    let mut buf = [0u8; 2048];
    let freqs = [1004.0f64, 697.0];
    let mut phase = [0.0f64; 2];
    let mut started: Option<Instant> = None;
    let mut sent = 0u16;
    while Instant::now() < deadline {
        for (i, s) in socks.iter().enumerate() {
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                peers[i].get_or_insert(from);
                if started.is_some()
                    && let Some(a) = rtp_audio(&buf[..n])
                {
                    heard[i].extend(a);
                }
            }
        }
        match (started, peers) {
            (None, [Some(_), Some(_)]) => started = Some(Instant::now()),
            (Some(t), [Some(pa), Some(pb)]) => {
                let due = (t.elapsed().as_millis() / 20) as u16;
                if sent >= 75 {
                    if t.elapsed() > Duration::from_millis(1800) {
                        break;
                    }
                } else {
                    while sent <= due && sent < 75 {
                        for (i, to) in [pa, pb].into_iter().enumerate() {
                            let frame: Vec<i16> = (0..160)
                                .map(|_| {
                                    phase[i] = (phase[i] + freqs[i] / 8000.0).fract();
                                    (8000.0 * (phase[i] * std::f64::consts::TAU).sin()) as i16
                                })
                                .collect();
                            let _ = socks[i].send_to(&rtp_packet(sent, &frame), to);
                        }
                        sent += 1;
                    }
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        started.is_some(),
        "the gateway sent no RTP to the caller ({:?}) or to the callee ({:?})",
        peers[0],
        peers[1]
    );
    let [a, b] = heard;
    (a, b)
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

/// Both tests use spans 1 and 2: one at a time.
static SPANS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_calls_cross_the_pri_loopback_with_their_causes_mapped_both_ways() {
    let _spans = SPANS.lock().await;
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
        Box::new(PlaneMedia::new(
            MediaPlane::start(PlaneConfig {
                workers: 1,
                ..PlaneConfig::default()
            })
            .unwrap(),
            Duration::from_secs(30),
            Country::Etsi,
        )),
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

    // Answered, with audio both ways: SIP caller → PRI → SIP callee, each end a test socket.
    let (rtp_caller, rtp_callee) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (pa, pb) = (
        rtp_caller.local_addr().unwrap().port(),
        rtp_callee.local_addr().unwrap().port(),
    );
    let audio =
        std::thread::spawn(move || exchange(rtp_caller, rtp_callee, Duration::from_secs(10)));
    let (caller, callee) = run_pair_with(
        &gw,
        uas_port,
        "pri_uas_talk.xml",
        "pri_uac_talk.xml",
        "94023",
        1,
        &[("rtpport", pb.to_string())],
        &[("rtpport", pa.to_string())],
    )
    .await;
    let (caller_heard, callee_heard) = audio
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_n_ok("talking caller", &caller, 1);
    assert_n_ok("talking callee", &callee, 1);
    assert_tone("the callee behind the PRI", &callee_heard, 1004.0);
    assert_tone("the caller", &caller_heard, 697.0);
    assert_all_released(&gw, &handle).await;
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 7 * CALLS as usize + 2, "{lines:?}");
    for l in &lines[7 * CALLS as usize..] {
        assert_eq!(l["q850"], 16, "{l}");
        assert!(l["answer"].is_string(), "answered: {l}");
        // The SIP caller's BYE ends the first call; the PRI DISCONNECT it becomes ends the
        // second one from its caller's side too.
        assert_eq!(l["ended_by"], "caller", "{l}");
    }
    assert_eq!(gw.counters().answered.load(Ordering::Relaxed), 2);

    tdm.shutdown().await;
    gw.shutdown().await.unwrap();
}

/// One 20 ms frame heard, with the time it arrived.
type Heard = Vec<(SystemTime, Vec<i16>)>;

/// The RTP ends of a call with early media, as the SDPs named them: each starts sending its
/// tone (`caller` 1004 Hz, `callee` 697 Hz) every 20 ms once the gateway's first packet told
/// it where the gateway's leg is, keeps what it hears with the arrival time, and stops 1.5 s
/// after the last packet either got (the call ended) or at `limit`.
fn timed_exchange(caller: UdpSocket, callee: UdpSocket, limit: Duration) -> (Heard, Heard) {
    let deadline = Instant::now() + limit;
    let socks = [caller, callee];
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let mut peers: [Option<(SocketAddr, Instant)>; 2] = [None, None];
    let mut heard: [Heard; 2] = [Vec::new(), Vec::new()];
    let mut sent = [0u16; 2];
    let mut phase = [0.0f64; 2];
    let freqs = [1004.0f64, 697.0];
    let mut last = None::<Instant>;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        for (i, s) in socks.iter().enumerate() {
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                last = Some(Instant::now());
                peers[i].get_or_insert((from, Instant::now()));
                if let Some(a) = rtp_audio(&buf[..n]) {
                    heard[i].push((SystemTime::now(), a));
                }
            }
            if let Some((to, t)) = peers[i] {
                let due = (t.elapsed().as_millis() / 20) as u16;
                while sent[i] <= due {
                    let frame: Vec<i16> = (0..160)
                        .map(|_| {
                            phase[i] = (phase[i] + freqs[i] / 8000.0).fract();
                            (8000.0 * (phase[i] * std::f64::consts::TAU).sin()) as i16
                        })
                        .collect();
                    let _ = s.send_to(&rtp_packet(sent[i], &frame), to);
                    sent[i] += 1;
                }
            }
        }
        if last.is_some_and(|l| l.elapsed() > Duration::from_millis(1500)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let [a, b] = heard;
    (a, b)
}

fn samples(frames: &[(SystemTime, Vec<i16>)], keep: impl Fn(SystemTime) -> bool) -> Vec<i16> {
    frames
        .iter()
        .filter(|(t, _)| keep(*t))
        .flat_map(|(_, f)| f.iter().copied())
        .collect()
}

/// Early media across the PRI both ways: the SIP callee behind span 2 answers 183 with SDP
/// and plays 697 Hz; span 2 (a PRI caller's side, user) sends PROGRESS with "in-band
/// information available" (PI 8), span 1 (network) gets it and the gateway answers the SIP
/// caller 183 with SDP; the callee's tone crosses the plane, span 2's and span 1's
/// B-channels and the plane again and reaches the caller well before the 200 OK (the SIPp
/// caller notes when the 200 OK arrived). Then the answer, audio both ways, the caller's BYE,
/// and nothing held afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_crosses_the_pri_loopback_before_the_answer() {
    let _spans = SPANS.lock().await;
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
            seed: Some([8; 32]),
            external: vec![LegKind::Tdm],
        },
        Box::new(PlaneMedia::new(
            MediaPlane::start(PlaneConfig {
                workers: 1,
                ..PlaneConfig::default()
            })
            .unwrap(),
            Duration::from_secs(30),
            Country::Etsi,
        )),
    )
    .await
    .unwrap();
    let port = gw.take_provider(LegKind::Tdm).expect("a TDM provider port");
    let tdm = gateway::tdm::start(cfg.tdm.as_ref().unwrap(), &cfg.span_groups, port)
        .expect("the TDM provider opens both spans");
    let handle = tdm.handle();
    pri_ready(&handle, true, Duration::from_secs(10)).await;
    let mut trace = handle.subscribe_trace();

    let (rtp_caller, rtp_callee) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (pa, pb) = (
        rtp_caller.local_addr().unwrap().port(),
        rtp_callee.local_addr().unwrap().port(),
    );
    let answered_file = dir.path().join("answered_at");
    let audio =
        std::thread::spawn(move || timed_exchange(rtp_caller, rtp_callee, Duration::from_secs(20)));
    let (caller, callee) = run_pair_with(
        &gw,
        uas_port,
        "pri_uas_early.xml",
        "pri_uac_early.xml",
        "94024",
        1,
        &[("rtpport", pb.to_string())],
        &[
            ("rtpport", pa.to_string()),
            ("answered_file", answered_file.display().to_string()),
        ],
    )
    .await;
    let (caller_heard, callee_heard) = audio
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_n_ok(
        "caller with early media (183 with SDP, then 200)",
        &caller,
        1,
    );
    assert_n_ok("callee with early media", &callee, 1);
    let ns: u64 = std::fs::read_to_string(&answered_file)
        .expect("the SIPp caller noted the 200 OK")
        .trim()
        .parse()
        .unwrap();
    let answered = UNIX_EPOCH + Duration::from_nanos(ns);
    // Early media: the callee's tone before the 200 OK (with 50 ms to spare), at least 0.5 s.
    let early = samples(&caller_heard, |t| t + Duration::from_millis(50) < answered);
    assert_tone("the caller before the answer", &early, 697.0);
    let talk = samples(&caller_heard, |t| t > answered);
    assert_tone("the caller after the answer", &talk, 697.0);
    assert_tone(
        "the callee behind the PRI",
        &samples(&callee_heard, |_| true),
        1004.0,
    );

    // On the D-channels: span 2 sent PROGRESS with PI 8 and span 1 received it, before the
    // answer; CONNECT came after it.
    let mut texts = Vec::new();
    while let Ok(r) = trace.try_recv() {
        texts.push((r.span, r.dir, r.unix_micros, r.to_text()));
    }
    use tdm_driver::pri::trace::Direction as Dir;
    let answered_us = ns / 1000;
    let progress = |span: u32, dir: Dir| {
        texts.iter().find(|(s, d, _, t)| {
            *s == span && *d == dir && t.contains("PROGRESS") && t.contains("Progress indicator: 8")
        })
    };
    let sent =
        progress(2, Dir::Tx).unwrap_or_else(|| panic!("span 2 sent no PROGRESS PI 8: {texts:#?}"));
    let got =
        progress(1, Dir::Rx).unwrap_or_else(|| panic!("span 1 got no PROGRESS PI 8: {texts:#?}"));
    assert!(
        sent.2 < answered_us && got.2 < answered_us,
        "PROGRESS after the answer"
    );
    assert!(
        texts
            .iter()
            .any(|(s, d, us, t)| *s == 1 && *d == Dir::Rx && t.contains("CONNECT") && *us > got.2),
        "no CONNECT on span 1 after the PROGRESS: {texts:#?}"
    );

    assert_all_released(&gw, &handle).await;
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["q850"], 16, "{l}");
        assert!(l["answer"].is_string(), "answered: {l}");
    }
    tdm.shutdown().await;
    gw.shutdown().await.unwrap();
}

// ---- libpri as the far PRI end, through the gateway ---------------------------------------

/// The libpri harness (tdm-driver/tests/c/libpri_peer.c), compiled for this run.
fn libpri_harness() -> PathBuf {
    assert!(
        Path::new("/usr/include/libpri.h").exists(),
        "libpri's header is missing: install the Debian package libpri-dev"
    );
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("libpri_peer_gw.{}", std::process::id()));
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tdm-driver/tests/c/libpri_peer.c"
    );
    let ok = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-lpri")
        .status()
        .expect("run cc")
        .success();
    assert!(
        ok,
        "compiling the libpri harness failed (is libpri-dev installed?)"
    );
    out
}

/// libpri on span `span`'s D-channel (the other end of dahdi-sim's cross-connect from the
/// gateway's span), driven line by line.
struct Libpri {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Libpri {
    fn start(span: u32, side: &str) -> Self {
        use std::io::BufRead;
        use std::os::fd::AsRawFd;
        let theirs = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(hw_tests::chan_node(span, 16))
            .unwrap();
        nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
        let mut child = Command::new(libpri_harness())
            .arg(theirs.as_raw_fd().to_string())
            .args([side, "euro"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the libpri harness");
        drop(theirs);
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Libpri {
            child,
            stdin,
            lines,
            log: Vec::new(),
        }
    }

    /// The first line starting with `prefix` within `within`, split in words (consumed).
    async fn expect(&mut self, prefix: &str, within: Duration) -> Vec<String> {
        let end = Instant::now() + within;
        loop {
            self.log.extend(self.lines.try_iter());
            if let Some(i) = self.log.iter().position(|l| l.starts_with(prefix)) {
                let line = self.log.remove(i);
                return line.split_whitespace().map(str::to_string).collect();
            }
            assert!(
                Instant::now() < end,
                "libpri never printed {prefix:?} within {within:?}; it printed {:?}",
                self.log
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The cause of the call `idx`'s clearing as libpri reported it (HANGUP_REQ: the far end
    /// disconnected; HANGUP: it released).
    async fn cleared(&mut self, idx: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            self.log.extend(self.lines.try_iter());
            if let Some(i) = self.log.iter().position(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                matches!(w.first(), Some(&"HANGUP_REQ") | Some(&"HANGUP")) && w.get(1) == Some(&idx)
            }) {
                let line = self.log.remove(i);
                return line.split_whitespace().nth(2).unwrap_or("").to_owned();
            }
            assert!(
                Instant::now() < end,
                "libpri never saw call {idx} cleared; it printed {:?}",
                self.log
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn cmd(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// Forgets what libpri printed about earlier calls (it reuses call indices), keeping
    /// errors.
    fn forget(&mut self) {
        self.log.extend(self.lines.try_iter());
        self.log
            .retain(|l| l.starts_with("ERROR") || l.starts_with("CONFIG_ERR"));
    }

    /// Lines libpri printed that say something went wrong.
    fn errors(&mut self) -> Vec<String> {
        self.log.extend(self.lines.try_iter());
        self.log
            .iter()
            .filter(|l| l.starts_with("ERROR") || l.starts_with("CONFIG_ERR"))
            .cloned()
            .collect()
    }
}

impl Drop for Libpri {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts SIPp on one side while the test plays libpri's part; (SIPp outcome, what `drive`
/// returned).
async fn with_sipp<T>(
    args: Vec<String>,
    drive: impl std::future::Future<Output = T>,
) -> (SippOutcome, T) {
    let sipp_run = tokio::task::spawn_blocking(move || sipp(&args).finish());
    let t = drive.await;
    (sipp_run.await.unwrap(), t)
}

fn uac_args(gw: &GatewayServer, scenario_name: &str, number: &str) -> Vec<String> {
    vec![
        gw.sip_udp_addr().unwrap().to_string(),
        "-sf".into(),
        scenario(scenario_name).display().to_string(),
        "-s".into(),
        number.into(),
        "-p".into(),
        free_port().to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        "1".into(),
        "-key".into(),
        "caller".into(),
        CALLER.into(),
        "-key".into(),
        "rtpport".into(),
        free_port().to_string(),
    ]
}

fn uas_args(port: u16, scenario_name: &str) -> Vec<String> {
    vec![
        "-p".into(),
        port.to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        "1".into(),
        "-sf".into(),
        scenario(scenario_name).display().to_string(),
        "-key".into(),
        "rtpport".into(),
        free_port().to_string(),
    ]
}

/// The gateway's PRI span `ours` (network side on span 1, or user side on span 2) against
/// libpri on the other span's D-channel, with SIPp on the SIP side: calls both ways, cleared
/// from each side, causes mapped (Q.850 17 <-> SIP 486, 16 <-> BYE), nothing held after
/// each call.
async fn gateway_pri_against_libpri(ours: u32) {
    let _spans = SPANS.lock().await;
    configure_spans().expect("dahdi_cfg must succeed");
    let (theirs, their_side) = if ours == 1 {
        (2, "user")
    } else {
        (1, "network")
    };
    let mut lp = Libpri::start(theirs, their_side);
    lp.expect("READY", Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let cdr = dir.path().join("cdr.jsonl");
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    // Held until the SIPp callee starts, so no RTP socket of the gateway takes the port.
    let mut hold = UdpSocket::bind(callee).ok();
    let mut cfg = config(callee, &cdr);
    if let Some(t) = cfg.tdm.as_mut() {
        t.spans.retain(|s| s.span == ours);
    }
    for g in &mut cfg.span_groups {
        g.spans = vec![ours];
    }
    let mut gw = GatewayServer::start(
        ServerOptions {
            config: cfg.clone(),
            timers: Some(timers()),
            seed: Some([9; 32]),
            external: vec![LegKind::Tdm],
        },
        Box::new(PlaneMedia::new(
            MediaPlane::start(PlaneConfig {
                workers: 1,
                ..PlaneConfig::default()
            })
            .unwrap(),
            Duration::from_secs(30),
            Country::Etsi,
        )),
    )
    .await
    .unwrap();
    let port = gw.take_provider(LegKind::Tdm).expect("a TDM provider port");
    let tdm = gateway::tdm::start(cfg.tdm.as_ref().unwrap(), &cfg.span_groups, port)
        .expect("the TDM provider opens its span");
    let handle = tdm.handle();
    lp.expect("UP", Duration::from_secs(10)).await;
    pri_ready(&handle, true, Duration::from_secs(10)).await;

    // 1. SIP -> libpri, libpri busy (CALL PROCEEDING, then DISCONNECT 17, as a PBX does):
    // the caller gets 486.
    let args = uac_args(&gw, "pri_uac_busy.xml", "94021");
    let (caller, ring) = with_sipp(args, async {
        let ring = lp.expect("RING", Duration::from_secs(10)).await;
        lp.cmd(&format!("proceed {}", ring[1]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        lp.cmd(&format!("hangup {} 17", ring[1]));
        ring
    })
    .await;
    assert_n_ok("SIP caller refused busy by libpri", &caller, 1);
    assert_eq!(
        (ring[3].as_str(), ring[4].as_str()),
        ("4021", CALLER),
        "called and calling number as libpri got them: {ring:?}"
    );
    assert_all_released(&gw, &handle).await;

    lp.forget();
    // 2. SIP -> libpri, libpri rings and answers; the SIP caller hangs up (BYE -> 16).
    let args = uac_args(&gw, "pri_uac_talk.xml", "94023");
    let (caller, cause) = with_sipp(args, async {
        let ring = lp.expect("RING", Duration::from_secs(10)).await;
        lp.cmd(&format!("alert {}", ring[1]));
        lp.cmd(&format!("answer {}", ring[1]));
        lp.cleared(&ring[1], Duration::from_secs(10)).await
    })
    .await;
    assert_n_ok("SIP caller answered by libpri", &caller, 1);
    assert_eq!(cause, "16", "the BYE reached libpri as normal clearing");
    assert_all_released(&gw, &handle).await;

    lp.forget();
    // 3. libpri -> SIP, the SIP callee busy: 486 becomes DISCONNECT 17 at libpri.
    let args = uas_args(uas_port, "pri_uas_busy.xml");
    drop(hold.take());
    let (callee_r, cause) = with_sipp(args, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lp.cmd(&format!("call 5 4021 {CALLER} 1"));
        let placed = lp.expect("CALL ", Duration::from_secs(3)).await;
        lp.cleared(&placed[1], Duration::from_secs(10)).await
    })
    .await;
    assert_n_ok("SIP callee busy for libpri's call", &callee_r, 1);
    assert_eq!(cause, "17", "the callee's 486 reached libpri as user busy");
    assert_all_released(&gw, &handle).await;
    hold = UdpSocket::bind(callee).ok();

    lp.forget();
    // 4. libpri -> SIP, answered (180 -> ALERTING, 200 -> CONNECT); libpri hangs up: BYE.
    let args = uas_args(uas_port, "pri_uas_talk.xml");
    drop(hold.take());
    let (callee_r, ()) = with_sipp(args, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lp.cmd(&format!("call 7 4023 {CALLER} 1"));
        let placed = lp.expect("CALL ", Duration::from_secs(3)).await;
        lp.expect("RINGING", Duration::from_secs(10)).await;
        lp.expect("ANSWER", Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        lp.cmd(&format!("hangup {} 16", placed[1]));
        let cause = lp.cleared(&placed[1], Duration::from_secs(10)).await;
        assert_eq!(cause, "16");
    })
    .await;
    assert_n_ok(
        "SIP callee answering libpri's call, hung up by libpri",
        &callee_r,
        1,
    );
    assert_all_released(&gw, &handle).await;

    assert_eq!(lp.errors(), Vec::<String>::new(), "libpri reported errors");
    let lines = cdrs(&cdr);
    let q: Vec<u64> = lines
        .iter()
        .map(|l| l["q850"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        q,
        [17, 16, 17, 16],
        "one record per call with its cause: {lines:?}"
    );
    tdm.shutdown().await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_network_side_against_libpri_user_side_with_sip_calls_both_ways() {
    gateway_pri_against_libpri(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_user_side_against_libpri_network_side_with_sip_calls_both_ways() {
    gateway_pri_against_libpri(2).await;
}
