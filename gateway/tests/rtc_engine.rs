//! WebRTC legs as legs of the call engine, against real peers: aiortc POSTs a non-trickle offer
//! to the gateway's WHIP-style endpoint (`POST /api/v1/rtc/whip?to=NUMBER`), the engine routes
//! the call by its `[[route]]` table to a SIPp UAS (PCMU + telephone-event, `-rtp_echo`), and
//! the media plane bridges the browser leg's frame rings to the SIP leg's RTP.
//!
//! Asserted as a user would observe it: the speech aiortc sends comes back to it through the
//! SIP UA's echo (browser → SIP → browser, two G.711 passes) with correlation ≥ 0.9; the RFC
//! 4733 digits aiortc sends reach the gateway once each and are relayed to the SIP UA once
//! each (SIPp echoes the RFC 4733 packets it receives, so the SIP leg reports each digit back
//! exactly once, and the engine relays those to the browser as RFC 4733, where aiortc counts each
//! once); hang-up from the browser (HTTP DELETE → BYE to SIPp) and from the SIP side
//! (SIPp's BYE → the peer connection closes) release everything: no call, leg, WebRTC leg, SIP
//! leg, media leg or socket.
//!
//! Outbound WebRTC legs: a browser (aiortc A) calls `300`, routed to `webrtc:agent`; the
//! provider offers to the registered endpoint `agent`, whose page (aiortc B) answers; speech
//! from each browser reaches the other (correlation ≥ 0.9); B closing its page releases
//! everything (detected by the media timeout, 3 s here: webrtc-rs does not report the peer's
//! DTLS close as a closed connection).
//! The tests fail, not skip, when a peer is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::calls::cdr::LegMediaStats;
use gateway::calls::engine::{CallKey, LegProgress, MediaCommand, MediaNotice, MediaSource};
use gateway::calls::leg::{
    AudioCodec, DigitSource, FramePort as LegFramePort, LegId, LegKind, MediaDirection,
    NegotiatedMedia, PortSlot,
};
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::calls::switch::{MediaBackend, MediaCounts};
use gateway::config::Config;
use gateway::media::bridge::Frame;
use gateway::media::codec::AudioFormat;
use gateway::media::plane::{
    Direction, FramePort, MediaEvent, MediaId, MediaPlane, PlaneConfig, RtpParams, Source,
};
use gateway::rtc::provider::RtcService;
use gateway::sip::transaction::TimerConfig;
use serde_json::json;
use support::{Peer, best_correlation, speech_8k};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

// ----- a media backend on the media plane (what the shell will run) --------------------------

struct PortAdapter(Box<dyn LegFramePort>);

impl FramePort for PortAdapter {
    fn pop_received(&mut self) -> Option<Frame> {
        self.0.pop_received()
    }
    fn push_to_send(&mut self, frame: &Frame) -> bool {
        self.0.push_to_send(frame)
    }
}

struct PlaneMedia {
    plane: MediaPlane,
    ids: HashMap<LegId, MediaId>,
    legs: Arc<Mutex<HashMap<MediaId, (LegId, bool)>>>,
}

impl PlaneMedia {
    fn new() -> Self {
        let plane = MediaPlane::start(PlaneConfig {
            workers: 1,
            rtp_ports: 30000..=39999,
            ..PlaneConfig::default()
        })
        .unwrap();
        PlaneMedia {
            plane,
            ids: HashMap::new(),
            legs: Arc::default(),
        }
    }

    fn id(&self, leg: LegId) -> Option<MediaId> {
        self.ids.get(&leg).copied()
    }
}

fn format(codec: AudioCodec) -> Option<AudioFormat> {
    match codec {
        AudioCodec::Pcmu => Some(AudioFormat::Pcmu),
        AudioCodec::Pcma => Some(AudioFormat::Pcma),
        AudioCodec::L16 => Some(AudioFormat::L16),
        AudioCodec::Opus => None,
    }
}

