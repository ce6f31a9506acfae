//! The Debian DAHDI tools against our device tree: `dahdi_cfg` configures the span pair,
//! `dahdi_scan` and `lsdahdi` list it, `dahdi_test` measures the master clock, `dahdi_monitor`
//! records a channel, and SPANSTAT is polled over every span number as `dahdi_tool` does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::raw::{Dev, field_i32, field_str, params, spaninfo};
use hw_tests::{configure_spans, node, run_bounded};
use std::process::Command;
use std::time::{Duration, Instant};

const SIG_CLEAR: i32 = 0x80;
const SIG_HDLCFCS: i32 = 0x380;
const SIG_HARDHDLC: i32 = 0x80080;
/// CCS | HDB3 | CRC4, as dahdi_cfg encodes `ccs,hdb3,crc4`.
const LINECONFIG_CCS_HDB3_CRC4: i32 = 0x700;

#[test]
fn dahdi_cfg_configures_both_spans_and_the_result_reads_back() {
    let out = configure_spans().expect("dahdi_cfg must succeed");
    println!("{out}");
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    for spanno in [1, 2] {
        let info = ctl.spanstat(spanno).unwrap();
        assert_eq!(field_i32(&info, spaninfo::SPANNO), spanno);
        assert_eq!(
            field_i32(&info, spaninfo::LINECONFIG),
            LINECONFIG_CCS_HDB3_CRC4,
            "SPANCONFIG of span {spanno} visible in SPANSTAT"
        );
        assert_eq!(
            field_i32(&info, spaninfo::NUMCHANS),
            31,
            "all 31 channels configured"
        );
        assert_eq!(field_i32(&info, spaninfo::TOTALCHANS), 31);
        assert_eq!(field_str(&info, spaninfo::SPANTYPE, 6), "E1");
    }
    // span=1,1,...: span 1 is the timing source.
    assert_eq!(field_i32(&ctl.spanstat(2).unwrap(), spaninfo::SYNCSRC), 1);
    for (channo, sig, span, pos) in [
        (1, SIG_CLEAR, 1, 1),
        (16, SIG_HARDHDLC, 1, 16),
        (31, SIG_CLEAR, 1, 31),
        (32, SIG_CLEAR, 2, 1),
        (47, SIG_HDLCFCS, 2, 16),
        (62, SIG_CLEAR, 2, 31),
    ] {
        let p = ctl.params(channo).unwrap();
        assert_eq!(field_i32(&p, params::CHANNO), channo);
        assert_eq!(
            field_i32(&p, params::SIGTYPE),
            sig,
            "CHANCONFIG of {channo}"
        );
        assert_eq!(field_i32(&p, params::SPANNO), span);
        assert_eq!(field_i32(&p, params::CHANPOS), pos);
    }
}

#[test]
fn dahdi_scan_names_both_spans() {
    configure_spans().expect("dahdi_cfg must succeed");
    let (code, out) =
        run_bounded(&mut Command::new("dahdi_scan"), Duration::from_secs(30)).unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "dahdi_scan exit status");
    for want in [
        "[1]",
        "[2]",
        "name=SIM/1",
        "name=SIM/2",
        "type=digital-E1",
        "totchans=31",
    ] {
        assert!(out.contains(want), "dahdi_scan output lacks {want:?}");
    }
    assert!(!out.contains("[3]"), "only two spans exist");
}

#[test]
fn dahdi_test_reports_clock_accuracy_of_at_least_99_9_percent() {
    let _ = hw_tests::dahdi_root();
    // The tool times the device clock with its own clock reads: give it real-time priority
    // (as root) so the machine's other load does not end up in the measurement.
    let can_rt = Command::new("chrt")
        .args(["-f", "10", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if can_rt {
        let mut c = Command::new("chrt");
        c.args(["-f", "10", "dahdi_test", "-c", "5"]);
        c
    } else {
        let mut c = Command::new("dahdi_test");
        c.args(["-c", "5"]);
        c
    };
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(30)).unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "dahdi_test exit status");
    // "Best: 99.987% -- Worst: 99.912% -- Average: 99.950000%"
    let worst: f64 = out
        .split("Worst: ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'Worst:' figure in dahdi_test output"));
    let cumulative: f64 = out
        .split("Cumulative Accuracy (not per pass): ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no cumulative accuracy in dahdi_test output"));
    println!("dahdi_test: worst pass {worst:.3} %, cumulative {cumulative:.3} %");
    assert!(worst >= 99.9, "worst pass {worst} % < 99.9 %");
    assert!(cumulative >= 99.9, "cumulative {cumulative} % < 99.9 %");
}

