//! The caller and agent pages in real headless Chromium against the REAL engine, media plane
//! and WebRTC provider (not the fake call side of `control_pages`): the caller page calls the
//! `support` queue; agent Alice's page pops with the call's URI and the caller's name and
//! answers in the page (its WebRTC softphone); the caller and Alice hear each other; Alice
//! clicks transfer to Bob; Bob's page pops with the same URI and the transfer history and
//! answers in the page; Alice's softphone closes; the caller and Bob hear each other and the
//! caller no longer hears Alice. Each page is its own Chromium (the fake microphone is one file
//! per process): the caller plays speech, Alice the speech at half speed, Bob the speech
//! reversed; what each page receives is recorded in pairs at the same time (WebAudio on the
//! page's remote stream) and cross-correlated (tests/pages/engine_transfer.cjs drives the
//! pages). The caller page hangs up and nothing is left: no call or leg in the engine or the
//! control plane, no mapped control leg, no WebRTC leg, no media leg or socket.
//!
//! Failed transfers through the pages: Bob's page pops with the URI and Bob declines, or lets
//! it ring past the ring timeout; Alice's page says why (`declined`, `no_answer`), the caller
//! is back with Alice and both hear each other again (correlated), the caller never hears
//! Bob, exactly one `transfer.failed`/`transfer.timed_out` is published, nothing is left.
//!
//! Needs `node`, `npm` (pinned playwright-core, installed by gateway/tests/browser/setup.sh)
//! and `/usr/lib/chromium/chromium`; fails (does not skip) without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::calls::control_side::EngineCallSide;
use gateway::calls::leg::LegKind;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::control::api::ControlPlane;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::rtc::provider::RtcService;
use gateway::sip::transaction::TimerConfig;
use support::{best_correlation, speech_8k};

