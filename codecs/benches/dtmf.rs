//! DTMF detection speed on one second of 8 kHz audio (digits over speech-like noise): our
//! streaming detector side by side with spandsp's `dtmf_rx` (C, timed by
//! `benches/c/dtmf_bench.c`, compiled and run at the start of this bench on the same signal).
//!
//! `cargo bench -p codecs --bench dtmf`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use codecs::dtmf::{self, DtmfDetector, DtmfEvent, DtmfParams};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SECOND: usize = 8000;

/// The signal of `benches/c/dtmf_bench.c`: `speechlike(8000, 11) / 4` plus "159D" at 80/80 ms,
/// −10 dBm0 per tone.
fn signal() -> Vec<i16> {
    let mut tones = Vec::new();
    dtmf::generate("159D", &DtmfParams::default(), &mut tones).unwrap();
    tones.resize(SECOND, 0);
    common::speechlike(SECOND, 11)
        .iter()
        .zip(&tones)
        .map(|(&s, &t)| (s / 4).saturating_add(t))
        .collect()
}

/// Runs a fresh detector over `signal` in `chunk`-sample calls; returns the key-downs.
fn detect(signal: &[i16], chunk: usize) -> usize {
    let mut det = DtmfDetector::new();
    let mut downs = 0;
    let mut on_event = |e: DtmfEvent| {
        if matches!(e, DtmfEvent::KeyDown { .. }) {
            downs += 1;
        }
    };
    for c in signal.chunks(chunk) {
        det.process(black_box(c), &mut on_event);
    }
    det.finish(&mut on_event);
    downs
}

/// Best of five timed runs of `iters` passes, in ns per second of audio.
fn ns_per_second(signal: &[i16], chunk: usize) -> f64 {
    let iters = 400;
    (0..5)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(detect(signal, chunk));
            }
            t0.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .fold(f64::INFINITY, f64::min)
}

fn side_by_side(signal: &[i16]) {
    let found = detect(signal, 160);
    println!("\nDTMF detection, 1 s of 8 kHz audio (\"159D\" over speech-like noise), same run:");
    println!(
        "  {:<34} {:>12} {:>14} {:>7}",
        "detector", "ns / s audio", "x real time", "digits"
    );
    for (name, chunk) in [
        ("spanbridge (160-sample frames)", 160),
        ("spanbridge (8-sample chunks)", 8),
    ] {
        let ns = ns_per_second(signal, chunk);
        println!("  {name:<34} {ns:>12.0} {:>14.0} {found:>7}", 1e9 / ns);
    }
    match common::run_c_reference("dtmf_bench") {
        Ok(rows) => {
            let get = |k: &str| rows.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            if let Some(ns) = get("dtmf_rx_ns_per_second_of_audio") {
                let digits = get("dtmf_rx_digits_found").unwrap_or(f64::NAN);
                println!(
                    "  {:<34} {ns:>12.0} {:>14.0} {digits:>7}",
                    "spandsp dtmf_rx (C, gcc -O2)",
                    1e9 / ns
                );
            }
        }
        Err(e) => println!("  spandsp reference not run: {e}"),
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let signal = signal();
    side_by_side(&signal);
    let mut g = c.benchmark_group("dtmf_detect_1s");
    g.throughput(Throughput::Elements(SECOND as u64));
    g.bench_function("spanbridge_frames_160", |b| b.iter(|| detect(&signal, 160)));
    g.bench_function("spanbridge_chunks_8", |b| b.iter(|| detect(&signal, 8)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
