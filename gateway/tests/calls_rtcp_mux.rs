//! RTP/RTCP multiplexing (RFC 5761) when the caller offers it, against a real peer: baresip A
//! (`rtcp_mux yes`) → gateway → baresip B (no mux). A's INVITE offers `a=rtcp-mux`; the
//! gateway's 200 OK to A must answer `a=rtcp-mux`; RTCP must then flow on A's RTP port both
//! ways — the gateway's A leg computes a round-trip time, which takes a receiver report from A
//! (received on the RTP port, the only one A uses) that echoes a sender report the gateway
//! sent there. Audio must correlate ≥ 0.9 both ways, and afterwards nothing is left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaId, MediaPlane, PlaneConfig};
use gateway::sip::transaction::TimerConfig;
use support::baresip::{Baresip, BaresipOptions};

const MIN_CORRELATION: f64 = 0.9;

async fn gateway(callee: SocketAddr) -> (GatewayServer, MediaPlane) {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

[[trunk]]
name = "bob"
address = "{callee}"
codecs = ["PCMU", "PCMA"]

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
    let gw = GatewayServer::start(
        ServerOptions {
            config,
            timers: Some(TimerConfig {
                t1: Duration::from_millis(50),
                t2: Duration::from_millis(400),
                t4: Duration::from_millis(500),
                timer_d: Duration::from_secs(1),
                ..TimerConfig::default()
            }),
            seed: Some([6; 32]),
            external: Vec::new(),
        },
        Box::new(PlaneMedia::new(
            plane.clone(),
            Duration::from_secs(30),
            Country::Etsi,
        )),
    )
    .await
    .unwrap();
    (gw, plane)
}

fn after_onset(x: &[i16], len: usize) -> &[i16] {
    let start = x.iter().position(|s| s.unsigned_abs() > 200).unwrap_or(0);
    let end = (start + len).min(x.len());
    &x[start..end]
}

fn correlation(who: &str, sent: &[i16], heard: &[i16]) -> f64 {
    let seg = after_onset(heard, 20_000);
    assert!(
        seg.len() >= 16_000,
        "{who}: only {} samples of sound decoded (of {})",
        seg.len(),
        heard.len()
    );
    let (c, lag) = support::best_correlation(sent, seg);
    eprintln!("{who}: correlation {c:.4} at lag {lag}");
    c
}

/// The media figures of the plane leg bound to `local` (ids are small numbers).
fn stats_at(plane: &MediaPlane, local: SocketAddr) -> Option<gateway::media::plane::MediaStats> {
    (0..256)
        .filter_map(|i| plane.stats(MediaId(i)))
        .find(|s| s.local == Some(local))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_mux_offered_by_baresip_is_answered_and_rtcp_flows_on_the_rtp_port() {
    let dir = tempfile::tempdir().unwrap();
    let speech = support::speech_8k();
    let reversed: Vec<i16> = speech.iter().rev().copied().collect();
    let a_wav = dir.path().join("a.wav");
    let b_wav = dir.path().join("b.wav");
    // baresip hangs up at the end of its WAV, and its first RTCP report can take longer than
    // one pass of the speech: each agent speaks its signal three times over.
    let thrice = |x: &[i16]| x.repeat(3);
    std::fs::write(&a_wav, codecs::wav::write_pcm16(8000, &thrice(&speech))).unwrap();
    std::fs::write(&b_wav, codecs::wav::write_pcm16(8000, &thrice(&reversed))).unwrap();

    let mut b_opts = BaresipOptions::new("bob", &b_wav);
    b_opts.auto_answer = true;
    let mut a_opts = BaresipOptions::new("alice", &a_wav);
    a_opts.rtcp_mux = true;
    let mut b = tokio::task::spawn_blocking(move || Baresip::start(b_opts))
        .await
        .unwrap();
    let mut a = tokio::task::spawn_blocking(move || Baresip::start(a_opts))
        .await
        .unwrap();
    let (gw, plane) = gateway(b.sip_addr()).await;
    let a_sip = a.sip_addr();
    let target = format!("sip:bob@{}", gw.sip_udp_addr().unwrap());
    let (a, b) = tokio::task::spawn_blocking(move || {
        a.command("dial", &target);
        a.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        b.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        (a, b)
    })
    .await
    .unwrap();

    // The offer and the answer on A's side of the gateway.
    let trace = gw
        .handle()
        .run(|sw, _| sw.trace_since(0, None))
        .await
        .unwrap();
    let invite = trace
        .iter()
        .find(|e| e.direction == "in" && e.first_line.starts_with("INVITE "))
        .expect("A's INVITE");
    assert!(
        invite.text.contains("a=rtcp-mux"),
        "A offers rtcp-mux: {}",
        invite.text
    );
    let answer = trace
        .iter()
        .find(|e| {
            e.direction == "out"
                && e.peer == a_sip
                && e.first_line.starts_with("SIP/2.0 200")
                && e.cseq.as_deref().is_some_and(|c| c.ends_with("INVITE"))
        })
        .expect("the gateway's 200 OK to A");
    assert!(
        answer.text.contains("a=rtcp-mux"),
        "the answer to A has a=rtcp-mux: {}",
        answer.text
    );
    // Only A's leg is checked for mux (B, without it, keeps RTCP on its own port).
    let a_local = gw
        .handle()
        .run(|sw, now| sw.engine.calls(now))
        .await
        .unwrap()
        .first()
        .and_then(|c| c.legs.first())
        .and_then(|l| l.local)
        .expect("A's leg has a local RTP address");

    // RTCP both ways on A's RTP port: a round-trip time on A's leg needs A's report on our SR.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rtt = loop {
        let s = stats_at(&plane, a_local).unwrap_or_else(|| {
            let all: Vec<_> = (0..16)
                .filter_map(|i| plane.stats(MediaId(i)).map(|s| (i, s.local)))
                .collect();
            panic!(
                "A's media leg at {a_local}: the plane has {all:?}; A's log:\n{}\nB's log:\n{}",
                a.log(),
                b.log()
            )
        });
        if let Some(rtt) = s.round_trip {
            break rtt;
        }
        assert!(
            Instant::now() < deadline,
            "no RTCP report from A on the RTP port {a_local} within 20 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("A leg round trip {rtt:?}");
    assert!(rtt < Duration::from_secs(1), "loopback RTT {rtt:?}");

    let (a, b) = tokio::task::spawn_blocking(move || {
        let (mut a, mut b) = (a, b);
        a.command("hangup", "");
        a.wait_event("CALL_CLOSED", Duration::from_secs(10));
        b.wait_event("CALL_CLOSED", Duration::from_secs(10));
        (a, b)
    })
    .await
    .unwrap();
    let c_ab = correlation("A -> B", &speech, &b.decoded_audio());
    let c_ba = correlation("B -> A", &reversed, &a.decoded_audio());
    assert!(c_ab >= MIN_CORRELATION, "A's speech at B: {c_ab:.3}");
    assert!(c_ba >= MIN_CORRELATION, "B's speech at A: {c_ba:.3}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.counters().idle() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.counters().idle(), "gateway not idle after the call");
    gw.shutdown().await.unwrap();
    a.close();
    b.close();
}