struct Rig {
    gw: GatewayServer,
    rtc: RtcService,
    side: EngineCallSide,
    control: Arc<ControlPlane>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// A gateway on the real plane with a WebRTC provider and the control plane on the
    /// engine; browser agents Alice (skill `support`) and Bob (skill `sales`), who log in
    /// through their pages; the click-to-call destination `support` goes to the `support`
    /// queue.
    async fn start(ring_ms: u64) -> Rig {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let text = r#"
    [http]
    listen = "127.0.0.1:0"

    [sip]
    udp = "127.0.0.1:0"
    trusted = ["127.0.0.0/8"]

    [rtc]
    codecs = ["pcmu", "opus"]

    [control.timers]
    transfer_setup_ms = 10000
    transfer_ring_ms = 10000

    [[control.agents]]
    id = "alice"
    name = "Alice"
    skills = ["support"]
    endpoints = [{ kind = "browser" }]
    token = "alice-token"

    [[control.agents]]
    id = "bob"
    name = "Bob"
    skills = ["sales"]
    endpoints = [{ kind = "browser" }]
    token = "bob-token"

    [[control.queues]]
    name = "support"
    skill = "support"
    ring_timeout_ms = 10000
    max_wait_ms = 60000
    comfort = { kind = "tone" }

    [[control.click_to_call]]
    id = "support"
    label = "Support"
    target = { queue = "support" }
    "#;
        let text = text.replace(
            "transfer_ring_ms = 10000",
            &format!("transfer_ring_ms = {ring_ms}"),
        );
        let config = Config::from_toml(&text, "test").unwrap();
        let plane = MediaPlane::start(PlaneConfig {
            workers: 1,
            ..PlaneConfig::default()
        })
        .unwrap();
        let mut gw = GatewayServer::start(
            ServerOptions {
                config: config.clone(),
                // Short SIP timers: transactions (Timer M after a 2xx) end within the test.
                timers: Some(TimerConfig {
                    t1: Duration::from_millis(50),
                    t2: Duration::from_millis(400),
                    t4: Duration::from_millis(500),
                    timer_d: Duration::from_secs(1),
                    ..TimerConfig::default()
                }),
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
        let side = EngineCallSide::new(gw.handle()).with_rtc(rtc.handle());
        let control = ControlPlane::start(config.control.clone(), Arc::new(side.clone())).unwrap();
        side.attach(&control);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = gateway::web::control_app(control.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Rig {
            gw,
            rtc,
            side,
            control,
            base,
            server,
        }
    }

    fn live(&self) -> String {
        let c = self.gw.counters();
        let calls = self.control.read(|core, now| {
            core.list_calls(&gateway::control::core::Principal::Admin, now)
                .len()
        });
        format!(
            "engine calls {} legs {} sip legs {} transactions {} media legs {} sockets {}; webrtc legs {}; mapped legs {}; control calls {calls}",
            c.calls.load(Ordering::Relaxed),
            c.legs.load(Ordering::Relaxed),
            c.sip_legs.load(Ordering::Relaxed),
            c.transactions.load(Ordering::Relaxed),
            c.media_legs.load(Ordering::Relaxed),
            c.rtp_sockets.load(Ordering::Relaxed),
            self.rtc.handle().legs().live(),
            self.side.mapped_legs(),
        )
    }

    /// Waits (at most 10 s) until nothing is left and says so.
    async fn assert_nothing_left(self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls = self.control.read(|core, now| {
                core.list_calls(&gateway::control::core::Principal::Admin, now)
                    .len()
            });
            let c = self.gw.counters();
            if c.idle()
                && c.calls.load(Ordering::Relaxed) == 0
                && c.legs.load(Ordering::Relaxed) == 0
                && self.side.mapped_legs() == 0
                && self.rtc.handle().legs().live() == 0
                && calls == 0
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
        self.server.abort();
        self.rtc.shutdown().await;
        self.gw.shutdown().await.unwrap();
    }
}

/// The best correlation with the reference among the three loudest 0.5 s windows of `x` (one
/// clean stretch proves the path on a loaded machine, as in `rtc_engine`).
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

/// Who recorded, what the page received, the voice it should hear, its own voice.
type Heard<'a> = (&'static str, Vec<i16>, &'a [i16], &'a [i16]);

/// Reads a 48 kHz i16le recording the script wrote and brings it to 8 kHz.
fn recording(dir: &Path, name: &str) -> Vec<i16> {
    let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let pcm: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    codecs::resample::resample_all(48000, 8000, &pcm).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_page_to_agent_page_transfer_to_second_agent_page_on_the_real_engine() {
    tokio::time::timeout(Duration::from_secs(60), run("blind"))
        .await
        .expect("the whole scenario within 60 s");
}

/// The same with an attended transfer: Alice consults Bob (the caller on hold), Bob answers
/// in his page, Alice clicks complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_page_to_agent_page_attended_transfer_to_second_agent_page_on_the_real_engine() {
    tokio::time::timeout(Duration::from_secs(60), run("attended"))
        .await
        .expect("the whole scenario within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_a_second_agent_page_that_declines_returns_the_caller_to_the_first_with_audio()
{
    tokio::time::timeout(Duration::from_secs(60), run("decline"))
        .await
        .expect("the whole scenario within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_a_second_agent_page_that_does_not_answer_returns_the_caller_to_the_first_with_audio()
 {
    tokio::time::timeout(Duration::from_secs(60), run("noanswer"))
        .await
        .expect("the whole scenario within 60 s");
}

async fn run(kind: &str) {
    let harness = tokio::task::spawn_blocking(support::browser_harness)
        .await
        .unwrap();
    assert!(
        Path::new("/usr/lib/chromium/chromium").exists(),
        "Chromium is needed for the page tests (apt-get install chromium)"
    );
    let reference = speech_8k();
    let reversed: Vec<i16> = reference.iter().rev().copied().collect();
    // Alice's voice: the speech at half speed (unlike the speech forwards or backwards).
    let slower = codecs::resample::resample_all(8000, 16000, &reference).unwrap();
    let (dc, da, db, out) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let wav_caller = support::write_capture_wav(dc.path(), &reference);
    let wav_alice = support::write_capture_wav(da.path(), &slower);
    let wav_bob = support::write_capture_wav(db.path(), &reversed);
    let ring_ms = if kind == "noanswer" { 3000 } else { 10000 };
    let rig = Rig::start(ring_ms).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pages/engine_transfer.cjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&rig.base)
        .arg(out.path())
        .env("PW_DIR", &harness)
        .env("CALLER_WAV", &wav_caller)
        .env("ALICE_WAV", &wav_alice)
        .env("BOB_WAV", &wav_bob)
        .env("ALICE_TOKEN", "alice-token")
        .env("BOB_TOKEN", "bob-token")
        .env("KIND", kind)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the page tests");
    let mut stdout = child.stdout.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(50), child.wait())
        .await
        .expect("the browser run took over 50 s")
        .unwrap();
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
        .await
        .unwrap();
    println!("{text}");
    eprintln!("gateway after the browser run: {}", rig.live());
    let result: serde_json::Value = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .expect("the script printed no RESULT");
    assert!(
        status.success() && result["ok"] == true,
        "browser run failed: {result}; gateway: {}",
        rig.live()
    );
    assert!(
        result["call_uri"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );

    if kind == "decline" || kind == "noanswer" {
        let status = result["a_transfer_status"].as_str().unwrap_or_default();
        eprintln!("alice's page after the failed transfer: {status}");
        let want = if kind == "decline" {
            "declined"
        } else {
            "no_answer"
        };
        assert!(
            status.contains(want),
            "alice's page shows the reason {want}: {status:?}"
        );
        let heard = [
            (
                "caller page (with alice, before)",
                recording(out.path(), "at_caller_a.pcm"),
                &slower,
                &reference,
            ),
            (
                "alice's page (before)",
                recording(out.path(), "at_a.pcm"),
                &reference,
                &slower,
            ),
            (
                "caller page (back with alice)",
                recording(out.path(), "at_caller_back.pcm"),
                &slower,
                &reference,
            ),
            (
                "alice's page (caller back)",
                recording(out.path(), "at_a_back.pcm"),
                &reference,
                &slower,
            ),
        ];
        for (who, got, hears, own) in &heard {
            assert!(got.len() >= 12_000, "{who}: only {} samples", got.len());
            let c = best_windows(hears, got);
            let echo = best_windows(own, got);
            eprintln!("{who} hears the other party: correlation {c:.3}; itself {echo:.3}");
            assert!(c >= 0.7, "{who} hears the other party: correlation {c:.3}");
            assert!(
                c >= echo + 0.3,
                "{who}: the other party ({c:.3}) is not clearly above its own voice ({echo:.3})"
            );
        }
        let bob_at_caller = best_windows(&reversed, &heard[2].1);
        assert!(
            bob_at_caller < 0.5,
            "the caller hears Bob although the transfer failed ({bob_at_caller:.3})"
        );
        let ended = rig.control.events_since(0).unwrap_or_default();
        let failed = ended
            .iter()
            .filter(|e| {
                let v = serde_json::to_value(e).unwrap_or_default();
                v["type"] == "transfer.failed" || v["type"] == "transfer.timed_out"
            })
            .count();
        assert_eq!(failed, 1, "exactly one transfer.failed/timed_out event");
        rig.assert_nothing_left().await;
        return;
    }

    // What the pages received, recorded in pairs at the same time: caller and Alice before
    // the transfer, caller and Bob after it.
    let at_caller_a = recording(out.path(), "at_caller_a.pcm");
    let at_alice = recording(out.path(), "at_a.pcm");
    let at_caller = recording(out.path(), "at_caller.pcm");
    let at_bob = recording(out.path(), "at_b.pcm");
    let mut pairs: Vec<Heard> = vec![
        ("caller page (with alice)", at_caller_a, &slower, &reference),
        ("alice's page", at_alice, &reference, &slower),
        (
            "caller page (with bob)",
            at_caller.clone(),
            &reversed,
            &reference,
        ),
        ("bob's page", at_bob, &reference, &reversed),
    ];
    if kind == "attended" {
        // Alice and Bob talk during the consultation (the caller on hold).
        for (who, file, hears, own) in [
            (
                "alice's page (consulting bob)",
                "at_a_consult.pcm",
                &reversed,
                &slower,
            ),
            (
                "bob's page (consulted by alice)",
                "at_b_consult.pcm",
                &slower,
                &reversed,
            ),
        ] {
            pairs.push((who, recording(out.path(), file), hears, own));
        }
    }
    let figures: Vec<(&str, f64, f64)> = pairs
        .iter()
        .map(|(who, got, hears, own)| (*who, got, *hears, *own))
        .map(|(who, got, hears, own)| {
            assert!(got.len() >= 12_000, "{who}: only {} samples", got.len());
            let c = best_windows(hears, got);
            let echo = best_windows(own, got);
            eprintln!("{who} hears the other party: correlation {c:.3}; itself {echo:.3}");
            (who, c, echo)
        })
        .collect();
    for (who, c, echo) in figures {
        // Opus over WebRTC between browsers on a loaded 2-core box: 0.78-0.94 for the other
        // party, 0.14-0.36 for a page's own voice. Both bounds must hold, with a clear margin.
        assert!(c >= 0.7, "{who} hears the other party: correlation {c:.3}");
        assert!(echo < 0.5, "{who} hears itself: correlation {echo:.3}");
        assert!(
            c >= echo + 0.3,
            "{who}: the other party ({c:.3}) is not clearly above its own voice ({echo:.3})"
        );
    }
    let alice_at_caller = best_windows(&slower, &at_caller);
    eprintln!("caller page after the transfer vs Alice's voice: correlation {alice_at_caller:.3}");
    assert!(
        alice_at_caller < 0.5,
        "the caller still hears Alice after the transfer ({alice_at_caller:.3})"
    );

    rig.assert_nothing_left().await;
}
