//! SIP ↔ CAS ↔ SIP through the gateway's engine, over dahdi-sim's E1 pair with channels 1-2
//! of each span switched to CAS signalling (the provider's DAHDI_CHANCONFIG): a SIPp caller
//! dials `9` + number (span group "one", span 1) or `8` + number (span group "two", span 2);
//! the call crosses the simulated cable and comes in on the other span, where route
//! "to-callee" (`4*`) sends it to a SIPp callee that checks the called number the CAS
//! addressing delivered (DTMF or MF R1 on E&M; DTMF dialled by the station on loop start; a
//! line's fixed number when the office end rings a station).
//!
//! Every talking call: the callee rings, waits [`ANSWER_MS`] and answers; the caller's 200 OK
//! must come only after that (its CDR answer is later than the callee's leg answer and at
//! least [`ANSWER_MS`] after its start: answer supervision crossed the span); the two test RTP
//! sockets send 1004 Hz (caller) and 697 Hz (callee) and each must hear the other's tone
//! (per 20 ms frame, through the plane, both B-channels and the plane again); then one side
//! hangs up (the caller's BYE or the callee's BYE), the other gets its BYE, and afterwards the
//! gateway holds no call, leg, transaction, TDM leg or busy channel.
//!
//! The tests share the simulator's spans and run one at a time (a lock); each restores the
//! channels to clear channels when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::sip::transaction::TimerConfig;
use gateway::tdm::config::{Addressing, Signalling, TdmSpanConfig};
use gateway::tdm::{TdmBackend, TdmConfig, TdmHandle, TdmService};
use hw_tests::raw::Dev;
use hw_tests::{configure_spans, dahdi_root, node};

/// The callee's pause between 180 and 200.
const ANSWER_MS: u64 = 1200;
/// Channel positions used on each span.
const POSITIONS: [i32; 2] = [1, 2];
const SIG_CLEAR: i32 = 0x80;

/// One test at a time: they share the simulator's two spans.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// (exit code, successful calls, failed calls, stderr).
type SippOutcome = (Option<i32>, u64, u64, String);

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
        .arg("-trace_msg")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester");
    Sipp { child, dir }
}

impl Sipp {
    fn finish(self) -> SippOutcome {
        let out = self.child.wait_with_output().unwrap();
        let csv = self.dir.path().join("stats.csv");
        assert!(
            csv.exists(),
            "SIPp wrote no statistics (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() != Some(0) {
            // The messages SIPp exchanged, for the failure report.
            for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                if e.file_name().to_string_lossy().ends_with("_messages.log") {
                    let log = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: String = log.chars().rev().take(6000).collect();
                    err.push_str("\n--- SIPp messages (last 6000 chars) ---\n");
                    err.extend(tail.chars().rev());
                }
            }
        }
        (
            out.status.code(),
            stat(&csv, "SuccessfulCall(C)"),
            stat(&csv, "FailedCall(C)"),
            err,
        )
    }
}

fn assert_one_ok(who: &str, r: &SippOutcome) {
    assert_eq!(r.0, Some(0), "{who}: SIPp failed: {}", r.3);
    assert_eq!((r.1, r.2), (1, 0), "{who}: successful/failed");
}

/// A CAS span on channels 1-2.
fn cas_span(span: u32, signalling: Signalling, addressing: Addressing) -> TdmSpanConfig {
    let mut s = TdmConfig::sim_pri_pair().spans.remove(0);
    s.span = span;
    s.signalling = signalling;
    s.addressing = addressing;
    s.channels = Some("1-2".into());
    s
}

/// Puts the test's channels back to clear channels, whatever happens.
struct Restore(Dev);
impl Drop for Restore {
    fn drop(&mut self) {
        for pos in POSITIONS {
            let _ = self.0.chanconfig(pos, SIG_CLEAR);
            let _ = self.0.chanconfig(31 + pos, SIG_CLEAR);
        }
    }
}

