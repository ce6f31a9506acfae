//! Browsers and contact-center agents through the PRI, on dahdi-sim's E1 pair as `dahdi_cfg`
//! configured it (span 1 network side, span 2 user side, cross-connected).
//!
//! `browser_calls_cross_the_pri_loopback_to_a_sip_ua_with_audio_both_ways`: aiortc POSTs a
//! WHIP click-to-call offer for `94023` to the gateway's HTTP API; the route `to-pri` strips
//! the `9` and places the call on span group "out" (span 1); it comes back in on span 2, where
//! `from-pri` sends it to a SIPp callee (which checks the called and calling numbers the PRI
//! delivered) whose audio is a socket of this test. The speech aiortc plays reaches that
//! socket (browser → PCMU → media plane → span 1 → span 2 → plane → PCMA; cross-correlated),
//! and the socket's 697 Hz reaches aiortc (judged per 20 ms frame). The browser hangs up
//! (HTTP DELETE of the WHIP resource): DISCONNECT crosses the PRI, the callee gets the BYE,
//! and no call, leg, WebRTC leg, transaction or busy B-channel is left; two CDRs, both 16.
//!
//! `a_call_transferred_to_an_agent_with_a_tdm_endpoint_crosses_the_pri`: a SIPp caller reaches
//! agent Alice (a SIP UA that echoes); Alice blind-transfers the call through the control API
//! (`POST /api/v1/calls/URI/transfer`) to agent Bob, whose endpoint is TDM number 4023 with no
//! group named (the only span group, "out", is used). Bob's leg crosses the PRI loopback and
//! reaches a SIPp callee that answers; `transfer.connected` carries the call's URI; the
//! caller's 1004 Hz reaches Bob's phone and Bob's 697 Hz reaches the caller; the caller hangs
//! up and nothing is left in the engine, the TDM provider or the control plane.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::control_side::EngineCallSide;
use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::control::Event;
use gateway::control::api::ControlPlane;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::rtc::provider::RtcService;
use gateway::sip::transaction::TimerConfig;
use gateway::tdm::{TdmBackend, TdmConfig, TdmHandle, TdmService};
use hw_tests::{configure_spans, dahdi_root};
use serde_json::{Value, json};

/// The number the caller presents; the SIPp callee behind the PRI checks it arrives.
const CALLER: &str = "3025550100";
const T: Duration = Duration::from_secs(20);

/// Both tests use spans 1 and 2 (and two cores): one at a time.
static SPANS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sipp")
        .join(name)
        .display()
        .to_string()
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- SIPp ------------------------------------------------------------------------------------

