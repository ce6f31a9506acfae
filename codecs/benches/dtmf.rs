//! DTMF detection speed on the same 10 s of audio (digits over speech-like background, then
//! speech-like signal alone), ours side by side with spandsp's `dtmf_rx` (C, run by this bench).
//!
//! `cargo bench -p codecs --bench dtmf`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::hint::black_box;

use codecs::dtmf::{self, DtmfDetector, DtmfParams};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn signal() -> Vec<i16> {
    let mut digits = Vec::new();
    dtmf::generate(
        "0123456789*#ABCD",
        &DtmfParams {
            level_dbm0: -8.0,
            on_ms: 60,
            off_ms: 60,
            ..Default::default()
        },
        &mut digits,
    )
    .unwrap();
    let background = common::speechlike(80_000, 11);
    let mut x: Vec<i16> = background.iter().map(|&v| v / 8).collect();
    for (i, &d) in digits.iter().enumerate() {
        x[8000 + i] = x[8000 + i].saturating_add(d);
    }
    x
}

fn bench(c: &mut Criterion) {
    let x = signal();
    let seconds = x.len() as f64 / 8000.0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dtmf.raw");
    std::fs::write(
        &path,
        x.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    match common::run_c_reference_with("dtmf_bench", &[path.to_str().unwrap()]) {
        Ok(rows) => {
            println!("\nspandsp dtmf_rx (C, gcc -O2), same {seconds:.0} s of audio, same run:");
            for (k, v) in &rows {
                println!("  spandsp/{k} {v:.0}");
            }
            if let Some((_, ns)) = rows
                .iter()
                .find(|(k, _)| k == "dtmf_rx_ns_per_second_of_audio")
            {
                println!("  spandsp real-time factor per channel: {:.0}x", 1e9 / ns);
            }
        }
        Err(e) => println!("spandsp reference not run: {e}"),
    }
    // Ours: digits found on the same signal, then speed.
    let mut found = String::new();
    let mut d = DtmfDetector::new();
    for chunk in x.chunks(160) {
        d.process(chunk, |e| {
            if let dtmf::DtmfEvent::KeyDown { digit, .. } = e {
                found.push(digit);
            }
        });
    }
    println!("  spanbridge digits: {found}\n");

    let mut g = c.benchmark_group("dtmf_detect_10s_audio");
    g.throughput(Throughput::Elements(x.len() as u64));
    g.bench_function("spanbridge", |b| {
        let mut d = DtmfDetector::new();
        b.iter(|| {
            let mut n = 0;
            for chunk in x.chunks(160) {
                d.process(black_box(chunk), |_| n += 1);
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
