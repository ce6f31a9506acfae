//! `gwctl tdm spans --gateway` and `gwctl pri trace` as an operator runs them against a running
//! gateway's TDM API: the TDM provider on the in-process simulated E1 pair (span 1 network side,
//! span 2 user side) behind the gateway's HTTP router on 127.0.0.1, a call placed through the
//! provider's leg interface while gwctl follows span 1's D-channel live and saves a pcap. The
//! capture is then decoded by `gwctl pri trace --file` and, as the independent reader, by tshark
//! (Wireshark's Q.921/Q.931 dissectors).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::calls::leg::{
    AudioCodec, EndCause, LegCommand, LegEvent, LegIds, LegKind, LocalMedia, Target,
};
use gateway::calls::server::ProviderPort;
use gateway::config::{Hunt, SpanGroupConfig};
use gateway::tdm::{TdmConfig, TdmProvider};
use tdm_driver::sim::{ClockMode, SimSpans};
use tokio::sync::mpsc;

fn gwctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gwctl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_a_live_trace_from_a_running_gateway_and_the_capture_decoded_twice() {
    let sim = Arc::new(SimSpans::preconfigured(ClockMode::Thread));
    let ids = LegIds::new();
    let groups = [SpanGroupConfig {
        name: "out".into(),
        spans: vec![1],
        hunt: Hunt::Ascending,
    }];
    let provider = TdmProvider::start(
        Instant::now(),
        sim.clone(),
        &TdmConfig::sim_pri_pair(),
        &groups,
        ids.clone(),
        true,
    )
    .unwrap();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let service = gateway::tdm::spawn(
        provider,
        ProviderPort {
            kind: LegKind::Tdm,
            ids: ids.clone(),
            commands: cmd_rx,
            events: ev_tx,
        },
    );
    let handle = service.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = gateway::tdm::http::router(handle.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // Both D-channels up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = handle.status().await.unwrap();
        if s.spans
            .iter()
            .all(|s| s.dchannel.as_ref().is_some_and(|d| d.ready))
        {
            break;
        }
        assert!(Instant::now() < deadline, "D-channels not up: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Follow span 1 live while a call is placed and cleared.
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("span1.pcap");
    let trace = gwctl()
        .args(["pri", "trace", "1", "--gateway", &url, "--seconds", "5"])
        .arg("--pcap")
        .arg(&pcap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leg = ids.next_id();
    cmd_tx
        .send((
            leg,
            LegCommand::Originate {
                target: Target::Tdm {
                    group: "out".into(),
                    number: "4021".into(),
                },
                caller: "5551000".into(),
                caller_name: None,
                media: LocalMedia {
                    address: None,
                    codecs: vec![AudioCodec::Pcma],
                    telephone_event: false,
                    ptime_ms: 20,
                },
                max_forwards: 70,
            },
        ))
        .unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Some((id, LegEvent::Incoming(c))) = ev_rx.recv().await {
                assert_eq!(c.callee, "4021");
                return id;
            }
        }
    })
    .await
    .expect("the call reaches span 2");

    // While the call is up: gwctl tdm spans --gateway shows the link, the TEI and the busy
    // B-channel.
    let out = gwctl()
        .args(["tdm", "spans", "--gateway", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span1 = text.lines().find(|l| l.starts_with("1 ")).unwrap_or("");
    assert!(
        span1.contains("pri_net") && span1.contains("network up"),
        "{text}"
    );
    assert!(
        span1.contains("TEI 0") && span1.contains("1 busy"),
        "{text}"
    );
    assert!(
        text.contains("channels 1..: B."),
        "channel 1 busy first: {text}"
    );
    let out = gwctl()
        .args([
            "--log-format",
            "human",
            "tdm",
            "--json",
            "spans",
            "--gateway",
            &url,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spans"][1]["dchannel"]["role"], "user");
    assert_eq!(v["spans"][0]["channels"][0]["state"], "busy");

    cmd_tx
        .send((
            inbound,
            LegCommand::Reject {
                cause: EndCause::q850(17, "busy"),
            },
        ))
        .unwrap();
    let trace = tokio::task::spawn_blocking(move || trace.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let live = String::from_utf8_lossy(&trace.stdout);
    assert!(
        trace.status.success(),
        "{live}{}",
        String::from_utf8_lossy(&trace.stderr)
    );
    for want in [
        "span 1 > sent",
        "Q.931 SETUP, call reference",
        "Channel ID: exclusive, B-channel 1",
        "Called party number: '4021'",
        "Calling party number: '5551000'",
        "span 1 < received",
        "CALL PROCEEDING",
        "Cause: 17 User busy",
    ] {
        assert!(live.contains(want), "live trace lacks {want:?}:\n{live}");
    }

    // The capture, decoded by gwctl...
    let out = gwctl()
        .args(["pri", "trace", "--file"])
        .arg(&pcap)
        .output()
        .unwrap();
    let decoded = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{decoded}");
    assert!(
        decoded.contains("Q.931 SETUP") && decoded.contains("Cause: 17 User busy"),
        "{decoded}"
    );
    // ... and by Wireshark's dissectors.
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args([
            "-T",
            "fields",
            "-e",
            "q931.message_type",
            "-e",
            "q931.cause_value",
            "-e",
            "q931.called_party_number.digits",
        ])
        .output()
        .expect("tshark not found: apt-get install tshark");
    let fields = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SETUP is message type 0x05, RELEASE COMPLETE 0x5a (cause 17).
    assert!(
        fields
            .lines()
            .any(|l| l.starts_with("0x05") && l.contains("4021")),
        "tshark saw:\n{fields}"
    );
    assert!(
        fields.lines().any(|l| l.contains("17")),
        "tshark saw:\n{fields}"
    );

    // Bad input: a clear error.
    let out = gwctl()
        .args(["pri", "trace", "9", "--gateway", &url, "--seconds", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no span 9"),
        "{:?}",
        out
    );

    // Everything released: no leg, no busy channel.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = handle.status().await.unwrap();
        if s.legs == 0
            && s.spans
                .iter()
                .all(|s| s.channels.iter().all(|c| c.state == "idle"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not idle: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
    service.shutdown().await;
}