struct Rig {
    gw: GatewayServer,
    tdm: Option<TdmService>,
    handle: TdmHandle,
    dir: tempfile::TempDir,
    cdr: PathBuf,
    uas_port: u16,
    _restore: Restore,
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

/// The gateway with span 1 and span 2 as given, SIP on an ephemeral port; `no_answer_s`: the
/// engine's no-answer timer.
async fn rig(span1: TdmSpanConfig, span2: TdmSpanConfig, no_answer_s: u64) -> Rig {
    rig_spans(vec![span1, span2], no_answer_s).await
}

/// The gateway with only the spans given (span group "two" and its route only when span 2 is
/// among them).
async fn rig_spans(spans: Vec<TdmSpanConfig>, no_answer_s: u64) -> Rig {
    let span2 = if spans.iter().any(|s| s.span == 2) {
        "[[span_group]]\nname = \"two\"\nspans = [2]\nhunt = \"ascending\"\n\n\
         [[route]]\nname = \"to-span2\"\nmatch = \"8*\"\nstrip = 1\nto = [\"span_group:two\"]\n"
    } else {
        ""
    };
    configure_spans().expect("dahdi_cfg must succeed");
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    let restore = Restore(ctl);
    let dir = tempfile::tempdir().unwrap();
    let cdr = dir.path().join("cdr.jsonl");
    let uas_port = free_port();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]
no_answer_timeout_s = {no_answer_s}

[cdr]
path = "{cdr}"

[[trunk]]
name = "callee"
address = "127.0.0.1:{uas_port}"

[[span_group]]
name = "one"
spans = [1]
hunt = "ascending"

[[route]]
name = "to-span1"
match = "9*"
strip = 1
to = ["span_group:one"]

{span2}

[[route]]
name = "to-callee"
match = "4*"
to = ["trunk:callee"]
"#,
        cdr = cdr.display()
    );
    let mut cfg = Config::from_toml(&text, "test").unwrap();
    cfg.tdm = Some(TdmConfig {
        backend: TdmBackend::Dahdi,
        root: dahdi_root().display().to_string(),
        configure: Some(true),
        spans,
    });
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
        .expect("the TDM provider opens both CAS spans");
    let handle = tdm.handle();
    let rig = Rig {
        gw,
        tdm: Some(tdm),
        handle,
        dir,
        cdr,
        uas_port,
        _restore: restore,
    };
    // Both spans' channels idle (configured, guard over) before the first call.
    rig.assert_all_released().await;
    rig
}

impl Rig {
    async fn stop(mut self) {
        if let Some(t) = self.tdm.take() {
            t.shutdown().await;
        }
        self.gw.shutdown().await.unwrap();
    }

