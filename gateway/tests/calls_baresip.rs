//! Real peers: baresip A → gateway → baresip B on 127.0.0.1, through the same server the
//! `gateway` binary runs (configured from TOML) on the real media plane.
//!
//! A speaks the speech reference (codecs/tests/data/speech-8k.wav), B speaks it reversed (a
//! different signal, so each direction is told apart). What each agent decoded (baresip's
//! `sndfile` dump) must correlate ≥ 0.9 with what the other one sent, after G.711 both ways and
//! an alignment by lag search. Digits A sends as RFC 4733 (`sndcode`) must arrive at B exactly
//! once each, as the gateway counted them. The call is hung up from either side, and then the
//! gateway holds no call, leg, SIP leg, transaction, media leg or RTP socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::sip::transaction::TimerConfig;
use support::baresip::{Baresip, BaresipOptions};

/// The digits A presses (a repeated digit must arrive twice, not be merged).
const DIGITS: &str = "1559#*0";

/// Correlation every direction must reach.
const MIN_CORRELATION: f64 = 0.9;

fn timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
        timer_d: Duration::from_secs(1),
        ..TimerConfig::default()
    }
}

async fn gateway(callee: SocketAddr, sip_extra: &str) -> GatewayServer {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]
{sip_extra}

[[trunk]]
name = "bob"
address = "{callee}"
codecs = ["PCMU", "PCMA"]
dtmf = "rfc4733"

[[route]]
name = "bob"
match = "bob"
to = ["trunk:bob"]
"#
    );
    let config = Config::from_toml(&text, "test").unwrap();
    let plane = MediaPlane::start(PlaneConfig {
        workers: 1,
        ..PlaneConfig::default()
    })
    .unwrap();
    GatewayServer::start(
        ServerOptions {
            config,
            timers: Some(timers()),
            seed: Some([5; 32]),
            external: Vec::new(),
        },
        Box::new(PlaneMedia::new(
            plane,
            Duration::from_secs(30),
            Country::Etsi,
        )),
    )
    .await
    .unwrap()
}

/// The decoded audio from its first sound on, `len` samples of it.
fn after_onset(x: &[i16], len: usize) -> &[i16] {
    let start = x.iter().position(|s| s.unsigned_abs() > 200).unwrap_or(0);
    let end = (start + len).min(x.len());
    &x[start..end]
}

/// The best correlation of `heard` (what an agent decoded) against `sent` (the other agent's
/// microphone), over the first 2.5 s after its onset, before any digit was pressed.
fn correlation(who: &str, sent: &[i16], heard: &[i16]) -> f64 {
    let seg = after_onset(heard, 20_000);
    assert!(
        seg.len() >= 16_000,
        "{who}: only {} samples of sound decoded (of {})",
        seg.len(),
        heard.len()
    );
    let (c, lag) = support::best_correlation(sent, seg);
    eprintln!(
        "{who}: correlation {c:.4} at lag {lag} over {} samples",
        seg.len()
    );
    c
}

fn counters_idle(gw: &GatewayServer) -> String {
    let c = gw.counters();
    format!(
        "calls {} legs {} sip_legs {} transactions {} media_legs {} rtp_sockets {}",
        c.calls.load(Ordering::Relaxed),
        c.legs.load(Ordering::Relaxed),
        c.sip_legs.load(Ordering::Relaxed),
        c.transactions.load(Ordering::Relaxed),
        c.media_legs.load(Ordering::Relaxed),
        c.rtp_sockets.load(Ordering::Relaxed),
    )
}

