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
//! Bob on a SIP phone (`kind = "sip"`, baresip on loopback) with his page open: blind and
//! attended transfers (his page pops "Ringing on your phone", he picks up the phone, his page
//! shows the call on the phone; caller <-> phone >= 0.9 after G.711), his phone busy (486) or
//! not answering (the caller back with Alice with audio both ways, `transfer.failed` busy /
//! no_answer).
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
use support::baresip::{Baresip, BaresipOptions};
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
        Rig::start_with(ring_ms, r#"{ kind = "browser" }"#, r#"["pcmu", "opus"]"#).await
    }

    /// The same with Bob reached at `bob_endpoint` (a TOML endpoint table) and the browsers
    /// offered `rtc_codecs`.
    async fn start_with(ring_ms: u64, bob_endpoint: &str, rtc_codecs: &str) -> Rig {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let text = r#"
    [http]
    listen = "127.0.0.1:0"

    [sip]
    udp = "127.0.0.1:0"
    trusted = ["127.0.0.0/8"]

    [rtc]
    codecs = RTC_CODECS

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
    endpoints = [BOB_ENDPOINT]
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
        let text = text
            .replace(
                "transfer_ring_ms = 10000",
                &format!("transfer_ring_ms = {ring_ms}"),
            )
            .replace("RTC_CODECS", rtc_codecs)
            .replace("BOB_ENDPOINT", bob_endpoint);
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

// Agent Bob on a SIP phone: a baresip UA on loopback (`kind = "sip"` endpoint) while his agent
// page is open and logged in with that endpoint. The browsers offer PCMU only, so every leg is
// G.711. Bob's page must pop with the call's URI, the transfer history and "Ringing on your
// phone" (no answer button); once the page shows that, Bob picks up the phone (baresip
// `accept`), and his page must show the call on the phone with the history. The caller page
// and Bob's phone must hear each other (baresip's decoded dump; correlation >= 0.9 after
// G.711), the caller must no longer hear Alice, nothing is left.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_page_to_agent_page_blind_transfer_to_an_agent_on_a_sip_phone() {
    tokio::time::timeout(Duration::from_secs(75), run_phone("blind"))
        .await
        .expect("the whole scenario within 75 s");
}

/// Alice consults Bob on his phone (the caller on hold), Bob answers, Alice and Bob hear each
/// other, Alice clicks complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_page_to_agent_page_attended_transfer_to_an_agent_on_a_sip_phone() {
    tokio::time::timeout(Duration::from_secs(75), run_phone("attended"))
        .await
        .expect("the whole scenario within 75 s");
}

/// Bob's phone is busy (on another call, with baresip's `call_max_calls 1`: it answers 486): one `transfer.failed`
/// with reason `busy`, Alice's page says so, the caller is back with Alice with audio both
/// ways and never hears Bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_an_agent_whose_sip_phone_is_busy_returns_the_caller_to_the_first_with_audio() {
    tokio::time::timeout(Duration::from_secs(75), run_phone("busy"))
        .await
        .expect("the whole scenario within 75 s");
}

/// Bob's phone rings (his page pops "Ringing on your phone") and nobody picks up: after the
/// 3 s ring timeout the gateway cancels it, Alice's page says `no_answer`, the caller is back
/// with Alice with audio both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_an_agent_whose_sip_phone_does_not_answer_returns_the_caller_to_the_first_with_audio()
 {
    tokio::time::timeout(Duration::from_secs(75), run_phone("noanswer"))
        .await
        .expect("the whole scenario within 75 s");
}

/// Correlation every direction through Bob's phone must reach (G.711 all the way).
const PHONE_MIN: f64 = 0.9;

/// The last `secs` seconds of `x` (less its last 0.25 s, where the call was closing).
fn tail(x: &[i16], secs: f64) -> &[i16] {
    let end = x.len().saturating_sub(2000);
    let start = end.saturating_sub((secs * 8000.0) as usize);
    &x[start..end]
}

