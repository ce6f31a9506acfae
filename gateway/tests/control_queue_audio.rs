//! What a queued caller hears, on the real engine and plane with a real SIP caller (SIPp): a
//! queue with a music file plays that file, resampled to 8 kHz and looped (the RTP the caller
//! receives correlates with the music, also after it has wrapped round); a queue with the
//! comfort tone plays the 440 Hz hold tone (never silence); a music file that is missing or not
//! a WAV is refused when the configuration is loaded, with the queue and the file named.
//! After the caller hangs up nothing is left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::control_side::EngineCallSide;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::control::Event;
use gateway::control::api::ControlPlane;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};

mod support;

/// The test's "music": a few partials whose pitch moves, so every window of it is distinct
/// (a correlation finds where it is), all below 3.4 kHz. `t` in seconds.
fn music_at(t: f64) -> f64 {
    let tau = std::f64::consts::TAU;
    // Instantaneous frequencies 300 ± 200 Hz, 900 ± 400 Hz, 1,700 ± 300 Hz. Phase of a tone whose frequency is f0 + a·sin(2π·r·t): 2π(f0·t − a/(2πr)·cos(2π·r·t)).
    let p1 = tau * (300.0 * t - 200.0 / (tau * 0.7) * (tau * 0.7 * t).cos());
    let p2 = tau * (900.0 * t - 400.0 / (tau * 0.31) * (tau * 0.31 * t).cos());
    let p3 = tau * (1_700.0 * t + 300.0 / (tau * 1.3) * (tau * 1.3 * t).sin());
    6_000.0 * p1.sin() + 3_000.0 * p2.sin() + 2_000.0 * p3.sin()
}

/// `seconds` of the music sampled at `rate`.
fn music(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| music_at(i as f64 / f64::from(rate)) as i16)
        .collect()
}

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn config_text(music_file: &Path) -> String {
    format!(
        r#"
    [http]
    listen = "127.0.0.1:0"

    [sip]
    udp = "127.0.0.1:0"
    trusted = ["127.0.0.0/8"]

    [[route]]
    name = "music line"
    match = "music"
    to = ["control:queue:music"]

    [[route]]
    name = "tone line"
    match = "tone"
    to = ["control:queue:tone"]

    [[control.agents]]
    id = "alice"
    name = "Alice"
    endpoints = [{{ kind = "sip", uri = "sip:alice@127.0.0.1:9" }}]
    token = "alice-token"

    [[control.queues]]
    name = "music"
    max_wait_ms = 60000
    comfort = {{ kind = "music", file = "{}" }}

    [[control.queues]]
    name = "tone"
    max_wait_ms = 60000
    "#,
        music_file.display()
    )
}

/// A caller whose media is `rtp` (a socket of the test): INVITE `number`, ACK, wait `ms`, BYE.
fn caller(dir: &Path, gw: std::net::SocketAddr, number: &str, rtp: u16, ms: u64) -> Child {
    let text = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="queued caller">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {rtp} RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <pause milliseconds="{ms}"/>
  <send retrans="500"><![CDATA[

      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
</scenario>
"#
    );
    let path = dir.join(format!("caller-{number}.xml"));
    std::fs::write(&path, text).unwrap();
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
        .arg(gw.to_string())
        .args(["-sf", path.to_str().unwrap(), "-s", number, "-m", "1"])
        .args(["-p", &free_port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester")
}

/// PCMA received at `sock` for `limit`, decoded, in arrival order.
fn receive(sock: &UdpSocket, limit: Duration) -> Vec<i16> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf)
            && n > 12
            && buf[1] & 0x7f == 8
        {
            got.extend(buf[12..n].iter().map(|&b| codecs::g711::alaw_decode(b)));
        }
    }
    got
}

struct Rig {
    gw: GatewayServer,
    side: EngineCallSide,
    control: Arc<ControlPlane>,
}

async fn start(music_file: &Path) -> Rig {
    let config = Config::from_toml(&config_text(music_file), "test").unwrap();
    let plane = MediaPlane::start(PlaneConfig {
        workers: 1,
        ..PlaneConfig::default()
    })
    .unwrap();
    let gw = GatewayServer::start(
        ServerOptions {
            config: config.clone(),
            timers: None,
            seed: None,
            external: Vec::new(),
        },
        Box::new(PlaneMedia::new(
            plane,
            Duration::from_secs(30),
            Country::Etsi,
        )),
    )
    .await
    .unwrap();
    let side = EngineCallSide::new(gw.handle());
    let control = ControlPlane::start(config.control.clone(), Arc::new(side.clone())).unwrap();
    side.attach(&control);
    Rig { gw, side, control }
}

