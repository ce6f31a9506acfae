//! Load test of WebRTC legs on this machine: N concurrent calls, each a webrtc-rs offerer in a
//! load-generator process (DTLS + SRTP, 50 packets/s each way) answered by our `RtcLegs` in this
//! process and bridged to an echo through the frame rings. G.711 calls are PCMU end to end;
//! transcoded calls are Opus on the WebRTC leg and PCMU on the echo side (every frame is Opus
//! decoded, G.711 encoded and decoded, and Opus encoded again).
//!
//! Prints one table row per run: calls, CPU of the gateway process (cores), RSS per call, DTLS
//! handshakes per second during set-up, loss both ways, and the load generator's CPU.
//!
//! `cargo bench -p gateway --bench rtc_load -- --calls 500 --codec pcmu --seconds 10`
//! (`--codec opus` for transcoded calls; several `--calls` values may be given, comma-separated.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::media::bridge::{Bridge, Silence, leg_rings};
use gateway::rtc::media::RtcCodec;
use gateway::rtc::{RtcConfig, RtcEvent, RtcLegs};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_PCMU, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use serde_json::{Value, json};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// (user+system CPU seconds, RSS bytes) of a process.
fn proc_usage(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is index 0, utime 11, stime 12.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

fn main() {
    if std::env::args().any(|a| a == "--client") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client());
        return;
    }
    if std::env::args().any(|a| a == "--bench") && arg("--calls").is_none() {
        // `cargo bench` without arguments: a small default run.
        run_all("100", "pcmu", 5);
        return;
    }
    let calls = arg("--calls").unwrap_or_else(|| "100".into());
    let codec = arg("--codec").unwrap_or_else(|| "pcmu".into());
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
    run_all(&calls, &codec, seconds);
}

fn run_all(calls: &str, codec: &str, seconds: u64) {
    println!(
        "| calls | codec (WebRTC leg ↔ echo) | gateway CPU (cores) | CPU per call (% core) | gateway RSS per call | DTLS handshakes/s | loss to gateway | loss to client | load generator CPU (cores) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for n in calls.split(',') {
        let n: usize = n.trim().parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(server(n, codec, seconds));
        rt.shutdown_timeout(Duration::from_secs(5));
    }
}