    /// Waits until the gateway holds nothing and no channel is busy, then asserts it.
    async fn assert_all_released(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.handle.status().await.unwrap();
            let busy = s
                .spans
                .iter()
                .flat_map(|s| s.channels.iter())
                .filter(|c| c.state != "idle")
                .count();
            if self.gw.counters().idle() && s.legs == 0 && busy == 0 {
                return;
            }
            if Instant::now() > deadline {
                let c = self.gw.counters();
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

    /// The callee's scenario `template` with the expected called number and answer delay.
    fn uas_scenario(&self, template: &str, called: &str) -> PathBuf {
        let text = std::fs::read_to_string(scenario(template)).unwrap();
        let text = text
            .replace("@CALLED@", called)
            .replace("@ANSWER_MS@", &ANSWER_MS.to_string())
            .replace("@GW@", &self.gw.sip_udp_addr().unwrap().to_string())
            .replace("@GWIP@", &self.gw.sip_udp_addr().unwrap().ip().to_string());
        let path = self.dir.path().join(template);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// One SIPp callee (`uas`, expecting `called`) and one SIPp caller (`uac`, dialling
    /// `number`), one call.
    async fn pair(
        &self,
        uas: &str,
        called: &str,
        uac: &str,
        number: &str,
        rtp: Option<(u16, u16)>,
    ) -> (SippOutcome, SippOutcome) {
        let mut uas_args: Vec<String> = vec![
            "-p".into(),
            self.uas_port.to_string(),
            "-mp".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
            "-sf".into(),
            self.uas_scenario(uas, called).display().to_string(),
        ];
        let mut args: Vec<String> = vec![
            self.gw.sip_udp_addr().unwrap().to_string(),
            "-sf".into(),
            scenario(uac).display().to_string(),
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
            "3025550100".into(),
        ];
        if let Some((caller_rtp, callee_rtp)) = rtp {
            uas_args.extend(["-key".into(), "rtpport".into(), callee_rtp.to_string()]);
            args.extend(["-key".into(), "rtpport".into(), caller_rtp.to_string()]);
        }
        let callee = sipp(&uas_args);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let caller = tokio::task::spawn_blocking(move || sipp(&args).finish())
            .await
            .unwrap();
        let callee = tokio::task::spawn_blocking(move || callee.finish())
            .await
            .unwrap();
        (caller, callee)
    }

    fn cdrs(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.cdr)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// An answered call with audio both ways: the caller dials `number`, the callee expects
    /// `called`; `caller_clears`: the caller's BYE ends it, else the callee's.
    async fn talk(&self, number: &str, called: &str, caller_clears: bool) {
        let before = self.cdrs().len();
        let (rtp_caller, rtp_callee) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let ports = (
            rtp_caller.local_addr().unwrap().port(),
            rtp_callee.local_addr().unwrap().port(),
        );
        let audio =
            std::thread::spawn(move || exchange(rtp_caller, rtp_callee, Duration::from_secs(15)));
        let (uas, uac) = if caller_clears {
            ("cas_uas_talk.xml", "pri_uac_talk.xml")
        } else {
            ("cas_uas_talk_hangup.xml", "cas_uac_talk_wait.xml")
        };
        let (caller, callee) = self.pair(uas, called, uac, number, Some(ports)).await;
        let audio = audio.join();
        assert_one_ok("talking callee", &callee);
        assert_one_ok("talking caller", &caller);
        let (caller_heard, callee_heard) = audio.unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert_tone("the callee behind the CAS spans", &callee_heard, 1004.0);
        assert_tone("the caller", &caller_heard, 697.0);
        self.assert_all_released().await;
        let lines = self.cdrs();
        assert_eq!(lines.len(), before + 2, "{lines:?}");
        let new = &lines[before..];
        let first = new
            .iter()
            .find(|l| l["callee"] == number)
            .expect("the caller's call");
        let second = new
            .iter()
            .find(|l| l["route"] == "to-callee")
            .expect("the call that came in on the far span");
        assert_eq!(
            second["callee"], called,
            "the dialled number crossed: {second}"
        );
        assert_eq!(second["legs"][0]["kind"], "tdm", "{second}");
        assert_eq!(first["legs"][1]["kind"], "tdm", "{first}");
        for l in [first, second] {
            assert_eq!(l["q850"], 16, "{l}");
            assert!(l["answer"].is_string(), "answered: {l}");
        }
        // Answer supervision: the caller was answered only once the callee was, and no
        // sooner than the callee's pause after ringing.
        let callee_answered = second["legs"][1]["answered"]
            .as_str()
            .expect("callee answered");
        let caller_answered = first["answer"].as_str().unwrap();
        assert!(
            ms_of_day(caller_answered) >= ms_of_day(callee_answered),
            "the caller was answered ({caller_answered}) before the callee ({callee_answered})"
        );
        let waited = ms_of_day(caller_answered) - ms_of_day(first["start"].as_str().unwrap());
        assert!(
            waited >= ANSWER_MS as i64,
            "the caller was answered {waited} ms after its INVITE"
        );
        let (ender, other) = if caller_clears {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(
            ender["ended_by"],
            if caller_clears { "caller" } else { "callee" }
        );
        // The clearing crossed the span as a clearing by the other call's own far side.
        assert_eq!(
            other["ended_by"],
            if caller_clears { "caller" } else { "callee" },
            "{other}"
        );
    }
}

/// Milliseconds since midnight of an RFC 3339 `...THH:MM:SS.mmmZ` time.
fn ms_of_day(t: &str) -> i64 {
    let hms = &t[11..23];
    let h: i64 = hms[0..2].parse().unwrap();
    let m: i64 = hms[3..5].parse().unwrap();
    let s: i64 = hms[6..8].parse().unwrap();
    let ms: i64 = hms[9..12].parse().unwrap();
    ((h * 60 + m) * 60 + s) * 1000 + ms
}

fn rtp_packet(seq: u16, samples: &[i16]) -> Vec<u8> {
    let mut p = vec![0x80, if seq == 0 { 0x80 | 8 } else { 8 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x5b0b_0002u32.to_be_bytes());
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

/// Normalised correlation of `x` with a sinusoid at `freq` (share of the frame's energy).
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

/// The two RTP ends of a talking call, as the SDPs named them: each waits for the gateway's
/// first packet, then both send a tone for 1.5 s (`caller` 1004 Hz, `callee` 697 Hz) and keep
/// what they hear. Returns (caller heard, callee heard).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn em_wink_start_with_dtmf_addressing_talks_and_clears_from_either_side() {
    let _serial = SERIAL.lock().await;
    let r = rig(
        cas_span(1, Signalling::EmWink, Addressing::Dtmf),
        cas_span(2, Signalling::EmWink, Addressing::Dtmf),
        30,
    )
    .await;
    r.talk("94021", "4021", true).await;
    r.talk("84022", "4022", false).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn em_immediate_start_with_dtmf_addressing_talks_and_clears_from_either_side() {
    let _serial = SERIAL.lock().await;
    let r = rig(
        cas_span(1, Signalling::EmImmediate, Addressing::Dtmf),
        cas_span(2, Signalling::EmImmediate, Addressing::Dtmf),
        30,
    )
    .await;
    r.talk("94023", "4023", false).await;
    r.talk("84024", "4024", true).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn em_wink_start_with_mf_addressing_talks_and_clears_from_either_side() {
    let _serial = SERIAL.lock().await;
    let r = rig(
        cas_span(1, Signalling::EmWink, Addressing::Mf),
        cas_span(2, Signalling::EmWink, Addressing::Mf),
        30,
    )
    .await;
    r.talk("94025551212", "4025551212", true).await;
    r.talk("8403", "403", false).await;
    r.stop().await;
}

/// Loop start with battery-reversal supervision: span 1 the office end (`fxo_ls`), span 2
/// the station end (`fxs_ls`) whose line number is 4031.
fn loop_start_pair(kewl: bool) -> (TdmSpanConfig, TdmSpanConfig) {
    let (office, station) = if kewl {
        (Signalling::FxoKs, Signalling::FxsKs)
    } else {
        (Signalling::FxoLs, Signalling::FxsLs)
    };
    let mut a = cas_span(1, office, Addressing::Dtmf);
    let mut b = cas_span(2, station, Addressing::Dtmf);
    a.polarity = !kewl;
    b.polarity = !kewl;
    b.fixed_called = "4031".into();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_start_office_end_rings_the_station_answer_and_disconnect_supervised() {
    let _serial = SERIAL.lock().await;
    let (a, b) = loop_start_pair(false);
    let r = rig(a, b, 30).await;
    // Ringing the station; its answer (loop closed) answers the caller; the caller's BYE
    // reaches the station as a battery reversal.
    r.talk("94031", "4031", true).await;
    // The station hangs up (loop open): the office end clears the caller.
    r.talk("94031", "4031", false).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_start_station_end_dials_the_office_answer_and_disconnect_by_battery_reversal() {
    let _serial = SERIAL.lock().await;
    let (a, b) = loop_start_pair(false);
    let r = rig(a, b, 30).await;
    // The station seizes and dials DTMF; the office's answer reverses the battery, which
    // answers the caller; the callee's BYE reverses it back (disconnect supervision).
    r.talk("84032", "4032", false).await;
    // The caller's BYE: the station goes on hook, the office end sees the loop open.
    r.talk("84033", "4033", true).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kewl_start_office_end_disconnects_the_station_by_dropping_the_loop() {
    let _serial = SERIAL.lock().await;
    let (a, b) = loop_start_pair(true);
    let r = rig(a, b, 30).await;
    // No battery reversal: the office end's clearing reaches the station as DAHDI's kewl
    // (loop drop); the station's on-hook reaches the office end.
    r.talk("94031", "4031", true).await;
    r.talk("94031", "4031", false).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_callee_that_never_answers_gives_the_caller_480_and_frees_both_channels() {
    let _serial = SERIAL.lock().await;
    let r = rig(
        cas_span(1, Signalling::EmWink, Addressing::Mf),
        cas_span(2, Signalling::EmWink, Addressing::Mf),
        4,
    )
    .await;
    let (caller, callee) = r
        .pair(
            "cas_uas_no_answer.xml",
            "4051",
            "cas_uac_no_answer.xml",
            "94051",
            None,
        )
        .await;
    assert_one_ok("caller left ringing", &caller);
    assert_one_ok("callee cancelled", &callee);
    r.assert_all_released().await;
    let lines = r.cdrs();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = lines.iter().find(|l| l["callee"] == "94051").unwrap();
    assert_eq!(first["q850"], 19, "no answer: {first}");
    assert!(first["answer"].is_null(), "{first}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_callee_behind_a_ringing_station_is_not_called_again_and_the_line_frees() {
    let _serial = SERIAL.lock().await;
    let (a, b) = loop_start_pair(false);
    let r = rig(a, b, 4).await;
    // The office end rings the station; its call to the SIP callee gets 486. A station line
    // cannot signal busy back, so the office end rings on until the caller's no-answer timer
    // (480); the rings after the refusal must not present the call to the callee again.
    let (caller, callee) = r
        .pair(
            "cas_uas_busy.xml",
            "4031",
            "cas_uac_no_answer.xml",
            "94031",
            None,
        )
        .await;
    assert_one_ok("caller", &caller);
    assert_one_ok("busy callee", &callee);
    r.assert_all_released().await;
    let lines = r.cdrs();
    assert_eq!(
        lines.len(),
        2,
        "one call each way, none re-presented: {lines:?}"
    );
    let second = lines.iter().find(|l| l["route"] == "to-callee").unwrap();
    assert_eq!(second["q850"], 17, "{second}");
    r.stop().await;
}

impl Rig {
    /// A SIPp caller alone (dialling `number`) whose scenario is `cas_uac_refused.xml`
    /// expecting the final response `status`.
    async fn refused_caller(&self, number: &str, status: u16) -> SippOutcome {
        let text = std::fs::read_to_string(scenario("cas_uac_refused.xml"))
            .unwrap()
            .replace("@STATUS@", &status.to_string());
        let path = self
            .dir
            .path()
            .join(format!("cas_uac_refused_{status}.xml"));
        std::fs::write(&path, text).unwrap();
        let args: Vec<String> = vec![
            self.gw.sip_udp_addr().unwrap().to_string(),
            "-sf".into(),
            path.display().to_string(),
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
            "3025550100".into(),
        ];
        tokio::task::spawn_blocking(move || sipp(&args).finish())
            .await
            .unwrap()
    }

    /// CAS counters of span `span`'s channel `channel`: (glares, tones heard).
    async fn cas_counters(&self, span: u32, channel: u32) -> (u64, u64) {
        let s = self.handle.status().await.unwrap();
        let c = s
            .spans
            .iter()
            .find(|x| x.span == span)
            .and_then(|x| x.channels.iter().find(|c| c.channel == channel))
            .unwrap_or_else(|| panic!("no span {span} channel {channel} in {s:?}"));
        (c.glares, c.tones)
    }
}

/// What the test's own far end saw.
#[derive(Debug)]
struct FarEnd {
    /// The DTMF address heard after the wink.
    digits: String,
    /// Span 1 released the seizure (on hook) after the tone.
    released: bool,
    /// Tone played, ms.
    played_ms: u64,
}

/// The far end of span 1's E&M wink-start trunk, played by the test itself on span 2's
/// channel 1 through raw DAHDI calls: waits for the seizure, winks, hears `want` digits of
/// DTMF address, then plays `country`'s `tone` in-band and never answers, until span 1 goes
/// back on hook (or 40 s pass).
fn far_end_plays_tone(
    country: codecs::tones::Country,
    tone: codecs::tones::ToneKind,
    want: usize,
) -> FarEnd {
    const SIG_EM_E1: i32 = 1 << 17;
    const ELAST: i32 = 500;
    const EVENT_ONHOOK: i32 = 1;
    const EVENT_RINGOFFHOOK: i32 = 2;
    const OFFHOOK: i32 = 1;
    const ONHOOK: i32 = 0;
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    ctl.chanconfig(32, SIG_EM_E1).unwrap();
    let ch = Dev::open(&hw_tests::chan_node(2, 1), true).unwrap();
    ch.set_blocksize(160).unwrap();
    ch.set_linear(true).unwrap();
    let mut dtmf = codecs::dtmf::DtmfDetector::new();
    let mut generator = codecs::tones::ToneGenerator::new(country, tone);
    let mut far = FarEnd {
        digits: String::new(),
        released: false,
        played_ms: 0,
    };
    let (mut seized, mut playing) = (false, false);
    let mut pending: Option<Vec<u8>> = None;
    let mut buf = [0u8; 320];
    let end = Instant::now() + Duration::from_secs(40);
    while Instant::now() < end && !far.released {
        loop {
            match ch.read(&mut buf) {
                Ok(n) => {
                    if seized && !playing {
                        let samples: Vec<i16> = buf[..n]
                            .chunks_exact(2)
                            .map(|b| i16::from_ne_bytes([b[0], b[1]]))
                            .collect();
                        dtmf.process(&samples, |e| {
                            if let codecs::dtmf::DtmfEvent::KeyDown { digit, .. } = e {
                                far.digits.push(digit);
                            }
                        });
                    }
                }
                Err(e) if e.raw_os_error() == Some(ELAST) => match ch.get_event().unwrap() {
                    EVENT_RINGOFFHOOK if !seized => {
                        seized = true;
                        // The wink: off hook 150 ms, back on hook.
                        std::thread::sleep(Duration::from_millis(60));
                        ch.hook(OFFHOOK).unwrap();
                        std::thread::sleep(Duration::from_millis(150));
                        ch.hook(ONHOOK).unwrap();
                    }
                    EVENT_ONHOOK if seized => far.released = true,
                    _ => {}
                },
                Err(_) => break,
            }
        }
        if seized && far.digits.len() >= want {
            playing = true;
        }
        // Keep the channel's transmit queue topped up with the tone.
        while playing && !far.released {
            let frame = pending.take().unwrap_or_else(|| {
                let mut f = [0i16; 160];
                generator.fill(&mut f);
                f.iter().flat_map(|s| s.to_ne_bytes()).collect()
            });
            match ch.write(&frame) {
                Ok(_) => far.played_ms += 20,
                Err(_) => {
                    // Full (EAGAIN) or an event to read first (ELAST): later.
                    pending = Some(frame);
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(ch);
    // Back to a clear channel for the next test (the rig's restore does it too).
    let _ = ctl.chanconfig(32, SIG_CLEAR);
    far
}

/// A call through span 1's E&M trunk whose far end (the test, on span 2) plays busy or
/// congestion tone instead of answering: the gateway hears the tone on the B-channel before
/// any answer supervision and clears with cause 17 (SIP 486) or 34 (SIP 503) — not the 480 of
/// the no-answer timer — for the tone plan the span is configured with; the far end sees the
/// seizure go away; nothing is left busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_or_congested_cas_far_end_gives_the_caller_486_or_503() {
    use codecs::tones::{Country as Plan, ToneKind};
    let _serial = SERIAL.lock().await;
    for (plan, tones) in [(Plan::Us, Some("us")), (Plan::Etsi, None)] {
        let mut span1 = cas_span(1, Signalling::EmWink, Addressing::Dtmf);
        span1.channels = Some("1".into());
        span1.tones = tones.map(str::to_string);
        let r = rig_spans(vec![span1], 30).await;
        let mut calls = vec![(ToneKind::Busy, 486u16, 17u64)];
        if plan == Plan::Us {
            calls.push((ToneKind::Congestion, 503, 34));
        }
        for (n, (tone, status, q850)) in calls.into_iter().enumerate() {
            let far = std::thread::spawn(move || far_end_plays_tone(plan, tone, 4));
            let caller = r.refused_caller("94061", status).await;
            let far = far.join().unwrap();
            assert_eq!(
                caller.0,
                Some(0),
                "{plan} {tone}: the caller must get {status}: {}",
                caller.3
            );
            assert_eq!((caller.1, caller.2), (1, 0), "{plan} {tone}");
            assert_eq!(
                far.digits, "4061",
                "{plan} {tone}: the address crossed: {far:?}"
            );
            assert!(
                far.released,
                "{plan} {tone}: span 1 released the seizure: {far:?}"
            );
            // Two cadence cycles are enough; the answer timer (30 s) never ran out.
            assert!(
                far.played_ms < 10_000,
                "{plan} {tone}: recognised only after {} ms of tone",
                far.played_ms
            );
            r.assert_all_released().await;
            let lines = r.cdrs();
            assert_eq!(lines.len(), n + 1, "{lines:?}");
            let cdr = &lines[n];
            assert_eq!(cdr["q850"], q850, "{plan} {tone}: {cdr}");
            assert!(cdr["answer"].is_null(), "never answered: {cdr}");
            assert_eq!(r.cas_counters(1, 1).await, (0, n as u64 + 1));
        }
        r.stop().await;
    }
}

/// E&M wink-start glare: a SIPp caller places two calls 20 ms apart, one to each span
/// (`94071` out of span 1, `84071` out of span 2), so both ends seize channel 1 at once. Span
/// 1 has glare priority and keeps channel 1; span 2 backs off (its channel 1 takes span 1's
/// call) and re-hunts its own call onto channel 2. Both calls reach the callee, are answered
/// and cleared normally, and every channel is idle afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn em_wink_glare_the_priority_end_keeps_the_channel_and_the_other_call_is_rehunted() {
    let _serial = SERIAL.lock().await;
    let mut span1 = cas_span(1, Signalling::EmWink, Addressing::Dtmf);
    span1.glare_priority = true;
    let span2 = cas_span(2, Signalling::EmWink, Addressing::Dtmf);
    let r = rig(span1, span2, 30).await;
    let inf = r.dir.path().join("glare.csv");
    std::fs::write(&inf, "SEQUENTIAL\n94071;\n84071;\n").unwrap();
    let media_sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uas_args: Vec<String> = vec![
        "-p".into(),
        r.uas_port.to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        "2".into(),
        "-key".into(),
        "rtpport".into(),
        media_sink.local_addr().unwrap().port().to_string(),
        "-sf".into(),
        r.uas_scenario("cas_uas_talk.xml", "4071")
            .display()
            .to_string(),
    ];
    let uac_args: Vec<String> = vec![
        r.gw.sip_udp_addr().unwrap().to_string(),
        "-sf".into(),
        scenario("cas_uac_inf_talk.xml").display().to_string(),
        "-inf".into(),
        inf.display().to_string(),
        "-p".into(),
        free_port().to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-r".into(),
        "50".into(),
        "-m".into(),
        "2".into(),
        "-key".into(),
        "caller".into(),
        "3025550100".into(),
    ];
    let callee = sipp(&uas_args);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = tokio::task::spawn_blocking(move || sipp(&uac_args).finish())
        .await
        .unwrap();
    let callee = tokio::task::spawn_blocking(move || callee.finish())
        .await
        .unwrap();
    assert_eq!(caller.0, Some(0), "callers: {}", caller.3);
    assert_eq!((caller.1, caller.2), (2, 0), "both calls answered");
    assert_eq!(callee.0, Some(0), "callee: {}", callee.3);
    assert_eq!(
        (callee.1, callee.2),
        (2, 0),
        "both calls reached the callee"
    );
    r.assert_all_released().await;
    let lines = r.cdrs();
    assert_eq!(
        lines.len(),
        4,
        "two calls each crossing the spans: {lines:?}"
    );
    for l in &lines {
        assert_eq!(l["q850"], 16, "{l}");
        assert!(l["answer"].is_string(), "{l}");
    }
    // Span 2 gave channel 1 up once; span 1 (priority) never did.
    assert_eq!(
        r.cas_counters(2, 1).await.0,
        1,
        "span 2 backed off channel 1"
    );
    assert_eq!(r.cas_counters(1, 1).await.0, 0, "span 1 kept channel 1");
    assert_eq!(r.cas_counters(1, 2).await.0, 0);
    assert_eq!(r.cas_counters(2, 2).await.0, 0);
    r.stop().await;
}
