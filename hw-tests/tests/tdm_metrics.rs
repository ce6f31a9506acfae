//! Per-span Prometheus metrics, read from the gateway's `/metrics` text while a call crosses
//! dahdi-sim's PRI loopback (span 1 network side, span 2 user side) and after it:
//!
//! - before: both D-channels up and ready, no busy channel, no span call counted;
//! - during an answered SIP → span 1 → span 2 → SIP call: one busy B-channel on each span;
//! - after the BYE: no busy channel, span 1 counted one call out and span 2 one call in, no
//!   TDM leg left;
//! - a RED alarm injected on span 2: its alarm gauge goes to 1 (with `alarms="RED"`) and its
//!   D-channel stops taking calls; after the alarm clears, the gauge is 0 and the D-channel
//!   is up and ready again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::sip::transaction::TimerConfig;
use gateway::tdm::{TdmBackend, TdmConfig};
use gateway::web::{WebState, metrics_text};
use hw_tests::{configure_spans, dahdi_root, sim_command, sim_control};

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

fn config(callee: SocketAddr) -> Config {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

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
"#
    );
    let mut cfg = Config::from_toml(&text, "test").unwrap();
    let mut tdm = TdmConfig::sim_pri_pair();
    tdm.backend = TdmBackend::Dahdi;
    tdm.root = dahdi_root().display().to_string();
    cfg.tdm = Some(tdm);
    cfg
}

/// The value of the sample `series` (name with its labels, as printed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes until every `(series, value)` holds, or panics with the last page.
async fn scrape_until(st: &WebState, want: &[(&str, f64)], limit: Duration, what: &str) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = metrics_text(st).await.expect("the switch runs");
        if want.iter().all(|(s, v)| sample(&text, s) == Some(*v)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {want:?} not seen within {limit:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sipp(args: &[String]) -> std::process::Child {
    Command::new("sipp")
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "20",
            "-timeout_error",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp not found: apt-get install -y sip-tester")
}

fn wait_ok(who: &str, child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{who} SIPp failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

const BUSY_1: &str = "gateway_tdm_channels{span=\"1\",state=\"busy\"}";
const BUSY_2: &str = "gateway_tdm_channels{span=\"2\",state=\"busy\"}";
const OUT_1: &str = "gateway_tdm_span_calls_total{span=\"1\",direction=\"out\"}";
const IN_1: &str = "gateway_tdm_span_calls_total{span=\"1\",direction=\"in\"}";
const IN_2: &str = "gateway_tdm_span_calls_total{span=\"2\",direction=\"in\"}";
const OUT_2: &str = "gateway_tdm_span_calls_total{span=\"2\",direction=\"out\"}";
const ALARM_1: &str = "gateway_tdm_span_alarm{span=\"1\"}";
const ALARM_2: &str = "gateway_tdm_span_alarm{span=\"2\"}";
const UP_1: &str = "gateway_tdm_dchannel_up{span=\"1\"}";
const UP_2: &str = "gateway_tdm_dchannel_up{span=\"2\"}";
const READY_2: &str = "gateway_tdm_dchannel_ready{span=\"2\"}";
const LEGS: &str = "gateway_tdm_legs_active";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_metrics_follow_a_call_across_the_pri_loopback_and_an_alarm() {
    configure_spans().expect("dahdi_cfg must succeed");
    let uas_port = free_port();
    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    let cfg = config(callee);
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
        .expect("the TDM provider opens both spans");
    let st = WebState {
        switch: Some(gw.handle()),
        tdm: Some(tdm.handle()),
    };

    // Before: both links up, nothing busy, nothing counted.
    scrape_until(
        &st,
        &[
            (UP_1, 1.0),
            (UP_2, 1.0),
            (READY_2, 1.0),
            (ALARM_1, 0.0),
            (ALARM_2, 0.0),
            (BUSY_1, 0.0),
            (BUSY_2, 0.0),
            (OUT_1, 0.0),
            (IN_2, 0.0),
            (LEGS, 0.0),
        ],
        Duration::from_secs(15),
        "before the call",
    )
    .await;

    // During: an answered call that talks for 3 s (the SDPs name sockets nobody reads).
    let (rtp_a, rtp_b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (pa, pb) = (
        rtp_a.local_addr().unwrap().port(),
        rtp_b.local_addr().unwrap().port(),
    );
    let callee = sipp(&[
        "-p".into(),
        uas_port.to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        "1".into(),
        "-sf".into(),
        scenario("pri_uas_talk.xml").display().to_string(),
        "-key".into(),
        "rtpport".into(),
        pb.to_string(),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = sipp(&[
        gw.sip_udp_addr().unwrap().to_string(),
        "-sf".into(),
        scenario("pri_uac_talk.xml").display().to_string(),
        "-s".into(),
        "94023".into(),
        "-p".into(),
        free_port().to_string(),
        "-mp".into(),
        free_port().to_string(),
        "-m".into(),
        "1".into(),
        "-key".into(),
        "caller".into(),
        "3025550100".into(),
        "-key".into(),
        "rtpport".into(),
        pa.to_string(),
    ]);
    let during = scrape_until(
        &st,
        &[(BUSY_1, 1.0), (BUSY_2, 1.0), (LEGS, 2.0)],
        Duration::from_secs(10),
        "during the call",
    )
    .await;
    assert_eq!(sample(&during, OUT_1), Some(1.0), "{during}");
    assert_eq!(sample(&during, IN_2), Some(1.0), "{during}");
    tokio::task::spawn_blocking(move || {
        wait_ok("caller", caller);
        wait_ok("callee", callee);
    })
    .await
    .unwrap();
    drop((rtp_a, rtp_b));

    // After: channels free, one call counted each way, nothing the other way.
    let after = scrape_until(
        &st,
        &[
            (BUSY_1, 0.0),
            (BUSY_2, 0.0),
            (LEGS, 0.0),
            ("gateway_calls_active", 0.0),
        ],
        Duration::from_secs(15),
        "after the call",
    )
    .await;
    for (s, v) in [(OUT_1, 1.0), (IN_2, 1.0), (IN_1, 0.0), (OUT_2, 0.0)] {
        assert_eq!(sample(&after, s), Some(v), "{s} after the call:\n{after}");
    }

    // A RED alarm on span 2: its gauge flips and its D-channel stops taking calls.
    let control = sim_control().expect("dahdi-sim's control file (hw-tests/run sets it)");
    struct Clear(PathBuf);
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = sim_command(&self.0, "clear 2");
        }
    }
    let clear = Clear(control.clone());
    sim_command(&control, "alarm 2 RED").unwrap();
    let red = scrape_until(
        &st,
        &[(ALARM_2, 1.0), (READY_2, 0.0)],
        Duration::from_secs(10),
        "in alarm",
    )
    .await;
    assert!(
        red.lines()
            .any(|l| l.starts_with("gateway_tdm_span_alarm_info{span=\"2\",alarms=\"RED")),
        "{red}"
    );
    drop(clear);
    scrape_until(
        &st,
        &[(ALARM_2, 0.0), (UP_2, 1.0), (READY_2, 1.0), (UP_1, 1.0)],
        Duration::from_secs(15),
        "after the alarm cleared",
    )
    .await;

    tdm.shutdown().await;
    gw.shutdown().await.unwrap();
}