async fn server(n: usize, codec_name: &str, seconds: u64) {
    let codec = if codec_name == "opus" {
        RtcCodec::Opus
    } else {
        RtcCodec::Pcmu
    };
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--client", "--calls", &n.to_string(), "--codec", codec_name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let child_pid = child.id().to_string();
    let mut to_client = child.stdin.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = line_tx.send(v);
            }
        }
    });

    let legs = RtcLegs::new(RtcConfig {
        codecs: vec![codec],
        connect_timeout: Duration::from_secs(120),
        ..RtcConfig::default()
    });
    let (_, rss0) = proc_usage("self");
    // The echo side of every call, ticked by one thread.
    let echoes: Arc<Mutex<Vec<(Bridge, gateway::media::bridge::LegEndpoint)>>> =
        Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let echoes = Arc::clone(&echoes);
        let stop = Arc::clone(&stop);
        let transcode = codec == RtcCodec::Opus;
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut k = 0u32;
            let mut codes = [0u8; 160];
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                if let Some(d) =
                    (start + Duration::from_millis(20) * k).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(d);
                }
                let mut e = echoes.lock().unwrap();
                for (bridge, ep) in e.iter_mut() {
                    bridge.tick();
                    while let Some(mut f) = ep.pop_to_send() {
                        if transcode {
                            // The PCMU side of an Opus ↔ PCMU call.
                            codecs::g711::encode_frame(codecs::g711::Law::Ulaw, &f, &mut codes);
                            codecs::g711::decode_frame(codecs::g711::Law::Ulaw, &codes, &mut f);
                        }
                        ep.push_received(&f);
                    }
                }
            }
        })
    };

    let setup_start = Instant::now();
    let connected = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let mut all_legs = Vec::new();
    let mut answered = 0;
    while answered < n {
        let Some(v) = line_rx.recv().await else {
            panic!("load generator ended")
        };
        let Some(sdp) = v["sdp"].as_str() else {
            continue;
        };
        let i = v["i"].as_u64().unwrap();
        let new = legs
            .answer(&format!("urn:uuid:load-{i}"), sdp)
            .await
            .unwrap();
        let (ep, echo_port) = leg_rings(8);
        echoes
            .lock()
            .unwrap()
            .push((Bridge::new(new.port, echo_port, Box::new(Silence)), ep));
        writeln!(to_client, "{}", json!({"i": i, "sdp": new.sdp})).unwrap();
        let mut events = new.leg.take_events().unwrap();
        let c = Arc::clone(&connected);
        handles.push(tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if e == RtcEvent::Connected {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        all_legs.push(new.leg);
        answered += 1;
    }
    to_client.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (connected.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let setup = setup_start.elapsed();
    let up = connected.load(Ordering::Relaxed) as usize;
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<_> = all_legs.iter().map(|l| l.media_counters()).collect();
    writeln!(to_client, "{}", json!({"cmd": "mark"})).unwrap();
    to_client.flush().unwrap();
    let (cpu0, _) = proc_usage("self");
    let (ccpu0, _) = proc_usage(&child_pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, rss1) = proc_usage("self");
    let (ccpu1, _) = proc_usage(&child_pid);
    tokio::time::sleep(Duration::from_millis(600)).await; // counters publish every 0.5 s
    let after: Vec<_> = all_legs.iter().map(|l| l.media_counters()).collect();
    writeln!(to_client, "{}", json!({"cmd": "report"})).unwrap();
    to_client.flush().unwrap();
    let report = loop {
        let v = tokio::time::timeout(Duration::from_secs(30), line_rx.recv())
            .await
            .unwrap()
            .unwrap();
        if v.get("received").is_some() {
            break v;
        }
    };
    let (mut got, mut exp) = (0u64, 0u64);
    for (b, a) in before.iter().zip(&after) {
        got += a.received.saturating_sub(b.received);
        exp += a.expected.saturating_sub(b.expected);
    }
    let loss_in = if exp > 0 {
        100.0 * (exp.saturating_sub(got)) as f64 / exp as f64
    } else {
        100.0
    };
    let c_got = report["received"].as_u64().unwrap_or(0);
    let c_exp = report["expected"].as_u64().unwrap_or(0);
    let loss_out = if c_exp > 0 {
        100.0 * (c_exp.saturating_sub(c_got)) as f64 / c_exp as f64
    } else {
        100.0
    };
    let cores = (cpu1 - cpu0) / wall;
    eprintln!(
        "window {wall:.1} s: gateway received {got} of {exp} expected (nominal {}), client received {c_got} of {c_exp}",
        (n as f64 * 50.0 * wall) as u64
    );
    println!(
        "| {n} ({up} up) | {} | {cores:.2} | {:.3} | {:.0} kB | {:.0} | {loss_in:.3} % | {loss_out:.3} % | {:.2} |",
        if codec == RtcCodec::Opus {
            "Opus ↔ PCMU (transcoded)"
        } else {
            "PCMU ↔ PCMU"
        },
        cores * 100.0 / n as f64,
        rss1.saturating_sub(rss0) as f64 / 1024.0 / n as f64,
        n as f64 / setup.as_secs_f64(),
        (ccpu1 - ccpu0) / wall,
    );
    writeln!(to_client, "{}", json!({"cmd": "quit"})).unwrap();
    let _ = to_client.flush();
    for l in &all_legs {
        l.hangup();
    }
    for l in &all_legs {
        l.closed(Duration::from_secs(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    for h in handles {
        h.abort();
    }
    let _ = child.wait();
}

#[derive(Clone)]
struct ClientHandler {
    gathered: tokio::sync::watch::Sender<bool>,
    connected: tokio::sync::mpsc::UnboundedSender<()>,
    rx: Arc<RxCount>,
}

#[derive(Default)]
struct RxCount {
    received: AtomicU64,
    expected: AtomicU64,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.send(());
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let rx = Arc::clone(&self.rx);
        tokio::spawn(async move {
            let mut last: Option<u16> = None;
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    rx.received.fetch_add(1, Ordering::Relaxed);
                    let s = p.header.sequence_number;
                    let step = match last {
                        None => 1,
                        Some(l) => {
                            let d = s.wrapping_sub(l);
                            if d < 0x8000 { u64::from(d) } else { 0 }
                        }
                    };
                    if step > 0 {
                        last = Some(s);
                    }
                    rx.expected.fetch_add(step, Ordering::Relaxed);
                }
            }
        });
    }
}

async fn client() {
    let n: usize = arg("--calls").and_then(|s| s.parse().ok()).unwrap_or(10);
    let opus = arg("--codec").as_deref() == Some("opus");
    let codec = if opus {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        }
    } else {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_PCMU.to_owned(),
                clock_rate: 8000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            payload_type: 0,
        }
    };
    // Payloads to send: a tone, pre-encoded (the generator must not spend CPU encoding).
    let tone: Vec<i16> = (0..160 * 50)
        .map(|i| ((i as f64 * 700.0 / 8000.0 * std::f64::consts::TAU).sin() * 8000.0) as i16)
        .collect();
    let payloads: Vec<Bytes> = if opus {
        let mut enc = codecs::opus::OpusEncoder::new(Default::default()).unwrap();
        tone.chunks_exact(160)
            .map(|f| {
                let mut p = [0u8; 1500];
                let n = enc.encode(f.try_into().unwrap(), &mut p).unwrap();
                Bytes::copy_from_slice(&p[..n])
            })
            .collect()
    } else {
        tone.chunks_exact(160)
            .map(|f| {
                let mut c = [0u8; 160];
                codecs::g711::encode_frame(codecs::g711::Law::Ulaw, f.try_into().unwrap(), &mut c);
                Bytes::copy_from_slice(&c)
            })
            .collect()
    };
    let rx = Arc::new(RxCount::default());
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut pcs: Vec<Arc<dyn PeerConnection>> = Vec::new();
    let mut tracks = Vec::new();
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    // Create offers in parallel batches.
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut joins = Vec::new();
    for i in 0..n {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        let codec = codec.clone();
        let rx = Arc::clone(&rx);
        let conn_tx = conn_tx.clone();
        let stdout = Arc::clone(&stdout);
        joins.push(tokio::spawn(async move {
            let mut me = MediaEngine::default();
            me.register_codec(codec.clone(), RtpCodecKind::Audio)
                .unwrap();
            let registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
            let (g_tx, mut g_rx) = tokio::sync::watch::channel(false);
            let pc = PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(me)
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                        .with_include_loopback_candidate(true)
                        .build(),
                )
                .with_interceptor_registry(registry)
                .with_handler(Arc::new(ClientHandler {
                    gathered: g_tx,
                    connected: conn_tx,
                    rx,
                }))
                .with_udp_addrs(vec!["127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()])
                .build()
                .await
                .unwrap();
            let pc: Arc<dyn PeerConnection> = Arc::new(pc);
            let ssrc = (uuid::Uuid::new_v4().as_u128() as u32) | 1;
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("load-{i}"),
                format!("load-audio-{i}"),
                "load".into(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec.rtp_codec.clone(),
                    ..Default::default()
                }],
            )));
            pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
                .await
                .unwrap();
            let offer = pc.create_offer(None).await.unwrap();
            pc.set_local_description(offer).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), g_rx.wait_for(|g| *g)).await;
            let sdp = pc.local_description().await.unwrap().sdp;
            {
                let mut o = stdout.lock().unwrap();
                writeln!(o, "{}", json!({"i": i, "sdp": sdp})).unwrap();
                o.flush().unwrap();
            }
            drop(permit);
            (pc, track, ssrc)
        }));
    }
    let mut ssrcs = Vec::new();
    for j in joins {
        let (pc, t, s) = j.await.unwrap();
        pcs.push(pc);
        tracks.push(t);
        ssrcs.push(s);
    }
    // Answers come back on stdin.
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = cmd_tx.send(v);
            }
        }
    });
    let mut answered = 0;
    while answered < n {
        let v = cmd_rx.recv().await.unwrap();
        if let (Some(i), Some(sdp)) = (v["i"].as_u64(), v["sdp"].as_str()) {
            let desc = RTCSessionDescription::answer(sdp.to_owned()).unwrap();
            pcs[i as usize].set_remote_description(desc).await.unwrap();
            answered += 1;
        }
    }
    // Send 50 packets/s on every call once connected (connected count only; start now).
    let mut up = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while up < n {
        match tokio::time::timeout_at(deadline, conn_rx.recv()).await {
            Ok(Some(())) => up += 1,
            _ => break,
        }
    }
    let sender = {
        let tracks = tracks.clone();
        let payloads = payloads.clone();
        let units = if opus { 960 } else { 160 };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut k: u32 = 0;
            loop {
                tick.tick().await;
                for (j, t) in tracks.iter().enumerate() {
                    let p = rtc::rtp::Packet {
                        header: rtc::rtp::Header {
                            version: 2,
                            payload_type: codec.payload_type,
                            sequence_number: k as u16,
                            timestamp: k.wrapping_mul(units),
                            ssrc: ssrcs[j],
                            ..Default::default()
                        },
                        payload: payloads[(k as usize) % payloads.len()].clone(),
                    };
                    let _ = t.write_rtp(p).await;
                }
                k = k.wrapping_add(1);
            }
        })
    };
    let (mut r0, mut e0) = (0, 0);
    while let Some(v) = cmd_rx.recv().await {
        match v["cmd"].as_str() {
            Some("mark") => {
                r0 = rx.received.load(Ordering::Relaxed);
                e0 = rx.expected.load(Ordering::Relaxed);
            }
            Some("report") => {
                let mut o = stdout.lock().unwrap();
                writeln!(
                    o,
                    "{}",
                    json!({
                        "received": rx.received.load(Ordering::Relaxed) - r0,
                        "expected": rx.expected.load(Ordering::Relaxed) - e0,
                    })
                )
                .unwrap();
                o.flush().unwrap();
            }
            Some("quit") => break,
            _ => {}
        }
    }
    sender.abort();
    for pc in pcs {
        let _ = pc.close().await;
    }
}