/// SIPp on 127.0.0.1, bounded by its own 30 s timeout (a failure, not a hang).
fn sipp(dir: &Path, args: &[String]) -> Child {
    Command::new("sipp")
        .current_dir(dir)
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

/// Waits for SIPp and asserts it exited 0 (every message of its scenario seen).
async fn sipp_ok(who: &str, child: Child) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{who}: SIPp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SIPp callee behind the PRI: checks number 4023 from CALLER, answers with PCMA on
/// `rtpport` (a socket of the test) and waits for the BYE.
fn pri_callee(dir: &Path, port: u16, rtpport: u16) -> Child {
    sipp(
        dir,
        &[
            "-p".into(),
            port.to_string(),
            "-mp".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
            "-sf".into(),
            scenario("pri_uas_talk.xml"),
            "-key".into(),
            "rtpport".into(),
            rtpport.to_string(),
        ],
    )
}

// ---- RTP and audio ---------------------------------------------------------------------------

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

/// One 20 ms frame of a `freq` Hz tone at a speech-like level, continuing `phase`.
fn tone_frame(freq: f64, phase: &mut f64) -> Vec<i16> {
    (0..160)
        .map(|_| {
            *phase = (*phase + freq / 8000.0).fract();
            (8000.0 * (*phase * std::f64::consts::TAU).sin()) as i16
        })
        .collect()
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
    eprintln!(
        "{who}: {good} of {} loud frames carry {freq} Hz",
        loud.len()
    );
    assert!(
        good >= 25 && good * 10 >= loud.len() * 8,
        "{who}: {good} of {} loud frames carry {freq} Hz (of {} samples)",
        loud.len(),
        got.len()
    );
}

/// The RTP ends of a talking call, as the SDPs named them: each waits for the gateway's first
/// packet (so it knows where the gateway's leg is), then both send a tone for 1.5 s (`a`
/// 1004 Hz, `b` 697 Hz) and keep what they hear from then on. Returns (a heard, b heard).
fn exchange(a: UdpSocket, b: UdpSocket, limit: Duration) -> (Vec<i16>, Vec<i16>) {
    let deadline = Instant::now() + limit;
    let socks = [a, b];
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
                    && let Some(x) = rtp_audio(&buf[..n])
                {
                    heard[i].extend(x);
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
                            let frame = tone_frame(freqs[i], &mut phase[i]);
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
        "the gateway sent no RTP to one end ({:?}, {:?})",
        peers[0],
        peers[1]
    );
    let [x, y] = heard;
    (x, y)
}

/// One RTP end alone: waits for the gateway's first packet, then sends `freq` Hz for `talk`
/// and keeps what it hears meanwhile.
fn talk(sock: UdpSocket, freq: f64, talk: Duration, limit: Duration) -> Vec<i16> {
    let deadline = Instant::now() + limit;
    sock.set_nonblocking(true).unwrap();
    let mut peer = None;
    let mut heard = Vec::new();
    let mut buf = [0u8; 2048];
    let mut phase = 0.0;
    let mut sent = 0u32;
    let frames = (talk.as_millis() / 20) as u32;
    let mut started: Option<Instant> = None;
    while Instant::now() < deadline && sent < frames {
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            peer.get_or_insert(from);
            if started.is_some()
                && let Some(x) = rtp_audio(&buf[..n])
            {
                heard.extend(x);
            }
        }
        if let Some(to) = peer {
            let t = *started.get_or_insert_with(Instant::now);
            let due = (t.elapsed().as_millis() / 20) as u32;
            while sent <= due && sent < frames {
                let frame = tone_frame(freq, &mut phase);
                let _ = sock.send_to(&rtp_packet(sent as u16, &frame), to);
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(started.is_some(), "the gateway sent no RTP to {sock:?}");
    heard
}

/// 6.8 s of synthesised speech at 8 kHz (codecs/tests/data/speech-8k.wav).
fn speech_8k() -> Vec<i16> {
    let bytes = std::fs::read(root().join("codecs/tests/data/speech-8k.wav")).unwrap();
    codecs::wav::parse(&bytes).unwrap().samples
}

/// The best normalised cross-correlation of `segment` against the looped `reference` over
/// every offset (the player loops its file and may start anywhere).
fn best_correlation(reference: &[i16], segment: &[i16]) -> f64 {
    let r: Vec<f64> = reference
        .iter()
        .chain(reference)
        .map(|&s| f64::from(s))
        .collect();
    let s: Vec<f64> = segment.iter().map(|&x| f64::from(x)).collect();
    assert!(
        s.len() <= reference.len(),
        "segment longer than the reference"
    );
    let es: f64 = s.iter().map(|x| x * x).sum();
    let mut ew: f64 = r[..s.len()].iter().map(|x| x * x).sum();
    let mut best = f64::MIN;
    for off in 0..reference.len() {
        if off > 0 {
            ew += r[off + s.len() - 1].powi(2) - r[off - 1].powi(2);
        }
        let dot: f64 = r[off..off + s.len()]
            .iter()
            .zip(&s)
            .map(|(a, b)| a * b)
            .sum();
        best = best.max(dot / (ew.max(1.0) * es.max(1.0)).sqrt());
    }
    best
}

/// The best correlation with `reference` among the three loudest 0.5 s windows of `x` (one
/// clean stretch proves the path on a loaded two-core box).
fn best_windows(reference: &[i16], x: &[i16]) -> f64 {
    let w = 4000;
    let mut windows: Vec<(f64, usize)> = (0..x.len() / w)
        .map(|k| {
            let e: f64 = x[k * w..(k + 1) * w]
                .iter()
                .map(|&s| f64::from(s).powi(2))
                .sum();
            (e, k)
        })
        .collect();
    windows.sort_by(|a, b| b.0.total_cmp(&a.0));
    windows
        .iter()
        .take(3)
        .map(|&(_, k)| best_correlation(reference, &x[k * w..(k + 1) * w]))
        .fold(f64::MIN, f64::max)
}

// ---- aiortc ----------------------------------------------------------------------------------

/// aiortc (Debian's python3-aiortc) running gateway/tests/peers/aiortc_peer.py, driven by JSON
/// lines, with a WAV file as its microphone.
struct Aiortc {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Aiortc {
    fn start(wav: &Path) -> Aiortc {
        let script = root().join("gateway/tests/peers/aiortc_peer.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg("--wav")
            .arg(wav)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("aiortc: cannot start /usr/bin/python3 (apt-get install python3-aiortc)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Aiortc {
            child,
            stdin,
            lines,
        };
        let r = p.recv(Duration::from_secs(30));
        assert_eq!(r["type"], "ready", "aiortc: {r}");
        p
    }

    fn recv(&mut self, timeout: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("aiortc: no reply within {timeout:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("aiortc: bad line {line}: {e}"))
    }

    fn request(&mut self, cmd: Value, timeout: Duration) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let r = self.recv(timeout);
        assert_ne!(r["type"], "error", "aiortc: {cmd} -> {r}");
        r
    }

    /// `seconds` of what the peer receives, as 8 kHz samples.
    fn record(&mut self, seconds: f64) -> Vec<i16> {
        let r = self.request(
            json!({"cmd": "record", "seconds": seconds}),
            Duration::from_secs_f64(seconds + 10.0),
        );
        assert_eq!(r["rate"], 8000, "{r}");
        let bytes = base64_decode(r["pcm"].as_str().unwrap());
        bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    fn close(mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "close"}));
        let _ = self.stdin.flush();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Aiortc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let (mut out, mut acc, mut bits) = (Vec::with_capacity(s.len() * 3 / 4), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

// ---- HTTP ------------------------------------------------------------------------------------

/// One HTTP/1.1 request on its own connection: (status, lower-cased head, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("HTTP reply in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// POSTs JSON with a bearer token.
async fn post_json(addr: SocketAddr, token: &str, path: &str, body: Value) -> (u16, String) {
    let (s, _, b) = http(
        addr,
        "POST",
        path,
        &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        &body.to_string(),
    )
    .await;
    (s, b)
}

// ---- the gateway -----------------------------------------------------------------------------

/// Routes: `9*` → span group "out" (span 1) with the 9 stripped; `4*` (what arrives on span
/// 2) → the SIP trunk `callee`; `support` → agent Alice (SIP, port `alice`); agent Bob is TDM
/// number 4023 with no group named. WebRTC legs on (PCMU).
fn config(callee: SocketAddr, alice: u16, cdr: &Path) -> Config {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

[rtc]
codecs = ["pcmu"]
media_timeout_s = 5

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
to = ["span_group:out"]

[[route]]
name = "from-pri"
match = "4*"
to = ["trunk:callee"]

[[route]]
name = "support line"
match = "support"
to = ["control:agent:alice"]

[control.timers]
transfer_setup_ms = 10000
transfer_ring_ms = 10000

[[control.agents]]
id = "alice"
name = "Alice"
endpoints = [{{ kind = "sip", uri = "sip:alice@127.0.0.1:{alice}" }}]
token = "alice-token"

[[control.agents]]
id = "bob"
name = "Bob"
endpoints = [{{ kind = "tdm", number = "4023" }}]
token = "bob-token"
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

struct Rig {
    gw: GatewayServer,
    tdm: TdmService,
    handle: TdmHandle,
    rtc: RtcService,
    side: EngineCallSide,
    control: Arc<ControlPlane>,
    events: tokio::sync::broadcast::Receiver<Arc<gateway::control::Sequenced>>,
    /// The HTTP API: WHIP and the control plane's /api/v1.
    http: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn start(cfg: &Config, seed: u8) -> Rig {
        configure_spans().expect("dahdi_cfg must succeed");
        let mut gw = GatewayServer::start(
            ServerOptions {
                config: cfg.clone(),
                timers: Some(TimerConfig {
                    t1: Duration::from_millis(50),
                    t2: Duration::from_millis(400),
                    t4: Duration::from_millis(500),
                    timer_d: Duration::from_secs(1),
                    ..TimerConfig::default()
                }),
                seed: Some([seed; 32]),
                external: vec![LegKind::Tdm, LegKind::WebRtc],
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
        let port = gw.take_provider(LegKind::WebRtc).expect("a WebRTC port");
        let rtc = gateway::rtc::provider::start(cfg.rtc.as_ref().unwrap(), port).unwrap();
        let side = EngineCallSide::new(gw.handle())
            .with_rtc(rtc.handle())
            .with_span_groups(&cfg.span_groups);
        let control = ControlPlane::start(cfg.control.clone(), Arc::new(side.clone())).unwrap();
        side.attach(&control);
        let events = control.subscribe();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let app = gateway::rtc::http::router(rtc.handle())
            .merge(gateway::web::control_app(control.clone()));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        pri_ready(&handle, Duration::from_secs(10)).await;
        Rig {
            gw,
            tdm,
            handle,
            rtc,
            side,
            control,
            events,
            http,
            server,
        }
    }

    /// Waits until nothing is left anywhere, then asserts it: no engine call, leg, SIP leg,
    /// transaction, media leg or RTP socket, no WebRTC leg, no TDM leg or busy B-channel, no
    /// control-plane call or mapped leg.
    async fn assert_all_released(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.handle.status().await.unwrap();
            let busy = s
                .spans
                .iter()
                .flat_map(|s| s.channels.iter())
                .filter(|c| c.state == "busy")
                .count();
            let control_calls = self.control.read(|core, now| {
                core.list_calls(&gateway::control::core::Principal::Admin, now)
                    .len()
            });
            let c = self.gw.counters();
            let rtc = self.rtc.handle().legs().live();
            if c.idle()
                && c.rtp_sockets.load(Ordering::Relaxed) == 0
                && s.legs == 0
                && busy == 0
                && rtc == 0
                && control_calls == 0
                && self.side.mapped_legs() == 0
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not released within 10 s: calls {} legs {} sip legs {} \
                     transactions {} media legs {} rtp sockets {} webrtc legs {rtc} \
                     control calls {control_calls} mapped control legs {}; TDM legs {} busy \
                     B-channels {busy}",
                    c.calls.load(Ordering::Relaxed),
                    c.legs.load(Ordering::Relaxed),
                    c.sip_legs.load(Ordering::Relaxed),
                    c.transactions.load(Ordering::Relaxed),
                    c.media_legs.load(Ordering::Relaxed),
                    c.rtp_sockets.load(Ordering::Relaxed),
                    self.side.mapped_legs(),
                    s.legs,
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(self) {
        self.server.abort();
        self.tdm.shutdown().await;
        self.rtc.shutdown().await;
        self.gw.shutdown().await.unwrap();
    }
}

/// Waits until both PRI spans take calls.
async fn pri_ready(tdm: &TdmHandle, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let s = tdm.status().await.expect("the TDM provider runs");
        if s.spans
            .iter()
            .all(|s| s.dchannel.as_ref().is_some_and(|d| d.ready))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "D-channels not ready within {limit:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<gateway::control::Sequenced>>,
    what: &str,
    f: impl Fn(&Event) -> bool,
) -> Event {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap();
        if f(&ev.event) {
            return ev.event.clone();
        }
    }
}

fn cdrs(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// ---- the tests -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_cross_the_pri_loopback_to_a_sip_ua_with_audio_both_ways() {
    let _spans = SPANS.lock().await;
    tokio::time::timeout(Duration::from_secs(90), browser_to_pri())
        .await
        .expect("test within 90 s");
}

async fn browser_to_pri() {
    let dir = tempfile::tempdir().unwrap();
    let cdr = dir.path().join("cdr.jsonl");
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    let cfg = config(callee, free_port(), &cdr);
    let rig = Rig::start(&cfg, 11).await;

    let reference = speech_8k();
    let wav = dir.path().join("speech-8k.wav");
    std::fs::write(&wav, codecs::wav::write_pcm16(8000, &reference)).unwrap();
    let rtp_callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_sipp = pri_callee(
        dir.path(),
        uas_port,
        rtp_callee.local_addr().unwrap().port(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut peer = tokio::task::block_in_place(|| Aiortc::start(&wav));
    let offer = peer.request(json!({"cmd": "offer", "codec": "PCMU"}), T);
    let (status, head, answer) = http(
        rig.http,
        "POST",
        &format!("/api/v1/rtc/whip?to=94023&caller={CALLER}"),
        "Content-Type: application/sdp\r\n",
        offer["sdp"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 201, "WHIP POST: {answer}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a WHIP resource")
        .trim()
        .to_owned();
    peer.request(json!({"cmd": "answer", "sdp": answer}), T);
    peer.request(json!({"cmd": "wait-connected"}), T);

    // The SIP UA behind the PRI plays 697 Hz for 4 s and listens; aiortc listens for 3 s.
    let sip_side = std::thread::spawn(move || {
        talk(
            rtp_callee,
            697.0,
            Duration::from_secs(4),
            Duration::from_secs(10),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let browser_heard = tokio::task::block_in_place(|| peer.record(3.0));
    let sip_heard = sip_side
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    let calls = rig
        .gw
        .handle()
        .run(|sw, now| sw.engine.calls(now))
        .await
        .unwrap();
    assert_eq!(
        calls.len(),
        2,
        "browser → span 1, and span 2 → SIP: {calls:?}"
    );

    assert!(
        sip_heard.len() >= 16_000,
        "the SIP UA got only {} samples",
        sip_heard.len()
    );
    let c = best_windows(&reference, &sip_heard);
    eprintln!("browser speech at the SIP UA behind the PRI: correlation {c:.3}");
    assert!(
        c >= 0.9,
        "the browser's speech reached the SIP UA with correlation {c:.3}"
    );
    assert_tone("the browser", &browser_heard, 697.0);

    // The browser hangs up: DISCONNECT crosses the PRI and the callee gets the BYE.
    let (status, _, body) = http(rig.http, "DELETE", &location, "", "").await;
    assert_eq!(status, 204, "{body}");
    sipp_ok("the SIP UA behind the PRI (gets the BYE)", callee_sipp).await;
    rig.assert_all_released("browser hung up").await;
    tokio::task::block_in_place(|| peer.close());

    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let route = |n: &str| lines.iter().find(|l| l["route"] == n).cloned();
    let to_pri = route("to-pri").expect("a record for the browser's call");
    let from_pri = route("from-pri").expect("a record for the call off span 2");
    assert_eq!(to_pri["destination"], "span_group:out", "{to_pri}");
    assert_eq!(to_pri["legs"][0]["kind"], "web_rtc", "{to_pri}");
    assert_eq!(from_pri["legs"][0]["kind"], "tdm", "{from_pri}");
    assert_eq!(from_pri["caller"], CALLER, "{from_pri}");
    for l in &lines {
        assert_eq!(l["q850"], 16, "{l}");
        assert!(l["answer"].is_string(), "answered: {l}");
    }
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_transferred_to_an_agent_with_a_tdm_endpoint_crosses_the_pri() {
    let _spans = SPANS.lock().await;
    tokio::time::timeout(Duration::from_secs(90), transfer_to_tdm_agent())
        .await
        .expect("test within 90 s");
}

async fn transfer_to_tdm_agent() {
    let dir = tempfile::tempdir().unwrap();
    let cdr = dir.path().join("cdr.jsonl");
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    let alice_port = free_port();
    let cfg = config(callee, alice_port, &cdr);
    let mut rig = Rig::start(&cfg, 12).await;
    for (agent, token) in [("alice", "alice-token"), ("bob", "bob-token")] {
        let (s, body) = post_json(
            rig.http,
            token,
            &format!("/api/v1/agents/{agent}/login"),
            json!({}),
        )
        .await;
        assert!((200..300).contains(&s), "{agent} login: {s} {body}");
    }

    // Alice's phone echoes; Bob's phone is the SIP UA behind the PRI; the caller's audio and
    // Bob's are sockets of this test.
    let alice = sipp(
        dir.path(),
        &[
            "-sn".into(),
            "uas".into(),
            "-p".into(),
            alice_port.to_string(),
            "-mp".into(),
            free_port().to_string(),
            "-rtp_echo".into(),
            "-m".into(),
            "1".into(),
        ],
    );
    let (rtp_caller, rtp_bob) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let bob = pri_callee(dir.path(), uas_port, rtp_bob.local_addr().unwrap().port());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = sipp(
        dir.path(),
        &[
            rig.gw.sip_udp_addr().unwrap().to_string(),
            "-sf".into(),
            scenario("ctl_uac_talk_long.xml"),
            "-s".into(),
            "support".into(),
            "-p".into(),
            free_port().to_string(),
            "-mp".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
            "-d".into(),
            "9000".into(),
            "-key".into(),
            "caller".into(),
            CALLER.into(),
            "-key".into(),
            "rtpport".into(),
            rtp_caller.local_addr().unwrap().port().to_string(),
        ],
    );

    let events = &mut rig.events;
    let offered = next_event(
        events,
        "call.offered to alice",
        |e| matches!(e, Event::CallOffered { agent, .. } if agent == "alice"),
    )
    .await;
    let uri = offered.call_uri().unwrap().clone();
    next_event(events, "call.answered", |e| {
        matches!(e, Event::CallAnswered { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, body) = post_json(
        rig.http,
        "alice-token",
        &format!("/api/v1/calls/{uri}/transfer"),
        json!({"target": {"agent": "bob"}, "kind": "blind"}),
    )
    .await;
    assert_eq!(s, 202, "transfer: {body}");
    let connected = next_event(&mut rig.events, "transfer.connected", |e| {
        matches!(e, Event::TransferConnected { .. })
    })
    .await;
    assert_eq!(
        connected.call_uri(),
        Some(&uri),
        "transfer.connected names the call: {connected:?}"
    );
    let Event::TransferConnected { target, .. } = &connected else {
        unreachable!()
    };
    assert_eq!(
        serde_json::to_value(target).unwrap(),
        json!({"agent": "bob"}),
        "{connected:?}"
    );
    // Bob's leg is a TDM leg on span 1 (and the call off span 2 is a second engine call).
    let calls = rig
        .gw
        .handle()
        .run(|sw, now| sw.engine.calls(now))
        .await
        .unwrap();
    assert_eq!(calls.len(), 2, "the caller's call and span 2's: {calls:?}");

    let (caller_heard, bob_heard) =
        tokio::task::spawn_blocking(move || exchange(rtp_caller, rtp_bob, Duration::from_secs(10)))
            .await
            .unwrap();
    assert_tone("Bob's phone behind the PRI", &bob_heard, 1004.0);
    assert_tone("the caller", &caller_heard, 697.0);

    sipp_ok("caller (hangs up after 9 s)", caller).await;
    sipp_ok("alice (BYE after the transfer)", alice).await;
    sipp_ok("bob's phone (BYE after the caller left)", bob).await;
    next_event(&mut rig.events, "call.ended", |e| {
        matches!(e, Event::CallEnded { .. })
    })
    .await;
    rig.assert_all_released("caller hung up after the transfer")
        .await;
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let kinds = |l: &Value| -> Vec<String> {
        l["legs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["kind"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = lines
        .iter()
        .find(|l| l["call_uri"] == serde_json::to_value(&uri).unwrap())
        .unwrap_or_else(|| panic!("no record for {uri}: {lines:?}"));
    assert!(
        kinds(first).iter().any(|k| k == "tdm"),
        "Bob's leg was a TDM leg: {first}"
    );
    let from_pri = lines
        .iter()
        .find(|l| l["route"] == "from-pri")
        .unwrap_or_else(|| panic!("no record for the call off span 2: {lines:?}"));
    assert_eq!(from_pri["caller"], CALLER, "{from_pri}");
    rig.shutdown().await;
}