#[test]
fn lsdahdi_lists_the_spans_from_proc_text() {
    let _ = hw_tests::dahdi_root();
    let Some(top) = std::env::var_os(hw_tests::ENV_SIM_VIRT_TOP) else {
        // Real hardware: lsdahdi reads the real /proc/dahdi.
        let (code, out) =
            run_bounded(&mut Command::new("lsdahdi"), Duration::from_secs(30)).unwrap();
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("### Span"), "{out}");
        return;
    };
    configure_spans().expect("dahdi_cfg must succeed");
    let (code, out) = run_bounded(
        Command::new("lsdahdi").env("DAHDI_VIRT_TOP", &top),
        Duration::from_secs(30),
    )
    .unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "lsdahdi exit status");
    assert!(out.contains("### Span  1: SIM/1"), "span 1 listed");
    assert!(out.contains("### Span  2: SIM/2"), "span 2 listed");
    let chan_lines: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(chan_lines.len(), 62, "every channel listed");
    assert!(chan_lines.iter().any(|l| l.contains("Clear")));
    assert!(chan_lines.iter().any(|l| l.contains("HDLCFCS")));
    assert!(
        !out.contains("Unrecognized garbage"),
        "lsdahdi parsed every line"
    );
}

#[test]
fn spanstat_polling_over_every_span_number_like_dahdi_tool() {
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    let rounds = 5;
    let start = Instant::now();
    let mut present = Vec::new();
    for _ in 0..rounds {
        present.clear();
        for spanno in 1..128 {
            match ctl.spanstat(spanno) {
                Ok(info) => {
                    assert_eq!(field_i32(&info, spaninfo::SPANNO), spanno);
                    present.push(field_str(&info, spaninfo::NAME, 20));
                }
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "span {spanno}"),
            }
        }
    }
    let per_call = start.elapsed() / (rounds * 127);
    println!(
        "SPANSTAT: {per_call:?} per call over {} calls",
        rounds * 127
    );
    assert_eq!(present, ["SIM/1", "SIM/2"]);
}

#[test]
fn dahdi_monitor_records_what_a_channel_receives() {
    configure_spans().expect("dahdi_cfg must succeed");
    // Span 1 position 8 sends a steady A-law pattern; dahdi_monitor records the receive side
    // of channel 39 (span 2 position 8) as linear samples through two pseudo channels.
    let tx = Dev::open(&hw_tests::chan_node(1, 8), false).unwrap();
    tx.set_blocksize(160).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            tx.write(&[0x5a; 160]).unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let rx_file = dir.path().join("rx.raw");
    let result = run_bounded(
        Command::new("dahdi_monitor")
            .arg("39")
            .args(["-l", "16000", "-r"])
            .arg(&rx_file),
        Duration::from_secs(15),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let (code, out) = result.unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "dahdi_monitor exit status");
    let raw = std::fs::read(&rx_file).unwrap();
    assert!(raw.len() >= 8000, "recorded {} bytes", raw.len());
    let samples: Vec<i16> = raw
        .chunks_exact(2)
        .map(|p| i16::from_ne_bytes([p[0], p[1]]))
        .collect();
    // DAHDI's pseudo channels keep µ-law buffers: the A-law sample arrives via µ-law.
    let want = codecs::g711::ulaw_decode(codecs::g711::alaw_to_ulaw(0x5a));
    let hits = samples.iter().filter(|&&s| s == want).count();
    assert!(
        hits * 2 >= samples.len(),
        "{hits} of {} samples are the pattern's linear value {want}",
        samples.len()
    );
}