fn params(m: &NegotiatedMedia) -> Option<RtpParams> {
    let mut p = RtpParams::new(format(m.codec)?, m.remote);
    p.payload_type = m.payload_type;
    p.telephone_event = m.telephone_event;
    p.ptime_ms = m.ptime_ms;
    p.remote_rtcp = m.remote_rtcp;
    p.rtcp_mux = m.rtcp_mux;
    p.direction = match m.direction {
        MediaDirection::SendRecv => Direction::SendRecv,
        MediaDirection::SendOnly => Direction::SendOnly,
        MediaDirection::RecvOnly => Direction::RecvOnly,
        MediaDirection::Inactive => Direction::Inactive,
    };
    Some(p)
}

impl MediaBackend for PlaneMedia {
    fn open_rtp(&mut self, leg: LegId, call: CallKey, ip: IpAddr) -> Result<SocketAddr, String> {
        let (id, addr) = self.plane.open_rtp(call.0, ip).map_err(|e| e.to_string())?;
        self.ids.insert(leg, id);
        self.legs.lock().unwrap().insert(id, (leg, false));
        Ok(addr)
    }

    fn attach_port(&mut self, leg: LegId, call: CallKey, port: PortSlot) -> Result<(), String> {
        let port = port.take().ok_or("the port was taken already")?;
        let id = self
            .plane
            .attach_port(call.0, Box::new(PortAdapter(port)))
            .map_err(|e| e.to_string())?;
        self.ids.insert(leg, id);
        self.legs.lock().unwrap().insert(id, (leg, true));
        Ok(())
    }

    fn execute(&mut self, command: &MediaCommand) -> Result<(), String> {
        let r = match command {
            MediaCommand::ConfigureRtp { leg, media } => match (self.id(*leg), params(media)) {
                (Some(id), Some(p)) => self.plane.configure_rtp(id, p),
                _ => Ok(()),
            },
            MediaCommand::Connect { a, b } => match (self.id(*a), self.id(*b)) {
                (Some(a), Some(b)) => self.plane.connect(a, b),
                _ => Ok(()),
            },
            MediaCommand::Play { leg, source } => match self.id(*leg) {
                Some(id) => self.plane.play(
                    id,
                    match source {
                        MediaSource::Echo => Source::Echo,
                        MediaSource::Milliwatt => Source::Milliwatt,
                        _ => Source::Silence,
                    },
                ),
                None => Ok(()),
            },
            MediaCommand::SendDigit {
                leg,
                digit,
                duration,
            } => match self.id(*leg) {
                Some(id) => self.plane.send_digit(id, *digit, *duration),
                None => Ok(()),
            },
            MediaCommand::Release { leg } => {
                if let Some(id) = self.ids.remove(leg) {
                    self.plane.release(id);
                    self.legs.lock().unwrap().remove(&id);
                }
                Ok(())
            }
            MediaCommand::OpenRtp { .. }
            | MediaCommand::AttachPort { .. }
            | MediaCommand::Mute { .. } => Ok(()),
        };
        if let Err(e) = r {
            panic!("media plane refused {command:?}: {e}");
        }
        Ok(())
    }

    fn leg_stats(&self, _leg: LegId) -> Option<LegMediaStats> {
        None
    }

    fn counts(&self) -> MediaCounts {
        let c = self.plane.counts();
        MediaCounts {
            legs: self.ids.len().max(c.legs),
            sockets: c.sockets,
            bridges: 0,
        }
    }

    fn take_notices(&mut self) -> Option<mpsc::UnboundedReceiver<(LegId, MediaNotice)>> {
        let mut events = self.plane.take_events()?;
        let legs = Arc::clone(&self.legs);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let (id, notice) = match ev {
                    MediaEvent::Digit {
                        id,
                        digit,
                        duration,
                    } => {
                        let port = legs.lock().unwrap().get(&id).is_some_and(|l| l.1);
                        let source = if port {
                            DigitSource::Inband
                        } else {
                            DigitSource::Rfc4733
                        };
                        (
                            id,
                            MediaNotice::Digit {
                                digit,
                                duration,
                                source,
                            },
                        )
                    }
                    MediaEvent::Inactive { id } => (id, MediaNotice::Inactive),
                    MediaEvent::Failed { id, reason } => (id, MediaNotice::Failed(reason)),
                    _ => continue,
                };
                let leg = legs.lock().unwrap().get(&id).map(|l| l.0);
                if let Some(leg) = leg
                    && tx.send((leg, notice)).is_err()
                {
                    break;
                }
            }
        });
        Some(rx)
    }
}

