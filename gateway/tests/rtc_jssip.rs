//! JsSIP (npm `jssip`, bundled with esbuild by `gateway/tests/browser/setup.sh`) in real
//! headless Chromium, over SIP-over-WebSocket ([`gateway::rtc::sipws`]) on the real call engine
//! and media plane, against SIPp:
//!
//! - the page registers with digest (JsSIP's `.invalid` Via/Contact: every response comes back
//!   on its connection), calls a SIPp UAS through the engine; the speech of Chromium's
//!   fake-capture WAV arrives at the SIPp side's RTP address (our recorder, the address in
//!   SIPp's SDP) with normalised cross-correlation ≥ 0.9 after G.711; digits sent from the page
//!   by RFC 4733 and by SIP INFO arrive there exactly once each; a re-INVITE from the page is
//!   answered and audio goes on; the page's BYE reaches SIPp; nothing is left;
//! - SIPp calls the registered JsSIP user: the page rings, answers, and hears what the SIP side
//!   sends (≥ 0.9) while the SIP side hears the page; the page's BYE reaches SIPp; a second
//!   call is CANCELled by SIPp while ringing in the page;
//! - the page's WebSocket drops mid-call: the call and its media stay up; JsSIP reconnects,
//!   re-registers and re-INVITEs in the dialog (the re-attach) and the call survives the grace
//!   period; without a re-attach the call ends when the grace period runs out, SIPp gets a BYE
//!   and the CDR says Q.850 102 for the WebRTC leg.
//!
//! The tests fail, not skip, when Chromium, node, the npm packages or SIPp are missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::rtc::provider::RtcService;
use gateway::rtc::sipws::{SipWsConfig, SipWsServer};
use gateway::sip::transaction::TimerConfig;
use serde_json::{Value, json};
use support::{Peer, best_correlation, speech_8k};

const GRACE_S: u64 = 3;

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// What the SIP side's RTP address received, and what it sends back.
#[derive(Default)]
struct Heard {
    pcm: Vec<i16>,
    /// RFC 4733 events: (RTP timestamp, event), one per key press.
    events: Vec<(u32, u8)>,
    packets: u64,
    from: Option<SocketAddr>,
}

/// The SIP party's media: records the PCMU it receives (the address SIPp puts in its SDP) and,
/// with `talk`, sends the speech back to where the gateway's RTP comes from.
struct Media {
    addr: SocketAddr,
    heard: Arc<Mutex<Heard>>,
    task: tokio::task::JoinHandle<()>,
}