/// One scenario with Bob on baresip (`blind`, `attended`, `busy`): the page script drives the
/// caller's, Alice's and Bob's pages; a thread plays Bob at his phone.
async fn run_phone(kind: &'static str) {
    let harness = tokio::task::spawn_blocking(support::browser_harness)
        .await
        .unwrap();
    assert!(
        Path::new("/usr/lib/chromium/chromium").exists(),
        "Chromium is needed for the page tests (apt-get install chromium)"
    );
    let reference = speech_8k();
    let reversed: Vec<i16> = reference.iter().rev().copied().collect();
    let slower = codecs::resample::resample_all(8000, 16000, &reference).unwrap();
    let (dc, da, db, out) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let wav_caller = support::write_capture_wav(dc.path(), &reference);
    let wav_alice = support::write_capture_wav(da.path(), &slower);
    // Bob's phone speaks the reversed speech three times over (baresip's file source does not
    // loop; the correlation loops the reference, so the repeats are the same signal).
    let bob_wav = db.path().join("bob-8k.wav");
    let looped: Vec<i16> = reversed
        .iter()
        .cycle()
        .take(3 * reversed.len())
        .copied()
        .collect();
    std::fs::write(&bob_wav, codecs::wav::write_pcm16(8000, &looped)).unwrap();
    let mut opts = BaresipOptions::new("bob", &bob_wav);
    opts.codecs = vec!["PCMU"];
    // Busy: Bob's phone takes one call at a time and is already on one (with a SIPp UAS), so
    // it answers the gateway's INVITE 486.
    let sipp_dir = tempfile::tempdir().unwrap();
    let mut other_call = None;
    if kind == "busy" {
        opts.max_calls = Some(1);
        let port = || {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .unwrap()
                .port()
        };
        let (sp, mp) = (port(), port());
        let uas = std::process::Command::new("sipp")
            .current_dir(sipp_dir.path())
            .args(["-i", "127.0.0.1", "-nostdin", "-timeout", "60"])
            .args(["-sn", "uas", "-m", "1"])
            .args(["-p", &sp.to_string(), "-mp", &mp.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sipp not found: apt-get install -y sip-tester");
        other_call = Some((uas, format!("sip:other@127.0.0.1:{sp}")));
    }
    let other = other_call.as_ref().map(|(_, uri)| uri.clone());
    let mut phone = tokio::task::spawn_blocking(move || {
        let mut phone = Baresip::start(opts);
        if let Some(uri) = other {
            // SIPp may still be binding its socket: baresip retransmits the INVITE.
            phone.command("dial", &uri);
            phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        }
        phone
    })
    .await
    .unwrap();
    let bob_uri = format!("sip:bob@{}", phone.sip_addr());
    let failing = kind == "busy" || kind == "noanswer";
    let rig = Rig::start_with(
        if kind == "noanswer" { 3000 } else { 10000 },
        &format!(r#"{{ kind = "sip", uri = "{bob_uri}" }}"#),
        r#"["pcmu"]"#,
    )
    .await;

    // Bob at his desk: the phone rings, he looks at his page (the script writes `b_popped` once
    // the pop shows the call), picks up, talks until the call ends. A plain thread, so that a
    // failed page run does not leave the test waiting for it.
    let (tx, phone_done) = tokio::sync::oneshot::channel();
    let popped = out.path().join("b_popped");
    std::thread::spawn(move || {
        if kind == "noanswer" {
            // Nobody picks up: the gateway gives up after the ring timeout (CANCEL).
            phone.wait_event("CALL_INCOMING", Duration::from_secs(40));
            phone.wait_event("CALL_CLOSED", Duration::from_secs(40));
        } else if kind != "busy" {
            phone.wait_event("CALL_INCOMING", Duration::from_secs(40));
            let deadline = Instant::now() + Duration::from_secs(15);
            while !popped.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                popped.exists(),
                "bob's page did not pop while his phone rang"
            );
            phone.command("accept", "");
            phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
            phone.wait_event("CALL_CLOSED", Duration::from_secs(40));
        }
        let _ = tx.send(phone);
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pages/engine_transfer.cjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&rig.base)
        .arg(out.path())
        .env("PW_DIR", &harness)
        .env("CALLER_WAV", &wav_caller)
        .env("ALICE_WAV", &wav_alice)
        .env("ALICE_TOKEN", "alice-token")
        .env("BOB_TOKEN", "bob-token")
        .env("BOB_ENDPOINT", "sip")
        .env("KIND", kind)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the page tests");
    let mut stdout = child.stdout.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(55), child.wait())
        .await
        .expect("the browser run took over 55 s")
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
    let uri = result["call_uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("urn:uuid:"));
    let mut phone = tokio::time::timeout(Duration::from_secs(15), phone_done)
        .await
        .expect("bob's phone did not see the call end within 15 s")
        .expect("bob's phone failed (see its panic above)");

    let ended = rig.control.events_since(0).unwrap_or_default();
    let events: Vec<serde_json::Value> = ended
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    let of = |t: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|v| v["type"] == t && v["call_uri"] == uri.as_str())
            .collect()
    };

    // Before the transfer: the caller page and Alice's page hear each other.
    let mut pairs: Vec<Heard> = vec![
        (
            "caller page (with alice)",
            recording(out.path(), "at_caller_a.pcm"),
            &slower,
            &reference,
        ),
        (
            "alice's page",
            recording(out.path(), "at_a.pcm"),
            &reference,
            &slower,
        ),
    ];
    if failing {
        let status = result["a_transfer_status"].as_str().unwrap_or_default();
        eprintln!("alice's page after the failed transfer: {status}");
        let want = if kind == "busy" { "busy" } else { "no_answer" };
        let timed_out = of("transfer.timed_out");
        let failed = of("transfer.failed");
        if kind == "noanswer" && failed.is_empty() {
            // The ring timeout may also end it as timed out (the same outcome for the caller).
            assert_eq!(timed_out.len(), 1, "one transfer.timed_out: {events:?}");
            assert!(status.starts_with("timed_out"), "alice's page: {status:?}");
        } else {
            assert!(
                status.starts_with("failed") && status.contains(want),
                "alice's page shows the transfer failed as {want}: {status:?}; bob's phone log:\n{}",
                phone.log()
            );
            assert_eq!(failed.len(), 1, "one transfer.failed: {events:?}");
            assert!(timed_out.is_empty(), "{events:?}");
            assert_eq!(failed[0]["reason"], want, "{}", failed[0]);
            assert!(
                failed[0]["caller_returned_to"]
                    .to_string()
                    .contains("alice"),
                "{}",
                failed[0]
            );
        }
        assert!(of("transfer.connected").is_empty());
        if kind == "busy" {
            assert!(
                phone.log().contains("rejected call"),
                "bob's phone refused the gateway's INVITE (486): {}",
                phone.log()
            );
        } else {
            let hint = result["b_pop_hint"].as_str().unwrap_or_default();
            assert!(
                hint.contains(&bob_uri),
                "bob's pop rang on his phone {bob_uri}: {hint:?}"
            );
            // It rang and was cancelled, never answered.
            let types = phone.event_types();
            assert!(
                !types.iter().any(|t| t == "CALL_ESTABLISHED"),
                "bob's phone: {types:?}"
            );
        }
        pairs.push((
            "caller page (back with alice)",
            recording(out.path(), "at_caller_back.pcm"),
            &slower,
            &reference,
        ));
        pairs.push((
            "alice's page (caller back)",
            recording(out.path(), "at_a_back.pcm"),
            &reference,
            &slower,
        ));
    } else {
        let hint = result["b_pop_hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains(&bob_uri),
            "bob's pop names his phone {bob_uri}: {hint:?}"
        );
        let history = result["b_call_history"].as_str().unwrap_or_default();
        assert!(
            history.contains("alice") && history.contains("agent bob"),
            "bob's page shows the transfer history: {history:?}"
        );
        assert_eq!(of("transfer.connected").len(), 1, "{events:?}");
        assert!(of("transfer.failed").is_empty());
        pairs.push((
            "caller page (with bob's phone)",
            recording(out.path(), "at_caller.pcm"),
            &reversed,
            &reference,
        ));
        if kind == "attended" {
            pairs.push((
                "alice's page (consulting bob's phone)",
                recording(out.path(), "at_a_consult.pcm"),
                &reversed,
                &slower,
            ));
        }
    }
    let mut figures: Vec<(String, f64, f64, f64)> = pairs
        .iter()
        .map(|(who, got, hears, own)| {
            assert!(got.len() >= 12_000, "{who}: only {} samples", got.len());
            // G.711 on every leg: each direction, browser or phone, must reach PHONE_MIN.
            (
                who.to_string(),
                best_windows(hears, got),
                best_windows(own, got),
                PHONE_MIN,
            )
        })
        .collect();
    if !failing {
        // What Bob's phone decoded over its whole call: the caller at the end (the caller page
        // recorded 3 s with Bob, then hung up), Alice at the start of a consultation.
        let at_phone = phone.decoded_audio();
        eprintln!("bob's phone decoded {} samples", at_phone.len());
        assert!(
            at_phone.len() >= 3 * 8000,
            "bob's phone decoded {} samples",
            at_phone.len()
        );
        let end = tail(&at_phone, 2.5);
        figures.push((
            "bob's phone (with the caller)".into(),
            best_windows(&reference, end),
            best_windows(&reversed, end),
            PHONE_MIN,
        ));
        figures.push((
            "bob's phone (with the caller) vs alice".into(),
            best_windows(&slower, end),
            0.0,
            f64::MIN,
        ));
        if kind == "attended" {
            let onset = at_phone
                .iter()
                .position(|s| s.unsigned_abs() > 200)
                .unwrap_or(0);
            let start = &at_phone[onset..(onset + 16_000).min(at_phone.len())];
            figures.push((
                "bob's phone (consulted by alice)".into(),
                best_windows(&slower, start),
                best_windows(&reversed, start),
                PHONE_MIN,
            ));
        }
    }
    for (who, c, echo, _) in &figures {
        eprintln!("{who} hears the other party: correlation {c:.3}; itself {echo:.3}");
    }
    for (who, c, echo, min) in figures {
        if min == f64::MIN {
            // Alice must not reach Bob's phone once the caller is with Bob.
            assert!(c < 0.5, "{who}: correlation {c:.3}");
            continue;
        }
        assert!(
            c >= min,
            "{who} hears the other party: correlation {c:.3} < {min}"
        );
        assert!(echo < 0.5, "{who} hears itself: correlation {echo:.3}");
    }
    if !failing {
        let at_caller = recording(out.path(), "at_caller.pcm");
        let alice_at_caller = best_windows(&slower, &at_caller);
        eprintln!("caller page after the transfer vs Alice's voice: {alice_at_caller:.3}");
        assert!(
            alice_at_caller < 0.5,
            "the caller still hears Alice after the transfer ({alice_at_caller:.3})"
        );
    } else {
        let back = recording(out.path(), "at_caller_back.pcm");
        let bob_at_caller = best_windows(&reversed, &back);
        assert!(
            bob_at_caller < 0.5,
            "the caller hears Bob although his phone was busy ({bob_at_caller:.3})"
        );
    }
    rig.assert_nothing_left().await;
    tokio::task::spawn_blocking(move || {
        if let Some((mut uas, _)) = other_call {
            // Bob ends his other call; SIPp (one call) exits after the BYE.
            phone.command("hangup", "");
            phone.wait_event("CALL_CLOSED", Duration::from_secs(5));
            let deadline = Instant::now() + Duration::from_secs(5);
            while uas.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = uas.kill();
            let _ = uas.wait();
        }
        phone.close();
    })
    .await
    .unwrap();
}