// ----- the gateway under test ----------------------------------------------------------------

struct Gw {
    server: GatewayServer,
    rtc: RtcService,
    http: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
}

async fn gateway(wait_bye: SocketAddr, send_bye: SocketAddr) -> Gw {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

[rtc]
codecs = ["pcmu", "opus"]
media_timeout_s = 3

[[route]]
name = "caller hangs up"
match = "100"
to = ["uri:sip:100@{wait_bye}"]

[[route]]
name = "callee hangs up"
match = "200"
to = ["uri:sip:200@{send_bye}"]

[[route]]
name = "agent page"
match = "300"
to = ["webrtc:agent"]
"#
    );
    let config = Config::from_toml(&text, "test").unwrap();
    let rtc_settings = config.rtc.clone().unwrap();
    let mut server = GatewayServer::start(
        ServerOptions {
            config,
            timers: Some(TimerConfig {
                t1: Duration::from_millis(50),
                t2: Duration::from_millis(400),
                t4: Duration::from_millis(500),
                timer_d: Duration::from_secs(1),
                ..TimerConfig::default()
            }),
            seed: Some([5; 32]),
            external: vec![LegKind::WebRtc],
        },
        Box::new(PlaneMedia::new()),
    )
    .await
    .unwrap();
    let port = server.take_provider(LegKind::WebRtc).unwrap();
    let rtc = gateway::rtc::provider::start(&rtc_settings, port).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let app = gateway::rtc::http::router(rtc.handle());
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Gw {
        server,
        rtc,
        http,
        http_task,
    }
}

impl Gw {
    fn live(&self) -> String {
        let c = self.server.counters();
        format!(
            "calls {} legs {} sip_legs {} transactions {} media_legs {} sockets {} webrtc {}",
            c.calls.load(Ordering::Relaxed),
            c.legs.load(Ordering::Relaxed),
            c.sip_legs.load(Ordering::Relaxed),
            c.transactions.load(Ordering::Relaxed),
            c.media_legs.load(Ordering::Relaxed),
            c.rtp_sockets.load(Ordering::Relaxed),
            self.rtc.handle().legs().live(),
        )
    }

    /// Waits until no call, leg, WebRTC leg, SIP leg, transaction, media leg or socket is left.
    async fn wait_idle(&self, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.server.counters();
            let idle = c.calls.load(Ordering::Relaxed) == 0
                && c.legs.load(Ordering::Relaxed) == 0
                && c.sip_legs.load(Ordering::Relaxed) == 0
                && c.media_legs.load(Ordering::Relaxed) == 0
                && c.rtp_sockets.load(Ordering::Relaxed) == 0
                && self.rtc.handle().legs().live() == 0;
            if idle {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not released within 10 s: {}",
                self.live()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs `offer` (WHIP); returns the answer and the resource URL.
    async fn whip(&self, to: &str, offer: &str) -> (String, String) {
        let (status, headers, body) = http(
            self.http,
            "POST",
            &format!("/api/v1/rtc/whip?to={to}&caller=web"),
            offer,
        )
        .await;
        assert_eq!(status, 201, "WHIP POST: {body}");
        assert!(
            headers.contains("content-type: application/sdp"),
            "{headers}"
        );
        let location = headers
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap()
            .trim()
            .to_owned();
        (body, location)
    }
}

/// A minimal HTTP/1.1 client (one request per connection): status, lower-cased headers, body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

/// The best correlation with the reference among the three loudest 0.5 s windows of `x` (as in
/// `rtc_peers`: one clean stretch proves the path on an overloaded box).
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
        .map(|&(_, k)| best_correlation(reference, &x[k * w..(k + 1) * w]).0)
        .fold(f64::MIN, f64::max)
}

/// Digits the engine saw, per leg, since `rx` subscribed.
fn digits_by_leg(
    rx: &mut tokio::sync::broadcast::Receiver<gateway::calls::engine::LegNotice>,
    into: &mut HashMap<LegId, String>,
) -> HashSet<LegId> {
    let mut answered = HashSet::new();
    while let Ok(n) = rx.try_recv() {
        match n.progress {
            LegProgress::Digit(d) => into.entry(n.leg).or_default().push(d),
            LegProgress::Answered => {
                answered.insert(n.leg);
            }
            _ => {}
        }
    }
    answered
}

/// One real-peer test at a time in this binary (two cores shared with the peers).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_a_registered_agent_page_through_the_engine_audio_both_ways() {
    let _one = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(45), browser_to_browser())
        .await
        .expect("test within 45 s");
}