impl Media {
    async fn start(talk: Option<Vec<i16>>) -> Media {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let heard = Arc::new(Mutex::new(Heard::default()));
        let h = Arc::clone(&heard);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let (mut seq, mut ts, mut pos) = (1u16, 0u32, 0usize);
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, from)) = r else { break };
                        if n < 12 { continue; }
                        let pt = buf[1] & 0x7f;
                        let mut g = h.lock().unwrap();
                        g.from = Some(from);
                        g.packets += 1;
                        if pt == 0 {
                            let pcm: Vec<i16> = buf[12..n].iter().map(|&c| codecs::g711::ulaw_decode(c)).collect();
                            g.pcm.extend_from_slice(&pcm);
                        } else if pt == 101 && n >= 16 {
                            let stamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                            let ev = buf[12];
                            if !g.events.iter().any(|&(t, e)| t == stamp && e == ev) {
                                g.events.push((stamp, ev));
                            }
                        }
                    }
                    _ = tick.tick() => {
                        let Some(speech) = talk.as_ref() else { continue };
                        let Some(to) = h.lock().unwrap().from else { continue };
                        let mut pkt = vec![0x80u8, 0];
                        pkt.extend_from_slice(&seq.to_be_bytes());
                        pkt.extend_from_slice(&ts.to_be_bytes());
                        pkt.extend_from_slice(&0x5151_0001u32.to_be_bytes());
                        for _ in 0..160 {
                            pkt.push(codecs::g711::ulaw_encode(speech[pos % speech.len()]));
                            pos += 1;
                        }
                        let _ = sock.send_to(&pkt, to).await;
                        seq = seq.wrapping_add(1);
                        ts = ts.wrapping_add(160);
                    }
                }
            }
        });
        Media { addr, heard, task }
    }

    fn packets(&self) -> u64 {
        self.heard.lock().unwrap().packets
    }

    /// The last `seconds` of audio received.
    fn last(&self, seconds: f64) -> Vec<i16> {
        let g = self.heard.lock().unwrap();
        let n = (seconds * 8000.0) as usize;
        g.pcm[g.pcm.len().saturating_sub(n)..].to_vec()
    }

    fn digits(&self) -> String {
        let g = self.heard.lock().unwrap();
        g.events
            .iter()
            .map(|&(_, e)| match e {
                0..=9 => char::from(b'0' + e),
                10 => '*',
                11 => '#',
                _ => '?',
            })
            .collect()
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The best correlation with the reference among the three loudest 0.5 s windows of `x`.
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

const SDP_BODY: &str = "v=0\r\n\
o=sipp 1 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio MEDIAPORT RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n";

/// A SIPp UAS: 180, 200 with our media address, answers re-INVITEs, waits for the BYE.
fn uas_scenario(media: u16) -> String {
    let sdp = SDP_BODY.replace("MEDIAPORT", &media.to_string());
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas with media elsewhere">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <pause milliseconds="200"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
  <recv request="ACK" crlf="true"/>
  <label id="1"/>
  <recv request="INVITE" optional="true" next="2"/>
  <recv request="BYE" timeout="40000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <nop next="9"/>
  <label id="2"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
  <recv request="ACK" next="1"/>
  <label id="9"/>
</scenario>
"#
    )
}

/// A SIPp UAS that rings until it is CANCELled (200 to the CANCEL, 487 to the INVITE).
fn ringing_scenario() -> String {
    r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas rings until cancelled">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <recv request="CANCEL" timeout="20000">
    <action><ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="cs"/></action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [$cs] INVITE
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"#
    .to_owned()
}