async fn assert_idle_within(gw: &GatewayServer, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !gw.counters().idle() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.counters().idle(),
        "gateway not idle after {limit:?}: {}",
        counters_idle(gw)
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HangUp {
    Caller,
    Callee,
}

/// Writes a self-signed certificate for 127.0.0.1 and its key (PEM) into `dir`; returns the
/// `[sip]` lines of a TLS listener that uses them.
fn tls_listener(dir: &std::path::Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.join("gw-cert.pem");
    let key = dir.join("gw-key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    format!(
        "tls = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

async fn call(hang_up: HangUp, tls: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let speech = support::speech_8k();
    let reversed: Vec<i16> = speech.iter().rev().copied().collect();
    let a_wav = dir.path().join("a.wav");
    let b_wav = dir.path().join("b.wav");
    std::fs::write(&a_wav, codecs::wav::write_pcm16(8000, &speech)).unwrap();
    std::fs::write(&b_wav, codecs::wav::write_pcm16(8000, &reversed)).unwrap();

    let mut b_opts = BaresipOptions::new("bob", &b_wav);
    b_opts.auto_answer = true;
    let mut b = tokio::task::spawn_blocking(move || Baresip::start(b_opts))
        .await
        .unwrap();
    let mut a =
        tokio::task::spawn_blocking(move || Baresip::start(BaresipOptions::new("alice", &a_wav)))
            .await
            .unwrap();
    let sip_extra = if tls {
        tls_listener(dir.path())
    } else {
        String::new()
    };
    let gw = gateway(b.sip_addr(), &sip_extra).await;
    // Over TLS A dials the TLS listener (a TCP port: nothing there speaks UDP).
    let target = if tls {
        format!("sip:bob@{};transport=tls", gw.sip_tls_addr().unwrap())
    } else {
        format!("sip:bob@{}", gw.sip_udp_addr().unwrap())
    };

    // The agents block on their control sockets: drive them off the runtime.
    let (a, b) = tokio::task::spawn_blocking(move || {
        a.command("dial", &target);
        a.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        b.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        // 3 s of speech both ways before the first digit.
        std::thread::sleep(Duration::from_secs(3));
        for d in DIGITS.chars() {
            a.command("sndcode", &d.to_string());
            std::thread::sleep(Duration::from_millis(250));
        }
        for _ in DIGITS.chars() {
            b.wait_event("CALL_DTMF_START", Duration::from_secs(5));
        }
        // Late duplicates (end-of-event retransmissions turned into a second press) would
        // show up here.
        b.drain_events(Duration::from_millis(700));
        match hang_up {
            HangUp::Caller => a.command("hangup", ""),
            HangUp::Callee => b.command("hangup", ""),
        };
        a.wait_event("CALL_CLOSED", Duration::from_secs(10));
        b.wait_event("CALL_CLOSED", Duration::from_secs(10));
        (a, b)
    })
    .await
    .unwrap();

    assert_eq!(
        b.digits_received(),
        DIGITS,
        "B received each digit exactly once, in order; B's events: {:?}",
        b.event_types()
    );
    let ends = b
        .events
        .iter()
        .filter(|e| e["type"] == "CALL_DTMF_END")
        .count();
    assert_eq!(ends, DIGITS.len(), "one end of event per digit at B");
    assert_eq!(a.digits_received(), "", "nothing came back to A");
    let stats = gw
        .handle()
        .run(|sw, _| sw.engine.stats().clone())
        .await
        .unwrap();
    assert_eq!(
        stats.digits_relayed,
        DIGITS.len() as u64,
        "the gateway relayed each digit once"
    );
    assert_eq!(stats.calls_answered, 1);

    // Audio both ways (the dumps are complete once the calls closed).
    let heard_at_b = b.decoded_audio();
    let heard_at_a = a.decoded_audio();
    let c_ab = correlation("A -> B", &speech, &heard_at_b);
    let c_ba = correlation("B -> A", &reversed, &heard_at_a);
    assert!(
        c_ab >= MIN_CORRELATION,
        "A's speech at B: correlation {c_ab:.3}"
    );
    assert!(
        c_ba >= MIN_CORRELATION,
        "B's speech at A: correlation {c_ba:.3}"
    );
    // The other direction's signal is not what B heard (the check can fail).
    let (cross, _) = support::best_correlation(&reversed, after_onset(&heard_at_b, 20_000));
    assert!(
        cross < 0.5,
        "B heard its own signal? correlation {cross:.3}"
    );

    assert_idle_within(&gw, Duration::from_secs(10)).await;
    gw.shutdown().await.unwrap();
    a.close();
    b.close();
    eprintln!("{hang_up:?} hang-up: whole test {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_to_baresip_audio_both_ways_digits_once_caller_hangs_up() {
    call(HangUp::Caller, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_to_baresip_audio_both_ways_digits_once_callee_hangs_up() {
    call(HangUp::Callee, false).await;
}

/// The caller reaches the gateway over SIP over TLS (rustls, the `[sip] tls` listener with a
/// PEM certificate); the callee leg is UDP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_caller_over_tls_audio_both_ways_digits_once() {
    call(HangUp::Caller, true).await;
}