async fn browser_to_browser() {
    let reference = speech_8k();
    let dir = tempfile::tempdir().unwrap();
    let wav = support::write_wav_8k(dir.path(), &reference);
    // The agent speaks the speech backwards: each browser must hear the other, not itself.
    let reversed: Vec<i16> = reference.iter().rev().copied().collect();
    let dir_b = tempfile::tempdir().unwrap();
    let wav_b = support::write_wav_8k(dir_b.path(), &reversed);
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let gw = gateway(unused, unused).await;
    let mut agent_offers = gw.rtc.handle().register_endpoint("agent");
    let mut a = tokio::task::block_in_place(|| Peer::aiortc(&wav));
    let mut b = tokio::task::block_in_place(|| Peer::aiortc(&wav_b));
    let offer = a.request(json!({"cmd": "offer", "codec": "PCMU"}), T);
    let (answer, _) = gw.whip("300", offer["sdp"].as_str().unwrap()).await;
    let to_agent = tokio::time::timeout(T, agent_offers.recv())
        .await
        .expect("the agent page gets an offer")
        .unwrap();
    assert_eq!(to_agent.caller, "web");
    let b_answer = b.request(
        json!({"cmd": "accept", "sdp": to_agent.sdp, "codec": "PCMU"}),
        T,
    );
    to_agent.answer(b_answer["sdp"].as_str().unwrap().to_owned());
    a.request(json!({"cmd": "answer", "sdp": answer}), T);
    a.request(json!({"cmd": "wait-connected"}), T);
    b.request(json!({"cmd": "wait-connected"}), T);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = gw
        .server
        .handle()
        .run(|sw, now| sw.engine.calls(now))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    for (who, peer, hears, own) in [
        ("caller", &mut a, &reversed, &reference),
        ("agent", &mut b, &reference, &reversed),
    ] {
        let got = tokio::task::block_in_place(|| peer.record(3.0));
        assert!(got.len() >= 16_000, "{who}: only {} samples", got.len());
        let c = best_windows(hears, &got);
        let echo = best_windows(own, &got);
        eprintln!("{who} vs its own speech: correlation {echo:.3}");
        assert!(echo < 0.5, "{who} hears itself (correlation {echo:.3})");
        eprintln!("{who} hears the other browser: correlation {c:.3}");
        assert!(
            c >= 0.9,
            "{who} hears the other browser with correlation {c:.3}"
        );
    }
    // The agent closes its page: its leg ends (media timeout), the engine hangs the caller's
    // leg up, nothing is left.
    tokio::task::block_in_place(|| b.close());
    gw.wait_idle("browser to agent page (agent hung up)").await;
    tokio::task::block_in_place(|| a.close());
    gw.http_task.abort();
    gw.rtc.shutdown().await;
    gw.server.shutdown().await.unwrap();
}

fn mp() -> String {
    // An even port with a free odd neighbour is what SIPp wants for RTP; any free port works
    // for -rtp_echo.
    common::free_udp_port().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_calls_a_sip_ua_through_the_engine_audio_both_ways_dtmf_once_hangup_either_side() {
    let _one = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(45), run())
        .await
        .expect("test within 45 s");
}

