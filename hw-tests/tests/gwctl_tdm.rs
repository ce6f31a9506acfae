//! `gwctl tdm` as an operator runs it against a DAHDI tree: a private dahdi-sim (preconfigured
//! E1 pair, span 1 wired to span 2) on its own mount point inside the harness's namespace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hw_tests::{SimInstance, run_bounded, sim_bin};

fn gwctl_bin(sim: &Path) -> PathBuf {
    let bin = sim.with_file_name("gwctl");
    assert!(
        bin.exists(),
        "{} missing: hw-tests/run builds it",
        bin.display()
    );
    bin
}

fn gwctl(bin: &Path, root: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("tdm").arg("--root").arg(root).args(args);
    run_bounded(&mut cmd, Duration::from_secs(60)).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    sim: SimInstance,
    mnt: PathBuf,
    gwctl: PathBuf,
}

fn setup() -> Option<Setup> {
    let bin = sim_bin()?;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("dahdi");
    std::fs::create_dir(&mnt).unwrap();
    let sim = SimInstance::start(&bin, &["--preconfigured".as_ref()], &mnt);
    Some(Setup {
        gwctl: gwctl_bin(&bin),
        _dir: dir,
        sim,
        mnt,
    })
}

#[test]
fn spans_and_channels_list_the_e1_pair_and_show_an_injected_alarm() {
    let Some(s) = setup() else { return };
    let (code, text) = gwctl(&s.gwctl, &s.mnt, &["spans"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("SPAN") && text.contains("ALARMS"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" E1 ")).count(),
        2,
        "{text}"
    );

    let (code, json) = gwctl(&s.gwctl, &s.mnt, &["spans", "--json"]);
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let spans = v.as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["total_channels"], 31);
    assert_eq!(spans[0]["alarms"], "OK");

    std::fs::write(s.mnt.join("sim/control"), "alarm 1 RED\n").unwrap();
    let (_, json) = gwctl(&s.gwctl, &s.mnt, &["spans", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v[0]["alarms"].as_str().unwrap().contains("RED"), "{json}");
    // The far end gets the remote alarm indication, as on a real E1.
    assert_eq!(v[1]["alarms"], "YELLOW", "{json}");
    std::fs::write(s.mnt.join("sim/control"), "clear 1\n").unwrap();

    let (code, json) = gwctl(&s.gwctl, &s.mnt, &["channels", "--span", "2", "--json"]);
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let chans = v.as_array().unwrap();
    assert_eq!(chans.len(), 31, "{json}");
    assert!(chans.iter().all(|c| c["span"] == 2));
    assert_eq!(chans[0]["channel"], 32);

    let (code, text) = gwctl(&s.gwctl, &s.mnt, &["channels", "--span", "9"]);
    assert_ne!(code, Some(0));
    assert!(text.contains("no span 9"), "{text}");
    drop(s.sim);
}

#[test]
fn timing_test_verdict_matches_its_figures() {
    let Some(s) = setup() else { return };
    let (code, json) = gwctl(&s.gwctl, &s.mnt, &["test", "--seconds", "3", "--json"]);
    // stdout (the JSON) comes first, then the progress bar and any verdict from stderr.
    let start = json.find('{').unwrap();
    let v: serde_json::Value = serde_json::Deserializer::from_str(&json[start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let passes = v["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 3, "{json}");
    let worst = v["worst_percent"].as_f64().unwrap();
    println!("gwctl tdm test: worst {worst:.4} %");
    // The simulator's clock is exact; what a pass measures is how punctually this process is
    // scheduled, which a loaded shared machine can push just under dahdi_test's 99.9 %. The
    // tool's contract is checked either way: exit 0 exactly when the worst pass is >= 99.9 %,
    // else a failure that names the figure; and a working span clock is never grossly off.
    if worst >= 99.9 {
        assert_eq!(code, Some(0), "{json}");
    } else {
        assert_ne!(code, Some(0), "{json}");
        assert!(json.contains("is below 99.9%"), "{json}");
    }
    let min = passes
        .iter()
        .map(|p| p.as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(
        (min - worst).abs() < 1e-9,
        "worst is the lowest pass: {json}"
    );
    assert!(worst > 98.0, "the span clock is far off: {json}");
}

#[test]
fn loop_finds_the_tone_on_the_cross_connected_channel_and_fails_without_a_loop() {
    let Some(s) = setup() else { return };
    let (code, json) = gwctl(
        &s.gwctl,
        &s.mnt,
        &["loop", "1/1", "--peer", "2/1", "--json"],
    );
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["passed"], true);
    let level = v["level_dbm0"].as_f64().unwrap();
    let delay = v["delay_ms"].as_f64().unwrap();
    println!("gwctl tdm loop 1/1 -> 2/1: level {level:.2} dBm0, delay {delay:.1} ms");
    assert!((level + 10.0).abs() < 1.0);
    assert!((0.0..100.0).contains(&delay), "{delay}");

    // No loopback on 1/2 itself: the tone does not come back, and the operator is told why.
    let (code, text) = gwctl(&s.gwctl, &s.mnt, &["loop", "1/2"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("check the loopback"),
        "{text}"
    );
}

#[test]
fn monitor_records_what_the_far_side_sends() {
    let Some(s) = setup() else { return };
    let backend = Arc::new(tdm_driver::DeviceRoot::new(&s.mnt));
    let mut tx = tdm_driver::Channel::open_span_channel(backend, 1, 3).unwrap();
    tx.set_block_size(160).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // 700 Hz at about -10 dBm0, A-law (E1), written block by block while gwctl records.
    let writer = std::thread::spawn(move || {
        let mut phase = 0.0f64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let pcm: [i16; 160] = core::array::from_fn(|_| {
                phase = (phase + 700.0 / 8000.0).fract();
                (7000.0 * (phase * std::f64::consts::TAU).sin()) as i16
            });
            let mut out = [0u8; 160];
            codecs::g711::encode_frame(codecs::g711::Law::Alaw, &pcm, &mut out);
            if tx.write_block(&out).is_err() {
                break;
            }
        }
    });
    let wav = s.mnt.parent().unwrap().join("rec.wav");
    let (code, text) = gwctl(
        &s.gwctl,
        &s.mnt,
        &["monitor", "2/3", wav.to_str().unwrap(), "--seconds", "1"],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(code, Some(0), "{text}");
    let rec = codecs::wav::parse(&std::fs::read(&wav).unwrap()).unwrap();
    assert_eq!(rec.samples.len(), 8000);
    // The tone is there in the second half (the start may hold silence from before the writer).
    let x = &rec.samples[4000..];
    let w = std::f64::consts::TAU * 700.0 / 8000.0;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &v) in x.iter().enumerate() {
        re += f64::from(v) * (w * n as f64).cos();
        im += f64::from(v) * (w * n as f64).sin();
    }
    let amp = (re * re + im * im).sqrt() * 2.0 / x.len() as f64;
    assert!(
        (amp / 7000.0 - 1.0).abs() < 0.05,
        "recorded 700 Hz amplitude {amp:.0}"
    );
}

#[test]
fn a_missing_tree_is_explained() {
    let Some(bin) = sim_bin() else { return };
    let (code, text) = gwctl(
        &gwctl_bin(&bin),
        Path::new("/nonexistent/dahdi"),
        &["spans"],
    );
    assert_ne!(code, Some(0));
    assert!(
        text.contains("no DAHDI device tree at /nonexistent/dahdi"),
        "{text}"
    );
}