/// A SIPp UAC calling `user`, then waiting for the BYE.
fn uac_scenario(user: &str, media: u16) -> String {
    let sdp = SDP_BODY.replace("MEDIAPORT", &media.to_string());
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac to a browser">
  <send retrans="500"><![CDATA[
INVITE sip:{user}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "SIP caller" <sip:5551234@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:5551234@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:{user}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "SIP caller" <sip:5551234@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv request="BYE" timeout="40000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"#
    )
}

/// A SIPp UAC calling `user` and CANCELling after 1.5 s of ringing.
fn cancel_scenario(user: &str, media: u16) -> String {
    let sdp = SDP_BODY.replace("MEDIAPORT", &media.to_string());
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac cancels">
  <send retrans="500"><![CDATA[
INVITE sip:{user}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:5551234@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:5551234@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
  <recv response="100" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="180"/>
  <pause milliseconds="1500"/>
  <!-- CANCEL and the ACK of the 487 carry the INVITE's branch (message 0). -->
  <send><![CDATA[
CANCEL sip:{user}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-5]
From: <sip:5551234@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
  <recv response="487"/>
  <send><![CDATA[
ACK sip:{user}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-8]
From: <sip:5551234@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
</scenario>
"#
    )
}

struct Sipp {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Sipp {
    fn start(scenario: &str, port: u16, target: Option<SocketAddr>) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("scenario.xml");
        std::fs::write(&sf, scenario).unwrap();
        let mut cmd = std::process::Command::new("sipp");
        cmd.current_dir(dir.path());
        // For debugging a scenario: keep SIPp's message and error traces in this directory.
        if let Ok(d) = std::env::var("SIPP_TRACE_DIR") {
            cmd.current_dir(d).args(["-trace_msg", "-trace_err"]);
        }
        if let Some(t) = target {
            cmd.arg(t.to_string());
        }
        cmd.args(["-sf", sf.to_str().unwrap()])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &free_port().to_string()])
            .args(["-m", "1", "-timeout", "45", "-timeout_error", "-nostdin"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd
            .spawn()
            .expect("sipp not found: apt-get install -y sip-tester");
        Sipp { child, _dir: dir }
    }

    async fn finish(self, within: Duration) -> (Option<i32>, String) {
        let mut s = self;
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = s.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (st.code(), err);
            }
            assert!(
                Instant::now() < deadline,
                "SIPp still running after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Rig {
    gw: GatewayServer,
    rtc: RtcService,
    ws: SipWsServer,
}

impl Rig {
    /// The gateway on the real plane with the WebRTC provider and SIP over WebSocket; user
    /// alice may register; `1000` routes to a SIP UAS at `uas`, `alice` to her page.
    async fn start(uas_port: u16) -> Rig {
        Rig::start_with(uas_port, "").await
    }

    /// Like [`Rig::start`] with `rtc_extra` added to the `[rtc]` section; with `sip_wss` in it
    /// the server listens on `wss://` only (no `ws://`), from the configuration's TLS files.
    async fn start_with(uas_port: u16, rtc_extra: &str) -> Rig {
        let text = format!(
            r#"
    [http]
    listen = "127.0.0.1:0"

    [sip]
    udp = "127.0.0.1:0"
    trusted = ["127.0.0.0/8"]

    [rtc]
    codecs = ["pcmu", "opus"]
    grace_s = {GRACE_S}
    {rtc_extra}

    [[user]]
    name = "alice"
    password = "wonderland"

    [[route]]
    name = "to the SIP UAS"
    match = "1000"
    to = ["uri:sip:1000@127.0.0.1:{uas_port}"]

    [[route]]
    name = "alice's page"
    match = "alice"
    to = ["webrtc:alice"]
    "#
        );
        let config = Config::from_toml(&text, "test").unwrap();
        let plane = MediaPlane::start(PlaneConfig {
            workers: 1,
            ..PlaneConfig::default()
        })
        .unwrap();
        let timers = TimerConfig {
            t1: Duration::from_millis(50),
            t2: Duration::from_millis(400),
            t4: Duration::from_millis(500),
            timer_d: Duration::from_secs(1),
            ..TimerConfig::default()
        };
        let mut gw = GatewayServer::start(
            ServerOptions {
                config: config.clone(),
                timers: Some(timers),
                seed: None,
                external: vec![LegKind::WebRtc],
            },
            Box::new(PlaneMedia::new(
                plane,
                Duration::from_secs(30),
                Country::Etsi,
            )),
        )
        .await
        .unwrap();
        let port = gw.take_provider(LegKind::WebRtc).unwrap();
        let rtc = gateway::rtc::provider::start(config.rtc.as_ref().unwrap(), port).unwrap();
        let wss = config.rtc.as_ref().unwrap().wss_tls().unwrap();
        let ws = SipWsServer::start(
            SipWsConfig {
                listen: if wss.is_some() {
                    None
                } else {
                    Some("127.0.0.1:0".parse().unwrap())
                },
                wss,
                realm: "spanbridge".into(),
                users: config
                    .users
                    .iter()
                    .map(|u| (u.name.clone(), u.password.clone()))
                    .collect(),
                timers,
            },
            rtc.handle(),
        )
        .await
        .unwrap();
        Rig { gw, rtc, ws }
    }

    fn live(&self) -> String {
        let c = self.gw.counters();
        let w = self.ws.counters();
        format!(
            "engine calls {} legs {} sip legs {} transactions {} media legs {} sockets {}; webrtc legs {}; sip-ws calls {} detached {}",
            c.calls.load(Ordering::Relaxed),
            c.legs.load(Ordering::Relaxed),
            c.sip_legs.load(Ordering::Relaxed),
            c.transactions.load(Ordering::Relaxed),
            c.media_legs.load(Ordering::Relaxed),
            c.rtp_sockets.load(Ordering::Relaxed),
            self.rtc.handle().legs().live(),
            w.calls.load(Ordering::Relaxed),
            w.detached.load(Ordering::Relaxed),
        )
    }

    fn calls(&self) -> usize {
        self.gw.counters().calls.load(Ordering::Relaxed)
    }

    async fn wait_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.gw.counters();
            if c.idle()
                && c.calls.load(Ordering::Relaxed) == 0
                && c.legs.load(Ordering::Relaxed) == 0
                && self.rtc.handle().legs().live() == 0
                && self.ws.counters().calls.load(Ordering::Relaxed) == 0
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not released within 10 s: {}",
                self.live()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("released: {}", self.live());
    }

    async fn shutdown(self) {
        self.ws.shutdown().await;
        self.rtc.shutdown().await;
        self.gw.shutdown().await.unwrap();
    }
}

/// Runs a JavaScript expression in the page (awaits promises); panics on error.
fn js(p: &mut Peer, code: &str) -> Value {
    p.request(json!({"cmd": "eval", "js": code}), Duration::from_secs(20))["value"].clone()
}

/// Headless Chromium with JsSIP loaded, registered as alice over `ws`.
fn browser(wav: &std::path::Path, ws: SocketAddr) -> Peer {
    register(Peer::chromium(wav), &format!("ws://{ws}"))
}

/// Loads JsSIP in `p` and registers alice at `url`.
fn register(mut p: Peer, url: &str) -> Peer {
    let r = p.request(json!({"cmd": "load-jssip"}), Duration::from_secs(20));
    eprintln!("JsSIP {} loaded", r["version"]);
    let reg = js(
        &mut p,
        &format!("phone.start('{url}', 'alice', 'wonderland', '127.0.0.1')"),
    );
    assert_eq!(reg, "registered", "JsSIP registration over {url}");
    p
}

/// Base64 (RFC 4648, padded) of `data`.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Waits until `media` has received `n` more packets (audio is flowing).
async fn flowing(media: &Media, what: &str) {
    let p0 = media.packets();
    let deadline = Instant::now() + Duration::from_secs(5);
    while media.packets() < p0 + 25 {
        assert!(
            Instant::now() < deadline,
            "{what}: no audio at the SIP side"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_calls_sipp_audio_correlated_dtmf_once_both_ways_reinvite_hold_resume_bye_nothing_left()
 {
    tokio::time::timeout(Duration::from_secs(70), browser_calls_sipp())
        .await
        .expect("the whole scenario within 70 s");
}

async fn browser_calls_sipp() {
    let reference = speech_8k();
    let dir = tempfile::tempdir().unwrap();
    let wav = support::write_capture_wav(dir.path(), &reference);
    let media = Media::start(None).await;
    let uas_port = free_port();
    let rig = Rig::start(uas_port).await;
    let sipp = Sipp::start(&uas_scenario(media.addr.port()), uas_port, None);
    let ws = rig.ws.addr();
    let mut page = blocking(move || browser(&wav, ws)).await;
    assert_eq!(rig.ws.counters().bindings.load(Ordering::Relaxed), 1);

    let (mut page, _) = blocking(move || {
        js(&mut page, "phone.call('sip:1000@127.0.0.1')");
        let c = js(&mut page, "phone.waitFor('confirmed', 10000)");
        (page, c)
    })
    .await;
    flowing(&media, "after answer").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let heard = media.last(2.5);
    let c = best_windows(&reference, &heard);
    eprintln!("page speech at the SIP side (G.711): correlation {c:.3}");
    assert!(c >= 0.9, "page -> SIP: correlation {c:.3}");

    // Digits: two by RFC 4733 (RTCDTMFSender), two by SIP INFO; each arrives once.
    let mut page = blocking(move || {
        js(&mut page, "phone.dtmf('12', 'RFC2833')");
        js(&mut page, "phone.dtmf('34', 'INFO')");
        page
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(media.digits(), "1234", "digits at the SIP side, once each");

    // A re-INVITE from the page (same peer connection) is answered; audio goes on.
    let mut page = blocking(move || {
        assert_eq!(js(&mut page, "phone.renegotiate()"), "renegotiated");
        page
    })
    .await;
    flowing(&media, "after the re-INVITE").await;

    // The page holds (JsSIP hold(): re-INVITE with sendonly audio). Our answer is recvonly;
    // the SIP side hears the hold tone (440 Hz, 0.5 s in 2 s), not the page's speech.
    let mut page = blocking(move || {
        assert_eq!(js(&mut page, "phone.hold(true)"), "held sendonly");
        page
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let heard = media.last(2.0);
    let c = best_windows(&reference, &heard);
    let toned = support::tone_frames(&heard, 440.0);
    eprintln!("page on hold: speech correlation {c:.3}, {toned} of 100 frames the hold tone");
    assert!(
        c < 0.5,
        "the page's speech still reaches the SIP side on hold ({c:.3})"
    );
    assert!(
        toned >= 15,
        "hold tone at the SIP side: {toned} frames of 100"
    );
    // The page resumes: sendrecv again, its speech is back.
    let mut page = blocking(move || {
        assert_eq!(js(&mut page, "phone.hold(false)"), "resumed sendrecv");
        page
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let c = best_windows(&reference, &media.last(2.5));
    eprintln!("page resumed: speech correlation {c:.3}");
    assert!(c >= 0.9, "page -> SIP after resume: correlation {c:.3}");

    // The page hangs up: BYE through the gateway to SIPp.
    let page = blocking(move || {
        js(&mut page, "phone.hangup()");
        page
    })
    .await;
    let (code, err) = sipp.finish(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "SIPp UAS: {err}");
    rig.wait_nothing_left().await;

    // The page gives up while SIPp rings: CANCEL from the page, CANCEL to SIPp.
    let sipp = Sipp::start(&ringing_scenario(), uas_port, None);
    let page = blocking(move || {
        let mut page = page;
        js(&mut page, "phone.call('sip:1000@127.0.0.1')");
        js(&mut page, "phone.waitFor('progress 180', 10000)");
        js(&mut page, "phone.hangup()");
        let f = js(&mut page, "phone.waitFor('failed', 5000)");
        assert_eq!(f, "failed local Canceled", "the page cancelled");
        page
    })
    .await;
    let (code, err) = sipp.finish(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "SIPp UAS (CANCEL from the gateway): {err}");
    rig.wait_nothing_left().await;
    blocking(move || page.close()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.ws.counters().connections.load(Ordering::Relaxed) != 0 {
        assert!(Instant::now() < deadline, "WebSocket left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_the_registered_jssip_user_page_answers_audio_both_ways_then_cancel() {
    tokio::time::timeout(Duration::from_secs(55), sipp_calls_browser())
        .await
        .expect("the whole scenario within 55 s");
}

async fn sipp_calls_browser() {
    let reference = speech_8k();
    let dir = tempfile::tempdir().unwrap();
    // The page speaks the speech backwards, the SIP side forwards: each must hear the other.
    let backwards: Vec<i16> = reference.iter().rev().copied().collect();
    let wav = support::write_capture_wav(dir.path(), &backwards);
    let media = Media::start(Some(reference.clone())).await;
    let rig = Rig::start(free_port()).await;
    let ws = rig.ws.addr();
    let page = blocking(move || browser(&wav, ws)).await;
    let gw_sip = rig.gw.sip_udp_addr().unwrap();
    let sipp = Sipp::start(
        &uac_scenario("alice", media.addr.port()),
        free_port(),
        Some(gw_sip),
    );
    let (mut page, at_page) = blocking(move || {
        let mut page = page;
        let inc = js(&mut page, "phone.waitFor('incoming', 10000)");
        assert_eq!(
            inc, "incoming 5551234",
            "the page rings with the caller's number"
        );
        js(&mut page, "phone.answer()");
        js(&mut page, "phone.waitFor('confirmed', 10000)");
        std::thread::sleep(Duration::from_millis(1500));
        let rec = page.record(3.0);
        (page, rec)
    })
    .await;
    let c = best_windows(&reference, &at_page);
    eprintln!("SIP side's speech in the page: correlation {c:.3}");
    assert!(c >= 0.9, "SIP -> page: correlation {c:.3}");
    let at_sip = media.last(2.5);
    let c = best_windows(&backwards, &at_sip);
    eprintln!("page's speech at the SIP side: correlation {c:.3}");
    assert!(c >= 0.9, "page -> SIP: correlation {c:.3}");
    let page = blocking(move || {
        js(&mut page, "phone.hangup()");
        page
    })
    .await;
    let (code, err) = sipp.finish(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "SIPp UAC (BYE from the page): {err}");
    rig.wait_nothing_left().await;

    // CANCEL while the page rings.
    let sipp = Sipp::start(
        &cancel_scenario("alice", media.addr.port()),
        free_port(),
        Some(gw_sip),
    );
    let page = blocking(move || {
        let mut page = page;
        js(&mut page, "phone.waitNew('incoming', 10000)");
        let f = js(&mut page, "phone.waitFor('failed', 10000)");
        assert_eq!(f, "failed remote Canceled", "the page saw the CANCEL");
        page
    })
    .await;
    let (code, err) = sipp.finish(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "SIPp UAC (CANCEL): {err}");
    rig.wait_nothing_left().await;
    blocking(move || page.close()).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_drop_mid_call_reattach_by_reinvite_keeps_the_call_without_it_the_grace_period_ends_it()
 {
    tokio::time::timeout(Duration::from_secs(58), signalling_loss())
        .await
        .expect("the whole scenario within 58 s");
}

async fn signalling_loss() {
    let reference = speech_8k();
    let dir = tempfile::tempdir().unwrap();
    let wav = support::write_capture_wav(dir.path(), &reference);
    let media = Media::start(None).await;
    let uas_port = free_port();
    let rig = Rig::start(uas_port).await;
    let mut cdrs = rig.gw.handle().subscribe_cdrs();
    let ws = rig.ws.addr();
    let page = blocking(move || browser(&wav, ws)).await;

    // 1. Drop, re-attach (JsSIP reconnects and re-registers; the page re-INVITEs), survive.
    let sipp = Sipp::start(&uas_scenario(media.addr.port()), uas_port, None);
    let mut page = blocking(move || {
        let mut page = page;
        js(&mut page, "phone.call('sip:1000@127.0.0.1')");
        js(&mut page, "phone.waitFor('confirmed', 10000)");
        page
    })
    .await;
    flowing(&media, "before the drop").await;
    let dropped = Instant::now();
    page = blocking(move || {
        js(&mut page, "phone.dropSocket()");
        js(&mut page, "phone.waitNew('registered', 8000)");
        assert_eq!(js(&mut page, "phone.renegotiate()"), "renegotiated");
        page
    })
    .await;
    eprintln!(
        "re-attached {:.1} s after the drop",
        dropped.elapsed().as_secs_f64()
    );
    assert_eq!(
        rig.ws.counters().reattached.load(Ordering::Relaxed),
        1,
        "{}",
        rig.live()
    );
    // Past the grace period: still up, audio still flowing.
    let past = dropped + Duration::from_secs(GRACE_S + 1);
    tokio::time::sleep_until(tokio::time::Instant::from_std(past)).await;
    assert_eq!(rig.calls(), 1, "the call survived: {}", rig.live());
    flowing(&media, "after the re-attach").await;
    page = blocking(move || {
        js(&mut page, "phone.hangup()");
        page
    })
    .await;
    let (code, err) = sipp.finish(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "SIPp UAS: {err}");
    rig.wait_nothing_left().await;
    let cdr = tokio::time::timeout(Duration::from_secs(5), cdrs.recv())
        .await
        .unwrap()
        .unwrap();
    eprintln!("CDR of the re-attached call: {}", cdr.to_json_line());

    // 2. Drop without a re-attach: media stays up through the grace period, then the call ends.
    let sipp = Sipp::start(&uas_scenario(media.addr.port()), uas_port, None);
    page = blocking(move || {
        js(&mut page, "phone.call('sip:1000@127.0.0.1')");
        js(&mut page, "phone.waitNew('confirmed', 10000)");
        page
    })
    .await;
    flowing(&media, "second call").await;
    let dropped = Instant::now();
    page = blocking(move || {
        js(&mut page, "phone.dropSocket()");
        page
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rig.calls(), 1, "up during the grace period: {}", rig.live());
    flowing(&media, "during the grace period").await;
    let (code, err) = sipp.finish(Duration::from_secs(GRACE_S + 8)).await;
    let ended = dropped.elapsed();
    eprintln!(
        "call ended {:.1} s after the drop (grace {GRACE_S} s)",
        ended.as_secs_f64()
    );
    assert_eq!(code, Some(0), "SIPp UAS got its BYE: {err}");
    assert!(
        ended >= Duration::from_secs(GRACE_S),
        "ended before the grace period: {ended:?}"
    );
    rig.wait_nothing_left().await;
    let cdr = tokio::time::timeout(Duration::from_secs(5), cdrs.recv())
        .await
        .unwrap()
        .unwrap();
    let line = cdr.to_json_line();
    eprintln!("CDR after the grace period: {line}");
    let rtc_leg = cdr
        .legs
        .iter()
        .find(|l| l.kind == LegKind::WebRtc)
        .expect("a WebRTC leg in the CDR");
    assert_eq!(rtc_leg.q850, Some(102), "{line}");
    blocking(move || page.close()).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_over_wss_with_a_test_certificate_registers_calls_sipp_audio_both_ways_nothing_left()
{
    tokio::time::timeout(Duration::from_secs(55), browser_calls_sipp_over_wss())
        .await
        .expect("the whole scenario within 55 s");
}

/// `[rtc] sip_wss` with a self-signed certificate made now: Chromium trusts exactly that key
/// (`--ignore-certificate-errors-spki-list`), JsSIP registers over `wss://` with digest (the
/// server has no `ws://` listener), calls the SIPp UAS; each side hears the other (≥ 0.9 after
/// G.711); the page's BYE reaches SIPp; nothing is left, the TLS WebSocket closes.
async fn browser_calls_sipp_over_wss() {
    use sha2::Digest;
    let reference = speech_8k();
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let spki = base64(&sha2::Sha256::digest(ck.key_pair.public_key_der()));
    let cert = dir.path().join("wss.pem");
    let key = dir.path().join("wss.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let backwards: Vec<i16> = reference.iter().rev().copied().collect();
    let wav = support::write_capture_wav(dir.path(), &backwards);
    let media = Media::start(Some(reference.clone())).await;
    let uas_port = free_port();
    let rig = Rig::start_with(
        uas_port,
        &format!(
            "sip_wss = \"127.0.0.1:0\"\n    sip_wss_cert = {:?}\n    sip_wss_key = {:?}",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    )
    .await;
    let wss = rig.ws.wss_addr().expect("the wss:// listener");
    assert_eq!(rig.ws.addr(), wss, "no ws:// listener in this rig");
    let sipp = Sipp::start(&uas_scenario(media.addr.port()), uas_port, None);
    let page = blocking(move || {
        register(
            Peer::chromium_trusting(&wav, &spki),
            &format!("wss://127.0.0.1:{}", wss.port()),
        )
    })
    .await;
    assert_eq!(rig.ws.counters().bindings.load(Ordering::Relaxed), 1);
    let (mut page, at_page) = blocking(move || {
        let mut page = page;
        js(&mut page, "phone.call('sip:1000@127.0.0.1')");
        js(&mut page, "phone.waitFor('confirmed', 10000)");
        std::thread::sleep(Duration::from_millis(1500));
        let rec = page.record(3.0);
        (page, rec)
    })
    .await;
    let c = best_windows(&reference, &at_page);
    eprintln!("wss: SIP side's speech in the page: correlation {c:.3}");
    assert!(c >= 0.9, "SIP -> page over wss: correlation {c:.3}");
    let at_sip = media.last(2.5);
    let c = best_windows(&backwards, &at_sip);
    eprintln!("wss: page's speech at the SIP side: correlation {c:.3}");
    assert!(c >= 0.9, "page -> SIP over wss: correlation {c:.3}");
    let page = blocking(move || {
        js(&mut page, "phone.hangup()");
        page
    })
    .await;
    let (code, err) = sipp.finish(Duration::from_secs(10)).await;
    assert_eq!(
        code,
        Some(0),
        "SIPp UAS (BYE from the page over wss): {err}"
    );
    rig.wait_nothing_left().await;
    blocking(move || page.close()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.ws.counters().connections.load(Ordering::Relaxed) != 0 {
        assert!(Instant::now() < deadline, "TLS WebSocket left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.shutdown().await;
}