async fn run() {
    let started = std::time::Instant::now();
    let reference = speech_8k();
    let dir = tempfile::tempdir().unwrap();
    let wav = support::write_wav_8k(dir.path(), &reference);
    let mp1 = mp();
    let mp2 = mp();
    let uas_wait =
        common::Sipp::start("rtc_uas_wait_bye.xml", None, 1, &["-mp", &mp1, "-rtp_echo"]);
    let uas_bye = common::Sipp::start("rtc_uas_bye.xml", None, 1, &["-mp", &mp2, "-rtp_echo"]);
    let gw = gateway(uas_wait.addr, uas_bye.addr).await;
    let handle = gw.server.handle();
    let mut notices = handle.subscribe_notices();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // ---- call 1: audio both ways, DTMF, the browser hangs up --------------------------------
    let mut peer = tokio::task::block_in_place(|| Peer::aiortc(&wav));
    let offer = peer.request(
        json!({"cmd": "offer", "codec": "PCMU", "telephone_event": true}),
        T,
    );
    let offer = offer["sdp"].as_str().unwrap().to_owned();
    let (answer, location) = gw.whip("100", &offer).await;
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("telephone-event/8000"), "{answer}");
    peer.request(json!({"cmd": "answer", "sdp": answer}), T);
    peer.request(json!({"cmd": "wait-connected"}), T);
    // The SIP UA answers at once; let the media settle, then record the echo.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = handle.run(|sw, now| sw.engine.calls(now)).await.unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let came_back = tokio::task::block_in_place(|| peer.record(3.0));
    assert!(
        came_back.len() >= 16_000,
        "only {} samples came back",
        came_back.len()
    );
    let c = best_windows(&reference, &came_back);
    eprintln!("browser -> SIP UA echo -> browser: correlation {c:.3}");
    assert!(
        c >= 0.9,
        "the speech aiortc sent came back through the SIP UA with correlation {c:.3}"
    );

    peer.request(
        json!({"cmd": "dtmf", "tones": "1234#", "duration": 100, "gap": 80}),
        T,
    );
    // 5 digits × (100 ms + end packets + gap) ≈ 1.2 s; wait for the echo, then a little more:
    // a repeat would show up.
    let mut digits: HashMap<LegId, String> = HashMap::new();
    let mut answered = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        answered.extend(digits_by_leg(&mut notices, &mut digits));
        if digits.len() == 2 && digits.values().all(|d| d.len() >= 5) {
            tokio::time::sleep(Duration::from_millis(700)).await;
            answered.extend(digits_by_leg(&mut notices, &mut digits));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let web_leg: LegId = location
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .map(LegId)
        .unwrap();
    let from_web = digits.get(&web_leg).cloned().unwrap_or_default();
    eprintln!("digits seen by the engine, per leg: {digits:?}");
    let from_sip: Vec<String> = digits
        .iter()
        .filter(|(l, _)| **l != web_leg)
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(
        from_web, "1234#",
        "digits from the browser, each once: {digits:?}"
    );
    assert_eq!(
        from_sip,
        vec!["1234#".to_owned()],
        "digits the SIP UA received (and echoed), each once: {digits:?}"
    );

    // SIP → browser: what the SIP UA sent back (its echo of our RFC 4733) was relayed to the
    // browser leg as RFC 4733 on the peer connection, once per digit.
    let back = peer.request(json!({"cmd": "digits"}), T);
    assert_eq!(
        back["digits"], "1234#",
        "digits from the SIP side at the browser, each once"
    );
    let (status, _, body) = http(gw.http, "DELETE", &location, "").await;
    assert_eq!(status, 204, "{body}");
    let callee = uas_wait.finish().await;
    assert_eq!(
        (callee.0, callee.1, callee.2),
        (Some(0), 1, 0),
        "the SIP UA got the BYE: {}",
        callee.3
    );
    gw.wait_idle("call 1 (browser hung up)").await;
    tokio::task::block_in_place(|| peer.close());
    let (status, _, _) = http(gw.http, "DELETE", &location, "").await;
    assert_eq!(status, 404, "the resource is gone with the call");

    // ---- call 2: the SIP UA hangs up ----------------------------------------------------------
    let mut peer = tokio::task::block_in_place(|| Peer::aiortc(&wav));
    let offer = peer.request(json!({"cmd": "offer", "codec": "PCMU"}), T);
    let (answer, _) = gw.whip("200", offer["sdp"].as_str().unwrap()).await;
    peer.request(json!({"cmd": "answer", "sdp": answer}), T);
    peer.request(json!({"cmd": "wait-connected"}), T);
    let callee = uas_bye.finish().await;
    assert_eq!(
        (callee.0, callee.1, callee.2),
        (Some(0), 1, 0),
        "the SIP UA hung up: {}",
        callee.3
    );
    gw.wait_idle("call 2 (SIP UA hung up)").await;
    tokio::task::block_in_place(|| peer.close());

    let cdrs = handle.run(|sw, _| sw.media_totals().clone()).await;
    assert!(cdrs.is_some());
    eprintln!("whole test took {:?}", started.elapsed());
    gw.http_task.abort();
    gw.rtc.shutdown().await;
    gw.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_refuses_bad_requests_with_clear_errors_and_unreachable_endpoints_fail_the_call() {
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let gw = gateway(unused, unused).await;
    let post = |path: &'static str, ct: &'static str, body: &'static str| {
        let addr = gw.http;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ct}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            let text = String::from_utf8_lossy(&out).into_owned();
            let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
            (status, text)
        }
    };
    let (s, t) = post("/api/v1/rtc/whip?to=100", "application/json", "{}").await;
    assert_eq!(s, 415, "{t}");
    assert!(t.contains("application/sdp"), "{t}");
    let (s, t) = post("/api/v1/rtc/whip", "application/sdp", "v=0\r\n").await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("?to="), "{t}");
    let (s, t) = post("/api/v1/rtc/whip?to=100", "application/sdp", "hello").await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("v=0"), "{t}");
    let (s, t) = post(
        "/api/v1/rtc/whip?to=100",
        "application/sdp",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    )
    .await;
    assert_eq!(s, 400, "{t}");
    let (s, _, t) = http(gw.http, "DELETE", "/api/v1/rtc/whip/12345", "").await;
    assert_eq!(s, 404, "{t}");
    let (s, _, body) = http(gw.http, "GET", "/api/v1/rtc/ice-servers", "").await;
    assert_eq!(s, 200);
    assert!(body.contains("ice_servers"), "{body}");

    // A call routed to a WebRTC endpoint nobody registered fails with Q.850 20 (subscriber
    // absent): the CDR says so and nothing is left.
    let handle = gw.server.handle();
    let mut cdrs = handle.subscribe_cdrs();
    let mut a = common::Ua::bind().await;
    let mut invite = a.new_request(
        gateway::sip::message::Method::Invite,
        gw.server.sip_udp_addr().unwrap(),
        "300",
    );
    invite.headers.push(
        gateway::sip::message::HeaderName::ContentType,
        "application/sdp",
    );
    invite.body = common::SDP_OFFER.as_bytes().to_vec();
    a.layer
        .send_request(
            Instant::now(),
            invite,
            gw.server.sip_udp_addr().unwrap(),
            gateway::sip::transaction::Reliability::Unreliable,
        )
        .unwrap();
    let limit = Instant::now() + Duration::from_secs(10);
    let mut final_status = None;
    while final_status.is_none() && Instant::now() < limit {
        for e in a.step(None, limit).await {
            if let gateway::sip::transaction::TuEvent::Response { response, .. } = e
                && response.status >= 200
            {
                final_status = Some(response.status);
            }
        }
    }
    let status = final_status.expect("a final response to the INVITE");
    assert!(
        (400..600).contains(&status),
        "the caller is refused, got {status}"
    );
    let cdr = tokio::time::timeout(T, cdrs.recv()).await.unwrap().unwrap();
    let line = cdr.to_json_line();
    assert!(line.contains("not registered"), "{line}");
    gw.wait_idle("call to an unregistered page").await;
    gw.http_task.abort();
    gw.rtc.shutdown().await;
    gw.server.shutdown().await.unwrap();
}