impl Rig {
    async fn assert_nothing_left(self) {
        for _ in 0..100 {
            if self.gw.counters().idle() && self.side.mapped_legs() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = self.gw.counters();
        assert_eq!(c.calls.load(Ordering::Relaxed), 0, "live calls");
        assert_eq!(c.legs.load(Ordering::Relaxed), 0, "live legs");
        assert_eq!(c.rtp_sockets.load(Ordering::Relaxed), 0, "open RTP sockets");
        assert_eq!(self.side.mapped_legs(), 0, "mapped control legs");
        let calls = self.control.read(|core, now| {
            core.list_calls(&gateway::control::core::Principal::Admin, now)
                .len()
        });
        assert_eq!(calls, 0, "calls in the control plane");
        self.gw.shutdown().await.unwrap();
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_caller_hears_the_queues_music_file_looped_or_the_hold_tone_never_silence() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // 1.5 s of music written at 16 kHz: the gateway resamples it to 8 kHz and loops it.
    let file = dir.path().join("hold music.wav");
    std::fs::write(&file, codecs::wav::write_pcm16(16_000, &music(16_000, 1.5))).unwrap();
    let rig = start(&file).await;
    let sip = rig.gw.sip_udp_addr().unwrap();
    let mut events = rig.control.subscribe();

    // The music queue: nobody is logged in, so the caller waits and hears the music.
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rtp.local_addr().unwrap().port();
    let sipp = caller(dir.path(), sip, "music", port, 4_500);
    let until = Instant::now() + Duration::from_secs(10);
    let uri = loop {
        let left = until.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, events.recv())
            .await
            .expect("no call.queued within 10 s")
            .unwrap();
        if let Event::CallQueued {
            call_uri, queue, ..
        } = &ev.event
        {
            assert_eq!(queue, "music");
            break call_uri.clone();
        }
    };
    let got = blocking(move || receive(&rtp, Duration::from_millis(3_800))).await;
    assert!(
        got.len() >= 3 * 8_000,
        "queued caller {uri} received {} samples in 3.8 s",
        got.len()
    );
    // The reference: the same music computed at 8 kHz, one loop (the correlation loops it).
    let reference = music(8_000, 1.5);
    // Two 0.5 s windows one loop (1.5 s) apart: both are the music, at the same place in it.
    let first = &got[4_000..8_000];
    let second = &got[16_000..20_000];
    let (r1, at1) = support::best_correlation(&reference, first);
    let (r2, at2) = support::best_correlation(&reference, second);
    eprintln!(
        "music heard: correlation {r1:.3} at {at1}, one loop later {r2:.3} at {at2} (samples)"
    );
    assert!(r1 >= 0.9, "queue music at the caller: correlation {r1:.3}");
    assert!(r2 >= 0.9, "queue music after the loop: correlation {r2:.3}");
    assert_eq!(at1, at2, "one loop later the music is at the same place");
    let (code, err) = blocking(move || {
        let o = sipp.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    })
    .await;
    assert_eq!(code, Some(0), "music caller: {err}");

    // The tone queue: the hold tone, 440 Hz half a second in every two — never silence.
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rtp.local_addr().unwrap().port();
    let sipp = caller(dir.path(), sip, "tone", port, 3_500);
    let got = blocking(move || receive(&rtp, Duration::from_millis(3_000))).await;
    assert!(got.len() >= 2 * 8_000, "tone caller received {}", got.len());
    let frames: Vec<&[i16]> = got.chunks_exact(160).collect();
    let toned = support::tone_frames(&got, 440.0);
    let loud = frames
        .iter()
        .filter(|f| f.iter().any(|v| v.unsigned_abs() > 200))
        .count();
    eprintln!(
        "tone queue: {toned} of {} frames are the 440 Hz tone, {loud} audible",
        frames.len()
    );
    // 0.5 s of tone in every 2 s: about a quarter of the frames, each of them pure 440 Hz.
    assert!(
        toned * 6 >= frames.len(),
        "hold tone heard in {toned} of {} frames",
        frames.len()
    );
    assert_eq!(toned, loud, "everything audible is the hold tone");
    let (code, err) = blocking(move || {
        let o = sipp.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    })
    .await;
    assert_eq!(code, Some(0), "tone caller: {err}");
    rig.assert_nothing_left().await;
}

#[test]
fn a_queue_music_file_that_is_missing_or_not_a_wav_is_refused_naming_the_queue_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here.wav");
    let e = Config::from_toml(&config_text(&missing), "test")
        .expect_err("a missing music file must be refused")
        .to_string();
    assert!(
        e.contains("\"music\"") && e.contains("nothing-here.wav"),
        "error names queue and file: {e}"
    );
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, b"this is not a wav file at all").unwrap();
    let e = Config::from_toml(&config_text(&text), "test")
        .expect_err("a text file must be refused")
        .to_string();
    assert!(
        e.contains("notes.wav") && e.contains("WAV"),
        "error says it is not a WAV: {e}"
    );
    let odd = dir.path().join("odd-rate.wav");
    std::fs::write(&odd, codecs::wav::write_pcm16(11_025, &music(11_025, 1.0))).unwrap();
    let e = Config::from_toml(&config_text(&odd), "test")
        .expect_err("an unsupported rate must be refused")
        .to_string();
    assert!(e.contains("11025"), "error names the rate: {e}");
    let short = dir.path().join("short.wav");
    std::fs::write(&short, codecs::wav::write_pcm16(8_000, &music(8_000, 0.01))).unwrap();
    let e = Config::from_toml(&config_text(&short), "test")
        .expect_err("a file shorter than a frame must be refused")
        .to_string();
    assert!(e.contains("20 ms"), "error says it is too short: {e}");
}
